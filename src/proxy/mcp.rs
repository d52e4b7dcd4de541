//! MCP routes on the request path (DESIGN §5.2), one server passed through: the gateway reads
//! each JSON-RPC message of a POST (read ahead, or held back until whole when larger than
//! Pingora reads ahead), refuses a body that is not JSON-RPC and a `tools/call` of a tool the
//! agent may not use (the server never sees either), and hides from `tools/list`
//! answers, JSON or SSE, the tools the agent may not use. `GET` streams and `DELETE` pass
//! through.

use super::ctx::Ctx;
use crate::mcp::filter::SseFilter;
use crate::mcp::grants::Grants;
use crate::mcp::jsonrpc::{self, Batch};
use crate::mcp::session::digest;
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, Session};
use pingora::Result;
use serde_json::Value;
use std::sync::Arc;

/// The largest `tools/list` JSON answer that is read whole to be filtered; a larger one is
/// refused rather than passed on unfiltered.
const MAX_LIST_ANSWER: usize = 8 << 20;
/// The largest SSE event of an answer that is filtered.
const MAX_EVENT: usize = 8 << 20;

/// What the gateway knows of an MCP exchange (boxed in the context: MCP routes only).
#[derive(Default)]
pub struct State {
    /// The method of a single message (or `batch`), and the tool it calls: for the log.
    pub method: Option<String>,
    pub tool: Option<String>,
    /// A digest of the session id (the id itself is a credential of sorts: never logged).
    pub session: Option<String>,
    /// Why the gateway answered itself, for `outcome`.
    pub refused: Option<&'static str>,
    /// Federated: the server a `tools/call` went to, else none ("" in metrics).
    pub server: Option<String>,
    /// The gateway's session id for the server's new session, sent in its place.
    sealed: Option<String>,
    /// The ids of the `tools/list` requests whose answers are filtered, and the agent's grants.
    list_ids: Vec<Value>,
    grants: Option<Arc<Grants>>,
    /// The answer being filtered.
    answer: Option<Answer>,
    /// A body too large to read ahead, held back until whole (see [`hold`]).
    held: Option<Held>,
    /// The answer to a held body that was refused, written by `fail_to_proxy`.
    refusal: Option<Refused>,
}

struct Held {
    body: BytesMut,
    /// `Mcp-Method` and `Mcp-Name`, which must say what the body says.
    headers: (Option<String>, Option<String>),
}

enum Answer {
    Json(BytesMut),
    Sse(Box<SseFilter>),
}

