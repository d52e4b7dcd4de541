//! The operator's commands on identities: `clawgate token` and `clawgate keys add|list|revoke`.

use crate::auth::keys::{self, StoreEntry};
use crate::auth::AgentInfo;
use crate::config::values::{parse_duration, parse_rate};
use crate::runtime::Config;
use std::path::Path;
use std::time::SystemTime;

/// A JWT for an agent, signed with the configured key. `ttl` defaults to `jwt.expiry`.
pub fn token(cfg: &Config, agent: &str, ttl: Option<&str>) -> Result<String, String> {
    AgentInfo::new(agent, Vec::new()).map_err(|m| format!("--agent: {m}"))?;
    let jwt = cfg.auth.jwt.as_ref().ok_or_else(|| {
        format!(
            "{}: auth.jwt is not configured; there is no key to sign with",
            cfg.source.display()
        )
    })?;
    let ttl = match ttl {
        Some(t) => parse_duration(t).map_err(|m| format!("--ttl: {m}"))?.0,
        None => jwt.rules.expiry,
    };
    if ttl.is_zero() {
        return Err("--ttl must be longer than 0".into());
    }
    jwt.mint(agent, ttl)
}

fn store_path(cfg: &Config) -> Result<&Path, String> {
    cfg.keys_store.as_deref().map(Path::new).ok_or_else(|| {
        format!(
            "{}: auth.api_key.keys_store is not configured",
            cfg.source.display()
        )
    })
}

fn read_or_empty(path: &Path) -> Result<keys::StoreFile, String> {
    if path.exists() {
        keys::read_store(path)
    } else {
        Ok(keys::StoreFile::default())
    }
}

pub struct NewKey<'a> {
    pub agent: &'a str,
    pub scopes: Vec<String>,
    pub rate_limit: Option<&'a str>,
    /// RFC 3339 time, or a duration from now (`30d`).
    pub expires: Option<&'a str>,
}

/// Adds a random key to the store; returns the key (shown once, never stored).
pub fn add(cfg: &Config, new: NewKey) -> Result<String, String> {
    let path = store_path(cfg)?;
    AgentInfo::new(new.agent, Vec::new()).map_err(|m| format!("--agent: {m}"))?;
    for s in new.scopes.iter().filter(|s| *s != crate::auth::ADMIN_SCOPE) {
        crate::router::Pattern::new(s).map_err(|m| format!("--scope: {m}"))?;
    }
    if let Some(r) = new.rate_limit {
        parse_rate(r).map_err(|m| format!("--rate-limit: {m}"))?;
    }
    let expires_at = match new.expires {
        None => None,
        Some(e) => Some(match parse_duration(e) {
            Ok(d) => keys::format_time(SystemTime::now() + d.0),
            Err(_) => {
                keys::parse_time(e).map_err(|m| format!("--expires: {m} or a duration"))?;
                e.to_string()
            }
        }),
    };
    let mut store = read_or_empty(path)?;
    let key = keys::generate_key()?;
    store.keys.push(StoreEntry {
        agent_id: new.agent.to_string(),
        sha256: keys::hex(&keys::sha256(key.as_bytes())),
        scopes: new.scopes,
        tools: None,
        rate_limit: new.rate_limit.map(str::to_string),
        expires_at,
        disabled: false,
        created_at: Some(keys::format_time(SystemTime::now())),
    });
    keys::write_store(path, &store)?;
    Ok(key)
}

/// One line per key: agent, digest prefix, state, expiry, scopes.
pub fn list(cfg: &Config, agent: Option<&str>) -> Result<String, String> {
    let store = read_or_empty(store_path(cfg)?)?;
    let mut out = String::from("AGENT\tSHA256\tSTATE\tEXPIRES\tSCOPES\n");
    let now = SystemTime::now();
    for e in store
        .keys
        .iter()
        .filter(|e| agent.is_none_or(|a| e.agent_id == a))
    {
        let expired = e
            .expires_at
            .as_deref()
            .and_then(|t| keys::parse_time(t).ok())
            .is_some_and(|t| t <= now);
        let state = match (e.disabled, expired) {
            (true, _) => "revoked",
            (false, true) => "expired",
            _ => "active",
        };
        out.push_str(&format!(
            "{}\t{}\t{state}\t{}\t{}\n",
            e.agent_id,
            e.sha256.get(..12).unwrap_or(&e.sha256),
            e.expires_at.as_deref().unwrap_or("-"),
            if e.scopes.is_empty() {
                "-".to_string()
            } else {
                e.scopes.join(",")
            },
        ));
    }
    Ok(out)
}

/// Marks an agent's keys revoked (or only the one whose digest starts with `sha256_prefix`).
/// Returns how many were revoked.
pub fn revoke(cfg: &Config, agent: &str, sha256_prefix: Option<&str>) -> Result<usize, String> {
    let path = store_path(cfg)?;
    let mut store = read_or_empty(path)?;
    let mut n = 0;
    for e in store.keys.iter_mut().filter(|e| {
        e.agent_id == agent
            && !e.disabled
            && sha256_prefix.is_none_or(|p| e.sha256.starts_with(&p.to_ascii_lowercase()))
    }) {
        e.disabled = true;
        n += 1;
    }
    if n == 0 {
        return Err(format!("no active key of agent {agent:?} matches"));
    }
    keys::write_store(path, &store)?;
    Ok(n)
}
