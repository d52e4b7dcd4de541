//! Response caching on pingora-cache: what a route caches, under which key, for how long, and
//! the store that holds it. The proxy's cache hooks call into here.

mod compile;
pub mod handlers;
pub mod key;
pub mod memory;
pub mod purge;
pub mod redis;

use key::{KeyPart, Primary};
use pingora::cache::cache_control::CacheControl;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::{
    CacheKey, CacheMeta, CacheOptionOverrides, CachePhase, NoCacheReason, Storage,
};
use pingora::cache::{RespCacheable, VarianceBuilder};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Request bodies are read for the key only up to this size (Pingora's retry buffer).
pub const MAX_KEYED_BODY: u64 = 64 << 10;

/// A route's compiled `caching`.
#[derive(Debug)]
pub struct RouteCache {
    /// The longest freshness; an upstream `max-age`/`s-maxage` that is shorter wins.
    pub ttl: Duration,
    /// One entry for every caller; otherwise each agent has its own.
    pub shared: bool,
    pub key: Vec<KeyPart>,
    /// The route's entries' tag (`purge::route_tag` of its label).
    pub tag: String,
}

/// The gateway-wide settings of the store.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `redis://...`: entries shared through Redis (with a memory tier of `max_size` in front);
    /// `None`: in memory only.
    pub redis: Option<String>,
    pub store_timeout: Duration,
    pub max_size: u64,
    pub max_object_size: u64,
    /// How long identical requests wait for the first one's response before going upstream.
    pub lock_timeout: Duration,
    /// Clients that may purge without the `admin` scope.
    pub admin_networks: Vec<crate::client_addr::Cidr>,
}

/// The process's cache: built once at start (entries outlive configuration reloads), leaked
/// because Pingora wants `&'static` storage and lock.
pub struct Cache {
    pub storage: &'static (dyn Storage + Sync),
    /// The shared store, to connect ahead of the first request.
    pub redis: Option<&'static redis::RedisCache>,
    marks: Arc<purge::Watermarks>,
    lock: &'static CacheKeyLockImpl,
    max_object_size: usize,
    lock_timeout: Duration,
}

impl Cache {
    pub fn new(s: &Settings) -> Result<&'static Cache, String> {
        let max_object_size = usize::try_from(s.max_object_size).unwrap_or(usize::MAX);
        let max_size = usize::try_from(s.max_size).unwrap_or(usize::MAX);
        let marks = Arc::new(purge::Watermarks::default());
        let (storage, redis): (&'static (dyn Storage + Sync), _) = match &s.redis {
            None => {
                let m = memory::MemoryStore::new(max_size, max_object_size, marks.clone());
                (Box::leak(Box::new(m)), None)
            }
            Some(url) => {
                let r = redis::RedisCache::new(
                    url,
                    s.store_timeout,
                    max_size,
                    max_object_size,
                    marks.clone(),
                )?;
                let r: &'static redis::RedisCache = Box::leak(Box::new(r));
                (r, Some(r))
            }
        };
        let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(s.lock_timeout));
        Ok(Box::leak(Box::new(Cache {
            storage,
            redis,
            marks,
            lock,
            max_object_size,
            lock_timeout: s.lock_timeout,
        })))
    }

    /// Turns the cache on for this request.
    pub fn enable(&'static self, session: &mut Session) {
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(self.lock_timeout);
        session
            .cache
            .enable(self.storage, None, None, Some(self.lock), Some(overrides));
        session.cache.set_max_file_size_bytes(self.max_object_size);
    }

    /// Bytes held in memory and evictions so far (the memory store, or Redis' memory tier).
    pub fn stats(&self) -> (i64, u64) {
        if let Some(r) = self.redis {
            return r.near();
        }
        let memory = self.storage.as_any().downcast_ref::<memory::MemoryStore>();
        memory.map_or((0, 0), |m| {
            let bytes = m.bytes.load(Ordering::Relaxed);
            (bytes, m.evictions.load(Ordering::Relaxed))
        })
    }

    /// Removes one entry; whether it was there.
    pub async fn purge_one(&'static self, key: &CacheKey) -> bool {
        let span = pingora::cache::trace::Span::inactive().handle();
        let compact = key.to_compact();
        let target = pingora::cache::PurgeTarget::Active(&compact);
        matches!(
            self.storage
                .purge(target, pingora::cache::PurgeType::Invalidation, &span)
                .await,
            Ok(pingora::cache::PurgeOutcome::Purged(_))
        )
    }

    /// Stops serving every entry of a route stored until now (and deletes them from Redis).
    pub async fn purge_route(&'static self, rc: &RouteCache) {
        self.marks.purge(&rc.tag);
        if let Some(r) = self.redis {
            r.purge_route(&rc.tag).await;
        }
    }
}

