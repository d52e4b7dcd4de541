//! Federation of two MCP servers behind one `protocol: mcp` route (DESIGN §5.2), through the
//! real binary with the official Python SDK's servers and client: prefixed and filtered tool
//! lists, calls routed by prefix, a server that stops and comes back.

mod common;

use common::mcp::{client, McpServer};
use common::{client as http, metrics_text, Gateway};
use serde_json::{json, Value};

const GATEWAY: &str = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents:
  "data-agent": {api_key: "key-data", tools: ["github__*", "!github__delete_*", "search__search_web"]}
  "admin-agent": {api_key: "key-admin"}
  "busy-agent": {api_key: "key-busy", tool_rate_limits: {"search__search_web": "1/minute"}}
routes:
  - path: "/mcp"
    protocol: mcp
    auth_required: true
    mcp:
      servers:
        github: {backend_url: "{github}/mcp"}
        search: {backend_url: "{search}/mcp"}
monitoring:
  metrics: {enabled: true}
"#;

/// Two servers (`github` answering in SSE, `search` in JSON) behind one gateway.
fn federation() -> (McpServer, McpServer, Gateway) {
    let github = McpServer::start("github", &[]);
    let search = McpServer::start("search", &["--json"]);
    let yaml = GATEWAY
        .replace("{github}", &github.base())
        .replace("{search}", &search.base());
    let g = Gateway::start(&yaml, "unused");
    (github, search, g)
}

fn tools(v: &Value) -> Vec<String> {
    let mut t: Vec<String> = (v["tools"].as_array().into_iter().flatten())
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    t.sort();
    t
}

#[test]
fn tools_of_both_servers_are_listed_prefixed_and_filtered() {
    let (_github, _search, g) = federation();
    let url = g.url("/mcp");
    let out = client(&url, &[("x-api-key", "key-admin")], &["list", "info"]);
    let all = [
        "github__create_issue",
        "github__delete_repo",
        "github__list_repos",
        "github__search_web",
        "search__create_issue",
        "search__delete_repo",
        "search__list_repos",
        "search__search_web",
    ];
    assert_eq!(tools(&out[0]), all, "{out:?}");
    assert_eq!(out[1]["server"], "clawgate", "{out:?}");
    assert!(out[1]["session_id"].is_string(), "{out:?}");

    let out = client(&url, &[("x-api-key", "key-data")], &["list"]);
    assert_eq!(
        tools(&out[0]),
        [
            "github__create_issue",
            "github__list_repos",
            "github__search_web",
            "search__search_web"
        ],
        "{out:?}"
    );
}

#[test]
fn calls_go_to_the_server_their_prefix_names() {
    let (github, search, g) = federation();
    let url = g.url("/mcp");
    let out = client(
        &url,
        &[("x-api-key", "key-data")],
        &[
            "call",
            "github__search_web",
            r#"{"query":"pingora"}"#,
            "call",
            "search__search_web",
            r#"{"query":"rust"}"#,
            "call",
            "github__delete_repo",
            r#"{"repo":"clawgate"}"#,
            "call",
            "search__list_repos",
            r#"{"owner":"me"}"#,
        ],
    );
    assert_eq!(out[0]["text"], "github: results for pingora", "{out:?}");
    assert_eq!(out[1]["text"], "search: results for rust", "{out:?}");
    assert_eq!(out[2]["error"]["code"], -32003, "{out:?}");
    assert_eq!(out[3]["error"]["code"], -32003, "{out:?}");
    assert_eq!(github.count("search_web"), 1);
    assert_eq!(search.count("search_web"), 1);
    assert_eq!(
        github.count("delete_repo"),
        0,
        "a denied call never reaches the server"
    );
    assert_eq!(search.count("list_repos"), 0);

    let out = client(
        &url,
        &[("x-api-key", "key-admin")],
        &["call", "gitlab__search_web", r#"{"query":"x"}"#],
    );
    assert_eq!(out[0]["error"]["code"], -32602, "{out:?}");
    assert_eq!(github.count("search_web") + search.count("search_web"), 2);
}

#[test]
fn a_stopped_server_drops_out_and_comes_back() {
    let (mut github, search, g) = federation();
    let url = g.url("/mcp");
    let key = [("x-api-key", "key-admin")];
    github.stop();
    let out = client(
        &url,
        &key,
        &[
            "list",
            "call",
            "github__search_web",
            r#"{"query":"a"}"#,
            "call",
            "search__search_web",
            r#"{"query":"b"}"#,
        ],
    );
    assert!(
        tools(&out[0]).iter().all(|t| t.starts_with("search__")),
        "{out:?}"
    );
    assert_eq!(tools(&out[0]).len(), 4, "{out:?}");
    assert_eq!(out[1]["error"]["code"], -32000, "{out:?}");
    assert_eq!(out[1]["error"]["data"]["server"], "github", "{out:?}");
    assert_eq!(out[2]["text"], "search: results for b", "{out:?}");
    assert_eq!(search.count("search_web"), 1);

    github.restart();
    let out = client(
        &url,
        &key,
        &["list", "call", "github__search_web", r#"{"query":"c"}"#],
    );
    assert_eq!(tools(&out[0]).len(), 8, "{out:?}");
    assert_eq!(out[1]["text"], "github: results for c", "{out:?}");
    assert_eq!(github.count("search_web"), 1);
}

#[test]
fn tool_limits_count_the_prefixed_name() {
    let (github, search, g) = federation();
    let call = |tool| ["call", tool, r#"{"query":"q"}"#];
    let steps = [
        call("search__search_web"),
        call("search__search_web"),
        call("github__search_web"),
    ]
    .concat();
    let out = client(&g.url("/mcp"), &[("x-api-key", "key-busy")], &steps);
    assert_eq!(out[0]["text"], "search: results for q", "{out:?}");
    assert_eq!(out[1]["error"]["code"], -32029, "{out:?}");
    assert_eq!(out[2]["text"], "github: results for q", "{out:?}");
    assert_eq!(
        (search.count("search_web"), github.count("search_web")),
        (1, 1)
    );
}

/// POSTs one JSON-RPC message in the session `token` (if any): status, session header, body.
async fn rpc(g: &Gateway, token: Option<&str>, body: Value) -> (u16, Option<String>, Value) {
    let mut rb = http()
        .post(g.url("/mcp"))
        .header("x-api-key", "key-admin")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(body.to_string());
    if let Some(t) = token {
        rb = rb.header("mcp-session-id", t);
    }
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let session =
        (r.headers().get("mcp-session-id")).and_then(|v| v.to_str().ok().map(String::from));
    (status, session, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_session_outlives_a_server_restart() {
    let (mut github, _search, g) = federation();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}});
    let (status, token, v) = rpc(&g, None, init).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18", "{v}");
    let token = token.expect("a session id");
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"});
    let count = |v: &Value| v["result"]["tools"].as_array().map_or(0, Vec::len);
    let (_, _, v) = rpc(&g, Some(&token), list.clone()).await;
    assert_eq!(count(&v), 8, "{v}");
    // The restarted server knows none of the sessions: the gateway opens another.
    github.restart();
    let (_, _, v) = rpc(&g, Some(&token), list).await;
    assert_eq!(count(&v), 8, "{v}");
    let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "github__search_web", "arguments": {"query": "again"}}});
    let (status, _, _) = rpc(&g, Some(&token), call).await;
    assert_eq!(status, 200);
    assert_eq!(github.count("search_web"), 1);
    let bye = http()
        .delete(g.url("/mcp"))
        .header("x-api-key", "key-admin")
        .header("mcp-session-id", &token)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(bye.status().as_u16(), 200);
}

