//! The running configuration: the compiled, immutable tables the proxy reads (routes, agents,
//! limits policy, transforms, cache rules), swapped whole by a reload, and the process-lived
//! services (`services.rs`) built once at start from the first of them.
//!
//! Configuration flows one way: the file (`config/`) → each module compiles its own section →
//! these tables → the proxy.

mod compile;
pub mod health;
pub mod process;
mod route;
pub mod services;

pub use compile::{compile, DEFAULT_TIMEOUT};
pub use process::{Process, TlsFiles};
pub use route::{Route, StripRule};
pub use services::Services;

use crate::auth::Auth;
use crate::backends::Pool;
use crate::config::{schema, ConfigError};
use crate::limits::Quotas;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Config {
    pub source: PathBuf,
    pub name: String,
    pub version: String,
    /// Listeners, TLS, threads, pid file and sockets: fixed for the life of the process.
    pub process: Process,
    pub base_path: String,
    pub health_path: String,
    pub max_body_size: u64,
    pub max_header_size: u64,
    pub max_headers: usize,
    /// `gateway.max_in_flight`: requests over it are shed with 503.
    pub max_in_flight: Option<usize>,
    /// Proxies whose `X-Forwarded-For` is believed (for keying anonymous limits).
    pub trusted_proxies: Vec<crate::client_addr::Cidr>,
    /// In match order: most specific first.
    pub routes: Vec<Route>,
    /// Every pool of the routes: named backends and routes' `backend_url`s.
    pub pools: Vec<Arc<Pool>>,
    /// `gateway.connect_timeout`: for backends and routes that set none.
    pub connect_timeout: Duration,
    pub agent_count: usize,
    pub auth: Arc<Auth>,
    pub quotas: Quotas,
    /// `monitoring.metrics` when enabled (the registry is a service), and the path that serves it.
    pub metrics: Option<crate::observe::metrics::Settings>,
    pub metrics_path: String,
    /// `monitoring.metrics.listen`: metrics on a port of their own (not on the gateway's).
    pub metrics_listen: Option<String>,
    /// `monitoring.logging.output`: the JSON access log.
    pub log_output: Option<String>,
    /// The gateway's own log level (`monitoring.logging.level`, default info).
    pub log_level: log::LevelFilter,
    /// `monitoring.tracing` when enabled.
    pub tracing: Option<crate::observe::trace::Settings>,
    /// `POST {base_path}/auth/token`: a JWT for a valid API key (when a signing key exists).
    pub token_path: String,
    /// `DELETE {base_path}/cache`: purges (when a route caches).
    pub cache_path: String,
    pub keys_store: Option<String>,
    /// The cache store's settings, when a route caches.
    pub cache: Option<crate::cache::Settings>,
    /// `admin`: the console's listener and token, when on.
    pub admin: Option<crate::console::Settings>,
    /// What a reload compares to tell which process-lived sections changed.
    pub sections: Sections,
    /// Features the file turns on that this build does not provide yet; `start` refuses them.
    pub pending_features: Vec<String>,
}

impl Config {
    /// The pools in use (for the background service that keeps them current).
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.pools.clone()
    }

    /// The embedders the semantic routes use (each made once, see `semantic::engines`).
    pub fn embedders(&self) -> impl Iterator<Item = &crate::semantic::settings::EmbedderSettings> {
        (self.routes.iter())
            .filter_map(|r| r.semantic.as_ref())
            .map(|s| &s.settings.embedder)
    }

    /// The index in `routes` of the most specific route matching the normalised path.
    pub fn route_index(&self, path: &str) -> Option<usize> {
        self.routes.iter().position(|r| r.pattern.matches(path))
    }
}

/// The sections of the file whose runtime parts live as long as the process, as written. A
/// reload compares them to say which changes wait for `clawgate upgrade`; never shown (they may
/// hold secrets).
#[derive(Default, PartialEq)]
pub struct Sections {
    pub sockets: schema::Gateway,
    pub metrics: Option<schema::Metrics>,
    pub logging: Option<schema::Logging>,
    pub tracing: Option<schema::Tracing>,
    pub jwt: Option<schema::Jwt>,
    pub limits_store: Option<(
        Option<crate::config::values::Text>,
        Option<crate::config::values::Dur>,
    )>,
    pub cache_store: Option<schema::Caching>,
    pub admin: Option<schema::Admin>,
}

impl std::fmt::Debug for Sections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sections")
    }
}

impl Sections {
    fn of(file: &schema::File) -> Sections {
        let g = &file.gateway;
        let m = file.monitoring.as_ref();
        Sections {
            sockets: schema::Gateway {
                listen: g.listen.clone(),
                tls: g.tls.clone(),
                threads: g.threads,
                pid_file: g.pid_file.clone(),
                upgrade_sock: g.upgrade_sock.clone(),
                error_log: g.error_log.clone(),
                h2c: g.h2c,
                upstream_keepalive_pool_size: g.upstream_keepalive_pool_size,
                ..Default::default()
            },
            metrics: m.and_then(|m| m.metrics.clone()),
            logging: m.and_then(|m| m.logging.clone()),
            tracing: m.and_then(|m| m.tracing.clone()),
            jwt: file.auth.as_ref().and_then(|a| a.jwt.clone()),
            limits_store: (file.rate_limiting.as_ref()).map(|r| (r.store.clone(), r.store_timeout)),
            cache_store: file.caching.as_ref().map(|c| schema::Caching {
                store: c.store.clone(),
                max_size: c.max_size,
                max_object_size: c.max_object_size,
                lock_timeout: c.lock_timeout,
                store_timeout: c.store_timeout,
                admin_networks: c.admin_networks.clone(),
                ..Default::default()
            }),
            admin: file.admin.clone(),
        }
    }
}

/// Reads, parses, validates and compiles a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let (text, file) = crate::config::read(path)?;
    load_str(&text, &file, path.to_path_buf())
}

/// Parses, validates and compiles configuration text; `file` names it in errors.
pub fn load_str(text: &str, file: &str, source: PathBuf) -> Result<Config, ConfigError> {
    let parsed = crate::config::parse(text, file)?;
    compile(parsed, source).map_err(|p| crate::config::located(text, file, p))
}
