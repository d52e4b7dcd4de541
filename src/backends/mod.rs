//! Backends: a route's pools of addresses, how one is picked, and what is known of their health.
//!
//! A pool is a named backend (or a route's `backend_url`): one or more URLs, each resolved to
//! addresses (`discovery`, again every `resolve_every`), a selection policy over them
//! (pingora-load-balancing's weighted round robin, random and Ketama hashing; least connections
//! and power of two choices here), active health checks (`health`), passive ejection after
//! consecutive failures, a circuit breaker (`breaker`) and a retry budget. A route splits its
//! traffic between pools by weight (`backend_weights`), optionally sticky to a caller.
//!
//! The request path reads only atomics and `ArcSwap` snapshots: no lock, no DNS.

pub mod breaker;
pub mod compile;
mod discovery;
mod route;
mod target;

use breaker::Breaker;
use discovery::Table;
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::prelude::HttpPeer;
use pingora::protocols::ALPN;
pub use route::Named;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
pub use target::{parse_target, Target};

/// The error type of a request whose backend has no address that can take it (503).
pub const NO_BACKEND: &str = "no backend available";

/// Milliseconds since the first call: the clock of ejections and breakers.
pub fn clock_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// What keys a sticky choice or a hash: the caller's agent id, its address, or a header.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum KeyFrom {
    #[default]
    Agent,
    ClientIp,
    Header(http::HeaderName),
}

impl KeyFrom {
    pub fn parse(s: &str) -> Result<KeyFrom, String> {
        match s {
            "agent" => Ok(KeyFrom::Agent),
            "client_ip" => Ok(KeyFrom::ClientIp),
            _ => match s.strip_prefix("header:") {
                Some(h) => http::HeaderName::try_from(h.trim())
                    .map(KeyFrom::Header)
                    .map_err(|_| format!("{h:?} is not a header name")),
                None => Err(format!(
                    "{s:?} is not a key; expected agent, client_ip or header:<name>"
                )),
            },
        }
    }
}

/// The caller, as far as choosing a backend needs it.
pub struct Who<'a> {
    pub agent: Option<&'a str>,
    pub ip: Option<IpAddr>,
    pub headers: &'a http::HeaderMap,
}

impl Who<'_> {
    /// The bytes `from` names; an anonymous caller is keyed by its address.
    pub fn key<'b>(&'b self, from: &KeyFrom, scratch: &'b mut [u8; 16]) -> &'b [u8] {
        let ip = |scratch: &'b mut [u8; 16]| -> &'b [u8] {
            match self.ip {
                Some(IpAddr::V4(v4)) => {
                    scratch[..4].copy_from_slice(&v4.octets());
                    &scratch[..4]
                }
                Some(IpAddr::V6(v6)) => {
                    *scratch = v6.octets();
                    &scratch[..]
                }
                None => b"",
            }
        };
        match from {
            KeyFrom::Agent => match self.agent {
                Some(a) => a.as_bytes(),
                None => ip(scratch),
            },
            KeyFrom::ClientIp => ip(scratch),
            KeyFrom::Header(h) => self.headers.get(h).map_or(b"", |v| v.as_bytes()),
        }
    }
}

/// A stable hash (the same in every instance, so a caller sticks across a fleet).
fn stable_hash(key: &[u8]) -> u64 {
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    key.hash(&mut h);
    h.finish()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Http1,
    H2,
    H2c,
    Auto,
}

/// One resolved address of a pool, with what passive health and least-connections need.
#[derive(Debug)]
pub struct Addr {
    pub addr: SocketAddr,
    /// `ip:port`, for the access log.
    pub label: String,
    /// The index of the URL it was resolved from.
    url: usize,
    /// The sum of the weights of the URLs that resolved to it.
    weight: usize,
    in_flight: AtomicUsize,
    failures: AtomicU32,
    /// `clock_ms` until which passive health leaves it out (0: not ejected).
    ejected_until: AtomicU64,
}

impl Addr {
    fn ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }
}

/// A request's hold on an address: counts it as in flight until dropped.
#[derive(Debug)]
pub struct Picked {
    pub pool: Arc<Pool>,
    pub addr: Arc<Addr>,
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.addr.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One URL of a pool as written.
#[derive(Debug)]
pub struct Url {
    pub host: String,
    pub port: u16,
    pub weight: usize,
    /// `Host` for this URL, when it differs from the pool's.
    pub host_header: Option<http::HeaderValue>,
}

/// How a pool picks among its addresses. Pingora's load balancer holds the membership (from
/// `discovery`) and the active health of every pool; the pick itself is made from our own
/// snapshot (nginx's smooth weighted order, or Pingora's Ketama continuum): Pingora's selection
/// iterator allocates a set and hashes each candidate twice per request (2,800 instructions, 3 %
/// of a proxied request, for Ketama; 3.6 % of throughput for weighted round robin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    RoundRobin,
    Random,
    LeastConn,
    P2c,
    Hash,
}