#[tokio::test]
async fn the_gateway_answers_what_it_does_not_federate() {
    let (_github, _search, g) = federation();
    let post = |body: &'static str| {
        let rb = http()
            .post(g.url("/mcp"))
            .header("x-api-key", "key-admin")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        async move {
            let r = rb.send().await.expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, v) = post(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
    assert_eq!((status, &v["result"]), (200, &json!({})), "{v}");
    let (status, v) = post(r#"{"jsonrpc":"2.0","id":2,"method":"resources/list"}"#).await;
    assert_eq!((status, &v["error"]["code"]), (200, &json!(-32601)), "{v}");
    let (status, _) = post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
    assert_eq!(status, 202);
    // Older clients' batches: each request answered, as JSON (the SSE server's too).
    let (status, v) = post(
        r#"[{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"github__search_web","arguments":{"query":"x"}}},
            {"jsonrpc":"2.0","method":"notifications/progress","params":{}},
            {"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"search__search_web","arguments":{"query":"y"}}},
            {"jsonrpc":"2.0","id":"c","method":"prompts/list"}]"#,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v.as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v[0]["id"], "a", "{v}");
    assert_eq!(
        v[0]["result"]["content"][0]["text"], "github: results for x",
        "{v}"
    );
    assert_eq!(
        v[1]["result"]["content"][0]["text"], "search: results for y",
        "{v}"
    );
    assert_eq!(v[2]["error"]["code"], -32601, "{v}");
    // Metrics name the tool as the client sees it, and the server it went to.
    let (status, v) = post(
        r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"search__search_web","arguments":{"query":"z"}}}"#,
    )
    .await;
    assert_eq!(
        (status, &v["result"]["isError"]),
        (200, &json!(false)),
        "{v}"
    );
    let call = [
        "openclaw_gateway_mcp_requests_total{",
        "method=\"tools/call\"",
        "tool=\"search__search_web\"",
        "server=\"search\"",
        "outcome=\"ok\"",
    ];
    // The exchange is counted when its log line is written, just after the answer: polled.
    let counted =
        |m: &str| (m.lines()).any(|l| !l.starts_with('#') && call.iter().all(|p| l.contains(p)));
    let mut m = String::new();
    for _ in 0..100 {
        m = metrics_text(&g).await;
        if counted(&m) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(counted(&m), "{m}");
    let get = http()
        .get(g.url("/mcp"))
        .header("x-api-key", "key-admin")
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("GET");
    assert_eq!(get.status().as_u16(), 405);
    let foreign = http()
        .delete(g.url("/mcp"))
        .header("x-api-key", "key-admin")
        .header("mcp-session-id", "not-a-token")
        .send()
        .await
        .expect("DELETE");
    assert_eq!(foreign.status().as_u16(), 404);
}
