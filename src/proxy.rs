//! The `ProxyHttp` implementation: the request path, one step per hook, each delegating to a
//! module. Kept thin on purpose; read it top to bottom as the life of a request.

use crate::auth::{Failure, Identity, Strategy};
use crate::backends::{Picked, Pool, Who};
use crate::limits::{Exceeded, Refused, Standing, Subject};
use crate::runtime::{Config, Route, Services};
use crate::{request_id, respond, router, upstream};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::cache::key::HashBinary;
use pingora::cache::{
    CacheKey, CacheMeta, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests in progress, so that a graceful stop can end as soon as they are done.
pub static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Set (SIGUSR2, sent by `clawgate upgrade`) shortly before this process hands its sockets
/// over: every response then closes its connection, so that no client holds a keep-alive
/// connection that the shutdown could close under a request it is sending.
pub static HANDING_OVER: AtomicBool = AtomicBool::new(false);

pub struct InFlight;

impl InFlight {
    fn new() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct Gateway {
    /// The running configuration; a reload swaps it (`reload.rs`).
    config: Arc<ArcSwap<Config>>,
    started: Instant,
    /// What outlives reloads: metrics, access log, tracer, limit buckets, the response cache.
    services: Arc<Services>,
}

impl Gateway {
    pub fn new(config: Arc<ArcSwap<Config>>, services: Arc<Services>) -> Self {
        Gateway {
            services,
            config,
            started: Instant::now(),
        }
    }
}

/// Per-request state.
pub struct Ctx {
    pub request_id: HeaderValue,
    pub start: Instant,
    config: Arc<Config>,
    route: Option<usize>,
    /// Path and query sent to the backend when they differ from the request's (boxed: rare, and
    /// the context is moved with Pingora's per-request future).
    forward: Option<Box<http::Uri>>,
    /// The verified caller, on routes that require one.
    identity: Option<Identity>,
    /// A JWKS fetch was already tried for this request.
    fetched_keys: bool,
    /// A token of the gateway ceiling was taken (given back if a later limit refuses).
    ceiling_taken: bool,
    /// The tightest rate limit that applied, for the response headers and variables.
    limit: Option<Standing>,
    /// The route label for metrics of requests that matched no route.
    built_in: Option<&'static str>,
    /// When the request went to the backend, and how long its response head took.
    upstream_sent: Option<Instant>,
    upstream_seconds: Option<f64>,
    upstream_status: Option<u16>,
    bytes_out: u64,
    /// Reading the response for LLM token usage (boxed: only on tracked responses).
    usage: Option<Box<crate::usage::Tracker>>,
    /// The request body's first chunks, to find the model when the response does not say.
    request_body: Option<Vec<Bytes>>,
    tokens: Option<Box<crate::usage::Usage>>,
    /// The `traceparent` the backend receives, when tracing is on.
    traceparent: Option<crate::trace::Traceparent>,
    /// The spans of a sampled request (boxed: most requests are not sampled).
    trace: Option<Box<crate::trace::Sampled>>,
    body_bytes: u64,
    /// What of the request body goes into the cache key (read ahead on caching routes).
    cache_body: Option<Bytes>,
    /// The request may not use the cache (a body too large to key, `Cache-Control: no-store`).
    cache_bypass: bool,
    /// A `PURGE` of this URL's cached answer, by an admin.
    purge: bool,
    /// The lookup missed (what `X-Cache` says even if the response then turns out uncacheable).
    cache_missed: bool,
    /// `X-Cache` as answered, for the log and the metrics.
    cache_status: Option<&'static str>,
    /// The request body was read ahead (`pre_read`: what was read, when it could be).
    body_read: bool,
    pre_read: Option<Bytes>,
    /// The route's pool chosen for this request (its weights, stickiness and health).
    pool: Option<Arc<Pool>>,
    /// The address the request is sent to (counted in flight while held).
    picked: Option<Picked>,
    /// The address a retry goes to, chosen when the previous one failed.
    next: Option<Picked>,
    /// Addresses that failed this request.
    tried: Vec<std::net::SocketAddr>,
    _in_flight: InFlight,
}

impl Ctx {
    fn route(&self) -> Option<&Route> {
        self.route.map(|i| &self.config.routes[i])
    }

    fn observed(&self) -> crate::observe::Seen<'_> {
        crate::observe::Seen {
            route: self
                .route()
                .map(|r| r.label.as_str())
                .or(self.built_in)
                .unwrap_or("unmatched"),
            series: self.route().map(|r| &r.series),
            agent_id: self.identity.as_ref().map(|i| &*i.agent.id),
            seconds: self.start.elapsed().as_secs_f64(),
            upstream_seconds: self.upstream_seconds,
            request_id: request_id::as_str(&self.request_id),
            upstream: self.picked.as_ref().map(|p| p.addr.label.as_str()),
            upstream_status: self.upstream_status,
            bytes_in: self.body_bytes,
            bytes_out: self.bytes_out,
            limit: self.limit.map(|l| l.remaining),
            tokens: self.tokens.as_deref(),
            cache: self.cache_status,
        }
    }

    fn forward(&self) -> Option<upstream::Forward<'_>> {
        Some(upstream::Forward {
            route: self.route()?,
            host: &self.pool.as_ref()?.host_header,
            request_id: &self.request_id,
            identity: self.identity.as_ref(),
            api_key_header: &self.config.auth.api_key_header,
            limit: self.limit,
            traceparent: self.traceparent.as_ref(),
        })
    }
}

