//! Reading the JSON-RPC 2.0 body of a Streamable HTTP POST, and the error answers the gateway
//! writes itself.
//!
//! The gateway needs little from a message: its id (to answer it), its method and the name the
//! method targets (to authorise and limit it). Everything else, tool arguments above all, is
//! skipped by the parser without being kept, so it can neither be logged nor cost memory beyond
//! the body the caller already holds.

use bytes::Bytes;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
/// A server-defined code (JSON-RPC reserves -32000..-32099 for implementations).
pub const SERVER_UNAVAILABLE: i64 = -32000;
pub const TOOL_NOT_ALLOWED: i64 = -32003;
pub const RATE_LIMITED: i64 = -32029;

/// One JSON-RPC message of a POST body, reduced to what the gateway acts on.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Absent for notifications. Always a string or a number for requests; may be `null` only
    /// in an error response.
    pub id: Option<Value>,
    /// Absent for the responses a client sends back to a server's requests.
    pub method: Option<String>,
    /// What the method targets: the tool or prompt name, or the resource URI.
    pub name: Option<String>,
}

impl Message {
    pub fn is_request(&self) -> bool {
        self.method.is_some() && self.id.is_some()
    }

    pub fn is_notification(&self) -> bool {
        self.method.is_some() && self.id.is_none()
    }

    pub fn is_response(&self) -> bool {
        self.method.is_none()
    }
}

/// The messages of a POST body. `batch` tells whether the body was an array (even of one), as
/// the answer must then be an array too.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub messages: Vec<Message>,
    pub batch: bool,
}

impl Batch {
    /// The ids of the requests for `method`, e.g. the `tools/list` answers to filter.
    pub fn request_ids(&self, method: &str) -> Vec<Value> {
        self.messages
            .iter()
            .filter(|m| m.method.as_deref() == Some(method))
            .filter_map(|m| m.id.clone())
            .collect()
    }
}

/// Why a body is not JSON-RPC. Either way nothing is sent to a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// Not JSON at all (-32700).
    Parse,
    /// JSON, but not a valid JSON-RPC message or batch (-32600); says what is wrong.
    Invalid(&'static str),
}

impl Malformed {
    pub fn code(&self) -> i64 {
        match self {
            Malformed::Parse => PARSE_ERROR,
            Malformed::Invalid(_) => INVALID_REQUEST,
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Malformed::Parse => "parse error",
            Malformed::Invalid(why) => why,
        }
    }

    /// The error answer; its id is `null` because a broken body has no id one can trust.
    pub fn answer(&self) -> Bytes {
        error(&Value::Null, self.code(), self.message(), None)
    }
}

/// Methods whose params name what they act on, and the member that holds the name.
pub fn name_member(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    }
}

/// Reads a POST body: one message or a non-empty batch. A batch with any invalid message is
/// refused whole: the gateway must check every message before sending any of them.
pub fn read(body: &[u8]) -> Result<Batch, Malformed> {
    let top: Top = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Malformed::Invalid("not a JSON-RPC message"),
        _ => Malformed::Parse,
    })?;
    match top {
        Top::One(e) => Ok(Batch {
            messages: vec![check(e).map_err(Malformed::Invalid)?],
            batch: false,
        }),
        Top::Many(v) if v.is_empty() => Err(Malformed::Invalid("an empty batch")),
        Top::Many(v) => Ok(Batch {
            messages: v
                .into_iter()
                .map(check)
                .collect::<Result<_, _>>()
                .map_err(Malformed::Invalid)?,
            batch: true,
        }),
    }
}

/// The array a batch is answered with, from each answer's JSON.
pub fn array(answers: &[Bytes]) -> Bytes {
    let parts: Vec<&[u8]> = answers.iter().map(|b| &b[..]).collect();
    Bytes::from([&b"["[..], &parts.join(&b","[..]), b"]"].concat())
}

/// A JSON-RPC error object for `id`.
pub fn error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Bytes {
    let mut err = json!({"code": code, "message": message});
    if let (Some(data), Value::Object(m)) = (data, &mut err) {
        m.insert("data".into(), data);
    }
    Bytes::from(json!({"jsonrpc": "2.0", "id": id, "error": err}).to_string())
}

pub fn tool_not_allowed(id: &Value, tool: &str) -> Bytes {
    error(
        id,
        TOOL_NOT_ALLOWED,
        "tool not allowed",
        Some(json!({ "tool": tool })),
    )
}

