use super::*;

fn one(body: &str) -> Message {
    let b = read(body.as_bytes()).unwrap();
    assert!(!b.batch);
    assert_eq!(b.messages.len(), 1);
    b.messages.into_iter().next().unwrap()
}

fn invalid(body: &str) -> &'static str {
    match read(body.as_bytes()) {
        Err(Malformed::Invalid(why)) => why,
        other => panic!("{body}: {other:?}"),
    }
}

#[test]
fn a_tool_call() {
    let m = one(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call",
            "params":{"name":"github__list_issues","arguments":{"repo":"x","deep":[{"a":[1,2]}]}}}"#);
    assert_eq!(m.id, Some(json!(7)));
    assert_eq!(m.method.as_deref(), Some("tools/call"));
    assert_eq!(m.name.as_deref(), Some("github__list_issues"));
    assert!(m.is_request() && !m.is_notification() && !m.is_response());
}

#[test]
fn arguments_before_name_and_unknown_members() {
    let m = one(
        r#"{"params":{"arguments":{"name":"decoy"},"_meta":{"progressToken":1},"name":"echo"},
            "extra":[1,{"x":null}],"method":"tools/call","id":"abc","jsonrpc":"2.0"}"#,
    );
    assert_eq!(m.name.as_deref(), Some("echo"));
    assert_eq!(m.id, Some(json!("abc")));
}

#[test]
fn names_of_every_method_that_takes_one() {
    let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"greet"}}"#);
    assert_eq!(m.name.as_deref(), Some("greet"));
    for method in [
        "resources/read",
        "resources/subscribe",
        "resources/unsubscribe",
    ] {
        let m = one(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"uri":"file:///a b","name":"x"}}}}"#
        ));
        assert_eq!(m.name.as_deref(), Some("file:///a b"), "{method}");
    }
    let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"x"}}"#);
    assert_eq!(m.name, None);
    let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a\u00e9\"b"}}"#);
    assert_eq!(m.name.as_deref(), Some("aé\"b"));
}

