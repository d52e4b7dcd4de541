//! From the file's `backends` (and routes' `backend_url`) to pools.

use super::discovery::{Resolver, Table};
use super::{parse_target, Target};
use super::{ActiveHealth, Breaker, KeyFrom, Passive, Policy, Pool, Protocol, Retries, Url};
use crate::at;
use crate::config::locate::Seg;
use crate::config::schema::{self, Balance};
use crate::config::Problem;
use pingora::lb::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora::lb::{Backends, LoadBalancer};
use pingora::utils::tls::{parse_x509, WrappedX509};
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

const DEFAULT_IDLE: Duration = Duration::from_secs(60);
const DEFAULT_RESOLVE_EVERY: Duration = Duration::from_secs(30);
const DEFAULT_H2_STREAMS: usize = 100;

fn problem(path: &[Seg], field: &str, message: impl Into<String>) -> Problem {
    let mut p = path.to_vec();
    p.extend(at!(field));
    Problem::new(p, message)
}

/// A pool of one URL with every default: a route's `backend_url`.
pub fn from_url(name: &str, url: &str) -> Result<Pool, String> {
    let t = parse_target(url)?;
    let urls = vec![Url {
        host: t.host,
        port: t.port,
        weight: 1,
        host_header: None,
    }];
    build(Spec {
        name: name.to_string(),
        fingerprint: format!("url {url}"),
        urls,
        tls: t.tls,
        host_header: Some(t.host_header),
        path_prefix: t.path_prefix,
        ..Spec::default()
    })
    .map_err(|(_, m)| m)
}

/// A named backend. The steps run in this order, so a backend wrong in two ways is reported on
/// the same field as ever.
pub fn from_backend(name: &str, b: &schema::Backend) -> Result<Pool, Problem> {
    let at = at!("backends", name);
    let (urls, first) = targets(addresses(name, b)?, &at)?;
    let hash_by = hash_by(b, &at)?;
    let (protocol, max_h2_streams) = protocol(b, &first, &at)?;
    let tls = tls(name, b, &first, &at)?;
    let active = match &b.health_check {
        Some(h) => Some(active_check(h, &at)?),
        None => None,
    };
    let passive = passive(name, b, &at)?;
    let retries = retries(name, b)?;
    let breaker = b.circuit_breaker.as_ref().map(|c| {
        Breaker::new(
            c.failures.map_or(5, |f| f.0.min(u32::MAX as u64) as u32),
            c.window.map_or(Duration::from_secs(10), |d| d.0),
            c.open_for.map_or(Duration::from_secs(30), |d| d.0),
        )
    });
    build(Spec {
        name: name.to_string(),
        fingerprint: format!("{b:?}"),
        urls,
        tls: first.tls,
        sni: tls.sni,
        host_header: Some(first.host_header.clone()),
        path_prefix: first.path_prefix.clone(),
        balance: b.load_balancing.unwrap_or(Balance::RoundRobin),
        hash_by,
        protocol,
        max_h2_streams,
        verify: tls.verify,
        ca: tls.ca,
        connect_timeout: positive(&at, "connect_timeout", dur(&b.connect_timeout))?,
        timeout: positive(&at, "timeout", dur(&b.timeout))?,
        idle_timeout: dur(&b.idle_timeout)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_IDLE),
        resolve_every: positive(&at, "resolve_every", dur(&b.resolve_every))?
            .unwrap_or(DEFAULT_RESOLVE_EVERY),
        active,
        passive,
        retries,
        breaker,
        check: b
            .health_check
            .as_ref()
            .map(|h| (h, first.authority.clone())),
    })
    .map_err(|(field, m)| problem(&at, field, m))
}

/// A URL as written, its weight, and where it was written.
type Listed = (String, usize, Vec<Seg>);

