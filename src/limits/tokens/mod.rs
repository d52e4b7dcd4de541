//! LLM token budgets (DESIGN §5.3): a request reserves its prompt estimate and its largest
//! answer before it is sent, against every budget that applies (the agent's, and the agent's
//! for the model), and the reservation is trued up from the real usage afterwards. Budgets are
//! the request limits' GCRA buckets weighted by tokens: one atomic word each on this instance,
//! or one Redis key each (`redis.rs`) with a store.
//!
//! Reserving the whole answer up front is what bounds concurrent streams: while requests are in
//! flight their reservations are already counted, so the budget can only be overshot by what
//! answers use beyond what they reserved (a prompt underestimated, an answer longer than
//! `default_max_tokens` when the client set no `max_tokens`).

mod lease;
mod redis;

use super::{ceil_secs, now_ns, Bucket, Exceeded, Limit, Shared, Standing, Subject};
use crate::at;
use crate::config::schema::{self, OnStoreError};
use crate::config::values::Rate;
use crate::config::Problem;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `rate_limiting.tokens`, compiled.
#[derive(Debug)]
pub struct TokenQuotas {
    default: Option<Limit>,
    per_agent: HashMap<String, Limit>,
    per_model: HashMap<String, Limit>,
    pub chars_per_token: u64,
    pub default_max_tokens: u64,
    /// `sync: lease` with a store: budgets spent from this instance's slices.
    pub lease: Option<super::lease::LeaseConf>,
}

impl TokenQuotas {
    /// The agent's budget (its own, else the default): tokens and their refill per minute.
    pub fn describe(&self, agent: &str) -> Option<serde_json::Value> {
        let l = self.per_agent.get(agent).or(self.default.as_ref())?;
        let per_minute = l.per_minute().round();
        Some(serde_json::json!({"tokens": l.burst, "refill_per_minute": per_minute}))
    }

    pub fn compile(t: &schema::TokenLimits) -> Result<TokenQuotas, Problem> {
        let est = t.estimate.as_ref();
        let field = |name: &str| at!("rate_limiting", "tokens", "estimate", name);
        let chars_per_token = est.and_then(|e| e.chars_per_token).map_or(4, |c| c.0);
        if chars_per_token == 0 {
            return Err(Problem::new(field("chars_per_token"), "must be at least 1"));
        }
        let default_max_tokens = est.and_then(|e| e.default_max_tokens).map_or(1024, |c| c.0);
        if default_max_tokens == 0 {
            return Err(Problem::new(
                field("default_max_tokens"),
                "must be at least 1",
            ));
        }
        // A budget that cannot hold one answer of `default_max_tokens` refuses every request
        // that does not set `max_tokens`: a mistake worth stopping at `check`.
        let fits = |r: &Rate, path: Vec<crate::config::locate::Seg>| {
            if r.count <= default_max_tokens {
                return Err(Problem::new(
                    path,
                    format!(
                        "a budget of {} tokens cannot hold one answer of estimate.default_max_tokens ({default_max_tokens}); every request without max_tokens would be refused",
                        r.count
                    ),
                ));
            }
            Ok(Limit::from_rate(*r))
        };
        let default = match &t.default {
            Some(r) => Some(fits(r, at!("rate_limiting", "tokens", "default"))?),
            None => None,
        };
        let mut per_agent = HashMap::new();
        for (id, r) in &t.per_agent {
            per_agent.insert(
                id.clone(),
                fits(r, at!("rate_limiting", "tokens", "per_agent", id.as_str()))?,
            );
        }
        let mut per_model = HashMap::new();
        for (model, r) in &t.per_model {
            let path = at!("rate_limiting", "tokens", "per_model", model.as_str());
            if model.trim().is_empty() {
                return Err(Problem::new(path, "a model name may not be empty"));
            }
            per_model.insert(model.clone(), fits(r, path)?);
        }
        Ok(TokenQuotas {
            default,
            per_agent,
            per_model,
            chars_per_token,
            default_max_tokens,
            lease: None,
        })
    }

    /// The budgets that apply to a subject's request for a model: the agent's (`per_agent`, else
    /// `default`) and the agent's for the model (`per_model`).
    fn budgets(&self, subject: Subject, model: Option<&str>) -> [Option<Limit>; 2] {
        let agent = match subject {
            Subject::Agent(id) => self.per_agent.get(id).copied(),
            Subject::Client(_) => None,
        };
        let model = model.and_then(|m| self.per_model.get(m)).copied();
        [agent.or(self.default), model]
    }

