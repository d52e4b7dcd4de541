//! OAuth protected-resource metadata (RFC 9728) for MCP routes, so that an MCP client that is
//! refused can find out where to get a token: served at
//! `/.well-known/oauth-protected-resource` + the route's path (RFC 9728 §3.1) when `auth.jwt`
//! names an issuer, and named in the route's 401 challenges.

/// The issuer, when it can be named as an authorization server: RFC 9728 lists them as URLs
/// (MCP clients refuse a document naming anything else), so an issuer like `clawgate` has none.
pub fn authorization_server(issuer: &str) -> Option<&str> {
    let uri = http::Uri::try_from(issuer).ok()?;
    let web = matches!(uri.scheme_str(), Some("https" | "http"));
    (web && uri.authority().is_some()).then_some(issuer)
}

/// The well-known prefix of the metadata path.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The route's path as a resource: its literal prefix without a trailing `/` or `/*`.
pub fn route_path(literal_prefix: &str) -> &str {
    let p = literal_prefix.trim_end_matches('*').trim_end_matches('/');
    if p.is_empty() {
        "/"
    } else {
        p
    }
}

/// The host the client asked for: `Host`, else HTTP/2's `:authority`, else `localhost`.
pub fn host<'a>(headers: &'a http::HeaderMap, uri: &'a http::Uri) -> &'a str {
    (headers.get(http::header::HOST))
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost")
}

/// `https://host` or `http://host` for the request's `Host`.
pub fn origin(tls: bool, host: &str) -> String {
    format!("{}://{host}", if tls { "https" } else { "http" })
}

/// The metadata document.
pub fn document(origin: &str, route_path: &str, issuer: &str) -> String {
    serde_json::json!({
        "resource": format!("{origin}{route_path}"),
        "authorization_servers": [issuer],
        "bearer_methods_supported": ["header"],
    })
    .to_string()
}

/// The `resource_metadata` parameter a 401's Bearer challenge gets.
pub fn challenge_parameter(origin: &str, route_path: &str) -> String {
    let path = if route_path == "/" { "" } else { route_path };
    format!("resource_metadata=\"{origin}{WELL_KNOWN}{path}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_challenges_name_the_route() {
        assert_eq!(route_path("/mcp"), "/mcp");
        assert_eq!(route_path("/mcp/"), "/mcp");
        assert_eq!(route_path("/"), "/");
        assert_eq!(
            authorization_server("https://id.example"),
            Some("https://id.example")
        );
        assert_eq!(authorization_server("clawgate"), None);
        assert_eq!(authorization_server("urn:x:y"), None);
        let o = origin(false, "gw.local:8080");
        let doc: serde_json::Value =
            serde_json::from_str(&document(&o, "/mcp", "https://id.example")).unwrap();
        assert_eq!(doc["resource"], "http://gw.local:8080/mcp");
        assert_eq!(doc["authorization_servers"][0], "https://id.example");
        assert_eq!(
            challenge_parameter(&o, "/mcp"),
            "resource_metadata=\"http://gw.local:8080/.well-known/oauth-protected-resource/mcp\""
        );
    }
}
