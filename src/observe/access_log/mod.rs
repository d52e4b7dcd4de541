//! The access log: one JSON line per request, written by a thread of its own. A request
//! appends a compact record of its line (`record`) to its worker thread's buffer (`shards`) and
//! never waits for the file: when the writer falls behind and the buffer is full, the line is
//! dropped and counted. The writer turns the records into JSON lines (`entry`) and writes each
//! buffer's lines at once. SIGUSR1 reopens the file (for logrotate).
//!
//! A line holds no header and no body, and the path without its query string, so credentials
//! (`Authorization`, API keys, cookies, `?api_key=...`) cannot reach it.

mod entry;
mod record;

pub use entry::{Entry, Tokens};

use crate::shards::Shards;
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
    /// No file: the lines only go to the console's tail.
    Discard,
}

pub struct AccessLog {
    lines: Shards,
    output: Output,
    started: AtomicBool,
    /// Writing rounds completed, for `flush`.
    rounds: AtomicU64,
    /// The admin console, which keeps the last lines for its tail (handed over by the writer,
    /// in batches, so that a request pays for its line once).
    tap: Option<Arc<crate::console::Stats>>,
    /// `access_log_lines_dropped_total`, when metrics are on.
    dropped: Option<prometheus::IntCounter>,
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
    pub fn new(
        output: Output,
        tap: Option<Arc<crate::console::Stats>>,
        dropped: Option<prometheus::IntCounter>,
    ) -> AccessLog {
        AccessLog {
            lines: Shards::new(SHARD_LIMIT),
            output,
            started: AtomicBool::new(false),
            rounds: AtomicU64::new(0),
            tap,
            dropped,
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
                .map_err(|e| format!("{}: {}", p.display(), crate::text::io_reason(&e))),
            Output::Stdout | Output::Discard => Ok(()),
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

    /// Hands a request's line to the writer, without waiting for the file.
    /// Whether a request's line is wanted now: always with a file (or stdout); without one,
    /// only for an open console tail, at most as many as it shows (a console nobody tails
    /// costs no line).
    pub fn wanted(&self) -> bool {
        !matches!(self.output, Output::Discard)
            || self.tap.as_ref().is_some_and(|t| t.tail_line_wanted())
    }

    pub fn log(&self, entry: &Entry) {
        self.lines.append(|buf| record::encode(entry, buf));
    }

    /// Hands a ready line (with its newline) to the writer.
    pub fn write(&self, line: &[u8]) {
        self.lines.append(|buf| record::encode_line(line, buf));
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
            Output::Stdout | Output::Discard => None,
            Output::File(p) => Some(p.clone()),
        };
        let discard = matches!(self.output, Output::Discard);
        let sink = |p: &Option<PathBuf>| -> Box<dyn Write + Send> {
            match p {
                None if discard => Box::new(std::io::sink()),
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
        // Each thread's records become lines in one buffer, written at once.
        let mut out = sink(&path);
        let mut spare = Vec::new();
        let mut text = Vec::new();
        let mut warned = Instant::now() - DROP_WARNING_EVERY;
        let mut tapped = Vec::new();
        // Lines dropped since the last warning: for want of room, and refused by the file.
        let (mut behind, mut refused) = (0u64, 0u64);
        let mut refused_now = 0u64;
        loop {
            std::thread::sleep(WRITE_EVERY);
            if REOPEN.swap(false, Ordering::Relaxed) {
                let _ = out.flush();
                out = sink(&path);
            }
            self.lines.take(&mut spare, |records| {
                let lines = self.format(records, discard, &mut text, &mut tapped);
                if !text.is_empty() && out.write_all(&text).is_err() {
                    refused_now += lines;
                }
            });
            if let Some(tap) = self.tap.as_ref().filter(|_| !tapped.is_empty()) {
                tap.lines(std::mem::take(&mut tapped));
            }
            let _ = out.flush();
            self.rounds.fetch_add(1, Ordering::Release);
            let now_behind = self.lines.take_dropped();
            if let Some(c) = &self.dropped {
                c.inc_by(now_behind + refused_now);
            }
            behind += now_behind;
            refused += std::mem::take(&mut refused_now);
            if warned.elapsed() >= DROP_WARNING_EVERY && behind + refused > 0 {
                warned = Instant::now();
                log::warn!(
                    "access log: {} lines dropped ({behind} as the writer fell behind, {refused} \
                     refused by the file)",
                    behind + refused
                );
                (behind, refused) = (0, 0);
            }
        }
    }

    /// Turns one buffer's records into lines in `text` (and copies for the console's tail);
    /// returns how many there were. Without a file the lines only feed the tail, which keeps
    /// the last ones: the others are not formatted at all.
    fn format(
        &self,
        records: &[u8],
        discard: bool,
        text: &mut Vec<u8>,
        tapped: &mut Vec<bytes::Bytes>,
    ) -> u64 {
        text.clear();
        let mut skip = if discard {
            let mut all = records;
            let n = std::iter::from_fn(|| record::next(&mut all)).count();
            n.saturating_sub(crate::console::stats::LINES)
        } else {
            0
        };
        let mut rest = records;
        let mut lines = 0u64;
        while let Some(item) = record::next(&mut rest) {
            lines += 1;
            match item {
                record::Item::Entry(_) if skip > 0 => skip -= 1,
                record::Item::Entry(e) => {
                    let at = text.len();
                    e.write_to(text);
                    if self.tap.is_some() {
                        let line = text[at..].strip_suffix(b"\n").unwrap_or(&text[at..]);
                        tapped.push(bytes::Bytes::copy_from_slice(line));
                    }
                }
                record::Item::Line(l) => text.extend_from_slice(l),
            }
        }
        debug_assert!(rest.is_empty(), "records are whole");
        lines
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