    /// The prompt estimate of `chars` characters of content (rounded up).
    pub fn prompt_estimate(&self, chars: u64) -> u64 {
        chars.div_ceil(self.chars_per_token)
    }
}

/// A reservation that does not fit: the budget's standing, and the tokens left in it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    pub exceeded: Exceeded,
    pub remaining: u64,
}

/// Why a request may not be sent.
#[derive(Debug)]
pub enum TokenRefused {
    Short(Short),
    /// The shared store cannot be asked and `on_store_error` is `deny`.
    StoreDown,
}

/// Tokens a request holds until its answer is known.
pub struct Reservation {
    pub tokens: u64,
    pub prompt_estimate: u64,
    /// The tightest budget after this reservation (the response headers).
    pub standing: Standing,
    held: Held,
}

enum Held {
    Local(Vec<(Arc<Bucket>, Limit)>),
    Shared(Vec<(String, Limit)>),
    Leased(Vec<(Arc<super::lease::Lease>, Limit)>),
}

impl Bucket {
    /// Takes `n` tokens at once, or none.
    fn take_tokens(&self, limit: &Limit, n: u64, now: u64) -> Result<Standing, Short> {
        let (e, window) = (limit.emission_ns(), limit.window_ns());
        let cost = e.saturating_mul(n);
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let ahead = tat.max(now).saturating_add(cost) - now;
            if ahead > window {
                return Err(Short {
                    exceeded: Exceeded {
                        retry_after_secs: ceil_secs((ahead - window).min(window)),
                        limit: limit.burst,
                        window_secs: ceil_secs(window),
                    },
                    remaining: left(limit, tat, now),
                });
            }
            let new = now + ahead;
            match (self.tat).compare_exchange_weak(tat, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    return Ok(Standing {
                        remaining: (window - ahead) / e,
                        limit: limit.burst,
                        reset_secs: ceil_secs(ahead),
                        window_secs: ceil_secs(window),
                    })
                }
                Err(actual) => tat = actual,
            }
        }
    }

    /// Gives back (`delta` < 0) or charges tokens; the tokens left after.
    fn settle_tokens(&self, limit: &Limit, delta: i64, now: u64) -> u64 {
        let cost = limit.emission_ns().saturating_mul(delta.unsigned_abs());
        let update = |t: u64| {
            Some(match delta {
                d if d < 0 => t.saturating_sub(cost),
                _ => t.max(now).saturating_add(cost),
            })
        };
        let was = (self.tat)
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, update)
            .unwrap_or_else(|t| t);
        left(limit, update(was).unwrap_or(was), now)
    }
}

/// Tokens left in a bucket whose state is `tat`.
fn left(limit: &Limit, tat: u64, now: u64) -> u64 {
    let ahead = tat.saturating_sub(now);
    limit.window_ns().saturating_sub(ahead) / limit.emission_ns()
}

