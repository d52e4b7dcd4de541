//! The semantic cache end to end (DESIGN §5.1): the real binary, the real all-MiniLM-L6-v2 model,
//! the mock backend counting the chat calls that reach it.

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
  strategy: semantic
  ttl: "10m"
  # Other test binaries share the two cores: room for a slow embedding.
  semantic: {embed_timeout: "2s"}
routes:
  - path: "/shared/*"
    backend_url: "{backend}"
    strip_prefix: true
    auth_required: true
    caching: {enabled: true, shared: true}
  - path: "/shadow/*"
    backend_url: "{backend}"
    strip_prefix: true
    auth_required: true
    caching: {enabled: true, semantic: {mode: shadow}}
  - path: "/entities/*"
    backend_url: "{backend}"
    strip_prefix: true
    auth_required: true
    caching: {enabled: true, semantic: {threshold: 0.6, guards: [entities]}}
  - path: "/small/*"
    backend_url: "{backend}"
    strip_prefix: true
    auth_required: true
    caching: {enabled: true, semantic: {max_entries: 3}}
  - path: "/down/*"
    backend_url: "{backend}"
    strip_prefix: true
    auth_required: true
    caching: {enabled: true, semantic: {embedder: {kind: openai, url: "http://127.0.0.1:1/v1"}}}
  - path: "/slow/*"
    backend_url: "{backend}"
    strip_prefix: true
    auth_required: true
    caching:
      enabled: true
      semantic: {embed_timeout: "100ms", embedder: {kind: openai, url: "{backend}/slow/v1"}}
  - path: "/*"
    backend_url: "{backend}"
    auth_required: true
    caching: {enabled: true}
monitoring:
  metrics: {enabled: true}
  logging: {output: "{dir}/access.log"}
"#;

const CHAT: &str = "/v1/chat/completions";

fn model_dir() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "run scripts/fetch-model.sh"
    );
    dir.display().to_string()
}

fn start(backend: &mock_backend::Running) -> Gateway {
    Gateway::start_with(
        YAML,
        &backend.url(),
        &[("CLAWGATE_MODEL_DIR", &model_dir())],
    )
}

fn chat(question: &str) -> Value {
    json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are the finance assistant."},
            {"role": "user", "content": question}
        ]
    })
}

struct Answer {
    status: u16,
    x_cache: String,
    similarity: Option<f32>,
    content_type: String,
    body: String,
}

