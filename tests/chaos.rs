//! Chaos runs (DESIGN §5.6): a backend dying in the middle of an SSE stream, Redis killed and
//! restarted under load, an access log on a full disk. The real binary, real sockets, a real
//! redis-server.

mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A backend that answers each request with the head of an SSE stream and three events, 50 ms
/// apart, then dies: its socket closed with no end of the chunked body (as when its process is
/// killed).
async fn dying_backend() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&head).contains("\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let start = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                             transfer-encoding: chunked\r\n\r\n";
                let _ = s.write_all(start.as_bytes()).await;
                for word in ["one", "two", "three"] {
                    let event = format!(
                        "data: {}\n\n",
                        json!({"choices": [{"index": 0, "delta": {"content": format!("{word} ")}}]})
                    );
                    let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                    let _ = s.write_all(chunk.as_bytes()).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // Dropped: closed with the body unfinished, as by a killed process.
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_dying_mid_stream_ends_the_stream_and_is_charged() {
    let backend = dying_backend().await;
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents: {"ops": {api_key: "key-ops"}}
rate_limiting:
  tokens: {default: "10000/day", estimate: {chars_per_token: 4, default_max_tokens: 100}}
routes:
  - {path: "/*", backend_url: "{backend}", auth_required: true}
monitoring:
  metrics: {enabled: true}
  logging: {format: json, output: "{dir}/access.log"}
"#;
    let g = Gateway::start(yaml, &format!("http://{backend}"));
    let c = client();
    let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hello there"}]});
    let mut r = (c.post(g.url("/v1/chat/completions")))
        .header("x-api-key", "key-ops")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut seen = String::new();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), r.chunk()).await {
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) => break "clean".to_string(),
            Ok(Err(e)) => break format!("error: {e}"),
            Err(_) => panic!("the stream never ended: {seen}"),
        }
    };
    eprintln!("the client saw {seen:?} and the stream ended: {ended}");
    // The three events, then the gateway's error event, and a proper end of the body.
    assert_eq!(ended, "clean");
    assert_eq!(seen.matches("data: {\"choices\"").count(), 3, "{seen}");
    let last = seen.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.starts_with("event: error\ndata: "), "{seen}");
    let v: Value = serde_json::from_str(last.split("data: ").nth(1).unwrap()).unwrap();
    assert_eq!(
        (v["error"].as_str(), v["code"].as_u64()),
        (Some("bad_gateway"), Some(502))
    );
    // The log line says the backend failed after a 200 head.
    let line = wait_for_log_line(&g.dir.path().join("access.log"), "/v1/chat/completions").await;
    eprintln!("log line: {line}");
    let v: Value = serde_json::from_str(&line).unwrap();
    // A reset reads as a read error, a plain close as a closed connection.
    assert_eq!(v["status"].as_u64(), Some(200));
    assert!(
        matches!(v["error"].as_str(), Some("ReadError" | "ConnectionClosed")),
        "{line}"
    );
    // Charged what was streamed: the prompt estimate (11 characters: 3) + "one two three "
    // (14 characters: 4), not the reservation (3 + 100).
    let text = c.get(g.url("/metrics")).send().await.unwrap();
    let text = text.text().await.unwrap();
    let series = "openclaw_gateway_token_budget_remaining{agent_id=\"ops\",model=\"m\"}";
    let left = (text.lines())
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {series}"));
    eprintln!("budget left: {left}");
    assert_eq!(left, 10_000.0 - 7.0);
    // The next request works (a new backend connection; this one dies the same way).
    let r = (c.get(g.url("/health"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// The access-log line of the first request to `path`, once written.
async fn wait_for_log_line(file: &std::path::Path, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let needle = format!("\"path\":\"{path}\"");
        if let Some(l) = text.lines().find(|l| l.contains(&needle)) {
            return l.to_string();
        }
        assert!(Instant::now() < deadline, "no line for {path}: {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_on_a_full_disk_drops_lines_counted_and_requests_go_on() {
    let backend = mock_backend::spawn();
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
routes:
  - {path: "/*", backend_url: "{backend}"}
monitoring:
  metrics: {enabled: true}
  logging: {format: json, output: "/dev/full"}
"#;
    let g = Gateway::start(yaml, &backend.url());
    let c = client();
    for _ in 0..200 {
        let r = c.get(g.url("/anything")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let series = "openclaw_gateway_access_log_lines_dropped_total";
    let deadline = Instant::now() + Duration::from_secs(5);
    let dropped = loop {
        let text = c.get(g.url("/metrics")).send().await.unwrap();
        let text = text.text().await.unwrap();
        let n = (text.lines())
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if n >= 200.0 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("/dev/full: {dropped} lines dropped, counted");
    assert!(dropped >= 200.0, "{dropped}");
    assert_eq!(c.get(g.url("/after")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_under_load_gives_no_5xx_and_sharing_resumes() {
    let mut redis = Redis::start();
    let backend = mock_backend::spawn();
    let yaml = format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
agents: {{"data-agent": {{api_key: "key-data", rate_limit: "100000/minute"}}}}
rate_limiting: {{store: "{}", store_timeout: "100ms"}}
routes:
  - {{path: "/*", backend_url: "{{backend}}", auth_required: true}}
"#,
        redis.url()
    );
    let g = Gateway::start(&yaml, &backend.url());
    let url = g.url("/x");
    let (ok, limited, failed) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (url, ok, limited, failed, stop) = (
                url.clone(),
                ok.clone(),
                limited.clone(),
                failed.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let r = c.get(&url).header("x-api-key", "key-data").send().await;
                    match r.map(|r| r.status().as_u16()) {
                        Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(429) => limited.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // SIGKILL.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.restart();
    let key = "clawgate:{a:data-agent}:agent";
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.command(&["DEL", key]).as_deref() != Some(":1") {
        assert!(Instant::now() < deadline, "sharing did not resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, limited, failed) = (
        ok.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    eprintln!("Redis killed for 1.5 s under load: {ok} passed, {limited} limited, {failed} failed");
    assert_eq!(failed, 0);
    assert_eq!(limited, 0);
    assert!(ok > 500, "{ok}");
}
