//! The access log: one JSON line per request, written by a thread of its own. Requests hand
//! their line over a bounded channel and never wait: when the writer falls behind and the
//! channel is full, the line is dropped and counted. SIGUSR1 reopens the file (for logrotate).
//!
//! A line holds no header and no body, and the path without its query string, so credentials
//! (`Authorization`, API keys, cookies, `?api_key=...`) cannot reach it.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Lines waiting for the writer; beyond this, new lines are dropped (and counted).
const QUEUE: usize = 65_536;

static REOPEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigusr1(_: libc::c_int) {
    REOPEN.store(true, Ordering::Relaxed);
}

pub enum Output {
    Stdout,
    File(PathBuf),
}

pub struct AccessLog {
    sender: SyncSender<Vec<u8>>,
    pub dropped: AtomicU64,
    output: Output,
    rx: Mutex<Option<Receiver<Vec<u8>>>>,
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
        let (tx, rx) = sync_channel(QUEUE);
        AccessLog {
            sender: tx,
            dropped: AtomicU64::new(0),
            output,
            rx: Mutex::new(Some(rx)),
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
        let Some(rx) = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGUSR1, on_sigusr1 as *const () as libc::sighandler_t);
        }
        let path = match &self.output {
            Output::Stdout => None,
            Output::File(p) => Some(p.clone()),
        };
        let spawned = std::thread::Builder::new()
            .name("clawgate-access-log".into())
            .spawn(move || write_loop(rx, path));
        if let Err(e) = spawned {
            log::error!("cannot start the access-log writer: {e}");
        }
    }

    /// Hands a line to the writer without waiting.
    pub fn write(&self, line: Vec<u8>) {
        match self.sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// How often the writer wakes. It is never woken per line: a request that hands over a line
/// then costs no wake-up and no context switch, and lines are written in batches.
const WRITE_EVERY: Duration = Duration::from_millis(100);

fn write_loop(rx: Receiver<Vec<u8>>, path: Option<PathBuf>) {
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
    let mut out = BufWriter::with_capacity(256 << 10, sink(&path));
    loop {
        std::thread::sleep(WRITE_EVERY);
        if REOPEN.swap(false, Ordering::Relaxed) {
            let _ = out.flush();
            out = BufWriter::with_capacity(256 << 10, sink(&path));
        }
        loop {
            match rx.try_recv() {
                Ok(line) => {
                    let _ = out.write_all(&line);
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    let _ = out.flush();
                    return;
                }
            }
        }
        let _ = out.flush();
    }
}

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
}

/// Appends a JSON string (escaped). Most strings need no escaping: they are checked with a
/// branch-free pass (vectorised) and copied whole.
fn push_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let plain = !bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
    } else {
        for &b in bytes {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                0..=0x1f => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    out.extend_from_slice(b"\\u00");
                    out.push(HEX[(b >> 4) as usize]);
                    out.push(HEX[(b & 15) as usize]);
                }
                _ => out.push(b),
            }
        }
    }
    out.push(b'"');
}

fn push_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Integers and milliseconds by hand: `core::fmt` (floats above all) was a visible share of a
/// request's CPU time.
fn push_num(out: &mut Vec<u8>, n: impl Into<u64>) {
    let mut n: u64 = n.into();
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Milliseconds with three decimals.
fn push_ms(out: &mut Vec<u8>, ms: f64) {
    let micros = (ms * 1000.0).round().max(0.0) as u64;
    push_num(out, micros / 1000);
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// `2026-11-27T00:33:19.296Z`; the part up to the seconds is made once per second per thread.
fn push_time(out: &mut Vec<u8>, t: SystemTime) {
    use std::cell::RefCell;
    thread_local! {
        static CACHE: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let full = timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            c.1 = full[..19].to_string();
            c.0 = secs;
        }
        out.push(b'"');
        out.extend_from_slice(c.1.as_bytes());
        let ms = since.subsec_millis();
        out.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
            b'"',
        ]);
    });
}

