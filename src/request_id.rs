//! Request ids: the client's `X-Request-ID` when it is safe to echo, else a fresh UUID.

use uuid::Uuid;

pub fn is_acceptable(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

pub fn from_client_or_new(client: Option<&[u8]>) -> String {
    match client {
        // Acceptable ids are ASCII, so the conversion cannot fail.
        Some(id) if is_acceptable(id) => String::from_utf8_lossy(id).into_owned(),
        _ => new(),
    }
}

pub fn new() -> String {
    Uuid::new_v4().as_hyphenated().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids() {
        assert_eq!(from_client_or_new(Some(b"abc-1.2_3:4")), "abc-1.2_3:4");
        assert_eq!(from_client_or_new(Some(b"bad id")).len(), 36);
        assert_eq!(from_client_or_new(Some(&[b'a'; 129])).len(), 36);
        assert_eq!(from_client_or_new(Some(b"")).len(), 36);
        assert_ne!(new(), new());
    }
}
