//! Token budgets shared through Redis: one Lua script reserves (all the budgets that apply, or
//! none), one trues up. The same GCRA as the local buckets, weighted by tokens, on Redis' clock.
//! Times are microseconds; the emission interval is sent with a fraction (a budget of millions
//! of tokens a minute has an interval of a few microseconds).

use super::Short;
use crate::limits::redis::RedisStore;
use crate::limits::{Exceeded, Limit, Standing};
use std::sync::LazyLock;

/// KEYS: the budgets. ARGV[1]: tokens to reserve; then per budget its interval (µs) and size.
/// Returns `{1, limit, reset_us, remaining, window_us}` for the tightest budget, or
/// `{0, limit, retry_us, window_us, remaining}` for the first that cannot hold the reservation.
const RESERVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local new = {}
local best_rem, best_lim, best_reset, best_window = -1, 0, 0, 0
for i = 1, #KEYS do
  local e = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local window = e * burst
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local ahead = tat + n * e - now
  if ahead > window then
    local left = math.max(0, math.floor((window - (tat - now)) / e))
    return {0, burst, math.ceil(ahead - window), math.ceil(window), left}
  end
  new[i] = tat + n * e
  local rem = math.floor((window - ahead) / e)
  if best_rem < 0 or rem < best_rem then
    best_rem, best_lim, best_reset, best_window = rem, burst, ahead, window
  end
end
for i = 1, #KEYS do
  local ttl_ms = math.floor((new[i] - now) / 1000) + 1000
  redis.call('SET', KEYS[i], string.format('%d', math.floor(new[i])), 'PX', ttl_ms)
end
return {1, best_lim, math.ceil(best_reset), best_rem, math.ceil(best_window)}
"#;

/// KEYS: the budgets reserved from. ARGV[1]: tokens to give back (negative) or to charge
/// (positive, counted from now when the budget has refilled since); then per budget its
/// interval (µs) and size. Returns the tokens left in the tightest budget.
const SETTLE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local d = tonumber(ARGV[1])
local least = -1
for i = 1, #KEYS do
  local e = tonumber(ARGV[2 * i])
  local burst = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if d > 0 then
    if not tat or tat < now then tat = now end
    tat = tat + d * e
  elseif tat then
    tat = tat + d * e
  end
  local ahead = 0
  if tat and tat > now then
    ahead = tat - now
    local ttl_ms = math.floor(ahead / 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%d', math.floor(tat)), 'PX', ttl_ms)
  elseif tat then
    redis.call('DEL', KEYS[i])
  end
  local rem = math.max(0, math.floor((e * burst - ahead) / e))
  if least < 0 or rem < least then least = rem end
end
return least
"#;

static RESERVE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RESERVE));
static SETTLE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SETTLE));

/// The interval of a budget in microseconds, with three decimals.
fn interval_us(limit: &Limit) -> String {
    let ns = limit.emission.as_nanos().max(1);
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// Reserves `n` tokens from every budget (by Redis key), or from none. `Err(None)`: Redis could
/// not answer; the caller applies `on_store_error`.
pub async fn reserve(
    store: &RedisStore,
    budgets: &[(String, Limit)],
    n: u64,
) -> Result<Standing, Option<Short>> {
    let mut invocation = RESERVE_SCRIPT.prepare_invoke();
    invocation.arg(n);
    for (key, limit) in budgets {
        invocation.key(key).arg(interval_us(limit)).arg(limit.burst);
    }
    let answer = (store.link)
        .run(|mut conn| async move { invocation.invoke_async::<Vec<i64>>(&mut conn).await })
        .await;
    decode(&answer.ok_or(None)?)
}

/// Gives back (`delta` < 0) or charges tokens on every budget a reservation was taken from;
/// the tokens left in the tightest, `None` when Redis could not answer.
pub async fn settle(store: &RedisStore, budgets: &[(String, Limit)], delta: i64) -> Option<u64> {
    let mut invocation = SETTLE_SCRIPT.prepare_invoke();
    invocation.arg(delta);
    for (key, limit) in budgets {
        invocation.key(key).arg(interval_us(limit)).arg(limit.burst);
    }
    let left = (store.link)
        .run(|mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await })
        .await?;
    Some(left.max(0) as u64)
}

fn decode(v: &[i64]) -> Result<Standing, Option<Short>> {
    let secs = |us: i64| (us.max(0) as u64).div_ceil(1_000_000).max(1);
    let count = |n: i64| n.max(0) as u64;
    match v {
        [1, limit, reset_us, remaining, window_us] => Ok(Standing {
            remaining: count(*remaining),
            limit: count(*limit),
            reset_secs: secs(*reset_us),
            window_secs: secs(*window_us),
        }),
        [0, limit, retry_us, window_us, remaining] => Err(Some(Short {
            exceeded: Exceeded {
                retry_after_secs: secs(*retry_us).min(secs(*window_us)),
                limit: count(*limit),
                window_secs: secs(*window_us),
            },
            remaining: count(*remaining),
        })),
        _ => Err(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn intervals_keep_their_fraction_and_answers_decode() {
        let l = Limit {
            burst: 7_000_000,
            emission: Duration::from_nanos(8_571),
        };
        assert_eq!(interval_us(&l), "8.571");
        assert_eq!(
            decode(&[1, 1000, 2_500_000, 400, 3_600_000_000]),
            Ok(Standing {
                remaining: 400,
                limit: 1000,
                reset_secs: 3,
                window_secs: 3600
            })
        );
        let short = decode(&[0, 1000, 7_200_000_000, 3_600_000_000, 12]).unwrap_err();
        let short = short.unwrap();
        assert_eq!(
            short.exceeded.retry_after_secs, 3600,
            "capped at the window"
        );
        assert_eq!(short.remaining, 12);
        assert_eq!(decode(&[2]), Err(None));
    }
}
