//! Configuration reload with the real binary: `clawgate reload` and SIGHUP.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BEFORE: &str = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents:
  "bot": {api_key: "key-bot", rate_limit: "3/minute"}
routes:
  - {path: "/a/*", backend_url: "{backend}"}
  - {path: "/limited/*", backend_url: "{backend}", auth_required: true}
  - {path: "/cached/*", backend_url: "{backend}", caching: {enabled: true, ttl: "60s", shared: true}}
monitoring:
  metrics: {enabled: true}
"#;

/// Writes `yaml` over the gateway's configuration file, with the same substitutions.
fn rewrite(g: &Gateway, yaml: &str, backend: &str) {
    let text = yaml
        .replace("{listen}", &g.addr.to_string())
        .replace("{dir}", g.dir.path().to_str().expect("dir"))
        .replace("{backend}", backend);
    std::fs::write(&g.config, text).expect("write config");
}

async fn status(url: &str, key: Option<&str>) -> u16 {
    let mut rb = client().get(url);
    if let Some(k) = key {
        rb = rb.header("x-api-key", k);
    }
    rb.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn a_reload_adds_routes_without_a_failed_request_and_keeps_buckets_and_cache() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(BEFORE, &backend.url());
    let pid = g.pid();

    // State that must survive: two of bot's three tokens taken, one cached answer.
    for _ in 0..2 {
        assert_eq!(status(&g.url("/limited/x"), Some("key-bot")).await, 200);
    }
    assert_eq!(status(&g.url("/cached/cache/c"), None).await, 200);

    // Load on the old routes during the swap.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), g.url("/a/x"));
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&g.url("/b/x"), None).await, 404);

    let after = BEFORE.replace(
        "  - {path: \"/a/*\", backend_url: \"{backend}\"}",
        "  - {path: \"/a/*\", backend_url: \"{backend}\"}\n  - {path: \"/b/*\", backend_url: \"{backend}\"}",
    );
    rewrite(&g, &after, &backend.url());
    let out = clawgate(&["reload", "--config", g.config_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signalled = Instant::now();
    while status(&g.url("/b/x"), None).await != 200 {
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "the new route answers within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load task");
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no failed request during the swap"
    );
    assert!(ok.load(Ordering::Relaxed) > 50);
    assert_eq!(g.pid(), pid, "the same process");

    // The bucket kept its count: one token left, then 429.
    assert_eq!(status(&g.url("/limited/x"), Some("key-bot")).await, 200);
    assert_eq!(status(&g.url("/limited/x"), Some("key-bot")).await, 429);
    // The cache kept its entry.
    let r = client()
        .get(g.url("/cached/cache/c"))
        .send()
        .await
        .expect("cached");
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(backend.stats.count("/cached/cache/c"), 1);

    let metrics = metrics_text(&g).await;
    assert!(
        metrics.contains("openclaw_gateway_config_reloads_total{result=\"success\"} 1"),
        "{metrics}"
    );
    // Counts from before the reload are still there.
    assert!(metrics.contains("route=\"/limited/*\""), "{metrics}");
}

