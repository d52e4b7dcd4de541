//! LLM token budgets (`rate_limiting.tokens`, DESIGN §5.3): reservations before sending,
//! refusals, true-up from JSON usage, SSE usage, streamed text and cut streams, concurrent
//! streams, and one budget shared by two instances through Redis. The real binary in front of
//! the mock backend's OpenAI-style `/v1/chat/completions` (7 words of answer by default; usage
//! `prompt_tokens` = words of the messages, `completion_tokens` = words of the answer).

mod common;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const CHAT: &str = "/v1/chat/completions";

fn yaml(extra_limits: &str) -> String {
    format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
agents:
  "fin": {{api_key: "key-fin"}}
  "ops": {{api_key: "key-ops"}}
  "crowd": {{api_key: "key-crowd"}}
  "big": {{api_key: "key-big"}}
rate_limiting:
  {extra_limits}
  tokens:
    default: "10000/day"
    per_agent: {{"big": "1000000/day"}}
    per_model: {{"gpt-big": "3000/day"}}
    estimate: {{chars_per_token: 4, default_max_tokens: 1000}}
routes:
  - {{path: "/usage/*", backend_url: "{{backend}}", auth_required: true, strip_prefix: true, include_usage: true}}
  - {{path: "/cached/*", backend_url: "{{backend}}", auth_required: true, strip_prefix: true, caching: {{enabled: true, ttl: "1m"}}}}
  - {{path: "/*", backend_url: "{{backend}}", auth_required: true}}
monitoring:
  metrics: {{enabled: true}}
"#
    )
}

/// "hello there": 11 characters, a prompt estimate of 3 tokens; the mock counts 2.
fn chat(model: &str, max_tokens: Option<u64>, extra: Value) -> Value {
    let mut body =
        json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]});
    if let Some(m) = max_tokens {
        body["max_tokens"] = json!(m);
    }
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> u64 {
        (self.headers.get(name))
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
    }
}

/// Requests of one test go through one client: on its kept-alive connection the gateway takes
/// the next request only once the previous one's true-up is done.
async fn post(
    c: &reqwest::Client,
    url: &str,
    key: &str,
    body: &Value,
    answer: Option<&str>,
) -> Answer {
    let mut rb = c.post(url).header("x-api-key", key).json(body);
    if let Some(a) = answer {
        rb = rb.header("x-mock-answer", a);
    }
    let r = rb.send().await.expect("request");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let body = r.text().await.unwrap_or_default();
    Answer {
        status,
        headers,
        body,
    }
}

