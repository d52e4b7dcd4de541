//! The admin listener's requests: the token checked, then the API (JSON), the tail (SSE), the
//! purge, and the console's page and files.

use super::{api, Stats};
use crate::runtime::{Config, Services};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// How often the tail sends what was written since.
const TAIL_EVERY: Duration = Duration::from_millis(250);
/// A purge request's body, at most.
const MAX_BODY: usize = 64 << 10;

pub struct ConsoleApp {
    pub config: Arc<ArcSwap<Config>>,
    pub services: Arc<Services>,
    pub stats: Arc<Stats>,
    pub token: Option<String>,
}

/// An answer: status, content type, body, and whether it may be cached.
struct Answer {
    status: u16,
    kind: &'static str,
    body: Bytes,
    cache: bool,
}

impl Answer {
    fn json(status: u16, v: serde_json::Value) -> Answer {
        Answer {
            status,
            kind: "application/json",
            body: Bytes::from(v.to_string()),
            cache: false,
        }
    }

    fn error(status: u16, message: &str) -> Answer {
        let name = crate::respond::error_name(status);
        Answer::json(
            status,
            json!({"error": name, "code": status, "message": message}),
        )
    }
}

#[async_trait]
impl HttpServerApp for ConsoleApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !matches!(http.read_request().await, Ok(true)) {
            return None;
        }
        http.set_keepalive((!*shutdown.borrow()).then_some(60));
        let path = http.req_header().uri.path().to_string();
        let api = path.starts_with("/api/");
        if path == "/api/session" {
            // Whether the console must ask for the token: asked without a 401, which a
            // browser would report as an error.
            let (required, ok) = (self.token.is_some(), self.authorised(&http));
            let a = Answer::json(200, json!({"token_required": required, "authorised": ok}));
            return finish(http, a, &[]).await;
        }
        if api && !self.authorised(&http) {
            let a = Answer::error(
                401,
                "the admin API needs Authorization: Bearer <admin.token>",
            );
            return finish(http, a, &[("www-authenticate", "Bearer")]).await;
        }
        if path == "/api/tail" && http.req_header().method == http::Method::GET {
            let _ = self.tail(&mut http, shutdown.clone()).await;
            return None;
        }
        let answer = self.answer(&mut http, &path).await;
        finish(http, answer, &[]).await
    }
}

