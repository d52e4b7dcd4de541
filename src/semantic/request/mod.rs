//! What of a request the semantic cache compares, and what must match exactly (DESIGN §5.1):
//! one text (by default the last user message of a chat body) is compared by meaning; all the
//! rest — route, method, agent, the other `cache_key` parts, the model, streaming and the rest of
//! the conversation — goes into a partition digest, and only entries of one partition are ever
//! compared. Two questions asked under a different system prompt, earlier turn, tool list or
//! temperature are different requests, however alike they read.

use crate::cache::key::KeyPart;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Where the compared text comes from (`caching.semantic.text`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TextFrom {
    /// The last user message of an OpenAI or Anthropic chat body (a body with a `messages`
    /// array); for any other body, the first `request_body.*` entry of `cache_key`.
    #[default]
    Auto,
    /// A JSON pointer into the body (`request_body.a.b` is `/a/b`).
    Pointer(String),
}

impl TextFrom {
    /// `auto`, `request_body.<field>` (dotted) or a JSON pointer (`/a/b`).
    pub fn parse(s: &str) -> Result<TextFrom, String> {
        let s = s.trim();
        if s == "auto" {
            return Ok(TextFrom::Auto);
        }
        let pointer = if let Some(field) = s.strip_prefix("request_body.") {
            crate::text::json_pointer(field).map_err(|e| format!("{s:?} {e}"))?
        } else if s.starts_with('/') {
            s.to_string()
        } else {
            return Err(format!(
                "{s:?}: the compared text is auto, request_body.<field> or a JSON pointer (/a/b)"
            ));
        };
        // RFC 6901 knows only `~0` and `~1`; anything else would silently find nothing.
        let mut rest = pointer.split('~').skip(1);
        if rest.any(|after| !(after.starts_with('0') || after.starts_with('1'))) {
            return Err(format!(
                "{s:?}: a `~` in a JSON pointer must be `~0` or `~1`"
            ));
        }
        Ok(TextFrom::Pointer(pointer))
    }
}

/// What a route's configuration says about reading its requests; borrowed from the compiled
/// route so that a request costs no copy of it.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    /// The route's label, as in metrics and the exact cache.
    pub label: &'a str,
    /// One partition for every caller; otherwise each agent has its own.
    pub shared: bool,
    /// The route's `cache_key`.
    pub key: &'a [KeyPart],
    pub text: &'a TextFrom,
}

/// A request as the semantic cache sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The compared text, verbatim (text parts of an array content joined with `\n`).
    pub text: String,
    /// SHA-256 over everything else that must match exactly.
    pub partition: [u8; 32],
}

impl Seen {
    /// The partition and the text together: the key of the exact lookup that goes before any
    /// embedding.
    pub fn exact_key(&self) -> [u8; 32] {
        let mut feed = Feed::new(b"clawgate-semantic-exact/1");
        feed.part(&self.partition);
        feed.part(self.text.as_bytes());
        feed.finish()
    }
}

