//! Admission and refusals, decided without a socket: a head, a peer and a compiled `Config`.

use super::admit::{admit, sent_content_length, Admit, Input};
use super::builtin::BuiltIn;
use super::ctx::Caller;
use super::refusal::{self, Refusal};
use crate::router::PathError;
use crate::runtime::Config;
use http::HeaderValue;
use pingora::http::RequestHeader;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

const SECRET: &str = "unit-test-secret-0123456789abcdef-0123";

/// A configuration's tables and the limits' state a running gateway would hold beside them.
struct Tables {
    cfg: Config,
    limits: crate::limits::Shared,
}

impl std::ops::Deref for Tables {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.cfg
    }
}

fn config(yaml: &str) -> Tables {
    Tables {
        cfg: crate::runtime::load_str(yaml, "test.yaml", PathBuf::from("test.yaml")).unwrap(),
        limits: Default::default(),
    }
}

/// Agents `fin` (scoped to `/fin/*`) and `boss` (admin); an open route, a route that needs a
/// caller, a caching route, a route limited to one request a minute.
fn gateway(extra: &str) -> Tables {
    config(&format!(
        r#"
gateway: {{max_headers: 6, max_header_size: 512, max_body_size: 1KB{extra}}}
auth: {{jwt: {{secret: "{SECRET}"}}}}
agents:
  "fin": {{api_key: "key-fin", scopes: ["/fin/*"]}}
  "boss": {{api_key: "key-boss", scopes: ["admin"]}}
caching: {{ttl: "2s"}}
monitoring: {{metrics: {{enabled: true}}}}
routes:
  - {{path: "/open/*", backend_url: "http://127.0.0.1:9"}}
  - {{path: "/fin/*", backend_url: "http://127.0.0.1:9", auth_required: true}}
  - {{path: "/hr/*", backend_url: "http://127.0.0.1:9", auth_required: true}}
  - {{path: "/cached/*", backend_url: "http://127.0.0.1:9", caching: {{enabled: true}}}}
  - {{path: "/narrow/*", backend_url: "http://127.0.0.1:9", rate_limit: "1/minute"}}
"#
    ))
}

