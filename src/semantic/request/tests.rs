use super::*;
use http::{HeaderMap, HeaderValue, Method, Uri};
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
    read(
        route,
        &Method::POST,
        &Uri::from_static("/v1/chat"),
        agent,
        h,
        &bytes,
    )
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
    let read = |body: &[u8]| {
        read(
            &r,
            &Method::POST,
            &Uri::from_static("/v1/chat"),
            None,
            &HeaderMap::new(),
            body,
        )
    };
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
        let seen = read(
            &r,
            method,
            &Uri::from_static("/v1/chat"),
            None,
            &HeaderMap::new(),
            &bytes,
        );
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
        let seen = read(
            &r,
            &Method::POST,
            &Uri::from_static("/v1/chat"),
            None,
            &HeaderMap::new(),
            body,
        );
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

#[test]
fn the_path_and_query_partition() {
    let parts = key(&[]);
    let r = Route {
        label: "llm",
        shared: false,
        key: &parts,
        text: &TextFrom::Auto,
    };
    let body = br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#;
    let at = |uri: &'static str| {
        let h = HeaderMap::new();
        read(&r, &Method::POST, &Uri::from_static(uri), None, &h, body)
            .unwrap()
            .partition
    };
    assert_ne!(at("/v1/chat"), at("/v1/complete"));
    assert_ne!(at("/v1/chat?a=1"), at("/v1/chat?a=2"));
    assert_eq!(at("/v1/chat?a=1&b=2"), at("/v1/chat?b=2&a=1"));
}
