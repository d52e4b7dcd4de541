//! Responses the gateway writes itself: JSON errors in the DESIGN shape, and the health answer.

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

/// The error names of DESIGN §2 "Errors", by status code.
pub fn error_name(code: u16) -> &'static str {
    match code {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        429 => "rate_limited",
        431 => "request_header_fields_too_large",
        500 => "internal_error",
        502 => "bad_gateway",
        503 => "service_unavailable",
        504 => "gateway_timeout",
        _ => "error",
    }
}

/// The JSON body of an error (`proxy::Refusal::body` for the proxy path's own refusals).
pub fn error_body(code: u16, message: &str, request_id: &str) -> Bytes {
    named_error_body(error_name(code), code, message, request_id)
}

/// An error body whose name is more precise than its status's (`token_quota_exceeded`).
pub fn named_error_body(name: &str, code: u16, message: &str, request_id: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "error": name,
            "code": code,
            "message": message,
            "request_id": request_id,
        })
        .to_string(),
    )
}

pub async fn write_json(
    session: &mut Session,
    code: u16,
    body: Bytes,
    request_id: &str,
    extra: &[(&'static str, HeaderValue)],
) -> Result<()> {
    write_body(session, code, "application/json", body, request_id, extra).await
}

/// An answer of the gateway's own (JSON, or the metrics text), never cached.
pub async fn write_body(
    session: &mut Session,
    code: u16,
    content_type: &str,
    body: Bytes,
    request_id: &str,
    extra: &[(&'static str, HeaderValue)],
) -> Result<()> {
    let mut h = ResponseHeader::build(code, Some(4 + extra.len()))?;
    h.insert_header("content-type", content_type)?;
    h.insert_header("content-length", body.len().to_string())?;
    h.insert_header("x-request-id", request_id)?;
    h.insert_header("cache-control", "no-store")?;
    for (k, v) in extra {
        h.insert_header(*k, v)?;
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(h), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// `2h 15m`, `3m 4s`, `12s`.
pub fn human_uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_reads_like_the_article() {
        assert_eq!(human_uptime(2 * 3600 + 15 * 60 + 7), "2h 15m");
        assert_eq!(human_uptime(5), "5s");
        assert_eq!(human_uptime(185), "3m 5s");
        assert_eq!(human_uptime(3 * 86400 + 3600), "3d 1h");
    }

    #[test]
    fn error_shape() {
        let v: serde_json::Value =
            serde_json::from_slice(&error_body(404, "no route", "r1")).unwrap();
        assert_eq!(v["error"], "not_found");
        assert_eq!(v["code"], 404);
        assert_eq!(v["request_id"], "r1");
    }
}
