//! The response cache with the real binary and the mock backend (which counts what reaches it).

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const YAML: &str = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents:
  "agent-a": {api_key: "key-a"}
  "agent-b": {api_key: "key-b"}
caching:
  ttl: "2s"
  cache_key: ["request_body.query", "request_headers.X-Tenant"]
routes:
  - path: "/shared/*"
    backend_url: "{backend}"
    auth_required: true
    caching: {enabled: true, shared: true}
  - path: "/plain/*"
    backend_url: "{backend}"
    auth_required: true
  - path: "/*"
    backend_url: "{backend}"
    auth_required: true
    caching: {enabled: true}
monitoring:
  metrics: {enabled: true}
  logging: {output: "{dir}/access.log"}
"#;

struct Answer {
    status: u16,
    x_cache: String,
    age: Option<String>,
    body: Value,
}

async fn send(rb: reqwest::RequestBuilder) -> Answer {
    let r = rb.send().await.expect("request");
    let header = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (x_cache, age) = (header("x-cache").unwrap_or_default(), header("age"));
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        x_cache,
        age,
        body,
    }
}

async fn get(g: &Gateway, path: &str, key: &str) -> Answer {
    send(client().get(g.url(path)).header("x-api-key", key)).await
}

async fn post(g: &Gateway, path: &str, key: &str, body: Value) -> Answer {
    send(
        client()
            .post(g.url(path))
            .header("x-api-key", key)
            .json(&body),
    )
    .await
}

