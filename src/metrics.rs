//! Prometheus metrics (the article's names, prefix `openclaw_gateway_` by default), kept in a
//! registry of their own and rendered in the text format at the metrics endpoint.
//!
//! Labels are bounded: `route` is a route's label from the configuration (or one of a few fixed
//! names), `method` one of the standard methods or `OTHER`, `agent_id` a verified agent or
//! `anonymous`, `model` truncated and limited in count.

use crate::at;
use crate::config::schema::{self, MetricKind};
use crate::config::Problem;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use prometheus::{Histogram, IntCounter};
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// From 1 ms (proxy overhead) to 60 s (long LLM calls).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Distinct `model` label values kept; later ones are counted as `other`.
const MAX_MODELS: usize = 64;
const MAX_MODEL_LEN: usize = 64;

/// The labels a custom metric may declare, and where their values come from.
const CUSTOM_LABELS: &[&str] = &["agent_id", "model", "route", "method", "status"];

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
    pub cache_evictions: prometheus::IntCounter,
    pub upstream_errors: IntCounterVec,
    pub active: IntGauge,
    pub reloads: IntCounterVec,
    /// 1 while a backend address can take requests (healthy, not ejected), else 0.
    pub backend_up: prometheus::IntGaugeVec,
    /// Addresses left out by passive health, and circuit-breaker openings, per backend.
    pub ejections: IntCounterVec,
    pub breaker_opens: IntCounterVec,
    custom: Vec<Custom>,
    models: Mutex<HashSet<String>>,
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

/// One series of a custom metric.
enum CustomSeries {
    Counter(IntCounter),
    Histogram(Histogram),
    Gauge(prometheus::Gauge),
}

