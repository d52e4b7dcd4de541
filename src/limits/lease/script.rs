//! The one Lua script of lease mode: hands back (or charges) what a slice did not use, then takes
//! the next slice from the same GCRA bucket the exact mode uses (the same key and state, so the
//! modes can be switched without losing count), on Redis' clock.

use crate::limits::redis::RedisStore;
use crate::limits::Limit;
use std::sync::LazyLock;

/// KEYS[1]: the bucket. ARGV: the interval (µs, with a fraction), the burst, tokens handed back
/// (negative: charged), tokens wanted, tokens needed (the slice is taken only when at least
/// these fit). Returns `{got, left, retry_us}`: tokens taken, tokens left in Redis after, and
/// when none were taken, microseconds until `need` would fit.
const LEASE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local e = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local back = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local need = tonumber(ARGV[5])
local window = e * burst
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
tat = tat - back * e
if tat < now then tat = now end
local avail = math.floor((window - (tat - now)) / e)
local got = 0
local retry = 0
if avail >= need and avail > 0 then
  got = math.min(want, avail)
  tat = tat + got * e
elseif need > 0 then
  retry = math.ceil(tat + need * e - now - window)
end
if tat > now then
  redis.call('SET', KEYS[1], string.format('%d', math.floor(tat)), 'PX', math.floor((tat - now) / 1000) + 1000)
else
  redis.call('DEL', KEYS[1])
end
local left = math.max(0, math.floor((window - (tat - now)) / e))
return {got, left, retry}
"#;

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(LEASE));

pub struct Answer {
    pub got: u64,
    pub left: u64,
    pub retry_us: u64,
}

/// The interval of a limit in microseconds, with three decimals (a budget of millions of
/// tokens a minute has an interval of a few microseconds).
fn interval_us(limit: &Limit) -> String {
    let ns = limit.emission.as_nanos().max(1);
    format!("{}.{:03}", ns / 1000, ns % 1000)
}

/// Runs the script; `None` when Redis could not answer.
pub async fn lease(
    store: &RedisStore,
    key: &str,
    limit: &Limit,
    back: i64,
    want: u64,
    need: u64,
) -> Option<Answer> {
    let mut invocation = SCRIPT.prepare_invoke();
    invocation
        .key(key)
        .arg(interval_us(limit))
        .arg(limit.burst)
        .arg(back)
        .arg(want)
        .arg(need);
    let v = (store.link)
        .run(|mut conn| async move { invocation.invoke_async::<Vec<i64>>(&mut conn).await })
        .await?;
    match v[..] {
        [got, left, retry] => Some(Answer {
            got: got.max(0) as u64,
            left: left.max(0) as u64,
            retry_us: retry.max(0) as u64,
        }),
        // An answer we do not understand is a store failure.
        _ => None,
    }
}
