//! The console's figures, kept by the gateway itself (no Prometheus needed) and only when the
//! admin listener is on: running totals (atomics, a latency histogram), counts per route and per
//! agent (maps read without a lock), a ring of per-second samples for the charts, and the last
//! access-log lines for the tail.

use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// Latency buckets: bucket `i` holds durations up to 0.1 ms × 1.25^i (the last: everything
/// longer than ~2 minutes).
pub const BUCKETS: usize = 64;
/// Per-second samples kept (5 minutes).
const SAMPLES: usize = 300;
/// Access-log lines kept for a tail that starts.
pub const LINES: usize = 100;
/// Routes or agents counted by name; more are counted together as `other`.
const MAX_KEYS: usize = 10_000;

/// Bucket upper bounds in tenths of a millisecond, for a search instead of a logarithm per
/// request.
fn bounds() -> &'static [f64; BUCKETS] {
    static BOUNDS: std::sync::OnceLock<[f64; BUCKETS]> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| std::array::from_fn(|i| 1.25f64.powi(i as i32)))
}

fn bucket_of(seconds: f64) -> usize {
    let tenths_ms = seconds * 10_000.0;
    bounds()
        .partition_point(|b| *b < tenths_ms)
        .min(BUCKETS - 1)
}

/// The upper bound of bucket `i`, in milliseconds.
pub fn bucket_ms(i: usize) -> f64 {
    0.1 * 1.25f64.powi(i as i32)
}

/// Counts that only grow.
pub struct Totals {
    pub requests: AtomicU64,
    /// Answered 5xx (or failed without an answer).
    pub errors: AtomicU64,
    /// Answered 4xx.
    pub refused: AtomicU64,
    pub tokens: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub latency: [AtomicU64; BUCKETS],
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A route's or an agent's counts.
pub struct Counts {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub refused: AtomicU64,
    /// Microseconds, summed (mean latency).
    pub micros: AtomicU64,
    pub tokens: AtomicU64,
    /// The tightest request limit's tokens left, as last seen (`u64::MAX`: none seen).
    pub limit_left: AtomicU64,
    /// LLM tokens by model (each agent's own lock, taken only by answers with usage).
    pub by_model: Mutex<BTreeMap<String, u64>>,
}

impl Default for Counts {
    fn default() -> Self {
        Counts {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            micros: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            limit_left: AtomicU64::new(u64::MAX),
            by_model: Mutex::default(),
        }
    }
}

/// A route's or an agent's counts, found by name on its first request and held by it after
/// (a reloaded route finds the same counts again).
#[derive(Default, Clone)]
pub struct Slot(OnceLock<Arc<Counts>>);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

impl Slot {
    fn counts(&self, keyed: &Keyed, key: &str) -> &Counts {
        self.0.get_or_init(|| keyed.get(key))
    }
}

/// Counts by name, read without a lock; a new name copies the map (rare).
#[derive(Default)]
pub struct Keyed {
    map: ArcSwap<HashMap<Arc<str>, Arc<Counts>>>,
    adding: Mutex<()>,
}

impl Keyed {
    pub fn get(&self, key: &str) -> Arc<Counts> {
        if let Some(c) = self.map.load().get(key) {
            return c.clone();
        }
        let _one = self.adding.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.map.load();
        if let Some(c) = now.get(key) {
            return c.clone();
        }
        let key = if now.len() >= MAX_KEYS { "other" } else { key };
        let mut next = HashMap::clone(&now);
        let c = next.entry(Arc::from(key)).or_default().clone();
        self.map.store(Arc::new(next));
        c
    }

