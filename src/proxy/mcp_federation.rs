//! Several MCP servers behind one endpoint (DESIGN §5.2, "Federation"): the gateway is the
//! server the client sees. It answers `initialize` itself after opening a session with each
//! server (capabilities: the union of theirs that it federates); its `Mcp-Session-Id` is a
//! sealed token naming, for each server, the address that holds its session and the server's
//! own id. Lists (`tools/list`, `prompts/list`, `resources/list`, `resources/templates/list`)
//! are merged from every server (names prefixed; tools filtered by the agent's grants),
//! `tools/call` and `prompts/get` go to the server their prefix names (prefix removed),
//! `resources/read` to the server that serves the URI, and `server/discover` (stateless
//! revision) is answered by the gateway. Every request made for a client carries its
//! forwarding headers (X-Agent-ID, X-Request-ID, traceparent...), never its credentials.
//!
//! Not federated: other methods (-32601), and a standalone `GET` stream (405, as the
//! transport allows). Grants and `tool_rate_limits` were checked by `mcp::admit` on the
//! prefixed name before any of this runs.

mod lists;
mod relay;
mod servers;

use super::ctx::Ctx;
use super::mcp::Refused;
use crate::http_client::Streaming;
use crate::mcp::federation as fed;
use crate::mcp::grants::Grants;
use crate::mcp::jsonrpc::{self, Batch};
use crate::mcp::session::{Leg, Session as Token};
use bytes::Bytes;
use http::HeaderValue;
use pingora::proxy::Session;
use serde_json::{json, Value};
use servers::{content_type, down, join_all, whole, Servers};
use std::sync::Arc;

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

/// A POST whose messages `admit` has checked (grants and tool limits included). A single
/// request's SSE answer is written here, as it comes (the answer returned says so).
pub async fn post(
    session: &mut Session,
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
        let Some(m) = batch.messages.first() else {
            return Refused::new("ok", 202, Bytes::new());
        };
        let answer = reply(&s, &legs, m, &body, grants).await;
        let id = m.id.as_ref().unwrap_or(&Value::Null);
        let modern = (m.method.as_deref()).filter(|_| s.modern);
        let timeout = s.call_timeout;
        return relay::single(session, &ctx.request_id, id, answer, timeout, modern).await;
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
            Reply::Server(server, a, _opened) => (whole(Ok(*a), s.call_timeout).await.ok())
                .and_then(|a| fed::relayed(content_type(&a.headers), &a.body, id))
                .unwrap_or_else(|| jsonrpc::server_unavailable(id, &server)),
        });
    }
    json_answer("ok", jsonrpc::array(&answers))
}

/// How a request is answered: by the gateway (its outcome and message), or by a server (its
/// name, and its answer with the body still to read, in a session that may be this request's
/// own, ended once the reply is dropped).
pub enum Reply {
    Own(&'static str, Bytes),
    Server(String, Box<Streaming<'static>>, servers::Opened),
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
    let list = |l| async move { Reply::Own("ok", lists::merged(s, legs, id, l, grants).await) };
    match m.method.as_deref().unwrap_or_default() {
        "ping" => Reply::Own("ok", fed::answer(id, json!({}))),
        "tools/list" => list(lists::TOOLS).await,
        "prompts/list" => list(lists::PROMPTS).await,
        "resources/list" => list(lists::RESOURCES).await,
        "resources/templates/list" => list(lists::TEMPLATES).await,
        "tools/call" | "prompts/get" => lists::routed(s, legs, id, m.name.as_deref(), body).await,
        "resources/read" => lists::read(s, legs, id, body).await,
        "server/discover" => Reply::Own("ok", discover(s, id).await),
        "initialize" => {
            let why = "initialize comes alone, in a POST of its own";
            Reply::Own(
                "malformed",
                jsonrpc::error(id, jsonrpc::INVALID_REQUEST, why, None),
            )
        }
        _ => {
            let why = "method not found: not federated";
            Reply::Own("error", jsonrpc::error(id, -32601, why, None))
        }
    }
}

/// A session with each server, in parallel (one that is down gets a leg without a session),
/// and the capabilities of those that answered.
async fn open_all(servers: &Arc<Servers>) -> (Vec<Leg>, Vec<Value>) {
    let opening = (0..servers.pools.len()).map(|i| {
        let servers = servers.clone();
        async move { servers.open(i).await }
    });
    let mut legs = Vec::with_capacity(servers.pools.len());
    let mut capabilities = Vec::new();
    for (opened, (name, _)) in join_all(opening).await.into_iter().zip(&servers.pools) {
        let (leg, caps) = opened.unwrap_or_else(|| (down(name), None));
        legs.push(leg);
        capabilities.extend(caps);
    }
    (legs, capabilities)
}

/// The gateway's own `initialize`: its sessions with the servers sealed into its session id,
/// and the union of what they offer.
async fn initialize(s: &Arc<Servers>, ctx: &Ctx, id: &Value, body: &[u8]) -> Refused {
    let requested = fed::requested_version(body);
    let servers = Arc::new(s.with_version(fed::negotiate(requested.as_deref())));
    let (legs, offered) = open_all(&servers).await;
    let caps = fed::capabilities(&offered);
    let mut r = json_answer("ok", fed::initialize_answer(id, requested.as_deref(), caps));
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

/// `server/discover` (stateless revision): the servers' capabilities are learnt as for
/// `initialize`, from sessions ended right after (a stateless client holds none).
async fn discover(s: &Arc<Servers>, id: &Value) -> Bytes {
    let (legs, offered) = open_all(s).await;
    for (i, leg) in legs.into_iter().enumerate() {
        s.close_later(i, Some(leg));
    }
    fed::discover_answer(id, fed::capabilities(&offered))
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
