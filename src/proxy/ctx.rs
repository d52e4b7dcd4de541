//! The per-request context: a few core fields and one group per concern, each starting empty
//! (`Default`), so that a new request costs a load of the configuration and little else.

use super::refusal;
use crate::auth::Identity;
use crate::backends::{Picked, Pool};
use crate::limits::Standing;
use crate::runtime::{Config, Route};
use crate::{request_id, upstream};
use bytes::Bytes;
use http::HeaderValue;
use pingora::proxy::Session;
use pingora::Result;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Requests in progress, so that a graceful stop can end as soon as they are done.
pub static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Set (SIGUSR2, sent by `clawgate upgrade`) shortly before this process hands its sockets
/// over: every response then closes its connection, so that no client holds a keep-alive
/// connection that the shutdown could close under a request it is sending.
pub static HANDING_OVER: AtomicBool = AtomicBool::new(false);

/// Counts a request in `IN_FLIGHT` for as long as its context lives.
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

/// Per-request state, passed to every hook.
pub struct Ctx {
    pub request_id: HeaderValue,
    pub start: Instant,
    pub config: Arc<Config>,
    pub caller: Caller,
    pub body: BodySeen,
    pub upstream: UpstreamPick,
    pub cache: CacheState,
    pub usage: UsageSeen,
    pub trace: TraceState,
    /// On semantic routes: the question, its lookup and the answer being kept.
    pub semantic: Option<Box<super::semantic::State>>,
    /// On MCP routes: the messages' method and tool, and the answer being filtered.
    pub mcp: Option<Box<super::mcp::State>>,
    /// An LLM request's token reservation, until its answer trues it up.
    pub tokens: Option<Box<super::tokens::Held>>,
    /// `include_usage`: the body as rewritten, and the answer's filter.
    pub stream_usage: Option<Box<super::stream_usage::StreamUsage>>,
    _in_flight: InFlight,
}

/// Who is calling and where admission sent them; kept across admission's passes (a body read
/// ahead, a JWKS fetched), which is why the two `*_taken`/`fetched` flags live here.
#[derive(Default)]
pub struct Caller {
    /// The matched route (an index into `config.routes`).
    pub route: Option<usize>,
    /// The route label for metrics of requests that matched no route.
    pub built_in: Option<&'static str>,
    /// The verified caller, on routes that require one.
    pub identity: Option<Identity>,
    /// The tightest rate limit that applied, for the response headers and variables.
    pub limit: Option<Standing>,
    /// A JWKS fetch was already tried for this request.
    pub fetched_keys: bool,
    /// A token of the gateway ceiling was taken (given back if a later limit refuses).
    pub ceiling_taken: bool,
}

/// The request body as far as the gateway looked at it.
#[derive(Default)]
pub struct BodySeen {
    /// The body was read ahead (`pre_read`: what was read, when it could be).
    pub read: bool,
    pub pre_read: Option<Bytes>,
    pub bytes_in: u64,
    /// The first chunks, to find the model when the response does not say (token usage).
    pub kept: Option<Vec<Bytes>>,
}

/// The backend side: the pool and address chosen, retries, and how the backend answered.
#[derive(Default)]
pub struct UpstreamPick {
    /// The route's pool chosen for this request (its weights, stickiness and health).
    pub pool: Option<Arc<Pool>>,
    /// Path and query sent to the backend when they differ from the request's (boxed: rare,
    /// and the context is moved with Pingora's per-request future).
    pub forward: Option<Box<http::Uri>>,
    /// The address the request is sent to (counted in flight while held).
    pub picked: Option<Picked>,
    /// The address a retry goes to, chosen when the previous one failed.
    pub next: Option<Picked>,
    /// Addresses that failed this request.
    pub tried: Vec<SocketAddr>,
    /// When the request went to the backend, and how long its response head took.
    pub sent: Option<Instant>,
    pub seconds: Option<f64>,
    pub status: Option<u16>,
}

