//! The `ProxyHttp` implementation: the request path, one short method per hook, each delegating
//! to a module. Read it top to bottom as the life of a request.

mod admit;
mod builtin;
mod ctx;
mod endpoints;
mod llm;
mod mcp;
mod mcp_federation;
mod refusal;
mod select;
mod semantic;
mod stream_usage;
#[cfg(test)]
mod tests;
mod tokens;
mod transcode;

pub use ctx::{Ctx, InFlight, HANDING_OVER, IN_FLIGHT};
pub use refusal::{Refusal, TOTAL_TIMEOUT};

use crate::runtime::{Config, Services};
use crate::{request_id, upstream};
use admit::{Admit, Input};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::HashBinary;
use pingora::cache::{
    CacheKey, CacheMeta, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType};
use refusal::internal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    /// No per-request modules: Pingora's default adds a response-compression module that is
    /// switched off yet still costs an allocation and two calls per request; clawgate passes
    /// bodies through unchanged.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.config.load_full())
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        crate::connections::request_started();
        if HANDING_OVER.load(Ordering::Relaxed) {
            session.set_keepalive(None);
        }
        let client_id = session.req_header().headers.get(&upstream::X_REQUEST_ID);
        ctx.request_id = request_id::from_client_or_new(client_id);
        if let Some(t) = &self.services.tracing {
            match t.begin(&session.req_header().headers) {
                crate::observe::trace::Begun::Sampled(s) => ctx.trace.sampled = Some(s),
                crate::observe::trace::Begun::Unsampled(parent) => ctx.trace.parent = Some(parent),
            }
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // The answers written here are boxed so that the common path's future stays small
        // (Pingora moves it around per request).
        match self.admission(session, ctx).await? {
            Ok(Admit::Proxy(plan)) => self.proxying(session, ctx, plan).await,
            Ok(Admit::BuiltIn(b)) => {
                let served = self.served(ctx);
                Box::pin(endpoints::serve(b, session, &served)).await?;
                Ok(true)
            }
            Ok(Admit::FetchKey(_) | Admit::SharedLimits(_) | Admit::ReadBody) => Err(internal()),
            Err(refusal) => {
                ctx.caller.built_in = ctx.caller.built_in.or(refusal.metric_label());
                let id = request_id::as_str(&ctx.request_id);
                Box::pin(refusal.write(session, id)).await?;
                Ok(true)
            }
        }
    }

    /// LLM token budgets are reserved here, after the cache: only by requests that go to the
    /// backend (`false`: refused, the answer is written).
    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        Box::pin(stream_usage::ask(session, ctx, self.services.track_tokens)).await?;
        if ctx.config.quotas.tokens.is_none() || ctx.route().is_none_or(|r| r.mcp.is_some()) {
            return Ok(true);
        }
        Ok(!Box::pin(tokens::reserve(&self.services, session, ctx)).await?)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let picked = match ctx.upstream.next.take() {
            Some(p) => p,
            None => {
                let pool = ctx.upstream.pool.as_ref().ok_or_else(internal)?;
                pool.count_request();
                let who = || select::who_of(session, ctx.caller.identity.as_ref());
                select::select(pool, who, &ctx.upstream.tried).ok_or_else(refusal::no_backend)?
            }
        };
        let route = ctx.route().ok_or_else(internal)?;
        let peer = upstream::peer(&ctx.config, route, &picked);
        ctx.upstream.picked = Some(picked);
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
        if let Some(failed) = ctx.upstream.picked.take() {
            failed.pool.report(&failed.addr, false);
            e.set_retry(select::retry_elsewhere(session, ctx, &failed));
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
        // A refusal of the gateway's own (a body it read and refused) says nothing of the peer.
        let ours = matches!(e.etype(), ErrorType::HTTPStatus(_));
        if let Some(p) = ctx.upstream.picked.as_ref().filter(|_| !ours) {
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
        let Some(p) = ctx.upstream.picked.take() else {
            return Ok(());
        };
        let status = resp.status.as_u16();
        p.pool.report(&p.addr, status < 500);
        // `retries.on_status`: an idempotent request whose body can be sent again (none, or read
        // ahead whole) goes to another address.
        let replayable = ctx.body.pre_read.is_some() || select::no_body(session.req_header());
        if p.pool.retries.on_status.contains(&status)
            && session.req_header().method.is_idempotent()
            && replayable
            && select::retry_elsewhere(session, ctx, &p)
        {
            let mut e = Error::explain(
                ErrorType::HTTPStatus(status),
                "the backend answered with a status retried on another address",
            );
            e.set_retry(true);
            return Err(e);
        }
        ctx.upstream.picked = Some(p);
        Ok(())
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        // A question the semantic cache took is its index's alone, exact repeats included.
        if let (Some(cache), Some(_), None) = (
            self.services.cache,
            ctx.route().and_then(|r| r.cache.as_ref()),
            &ctx.semantic,
        ) {
            if !ctx.cache.bypass {
                cache.enable(session);
            }
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        let route = ctx.route().ok_or_else(internal)?;
        let rc = route.cache.as_ref().ok_or_else(internal)?;
        let req = session.req_header();
        // A purge names the GET entry of its URL, of the agent in `X-Purge-Agent` (or the
        // route's shared or anonymous entry).
        let (method, agent) = if ctx.cache.purge {
            let agent = req
                .headers
                .get("x-purge-agent")
                .and_then(|v| v.to_str().ok());
            (&http::Method::GET, agent)
        } else {
            (
                &req.method,
                ctx.caller.identity.as_ref().map(|i| &*i.agent.id),
            )
        };
        Ok(crate::cache::request_key(
            &route.label,
            method,
            &req.headers,
            ctx.upstream.forward.as_deref().unwrap_or(&req.uri),
            agent,
            rc,
            ctx.cache.body.as_deref(),
        ))
    }

    fn is_purge(&self, _session: &Session, ctx: &Ctx) -> bool {
        ctx.cache.purge
    }

    fn cache_miss(&self, session: &mut Session, ctx: &mut Ctx) {
        ctx.cache.missed = true;
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
        if let Some(uri) = ctx.upstream.forward.take() {
            req.set_uri(*uri);
        }
        // A backend's URLs with different hosts: each address gets its own URL's `Host`.
        if let Some(p) = &ctx.upstream.picked {
            if let Some(host) = p.pool.host_for(&p.addr) {
                if !ctx.route().is_some_and(|r| r.preserve_host) {
                    req.insert_header(http::header::HOST, host.clone())?;
                }
            }
        }
        if self.services.metrics.is_some() || self.services.access_log.is_some() {
            ctx.upstream.sent = Some(Instant::now());
        }
        if session.is_upgrade_req() {
            let fwd = ctx.forward().ok_or_else(internal)?;
            upstream::forwarding_headers_in_place(session, req, &fwd)?;
        }
        stream_usage::head(ctx, req)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        stream_usage::body(ctx, body);
        if let Some(chunk) = body {
            if self.services.keep_bodies
                && ctx.body.bytes_in < crate::observe::usage::MAX_REQUEST as u64
            {
                ctx.body.kept.get_or_insert_default().push(chunk.clone());
            }
            ctx.body.bytes_in += chunk.len() as u64;
            if ctx.body.bytes_in > ctx.config.max_body_size {
                mcp::too_large(ctx);
                return Err(refusal::body_too_large());
            }
        }
        if ctx.mcp.is_some() {
            mcp::hold(body, end_of_stream, ctx, &self.services.limits).await?;
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.check_total_timeout()?;
        if let Some(sent) = ctx.upstream.sent.take() {
            ctx.upstream.seconds = Some(sent.elapsed().as_secs_f64());
            ctx.upstream.status = Some(resp.status.as_u16());
        }
        if let (Some(t), Some(sampled), Some(route)) = (
            &self.services.tracing,
            ctx.trace.sampled.as_mut(),
            ctx.caller.route,
        ) {
            t.end_upstream(
                sampled,
                resp.status.as_u16(),
                &ctx.config.routes[route].label,
            );
        }
        if ctx.mcp.is_some() {
            mcp::seal_session(ctx, resp);
        }
        if let Some(m) = ctx.mcp.as_mut() {
            m.response(resp, session.req_header().version)?;
        }
        if let Some(s) = ctx.semantic.as_mut() {
            let limit = ctx.config.cache.as_ref().map_or(0, |c| c.max_object_size);
            s.response(resp, usize::try_from(limit).unwrap_or(usize::MAX));
        }
        if ctx.route().is_some_and(|r| r.cache.is_some()) {
            let status = crate::cache::status(session.cache.phase(), ctx.cache.missed);
            resp.insert_header("x-cache", status)?;
            ctx.cache.status = Some(status);
        }
        llm::start(&self.services, session, resp, ctx);
        tokens::headers(ctx, resp)?;
        stream_usage::response(ctx, resp, session.req_header().version)?;
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
        ctx.check_total_timeout()?;
        if let Some(m) = ctx.mcp.as_mut() {
            m.body(body, end_of_stream)?;
        }
        if let Some(b) = body.as_ref() {
            llm::body(ctx, b);
        }
        // Counted above, the usage event the client did not ask for is not its to see (or keep).
        stream_usage::hide(ctx, body, end_of_stream);
        if let Some(s) = ctx.semantic.as_mut() {
            s.body(body.as_ref(), end_of_stream);
        }
        if let Some(b) = body {
            ctx.usage.bytes_out += b.len() as u64;
        }
        if end_of_stream {
            llm::end(ctx);
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        if ctx.tokens.is_some() {
            Box::pin(tokens::settle(&self.services, session, ctx)).await;
        }
        self.observe(session, e, ctx);
        crate::connections::after_request(&self.services.h2_conns, session, e);
        // Stored after the log line is handed over: the answer is complete by now.
        let Some(s) = ctx.semantic.take() else {
            return;
        };
        if let Some(route) = ctx.route() {
            if let Some(rc) = &route.cache {
                let id = request_id::as_str(&ctx.request_id);
                s.finish(&self.services, &route.label, rc, id, e.is_some());
            }
        }
    }

    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, e: &Error) -> bool {
        mcp::refused_held(ctx, e)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if let Some(failed) = mcp::answer_refused(session, ctx).await {
            return failed;
        }
        if let Some(ended) = refusal::end_cut_stream(session, e, &ctx.request_id).await {
            return ended;
        }
        let refusal = Refusal::of_error(e);
        if let Some(r) = refusal
            .as_ref()
            .filter(|_| session.response_written().is_none())
        {
            // The request id may be unset when the failure came before early_request_filter.
            if ctx.request_id.is_empty() {
                ctx.request_id = request_id::new();
            }
            let _ = r.write(session, request_id::as_str(&ctx.request_id)).await;
        }
        FailToProxy {
            error_code: refusal.map_or(0, |r| r.status()),
            can_reuse_downstream: false,
        }
    }
}

impl Gateway {
    /// The request's metrics, log line, console counts and spans.
    fn observe(&self, session: &Session, e: Option<&Error>, ctx: &mut Ctx) {
        let sampled = ctx.trace.sampled.take();
        let s = &*self.services;
        let nothing = s.metrics.is_none() && s.access_log.is_none() && s.console.is_none();
        if nothing && sampled.is_none() {
            return;
        }
        crate::observe::finished(s, session, e, &ctx.observed(), sampled);
    }

    /// Admission, with its session-bound steps: a body read ahead or a JWKS fetched (each at
    /// most once, then decided again), and the shared rate limits.
    async fn admission(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> Result<Result<Admit, Refusal>> {
        let mut decision = self.admit(session, ctx);
        // Two rounds: a body read and a key fetched can each send admission back once, in
        // either order (a route matched on the agent before one matched on the body).
        for _ in 0..2 {
            match &decision {
                Ok(Admit::ReadBody) => {
                    let keep = self.services.track_tokens;
                    Box::pin(ctx.read_ahead(session, keep)).await?
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
        if let Ok(Admit::SharedLimits(plan)) = decision {
            decision = Box::pin(async {
                let input = self.input(session, &ctx.config);
                admit::shared_limits(&input, &mut ctx.caller, plan).await
            })
            .await;
        }
        Ok(decision)
    }

    fn admit(&self, session: &Session, ctx: &mut Ctx) -> Result<Admit, Refusal> {
        let input = self.input(session, &ctx.config);
        let body = ctx.body.read.then_some(ctx.body.pre_read.as_ref());
        admit::admit(&input, body, &mut ctx.caller)
    }

    fn input<'a>(&'a self, session: &'a Session, cfg: &'a Config) -> Input<'a> {
        let head = session.req_header();
        // Only a chunked request needs the raw head searched (see `admit::framing`).
        let chunked = head.headers.contains_key(http::header::TRANSFER_ENCODING);
        let sent_content_length = chunked
            && session
                .as_http1()
                .is_some_and(|h1| admit::sent_content_length(&h1.get_headers_raw_bytes()));
        Input {
            head,
            peer: upstream::client_ip(session),
            sent_content_length,
            chunked,
            cfg,
            limits: &self.services.limits,
            serves_metrics: self.services.metrics.is_some() && cfg.metrics_listen.is_none(),
        }
    }

    /// An admitted request about to go upstream: its pool, trace context, forwarding headers
    /// and cache key; `true` when the semantic cache answered it instead.
    async fn proxying(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        plan: admit::Plan,
    ) -> Result<bool> {
        ctx.upstream.pool = Some(plan.pool);
        ctx.upstream.forward = plan.forward;
        ctx.cache.purge = plan.purge;
        if let (Some(t), Some(sampled)) = (&self.services.tracing, ctx.trace.sampled.as_mut()) {
            ctx.trace.parent = Some(t.upstream(sampled));
        }
        if let Some(fwd) = ctx.forward() {
            upstream::set_forwarding_headers(session, &fwd);
        }
        if ctx.route().is_some_and(|r| r.mcp.is_some()) {
            let keep = self.services.track_tokens;
            let limits = &self.services.limits;
            if let Some(r) = Box::pin(mcp::admit(session, ctx, limits, keep)).await? {
                mcp::write(session, r, request_id::as_str(&ctx.request_id)).await?;
                return Ok(true);
            }
        }
        if Box::pin(transcode::answer(session, ctx)).await? {
            return Ok(true);
        }
        if let Some(sc) = ctx.route().and_then(|r| r.semantic.clone()) {
            if Box::pin(semantic::lookup(&self.services, session, ctx, sc)).await? {
                return Ok(true);
            }
        }
        if ctx.semantic.is_none()
            && self.services.cache.is_some()
            && ctx.route().is_some_and(|r| r.cache.is_some())
        {
            let keep = self.services.track_tokens;
            Box::pin(ctx.prepare_cache_key(session, keep)).await?;
        }
        Ok(false)
    }

    fn served<'a>(&'a self, ctx: &'a Ctx) -> endpoints::Served<'a> {
        endpoints::Served {
            config: &ctx.config,
            request_id: request_id::as_str(&ctx.request_id),
            started: self.started,
            metrics: self.services.metrics.as_deref(),
            cache: self.services.cache,
            semantic_store: self.services.semantic_store.as_deref(),
        }
    }
}
