//! Tracing: a server span per request and a client span for its upstream call, the W3C
//! `traceparent` continued from the client and passed on to the backend, parent-based ratio
//! sampling, OTLP/HTTP export (`export`).
//!
//! A sampled request's spans are encoded (OTLP protobuf or JSON) straight into its worker
//! thread's buffer (`shards`), which the exporter takes every half second: no allocation that
//! another thread frees, no per-span queue. The OpenTelemetry SDK's span pipeline was measured
//! at about 26,000 instructions per sampled request (two spans, their conversion and export),
//! more than the rest of a proxied request's cost over bare Pingora. Unsampled requests only get
//! the `traceparent` the backend receives. Without an endpoint nothing is recorded, but the
//! context is still propagated.

mod export;

pub use export::Exporter;

use crate::shards::Shards;
use http::HeaderValue;
use std::time::SystemTime;

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// Bytes of encoded spans one thread's buffer holds for the exporter (about 4,000 spans); more
/// are dropped (and counted), never waited for.
const SHARD_LIMIT: usize = 1 << 20;

/// `monitoring.tracing` as configured.
pub struct Tracing {
    pub ratio: f64,
    pub endpoint: Option<String>,
    /// OTLP over HTTP with JSON bodies instead of protobuf.
    pub json: bool,
    /// Present when there is an endpoint to export to.
    export: Option<Export>,
}

struct Export {
    spans: Shards,
    pipe: tokio::sync::Mutex<export::Pipe>,
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

/// One finished span, borrowed from the request that made it.
pub struct Span<'a> {
    pub trace_id: u128,
    pub span_id: u64,
    /// 0 for a root span.
    pub parent: u64,
    pub name: &'static str,
    /// A server span (the request) or a client span (the upstream call).
    pub server: bool,
    pub start: SystemTime,
    pub end: SystemTime,
    /// The HTTP status; 500 and above mark the span as an error.
    pub status: u16,
    pub attributes: &'a [(&'static str, &'a str)],
}

/// What the request span says of its request (no header, body or query string).
pub struct Request<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub path: &'a str,
    pub request_id: &'a str,
    pub agent_id: Option<&'a str>,
}

/// A sampled request's trace so far.
pub struct Sampled {
    trace_id: u128,
    parent: u64,
    span_id: u64,
    start: SystemTime,
    /// The upstream call's span id and start, while it runs.
    upstream: Option<(u64, SystemTime)>,
}

/// How a request's trace began.
pub enum Begun {
    Sampled(Box<Sampled>),
    /// Not recorded: only the `traceparent` for the backend.
    Unsampled(Traceparent),
}

/// A `traceparent` value, `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, kept as bytes
/// until it goes into the upstream request: a header value made early and cloned into the
/// request would cost a second allocation (`Bytes` shares a buffer only from its first clone).
#[derive(Clone, Copy)]
pub struct Traceparent([u8; 55]);

impl Traceparent {
    /// Written by hand: `format!` of two wide hex numbers was most of the cost of an unsampled
    /// request's tracing.
    fn new(trace_id: u128, span_id: u64, sampled: bool) -> Traceparent {
        use crate::text::hex_into;
        let mut b = [0u8; 55];
        b[..3].copy_from_slice(b"00-");
        hex_into(&mut b[3..35], &trace_id.to_be_bytes());
        b[35] = b'-';
        hex_into(&mut b[36..52], &span_id.to_be_bytes());
        b[52..].copy_from_slice(if sampled { b"-01" } else { b"-00" });
        Traceparent(b)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn header_value(&self) -> HeaderValue {
        // SAFETY: the bytes are hex digits and '-', all visible ASCII, as a header value must
        // be (checked in debug builds by http itself). Skipping the check saves a pass over
        // them on every request.
        unsafe { HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::copy_from_slice(&self.0)) }
    }
}

/// `monitoring.tracing` as checked: what the tracer (a process-lived service) is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub ratio: f64,
    pub endpoint: Option<String>,
    pub json: bool,
}

