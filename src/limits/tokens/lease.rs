//! Token budgets in lease mode: a reservation is spent from this instance's slices of every
//! budget that applies, or from none.

use super::Short;
use crate::limits::lease::{take, Lease, LeaseConf};
use crate::limits::redis::RedisStore;
use crate::limits::{Limit, Standing};
use std::sync::Arc;

/// Reserves `n` tokens from every budget's slice (fetching the next slice when one runs out);
/// the tightest standing. `Err(None)`: Redis could not answer.
pub async fn reserve(
    store: &RedisStore,
    conf: &LeaseConf,
    leases: &[(Arc<Lease>, Limit)],
    n: u64,
) -> Result<Standing, Option<Short>> {
    let mut tightest: Option<Standing> = None;
    for (i, (lease, limit)) in leases.iter().enumerate() {
        match take(store, conf, lease, limit, n).await {
            Ok(s) => {
                if tightest.is_none_or(|t| s.remaining < t.remaining) {
                    tightest = Some(s);
                }
            }
            Err(e) => {
                for (l, _) in &leases[..i] {
                    l.give_back(n);
                }
                return Err(e);
            }
        }
    }
    // `leases` is never empty: `reserve` returns before when no budget applies.
    tightest.ok_or(None)
}
