//! Header transforms (`transforms.request` / `.response`, gateway-wide and per route) and the
//! per-request variables their values may hold.

use crate::at;
use crate::config::locate::Seg;
use crate::config::schema::{self, CredentialSource, TransformKind};
use crate::config::Problem;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    AgentId,
    RequestId,
    Route,
    ClientIp,
    RateLimitRemaining,
    RateLimitLimit,
    RateLimitReset,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Var(Var),
}

#[derive(Debug)]
enum Value {
    /// Fixed at load: no work per request.
    Fixed(HeaderValue),
    Template(Vec<Part>),
    Uuid,
    /// The API key the request authenticated with.
    AgentApiKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Only when the header is absent.
    Add,
    Set,
    Remove,
}

#[derive(Debug)]
pub struct Transform {
    op: Op,
    name: HeaderName,
    value: Option<Value>,
}

/// The per-request values transforms may use. `None`: unset, and a transform that uses it is
/// skipped.
pub struct Vars<'a> {
    pub agent_id: Option<&'a str>,
    pub request_id: &'a str,
    pub route: &'a str,
    pub client_ip: Option<IpAddr>,
    pub api_key: Option<&'a HeaderValue>,
    pub rate_limit: Option<(u64, u64, u64)>,
}

/// Where transforms write: a plain header map, or Pingora's heads (which keep header spellings).
pub trait Headers {
    fn has(&self, name: &HeaderName) -> bool;
    fn set(&mut self, name: &HeaderName, value: HeaderValue);
    fn remove(&mut self, name: &HeaderName);
}

impl Headers for HeaderMap {
    fn has(&self, name: &HeaderName) -> bool {
        self.contains_key(name)
    }
    fn set(&mut self, name: &HeaderName, value: HeaderValue) {
        self.insert(name.clone(), value);
    }
    fn remove(&mut self, name: &HeaderName) {
        HeaderMap::remove(self, name);
    }
}

macro_rules! pingora_headers {
    ($t:ty) => {
        impl Headers for $t {
            fn has(&self, name: &HeaderName) -> bool {
                self.headers.contains_key(name)
            }
            fn set(&mut self, name: &HeaderName, value: HeaderValue) {
                // Only fails for an invalid name, which compile() already refused.
                let _ = self.insert_header(name.clone(), value);
            }
            fn remove(&mut self, name: &HeaderName) {
                self.remove_header(name);
            }
        }
    };
}
pingora_headers!(pingora::http::RequestHeader);
pingora_headers!(pingora::http::ResponseHeader);

impl Transform {
    fn render(&self, vars: &Vars) -> Option<HeaderValue> {
        match self.value.as_ref()? {
            Value::Fixed(v) => Some(v.clone()),
            Value::Uuid => HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).ok(),
            Value::AgentApiKey => vars.api_key.cloned().map(|mut k| {
                k.set_sensitive(true);
                k
            }),
            Value::Template(parts) => {
                let mut out = String::new();
                for p in parts {
                    match p {
                        Part::Text(t) => out.push_str(t),
                        Part::Var(v) => match v {
                            Var::AgentId => out.push_str(vars.agent_id?),
                            Var::RequestId => out.push_str(vars.request_id),
                            Var::Route => out.push_str(vars.route),
                            Var::ClientIp => out.push_str(&vars.client_ip?.to_string()),
                            Var::RateLimitRemaining => {
                                out.push_str(&vars.rate_limit?.0.to_string())
                            }
                            Var::RateLimitLimit => out.push_str(&vars.rate_limit?.1.to_string()),
                            Var::RateLimitReset => out.push_str(&vars.rate_limit?.2.to_string()),
                        },
                    }
                }
                HeaderValue::from_str(&out).ok()
            }
        }
    }

    pub fn apply(&self, headers: &mut impl Headers, vars: &Vars) {
        match self.op {
            Op::Remove => headers.remove(&self.name),
            Op::Add if headers.has(&self.name) => {}
            Op::Add | Op::Set => {
                if let Some(v) = self.render(vars) {
                    headers.set(&self.name, v);
                }
            }
        }
    }
}

pub fn apply_all(list: &[Transform], headers: &mut impl Headers, vars: &Vars) {
    for t in list {
        t.apply(headers, vars);
    }
}

/// Errors never quote the value: it may hold a provider's key.
const NOT_A_HEADER_VALUE: &str =
    "is not a valid header value (visible ASCII, spaces and tabs only)";

fn parse_value(raw: &str) -> Result<Value, String> {
    if raw == "auto-generate-uuid" {
        return Ok(Value::Uuid);
    }
    let mut parts = Vec::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_string()));
        }
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| "holds an unterminated \"${\"".to_string())?;
        let name = &rest[start + 2..start + end];
        parts.push(Part::Var(match name {
            "agent_id" => Var::AgentId,
            "request_id" => Var::RequestId,
            "route" => Var::Route,
            "client_ip" => Var::ClientIp,
            "rate_limit_remaining" => Var::RateLimitRemaining,
            "rate_limit_limit" => Var::RateLimitLimit,
            "rate_limit_reset" => Var::RateLimitReset,
            _ => return Err(format!("\"${{{name}}}\" is not a request variable")),
        }));
        rest = &rest[start + end + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    if parts.iter().all(|p| matches!(p, Part::Text(_))) {
        return HeaderValue::from_str(raw)
            .map(Value::Fixed)
            .map_err(|_| NOT_A_HEADER_VALUE.to_string());
    }
    for p in &parts {
        if let Part::Text(t) = p {
            HeaderValue::from_str(t).map_err(|_| NOT_A_HEADER_VALUE.to_string())?;
        }
    }
    Ok(Value::Template(parts))
}

