//! Overload (DESIGN §5.6): `gateway.max_in_flight` sheds the excess of a burst of 2,000 against
//! a slow backend with a quick 503 JSON and `Retry-After`, while health keeps answering and the
//! gateway's memory stays bounded.

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BURST: usize = 2000;

/// A line of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`: the peak).
fn rss_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    (status.lines())
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_over_max_in_flight_is_shed_quickly_and_health_answers() {
    let backend = mock_backend::spawn();
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock", max_in_flight: 100}
routes:
  - {path: "/*", backend_url: "{backend}", timeout: "10s"}
"#;
    let g = Gateway::start(yaml, &backend.url());
    let c = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(8))
        .build()
        .unwrap();
    let (ok, shed, other) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let slowest_shed = Arc::new(std::sync::Mutex::new(Duration::ZERO));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let rss_before = rss_kb(g.pid(), "VmRSS");
    for _ in 0..BURST {
        let (c, url) = (c.clone(), g.url("/delay/3000"));
        let (ok, shed, other, slowest) = (
            ok.clone(),
            shed.clone(),
            other.clone(),
            slowest_shed.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            match c.get(url).send().await {
                Ok(r) if r.status() == 200 => {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) if r.status() == 503 => {
                    let took = sent.elapsed();
                    assert_eq!(r.headers()["retry-after"], "1");
                    let v: serde_json::Value = r.json().await.unwrap();
                    assert_eq!(v["code"], 503, "{v}");
                    shed.fetch_add(1, Ordering::Relaxed);
                    let mut s = slowest.lock().unwrap();
                    *s = (*s).max(took);
                }
                _ => {
                    other.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // Once the excess is refused, while the rest is held by the backend, health answers at once.
    while shed.load(Ordering::Relaxed) < BURST - 150 && started.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let h = Instant::now();
    let r = c.get(g.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        h.elapsed() < Duration::from_millis(500),
        "health took {:?}",
        h.elapsed()
    );
    for t in tasks {
        t.await.unwrap();
    }
    let (ok, shed, other) = (
        ok.load(Ordering::Relaxed),
        shed.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    eprintln!(
        "{BURST} requests: {ok} served, {shed} shed (slowest refusal {:?}), {other} other, in {:?}",
        slowest_shed.lock().unwrap(),
        started.elapsed()
    );
    let peak = rss_kb(g.pid(), "VmHWM");
    eprintln!("gateway RSS: {rss_before} kB before the burst, peak {peak} kB");
    assert!(
        peak < rss_before + 256 * 1024,
        "{rss_before} kB → {peak} kB"
    );
    assert_eq!(other, 0);
    assert!(ok <= 100 + 10, "at most max_in_flight served at once: {ok}");
    assert!(ok >= 50 && shed >= BURST - 150, "{ok} served, {shed} shed");
    assert!(
        *slowest_shed.lock().unwrap() < Duration::from_millis(2500),
        "refused quickly"
    );
    // The next request after the burst is served.
    assert_eq!(c.get(g.url("/delay/1")).send().await.unwrap().status(), 200);
}