fn head(method: &str, path: &str, headers: &[(&'static str, &str)]) -> RequestHeader {
    let mut h = RequestHeader::build(method, path.as_bytes(), None).unwrap();
    for (k, v) in headers {
        h.append_header(*k, *v).unwrap();
    }
    h
}

/// Admits a head from 10.0.0.1, its body not read ahead.
fn decide(cfg: &Tables, head: &RequestHeader, caller: &mut Caller) -> Result<Admit, Refusal> {
    decide_framed(cfg, head, false, caller)
}

fn decide_framed(
    cfg: &Tables,
    head: &RequestHeader,
    sent_content_length: bool,
    caller: &mut Caller,
) -> Result<Admit, Refusal> {
    let input = Input {
        head,
        peer: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        sent_content_length,
        chunked: head.headers.contains_key(http::header::TRANSFER_ENCODING),
        cfg,
        limits: &cfg.limits,
        serves_metrics: cfg.metrics.is_some(),
    };
    admit(&input, None, caller)
}

fn refused(cfg: &Tables, head: &RequestHeader) -> Refusal {
    match decide(cfg, head, &mut Caller::default()) {
        Err(r) => r,
        Ok(_) => panic!("admitted {} {}", head.method, head.uri),
    }
}

fn header(r: &Refusal, name: &str) -> Option<String> {
    let headers = r.headers();
    let (_, value) = headers.iter().find(|(k, _)| *k == name)?;
    value.to_str().ok().map(str::to_string)
}

#[test]
fn too_many_headers_are_refused_with_431_and_the_connection_closes() {
    let cfg = gateway("");
    let many: Vec<(&'static str, &str)> = ["a", "b", "c", "d", "e", "f", "g"]
        .iter()
        .map(|n| (*n, "1"))
        .collect();
    let r = refused(&cfg, &head("GET", "/open/x", &many));
    assert_eq!(r, Refusal::HeadersTooMany);
    assert_eq!((r.status(), r.message()), (431, "too many request headers"));
    assert!(r.closes());
}

#[test]
fn headers_too_large_are_refused_with_431() {
    let cfg = gateway("");
    let big = "x".repeat(600);
    let r = refused(&cfg, &head("GET", "/open/x", &[("x-big", &big)]));
    assert_eq!(r, Refusal::HeadersTooLarge);
    assert_eq!(
        (r.status(), r.message()),
        (431, "request headers are too large")
    );
    assert!(r.closes());
}

#[test]
fn content_length_beside_transfer_encoding_is_refused_with_400() {
    let cfg = gateway("");
    // Pingora drops the Content-Length of such a head: only the raw head tells.
    let chunked = head("POST", "/open/x", &[("transfer-encoding", "chunked")]);
    let r = decide_framed(&cfg, &chunked, true, &mut Caller::default()).err();
    assert_eq!(r, Some(Refusal::LengthAndChunked));
    let r = r.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.message(),
        "both Content-Length and Transfer-Encoding are present"
    );
    assert!(r.closes());
    assert!(decide(&cfg, &chunked, &mut Caller::default()).is_ok());
    assert!(sent_content_length(
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    ));
    assert!(!sent_content_length(
        b"POST /content-length: HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
    ));
}

#[test]
fn invalid_or_conflicting_content_lengths_are_refused_with_400() {
    let cfg = gateway("");
    let r = refused(&cfg, &head("POST", "/open/x", &[("content-length", "12a")]));
    assert_eq!((r.status(), r.message()), (400, "invalid Content-Length"));
    assert!(r.closes());
    let two = [("content-length", "3"), ("content-length", "4")];
    let r = refused(&cfg, &head("POST", "/open/x", &two));
    assert_eq!(r, Refusal::ConflictingFraming);
    assert_eq!(
        (r.status(), r.message()),
        (400, "conflicting message framing headers")
    );
    let same = [("content-length", "3"), ("content-length", " 3")];
    assert!(decide(
        &cfg,
        &head("POST", "/open/x", &same),
        &mut Caller::default()
    )
    .is_ok());
    // A Content-Length the parser kept beside Transfer-Encoding (HTTP/2) conflicts too.
    let both = [("transfer-encoding", "chunked"), ("content-length", "3")];
    assert_eq!(
        refused(&cfg, &head("POST", "/open/x", &both)),
        Refusal::ConflictingFraming
    );
}

#[test]
fn a_content_length_over_max_body_size_is_refused_with_413() {
    let cfg = gateway("");
    let r = refused(
        &cfg,
        &head("POST", "/open/x", &[("content-length", "1025")]),
    );
    assert_eq!(r, Refusal::BodyTooLarge);
    assert_eq!(
        (r.status(), r.message()),
        (413, "request body larger than max_body_size")
    );
    assert!(r.closes());
    let fits = head("POST", "/open/x", &[("content-length", "1024")]);
    assert!(decide(&cfg, &fits, &mut Caller::default()).is_ok());
}

#[test]
fn a_bad_path_is_refused_with_400_and_the_connection_stays() {
    let cfg = gateway("");
    let r = refused(&cfg, &head("GET", "/open/%2F/../../..", &[]));
    assert_eq!(r.status(), 400);
    assert!(matches!(r, Refusal::BadPath(_)));
    assert!(!r.closes());
    let r = refused(&cfg, &head("GET", "/open/../../x", &[]));
    assert_eq!(r, Refusal::BadPath(PathError::AboveRoot));
    assert_eq!(r.message(), PathError::AboveRoot.message());
}

#[test]
fn a_path_no_route_matches_is_refused_with_404_labelled_unmatched() {
    let cfg = gateway("");
    let mut caller = Caller::default();
    let r = decide(&cfg, &head("GET", "/nowhere", &[]), &mut caller).err();
    let r = r.unwrap();
    assert_eq!(r, Refusal::NoRoute);
    assert_eq!(
        (r.status(), r.message()),
        (404, "no route matches this path")
    );
    assert_eq!(r.metric_label(), Some("unmatched"));
    assert_eq!(caller.route, None);
}

#[test]
fn purge_on_a_route_that_does_not_cache_is_refused_with_405() {
    let cfg = gateway("");
    let admin = [("x-api-key", "key-boss")];
    let r = refused(&cfg, &head("PURGE", "/open/x", &admin));
    assert_eq!(r, Refusal::NotCaching);
    assert_eq!(
        (r.status(), r.message()),
        (405, "this route does not cache")
    );
    // On a caching route, an admin's purge is proxied (to the cache) as a purge.
    let mut caller = Caller::default();
    let ok = decide(&cfg, &head("PURGE", "/cached/x", &admin), &mut caller);
    assert!(matches!(ok, Ok(Admit::Proxy(p)) if p.purge));
    let r = refused(
        &cfg,
        &head("PURGE", "/cached/x", &[("x-api-key", "key-fin")]),
    );
    assert_eq!(r, Refusal::Forbidden("purging needs the admin scope"));
}

#[test]
fn missing_or_invalid_credentials_are_refused_with_401_and_a_challenge() {
    let cfg = gateway("");
    let mut caller = Caller::default();
    let r = decide(&cfg, &head("GET", "/fin/x", &[]), &mut caller).err();
    let r = r.unwrap();
    assert_eq!((r.status(), r.message()), (401, "authentication required"));
    assert_eq!(
        header(&r, "www-authenticate").as_deref(),
        Some("Bearer realm=\"clawgate\", ApiKey realm=\"clawgate\", header=\"x-api-key\"")
    );
    assert!(!r.closes());
    let label = caller.route.map(|i| cfg.routes[i].label.as_str());
    assert_eq!(label, Some("/fin/*"), "the 401 counts against its route");
    let r = refused(&cfg, &head("GET", "/fin/x", &[("x-api-key", "nope")]));
    assert_eq!((r.status(), r.message()), (401, "the API key is not valid"));
    let bad_jwt = [("authorization", "Bearer not.a.jwt")];
    let r = refused(&cfg, &head("GET", "/fin/x", &bad_jwt));
    assert_eq!(r.status(), 401);
    assert!(header(&r, "www-authenticate").is_some_and(|c| c.contains("invalid_token")));
}

#[test]
fn an_agent_outside_its_scopes_is_refused_with_403() {
    let cfg = gateway("");
    let r = refused(&cfg, &head("GET", "/hr/x", &[("x-api-key", "key-fin")]));
    assert_eq!(
        r,
        Refusal::Forbidden("this agent's scopes do not include this path")
    );
    assert_eq!(r.status(), 403);
    let mut caller = Caller::default();
    let ok = decide(
        &cfg,
        &head("GET", "/fin/x", &[("x-api-key", "key-fin")]),
        &mut caller,
    );
    assert!(matches!(ok, Ok(Admit::Proxy(_))));
    assert_eq!(
        caller.identity.map(|i| i.agent.id.to_string()),
        Some("fin".into())
    );
}

#[test]
fn a_route_limit_refuses_with_429_and_the_limit_headers() {
    let cfg = gateway("");
    let req = head("GET", "/narrow/x", &[]);
    let mut caller = Caller::default();
    assert!(matches!(
        decide(&cfg, &req, &mut caller),
        Ok(Admit::Proxy(_))
    ));
    let standing = caller.limit.unwrap();
    assert_eq!((standing.limit, standing.remaining), (1, 0));
    let r = refused(&cfg, &req);
    assert!(matches!(r, Refusal::Limited(_)));
    assert_eq!((r.status(), r.message()), (429, "rate limit exceeded"));
    assert!(!r.closes());
    let names: Vec<&str> = r.headers().iter().map(|(k, _)| *k).collect();
    assert_eq!(
        names,
        [
            "retry-after",
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
            "ratelimit-policy",
            "ratelimit"
        ]
    );
    let retry = header(&r, "retry-after").unwrap();
    assert!(retry.parse::<u64>().is_ok_and(|s| (1..=60).contains(&s)));
    assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("1"));
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(header(&r, "x-ratelimit-reset").as_deref(), Some(&*retry));
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"limit\";q=1;w=60")
    );
    assert_eq!(
        header(&r, "ratelimit").as_deref(),
        Some(&*format!("\"limit\";r=0;t={retry}"))
    );
}

