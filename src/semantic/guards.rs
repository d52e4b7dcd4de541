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

/// Opposites, by which side of a pair a word is on: "buy" against "sell", "above" against
/// "below", "approve" against "reject". Like a negation, swapping one for the other keeps a
/// sentence's words and its embedding and turns its meaning round. Synonyms share a side, so
/// "lower the price" and "reduce the price" agree.
const OPPOSITES: &[(&str, &[&str])] = &[
    (
        "up",
        &[
            "increase",
            "increased",
            "raise",
            "raised",
            "bump",
            "higher",
            "more",
            "above",
            "over",
            "exceed",
            "exceeds",
            "greater",
            "top",
        ],
    ),
    (
        "down",
        &[
            "decrease",
            "decreased",
            "lower",
            "lowered",
            "reduce",
            "reduced",
            "cut",
            "less",
            "fewer",
            "below",
            "under",
            "cheaper",
            "bottom",
        ],
    ),
    ("before", &["before", "earlier", "prior"]),
    ("after", &["after", "later", "since"]),
    ("buy", &["buy", "bought", "buying", "purchase", "purchased"]),
    ("sell", &["sell", "sold", "selling"]),
    (
        "approve",
        &[
            "approve", "approved", "accept", "accepted", "grant", "granted",
        ],
    ),
    (
        "reject",
        &[
            "reject", "rejected", "deny", "denied", "decline", "declined", "revoke", "revoked",
        ],
    ),
    ("enable", &["enable", "enabled", "activate", "activated"]),
    (
        "disable",
        &["disable", "disabled", "deactivate", "deactivated"],
    ),
    ("open", &["open", "opened", "opens"]),
    ("closed", &["close", "closed", "closes", "shut"]),
    ("add", &["add", "added", "invite", "invited", "insert"]),
    (
        "remove",
        &[
            "remove", "removed", "delete", "deleted", "drop", "dropped", "erase",
        ],
    ),
    ("restore", &["restore", "restored", "recover", "undelete"]),
    ("in", &["import", "imported", "upload", "uploaded", "login"]),
    (
        "out",
        &["export", "exported", "download", "downloaded", "logout"],
    ),
    (
        "stop",
        &[
            "stop",
            "stopped",
            "halt",
            "kill",
            "skip",
            "cancel",
            "cancelled",
            "canceled",
        ],
    ),
    ("renew", &["renew", "renewed", "extend"]),
    (
        "income",
        &["revenue", "income", "earnings", "earn", "earned"],
    ),
    ("cost", &["expenses", "costs", "spend", "spent", "spending"]),
    ("new", &["newest", "latest", "recent"]),
    ("old", &["oldest", "earliest"]),
    ("used", &["used", "taken"]),
    ("shipped", &["shipped"]),
    ("returned", &["returned", "refunded"]),
];

/// Chinese opposites, matched in the text longest first (买入 before 买).
const CHINESE_OPPOSITES: &[(&str, &str)] = &[
    ("买入", "buy"),
    ("购买", "buy"),
    ("卖出", "sell"),
    ("以后", "after"),
    ("之后", "after"),
    ("以前", "before"),
    ("之前", "before"),
    ("超过", "up"),
    ("高于", "up"),
    ("以上", "up"),
    ("提高", "up"),
    ("增加", "up"),
    ("最高", "up"),
    ("低于", "down"),
    ("以下", "down"),
    ("降低", "down"),
    ("减少", "down"),
    ("最低", "down"),
    ("开启", "enable"),
    ("打开", "enable"),
    ("启用", "enable"),
    ("关闭", "disable"),
    ("停用", "disable"),
    ("禁用", "disable"),
    ("批准", "approve"),
    ("审批", "approve"),
    ("驳回", "reject"),
    ("拒绝", "reject"),
    ("删除", "remove"),
    ("删掉", "remove"),
    ("恢复", "restore"),
    ("取消", "stop"),
    ("退出", "out"),
    ("登出", "out"),
    ("退货", "returned"),
    ("退款", "returned"),
    ("收入", "income"),
    ("营收", "income"),
    ("支出", "cost"),
    ("花费", "cost"),
    ("用了", "used"),
    ("跳过", "stop"),
    ("停", "stop"),
    ("买", "buy"),
    ("卖", "sell"),
    ("退", "returned"),
];

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

/// Units of measure, time and money, by one name whatever the spelling or plural.
const UNITS: &[(&str, &[&str])] = &[
    ("usd", &["usd", "dollar", "dollars", "bucks"]),
    ("eur", &["eur", "euro", "euros"]),
    ("gbp", &["gbp", "pound", "pounds", "sterling"]),
    ("cny", &["cny", "rmb", "yuan"]),
    ("jpy", &["jpy", "yen"]),
    ("percent", &["percent", "pct"]),
    (
        "km",
        &["km", "kilometer", "kilometers", "kilometre", "kilometres"],
    ),
    ("mile", &["mi", "mile", "miles"]),
    ("meter", &["meter", "meters", "metre", "metres"]),
    (
        "kg",
        &["kg", "kgs", "kilogram", "kilograms", "kilo", "kilos"],
    ),
    ("gram", &["g", "gram", "grams"]),
    ("lb", &["lb", "lbs"]),
    ("celsius", &["celsius", "c"]),
    ("fahrenheit", &["fahrenheit", "f"]),
    ("kb", &["kb", "kilobyte", "kilobytes"]),
    ("mb", &["mb", "megabyte", "megabytes"]),
    ("gb", &["gb", "gigabyte", "gigabytes"]),
    ("tb", &["tb", "terabyte", "terabytes"]),
    ("ms", &["ms", "millisecond", "milliseconds"]),
    ("second", &["s", "sec", "secs", "seconds"]),
    ("minute", &["min", "mins", "minute", "minutes"]),
    ("hour", &["h", "hr", "hrs", "hour", "hours"]),
    ("day", &["d", "day", "days"]),
    ("week", &["wk", "wks", "week", "weeks"]),
    ("month", &["mo", "month", "months"]),
    ("year", &["y", "yr", "yrs", "year", "years"]),
    ("am", &["am"]),
    ("pm", &["pm"]),
];

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

