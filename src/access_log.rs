//! The access log: one JSON line per request, written by a thread of its own. A request
//! appends its line to its worker thread's buffer (`shards`) and never waits for the file: when
//! the writer falls behind and the buffer is full, the line is dropped and counted. SIGUSR1
//! reopens the file (for logrotate).
//!
//! A line holds no header and no body, and the path without its query string, so credentials
//! (`Authorization`, API keys, cookies, `?api_key=...`) cannot reach it.

use crate::shards::Shards;
use crate::text::{push_ip, push_ms, push_num, push_str};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Bytes waiting in one thread's buffer; beyond this, new lines are dropped (and counted).
const SHARD_LIMIT: usize = 2 << 20;

static REOPEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr1(_: libc::c_int) {
    REOPEN.store(true, Ordering::Relaxed);
}

pub enum Output {
    Stdout,
    File(PathBuf),
}

pub struct AccessLog {
    lines: Shards,
    output: Output,
    started: AtomicBool,
    /// Writing rounds completed, for `flush`.
    rounds: AtomicU64,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

fn open(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl AccessLog {
    pub fn new(output: Output) -> AccessLog {
        AccessLog {
            lines: Shards::new(SHARD_LIMIT),
            output,
            started: AtomicBool::new(false),
            rounds: AtomicU64::new(0),
        }
    }

    /// Checks that the file can be opened for appending (its folder exists, permissions). A
    /// pipe is not opened here: opening one blocks until it has a reader, which only the writer
    /// thread may wait for.
    pub fn check(&self) -> Result<(), String> {
        use std::os::unix::fs::FileTypeExt;
        match &self.output {
            Output::File(p) if std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo()) => {
                Ok(())
            }
            Output::File(p) => open(p)
                .map(|_| ())
                .map_err(|e| format!("{}: {}", p.display(), crate::config::io_reason(&e))),
            Output::Stdout => Ok(()),
        }
    }

    /// Starts the writer thread (once, in the serving process) and the SIGUSR1 handler.
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::Relaxed) {
            return;
        }
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGUSR1, on_sigusr1 as *const () as libc::sighandler_t);
        }
        let log = self.clone();
        let spawned = std::thread::Builder::new()
            .name("clawgate-access-log".into())
            .spawn(move || log.write_loop());
        if let Err(e) = spawned {
            log::error!("cannot start the access-log writer: {e}");
        }
    }

    /// Appends a line (made by `line`) without waiting for the file.
    pub fn write_with(&self, line: impl FnOnce(&mut Vec<u8>)) {
        self.lines.append(line);
    }

    pub fn write(&self, line: &[u8]) {
        self.write_with(|buf| buf.extend_from_slice(line));
    }

    /// Waits (at most `limit`) until what was written before the call is in the file: at stop.
    pub async fn flush(&self, limit: Duration) {
        if !self.started.load(Ordering::Relaxed) {
            return;
        }
        // A round that starts after this call writes everything written before it.
        let target = self.rounds.load(Ordering::Acquire) + 2;
        let deadline = Instant::now() + limit;
        while self.rounds.load(Ordering::Acquire) < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn write_loop(&self) {
        let path = match &self.output {
            Output::Stdout => None,
            Output::File(p) => Some(p.clone()),
        };
        let sink = |p: &Option<PathBuf>| -> Box<dyn Write + Send> {
            match p {
                None => Box::new(std::io::stdout()),
                Some(p) => match open(p) {
                    Ok(f) => Box::new(f),
                    Err(e) => {
                        log::error!("access log {}: {e}; lines go to stdout", p.display());
                        Box::new(std::io::stdout())
                    }
                },
            }
        };
        // Each thread's lines go out in one write, straight from its buffer: no second buffer
        // to copy through (and to keep in the caches).
        let mut out = sink(&path);
        let mut spare = Vec::new();
        let mut warned = Instant::now() - DROP_WARNING_EVERY;
        loop {
            std::thread::sleep(WRITE_EVERY);
            if REOPEN.swap(false, Ordering::Relaxed) {
                let _ = out.flush();
                out = sink(&path);
            }
            self.lines.take(&mut spare, |lines| {
                let _ = out.write_all(lines);
            });
            let _ = out.flush();
            self.rounds.fetch_add(1, Ordering::Release);
            if warned.elapsed() >= DROP_WARNING_EVERY {
                let dropped = self.lines.take_dropped();
                if dropped > 0 {
                    warned = Instant::now();
                    log::warn!("access log: {dropped} lines dropped (the writer fell behind)");
                }
            }
        }
    }
}