/// `url` or `urls`, exactly one of them and not empty.
fn addresses(name: &str, b: &schema::Backend) -> Result<Vec<Listed>, Problem> {
    let at = at!("backends", name);
    Ok(match (&b.url, &b.urls) {
        (Some(_), Some(_)) => return Err(Problem::new(at, "set either url or urls, not both")),
        (None, None) => return Err(Problem::new(at, "needs url or urls")),
        (Some(u), None) => vec![(u.0.clone(), 1, at!("backends", name, "url"))],
        (None, Some(list)) if list.is_empty() => {
            return Err(problem(&at, "urls", "is empty"));
        }
        (None, Some(list)) => list
            .iter()
            .enumerate()
            .map(|(i, a)| match a {
                schema::Address::Url(u) => (u.0.clone(), 1, at!("backends", name, "urls", i)),
                schema::Address::Weighted { url, weight } => (
                    url.0.clone(),
                    weight.0 as usize,
                    at!("backends", name, "urls", i),
                ),
            })
            .collect(),
    })
}

/// The pool's URLs, and the first target: the others must share its scheme and path, and only
/// those of another authority carry a `Host` of their own.
fn targets(list: Vec<Listed>, at: &[Seg]) -> Result<(Vec<Url>, Target), Problem> {
    let mut urls = Vec::new();
    let mut first: Option<Target> = None;
    for (url, weight, path) in list {
        let t = parse_target(&url).map_err(|m| Problem::new(path.clone(), m))?;
        if weight == 0 || weight > 1000 {
            return Err(Problem::new(path, "weight must be between 1 and 1000"));
        }
        if let Some(f) = &first {
            if f.tls != t.tls || f.path_prefix != t.path_prefix {
                return Err(Problem::new(
                    path,
                    format!("{url:?}: every URL of a backend must have the same scheme and path"),
                ));
            }
        }
        let host_header = match &first {
            Some(f) if f.authority != t.authority => Some(t.host_header.clone()),
            _ => None,
        };
        urls.push(Url {
            host: t.host.clone(),
            port: t.port,
            weight,
            host_header,
        });
        if first.is_none() {
            first = Some(t);
        }
    }
    match first {
        Some(first) => Ok((urls, first)),
        None => Err(problem(at, "urls", "is empty")),
    }
}

fn dur(d: &Option<crate::config::values::Dur>) -> Option<Duration> {
    d.map(|d| d.0)
}

fn positive(at: &[Seg], field: &str, d: Option<Duration>) -> Result<Option<Duration>, Problem> {
    match d {
        Some(d) if d.is_zero() => Err(problem(at, field, "must be longer than 0")),
        d => Ok(d),
    }
}

fn hash_by(b: &schema::Backend, at: &[Seg]) -> Result<KeyFrom, Problem> {
    let hash_by = match &b.hash_by {
        Some(h) => KeyFrom::parse(h).map_err(|m| problem(at, "hash_by", m))?,
        None => KeyFrom::Agent,
    };
    if b.hash_by.is_some() && b.load_balancing != Some(Balance::Hash) {
        return Err(problem(
            at,
            "hash_by",
            "only applies to load_balancing: hash",
        ));
    }
    Ok(hash_by)
}

/// The protocol, which must suit the URLs' scheme, and the HTTP/2 streams per connection.
fn protocol(b: &schema::Backend, first: &Target, at: &[Seg]) -> Result<(Protocol, usize), Problem> {
    let protocol = match b.protocol {
        None | Some(schema::Protocol::Http1) => Protocol::Http1,
        Some(schema::Protocol::H2) => Protocol::H2,
        Some(schema::Protocol::H2c) => Protocol::H2c,
        Some(schema::Protocol::Auto) => Protocol::Auto,
    };
    if protocol == Protocol::H2c && first.tls {
        return Err(problem(
            at,
            "protocol",
            "h2c is HTTP/2 without TLS; use h2 (or auto) with https URLs",
        ));
    }
    if protocol == Protocol::H2 && !first.tls {
        return Err(problem(
            at,
            "protocol",
            "h2 needs https URLs; use h2c for HTTP/2 without TLS",
        ));
    }
    let max_h2_streams = match b.max_h2_streams {
        Some(c) if c.0 == 0 || c.0 > 10_000 => {
            return Err(problem(at, "max_h2_streams", "must be between 1 and 10000"))
        }
        Some(c) => c.0 as usize,
        None => DEFAULT_H2_STREAMS,
    };
    Ok((protocol, max_h2_streams))
}

