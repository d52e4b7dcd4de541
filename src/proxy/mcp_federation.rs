//! Several MCP servers behind one endpoint (DESIGN §5.2, "Federation"): the gateway is the
//! server the client sees. It answers `initialize` itself after opening a session with each
//! server; its `Mcp-Session-Id` is a sealed token naming, for each server, the address that
//! holds its session and the server's own id. `tools/list` is merged from every server (names
//! prefixed, the agent's grants applied), `tools/call` goes to the server its prefix names
//! (prefix removed) and its answer comes back as the server wrote it.
//!
//! Not federated: `resources/*`, `prompts/*` and other methods (-32601), batches (-32600; the
//! 2025-06-18 revision dropped them), and a standalone `GET` stream (405, as the transport
//! allows). Grants and `tool_rate_limits` were checked by `mcp::admit` on the prefixed name
//! before any of this runs.

use super::ctx::Ctx;
use super::mcp::Refused;
use crate::backends::{Picked, Pool};
use crate::http_client::{exchange_answer, Answer, Call, Target};
use crate::mcp::federation as fed;
use crate::mcp::grants::Grants;
use crate::mcp::jsonrpc::{self, Batch};
use crate::mcp::route::Settings;
use crate::mcp::session::{Leg, Session as Token};
use bytes::Bytes;
use http::HeaderValue;
use pingora::connectors::http::Connector;
use pingora::proxy::Session;
use serde_json::{json, Value};
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The largest answer read from a server (a tool's result, a page of tools).
const MAX_ANSWER: usize = 8 << 20;
/// Opening a session with a server, when the route sets no `connect_timeout`: a server that
/// is slow to answer `initialize` is left out rather than holding the client's up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// A tool call, when the route sets no `timeout`.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Pages of `tools/list` read from one server (each page follows the last's `nextCursor`).
const MAX_PAGES: usize = 16;

/// One connector for the gateway's calls to MCP servers: its idle connections are reused.
fn connector() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    CONNECTOR.get_or_init(|| Connector::new(None))
}

/// A federated route's servers as one request sees them.
struct Servers {
    settings: Arc<Settings>,
    pools: Vec<(String, Arc<Pool>)>,
    open_timeout: Duration,
    call_timeout: Duration,
    /// The protocol revision the client speaks: sent on to the servers.
    version: &'static str,
}

impl Servers {
    fn of(session: &Session, ctx: &Ctx) -> Option<Servers> {
        let route = ctx.route()?;
        let asked = (session.req_header().headers.get("mcp-protocol-version"))
            .and_then(|v| v.to_str().ok());
        Some(Servers {
            settings: route.mcp.clone()?,
            pools: route.mcp_pools.clone(),
            open_timeout: route.connect_timeout.unwrap_or(OPEN_TIMEOUT),
            call_timeout: route.timeout.unwrap_or(CALL_TIMEOUT),
            version: fed::negotiate(asked),
        })
    }

    /// The legs of the client's session, one per server in the route's order: those the
    /// token names, and for the others (no token, or a server added since) a leg to open.
    fn legs(&self, token: Option<Token>) -> Vec<Leg> {
        let mut known = token.map(|t| t.servers).unwrap_or_default();
        (self.pools.iter())
            .map(
                |(name, _)| match known.iter().position(|l| &l.server == name) {
                    Some(at) => known.swap_remove(at),
                    None => down(name),
                },
            )
            .collect()
    }

