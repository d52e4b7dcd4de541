//! The admin listener's API (DESIGN §5.5) through the real binary: off by default, the token
//! required, each endpoint reflecting traffic sent by a few agents, a stopped backend shown
//! down, a purge emptying a route, the tail showing a new request, and no secret in any answer.

mod common;

use common::*;
use mock_backend::Stoppable;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TOKEN: &str = "console-token-0123456789";
const JWT_SECRET: &str = "jwt-secret-for-the-console-test-0123456789";
const PROVIDER_KEY: &str = "sk-provider-secret-4242";
const KEYS: [(&str, &str); 3] = [
    ("data-agent", "key-data-agent-secret-1"),
    ("code-agent", "key-code-agent-secret-2"),
    ("research-agent", "key-research-agent-secret-3"),
];

fn yaml(admin_port: u16, down_url: &str) -> String {
    format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
admin: {{listen: "127.0.0.1:{admin_port}", token: "{TOKEN}"}}
auth: {{jwt: {{secret: "{JWT_SECRET}"}}}}
agents:
  "data-agent": {{api_key: "{k0}", rate_limit: "100/minute"}}
  "code-agent": {{api_key: "{k1}"}}
  "research-agent": {{api_key: "{k2}"}}
backends:
  flaky:
    url: "{down_url}"
    health_check: {{path: "/status/200", interval: "200ms", timeout: "200ms"}}
caching: {{ttl: "60s"}}
routes:
  - path: "/v1/*"
    name: "llm"
    backend_url: "{{backend}}"
    auth_required: true
    transforms:
      request:
        - {{type: inject_auth, source: secret, value: "Bearer ${{PROVIDER_KEY}}"}}
  - path: "/cache/*"
    backend_url: "{{backend}}"
    auth_required: true
    caching: {{enabled: true}}
  - path: "/flaky/*"
    backend: flaky
"#,
        k0 = KEYS[0].1,
        k1 = KEYS[1].1,
        k2 = KEYS[2].1,
    )
}

struct Console {
    base: String,
    c: reqwest::Client,
}

