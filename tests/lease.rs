//! Lease mode (`rate_limiting.sync: lease`, DESIGN §5.3): instances spend slices of a shared
//! limit taken from a real redis-server, within the documented bound (instances × lease size
//! beyond the exact count), with few Redis commands per request, for request limits and token
//! budgets. The real binary in front of the mock backend.

mod common;
use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `size` × limit, at least 1 (the README's formula).
fn lease_size(limit: u64, size: f64) -> u64 {
    ((limit as f64 * size).floor() as u64).max(1)
}

const LEASE: &str = "{size: 0.02, max_ttl: 1s}";

fn yaml(redis: &str, limit: &str, lease: &str) -> String {
    format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
agents:
  "data-agent": {{api_key: "key-data", rate_limit: "{limit}"}}
rate_limiting: {{store: "{redis}", sync: lease, lease: {lease}}}
routes:
  - {{path: "/*", backend_url: "{{backend}}", auth_required: true}}
"#
    )
}

/// `total` requests from 8 concurrent clients spread over `urls`; the status codes.
async fn spread(urls: &[String], key: &'static str, total: usize) -> Vec<u16> {
    let next = Arc::new(AtomicUsize::new(0));
    let clients = (0..8).map(|_| {
        let (urls, next) = (urls.to_vec(), next.clone());
        tokio::spawn(async move {
            let c = client();
            let mut codes = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return codes;
                }
                let r = c.get(&urls[i % urls.len()]).header("x-api-key", key).send();
                codes.push(r.await.map(|r| r.status().as_u16()).unwrap_or(0));
            }
        })
    });
    (futures_util::future::join_all(clients).await)
        .into_iter()
        .flat_map(|r| r.expect("client task"))
        .collect()
}

/// Calls per command from `INFO commandstats` (the whole bulk answer).
fn commandstats(port: u16) -> std::collections::HashMap<String, u64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("redis");
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    s.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .expect("write");
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        let want = (text.lines().next())
            .and_then(|l| l.strip_prefix('$')?.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        let head = text.find("\r\n").map_or(0, |i| i + 2);
        if n == 0 || text.len() >= head + want {
            break;
        }
    }
    (text.lines())
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

#[tokio::test]
async fn three_instances_spend_a_shared_300_per_minute_within_the_bound() {
    let redis = Redis::start();
    let backend = mock_backend::spawn();
    let yaml = yaml(&redis.url(), "300/minute", LEASE);
    let gateways: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start(&yaml, &backend.url()))
        .collect();
    let urls: Vec<String> = gateways.iter().map(|g| g.url("/x")).collect();
    let start = Instant::now();
    let codes = spread(&urls, "key-data", 450).await;
    let elapsed = start.elapsed();
    let ok = codes.iter().filter(|c| **c == 200).count() as u64;
    let limited = codes.iter().filter(|c| **c == 429).count();
    assert_eq!(ok as usize + limited, 450, "{codes:?}");
    // The bound: what exact mode lets through (300 at once, one more per 0.2 s), plus at most
    // one slice per instance; slices held by one instance while another refuses can leave as
    // many unspent until they go back.
    let bound = 3 * lease_size(300, 0.02);
    let refilled = (elapsed.as_secs_f64() / 0.2).ceil() as u64;
    eprintln!("lease: 450 requests over 3 instances in {elapsed:?}: {ok} × 200, bound ±{bound}");
    assert!(
        (300 - bound..=300 + refilled + bound).contains(&ok),
        "{ok} passed in {elapsed:?}"
    );
}

#[tokio::test]
async fn steady_state_costs_under_005_redis_commands_per_request() {
    let redis = Redis::start();
    let backend = mock_backend::spawn();
    let yaml = yaml(&redis.url(), "100000/minute", LEASE);
    let gateways: Vec<Gateway> = (0..3)
        .map(|_| Gateway::start(&yaml, &backend.url()))
        .collect();
    let urls: Vec<String> = gateways.iter().map(|g| g.url("/x")).collect();
    // Warm: every instance holds a slice and has loaded the script.
    let codes = spread(&urls, "key-data", 300).await;
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    let before = commandstats(redis.port);
    let n = 4000;
    let start = Instant::now();
    let codes = spread(&urls, "key-data", n).await;
    let elapsed = start.elapsed();
    let after = commandstats(redis.port);
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    // Every command Redis ran, those inside the script included; not this test's INFO.
    let ran: u64 = (after.iter())
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, calls)| calls - before.get(name).copied().unwrap_or(0))
        .sum();
    let trips: u64 = (["evalsha", "eval"].iter())
        .map(|c| after.get(*c).unwrap_or(&0) - before.get(*c).unwrap_or(&0))
        .sum();
    let per_request = ran as f64 / n as f64;
    eprintln!(
        "lease: {n} requests in {elapsed:?}: {trips} script calls, {ran} Redis commands \
         ({per_request:.4} per request); {after:?}"
    );
    assert!(per_request <= 0.05, "{ran} commands for {n} requests");
}

