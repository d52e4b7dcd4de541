//! LLM latency as users feel it (issue 20, item 4): the time to the first content of an answer,
//! the time per output token after it, and tokens per second. Measured on the answer as it
//! passes: the SSE tracker (`usage.rs`) says whether a chunk carried generated text, and a
//! chunk that did costs one clock read here; nothing is held back or parsed twice.
//!
//! Time to first token counts from the request's arrival at the gateway (what the user waits
//! for: admission, the backend's queue and prefill), not from sending it upstream. For a JSON
//! answer the first token is the whole answer's arrival.

use std::time::Instant;

/// An LLM answer's clock, started when its response head passed.
#[derive(Debug, Clone, PartialEq)]
pub struct Clock {
    /// The request's model, the label when the answer does not name one.
    pub model: Option<String>,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// Characters of the answer's text, to estimate its tokens when it carries no usage.
    pub chars: u64,
    pub streamed: bool,
}

/// What an LLM answer's timing comes to, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    pub ttft: f64,
    /// Streams of at least 2 tokens only: the first token's time is TTFT's.
    pub per_token: Option<f64>,
    /// Completion tokens over the time from the request's arrival to the answer's last text:
    /// end-to-end throughput, for JSON answers as for streams.
    pub tokens_per_second: Option<f64>,
}

impl Clock {
    pub fn new(model: Option<String>, streamed: bool) -> Clock {
        Clock {
            model,
            first: None,
            last: None,
            chars: 0,
            streamed,
        }
    }

    /// A chunk carried generated text (for JSON: the whole answer arrived).
    pub fn content(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// The timing of an answer that started at `start` and has `completion` tokens (from its
    /// usage; else `None` and estimated from its characters at `chars_per_token`); `None`
    /// while no content came.
    pub fn timing(
        &self,
        start: Instant,
        completion: Option<u64>,
        chars_per_token: u64,
    ) -> Option<Timing> {
        let (first, last) = (self.first?, self.last?);
        let ttft = first.saturating_duration_since(start).as_secs_f64();
        let tokens = completion
            .filter(|n| *n > 0)
            .unwrap_or_else(|| self.chars.div_ceil(chars_per_token.max(1)));
        let decoding = last.saturating_duration_since(first).as_secs_f64();
        let per_token = (self.streamed && tokens >= 2).then(|| decoding / (tokens - 1) as f64);
        let total = last.saturating_duration_since(start).as_secs_f64();
        let tokens_per_second = (tokens > 0 && total > 0.0).then(|| tokens as f64 / total);
        Some(Timing {
            ttft,
            per_token,
            tokens_per_second,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_stream_times_its_first_token_then_the_rest_per_token() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut c = Clock::new(Some("m".into()), true);
        assert_eq!(c.timing(start, Some(7), 4), None, "no content yet");
        // 7 tokens: the first at 300 ms, then one every 50 ms.
        for i in 0..7 {
            c.content(ms(300 + 50 * i));
        }
        let t = c.timing(start, Some(7), 4).unwrap();
        assert!((t.ttft - 0.3).abs() < 1e-9, "{t:?}");
        assert!((t.per_token.unwrap() - 0.05).abs() < 1e-9, "{t:?}");
        assert!(
            (t.tokens_per_second.unwrap() - 7.0 / 0.6).abs() < 1e-9,
            "{t:?}"
        );
        // Without usage: 26 characters at 4 a token are 7 tokens.
        c.chars = 26;
        assert_eq!(c.timing(start, None, 4), c.timing(start, Some(7), 4));
        // One token: no time per token.
        assert_eq!(c.timing(start, Some(1), 4).unwrap().per_token, None);
    }

    #[test]
    fn a_json_answer_has_its_arrival_as_first_token_and_no_time_per_token() {
        let start = Instant::now();
        let mut c = Clock::new(None, false);
        c.content(start + Duration::from_millis(400));
        let t = c.timing(start, Some(20), 4).unwrap();
        assert!((t.ttft - 0.4).abs() < 1e-9);
        assert_eq!(t.per_token, None);
        assert!((t.tokens_per_second.unwrap() - 50.0).abs() < 1e-9);
    }
}
