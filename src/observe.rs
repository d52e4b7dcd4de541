//! What a finished request leaves behind: its metrics (and, in a later release, its access-log
//! line and trace span).

use crate::metrics::{Metrics, Observation};
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use std::time::Instant;

/// The parts of a request's context that observation needs.
pub struct Seen<'a> {
    pub route: &'a str,
    pub agent_id: Option<&'a str>,
    pub start: Instant,
    pub upstream_seconds: Option<f64>,
}

/// The status the client got: the response written, else what the error became.
fn status(session: &Session, e: Option<&Error>) -> u16 {
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

pub fn record(m: &Metrics, session: &Session, e: Option<&Error>, seen: Seen) {
    let status = status(session, e);
    m.observe(&Observation {
        route: seen.route,
        method: &session.req_header().method,
        status,
        agent_id: seen.agent_id,
        seconds: seen.start.elapsed().as_secs_f64(),
        upstream_seconds: seen.upstream_seconds,
    });
    if let Some(kind) = e.and_then(upstream_error_kind) {
        m.upstream_errors
            .with_label_values(&[seen.route, kind])
            .inc();
    }
}