/// Methods whose responses may be cached: a HEAD is passed through (its response has no body
/// to store) and the rest change things.
pub fn cacheable_method(m: &http::Method) -> bool {
    m == http::Method::GET || m == http::Method::POST
}

/// A request's key. `target` is the path and query the backend receives; `body` what of the
/// body counts (see `key::body_part`).
pub fn request_key(
    route: &str,
    method: &http::Method,
    headers: &http::HeaderMap,
    target: &http::Uri,
    agent: Option<&str>,
    rc: &RouteCache,
    body: Option<&[u8]>,
) -> CacheKey {
    let mut p = Primary::default();
    p.part(b"clawgate/1")
        .part(route.as_bytes())
        .part(method.as_str().as_bytes())
        .part(target.path().as_bytes())
        .part(key::sorted_query(target.query()).as_bytes());
    if rc.shared {
        p.absent();
    } else {
        // Anonymous callers (routes without auth) share one namespace, apart from every agent.
        p.opt(agent.map(str::as_bytes));
    }
    for part in &rc.key {
        if let KeyPart::Header(name) = part {
            let mut values = headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                p.absent();
            } else {
                let joined: Vec<&[u8]> = values.map(|v| v.as_bytes()).collect();
                p.part(&joined.join(&b","[..]));
            }
        }
    }
    p.opt(body);
    p.into_key(&rc.tag)
}

/// Reads a request body whose key needs it (`Content-Length` of at most `MAX_KEYED_BODY`), kept
/// in Pingora's retry buffer so that a miss still sends it upstream. `None`: the body's length
/// is unknown or too large, so the request skips the cache and its body streams untouched.
pub async fn read_body_for_key(session: &mut Session) -> pingora::Result<Option<bytes::Bytes>> {
    let req = session.req_header();
    if req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Ok(None);
    }
    let length = req
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    match length {
        None if session.is_body_empty() => return Ok(Some(bytes::Bytes::new())),
        Some(0) => return Ok(Some(bytes::Bytes::new())),
        Some(n) if n <= MAX_KEYED_BODY => {}
        _ => return Ok(None),
    }
    session.enable_retry_buffering();
    while session.read_request_body().await?.is_some() {}
    Ok(session.get_retry_buffer())
}

/// `X-Cache` for a response of a caching route; `missed`: the lookup found nothing (the
/// response may since have turned out uncacheable, which disables the cache).
pub fn status(phase: CachePhase, missed: bool) -> &'static str {
    match phase {
        CachePhase::Disabled(_) if missed => "MISS",
        CachePhase::Hit => "HIT",
        CachePhase::Miss => "MISS",
        CachePhase::Expired
        | CachePhase::Stale
        | CachePhase::StaleUpdating
        | CachePhase::Revalidated
        | CachePhase::RevalidatedNoCache(_) => "EXPIRED",
        _ => "BYPASS",
    }
}

/// The client asks for a fresh answer (`Cache-Control: no-cache` or `Pragma: no-cache`).
pub fn client_wants_fresh(req: &RequestHeader) -> bool {
    CacheControl::from_req_headers(req).is_some_and(|cc| cc.no_cache())
        || (req.headers.get_all(http::header::PRAGMA).iter())
            .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"no-cache"))
}

/// The client forbids storing (`Cache-Control: no-store`): its request bypasses the cache.
pub fn client_forbids_store(req: &RequestHeader) -> bool {
    CacheControl::from_req_headers(req).is_some_and(|cc| cc.no_store())
}

/// Whether and for how long a response is stored: 2xx (not 206) only; never `no-store`,
/// `private`, `no-cache`, `Set-Cookie`, `Vary: *` or an event stream; fresh for the route's
/// `ttl`, or the upstream's `s-maxage`/`max-age` when shorter.
pub fn response_cacheable(resp: &ResponseHeader, rc: &RouteCache) -> RespCacheable {
    use RespCacheable::Uncacheable;
    let status = resp.status.as_u16();
    if !(200..300).contains(&status) || status == 206 {
        return Uncacheable(NoCacheReason::Custom("status"));
    }
    let h = &resp.headers;
    if h.contains_key(http::header::SET_COOKIE) {
        return Uncacheable(NoCacheReason::Custom("set-cookie"));
    }
    if h.get_all(http::header::VARY).iter().any(|v| {
        v.to_str()
            .map_or(true, |s| s.split(',').any(|p| p.trim() == "*"))
    }) {
        return Uncacheable(NoCacheReason::Custom("vary"));
    }
    let event_stream = h
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
    if event_stream {
        return Uncacheable(NoCacheReason::Custom("event-stream"));
    }
    let mut ttl = rc.ttl;
    if let Some(cc) = CacheControl::from_resp_headers(resp) {
        if cc.no_store() || cc.private() || cc.no_cache() {
            return Uncacheable(NoCacheReason::OriginNotCache);
        }
        // s-maxage is for shared caches like this one; a value that does not parse is stale.
        let secs = match (cc.s_maxage(), cc.max_age()) {
            (Ok(Some(s)), _) => Some(s),
            (Ok(None), Ok(m)) => m,
            _ => Some(0),
        };
        match secs {
            Some(0) => return Uncacheable(NoCacheReason::OriginNotCache),
            Some(s) => ttl = ttl.min(Duration::from_secs(s.into())),
            None => {}
        }
    }
    let now = SystemTime::now();
    RespCacheable::Cacheable(CacheMeta::new(now + ttl, now, 0, 0, resp.clone()))
}

