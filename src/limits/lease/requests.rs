//! Request limits in lease mode: the agent's and the route's slices, both or neither.

use super::{take, Lease, LeaseConf};
use crate::limits::redis::RedisStore;
use crate::limits::{Limit, Quotas, Refused, Shared, Standing, Subject};
use std::sync::Arc;

impl Quotas {
    /// Like `take_shared` in exact mode, from this instance's slices; Redis is asked only when a
    /// slice runs out, and `on_store_error` decides when it cannot answer.
    pub(crate) async fn take_leased(
        &self,
        store: &RedisStore,
        conf: &LeaseConf,
        shared: &Shared,
        subject: Subject<'_>,
        key_limit: Option<Limit>,
        route: Option<(&str, Limit)>,
    ) -> Result<Option<Standing>, Refused> {
        // Keyed like the exact mode's Redis keys (the same buckets in Redis), hashed here.
        let agent = self.agent_limit(subject, key_limit).map(|l| {
            let key = || format!("{}:agent", subject.redis_tag());
            (shared.leases.get(("req", None::<&str>, subject), key), l)
        });
        let on_route = route.map(|(label, l)| {
            let key = || format!("{}:route:{label}", subject.redis_tag());
            (shared.leases.get(("req", Some(label), subject), key), l)
        });
        let checks: [Option<(Arc<Lease>, Limit)>; 2] = [agent, on_route];
        let mut tightest: Option<Standing> = None;
        for (i, (lease, limit)) in checks.iter().flatten().enumerate() {
            match take(store, conf, lease, limit, 1).await {
                Ok(s) => {
                    if tightest.is_none_or(|t| s.remaining < t.remaining) {
                        tightest = Some(s);
                    }
                }
                Err(e) => {
                    for (l, _) in checks.iter().flatten().take(i) {
                        l.give_back(1);
                    }
                    return match e {
                        Some(short) => Err(Refused::Limit(short.exceeded)),
                        None => self.store_failed(shared, subject, key_limit, route),
                    };
                }
            }
        }
        Ok(tightest)
    }
}