/// `tls` of a backend: how its certificate is checked.
struct Tls {
    sni: Option<String>,
    verify: bool,
    ca: Option<Arc<[WrappedX509]>>,
}

fn tls(name: &str, b: &schema::Backend, first: &Target, at: &[Seg]) -> Result<Tls, Problem> {
    let Some(tls) = &b.tls else {
        return Ok(Tls {
            sni: None,
            verify: true,
            ca: None,
        });
    };
    if !first.tls {
        return Err(problem(at, "tls", "applies to https URLs only"));
    }
    let ca = match &tls.ca_file {
        Some(f) => {
            Some(load_ca(f).map_err(|m| Problem::new(at!("backends", name, "tls", "ca_file"), m))?)
        }
        None => None,
    };
    Ok(Tls {
        sni: tls.sni.as_ref().map(|s| s.0.clone()),
        verify: tls.verify.is_none_or(|v| v.0),
        ca,
    })
}

/// Passive health is on unless turned off, with the defaults for what is not set.
fn passive(name: &str, b: &schema::Backend, at: &[Seg]) -> Result<Option<Passive>, Problem> {
    let p = match &b.passive_health {
        Some(p) if !p.enabled.0 => return Ok(None),
        Some(p) => p,
        None => return Ok(Some(DEFAULT_PASSIVE)),
    };
    let failures = match p.failures {
        Some(c) if c.0 == 0 => {
            return Err(Problem::new(
                at!("backends", name, "passive_health", "failures"),
                "must be at least 1",
            ))
        }
        Some(c) => c.0.min(u32::MAX as u64) as u32,
        None => DEFAULT_PASSIVE.failures,
    };
    Ok(Some(Passive {
        failures,
        cool_off: positive(at, "passive_health", dur(&p.cool_off))?
            .unwrap_or(DEFAULT_PASSIVE.cool_off),
    }))
}

fn retries(name: &str, b: &schema::Backend) -> Result<Retries, Problem> {
    let Some(r) = &b.retries else {
        return Ok(Retries::new(DEFAULT_ATTEMPTS, Vec::new(), DEFAULT_BUDGET));
    };
    let attempts = r.attempts.map_or(DEFAULT_ATTEMPTS, |c| c.0.min(10) as u32);
    let mut on_status = Vec::new();
    for (i, s) in r.on_status.iter().enumerate() {
        if !(500..=599).contains(&s.0) {
            return Err(Problem::new(
                at!("backends", name, "retries", "on_status", i),
                "only 5xx statuses can be retried",
            ));
        }
        on_status.push(s.0 as u16);
    }
    let budget = match &r.budget {
        Some(b) => parse_share(b)
            .map_err(|m| Problem::new(at!("backends", name, "retries", "budget"), m))?,
        None => DEFAULT_BUDGET,
    };
    Ok(Retries::new(attempts, on_status, budget))
}

const DEFAULT_PASSIVE: Passive = Passive {
    failures: 3,
    cool_off: Duration::from_secs(10),
};
const DEFAULT_ATTEMPTS: u32 = 1;
const DEFAULT_BUDGET: f64 = 0.2;

