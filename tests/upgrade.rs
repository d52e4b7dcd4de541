//! Binary upgrade with the real binary: `clawgate upgrade` under load.

mod common;
use common::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stops the process named by a pid file when dropped (the upgraded gateway is a daemon).
struct KillByPidFile(std::path::PathBuf);

impl Drop for KillByPidFile {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .status();
        }
    }
}

#[tokio::test]
async fn an_upgrade_under_load_fails_no_request() {
    let backend = mock_backend::spawn();
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock", grace_period: "10s"}
routes:
  - {path: "/*", backend_url: "{backend}"}
"#;
    let mut g = Gateway::start(yaml, &backend.url());
    let pid_file = g.dir.path().join("p.pid");
    let _cleanup = KillByPidFile(pid_file.clone());
    let old_pid = g.pid();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), g.url("/x"));
        load.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        eprintln!("failed: {other:?}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slow = tokio::spawn(client().get(g.url("/delay/2000")).send());
    tokio::time::sleep(Duration::from_millis(200)).await;

    let config = g.config_str().to_string();
    let out = tokio::task::spawn_blocking(move || clawgate(&["upgrade", "--config", &config]))
        .await
        .expect("upgrade");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let slow = slow.await.expect("task").expect("the in-flight request");
    assert_eq!(
        slow.status(),
        200,
        "the request in flight during the upgrade completes"
    );
    if let Some(left) = Duration::from_secs(6).checked_sub(started.elapsed()) {
        tokio::time::sleep(left).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.expect("load task");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no failed request");
    assert!(ok.load(Ordering::Relaxed) > 100);

    let new_pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert_ne!(new_pid, old_pid, "the pid file follows the new process");
    // `upgrade` returns once the old process is a zombie; its last threads may still be ending
    // for a moment before it can be reaped.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut exited = None;
    while exited.is_none() && std::time::Instant::now() < deadline {
        exited = g.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(exited.is_some(), "the old process has exited");
    let r = client().get(g.url("/health")).send().await.expect("health");
    assert_eq!(r.status(), 200, "the new process serves");
}

#[test]
fn an_upgrade_with_a_broken_file_leaves_the_old_process_serving() {
    let backend = mock_backend::spawn();
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
routes:
  - {path: "/*", backend_url: "{backend}"}
"#;
    let g = Gateway::start(yaml, &backend.url());
    let _cleanup = KillByPidFile(g.dir.path().join("p.pid"));
    let good = std::fs::read_to_string(&g.config).expect("config");
    std::fs::write(&g.config, good.replace("\"/*\"", "\"no-slash\"")).expect("write");
    let out = clawgate(&["upgrade", "--config", g.config_str()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("routes[0].path"));
    let answer = raw(
        g.addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    );
    assert_eq!(status_of(&answer), 200, "the old process still serves");
}