#[tokio::test]
async fn an_invalid_file_is_refused_and_the_old_routes_keep_answering() {
    let backend = mock_backend::spawn();
    let mut g = Gateway::start(BEFORE, &backend.url());
    let stderr = capture_stderr(&mut g);

    rewrite(
        &g,
        &BEFORE.replace("\"/a/*\"", "\"a-without-slash\""),
        &backend.url(),
    );
    let out = clawgate(&["reload", "--config", g.config_str()]);
    assert_eq!(out.status.code(), Some(2), "the CLI checks first");
    assert!(String::from_utf8_lossy(&out.stderr).contains("routes[0].path"));

    // A SIGHUP straight to the process: refused, logged, counted; the old routes answer. (Sent
    // again until the reload service, which starts just after the listener, has taken one.)
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut sent = 0;
    while !stderr.lock().expect("log").contains("reload refused") {
        assert!(Instant::now() < deadline, "{}", stderr.lock().expect("log"));
        if sent == 0 || sent % 25 == 0 {
            let kill = std::process::Command::new("kill")
                .args(["-HUP", &g.pid().to_string()])
                .status()
                .expect("kill");
            assert!(kill.success());
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stderr.lock().expect("log").contains("routes[0].path"));
    assert_eq!(status(&g.url("/a/x"), None).await, 200);
    let metrics = metrics_text(&g).await;
    let failures = (metrics.lines())
        .find_map(|l| l.strip_prefix("openclaw_gateway_config_reloads_total{result=\"failure\"} "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(failures.is_some_and(|n| n >= 1), "{metrics}");

    // A change that needs new sockets is reported, the rest applies.
    let moved = BEFORE
        .replace(
            "upgrade_sock: \"{dir}/u.sock\"",
            "upgrade_sock: \"{dir}/u.sock\", threads: 3",
        )
        .replace("\"/a/*\"", "\"/c/*\"");
    rewrite(&g, &moved, &backend.url());
    let out = clawgate(&["reload", "--config", g.config_str()]);
    assert!(out.status.success());
    let deadline = Instant::now() + Duration::from_secs(3);
    while status(&g.url("/c/x"), None).await != 200 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(stderr
        .lock()
        .expect("log")
        .contains("take effect after `clawgate upgrade`"));
}

const POOLS_BEFORE: &str = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
backends:
  one:
    urls: ["{backend}", "DEAD"]
    passive_health: {failures: 1, cool_off: "60s"}
    retries: {attempts: 0}
routes:
  - {path: "/one/*", backend: one}
"#;

const POOLS_AFTER: &str = r#"
  two: {urls: ["{backend}", "OTHER"]}
  - {path: "/two/*", backend_weights: {one: 1, two: 1}, strip_prefix: true}
"#;

#[tokio::test]
async fn a_backend_added_by_reload_serves_at_once_and_unchanged_pools_are_kept() {
    let (a, b) = (mock_backend::spawn(), mock_backend::spawn());
    let dead = format!("http://127.0.0.1:{}", free_port());
    let before = POOLS_BEFORE.replace("DEAD", &dead);
    let g = Gateway::start(&before, &a.url());
    // Round robin sends one of the first two requests to the dead address: with no retries it
    // fails (502) and the address is left out for a minute; then every answer is a 200.
    let mut first_two = vec![
        status(&g.url("/one/x"), None).await,
        status(&g.url("/one/x"), None).await,
    ];
    first_two.sort();
    assert_eq!(first_two, vec![200, 502]);
    for _ in 0..50 {
        assert_eq!(status(&g.url("/one/x"), None).await, 200);
    }

    let mut lines = POOLS_AFTER.trim_start_matches('\n').lines();
    let (backend_line, route_line) = (lines.next().unwrap(), lines.next().unwrap());
    let after = before
        .replace(
            "routes:\n",
            &format!("{}\nroutes:\n", backend_line.replace("OTHER", &b.url())),
        )
        .replace(
            "backend: one}\n",
            &format!("backend: one}}\n{route_line}\n"),
        );
    rewrite(&g, &after, &a.url());
    let out = clawgate(&["reload", "--config", g.config_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The new backend was resolved before the swap: the new route's first answer is a 200,
    // never a 503 of a pool without addresses.
    let deadline = Instant::now() + Duration::from_secs(2);
    let first = loop {
        let s = status(&g.url("/two/echo"), None).await;
        if s != 404 {
            break s;
        }
        assert!(Instant::now() < deadline, "the new route never answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(first, 200);
    // The unchanged backend kept its pool: the dead address is still left out (a new pool would
    // know nothing of it and send it one of the next two requests).
    for _ in 0..50 {
        assert_eq!(status(&g.url("/one/x"), None).await, 200);
        assert_eq!(status(&g.url("/two/echo"), None).await, 200);
    }
    assert!(
        b.stats.total.load(Ordering::Relaxed) > 0,
        "the new address is used"
    );
}
