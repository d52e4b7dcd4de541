//! `protocol: mcp` routes through the real binary, with the official Python SDK's server and
//! client (DESIGN §5.2): per-tool authorisation and filtered tool lists, in SSE and JSON.

mod common;

use common::mcp::{client, McpServer};
use common::{client as http, metrics_text, Gateway};
use serde_json::{json, Value};

const GATEWAY: &str = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents:
  "data-agent": {api_key: "key-data", tools: ["search_web", "list_*"]}
  "ops-agent": {api_key: "key-ops", tools: ["!delete_*"]}
  "admin-agent": {api_key: "key-admin"}
  "busy-agent": {api_key: "key-busy", tool_rate_limits: {"search_web": "2/minute"}}
routes:
  - path: "/mcp"
    protocol: mcp
    auth_required: true
    mcp:
      servers:
        github: {backend_url: "{backend}/mcp"}
  - path: "/tools/*"
    protocol: mcp
    auth_required: true
    mcp:
      servers:
        github: {backend_url: "{backend}/mcp"}
monitoring:
  metrics: {enabled: true}
  logging: {output: "{dir}/access.log"}
"#;

fn steps(calls: &[(&str, &str)]) -> Vec<String> {
    let mut s = vec!["list".to_string()];
    for (tool, args) in calls {
        s.extend(["call".to_string(), tool.to_string(), args.to_string()]);
    }
    s
}

fn run(url: &str, key: &str, calls: &[(&str, &str)]) -> Vec<Value> {
    let steps = steps(calls);
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    client(url, &[("x-api-key", key)], &steps)
}