/// A metric's value in the Prometheus text, when the series exists.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn a_reservation_that_cannot_fit_is_refused_before_the_backend_and_usage_trues_up() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(&yaml(""), &backend.url());
    let url = g.url(CHAT);
    let c = client();

    // 3 (prompt) + 20000 (max_tokens) can never fit 10000: refused, the backend never called.
    let a = post(
        &c,
        &url,
        "key-fin",
        &chat("mock", Some(20_000), json!({})),
        None,
    )
    .await;
    assert_eq!(a.status, 429, "{}", a.body);
    let v: Value = serde_json::from_str(&a.body).unwrap();
    assert_json_error(&v, 429, "token_quota_exceeded");
    assert!(v["message"].as_str().unwrap().contains("20003"), "{v}");
    assert!(a.header("retry-after") >= 1);
    assert_eq!(a.header("x-ratelimit-limit-tokens"), 10_000);
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), 10_000);
    assert_eq!(backend.stats.count(CHAT), 0, "the backend saw nothing");

    // gpt-big: the agent budget (10000) and the model budget (3000) both apply; the tightest
    // is shown. 3 + 2000 reserved: 997 left.
    let a = post(
        &c,
        &url,
        "key-fin",
        &chat("gpt-big", Some(2_000), json!({})),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-ratelimit-limit-tokens"), 3_000);
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), 997);
    assert!(a.header("x-ratelimit-reset-tokens") >= 1);
    // The answer used 2 + 7 = 9: the next reservation sees 3000 - 9 - 2003.
    let a = post(
        &c,
        &url,
        "key-fin",
        &chat("gpt-big", Some(2_000), json!({})),
        None,
    )
    .await;
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), 988);
    // 2 × 9 used: 2982 left; a reservation of 2993 does not fit the model budget.
    let a = post(
        &c,
        &url,
        "key-fin",
        &chat("gpt-big", Some(2_990), json!({})),
        None,
    )
    .await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), 2_982);
    assert_eq!(backend.stats.count(CHAT), 2);
    // The agent budget lost only what the two answers used (18), the refusals took nothing.
    let a = post(
        &c,
        &url,
        "key-fin",
        &chat("mock", Some(100), json!({})),
        None,
    )
    .await;
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), 10_000 - 18 - 103);

    // A request that is not an LLM request is neither reserved nor given the headers.
    let r = (client().post(g.url("/echo")).header("x-api-key", "key-fin"))
        .json(&json!({"model": "mock", "query": "no messages"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-ratelimit-remaining-tokens").is_none());

    let text = metrics_text(&g).await;
    let refused = "openclaw_gateway_token_quota_refused_total";
    assert_eq!(
        metric(
            &text,
            &format!("{refused}{{agent_id=\"fin\",model=\"mock\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("{refused}{{agent_id=\"fin\",model=\"gpt-big\"}}")
        ),
        Some(1.0)
    );
    wait_for_gauge(&g, "fin", 10_000 - 18 - 9).await;
}

/// The gauge of an agent's budget for the model `mock`.
async fn gauge(g: &Gateway, agent: &str) -> Option<f64> {
    let text = metrics_text(g).await;
    let series =
        format!("openclaw_gateway_token_budget_remaining{{agent_id=\"{agent}\",model=\"mock\"}}");
    metric(&text, &series)
}

#[tokio::test]
async fn streams_are_charged_their_usage_their_text_or_what_reached_a_client_that_left() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(&yaml(""), &backend.url());
    let url = g.url(CHAT);
    let c = client();
    let stream = json!({"stream": true, "mock_interval_ms": 5});

    // The SSE usage chunk: 2 + 7 = 9 used of 103 reserved.
    let a = post(
        &c,
        &url,
        "key-ops",
        &chat("mock", Some(100), stream.clone()),
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), 10_000 - 103);
    assert!(a.body.contains("\"usage\""), "{}", a.body);
    let mut left = 10_000 - 9;

    // No usage at all: the prompt estimate (3) + the streamed text's characters / 4
    // ("one two three four": 18 characters, 5 tokens).
    let quiet = json!({"stream": true, "mock_interval_ms": 5, "mock_no_usage": true});
    let a = post(
        &c,
        &url,
        "key-ops",
        &chat("mock", Some(100), quiet),
        Some("one two three four"),
    )
    .await;
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), left - 103);
    assert!(!a.body.contains("\"usage\""), "{}", a.body);
    left -= 3 + 5;
    // The next reservation sees it (and this plain JSON answer uses 9).
    let a = post(
        &c,
        &url,
        "key-ops",
        &chat("mock", Some(100), json!({})),
        None,
    )
    .await;
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), left - 103);
    left -= 9;
    wait_for_gauge(&g, "ops", left).await;

    // A client that leaves after three events of a 60-word stream (one token a word, 100 ms
    // apart) is charged the prompt estimate and what was streamed before the gateway saw it
    // go, not the whole answer nor the 1003 reserved.
    let words: Vec<String> = (0..60).map(|i| format!("w{i:02}")).collect();
    let slow = json!({"stream": true, "mock_interval_ms": 100});
    let r = (client().post(&url).header("x-api-key", "key-ops"))
        .header("x-mock-answer", words.join(" "))
        .json(&chat("mock", None, slow))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut r = r;
    let mut seen = String::new();
    while seen.matches("data:").count() < 3 {
        let chunk = r.chunk().await.unwrap().expect("more events");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(gauge(&g, "ops").await, Some((left - 1003) as f64));
    drop(r);
    let deadline = Instant::now() + Duration::from_secs(10);
    let charged = loop {
        let now = gauge(&g, "ops").await.unwrap_or(0.0) as u64;
        if now != left - 1003 {
            break left - now;
        }
        assert!(
            Instant::now() < deadline,
            "the cut stream was never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("a stream cut after 3 of 60 words was charged {charged} tokens");
    assert!((3 + 3..=3 + 10).contains(&charged), "charged {charged}");
}

#[tokio::test]
async fn twenty_concurrent_streams_hold_no_more_than_the_budget() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(&yaml(""), &backend.url());
    let url = g.url(CHAT);
    let c = client();
    // Each reserves 3 + 1000 and streams for about 1.4 s: 9 fit in 10000 at once.
    let body = chat(
        "mock",
        Some(1_000),
        json!({"stream": true, "mock_interval_ms": 150}),
    );
    let runs = (0..20).map(|_| {
        let (url, body) = (url.clone(), body.clone());
        tokio::spawn(async move {
            let a = post(&client(), &url, "key-crowd", &body, None).await;
            (a.status, a.body)
        })
    });
    let answers: Vec<(u16, String)> = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    eprintln!("20 concurrent streams: {ok} × 200, {} × 429", refused.len());
    assert_eq!(ok + refused.len(), 20);
    assert_eq!(ok, 9, "reservations admit exactly what the budget holds");
    assert!(refused
        .iter()
        .all(|(_, b)| b.contains("token_quota_exceeded")));
    // Every answer is trued up before its request is counted in the metrics.
    let deadline = Instant::now() + Duration::from_secs(10);
    let counted = "openclaw_gateway_requests_total{method=\"POST\",route=\"/*\",status=\"200\"}";
    while metric(&metrics_text(&g).await, counted) != Some(9.0) {
        assert!(
            Instant::now() < deadline,
            "the streams were not all counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // All done: each of the 9 used 9 tokens; the rest came back (a day's budget refills one
    // token every 8.64 s: at most one more during the run).
    let a = post(
        &c,
        &url,
        "key-crowd",
        &chat("mock", Some(100), json!({})),
        None,
    )
    .await;
    let left = a.header("x-ratelimit-remaining-tokens");
    let expected = 10_000 - 9 * 9 - 103;
    assert!((expected..=expected + 1).contains(&left), "{left}");
}

async fn wait_for_gauge(g: &Gateway, agent: &str, value: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge(g, agent).await != Some(value as f64) {
        assert!(
            Instant::now() < deadline,
            "{agent}'s budget never showed {value}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_instances_share_one_budget_through_redis() {
    let redis = Redis::start();
    let backend = mock_backend::spawn();
    let yaml = yaml(&format!("store: \"{}\"", redis.url()));
    let (a, b) = (
        Gateway::start(&yaml, &backend.url()),
        Gateway::start(&yaml, &backend.url()),
    );
    // A long stream on `a` holds 3 + 9000.
    let body = chat(
        "mock",
        Some(9_000),
        json!({"stream": true, "mock_interval_ms": 200}),
    );
    let long = tokio::spawn({
        let url = a.url(CHAT);
        async move { post(&client(), &url, "key-fin", &body, None).await }
    });
    let key = "clawgate:{a:fin}:tokens";
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.command(&["EXISTS", key]).as_deref() != Some(":1") {
        assert!(Instant::now() < deadline, "no reservation reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Meanwhile `b` cannot reserve 1003 more.
    let c = client();
    let r = post(
        &c,
        &b.url(CHAT),
        "key-fin",
        &chat("mock", Some(1_000), json!({})),
        None,
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), 10_000 - 9_003);
    let done = long.await.unwrap();
    assert_eq!(done.status, 200);
    assert_eq!(done.header("x-ratelimit-remaining-tokens"), 10_000 - 9_003);
    // Trued up on `a` to the 9 it used (its gauge shows it once done): `b` sees it on its next
    // reservation.
    wait_for_gauge(&a, "fin", 10_000 - 9).await;
    let r = post(
        &c,
        &b.url(CHAT),
        "key-fin",
        &chat("mock", Some(1_000), json!({})),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let left = r.header("x-ratelimit-remaining-tokens");
    let expected = 10_000 - 9 - 1_003;
    assert!((expected..=expected + 1).contains(&left), "{left}");
    // And `a` sees `b`'s.
    wait_for_gauge(&b, "fin", 10_000 - 18).await;
    let r = post(
        &c,
        &a.url(CHAT),
        "key-fin",
        &chat("mock", Some(1_000), json!({})),
        None,
    )
    .await;
    let left = r.header("x-ratelimit-remaining-tokens");
    let expected = 10_000 - 18 - 1_003;
    assert!((expected..=expected + 1).contains(&left), "{left}");
}

#[tokio::test]
async fn a_redis_outage_follows_on_store_error() {
    let mut redis = Redis::start();
    let backend = mock_backend::spawn();
    let store = format!("store: \"{}\"\n  store_timeout: \"100ms\"", redis.url());
    let local = Gateway::start(&yaml(&store), &backend.url());
    let deny = Gateway::start(
        &yaml(&format!("{store}\n  on_store_error: deny")),
        &backend.url(),
    );
    let c = client();
    let body = chat("mock", Some(100), json!({}));
    let r = post(&c, &local.url(CHAT), "key-fin", &body, None).await;
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), 10_000 - 103);
    redis.stop();

    // `deny`: 503, the backend not called.
    let before = backend.stats.count(CHAT);
    let r = post(&c, &deny.url(CHAT), "key-fin", &body, None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_json_error(
        &serde_json::from_str(&r.body).unwrap(),
        503,
        "service_unavailable",
    );
    assert_eq!(r.header("retry-after"), 1);
    assert_eq!(backend.stats.count(CHAT), before);

    // `local` (the default): this instance's own budget, full, reserves and trues up.
    for left in [10_000 - 103, 10_000 - 9 - 103] {
        let r = post(&c, &local.url(CHAT), "key-fin", &body, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("x-ratelimit-remaining-tokens"), left);
    }
}

#[tokio::test]
async fn a_body_over_64_kib_reserves_its_length_and_is_trued_up_from_usage() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(&yaml(""), &backend.url());
    let (url, c) = (g.url(CHAT), client());
    let started = Instant::now();
    // 40,000 words of "x " (80,000 bytes of content): too large to read ahead. It reserves its
    // length / 4 + default_max_tokens from the agent's budget; the mock counts 40,000 prompt
    // tokens and 7 of answer.
    let body = chat("gpt-big", None, json!({})).to_string();
    let body = body.replace("hello there", &"x ".repeat(40_000));
    let length = body.len() as u64;
    assert!(length > 64 << 10);
    let send = || {
        (c.post(&url).header("x-api-key", "key-big"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status(), 200);
    let reserved = length.div_ceil(4) + 1_000;
    let left = |r: &reqwest::Response| -> u64 {
        r.headers()["x-ratelimit-remaining-tokens"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(left(&r), 1_000_000 - reserved, "agent budget only");
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"prompt_tokens\":40000"),
        "the whole body reached the backend: {text}"
    );
    // Trued up to 40,007 on the agent's budget; the model budget (3,000) was charged the same
    // after the fact, so it is in debt and refuses the model even for a small request.
    let r = post(
        &c,
        &url,
        "key-big",
        &chat("mock", Some(100), json!({})),
        None,
    )
    .await;
    // A million a day refills one token every 86.4 ms while the test runs.
    let expected = 1_000_000 - 40_007 - 103;
    let refilled = (started.elapsed().as_secs_f64() / 0.0864).ceil() as u64;
    let left = r.header("x-ratelimit-remaining-tokens");
    assert!((expected..=expected + refilled).contains(&left), "{left}");
    let r = post(
        &c,
        &url,
        "key-big",
        &chat("gpt-big", Some(100), json!({})),
        None,
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), 0);
    assert_eq!(r.header("x-ratelimit-limit-tokens"), 3_000);
}

#[tokio::test]
async fn a_cached_answer_reserves_nothing() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(&yaml(""), &backend.url());
    let c = client();
    let url = g.url(&format!("/cached{CHAT}"));
    let body = chat("mock", Some(100), json!({}));
    let a = post(&c, &url, "key-ops", &body, None).await;
    assert_eq!(a.headers["x-cache"], "MISS");
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), 10_000 - 103);
    // The same question again: answered from the cache, no reservation, no token headers.
    let a = post(&c, &url, "key-ops", &body, None).await;
    assert_eq!(a.headers["x-cache"], "HIT");
    assert!(a.headers.get("x-ratelimit-remaining-tokens").is_none());
    assert_eq!(backend.stats.count(CHAT), 1);
    // The budget lost only what the one backend answer used (9).
    let a = post(&c, &g.url(CHAT), "key-ops", &body, None).await;
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), 10_000 - 9 - 103);
}

#[tokio::test]
async fn answers_longer_than_reserved_overshoot_within_the_bound_and_leave_a_debt() {
    let backend = mock_backend::spawn();
    // Reservations of 3 (prompt estimate) + 4 (default_max_tokens): 8 fit in 60 at once. Each
    // answer uses 2 + 7 = 9: 3 more answer tokens than reserved, none more prompt.
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents:
  "crowd": {api_key: "key-crowd"}
rate_limiting:
  tokens: {default: "60/day", estimate: {chars_per_token: 4, default_max_tokens: 4}}
routes:
  - {path: "/*", backend_url: "{backend}", auth_required: true}
monitoring:
  metrics: {enabled: true}
"#;
    let g = Gateway::start(yaml, &backend.url());
    let url = g.url(CHAT);
    let body = chat(
        "mock",
        None,
        json!({"stream": true, "mock_interval_ms": 150}),
    );
    let runs = (0..20).map(|_| {
        let (url, body) = (url.clone(), body.clone());
        tokio::spawn(async move { post(&client(), &url, "key-crowd", &body, None).await.status })
    });
    let statuses: Vec<u16> = (futures_util::future::join_all(runs).await)
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let ok = statuses.iter().filter(|s| **s == 200).count() as u64;
    assert_eq!(ok, 8, "{statuses:?}");
    // Used 8 × 9 = 72 of 60: over by 12, within the bound of 8 in flight × 3 = 24.
    let (used, bound) = (ok * 9, ok * 3);
    eprintln!(
        "{ok} streams used {used} of 60: over by {}, bound {bound}",
        used - 60
    );
    assert!(used - 60 <= bound);
    // The excess is a debt: the budget shows 0 and refuses until it has refilled.
    wait_for_gauge(&g, "crowd", 0).await;
    let r = post(
        &client(),
        &url,
        "key-crowd",
        &chat("mock", Some(1), json!({})),
        None,
    )
    .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-remaining-tokens"), 0);
    // 12 owed + 4 to reserve, at one token every 24 minutes: the 72 were all charged.
    let retry = r.header("retry-after");
    assert!((16 * 1440 - 10..=16 * 1440).contains(&retry), "{retry}");
}

/// `include_usage`: a backend that streams its usage only when asked (as OpenAI's do) is asked
/// by the gateway, which charges that usage instead of an estimate; a client that did not ask
/// never sees the usage chunk, one that asked does.
#[tokio::test]
async fn include_usage_routes_ask_for_the_usage_and_keep_it_from_clients_that_did_not() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(&yaml(""), &backend.url());
    let c = client();
    let stream = json!({"stream": true, "mock_interval_ms": 5, "mock_usage_when_asked": true});
    let body = chat("mock", Some(100), stream.clone());
    // "alphabetical ordering": 2 tokens by the mock's usage, 21 characters (6 by estimate).
    let answer = Some("alphabetical ordering");
    let a = post(
        &c,
        &g.url(&format!("/usage{CHAT}")),
        "key-fin",
        &body,
        answer,
    )
    .await;
    assert_eq!(a.status, 200);
    assert!(
        a.body.contains("alphabetical") && a.body.contains("[DONE]"),
        "{}",
        a.body
    );
    assert!(!a.body.contains("\"usage\""), "{}", a.body);
    // Charged the usage: 2 + 2, not the estimate 3 + 6.
    let mut left = 10_000 - 4;
    let a = post(
        &c,
        &g.url(CHAT),
        "key-fin",
        &chat("mock", Some(100), json!({})),
        None,
    )
    .await;
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), left - 103);
    left -= 9;
    // Without the route's option the backend sends none: the estimate is charged.
    let a = post(&c, &g.url(CHAT), "key-fin", &body, answer).await;
    assert!(!a.body.contains("\"usage\""), "{}", a.body);
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), left - 103);
    left -= 3 + 6;
    // A client that asks gets its usage chunk.
    let mut own = body.clone();
    own["stream_options"] = json!({"include_usage": true});
    let a = post(
        &c,
        &g.url(&format!("/usage{CHAT}")),
        "key-fin",
        &own,
        answer,
    )
    .await;
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), left - 103);
    assert!(a.body.contains("\"usage\""), "{}", a.body);
}
