//! The gateway section's process settings (listeners, TLS, threads, pid file, upgrade socket,
//! logs, stop timings: fixed for the life of a process) and its base path: all that `status` and
//! `stop` need, so those read them without compiling routes, agents and backends.

use crate::at;
use crate::config::schema::{File, Gateway};
use crate::config::{ConfigError, Problem};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct Process {
    pub listen: Vec<String>,
    pub tls: Option<TlsFiles>,
    pub threads: usize,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub error_log: Option<String>,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    /// `gateway.h2c`: plaintext listeners also speak HTTP/2 (prior knowledge).
    pub h2c: bool,
    /// `gateway.upstream_keepalive_pool_size`: idle backend connections kept (Pingora's 128).
    pub upstream_pool_size: usize,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    /// `gateway.header_read_timeout` (10 s).
    pub header_read_timeout: Duration,
    /// `gateway.idle_timeout` (60 s, as Pingora's keep-alive).
    pub idle_timeout: Duration,
    /// `gateway.h2_max_resets_per_second` (100).
    pub h2_max_resets_per_second: u32,
}

/// What `status` and `stop` read of a configuration file.
pub struct Light {
    pub name: String,
    pub version: String,
    pub health_path: String,
    pub process: Process,
}

impl Process {
    pub fn compile(g: &Gateway, source: &Path) -> Result<Process, Problem> {
        let threads = match g.threads {
            Some(c) if c.0 == 0 || c.0 > 1024 => {
                return Err(Problem::new(
                    at!("gateway", "threads"),
                    "must be between 1 and 1024",
                ))
            }
            Some(c) => c.0 as usize,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let text = |t: &Option<crate::config::values::Text>| t.as_ref().map(|t| t.0.clone());
        let (pid_file, upgrade_sock) = default_files(source);
        Ok(Process {
            listen: listeners(g)?,
            tls: tls_files(g)?,
            threads,
            pid_file: text(&g.pid_file).unwrap_or(pid_file),
            upgrade_sock: text(&g.upgrade_sock).unwrap_or(upgrade_sock),
            error_log: text(&g.error_log),
            grace_period: g.grace_period.map_or(Duration::from_secs(10), |d| d.0),
            shutdown_timeout: g.shutdown_timeout.map_or(Duration::from_secs(5), |d| d.0),
            h2c: g.h2c.0,
            upstream_pool_size: g
                .upstream_keepalive_pool_size
                .map_or(128, |c| c.0.min(1 << 20) as usize),
            max_connections: at_least_one(g.max_connections, "max_connections")?,
            max_connections_per_ip: at_least_one(
                g.max_connections_per_ip,
                "max_connections_per_ip",
            )?,
            header_read_timeout: positive(g.header_read_timeout, "header_read_timeout", 10)?,
            idle_timeout: positive(g.idle_timeout, "idle_timeout", 60)?,
            h2_max_resets_per_second: at_least_one(
                g.h2_max_resets_per_second,
                "h2_max_resets_per_second",
            )?
            .map_or(100, |n| n.min(u32::MAX as usize) as u32),
        })
    }

    /// Reads only what the running process needs to be found and stopped: the name, version,
    /// health path and this section. The other sections need only parse (their values are not
    /// checked).
    pub fn read(path: &Path) -> Result<Light, ConfigError> {
        let (text, file) = crate::config::read(path)?;
        let parsed: File = crate::config::parse(&text, &file)?;
        let g = &parsed.gateway;
        let located = |p| crate::config::located(&text, &file, p);
        let base_path = base_path(g).map_err(located)?;
        let process = Process::compile(g, path).map_err(located)?;
        let text = |t: &Option<crate::config::values::Text>| t.as_ref().map(|t| t.0.clone());
        Ok(Light {
            name: text(&parsed.name).unwrap_or_else(|| "clawgate".into()),
            version: text(&parsed.version).unwrap_or_else(|| "1.0".into()),
            health_path: format!("{base_path}/health"),
            process,
        })
    }
}

/// `gateway.base_path`, without a trailing `/` (empty for none).
pub fn base_path(g: &Gateway) -> Result<String, Problem> {
    normalise_base_path(g.base_path.as_ref().map_or("", |b| b.0.as_str()))
        .map_err(|m| Problem::new(at!("gateway", "base_path"), m))
}

fn normalise_base_path(p: &str) -> Result<String, String> {
    if p.is_empty() || p == "/" {
        return Ok(String::new());
    }
    if !p.starts_with('/') || p.contains('*') || p.contains("//") || p.contains('?') {
        return Err(format!("{p:?} is not a base path; expected e.g. /api/v1"));
    }
    Ok(p.trim_end_matches('/').to_string())
}

/// Without `pid_file` and `upgrade_sock`, each configuration file gets its own, named by a short
/// digest of its absolute path: gateways of different files run side by side, and every command
/// given the same `--config` finds its process.
fn default_files(source: &Path) -> (String, String) {
    use sha2::{Digest, Sha256};
    let absolute = std::fs::canonicalize(source)
        .or_else(|_| std::path::absolute(source))
        .unwrap_or_else(|_| PathBuf::from(source));
    let digest = Sha256::digest(absolute.as_os_str().as_encoded_bytes());
    let mut hex = Vec::with_capacity(12);
    crate::text::push_hex(&mut hex, &digest[..6]);
    let id = String::from_utf8_lossy(&hex);
    // Not `temp_dir()`: a different TMPDIR in the shell that runs `status` must not lose it.
    (
        format!("/tmp/clawgate-{id}.pid"),
        format!("/tmp/clawgate-{id}-upgrade.sock"),
    )
}

/// `gateway.listen`, normalised (`:8080` is every IPv4 address); one listener per entry.
fn listeners(g: &Gateway) -> Result<Vec<String>, Problem> {
    let raw: Vec<String> = if g.listen.0.is_empty() {
        vec![DEFAULT_LISTEN.to_string()]
    } else {
        g.listen.0.iter().map(|t| t.0.clone()).collect()
    };
    let mut listen = Vec::new();
    for (i, addr) in raw.iter().enumerate() {
        let addr = normalise_listen(addr);
        if addr.parse::<SocketAddr>().is_err() {
            let path = if g.listen.0.len() > 1 {
                at!("gateway", "listen", i)
            } else {
                at!("gateway", "listen")
            };
            return Err(Problem::new(
                path,
                format!("{addr:?} is not a listen address; expected IP:PORT such as 0.0.0.0:8080"),
            ));
        }
        if listen.contains(&addr) {
            return Err(Problem::new(
                at!("gateway", "listen", i),
                format!("{addr} is listed twice"),
            ));
        }
        listen.push(addr);
    }
    Ok(listen)
}

/// `:8080` listens on every IPv4 address, as nginx's `listen 8080`.
pub fn normalise_listen(addr: &str) -> String {
    if addr.starts_with(':') {
        format!("0.0.0.0{addr}")
    } else {
        addr.to_string()
    }
}

fn tls_files(g: &Gateway) -> Result<Option<TlsFiles>, Problem> {
    let Some(t) = g.tls.as_ref().filter(|t| t.enabled.0) else {
        return Ok(None);
    };
    let missing = |what: &str| {
        Problem::new(
            at!("gateway", "tls"),
            format!("TLS is enabled but \"{what}\" is missing"),
        )
    };
    let cert = t
        .cert
        .as_ref()
        .map(|c| c.0.clone())
        .ok_or_else(|| missing("cert"))?;
    let key = t
        .key
        .as_ref()
        .map(|k| k.0.clone())
        .ok_or_else(|| missing("key"))?;
    check_cert(&cert).map_err(|m| Problem::new(at!("gateway", "tls", "cert"), m))?;
    check_key(&key).map_err(|m| Problem::new(at!("gateway", "tls", "key"), m))?;
    Ok(Some(TlsFiles { cert, key }))
}

fn check_cert(path: &str) -> Result<(), String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let data = read_file(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path}: not a PEM certificate ({e})"))?;
    if certs.is_empty() {
        return Err(format!("{path}: holds no PEM certificate"));
    }
    Ok(())
}

