//! The gateway's MCP session id (`Mcp-Session-Id`) as a sealed token (DESIGN §5.2, §5.7).
//!
//! Any instance holding the key can open a token and route its requests: the token carries,
//! for each server of the route, the address of the backend that holds the session and the
//! server's own session id. Nothing is shared between instances and nothing is stored.
//!
//! A token is URL-safe base64 (no padding) of
//! `version (1) ‖ nonce (12) ‖ ChaCha20-Poly1305(legs) ‖ tag (16)`, the associated data being
//! the version byte and what the token is bound to (the caller's route and agent), so a token
//! issued on one route or to one agent opens nowhere else. The nonce is random: tokens are
//! issued by many instances under one key with no counter to share, and 96 random bits stay
//! far from collisions at the rate sessions are opened.
//!
//! The legs are `count (1)`, then for each `len (1) server`, `len (1) addr`,
//! `len+1 (2, big-endian; 0 when absent) session`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hmac;
use sha2::{Digest, Sha256};

/// The token format; a new one gets a new byte so that old tokens fail cleanly.
const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
/// A token longer than this is refused unread; `seal` never makes one (a header of 4 KB is
/// already more than some clients and proxies like).
pub const MAX_TOKEN: usize = 4096;
pub const MAX_LEGS: usize = 32;
/// A server's own session id, as the MCP spec leaves it unbounded.
pub const MAX_SERVER_SESSION: usize = 1024;

const HKDF_SALT: &[u8] = b"clawgate-mcp-session/1";
const HKDF_INFO: &[u8] = b"chacha20-poly1305 key";

/// Seals and opens session tokens under one key; built once per configuration.
#[derive(Clone)]
pub struct Sealer {
    /// Kept as bytes: ring's key is rebuilt per token, which copies it (a ChaCha20 key has no
    /// schedule) and spares a fallible constructor here; nothing is derived per request.
    key: [u8; 32],
}

/// Never shows the key.
impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { .. }")
    }
}

/// A gateway session: one leg per server of the route that the client has a session with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Session {
    pub servers: Vec<Leg>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// The server's name in the route's `mcp.servers`.
    pub server: String,
    /// The backend address (`ip:port`) that holds the server's session.
    pub addr: String,
    /// The server's own `Mcp-Session-Id`; none for a stateless server.
    pub session: Option<String>,
}

/// Why a session cannot be sealed; the caller answers without a session id, or with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// More than [`MAX_LEGS`] legs, a name or address over 255 bytes, a server session id over
    /// [`MAX_SERVER_SESSION`], or a token that would exceed [`MAX_TOKEN`].
    TooLarge,
    /// A server session id with other than visible ASCII (0x21–0x7E), which the MCP spec
    /// requires and which the gateway must send back to the server in a header.
    NotVisibleAscii,
    /// The system gave no randomness for the nonce.
    NoRandomness,
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SealError::TooLarge => "the MCP session is too large to seal",
            SealError::NotVisibleAscii => "an MCP server's session id is not visible ASCII",
            SealError::NoRandomness => "no randomness available for an MCP session token",
        })
    }
}

impl std::error::Error for SealError {}

impl Sealer {
    /// A sealer under `mcp.session_key`.
    pub fn new(key: [u8; 32]) -> Sealer {
        Sealer { key }
    }

    /// A sealer whose key is derived from `auth.jwt`'s first secret, so that instances with
    /// one configuration open each other's tokens; HKDF keeps the JWT secret itself out of the
    /// AEAD and the two keys independent.
    pub fn from_jwt_secret(secret: &[u8]) -> Sealer {
        Sealer::new(hkdf_sha256_32(HKDF_SALT, secret, HKDF_INFO))
    }