async fn ask_with(g: &Gateway, path: &str, key: &str, body: &Value, answer: &str) -> Answer {
    let mut rb = client()
        .post(g.url(path))
        .header("x-api-key", key)
        .json(body);
    if !answer.is_empty() {
        rb = rb.header("x-mock-answer", answer);
    }
    let r = rb.send().await.expect("request");
    let header = |n: &str| {
        (r.headers().get(n))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (x_cache, similarity) = (header("x-cache"), header("x-cache-similarity"));
    let content_type = header("content-type");
    Answer {
        status: r.status().as_u16(),
        x_cache,
        similarity: similarity.parse().ok(),
        content_type,
        body: r.text().await.unwrap_or_default(),
    }
}

async fn ask(g: &Gateway, path: &str, key: &str, question: &str) -> Answer {
    ask_with(g, path, key, &chat(question), "").await
}

/// The value of a metric line that contains every one of `parts` (0 when there is none).
fn metric(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn paraphrases_hit_and_near_misses_go_to_the_backend() {
    let backend = mock_backend::spawn();
    let g = start(&backend);
    let calls = || backend.stats.count(CHAT);

    let first = ask(&g, CHAT, "key-a", "What is the refund policy?").await;
    assert_eq!((first.status, first.x_cache.as_str()), (200, "MISS"));
    assert_eq!(calls(), 1);
    let again = ask(&g, CHAT, "key-a", "What is the refund policy?").await;
    assert_eq!((again.x_cache.as_str(), again.similarity), ("HIT", None));
    assert_eq!(again.body, first.body);
    let para = ask(&g, CHAT, "key-a", "Tell me the refund policy").await;
    assert_eq!((para.status, para.x_cache.as_str()), (200, "HIT-SEMANTIC"));
    assert!(
        para.similarity.is_some_and(|s| (0.9..=1.0).contains(&s)),
        "{:?}",
        para.similarity
    );
    assert_eq!(para.body, first.body);
    assert_eq!(calls(), 1, "a hit never reaches the backend");

    // Unrelated, another number, a negation, another identifier: each goes to the backend.
    ask(&g, CHAT, "key-a", "Should I approve the refund?").await;
    ask(&g, CHAT, "key-a", "Show the invoices of March 2024").await;
    let before = calls();
    for q in [
        "What is the weather in Paris tomorrow?",
        "Show the invoices of April 2024",
        "Should I not approve the refund?",
    ] {
        let a = ask(&g, CHAT, "key-a", q).await;
        assert_eq!((a.status, a.x_cache.as_str()), (200, "MISS"), "{q}");
    }
    assert_eq!(calls(), before + 3);
    ask(&g, CHAT, "key-a", "What is the status of order ABC-123?").await;
    let other = ask(&g, CHAT, "key-a", "What is the status of order ABC-124?").await;
    assert_eq!(other.x_cache, "MISS");

    // Another agent, another model, another system prompt: other partitions.
    let b = ask(&g, CHAT, "key-b", "Tell me the refund policy").await;
    assert_eq!(b.x_cache, "MISS");
    let mut body = chat("Tell me the refund policy");
    body["model"] = "gpt-4o-mini".into();
    assert_eq!(ask_with(&g, CHAT, "key-a", &body, "").await.x_cache, "MISS");
    let mut body = chat("Tell me the refund policy");
    body["messages"][0]["content"] = "You are the HR assistant.".into();
    assert_eq!(ask_with(&g, CHAT, "key-a", &body, "").await.x_cache, "MISS");

    let m = metrics_text(&g).await;
    let route = "route=\"/*\"";
    assert_eq!(
        metric(&m, "openclaw_gateway_cache_semantic_hits_total", &[route]),
        1.0
    );
    let guarded = "openclaw_gateway_cache_semantic_guarded_total";
    assert!(
        metric(&m, guarded, &[route, "guard=\"numbers\""]) >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, guarded, &[route, "guard=\"negation\""]) >= 1.0,
        "{m}"
    );
    let misses = "openclaw_gateway_cache_semantic_misses_total";
    assert!(
        metric(&m, misses, &[route, "reason=\"empty\""]) >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, misses, &[route, "reason=\"guarded\""]) >= 2.0,
        "{m}"
    );
    assert!(metric(&m, "openclaw_gateway_cache_embed_seconds_count", &[route]) >= 5.0);

    // The log line names the request whose answer was served, and how similar it was.
    let log = wait_for_log(&g, "HIT-SEMANTIC").await;
    let line: Value = serde_json::from_str(&log).expect("json line");
    assert!(line["cache_similarity"].as_f64().is_some_and(|s| s >= 0.9));
    let source = line["cache_source_request_id"].as_str().expect("source");
    let all = std::fs::read_to_string(g.dir.path().join("access.log")).unwrap();
    let stored = all
        .lines()
        .find(|l| l.contains("\"cache\":\"MISS\""))
        .expect("the first request's line");
    assert!(stored.contains(source), "{source} not in {stored}");
}

async fn wait_for_log(g: &Gateway, needle: &str) -> String {
    let path = g.dir.path().join("access.log");
    for _ in 0..100 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no log line with {needle}");
}

#[tokio::test]
async fn shared_routes_serve_every_agent_and_guards_see_entities() {
    let backend = mock_backend::spawn();
    let g = start(&backend);
    let path = "/shared/v1/chat/completions";
    ask(&g, path, "key-a", "How do I reset my password?").await;
    let b = ask(&g, path, "key-b", "What is the way to reset my password?").await;
    assert_eq!(b.x_cache, "HIT-SEMANTIC");
    assert_eq!(backend.stats.count(CHAT), 1);

    // What the semantic cache does not take (a GET) is the response cache's, as on any route.
    let get = |k: &'static str| {
        let url = g.url("/cache/tool?x=1");
        async move {
            let r = client()
                .get(url)
                .header("x-api-key", k)
                .send()
                .await
                .unwrap();
            r.headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_string())
        }
    };
    assert_eq!(get("key-a").await.as_deref(), Some("MISS"));
    assert_eq!(get("key-a").await.as_deref(), Some("HIT"));

    // Chinese, which all-MiniLM-L6-v2 does not read: exact repeats only.
    let zh = "/v1/chat/completions";
    assert_eq!(
        ask(&g, zh, "key-b", "如何重置我的密码?").await.x_cache,
        "MISS"
    );
    assert_eq!(
        ask(&g, zh, "key-b", "如何重置我的密码?").await.x_cache,
        "HIT"
    );
    assert_eq!(
        ask(&g, zh, "key-b", "怎样才能重置我的密码?").await.x_cache,
        "MISS"
    );
    let m = metrics_text(&g).await;
    let misses = "openclaw_gateway_cache_semantic_misses_total";
    assert_eq!(
        metric(&m, misses, &["reason=\"uncovered_script\""]),
        2.0,
        "{m}"
    );

    // At a threshold this low the names are all that tell the questions apart.
    let path = "/entities/v1/chat/completions";
    ask(&g, path, "key-a", "What did Alice say about the launch?").await;
    let bob = ask(&g, path, "key-a", "What did Bob say about the launch?").await;
    assert_eq!(bob.x_cache, "MISS");
    let m = metrics_text(&g).await;
    let route = "route=\"/entities/*\"";
    let guarded = "openclaw_gateway_cache_semantic_guarded_total";
    assert_eq!(
        metric(&m, guarded, &[route, "guard=\"entities\""]),
        1.0,
        "{m}"
    );
}

