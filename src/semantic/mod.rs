//! The semantic cache (DESIGN §5.1): answers to questions that mean the same, within a partition
//! that is exact in everything but the compared text, refused by guards where the texts differ
//! in negation, numbers or entities. So far: the embedders (`embed.rs` in process, `remote.rs`
//! an OpenAI-compatible API), the guards (`guards.rs`), the checked settings (`settings.rs`),
//! what of a request is compared and what partitions it (`request.rs`) and the in-memory index
//! (`index.rs`); the Redis store and the proxy's use of them come next.

pub mod canonical;
pub mod embed;
pub mod guards;
pub mod index;
pub mod remote;
pub mod request;
pub mod script;
pub mod settings;