#[test]
fn the_gateway_ceiling_refuses_with_429_but_health_still_answers() {
    let cfg = gateway(", rate_limit: \"1/minute\"");
    let req = head("GET", "/open/x", &[]);
    let mut first = Caller::default();
    assert!(decide(&cfg, &req, &mut first).is_ok());
    assert!(first.ceiling_taken);
    let r = refused(&cfg, &req);
    assert!(matches!(r, Refusal::OverCeiling(_)));
    assert_eq!(
        (r.status(), r.message()),
        (429, "the gateway is over its request rate")
    );
    assert_eq!(header(&r, "x-ratelimit-limit").as_deref(), Some("1"));
    assert_eq!(
        header(&r, "ratelimit-policy").as_deref(),
        Some("\"limit\";q=1;w=60")
    );
    let health = decide(&cfg, &head("GET", "/health", &[]), &mut Caller::default());
    assert!(matches!(health, Ok(Admit::BuiltIn(BuiltIn::Health))));
    // The token endpoint is behind the ceiling.
    let token = refused(&cfg, &head("POST", "/auth/token", &[]));
    assert!(matches!(token, Refusal::OverCeiling(_)));
}

#[test]
fn built_in_endpoints_are_chosen_by_path_with_their_labels() {
    let cfg = gateway("");
    for (path, b) in [
        ("/health", BuiltIn::Health),
        ("/metrics", BuiltIn::Metrics),
        ("/auth/token", BuiltIn::Token),
        ("/cache", BuiltIn::CacheAdmin),
    ] {
        let mut caller = Caller::default();
        let got = decide(&cfg, &head("GET", path, &[]), &mut caller);
        assert!(matches!(got, Ok(Admit::BuiltIn(x)) if x == b), "{path}");
        assert_eq!(caller.built_in, Some(b.label()));
    }
    let labels = [
        BuiltIn::Health,
        BuiltIn::Metrics,
        BuiltIn::Token,
        BuiltIn::CacheAdmin,
    ]
    .map(BuiltIn::label);
    assert_eq!(labels, ["health", "metrics", "token", "cache"]);
    // Metrics on a port of their own are not served here.
    let input = Input {
        head: &head("GET", "/metrics", &[]),
        peer: None,
        sent_content_length: false,
        chunked: false,
        cfg: &cfg,
        limits: &cfg.limits,
        serves_metrics: false,
    };
    let r = admit(&input, None, &mut Caller::default());
    assert_eq!(r.err(), Some(Refusal::NoRoute));
}

