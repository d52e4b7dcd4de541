//! LLM token usage read from responses as they stream through, without holding them back:
//! OpenAI-style (`usage.prompt_tokens` / `completion_tokens`) and Anthropic-style
//! (`input_tokens` / `output_tokens`) JSON bodies, and server-sent event streams (the chunk that
//! carries the usage). Only a bounded part of a body is kept: JSON bodies up to 1 MiB (as shared
//! buffers, not copies, until the end), SSE one event line at a time.

use bytes::Bytes;

const MAX_JSON: usize = 1 << 20;
const MAX_LINE: usize = 256 << 10;
/// Request bodies kept to find the model when the response does not name it.
pub const MAX_REQUEST: usize = 64 << 10;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub model: Option<String>,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }

    /// Takes what a JSON object says (a whole response, or one SSE event).
    fn absorb(&mut self, v: &serde_json::Value) -> bool {
        let mut found = false;
        for holder in [v, &v["message"]] {
            let u = &holder["usage"];
            if let Some(n) = u["prompt_tokens"].as_u64().or(u["input_tokens"].as_u64()) {
                self.prompt = n;
                found = true;
            }
            if let Some(n) = u["completion_tokens"]
                .as_u64()
                .or(u["output_tokens"].as_u64())
            {
                self.completion = n;
                found = true;
            }
            if let (Some(total), None, None) = (
                u["total_tokens"].as_u64(),
                u["prompt_tokens"].as_u64(),
                u["completion_tokens"].as_u64(),
            ) {
                self.prompt = total;
                found = true;
            }
            if let Some(m) = holder["model"].as_str() {
                self.model = Some(m.to_string());
            }
        }
        found
    }
}

pub enum Tracker {
    Json {
        chunks: Vec<Bytes>,
        len: usize,
    },
    Sse {
        line: Vec<u8>,
        usage: Usage,
        seen: bool,
        /// Inside an over-long line: skipped until its end.
        skipping: bool,
        /// Characters of the answer's text streamed so far (to estimate its tokens when the
        /// backend sends no usage, or the client goes away before it).
        chars: u64,
    },
    /// Too large to look at: given up.
    Off,
}

impl Tracker {
    /// A tracker for a response of this content type, if it may carry usage.
    pub fn for_content_type(ct: &[u8]) -> Option<Tracker> {
        // No allocation: most responses are neither, and this runs for each of them.
        let starts = |p: &[u8]| ct.len() >= p.len() && ct[..p.len()].eq_ignore_ascii_case(p);
        // `application/problem+json` and the like; most types have no '+' to look further for.
        let plus_json =
            || ct.contains(&b'+') && ct.windows(5).any(|w| w.eq_ignore_ascii_case(b"+json"));
        if starts(b"text/event-stream") {
            Some(Tracker::Sse {
                line: Vec::new(),
                usage: Usage::default(),
                seen: false,
                skipping: false,
                chars: 0,
            })
        } else if starts(b"application/json") || plus_json() {
            Some(Tracker::Json {
                chunks: Vec::new(),
                len: 0,
            })
        } else {
            None
        }
    }

    /// Takes in a chunk of the body; `true` when it carried generated text (an SSE event with
    /// content: not a comment, nor a role-only or empty delta), which the latency clock needs.
    pub fn feed(&mut self, chunk: &Bytes) -> bool {
        match self {
            Tracker::Json { chunks, len } => {
                *len += chunk.len();
                if *len > MAX_JSON {
                    *self = Tracker::Off;
                } else {
                    chunks.push(chunk.clone());
                }
                false
            }
            Tracker::Sse {
                line,
                usage,
                seen,
                skipping,
                chars,
            } => {
                let before = *chars;
                let mut rest = &chunk[..];
                while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
                    if !*skipping && line.len() + nl <= MAX_LINE {
                        line.extend_from_slice(&rest[..nl]);
                        *seen |= sse_line(line, usage);
                        *chars += streamed_chars(line);
                    }
                    *skipping = false;
                    line.clear();
                    rest = &rest[nl + 1..];
                }
                if !*skipping {
                    if line.len() + rest.len() <= MAX_LINE {
                        line.extend_from_slice(rest);
                    } else {
                        *skipping = true;
                        line.clear();
                    }
                }
                *chars > before
            }
            Tracker::Off => false,
        }
    }

    pub fn finish(self) -> Option<Usage> {
        self.finish_counted().0
    }

    /// The usage, and the characters of the answer's text (an estimate's input when the
    /// backend sent no usage).
    pub fn finish_counted(self) -> (Option<Usage>, u64) {
        match self {
            Tracker::Json { chunks, .. } => {
                let body: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    return (None, 0);
                };
                let mut u = Usage::default();
                let text = ["choices", "content", "output"].map(|k| text_chars(&v[k]));
                (u.absorb(&v).then_some(u), text.iter().sum())
            }
            Tracker::Sse {
                line,
                mut usage,
                mut seen,
                skipping,
                mut chars,
            } => {
                if !skipping {
                    seen |= sse_line(&line, &mut usage);
                    chars += streamed_chars(&line);
                }
                (seen.then_some(usage), chars)
            }
            Tracker::Off => (None, 0),
        }
    }

    /// What a stream cut short carried so far: its usage if an event had it, and the
    /// characters of its text.
    pub fn so_far(&self) -> (Option<Usage>, u64) {
        match self {
            Tracker::Sse {
                usage, seen, chars, ..
            } => (seen.then(|| usage.clone()), *chars),
            _ => (None, 0),
        }
    }
}

