//! A single request's answer written to the client: the gateway's own, a server's JSON read
//! whole, or a server's SSE stream relayed as it comes, so that the progress a slow tool
//! reports reaches the client while the tool runs. The request's id and the client's progress
//! token went to the server as the client wrote them, so its events need no rewriting, but
//! for a client of the stateless revision (`modern`: the method), whose results are completed.

use super::super::mcp::Refused;
use super::servers::{content_type, whole, MAX_ANSWER};
use super::Reply;
use crate::http_client::Streaming;
use crate::mcp::{jsonrpc, stateless};
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use serde_json::Value;
use std::time::Duration;

/// Writes `r` when it is a server's stream; else the answer for the caller to write.
pub async fn single(
    session: &mut Session,
    request_id: &HeaderValue,
    id: &Value,
    r: Reply,
    timeout: Duration,
    modern: Option<&str>,
) -> Refused {
    // The session the answer comes in lives until it is read.
    let (server, answer, _opened) = match r {
        Reply::Own(outcome, b) => return Refused::new(outcome, 200, complete(b, modern)),
        Reply::Server(server, a, opened) => (server, *a, opened),
    };
    if answer.status == 200 && content_type(&answer.headers).starts_with("text/event-stream") {
        return stream(session, request_id, answer, modern).await;
    }
    let ct = answer.headers.get(http::header::CONTENT_TYPE).cloned();
    match whole(Ok(answer), timeout).await {
        Ok(a) => {
            let body = complete(Bytes::from(a.body), modern);
            let mut r = Refused::new("ok", a.status, body);
            r.headers.extend(ct.map(|ct| ("content-type", ct)));
            r
        }
        Err(e) => {
            log::warn!("MCP server {server}: {e}");
            let body = jsonrpc::server_unavailable(id, &server);
            Refused::new("unavailable", 200, body)
        }
    }
}

/// `b` completed for a client of the stateless revision.
fn complete(b: Bytes, modern: Option<&str>) -> Bytes {
    modern.and_then(|m| stateless::answer(&b, m)).unwrap_or(b)
}

/// The server's event stream, piece by piece as it arrives. A server that stops mid-stream
/// ends the client's stream there (the client then sees its request unanswered, as it would
/// from the server itself).
async fn stream(
    session: &mut Session,
    request_id: &HeaderValue,
    mut answer: Streaming<'static>,
    modern: Option<&str>,
) -> Refused {
    let mut rewrite = modern.map(|m| stateless::Sse::new(m, MAX_ANSWER));
    let mut r = Refused::new("ok", 200, Bytes::new());
    // From here on the answer is the client's whatever happens: nothing else is written.
    r.written = true;
    if let Err(e) = head(session, request_id).await {
        log::debug!("an MCP client left before its answer: {e}");
        return r;
    }
    loop {
        match answer.next().await {
            Ok(Some(piece)) => {
                let piece = match rewrite.as_mut() {
                    Some(r) => r.feed(&piece),
                    None => piece,
                };
                if let Err(e) = session.write_response_body(Some(piece), false).await {
                    log::debug!("an MCP client left during its answer: {e}");
                    return r;
                }
            }
            Ok(None) => {
                answer.release().await;
                break;
            }
            Err(e) => {
                log::warn!("an MCP server's stream ended early: {e}");
                r.outcome = "unavailable";
                break;
            }
        }
    }
    let rest = rewrite
        .as_mut()
        .map(|r| r.finish())
        .filter(|b| !b.is_empty());
    if let Err(e) = session.write_response_body(rest, true).await {
        log::debug!("an MCP client left at the end of its answer: {e}");
    }
    r
}

/// The head of a relayed stream: its length unknown, so chunked on HTTP/1.1.
async fn head(session: &mut Session, request_id: &HeaderValue) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(200, Some(4))?;
    h.insert_header("content-type", "text/event-stream")?;
    h.insert_header("cache-control", "no-store")?;
    h.insert_header("x-request-id", request_id)?;
    if session.req_header().version == http::Version::HTTP_11 {
        h.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    session.write_response_header(Box::new(h), false).await
}
