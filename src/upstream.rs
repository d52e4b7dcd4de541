//! Backends: the peer for a route, the forwarded URI, and the headers a backend receives.

use crate::auth::Identity;
use crate::backends::Picked;
use crate::limits::Standing;
use crate::runtime::{Config, Route, StripRule};
use crate::transforms::{self, Vars};
use http::header::HOST;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::Session;
use std::net::IpAddr;

// Prebuilt names: no parsing per request.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_AGENT_ID: HeaderName = HeaderName::from_static("x-agent-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The connection options for a request to the picked address: the route's timeouts, else the
/// backend's, else the gateway's.
pub fn peer(config: &Config, route: &Route, picked: &Picked) -> Box<HttpPeer> {
    let pool = &picked.pool;
    let connect = route
        .connect_timeout
        .or(pool.connect_timeout)
        .unwrap_or(config.connect_timeout);
    let read = route
        .timeout
        .or(pool.timeout)
        .unwrap_or(crate::runtime::DEFAULT_TIMEOUT);
    let read = match route.total_timeout {
        Some(total) => total.min(read),
        None => read,
    };
    Box::new(pool.peer(&picked.addr, connect, read))
}

/// Resolves every pool's hosts before the gateway serves (blocking; at start only).
pub fn resolve_all_blocking(config: &Config) {
    let pools = config.pools();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match runtime {
        Ok(rt) => rt.block_on(async {
            for p in pools {
                p.update().await;
            }
        }),
        Err(e) => log::error!("cannot resolve the backends before start: {e}"),
    }
}

/// The path and query the backend receives: the normalised path relative to `base_path`, with
/// the route's `strip_prefix` removed, appended to the backend URL's own path.
/// `Ok(None)`: the request's own URI already is that (the common case, nothing to rewrite).
pub fn forward_uri(
    config: &Config,
    route: &Route,
    prefix: &str,
    path: &str,
    original: &http::Uri,
) -> Result<Option<http::Uri>, http::uri::InvalidUri> {
    let query = original.query();
    let mut rel = path.strip_prefix(config.base_path.as_str()).unwrap_or(path);
    if let StripRule::Prefix(prefix) = &route.strip {
        if let Some(rest) = rel.strip_prefix(prefix.as_str()) {
            if rest.is_empty() || rest.starts_with('/') {
                rel = rest;
            }
        }
    }
    if prefix.is_empty() && rel == original.path() && original.scheme().is_none() {
        return Ok(None);
    }
    let mut out =
        String::with_capacity(prefix.len() + rel.len() + query.map_or(0, |q| q.len() + 1) + 1);
    out.push_str(prefix);
    // The route's whole path stripped: the backend URL's own path as written (`/mcp`, not
    // `/mcp/`, which servers may redirect), or `/` when it has none.
    if rel.is_empty() && prefix.is_empty() {
        out.push('/');
    } else {
        out.push_str(rel);
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    http::Uri::try_from(out).map(Some)
}

/// What a forwarded request is given besides the route's own settings.
pub struct Forward<'a> {
    pub route: &'a Route,
    /// `Host` of the chosen backend.
    pub host: &'a HeaderValue,
    pub request_id: &'a HeaderValue,
    /// The verified caller: its id goes out as X-Agent-ID, its credentials do not.
    pub identity: Option<&'a Identity>,
    pub api_key_header: &'a HeaderName,
    /// The tightest rate limit that applied: response headers and `${rate_limit_*}`.
    pub limit: Option<Standing>,
    /// The `traceparent` of the upstream call (a client's `tracestate` passes unchanged).
    pub traceparent: Option<&'a crate::observe::trace::Traceparent>,
}

pub fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

impl Forward<'_> {
    fn vars(&self, client_ip: Option<IpAddr>) -> Vars<'_> {
        Vars {
            agent_id: self.identity.map(|i| &*i.agent.id),
            request_id: request_id_str(self.request_id),
            route: &self.route.label,
            client_ip,
            api_key: self.identity.and_then(|i| i.api_key.as_ref()),
            rate_limit: self.limit.map(|l| (l.remaining, l.limit, l.reset_secs)),
        }
    }

    /// X-Agent-ID from the identity (a client's own is never passed on), credentials removed,
    /// then the request transforms.
    fn apply_identity_and_transforms(
        &self,
        headers: &mut impl transforms::Headers,
        client_ip: Option<IpAddr>,
    ) {
        headers.remove(&X_AGENT_ID);
        if let Some(parent) = self.traceparent {
            headers.set(&TRACEPARENT, parent.header_value());
        }
        if let Some(identity) = self.identity {
            headers.remove(&http::header::AUTHORIZATION);
            headers.remove(self.api_key_header);
            headers.set(&X_AGENT_ID, identity.agent.header.clone());
        }
        if !self.route.request_transforms.is_empty() {
            let vars = self.vars(client_ip);
            transforms::apply_all(&self.route.request_transforms, headers, &vars);
        }
    }
}

fn request_id_str(v: &HeaderValue) -> &str {
    std::str::from_utf8(v.as_bytes()).unwrap_or("")
}

