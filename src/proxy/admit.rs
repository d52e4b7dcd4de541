//! Admission: what `request_filter` decides before a request may go upstream, as named steps in
//! DESIGN §3 order over plain inputs (no session), each refusing with a typed `Refusal`.

use super::builtin::BuiltIn;
use super::ctx::Caller;
use super::endpoints::authorise_admin;
use super::refusal::Refusal;
use super::select;
use crate::auth::{Access, Failure, Identity};
use crate::backends::Pool;
use crate::limits::{Limit, Refused, Subject};
use crate::runtime::{Config, Route};
use crate::{router, upstream};
use bytes::Bytes;
use pingora::http::RequestHeader;
use std::borrow::Cow;
use std::net::IpAddr;
use std::ops::ControlFlow::{self, Break, Continue};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// What admission reads: the request head as Pingora parsed it, and the running tables.
pub struct Input<'a> {
    pub head: &'a RequestHeader,
    /// The address the connection comes from.
    pub peer: Option<IpAddr>,
    /// The raw HTTP/1 head had a Content-Length line (Pingora drops the header when
    /// Transfer-Encoding is present, so the parsed head cannot tell).
    pub sent_content_length: bool,
    /// The request has a Transfer-Encoding header (looked up once, for both uses).
    pub chunked: bool,
    pub cfg: &'a Config,
    /// The limits' buckets and shared store (they outlive the tables).
    pub limits: &'a crate::limits::Shared,
    /// Metrics are on and served on the gateway's own port.
    pub serves_metrics: bool,
}

/// What admission decided for a request it did not refuse.
pub enum Admit {
    Proxy(Plan),
    /// Everything but the rate limits, which the shared store decides (`shared_limits`).
    SharedLimits(Plan),
    BuiltIn(BuiltIn),
    /// A JWT names a key id we do not know: fetch the JWKS, then decide again.
    FetchKey(String),
    /// A route's `match` looks into the body: read it ahead, then decide again.
    ReadBody,
}

/// Where a proxied request goes.
pub struct Plan {
    pub pool: Arc<Pool>,
    /// The path and query the backend receives, when they differ from the request's.
    pub forward: Option<Box<http::Uri>>,
    /// A `PURGE` of the URL's cached answer.
    pub purge: bool,
}

/// Goes on with a step's value, or ends admission with what the step decided.
macro_rules! next {
    ($step:expr) => {
        match $step? {
            Continue(v) => v,
            Break(decided) => return Ok(decided),
        }
    };
}

/// The admission steps, in order. `body`: `None` while not read ahead; `Some(None)` when it
/// could not be (too large, chunked).
pub fn admit(
    input: &Input,
    body: Option<Option<&Bytes>>,
    caller: &mut Caller,
) -> Result<Admit, Refusal> {
    head_limits(input.head, input.cfg)?;
    framing(input, input.cfg)?;
    let path = normalise(input.head)?;
    let built_in = BuiltIn::of(&path, input.cfg, input.serves_metrics);
    if let Some(b) = built_in.filter(|b| !b.limited()) {
        return Ok(enter(b, caller));
    }
    // Shed before any work: health and metrics above never are.
    if (input.cfg.max_in_flight).is_some_and(|m| super::IN_FLIGHT.load(Relaxed) > m) {
        return Err(Refusal::Overloaded);
    }
    take_ceiling(input, caller)?;
    if let Some(b) = built_in {
        return Ok(enter(b, caller));
    }
    let (route, matched) = next!(route_for(input, &path, body, caller));
    if input.head.method.as_str() == "PURGE" {
        return purge(input, route, &path).map(Admit::Proxy);
    }
    if let Some(access) = &route.access {
        let identity = next!(authenticate(input, access, matched, caller));
        authorise(access, &identity, &path)?;
        caller.identity = Some(identity);
    }
    let plan = plan(input, route, &path, caller.identity.as_ref(), false)?;
    rate_limits(input, route, caller, plan)
}

/// Header count and size within `max_headers` and `max_header_size`.
fn head_limits(head: &RequestHeader, cfg: &Config) -> Result<(), Refusal> {
    if head.headers.len() > cfg.max_headers {
        return Err(Refusal::HeadersTooMany);
    }
    let bytes: usize = head
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if bytes as u64 > cfg.max_header_size {
        return Err(Refusal::HeadersTooLarge);
    }
    Ok(())
}