/// The response cache's view of the request (on caching routes).
#[derive(Default)]
pub struct CacheState {
    /// What of the request body goes into the cache key (read ahead on caching routes).
    pub body: Option<Bytes>,
    /// The request may not use the cache (a body too large to key, `Cache-Control: no-store`).
    pub bypass: bool,
    /// A `PURGE` of this URL's cached answer, by an admin.
    pub purge: bool,
    /// The lookup missed (what `X-Cache` says even if the response then turns out uncacheable).
    pub missed: bool,
    /// `X-Cache` as answered, for the log and the metrics.
    pub status: Option<&'static str>,
}

/// What the response used: its bytes, and its LLM tokens (boxed: only on tracked responses).
#[derive(Default)]
pub struct UsageSeen {
    pub bytes_out: u64,
    pub tracker: Option<Box<crate::observe::usage::Tracker>>,
    pub tokens: Option<Box<crate::observe::usage::Usage>>,
    /// An LLM answer's latency clock (boxed: only on LLM requests).
    pub latency: Option<Box<crate::observe::latency::Clock>>,
}

/// Tracing: what the backend receives, and the spans of a sampled request.
#[derive(Default)]
pub struct TraceState {
    /// The `traceparent` the backend receives, when tracing is on.
    pub parent: Option<crate::observe::trace::Traceparent>,
    /// The spans of a sampled request (boxed: most requests are not sampled).
    pub sampled: Option<Box<crate::observe::trace::Sampled>>,
}

impl Ctx {
    pub fn new(config: Arc<Config>) -> Ctx {
        Ctx {
            request_id: HeaderValue::from_static(""),
            start: Instant::now(),
            config,
            caller: Caller::default(),
            body: BodySeen::default(),
            upstream: UpstreamPick::default(),
            cache: CacheState::default(),
            usage: UsageSeen::default(),
            trace: TraceState::default(),
            semantic: None,
            mcp: None,
            tokens: None,
            stream_usage: None,
            _in_flight: InFlight::new(),
        }
    }

    pub fn route(&self) -> Option<&Route> {
        self.caller.route.map(|i| &self.config.routes[i])
    }

