//! Test harness: the real `clawgate` binary on real sockets, in front of the real mock backend.
#![allow(dead_code)]

pub mod cluster;
pub mod mcp;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_clawgate");

/// The binary gateways start: `CLAWGATE_BIN` when set (worktrees sharing one target directory
/// overwrite each other's `target/debug/clawgate`; point it at `target/debug/deps/clawgate-…`),
/// else the one Cargo built.
pub fn bin() -> String {
    std::env::var("CLAWGATE_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// A port nothing listens on now, and not handed out before in this test binary. The OS may hand
/// a just-released port out again: a second gateway given it fails to bind, but its test's
/// readiness check connects to the first one and talks to another test's gateway (seen once in
/// CI: a cache test counted no backend call for a MISS).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn clawgate(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run clawgate")
}

pub fn conf_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("conf")
}

/// A running gateway; killed when dropped.
pub struct Gateway {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub base: String,
}

impl Gateway {
    /// `yaml` may use `{listen}`, `{dir}` and `{backend}`; a `gateway:` section must include
    /// `listen: "{listen}"` and should set `pid_file`/`upgrade_sock` under `{dir}`.
    pub fn start(yaml: &str, backend: &str) -> Gateway {
        Self::start_with(yaml, backend, &[])
    }

    pub fn start_with(yaml: &str, backend: &str, env: &[(&str, &str)]) -> Gateway {
        let (dir, config, addr) = write_config(yaml, backend);
        let mut cmd = Command::new(bin());
        cmd.args(["start", "--foreground", "--config"]).arg(&config);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn clawgate");
        let mut g = Gateway {
            child: Some(child),
            addr,
            dir,
            config,
            base: format!("http://{addr}"),
        };
        g.wait_ready();
        g
    }

    pub fn config_str(&self) -> &str {
        self.config.to_str().expect("utf-8 path")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!("clawgate exited early ({status}): {err}");
                }
            }
            if TcpStream::connect(self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("clawgate did not start listening on {}", self.addr);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn write_config(yaml: &str, backend: &str) -> (tempfile::TempDir, PathBuf, SocketAddr) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let text = yaml
        .replace("{listen}", &addr.to_string())
        .replace("{dir}", dir.path().to_str().expect("utf-8 dir"))
        .replace("{backend}", backend);
    let config = dir.path().join("clawgate.yaml");
    std::fs::write(&config, text).expect("write config");
    (dir, config, addr)
}

/// Sends raw bytes and reads the answer until the server closes or `timeout` passes.
pub fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(timeout)).expect("timeout");
    s.write_all(request).expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// Status code of a raw HTTP/1.1 answer.
pub fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The JSON body of a raw answer with Content-Length.
pub fn json_of(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    serde_json::from_str(body.trim()).unwrap_or(serde_json::Value::Null)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Asserts a DESIGN-shaped JSON error.
pub fn assert_json_error(v: &serde_json::Value, code: u16, name: &str) {
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["error"], name, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(
        v["request_id"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

/// Writes a self-signed certificate for `localhost` and its key into `dir`; returns their paths.
pub fn self_signed(dir: &std::path::Path) -> (String, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let c = dir.join("gateway.pem");
    let k = dir.join("gateway.key");
    std::fs::write(&c, cert.cert.pem()).expect("write cert");
    std::fs::write(&k, cert.signing_key.serialize_pem()).expect("write key");
    (c.display().to_string(), k.display().to_string())
}

/// A one-route gateway (`/*` to `{backend}`), over TLS when `tls` names a certificate and key.
pub fn one_route_yaml(tls: Option<&(String, String)>) -> String {
    let tls = tls.map_or(String::new(), |(c, k)| {
        format!("  tls: {{enabled: true, cert: \"{c}\", key: \"{k}\"}}\n")
    });
    format!(
        "gateway:\n  listen: \"{{listen}}\"\n  pid_file: \"{{dir}}/p.pid\"\n  upgrade_sock: \"{{dir}}/u.sock\"\n{tls}routes:\n  - path: \"/*\"\n    backend_url: \"{{backend}}\"\n"
    )
}

/// A real `redis-server` on a free port, without persistence; stopped when dropped.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// With TLS: the TLS port, and the certificate and key files.
    pub tls: Option<(u16, String, String)>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            tls: None,
        };
        r.restart();
        r
    }

    /// Also listens with TLS (certificate for `localhost` in `dir`); plain `port` stays open
    /// for the test's own commands.
    pub fn start_tls(dir: &std::path::Path) -> Redis {
        let (cert, key) = self_signed(dir);
        let mut r = Redis {
            port: free_port(),
            child: None,
            tls: Some((free_port(), cert, key)),
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same port (after `stop`).
    pub fn restart(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some((port, cert, key)) = &self.tls {
            cmd.args(["--tls-port", &port.to_string(), "--tls-cert-file", cert])
                .args(["--tls-key-file", key, "--tls-ca-cert-file", cert])
                .args(["--tls-auth-clients", "no"]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed by scripts/setup.sh");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command(&["PING"]).as_deref() != Some("+PONG") {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One command over RESP; the first line of the answer.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).ok()?;
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.lines().next().map(str::to_string)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Collects a gateway's stderr in the background (to look for log lines).
pub fn capture_stderr(g: &mut Gateway) -> std::sync::Arc<std::sync::Mutex<String>> {
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    if let Some(mut err) = g.child.as_mut().and_then(|c| c.stderr.take()) {
        let o = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = o.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
    }
    out
}

/// The gateway's Prometheus text (`GET /metrics`).
pub async fn metrics_text(g: &Gateway) -> String {
    client()
        .get(g.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}
