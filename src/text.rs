//! Text helpers shared by every layer: JSON strings, numbers, addresses and hex written by hand on
//! the request path (`core::fmt`, floats and IPv4 addresses above all, was a visible share of a
//! request's CPU time), file errors as a user reads them, and body field names as JSON pointers.

use std::net::IpAddr;

/// Appends a JSON string (escaped). Most strings need no escaping: they are checked with a
/// branch-free pass (vectorised) and copied whole.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let plain = !bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
    } else {
        for &b in bytes {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0..=0x1f => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(b >> 4) as usize]);
                    out.push(HEX[(b & 15) as usize]);
                }
                _ => out.push(b),
            }
        }
    }
    out.push(b'"');
}

/// A decimal integer.
pub fn push_num(out: &mut Vec<u8>, n: impl Into<u64>) {
    let mut n: u64 = n.into();
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Milliseconds with three decimals.
pub fn push_ms(out: &mut Vec<u8>, ms: f64) {
    let micros = (ms * 1000.0).round().max(0.0) as u64;
    push_num(out, micros / 1000);
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// An address as text; IPv4 by hand, since `Display` costs ~2,000
/// instructions (measured).
pub fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut text = [0u8; 39];
            let mut w = &mut text[..];
            let _ = write!(w, "{v6}");
            let left = w.len();
            out.extend_from_slice(&text[..text.len() - left]);
        }
    }
}

/// Two hex digits for each byte value.
static PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    t
};

/// Lowercase hex, two digits per byte from one table lookup.
pub fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.extend_from_slice(&PAIRS[usize::from(b)]);
    }
}

/// Lowercase hex into `out`, which holds two bytes per byte of `bytes`.
pub fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
    }
}

/// A file error as a user reads it: "no such file" rather than "No such file or directory (os
/// error 2)".
pub fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

/// `model` or `a.b` (dotted) or `/a/b` (a JSON pointer) as a JSON pointer.
pub fn json_pointer(field: &str) -> Result<String, String> {
    if field.is_empty() {
        return Err("names no body field".into());
    }
    if field.starts_with('/') {
        return Ok(field.to_string());
    }
    // RFC 6901 escapes `~` and `/` in a segment.
    let mut pointer = String::with_capacity(field.len() + 1);
    for seg in field.split('.') {
        if seg.is_empty() {
            return Err(format!("{field:?} has an empty field name"));
        }
        pointer.push('/');
        pointer.push_str(&seg.replace('~', "~0").replace('/', "~1"));
    }
    Ok(pointer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers() {
        assert_eq!(json_pointer("model").unwrap(), "/model");
        assert_eq!(json_pointer("a.b/c").unwrap(), "/a/b~1c");
        assert_eq!(json_pointer("/x/0").unwrap(), "/x/0");
        assert!(json_pointer("a..b").is_err());
    }

    #[test]
    fn numbers_by_hand() {
        let mut o = Vec::new();
        push_num(&mut o, 0u64);
        o.push(b' ');
        push_num(&mut o, u64::MAX);
        o.push(b' ');
        push_ms(&mut o, 1.2345);
        o.push(b' ');
        push_ms(&mut o, 1500.0);
        o.push(b' ');
        push_ms(&mut o, 0.0004);
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "0 18446744073709551615 1.235 1500.000 0.000"
        );
    }

    #[test]
    fn strings_are_escaped() {
        let mut o = Vec::new();
        push_str(&mut o, "a\"b\\c\u{1}d/é");
        let back: String = serde_json::from_slice(&o).unwrap();
        assert_eq!(back, "a\"b\\c\u{1}d/é");
    }

    #[test]
    fn addresses_as_text() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.255.9",
            "203.0.113.100",
            "::1",
            "2001:db8::7",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let mut out = Vec::new();
            push_ip(&mut out, ip.parse().unwrap());
            assert_eq!(out, ip.as_bytes());
        }
    }

    #[test]
    fn hex() {
        let mut o = b"x".to_vec();
        push_hex(&mut o, &[0x00, 0xab, 0x7f, 0xff]);
        assert_eq!(o, b"x00ab7fff");
        let mut fixed = [0u8; 4];
        hex_into(&mut fixed, &[0x0f, 0xa0]);
        assert_eq!(&fixed, b"0fa0");
    }
}
