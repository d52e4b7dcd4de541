//! The in-process cache store: a TinyUFO (S3-FIFO with TinyLFU admission) bounded by bytes.
//! Pingora's `MemCache` is for tests only (an unbounded `RwLock<HashMap>` that copies bodies).
//!
//! Entries are whole responses (head and body, shared by `Arc`/`Bytes`, so a hit copies
//! nothing); a response is buffered while it is fetched and stored when complete, so requests
//! waiting on the cache lock are served the finished entry.

use super::handlers::{BodyHit, Buffered};
use super::purge::Watermarks;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora::cache::storage::{
    HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta};
use pingora::http::ResponseHeader;
use pingora::Result;
use std::any::Any;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tinyufo::TinyUfo;

/// Weights are counted in KiB (TinyUFO's weight is a u16: up to 64 MiB per entry).
const UNIT: usize = 1024;
/// Bytes an entry costs besides its body and its header text: the header map, the meta, the
/// `Arc`, TinyUFO's node (measured with load-tests/bench-cache.sh: about 1.5 KB).
const OVERHEAD: usize = 1536;

struct Entry {
    key: HashBinary,
    meta: Meta,
    body: Bytes,
    /// Served until then (the freshness, or less for a near tier in front of Redis).
    keep_until: SystemTime,
}

impl Entry {
    /// What the entry costs in memory.
    fn size(&self) -> usize {
        let head: usize = (self.meta.header.headers.iter())
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        self.body.len() + head + OVERHEAD
    }

    /// The same in `UNIT`s.
    fn weight(&self) -> u16 {
        u16::try_from(self.size().div_ceil(UNIT)).unwrap_or(u16::MAX)
    }
}

/// What of a `CacheMeta` is kept (it is not `Clone`; serialising it per hit would cost more
/// than these few fields). Stale-serving windows are not used by clawgate.
struct Meta {
    fresh_until: SystemTime,
    /// When the response was fetched or last revalidated: `Age` counts from here.
    updated: SystemTime,
    variance: Option<HashBinary>,
    header: ResponseHeader,
}

impl Meta {
    fn of(m: &CacheMeta) -> Meta {
        Meta {
            fresh_until: m.fresh_until(),
            updated: m.epoch(),
            variance: m.variance(),
            header: owned_header(m.response_header()),
        }
    }

    fn to_cache_meta(&self) -> CacheMeta {
        let mut m = CacheMeta::new(self.fresh_until, self.updated, 0, 0, self.header.clone());
        if let Some(v) = self.variance {
            m.set_variance(v);
        }
        m
    }
}

pub struct MemoryStore {
    entries: TinyUfo<HashBinary, Arc<Entry>>,
    marks: Arc<Watermarks>,
    max_object_size: usize,
    /// Entries pushed out to make room (for the metrics).
    pub evictions: AtomicU64,
    /// Bytes of the entries held (bodies, heads, overhead), for the metrics.
    pub bytes: AtomicI64,
}

impl MemoryStore {
    pub fn new(max_size: usize, max_object_size: usize, marks: Arc<Watermarks>) -> MemoryStore {
        let units = (max_size / UNIT).max(1);
        // TinyUFO sizes its tables from an item estimate: assume 8 KiB entries on average.
        let estimated = (max_size / 8192).clamp(64, 4 << 20);
        MemoryStore {
            entries: TinyUfo::new(units, estimated),
            marks,
            max_object_size,
            evictions: AtomicU64::new(0),
            bytes: AtomicI64::new(0),
        }
    }

    fn get(&self, key: &HashBinary) -> Option<Arc<Entry>> {
        // TinyUFO keys by a 64-bit hash of ours; the full key is compared so that a collision
        // is a miss, never another request's answer.
        self.entries.get(key).filter(|e| &e.key == key)
    }

    fn put(&self, entry: Entry) {
        let key = entry.key;
        let weight = entry.weight();
        let mut change = entry.size() as i64;
        if let Some(old) = self.get(&key) {
            change -= old.size() as i64;
        }
        let evicted = self.entries.put(key, Arc::new(entry), weight);
        let mut pushed_out = 0;
        for kv in &evicted {
            // The new entry itself comes back when TinyLFU prefers what it would evict.
            change -= kv.data.size() as i64;
            pushed_out += u64::from(kv.data.key != key);
        }
        self.bytes.fetch_add(change, Ordering::Relaxed);
        self.evictions.fetch_add(pushed_out, Ordering::Relaxed);
    }

    fn remove(&self, key: &HashBinary) -> bool {
        match self.entries.remove(key) {
            Some(e) if &e.key == key => {
                self.bytes.fetch_sub(e.size() as i64, Ordering::Relaxed);
                true
            }
            Some(other) => {
                // Another key's entry under a colliding hash: put it back untouched.
                let weight = other.weight();
                self.entries.put(other.key, other, weight);
                false
            }
            None => false,
        }
    }
}

/// The storage key: the request key's hash with its variance.
pub fn storage_key(key: &CacheKey) -> HashBinary {
    key.combined_bin()
}

impl MemoryStore {
    /// A stored answer of route `tag` still to be served.
    pub fn find(&self, k: &HashBinary, tag: &str) -> Option<(CacheMeta, Bytes)> {
        let entry = self.get(k)?;
        // Past its freshness (or its route's purge) the entry is gone: the next request is a
        // plain miss (and refills).
        if entry.keep_until < SystemTime::now() || self.marks.hides(tag, entry.meta.updated) {
            self.remove(k);
            return None;
        }
        Some((entry.meta.to_cache_meta(), entry.body.clone()))
    }

