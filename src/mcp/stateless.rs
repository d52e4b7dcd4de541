//! A federated answer as the stateless revision (2026-07-28) writes it, for a client that
//! speaks it: the gateway talks to the servers in sessions (older revisions), whose results
//! lack what that revision requires of a result, `resultType`, and of a cacheable one (lists,
//! reads) `ttlMs` and `cacheScope`. They are added as `complete`, `0` (servers change) and
//! `private` (lists are filtered per agent). SSE answers are rewritten event by event, so a
//! stream still reaches the client as it comes.

use bytes::Bytes;
use serde_json::{json, Value};

/// Results the revision lets clients cache.
fn cacheable(method: &str) -> bool {
    method.ends_with("/list") || method == "resources/read" || method == "server/discover"
}

/// A JSON-RPC answer to `method` with the fields added; `None` when nothing changes (not JSON,
/// an error, a notification, or already complete).
pub fn answer(message: &[u8], method: &str) -> Option<Bytes> {
    let mut v: Value = serde_json::from_slice(message).ok()?;
    let result = v.get_mut("result")?.as_object_mut()?;
    let mut wanted = vec![("resultType", json!("complete"))];
    if cacheable(method) {
        wanted.extend([("ttlMs", json!(0)), ("cacheScope", json!("private"))]);
    }
    let mut changed = false;
    for (key, value) in wanted {
        if !result.contains_key(key) {
            result.insert(key.into(), value);
            changed = true;
        }
    }
    changed.then(|| Bytes::from(v.to_string()))
}

/// Rewrites an SSE answer as it arrives: each event is passed on once whole, as it came unless
/// it carries a result to complete. An event past `max` bytes passes on untouched.
pub struct Sse {
    method: String,
    held: Vec<u8>,
    max: usize,
}

impl Sse {
    pub fn new(method: &str, max: usize) -> Sse {
        Sse {
            method: method.to_string(),
            held: Vec::new(),
            max,
        }
    }

    /// What of the stream can go now.
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        self.held.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.held) {
            let event: Vec<u8> = self.held.drain(..end).collect();
            out.extend_from_slice(&self.event(&event));
        }
        if self.held.len() > self.max {
            out.append(&mut self.held);
        }
        Bytes::from(out)
    }

    /// The rest, at the stream's end (an event the server did not finish, as it came).
    pub fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.held))
    }

    fn event(&self, event: &[u8]) -> Bytes {
        let data = std::str::from_utf8(event).map(super::federation::sse_data);
        if let Ok([data]) = data.as_deref() {
            if let Some(new) = answer(data.as_bytes(), &self.method) {
                let text = String::from_utf8_lossy(&new);
                return Bytes::from(format!("event: message\ndata: {text}\n\n"));
            }
        }
        Bytes::copy_from_slice(event)
    }
}

/// Where the first whole event of `buf` ends (after the blank line that ends it), if any.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at < buf.len() {
        // A line ends at CRLF, LF or CR; an empty line ends the event.
        let rest = &buf[at..];
        let (line, sep) = match rest.iter().position(|b| *b == b'\n' || *b == b'\r') {
            Some(p) if rest[p] == b'\r' && rest.get(p + 1) == Some(&b'\n') => (p, 2),
            // A CR last in the buffer may be half of a CRLF: wait for the next byte.
            Some(p) if rest[p] == b'\r' && p + 1 == rest.len() => return None,
            Some(p) => (p, 1),
            None => return None,
        };
        at += line + sep;
        if line == 0 {
            return Some(at);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_get_what_the_revision_requires() {
        let list = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#;
        let v: Value = serde_json::from_slice(&answer(list, "tools/list").unwrap()).unwrap();
        assert_eq!(
            v["result"],
            json!({"tools": [], "resultType": "complete", "ttlMs": 0, "cacheScope": "private"})
        );
        let call = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#;
        let v: Value = serde_json::from_slice(&answer(call, "tools/call").unwrap()).unwrap();
        assert_eq!(
            v["result"],
            json!({"content": [], "resultType": "complete"})
        );
        let done = br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"complete"}}"#;
        assert_eq!(answer(done, "ping"), None);
        assert_eq!(
            answer(br#"{"jsonrpc":"2.0","id":1,"error":{}}"#, "ping"),
            None
        );
        assert_eq!(answer(b"nope", "ping"), None);
    }

    #[test]
    fn streams_are_rewritten_event_by_event() {
        let progress = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\r\n\r\n";
        let result = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n";
        let stream = format!("{progress}{result}");
        // Whatever the pieces, the progress event goes as it came, once whole.
        for cut in 0..stream.len() {
            let mut sse = Sse::new("tools/call", 1 << 20);
            let mut out = sse.feed(&stream.as_bytes()[..cut]).to_vec();
            out.extend_from_slice(&sse.feed(&stream.as_bytes()[cut..]));
            out.extend_from_slice(&sse.finish());
            let text = String::from_utf8(out).unwrap();
            assert!(text.starts_with(progress), "cut at {cut}: {text}");
            let data = crate::mcp::federation::sse_data(&text[progress.len()..]);
            let v: Value = serde_json::from_str(&data[0]).unwrap();
            assert_eq!(v["result"]["resultType"], "complete", "cut at {cut}");
        }
        let mut sse = Sse::new("tools/call", 1 << 20);
        assert_eq!(sse.feed(&progress.as_bytes()[..20]), Bytes::new());
        assert_eq!(sse.finish(), Bytes::from(&progress[..20]));
    }
}