/// `retry_after` is also sent as the `Retry-After` header by the caller.
pub fn rate_limited(id: &Value, retry_after_secs: u64) -> Bytes {
    error(
        id,
        RATE_LIMITED,
        "rate limited",
        Some(json!({ "retry_after": retry_after_secs })),
    )
}

pub fn server_unavailable(id: &Value, server: &str) -> Bytes {
    error(
        id,
        SERVER_UNAVAILABLE,
        "server unavailable",
        Some(json!({ "server": server })),
    )
}

/// Checks the stateless-era `Mcp-Method` / `Mcp-Name` headers against the body, so that
/// authorisation reading the headers decides on what the server will actually run.
pub fn check_headers(
    mcp_method: Option<&str>,
    mcp_name: Option<&str>,
    batch: &Batch,
) -> Result<(), &'static str> {
    let single = match batch.messages.as_slice() {
        [m] => Some(m),
        _ => None,
    };
    let Some(header_method) = mcp_method else {
        // A lone Mcp-Name still must not name something other than the body does.
        return match (mcp_name, single.and_then(|m| m.name.as_deref())) {
            (Some(h), Some(b)) if h != b => Err("Mcp-Name does not match the body"),
            _ => Ok(()),
        };
    };
    let Some(m) = single else {
        return Err("Mcp-Method describes one message but the body is a batch");
    };
    if m.method.as_deref() != Some(header_method) {
        return Err("Mcp-Method does not match the body");
    }
    let needs_name = matches!(
        header_method,
        "tools/call" | "prompts/get" | "resources/read"
    );
    match (mcp_name, m.name.as_deref()) {
        (None, _) if needs_name => Err("Mcp-Name is required for this Mcp-Method"),
        (Some(h), Some(b)) if h != b => Err("Mcp-Name does not match the body"),
        (Some(_), None) if needs_name => Err("Mcp-Name does not match the body"),
        _ => Ok(()),
    }
}

/// Turns what the parser saw into a message, or says why it is not one.
fn check(e: Element) -> Result<Message, &'static str> {
    let Element::Object(w) = e else {
        return Err("a message must be a JSON object");
    };
    let w = *w;
    if let Some(problem) = w.problem {
        return Err(problem);
    }
    if w.jsonrpc.as_ref().and_then(Value::as_str) != Some("2.0") {
        return Err("jsonrpc must be \"2.0\"");
    }
    let method = match w.method {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err("method must be a string"),
    };
    match &w.id {
        None | Some(Value::String(_) | Value::Number(_) | Value::Null) => {}
        Some(_) => return Err("id must be a string or a number"),
    }
    let Some(method) = method else {
        return response(w.id, w.has_result, w.has_error);
    };
    if w.has_result || w.has_error {
        return Err("a request has no result or error");
    }
    // MCP forbids null ids, and a null id would make the gateway's own answers ambiguous.
    if w.id == Some(Value::Null) {
        return Err("a request id must not be null");
    }
    let name = match (&w.params, name_member(&method)) {
        (Some(Params::Other), _) => return Err("params must be an object or an array"),
        (_, None) => None,
        (Some(Params::Duplicate), Some(_)) => return Err("a member of params appears twice"),
        (Some(Params::Object { name, .. }), Some("name")) => match name {
            Some(Value::String(s)) => Some(s.clone()),
            _ => return Err("params.name must be a string"),
        },
        (Some(Params::Object { uri, .. }), Some(_)) => match uri {
            Some(Value::String(s)) => Some(s.clone()),
            _ => return Err("params.uri must be a string"),
        },
        (_, Some(_)) => return Err("params must be an object naming the target"),
    };
    Ok(Message {
        id: w.id,
        method: Some(method),
        name,
    })
}

fn response(id: Option<Value>, has_result: bool, has_error: bool) -> Result<Message, &'static str> {
    match (has_result, has_error) {
        (false, false) => Err("a message needs a method, a result or an error"),
        (true, true) => Err("a response has a result or an error, not both"),
        _ if id.is_none() => Err("a response needs an id"),
        (true, false) if id == Some(Value::Null) => Err("a result needs a non-null id"),
        _ => Ok(Message {
            id,
            method: None,
            name: None,
        }),
    }
}

/// The body's top level: an object or an array of elements.
enum Top {
    One(Element),
    Many(Vec<Element>),
}