/// One unambiguous body length, within `max_body_size`.
fn framing(input: &Input, cfg: &Config) -> Result<(), Refusal> {
    let (head, chunked, sent_length) = (input.head, input.chunked, input.sent_content_length);
    // Pingora drops Content-Length when Transfer-Encoding is present (RFC 9112 §6.3); a
    // request that sent both is a smuggling attempt or a broken client: refuse it.
    if chunked && sent_length {
        return Err(Refusal::LengthAndChunked);
    }
    let mut length = None;
    for v in head.headers.get_all(http::header::CONTENT_LENGTH) {
        let n = std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or(Refusal::InvalidLength)?;
        if length.is_some_and(|l| l != n) || chunked {
            return Err(Refusal::ConflictingFraming);
        }
        length = Some(n);
    }
    if length.is_some_and(|n| n > cfg.max_body_size) {
        return Err(Refusal::BodyTooLarge);
    }
    Ok(())
}

fn normalise(head: &RequestHeader) -> Result<Cow<'_, str>, Refusal> {
    router::normalise(head.uri.path()).map_err(Refusal::BadPath)
}

fn enter(b: BuiltIn, caller: &mut Caller) -> Admit {
    caller.built_in = Some(b.label());
    Admit::BuiltIn(b)
}

/// `gateway.rate_limit`, once per request (admission may run again after a body read).
fn take_ceiling(input: &Input, caller: &mut Caller) -> Result<(), Refusal> {
    if !caller.ceiling_taken {
        let quotas = &input.cfg.quotas;
        caller.ceiling_taken = (quotas.take_ceiling(input.limits)).map_err(Refusal::OverCeiling)?;
    }
    Ok(())
}

/// The route, and the caller when a `match` on the agent authenticated it.
fn route_for<'a>(
    input: &Input<'a>,
    path: &str,
    body: Option<Option<&Bytes>>,
    caller: &mut Caller,
) -> Result<ControlFlow<Admit, (&'a Route, Option<Identity>)>, Refusal> {
    match match_route(input.cfg, input.head, path, body, caller.fetched_keys) {
        Matched::Route(index, identity) => {
            caller.route = Some(index);
            Ok(Continue((&input.cfg.routes[index], identity)))
        }
        Matched::ReadBody => Ok(Break(Admit::ReadBody)),
        Matched::FetchKey(kid) => {
            caller.fetched_keys = true;
            Ok(Break(Admit::FetchKey(kid)))
        }
        Matched::None => Err(Refusal::NoRoute),
    }
}

/// A `PURGE` of a cached URL: on caching routes, by admins; no route access or limits apply.
fn purge(input: &Input, route: &Route, path: &str) -> Result<Plan, Refusal> {
    if route.cache.is_none() {
        return Err(Refusal::NotCaching);
    }
    authorise_admin(input.peer, &input.head.headers, input.cfg)?;
    plan(input, route, path, None, true)
}

/// The caller of a route with access rules (a `match` on the agent may have found it already).
fn authenticate(
    input: &Input,
    access: &Access,
    matched: Option<Identity>,
    caller: &mut Caller,
) -> Result<ControlFlow<Admit, Identity>, Refusal> {
    let auth = &input.cfg.auth;
    match matched.map_or_else(
        || auth.authenticate(&input.head.headers, access.strategy),
        Ok,
    ) {
        Ok(identity) => Ok(Continue(identity)),
        Err(Failure::UnknownKid(kid)) if !caller.fetched_keys => {
            caller.fetched_keys = true;
            Ok(Break(Admit::FetchKey(kid)))
        }
        Err(f) => {
            let metadata = resource_metadata(input, caller);
            let strategy = access.strategy;
            Err(Refusal::unauthorized(
                auth,
                strategy,
                &f,
                metadata.as_deref(),
            ))
        }
    }
}

/// On an MCP route, when `auth.jwt` names an issuer that is a URL: where the route's RFC 9728 metadata is,
/// for the 401's challenge (MCP clients read it to find the authorization server).
fn resource_metadata(input: &Input, caller: &Caller) -> Option<String> {
    use crate::mcp::resource;
    let cfg = input.cfg;
    resource::authorization_server(cfg.auth.jwt.as_ref()?.rules.issuer.as_ref()?)?;
    let route = cfg.routes.get(caller.route?)?;
    route.mcp.as_ref()?;
    let host = resource::host(&input.head.headers, &input.head.uri);
    let origin = resource::origin(cfg.process.tls.is_some(), host);
    let path = resource::route_path(route.pattern.literal_prefix());
    Some(resource::challenge_parameter(&origin, path))
}

