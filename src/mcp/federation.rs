//! Federation of several MCP servers behind one endpoint (DESIGN §5.2), the parts without I/O:
//! names with and without their server's prefix, merged lists (tools, prompts, resources and
//! templates), the union of the servers' capabilities in the gateway's own `initialize` and
//! `server/discover` answers, the server a resource URI belongs to, and the JSON-RPC result
//! read out of a server's answer, which is JSON or an SSE stream. The calls to the servers are
//! `proxy/mcp_federation.rs`.

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

/// The gateway's own `initialize` answer, under its own name, with the capabilities of
/// [`capabilities`].
pub fn initialize_answer(id: &Value, requested: Option<&str>, capabilities: Value) -> Bytes {
    let result = json!({
        "protocolVersion": negotiate(requested),
        "capabilities": capabilities,
        "serverInfo": server_info(),
    });
    answer(id, result)
}

/// The stateless revision the gateway answers `server/discover` for.
pub const MODERN: &str = "2026-07-28";

/// The gateway's own `server/discover` answer (revision 2026-07-28): its capabilities, and
/// its name where that revision carries it (`_meta`). Private to the caller: lists are
/// filtered by the agent's grants.
pub fn discover_answer(id: &Value, capabilities: Value) -> Bytes {
    let result = json!({
        "supportedVersions": [MODERN],
        "capabilities": capabilities,
        "cacheScope": "private",
        "resultType": "complete",
        "_meta": {"io.modelcontextprotocol/serverInfo": server_info()},
    });
    answer(id, result)
}

fn server_info() -> Value {
    json!({"name": "clawgate", "version": env!("CARGO_PKG_VERSION")})
}

/// What the gateway federates, each with the sub-flags that work through it, ORed over the
/// servers. `listChanged` and `subscribe` are not among them: those notifications come on a
/// server's standalone stream, which a federated endpoint does not offer (`GET` → 405).
/// `logging` and `completions` are left out: their requests are not routed to the servers.
const FEDERATED: [(&str, &[&str]); 3] = [("tools", &[]), ("resources", &[]), ("prompts", &[])];

/// The union of the servers' capabilities (each one's `initialize` result `capabilities`),
/// less what the gateway does not federate. `tools` is always offered: `tools/list` is
/// answered even while no server is up, and a server down now may have tools later.
pub fn capabilities<'a>(servers: impl IntoIterator<Item = &'a Value> + Clone) -> Value {
    let mut out = Map::new();
    for (key, flags) in FEDERATED {
        let offered: Vec<&Map<String, Value>> = (servers.clone().into_iter())
            .filter_map(|c| c.get(key)?.as_object())
            .collect();
        if offered.is_empty() && key != "tools" {
            continue;
        }
        let mut merged = Map::new();
        for flag in flags.iter().copied() {
            if offered
                .iter()
                .any(|c| c.get(flag) == Some(&Value::Bool(true)))
            {
                merged.insert(flag.into(), Value::Bool(true));
            }
        }
        out.insert(key.into(), Value::Object(merged));
    }
    Value::Object(out)
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

/// A `tools/call` or `prompts/get` body with the server's own name (everything else as sent:
/// the id, the arguments, `_meta`).
pub fn renamed(body: &[u8], tool: &str) -> Option<Bytes> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    *v.pointer_mut("/params/name")? = Value::String(tool.to_string());
    serde_json::to_vec(&v).ok().map(Bytes::from)
}

/// One list of each server's results (its prefix, its result; `key`: `tools`, `prompts`,
/// `resources`, `resourceTemplates`), merged into one with the names prefixed, less the
/// entries `allows` refuses (it sees the prefixed name, as grants do). Everything else of an
/// entry is as the server wrote it: a resource's `uri` is the server's own.
pub fn merge<'a>(
    key: &str,
    results: impl IntoIterator<Item = (&'a str, Value)>,
    allows: impl Fn(&str) -> bool,
) -> Value {
    let mut entries = Vec::new();
    for (prefix, result) in results {
        let Some(Value::Array(listed)) = result.get(key).cloned() else {
            continue;
        };
        for mut entry in listed {
            let Some(name) = entry.get("name").and_then(Value::as_str) else {
                continue;
            };
            let name = format!("{prefix}{name}");
            if !allows(&name) {
                continue;
            }
            if let Some(m) = entry.as_object_mut() {
                m.insert("name".into(), Value::String(name));
                entries.push(entry);
            }
        }
    }
    let mut out = Map::new();
    out.insert(key.into(), Value::Array(entries));
    Value::Object(out)
}

