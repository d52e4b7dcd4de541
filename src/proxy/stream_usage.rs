//! `include_usage` routes (DESIGN §5.3): a streamed LLM request that does not ask for its usage
//! is sent with `stream_options.include_usage: true`, so that the answer's last chunk says what
//! it consumed (token budgets and `agent_token_usage` count that rather than an estimate), and
//! that chunk is taken out of the stream the client gets: it did not ask for it, and clients
//! that read `choices[0]` of every chunk would trip on its empty `choices`.

use super::ctx::Ctx;
use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;
use serde_json::Value;

/// What the gateway changed of a request, and undoes in its answer.
pub struct StreamUsage {
    /// The request's body as sent (the read-ahead body with the option added).
    body: Bytes,
    /// The answer's events still to be split (a stream is filtered event by event).
    answer: Option<BytesMut>,
}

/// Asks for the usage of a streamed LLM request on an `include_usage` route (its body read
/// ahead, at most 64 KiB; a larger one is sent as it is).
pub async fn ask(session: &mut Session, ctx: &mut Ctx, keep: bool) -> Result<()> {
    if !ctx.route().is_some_and(|r| r.include_usage)
        || session.req_header().method != http::Method::POST
        || session.is_upgrade_req()
    {
        return Ok(());
    }
    ctx.read_ahead(session, keep).await?;
    let body = ctx.body.pre_read.as_deref().and_then(with_usage);
    ctx.stream_usage = body.map(|body| Box::new(StreamUsage { body, answer: None }));
    Ok(())
}

/// `body` asking for its usage; `None` when it is not a streamed LLM request or already asks.
fn with_usage(body: &[u8]) -> Option<Bytes> {
    // Most bodies are not streamed requests: no parse for them.
    find(body, b"\"stream\"")?;
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let o = v.as_object_mut()?;
    let llm = ["messages", "prompt", "input"]
        .iter()
        .any(|k| o.contains_key(*k));
    if o.get("stream") != Some(&Value::Bool(true)) || !o.contains_key("model") || !llm {
        return None;
    }
    let options = o
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()?;
    if options.get("include_usage") == Some(&Value::Bool(true)) {
        return None;
    }
    options.insert("include_usage".into(), Value::Bool(true));
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

/// The rewritten body's length, on the head sent upstream (each try).
pub fn head(ctx: &Ctx, req: &mut RequestHeader) -> Result<()> {
    if let Some(s) = &ctx.stream_usage {
        req.remove_header(&http::header::TRANSFER_ENCODING);
        req.insert_header(http::header::CONTENT_LENGTH, s.body.len())?;
    }
    Ok(())
}

/// The read-ahead body, replayed from Pingora's retry buffer, is sent rewritten (on each try).
pub fn body(ctx: &Ctx, body: &mut Option<Bytes>) {
    if let (Some(s), Some(_)) = (&ctx.stream_usage, body.as_ref()) {
        *body = Some(s.body.clone());
    }
}

/// A successful SSE answer is filtered (its length changes, so it goes chunked); anything
/// else passes as it is.
pub fn response(ctx: &mut Ctx, resp: &mut ResponseHeader, version: http::Version) -> Result<()> {
    let Some(s) = ctx.stream_usage.as_mut() else {
        return Ok(());
    };
    let sse = (resp.headers.get(http::header::CONTENT_TYPE))
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if resp.status.is_success() && sse {
        s.answer = Some(BytesMut::new());
        resp.remove_header(&http::header::CONTENT_LENGTH);
        if version == http::Version::HTTP_11 {
            resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
    }
    Ok(())
}

/// Takes the usage-only events out of a piece of the answer. Whole events go on as they come;
/// only an event cut by a chunk's end waits for the rest of itself.
pub fn hide(ctx: &mut Ctx, body: &mut Option<Bytes>, end_of_stream: bool) {
    let Some(carry) = ctx.stream_usage.as_mut().and_then(|s| s.answer.as_mut()) else {
        return;
    };
    if let Some(b) = body.take() {
        carry.extend_from_slice(&b);
    }
    let out = whole_events(carry, end_of_stream);
    *body = (!out.is_empty() || end_of_stream).then(|| out.freeze());
}

/// The whole events of `carry` but the usage-only ones (and at the end, what is left).
fn whole_events(carry: &mut BytesMut, end_of_stream: bool) -> BytesMut {
    let mut out = BytesMut::new();
    while let Some(end) = event_end(carry) {
        let event = carry.split_to(end);
        if !usage_only(&event) {
            out.extend_from_slice(&event);
        }
    }
    if end_of_stream {
        out.extend_from_slice(&carry.split());
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Where the first whole event ends (past its blank line: `\n\n` or `\r\n\r\n`).
fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = find(buf, b"\n\n").map(|i| i + 2);
    let crlf = find(buf, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// An event whose data is a chunk with no choices and a usage: the one the option added.
fn usage_only(event: &[u8]) -> bool {
    if find(event, b"\"usage\"").is_none() {
        return false;
    }
    let text = String::from_utf8_lossy(event);
    let data: String = (text.lines())
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim_start)
        .collect();
    let Ok(v) = serde_json::from_str::<Value>(&data) else {
        return false;
    };
    let no_choices = v["choices"].as_array().is_some_and(|c| c.is_empty());
    no_choices && v["usage"].is_object()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_streamed_llm_requests_that_do_not_ask_are_rewritten() {
        let asked =
            |b: &str| with_usage(b.as_bytes()).map(|b| String::from_utf8_lossy(&b).into_owned());
        let v = asked(r#"{"model":"m","stream":true,"messages":[]}"#).unwrap_or_default();
        let v: Value = serde_json::from_str(&v).unwrap_or_default();
        assert_eq!(v["stream_options"]["include_usage"], true);
        let v = asked(
            r#"{"model":"m","stream":true,"input":"x","stream_options":{"include_usage":false}}"#,
        );
        assert!(v.is_some_and(|v| v.contains("\"include_usage\":true")));
        assert_eq!(asked(r#"{"model":"m","stream":false,"messages":[]}"#), None);
        assert_eq!(asked(r#"{"model":"m","messages":[]}"#), None);
        assert_eq!(asked(r#"{"stream":true,"messages":[]}"#), None);
        assert_eq!(
            asked(
                r#"{"model":"m","stream":true,"messages":[],"stream_options":{"include_usage":true}}"#
            ),
            None
        );
        assert_eq!(
            asked(r#"{"model":"m","stream":true,"messages":[],"stream_options":3}"#),
            None
        );
        assert_eq!(asked("not json \"stream\""), None);
    }

    #[test]
    fn the_usage_event_is_taken_out_wherever_chunks_cut() {
        let stream = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
                      data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n\
                      data: [DONE]\n\n";
        let want = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
        for cut in 1..stream.len() {
            let mut carry = BytesMut::new();
            let mut got = Vec::new();
            for (piece, end) in [(&stream[..cut], false), (&stream[cut..], true)] {
                carry.extend_from_slice(piece.as_bytes());
                got.extend_from_slice(&whole_events(&mut carry, end));
            }
            assert_eq!(String::from_utf8_lossy(&got), want, "cut at {cut}");
        }
        // A content chunk that mentions usage stays.
        assert!(!usage_only(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\"\"}}]}\n\n"
        ));
        assert!(usage_only(b"data:{\"choices\":[],\"usage\":{}}\r\n\r\n"));
    }
}