impl ConsoleApp {
    fn authorised(&self, http: &ServerSession) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = (http.req_header().headers.get(http::header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.as_bytes())))
    }

    async fn answer(&self, http: &mut ServerSession, path: &str) -> Answer {
        let cfg = self.config.load();
        let get = http.req_header().method == http::Method::GET;
        match (path, get) {
            ("/api/overview", true) => Answer::json(200, api::overview(&self.stats, &cfg)),
            ("/api/agents", true) => Answer::json(200, api::agents(&self.stats, &cfg)),
            ("/api/routes", true) => Answer::json(200, api::routes(&self.stats, &cfg)),
            ("/api/backends", true) => Answer::json(200, api::backends(&cfg)),
            ("/api/cache", true) => {
                Answer::json(200, api::cache(&self.stats, &cfg, &self.services))
            }
            ("/api/cache/purge", false) if http.req_header().method == http::Method::POST => {
                self.purge(http, &cfg).await
            }
            (p, true) => match super::assets::find(p) {
                Some((kind, body)) => Answer {
                    status: 200,
                    kind,
                    body: Bytes::from_static(body),
                    cache: true,
                },
                None => Answer::error(404, "no such page or endpoint"),
            },
            _ => Answer::error(
                405,
                "the admin API is read-only but for POST /api/cache/purge",
            ),
        }
    }

    /// `POST /api/cache/purge` with `{"route": "<label>"}` or `{"url": ..., "agent": ...}`.
    async fn purge(&self, http: &mut ServerSession, cfg: &Config) -> Answer {
        let mut body = BytesMut::new();
        loop {
            match http.read_request_body().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_BODY => body.extend(chunk),
                Ok(Some(_)) => return Answer::error(413, "the body is over 64 KiB"),
                Ok(None) => break,
                Err(_) => return Answer::error(400, "the body could not be read"),
            }
        }
        let Some(cache) = self.services.cache else {
            return Answer::error(404, "no route caches");
        };
        let req = match crate::admin::purge::Request::parse(&body) {
            Ok(r) => r,
            Err(e) => return Answer::error(400, &e),
        };
        let id = crate::request_id::new();
        let id = crate::request_id::as_str(&id).to_string();
        let store = self.services.semantic_store.as_deref();
        let headers = http.req_header().headers.clone();
        match crate::admin::purge::run(cache, store, cfg, req, &headers, &id).await {
            Ok(body) => Answer {
                status: 200,
                kind: "application/json",
                body,
                cache: false,
            },
            Err(crate::admin::purge::Failed::BadUrl(m)) => Answer::error(400, m),
            Err(crate::admin::purge::Failed::Nothing(m)) => Answer::error(404, m),
        }
    }

    /// `GET /api/tail`: the last access-log lines, then each new one, as SSE events until the
    /// client goes or the gateway stops. At most `LINES` lines a quarter second are sent; an
    /// `event: skipped` says how many were not.
    async fn tail(
        &self,
        http: &mut ServerSession,
        mut shutdown: ShutdownWatch,
    ) -> pingora::Result<()> {
        let mut h = ResponseHeader::build(200, Some(4))?;
        h.insert_header("content-type", "text/event-stream")?;
        h.insert_header("cache-control", "no-store")?;
        if http.req_header().version == http::Version::HTTP_11 {
            h.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
        }
        // Open before the client sees the head: what it sends after is in the tail.
        let _open = self.stats.tail_opened();
        self.stats.refill_tail();
        http.write_response_header(Box::new(h)).await?;
        let mut last = None;
        let mut quiet = 0u32;
        loop {
            let mut skipped = self.stats.refill_tail();
            let lines = self.stats.lines_after(last);
            if let (Some(was), Some((first, _))) = (last, lines.first()) {
                skipped += first.saturating_sub(was + 1);
            }
            if !lines.is_empty() || skipped > 0 {
                let mut out = BytesMut::new();
                if skipped > 0 {
                    out.extend_from_slice(
                        format!("event: skipped\ndata: {skipped}\n\n").as_bytes(),
                    );
                }
                for (n, line) in lines {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(&line);
                    out.extend_from_slice(b"\n\n");
                    last = Some(n);
                }
                http.write_response_body(out.freeze(), false).await?;
                quiet = 0;
            } else {
                quiet += 1;
                // A comment now and then: proxies keep the stream, and a gone client is noticed.
                if quiet.is_multiple_of(60) {
                    let ping = Bytes::from_static(b": keep-alive\n\n");
                    http.write_response_body(ping, false).await?;
                }
            }
            // New lines are sent in batches a quarter of a second apart, not one write per
            // request (a busy gateway's tail would cost a wake-up and a write per request).
            tokio::select! {
                _ = tokio::time::sleep(TAIL_EVERY) => {}
                _ = shutdown.changed() => return Ok(()),
            }
        }
    }
}

/// Writes an answer and hands the connection back for the next request.
async fn finish(
    mut http: ServerSession,
    a: Answer,
    extra: &[(&'static str, &'static str)],
) -> Option<ReusedHttpStream> {
    let mut h = ResponseHeader::build(a.status, Some(4 + extra.len())).ok()?;
    h.insert_header("content-type", a.kind).ok()?;
    h.insert_header("content-length", a.body.len().to_string())
        .ok()?;
    let cache = if a.cache { "max-age=300" } else { "no-store" };
    h.insert_header("cache-control", cache).ok()?;
    for (k, v) in extra {
        h.insert_header(*k, *v).ok()?;
    }
    http.write_response_header(Box::new(h)).await.ok()?;
    if http.req_header().method != http::Method::HEAD {
        http.write_response_body(a.body, true).await.ok()?;
    }
    let settings = HttpPersistentSettings::for_session(&http);
    let reused = http.finish().await.ok()??;
    Some(ReusedHttpStream::from_reusable_stream(reused, settings))
}
