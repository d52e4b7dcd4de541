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
    guards.iter().copied().find(|g| match g {
        Guard::Entities => entities_differ(a, b),
        _ => g.marks(a) != g.marks(b),
    })
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
    let lower: Vec<String> = words(text).map(str::to_lowercase).collect();
    let mut out: Vec<String> = lower
        .iter()
        .filter_map(|w| {
            OPPOSITES
                .iter()
                .find(|(_, spellings)| spellings.contains(&w.as_str()))
                .map(|(side, _)| format!("~{side}"))
        })
        .collect();
    // "Turn on" is "enable", also with words between ("switch the alerts off").
    for (i, w) in lower.iter().enumerate() {
        if !matches!(w.as_str(), "turn" | "turned" | "switch" | "switched") {
            continue;
        }
        match lower.get(i + 1..(i + 4).min(lower.len())) {
            Some(next) if next.iter().any(|n| n == "on") => out.push("~enable".into()),
            Some(next) if next.iter().any(|n| n == "off") => out.push("~disable".into()),
            _ => {}
        }
    }
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
    let mut previous = "";
    for w in words(text) {
        let lower = w.to_lowercase();
        // "What hour" asks what "what time" asks, and "Christmas Day" is a name, not a period.
        let not_a_quantity = matches!(previous.to_lowercase().as_str(), "what" | "which")
            || lower == "day" && previous.starts_with(char::is_uppercase);
        previous = w;
        if not_a_quantity && (unit(&lower).is_some() || NUMBER_WORDS.contains(&lower.as_str())) {
            continue;
        }
        if let Some(n) = cardinal(&lower) {
            // "two" is "2".
            out.push(n.to_string());
        } else if lower.chars().any(|c| c.is_ascii_digit()) {
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

/// The value of a number word up to ninety-nine ("seven", "twenty-five").
fn cardinal(word: &str) -> Option<u32> {
    let one = |w: &str| CARDINALS.iter().position(|c| *c == w).map(|n| n as u32);
    let tens = |w: &str| {
        TENS.iter()
            .position(|c| *c == w)
            .map(|n| 20 + 10 * n as u32)
    };
    if let Some((t, u)) = word.split_once('-') {
        return Some(tens(t)? + one(u).filter(|u| (1..10).contains(u))?);
    }
    one(word).or_else(|| tens(word))
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

/// Whether two texts name different things: a quoted string that differs, a name one of them
/// has that the other does not hold at all (in any case: "Murder Trial" in a headline is
/// "murder trial"), the same words with the names in another order ("Alice pays Bob", "Bob
/// pays Alice": the first "Alice" is a name because the other text's is), or another direction (`directions_differ`). Names are compared as present or
/// not, so "from Berlin to Munich" may be "Munich from Berlin".
fn entities_differ(a: &str, b: &str) -> bool {
    let quoted = |t| -> Vec<String> { quoted_parts(t).iter().map(|q| q.to_lowercase()).collect() };
    if quoted(a) != quoted(b) {
        return true;
    }
    let (names_a, names_b) = (names(a), names(b));
    let lower = |t| -> Vec<String> { words(t).map(str::to_lowercase).collect() };
    let (mut words_a, mut words_b) = (lower(a), lower(b));
    let missing = |names: &[String], words: &[String]| names.iter().any(|n| !words.contains(n));
    if missing(&names_a, &words_b) || missing(&names_b, &words_a) {
        return true;
    }
    // The same words, with the names (of either text) in another order.
    let order = |words: &[String]| -> Vec<String> {
        let named = |w: &&String| names_a.contains(w) || names_b.contains(w);
        words.iter().filter(named).cloned().collect()
    };
    let swapped = order(&words_a) != order(&words_b) && {
        words_a.sort();
        words_b.sort();
        words_a == words_b
    };
    swapped || directions_differ(a, b)
}

/// What `Guard::Entities` compares: quoted strings, then names.
fn entities(text: &str) -> Vec<String> {
    let mut out: Vec<String> = quoted_parts(text)
        .iter()
        .map(|q| q.to_lowercase())
        .collect();
    out.extend(names(text));
    out
}

/// Capitalised words past a sentence's start and code identifiers, in order, lower-cased.
/// Units and currencies ("Celsius", "USD") are left to the numbers guard, which knows "°C" and
/// "dollars" are the same.
fn names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
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
        let lower = word.to_lowercase();
        if !word.is_empty() && (capitalised || identifier) && unit(&lower).is_none() {
            out.push(lower);
        }
        sentence_start = ends_sentence;
    }
    out
}

/// Where something goes from and to: "from checking to savings" is not "from savings to
/// checking", "flights from Rome" is not "flights to Rome", "Convert USD to EUR" is not
/// "Convert EUR to USD". Only what both texts say is compared ("the report went from Alice to
/// Bob" is "Alice sent the report to Bob"): refused when they give one role (from, to) targets
/// that share nothing, or one target opposite roles.
fn directions_differ(a: &str, b: &str) -> bool {
    let says_from = |t| words(t).any(|w| w.eq_ignore_ascii_case("from"));
    let from = says_from(a) || says_from(b);
    let (da, db) = (direction(a, from), direction(b, from));
    let targets = |d: &[(&str, String)], role: &str| -> Vec<String> {
        d.iter()
            .filter(|(r, _)| *r == role)
            .map(|(_, t)| t.clone())
            .collect()
    };
    let disjoint = ["from", "to"].iter().any(|role| {
        let (ta, tb) = (targets(&da, role), targets(&db, role));
        !ta.is_empty() && !tb.is_empty() && !ta.iter().any(|t| tb.contains(t))
    });
    let turned = |x: &[(&str, String)], y: &[(&str, String)]| {
        x.iter().any(|(role, target)| {
            y.iter().any(|(r, t)| t == target && r != role)
                && !y.iter().any(|(r, t)| t == target && r == role)
        })
    };
    // A name given a direction in one text, in another that says no direction at all: "the
    // payment from Globex" is not surely "the Globex payment". Dates are no direction ("from
    // March 2024" lists what "for March 2024" lists).
    let unsaid = |x: &[(&str, String)], text_x: &str, y: &[(&str, String)]| {
        let named = names(text_x);
        y.is_empty()
            && x.iter().any(|(_, t)| {
                named.contains(t) && !NUMBER_WORDS.contains(&t.as_str()) && cardinal(t).is_none()
            })
    };
    disjoint || turned(&da, &db) || turned(&db, &da) || unsaid(&da, a, &db) || unsaid(&db, b, &da)
}

/// The targets of "from" and "to" in a text. Unless one of the texts compared says "from", a
/// "to" is read as a destination only before a name or a number: it is too often an
/// infinitive ("the way to reset") to be one.
fn direction(text: &str, from: bool) -> Vec<(&'static str, String)> {
    const SKIP: &[&str] = &[
        "the", "a", "an", "my", "our", "your", "their", "his", "her", "its", "this", "that",
    ];
    let all: Vec<&str> = words(text).collect();
    let mut out = Vec::new();
    for (i, w) in all.iter().enumerate() {
        let role = match w.to_lowercase().as_str() {
            "from" => "from",
            "to" | "into" | "onto" | "towards" => "to",
            _ => continue,
        };
        let target = all[i + 1..]
            .iter()
            .find(|t| !SKIP.contains(&t.to_lowercase().as_str()));
        if let Some(target) = target {
            let named = target.starts_with(|c: char| c.is_uppercase() || c.is_ascii_digit());
            if role == "from" || from || named {
                out.push((role, target.to_lowercase()));
            }
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
    .map(|w| {
        let w = w.trim_matches(|c: char| matches!(c, ',' | '.' | ':' | '\'' | '’' | '`'));
        // "January's" is January, and "1042's" is 1042 (not 1042 seconds).
        w.strip_suffix("'s")
            .or_else(|| w.strip_suffix("’s"))
            .unwrap_or(w)
    })
    .filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests;
