//! Compiles the parsed file into the runtime tables: the gateway section here, then each part by
//! the module that owns it (auth, backends, routes, limits, metrics, tracing, cache).

use super::route::{Context, Route};
use super::{Config, Process, Sections};
use crate::at;
use crate::config::schema::{self, File};
use crate::config::values::Text;
use crate::config::Problem;
use crate::limits::Quotas;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

fn text(t: &Option<Text>) -> Option<String> {
    t.as_ref().map(|t| t.0.clone())
}

pub fn compile(file: File, source: PathBuf) -> Result<Config, Problem> {
    let g = &file.gateway;
    let base_path = super::process::base_path(g)?;
    let process = Process::compile(g, &source)?;
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
    let max_in_flight = match g.max_in_flight {
        Some(c) if c.0 == 0 => {
            return Err(Problem::new(
                at!("gateway", "max_in_flight"),
                "must be at least 1",
            ))
        }
        c => c.map(|c| c.0 as usize),
    };
    let quotas = Quotas::compile(&file)?;
    let mut trusted_proxies = Vec::new();
    for (i, t) in g.trusted_proxies.iter().enumerate() {
        trusted_proxies.push(
            crate::client_addr::Cidr::parse(t)
                .map_err(|m| Problem::new(at!("gateway", "trusted_proxies", i), m))?,
        );
    }
    let auth = crate::auth::compile::compile(&file)?;
    let observe = Observe::compile(&file, &process.listen)?;
    let cache_settings = crate::cache::Settings::compile(file.caching.as_ref())?;
    let config_dir = source.parent().unwrap_or(std::path::Path::new("."));
    let (routes, pools) = compile_routes(&file, &base_path, &auth, config_dir)?;
    let any_cache = routes.iter().any(|r| r.cache.is_some());
    Ok(Config {
        name: text(&file.name).unwrap_or_else(|| "clawgate".into()),
        version: text(&file.version).unwrap_or_else(|| "1.0".into()),
        health_path: format!("{base_path}/health"),
        token_path: format!("{base_path}/auth/token"),
        cache_path: format!("{base_path}/cache"),
        auth: Arc::new(auth),
        quotas,
        metrics: observe.metrics,
        metrics_path: observe.metrics_path,
        metrics_listen: observe.metrics_listen,
        log_output: observe.log_output,
        log_level: observe.log_level,
        tracing: observe.tracing,
        base_path,
        process,
        max_body_size: g.max_body_size.map_or(10 << 20, |s| s.0),
        max_header_size: g.max_header_size.map_or(64 << 10, |s| s.0),
        max_headers,
        max_in_flight,
        trusted_proxies,
        routes,
        pools,
        connect_timeout: g.connect_timeout.map_or(Duration::from_secs(5), |d| d.0),
        agent_count: file.agents.len(),
        keys_store: (file.auth.as_ref())
            .and_then(|a| a.api_key.as_ref())
            .and_then(|k| text(&k.keys_store)),
        cache: any_cache.then_some(cache_settings),
        admin: crate::console::Settings::compile(file.admin.as_ref())?,
        sections: Sections::of(&file),
        pending_features: pending_features(&file),
        source,
    })
}

/// Features of later issues: parsed and validated now, refused at start until they exist.
fn pending_features(file: &File) -> Vec<String> {
    let mut pending = Vec::new();
    let logging = file.monitoring.as_ref().and_then(|m| m.logging.as_ref());
    if logging.is_some_and(|l| l.format == Some(schema::LogFormat::Text)) {
        pending
            .push("a text access log (monitoring.logging.format: text; json is provided)".into());
    }
    pending
}

