//! Compiles `auth` and `agents` into [`Auth`]; errors are located by field path.

use super::jwks::KeySpec;
use super::jwks::{self, Jwks, Source};
use super::jwt::{self, Jwt, Rules};
use super::keys::{self, KeyTable, Store};
use super::{Access, AgentInfo, Auth, Strategy};
use crate::at;
use crate::config::schema::{self, File};
use crate::config::Problem;
use crate::router::Pattern;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub const DEFAULT_API_KEY_HEADER: &str = "x-api-key";
const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
const DEFAULT_TOKEN_CACHE: u64 = 10_000;
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(300);
const DEFAULT_JWKS_COOLDOWN: Duration = Duration::from_secs(10);

fn text(t: &Option<crate::config::values::Text>) -> Option<String> {
    t.as_ref().map(|t| t.0.clone())
}

/// The compiled auth section. A key store that does not exist yet is an empty store (`check`
/// warns about it; the running gateway loads it when it appears).
pub fn compile(file: &File) -> Result<Auth, Problem> {
    let auth = file.auth.as_ref();
    let (agents, registry_keys) = agents(file)?;
    let jwt = match auth.and_then(|a| a.jwt.as_ref()) {
        Some(j) => Some(Arc::new(compile_jwt(j)?)),
        None => None,
    };
    let api = auth.and_then(|a| a.api_key.as_ref());
    let api_key_header = api_key_header(api)?;
    let store = key_store(api, &agents)?;
    let default_strategy = auth.and_then(|a| a.strategy).unwrap_or(Strategy::Any);
    if default_strategy == Strategy::Jwt && jwt.is_none() {
        return Err(Problem::new(
            at!("auth", "strategy"),
            "is jwt, but auth.jwt is not configured",
        ));
    }
    Ok(Auth {
        default_strategy,
        jwt,
        api_key_header,
        registry_keys,
        store,
        agents,
    })
}

type Agents = Arc<HashMap<String, Arc<AgentInfo>>>;

/// The agents of the file, and the keys they are known by (no two agents sharing one).
fn agents(file: &File) -> Result<(Agents, KeyTable), Problem> {
    let mut agents = HashMap::new();
    let mut registry_keys = KeyTable::default();
    let mut seen_keys: HashMap<[u8; 32], &str> = HashMap::new();
    for (name, a) in &file.agents {
        for (i, s) in a.scopes.iter().enumerate() {
            if s.0 != super::ADMIN_SCOPE {
                Pattern::new(s).map_err(|m| Problem::new(at!("agents", name, "scopes", i), m))?;
            }
        }
        let mut info = AgentInfo::new(name, a.scopes.iter().map(|s| s.0.clone()).collect())
            .map_err(|m| Problem::new(at!("agents", name), m))?;
        if let Some(tools) = &a.tools {
            let globs: Vec<String> = tools.iter().map(|t| t.0.clone()).collect();
            let grants = crate::mcp::grants::Grants::compile(&globs)
                .map_err(|m| Problem::new(at!("agents", name, "tools"), m))?;
            info.tools = Some(Arc::new(grants));
        }
        if let Some(limits) = a.tool_rate_limits.as_ref().filter(|l| !l.is_empty()) {
            let limits = (limits.iter())
                .map(|(tool, r)| (tool.clone(), crate::limits::Limit::from_rate(*r)))
                .collect();
            info.tool_limits = Some(Arc::new(limits));
        }
        let info = Arc::new(info);
        if let Some((digest, field)) = agent_key(name, a)? {
            if let Some(other) = seen_keys.insert(digest, name) {
                return Err(Problem::new(
                    at!("agents", name, field),
                    format!("is the same key as agent {other:?}'s"),
                ));
            }
            registry_keys.insert(digest, info.clone(), a.rate_limit, None, false);
        }
        agents.insert(name.clone(), info);
    }
    Ok((Arc::new(agents), registry_keys))
}

/// The digest of an agent's key, and the field it was given in.
fn agent_key(name: &str, a: &schema::Agent) -> Result<Option<([u8; 32], &'static str)>, Problem> {
    Ok(match (&a.api_key, &a.api_key_sha256) {
        (Some(_), Some(_)) => {
            return Err(Problem::new(
                at!("agents", name),
                "set either api_key or api_key_sha256, not both",
            ))
        }
        (Some(k), None) if k.is_empty() => {
            return Err(Problem::new(at!("agents", name, "api_key"), "is empty"))
        }
        (Some(k), None) => Some((keys::sha256(k.as_bytes()), "api_key")),
        (None, Some(h)) => Some((
            keys::parse_digest(&h.to_ascii_lowercase()).ok_or_else(|| {
                Problem::new(
                    at!("agents", name, "api_key_sha256"),
                    "must be 64 hex digits (the SHA-256 of the key)",
                )
            })?,
            "api_key_sha256",
        )),
        (None, None) => None,
    })
}

