//! clawgate: an API gateway for AI-agent traffic on Pingora.

pub mod admin;
pub mod auth;
pub mod backends;
pub mod cache;
pub mod client_addr;
pub mod config;
pub mod http_client;
pub mod limits;
pub mod matching;
pub mod observe;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod random;
pub mod redis_link;
pub mod reload;
pub mod request_id;
pub mod respond;
pub mod router;
pub mod runtime;
pub mod server;
pub mod shards;
pub mod starter;
pub mod text;
pub mod transforms;
pub mod upstream;
