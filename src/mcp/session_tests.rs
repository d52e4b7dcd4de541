use super::*;

const BIND: &str = "/mcp\0agent-7";

fn leg(server: &str, addr: &str, session: Option<&str>) -> Leg {
    Leg {
        server: server.into(),
        addr: addr.into(),
        session: session.map(Into::into),
    }
}

fn one() -> Session {
    Session {
        servers: vec![leg(
            "github",
            "10.0.0.12:8080",
            Some("6f1c2a9e-3b7d-4c1a-9e2f-0d8b7a6c5e4f"),
        )],
    }
}

fn three() -> Session {
    Session {
        servers: vec![
            leg(
                "github",
                "10.0.0.12:8080",
                Some("6f1c2a9e-3b7d-4c1a-9e2f-0d8b7a6c5e4f"),
            ),
            leg("search", "10.0.0.31:7001", None),
            leg("files", "[fd00::7]:9000", Some("s-42")),
        ],
    }
}

fn sealer() -> Sealer {
    Sealer::new([7; 32])
}

#[test]
fn round_trip() {
    let s = sealer();
    for session in [Session::default(), one(), three()] {
        let token = s.seal(&session, BIND).unwrap();
        assert_eq!(s.open(&token, BIND), Some(session));
    }
}

#[test]
fn the_largest_session_allowed_round_trips() {
    let s = sealer();
    let big = Session {
        servers: vec![leg(
            &"n".repeat(255),
            &"a".repeat(255),
            Some(&"~".repeat(1024)),
        )],
    };
    let token = s.seal(&big, BIND).unwrap();
    assert!(token.len() <= MAX_TOKEN);
    assert_eq!(s.open(&token, BIND), Some(big));
}

#[test]
fn token_sizes() {
    // For the report and to notice a format change that grows them.
    let s = sealer();
    assert_eq!(s.seal(&one(), BIND).unwrap().len(), 120);
    assert_eq!(s.seal(&three(), BIND).unwrap().len(), 188);
}

#[test]
fn another_key_or_binding_fails() {
    let token = sealer().seal(&one(), BIND).unwrap();
    assert_eq!(Sealer::new([8; 32]).open(&token, BIND), None);
    assert_eq!(sealer().open(&token, "/mcp\0agent-8"), None);
    assert_eq!(sealer().open(&token, "/other\0agent-7"), None);
    assert_eq!(sealer().open(&token, ""), None);
}

#[test]
fn every_single_bit_flip_fails() {
    let s = sealer();
    let token = s.seal(&three(), BIND).unwrap();
    let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    for i in 0..raw.len() * 8 {
        let mut bad = raw.clone();
        bad[i / 8] ^= 1 << (i % 8);
        assert_eq!(s.open(&URL_SAFE_NO_PAD.encode(&bad), BIND), None, "bit {i}");
    }
    // And in the text: a flip that stays in the alphabet changes the bytes or leaves
    // non-zero trailing bits, which the decoder refuses.
    for i in 0..token.len() * 8 {
        let mut bad = token.clone().into_bytes();
        bad[i / 8] ^= 1 << (i % 8);
        if let Ok(bad) = String::from_utf8(bad) {
            assert_eq!(s.open(&bad, BIND), None, "text bit {i}");
        }
    }
}

#[test]
fn truncation_at_every_length_fails() {
    let s = sealer();
    let token = s.seal(&one(), BIND).unwrap();
    for n in 0..token.len() {
        assert_eq!(s.open(&token[..n], BIND), None, "{n}");
    }
    let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    for n in 0..raw.len() {
        assert_eq!(
            s.open(&URL_SAFE_NO_PAD.encode(&raw[..n]), BIND),
            None,
            "{n}"
        );
    }
}

#[test]
fn garbage_and_oversize_fail() {
    let s = sealer();
    let token = s.seal(&one(), BIND).unwrap();
    for bad in [
        "",
        "x",
        "====",
        "not a token",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "6f1c2a9e-3b7d-4c1a-9e2f-0d8b7a6c5e4f",
        &format!("{token}="),
        &format!("{token}A"),
        &format!(" {token}"),
        // The standard alphabet's '+' where the URL-safe one has a letter: always a change.
        &format!("+{}", &token[1..]),
        &"A".repeat(MAX_TOKEN + 4),
    ] {
        assert_eq!(s.open(bad, BIND), None, "{bad:?}");
    }
}

#[test]
fn another_version_fails() {
    // Re-sealed honestly under version 2: authentic, still refused.
    let s = sealer();
    let token = s.seal(&one(), BIND).unwrap();
    let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
    raw[0] = 2;
    assert_eq!(s.open(&URL_SAFE_NO_PAD.encode(&raw), BIND), None);
}

