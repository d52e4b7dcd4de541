//! A mock backend for clawgate's tests, quickstart and benchmarks. It records what it receives
//! and can echo, fail, delay, stream SSE or chunks, speak WebSocket, and imitate an
//! OpenAI-compatible chat-completions API.
//!
//! - `ANY /echo/...` and every unknown path: the request as JSON (method, path, query, headers, body)
//! - `ANY /status/{code}`: answers with that status
//! - `ANY /delay/{ms}`: answers after `ms` milliseconds
//! - `GET /sse?events=N&interval_ms=M`: N server-sent events, M ms apart
//! - `GET /chunked?chunks=N&interval_ms=M`: a chunked body of N parts, M ms apart
//! - `POST /v1/chat/completions`: JSON with `usage`, or SSE with a final usage chunk when `stream: true`
//!   (one word a chunk, `mock_interval_ms` apart, 50 by default); `mock_first_token_ms: N`: the
//!   JSON answer comes N ms late, a stream opens at once with a role-only delta and an SSE
//!   comment and its first word comes N ms later (a model's time to first token)
//! - `POST /v1/embeddings` (and `/slow/v1/embeddings`, 2 s late): OpenAI-style embeddings, 384
//!   numbers a text made by hashing its lower-cased words (texts sharing words are close)
//! - `GET /ws`: WebSocket echo
//! - `ANY /cache/...?delay_ms=&cc=&cookie=&vary=&status=`: a numbered answer (`serial` counts
//!   them) with the `Cache-Control`, `Set-Cookie`, `Vary` and status asked for, after a delay
//! - `GET /__stats`: request counters; `POST /__stats/reset` clears them

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::stream::{self, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct Stats {
    pub total: AtomicU64,
    /// TCP connections accepted (to see that a proxy pools and reuses them).
    pub connections: AtomicU64,
    by_path: Mutex<BTreeMap<String, u64>>,
    /// Answers of `/cache/...` so far.
    serial: AtomicU64,
    last: Mutex<Option<Value>>,
}

impl Stats {
    pub fn count(&self, path: &str) -> u64 {
        self.by_path
            .lock()
            .map(|m| m.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }
    /// The last request echoed or recorded, as the echo endpoint would show it.
    pub fn last(&self) -> Option<Value> {
        self.last.lock().ok().and_then(|l| l.clone())
    }
    fn record(&self, path: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.by_path.lock() {
            *m.entry(path.to_string()).or_default() += 1;
        }
    }
    fn json(&self) -> Value {
        let by_path = self
            .by_path
            .lock()
            .map(|m| json!(*m))
            .unwrap_or(Value::Null);
        json!({
            "total": self.total.load(Ordering::Relaxed),
            "connections": self.connections.load(Ordering::Relaxed),
            "by_path": by_path,
        })
    }
    fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
        if let Ok(mut m) = self.by_path.lock() {
            m.clear();
        }
    }
}

type Shared = Arc<Stats>;

pub fn app(stats: Shared) -> Router {
    Router::new()
        .route("/status/{code}", any(status))
        .route("/delay/{ms}", any(delay))
        .route("/sse", get(sse))
        .route("/chunked", get(chunked))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route(
            "/slow/v1/embeddings",
            post(|s, h, b| async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                embeddings(s, h, b).await
            }),
        )
        .route("/ws", get(ws))
        .route("/cache/{*rest}", any(cacheable))
        .route(
            "/__stats",
            get(|State(s): State<Shared>| async move { Json(s.json()) }),
        )
        .route(
            "/__stats/reset",
            post(|State(s): State<Shared>| async move {
                s.reset();
                StatusCode::NO_CONTENT
            }),
        )
        .fallback(echo)
        .layer(axum::middleware::from_fn_with_state(stats.clone(), count))
        .with_state(stats)
}

async fn count(
    State(stats): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !req.uri().path().starts_with("/__stats") {
        stats.record(req.uri().path());
    }
    next.run(req).await
}

fn headers_json(h: &HeaderMap) -> Value {
    let mut m: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in h {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        m.entry(k.as_str().to_string())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    json!(m)
}

async fn echo(
    State(stats): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Json<Value> {
    let v = json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "headers": headers_json(&headers),
        "body": String::from_utf8_lossy(&body),
        "body_len": body.len(),
    });
    if let Ok(mut l) = stats.last.lock() {
        *l = Some(v.clone());
    }
    Json(v)
}