    pub fn all(&self) -> Arc<HashMap<Arc<str>, Arc<Counts>>> {
        self.map.load_full()
    }
}

/// One second of traffic.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct Sample {
    /// Unix seconds at its end.
    pub at: u64,
    pub requests: u64,
    pub errors: u64,
    pub tokens: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Milliseconds (upper bounds of their buckets); 0 without requests.
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// What a finished request tells the console.
pub struct Finished<'a> {
    /// The route's label, and its slot when it is a configured route.
    pub route: (&'a str, Option<&'a Slot>),
    pub agent: Option<(&'a str, &'a Slot)>,
    pub status: u16,
    pub seconds: f64,
    pub tokens: Option<(&'a str, u64)>,
    pub cache: Option<&'static str>,
    pub limit_left: Option<u64>,
}

pub struct Stats {
    pub started: SystemTime,
    pub totals: Totals,
    pub routes: Keyed,
    pub agents: Keyed,
    samples: Mutex<VecDeque<Sample>>,
    /// The totals at the last sample (the ticker's alone).
    last: Mutex<Snapshot>,
    lines: Mutex<VecDeque<(u64, bytes::Bytes)>>,
    next_line: AtomicU64,
    /// Tails being read now.
    tails: AtomicUsize,
    /// Lines requests may still add for the tail before its next send (below zero: how many
    /// were skipped), when the lines are made only for it.
    tail_room: AtomicI64,
}

#[derive(Default, Clone)]
struct Snapshot {
    requests: u64,
    errors: u64,
    tokens: u64,
    hits: u64,
    misses: u64,
    latency: Vec<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: SystemTime::now(),
            totals: Totals::default(),
            routes: Keyed::default(),
            agents: Keyed::default(),
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES)),
            last: Mutex::new(Snapshot::default()),
            lines: Mutex::new(VecDeque::with_capacity(LINES)),
            next_line: AtomicU64::new(0),
            tails: AtomicUsize::new(0),
            tail_room: AtomicI64::new(0),
        }
    }
}

impl Stats {
    pub fn record(&self, f: &Finished) {
        let t = &self.totals;
        t.requests.fetch_add(1, Relaxed);
        let (error, refused) = (
            f.status >= 500 || f.status == 0,
            (400..500).contains(&f.status),
        );
        if error {
            t.errors.fetch_add(1, Relaxed);
        } else if refused {
            t.refused.fetch_add(1, Relaxed);
        }
        t.latency[bucket_of(f.seconds)].fetch_add(1, Relaxed);
        match f.cache {
            Some("HIT") => t.cache_hits.fetch_add(1, Relaxed),
            Some(_) => t.cache_misses.fetch_add(1, Relaxed),
            None => 0,
        };
        let micros = (f.seconds * 1e6) as u64;
        let count = |c: &Counts| {
            c.requests.fetch_add(1, Relaxed);
            c.micros.fetch_add(micros, Relaxed);
            if error {
                c.errors.fetch_add(1, Relaxed);
            } else if refused {
                c.refused.fetch_add(1, Relaxed);
            }
        };
        match f.route {
            (label, Some(slot)) => count(slot.counts(&self.routes, label)),
            (label, None) => count(&self.routes.get(label)),
        }
        let agent = f.agent.map(|(id, slot)| slot.counts(&self.agents, id));
        if let Some(a) = agent {
            count(a);
            if let Some(left) = f.limit_left {
                a.limit_left.store(left, Relaxed);
            }
        }
        if let Some((model, n)) = f.tokens {
            t.tokens.fetch_add(n, Relaxed);
            if let Some(a) = agent {
                a.tokens.fetch_add(n, Relaxed);
                let mut m = a.by_model.lock().unwrap_or_else(|p| p.into_inner());
                // The model's name is copied only the first time it is seen.
                match m.get_mut(model) {
                    Some(total) => *total += n,
                    None => {
                        m.insert(model.to_string(), n);
                    }
                }
            }
        }
    }

