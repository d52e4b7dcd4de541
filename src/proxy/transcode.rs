//! A JSON request on a `grpc_transcode` route, answered by a gRPC call (DESIGN §5.4): the
//! method found from the path, the message made from the body, path and query, sent framed to
//! one of the backend's addresses over Pingora's HTTP/2 client; the answer's messages turned
//! into JSON (a server stream line by line as they arrive) and its status into HTTP's. Native
//! gRPC requests on the same route are proxied as they are.

use super::Ctx;
use crate::backends::Picked;
use crate::grpc::{message, wire, Found, Transcoder};
use crate::http_client::{self, Call, Streaming, Target};
use crate::{request_id, respond};
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The largest answer message taken from a backend.
const MAX_MESSAGE: usize = 16 << 20;
/// A route without `timeout`: the deadline of its calls.
const DEADLINE: Duration = Duration::from_secs(60);

/// Headers of the client's that are not passed on to the gRPC backend besides those of every
/// call the gateway makes (`ctx::NEVER_PASSED`): gRPC's own, which the gateway sets.
const NOT_PASSED: &[&str] = &["grpc-timeout", "grpc-encoding", "grpc-accept-encoding"];

/// Answers a JSON request on a transcoding route (`true`); a native gRPC request, or one on
/// another route, is proxied as it is (`false`).
pub async fn answer(session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
    let Some(t) = ctx.route().and_then(|r| r.grpc.clone()) else {
        return Ok(false);
    };
    let native = (session.req_header().headers.get(http::header::CONTENT_TYPE))
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if native {
        return Ok(false);
    }
    serve(session, ctx, t).await?;
    Ok(true)
}

/// A gRPC status, as the backend (or the gateway, for its own failures) gave it.
struct Status {
    code: u32,
    message: String,
}

