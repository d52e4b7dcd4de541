//! The SSE usage reader: any bytes, cut anywhere, give the same usage as the whole.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fn usage(chunks: &[&[u8]]) -> Option<String> {
    let mut t = clawgate::observe::usage::Tracker::for_content_type(b"text/event-stream")?;
    for c in chunks {
        t.feed(&Bytes::copy_from_slice(c));
    }
    t.finish().map(|u| format!("{u:?}"))
}

fuzz_target!(|input: (u16, &[u8])| {
    let (cut, stream) = input;
    let cut = (cut as usize).min(stream.len());
    let whole = usage(&[stream]);
    let (a, b) = stream.split_at(cut);
    assert_eq!(usage(&[a, b]), whole);
});
