//! Identity: JWT checks and rotation, JWKS, API keys and the key store, scopes, the token
//! endpoint, and what reaches the backend.

mod common;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SECRET: &str = "test-secret-0123456789abcdef-0123456789";
const OLD_SECRET: &str = "old-secret-abcdefghijklmnopqrstuvwxyz-0123";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

fn hs(secret: &str, kid: Option<&str>, claims: Value) -> String {
    sign(
        Algorithm::HS256,
        kid,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

fn good_claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": "clawgate-test", "iat": now(), "exp": now() + 600})
}

fn jwt_yaml(with_old_key: bool) -> String {
    let old = if with_old_key {
        format!("      - {{kid: \"old\", secret: \"{OLD_SECRET}\"}}\n")
    } else {
        String::new()
    };
    format!(
        r#"
gateway:
  listen: "{{listen}}"
  pid_file: "{{dir}}/p.pid"
  upgrade_sock: "{{dir}}/u.sock"
auth:
  strategy: jwt
  jwt:
    secret: "{SECRET}"
    issuer: "clawgate-test"
    expiry: "1h"
    leeway: "5s"
    keys:
{old}      - {{kid: "rsa", algorithm: "RS256", public_key_file: "{rsa}"}}
routes:
  - path: "/open/*"
    backend_url: "{{backend}}"
  - path: "/jwt/*"
    backend_url: "{{backend}}"
    auth_required: true
"#,
        rsa = fixture("rsa-test-public.pem")
    )
}

async fn call(url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut rb = client().get(url);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb.send().await.expect("request");
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.json().await.unwrap_or(Value::Null))
}