/// One element: an object (to check) or anything else (invalid, but the rest of the batch must
/// still parse for the body to count as JSON).
enum Element {
    Object(Box<Wire>),
    NotObject,
}

/// What the parser keeps of a message object. Problems are recorded rather than raised, so that
/// a duplicate member reads as -32600 and not as a parse error.
#[derive(Default)]
struct Wire {
    jsonrpc: Option<Value>,
    id: Option<Value>,
    method: Option<Value>,
    params: Option<Params>,
    has_result: bool,
    has_error: bool,
    problem: Option<&'static str>,
}

enum Params {
    /// Only `name` and `uri` are kept; arguments and the rest are skipped unread.
    Object {
        name: Option<Value>,
        uri: Option<Value>,
    },
    Array,
    /// `name` or `uri` given twice: no name the gateway can vouch for.
    Duplicate,
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Member {
    Jsonrpc,
    Id,
    Method,
    Params,
    Result,
    Error,
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum ParamsMember {
    Name,
    Uri,
    #[serde(other)]
    Other,
}

/// Records a member's value, noting a duplicate: parsers disagree on which of two duplicates
/// wins, so one the gateway reads could differ from the one the server acts on.
fn once<T>(slot: &mut Option<T>, value: T, problem: &mut Option<&'static str>) {
    if slot.is_some() {
        problem.get_or_insert("a member appears twice");
    }
    *slot = Some(value);
}

fn wire<'de, A: MapAccess<'de>>(mut map: A) -> Result<Wire, A::Error> {
    let mut w = Wire::default();
    while let Some(member) = map.next_key::<Member>()? {
        match member {
            Member::Jsonrpc => once(&mut w.jsonrpc, map.next_value()?, &mut w.problem),
            Member::Id => once(&mut w.id, map.next_value()?, &mut w.problem),
            Member::Method => once(&mut w.method, map.next_value()?, &mut w.problem),
            Member::Params => once(&mut w.params, map.next_value()?, &mut w.problem),
            Member::Result | Member::Error => {
                map.next_value::<IgnoredAny>()?;
                let seen = match member {
                    Member::Result => &mut w.has_result,
                    _ => &mut w.has_error,
                };
                if *seen {
                    w.problem.get_or_insert("a member appears twice");
                }
                *seen = true;
            }
            Member::Other => {
                map.next_value::<IgnoredAny>()?;
            }
        }
    }
    Ok(w)
}

/// Implements the visitor methods for JSON scalars, all giving `$other`.
macro_rules! scalars {
    ($out:ty, $other:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$out, E> {
            Ok($other)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$out, E> {
            Ok($other)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$out, E> {
            Ok($other)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$out, E> {
            Ok($other)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$out, E> {
            Ok($other)
        }
        fn visit_unit<E: de::Error>(self) -> Result<$out, E> {
            Ok($other)
        }
    };
}

fn drain<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message or batch")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Top, A::Error> {
        wire(map).map(|w| Top::One(Element::Object(Box::new(w))))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(e) = seq.next_element::<Element>()? {
            v.push(e);
        }
        Ok(Top::Many(v))
    }
    scalars!(Top, Top::One(Element::NotObject));
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Top, D::Error> {
        d.deserialize_any(TopVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON-RPC message")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Element, A::Error> {
        wire(map).map(|w| Element::Object(Box::new(w)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Element, A::Error> {
        drain(seq).map(|_| Element::NotObject)
    }
    scalars!(Element, Element::NotObject);
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Element, D::Error> {
        d.deserialize_any(ElementVisitor)
    }
}

struct ParamsVisitor;

impl<'de> Visitor<'de> for ParamsVisitor {
    type Value = Params;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("params")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
        let (mut name, mut uri, mut problem) = (None, None, None);
        while let Some(member) = map.next_key::<ParamsMember>()? {
            match member {
                ParamsMember::Name => once(&mut name, map.next_value()?, &mut problem),
                ParamsMember::Uri => once(&mut uri, map.next_value()?, &mut problem),
                ParamsMember::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if problem.is_some() {
            return Ok(Params::Duplicate);
        }
        Ok(Params::Object { name, uri })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Params, A::Error> {
        drain(seq).map(|_| Params::Array)
    }
    scalars!(Params, Params::Other);
}

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Params, D::Error> {
        d.deserialize_any(ParamsVisitor)
    }
}

#[cfg(test)]
#[path = "jsonrpc_tests.rs"]
mod tests;
