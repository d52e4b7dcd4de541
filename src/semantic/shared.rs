//! The semantic cache shared through Redis (`caching.store: redis://...`, DESIGN §5.1). Redis 7
//! has no vector search, so each partition is a Redis stream of entries (question, vector,
//! answer, expiry) and every instance keeps a local mirror: its in-memory index. When a question
//! misses the mirror exactly, the instance reads the entries its mirror has not seen yet — one
//! `XRANGE` from its last position, usually empty — and looks again. No request scans Redis.
//! Streams are trimmed to the partition cap and expire with their newest entry; a slow or dead
//! Redis is a miss (`redis_link`: bounded by `store_timeout`, skipped for a moment after a
//! failure).

use super::cache::Answer;
use super::index::{Partition, DEFAULT_PARTITION_CAP};
use crate::redis_link::Link;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::time::{Duration, SystemTime};

const MAGIC: &[u8; 4] = b"CGs1";
/// Entries one read brings at most (a new instance catches up over a few misses).
const READ_AT_ONCE: usize = 500;

/// One shared entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub text: String,
    /// Empty when the question was not embedded (it then answers exact repeats only).
    pub vector: Vec<f32>,
    pub request_id: String,
    /// Milliseconds since the Unix epoch.
    pub expires_ms: u64,
    pub answer: Answer,
}

