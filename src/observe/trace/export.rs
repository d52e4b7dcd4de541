//! OTLP/HTTP export of finished spans. Each span is encoded when it ends, as an entry of
//! `ScopeSpans.spans` (protobuf, with prost's encoding primitives) or as a JSON object; every
//! half second the exporter wraps each thread's spans in an `ExportTraceServiceRequest` and
//! posts it with Pingora's HTTP client. A slow or dead collector delays nothing but the export.
//!
//! Building the protocol crate's message types and encoding them cost about 5,000 instructions
//! per span (allocations, and every nested length computed once per level); this costs a few
//! hundred. The tests decode both encodings with the crate's own types.

use super::{Span, Tracing};
use crate::http_client::{exchange, Call, Target};
use crate::shards::Shards;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const EVERY: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_secs(5);
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// OTLP `SpanKind` and `StatusCode` values.
const KIND_SERVER: u64 = 2;
const KIND_CLIENT: u64 = 3;
const STATUS_ERROR: u64 = 2;

/// The exporter's connection and state.
pub struct Pipe {
    url: String,
    json: bool,
    connector: pingora::connectors::http::Connector,
    target: Option<Target>,
    spare: Vec<u8>,
    /// The last export failed (then only the recovery is logged, not every failure).
    failing: bool,
}

impl Pipe {
    pub fn new(endpoint: &str, json: bool) -> Pipe {
        Pipe {
            url: traces_url(endpoint),
            json,
            connector: pingora::connectors::http::Connector::new(None),
            target: None,
            spare: Vec::new(),
            failing: false,
        }
    }

    /// Posts the buffered spans, one request per thread's buffer.
    pub async fn send(&mut self, spans: &Shards) {
        let dropped = spans.take_dropped();
        if dropped > 0 {
            log::warn!("tracing: {dropped} spans dropped (the export buffers were full)");
        }
        let mut bodies = Vec::new();
        let json = self.json;
        spans.take(&mut self.spare, |encoded| {
            bodies.push(envelope(encoded, json))
        });
        let content_type = if json {
            "application/json"
        } else {
            "application/x-protobuf"
        };
        for body in bodies {
            match self.post(body, content_type).await {
                Ok(()) if self.failing => {
                    self.failing = false;
                    log::info!("tracing: spans reach {} again", self.url);
                }
                Ok(()) => {}
                Err(e) => {
                    if !self.failing {
                        log::warn!("tracing: cannot export spans to {}: {e}", self.url);
                    }
                    self.failing = true;
                    self.target = None;
                }
            }
        }
    }

    async fn post(&mut self, body: Vec<u8>, content_type: &str) -> Result<(), String> {
        if self.target.is_none() {
            self.target = Some(Target::resolve(&self.url, TIMEOUT).await?);
        }
        let Some(target) = &self.target else {
            return Err("no target".into());
        };
        let call = Call {
            method: "POST",
            headers: &[("content-type", content_type)],
            body: Some(body.into()),
            max_answer: 1 << 20,
        };
        match exchange(&self.connector, target, call, TIMEOUT).await? {
            (200..=299, _) => Ok(()),
            (status, _) => Err(format!("the collector answered {status}")),
        }
    }
}

