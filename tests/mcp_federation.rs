//! Federation of two MCP servers behind one `protocol: mcp` route (DESIGN §5.2), through the
//! real binary with the official Python SDK's servers and client: prefixed and filtered tool
//! lists, calls routed by prefix, a server that stops and comes back; capabilities, prompts and
//! resources merged, the client's identity headers passed on, tool streams relayed as they run.

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
    transforms:
      request:
        - {type: add_header, header: X-Route-Tag, value: "tag-${agent_id}"}
monitoring:
  metrics: {enabled: true}
"#;

/// Two servers (`github` answering in SSE, `search` in JSON) behind one gateway.
fn federation() -> (McpServer, McpServer, Gateway) {
    federation_of(&[], &["--json"])
}

/// `federation` with more flags for each server (`--extras`, `--no-prompts`).
fn federation_of(github: &[&str], search: &[&str]) -> (McpServer, McpServer, Gateway) {
    let github = McpServer::start("github", github);
    let search = McpServer::start("search", search);
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
    // Past Pingora's 64 KB read-ahead: federation reads the whole message itself.
    let long = "p".repeat(100 * 1024);
    let args = serde_json::json!({"query": long}).to_string();
    let big = client(
        &url,
        &[("x-api-key", "key-data")],
        &["call", "search__search_web", &args],
    );
    let text = big[0]["text"].as_str().unwrap_or_default();
    assert_eq!(
        text,
        format!("search: results for {long}"),
        "{:?}",
        big[0]["error"]
    );
    assert_eq!(out[3]["error"]["code"], -32003, "{out:?}");
    assert_eq!(github.count("search_web"), 1);
    assert_eq!(search.count("search_web"), 2);
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
    assert_eq!(github.count("search_web") + search.count("search_web"), 3);
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
    assert_eq!(
        (status, &v["result"]),
        (200, &json!({"resources": []})),
        "{v}"
    );
    let (status, v) =
        post(r#"{"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":"info"}}"#)
            .await;
    assert_eq!((status, &v["error"]["code"]), (200, &json!(-32601)), "{v}");
    let (status, _) = post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).await;
    assert_eq!(status, 202);
    // Older clients' batches: each request answered, as JSON (the SSE server's too).
    let (status, v) = post(
        r#"[{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"github__search_web","arguments":{"query":"x"}}},
            {"jsonrpc":"2.0","method":"notifications/progress","params":{}},
            {"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"search__search_web","arguments":{"query":"y"}}},
            {"jsonrpc":"2.0","id":"c","method":"completion/complete","params":{}}]"#,
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

#[test]
fn capabilities_are_the_union_and_prompts_are_routed_by_prefix() {
    // `search` has no prompts: the union still offers them, from `github`.
    let (_github, _search, g) =
        federation_of(&["--extras"], &["--json", "--extras", "--no-prompts"]);
    let steps = [
        "info",
        "prompts",
        "prompt",
        "github__summarize",
        r#"{"topic":"rust"}"#,
        "prompt",
        "gitlab__summarize",
        r#"{"topic":"x"}"#,
    ];
    let out = client(&g.url("/mcp"), &[("x-api-key", "key-admin")], &steps);
    // Only what the gateway federates, with none of the flags it cannot honour (the servers
    // offer `subscribe` and `listChanged` keys).
    assert_eq!(
        out[0]["capabilities"],
        json!({"tools": {}, "resources": {}, "prompts": {}}),
        "{out:?}"
    );
    assert_eq!(out[1]["prompts"], json!(["github__summarize"]), "{out:?}");
    assert_eq!(out[2]["text"], "github: summarize rust", "{out:?}");
    assert_eq!(out[3]["error"]["code"], -32602, "{out:?}");
}

#[test]
fn resources_are_merged_and_read_from_the_server_that_serves_them() {
    let (mut github, _search, g) = federation_of(&["--extras"], &["--json", "--extras"]);
    let url = g.url("/mcp");
    let key = [("x-api-key", "key-admin")];
    let read = |uri| ["read", uri];
    let steps = [
        &["resources"][..],
        &read("github://readme"),
        &read("search://readme"),
        &read("search://issues/7"),
        &read("memo://shared"),
        &read("gitlab://readme"),
    ]
    .concat();
    let out = client(&url, &key, &steps);
    let mut listed: Vec<(String, String)> = (out[0]["resources"].as_array().into_iter().flatten())
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().into(),
                r["uri"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    listed.sort();
    let pair = |n: &str, u: &str| (n.to_string(), u.to_string());
    assert_eq!(
        listed,
        [
            pair("github__memo", "memo://shared"),
            pair("github__readme", "github://readme"),
            pair("search__memo", "memo://shared"),
            pair("search__readme", "search://readme"),
        ],
        "names prefixed, URIs as the servers wrote them: {out:?}"
    );
    let templates = &out[0]["templates"];
    assert_eq!(
        templates,
        &json!([
            {"name": "github__issue", "uri_template": "github://issues/{number}"},
            {"name": "search__issue", "uri_template": "search://issues/{number}"},
        ]),
        "{out:?}"
    );
    assert_eq!(out[1]["text"], "github: the readme", "{out:?}");
    assert_eq!(out[2]["text"], "search: the readme", "{out:?}");
    assert_eq!(out[3]["text"], "search: issue 7", "{out:?}");
    // Listed by both: the first server in the route's order answers.
    assert_eq!(out[4]["text"], "github: the shared memo", "{out:?}");
    assert_eq!(out[5]["error"]["code"], -32002, "{out:?}");

    github.stop();
    let steps = [
        &["resources"][..],
        &read("github://readme"),
        &read("memo://shared"),
    ]
    .concat();
    let out = client(&url, &key, &steps);
    let uris: Vec<&str> = (out[0]["resources"].as_array().into_iter().flatten())
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert_eq!(uris, ["search://readme", "memo://shared"], "{out:?}");
    assert_eq!(out[1]["error"]["code"], -32000, "{out:?}");
    assert_eq!(out[1]["error"]["data"]["server"], "github", "{out:?}");
    assert_eq!(out[2]["text"], "search: the shared memo", "{out:?}");
}

#[test]
fn the_clients_identity_and_trace_headers_reach_every_server() {
    let (_github, _search, g) = federation_of(&["--extras"], &["--json", "--extras"]);
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = [
        ("x-api-key", "key-admin"),
        ("x-request-id", "fed-trace-1"),
        ("traceparent", trace),
        ("cookie", "session=client-secret"),
    ];
    let steps = [
        "call",
        "github__whoami",
        "{}",
        "call",
        "search__whoami",
        "{}",
    ];
    let out = client(&g.url("/mcp"), &headers, &steps);
    for (server, seen) in ["github", "search"].iter().zip(&out) {
        let seen: Value = serde_json::from_str(seen["text"].as_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{server}: {e}: {out:?}"));
        assert_eq!(seen["x-agent-id"], "admin-agent", "{server}: {seen}");
        assert_eq!(seen["x-request-id"], "fed-trace-1", "{server}: {seen}");
        assert_eq!(seen["traceparent"], trace, "{server}: {seen}");
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{server}: {seen}");
        assert_eq!(seen["x-route-tag"], "tag-admin-agent", "{server}: {seen}");
        for secret in ["x-api-key", "authorization", "cookie"] {
            assert_eq!(seen[secret], Value::Null, "{server} saw {secret}: {seen}");
        }
    }
}

#[test]
fn a_tools_stream_reaches_the_client_while_the_tool_runs() {
    let (_github, _search, g) = federation_of(&["--extras"], &["--json", "--extras"]);
    let steps = ["stream", "github__count_slowly", r#"{"n":4,"pause":0.5}"#];
    let out = client(&g.url("/mcp"), &[("x-api-key", "key-admin")], &steps);
    let out = &out[0];
    assert_eq!(out["text"], "github: counted to 4", "{out}");
    let progress = out["progress"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        progress.len(),
        4,
        "every progress notification arrives: {out}"
    );
    let took = out["took"].as_f64().unwrap_or_default();
    let first = progress[0]["at"].as_f64().unwrap_or(f64::MAX);
    assert!(took >= 2.0, "{out}");
    // Read whole, the stream would reach the client at the end, all at once.
    assert!(
        first < took - 1.0,
        "the first progress arrived at {first:.2}s of {took:.2}s: {out}"
    );
    eprintln!(
        "progress at {:?} of {took:.2}s",
        progress.iter().map(|p| &p["at"]).collect::<Vec<_>>()
    );
    let last = progress[3]["at"].as_f64().unwrap_or_default();
    assert!(
        last - first >= 1.0,
        "progress arrived as it was reported: {out}"
    );
}

#[test]
fn a_stateless_client_discovers_the_gateway() {
    let (_github, _search, g) = federation_of(&["--extras"], &["--json", "--extras"]);
    let out = common::mcp::try_client_with(
        &g.url("/mcp"),
        &[("x-api-key", "key-admin")],
        &["--modern"],
        &[
            "info",
            "prompts",
            "call",
            "search__search_web",
            r#"{"query":"now"}"#,
            "stream",
            "github__count_slowly",
            r#"{"n":2,"pause":0.1}"#,
        ],
    )
    .unwrap_or_else(|e| panic!("modern client: {e}"));
    assert_eq!(out[0]["server"], "clawgate", "{out:?}");
    assert_eq!(out[0]["protocol_version"], "2026-07-28", "{out:?}");
    assert_eq!(
        out[0]["capabilities"],
        json!({"tools": {}, "resources": {}, "prompts": {}}),
        "{out:?}"
    );
    let mut prompts: Vec<&str> = (out[1]["prompts"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    prompts.sort();
    assert_eq!(
        prompts,
        ["github__summarize", "search__summarize"],
        "{out:?}"
    );
    assert_eq!(out[2]["text"], "search: results for now", "{out:?}");
    // An SSE answer, its result completed for the revision on the way.
    assert_eq!(out[3]["text"], "github: counted to 2", "{out:?}");
    assert_eq!(
        out[3]["progress"].as_array().map(Vec::len),
        Some(2),
        "{out:?}"
    );
}