#[tokio::test]
async fn unused_slices_go_back_after_max_ttl_and_at_shutdown() {
    let redis = Redis::start();
    let backend = mock_backend::spawn();
    let key = "clawgate:{a:data-agent}:agent";
    let g = Gateway::start(
        &yaml(&redis.url(), "1000/day", "{size: 0.5, max_ttl: 300ms}"),
        &backend.url(),
    );
    let c = client();
    let r = c.get(g.url("/x")).header("x-api-key", "key-data");
    assert_eq!(r.send().await.expect("request").status(), 200);
    // A slice of 500 is taken: Redis' bucket is 500 emissions (86.4 s each) ahead.
    let ttl = |redis: &Redis| -> i64 {
        let line = redis.command(&["PTTL", key]).unwrap_or_default();
        line.trim_start_matches(':').parse().unwrap_or(-3)
    };
    let held = ttl(&redis);
    assert!(held > 400 * 86_400, "{held} ms: no slice of 500 taken");
    // After max_ttl the 499 unspent go back: one token's worth is left.
    let deadline = Instant::now() + Duration::from_secs(5);
    while ttl(&redis) > 10 * 86_400 {
        assert!(Instant::now() < deadline, "the slice was not handed back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let left = ttl(&redis);
    assert!((0..=2 * 86_400 + 1000).contains(&left), "{left}");

    // At shutdown: a fresh slice goes back before the process exits.
    let r = c.get(g.url("/x")).header("x-api-key", "key-data");
    assert_eq!(r.send().await.expect("request").status(), 200);
    assert!(ttl(&redis) > 400 * 86_400);
    let out = clawgate(&["stop", "--config", g.config_str()]);
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ttl(&redis) > 10 * 86_400 {
        assert!(
            Instant::now() < deadline,
            "the slice was not handed back at shutdown"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_instances_share_one_token_budget_within_the_bound() {
    let redis = Redis::start();
    let backend = mock_backend::spawn();
    let yaml = format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
agents:
  "fin": {{api_key: "key-fin"}}
rate_limiting:
  store: "{}"
  sync: lease
  lease: {{size: 0.02, max_ttl: 1s}}
  tokens:
    default: "2000/day"
    estimate: {{chars_per_token: 4, default_max_tokens: 1000}}
routes:
  - {{path: "/*", backend_url: "{{backend}}", auth_required: true}}
"#,
        redis.url()
    );
    let (a, b) = (
        Gateway::start(&yaml, &backend.url()),
        Gateway::start(&yaml, &backend.url()),
    );
    // "hello there": a prompt estimate of 3, reserving 53; the mock uses 2 + 7 = 9.
    let body = json!({"model": "mock", "max_tokens": 50,
        "messages": [{"role": "user", "content": "hello there"}]});
    let c = client();
    let mut passed = 0u64;
    // Until both refuse; then once more after the slices went back (max_ttl).
    for round in 0..2 {
        let mut refused_in_a_row = 0;
        let mut i = 0;
        while refused_in_a_row < 4 {
            let g = if i % 2 == 0 { &a } else { &b };
            i += 1;
            let r = c
                .post(g.url("/v1/chat/completions"))
                .header("x-api-key", "key-fin");
            let status = r.json(&body).send().await.expect("request").status();
            match status.as_u16() {
                200 => {
                    passed += 1;
                    refused_in_a_row = 0;
                }
                429 => refused_in_a_row += 1,
                s => panic!("status {s}"),
            }
            assert!(i < 2000, "never refused");
        }
        if round == 0 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    let used = passed * 9;
    // Charged to Redis when leased: at most the budget plus one slice per instance (and the
    // refill of 2000/day while it ran, under a token); at least the budget less what could not
    // hold one more reservation of 53 on each instance and in Redis.
    let bound = 2 * lease_size(2000, 0.02);
    eprintln!("lease: two instances spent {used} tokens of 2000 ({passed} answers)");
    assert!(
        (2000 - 3 * 53..=2000 + bound + 1).contains(&used),
        "{used} tokens spent"
    );
}

#[test]
fn lease_settings_are_checked_where_they_are_written() {
    let dir = tempfile::tempdir().expect("dir");
    let check = |lease: &str| {
        let path = dir.path().join("c.yaml");
        let yaml = format!(
            "rate_limiting:\n  store: redis://127.0.0.1:1\n  sync: lease\n  lease: {lease}\nroutes:\n  - {{path: /x, backend_url: \"http://127.0.0.1:1\"}}\n"
        );
        std::fs::write(&path, yaml).expect("write");
        let out = clawgate(&["check", "--config", path.to_str().expect("path")]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    for bad in ["{size: 0}", "{size: 1.5}", "{size: lots}"] {
        let (code, text) = check(bad);
        assert_ne!(code, Some(0), "{bad}");
        assert!(text.contains("rate_limiting.lease.size"), "{bad}: {text}");
        assert!(text.contains("c.yaml:4:"), "{bad}: {text}");
    }
    let (code, text) = check("{max_ttl: 0s}");
    assert_ne!(code, Some(0));
    assert!(text.contains("rate_limiting.lease.max_ttl"), "{text}");
    let (code, text) = check("{size: 1, max_ttl: 500ms}");
    assert_eq!(code, Some(0), "{text}");
}