fn api_key_header(api: Option<&schema::ApiKey>) -> Result<http::HeaderName, Problem> {
    Ok(match api.and_then(|k| text(&k.header)) {
        Some(h) => http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
            Problem::new(
                at!("auth", "api_key", "header"),
                format!("{h:?} is not a header name"),
            )
        })?,
        None => http::HeaderName::from_static(DEFAULT_API_KEY_HEADER),
    })
}

/// The key store, whose agents are the file's (when a key names no scopes of its own) or made
/// from the key's scopes.
fn key_store(api: Option<&schema::ApiKey>, agents: &Agents) -> Result<Option<Arc<Store>>, Problem> {
    let Some(path) = api.and_then(|k| text(&k.keys_store)) else {
        return Ok(None);
    };
    let registry = agents.clone();
    let agent_of = Box::new(move |id: &str, scopes: &[String]| {
        for s in scopes.iter().filter(|s| *s != super::ADMIN_SCOPE) {
            Pattern::new(s).map_err(|m| format!("scopes: {m}"))?;
        }
        match registry.get(id) {
            Some(a) if scopes.is_empty() => Ok(a.clone()),
            // Scopes of its own, but the file's agent: its MCP tool grants and limits stay.
            Some(a) => AgentInfo::new(id, scopes.to_vec()).map(|mut info| {
                info.tools = a.tools.clone();
                info.tool_limits = a.tool_limits.clone();
                Arc::new(info)
            }),
            None => AgentInfo::new(id, scopes.to_vec()).map(Arc::new),
        }
    });
    let (store, _missing) = Store::open(path.into(), agent_of)
        .map_err(|m| Problem::new(at!("auth", "api_key", "keys_store"), m))?;
    Ok(Some(Arc::new(store)))
}

/// Who may call route `i`; `None` for an open route.
pub fn route_access(auth: &Auth, r: &schema::Route, i: usize) -> Result<Option<Access>, Problem> {
    if !r.auth_required.0 && r.auth_strategy.is_none() && r.allowed_agents.is_none() {
        return Ok(None);
    }
    let strategy = r.auth_strategy.unwrap_or(auth.default_strategy);
    if strategy == Strategy::Jwt && auth.jwt.is_none() {
        return Err(Problem::new(
            at!("routes", i, "auth_strategy"),
            "is jwt, but auth.jwt is not configured",
        ));
    }
    let allowed = r
        .allowed_agents
        .as_ref()
        .map(|list| list.iter().map(|a| Arc::from(a.0.as_str())).collect());
    Ok(Some(Access { strategy, allowed }))
}

fn compile_jwt(j: &schema::Jwt) -> Result<Jwt, Problem> {
    let rules = Rules {
        issuer: text(&j.issuer),
        audience: text(&j.audience),
        expiry: j.expiry.map_or(DEFAULT_EXPIRY, |d| d.0),
        leeway: j.leeway.map_or(DEFAULT_LEEWAY, |d| d.0),
    };
    if rules.expiry.is_zero() {
        return Err(Problem::new(
            at!("auth", "jwt", "expiry"),
            "must be longer than 0",
        ));
    }
    let specs = key_specs(j)?;
    let jwks = jwks_source(j)?;
    if specs.is_empty() && jwks.source.is_none() {
        return Err(Problem::new(
            at!("auth", "jwt"),
            "needs a key: secret, keys, jwks_file or jwks_url",
        ));
    }
    let refresh = j.jwks_refresh.map_or(DEFAULT_JWKS_REFRESH, |d| d.0);
    let cooldown = j.jwks_cooldown.map_or(DEFAULT_JWKS_COOLDOWN, |d| d.0);
    let cache = j.token_cache.map_or(DEFAULT_TOKEN_CACHE, |c| c.0) as usize;
    let source = jwks.source.map(|s| Jwks::new(s, refresh, cooldown));
    let jwt = Jwt::new(rules, specs, cache, source);
    if let Some(source) = &jwt.jwks {
        if !jwks.file_body.is_empty() {
            jwt.set_jwks_keys(&jwks.file_keys);
            source.loaded(&jwks.file_body);
        }
    }
    Ok(jwt)
}

/// The keys written in the file: `secret` first, then `keys` in order.
fn key_specs(j: &schema::Jwt) -> Result<Vec<KeySpec>, Problem> {
    let mut specs = Vec::new();
    if let Some(secret) = &j.secret {
        jwt::check_secret(secret).map_err(|m| Problem::new(at!("auth", "jwt", "secret"), m))?;
        specs.push(KeySpec {
            kid: None,
            alg: Algorithm::HS256,
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: Some(EncodingKey::from_secret(secret.as_bytes())),
        });
    }
    for (i, k) in j.keys.iter().enumerate() {
        let spec = key_spec(i, k, &specs)?;
        specs.push(spec);
    }
    Ok(specs)
}

