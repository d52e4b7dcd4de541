//! Finds the line and column of a field path (`routes[2].backend_weights`) in a YAML text.
//!
//! serde_yaml_ng has no spans, but it stamps every error with the position where it was raised;
//! so we walk the document with a seed that raises an error exactly at the target node.

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub fn format_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

const FOUND: &str = "clawgate-locate-found";

/// Returns the 1-based (line, column) of the node at `path`, or of its nearest existing parent.
pub fn locate(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    (0..=path.len())
        .rev()
        .find_map(|n| locate_exact(text, &path[..n]))
}

fn locate_exact(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    match (Walk {
        target: path,
        depth: 0,
    })
    .deserialize(de)
    {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

struct Walk<'a> {
    target: &'a [Seg],
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Walk<'_> {
    fn found<E: de::Error>(&self) -> Result<(), E> {
        Err(E::custom(FOUND))
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth == self.target.len() {
            return self.found();
        }
        while let Some(key) = map.next_key::<serde_yaml_ng::Value>()? {
            let name = match &key {
                serde_yaml_ng::Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            };
            if self.target[self.depth] == Seg::Key(name) {
                map.next_value_seed(Walk {
                    target: self.target,
                    depth: self.depth + 1,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            if self.depth < self.target.len() && self.target[self.depth] == Seg::Index(i) {
                let seed = Walk {
                    target: self.target,
                    depth: self.depth + 1,
                };
                if seq.next_element_seed(seed)?.is_none() {
                    return Ok(());
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

impl Walk<'_> {
    fn scalar<E: de::Error>(&self) -> Result<(), E> {
        if self.depth == self.target.len() {
            self.found()
        } else {
            Ok(())
        }
    }
}

/// Conversion for the `at!` macro.
pub trait IntoSeg {
    fn into_seg(self) -> Seg;
}

impl IntoSeg for &str {
    fn into_seg(self) -> Seg {
        Seg::Key(self.to_string())
    }
}

impl IntoSeg for &String {
    fn into_seg(self) -> Seg {
        Seg::Key(self.clone())
    }
}

impl IntoSeg for usize {
    fn into_seg(self) -> Seg {
        Seg::Index(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "a: 1\nroutes:\n  - path: /x\n  - path: /y\n    backend_weights: {v1: 9}\n";

    #[test]
    fn finds_nested_keys_and_list_items() {
        let p = [
            Seg::Key("routes".into()),
            Seg::Index(1),
            Seg::Key("backend_weights".into()),
        ];
        assert_eq!(format_path(&p), "routes[1].backend_weights");
        assert_eq!(locate(DOC, &p).map(|l| l.0), Some(5));
        let p = [
            Seg::Key("routes".into()),
            Seg::Index(0),
            Seg::Key("path".into()),
        ];
        assert_eq!(locate(DOC, &p).map(|l| l.0), Some(3));
        // A missing leaf falls back to its parent.
        let p = [
            Seg::Key("routes".into()),
            Seg::Index(0),
            Seg::Key("nope".into()),
        ];
        assert_eq!(locate(DOC, &p).map(|l| l.0), Some(3));
    }
}
