//! `google.api.http` path templates (`/v1/{name=shelves/*}/books/{book.id}:publish`): parsed
//! once at load, matched against request paths segment by segment.

/// One segment of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    /// `*`: one segment.
    One,
    /// `**`: the rest of the path (only last).
    Rest,
}

/// A variable: the message field it sets and the segments it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Var {
    pub field: Vec<String>,
    start: usize,
    end: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segs: Vec<Seg>,
    vars: Vec<Var>,
    verb: Option<String>,
}

impl Template {
    /// Parses a template; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Template, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| format!("{text:?} must start with \"/\""))?;
        let (body, verb) = split_verb(rest);
        let mut t = Template {
            segs: Vec::new(),
            vars: Vec::new(),
            verb: verb.map(str::to_string),
        };
        let mut chars = body;
        while !chars.is_empty() {
            if let Some(inner) = chars.strip_prefix('{') {
                let close = inner
                    .find('}')
                    .ok_or_else(|| format!("{text:?}: a \"{{\" is not closed"))?;
                t.variable(&inner[..close], text)?;
                chars = &inner[close + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                t.segs.push(segment(&chars[..end], text)?);
                chars = &chars[end..];
            }
            chars = match chars.strip_prefix('/') {
                Some("") => return Err(format!("{text:?} must not end with \"/\"")),
                Some(next) => next,
                None if chars.is_empty() => chars,
                None => return Err(format!("{text:?}: a segment must end at \"/\"")),
            };
        }
        if let Some(i) = t.segs.iter().position(|s| *s == Seg::Rest) {
            if i + 1 != t.segs.len() {
                return Err(format!("{text:?}: \"**\" must be the last segment"));
            }
        }
        Ok(t)
    }

    /// `{field}` or `{field=segments}`.
    fn variable(&mut self, inner: &str, text: &str) -> Result<(), String> {
        let (path, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
        let field: Vec<String> = path.split('.').map(str::to_string).collect();
        if field.iter().any(|f| !is_ident(f)) {
            return Err(format!("{text:?}: {path:?} is not a field path"));
        }
        let start = self.segs.len();
        for s in pattern.split('/') {
            self.segs.push(segment(s, text)?);
        }
        self.vars.push(Var {
            field,
            start,
            end: self.segs.len(),
        });
        Ok(())
    }

    /// How many literal segments (and verb) it has: the more, the more specific.
    pub fn literals(&self) -> usize {
        let lits = self.segs.iter().filter(|s| matches!(s, Seg::Literal(_)));
        lits.count() + usize::from(self.verb.is_some())
    }

    /// The variables' fields, in template order.
    pub fn fields(&self) -> impl Iterator<Item = &[String]> {
        self.vars.iter().map(|v| v.field.as_slice())
    }

    /// The variables' values when `path` (no query) matches, percent-decoded; a multi-segment
    /// value keeps its `/`.
    pub fn matches(&self, path: &str) -> Option<Vec<(&[String], String)>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(v) => rest.strip_suffix(v.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let parts: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        // Where each template segment starts in `parts` (`**` takes what is left).
        let mut at = Vec::with_capacity(self.segs.len() + 1);
        let mut i = 0;
        for s in &self.segs {
            at.push(i);
            match s {
                Seg::Literal(l) => {
                    if parts.get(i) != Some(&l.as_str()) {
                        return None;
                    }
                    i += 1;
                }
                Seg::One => {
                    if parts.get(i).is_none_or(|p| p.is_empty()) {
                        return None;
                    }
                    i += 1;
                }
                Seg::Rest => i = parts.len(),
            }
        }
        at.push(i);
        if i != parts.len() {
            return None;
        }
        let values = self.vars.iter().map(|v| {
            let taken = &parts[at[v.start]..at[v.end]];
            let decoded: Vec<String> = taken.iter().map(|p| percent_decode(p)).collect();
            (v.field.as_slice(), decoded.join("/"))
        });
        Some(values.collect())
    }
}

/// `path:verb` → (path, verb); a `:` inside a `{...}` is not a verb.
fn split_verb(s: &str) -> (&str, Option<&str>) {
    let after_vars = s.rfind('}').map_or(0, |i| i + 1);
    match s[after_vars..].rfind(':') {
        Some(i) => (&s[..after_vars + i], Some(&s[after_vars + i + 1..])),
        None => (s, None),
    }
}

fn segment(s: &str, text: &str) -> Result<Seg, String> {
    match s {
        "*" => Ok(Seg::One),
        "**" => Ok(Seg::Rest),
        "" => Err(format!("{text:?} has an empty segment")),
        l if l.contains(['{', '}', '*', '=']) => {
            Err(format!("{text:?}: {l:?} is not a valid segment"))
        }
        l => Ok(Seg::Literal(l.to_string())),
    }
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `%XX` decoded; invalid escapes and non-UTF-8 results are kept as written.
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied(), b.get(i + 2).copied()) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &str, p: &str) -> Option<Vec<(String, String)>> {
        let t = Template::parse(t).expect("template");
        t.matches(p)
            .map(|v| v.into_iter().map(|(f, s)| (f.join("."), s)).collect())
    }

    #[test]
    fn variables_literals_and_wildcards() {
        assert_eq!(
            m(
                "/v1/shelves/{shelf}/items/{item_id}",
                "/v1/shelves/s1/items/a%20b"
            ),
            Some(vec![
                ("shelf".into(), "s1".into()),
                ("item_id".into(), "a b".into())
            ])
        );
        assert_eq!(m("/v1/shelves/{shelf}", "/v1/shelves/s1/items"), None);
        assert_eq!(m("/v1/shelves/{shelf}", "/v1/shelves/"), None);
        assert_eq!(
            m(
                "/v1/{name=shelves/*}/books/{book.id}",
                "/v1/shelves/7/books/9"
            ),
            Some(vec![
                ("name".into(), "shelves/7".into()),
                ("book.id".into(), "9".into())
            ])
        );
        assert_eq!(
            m("/files/{path=**}", "/files/a/b/c"),
            Some(vec![("path".into(), "a/b/c".into())])
        );
        assert_eq!(m("/v1/*/x", "/v1/any/x"), Some(vec![]));
    }

    #[test]
    fn verbs() {
        assert_eq!(
            m("/v1/items/{id}:restock", "/v1/items/4:restock"),
            Some(vec![("id".into(), "4".into())])
        );
        assert_eq!(m("/v1/items/{id}:restock", "/v1/items/4"), None);
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "v1/x", "/v1/{x", "/v1/**/x", "/v1//x", "/v1/x/", "/v1/{1a}", "/v1/a{b}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
