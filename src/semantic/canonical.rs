//! The form of a question that is embedded: its words, lower-cased, without the politeness and
//! request wrapping ("please", "can you", "could you tell me", "hey", a trailing "thanks"; 请,
//! 麻烦, 帮我, 一下, a final 吗 or 呢) and the punctuation around words. An agent that asks "Can
//! you please show me the March invoices?" wants what "show the March invoices" wants, but the
//! wrapping is a third of the words and pulls the two vectors apart (measured in
//! `load-tests/semantic/`). Only what is embedded changes: the guards compare the original
//! texts, so no number, name or negation is lost to them, and nothing here drops a word that
//! carries one.

/// Request wrapping at the start of a text, dropped as often as it repeats ("hey, could you
/// please tell me ..."); words compared without case and surrounding punctuation.
const LEADING: &[&[&str]] = &[
    &["hey"],
    &["hi"],
    &["hello"],
    &["please"],
    &["pls"],
    &["kindly"],
    &["can", "you"],
    &["could", "you"],
    &["would", "you"],
    &["will", "you"],
    &["do", "you", "know"],
    &["i'd", "like", "to", "know"],
    &["i", "would", "like", "to", "know"],
    &["i", "want", "to", "know"],
    &["i", "wonder"],
    &["i", "was", "wondering"],
    &["let", "me", "know"],
    &["tell", "me"],
];

/// Wrapping at the end, dropped as often as it repeats ("..., thanks please").
const TRAILING: &[&[&str]] = &[
    &["please"],
    &["pls"],
    &["thanks"],
    &["thx"],
    &["thank", "you"],
    &["for", "me"],
];

/// Imperatives whose "me" says nothing about what is asked ("show me the logs").
const TO_ME: &[&str] = &["show", "give", "get", "find", "list", "send"];

/// Chinese wrapping at the start (longest first) and at the end.
const CHINESE_LEADING: &[&str] = &["麻烦你", "麻烦", "请你", "请", "帮我", "帮忙"];
const CHINESE_TRAILING: &[&str] = &["谢谢", "吗", "呢", "吧"];

/// The text to embed in place of `text`; see the module documentation.
pub fn canonical(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut words = text.split_whitespace().map(trim).filter(|w| !w.is_empty());
    // The request wrapping at the start.
    while let Some(n) = LEADING.iter().find_map(|p| starts_with(words.clone(), p)) {
        words.nth(n - 1);
    }
    let mut previous_imperative = false;
    let mut first = true;
    for word in words {
        let word = if first {
            strip_chinese_leading(word)
        } else {
            word
        };
        first = false;
        // "please" anywhere, and "me" after "show" or "give", carry nothing.
        if word.eq_ignore_ascii_case("please") || previous_imperative && word == "me" {
            continue;
        }
        previous_imperative = TO_ME.iter().any(|v| word.eq_ignore_ascii_case(v));
        push_word(&mut out, word);
    }
    drop_trailing(&mut out);
    out
}

/// How many words `phrase` takes when `words` start with it.
fn starts_with<'a>(mut words: impl Iterator<Item = &'a str>, phrase: &[&str]) -> Option<usize> {
    phrase
        .iter()
        .all(|p| words.next().is_some_and(|w| same_word(w, p)))
        .then_some(phrase.len())
}

/// Equal without case, and with a curly apostrophe read as a straight one.
fn same_word(word: &str, phrase_word: &str) -> bool {
    word.chars().count() == phrase_word.chars().count()
        && word
            .chars()
            .zip(phrase_word.chars())
            .all(|(w, p)| w.to_lowercase().eq(p.to_lowercase()) || w == '’' && p == '\'')
}

/// The word without the punctuation around it; what is inside ("report.csv", "10:30",
/// "don't") and the symbols that mean something ("$500", "15%", "°C", "#42") stay.
fn trim(word: &str) -> &str {
    word.trim_matches(|c: char| {
        (c.is_ascii_punctuation() && !matches!(c, '$' | '%' | '#' | '@' | '+' | '-'))
            || matches!(
                c,
                '“' | '”' | '‘' | '’' | '…' | '，' | '。' | '？' | '！' | '：' | '；' | '、'
            )
    })
}

/// The word without the Chinese wrapping at its start (请帮我 → both 请 and 帮我).
fn strip_chinese_leading(mut word: &str) -> &str {
    while let Some(rest) = CHINESE_LEADING
        .iter()
        .find_map(|p| word.strip_prefix(p).filter(|rest| !rest.is_empty()))
    {
        word = rest;
    }
    word
}

/// Appends the lower-cased word, without 一下 ("a little": 看一下 is 看).
fn push_word(out: &mut String, word: &str) {
    if !out.is_empty() {
        out.push(' ');
    }
    let mut rest = word;
    while let Some(c) = rest.chars().next() {
        if let Some(after) = rest.strip_prefix("一下") {
            rest = after;
            continue;
        }
        out.extend(c.to_lowercase());
        rest = &rest[c.len_utf8()..];
    }
}

/// Drops the wrapping at the end of the built text.
fn drop_trailing(out: &mut String) {
    loop {
        let before = out.len();
        for phrase in TRAILING {
            if let Some(keep) = without_tail(out, phrase) {
                out.truncate(keep);
            }
        }
        for particle in CHINESE_TRAILING {
            if out.len() > particle.len() && out.ends_with(particle) {
                out.truncate(out.len() - particle.len());
            }
        }
        if out.len() == before {
            return;
        }
    }
}

/// The length of `out` without `phrase` as its last words, when there are words before it.
fn without_tail(out: &str, phrase: &[&str]) -> Option<usize> {
    let mut end = out.len();
    for word in phrase.iter().rev() {
        // Each of the phrase's words, and the space before it.
        end = out[..end].strip_suffix(word)?.strip_suffix(' ')?.len();
    }
    (end > 0).then_some(end)
}

#[cfg(test)]
mod tests {
    use super::canonical;

    #[test]
    fn request_wrapping_is_dropped() {
        for (text, want) in [
            (
                "Please show me the March invoices?",
                "show the march invoices",
            ),
            ("show the March invoices", "show the march invoices"),
            (
                "Hey, could you please tell me the Q3 2023 revenue? Thanks!",
                "the q3 2023 revenue",
            ),
            (
                "I'd like to know how many vacation days I have left",
                "how many vacation days i have left",
            ),
            (
                "Can you display the invoices, thank you",
                "display the invoices",
            ),
            (
                "Book a meeting with Alice for me please",
                "book a meeting with alice",
            ),
            ("请帮我查一下明天北京的天气吗？", "查明天北京的天气"),
            ("麻烦显示2024年3月的发票", "显示2024年3月的发票"),
        ] {
            assert_eq!(canonical(text), want, "{text:?}");
        }
    }

    #[test]
    fn numbers_names_and_negations_stay() {
        for (text, want) in [
            ("Can you not delete report.csv?", "not delete report.csv"),
            (
                "Please don't transfer $5,000 to Bob's account",
                "don't transfer $5,000 to bob's account",
            ),
            ("Set it to 21 °C at 10:30", "set it to 21 °c at 10:30"),
            (
                "Give me the bottom 5 products",
                "give the bottom 5 products",
            ),
            // A question that is about "you" keeps it.
            ("Can I reset my password?", "can i reset my password"),
            ("Thanks", "thanks"),
            ("这个方案不可行吗", "这个方案不可行"),
        ] {
            assert_eq!(canonical(text), want, "{text:?}");
        }
    }
}
