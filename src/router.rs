//! Request-path normalisation and route patterns.

use std::borrow::Cow;

/// Why a request path was refused (→ 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadEscape,
    EncodedSlash,
    Nul,
    NotUtf8,
    AboveRoot,
}

impl PathError {
    pub fn message(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path must start with \"/\"",
            PathError::BadEscape => "the request path holds an invalid percent-escape",
            PathError::EncodedSlash => "the request path holds an encoded \"/\" (%2F)",
            PathError::Nul => "the request path holds a NUL byte",
            PathError::NotUtf8 => "the request path is not valid UTF-8 once decoded",
            PathError::AboveRoot => "the request path climbs above \"/\"",
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalises a request path: decodes percent-escapes of unreserved characters (others keep
/// their escape, in upper case), collapses `//`, resolves `.` and `..`. Refuses paths that climb
/// above `/`, hold an encoded `/` or a NUL, or are not UTF-8 once decoded.
///
/// Returns the input unchanged (borrowed) when it is already normal — the common case.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if !needs_work(bytes)? {
        return Ok(Cow::Borrowed(path));
    }
    let partly = decode(path)?;
    Ok(Cow::Owned(resolve_segments(&partly)?))
}

/// One pass over the bytes: most paths need no work at all. A NUL is refused here, before any
/// escape is looked at.
#[inline]
fn needs_work(bytes: &[u8]) -> Result<bool, PathError> {
    let mut needs_work = false;
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            0 => return Err(PathError::Nul),
            b'%' => needs_work = true,
            b'/' if matches!(bytes.get(i + 1), Some(b'/' | b'.')) => needs_work = true,
            _ => {}
        }
    }
    Ok(needs_work)
}

/// Percent-decoding: checks the fully decoded form, keeps only unreserved ones decoded.
fn decode(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut decoded_full = Vec::with_capacity(bytes.len());
    let mut partly = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (h, l) = match (
                bytes.get(i + 1).and_then(|&c| hex(c)),
                bytes.get(i + 2).and_then(|&c| hex(c)),
            ) {
                (Some(h), Some(l)) => (h, l),
                _ => return Err(PathError::BadEscape),
            };
            let c = h * 16 + l;
            match c {
                0 => return Err(PathError::Nul),
                b'/' => return Err(PathError::EncodedSlash),
                _ => {}
            }
            decoded_full.push(c);
            if is_unreserved(c) {
                partly.push(c as char);
            } else {
                partly.push('%');
                partly.push(char::from(b"0123456789ABCDEF"[(c >> 4) as usize]));
                partly.push(char::from(b"0123456789ABCDEF"[(c & 15) as usize]));
            }
            i += 3;
        } else {
            decoded_full.push(b);
            // `path` is a &str, so multi-byte characters arrive whole; copy them byte-run-wise.
            let ch_len = utf8_len(b);
            partly.push_str(&path[i..i + ch_len]);
            decoded_full.extend_from_slice(&bytes[i + 1..i + ch_len]);
            i += ch_len;
        }
    }
    if std::str::from_utf8(&decoded_full).is_err() {
        return Err(PathError::NotUtf8);
    }
    Ok(partly)
}

/// Collapses empty and `.` segments and resolves `..`, keeping a trailing `/`.
fn resolve_segments(partly: &str) -> Result<String, PathError> {
    let trailing_slash = partly.ends_with('/') || partly.ends_with("/.") || partly.ends_with("/..");
    let mut segs: Vec<&str> = Vec::new();
    for seg in partly.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if segs.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(partly.len());
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

/// A route pattern on the full path (`base_path` + `path`). `*` at the end matches the rest
/// (a trailing `/*` also matches the bare prefix); `*` elsewhere matches within one segment.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    literal_prefix_len: usize,
    has_wildcard: bool,
}

