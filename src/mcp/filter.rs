//! Hiding the tools an agent may not use from `tools/list` answers, so that it never learns a
//! denied tool's name or schema. Answers come as one JSON body or as an SSE stream; the stream is
//! filtered event by event and never held whole.

use bytes::Bytes;
use serde_json::Value;

/// Rewrites a JSON answer (one response or a batch) so that the responses to the `tools/list`
/// requests `ids` list only allowed tools. `None` when nothing was removed or the body is not
/// JSON: the caller then sends the answer as it came.
pub fn tools_list(answer: &[u8], ids: &[Value], allows: impl Fn(&str) -> bool) -> Option<Bytes> {
    if ids.is_empty() {
        return None;
    }
    let mut v: Value = serde_json::from_slice(answer).ok()?;
    let mut changed = false;
    for msg in messages(&mut v) {
        if answered(msg, ids).is_some() {
            changed |= hide(msg, &allows);
        }
    }
    changed.then(|| Bytes::from(v.to_string()))
}

/// The messages of a parsed answer: the elements of a batch, or the one message.
fn messages(v: &mut Value) -> std::slice::IterMut<'_, Value> {
    match v {
        Value::Array(a) => a.iter_mut(),
        one => std::slice::from_mut(one).iter_mut(),
    }
}

/// Which of `ids` this message answers. A message with a method is a server's request or
/// notification that happens to share an id, not an answer.
fn answered(msg: &Value, ids: &[Value]) -> Option<usize> {
    let obj = msg.as_object()?;
    if obj.contains_key("method") {
        return None;
    }
    let id = obj.get("id")?;
    ids.iter().position(|i| i == id)
}

/// Removes the tools not allowed from `result.tools`; whether any went. A tool without a string
/// name cannot be judged, so it goes too.
fn hide(msg: &mut Value, allows: &dyn Fn(&str) -> bool) -> bool {
    let Some(tools) = msg
        .get_mut("result")
        .and_then(|r| r.get_mut("tools"))
        .and_then(Value::as_array_mut)
    else {
        return false;
    };
    let before = tools.len();
    tools.retain(|t| t.get("name").and_then(Value::as_str).is_some_and(allows));
    tools.len() != before
}

/// Filters a `text/event-stream` answer chunk by chunk.
///
/// It holds at most the one event being read (up to `max_event` bytes) and passes every event
/// through byte for byte except data events that answer a pending `tools/list` request; once
/// every such request is answered, the rest of the stream passes untouched without buffering.
///
/// An event larger than `max_event` while a `tools/list` answer is pending is dropped whole,
/// never passed through: it could be that very answer, and sending it unfiltered would show the
/// denied tools. [`SseFilter::dropped`] counts these so the caller can log them; the client
/// sees its request unanswered, as after any lost event.
pub struct SseFilter {
    /// `tools/list` ids not answered yet.
    pending: Vec<Value>,
    allows: Box<dyn Fn(&str) -> bool + Send + Sync>,
    max_event: usize,
    /// The event being read, with its line endings.
    event: Vec<u8>,
    /// Discarding the rest of an oversize event.
    skipping: bool,
    /// No byte yet on the current line, so a line end here ends the event.
    line_empty: bool,
    /// The last byte was a CR inside an event: an LF now belongs to the same line end.
    after_cr: bool,
    /// The last byte was a CR that ended an event (`true` when it was sent): an LF now
    /// completes that event's CRLF and goes (or not) the same way.
    lf_after_event: Option<bool>,
    dropped: usize,
}

impl SseFilter {
    pub fn new(
        tools_list_ids: Vec<Value>,
        allows: impl Fn(&str) -> bool + Send + Sync + 'static,
        max_event: usize,
    ) -> SseFilter {
        SseFilter {
            pending: tools_list_ids,
            allows: Box::new(allows),
            max_event,
            event: Vec::new(),
            skipping: false,
            line_empty: true,
            after_cr: false,
            lf_after_event: None,
            dropped: 0,
        }
    }

    /// Whether everything from now on passes untouched (no `tools/list` answer pending), so the
    /// caller may stop feeding the filter.
    pub fn is_passthrough(&self) -> bool {
        self.pending.is_empty() && self.event.is_empty() && !self.skipping
    }

