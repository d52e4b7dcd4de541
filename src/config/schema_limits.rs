//! `rate_limiting` as written: request limits, the shared store, token budgets, lease mode.

use super::values::{Count, Dur, Rate, Text};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitStrategy {
    TokenBucket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    Local,
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiting {
    pub strategy: Option<LimitStrategy>,
    pub default: Option<Rate>,
    #[serde(default)]
    pub per_agent: BTreeMap<String, Rate>,
    #[serde(default)]
    pub per_agent_quota: BTreeMap<String, Quota>,
    pub store: Option<Text>,
    pub on_store_error: Option<OnStoreError>,
    pub store_timeout: Option<Dur>,
    /// LLM token budgets (DESIGN §5.3): reserved before sending, trued up from usage.
    pub tokens: Option<TokenLimits>,
    /// How instances share limits through the store: `exact` (one Redis trip per request) or
    /// `lease` (slices taken from Redis and spent locally). DESIGN §5.3.
    pub sync: Option<LimitSync>,
    pub lease: Option<LeaseSettings>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitSync {
    Exact,
    Lease,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseSettings {
    /// The share of a limit one lease takes (0 < size ≤ 1), as text so `${VAR}` works.
    pub size: Option<Text>,
    pub max_ttl: Option<Dur>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLimits {
    /// Per agent (per client address when anonymous), unless `per_agent` names the agent.
    pub default: Option<Rate>,
    #[serde(default)]
    pub per_agent: BTreeMap<String, Rate>,
    /// Per agent and model, by the request's `model`.
    #[serde(default)]
    pub per_model: BTreeMap<String, Rate>,
    pub estimate: Option<TokenEstimate>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEstimate {
    pub chars_per_token: Option<Count>,
    pub default_max_tokens: Option<Count>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub tokens: Count,
    pub refill: Rate,
}
