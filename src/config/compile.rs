//! Compiles the parsed file into the runtime tables the proxy reads (immutable, shared by `Arc`).

use super::schema::{self, File, StripPrefix};
use super::Problem;
use crate::at;
use crate::auth::{self, Access, Auth};
use crate::backends::{Pool, RouteBackends};
use crate::limits::{Limit, Quotas};
use crate::router::Pattern;
use crate::transforms::{self, Transform};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
pub const DEFAULT_PID_FILE: &str = "/tmp/clawgate.pid";
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/clawgate-upgrade.sock";
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    pub name: String,
    pub version: String,
    pub listen: Vec<String>,
    pub tls: Option<TlsFiles>,
    pub base_path: String,
    pub health_path: String,
    pub threads: usize,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub error_log: Option<String>,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub max_body_size: u64,
    pub max_header_size: u64,
    pub max_headers: usize,
    /// Proxies whose `X-Forwarded-For` is believed (for keying anonymous limits).
    pub trusted_proxies: Vec<crate::client_addr::Cidr>,
    /// In match order: most specific first.
    pub routes: Vec<Route>,
    /// Every pool of the routes: named backends and routes' `backend_url`s.
    pub pools: Vec<Arc<Pool>>,
    /// `gateway.connect_timeout`: for backends and routes that set none.
    pub connect_timeout: Duration,
    /// `gateway.h2c`: plaintext listeners also speak HTTP/2 (prior knowledge).
    pub h2c: bool,
    /// `gateway.upstream_keepalive_pool_size`: idle backend connections kept (Pingora's 128).
    pub upstream_pool_size: usize,
    pub agent_count: usize,
    pub auth: Arc<Auth>,
    pub quotas: Quotas,
    /// `monitoring.metrics` when enabled, and the path that serves it.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    pub metrics_path: String,
    /// `monitoring.metrics.listen`: metrics on a port of their own (not on the gateway's).
    pub metrics_listen: Option<String>,
    /// `monitoring.logging.output`: the JSON access log.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// Responses are read for LLM token usage (a token counter or the access log wants it).
    pub track_tokens: bool,
    /// `monitoring.tracing` when enabled.
    pub tracing: Option<Arc<crate::trace::Tracing>>,
    /// `POST {base_path}/auth/token`: a JWT for a valid API key (when a signing key exists).
    pub token_path: String,
    /// `DELETE {base_path}/cache`: purges (when a route caches).
    pub cache_path: String,
    pub keys_store: Option<String>,
    pub log_output: Option<String>,
    /// The gateway's own log level (`monitoring.logging.level`, default info).
    pub log_level: log::LevelFilter,
    /// The cache store's settings, when a route caches.
    pub cache: Option<crate::cache::Settings>,
    /// What a reload compares to tell which sections changed.
    pub sections: Sections,
    /// Features the file turns on that this build does not provide yet; `start` refuses them.
    pub pending_features: Vec<String>,
}

/// Renderings of the sections whose runtime parts live as long as the process. Compared by a
/// reload, never shown (they may hold secrets).
#[derive(Default, PartialEq)]
pub struct Sections {
    pub sockets: String,
    pub metrics: String,
    pub logging: String,
    pub tracing: String,
    pub jwt: String,
    pub limits_store: String,
    pub cache_store: String,
}

impl std::fmt::Debug for Sections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sections")
    }
}

fn sections(file: &File) -> Sections {
    let g = &file.gateway;
    let m = file.monitoring.as_ref();
    let rl = file.rate_limiting.as_ref();
    let c = file.caching.as_ref();
    Sections {
        sockets: format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            g.listen,
            g.tls,
            g.threads,
            g.pid_file,
            g.upgrade_sock,
            g.error_log,
            g.h2c,
            g.upstream_keepalive_pool_size
        ),
        metrics: format!("{:?}", m.map(|m| &m.metrics)),
        logging: format!("{:?}", m.map(|m| &m.logging)),
        tracing: format!("{:?}", m.map(|m| &m.tracing)),
        jwt: format!("{:?}", file.auth.as_ref().map(|a| &a.jwt)),
        limits_store: format!("{:?}", rl.map(|r| (&r.store, &r.store_timeout))),
        cache_store: format!(
            "{:?}",
            c.map(|c| (
                &c.store,
                &c.max_size,
                &c.max_object_size,
                &c.lock_timeout,
                &c.store_timeout,
                &c.admin_networks
            ))
        ),
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
}

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripRule {
    Keep,
    /// Remove this prefix (relative to `base_path`) when the forwarded path starts with it.
    Prefix(String),
}

