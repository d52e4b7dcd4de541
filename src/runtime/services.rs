//! What lives as long as the process, whatever reloads do: the metrics registry and its counts,
//! the access log and its writer, the tracer, the limits' buckets and Redis link, and the
//! response cache. Built once by `server.rs` from the first configuration and handed to the
//! proxy; a reload that changes their sections is told to wait for `clawgate upgrade`.

use super::Config;
use crate::cache::Cache;
use crate::observe::access_log::{AccessLog, Output};
use crate::observe::metrics::Metrics;
use crate::observe::trace::Tracing;
use std::sync::Arc;
use std::time::Duration;

pub struct Services {
    pub metrics: Option<Arc<Metrics>>,
    pub access_log: Option<Arc<AccessLog>>,
    pub tracing: Option<Arc<Tracing>>,
    pub limits: crate::limits::Shared,
    /// The response cache, when a route caches.
    pub cache: Option<&'static Cache>,
    /// Responses are read for LLM token usage (a token counter or the access log wants it).
    pub track_tokens: bool,
    /// The first 64 KiB of request bodies are kept (by reference): to find an answer's model
    /// for token usage, and to tell LLM requests for their latency metrics and log field.
    pub keep_bodies: bool,
    /// The semantic cache's embedders (the indexes live in the routes).
    pub semantic: crate::semantic::engines::Engines,
    /// The semantic cache's entries shared through Redis, when `caching.store` is Redis.
    pub semantic_store: Option<Arc<crate::semantic::shared::Store>>,
    /// The admin console's counts, when its listener is on.
    pub console: Option<Arc<crate::console::Stats>>,
    /// The HTTP/2 client connections, which their requests' stream resets are counted against.
    pub h2_conns: Arc<crate::connections::H2Conns>,
}

impl Services {
    /// The services `cfg` asks for. Nothing connects yet; the only threads started are those
    /// of an in-process embedder, whose model is loaded here so that a bad one stops the start.
    pub fn build(cfg: &Config) -> Result<Services, String> {
        let metrics = match &cfg.metrics {
            Some(s) => Some(Arc::new(Metrics::build(s).map_err(|p| p.message)?)),
            None => None,
        };
        let console = cfg
            .admin
            .as_ref()
            .map(|_| Arc::new(crate::console::Stats::default()));
        // The console's tail shows the access log's lines: without a log, one that only feeds it.
        let access_log = match (&cfg.log_output, &console) {
            (Some(o), _) => Some(match o.as_str() {
                "stdout" | "-" => Output::Stdout,
                _ => Output::File(o.into()),
            }),
            (None, Some(_)) => Some(Output::Discard),
            (None, None) => None,
        };
        let dropped = metrics.as_ref().map(|m| m.access_log_dropped.clone());
        let access_log = access_log.map(|o| Arc::new(AccessLog::new(o, console.clone(), dropped)));
        let store = match &cfg.quotas.store {
            Some((url, timeout)) => Some(crate::limits::redis::RedisStore::new(url, *timeout)?),
            None => None,
        };
        let cache = match &cfg.cache {
            Some(settings) => Some(Cache::new(settings)?),
            None => None,
        };
        let semantic_store = match cfg.cache.as_ref().and_then(|c| c.redis.as_ref()) {
            Some(url) => {
                let timeouts = cfg.routes.iter().filter_map(|r| r.semantic.as_ref());
                match timeouts.map(|s| s.settings.store_timeout).max() {
                    Some(t) => Some(Arc::new(crate::semantic::shared::Store::new(url, t)?)),
                    None => None,
                }
            }
            None => None,
        };
        let metrics_or_log = metrics.is_some() || access_log.is_some() || console.is_some();
        let track_tokens = access_log.is_some()
            || console.is_some()
            || metrics.as_ref().is_some_and(|m| m.counts_tokens());
        Ok(Services {
            metrics,
            access_log,
            tracing: cfg.tracing.as_ref().map(|t| Arc::new(Tracing::build(t))),
            limits: crate::limits::Shared {
                store,
                // Often enough that a slice goes back soon after `max_ttl`, not a busy loop.
                sweep_every: (cfg.quotas.lease).map(|l| {
                    (l.max_ttl / 4).clamp(Duration::from_millis(10), Duration::from_millis(250))
                }),
                ..Default::default()
            },
            cache,
            track_tokens,
            keep_bodies: track_tokens || metrics_or_log,
            semantic: {
                let engines = crate::semantic::engines::Engines::default();
                engines.prepare(cfg.embedders())?;
                engines
            },
            semantic_store,
            console,
            h2_conns: Arc::new(crate::connections::H2Conns::new(
                cfg.process.h2_max_resets_per_second,
            )),
        })
    }
}
