use super::*;
use serde_json::json;

fn allows(tool: &str) -> bool {
    tool.starts_with("search__") || tool.starts_with("github__list_")
}

fn tool(name: &str) -> Value {
    json!({"name": name, "description": format!("does {name}"),
           "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}})
}

fn list_answer(id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "tools": [tool("search__web"), tool("github__delete_repo"), tool("github__list_issues"),
                  {"description": "no name"}, {"name": 5}],
        "nextCursor": "page-2", "_meta": {"x": 1}}})
}

fn filtered_answer(id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": {
        "tools": [tool("search__web"), tool("github__list_issues")],
        "nextCursor": "page-2", "_meta": {"x": 1}}})
}

#[test]
fn json_answer() {
    let body = list_answer(json!(1)).to_string();
    let out = tools_list(body.as_bytes(), &[json!(1)], allows).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v, filtered_answer(json!(1)));
    // Member order is kept, so the answer reads as the server wrote it.
    assert!(std::str::from_utf8(&out)
        .unwrap()
        .starts_with(r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"search__web""#));
}

#[test]
fn json_answer_unchanged_or_not_ours() {
    let clean = filtered_answer(json!(1)).to_string();
    assert_eq!(tools_list(clean.as_bytes(), &[json!(1)], allows), None);
    assert_eq!(tools_list(clean.as_bytes(), &[json!(1)], |_| true), None);
    let body = list_answer(json!(1)).to_string();
    // Tools without a name cannot be judged and go even when everything is allowed.
    assert!(tools_list(body.as_bytes(), &[json!(1)], |_| true).is_some());
    assert_eq!(tools_list(body.as_bytes(), &[json!(2)], allows), None);
    assert_eq!(tools_list(body.as_bytes(), &[json!("1")], allows), None);
    assert_eq!(tools_list(body.as_bytes(), &[], allows), None);
    assert_eq!(tools_list(b"not json", &[json!(1)], allows), None);
    assert_eq!(tools_list(b"", &[json!(1)], allows), None);
    let err = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-1,"message":"x"}}"#;
    assert_eq!(tools_list(err, &[json!(1)], allows), None);
    let odd = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":"none"}}"#;
    assert_eq!(tools_list(odd, &[json!(1)], allows), None);
    // A server request that reuses the id is not the answer.
    let req = json!({"jsonrpc":"2.0","id":1,"method":"x","result":{"tools":[tool("a")]}});
    assert_eq!(
        tools_list(req.to_string().as_bytes(), &[json!(1)], allows),
        None
    );
}

#[test]
fn json_batch_answer() {
    let other = json!({"jsonrpc":"2.0","id":"c","result":{"tools":[tool("secret")]}});
    let body = json!([list_answer(json!("a")), other, list_answer(json!(2))]).to_string();
    let out = tools_list(body.as_bytes(), &[json!("a"), json!(2)], allows).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v,
        json!([
            filtered_answer(json!("a")),
            other,
            filtered_answer(json!(2))
        ])
    );
    let out = tools_list(body.as_bytes(), &[json!(2)], allows).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0], list_answer(json!("a")));
    assert_eq!(v[2], filtered_answer(json!(2)));
}

/// A realistic stream: a comment, a progress notification, the answer, a trailing event.
fn stream(nl: &str, answer: &Value) -> String {
    let progress = json!({"jsonrpc":"2.0","method":"notifications/progress",
                          "params":{"progressToken":1,"progress":0.5}});
    [
        format!(": keep-alive{nl}{nl}"),
        format!("retry: 3000{nl}{nl}"),
        format!("event: message{nl}id: ev-1{nl}data: {progress}{nl}{nl}"),
        format!("event: message{nl}id: ev-2{nl}data: {answer}{nl}{nl}"),
        format!("id: ev-3{nl}data:{progress}{nl}: trailing comment{nl}{nl}"),
    ]
    .concat()
}

fn filter(ids: Vec<Value>) -> SseFilter {
    SseFilter::new(ids, allows, 64 * 1024)
}

/// Feeds `input` cut at the given positions and returns everything sent.
fn run(f: &mut SseFilter, input: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut from = 0;
    for &c in cuts.iter().chain([input.len()].iter()) {
        out.extend_from_slice(&f.feed(&input[from..c]));
        from = c;
    }
    out.extend_from_slice(&f.finish());
    out
}

