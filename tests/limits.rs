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

fn shared_yaml(redis: &str, extra: &str) -> String {
    format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
agents:
  "data-agent": {{api_key: "key-data", rate_limit: "100/minute"}}
  "finance-agent": {{api_key: "key-fin"}}
rate_limiting: {{store: "{redis}", default: "1000/minute"{extra}}}
routes:
  - {{path: "/*", backend_url: "{{backend}}", auth_required: true}}
"#
    )
}

#[tokio::test]
async fn three_instances_share_one_limit_through_redis() {
    let redis = Redis::start();
    let backend = mock_backend::spawn();
    let yaml = shared_yaml(&redis.url(), "");
    let gateways: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start(&yaml, &backend.url()))
        .collect();
    let urls: Vec<String> = gateways.iter().map(|g| g.url("/x")).collect();

    let start = std::time::Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients = (0..8).map(|_| {
        let (urls, next) = (urls.clone(), next.clone());
        tokio::spawn(async move {
            let c = client();
            let mut codes = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= 300 {
                    return codes;
                }
                let r = c
                    .get(&urls[i % 3])
                    .header("x-api-key", "key-data")
                    .send()
                    .await;
                codes.push(r.map(|r| r.status().as_u16()).unwrap_or(0));
            }
        })
    });
    let codes: Vec<u16> = futures_util::future::join_all(clients)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    let elapsed = start.elapsed();
    let ok = codes.iter().filter(|c| **c == 200).count();
    let limited = codes.iter().filter(|c| **c == 429).count();
    eprintln!("300 requests over 3 instances in {elapsed:?}: {ok} × 200, {limited} × 429");
    assert_eq!(ok + limited, 300, "{codes:?}");
    // 100 at once, plus one token per 0.6 s while the run lasted.
    let refilled = (elapsed.as_secs_f64() / 0.6).floor() as usize;
    assert!(
        (100..=100 + refilled.max(2)).contains(&ok),
        "{ok} passed in {elapsed:?}"
    );

    // finance-agent has its own bucket (the default), untouched.
    let (s, h, _) = status_of_get(&gateways[1].url("/x"), Some("key-fin")).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-ratelimit-limit"], "1000");
    assert_eq!(h["ratelimit-policy"], "\"limit\";q=1000;w=60");
}