/// The headers the gateway sets on a forwarded request: Host, X-Forwarded-Host/-Proto/-For and
/// X-Request-ID (`None`: remove).
fn forwarding_set(
    session: &Session,
    fwd: &Forward,
    client_ip: Option<IpAddr>,
) -> [(&'static HeaderName, Option<HeaderValue>); 5] {
    let (route, request_id) = (fwd.route, fwd.request_id);
    let downstream = session.req_header();
    // HeaderValue clones share their bytes: no copies here.
    let original_host = downstream.headers.get(HOST).cloned().or_else(|| {
        downstream
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let xff = client_ip.and_then(|ip| {
        let prev = downstream
            .headers
            .get(&X_FORWARDED_FOR)
            .map(|v| v.as_bytes());
        let mut text = Vec::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
        if let Some(prev) = prev.filter(|p| !p.trim_ascii().is_empty()) {
            text.extend_from_slice(prev);
            text.extend_from_slice(b", ");
        }
        crate::text::push_ip(&mut text, ip);
        HeaderValue::from_maybe_shared(bytes::Bytes::from(text)).ok()
    });
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let host = match (&original_host, route.preserve_host) {
        (Some(h), true) => h.clone(),
        _ => fwd.host.clone(),
    };
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    [
        (&HOST, Some(host)),
        (&X_FORWARDED_HOST, original_host),
        (&X_FORWARDED_PROTO, Some(proto)),
        (&X_FORWARDED_FOR, xff),
        (&X_REQUEST_ID, Some(request_id.clone())),
    ]
}

/// Sets the forwarding headers on the client's request head itself, before Pingora copies it
/// for the backend, so that they are written once and copied with it.
///
/// Pingora's head keeps a second map of header-name spellings, and every `insert_header` parses
/// the name and updates both maps (about 2,000 instructions each, measured). The head is taken
/// apart here instead (no copy), its plain map edited with prebuilt names, and put back without
/// the spelling map, which makes Pingora's copy a third cheaper. Header names then reach the
/// backend in lower case (Envoy does the same); HTTP header names are case-insensitive.
///
/// Upgrade requests (WebSocket) are left alone: Pingora's upgrade path needs the head as it was
/// parsed; `forwarding_headers_in_place` handles them on the copy.
pub fn set_forwarding_headers(session: &mut Session, fwd: &Forward) {
    if session.is_upgrade_req() {
        return;
    }
    let client_ip = client_ip(session);
    let set = forwarding_set(session, fwd, client_ip);
    let req = session.req_header_mut();
    let end_stream = req.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(req, placeholder));
    let headers = &mut parts.headers;
    // Room for all the gateway adds (X-Agent-ID, traceparent too): one grow, not two.
    headers.reserve(set.len() + 1 + usize::from(fwd.traceparent.is_some()));
    for (name, value) in set {
        match value {
            Some(v) => {
                headers.insert(name.clone(), v);
            }
            None => {
                headers.remove(name);
            }
        }
    }
    fwd.apply_identity_and_transforms(headers, client_ip);
    *req = RequestHeader::from(parts);
    if let Some(end) = end_stream {
        req.set_send_end_stream(end);
    }
}

/// The upstream copy of an upgrade request, edited through Pingora's own methods (upgrades are
/// rare enough for the slower path).
pub fn forwarding_headers_in_place(
    session: &Session,
    req: &mut RequestHeader,
    fwd: &Forward,
) -> Result<()> {
    let client_ip = client_ip(session);
    for (name, value) in forwarding_set(session, fwd, client_ip) {
        match value {
            Some(v) => req.insert_header(name.clone(), v)?,
            None => {
                req.remove_header(name);
            }
        }
    }
    fwd.apply_identity_and_transforms(req, client_ip);
    Ok(())
}

/// Adds `X-Request-ID` and the response transforms to the response head, through its plain
/// header map for the same reason as the request head (a `101 Switching Protocols` head is edited
/// in place).
pub fn set_response_headers(
    resp: &mut ResponseHeader,
    fwd: &Forward,
    client_ip: Option<IpAddr>,
) -> Result<()> {
    let transforms = &fwd.route.response_transforms;
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        resp.insert_header(X_REQUEST_ID.clone(), fwd.request_id.clone())?;
        if let Some(l) = &fwd.limit {
            for (name, value) in limit_headers(l) {
                resp.insert_header(name.clone(), value)?;
            }
        }
        transforms::apply_all(transforms, resp, &fwd.vars(client_ip));
        return Ok(());
    }
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts = http::response::Parts::from(std::mem::replace(resp, placeholder));
    parts
        .headers
        .insert(X_REQUEST_ID.clone(), fwd.request_id.clone());
    if let Some(l) = &fwd.limit {
        for (name, value) in limit_headers(l) {
            parts.headers.insert(name.clone(), value);
        }
    }
    if !transforms.is_empty() {
        transforms::apply_all(transforms, &mut parts.headers, &fwd.vars(client_ip));
    }
    *resp = ResponseHeader::from(parts);
    Ok(())
}

/// The tightest limit's standing: the `X-RateLimit-*` headers and the IETF structured fields
/// (draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` and `RateLimit`).
pub fn limit_headers(l: &Standing) -> [(&'static HeaderName, HeaderValue); 5] {
    let text = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""));
    [
        (&X_RATELIMIT_LIMIT, HeaderValue::from(l.limit)),
        (&X_RATELIMIT_REMAINING, HeaderValue::from(l.remaining)),
        (&X_RATELIMIT_RESET, HeaderValue::from(l.reset_secs)),
        (
            &RATELIMIT_POLICY,
            text(format!("\"limit\";q={};w={}", l.limit, l.window_secs)),
        ),
        (
            &RATELIMIT,
            text(format!("\"limit\";r={};t={}", l.remaining, l.reset_secs)),
        ),
    ]
}

/// Adds `X-Request-ID` to a response of a request that matched no route.
pub fn set_response_request_id(resp: &mut ResponseHeader, id: &HeaderValue) -> Result<()> {
    resp.insert_header(X_REQUEST_ID.clone(), id.clone())
}
