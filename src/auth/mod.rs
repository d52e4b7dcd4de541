//! Agent identity: who is calling (a JWT or an API key), and whether they may call a route.

pub mod compile;
pub mod jwks;
pub mod jwt;
pub mod keys;

use crate::router::Pattern;
use http::{HeaderMap, HeaderName, HeaderValue};
use jwt::{Jwt, Refused};
use keys::{KeyCheck, KeyTable, Store};
use std::collections::HashMap;
use std::sync::Arc;

pub use crate::config::schema::AuthStrategy as Strategy;

/// An authenticated agent as the gateway knows it.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    pub id: Arc<str>,
    /// The id, ready to send as `X-Agent-ID`.
    pub header: HeaderValue,
    /// `None`: unrestricted. `Some`: the full path must match one (an empty list matches none).
    pub scopes: Option<Vec<Pattern>>,
    /// The `admin` scope: may purge the cache.
    pub admin: bool,
    /// The MCP tools the agent may use (`None`: all of them).
    pub tools: Option<Arc<crate::mcp::grants::Grants>>,
    /// `tool_rate_limits`: the agent's limit per MCP tool, by the name the client sees.
    pub tool_limits: Option<Arc<HashMap<String, crate::limits::Limit>>>,
    /// The agent's counts in the admin console, when it is on.
    pub console: crate::console::stats::Slot,
}

/// The scope that grants the gateway's administrative requests (cache purges), not a path.
pub const ADMIN_SCOPE: &str = "admin";

impl AgentInfo {
    /// Scopes that are not paths (OAuth scopes such as `openid` in a JWT) grant no path, but
    /// still make the agent restricted.
    pub fn new(id: &str, scopes: Vec<String>) -> Result<AgentInfo, String> {
        if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("an agent id must be 1 to 256 visible ASCII characters".into());
        }
        let header = HeaderValue::from_str(id).map_err(|_| "not a valid agent id".to_string())?;
        let admin = scopes.iter().any(|s| s == ADMIN_SCOPE);
        let paths: Vec<&String> = scopes.iter().filter(|s| *s != ADMIN_SCOPE).collect();
        // `admin` alone restricts no path: an admin agent calls what its route access allows.
        let scopes = (!paths.is_empty())
            .then(|| paths.iter().filter_map(|s| Pattern::new(s).ok()).collect());
        Ok(AgentInfo {
            id: id.into(),
            header,
            scopes,
            admin,
            tools: None,
            tool_limits: None,
            console: Default::default(),
        })
    }

    /// The agent with tool grants from its credential (a key-store entry's or a token's
    /// `tools`), when the file gives it none: the configuration's grants are never widened
    /// by a credential.
    pub fn with_tools(
        agent: Arc<AgentInfo>,
        tools: Option<&[String]>,
    ) -> Result<Arc<AgentInfo>, String> {
        let Some(globs) = tools.filter(|_| agent.tools.is_none()) else {
            return Ok(agent);
        };
        let grants =
            crate::mcp::grants::Grants::compile(globs).map_err(|m| format!("tools: {m}"))?;
        let mut info = (*agent).clone();
        info.tools = Some(Arc::new(grants));
        Ok(Arc::new(info))
    }

    pub fn may_call(&self, full_path: &str) -> bool {
        self.scopes
            .as_ref()
            .is_none_or(|list| list.iter().any(|p| p.matches(full_path)))
    }
}

/// The verified caller of one request.
#[derive(Clone)]
pub struct Identity {
    pub agent: Arc<AgentInfo>,
    /// The API key the request authenticated with (for `inject_auth: agent_api_key`).
    pub api_key: Option<HeaderValue>,
    /// The key store's own rate limit for this key.
    pub key_limit: Option<crate::limits::Limit>,
}

/// Why a request was not authenticated (→ 401).
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    Missing,
    Invalid(&'static str),
    /// The JWT names a key id that a JWKS fetch might bring.
    UnknownKid(String),
}

impl Failure {
    pub fn message(&self) -> &'static str {
        match self {
            Failure::Missing => "authentication required",
            Failure::Invalid(m) => m,
            Failure::UnknownKid(_) => "the token names an unknown key (kid)",
        }
    }
}

/// Who may call a route (absent on open routes).
#[derive(Debug)]
pub struct Access {
    pub strategy: Strategy,
    /// An explicit grant: listed agents may call the route whatever their scopes.
    pub allowed: Option<Vec<Arc<str>>>,
}

impl Access {
    /// `Err`: the message of a 403.
    pub fn authorise(&self, agent: &AgentInfo, full_path: &str) -> Result<(), &'static str> {
        match &self.allowed {
            Some(list) if list.iter().any(|a| **a == *agent.id) => Ok(()),
            Some(_) => Err("this agent may not call this route"),
            None if agent.may_call(full_path) => Ok(()),
            None => Err("this agent's scopes do not include this path"),
        }
    }
}

