//! Rate limits on this instance: exact token buckets kept as GCRA timestamps (one atomic word per
//! bucket, updated lock-free), in a sharded table whose idle buckets are evicted.
//!
//! A bucket of `burst` tokens refilled one every `emission`: its state is the theoretical arrival
//! time (TAT) of the next request; a request fits when, after adding one emission, the TAT is at
//! most `burst` emissions ahead of now.

mod compile;
pub mod lease;
pub mod redis;
mod sharded;
pub mod tokens;

use crate::config::schema::OnStoreError;
use crate::config::values::Rate;
use redis::RedisStore;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Buckets kept per shard before idle ones are swept (64 × 16,384 ≈ 1M keys, ~100 MB at most).
const SHARD_CAPACITY: usize = 16_384;

/// A limit: `burst` tokens, one more every `emission`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub burst: u64,
    pub emission: Duration,
}

impl Limit {
    /// `N/period`: a burst of N, refilled at N per period.
    pub fn from_rate(r: Rate) -> Limit {
        let ns = r.per.as_nanos() / u128::from(r.count.max(1));
        Limit {
            burst: r.count.max(1),
            emission: Duration::from_nanos((ns as u64).max(1)),
        }
    }

    /// `{tokens, refill}`: a burst of `tokens`, refilled at the `refill` rate.
    pub fn from_quota(tokens: u64, refill: Rate) -> Limit {
        Limit {
            burst: tokens.max(1),
            ..Limit::from_rate(refill)
        }
    }

    /// Tokens refilled per minute (for people: the console, budgets' descriptions).
    pub fn per_minute(&self) -> f64 {
        60e9 / self.emission.as_nanos().max(1) as f64
    }

    fn emission_ns(&self) -> u64 {
        self.emission.as_nanos().min(u64::MAX as u128) as u64
    }

    fn window_ns(&self) -> u64 {
        self.emission_ns().saturating_mul(self.burst)
    }
}

/// What a check found, for the headers and variables: tokens left, the limit, and whole seconds
/// until the bucket is full again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub remaining: u64,
    pub limit: u64,
    pub reset_secs: u64,
    /// How long a full bucket takes to refill from empty (the policy's window).
    pub window_secs: u64,
}

/// A refusal: whole seconds until a token is back (≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub retry_after_secs: u64,
    pub limit: u64,
    pub window_secs: u64,
}

fn ceil_secs(ns: u64) -> u64 {
    ns.div_ceil(1_000_000_000).max(1)
}

fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // Starts at one hour so that "long ago" fits below zero without signed arithmetic.
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 3_600_000_000_000
}

/// One bucket's state.
#[derive(Default)]
pub struct Bucket {
    tat: AtomicU64,
}

impl Bucket {
    /// Takes a token if one is there.
    pub fn take(&self, limit: &Limit, now: u64) -> Result<Standing, Exceeded> {
        let e = limit.emission_ns();
        let window = limit.window_ns();
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let new_tat = tat.max(now).saturating_add(e);
            let ahead = new_tat - now;
            if ahead > window {
                return Err(Exceeded {
                    retry_after_secs: ceil_secs(ahead - window),
                    limit: limit.burst,
                    window_secs: ceil_secs(window),
                });
            }
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Ok(Standing {
                        remaining: (window - ahead) / e,
                        limit: limit.burst,
                        reset_secs: ceil_secs(ahead),
                        window_secs: ceil_secs(window),
                    })
                }
                Err(actual) => tat = actual,
            }
        }
    }

    /// Gives back a token taken by `take` (another limit refused the request).
    pub fn give_back(&self, limit: &Limit) {
        let e = limit.emission_ns();
        let _ = self
            .tat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(e))
            });
    }

    fn idle(&self, now: u64) -> bool {
        self.tat.load(Ordering::Relaxed) <= now
    }
}

/// Buckets by key, sharded; a full shard first drops its idle (full) buckets.
#[derive(Default)]
pub struct Buckets(sharded::Sharded<Bucket>);