#[tokio::test]
async fn shadow_mode_serves_only_exact_repeats_and_counts_verdicts() {
    let backend = mock_backend::spawn();
    let g = start(&backend);
    let path = "/shadow/v1/chat/completions";
    let q = chat("How do I reset my password?");
    ask_with(&g, path, "key-a", &q, "Open settings and choose reset.").await;
    let exact = ask_with(&g, path, "key-a", &q, "unused").await;
    assert_eq!(exact.x_cache, "HIT", "shadow mode still serves exact hits");
    assert_eq!(backend.stats.count(CHAT), 1);

    // Would have been served, and the backend says the same: agree.
    let same = chat("What is the way to reset my password?");
    let a = ask_with(&g, path, "key-a", &same, "Open settings and choose reset.").await;
    assert_eq!(a.x_cache, "MISS");
    assert!(a.body.contains("choose reset"));
    // Would have been served, and the backend says something else entirely: disagree.
    let other = chat("How can I reset my password?");
    let d = ask_with(&g, path, "key-a", &other, "The weather in Paris is sunny.").await;
    assert_eq!(d.x_cache, "MISS");
    assert!(d.body.contains("Paris"));
    assert_eq!(backend.stats.count(CHAT), 3);

    let shadow = "openclaw_gateway_cache_semantic_shadow_total";
    let route = "route=\"/shadow/*\"";
    let mut m = String::new();
    for _ in 0..100 {
        m = metrics_text(&g).await;
        if metric(&m, shadow, &[route]) >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&m, shadow, &[route, "outcome=\"agree\""]),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, shadow, &[route, "outcome=\"disagree\""]),
        1.0,
        "{m}"
    );
    let hits = "openclaw_gateway_cache_semantic_hits_total";
    assert_eq!(metric(&m, hits, &[route]), 0.0);
}

