//! Whether a URI is one of the URIs an RFC 6570 template expands to: how a federated
//! `resources/read` finds the server whose `resources/templates/list` offers the URI. Lenient
//! where the RFC's expansions are hard to invert (lists, exploded values), strict on literals.

/// `true` when `uri` can be an expansion of `template`.
pub fn matches(template: &str, uri: &str) -> bool {
    match parts(template) {
        Some(parts) => matches_from(&parts, uri),
        None => false,
    }
}

/// A template's literal text and expressions (by operator: `None` for a simple `{x}`).
#[derive(Debug, PartialEq)]
enum Part<'t> {
    Literal(&'t str),
    Expr(Option<char>),
}

fn parts(template: &str) -> Option<Vec<Part<'_>>> {
    let mut out = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest.find('}')?;
                let op = rest[1..end]
                    .chars()
                    .next()
                    .filter(|c| "+#./;?&".contains(*c));
                out.push(Part::Expr(op));
                rest = &rest[end + 1..];
            }
            Some(at) => {
                out.push(Part::Literal(&rest[..at]));
                rest = &rest[at..];
            }
            None => {
                out.push(Part::Literal(rest));
                rest = "";
            }
        }
    }
    Some(out)
}

/// Literals must match exactly; a simple expression is one path segment (at least a
/// character, no `/`, `?` or `#`), as SDK servers read `{x}`; the others any run of text.
fn matches_from(parts: &[Part<'_>], uri: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return uri.is_empty();
    };
    match first {
        Part::Literal(l) => uri
            .strip_prefix(l)
            .is_some_and(|after| matches_from(rest, after)),
        Part::Expr(op) => {
            let simple = op.is_none();
            let ends = uri.char_indices().map(|(i, _)| i).chain([uri.len()]);
            for end in ends {
                let taken = &uri[..end];
                if simple && taken.contains(['/', '?', '#']) {
                    return false;
                }
                if (end > 0 || !simple) && matches_from(rest, &uri[end..]) {
                    return true;
                }
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_match_their_templates() {
        assert!(matches("github://issues/{number}", "github://issues/42"));
        assert!(!matches("github://issues/{number}", "github://issues/"));
        assert!(!matches("github://issues/{number}", "github://issues/4/2"));
        assert!(!matches("github://issues/{number}", "search://issues/42"));
        assert!(matches("file:///{+path}", "file:///a/b/c.txt"));
        assert!(matches(
            "repo://{owner}/{name}/readme",
            "repo://me/x/readme"
        ));
        assert!(!matches("repo://{owner}/{name}/readme", "repo://me/readme"));
        assert!(matches(
            "search://q{?query,limit}",
            "search://q?query=a&limit=2"
        ));
        assert!(matches("search://q{?query,limit}", "search://q"));
        assert!(matches("memo://shared", "memo://shared"));
        assert!(!matches("memo://shared", "memo://shared/x"));
        assert!(!matches("bad://{unclosed", "bad://{unclosed"));
    }
}
