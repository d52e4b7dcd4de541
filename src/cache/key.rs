//! Cache keys. Pingora hashes only the key's primary bytes, so every part is length-prefixed:
//! without that, `/a` + `bc` and `/ab` + `c` would be one key.

use http::HeaderName;
use pingora::cache::CacheKey;
use serde_json::Value;

/// A `cache_key` entry: `request_body.<field>` or `request_headers.<name>`.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyPart {
    /// A JSON pointer into the request body (`request_body.a.b` is `/a/b`).
    Body(String),
    Header(HeaderName),
}

impl KeyPart {
    pub fn parse(s: &str) -> Result<KeyPart, String> {
        if let Some(field) = s.strip_prefix("request_body.") {
            return crate::text::json_pointer(field)
                .map(KeyPart::Body)
                .map_err(|e| format!("{s:?} {e}"));
        }
        if let Some(name) = s.strip_prefix("request_headers.") {
            return HeaderName::from_bytes(name.trim().as_bytes())
                .map(KeyPart::Header)
                .map_err(|_| format!("{s:?}: {name:?} is not a header name"));
        }
        Err(format!(
            "{s:?} must start with request_body. (a JSON field) or request_headers. (a header)"
        ))
    }
}

/// A key's primary bytes, part by part.
#[derive(Default)]
pub struct Primary(Vec<u8>);

/// Stands for a part the request does not have (a header or body field), distinct from any
/// value: a real part's length prefix is at most 2³² − 2.
const ABSENT: u32 = u32::MAX;

impl Primary {
    pub fn part(&mut self, b: &[u8]) -> &mut Self {
        let len = u32::try_from(b.len()).unwrap_or(ABSENT - 1);
        self.0.extend_from_slice(&len.to_be_bytes());
        self.0.extend_from_slice(&b[..len as usize]);
        self
    }

    pub fn absent(&mut self) -> &mut Self {
        self.0.extend_from_slice(&ABSENT.to_be_bytes());
        self
    }

    pub fn opt(&mut self, b: Option<&[u8]>) -> &mut Self {
        match b {
            Some(b) => self.part(b),
            None => self.absent(),
        }
    }

    pub fn into_key(self, user_tag: &str) -> CacheKey {
        CacheKey::new(self.0, user_tag)
    }
}

/// The query with its `&`-separated pairs sorted: `?b=2&a=1` and `?a=1&b=2` are one key.
pub fn sorted_query(query: Option<&str>) -> String {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    pairs.join("&")
}

/// What of a request body goes into its key: the fields `parts` name, or the whole body when
/// they name none (or the body is not JSON).
pub fn body_part(body: &[u8], parts: &[KeyPart]) -> Vec<u8> {
    let pointers: Vec<&str> = parts
        .iter()
        .filter_map(|p| match p {
            KeyPart::Body(ptr) => Some(ptr.as_str()),
            KeyPart::Header(_) => None,
        })
        .collect();
    let mut out = Primary::default();
    if pointers.is_empty() {
        out.part(b"body").part(body);
        return out.0;
    }
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        out.part(b"raw body").part(body);
        return out.0;
    };
    out.part(b"fields");
    for ptr in pointers {
        match json.pointer(ptr) {
            Some(v) => out.part(&serde_json::to_vec(v).unwrap_or_default()),
            None => out.absent(),
        };
    }
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::cache::key::CacheHashKey;

    #[test]
    fn parts_parse() {
        assert_eq!(
            KeyPart::parse("request_body.query").unwrap(),
            KeyPart::Body("/query".into())
        );
        assert_eq!(
            KeyPart::parse("request_body.messages.0.content").unwrap(),
            KeyPart::Body("/messages/0/content".into())
        );
        assert_eq!(
            KeyPart::parse("request_body./a~1b").unwrap(),
            KeyPart::Body("/a~1b".into())
        );
        assert_eq!(
            KeyPart::parse("request_headers.X-Agent-ID").unwrap(),
            KeyPart::Header(HeaderName::from_static("x-agent-id"))
        );
        for bad in [
            "query",
            "request_body.",
            "request_body.a..b",
            "request_headers.a b",
        ] {
            assert!(KeyPart::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parts_are_length_prefixed() {
        let key = |a: &str, b: &str| {
            let mut p = Primary::default();
            p.part(a.as_bytes()).part(b.as_bytes());
            p.into_key("").combined()
        };
        assert_ne!(key("/a", "bc"), key("/ab", "c"));
        assert_eq!(key("/a", "bc"), key("/a", "bc"));
        let mut absent = Primary::default();
        absent.absent();
        let mut empty = Primary::default();
        empty.part(b"");
        assert_ne!(
            absent.into_key("").combined(),
            empty.into_key("").combined()
        );
    }

    #[test]
    fn body_fields_only_count_when_named() {
        let q = [KeyPart::Body("/query".into())];
        let a = body_part(br#"{"query":"x","temperature":1}"#, &q);
        let b = body_part(br#"{"temperature":0,"query":"x"}"#, &q);
        let c = body_part(br#"{"query":"y"}"#, &q);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(body_part(br#"{}"#, &q), body_part(br#"{"query":null}"#, &q));
        let whole = body_part(br#"{"query":"x","temperature":1}"#, &[]);
        assert_ne!(whole, body_part(br#"{"query":"x","temperature":0}"#, &[]));
        assert_ne!(body_part(b"not json", &q), body_part(b"not json!", &q));
    }

    #[test]
    fn queries_sort() {
        assert_eq!(sorted_query(Some("b=2&a=1")), "a=1&b=2");
        assert_eq!(sorted_query(Some("")), "");
        assert_eq!(sorted_query(None), "");
    }
}