#[derive(Debug)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `Host` sent to the backend: the host, with the port when it is not the scheme's default.
    pub authority: String,
    /// The same, ready to send.
    pub host_header: http::HeaderValue,
    /// The backend URL's own path, without a trailing `/` (may be empty).
    pub path_prefix: String,
}

impl Config {
    /// The pools in use (for the background service that keeps them current).
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools.clone()
    }

    /// The index in `routes` of the most specific route matching the normalised path.
    pub fn route_index(&self, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.pattern.matches(path))
    }
}

fn text(t: &Option<super::values::Text>) -> Option<String> {
    t.as_ref().map(|t| t.0.clone())
}

pub fn compile(file: File, source: PathBuf) -> Result<Config, Problem> {
    let g = &file.gateway;
    let base_path = normalise_base_path(text(&g.base_path).unwrap_or_default())
        .map_err(|m| Problem::new(at!("gateway", "base_path"), m))?;

    let mut listen = Vec::new();
    let listen_raw: Vec<String> = if g.listen.0.is_empty() {
        vec![DEFAULT_LISTEN.to_string()]
    } else {
        g.listen.0.iter().map(|t| t.0.clone()).collect()
    };
    for (i, addr) in listen_raw.iter().enumerate() {
        let addr = if addr.starts_with(':') {
            format!("0.0.0.0{addr}")
        } else {
            addr.clone()
        };
        if addr.parse::<SocketAddr>().is_err() {
            let path = if g.listen.0.len() > 1 {
                at!("gateway", "listen", i)
            } else {
                at!("gateway", "listen")
            };
            return Err(Problem::new(
                path,
                format!("{addr:?} is not a listen address; expected IP:PORT such as 0.0.0.0:8080"),
            ));
        }
        if listen.contains(&addr) {
            return Err(Problem::new(
                at!("gateway", "listen", i),
                format!("{addr} is listed twice"),
            ));
        }
        listen.push(addr);
    }

    let tls = match &g.tls {
        Some(t) if t.enabled.0 => {
            let cert = text(&t.cert).ok_or_else(|| {
                Problem::new(
                    at!("gateway", "tls"),
                    "TLS is enabled but \"cert\" is missing",
                )
            })?;
            let key = text(&t.key).ok_or_else(|| {
                Problem::new(
                    at!("gateway", "tls"),
                    "TLS is enabled but \"key\" is missing",
                )
            })?;
            check_cert(&cert).map_err(|m| Problem::new(at!("gateway", "tls", "cert"), m))?;
            check_key(&key).map_err(|m| Problem::new(at!("gateway", "tls", "key"), m))?;
            Some(TlsFiles { cert, key })
        }
        _ => None,
    };

    let threads = match g.threads {
        Some(c) if c.0 == 0 || c.0 > 1024 => {
            return Err(Problem::new(
                at!("gateway", "threads"),
                "must be between 1 and 1024",
            ))
        }
        Some(c) => c.0 as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let max_headers = match g.max_headers {
        Some(c) if c.0 == 0 => {
            return Err(Problem::new(
                at!("gateway", "max_headers"),
                "must be at least 1",
            ))
        }
        Some(c) => c.0 as usize,
        None => 100,
    };
    let connect_timeout = g.connect_timeout.map_or(Duration::from_secs(5), |d| d.0);

    let mut pending = Vec::new();
    let mut pend = |what: &str| {
        if !pending.iter().any(|p: &String| p == what) {
            pending.push(what.to_string());
        }
    };

    // Features of later issues: parsed and validated now, refused at start until they exist.
    let quotas = compile_quotas(&file)?;
    let mut trusted_proxies = Vec::new();
    for (i, t) in g.trusted_proxies.iter().enumerate() {
        trusted_proxies.push(
            crate::client_addr::Cidr::parse(t)
                .map_err(|m| Problem::new(at!("gateway", "trusted_proxies", i), m))?,
        );
    }
    let auth = auth::compile::compile(&file)?;
    let global = file.transforms.as_ref();
    let global_request = global.map_or(&[][..], |t| &t.request[..]);
    let global_response = global.map_or(&[][..], |t| &t.response[..]);
    let mut metrics = None;
    let mut metrics_path = "/metrics".to_string();
    let mut metrics_listen = None;
    if let Some(m) = file.monitoring.as_ref().and_then(|m| m.metrics.as_ref()) {
        if m.enabled.0 {
            let prefix = text(&m.prefix).unwrap_or_else(|| "openclaw_gateway_".into());
            metrics = Some(crate::metrics::Metrics::new(&prefix, &m.custom_metrics)?);
            if let Some(l) = text(&m.listen) {
                let l = if l.starts_with(':') {
                    format!("0.0.0.0{l}")
                } else {
                    l
                };
                if l.parse::<SocketAddr>().is_err() || listen.contains(&l) {
                    return Err(Problem::new(
                        at!("monitoring", "metrics", "listen"),
                        format!("{l:?} is not a free listen address; expected IP:PORT such as 127.0.0.1:9090, not one of gateway.listen"),
                    ));
                }
                metrics_listen = Some(l);
            }
        }
        if let Some(e) = text(&m.endpoint) {
            if !e.starts_with('/') {
                return Err(Problem::new(
                    at!("monitoring", "metrics", "endpoint"),
                    format!("{e:?} must start with \"/\""),
                ));
            }
            metrics_path = e;
        }
    }
    if let Some(m) = &file.monitoring {
        if m.logging
            .as_ref()
            .is_some_and(|l| l.format == Some(schema::LogFormat::Text))
        {
            pend("a text access log (monitoring.logging.format: text; json is provided)");
        }
    }
    if let Some(c) = &file.caching {
        if c.strategy == Some(schema::CacheStrategy::Semantic) {
            pend("semantic caching");
        }
    }
    let cache_settings = cache_settings(file.caching.as_ref())?;
    let mut named = std::collections::BTreeMap::new();
    for (name, b) in &file.backends {
        named.insert(
            name.clone(),
            Arc::new(crate::backends::compile::from_backend(name, b)?),
        );
    }
    let mut pools: Vec<Arc<Pool>> = named.values().cloned().collect();

    let mut routes = Vec::new();
    for (i, r) in file.routes.iter().enumerate() {
        let rel = r.path.0.clone();
        if !rel.starts_with('/') {
            return Err(Problem::new(
                at!("routes", i, "path"),
                format!("{rel:?} must start with \"/\""),
            ));
        }
        let pattern = Pattern::new(&format!("{base_path}{rel}"))
            .map_err(|m| Problem::new(at!("routes", i, "path"), m))?;
        // A path may repeat when the earlier routes' `match` tells them apart; a second route
        // without one could never be reached.
        if r.match_.is_none()
            && routes.iter().any(|other: &Route| {
                other.pattern.source() == pattern.source() && other.matcher.is_none()
            })
        {
            return Err(Problem::new(
                at!("routes", i, "path"),
                format!("{rel:?} is already the path of an earlier route without match"),
            ));
        }

        let access = auth::compile::route_access(&auth, r, i)?;
        let matcher = match &r.match_ {
            Some(m) => Some(crate::matching::Match::compile(m, i, access.is_some())?),
            None => None,
        };
        let own = r.transforms.as_ref();
        let global_at = at!("transforms", "request");
        let mut request_transforms = transforms::compile(global_request, &global_at)?;
        request_transforms.extend(transforms::compile(
            own.map_or(&[][..], |t| &t.request[..]),
            &at!("routes", i, "transforms", "request")[..],
        )?);
        let global_at = at!("transforms", "response");
        let mut response_transforms = transforms::compile(global_response, &global_at)?;
        response_transforms.extend(transforms::compile(
            own.map_or(&[][..], |t| &t.response[..]),
            &at!("routes", i, "transforms", "response")[..],
        )?);
        let label = text(&r.name).unwrap_or_else(|| rel.clone());
        let cache = route_cache(file.caching.as_ref(), r.caching.as_ref(), i, &label)?;
        if r.caching
            .as_ref()
            .is_some_and(|c| c.strategy == Some(schema::CacheStrategy::Semantic))
        {
            pend("semantic caching");
        }

        let sticky = match &r.sticky_by {
            Some(k) => Some(
                crate::backends::KeyFrom::parse(k)
                    .map_err(|m| Problem::new(at!("routes", i, "sticky_by"), m))?,
            ),
            None => None,
        };
        let backends = if let Some(w) = &r.backend_weights {
            let entries = w.entries();
            if entries.is_empty() {
                return Err(Problem::new(
                    at!("routes", i, "backend_weights"),
                    "is empty",
                ));
            }
            let mut split = Vec::new();
            for (name, weight) in &entries {
                let Some(pool) = named.get(name) else {
                    return Err(Problem::new(
                        at!("routes", i, "backend_weights", name),
                        format!("{name:?} names no backend; define it under \"backends\""),
                    ));
                };
                if *weight > 1_000_000 {
                    return Err(Problem::new(
                        at!("routes", i, "backend_weights", name),
                        "must be at most 1000000",
                    ));
                }
                if split
                    .iter()
                    .any(|(p, _): &(Arc<Pool>, u64)| Arc::ptr_eq(p, pool))
                {
                    return Err(Problem::new(
                        at!("routes", i, "backend_weights", name),
                        "is listed twice",
                    ));
                }
                split.push((pool.clone(), *weight));
            }
            if split.iter().all(|(_, w)| *w == 0) {
                return Err(Problem::new(
                    at!("routes", i, "backend_weights"),
                    "every weight is 0",
                ));
            }
            let prefixes: std::collections::BTreeSet<&str> =
                split.iter().map(|(p, _)| p.path_prefix.as_str()).collect();
            if prefixes.len() > 1 {
                return Err(Problem::new(
                    at!("routes", i, "backend_weights"),
                    "the backends' URLs have different paths; a split needs one path",
                ));
            }
            RouteBackends::new(split, sticky)
        } else {
            if sticky.is_some() {
                return Err(Problem::new(
                    at!("routes", i, "sticky_by"),
                    "applies to routes with backend_weights",
                ));
            }
            let pool = if let Some(p) = r.backend.as_ref().and_then(|b| named.get(&b.0)) {
                p.clone()
            } else if let Some(u) = &r.backend_url {
                let pool = crate::backends::compile::from_url(&label, u)
                    .map_err(|m| Problem::new(at!("routes", i, "backend_url"), m))?;
                let pool = Arc::new(pool);
                pools.push(pool.clone());
                pool
            } else {
                return Err(Problem::new(
                    at!("routes", i),
                    "has no backend; set backend_url, or backend naming one of \"backends\"",
                ));
            };
            RouteBackends::new(vec![(pool, 1)], None)
        };

        let strip = match &r.strip_prefix {
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
        };

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
        routes.push(Route {
            label,
            pattern,
            strip,
            backends,
            matcher,
            preserve_host: r.preserve_host.0,
            connect_timeout: r.connect_timeout.map(|d| d.0),
            timeout: timeout.or(total_timeout),
            total_timeout,
            access,
            rate_limit: r.rate_limit.map(Limit::from_rate),
            request_transforms,
            response_transforms,
            cache,
        });
    }
    // Stable sort: among equally specific routes those with `match` come first, then the first
    // written wins.
    routes.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.pattern.specificity()),
            r.matcher.is_none(),
        )
    });

    let monitoring = file.monitoring.as_ref();
    let access_log = monitoring
        .and_then(|m| m.logging.as_ref())
        .and_then(|l| text(&l.output))
        .map(|o| {
            Arc::new(crate::access_log::AccessLog::new(match o.as_str() {
                "stdout" | "-" => crate::access_log::Output::Stdout,
                _ => crate::access_log::Output::File(o.into()),
            }))
        });
    let mut tracing = None;
    if let Some(t) = monitoring.and_then(|m| m.tracing.as_ref()) {
        let ratio = match &t.sampler {
            Some(s) => crate::trace::parse_ratio(s)
                .map_err(|m| Problem::new(at!("monitoring", "tracing", "sampler"), m))?,
            None => 1.0,
        };
        let endpoint = text(&t.endpoint);
        if let Some(e) = &endpoint {
            if !e.starts_with("http://") && !e.starts_with("https://") {
                return Err(Problem::new(
                    at!("monitoring", "tracing", "endpoint"),
                    format!("{e:?} is not an OTLP/HTTP URL such as http://127.0.0.1:4318"),
                ));
            }
        }
        let json = match t.protocol.as_ref().map(|p| p.0.as_str()) {
            None | Some("http/protobuf") => false,
            Some("http/json") => true,
            Some(other) => {
                return Err(Problem::new(
                    at!("monitoring", "tracing", "protocol"),
                    format!("{other:?} is not supported; expected http/protobuf or http/json"),
                ))
            }
        };
        if t.enabled.0 {
            tracing = Some(Arc::new(crate::trace::Tracing::new(ratio, endpoint, json)));
        }
    }
    let track_tokens = access_log.is_some() || metrics.as_ref().is_some_and(|m| m.counts_tokens());
    let metrics = metrics.map(|m| Arc::new(m.with_routes(routes.len())));
    let any_cache = routes.iter().any(|r| r.cache.is_some());
    Ok(Config {
        source,
        name: text(&file.name).unwrap_or_else(|| "clawgate".into()),
        version: text(&file.version).unwrap_or_else(|| "1.0".into()),
        health_path: format!("{base_path}/health"),
        token_path: format!("{base_path}/auth/token"),
        cache_path: format!("{base_path}/cache"),
        auth: Arc::new(auth),
        quotas,
        metrics,
        metrics_path,
        metrics_listen,
        access_log,
        track_tokens,
        tracing,
        base_path,
        listen,
        tls,
        threads,
        pid_file: text(&g.pid_file).unwrap_or_else(|| DEFAULT_PID_FILE.into()),
        upgrade_sock: text(&g.upgrade_sock).unwrap_or_else(|| DEFAULT_UPGRADE_SOCK.into()),
        error_log: text(&g.error_log),
        grace_period: g.grace_period.map_or(Duration::from_secs(10), |d| d.0),
        shutdown_timeout: g.shutdown_timeout.map_or(Duration::from_secs(5), |d| d.0),
        max_body_size: g.max_body_size.map_or(10 << 20, |s| s.0),
        max_header_size: g.max_header_size.map_or(64 << 10, |s| s.0),
        max_headers,
        trusted_proxies,
        routes,
        pools,
        connect_timeout,
        h2c: g.h2c.0,
        upstream_pool_size: g
            .upstream_keepalive_pool_size
            .map_or(128, |c| c.0.min(1 << 20) as usize),
        agent_count: file.agents.len(),
        keys_store: file
            .auth
            .as_ref()
            .and_then(|a| a.api_key.as_ref())
            .and_then(|k| text(&k.keys_store)),
        log_level: match monitoring
            .and_then(|m| m.logging.as_ref())
            .and_then(|l| l.level)
        {
            Some(schema::LogLevel::Error) => log::LevelFilter::Error,
            Some(schema::LogLevel::Warn) => log::LevelFilter::Warn,
            Some(schema::LogLevel::Debug) => log::LevelFilter::Debug,
            Some(schema::LogLevel::Trace) => log::LevelFilter::Trace,
            Some(schema::LogLevel::Info) | None => log::LevelFilter::Info,
        },
        log_output: monitoring
            .and_then(|m| m.logging.as_ref())
            .and_then(|l| text(&l.output)),
        cache: any_cache.then_some(cache_settings),
        sections: sections(&file),
        pending_features: pending,
    })
}