/// The traces endpoint of an OTLP/HTTP collector URL.
fn traces_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/v1/traces") {
        e.to_string()
    } else {
        format!("{e}/v1/traces")
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Appends a finished span to a thread's buffer.
pub fn encode(s: &Span, json: bool, out: &mut Vec<u8>) {
    if json {
        span_json(s, out);
        out.push(b',');
    } else {
        // The span's length comes first: its fields are made in a scratch buffer of the thread.
        thread_local! {
            static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
        }
        SCRATCH.with(|scratch| {
            let mut fields = scratch.borrow_mut();
            fields.clear();
            span_fields(s, &mut fields);
            put_bytes(out, 2, &fields); // ScopeSpans.spans
        });
    }
}

/// An `ExportTraceServiceRequest` holding one thread's encoded spans.
fn envelope(spans: &[u8], json: bool) -> Vec<u8> {
    if json {
        let spans = spans.strip_suffix(b",").unwrap_or(spans);
        let mut body = Vec::with_capacity(spans.len() + 300);
        body.extend_from_slice(b"{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
        attribute_json(&mut body, "service.name", "clawgate");
        body.push(b',');
        attribute_json(&mut body, "service.version", VERSION);
        body.extend_from_slice(
            b"]},\"scopeSpans\":[{\"scope\":{\"name\":\"clawgate\",\"version\":",
        );
        crate::text::push_str(&mut body, VERSION);
        body.extend_from_slice(b"},\"spans\":[");
        body.extend_from_slice(spans);
        body.extend_from_slice(b"]}]}]}");
        return body;
    }
    let mut scope_spans = Vec::with_capacity(spans.len() + 32);
    let mut scope = Vec::new();
    put_bytes(&mut scope, 1, b"clawgate"); // InstrumentationScope.name
    put_bytes(&mut scope, 2, VERSION.as_bytes()); // .version
    put_bytes(&mut scope_spans, 1, &scope); // ScopeSpans.scope
    scope_spans.extend_from_slice(spans);
    let mut resource = Vec::new();
    put_string_attribute(&mut resource, 1, "service.name", "clawgate");
    put_string_attribute(&mut resource, 1, "service.version", VERSION);
    let mut resource_spans = Vec::with_capacity(scope_spans.len() + 96);
    put_bytes(&mut resource_spans, 1, &resource); // ResourceSpans.resource
    put_bytes(&mut resource_spans, 2, &scope_spans); // ResourceSpans.scope_spans
    let mut body = Vec::with_capacity(resource_spans.len() + 8);
    put_bytes(&mut body, 1, &resource_spans); // ExportTraceServiceRequest.resource_spans
    body
}

/// The fields of one OTLP `Span` message.
fn span_fields(s: &Span, out: &mut Vec<u8>) {
    put_bytes(out, 1, &s.trace_id.to_be_bytes());
    put_bytes(out, 2, &s.span_id.to_be_bytes());
    if s.parent != 0 {
        put_bytes(out, 4, &s.parent.to_be_bytes());
    }
    put_bytes(out, 5, s.name.as_bytes());
    put_varint(out, 6, if s.server { KIND_SERVER } else { KIND_CLIENT });
    encode_key(7, WireType::SixtyFourBit, out);
    out.extend_from_slice(&nanos(s.start).to_le_bytes());
    encode_key(8, WireType::SixtyFourBit, out);
    out.extend_from_slice(&nanos(s.end).to_le_bytes());
    for (key, value) in s.attributes {
        put_string_attribute(out, 9, key, value);
    }
    // http.response.status_code: KeyValue { key, value: AnyValue { int_value = 3 } }.
    let key = b"http.response.status_code";
    let status = u64::from(s.status);
    let any = 1 + encoded_len_varint(status);
    encode_key(9, WireType::LengthDelimited, out);
    encode_varint((2 + key.len() + 2 + any) as u64, out);
    put_bytes(out, 1, key);
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(any as u64, out);
    put_varint(out, 3, status);
    // Status { message = 2, code = 3 }.
    if s.status >= 500 {
        let mut digits = [0u8; 3];
        let message = status_message(s.status, &mut digits);
        encode_key(15, WireType::LengthDelimited, out);
        encode_varint((2 + message.len() + 2) as u64, out);
        put_bytes(out, 2, message);
        put_varint(out, 3, STATUS_ERROR);
    } else {
        put_bytes(out, 15, &[]);
    }
    encode_key(16, WireType::ThirtyTwoBit, out);
    out.extend_from_slice(&1u32.to_le_bytes()); // flags: sampled
}

/// `502` as text, for an error status's message.
fn status_message(status: u16, digits: &mut [u8; 3]) -> &[u8] {
    digits[0] = b'0' + (status / 100 % 10) as u8;
    digits[1] = b'0' + (status / 10 % 10) as u8;
    digits[2] = b'0' + (status % 10) as u8;
    &digits[..]
}

/// A `KeyValue` with a string value, as field `tag` of the message in `out`.
fn put_string_attribute(out: &mut Vec<u8>, tag: u32, key: &str, value: &str) {
    let (k, v) = (key.len(), value.len());
    let any = 1 + encoded_len_varint(v as u64) + v; // AnyValue { string_value = 1 }
    let kv = 1 + encoded_len_varint(k as u64) + k + 1 + encoded_len_varint(any as u64) + any;
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(kv as u64, out);
    put_bytes(out, 1, key.as_bytes());
    encode_key(2, WireType::LengthDelimited, out);
    encode_varint(any as u64, out);
    put_bytes(out, 1, value.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn put_varint(out: &mut Vec<u8>, tag: u32, value: u64) {
    encode_key(tag, WireType::Varint, out);
    encode_varint(value, out);
}

/// One span as OTLP/JSON: ids in hex, 64-bit numbers as strings.
fn span_json(s: &Span, o: &mut Vec<u8>) {
    use crate::text::{push_hex, push_num, push_str};
    o.extend_from_slice(b"{\"traceId\":\"");
    push_hex(o, &s.trace_id.to_be_bytes());
    o.extend_from_slice(b"\",\"spanId\":\"");
    push_hex(o, &s.span_id.to_be_bytes());
    o.push(b'"');
    if s.parent != 0 {
        o.extend_from_slice(b",\"parentSpanId\":\"");
        push_hex(o, &s.parent.to_be_bytes());
        o.push(b'"');
    }
    o.extend_from_slice(b",\"flags\":1,\"name\":");
    push_str(o, s.name);
    o.extend_from_slice(b",\"kind\":");
    push_num(o, if s.server { KIND_SERVER } else { KIND_CLIENT });
    o.extend_from_slice(b",\"startTimeUnixNano\":\"");
    push_num(o, nanos(s.start));
    o.extend_from_slice(b"\",\"endTimeUnixNano\":\"");
    push_num(o, nanos(s.end));
    o.extend_from_slice(b"\",\"attributes\":[");
    for (key, value) in s.attributes {
        attribute_json(o, key, value);
        o.push(b',');
    }
    o.extend_from_slice(b"{\"key\":\"http.response.status_code\",\"value\":{\"intValue\":\"");
    push_num(o, s.status);
    o.extend_from_slice(b"\"}}],\"status\":{");
    if s.status >= 500 {
        let mut digits = [0u8; 3];
        o.extend_from_slice(b"\"code\":2,\"message\":\"");
        o.extend_from_slice(status_message(s.status, &mut digits));
        o.push(b'"');
    }
    o.extend_from_slice(b"}}");
}

fn attribute_json(o: &mut Vec<u8>, key: &str, value: &str) {
    o.extend_from_slice(b"{\"key\":");
    crate::text::push_str(o, key);
    o.extend_from_slice(b",\"value\":{\"stringValue\":");
    crate::text::push_str(o, value);
    o.extend_from_slice(b"}}");
}

/// The background service that exports spans on a schedule.
pub struct Exporter(pub Arc<Tracing>);

#[async_trait]
impl BackgroundService for Exporter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => {}
                _ = tokio::time::sleep(EVERY) => {}
            }
            self.0.flush().await;
            if *shutdown.borrow() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    #[test]
    fn urls() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn both_encodings_are_the_protocols_message() {
        let now = SystemTime::now();
        let upstream = Span {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 7,
            parent: 8,
            name: "upstream",
            server: false,
            start: now,
            end: now,
            status: 502,
            attributes: &[("http.route", "llm \"quoted\"")],
        };
        let request = Span {
            span_id: 8,
            parent: 0,
            name: "clawgate request",
            server: true,
            status: 200,
            attributes: &[("url.path", "/a"), ("clawgate.agent_id", "bot")],
            ..upstream
        };
        let (mut proto, mut json) = (Vec::new(), Vec::new());
        for s in [&upstream, &request] {
            encode(s, false, &mut proto);
            encode(s, true, &mut json);
        }
        let from_proto = ExportTraceServiceRequest::decode(envelope(&proto, false).as_slice())
            .expect("protobuf");
        let json = envelope(&json, true);
        let from_json: ExportTraceServiceRequest = serde_json::from_slice(&json)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&json)));
        assert_eq!(from_proto, from_json);

        let rs = &from_proto.resource_spans[0];
        let resource = rs.resource.as_ref().unwrap();
        assert_eq!(resource.attributes[0].key, "service.name");
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].trace_id, upstream.trace_id.to_be_bytes());
        assert_eq!(spans[0].parent_span_id, 8u64.to_be_bytes());
        assert_eq!(spans[0].kind, 3);
        assert_eq!(spans[0].status.as_ref().unwrap().code, 2);
        assert_eq!(spans[0].status.as_ref().unwrap().message, "502");
        assert_eq!(spans[0].start_time_unix_nano, nanos(now));
        assert!(spans[1].parent_span_id.is_empty());
        assert_eq!(spans[1].name, "clawgate request");
        let keys: Vec<&str> = spans[1].attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            ["url.path", "clawgate.agent_id", "http.response.status_code"]
        );
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let s = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["attributes"][1]["value"]["intValue"], "502");
    }
}
