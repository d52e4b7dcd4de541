//! Every JSON error the gateway writes on the proxy path, as one typed `Refusal` that knows its
//! status, message, headers and whether the connection closes.

use super::builtin::BuiltIn;
use crate::admin::purge::Failed;
use crate::auth::{Auth, Failure, Strategy};
use crate::limits::{Exceeded, Refused, Standing};
use crate::router::PathError;
use crate::{respond, upstream};
use bytes::Bytes;
use http::HeaderValue;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, Result};

/// The error type of an exchange that outlived its route's `total_timeout` (answered 504).
pub const TOTAL_TIMEOUT: &str = "total_timeout";

/// Why the gateway answers a request itself with an error.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// More header fields than `gateway.max_headers`.
    HeadersTooMany,
    /// More header bytes than `gateway.max_header_size`.
    HeadersTooLarge,
    /// Both framing headers: a smuggling attempt or a broken client.
    LengthAndChunked,
    InvalidLength,
    /// Content-Length lines that disagree, or one beside Transfer-Encoding.
    ConflictingFraming,
    /// A body over `max_body_size`, announced or found while reading it.
    BodyTooLarge,
    BadPath(PathError),
    NoRoute,
    /// `PURGE` on a route that does not cache.
    NotCaching,
    /// A built-in endpoint asked with a method it does not answer.
    MethodNotAllowed(BuiltIn),
    /// The challenge is built when refusing: it names the route's strategy and the failure.
    Unauthorized {
        message: &'static str,
        challenge: String,
    },
    Forbidden(&'static str),
    /// The normalised path makes no valid URI for the backend.
    Unforwardable,
    /// An agent's, API key's or route's rate limit.
    Limited(Exceeded),
    /// `gateway.rate_limit`, before authentication.
    OverCeiling(Exceeded),
    /// The shared limits store is unreachable and `on_store_error` is `deny`.
    StoreDown,
    /// `gateway.max_in_flight` requests are already being served: shed.
    Overloaded,
    /// A purge request's body over the keyed-body size.
    PurgeTooLarge,
    /// A purge request's body that is not the expected JSON (the parser says why).
    BadPurge(String),
    /// A purge that names a bad URL, or nothing that is cached.
    Purge(crate::admin::purge::Failed),
    /// The token endpoint could not sign.
    CannotMint,
    /// A path on the metrics listener other than the metrics endpoint.
    NoEndpoint,
    /// From here on: failures after admission (`fail_to_proxy`). The connection closes, as the
    /// request body may be left unread.
    Status(u16),
    NoBackend,
    BackendTimeout,
    BackendFailed,
    Unreadable,
    Internal,
}

impl Refusal {
    pub fn unauthorized(
        auth: &Auth,
        strategy: Strategy,
        failure: &Failure,
        extra: Option<&str>,
    ) -> Refusal {
        Refusal::Unauthorized {
            message: failure.message(),
            challenge: auth.challenge(strategy, failure, extra),
        }
    }

    /// A limit's refusal, or the shared store's absence under `on_store_error: deny`.
    pub fn of_limits(refused: Refused) -> Refusal {
        match refused {
            Refused::Limit(e) => Refusal::Limited(e),
            Refused::StoreDown => Refusal::StoreDown,
        }
    }