impl Entry<'_> {
    pub fn to_line(&self) -> Vec<u8> {
        let mut o = Vec::with_capacity(512);
        o.extend_from_slice(b"{\"time\":");
        push_time(&mut o, self.time);
        o.extend_from_slice(b",\"type\":\"access\",\"request_id\":");
        push_str(&mut o, self.request_id);
        o.extend_from_slice(b",\"client_ip\":");
        match self.client_ip {
            Some(ip) => {
                o.push(b'"');
                crate::upstream::push_ip(&mut o, ip);
                o.push(b'"');
            }
            None => o.extend_from_slice(b"null"),
        }
        o.extend_from_slice(b",\"agent_id\":");
        push_opt_str(&mut o, self.agent_id);
        o.extend_from_slice(b",\"route\":");
        push_str(&mut o, self.route);
        o.extend_from_slice(b",\"method\":");
        push_str(&mut o, self.method);
        o.extend_from_slice(b",\"path\":");
        push_str(&mut o, self.path);
        o.extend_from_slice(b",\"status\":");
        push_num(&mut o, self.status);
        o.extend_from_slice(b",\"duration_ms\":");
        push_ms(&mut o, self.duration_ms);
        o.extend_from_slice(b",\"upstream\":");
        push_opt_str(&mut o, self.upstream);
        o.extend_from_slice(b",\"upstream_status\":");
        match self.upstream_status {
            Some(s) => push_num(&mut o, s),
            None => o.extend_from_slice(b"null"),
        }
        o.extend_from_slice(b",\"upstream_ms\":");
        match self.upstream_ms {
            Some(ms) => push_ms(&mut o, ms),
            None => o.extend_from_slice(b"null"),
        }
        o.extend_from_slice(b",\"bytes_in\":");
        push_num(&mut o, self.bytes_in);
        o.extend_from_slice(b",\"bytes_out\":");
        push_num(&mut o, self.bytes_out);
        o.extend_from_slice(b",\"cache\":null,\"tokens\":");
        match self.tokens {
            Some(u) => {
                o.extend_from_slice(b"{\"prompt\":");
                push_num(&mut o, u.prompt);
                o.extend_from_slice(b",\"completion\":");
                push_num(&mut o, u.completion);
                o.extend_from_slice(b",\"total\":");
                push_num(&mut o, u.total());
                o.extend_from_slice(b",\"model\":");
                push_opt_str(&mut o, u.model.as_deref());
                o.push(b'}');
            }
            None => o.extend_from_slice(b"null"),
        }
        o.extend_from_slice(b",\"limit\":");
        match self.limit {
            Some((outcome, remaining)) => {
                o.extend_from_slice(b"{\"outcome\":");
                push_str(&mut o, outcome);
                o.extend_from_slice(b",\"remaining\":");
                match remaining {
                    Some(r) => push_num(&mut o, r),
                    None => o.extend_from_slice(b"null"),
                }
                o.push(b'}');
            }
            None => o.extend_from_slice(b"null"),
        }
        if let Some(e) = self.error {
            o.extend_from_slice(b",\"error\":");
            push_str(&mut o, e);
        }
        o.extend_from_slice(b"}\n");
        o
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
        };
        let line = e.to_line();
        assert_eq!(line.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["type"], "access");
        assert_eq!(v["duration_ms"], 1.235);
        assert_eq!(v["limit"]["remaining"], 9);
        assert_eq!(v["client_ip"], "10.0.0.1");
        assert_eq!(v["tokens"], serde_json::Value::Null);
    }

    #[test]
    fn numbers_by_hand() {
        let mut o = Vec::new();
        push_num(&mut o, 0u64);
        o.push(b' ');
        push_num(&mut o, u64::MAX);
        o.push(b' ');
        push_ms(&mut o, 1.2345);
        o.push(b' ');
        push_ms(&mut o, 1500.0);
        o.push(b' ');
        push_ms(&mut o, 0.0004);
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "0 18446744073709551615 1.235 1500.000 0.000"
        );
    }

    #[test]
    fn strings_are_escaped() {
        let mut o = Vec::new();
        push_str(&mut o, "a\"b\\c\u{1}d/é");
        let back: String = serde_json::from_slice(&o).unwrap();
        assert_eq!(back, "a\"b\\c\u{1}d/é");
    }
}
