//! Guards: a near-duplicate question is served another's answer only when the two agree in what
//! similarity cannot see. Sentence encoders score "show March invoices" and "show April
//! invoices" at 0.94, and "cancel" beside "do not cancel" about as high: measured on agent-style
//! pairs, cosine similarity alone separates paraphrases from such non-paraphrases no better than
//! chance (DESIGN §5.1). So a hit is refused when the texts differ in
//! - **negation**: the negation words they hold (English and Chinese), as a multiset, and the
//!   side of each opposite they use (buy/sell, above/below, approve/reject), as a set;
//! - **numbers**: every number, date, time, amount, unit and month or weekday name, as a
//!   multiset;
//! - **entities**: names (capitalised words past a sentence's start), quoted strings and code
//!   identifiers, in order (so "from Alice to Bob" is not "from Bob to Alice"), and what follows
//!   "from" and "to" when a text says "from".
//!
//! `load-tests/semantic/` measures what each guard stops and costs.

mod lexicon;
use lexicon::*;

/// One guard, as named in `caching.semantic.guards` and in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    Negation,
    Numbers,
    Entities,
}

impl Guard {
    pub const ALL: [Guard; 3] = [Guard::Negation, Guard::Numbers, Guard::Entities];

    pub fn parse(name: &str) -> Option<Guard> {
        match name {
            "negation" => Some(Guard::Negation),
            "numbers" => Some(Guard::Numbers),
            "entities" => Some(Guard::Entities),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Guard::Negation => "negation",
            Guard::Numbers => "numbers",
            Guard::Entities => "entities",
        }
    }

    /// What of a text this guard compares.
    fn marks(self, text: &str) -> Vec<String> {
        match self {
            Guard::Negation => {
                let mut marks = negations(text);
                marks.extend(opposites(text));
                marks
            }
            Guard::Numbers => numbers(text),
            Guard::Entities => entities(text),
        }
    }
}

/// The first of `guards` under which the two texts differ (the hit is then refused).
pub fn refuses(a: &str, b: &str, guards: &[Guard]) -> Option<Guard> {
    guards.iter().copied().find(|g| g.marks(a) != g.marks(b))
}

/// Negation words, with "n't" and "not" counted alike; sorted, so that order does not matter.
fn negations(text: &str) -> Vec<String> {
    let mut out: Vec<String> = words(text)
        .filter_map(|w| {
            let plain: String = w.chars().filter(|c| *c != '\'' && *c != '’').collect();
            let plain = plain.to_lowercase();
            (NEGATION_WORDS.contains(&plain.as_str())
                || plain.ends_with("nt") && is_contraction(&plain))
            .then(|| "not".to_string())
        })
        .collect();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let (before, after) = (
            i.checked_sub(1).map(|j| chars[j]),
            chars.get(i + 1).copied(),
        );
        // 非常 is "very", and 是否 or an A-not-A question (有没有, 是不是, 能不能) asks, rather
        // than denies.
        let asks = (c == '非' && after == Some('常'))
            || (c == '否' && before == Some('是'))
            || (before.is_some() && before == after);
        if NEGATION_CHARS.contains(&c) && !asks {
            out.push(c.to_string());
        }
    }
    out.sort();
    out
}

/// `wasn't`, `aren't`… written without the apostrophe: a verb and "nt".
fn is_contraction(plain: &str) -> bool {
    const STEMS: &[&str] = &[
        "is", "are", "was", "were", "do", "does", "did", "has", "have", "had", "wo", "would",
        "should", "could", "must", "need", "ca", "might", "may",
    ];
    plain
        .strip_suffix("nt")
        .is_some_and(|stem| STEMS.contains(&stem))
}

/// The sides of the opposites a text holds, as `~side`, each once ("bump the limit up" is no
/// more "up" than "increase the limit").
fn opposites(text: &str) -> Vec<String> {
    let mut out: Vec<String> = words(text)
        .filter_map(|w| {
            let lower = w.to_lowercase();
            OPPOSITES
                .iter()
                .find(|(_, spellings)| spellings.contains(&lower.as_str()))
                .map(|(side, _)| format!("~{side}"))
        })
        .collect();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if let Some((spelling, side)) = CHINESE_OPPOSITES.iter().find(|(s, _)| rest.starts_with(s))
        {
            out.push(format!("~{side}"));
            rest = &rest[spelling.len()..];
        } else {
            rest = &rest[c.len_utf8()..];
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Digit runs (with their separators: 1,000.50 → 1000.50; 2024-03-01 stays whole), number,
/// date and period words, and units and currencies under one name each ("$", "dollars" and
/// "USD" are all `usd`: "24 hours" is not "24 days", yet "$500" is "500 dollars"); sorted.
fn numbers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in words(text) {
        let lower = w.to_lowercase();
        if lower.chars().any(|c| c.is_ascii_digit()) {
            // Only the digits: in Chinese, and in "p99", "4gb" or "PO-5521", the word around
            // them is not a number (the rest is matched as units and names).
            out.extend(digit_runs(&lower));
            for piece in lower.split(|c: char| !c.is_ascii_alphabetic()) {
                if let Some(unit) = unit(piece) {
                    out.push(unit.to_string());
                }
            }
        } else if let Some(unit) = standalone_unit(&lower) {
            out.push(unit.to_string());
        } else if NUMBER_WORDS.contains(&lower.as_str()) {
            out.push(lower);
        }
    }
    for c in text.chars() {
        if NUMBER_CHARS.contains(&c) {
            out.push(c.to_string());
        } else if let Some(unit) = sign_unit(c) {
            out.push(unit.to_string());
        }
    }
    out.extend(chinese_units(text));
    out.sort();
    out
}

/// The numbers of a word: digits joined by `.`, `:`, `-` or `/` stay one number; `,` between
/// digits is grouping and dropped.
fn digit_runs(word: &str) -> Vec<String> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = Vec::new();
    let mut run = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let inside = !run.is_empty() && chars.get(i + 1).is_some_and(char::is_ascii_digit);
        if c.is_ascii_digit() || inside && matches!(c, '.' | ':' | '-' | '/') {
            run.push(c);
        } else if (!inside || c != ',') && !run.is_empty() {
            out.push(std::mem::take(&mut run));
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// A unit written as a word of its own: one-letter spellings ("g", "c", "h") and "am", "mi",
/// "mo" are more often something else there, unless a degree sign says so ("°C").
fn standalone_unit(word: &str) -> Option<&'static str> {
    if let Some(rest) = word.strip_prefix('°') {
        return unit(rest);
    }
    if word.chars().count() < 2 || matches!(word, "am" | "mi" | "mo") {
        return None;
    }
    unit(word)
}

fn unit(word: &str) -> Option<&'static str> {
    UNITS
        .iter()
        .find(|(_, spellings)| spellings.contains(&word))
        .map(|(name, _)| *name)
}

