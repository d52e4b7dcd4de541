//! Prometheus metrics (the article's names, prefix `openclaw_gateway_` by default), kept in a
//! registry of their own and rendered in the text format at the metrics endpoint.
//!
//! Labels are bounded: `route` is a route's label from the configuration (or one of a few fixed
//! names), `method` one of the standard methods or `OTHER`, `agent_id` a verified agent or
//! `anonymous`, `model` truncated and limited in count.

mod custom;
pub mod llm;
pub mod mcp;
mod semantic;
mod tokens;

use crate::at;
use crate::config::schema;
use crate::config::Problem;
use custom::{Custom, CustomKind, CustomSeries};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};
use std::collections::HashSet;
use std::sync::{OnceLock, RwLock};

/// From 1 ms (proxy overhead) to 60 s (long LLM calls).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub rate_limited: IntCounterVec,
    pub agent_requests: IntCounterVec,
    pub cache_hits: IntCounterVec,
    pub cache_misses: IntCounterVec,
    pub cache_bypasses: IntCounterVec,
    /// Bytes of answers held in memory (the memory store, or the Redis store's memory tier).
    pub cache_bytes: IntGauge,
    pub cache_evictions: IntCounter,
    pub upstream_errors: IntCounterVec,
    pub active: IntGauge,
    /// Access-log lines not written (the writer fell behind, or the file refused them).
    pub access_log_dropped: IntCounter,
    pub reloads: IntCounterVec,
    /// 1 while a backend address can take requests (healthy, not ejected), else 0.
    pub backend_up: prometheus::IntGaugeVec,
    /// Addresses left out by passive health, and circuit-breaker openings, per backend.
    pub ejections: IntCounterVec,
    pub breaker_opens: IntCounterVec,
    pub semantic: semantic::Semantic,
    pub mcp: mcp::Mcp,
    pub tokens: tokens::Tokens,
    pub llm: llm::Llm,
    custom: Vec<Custom>,
    models: RwLock<HashSet<String>>,
    anonymous: [OnceLock<IntCounter>; STATUSES],
}

const METHODS: usize = 8;
const STATUSES: usize = 19;

/// A configured route's series, made on first use and held by the route itself: a request then
/// finds its counters there instead of hashing label values.
#[derive(Default)]
pub struct RouteSeries {
    requests: [[OnceLock<IntCounter>; STATUSES]; METHODS],
    duration: OnceLock<Histogram>,
    upstream: OnceLock<Histogram>,
    /// Custom metrics labelled by route, method and status only: slot
    /// `(custom * METHODS + method) * STATUSES + status`, made when the route is first used.
    custom: OnceLock<Box<[OnceLock<CustomSeries>]>>,
}

impl std::fmt::Debug for RouteSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteSeries")
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// What one finished request contributes.
pub struct Observation<'a> {
    pub route: &'a str,
    /// The configured route's series (none for built-in endpoints and unmatched requests).
    pub series: Option<&'a RouteSeries>,
    pub method: &'a http::Method,
    pub status: u16,
    pub agent_id: Option<&'a str>,
    pub seconds: f64,
    /// Time from the upstream request to its response head, when one was made.
    pub upstream_seconds: Option<f64>,
}

const METHOD_LABELS: [&str; METHODS] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "OTHER",
];

fn method_index(m: &http::Method) -> usize {
    use http::Method as M;
    match *m {
        M::GET => 0,
        M::POST => 1,
        M::PUT => 2,
        M::DELETE => 3,
        M::PATCH => 4,
        M::HEAD => 5,
        M::OPTIONS => 6,
        _ => 7,
    }
}

pub fn method_label(m: &http::Method) -> &'static str {
    METHOD_LABELS[method_index(m)]
}

/// The common codes get their own label; others count as `other`.
const STATUS_LABELS: [&str; STATUSES] = [
    "200", "201", "204", "301", "302", "304", "400", "401", "403", "404", "405", "413", "429",
    "431", "500", "502", "503", "504", "other",
];

fn status_index(s: u16) -> usize {
    match s {
        200 => 0,
        201 => 1,
        204 => 2,
        301 => 3,
        302 => 4,
        304 => 5,
        400 => 6,
        401 => 7,
        403 => 8,
        404 => 9,
        405 => 10,
        413 => 11,
        429 => 12,
        431 => 13,
        500 => 14,
        502 => 15,
        503 => 16,
        504 => 17,
        _ => 18,
    }
}

