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
use prost::Message;
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
                match serde_json::to_vec(&request(batch)) {
                    Ok(b) => (b, "application/json"),
                    Err(e) => {
                        log::warn!("tracing: cannot encode spans: {e}");
                        continue;
                    }
                }
            } else {
                (request(batch).encode_to_vec(), "application/x-protobuf")
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

fn proto_span(s: Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    let mut attributes: Vec<KeyValue> = s
        .attributes
        .into_iter()
        .map(|(k, v)| attribute(k, any_value::Value::StringValue(v)))
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

fn request(batch: Vec<Span>) -> ExportTraceServiceRequest {
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
                spans: batch.into_iter().map(proto_span).collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
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
        let json = serde_json::to_value(request(vec![span])).unwrap();
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
