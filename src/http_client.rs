//! The gateway's own outgoing calls (JWKS documents, span exports, federated MCP servers) with
//! Pingora's HTTP client: one exchange bounded in time and in the size of the answer, or an
//! answer read as it comes; the connection kept for the next call to the same place.

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::upstreams::peer::HttpPeer;
use std::sync::OnceLock;
use std::time::Duration;

/// One connector for the gateway's own calls to backends (federated MCP servers, transcoded
/// gRPC calls): their idle connections are reused.
pub fn connector() -> &'static Connector {
    static CONNECTOR: OnceLock<Connector> = OnceLock::new();
    CONNECTOR.get_or_init(|| Connector::new(None))
}

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
    let max = call.max_answer;
    let work = async {
        open(connector, to, call, &[], timeout)
            .await?
            .whole(max)
            .await
    };
    tokio::time::timeout(timeout * 2, work)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// An answer whose head is read and whose body is read as it comes (an SSE stream relayed
/// event by event); each read is bounded by the peer's read timeout.
pub struct Streaming<'c> {
    pub status: u16,
    pub headers: http::HeaderMap,
    session: HttpSession,
    connector: &'c Connector,
    peer: HttpPeer,
}

impl Streaming<'_> {
    /// The next piece of the body; `None` at its end.
    pub async fn next(&mut self) -> Result<Option<Bytes>, String> {
        (self.session.read_response_body().await).map_err(|e| e.to_string())
    }

    /// The trailers, once the body is read (HTTP/2; gRPC's status travels in them).
    pub async fn trailers(&mut self) -> Result<Option<http::HeaderMap>, String> {
        match &mut self.session {
            HttpSession::H2(h2) => h2.read_trailers().await.map_err(|e| e.to_string()),
            _ => Ok(None),
        }
    }

    /// Keeps the connection for the next call to the same place, once the body is read.
    pub async fn release(self) {
        (self.connector)
            .release_http_session(self.session, &self.peer, Some(Duration::from_secs(60)))
            .await;
    }

    /// The rest of the body, refused past `max` bytes.
    pub async fn whole(mut self, max: usize) -> Result<Answer, String> {
        let mut body = Vec::new();
        while let Some(chunk) = self.next().await? {
            body.extend_from_slice(&chunk);
            if body.len() > max {
                return Err(format!("the answer is larger than {max} bytes"));
            }
        }
        let (status, headers) = (self.status, std::mem::take(&mut self.headers));
        self.release().await;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// Sends a request and reads the head of its answer. `forwarded`: headers whose names are
/// known only at run time (those a client's request passes on), set before `call.headers`.
/// Not bounded as a whole: the caller bounds it (each read has the peer's timeout).
pub async fn open<'c>(
    connector: &'c Connector,
    to: &Target,
    call: Call<'_>,
    forwarded: &[(http::HeaderName, http::HeaderValue)],
    timeout: Duration,
) -> Result<Streaming<'c>, String> {
    let e = |e: Box<pingora::Error>| e.to_string();
    let connecting = connector.get_http_session(&to.peer);
    let (mut session, _) = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| "timed out connecting".to_string())?
        .map_err(e)?;
    let mut req =
        RequestHeader::build(call.method, to.path.as_bytes(), None).map_err(|e| e.to_string())?;
    for (name, value) in forwarded {
        req.insert_header(name.clone(), value).map_err(e)?;
    }
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
    Ok(Streaming {
        status,
        headers,
        session,
        connector,
        peer: to.peer.clone(),
    })
}
