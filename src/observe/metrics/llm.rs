//! LLM latency as users feel it (`observe/latency.rs`): time to first token, time per output
//! token and tokens per second, by route and model; and the bounded `model` label that every
//! model-labelled series shares.

use super::{Metrics, Registrar};
use crate::config::Problem;
use crate::observe::latency::Timing;
use prometheus::{HistogramOpts, HistogramVec};

/// Distinct `model` label values kept; later ones are counted as `other`.
const MAX_MODELS: usize = 64;
const MAX_MODEL_LEN: usize = 64;

/// From a cached prefix's 50 ms to a long reasoning model's 30 s.
const TTFT: &[f64] = &[
    0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0,
];
/// From 5 ms (200 tokens/s decoding) to 1 s.
const TPOT: &[f64] = &[
    0.005, 0.01, 0.015, 0.025, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0,
];
const TOKENS_PER_SECOND: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1000.0,
];

pub struct Llm {
    pub ttft: HistogramVec,
    pub per_token: HistogramVec,
    pub tokens_per_second: HistogramVec,
}

impl Llm {
    pub(super) fn new(r: &Registrar) -> Result<Llm, Problem> {
        let histogram = |n: &str, help: &str, buckets: &[f64]| {
            r.register(HistogramVec::new(
                HistogramOpts::new(r.name(n), help).buckets(buckets.to_vec()),
                &["route", "model"],
            ))
        };
        Ok(Llm {
            ttft: histogram(
                "llm_time_to_first_token_seconds",
                "Time from an LLM request's arrival to the first generated text of its answer (a JSON answer: its arrival); answers from a cache are not counted.",
                TTFT,
            )?,
            per_token: histogram(
                "llm_time_per_output_token_seconds",
                "Time from a streamed answer's first text to its last, over its completion tokens minus one (streams of 2 tokens or more).",
                TPOT,
            )?,
            tokens_per_second: histogram(
                "llm_tokens_per_second",
                "Completion tokens of an LLM answer over the time from the request's arrival to its last text.",
                TOKENS_PER_SECOND,
            )?,
        })
    }
}

impl Metrics {
    /// An LLM answer's timing.
    pub fn llm_timing(&self, route: &str, model: &str, t: &Timing) {
        let model = self.model_label(model);
        let labels = [route, model.as_str()];
        self.llm.ttft.with_label_values(&labels).observe(t.ttft);
        if let Some(s) = t.per_token {
            self.llm.per_token.with_label_values(&labels).observe(s);
        }
        if let Some(r) = t.tokens_per_second {
            (self.llm.tokens_per_second)
                .with_label_values(&labels)
                .observe(r);
        }
    }

    pub(super) fn model_label(&self, model: &str) -> String {
        let mut m: String = model
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(MAX_MODEL_LEN)
            .collect();
        if m.is_empty() {
            m = "unknown".into();
        }
        if (self.models.read().unwrap_or_else(|p| p.into_inner())).contains(&m) {
            return m;
        }
        let mut seen = self.models.write().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&m) || seen.len() < MAX_MODELS && seen.insert(m.clone()) {
            m
        } else {
            "other".into()
        }
    }
}