/// Compiles one list of transforms; `at` is the list's field path (`transforms.request`).
pub fn compile(list: &[schema::Transform], at: &[Seg]) -> Result<Vec<Transform>, Problem> {
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let here = |field: &str| {
            let mut p = at.to_vec();
            p.extend(at!(i, field));
            p
        };
        let whole = || {
            let mut p = at.to_vec();
            p.extend(at!(i));
            p
        };
        let (op, default_header) = match t.kind {
            TransformKind::AddHeader => (Op::Add, None),
            TransformKind::SetHeader => (Op::Set, None),
            TransformKind::RemoveHeader => (Op::Remove, None),
            TransformKind::InjectAuth => match t.source {
                Some(CredentialSource::AgentApiKey) => (Op::Set, Some("x-api-key")),
                Some(CredentialSource::Secret) => (Op::Set, Some("authorization")),
                None => {
                    return Err(Problem::new(
                        whole(),
                        "inject_auth needs source: agent_api_key or secret",
                    ))
                }
            },
        };
        if t.kind != TransformKind::InjectAuth && t.source.is_some() {
            return Err(Problem::new(
                here("source"),
                "only inject_auth takes a source",
            ));
        }
        let header = match (&t.header, default_header) {
            (Some(h), _) => h.0.clone(),
            (None, Some(d)) => d.to_string(),
            (None, None) => return Err(Problem::new(whole(), "needs header")),
        };
        let name = HeaderName::from_bytes(header.as_bytes()).map_err(|_| {
            Problem::new(here("header"), format!("{header:?} is not a header name"))
        })?;
        let value = match (t.kind, t.source, &t.value) {
            (TransformKind::RemoveHeader, _, Some(_)) => {
                return Err(Problem::new(here("value"), "remove_header takes no value"))
            }
            (TransformKind::RemoveHeader, _, None) => None,
            (TransformKind::InjectAuth, Some(CredentialSource::AgentApiKey), Some(_)) => {
                return Err(Problem::new(
                    here("value"),
                    "source agent_api_key sends the request's own key; it takes no value",
                ))
            }
            (TransformKind::InjectAuth, Some(CredentialSource::AgentApiKey), None) => {
                Some(Value::AgentApiKey)
            }
            (_, _, None) => return Err(Problem::new(whole(), "needs value")),
            (_, _, Some(v)) => Some(parse_value(v).map_err(|m| Problem::new(here("value"), m))?),
        };
        out.push(Transform { op, name, value });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::Text;

    fn t(kind: TransformKind, header: &str, value: Option<&str>) -> schema::Transform {
        schema::Transform {
            kind,
            header: Some(Text(header.into())),
            value: value.map(|v| Text(v.into())),
            source: None,
        }
    }

    fn vars<'a>(key: Option<&'a HeaderValue>) -> Vars<'a> {
        Vars {
            agent_id: Some("fin"),
            request_id: "r1",
            route: "llm",
            client_ip: Some("10.0.0.1".parse().unwrap()),
            api_key: key,
            rate_limit: None,
        }
    }

    #[test]
    fn add_keeps_set_replaces_remove_removes() {
        let list = compile(
            &[
                t(
                    TransformKind::AddHeader,
                    "x-request-id",
                    Some("auto-generate-uuid"),
                ),
                t(
                    TransformKind::SetHeader,
                    "x-who",
                    Some("${agent_id}@${client_ip}/${route}"),
                ),
                t(TransformKind::RemoveHeader, "x-drop", None),
                t(
                    TransformKind::AddHeader,
                    "x-left",
                    Some("${rate_limit_remaining}"),
                ),
            ],
            &[],
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("mine"));
        h.insert("x-who", HeaderValue::from_static("old"));
        h.insert("x-drop", HeaderValue::from_static("1"));
        apply_all(&list, &mut h, &vars(None));
        assert_eq!(h["x-request-id"], "mine");
        assert_eq!(h["x-who"], "fin@10.0.0.1/llm");
        assert!(!h.contains_key("x-drop"));
        assert!(
            !h.contains_key("x-left"),
            "unset variables skip the transform"
        );
    }

    #[test]
    fn inject_auth_sends_the_agent_key_or_a_secret() {
        let mut agent = t(TransformKind::InjectAuth, "x-api-key", None);
        agent.header = None;
        agent.source = Some(CredentialSource::AgentApiKey);
        let mut secret = t(TransformKind::InjectAuth, "", Some("Bearer sk-test"));
        secret.header = None;
        secret.source = Some(CredentialSource::Secret);
        let list = compile(&[agent, secret], &[]).unwrap();
        let key = HeaderValue::from_static("fk_1");
        let mut h = HeaderMap::new();
        apply_all(&list, &mut h, &vars(Some(&key)));
        assert_eq!(h["x-api-key"], "fk_1");
        assert_eq!(h["authorization"], "Bearer sk-test");
        let mut jwt_request = HeaderMap::new();
        apply_all(&list[..1], &mut jwt_request, &vars(None));
        assert!(!jwt_request.contains_key("x-api-key"));
    }

    #[test]
    fn bad_transforms_are_config_errors() {
        assert!(compile(&[t(TransformKind::SetHeader, "x", Some("${nope}"))], &[]).is_err());
        assert!(compile(&[t(TransformKind::SetHeader, "bad name", Some("v"))], &[]).is_err());
        assert!(compile(&[t(TransformKind::RemoveHeader, "x", Some("v"))], &[]).is_err());
        assert!(compile(&[t(TransformKind::AddHeader, "x", None)], &[]).is_err());
    }
}
