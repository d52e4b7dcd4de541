//! OpenTelemetry tracing: a server span per request and a client span for its upstream call,
//! the W3C `traceparent` continued from the client and passed on to the backend, parent-based
//! ratio sampling, OTLP/HTTP (JSON) export in batches from a thread of the SDK's own. Without an
//! endpoint nothing is exported, but the context is still propagated.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use std::sync::OnceLock;
use std::time::Duration;

/// `monitoring.tracing` as configured; the SDK starts only in the serving process.
pub struct Tracing {
    pub ratio: f64,
    pub endpoint: Option<String>,
    live: OnceLock<Live>,
}

struct Live {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracing")
            .field("ratio", &self.ratio)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// `sampler: "0.1"`: the share of new traces recorded (a sampled parent is always followed).
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "{s:?} is not a sampling ratio; expected a number from 0 to 1"
        )),
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

impl Tracing {
    pub fn new(ratio: f64, endpoint: Option<String>) -> Tracing {
        Tracing {
            ratio,
            endpoint,
            live: OnceLock::new(),
        }
    }

    /// Starts the SDK (and its exporter thread when there is an endpoint).
    pub fn start(&self) -> Result<(), String> {
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(self.ratio)));
        let mut builder = SdkTracerProvider::builder().with_sampler(sampler);
        if let Some(endpoint) = &self.endpoint {
            use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(traces_url(endpoint))
                .with_timeout(Duration::from_secs(5))
                .with_headers(Default::default())
                .build()
                .map_err(|e| format!("tracing exporter for {endpoint}: {e}"))?;
            let batches = BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(500))
                .with_max_queue_size(8192)
                .build();
            builder = builder.with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batches)
                    .build(),
            );
        }
        let provider = builder.build();
        let tracer = provider.tracer("clawgate");
        let _ = self.live.set(Live {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        });
        Ok(())
    }

    /// Sends what is buffered (at shutdown).
    pub fn flush(&self) {
        if let Some(live) = self.live.get() {
            let _ = live.provider.force_flush();
        }
    }

    /// The request's server span, continuing the client's trace when it sent one.
    pub fn request(&self, headers: &http::HeaderMap) -> Option<Context> {
        let live = self.live.get()?;
        let parent = live.propagator.extract(&HeaderExtractor(headers));
        let span = live
            .tracer
            .span_builder("clawgate request")
            .with_kind(SpanKind::Server)
            .start_with_context(&live.tracer, &parent);
        Some(parent.with_span(span))
    }

    /// The upstream call's client span, child of the request's, and the `traceparent` (and
    /// `tracestate`) the backend receives.
    pub fn upstream(&self, request: &Context, route: &str) -> Option<(Context, http::HeaderMap)> {
        let live = self.live.get()?;
        let mut span = live
            .tracer
            .span_builder("upstream")
            .with_kind(SpanKind::Client)
            .start_with_context(&live.tracer, request);
        if span.is_recording() {
            span.set_attribute(KeyValue::new("http.route", route.to_string()));
        }
        let cx = request.with_span(span);
        let mut headers = http::HeaderMap::new();
        live.propagator
            .inject_context(&cx, &mut HeaderInjector(&mut headers));
        Some((cx, headers))
    }
}

/// Ends a span with the attributes of its outcome.
pub fn end(cx: &Context, status: u16, attributes: Vec<KeyValue>) {
    let span = cx.span();
    if !span.is_recording() {
        span.end();
        return;
    }
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    for a in attributes {
        span.set_attribute(a);
    }
    if status >= 500 {
        span.set_status(opentelemetry::trace::Status::error(format!(
            "status {status}"
        )));
    }
    span.end();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_urls() {
        assert_eq!(parse_ratio("0.1"), Ok(0.1));
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("often").is_err());
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }

    #[test]
    fn the_clients_trace_is_continued_and_passed_on() {
        let t = Tracing::new(1.0, None);
        t.start().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let req = t.request(&h).unwrap();
        let (up, out) = t.upstream(&req, "llm").unwrap();
        let tp = out["traceparent"].to_str().unwrap();
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(
            !tp.contains("00f067aa0ba902b7"),
            "a new span id for the upstream hop"
        );
        end(&up, 200, vec![]);
        end(&req, 200, vec![]);
    }
}