    /// What a failed request becomes; `None` when the client itself went away (nothing to
    /// write to).
    pub fn of_error(e: &Error) -> Option<Refusal> {
        use ErrorType::*;
        Some(match (e.etype(), e.esource()) {
            (HTTPStatus(413), _) => Refusal::BodyTooLarge,
            (HTTPStatus(c), _) => Refusal::Status(*c),
            (Custom(crate::backends::NO_BACKEND), _) => Refusal::NoBackend,
            (Custom(TOTAL_TIMEOUT), _) => Refusal::BackendTimeout,
            (
                ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout,
                ErrorSource::Upstream,
            ) => Refusal::BackendTimeout,
            (_, ErrorSource::Upstream) => Refusal::BackendFailed,
            (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => return None,
            (_, ErrorSource::Downstream) => Refusal::Unreadable,
            _ => Refusal::Internal,
        })
    }

    pub fn status(&self) -> u16 {
        use Refusal::*;
        match self {
            HeadersTooMany | HeadersTooLarge => 431,
            LengthAndChunked | InvalidLength | ConflictingFraming | BadPath(_) | Unforwardable
            | BadPurge(_) | Unreadable => 400,
            BodyTooLarge | PurgeTooLarge => 413,
            NoRoute | NoEndpoint | Purge(Failed::Nothing(_)) => 404,
            Purge(Failed::BadUrl(_)) => 400,
            NotCaching | MethodNotAllowed(_) => 405,
            Unauthorized { .. } => 401,
            Forbidden(_) => 403,
            Limited(_) | OverCeiling(_) => 429,
            StoreDown | NoBackend | Overloaded => 503,
            CannotMint | Internal => 500,
            Status(c) => *c,
            BackendTimeout => 504,
            BackendFailed => 502,
        }
    }

    pub fn message(&self) -> &str {
        use Refusal::*;
        match self {
            HeadersTooMany => "too many request headers",
            HeadersTooLarge => "request headers are too large",
            LengthAndChunked => "both Content-Length and Transfer-Encoding are present",
            InvalidLength => "invalid Content-Length",
            ConflictingFraming => "conflicting message framing headers",
            BodyTooLarge => "request body larger than max_body_size",
            BadPath(e) => e.message(),
            NoRoute => "no route matches this path",
            NotCaching => "this route does not cache",
            MethodNotAllowed(b) => b.wrong_method(),
            Unauthorized { message, .. } => message,
            Forbidden(m) => m,
            Unforwardable => "the request path cannot be forwarded",
            Limited(_) => "rate limit exceeded",
            OverCeiling(_) => "the gateway is over its request rate",
            StoreDown => "rate limits cannot be checked right now",
            Overloaded => "the gateway is serving as many requests as it may; try again shortly",
            PurgeTooLarge => "request body too large",
            BadPurge(m) => m,
            Purge(Failed::BadUrl(m) | Failed::Nothing(m)) => m,
            CannotMint => "cannot issue a token",
            NoEndpoint => "no such endpoint",
            Status(_) => "the request could not be served",
            NoBackend => "no healthy backend can take the request",
            BackendTimeout => "the backend did not answer in time",
            BackendFailed => "the backend could not be reached or answered badly",
            Unreadable => "the request could not be read",
            Internal => "internal error",
        }
    }

    /// Refusals that leave the request body unread, or that answer abuse, end the connection.
    pub fn closes(&self) -> bool {
        use Refusal::*;
        match self {
            HeadersTooMany | HeadersTooLarge | LengthAndChunked | InvalidLength
            | ConflictingFraming | BodyTooLarge | PurgeTooLarge => true,
            Status(_) | NoBackend | BackendTimeout | BackendFailed | Unreadable | Internal => true,
            BadPath(_)
            | NoRoute
            | NotCaching
            | MethodNotAllowed(_)
            | Unauthorized { .. }
            | Forbidden(_)
            | Unforwardable
            | Limited(_)
            | OverCeiling(_)
            | StoreDown
            | Overloaded
            | BadPurge(_)
            | Purge(_)
            | CannotMint
            | NoEndpoint => false,
        }
    }

    /// The headers beside the JSON body: a 401's challenge, a 405's `Allow`, a 429's
    /// `Retry-After` and limit headers (the same set a passing request gets).
    pub fn headers(&self) -> Vec<(&'static str, HeaderValue)> {
        match self {
            Refusal::Unauthorized { challenge, .. } => {
                let v = HeaderValue::from_str(challenge);
                vec![(
                    "www-authenticate",
                    v.unwrap_or(HeaderValue::from_static("")),
                )]
            }
            Refusal::MethodNotAllowed(b) => vec![("allow", HeaderValue::from_static(b.allow()))],
            Refusal::Limited(e) | Refusal::OverCeiling(e) => {
                let exhausted = Standing {
                    remaining: 0,
                    limit: e.limit,
                    reset_secs: e.retry_after_secs,
                    window_secs: e.window_secs,
                };
                let mut h = Vec::with_capacity(6);
                h.push(("retry-after", HeaderValue::from(e.retry_after_secs)));
                h.extend(upstream::limit_headers(&exhausted).map(|(n, v)| (n.as_str(), v)));
                h
            }
            Refusal::StoreDown | Refusal::Overloaded => {
                vec![("retry-after", HeaderValue::from_static("1"))]
            }
            _ => Vec::new(),
        }
    }

    /// The route label of metrics for a request refused before any route or endpoint was
    /// chosen by name.
    pub fn metric_label(&self) -> Option<&'static str> {
        matches!(self, Refusal::NoRoute).then_some("unmatched")
    }

    /// The JSON body in the DESIGN shape (`error`, `code`, `message`, `request_id`).
    pub fn body(&self, request_id: &str) -> Bytes {
        respond::error_body(self.status(), self.message(), request_id)
    }

    /// Writes the refusal as the response.
    pub async fn write(&self, session: &mut Session, request_id: &str) -> Result<()> {
        if self.closes() {
            session.set_keepalive(None);
        }
        let body = self.body(request_id);
        respond::write_json(session, self.status(), body, request_id, &self.headers()).await
    }
}

/// An internal inconsistency (a hook found the context without what an earlier hook sets).
pub fn internal() -> Box<Error> {
    Error::new(ErrorType::InternalError)
}

pub fn no_backend() -> Box<Error> {
    Error::explain(
        ErrorType::Custom(crate::backends::NO_BACKEND),
        "no address of the backend can take the request",
    )
}

pub fn total_timeout() -> Box<Error> {
    Error::explain(
        ErrorType::Custom(TOTAL_TIMEOUT),
        "the exchange exceeded the route's total_timeout",
    )
}

pub fn body_too_large() -> Box<Error> {
    Error::explain(
        ErrorType::HTTPStatus(413),
        "request body larger than max_body_size",
    )
}

/// A backend that failed in the middle of an SSE answer (it died, or cut the connection): the
/// client gets a last `error` event and a proper end of the stream, rather than a connection
/// torn down in the middle of a chunked body. Leading blank lines end an event the backend left
/// half-sent. `None` when the failure is not that (nothing written yet, not SSE, not the
/// backend's).
pub async fn end_cut_stream(
    session: &mut Session,
    e: &Error,
    request_id: &HeaderValue,
) -> Option<pingora::proxy::FailToProxy> {
    if e.esource() != &ErrorSource::Upstream {
        return None;
    }
    let head = session.response_written()?;
    let sse = (head.headers.get(http::header::CONTENT_TYPE))
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !sse {
        return None;
    }
    let message = "the backend closed the stream before its end";
    let body = respond::error_body(502, message, crate::request_id::as_str(request_id));
    let mut event = b"\n\nevent: error\ndata: ".to_vec();
    event.extend_from_slice(&body);
    event.extend_from_slice(b"\n\n");
    let _ = session.write_response_body(Some(event.into()), true).await;
    Some(pingora::proxy::FailToProxy {
        error_code: 502,
        can_reuse_downstream: false,
    })
}
