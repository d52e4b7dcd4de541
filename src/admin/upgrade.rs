//! `clawgate upgrade`: a new process of this binary takes the listening sockets over from the
//! running one (Pingora's handoff), which finishes its requests and exits.

use crate::process;
use crate::runtime::Process;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long connections to the old process get to finish their keep-alive exchanges before
/// the handover.
const HANDOVER_NOTICE: Duration = Duration::from_millis(300);

/// Starts the new process on `path`'s configuration, hands the running one's (`old`) sockets
/// over to it, and waits for the old one to finish its requests and exit; what happened, as a
/// sentence.
pub fn run(path: &Path, p: &Process, old: i32) -> Result<String, String> {
    let log = process::daemon_log_path(p.error_log.as_deref(), &p.pid_file);
    // The new process binds the upgrade socket and waits there for the listeners: a socket file
    // that exists after this removal is the new process waiting.
    let sock = Path::new(&p.upgrade_sock);
    let _ = std::fs::remove_file(sock);
    let new = process::spawn_detached(path, true, &log)?;
    let new_pid = new.id();
    let started = Instant::now();
    let mut handed = false;
    let serving = process::wait_serving(new, &p.pid_file, &p.listen, &log, || {
        if handed {
            return Ok(());
        }
        if sock.exists() {
            // First every connection to the old process is made to close after its response
            // (keep-alive connections would otherwise be cut under a request at the
            // handover); then Pingora's handoff: on SIGQUIT the old process sends its listening
            // sockets over the upgrade socket, stops accepting and drains.
            let signal = |sig| {
                process::signal(old, sig)
                    .map_err(|e| format!("cannot signal the running gateway (pid {old}): {e}"))
            };
            signal(libc::SIGUSR2)?;
            std::thread::sleep(HANDOVER_NOTICE);
            signal(libc::SIGQUIT)?;
            handed = true;
        } else if started.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "the new process (pid {new_pid}) did not wait for the sockets within 10s"
            ));
        }
        Ok(())
    });
    if let Err(e) = serving {
        if !handed {
            let _ = process::signal(new_pid as i32, libc::SIGKILL);
        }
        let still = if handed {
            "the running gateway was asked to hand over"
        } else {
            "the running gateway keeps serving"
        };
        return Err(format!(
            "upgrade failed: {e}; {still} (pid {old}); see {log}"
        ));
    }
    let limit = p.grace_period + p.shutdown_timeout + Duration::from_secs(5);
    if process::wait_gone(old, limit) {
        Ok(format!(
            "clawgate upgraded: pid {new_pid} serves, pid {old} finished its requests and exited"
        ))
    } else {
        Err(format!(
            "pid {new_pid} serves, but the old pid {old} did not exit within {}s",
            limit.as_secs()
        ))
    }
}
