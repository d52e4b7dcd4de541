//! API-key digests and bearer tokens of any shape: refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

fn auth() -> &'static Arc<clawgate::auth::Auth> {
    static AUTH: OnceLock<Arc<clawgate::auth::Auth>> = OnceLock::new();
    AUTH.get_or_init(|| {
        let yaml = r#"
gateway: {listen: "127.0.0.1:1"}
auth: {jwt: {secret: "a-secret-of-more-than-thirty-two-bytes!!"}}
agents: {"a": {api_key: "key-a-0123456789"}}
routes: [{path: "/*", backend_url: "http://127.0.0.1:9"}]
"#;
        let cfg = clawgate::runtime::load_str(yaml, "a.yaml", PathBuf::from("/a.yaml"));
        cfg.expect("the fuzz config loads").auth.clone()
    })
}

fuzz_target!(|text: &str| {
    let _ = clawgate::auth::keys::parse_digest(text);
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {text}")) {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    assert!(auth().authenticate(&headers, clawgate::auth::Strategy::Jwt).is_err());
    if let Ok(v) = http::HeaderValue::from_str(text) {
        headers.insert("x-api-key", v);
        let _ = auth().authenticate(&headers, clawgate::auth::Strategy::ApiKey);
    }
});
