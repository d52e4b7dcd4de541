//! A route as the proxy reads it, compiled from its entry in `routes:`: path pattern, prefix
//! stripping, backends, `match`, timeouts, access, rate limit, transforms and cache rules.

use crate::at;
use crate::auth::{self, Access, Auth};
use crate::backends::{Named, Pool, RouteBackends};
use crate::config::schema::{self, StripPrefix};
use crate::config::Problem;
use crate::limits::Limit;
use crate::router::Pattern;
use crate::transforms::{self, Transform};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Route {
    /// The route's label in metrics and logs: its `name`, else its `path` as written.
    pub label: String,
    pub pattern: Pattern,
    pub strip: StripRule,
    /// The pools the route sends to, and how it splits between them.
    pub backends: RouteBackends,
    /// `match`: the conditions under which the route takes a request.
    pub matcher: Option<crate::matching::Match>,
    pub preserve_host: bool,
    /// `include_usage`: streamed LLM requests ask for their usage (DESIGN §5.3).
    pub include_usage: bool,
    /// As set on the route (else the backend's, else the gateway's).
    pub connect_timeout: Option<Duration>,
    /// `timeout` as set on the route, else its `total_timeout` (else the backend's, else 60 s).
    pub timeout: Option<Duration>,
    pub total_timeout: Option<Duration>,
    /// Who may call the route; `None`: anyone, and credentials pass through untouched.
    pub access: Option<Access>,
    /// `rate_limit`: per agent (or client address) on this route.
    pub rate_limit: Option<Limit>,
    /// Gateway-wide transforms, then the route's.
    pub request_transforms: Vec<Transform>,
    pub response_transforms: Vec<Transform>,
    /// `caching`, when the route caches.
    pub cache: Option<crate::cache::RouteCache>,
    /// `caching.strategy: semantic` on a caching route: near-duplicate questions are answered
    /// too (DESIGN §5.1).
    pub semantic: Option<Arc<crate::semantic::cache::RouteCache>>,
    /// `protocol: mcp`: the route's MCP servers and how they are fronted (DESIGN §5.2).
    pub mcp: Option<Arc<crate::mcp::route::Settings>>,
    /// Several `mcp.servers`: each server's pool, by name in the settings' order (the gateway
    /// calls them itself; one server is the route's backend instead).
    pub mcp_pools: Vec<(String, Arc<Pool>)>,
    /// `grpc_transcode`: JSON requests become gRPC calls to the route's backend (DESIGN §5.4).
    pub grpc: Option<Arc<crate::grpc::Transcoder>>,
    /// The route's metric series, made on first use (a reload starts them afresh: they are
    /// found by the route, not by label).
    pub series: crate::observe::metrics::RouteSeries,
    /// The route's counts in the admin console, when it is on.
    pub console: crate::console::stats::Slot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripRule {
    Keep,
    /// Remove this prefix (relative to `base_path`) when the forwarded path starts with it.
    Prefix(String),
}

/// What every route's compilation reads besides its own entry.
pub struct Context<'a> {
    pub base_path: &'a str,
    pub auth: &'a Auth,
    /// The gateway-wide `transforms` and `caching`.
    pub transforms: Option<&'a schema::Transforms>,
    pub caching: Option<&'a schema::Caching>,
    pub named: &'a Named,
    /// The configuration file's folder: relative paths in it resolve there.
    pub config_dir: &'a std::path::Path,
    /// `auth.jwt`'s first secret: MCP session tokens are sealed with a key derived from it
    /// when `mcp.session_key` is not set.
    pub jwt_secret: Option<&'a str>,
}

