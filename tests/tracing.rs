//! OpenTelemetry: spans reach a real OTLP/HTTP receiver, and the backend's `traceparent`
//! continues the client's trace through the gateway's upstream span.

mod common;
use common::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A minimal OTLP/HTTP receiver: keeps the body of every POST (the gateway is told to send JSON,
/// which the test can read; protobuf, the default, goes the same way).
fn receiver() -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let b = b.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    b.lock().unwrap().push(body);
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
                    );
                }
            });
        }
    });
    (url, bodies)
}

/// Every span in the received OTLP/JSON bodies.
fn spans(bodies: &[Vec<u8>]) -> Vec<Value> {
    let mut out = Vec::new();
    for body in bodies {
        let v: Value = serde_json::from_slice(body).expect("OTLP/JSON");
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    out
}

#[tokio::test]
async fn spans_reach_the_collector_and_the_backend_continues_the_clients_trace() {
    let (collector, bodies) = receiver();
    let backend = mock_backend::spawn();
    let yaml = format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
agents:
  "bot": {{api_key: "key-bot-trace-secret"}}
routes:
  - {{path: "/llm/*", name: "llm", backend_url: "{{backend}}", strip_prefix: true, auth_required: true}}
monitoring:
  tracing: {{enabled: true, sampler: "0.1", endpoint: "{collector}", protocol: "http/json"}}
"#
    );
    let g = Gateway::start(&yaml, &backend.url());
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = client()
        .get(g.url("/llm/echo?token=query-secret"))
        .header("x-api-key", "key-bot-trace-secret")
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let echoed: Value = r.json().await.unwrap();
    let tp = echoed["headers"]["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(
        parts[1], trace_id,
        "the backend continues the client's trace: {tp}"
    );
    assert_ne!(parts[2], client_span, "through the gateway's own span");
    assert_eq!(
        parts[3], "01",
        "a sampled parent is followed whatever the ratio"
    );

    // Without a client trace, the backend still gets a traceparent (propagation without export
    // is the same path; sampled or not by the 0.1 ratio).
    let r = client()
        .get(g.url("/llm/echo"))
        .header("x-api-key", "key-bot-trace-secret")
        .send()
        .await
        .unwrap();
    let echoed: Value = r.json().await.unwrap();
    assert!(echoed["headers"]["traceparent"]
        .as_str()
        .is_some_and(|t| t.starts_with("00-")));

    let deadline = Instant::now() + Duration::from_secs(15);
    let (server, upstream) = loop {
        let all = spans(&bodies.lock().unwrap());
        let of_trace: Vec<&Value> = all.iter().filter(|s| s["traceId"] == trace_id).collect();
        let server = of_trace
            .iter()
            .find(|s| s["name"] == "clawgate request")
            .cloned();
        let upstream = of_trace.iter().find(|s| s["name"] == "upstream").cloned();
        if let (Some(s), Some(u)) = (server, upstream) {
            break (s.clone(), u.clone());
        }
        assert!(Instant::now() < deadline, "spans never arrived: {all:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(server["parentSpanId"], client_span);
    assert_eq!(
        upstream["spanId"], parts[2],
        "the backend's parent is the upstream span"
    );
    assert_eq!(upstream["parentSpanId"], server["spanId"]);
    let exported: String = bodies
        .lock()
        .unwrap()
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(exported.contains("\"llm\""), "the route is an attribute");
    assert!(exported.contains("bot"), "the agent is an attribute");
    for secret in ["key-bot-trace-secret", "query-secret"] {
        assert!(!exported.contains(secret), "{secret} reached a span");
    }
}

#[tokio::test]
async fn spans_are_exported_as_protobuf_by_default() {
    let (collector, bodies) = receiver();
    let backend = mock_backend::spawn();
    let yaml = format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
routes:
  - {{path: "/*", backend_url: "{{backend}}"}}
monitoring:
  tracing: {{enabled: true, endpoint: "{collector}"}}
"#
    );
    let g = Gateway::start(&yaml, &backend.url());
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let r = client()
        .get(g.url("/echo"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Each body decodes as an OTLP ExportTraceServiceRequest holding the client's trace.
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;
    let raw: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let names: Vec<String> = bodies
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| {
                let req = ExportTraceServiceRequest::decode(b.as_slice()).expect("OTLP protobuf");
                req.resource_spans
                    .into_iter()
                    .flat_map(|r| r.scope_spans)
                    .flat_map(|s| s.spans)
                    .filter(|s| s.trace_id == raw)
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
            })
            .collect();
        if names.iter().any(|n| n == "clawgate request") && names.iter().any(|n| n == "upstream") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no protobuf spans of the trace arrived: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