fn check_key(path: &str) -> Result<(), String> {
    use rustls_pki_types::{pem::PemObject, PrivateKeyDer};
    let data = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&data)
        .map(|_| ())
        .map_err(|_| format!("{path}: holds no PEM private key"))
}

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(Path::new(path)).map_err(|e| format!("{path}: {}", crate::text::io_reason(&e)))
}

/// A count that must be at least 1 when given.
fn at_least_one(
    c: Option<crate::config::values::Count>,
    field: &'static str,
) -> Result<Option<usize>, Problem> {
    match c {
        Some(c) if c.0 == 0 => Err(Problem::new(at!("gateway", field), "must be at least 1")),
        c => Ok(c.map(|c| c.0.min(usize::MAX as u64) as usize)),
    }
}

/// A duration that must be above zero when given (whole seconds at least: Pingora's keep-alive
/// counts seconds), else `default` seconds.
fn positive(
    d: Option<crate::config::values::Dur>,
    field: &'static str,
    default: u64,
) -> Result<Duration, Problem> {
    match d {
        Some(d) if d.0 < Duration::from_secs(1) => {
            Err(Problem::new(at!("gateway", field), "must be at least 1s"))
        }
        d => Ok(d.map_or(Duration::from_secs(default), |d| d.0)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_configuration_file_has_its_own_pid_file_and_socket() {
        let (a_pid, a_sock) = default_files(Path::new("/etc/clawgate/a.yaml"));
        let (b_pid, b_sock) = default_files(Path::new("/etc/clawgate/b.yaml"));
        assert_ne!(a_pid, b_pid);
        assert_ne!(a_sock, b_sock);
        assert_eq!(default_files(Path::new("/etc/clawgate/a.yaml")).0, a_pid);
        assert!(a_pid.ends_with(".pid") && a_pid.contains("/clawgate-"));
    }
}
