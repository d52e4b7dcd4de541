use super::*;
use std::time::Duration;

fn budget(count: u64, secs: u64) -> Limit {
    Limit::from_rate(Rate {
        count,
        per: Duration::from_secs(secs),
    })
}

#[test]
fn a_reservation_takes_its_tokens_at_once_and_settling_returns_or_charges() {
    let l = budget(10_000, 86_400);
    let b = Bucket::default();
    let now = now_ns();
    let s = b.take_tokens(&l, 1_003, now).unwrap();
    assert_eq!((s.remaining, s.limit), (8_997, 10_000));
    // The answer used 12: 991 come back.
    assert_eq!(b.settle_tokens(&l, 12 - 1_003, now), 9_988);
    // An answer longer than reserved is charged in full.
    b.take_tokens(&l, 100, now).unwrap();
    assert_eq!(b.settle_tokens(&l, 50, now), 9_838);
}

#[test]
fn a_reservation_that_does_not_fit_takes_nothing_and_says_when_it_would() {
    let l = budget(1_000, 3_600); // one token every 3.6 s
    let b = Bucket::default();
    let now = now_ns();
    b.take_tokens(&l, 900, now).unwrap();
    let short = b.take_tokens(&l, 200, now).unwrap_err();
    assert_eq!(short.remaining, 100);
    assert_eq!(
        short.exceeded.retry_after_secs, 360,
        "100 more tokens: 100 × 3.6 s"
    );
    assert_eq!(b.take_tokens(&l, 100, now).unwrap().remaining, 0);
    // Larger than the whole budget: never fits; Retry-After is capped at the window.
    let never = Bucket::default().take_tokens(&l, 5_000, now).unwrap_err();
    assert_eq!(never.exceeded.retry_after_secs, 3_600);
}

#[test]
fn debt_refuses_until_paid_back() {
    let l = budget(100, 100); // one a second
    let b = Bucket::default();
    let now = now_ns();
    b.take_tokens(&l, 50, now).unwrap();
    assert_eq!(b.settle_tokens(&l, 80, now), 0, "130 used of 100");
    assert!(b.take_tokens(&l, 1, now).is_err());
    let later = now + 31_000_000_000;
    assert!(b.take_tokens(&l, 1, later).is_ok(), "30 s paid the debt");
}

#[test]
fn concurrent_reservations_never_exceed_the_budget() {
    let l = budget(10_000, 86_400);
    let b = Arc::new(Bucket::default());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || {
                (0..50)
                    .filter(|_| b.take_tokens(&l, 97, now_ns()).is_ok())
                    .count()
            })
        })
        .collect();
    let granted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(granted, 10_000 / 97);
}

fn quotas(yaml: &str) -> Result<TokenQuotas, Problem> {
    let t: schema::TokenLimits = serde_yaml_ng::from_str(yaml).unwrap();
    TokenQuotas::compile(&t)
}

#[test]
fn the_agent_budget_and_the_model_budget_both_apply() {
    let tq = quotas(
        r#"{default: "10000/hour", per_agent: {fin: "50000/day"}, per_model: {gpt-4o: "2000/minute"}, estimate: {chars_per_token: 3, default_max_tokens: 100}}"#,
    )
    .unwrap();
    let [a, m] = tq.budgets(Subject::Agent("fin"), Some("gpt-4o"));
    assert_eq!(a.unwrap().burst, 50_000);
    assert_eq!(m.unwrap().burst, 2_000);
    let [a, m] = tq.budgets(Subject::Client(None), Some("other"));
    assert_eq!((a.unwrap().burst, m), (10_000, None));
    assert_eq!(tq.prompt_estimate(10), 4);
    assert_eq!(tq.default_max_tokens, 100);
}

#[tokio::test]
async fn a_refusal_by_the_model_budget_takes_nothing_from_the_agent_budget() {
    let tq = quotas(
        r#"{default: "10000/day", per_model: {m: "500/day"}, estimate: {default_max_tokens: 10}}"#,
    )
    .unwrap();
    let shared = Shared::default();
    let who = (Subject::Agent("a"), Some("m"));
    let r = reserve(&tq, OnStoreError::Local, &shared, who, (400, 0)).await;
    let r = r.unwrap().unwrap();
    assert_eq!(
        r.standing.remaining, 100,
        "the model's budget is the tightest"
    );
    let refused = reserve(&tq, OnStoreError::Local, &shared, who, (400, 0)).await;
    assert!(matches!(refused, Err(TokenRefused::Short(s)) if s.remaining == 100));
    assert_eq!(settle(&shared, r, 30).await, Some(470));
    // The agent's budget lost only the 30 used.
    let other = reserve(
        &tq,
        OnStoreError::Local,
        &shared,
        (Subject::Agent("a"), None),
        (0, 0),
    );
    assert_eq!(other.await.unwrap().unwrap().standing.remaining, 9_970);
}

#[test]
fn check_refuses_budgets_that_hold_no_answer() {
    let e = quotas(r#"{default: "500/hour"}"#).unwrap_err();
    assert_eq!(e.path, at!("rate_limiting", "tokens", "default"));
    assert!(
        e.message.contains("default_max_tokens (1024)"),
        "{}",
        e.message
    );
    let e = quotas(r#"{estimate: {chars_per_token: 0}}"#).unwrap_err();
    assert_eq!(
        e.path,
        at!("rate_limiting", "tokens", "estimate", "chars_per_token")
    );
    let e = quotas(r#"{per_model: {"": "5000/minute"}}"#).unwrap_err();
    assert!(e.message.contains("empty"), "{}", e.message);
}