impl Route {
    /// Compiles `routes[i]`; a `backend_url`'s pool is added to `pools`.
    pub fn compile(
        i: usize,
        r: &schema::Route,
        on: &Context,
        pools: &mut Vec<Arc<Pool>>,
    ) -> Result<Route, Problem> {
        let rel = r.path.0.as_str();
        if !rel.starts_with('/') {
            return Err(Problem::new(
                at!("routes", i, "path"),
                format!("{rel:?} must start with \"/\""),
            ));
        }
        let pattern = Pattern::new(&format!("{}{rel}", on.base_path))
            .map_err(|m| Problem::new(at!("routes", i, "path"), m))?;
        let access = auth::compile::route_access(on.auth, r, i)?;
        let matcher = (r.match_.as_ref())
            .map(|m| crate::matching::Match::compile(m, i, access.is_some()))
            .transpose()?;
        let label = r
            .name
            .as_ref()
            .map_or_else(|| rel.to_string(), |n| n.0.clone());
        let cache = crate::cache::RouteCache::compile(on.caching, r.caching.as_ref(), i, &label)?;
        let semantic = match &cache {
            Some(_) => semantic_cache(r, i, on)?,
            None => None,
        };
        let names: Vec<&str> = on.named.keys().map(String::as_str).collect();
        let mcp = crate::mcp::route::Settings::of_route(r, i, &names, on.jwt_secret)?;
        let passthrough = mcp.as_ref().and_then(|m| mcp_backend(r, m));
        let mcp_pools = mcp_pools(mcp.as_ref(), i, &label, on.named, pools)?;
        let r = passthrough.as_ref().unwrap_or(r);
        let backends = RouteBackends::compile(r, i, &label, on.named, pools)?;
        let grpc = transcoder(r, i, on.config_dir, &backends)?;
        let (request_transforms, response_transforms) = route_transforms(r, i, on.transforms)?;
        let strip = strip_rule(r, i, &pattern, on.base_path)?;
        let timeout = r.timeout.map(|d| d.0);
        let total_timeout = r.total_timeout.map(|d| d.0);
        for (field, d) in [
            ("timeout", timeout),
            ("connect_timeout", r.connect_timeout.map(|d| d.0)),
            ("total_timeout", total_timeout),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                return Err(Problem::new(
                    at!("routes", i, field),
                    "must be longer than 0",
                ));
            }
        }
        Ok(Route {
            label,
            pattern,
            strip,
            backends,
            matcher,
            preserve_host: r.preserve_host.0,
            include_usage: r.include_usage.0,
            connect_timeout: r.connect_timeout.map(|d| d.0),
            timeout: timeout.or(total_timeout),
            total_timeout,
            access,
            rate_limit: r.rate_limit.map(Limit::from_rate),
            request_transforms,
            response_transforms,
            cache,
            semantic,
            mcp: mcp.map(Arc::new),
            mcp_pools,
            grpc,
            series: Default::default(),
            console: Default::default(),
        })
    }
}

/// `grpc_transcode`, loaded; the route's backends must speak HTTP/2, as gRPC needs:
/// `protocol: h2c` or `h2` (or `auto` over TLS, where ALPN settles it).
fn transcoder(
    r: &schema::Route,
    i: usize,
    config_dir: &std::path::Path,
    backends: &RouteBackends,
) -> Result<Option<Arc<crate::grpc::Transcoder>>, Problem> {
    use crate::backends::Protocol;
    let Some(g) = &r.grpc_transcode else {
        return Ok(None);
    };
    let t = crate::grpc::Transcoder::load(g, i, config_dir)?;
    for (pool, _) in &backends.pools {
        if !matches!(
            (pool.protocol, pool.tls),
            (Protocol::H2 | Protocol::H2c, _) | (Protocol::Auto, true)
        ) {
            return Err(Problem::new(
                at!("routes", i, "grpc_transcode"),
                format!(
                    "gRPC needs HTTP/2: give backend {:?} `protocol: h2c` (or h2)",
                    pool.name
                ),
            ));
        }
    }
    Ok(Some(Arc::new(t)))
}

