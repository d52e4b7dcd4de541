//! Purging by an operator: the `DELETE {base_path}/cache` endpoint's work (every entry of a
//! route, or one URL's entry) and `clawgate cache purge`, its client.

use crate::cache::{request_key, Cache};
use crate::runtime::Config;
use bytes::Bytes;

/// The body of `DELETE {base_path}/cache`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// A route's label: every entry of the route.
    route: Option<String>,
    /// A path and query: the GET entry of that URL...
    url: Option<String>,
    /// ...of this agent (else the shared or anonymous entry).
    agent: Option<String>,
}

impl Request {
    pub fn parse(body: &[u8]) -> Result<Request, String> {
        const SHAPE: &str = r#"{"route": "<label>"} or {"url": "/path?query", "agent": "<id>"}"#;
        let r: Request = serde_json::from_slice(body)
            .map_err(|e| format!("the body must be JSON such as {SHAPE} ({e})"))?;
        if r.route.is_some() == r.url.is_some() {
            return Err(format!("give either route or url: {SHAPE}"));
        }
        Ok(r)
    }
}

/// Why a purge was not carried out: a bad `url` (400) or nothing to purge there (404).
#[derive(Debug, PartialEq, Eq)]
pub enum Failed {
    BadUrl(&'static str),
    Nothing(&'static str),
}

/// Carries out a purge; the JSON body of the answer.
pub async fn run(
    cache: &'static Cache,
    semantic_store: Option<&crate::semantic::shared::Store>,
    cfg: &Config,
    req: Request,
    headers: &http::HeaderMap,
    id: &str,
) -> Result<Bytes, Failed> {
    if let Some(label) = req.route {
        let Some(route) = (cfg.routes.iter()).find(|r| r.label == label && r.cache.is_some())
        else {
            return Err(Failed::Nothing("no caching route has this label"));
        };
        let rc = route
            .cache
            .as_ref()
            .ok_or(Failed::Nothing("not a caching route"))?;
        cache.purge_route(rc).await;
        if let Some(sc) = &route.semantic {
            sc.clear();
            if let Some(store) = semantic_store {
                store.purge_route(&rc.tag).await;
            }
        }
        let answer = serde_json::json!({"purged": "route", "route": label, "request_id": id});
        return Ok(Bytes::from(answer.to_string()));
    }
    let url = req.url.unwrap_or_default();
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Err(Failed::BadUrl("url is not a path and query"));
    };
    if uri.scheme().is_some() || !uri.path().starts_with('/') {
        return Err(Failed::BadUrl(
            "url must be a path (and query), such as /api/x?y=1",
        ));
    }
    let Ok(path) = crate::router::normalise(uri.path()) else {
        return Err(Failed::BadUrl("url is not a valid path"));
    };
    let Some(route) = cfg.route_index(&path).map(|i| &cfg.routes[i]) else {
        return Err(Failed::Nothing("no route matches this url"));
    };
    let Some(rc) = &route.cache else {
        return Err(Failed::Nothing("the route of this url does not cache"));
    };
    let target =
        match crate::upstream::forward_uri(cfg, route, route.backends.path_prefix(), &path, &uri) {
            Ok(t) => t.unwrap_or(uri),
            Err(_) => return Err(Failed::BadUrl("url cannot be forwarded")),
        };
    let method = http::Method::GET;
    let key = request_key(
        &route.label,
        &method,
        headers,
        &target,
        req.agent.as_deref(),
        rc,
        None,
    );
    if cache.purge_one(&key).await {
        let answer = serde_json::json!({"purged": "entry", "url": url, "request_id": id});
        Ok(Bytes::from(answer.to_string()))
    } else {
        Err(Failed::Nothing("nothing is cached for this url"))
    }
}

/// What `clawgate cache purge` asks for.
pub enum Target {
    Route(String),
    /// A URL, and the agent whose entry it is.
    Url(String, Option<String>),
}

/// `clawgate cache purge`: sends the purge to the running gateway's first listener (on
/// loopback when it listens on every address); the answer's status and body.
pub fn ask(cfg: &Config, target: &Target) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    if cfg.cache.is_none() {
        return Err(format!("{}: no route caches", cfg.source.display()));
    }
    if cfg.process.tls.is_some() {
        return Err(format!(
            "the gateway listens with TLS; purge with: curl -X DELETE https://<host>{} -d '{{\"route\": \"<label>\"}}'",
            cfg.cache_path
        ));
    }
    let listen = cfg.process.listen.first().ok_or("no listen address")?;
    let addr: std::net::SocketAddr = listen
        .parse()
        .map_err(|_| format!("cannot connect to {listen}"))?;
    let addr = match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => ([127, 0, 0, 1], addr.port()).into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            (std::net::Ipv6Addr::LOCALHOST, addr.port()).into()
        }
        _ => addr,
    };
    let body = match target {
        Target::Route(r) => serde_json::json!({"route": r}),
        Target::Url(u, None) => serde_json::json!({"url": u}),
        Target::Url(u, Some(a)) => serde_json::json!({"url": u, "agent": a}),
    }
    .to_string();
    let timeout = std::time::Duration::from_secs(10);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to the gateway at {addr}: {}", e.kind()))?;
    s.set_read_timeout(Some(timeout)).ok();
    let request = format!(
        "DELETE {} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        cfg.cache_path,
        body.len()
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("cannot send to the gateway at {addr}: {}", e.kind()))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| format!("no answer from the gateway at {addr}: {}", e.kind()))?;
    let text = String::from_utf8_lossy(&answer);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("the gateway at {addr} did not answer in HTTP"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_a_route_or_a_url() {
        assert!(Request::parse(br#"{"route": "/api/*"}"#).is_ok());
        assert!(Request::parse(br#"{"url": "/x", "agent": "a"}"#).is_ok());
        for bad in [
            &b"{}"[..],
            br#"{"route": "a", "url": "/x"}"#,
            b"nope",
            br#"{"rout": "a"}"#,
        ] {
            assert!(Request::parse(bad).is_err());
        }
    }
}