    /// Counts a tail as open until the guard is dropped.
    pub fn tail_opened(&self) -> TailOpen<'_> {
        self.tails.fetch_add(1, Relaxed);
        TailOpen(self)
    }

    pub fn tails_open(&self) -> bool {
        self.tails.load(Relaxed) > 0
    }

    /// Whether a request should make a line for the tail (when nothing else needs it): while a
    /// tail is open and the tail's room for this quarter second is not used up.
    pub fn tail_line_wanted(&self) -> bool {
        self.tails_open() && self.tail_room.fetch_sub(1, Relaxed) > 0
    }

    /// Gives the tail room for `LINES` more lines; returns how many were skipped since the
    /// last call for want of room.
    pub fn refill_tail(&self) -> u64 {
        let was = self.tail_room.swap(LINES as i64, Relaxed);
        was.min(0).unsigned_abs()
    }

    /// Keeps access-log lines (already redacted) for the tail: the log's writer hands them
    /// over in batches.
    pub fn lines(&self, batch: Vec<bytes::Bytes>) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        for line in batch {
            if lines.len() == LINES {
                lines.pop_front();
            }
            lines.push_back((self.next_line.fetch_add(1, Relaxed), line));
        }
    }

    /// The lines after number `after` (all kept ones for `None`), with their numbers.
    pub fn lines_after(&self, after: Option<u64>) -> Vec<(u64, bytes::Bytes)> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        (lines.iter())
            .filter(|(n, _)| after.is_none_or(|a| *n > a))
            .cloned()
            .collect()
    }

    /// Takes the second that just ended (the ticker calls this once a second).
    pub fn tick(&self, at: u64) {
        let t = &self.totals;
        let now = Snapshot {
            requests: t.requests.load(Relaxed),
            errors: t.errors.load(Relaxed),
            tokens: t.tokens.load(Relaxed),
            hits: t.cache_hits.load(Relaxed),
            misses: t.cache_misses.load(Relaxed),
            latency: t.latency.iter().map(|b| b.load(Relaxed)).collect(),
        };
        let was = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *last, now.clone())
        };
        let delta: Vec<u64> = (now.latency.iter().enumerate())
            .map(|(i, n)| n.saturating_sub(was.latency.get(i).copied().unwrap_or(0)))
            .collect();
        let [p50, p95, p99] = quantiles(&delta, [0.50, 0.95, 0.99]);
        let sample = Sample {
            at,
            requests: now.requests.saturating_sub(was.requests),
            errors: now.errors.saturating_sub(was.errors),
            tokens: now.tokens.saturating_sub(was.tokens),
            cache_hits: now.hits.saturating_sub(was.hits),
            cache_misses: now.misses.saturating_sub(was.misses),
            p50,
            p95,
            p99,
        };
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.iter().copied().collect()
    }

    /// p50, p95 and p99 (ms) of every request so far.
    pub fn quantiles(&self) -> [f64; 3] {
        let all: Vec<u64> = self
            .totals
            .latency
            .iter()
            .map(|b| b.load(Relaxed))
            .collect();
        quantiles(&all, [0.50, 0.95, 0.99])
    }
}

/// An open tail (see `Stats::tail_opened`).
pub struct TailOpen<'a>(&'a Stats);

impl Drop for TailOpen<'_> {
    fn drop(&mut self) {
        self.0.tails.fetch_sub(1, Relaxed);
    }
}

/// Quantiles of a histogram, as their buckets' upper bounds (ms); zeros when it is empty.
pub fn quantiles<const N: usize>(buckets: &[u64], qs: [f64; N]) -> [f64; N] {
    let total: u64 = buckets.iter().sum();
    let mut out = [0.0; N];
    if total == 0 {
        return out;
    }
    for (o, q) in out.iter_mut().zip(qs) {
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                *o = bucket_ms(i);
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(0.0001), 0);
        assert_eq!(bucket_of(0.000125), 1);
        assert!(bucket_ms(bucket_of(0.010)) >= 10.0 && bucket_ms(bucket_of(0.010)) < 12.5);
        assert_eq!(bucket_of(1e9), BUCKETS - 1);
        let stats = Stats::default();
        let (route, agent) = (Slot::default(), Slot::default());
        for ms in [1.0, 2.0, 3.0, 100.0] {
            stats.record(&Finished {
                route: ("/r", Some(&route)),
                agent: Some(("a", &agent)),
                status: 200,
                seconds: ms / 1000.0,
                tokens: Some(("m", 5)),
                cache: None,
                limit_left: Some(7),
            });
        }
        let [p50, _, p99] = stats.quantiles();
        assert!((2.0..2.5).contains(&p50), "{p50}");
        assert!((100.0..125.0).contains(&p99), "{p99}");
        stats.tick(1);
        let s = stats.samples();
        assert_eq!((s[0].requests, s[0].tokens), (4, 20));
        let a = stats.agents.get("a");
        assert_eq!(a.tokens.load(Relaxed), 20);
        assert_eq!(a.limit_left.load(Relaxed), 7);
        assert_eq!(a.by_model.lock().unwrap().get("m"), Some(&20));
        stats.tick(2);
        assert_eq!(stats.samples()[1].requests, 0);
    }
}
