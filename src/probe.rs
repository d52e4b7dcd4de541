//! A minimal HTTP/1.1 probe of the health endpoint, for `clawgate status`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The address to reach a listener from this machine: a wildcard listen address means loopback.
pub fn local_addr(listen: &str) -> Option<SocketAddr> {
    let mut addr: SocketAddr = listen.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Some(addr)
}

/// Whether a listener accepts connections.
pub fn accepts(listen: &str, timeout: Duration) -> bool {
    local_addr(listen).is_some_and(|a| TcpStream::connect_timeout(&a, timeout).is_ok())
}

pub fn health(listen: &str, path: &str, timeout: Duration) -> Result<String, String> {
    let addr = local_addr(listen).ok_or_else(|| format!("bad address {listen}"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.kind().to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.take(64 * 1024)
        .read_to_end(&mut buf)
        .map_err(|e| e.kind().to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed answer")?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    if status != "200" {
        return Err(format!("status {status}"));
    }
    Ok(body.trim().to_string())
}
