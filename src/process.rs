//! The running gateway as seen from the CLI: pid file, liveness, signals.

use std::path::Path;
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
    // SAFETY: kill with signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    if !alive {
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

/// Waits until the process is gone, polling; false on timeout.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        // SAFETY: signal 0 only checks existence.
        if unsafe { libc::kill(pid, 0) } != 0 {
            return true;
        }
        // Reap it if it is our child (tests start it that way); ignore otherwise.
        // SAFETY: non-blocking waitpid on a specific pid.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
