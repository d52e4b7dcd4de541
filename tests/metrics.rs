//! Prometheus metrics after known traffic: names, labels, values, bounded labels.

mod common;
use common::*;

const YAML: &str = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock", base_path: "/api/v1", rate_limit: "1000/second"}
agents:
  "bot": {api_key: "key-bot", rate_limit: "2/minute"}
routes:
  - {path: "/tools/*", backend_url: "{backend}"}
  - {path: "/llm/*", name: "llm", backend_url: "{backend}", strip_prefix: true, auth_required: true}
  - {path: "/dead/*", backend_url: "http://127.0.0.1:9"}
monitoring:
  metrics:
    enabled: true
    endpoint: "/metrics"
    format: "prometheus"
    custom_metrics:
      - {name: "agent_token_usage", type: counter, labels: ["agent_id", "model"]}
      - {name: "request_latency", type: histogram, labels: ["route", "method"]}
"#;

async fn get(url: &str, key: Option<&str>) -> u16 {
    let mut rb = client().get(url);
    if let Some(k) = key {
        rb = rb.header("x-api-key", k);
    }
    rb.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

/// The metrics text once it holds `needle` (a request is counted when its logging step ends,
/// just after its response).
async fn metrics_with(url: &str, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(r) = client().get(url).send().await {
            let text = r.text().await.unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle} in {text}"
            );
        }
        assert!(std::time::Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn known_traffic_gives_known_counters() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(YAML, &backend.url());
    for _ in 0..3 {
        assert_eq!(get(&g.url("/api/v1/tools/search"), None).await, 200);
    }
    assert_eq!(get(&g.url("/api/v1/nowhere"), None).await, 404);
    // 200 distinct raw paths under one route: one label value.
    for i in 0..200 {
        assert_eq!(
            get(&g.url(&format!("/api/v1/tools/item-{i}")), None).await,
            200
        );
    }
    // bot: 2/minute, then refused.
    for want in [200, 200, 429, 429] {
        assert_eq!(get(&g.url("/api/v1/llm/echo"), Some("key-bot")).await, want);
    }
    assert_eq!(get(&g.url("/api/v1/llm/echo"), None).await, 401);
    assert_eq!(get(&g.url("/api/v1/dead/x"), None).await, 502);

    let p = "openclaw_gateway_";
    // A request is counted when its logging step ends, just after its response: poll until the
    // last one shows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let text = loop {
        let r = client().get(g.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let text = r.text().await.unwrap();
        if text.contains(&format!("{p}upstream_errors_total{{")) {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(
        value(
            &text,
            &format!("{p}requests_total{{method=\"GET\",route=\"/tools/*\",status=\"200\"}}")
        ),
        Some(203.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("{p}requests_total{{method=\"GET\",route=\"unmatched\",status=\"404\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("{p}requests_total{{method=\"GET\",route=\"llm\",status=\"429\"}}")
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("{p}requests_total{{method=\"GET\",route=\"llm\",status=\"401\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &format!("{p}rate_limited_total{{agent_id=\"bot\"}}")),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("{p}upstream_errors_total{{kind=\"connect\",route=\"/dead/*\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    let route_values: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{p}requests_total{{")))
        .filter_map(|l| l.split("route=\"").nth(1)?.split('"').next())
        .collect();
    // The polls above count under "metrics" once their logging step ran.
    let allowed: std::collections::HashSet<&str> =
        ["/tools/*", "unmatched", "llm", "/dead/*", "metrics"]
            .into_iter()
            .collect();
    assert!(
        route_values.is_subset(&allowed)
            && ["/tools/*", "unmatched", "llm", "/dead/*"]
                .iter()
                .all(|r| route_values.contains(r)),
        "raw paths must never become labels: {route_values:?}"
    );
    assert_eq!(
        value(
            &text,
            &format!("{p}request_duration_seconds_count{{route=\"/tools/*\"}}")
        ),
        Some(203.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("{p}upstream_duration_seconds_count{{route=\"llm\"}}")
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("{p}request_latency_count{{method=\"GET\",route=\"/tools/*\"}}")
        ),
        Some(203.0)
    );
    assert!(text.contains(&format!("{p}build_info{{version=")), "{text}");
    assert!(text.contains(&format!("{p}active_connections ")), "{text}");
    assert!(!text.contains("key-bot"));
}

#[tokio::test]
async fn one_json_access_line_per_request_and_no_secrets_anywhere() {
    let backend = mock_backend::spawn();
    let secret = "jwt-secret-for-the-access-log-test-0123456789";
    let yaml = format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
auth:
  jwt: {{secret: "{secret}", expiry: "1h"}}
agents:
  "bot": {{api_key: "key-bot-very-secret", rate_limit: "100/minute"}}
routes:
  - {{path: "/*", backend_url: "{{backend}}", auth_required: true}}
monitoring:
  logging: {{level: "debug", format: "json", output: "{{dir}}/access.log"}}
"#
    );
    let mut g = Gateway::start(&yaml, &backend.url());
    let stderr = capture_stderr(&mut g);
    let out = clawgate(&["token", "--config", g.config_str(), "--agent", "jwt-agent"]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let c = client();
    let body = r#"{"user":"a","password":"hunter2-body-secret","api_key":"inner-key"}"#;
    let mut sent = 0;
    for (auth, query) in [
        (("authorization", format!("Bearer {token}")), ""),
        (
            ("x-api-key", "key-bot-very-secret".to_string()),
            "?api_key=query-secret",
        ),
        (("x-api-key", "wrong-key-secret".to_string()), ""),
        (("cookie", "session=cookie-secret".to_string()), ""),
    ] {
        let r = c
            .post(g.url(&format!("/echo{query}")))
            .header(auth.0, auth.1.as_str())
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().as_u16() == 200 || r.status().as_u16() == 401);
        sent += 1;
    }
    let path = g.dir.path().join("access.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let lines: Vec<serde_json::Value> = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect();
        if lines.iter().filter(|l| l["type"] == "access").count() >= sent {
            break lines;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lines missing: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let access: Vec<&serde_json::Value> = lines.iter().filter(|l| l["type"] == "access").collect();
    assert_eq!(access.len(), sent);
    assert!(
        lines.iter().any(|l| l["type"] == "event"),
        "the start event"
    );
    // Lines of requests served by different worker threads may come in another order.
    let find = |what: &dyn Fn(&serde_json::Value) -> bool| -> &serde_json::Value {
        access
            .iter()
            .copied()
            .find(|l| what(l))
            .unwrap_or_else(|| panic!("no such line in {access:?}"))
    };
    let jwt = find(&|l| l["agent_id"] == "jwt-agent");
    assert_eq!(jwt["status"], 200);
    assert_eq!(jwt["method"], "POST");
    assert_eq!(jwt["path"], "/echo");
    assert_eq!(jwt["bytes_in"], body.len());
    assert!(jwt["bytes_out"].as_u64().unwrap() > 0);
    assert_eq!(jwt["upstream_status"], 200);
    assert_eq!(jwt["limit"], serde_json::Value::Null, "JWT agent: no limit");
    assert_eq!(find(&|l| l["agent_id"] == "bot")["limit"]["remaining"], 99);
    assert_eq!(
        find(&|l| l["status"] == 401)["upstream"],
        serde_json::Value::Null
    );
    for l in &access {
        assert!(l["request_id"].as_str().is_some_and(|s| !s.is_empty()));
        assert!(l["duration_ms"].as_f64().is_some());
    }
    let everything = format!(
        "{}\n{}",
        std::fs::read_to_string(&path).unwrap(),
        stderr.lock().unwrap()
    );
    for secret_text in [
        token.as_str(),
        "key-bot-very-secret",
        "wrong-key-secret",
        "hunter2-body-secret",
        "inner-key",
        "query-secret",
        "cookie-secret",
        secret,
    ] {
        assert!(
            !everything.contains(secret_text),
            "{secret_text} leaked: {everything}"
        );
    }
}

#[tokio::test]
async fn token_usage_from_json_and_streamed_responses_lands_on_agent_and_model() {
    let backend = mock_backend::spawn();
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents:
  "bot": {api_key: "key-bot"}
  "other": {api_key: "key-other"}
routes:
  - {path: "/llm/*", name: "llm", backend_url: "{backend}", strip_prefix: true, auth_required: true}
monitoring:
  metrics:
    enabled: true
    custom_metrics:
      - {name: "agent_token_usage", type: counter, labels: ["agent_id", "model"]}
  logging: {output: "{dir}/access.log"}
"#;
    let g = Gateway::start(yaml, &backend.url());
    let c = client();
    let chat = |key: &'static str, body: serde_json::Value| {
        let (c, url) = (c.clone(), g.url("/llm/v1/chat/completions"));
        async move {
            let r = c
                .post(url)
                .header("x-api-key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.text().await.unwrap()
        }
    };
    let msg = serde_json::json!([{"role": "user", "content": "one two three"}]);
    // 3 prompt words + 7 completion tokens from the mock.
    chat(
        "key-bot",
        serde_json::json!({"model": "gpt-json", "messages": msg}),
    )
    .await;
    chat(
        "key-bot",
        serde_json::json!({"model": "gpt-json", "messages": msg}),
    )
    .await;
    let streamed = chat(
        "key-bot",
        serde_json::json!({"model": "gpt-stream", "stream": true, "mock_interval_ms": 5, "messages": msg}),
    )
    .await;
    assert!(
        streamed.contains("data: [DONE]"),
        "the stream passed through: {streamed}"
    );
    chat(
        "key-other",
        serde_json::json!({"model": "gpt-json", "messages": msg}),
    )
    .await;

    let text = metrics_with(&g.url("/metrics"), "agent_id=\"other\"").await;
    let p = "openclaw_gateway_agent_token_usage_total";
    assert_eq!(
        value(
            &text,
            &format!("{p}{{agent_id=\"bot\",model=\"gpt-json\"}}")
        ),
        Some(20.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("{p}{{agent_id=\"bot\",model=\"gpt-stream\"}}")
        ),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!("{p}{{agent_id=\"other\",model=\"gpt-json\"}}")
        ),
        Some(10.0),
        "{text}"
    );

    let path = g.dir.path().join("access.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        let tokens: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|l| l["type"] == "access" && l["route"] == "llm")
            .map(|l| l["tokens"].clone())
            .collect();
        // Lines of requests served by different worker threads may come in another order.
        if tokens.len() == 4 {
            let stream: Vec<_> = tokens
                .iter()
                .filter(|t| t["model"] == "gpt-stream")
                .collect();
            assert_eq!(stream.len(), 1, "{log}");
            assert_eq!(stream[0]["prompt"], 3);
            assert_eq!(stream[0]["completion"], 7);
            assert!(tokens.iter().all(|t| t["total"] == 10), "{log}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn log_yaml(output: &str) -> String {
    format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
routes:
  - {{path: "/*", backend_url: "{{backend}}"}}
monitoring:
  logging: {{output: "{output}"}}
"#
    )
}

#[tokio::test]
async fn no_request_waits_for_a_log_nobody_reads() {
    let backend = mock_backend::spawn();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("access.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let g = Gateway::start(&log_yaml(fifo.to_str().unwrap()), &backend.url());
    let start = std::time::Instant::now();
    for _ in 0..300 {
        assert_eq!(get(&g.url("/echo"), None).await, 200);
    }
    let took = start.elapsed();
    eprintln!("300 requests with a blocked access log: {took:?}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn sigusr1_reopens_the_log_for_logrotate() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(&log_yaml("{dir}/access.log"), &backend.url());
    let path = g.dir.path().join("access.log");
    let rotated = g.dir.path().join("access.log.1");
    let count = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"type\":\"access\""))
            .count()
    };
    let wait_for = |p: std::path::PathBuf, n: usize| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while count(&p) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{} has {} lines",
                p.display(),
                count(&p)
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    assert_eq!(get(&g.url("/a"), None).await, 200);
    wait_for(path.clone(), 1).await;
    std::fs::rename(&path, &rotated).unwrap();
    clawgate::process::signal(g.pid() as i32, libc::SIGUSR1).unwrap();
    // The writer looks at the flag at least every 200 ms.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(get(&g.url("/b"), None).await, 200);
    wait_for(path.clone(), 1).await;
    assert_eq!(count(&rotated), 1);
    assert_eq!(count(&path), 1);
}

#[tokio::test]
async fn metrics_can_have_a_port_of_their_own() {
    let backend = mock_backend::spawn();
    let admin = free_port();
    let yaml = format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
routes:
  - {{path: "/api/*", backend_url: "{{backend}}"}}
monitoring:
  metrics: {{enabled: true, listen: "127.0.0.1:{admin}"}}
"#
    );
    let g = Gateway::start(&yaml, &backend.url());
    assert_eq!(get(&g.url("/api/x"), None).await, 200);
    assert_eq!(
        get(&g.url("/metrics"), None).await,
        404,
        "not on the public listener"
    );
    let text = metrics_with(
        &format!("http://127.0.0.1:{admin}/metrics"),
        "route=\"/api/*\"",
    )
    .await;
    assert!(
        text.contains(
            "openclaw_gateway_requests_total{method=\"GET\",route=\"/api/*\",status=\"200\"} 1"
        ),
        "{text}"
    );
    let r = client()
        .get(format!("http://127.0.0.1:{admin}/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}