/// Reserves `tokens` (of which `prompt_estimate` for the prompt) from every budget that applies
/// to `subject` and `model`; `None` when none applies. With a store, through Redis, and
/// `on_store_error` decides when it cannot answer.
pub async fn reserve(
    tq: &TokenQuotas,
    on_store_error: OnStoreError,
    shared: &Shared,
    (subject, model): (Subject<'_>, Option<&str>),
    (tokens, prompt_estimate): (u64, u64),
) -> Result<Option<Reservation>, TokenRefused> {
    let budgets = tq.budgets(subject, model);
    if budgets.iter().all(Option::is_none) {
        return Ok(None);
    }
    let made = |standing, held| Reservation {
        tokens,
        prompt_estimate,
        standing,
        held,
    };
    if let (Some(store), Some(conf)) = (&shared.store, &tq.lease) {
        let leases: Vec<_> = (budgets.iter().zip([None, model]))
            .filter_map(|(l, m)| {
                let key = || redis_key(&subject.redis_tag(), m);
                Some((shared.leases.get(("tokens", subject, m), key), (*l)?))
            })
            .collect();
        match lease::reserve(store, conf, &leases, tokens).await {
            Ok(standing) => return Ok(Some(made(standing, Held::Leased(leases)))),
            Err(Some(short)) => return Err(TokenRefused::Short(short)),
            Err(None) => match on_store_error {
                OnStoreError::Local => {}
                OnStoreError::Allow => return Ok(None),
                OnStoreError::Deny => return Err(TokenRefused::StoreDown),
            },
        }
    } else if let Some(store) = &shared.store {
        let tag = subject.redis_tag();
        let keys: Vec<(String, Limit)> = (budgets.iter().zip([None, model]))
            .filter_map(|(l, m)| Some((redis_key(&tag, m), (*l)?)))
            .collect();
        match redis::reserve(store, &keys, tokens).await {
            Ok(standing) => return Ok(Some(made(standing, Held::Shared(keys)))),
            Err(Some(short)) => return Err(TokenRefused::Short(short)),
            Err(None) => match on_store_error {
                OnStoreError::Local => {}
                OnStoreError::Allow => return Ok(None),
                OnStoreError::Deny => return Err(TokenRefused::StoreDown),
            },
        }
    }
    let held: Vec<(Arc<Bucket>, Limit)> = (budgets.iter().zip([None, model]))
        .filter_map(|(l, m)| Some((shared.buckets.get(("tokens", subject, m)), (*l)?)))
        .collect();
    let standing = take_all(&held, tokens).map_err(TokenRefused::Short)?;
    Ok(Some(made(standing, Held::Local(held))))
}

fn redis_key(tag: &str, model: Option<&str>) -> String {
    match model {
        None => format!("{tag}:tokens"),
        Some(m) => format!("{tag}:tokens:model:{m}"),
    }
}

/// Takes `n` tokens from every bucket or from none; the tightest standing.
fn take_all(held: &[(Arc<Bucket>, Limit)], n: u64) -> Result<Standing, Short> {
    let now = now_ns();
    let mut tightest: Option<Standing> = None;
    for (i, (bucket, limit)) in held.iter().enumerate() {
        match bucket.take_tokens(limit, n, now) {
            Ok(s) => {
                if tightest.is_none_or(|t| s.remaining < t.remaining) {
                    tightest = Some(s);
                }
            }
            Err(short) => {
                for (b, l) in &held[..i] {
                    b.settle_tokens(l, -(n.min(i64::MAX as u64) as i64), now);
                }
                return Err(short);
            }
        }
    }
    // `held` is never empty: `reserve` returns before when no budget applies.
    tightest.ok_or(Short {
        exceeded: Exceeded {
            retry_after_secs: 1,
            limit: 0,
            window_secs: 1,
        },
        remaining: 0,
    })
}

/// Trues a reservation up to the `used` tokens: gives back what it held beyond them, or charges
/// the excess. The tokens left in the tightest budget after, when known.
pub async fn settle(shared: &Shared, r: Reservation, used: u64) -> Option<u64> {
    let delta = (used.min(i64::MAX as u64) as i64) - (r.tokens.min(i64::MAX as u64) as i64);
    match r.held {
        Held::Local(held) => {
            let now = now_ns();
            (held.iter())
                .map(|(b, l)| b.settle_tokens(l, delta, now))
                .min()
        }
        Held::Leased(leases) => (leases.iter())
            .map(|(l, limit)| {
                match delta {
                    d if d < 0 => l.give_back(d.unsigned_abs()),
                    d => l.charge(d as u64),
                }
                l.standing(limit).remaining
            })
            .min(),
        Held::Shared(_) if delta == 0 => Some(r.standing.remaining),
        Held::Shared(keys) => {
            let store = shared.store.as_ref()?;
            redis::settle(store, &keys, delta).await
        }
    }
}

/// Charges `used` tokens to the agent's budget for `model` after the fact: a request whose body
/// was not read ahead (over 64 KiB, or chunked) names its model only in its answer.
pub async fn charge_model(
    tq: &TokenQuotas,
    shared: &Shared,
    subject: Subject<'_>,
    model: &str,
    used: u64,
) {
    let Some(limit) = tq.per_model.get(model).copied() else {
        return;
    };
    if tq.lease.is_some() && shared.store.is_some() {
        let key = || redis_key(&subject.redis_tag(), Some(model));
        shared
            .leases
            .get(("tokens", subject, Some(model)), key)
            .charge(used);
        return;
    }
    let used = used.min(i64::MAX as u64) as i64;
    if let Some(store) = &shared.store {
        let key = redis_key(&subject.redis_tag(), Some(model));
        if redis::settle(store, &[(key, limit)], used).await.is_some() {
            return;
        }
    }
    let bucket = shared.buckets.get(("tokens", subject, Some(model)));
    bucket.settle_tokens(&limit, used, now_ns());
}

#[cfg(test)]
mod tests;
