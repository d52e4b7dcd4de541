//! The commented starter configuration written by `clawgate init` without `--config`.

pub const STARTER: &str = r#"# clawgate configuration — see README.md for every key.
name: "my-gateway"
version: "1.0"

gateway:
  listen: "127.0.0.1:8080"        # or a list: ["0.0.0.0:8080", "[::]:8080"]
  base_path: "/api/v1"            # prefix of every route and of {base_path}/health
  # threads: 4                    # worker threads (default: number of CPUs)
  # tls: {enabled: true, cert: "/etc/ssl/certs/gateway.pem", key: "/etc/ssl/private/gateway.key"}
  # pid_file: "/run/clawgate/clawgate.pid"   # default: /tmp/clawgate-<digest of this path>.pid
  max_body_size: "10MB"           # larger request bodies get 413
  connect_timeout: "5s"

routes:
  - path: "/llm/*"                # matches /api/v1/llm, /api/v1/llm/ and everything below
    name: "llm"
    backend_url: "http://127.0.0.1:3000"
    strip_prefix: true            # the backend sees /chat for /api/v1/llm/chat
    timeout: "60s"                # wait for the response head, and each silence in a stream
"#;
