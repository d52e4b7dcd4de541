//! Observability: the Prometheus metrics (`metrics/`), the JSON access log (`access_log/`),
//! tracing (`trace/`), LLM token usage read from responses (`usage.rs`), and here what a finished
//! request leaves behind in each: its series, its log line, its spans.

pub mod access_log;
pub mod latency;
pub mod metrics;
pub mod trace;
pub mod usage;

use crate::console::stats::Slot;
use access_log::{AccessLog, Entry};
use metrics::{Metrics, Observation};
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

/// The parts of a request's context that observation needs.
pub struct Seen<'a> {
    pub route: &'a str,
    /// The configured route's metric series.
    pub series: Option<&'a metrics::RouteSeries>,
    pub agent_id: Option<&'a str>,
    /// Where the console counts the configured route and the agent.
    pub console_slots: (Option<&'a Slot>, Option<&'a Slot>),
    /// Seconds since the request arrived (read once for all three).
    pub seconds: f64,
    pub upstream_seconds: Option<f64>,
    pub request_id: &'a str,
    pub upstream: Option<&'a str>,
    pub upstream_status: Option<u16>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Tokens left of the tightest limit that applied.
    pub limit: Option<u64>,
    /// LLM token usage read from the response.
    pub tokens: Option<&'a crate::observe::usage::Usage>,
    /// An LLM answer's latency, when it came from the backend.
    pub llm: Option<LlmSeen<'a>>,
    /// `X-Cache`, on caching routes.
    pub cache: Option<&'static str>,
    /// What the semantic cache did, on semantic routes.
    pub semantic: Option<SemanticSeen<'a>>,
    /// The MCP exchange, on MCP routes.
    pub mcp: Option<McpSeen<'a>>,
}

/// An LLM answer's timing and the model it is labelled with.
#[derive(Clone, Copy)]
pub struct LlmSeen<'a> {
    pub timing: latency::Timing,
    pub model: &'a str,
}

/// An MCP exchange: the method (`batch` for several messages), the tool called, a digest of
/// the session id (never the id), the server, and an outcome set by the gateway's own refusal
/// (else decided by the status).
#[derive(Clone, Copy)]
pub struct McpSeen<'a> {
    pub method: Option<&'a str>,
    pub tool: Option<&'a str>,
    pub session: Option<&'a str>,
    pub server: &'a str,
    pub refused: Option<&'static str>,
}

/// The semantic cache's part of a request: the similarity of the question served (or, in
/// shadow mode, that would have been), the request whose answer was served, and why nothing
/// was served (with the guard that refused).
#[derive(Clone, Copy)]
pub struct SemanticSeen<'a> {
    pub similarity: Option<f32>,
    pub source: Option<&'a str>,
    pub miss: Option<&'static str>,
    pub guard: Option<&'static str>,
}

/// A finished request in each of the services that are on: metrics, access log, console, spans.
pub fn finished(
    services: &crate::runtime::Services,
    session: &Session,
    e: Option<&Error>,
    seen: &Seen,
    sampled: Option<Box<trace::Sampled>>,
) {
    let status = status(session, e);
    if let Some(m) = &services.metrics {
        record(m, session, e, status, seen);
    }
    if let Some(log) = services.access_log.as_ref().filter(|l| l.wanted()) {
        log_line(log, session, e, status, seen);
    }
    if let Some(c) = &services.console {
        console(c, status, seen);
    }
    if let (Some(t), Some(sampled)) = (&services.tracing, sampled) {
        end_spans(t, session, status, seen, sampled);
    }
}

/// The status the client got: the response written, else what the error became.
pub fn status(session: &Session, e: Option<&Error>) -> u16 {
    if let Some(r) = session.response_written() {
        return r.status.as_u16();
    }
    match e.map(|e| (e.etype(), e.esource())) {
        None => 0,
        Some((ErrorType::HTTPStatus(c), _)) => *c,
        Some((_, ErrorSource::Upstream)) => 502,
        Some(_) => 400,
    }
}

/// The kind of a backend failure, for `upstream_errors_total`.
fn upstream_error_kind(e: &Error) -> Option<&'static str> {
    if e.etype() == &ErrorType::Custom(crate::backends::NO_BACKEND) {
        return Some("unavailable");
    }
    if e.esource() != &ErrorSource::Upstream {
        return None;
    }
    use ErrorType::*;
    Some(match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => "timeout",
        ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure
        | ConnectProxyFailure => "connect",
        _ => "response",
    })
}

