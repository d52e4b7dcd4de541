//! Rate limits shared by every instance that points at one Redis: the same GCRA as the local
//! buckets, run by a Lua script inside Redis (one round trip per request whatever the number of
//! limits; time from Redis' own clock, so hosts with skewed clocks cannot over-issue).

use super::{Exceeded, Limit, Standing};
use crate::redis_link::Link;
use std::time::Duration;

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

pub struct RedisStore {
    pub link: Link,
    script: redis::Script,
}

impl RedisStore {
    pub fn new(url: &str, timeout: Duration) -> Result<RedisStore, String> {
        Ok(RedisStore {
            link: Link::new(
                url,
                timeout,
                "rate-limit store",
                "applying on_store_error until it answers",
                "limits are shared again",
            )?,
            script: redis::Script::new(SCRIPT),
        })
    }

    pub async fn warm_up(&self) {
        self.link.warm_up().await
    }

    /// Takes a token from every bucket (by Redis key), or from none. `Err(None)`: Redis could
    /// not answer; the caller applies `on_store_error`.
    pub async fn take(
        &self,
        buckets: &[(String, Limit)],
    ) -> Result<Option<Standing>, Option<Exceeded>> {
        let mut invocation = self.script.prepare_invoke();
        for (key, limit) in buckets {
            let e = (limit.emission.as_micros() as u64).max(1);
            invocation.key(key).arg(e).arg(limit.burst);
        }
        let answer = self
            .link
            .run(|mut conn| async move { invocation.invoke_async::<Vec<i64>>(&mut conn).await })
            .await;
        match answer {
            Some(v) => decode(&v),
            None => Err(None),
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