fn compile_quotas(file: &File) -> Result<Quotas, Problem> {
    let registry = file
        .agents
        .iter()
        .filter_map(|(id, a)| Some((id.clone(), Limit::from_rate(a.rate_limit?))))
        .collect();
    let rl = file.rate_limiting.as_ref();
    let mut fallback = std::collections::HashMap::new();
    if let Some(rl) = rl {
        for (id, r) in &rl.per_agent {
            fallback.insert(id.clone(), Limit::from_rate(*r));
        }
        // An explicit bucket wins over a plain rate for the same agent.
        for (id, q) in &rl.per_agent_quota {
            fallback.insert(id.clone(), Limit::from_quota(q.tokens.0, q.refill));
        }
    }
    let mut quotas = Quotas::new(
        file.gateway.rate_limit.map(Limit::from_rate),
        registry,
        fallback,
        rl.and_then(|rl| rl.default).map(Limit::from_rate),
    );
    if let Some(rl) = rl {
        let timeout = rl.store_timeout.map_or(Duration::from_millis(50), |d| d.0);
        if timeout.is_zero() {
            return Err(Problem::new(
                at!("rate_limiting", "store_timeout"),
                "must be longer than 0",
            ));
        }
        if let Some(url) = &rl.store {
            let store = crate::limits::redis::RedisStore::new(url, timeout)
                .map_err(|m| Problem::new(at!("rate_limiting", "store"), m))?;
            quotas.store = Some(Arc::new(store));
        }
        quotas.on_store_error = rl.on_store_error.unwrap_or(schema::OnStoreError::Local);
    }
    Ok(quotas)
}