    /// POSTs `body` to the address of `picked`, in the server session `id` (if any).
    async fn send(
        &self,
        picked: &Picked,
        id: Option<&str>,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let target = self.target(picked, timeout);
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", self.version),
        ];
        if let Some(id) = id {
            headers.push(("mcp-session-id", id));
        }
        let call = Call {
            method: "POST",
            headers: &headers,
            body: Some(body),
            max_answer: MAX_ANSWER,
        };
        let answer = exchange_answer(connector(), &target, call, timeout).await;
        let ok = answer.as_ref().is_ok_and(|a| a.status < 500);
        picked.pool.report(&picked.addr, ok);
        answer
    }

    /// The server's MCP endpoint at the address picked, with its pool's connection options.
    fn target(&self, picked: &Picked, timeout: Duration) -> Target {
        let pool = &picked.pool;
        let peer = pool.peer(&picked.addr, self.open_timeout, timeout);
        let host = pool.host_for(&picked.addr).unwrap_or(&pool.host_header);
        let path = match pool.path_prefix.as_str() {
            "" => "/",
            p => p,
        };
        let host = host.to_str().unwrap_or_default().to_string();
        Target::at(peer, host, path.to_string())
    }

    /// Opens a session with server `i` on one of its addresses: `initialize`, then
    /// `notifications/initialized`. A server that fails gets a leg without an address.
    async fn open(&self, i: usize) -> Leg {
        let Some((name, pool)) = self.pools.get(i) else {
            return down("");
        };
        let Some(picked) = pool.select(&[], &[]) else {
            return down(name);
        };
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": self.version,
            "capabilities": {},
            "clientInfo": {"name": "clawgate", "version": env!("CARGO_PKG_VERSION")},
        }});
        let body = Bytes::from(init.to_string());
        let answer = match self.send(&picked, None, body, self.open_timeout).await {
            Ok(a) if a.status == 200 => a,
            Ok(a) => {
                log::warn!("MCP server {name}: initialize answered {}", a.status);
                return down(name);
            }
            Err(e) => {
                log::warn!("MCP server {name}: {e}");
                return down(name);
            }
        };
        if fed::result_of(content_type(&answer), &answer.body, &json!(0)).is_err() {
            log::warn!("MCP server {name}: initialize was not answered with a result");
            return down(name);
        }
        let id = (answer.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let done = Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        if let Err(e) = self
            .send(&picked, id.as_deref(), done, self.open_timeout)
            .await
        {
            log::warn!("MCP server {name}: notifications/initialized: {e}");
        }
        Leg {
            server: name.clone(),
            addr: picked.addr.label.clone(),
            session: id,
        }
    }

    /// Sends `body` to server `i` in the client's session with it. A leg without an address
    /// (the server was down at `initialize`) gets a session for this request only, as the
    /// client's token cannot change; so does a session the server no longer knows (404: it
    /// restarted) or whose address is gone. Nothing is sent twice after a failed exchange, as
    /// the server may have acted on it. The second value: a session opened for this request.
    async fn exchange(
        &self,
        i: usize,
        leg: &Leg,
        body: Bytes,
        timeout: Duration,
    ) -> (Result<Answer, String>, Option<Leg>) {
        let pool = self.pools.get(i).map(|(_, p)| p);
        let held = (!leg.addr.is_empty())
            .then(|| pool.and_then(|p| p.pick(&leg.addr)))
            .flatten();
        if let Some(picked) = held {
            let sent = self.send(&picked, leg.session.as_deref(), body.clone(), timeout);
            match sent.await {
                Ok(a) if a.status == 404 && leg.session.is_some() => {}
                other => return (other, None),
            }
        }
        let fresh = self.open(i).await;
        let Some(picked) = pool.and_then(|p| p.pick(&fresh.addr)) else {
            return (Err("unavailable".into()), None);
        };
        let sent = self.send(&picked, fresh.session.as_deref(), body, timeout);
        (sent.await, Some(fresh))
    }

    /// Ends a session opened for one request, in the background (best effort).
    fn close_later(self: &Arc<Self>, i: usize, leg: Option<Leg>) {
        let Some(leg) = leg.filter(|l| l.session.is_some()) else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move { me.close(i, &leg).await });
    }

    /// `DELETE` of a server session (best effort: a server may not allow it).
    async fn close(&self, i: usize, leg: &Leg) {
        let (Some(id), Some((_, pool))) = (leg.session.as_deref(), self.pools.get(i)) else {
            return;
        };
        let Some(picked) = pool.pick(&leg.addr) else {
            return;
        };
        let target = self.target(&picked, self.open_timeout);
        let headers = [
            ("mcp-session-id", id),
            ("mcp-protocol-version", self.version),
        ];
        let call = Call {
            method: "DELETE",
            headers: &headers,
            body: None,
            max_answer: MAX_ANSWER,
        };
        let _ = exchange_answer(connector(), &target, call, self.open_timeout).await;
    }
}