#[tokio::test]
async fn get_hit_within_ttl_miss_after_and_agents_apart() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(YAML, &backend.url());
    let count = || backend.stats.count("/cache/a");

    let first = get(&g, "/cache/a", "key-a").await;
    assert_eq!((first.status, first.x_cache.as_str()), (200, "MISS"));
    let second = get(&g, "/cache/a", "key-a").await;
    assert_eq!((second.status, second.x_cache.as_str()), (200, "HIT"));
    assert_eq!(second.body, first.body, "the stored answer");
    assert!(second.age.is_some(), "Age on a hit");
    assert_eq!(count(), 1);

    // Agent B never sees agent A's answer.
    let b = get(&g, "/cache/a", "key-b").await;
    assert_eq!(b.x_cache, "MISS");
    assert_ne!(b.body["serial"], first.body["serial"]);
    assert_eq!(count(), 2);

    // The same query in another order is the same entry.
    let q1 = get(&g, "/cache/q?x=1&y=2", "key-a").await;
    let q2 = get(&g, "/cache/q?y=2&x=1", "key-a").await;
    assert_eq!((q1.x_cache.as_str(), q2.x_cache.as_str()), ("MISS", "HIT"));

    // A client's no-cache goes to the backend and refreshes the entry.
    let fresh = send(
        client()
            .get(g.url("/cache/a"))
            .header("x-api-key", "key-a")
            .header("cache-control", "no-cache"),
    )
    .await;
    assert_eq!(fresh.x_cache, "EXPIRED");
    assert_eq!(count(), 3);
    let after = get(&g, "/cache/a", "key-a").await;
    assert_eq!(after.x_cache, "HIT");
    assert_eq!(after.body["serial"], fresh.body["serial"]);

    // Past the 2 s ttl: a miss again.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let expired = get(&g, "/cache/a", "key-a").await;
    assert_eq!(expired.x_cache, "MISS");
    assert_eq!(count(), 4);

    // Shared routes share between agents; routes without caching say nothing.
    assert_eq!(get(&g, "/shared/cache/s", "key-a").await.x_cache, "MISS");
    assert_eq!(get(&g, "/shared/cache/s", "key-b").await.x_cache, "HIT");
    assert_eq!(backend.stats.count("/shared/cache/s"), 1);
    let plain = get(&g, "/plain/cache/p", "key-a").await;
    assert_eq!((plain.status, plain.x_cache.as_str()), (200, ""));

    // The log line and the metrics say what the cache did.
    let metrics = metrics_text(&g).await;
    assert!(
        metrics.contains("openclaw_gateway_cache_hits_total{route=\"/*\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("openclaw_gateway_cache_misses_total{route=\"/*\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("openclaw_gateway_cache_bypasses_total{route=\"/*\"} 0")
            || !metrics.contains("openclaw_gateway_cache_bypasses_total{route=\"/*\"}"),
        "no bypass yet"
    );
    let stored = metrics
        .lines()
        .find_map(|l| l.strip_prefix("openclaw_gateway_cache_stored_bytes "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(stored > 0, "{metrics}");
    let log = wait_for_log(&g, 12).await;
    let caches: Vec<&str> = log.iter().filter_map(|l| l["cache"].as_str()).collect();
    assert_eq!(
        caches.iter().filter(|c| **c == "HIT").count(),
        4,
        "{caches:?}"
    );
}

async fn wait_for_log(g: &Gateway, lines: usize) -> Vec<Value> {
    let path = g.dir.path().join("access.log");
    let mut got = Vec::new();
    for _ in 0..100 {
        got = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "access")
            .collect();
        if got.len() >= lines {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

#[tokio::test]
async fn concurrent_identical_misses_make_one_backend_call() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(YAML, &backend.url());
    let body = json!({"query": "weather in Paris", "temperature": 0});
    let mut tasks = Vec::new();
    for i in 0..100 {
        let url = g.url("/cache/slow?delay_ms=300");
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let rb = if i % 2 == 0 {
                client().get(url)
            } else {
                client().post(url).json(&body)
            };
            send(rb.header("x-api-key", "key-a")).await
        }));
    }
    let mut by_method: [Vec<Value>; 2] = [Vec::new(), Vec::new()];
    for (i, t) in tasks.into_iter().enumerate() {
        let a = t.await.expect("task");
        assert_eq!(a.status, 200, "{}", a.body);
        by_method[i % 2].push(a.body);
    }
    let calls = backend.stats.count("/cache/slow");
    assert!(
        (2..=4).contains(&calls),
        "one GET and one POST (2 at most each): {calls}"
    );
    for answers in &by_method {
        assert!(answers.iter().all(|a| a == &answers[0]), "one body for all");
    }
    assert_eq!(by_method[0][0]["method"], "GET");
    assert_eq!(by_method[1][0]["method"], "POST");
}

#[tokio::test]
async fn post_keys_and_large_bodies() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(YAML, &backend.url());
    let a = post(
        &g,
        "/cache/p",
        "key-a",
        json!({"query": "q1", "temperature": 0}),
    )
    .await;
    assert_eq!(a.x_cache, "MISS");
    let b = post(
        &g,
        "/cache/p",
        "key-a",
        json!({"temperature": 1, "query": "q1"}),
    )
    .await;
    assert_eq!(b.x_cache, "HIT", "only the query counts");
    let c = post(&g, "/cache/p", "key-a", json!({"query": "q2"})).await;
    assert_eq!(c.x_cache, "MISS");
    assert_eq!(backend.stats.count("/cache/p"), 2);
    // A header named in cache_key separates entries.
    let t = send(
        client()
            .post(g.url("/cache/p"))
            .header("x-api-key", "key-a")
            .header("x-tenant", "t1")
            .json(&json!({"query": "q1"})),
    )
    .await;
    assert_eq!(t.x_cache, "MISS");

    // 100 KB: proxied intact, not cached.
    let big: String = (0..100_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    for _ in 0..2 {
        let r = client()
            .post(g.url("/echo/big"))
            .header("x-api-key", "key-a")
            .body(big.clone())
            .send()
            .await
            .expect("big post");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-cache"], "BYPASS");
        let last = backend.stats.last().expect("recorded");
        assert_eq!(last["body"].as_str(), Some(big.as_str()), "byte for byte");
    }
    assert_eq!(backend.stats.count("/echo/big"), 2);

    // A body without a length is not read ahead either.
    let chunks =
        futures_util::stream::iter(vec![Ok::<_, std::io::Error>("{\"query\":"), Ok("\"q1\"}")]);
    let r = client()
        .post(g.url("/echo/chunked"))
        .header("x-api-key", "key-a")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("chunked post");
    assert_eq!(r.headers()["x-cache"], "BYPASS");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["body"], "{\"query\":\"q1\"}");
}

#[tokio::test]
async fn uncacheable_responses_are_not_stored() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(YAML, &backend.url());
    for (path, what) in [
        ("/cache/n1?cc=no-store", "no-store"),
        ("/cache/n2?cc=private,max-age=60", "private"),
        ("/cache/n3?cookie=1", "Set-Cookie"),
        ("/cache/n4?status=500", "500"),
        ("/cache/n5?status=404", "404"),
    ] {
        for _ in 0..2 {
            let a = get(&g, path, "key-a").await;
            assert_eq!(a.x_cache, "MISS", "{what}");
        }
        let p = path.split('?').next().unwrap_or(path);
        assert_eq!(backend.stats.count(p), 2, "{what}");
    }
    // A shorter upstream max-age wins over the route's ttl.
    assert_eq!(
        get(&g, "/cache/m?cc=max-age=1", "key-a").await.x_cache,
        "MISS"
    );
    assert_eq!(
        get(&g, "/cache/m?cc=max-age=1", "key-a").await.x_cache,
        "HIT"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        get(&g, "/cache/m?cc=max-age=1", "key-a").await.x_cache,
        "MISS"
    );

    // Vary: one entry per value of the named header.
    let with = |v: &'static str| {
        client()
            .get(g.url("/cache/v?vary=x-mode"))
            .header("x-api-key", "key-a")
            .header("x-mode", v)
    };
    assert_eq!(send(with("a")).await.x_cache, "MISS");
    assert_eq!(send(with("b")).await.x_cache, "MISS");
    assert_eq!(send(with("a")).await.x_cache, "HIT");
    assert_eq!(send(with("b")).await.x_cache, "HIT");
    assert_eq!(backend.stats.count("/cache/v"), 2);

    // A client's no-store bypasses; HEAD passes through.
    let ns = send(
        client()
            .get(g.url("/cache/ns"))
            .header("x-api-key", "key-a")
            .header("cache-control", "no-store"),
    )
    .await;
    assert_eq!(ns.x_cache, "BYPASS");
}