#[test]
fn a_missing_or_odd_name_is_invalid() {
    let call = |params: &str| {
        invalid(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call"{params}}}"#
        ))
    };
    assert_eq!(call(""), "params must be an object naming the target");
    assert_eq!(
        call(r#","params":["echo"]"#),
        "params must be an object naming the target"
    );
    assert_eq!(call(r#","params":{}"#), "params.name must be a string");
    assert_eq!(
        call(r#","params":{"name":5}"#),
        "params.name must be a string"
    );
    assert_eq!(
        call(r#","params":{"name":null}"#),
        "params.name must be a string"
    );
    assert_eq!(
        call(r#","params":"echo""#),
        "params must be an object or an array"
    );
    assert_eq!(
        call(r#","params":{"name":"ok","name":"denied"}"#),
        "a member of params appears twice"
    );
    assert_eq!(
        invalid(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"x"}}"#),
        "params.uri must be a string"
    );
}

#[test]
fn notifications_and_other_methods() {
    let m = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert_eq!(m.id, None);
    assert!(m.is_notification() && !m.is_request());
    let m = one(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#);
    assert!(m.is_notification());
    let m = one(
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#,
    );
    assert_eq!(m.method.as_deref(), Some("initialize"));
    assert_eq!(m.name, None);
    let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    assert!(m.is_request());
    let m = one(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1,[2],{"a":3}]}"#);
    assert_eq!(m.name, None);
}

#[test]
fn responses_from_the_client() {
    let m = one(r#"{"jsonrpc":"2.0","id":"srv-1","result":{"roots":[]}}"#);
    assert!(m.is_response());
    assert_eq!(m.method, None);
    assert_eq!(m.id, Some(json!("srv-1")));
    let m = one(r#"{"jsonrpc":"2.0","id":4,"result":null}"#);
    assert!(m.is_response());
    let m = one(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#);
    assert_eq!(m.id, Some(Value::Null));
    assert_eq!(
        invalid(r#"{"jsonrpc":"2.0","result":1}"#),
        "a response needs an id"
    );
    assert_eq!(
        invalid(r#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#),
        "a response has a result or an error, not both"
    );
    assert_eq!(
        invalid(r#"{"jsonrpc":"2.0","id":null,"result":1}"#),
        "a result needs a non-null id"
    );
    assert_eq!(
        invalid(r#"{"jsonrpc":"2.0","id":1}"#),
        "a message needs a method, a result or an error"
    );
    assert_eq!(
        invalid(r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#),
        "a request has no result or error"
    );
}

#[test]
fn ids_of_every_type() {
    for (id, ok) in [
        ("0", true),
        ("-5", true),
        ("18446744073709551615", true),
        ("1.5", true),
        ("1e3", true),
        (r#""""#, true),
        (r#""a\nb""#, true),
        ("null", false),
        ("true", false),
        ("[1]", false),
        (r#"{"a":1}"#, false),
    ] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#);
        match read(body.as_bytes()) {
            Ok(b) => {
                assert!(ok, "{id}");
                let want: Value = serde_json::from_str(id).unwrap();
                assert_eq!(b.messages[0].id, Some(want));
            }
            Err(Malformed::Invalid(_)) => assert!(!ok, "{id}"),
            Err(e) => panic!("{id}: {e:?}"),
        }
    }
}

#[test]
fn jsonrpc_member() {
    assert_eq!(
        invalid(r#"{"id":1,"method":"ping"}"#),
        "jsonrpc must be \"2.0\""
    );
    assert_eq!(
        invalid(r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#),
        "jsonrpc must be \"2.0\""
    );
    assert_eq!(
        invalid(r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#),
        "jsonrpc must be \"2.0\""
    );
    assert_eq!(
        invalid(r#"{"jsonrpc":"2.0","id":1,"method":5}"#),
        "method must be a string"
    );
    assert_eq!(
        invalid(r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","method":"ping"}"#),
        "a member appears twice"
    );
    assert_eq!(
        invalid(r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}"#),
        "a member appears twice"
    );
    assert_eq!(
        invalid(r#"{"jsonrpc":"2.0","id":1,"result":1,"result":2}"#),
        "a member appears twice"
    );
}

#[test]
fn batches() {
    let b = read(
        br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},
             {"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}},
             {"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"echo","arguments":{}}},
             {"jsonrpc":"2.0","id":9,"result":{}},
             {"jsonrpc":"2.0","id":3,"method":"tools/list","params":{"cursor":"c"}}]"#,
    )
    .unwrap();
    assert!(b.batch);
    assert_eq!(b.messages.len(), 5);
    assert_eq!(b.messages[2].name.as_deref(), Some("echo"));
    assert!(b.messages[1].is_notification());
    assert!(b.messages[3].is_response());
    assert_eq!(b.request_ids("tools/list"), vec![json!(1), json!(3)]);
    assert_eq!(b.request_ids("tools/call"), vec![json!("b")]);

    let b = read(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap();
    assert!(b.batch);
    assert_eq!(b.messages.len(), 1);
}

#[test]
fn bad_batches() {
    assert_eq!(invalid("[]"), "an empty batch");
    assert_eq!(invalid(" [ ] "), "an empty batch");
    assert_eq!(invalid("[1]"), "a message must be a JSON object");
    assert_eq!(invalid("[[]]"), "a message must be a JSON object");
    assert_eq!(
        invalid(r#"[[{"jsonrpc":"2.0","id":1,"method":"ping"}]]"#),
        "a message must be a JSON object"
    );
    // One bad message refuses the whole batch: nothing may reach a server unchecked.
    assert_eq!(
        invalid(
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call"}]"#
        ),
        "params must be an object naming the target"
    );
}

#[test]
fn not_a_message() {
    for body in ["1", "\"x\"", "null", "true"] {
        assert_eq!(invalid(body), "a message must be a JSON object", "{body}");
    }
    // An array in the positional form of a struct is still not an object.
    assert_eq!(
        invalid(r#"["2.0",1,"ping"]"#),
        "a message must be a JSON object"
    );
}

#[test]
fn bad_json_is_a_parse_error() {
    for body in [
        "",
        " ",
        "{",
        "{\"jsonrpc\":\"2.0\",}",
        "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"} x",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}{}",
        "\u{feff}{}",
        "{'a':1}",
        "[1,]",
    ] {
        assert_eq!(read(body.as_bytes()), Err(Malformed::Parse), "{body:?}");
    }
    assert_eq!(read(b"\xff\xfe"), Err(Malformed::Parse));
    // Arguments are skipped without recursion, so deep nesting there costs no stack.
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","arguments":{}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(
        read(deep.as_bytes()).unwrap().messages[0].name.as_deref(),
        Some("x")
    );
    // A deep name is parsed into a value, where the parser's recursion limit holds.
    let deep_name = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(read(deep_name.as_bytes()), Err(Malformed::Parse));
}

#[test]
fn error_answers() {
    let v = |b: Bytes| serde_json::from_slice::<Value>(&b).unwrap();
    assert_eq!(
        v(Malformed::Parse.answer()),
        json!({"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error"}})
    );
    assert_eq!(
        v(Malformed::Invalid("an empty batch").answer()),
        json!({"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"an empty batch"}})
    );
    assert_eq!(
        v(tool_not_allowed(&json!("a"), "github__delete_repo")),
        json!({"jsonrpc":"2.0","id":"a","error":{"code":-32003,"message":"tool not allowed",
               "data":{"tool":"github__delete_repo"}}})
    );
    assert_eq!(
        v(rate_limited(&json!(5), 12)),
        json!({"jsonrpc":"2.0","id":5,"error":{"code":-32029,"message":"rate limited",
               "data":{"retry_after":12}}})
    );
    assert_eq!(
        v(server_unavailable(&json!(1), "github")),
        json!({"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"server unavailable",
               "data":{"server":"github"}}})
    );
    let raw = error(&json!(1), INVALID_REQUEST, "x", None);
    assert_eq!(
        &raw[..],
        br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32600,"message":"x"}}"#
    );
}

#[test]
fn headers_match_the_body() {
    let call = read(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#)
        .unwrap();
    assert_eq!(check_headers(None, None, &call), Ok(()));
    assert_eq!(
        check_headers(Some("tools/call"), Some("echo"), &call),
        Ok(())
    );
    assert!(check_headers(Some("tools/call"), None, &call).is_err());
    assert!(check_headers(Some("tools/call"), Some("other"), &call).is_err());
    assert!(check_headers(Some("tools/call"), Some("Echo"), &call).is_err());
    assert!(check_headers(Some("tools/list"), None, &call).is_err());
    assert!(check_headers(None, Some("other"), &call).is_err());
    assert_eq!(check_headers(None, Some("echo"), &call), Ok(()));

    let list = read(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).unwrap();
    assert_eq!(check_headers(Some("tools/list"), None, &list), Ok(()));
    assert_eq!(check_headers(Some("tools/list"), Some("x"), &list), Ok(()));
    assert!(check_headers(Some("tools/call"), Some("x"), &list).is_err());

    let read_res =
        read(br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///x"}}"#)
            .unwrap();
    assert_eq!(
        check_headers(Some("resources/read"), Some("file:///x"), &read_res),
        Ok(())
    );
    assert!(check_headers(Some("resources/read"), None, &read_res).is_err());
    let prompt =
        read(br#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}"#).unwrap();
    assert!(check_headers(Some("prompts/get"), None, &prompt).is_err());
    assert_eq!(
        check_headers(Some("prompts/get"), Some("p"), &prompt),
        Ok(())
    );

    let response = read(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).unwrap();
    assert!(check_headers(Some("tools/list"), None, &response).is_err());

    let two = read(
        br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#,
    )
    .unwrap();
    assert!(check_headers(Some("tools/list"), None, &two).is_err());
    assert_eq!(check_headers(None, None, &two), Ok(()));
    let batch_of_one = read(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#).unwrap();
    assert_eq!(
        check_headers(Some("tools/list"), None, &batch_of_one),
        Ok(())
    );
}