/// Retries: how many, on which statuses, within which budget.
#[derive(Debug)]
pub struct Retries {
    pub attempts: u32,
    pub on_status: Vec<u16>,
    /// Retries earned per request, in thousandths.
    ratio_milli: i64,
    /// Available retries in thousandths; each request adds `ratio_milli`, each retry takes 1000.
    tokens: AtomicI64,
}

/// At most this many retries in reserve (thousandths): bursts of failures cannot multiply load.
const RETRY_RESERVE: i64 = 10_000;

impl Retries {
    pub fn new(attempts: u32, on_status: Vec<u16>, ratio: f64) -> Retries {
        Retries {
            attempts,
            on_status,
            ratio_milli: (ratio * 1000.0).round() as i64,
            tokens: AtomicI64::new(RETRY_RESERVE),
        }
    }

    fn earn(&self) {
        let t = self.tokens.load(Ordering::Relaxed);
        if t < RETRY_RESERVE {
            self.tokens.fetch_add(self.ratio_milli, Ordering::Relaxed);
        }
    }

    /// Takes one retry from the budget.
    pub fn take(&self) -> bool {
        self.tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                (t >= 1000).then_some(t - 1000)
            })
            .is_ok()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Passive {
    pub failures: u32,
    pub cool_off: Duration,
}

#[derive(Debug, Clone)]
pub struct ActiveHealth {
    pub interval: Duration,
}

pub struct Pool {
    pub name: String,
    pub urls: Vec<Url>,
    pub tls: bool,
    pub sni: String,
    /// The first URL's authority, sent as `Host` (each URL's own when they differ).
    pub host_header: http::HeaderValue,
    /// The URLs' path, prepended to forwarded paths.
    pub path_prefix: String,
    pub protocol: Protocol,
    pub max_h2_streams: usize,
    pub verify: bool,
    /// `tls.ca_file`: the roots a backend's certificate is verified with.
    pub ca: Option<Arc<[pingora::utils::tls::WrappedX509]>>,
    pub connect_timeout: Option<Duration>,
    pub timeout: Option<Duration>,
    pub idle_timeout: Duration,
    pub resolve_every: Duration,
    pub hash_by: KeyFrom,
    pub active: Option<ActiveHealth>,
    pub passive: Option<Passive>,
    pub retries: Retries,
    pub breaker: Option<Breaker>,
    /// Addresses ejected by passive health so far, for the metrics.
    ejections: AtomicU64,
    policy: Policy,
    balancer: LoadBalancer<RoundRobin>,
    table: Arc<Table>,
    /// Weighted round robin's position in the ring.
    turn: AtomicUsize,
    /// Identifies the definition, so that a reload keeps the pool (and its health) when unchanged.
    pub fingerprint: String,
    /// `clock_ms` of the next re-resolution and health check (background service only).
    next_resolve: AtomicU64,
    next_check: AtomicU64,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("name", &self.name).finish()
    }
}

const UNRESOLVED_RETRY: Duration = Duration::from_secs(1);

/// Bounds the walk over a weighted ring looking for a usable address.
const MAX_ITERATIONS: usize = 256;

impl Pool {
    /// Resolves the URLs again and rebuilds the selection when the addresses changed.
    pub async fn update(&self) {
        if let Err(e) = self.balancer.update().await {
            log::warn!("backend {}: {e}", self.name);
        }
    }

    /// Whether its hosts were resolved (at least once, to at least one address).
    pub fn resolved(&self) -> bool {
        !self.table.load().is_empty()
    }

    /// Whether addresses are picked by a hash of the caller.
    pub fn hashes(&self) -> bool {
        self.policy == Policy::Hash
    }

    /// Whether some address could take a request now.
    pub fn usable(&self) -> bool {
        let now = clock_ms();
        if self.breaker.as_ref().is_some_and(|b| b.is_open(now)) {
            return false;
        }
        let table = self.table.load();
        table.addrs.iter().any(|a| self.ready(a, now))
    }

    /// Not ejected, and healthy when actively checked (pingora's health registry; unchecked
    /// addresses are not looked up).
    fn ready(&self, a: &Addr, now: u64) -> bool {
        !a.ejected(now)
            && (self.active.is_none() || self.balancer.backends().ready(&discovery::backend_of(a)))
    }

