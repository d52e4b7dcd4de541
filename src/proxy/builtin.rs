//! The paths the gateway answers itself (health, metrics, token, cache admin): which path names
//! one, whether the gateway ceiling applies, and the methods each answers.

use crate::runtime::Config;
use http::Method;

/// A path the gateway answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltIn {
    Health,
    Metrics,
    /// `POST {base_path}/auth/token`: a JWT for the agent of a valid API key.
    Token,
    /// `DELETE {base_path}/cache`: purges, by an admin.
    CacheAdmin,
    /// `GET /.well-known/oauth-protected-resource/<route>`: an MCP route's RFC 9728 metadata.
    ProtectedResource(usize),
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
            protected_resource(path, cfg).map(BuiltIn::ProtectedResource)
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
            BuiltIn::ProtectedResource(_) => "oauth-protected-resource",
        }
    }

    /// The `Allow` header of a 405.
    pub fn allow(self) -> &'static str {
        match self {
            BuiltIn::Health | BuiltIn::Metrics | BuiltIn::ProtectedResource(_) => "GET, HEAD",
            BuiltIn::Token => "POST",
            BuiltIn::CacheAdmin => "DELETE",
        }
    }

    pub fn allows(self, method: &Method) -> bool {
        match self {
            BuiltIn::Health | BuiltIn::Metrics | BuiltIn::ProtectedResource(_) => {
                method == Method::GET || method == Method::HEAD
            }
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
            BuiltIn::ProtectedResource(_) => "the resource metadata answers GET",
        }
    }
}

/// The MCP route whose RFC 9728 metadata `path` names (when `auth.jwt` names an issuer URL).
fn protected_resource(path: &str, cfg: &Config) -> Option<usize> {
    use crate::mcp::resource;
    let rest = path.strip_prefix(resource::WELL_KNOWN)?;
    resource::authorization_server(cfg.auth.jwt.as_ref()?.rules.issuer.as_ref()?)?;
    let rest = if rest.is_empty() { "/" } else { rest };
    (cfg.routes.iter())
        .position(|r| r.mcp.is_some() && resource::route_path(r.pattern.literal_prefix()) == rest)
}