/// How often the writer wakes. It is never woken per line: a request that writes a line then
/// costs no wake-up and no context switch, and lines are written in batches. Often enough that
/// the buffers stay small and hot in the CPU caches: at 100 ms they cycled through about a
/// megabyte per thread and the log cost 4 % of throughput instead of about 1 % (measured).
const WRITE_EVERY: Duration = Duration::from_millis(20);
const DROP_WARNING_EVERY: Duration = Duration::from_secs(10);

/// RFC 3339 with milliseconds, UTC.
pub fn timestamp(t: SystemTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from(t)
        .format(&format)
        .unwrap_or_default()
}

/// One request's line.
pub struct Entry<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client_ip: Option<std::net::IpAddr>,
    pub agent_id: Option<&'a str>,
    pub route: &'a str,
    pub method: &'a str,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub protocol: &'static str,
    /// Without the query string.
    pub path: &'a str,
    pub status: u16,
    pub duration_ms: f64,
    pub upstream: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub upstream_ms: Option<f64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// `"passed"` (with the tightest limit's remaining count) or `"refused"`.
    pub limit: Option<(&'a str, Option<u64>)>,
    pub error: Option<&'a str>,
    pub tokens: Option<&'a crate::usage::Usage>,
    /// `X-Cache` on caching routes.
    pub cache: Option<&'a str>,
}

/// A string that never needs escaping, quoted: request ids (generated, or a client's checked to
/// `[A-Za-z0-9._:-]`), methods (HTTP tokens) and `ip:port` addresses. The escaping check of
/// `push_str` is a pass over every byte; these are written without it.
fn push_plain(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// `"2026-11-27T00:33:19.296Z"`; the part up to the seconds is made once per second per thread.
fn push_time(out: &mut Vec<u8>, t: SystemTime) {
    use std::cell::Cell;
    thread_local! {
        static CACHE: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (at, mut text) = CACHE.get();
    if at != secs {
        let full = timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        if let Some(head) = full.as_bytes().get(..19) {
            text.copy_from_slice(head);
            CACHE.set((secs, text));
        }
    }
    out.push(b'"');
    out.extend_from_slice(&text);
    let ms = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
        b'"',
    ]);
}

impl Entry<'_> {
    /// Appends the line (with its newline) to `o`. Fields that do not apply to the request (no
    /// agent, no upstream call, no cache, no tokens, no limit, no error) are left out rather
    /// than written as `null`: a sixth shorter line, less to write and to keep in the caches.
    pub fn write_to(&self, o: &mut Vec<u8>) {
        o.reserve(512);
        o.extend_from_slice(b"{\"time\":");
        push_time(o, self.time);
        o.extend_from_slice(b",\"type\":\"access\",\"request_id\":");
        push_plain(o, self.request_id);
        if let Some(ip) = self.client_ip {
            o.extend_from_slice(b",\"client_ip\":\"");
            push_ip(o, ip);
            o.push(b'"');
        }
        if let Some(agent) = self.agent_id {
            o.extend_from_slice(b",\"agent_id\":");
            push_str(o, agent);
        }
        o.extend_from_slice(b",\"route\":");
        push_str(o, self.route);
        o.extend_from_slice(b",\"method\":");
        push_plain(o, self.method);
        o.extend_from_slice(b",\"protocol\":\"");
        o.extend_from_slice(self.protocol.as_bytes());
        o.push(b'"');
        o.extend_from_slice(b",\"path\":");
        push_str(o, self.path);
        o.extend_from_slice(b",\"status\":");
        push_num(o, self.status);
        o.extend_from_slice(b",\"duration_ms\":");
        push_ms(o, self.duration_ms);
        if let Some(upstream) = self.upstream {
            o.extend_from_slice(b",\"upstream\":");
            push_plain(o, upstream);
        }
        if let Some(s) = self.upstream_status {
            o.extend_from_slice(b",\"upstream_status\":");
            push_num(o, s);
        }
        if let Some(ms) = self.upstream_ms {
            o.extend_from_slice(b",\"upstream_ms\":");
            push_ms(o, ms);
        }
        o.extend_from_slice(b",\"bytes_in\":");
        push_num(o, self.bytes_in);
        o.extend_from_slice(b",\"bytes_out\":");
        push_num(o, self.bytes_out);
        if let Some(cache) = self.cache {
            o.extend_from_slice(b",\"cache\":");
            push_str(o, cache);
        }
        if let Some(u) = self.tokens {
            o.extend_from_slice(b",\"tokens\":{\"prompt\":");
            push_num(o, u.prompt);
            o.extend_from_slice(b",\"completion\":");
            push_num(o, u.completion);
            o.extend_from_slice(b",\"total\":");
            push_num(o, u.total());
            if let Some(model) = &u.model {
                o.extend_from_slice(b",\"model\":");
                push_str(o, model);
            }
            o.push(b'}');
        }
        if let Some((outcome, remaining)) = self.limit {
            o.extend_from_slice(b",\"limit\":{\"outcome\":");
            push_str(o, outcome);
            if let Some(r) = remaining {
                o.extend_from_slice(b",\"remaining\":");
                push_num(o, r);
            }
            o.push(b'}');
        }
        if let Some(e) = self.error {
            o.extend_from_slice(b",\"error\":");
            push_str(o, e);
        }
        o.extend_from_slice(b"}\n");
    }
}