    /// Stores an answer; `hold` caps how long it is served from here.
    pub fn insert(&self, k: HashBinary, meta: &CacheMeta, body: Bytes, hold: Option<Duration>) {
        let fresh_until = meta.fresh_until();
        let keep_until = hold.map_or(fresh_until, |h| fresh_until.min(SystemTime::now() + h));
        self.put(Entry {
            key: k,
            meta: Meta::of(meta),
            body,
            keep_until,
        });
    }

    /// Replaces an entry's meta (after a revalidation); false when it is not here.
    pub fn replace_meta(&self, k: &HashBinary, meta: &CacheMeta) -> bool {
        let Some(entry) = self.get(k) else {
            return false;
        };
        self.put(Entry {
            key: *k,
            meta: Meta::of(meta),
            body: entry.body.clone(),
            keep_until: meta.fresh_until(),
        });
        true
    }

    pub fn purge_key(&self, k: &HashBinary) -> bool {
        self.remove(k)
    }

    pub fn max_object_size(&self) -> usize {
        self.max_object_size
    }
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        Ok(self
            .find(&storage_key(key), &key.user_tag)
            .map(|(meta, body)| (meta, Box::new(BodyHit::new(body)) as HitHandler)))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let k = storage_key(key);
        let meta = meta_copy(meta);
        Ok(Box::new(Buffered::new(
            self.max_object_size,
            Box::new(move |body| {
                self.insert(k, &meta, body, None);
                Box::pin(async {})
            }),
        )))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let key: &CompactCacheKey = target.key();
        Ok(if self.remove(&key.combined_bin()) {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        Ok(self.replace_meta(&storage_key(key), meta))
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// A copy of a response head that shares no memory with the one it was parsed from (Pingora's
/// header values are slices of the connection's read buffer: a plain clone kept each entry's
/// whole read buffer alive, about 6 KB per entry, measured) and keeps no map of the names'
/// original case (HTTP header names are case-insensitive; the map doubled the head's size).
fn owned_header(h: &ResponseHeader) -> ResponseHeader {
    let Ok(mut out) = ResponseHeader::build_no_case(h.status, Some(h.headers.len())) else {
        return h.clone();
    };
    out.set_version(h.version);
    for (name, value) in &h.headers {
        let value =
            http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        // Appending to a map without a case map cannot fail.
        let _ = out.append_header(name.clone(), value);
    }
    out
}

/// A copy of a `CacheMeta` (which is not `Clone`) with what clawgate uses of it.
pub fn meta_copy(m: &CacheMeta) -> CacheMeta {
    Meta::of(m).to_cache_meta()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn meta(fresh: Duration) -> CacheMeta {
        let now = SystemTime::now();
        CacheMeta::new(
            now + fresh,
            now,
            0,
            0,
            ResponseHeader::build(200, None).unwrap(),
        )
    }

    fn store(max: usize) -> &'static MemoryStore {
        Box::leak(Box::new(MemoryStore::new(max, 64 << 10, Arc::default())))
    }

    async fn fill(s: &'static MemoryStore, key: &CacheKey, body: &[u8], fresh: Duration) {
        let span = pingora::cache::trace::Span::inactive().handle();
        let mut m = s.get_miss_handler(key, &meta(fresh), &span).await.unwrap();
        m.write_body(Bytes::copy_from_slice(body), true)
            .await
            .unwrap();
        m.finish().await.unwrap();
    }

    async fn read(s: &'static MemoryStore, key: &CacheKey) -> Option<Bytes> {
        let (_, mut hit) = s
            .lookup(key, &pingora::cache::trace::Span::inactive().handle())
            .await
            .unwrap()?;
        hit.read_body().await.unwrap()
    }

    #[tokio::test]
    async fn stores_serves_expires_and_purges() {
        let s = store(1 << 20);
        let k = CacheKey::new("a", "");
        assert!(read(s, &k).await.is_none());
        fill(s, &k, b"hello", Duration::from_secs(60)).await;
        assert_eq!(read(s, &k).await.as_deref(), Some(&b"hello"[..]));
        assert!(read(s, &CacheKey::new("b", "")).await.is_none());

        let purged = s
            .purge(
                PurgeTarget::Active(&k.to_compact()),
                PurgeType::Invalidation,
                &pingora::cache::trace::Span::inactive().handle(),
            )
            .await
            .unwrap();
        assert_eq!(purged, PurgeOutcome::Purged(None));
        assert!(read(s, &k).await.is_none());

        let stale = CacheKey::new("stale", "");
        fill(s, &stale, b"x", Duration::ZERO).await;
        assert!(read(s, &stale).await.is_none(), "past its freshness");
    }

    #[tokio::test]
    async fn too_big_is_not_stored_and_the_bound_holds() {
        let s = store(256 << 10);
        let big = CacheKey::new("big", "");
        fill(s, &big, &vec![0u8; (64 << 10) + 1], Duration::from_secs(60)).await;
        assert!(read(s, &big).await.is_none());
        for i in 0..200 {
            let k = CacheKey::new(format!("k{i}"), "");
            fill(s, &k, &[1u8; 8 << 10], Duration::from_secs(60)).await;
        }
        let mut kept = 0;
        for i in 0..200 {
            if read(s, &CacheKey::new(format!("k{i}"), "")).await.is_some() {
                kept += 1;
            }
        }
        // 256 KiB holds at most 25 entries of 10 KiB.
        assert!(kept > 0 && kept <= 25, "{kept}");
        assert!(s.evictions.load(Ordering::Relaxed) > 0);
        let bytes = s.bytes.load(Ordering::Relaxed);
        assert!(bytes > 0 && bytes <= 256 << 10, "{bytes}");
    }
}
