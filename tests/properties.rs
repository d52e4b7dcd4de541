//! Property tests (proptest) of the parsers an attacker or an operator feeds: the path
//! normaliser, the configuration loader, API keys and JWTs, the cache key builder and the SSE
//! usage parser. Case counts are bounded so that the whole file runs in well under a minute.

use bytes::Bytes;
use clawgate::router::normalise;
use pingora::cache::key::CacheHashKey;
use proptest::prelude::*;
use std::path::PathBuf;

/// Percent-decodes every escape (what a backend might do with a path).
fn decode_all(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Paths built from the pieces that make normalisation hard: slashes, dots, escapes (of dots,
/// slashes, NUL, letters, invalid ones), letters.
fn hostile_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%2e".to_string()),
        Just("%2E".to_string()),
        Just("%2f".to_string()),
        Just("%5c".to_string()),
        Just("%00".to_string()),
        Just("%41".to_string()),
        Just("%".to_string()),
        Just("%zz".to_string()),
        Just("%c3%a9".to_string()),
        Just("%ff".to_string()),
        "[a-z~_-]{1,3}",
    ];
    prop::collection::vec(piece, 0..16).prop_map(|p| format!("/{}", p.concat()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// A normalised path: absolute, no empty, `.` or `..` segment (not even once decoded), and
    /// normal already (idempotent).
    #[test]
    fn normalised_paths_have_no_dot_segments_and_stay_normal(path in hostile_path()) {
        if let Ok(n) = normalise(&path) {
            prop_assert!(n.starts_with('/'), "{path} → {n}");
            prop_assert!(!n.contains("//"), "{path} → {n}");
            for seg in n.split('/').skip(1) {
                let decoded = decode_all(seg);
                prop_assert!(decoded != b"." && decoded != b"..", "{path} → {n}");
                prop_assert!(!decoded.contains(&b'/') && !decoded.contains(&0), "{path} → {n}");
            }
            let again = normalise(&n);
            prop_assert!(matches!(&again, Ok(m) if *m == n), "not idempotent: {path} → {n} → {again:?}");
        }
    }

    /// Under a route's prefix: a normalised path that starts with the prefix is below it once
    /// every escape is decoded (no way back up).
    #[test]
    fn a_path_under_a_prefix_stays_under_it(rest in hostile_path()) {
        let path = format!("/api/v1{rest}");
        if let Ok(n) = normalise(&path) {
            if n.starts_with("/api/v1/") {
                let decoded = String::from_utf8_lossy(&decode_all(&n)).into_owned();
                let mut depth = 0i32;
                for seg in decoded.split('/').skip(1) {
                    match seg {
                        ".." => depth -= 1,
                        "." | "" => {}
                        _ => depth += 1,
                    }
                    prop_assert!(depth >= 0, "{path} → {n}");
                }
            }
        }
    }
}

/// YAML documents made of the configuration's own keys and awkward values, nested.
fn yaml_value(depth: u32) -> BoxedStrategy<String> {
    let scalar = prop_oneof![
        Just("\"127.0.0.1:8080\"".to_string()),
        Just("\"http://127.0.0.1:9\"".to_string()),
        Just("\"/x/*\"".to_string()),
        Just("\"100/minute\"".to_string()),
        Just("\"5s\"".to_string()),
        Just("true".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("18446744073709551616".to_string()),
        Just("null".to_string()),
        Just("~".to_string()),
        Just("\"\"".to_string()),
        Just("\"${UNSET_VARIABLE}\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        "\"[a-z/*.:0-9]{0,12}\"",
    ];
    if depth == 0 {
        return scalar.boxed();
    }
    let key = prop_oneof![
        Just("listen"),
        Just("path"),
        Just("backend_url"),
        Just("backend"),
        Just("rate_limit"),
        Just("timeout"),
        Just("routes"),
        Just("agents"),
        Just("api_key"),
        Just("scopes"),
        Just("caching"),
        Just("enabled"),
        Just("ttl"),
        Just("strip_prefix"),
        Just("match"),
        Just("headers"),
        Just("transforms"),
        Just("request"),
        Just("type"),
        Just("header"),
        Just("value"),
        Just("weight"),
        Just("url"),
        Just("urls"),
        Just("tokens"),
        Just("default"),
        Just("unknown_key"),
    ];
    prop_oneof![
        2 => scalar,
        1 => prop::collection::vec(yaml_value(depth - 1), 0..3)
            .prop_map(|items| format!("[{}]", items.join(", "))),
        2 => prop::collection::vec((key, yaml_value(depth - 1)), 0..4).prop_map(|kv| {
            let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
            format!("{{{}}}", body.join(", "))
        }),
    ]
    .boxed()
}

fn yaml_document() -> impl Strategy<Value = String> {
    let section = prop_oneof![
        Just("gateway"),
        Just("routes"),
        Just("agents"),
        Just("backends"),
        Just("auth"),
        Just("rate_limiting"),
        Just("caching"),
        Just("monitoring"),
        Just("transforms"),
        Just("admin"),
        Just("name"),
        Just("nonsense"),
    ];
    prop::collection::vec((section, yaml_value(3)), 0..5).prop_map(|sections| {
        let mut doc = String::new();
        for (k, v) in sections {
            doc.push_str(&format!("{k}: {v}\n"));
        }
        doc
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Whatever the file holds, loading it never panics, and a refusal names the file and a
    /// line (and column) in it.
    #[test]
    fn any_configuration_loads_or_is_refused_with_a_location(doc in yaml_document()) {
        let loaded = std::panic::catch_unwind(|| {
            clawgate::runtime::load_str(&doc, "t.yaml", PathBuf::from("/nonexistent/t.yaml"))
        });
        let Ok(result) = loaded else {
            return Err(TestCaseError::fail(format!("panicked on:\n{doc}")));
        };
        if let Err(e) = result {
            prop_assert_eq!(&e.file, "t.yaml");
            prop_assert!(e.line.is_some() && e.column.is_some(), "not located: {e}\n{doc}");
        }
    }

    /// API-key digests and bearer tokens of any shape are answered, never a panic.
    #[test]
    fn key_digests_and_tokens_of_any_shape_never_panic(text in "\\PC{0,120}", dots in 0usize..4) {
        let _ = clawgate::auth::keys::parse_digest(&text);
        let token = vec![text.as_str(); dots + 1].join(".");
        let mut headers = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(http::header::AUTHORIZATION, v);
        }
        let auth = auth();
        prop_assert!(auth.authenticate(&headers, clawgate::auth::Strategy::Jwt).is_err());
    }
}

/// An `Auth` with a JWT secret and one API key.
fn auth() -> std::sync::Arc<clawgate::auth::Auth> {
    static AUTH: std::sync::OnceLock<std::sync::Arc<clawgate::auth::Auth>> =
        std::sync::OnceLock::new();
    AUTH.get_or_init(|| {
        let yaml = r#"
gateway: {listen: "127.0.0.1:1"}
auth: {jwt: {secret: "a-secret-of-more-than-thirty-two-bytes!!"}}
agents: {"a": {api_key: "key-a-0123456789"}}
routes: [{path: "/*", backend_url: "http://127.0.0.1:9"}]
"#;
        let cfg = clawgate::runtime::load_str(yaml, "a.yaml", PathBuf::from("/a.yaml"))
            .expect("the auth config loads");
        cfg.auth.clone()
    })
    .clone()
}

/// The config of the cache-key property: a caching route keyed per agent.
fn caching() -> &'static clawgate::runtime::Config {
    static CFG: std::sync::OnceLock<clawgate::runtime::Config> = std::sync::OnceLock::new();
    CFG.get_or_init(|| {
        let yaml = r#"
gateway: {listen: "127.0.0.1:1"}
caching: {ttl: "60s"}
routes: [{path: "/*", backend_url: "http://127.0.0.1:9", caching: {enabled: true}}]
"#;
        clawgate::runtime::load_str(yaml, "c.yaml", PathBuf::from("/c.yaml")).expect("loads")
    })
}

fn key_of(method: &str, uri: &str, agent: Option<&str>, body: Option<&[u8]>) -> String {
    let cfg = caching();
    let route = &cfg.routes[0];
    let rc = route.cache.as_ref().expect("a caching route");
    let method = http::Method::from_bytes(method.as_bytes()).expect("method");
    let uri: http::Uri = uri.parse().expect("uri");
    let key = clawgate::cache::request_key(
        &route.label,
        &method,
        &http::HeaderMap::new(),
        &uri,
        agent,
        rc,
        body,
    );
    format!("{:?}", key.combined())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Requests that differ in method, path, query (its pairs, in any order), agent or body
    /// never share a cache key; the same request always gets the same one.
    #[test]
    fn different_requests_get_different_cache_keys(
        a in ("GET|POST", "/[a-z]{0,4}", prop::option::of("[a-z=&]{0,6}"), prop::option::of("[a-c]{1,2}"), prop::option::of("[a-z{}:\"]{0,8}")),
        b in ("GET|POST", "/[a-z]{0,4}", prop::option::of("[a-z=&]{0,6}"), prop::option::of("[a-c]{1,2}"), prop::option::of("[a-z{}:\"]{0,8}")),
    ) {
        let uri = |p: &str, q: &Option<String>| match q {
            Some(q) => format!("{p}?{q}"),
            None => p.to_string(),
        };
        let (ua, ub) = (uri(&a.1, &a.2), uri(&b.1, &b.2));
        let ka = key_of(&a.0, &ua, a.3.as_deref(), a.4.as_deref().map(str::as_bytes));
        let kb = key_of(&b.0, &ub, b.3.as_deref(), b.4.as_deref().map(str::as_bytes));
        // One resource: the pairs' order and empty pairs (`?`, `a&&b`) do not matter.
        let pairs = |q: &Option<String>| {
            let mut p: Vec<String> = (q.iter().flat_map(|q| q.split('&')))
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect();
            p.sort();
            p
        };
        let same_request = a.0 == b.0
            && a.1 == b.1
            && pairs(&a.2) == pairs(&b.2)
            && a.3 == b.3
            && a.4 == b.4;
        prop_assert_eq!(ka == kb, same_request, "{:?} / {:?}", a, b);
    }

    /// However an SSE stream is cut into chunks, the usage read from it is the same.
    #[test]
    fn any_chunking_of_a_stream_gives_the_same_usage(
        words in prop::collection::vec("[a-z]{1,6}", 0..20),
        prompt in 0u64..5000,
        completion in 0u64..5000,
        cuts in prop::collection::vec(0usize..2000, 0..12),
    ) {
        let mut stream = String::new();
        for w in &words {
            stream.push_str(&format!(
                "data: {{\"choices\":[{{\"delta\":{{\"content\":\"{w} \"}}}}]}}\n\n"
            ));
        }
        stream.push_str(&format!(
            "data: {{\"model\":\"m\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion}}}}}\n\ndata: [DONE]\n\n"
        ));
        let whole = read_usage(&[Bytes::from(stream.clone())]);
        let mut at: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        at.sort_unstable();
        at.dedup();
        let mut pieces = Vec::new();
        let mut from = 0;
        for c in at.into_iter().chain([stream.len()]) {
            pieces.push(Bytes::copy_from_slice(&stream.as_bytes()[from..c]));
            from = c;
        }
        let chunked = read_usage(&pieces);
        prop_assert_eq!(&chunked, &whole);
        let u = whole.expect("usage read");
        prop_assert_eq!((u.prompt, u.completion), (prompt, completion));
    }
}

fn read_usage(chunks: &[Bytes]) -> Option<clawgate::observe::usage::Usage> {
    let mut t = clawgate::observe::usage::Tracker::for_content_type(b"text/event-stream")?;
    for c in chunks {
        t.feed(c);
    }
    t.finish()
}
