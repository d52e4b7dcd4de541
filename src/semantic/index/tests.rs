use super::*;
use std::sync::Arc;

const DIMS: usize = 384;
const HOUR: Duration = Duration::from_secs(3600);

/// A unit vector of `DIMS` from a few of its components.
fn unit(parts: &[(usize, f32)]) -> Vec<f32> {
    let mut v = vec![0.0; DIMS];
    for &(i, x) in parts {
        v[i] = x;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

fn axis(a: usize) -> Vec<f32> {
    unit(&[(a, 1.0)])
}

/// A unit vector whose similarity to axis `a` is `s`, leaning towards axis `b`.
fn near(a: usize, s: f32, b: usize) -> Vec<f32> {
    unit(&[(a, s), (b, (1.0 - s * s).sqrt())])
}

fn part(n: usize) -> Partition {
    let mut p = [0; 32];
    p[..8].copy_from_slice(&(n as u64).to_le_bytes());
    p
}

/// An index at a fixed time, with answer `n` stored by request `r{n}`, threshold 0.9 and
/// every guard.
struct At(Index<u32>, Instant);

impl At {
    fn new(max_entries: usize, partition_cap: usize) -> At {
        At(Index::new(max_entries, partition_cap), Instant::now())
    }

    fn put(&self, p: usize, v: &[f32], text: &str, n: u32) {
        let id = format!("r{n}");
        self.0.insert(&part(p), v, text, n, &id, HOUR, self.1);
    }

    fn get(&self, p: usize, v: &[f32], text: &str) -> Lookup<u32> {
        self.with(&part(p), v, text, &Guard::ALL)
    }

    fn with(&self, p: &Partition, v: &[f32], text: &str, guards: &[Guard]) -> Lookup<u32> {
        Index::lookup(&self.0, p, v, text, 0.9, guards, self.1)
    }

    fn answer(&self, p: usize, v: &[f32], text: &str) -> Option<u32> {
        match self.get(p, v, text) {
            Lookup::Hit { answer, .. } => Some(answer),
            Lookup::Miss(_) => None,
        }
    }
}

fn assert_hit(found: Lookup<u32>, n: u32, similarity: f32) {
    let Lookup::Hit {
        answer,
        similarity: s,
        source_request_id: id,
    } = found
    else {
        panic!("{found:?}")
    };
    assert_eq!((answer, id), (n, format!("r{n}")));
    assert!((s - similarity).abs() < 0.005, "{s} for {similarity}");
}

/// The count and the byte estimate match what the shards hold.
fn check(index: &Index<u32>) {
    let (mut n, mut bytes) = (0, 0);
    for shard in index.shards.iter() {
        for entries in shard.read().unwrap().values() {
            assert!(!entries.is_empty());
            n += entries.len();
            bytes += entries.iter().map(Entry::bytes).sum::<usize>();
        }
    }
    assert_eq!((index.len(), index.bytes()), (n, bytes));
}

#[test]
fn hits_above_the_threshold_and_reports_the_best_below() {
    let at = At::new(100, 10);
    at.put(1, &axis(0), "how do I reset my password", 7);
    let found = at.get(1, &near(0, 0.95, 1), "how can I reset my password");
    assert_hit(found, 7, 0.95);
    match at.get(1, &near(0, 0.5, 1), "what is my password") {
        Lookup::Miss(MissReason::BelowThreshold { best }) => {
            assert!((best - 0.5).abs() < 0.005, "{best}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(MissReason::Empty.name(), "empty");
    check(&at.0);
}

#[test]
fn another_partition_never_hits() {
    let at = At::new(100, 10);
    at.put(1, &axis(0), "list open tickets", 1);
    let found = at.get(2, &axis(0), "list open tickets");
    assert_eq!(found, Lookup::Miss(MissReason::Empty));
    // Same first byte, so the same shard: the partitions are still apart.
    let mut p = part(1);
    p[31] = 1;
    let found = at.with(&p, &axis(0), "list open tickets", &[]);
    assert_eq!(found, Lookup::Miss(MissReason::Empty));
}

#[test]
fn a_guarded_best_falls_back_to_the_next_candidate() {
    let at = At::new(100, 10);
    let query = near(0, 0.99, 1);
    at.put(1, &axis(0), "invoices of march 2024", 3);
    let found = at.get(1, &query, "invoices of april 2024");
    assert_eq!(found, Lookup::Miss(MissReason::Guarded(Guard::Numbers)));
    // Without that guard the same pair is served.
    let found = at.with(&part(1), &query, "invoices of april 2024", &[]);
    assert_hit(found, 3, 0.99);

    // A less similar entry that agrees in its numbers is served instead.
    at.put(1, &near(0, 0.93, 2), "show invoices of april 2024", 4);
    assert_hit(at.get(1, &query, "invoices of april 2024"), 4, 0.99 * 0.93);
    // When none passes, the guard of the most similar candidate is reported.
    let found = at.get(1, &query, "invoices of march 2024 for Acme");
    assert_eq!(found, Lookup::Miss(MissReason::Guarded(Guard::Entities)));
}

#[test]
fn expired_entries_are_never_served_and_are_dropped() {
    let (index, t0) = (Index::<u32>::default(), Instant::now());
    let ttl = Duration::from_secs(60);
    index.insert(&part(1), &axis(0), "weather in Paris", 1, "r1", ttl, t0);
    assert!(index.bytes() > DIMS);
    let at = |s| t0 + Duration::from_secs(s);
    let get = |s| index.lookup(&part(1), &axis(0), "weather in Paris", 0.9, &[], at(s));
    assert_hit(get(59), 1, 1.0);
    assert_eq!(get(60), Lookup::Miss(MissReason::Empty));
    assert_eq!((index.len(), index.bytes()), (0, 0));
    check(&index);
}

#[test]
fn the_bound_evicts_the_least_recently_used() {
    let at = At::new(100, 1000);
    for i in 0..100 {
        at.put(i, &axis(0), &format!("q{i}"), i as u32);
    }
    // A hit is a use: entry 0 becomes the most recent.
    assert_eq!(at.answer(0, &axis(0), "q0"), Some(0));
    for i in 100..150 {
        at.put(i, &axis(0), &format!("q{i}"), i as u32);
        assert!(at.0.len() <= 100);
    }
    check(&at.0);
    assert_eq!(at.answer(0, &axis(0), "q0"), Some(0));
    assert_eq!(at.answer(1, &axis(0), "q1"), None);
    for i in 60..150 {
        assert_eq!(at.answer(i, &axis(0), &format!("q{i}")), Some(i as u32));
    }
}

#[test]
fn a_full_partition_drops_its_least_recently_used() {
    let at = At::new(1000, 10);
    for i in 0..15 {
        at.put(1, &axis(i), &format!("q{i}"), i as u32);
    }
    assert_eq!(at.0.len(), 10);
    for i in 0..15 {
        let found = at.answer(1, &axis(i), &format!("q{i}"));
        assert_eq!(found, (i >= 5).then_some(i as u32), "entry {i}");
    }
    check(&at.0);
}

#[test]
fn the_same_text_replaces_its_entry() {
    let at = At::new(100, 10);
    at.put(1, &axis(0), "list my repos", 1);
    at.put(1, &axis(1), "list my repos", 2);
    assert_eq!(at.0.len(), 1);
    assert_hit(at.get(1, &axis(1), "list my repos"), 2, 1.0);
    check(&at.0);
}

#[test]
fn odd_vectors_do_not_panic() {
    let at = At::new(100, 10);
    at.put(1, &[0.0; DIMS], "zero", 1);
    at.put(1, &[f32::NAN; DIMS], "nan", 2);
    at.put(1, &[], "empty", 3);
    assert_eq!(at.answer(1, &axis(0), "zero"), None);
}

#[test]
fn concurrent_inserts_and_lookups_keep_the_bound() {
    let index = Arc::new(Index::<u32>::new(200, 40));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let index = index.clone();
            std::thread::spawn(move || {
                for i in 0..2000usize {
                    let (p, v) = (part((i * 7 + t) % 9), unit(&[(i % DIMS, 1.0), (t, 0.5)]));
                    let now = t0 + Duration::from_millis(i as u64);
                    let ttl = Duration::from_millis(500 + (i % 7) as u64 * 300);
                    index.insert(&p, &v, &format!("q{} {t}", i % 500), 1, "r1", ttl, now);
                    let q = format!("q{} {t}", (i + 1) % 500);
                    index.lookup(&p, &v, &q, 0.8, &Guard::ALL, now);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(index.len() <= 200, "{}", index.len());
    check(&index);
}

#[test]
fn exact_lookup_needs_the_same_text_in_the_same_partition() {
    let index: Index<u32> = Index::new(100, 10);
    let now = Instant::now();
    let v = unit(&[(0, 1.0)]);
    index.insert(&[1; 32], &v, "show invoices", 7, "r1", HOUR, now);
    assert_eq!(
        index.exact(&[1; 32], "show invoices", now),
        Some((7, "r1".into()))
    );
    assert_eq!(index.exact(&[1; 32], "show invoices ", now), None);
    assert_eq!(index.exact(&[2; 32], "show invoices", now), None);
    assert_eq!(index.exact(&[1; 32], "show invoices", now + HOUR), None);
}
