//! Rate limits shared by every instance that points at one Redis: the same GCRA as the local
//! buckets, run by a Lua script inside Redis (one round trip per request whatever the number of
//! limits; time from Redis' own clock, so hosts with skewed clocks cannot over-issue).

use super::{Exceeded, Limit, Standing};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Checks every bucket first and takes from all of them only when all have a token.
/// KEYS: the buckets. ARGV: per bucket, the emission interval (µs) and the burst.
/// Returns `{1, limit, reset_us, remaining, window_us}` for the tightest bucket, or
/// `{0, limit, retry_us, window_us}`.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new = {}
local best_rem, best_lim, best_reset, best_window = -1, 0, 0, 0
for i = 1, #KEYS do
  local e = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local window = e * burst
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local next_tat = tat + e
  local ahead = next_tat - now
  if ahead > window then
    return {0, burst, ahead - window, window}
  end
  new[i] = next_tat
  local rem = math.floor((window - ahead) / e)
  if best_rem < 0 or rem < best_rem then
    best_rem, best_lim, best_reset, best_window = rem, burst, ahead, window
  end
end
for i = 1, #KEYS do
  local ttl_ms = math.floor((new[i] - now) / 1000) + 1000
  redis.call('SET', KEYS[i], string.format('%d', new[i]), 'PX', ttl_ms)
end
return {1, best_lim, best_reset, best_rem, best_window}
"#;

/// After a failure, Redis is not asked again for this long (requests use the fallback at once
/// instead of each waiting for the timeout).
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

pub struct RedisStore {
    client: redis::Client,
    /// The URL without its password, for logs.
    pub shown: String,
    timeout: Duration,
    script: redis::Script,
    conn: tokio::sync::OnceCell<ConnectionManager>,
    started: Instant,
    /// Milliseconds since `started` before which Redis is not tried (after a failure).
    skip_until_ms: AtomicU64,
    failing: AtomicBool,
    /// Checks that could not use Redis (for metrics).
    pub errors: AtomicU64,
}

/// `redis://user:secret@host` → `redis://user:***@host`.
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

impl RedisStore {
    pub fn new(url: &str, timeout: Duration) -> Result<RedisStore, String> {
        let shown = redact(url);
        let client = redis::Client::open(url)
            .map_err(|e| format!("{shown} is not a Redis URL ({:?})", e.kind()))?;
        Ok(RedisStore {
            client,
            shown,
            timeout,
            script: redis::Script::new(SCRIPT),
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
        match tokio::time::timeout(Duration::from_secs(5), self.connection()).await {
            Ok(Ok(_)) => log::info!("rate-limit store {} connected", self.shown),
            Ok(Err(e)) => log::warn!("rate-limit store {} not reachable yet: {e}", self.shown),
            Err(_) => log::warn!(
                "rate-limit store {} not reachable yet: no answer within 5s",
                self.shown
            ),
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout.max(Duration::from_millis(200))))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await?;
        Ok(conn.clone())
    }

    /// Takes a token from every bucket (by Redis key), or from none. `Err(None)`: Redis could
    /// not answer; the caller applies `on_store_error`.
    pub async fn take(
        &self,
        buckets: &[(String, Limit)],
    ) -> Result<Option<Standing>, Option<Exceeded>> {
        let now_ms = self.started.elapsed().as_millis() as u64;
        if now_ms < self.skip_until_ms.load(Ordering::Relaxed) {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return Err(None);
        }
        let mut invocation = self.script.prepare_invoke();
        for (key, limit) in buckets {
            let e = (limit.emission.as_micros() as u64).max(1);
            invocation.key(key).arg(e).arg(limit.burst);
        }
        let answer = tokio::time::timeout(self.timeout, async {
            let mut conn = self.connection().await?;
            invocation
                .invoke_async::<Vec<i64>>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)));
        match answer {
            Ok(v) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    log::info!(
                        "rate-limit store {} answers again; limits are shared again",
                        self.shown
                    );
                }
                decode(&v)
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.skip_until_ms.store(
                    now_ms + RETRY_AFTER_FAILURE.as_millis() as u64,
                    Ordering::Relaxed,
                );
                if !self.failing.swap(true, Ordering::Relaxed) {
                    log::warn!("rate-limit store {} failed ({e}); applying on_store_error until it answers", self.shown);
                }
                Err(None)
            }
        }
    }
}

fn decode(v: &[i64]) -> Result<Option<Standing>, Option<Exceeded>> {
    let secs = |us: i64| (us.max(0) as u64).div_ceil(1_000_000).max(1);
    match v {
        [1, limit, reset_us, remaining, window_us] => Ok(Some(Standing {
            remaining: (*remaining).max(0) as u64,
            limit: (*limit).max(0) as u64,
            reset_secs: secs(*reset_us),
            window_secs: secs(*window_us),
        })),
        [0, limit, retry_us, window_us] => Err(Some(Exceeded {
            retry_after_secs: secs(*retry_us),
            limit: (*limit).max(0) as u64,
            window_secs: secs(*window_us),
        })),
        // An answer we do not understand is a store failure.
        _ => Err(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_logs() {
        assert_eq!(redact("redis://:hunter2@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact("redis://u:hunter2@h"), "redis://u:***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn answers_are_decoded() {
        assert_eq!(
            decode(&[1, 100, 600_000, 42, 60_000_000]),
            Ok(Some(Standing {
                remaining: 42,
                limit: 100,
                reset_secs: 1,
                window_secs: 60
            }))
        );
        assert_eq!(
            decode(&[0, 3, 19_500_000, 60_000_000]),
            Err(Some(Exceeded {
                retry_after_secs: 20,
                limit: 3,
                window_secs: 60
            }))
        );
    }
}
