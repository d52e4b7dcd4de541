//! `caching.semantic`, checked: a route's block over the gateway-wide one, field by field (as
//! the rest of `caching`), with DESIGN §5.7's defaults.

use super::guards::Guard;
use super::request::TextFrom;
use crate::config::locate::{IntoSeg, Seg};
use crate::config::schema::{self, EmbedderKind, SemanticMode};
use crate::config::Problem;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a route's semantic settings come from, for located errors.
pub struct At {
    /// The field path of the route's `caching.semantic`, and of the gateway-wide one.
    pub own: Vec<Seg>,
    pub global: Vec<Seg>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `auto`, `request_body.<field>` or a JSON pointer.
    pub text: TextFrom,
    pub threshold: f32,
    pub embedder: EmbedderSettings,
    pub guards: Vec<Guard>,
    /// Shadow mode: semantic hits are recorded and compared, never served.
    pub shadow: bool,
    pub max_entries: usize,
    pub embed_timeout: Duration,
    pub store_timeout: Duration,
}

#[derive(Clone, PartialEq)]
pub enum EmbedderSettings {
    /// A sentence-transformers directory run in process.
    Local { model_dir: PathBuf },
    /// An OpenAI-compatible embeddings API: `{url}/embeddings`.
    OpenAi {
        url: String,
        model: Option<String>,
        api_key: Option<String>,
    },
}

/// Never shows the API key (configurations are printed in debug output).
impl std::fmt::Debug for EmbedderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmbedderSettings::Local { model_dir } => write!(f, "Local({})", model_dir.display()),
            EmbedderSettings::OpenAi { url, model, .. } => write!(f, "OpenAi({url}, {model:?})"),
        }
    }
}

pub const DEFAULT_THRESHOLD: f32 = 0.90;
pub const DEFAULT_MODEL_DIR: &str = "models/all-MiniLM-L6-v2";

/// A route's block over the gateway's: a field's value, and where to point an error about it.
struct Layers<'a> {
    own: Option<&'a schema::Semantic>,
    global: Option<&'a schema::Semantic>,
    at: &'a At,
}

impl<'a> Layers<'a> {
    fn get<T>(&self, f: impl Fn(&'a schema::Semantic) -> Option<T>) -> Option<T> {
        self.own.and_then(&f).or_else(|| self.global.and_then(&f))
    }

    /// The path of `name` in the block that sets it (the route's when it does).
    fn field(&self, name: &str, set: impl Fn(&schema::Semantic) -> bool) -> Vec<Seg> {
        let mut path = if self.own.is_some_and(set) {
            self.at.own.clone()
        } else {
            self.at.global.clone()
        };
        path.push(name.into_seg());
        path
    }
}

impl Settings {
    /// `own` over `global`; relative paths resolve against `config_dir`.
    pub fn compile(
        global: Option<&schema::Semantic>,
        own: Option<&schema::Semantic>,
        at: &At,
        config_dir: &Path,
    ) -> Result<Settings, Problem> {
        let l = Layers { own, global, at };
        let text = match l.get(|s| s.text.as_ref()) {
            None => TextFrom::Auto,
            Some(t) => TextFrom::parse(t)
                .map_err(|m| Problem::new(l.field("text", |s| s.text.is_some()), m))?,
        };
        let threshold = match l.get(|s| s.threshold.as_ref()) {
            None => DEFAULT_THRESHOLD,
            Some(t) => parse_threshold(t)
                .map_err(|m| Problem::new(l.field("threshold", |s| s.threshold.is_some()), m))?,
        };
        let guards = match l.get(|s| s.guards.as_ref()) {
            None => Guard::ALL.to_vec(),
            Some(list) => parse_guards(list, &l.field("guards", |s| s.guards.is_some()))?,
        };
        let embedder = l.get(|s| s.embedder.as_ref());
        let embedder_at = l.field("embedder", |s| s.embedder.is_some());
        let max_entries = l.get(|s| s.max_entries.map(|c| c.0)).unwrap_or(100_000);
        if max_entries == 0 {
            return Err(Problem::new(
                l.field("max_entries", |s| s.max_entries.is_some()),
                "must be at least 1",
            ));
        }
        let mode = l.get(|s| s.mode);
        Ok(Settings {
            text,
            threshold,
            embedder: embedder_settings(embedder, &embedder_at, config_dir)?,
            guards,
            shadow: mode == Some(SemanticMode::Shadow),
            max_entries: max_entries.min(usize::MAX as u64) as usize,
            embed_timeout: l
                .get(|s| s.embed_timeout)
                .map_or(Duration::from_millis(200), |d| d.0),
            store_timeout: l
                .get(|s| s.store_timeout)
                .map_or(Duration::from_millis(100), |d| d.0),
        })
    }
}

impl Settings {
    /// A caching route's semantic settings when its strategy (else the gateway's) is semantic.
    pub fn of_route(
        global: Option<&schema::Caching>,
        own: Option<&schema::Caching>,
        i: usize,
        config_dir: &Path,
    ) -> Result<Option<Settings>, Problem> {
        let strategy = own
            .and_then(|c| c.strategy)
            .or_else(|| global.and_then(|c| c.strategy));
        if strategy != Some(schema::CacheStrategy::Semantic) {
            return Ok(None);
        }
        let at = At {
            own: crate::at!("routes", i, "caching", "semantic"),
            global: crate::at!("caching", "semantic"),
        };
        let own = own.and_then(|c| c.semantic.as_ref());
        let settings = Settings::compile(
            global.and_then(|c| c.semantic.as_ref()),
            own,
            &at,
            config_dir,
        )?;
        Ok(Some(settings))
    }
}

fn parse_threshold(t: &str) -> Result<f32, String> {
    match t.trim().parse::<f32>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        _ => Err(format!(
            "{t:?} is not a threshold; expected a cosine similarity above 0 and at most 1, such as 0.90"
        )),
    }
}