/// Chinese units counted where they follow a number (digits or a numeral): 元 alone is a
/// common character, 500元 is an amount. Longest spelling first, so 公斤 is not read as 斤.
const CHINESE_UNITS: &[(&str, &str)] = &[
    ("摄氏度", "celsius"),
    ("华氏度", "fahrenheit"),
    ("人民币", "cny"),
    ("美元", "usd"),
    ("美金", "usd"),
    ("欧元", "eur"),
    ("英镑", "gbp"),
    ("日元", "jpy"),
    ("块钱", "cny"),
    ("公里", "km"),
    ("千米", "km"),
    ("英里", "mile"),
    ("公斤", "kg"),
    ("千克", "kg"),
    ("小时", "hour"),
    ("分钟", "minute"),
    ("个月", "month"),
    ("元", "cny"),
    ("块", "cny"),
    ("米", "meter"),
    ("斤", "jin"),
    ("克", "gram"),
    ("秒", "second"),
    ("天", "day"),
    ("度", "celsius"),
];

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
    fn opposite_words_are_refused_as_negation() {
        for (a, b) in [
            ("Buy 10 shares of AAPL", "Sell 10 shares of AAPL"),
            ("Approve the expense report", "Reject the expense report"),
            (
                "List employees hired after 2020",
                "List employees hired before 2020",
            ),
            (
                "Customers who spent more than $1,000",
                "Customers who spent less than $1,000",
            ),
            ("How do I enable 2FA?", "How do I disable 2FA?"),
            ("买入10股", "卖出10股"),
            ("CPU使用率超过90%的服务器", "CPU使用率低于90%的服务器"),
        ] {
            assert_eq!(refused(a, b), Some("negation"), "{a:?} ~ {b:?}");
        }
        // Synonyms are on the same side, and saying it twice is no different.
        for (a, b) in [
            ("Lower the price by 10%", "Reduce the price by 10%"),
            (
                "Increase the memory limit to 4 GB",
                "Bump the memory limit up to 4 GB",
            ),
            ("买入10股", "购买10股"),
        ] {
            assert_eq!(refused(a, b), None, "{a:?} ~ {b:?}");
        }
    }

    #[test]
    fn units_and_numbers_inside_words() {
        for (a, b) in [
            (
                "Users seen in the last 24 hours",
                "Users seen in the last 24 days",
            ),
            (
                "Distance to Munich in kilometers",
                "Distance to Munich in miles",
            ),
            ("Weigh 2 kg of flour", "Weigh 2 lbs of flour"),
            ("显示2024年3月的发票", "显示2024年4月的发票"),
            ("称2公斤面粉", "称2斤面粉"),
            ("转500元", "转500美元"),
            ("What is the p99 latency?", "What is the p95 latency?"),
        ] {
            assert_eq!(refused(a, b), Some("numbers"), "{a:?} ~ {b:?}");
        }
        for (a, b) in [
            ("Move $500 to savings", "Move 500 dollars to savings"),
            ("What is 15% of 240?", "What is 15 percent of 240?"),
            ("显示2024年3月的发票", "列出2024年3月的发票"),
            ("I am here for 2 hours", "I am here for 2 hrs"),
        ] {
            assert_eq!(refused(a, b), None, "{a:?} ~ {b:?}");
        }
        // The degree sign makes a lone "C" a unit.
        assert_eq!(
            refuses("Set it to 21 °C", "Set it to 21°C", &[Guard::Numbers]),
            None
        );
    }

    #[test]
    fn direction_and_chinese_questions() {
        for (a, b) in [
            (
                "Transfer 500 dollars from checking to savings",
                "Transfer 500 dollars from savings to checking",
            ),
            ("Find flights to Rome", "Find flights from Rome"),
        ] {
            assert_eq!(refused(a, b), Some("entities"), "{a:?} ~ {b:?}");
        }
        for (a, b) in [
            (
                "Transfer 500 dollars from checking to savings",
                "Move 500 dollars from my checking account to savings",
            ),
            (
                "How do I reset my password?",
                "What is the way to reset my password?",
            ),
        ] {
            assert_eq!(refused(a, b), None, "{a:?} ~ {b:?}");
        }
        // 是否 and A-not-A questions ask; they do not deny. (Whole Chinese sentences are one
        // "word" to the entity guard, so only the negation guard is asked here.)
        for (a, b) in [
            ("API服务器在运行吗？", "API服务器是否正在运行？"),
            ("李雷把报告发给韩梅梅了吗？", "李雷有没有把报告发给韩梅梅？"),
        ] {
            assert_eq!(refuses(a, b, &[Guard::Negation]), None, "{a:?} ~ {b:?}");
        }
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