/// An event line (start, stop, errors).
pub fn event(level: &str, message: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&serde_json::json!({
        "time": timestamp(SystemTime::now()),
        "type": "event",
        "level": level,
        "message": message,
    }))
    .unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_the_fields() {
        let e = Entry {
            time: SystemTime::UNIX_EPOCH,
            request_id: "r1",
            client_ip: Some("10.0.0.1".parse().unwrap()),
            agent_id: Some("bot"),
            route: "llm",
            method: "POST",
            protocol: "HTTP/1.1",
            path: "/api/v1/llm/chat",
            status: 200,
            duration_ms: 1.23456,
            upstream: Some("127.0.0.1:3000"),
            upstream_status: Some(200),
            upstream_ms: Some(1.0),
            bytes_in: 10,
            bytes_out: 20,
            limit: Some(("passed", Some(9))),
            error: None,
            tokens: None,
            cache: Some("HIT"),
        };
        let mut line = Vec::new();
        e.write_to(&mut line);
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["type"], "access");
        assert_eq!(v["duration_ms"], 1.235);
        assert_eq!(v["limit"]["remaining"], 9);
        assert_eq!(v["client_ip"], "10.0.0.1");
        assert!(
            v.get("tokens").is_none(),
            "fields that do not apply are left out"
        );
        assert_eq!(v["cache"], "HIT");
    }

    #[test]
    fn extreme_values_still_make_json() {
        let usage = crate::usage::Usage {
            prompt: u64::MAX,
            completion: u64::MAX,
            model: Some("\u{1}".repeat(64)),
        };
        let nasty = "\u{1f}".repeat(300);
        let e = Entry {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_799),
            // Request ids, methods and addresses are never escaped (see `push_plain`).
            request_id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            client_ip: Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap()),
            agent_id: Some(&nasty),
            route: &nasty,
            method: "M-SEARCH",
            protocol: "HTTP/2.0",
            path: &nasty,
            status: u16::MAX,
            duration_ms: 1e300,
            upstream: Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"),
            upstream_status: Some(u16::MAX),
            upstream_ms: Some(f64::MAX),
            bytes_in: u64::MAX,
            bytes_out: u64::MAX,
            limit: Some((&nasty, Some(u64::MAX))),
            error: Some(&nasty),
            tokens: Some(&usage),
            cache: None,
        };
        let mut line = b"before".to_vec();
        e.write_to(&mut line);
        let v: serde_json::Value = serde_json::from_slice(&line[6..]).unwrap();
        assert_eq!(v["path"].as_str(), Some(nasty.as_str()));
        assert_eq!(v["bytes_out"], u64::MAX);
    }
}
