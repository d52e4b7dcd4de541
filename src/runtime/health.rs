//! The background service that keeps pools current: re-resolution and active health checks of
//! every pool of the configuration in use (a reload's new pools included).

use super::Config;
use crate::backends::Pool;
use crate::observe::metrics::Metrics;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;

/// How often due work is looked for; intervals are rounded up to it.
const TICK: Duration = Duration::from_millis(100);

pub struct Maintainer {
    pub current: Arc<ArcSwap<Config>>,
    pub metrics: Option<Arc<Metrics>>,
}

/// What `report` showed last time: the `backend_up` series set, and each pool's ejections and
/// breaker openings already counted (the pool is held, so that a rebuilt pool of the same name
/// is told apart and counted from zero).
#[derive(Default)]
struct Shown {
    up: Vec<(String, String)>,
    events: Vec<(Arc<Pool>, (u64, u64))>,
}

/// Sets `backend_up` for every address of the configuration's pools (removing the series of
/// addresses that are gone) and adds each pool's new ejections and breaker openings to their
/// counters.
fn report(m: &Metrics, config: &Config, shown: &mut Shown) {
    let mut up = Vec::new();
    let mut events = Vec::new();
    for pool in config.pools() {
        for (address, is_up) in pool.health() {
            m.backend_up
                .with_label_values(&[pool.name.as_str(), address.as_str()])
                .set(i64::from(is_up));
            up.push((pool.name.clone(), address));
        }
        let now = pool.events();
        let before = shown
            .events
            .iter()
            .find(|(p, _)| Arc::ptr_eq(p, &pool))
            .map_or((0, 0), |(_, e)| *e);
        let name = [pool.name.as_str()];
        if now.0 > before.0 {
            m.ejections
                .with_label_values(&name)
                .inc_by(now.0 - before.0);
        }
        if now.1 > before.1 {
            m.breaker_opens
                .with_label_values(&name)
                .inc_by(now.1 - before.1);
        }
        events.push((pool, now));
    }
    for (backend, address) in shown.up.iter().filter(|s| !up.contains(s)) {
        let _ = m.backend_up.remove_label_values(&[backend, address]);
    }
    *shown = Shown { up, events };
}

#[async_trait]
impl BackgroundService for Maintainer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut shown = Shown::default();
        loop {
            let config = self.current.load_full();
            // Pools are independent: one slow check does not delay the others.
            let mut work = tokio::task::JoinSet::new();
            for pool in config.pools() {
                work.spawn(async move { pool.maintain().await });
            }
            tokio::select! {
                _ = work.join_all() => {}
                _ = shutdown.changed() => return,
            }
            if let Some(m) = &self.metrics {
                report(m, &config, &mut shown);
            }
            drop(config);
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
