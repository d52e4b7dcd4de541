//! The gateway's own endpoints (health, metrics, token, cache admin): which path names one,
//! the methods each answers (checked once, for all), and their answers.

use super::builtin::BuiltIn;
use super::refusal::Refusal;
use crate::auth::{Failure, Strategy};
use crate::cache::Cache;
use crate::observe::metrics::Metrics;
use crate::respond;
use crate::runtime::Config;
use bytes::Bytes;
use http::HeaderMap;
use pingora::proxy::Session;
use pingora::Result;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What the endpoints read beside the request (process-lived parts passed in by the proxy).
pub struct Served<'a> {
    pub config: &'a Config,
    pub request_id: &'a str,
    pub started: Instant,
    pub metrics: Option<&'a Metrics>,
    pub cache: Option<&'static Cache>,
    pub semantic_store: Option<&'a crate::semantic::shared::Store>,
}

/// Answers a built-in endpoint.
pub async fn serve(b: BuiltIn, session: &mut Session, s: &Served<'_>) -> Result<()> {
    if !b.allows(&session.req_header().method) {
        return Refusal::MethodNotAllowed(b)
            .write(session, s.request_id)
            .await;
    }
    match b {
        BuiltIn::Health => health(session, s).await,
        BuiltIn::Metrics => metrics(session, s).await,
        BuiltIn::Token => match token(session, s) {
            Ok(body) => respond::write_json(session, 200, body, s.request_id, &[]).await,
            Err(r) => r.write(session, s.request_id).await,
        },
        BuiltIn::CacheAdmin => cache_admin(session, s).await,
        BuiltIn::ProtectedResource(i) => protected_resource(session, s, i).await,
    }
}

/// An MCP route's RFC 9728 metadata: the resource is the route on the host the client asked.
async fn protected_resource(session: &mut Session, s: &Served<'_>, i: usize) -> Result<()> {
    use crate::mcp::resource;
    let issuer = s
        .config
        .auth
        .jwt
        .as_ref()
        .and_then(|j| j.rules.issuer.as_deref());
    let (Some(route), Some(issuer)) = (s.config.routes.get(i), issuer) else {
        return Refusal::NoRoute.write(session, s.request_id).await;
    };
    let req = session.req_header();
    let host = resource::host(&req.headers, &req.uri);
    let origin = resource::origin(s.config.process.tls.is_some(), host);
    let path = resource::route_path(route.pattern.literal_prefix());
    let body = Bytes::from(resource::document(&origin, path, issuer));
    respond::write_json(session, 200, body, s.request_id, &[]).await
}

async fn health(session: &mut Session, s: &Served<'_>) -> Result<()> {
    let body = serde_json::json!({
        "status": "healthy",
        "version": s.config.version,
        "uptime": respond::human_uptime(s.started.elapsed().as_secs()),
        "name": s.config.name,
    });
    let body = Bytes::from(body.to_string());
    respond::write_json(session, 200, body, s.request_id, &[]).await
}

/// Prometheus text.
async fn metrics(session: &mut Session, s: &Served<'_>) -> Result<()> {
    let Some(m) = s.metrics else {
        return Ok(());
    };
    m.active
        .set(super::ctx::IN_FLIGHT.load(Ordering::Relaxed) as i64);
    if let Some(cache) = s.cache {
        let (bytes, evictions) = cache.stats();
        m.cache_bytes.set(bytes);
        let seen = m.cache_evictions.get();
        m.cache_evictions.inc_by(evictions.saturating_sub(seen));
    }
    let body = Bytes::from(m.render());
    let text = "text/plain; version=0.0.4";
    respond::write_body(session, 200, text, body, s.request_id, &[]).await
}

/// A JWT for the agent of a valid API key.
fn token(session: &Session, s: &Served<'_>) -> Result<Bytes, Refusal> {
    let auth = &s.config.auth;
    let identity = auth
        .authenticate(&session.req_header().headers, Strategy::ApiKey)
        .map_err(|f| Refusal::unauthorized(auth, Strategy::ApiKey, &f, None))?;
    let jwt = auth.jwt.as_ref().ok_or(Refusal::NoRoute)?;
    let ttl = jwt.rules.expiry;
    let token = jwt.mint(&identity.agent.id, ttl).map_err(|e| {
        log::error!("cannot mint a token: {e}");
        Refusal::CannotMint
    })?;
    let body = serde_json::json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs(),
    });
    Ok(Bytes::from(body.to_string()))
}

/// `{"route": label}` or `{"url": "/path?query", "agent": id}` (an admin's request): every
/// entry of a route, or one entry.
async fn cache_admin(session: &mut Session, s: &Served<'_>) -> Result<()> {
    let peer = crate::upstream::client_ip(session);
    let allowed = authorise_admin(peer, &session.req_header().headers, s.config);
    let cache = allowed.and(s.cache.ok_or(Refusal::NoRoute));
    let cache = match cache {
        Ok(cache) => cache,
        Err(r) => return r.write(session, s.request_id).await,
    };
    let mut body = Vec::new();
    while let Some(chunk) = session.read_request_body().await? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > crate::cache::MAX_KEYED_BODY {
            return Refusal::PurgeTooLarge.write(session, s.request_id).await;
        }
    }
    let req = match crate::admin::purge::Request::parse(&body) {
        Ok(req) => req,
        Err(message) => {
            return Refusal::BadPurge(message)
                .write(session, s.request_id)
                .await
        }
    };
    let headers = &session.req_header().headers;
    match crate::admin::purge::run(
        cache,
        s.semantic_store,
        s.config,
        req,
        headers,
        s.request_id,
    )
    .await
    {
        Ok(answer) => respond::write_json(session, 200, answer, s.request_id, &[]).await,
        Err(failed) => Refusal::Purge(failed).write(session, s.request_id).await,
    }
}

/// Purges are for agents with the `admin` scope, or clients in `caching.admin_networks`.
pub fn authorise_admin(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    cfg: &Config,
) -> Result<(), Refusal> {
    let nets = cfg
        .cache
        .as_ref()
        .map_or(&[][..], |c| &c.admin_networks[..]);
    if peer.is_some_and(|ip| nets.iter().any(|n| n.contains(ip))) {
        return Ok(());
    }
    match cfg.auth.authenticate(headers, Strategy::Any) {
        Ok(identity) if identity.agent.admin => Ok(()),
        Ok(_) => Err(Refusal::Forbidden("purging needs the admin scope")),
        Err(Failure::Missing) => Err(Refusal::Forbidden(
            "purging needs the admin scope or an admin network",
        )),
        Err(f) => Err(Refusal::unauthorized(&cfg.auth, Strategy::Any, &f, None)),
    }
}
