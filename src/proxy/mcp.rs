//! MCP routes on the request path (DESIGN §5.2), one server passed through: the gateway reads
//! each JSON-RPC message of a POST, refuses a body that is not JSON-RPC and a `tools/call` of a
//! tool the agent may not use (the server never sees either), and hides from `tools/list`
//! answers, JSON or SSE, the tools the agent may not use. `GET` streams and `DELETE` pass
//! through.

use super::ctx::Ctx;
use crate::mcp::filter::SseFilter;
use crate::mcp::grants::Grants;
use crate::mcp::jsonrpc::{self, Batch};
use bytes::{Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
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
    /// The ids of the `tools/list` requests whose answers are filtered, and the agent's grants.
    list_ids: Vec<Value>,
    grants: Option<Arc<Grants>>,
    /// The answer being filtered.
    answer: Option<Answer>,
}

enum Answer {
    Json(BytesMut),
    Sse(Box<SseFilter>),
}

/// What to write instead of sending the request on.
pub struct Refused {
    pub status: u16,
    pub body: Bytes,
}

/// Reads and checks a POST to an MCP route. `Ok(Some)`: the answer to write (nothing is sent
/// to the server); `Ok(None)`: send it on, with the state for the answer left in `ctx`.
pub async fn admit(session: &mut Session, ctx: &mut Ctx, keep: bool) -> Result<Option<Refused>> {
    let req = session.req_header();
    if req.method != http::Method::POST {
        return Ok(None);
    }
    let header = |n: &str| {
        (session.req_header().headers.get(n))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (mcp_method, mcp_name) = (header("mcp-method"), header("mcp-name"));
    ctx.read_ahead(session, keep).await?;
    let Some(body) = ctx.body.pre_read.as_ref() else {
        // Without the whole body in hand nothing can be checked, so nothing is sent.
        let e = jsonrpc::error(
            &Value::Null,
            jsonrpc::INVALID_REQUEST,
            "the gateway reads MCP messages of at most 64 KB with a Content-Length",
            None,
        );
        return Ok(Some(Refused {
            status: 413,
            body: e,
        }));
    };
    let batch = match jsonrpc::read(body) {
        Ok(b) => b,
        Err(m) => {
            return Ok(Some(Refused {
                status: 400,
                body: m.answer(),
            }))
        }
    };
    if let Err(why) = jsonrpc::check_headers(mcp_method.as_deref(), mcp_name.as_deref(), &batch) {
        let e = jsonrpc::error(&Value::Null, jsonrpc::INVALID_REQUEST, why, None);
        return Ok(Some(Refused {
            status: 400,
            body: e,
        }));
    }
    let grants = (ctx.caller.identity.as_ref()).and_then(|i| i.agent.tools.clone());
    let mut state = Box::new(State {
        list_ids: batch.request_ids("tools/list"),
        grants,
        ..State::default()
    });
    if let [one] = &batch.messages[..] {
        state.method = one.method.clone();
        state.tool = (one.method.as_deref() == Some("tools/call"))
            .then(|| one.name.clone())
            .flatten();
    } else {
        state.method = Some("batch".into());
    }
    let refused = refuse_denied(&batch, state.grants.as_deref());
    ctx.mcp = Some(state);
    Ok(refused)
}

/// The answer to a body that calls a tool the agent may not use: `-32003` for each such call;
/// in a batch, the other requests are answered as not sent (a batch goes whole or not at all).
fn refuse_denied(batch: &Batch, grants: Option<&Grants>) -> Option<Refused> {
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
                false => jsonrpc::error(
                    id,
                    jsonrpc::INVALID_REQUEST,
                    "not sent: the batch calls a tool that is not allowed",
                    None,
                ),
            })
        })
        .collect();
    let body = match (batch.batch, &answers[..]) {
        (false, [one]) => one.clone(),
        _ => {
            let parts: Vec<&[u8]> = answers.iter().map(|b| &b[..]).collect();
            let mut out = b"[".to_vec();
            out.extend_from_slice(&parts.join(&b","[..]));
            out.push(b']');
            Bytes::from(out)
        }
    };
    Some(Refused { status: 200, body })
}

impl State {
    /// The server's response head: an answer that may hold a `tools/list` result is filtered
    /// (its length then changes, so it goes chunked).
    pub fn response(&mut self, resp: &mut ResponseHeader, version: http::Version) -> Result<()> {
        if self.list_ids.is_empty() || self.grants.as_ref().is_none_or(|g| g.is_all()) {
            return Ok(());
        }
        let content_type = (resp.headers.get(http::header::CONTENT_TYPE))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        self.answer = if content_type.starts_with("application/json") {
            Some(Answer::Json(BytesMut::new()))
        } else if content_type.starts_with("text/event-stream") {
            let grants = self.grants.clone();
            let allows = move |tool: &str| grants.as_ref().is_none_or(|g| g.allows(tool));
            let filter = SseFilter::new(self.list_ids.clone(), allows, MAX_EVENT);
            Some(Answer::Sse(Box::new(filter)))
        } else {
            None
        };
        if self.answer.is_some() {
            resp.remove_header(&http::header::CONTENT_LENGTH);
            if version == http::Version::HTTP_11 {
                resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
            }
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
                    *body = Some(filtered.unwrap_or(whole));
                }
                Ok(())
            }
        }
    }
}
