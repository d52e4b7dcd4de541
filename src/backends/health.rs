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

#[async_trait]
impl BackgroundService for Maintainer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            let config = self.current.load_full();
            // Pools are independent: one slow check does not delay the others.
            let mut work = tokio::task::JoinSet::new();
            for pool in config.pools() {
                work.spawn(async move { pool.maintain().await });
            }
            drop(config);
            tokio::select! {
                _ = work.join_all() => {}
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
