//! The gateway's own outgoing calls (JWKS documents, span exports) with Pingora's HTTP client:
//! one exchange bounded in time and in the size of the answer, and the connection kept for the
//! next call to the same place.

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;
use std::time::Duration;

/// Where a URL points, resolved (Pingora's `HttpPeer::new` panics on a name it cannot resolve).
pub struct Target {
    peer: HttpPeer,
    authority: String,
    path: String,
}

impl Target {
    /// An address already resolved, e.g. one of a backend pool's (its connection options, its
    /// `Host`, and the path asked for).
    pub fn at(peer: HttpPeer, authority: String, path: String) -> Target {
        Target {
            peer,
            authority,
            path,
        }
    }

    pub async fn resolve(url: &str, timeout: Duration) -> Result<Target, String> {
        let uri: http::Uri = url.parse().map_err(|_| "not a URL".to_string())?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("the scheme must be http or https".into()),
        };
        let authority = uri.authority().ok_or("no host")?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let addr = tokio::net::lookup_host((host, port))
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("cannot resolve {host}"))?;
        let mut peer = HttpPeer::new(addr, tls, host.to_string());
        peer.options.connection_timeout = Some(timeout);
        peer.options.total_connection_timeout = Some(timeout);
        peer.options.read_timeout = Some(timeout);
        peer.options.write_timeout = Some(timeout);
        Ok(Target {
            peer,
            authority: authority.as_str().to_string(),
            path: uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
        })
    }
}

/// A request: method, extra headers and body (Host and Content-Length are added).
pub struct Call<'a> {
    pub method: &'a str,
    pub headers: &'a [(&'static str, &'a str)],
    pub body: Option<Bytes>,
    /// Answers longer than this are refused.
    pub max_answer: usize,
}

/// What an exchange got back.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// One exchange; the status and the body of the answer.
pub async fn exchange(
    connector: &Connector,
    to: &Target,
    call: Call<'_>,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), String> {
    let a = exchange_answer(connector, to, call, timeout).await?;
    Ok((a.status, a.body))
}

/// One exchange; the whole answer, headers included.
pub async fn exchange_answer(
    connector: &Connector,
    to: &Target,
    call: Call<'_>,
    timeout: Duration,
) -> Result<Answer, String> {
    let work = async {
        let (mut session, _) = connector
            .get_http_session(&to.peer)
            .await
            .map_err(|e| e.to_string())?;
        let mut req = RequestHeader::build(call.method, to.path.as_bytes(), None)
            .map_err(|e| e.to_string())?;
        let e = |e: Box<pingora::Error>| e.to_string();
        req.insert_header(http::header::HOST, &to.authority)
            .map_err(e)?;
        for (name, value) in call.headers {
            req.insert_header(*name, *value).map_err(e)?;
        }
        if let Some(body) = &call.body {
            req.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())
                .map_err(e)?;
        }
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(e)?;
        if let Some(body) = call.body {
            session.write_request_body(body, true).await.map_err(e)?;
        }
        session.finish_request_body().await.map_err(e)?;
        session.read_response_header().await.map_err(e)?;
        let (status, headers) = session
            .response_header()
            .map_or((0, http::HeaderMap::new()), |h| {
                (h.status.as_u16(), h.headers.clone())
            });
        let mut answer = Vec::new();
        while let Some(chunk) = session.read_response_body().await.map_err(e)? {
            answer.extend_from_slice(&chunk);
            if answer.len() > call.max_answer {
                return Err(format!(
                    "the answer is larger than {} bytes",
                    call.max_answer
                ));
            }
        }
        connector
            .release_http_session(session, &to.peer, Some(Duration::from_secs(60)))
            .await;
        Ok(Answer {
            status,
            headers,
            body: answer,
        })
    };
    tokio::time::timeout(timeout * 2, work)
        .await
        .map_err(|_| "timed out".to_string())?
}