    /// How many oversize events were dropped.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// Takes the next chunk of the stream; returns what can be sent now.
    pub fn feed(&mut self, chunk: &[u8]) -> Bytes {
        if self.is_passthrough() {
            return Bytes::copy_from_slice(chunk);
        }
        let mut out = Vec::new();
        // chunk[start..j] belongs to the current event and is not yet in `self.event`.
        let mut start = 0;
        for (j, &b) in chunk.iter().enumerate() {
            if b == b'\n' {
                if let Some(sent) = self.lf_after_event.take() {
                    if sent {
                        out.push(b'\n');
                    }
                    start = j + 1;
                    continue;
                }
                if std::mem::take(&mut self.after_cr) {
                    continue;
                }
            } else {
                self.lf_after_event = None;
                self.after_cr = false;
            }
            if b != b'\n' && b != b'\r' {
                self.line_empty = false;
                continue;
            }
            if !self.line_empty {
                self.line_empty = true;
                self.after_cr = b == b'\r';
                continue;
            }
            // A blank line: the event ends with this byte.
            self.append(&chunk[start..=j]);
            start = j + 1;
            let sent = self.end_event(&mut out);
            if b == b'\r' {
                self.lf_after_event = Some(sent);
            }
            if self.pending.is_empty() {
                out.extend_from_slice(&chunk[start..]);
                return Bytes::from(out);
            }
        }
        self.append(&chunk[start..]);
        Bytes::from(out)
    }

    /// The end of the stream: an unfinished event goes out as it came (filtered if it is a
    /// `tools/list` answer), as the client decides what to make of it.
    pub fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        self.end_event(&mut out);
        Bytes::from(out)
    }

    fn append(&mut self, bytes: &[u8]) {
        if self.skipping {
            return;
        }
        if self.event.len() + bytes.len() > self.max_event {
            self.event = Vec::new();
            self.skipping = true;
            self.dropped += 1;
            return;
        }
        self.event.extend_from_slice(bytes);
    }

    /// Sends the event read (rewritten if need be) and readies for the next; whether anything
    /// was sent.
    fn end_event(&mut self, out: &mut Vec<u8>) -> bool {
        if std::mem::take(&mut self.skipping) {
            return false;
        }
        match self.rewrite() {
            Some(new) => out.extend_from_slice(&new),
            None => out.extend_from_slice(&self.event),
        }
        self.event.clear();
        true
    }

    /// The event with its `tools/list` answer filtered, or `None` to send it as it is.
    fn rewrite(&mut self) -> Option<Vec<u8>> {
        let lines = lines(&self.event);
        let mut data: Option<Vec<u8>> = None;
        for (line, _) in &lines {
            if let Some(value) = data_value(line) {
                // The spec joins a field's lines with LF.
                match &mut data {
                    Some(d) => {
                        d.push(b'\n');
                        d.extend_from_slice(value);
                    }
                    None => data = Some(value.to_vec()),
                }
            }
        }
        let mut v: Value = serde_json::from_slice(&data?).ok()?;
        let mut changed = false;
        for msg in messages(&mut v) {
            if let Some(k) = answered(msg, &self.pending) {
                self.pending.swap_remove(k);
                changed |= hide(msg, &*self.allows);
            }
        }
        if !changed {
            return None;
        }
        // Every line but the data stays as it was; the data becomes one line where it began.
        let json = v.to_string();
        let mut new = Vec::with_capacity(self.event.len());
        let mut data_written = false;
        for (line, end) in &lines {
            if data_value(line).is_none() {
                new.extend_from_slice(line);
            } else if !data_written {
                data_written = true;
                new.extend_from_slice(b"data: ");
                new.extend_from_slice(json.as_bytes());
            } else {
                continue;
            }
            new.extend_from_slice(end);
        }
        Some(new)
    }
}

/// An event's lines and what ends each (CRLF, CR, LF, or nothing for an unfinished last line).
fn lines(event: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut lines = Vec::new();
    let (mut s, mut i) = (0, 0);
    while i < event.len() {
        let end = match event[i] {
            b'\r' if event.get(i + 1) == Some(&b'\n') => i + 2,
            b'\r' | b'\n' => i + 1,
            _ => {
                i += 1;
                continue;
            }
        };
        lines.push((&event[s..i], &event[i..end]));
        s = end;
        i = end;
    }
    if s < event.len() {
        lines.push((&event[s..], &event[event.len()..]));
    }
    lines
}

/// The value of a `data` field line (one space after the colon is not part of it).
fn data_value(line: &[u8]) -> Option<&[u8]> {
    match line.strip_prefix(b"data")? {
        [] => Some(b""),
        [b':', b' ', v @ ..] | [b':', v @ ..] => Some(v),
        _ => None,
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;