fn normalise_base_path(p: String) -> Result<String, String> {
    if p.is_empty() || p == "/" {
        return Ok(String::new());
    }
    if !p.starts_with('/') || p.contains('*') || p.contains("//") || p.contains('?') {
        return Err(format!("{p:?} is not a base path; expected e.g. /api/v1"));
    }
    Ok(p.trim_end_matches('/').to_string())
}

/// Parses a backend URL: `http://host[:port][/path]` or `https://...`.
pub fn parse_target(url: &str) -> Result<Target, String> {
    let bad = |why: &str| format!("{url:?} is not a backend URL: {why}");
    let uri: http::Uri = url
        .parse()
        .map_err(|_| bad("expected http://host:port or https://host:port"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let auth = uri.authority().ok_or_else(|| bad("no host"))?;
    if auth.as_str().contains('@') {
        return Err(bad(
            "credentials in the URL are not supported; use an inject_auth transform",
        ));
    }
    if uri.query().is_some() {
        return Err(bad("a query string is not allowed"));
    }
    let host = auth
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let default_port = if tls { 443 } else { 80 };
    let port = auth.port_u16().unwrap_or(default_port);
    let authority = if port == default_port {
        auth.host().to_string()
    } else {
        format!("{}:{port}", auth.host())
    };
    let host_header =
        http::HeaderValue::from_str(&authority).map_err(|_| bad("the host is not valid"))?;
    Ok(Target {
        tls,
        host,
        port,
        host_header,
        authority,
        path_prefix: uri.path().trim_end_matches('/').to_string(),
    })
}

fn check_cert(path: &str) -> Result<(), String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let data = read_file(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path}: not a PEM certificate ({e})"))?;
    if certs.is_empty() {
        return Err(format!("{path}: holds no PEM certificate"));
    }
    Ok(())
}

fn check_key(path: &str) -> Result<(), String> {
    use rustls_pki_types::{pem::PemObject, PrivateKeyDer};
    let data = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&data)
        .map(|_| ())
        .map_err(|_| format!("{path}: holds no PEM private key"))
}

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(Path::new(path)).map_err(|e| format!("{path}: {}", super::io_reason(&e)))
}

