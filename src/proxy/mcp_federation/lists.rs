//! What the gateway asks every server for and merges (`tools/list`, `prompts/list`,
//! `resources/list`, `resources/templates/list`), and the requests it routes to one server:
//! `tools/call` and `prompts/get` by their name's prefix, `resources/read` by who serves the URI.

use super::servers::{content_type, join_all, Opened, Servers};
use super::Reply;
use crate::mcp::federation as fed;
use crate::mcp::grants::Grants;
use crate::mcp::jsonrpc;
use crate::mcp::session::Leg;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Pages of a list read from one server (each page follows the last's `nextCursor`).
const MAX_PAGES: usize = 16;

/// A list method and the key of its result that holds the entries.
pub const TOOLS: (&str, &str) = ("tools/list", "tools");
pub const PROMPTS: (&str, &str) = ("prompts/list", "prompts");
pub const RESOURCES: (&str, &str) = ("resources/list", "resources");
pub const TEMPLATES: (&str, &str) = ("resources/templates/list", "resourceTemplates");

/// Every server's entries of a list, prefixed (tools: less those the agent may not use); a
/// server that fails is left out.
pub async fn merged(
    s: &Arc<Servers>,
    legs: &[Leg],
    id: &Value,
    list: (&'static str, &'static str),
    grants: Option<&Grants>,
) -> Bytes {
    let lists = every(s, legs, list).await;
    let prefixes: Vec<String> = (s.pools.iter())
        .map(|(name, _)| fed::prefix(&s.settings.tool_prefix, name))
        .collect();
    let (_, key) = list;
    let results = (prefixes.iter().zip(lists))
        .filter_map(|(p, entries)| Some((p.as_str(), json!({ key: entries? }))));
    // Grants name tools: prompts and resources are not filtered by them.
    let allows = |name: &str| key != "tools" || grants.is_none_or(|g| g.allows(name));
    fed::answer(id, fed::merge(key, results, allows))
}

/// Each server's entries of a list, in the route's order (`None`: it failed).
async fn every(
    s: &Arc<Servers>,
    legs: &[Leg],
    list: (&'static str, &'static str),
) -> Vec<Option<Vec<Value>>> {
    let listing = legs.iter().enumerate().map(|(i, leg)| {
        let (s, leg) = (s.clone(), leg.clone());
        async move { one(&s, i, &leg, list).await }
    });
    join_all(listing)
        .await
        .into_iter()
        .map(Option::flatten)
        .collect()
}

/// One server's entries of a list, every page; `None` when it fails.
async fn one(
    s: &Arc<Servers>,
    i: usize,
    leg: &Leg,
    (method, key): (&str, &str),
) -> Option<Vec<Value>> {
    let mut leg = leg.clone();
    let mut opened = None;
    let mut entries = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..MAX_PAGES {
        let id = own_id();
        let mut ask = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(c) = cursor.take() {
            ask["params"] = json!({ "cursor": c });
        }
        let (answer, fresh) = s
            .exchange_whole(i, &leg, Bytes::from(ask.to_string()))
            .await;
        if let Some(f) = fresh {
            // Later pages go to the session just opened.
            leg = f.clone();
            opened = Some(f);
        }
        let answer = answer.ok().filter(|a| a.status == 200);
        let mut result =
            match answer.map(|a| fed::result_of(content_type(&a.headers), &a.body, &id)) {
                Some(Ok(r)) => r,
                // A JSON-RPC error: the server offers no such list (no prompts, say), not a failure.
                Some(Err(fed::NoResult::Error(_))) => break,
                _ => {
                    s.close_later(i, opened);
                    return None;
                }
            };
        if let Some(Value::Array(t)) = result.get_mut(key).map(Value::take) {
            entries.extend(t);
        }
        cursor = result.get("nextCursor").filter(|c| !c.is_null()).cloned();
        if cursor.is_none() {
            break;
        }
    }
    s.close_later(i, opened);
    Some(entries)
}

/// An id for a request of the gateway's own. Ids differ across all of them: a server's
/// transport tells apart by id the requests of one session in flight (a `resources/read`
/// lists resources and templates at once, two requests of one client may list at once).
fn own_id() -> Value {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    json!(format!("clawgate-{}", NEXT.fetch_add(1, Ordering::Relaxed)))
}

/// A `tools/call` or `prompts/get`, to the server its name's prefix names, with the server's
/// name for it; the answer's body is not read here (a tool's SSE answer is relayed as it comes).
pub async fn routed(
    s: &Arc<Servers>,
    legs: &[Leg],
    id: &Value,
    name: Option<&str>,
    body: &[u8],
) -> Reply {
    let names = s.pools.iter().map(|(n, _)| n.as_str());
    let routed = name.and_then(|n| fed::unprefix(&s.settings.tool_prefix, names, n));
    let Some((server, local)) = routed else {
        let data = json!({ "name": name });
        let e = jsonrpc::error(id, -32602, "unknown tool or prompt", Some(data));
        return Reply::Own("error", e);
    };
    let (Some(i), Some(renamed)) = (s.index(server), fed::renamed(body, local)) else {
        return Reply::Own("error", jsonrpc::error(id, -32602, "invalid params", None));
    };
    to_server(s, legs, id, i, renamed).await
}

/// `body` sent to server `i` in the client's session; a server that is down: `-32000`.
async fn to_server(s: &Arc<Servers>, legs: &[Leg], id: &Value, i: usize, body: Bytes) -> Reply {
    let (Some(leg), Some((server, _))) = (legs.get(i), s.pools.get(i)) else {
        return Reply::Own("error", jsonrpc::error(id, -32603, "no such server", None));
    };
    let (answer, opened) = s.exchange(i, leg, body, s.call_timeout).await;
    let opened = Opened::new(s, i, opened);
    match answer {
        Ok(a) if a.status != 404 => Reply::Server(server.clone(), Box::new(a), opened),
        Ok(_) | Err(_) => Reply::Own("unavailable", jsonrpc::server_unavailable(id, server)),
    }
}

/// A `resources/read`, to the server that serves the URI ([`fed::owner`], from every server's
/// resources and templates). A URI no server that answered serves, while one did not answer:
/// `-32000` naming that server (the URI may be its); else `-32002`, the spec's "not found".
pub async fn read(s: &Arc<Servers>, legs: &[Leg], id: &Value, body: &[u8]) -> Reply {
    let uri = (serde_json::from_slice::<Value>(body).ok())
        .and_then(|v| v.pointer("/params/uri")?.as_str().map(str::to_string));
    let Some(uri) = uri else {
        return Reply::Own("error", jsonrpc::error(id, -32602, "no uri", None));
    };
    let (resources, templates) = tokio::join!(every(s, legs, RESOURCES), every(s, legs, TEMPLATES));
    let mut offered = Vec::with_capacity(s.pools.len());
    let mut failed = None;
    for (((name, _), r), t) in s.pools.iter().zip(resources).zip(templates) {
        let field = |entries: &[Value], key: &str| -> Vec<String> {
            (entries.iter())
                .filter_map(|e| e.get(key)?.as_str().map(str::to_string))
                .collect()
        };
        match (r, t) {
            (Some(r), Some(t)) => offered.push((
                name.as_str(),
                fed::Offered {
                    uris: field(&r, "uri"),
                    templates: field(&t, "uriTemplate"),
                },
            )),
            _ => failed = failed.or(Some(name.as_str())),
        }
    }
    let owner = fed::owner(&uri, offered.iter().map(|(n, o)| (*n, o)));
    match (owner.and_then(|o| s.index(o)), failed) {
        (Some(i), _) => to_server(s, legs, id, i, Bytes::copy_from_slice(body)).await,
        (None, Some(down)) => Reply::Own("unavailable", jsonrpc::server_unavailable(id, down)),
        (None, None) => {
            let e = jsonrpc::error(
                id,
                -32002,
                "resource not found",
                Some(json!({ "uri": uri })),
            );
            Reply::Own("error", e)
        }
    }
}
