//! The admin listener (DESIGN §5.5): a read-only JSON API over the gateway's own figures
//! (`stats.rs`, kept only when the listener is on), a live tail of redacted access-log lines,
//! one action (a cache purge), and the web console served from the binary. Off by default; a
//! non-loopback address needs a token.

mod api;
mod app;
mod assets;
pub mod stats;

pub use app::ConsoleApp;
pub use stats::Stats;

use crate::at;
use crate::config::schema;
use crate::config::Problem;
use std::net::SocketAddr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub listen: String,
    /// `Authorization: Bearer <token>` on every request; `None` (loopback only): no token.
    pub token: Option<String>,
}

impl Settings {
    pub fn compile(a: Option<&schema::Admin>) -> Result<Option<Settings>, Problem> {
        let Some(a) = a else { return Ok(None) };
        let Some(listen) = &a.listen else {
            return Err(Problem::new(
                at!("admin"),
                "admin.listen is required (e.g. 127.0.0.1:9901); leave admin out to turn it off",
            ));
        };
        let addr: SocketAddr = listen.parse().map_err(|_| {
            let msg = format!("{:?} is not an address such as 127.0.0.1:9901", listen.0);
            Problem::new(at!("admin", "listen"), msg)
        })?;
        let token = match &a.token {
            Some(t) if t.trim().len() < 16 => {
                return Err(Problem::new(
                    at!("admin", "token"),
                    "must be at least 16 characters",
                ))
            }
            t => t.as_ref().map(|t| t.trim().to_string()),
        };
        if token.is_none() && !addr.ip().is_loopback() {
            return Err(Problem::new(
                at!("admin", "listen"),
                format!(
                    "{addr} is not a loopback address: set admin.token to serve the console there"
                ),
            ));
        }
        Ok(Some(Settings {
            listen: listen.0.clone(),
            token,
        }))
    }
}

/// Takes a sample of the console's figures each second, for its charts.
pub struct Ticker(pub std::sync::Arc<Stats>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Ticker {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                    self.0.tick(now.map_or(0, |d| d.as_secs()));
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
