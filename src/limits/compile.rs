//! The limits of a configuration, compiled from `gateway.rate_limit`, `agents` and
//! `rate_limiting`.

use super::lease::LeaseConf;
use super::{Limit, Quotas};
use crate::at;
use crate::config::schema::{self, File};
use crate::config::Problem;
use std::time::Duration;

impl Quotas {
    /// `gateway.rate_limit`, the agents' own limits and `rate_limiting`.
    pub fn compile(file: &File) -> Result<Quotas, Problem> {
        let registry = file
            .agents
            .iter()
            .filter_map(|(id, a)| Some((id.clone(), Limit::from_rate(a.rate_limit?))))
            .collect();
        let rl = file.rate_limiting.as_ref();
        let mut fallback = std::collections::HashMap::new();
        if let Some(rl) = rl {
            for (id, r) in &rl.per_agent {
                fallback.insert(id.clone(), Limit::from_rate(*r));
            }
            // An explicit bucket wins over a plain rate for the same agent.
            for (id, q) in &rl.per_agent_quota {
                fallback.insert(id.clone(), Limit::from_quota(q.tokens.0, q.refill));
            }
        }
        let mut quotas = Quotas::new(
            file.gateway.rate_limit.map(Limit::from_rate),
            registry,
            fallback,
            rl.and_then(|rl| rl.default).map(Limit::from_rate),
        );
        if let Some(rl) = rl {
            let timeout = rl.store_timeout.map_or(Duration::from_millis(50), |d| d.0);
            if timeout.is_zero() {
                return Err(Problem::new(
                    at!("rate_limiting", "store_timeout"),
                    "must be longer than 0",
                ));
            }
            if let Some(url) = &rl.store {
                // Checked here; the store itself is a service, connected once per process.
                super::redis::RedisStore::new(url, timeout)
                    .map_err(|m| Problem::new(at!("rate_limiting", "store"), m))?;
                quotas.store = Some((url.0.clone(), timeout));
            }
            quotas.on_store_error = rl.on_store_error.unwrap_or(schema::OnStoreError::Local);
            if let Some(t) = &rl.tokens {
                quotas.tokens = Some(super::tokens::TokenQuotas::compile(t)?);
            }
            let conf = lease_conf(rl.lease.as_ref())?;
            if rl.sync == Some(schema::LimitSync::Lease) && quotas.store.is_some() {
                // Without a store every limit is local already: nothing to lease from.
                quotas.lease = Some(conf);
                if let Some(t) = quotas.tokens.as_mut() {
                    t.lease = Some(conf);
                }
            }
        }
        Ok(quotas)
    }
}

/// `rate_limiting.lease`: checked whatever `sync` says, so that a typo waits for no switch.
fn lease_conf(lease: Option<&schema::LeaseSettings>) -> Result<LeaseConf, Problem> {
    let size = match lease.and_then(|l| l.size.as_ref()) {
        None => 0.02,
        Some(text) => text
            .0
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0 && *s <= 1.0)
            .ok_or_else(|| {
                Problem::new(
                    at!("rate_limiting", "lease", "size"),
                    format!(
                        "{:?} is not a share of a limit; expected a number in (0, 1], e.g. 0.02",
                        text.0
                    ),
                )
            })?,
    };
    let max_ttl = lease
        .and_then(|l| l.max_ttl)
        .map_or(Duration::from_secs(1), |d| d.0);
    if max_ttl.is_zero() {
        return Err(Problem::new(
            at!("rate_limiting", "lease", "max_ttl"),
            "must be longer than 0",
        ));
    }
    Ok(LeaseConf { size, max_ttl })
}