/// The variance of a stored response that names request headers in `Vary`.
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<pingora::cache::key::HashBinary> {
    let mut names: Vec<String> = meta
        .headers()
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    names.dedup();
    let mut v = VarianceBuilder::new();
    let values: Vec<(String, Vec<u8>)> = names
        .into_iter()
        .map(|n| {
            let value = req
                .headers
                .get_all(n.as_str())
                .iter()
                .map(|v| v.as_bytes())
                .collect::<Vec<_>>()
                .join(&b","[..]);
            (n, value)
        })
        .collect();
    for (n, value) in &values {
        v.add_value(n, value);
    }
    v.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::cache::key::CacheHashKey;

    fn rc(shared: bool) -> RouteCache {
        RouteCache {
            ttl: Duration::from_secs(300),
            shared,
            key: Vec::new(),
            tag: purge::route_tag("r"),
        }
    }

    fn resp(headers: &[(&str, &str)], status: u16) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn fresh_secs(r: RespCacheable) -> Option<u64> {
        match r {
            RespCacheable::Cacheable(m) => Some(m.fresh_sec()),
            RespCacheable::Uncacheable(_) => None,
        }
    }

    #[test]
    fn rules() {
        let r = rc(false);
        assert_eq!(
            fresh_secs(response_cacheable(&resp(&[], 200), &r)),
            Some(300)
        );
        let short = resp(&[("cache-control", "public, max-age=20")], 200);
        assert_eq!(fresh_secs(response_cacheable(&short, &r)), Some(20));
        let s = resp(&[("cache-control", "max-age=20, s-maxage=10")], 200);
        assert_eq!(fresh_secs(response_cacheable(&s, &r)), Some(10));
        let long = resp(&[("cache-control", "max-age=86400")], 200);
        assert_eq!(fresh_secs(response_cacheable(&long, &r)), Some(300));
        for no in [
            resp(&[("cache-control", "no-store")], 200),
            resp(&[("cache-control", "private, max-age=60")], 200),
            resp(&[("cache-control", "no-cache")], 200),
            resp(&[("cache-control", "max-age=0")], 200),
            resp(&[("set-cookie", "a=b")], 200),
            resp(&[("vary", "Accept, *")], 200),
            resp(&[("content-type", "text/event-stream")], 200),
            resp(&[], 500),
            resp(&[], 404),
            resp(&[], 206),
        ] {
            assert_eq!(fresh_secs(response_cacheable(&no, &r)), None, "{no:?}");
        }
    }

    #[test]
    fn keys_separate_agents_unless_shared() {
        let req = RequestHeader::build("GET", b"/x?b=2&a=1", None).unwrap();
        let uri: http::Uri = "/x?b=2&a=1".parse().unwrap();
        let sorted: http::Uri = "/x?a=1&b=2".parse().unwrap();
        let k = |agent: Option<&str>, shared: bool, uri: &http::Uri| {
            request_key(
                "r",
                &req.method,
                &req.headers,
                uri,
                agent,
                &rc(shared),
                None,
            )
            .combined()
        };
        assert_ne!(k(Some("a"), false, &uri), k(Some("b"), false, &uri));
        assert_ne!(k(Some("a"), false, &uri), k(None, false, &uri));
        assert_eq!(k(Some("a"), true, &uri), k(Some("b"), true, &uri));
        assert_eq!(k(Some("a"), false, &uri), k(Some("a"), false, &sorted));
    }

    #[test]
    fn client_directives() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        assert!(!client_wants_fresh(&req));
        req.insert_header("cache-control", "max-age=0, No-Cache")
            .unwrap();
        assert!(client_wants_fresh(&req));
        assert!(!client_forbids_store(&req));
        req.insert_header("cache-control", "no-store").unwrap();
        assert!(client_forbids_store(&req));
    }
}
