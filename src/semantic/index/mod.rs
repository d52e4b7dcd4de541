//! The in-memory semantic index (DESIGN §5.1, store `memory`): per route, entries grouped by
//! partition, brute force over a partition's vectors, bounded overall and per partition (least
//! recently used go first), expired entries dropped lazily. Pure data: time is passed in.
//!
//! **Locking.** Partitions are spread over `SHARDS` `RwLock`s by digest, so requests of different
//! partitions rarely share a lock, and a lookup only reads: lookups of one partition run side by
//! side, and a hit marks its entry used with an atomic tick rather than under a write lock. An
//! insert write-locks its shard for a pass over one partition. The global bound is an atomic
//! count; an insert that passes `max_entries` runs an eviction pass (one at a time) that finds
//! the oldest ticks over all shards and removes a batch of them, so that pass, linear in the
//! index's size, runs once per `max_entries / EVICT_FRACTION` inserts, not on every insert.

use super::guards::{self, Guard};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// `caching.semantic.max_entries` when not set: entries per route over all partitions.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// Entries one partition may hold (DESIGN §5.1: a brute-force scan of 10k is ~0.5 ms).
pub const DEFAULT_PARTITION_CAP: usize = 10_000;

/// Locks the partitions are spread over: a few per core, so that concurrent writers rarely meet.
const SHARDS: usize = 16;
/// An eviction pass over the whole index frees this fraction of `max_entries` at once.
const EVICT_FRACTION: usize = 64;
/// Candidates above the threshold that are run through the guards before giving up: a partition
/// full of near-duplicates that all differ in a number must not cost a guard check per entry.
const MAX_GUARDED: usize = 16;

/// The digest of everything in a key but the compared text (computed by the caller).
pub type Partition = [u8; 32];

/// What a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup<A> {
    Hit {
        answer: A,
        similarity: f32,
        source_request_id: String,
    },
    Miss(MissReason),
}

/// Why a lookup served nothing (the `reason` of `cache_semantic_misses_total`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MissReason {
    /// The partition holds no live entry: never had one, or all have expired.
    Empty,
    /// No entry is similar enough; `best` is the highest similarity seen.
    BelowThreshold { best: f32 },
    /// Entries were similar enough but every one tried was refused; the guard is that of the
    /// most similar one.
    Guarded(Guard),
}

impl MissReason {
    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            MissReason::Empty => "empty",
            MissReason::BelowThreshold { .. } => "below_threshold",
            MissReason::Guarded(_) => "guarded",
        }
    }
}

/// One stored answer.
///
/// The vector is kept as i8 with one scale per vector rather than as f32: a quarter of the memory
/// (384 bytes instead of 1.5 KB, i.e. ~38 MB instead of ~150 MB at the default 100,000 entries
/// per route) and a faster scan (DESIGN §5.1 measured 0.2 ms instead of 0.5 ms per 10k). The
/// query stays f32, so only the stored side is rounded: for unit vectors of 384 dims the
/// similarity moves by about 5e-4, far below what separates a paraphrase from a non-paraphrase
/// (that is the guards' work anyway).
struct Entry<A> {
    vector: Box<[i8]>,
    scale: f32,
    text: Box<str>,
    answer: A,
    request_id: Box<str>,
    stored: Instant,
    ttl: Duration,
    /// The index's clock when last stored or served: larger is more recent.
    used: AtomicU64,
}

/// What a stored answer holds in memory beyond its own size (its heap), for `Index::bytes`.
pub trait Weigh {
    fn heap_bytes(&self) -> usize;
}

impl Weigh for u32 {
    fn heap_bytes(&self) -> usize {
        0
    }
}

impl<A: Weigh> Entry<A> {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.stored) >= self.ttl
    }

    fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Another model's vector cannot be compared: 0.
    fn similarity(&self, query: &[f32]) -> f32 {
        if query.len() != self.vector.len() {
            return 0.0;
        }
        // Eight running sums rather than one: a single f32 sum must be added in order, which
        // keeps the compiler from using SIMD lanes (measured 3-7x slower over 10k entries).
        let mut sums = [0f32; 8];
        let (q8, v8) = (query.chunks_exact(8), self.vector.chunks_exact(8));
        let rest = q8.remainder().iter().zip(v8.remainder());
        let rest: f32 = rest.map(|(q, v)| q * f32::from(*v)).sum();
        for (q, v) in q8.zip(v8) {
            for ((s, q), v) in sums.iter_mut().zip(q).zip(v) {
                *s += q * f32::from(*v);
            }
        }
        (sums.iter().sum::<f32>() + rest) * self.scale
    }

    /// Memory held, for `Index::bytes`.
    fn bytes(&self) -> usize {
        let own = self.vector.len() + self.text.len() + self.request_id.len();
        std::mem::size_of::<Self>() + own + self.answer.heap_bytes()
    }
}

