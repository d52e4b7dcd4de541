//! Client connections held within bounds (DESIGN §5.6): `max_connections` (the next one waits,
//! existing ones are served), `max_connections_per_ip` (closed right after accept),
//! `header_read_timeout` against slowloris, `idle_timeout`, and HTTP/2 rapid resets and
//! CONTINUATION floods. Real binary, raw sockets.

mod common;

use common::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn yaml(gateway: &str) -> String {
    format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock", {gateway}}}
routes:
  - {{path: "/*", backend_url: "{{backend}}"}}
"#
    )
}

/// Sends a GET on an open connection and reads the answer's status (`None`: the connection was
/// closed, or nothing came within `wait`).
async fn get(s: &mut TcpStream, path: &str, wait: Duration) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        let Some(head_end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length = (text[..head_end].lines())
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if got.len() >= head_end + 4 + length {
            return text.get(9..12)?.parse().ok();
        }
    }
}

async fn connect_from(local: &str, to: std::net::SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(format!("{local}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

const WAIT: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_the_next_waits_while_open_ones_are_served() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(
        &yaml("max_connections: 3, header_read_timeout: 5s"),
        &backend.url(),
    );
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(TcpStream::connect(g.addr).await.unwrap());
    }
    assert_eq!(get(&mut open[0], "/health", WAIT).await, Some(200));
    let mut fourth = TcpStream::connect(g.addr).await.unwrap();
    let waiting = tokio::spawn(async move {
        let at = Instant::now();
        (
            get(&mut fourth, "/health", Duration::from_secs(4)).await,
            at,
        )
    });
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !waiting.is_finished(),
        "the fourth connection was served at once"
    );
    // Open connections keep being served meanwhile.
    for s in open.iter_mut() {
        assert_eq!(get(s, "/health", WAIT).await, Some(200));
    }
    assert!(!waiting.is_finished());
    let freed = Instant::now();
    drop(open.pop());
    let (status, at) = waiting.await.unwrap();
    assert_eq!(status, Some(200));
    assert!(
        freed.elapsed() < Duration::from_secs(1),
        "{:?}",
        freed.elapsed()
    );
    assert!(at.elapsed() >= Duration::from_millis(800));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_max_connections_per_ip_a_connection_is_closed_at_once() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(&yaml("max_connections_per_ip: 2"), &backend.url());
    let mut mine = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from("127.0.0.1", g.addr).await;
        assert_eq!(get(&mut s, "/health", WAIT).await, Some(200));
        mine.push(s);
    }
    let at = Instant::now();
    let mut third = connect_from("127.0.0.1", g.addr).await;
    assert_eq!(get(&mut third, "/health", WAIT).await, None);
    assert!(at.elapsed() < Duration::from_secs(1), "{:?}", at.elapsed());
    // Another address is not affected, nor are the first two connections.
    let mut other = connect_from("127.0.0.2", g.addr).await;
    assert_eq!(get(&mut other, "/health", WAIT).await, Some(200));
    assert_eq!(get(&mut mine[1], "/health", WAIT).await, Some(200));
    // A closed connection frees its place.
    drop(mine.pop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = connect_from("127.0.0.1", g.addr).await;
    assert_eq!(get(&mut again, "/health", WAIT).await, Some(200));
}

/// A slowloris connection: a request head sent a header line every 300 ms, never finished.
/// Returns how long the gateway kept it open.
async fn slowloris(addr: std::net::SocketAddr) -> Duration {
    let at = Instant::now();
    let Ok(s) = TcpStream::connect(addr).await else {
        return at.elapsed();
    };
    let (mut r, mut w) = s.into_split();
    if w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.is_err() {
        return at.elapsed();
    }
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => return at.elapsed(),
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                if w.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    return at.elapsed();
                }
            }
        }
        if at.elapsed() > Duration::from_secs(20) {
            return at.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slowloris_connections_are_closed_and_others_are_served() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(&yaml("header_read_timeout: 2s"), &backend.url());
    let slow: Vec<_> = (0..500).map(|_| tokio::spawn(slowloris(g.addr))).collect();
    // A normal client meanwhile, one request after another on a kept-alive connection.
    let c = client();
    let mut times = Vec::new();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let at = Instant::now();
        let r = c.get(g.url("/json")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        times.push(at.elapsed());
    }
    let mut held = Vec::new();
    for s in slow {
        held.push(s.await.unwrap());
    }
    held.sort();
    times.sort();
    let p99 = times[times.len() * 99 / 100];
    let longest = *held.last().unwrap();
    eprintln!(
        "500 slowloris connections: held {:?} to {longest:?}; normal client: {} requests, p99 {p99:?}",
        held[0],
        times.len()
    );
    assert!(held[0] >= Duration::from_millis(1500), "{:?}", held[0]);
    assert!(longest <= Duration::from_secs(4), "{longest:?}");
    assert!(p99 < Duration::from_millis(50), "{p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_idle_timeout() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(&yaml("idle_timeout: 1s"), &backend.url());
    let mut s = TcpStream::connect(g.addr).await.unwrap();
    assert_eq!(get(&mut s, "/health", WAIT).await, Some(200));
    let at = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "{n:?}");
    let idle = at.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_millis(2500),
        "{idle:?}"
    );
}