/// The agent may call this path (its scopes, or the route's allowed agents).
fn authorise(access: &Access, identity: &Identity, path: &str) -> Result<(), Refusal> {
    access
        .authorise(&identity.agent, path)
        .map_err(Refusal::Forbidden)
}

/// The route's pool for this caller, and the URI its backend receives.
fn plan(
    input: &Input,
    route: &Route,
    path: &str,
    identity: Option<&Identity>,
    purge: bool,
) -> Result<Plan, Refusal> {
    let who = select::who(identity, input.peer, &input.head.headers);
    let pool = select::choose_pool(route, &who);
    let forward = upstream::forward_uri(input.cfg, route, &pool.path_prefix, path, &input.head.uri)
        .map_err(|_| Refusal::Unforwardable)?;
    Ok(Plan {
        pool,
        forward: forward.map(Box::new),
        purge,
    })
}

/// The agent's and the route's rate limits on this instance; with a shared store, left to
/// `shared_limits` (it needs a round trip).
fn rate_limits(
    input: &Input,
    route: &Route,
    caller: &mut Caller,
    plan: Plan,
) -> Result<Admit, Refusal> {
    let quotas = &input.cfg.quotas;
    if !quotas.apply_to(route.rate_limit) {
        return Ok(Admit::Proxy(plan));
    }
    if input.limits.store.is_some() {
        return Ok(Admit::SharedLimits(plan));
    }
    let (subject, key_limit) = subject_of(input, caller.identity.as_ref());
    let route_limit = route.rate_limit.map(|l| (route.label.as_str(), l));
    match quotas.take(input.limits, subject, key_limit, route_limit) {
        Ok(standing) => {
            caller.limit = standing;
            Ok(Admit::Proxy(plan))
        }
        Err(e) => Err(refuse_limited(input, caller, Refused::Limit(e))),
    }
}

/// The rate limits through the shared (Redis) store.
pub async fn shared_limits(
    input: &Input<'_>,
    caller: &mut Caller,
    plan: Plan,
) -> Result<Admit, Refusal> {
    let Some(route) = caller.route.map(|i| &input.cfg.routes[i]) else {
        return Ok(Admit::Proxy(plan));
    };
    let route_limit = route.rate_limit.map(|l| (route.label.as_str(), l));
    let (subject, key_limit) = subject_of(input, caller.identity.as_ref());
    let quotas = &input.cfg.quotas;
    let taken = quotas.take_shared(input.limits, subject, key_limit, route_limit);
    match taken.await {
        Ok(standing) => {
            caller.limit = standing;
            Ok(Admit::Proxy(plan))
        }
        Err(refused) => Err(refuse_limited(input, caller, refused)),
    }
}

/// A refusal by a rate limit (or an unreachable store under `deny`) gives the gateway
/// ceiling's token back: the request never ran.
fn refuse_limited(input: &Input, caller: &Caller, refused: Refused) -> Refusal {
    if caller.ceiling_taken {
        input.cfg.quotas.give_back_ceiling(input.limits);
    }
    Refusal::of_limits(refused)
}

/// Who a request counts against, and the API key's own limit.
fn subject_of<'a>(input: &Input, identity: Option<&'a Identity>) -> (Subject<'a>, Option<Limit>) {
    match identity {
        Some(i) => (Subject::Agent(&i.agent.id), i.key_limit),
        None => {
            let trusted = &input.cfg.trusted_proxies;
            let ip = crate::client_addr::client_ip(input.peer, &input.head.headers, trusted);
            (Subject::Client(ip), None)
        }
    }
}

/// The outcome of matching a path to a route.
enum Matched {
    /// The route, and the caller when a `match` on the agent authenticated it.
    Route(usize, Option<Identity>),
    ReadBody,
    FetchKey(String),
    None,
}

/// The route for the path: the first whose pattern matches and whose `match` holds. A
/// condition on the agent authenticates the caller (the identity is kept for the route).
fn match_route(
    cfg: &Config,
    req: &RequestHeader,
    path: &str,
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

/// Whether a raw HTTP/1 request head holds a Content-Length header line.
pub fn sent_content_length(head: &[u8]) -> bool {
    head.split(|b| *b == b'\n')
        .skip(1)
        .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"))
}