/// Reads a request for the semantic cache. `None` when it is not semantically cacheable: the
/// body is not JSON, or it holds no compared text (missing, not a string or text parts, or only
/// whitespace — an Anthropic tool-result turn, for one).
///
/// The partition covers, each length-prefixed: the route label, the method, the path and query
/// the backend receives (query parameters in sorted order), the agent (left
/// out on a `shared` route; anonymous callers share one partition), every header part of
/// `cache_key`, and the whole body with the compared text taken out (so its `model`, `stream`
/// and body key parts too), with object keys sorted so that the client's key order does not
/// matter. A `cache_key` of `request_body.messages` thus still leaves the question free to
/// differ.
pub fn read(
    route: &Route,
    method: &http::Method,
    target: &http::Uri,
    agent: Option<&str>,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Option<Seen> {
    let mut json: Value = serde_json::from_slice(body).ok()?;
    let text = take_text(compared(&mut json, route.text, route.key)?)?;
    if text.trim().is_empty() {
        return None;
    }
    let rest = json;
    let mut feed = Feed::new(b"clawgate-semantic/1");
    feed.part(route.label.as_bytes());
    feed.part(method.as_str().as_bytes());
    feed.part(target.path().as_bytes());
    feed.part(crate::cache::key::sorted_query(target.query()).as_bytes());
    if route.shared {
        feed.part(b"shared");
    } else {
        feed.part(b"agent");
        feed.opt(agent.map(str::as_bytes));
    }
    for part in route.key {
        if let KeyPart::Header(name) = part {
            feed.header(headers, name);
        }
    }
    // The rest of the body holds the model, `stream`, the body parts of the key and the
    // conversation around the question: all of it partitions.
    feed.value(&rest);
    Some(Seen {
        text,
        partition: feed.finish(),
    })
}

/// The value that holds the compared text, if the body has one.
fn compared<'v>(json: &'v mut Value, from: &TextFrom, key: &[KeyPart]) -> Option<&'v mut Value> {
    match from {
        TextFrom::Pointer(pointer) => json.pointer_mut(pointer),
        TextFrom::Auto if json.get("messages").is_some_and(Value::is_array) => {
            // OpenAI and Anthropic alike: the question is the last user turn, even when an
            // assistant tool call and its result follow it.
            let messages = json.get_mut("messages")?.as_array_mut()?;
            let is_user = |m: &&mut Value| m.get("role").and_then(Value::as_str) == Some("user");
            messages.iter_mut().rev().find(is_user)?.get_mut("content")
        }
        TextFrom::Auto => {
            let pointer = key.iter().find_map(|part| match part {
                KeyPart::Body(pointer) => Some(pointer),
                KeyPart::Header(_) => None,
            })?;
            json.pointer_mut(pointer)
        }
    }
}

/// Takes the text out of a content value (a string, or an array of parts whose `text` parts
/// count), leaving empty strings where it was. Taking rather than copying both spares a copy
/// and leaves exactly this one occurrence out of the partition: the same words in an earlier
/// turn still count. Non-text parts (images, files) stay, so they partition.
fn take_text(content: &mut Value) -> Option<String> {
    match content {
        Value::String(s) => Some(std::mem::take(s)),
        Value::Array(parts) => {
            let mut texts = parts
                .iter_mut()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| match p.get_mut("text") {
                    Some(Value::String(s)) => Some(std::mem::take(s)),
                    _ => None,
                });
            let first = texts.next()?;
            Some(texts.fold(first, |mut all, t| {
                all.push('\n');
                all.push_str(&t);
                all
            }))
        }
        _ => None,
    }
}

/// A SHA-256 fed with self-delimiting parts: every byte string is length-prefixed and every
/// JSON value tagged and counted, so that ("ab", "c") and ("a", "bc") differ.
struct Feed(Sha256);

/// Stands for a part the request does not have; no real length reaches it.
const ABSENT: u64 = u64::MAX;

impl Feed {
    fn new(domain: &[u8]) -> Feed {
        let mut feed = Feed(Sha256::new());
        feed.part(domain);
        feed
    }

    fn len(&mut self, n: usize) {
        self.0.update((n as u64).to_be_bytes());
    }

    fn part(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.update(b);
    }

    fn opt(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.part(b),
            None => self.0.update(ABSENT.to_be_bytes()),
        }
    }

    /// Every value of the header, in order; none stands for a missing header.
    fn header(&mut self, headers: &http::HeaderMap, name: &http::HeaderName) {
        let values = headers.get_all(name);
        self.len(values.iter().count());
        for v in values {
            self.part(v.as_bytes());
        }
    }

    /// A canonical form of a JSON value: object keys sorted (recursively), `1.0` as `1`.
    /// serde_json's parser stops at 128 levels, which bounds the recursion.
    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.0.update(b"n"),
            Value::Bool(b) => self.0.update(if *b { b"t" } else { b"f" }),
            Value::Number(n) => {
                self.0.update(b"#");
                let whole = n.as_f64().filter(|f| {
                    n.is_f64() && f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0
                });
                match whole {
                    Some(f) => self.part((f as i64).to_string().as_bytes()),
                    None => self.part(n.to_string().as_bytes()),
                }
            }
            Value::String(s) => {
                self.0.update(b"s");
                self.part(s.as_bytes());
            }
            Value::Array(items) => {
                self.0.update(b"[");
                self.len(items.len());
                items.iter().for_each(|item| self.value(item));
            }
            Value::Object(map) => {
                self.0.update(b"{");
                self.len(map.len());
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                for (k, v) in entries {
                    self.part(k.as_bytes());
                    self.value(v);
                }
            }
        }
    }

    fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests;