async fn bearer(g: &Gateway, path: &str, token: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    call(
        &g.url(path),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

#[tokio::test]
async fn every_jwt_check_refuses_its_bad_token() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(&jwt_yaml(true), &backend.url());
    let rsa_private =
        EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-test-private.pem")).unwrap())
            .unwrap();
    let rsa_public = std::fs::read(fixture("rsa-test-public.pem")).unwrap();

    // The good ones first: HS256 without kid, the old kid, RS256.
    for token in [
        hs(SECRET, None, good_claims("agent-hs")),
        hs(OLD_SECRET, Some("old"), good_claims("agent-hs")),
        sign(
            Algorithm::RS256,
            Some("rsa"),
            &good_claims("agent-hs"),
            &rsa_private,
        ),
    ] {
        let (status, _, v) = bearer(&g, "/jwt/echo", &token).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["headers"]["x-agent-id"], "agent-hs");
        assert!(
            v["headers"].get("authorization").is_none(),
            "credentials forwarded: {v}"
        );
    }

    let good = hs(SECRET, None, good_claims("a"));
    let parts: Vec<&str> = good.split('.').collect();
    let tampered_payload = b64(
        json!({"sub": "admin", "iss": "clawgate-test", "iat": now(), "exp": now() + 600})
            .to_string()
            .as_bytes(),
    );
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let mut lifetime = good_claims("a");
    lifetime["exp"] = json!(now() + 7200);
    let mut no_exp = good_claims("a");
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut expired = good_claims("a");
    expired["exp"] = json!(now() - 120);
    expired["iat"] = json!(now() - 600);
    let mut nbf = good_claims("a");
    nbf["nbf"] = json!(now() + 600);
    let mut wrong_iss = good_claims("a");
    wrong_iss["iss"] = json!("someone-else");

    let cases: Vec<(&str, String)> = vec![
        ("expired", hs(SECRET, None, expired)),
        ("nbf in the future", hs(SECRET, None, nbf)),
        ("wrong issuer", hs(SECRET, None, wrong_iss)),
        (
            "tampered payload",
            format!("{}.{}.{}", parts[0], tampered_payload, parts[2]),
        ),
        ("alg none", format!("{none_header}.{}.", parts[1])),
        (
            "alg none with signature",
            format!("{none_header}.{}.{}", parts[1], parts[2]),
        ),
        (
            "HS256 with another secret",
            hs(
                "another-secret-that-is-long-enough-000000",
                None,
                good_claims("a"),
            ),
        ),
        (
            "RS256 key, HS256 token signed with the public key",
            sign(
                Algorithm::HS256,
                Some("rsa"),
                &good_claims("a"),
                &EncodingKey::from_secret(&rsa_public),
            ),
        ),
        ("lifetime over expiry", hs(SECRET, None, lifetime)),
        ("missing exp", hs(SECRET, None, no_exp)),
        ("garbage base64", "@@@.!!!.###".to_string()),
        ("not a JWT", "just-a-string".to_string()),
        ("unknown kid", hs(SECRET, Some("nope"), good_claims("a"))),
        ("16 KB token", "A".repeat(16 * 1024)),
    ];
    for (what, token) in &cases {
        let (status, headers, v) = bearer(&g, "/jwt/echo", token).await;
        assert_eq!(status, 401, "{what}: {v}");
        assert_json_error(&v, 401, "unauthorized");
        let challenge = headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
        let text = v.to_string();
        assert!(
            !text.contains(&token[..token.len().min(40)]),
            "{what}: the token is echoed: {text}"
        );
    }
    // Nothing refused reached the backend; the next good request works.
    assert_eq!(backend.stats.total.load(Ordering::Relaxed), 3);
    let (status, _, _) = bearer(&g, "/jwt/echo", &good).await;
    assert_eq!(status, 200);

    // Missing credentials: 401 with a challenge; open routes pass the client's headers on.
    let (status, headers, v) = call(&g.url("/jwt/echo"), &[]).await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"clawgate\"");
    let (status, _, v) = call(
        &g.url("/open/echo"),
        &[
            ("authorization", "Bearer for-the-backend"),
            ("x-agent-id", "forged"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["headers"]["authorization"], "Bearer for-the-backend");
    assert!(v["headers"].get("x-agent-id").is_none(), "{v}");

    // Rotation: once the old kid is removed from the configuration, its tokens are refused.
    drop(g);
    let g = Gateway::start(&jwt_yaml(false), &backend.url());
    let (status, _, v) = bearer(
        &g,
        "/jwt/echo",
        &hs(OLD_SECRET, Some("old"), good_claims("a")),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    let (status, _, _) = bearer(&g, "/jwt/echo", &good).await;
    assert_eq!(status, 200);
}

/// A JWKS endpoint whose document the test changes, and which counts its fetches.
struct JwksServer {
    url: String,
    doc: Arc<Mutex<String>>,
    fetches: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl JwksServer {
    fn start(doc: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let doc = Arc::new(Mutex::new(doc));
        let fetches = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d, f, s) = (doc.clone(), fetches.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return; // dropping the listener closes the port
                }
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                f.fetch_add(1, Ordering::SeqCst);
                // Slow enough that concurrent requests overlap the fetch.
                std::thread::sleep(Duration::from_millis(100));
                let body = d.lock().unwrap().clone();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        JwksServer {
            url,
            doc,
            fetches,
            stop,
        }
    }

    fn publish(&self, keys: &[&Value]) {
        *self.doc.lock().unwrap() = json!({ "keys": keys }).to_string();
    }

    fn shut_down(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag and drops the listener.
        let addr = self
            .url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let _ = std::net::TcpStream::connect(addr);
    }
}

/// The statuses of `n` requests sent at once with a bearer token.
async fn concurrently(n: usize, url: &str, token: &str) -> Vec<u16> {
    let calls = (0..n).map(|_| {
        let (url, t) = (url.to_string(), token.to_string());
        tokio::spawn(async move {
            client()
                .get(url)
                .bearer_auth(t)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap_or(0))
        .collect()
}

/// An Ed25519 key: its JWK (public) and its signing key.
fn ed_key(kid: &str) -> (Value, EncodingKey) {
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let jwk = json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": kid, "x": b64(kp.public_key_raw())});
    let enc = EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap();
    (jwk, enc)
}

#[tokio::test]
async fn jwks_keys_are_fetched_once_for_new_kids_and_survive_the_provider_going_down() {
    let backend = mock_backend::spawn();
    let (jwk_a, key_a) = ed_key("a");
    let (jwk_b, key_b) = ed_key("b");
    let (jwk_c, key_c) = ed_key("c");
    let server = JwksServer::start(String::new());
    server.publish(&[&jwk_a]);
    let yaml = format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
auth:
  jwt: {{jwks_url: "{}", jwks_refresh: "1h", jwks_cooldown: "1s", issuer: "clawgate-test", expiry: "1h"}}
routes:
  - {{path: "/*", backend_url: "{{backend}}", auth_required: true, auth_strategy: jwt}}
"#,
        server.url
    );
    let g = Gateway::start(&yaml, &backend.url());
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "fetched at start");
    let token = |kid: &str, key: &EncodingKey| {
        sign(Algorithm::EdDSA, Some(kid), &good_claims("idp-agent"), key)
    };

    let (status, _, v) = bearer(&g, "/echo", &token("a", &key_a)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["headers"]["x-agent-id"], "idp-agent");

    // A key published after start verifies on its first request.
    server.publish(&[&jwk_a, &jwk_b]);
    let (status, _, v) = bearer(&g, "/echo", &token("b", &key_b)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);

    // 100 concurrent tokens naming a new kid cause one fetch.
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the cooldown
    server.publish(&[&jwk_a, &jwk_b, &jwk_c]);
    let statuses = concurrently(100, &g.url("/echo"), &token("c", &key_c)).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        3,
        "one fetch for 100 requests"
    );

    // Unknown kids within the cooldown cause no fetch at all.
    let (other, other_key) = ed_key("never-published");
    let _ = other;
    let statuses = concurrently(20, &g.url("/echo"), &token("never-published", &other_key)).await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert!(server.fetches.load(Ordering::SeqCst) <= 4);

    // The provider goes down: the known keys keep working, unknown ones are refused.
    server.shut_down();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _, _) = bearer(&g, "/echo", &token("never-published", &other_key)).await;
    assert_eq!(status, 401);
    for (kid, key) in [("a", &key_a), ("b", &key_b), ("c", &key_c)] {
        let (status, _, v) = bearer(&g, "/echo", &token(kid, key)).await;
        assert_eq!(status, 200, "{kid}: {v}");
    }
}

const AGENTS: &str = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock", base_path: "/api/v1"}
agents:
  "finance-agent": {api_key: "fk_1234567890abcdef", scopes: ["/api/v1/finance/*"]}
  "hr-agent": {api_key: "hr_abcdef1234567890", scopes: ["/api/v1/hr/*"]}
  "data-agent": {api_key: "da_9876543210fedcba", scopes: ["/api/v1/data/*", "/api/v1/analytics/*"]}
routes:
  - {path: "/finance/*", backend_url: "{backend}", allowed_agents: ["finance-agent"]}
  - {path: "/hr/*", backend_url: "HR_BACKEND", allowed_agents: ["hr-agent"]}
  - {path: "/data/*", backend_url: "{backend}", allowed_agents: ["data-agent", "finance-agent"]}
  - {path: "/analytics/*", backend_url: "{backend}", auth_required: true}
  - {path: "/open/*", backend_url: "{backend}"}
"#;

#[tokio::test]
async fn scopes_and_allowed_agents_cannot_be_escaped_by_path_tricks() {
    let backend = mock_backend::spawn();
    let hr = mock_backend::spawn();
    let g = Gateway::start(&AGENTS.replace("HR_BACKEND", &hr.url()), &backend.url());
    let fin = ("x-api-key", "fk_1234567890abcdef");
    let hr_key = ("x-api-key", "hr_abcdef1234567890");
    let data = ("x-api-key", "da_9876543210fedcba");

    for (path, key, want) in [
        ("/api/v1/finance/report", fin, 200),
        ("/api/v1/data/q", fin, 200),
        ("/api/v1/data/q", data, 200),
        ("/api/v1/hr/x", fin, 403),
        ("/api/v1/data/q", hr_key, 403),
        ("/api/v1/finance/x", data, 403),
        // No allowed_agents: scopes decide.
        ("/api/v1/analytics/x", data, 200),
        ("/api/v1/analytics/x", fin, 403),
        ("/api/v1/finance/x", ("x-api-key", "fk_wrong"), 401),
    ] {
        let (status, _, v) = call(&g.url(path), &[key]).await;
        assert_eq!(status, want, "{path} with {}: {v}", key.1);
        if want == 200 {
            let agent = v["headers"]["x-agent-id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(agent.ends_with("-agent"), "{v}");
            assert!(
                v["headers"].get("x-api-key").is_none(),
                "the key reached the backend: {v}"
            );
        } else {
            assert_json_error(
                &v,
                want,
                if want == 403 {
                    "forbidden"
                } else {
                    "unauthorized"
                },
            );
        }
    }
    let hr_before = hr.stats.total.load(Ordering::Relaxed);
    assert_eq!(hr_before, 0);

    for trick in [
        "/api/v1/finance/../hr/x",
        "/api/v1/finance/%2e%2e/hr/x",
        "/api/v1/finance/%2E%2E/hr/x",
        "/api/v1/finance/..%2fhr/x",
        "/api/v1/finance/..%2Fhr/x",
        "//api/v1/hr/x",
        "/api/v1/finance/./../hr/x",
        "/api/v1/finance/.%2e/hr/x",
        "/api/v1//hr/x",
    ] {
        let req = format!(
            "GET {trick} HTTP/1.1\r\nHost: gw\r\nX-API-Key: fk_1234567890abcdef\r\nConnection: close\r\n\r\n"
        );
        let answer = raw(g.addr, req.as_bytes(), Duration::from_secs(5));
        let status = status_of(&answer);
        assert!(status == 403 || status == 400, "{trick}: {answer}");
        assert_json_error(
            &json_of(&answer),
            status,
            if status == 403 {
                "forbidden"
            } else {
                "bad_request"
            },
        );
    }
    assert_eq!(
        hr.stats.total.load(Ordering::Relaxed),
        0,
        "a trick reached the hr backend"
    );

    // The hr agent itself gets through; a forged X-Agent-ID is replaced.
    let (status, _, v) = call(
        &g.url("/api/v1/hr/x"),
        &[hr_key, ("x-agent-id", "finance-agent")],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["headers"]["x-agent-id"], "hr-agent");
    assert_eq!(hr.stats.total.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn transforms_and_credential_injection_reach_the_backend() {
    let backend = mock_backend::spawn();
    let yaml = r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
auth:
  api_key: {header: "X-Agent-Key"}
agents:
  "bot": {api_key_sha256: "SHA"}
transforms:
  request:
    - {type: add_header, header: X-Request-ID, value: auto-generate-uuid}
    - {type: set_header, header: X-Caller, value: "${agent_id} via ${route}"}
    - {type: remove_header, header: X-Debug}
  response:
    - {type: add_header, header: X-Served-For, value: "${agent_id}"}
    - {type: add_header, header: X-RateLimit-Remaining, value: "${rate_limit_remaining}"}
routes:
  - path: "/llm/*"
    name: "llm"
    backend_url: "{backend}"
    auth_required: true
    transforms:
      request:
        - {type: inject_auth, source: secret, value: "Bearer ${PROVIDER_KEY}"}
  - path: "/tools/*"
    name: "tools"
    backend_url: "{backend}"
    auth_required: true
    transforms:
      request:
        - {type: inject_auth, source: agent_api_key, header: X-Upstream-Key}
"#;
    let digest = clawgate::auth::keys::hex(&clawgate::auth::keys::sha256(b"bot-key-1"));
    let g = Gateway::start_with(
        &yaml.replace("SHA", &digest),
        &backend.url(),
        &[("PROVIDER_KEY", "sk-provider-secret")],
    );
    let (status, headers, v) = call(
        &g.url("/llm/echo"),
        &[
            ("x-agent-key", "bot-key-1"),
            ("x-debug", "1"),
            ("x-request-id", "client-id-1"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let h = &v["headers"];
    assert_eq!(h["authorization"], "Bearer sk-provider-secret");
    assert!(h.get("x-agent-key").is_none(), "{v}");
    assert!(h.get("x-debug").is_none(), "{v}");
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(h["x-caller"], "bot via llm");
    assert_eq!(h["x-agent-id"], "bot");
    assert_eq!(headers["x-served-for"], "bot");
    assert_eq!(headers["x-request-id"], "client-id-1");
    assert!(
        headers.get("x-ratelimit-remaining").is_none(),
        "no limit applies: skipped"
    );
    assert!(headers.get("authorization").is_none());

    let (status, _, v) = call(&g.url("/tools/echo"), &[("x-agent-key", "bot-key-1")]).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["headers"]["x-upstream-key"], "bot-key-1");
    assert!(v["headers"].get("authorization").is_none(), "{v}");
}

fn keystore_yaml() -> &'static str {
    r#"
gateway: {listen: "{listen}", pid_file: "{dir}/p.pid", upgrade_sock: "{dir}/u.sock"}
auth:
  jwt: {secret: "test-secret-0123456789abcdef-0123456789", expiry: "1h", issuer: "clawgate-test"}
  api_key: {keys_store: "{dir}/keys.json"}
routes:
  - {path: "/k/*", backend_url: "{backend}", auth_required: true, auth_strategy: api_key}
  - {path: "/j/*", backend_url: "{backend}", auth_required: true, auth_strategy: jwt}
  - {path: "/scoped/*", backend_url: "{backend}", auth_required: true}
"#
}

async fn wait_status(url: &str, key: &str, want: u16) -> Duration {
    let start = Instant::now();
    loop {
        let (status, _, _) = call(url, &[("x-api-key", key)]).await;
        if status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still {status}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn key_store_edits_apply_without_restart_and_the_token_endpoint_mints_jwts() {
    let backend = mock_backend::spawn();
    let g = Gateway::start(keystore_yaml(), &backend.url());
    let cfg = g.config_str().to_string();

    // No store file yet: every key is refused.
    let (status, headers, _) = call(&g.url("/k/echo"), &[("x-api-key", "cg_nothing")]).await;
    assert_eq!(status, 401);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("x-api-key"));

    let out = clawgate(&["keys", "add", "--config", &cfg, "--agent", "bot"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("cg_") && key.len() > 40, "{key}");
    let store = std::fs::read_to_string(g.dir.path().join("keys.json")).unwrap();
    assert!(!store.contains(&key), "the store holds the key itself");
    let took = wait_status(&g.url("/k/echo"), &key, 200).await;
    assert!(took < Duration::from_secs(2), "picked up after {took:?}");
    eprintln!("key added: usable after {took:?}");

    // A scoped key and the list.
    let out = clawgate(&[
        "keys", "add", "--config", &cfg, "--agent", "narrow", "--scope", "/k/*",
    ]);
    let narrow = String::from_utf8(out.stdout).unwrap().trim().to_string();
    wait_status(&g.url("/k/echo"), &narrow, 200).await;
    let (status, _, _) = call(&g.url("/scoped/echo"), &[("x-api-key", &narrow)]).await;
    assert_eq!(status, 403);
    let list = clawgate(&["keys", "list", "--config", &cfg]);
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(
        list.contains("bot") && list.contains("narrow") && !list.contains(&key),
        "{list}"
    );

    // The token endpoint: a JWT for the key's agent, accepted on JWT routes.
    let r = client()
        .post(g.url("/auth/token"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    let token = v["access_token"].as_str().unwrap().to_string();
    let (status, _, v) = bearer(&g, "/j/echo", &token).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["headers"]["x-agent-id"], "bot");
    let r = client()
        .post(g.url("/auth/token"))
        .header("x-api-key", "cg_bad")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client()
        .get(g.url("/auth/token"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);

    // The CLI mints tokens too, never longer than expiry.
    let out = clawgate(&[
        "token",
        "--config",
        &cfg,
        "--agent",
        "cli-agent",
        "--ttl",
        "10m",
    ]);
    assert!(out.status.success());
    let cli_token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (status, _, v) = bearer(&g, "/j/echo", &cli_token).await;
    assert_eq!(status, 200);
    assert_eq!(v["headers"]["x-agent-id"], "cli-agent");
    let out = clawgate(&[
        "token",
        "--config",
        &cfg,
        "--agent",
        "cli-agent",
        "--ttl",
        "2h",
    ]);
    assert_eq!(out.status.code(), Some(2));

    // A broken store keeps the last good keys; revoking applies without restart.
    let path = g.dir.path().join("keys.json");
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _, _) = call(&g.url("/k/echo"), &[("x-api-key", &key)]).await;
    assert_eq!(status, 200, "a broken store dropped the keys");
    std::fs::write(&path, good).unwrap();
    let out = clawgate(&["keys", "revoke", "--config", &cfg, "--agent", "bot"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = wait_status(&g.url("/k/echo"), &key, 401).await;
    assert!(took < Duration::from_secs(2), "revoked after {took:?}");
    let (status, _, v) = call(&g.url("/k/echo"), &[("x-api-key", &key)]).await;
    assert_eq!(status, 401);
    assert_eq!(v["message"], "the API key is revoked");
}

#[test]
fn weak_secrets_and_broken_auth_settings_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, want) in [
        ("auth:\n  jwt: {secret: \"short\"}\n", "auth.jwt.secret"),
        ("auth:\n  jwt: {secret: \"YOUR_JWT_SECRET\"}\n", "placeholder"),
        ("auth:\n  jwt: {secret: \"changemechangemechangemechangeme\"}\n", "placeholder"),
        ("auth:\n  strategy: jwt\n", "auth.strategy"),
        (
            "auth:\n  jwt:\n    keys:\n      - {kid: \"k\", algorithm: \"RS256\", secret: \"0123456789abcdef0123456789abcdef\"}\n",
            "auth.jwt.keys[0].secret",
        ),
        ("auth:\n  jwt:\n    keys:\n      - {kid: \"k\", algorithm: \"none\", secret: \"x\"}\n", "keys[0].algorithm"),
        ("agents:\n  a: {api_key_sha256: \"abc\"}\n", "agents.a.api_key_sha256"),
        ("agents:\n  a: {scopes: [\"finance\"]}\n", "agents.a.scopes[0]"),
        (
            "routes:\n  - {path: \"/x\", backend_url: \"http://127.0.0.1:1\", auth_strategy: jwt}\n",
            "routes[0].auth_strategy",
        ),
        (
            "transforms:\n  request:\n    - {type: set_header, header: X-A, value: \"${nope}\"}\n",
            "transforms.request[0].value",
        ),
    ] {
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = clawgate(&["check", "--config", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {err}");
        assert!(err.contains(want), "{yaml}: {err}");
        assert!(err.contains("c.yaml:"), "{err}");
    }
}

/// `curl -k` over HTTPS (the test client has no TLS): status, response head, JSON body.
fn curl(url: &str, port: u16, headers: &[&str]) -> (u16, String, Value) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sk", "-D", "-", "--resolve"])
        .arg(format!("localhost:{port}:127.0.0.1"));
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.arg(url).output().expect("curl is installed by .ci/run");
    let text = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    (
        status_of(head),
        head.to_ascii_lowercase(),
        serde_json::from_str(body.trim()).unwrap_or(Value::Null),
    )
}

#[test]
fn the_articles_multi_agent_config_runs_as_written() {
    let finance = mock_backend::spawn();
    let hr = mock_backend::spawn();
    let data = mock_backend::spawn();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = std::process::Command::new(BIN)
        .args(["start", "--config"])
        .arg(conf_dir().join("multi-agent-gateway.yaml"))
        .envs([
            ("CLAWGATE_LISTEN", listen.as_str()),
            ("CLAWGATE_TLS_CERT", cert.as_str()),
            ("CLAWGATE_TLS_KEY", key.as_str()),
            ("FINANCE_BACKEND_URL", finance.url().as_str()),
            ("HR_BACKEND_URL", hr.url().as_str()),
            ("DATA_BACKEND_URL", data.url().as_str()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed when the test ends, also when it fails.
    let mut g = Gateway {
        child: Some(child),
        addr: listen.parse().unwrap(),
        dir,
        config: conf_dir().join("multi-agent-gateway.yaml"),
        base: String::new(),
    };
    let child = g.child.as_mut().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&listen).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("clawgate exited ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "not listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = |p: &str| format!("https://localhost:{port}{p}");
    let fin = "X-API-Key: fk_1234567890abcdef";
    let hr_key = "X-API-Key: hr_abcdef1234567890";
    let data_key = "X-API-Key: da_9876543210fedcba";

    let data_since = Instant::now();
    for (path, key, want, backend) in [
        ("/api/v1/finance/ledger", fin, 200, &finance),
        ("/api/v1/hr/people", hr_key, 200, &hr),
        ("/api/v1/data/q", data_key, 200, &data),
        ("/api/v1/data/q", fin, 200, &data),
    ] {
        let before = backend.stats.total.load(Ordering::Relaxed);
        let (status, head, v) = curl(&url(path), port, &[key]);
        assert_eq!(status, want, "{path} {key}: {head} {v}");
        assert_eq!(backend.stats.total.load(Ordering::Relaxed), before + 1);
        let h = &v["headers"];
        // inject_auth (agent_api_key) forwards the agent's own key; X-Request-ID is the gateway's.
        assert_eq!(h["x-api-key"], key.trim_start_matches("X-API-Key: "), "{v}");
        assert!(h["x-agent-id"].as_str().unwrap().ends_with("-agent"), "{v}");
        let id = head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap();
        assert_eq!(h["x-request-id"], id);
        // The response transform and the gateway's own header make one line.
        assert_eq!(head.matches("x-ratelimit-remaining:").count(), 1, "{head}");
    }
    let (_, head, _) = curl(&url("/api/v1/finance/ledger"), port, &[fin]);
    // finance-agent's third request (finance, data, finance) of its 500/minute: 497 left, or a
    // little more when tokens refilled meanwhile (one every 0.12 s).
    let left: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("x-ratelimit-remaining: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!((497..=499).contains(&left), "{head}");
    assert!(head.contains("x-ratelimit-limit: 500"), "{head}");

    for (path, key, want) in [
        ("/api/v1/data/q", hr_key, 403),
        ("/api/v1/hr/people", fin, 403),
        ("/api/v1/finance/ledger", data_key, 403),
        ("/api/v1/finance/ledger", "X-Other: 1", 401),
    ] {
        let (status, _, v) = curl(&url(path), port, &[key]);
        assert_eq!(status, want, "{path} {key}: {v}");
    }
    assert_eq!(hr.stats.total.load(Ordering::Relaxed), 1);

    // data-agent's 100/minute: a burst of 100, then one token every 0.6 s. One was used above
    // (refusals by scope take nothing); of 130 more, the burst passes, plus what refilled meanwhile.
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sk", "-w", "%{http_code}\n", "--resolve"])
        .arg(format!("localhost:{port}:127.0.0.1"))
        .args(["-H", data_key]);
    for _ in 0..130 {
        cmd.args(["-o", "/dev/null"]).arg(url("/api/v1/data/q"));
    }
    let out = String::from_utf8(cmd.output().unwrap().stdout).unwrap();
    let refilled = (data_since.elapsed().as_secs_f64() / 0.6).floor() as usize;
    let passed = out.lines().filter(|c| *c == "200").count() + 1;
    let refused = out.lines().filter(|c| *c == "429").count();
    assert_eq!(passed - 1 + refused, 130, "{out}");
    assert!(
        (100..=100 + refilled).contains(&passed),
        "{passed} passed, {refilled} refilled"
    );
    let (mut status, mut head, mut v) = curl(&url("/api/v1/data/q"), port, &[data_key]);
    // A token refills every 0.6 s, also right after the burst on a slow machine: then this
    // request passes, still within what refilled since the first request, and the next one
    // is refused.
    let mut extra = 0;
    for _ in 0..3 {
        if status == 429 {
            break;
        }
        extra += 1;
        let refilled = (data_since.elapsed().as_secs_f64() / 0.6).floor() as usize;
        assert!(
            passed + extra <= 100 + refilled,
            "{passed} + {extra} passed: {v}"
        );
        (status, head, v) = curl(&url("/api/v1/data/q"), port, &[data_key]);
    }
    assert_eq!(status, 429);
    assert_json_error(&v, 429, "rate_limited");
    let retry: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("retry-after: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(retry, 1, "one token every 0.6 s: {head}");
    // finance-agent's own bucket is untouched by data-agent's refusals.
    let (status, _, _) = curl(&url("/api/v1/data/q"), port, &[fin]);
    assert_eq!(status, 200);
}

#[tokio::test]
async fn jwks_file_keys_verify_and_are_read_again_on_schedule() {
    let backend = mock_backend::spawn();
    let (jwk_a, key_a) = ed_key("file-a");
    let (jwk_b, key_b) = ed_key("file-b");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, json!({ "keys": [jwk_a] }).to_string()).unwrap();
    let yaml = format!(
        r#"
gateway: {{listen: "{{listen}}", pid_file: "{{dir}}/p.pid", upgrade_sock: "{{dir}}/u.sock"}}
auth:
  jwt: {{jwks_file: "{}", jwks_refresh: "300ms", expiry: "1h"}}
routes:
  - {{path: "/*", backend_url: "{{backend}}", auth_strategy: jwt}}
"#,
        path.display()
    );
    let g = Gateway::start(&yaml, &backend.url());
    let claims = json!({"sub": "file-agent", "iat": now(), "exp": now() + 600});
    let a = sign(Algorithm::EdDSA, Some("file-a"), &claims, &key_a);
    let b = sign(Algorithm::EdDSA, Some("file-b"), &claims, &key_b);
    let (status, _, v) = bearer(&g, "/echo", &a).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["headers"]["x-agent-id"], "file-agent");
    // EdDSA key, token claiming HS256 with the same kid: refused.
    let forged = hs(SECRET, Some("file-a"), claims.clone());
    assert_eq!(bearer(&g, "/echo", &forged).await.0, 401);

    // Rotation through the file: b appears, a disappears.
    std::fs::write(&path, json!({ "keys": [jwk_b] }).to_string()).unwrap();
    let start = Instant::now();
    while bearer(&g, "/echo", &b).await.0 != 200 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "file-b never verified"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    while bearer(&g, "/echo", &a).await.0 != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "file-a still verifies"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
