//! JWT verification and minting: keys by `kid` with their algorithm pinned, the checks of
//! `auth.jwt`, and a bounded cache of verified tokens.

use super::jwks::{Jwks, KeySpec};
use super::AgentInfo;
use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use pingora_memory_cache::MemoryCache;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Finds or makes the agent of a token: its id and the token's scopes.
pub type AgentFor<'a> = dyn Fn(&str, Vec<String>) -> Option<Arc<AgentInfo>> + 'a;

/// A verification key. Its algorithm is fixed: a token must name exactly it.
pub struct Key {
    pub kid: Option<String>,
    pub alg: Algorithm,
    decoding: DecodingKey,
    validation: Validation,
}

/// The keys a token may be verified with.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    /// For tokens without `kid`: the `secret` key.
    no_kid: Option<Arc<Key>>,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.by_kid.len() + usize::from(self.no_kid.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn contains_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }
}

/// The key tokens are minted with.
pub struct Signer {
    kid: Option<String>,
    alg: Algorithm,
    key: EncodingKey,
}

/// The checks of `auth.jwt`, shared by every key.
pub struct Rules {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// The longest lifetime accepted and minted.
    pub expiry: Duration,
    pub leeway: Duration,
}

pub struct Jwt {
    pub rules: Rules,
    /// Keys from the configuration; JWKS keys are added to these.
    static_keys: Vec<Arc<Key>>,
    keys: ArcSwap<KeySet>,
    signer: Option<Signer>,
    cache: Option<MemoryCache<String, Arc<Verified>>>,
    /// Bumped when the key set changes: cached verifications of older sets are void (a removed
    /// key's tokens must stop working at once).
    generation: AtomicU64,
    pub jwks: Option<Jwks>,
}

/// A verified token, as cached.
pub struct Verified {
    token: Box<str>,
    pub agent: Arc<AgentInfo>,
    exp: u64,
    generation: u64,
}

