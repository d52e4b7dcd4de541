//! An identity provider's keys (JWKS), from a file or a URL: loaded at start, refreshed on a
//! schedule, and fetched again (once, for everyone waiting) when a token names an unknown `kid`.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// A JWKS document larger than this is refused.
const MAX_JWKS_BYTES: usize = 1 << 20;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A key as configured, before it joins a key set.
pub struct KeySpec {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub decoding: DecodingKey,
    pub encoding: Option<EncodingKey>,
}

pub enum Source {
    File(PathBuf),
    Url(String),
}

pub struct Jwks {
    pub source: Source,
    pub refresh: Duration,
    pub cooldown: Duration,
    /// When a token with an unknown `kid` last caused a fetch; held while one runs.
    pub(super) refetch: tokio::sync::Mutex<Option<Instant>>,
    /// The SHA-256 of the document in use: an unchanged document changes nothing.
    last: std::sync::Mutex<Option<[u8; 32]>>,
}

impl Jwks {
    pub fn new(source: Source, refresh: Duration, cooldown: Duration) -> Jwks {
        Jwks {
            source,
            refresh,
            cooldown,
            refetch: tokio::sync::Mutex::new(None),
            last: std::sync::Mutex::new(None),
        }
    }

    pub fn describe(&self) -> String {
        match &self.source {
            Source::File(p) => p.display().to_string(),
            Source::Url(u) => u.clone(),
        }
    }

    /// Reads the keys now; `None` when the document is the one already in use.
    pub async fn fetch(&self) -> Result<Option<Vec<KeySpec>>, String> {
        let body = match &self.source {
            Source::File(p) => tokio::fs::read(p)
                .await
                .map_err(|e| format!("{}: {}", p.display(), crate::text::io_reason(&e)))?,
            Source::Url(u) => fetch_url(u).await?,
        };
        let digest = super::keys::sha256(&body);
        let specs = parse(&body)?;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if *last == Some(digest) {
            return Ok(None);
        }
        *last = Some(digest);
        Ok(Some(specs))
    }

    /// Remembers the document loaded at start (from `jwks_file`).
    pub fn loaded(&self, body: &[u8]) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(super::keys::sha256(body));
    }
}

/// The verification keys of a JWKS document. Keys without `kid`, symmetric keys and unknown
/// types are skipped: a provider publishes public keys, each with its id.
pub fn parse(body: &[u8]) -> Result<Vec<KeySpec>, String> {
    let set: JwkSet =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut out = Vec::new();
    for jwk in &set.keys {
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let alg = match &jwk.common.key_algorithm {
            Some(a) => match Algorithm::from_str(&format!("{a:?}")) {
                Ok(a) => a,
                Err(_) => continue,
            },
            None => match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => {
                    Algorithm::ES384
                }
                AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                _ => continue,
            },
        };
        if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
            || alg.family() == jsonwebtoken::AlgorithmFamily::Hmac
        {
            continue;
        }
        let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        out.push(KeySpec {
            kid: Some(kid),
            alg,
            decoding,
            encoding: None,
        });
    }
    Ok(out)
}

/// GET over HTTP(S) with Pingora's own client; bounded in time and size.
async fn fetch_url(url: &str) -> Result<Vec<u8>, String> {
    use crate::http_client::{exchange, Call, Target};
    let fail = |why: String| format!("{url}: {why}");
    let target = Target::resolve(url, FETCH_TIMEOUT).await.map_err(fail)?;
    let connector = pingora::connectors::http::Connector::new(None);
    let call = Call {
        method: "GET",
        headers: &[("accept", "application/json")],
        body: None,
        max_answer: MAX_JWKS_BYTES,
    };
    match exchange(&connector, &target, call, FETCH_TIMEOUT).await {
        Ok((200, body)) => Ok(body),
        Ok((status, _)) => Err(fail(format!("answered {status}"))),
        Err(e) if e.starts_with("the answer is larger") => {
            Err(fail("the document is larger than 1 MiB".into()))
        }
        Err(e) => Err(fail(e)),
    }
}
