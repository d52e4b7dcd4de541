//! Federation of several MCP servers behind one endpoint (DESIGN §5.2), the parts without I/O:
//! tool names with and without their server's prefix, the merged `tools/list` result, the
//! gateway's own `initialize` answer, and the JSON-RPC result read out of a server's answer,
//! which is JSON or an SSE stream. The calls to the servers are `proxy/mcp_federation.rs`.

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// The session-era protocol revisions the gateway speaks to federated clients.
pub const VERSIONS: [&str; 2] = ["2025-06-18", "2025-11-25"];
/// What a client asking for another revision is offered (the spec lets the server pick).
pub const LATEST: &str = "2025-11-25";

/// `tool_prefix` with `{server}` replaced: `github__`.
pub fn prefix(tool_prefix: &str, server: &str) -> String {
    tool_prefix.replace("{server}", server)
}

/// The server a federated name belongs to and the server's own name for the tool. When two
/// prefixes match (`a_` and `a_b_` with `{server}_`), the longer wins, so that a server's name
/// never hides another's.
pub fn unprefix<'a, 'n>(
    tool_prefix: &str,
    servers: impl IntoIterator<Item = &'a str>,
    name: &'n str,
) -> Option<(&'a str, &'n str)> {
    servers
        .into_iter()
        .filter_map(|s| {
            let p = prefix(tool_prefix, s);
            let tool = name.strip_prefix(p.as_str())?;
            (!tool.is_empty()).then_some((p.len(), s, tool))
        })
        .max_by_key(|(len, _, _)| *len)
        .map(|(_, s, tool)| (s, tool))
}

/// The revision answered to a client that asked for `requested`.
pub fn negotiate(requested: Option<&str>) -> &'static str {
    VERSIONS
        .iter()
        .find(|v| Some(**v) == requested)
        .copied()
        .unwrap_or(LATEST)
}

/// The gateway's own `initialize` answer: it offers tools only (resources and prompts are not
/// federated), under its own name.
pub fn initialize_answer(id: &Value, requested: Option<&str>) -> Bytes {
    let result = json!({
        "protocolVersion": negotiate(requested),
        "capabilities": {"tools": {}},
        "serverInfo": {"name": "clawgate", "version": env!("CARGO_PKG_VERSION")},
    });
    answer(id, result)
}

/// A JSON-RPC result answer.
pub fn answer(id: &Value, result: Value) -> Bytes {
    Bytes::from(json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string())
}

/// The `protocolVersion` a client's `initialize` asks for.
pub fn requested_version(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/params/protocolVersion")?
        .as_str()
        .map(str::to_string)
}

/// A `tools/call` body with the server's own name for the tool (everything else as sent:
/// the id, the arguments, `_meta`).
pub fn renamed_call(body: &[u8], tool: &str) -> Option<Bytes> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    *v.pointer_mut("/params/name")? = Value::String(tool.to_string());
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

/// The `tools/list` results of each server (its prefix, its result), merged into one with the
/// names prefixed, less the tools `allows` refuses (it sees the prefixed name, as grants do).
pub fn merge_tools<'a>(
    results: impl IntoIterator<Item = (&'a str, Value)>,
    allows: impl Fn(&str) -> bool,
) -> Value {
    let mut tools = Vec::new();
    for (prefix, result) in results {
        let Some(Value::Array(listed)) = result.get("tools").cloned() else {
            continue;
        };
        for mut tool in listed {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let name = format!("{prefix}{name}");
            if !allows(&name) {
                continue;
            }
            if let Some(m) = tool.as_object_mut() {
                m.insert("name".into(), Value::String(name));
                tools.push(tool);
            }
        }
    }
    let mut out = Map::new();
    out.insert("tools".into(), Value::Array(tools));
    Value::Object(out)
}

/// Why a server's answer holds no result for the request.
#[derive(Debug, Clone, PartialEq)]
pub enum NoResult {
    /// The server answered with a JSON-RPC error.
    Error(Value),
    /// The answer is not JSON-RPC, or does not answer the request.
    Unreadable,
}

/// The result of request `id` in a server's answer: a JSON body (one message or a batch) or an
/// SSE stream, whose `data` lines may carry server requests and notifications before it.
pub fn result_of(content_type: &str, body: &[u8], id: &Value) -> Result<Value, NoResult> {
    if content_type.starts_with("text/event-stream") {
        let text = std::str::from_utf8(body).map_err(|_| NoResult::Unreadable)?;
        let mut found = Err(NoResult::Unreadable);
        for data in sse_data(text) {
            if let Ok(v) = serde_json::from_str::<Value>(&data) {
                if let Some(r) = answer_to(v, id) {
                    found = r;
                    break;
                }
            }
        }
        return found;
    }
    let v: Value = serde_json::from_slice(body).map_err(|_| NoResult::Unreadable)?;
    answer_to(v, id).unwrap_or(Err(NoResult::Unreadable))
}

/// A server's answer to request `id` as one JSON-RPC message (an SSE answer's result, for a
/// batch, whose answers are JSON); `None` when it holds no answer to it.
pub fn relayed(content_type: &str, body: &[u8], id: &Value) -> Option<Bytes> {
    let v = match result_of(content_type, body, id) {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(NoResult::Error(e)) => json!({"jsonrpc": "2.0", "id": id, "error": e}),
        Err(NoResult::Unreadable) => return None,
    };
    Some(Bytes::from(v.to_string()))
}

/// The result or error for `id` in one message or a batch; `None`: not an answer to it.
fn answer_to(v: Value, id: &Value) -> Option<Result<Value, NoResult>> {
    match v {
        Value::Array(many) => many.into_iter().find_map(|m| answer_to(m, id)),
        Value::Object(mut m) if m.get("id") == Some(id) && !m.contains_key("method") => {
            if let Some(r) = m.remove("result") {
                Some(Ok(r))
            } else {
                Some(Err(m
                    .remove("error")
                    .map_or(NoResult::Unreadable, NoResult::Error)))
            }
        }
        _ => None,
    }
}