#[test]
fn sse_answer_is_filtered_and_the_rest_kept() {
    for nl in ["\n", "\r\n", "\r"] {
        let input = stream(nl, &list_answer(json!(7)));
        let want = stream(nl, &filtered_answer(json!(7)));
        let mut f = filter(vec![json!(7)]);
        assert_eq!(
            String::from_utf8(run(&mut f, input.as_bytes(), &[])).unwrap(),
            want,
            "{nl:?}"
        );
        assert!(f.is_passthrough());
    }
}

#[test]
fn sse_split_at_every_byte() {
    for nl in ["\n", "\r\n", "\r"] {
        let input = stream(nl, &list_answer(json!(7)));
        let want = stream(nl, &filtered_answer(json!(7)));
        for cut in 0..=input.len() {
            let mut f = filter(vec![json!(7)]);
            let got = run(&mut f, input.as_bytes(), &[cut]);
            assert_eq!(String::from_utf8(got).unwrap(), want, "{nl:?} cut at {cut}");
        }
        // And one byte at a time.
        let mut f = filter(vec![json!(7)]);
        let cuts: Vec<usize> = (1..input.len()).collect();
        assert_eq!(
            run(&mut f, input.as_bytes(), &cuts),
            want.as_bytes(),
            "{nl:?}"
        );
    }
}

#[test]
fn sse_split_at_every_pair_of_bytes_around_the_answer() {
    let input = stream("\r\n", &list_answer(json!(7)));
    let want = stream("\r\n", &filtered_answer(json!(7)));
    let begin = input.find("event: message\r\nid: ev-2").unwrap();
    let end = input.find("id: ev-3").unwrap();
    for a in (begin.saturating_sub(3)..end + 3).step_by(7) {
        for b in a..=input.len() {
            let mut f = filter(vec![json!(7)]);
            assert_eq!(
                run(&mut f, input.as_bytes(), &[a, b]),
                want.as_bytes(),
                "{a} {b}"
            );
        }
    }
}

#[test]
fn sse_events_go_out_as_soon_as_they_end() {
    let mut f = filter(vec![json!(1)]);
    assert_eq!(&f.feed(b": hi\n")[..], b"");
    assert_eq!(&f.feed(b"\nevent: x\ndata: 1")[..], b": hi\n\n");
    assert_eq!(&f.feed(b"\n\n")[..], b"event: x\ndata: 1\n\n");
    // CRLF: the event goes at its final CR; the LF follows with the next chunk.
    assert_eq!(&f.feed(b"data: 2\r\n\r")[..], b"data: 2\r\n\r");
    assert_eq!(&f.feed(b"\ndata: 3\r\n\r\n")[..], b"\ndata: 3\r\n\r\n");
}

#[test]
fn sse_multiline_data() {
    let answer = list_answer(json!("x"));
    let pretty = serde_json::to_string_pretty(&answer).unwrap();
    let data: String = pretty.lines().map(|l| format!("data: {l}\n")).collect();
    let input = format!("id: 1\n{data}event: message\n\nretry: 5\n\n");
    let want = format!(
        "id: 1\ndata: {}\nevent: message\n\nretry: 5\n\n",
        filtered_answer(json!("x"))
    );
    for cut in 0..=input.len() {
        let mut f = filter(vec![json!("x")]);
        assert_eq!(
            String::from_utf8(run(&mut f, input.as_bytes(), &[cut])).unwrap(),
            want,
            "cut at {cut}"
        );
    }
}

#[test]
fn sse_other_events_untouched() {
    // Another id, an error answer, non-JSON data, a bare `data` line: all byte for byte.
    let input = concat!(
        "data: {\"jsonrpc\":\"2.0\",\"id\":8,\"result\":{\"tools\":[{\"name\":\"secret\"}]}}\n\n",
        "data:{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"sampling/createMessage\",\"params\":{}}\n\n",
        "data: not json\n\n",
        "data\n\n",
        "database: 1\n\n",
        "data:  {\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-1,\"message\":\"m\"}}\r\n\r\n",
        "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[{\"name\":\"secret\"}]}}\n\n",
    );
    let mut f = filter(vec![json!(7)]);
    assert_eq!(run(&mut f, input.as_bytes(), &[]), input.as_bytes());
    // The error answered id 7, so the later answer with that id is no longer filtered.
    assert!(f.is_passthrough());
}

#[test]
fn sse_batch_answer_in_one_event() {
    let batch = json!([list_answer(json!(1)), list_answer(json!(2))]);
    let input = format!("data: {batch}\n\n");
    let mut f = filter(vec![json!(1), json!(2), json!(3)]);
    let out = run(&mut f, input.as_bytes(), &[]);
    let want = json!([filtered_answer(json!(1)), filtered_answer(json!(2))]);
    assert_eq!(String::from_utf8(out).unwrap(), format!("data: {want}\n\n"));
    assert!(!f.is_passthrough());
}