    /// A sealer under a fresh random key: affinity then holds within this process only.
    pub fn random() -> Result<Sealer, SealError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|_| SealError::NoRandomness)?;
        Ok(Sealer::new(key))
    }

    fn aead(&self) -> Option<LessSafeKey> {
        // Fails only for a key of the wrong length, which `[u8; 32]` rules out.
        let key = UnboundKey::new(&CHACHA20_POLY1305, &self.key).ok()?;
        Some(LessSafeKey::new(key))
    }

    /// The token for `session`, bound to `bind` (e.g. the route's path and the agent's id,
    /// joined with a separator that neither contains); visible ASCII only.
    pub fn seal(&self, session: &Session, bind: &str) -> Result<String, SealError> {
        let plain = encode(session)?;
        // base64 makes 4 characters of every 3 bytes.
        if (1 + NONCE_LEN + plain.len() + TAG_LEN).div_ceil(3) * 4 > MAX_TOKEN {
            return Err(SealError::TooLarge);
        }
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| SealError::NoRandomness)?;
        let mut body = plain;
        // Sealing fails only past ring's 256 GB message limit; the error stands in for that.
        let key = self.aead().ok_or(SealError::TooLarge)?;
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(bind)),
            &mut body,
        )
        .map_err(|_| SealError::TooLarge)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// The session a token carries, when this key sealed it with the same `bind`; `None` for
    /// anything else (forged, altered, truncated, oversized, another key or binding).
    pub fn open(&self, token: &str, bind: &str) -> Option<Session> {
        if token.len() > MAX_TOKEN {
            return None;
        }
        let mut raw = URL_SAFE_NO_PAD.decode(token).ok()?;
        if raw.len() < 1 + NONCE_LEN + TAG_LEN || raw[0] != VERSION {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&raw[1..1 + NONCE_LEN]).ok()?;
        let plain = (self.aead()?)
            .open_in_place(nonce, Aad::from(aad(bind)), &mut raw[1 + NONCE_LEN..])
            .ok()?;
        decode(plain)
    }
}

/// The version byte, then the binding.
fn aad(bind: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + bind.len());
    aad.push(VERSION);
    aad.extend_from_slice(bind.as_bytes());
    aad
}

/// RFC 5869 HKDF-SHA256 for one block of output (32 bytes): extract, then the first expand
/// step. Written on HMAC because ring's `hkdf` only hands its output to fallible key types.
fn hkdf_sha256_32(salt: &[u8], ikm: &[u8], info: &[u8]) -> [u8; 32] {
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, salt), ikm);
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()));
    ctx.update(info);
    ctx.update(&[1]);
    let mut okm = [0u8; 32];
    for (o, t) in okm.iter_mut().zip(ctx.sign().as_ref()) {
        *o = *t;
    }
    okm
}

/// For the access log's `mcp_session`: the first 12 hex digits of the token's SHA-256, enough
/// to follow one session through the log without writing a token anyone could replay.
pub fn digest(token: &str) -> String {
    let hash = Sha256::digest(token.as_bytes());
    hash.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// What the MCP spec allows in a session id; an empty one would be no header at all.
fn visible_ascii(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn encode(session: &Session) -> Result<Vec<u8>, SealError> {
    let count = u8::try_from(session.servers.len())
        .ok()
        .filter(|&n| usize::from(n) <= MAX_LEGS)
        .ok_or(SealError::TooLarge)?;
    let mut out = vec![count];
    for leg in &session.servers {
        for field in [&leg.server, &leg.addr] {
            let len = u8::try_from(field.len()).map_err(|_| SealError::TooLarge)?;
            out.push(len);
            out.extend_from_slice(field.as_bytes());
        }
        match &leg.session {
            None => out.extend_from_slice(&[0, 0]),
            Some(s) if s.len() > MAX_SERVER_SESSION => return Err(SealError::TooLarge),
            Some(s) if !visible_ascii(s) => return Err(SealError::NotVisibleAscii),
            Some(s) => {
                // Bounded by MAX_SERVER_SESSION above, so len + 1 fits in two bytes.
                let len = (s.len() + 1) as u16;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    Ok(out)
}

/// Strict: the authenticated bytes were written by `encode`, so anything else (a trailing
/// byte, a bound exceeded) means a bug or another format, and is refused.
fn decode(mut b: &[u8]) -> Option<Session> {
    let (&count, rest) = b.split_first()?;
    b = rest;
    if usize::from(count) > MAX_LEGS {
        return None;
    }
    let mut servers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let server = take_str(&mut b)?;
        let addr = take_str(&mut b)?;
        let session = match take(&mut b, 2)? {
            &[hi, lo] => match u16::from_be_bytes([hi, lo]) {
                0 => None,
                n => Some(take_utf8(&mut b, usize::from(n - 1))?),
            },
            _ => return None,
        };
        if session
            .as_ref()
            .is_some_and(|s| s.len() > MAX_SERVER_SESSION || !visible_ascii(s))
        {
            return None;
        }
        servers.push(Leg {
            server,
            addr,
            session,
        });
    }
    b.is_empty().then_some(Session { servers })
}

/// The next `n` bytes.
fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

/// A string with a one-byte length before it.
fn take_str(b: &mut &[u8]) -> Option<String> {
    let len = usize::from(*take(b, 1)?.first()?);
    take_utf8(b, len)
}

fn take_utf8(b: &mut &[u8], len: usize) -> Option<String> {
    String::from_utf8(take(b, len)?.to_vec()).ok()
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
