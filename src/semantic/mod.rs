//! The semantic cache (DESIGN §5.1): answers to questions that mean the same, within a partition
//! that is exact in everything but the compared text, refused by guards where the texts differ
//! in negation, numbers or entities. So far: the in-process sentence encoder and its pool
//! (`embed.rs`), the guards (`guards.rs`) and the bounded in-memory index (`index.rs`); the
//! Redis store and the proxy's use of them come next.

pub mod embed;
pub mod guards;
pub mod index;