impl CustomSeries {
    fn observe(&self, seconds: f64) {
        match self {
            CustomSeries::Counter(m) => m.inc(),
            CustomSeries::Histogram(m) => m.observe(seconds),
            CustomSeries::Gauge(m) => m.set(seconds),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

#[derive(Clone)]
enum CustomKind {
    Counter(IntCounterVec),
    Histogram(HistogramVec),
    Gauge(GaugeVec),
}

#[derive(Clone)]
struct Custom {
    /// The article's token counter: counts tokens, not requests.
    tokens: bool,
    /// Labelled only by route, method and status: its series are kept per route.
    per_route: bool,
    labels: Vec<&'static str>,
    kind: CustomKind,
}

impl Custom {
    fn series(&self, values: &[&str]) -> CustomSeries {
        match &self.kind {
            CustomKind::Counter(m) => CustomSeries::Counter(m.with_label_values(values)),
            CustomKind::Histogram(m) => CustomSeries::Histogram(m.with_label_values(values)),
            CustomKind::Gauge(m) => CustomSeries::Gauge(m.with_label_values(values)),
        }
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

    pub fn new(prefix: &str, custom: &[schema::CustomMetric]) -> Result<Metrics, Problem> {
        let registry = Registry::new();
        let name = |n: &str| format!("{prefix}{n}");
        let counter = |n: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name(n), help), labels)
                .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
            registry
                .register(Box::new(c.clone()))
                .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
            Ok::<_, Problem>(c)
        };
        let histogram = |n: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name(n), help).buckets(BUCKETS.to_vec()),
                labels,
            )
            .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
            registry
                .register(Box::new(h.clone()))
                .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
            Ok::<_, Problem>(h)
        };
        let requests = counter(
            "requests_total",
            "Requests answered, by route, method and status.",
            &["route", "method", "status"],
        )?;
        let duration = histogram(
            "request_duration_seconds",
            "Time from the request's arrival to the end of its response.",
            &["route"],
        )?;
        let upstream_duration = histogram(
            "upstream_duration_seconds",
            "Time from sending a request to the backend to its response head.",
            &["route"],
        )?;
        let rate_limited = counter(
            "rate_limited_total",
            "Requests refused by a rate limit, by agent.",
            &["agent_id"],
        )?;
        let agent_requests = counter(
            "agent_requests_total",
            "Requests answered, by agent and status (for error rates per agent).",
            &["agent_id", "status"],
        )?;
        let cache_hits = counter(
            "cache_hits_total",
            "Responses served from cache.",
            &["route"],
        )?;
        let cache_misses = counter(
            "cache_misses_total",
            "Cacheable requests that went to the backend.",
            &["route"],
        )?;
        let cache_bypasses = counter(
            "cache_bypasses_total",
            "Requests of caching routes that could not use the cache (method, no-store, body).",
            &["route"],
        )?;
        let cache_bytes = IntGauge::new(
            name("cache_stored_bytes"),
            "Bytes of cached answers held in memory.",
        )
        .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
        registry
            .register(Box::new(cache_bytes.clone()))
            .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
        let cache_evictions = prometheus::IntCounter::new(
            name("cache_evictions_total"),
            "Cached answers pushed out of memory to make room.",
        )
        .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
        registry
            .register(Box::new(cache_evictions.clone()))
            .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
        let upstream_errors = counter(
            "upstream_errors_total",
            "Backend failures: connect, timeout, or a broken response.",
            &["route", "kind"],
        )?;
        let reloads = counter(
            "config_reloads_total",
            "Configuration reloads, by result.",
            &["result"],
        )?;
        let backend_up = prometheus::IntGaugeVec::new(
            Opts::new(
                name("backend_up"),
                "1 while a backend address can take requests (healthy, not ejected), else 0.",
            ),
            &["backend", "address"],
        )
        .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
        registry
            .register(Box::new(backend_up.clone()))
            .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
        let ejections = counter(
            "upstream_ejections_total",
            "Backend addresses left out by passive health checks (failures in a row).",
            &["backend"],
        )?;
        let breaker_opens = counter(
            "circuit_breaker_opens_total",
            "Times a backend's circuit breaker opened.",
            &["backend"],
        )?;
        let active = IntGauge::new(name("active_connections"), "Requests in progress.")
            .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
        registry
            .register(Box::new(active.clone()))
            .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
        let info = IntCounterVec::new(
            Opts::new(name("build_info"), "clawgate's version (always 1)."),
            &["version"],
        )
        .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;
        info.with_label_values(&[env!("CARGO_PKG_VERSION")]).inc();
        registry
            .register(Box::new(info))
            .map_err(|e| Problem::new(at!("monitoring", "metrics"), e.to_string()))?;

        let mut customs = Vec::new();
        for (i, c) in custom.iter().enumerate() {
            let here = |f: &str| at!("monitoring", "metrics", "custom_metrics", i, f);
            let mut labels = Vec::new();
            for (j, l) in c.labels.iter().enumerate() {
                let known = CUSTOM_LABELS.iter().find(|k| **k == l.0).ok_or_else(|| {
                    Problem::new(
                        at!("monitoring", "metrics", "custom_metrics", i, "labels", j),
                        format!(
                            "{:?} is not a label clawgate can fill; expected one of {}",
                            l.0,
                            CUSTOM_LABELS.join(", ")
                        ),
                    )
                })?;
                labels.push(*known);
            }
            let tokens = c.name.0 == "agent_token_usage";
            let help = c.help.as_ref().map_or_else(
                || {
                    if tokens {
                        "LLM tokens (prompt + completion) used, by agent and model.".to_string()
                    } else {
                        format!("{} (custom)", c.name.0)
                    }
                },
                |h| h.0.clone(),
            );
            let bad = |e: prometheus::Error| Problem::new(here("name"), e.to_string());
            let kind = match c.kind {
                MetricKind::Counter => {
                    // Prometheus convention: counters end in _total.
                    let n = if c.name.ends_with("_total") {
                        name(&c.name)
                    } else {
                        name(&format!("{}_total", c.name.0))
                    };
                    CustomKind::Counter(
                        IntCounterVec::new(Opts::new(n, help), &labels).map_err(bad)?,
                    )
                }
                MetricKind::Histogram => CustomKind::Histogram(
                    HistogramVec::new(
                        HistogramOpts::new(name(&c.name), help).buckets(BUCKETS.to_vec()),
                        &labels,
                    )
                    .map_err(bad)?,
                ),
                MetricKind::Gauge => CustomKind::Gauge(
                    GaugeVec::new(Opts::new(name(&c.name), help), &labels).map_err(bad)?,
                ),
            };
            let collector: Box<dyn prometheus::core::Collector> = match &kind {
                CustomKind::Counter(c) => Box::new(c.clone()),
                CustomKind::Histogram(h) => Box::new(h.clone()),
                CustomKind::Gauge(g) => Box::new(g.clone()),
            };
            registry.register(collector).map_err(|e| {
                Problem::new(
                    here("name"),
                    format!("{e} (a custom metric may not reuse a built-in name)"),
                )
            })?;
            customs.push(Custom {
                tokens,
                per_route: labels
                    .iter()
                    .all(|l| matches!(*l, "route" | "method" | "status")),
                labels,
                kind,
            });
        }
        Ok(Metrics {
            registry,
            requests,
            duration,
            upstream_duration,
            rate_limited,
            agent_requests,
            cache_hits,
            cache_misses,
            cache_bypasses,
            cache_bytes,
            cache_evictions,
            upstream_errors,
            active,
            reloads,
            backend_up,
            ejections,
            breaker_opens,
            custom: customs,
            models: Mutex::new(HashSet::new()),
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

    fn model_label(&self, model: &str) -> String {
        let mut m: String = model
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(MAX_MODEL_LEN)
            .collect();
        if m.is_empty() {
            m = "unknown".into();
        }
        let mut seen = self.models.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&m) || seen.len() < MAX_MODELS && seen.insert(m.clone()) {
            m
        } else {
            "other".into()
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
