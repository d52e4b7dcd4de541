//! One request's access-log line and its JSON form.

use super::timestamp;
use crate::text::{push_ip, push_ms, push_num, push_str};
use std::time::{Duration, SystemTime};

/// LLM token usage, as the line shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tokens<'a> {
    pub prompt: u64,
    pub completion: u64,
    pub model: Option<&'a str>,
}

impl<'a> From<&'a crate::observe::usage::Usage> for Tokens<'a> {
    fn from(u: &'a crate::observe::usage::Usage) -> Tokens<'a> {
        Tokens {
            prompt: u.prompt,
            completion: u.completion,
            model: u.model.as_deref(),
        }
    }
}

/// `HTTP/1.1`, `HTTP/2.0`.
fn protocol(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// One request's line.
pub struct Entry<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client_ip: Option<std::net::IpAddr>,
    pub agent_id: Option<&'a str>,
    pub route: &'a str,
    pub method: &'a str,
    pub version: http::Version,
    /// Without the query string.
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub upstream: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub upstream_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `"passed"` (with the tightest limit's remaining count) or `"refused"`.
    pub limit: Option<(&'a str, Option<u64>)>,
    pub error: Option<&'a str>,
    pub tokens: Option<Tokens<'a>>,
    /// An LLM answer from the backend: milliseconds from the request's arrival to its first
    /// generated text.
    pub ttft_ms: Option<f64>,
    /// `X-Cache` on caching routes.
    pub cache: Option<&'a str>,
    /// A semantic hit: how similar the question was, and the request whose answer was served.
    pub cache_similarity: Option<f32>,
    pub cache_source_request_id: Option<&'a str>,
    /// On MCP routes: the method, the tool called, and a digest of the session id.
    pub mcp_method: Option<&'a str>,
    pub mcp_tool: Option<&'a str>,
    pub mcp_session: Option<&'a str>,
}

/// A string that never needs escaping, quoted: request ids (generated, or a client's checked to
/// `[A-Za-z0-9._:-]`), methods (HTTP tokens) and `ip:port` addresses. The escaping check of
/// `push_str` is a pass over every byte; these are written without it.
fn push_plain(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// `"2026-11-27T00:33:19.296Z"`; the part up to the seconds is made once per second per thread.
fn push_time(out: &mut Vec<u8>, t: SystemTime) {
    use std::cell::Cell;
    thread_local! {
        static CACHE: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (at, mut text) = CACHE.get();
    if at != secs {
        let full = timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        if let Some(head) = full.as_bytes().get(..19) {
            text.copy_from_slice(head);
            CACHE.set((secs, text));
        }
    }
    out.push(b'"');
    out.extend_from_slice(&text);
    let ms = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
        b'"',
    ]);
}

impl Entry<'_> {
    /// Appends the line (with its newline) to `o`. Fields that do not apply to the request (no
    /// agent, no upstream call, no cache, no tokens, no limit, no error) are left out rather
    /// than written as `null`: a sixth shorter line, less to write and to keep in the caches.
    pub fn write_to(&self, o: &mut Vec<u8>) {
        o.reserve(512);
        o.extend_from_slice(b"{\"time\":");
        push_time(o, self.time);
        o.extend_from_slice(b",\"type\":\"access\",\"request_id\":");
        push_plain(o, self.request_id);
        if let Some(ip) = self.client_ip {
            o.extend_from_slice(b",\"client_ip\":\"");
            push_ip(o, ip);
            o.push(b'"');
        }
        if let Some(agent) = self.agent_id {
            o.extend_from_slice(b",\"agent_id\":");
            push_str(o, agent);
        }
        o.extend_from_slice(b",\"route\":");
        push_str(o, self.route);
        o.extend_from_slice(b",\"method\":");
        push_plain(o, self.method);
        o.extend_from_slice(b",\"protocol\":\"");
        o.extend_from_slice(protocol(self.version).as_bytes());
        o.push(b'"');
        o.extend_from_slice(b",\"path\":");
        push_str(o, self.path);
        o.extend_from_slice(b",\"status\":");
        push_num(o, self.status);
        o.extend_from_slice(b",\"duration_ms\":");
        push_ms(o, self.duration_ms);
        if let Some(upstream) = self.upstream {
            o.extend_from_slice(b",\"upstream\":");
            push_plain(o, upstream);
        }
        if let Some(s) = self.upstream_status {
            o.extend_from_slice(b",\"upstream_status\":");
            push_num(o, s);
        }
        if let Some(ms) = self.upstream_ms {
            o.extend_from_slice(b",\"upstream_ms\":");
            push_ms(o, ms);
        }
        o.extend_from_slice(b",\"bytes_in\":");
        push_num(o, self.bytes_in);
        o.extend_from_slice(b",\"bytes_out\":");
        push_num(o, self.bytes_out);
        self.write_cache(o);
        self.write_mcp(o);
        self.write_llm(o);
        if let Some((outcome, remaining)) = self.limit {
            o.extend_from_slice(b",\"limit\":{\"outcome\":");
            push_str(o, outcome);
            if let Some(r) = remaining {
                o.extend_from_slice(b",\"remaining\":");
                push_num(o, r);
            }
            o.push(b'}');
        }
        if let Some(e) = self.error {
            o.extend_from_slice(b",\"error\":");
            push_str(o, e);
        }
        o.extend_from_slice(b"}\n");
    }

    /// On MCP routes: the method, the tool called and the session's digest.
    fn write_mcp(&self, o: &mut Vec<u8>) {
        for (name, value) in [
            (&b",\"mcp_method\":"[..], self.mcp_method),
            (b",\"mcp_tool\":", self.mcp_tool),
            (b",\"mcp_session\":", self.mcp_session),
        ] {
            if let Some(v) = value {
                o.extend_from_slice(name);
                push_str(o, v);
            }
        }
    }

    /// An LLM answer's time to first token and token usage.
    fn write_llm(&self, o: &mut Vec<u8>) {
        if let Some(ms) = self.ttft_ms {
            o.extend_from_slice(b",\"ttft_ms\":");
            push_ms(o, ms);
        }
        if let Some(u) = &self.tokens {
            o.extend_from_slice(b",\"tokens\":{\"prompt\":");
            push_num(o, u.prompt);
            o.extend_from_slice(b",\"completion\":");
            push_num(o, u.completion);
            o.extend_from_slice(b",\"total\":");
            push_num(o, u.prompt.saturating_add(u.completion));
            if let Some(model) = u.model {
                o.extend_from_slice(b",\"model\":");
                push_str(o, model);
            }
            o.push(b'}');
        }
    }

    /// `cache`, and on a semantic hit the similarity and the request whose answer was served.
    fn write_cache(&self, o: &mut Vec<u8>) {
        if let Some(cache) = self.cache {
            o.extend_from_slice(b",\"cache\":");
            push_str(o, cache);
        }
        if let Some(sim) = self.cache_similarity {
            o.extend_from_slice(format!(",\"cache_similarity\":{sim:.4}").as_bytes());
        }
        if let Some(id) = self.cache_source_request_id {
            o.extend_from_slice(b",\"cache_source_request_id\":");
            push_str(o, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_the_fields() {
        let e = Entry {
            time: SystemTime::UNIX_EPOCH,
            request_id: "r1",
            client_ip: Some("10.0.0.1".parse().unwrap()),
            agent_id: Some("bot"),
            route: "llm",
            method: "POST",
            version: http::Version::HTTP_11,
            path: "/api/v1/llm/chat",
            status: 200,
            duration_ms: 1.23456,
            upstream: Some("127.0.0.1:3000"),
            upstream_status: Some(200),
            upstream_ms: Some(1.0),
            bytes_in: 10,
            bytes_out: 20,
            limit: Some(("passed", Some(9))),
            error: None,
            tokens: None,
            ttft_ms: None,
            cache: Some("HIT-SEMANTIC"),
            cache_similarity: Some(0.94123),
            cache_source_request_id: Some("req-1"),
            mcp_method: Some("tools/call"),
            mcp_tool: Some("search_web"),
            mcp_session: Some("0123456789ab"),
        };
        let mut line = Vec::new();
        e.write_to(&mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["type"], "access");
        assert_eq!(v["duration_ms"], 1.235);
        assert_eq!(v["limit"]["remaining"], 9);
        assert_eq!(v["client_ip"], "10.0.0.1");
        assert!(
            v.get("tokens").is_none(),
            "fields that do not apply are left out"
        );
        assert_eq!(v["cache"], "HIT-SEMANTIC");
        assert_eq!(v["cache_similarity"], 0.9412);
        assert_eq!(v["cache_source_request_id"], "req-1");
        assert_eq!(v["mcp_tool"], "search_web");
        assert_eq!(v["mcp_session"], "0123456789ab");
    }

    #[test]
    fn extreme_values_still_make_json() {
        let usage = crate::observe::usage::Usage {
            prompt: u64::MAX,
            completion: u64::MAX,
            model: Some("\u{1}".repeat(64)),
        };
        let nasty = "\u{1f}".repeat(300);
        let e = Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799),
            // Request ids, methods and addresses are never escaped (see `push_plain`).
            request_id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            client_ip: Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()),
            agent_id: Some(&nasty),
            route: &nasty,
            method: "M-SEARCH",
            version: http::Version::HTTP_2,
            path: &nasty,
            status: u16::MAX,
            duration_ms: 1e300,
            upstream: Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
            upstream_status: Some(u16::MAX),
            upstream_ms: Some(f64::MAX),
            bytes_in: u64::MAX,
            bytes_out: u64::MAX,
            limit: Some((&nasty, Some(u64::MAX))),
            error: Some(&nasty),
            tokens: Some((&usage).into()),
            ttft_ms: Some(250.0),
            cache: None,
            cache_similarity: None,
            cache_source_request_id: None,
            mcp_method: None,
            mcp_tool: None,
            mcp_session: None,
        };
        let mut line = b"before".to_vec();
        e.write_to(&mut line);
        let v: serde_json::Value = serde_json::from_slice(&line[6..]).unwrap();
        assert_eq!(v["path"].as_str(), Some(nasty.as_str()));
        assert_eq!(v["bytes_out"], u64::MAX);
        assert_eq!(v["ttft_ms"], 250.0);
    }
}