impl Settings {
    /// The settings when tracing is enabled (checked either way).
    pub fn compile(
        t: &crate::config::schema::Tracing,
    ) -> Result<Option<Settings>, crate::config::Problem> {
        use crate::at;
        use crate::config::Problem;
        let ratio = match &t.sampler {
            Some(s) => parse_ratio(s)
                .map_err(|m| Problem::new(at!("monitoring", "tracing", "sampler"), m))?,
            None => 1.0,
        };
        let endpoint = t.endpoint.as_ref().map(|e| e.0.clone());
        if let Some(e) = &endpoint {
            if !e.starts_with("http://") && !e.starts_with("https://") {
                return Err(Problem::new(
                    at!("monitoring", "tracing", "endpoint"),
                    format!("{e:?} is not an OTLP/HTTP URL such as http://127.0.0.1:4318"),
                ));
            }
        }
        let json = match t.protocol.as_ref().map(|p| p.0.as_str()) {
            None | Some("http/protobuf") => false,
            Some("http/json") => true,
            Some(other) => {
                return Err(Problem::new(
                    at!("monitoring", "tracing", "protocol"),
                    format!("{other:?} is not supported; expected http/protobuf or http/json"),
                ))
            }
        };
        Ok(t.enabled.0.then_some(Settings {
            ratio,
            endpoint,
            json,
        }))
    }
}

impl Tracing {
    pub fn build(s: &Settings) -> Tracing {
        Tracing::new(s.ratio, s.endpoint.clone(), s.json)
    }

    pub fn new(ratio: f64, endpoint: Option<String>, json: bool) -> Tracing {
        let export = endpoint.as_ref().map(|e| Export {
            spans: Shards::new(SHARD_LIMIT),
            pipe: tokio::sync::Mutex::new(export::Pipe::new(e, json)),
        });
        Tracing {
            ratio,
            endpoint,
            json,
            export,
        }
    }

    /// Starts a request's trace: follows the client's sampling decision when it sent a
    /// `traceparent`, else samples new traces at the configured ratio.
    pub fn begin(&self, headers: &http::HeaderMap) -> Begun {
        let incoming = headers
            .get(&TRACEPARENT)
            .and_then(|v| parse_traceparent(v.as_bytes()));
        let (trace_id, parent, sampled) = match incoming {
            Some(p) => p,
            None => {
                let id = nonzero_u128();
                (id, 0, self.samples(id))
            }
        };
        let span_id = nonzero_u64();
        if !sampled {
            return Begun::Unsampled(Traceparent::new(trace_id, span_id, false));
        }
        Begun::Sampled(Box::new(Sampled {
            trace_id,
            parent,
            span_id,
            start: SystemTime::now(),
            upstream: None,
        }))
    }

    /// Whether a new trace is recorded, decided from its id as OpenTelemetry's
    /// `TraceIdRatioBased` sampler does (the id's low 63 bits against the ratio): no draw of its
    /// own, and the same decision wherever the id is seen.
    fn samples(&self, trace_id: u128) -> bool {
        self.ratio >= 1.0 || ((trace_id as u64) >> 1) < (self.ratio * (1u64 << 63) as f64) as u64
    }

    /// Starts the upstream call's span; the `traceparent` the backend receives names it.
    pub fn upstream(&self, s: &mut Sampled) -> Traceparent {
        let id = nonzero_u64();
        s.upstream = Some((id, SystemTime::now()));
        Traceparent::new(s.trace_id, id, true)
    }

    /// Ends the upstream call's span (when it is running).
    pub fn end_upstream(&self, s: &mut Sampled, status: u16, route: &str) {
        let Some((span_id, start)) = s.upstream.take() else {
            return;
        };
        self.record(&Span {
            trace_id: s.trace_id,
            span_id,
            parent: s.span_id,
            name: "upstream",
            server: false,
            start,
            end: SystemTime::now(),
            status,
            attributes: &[("http.route", route)],
        });
    }

    /// Ends the request's span (and its upstream call's, if that never got a response).
    pub fn end_request(&self, mut s: Box<Sampled>, status: u16, r: &Request) {
        self.end_upstream(&mut s, status, r.route);
        let all = [
            ("http.request.method", r.method),
            ("http.route", r.route),
            ("url.path", r.path),
            ("clawgate.request_id", r.request_id),
            ("clawgate.agent_id", r.agent_id.unwrap_or("")),
        ];
        self.record(&Span {
            trace_id: s.trace_id,
            span_id: s.span_id,
            parent: s.parent,
            name: "clawgate request",
            server: true,
            start: s.start,
            end: SystemTime::now(),
            status,
            attributes: &all[..if r.agent_id.is_some() { 5 } else { 4 }],
        });
    }

