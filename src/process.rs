//! The running gateway as seen from the CLI: pid file, liveness, signals.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub fn write_pid_file(path: &str) -> std::io::Result<()> {
    if let Some(dir) = Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(path, format!("{}\n", std::process::id()))
}

pub fn remove_pid_file_if_ours(path: &str) {
    if read_pid(path) == Some(std::process::id() as i32) {
        let _ = std::fs::remove_file(path);
    }
}

pub fn read_pid(path: &str) -> Option<i32> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// True when `pid` is a live clawgate process (not a stale pid reused by something else).
pub fn is_clawgate(pid: i32) -> bool {
    if !alive(pid) {
        return false;
    }
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => {
            let exe = cmd.split(|b| *b == 0).next().unwrap_or_default();
            String::from_utf8_lossy(exe).contains("clawgate")
        }
        Err(_) => true,
    }
}

/// The pid in the pid file, when that process is a running clawgate.
pub fn running_pid(pid_file: &str) -> Option<i32> {
    read_pid(pid_file).filter(|p| is_clawgate(*p))
}

pub fn pid_file_age(path: &str) -> Option<Duration> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    SystemTime::now().duration_since(modified).ok()
}

pub fn signal(pid: i32, sig: libc::c_int) -> std::io::Result<()> {
    // SAFETY: plain kill(2) on a pid we read from our pid file and checked.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// True while the process exists and has not exited (a zombie awaiting its parent has).
pub fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z"),
        Err(_) => true,
    }
}

/// Waits until the process is gone, polling; false on timeout.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Where a daemon's stderr goes: `error_log`, else next to the pid file
/// (`/tmp/clawgate.pid` → `/tmp/clawgate.error.log`).
pub fn daemon_log_path(error_log: Option<&str>, pid_file: &str) -> String {
    match error_log {
        Some(p) => p.to_string(),
        None => format!(
            "{}.error.log",
            pid_file.strip_suffix(".pid").unwrap_or(pid_file)
        ),
    }
}

/// Starts this binary again as `start --foreground` in its own session, detached from the
/// terminal with stderr to `log`, and returns once it serves: its pid is in the pid file and
/// every listener accepts. On failure, the daemon's last log lines say why.
pub fn spawn_daemon(
    config_path: &Path,
    upgrade: bool,
    pid_file: &str,
    listen: &[String],
    log: &str,
) -> Result<u32, String> {
    let detached = spawn_detached(config_path, upgrade, log)?;
    wait_serving(detached, pid_file, listen, log, || Ok(()))
}

/// A detached gateway process, and where its part of the log starts.
pub struct Detached {
    child: std::process::Child,
    log_start: u64,
}

impl Detached {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited, and then why (its last `clawgate:` log line).
    pub fn exited(&mut self, log: &str) -> Option<String> {
        let status = self.child.try_wait().ok().flatten()?;
        let tail = std::fs::read(log)
            .map(|b| {
                String::from_utf8_lossy(&b[(self.log_start as usize).min(b.len())..]).into_owned()
            })
            .unwrap_or_default();
        Some(
            tail.lines()
                .rev()
                .find(|l| l.starts_with("clawgate:"))
                .map(|l| l.trim_start_matches("clawgate:").trim().to_string())
                .unwrap_or_else(|| format!("it exited with {status}; see {log}")),
        )
    }
}

/// Starts `start --foreground [--upgrade]` in its own session with stderr to `log`.
pub fn spawn_detached(config_path: &Path, upgrade: bool, log: &str) -> Result<Detached, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the clawgate binary: {e}"))?;
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open the error log {log}: {e}"))?;
    let log_start = log_file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(exe);
    cmd.arg("start")
        .arg("--foreground")
        .arg("--config")
        .arg(config_path);
    if upgrade {
        cmd.arg("--upgrade");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    // SAFETY: setsid() is async-signal-safe; it detaches the child from our terminal and group.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start the daemon: {e}"))?;
    Ok(Detached { child, log_start })
}

/// Waits until `d` serves (its pid in the pid file, every listener accepting), calling `tick`
/// meanwhile (an upgrade signals the old process from there); at most 30 s.
pub fn wait_serving(
    mut d: Detached,
    pid_file: &str,
    listen: &[String],
    log: &str,
    mut tick: impl FnMut() -> Result<(), String>,
) -> Result<u32, String> {
    let pid = d.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(reason) = d.exited(log) {
            return Err(reason);
        }
        tick()?;
        let serving = read_pid(pid_file) == Some(pid as i32)
            && listen
                .iter()
                .all(|a| crate::probe::accepts(a, Duration::from_millis(200)));
        if serving {
            return Ok(pid);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the daemon (pid {pid}) did not start serving within 30s; see {log}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
