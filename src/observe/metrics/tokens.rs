//! LLM token budgets (DESIGN §5.3): requests refused because their reservation did not fit,
//! and each agent's budget as its last LLM request left it (for a budget-use panel).

use super::{Metrics, Registrar};
use crate::config::Problem;
use prometheus::{IntCounterVec, IntGaugeVec, Opts};

pub struct Tokens {
    pub refused: IntCounterVec,
    pub remaining: IntGaugeVec,
    pub limit: IntGaugeVec,
}

impl Tokens {
    pub(super) fn new(r: &Registrar) -> Result<Tokens, Problem> {
        let gauge = |n: &str, help: &str| {
            r.register(IntGaugeVec::new(
                Opts::new(r.name(n), help),
                &["agent_id", "model"],
            ))
        };
        Ok(Tokens {
            refused: r.counter(
                "token_quota_refused_total",
                "LLM requests refused because their token reservation did not fit a budget.",
                &["agent_id", "model"],
            )?,
            remaining: gauge(
                "token_budget_remaining",
                "Tokens left in the tightest budget of an agent's requests for a model, as its last LLM request left it.",
            )?,
            limit: gauge(
                "token_budget_limit",
                "Size of the tightest budget of an agent's requests for a model.",
            )?,
        })
    }
}

impl Metrics {
    pub fn token_refused(&self, agent_id: Option<&str>, model: Option<&str>) {
        let model = self.model_label(model.unwrap_or("unknown"));
        (self.tokens.refused)
            .with_label_values(&[agent_id.unwrap_or("anonymous"), &model])
            .inc();
    }

    /// The budget left after a reservation or a true-up.
    pub fn token_budget(&self, agent_id: Option<&str>, model: Option<&str>, left: u64, of: u64) {
        let model = self.model_label(model.unwrap_or("unknown"));
        let labels = [agent_id.unwrap_or("anonymous"), &model];
        let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.tokens
            .remaining
            .with_label_values(&labels)
            .set(clamp(left));
        self.tokens.limit.with_label_values(&labels).set(clamp(of));
    }
}