fn check_grants(flags: &[&str]) {
    let server = McpServer::start("github", flags);
    let g = Gateway::start(GATEWAY, &server.base());
    let url = g.url("/mcp");
    let calls = [
        ("search_web", r#"{"query":"pingora"}"#),
        ("delete_repo", r#"{"repo":"clawgate"}"#),
    ];

    let data = run(&url, "key-data", &calls);
    assert_eq!(
        data[0]["tools"],
        json!(["search_web", "list_repos"]),
        "{data:?}"
    );
    assert_eq!(data[1]["text"], "github: results for pingora", "{data:?}");
    assert_eq!(data[2]["error"]["code"], -32003, "{data:?}");
    assert_eq!(
        server.count("delete_repo"),
        0,
        "a denied call never reaches the server"
    );

    let ops = run(&url, "key-ops", &calls);
    assert_eq!(
        ops[0]["tools"],
        json!(["search_web", "list_repos", "create_issue"]),
        "{ops:?}"
    );
    assert_eq!(ops[2]["error"]["code"], -32003, "{ops:?}");

    let admin = run(&url, "key-admin", &calls);
    assert_eq!(
        admin[0]["tools"].as_array().map(Vec::len),
        Some(4),
        "{admin:?}"
    );
    assert_eq!(admin[2]["error"], Value::Null, "{admin:?}");
    assert_eq!(server.count("delete_repo"), 1);
    assert_eq!(server.count("search_web"), 3);
}

#[test]
fn tool_grants_hold_with_sse_answers() {
    check_grants(&[]);
}

#[test]
fn tool_grants_hold_with_json_answers() {
    check_grants(&["--json"]);
}

#[tokio::test]
async fn bodies_that_are_not_json_rpc_never_reach_the_server() {
    let server = McpServer::start("github", &["--json"]);
    let g = Gateway::start(GATEWAY, &server.base());
    let post = |body: &'static str, extra: Option<(&'static str, &'static str)>| {
        let mut rb = http()
            .post(g.url("/mcp"))
            .header("x-api-key", "key-admin")
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body);
        if let Some((k, v)) = extra {
            rb = rb.header(k, v);
        }
        async move {
            let r = rb.send().await.expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, v) = post("{not json", None).await;
    assert_eq!((status, &v["error"]["code"]), (400, &json!(-32700)), "{v}");
    assert_eq!(v["id"], Value::Null);
    let (status, v) = post(r#"{"jsonrpc": "2.0"}"#, None).await;
    assert_eq!((status, &v["error"]["code"]), (400, &json!(-32600)), "{v}");
    // The stateless era's headers must say what the body says.
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_repo","arguments":{"repo":"x"}}}"#;
    let (status, v) = post(call, Some(("mcp-name", "search_web"))).await;
    assert_eq!(status, 400, "{v}");
    // A batch with a denied call goes nowhere.
    let g2 = &g;
    let r = http()
        .post(g2.url("/mcp"))
        .header("x-api-key", "key-data")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(format!("[{call}]"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v[0]["error"]["code"], -32003, "{v}");
    assert_eq!(server.count("delete_repo"), 0);
}

/// The sum of the metric lines that contain every one of `parts`.
fn metric(text: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_and_log_name_the_tool_never_its_arguments() {
    let server = McpServer::start("github", &["--json"]);
    let g = Gateway::start(GATEWAY, &server.base());
    let url = g.url("/mcp");
    let calls = [
        ("search_web", r#"{"query":"secret-argument"}"#),
        ("delete_repo", r#"{"repo":"secret-repo"}"#),
    ];
    let out = tokio::task::spawn_blocking(move || run(&url, "key-data", &calls))
        .await
        .expect("client");
    assert_eq!(out[2]["error"]["code"], -32003, "{out:?}");

    let m = metrics_text(&g).await;
    let requests = "openclaw_gateway_mcp_requests_total{";
    let data = "agent_id=\"data-agent\"";
    let call = "method=\"tools/call\"";
    let ok = [
        requests,
        data,
        call,
        "tool=\"search_web\"",
        "outcome=\"ok\"",
        "server=\"github\"",
    ];
    assert_eq!(metric(&m, &ok), 1.0, "{m}");
    let denied = [
        requests,
        data,
        call,
        "tool=\"delete_repo\"",
        "outcome=\"denied\"",
    ];
    assert_eq!(metric(&m, &denied), 1.0, "{m}");
    let list = [requests, data, "method=\"tools/list\"", "outcome=\"ok\""];
    assert_eq!(metric(&m, &list), 1.0, "{m}");
    let seconds = [
        "openclaw_gateway_mcp_tool_duration_seconds_count{",
        "tool=\"search_web\"",
    ];
    assert_eq!(metric(&m, &seconds), 1.0, "{m}");

    let path = g.dir.path().join("access.log");
    let mut log = String::new();
    for _ in 0..100 {
        log = std::fs::read_to_string(&path).unwrap_or_default();
        if log.contains("delete_repo") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let line = log
        .lines()
        .find(|l| l.contains("\"mcp_tool\":\"search_web\""))
        .expect("the call's line");
    let v: Value = serde_json::from_str(line).expect("json");
    assert_eq!(v["mcp_method"], "tools/call");
    let session = v["mcp_session"].as_str().expect("a session digest");
    assert_eq!(session.len(), 12);
    assert!(
        !log.contains("secret"),
        "arguments never reach the log: {log}"
    );
}

#[tokio::test]
async fn tool_limits_answer_32029_with_retry_after() {
    let server = McpServer::start("github", &["--json"]);
    let g = Gateway::start(GATEWAY, &server.base());
    let url = g.url("/mcp");
    let q = r#"{"query":"x"}"#;
    let calls = [
        ("search_web", q),
        ("search_web", q),
        ("search_web", q),
        ("list_repos", r#"{"owner":"o"}"#),
    ];
    let out = tokio::task::spawn_blocking(move || run(&url, "key-busy", &calls))
        .await
        .expect("client");
    assert_eq!(out[1]["error"], Value::Null, "{out:?}");
    assert_eq!(out[2]["error"], Value::Null, "{out:?}");
    assert_eq!(out[3]["error"]["code"], -32029, "{out:?}");
    let wait = out[3]["error"]["data"]["retry_after"]
        .as_u64()
        .expect("retry_after");
    assert!((1..=60).contains(&wait), "{out:?}");
    assert_eq!(
        out[4]["error"],
        Value::Null,
        "another tool has no limit: {out:?}"
    );
    assert_eq!(server.count("search_web"), 2);

    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search_web","arguments":{"query":"x"}}}"#;
    let r = http()
        .post(g.url("/mcp"))
        .header("x-api-key", "key-busy")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(call)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status().as_u16(), 200);
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    assert!(retry.is_some_and(|s| s.parse::<u64>().is_ok_and(|n| n >= 1)));
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (json!(7), json!(-32029)),
        "{v}"
    );
    assert_eq!(server.count("search_web"), 2);
}

#[tokio::test]
async fn tool_limits_are_shared_through_redis() {
    let redis = common::Redis::start();
    let server = McpServer::start("github", &["--json", "--stateless"]);
    let yaml = format!("{GATEWAY}rate_limiting: {{store: \"{}\"}}\n", redis.url());
    let (a, b) = (
        Gateway::start(&yaml, &server.base()),
        Gateway::start(&yaml, &server.base()),
    );
    let call = |g: &Gateway| {
        let url = g.url("/mcp");
        async move {
            let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"search_web","arguments":{"query":"x"}}}"#;
            let r = http()
                .post(url)
                .header("x-api-key", "key-busy")
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-11-25")
                .body(body)
                .send()
                .await
                .expect("request");
            let v: Value = r.json().await.unwrap_or(Value::Null);
            v["error"]["code"].as_i64()
        }
    };
    assert_eq!(call(&a).await, None);
    assert_eq!(call(&b).await, None);
    assert_eq!(call(&a).await, Some(-32029));
    assert_eq!(call(&b).await, Some(-32029));
    assert_eq!(server.count("search_web"), 2);
}

/// Two instances, one server behind two addresses: the gateway's session id names the address
/// that holds the session, so any instance continues it there.
const AFFINITY: &str = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
agents:
  "data-agent": {api_key: "key-data"}
  "ops-agent": {api_key: "key-ops"}
backends:
  github: {urls: ["URL_ONE", "URL_TWO"]}
routes:
  - path: "/mcp"
    protocol: mcp
    auth_required: true
    mcp:
      session_key: "0001020304050607080900010203040506070809000102030405060708090001"
      servers:
        github: {backend: github}
"#;

#[tokio::test]
async fn a_session_continues_through_another_instance_on_its_address() {
    let one = McpServer::start("one", &["--json"]);
    let two = McpServer::start("two", &["--json"]);
    let yaml = AFFINITY
        .replace("URL_ONE", &format!("{}/mcp", one.base()))
        .replace("URL_TWO", &format!("{}/mcp", two.base()));
    let (a, b) = (
        Gateway::start(&yaml, &one.base()),
        Gateway::start(&yaml, &one.base()),
    );
    let post = |g: &Gateway, key: &'static str, session: Option<String>, body: String| {
        let mut rb = http()
            .post(g.url("/mcp"))
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .body(body);
        if let Some(s) = session {
            rb = rb.header("mcp-session-id", s);
        }
        async move {
            let r = rb.send().await.expect("request");
            let status = r.status().as_u16();
            let id = (r.headers().get("mcp-session-id"))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (status, id, r.text().await.unwrap_or_default())
        }
    };
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"}}});
    let (status, token, body) = post(&a, "key-data", None, init.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let token = token.expect("a session id");
    // The client holds the gateway's sealed token, not a server's id.
    assert!(token.len() > 60, "{token}");
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let (status, _, _) = post(&b, "key-data", Some(token.clone()), initialized.to_string()).await;
    assert_eq!(status, 202);
    for i in 0..6 {
        let call = json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call",
            "params": {"name": "search_web", "arguments": {"query": "q"}}});
        let g = if i % 2 == 0 { &a } else { &b };
        let (status, _, body) = post(g, "key-data", Some(token.clone()), call.to_string()).await;
        assert_eq!(status, 200, "call {i}: {body}");
        assert!(body.contains("results for q"), "{body}");
    }
    let (n1, n2) = (one.count("search_web"), two.count("search_web"));
    assert!((n1, n2) == (6, 0) || (n1, n2) == (0, 6), "{n1} {n2}");

    // Another agent cannot use the token; a forged one is an unknown session.
    let call = json!({"jsonrpc": "2.0", "id": 99, "method": "tools/list"}).to_string();
    let (status, _, _) = post(&b, "key-ops", Some(token.clone()), call.clone()).await;
    assert_eq!(status, 404);
    let last = if token.ends_with('A') { 'B' } else { 'A' };
    let forged = format!("{}{last}", &token[..token.len() - 1]);
    let (status, _, _) = post(&a, "key-data", Some(forged), call).await;
    assert_eq!(status, 404);
}

#[test]
fn every_path_of_a_prefix_route_is_the_servers_endpoint() {
    let server = McpServer::start("github", &[]);
    let g = Gateway::start(GATEWAY, &server.base());
    for path in ["/tools/", "/tools/anything"] {
        let out = run(
            &g.url(path),
            "key-admin",
            &[("search_web", r#"{"query":"p"}"#)],
        );
        assert_eq!(out[1]["text"], "github: results for p", "{path}: {out:?}");
    }
}

/// Messages past what Pingora reads ahead (64 KB with a `Content-Length`) are checked all the
/// same: held back until whole, then sent on in one piece, or refused with no byte of them
/// sent. 100 KB keeps the SDK client's argument under Linux's 128 KB argv string limit.
#[test]
fn large_messages_are_checked_whole() {
    let server = McpServer::start("github", &[]);
    let g = Gateway::start(GATEWAY, &server.base());
    let url = g.url("/mcp");
    let query = "p".repeat(100 * 1024);
    let args = json!({"query": query}).to_string();
    let admin = run(&url, "key-admin", &[("search_web", &args)]);
    let text = admin[1]["text"].as_str().unwrap_or_default();
    assert_eq!(
        text,
        format!("github: results for {query}"),
        "the whole argument arrived"
    );

    let args = json!({"repo": query}).to_string();
    let data = run(&url, "key-data", &[("delete_repo", &args)]);
    assert_eq!(data[1]["error"]["code"], -32003, "{:?}", data[1]);
    assert_eq!(server.count("delete_repo"), 0);
    assert_eq!(server.count("search_web"), 1);
}

/// A chunked body has no length to read ahead by: it is checked as it arrives, like a large one.
#[test]
fn chunked_messages_are_checked_whole() {
    let server = McpServer::start("github", &["--json", "--stateless"]);
    let g = Gateway::start(GATEWAY, &server.base());
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"delete_repo","arguments":{"repo":"x"}}}"#;
    let chunked = |key: &str, body: &str| {
        let (a, b) = body.split_at(body.len() / 2);
        let request = format!(
            "POST /mcp HTTP/1.1\r\nHost: x\r\nx-api-key: {key}\r\nconnection: close\r\n\
             content-type: application/json\r\naccept: application/json, text/event-stream\r\n\
             transfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
            a.len(),
            b.len()
        );
        common::raw(
            g.addr,
            request.as_bytes(),
            std::time::Duration::from_secs(10),
        )
    };
    let answer = chunked("key-data", call);
    assert_eq!(common::status_of(&answer), 200, "{answer}");
    assert!(answer.contains("-32003"), "{answer}");
    let answer = chunked("key-data", "{not json");
    assert_eq!(common::status_of(&answer), 400, "{answer}");
    assert!(answer.contains("-32700"), "{answer}");
    assert_eq!(
        server.count("delete_repo"),
        0,
        "refused bodies never reach the server"
    );
    // The server was not blamed for the gateway's refusals: a good request still goes there.
    let search = r#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"search_web","arguments":{"query":"q"}}}"#;
    let answer = chunked("key-admin", search);
    assert_eq!(common::status_of(&answer), 200, "{answer}");
    assert!(answer.contains("github: results for q"), "{answer}");
    assert_eq!(server.count("search_web"), 1);
}

/// RFC 9728 as the SDK's OAuth client finds it: the 401 names the route's metadata document,
/// which the SDK accepts and which names the issuer; an issuer that is not a URL names none.
#[test]
fn clients_discover_where_to_get_a_token() {
    const OAUTH: &str = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
auth:
  jwt: {secret: "test-secret-0123456789abcdef-0123456789", expiry: "1h", issuer: "{issuer}"}
routes:
  - path: "/mcp/*"
    protocol: mcp
    auth_required: true
    mcp:
      servers:
        github: {backend_url: "{backend}/mcp"}
"#;
    let server = McpServer::start("github", &[]);
    let yaml = OAUTH.replace("{issuer}", "https://id.example.com");
    let g = Gateway::start(&yaml, &server.base());
    let found = common::mcp::discover(&g.url("/mcp"));
    assert_eq!(found["status"], 401, "{found}");
    let origin = g.url("");
    let challenge = found["www_authenticate"].as_str().unwrap_or_default();
    let bearer = challenge.split("ApiKey").next().unwrap_or_default();
    assert!(
        bearer.contains("resource_metadata="),
        "a parameter of the Bearer challenge: {challenge}"
    );
    let document = format!("{origin}/.well-known/oauth-protected-resource/mcp");
    assert_eq!(found["resource_metadata"], document.as_str(), "{found}");
    assert_eq!(found["tried"][0], document.as_str(), "{found}");
    assert_eq!(
        found["metadata"]["resource"],
        format!("{origin}/mcp"),
        "{found}"
    );
    assert_eq!(
        found["metadata"]["authorization_servers"],
        json!(["https://id.example.com"]),
        "{found}"
    );

    let yaml = OAUTH.replace("{issuer}", "clawgate");
    let g = Gateway::start(&yaml, &server.base());
    let found = common::mcp::discover(&g.url("/mcp"));
    assert_eq!(found["status"], 401, "{found}");
    assert_eq!(found["resource_metadata"], Value::Null, "{found}");
    assert_eq!(found["metadata"], Value::Null, "{found}");
}