    /// Picks an address for a request: healthy, not ejected, not tried before by it.
    pub fn select(self: &Arc<Self>, key: &[u8], tried: &[SocketAddr]) -> Option<Picked> {
        let now = clock_ms();
        if let Some(b) = &self.breaker {
            if !b.allow(now) {
                return None;
            }
        }
        let table = self.table.load();
        let usable = |a: &Addr| !tried.contains(&a.addr) && self.ready(a, now);
        let chosen = match self.policy {
            Policy::RoundRobin | Policy::Random => {
                let ring = &table.ring;
                let start = match self.policy {
                    Policy::Random => crate::random::u64() as usize,
                    _ => self.turn.fetch_add(1, Ordering::Relaxed),
                };
                (0..ring.len())
                    .map(|i| &table.addrs[ring[(start + i) % ring.len()] as usize])
                    .find(|a| usable(a))
                    .cloned()
            }
            Policy::Hash => table.continuum.as_ref().and_then(|c| {
                c.node_iter(key)
                    .take(MAX_ITERATIONS)
                    .filter_map(|addr| table.find(addr))
                    .find(|a| usable(a))
                    .cloned()
            }),
            Policy::LeastConn => table
                .addrs
                .iter()
                .filter(|a| usable(a))
                // Fewest requests in flight for its weight.
                .min_by_key(|a| a.in_flight.load(Ordering::Relaxed) * 1000 / a.weight.max(1))
                .cloned(),
            Policy::P2c => {
                // Two addresses at random (unweighted), the less busy of them; no allocation.
                let n = table.addrs.len();
                let busy = |x: &Arc<Addr>| x.in_flight.load(Ordering::Relaxed);
                let r = crate::random::u64() as usize;
                let (i, j) = if n < 2 {
                    (0, 0)
                } else {
                    let i = r % n;
                    (i, (i + 1 + (r >> 32) % (n - 1)) % n)
                };
                match (table.addrs.get(i), table.addrs.get(j)) {
                    (Some(a), Some(b)) if usable(a) && usable(b) => {
                        Some(if busy(b) < busy(a) { b } else { a }.clone())
                    }
                    (Some(a), _) if usable(a) => Some(a.clone()),
                    (_, Some(b)) if usable(b) => Some(b.clone()),
                    // Both drawn are out: the least busy of those left.
                    _ => table
                        .addrs
                        .iter()
                        .filter(|a| usable(a))
                        .min_by_key(|a| busy(a))
                        .cloned(),
                }
            }
        }?;
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Picked {
            pool: self.clone(),
            addr: chosen,
        })
    }

    /// The address `label` (`ip:port`), whatever its health: an MCP session lives there alone.
    pub fn pick(self: &Arc<Self>, label: &str) -> Option<Picked> {
        let addr: SocketAddr = label.parse().ok()?;
        let chosen = self.table.load().find(&addr)?.clone();
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(Picked {
            pool: self.clone(),
            addr: chosen,
        })
    }

    /// The connection options for a request to `addr`.
    pub fn peer(&self, addr: &Addr, connect_timeout: Duration, read_timeout: Duration) -> HttpPeer {
        let mut peer = HttpPeer::new(addr.addr, self.tls, self.sni.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(connect_timeout);
        o.total_connection_timeout = Some(connect_timeout);
        o.read_timeout = Some(read_timeout);
        o.idle_timeout = Some(self.idle_timeout);
        o.verify_cert = self.verify;
        o.verify_hostname = self.verify;
        o.ca = self.ca.clone();
        match (self.protocol, self.tls) {
            (Protocol::Http1, _) => {}
            (Protocol::H2 | Protocol::H2c, _) => {
                o.alpn = ALPN::H2;
                o.max_h2_streams = self.max_h2_streams;
            }
            (Protocol::Auto, true) => {
                o.alpn = ALPN::H2H1;
                o.max_h2_streams = self.max_h2_streams;
            }
            (Protocol::Auto, false) => {}
        }
        peer
    }

    /// `Host` for a request to `addr`, when it is not the pool's.
    pub fn host_for(&self, addr: &Addr) -> Option<&http::HeaderValue> {
        self.urls.get(addr.url).and_then(|u| u.host_header.as_ref())
    }

    /// A request was made: it earns the retry budget its share.
    pub fn count_request(&self) {
        self.retries.earn();
    }

    /// How an exchange with `addr` went: failures eject it (passive health) and count towards
    /// the circuit breaker.
    pub fn report(&self, addr: &Addr, ok: bool) {
        let now = clock_ms();
        if let Some(b) = &self.breaker {
            b.record(ok, now, &self.name);
        }
        let Some(p) = self.passive else { return };
        if ok {
            if addr.failures.load(Ordering::Relaxed) != 0 {
                addr.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let n = addr.failures.fetch_add(1, Ordering::Relaxed) + 1;
        // A pool's only address is never left out (as in nginx): there is nowhere else to go,
        // and it would turn a blip into `cool_off` of 503s.
        if n >= p.failures && self.table.load().len() > 1 {
            addr.failures.store(0, Ordering::Relaxed);
            addr.ejected_until
                .store(now + p.cool_off.as_millis() as u64, Ordering::Relaxed);
            self.ejections.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "backend {} address {}: {n} failures in a row, left out for {:?}",
                self.name,
                addr.label,
                p.cool_off
            );
        }
    }

    /// Runs the active health check when it is due, and re-resolves when that is due.
    pub async fn maintain(&self) {
        let now = clock_ms();
        if now >= self.next_resolve.load(Ordering::Relaxed) {
            self.update().await;
            // A name that does not resolve yet is tried again every second.
            let every = if self.resolved() {
                self.resolve_every
            } else {
                UNRESOLVED_RETRY
            };
            self.next_resolve
                .store(clock_ms() + every.as_millis() as u64, Ordering::Relaxed);
        }
        if let Some(a) = &self.active {
            if now >= self.next_check.load(Ordering::Relaxed) {
                self.next_check
                    .store(now + a.interval.as_millis() as u64, Ordering::Relaxed);
                self.balancer.backends().run_health_check(true).await;
            }
        }
    }
}

impl Pool {
    /// Passive ejections and circuit-breaker openings so far.
    pub fn events(&self) -> (u64, u64) {
        (
            self.ejections.load(Ordering::Relaxed),
            self.breaker
                .as_ref()
                .map_or(0, |b| b.opens.load(Ordering::Relaxed)),
        )
    }

    /// Each address (`ip:port`) and whether it can take requests now, for `backend_up`.
    pub fn health(&self) -> Vec<(String, bool)> {
        let now = clock_ms();
        let table = self.table.load();
        table
            .addrs
            .iter()
            .map(|a| (a.label.clone(), self.ready(a, now)))
            .collect()
    }
}

/// A route's pools and how traffic is split between them.
#[derive(Debug)]
pub struct RouteBackends {
    pub pools: Vec<(Arc<Pool>, u64)>,
    total: u64,
    pub sticky: Option<KeyFrom>,
}

impl RouteBackends {
    pub fn new(pools: Vec<(Arc<Pool>, u64)>, sticky: Option<KeyFrom>) -> RouteBackends {
        let total = pools.iter().map(|(_, w)| w).sum();
        RouteBackends {
            pools,
            total,
            sticky,
        }
    }

    /// Where the route sends requests, for `clawgate check`.
    pub fn describe(&self) -> String {
        let one = |p: &Pool| {
            let scheme = if p.tls { "https" } else { "http" };
            let urls: Vec<String> = p
                .urls
                .iter()
                .map(|u| {
                    let host = if u.host.contains(':') {
                        format!("[{}]", u.host)
                    } else {
                        u.host.clone()
                    };
                    format!("{scheme}://{host}:{}{}", u.port, p.path_prefix)
                })
                .collect();
            urls.join(", ")
        };
        match &self.pools[..] {
            [(p, _)] => one(p),
            split => split
                .iter()
                .map(|(p, w)| format!("{} {w}/{} ({})", p.name, self.total, one(p)))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    /// The path of the pools' URLs (one for all of them).
    pub fn path_prefix(&self) -> &str {
        self.pools
            .first()
            .map_or("", |(p, _)| p.path_prefix.as_str())
    }

    /// The pool for a request: by weight (by the caller's key when sticky), among the pools that
    /// can take it; when none can, the first chosen (its answer will be a 503).
    pub fn choose(&self, who: &Who) -> &Arc<Pool> {
        if self.pools.len() == 1 {
            return &self.pools[0].0;
        }
        let mut scratch = [0u8; 16];
        let draw = match &self.sticky {
            Some(from) => stable_hash(who.key(from, &mut scratch)),
            None => crate::random::u64(),
        };
        let pick = |total: u64, usable: &dyn Fn(&Pool) -> bool| -> Option<&Arc<Pool>> {
            if total == 0 {
                return None;
            }
            let mut at = draw % total;
            for (pool, w) in &self.pools {
                if !usable(pool) {
                    continue;
                }
                if at < *w {
                    return Some(pool);
                }
                at -= w;
            }
            None
        };
        let first = pick(self.total, &|_| true).unwrap_or(&self.pools[0].0);
        if first.usable() {
            return first;
        }
        // Shift the weight of the pools that cannot take requests onto those that can.
        let left: u64 = self
            .pools
            .iter()
            .filter(|(p, _)| p.usable())
            .map(|(_, w)| w)
            .sum();
        pick(left, &|p| p.usable()).unwrap_or(first)
    }
}
