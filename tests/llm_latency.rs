//! LLM latency as users feel it (issue 20, item 4): time to first token, time per output token
//! and tokens per second, by route and model, and `ttft_ms` in the access log. The real binary
//! in front of the mock backend's `/v1/chat/completions`, which opens a stream at once with a
//! comment and a role-only delta, sends its first word `mock_first_token_ms` later and the
//! others `mock_interval_ms` apart (a JSON answer comes `mock_first_token_ms` late).

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CHAT: &str = "/v1/chat/completions";
const TTFT: &str = "openclaw_gateway_llm_time_to_first_token_seconds";
const TPOT: &str = "openclaw_gateway_llm_time_per_output_token_seconds";
const TPS: &str = "openclaw_gateway_llm_tokens_per_second";
/// Seven words of four characters: 7 tokens by usage, and 28 / 4 = 7 by the estimate.
const ANSWER: &str = "abc abc abc abc abc abc abcd";

/// A histogram series' cumulative buckets `(le, count)`, in order.
fn buckets(text: &str, name: &str, route: &str, model: &str) -> Vec<(f64, u64)> {
    let labels = [format!("route=\"{route}\""), format!("model=\"{model}\"")];
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
        .filter(|l| labels.iter().all(|x| l.contains(x.as_str())))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

fn count(text: &str, name: &str, route: &str, model: &str) -> u64 {
    buckets(text, name, route, model).last().map_or(0, |b| b.1)
}

/// Asserts that the `n`th observation of a series (all alike) landed in the bucket of
/// `expected` seconds, or one next to it.
fn lands(text: &str, name: &str, (route, model): (&str, &str), n: u64, expected: f64) {
    let b = buckets(text, name, route, model);
    let got = b.iter().position(|(_, c)| *c >= n).expect("observed");
    let want = b
        .iter()
        .position(|(le, _)| expected <= *le)
        .unwrap_or(b.len() - 1);
    eprintln!("{name} #{n}: le={} (expected le={})", b[got].0, b[want].0);
    assert!(
        got.abs_diff(want) <= 1,
        "{name}: landed in le={} (expected le={} ±1 bucket): {b:?}",
        b[got].0,
        b[want].0
    );
}

/// The metrics text once `name`'s series for `route` and `model` counted `n`.
async fn metrics_once(g: &Gateway, name: &str, route: &str, model: &str, n: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = metrics_text(g).await;
        if count(&text, name, route, model) >= n {
            return text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ask(c: &reqwest::Client, url: &str, body: Value) -> (u16, String, String) {
    let r = c
        .post(url)
        .header("x-api-key", "key-fin")
        .header("x-mock-answer", ANSWER)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let cache = (r.headers().get("x-cache"))
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    (status, cache, r.text().await.unwrap_or_default())
}

fn chat(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hello"}]});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

/// The access log's lines for the route, once there are `n`.
async fn access_lines(g: &Gateway, n: usize) -> Vec<Value> {
    let path = g.dir.path().join("access.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<Value> = (text.lines())
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["type"] == "access" && l["route"] == "llm")
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_paced_stream_lands_in_its_buckets_and_a_json_answer_counts_its_arrival() {
    let backend = mock_backend::spawn();
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents:
  "fin": {api_key: "key-fin"}
routes:
  - {path: "/*", name: "llm", backend_url: "{backend}", auth_required: true}
monitoring:
  metrics: {enabled: true}
  logging: {output: "{dir}/access.log"}
"#;
    let g = Gateway::start(yaml, &backend.url());
    let c = client();
    let url = g.url(CHAT);
    let paced = json!({"stream": true, "mock_first_token_ms": 300, "mock_interval_ms": 50});

    // Seven words: the first 300 ms after the request, then one each 50 ms (the last at
    // 600 ms): TTFT 0.3 s, TPOT 0.3 s / 6 = 0.05 s, 7 tokens / 0.6 s = 11.7 tokens/s.
    let (status, _, body) = ask(&c, &url, chat("paced", paced.clone())).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with(": opening"), "{body}");
    let text = metrics_once(&g, TPS, "llm", "paced", 1).await;
    lands(&text, TTFT, ("llm", "paced"), 1, 0.3);
    lands(&text, TPOT, ("llm", "paced"), 1, 0.05);
    lands(&text, TPS, ("llm", "paced"), 1, 7.0 / 0.6);

    // The same stream without usage: its tokens are estimated from its text (28 chars / 4).
    let mut no_usage = paced.clone();
    no_usage["mock_no_usage"] = json!(true);
    let (status, _, _) = ask(&c, &url, chat("paced", no_usage)).await;
    assert_eq!(status, 200);
    let text = metrics_once(&g, TPS, "llm", "paced", 2).await;
    lands(&text, TTFT, ("llm", "paced"), 2, 0.3);
    lands(&text, TPOT, ("llm", "paced"), 2, 0.05);
    lands(&text, TPS, ("llm", "paced"), 2, 7.0 / 0.6);

    // A JSON answer 300 ms late: its arrival is its first token; no time per token.
    let (status, _, _) = ask(&c, &url, chat("whole", json!({"mock_first_token_ms": 300}))).await;
    assert_eq!(status, 200);
    let text = metrics_once(&g, TTFT, "llm", "whole", 1).await;
    lands(&text, TTFT, ("llm", "whole"), 1, 0.3);
    lands(&text, TPS, ("llm", "whole"), 1, 7.0 / 0.3);
    assert_eq!(count(&text, TPOT, "llm", "whole"), 0);

    // Not an LLM request (no messages): not timed, and its log line has no ttft_ms.
    let (status, _, _) = ask(&c, &g.url("/echo"), json!({"model": "echo"})).await;
    assert_eq!(status, 200);
    let lines = access_lines(&g, 4).await;
    // Lines of different worker threads may come out of order: told apart by their path.
    for l in &lines {
        let ttft = l["ttft_ms"].as_f64();
        if l["path"] == CHAT {
            let t = ttft.unwrap_or_else(|| panic!("no ttft_ms: {l}"));
            assert!((300.0..900.0).contains(&t), "{l}");
        } else {
            assert_eq!(ttft, None, "{l}");
        }
    }
    let text = metrics_text(&g).await;
    assert_eq!(count(&text, TTFT, "llm", "echo"), 0, "{text}");
}

#[tokio::test]
async fn a_cached_answer_is_not_counted() {
    let backend = mock_backend::spawn();
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents:
  "fin": {api_key: "key-fin"}
rate_limiting:
  tokens: {default: "100000/day"}
routes:
  - {path: "/*", name: "llm", backend_url: "{backend}", auth_required: true, caching: {enabled: true, ttl: "1m"}}
monitoring:
  metrics: {enabled: true}
  logging: {output: "{dir}/access.log"}
"#;
    let g = Gateway::start(yaml, &backend.url());
    let c = client();
    let url = g.url(CHAT);
    let body = chat("cached", json!({"mock_first_token_ms": 300}));
    let (status, cache, _) = ask(&c, &url, body.clone()).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    let text = metrics_once(&g, TTFT, "llm", "cached", 1).await;
    lands(&text, TTFT, ("llm", "cached"), 1, 0.3);

    // The same question: a HIT, served without the backend, in no histogram.
    let (status, cache, _) = ask(&c, &url, body).await;
    assert_eq!((status, cache.as_str()), (200, "HIT"));
    assert_eq!(backend.stats.count(CHAT), 1);
    let lines = access_lines(&g, 2).await;
    assert!(lines[0]["ttft_ms"].as_f64().is_some(), "{:?}", lines[0]);
    assert!(lines[1].get("ttft_ms").is_none(), "{:?}", lines[1]);
    let text = metrics_text(&g).await;
    for name in [TTFT, TPS] {
        assert_eq!(count(&text, name, "llm", "cached"), 1, "{name}: {text}");
    }
}