/// The resources and templates a server lists, for finding who serves a URI.
#[derive(Debug, Default, Clone)]
pub struct Offered {
    pub uris: Vec<String>,
    pub templates: Vec<String>,
}

/// The server a `resources/read` of `uri` goes to: the first, in the route's order, that
/// lists the URI itself, else the first with a template it matches. URIs are the servers' own
/// (the gateway does not rewrite them), so a link in a tool's result reads as listed.
pub fn owner<'a>(
    uri: &str,
    servers: impl IntoIterator<Item = (&'a str, &'a Offered)> + Clone,
) -> Option<&'a str> {
    let listed = (servers.clone().into_iter()).find(|(_, o)| o.uris.iter().any(|u| u == uri));
    let templated = || {
        (servers.into_iter())
            .find(|(_, o)| (o.templates.iter()).any(|t| super::uri_template::matches(t, uri)))
    };
    listed.or_else(templated).map(|(s, _)| s)
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
pub(crate) fn sse_data(text: &str) -> Vec<String> {
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
        let caps = json!({"tools": {}});
        let v: Value =
            serde_json::from_slice(&initialize_answer(&json!(1), Some("2025-06-18"), caps))
                .unwrap();
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
        let v: Value = serde_json::from_slice(&renamed(body, "search_web").unwrap()).unwrap();
        assert_eq!(v["params"]["name"], "search_web");
        assert_eq!(v["params"]["arguments"], json!({"q": 1}));
        assert_eq!(v["id"], "x");
        assert_eq!(renamed(br#"{"id":1}"#, "t"), None);
        assert_eq!(renamed(b"nope", "t"), None);
    }

    #[test]
    fn tool_lists_are_merged_prefixed_and_filtered() {
        let a =
            json!({"tools": [{"name": "search_web", "inputSchema": {}}, {"name": "delete_repo"}]});
        let b =
            json!({"tools": [{"name": "search_web"}, {"title": "nameless"}], "nextCursor": "c"});
        let results = [("github__", a), ("search__", b), ("x__", json!(3))];
        let merged = merge("tools", results, |n| n != "github__delete_repo");
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
    fn capabilities_are_the_union_of_what_is_federated() {
        let a = json!({"tools": {"listChanged": true}, "logging": {}, "completions": {}});
        let b = json!({"tools": {}, "prompts": {"listChanged": false},
            "resources": {"subscribe": true, "listChanged": true}});
        assert_eq!(
            capabilities([&a, &b]),
            json!({"tools": {}, "resources": {}, "prompts": {}})
        );
        assert_eq!(capabilities([&a]), json!({"tools": {}}));
        assert_eq!(capabilities([]), json!({"tools": {}}));
        let v: Value =
            serde_json::from_slice(&discover_answer(&json!(2), capabilities([&b]))).unwrap();
        assert_eq!(v["result"]["supportedVersions"], json!([MODERN]));
        assert_eq!(v["result"]["capabilities"]["prompts"], json!({}));
        assert_eq!(
            v["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
            "clawgate"
        );
    }

    #[test]
    fn resources_keep_their_uris_and_reads_find_their_server() {
        let a = json!({"resources": [{"name": "readme", "uri": "github://readme"}]});
        let merged = merge("resources", [("github__", a)], |_| true);
        assert_eq!(
            merged,
            json!({"resources": [{"name": "github__readme", "uri": "github://readme"}]})
        );
        let github = Offered {
            uris: vec!["github://readme".into(), "memo://shared".into()],
            templates: vec!["github://issues/{number}".into()],
        };
        let search = Offered {
            uris: vec!["memo://shared".into(), "search://readme".into()],
            templates: vec!["memo://{+rest}".into()],
        };
        let servers = [("github", &github), ("search", &search)];
        assert_eq!(owner("github://readme", servers), Some("github"));
        assert_eq!(owner("search://readme", servers), Some("search"));
        assert_eq!(owner("github://issues/7", servers), Some("github"));
        // Listed by both: the first in the route's order.
        assert_eq!(owner("memo://shared", servers), Some("github"));
        // A URI listed outright wins over an earlier server's template.
        assert_eq!(owner("memo://other/x", servers), Some("search"));
        assert_eq!(owner("gitlab://readme", servers), None);
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