/// What `request_filter` decided for a request it did not refuse.
enum Admit {
    Proxy,
    Health,
    Token,
    Metrics,
    /// `{base_path}/cache`: purges.
    CacheAdmin,
    /// A JWT names a key id we do not know: fetch the JWKS, then decide again.
    FetchKey(String),
    /// Everything but the rate limits, which the shared store decides.
    SharedLimits,
    /// A route's `match` looks into the body: read it ahead, then decide again.
    ReadBody,
}

/// The outcome of matching a path to a route.
enum Matched {
    /// The route, and the caller when a `match` on the agent authenticated it.
    Route(usize, Option<Identity>),
    ReadBody,
    FetchKey(String),
    None,
}

/// A refusal decided in `request_filter`: status, message, whether to close the connection,
/// and extra headers (a 401's challenge, a 429's `Retry-After`).
struct Refusal(u16, &'static str, bool, Vec<(&'static str, String)>);

impl Refusal {
    fn new(code: u16, message: &'static str, close: bool) -> Self {
        Refusal(code, message, close, Vec::new())
    }

    fn unauthorized(cfg: &Config, strategy: Strategy, failure: &Failure) -> Self {
        let challenge = cfg.auth.challenge(strategy, failure);
        Refusal(
            401,
            failure.message(),
            false,
            vec![("www-authenticate", challenge)],
        )
    }