/// Why a token was refused (the message is safe to show: it never holds the token).
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The token names a `kid` we do not know; a JWKS refetch may help.
    UnknownKid,
    Invalid(&'static str),
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    agent_id: Option<String>,
    exp: Option<f64>,
    iat: Option<f64>,
    scopes: Option<Vec<String>>,
    scope: Option<String>,
    /// MCP tool grants (globs), for agents the configuration gives none.
    tools: Option<Vec<String>>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Key {
    pub fn new(spec: &KeySpec, rules: &Rules) -> Key {
        let mut v = Validation::new(spec.alg);
        v.leeway = rules.leeway.as_secs();
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &rules.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &rules.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        Key {
            kid: spec.kid.clone(),
            alg: spec.alg,
            decoding: spec.decoding.clone(),
            validation: v,
        }
    }
}

impl Jwt {
    pub fn new(rules: Rules, specs: Vec<KeySpec>, cache_size: usize, jwks: Option<Jwks>) -> Jwt {
        let signer = specs.first().and_then(|s| {
            s.encoding.clone().map(|key| Signer {
                kid: s.kid.clone(),
                alg: s.alg,
                key,
            })
        });
        let static_keys: Vec<Arc<Key>> = specs
            .iter()
            .map(|s| Arc::new(Key::new(s, &rules)))
            .collect();
        let keys = ArcSwap::from_pointee(set_of(&static_keys, &[]));
        Jwt {
            rules,
            static_keys,
            keys,
            signer,
            cache: (cache_size > 0).then(|| MemoryCache::new(cache_size)),
            generation: AtomicU64::new(0),
            jwks,
        }
    }

    /// Puts keys from a JWKS beside the configured ones (a configured `kid` wins).
    pub fn set_jwks_keys(&self, specs: &[KeySpec]) {
        let extra: Vec<Arc<Key>> = specs
            .iter()
            .map(|s| Arc::new(Key::new(s, &self.rules)))
            .collect();
        self.keys.store(Arc::new(set_of(&self.static_keys, &extra)));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn keys(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.keys.load()
    }

    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    /// Voids every cached verification (a reload may have changed the agents they name).
    pub fn forget_verified(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Verifies a token: from the cache when it was verified before and has not expired.
    pub fn verify(&self, token: &str, agent_of: &AgentFor) -> Result<Arc<Verified>, Refused> {
        if let Some(cache) = &self.cache {
            if let (Some(hit), _) = cache.get(token) {
                // The cache is keyed by a 64-bit hash: the token itself confirms the hit.
                if &*hit.token == token
                    && hit.exp > now_secs()
                    && hit.generation == self.generation.load(Ordering::Acquire)
                {
                    return Ok(hit);
                }
            }
        }
        let verified = Arc::new(self.verify_uncached(token, agent_of)?);
        if let Some(cache) = &self.cache {
            let ttl = verified.exp.saturating_sub(now_secs());
            cache.put(token, verified.clone(), Some(Duration::from_secs(ttl)));
        }
        Ok(verified)
    }

    fn verify_uncached(&self, token: &str, agent_of: &AgentFor) -> Result<Verified, Refused> {
        use jsonwebtoken::errors::ErrorKind as E;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| Refused::Invalid("the token is not a well-formed JWT"))?;
        let generation = self.generation.load(Ordering::Acquire);
        let keys = self.keys.load();
        let key = match &header.kid {
            Some(kid) => keys.by_kid.get(kid).ok_or(Refused::UnknownKid)?,
            None => keys
                .no_kid
                .as_ref()
                .ok_or(Refused::Invalid("the token names no key (kid)"))?,
        };
        if header.alg != key.alg {
            return Err(Refused::Invalid(
                "the token's algorithm is not the one of its key",
            ));
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation).map_err(|e| {
                Refused::Invalid(match e.kind() {
                    E::ExpiredSignature => "the token has expired",
                    E::ImmatureSignature => "the token is not valid yet (nbf)",
                    E::InvalidIssuer => "the token's issuer is not accepted",
                    E::InvalidAudience => "the token's audience is not accepted",
                    E::InvalidSignature => "the token's signature does not verify",
                    E::InvalidAlgorithm => "the token's algorithm is not accepted",
                    E::MissingRequiredClaim(c) if c == "exp" => "the token has no expiry (exp)",
                    E::MissingRequiredClaim(_) => "the token lacks a required claim",
                    E::InvalidClaimFormat(_) => "a claim of the token has the wrong type",
                    _ => "the token is not a well-formed JWT",
                })
            })?;
        let claims = data.claims;
        let exp = claims
            .exp
            .filter(|e| e.is_finite() && *e > 0.0)
            .ok_or(Refused::Invalid("the token has no expiry (exp)"))? as u64;
        let longest = self.rules.expiry.as_secs();
        let lifetime = match claims.iat {
            Some(iat) if iat.is_finite() => exp.saturating_sub(iat.max(0.0) as u64),
            Some(_) => return Err(Refused::Invalid("a claim of the token has the wrong type")),
            None => exp
                .saturating_sub(now_secs())
                .saturating_sub(self.rules.leeway.as_secs()),
        };
        if lifetime > longest {
            return Err(Refused::Invalid(
                "the token's lifetime is longer than the gateway accepts (jwt.expiry)",
            ));
        }
        let id = claims
            .agent_id
            .or(claims.sub)
            .ok_or(Refused::Invalid("the token names no agent (sub)"))?;
        let scopes = match (claims.scopes, claims.scope) {
            (Some(list), _) => list,
            (None, Some(s)) => s.split_whitespace().map(str::to_string).collect(),
            (None, None) => Vec::new(),
        };
        let agent = agent_of(&id, scopes).ok_or(Refused::Invalid(
            "the token's agent id or scopes are not valid",
        ))?;
        let agent = AgentInfo::with_tools(agent, claims.tools.as_deref())
            .map_err(|_| Refused::Invalid("the token's tools are not valid globs"))?;
        Ok(Verified {
            token: token.into(),
            agent,
            exp,
            generation,
        })
    }

    /// Mints a token for an agent, valid for `ttl` (at most `expiry`).
    pub fn mint(&self, agent_id: &str, ttl: Duration) -> Result<String, String> {
        let signer = self
            .signer
            .as_ref()
            .ok_or("no signing key: the first JWT key has no secret or private_key_file")?;
        if ttl > self.rules.expiry {
            return Err(format!(
                "a lifetime of {}s is longer than jwt.expiry ({}s)",
                ttl.as_secs(),
                self.rules.expiry.as_secs()
            ));
        }
        let now = now_secs();
        let mut claims = serde_json::json!({
            "sub": agent_id,
            "iat": now,
            "exp": now + ttl.as_secs(),
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        if let Some(iss) = &self.rules.issuer {
            claims["iss"] = iss.clone().into();
        }
        if let Some(aud) = &self.rules.audience {
            claims["aud"] = aud.clone().into();
        }
        let mut header = Header::new(signer.alg);
        header.kid = signer.kid.clone();
        jsonwebtoken::encode(&header, &claims, &signer.key).map_err(|e| e.to_string())
    }
}

fn set_of(configured: &[Arc<Key>], extra: &[Arc<Key>]) -> KeySet {
    let mut set = KeySet::default();
    for k in extra.iter().chain(configured) {
        match &k.kid {
            Some(kid) => {
                set.by_kid.insert(kid.clone(), k.clone());
            }
            None => set.no_kid = Some(k.clone()),
        }
    }
    set
}

/// Refuses short or well-known placeholder HMAC secrets.
pub fn check_secret(secret: &str) -> Result<(), String> {
    let lower = secret.to_ascii_lowercase();
    const PLACEHOLDERS: &[&str] = &[
        "secret",
        "changeme",
        "change-me",
        "change_me",
        "your_jwt_secret",
        "your-jwt-secret",
        "placeholder",
    ];
    if PLACEHOLDERS
        .iter()
        .any(|p| lower == *p || lower.trim_matches(|c: char| !c.is_ascii_alphanumeric()) == *p)
        || PLACEHOLDERS
            .iter()
            .any(|p| lower.len() >= p.len() && lower.replace(p, "").is_empty())
    {
        return Err(
            "is a well-known placeholder; set a random secret of at least 32 bytes \
                    (e.g. openssl rand -base64 48)"
                .into(),
        );
    }
    if secret.len() < 32 {
        return Err(format!(
            "is {} bytes long; an HMAC secret must have at least 32 bytes",
            secret.len()
        ));
    }
    Ok(())
}

/// A verification (and, with a private key, signing) key from PEM files or a secret.
pub fn key_from_files(
    alg: Algorithm,
    public_pem: Option<&[u8]>,
    private_pem: Option<&[u8]>,
) -> Result<(DecodingKey, Option<EncodingKey>), String> {
    use jsonwebtoken::AlgorithmFamily as F;
    let public_pem = public_pem.ok_or("an asymmetric key needs public_key_file")?;
    let decoding = match alg.family() {
        F::Rsa => DecodingKey::from_rsa_pem(public_pem),
        F::Ec => DecodingKey::from_ec_pem(public_pem),
        F::Ed => DecodingKey::from_ed_pem(public_pem),
        F::Hmac => return Err("an HMAC key takes a secret, not a key file".into()),
    }
    .map_err(|e| format!("public_key_file is not a {alg:?} public key in PEM ({e})"))?;
    let encoding = private_pem
        .map(|pem| match alg.family() {
            F::Rsa => EncodingKey::from_rsa_pem(pem),
            F::Ec => EncodingKey::from_ec_pem(pem),
            _ => EncodingKey::from_ed_pem(pem),
        })
        .transpose()
        .map_err(|e| format!("private_key_file is not a {alg:?} private key in PEM ({e})"))?;
    Ok((decoding, encoding))
}

impl Jwt {
    /// Loads the JWKS keys; on failure the keys in use stay.
    pub async fn reload_jwks(&self) -> Result<usize, String> {
        let Some(jwks) = &self.jwks else {
            return Ok(0);
        };
        match jwks.fetch().await? {
            Some(specs) => {
                self.set_jwks_keys(&specs);
                Ok(specs.len())
            }
            None => Ok(self.keys().len()),
        }
    }

    /// A token named a `kid` we do not know: fetch the JWKS again, unless another request is
    /// doing it (then wait for it) or one did so within the cooldown. True when the kid is known
    /// afterwards.
    pub async fn refetch_for(&self, kid: &str) -> bool {
        let Some(jwks) = &self.jwks else {
            return false;
        };
        let mut last = jwks.refetch.lock().await;
        if self.keys().contains_kid(kid) {
            return true;
        }
        if last.is_some_and(|t| t.elapsed() < jwks.cooldown) {
            return false;
        }
        *last = Some(Instant::now());
        match self.reload_jwks().await {
            Ok(_) => self.keys().contains_kid(kid),
            Err(e) => {
                log::warn!("JWKS fetch failed, the known keys stay: {e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn jwt(expiry: u64) -> Jwt {
        let rules = Rules {
            issuer: Some("gw".into()),
            audience: None,
            expiry: Duration::from_secs(expiry),
            leeway: Duration::from_secs(30),
        };
        let spec = KeySpec {
            kid: None,
            alg: Algorithm::HS256,
            decoding: DecodingKey::from_secret(SECRET.as_bytes()),
            encoding: Some(EncodingKey::from_secret(SECRET.as_bytes())),
        };
        Jwt::new(rules, vec![spec], 100, None)
    }

    fn agent(id: &str, scopes: Vec<String>) -> Option<Arc<AgentInfo>> {
        AgentInfo::new(id, scopes).ok().map(Arc::new)
    }

    #[test]
    fn minted_tokens_verify_and_are_cached() {
        let j = jwt(3600);
        let t = j.mint("agent-a", Duration::from_secs(60)).unwrap();
        let v = j.verify(&t, &agent).unwrap();
        assert_eq!(&*v.agent.id, "agent-a");
        let again = j.verify(&t, &agent).unwrap();
        assert!(Arc::ptr_eq(&v, &again));
        assert!(j.mint("a", Duration::from_secs(7200)).is_err());
    }

    #[test]
    fn audience_is_required_when_configured() {
        let rules = Rules {
            issuer: None,
            audience: Some("agents".into()),
            expiry: Duration::from_secs(3600),
            leeway: Duration::from_secs(0),
        };
        let spec = KeySpec {
            kid: None,
            alg: Algorithm::HS256,
            decoding: DecodingKey::from_secret(SECRET.as_bytes()),
            encoding: Some(EncodingKey::from_secret(SECRET.as_bytes())),
        };
        let j = Jwt::new(rules, vec![spec], 0, None);
        let minted = j.mint("a", Duration::from_secs(60)).unwrap();
        assert!(j.verify(&minted, &agent).is_ok());
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let now = now_secs();
        for aud in [None, Some("others")] {
            let mut claims = serde_json::json!({"sub": "a", "iat": now, "exp": now + 60});
            if let Some(a) = aud {
                claims["aud"] = a.into();
            }
            let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
            assert!(j.verify(&t, &agent).is_err(), "{aud:?}");
        }
    }

    #[test]
    fn a_tools_claim_grants_agents_the_file_gives_none() {
        let j = jwt(3600);
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let now = now_secs();
        let token = |tools: serde_json::Value| {
            let claims = serde_json::json!({"sub": "a", "iss": "gw", "iat": now, "exp": now + 60, "tools": tools});
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
        };
        let v = j
            .verify(&token(serde_json::json!(["search_*"])), &agent)
            .unwrap();
        let grants = v.agent.tools.as_ref().expect("grants");
        assert!(grants.allows("search_web") && !grants.allows("delete_repo"));
        assert!(j.verify(&token(serde_json::json!(["!"])), &agent).is_err());
        // An agent with grants in the file keeps them: a token does not widen them.
        let narrow = |id: &str, scopes: Vec<String>| {
            let mut a = AgentInfo::new(id, scopes).ok()?;
            let g = crate::mcp::grants::Grants::compile(&["list_*".to_string()]).ok()?;
            a.tools = Some(Arc::new(g));
            Some(Arc::new(a))
        };
        let v = j.verify(&token(serde_json::json!(["*"])), &narrow).unwrap();
        assert!(!v.agent.tools.as_ref().unwrap().allows("delete_repo"));
    }

    #[test]
    fn placeholder_and_short_secrets_are_refused() {
        for s in [
            "secret",
            "changeme",
            "YOUR_JWT_SECRET",
            "short",
            &"changeme".repeat(5),
        ] {
            assert!(check_secret(s).is_err(), "{s}");
        }
        assert!(check_secret(SECRET).is_ok());
    }
}
