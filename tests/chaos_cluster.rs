//! Chaos run (DESIGN §5.6): three instances behind HAProxy under k6's steady load; during the
//! run one instance is upgraded, one reloaded and one killed with SIGKILL
//! (`load-tests/run.sh upgrade`, the operator's view). The k6 suite's failure threshold
//! (`http_req_failed < 0.1 %`, p95 < 200 ms, p99 < 1 s) must hold, and the limits stay shared
//! through Redis by the instances left. HAProxy and k6 are installed by the scripts themselves.

use std::process::Command;

#[test]
fn sigkill_of_one_of_three_instances_behind_haproxy_under_k6_load() {
    let root = env!("CARGO_MANIFEST_DIR");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // This build's binaries, not a release build of their own.
    let built = Command::new(&cargo)
        .args(["build", "-p", "mock-backend", "--bin", "mock-backend"])
        .current_dir(root)
        .status()
        .expect("cargo");
    assert!(built.success());
    let clawgate = env!("CARGO_BIN_EXE_clawgate");
    let target = std::path::Path::new(clawgate)
        .parent()
        .expect("the binaries' folder");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(format!("{root}/load-tests/run.sh"))
        .arg("upgrade")
        .env("CLAWGATE", clawgate)
        .env("BACKEND", target.join("mock-backend"))
        .env("CLUSTER_DIR", dir.path().join("cluster"))
        .env("OUT", dir.path().join("k6"))
        .env("DURATION", "30s")
        .env("RATE", "200")
        .output()
        .expect("bash");
    let err = String::from_utf8_lossy(&out.stderr);
    let report: Vec<&str> = (err.lines())
        .filter(|l| l.starts_with("[run ") || l.contains("http_req") || l.contains("✗"))
        .collect();
    eprintln!("{}", report.join("\n"));
    // k6's summary: requests, failures, p95/p99 and each threshold.
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "run.sh upgrade failed:\n{err}");
    assert!(err.contains("killed instance 3"), "{err}");
}
