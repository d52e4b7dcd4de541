//! The admin console in a real headless Chromium (DESIGN §5.5): tests/console/browser.py,
//! Selenium from the tools venv of scripts/setup.sh driving Debian's chromium and
//! chromium-driver, against the real binary with traffic from a few agents. Screenshots of
//! each page land in target/console/.

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;

const TOKEN: &str = "console-token-0123456789";
const KEYS: [(&str, &str); 3] = [
    ("data-agent", "key-data-agent-secret-1"),
    ("code-agent", "key-code-agent-secret-2"),
    ("research-agent", "key-research-agent-secret-3"),
];

fn python() -> PathBuf {
    let tools = std::env::var("CLAWGATE_TOOLS").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/clawgate-tools"),
        PathBuf::from,
    );
    tools.join("bin/python")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_api_in_a_real_browser() {
    let backend = mock_backend::spawn();
    let admin_port = free_port();
    let yaml = format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
admin: {{listen: "127.0.0.1:{admin_port}", token: "{TOKEN}"}}
agents:
  "data-agent": {{api_key: "{k0}", rate_limit: "100/minute"}}
  "code-agent": {{api_key: "{k1}"}}
  "research-agent": {{api_key: "{k2}"}}
backends:
  models: {{url: "{{backend}}", health_check: {{path: "/status/200", interval: "1s"}}}}
caching: {{ttl: "60s"}}
routes:
  - {{path: "/v1/*", name: "llm", backend: models, auth_required: true}}
  - {{path: "/cache/*", backend_url: "{{backend}}", auth_required: true, caching: {{enabled: true}}}}
"#,
        k0 = KEYS[0].1,
        k1 = KEYS[1].1,
        k2 = KEYS[2].1,
    );
    let g = Gateway::start(&yaml, &backend.url());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the admin listener did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let c = client();
    let chat =
        serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    for (i, (_, key)) in KEYS.iter().enumerate() {
        for _ in 0..(3 + 2 * i) {
            let r = c
                .post(g.url("/v1/chat/completions"))
                .header("x-api-key", *key);
            assert_eq!(r.json(&chat).send().await.unwrap().status(), 200);
        }
    }
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console");
    let console = format!("http://127.0.0.1:{admin_port}");
    let gateway = g.base.clone();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console/browser.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(script)
            .args([
                "--console",
                &console,
                "--gateway",
                &gateway,
                "--token",
                TOKEN,
            ])
            .args(["--api-key", KEYS[1].1, "--shots"])
            .arg(&shots)
            .output()
            .expect("run tests/console/browser.py (scripts/setup.sh installs selenium)")
    })
    .await
    .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    eprintln!("{said}");
    for page in ["overview", "agents", "routes", "backends", "cache", "tail"] {
        let shot =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("target/console/{page}.png"));
        assert!(
            shot.metadata().is_ok_and(|m| m.len() > 5_000),
            "{}",
            shot.display()
        );
    }
}
