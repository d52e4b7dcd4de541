//! The command line: check, init, start/status/stop, with the documented exit codes.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const SECRET: &str = "an-example-secret-of-at-least-32-bytes!";

fn check(path: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(["check", "--config"])
        .arg(path)
        .env_remove("JWT_SECRET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run check")
}

#[test]
fn check_passes_on_the_article_configs_and_the_quickstart() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let env = [
        ("JWT_SECRET", SECRET),
        ("CLAWGATE_TLS_CERT", cert.as_str()),
        ("CLAWGATE_TLS_KEY", key.as_str()),
    ];
    for name in [
        "openclaw-api-gateway.yaml",
        "multi-agent-gateway.yaml",
        "quickstart.yaml",
        "traffic.yaml",
        "mcp.yaml",
    ] {
        let out = check(&conf_dir().join(name), &env);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn check_names_file_line_column_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        ("gateway:\n  listen: \"127.0.0.1:1\"\n  lsiten: 1\n", ":3:", "gateway.lsiten: unknown field \"lsiten\""),
        (
            "routes:\n  - path: /x\n    backend_url: http://a\n  - path: /y\n    backend_url: http://a\n    rate_limit: \"20/fortnight\"\n",
            ":6:17:",
            "routes[1].rate_limit: \"20/fortnight\" is not a rate; expected N/second, N/minute, N/hour or N/day",
        ),
        (
            "routes:\n  - path: /x\n    backend_url: http://a\n    timeout: \"5 parsecs\"\n",
            ":4:14:",
            "routes[0].timeout: \"5 parsecs\" is not a duration",
        ),
        (
            "auth:\n  jwt:\n    secret: \"${CLAWGATE_TEST_UNSET_VAR}\"\n",
            ":3:13:",
            "auth.jwt.secret: environment variable CLAWGATE_TEST_UNSET_VAR is not set",
        ),
        ("routes:\n  - name: x\n    backend_url: http://a\n", ":2:", "routes[0]: missing field \"path\""),
        (
            "backends:\n  v1: {url: \"http://a\"}\nroutes:\n  - path: /x\n    backend_weights: {v1: 90, v3: 10}\n",
            ":5:",
            "routes[0].backend_weights.v3: \"v3\" names no backend",
        ),
        ("routes:\n  - path: /x\n    backend_url: ftp://a\n", ":3:", "routes[0].backend_url"),
        (
            "routes:\n  - path: /x\n    backend_url: http://a\n    match: {agent: bot}\n",
            ":4:",
            "routes[0].match.agent: needs a verified caller",
        ),
        (
            "routes:\n  - path: /x\n    backend_url: http://a\n  - path: /x\n    backend_url: http://b\n",
            ":4:",
            "routes[1].path: \"/x\" is already the path of an earlier route without match",
        ),
        (
            "backends:\n  v1: {urls: [\"https://a\"], protocol: h2c}\n",
            ":2:",
            "backends.v1.protocol: h2c is HTTP/2 without TLS",
        ),
        (
            "backends:\n  v1:\n    urls: [\"http://a\", {url: \"http://b\", weight: 0}]\n",
            ":3:",
            "backends.v1.urls[1]: weight must be between 1 and 1000",
        ),
        (
            "backends:\n  v1:\n    url: \"http://a\"\n    hash_by: \"cookie:x\"\n    load_balancing: hash\n",
            ":4:",
            "backends.v1.hash_by: \"cookie:x\" is not a key",
        ),
        (
            "backends:\n  v1:\n    url: \"http://a\"\n    load_balancing: fastest\n",
            ":4:",
            "backends.v1.load_balancing: unknown variant",
        ),
        ("gateway:\n  listen: \"nowhere\"\n", ":2:", "gateway.listen"),
        ("gateway:\n  tls: {enabled: true, cert: /nonexistent.pem, key: /x.key}\n", ":2:", "/nonexistent.pem: no such file"),
        ("routes: [\n", ":1:", "did not find expected node content"),
        (
            "caching:\n  strategy: semantic\n  semantic:\n    threshold: 1.5\nroutes:\n  - path: /x\n    backend_url: http://a\n    caching: {enabled: true}\n",
            ":4:16:",
            "caching.semantic.threshold: \"1.5\" is not a threshold",
        ),
        (
            "caching: {strategy: semantic}\nroutes:\n  - path: /x\n    backend_url: http://a\n    caching:\n      enabled: true\n      semantic: {guards: [negation, vibes]}\n",
            ":7:",
            "routes[0].caching.semantic.guards[1]: \"vibes\" is not a guard; expected negation, numbers or entities",
        ),
        (
            "caching:\n  strategy: semantic\n  semantic:\n    embedder: {kind: openai}\nroutes:\n  - path: /x\n    backend_url: http://a\n    caching: {enabled: true}\n",
            ":4:",
            "caching.semantic.embedder: kind openai needs url",
        ),
        (
            "caching:\n  strategy: semantic\n  semantic: {mode: loud}\n",
            ":3:",
            "caching.semantic.mode: unknown variant \"loud\"",
        ),
        (
            "routes:\n  - path: /mcp\n    protocol: mcp\n    mcp:\n      servers:\n        github: {backend: gh}\n",
            ":6:",
            "routes[0].mcp.servers.github.backend: \"gh\" is not one of \"backends\"",
        ),
        (
            "routes:\n  - path: /mcp\n    protocol: grpc\n",
            ":3:",
            "routes[0].protocol: unknown variant \"grpc\"",
        ),
    ];
    for (yaml, loc, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, yaml).unwrap();
        let out = check(&file, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {err}");
        assert!(
            err.contains(&format!("{}{loc}", file.display())),
            "{yaml}: location missing in {err}"
        );
        assert!(
            err.contains(message),
            "{yaml}: expected {message:?} in {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    }
}

#[test]
fn check_of_a_missing_file_and_bad_usage() {
    let out = clawgate(&["check", "--config", "/nonexistent/clawgate.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("/nonexistent/clawgate.yaml: cannot read the file: no such file"));
    assert_eq!(clawgate(&["check"]).status.code(), Some(2));
    assert_eq!(clawgate(&["frobnicate"]).status.code(), Some(2));
    for cmd in ["init", "check", "start", "status", "stop"] {
        let out = clawgate(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
    }
}

#[test]
fn start_refuses_features_this_build_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        "monitoring: {logging: {format: text}}\nroutes:\n  - path: /x\n    backend_url: http://127.0.0.1:1\n",
    )
    .unwrap();
    let start = || {
        let out = Command::new(BIN)
            .args(["start", "--config"])
            .arg(&config)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        err
    };
    let err = start();
    assert!(
        err.contains("text access log") && err.contains("refusing to start"),
        "{err}"
    );
    // A semantic cache whose model is not there stops the start, naming the directory.
    std::fs::write(
        &config,
        "caching: {strategy: semantic, semantic: {embedder: {model_dir: no-model-here}}}\nroutes:\n  - path: /x\n    backend_url: http://127.0.0.1:1\n    caching: {enabled: true}\n",
    )
    .unwrap();
    let err = start();
    assert!(
        err.contains("semantic cache") && err.contains("no-model-here"),
        "{err}"
    );
}

#[test]
fn init_writes_a_starter_once_and_prepares_what_a_config_names() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run(&["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let starter = dir.path().join("clawgate.yaml");
    assert!(run(&["check", "--config", "clawgate.yaml"])
        .status
        .success());
    let before = std::fs::read(&starter).unwrap();
    let again = run(&["init"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&starter).unwrap(), before);

    let store = dir.path().join("keys/api-keys.json");
    let pid = dir.path().join("run/gw.pid");
    let cfg = dir.path().join("with-store.yaml");
    std::fs::write(
        &cfg,
        format!(
            "gateway:\n  pid_file: {}\nauth:\n  api_key:\n    keys_store: {}\nroutes:\n  - path: /x/*\n    backend_url: http://127.0.0.1:9\n",
            pid.display(),
            store.display()
        ),
    )
    .unwrap();
    let out = run(&["init", "--config", cfg.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
    assert_eq!(v["keys"], serde_json::json!([]));
    assert!(pid.parent().unwrap().is_dir());
    assert!(String::from_utf8_lossy(&out.stdout).contains("routes:"));
}

const SIMPLE: &str = r#"
name: "cli-test"
version: "3.2"
gateway:
  listen: "{listen}"
  pid_file: "{dir}/clawgate.pid"
  upgrade_sock: "{dir}/upgrade.sock"
  grace_period: "5s"
  shutdown_timeout: "2s"
routes:
  - path: "/*"
    backend_url: "{backend}"
"#;

#[test]
fn daemon_start_status_stop() {
    let backend = mock_backend::spawn();
    let (dir, config, addr) = write_config(SIMPLE, &backend.url());
    let config = config.to_str().unwrap();
    let status = clawgate(&["status", "--config", config]);
    assert_eq!(status.status.code(), Some(3));

    let out = clawgate(&["start", "--daemon", "--config", config]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid_file = dir.path().join("clawgate.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let status = clawgate(&["status", "--config", config]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert_eq!(status.status.code(), Some(0), "{text}");
    assert!(text.contains(&format!("pid:       {pid}")), "{text}");
    assert!(text.contains("config cli-test version 3.2"), "{text}");
    assert!(text.contains("\"status\":\"healthy\""), "{text}");
    assert!(text.contains(&addr.to_string()), "{text}");

    // A second start is refused while the first runs.
    let again = clawgate(&["start", "--daemon", "--config", config]);
    assert_eq!(again.status.code(), Some(1));

    let started = std::time::Instant::now();
    let stop = clawgate(&["stop", "--config", config]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop waits for in-flight requests only"
    );
    assert_eq!(
        clawgate(&["status", "--config", config]).status.code(),
        Some(3)
    );
    assert!(!pid_file.exists());
}

#[test]
fn foreground_start_writes_the_pid_file_and_stop_drains_in_flight_requests() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(SIMPLE, &backend.url());
    let pid_file = g.dir.path().join("clawgate.pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, g.pid());

    // A slow request is in flight when stop is asked: it completes, then the gateway exits.
    let url = g.url("/delay/700");
    let slow = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async { client().get(url).send().await.map(|r| r.status().as_u16()) })
    });
    std::thread::sleep(Duration::from_millis(200));
    let stop = clawgate(&["stop", "--config", g.config_str()]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );
    assert_eq!(slow.join().unwrap().unwrap(), 200);
    assert!(!pid_file.exists());
}

#[test]
fn monitoring_logging_level_sets_the_gateway_log_level() {
    let backend = mock_backend::spawn();
    let stderr_of = |yaml: &str| {
        let mut g = Gateway::start(yaml, &backend.url());
        let mut child = g.child.take().unwrap();
        child.kill().unwrap();
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned()
    };
    let info = stderr_of(SIMPLE);
    assert!(info.contains("started"), "info by default: {info}");
    let warn = stderr_of(&format!(
        "{SIMPLE}monitoring:\n  logging:\n    level: \"warn\"\n"
    ));
    assert!(
        !warn.contains("started") && !warn.contains("INFO"),
        "warn hides info lines: {warn}"
    );
}

const NO_PID_FILE: &str = r#"
name: "{name}"
gateway:
  listen: "{listen}"
  grace_period: "5s"
  shutdown_timeout: "2s"
routes:
  - path: "/*"
    backend_url: "{backend}"
"#;

#[test]
fn gateways_of_two_config_files_without_pid_file_run_side_by_side() {
    let backend = mock_backend::spawn();
    let a = write_config(&NO_PID_FILE.replace("{name}", "side-a"), &backend.url());
    let b = write_config(&NO_PID_FILE.replace("{name}", "side-b"), &backend.url());
    let (a_cfg, b_cfg) = (a.1.to_str().unwrap(), b.1.to_str().unwrap());
    for cfg in [a_cfg, b_cfg] {
        let out = clawgate(&["start", "--daemon", "--config", cfg]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = |cfg: &str| {
        let out = clawgate(&["status", "--config", cfg]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let pid_of = |text: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.contains("pid:"))
            .unwrap_or_default();
        line.split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string()
    };
    let (code_a, text_a) = status(a_cfg);
    let (code_b, text_b) = status(b_cfg);
    assert_eq!((code_a, code_b), (Some(0), Some(0)), "{text_a}\n{text_b}");
    assert!(
        text_a.contains("config side-a") && text_a.contains(&a.2.to_string()),
        "{text_a}"
    );
    assert!(
        text_b.contains("config side-b") && text_b.contains(&b.2.to_string()),
        "{text_b}"
    );
    assert_ne!(pid_of(&text_a), pid_of(&text_b));

    // Each reload reaches its own gateway: B gets a new name, A keeps its own.
    let renamed = std::fs::read_to_string(&b.1)
        .unwrap()
        .replace("side-b", "side-b2");
    std::fs::write(&b.1, renamed).unwrap();
    let out = clawgate(&["reload", "--config", b_cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&pid_of(&text_b)));
    let health = |addr: std::net::SocketAddr| {
        raw(
            addr,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !health(b.2).contains("side-b2") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(health(b.2).contains("side-b2"));
    assert!(health(a.2).contains("\"side-a\""));

    // Stopping A leaves B serving; then B stops too.
    assert!(clawgate(&["stop", "--config", a_cfg]).status.success());
    assert_eq!(status(a_cfg).0, Some(3));
    assert_eq!(status(b_cfg).0, Some(0));
    assert!(clawgate(&["stop", "--config", b_cfg]).status.success());
    assert_eq!(status(b_cfg).0, Some(3));
}
