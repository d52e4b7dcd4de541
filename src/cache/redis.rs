//! The shared cache store (`caching.store: redis://...`): every instance pointing at one Redis
//! answers from the same entries. Head and body are one Redis value, expiring with the entry's
//! freshness. A small memory tier in front keeps hot entries for a second (so another
//! instance's purge is seen within a second). A slow or dead Redis is a miss, never an error:
//! calls are bounded by `store_timeout` and skipped for a moment after a failure
//! (`redis_link`).

use super::handlers::{BodyHit, Buffered};
use super::memory::{meta_copy, storage_key, MemoryStore};
use super::purge::Watermarks;
use crate::redis_link::Link;
use async_trait::async_trait;
use bytes::{BufMut, Bytes, BytesMut};
use pingora::cache::key::{CacheHashKey, HashBinary};
use pingora::cache::storage::{
    HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta};
use pingora::Result;
use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long the memory tier serves an entry before asking Redis again.
const NEAR_HOLD: Duration = Duration::from_secs(1);
const MAGIC: &[u8; 4] = b"CGc1";

pub struct RedisCache {
    pub link: Link,
    near: MemoryStore,
    max_object_size: usize,
    marks: Arc<Watermarks>,
}

impl RedisCache {
    pub fn new(
        url: &str,
        timeout: Duration,
        near_size: usize,
        max_object_size: usize,
        marks: Arc<Watermarks>,
    ) -> Result<RedisCache, String> {
        Ok(RedisCache {
            link: Link::new(
                url,
                timeout,
                "cache store",
                "requests are answered by the backends until it answers",
                "the shared cache is used again",
            )?,
            near: MemoryStore::new(near_size, max_object_size, marks.clone()),
            max_object_size,
            marks,
        })
    }

    async fn get(&self, k: &HashBinary, tag: &str) -> Option<(CacheMeta, Bytes)> {
        let name = redis_key(tag, k);
        let blob: Option<Vec<u8>> = self
            .link
            .run(
                |mut conn| async move { redis::cmd("GET").arg(&name).query_async(&mut conn).await },
            )
            .await?;
        let (meta, body) = decode(&blob?)?;
        let live = meta.is_fresh(SystemTime::now()) && !self.marks.hides(tag, meta.updated());
        live.then_some((meta, body))
    }

