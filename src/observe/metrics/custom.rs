//! Custom metrics (`monitoring.metrics.custom_metrics`): which labels they may declare, how they
//! are built and registered next to the built-in series, and the series a request records in.

use super::BUCKETS;
use crate::at;
use crate::config::locate::Seg;
use crate::config::schema::{self, MetricKind};
use crate::config::Problem;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

/// The labels a custom metric may declare, and where their values come from.
const CUSTOM_LABELS: &[&str] = &["agent_id", "model", "route", "method", "status"];

/// One series of a custom metric.
pub(super) enum CustomSeries {
    Counter(IntCounter),
    Histogram(Histogram),
    Gauge(prometheus::Gauge),
}

impl CustomSeries {
    pub(super) fn observe(&self, seconds: f64) {
        match self {
            CustomSeries::Counter(m) => m.inc(),
            CustomSeries::Histogram(m) => m.observe(seconds),
            CustomSeries::Gauge(m) => m.set(seconds),
        }
    }
}

#[derive(Clone)]
pub(super) enum CustomKind {
    Counter(IntCounterVec),
    Histogram(HistogramVec),
    Gauge(GaugeVec),
}

#[derive(Clone)]
pub(super) struct Custom {
    /// The article's token counter: counts tokens, not requests.
    pub(super) tokens: bool,
    /// Labelled only by route, method and status: its series are kept per route.
    pub(super) per_route: bool,
    pub(super) labels: Vec<&'static str>,
    pub(super) kind: CustomKind,
}

impl Custom {
    pub(super) fn series(&self, values: &[&str]) -> CustomSeries {
        match &self.kind {
            CustomKind::Counter(m) => CustomSeries::Counter(m.with_label_values(values)),
            CustomKind::Histogram(m) => CustomSeries::Histogram(m.with_label_values(values)),
            CustomKind::Gauge(m) => CustomSeries::Gauge(m.with_label_values(values)),
        }
    }
}

/// Builds the configured custom metrics and registers them after the built-in ones, in order:
/// the first bad one is the one reported.
pub(super) fn build_all(
    prefix: &str,
    custom: &[schema::CustomMetric],
    registry: &Registry,
) -> Result<Vec<Custom>, Problem> {
    custom
        .iter()
        .enumerate()
        .map(|(i, c)| build(prefix, i, c, registry))
        .collect()
}

fn build(
    prefix: &str,
    i: usize,
    c: &schema::CustomMetric,
    registry: &Registry,
) -> Result<Custom, Problem> {
    let labels = labels(i, c)?;
    let tokens = c.name.0 == "agent_token_usage";
    let here = || at!("monitoring", "metrics", "custom_metrics", i, "name");
    let kind = kind(prefix, c, help(c, tokens), &labels)
        .map_err(|e| Problem::new(here(), e.to_string()))?;
    register(&kind, registry, here)?;
    Ok(Custom {
        tokens,
        per_route: labels
            .iter()
            .all(|l| matches!(*l, "route" | "method" | "status")),
        labels,
        kind,
    })
}

/// The declared labels, each one clawgate knows how to fill.
fn labels(i: usize, c: &schema::CustomMetric) -> Result<Vec<&'static str>, Problem> {
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
    Ok(labels)
}

fn help(c: &schema::CustomMetric, tokens: bool) -> String {
    c.help.as_ref().map_or_else(
        || {
            if tokens {
                "LLM tokens (prompt + completion) used, by agent and model.".to_string()
            } else {
                format!("{} (custom)", c.name.0)
            }
        },
        |h| h.0.clone(),
    )
}

fn kind(
    prefix: &str,
    c: &schema::CustomMetric,
    help: String,
    labels: &[&str],
) -> Result<CustomKind, prometheus::Error> {
    let name = |n: &str| format!("{prefix}{n}");
    Ok(match c.kind {
        MetricKind::Counter => {
            // Prometheus convention: counters end in _total.
            let n = if c.name.ends_with("_total") {
                name(&c.name)
            } else {
                name(&format!("{}_total", c.name.0))
            };
            CustomKind::Counter(IntCounterVec::new(Opts::new(n, help), labels)?)
        }
        MetricKind::Histogram => CustomKind::Histogram(HistogramVec::new(
            HistogramOpts::new(name(&c.name), help).buckets(BUCKETS.to_vec()),
            labels,
        )?),
        MetricKind::Gauge => {
            CustomKind::Gauge(GaugeVec::new(Opts::new(name(&c.name), help), labels)?)
        }
    })
}

fn register(
    kind: &CustomKind,
    registry: &Registry,
    here: impl Fn() -> Vec<Seg>,
) -> Result<(), Problem> {
    let collector: Box<dyn prometheus::core::Collector> = match kind {
        CustomKind::Counter(c) => Box::new(c.clone()),
        CustomKind::Histogram(h) => Box::new(h.clone()),
        CustomKind::Gauge(g) => Box::new(g.clone()),
    };
    registry.register(collector).map_err(|e| {
        Problem::new(
            here(),
            format!("{e} (a custom metric may not reuse a built-in name)"),
        )
    })
}