fn parse_guards(list: &[crate::config::values::Text], at: &[Seg]) -> Result<Vec<Guard>, Problem> {
    let mut guards = Vec::new();
    for (i, name) in list.iter().enumerate() {
        let mut here = at.to_vec();
        here.push(i.into_seg());
        let g = Guard::parse(name).ok_or_else(|| {
            Problem::new(
                here,
                format!(
                    "{:?} is not a guard; expected negation, numbers or entities",
                    name.0
                ),
            )
        })?;
        if !guards.contains(&g) {
            guards.push(g);
        }
    }
    Ok(guards)
}

fn embedder_settings(
    e: Option<&schema::Embedder>,
    at: &[Seg],
    config_dir: &Path,
) -> Result<EmbedderSettings, Problem> {
    let here = |name: &str| {
        let mut p = at.to_vec();
        p.push(name.into_seg());
        p
    };
    let text = |t: &Option<crate::config::values::Text>| t.as_ref().map(|t| t.0.clone());
    match e.and_then(|e| e.kind).unwrap_or(EmbedderKind::Local) {
        EmbedderKind::Local => {
            let dir = e
                .and_then(|e| text(&e.model_dir))
                .or_else(|| std::env::var("CLAWGATE_MODEL_DIR").ok())
                .unwrap_or_else(|| DEFAULT_MODEL_DIR.into());
            Ok(EmbedderSettings::Local {
                model_dir: config_dir.join(dir),
            })
        }
        EmbedderKind::Openai => {
            let url = e.and_then(|e| text(&e.url)).ok_or_else(|| {
                Problem::new(
                    at.to_vec(),
                    "kind openai needs url: the API's base URL, such as http://127.0.0.1:8000/v1",
                )
            })?;
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(Problem::new(
                    here("url"),
                    format!("{url:?} is not an http:// or https:// URL"),
                ));
            }
            Ok(EmbedderSettings::OpenAi {
                url: url.trim_end_matches('/').to_string(),
                model: e.and_then(|e| text(&e.model)),
                api_key: e.and_then(|e| text(&e.api_key)),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::at;

    fn settings(yaml: &str) -> Result<Settings, Problem> {
        let file = crate::config::parse(yaml, "t.yaml").unwrap();
        let global = file.caching.as_ref().and_then(|c| c.semantic.as_ref());
        let route = file.routes.first().and_then(|r| r.caching.as_ref());
        let at = At {
            own: at!("routes", 0, "caching", "semantic"),
            global: at!("caching", "semantic"),
        };
        Settings::compile(
            global,
            route.and_then(|c| c.semantic.as_ref()),
            &at,
            Path::new("/etc/clawgate"),
        )
    }

    #[test]
    fn defaults_follow_the_design() {
        let s = settings("caching: {strategy: semantic}\n").unwrap();
        assert_eq!(s.text, TextFrom::Auto);
        assert_eq!(s.threshold, 0.90);
        assert_eq!(s.guards, Guard::ALL);
        assert!(!s.shadow);
        assert_eq!(s.max_entries, 100_000);
        assert_eq!(s.embed_timeout, Duration::from_millis(200));
        assert_eq!(s.store_timeout, Duration::from_millis(100));
        // Relative to the configuration file's folder (unless CLAWGATE_MODEL_DIR says where).
        if std::env::var_os("CLAWGATE_MODEL_DIR").is_none() {
            assert_eq!(
                s.embedder,
                EmbedderSettings::Local {
                    model_dir: PathBuf::from("/etc/clawgate/models/all-MiniLM-L6-v2")
                }
            );
        }
    }

    #[test]
    fn a_route_overrides_field_by_field() {
        let s = settings(
            "caching:\n  semantic: {threshold: 0.95, guards: [numbers], mode: shadow}\nroutes:\n  - path: /x\n    backend_url: http://a\n    caching: {semantic: {threshold: \"0.85\", embedder: {kind: openai, url: \"http://e:8000/v1/\", api_key: sk-test-secret}}}\n",
        )
        .unwrap();
        assert_eq!(s.threshold, 0.85);
        assert_eq!(s.guards, [Guard::Numbers]);
        assert!(s.shadow);
        assert_eq!(
            s.embedder,
            EmbedderSettings::OpenAi {
                url: "http://e:8000/v1".into(),
                model: None,
                api_key: Some("sk-test-secret".into())
            }
        );
        assert!(
            !format!("{s:?}").contains("sk-test-secret"),
            "a key in debug output"
        );
    }

    #[test]
    fn bad_values_are_located() {
        let e = settings("caching:\n  semantic: {threshold: 0}\n").unwrap_err();
        assert_eq!(
            crate::config::locate::format_path(&e.path),
            "caching.semantic.threshold"
        );
        let e = settings("caching:\n  semantic: {text: \"request_headers.x\"}\n").unwrap_err();
        assert_eq!(
            crate::config::locate::format_path(&e.path),
            "caching.semantic.text"
        );
        let e = settings("caching:\n  semantic: {max_entries: 0}\n").unwrap_err();
        assert_eq!(
            crate::config::locate::format_path(&e.path),
            "caching.semantic.max_entries"
        );
        let e = settings("caching:\n  semantic: {embedder: {kind: openai, url: \"ftp://x\"}}\n")
            .unwrap_err();
        assert_eq!(
            crate::config::locate::format_path(&e.path),
            "caching.semantic.embedder.url"
        );
    }
}
