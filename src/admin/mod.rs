//! The operator's side: CLI helpers over a configuration (API keys, tokens) and the purge endpoint
//! with its CLI client.

pub mod keys;
pub mod purge;
