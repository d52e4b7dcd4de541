//! Lease mode (`rate_limiting.sync: lease`, DESIGN §5.3): an instance takes a slice of a shared
//! limit from Redis (`size` × the limit, at least 1) and spends it here with one atomic word per
//! key, so that most requests make no Redis trip. The slice is counted in Redis when it is taken,
//! so the shared bucket never issues more than in exact mode; what lease mode changes is *when*
//! tokens are spent: a slice taken before a window began may be spent in it (the overshoot bound,
//! instances × lease size) and a slice held here cannot serve another instance until it is spent
//! or handed back (after `max_ttl`, or on shutdown).
//!
//! One fetch per key is in flight at a time: requests that find the slice empty while it is being
//! refilled wait for that fetch instead of each asking Redis.

mod requests;
mod script;

use super::redis::RedisStore;
use super::tokens::Short;
use super::{ceil_secs, now_ns, Exceeded, Limit, Standing};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Waits for another request's fetch before giving up on a key (each round either spends,
/// fetches itself or waits for a fetch that completes).
const MAX_ROUNDS: usize = 8;

/// `rate_limiting.lease`, compiled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeaseConf {
    pub size: f64,
    pub max_ttl: Duration,
}

impl LeaseConf {
    /// Tokens one lease of `limit` takes: `size` × the limit, at least 1.
    pub fn tokens(&self, limit: &Limit) -> u64 {
        ((limit.burst as f64 * self.size).floor() as u64).clamp(1, limit.burst.max(1))
    }
}

/// One key's slice on this instance.
pub struct Lease {
    /// The Redis key of the shared bucket.
    key: String,
    /// Tokens of the slice not yet spent; below zero when answers used more than they reserved
    /// (a debt the next fetch pays).
    left: AtomicI64,
    /// Tokens Redis had left after the last fetch (for the headers).
    shared_left: AtomicU64,
    /// When the slice goes back to Redis (`now_ns` scale).
    expires: AtomicU64,
    /// Redis refused a fetch of `denied_need` tokens: refused here until `denied_until`
    /// without asking again, so that an exhausted limit costs no Redis trip per refusal.
    denied_until: AtomicU64,
    denied_need: AtomicU64,
    fetching: AtomicBool,
    fetched: Notify,
    /// The limit of the last fetch, for the hand-back (the emission interval in ns, the burst).
    emission_ns: AtomicU64,
    burst: AtomicU64,
}

impl Lease {
    fn new(key: String) -> Lease {
        Lease {
            key,
            left: AtomicI64::new(0),
            shared_left: AtomicU64::new(0),
            expires: AtomicU64::new(0),
            denied_until: AtomicU64::new(0),
            denied_need: AtomicU64::new(u64::MAX),
            fetching: AtomicBool::new(false),
            fetched: Notify::new(),
            emission_ns: AtomicU64::new(1),
            burst: AtomicU64::new(1),
        }
    }

    /// Spends `n` tokens of the slice if it holds them.
    fn try_spend(&self, n: u64) -> bool {
        let n = n.min(i64::MAX as u64) as i64;
        let mut cur = self.left.load(Ordering::Acquire);
        while cur >= n {
            match (self.left).compare_exchange_weak(
                cur,
                cur - n,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
        false
    }

    /// Puts back tokens spent from the slice (another limit refused, or an answer used less
    /// than it reserved).
    pub fn give_back(&self, n: u64) {
        self.left
            .fetch_add(n.min(i64::MAX as u64) as i64, Ordering::AcqRel);
    }

    /// Charges tokens beyond a reservation: a debt when the slice cannot cover it.
    pub fn charge(&self, n: u64) {
        self.left
            .fetch_sub(n.min(i64::MAX as u64) as i64, Ordering::AcqRel);
    }

    /// The standing after a spend: what Redis had left plus the slice, as far as this instance
    /// knows (other instances' slices are not seen until the next fetch).
    pub fn standing(&self, limit: &Limit) -> Standing {
        let local = self.left.load(Ordering::Relaxed).max(0) as u64;
        let remaining = (self.shared_left.load(Ordering::Relaxed) + local).min(limit.burst);
        let used = limit.burst - remaining;
        Standing {
            remaining,
            limit: limit.burst,
            reset_secs: ceil_secs(limit.emission_ns().saturating_mul(used)),
            window_secs: ceil_secs(limit.window_ns()),
        }
    }

    fn refusal(&self, limit: &Limit, now: u64) -> Short {
        Short {
            exceeded: Exceeded {
                retry_after_secs: ceil_secs(self.denied_until.load(Ordering::Relaxed) - now),
                limit: limit.burst,
                window_secs: ceil_secs(limit.window_ns()),
            },
            remaining: self.left.load(Ordering::Relaxed).max(0) as u64,
        }
    }

    fn expired(&self, now: u64) -> bool {
        self.expires.load(Ordering::Relaxed) <= now
    }
}

/// Clears the fetch flag and wakes the waiters even when the fetching request is dropped
/// mid-fetch (a client gone): otherwise the key would wait for a fetch that never ends.
struct Fetching<'a>(&'a Lease);

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        self.0.fetching.store(false, Ordering::Release);
        self.0.fetched.notify_waiters();
    }
}

