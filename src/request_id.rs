//! Request ids: the client's `X-Request-ID` when it is safe to echo, else a fresh UUID.
//! Kept as a `HeaderValue` so that echoing it to the backend and the client copies nothing.

use http::HeaderValue;
use uuid::Uuid;

pub fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

pub fn from_client_or_new(client: Option<&HeaderValue>) -> HeaderValue {
    match client {
        Some(id) if is_acceptable(id.as_bytes()) => id.clone(),
        _ => new(),
    }
}

/// A new id: a UUID v7, time-ordered, so that ids sort by arrival in logs.
pub fn new() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = Uuid::now_v7().as_hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("unknown"))
}

/// The id as text (acceptable ids and UUIDs are ASCII).
pub fn as_str(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &[u8]) -> HeaderValue {
        HeaderValue::from_bytes(s).unwrap()
    }

    #[test]
    fn client_ids() {
        assert_eq!(from_client_or_new(Some(&id(b"abc-1.2_3:4"))), "abc-1.2_3:4");
        assert_eq!(from_client_or_new(Some(&id(b"bad id"))).len(), 36);
        assert_eq!(from_client_or_new(Some(&id(&[b'a'; 129]))).len(), 36);
        assert_eq!(from_client_or_new(Some(&id(&[b'a'; 128]))).len(), 128);
        assert_eq!(from_client_or_new(None).len(), 36);
        assert_ne!(new(), new());
        assert_eq!(as_str(&new()).len(), 36);
    }
}
