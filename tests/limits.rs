//! Rate limits on one instance: the gateway ceiling, agent and route limits, the headers.

mod common;
use common::*;
use serde_json::Value;

async fn status_of_get(url: &str, key: Option<&str>) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rb = client().get(url);
    if let Some(k) = key {
        rb = rb.header("x-api-key", k);
    }
    let r = rb.send().await.expect("request");
    let s = r.status().as_u16();
    let h = r.headers().clone();
    (s, h, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn ceiling_agent_and_route_limits_refuse_with_429_and_take_nothing_else() {
    let backend = mock_backend::spawn();
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock", rate_limit: "12/minute"}
agents:
  "a": {api_key: "key-a"}
  "b": {api_key: "key-b", rate_limit: "3/minute"}
rate_limiting: {default: "5/minute"}
routes:
  - {path: "/narrow/*", backend_url: "{backend}", auth_required: true, rate_limit: "2/minute"}
  - {path: "/*", backend_url: "{backend}", auth_required: true}
"#;
    let g = Gateway::start(yaml, &backend.url());

    // b: its own 3/minute (the registry's limit wins over the default).
    for left in [2, 1, 0] {
        let (s, h, _) = status_of_get(&g.url("/x"), Some("key-b")).await;
        assert_eq!(s, 200);
        assert_eq!(h["x-ratelimit-limit"], "3");
        assert_eq!(h["x-ratelimit-remaining"], left.to_string().as_str());
    }
    let (s, h, v) = status_of_get(&g.url("/x"), Some("key-b")).await;
    assert_eq!(s, 429, "{v}");
    assert_json_error(&v, 429, "rate_limited");
    assert_eq!(h["retry-after"], "20");
    assert_eq!(h["x-ratelimit-remaining"], "0");

    // a: the route's 2/minute is tighter than the default 5/minute; its refusal takes nothing
    // from a's agent bucket.
    for _ in 0..2 {
        let (s, h, _) = status_of_get(&g.url("/narrow/x"), Some("key-a")).await;
        assert_eq!(s, 200);
        assert_eq!(h["x-ratelimit-limit"], "2");
    }
    let (s, _, _) = status_of_get(&g.url("/narrow/x"), Some("key-a")).await;
    assert_eq!(s, 429);
    let (s, h, _) = status_of_get(&g.url("/x"), Some("key-a")).await;
    assert_eq!(s, 200);
    assert_eq!(
        h["x-ratelimit-remaining"], "2",
        "5 - 2 on /narrow - this one"
    );

    // 4 refusals so far took no ceiling token: 3 (b) + 2 + 1 (a) = 6 of 12 used. The health
    // endpoint is never limited.
    for _ in 0..20 {
        let (s, _, _) = status_of_get(&g.url("/health"), None).await;
        assert_eq!(s, 200);
    }
    // Unauthenticated requests count against the ceiling (they are refused with 401 after it).
    for _ in 0..6 {
        let (s, _, _) = status_of_get(&g.url("/x"), None).await;
        assert_eq!(s, 401);
    }
    let (s, h, v) = status_of_get(&g.url("/x"), Some("key-a")).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["message"], "the gateway is over its request rate");
    assert_eq!(h["retry-after"], "5");
}
