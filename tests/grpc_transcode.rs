//! HTTP/JSON → gRPC transcoding (DESIGN §5.4) through the real binary, against a real tonic
//! server of `tests/grpc/inventory.proto` (annotated with `google.api.http`): bindings with path
//! and query fields, the fallback path, the proto3 JSON forms, status mapping, deadlines, server
//! streams line by line, native gRPC clients on the same route, and `check` on bad descriptors.

mod common;

#[allow(clippy::all, dead_code)]
mod shop {
    include!("grpc/shop.rs");
}

use common::*;
use serde_json::{json, Value};
use shop::inventory_server::{Inventory, InventoryServer};
use shop::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// What the server saw: calls, and the last call's `grpc-timeout` and `x-request-id`.
#[derive(Default)]
struct Seen {
    calls: AtomicUsize,
    timeout: Mutex<Option<String>>,
    request_id: Mutex<Option<String>>,
}

struct Shop(Arc<Seen>);

impl Shop {
    fn saw<T>(&self, r: &Request<T>) {
        self.0.calls.fetch_add(1, Ordering::SeqCst);
        let get = |k: &str| {
            r.metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        *self.0.timeout.lock().unwrap() = get("grpc-timeout");
        *self.0.request_id.lock().unwrap() = get("x-request-id");
    }
}

fn updated() -> prost_types::Timestamp {
    // 2026-01-02T03:04:05Z
    prost_types::Timestamp {
        seconds: 1_767_323_045,
        nanos: 0,
    }
}

#[tonic::async_trait]
impl Inventory for Shop {
    async fn get_item(&self, r: Request<GetItemRequest>) -> Result<Response<Item>, Status> {
        self.saw(&r);
        let q = r.into_inner();
        match (q.shelf.as_str(), q.item_id.as_str()) {
            ("missing", _) => return Err(Status::not_found("no shelf \"missing\"")),
            ("down", _) => return Err(Status::unavailable("shelf offline")),
            (_, "bad") => return Err(Status::invalid_argument("bad item id")),
            _ => {}
        }
        Ok(Response::new(Item {
            id: q.item_id.clone(),
            shelf: q.shelf,
            display_name: format!("item {}", q.item_id),
            count: 9_007_199_254_740_993,
            kind: if q.kind_hint != 0 {
                q.kind_hint
            } else {
                Kind::Book as i32
            },
            updated: Some(updated()),
            tags: if q.with_tags { q.tags } else { Vec::new() },
            size: None,
        }))
    }

    async fn create_item(&self, r: Request<CreateItemRequest>) -> Result<Response<Item>, Status> {
        self.saw(&r);
        let q = r.into_inner();
        let mut item = q.item.unwrap_or_default();
        item.shelf = q.shelf;
        item.id = "new-1".into();
        Ok(Response::new(item))
    }

    async fn update_item(&self, r: Request<UpdateItemRequest>) -> Result<Response<Item>, Status> {
        self.saw(&r);
        let q = r.into_inner();
        let mut item = q.item.unwrap_or_default();
        item.display_name = format!("{} ({})", item.display_name, q.reason);
        Ok(Response::new(item))
    }

    type ListItemsStream = tokio_stream::wrappers::ReceiverStream<Result<Item, Status>>;