/// The named backends, then each route in match order (most specific first; among equally
/// specific routes those with `match` first, then the first written); every pool in use.
fn compile_routes(
    file: &File,
    base_path: &str,
    auth: &crate::auth::Auth,
    config_dir: &std::path::Path,
) -> Result<(Vec<Route>, Vec<Arc<crate::backends::Pool>>), Problem> {
    let mut named = crate::backends::Named::new();
    for (name, b) in &file.backends {
        named.insert(
            name.clone(),
            Arc::new(crate::backends::compile::from_backend(name, b)?),
        );
    }
    let mut pools: Vec<_> = named.values().cloned().collect();
    let on = Context {
        base_path,
        auth,
        transforms: file.transforms.as_ref(),
        caching: file.caching.as_ref(),
        named: &named,
        config_dir,
        jwt_secret: (file.auth.as_ref().and_then(|a| a.jwt.as_ref())).and_then(|j| {
            (j.secret.as_ref())
                .or_else(|| j.keys.first().and_then(|k| k.secret.as_ref()))
                .map(|t| t.0.as_str())
        }),
    };
    let mut routes: Vec<Route> = Vec::new();
    for (i, r) in file.routes.iter().enumerate() {
        let route = Route::compile(i, r, &on, &mut pools)?;
        // A path may repeat when the earlier routes' `match` tells them apart; a second route
        // without one could never be reached.
        let unreachable = route.matcher.is_none()
            && routes.iter().any(|other| {
                other.pattern.source() == route.pattern.source() && other.matcher.is_none()
            });
        if unreachable {
            return Err(Problem::new(
                at!("routes", i, "path"),
                format!(
                    "{:?} is already the path of an earlier route without match",
                    r.path.0
                ),
            ));
        }
        routes.push(route);
    }
    routes.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.pattern.specificity()),
            r.matcher.is_none(),
        )
    });
    Ok((routes, pools))
}

/// `monitoring`: what the metrics registry, the access log and the tracer are built from.
struct Observe {
    metrics: Option<crate::observe::metrics::Settings>,
    metrics_path: String,
    metrics_listen: Option<String>,
    log_output: Option<String>,
    log_level: log::LevelFilter,
    tracing: Option<crate::observe::trace::Settings>,
}

impl Observe {
    fn compile(file: &File, listen: &[String]) -> Result<Observe, Problem> {
        let m = file.monitoring.as_ref();
        let (metrics, metrics_path, metrics_listen) =
            metrics(m.and_then(|m| m.metrics.as_ref()), listen)?;
        let logging = m.and_then(|m| m.logging.as_ref());
        let tracing = match m.and_then(|m| m.tracing.as_ref()) {
            Some(t) => crate::observe::trace::Settings::compile(t)?,
            None => None,
        };
        Ok(Observe {
            metrics,
            metrics_path,
            metrics_listen,
            log_output: logging.and_then(|l| text(&l.output)),
            log_level: match logging.and_then(|l| l.level) {
                Some(schema::LogLevel::Error) => log::LevelFilter::Error,
                Some(schema::LogLevel::Warn) => log::LevelFilter::Warn,
                Some(schema::LogLevel::Debug) => log::LevelFilter::Debug,
                Some(schema::LogLevel::Trace) => log::LevelFilter::Trace,
                Some(schema::LogLevel::Info) | None => log::LevelFilter::Info,
            },
            tracing,
        })
    }
}

type MetricsParts = (
    Option<crate::observe::metrics::Settings>,
    String,
    Option<String>,
);

/// `monitoring.metrics`: the registry's settings when enabled, the endpoint's path, and its own
/// listener (which may not be one of the gateway's).
fn metrics(m: Option<&schema::Metrics>, listen: &[String]) -> Result<MetricsParts, Problem> {
    let Some(m) = m else {
        return Ok((None, "/metrics".into(), None));
    };
    let path = text(&m.endpoint).unwrap_or_else(|| "/metrics".into());
    if !path.starts_with('/') {
        return Err(Problem::new(
            at!("monitoring", "metrics", "endpoint"),
            format!("{path:?} must start with \"/\""),
        ));
    }
    if !m.enabled.0 {
        return Ok((None, path, None));
    }
    let settings = crate::observe::metrics::Settings::compile(m)?;
    let own = match text(&m.listen).map(|l| super::process::normalise_listen(&l)) {
        Some(l) if l.parse::<std::net::SocketAddr>().is_err() || listen.contains(&l) => {
            return Err(Problem::new(
                at!("monitoring", "metrics", "listen"),
                format!("{l:?} is not a free listen address; expected IP:PORT such as 127.0.0.1:9090, not one of gateway.listen"),
            ))
        }
        other => other,
    };
    Ok((Some(settings), path, own))
}
