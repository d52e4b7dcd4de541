//! Whether a text is in a script the embedding model understands. all-MiniLM-L6-v2 was trained
//! on English: its vectors for two Chinese sentences of similar shape are close whatever they
//! say (measured in `load-tests/semantic/`), so a text mostly in another script is looked up
//! exactly only (DESIGN §5.1) until a multilingual model is configured.

/// True when most of the text's words are in the Latin script (or it has no letters at all:
/// digits and symbols mean the same in any language). Words, not characters, are weighed, so
/// that one English product name does not make a Chinese sentence English ("查看 GitHub 上的
/// PR 列表" is Chinese) and one Chinese name does not make an English one Chinese.
pub fn covered(text: &str) -> bool {
    let (mut latin, mut other) = (0usize, 0usize);
    // The script of the run of letters being read, and how many Han or kana characters it holds.
    let mut run: Option<Script> = None;
    let mut ideographs = 0usize;
    for c in text.chars().chain(std::iter::once(' ')) {
        let script = script(c);
        if script != run {
            match run {
                Some(Script::Latin) => latin += 1,
                Some(Script::Other) => other += 1,
                // Chinese and Japanese do not space their words, which are about two
                // characters long.
                Some(Script::Ideographic) => other += ideographs.div_ceil(2),
                None => {}
            }
            run = script;
            ideographs = 0;
        }
        if script == Some(Script::Ideographic) {
            ideographs += 1;
        }
    }
    latin > other || other == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    Latin,
    Ideographic,
    Other,
}

/// The script of a letter; `None` for digits, spaces, punctuation and symbols.
fn script(c: char) -> Option<Script> {
    let ideographic = matches!(c,
        '\u{3040}'..='\u{30FF}'      // hiragana, katakana
        | '\u{3400}'..='\u{4DBF}'    // CJK extension A
        | '\u{4E00}'..='\u{9FFF}'    // CJK unified ideographs
        | '\u{F900}'..='\u{FAFF}'    // CJK compatibility ideographs
        | '\u{20000}'..='\u{3FFFF}'); // CJK extensions B and later
    let latin = c.is_ascii_alphabetic()
        || matches!(c, '\u{00C0}'..='\u{024F}' | '\u{1E00}'..='\u{1EFF}') && c.is_alphabetic();
    if ideographic {
        Some(Script::Ideographic)
    } else if latin {
        Some(Script::Latin)
    } else if c.is_alphabetic() {
        Some(Script::Other)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::covered;

    #[test]
    fn english_and_other_latin_texts_are_covered() {
        for text in [
            "Show the invoices for March 2024",
            "Transfer $500 from checking to savings!",
            "Où est la gare ?",
            "Größe der Datei report.csv",
            "2 + 2",
            "",
            // One foreign name in an English sentence.
            "What is the weather in 北京 tomorrow?",
            "Explain the 报错 in my build log",
        ] {
            assert!(covered(text), "{text:?}");
        }
    }

    #[test]
    fn chinese_and_other_scripts_are_not() {
        for text in [
            "明天北京天气怎么样",
            "显示2024年3月的发票",
            "CPU使用率超过90%的服务器",
            "查看 GitHub 上的 PR 列表",
            "把 report.csv 删掉",
            "東京の天気は？",
            "Какая погода в Москве?",
            "Τι ώρα είναι;",
            "서울 날씨 어때요",
        ] {
            assert!(!covered(text), "{text:?}");
        }
    }
}