impl Pattern {
    pub fn new(full: &str) -> Result<Pattern, String> {
        if !full.starts_with('/') {
            return Err(format!("{full:?} must start with \"/\""));
        }
        if full.contains("**") {
            return Err(format!(
                "{full:?}: \"**\" is not supported; a trailing \"*\" already matches the rest"
            ));
        }
        if full.contains('?') || full.contains('#') {
            return Err(format!(
                "{full:?}: a route path cannot hold a query or fragment"
            ));
        }
        match normalise(&full.replace('*', "x")) {
            Ok(n) if n == full.replace('*', "x") => {}
            _ => {
                return Err(format!(
                "{full:?} is not a normalised path (no \"//\", \".\", \"..\" or percent-escapes)"
            ))
            }
        }
        let literal_prefix_len = full.find('*').unwrap_or(full.len());
        Ok(Pattern {
            source: full.to_string(),
            literal_prefix_len,
            has_wildcard: full.contains('*'),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The part before the first `*`.
    pub fn literal_prefix(&self) -> &str {
        &self.source[..self.literal_prefix_len]
    }

    /// Longer literal prefix first; at equal length, exact before wildcard, then longer pattern.
    pub fn specificity(&self) -> (usize, bool, usize) {
        (
            self.literal_prefix_len,
            !self.has_wildcard,
            self.source.len(),
        )
    }

    pub fn matches(&self, path: &str) -> bool {
        if !self.has_wildcard {
            return path == self.source;
        }
        if let Some(dir) = self.source.strip_suffix("/*") {
            if !dir.contains('*') {
                // The common case, `/llm/*`: `/llm`, `/llm/` and below, never `/llmx`.
                return match path.strip_prefix(dir) {
                    Some(rest) => rest.is_empty() || rest.starts_with('/'),
                    None => false,
                };
            }
            if glob(dir.as_bytes(), path.as_bytes()) {
                return true;
            }
        }
        glob(self.source.as_bytes(), path.as_bytes())
    }
}

/// `*` at the end matches anything; elsewhere it matches any run without `/`.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    match pat.split_first() {
        None => s.is_empty(),
        Some((b'*', [])) => true,
        Some((b'*', rest)) => {
            let mut i = 0;
            loop {
                if glob(rest, &s[i..]) {
                    return true;
                }
                if i == s.len() || s[i] == b'/' {
                    return false;
                }
                i += 1;
            }
        }
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        assert!(matches!(
            normalise("/api/v1/llm/chat").unwrap(),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn normalisation() {
        let n = |p| normalise(p).map(|c| c.into_owned());
        assert_eq!(n("/a//b/./c/../d").unwrap(), "/a/b/d");
        assert_eq!(n("/a/b/..").unwrap(), "/a/");
        assert_eq!(n("/%61%62%2e%2E/x").unwrap(), "/ab../x");
        assert_eq!(n("/a/%2e%2e/b").unwrap(), "/b");
        assert_eq!(n("/a%20b%c3%a9").unwrap(), "/a%20b%C3%A9");
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("/a/..").unwrap(), "/");
        assert_eq!(n("/..").unwrap_err(), PathError::AboveRoot);
        assert_eq!(n("/a/../../etc").unwrap_err(), PathError::AboveRoot);
        assert_eq!(n("/%2e%2e/etc").unwrap_err(), PathError::AboveRoot);
        assert_eq!(n("/a%2Fb").unwrap_err(), PathError::EncodedSlash);
        assert_eq!(n("/a%00").unwrap_err(), PathError::Nul);
        assert_eq!(n("/a%zz").unwrap_err(), PathError::BadEscape);
        assert_eq!(n("/a%4").unwrap_err(), PathError::BadEscape);
        assert_eq!(n("/%ff%fe").unwrap_err(), PathError::NotUtf8);
        assert_eq!(n("*").unwrap_err(), PathError::NotAbsolute);
        assert_eq!(n("/é/./x").unwrap(), "/é/x");
    }

    #[test]
    fn arbitrary_paths_never_panic_and_stay_normal() {
        // A small deterministic generator over the characters that matter.
        let alphabet: Vec<&str> = vec![
            "/", ".", "..", "%", "%2e", "%2F", "%00", "%c3%a9", "%ff", "a", "é", "~", "%4", "//",
            "?",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut path = String::from("/");
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            for k in 0..(state % 12) {
                let pick = (state.rotate_left(k as u32 * 5) % alphabet.len() as u64) as usize;
                path.push_str(alphabet[pick]);
            }
            if let Ok(n) = normalise(&path) {
                assert!(n.starts_with('/'), "{path:?} -> {n:?}");
                assert!(
                    !n.contains("//") && !n.contains("/../") && !n.contains("/./"),
                    "{path:?} -> {n:?}"
                );
                assert_eq!(
                    normalise(&n).unwrap(),
                    n,
                    "normalising twice changes nothing: {path:?}"
                );
            }
        }
    }

    #[test]
    fn patterns() {
        let p = Pattern::new("/api/v1/llm/*").unwrap();
        assert!(p.matches("/api/v1/llm"));
        assert!(p.matches("/api/v1/llm/"));
        assert!(p.matches("/api/v1/llm/chat/x"));
        assert!(!p.matches("/api/v1/llmx"));
        assert!(!p.matches("/api/v1"));
        let exact = Pattern::new("/health").unwrap();
        assert!(exact.matches("/health") && !exact.matches("/health/x"));
        let mid = Pattern::new("/v1/*/chat").unwrap();
        assert!(mid.matches("/v1/a/chat") && !mid.matches("/v1/a/b/chat"));
        let raw = Pattern::new("/llm*").unwrap();
        assert!(raw.matches("/llmx/y"));
        let all = Pattern::new("/*").unwrap();
        assert!(all.matches("/") && all.matches("/anything/at/all"));
        assert!(Pattern::new("/a/../b").is_err());
        assert!(Pattern::new("llm").is_err());
        assert!(Pattern::new("/a/**").is_err());
        assert!(
            Pattern::new("/llm/*").unwrap().specificity()
                > Pattern::new("/*").unwrap().specificity()
        );
    }
}
