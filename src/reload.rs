//! Configuration reload without a new process (SIGHUP, `clawgate reload`): the file is read,
//! checked and compiled again, then swapped in at once; requests in flight finish with the
//! configuration they started with. A file that does not load is refused and the running
//! configuration keeps serving.
//!
//! What lives as long as the process (metrics, access log, tracing, the limits' buckets and
//! Redis link, the response cache: `runtime::Services`) is not rebuilt; changes to the sections
//! those come from, and to listeners, TLS, threads, pid file and sockets, are reported as needing
//! `clawgate upgrade`. Backends defined as before keep their pools (addresses, health, breaker),
//! and an unchanged `auth.jwt` keeps its keys (those a JWKS brought included).

use crate::runtime::{Config, Services};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;

/// The changes of `new` that wait for `clawgate upgrade`: its process-lived sections. What the
/// running process was set up with stays in the new tables, so that they describe it; backends
/// and JWT keys that did not change keep their state.
pub fn needs_upgrade(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let (was, is) = (&old.sections, &new.sections);
    let jwt_same = was.jwt == is.jwt;
    let mut later = Vec::new();
    for (changed, what) in [
        (
            was.sockets != is.sockets,
            "listeners, TLS, threads, pid file and sockets",
        ),
        (was.metrics != is.metrics, "monitoring.metrics"),
        (was.logging != is.logging, "monitoring.logging"),
        (was.tracing != is.tracing, "monitoring.tracing"),
        (was.limits_store != is.limits_store, "rate_limiting.store"),
        (was.admin != is.admin, "admin (its listener and token)"),
        (
            was.cache_store != is.cache_store || (old.cache.is_none() && new.cache.is_some()),
            "the cache store (caching.store, sizes, timeouts, admin networks)",
        ),
    ] {
        if changed {
            later.push(what);
        }
    }
    new.process = old.process.clone();
    new.metrics = old.metrics.clone();
    new.metrics_path = old.metrics_path.clone();
    new.metrics_listen = old.metrics_listen.clone();
    new.log_output = old.log_output.clone();
    new.log_level = old.log_level;
    new.tracing = old.tracing.clone();
    new.quotas.store = old.quotas.store.clone();
    new.cache = old.cache.clone();
    new.admin = old.admin.clone();
    keep_pools(old, new);
    keep_semantic(old, new);
    if jwt_same {
        if let (Some(jwt), Some(auth)) = (&old.auth.jwt, Arc::get_mut(&mut new.auth)) {
            // The same keys (and those a JWKS brought); the agents may have changed.
            jwt.forget_verified();
            auth.jwt = Some(jwt.clone());
        }
    } else if old.auth.jwt.as_ref().is_some_and(|j| j.jwks.is_some()) {
        later.push("auth.jwt's scheduled JWKS refresh (unknown key ids are still fetched)");
    }
    later
}

/// Backends defined as before keep their pool: its addresses, health and breaker state.
fn keep_pools(old: &Config, new: &mut Config) {
    let same = |p: &Arc<crate::backends::Pool>| {
        old.pools
            .iter()
            .find(|o| o.name == p.name && o.fingerprint == p.fingerprint)
            .cloned()
    };
    for route in &mut new.routes {
        for (pool, _) in &mut route.backends.pools {
            if let Some(o) = same(pool) {
                *pool = o;
            }
        }
    }
    for pool in &mut new.pools {
        if let Some(o) = same(pool) {
            *pool = o;
        }
    }
}

/// Semantic routes whose label and settings are as before keep their index: a reload forgets no
/// answer that could still be served.
fn keep_semantic(old: &Config, new: &mut Config) {
    for route in &mut new.routes {
        let Some(new_sc) = &route.semantic else {
            continue;
        };
        let same = (old.routes.iter())
            .filter(|o| o.label == route.label)
            .filter_map(|o| o.semantic.as_ref())
            .find(|o| o.settings == new_sc.settings);
        if let Some(o) = same {
            route.semantic = Some(o.clone());
        }
    }
}