#[test]
fn sse_without_pending_ids_passes_everything() {
    let input = stream("\n", &list_answer(json!(7)));
    let mut f = filter(Vec::new());
    assert!(f.is_passthrough());
    assert_eq!(run(&mut f, input.as_bytes(), &[10, 100]), input.as_bytes());
}

#[test]
fn sse_after_the_answer_nothing_is_held() {
    let mut f = filter(vec![json!(7)]);
    let answer = format!("data: {}\n\n", list_answer(json!(7)));
    let out = f.feed(answer.as_bytes());
    assert_eq!(
        out,
        Bytes::from(format!("data: {}\n\n", filtered_answer(json!(7))))
    );
    assert!(f.is_passthrough());
    assert_eq!(&f.feed(b"data: partial")[..], b"data: partial");
}

#[test]
fn sse_unfinished_event_at_the_end() {
    let input = format!("data: {}", list_answer(json!(7)));
    let mut f = filter(vec![json!(7)]);
    let out = run(&mut f, input.as_bytes(), &[5]);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("data: {}", filtered_answer(json!(7)))
    );
    let mut f = filter(vec![json!(7)]);
    assert_eq!(run(&mut f, b": only a comm", &[3]), b": only a comm");
}

#[test]
fn sse_oversize_events_are_dropped() {
    let big = format!("data: {}\n\n", list_answer(json!(7)));
    let small = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
    for nl_input in [
        format!("{small}{big}{small}"),
        format!("{small}{big}{small}").replace('\n', "\r\n"),
    ] {
        let want = format!("{small}{small}");
        let want = if nl_input.contains('\r') {
            want.replace('\n', "\r\n")
        } else {
            want
        };
        for cut in 0..=nl_input.len() {
            let mut f = SseFilter::new(vec![json!(7)], allows, 100);
            let out = run(&mut f, nl_input.as_bytes(), &[cut]);
            assert_eq!(String::from_utf8(out).unwrap(), want, "cut at {cut}");
            assert_eq!(f.dropped(), 1);
            assert!(!f.is_passthrough());
        }
    }
    // An oversize unfinished event at the end is dropped too.
    let mut f = SseFilter::new(vec![json!(7)], allows, 10);
    assert_eq!(run(&mut f, b"data: 12345678901234", &[]), b"");
    assert_eq!(f.dropped(), 1);
}

#[test]
fn sse_lines_and_fields() {
    assert_eq!(
        lines(b"a\r\nb\rc\n\nd"),
        vec![
            (&b"a"[..], &b"\r\n"[..]),
            (&b"b"[..], &b"\r"[..]),
            (&b"c"[..], &b"\n"[..]),
            (&b""[..], &b"\n"[..]),
            (&b"d"[..], &b""[..]),
        ]
    );
    assert_eq!(data_value(b"data: x"), Some(&b"x"[..]));
    assert_eq!(data_value(b"data:x"), Some(&b"x"[..]));
    assert_eq!(data_value(b"data:  x"), Some(&b" x"[..]));
    assert_eq!(data_value(b"data"), Some(&b""[..]));
    assert_eq!(data_value(b"datax: 1"), None);
    assert_eq!(data_value(b": data: 1"), None);
    assert_eq!(data_value(b" data: 1"), None);
}

#[test]
fn sse_with_grants_and_nothing_to_hide() {
    use crate::mcp::grants::Grants;
    use std::sync::Arc;
    let grants = Arc::new(
        Grants::compile(&[
            "search__*".into(),
            "github__list_*".into(),
            "!github__delete_*".into(),
        ])
        .unwrap(),
    );
    let g = Arc::clone(&grants);
    let mut f = SseFilter::new(vec![json!(7)], move |t| g.allows(t), 64 * 1024);
    let input = stream("\r\n", &list_answer(json!(7)));
    let want = stream("\r\n", &filtered_answer(json!(7)));
    assert_eq!(run(&mut f, input.as_bytes(), &[40]), want.as_bytes());

    // All tools allowed: the answer goes byte for byte (spacing and all), and is no longer awaited.
    let answer = "data: {\"jsonrpc\":\"2.0\", \"id\":7, \"result\":{\"tools\":[{\"name\":\"search__web\"}]}}\n\n";
    let g = Arc::clone(&grants);
    let mut f = SseFilter::new(vec![json!(7)], move |t| g.allows(t), 64 * 1024);
    assert_eq!(&f.feed(answer.as_bytes())[..], answer.as_bytes());
    assert!(f.is_passthrough());
}
