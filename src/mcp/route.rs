//! A `protocol: mcp` route's settings, checked (DESIGN §5.2): its servers (one is passed
//! through, several are federated), the federated tool prefix, session affinity and the key
//! that seals session tokens.

use crate::at;
use crate::config::schema::{self, RouteProtocol};
use crate::config::Problem;
use crate::mcp::session::Sealer;
use std::sync::{Arc, OnceLock};

/// The default `tool_prefix`: `github__create_issue`.
pub const DEFAULT_PREFIX: &str = "{server}__";

#[derive(Debug, Clone)]
pub struct Settings {
    /// In name order (the file's map is sorted).
    pub servers: Vec<Server>,
    pub tool_prefix: String,
    pub session_affinity: bool,
    /// Seals the gateway's session ids: with `mcp.session_key`, else a key derived from
    /// `auth.jwt`'s first secret (instances with one configuration share both), else this
    /// process's own random key (sessions then stay with one instance).
    pub sealer: Arc<Sealer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub name: String,
    /// A named backend, or a URL with the server's MCP path.
    pub backend: Option<String>,
    pub backend_url: Option<String>,
}

impl Settings {
    /// The route's MCP settings when it says `protocol: mcp`. `mcp:` on another route, a route
    /// without servers, a server with both or neither of `backend`/`backend_url`, a backend
    /// name that `backends` lacks, or an MCP route that also sets its own backend is an error.
    pub fn of_route(
        r: &schema::Route,
        i: usize,
        backends: &[&str],
        jwt_secret: Option<&str>,
    ) -> Result<Option<Settings>, Problem> {
        if r.protocol != Some(RouteProtocol::Mcp) {
            return match r.mcp {
                Some(_) => Err(Problem::new(
                    at!("routes", i, "mcp"),
                    "applies to routes with protocol: mcp",
                )),
                None => Ok(None),
            };
        }
        let mcp = r
            .mcp
            .as_ref()
            .ok_or_else(|| Problem::new(at!("routes", i), "protocol: mcp needs mcp.servers"))?;
        if r.caching
            .as_ref()
            .is_some_and(|c| c.enabled.is_some_and(|e| e.0))
        {
            return Err(Problem::new(
                at!("routes", i, "caching"),
                "an MCP route's answers belong to one session: caching does not apply",
            ));
        }
        if r.backend.is_some() || r.backend_url.is_some() || r.backend_weights.is_some() {
            return Err(Problem::new(
                at!("routes", i),
                "an MCP route's backends are its mcp.servers; remove backend, backend_url and backend_weights",
            ));
        }
        let servers = (mcp.servers.iter().flatten())
            .map(|(name, s)| server(name, s, i, backends))
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err(Problem::new(
                at!("routes", i, "mcp", "servers"),
                "names no server",
            ));
        }
        let tool_prefix = mcp.tool_prefix.as_ref().map_or(DEFAULT_PREFIX, |p| &p.0);
        if servers.len() > 1 && !tool_prefix.contains("{server}") {
            return Err(Problem::new(
                at!("routes", i, "mcp", "tool_prefix"),
                "must contain {server}, so that federated tool names stay apart",
            ));
        }
        let session_key = match &mcp.session_key {
            Some(k) => Some(
                key(&k.0).map_err(|m| Problem::new(at!("routes", i, "mcp", "session_key"), m))?,
            ),
            None => None,
        };
        let sealer = match (session_key, jwt_secret) {
            (Some(k), _) => Arc::new(Sealer::new(k)),
            (None, Some(secret)) => Arc::new(Sealer::from_jwt_secret(secret.as_bytes())),
            (None, None) => process_sealer()
                .map_err(|m| Problem::new(at!("routes", i, "mcp", "session_key"), m))?,
        };
        Ok(Some(Settings {
            servers,
            tool_prefix: tool_prefix.to_string(),
            session_affinity: mcp.session_affinity.is_none_or(|f| f.0),
            sealer,
        }))
    }
}

