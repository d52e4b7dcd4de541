//! A pool's addresses: its URLs' hosts resolved (asynchronously, never Pingora's panicking
//! lookup), again every `resolve_every`; a host that stops resolving keeps its last addresses.

use super::{Addr, Url};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::lb::discovery::ServiceDiscovery;
use pingora::lb::Backend;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The resolved addresses, sorted, with their state, and the order weighted round robin takes
/// them in.
#[derive(Default)]
pub struct Table(ArcSwap<Snapshot>);

#[derive(Default)]
pub struct Snapshot {
    pub addrs: Vec<Arc<Addr>>,
    /// Indices into `addrs`, each as often as its weight (reduced), interleaved smoothly.
    pub ring: Vec<u32>,
    /// The Ketama continuum of the addresses by weight (Pingora's consistent hashing).
    pub continuum: Option<pingora_ketama::Continuum>,
}

impl Table {
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.0.load()
    }
}

impl Snapshot {
    pub fn find(&self, addr: &SocketAddr) -> Option<&Arc<Addr>> {
        self.addrs
            .binary_search_by(|a| a.addr.cmp(addr))
            .ok()
            .map(|i| &self.addrs[i])
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    fn new(addrs: Vec<Arc<Addr>>, hashing: bool) -> Snapshot {
        let ring = smooth_ring(&addrs.iter().map(|a| a.weight).collect::<Vec<_>>());
        let continuum = hashing.then(|| {
            let buckets: Vec<pingora_ketama::Bucket> = addrs
                .iter()
                .map(|a| pingora_ketama::Bucket::new(a.addr, a.weight as u32))
                .collect();
            pingora_ketama::Continuum::new(&buckets)
        });
        Snapshot {
            addrs,
            ring,
            continuum,
        }
    }
}

/// nginx's smooth weighted round robin, unrolled over one cycle: weights 5, 1, 1 give
/// a a b a c a a rather than a a a a a b c.
fn smooth_ring(weights: &[usize]) -> Vec<u32> {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = weights.iter().fold(0, |g, w| gcd(g, *w)).max(1);
    let w: Vec<i64> = weights.iter().map(|w| (w / g) as i64).collect();
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut ring = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, wi) in current.iter_mut().zip(&w) {
            *c += wi;
        }
        let Some((best, _)) = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, -(*i as i64)))
        else {
            break;
        };
        current[best] -= total;
        ring.push(best as u32);
    }
    ring
}

/// The balancer's view of an address (equal to the one discovery gave it).
pub fn backend_of(a: &Addr) -> Backend {
    Backend {
        addr: pingora::protocols::l4::socket::SocketAddr::Inet(a.addr),
        weight: a.weight,
        ext: Default::default(),
    }
}

pub struct Resolver {
    pub name: String,
    /// Host, port, weight of each URL.
    pub urls: Vec<(String, u16, usize)>,
    pub table: Arc<Table>,
    /// Build the Ketama continuum (for `load_balancing: hash`).
    pub hashing: bool,
    /// The last addresses each URL resolved to, and whether its last lookup failed (a failure
    /// is logged when it starts, not at every retry).
    last: Mutex<Vec<(Vec<SocketAddr>, bool)>>,
}

impl Resolver {
    pub fn new(name: &str, urls: &[Url], table: Arc<Table>, hashing: bool) -> Resolver {
        Resolver {
            name: name.to_string(),
            urls: urls
                .iter()
                .map(|u| (u.host.clone(), u.port, u.weight))
                .collect(),
            table,
            hashing,
            last: Mutex::new(vec![(Vec::new(), false); urls.len()]),
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(found)) => {
                let mut v: Vec<SocketAddr> = found.collect();
                v.sort();
                v.dedup();
                if v.is_empty() {
                    Err("no address".into())
                } else {
                    Ok(v)
                }
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
        }
    }
}

#[async_trait]
impl ServiceDiscovery for Resolver {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let mut found = Vec::with_capacity(self.urls.len());
        for (host, port, _) in &self.urls {
            found.push(self.resolve(host, *port).await);
        }
        // address → (weight, url index)
        let mut merged: std::collections::BTreeMap<SocketAddr, (usize, usize)> = Default::default();
        {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            for (i, result) in found.into_iter().enumerate() {
                let (host, _, weight) = &self.urls[i];
                let (addrs, failing) = &mut last[i];
                match result {
                    Ok(found) => {
                        if *failing {
                            log::info!("backend {}: {host} resolves again", self.name);
                        }
                        *addrs = found;
                        *failing = false;
                    }
                    Err(_) if *failing => {}
                    Err(e) if addrs.is_empty() => {
                        *failing = true;
                        log::warn!("backend {}: cannot resolve {host}: {e}", self.name);
                    }
                    Err(e) => {
                        *failing = true;
                        log::warn!(
                            "backend {}: cannot resolve {host} ({e}); keeping its last addresses",
                            self.name
                        );
                    }
                }
                for a in &last[i].0 {
                    merged.entry(*a).or_insert((0, i)).0 += weight;
                }
            }
        }
        let old = self.table.load();
        let addrs: Vec<Arc<Addr>> = merged
            .iter()
            .map(|(addr, (weight, url))| match old.find(addr) {
                Some(a) if a.weight == *weight && a.url == *url => a.clone(),
                _ => Arc::new(Addr {
                    addr: *addr,
                    label: addr.to_string(),
                    url: *url,
                    weight: *weight,
                    in_flight: AtomicUsize::new(0),
                    failures: AtomicU32::new(0),
                    ejected_until: AtomicU64::new(0),
                }),
            })
            .collect();
        let set = addrs.iter().map(|a| backend_of(a)).collect();
        self.table
            .0
            .store(Arc::new(Snapshot::new(addrs, self.hashing)));
        Ok((set, HashMap::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::smooth_ring;

    #[test]
    fn rings_interleave_by_weight() {
        assert_eq!(smooth_ring(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_ring(&[90, 10]).len(), 10);
        assert_eq!(smooth_ring(&[2, 2, 2]), vec![0, 1, 2]);
        assert_eq!(smooth_ring(&[1]), vec![0]);
        assert!(smooth_ring(&[]).is_empty());
    }
}
