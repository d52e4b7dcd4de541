//! The admin API's answers, as JSON: overview, agents, routes, backends, cache. Built from the
//! running configuration and the console's own counts; no secret goes in (keys appear as the
//! first 8 hex digits of their SHA-256, headers and credentials not at all).

use super::stats::{Counts, Stats};
use crate::limits::{Limit, Subject};
use crate::runtime::{Config, Services};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::SystemTime;

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

pub fn overview(stats: &Stats, cfg: &Config) -> Value {
    let t = &stats.totals;
    let requests = t.requests.load(Relaxed);
    let errors = t.errors.load(Relaxed);
    let (hits, misses) = (t.cache_hits.load(Relaxed), t.cache_misses.load(Relaxed));
    let [p50, p95, p99] = stats.quantiles();
    let samples = stats.samples();
    let minute = &samples[samples.len().saturating_sub(60)..];
    let sum = |f: fn(&super::stats::Sample) -> u64| minute.iter().map(f).sum::<u64>();
    let seconds = minute.len().max(1) as f64;
    let uptime = SystemTime::now()
        .duration_since(stats.started)
        .map_or(0, |d| d.as_secs());
    json!({
        "name": cfg.name,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": uptime,
        "requests": requests,
        "errors": errors,
        "refused": t.refused.load(Relaxed),
        "error_rate": ratio(errors, requests),
        "tokens": t.tokens.load(Relaxed),
        "latency_ms": {"p50": p50, "p95": p95, "p99": p99},
        "last_minute": {
            "requests_per_second": sum(|s| s.requests) as f64 / seconds,
            "errors_per_second": sum(|s| s.errors) as f64 / seconds,
            "tokens_per_minute": sum(|s| s.tokens) as f64 * 60.0 / seconds,
            "cache_hit_rate": ratio(sum(|s| s.cache_hits), sum(|s| s.cache_hits + s.cache_misses)),
        },
        "cache": {"hits": hits, "misses": misses, "hit_rate": ratio(hits, hits + misses)},
        "series": samples.iter().map(|s| json!({
            "at": s.at, "requests": s.requests, "errors": s.errors, "tokens": s.tokens,
            "cache_hits": s.cache_hits, "cache_misses": s.cache_misses,
            "p50": s.p50, "p95": s.p95, "p99": s.p99,
        })).collect::<Vec<_>>(),
    })
}

fn counts(c: &Counts) -> Map<String, Value> {
    let requests = c.requests.load(Relaxed);
    let mut m = Map::new();
    m.insert("requests".into(), requests.into());
    m.insert("errors".into(), c.errors.load(Relaxed).into());
    m.insert("refused".into(), c.refused.load(Relaxed).into());
    let mean = (requests > 0).then(|| c.micros.load(Relaxed) as f64 / requests as f64 / 1000.0);
    m.insert("mean_ms".into(), json!(mean));
    m
}

fn limit(l: Option<Limit>) -> Value {
    match l {
        Some(l) => {
            json!({"burst": l.burst, "per_minute": (l.per_minute() * 1000.0).round() / 1000.0})
        }
        None => Value::Null,
    }
}

pub fn agents(stats: &Stats, cfg: &Config) -> Value {
    let seen = stats.agents.all();
    let mut keys: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let digests = cfg.auth.key_digests();
    for (agent, prefix) in &digests {
        keys.entry(agent).or_default().push(prefix.clone());
    }
    let mut ids: Vec<&str> = cfg.auth.agents.keys().map(String::as_str).collect();
    ids.extend(seen.keys().map(|k| &**k));
    ids.extend(keys.keys());
    ids.sort_unstable();
    ids.dedup();
    let budget = cfg.quotas.tokens.as_ref();
    let list: Vec<Value> = ids
        .into_iter()
        .map(|id| {
            let mut a = Map::new();
            a.insert("id".into(), id.into());
            a.insert("configured".into(), cfg.auth.agents.contains_key(id).into());
            a.insert(
                "keys".into(),
                json!(keys.get(id).cloned().unwrap_or_default()),
            );
            let l = cfg.quotas.agent_limit(Subject::Agent(id), None);
            a.insert("rate_limit".into(), limit(l));
            a.insert(
                "token_budget".into(),
                json!(budget.and_then(|b| b.describe(id))),
            );
            if let Some(c) = seen.get(id) {
                a.extend(counts(c));
                let left = c.limit_left.load(Relaxed);
                a.insert(
                    "limit_left".into(),
                    json!((left != u64::MAX).then_some(left)),
                );
                a.insert("tokens".into(), c.tokens.load(Relaxed).into());
                let by_model = c.by_model.lock().map(|m| m.clone()).unwrap_or_default();
                a.insert("tokens_by_model".into(), json!(by_model));
            }
            Value::Object(a)
        })
        .collect();
    json!({ "agents": list })
}

pub fn routes(stats: &Stats, cfg: &Config) -> Value {
    let seen = stats.routes.all();
    let list: Vec<Value> = (cfg.routes.iter())
        .map(|r| {
            let mut m = Map::new();
            m.insert("label".into(), r.label.clone().into());
            m.insert("backends".into(), r.backends.describe().into());
            m.insert("auth_required".into(), r.access.is_some().into());
            m.insert("cache".into(), r.cache.is_some().into());
            m.insert("semantic_cache".into(), r.semantic.is_some().into());
            let kind = if r.mcp.is_some() {
                "mcp"
            } else if r.grpc.is_some() {
                "grpc_transcode"
            } else {
                "http"
            };
            m.insert("protocol".into(), kind.into());
            m.insert("rate_limit".into(), limit(r.rate_limit));
            if let Some(c) = seen.get(r.label.as_str()) {
                m.extend(counts(c));
            } else {
                m.insert("requests".into(), 0.into());
            }
            Value::Object(m)
        })
        .collect();
    json!({ "routes": list })
}

pub fn backends(cfg: &Config) -> Value {
    let list: Vec<Value> = (cfg.pools.iter())
        .map(|p| {
            let (ejections, breaker_opens) = p.events();
            let addresses: Vec<Value> = (p.health().into_iter())
                .map(|(addr, up)| json!({"address": addr, "up": up}))
                .collect();
            let up = addresses.iter().filter(|a| a["up"] == true).count();
            json!({
                "name": p.name,
                "addresses": addresses,
                "up": up,
                "ejections": ejections,
                "breaker_opens": breaker_opens,
                "breaker": p.breaker.as_ref().map(|b| b.state()),
            })
        })
        .collect();
    json!({ "backends": list })
}

pub fn cache(stats: &Stats, cfg: &Config, services: &Services) -> Value {
    let t = &stats.totals;
    let (hits, misses) = (t.cache_hits.load(Relaxed), t.cache_misses.load(Relaxed));
    let (bytes, evictions) = services.cache.map_or((0, 0), |c| c.stats());
    let routes: Vec<&str> = (cfg.routes.iter())
        .filter(|r| r.cache.is_some())
        .map(|r| r.label.as_str())
        .collect();
    json!({
        "enabled": services.cache.is_some(),
        "store": cfg.cache.as_ref().map(|c| if c.redis.is_some() { "redis" } else { "memory" }),
        "bytes": bytes,
        "evictions": evictions,
        "hits": hits,
        "misses": misses,
        "hit_rate": ratio(hits, hits + misses),
        "routes": routes,
    })
}