/// Key `i` of `keys`; `before` are the keys already read, whose kids it may not repeat.
fn key_spec(i: usize, k: &schema::JwtKey, before: &[KeySpec]) -> Result<KeySpec, Problem> {
    let here = |field: &str| at!("auth", "jwt", "keys", i, field);
    if k.kid.is_empty() {
        return Err(Problem::new(here("kid"), "is empty"));
    }
    if before.iter().any(|s| s.kid.as_deref() == Some(&k.kid.0)) {
        return Err(Problem::new(
            here("kid"),
            format!("{:?} is listed twice", k.kid.0),
        ));
    }
    let alg = key_algorithm(i, k)?;
    let (decoding, encoding) = key_material(i, k, alg)?;
    Ok(KeySpec {
        kid: Some(k.kid.0.clone()),
        alg,
        decoding,
        encoding,
    })
}

/// The key's `algorithm`, which may be left out for a secret (HS256).
fn key_algorithm(i: usize, k: &schema::JwtKey) -> Result<Algorithm, Problem> {
    let here = || at!("auth", "jwt", "keys", i, "algorithm");
    match &k.algorithm {
        Some(a) => Algorithm::from_str(a).map_err(|_| {
            Problem::new(
                here(),
                format!(
                    "{:?} is not supported; expected HS256, HS384, HS512, RS256, RS384, \
                     RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA",
                    a.0
                ),
            )
        }),
        None if k.secret.is_some() => Ok(Algorithm::HS256),
        None => Err(Problem::new(
            here(),
            "is required for a key file (e.g. RS256, ES256, EdDSA)",
        )),
    }
}

/// The key to check tokens with, and the one to sign them with when there is one.
fn key_material(
    i: usize,
    k: &schema::JwtKey,
    alg: Algorithm,
) -> Result<(DecodingKey, Option<EncodingKey>), Problem> {
    let here = |field: &str| at!("auth", "jwt", "keys", i, field);
    match (&k.secret, &k.public_key_file) {
        (Some(_), Some(_)) => Err(Problem::new(
            at!("auth", "jwt", "keys", i),
            "set either secret or public_key_file, not both",
        )),
        (Some(secret), None) => {
            if alg.family() != jsonwebtoken::AlgorithmFamily::Hmac {
                return Err(Problem::new(
                    here("secret"),
                    format!("a secret is for HS256/384/512, not {alg:?}"),
                ));
            }
            jwt::check_secret(secret).map_err(|m| Problem::new(here("secret"), m))?;
            Ok((
                DecodingKey::from_secret(secret.as_bytes()),
                Some(EncodingKey::from_secret(secret.as_bytes())),
            ))
        }
        (None, Some(file)) => {
            let public = read(file).map_err(|m| Problem::new(here("public_key_file"), m))?;
            let private = match &k.private_key_file {
                Some(f) => Some(read(f).map_err(|m| Problem::new(here("private_key_file"), m))?),
                None => None,
            };
            jwt::key_from_files(alg, Some(&public), private.as_deref())
                .map_err(|m| Problem::new(here("public_key_file"), m))
        }
        (None, None) => Err(Problem::new(
            at!("auth", "jwt", "keys", i),
            "needs secret or public_key_file",
        )),
    }
}

/// Where a JWKS comes from; a file's is read now, so that a bad one fails the configuration.
struct JwksSource {
    source: Option<Source>,
    file_keys: Vec<KeySpec>,
    file_body: Vec<u8>,
}

fn jwks_source(j: &schema::Jwt) -> Result<JwksSource, Problem> {
    let mut file_keys = Vec::new();
    let mut file_body = Vec::new();
    let source = match (&j.jwks_file, &j.jwks_url) {
        (Some(_), Some(_)) => {
            return Err(Problem::new(
                at!("auth", "jwt"),
                "set either jwks_file or jwks_url, not both",
            ))
        }
        (Some(f), None) => {
            let body = read(f).map_err(|m| Problem::new(at!("auth", "jwt", "jwks_file"), m))?;
            file_keys = jwks::parse(&body)
                .map_err(|m| Problem::new(at!("auth", "jwt", "jwks_file"), format!("{f}: {m}")))?;
            file_body = body;
            Some(Source::File(f.0.clone().into()))
        }
        (None, Some(u)) => Some(Source::Url(jwks_url(u)?)),
        (None, None) => None,
    };
    Ok(JwksSource {
        source,
        file_keys,
        file_body,
    })
}

fn jwks_url(u: &crate::config::values::Text) -> Result<String, Problem> {
    let uri: http::Uri = u.parse().map_err(|_| {
        Problem::new(
            at!("auth", "jwt", "jwks_url"),
            format!("{:?} is not a URL", u.0),
        )
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(Problem::new(
            at!("auth", "jwt", "jwks_url"),
            format!("{:?} is not an http(s) URL", u.0),
        ));
    }
    Ok(u.0.clone())
}

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {}", crate::text::io_reason(&e)))
}