/// Takes `n` tokens of `limit` from a key's slice, fetching the next slice from Redis when this
/// one cannot cover them. `Err(None)`: Redis could not answer (the caller applies
/// `on_store_error`).
pub async fn take(
    store: &RedisStore,
    conf: &LeaseConf,
    lease: &Lease,
    limit: &Limit,
    n: u64,
) -> Result<Standing, Option<Short>> {
    for _ in 0..MAX_ROUNDS {
        if lease.try_spend(n) {
            return Ok(lease.standing(limit));
        }
        let now = now_ns();
        if now < lease.denied_until.load(Ordering::Acquire)
            && n >= lease.denied_need.load(Ordering::Acquire)
        {
            return Err(Some(lease.refusal(limit, now)));
        }
        if (lease.fetching)
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let _guard = Fetching(lease);
            return fetch(store, conf, lease, limit, n).await;
        }
        // Registered before the flag is read again, so that the wake-up cannot be missed.
        let woken = lease.fetched.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if lease.fetching.load(Ordering::Acquire) {
            let _ = tokio::time::timeout(store.link.timeout * 2, woken).await;
        }
    }
    Err(Some(Short {
        exceeded: Exceeded {
            retry_after_secs: 1,
            limit: limit.burst,
            window_secs: ceil_secs(limit.window_ns()),
        },
        remaining: 0,
    }))
}

/// One script call: hands back what is left of the slice (or pays its debt) and takes the next
/// slice, of which this request's `n` tokens are spent at once.
async fn fetch(
    store: &RedisStore,
    conf: &LeaseConf,
    lease: &Lease,
    limit: &Limit,
    n: u64,
) -> Result<Standing, Option<Short>> {
    let back = lease.left.swap(0, Ordering::AcqRel);
    let want = conf.tokens(limit).max(n);
    let Some(answer) = script::lease(store, &lease.key, limit, back, want, n).await else {
        lease.left.fetch_add(back, Ordering::AcqRel);
        return Err(None);
    };
    let now = now_ns();
    lease
        .emission_ns
        .store(limit.emission_ns(), Ordering::Relaxed);
    lease.burst.store(limit.burst, Ordering::Relaxed);
    lease.shared_left.store(answer.left, Ordering::Relaxed);
    if answer.got < n {
        let retry_ns = answer.retry_us.saturating_mul(1000).max(1);
        // Refused here until a token can be back, at most `max_ttl` (Redis may see hand-backs
        // from other instances before).
        let until = now.saturating_add(retry_ns.min(conf.max_ttl.as_nanos() as u64));
        lease.denied_need.store(n, Ordering::Release);
        lease.denied_until.store(until, Ordering::Release);
        return Err(Some(Short {
            exceeded: Exceeded {
                retry_after_secs: ceil_secs(retry_ns).min(ceil_secs(limit.window_ns())),
                limit: limit.burst,
                window_secs: ceil_secs(limit.window_ns()),
            },
            remaining: answer.left,
        }));
    }
    lease.denied_until.store(0, Ordering::Release);
    let expires = now.saturating_add(conf.max_ttl.as_nanos() as u64);
    lease.expires.store(expires, Ordering::Release);
    lease.give_back(answer.got - n);
    Ok(lease.standing(limit))
}

/// The slices of this instance, by key; kept across reloads.
#[derive(Default)]
pub struct Leases(super::sharded::Sharded<Lease>);

impl Leases {
    /// The slice of a key; `redis_key` names its Redis key and is called only the first time,
    /// so that the hot path does not allocate.
    pub fn get(&self, id: impl Hash, redis_key: impl FnOnce() -> String) -> Arc<Lease> {
        let (k, mut map) = match self.0.find(id) {
            Ok(l) => return l,
            Err(adding) => adding,
        };
        map.entry(k)
            .or_insert_with(|| Arc::new(Lease::new(redis_key())))
            .clone()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Hands the slices that expired by `now` back to Redis (all of them at shutdown: `now` =
    /// `u64::MAX`), then forgets the keys nothing holds. How many tokens went back.
    pub async fn sweep(&self, store: &RedisStore, now: u64) -> i64 {
        let mut due = Vec::new();
        for shard in self.0.shards() {
            let map = shard.read().unwrap_or_else(|p| p.into_inner());
            due.extend(
                (map.values())
                    .filter(|l| l.expired(now) && l.left.load(Ordering::Relaxed) != 0)
                    .cloned(),
            );
        }
        let mut returned = 0;
        for lease in due {
            // A fetch in flight hands the rest back itself.
            if (lease.fetching)
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            let _guard = Fetching(&lease);
            // A fetch that ended since the scan took a fresh slice: not due yet.
            if !lease.expired(now) {
                continue;
            }
            let back = lease.left.swap(0, Ordering::AcqRel);
            let limit = Limit {
                burst: lease.burst.load(Ordering::Relaxed),
                emission: Duration::from_nanos(lease.emission_ns.load(Ordering::Relaxed)),
            };
            match script::lease(store, &lease.key, &limit, back, 0, 0).await {
                Some(a) => {
                    lease.shared_left.store(a.left, Ordering::Relaxed);
                    returned += back;
                }
                // A debt is kept to be paid later; unused tokens that cannot go back stay
                // counted in Redis (they were never spent: the limit errs on the safe side).
                None if back < 0 => {
                    lease.left.fetch_add(back, Ordering::AcqRel);
                }
                None => {}
            }
        }
        let idle = |l: &Arc<Lease>| {
            l.expired(now) && l.left.load(Ordering::Relaxed) == 0 && Arc::strong_count(l) == 1
        };
        for shard in self.0.shards() {
            // The write lock only when there is something to forget: requests read these maps.
            let any = (shard.read().unwrap_or_else(|p| p.into_inner()))
                .values()
                .any(idle);
            if any {
                let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
                map.retain(|_, l| !idle(l));
            }
        }
        returned
    }
}

#[cfg(test)]
mod tests;