impl Console {
    async fn get(&self, path: &str) -> Value {
        let r = self
            .c
            .get(format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let text = r.text().await.unwrap();
        no_secret(&text);
        serde_json::from_str(&text).unwrap()
    }
}

/// No configured secret, nor a credential a client sent, appears in `text`.
fn no_secret(text: &str) {
    let mut secrets = vec![TOKEN, JWT_SECRET, PROVIDER_KEY];
    secrets.extend(KEYS.iter().map(|(_, k)| *k));
    for s in secrets {
        assert!(!text.contains(s), "a secret in an admin answer: {text}");
    }
}

/// Waits until the admin listener accepts (it starts beside the gateway's own).
fn wait_admin(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the admin listener did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn agent<'a>(agents: &'a Value, id: &str) -> &'a Value {
    let list = agents["agents"].as_array().unwrap();
    list.iter()
        .find(|a| a["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {agents}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_reflects_what_agents_sent() {
    let backend = mock_backend::spawn();
    let mut flaky = Stoppable::start("127.0.0.1:0".parse().unwrap()).unwrap();
    let admin_port = free_port();
    let g = Gateway::start_with(
        &yaml(admin_port, &flaky.url()),
        &backend.url(),
        &[("PROVIDER_KEY", PROVIDER_KEY)],
    );
    wait_admin(admin_port);
    let console = Console {
        base: format!("http://127.0.0.1:{admin_port}"),
        c: client(),
    };
    let c = client();

    // The token: missing or wrong → 401 (and nothing else said).
    for auth in [None, Some("Bearer wrong-token-0123456789"), Some(TOKEN)] {
        let mut r = c.get(format!("{}/api/overview", console.base));
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 401, "{auth:?}");
        no_secret(&r.text().await.unwrap());
    }

    // Traffic: 5 chats by data-agent (tokens by model), 3 by code-agent, 2 unauthenticated, a
    // cache MISS then HIT by research-agent, 2 to the flaky backend.
    let chat = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]});
    for (agent, n) in [(0, 5), (1, 3)] {
        for _ in 0..n {
            let r = c
                .post(g.url("/v1/chat/completions"))
                .header("x-api-key", KEYS[agent].1);
            let r = r.json(&chat);
            assert_eq!(r.send().await.unwrap().status(), 200);
        }
    }
    for _ in 0..2 {
        assert_eq!(
            c.get(g.url("/v1/models")).send().await.unwrap().status(),
            401
        );
    }
    for expect in ["MISS", "HIT"] {
        let r = c.get(g.url("/cache/item")).header("x-api-key", KEYS[2].1);
        let r = r.send().await.unwrap();
        assert_eq!(r.headers()["x-cache"], expect);
    }
    for _ in 0..2 {
        assert_eq!(
            c.get(g.url("/flaky/status/200"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }

    let overview = console.get("/api/overview").await;
    assert_eq!(overview["requests"], 14, "{overview}");
    assert_eq!(overview["refused"], 2);
    assert_eq!(overview["errors"], 0);
    assert_eq!(overview["cache"]["hits"], 1);
    assert_eq!(overview["cache"]["misses"], 1);
    assert!(overview["tokens"].as_u64().unwrap() > 0, "{overview}");
    assert!(overview["latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    let agents = console.get("/api/agents").await;
    let data = agent(&agents, "data-agent");
    assert_eq!(
        (data["requests"].as_u64(), data["errors"].as_u64()),
        (Some(5), Some(0))
    );
    assert_eq!(data["rate_limit"]["burst"], 100);
    assert_eq!(data["limit_left"], 95, "{data}");
    assert!(
        data["tokens_by_model"]["gpt-4o"].as_u64().unwrap() > 0,
        "{data}"
    );
    let digest = clawgate::auth::keys::hex(&clawgate::auth::keys::sha256(KEYS[0].1.as_bytes()));
    assert_eq!(
        data["keys"],
        json!([digest[..8].to_string()]),
        "keys by digest prefix"
    );
    assert_eq!(agent(&agents, "code-agent")["requests"], 3);
    assert_eq!(agent(&agents, "research-agent")["requests"], 2);

    let routes = console.get("/api/routes").await;
    let route = |label: &str| {
        let list = routes["routes"].as_array().unwrap().clone();
        list.into_iter().find(|r| r["label"] == label).unwrap()
    };
    assert_eq!(route("llm")["requests"], 10);
    assert_eq!(route("llm")["refused"], 2);
    assert_eq!(route("/cache/*")["requests"], 2);
    assert_eq!(route("/cache/*")["cache"], true);
    assert_eq!(route("/flaky/*")["requests"], 2);

    // A stopped backend shows down once its checks fail.
    let up = |b: &Value| {
        let list = b["backends"].as_array().unwrap().clone();
        list.into_iter().find(|p| p["name"] == "flaky").unwrap()["up"].as_u64()
    };
    assert_eq!(up(&console.get("/api/backends").await), Some(1));
    flaky.stop();
    let stopped = Instant::now();
    while up(&console.get("/api/backends").await) != Some(0) {
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "shown down within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The cache: its figures, then a purge of the route (the only action), and a MISS again.
    let cache = console.get("/api/cache").await;
    assert_eq!(
        (cache["enabled"].as_bool(), cache["hit_rate"].as_f64()),
        (Some(true), Some(0.5))
    );
    assert!(cache["bytes"].as_i64().unwrap() > 0, "{cache}");
    let purge = c.post(format!("{}/api/cache/purge", console.base));
    let r = purge
        .try_clone()
        .unwrap()
        .json(&json!({"route": "/cache/*"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the purge needs the token too");
    let r = purge
        .bearer_auth(TOKEN)
        .json(&json!({"route": "/cache/*"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(g.url("/cache/item"))
        .header("x-api-key", KEYS[2].1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS", "purged");

    // Read-only otherwise.
    let r = c
        .delete(format!("{}/api/agents", console.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // After a second, the charts' samples hold the traffic.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let overview = console.get("/api/overview").await;
    let series = overview["series"].as_array().unwrap();
    let sampled: u64 = series.iter().map(|s| s["requests"].as_u64().unwrap()).sum();
    assert!(sampled >= 14, "{series:?}");
}

/// Access lines and skipped counts in what a tail sent so far.
fn tail_counts(seen: &str) -> (usize, u64) {
    let lines = seen.matches("\"type\":\"access\"").count();
    let skipped = (seen.split("event: skipped\ndata: ").skip(1))
        .filter_map(|rest| rest.split('\n').next()?.parse::<u64>().ok())
        .sum();
    (lines, skipped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_shows_a_new_request_within_two_seconds() {
    use futures_util::StreamExt;
    let backend = mock_backend::spawn();
    let admin_port = free_port();
    let g = Gateway::start_with(
        &yaml(admin_port, &backend.url()),
        &backend.url(),
        &[("PROVIDER_KEY", PROVIDER_KEY)],
    );
    wait_admin(admin_port);
    let c = client();
    // Without an access-log file, lines are made only while a tail is open: the tail is open
    // once its head has come.
    let tail = c
        .get(format!("http://127.0.0.1:{admin_port}/api/tail"))
        .bearer_auth(TOKEN);
    let r = tail.send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut events = r.bytes_stream();
    let r = c
        .get(g.url("/v1/models?api_key=query-secret-9"))
        .header("x-api-key", KEYS[1].1);
    let r = r.send().await.unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let at = Instant::now();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let chunk = tokio::time::timeout_at(deadline.into(), events.next()).await;
        let chunk = chunk.expect("the tail went on").unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
        no_secret(&seen);
        if let Some(line) = seen.lines().find(|l| l.contains(id.as_str())) {
            break line.to_string();
        }
    };
    assert!(at.elapsed() < Duration::from_secs(2), "{:?}", at.elapsed());
    let v: Value = serde_json::from_str(line.trim_start_matches("data: ")).unwrap();
    assert_eq!(
        (v["agent_id"].as_str(), v["status"].as_u64()),
        (Some("code-agent"), Some(200))
    );
    assert!(!line.contains("query-secret-9") && !line.contains("client-sent-credential"));

    // A burst faster than the tail shows (at most 100 lines a quarter second): every request
    // is either a line or counted as skipped.
    let before = tail_counts(&seen);
    let burst = 600;
    let sends = (0..8).map(|_| {
        let (c, url, key) = (c.clone(), g.url("/v1/models"), KEYS[1].1);
        tokio::spawn(async move {
            for _ in 0..burst / 8 {
                let r = c.get(&url).header("x-api-key", key).send().await.unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    });
    for s in sends.collect::<Vec<_>>() {
        s.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let (lines, skipped) = loop {
        let (lines, skipped) = tail_counts(&seen);
        let (lines, skipped) = (lines - before.0, skipped - before.1);
        if lines as u64 + skipped >= burst {
            break (lines, skipped);
        }
        let chunk = tokio::time::timeout_at(deadline.into(), events.next()).await;
        let chunk = chunk.expect("the tail went on").unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    };
    assert_eq!(
        lines as u64 + skipped,
        burst,
        "{lines} lines, {skipped} skipped"
    );
    eprintln!("burst of {burst}: {lines} lines in the tail, {skipped} skipped");
    assert!(lines >= 100, "{lines} lines, {skipped} skipped");
}

#[test]
fn off_by_default_and_refused_off_loopback_without_a_token() {
    let backend = mock_backend::spawn();
    // Without an `admin` section the gateway listens on its own port only.
    let g = Gateway::start(&one_route_yaml(None), &backend.url());
    let out = std::process::Command::new("ss")
        .args(["-ltnpH"])
        .output()
        .unwrap();
    let mine = format!("pid={},", g.pid());
    let listening = String::from_utf8_lossy(&out.stdout);
    let ports: Vec<&str> = listening.lines().filter(|l| l.contains(&mine)).collect();
    assert_eq!(ports.len(), 1, "{ports:?}");
    let dir = tempfile::tempdir().unwrap();
    let check = |admin: &str| {
        let config = dir.path().join("c.yaml");
        let yaml = format!(
            "gateway: {{listen: \"127.0.0.1:1\"}}\n{admin}\nroutes:\n  - {{path: \"/*\", backend_url: \"http://127.0.0.1:2\"}}\n"
        );
        std::fs::write(&config, yaml).unwrap();
        let out = clawgate(&["check", "--config", config.to_str().unwrap()]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = check("admin: {listen: \"0.0.0.0:9901\"}");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("c.yaml:2") && err.contains("admin.listen") && err.contains("admin.token"),
        "{err}"
    );
    let (code, err) = check("admin: {listen: \"0.0.0.0:9901\", token: \"short\"}");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("admin.token"), "{err}");
    let (code, err) =
        check("admin: {listen: \"0.0.0.0:9901\", token: \"a-long-enough-admin-token\"}");
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = check("admin: {listen: \"127.0.0.1:9901\"}");
    assert_eq!(code, Some(0), "{err}");
}