    fn limited(e: Exceeded, message: &'static str) -> Self {
        let retry = e.retry_after_secs.to_string();
        Refusal(
            429,
            message,
            false,
            vec![
                ("retry-after", retry.clone()),
                ("x-ratelimit-limit", e.limit.to_string()),
                ("x-ratelimit-remaining", "0".into()),
                ("x-ratelimit-reset", retry.clone()),
                (
                    "ratelimit-policy",
                    format!("\"limit\";q={};w={}", e.limit, e.window_secs),
                ),
                ("ratelimit", format!("\"limit\";r=0;t={retry}")),
            ],
        )
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    /// No per-request modules: Pingora's default adds a response-compression module that is
    /// switched off yet still costs an allocation and two calls per request; clawgate passes
    /// bodies through unchanged.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx {
            request_id: HeaderValue::from_static(""),
            start: Instant::now(),
            config: self.config.load_full(),
            route: None,
            forward: None,
            identity: None,
            fetched_keys: false,
            ceiling_taken: false,
            limit: None,
            built_in: None,
            upstream_sent: None,
            upstream_seconds: None,
            upstream_status: None,
            bytes_out: 0,
            usage: None,
            request_body: None,
            tokens: None,
            traceparent: None,
            trace: None,
            body_bytes: 0,
            cache_body: None,
            cache_bypass: false,
            purge: false,
            cache_missed: false,
            cache_status: None,
            body_read: false,
            pre_read: None,
            pool: None,
            picked: None,
            next: None,
            tried: Vec::new(),
            _in_flight: InFlight::new(),
        }
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if HANDING_OVER.load(Ordering::Relaxed) {
            session.set_keepalive(None);
        }
        let client_id = session.req_header().headers.get(&upstream::X_REQUEST_ID);
        ctx.request_id = request_id::from_client_or_new(client_id);
        if let Some(t) = &self.services.tracing {
            match t.begin(&session.req_header().headers) {
                crate::trace::Begun::Sampled(s) => ctx.trace = Some(s),
                crate::trace::Begun::Unsampled(parent) => ctx.traceparent = Some(parent),
            }
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // The answers written here are boxed so that the common path's future stays small
        // (Pingora moves it around per request).
        let mut decision = self.admit(session, ctx);
        // At most once each: the body is read once, a key id fetched once.
        for _ in 0..2 {
            match &decision {
                Ok(Admit::ReadBody) => {
                    Box::pin(self.read_ahead(session, ctx)).await?;
                }
                Ok(Admit::FetchKey(kid)) => {
                    if let Some(jwt) = &ctx.config.auth.jwt {
                        Box::pin(jwt.refetch_for(kid)).await;
                    }
                }
                _ => break,
            }
            // Decided again; a kid still unknown is refused this time.
            decision = self.admit(session, ctx);
        }
        if let Ok(Admit::SharedLimits) = decision {
            decision = Box::pin(self.shared_limits(session, ctx)).await;
        }
        match decision {
            Ok(Admit::Proxy) => {
                if let (Some(t), Some(sampled)) = (&self.services.tracing, ctx.trace.as_mut()) {
                    ctx.traceparent = Some(t.upstream(sampled));
                }
                if let Some(fwd) = ctx.forward() {
                    upstream::set_forwarding_headers(session, &fwd);
                }
                if self.services.cache.is_some() && ctx.route().is_some_and(|r| r.cache.is_some()) {
                    Box::pin(self.prepare_cache_key(session, ctx)).await?;
                }
                Ok(false)
            }
            Ok(Admit::Health) => {
                Box::pin(self.health(session, ctx)).await?;
                Ok(true)
            }
            Ok(Admit::Token) => {
                Box::pin(self.token(session, ctx)).await?;
                Ok(true)
            }
            Ok(Admit::Metrics) => {
                Box::pin(self.metrics(session, ctx)).await?;
                Ok(true)
            }
            Ok(Admit::CacheAdmin) => {
                Box::pin(self.cache_admin(session, ctx)).await?;
                Ok(true)
            }
            Ok(Admit::FetchKey(_) | Admit::SharedLimits | Admit::ReadBody) => {
                Err(Error::new(ErrorType::InternalError))
            }
            Err(Refusal(code, message, close, headers)) => {
                let id = request_id::as_str(&ctx.request_id);
                let extra: Vec<(&str, &str)> =
                    headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                Box::pin(respond::json_error(
                    session, code, message, id, close, &extra,
                ))
                .await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let picked = match ctx.next.take() {
            Some(p) => p,
            None => {
                let pool = ctx
                    .pool
                    .as_ref()
                    .ok_or_else(|| Error::new(ErrorType::InternalError))?;
                pool.count_request();
                select(session, ctx, pool).ok_or_else(no_backend)?
            }
        };
        let route = ctx
            .route()
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let peer = upstream::peer(&ctx.config, route, &picked);
        ctx.picked = Some(picked);
        Ok(peer)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the backend: any request may go to another address.
        if let Some(failed) = ctx.picked.take() {
            failed.pool.report(&failed.addr, false);
            e.set_retry(retry_elsewhere(session, ctx, &failed));
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        if let Some(p) = &ctx.picked {
            p.pool.report(&p.addr, false);
        }
        // Pingora's policy: only idempotent requests with their whole body kept are tried again
        // (on a reused connection that failed), so a POST is never sent twice.
        let mut e = e.more_context(format!("Peer: {peer}"));
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated()
        {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(p) = ctx.picked.take() else {
            return Ok(());
        };
        let status = resp.status.as_u16();
        p.pool.report(&p.addr, status < 500);
        // `retries.on_status`: an idempotent request whose body can be sent again (none, or read
        // ahead whole) goes to another address.
        let replayable = ctx.pre_read.is_some() || no_body(session.req_header());
        if p.pool.retries.on_status.contains(&status)
            && session.req_header().method.is_idempotent()
            && replayable
            && retry_elsewhere(session, ctx, &p)
        {
            let mut e = Error::explain(
                ErrorType::HTTPStatus(status),
                "the backend answered with a status retried on another address",
            );
            e.set_retry(true);
            return Err(e);
        }
        ctx.picked = Some(p);
        Ok(())
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if let (Some(cache), Some(_)) = (
            self.services.cache,
            ctx.route().and_then(|r| r.cache.as_ref()),
        ) {
            if !ctx.cache_bypass {
                cache.enable(session);
            }
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        let route = ctx
            .route()
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let rc = route
            .cache
            .as_ref()
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        let req = session.req_header();
        // A purge names the GET entry of its URL, of the agent in `X-Purge-Agent` (or the
        // route's shared or anonymous entry).
        let (method, agent) = if ctx.purge {
            let agent = req
                .headers
                .get("x-purge-agent")
                .and_then(|v| v.to_str().ok());
            (&http::Method::GET, agent)
        } else {
            (&req.method, ctx.identity.as_ref().map(|i| &*i.agent.id))
        };
        Ok(crate::cache::request_key(
            &route.label,
            method,
            &req.headers,
            ctx.forward.as_deref().unwrap_or(&req.uri),
            agent,
            rc,
            ctx.cache_body.as_deref(),
        ))
    }

    fn is_purge(&self, _session: &Session, ctx: &Ctx) -> bool {
        ctx.purge
    }

    fn cache_miss(&self, session: &mut Session, ctx: &mut Ctx) {
        ctx.cache_missed = true;
        session.cache.cache_miss();
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        _meta: &CacheMeta,
        _hit: &mut HitHandler,
        _is_fresh: bool,
        _ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        // `Cache-Control: no-cache` from the client: fetch again (and store the new answer).
        Ok(crate::cache::client_wants_fresh(session.req_header())
            .then_some(ForcedFreshness::ForceExpired))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        Ok(match ctx.route().and_then(|r| r.cache.as_ref()) {
            Some(rc) => crate::cache::response_cacheable(resp, rc),
            None => RespCacheable::Uncacheable(NoCacheReason::NeverEnabled),
        })
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        crate::cache::variance(meta, req)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // The forwarding headers are already on the client's head (set in request_filter), which
        // `req` is a copy of; only upgrades and a rewritten path are left to do here.
        if let Some(uri) = ctx.forward.take() {
            req.set_uri(*uri);
        }
        // A backend's URLs with different hosts: each address gets its own URL's `Host`.
        if let Some(p) = &ctx.picked {
            if let Some(host) = p.pool.host_for(&p.addr) {
                if !ctx.route().is_some_and(|r| r.preserve_host) {
                    req.insert_header(http::header::HOST, host.clone())?;
                }
            }
        }
        if self.services.metrics.is_some() || self.services.access_log.is_some() {
            ctx.upstream_sent = Some(Instant::now());
        }
        if session.is_upgrade_req() {
            let fwd = ctx
                .forward()
                .ok_or_else(|| Error::new(ErrorType::InternalError))?;
            upstream::forwarding_headers_in_place(session, req, &fwd)?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            if self.services.track_tokens && ctx.body_bytes < crate::usage::MAX_REQUEST as u64 {
                ctx.request_body.get_or_insert_default().push(chunk.clone());
            }
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > ctx.config.max_body_size {
                return Err(Error::explain(
                    ErrorType::HTTPStatus(413),
                    "request body larger than max_body_size",
                ));
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        check_total_timeout(ctx)?;
        if let Some(sent) = ctx.upstream_sent.take() {
            ctx.upstream_seconds = Some(sent.elapsed().as_secs_f64());
            ctx.upstream_status = Some(resp.status.as_u16());
        }
        if let (Some(t), Some(sampled), Some(route)) =
            (&self.services.tracing, ctx.trace.as_mut(), ctx.route)
        {
            t.end_upstream(
                sampled,
                resp.status.as_u16(),
                &ctx.config.routes[route].label,
            );
        }
        if ctx.route().is_some_and(|r| r.cache.is_some()) {
            let status = crate::cache::status(session.cache.phase(), ctx.cache_missed);
            resp.insert_header("x-cache", status)?;
            ctx.cache_status = Some(status);
        }
        // A cached answer consumed no tokens.
        if self.services.track_tokens && resp.status.is_success() && ctx.cache_status != Some("HIT")
        {
            ctx.usage = resp
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|ct| crate::usage::Tracker::for_content_type(ct.as_bytes()))
                .map(Box::new);
        }
        match ctx.forward() {
            Some(fwd) => upstream::set_response_headers(resp, &fwd, upstream::client_ip(session)),
            None => upstream::set_response_request_id(resp, &ctx.request_id),
        }
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        check_total_timeout(ctx)?;
        if let Some(b) = body {
            ctx.bytes_out += b.len() as u64;
            if let Some(t) = ctx.usage.as_mut() {
                t.feed(b);
            }
        }
        if end_of_stream {
            if let Some(t) = ctx.usage.take() {
                ctx.tokens = t.finish().map(|mut u| {
                    if u.model.is_none() {
                        u.model = ctx
                            .request_body
                            .as_ref()
                            .and_then(|b| crate::usage::request_model(b));
                    }
                    Box::new(u)
                });
            }
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let sampled = ctx.trace.take();
        let config = &*self.services;
        if config.metrics.is_none() && config.access_log.is_none() && sampled.is_none() {
            return;
        }
        let status = crate::observe::status(session, e);
        let seen = ctx.observed();
        if let Some(m) = &config.metrics {
            crate::observe::record(m, session, e, status, &seen);
        }
        if let Some(log) = &config.access_log {
            crate::observe::log_line(log, session, e, status, &seen);
        }
        if let (Some(t), Some(sampled)) = (&config.tracing, sampled) {
            crate::observe::end_spans(t, session, status, &seen, sampled);
        }
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let (code, message) = classify(e);
        if code > 0 && session.response_written().is_none() {
            // The request id may be unset when the failure came before early_request_filter.
            if ctx.request_id.is_empty() {
                ctx.request_id = request_id::new();
            }
            let id = request_id::as_str(&ctx.request_id);
            let _ = respond::json_error(session, code, message, id, true, &[]).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

impl Gateway {
    /// Everything decided before a request may go upstream, without writing anything.
    fn admit(&self, session: &Session, ctx: &mut Ctx) -> Result<Admit, Refusal> {
        let cfg = &*ctx.config;
        let req = session.req_header();
        if req.headers.len() > cfg.max_headers {
            return Err(Refusal::new(431, "too many request headers", true));
        }
        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes as u64 > cfg.max_header_size {
            return Err(Refusal::new(431, "request headers are too large", true));
        }
        let has_te = req.headers.contains_key(http::header::TRANSFER_ENCODING);
        // Pingora drops Content-Length when Transfer-Encoding is present (RFC 9112 §6.3); a
        // request that sent both is a smuggling attempt or a broken client: refuse it.
        if has_te
            && session
                .as_http1()
                .is_some_and(|h1| sent_content_length(&h1.get_headers_raw_bytes()))
        {
            return Err(Refusal::new(
                400,
                "both Content-Length and Transfer-Encoding are present",
                true,
            ));
        }
        let lengths = req.headers.get_all(http::header::CONTENT_LENGTH);
        let mut content_length = None;
        for v in lengths.iter() {
            let n = std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(Refusal::new(400, "invalid Content-Length", true))?;
            if content_length.is_some_and(|c| c != n) || has_te {
                return Err(Refusal::new(
                    400,
                    "conflicting message framing headers",
                    true,
                ));
            }
            content_length = Some(n);
        }
        if content_length.is_some_and(|n| n > cfg.max_body_size) {
            return Err(Refusal::new(
                413,
                "request body larger than max_body_size",
                true,
            ));
        }

        let raw_path = req.uri.path();
        let path =
            router::normalise(raw_path).map_err(|e| Refusal::new(400, e.message(), false))?;

        if *path == *cfg.health_path {
            ctx.built_in = Some("health");
            return Ok(Admit::Health);
        }
        if self.services.metrics.is_some()
            && cfg.metrics_listen.is_none()
            && *path == *cfg.metrics_path
        {
            ctx.built_in = Some("metrics");
            return Ok(Admit::Metrics);
        }
        if !ctx.ceiling_taken {
            ctx.ceiling_taken = cfg
                .quotas
                .take_ceiling(&self.services.limits)
                .map_err(|e| Refusal::limited(e, "the gateway is over its request rate"))?;
        }
        if *path == *cfg.token_path && cfg.auth.jwt.as_ref().is_some_and(|j| j.can_sign()) {
            ctx.built_in = Some("token");
            return Ok(Admit::Token);
        }

        if cfg.cache.is_some() && *path == *cfg.cache_path {
            ctx.built_in = Some("cache");
            return Ok(Admit::CacheAdmin);
        }

        let body = ctx.body_read.then_some(ctx.pre_read.as_ref());
        let (index, mut identity) = match match_route(cfg, req, &path, body, ctx.fetched_keys) {
            Matched::Route(index, identity) => (index, identity),
            Matched::ReadBody => return Ok(Admit::ReadBody),
            Matched::FetchKey(kid) => {
                ctx.fetched_keys = true;
                return Ok(Admit::FetchKey(kid));
            }
            Matched::None => {
                ctx.built_in = Some("unmatched");
                return Err(Refusal::new(404, "no route matches this path", false));
            }
        };
        let route = &cfg.routes[index];
        ctx.route = Some(index);
        if req.method.as_str() == "PURGE" {
            if route.cache.is_none() {
                return Err(Refusal::new(405, "this route does not cache", false));
            }
            authorise_admin(session, cfg)?;
            ctx.purge = true;
            let pool = choose_pool(session, ctx, route);
            let forward = upstream::forward_uri(cfg, route, &pool.path_prefix, &path, &req.uri)
                .map_err(|_| Refusal::new(400, "the request path cannot be forwarded", false))?;
            ctx.forward = forward.map(Box::new);
            ctx.pool = Some(pool);
            return Ok(Admit::Proxy);
        }
        if let Some(access) = &route.access {
            let identity = match identity
                .take()
                .map_or_else(|| cfg.auth.authenticate(&req.headers, access.strategy), Ok)
            {
                Ok(identity) => identity,
                Err(Failure::UnknownKid(kid)) if !ctx.fetched_keys => {
                    ctx.fetched_keys = true;
                    return Ok(Admit::FetchKey(kid));
                }
                Err(f) => return Err(Refusal::unauthorized(cfg, access.strategy, &f)),
            };
            access
                .authorise(&identity.agent, &path)
                .map_err(|m| Refusal::new(403, m, false))?;
            ctx.identity = Some(identity);
        }
        let pool = choose_pool(session, ctx, route);
        let forward = upstream::forward_uri(cfg, route, &pool.path_prefix, &path, &req.uri)
            .map_err(|_| Refusal::new(400, "the request path cannot be forwarded", false))?;
        ctx.forward = forward.map(Box::new);
        ctx.pool = Some(pool);
        if cfg.quotas.apply_to(route.rate_limit) {
            if self.services.limits.store.is_some() {
                return Ok(Admit::SharedLimits);
            }
            let (subject, key_limit) = subject_of(session, ctx);
            let route_limit = route.rate_limit.map(|l| (route.label.as_str(), l));
            match (cfg.quotas).take(&self.services.limits, subject, key_limit, route_limit) {
                Ok(standing) => ctx.limit = standing,
                Err(e) => return Err(self.refuse_limited(ctx, Refused::Limit(e))),
            }
        }
        Ok(Admit::Proxy)
    }

    /// Reads the request body ahead (up to 64 KiB, with a `Content-Length`) for a route's
    /// `match` on body fields or a POST's cache key; Pingora sends it on from its retry buffer.
    async fn read_ahead(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if ctx.body_read {
            return Ok(());
        }
        ctx.body_read = true;
        let Some(body) = crate::cache::read_body_for_key(session).await? else {
            return Ok(());
        };
        // Pre-read chunks never reach request_body_filter: account for them here.
        ctx.body_bytes += body.len() as u64;
        if ctx.body_bytes > ctx.config.max_body_size {
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body larger than max_body_size",
            );
        }
        if self.services.track_tokens {
            ctx.request_body = Some(vec![body.clone()]);
        }
        ctx.pre_read = Some(body);
        Ok(())
    }

    async fn health(&self, session: &mut Session, ctx: &Ctx) -> Result<()> {
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            let id = request_id::as_str(&ctx.request_id);
            let body = respond::error_body(405, "the health endpoint answers GET", id);
            return respond::write_json(
                session,
                405,
                body,
                request_id::as_str(&ctx.request_id),
                &[("allow", "GET, HEAD")],
            )
            .await;
        }
        let body = serde_json::json!({
            "status": "healthy",
            "version": ctx.config.version,
            "uptime": respond::human_uptime(self.started.elapsed().as_secs()),
            "name": ctx.config.name,
        });
        respond::write_json(
            session,
            200,
            Bytes::from(body.to_string()),
            request_id::as_str(&ctx.request_id),
            &[],
        )
        .await
    }
}

/// Who a request counts against, and the API key's own limit.
fn subject_of<'a>(session: &Session, ctx: &'a Ctx) -> (Subject<'a>, Option<crate::limits::Limit>) {
    match &ctx.identity {
        Some(i) => (Subject::Agent(&i.agent.id), i.key_limit),
        None => {
            let peer = upstream::client_ip(session);
            let headers = &session.req_header().headers;
            let ip = crate::client_addr::client_ip(peer, headers, &ctx.config.trusted_proxies);
            (Subject::Client(ip), None)
        }
    }
}

impl Gateway {
    /// `DELETE {base_path}/cache` with `{"route": label}` or `{"url": "/path?query", "agent":
    /// id}` (an admin's request): every entry of a route, or one entry.
    async fn cache_admin(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let id = request_id::as_str(&ctx.request_id).to_string();
        let config = ctx.config.clone();
        if session.req_header().method != http::Method::DELETE {
            let body = respond::error_body(405, "the cache endpoint answers DELETE", &id);
            return respond::write_json(session, 405, body, &id, &[("allow", "DELETE")]).await;
        }
        if let Err(Refusal(code, message, close, headers)) = authorise_admin(session, &config) {
            let extra: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            return respond::json_error(session, code, message, &id, close, &extra).await;
        }
        let Some(cache) = self.services.cache else {
            return respond::json_error(
                session,
                404,
                "no route matches this path",
                &id,
                false,
                &[],
            )
            .await;
        };
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > crate::cache::MAX_KEYED_BODY {
                return respond::json_error(session, 413, "request body too large", &id, true, &[])
                    .await;
            }
        }
        let (code, answer) = match crate::admin::purge::Request::parse(&body) {
            Err(message) => (400, respond::error_body(400, &message, &id)),
            Ok(req) => {
                let headers = &session.req_header().headers;
                crate::admin::purge::run(cache, &config, req, headers, &id).await
            }
        };
        respond::write_json(session, code, answer, &id, &[]).await
    }

    /// On a caching route: whether the request may use the cache, and the part of its body that
    /// goes into the key (read ahead, up to 64 KiB).
    async fn prepare_cache_key(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if ctx.purge {
            return Ok(());
        }
        let req = session.req_header();
        if !crate::cache::cacheable_method(&req.method)
            || crate::cache::client_forbids_store(req)
            || session.is_upgrade_req()
        {
            ctx.cache_bypass = true;
            return Ok(());
        }
        if req.method != http::Method::POST {
            return Ok(());
        }
        self.read_ahead(session, ctx).await?;
        let Some(body) = &ctx.pre_read else {
            ctx.cache_bypass = true;
            return Ok(());
        };
        let parts = ctx
            .route()
            .and_then(|r| r.cache.as_ref())
            .map_or(&[][..], |rc| &rc.key[..]);
        ctx.cache_body = Some(Bytes::from(crate::cache::key::body_part(body, parts)));
        Ok(())
    }

    /// `GET {monitoring.metrics.endpoint}`: Prometheus text.
    async fn metrics(&self, session: &mut Session, ctx: &Ctx) -> Result<()> {
        let id = request_id::as_str(&ctx.request_id);
        let Some(m) = &self.services.metrics else {
            return Ok(());
        };
        let method = &session.req_header().method;
        if method != http::Method::GET && method != http::Method::HEAD {
            let body = respond::error_body(405, "the metrics endpoint answers GET", id);
            return respond::write_json(session, 405, body, id, &[("allow", "GET, HEAD")]).await;
        }
        m.active
            .set(crate::proxy::IN_FLIGHT.load(Ordering::Relaxed) as i64);
        if let Some(cache) = self.services.cache {
            let (bytes, evictions) = cache.stats();
            m.cache_bytes.set(bytes);
            let seen = m.cache_evictions.get();
            m.cache_evictions.inc_by(evictions.saturating_sub(seen));
        }
        let body = Bytes::from(m.render());
        respond::write_body(session, 200, "text/plain; version=0.0.4", body, id, &[]).await
    }

    /// The rate limits through the shared (Redis) store.
    async fn shared_limits(&self, session: &Session, ctx: &mut Ctx) -> Result<Admit, Refusal> {
        let config = ctx.config.clone();
        let Some(route) = ctx.route() else {
            return Ok(Admit::Proxy);
        };
        let route_limit = route.rate_limit.map(|l| (route.label.as_str(), l));
        let (subject, key_limit) = subject_of(session, ctx);
        match config
            .quotas
            .take_shared(&self.services.limits, subject, key_limit, route_limit)
            .await
        {
            Ok(standing) => {
                ctx.limit = standing;
                Ok(Admit::Proxy)
            }
            Err(refused) => Err(self.refuse_limited(ctx, refused)),
        }
    }

    /// A refusal by a rate limit (or an unreachable store under `deny`); the gateway ceiling's
    /// token is given back.
    fn refuse_limited(&self, ctx: &Ctx, refused: Refused) -> Refusal {
        if ctx.ceiling_taken {
            ctx.config.quotas.give_back_ceiling(&self.services.limits);
        }
        match refused {
            Refused::Limit(e) => Refusal::limited(e, "rate limit exceeded"),
            Refused::StoreDown => Refusal(
                503,
                "rate limits cannot be checked right now",
                false,
                vec![("retry-after", "1".into())],
            ),
        }
    }

    /// `POST {base_path}/auth/token`: a JWT for the agent of a valid API key.
    async fn token(&self, session: &mut Session, ctx: &Ctx) -> Result<()> {
        let id = request_id::as_str(&ctx.request_id);
        if session.req_header().method != http::Method::POST {
            let body = respond::error_body(405, "the token endpoint answers POST", id);
            return respond::write_json(session, 405, body, id, &[("allow", "POST")]).await;
        }
        let auth = &ctx.config.auth;
        let identity = match auth.authenticate(&session.req_header().headers, Strategy::ApiKey) {
            Ok(identity) => identity,
            Err(f) => {
                let challenge = auth.challenge(Strategy::ApiKey, &f);
                let extra = [("www-authenticate", challenge.as_str())];
                return respond::json_error(session, 401, f.message(), id, false, &extra).await;
            }
        };
        let Some(jwt) = &auth.jwt else {
            return respond::json_error(session, 404, "no route matches this path", id, false, &[])
                .await;
        };
        let ttl = jwt.rules.expiry;
        let body = match jwt.mint(&identity.agent.id, ttl) {
            Ok(token) => serde_json::json!({
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": ttl.as_secs(),
            }),
            Err(e) => {
                log::error!("cannot mint a token: {e}");
                return respond::json_error(session, 500, "cannot issue a token", id, false, &[])
                    .await;
            }
        };
        respond::write_json(session, 200, Bytes::from(body.to_string()), id, &[]).await
    }
}

/// Purges are for agents with the `admin` scope, or clients in `caching.admin_networks`.
fn authorise_admin(session: &Session, cfg: &Config) -> Result<(), Refusal> {
    let nets = cfg
        .cache
        .as_ref()
        .map_or(&[][..], |c| &c.admin_networks[..]);
    if upstream::client_ip(session).is_some_and(|ip| nets.iter().any(|n| n.contains(ip))) {
        return Ok(());
    }
    match cfg
        .auth
        .authenticate(&session.req_header().headers, Strategy::Any)
    {
        Ok(identity) if identity.agent.admin => Ok(()),
        Ok(_) => Err(Refusal::new(403, "purging needs the admin scope", false)),
        Err(Failure::Missing) => Err(Refusal::new(
            403,
            "purging needs the admin scope or an admin network",
            false,
        )),
        Err(f) => Err(Refusal::unauthorized(cfg, Strategy::Any, &f)),
    }
}

/// Whether a raw HTTP/1 request head holds a Content-Length header line.
/// The route for the path: the first whose pattern matches and whose `match` holds. A
/// condition on the agent authenticates the caller (the identity is kept for the route).
fn match_route(
    cfg: &Config,
    req: &RequestHeader,
    path: &str,
    // `None`: not read yet; `Some(None)`: could not be read (too large, chunked).
    read: Option<Option<&Bytes>>,
    fetched_keys: bool,
) -> Matched {
    let mut body: Option<Option<serde_json::Value>> = None;
    for (index, route) in cfg.routes.iter().enumerate() {
        if !route.pattern.matches(path) {
            continue;
        }
        let Some(m) = &route.matcher else {
            return Matched::Route(index, None);
        };
        if m.needs_body() && read.is_none() {
            return Matched::ReadBody;
        }
        let json =
            body.get_or_insert_with(|| read.flatten().and_then(|b| serde_json::from_slice(b).ok()));
        if !m.request_holds(&req.method, &req.headers, json.as_ref()) {
            continue;
        }
        if !m.needs_agent() {
            return Matched::Route(index, None);
        }
        let Some(access) = &route.access else {
            continue;
        };
        match cfg.auth.authenticate(&req.headers, access.strategy) {
            Ok(identity) if m.agent_holds(&identity.agent.id) => {
                return Matched::Route(index, Some(identity));
            }
            Err(Failure::UnknownKid(kid)) if !fetched_keys => return Matched::FetchKey(kid),
            _ => continue,
        }
    }
    Matched::None
}

/// The route's pool for this caller (weights, stickiness, pools that can take requests).
fn choose_pool(session: &Session, ctx: &Ctx, route: &Route) -> Arc<Pool> {
    if let [(only, _)] = &route.backends.pools[..] {
        return only.clone();
    }
    route
        .backends
        .choose(&Who {
            agent: ctx.identity.as_ref().map(|i| &*i.agent.id),
            ip: upstream::client_ip(session),
            headers: &session.req_header().headers,
        })
        .clone()
}

/// An address of `pool` for this request (keyed by the caller when the pool hashes), not one
/// that already failed it.
fn select(session: &Session, ctx: &Ctx, pool: &Arc<Pool>) -> Option<Picked> {
    if !pool.hashes() {
        return pool.select(b"", &ctx.tried);
    }
    let who = Who {
        agent: ctx.identity.as_ref().map(|i| &*i.agent.id),
        ip: upstream::client_ip(session),
        headers: &session.req_header().headers,
    };
    let mut scratch = [0u8; 16];
    pool.select(who.key(&pool.hash_by, &mut scratch), &ctx.tried)
}

/// After `failed` failed this request: whether another address takes it, within the backend's
/// attempts and retry budget (that address is then held in `ctx.next` for `upstream_peer`).
fn retry_elsewhere(session: &Session, ctx: &mut Ctx, failed: &Picked) -> bool {
    let pool = &failed.pool;
    if ctx.tried.len() >= pool.retries.attempts as usize || !pool.retries.take() {
        return false;
    }
    ctx.tried.push(failed.addr.addr);
    ctx.next = select(session, ctx, pool);
    ctx.next.is_some()
}

/// The request announced no body (no `Transfer-Encoding`, no or a zero `Content-Length`).
fn no_body(req: &RequestHeader) -> bool {
    !req.headers.contains_key(http::header::TRANSFER_ENCODING)
        && req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_none_or(|v| v.as_bytes() == b"0")
}

fn no_backend() -> Box<Error> {
    Error::explain(
        ErrorType::Custom(crate::backends::NO_BACKEND),
        "no address of the backend can take the request",
    )
}

fn sent_content_length(head: &[u8]) -> bool {
    head.split(|b| *b == b'\n')
        .skip(1)
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}

fn check_total_timeout(ctx: &Ctx) -> Result<()> {
    match ctx.route().and_then(|r| r.total_timeout) {
        Some(total) if ctx.start.elapsed() > total => Error::e_explain(
            ErrorType::ReadTimedout,
            "the exchange exceeded the route's total_timeout",
        ),
        _ => Ok(()),
    }
}

/// The status and message of a failed request.
fn classify(e: &Error) -> (u16, &'static str) {
    use ErrorType::*;
    match (e.etype(), e.esource()) {
        (HTTPStatus(413), _) => (413, "request body larger than max_body_size"),
        (HTTPStatus(c), _) => (*c, "the request could not be served"),
        (Custom(crate::backends::NO_BACKEND), _) => {
            (503, "no healthy backend can take the request")
        }
        (
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout,
            ErrorSource::Upstream,
        ) => (504, "the backend did not answer in time"),
        (ReadTimedout, _)
            if e.context
                .as_ref()
                .is_some_and(|c| c.as_str().contains("total_timeout")) =>
        {
            (504, "the backend did not answer in time")
        }
        (_, ErrorSource::Upstream) => (502, "the backend could not be reached or answered badly"),
        (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => (0, ""),
        (_, ErrorSource::Downstream) => (400, "the request could not be read"),
        _ => (500, "internal error"),
    }
}