async fn cacheable(
    State(stats): State<Shared>,
    method: Method,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let delay = param(&q, "delay_ms", 0);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay.min(60_000))).await;
    }
    let serial = stats.serial.fetch_add(1, Ordering::Relaxed) + 1;
    let code = StatusCode::from_u16(param(&q, "status", 200) as u16).unwrap_or(StatusCode::OK);
    let mut r = Response::builder()
        .status(code)
        .header("content-type", "application/json");
    if let Some(cc) = q.get("cc") {
        r = r.header("cache-control", cc.as_str());
    }
    if q.contains_key("cookie") {
        r = r.header("set-cookie", "session=abc; Path=/");
    }
    if let Some(v) = q.get("vary") {
        r = r.header("vary", v.as_str());
    }
    let answer = json!({
        "serial": serial,
        "method": method.as_str(),
        "path": uri.path(),
        "body_len": body.len(),
    });
    r.body(Body::from(answer.to_string())).unwrap_or_default()
}

async fn status(Path(code): Path<u16>) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (code, Json(json!({"status": code.as_u16()}))).into_response()
}

async fn delay(Path(ms): Path<u64>) -> Json<Value> {
    tokio::time::sleep(Duration::from_millis(ms.min(600_000))).await;
    Json(json!({"delayed_ms": ms}))
}

fn param(q: &HashMap<String, String>, name: &str, default: u64) -> u64 {
    q.get(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn sse(Query(q): Query<HashMap<String, String>>) -> Response {
    let events = param(&q, "events", 5);
    let interval = Duration::from_millis(param(&q, "interval_ms", 100));
    let s = stream::iter(0..events).then(move |i| async move {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        Ok::<_, std::convert::Infallible>(Bytes::from(format!("id: {i}\ndata: {{\"n\":{i}}}\n\n")))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(s))
        .unwrap_or_default()
}

async fn chunked(Query(q): Query<HashMap<String, String>>) -> Response {
    let chunks = param(&q, "chunks", 5);
    let interval = Duration::from_millis(param(&q, "interval_ms", 100));
    let s = stream::iter(0..chunks).then(move |i| async move {
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        Ok::<_, std::convert::Infallible>(Bytes::from(format!("chunk {i}\n")))
    });
    Response::builder()
        .header("content-type", "text/plain")
        .body(Body::from_stream(s))
        .unwrap_or_default()
}

/// An OpenAI-style chat answer, streamed when the body says `stream: true`. Test knobs: the
/// `x-mock-answer` header replaces the answer's text (one word per event when streamed);
/// `mock_interval_ms` spaces the events; `mock_fail_after` (n) breaks the stream after n events;
/// `mock_no_usage: true` leaves the usage out; `mock_usage_when_asked: true` leaves it out of a
/// stream that does not ask for it (`stream_options.include_usage`).
async fn chat(headers: HeaderMap, body: Bytes) -> Response {
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let custom = headers
        .get("x-mock-answer")
        .and_then(|v| v.to_str().ok())
        .map(|a| {
            a.split_inclusive(' ')
                .map(str::to_string)
                .collect::<Vec<_>>()
        });
    let model = req["model"].as_str().unwrap_or("mock-gpt").to_string();
    let prompt_tokens = req["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|x| {
                    x["content"]
                        .as_str()
                        .map_or(1, |c| c.split_whitespace().count() as u64)
                })
                .sum()
        })
        .unwrap_or(1);
    let words: Vec<String> = custom.unwrap_or_else(|| {
        [
            "Hello",
            " from",
            " the",
            " clawgate",
            " mock",
            " backend",
            ".",
        ]
        .map(str::to_string)
        .to_vec()
    });
    let completion_tokens = words.len() as u64;
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    });
    // `mock_no_usage`: a backend that reports no usage (the gateway then estimates it).
    // `mock_usage_when_asked`: a stream carries it only with `stream_options.include_usage`,
    // as OpenAI's do.
    let asked = req["stream_options"]["include_usage"].as_bool() == Some(true);
    let no_usage = req["mock_no_usage"].as_bool() == Some(true)
        || (req["mock_usage_when_asked"].as_bool() == Some(true) && !asked);
    let first_token = req["mock_first_token_ms"]
        .as_u64()
        .map(Duration::from_millis);
    if req["stream"].as_bool() != Some(true) {
        if let Some(wait) = first_token {
            tokio::time::sleep(wait).await;
        }
        let mut answer = json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": words.concat()}, "finish_reason": "stop"}],
            "usage": usage,
        });
        if no_usage {
            answer.as_object_mut().map(|o| o.remove("usage"));
        }
        return Json(answer).into_response();
    }
    let interval = Duration::from_millis(req["mock_interval_ms"].as_u64().unwrap_or(50));
    let mut events: Vec<String> = words
        .iter()
        .map(|w| {
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
                   "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": null}]})
            .to_string()
        })
        .collect();
    if !no_usage {
        events.push(
            json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
                   "choices": [], "usage": usage})
            .to_string(),
        );
    }
    events.push("[DONE]".to_string());
    let fail_after = req["mock_fail_after"].as_u64().map(|n| n as usize);
    let s = stream::iter(events.into_iter().enumerate()).then(move |(i, e)| async move {
        if i > 0 {
            tokio::time::sleep(interval).await;
        } else if let Some(wait) = first_token {
            tokio::time::sleep(wait).await;
        }
        if fail_after.is_some_and(|n| i >= n) {
            return Err(std::io::Error::other("mock_fail_after"));
        }
        Ok::<_, std::io::Error>(Bytes::from(format!("data: {e}\n\n")))
    });
    // What a real backend sends before the model's first word: neither is content.
    let opening = first_token.map(|_| {
        let role = json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": model,
                          "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
        Ok::<_, std::io::Error>(Bytes::from(format!(": opening\n\ndata: {role}\n\n")))
    });
    let s = stream::iter(opening).chain(s);
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(s))
        .unwrap_or_default()
}