pub fn record(m: &Metrics, session: &Session, e: Option<&Error>, status: u16, seen: &Seen) {
    m.observe(&Observation {
        route: seen.route,
        series: seen.series,
        method: &session.req_header().method,
        status,
        agent_id: seen.agent_id,
        seconds: seen.seconds,
        upstream_seconds: seen.upstream_seconds,
    });
    if let Some(u) = seen.tokens {
        m.tokens(
            seen.agent_id,
            u.model.as_deref().unwrap_or("unknown"),
            u.total(),
        );
    }
    if let Some(l) = &seen.llm {
        m.llm_timing(seen.route, l.model, &l.timing);
    }
    if let Some(x) = &seen.mcp {
        let outcome = x.refused.unwrap_or(if (200..300).contains(&status) {
            "ok"
        } else {
            "error"
        });
        m.mcp.observe(&metrics::mcp::Exchange {
            route: seen.route,
            server: x.server,
            method: x.method.unwrap_or("none"),
            tool: x.tool,
            agent_id: seen.agent_id,
            outcome,
            seconds: seen.seconds,
        });
    }
    if let Some(s) = &seen.semantic {
        let m = &m.semantic;
        if seen.cache == Some("HIT-SEMANTIC") {
            m.hits.with_label_values(&[seen.route]).inc();
        } else if let Some(reason) = s.miss.filter(|_| seen.cache == Some("MISS")) {
            m.misses.with_label_values(&[seen.route, reason]).inc();
        }
        if let Some(guard) = s.guard {
            m.guarded.with_label_values(&[seen.route, guard]).inc();
        }
    }
    match seen.cache {
        Some("HIT" | "HIT-SEMANTIC") => m.cache_hits.with_label_values(&[seen.route]).inc(),
        Some("MISS" | "EXPIRED") => m.cache_misses.with_label_values(&[seen.route]).inc(),
        Some("BYPASS") => m.cache_bypasses.with_label_values(&[seen.route]).inc(),
        _ => {}
    }
    if let Some(kind) = e.and_then(upstream_error_kind) {
        m.upstream_errors
            .with_label_values(&[seen.route, kind])
            .inc();
    }
}

/// The request's access-log line, handed to the writer.
pub fn log_line(log: &AccessLog, session: &Session, e: Option<&Error>, status: u16, seen: &Seen) {
    log.log(&entry(session, e, status, seen));
}

/// The request's access-log line (what the log writes, and the console's tail shows).
pub fn entry<'a>(
    session: &'a Session,
    e: Option<&Error>,
    status: u16,
    seen: &'a Seen,
) -> Entry<'a> {
    let req = session.req_header();
    let limit = match (status, seen.limit) {
        (429, _) => Some(("refused", None)),
        (_, Some(left)) => Some(("passed", Some(left))),
        _ => None,
    };
    let error = e.map(|e| e.etype().as_str());
    Entry {
        time: std::time::SystemTime::now(),
        request_id: seen.request_id,
        client_ip: session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip()),
        agent_id: seen.agent_id,
        route: seen.route,
        method: req.method.as_str(),
        version: req.version,
        path: req.uri.path(),
        status,
        duration_ms: seen.seconds * 1000.0,
        upstream: seen.upstream.filter(|_| {
            seen.upstream_status.is_some()
                || e.is_some_and(|e| e.esource() == &ErrorSource::Upstream)
        }),
        upstream_status: seen.upstream_status,
        upstream_ms: seen.upstream_seconds.map(|s| s * 1000.0),
        bytes_in: seen.bytes_in,
        bytes_out: seen.bytes_out,
        limit,
        error,
        tokens: seen.tokens.map(Into::into),
        ttft_ms: seen.llm.map(|l| l.timing.ttft * 1000.0),
        cache: seen.cache,
        cache_similarity: seen.semantic.and_then(|s| s.similarity),
        cache_source_request_id: seen.semantic.and_then(|s| s.source),
        mcp_method: seen.mcp.and_then(|x| x.method),
        mcp_tool: seen.mcp.and_then(|x| x.tool),
        mcp_session: seen.mcp.and_then(|x| x.session),
    }
}

/// What the console counts of a finished request (its line reaches the tail through the
/// access log's writer).
pub fn console(c: &crate::console::Stats, status: u16, seen: &Seen) {
    let (route, agent) = seen.console_slots;
    c.record(&crate::console::stats::Finished {
        route: (seen.route, route),
        agent: seen.agent_id.zip(agent),
        status,
        seconds: seen.seconds,
        tokens: seen
            .tokens
            .map(|t| (t.model.as_deref().unwrap_or("unknown"), t.total())),
        cache: seen.cache,
        limit_left: seen.limit,
    });
}

/// Ends a sampled request's spans with what happened. Attributes hold no header, body or
/// query string.
pub fn end_spans(
    t: &crate::observe::trace::Tracing,
    session: &Session,
    status: u16,
    seen: &Seen,
    sampled: Box<crate::observe::trace::Sampled>,
) {
    let req = session.req_header();
    t.end_request(
        sampled,
        status,
        &crate::observe::trace::Request {
            method: req.method.as_str(),
            route: seen.route,
            path: req.uri.path(),
            request_id: seen.request_id,
            agent_id: seen.agent_id,
        },
    );
}
