//! MCP series (DESIGN §5.2): requests by server, method, tool, agent and outcome, and tool call
//! durations. Tool names come from clients, so their label values are capped.

use super::Registrar;
use crate::config::Problem;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec};
use std::collections::HashSet;
use std::sync::RwLock;

/// Distinct `tool` label values kept; later ones are counted as `other`.
const MAX_TOOLS: usize = 256;
const MAX_TOOL_LEN: usize = 128;

pub struct Mcp {
    pub requests: IntCounterVec,
    pub tool_seconds: HistogramVec,
    tools: RwLock<HashSet<String>>,
}

/// One MCP exchange, as the metrics count it.
pub struct Exchange<'a> {
    pub route: &'a str,
    pub server: &'a str,
    pub method: &'a str,
    pub tool: Option<&'a str>,
    pub agent_id: Option<&'a str>,
    pub outcome: &'a str,
    pub seconds: f64,
}

impl Mcp {
    pub(super) fn new(r: &Registrar) -> Result<Mcp, Problem> {
        Ok(Mcp {
            requests: r.counter(
                "mcp_requests_total",
                "MCP messages through the gateway, by server, method, tool, agent and outcome.",
                &["route", "server", "method", "tool", "agent_id", "outcome"],
            )?,
            tool_seconds: r.register(HistogramVec::new(
                HistogramOpts::new(
                    r.name("mcp_tool_duration_seconds"),
                    "Time of MCP tool calls.",
                )
                .buckets(super::BUCKETS.to_vec()),
                &["server", "tool"],
            ))?,
            tools: RwLock::new(HashSet::new()),
        })
    }

    pub fn observe(&self, e: &Exchange) {
        let tool = e.tool.map_or_else(String::new, |t| self.tool_label(t));
        let agent = e.agent_id.unwrap_or("anonymous");
        (self.requests)
            .with_label_values(&[e.route, e.server, e.method, &tool, agent, e.outcome])
            .inc();
        if e.method == "tools/call" && e.outcome == "ok" {
            (self.tool_seconds.with_label_values(&[e.server, &tool])).observe(e.seconds);
        }
    }

    fn tool_label(&self, tool: &str) -> String {
        if tool.len() > MAX_TOOL_LEN {
            return "other".into();
        }
        // Known names only take the read lock, which readers share.
        let known = self.tools.read().unwrap_or_else(|p| p.into_inner());
        if known.contains(tool) {
            return tool.to_string();
        }
        drop(known);
        let mut seen = self.tools.write().unwrap_or_else(|p| p.into_inner());
        if seen.len() < MAX_TOOLS {
            seen.insert(tool.to_string());
            tool.to_string()
        } else {
            "other".into()
        }
    }
}
