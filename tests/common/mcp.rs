//! Real MCP peers from the official Python SDK (`mcp` from PyPI, installed by scripts/setup.sh
//! into the tools venv): `tests/mcp/server.py` as a server process and `tests/mcp/client.py` as
//! a client, one process per session.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// The tools venv's python (`$CLAWGATE_TOOLS`, default `~/.cache/clawgate-tools`).
pub fn python() -> PathBuf {
    let tools = std::env::var_os("CLAWGATE_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/clawgate-tools"))
        })
        .expect("CLAWGATE_TOOLS or HOME is set");
    let python = tools.join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (it installs the MCP Python SDK)",
        python.display()
    );
    python
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/mcp")
        .join(name)
}

/// A running `tests/mcp/server.py` (Streamable HTTP at `/mcp`); killed when dropped.
pub struct McpServer {
    pub name: String,
    pub port: u16,
    flags: Vec<String>,
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
}

impl McpServer {
    /// Starts a server named `name` on a free port with `flags` (`--json`, `--stateless`) and
    /// waits until it listens.
    pub fn start(name: &str, flags: &[&str]) -> McpServer {
        let mut s = McpServer {
            name: name.to_string(),
            port: super::free_port(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
            child: None,
            stderr: Arc::new(Mutex::new(String::new())),
        };
        s.restart();
        s
    }

    /// `http://127.0.0.1:PORT` (a gateway route's `backend_url`).
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("{}/mcp", self.base())
    }

    /// Starts it again on the same port (after `stop`); a fresh process, counts at zero.
    pub fn restart(&mut self) {
        self.stop();
        let mut child = Command::new(python())
            .arg(script("server.py"))
            .args(["--port", &self.port.to_string(), "--name", &self.name])
            .args(&self.flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the tools venv's python (run scripts/setup.sh)");
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut err) = child.stderr.take() {
            let buf = stderr.clone();
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = err.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut b) = buf.lock() {
                        b.push_str(&String::from_utf8_lossy(&chunk[..n]));
                    }
                }
            });
        }
        // The first stdout line is `ready <port>` once the socket listens; the rest is drained.
        let (tx, rx) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut lines = BufReader::new(out).lines();
                let first = lines.next().and_then(Result::ok);
                let _ = tx.send(first);
                for _ in lines {}
            });
        }
        let first = rx.recv_timeout(Duration::from_secs(20)).ok().flatten();
        self.child = Some(child);
        self.stderr = stderr;
        if first.as_deref() != Some(&format!("ready {}", self.port)) {
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "MCP server {} did not start on port {} (stdout {first:?}); stderr: {} \
                 (run scripts/setup.sh for the MCP Python SDK)",
                self.name,
                self.port,
                self.stderr()
            );
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// How many times each tool really ran: `{"search_web": 1, "delete_repo": 0, ...}`.
    pub fn counts(&self) -> serde_json::Value {
        let addr = format!("127.0.0.1:{}", self.port)
            .parse()
            .expect("server address");
        let answer = super::raw(
            addr,
            b"GET /counts HTTP/1.1\r\nHost: mcp\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        );
        assert_eq!(super::status_of(&answer), 200, "GET /counts: {answer}");
        super::json_of(&answer)
    }

    /// One tool's count.
    pub fn count(&self, tool: &str) -> u64 {
        let counts = self.counts();
        counts[tool]
            .as_u64()
            .unwrap_or_else(|| panic!("no count for {tool}: {counts}"))
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `tests/mcp/client.py` against `url` with extra request `headers`: one session, the
/// `steps` in order (`list`, `call NAME JSON_ARGS`, `info`, and the others of `client.py`), one
/// JSON value per step. `Err` holds the exit status and stderr when the client failed
/// (unreachable, refused, session error).
pub fn try_client(
    url: &str,
    headers: &[(&str, &str)],
    steps: &[&str],
) -> Result<Vec<serde_json::Value>, String> {
    try_client_with(url, headers, &[], steps)
}

/// `try_client` with client options before the steps (`--modern`, `--timeout S`).
pub fn try_client_with(
    url: &str,
    headers: &[(&str, &str)],
    options: &[&str],
    steps: &[&str],
) -> Result<Vec<serde_json::Value>, String> {
    let mut cmd = Command::new(python());
    cmd.arg(script("client.py")).arg(url);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}:{v}"));
    }
    cmd.args(options).arg("--").args(steps);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run the tools venv's python (run scripts/setup.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("client exited with {}: {stderr}", out.status));
    }
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).map_err(|e| format!("not JSON ({e}): {l}")))
        .collect()
}

/// `try_client` that panics when the client fails, or prints other than one line per step.
pub fn client(url: &str, headers: &[(&str, &str)], steps: &[&str]) -> Vec<serde_json::Value> {
    let out = try_client(url, headers, steps).unwrap_or_else(|e| panic!("MCP client: {e}"));
    let expected = steps
        .iter()
        .filter(|s| {
            matches!(
                **s,
                "list" | "call" | "info" | "stream" | "resources" | "read" | "prompts" | "prompt"
            )
        })
        .count();
    assert_eq!(out.len(), expected, "one line per step: {out:?}");
    out
}

/// RFC 9728 discovery by the SDK's own functions (`tests/mcp/discover.py`) against `url`.
pub fn discover(url: &str) -> serde_json::Value {
    let out = Command::new(python())
        .arg(script("discover.py"))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run the tools venv's python (run scripts/setup.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "discover.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("discover.py prints JSON")
}
