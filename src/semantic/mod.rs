//! The semantic cache (DESIGN §5.1): answers to questions that mean the same, within a partition
//! that is exact in everything but the compared text, refused by guards where the texts differ
//! in negation, numbers or entities.
//!
//! - what of a request is compared and what partitions it: `request/`; the form of the text
//!   that is embedded: `canonical.rs`; texts the model cannot read: `script.rs`;
//! - the embedders: `embed.rs` (in process), `remote.rs` (an OpenAI-compatible API), and
//!   `engines.rs` (one per distinct block);
//! - the guards: `guards/`; the bounded in-memory index: `index/`; a route's index and the
//!   stored answer: `cache.rs`; entries shared through Redis: `shared.rs`;
//! - the checked settings: `settings.rs`.
//!
//! The request path that uses them is `proxy/semantic.rs`.

pub mod cache;
pub mod canonical;
pub mod embed;
pub mod engines;
pub mod guards;
pub mod index;
pub mod remote;
pub mod request;
pub mod script;
pub mod settings;
pub mod shared;