    async fn set(&self, k: &HashBinary, tag: &str, meta: &CacheMeta, body: &Bytes) {
        let Some(blob) = encode(meta, body) else {
            return;
        };
        let ttl_ms = meta
            .fresh_until()
            .duration_since(SystemTime::now())
            .map_or(0, |d| d.as_millis() as u64);
        if ttl_ms == 0 {
            return;
        }
        let name = redis_key(tag, k);
        self.link
            .run(|mut conn| async move {
                redis::cmd("SET")
                    .arg(&name)
                    .arg(blob)
                    .arg("PX")
                    .arg(ttl_ms)
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
    }

    async fn delete(&self, k: &HashBinary, tag: &str) -> bool {
        let name = redis_key(tag, k);
        let removed: Option<u64> = self
            .link
            .run(
                |mut conn| async move { redis::cmd("DEL").arg(&name).query_async(&mut conn).await },
            )
            .await;
        removed.unwrap_or(0) > 0
    }

    /// Bytes held and evictions of the memory tier.
    pub fn near(&self) -> (i64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.near.bytes.load(Ordering::Relaxed),
            self.near.evictions.load(Ordering::Relaxed),
        )
    }

    /// Deletes every entry of a route (by the route tag in the key names); how many went.
    pub async fn purge_route(&self, tag: &str) -> Option<u64> {
        self.link
            .unlink_matching(&format!("clawgate:cache:{tag}:*"))
            .await
    }
}

fn redis_key(tag: &str, k: &HashBinary) -> String {
    let mut s = String::with_capacity(32 + tag.len() + 32);
    s.push_str("clawgate:cache:");
    s.push_str(tag);
    s.push(':');
    let mut hex = Vec::with_capacity(32);
    crate::text::push_hex(&mut hex, k);
    s.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    s
}

/// `MAGIC`, the meta's two serialised parts (each length-prefixed), the body.
fn encode(meta: &CacheMeta, body: &Bytes) -> Option<Vec<u8>> {
    let (internal, header) = meta.serialize().ok()?;
    let mut out = BytesMut::with_capacity(12 + internal.len() + header.len() + body.len());
    out.put_slice(MAGIC);
    out.put_u32(u32::try_from(internal.len()).ok()?);
    out.put_slice(&internal);
    out.put_u32(u32::try_from(header.len()).ok()?);
    out.put_slice(&header);
    out.put_slice(body);
    Some(out.to_vec())
}

/// Anything that does not decode (another version, a foreign value) is a miss.
fn decode(blob: &[u8]) -> Option<(CacheMeta, Bytes)> {
    let rest = blob.strip_prefix(MAGIC)?;
    let (internal, rest) = take_part(rest)?;
    let (header, body) = take_part(rest)?;
    let meta = CacheMeta::deserialize(internal, header).ok()?;
    Some((meta, Bytes::copy_from_slice(body)))
}

fn take_part(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let part = b.get(4..4 + len)?;
    Some((part, &b[4 + len..]))
}

#[async_trait]
impl Storage for RedisCache {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let (k, tag) = (storage_key(key), key.user_tag.as_str());
        let found = match self.near.find(&k, tag) {
            Some(hit) => Some(hit),
            None => {
                let far = self.get(&k, tag).await;
                if let Some((meta, body)) = &far {
                    self.near.insert(k, meta, body.clone(), Some(NEAR_HOLD));
                }
                far
            }
        };
        Ok(found.map(|(meta, body)| (meta, Box::new(BodyHit::new(body)) as HitHandler)))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let (k, tag) = (storage_key(key), key.user_tag.clone());
        let meta = meta_copy(meta);
        Ok(Box::new(Buffered::new(
            self.max_object_size,
            Box::new(move |body| {
                Box::pin(async move {
                    self.near.insert(k, &meta, body.clone(), Some(NEAR_HOLD));
                    self.set(&k, &tag, &meta, &body).await;
                })
            }),
        )))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let compact = target.key();
        let k = compact.combined_bin();
        let near = self.near.purge_key(&k);
        let far = self.delete(&k, &compact.user_tag).await;
        Ok(if near || far {
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
        let (k, tag) = (storage_key(key), key.user_tag.as_str());
        let body = match self.near.find(&k, tag) {
            Some((_, body)) => Some(body),
            None => self.get(&k, tag).await.map(|(_, body)| body),
        };
        let Some(body) = body else {
            return Ok(false);
        };
        self.near.insert(k, meta, body.clone(), Some(NEAR_HOLD));
        self.set(&k, tag, meta, &body).await;
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;

    #[test]
    fn blobs_round_trip_and_garbage_is_a_miss() {
        let now = SystemTime::now();
        let mut head = ResponseHeader::build(200, None).unwrap();
        head.append_header("content-type", "application/json")
            .unwrap();
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, head);
        let blob = encode(&meta, &Bytes::from_static(b"{\"a\":1}")).unwrap();
        let (back, body) = decode(&blob).unwrap();
        assert_eq!(&body[..], b"{\"a\":1}");
        assert_eq!(back.headers()["content-type"], "application/json");
        assert!(back.is_fresh(now));
        assert!(decode(b"CGc1\0\0\0\x09short").is_none());
        assert!(decode(b"something else").is_none());
        assert!(decode(&blob[..10]).is_none());
    }

    #[test]
    fn keys_are_hex() {
        assert_eq!(
            redis_key("00ff", &[0xab; 16]),
            format!("clawgate:cache:00ff:{}", "ab".repeat(16))
        );
    }
}
