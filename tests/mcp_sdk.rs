//! Real MCP peers from the official Python SDK (`mcp`, PyPI; scripts/setup.sh installs it): the
//! SDK's client and server talk to each other directly and through the real gateway binary.
//! These run against plain proxy routes (no `protocol: mcp` yet): what passes through today.

mod common;

use common::mcp::{client, try_client, try_client_with, McpServer};
use common::Gateway;
use serde_json::Value;

/// One MCP route behind an API key; `{backend}` is the server's `http://127.0.0.1:PORT`.
const GATEWAY: &str = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents:
  "agent-a": {api_key: "key-a"}
routes:
  - {path: "/mcp", backend_url: "{backend}", auth_required: true}
"#;

const STEPS: &[&str] = &[
    "list",
    "call",
    "search_web",
    r#"{"query":"pingora"}"#,
    "info",
];

/// Checks one session of `STEPS`: the four tools, the call answered by `server`, one session id
/// on every answer (when `sessions`), and every POST answer of the expected content type.
fn check_session(out: &[Value], server: &str, content_type: &str, sessions: bool) {
    assert_eq!(
        out[0]["tools"],
        serde_json::json!(["search_web", "list_repos", "create_issue", "delete_repo"]),
        "{out:?}"
    );
    assert_eq!(out[1]["is_error"], false, "{out:?}");
    assert_eq!(out[1]["error"], Value::Null, "{out:?}");
    assert_eq!(
        out[1]["text"],
        format!("{server}: results for pingora"),
        "{out:?}"
    );
    let info = &out[2];
    assert_eq!(info["server"], server, "{info}");
    assert_eq!(info["protocol_version"], "2025-11-25", "{info}");
    let responses = info["responses"].as_array().expect("responses");
    let posts: Vec<&Value> = responses.iter().filter(|r| r["method"] == "POST").collect();
    // initialize, notifications/initialized (202), tools/list, tools/call
    assert_eq!(posts.len(), 4, "{info}");
    for r in &posts {
        let status = r["status"].as_u64().unwrap_or(0);
        assert!(status == 200 || status == 202, "{info}");
        if status == 200 {
            assert!(
                r["content_type"]
                    .as_str()
                    .is_some_and(|c| c.starts_with(content_type)),
                "{content_type} expected: {info}"
            );
        }
    }
    if sessions {
        let id = info["session_id"].as_str().expect("a session id");
        assert!(!id.is_empty(), "{info}");
        for r in responses {
            assert_eq!(r["session_id"], id, "one session throughout: {info}");
        }
        // The server-initiated stream (GET with the session id) opened too.
        assert!(
            responses
                .iter()
                .any(|r| r["method"] == "GET" && r["status"] == 200),
            "{info}"
        );
    } else {
        assert_eq!(info["session_id"], Value::Null, "{info}");
    }
}

#[test]
fn sdk_client_and_server_talk_directly() {
    let server = McpServer::start("direct", &[]);
    let out = client(&server.url(), &[], STEPS);
    check_session(&out, "direct", "text/event-stream", true);
    assert_eq!(
        server.counts(),
        serde_json::json!({"search_web": 1, "list_repos": 0, "create_issue": 0, "delete_repo": 0})
    );
}

#[test]
fn sdk_session_through_the_gateway_with_sse_answers() {
    let server = McpServer::start("sse", &[]);
    let g = Gateway::start(GATEWAY, &server.base());
    let out = client(&g.url("/mcp"), &[("x-api-key", "key-a")], STEPS);
    check_session(&out, "sse", "text/event-stream", true);
    assert_eq!(server.count("search_web"), 1);

    // Without the key the gateway refuses before the server sees anything.
    let refused = try_client(
        &g.url("/mcp"),
        &[],
        &["call", "search_web", r#"{"query":"x"}"#],
    );
    let err = refused.expect_err("no API key: refused");
    assert!(err.contains("HTTP answers: POST 401"), "{err}");
    assert_eq!(server.count("search_web"), 1);
}

#[test]
fn sdk_session_through_the_gateway_with_json_answers() {
    let server = McpServer::start("json", &["--json"]);
    let g = Gateway::start(GATEWAY, &server.base());
    let out = client(&g.url("/mcp"), &[("x-api-key", "key-a")], STEPS);
    check_session(&out, "json", "application/json", true);
    assert_eq!(server.count("search_web"), 1);
}

#[test]
fn sdk_stateless_server_through_the_gateway() {
    let server = McpServer::start("stateless", &["--stateless"]);
    let g = Gateway::start(GATEWAY, &server.base());
    let out = client(&g.url("/mcp"), &[("x-api-key", "key-a")], STEPS);
    check_session(&out, "stateless", "text/event-stream", false);
    assert_eq!(server.count("search_web"), 1);

    // The stateless revision (2026-07-28: `server/discover`, no handshake) passes too.
    let out = try_client_with(
        &g.url("/mcp"),
        &[("x-api-key", "key-a")],
        &["--modern"],
        STEPS,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out[1]["text"], "stateless: results for pingora", "{out:?}");
    assert_eq!(out[2]["protocol_version"], "2026-07-28", "{out:?}");
    assert_eq!(out[2]["session_id"], Value::Null, "{out:?}");
    assert_eq!(server.count("search_web"), 2);
}

#[test]
fn sdk_server_stops_and_restarts_on_its_port() {
    let mut server = McpServer::start("restart", &["--json"]);
    let call = ["call", "list_repos", r#"{"owner":"octo"}"#];
    let out = client(&server.url(), &[], &call);
    assert_eq!(
        out[0]["text"], "restart: repos of octo: alpha, beta",
        "{out:?}"
    );
    server.stop();
    let err = try_client(&server.url(), &[], &call).expect_err("stopped");
    assert!(err.contains("ConnectError"), "{err}");
    server.restart();
    assert_eq!(server.count("list_repos"), 0, "a fresh process");
    let out = client(&server.url(), &[], &call);
    assert_eq!(out[0]["is_error"], false, "{out:?}");
    assert_eq!(server.count("list_repos"), 1);
}