impl Buckets {
    /// The bucket of a key.
    pub fn get(&self, key: impl Hash) -> Arc<Bucket> {
        let (k, mut map) = match self.0.find(key) {
            Ok(b) => return b,
            Err(adding) => adding,
        };
        if map.len() >= SHARD_CAPACITY && !map.contains_key(&k) {
            let now = now_ns();
            map.retain(|_, b| !b.idle(now) || Arc::strong_count(b) > 1);
            if map.len() >= SHARD_CAPACITY {
                // Every bucket is in use: this key gets a fresh bucket that is not kept.
                return Arc::new(Bucket::default());
            }
        }
        map.entry(k).or_default().clone()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The compiled limits of a configuration: which limit applies to whom (swapped by a reload).
pub struct Quotas {
    /// `gateway.rate_limit`: the whole gateway, checked before authentication.
    pub ceiling: Option<Limit>,
    /// `agents.<id>.rate_limit`, then `per_agent_quota`, then `per_agent`, by agent id.
    registry: HashMap<String, Limit>,
    fallback: HashMap<String, Limit>,
    pub default: Option<Limit>,
    /// `rate_limiting.store` and `store_timeout`: the shared store to connect at start.
    pub store: Option<(String, std::time::Duration)>,
    pub on_store_error: OnStoreError,
    /// `rate_limiting.tokens`: LLM token budgets.
    pub tokens: Option<tokens::TokenQuotas>,
    /// `rate_limiting.sync: lease` with a store: slices of the shared limits spent here.
    pub lease: Option<lease::LeaseConf>,
}

/// The state of the limits, built once per process and kept across reloads: the buckets (in
/// memory, and with a Redis store the fallback when it fails, `on_store_error: local`) and the
/// store's one connection.
#[derive(Default)]
pub struct Shared {
    pub ceiling: Bucket,
    pub buckets: Buckets,
    pub store: Option<RedisStore>,
    /// Lease mode's slices, by key, and how often expired ones are handed back.
    pub leases: lease::Leases,
    pub sweep_every: Option<Duration>,
}

/// Why a request may not pass: a limit is exhausted, or (`on_store_error: deny`) the shared
/// store cannot be asked.
pub enum Refused {
    Limit(Exceeded),
    StoreDown,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("ceiling", &self.ceiling)
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

/// Who a request counts against: a verified agent, else the client address.
#[derive(Hash, Clone, Copy)]
pub enum Subject<'a> {
    Agent(&'a str),
    Client(Option<std::net::IpAddr>),
}

impl Subject<'_> {
    /// The prefix of the subject's Redis keys: one hash tag per subject, so that its buckets
    /// share a Redis Cluster slot (one script call).
    pub fn redis_tag(&self) -> String {
        match self {
            Subject::Agent(id) => format!("clawgate:{{a:{id}}}"),
            Subject::Client(Some(ip)) => format!("clawgate:{{ip:{ip}}}"),
            Subject::Client(None) => "clawgate:{ip:unknown}".to_string(),
        }
    }
}

impl Quotas {
    pub fn new(
        ceiling: Option<Limit>,
        registry: HashMap<String, Limit>,
        fallback: HashMap<String, Limit>,
        default: Option<Limit>,
    ) -> Quotas {
        Quotas {
            ceiling,
            registry,
            fallback,
            default,
            store: None,
            on_store_error: OnStoreError::Local,
            tokens: None,
            lease: None,
        }
    }

    /// Whether a request on a route with this limit is checked at all.
    pub fn apply_to(&self, route_limit: Option<Limit>) -> bool {
        self.limits_agents() || route_limit.is_some()
    }

    /// Like `take`, through the shared store; `on_store_error` decides when it fails.
    pub async fn take_shared(
        &self,
        shared: &Shared,
        subject: Subject<'_>,
        key_limit: Option<Limit>,
        route: Option<(&str, Limit)>,
    ) -> Result<Option<Standing>, Refused> {
        let Some(store) = &shared.store else {
            return (self.take(shared, subject, key_limit, route)).map_err(Refused::Limit);
        };
        if let Some(conf) = &self.lease {
            return self
                .take_leased(store, conf, shared, subject, key_limit, route)
                .await;
        }
        let tag = subject.redis_tag();
        let mut buckets = Vec::with_capacity(2);
        if let Some(l) = self.agent_limit(subject, key_limit) {
            buckets.push((format!("{tag}:agent"), l));
        }
        if let Some((label, l)) = route {
            buckets.push((format!("{tag}:route:{label}"), l));
        }
        if buckets.is_empty() {
            return Ok(None);
        }
        match store.take(&buckets).await {
            Ok(standing) => Ok(standing),
            Err(Some(exceeded)) => Err(Refused::Limit(exceeded)),
            Err(None) => self.store_failed(shared, subject, key_limit, route),
        }
    }

    /// What `on_store_error` makes of a request the shared store could not count.
    fn store_failed(
        &self,
        shared: &Shared,
        subject: Subject<'_>,
        key_limit: Option<Limit>,
        route: Option<(&str, Limit)>,
    ) -> Result<Option<Standing>, Refused> {
        match self.on_store_error {
            OnStoreError::Local => {
                (self.take(shared, subject, key_limit, route)).map_err(Refused::Limit)
            }
            OnStoreError::Allow => Ok(None),
            OnStoreError::Deny => Err(Refused::StoreDown),
        }
    }

    /// Whether any per-agent limit exists (then every route is limited).
    pub fn limits_agents(&self) -> bool {
        self.default.is_some() || !self.registry.is_empty() || !self.fallback.is_empty()
    }

    /// The gateway ceiling; `Ok(true)` when a token was taken (to give back if refused later).
    pub fn take_ceiling(&self, shared: &Shared) -> Result<bool, Exceeded> {
        match &self.ceiling {
            Some(l) => shared.ceiling.take(l, now_ns()).map(|_| true),
            None => Ok(false),
        }
    }

    pub fn give_back_ceiling(&self, shared: &Shared) {
        if let Some(l) = &self.ceiling {
            shared.ceiling.give_back(l);
        }
    }

    /// The one agent limit that applies: the registry's, the API key's own, then
    /// `per_agent_quota`/`per_agent`, then `default`.
    pub fn agent_limit(&self, subject: Subject, key_limit: Option<Limit>) -> Option<Limit> {
        let by_id = |m: &HashMap<String, Limit>| match subject {
            Subject::Agent(id) => m.get(id).copied(),
            Subject::Client(_) => None,
        };
        by_id(&self.registry)
            .or(key_limit)
            .or_else(|| by_id(&self.fallback))
            .or(self.default)
    }

    /// Takes a token from the agent's limit and the route's (per subject), or from neither.
    pub fn take(
        &self,
        shared: &Shared,
        subject: Subject,
        key_limit: Option<Limit>,
        route: Option<(&str, Limit)>,
    ) -> Result<Option<Standing>, Exceeded> {
        // Buckets are keyed by the route's label, not its index, so that they outlive a reload
        // that adds or reorders routes.
        let agent = self
            .agent_limit(subject, key_limit)
            .map(|l| (shared.buckets.get((None::<&str>, subject)), l));
        let route = route.map(|(label, l)| (shared.buckets.get((Some(label), subject)), l));
        let mut checks: [Option<(&Bucket, &Limit)>; 2] = [None, None];
        if let Some((b, l)) = &agent {
            checks[0] = Some((b, l));
        }
        if let Some((b, l)) = &route {
            checks[1] = Some((b, l));
        }
        match checks {
            [None, None] => Ok(None),
            [Some(a), None] | [None, Some(a)] => take_all(&[a]),
            [Some(a), Some(b)] => take_all(&[a, b]),
        }
    }
}

impl Shared {
    /// Hands the slices that expired back to Redis.
    pub async fn sweep_leases(&self) {
        if let Some(store) = &self.store {
            self.leases.sweep(store, now_ns()).await;
        }
    }

    /// Hands every slice back (at shutdown).
    pub async fn return_leases(&self) {
        if let Some(store) = &self.store {
            let n = self.leases.sweep(store, u64::MAX).await;
            if n != 0 {
                log::info!("{n} leased rate-limit tokens handed back to the store");
            }
        }
    }

    /// One token of a keyed limit outside the agent/route pair (an agent's limit on one MCP
    /// tool): through the Redis store when there is one (`key` names its Redis key), else, or
    /// when Redis cannot answer, from the local bucket.
    pub async fn take_keyed(&self, key: &str, limit: Limit) -> Result<Standing, Exceeded> {
        if let Some(store) = &self.store {
            match store.take(&[(key.to_string(), limit)]).await {
                Ok(Some(standing)) => return Ok(standing),
                Err(Some(exceeded)) => return Err(exceeded),
                Ok(None) | Err(None) => {}
            }
        }
        self.buckets.get(key).take(&limit, now_ns())
    }
}

/// Takes a token from every bucket, or from none: when one refuses, the others get theirs back.
/// On success, the standing of the tightest limit (fewest tokens left).
pub fn take_all(checks: &[(&Bucket, &Limit)]) -> Result<Option<Standing>, Exceeded> {
    let now = now_ns();
    let mut tightest: Option<Standing> = None;
    for (i, (bucket, limit)) in checks.iter().enumerate() {
        match bucket.take(limit, now) {
            Ok(s) => {
                if tightest.is_none_or(|t| s.remaining < t.remaining) {
                    tightest = Some(s);
                }
            }
            Err(e) => {
                for (b, l) in &checks[..i] {
                    b.give_back(l);
                }
                return Err(e);
            }
        }
    }
    Ok(tightest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u64, secs: u64) -> Limit {
        Limit::from_rate(Rate {
            count,
            per: Duration::from_secs(secs),
        })
    }

    #[test]
    fn a_full_bucket_allows_its_burst_then_refills_continuously() {
        let l = rate(5, 60); // one token every 12 s
        let b = Bucket::default();
        let t0 = now_ns();
        for left in (0..5).rev() {
            let s = b.take(&l, t0).unwrap();
            assert_eq!(s.remaining, left);
            assert_eq!(s.limit, 5);
        }
        let e = b.take(&l, t0).unwrap_err();
        assert_eq!(e.retry_after_secs, 12);
        // 12 s later exactly one token is back.
        let t1 = t0 + 12_000_000_000;
        assert_eq!(b.take(&l, t1).unwrap().remaining, 0);
        assert!(b.take(&l, t1).is_err());
    }

    #[test]
    fn reset_counts_seconds_until_full() {
        let l = rate(10, 10);
        let b = Bucket::default();
        let t = now_ns();
        let s = b.take(&l, t).unwrap();
        assert_eq!((s.remaining, s.reset_secs), (9, 1));
        for _ in 0..4 {
            b.take(&l, t).unwrap();
        }
        assert_eq!(b.take(&l, t).unwrap().reset_secs, 6);
    }

    #[test]
    fn a_refusal_by_one_limit_takes_nothing_from_the_others() {
        let wide = rate(100, 60);
        let narrow = rate(1, 60);
        let (a, b) = (Bucket::default(), Bucket::default());
        assert_eq!(
            take_all(&[(&a, &wide), (&b, &narrow)])
                .unwrap()
                .unwrap()
                .remaining,
            0
        );
        assert!(take_all(&[(&a, &wide), (&b, &narrow)]).is_err());
        // Only the first request was counted by the wide limit.
        assert_eq!(a.take(&wide, now_ns()).unwrap().remaining, 98);
    }

    #[test]
    fn concurrent_takes_never_exceed_the_burst() {
        let l = rate(1000, 3600);
        let b = Arc::new(Bucket::default());
        let granted = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (b, g) = (b.clone(), granted.clone());
                std::thread::spawn(move || {
                    for _ in 0..500 {
                        if b.take(&l, now_ns()).is_ok() {
                            g.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // 4,000 attempts within well under one emission (3.6 s): exactly the burst.
        assert_eq!(granted.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn keys_share_buckets_and_idle_ones_can_go() {
        let buckets = Buckets::default();
        let a = buckets.get(("agent", "a"));
        let again = buckets.get(("agent", "a"));
        assert!(Arc::ptr_eq(&a, &again));
        assert!(!Arc::ptr_eq(&a, &buckets.get(("agent", "b"))));
        assert_eq!(buckets.len(), 2);
    }
}