/// `monitoring.metrics` as checked: what the registry (a process-lived service) is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub prefix: String,
    pub custom: Vec<schema::CustomMetric>,
}

impl Settings {
    pub fn compile(m: &schema::Metrics) -> Result<Settings, Problem> {
        let settings = Settings {
            prefix: m
                .prefix
                .as_ref()
                .map_or_else(|| "openclaw_gateway_".into(), |p| p.0.clone()),
            custom: m.custom_metrics.clone(),
        };
        // Building the registry is what finds bad names and labels.
        Metrics::new(&settings.prefix, &settings.custom)?;
        Ok(settings)
    }
}

impl Metrics {
    pub fn build(s: &Settings) -> Result<Metrics, Problem> {
        Metrics::new(&s.prefix, &s.custom)
    }

    /// Registration order decides which name a bad prefix is reported on: built-ins first, in
    /// the order below, then the custom metrics in theirs.
    pub fn new(prefix: &str, custom: &[schema::CustomMetric]) -> Result<Metrics, Problem> {
        let registry = Registry::new();
        let r = Registrar {
            registry: &registry,
            prefix,
        };
        let traffic = Traffic::new(&r)?;
        let cache = Cache::new(&r)?;
        let backends = Backends::new(&r)?;
        let semantic = semantic::Semantic::new(&r)?;
        let mcp = mcp::Mcp::new(&r)?;
        let tokens = tokens::Tokens::new(&r)?;
        let llm = llm::Llm::new(&r)?;
        let active = r.register(IntGauge::new(
            r.name("active_connections"),
            "Requests in progress.",
        ))?;
        let access_log_dropped = r.register(IntCounter::new(
            r.name("access_log_lines_dropped_total"),
            "Access-log lines not written: the writer fell behind, or the file refused them.",
        ))?;
        let info = r.register(IntCounterVec::new(
            Opts::new(r.name("build_info"), "clawgate's version (always 1)."),
            &["version"],
        ))?;
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).inc();
        let custom = custom::build_all(prefix, custom, &registry)?;
        Ok(Metrics {
            registry,
            requests: traffic.requests,
            duration: traffic.duration,
            upstream_duration: traffic.upstream_duration,
            rate_limited: traffic.rate_limited,
            agent_requests: traffic.agent_requests,
            cache_hits: cache.hits,
            cache_misses: cache.misses,
            cache_bypasses: cache.bypasses,
            cache_bytes: cache.bytes,
            cache_evictions: cache.evictions,
            upstream_errors: backends.upstream_errors,
            active,
            access_log_dropped,
            reloads: backends.reloads,
            backend_up: backends.backend_up,
            ejections: backends.ejections,
            breaker_opens: backends.breaker_opens,
            semantic,
            mcp,
            tokens,
            llm,
            custom,
            models: RwLock::new(HashSet::new()),
            anonymous: Default::default(),
        })
    }

    /// Records a finished request.
    pub fn observe(&self, o: &Observation) {
        let (mi, si) = (method_index(o.method), status_index(o.status));
        let (method, status) = (METHOD_LABELS[mi], STATUS_LABELS[si]);
        match o.series {
            Some(r) => {
                r.requests[mi][si]
                    .get_or_init(|| self.requests.with_label_values(&[o.route, method, status]))
                    .inc();
                r.duration
                    .get_or_init(|| self.duration.with_label_values(&[o.route]))
                    .observe(o.seconds);
                if let Some(s) = o.upstream_seconds {
                    r.upstream
                        .get_or_init(|| self.upstream_duration.with_label_values(&[o.route]))
                        .observe(s);
                }
            }
            None => {
                self.requests
                    .with_label_values(&[o.route, method, status])
                    .inc();
                self.duration
                    .with_label_values(&[o.route])
                    .observe(o.seconds);
            }
        }
        match o.agent_id {
            Some(agent) => self
                .agent_requests
                .with_label_values(&[agent, status])
                .inc(),
            None => self.anonymous[si]
                .get_or_init(|| {
                    self.agent_requests
                        .with_label_values(&["anonymous", status])
                })
                .inc(),
        }
        if o.status == 429 {
            self.rate_limited
                .with_label_values(&[o.agent_id.unwrap_or("anonymous")])
                .inc();
        }
        let route = o.series;
        for (ci, c) in self.custom.iter().enumerate().filter(|(_, c)| !c.tokens) {
            let values = || -> Vec<&str> {
                c.labels
                    .iter()
                    .map(|l| match *l {
                        "agent_id" => o.agent_id.unwrap_or("anonymous"),
                        "route" => o.route,
                        "method" => method,
                        "status" => status,
                        _ => "unknown",
                    })
                    .collect()
            };
            if let (true, Some(r)) = (c.per_route, route) {
                let slots = r.custom.get_or_init(|| {
                    (0..self.custom.len() * METHODS * STATUSES)
                        .map(|_| OnceLock::new())
                        .collect()
                });
                if let Some(slot) = slots.get((ci * METHODS + mi) * STATUSES + si) {
                    slot.get_or_init(|| c.series(&values())).observe(o.seconds);
                    continue;
                }
            }
            c.series(&values()).observe(o.seconds);
        }
    }

    /// Whether a custom counter counts LLM tokens (then responses are read for usage).
    pub fn counts_tokens(&self) -> bool {
        self.custom.iter().any(|c| c.tokens)
    }

    /// LLM tokens used by an agent with a model (the `agent_token_usage` custom counter).
    pub fn tokens(&self, agent_id: Option<&str>, model: &str, tokens: u64) {
        let model = self.model_label(model);
        for c in self.custom.iter().filter(|c| c.tokens) {
            if let CustomKind::Counter(m) = &c.kind {
                let values: Vec<&str> = c
                    .labels
                    .iter()
                    .map(|l| match *l {
                        "agent_id" => agent_id.unwrap_or("anonymous"),
                        "model" => model.as_str(),
                        _ => "unknown",
                    })
                    .collect();
                m.with_label_values(&values).inc_by(tokens);
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Makes and registers built-in series; any failure is a problem of `monitoring.metrics`.
struct Registrar<'a> {
    registry: &'a Registry,
    prefix: &'a str,
}

impl Registrar<'_> {
    fn name(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    fn register<C>(&self, made: prometheus::Result<C>) -> Result<C, Problem>
    where
        C: prometheus::core::Collector + Clone + 'static,
    {
        let bad = |e: prometheus::Error| Problem::new(at!("monitoring", "metrics"), e.to_string());
        let c = made.map_err(bad)?;
        self.registry.register(Box::new(c.clone())).map_err(bad)?;
        Ok(c)
    }

    fn counter(&self, n: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, Problem> {
        self.register(IntCounterVec::new(Opts::new(self.name(n), help), labels))
    }

    fn histogram(&self, n: &str, help: &str, labels: &[&str]) -> Result<HistogramVec, Problem> {
        self.register(HistogramVec::new(
            HistogramOpts::new(self.name(n), help).buckets(BUCKETS.to_vec()),
            labels,
        ))
    }
}

/// Requests answered: counts, durations, refusals.
struct Traffic {
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_duration: HistogramVec,
    rate_limited: IntCounterVec,
    agent_requests: IntCounterVec,
}

impl Traffic {
    fn new(r: &Registrar) -> Result<Traffic, Problem> {
        Ok(Traffic {
            requests: r.counter(
                "requests_total",
                "Requests answered, by route, method and status.",
                &["route", "method", "status"],
            )?,
            duration: r.histogram(
                "request_duration_seconds",
                "Time from the request's arrival to the end of its response.",
                &["route"],
            )?,
            upstream_duration: r.histogram(
                "upstream_duration_seconds",
                "Time from sending a request to the backend to its response head.",
                &["route"],
            )?,
            rate_limited: r.counter(
                "rate_limited_total",
                "Requests refused by a rate limit, by agent.",
                &["agent_id"],
            )?,
            agent_requests: r.counter(
                "agent_requests_total",
                "Requests answered, by agent and status (for error rates per agent).",
                &["agent_id", "status"],
            )?,
        })
    }
}

/// The response cache.
struct Cache {
    hits: IntCounterVec,
    misses: IntCounterVec,
    bypasses: IntCounterVec,
    bytes: IntGauge,
    evictions: IntCounter,
}

impl Cache {
    fn new(r: &Registrar) -> Result<Cache, Problem> {
        Ok(Cache {
            hits: r.counter(
                "cache_hits_total",
                "Responses served from cache.",
                &["route"],
            )?,
            misses: r.counter(
                "cache_misses_total",
                "Cacheable requests that went to the backend.",
                &["route"],
            )?,
            bypasses: r.counter(
                "cache_bypasses_total",
                "Requests of caching routes that could not use the cache (method, no-store, body).",
                &["route"],
            )?,
            bytes: r.register(IntGauge::new(
                r.name("cache_stored_bytes"),
                "Bytes of cached answers held in memory.",
            ))?,
            evictions: r.register(IntCounter::new(
                r.name("cache_evictions_total"),
                "Cached answers pushed out of memory to make room.",
            ))?,
        })
    }
}

/// Backend failures and health, and configuration reloads (registered between them, as ever).
struct Backends {
    upstream_errors: IntCounterVec,
    reloads: IntCounterVec,
    backend_up: prometheus::IntGaugeVec,
    ejections: IntCounterVec,
    breaker_opens: IntCounterVec,
}

impl Backends {
    fn new(r: &Registrar) -> Result<Backends, Problem> {
        Ok(Backends {
            upstream_errors: r.counter(
                "upstream_errors_total",
                "Backend failures: connect, timeout, or a broken response.",
                &["route", "kind"],
            )?,
            reloads: r.counter(
                "config_reloads_total",
                "Configuration reloads, by result.",
                &["result"],
            )?,
            backend_up: r.register(prometheus::IntGaugeVec::new(
                Opts::new(
                    r.name("backend_up"),
                    "1 while a backend address can take requests (healthy, not ejected), else 0.",
                ),
                &["backend", "address"],
            ))?,
            ejections: r.counter(
                "upstream_ejections_total",
                "Backend addresses left out by passive health checks (failures in a row).",
                &["backend"],
            )?,
            breaker_opens: r.counter(
                "circuit_breaker_opens_total",
                "Times a backend's circuit breaker opened.",
                &["backend"],
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema::MetricKind;
    use crate::config::values::Text;

    #[test]
    fn requests_and_custom_metrics_are_counted_with_bounded_labels() {
        let custom = vec![
            schema::CustomMetric {
                name: Text("agent_token_usage".into()),
                kind: MetricKind::Counter,
                labels: vec![Text("agent_id".into()), Text("model".into())],
                help: None,
            },
            schema::CustomMetric {
                name: Text("request_latency".into()),
                kind: MetricKind::Histogram,
                labels: vec![Text("route".into()), Text("method".into())],
                help: None,
            },
        ];
        let m = Metrics::new("openclaw_gateway_", &custom).unwrap();
        let ok = Observation {
            route: "/llm/*",
            series: None,
            method: &http::Method::POST,
            status: 200,
            agent_id: Some("fin"),
            seconds: 0.01,
            upstream_seconds: Some(0.005),
        };
        m.observe(&ok);
        m.observe(&Observation { status: 429, ..ok });
        m.tokens(Some("fin"), "gpt-4o", 30);
        for i in 0..100 {
            m.tokens(Some("fin"), &format!("model-{i}"), 1);
        }
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(
            "openclaw_gateway_requests_total{method=\"POST\",route=\"/llm/*\",status=\"200\"} 1"
        ), "{text}");
        assert!(text.contains("openclaw_gateway_rate_limited_total{agent_id=\"fin\"} 1"));
        assert!(text.contains(
            "openclaw_gateway_agent_token_usage_total{agent_id=\"fin\",model=\"gpt-4o\"} 30"
        ));
        assert!(
            text.contains("model=\"other\""),
            "models beyond the cap are grouped"
        );
        assert!(text
            .contains("openclaw_gateway_request_latency_bucket{method=\"POST\",route=\"/llm/*\""));
    }

    #[test]
    fn unknown_labels_are_config_errors() {
        let custom = vec![schema::CustomMetric {
            name: Text("x".into()),
            kind: MetricKind::Counter,
            labels: vec![Text("user_email".into())],
            help: None,
        }];
        let e = Metrics::new("p_", &custom).err().unwrap();
        assert!(e.message.contains("user_email"), "{}", e.message);
    }

    #[test]
    fn a_bad_prefix_is_reported_on_the_first_built_in_and_a_reused_name_on_the_custom_one() {
        let e = Metrics::new("bad-", &[]).err().unwrap();
        assert!(e.message.contains("bad-requests_total"), "{}", e.message);
        let custom = vec![schema::CustomMetric {
            name: Text("active_connections".into()),
            kind: MetricKind::Gauge,
            labels: vec![],
            help: None,
        }];
        let e = Metrics::new("p_", &custom).err().unwrap();
        assert!(
            e.message.contains("may not reuse a built-in name"),
            "{}",
            e.message
        );
        assert_eq!(
            e.path,
            at!("monitoring", "metrics", "custom_metrics", 0, "name")
        );
    }
}