/// One random key for the life of the process, so that a reload keeps its sessions.
fn process_sealer() -> Result<Arc<Sealer>, String> {
    static SEALER: OnceLock<Arc<Sealer>> = OnceLock::new();
    if let Some(s) = SEALER.get() {
        return Ok(s.clone());
    }
    let made = Sealer::random().map_err(|e| format!("no key to seal MCP sessions: {e}"))?;
    log::info!(
        "MCP session ids are sealed with this process's own key: set mcp.session_key (or \
         auth.jwt) so that other instances can continue them"
    );
    Ok(SEALER.get_or_init(|| Arc::new(made)).clone())
}

fn server(
    name: &str,
    s: &schema::McpServer,
    i: usize,
    backends: &[&str],
) -> Result<Server, Problem> {
    let at = || at!("routes", i, "mcp", "servers", name);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Problem::new(
            at(),
            "a server name is letters, digits, '_' and '-'",
        ));
    }
    match (&s.backend, &s.backend_url) {
        (Some(b), None) if !backends.contains(&b.0.as_str()) => Err(Problem::new(
            at!("routes", i, "mcp", "servers", name, "backend"),
            format!("{:?} is not one of \"backends\"", b.0),
        )),
        (Some(_), None) | (None, Some(_)) => Ok(Server {
            name: name.to_string(),
            backend: s.backend.as_ref().map(|b| b.0.clone()),
            backend_url: s.backend_url.as_ref().map(|u| u.0.clone()),
        }),
        _ => Err(Problem::new(at(), "set one of backend or backend_url")),
    }
}

/// 32 bytes as 64 hex digits or base64.
fn key(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|e| e.to_string())?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| "must be 32 bytes as 64 hex digits or base64".to_string())?
    };
    bytes
        .try_into()
        .map_err(|_| "must be 32 bytes as 64 hex digits or base64".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(yaml: &str) -> schema::Route {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn servers_are_checked() {
        let ok = route(
            "{path: /mcp, protocol: mcp, mcp: {servers: {github: {backend: gh}, search: {backend_url: 'http://127.0.0.1:7001/mcp'}}}}",
        );
        let s = Settings::of_route(&ok, 0, &["gh"], Some("secret"))
            .unwrap()
            .unwrap();
        assert_eq!(s.servers.len(), 2);
        assert_eq!(s.servers[0].name, "github");
        assert_eq!(s.tool_prefix, "{server}__");
        assert!(s.session_affinity);
        for (yaml, message) in [
            ("{path: /x, mcp: {}}", "applies to routes with protocol: mcp"),
            ("{path: /x, protocol: mcp}", "needs mcp.servers"),
            ("{path: /x, protocol: mcp, mcp: {servers: {}}}", "names no server"),
            ("{path: /x, protocol: mcp, backend_url: 'http://a', mcp: {servers: {a: {backend_url: 'http://a'}}}}", "remove backend"),
            ("{path: /x, protocol: mcp, mcp: {servers: {a: {}}}}", "set one of"),
            ("{path: /x, protocol: mcp, mcp: {servers: {a: {backend: nope}}}}", "is not one of"),
            ("{path: /x, protocol: mcp, mcp: {servers: {'a b': {backend_url: 'http://a'}}}}", "letters, digits"),
            ("{path: /x, protocol: mcp, mcp: {tool_prefix: 'x_', servers: {a: {backend_url: 'http://a'}, b: {backend_url: 'http://b'}}}}", "{server}"),
            ("{path: /x, protocol: mcp, mcp: {session_key: 'abc', servers: {a: {backend_url: 'http://a'}}}}", "32 bytes"),
            ("{path: /x, protocol: mcp, caching: {enabled: true}, mcp: {servers: {a: {backend_url: 'http://a'}}}}", "caching does not apply"),
        ] {
            let e = Settings::of_route(&route(yaml), 0, &[], None).unwrap_err();
            assert!(e.message.contains(message), "{yaml}: {}", e.message);
        }
    }

    #[test]
    fn session_keys_are_hex_or_base64() {
        let hex = "00".repeat(31) + "ff";
        assert_eq!(key(&hex).unwrap()[31], 0xff);
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32]);
        assert_eq!(key(&b64).unwrap(), [7u8; 32]);
        assert!(key("zz").is_err());
    }
}
