//! The configuration file: its schema (unknown keys refused), its values (`${VAR}`, durations,
//! rates, sizes), parsing, and errors located at file, line, column and field. Imports no domain
//! module: each of those compiles its own section, and `runtime/` puts the tables together.

pub mod locate;
pub mod schema;
pub mod schema_limits;
pub mod values;

use locate::{format_path, locate, Seg};
use std::fmt;
use std::path::Path;

/// A configuration error: where (file, line, column, field path) and what was expected.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, ":{l}:{c}")?;
        }
        if self.path.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// A semantic problem found after parsing, located by its field path.
#[derive(Debug, Clone)]
pub struct Problem {
    pub path: Vec<Seg>,
    pub message: String,
}

impl Problem {
    pub fn new(path: Vec<Seg>, message: impl Into<String>) -> Self {
        Problem {
            path,
            message: message.into(),
        }
    }
}

/// Builds a field path: `at!("routes", 2, "path")`.
#[macro_export]
macro_rules! at {
    ($($seg:expr),* $(,)?) => {
        vec![$($crate::config::locate::IntoSeg::into_seg($seg)),*]
    };
}

/// Reads a configuration file: its text, and its name for errors.
pub fn read(path: &Path) -> Result<(String, String), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        column: None,
        path: String::new(),
        message: format!("cannot read the file: {}", crate::text::io_reason(&e)),
    })?;
    Ok((text, file))
}

/// A problem found after parsing, placed at its line and column in `text`.
pub fn located(text: &str, file: &str, p: Problem) -> ConfigError {
    let (line, column) = locate(text, &p.path).unzip();
    ConfigError {
        file: file.to_string(),
        line,
        column,
        path: format_path(&p.path),
        message: p.message,
    }
}

/// Parses configuration text (with `${VAR}` interpolation) into the schema; `file` names it in
/// errors.
pub fn parse(text: &str, file: &str) -> Result<schema::File, ConfigError> {
    if text.trim().is_empty() {
        return Ok(schema::File::default());
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let segs: Vec<Seg> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                _ => None,
            })
            .collect();
        let inner = e.into_inner();
        // serde_yaml_ng stamps errors raised inside a value with the position of the enclosing
        // mapping; the field path finds the value itself.
        let loc = (!segs.is_empty())
            .then(|| locate(text, &segs))
            .flatten()
            .or_else(|| inner.location().map(|l| (l.line(), l.column())));
        ConfigError {
            file: file.to_string(),
            line: loc.map(|l| l.0),
            column: loc.map(|l| l.1),
            path: if path == "." { String::new() } else { path },
            message: clean_message(&inner.to_string()),
        }
    })
}

/// serde_yaml_ng appends " at line L column C" itself; we print the location up front instead.
fn clean_message(msg: &str) -> String {
    let msg = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    let msg = msg.split_once(": ").map_or(msg, |(head, tail)| {
        // "routes[0]: unknown field ..." — serde_yaml_ng prefixes its own path; drop it.
        if head.contains('.') || head.contains('[') || !head.contains(' ') {
            tail
        } else {
            msg
        }
    });
    msg.replace('`', "\"")
}