impl Record {
    /// How long the entry still lives; `None` once expired.
    pub fn remaining(&self, now: SystemTime) -> Option<Duration> {
        let left = self.expires_ms.checked_sub(unix_ms(now))?;
        (left > 0).then(|| Duration::from_millis(left))
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

pub struct Store {
    link: Link,
}

impl Store {
    pub fn new(url: &str, timeout: Duration) -> Result<Store, String> {
        let link = Link::new(
            url,
            timeout,
            "semantic cache store",
            "each instance answers from its own entries until it answers",
            "entries are shared again",
        )?;
        Ok(Store { link })
    }

    pub async fn warm_up(&self) {
        self.link.warm_up().await
    }

    /// Deletes every partition of a route (a purge).
    pub async fn purge_route(&self, tag: &str) -> Option<u64> {
        self.link
            .unlink_matching(&format!("clawgate:semantic:{tag}:*"))
            .await
    }

    /// Adds an entry to its partition's stream.
    pub async fn push(&self, tag: &str, partition: &Partition, record: &Record, ttl: Duration) {
        let Some(blob) = encode(record) else { return };
        let key = stream_key(tag, partition);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.link
            .run(|mut conn| async move {
                redis::pipe()
                    .atomic()
                    .cmd("XADD")
                    .arg(&key)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(DEFAULT_PARTITION_CAP)
                    .arg("*")
                    .arg("e")
                    .arg(blob)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&key)
                    .arg(ttl_ms)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
    }

    /// The partition's entries after stream position `after` (all of them from `None`), with
    /// their positions; `None` when Redis could not be asked. Entries that do not decode are
    /// skipped (another version's, a foreign value).
    pub async fn since(
        &self,
        tag: &str,
        partition: &Partition,
        after: Option<&str>,
    ) -> Option<Vec<(String, Option<Record>)>> {
        let key = stream_key(tag, partition);
        let start = after.map_or_else(|| "-".to_string(), |id| format!("({id}"));
        type Reply = Vec<(String, Vec<(String, Vec<u8>)>)>;
        let reply: Reply = self
            .link
            .run(|mut conn| async move {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(READ_AT_ONCE)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let entries = reply.into_iter().map(|(id, fields)| {
            let blob = fields.into_iter().find(|(f, _)| f == "e").map(|(_, v)| v);
            (id, blob.and_then(|b| decode(&b)))
        });
        Some(entries.collect())
    }
}

fn stream_key(tag: &str, partition: &Partition) -> String {
    let mut hex = Vec::with_capacity(64);
    crate::text::push_hex(&mut hex, partition);
    format!("clawgate:semantic:{tag}:{}", String::from_utf8_lossy(&hex))
}

fn put_part(out: &mut BytesMut, b: &[u8]) -> Option<()> {
    out.put_u32(u32::try_from(b.len()).ok()?);
    out.put_slice(b);
    Some(())
}

/// `MAGIC`, expiry, request id, text, vector, status, headers, body; lengths are u32.
fn encode(r: &Record) -> Option<Vec<u8>> {
    let a = &r.answer;
    let mut out = BytesMut::with_capacity(64 + r.text.len() + 4 * r.vector.len() + a.body.len());
    out.put_slice(MAGIC);
    out.put_u64(r.expires_ms);
    put_part(&mut out, r.request_id.as_bytes())?;
    put_part(&mut out, r.text.as_bytes())?;
    out.put_u32(u32::try_from(r.vector.len()).ok()?);
    r.vector.iter().for_each(|x| out.put_f32(*x));
    out.put_u16(a.status);
    out.put_u32(u32::try_from(a.headers.len()).ok()?);
    for (name, value) in &a.headers {
        put_part(&mut out, name.as_str().as_bytes())?;
        put_part(&mut out, value.as_bytes())?;
    }
    put_part(&mut out, &a.body)?;
    Some(out.to_vec())
}

fn take_part(b: &mut &[u8]) -> Option<Vec<u8>> {
    let len = usize::try_from(take_u32(b)?).ok()?;
    let part = b.get(..len)?.to_vec();
    b.advance(len);
    Some(part)
}

fn take_u32(b: &mut &[u8]) -> Option<u32> {
    (b.remaining() >= 4).then(|| b.get_u32())
}

fn decode(blob: &[u8]) -> Option<Record> {
    let mut b = blob.strip_prefix(MAGIC)?;
    let expires_ms = (b.remaining() >= 8).then(|| b.get_u64())?;
    let request_id = String::from_utf8(take_part(&mut b)?).ok()?;
    let text = String::from_utf8(take_part(&mut b)?).ok()?;
    let dims = usize::try_from(take_u32(&mut b)?).ok()?;
    if b.remaining() < dims.checked_mul(4)? {
        return None;
    }
    let vector = (0..dims).map(|_| b.get_f32()).collect();
    let status = (b.remaining() >= 2).then(|| b.get_u16())?;
    let count = take_u32(&mut b)?;
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = http::HeaderName::from_bytes(&take_part(&mut b)?).ok()?;
        let value = http::HeaderValue::from_bytes(&take_part(&mut b)?).ok()?;
        headers.push((name, value));
    }
    let body = Bytes::from(take_part(&mut b)?);
    Some(Record {
        text,
        vector,
        request_id,
        expires_ms,
        answer: Answer {
            status,
            headers,
            body,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            text: "How do I reset my password? 密码".into(),
            vector: vec![0.6, -0.8, 0.0],
            request_id: "r-1".into(),
            expires_ms: 1_900_000_000_000,
            answer: Answer {
                status: 200,
                headers: vec![(
                    http::HeaderName::from_static("content-type"),
                    http::HeaderValue::from_static("text/event-stream"),
                )],
                body: Bytes::from_static(b"data: {}\n\n"),
            },
        }
    }

    #[test]
    fn records_round_trip_and_damaged_ones_do_not_decode() {
        let r = record();
        let blob = encode(&r).unwrap();
        assert_eq!(decode(&blob), Some(r));
        for cut in [0, 4, 12, 20, blob.len() - 1] {
            assert_eq!(decode(&blob[..cut]), None, "cut at {cut}");
        }
        let mut foreign = blob.clone();
        foreign[0] = b'X';
        assert_eq!(decode(&foreign), None);
        let mut huge = blob;
        huge[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode(&huge), None);
    }

    #[test]
    fn expiry_is_relative_to_now() {
        let r = record();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(r.expires_ms - 1500);
        assert_eq!(r.remaining(at), Some(Duration::from_millis(1500)));
        let after = SystemTime::UNIX_EPOCH + Duration::from_millis(r.expires_ms);
        assert_eq!(r.remaining(after), None);
    }
}
