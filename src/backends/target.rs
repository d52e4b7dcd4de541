//! A backend URL, parsed: scheme, host, port, the `Host` header it implies and its own path.

#[derive(Debug)]
pub struct Target {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// `Host` sent to the backend: the host, with the port when it is not the scheme's default.
    pub authority: String,
    /// The same, ready to send.
    pub host_header: http::HeaderValue,
    /// The backend URL's own path, without a trailing `/` (may be empty).
    pub path_prefix: String,
}

/// Parses a backend URL: `http://host[:port][/path]` or `https://...`.
pub fn parse_target(url: &str) -> Result<Target, String> {
    let bad = |why: &str| format!("{url:?} is not a backend URL: {why}");
    let uri: http::Uri = url
        .parse()
        .map_err(|_| bad("expected http://host:port or https://host:port"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let auth = uri.authority().ok_or_else(|| bad("no host"))?;
    if auth.as_str().contains('@') {
        return Err(bad(
            "credentials in the URL are not supported; use an inject_auth transform",
        ));
    }
    if uri.query().is_some() {
        return Err(bad("a query string is not allowed"));
    }
    let host = auth
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let default_port = if tls { 443 } else { 80 };
    let port = auth.port_u16().unwrap_or(default_port);
    let authority = if port == default_port {
        auth.host().to_string()
    } else {
        format!("{}:{port}", auth.host())
    };
    let host_header =
        http::HeaderValue::from_str(&authority).map_err(|_| bad("the host is not valid"))?;
    Ok(Target {
        tls,
        host,
        port,
        host_header,
        authority,
        path_prefix: uri.path().trim_end_matches('/').to_string(),
    })
}
