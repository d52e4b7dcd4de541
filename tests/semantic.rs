//! The semantic cache's sentence encoder, with the real all-MiniLM-L6-v2 model (installed by
//! scripts/setup.sh through scripts/fetch-model.sh).

use clawgate::semantic::embed::{similarity, Embedder, Encoder, Miss};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn model_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-model.sh",
        dir.display()
    );
    dir
}

/// The similarities sentence-transformers gives, as computed by the independent numpy encoder
/// in load-tests/semantic/reference.py (0.75534 is also the value sentence-transformers'
/// documentation shows for the third pair).
const REFERENCE: [(&str, &str, f32); 4] = [
    (
        "How do I reset my password?",
        "What is the way to reset my password?",
        0.97039,
    ),
    (
        "How do I reset my password?",
        "What is the weather in Paris tomorrow?",
        0.05298,
    ),
    (
        "A man is eating food.",
        "A man is eating a piece of bread.",
        0.75534,
    ),
    (
        "Show the invoices of March 2024",
        "Show the invoices of April 2024",
        0.94140,
    ),
];

#[test]
fn vectors_match_the_reference_encoder() {
    let e = Encoder::load(&model_dir()).expect("model");
    assert_eq!(e.dims(), 384);
    let v = e.embed(REFERENCE[0].0).unwrap();
    assert_eq!(v.len(), 384);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "{norm}");
    for (i, x) in [0.0069f32, -0.06302, -0.07204, -0.0325].iter().enumerate() {
        assert!((v[i] - x).abs() < 2e-4, "dimension {i}: {} vs {x}", v[i]);
    }
    for (a, b, want) in REFERENCE {
        let got = similarity(&e.embed(a).unwrap(), &e.embed(b).unwrap());
        assert!((got - want).abs() < 2e-4, "{a:?} ~ {b:?}: {got} vs {want}");
    }
}

#[test]
fn long_and_empty_texts_are_embedded() {
    let e = Encoder::load(&model_dir()).expect("model");
    let long = "the quarterly revenue report for every region ".repeat(80);
    assert_eq!(e.embed(&long).unwrap().len(), 384);
    assert_eq!(e.embed("").unwrap().len(), 384);
}

#[test]
fn a_bad_model_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Encoder::load(dir.path()).err().unwrap();
    assert!(err.contains("config.json: no such file"), "{err}");
    std::fs::copy(
        model_dir().join("config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), "{}").unwrap();
    let err = Encoder::load(dir.path()).err().unwrap();
    assert!(err.contains("tokenizer.json"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_answers_and_a_full_queue_or_a_timeout_is_a_miss() {
    let pool = Arc::new(Embedder::start(Encoder::load(&model_dir()).unwrap(), 1, 1).unwrap());
    let v = pool
        .embed("How do I reset my password?", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(v.len(), pool.dims());

    // One thread, one queue slot: of many texts sent at once, some find no room.
    let long = "an invoice line with several words in it ".repeat(30);
    let tries: Vec<_> = (0..20)
        .map(|_| {
            let (pool, text) = (pool.clone(), long.clone());
            tokio::spawn(async move { pool.embed(&text, Duration::from_secs(30)).await })
        })
        .collect();
    let mut busy = 0;
    let mut answered = 0;
    for t in tries {
        match t.await.unwrap() {
            Ok(_) => answered += 1,
            Err(Miss::Busy) => busy += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(busy > 0 && answered > 0, "busy {busy}, answered {answered}");

    assert_eq!(
        pool.embed(&long, Duration::from_micros(1)).await,
        Err(Miss::Timeout)
    );
    // The pool still answers afterwards.
    assert!(pool.embed("hello", Duration::from_secs(30)).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_compatible_embedder_answers_and_failures_are_misses() {
    use clawgate::semantic::remote::Remote;
    let backend = mock_backend::spawn();
    let remote = Remote::new(
        &format!("{}/v1/", backend.url()),
        Some("text-embedding-3-small".into()),
        Some("sk-embed-test"),
    );
    let t = Duration::from_secs(5);
    let a = remote.embed("reset my password please", t).await.unwrap();
    let b = remote.embed("please reset my password", t).await.unwrap();
    let c = remote.embed("weather in Paris tomorrow", t).await.unwrap();
    assert_eq!(a.len(), 384);
    assert!(similarity(&a, &b) > 0.99 && similarity(&a, &c) < 0.5);
    let sent = backend.stats.last().unwrap();
    assert_eq!(sent["headers"]["authorization"], "Bearer sk-embed-test");
    assert_eq!(sent["body"]["model"], "text-embedding-3-small");
    assert_eq!(sent["body"]["input"], "weather in Paris tomorrow");

    // Late, failing or absent: a miss, within the timeout.
    let slow = Remote::new(&format!("{}/slow/v1", backend.url()), None, None);
    let started = std::time::Instant::now();
    assert_eq!(
        slow.embed("x", Duration::from_millis(200)).await,
        Err(Miss::Timeout)
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    let wrong = Remote::new(&format!("{}/status/500", backend.url()), None, None);
    assert_eq!(wrong.embed("x", t).await, Err(Miss::Failed));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let absent = Remote::new(&format!("http://127.0.0.1:{port}/v1"), None, None);
    assert_eq!(absent.embed("x", t).await, Err(Miss::Failed));
}
