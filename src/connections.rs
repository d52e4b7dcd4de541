//! Client connections held within bounds (DESIGN §5.6): the proxy's `ServerApp` wrapped so that
//! each accepted connection first passes the per-address and total limits, then is served under
//! a watch that closes it when a request head takes too long (slowloris) or, on HTTP/2, when its
//! client resets streams faster than allowed (rapid reset).
//!
//! Pingora reads request heads with a timeout per read (60 s), so a client sending a byte now and
//! then would hold its connection for ever: the watch keeps one deadline per connection instead.
//! HTTP/1 requests move it through a task-local (`request_started`, `request_finished`, on the
//! connection's own task), and it also closes idle HTTP/1 connections; HTTP/2 connections are
//! bounded by their idle timeout and h2's limits.

use crate::client_addr::Cidr;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::prelude::fast_timeout::fast_sleep;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// `gateway`'s connection settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    /// Proxies' addresses: many clients share them, so they are not limited per address.
    pub trusted_proxies: Vec<Cidr>,
    /// Plaintext listeners also speak HTTP/2 (the preface is looked for).
    pub h2c: bool,
}

const SHARDS: usize = 16;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The proxy, behind the connection limits.
pub struct Guarded<A> {
    inner: Arc<A>,
    settings: Settings,
    slots: Option<Arc<Semaphore>>,
    waiting: AtomicUsize,
    per_ip: Box<[Mutex<HashMap<IpAddr, usize>>]>,
    h2: Arc<H2Conns>,
}

type Shard = Mutex<HashMap<SocketAddr, Arc<Conn>>>;

/// HTTP/2 connections by client address, for the stream resets their requests report (shared
/// with the proxy, which sees the resets).
pub struct H2Conns {
    shards: Box<[Shard]>,
    max_resets_per_second: u32,
}

/// What the watch knows of one connection.
pub struct Conn {
    accepted: Instant,
    /// Milliseconds after `accepted` by which the next request head must have come; 0 while a
    /// request is being served (or on HTTP/2, where streams are watched by h2).
    deadline: AtomicU64,
    /// What a finished request gives the next one's head: the idle time.
    next_head: Duration,
    /// Resets counted in the current second, and that second (since `accepted`).
    resets: Mutex<(u64, u32)>,
    cut: Notify,
    /// When the watch wakes next (ms after `accepted`), and how to wake it sooner: an idle
    /// timeout shorter than the head's.
    wakes_at: AtomicU64,
    sooner: Notify,
}

tokio::task_local! {
    static CONN: Arc<Conn>;
}