/// What to write instead of sending the request on.
pub struct Refused {
    /// The metrics' `outcome`.
    pub outcome: &'static str,
    pub status: u16,
    pub body: Bytes,
    pub retry_after: Option<u64>,
    /// More headers of the answer (a federated answer's content type and session id).
    pub headers: Vec<(&'static str, http::HeaderValue)>,
    /// Already written to the client (a federated server's stream, relayed as it came).
    pub written: bool,
}

impl Refused {
    pub(super) fn new(outcome: &'static str, status: u16, body: Bytes) -> Refused {
        Refused {
            outcome,
            status,
            body,
            retry_after: None,
            headers: Vec::new(),
            written: false,
        }
    }
}

/// Reads and checks a POST to an MCP route. `Ok(Some)`: the answer to write (nothing is sent
/// to the server); `Ok(None)`: send it on, with the state for the answer left in `ctx`.
pub async fn admit(
    session: &mut Session,
    ctx: &mut Ctx,
    limits: &crate::limits::Shared,
    keep: bool,
) -> Result<Option<Refused>> {
    let header = |n: &str| {
        (session.req_header().headers.get(n))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut state = Box::new(State {
        session: header("mcp-session-id").map(|s| digest(&s)),
        grants: (ctx.caller.identity.as_ref()).and_then(|i| i.agent.tools.clone()),
        ..State::default()
    });
    let (mcp_method, mcp_name) = (header("mcp-method"), header("mcp-name"));
    to_the_server_path(session, ctx);
    if let Err(r) = continue_session(session, ctx) {
        state.refused = Some(r.outcome);
        ctx.mcp = Some(state);
        return Ok(Some(r));
    }
    let federated = (ctx.route().and_then(|r| r.mcp.as_ref())).is_some_and(|m| m.servers.len() > 1);
    if session.req_header().method != http::Method::POST {
        ctx.mcp = Some(state);
        return Ok(match federated {
            true => Some(super::mcp_federation::other(session, ctx).await),
            false => None,
        });
    }
    ctx.read_ahead(session, keep).await?;
    let headers = (mcp_method, mcp_name);
    let body = match ctx.body.pre_read.clone() {
        Some(body) => body,
        // Federation sends nothing on through Pingora: the whole body is read here.
        None if federated => match read_whole(session, ctx).await? {
            Some(body) => ctx.body.pre_read.insert(body).clone(),
            None => {
                state.refused = Some("too_large");
                ctx.mcp = Some(state);
                return Err(super::refusal::body_too_large());
            }
        },
        // Past Pingora's 64 KB retry buffer (or chunked): checked in request_body_filter,
        // held back there until whole.
        None => {
            state.held = Some(Held {
                body: BytesMut::new(),
                headers,
            });
            ctx.mcp = Some(state);
            return Ok(None);
        }
    };
    let refused = match check(&body, &headers, &mut state, ctx, limits).await {
        Ok(batch) if federated => {
            let grants = state.grants.clone();
            state.server = Some(super::mcp_federation::server_of(ctx, state.tool.as_deref()));
            Some(super::mcp_federation::post(session, ctx, &batch, grants).await)
        }
        Ok(_) => None,
        Err(r) => Some(r),
    };
    state.refused = refused.as_ref().map(|r| r.outcome);
    ctx.mcp = Some(state);
    Ok(refused)
}

/// The checks of a POST's messages, in the order a client learns of them: JSON-RPC, the
/// `Mcp-*` headers, the agent's grants, its tool limits.
async fn check(
    body: &[u8],
    headers: &(Option<String>, Option<String>),
    state: &mut State,
    ctx: &Ctx,
    limits: &crate::limits::Shared,
) -> Result<Batch, Refused> {
    let batch = jsonrpc::read(body).map_err(|m| Refused::new("malformed", 400, m.answer()))?;
    jsonrpc::check_headers(headers.0.as_deref(), headers.1.as_deref(), &batch).map_err(|why| {
        let e = jsonrpc::error(&Value::Null, jsonrpc::INVALID_REQUEST, why, None);
        Refused::new("malformed", 400, e)
    })?;
    state.note(&batch);
    if let Some(body) = refuse_denied(&batch, state.grants.as_deref()) {
        return Err(Refused::new("denied", 200, body));
    }
    match limit_tools(&batch, ctx, limits).await {
        Some(r) => Err(r),
        None => Ok(batch),
    }
}

/// The whole body of a request the gateway answers itself (a federated POST, a transcoded
/// call), up to `max_body_size` (nothing of it goes through Pingora's forwarding, so its retry
/// buffer's limit does not apply); `None`: larger.
pub(super) async fn read_whole(session: &mut Session, ctx: &mut Ctx) -> Result<Option<Bytes>> {
    let mut body = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        ctx.body.bytes_in += chunk.len() as u64;
        if ctx.body.bytes_in > ctx.config.max_body_size {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// A body over `max_body_size`, for the metrics' `outcome`.
pub fn too_large(ctx: &mut Ctx) {
    if let Some(m) = ctx.mcp.as_mut() {
        m.refused = Some("too_large");
    }
}

/// A passed-through POST whose body could not be read ahead: its chunks are held back (the
/// server has the request's head, and no byte of its body) until the body is whole, then it
/// is checked like any other. Allowed, it goes on in one piece; refused, the request fails
/// here, so the server's connection closes before any of the body, and `fail_to_proxy` writes
/// the refusal.
pub async fn hold(
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    ctx: &mut Ctx,
    limits: &crate::limits::Shared,
) -> Result<()> {
    let Some(mut state) = ctx.mcp.take_if(|m| m.held.is_some()) else {
        return Ok(());
    };
    let outcome = hold_state(&mut state, body, end_of_stream, ctx, limits).await;
    ctx.mcp = Some(state);
    outcome
}

async fn hold_state(
    state: &mut State,
    body: &mut Option<Bytes>,
    end_of_stream: bool,
    ctx: &Ctx,
    limits: &crate::limits::Shared,
) -> Result<()> {
    let Some(held) = state.held.as_mut() else {
        return Ok(());
    };
    if let Some(chunk) = body.take() {
        held.body.extend_from_slice(&chunk);
    }
    if !end_of_stream {
        // Empty, not `None`: `None` would end the server's body.
        *body = Some(Bytes::new());
        return Ok(());
    }
    let Some(held) = state.held.take() else {
        return Ok(());
    };
    let whole = held.body.freeze();
    match check(&whole, &held.headers, state, ctx, limits).await {
        Ok(_) => {
            *body = Some(whole);
            Ok(())
        }
        Err(r) => {
            let status = r.status;
            state.refused = Some(r.outcome);
            state.refusal = Some(r);
            Err(pingora::Error::explain(
                pingora::ErrorType::HTTPStatus(status),
                "an MCP message the gateway refused",
            ))
        }
    }
}

/// The failure [`hold`] made of a refusal: the gateway did its job; not an error to log.
pub fn refused_held(ctx: &Ctx, e: &pingora::Error) -> bool {
    let refused = ctx.mcp.as_ref().is_some_and(|m| m.refused.is_some());
    refused && matches!(e.etype(), pingora::ErrorType::HTTPStatus(_))
}

/// `fail_to_proxy` of a held body that was refused (see [`hold`]): its answer.
pub async fn answer_refused(session: &mut Session, ctx: &mut Ctx) -> Option<FailToProxy> {
    let r = ctx.mcp.as_mut()?.refusal.take()?;
    let error_code = r.status;
    if session.response_written().is_none() {
        let id = crate::request_id::as_str(&ctx.request_id);
        let _ = write(session, r, id).await;
    }
    Some(FailToProxy {
        error_code,
        can_reuse_downstream: false,
    })
}

/// Writes what the gateway answers in the server's place.
pub async fn write(session: &mut Session, r: Refused, request_id: &str) -> Result<()> {
    if r.written {
        return Ok(());
    }
    let mut headers: Vec<_> = (r.retry_after.iter())
        .map(|s| ("retry-after", http::HeaderValue::from(*s)))
        .collect();
    headers.extend(r.headers);
    crate::respond::write_json(session, r.status, r.body, request_id, &headers).await
}

/// Every request of an MCP route goes to the server's MCP path as written in its URL (the
/// transport has one endpoint): a path below the route's prefix is not another endpoint, and a
/// server's redirect to its own address must not reach the client.
fn to_the_server_path(session: &Session, ctx: &mut Ctx) {
    let Some(route) = ctx.route() else { return };
    let path = route.backends.path_prefix();
    let path = if path.is_empty() { "/" } else { path };
    let target = match session.req_header().uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    if let Ok(uri) = http::Uri::try_from(target) {
        ctx.upstream.forward = Some(Box::new(uri));
    }
}

/// What a session token is sealed to: the route and the agent, so that it opens nowhere else.
pub(super) fn bind(ctx: &Ctx) -> String {
    let route = ctx.route().map_or("", |r| r.label.as_str());
    let agent = ctx.caller.identity.as_ref().map_or("", |i| &*i.agent.id);
    format!("{route}\0{agent}")
}

/// Session affinity: a request naming the gateway's session id goes to the address that holds
/// the server's session, with the server's own id. A token that does not open here, or whose
/// address is gone, is an unknown session: 404, as the transport says, and the client starts a
/// new one.
fn continue_session(session: &mut Session, ctx: &mut Ctx) -> Result<(), Refused> {
    let Some(settings) = ctx.route().and_then(|r| r.mcp.clone()) else {
        return Ok(());
    };
    let token = session.req_header().headers.get("mcp-session-id");
    // A federated session's token is read by the federated request path.
    let federated = settings.servers.len() > 1;
    let Some(token) = token.filter(|_| settings.session_affinity && !federated) else {
        return Ok(());
    };
    let unknown = || {
        let body = jsonrpc::error(&Value::Null, -32001, "session not found", None);
        Refused::new("unknown_session", 404, body)
    };
    let opened = token
        .to_str()
        .ok()
        .and_then(|t| settings.sealer.open(t, &bind(ctx)));
    let leg = opened
        .and_then(|s| s.servers.into_iter().next())
        .ok_or_else(unknown)?;
    let pool = ctx.upstream.pool.clone().ok_or_else(unknown)?;
    ctx.upstream.next = Some(pool.pick(&leg.addr).ok_or_else(unknown)?);
    let headers = session.req_header_mut();
    match leg.session.map(http::HeaderValue::try_from) {
        Some(Ok(id)) => {
            let _ = headers.insert_header("mcp-session-id", id);
        }
        _ => {
            headers.remove_header("mcp-session-id");
        }
    }
    Ok(())
}

/// `tool_rate_limits`: a token of the agent's limit for each tool called (shared through the
/// limits' Redis store when there is one). A call past its limit is answered `-32029` with
/// `Retry-After`; a batch goes whole or not at all (tokens its earlier calls took stay taken).
async fn limit_tools(batch: &Batch, ctx: &Ctx, shared: &crate::limits::Shared) -> Option<Refused> {
    let agent = &ctx.caller.identity.as_ref()?.agent;
    let limits = agent.tool_limits.as_ref()?;
    let mut exceeded: Vec<Option<u64>> = Vec::with_capacity(batch.messages.len());
    for m in &batch.messages {
        let limit = (m.method.as_deref() == Some("tools/call"))
            .then(|| {
                m.name
                    .as_deref()
                    .and_then(|n| limits.get(n).map(|l| (n, *l)))
            })
            .flatten();
        let over = match limit {
            Some((tool, limit)) => {
                let key = format!("clawgate:{{a:{}}}:tool:{tool}", agent.id);
                shared
                    .take_keyed(&key, limit)
                    .await
                    .err()
                    .map(|e| e.retry_after_secs)
            }
            None => None,
        };
        exceeded.push(over);
    }
    let wait = exceeded.iter().flatten().max().copied()?;
    let answers: Vec<Bytes> = (batch.messages.iter().zip(&exceeded))
        .filter_map(|(m, over)| {
            let id = m.id.as_ref()?;
            Some(match over {
                Some(secs) => jsonrpc::rate_limited(id, *secs),
                None => not_sent(id, "not sent: the batch calls a tool past its rate limit"),
            })
        })
        .collect();
    let mut r = Refused::new("rate_limited", 200, join(batch, &answers));
    r.retry_after = Some(wait);
    Some(r)
}

fn not_sent(id: &Value, why: &str) -> Bytes {
    jsonrpc::error(id, jsonrpc::INVALID_REQUEST, why, None)
}

/// One answer, or the array a batch is answered with.
fn join(batch: &Batch, answers: &[Bytes]) -> Bytes {
    match (batch.batch, answers) {
        (false, [one]) => one.clone(),
        _ => jsonrpc::array(answers),
    }
}

/// The answer to a body that calls a tool the agent may not use: `-32003` for each such call;
/// in a batch, the other requests are answered as not sent (a batch goes whole or not at all).
fn refuse_denied(batch: &Batch, grants: Option<&Grants>) -> Option<Bytes> {
    let grants = grants?;
    let denied = |m: &jsonrpc::Message| {
        m.method.as_deref() == Some("tools/call")
            && !m.name.as_deref().is_some_and(|n| grants.allows(n))
    };
    if !batch.messages.iter().any(denied) {
        return None;
    }
    let answers: Vec<Bytes> = (batch.messages.iter())
        .filter_map(|m| {
            let id = m.id.as_ref()?;
            Some(match denied(m) {
                true => jsonrpc::tool_not_allowed(id, m.name.as_deref().unwrap_or_default()),
                false => not_sent(id, "not sent: the batch calls a tool that is not allowed"),
            })
        })
        .collect();
    Some(join(batch, &answers))
}

/// A server's answer that opens a session (its `Mcp-Session-Id`): the client is given instead
/// a sealed token naming the server, the address that answered and the server's id.
pub fn seal_session(ctx: &mut Ctx, resp: &ResponseHeader) {
    let Some(settings) = ctx.route().and_then(|r| r.mcp.clone()) else {
        return;
    };
    let id = resp
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok());
    let (Some(id), Some(picked)) = (id, ctx.upstream.picked.as_ref()) else {
        return;
    };
    if !settings.session_affinity {
        return;
    }
    let s = crate::mcp::session::Session {
        servers: vec![crate::mcp::session::Leg {
            server: settings
                .servers
                .first()
                .map_or_else(String::new, |s| s.name.clone()),
            addr: picked.addr.label.clone(),
            session: Some(id.to_string()),
        }],
    };
    match settings.sealer.seal(&s, &bind(ctx)) {
        Ok(token) => {
            if let Some(state) = ctx.mcp.as_mut() {
                state.sealed = Some(token);
            }
        }
        // The server's own id then goes out as it is: the session works, on this address.
        Err(e) => log::warn!("an MCP session id could not be sealed: {e}"),
    }
}

impl State {
    /// What the log and the metrics say of the body: its method (`batch` for several
    /// messages) and the tool a single `tools/call` names; and the `tools/list` ids to filter.
    fn note(&mut self, batch: &Batch) {
        self.list_ids = batch.request_ids("tools/list");
        if let [one] = &batch.messages[..] {
            self.method = one.method.clone();
            self.tool = (one.method.as_deref() == Some("tools/call"))
                .then(|| one.name.clone())
                .flatten();
        } else {
            self.method = Some("batch".into());
        }
    }

    /// The server's response head: an answer that may hold a `tools/list` result is filtered
    /// (its length then changes, so it goes chunked).
    pub fn response(&mut self, resp: &mut ResponseHeader, version: http::Version) -> Result<()> {
        if let Some(token) = self.sealed.take() {
            resp.insert_header("mcp-session-id", token)?;
        }
        if self.session.is_none() {
            let id = resp
                .headers
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok());
            self.session = id.map(digest);
        }
        if self.list_ids.is_empty() || self.grants.as_ref().is_none_or(|g| g.is_all()) {
            return Ok(());
        }
        let content_type = (resp.headers.get(http::header::CONTENT_TYPE))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        // Anything but a stream is read whole: an answer of another type is still checked
        // rather than passed on with the names it may hold.
        let answer = if content_type.starts_with("text/event-stream") {
            let grants = self.grants.clone();
            let allows = move |tool: &str| grants.as_ref().is_none_or(|g| g.allows(tool));
            let filter = SseFilter::new(self.list_ids.clone(), allows, MAX_EVENT);
            Answer::Sse(Box::new(filter))
        } else {
            Answer::Json(BytesMut::new())
        };
        self.answer = Some(answer);
        resp.remove_header(&http::header::CONTENT_LENGTH);
        if version == http::Version::HTTP_11 {
            resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
        Ok(())
    }

    /// A piece of the server's answer, rewritten in place.
    pub fn body(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) -> Result<()> {
        match self.answer.as_mut() {
            None => Ok(()),
            Some(Answer::Sse(f)) => {
                let mut out = BytesMut::new();
                if let Some(b) = body.take() {
                    out.extend_from_slice(&f.feed(&b));
                }
                if end_of_stream {
                    out.extend_from_slice(&f.finish());
                }
                *body = (!out.is_empty()).then(|| out.freeze());
                Ok(())
            }
            Some(Answer::Json(buf)) => {
                if let Some(b) = body.take() {
                    if buf.len() + b.len() > MAX_LIST_ANSWER {
                        return Err(pingora::Error::explain(
                            pingora::ErrorType::HTTPStatus(502),
                            "a tools/list answer too large to filter",
                        ));
                    }
                    buf.extend_from_slice(&b);
                }
                if end_of_stream {
                    let whole = std::mem::take(buf).freeze();
                    let grants = self.grants.clone();
                    let allows = |tool: &str| grants.as_ref().is_none_or(|g| g.allows(tool));
                    let filtered = crate::mcp::filter::tools_list(&whole, &self.list_ids, allows);
                    let readable =
                        || serde_json::from_slice::<serde::de::IgnoredAny>(&whole).is_ok();
                    *body = Some(match filtered {
                        Some(f) => f,
                        None if readable() => whole,
                        // Not JSON: it cannot be filtered, so it does not go out.
                        None => jsonrpc::error(
                            &Value::Null,
                            -32603,
                            "the server's answer to tools/list could not be read",
                            None,
                        ),
                    });
                }
                Ok(())
            }
        }
    }
}