/// Runs the futures at once, one task each (the servers answer in parallel); their outputs in
/// order, `None` for one that panicked.
async fn join_all<T, F>(work: impl IntoIterator<Item = F>) -> Vec<Option<T>>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let tasks: Vec<_> = work.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.ok());
    }
    out
}

/// A leg for a server without a session: opened when a request needs it.
fn down(server: &str) -> Leg {
    Leg {
        server: server.to_string(),
        addr: String::new(),
        session: None,
    }
}

fn content_type(a: &Answer) -> &str {
    (a.headers.get(http::header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// The client's session: `Ok(None)` without a token, `Err` (404) for a token that does not
/// open here.
fn token(session: &Session, ctx: &Ctx, s: &Servers) -> Result<Option<Token>, Refused> {
    let Some(t) = session.req_header().headers.get("mcp-session-id") else {
        return Ok(None);
    };
    let opened = (t.to_str().ok()).and_then(|t| s.settings.sealer.open(t, &super::mcp::bind(ctx)));
    match opened {
        Some(t) => Ok(Some(t)),
        None => {
            let body = jsonrpc::error(&Value::Null, -32001, "session not found", None);
            Err(Refused::new("unknown_session", 404, body))
        }
    }
}

fn json_answer(outcome: &'static str, body: Bytes) -> Refused {
    Refused::new(outcome, 200, body)
}

/// The server a federated tool name belongs to, for metrics and the log ("" for none).
pub fn server_of(ctx: &Ctx, tool: Option<&str>) -> String {
    let Some(settings) = ctx.route().and_then(|r| r.mcp.as_ref()) else {
        return String::new();
    };
    let names = settings.servers.iter().map(|s| s.name.as_str());
    let routed = tool.and_then(|t| fed::unprefix(&settings.tool_prefix, names, t));
    routed.map_or_else(String::new, |(server, _)| server.to_string())
}

/// A POST whose messages `admit` has checked (grants and tool limits included).
pub async fn post(
    session: &Session,
    ctx: &Ctx,
    batch: &Batch,
    grants: Option<Arc<Grants>>,
) -> Refused {
    let Some(s) = Servers::of(session, ctx).map(Arc::new) else {
        let e = jsonrpc::error(&Value::Null, -32603, "no route", None);
        return json_answer("error", e);
    };
    let body = ctx.body.pre_read.clone().unwrap_or_default();
    let requests = batch.messages.iter().filter(|m| m.is_request()).count();
    if requests == 0 {
        // Notifications and the client's answers: the servers' sessions need none of them.
        return Refused::new("ok", 202, Bytes::new());
    }
    if let ([m], false) = (&batch.messages[..], batch.batch) {
        if let (Some("initialize"), Some(id)) = (m.method.as_deref(), m.id.as_ref()) {
            return initialize(&s, ctx, id, &body).await;
        }
    }
    let legs = match token(session, ctx, &s) {
        Ok(t) => s.legs(t),
        Err(r) => return r,
    };
    let grants = grants.as_deref();
    if !batch.batch {
        return match batch.messages.first() {
            Some(m) => single(reply(&s, &legs, m, &body, grants).await),
            None => Refused::new("ok", 202, Bytes::new()),
        };
    }
    // Older clients' batches: each request answered in turn, as JSON.
    let raw: Vec<Value> = serde_json::from_slice(&body).unwrap_or_default();
    let mut answers = Vec::with_capacity(requests);
    for (m, raw) in batch.messages.iter().zip(raw) {
        let Some(id) = m.id.as_ref().filter(|_| m.is_request()) else {
            continue;
        };
        let raw = serde_json::to_vec(&raw).unwrap_or_default();
        answers.push(match reply(&s, &legs, m, &raw, grants).await {
            Reply::Own(_, b) => b,
            Reply::Server(server, a) => fed::relayed(content_type(&a), &a.body, id)
                .unwrap_or_else(|| jsonrpc::server_unavailable(id, &server)),
        });
    }
    json_answer("ok", jsonrpc::array(&answers))
}

/// How a request is answered: by the gateway (its outcome and message), or by a server.
enum Reply {
    Own(&'static str, Bytes),
    Server(String, Answer),
}

/// The answer to one request; `body` is the request's own JSON.
async fn reply(
    s: &Arc<Servers>,
    legs: &[Leg],
    m: &jsonrpc::Message,
    body: &[u8],
    grants: Option<&Grants>,
) -> Reply {
    let id = m.id.as_ref().unwrap_or(&Value::Null);
    match m.method.as_deref().unwrap_or_default() {
        "ping" => Reply::Own("ok", fed::answer(id, json!({}))),
        "tools/list" => Reply::Own("ok", list(s, legs, id, grants).await),
        "tools/call" => call(s, legs, id, m.name.as_deref(), body).await,
        "initialize" => {
            let why = "initialize comes alone, in a POST of its own";
            Reply::Own(
                "malformed",
                jsonrpc::error(id, jsonrpc::INVALID_REQUEST, why, None),
            )
        }
        _ => {
            let why = "method not found: a federated endpoint serves tools only";
            Reply::Own("error", jsonrpc::error(id, -32601, why, None))
        }
    }
}

/// A single request's answer: a server's as it wrote it (status, content type, JSON or SSE).
fn single(r: Reply) -> Refused {
    match r {
        Reply::Own(outcome, b) => json_answer(outcome, b),
        Reply::Server(_, a) => {
            let mut r = Refused::new("ok", a.status, Bytes::from(a.body));
            if let Some(ct) = a.headers.get(http::header::CONTENT_TYPE) {
                r.headers.push(("content-type", ct.clone()));
            }
            r
        }
    }
}

/// The gateway's own `initialize`: a session with each server (in parallel; one that is down
/// gets a leg without a session), sealed into the gateway's session id.
async fn initialize(s: &Arc<Servers>, ctx: &Ctx, id: &Value, body: &[u8]) -> Refused {
    let requested = fed::requested_version(body);
    let servers = Arc::new(s.clone_with(fed::negotiate(requested.as_deref())));
    let opening = (0..servers.pools.len()).map(|i| {
        let servers = servers.clone();
        async move { servers.open(i).await }
    });
    let legs = (join_all(opening).await.into_iter().zip(&servers.pools))
        .map(|(leg, (name, _))| leg.unwrap_or_else(|| down(name)))
        .collect();
    let mut r = json_answer("ok", fed::initialize_answer(id, requested.as_deref()));
    let token = Token { servers: legs };
    match s.settings.sealer.seal(&token, &super::mcp::bind(ctx)) {
        Ok(t) => match HeaderValue::try_from(t) {
            Ok(v) => r.headers.push(("mcp-session-id", v)),
            Err(e) => log::warn!("an MCP session token is not a header value: {e}"),
        },
        // Without a token each request opens sessions of its own: slower, still correct.
        Err(e) => log::warn!("an MCP session could not be sealed: {e:?}"),
    }
    r
}

impl Servers {
    fn clone_with(&self, version: &'static str) -> Servers {
        Servers {
            settings: self.settings.clone(),
            pools: self.pools.clone(),
            open_timeout: self.open_timeout,
            call_timeout: self.call_timeout,
            version,
        }
    }
}

/// Every server's tools, prefixed, less those the agent may not use; a server that fails is
/// left out.
async fn list(s: &Arc<Servers>, legs: &[Leg], id: &Value, grants: Option<&Grants>) -> Bytes {
    let listing = legs.iter().enumerate().map(|(i, leg)| {
        let (s, leg) = (s.clone(), leg.clone());
        async move { list_one(&s, i, &leg).await }
    });
    let lists = join_all(listing).await;
    let prefixes: Vec<String> = (s.pools.iter())
        .map(|(name, _)| fed::prefix(&s.settings.tool_prefix, name))
        .collect();
    let results = (prefixes.iter().zip(lists))
        .filter_map(|(p, tools)| Some((p.as_str(), json!({ "tools": tools.flatten()? }))));
    let merged = fed::merge_tools(results, |t| grants.is_none_or(|g| g.allows(t)));
    fed::answer(id, merged)
}

/// One server's tools, every page; `None` when it fails.
async fn list_one(s: &Arc<Servers>, i: usize, leg: &Leg) -> Option<Vec<Value>> {
    let mut leg = leg.clone();
    let mut opened = None;
    let mut tools = Vec::new();
    let mut cursor: Option<Value> = None;
    for page in 0..MAX_PAGES {
        let id = json!(format!("clawgate-list-{page}"));
        let mut ask = json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"});
        if let Some(c) = cursor.take() {
            ask["params"] = json!({ "cursor": c });
        }
        let (answer, fresh) = s
            .exchange(i, &leg, Bytes::from(ask.to_string()), s.call_timeout)
            .await;
        if let Some(f) = fresh {
            // Later pages go to the session just opened.
            leg = f.clone();
            opened = Some(f);
        }
        let result = answer
            .ok()
            .filter(|a| a.status == 200)
            .and_then(|a| fed::result_of(content_type(&a), &a.body, &id).ok());
        let Some(mut result) = result else {
            s.close_later(i, opened);
            return None;
        };
        if let Some(Value::Array(t)) = result.get_mut("tools").map(Value::take) {
            tools.extend(t);
        }
        cursor = result.get("nextCursor").filter(|c| !c.is_null()).cloned();
        if cursor.is_none() {
            break;
        }
    }
    s.close_later(i, opened);
    Some(tools)
}

/// A tool call, to the server its prefix names, with the server's name for it.
async fn call(
    s: &Arc<Servers>,
    legs: &[Leg],
    id: &Value,
    name: Option<&str>,
    body: &[u8],
) -> Reply {
    let names = s.pools.iter().map(|(n, _)| n.as_str());
    let routed = name.and_then(|n| fed::unprefix(&s.settings.tool_prefix, names, n));
    let Some((server, tool)) = routed else {
        let data = json!({ "tool": name });
        return Reply::Own(
            "error",
            jsonrpc::error(id, -32602, "unknown tool", Some(data)),
        );
    };
    let i = (s.pools.iter().position(|(n, _)| n == server)).unwrap_or_default();
    let (Some(leg), Some(renamed)) = (legs.get(i), fed::renamed_call(body, tool)) else {
        return Reply::Own("error", jsonrpc::error(id, -32602, "invalid params", None));
    };
    let (answer, opened) = s.exchange(i, leg, renamed, s.call_timeout).await;
    s.close_later(i, opened);
    match answer {
        Ok(a) if a.status != 404 => Reply::Server(server.to_string(), a),
        Ok(_) | Err(_) => Reply::Own("unavailable", jsonrpc::server_unavailable(id, server)),
    }
}

/// A `GET` (no standalone stream: 405) or a `DELETE` (each server session ended, best effort).
pub async fn other(session: &Session, ctx: &Ctx) -> Refused {
    let Some(s) = Servers::of(session, ctx) else {
        return Refused::new("error", 404, Bytes::new());
    };
    if session.req_header().method != http::Method::DELETE {
        let e = jsonrpc::error(
            &Value::Null,
            -32600,
            "no standalone stream: POST only",
            None,
        );
        let mut r = Refused::new("error", 405, e);
        r.headers
            .push(("allow", HeaderValue::from_static("POST, DELETE")));
        return r;
    }
    let legs = match token(session, ctx, &s) {
        Ok(t) => s.legs(t),
        Err(r) => return r,
    };
    let s = Arc::new(s);
    let closing = legs.into_iter().enumerate().map(|(i, leg)| {
        let s = s.clone();
        async move { s.close(i, &leg).await }
    });
    join_all(closing).await;
    Refused::new("ok", 200, Bytes::new())
}