#[tokio::test]
async fn a_redis_outage_falls_back_to_local_limits_and_sharing_resumes() {
    let mut redis = Redis::start();
    let backend = mock_backend::spawn();
    let mut g = Gateway::start(
        &shared_yaml(&redis.url(), ", store_timeout: \"100ms\""),
        &backend.url(),
    );
    let log = capture_stderr(&mut g);
    let key = "clawgate:{a:data-agent}:agent";
    let (s, h, _) = status_of_get(&g.url("/x"), Some("key-data")).await;
    assert_eq!(s, 200);
    assert_eq!(h["x-ratelimit-remaining"], "99");
    assert_eq!(redis.command(&["EXISTS", key]).as_deref(), Some(":1"));

    redis.stop();
    // Local buckets take over: no 5xx, still limited (the local bucket starts full: 100).
    let mut codes = Vec::new();
    let since = std::time::Instant::now();
    for _ in 0..110 {
        codes.push(status_of_get(&g.url("/x"), Some("key-data")).await.0);
    }
    assert!(codes.iter().all(|c| *c == 200 || *c == 429), "{codes:?}");
    let ok = codes.iter().filter(|c| **c == 200).count();
    let refilled = (since.elapsed().as_secs_f64() / 0.6).ceil() as usize;
    assert!((100..=100 + refilled).contains(&ok), "{ok} passed locally");
    let text = log.lock().unwrap().clone();
    assert!(
        text.contains("rate-limit store") && text.contains("failed"),
        "{text}"
    );
    assert!(!text.contains("key-data"), "a key reached the log: {text}");

    redis.restart();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let _ = status_of_get(&g.url("/x"), Some("key-fin")).await;
        if redis
            .command(&["EXISTS", "clawgate:{a:finance-agent}:agent"])
            .as_deref()
            == Some(":1")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sharing did not resume"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // The line is written just after the call that found Redis back: wait for it too.
    loop {
        let text = log.lock().unwrap().clone();
        if text.contains("answers again") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn on_store_error_deny_and_allow() {
    let mut redis = Redis::start();
    let backend = mock_backend::spawn();
    let deny = Gateway::start(
        &shared_yaml(&redis.url(), ", on_store_error: deny"),
        &backend.url(),
    );
    let allow = Gateway::start(
        &shared_yaml(&redis.url(), ", on_store_error: allow"),
        &backend.url(),
    );
    redis.stop();
    let (s, h, v) = status_of_get(&deny.url("/x"), Some("key-data")).await;
    assert_eq!(s, 503, "{v}");
    assert_json_error(&v, 503, "service_unavailable");
    assert_eq!(h["retry-after"], "1");
    let (s, h, _) = status_of_get(&allow.url("/x"), Some("key-data")).await;
    assert_eq!(s, 200);
    assert!(h.get("x-ratelimit-remaining").is_none());
}

#[tokio::test]
async fn one_instance_counts_down_exactly_and_refills() {
    let backend = mock_backend::spawn();
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock", trusted_proxies: ["127.0.0.1/32"]}
agents:
  "data-agent": {api_key: "key-data", rate_limit: "50/minute"}
  "finance-agent": {api_key: "key-fin", rate_limit: "10000/minute"}
rate_limiting: {default: "3/minute"}
routes:
  - {path: "/burst/*", backend_url: "{backend}", auth_required: true, rate_limit: "5/second"}
  - {path: "/open/*", backend_url: "{backend}"}
  - {path: "/*", backend_url: "{backend}", auth_required: true}
"#;
    let g = Gateway::start(yaml, &backend.url());
    for left in (0..50).rev() {
        let (s, h, _) = status_of_get(&g.url("/x"), Some("key-data")).await;
        assert_eq!(s, 200);
        assert_eq!(h["x-ratelimit-remaining"], left.to_string().as_str());
        assert_eq!(
            h["ratelimit"],
            format!(
                "\"limit\";r={left};t={}",
                h["x-ratelimit-reset"].to_str().unwrap()
            )
            .as_str()
        );
    }
    let (s, h, v) = status_of_get(&g.url("/x"), Some("key-data")).await;
    assert_eq!(s, 429, "{v}");
    // One token every 1.2 s: back within 2 s (1 when the 50 requests took over 0.2 s).
    let retry = h["retry-after"].to_str().unwrap();
    assert!(retry == "2" || retry == "1", "{retry}");
    let (s, _, _) = status_of_get(&g.url("/x"), Some("key-fin")).await;
    assert_eq!(s, 200, "finance-agent is unaffected");

    // A route limit of 5/s on top of a generous agent limit: the 6th in a burst is refused,
    // and after the refill interval requests pass again.
    for _ in 0..5 {
        assert_eq!(
            status_of_get(&g.url("/burst/x"), Some("key-fin")).await.0,
            200
        );
    }
    let (s, h, _) = status_of_get(&g.url("/burst/x"), Some("key-fin")).await;
    assert_eq!(s, 429);
    assert_eq!(h["x-ratelimit-limit"], "5");
    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    assert_eq!(
        status_of_get(&g.url("/burst/x"), Some("key-fin")).await.0,
        200
    );

    // Anonymous clients: per address (X-Forwarded-For believed from the trusted 127.0.0.1).
    let anon = |ip: &'static str| {
        let url = g.url("/open/x");
        async move {
            client()
                .get(url)
                .header("x-forwarded-for", ip)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    for _ in 0..3 {
        assert_eq!(anon("203.0.113.1").await, 200);
    }
    assert_eq!(anon("203.0.113.1").await, 429);
    assert_eq!(
        anon("203.0.113.2").await,
        200,
        "another client has its own bucket"
    );
}

#[tokio::test]
async fn the_store_can_be_reached_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start_tls(dir.path());
    let (tls_port, cert, _) = redis.tls.clone().unwrap();
    let backend = mock_backend::spawn();
    // The gateway trusts the test's self-signed certificate through SSL_CERT_FILE.
    let g = Gateway::start_with(
        &shared_yaml(
            &format!("rediss://localhost:{tls_port}"),
            ", on_store_error: deny, store_timeout: \"2s\"",
        ),
        &backend.url(),
        &[("SSL_CERT_FILE", cert.as_str())],
    );
    let (s, h, v) = status_of_get(&g.url("/x"), Some("key-data")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(h["x-ratelimit-remaining"], "99");
    assert_eq!(
        redis
            .command(&["EXISTS", "clawgate:{a:data-agent}:agent"])
            .as_deref(),
        Some(":1")
    );
}