    pub fn observed(&self) -> crate::observe::Seen<'_> {
        crate::observe::Seen {
            route: self
                .route()
                .map(|r| r.label.as_str())
                .or(self.caller.built_in)
                .unwrap_or("unmatched"),
            series: self.route().map(|r| &r.series),
            agent_id: self.caller.identity.as_ref().map(|i| &*i.agent.id),
            console_slots: (
                self.route().map(|r| &r.console),
                self.caller.identity.as_ref().map(|i| &i.agent.console),
            ),
            seconds: self.start.elapsed().as_secs_f64(),
            upstream_seconds: self.upstream.seconds,
            request_id: request_id::as_str(&self.request_id),
            upstream: self.upstream.picked.as_ref().map(|p| p.addr.label.as_str()),
            upstream_status: self.upstream.status,
            bytes_in: self.body.bytes_in,
            bytes_out: self.usage.bytes_out,
            limit: self.caller.limit.map(|l| l.remaining),
            tokens: self.usage.tokens.as_deref(),
            llm: super::llm::seen(self),
            cache: self.cache.status,
            semantic: self
                .semantic
                .as_ref()
                .map(|s| crate::observe::SemanticSeen {
                    similarity: s.outcome.similarity,
                    source: s.outcome.source.as_deref(),
                    miss: s.outcome.miss,
                    guard: s.outcome.guard,
                }),
            mcp: self.mcp.as_ref().map(|m| crate::observe::McpSeen {
                method: m.method.as_deref(),
                tool: m.tool.as_deref(),
                session: m.session.as_deref(),
                server: m.server.as_deref().unwrap_or_else(|| {
                    (self.route().and_then(|r| r.mcp.as_ref()))
                        .and_then(|s| s.servers.first())
                        .map_or("", |s| s.name.as_str())
                }),
                refused: m.refused,
            }),
        }
    }

    pub fn forward(&self) -> Option<upstream::Forward<'_>> {
        Some(upstream::Forward {
            route: self.route()?,
            host: &self.upstream.pool.as_ref()?.host_header,
            request_id: &self.request_id,
            identity: self.caller.identity.as_ref(),
            api_key_header: &self.config.auth.api_key_header,
            limit: self.caller.limit,
            traceparent: self.trace.parent.as_ref(),
        })
    }

    /// The route's `total_timeout` bounds the whole exchange, not each read.
    pub fn check_total_timeout(&self) -> Result<()> {
        match self.route().and_then(|r| r.total_timeout) {
            Some(total) if self.start.elapsed() > total => Err(refusal::total_timeout()),
            _ => Ok(()),
        }
    }

    /// Reads the request body ahead (up to 64 KiB, with a `Content-Length`) for a route's
    /// `match` on body fields or a POST's cache key; Pingora sends it on from its retry buffer.
    /// `keep`: token usage is tracked (the body may name the model).
    pub async fn read_ahead(&mut self, session: &mut Session, keep: bool) -> Result<()> {
        if self.body.read {
            return Ok(());
        }
        self.body.read = true;
        let Some(body) = crate::cache::read_body_for_key(session).await? else {
            return Ok(());
        };
        // Pre-read chunks never reach request_body_filter: account for them here.
        self.body.bytes_in += body.len() as u64;
        if self.body.bytes_in > self.config.max_body_size {
            return Err(refusal::body_too_large());
        }
        if keep {
            self.body.kept = Some(vec![body.clone()]);
        }
        self.body.pre_read = Some(body);
        Ok(())
    }

    /// On a caching route: whether the request may use the cache, and the part of its body
    /// that goes into the key (read ahead, up to 64 KiB).
    pub async fn prepare_cache_key(&mut self, session: &mut Session, keep: bool) -> Result<()> {
        if self.cache.purge {
            return Ok(());
        }
        let req = session.req_header();
        if !crate::cache::cacheable_method(&req.method)
            || crate::cache::client_forbids_store(req)
            || session.is_upgrade_req()
        {
            self.cache.bypass = true;
            return Ok(());
        }
        if req.method != http::Method::POST {
            return Ok(());
        }
        self.read_ahead(session, keep).await?;
        let Some(body) = &self.body.pre_read else {
            self.cache.bypass = true;
            return Ok(());
        };
        let parts = self
            .route()
            .and_then(|r| r.cache.as_ref())
            .map_or(&[][..], |rc| &rc.key[..]);
        self.cache.body = Some(Bytes::from(crate::cache::key::body_part(body, parts)));
        Ok(())
    }
}

/// Headers of the client's that never go with a call the gateway makes for it: those of the
/// exchange the gateway makes itself (framing, content negotiation; `accept-encoding` too, as
/// answers are read) and credentials of the client's.
pub const NEVER_PASSED: [&str; 15] = [
    "host",
    "content-length",
    "content-type",
    "accept",
    "accept-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "proxy-authorization",
    "cookie",
];

/// The client's headers (forwarding headers included) that go with a call the gateway makes
/// for it, less `NEVER_PASSED` and those in `skip`.
pub fn passed_on(
    session: &Session,
    ctx: &Ctx,
    skip: &[&str],
) -> Vec<(http::HeaderName, HeaderValue)> {
    let api_key = &ctx.config.auth.api_key_header;
    // With a verified caller the identity step has taken the client's credentials off the
    // head, so an Authorization there now is a route's `inject_auth`, the gateway's own to
    // send. On a route without authentication the two cannot be told apart: neither goes.
    let verified = ctx.caller.identity.is_some();
    (session.req_header().headers.iter())
        .filter(|(n, _)| !NEVER_PASSED.contains(&n.as_str()) && !skip.contains(&n.as_str()))
        .filter(|(n, _)| verified || (*n != http::header::AUTHORIZATION && *n != api_key))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}