    async fn list_items(
        &self,
        r: Request<ListItemsRequest>,
    ) -> Result<Response<Self::ListItemsStream>, Status> {
        self.saw(&r);
        let q = r.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            for i in 0..q.page_size {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(q.delay_ms as u64)).await;
                }
                let item = Item {
                    id: format!("{}-{i}", q.shelf),
                    count: i as i64,
                    ..Default::default()
                };
                if tx.send(Ok(item)).await.is_err() {
                    return;
                }
            }
            if q.shelf == "breaks" {
                let _ = tx.send(Err(Status::internal("the shelf broke"))).await;
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn restock(&self, r: Request<RestockRequest>) -> Result<Response<Item>, Status> {
        self.saw(&r);
        let q = r.into_inner();
        Ok(Response::new(Item {
            id: q.id,
            count: q.add + 1,
            ..Default::default()
        }))
    }

    async fn slow(&self, r: Request<SlowRequest>) -> Result<Response<Item>, Status> {
        self.saw(&r);
        let millis = r.into_inner().millis;
        tokio::time::sleep(Duration::from_millis(millis as u64)).await;
        Ok(Response::new(Item::default()))
    }
}

/// The inventory server on a port of its own.
async fn inventory() -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let service = InventoryServer::new(Shop(seen.clone()));
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await;
    });
    (addr, seen)
}

fn proto() -> String {
    format!("{}/tests/grpc/inventory.proto", env!("CARGO_MANIFEST_DIR"))
}

fn yaml(timeout: &str) -> String {
    format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock", h2c: true}}
backends:
  inventory: {{url: "{{backend}}", protocol: h2c}}
routes:
  - path: "/api/v1/inventory/*"
    backend: inventory
    strip_prefix: true
    timeout: "{timeout}"
    grpc_transcode: {{protos: ["{proto}"], services: [shop.Inventory]}}
"#,
        proto = proto()
    )
}

async fn start(timeout: &str) -> (Gateway, Arc<Seen>, SocketAddr) {
    let (addr, seen) = inventory().await;
    let g = Gateway::start(&yaml(timeout), &format!("http://{addr}"));
    (g, seen, addr)
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, v)
}