/// The certificates of a PEM file, to verify a backend's certificate with (instead of the
/// system's roots). Each is parsed here first: Pingora's wrapper panics on one it cannot parse.
fn load_ca(path: &str) -> Result<Arc<[WrappedX509]>, String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let data =
        std::fs::read(path).map_err(|e| format!("{path}: {}", crate::text::io_reason(&e)))?;
    let mut certs = Vec::new();
    for der in CertificateDer::pem_slice_iter(&data) {
        let der = der.map_err(|e| format!("{path}: not a PEM certificate ({e})"))?;
        x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("{path}: a certificate that cannot be read ({e})"))?;
        certs.push(WrappedX509::new(der.to_vec(), parse_x509));
    }
    if certs.is_empty() {
        return Err(format!("{path}: holds no PEM certificate"));
    }
    Ok(Arc::from(certs))
}

/// `"20%"` or `0.2`.
fn parse_share(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => t.parse::<f64>(),
    };
    match v {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share; expected e.g. \"20%\"")),
    }
}

fn active_check(h: &schema::HealthCheck, at: &[Seg]) -> Result<ActiveHealth, Problem> {
    let mut path = at.to_vec();
    path.extend(at!("health_check"));
    match h.kind.as_deref() {
        None | Some("http") | Some("tcp") => {}
        Some(other) => {
            return Err(problem(
                &path,
                "type",
                format!("{other:?} is not a check; expected http or tcp"),
            ))
        }
    }
    if let Some(p) = &h.path {
        if !p.starts_with('/') {
            return Err(problem(
                &path,
                "path",
                format!("{:?} must start with \"/\"", p.0),
            ));
        }
    }
    if let Some(s) = h.expected_status {
        if !(100..=599).contains(&s.0) {
            return Err(problem(&path, "expected_status", "is not an HTTP status"));
        }
    }
    let interval = h.interval.map_or(Duration::from_secs(5), |d| d.0);
    if interval < Duration::from_millis(100) {
        return Err(problem(&path, "interval", "must be at least 100ms"));
    }
    Ok(ActiveHealth { interval })
}

/// A pool as compiled from the file, before its balancer and tables exist; `Default` holds the
/// defaults of a backend that sets nothing (a route's `backend_url`).
struct Spec<'a> {
    name: String,
    fingerprint: String,
    urls: Vec<Url>,
    tls: bool,
    sni: Option<String>,
    host_header: Option<http::HeaderValue>,
    path_prefix: String,
    balance: Balance,
    hash_by: KeyFrom,
    protocol: Protocol,
    max_h2_streams: usize,
    verify: bool,
    ca: Option<Arc<[WrappedX509]>>,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    idle_timeout: Duration,
    resolve_every: Duration,
    active: Option<ActiveHealth>,
    passive: Option<Passive>,
    retries: Retries,
    breaker: Option<Breaker>,
    /// The health check as written, and the `Host` it sends.
    check: Option<(&'a schema::HealthCheck, String)>,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            name: String::new(),
            fingerprint: String::new(),
            urls: Vec::new(),
            tls: false,
            sni: None,
            host_header: None,
            path_prefix: String::new(),
            balance: Balance::default(),
            hash_by: KeyFrom::default(),
            protocol: Protocol::default(),
            max_h2_streams: DEFAULT_H2_STREAMS,
            verify: true,
            ca: None,
            connect_timeout: None,
            timeout: None,
            idle_timeout: DEFAULT_IDLE,
            resolve_every: DEFAULT_RESOLVE_EVERY,
            active: None,
            passive: Some(DEFAULT_PASSIVE),
            retries: Retries::new(DEFAULT_ATTEMPTS, Vec::new(), DEFAULT_BUDGET),
            breaker: None,
            check: None,
        }
    }
}

