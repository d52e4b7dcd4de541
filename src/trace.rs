//! OpenTelemetry tracing: a server span per request and a client span for its upstream call,
//! the W3C `traceparent` continued from the client and passed on to the backend, parent-based
//! ratio sampling, OTLP/HTTP export (protobuf, or JSON) in batches from a thread of the SDK's own. Without an
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
    /// OTLP over HTTP with JSON bodies instead of protobuf (dearer to encode).
    pub json: bool,
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
    pub fn new(ratio: f64, endpoint: Option<String>, json: bool) -> Tracing {
        Tracing {
            ratio,
            endpoint,
            json,
            live: OnceLock::new(),
        }
    }

    /// Starts the SDK (and its exporter thread when there is an endpoint).
    pub fn start(&self) -> Result<(), String> {
        // Roots are sampled by `begin` (the ratio), unsampled parents never reach the SDK: what
        // the SDK sees is always to be recorded.
        let sampler = Sampler::ParentBased(Box::new(Sampler::AlwaysOn));
        let mut builder = SdkTracerProvider::builder().with_sampler(sampler);
        if let Some(endpoint) = &self.endpoint {
            use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(if self.json {
                    Protocol::HttpJson
                } else {
                    Protocol::HttpBinary
                })
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

    /// Starts a request's trace. Sampled requests get SDK spans; the others (most of them) only
    /// get the `traceparent` the backend will receive, made by hand: no span, no allocation
    /// beyond the header.
    pub fn begin(&self, headers: &http::HeaderMap) -> Option<Begun> {
        self.live.get()?;
        let incoming = headers
            .get("traceparent")
            .and_then(|v| parse_traceparent(v.as_bytes()));
        let sampled = match incoming {
            Some((_, sampled)) => sampled,
            None => self.ratio >= 1.0 || (random_u64() as f64 / u64::MAX as f64) < self.ratio,
        };
        if sampled {
            return self.request(headers).map(Begun::Sampled);
        }
        let trace_id = match incoming {
            Some((id, _)) => id,
            None => loop {
                let id = uuid::Uuid::new_v4().as_u128();
                if id != 0 {
                    break id;
                }
            },
        };
        let span_id = loop {
            let id = random_u64();
            if id != 0 {
                break id;
            }
        };
        let value = format!("00-{trace_id:032x}-{span_id:016x}-00");
        http::HeaderValue::from_str(&value)
            .ok()
            .map(Begun::Unsampled)
    }

    /// The request's server span, continuing the client's trace when it sent one.
    fn request(&self, headers: &http::HeaderMap) -> Option<Context> {
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

/// How a request's trace began.
pub enum Begun {
    Sampled(Context),
    /// Not recorded: only the `traceparent` for the backend.
    Unsampled(http::HeaderValue),
}

fn random_u64() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`: the trace id and the sampled flag.
fn parse_traceparent(v: &[u8]) -> Option<(u128, bool)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let mut parts = s.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let parent_id = u64::from_str_radix(parent, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some((trace_id, flags & 1 == 1))
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
        let t = Tracing::new(1.0, None, false);
        t.start().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let Some(Begun::Sampled(req)) = t.begin(&h) else {
            panic!("a sampled parent is followed")
        };
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

    #[test]
    fn unsampled_requests_get_a_traceparent_by_hand() {
        let t = Tracing::new(0.0, None, false);
        t.start().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
                .parse()
                .unwrap(),
        );
        let Some(Begun::Unsampled(tp)) = t.begin(&h) else {
            panic!("an unsampled parent is followed")
        };
        let tp = tp.to_str().unwrap();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-00"));
        assert!(!tp.contains("00f067aa0ba902b7"));
        let Some(Begun::Unsampled(root)) = t.begin(&http::HeaderMap::new()) else {
            panic!("ratio 0 samples no root")
        };
        assert_eq!(parse_traceparent(root.as_bytes()).map(|p| p.1), Some(false));
        assert_eq!(parse_traceparent(b"garbage"), None);
        assert_eq!(
            parse_traceparent(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
    }
}
