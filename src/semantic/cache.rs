//! What a semantic route holds at run time: its settings and its index of answers, kept across
//! reloads that leave the route's caching as it was (see `reload::keep_semantic`).

use super::index::{Index, Partition, DEFAULT_PARTITION_CAP};
use super::settings::Settings;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Locks the mirror positions are spread over (as the index's partitions).
const SHARDS: usize = 16;
/// Positions one shard remembers; past that it starts afresh (a partition then reads its
/// stream from the start again: entries already held are replaced, not doubled).
const POSITIONS_PER_SHARD: usize = 4096;

/// One route's semantic cache.
pub struct RouteCache {
    pub settings: Settings,
    pub index: Index<Arc<Answer>>,
    /// With a Redis store: per partition, the last stream entry the index holds.
    positions: Box<[Mutex<HashMap<Partition, String>>]>,
}

impl RouteCache {
    pub fn new(settings: Settings) -> RouteCache {
        let index = Index::new(settings.max_entries, DEFAULT_PARTITION_CAP);
        RouteCache {
            settings,
            index,
            positions: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    fn positions(&self, p: &Partition) -> std::sync::MutexGuard<'_, HashMap<Partition, String>> {
        let shard = &self.positions[usize::from(p[0]) % SHARDS];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How far the mirror of `p` has read its Redis stream.
    pub fn position(&self, p: &Partition) -> Option<String> {
        self.positions(p).get(p).cloned()
    }

    /// Forgets every answer of the route, and how far the mirror had read (a purge).
    pub fn clear(&self) {
        self.index.clear();
        for shard in self.positions.iter() {
            shard.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    pub fn set_position(&self, p: &Partition, id: String) {
        let mut map = self.positions(p);
        if map.len() >= POSITIONS_PER_SHARD && !map.contains_key(p) {
            map.clear();
        }
        map.insert(*p, id);
    }
}

impl std::fmt::Debug for RouteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RouteCache({:?}, {} entries)",
            self.settings,
            self.index.len()
        )
    }
}

/// A stored answer: what the backend said, as the next client will be told it. A streamed answer
/// is its whole SSE transcript (`text/event-stream`), written again at once.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// The answer behind the `Arc`: its fields, headers and body.
impl super::index::Weigh for Arc<Answer> {
    fn heap_bytes(&self) -> usize {
        let headers: usize = (self.headers.iter())
            .map(|(n, v)| {
                std::mem::size_of::<(HeaderName, HeaderValue)>() + n.as_str().len() + v.len()
            })
            .sum();
        std::mem::size_of::<Answer>() + headers + self.body.len()
    }
}

impl Answer {
    /// What the answer says, to compare two answers (shadow mode): the message text of an
    /// OpenAI or Anthropic answer, streamed (SSE) or not, else the body as text.
    pub fn text(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
            if let Some(t) = message_text(&v) {
                return t;
            }
        }
        let mut streamed = String::new();
        for line in body.lines() {
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim()) {
                streamed.push_str(&delta_text(&v));
            }
        }
        if streamed.is_empty() {
            body.into_owned()
        } else {
            streamed
        }
    }
}

/// `choices[0].message.content` (OpenAI chat), `choices[0].text` (completions) or the text parts
/// of `content` (Anthropic).
fn message_text(v: &serde_json::Value) -> Option<String> {
    let choice = &v["choices"][0];
    if let Some(t) = (choice["message"]["content"].as_str()).or(choice["text"].as_str()) {
        return Some(t.to_string());
    }
    let parts = v["content"].as_array()?;
    Some(parts.iter().filter_map(|p| p["text"].as_str()).collect())
}

/// The text a stream event adds: OpenAI's `choices[0].delta.content`, Anthropic's
/// `delta.text`.
fn delta_text(v: &serde_json::Value) -> String {
    let t = (v["choices"][0]["delta"]["content"].as_str()).or(v["delta"]["text"].as_str());
    t.unwrap_or_default().to_string()
}

/// Headers that belong to one exchange, not to the answer: framing and connection handling,
/// per-request identifiers and limits, and what the gateway sets on every response itself.
pub fn kept_header(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "content-length"
            | "date"
            | "age"
            | "set-cookie"
            | "x-request-id"
            | "x-cache"
            | "x-cache-similarity"
            | "traceparent"
            | "tracestate"
            | "proxy-connection"
            | "trailer"
            | "upgrade"
    ) && !name.as_str().starts_with("x-ratelimit")
        && !name.as_str().starts_with("ratelimit")
}

/// Whether a response may be stored at all: a complete 200 whose backend did not forbid it
/// (`no-store`, `private`) and that sets no cookie (another client must not receive it).
pub fn storable(status: u16, headers: &http::HeaderMap) -> bool {
    if status != 200 || headers.contains_key(http::header::SET_COOKIE) {
        return false;
    }
    let forbids = |v: &HeaderValue| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|d| {
                let d = d.trim();
                d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("private")
            })
        })
    };
    !headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .any(forbids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_public_answers_are_stored() {
        let mut h = http::HeaderMap::new();
        assert!(storable(200, &h));
        assert!(!storable(500, &h));
        assert!(!storable(206, &h));
        h.insert(
            "cache-control",
            HeaderValue::from_static("max-age=60, Private"),
        );
        assert!(!storable(200, &h));
        h.insert("cache-control", HeaderValue::from_static("no-store"));
        assert!(!storable(200, &h));
        h.insert("cache-control", HeaderValue::from_static("max-age=60"));
        assert!(storable(200, &h));
        h.insert("set-cookie", HeaderValue::from_static("a=b"));
        assert!(!storable(200, &h));
    }

    #[test]
    fn answers_are_compared_by_their_message_text() {
        let answer = |body: &str| Answer {
            status: 200,
            headers: vec![],
            body: Bytes::from(body.to_string()),
        };
        let chat = r#"{"id":"1","choices":[{"message":{"content":"Paris."}}]}"#;
        assert_eq!(answer(chat).text(), "Paris.");
        let anthropic =
            r#"{"content":[{"type":"text","text":"Par"},{"type":"text","text":"is."}]}"#;
        assert_eq!(answer(anthropic).text(), "Paris.");
        let sse = "data: {\"choices\":[{\"delta\":{\"content\":\"Par\"}}]}\n\n\
                   data: {\"choices\":[{\"delta\":{\"content\":\"is.\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(answer(sse).text(), "Paris.");
        assert_eq!(answer("plain").text(), "plain");
    }

    #[test]
    fn exchange_headers_are_not_kept() {
        for n in [
            "content-length",
            "x-request-id",
            "x-ratelimit-remaining",
            "date",
        ] {
            assert!(!kept_header(&HeaderName::from_static(n)), "{n}");
        }
        for n in ["content-type", "openai-model", "x-backend"] {
            assert!(kept_header(&HeaderName::from_static(n)), "{n}");
        }
    }
}