fn sign_unit(c: char) -> Option<&'static str> {
    match c {
        '$' => Some("usd"),
        '€' => Some("eur"),
        '£' => Some("gbp"),
        '¥' => Some("¥"),
        '%' | '％' => Some("percent"),
        _ => None,
    }
}

fn chinese_units(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut prev: Option<char> = None;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        // Not after 几 ("how many"): 几天 asks the same as 多少天.
        let after_number = prev.is_some_and(|p| {
            p.is_ascii_digit() || "零〇一二两三四五六七八九十百千万亿".contains(p)
        });
        let found = after_number
            .then(|| CHINESE_UNITS.iter().find(|(s, _)| rest.starts_with(s)))
            .flatten();
        if let Some((spelling, name)) = found {
            out.push(name.to_string());
            prev = spelling.chars().last();
            rest = &rest[spelling.len()..];
        } else {
            prev = Some(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// Capitalised words past a sentence's start, quoted strings and code identifiers, in order.
fn entities(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for quoted in quoted_parts(text) {
        out.push(quoted.to_lowercase());
    }
    let mut sentence_start = true;
    for raw in text.split_whitespace() {
        let ends_sentence = raw
            .trim_end_matches(['"', '\'', ')', '’', '”'])
            .ends_with(['.', '?', '!', ':', '。', '？', '！']);
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '_');
        // "Acme's" names Acme.
        let word = word
            .strip_suffix("'s")
            .or_else(|| word.strip_suffix("’s"))
            .unwrap_or(word);
        let capitalised =
            word.chars().next().is_some_and(char::is_uppercase) && word != "I" && !sentence_start;
        let identifier = word.contains('_')
            || word.contains("::")
            || (word.chars().skip(1).any(char::is_uppercase)
                && word.chars().any(char::is_lowercase))
            || word.chars().filter(|c| c.is_ascii_uppercase()).count() >= 2;
        if !word.is_empty() && (capitalised || identifier) {
            out.push(word.to_lowercase());
        }
        sentence_start = ends_sentence;
    }
    out.extend(direction(text));
    out
}

/// Where something goes from and to, when the text says "from": "from checking to savings" is
/// not "from savings to checking", nor is "flights from Rome" "flights to Rome". Without a
/// "from", "to" is too often an infinitive ("the way to reset") to be read as a destination.
fn direction(text: &str) -> Vec<String> {
    const SKIP: &[&str] = &[
        "the", "a", "an", "my", "our", "your", "their", "his", "her", "its", "this", "that",
    ];
    let lower: Vec<String> = words(text).map(str::to_lowercase).collect();
    if !lower.iter().any(|w| w == "from") {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, w) in lower.iter().enumerate() {
        let role = match w.as_str() {
            "from" => "from",
            "to" | "into" | "onto" | "towards" => "to",
            _ => continue,
        };
        if let Some(target) = lower[i + 1..].iter().find(|t| !SKIP.contains(&t.as_str())) {
            out.push(format!("{role}:{target}"));
        }
    }
    out
}

/// Text between straight or curly quotes, backticks, or Chinese quotation marks.
fn quoted_parts(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for (open, close) in [
        ('"', '"'),
        ('`', '`'),
        ('“', '”'),
        ('「', '」'),
        ('『', '』'),
    ] {
        let mut rest = text;
        while let Some(start) = rest.find(open) {
            let after = &rest[start + open.len_utf8()..];
            let Some(end) = after.find(close) else { break };
            out.push(&after[..end]);
            rest = &after[end + close.len_utf8()..];
        }
    }
    out
}

/// Whitespace-separated words, without the punctuation around them (inner `.`, `,`, `-`, `:`
/// and `/` stay: they belong to numbers, dates and identifiers).
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| {
        c.is_whitespace() || matches!(c, '(' | ')' | '[' | ']' | '{' | '}' | ';' | '"' | '?' | '!')
    })
    .map(|w| w.trim_matches(|c: char| matches!(c, ',' | '.' | ':' | '\'' | '’' | '`')))
    .filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests;