/// One SSE line: `data: {json}` may carry usage.
fn sse_line(line: &[u8], usage: &mut Usage) -> bool {
    let text = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(data) = text.strip_prefix(b"data:") else {
        return false;
    };
    let data = data.trim_ascii();
    if !data.starts_with(b"{") {
        return false;
    }
    // Parse only events that can hold usage or the model.
    if !contains(data, b"\"usage\"") && usage.model.is_some() {
        return false;
    }
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(v) => usage.absorb(&v),
        Err(_) => false,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Characters of text in a JSON value: strings, and the `content` and `text` fields of
/// objects, however nested (messages, content parts, choices).
pub fn text_chars(v: &serde_json::Value) -> u64 {
    use serde_json::Value;
    match v {
        Value::String(s) => s.chars().count() as u64,
        Value::Array(a) => a.iter().map(text_chars).sum(),
        Value::Object(o) => ["content", "text", "message"]
            .iter()
            .filter_map(|k| o.get(*k))
            .map(text_chars)
            .sum(),
        _ => 0,
    }
}

/// Characters of answer text in one SSE line: the string values of `"content"`, `"text"` and
/// `"delta"` fields (OpenAI chat and completions, Anthropic, the Responses API), found by a scan
/// rather than a parse (this runs for every event).
fn streamed_chars(line: &[u8]) -> u64 {
    let Some(data) = line.strip_prefix(b"data:") else {
        return 0;
    };
    let mut n = 0;
    for key in [&b"\"content\":"[..], b"\"text\":", b"\"delta\":"] {
        let mut rest = data;
        while let Some(i) = rest.windows(key.len()).position(|w| w == key) {
            rest = rest[i + key.len()..].trim_ascii_start();
            if let Some(s) = rest.strip_prefix(b"\"") {
                let (chars, used) = string_chars(s);
                n += chars;
                rest = &s[used..];
            }
        }
    }
    n
}

/// Characters of a JSON string's body up to its closing quote, and the bytes it spans.
fn string_chars(s: &[u8]) -> (u64, usize) {
    let (mut n, mut i) = (0, 0);
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => return (n, i + 1),
            b'\\' if s.get(i + 1) == Some(&b'u') => i += 6,
            b'\\' => i += 2,
            // A UTF-8 continuation byte is part of the character before it.
            b if b & 0xC0 == 0x80 => {
                i += 1;
                continue;
            }
            _ => i += 1,
        }
        n += 1;
    }
    (n, s.len())
}

/// The `model` of a JSON request body (kept up to `MAX_REQUEST`).
pub fn request_model(chunks: &[Bytes]) -> Option<String> {
    let body: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v["model"].as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(ct: &str, parts: &[&str]) -> Option<Usage> {
        let mut t = Tracker::for_content_type(ct.as_bytes())?;
        for p in parts {
            t.feed(&Bytes::copy_from_slice(p.as_bytes()));
        }
        t.finish()
    }

    #[test]
    fn openai_json_in_pieces() {
        let u = run(
            "application/json; charset=utf-8",
            &[
                r#"{"model":"gpt-4o","usage":{"prompt_"#,
                r#"tokens":12,"completion_tokens":30,"total_tokens":42}}"#,
            ],
        )
        .unwrap();
        assert_eq!((u.prompt, u.completion, u.total()), (12, 30, 42));
        assert_eq!(u.model.as_deref(), Some("gpt-4o"));
    }

    #[test]
    fn anthropic_json_and_stream() {
        let u = run(
            "application/json",
            &[r#"{"model":"claude-x","usage":{"input_tokens":5,"output_tokens":7}}"#],
        )
        .unwrap();
        assert_eq!((u.prompt, u.completion), (5, 7));
        let u = run(
            "text/event-stream",
            &[
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
                "event: content_block_delta\ndata: {\"type\":\"content_block_delta\"}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_",
                "tokens\":15}}\n\n",
            ],
        )
        .unwrap();
        assert_eq!((u.prompt, u.completion), (9, 15));
        assert_eq!(u.model.as_deref(), Some("claude-x"));
    }

    #[test]
    fn openai_stream_usage_chunk() {
        let u = run(
            "text/event-stream",
            &[
                "data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
                "data: {\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\ndata: [DONE]\n\n",
            ],
        )
        .unwrap();
        assert_eq!(
            (u.prompt, u.completion, u.model.as_deref()),
            (3, 4, Some("m"))
        );
    }

    #[test]
    fn streamed_text_is_counted_without_usage_and_so_far() {
        let mut t = Tracker::for_content_type(b"text/event-stream").unwrap();
        // Neither a comment nor a role-only delta is content; a line is content once whole.
        assert!(!t.feed(&Bytes::from_static(
            b": hi\n\ndata: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"H\\u00e9",
        )));
        assert!(t.feed(&Bytes::from_static(b"llo\"}}]}\n\n")));
        assert_eq!(t.so_far(), (None, 5));
        t.feed(&Bytes::from_static(
            "data: {\"delta\":{\"type\":\"text_delta\",\"text\": \" wörld\\\"\"}}\n\ndata: [DONE]\n\n".as_bytes(),
        ));
        assert_eq!(t.finish_counted(), (None, 12));
        let (u, chars) = Tracker::for_content_type(b"application/json")
            .map(|mut t| {
                t.feed(&Bytes::from_static(
                    br#"{"choices":[{"message":{"role":"assistant","content":"four"}}]}"#,
                ));
                t.finish_counted()
            })
            .unwrap();
        assert_eq!((u, chars), (None, 4));
    }

    #[test]
    fn other_bodies_are_ignored() {
        assert!(Tracker::for_content_type(b"text/plain").is_none());
        assert!(run("application/json", &["not json"]).is_none());
        assert!(run("application/json", &[r#"{"no":"usage"}"#]).is_none());
        let big = "x".repeat(MAX_JSON + 1);
        assert!(run("application/json", &[&big]).is_none());
    }
}