#[test]
fn a_built_in_asked_with_another_method_is_refused_with_405_and_allow() {
    for (b, allow, message) in [
        (
            BuiltIn::Health,
            "GET, HEAD",
            "the health endpoint answers GET",
        ),
        (
            BuiltIn::Metrics,
            "GET, HEAD",
            "the metrics endpoint answers GET",
        ),
        (BuiltIn::Token, "POST", "the token endpoint answers POST"),
        (
            BuiltIn::CacheAdmin,
            "DELETE",
            "the cache endpoint answers DELETE",
        ),
    ] {
        let r = Refusal::MethodNotAllowed(b);
        assert_eq!((r.status(), r.message()), (405, message));
        assert_eq!(header(&r, "allow").as_deref(), Some(allow));
        assert!(!r.closes());
    }
}

#[test]
fn a_match_on_the_body_asks_for_the_body_first() {
    let cfg = config(
        r#"
routes:
  - {name: small, path: "/llm/*", backend_url: "http://127.0.0.1:9", match: {body: {model: "small"}}}
  - {name: other, path: "/llm/*", backend_url: "http://127.0.0.1:8"}
"#,
    );
    let req = head("POST", "/llm/x", &[("content-length", "17")]);
    let input = Input {
        head: &req,
        peer: None,
        sent_content_length: false,
        chunked: false,
        cfg: &cfg,
        limits: &cfg.limits,
        serves_metrics: false,
    };
    let mut caller = Caller::default();
    assert!(matches!(
        admit(&input, None, &mut caller),
        Ok(Admit::ReadBody)
    ));
    let body = bytes::Bytes::from_static(br#"{"model":"small"}"#);
    let label = |caller: &Caller| caller.route.map(|i| cfg.routes[i].label.clone());
    assert!(admit(&input, Some(Some(&body)), &mut caller).is_ok());
    assert_eq!(label(&caller).as_deref(), Some("small"));
    let other = bytes::Bytes::from_static(br#"{"model":"large"}"#);
    assert!(admit(&input, Some(Some(&other)), &mut caller).is_ok());
    assert_eq!(label(&caller).as_deref(), Some("other"));
}

#[test]
fn failures_after_admission_are_classified_and_close_the_connection() {
    use pingora::{Error, ErrorSource, ErrorType};
    let timeout = refusal::total_timeout();
    assert_eq!(Refusal::of_error(&timeout), Some(Refusal::BackendTimeout));
    assert_eq!(timeout.etype(), &ErrorType::Custom(refusal::TOTAL_TIMEOUT));
    let cases = [
        (refusal::body_too_large(), 413),
        (refusal::no_backend(), 503),
        (Error::new_up(ErrorType::ReadTimedout), 504),
        (Error::new_up(ErrorType::ConnectRefused), 502),
        (Error::new_down(ErrorType::InvalidHTTPHeader), 400),
        (Error::new(ErrorType::HTTPStatus(503)), 503),
        (refusal::internal(), 500),
    ];
    for (e, code) in cases {
        let r = Refusal::of_error(&e).unwrap();
        assert_eq!(r.status(), code, "{e}");
        assert!(r.closes());
    }
    let gone = Error::new_down(ErrorType::ConnectionClosed);
    assert_eq!(gone.esource(), &ErrorSource::Downstream);
    assert_eq!(Refusal::of_error(&gone), None);
}

#[test]
fn a_refusal_body_has_the_design_shape() {
    let v: serde_json::Value = serde_json::from_slice(&Refusal::StoreDown.body("r-1")).unwrap();
    assert_eq!(v["error"], "service_unavailable");
    assert_eq!(v["code"], 503);
    assert_eq!(v["message"], "rate limits cannot be checked right now");
    assert_eq!(v["request_id"], "r-1");
    let retry = Refusal::StoreDown.headers();
    assert_eq!(retry, [("retry-after", HeaderValue::from_static("1"))]);
}