async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            let reply = match msg {
                Message::Text(t) => Message::Text(t),
                Message::Binary(b) => Message::Binary(b),
                Message::Close(_) => break,
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
    })
}

/// Serves on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, stats: Shared) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let counter = stats.clone();
    let listener = listener.tap_io(move |_| {
        counter.connections.fetch_add(1, Ordering::Relaxed);
    });
    axum::serve(listener, app(stats)).await
}

/// A mock backend running on its own thread and runtime, for tests.
pub struct Running {
    pub addr: SocketAddr,
    pub stats: Shared,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A mock backend that can be stopped (its runtime dropped: the listener and every connection
/// close at once, as when a process dies) and started again on the same address.
pub struct Stoppable {
    pub addr: SocketAddr,
    pub stats: Shared,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Stoppable {
    /// Starts on `addr` (port 0: one chosen by the OS).
    pub fn start(addr: SocketAddr) -> std::io::Result<Stoppable> {
        Self::start_with(addr, Arc::default())
    }

    fn start_with(addr: SocketAddr, stats: Shared) -> std::io::Result<Stoppable> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let s = stats.clone();
        runtime.spawn(async move {
            if let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) {
                let _ = serve(listener, s).await;
            }
        });
        Ok(Stoppable {
            addr,
            stats,
            runtime: Some(runtime),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving: the listener and open connections are closed.
    pub fn stop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Serves again on the same address, with the same counters.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        let again = Self::start_with(self.addr, self.stats.clone())?;
        self.runtime = Some(again.into_runtime());
        Ok(())
    }

    fn into_runtime(mut self) -> tokio::runtime::Runtime {
        self.runtime
            .take()
            .expect("a running backend has a runtime")
    }
}

impl Drop for Stoppable {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts a mock backend on 127.0.0.1 at a port chosen by the OS.
pub fn spawn() -> Running {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind mock backend");
    std_listener.set_nonblocking(true).expect("nonblocking");
    let addr = std_listener.local_addr().expect("local addr");
    let stats: Shared = Arc::default();
    let s = stats.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            let _ = serve(listener, s).await;
        });
    });
    Running { addr, stats }
}

/// OpenAI's `/v1/embeddings`: `{"input": text or [texts], "model"}` → `{"data": [{"embedding"}]}`.
/// Each vector is a bag of the text's lower-cased words hashed into 384 dimensions and
/// normalised, so texts that share words are similar; the request is recorded (`Stats::last`).
async fn embeddings(State(stats): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    if let Ok(mut last) = stats.last.lock() {
        *last = Some(
            json!({"path": "/v1/embeddings", "headers": headers_json(&headers), "body": req.clone()}),
        );
    }
    let texts: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => return (StatusCode::BAD_REQUEST, "no input").into_response(),
    };
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": hashed_words(t)}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": req["model"], "usage": {"prompt_tokens": 1, "total_tokens": 1}})).into_response()
}

fn hashed_words(text: &str) -> Vec<f32> {
    use std::hash::{Hash, Hasher};
    let mut v = vec![0f32; 384];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        word.to_lowercase().hash(&mut h);
        v[(h.finish() % 384) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-9);
    v.iter().map(|x| x / norm).collect()
}
