//! OTLP/HTTP export of finished spans: protobuf (or JSON) bodies built with the OpenTelemetry
//! protocol crate's types, posted every half second from a background service with Pingora's
//! HTTP client. A slow or dead collector delays nothing but the export; spans that do not fit
//! the queue are dropped and counted.

use super::{Span, Tracing};
use crate::http_client::{exchange, Call, Target};
use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Status};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prost::encoding::{encode_key, encode_varint, WireType};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

const EVERY: Duration = Duration::from_millis(500);
const BATCH: usize = 512;
const TIMEOUT: Duration = Duration::from_secs(5);

/// The exporter's side of the queue and its connection.
pub struct Pipe {
    rx: Receiver<Span>,
    url: String,
    json: bool,
    connector: pingora::connectors::http::Connector,
    target: Option<Target>,
    /// The last export failed (then only the recovery is logged, not every failure).
    failing: bool,
}

impl Pipe {
    pub fn new(rx: Receiver<Span>, endpoint: &str, json: bool) -> Pipe {
        Pipe {
            rx,
            url: traces_url(endpoint),
            json,
            connector: pingora::connectors::http::Connector::new(None),
            target: None,
            failing: false,
        }
    }

    /// Posts what is queued, in batches.
    pub async fn send_queued(&mut self, dropped: u64) {
        if dropped > 0 {
            log::warn!("tracing: {dropped} spans dropped (the export queue was full)");
        }
        loop {
            let batch: Vec<Span> = self.rx.try_iter().take(BATCH).collect();
            if batch.is_empty() {
                return;
            }
            let (body, content_type) = if self.json {
                match serde_json::to_vec(&request(&batch)) {
                    Ok(b) => (b, "application/json"),
                    Err(e) => {
                        log::warn!("tracing: cannot encode spans: {e}");
                        continue;
                    }
                }
            } else {
                (protobuf(&batch), "application/x-protobuf")
            };
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
                    return;
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

fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn proto_span(s: &Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    let mut attributes: Vec<KeyValue> = s
        .attributes
        .iter()
        .map(|(k, v)| attribute(k, any_value::Value::StringValue(v.clone())))
        .collect();
    attributes.push(attribute(
        "http.response.status_code",
        any_value::Value::IntValue(i64::from(s.status)),
    ));
    let status = if s.status >= 500 {
        Status {
            message: format!("status {}", s.status),
            code: status::StatusCode::Error as i32,
        }
    } else {
        Status::default()
    };
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: s.trace_id.to_be_bytes().to_vec(),
        span_id: s.span_id.to_be_bytes().to_vec(),
        parent_span_id: if s.parent == 0 {
            Vec::new()
        } else {
            s.parent.to_be_bytes().to_vec()
        },
        // Sampled.
        flags: 1,
        name: s.name.to_string(),
        kind: if s.server {
            span::SpanKind::Server
        } else {
            span::SpanKind::Client
        } as i32,
        start_time_unix_nano: nanos(s.start),
        end_time_unix_nano: nanos(s.end),
        attributes,
        status: Some(status),
        ..Default::default()
    }
}

/// The batch as the protocol crate's message (serialised as OTLP/JSON).
fn request(batch: &[Span]) -> ExportTraceServiceRequest {
    let resource = Resource {
        attributes: vec![
            attribute(
                "service.name",
                any_value::Value::StringValue("clawgate".into()),
            ),
            attribute(
                "service.version",
                any_value::Value::StringValue(env!("CARGO_PKG_VERSION").into()),
            ),
        ],
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "clawgate".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: batch.iter().map(proto_span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The batch as an OTLP `ExportTraceServiceRequest` in protobuf, written field by field with
/// prost's encoding primitives. Building the protocol crate's message first and encoding it
/// cost about 5,000 instructions per span (allocations, and every nested length computed once
/// per level); this costs a few hundred. The test decodes it with the crate's own types.
fn protobuf(batch: &[Span]) -> Vec<u8> {
    let mut spans = Vec::with_capacity(batch.len() * 256);
    let mut one = Vec::with_capacity(256);
    let mut scratch = Vec::with_capacity(64);
    for s in batch {
        one.clear();
        span_fields(s, &mut one, &mut scratch);
        put_bytes(&mut spans, 2, &one); // ScopeSpans.spans
    }
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    let mut scope_spans = Vec::with_capacity(spans.len() + 64);
    {
        let mut scope = Vec::new();
        put_bytes(&mut scope, 1, b"clawgate"); // InstrumentationScope.name
        put_bytes(&mut scope, 2, version); // .version
        put_bytes(&mut scope_spans, 1, &scope); // ScopeSpans.scope
    }
    scope_spans.extend_from_slice(&spans);
    let mut resource_spans = Vec::with_capacity(scope_spans.len() + 128);
    {
        let mut resource = Vec::new();
        put_string_attribute(&mut resource, 1, "service.name", b"clawgate", &mut scratch);
        put_string_attribute(&mut resource, 1, "service.version", version, &mut scratch);
        put_bytes(&mut resource_spans, 1, &resource); // ResourceSpans.resource
    }
    put_bytes(&mut resource_spans, 2, &scope_spans); // ResourceSpans.scope_spans
    let mut body = Vec::with_capacity(resource_spans.len() + 8);
    put_bytes(&mut body, 1, &resource_spans); // ExportTraceServiceRequest.resource_spans
    body
}

/// The fields of one `Span` message.
fn span_fields(s: &Span, out: &mut Vec<u8>, scratch: &mut Vec<u8>) {
    put_bytes(out, 1, &s.trace_id.to_be_bytes());
    put_bytes(out, 2, &s.span_id.to_be_bytes());
    if s.parent != 0 {
        put_bytes(out, 4, &s.parent.to_be_bytes());
    }
    put_bytes(out, 5, s.name.as_bytes());
    let kind = if s.server {
        span::SpanKind::Server
    } else {
        span::SpanKind::Client
    };
    put_varint(out, 6, kind as u64);
    encode_key(7, WireType::SixtyFourBit, out);
    out.extend_from_slice(&nanos(s.start).to_le_bytes());
    encode_key(8, WireType::SixtyFourBit, out);
    out.extend_from_slice(&nanos(s.end).to_le_bytes());
    for (key, value) in &s.attributes {
        put_string_attribute(out, 9, key, value.as_bytes(), scratch);
    }
    // http.response.status_code, an int attribute: AnyValue { int_value = 3 }.
    let mut any = [0u8; 16];
    let used = {
        let mut w: &mut [u8] = &mut any;
        encode_key(3, WireType::Varint, &mut w);
        encode_varint(u64::from(s.status), &mut w);
        16 - w.len()
    };
    scratch.clear();
    put_bytes(scratch, 1, b"http.response.status_code");
    put_bytes(scratch, 2, &any[..used]);
    put_bytes(out, 9, scratch);
    if s.status >= 500 {
        scratch.clear();
        let message = format!("status {}", s.status);
        put_bytes(scratch, 2, message.as_bytes());
        put_varint(scratch, 3, status::StatusCode::Error as u64);
        put_bytes(out, 15, scratch);
    } else {
        put_bytes(out, 15, &[]);
    }
    encode_key(16, WireType::ThirtyTwoBit, out);
    out.extend_from_slice(&1u32.to_le_bytes()); // flags: sampled
}

/// A `KeyValue` with a string value, as field `tag` of the message in `out`.
fn put_string_attribute(out: &mut Vec<u8>, tag: u32, key: &str, value: &[u8], kv: &mut Vec<u8>) {
    kv.clear();
    put_bytes(kv, 1, key.as_bytes());
    // AnyValue { string_value = 1 }, as KeyValue.value = 2: its length is known.
    encode_key(2, WireType::LengthDelimited, kv);
    let inner = 1 + prost::encoding::encoded_len_varint(value.len() as u64) + value.len();
    encode_varint(inner as u64, kv);
    put_bytes(kv, 1, value);
    put_bytes(out, tag, kv);
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
    fn spans_encode_with_their_ids_and_attributes() {
        let now = SystemTime::now();
        let span = Span {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 7,
            parent: 0,
            name: "upstream",
            server: false,
            start: now,
            end: now,
            status: 502,
            attributes: vec![("http.route", "llm".into())],
        };
        let child = Span {
            parent: 7,
            span_id: 8,
            name: "clawgate request",
            server: true,
            status: 200,
            attributes: vec![
                ("url.path", "/a".into()),
                ("clawgate.agent_id", "bot".into()),
            ],
            ..span
        };
        let batch = vec![span, child];
        let decoded =
            <ExportTraceServiceRequest as prost::Message>::decode(protobuf(&batch).as_slice())
                .unwrap();
        assert_eq!(
            decoded,
            request(&batch),
            "the protobuf by hand is the crate's message"
        );
        let json = serde_json::to_value(request(&batch)).unwrap();
        let s = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s["spanId"], "0000000000000007");
        assert_eq!(s["parentSpanId"], "");
        assert_eq!(s["kind"], 3);
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(s["attributes"][0]["key"], "http.route");
        assert_eq!(s["attributes"][1]["value"]["intValue"], "502");
    }
}
