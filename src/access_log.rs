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
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
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
    let mut out = BufWriter::with_capacity(64 << 10, sink(&path));
    loop {
        if REOPEN.swap(false, Ordering::Relaxed) {
            let _ = out.flush();
            out = BufWriter::with_capacity(64 << 10, sink(&path));
        }
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let _ = out.write_all(&line);
                // Write what else is queued, then flush once.
                while let Ok(more) = rx.try_recv() {
                    let _ = out.write_all(&more);
                }
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.flush();
                return;
            }
        }
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

impl Entry<'_> {
    pub fn to_line(&self) -> Vec<u8> {
        let mut v = serde_json::json!({
            "time": timestamp(self.time),
            "type": "access",
            "request_id": self.request_id,
            "client_ip": self.client_ip.map(|ip| ip.to_string()),
            "agent_id": self.agent_id,
            "route": self.route,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": (self.duration_ms * 1000.0).round() / 1000.0,
            "upstream": self.upstream,
            "upstream_status": self.upstream_status,
            "upstream_ms": self.upstream_ms.map(|m| (m * 1000.0).round() / 1000.0),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "cache": serde_json::Value::Null,
            "tokens": self.tokens.map(|u| serde_json::json!({
                "prompt": u.prompt,
                "completion": u.completion,
                "total": u.total(),
                "model": u.model,
            })),
        });
        if let Some((outcome, remaining)) = self.limit {
            v["limit"] = serde_json::json!({"outcome": outcome, "remaining": remaining});
        } else {
            v["limit"] = serde_json::Value::Null;
        }
        if let Some(e) = self.error {
            v["error"] = e.into();
        }
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        line
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
    }
}
