//! The background service that keeps pools current: re-resolution and active health checks of
//! every pool of the configuration in use (a reload's new pools included).

use crate::config::Config;
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
}

/// Sets `backend_up` for every address of the configuration's pools, and removes the series of
/// addresses that are gone; `shown` holds what was set last time.
fn report(config: &Config, shown: &mut Vec<(String, String)>) {
    let Some(m) = &config.metrics else { return };
    let mut now = Vec::new();
    for pool in config.pools() {
        for (address, up) in pool.health() {
            m.backend_up
                .with_label_values(&[pool.name.as_str(), address.as_str()])
                .set(i64::from(up));
            now.push((pool.name.clone(), address));
        }
    }
    for (backend, address) in shown.iter().filter(|s| !now.contains(s)) {
        let _ = m.backend_up.remove_label_values(&[backend, address]);
    }
    *shown = now;
}

#[async_trait]
impl BackgroundService for Maintainer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut shown = Vec::new();
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
            report(&config, &mut shown);
            drop(config);
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