fn health_check(
    h: &schema::HealthCheck,
    host: &str,
    tls: bool,
    sni: &str,
    protocol: Protocol,
) -> Result<Box<dyn pingora::lb::health_check::HealthCheck + Send + Sync>, (&'static str, String)> {
    let timeout = h.timeout.map_or(Duration::from_secs(1), |d| d.0);
    let up = h.healthy_after.map_or(1, |c| c.0.max(1) as usize);
    let down = h.unhealthy_after.map_or(1, |c| c.0.max(1) as usize);
    if h.kind.as_deref() == Some("tcp") {
        let mut c = if tls {
            TcpHealthCheck::new_tls(sni)
        } else {
            TcpHealthCheck::new()
        };
        c.peer_template.options.connection_timeout = Some(timeout);
        c.consecutive_success = up;
        c.consecutive_failure = down;
        return Ok(c);
    }
    let mut c = HttpHealthCheck::new(host, tls);
    c.peer_template.sni = sni.to_string();
    // Checks speak the backend's protocol: an h2c gRPC server may not answer HTTP/1.1.
    if matches!(protocol, Protocol::H2 | Protocol::H2c) {
        c.peer_template.options.alpn = pingora::protocols::ALPN::H2;
    }
    c.peer_template.options.connection_timeout = Some(timeout);
    c.peer_template.options.read_timeout = Some(timeout);
    c.consecutive_success = up;
    c.consecutive_failure = down;
    let path = h.path.as_ref().map_or("/", |p| p.0.as_str());
    let uri: http::Uri = path
        .parse()
        .map_err(|_| ("health_check", format!("{path:?} is not a path")))?;
    c.req.set_uri(uri);
    let expected = h.expected_status.map_or(200, |s| s.0 as u16);
    c.validator = Some(Box::new(move |resp| {
        if resp.status.as_u16() == expected {
            Ok(())
        } else {
            pingora::Error::e_explain(
                pingora::ErrorType::Custom("health check"),
                format!("status {} instead of {expected}", resp.status.as_u16()),
            )
        }
    }));
    Ok(Box::new(c))
}

fn build(spec: Spec) -> Result<Pool, (&'static str, String)> {
    let table = Arc::new(Table::default());
    let sni = spec.sni.clone().unwrap_or_else(|| {
        if spec.tls {
            spec.urls
                .first()
                .map(|u| u.host.clone())
                .unwrap_or_default()
        } else {
            String::new()
        }
    });
    let hashing = spec.balance == Balance::Hash;
    let discovery = Box::new(Resolver::new(
        &spec.name,
        &spec.urls,
        table.clone(),
        hashing,
    ));
    let mut backends = Backends::new(discovery);
    if let Some((h, host)) = &spec.check {
        backends.set_health_check(health_check(h, host, spec.tls, &sni, spec.protocol)?);
    }
    let policy = match spec.balance {
        Balance::RoundRobin => Policy::RoundRobin,
        Balance::Random => Policy::Random,
        Balance::Hash => Policy::Hash,
        Balance::LeastConn => Policy::LeastConn,
        Balance::P2c => Policy::P2c,
    };
    Ok(Pool {
        name: spec.name,
        urls: spec.urls,
        tls: spec.tls,
        sni,
        host_header: spec
            .host_header
            .unwrap_or(http::HeaderValue::from_static("")),
        path_prefix: spec.path_prefix,
        protocol: spec.protocol,
        max_h2_streams: spec.max_h2_streams,
        verify: spec.verify,
        ca: spec.ca,
        connect_timeout: spec.connect_timeout,
        timeout: spec.timeout,
        idle_timeout: spec.idle_timeout,
        resolve_every: spec.resolve_every,
        hash_by: spec.hash_by,
        active: spec.active,
        passive: spec.passive,
        retries: spec.retries,
        breaker: spec.breaker,
        ejections: AtomicU64::new(0),
        policy,
        balancer: LoadBalancer::from_backends(backends),
        table,
        fingerprint: spec.fingerprint,
        turn: AtomicUsize::new(0),
        next_resolve: AtomicU64::new(0),
        next_check: AtomicU64::new(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares() {
        assert_eq!(parse_share("20%"), Ok(0.2));
        assert_eq!(parse_share("0.5"), Ok(0.5));
        assert!(parse_share("150%").is_err());
        assert!(parse_share("x").is_err());
    }
}