/// A vector as i8 and the scale that makes it unit length again (the quantised vector's own
/// norm is folded in, so rounding does not shrink or grow it).
fn quantise(v: &[f32]) -> (Box<[i8]>, f32) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    // `as` saturates and turns NaN into 0: a zero or non-finite vector becomes zeros, scale 0.
    let q: Box<[i8]> = v.iter().map(|x| (x / max * 127.0).round() as i8).collect();
    let norm = q.iter().map(|x| f32::from(*x).powi(2)).sum::<f32>().sqrt();
    (q, if norm > 0.0 { 1.0 / norm } else { 0.0 })
}

type Shard<A> = RwLock<HashMap<Partition, Vec<Entry<A>>>>;

/// The semantic index of one route. `A` is the stored answer (an `Arc` of the response, cloned
/// on every hit).
pub struct Index<A> {
    shards: Box<[Shard<A>]>,
    max_entries: usize,
    partition_cap: usize,
    count: AtomicUsize,
    bytes: AtomicUsize,
    clock: AtomicU64,
    evicting: Mutex<()>,
}

impl<A: Clone + Weigh> Index<A> {
    /// An index of at most `max_entries` entries, `partition_cap` of them in one partition
    /// (both at least 1).
    pub fn new(max_entries: usize, partition_cap: usize) -> Index<A> {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            max_entries: max_entries.max(1),
            partition_cap: partition_cap.max(1),
            count: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            clock: AtomicU64::new(1),
            evicting: Mutex::new(()),
        }
    }

    /// Entries held (expired ones included until they are dropped).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An estimate of the memory the entries hold, answers included (not the partition maps).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn shard(&self, partition: &Partition) -> &Shard<A> {
        // The partition is a digest already: its first byte is as good as any hash.
        &self.shards[usize::from(partition[0]) % SHARDS]
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The live entry of `partition` whose text is `text` exactly: answered before any
    /// embedding is made. Its answer and the request that stored it.
    pub fn exact(&self, partition: &Partition, text: &str, now: Instant) -> Option<(A, String)> {
        let shard = self.shard(partition);
        let map = shard.read().unwrap_or_else(|p| p.into_inner());
        let e = (map.get(partition)?.iter()).find(|e| *e.text == *text && !e.expired(now))?;
        e.used.store(self.tick(), Ordering::Relaxed);
        Some((e.answer.clone(), e.request_id.to_string()))
    }

    /// The most similar live entry of `partition` at or above `threshold` that no guard
    /// refuses; `vector` is the query's unit vector, `text` its compared text.
    pub fn lookup(
        &self,
        partition: &Partition,
        vector: &[f32],
        text: &str,
        threshold: f32,
        guards: &[Guard],
        now: Instant,
    ) -> Lookup<A> {
        let (found, saw_expired) = {
            let shard = self.shard(partition);
            let map = shard.read().unwrap_or_else(|p| p.into_inner());
            match map.get(partition) {
                None => (Lookup::Miss(MissReason::Empty), false),
                Some(entries) => self.best(entries, vector, text, threshold, guards, now),
            }
        };
        if saw_expired {
            self.drop_expired(partition, now);
        }
        found
    }

    /// The scan of one partition under its shard's read lock (the guards too: microseconds on
    /// short texts, and readers do not block readers); also whether expired entries were seen.
    fn best(
        &self,
        entries: &[Entry<A>],
        vector: &[f32],
        text: &str,
        threshold: f32,
        guards: &[Guard],
        now: Instant,
    ) -> (Lookup<A>, bool) {
        let mut saw_expired = false;
        let mut best = f32::NEG_INFINITY;
        let mut above: Vec<(f32, usize)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if e.expired(now) {
                saw_expired = true;
                continue;
            }
            let s = e.similarity(vector);
            best = best.max(s);
            if s >= threshold {
                above.push((s, i));
            }
        }
        if best == f32::NEG_INFINITY {
            return (Lookup::Miss(MissReason::Empty), saw_expired);
        }
        above.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mut refused = None;
        for &(similarity, i) in above.iter().take(MAX_GUARDED) {
            let e = &entries[i];
            if let Some(g) = guards::refuses(&e.text, text, guards) {
                refused.get_or_insert(g);
                continue;
            }
            e.used.store(self.tick(), Ordering::Relaxed);
            let hit = Lookup::Hit {
                answer: e.answer.clone(),
                similarity,
                source_request_id: e.request_id.to_string(),
            };
            return (hit, saw_expired);
        }
        let reason = refused.map_or(MissReason::BelowThreshold { best }, MissReason::Guarded);
        (Lookup::Miss(reason), saw_expired)
    }

    fn drop_expired(&self, partition: &Partition, now: Instant) {
        let shard = self.shard(partition);
        let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entries) = map.get_mut(partition) {
            self.remove_where(entries, |e| e.expired(now));
            if entries.is_empty() {
                map.remove(partition);
            }
        }
    }

    /// Removes the entries `gone` picks, keeping the count and the byte estimate.
    fn remove_where(&self, entries: &mut Vec<Entry<A>>, gone: impl Fn(&Entry<A>) -> bool) {
        let (mut n, mut bytes) = (0, 0);
        entries.retain(|e| {
            let g = gone(e);
            if g {
                n += 1;
                bytes += e.bytes();
            }
            !g
        });
        self.count.fetch_sub(n, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Stores an answer. An entry of the partition with the same text is replaced; a full
    /// partition first loses its least recently used entry, and a full index a batch of its
    /// least recently used entries over all partitions.
    #[allow(clippy::too_many_arguments)] // one argument per part of an entry, as the caller has them
    pub fn insert(
        &self,
        partition: &Partition,
        vector: &[f32],
        text: &str,
        answer: A,
        request_id: &str,
        ttl: Duration,
        now: Instant,
    ) {
        let (vector, scale) = quantise(vector);
        let entry = Entry {
            vector,
            scale,
            text: text.into(),
            answer,
            request_id: request_id.into(),
            stored: now,
            ttl,
            used: AtomicU64::new(self.tick()),
        };
        let bytes = entry.bytes();
        {
            let shard = self.shard(partition);
            let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
            let entries = map.entry(*partition).or_default();
            self.remove_where(entries, |e| e.expired(now) || *e.text == *text);
            if entries.len() >= self.partition_cap {
                // Ticks are unique: this removes exactly the least recently used.
                let lru = entries.iter().map(Entry::used).min();
                self.remove_where(entries, |e| Some(e.used()) == lru);
            }
            entries.push(entry);
            self.count.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        if self.len() > self.max_entries {
            self.evict(now);
        }
    }

    /// Removes every entry (a purge of the route).
    pub fn clear(&self) {
        self.sweep(|_| true, |_| {});
    }

    /// Brings the index back within `max_entries`: expired entries first, then the least
    /// recently used over all partitions, a batch at a time so that the pass is rare.
    fn evict(&self, now: Instant) {
        let _one_at_a_time = self.evicting.lock().unwrap_or_else(|p| p.into_inner());
        let batch = self.max_entries.div_ceil(EVICT_FRACTION);
        while self.len() > self.max_entries {
            let mut ticks = Vec::with_capacity(self.len());
            self.sweep(|e| e.expired(now), |e| ticks.push(e.used()));
            let excess = self.len().saturating_sub(self.max_entries);
            if excess == 0 || ticks.is_empty() {
                return;
            }
            // Ticks are unique, so exactly the `remove` oldest are at or below the cutoff (fewer
            // if a hit made one of them recent meanwhile; the loop then goes round again).
            let remove = (excess + batch - 1).min(ticks.len());
            let cutoff = *ticks.select_nth_unstable(remove - 1).1;
            self.sweep(|e| e.used() <= cutoff, |_| {});
        }
    }

    /// Removes the entries `gone` picks from every shard, and the partitions left empty; `seen`
    /// is shown the others.
    fn sweep(&self, gone: impl Fn(&Entry<A>) -> bool, mut seen: impl FnMut(&Entry<A>)) {
        for shard in self.shards.iter() {
            let mut map = shard.write().unwrap_or_else(|p| p.into_inner());
            map.retain(|_, entries| {
                self.remove_where(entries, &gone);
                entries.iter().for_each(&mut seen);
                !entries.is_empty()
            });
        }
    }
}

impl<A: Clone + Weigh> Default for Index<A> {
    fn default() -> Self {
        Index::new(DEFAULT_MAX_ENTRIES, DEFAULT_PARTITION_CAP)
    }
}

#[cfg(test)]
mod tests;
