//! The gateway's own endpoints (health, metrics, token, cache admin): which path names one,
//! the methods each answers (checked once, for all), and their answers.

use super::refusal::Refusal;
use crate::auth::Strategy;
use crate::cache::Cache;
use crate::metrics::Metrics;
use crate::respond;
use crate::runtime::Config;
use bytes::Bytes;
use http::Method;
use pingora::proxy::Session;
use pingora::Result;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// A path the gateway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltIn {
    Health,
    Metrics,
    /// `POST {base_path}/auth/token`: a JWT for the agent of a valid API key.
    Token,
    /// `DELETE {base_path}/cache`: purges, by an admin.
    CacheAdmin,
}

impl BuiltIn {
    /// The endpoint a normalised path names. `serves_metrics`: metrics are on and served on
    /// the gateway's own port.
    pub fn of(path: &str, cfg: &Config, serves_metrics: bool) -> Option<BuiltIn> {
        if path == cfg.health_path {
            Some(BuiltIn::Health)
        } else if serves_metrics && path == cfg.metrics_path {
            Some(BuiltIn::Metrics)
        } else if path == cfg.token_path && cfg.auth.jwt.as_ref().is_some_and(|j| j.can_sign()) {
            Some(BuiltIn::Token)
        } else if cfg.cache.is_some() && path == cfg.cache_path {
            Some(BuiltIn::CacheAdmin)
        } else {
            None
        }
    }

    /// Whether the gateway ceiling applies: health and metrics answer even when it is reached,
    /// so that an overloaded gateway can still be watched.
    pub fn limited(self) -> bool {
        matches!(self, BuiltIn::Token | BuiltIn::CacheAdmin)
    }

    /// The route label of its metrics.
    pub fn label(self) -> &'static str {
        match self {
            BuiltIn::Health => "health",
            BuiltIn::Metrics => "metrics",
            BuiltIn::Token => "token",
            BuiltIn::CacheAdmin => "cache",
        }
    }

    /// The `Allow` header of a 405.
    pub fn allow(self) -> &'static str {
        match self {
            BuiltIn::Health | BuiltIn::Metrics => "GET, HEAD",
            BuiltIn::Token => "POST",
            BuiltIn::CacheAdmin => "DELETE",
        }
    }

    fn allows(self, method: &Method) -> bool {
        match self {
            BuiltIn::Health | BuiltIn::Metrics => method == Method::GET || method == Method::HEAD,
            BuiltIn::Token => method == Method::POST,
            BuiltIn::CacheAdmin => method == Method::DELETE,
        }
    }

    /// The message of a 405.
    pub fn wrong_method(self) -> &'static str {
        match self {
            BuiltIn::Health => "the health endpoint answers GET",
            BuiltIn::Metrics => "the metrics endpoint answers GET",
            BuiltIn::Token => "the token endpoint answers POST",
            BuiltIn::CacheAdmin => "the cache endpoint answers DELETE",
        }
    }
}

/// What the endpoints read beside the request (process-lived parts passed in by the proxy).
pub struct Served<'a> {
    pub config: &'a Config,
    pub request_id: &'a str,
    pub started: Instant,
    pub metrics: Option<&'a Metrics>,
    pub cache: Option<&'static Cache>,
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
    }
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
        .set(super::IN_FLIGHT.load(Ordering::Relaxed) as i64);
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
        .map_err(|f| Refusal::unauthorized(auth, Strategy::ApiKey, &f))?;
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
    let allowed = super::admit::authorise_admin(peer, &session.req_header().headers, s.config);
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
    match crate::admin::purge::run(cache, s.config, req, headers, s.request_id).await {
        Ok(answer) => respond::write_json(session, 200, answer, s.request_id, &[]).await,
        Err(failed) => Refusal::Purge(failed).write(session, s.request_id).await,
    }
}