/// The gateway-wide transforms, then the route's own, for requests and for responses.
fn route_transforms(
    r: &schema::Route,
    i: usize,
    global: Option<&schema::Transforms>,
) -> Result<(Vec<Transform>, Vec<Transform>), Problem> {
    let own = r.transforms.as_ref();
    let both = |list: fn(&schema::Transforms) -> &[schema::Transform], kind: &str| {
        let mut out =
            transforms::compile(global.map_or(&[][..], list), &at!("transforms", kind)[..])?;
        out.extend(transforms::compile(
            own.map_or(&[][..], list),
            &at!("routes", i, "transforms", kind)[..],
        )?);
        Ok::<_, Problem>(out)
    };
    Ok((
        both(|t| &t.request, "request")?,
        both(|t| &t.response, "response")?,
    ))
}

/// `strip_prefix`: `true` strips the route path's literal prefix, a path strips that path.
fn strip_rule(
    r: &schema::Route,
    i: usize,
    pattern: &Pattern,
    base_path: &str,
) -> Result<StripRule, Problem> {
    Ok(match &r.strip_prefix {
        None | Some(StripPrefix::Flag(false)) => StripRule::Keep,
        Some(StripPrefix::Flag(true)) => {
            let lit = pattern.literal_prefix()[base_path.len()..].trim_end_matches('/');
            StripRule::Prefix(lit.to_string())
        }
        Some(StripPrefix::Prefix(p)) => {
            if !p.starts_with('/') {
                return Err(Problem::new(
                    at!("routes", i, "strip_prefix"),
                    format!(
                        "{:?} must be true, false or a path starting with \"/\"",
                        p.0
                    ),
                ));
            }
            StripRule::Prefix(p.trim_end_matches('/').to_string())
        }
    })
}

/// A single MCP server is passed through: it is the route's backend, and every request of the
/// route goes to the server's own MCP path. (Several are federated: the gateway calls them
/// itself, and the first one stands for the route's backend, which nothing is sent to.)
fn mcp_backend(r: &schema::Route, m: &crate::mcp::route::Settings) -> Option<schema::Route> {
    let one = m.servers.first()?;
    Some(schema::Route {
        backend: one.backend.clone().map(crate::config::values::Text),
        backend_url: one.backend_url.clone().map(crate::config::values::Text),
        strip_prefix: r
            .strip_prefix
            .clone()
            .or(Some(schema::StripPrefix::Flag(true))),
        ..r.clone()
    })
}

/// Each federated server's pool: its named backend, or a pool of its `backend_url` (added to
/// `pools`, so that its name is resolved like any backend's). None for a single server.
fn mcp_pools(
    m: Option<&crate::mcp::route::Settings>,
    i: usize,
    label: &str,
    named: &Named,
    pools: &mut Vec<Arc<Pool>>,
) -> Result<Vec<(String, Arc<Pool>)>, Problem> {
    let Some(m) = m.filter(|m| m.servers.len() > 1) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(m.servers.len());
    for s in &m.servers {
        let pool = match (&s.backend, &s.backend_url) {
            (Some(b), _) => named.get(b).cloned(),
            (None, Some(url)) => {
                let pool = crate::backends::compile::from_url(&format!("{label}/{}", s.name), url)
                    .map_err(|msg| {
                        let at = at!(
                            "routes",
                            i,
                            "mcp",
                            "servers",
                            s.name.as_str(),
                            "backend_url"
                        );
                        Problem::new(at, msg)
                    })?;
                let pool = Arc::new(pool);
                pools.push(pool.clone());
                Some(pool)
            }
            (None, None) => None,
        };
        let pool = pool.ok_or_else(|| {
            let at = at!("routes", i, "mcp", "servers", s.name.as_str());
            Problem::new(at, "names no backend")
        })?;
        out.push((s.name.clone(), pool));
    }
    Ok(out)
}

/// The route's semantic cache, when its caching section asks for one.
fn semantic_cache(
    r: &schema::Route,
    i: usize,
    on: &Context,
) -> Result<Option<Arc<crate::semantic::cache::RouteCache>>, Problem> {
    let settings = crate::semantic::settings::Settings::of_route(
        on.caching,
        r.caching.as_ref(),
        i,
        on.config_dir,
    )?;
    Ok(settings.map(|s| Arc::new(crate::semantic::cache::RouteCache::new(s))))
}
