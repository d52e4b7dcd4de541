//! A connection to Redis that requests can lean on without waiting on it: every call is bounded
//! by a timeout, a failure makes the next calls skip Redis for a moment (instead of each waiting
//! for its own timeout), and the first failure and the recovery are logged once, with the
//! password redacted. redis-rs' connection manager (or its cluster connection, which follows
//! the slots) reconnects behind it.

mod cluster;

pub use cluster::Conn;
use cluster::Target;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// After a failure, Redis is not asked again for this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

pub struct Link {
    client: Target,
    /// The URL without its password, for logs.
    pub shown: String,
    /// What the link is for, in log lines ("rate-limit store").
    role: &'static str,
    /// What happens while Redis fails, and when it is back (log lines).
    meanwhile: &'static str,
    recovered: &'static str,
    pub timeout: Duration,
    conn: tokio::sync::OnceCell<Conn>,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not tried (after a failure).
    skip_until_ms: AtomicU64,
    failing: AtomicBool,
    /// Calls that could not use Redis.
    pub errors: AtomicU64,
}

/// `redis://user:secret@host` → `redis://user:***@host` (and the same of a cluster's URL).
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split_once(':').map_or("", |(u, _)| u);
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Whether `url` names a Redis server or cluster (nothing is connected).
pub fn check(url: &str) -> Result<(), String> {
    match Target::open(url, Duration::from_millis(100)) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "{} is not a Redis URL ({:?})",
            redact(url),
            e.kind()
        )),
    }
}

impl Link {
    pub fn new(
        url: &str,
        timeout: Duration,
        role: &'static str,
        meanwhile: &'static str,
        recovered: &'static str,
    ) -> Result<Link, String> {
        let shown = redact(url);
        let client = Target::open(url, timeout)
            .map_err(|e| format!("{shown} is not a Redis URL ({:?})", e.kind()))?;
        Ok(Link {
            client,
            shown,
            role,
            meanwhile,
            recovered,
            timeout,
            conn: tokio::sync::OnceCell::new(),
            started: Instant::now(),
            skip_until_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            errors: AtomicU64::new(0),
        })
    }

    /// Connects ahead of the first request (from the serving process's runtime, which the
    /// connection's task lives on), so that no request pays for the connection and TLS set-up.
    pub async fn warm_up(&self) {
        let (role, shown) = (self.role, &self.shown);
        match tokio::time::timeout(Duration::from_secs(5), self.connection()).await {
            Ok(Ok(_)) => log::info!("{role} {shown} connected"),
            Ok(Err(e)) => log::warn!("{role} {shown} not reachable yet: {e}"),
            Err(_) => log::warn!("{role} {shown} not reachable yet: no answer within 5s"),
        }
    }

    async fn connection(&self) -> Result<Conn, String> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                self.client
                    .connect(self.timeout)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await?;
        Ok(conn.clone())
    }

    /// Runs `op` within the timeout; `None` when Redis is skipped or fails.
    pub async fn run<T, F, Fut>(&self, op: F) -> Option<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let now_ms = self.started.elapsed().as_millis() as u64;
        if now_ms < self.skip_until_ms.load(Ordering::Relaxed) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let answer = tokio::time::timeout(self.timeout, async {
            let conn = self.connection().await?;
            op(conn).await.map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)));
        match answer {
            Ok(v) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    log::info!(
                        "{} {} answers again; {}",
                        self.role,
                        self.shown,
                        self.recovered
                    );
                }
                Some(v)
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                let skip = now_ms + RETRY_AFTER_FAILURE.as_millis() as u64;
                self.skip_until_ms.store(skip, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    let e = redact_in(&e);
                    log::warn!(
                        "{} {} failed ({e}); {}",
                        self.role,
                        self.shown,
                        self.meanwhile
                    );
                }
                None
            }
        }
    }
}

impl Link {
    /// Deletes every key matching `pattern` (SCAN in steps, then UNLINK): an operator's purge,
    /// never a request's work. How many went; `None` when Redis failed part-way.
    pub async fn unlink_matching(&self, pattern: &str) -> Option<u64> {
        let nodes = self
            .run(|mut c| async move { c.scan_targets().await })
            .await?;
        let mut removed = 0;
        for node in &nodes {
            removed += self.unlink_on(node, pattern).await?;
        }
        Some(removed)
    }

    /// `unlink_matching` on one server (each primary of a cluster holds its own keys).
    async fn unlink_on(&self, node: &Option<(String, u16)>, pattern: &str) -> Option<u64> {
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, names) = self
                .run(|mut c| async move { c.scan_on(node, scan).await })
                .await?;
            if !names.is_empty() {
                removed += self
                    .run(|mut c| async move { c.unlink(&names).await })
                    .await?;
            }
            if next == 0 {
                return Some(removed);
            }
            cursor = next;
        }
    }
}

/// Errors from redis-rs may quote the URL; the logged text never holds the password.
fn redact_in(message: &str) -> String {
    message
        .split_whitespace()
        .map(|w| {
            if w.contains("://") {
                redact(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(redact("redis://:hunter2@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact("redis://u:hunter2@h"), "redis://u:***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert_eq!(
            redact_in("cannot reach redis://u:pw@h now"),
            "cannot reach redis://u:***@h now"
        );
    }
}
