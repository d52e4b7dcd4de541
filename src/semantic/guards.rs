//! Guards: a near-duplicate question is served another's answer only when the two agree in what
//! similarity cannot see. Sentence encoders score "show March invoices" and "show April
//! invoices" at 0.94, and "cancel" beside "do not cancel" about as high: measured on agent-style
//! pairs, cosine similarity alone separates paraphrases from such non-paraphrases no better than
//! chance (DESIGN §5.1). So a hit is refused when the texts differ in
//! - **negation**: the negation words they hold (English and Chinese), as a multiset;
//! - **numbers**: every number, date, time, amount and month or weekday name, as a multiset;
//! - **entities**: names (capitalised words past a sentence's start), quoted strings and code
//!   identifiers, in order (so "from Alice to Bob" is not "from Bob to Alice").

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
            Guard::Negation => negations(text),
            Guard::Numbers => numbers(text),
            Guard::Entities => entities(text),
        }
    }
}

/// The first of `guards` under which the two texts differ (the hit is then refused).
pub fn refuses(a: &str, b: &str, guards: &[Guard]) -> Option<Guard> {
    guards.iter().copied().find(|g| g.marks(a) != g.marks(b))
}

const NEGATION_WORDS: &[&str] = &[
    "not",
    "no",
    "never",
    "none",
    "nobody",
    "nothing",
    "nowhere",
    "neither",
    "nor",
    "without",
    "cannot",
    "cant",
    "dont",
    "doesnt",
    "didnt",
    "isnt",
    "arent",
    "wasnt",
    "werent",
    "wont",
    "wouldnt",
    "shouldnt",
    "couldnt",
    "hasnt",
    "havent",
    "hadnt",
    "mustnt",
    "neednt",
    "except",
    "exclude",
    "excluding",
    "unless",
];

/// Characters that negate in Chinese (不 not, 没 have not, 别 don't, 非 non-, 无 without, 未 not
/// yet, 勿 do not, 莫 don't, 否 no).
const NEGATION_CHARS: &[char] = &[
    '不', '没', '沒', '别', '別', '非', '无', '無', '未', '勿', '莫', '否',
];

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
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        // 非常 is "very", not a negation.
        if NEGATION_CHARS.contains(&c) && !(c == '非' && chars.peek() == Some(&'常')) {
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

const NUMBER_WORDS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
    "hundred",
    "thousand",
    "million",
    "billion",
    "trillion",
    "dozen",
    "half",
    "quarter",
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "last",
    "next",
    "previous",
    "today",
    "tomorrow",
    "yesterday",
    "tonight",
    "week",
    "month",
    "year",
    "day",
    "hour",
    "minute",
    "january",
    "february",
    "march",
    "april",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "jan",
    "feb",
    "mar",
    "apr",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "q1",
    "q2",
    "q3",
    "q4",
];

/// Chinese numerals and date words.
const NUMBER_CHARS: &[char] = &[
    '零', '〇', '一', '二', '两', '三', '四', '五', '六', '七', '八', '九', '十', '百', '千', '万',
    '亿', '半', '今', '明', '昨', '前', '后', '年', '月', '日', '号', '周', '星',
];

/// Digit runs (with their separators: 1,000.50 → 1000.50; 2024-03-01 stays whole), number,
/// date and period words, and currency signs; sorted.
fn numbers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in words(text) {
        let lower = w.to_lowercase();
        if w.chars().any(|c| c.is_ascii_digit()) {
            let kept: String = lower.chars().filter(|c| *c != ',').collect();
            out.push(kept.trim_end_matches(['.', ':', '-', '/']).to_string());
        } else if NUMBER_WORDS.contains(&lower.as_str()) {
            out.push(lower);
        }
    }
    out.extend(
        text.chars()
            .filter(|c| NUMBER_CHARS.contains(c) || matches!(c, '$' | '€' | '£' | '¥' | '%'))
            .map(|c| c.to_string()),
    );
    out.sort();
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
mod tests {
    use super::*;

    fn refused(a: &str, b: &str) -> Option<&'static str> {
        refuses(a, b, &Guard::ALL).map(Guard::name)
    }

    #[test]
    fn paraphrases_pass() {
        for (a, b) in [
            (
                "How do I reset my password?",
                "What is the way to reset my password?",
            ),
            (
                "List the open tickets of Acme",
                "Show me Acme's open tickets",
            ),
            ("What was revenue in Q3 2024?", "Revenue for Q3 2024?"),
            ("Why is the build failing?", "why does the build fail"),
            ("明天北京天气怎么样", "北京明天的天气如何"),
        ] {
            assert_eq!(refused(a, b), None, "{a:?} ~ {b:?}");
        }
    }

    #[test]
    fn negation_differences_are_refused() {
        for (a, b) in [
            (
                "Should I cancel the order?",
                "Should I not cancel the order?",
            ),
            (
                "Does the plan include dental?",
                "Doesn't the plan include dental?",
            ),
            ("Refunds are allowed", "Refunds are never allowed"),
            ("list users with a manager", "list users without a manager"),
            ("这个方案可行", "这个方案不可行"),
            ("他来了", "他没来"),
            ("这个方案非常好", "这个方案非常不好"),
        ] {
            assert_eq!(refused(a, b), Some("negation"), "{a:?} ~ {b:?}");
        }
    }

    #[test]
    fn number_date_and_amount_differences_are_refused() {
        for (a, b) in [
            (
                "Show the invoices of March 2024",
                "Show the invoices of April 2024",
            ),
            ("Transfer $500 to savings", "Transfer $5,000 to savings"),
            (
                "Meeting at 10:30 on 2024-03-01",
                "Meeting at 10:30 on 2024-03-02",
            ),
            ("What is the weather tomorrow", "What is the weather today"),
            ("Top five customers", "Top ten customers"),
            ("Convert 3 km to miles", "Convert 30 km to miles"),
            ("三月的发票", "四月的发票"),
        ] {
            assert_eq!(refused(a, b), Some("numbers"), "{a:?} ~ {b:?}");
        }
        // Only the grouping differs.
        assert_eq!(refused("Transfer $5,000 now", "Transfer $5000 now"), None);
    }

    #[test]
    fn entity_and_identifier_differences_are_refused() {
        for (a, b) in [
            (
                "What is the weather in Paris?",
                "What is the weather in London?",
            ),
            (
                "Send the report from Alice to Bob",
                "Send the report from Bob to Alice",
            ),
            (
                "Explain the function parse_config",
                "Explain the function load_config",
            ),
            ("Why does HashMap panic?", "Why does BTreeMap panic?"),
            (
                "Delete the repo \"billing\"",
                "Delete the repo \"payments\"",
            ),
        ] {
            assert_eq!(refused(a, b), Some("entities"), "{a:?} ~ {b:?}");
        }
        // A capital at a sentence's start is not a name.
        assert_eq!(
            refused(
                "Show open tickets. Sort by age",
                "show open tickets. sort by age"
            ),
            None
        );
    }

    #[test]
    fn only_the_configured_guards_apply() {
        let (a, b) = ("invoices of march", "invoices of april");
        assert_eq!(refuses(a, b, &[Guard::Negation, Guard::Entities]), None);
        assert_eq!(refuses(a, b, &[Guard::Numbers]), Some(Guard::Numbers));
        assert_eq!(Guard::parse("numbers"), Some(Guard::Numbers));
        assert_eq!(Guard::parse("vibes"), None);
    }
}