/// A route's `caching` over the gateway-wide one, field by field; `None` when it does not cache.
fn route_cache(
    global: Option<&schema::Caching>,
    own: Option<&schema::Caching>,
    i: usize,
    label: &str,
) -> Result<Option<crate::cache::RouteCache>, Problem> {
    let pick = |f: fn(&schema::Caching) -> bool| own.is_some_and(f);
    let enabled = own
        .and_then(|c| c.enabled)
        .or_else(|| global.and_then(|c| c.enabled))
        .is_some_and(|f| f.0);
    if !enabled {
        return Ok(None);
    }
    let (key_list, key_at) = if pick(|c| c.cache_key.is_some()) {
        (
            own.and_then(|c| c.cache_key.as_ref()),
            at!("routes", i, "caching", "cache_key"),
        )
    } else {
        (
            global.and_then(|c| c.cache_key.as_ref()),
            at!("caching", "cache_key"),
        )
    };
    let mut key = Vec::new();
    for (j, part) in key_list.into_iter().flatten().enumerate() {
        let mut at = key_at.clone();
        at.push(crate::config::locate::IntoSeg::into_seg(j));
        key.push(crate::cache::key::KeyPart::parse(part).map_err(|m| Problem::new(at, m))?);
    }
    let ttl = own
        .and_then(|c| c.ttl)
        .or_else(|| global.and_then(|c| c.ttl))
        .map_or(Duration::from_secs(300), |d| d.0);
    if ttl.is_zero() {
        let at = if pick(|c| c.ttl.is_some()) {
            at!("routes", i, "caching", "ttl")
        } else {
            at!("caching", "ttl")
        };
        return Err(Problem::new(at, "must be longer than 0"));
    }
    for (field, set) in [
        ("store", pick(|c| c.store.is_some())),
        ("max_size", pick(|c| c.max_size.is_some())),
        ("max_object_size", pick(|c| c.max_object_size.is_some())),
        ("lock_timeout", pick(|c| c.lock_timeout.is_some())),
        ("store_timeout", pick(|c| c.store_timeout.is_some())),
        ("admin_networks", pick(|c| c.admin_networks.is_some())),
    ] {
        if set {
            return Err(Problem::new(
                at!("routes", i, "caching", field),
                "is a setting of the gateway-wide caching section, not of a route",
            ));
        }
    }
    Ok(Some(crate::cache::RouteCache {
        ttl,
        shared: own
            .and_then(|c| c.shared)
            .or_else(|| global.and_then(|c| c.shared))
            .is_some_and(|f| f.0),
        key,
        tag: crate::cache::purge::route_tag(label),
    }))
}