#[test]
fn cache_settings_are_checked() {
    let dir = tempfile::tempdir().expect("dir");
    let check = |yaml: &str| {
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).expect("write");
        let out = clawgate(&["check", "--config", path.to_str().expect("path")]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout),
        )
    };
    let (code, text) = check(
        "routes:\n  - path: /x\n    backend_url: http://127.0.0.1:1\n    caching: {enabled: true, cache_key: [\"query\"]}\n",
    );
    assert_ne!(code, Some(0));
    assert!(text.contains("routes[0].caching.cache_key[0]"), "{text}");
    assert!(text.contains("c.yaml:4:"), "{text}");
    let (code, text) = check(
        "caching: {max_object_size: 100MB}\nroutes:\n  - {path: /x, backend_url: \"http://127.0.0.1:1\"}\n",
    );
    assert_ne!(code, Some(0));
    assert!(text.contains("caching.max_object_size"), "{text}");
}

#[tokio::test]
async fn instances_share_entries_through_redis_and_answer_without_it() {
    let backend = mock_backend::spawn();
    let mut redis = Redis::start();
    let yaml = format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
agents:
  "agent-a": {{api_key: "key-a"}}
caching: {{ttl: "30s", store: "{}", store_timeout: "100ms"}}
routes:
  - path: "/*"
    backend_url: "{{backend}}"
    auth_required: true
    caching: {{enabled: true}}
"#,
        redis.url()
    );
    let one = Gateway::start(&yaml, &backend.url());
    let two = Gateway::start(&yaml, &backend.url());

    let a = get(&one, "/cache/r", "key-a").await;
    assert_eq!(a.x_cache, "MISS");
    let b = get(&two, "/cache/r", "key-a").await;
    assert_eq!(b.x_cache, "HIT", "stored by the other instance");
    assert_eq!(b.body, a.body);
    assert_eq!(backend.stats.count("/cache/r"), 1);
    let keys = redis.command(&["DBSIZE"]).unwrap_or_default();
    assert_eq!(keys, ":1", "one value per entry");

    // Redis gone: answers still come (from the backend), quickly, never a 5xx.
    redis.stop();
    for i in 0..6 {
        let started = std::time::Instant::now();
        let r = get(&two, &format!("/cache/down{}", i % 2), "key-a").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    assert!(backend.stats.count("/cache/down0") >= 1);

    // Back: entries are shared again.
    redis.restart();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut shared = false;
    for _ in 0..20 {
        let _ = get(&one, "/cache/back", "key-a").await;
        if get(&two, "/cache/back", "key-a").await.x_cache == "HIT" {
            shared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(shared, "the shared cache is used again after Redis returns");
}

#[tokio::test]
async fn purges_need_an_admin_and_remove_entries() {
    let backend = mock_backend::spawn();
    // Loopback is not an admin network here: only the admin scope may purge.
    let yaml = YAML
        .replace(
            "\"agent-b\": {api_key: \"key-b\"}",
            "\"agent-b\": {api_key: \"key-b\"}\n  \"ops\": {api_key: \"key-ops\", scopes: [\"admin\"]}",
        )
        .replace(
            "  ttl: \"2s\"",
            "  ttl: \"60s\"\n  admin_networks: [\"192.0.2.0/24\"]",
        );
    let g = Gateway::start(&yaml, &backend.url());
    let purge = |key: &str, agent: Option<&str>| {
        let mut rb = client()
            .request(
                reqwest::Method::from_bytes(b"PURGE").expect("method"),
                g.url("/cache/p1"),
            )
            .header("x-api-key", key);
        if let Some(a) = agent {
            rb = rb.header("x-purge-agent", a);
        }
        rb
    };
    assert_eq!(get(&g, "/cache/p1", "key-a").await.x_cache, "MISS");
    assert_eq!(get(&g, "/cache/p1", "key-a").await.x_cache, "HIT");

    let refused = purge("key-a", Some("agent-a")).send().await.expect("purge");
    assert_eq!(refused.status(), 403);
    let v: Value = refused.json().await.expect("json");
    assert_json_error(&v, 403, "forbidden");
    assert_eq!(
        get(&g, "/cache/p1", "key-a").await.x_cache,
        "HIT",
        "still cached"
    );

    // Another agent's entry is not this one.
    let other = purge("key-ops", Some("agent-b"))
        .send()
        .await
        .expect("purge");
    assert_eq!(other.status(), 404);
    let done = purge("key-ops", Some("agent-a"))
        .send()
        .await
        .expect("purge");
    assert_eq!(done.status(), 200);
    assert_eq!(get(&g, "/cache/p1", "key-a").await.x_cache, "MISS");

    // DELETE {base_path}/cache: one URL, then a whole route.
    let delete = |key: &str, body: Value| {
        client()
            .delete(g.url("/cache"))
            .header("x-api-key", key)
            .json(&body)
    };
    assert_eq!(get(&g, "/cache/p2?x=1", "key-a").await.x_cache, "MISS");
    let r = delete(
        "key-ops",
        json!({"url": "/cache/p2?x=1", "agent": "agent-a"}),
    )
    .send()
    .await
    .expect("delete");
    assert_eq!(r.status(), 200);
    assert_eq!(get(&g, "/cache/p2?x=1", "key-a").await.x_cache, "MISS");
    assert_eq!(get(&g, "/cache/p2?x=1", "key-a").await.x_cache, "HIT");
    assert_eq!(get(&g, "/cache/p3", "key-b").await.x_cache, "MISS");
    assert_eq!(
        delete("key-b", json!({"route": "/*"}))
            .send()
            .await
            .expect("delete")
            .status(),
        403
    );
    let r = delete("key-ops", json!({"route": "/*"}))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 200);
    assert_eq!(get(&g, "/cache/p2?x=1", "key-a").await.x_cache, "MISS");
    assert_eq!(get(&g, "/cache/p3", "key-b").await.x_cache, "MISS");
    assert_eq!(get(&g, "/shared/cache/s", "key-a").await.x_cache, "MISS");
    assert_eq!(
        get(&g, "/shared/cache/s", "key-a").await.x_cache,
        "HIT",
        "other routes keep theirs"
    );
    let bad = delete("key-ops", json!({"what": 1}))
        .send()
        .await
        .expect("delete");
    assert_eq!(bad.status(), 400);
    let r = delete("key-ops", json!({"route": "/nope/*"}))
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn the_cli_purges_a_route_from_this_host() {
    let backend = mock_backend::spawn();
    let mut redis = Redis::start();
    let yaml = format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
caching: {{ttl: "60s", store: "{}"}}
routes:
  - {{path: "/*", backend_url: "{{backend}}", caching: {{enabled: true}}}}
"#,
        redis.url()
    );
    let g = Gateway::start(&yaml, &backend.url());
    let anon = |path: &str| send(client().get(g.url(path)));
    assert_eq!(anon("/cache/c1").await.x_cache, "MISS");
    assert_eq!(anon("/cache/c2").await.x_cache, "MISS");
    assert_eq!(redis.command(&["DBSIZE"]).as_deref(), Some(":2"));
    let out = clawgate(&[
        "cache",
        "purge",
        "--config",
        g.config_str(),
        "--route",
        "/*",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"purged\":\"route\""));
    assert_eq!(redis.command(&["DBSIZE"]).as_deref(), Some(":0"));
    assert_eq!(anon("/cache/c1").await.x_cache, "MISS");
    let out = clawgate(&[
        "cache",
        "purge",
        "--config",
        g.config_str(),
        "--url",
        "/cache/zzz",
    ]);
    assert_eq!(out.status.code(), Some(1), "nothing cached there");
    redis.stop();
}

#[tokio::test]
async fn waiters_go_upstream_themselves_after_the_lock_timeout() {
    let backend = mock_backend::spawn();
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
caching: {lock_timeout: "200ms"}
routes:
  - {path: "/*", backend_url: "{backend}", caching: {enabled: true, shared: true}}
"#;
    let g = Gateway::start(yaml, &backend.url());
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = g.url("/cache/slowest?delay_ms=1000");
        tasks.push(tokio::spawn(async move { send(client().get(url)).await }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task").status, 200);
    }
    // The waiters gave up after 200 ms and asked the backend themselves (with a 10 s lock
    // timeout the backend would see one request).
    assert!(backend.stats.count("/cache/slowest") > 1);
    assert!(started.elapsed() < Duration::from_millis(2500));
}
