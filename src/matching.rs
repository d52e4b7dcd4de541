//! A route's `match`: conditions on the caller's agent id, the method, headers and JSON body
//! fields that must all hold for the route to take a request. Routes with the same path are
//! tried in order, those with a `match` first, so one path can send `data-agent` to one backend
//! and everyone else to another.

use crate::at;
use crate::config::schema;
use crate::config::Problem;
use http::{HeaderName, HeaderValue, Method};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Match {
    agents: Option<Vec<Arc<str>>>,
    methods: Option<Vec<Method>>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// JSON pointer, the text its value must have, and that text as a JSON number or boolean.
    body: Vec<(String, String, Option<serde_json::Value>)>,
}

impl Match {
    pub fn compile(m: &schema::Match, i: usize, authenticated: bool) -> Result<Match, Problem> {
        let agents = match &m.agent {
            Some(list) if !authenticated => {
                let _ = list;
                return Err(Problem::new(
                    at!("routes", i, "match", "agent"),
                    "needs a verified caller: set auth_required (or allowed_agents) on the route",
                ));
            }
            Some(list) => Some(list.0.iter().map(|a| Arc::from(a.0.as_str())).collect()),
            None => None,
        };
        let methods = match &m.method {
            Some(list) => Some(
                list.0
                    .iter()
                    .enumerate()
                    .map(|(j, t)| {
                        Method::from_bytes(t.0.to_ascii_uppercase().as_bytes()).map_err(|_| {
                            Problem::new(
                                at!("routes", i, "match", "method", j),
                                format!("{:?} is not a method", t.0),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            None => None,
        };
        let mut headers = Vec::new();
        for (name, value) in &m.headers {
            let at = || at!("routes", i, "match", "headers", name);
            let n = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| Problem::new(at(), format!("{name:?} is not a header name")))?;
            let v = HeaderValue::from_str(&value.0)
                .map_err(|_| Problem::new(at(), "is not a valid header value"))?;
            headers.push((n, v));
        }
        let mut body = Vec::new();
        for (field, value) in &m.body {
            let p = crate::text::json_pointer(field)
                .map_err(|e| Problem::new(at!("routes", i, "match", "body", field), e))?;
            let scalar = serde_json::from_str(&value.0)
                .ok()
                .filter(|v: &serde_json::Value| v.is_number() || v.is_boolean());
            body.push((p, value.0.clone(), scalar));
        }
        if agents.is_none() && methods.is_none() && headers.is_empty() && body.is_empty() {
            return Err(Problem::new(
                at!("routes", i, "match"),
                "holds no condition",
            ));
        }
        Ok(Match {
            agents,
            methods,
            headers,
            body,
        })
    }

    pub fn needs_body(&self) -> bool {
        !self.body.is_empty()
    }

    pub fn needs_agent(&self) -> bool {
        self.agents.is_some()
    }

    /// Method, headers and body fields (the agent is checked apart: it needs authentication).
    /// `body`: the request's JSON body, when it was read and parsed.
    pub fn request_holds(
        &self,
        method: &Method,
        headers: &http::HeaderMap,
        body: Option<&serde_json::Value>,
    ) -> bool {
        if self.methods.as_ref().is_some_and(|m| !m.contains(method)) {
            return false;
        }
        if !self
            .headers
            .iter()
            .all(|(n, v)| headers.get_all(n).iter().any(|h| h == v))
        {
            return false;
        }
        self.body.iter().all(|(pointer, want, scalar)| {
            match body.and_then(|b| b.pointer(pointer)) {
                Some(serde_json::Value::String(s)) => s == want,
                Some(v) => scalar.as_ref() == Some(v),
                None => false,
            }
        })
    }

    pub fn agent_holds(&self, agent: &str) -> bool {
        self.agents
            .as_ref()
            .is_none_or(|list| list.iter().any(|a| &**a == agent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_all_hold() {
        let m = Match {
            methods: Some(vec![Method::POST]),
            headers: vec![(
                HeaderName::from_static("x-tier"),
                HeaderValue::from_static("gold"),
            )],
            body: vec![
                ("/model".into(), "gpt-4o".into(), None),
                ("/n".into(), "2".into(), Some(serde_json::json!(2))),
            ],
            ..Match::default()
        };
        let mut h = http::HeaderMap::new();
        h.insert("x-tier", HeaderValue::from_static("gold"));
        let body = serde_json::json!({"model": "gpt-4o", "n": 2});
        assert!(m.request_holds(&Method::POST, &h, Some(&body)));
        assert!(!m.request_holds(&Method::GET, &h, Some(&body)));
        assert!(!m.request_holds(&Method::POST, &http::HeaderMap::new(), Some(&body)));
        assert!(!m.request_holds(&Method::POST, &h, None));
        let other = serde_json::json!({"model": "gpt-3", "n": 2});
        assert!(!m.request_holds(&Method::POST, &h, Some(&other)));
    }
}