impl Status {
    fn new(code: u32, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    fn json(&self, request_id: &str) -> Bytes {
        Bytes::from(
            serde_json::json!({
                "error": wire::name(self.code),
                "code": wire::http_status(self.code),
                "message": self.message,
                "grpc_status": self.code,
                "request_id": request_id,
            })
            .to_string(),
        )
    }
}

/// Answers the request; `Err` only when the client's connection failed.
async fn serve(session: &mut Session, ctx: &mut Ctx, t: Arc<Transcoder>) -> pingora::Result<()> {
    let id = request_id::as_str(&ctx.request_id).to_string();
    let uri = match &ctx.upstream.forward {
        Some(f) => (**f).clone(),
        None => session.req_header().uri.clone(),
    };
    let verb = session.req_header().method.clone();
    let Some(found) = t.find(&verb, uri.path()) else {
        let msg = format!("no gRPC method is bound to {verb} {}", uri.path());
        return own_error(session, 404, &msg, &id).await;
    };
    let Some(body) = super::mcp::read_whole(session, ctx).await? else {
        let msg = format!("the body is larger than {} bytes", ctx.config.max_body_size);
        return own_error(session, 413, &msg, &id).await;
    };
    let input = found.method.input();
    let encoded = match message::request(&input, found.body, &body, &found.vars, uri.query()) {
        Ok(m) => m,
        Err(e) => return own_error(session, 400, &e, &id).await,
    };
    let framed = match wire::frame(&encoded) {
        Ok(f) => f,
        Err(e) => return own_error(session, 413, &e, &id).await,
    };
    let deadline = ctx.route().and_then(|r| r.timeout).unwrap_or(DEADLINE);
    let started = Instant::now();
    let call = tokio::time::timeout(deadline, call(session, ctx, &found, framed, deadline));
    let outcome = match call.await {
        Ok(Ok(o)) => o,
        Ok(Err(status)) => Outcome::Failed(status),
        Err(_) => Outcome::Failed(Status::new(wire::DEADLINE_EXCEEDED, "deadline exceeded")),
    };
    ctx.upstream.seconds = Some(started.elapsed().as_secs_f64());
    match outcome {
        Outcome::Done => Ok(()),
        Outcome::Failed(mut s) => {
            // A server that cancels at the deadline the gateway sent it has run out of time.
            if s.code == wire::CANCELLED && started.elapsed() >= deadline.mul_f32(0.9) {
                s = Status::new(wire::DEADLINE_EXCEEDED, "deadline exceeded");
            }
            if session.response_written().is_some() {
                return trailer_error(session, ctx, &s, &id).await;
            }
            let code = wire::http_status(s.code);
            respond::write_json(session, code, s.json(&id), &id, &[]).await
        }
    }
}

enum Outcome {
    /// The answer is written.
    Done,
    Failed(Status),
}

/// The gateway's own refusal of a request that never reached the backend.
async fn own_error(session: &mut Session, code: u16, msg: &str, id: &str) -> pingora::Result<()> {
    respond::write_json(session, code, respond::error_body(code, msg, id), id, &[]).await
}

/// Makes the call and writes a successful answer; a failure before anything was written, or
/// the status that ended a stream after its messages, comes back as `Err`.
async fn call(
    session: &mut Session,
    ctx: &mut Ctx,
    found: &Found<'_>,
    framed: Bytes,
    deadline: Duration,
) -> Result<Outcome, Status> {
    let passed = super::ctx::passed_on(session, ctx, NOT_PASSED);
    let (mut answer, picked) = open(ctx, found, framed, deadline, &passed).await?;
    ctx.upstream.status = Some(answer.status);
    // Held in the context, the address is in the access log (and counted in flight).
    ctx.upstream.picked = Some(picked);
    let early = match status_of(&answer.headers) {
        // Trailers-only: a status and no message.
        Some(s) => Some(s),
        None if answer.status != 200 => Some(of_http(answer.status)),
        None => None,
    };
    if let Some(s) = early {
        report(ctx, s.code != wire::UNAVAILABLE);
        return Err(s);
    }
    let streaming = found.method.is_server_streaming();
    let mut out = Relay {
        output: found.method.output(),
        sse: streaming && accepts_sse(session),
        streaming,
        sent: 0,
        unary: None,
    };
    let mut frames = wire::Deframer::default();
    while let Some(chunk) = answer.next().await.map_err(|e| transport(ctx, &e))? {
        frames.push(&chunk);
        let internal = |e| Status::new(wire::INTERNAL, e);
        while let Some(m) = frames.next(MAX_MESSAGE).map_err(internal)? {
            out.message(session, ctx, m).await?;
        }
    }
    let trailers = (answer.trailers().await).map_err(|e| transport(ctx, &e))?;
    let status = (trailers.as_ref().and_then(status_of))
        .unwrap_or_else(|| Status::new(wire::UNKNOWN, "the backend sent no grpc-status"));
    report(ctx, status.code != wire::UNAVAILABLE);
    answer.release().await;
    if status.code != 0 {
        return Err(status);
    }
    out.finish(session, ctx).await?;
    Ok(Outcome::Done)
}

/// The answer's messages on their way to the client.
struct Relay {
    output: prost_reflect::MessageDescriptor,
    streaming: bool,
    sse: bool,
    /// Stream messages written so far.
    sent: usize,
    /// A unary call's message, written once its status is known.
    unary: Option<Bytes>,
}

impl Relay {
    /// A message: a stream's is written at once (the head before the first).
    async fn message(
        &mut self,
        session: &mut Session,
        ctx: &mut Ctx,
        m: Bytes,
    ) -> Result<(), Status> {
        if !self.streaming {
            self.unary = Some(m);
            return Ok(());
        }
        let json = message::answer(&self.output, m).map_err(|e| Status::new(wire::INTERNAL, e))?;
        if self.sent == 0 {
            stream_head(session, self.sse, &ctx.request_id)
                .await
                .map_err(client_gone)?;
        }
        self.sent += 1;
        let line = line(json, self.sse);
        ctx.usage.bytes_out += line.len() as u64;
        session
            .write_response_body(Some(line), false)
            .await
            .map_err(client_gone)
    }

