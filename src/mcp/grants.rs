//! An agent's tool grants: globs over tool names, `!` to deny.
//!
//! A tool is allowed when an allow pattern matches it and no deny pattern does, so a deny
//! always wins whatever the order. A list of denials alone means "everything except", and no
//! list at all means every tool: grants narrow, they are never needed to open a route.

/// Compiled grants; cheap to ask, built once per configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// Most grants name tools outright; those compare as strings.
    Exact(String),
    Glob(String),
}

impl Pattern {
    fn new(p: &str) -> Pattern {
        if p.contains(['*', '?']) {
            Pattern::Glob(p.to_owned())
        } else {
            Pattern::Exact(p.to_owned())
        }
    }

    fn matches(&self, tool: &str) -> bool {
        match self {
            Pattern::Exact(p) => p == tool,
            Pattern::Glob(p) => glob(p.as_bytes(), tool.as_bytes()),
        }
    }
}

impl Grants {
    /// Every tool.
    pub fn all() -> Grants {
        Grants {
            allow: vec![Pattern::Glob("*".into())],
            deny: Vec::new(),
        }
    }

    pub fn compile(patterns: &[String]) -> Result<Grants, String> {
        let mut allow = Vec::new();
        let mut deny = Vec::new();
        for p in patterns {
            let (list, glob) = match p.strip_prefix('!') {
                Some(rest) => (&mut deny, rest),
                None => (&mut allow, p.as_str()),
            };
            if glob.is_empty() {
                return Err(if p.is_empty() {
                    "an empty tool pattern".to_owned()
                } else {
                    format!("{p:?} denies nothing: put a tool name or glob after '!'")
                });
            }
            if glob.starts_with('!') {
                return Err(format!("{p:?}: one '!' denies, two mean nothing"));
            }
            if glob.trim() != glob {
                return Err(format!("{p:?} has spaces around it; tool names have none"));
            }
            list.push(Pattern::new(glob));
        }
        if allow.is_empty() {
            allow = Grants::all().allow;
        }
        Ok(Grants { allow, deny })
    }

    pub fn allows(&self, tool: &str) -> bool {
        self.allow.iter().any(|p| p.matches(tool)) && !self.deny.iter().any(|p| p.matches(tool))
    }

    /// Whether these grants let every tool through, so callers may skip filtering.
    pub fn is_all(&self) -> bool {
        self.deny.is_empty() && self.allow.iter().any(|p| p == &Pattern::Glob("*".into()))
    }
}

impl Default for Grants {
    fn default() -> Grants {
        Grants::all()
    }
}

/// `*` matches any run of characters (none included), `?` exactly one character; nothing is
/// special otherwise. Iterative with one backtrack point, so no pattern can take more than
/// `pattern × name` steps (a recursive matcher is exponential on `*a*a*a*b`).
fn glob(pat: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // After the last `*`: where the pattern resumes, and where in the name that `*` stops.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pat.get(p) {
            Some(b'*') => {
                p += 1;
                star = Some((p, n));
            }
            Some(b'?') => {
                p += 1;
                n += char_len(name[n]);
            }
            Some(&c) if c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                // Let the last `*` take one more character and retry from there.
                Some((sp, sn)) => {
                    let sn = sn + char_len(name[sn]);
                    star = Some((sp, sn));
                    p = sp;
                    n = sn;
                }
                None => return false,
            },
        }
    }
    pat[p.min(pat.len())..].iter().all(|&c| c == b'*')
}

/// The length of the UTF-8 character starting with `lead`, so `?` and `*` step over whole
/// characters (a byte that cannot start one counts as one).
fn char_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xF7 => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(p: &[&str]) -> Grants {
        Grants::compile(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob(b"*", b""));
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"", b""));
        assert!(!glob(b"", b"a"));
        assert!(glob(b"a?c", b"abc"));
        assert!(!glob(b"a?c", b"ac"));
        assert!(!glob(b"a?c", b"abbc"));
        assert!(glob(b"?", "é".as_bytes()));
        assert!(glob(b"a?c", "a€c".as_bytes()));
        assert!(!glob(b"??", "é".as_bytes()));
        assert!(glob(b"github__list_*", b"github__list_issues"));
        assert!(glob(b"github__list_*", b"github__list_"));
        assert!(!glob(b"github__list_*", b"github__lis"));
        assert!(!glob(b"github__list_*", b"xgithub__list_issues"));
        assert!(glob(b"*__delete_*", b"github__delete_repo"));
        assert!(glob(b"*a*b", b"aaaaab"));
        assert!(!glob(b"*a*b", b"aaaaa"));
        assert!(glob(b"a**b", b"ab"));
        assert!(glob(b"*?", b"x"));
        assert!(!glob(b"*?", b""));
        assert!(glob(b"*.*", b"a.b.c"));
        assert!(glob("*é".as_bytes(), "aéé".as_bytes()));
        assert!(!glob(b"abc", b"ab"));
        assert!(!glob(b"ab", b"abc"));
    }

    #[test]
    fn star_runs_do_not_blow_up() {
        let name = "a".repeat(200);
        let pat = "*a".repeat(50) + "b";
        assert!(!glob(pat.as_bytes(), name.as_bytes()));
    }

    #[test]
    fn allow_and_deny() {
        let g = grants(&["search__*", "github__list_*", "!github__delete_*"]);
        assert!(g.allows("search__web"));
        assert!(g.allows("github__list_issues"));
        assert!(!g.allows("github__delete_repo"));
        assert!(!g.allows("github__create_issue"));
        assert!(!g.allows("search"));
        assert!(!g.is_all());
    }

    #[test]
    fn deny_wins_whatever_the_order() {
        let g = grants(&["!github__delete_*", "github__*"]);
        assert!(g.allows("github__list_issues"));
        assert!(!g.allows("github__delete_repo"));
        let g = grants(&["github__delete_repo", "!github__delete_*"]);
        assert!(!g.allows("github__delete_repo"));
    }

    #[test]
    fn only_denials_mean_everything_except() {
        let g = grants(&["!github__delete_*", "!admin_?"]);
        assert!(g.allows("github__list_issues"));
        assert!(g.allows("anything"));
        assert!(g.allows("admin_ab"));
        assert!(!g.allows("admin_a"));
        assert!(!g.allows("github__delete_"));
    }

    #[test]
    fn empty_and_absent_mean_everything() {
        assert!(grants(&[]).allows("x"));
        assert!(grants(&[]).is_all());
        assert!(Grants::all().allows(""));
        assert_eq!(Grants::default(), Grants::all());
        assert!(grants(&["*"]).is_all());
    }

    #[test]
    fn exact_names() {
        let g = grants(&["echo"]);
        assert!(g.allows("echo"));
        assert!(!g.allows("echo2"));
        assert!(!g.allows("Echo"));
        assert!(!grants(&["*", "!*"]).allows("echo"));
    }

    #[test]
    fn bad_patterns() {
        let err = |p: &[&str]| {
            Grants::compile(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap_err()
        };
        assert!(err(&[""]).contains("empty"));
        assert!(err(&["a", "!"]).contains("denies nothing"));
        assert!(err(&["!!a"]).contains("two"));
        assert!(err(&[" a"]).contains("spaces"));
    }
}
