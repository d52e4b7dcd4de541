//! The semantic cache's series (DESIGN §5.1): hits, misses by reason, near-misses refused by
//! each guard, shadow-mode verdicts and embedding time.

use super::Registrar;
use crate::config::Problem;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

pub struct Semantic {
    pub hits: IntCounterVec,
    pub misses: IntCounterVec,
    pub guarded: IntCounterVec,
    pub shadow: IntCounterVec,
    pub embed_seconds: HistogramVec,
    pub entries: IntGaugeVec,
    pub bytes: IntGaugeVec,
}

impl Semantic {
    pub(super) fn new(r: &Registrar) -> Result<Semantic, Problem> {
        Ok(Semantic {
            hits: r.counter(
                "cache_semantic_hits_total",
                "Answers served for a question similar to one answered before (HIT-SEMANTIC).",
                &["route"],
            )?,
            misses: r.counter(
                "cache_semantic_misses_total",
                "Questions of semantic routes that went to the backend, by why nothing was served.",
                &["route", "reason"],
            )?,
            guarded: r.counter(
                "cache_semantic_guarded_total",
                "Similar questions refused an answer because they differ in negation, numbers or entities.",
                &["route", "guard"],
            )?,
            shadow: r.counter(
                "cache_semantic_shadow_total",
                "Shadow mode: whether the answer that would have been served agrees with the backend's.",
                &["route", "outcome"],
            )?,
            embed_seconds: r.register(HistogramVec::new(
                HistogramOpts::new(r.name("cache_embed_seconds"), "Time to embed a question.")
                    .buckets(EMBED_BUCKETS.to_vec()),
                &["route"],
            ))?,
            entries: r.register(IntGaugeVec::new(
                Opts::new(r.name("cache_semantic_entries"), "Answers the semantic index holds."),
                &["route"],
            ))?,
            bytes: r.register(IntGaugeVec::new(
                Opts::new(
                    r.name("cache_semantic_bytes"),
                    "Memory the semantic index's entries hold (questions, vectors, answers).",
                ),
                &["route"],
            ))?,
        })
    }
}

/// Embedding takes milliseconds: finer than the request buckets at the low end.
const EMBED_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5,
];