/// The gateway-wide store settings (defaults: 256 MiB, objects up to 4 MiB, 10 s lock wait).
fn cache_settings(c: Option<&schema::Caching>) -> Result<crate::cache::Settings, Problem> {
    let max_size = c.and_then(|c| c.max_size).map_or(256 << 20, |s| s.0);
    let max_object_size = c.and_then(|c| c.max_object_size).map_or(4 << 20, |s| s.0);
    if max_size == 0 {
        return Err(Problem::new(
            at!("caching", "max_size"),
            "must be larger than 0",
        ));
    }
    // The memory store weighs entries in KiB in a u16.
    if max_object_size == 0 || max_object_size > 64 << 20 {
        return Err(Problem::new(
            at!("caching", "max_object_size"),
            "must be between 1 byte and 64MB",
        ));
    }
    let store = c
        .and_then(|c| c.store.as_deref())
        .filter(|s| *s != "memory");
    if let Some(url) = store {
        let shown = crate::redis_link::redact(url);
        if !url.starts_with("redis://") && !url.starts_with("rediss://") {
            return Err(Problem::new(
                at!("caching", "store"),
                format!("{shown:?} is not a store; use memory or a redis:// URL"),
            ));
        }
        redis::Client::open(url).map_err(|e| {
            Problem::new(
                at!("caching", "store"),
                format!("{shown} is not a Redis URL ({:?})", e.kind()),
            )
        })?;
    }
    let mut admin_networks = Vec::new();
    match c.and_then(|c| c.admin_networks.as_ref()) {
        Some(list) => {
            for (i, n) in list.iter().enumerate() {
                admin_networks.push(
                    crate::client_addr::Cidr::parse(n)
                        .map_err(|m| Problem::new(at!("caching", "admin_networks", i), m))?,
                );
            }
        }
        None => {
            for n in ["127.0.0.0/8", "::1/128"] {
                admin_networks.push(
                    crate::client_addr::Cidr::parse(n)
                        .map_err(|m| Problem::new(at!("caching", "admin_networks"), m))?,
                );
            }
        }
    }
    Ok(crate::cache::Settings {
        admin_networks,
        redis: store.map(str::to_string),
        store_timeout: c
            .and_then(|c| c.store_timeout)
            .map_or(Duration::from_millis(100), |d| d.0),
        max_size,
        max_object_size: max_object_size.min(max_size),
        lock_timeout: c
            .and_then(|c| c.lock_timeout)
            .map_or(Duration::from_secs(10), |d| d.0),
    })
}