/// The data of each event of an SSE stream (its `data:` lines joined by newlines).
fn sse_data(text: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    for line in text.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            events.extend(data.take());
        } else if let Some(rest) = line.strip_prefix("data:") {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            match data.as_mut() {
                Some(d) => {
                    d.push('\n');
                    d.push_str(rest);
                }
                None => data = Some(rest.to_string()),
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prefixed_and_unprefixed() {
        assert_eq!(prefix("{server}__", "github"), "github__");
        let servers = ["github", "search"];
        let un = |n| unprefix("{server}__", servers, n);
        assert_eq!(un("github__search_web"), Some(("github", "search_web")));
        assert_eq!(un("search__search_web"), Some(("search", "search_web")));
        assert_eq!(un("search_web"), None);
        assert_eq!(un("github__"), None);
        assert_eq!(un("gitlab__x"), None);
        // The longer prefix wins where two match.
        let un = |n| unprefix("{server}_", ["a", "a_b"], n);
        assert_eq!(un("a_b_x"), Some(("a_b", "x")));
        assert_eq!(un("a_x"), Some(("a", "x")));
        assert_eq!(
            unprefix("mcp.{server}.", ["s"], "mcp.s.t"),
            Some(("s", "t"))
        );
    }

    #[test]
    fn initialize_is_answered_by_the_gateway() {
        let v: Value =
            serde_json::from_slice(&initialize_answer(&json!(1), Some("2025-06-18"))).unwrap();
        assert_eq!(v["id"], 1);
        assert_eq!(v["result"]["protocolVersion"], "2025-06-18");
        assert_eq!(v["result"]["capabilities"], json!({"tools": {}}));
        assert_eq!(v["result"]["serverInfo"]["name"], "clawgate");
        for other in [None, Some("2024-11-05"), Some("2026-07-28")] {
            assert_eq!(negotiate(other), LATEST);
        }
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
        assert_eq!(requested_version(body).as_deref(), Some("2025-06-18"));
        assert_eq!(requested_version(b"{}"), None);
    }

    #[test]
    fn calls_are_renamed_and_keep_the_rest() {
        let body = br#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"github__search_web","arguments":{"q":1}}}"#;
        let v: Value = serde_json::from_slice(&renamed_call(body, "search_web").unwrap()).unwrap();
        assert_eq!(v["params"]["name"], "search_web");
        assert_eq!(v["params"]["arguments"], json!({"q": 1}));
        assert_eq!(v["id"], "x");
        assert_eq!(renamed_call(br#"{"id":1}"#, "t"), None);
        assert_eq!(renamed_call(b"nope", "t"), None);
    }

    #[test]
    fn tool_lists_are_merged_prefixed_and_filtered() {
        let a =
            json!({"tools": [{"name": "search_web", "inputSchema": {}}, {"name": "delete_repo"}]});
        let b =
            json!({"tools": [{"name": "search_web"}, {"title": "nameless"}], "nextCursor": "c"});
        let merged = merge_tools([("github__", a), ("search__", b), ("x__", json!(3))], |n| {
            n != "github__delete_repo"
        });
        let names: Vec<&str> = merged["tools"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert_eq!(names, ["github__search_web", "search__search_web"]);
        assert_eq!(merged["tools"][0]["inputSchema"], json!({}));
    }

    #[test]
    fn results_are_read_from_json_and_sse() {
        let id = json!(7);
        let ok = br#"{"jsonrpc":"2.0","id":7,"result":{"tools":[]}}"#;
        assert_eq!(
            result_of("application/json", ok, &id),
            Ok(json!({"tools": []}))
        );
        let batch = br#"[{"jsonrpc":"2.0","id":6,"result":1},{"jsonrpc":"2.0","id":7,"result":2}]"#;
        assert_eq!(result_of("application/json", batch, &id), Ok(json!(2)));
        let err = br#"{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no"}}"#;
        assert!(matches!(
            result_of("application/json", err, &id),
            Err(NoResult::Error(e)) if e["code"] == -32601
        ));
        let other = br#"{"jsonrpc":"2.0","id":8,"result":1}"#;
        assert_eq!(
            result_of("application/json", other, &id),
            Err(NoResult::Unreadable)
        );
        assert_eq!(
            result_of("application/json", b"<html>", &id),
            Err(NoResult::Unreadable)
        );
        let sse = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}\n\n\
                   id: 1\r\nevent: message\r\ndata: {\"jsonrpc\":\"2.0\",\r\ndata: \"id\":7,\"result\":{\"a\":1}}\r\n\r\n";
        assert_eq!(
            result_of("text/event-stream", sse.as_bytes(), &id),
            Ok(json!({"a": 1}))
        );
        let cut = "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":5}";
        assert_eq!(
            result_of("text/event-stream", cut.as_bytes(), &id),
            Ok(json!(5))
        );
        assert_eq!(
            result_of("text/event-stream", b": ping\n\n", &id),
            Err(NoResult::Unreadable)
        );
        let again: Value =
            serde_json::from_slice(&relayed("text/event-stream", sse.as_bytes(), &id).unwrap())
                .unwrap();
        assert_eq!(
            again,
            json!({"jsonrpc": "2.0", "id": 7, "result": {"a": 1}})
        );
        let again: Value =
            serde_json::from_slice(&relayed("application/json", err, &id).unwrap()).unwrap();
        assert_eq!(again["error"]["code"], -32601);
        assert_eq!(relayed("application/json", other, &id), None);
    }
}