    /// The call ended well: a stream's end, or the unary answer.
    async fn finish(self, session: &mut Session, ctx: &mut Ctx) -> Result<(), Status> {
        if self.streaming {
            if self.sent == 0 {
                stream_head(session, self.sse, &ctx.request_id)
                    .await
                    .map_err(client_gone)?;
            }
            return session
                .write_response_body(None, true)
                .await
                .map_err(client_gone);
        }
        let m = (self.unary)
            .ok_or_else(|| Status::new(wire::INTERNAL, "the backend sent no message"))?;
        let json = message::answer(&self.output, m).map_err(|e| Status::new(wire::INTERNAL, e))?;
        ctx.usage.bytes_out += json.len() as u64;
        let id = request_id::as_str(&ctx.request_id);
        (respond::write_json(session, 200, Bytes::from(json), id, &[]).await).map_err(client_gone)
    }
}

/// Sends the call to one of the backend's addresses (another one when connecting fails); the
/// answer's head.
async fn open(
    ctx: &mut Ctx,
    found: &Found<'_>,
    framed: Bytes,
    deadline: Duration,
    passed: &[(http::HeaderName, HeaderValue)],
) -> Result<(Streaming<'static>, Picked), Status> {
    let pool = (ctx.upstream.pool.clone()).ok_or_else(|| Status::new(wire::INTERNAL, "no pool"))?;
    let connect = (ctx.route().and_then(|r| r.connect_timeout))
        .or(pool.connect_timeout)
        .unwrap_or(ctx.config.connect_timeout);
    let timeout = crate::grpc::wire::timeout_header(deadline);
    let headers = [
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", timeout.as_str()),
    ];
    let mut last = String::from("no address of the backend is available");
    // A few addresses at most: each failed one is left out of the next pick.
    for _ in 0..3 {
        let Some(picked) = pool.select(b"", &ctx.upstream.tried) else {
            break;
        };
        let peer = pool.peer(&picked.addr, connect, deadline);
        let host = pool.host_for(&picked.addr).unwrap_or(&pool.host_header);
        let host = host.to_str().unwrap_or_default().to_string();
        let target = Target::at(peer, host, found.path.clone());
        let call = Call {
            method: "POST",
            headers: &headers,
            body: Some(framed.clone()),
            max_answer: MAX_MESSAGE,
        };
        match http_client::open(http_client::connector(), &target, call, passed, deadline).await {
            Ok(s) => return Ok((s, picked)),
            Err(e) => {
                picked.pool.report(&picked.addr, false);
                ctx.upstream.tried.push(picked.addr.addr);
                last = e;
            }
        }
    }
    Err(Status::new(wire::UNAVAILABLE, last))
}

/// `grpc-status` (and `grpc-message`) of a head or trailers.
fn status_of(h: &http::HeaderMap) -> Option<Status> {
    let code = h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    let message = (h.get("grpc-message").and_then(|m| m.to_str().ok()))
        .map(wire::message)
        .unwrap_or_default();
    Some(Status { code, message })
}

/// A non-gRPC HTTP answer, as gRPC maps it ("HTTP to gRPC Status Code Mapping").
fn of_http(status: u16) -> Status {
    let code = match status {
        400 => wire::INTERNAL,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => wire::UNAVAILABLE,
        _ => wire::UNKNOWN,
    };
    Status::new(code, format!("the backend answered HTTP {status}"))
}

/// How the address answered, for its health (passive checks, breaker).
fn report(ctx: &Ctx, ok: bool) {
    if let Some(p) = &ctx.upstream.picked {
        p.pool.report(&p.addr, ok);
    }
}

fn transport(ctx: &Ctx, e: &str) -> Status {
    report(ctx, false);
    Status::new(
        wire::UNAVAILABLE,
        format!("the backend's answer broke off: {e}"),
    )
}

/// The client went away: nothing more can be written.
fn client_gone(e: Box<pingora::Error>) -> Status {
    Status::new(wire::CANCELLED, format!("the client went away: {e}"))
}

fn accepts_sse(session: &Session) -> bool {
    (session
        .req_header()
        .headers
        .get_all(http::header::ACCEPT)
        .iter())
    .any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")))
}

async fn stream_head(session: &mut Session, sse: bool, id: &HeaderValue) -> pingora::Result<()> {
    let mut h = ResponseHeader::build(200, Some(4))?;
    let kind = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    h.insert_header("content-type", kind)?;
    h.insert_header("cache-control", "no-store")?;
    h.insert_header("x-request-id", id)?;
    if session.req_header().version == http::Version::HTTP_11 {
        h.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    session.write_response_header(Box::new(h), false).await
}

/// One message of a stream: an NDJSON line, or an SSE `data:` event.
fn line(json: Vec<u8>, sse: bool) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + 8);
    if sse {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
    } else {
        out.extend_from_slice(&json);
        out.push(b'\n');
    }
    Bytes::from(out)
}

/// A stream that failed after its head was sent: its status as a last line (or an SSE
/// `error` event), then the end.
async fn trailer_error(
    session: &mut Session,
    ctx: &mut Ctx,
    s: &Status,
    id: &str,
) -> pingora::Result<()> {
    let sse = accepts_sse(session);
    let json = s.json(id);
    let last = if sse {
        Bytes::from([b"event: error\ndata: ", &json[..], b"\n\n"].concat())
    } else {
        Bytes::from([&json[..], b"\n"].concat())
    };
    ctx.usage.bytes_out += last.len() as u64;
    session.write_response_body(Some(last), true).await
}
