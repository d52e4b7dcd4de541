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
/// The partition covers, each length-prefixed: the route label, the method, the agent (left
/// out on a `shared` route; anonymous callers share one partition), every header part of
/// `cache_key`, and the whole body with the compared text taken out (so its `model`, `stream`
/// and body key parts too), with object keys sorted so that the client's key order does not
/// matter. A `cache_key` of `request_body.messages` thus still leaves the question free to
/// differ.
pub fn read(
    route: &Route,
    method: &http::Method,
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
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue, Method};
    use serde_json::json;

    fn key(parts: &[&str]) -> Vec<KeyPart> {
        parts.iter().map(|p| KeyPart::parse(p).unwrap()).collect()
    }

    /// Route "chat", not shared.
    fn route<'a>(key: &'a [KeyPart], text: &'a TextFrom) -> Route<'a> {
        Route {
            label: "chat",
            shared: false,
            key,
            text,
        }
    }

    fn read_json(route: &Route, agent: Option<&str>, h: &HeaderMap, body: &Value) -> Option<Seen> {
        let bytes = serde_json::to_vec(body).unwrap();
        read(route, &Method::POST, agent, h, &bytes)
    }

    /// Reads `body` on route "chat" (not shared, no `cache_key`) for agent `a1`.
    fn seen(body: &Value) -> Option<Seen> {
        read_json(
            &route(&[], &TextFrom::Auto),
            Some("a1"),
            &HeaderMap::new(),
            body,
        )
    }

    fn partition(body: &Value) -> [u8; 32] {
        seen(body).unwrap().partition
    }

    fn chat(question: &str) -> Value {
        json!({
            "model": "gpt-4o",
            "temperature": 0.2,
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hello"},
                {"role": "assistant", "content": "Hi."},
                {"role": "user", "content": question}
            ]
        })
    }

    #[test]
    fn text_settings_parse() {
        assert_eq!(TextFrom::parse("auto"), Ok(TextFrom::Auto));
        assert_eq!(
            TextFrom::parse("request_body.query"),
            Ok(TextFrom::Pointer("/query".into()))
        );
        assert_eq!(
            TextFrom::parse("request_body.input.0.text"),
            Ok(TextFrom::Pointer("/input/0/text".into()))
        );
        assert_eq!(
            TextFrom::parse("/a/b~1c"),
            Ok(TextFrom::Pointer("/a/b~1c".into()))
        );
        for bad in [
            "",
            "Auto",
            "query",
            "request_body.",
            "request_body.a..b",
            "request_headers.X-Agent-ID",
            "/a~2",
        ] {
            let e = TextFrom::parse(bad).unwrap_err();
            assert!(e.contains(&format!("{:?}", bad.trim())), "{bad}: {e}");
        }
    }

    #[test]
    fn openai_string_content() {
        let s = seen(&chat("What is the capital of France?")).unwrap();
        assert_eq!(s.text, "What is the capital of France?");
    }

    #[test]
    fn array_of_parts_joins_the_text_parts() {
        let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe this"},
            {"type": "image_url", "image_url": {"url": "https://x/1.png"}},
            {"type": "text", "text": "in one line"}
        ]}]});
        assert_eq!(seen(&body).unwrap().text, "Describe this\nin one line");
        // The image is not compared text: another image is another partition.
        let mut other = body.clone();
        other["messages"][0]["content"][1]["image_url"]["url"] = json!("https://x/2.png");
        assert_ne!(partition(&body), partition(&other));
    }

    #[test]
    fn anthropic_body_with_top_level_system() {
        let body = |system: &str, q: &str| {
            json!({"model": "claude-sonnet-4", "max_tokens": 512, "system": system,
                "messages": [{"role": "user", "content": [{"type": "text", "text": q}]}]})
        };
        let s = seen(&body("Be brief.", "Where is Paris?")).unwrap();
        assert_eq!(s.text, "Where is Paris?");
        assert_eq!(s.partition, partition(&body("Be brief.", "Where's Paris?")));
        assert_ne!(
            s.partition,
            partition(&body("Be verbose.", "Where is Paris?"))
        );
    }

    #[test]
    fn the_last_user_message_is_compared() {
        let body = json!({"model": "gpt-4o", "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "second"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "result"}
        ]});
        assert_eq!(seen(&body).unwrap().text, "second");
    }

    #[test]
    fn everything_but_the_question_partitions() {
        let base = partition(&chat("Q?"));
        assert_eq!(base, partition(&chat("A wholly different question?")));
        let mut variants = Vec::new();
        let mut v = chat("Q?");
        v["messages"][0]["content"] = json!("You are verbose.");
        variants.push(v);
        let mut v = chat("Q?");
        v["messages"][1]["content"] = json!("Good morning");
        variants.push(v);
        let mut v = chat("Q?");
        v["model"] = json!("gpt-4o-mini");
        variants.push(v);
        let mut v = chat("Q?");
        v["temperature"] = json!(0.7);
        variants.push(v);
        let mut v = chat("Q?");
        v["tools"] = json!([{"type": "function", "function": {"name": "f"}}]);
        variants.push(v);
        let mut v = chat("Q?");
        v["stream"] = json!(true);
        variants.push(v);
        for v in &variants {
            assert_ne!(base, partition(v), "{v}");
        }
        let mut unstreamed = chat("Q?");
        unstreamed["stream"] = json!(false);
        assert_ne!(partition(&variants[5]), partition(&unstreamed));
    }

    #[test]
    fn agents_partition_unless_shared() {
        let body = chat("Q?");
        let of = |agent, shared| {
            let r = Route {
                shared,
                ..route(&[], &TextFrom::Auto)
            };
            read_json(&r, agent, &HeaderMap::new(), &body)
                .unwrap()
                .partition
        };
        assert_ne!(of(Some("a1"), false), of(Some("a2"), false));
        assert_ne!(of(Some("a1"), false), of(None, false));
        assert_eq!(of(Some("a1"), true), of(Some("a2"), true));
        assert_eq!(of(Some("a1"), true), of(None, true));
        assert_ne!(of(Some("a1"), true), of(Some("a1"), false));
    }

    #[test]
    fn key_order_does_not_partition() {
        let a = br#"{"model":"m","temperature":1.0,
            "response_format":{"type":"json_object","strict":true},
            "messages":[{"role":"user","content":"Q"}]}"#;
        let b = br#"{"messages":[{"content":"Q","role":"user"}],
            "response_format":{"strict":true,"type":"json_object"},"temperature":1,"model":"m"}"#;
        let r = route(&[], &TextFrom::Auto);
        let read = |body: &[u8]| read(&r, &Method::POST, None, &HeaderMap::new(), body);
        assert!(read(a).is_some());
        assert_eq!(read(a), read(b));
    }

    #[test]
    fn only_the_compared_occurrence_is_taken_out() {
        let body = |earlier: &str, q: &str| {
            json!({"model": "m", "messages": [
                {"role": "user", "content": earlier},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": q}
            ]})
        };
        // The same words in an earlier turn still count as that turn.
        assert_eq!(partition(&body("Hi", "Hi")), partition(&body("Hi", "Bye")));
        assert_ne!(partition(&body("Hi", "Hi")), partition(&body("", "Hi")));
        assert_ne!(partition(&body("Hi", "Hi")), partition(&body("Yo", "Hi")));
    }

    #[test]
    fn explicit_field_and_pointer() {
        let field = TextFrom::parse("request_body.query").unwrap();
        let pointer = TextFrom::parse("/a/b").unwrap();
        let none = HeaderMap::new();
        let with = |text, body: &Value| read_json(&route(&[], text), None, &none, body).unwrap();
        let q = |query: &str, top_k: u32| json!({"query": query, "top_k": top_k});
        let s = with(&field, &q("cheap flights", 5));
        assert_eq!(s.text, "cheap flights");
        assert_eq!(
            s.partition,
            with(&field, &q("low-cost flights", 5)).partition
        );
        assert_ne!(s.partition, with(&field, &q("cheap flights", 9)).partition);
        let nested = json!({"a": {"b": [{"type": "text", "text": "deep"}]}, "messages": []});
        assert_eq!(with(&pointer, &nested).text, "deep");
        // An explicit setting wins over a chat body's last user message.
        let both = json!({"query": "x", "messages": [{"role": "user", "content": "y"}]});
        assert_eq!(with(&field, &both).text, "x");
    }

    #[test]
    fn the_seeds_mode_4_key() {
        let parts = key(&["request_body.query", "request_headers.X-Agent-ID"]);
        let r = route(&parts, &TextFrom::Auto);
        let read_as = |agent_header: Option<&str>, query: &str| {
            let mut headers = HeaderMap::new();
            if let Some(v) = agent_header {
                headers.insert("x-agent-id", HeaderValue::from_str(v).unwrap());
            }
            read_json(&r, None, &headers, &json!({"query": query})).unwrap()
        };
        let s = read_as(Some("finance-agent"), "Q3 revenue?");
        assert_eq!(s.text, "Q3 revenue?");
        let finance = read_as(Some("finance-agent"), "revenue in Q3?");
        assert_eq!(s.partition, finance.partition);
        let hr = read_as(Some("hr-agent"), "Q3 revenue?");
        assert_ne!(s.partition, hr.partition);
        assert_ne!(s.partition, read_as(None, "Q3 revenue?").partition);
        assert_ne!(s.partition, read_as(Some(""), "Q3 revenue?").partition);
    }

    #[test]
    fn a_whole_messages_key_leaves_the_question_out() {
        let parts = key(&["request_body.messages", "request_body.model"]);
        let r = route(&parts, &TextFrom::Auto);
        let of = |body: &Value| {
            let seen = read_json(&r, None, &HeaderMap::new(), body);
            seen.unwrap().partition
        };
        assert_eq!(of(&chat("Q1")), of(&chat("Q2")));
        let mut other = chat("Q1");
        other["messages"][1]["content"] = json!("Bye");
        assert_ne!(of(&chat("Q1")), of(&other));
    }

    #[test]
    fn route_and_method_partition() {
        let bytes = serde_json::to_vec(&chat("Q")).unwrap();
        let of = |label, method: &Method| {
            let r = Route {
                label,
                ..route(&[], &TextFrom::Auto)
            };
            let seen = read(&r, method, None, &HeaderMap::new(), &bytes);
            seen.unwrap().partition
        };
        assert_ne!(of("a", &Method::POST), of("b", &Method::POST));
        assert_ne!(of("a", &Method::POST), of("a", &Method::PUT));
    }

    #[test]
    fn nothing_to_compare_is_none() {
        let field = TextFrom::parse("request_body.query").unwrap();
        for (text, body) in [
            (&TextFrom::Auto, &b"not json"[..]),
            (&TextFrom::Auto, b""),
            // Not a chat body, and no request_body part in cache_key.
            (&TextFrom::Auto, br#"{"query":"x"}"#),
            (&TextFrom::Auto, br#"{"messages":[]}"#),
            (
                &TextFrom::Auto,
                br#"{"messages":[{"role":"assistant","content":"x"}]}"#,
            ),
            (
                &TextFrom::Auto,
                br#"{"messages":[{"role":"user","content":" \n"}]}"#,
            ),
            (
                &TextFrom::Auto,
                br#"{"messages":[{"role":"user","content":null}]}"#,
            ),
            (
                &TextFrom::Auto,
                br#"{"messages":[{"role":"user","content":[
                {"type":"tool_result","tool_use_id":"t1","content":"42"}]}]}"#,
            ),
            (&field, br#"{"q":"x"}"#),
            (&field, br#"{"query":7}"#),
        ] {
            let r = route(&[], text);
            let seen = read(&r, &Method::POST, None, &HeaderMap::new(), body);
            assert_eq!(seen, None, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_exact_key_covers_text_and_partition() {
        let a = seen(&chat("Q1")).unwrap();
        let b = seen(&chat("Q2")).unwrap();
        assert_eq!(a.partition, b.partition);
        assert_ne!(a.exact_key(), b.exact_key());
        assert_eq!(a.exact_key(), seen(&chat("Q1")).unwrap().exact_key());
        assert_ne!(a.exact_key(), a.partition);
    }
}
