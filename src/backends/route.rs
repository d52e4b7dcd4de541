//! A route's pools, compiled from its `backend_weights`, `backend` or `backend_url`.

use super::compile::from_url;
use super::{KeyFrom, Pool, RouteBackends};
use crate::at;
use crate::config::schema;
use crate::config::Problem;
use std::sync::Arc;

/// The named backends (`backends:`), each compiled once and shared by the routes naming it.
pub type Named = std::collections::BTreeMap<String, Arc<Pool>>;

impl RouteBackends {
    /// Route `i`'s pools: a split by `backend_weights` (optionally sticky), one named backend,
    /// or its own `backend_url` (whose pool is added to `pools`).
    pub fn compile(
        r: &schema::Route,
        i: usize,
        label: &str,
        named: &Named,
        pools: &mut Vec<Arc<Pool>>,
    ) -> Result<RouteBackends, Problem> {
        let sticky = match &r.sticky_by {
            Some(k) => Some(
                KeyFrom::parse(k).map_err(|m| Problem::new(at!("routes", i, "sticky_by"), m))?,
            ),
            None => None,
        };
        if let Some(w) = &r.backend_weights {
            return Ok(RouteBackends::new(split(&w.entries(), i, named)?, sticky));
        }
        if sticky.is_some() {
            return Err(Problem::new(
                at!("routes", i, "sticky_by"),
                "applies to routes with backend_weights",
            ));
        }
        let pool = if let Some(p) = r.backend.as_ref().and_then(|b| named.get(&b.0)) {
            p.clone()
        } else if let Some(u) = &r.backend_url {
            let pool =
                from_url(label, u).map_err(|m| Problem::new(at!("routes", i, "backend_url"), m))?;
            let pool = Arc::new(pool);
            pools.push(pool.clone());
            pool
        } else {
            return Err(Problem::new(
                at!("routes", i),
                "has no backend; set backend_url, or backend naming one of \"backends\"",
            ));
        };
        Ok(RouteBackends::new(vec![(pool, 1)], None))
    }
}

/// `backend_weights`: named backends, each at most once, not all weighing 0, one URL path.
fn split(
    entries: &[(String, u64)],
    i: usize,
    named: &Named,
) -> Result<Vec<(Arc<Pool>, u64)>, Problem> {
    if entries.is_empty() {
        return Err(Problem::new(
            at!("routes", i, "backend_weights"),
            "is empty",
        ));
    }
    let mut split: Vec<(Arc<Pool>, u64)> = Vec::new();
    for (name, weight) in entries {
        let here = || at!("routes", i, "backend_weights", name.as_str());
        let Some(pool) = named.get(name) else {
            return Err(Problem::new(
                here(),
                format!("{name:?} names no backend; define it under \"backends\""),
            ));
        };
        if *weight > 1_000_000 {
            return Err(Problem::new(here(), "must be at most 1000000"));
        }
        if split.iter().any(|(p, _)| Arc::ptr_eq(p, pool)) {
            return Err(Problem::new(here(), "is listed twice"));
        }
        split.push((pool.clone(), *weight));
    }
    if split.iter().all(|(_, w)| *w == 0) {
        return Err(Problem::new(
            at!("routes", i, "backend_weights"),
            "every weight is 0",
        ));
    }
    let prefixes: std::collections::BTreeSet<&str> =
        split.iter().map(|(p, _)| p.path_prefix.as_str()).collect();
    if prefixes.len() > 1 {
        return Err(Problem::new(
            at!("routes", i, "backend_weights"),
            "the backends' URLs have different paths; a split needs one path",
        ));
    }
    Ok(split)
}
