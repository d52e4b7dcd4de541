//! Byte buffers that requests append records to and a background thread takes away: the access
//! log's lines and the sampled spans. One buffer per worker thread (a mutex only that thread
//! and, on its schedule, the taker lock), bounded: a record that does not fit is dropped and
//! counted, never waited for. Nothing is allocated per record, and nothing allocated by a
//! request is freed by another thread (cross-thread frees made the allocator's pages cold:
//! measured at about 16 µs of a sampled request's time when spans were heap records).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Buffers; threads beyond this many share them.
const SHARDS: usize = 16;

pub struct Shards {
    bufs: Box<[Mutex<Vec<u8>>]>,
    limit: usize,
    dropped: AtomicU64,
}

/// This thread's buffer: threads are numbered as they first append.
fn index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

impl Shards {
    /// `limit`: bytes one buffer may hold before records are dropped.
    pub fn new(limit: usize) -> Shards {
        Shards {
            bufs: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
            limit,
            dropped: AtomicU64::new(0),
        }
    }

    /// Appends a record (made by `record`) to this thread's buffer; false when it was full.
    pub fn append(&self, record: impl FnOnce(&mut Vec<u8>)) -> bool {
        let mut buf = self.bufs[index()].lock().unwrap_or_else(|p| p.into_inner());
        if buf.len() >= self.limit {
            drop(buf);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        record(&mut buf);
        true
    }

    /// Takes each non-empty buffer's contents in turn (swapped with `spare`, so the lock is held
    /// for an instant and the capacity is kept for reuse).
    pub fn take(&self, spare: &mut Vec<u8>, mut each: impl FnMut(&[u8])) {
        for buf in self.bufs.iter() {
            std::mem::swap(&mut *buf.lock().unwrap_or_else(|p| p.into_inner()), spare);
            if !spare.is_empty() {
                each(spare);
            }
            spare.clear();
        }
    }

    /// Records dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_taken_once_and_a_full_buffer_drops() {
        let s = Shards::new(8);
        assert!(s.append(|b| b.extend_from_slice(b"abcdefgh")));
        assert!(!s.append(|b| b.extend_from_slice(b"x")), "full");
        assert_eq!(s.take_dropped(), 1);
        let mut got = Vec::new();
        let mut spare = Vec::new();
        s.take(&mut spare, |b| got.extend_from_slice(b));
        assert_eq!(got, b"abcdefgh");
        s.take(&mut spare, |_| panic!("nothing left"));
        assert!(s.append(|b| b.push(b'y')), "room again");
    }
}
