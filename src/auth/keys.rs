//! API keys: the registry's keys and the key store file. Only SHA-256 digests are kept; a
//! presented key is hashed and its digest compared in constant time.

use super::AgentInfo;
use crate::config::values::{parse_rate, Rate};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};
use subtle::ConstantTimeEq;

/// The agent of a key store entry, from its agent id and scopes.
pub type AgentOfKey = dyn Fn(&str, &[String]) -> Result<Arc<AgentInfo>, String> + Send + Sync;

/// How often the key store file is checked for changes.
const STORE_POLL: Duration = Duration::from_millis(500);

/// The key store file: `{"keys":[{...}]}` (README: "Key store").
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreFile {
    #[serde(default)]
    pub keys: Vec<StoreEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreEntry {
    pub agent_id: String,
    /// Lower-case hex of the key's SHA-256.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// MCP tool grants (globs), for agents the configuration gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// RFC 3339; after it the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
}

pub struct KeyEntry {
    digest: [u8; 32],
    pub agent: Arc<AgentInfo>,
    pub rate_limit: Option<Rate>,
    expires_at: Option<SystemTime>,
    disabled: bool,
}

/// What a presented key turned out to be.
pub enum KeyCheck<'a> {
    Valid(&'a KeyEntry),
    Unknown,
    Expired,
    Disabled,
}

/// Keys by digest. Buckets are found by the digest's first 8 bytes; the whole digest is then
/// compared in constant time.
#[derive(Default)]
pub struct KeyTable {
    buckets: HashMap<u64, Vec<KeyEntry>>,
    len: usize,
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn parse_digest(hex_text: &str) -> Option<[u8; 32]> {
    let b = hex_text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

fn bucket_of(digest: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

impl KeyTable {
    pub fn insert(
        &mut self,
        digest: [u8; 32],
        agent: Arc<AgentInfo>,
        rate_limit: Option<Rate>,
        expires_at: Option<SystemTime>,
        disabled: bool,
    ) {
        self.buckets
            .entry(bucket_of(&digest))
            .or_default()
            .push(KeyEntry {
                digest,
                agent,
                rate_limit,
                expires_at,
                disabled,
            });
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Each key's agent and the first 8 hex digits of its digest: how the console names keys
    /// (the digest of a random key says nothing of it).
    pub fn digest_prefixes(&self) -> Vec<(Arc<str>, String)> {
        let entries = self.buckets.values().flatten();
        entries
            .map(|e| {
                let mut hex = Vec::with_capacity(8);
                crate::text::push_hex(&mut hex, &e.digest[..4]);
                (
                    e.agent.id.clone(),
                    String::from_utf8_lossy(&hex).into_owned(),
                )
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn check(&self, digest: &[u8; 32]) -> KeyCheck<'_> {
        let Some(bucket) = self.buckets.get(&bucket_of(digest)) else {
            return KeyCheck::Unknown;
        };
        let Some(entry) = bucket.iter().find(|e| bool::from(e.digest.ct_eq(digest))) else {
            return KeyCheck::Unknown;
        };
        if entry.disabled {
            KeyCheck::Disabled
        } else if entry.expires_at.is_some_and(|t| t <= SystemTime::now()) {
            KeyCheck::Expired
        } else {
            KeyCheck::Valid(entry)
        }
    }
}

/// Parses RFC 3339 (`2027-01-31T00:00:00Z`, offsets allowed).
pub fn parse_time(s: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|_| format!("{s:?} is not an RFC 3339 time such as 2027-01-31T00:00:00Z"))
}

pub fn format_time(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Builds the table of a key store file. Errors name the entry and the field.
pub fn table_of(file: &StoreFile, agent_of: &AgentOfKey) -> Result<KeyTable, String> {
    let mut table = KeyTable::default();
    for (i, e) in file.keys.iter().enumerate() {
        let at = |m: String| format!("keys[{i}] ({}): {m}", e.agent_id);
        let digest = parse_digest(&e.sha256.to_ascii_lowercase())
            .ok_or_else(|| at("sha256 must be 64 hex digits".into()))?;
        let rate_limit = e
            .rate_limit
            .as_deref()
            .map(parse_rate)
            .transpose()
            .map_err(|m| at(format!("rate_limit: {m}")))?;
        let expires_at = e
            .expires_at
            .as_deref()
            .map(parse_time)
            .transpose()
            .map_err(|m| at(format!("expires_at: {m}")))?;
        let agent = agent_of(&e.agent_id, &e.scopes).map_err(at)?;
        let agent = AgentInfo::with_tools(agent, e.tools.as_deref()).map_err(at)?;
        table.insert(digest, agent, rate_limit, expires_at, e.disabled);
    }
    Ok(table)
}

pub fn read_store(path: &Path) -> Result<StoreFile, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {}", path.display(), crate::text::io_reason(&e)))?;
    if text.trim().is_empty() {
        return Ok(StoreFile::default());
    }
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the store atomically (a temporary file renamed over it), readable by its owner only.
pub fn write_store(path: &Path, store: &StoreFile) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let text = serde_json::to_string_pretty(store).map_err(|e| e.to_string())?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {}", path.display(), crate::text::io_reason(&e))
    })
}

/// A key store file, re-read when it changes; a broken file keeps the last good keys.
pub struct Store {
    pub path: PathBuf,
    table: ArcSwap<KeyTable>,
    stamp: Mutex<Option<Stamp>>,
    agent_of: Box<AgentOfKey>,
}

/// What identifies a version of the file without reading it.
#[derive(PartialEq, Eq, Clone, Copy)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

impl Store {
    pub fn digest_prefixes(&self) -> Vec<(Arc<str>, String)> {
        self.table.load().digest_prefixes()
    }

    /// Loads the store; a missing file is an empty store (a warning, returned).
    pub fn open(
        path: PathBuf,
        agent_of: Box<AgentOfKey>,
    ) -> Result<(Store, Option<String>), String> {
        let stamp = stamp_of(&path);
        let (table, warning) = if stamp.is_none() {
            (
                KeyTable::default(),
                Some(format!(
                    "key store {} does not exist yet; it is watched and loaded when created",
                    path.display()
                )),
            )
        } else {
            (table_of(&read_store(&path)?, &*agent_of)?, None)
        };
        Ok((
            Store {
                path,
                table: ArcSwap::from_pointee(table),
                stamp: Mutex::new(stamp),
                agent_of,
            },
            warning,
        ))
    }

    pub fn table(&self) -> arc_swap::Guard<Arc<KeyTable>> {
        self.table.load()
    }

    /// Re-reads the file if it changed. `Ok(true)`: new keys in use.
    pub fn refresh(&self) -> Result<bool, String> {
        let now = stamp_of(&self.path);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if *last == now {
                return Ok(false);
            }
            *last = now;
        }
        let table = match now {
            None => KeyTable::default(),
            Some(_) => table_of(&read_store(&self.path)?, &*self.agent_of)?,
        };
        self.table.store(Arc::new(table));
        Ok(true)
    }

    /// Checks the file for changes in a background thread for as long as the store lives.
    pub fn watch(self: &Arc<Self>) {
        let weak: Weak<Store> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("clawgate-keys".into())
            .spawn(move || loop {
                std::thread::sleep(STORE_POLL);
                let Some(store) = weak.upgrade() else { return };
                match store.refresh() {
                    Ok(true) => log::info!(
                        "key store {} reloaded: {} keys",
                        store.path.display(),
                        store.table().len()
                    ),
                    Ok(false) => {}
                    Err(e) => log::warn!("key store not reloaded, the last good keys stay: {e}"),
                }
            });
        if let Err(e) = spawned {
            log::error!("cannot watch the key store: {e}");
        }
    }
}

/// A new random API key: `cg_` and 43 characters of URL-safe base64 (256 bits).
pub fn generate_key() -> Result<String, String> {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness available: {e}"))?;
    Ok(format!(
        "cg_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> Arc<AgentInfo> {
        Arc::new(AgentInfo::new(id, Vec::new()).unwrap())
    }

    #[test]
    fn keys_are_found_by_digest_and_states_are_told_apart() {
        let mut t = KeyTable::default();
        t.insert(sha256(b"good"), agent("a"), None, None, false);
        t.insert(sha256(b"off"), agent("b"), None, None, true);
        let past = SystemTime::now() - Duration::from_secs(5);
        t.insert(sha256(b"old"), agent("c"), None, Some(past), false);
        assert!(matches!(t.check(&sha256(b"good")), KeyCheck::Valid(e) if &*e.agent.id == "a"));
        assert!(matches!(t.check(&sha256(b"off")), KeyCheck::Disabled));
        assert!(matches!(t.check(&sha256(b"old")), KeyCheck::Expired));
        assert!(matches!(t.check(&sha256(b"nope")), KeyCheck::Unknown));
    }

    #[test]
    fn digests_round_trip_through_hex() {
        let d = sha256(b"abc");
        assert_eq!(
            hex(&d),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_digest(&hex(&d)), Some(d));
        assert_eq!(parse_digest("zz"), None);
    }

    #[test]
    fn store_entries_are_checked() {
        let f: StoreFile =
            serde_json::from_str(r#"{"keys":[{"agent_id":"a","sha256":"00","disabled":false}]}"#)
                .unwrap();
        let err = table_of(&f, &|id, _| Ok(agent(id))).err().unwrap();
        assert!(err.contains("keys[0] (a): sha256"), "{err}");
        assert!(serde_json::from_str::<StoreFile>(r#"{"keys":[{"agent":"a"}]}"#).is_err());
        assert!(parse_time("2027-01-31T00:00:00+02:00").is_ok());
        assert!(parse_time("tomorrow").is_err());
    }

    #[test]
    fn an_entrys_tools_grant_agents_the_file_gives_none() {
        let digest = hex(&sha256(b"k"));
        let file = |tools: &str| -> StoreFile {
            let json =
                format!(r#"{{"keys":[{{"agent_id":"a","sha256":"{digest}","tools":{tools}}}]}}"#);
            serde_json::from_str(&json).unwrap()
        };
        let table = table_of(&file(r#"["search_*"]"#), &|id, _| Ok(agent(id))).unwrap();
        let KeyCheck::Valid(e) = table.check(&sha256(b"k")) else {
            panic!("the key")
        };
        let grants = e.agent.tools.as_ref().expect("grants");
        assert!(grants.allows("search_web") && !grants.allows("delete_repo"));
        let err = table_of(&file(r#"["!"]"#), &|id, _| Ok(agent(id)))
            .err()
            .unwrap();
        assert!(err.contains("tools"), "{err}");
    }
}