    fn record(&self, span: &Span) {
        if let Some(x) = &self.export {
            x.spans.append(|buf| export::encode(span, self.json, buf));
        }
    }

    /// Sends what is buffered now (the exporter calls this on its schedule, the drain at exit).
    pub async fn flush(&self) {
        if let Some(x) = &self.export {
            x.pipe.lock().await.send(&x.spans).await;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let id = crate::random::u64();
        if id != 0 {
            return id;
        }
    }
}

fn nonzero_u128() -> u128 {
    loop {
        let id = (u128::from(crate::random::u64()) << 64) | u128::from(crate::random::u64());
        if id != 0 {
            return id;
        }
    }
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`: trace id, parent span id, sampled.
/// Not inlined: only requests that carry one run it, the others keep it out of their caches.
#[inline(never)]
fn parse_traceparent(v: &[u8]) -> Option<(u128, u64, bool)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let mut parts = s.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
        return None;
    }
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(trace) || !hex(parent) || !hex(flags) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let parent_id = u64::from_str_radix(parent, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some((trace_id, parent_id, flags & 1 == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(traceparent: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", traceparent.parse().unwrap());
        h
    }

    #[test]
    fn about_the_ratio_of_new_traces_is_sampled() {
        let t = Tracing::new(0.1, None, false);
        let sampled = (0..20_000)
            .filter(|_| matches!(t.begin(&http::HeaderMap::new()), Begun::Sampled(_)))
            .count();
        assert!((1_600..2_400).contains(&sampled), "{sampled} of 20000");
    }

    #[test]
    fn ratios() {
        assert_eq!(parse_ratio("0.1"), Ok(0.1));
        assert!(parse_ratio("1.5").is_err());
        assert!(parse_ratio("often").is_err());
    }

    #[test]
    fn the_clients_sampled_trace_is_continued_and_passed_on() {
        let t = Tracing::new(0.0, None, false);
        let Begun::Sampled(mut s) = t.begin(&headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )) else {
            panic!("a sampled parent is followed whatever the ratio")
        };
        assert_eq!(s.parent, 0x00f067aa0ba902b7);
        let tp = t.upstream(&mut s);
        let tp = std::str::from_utf8(tp.as_bytes()).unwrap();
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-01"),
            "{tp}"
        );
        assert!(!tp.contains("00f067aa0ba902b7"), "a new span for the hop");
        t.end_request(
            s,
            200,
            &Request {
                method: "GET",
                route: "llm",
                path: "/",
                request_id: "r",
                agent_id: None,
            },
        );
    }

    #[test]
    fn unsampled_requests_get_a_traceparent_by_hand() {
        let t = Tracing::new(0.0, None, false);
        let Begun::Unsampled(tp) = t.begin(&headers(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )) else {
            panic!("an unsampled parent is followed")
        };
        let tp = std::str::from_utf8(tp.as_bytes()).unwrap();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-00"));
        assert!(!tp.contains("00f067aa0ba902b7"));
        let Begun::Unsampled(root) = t.begin(&http::HeaderMap::new()) else {
            panic!("ratio 0 samples no root")
        };
        assert_eq!(parse_traceparent(root.as_bytes()).map(|p| p.2), Some(false));
        let Begun::Sampled(_) = Tracing::new(1.0, None, false).begin(&http::HeaderMap::new())
        else {
            panic!("ratio 1 samples every root")
        };
    }

    #[test]
    fn bad_traceparents_start_a_new_trace() {
        for bad in [
            "garbage",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn traceparents_by_hand_match_the_format() {
        let (t, sp) = (
            0x4bf92f3577b34da6a3ce929d0e0e4736u128,
            0x00f067aa0ba902b7u64,
        );
        assert_eq!(
            Traceparent::new(t, sp, true).header_value(),
            format!("00-{t:032x}-{sp:016x}-01").as_str()
        );
        assert_eq!(
            Traceparent::new(1, 2, false).as_bytes(),
            format!("00-{:032x}-{:016x}-00", 1, 2).as_bytes()
        );
    }
}