/// The compiled `auth` section and agent registry.
pub struct Auth {
    pub default_strategy: Strategy,
    pub jwt: Option<Arc<Jwt>>,
    pub api_key_header: HeaderName,
    registry_keys: KeyTable,
    pub store: Option<Arc<Store>>,
    pub agents: Arc<HashMap<String, Arc<AgentInfo>>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("default_strategy", &self.default_strategy)
            .field("jwt", &self.jwt.is_some())
            .field("agents", &self.agents.len())
            .finish_non_exhaustive()
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl Auth {
    /// Every API key's agent and digest prefix (the registry's, then the key store's).
    pub fn key_digests(&self) -> Vec<(Arc<str>, String)> {
        let mut all = self.registry_keys.digest_prefixes();
        if let Some(store) = &self.store {
            all.extend(store.digest_prefixes());
        }
        all
    }

    /// The agent for an id: the registry's entry, else a new one with the given scopes.
    pub fn agent_of(&self, id: &str, scopes: Vec<String>) -> Option<Arc<AgentInfo>> {
        match self.agents.get(id) {
            Some(a) => Some(a.clone()),
            None => AgentInfo::new(id, scopes).ok().map(Arc::new),
        }
    }

    /// Authenticates a request by the strategy's credential. Synchronous: a JWT naming an
    /// unknown `kid` comes back as `UnknownKid`, for the caller to fetch keys and ask again.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        strategy: Strategy,
    ) -> Result<Identity, Failure> {
        let token = bearer(headers);
        let use_jwt = match strategy {
            Strategy::Jwt => true,
            Strategy::ApiKey => false,
            Strategy::Any => self.jwt.is_some() && token.is_some(),
        };
        if use_jwt {
            let (Some(jwt), Some(token)) = (&self.jwt, token) else {
                return Err(Failure::Missing);
            };
            return match jwt.verify(token, &|id, scopes| self.agent_of(id, scopes)) {
                Ok(v) => Ok(Identity {
                    agent: v.agent.clone(),
                    api_key: None,
                    key_limit: None,
                }),
                Err(Refused::UnknownKid) => Err(Failure::UnknownKid(
                    jsonwebtoken::decode_header(token)
                        .ok()
                        .and_then(|h| h.kid)
                        .unwrap_or_default(),
                )),
                Err(Refused::Invalid(m)) => Err(Failure::Invalid(m)),
            };
        }
        let key = headers
            .get(&self.api_key_header)
            .filter(|k| !k.is_empty())
            .ok_or(Failure::Missing)?;
        let digest = keys::sha256(key.as_bytes());
        type Found = (Arc<AgentInfo>, Option<crate::limits::Limit>);
        let found = |check: KeyCheck<'_>| -> Option<Result<Found, Failure>> {
            match check {
                KeyCheck::Valid(e) => Some(Ok((
                    e.agent.clone(),
                    e.rate_limit.map(crate::limits::Limit::from_rate),
                ))),
                KeyCheck::Expired => Some(Err(Failure::Invalid("the API key has expired"))),
                KeyCheck::Disabled => Some(Err(Failure::Invalid("the API key is revoked"))),
                KeyCheck::Unknown => None,
            }
        };
        let (agent, key_limit) = found(self.registry_keys.check(&digest))
            .or_else(|| {
                self.store
                    .as_ref()
                    .and_then(|s| found(s.table().check(&digest)))
            })
            .unwrap_or(Err(Failure::Invalid("the API key is not valid")))?;
        Ok(Identity {
            agent,
            api_key: Some(key.clone()),
            key_limit,
        })
    }

    /// The `WWW-Authenticate` challenge of a 401 on a route with this strategy; `extra`: a
    /// parameter of the Bearer challenge (RFC 9728's `resource_metadata`).
    pub fn challenge(&self, strategy: Strategy, failure: &Failure, extra: Option<&str>) -> String {
        let mut bearer = match failure {
            Failure::Missing => "Bearer realm=\"clawgate\"".to_string(),
            _ => "Bearer realm=\"clawgate\", error=\"invalid_token\"".to_string(),
        };
        if let Some(extra) = extra {
            bearer.push_str(", ");
            bearer.push_str(extra);
        }
        let api_key = format!(
            "ApiKey realm=\"clawgate\", header=\"{}\"",
            self.api_key_header
        );
        match strategy {
            Strategy::Jwt => bearer,
            Strategy::ApiKey => api_key,
            Strategy::Any if self.jwt.is_some() => format!("{bearer}, {api_key}"),
            Strategy::Any => api_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_decide_on_the_full_path() {
        let a = AgentInfo::new("fin", vec!["/api/v1/finance/*".into()]).unwrap();
        assert!(a.may_call("/api/v1/finance"));
        assert!(a.may_call("/api/v1/finance/x/y"));
        assert!(!a.may_call("/api/v1/financex"));
        assert!(!a.may_call("/api/v1/hr/x"));
        let oauth = AgentInfo::new("o", vec!["openid".into()]).unwrap();
        assert!(!oauth.may_call("/anything"));
        let free = AgentInfo::new("f", vec![]).unwrap();
        assert!(free.may_call("/anything"));
        assert!(AgentInfo::new("has space", vec![]).is_err());
        assert!(AgentInfo::new("", vec![]).is_err());
    }

    #[test]
    fn allowed_agents_grant_beyond_scopes() {
        let fin = AgentInfo::new("finance-agent", vec!["/api/v1/finance/*".into()]).unwrap();
        let access = Access {
            strategy: Strategy::Any,
            allowed: Some(vec!["data-agent".into(), "finance-agent".into()]),
        };
        assert!(access.authorise(&fin, "/api/v1/data/x").is_ok());
        let hr = AgentInfo::new("hr-agent", vec![]).unwrap();
        assert!(access.authorise(&hr, "/api/v1/data/x").is_err());
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert("authorization", HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