impl Conn {
    fn new(settings: &Settings) -> Conn {
        Conn {
            accepted: Instant::now(),
            deadline: AtomicU64::new(millis(settings.header_read_timeout).max(1)),
            next_head: settings.idle_timeout,
            resets: Mutex::new((0, 0)),
            cut: Notify::new(),
            wakes_at: AtomicU64::new(0),
            sooner: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        millis(self.accepted.elapsed())
    }

    /// Returns when the connection must be closed: a head overdue, or resets over the limit.
    async fn watch(&self, header_read_timeout: Duration) {
        let overdue = async {
            loop {
                let (deadline, now) = (self.deadline.load(Relaxed), self.now());
                // Pingora's timer (a clock thread, 10 ms ticks), not Tokio's: an armed Tokio
                // timer per connection made every idle worker's park consult the timer wheel
                // (+2 % instructions a request, measured).
                let sleep = match deadline {
                    0 => millis(header_read_timeout),
                    d if now >= d => return,
                    d => d - now,
                };
                self.wakes_at.store(now + sleep, Relaxed);
                tokio::select! {
                    _ = fast_sleep(Duration::from_millis(sleep)) => {}
                    _ = self.sooner.notified() => {}
                }
            }
        };
        tokio::select! {
            _ = overdue => log::debug!("closing a connection whose request head is overdue"),
            _ = self.cut.notified() => {}
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

fn shard_of<K: std::hash::Hash>(k: &K) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(k) as usize % SHARDS
}

/// A request head has come on this task's connection: no deadline while it is served.
pub fn request_started() {
    let _ = CONN.try_with(|c| c.deadline.store(0, Relaxed));
}

/// The request is answered: the next head must have come within the idle time. The watch, not
/// Pingora's keep-alive, closes idle connections: Pingora keeps a reused connection without a
/// timeout (or, given one, arms a timer per request: +1.3 % instructions, measured).
pub fn request_finished() {
    let _ = CONN.try_with(|c| {
        let at = (c.now() + millis(c.next_head)).max(1);
        c.deadline.store(at, Relaxed);
        if at < c.wakes_at.load(Relaxed) {
            c.sooner.notify_one();
        }
    });
}

/// What the connection's watch learns of a finished request: the next head's deadline, and on
/// HTTP/2 a stream the client dropped (a reset, counted against its connection).
pub fn after_request(h2: &H2Conns, session: &pingora::proxy::Session, e: Option<&pingora::Error>) {
    request_finished();
    let dropped = e.is_some_and(|e| e.esource() == &pingora::ErrorSource::Downstream);
    if dropped && session.as_http2().is_some() {
        if let Some(peer) = session.client_addr().and_then(|a| a.as_inet()) {
            h2.stream_reset(*peer);
        }
    }
}

/// One address's connection, counted until dropped.
struct Counted<'a, A> {
    guarded: &'a Guarded<A>,
    ip: IpAddr,
}

impl<A> Drop for Counted<'_, A> {
    fn drop(&mut self) {
        let mut m = self.guarded.per_ip[shard_of(&self.ip)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// An HTTP/2 connection's entry, removed when dropped.
struct Registered {
    conns: Arc<H2Conns>,
    peer: SocketAddr,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conns.shard(&self.peer).remove(&self.peer);
    }
}

impl H2Conns {
    pub fn new(max_resets_per_second: u32) -> H2Conns {
        H2Conns {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            max_resets_per_second,
        }
    }

    fn shard(
        &self,
        peer: &SocketAddr,
    ) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Arc<Conn>>> {
        (self.shards[shard_of(peer)].lock()).unwrap_or_else(|p| p.into_inner())
    }

    fn register(self: &Arc<Self>, peer: SocketAddr, conn: Arc<Conn>) -> Registered {
        self.shard(&peer).insert(peer, conn);
        Registered {
            conns: self.clone(),
            peer,
        }
    }

    /// A client reset a stream of its HTTP/2 connection from `peer`: over the limit in one
    /// second, the connection is closed.
    pub fn stream_reset(&self, peer: SocketAddr) {
        let Some(conn) = self.shard(&peer).get(&peer).cloned() else {
            return;
        };
        let second = conn.now() / 1000;
        let mut r = conn.resets.lock().unwrap_or_else(|p| p.into_inner());
        if r.0 != second {
            *r = (second, 0);
        }
        r.1 += 1;
        if r.1 > self.max_resets_per_second {
            log::warn!(
                "closing the HTTP/2 connection from {peer}: more than {} stream resets a second",
                self.max_resets_per_second
            );
            conn.cut.notify_one();
        }
    }
}

impl<A> Guarded<A> {
    pub fn new(inner: A, settings: Settings, h2: Arc<H2Conns>) -> Guarded<A> {
        Guarded {
            inner: Arc::new(inner),
            slots: settings
                .max_connections
                .map(|n| Arc::new(Semaphore::new(n))),
            settings,
            waiting: AtomicUsize::new(0),
            per_ip: (0..SHARDS).map(|_| Mutex::default()).collect(),
            h2,
        }
    }

    pub fn inner(&self) -> &A {
        &self.inner
    }

    /// Counts the connection against its address's limit; `None` when over it.
    fn count_ip(&self, ip: Option<IpAddr>) -> Option<Option<Counted<'_, A>>> {
        let (Some(max), Some(ip)) = (self.settings.max_connections_per_ip, ip) else {
            return Some(None);
        };
        if self.settings.trusted_proxies.iter().any(|c| c.contains(ip)) {
            return Some(None);
        }
        let mut m = self.per_ip[shard_of(&ip)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Some(Counted { guarded: self, ip }))
    }

    /// A place under `max_connections`: at once, or after a wait of at most the head's time
    /// (as many may wait as may be served; more are closed at once). `None`: close.
    async fn slot(&self) -> Option<Option<OwnedSemaphorePermit>> {
        let Some(slots) = &self.slots else {
            return Some(None);
        };
        if let Ok(p) = slots.clone().try_acquire_owned() {
            return Some(Some(p));
        }
        let max = self.settings.max_connections.unwrap_or(0);
        if self.waiting.fetch_add(1, Relaxed) >= max {
            self.waiting.fetch_sub(1, Relaxed);
            return None;
        }
        let waited = tokio::time::timeout(
            self.settings.header_read_timeout,
            slots.clone().acquire_owned(),
        )
        .await;
        self.waiting.fetch_sub(1, Relaxed);
        Some(Some(waited.ok()?.ok()?))
    }

    /// Whether the connection speaks HTTP/2 (ALPN, or the h2c preface on plaintext).
    async fn is_h2(&self, stream: &mut Stream) -> bool {
        if stream.get_ssl_digest().is_some() {
            return matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        }
        if !self.settings.h2c {
            return false;
        }
        let mut buf = [0u8; H2_PREFACE.len()];
        matches!(stream.try_peek(&mut buf).await, Ok(true)) && buf == H2_PREFACE
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = (stream.get_socket_digest())
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        // Dropping the stream closes the connection.
        let _counted = self.count_ip(peer.map(|p| p.ip()))?;
        let _slot = self.slot().await?;
        let conn = Arc::new(Conn::new(&self.settings));
        // Served in a task of its own, so that its many wake-ups do not poll the watch too.
        let (me, watched, shutdown) = (self.clone(), conn.clone(), shutdown.clone());
        let serve = async move {
            let mut _registered = None;
            if me.is_h2(&mut stream).await {
                watched.deadline.store(0, Relaxed);
                _registered = peer.map(|p| me.h2.register(p, watched.clone()));
            }
            let mut next = Some(stream);
            while let Some(s) = next {
                next = me.inner.process_new(s, &shutdown).await;
            }
        };
        let mut serving = tokio::spawn(CONN.scope(conn.clone(), serve));
        tokio::select! {
            _ = &mut serving => {}
            _ = conn.watch(self.settings.header_read_timeout) => serving.abort(),
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
