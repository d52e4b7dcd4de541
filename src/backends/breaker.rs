//! A circuit breaker per backend: `failures` within `window` open it; while open the backend
//! takes no requests; after `open_for` one probe request goes through (half-open), and its
//! outcome closes or reopens the circuit.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug)]
pub struct Breaker {
    failures: u32,
    window_ms: u64,
    open_ms: u64,
    window_start: AtomicU64,
    count: AtomicU32,
    /// `clock_ms` until which the circuit is open (0: closed).
    open_until: AtomicU64,
    /// A half-open probe is under way.
    probing: AtomicBool,
    /// Times it opened (a failed probe reopening it included), for the metrics.
    pub opens: AtomicU64,
}

impl Breaker {
    pub fn new(failures: u32, window: Duration, open_for: Duration) -> Breaker {
        Breaker {
            failures: failures.max(1),
            window_ms: window.as_millis() as u64,
            open_ms: open_for.as_millis() as u64,
            window_start: AtomicU64::new(0),
            count: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            opens: AtomicU64::new(0),
        }
    }

    /// Open and not yet due for a probe.
    /// `open` or `closed`, now (for the console).
    pub fn state(&self) -> &'static str {
        if self.is_open(super::clock_ms()) {
            "open"
        } else {
            "closed"
        }
    }

    pub fn is_open(&self, now: u64) -> bool {
        let until = self.open_until.load(Ordering::Relaxed);
        until != 0 && (now < until || self.probing.load(Ordering::Relaxed))
    }

    /// Whether a request may go: always when closed; when half-open, only the one probe.
    pub fn allow(&self, now: u64) -> bool {
        let until = self.open_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if now < until {
            return false;
        }
        self.probing
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    pub fn record(&self, ok: bool, now: u64, name: &str) {
        let half_open = self.probing.load(Ordering::Relaxed);
        if ok {
            if half_open || self.open_until.load(Ordering::Relaxed) != 0 {
                self.open_until.store(0, Ordering::Relaxed);
                self.count.store(0, Ordering::Relaxed);
                self.probing.store(false, Ordering::Release);
                log::info!("backend {name}: circuit closed");
            }
            return;
        }
        if half_open {
            self.open_until.store(now + self.open_ms, Ordering::Relaxed);
            self.probing.store(false, Ordering::Release);
            self.opens.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let start = self.window_start.load(Ordering::Relaxed);
        if now.saturating_sub(start) > self.window_ms {
            self.window_start.store(now, Ordering::Relaxed);
            self.count.store(0, Ordering::Relaxed);
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.failures && self.open_until.load(Ordering::Relaxed) == 0 {
            self.open_until.store(now + self.open_ms, Ordering::Relaxed);
            self.opens.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "backend {name}: circuit open after {n} failures; one probe in {:?}",
                Duration::from_millis(self.open_ms)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_probes_once_and_closes() {
        let b = Breaker::new(3, Duration::from_secs(10), Duration::from_millis(100));
        for t in 1..=2 {
            b.record(false, t, "x");
            assert!(b.allow(t));
        }
        b.record(false, 3, "x");
        assert!(!b.allow(4), "open");
        assert!(b.allow(200), "the probe");
        assert!(!b.allow(201), "only one probe");
        b.record(false, 202, "x");
        assert!(!b.allow(250), "reopened");
        assert!(b.allow(400));
        b.record(true, 401, "x");
        assert!(b.allow(402) && b.allow(403), "closed");
    }
}