#[test]
fn tokens_are_visible_ascii_and_differ() {
    let s = sealer();
    let a = s.seal(&three(), BIND).unwrap();
    let b = s.seal(&three(), BIND).unwrap();
    assert!(a.bytes().all(|c| (0x21..=0x7e).contains(&c)), "{a}");
    assert!(a
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    assert_ne!(a, b, "a random nonce per token");
    assert_eq!(s.open(&a, BIND), s.open(&b, BIND));
}

#[test]
fn jwt_secret_derived_keys_agree_per_secret() {
    let a = Sealer::from_jwt_secret(b"the jwt secret");
    let b = Sealer::from_jwt_secret(b"the jwt secret");
    let c = Sealer::from_jwt_secret(b"another secret");
    let token = a.seal(&one(), BIND).unwrap();
    assert_eq!(b.open(&token, BIND), Some(one()));
    assert_eq!(c.open(&token, BIND), None);
    // The secret itself is not the key.
    let mut raw = [0u8; 32];
    raw[..14].copy_from_slice(b"the jwt secret");
    assert_eq!(Sealer::new(raw).open(&token, BIND), None);
}

#[test]
fn hkdf_is_rfc_5869() {
    // RFC 5869 test case 1, the first 32 bytes of its OKM.
    let ikm = [0x0b; 22];
    let salt: Vec<u8> = (0x00..=0x0c).collect();
    let info: Vec<u8> = (0xf0..=0xf9).collect();
    let okm = hkdf_sha256_32(&salt, &ikm, &info);
    let hex: String = okm.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
    );
}

#[test]
fn random_sealers_differ() {
    let a = Sealer::random().unwrap();
    let b = Sealer::random().unwrap();
    let token = a.seal(&one(), BIND).unwrap();
    assert_eq!(a.open(&token, BIND), Some(one()));
    assert_eq!(b.open(&token, BIND), None);
    assert_eq!(format!("{a:?}"), "Sealer { .. }");
}

#[test]
fn too_large_or_unsendable_sessions_are_refused() {
    let s = sealer();
    let many = Session {
        servers: (0..=MAX_LEGS)
            .map(|i| leg(&format!("s{i}"), "127.0.0.1:1", None))
            .collect(),
    };
    assert_eq!(s.seal(&many, BIND), Err(SealError::TooLarge));
    let max = Session {
        servers: many.servers[..MAX_LEGS].to_vec(),
    };
    assert_eq!(s.open(&s.seal(&max, BIND).unwrap(), BIND), Some(max));
    for (bad, why) in [
        (
            leg(&"n".repeat(256), "127.0.0.1:1", None),
            SealError::TooLarge,
        ),
        (leg("a", &"1".repeat(256), None), SealError::TooLarge),
        (
            leg("a", "127.0.0.1:1", Some(&"x".repeat(1025))),
            SealError::TooLarge,
        ),
        (
            leg("a", "127.0.0.1:1", Some("has space")),
            SealError::NotVisibleAscii,
        ),
        (
            leg("a", "127.0.0.1:1", Some("")),
            SealError::NotVisibleAscii,
        ),
        (
            leg("a", "127.0.0.1:1", Some("caf\u{e9}")),
            SealError::NotVisibleAscii,
        ),
        (
            leg("a", "127.0.0.1:1", Some("a\r\nb")),
            SealError::NotVisibleAscii,
        ),
    ] {
        let session = Session { servers: vec![bad] };
        assert_eq!(s.seal(&session, BIND), Err(why), "{session:?}");
    }
    // Legs that fit alone but not together: the token would pass MAX_TOKEN.
    let heavy = Session {
        servers: (0..4)
            .map(|i| leg(&format!("s{i}"), "127.0.0.1:1", Some(&"x".repeat(1000))))
            .collect(),
    };
    assert_eq!(s.seal(&heavy, BIND), Err(SealError::TooLarge));
}

#[test]
fn decode_is_strict() {
    let plain = encode(&three()).unwrap();
    assert_eq!(decode(&plain), Some(three()));
    let mut trailing = plain.clone();
    trailing.push(0);
    assert_eq!(decode(&trailing), None);
    for n in 0..plain.len() {
        assert_eq!(decode(&plain[..n]), None, "{n}");
    }
    assert_eq!(decode(&[MAX_LEGS as u8 + 1]), None);
    // Not UTF-8 in a name; a server session id with a space.
    assert_eq!(decode(&[1, 1, 0xff, 0, 0, 0]), None);
    assert_eq!(decode(&[1, 1, b'a', 0, 0, 2, b' ']), None);
}

#[test]
fn digest_is_short_and_stable() {
    let d = digest("token");
    assert_eq!(d.len(), 12);
    assert!(d.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(d, digest("token"));
    assert_ne!(d, digest("token2"));
    // SHA-256("abc") begins ba7816bf8f01.
    assert_eq!(digest("abc"), "ba7816bf8f01");
}
