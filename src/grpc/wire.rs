//! gRPC on the wire: length-prefixed messages, `grpc-timeout`, and status codes with their
//! HTTP counterparts.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::time::Duration;

/// A message with its 5-byte prefix (uncompressed).
pub fn frame(message: &[u8]) -> Result<Bytes, String> {
    let len = u32::try_from(message.len()).map_err(|_| "the message is too large".to_string())?;
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(len);
    out.put_slice(message);
    Ok(out.freeze())
}

/// Messages cut out of a body that arrives in pieces.
#[derive(Default)]
pub struct Deframer {
    buf: BytesMut,
}

impl Deframer {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole message, if one is here; an error for a compressed one or one over `max`.
    pub fn next(&mut self, max: usize) -> Result<Option<Bytes>, String> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let compressed = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let len = len as usize;
        if compressed != 0 {
            return Err("the backend sent a compressed message".into());
        }
        if len > max {
            return Err(format!("the backend sent a message over {max} bytes"));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some(self.buf.split_to(len).freeze()))
    }

    /// Bytes left that are not a whole message.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// `grpc-timeout`: at most 8 digits and a unit.
pub fn timeout_header(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms < 100_000_000 {
        format!("{ms}m")
    } else {
        format!("{}S", d.as_secs().min(99_999_999))
    }
}

/// The lower-case names of the status codes, by number.
const NAMES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

pub const CANCELLED: u32 = 1;
pub const UNKNOWN: u32 = 2;
pub const INVALID_ARGUMENT: u32 = 3;
pub const DEADLINE_EXCEEDED: u32 = 4;
pub const NOT_FOUND: u32 = 5;
pub const INTERNAL: u32 = 13;
pub const UNAVAILABLE: u32 = 14;

pub fn name(code: u32) -> &'static str {
    NAMES.get(code as usize).copied().unwrap_or("unknown")
}

/// The HTTP status a gRPC status is answered with (DESIGN §5.4: the codes Envoy maps that
/// agents act on; every other one is a 500).
pub fn http_status(code: u32) -> u16 {
    match code {
        0 => 200,
        3 => 400,
        4 => 504,
        5 => 404,
        7 => 403,
        8 => 429,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2, "Status-Message").
pub fn message(raw: &str) -> String {
    super::template::percent_decode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_out_of_pieces() {
        let mut d = Deframer::default();
        let a = frame(b"hello").expect("frame");
        let b = frame(b"").expect("frame");
        let all = [&a[..], &b[..]].concat();
        d.push(&all[..3]);
        assert_eq!(d.next(100), Ok(None));
        d.push(&all[3..]);
        assert_eq!(d.next(100), Ok(Some(Bytes::from_static(b"hello"))));
        assert_eq!(d.next(100), Ok(Some(Bytes::new())));
        assert_eq!(d.next(100), Ok(None));
        assert!(d.is_empty());
        d.push(&frame(b"too long").expect("frame"));
        assert!(d.next(3).is_err());
    }

    #[test]
    fn statuses_map_as_envoy_does() {
        assert_eq!((http_status(5), name(5)), (404, "not_found"));
        assert_eq!((http_status(3), name(3)), (400, "invalid_argument"));
        assert_eq!((http_status(14), name(14)), (503, "unavailable"));
        assert_eq!((http_status(4), name(4)), (504, "deadline_exceeded"));
        assert_eq!((http_status(16), name(16)), (401, "unauthenticated"));
        assert_eq!((http_status(7), name(7)), (403, "permission_denied"));
        assert_eq!((http_status(8), name(8)), (429, "resource_exhausted"));
        assert_eq!(http_status(13), 500);
        assert_eq!(timeout_header(Duration::from_millis(1500)), "1500m");
        assert_eq!(message("no%20such%20item"), "no such item");
    }
}