const BASE: &str = "/api/v1/inventory";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotated_and_fallback_methods_speak_proto3_json() {
    let (g, seen, _) = start("5s").await;
    let c = client();

    // GET with path fields, and query fields by proto name and by JSON name; a repeated field
    // from a repeated parameter; an enum by name.
    let url = g.url(&format!(
        "{BASE}/v1/shelves/s1/items/a%20b?with_tags=true&tags=x&tags=y&kindHint=TOOL"
    ));
    let (status, item) = json_of(c.get(url).send().await.unwrap()).await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["id"], "a b");
    assert_eq!(item["shelf"], "s1");
    assert_eq!(item["displayName"], "item a b", "lowerCamelCase names");
    assert_eq!(item["count"], "9007199254740993", "int64 as a string");
    assert_eq!(item["kind"], "TOOL", "enums by name");
    assert_eq!(
        item["updated"], "2026-01-02T03:04:05Z",
        "timestamps in RFC 3339"
    );
    assert_eq!(item["tags"], json!(["x", "y"]));
    let timeout = seen.timeout.lock().unwrap().clone();
    assert_eq!(
        timeout.as_deref(),
        Some("5000m"),
        "the route timeout as grpc-timeout"
    );
    assert!(
        seen.request_id.lock().unwrap().is_some(),
        "x-request-id passed on"
    );

    // POST with `body: "item"`; int64 given as a number and as a string; a proto field name in
    // the body.
    let body = json!({"display_name": "saw", "count": 3, "kind": "TOOL",
                      "updated": "2026-01-02T03:04:05Z", "size": {"widthCm": 2.5}});
    let r = c
        .post(g.url(&format!("{BASE}/v1/shelves/s2/items")))
        .json(&body);
    let (status, item) = json_of(r.send().await.unwrap()).await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(
        item,
        json!({"id": "new-1", "shelf": "s2", "displayName": "saw", "count": "3", "kind": "TOOL",
               "updated": "2026-01-02T03:04:05Z", "size": {"widthCm": 2.5}})
    );

    // PATCH with a nested path field and `body: "item"`; its additional binding, PUT with
    // `body: "*"`.
    let r = c
        .patch(g.url(&format!("{BASE}/v1/items/i7?reason=fix")))
        .json(&json!({"displayName": "hammer"}));
    let (status, item) = json_of(r.send().await.unwrap()).await;
    assert_eq!(
        (status, &item["id"], &item["displayName"]),
        (200, &json!("i7"), &json!("hammer (fix)"))
    );
    let r = c
        .put(g.url(&format!("{BASE}/v1/shelves/s3/items/i8")))
        .json(&json!({"item": {"displayName": "nail"}, "reason": "new"}));
    let (status, item) = json_of(r.send().await.unwrap()).await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(
        (&item["id"], &item["shelf"], &item["displayName"]),
        (&json!("i8"), &json!("s3"), &json!("nail (new)"))
    );

    // No annotation: POST {route}/{package.Service}/{Method}, the body is the message.
    let r = c
        .post(g.url(&format!("{BASE}/shop.Inventory/Restock")))
        .json(&json!({"id": "r1", "add": "41"}));
    let (status, item) = json_of(r.send().await.unwrap()).await;
    assert_eq!((status, item), (200, json!({"id": "r1", "count": "42"})));
    assert_eq!(seen.calls.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_bad_requests_become_json_errors() {
    let (g, seen, _) = start("1s").await;
    let c = client();
    let get = |path: &str| c.get(g.url(&format!("{BASE}{path}"))).send();
    for (path, http, name, grpc) in [
        ("/v1/shelves/missing/items/1", 404, "not_found", 5),
        ("/v1/shelves/s1/items/bad", 400, "invalid_argument", 3),
        ("/v1/shelves/down/items/1", 503, "unavailable", 14),
    ] {
        let (status, e) = json_of(get(path).await.unwrap()).await;
        assert_eq!(status, http, "{path}: {e}");
        assert_eq!(e["error"], name);
        assert_eq!(e["grpc_status"], grpc);
        assert_eq!(e["code"], http);
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    }
    let e = json_of(get("/v1/shelves/missing/items/1").await.unwrap())
        .await
        .1;
    assert_eq!(e["message"], "no shelf \"missing\"", "grpc-message decoded");

    // The deadline: a call longer than the route's timeout is a 504.
    let started = Instant::now();
    let r = c
        .post(g.url(&format!("{BASE}/shop.Inventory/Slow")))
        .json(&json!({"millis": 3000}));
    let (status, e) = json_of(r.send().await.unwrap()).await;
    assert_eq!(
        (status, &e["error"], &e["grpc_status"]),
        (504, &json!("deadline_exceeded"), &json!(4))
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );

    // Refused by the gateway, never sent: a field that does not fit (named), an unknown
    // field, an unknown query parameter, a body that is not JSON, an unknown method.
    let calls = seen.calls.load(Ordering::SeqCst);
    let post = |path: &str, body: &str| {
        c.post(g.url(&format!("{BASE}{path}")))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let (status, e) = json_of(
        post("/v1/shelves/s1/items", r#"{"count": "many"}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("count"), "{e}");
    let (status, e) = json_of(
        post("/v1/shelves/s1/items", r#"{"size": {"widthCm": "wide"}}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("size.widthCm"),
        "{e}"
    );
    let (status, e) = json_of(
        post("/v1/shelves/s1/items", r#"{"colour": 1}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("colour"), "{e}");
    let (status, e) = json_of(get("/v1/shelves/s1/items/1?colour=red").await.unwrap()).await;
    assert_eq!(status, 400, "{e}");
    assert!(e["message"].as_str().unwrap().contains("colour"), "{e}");
    let (status, e) = json_of(post("/v1/shelves/s1/items", "{not json").await.unwrap()).await;
    assert_eq!((status, &e["error"]), (400, &json!("bad_request")), "{e}");
    for unknown in ["/shop.Inventory/Nope", "/shop.Nope/GetItem", "/v2/anything"] {
        let (status, e) = json_of(post(unknown, "{}").await.unwrap()).await;
        assert_eq!(
            (status, &e["error"]),
            (404, &json!("not_found")),
            "{unknown}: {e}"
        );
    }
    let (status, _) = json_of(
        c.delete(g.url(&format!("{BASE}/v1/items/1")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404, "a binding's path with another verb");
    assert_eq!(
        seen.calls.load(Ordering::SeqCst),
        calls,
        "none reached the server"
    );

    // And the next good request works.
    assert_eq!(get("/v1/shelves/s1/items/1").await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streams_arrive_line_by_line() {
    let (g, _, _) = start("10s").await;
    let c = client();
    let url = g.url(&format!(
        "{BASE}/v1/shelves/s1/items?page_size=4&delay_ms=400"
    ));
    let started = Instant::now();
    let r = c.get(url.as_str()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let mut r = r;
    let first = r.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(
        first_at < Duration::from_millis(350),
        "the first line came at {first_at:?}"
    );
    let line: Value = serde_json::from_slice(first.trim_ascii_end()).unwrap();
    assert_eq!(line, json!({"id": "s1-0"}));
    let mut rest = Vec::new();
    while let Some(chunk) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1200),
        "the stream ends with its last message"
    );
    let lines: Vec<Value> = (rest.split(|b| *b == b'\n'))
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2], json!({"id": "s1-3", "count": "3"}));

    // As SSE when the client takes it; a status after the messages is the last event.
    let r = c
        .get(g.url(&format!("{BASE}/v1/shelves/breaks/items?page_size=2")))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let text = r.text().await.unwrap();
    assert!(
        text.starts_with("data: {\"id\":\"breaks-0\"}\n\n"),
        "{text}"
    );
    assert!(
        text.contains("event: error\ndata: {\"error\":\"internal\""),
        "{text}"
    );

    // A query value that does not fit: refused before any call.
    let r = c
        .get(g.url(&format!("{BASE}/v1/shelves/s1/items?page_size=x")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_grpc_clients_pass_through_the_same_route() {
    use shop::inventory_client::InventoryClient;
    let (addr, seen) = inventory().await;
    // No strip_prefix: native clients call `/shop.Inventory/...` on a route of that prefix.
    let yaml = format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock", h2c: true}}
backends:
  inventory: {{url: "{{backend}}", protocol: h2c}}
routes:
  - path: "/shop.Inventory/*"
    backend: inventory
    grpc_transcode: {{protos: ["{proto}"]}}
"#,
        proto = proto()
    );
    let g = Gateway::start(&yaml, &format!("http://{addr}"));
    let channel = tonic::transport::Channel::from_shared(g.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut native = InventoryClient::new(channel);
    let item = native
        .restock(RestockRequest {
            id: "n1".into(),
            add: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((item.id.as_str(), item.count), ("n1", 2));
    let e = native
        .get_item(GetItemRequest {
            shelf: "missing".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let mut stream = native
        .list_items(ListItemsRequest {
            shelf: "n".into(),
            page_size: 3,
            delay_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(_item) = stream.message().await.unwrap() {
        n += 1;
    }
    assert_eq!(n, 3);
    // The same method as JSON on the same route.
    let r = client()
        .post(g.url("/shop.Inventory/Restock"))
        .json(&json!({"id": "j1", "add": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(r).await, (200, json!({"id": "j1", "count": "3"})));
    assert_eq!(seen.calls.load(Ordering::SeqCst), 4);
}

/// A configuration whose only route transcodes with `transcode` to a backend of `protocol`.
fn route_config(dir: &std::path::Path, transcode: &str, protocol: &str) -> std::path::PathBuf {
    let config = dir.join("c.yaml");
    let yaml = format!(
        "gateway: {{listen: \"127.0.0.1:1\"}}\nbackends:\n  inv: {{url: \"http://127.0.0.1:2\", protocol: {protocol}}}\nroutes:\n  - path: \"/x/*\"\n    backend: inv\n    grpc_transcode: {{{transcode}}}\n"
    );
    std::fs::write(&config, yaml).unwrap();
    config
}

#[test]
fn check_refuses_descriptors_and_bindings_that_do_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.proto");
    std::fs::write(&bad, "syntax = \"proto3\";\nmessage A { strin x = 1; }\n").unwrap();
    let garbage = dir.path().join("bad.pb");
    std::fs::write(&garbage, b"\x0a\xff\xff\xff").unwrap();
    let binding = dir.path().join("binding.proto");
    std::fs::write(
        &binding,
        "syntax = \"proto3\";\npackage b;\nimport \"google/api/annotations.proto\";\n\
         message R { string id = 1; }\nservice S { rpc Get(R) returns (R) {\n\
         option (google.api.http) = { get: \"/v1/{name}\" }; } }\n",
    )
    .unwrap();
    let cases = [
        (
            format!("protos: [\"{}\"]", bad.display()),
            "h2c",
            "bad.proto:2:13",
        ),
        (
            format!("descriptor_set: \"{}\"", garbage.display()),
            "h2c",
            "bad.pb",
        ),
        (
            format!("protos: [\"{}\"]", binding.display()),
            "h2c",
            "b.S.Get: \"/v1/{name}\": R has no field \"name\"",
        ),
        (
            format!("protos: [\"{}\"], services: [shop.Nope]", proto()),
            "h2c",
            "services[0]",
        ),
        (
            "protos: [\"missing.proto\"]".to_string(),
            "h2c",
            "missing.proto",
        ),
        (
            format!("protos: [\"{}\"]", proto()),
            "http1",
            "gRPC needs HTTP/2",
        ),
    ];
    for (transcode, protocol, named) in cases {
        let config = route_config(dir.path(), &transcode, protocol);
        let out = clawgate(&["check", "--config", config.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{transcode}: {err}");
        assert!(err.contains("c.yaml:7"), "located at the line: {err}");
        assert!(
            err.contains("grpc_transcode") && err.contains(named),
            "{err}"
        );
    }
    let config = route_config(dir.path(), &format!("protos: [\"{}\"]", proto()), "h2c");
    let out = clawgate(&["check", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_set_loads_and_a_reload_swaps_the_bindings() {
    let (addr, _) = inventory().await;
    let set = format!("{}/tests/grpc/inventory.pb", env!("CARGO_MANIFEST_DIR"));
    let yaml = yaml("5s").replace(
        &format!("protos: [\"{}\"]", proto()),
        &format!("descriptor_set: \"{set}\""),
    );
    let g = Gateway::start(&yaml, &format!("http://{addr}"));
    let c = client();
    let status = |path: &str| {
        let r = c.get(g.url(&format!("{BASE}{path}"))).send();
        async move { r.await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/v1/shelves/s1/items/1").await, 200);
    assert_eq!(status("/v2/shelves/s1/items/1").await, 404);

    // The same service, GetItem bound at /v2 now, from .proto files compiled at the reload.
    let dir = tempfile::tempdir().unwrap();
    let v2 = std::fs::read_to_string(proto()).unwrap().replace(
        "get: \"/v1/shelves/{shelf}/items/{item_id}\"",
        "get: \"/v2/shelves/{shelf}/items/{item_id}\"",
    );
    let file = dir.path().join("inventory.proto");
    std::fs::write(&file, v2).unwrap();
    let config = std::fs::read_to_string(&g.config).unwrap().replace(
        &format!("descriptor_set: \"{set}\""),
        &format!("protos: [\"{}\"]", file.display()),
    );
    std::fs::write(&g.config, config).unwrap();
    let out = clawgate(&["reload", "--config", g.config_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signalled = Instant::now();
    while status("/v2/shelves/s1/items/1").await != 200 {
        assert!(
            signalled.elapsed() < Duration::from_secs(2),
            "swapped within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status("/v1/shelves/s1/items/1").await, 404);
}
