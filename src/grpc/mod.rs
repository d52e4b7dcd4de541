//! HTTP/JSON → gRPC transcoding (DESIGN §5.4): a route's descriptors, loaded from a descriptor
//! set or compiled from `.proto` files at load; each method's `google.api.http` bindings; which
//! method a request calls and the message it sends. The call itself is `proxy::transcode`.

mod descriptors;
pub mod message;
mod template;
pub mod wire;

use crate::at;
use crate::config::schema::GrpcTranscode;
use crate::config::Problem;
use prost_reflect::{DynamicMessage, FieldDescriptor, MethodDescriptor, Value};
use std::path::Path;
use template::Template;

/// Where a request's JSON body goes in the request message.
#[derive(Debug, Clone)]
pub enum Body {
    /// No body (the message is made of the path and the query).
    None,
    /// `body: "*"`: the body is the message.
    All,
    /// `body: "field"`: the body is that field.
    Field(FieldDescriptor),
}

/// One `google.api.http` binding (or one of its `additional_bindings`).
#[derive(Debug)]
struct Binding {
    verb: http::Method,
    template: Template,
    body: Body,
    method: usize,
    /// Literal segments: the most specific of several matching templates wins.
    literals: usize,
}

/// A route's transcoding table.
#[derive(Debug)]
pub struct Transcoder {
    methods: Vec<MethodDescriptor>,
    bindings: Vec<Binding>,
}

/// The method a request calls and how its message is made.
pub struct Found<'a> {
    pub method: &'a MethodDescriptor,
    pub body: &'a Body,
    pub vars: Vec<(&'a [String], String)>,
    /// The gRPC path: `/package.Service/Method`.
    pub path: String,
}

impl Transcoder {
    /// Loads `routes[i].grpc_transcode`; paths are relative to the configuration's folder.
    pub fn load(g: &GrpcTranscode, i: usize, config_dir: &Path) -> Result<Transcoder, Problem> {
        let here = |field: &str| at!("routes", i, "grpc_transcode", field);
        let pool = descriptors::load(g, config_dir).map_err(|(f, m)| Problem::new(here(f), m))?;
        let services = match &g.services {
            Some(names) => {
                let mut out = Vec::new();
                for (j, n) in names.iter().enumerate() {
                    let s = pool.get_service_by_name(n).ok_or_else(|| {
                        Problem::new(
                            at!("routes", i, "grpc_transcode", "services", j),
                            format!("the descriptors have no service {:?}", n.0),
                        )
                    })?;
                    out.push(s);
                }
                out
            }
            None => (pool.services())
                .filter(|s| !s.full_name().starts_with("google."))
                .collect(),
        };
        if services.is_empty() {
            return Err(Problem::new(
                here("services"),
                "the descriptors define no service",
            ));
        }
        let http = pool.get_extension_by_name("google.api.http");
        let mut t = Transcoder {
            methods: Vec::new(),
            bindings: Vec::new(),
        };
        for m in services.iter().flat_map(|s| s.methods()) {
            if m.is_client_streaming() {
                continue;
            }
            let rule = http.as_ref().and_then(|x| {
                let o = m.options();
                o.has_extension(x).then(|| o.get_extension(x).into_owned())
            });
            if let Some(Value::Message(rule)) = rule {
                t.bind(&m, &rule, true).map_err(|e| {
                    Problem::new(here("services"), format!("{}: {e}", m.full_name()))
                })?;
            }
            t.methods.push(m);
        }
        Ok(t)
    }

    /// Adds the bindings of method `m`'s `HttpRule` (and its additional bindings).
    fn bind(
        &mut self,
        m: &MethodDescriptor,
        rule: &DynamicMessage,
        top: bool,
    ) -> Result<(), String> {
        let text = |name: &str| {
            rule.get_field_by_name(name)
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        let verbs = ["get", "put", "post", "delete", "patch"];
        let mut pattern = verbs
            .iter()
            .find(|v| rule.has_field_by_name(v))
            .map(|v| (v.to_uppercase(), text(v)));
        let custom = (rule.has_field_by_name("custom"))
            .then(|| rule.get_field_by_name("custom").map(|c| c.into_owned()))
            .flatten();
        if let Some(Value::Message(c)) = custom {
            let get = |f: &str| {
                c.get_field_by_name(f)
                    .and_then(|v| v.as_str().map(str::to_string))
            };
            pattern = get("kind").zip(get("path"));
        }
        if let Some((verb, path)) = pattern {
            let verb = http::Method::from_bytes(verb.as_bytes())
                .map_err(|_| format!("{verb:?} is not an HTTP method"))?;
            let template = Template::parse(&path)?;
            for f in template.fields() {
                field_path(&m.input(), f).map_err(|e| format!("{path:?}: {e}"))?;
            }
            let body = match text("body").as_str() {
                "" => Body::None,
                "*" => Body::All,
                f => Body::Field(message::field(&m.input(), f).ok_or_else(|| {
                    format!("body {f:?}: {} has no such field", m.input().name())
                })?),
            };
            if !text("response_body").is_empty() {
                return Err("response_body is not supported".into());
            }
            let literals = template.literals();
            self.bindings.push(Binding {
                verb,
                template,
                body,
                method: self.methods.len(),
                literals,
            });
        }
        if top {
            if let Some(more) = rule.get_field_by_name("additional_bindings") {
                for b in more.as_list().unwrap_or(&[]) {
                    if let Value::Message(b) = b {
                        self.bind(m, b, false)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The method `verb path` calls: the most specific matching binding, else the fallback
    /// `POST …/package.Service/Method` (the message is the body).
    pub fn find(&self, verb: &http::Method, path: &str) -> Option<Found<'_>> {
        let best = (self.bindings.iter())
            .filter(|b| b.verb == *verb)
            .filter_map(|b| Some((b, b.template.matches(path)?)))
            .max_by_key(|(b, _)| b.literals);
        if let Some((b, vars)) = best {
            let method = self.methods.get(b.method)?;
            return Some(Found {
                path: grpc_path(method),
                method,
                body: &b.body,
                vars,
            });
        }
        if verb != http::Method::POST {
            return None;
        }
        let mut parts = path.rsplit('/');
        let (name, service) = (parts.next()?, parts.next()?);
        let method = (self.methods.iter())
            .find(|m| m.name() == name && m.parent_service().full_name() == service)?;
        Some(Found {
            path: grpc_path(method),
            method,
            body: &Body::All,
            vars: Vec::new(),
        })
    }
}

fn grpc_path(m: &MethodDescriptor) -> String {
    format!("/{}/{}", m.parent_service().full_name(), m.name())
}

/// Checks that `path` names a scalar field of `m` (through singular messages).
fn field_path(m: &prost_reflect::MessageDescriptor, path: &[String]) -> Result<(), String> {
    let mut at = m.clone();
    for (k, name) in path.iter().enumerate() {
        let f = message::field(&at, name)
            .ok_or_else(|| format!("{} has no field {name:?}", at.name()))?;
        match f.kind() {
            prost_reflect::Kind::Message(inner) if k + 1 < path.len() && !f.is_list() => at = inner,
            _ if k + 1 < path.len() => return Err(format!("{name:?} is not a message")),
            _ => {}
        }
    }
    Ok(())
}