/// Reads and swaps in the configuration on SIGHUP, and prepares a handover on SIGUSR2 (a
/// Pingora background service).
pub struct Reloader {
    pub current: Arc<ArcSwap<Config>>,
    pub services: Arc<Services>,
}

impl Reloader {
    /// One reload; what happened, as a log message.
    pub async fn reload(&self) -> Result<String, String> {
        let old = self.current.load_full();
        let mut new = crate::runtime::load(&old.source).map_err(|e| e.to_string())?;
        if !new.pending_features.is_empty() {
            return Err(format!(
                "this build does not provide {} yet",
                new.pending_features.join(", ")
            ));
        }
        let later = needs_upgrade(&old, &mut new);
        // A model named for the first time is loaded before any request can need it.
        self.services.semantic.prepare(new.embedders())?;
        // New backends are resolved before they take requests.
        for pool in new.pools.iter().filter(|p| !p.resolved()) {
            pool.update().await;
        }
        let routes = new.routes.len();
        self.current.store(Arc::new(new));
        let mut message = format!("configuration reloaded: {routes} routes");
        if !later.is_empty() {
            message.push_str(&format!(
                "; changes to {} take effect after `clawgate upgrade`",
                later.join(", ")
            ));
        }
        Ok(message)
    }

    async fn on_signal(&self) {
        let result = self.reload().await;
        let (outcome, level, message) = match &result {
            Ok(m) => ("success", "info", m.clone()),
            Err(e) => (
                "failure",
                "error",
                format!("reload refused, still serving the running configuration: {e}"),
            ),
        };
        match level {
            "info" => log::info!("{message}"),
            _ => log::error!("{message}"),
        }
        if let Some(m) = &self.services.metrics {
            m.reloads.with_label_values(&[outcome]).inc();
        }
        if let Some(log) = &self.services.access_log {
            log.write(&crate::observe::access_log::event(level, &message));
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let (mut hangups, mut handover) = match (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined2()),
        ) {
            (Ok(h), Ok(u)) => (h, u),
            (Err(e), _) | (_, Err(e)) => {
                log::error!("cannot listen for SIGHUP and SIGUSR2; reload is unavailable: {e}");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = hangups.recv() => self.on_signal().await,
                Some(()) = handover.recv() => {
                    log::info!("handing over to a new process: connections close after their response");
                    crate::proxy::HANDING_OVER.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str) -> Config {
        crate::runtime::load_str(yaml, "t.yaml", "t.yaml".into()).unwrap()
    }

    const BASE: &str = r#"
gateway: {listen: "127.0.0.1:18080", threads: 2}
rate_limiting: {store: "redis://127.0.0.1:6390", default: "10/second"}
monitoring: {metrics: {enabled: true}}
routes:
  - {path: "/a/*", backend_url: "http://127.0.0.1:9"}
"#;

    #[test]
    fn routes_limits_and_agents_apply_at_once() {
        let old = load(BASE);
        let changed = BASE
            .replace("10/second", "20/second")
            .replace("/a/*", "/b/*");
        let mut new = load(&changed);
        assert!(needs_upgrade(&old, &mut new).is_empty());
        assert_eq!(new.routes[0].label, "/b/*");
    }

    #[test]
    fn process_lived_sections_wait_for_an_upgrade_and_stay_as_they_run() {
        let old = load(BASE);
        let changed = BASE
            .replace("threads: 2", "threads: 3")
            .replace("6390", "6391")
            .replace(
                "metrics: {enabled: true}",
                "metrics: {enabled: true, prefix: x_}",
            );
        let mut new = load(&changed);
        assert_eq!(
            needs_upgrade(&old, &mut new),
            [
                "listeners, TLS, threads, pid file and sockets",
                "monitoring.metrics",
                "rate_limiting.store"
            ]
        );
        assert_eq!(new.process.threads, 2);
        assert_eq!(new.quotas.store, old.quotas.store);
        assert_eq!(new.metrics, old.metrics);
    }
}