#[tokio::test]
async fn streams_are_replayed_as_sse_and_cut_streams_are_not_kept() {
    let backend = mock_backend::spawn();
    let g = start(&backend);
    let stream = |q: &str| {
        let mut body = chat(q);
        body["stream"] = true.into();
        body["mock_interval_ms"] = 5.into();
        body
    };
    let first = ask_with(
        &g,
        CHAT,
        "key-a",
        &stream("How do I reset my password?"),
        "",
    )
    .await;
    assert_eq!(first.x_cache, "MISS");
    assert!(first.body.ends_with("data: [DONE]\n\n"), "{}", first.body);
    let para = stream("What is the way to reset my password?");
    let replay = ask_with(&g, CHAT, "key-a", &para, "").await;
    assert_eq!(replay.x_cache, "HIT-SEMANTIC");
    assert!(replay.content_type.starts_with("text/event-stream"));
    assert_eq!(replay.body, first.body);
    // A non-streamed question is another partition.
    let plain = ask(&g, CHAT, "key-a", "What is the way to reset my password?").await;
    assert_eq!(plain.x_cache, "MISS");
    assert_eq!(backend.stats.count(CHAT), 2);

    // A stream the backend breaks off is never stored.
    let mut cut = stream("Which invoices are overdue?");
    cut["mock_fail_after"] = 3.into();
    let _ = client()
        .post(g.url(CHAT))
        .header("x-api-key", "key-a")
        .json(&cut)
        .send()
        .await
        .map(|r| async { r.text().await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = client()
        .post(g.url(CHAT))
        .header("x-api-key", "key-a")
        .json(&cut)
        .send()
        .await
        .expect("request");
    assert_eq!(
        again.headers().get("x-cache").and_then(|v| v.to_str().ok()),
        Some("MISS")
    );
}

#[tokio::test]
async fn embedder_down_or_slow_is_a_miss_and_the_bound_holds() {
    let backend = mock_backend::spawn();
    let g = start(&backend);
    for (path, reason) in [
        ("/down/v1/chat/completions", "embed_failed"),
        ("/slow/v1/chat/completions", "embed_timeout"),
    ] {
        for q in [
            "How do I reset my password?",
            "What is the way to reset my password?",
        ] {
            let started = std::time::Instant::now();
            let a = ask(&g, path, "key-a", q).await;
            assert_eq!((a.status, a.x_cache.as_str()), (200, "MISS"), "{path}");
            assert!(started.elapsed() < Duration::from_secs(1), "{path}");
        }
        // Exact repeats are still answered: they need no embedding.
        let a = ask(&g, path, "key-a", "How do I reset my password?").await;
        assert_eq!(a.x_cache, "HIT", "{path}");
        let m = metrics_text(&g).await;
        let misses = "openclaw_gateway_cache_semantic_misses_total";
        assert_eq!(
            metric(&m, misses, &[&format!("reason=\"{reason}\"")]),
            2.0,
            "{m}"
        );
    }

    // `max_entries: 3`: the first of five questions is gone, the last is kept.
    let path = "/small/v1/chat/completions";
    let questions = [
        "Which invoices are overdue?",
        "List the open support tickets",
        "What is our refund policy?",
        "Who approved the last budget change?",
        "Summarise the incident report for the API outage",
    ];
    for q in questions {
        ask(&g, path, "key-a", q).await;
    }
    assert_eq!(ask(&g, path, "key-a", questions[4]).await.x_cache, "HIT");
    assert_eq!(ask(&g, path, "key-a", questions[0]).await.x_cache, "MISS");
}

/// The article's cache mode 4, as written (only Redis's port is the test's own), in front of
/// agents that sign in with API keys: `X-Agent-ID` is then the gateway's (a client's own is
/// replaced, so it cannot reach another agent's partition).
const SEED_MODE_4: &str = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents:
  "planner": {api_key: "key-planner"}
  "coder": {api_key: "key-coder"}
caching:
  strategy: "semantic" # 语义缓存,相似问题也命中
  ttl: "10m"
  cache_key:
    - "request_body.query"
    - "request_headers.X-Agent-ID"
  store: "redis://localhost:6379"
routes:
  - path: "/cache/*"
    backend_url: "{backend}"
    auth_required: true
    caching: {enabled: true}
"#;

async fn query(g: &Gateway, agent: &str, q: &str) -> (u16, String, String) {
    let r = client()
        .post(g.url("/cache/search"))
        .header("x-api-key", format!("key-{agent}"))
        .json(&json!({"query": q}))
        .send()
        .await
        .expect("request");
    let x_cache = (r.headers().get("x-cache"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        r.status().as_u16(),
        x_cache,
        r.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn seed_mode_4_shares_entries_between_instances_through_redis() {
    let mut redis = Redis::start();
    let backend = mock_backend::spawn();
    let yaml = SEED_MODE_4.replace("localhost:6379", &format!("127.0.0.1:{}", redis.port));
    let env = [("CLAWGATE_MODEL_DIR", model_dir())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Gateway::start_with(&yaml, &backend.url(), &env);
    let b = Gateway::start_with(&yaml, &backend.url(), &env);
    let calls = || backend.stats.count("/cache/search");

    let first = query(&a, "planner", "How do I reset my password?").await;
    assert_eq!((first.0, first.1.as_str()), (200, "MISS"));
    // The entry reaches Redis just after the answer; the other instance then serves it.
    for _ in 0..100 {
        if redis.command(&["DBSIZE"]).as_deref() == Some(":1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = query(&b, "planner", "How do I reset my password?").await;
    assert_eq!(seen.1, "HIT");
    assert_eq!(seen.2, first.2, "the answer stored by the other instance");
    let para = query(&b, "planner", "What is the way to reset my password?").await;
    assert_eq!(para.1, "HIT-SEMANTIC");
    assert_eq!(para.2, first.2);
    // Another X-Agent-ID is another partition.
    assert_eq!(
        query(&b, "coder", "How do I reset my password?").await.1,
        "MISS"
    );
    assert_eq!(calls(), 2, "the first question and the other agent's");

    // A purge of the route empties this instance's index and the shared streams (once the
    // other agent's entry, stored just after its answer, is there too).
    for _ in 0..100 {
        if redis.command(&["DBSIZE"]).as_deref() == Some(":2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let purged = client()
        .delete(b.url("/cache"))
        .json(&json!({"route": "/cache/*"}))
        .send()
        .await
        .expect("purge");
    assert_eq!(purged.status(), 200);
    assert_eq!(redis.command(&["DBSIZE"]).as_deref(), Some(":0"));
    assert_eq!(
        query(&b, "planner", "How do I reset my password?").await.1,
        "MISS"
    );
    assert_eq!(calls(), 3);

    // Redis gone: questions are answered by the backend, never with an error.
    redis.stop();
    let started = std::time::Instant::now();
    let down = query(&a, "planner", "Which invoices are overdue?").await;
    assert_eq!((down.0, down.1.as_str()), (200, "MISS"));
    assert!(started.elapsed() < Duration::from_secs(1));
    // What an instance already mirrors is still served.
    assert_eq!(
        query(&b, "planner", "How can I reset my password?").await.1,
        "HIT-SEMANTIC"
    );
}
