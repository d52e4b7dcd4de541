//! The operator's side: CLI helpers over a configuration (API keys, tokens), the purge endpoint
//! with its CLI client, and the binary upgrade's choreography.

pub mod keys;
pub mod purge;
pub mod upgrade;
