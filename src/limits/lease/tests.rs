use super::*;

fn limit(burst: u64, secs: u64) -> Limit {
    Limit::from_rate(crate::config::values::Rate {
        count: burst,
        per: Duration::from_secs(secs),
    })
}

#[test]
fn a_lease_is_a_share_of_the_limit_and_at_least_one() {
    let conf = LeaseConf {
        size: 0.02,
        max_ttl: Duration::from_secs(1),
    };
    assert_eq!(conf.tokens(&limit(300, 60)), 6);
    assert_eq!(conf.tokens(&limit(100_000, 60)), 2000);
    assert_eq!(conf.tokens(&limit(10, 60)), 1);
    let whole = LeaseConf { size: 1.0, ..conf };
    assert_eq!(whole.tokens(&limit(7, 60)), 7);
}

#[test]
fn concurrent_spends_never_exceed_the_slice() {
    let lease = Arc::new(Lease::new("k".into()));
    lease.give_back(1000);
    let spent = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (l, s) = (lease.clone(), spent.clone());
            std::thread::spawn(move || {
                for _ in 0..500 {
                    if l.try_spend(1) {
                        s.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(spent.load(Ordering::Relaxed), 1000);
    assert!(!lease.try_spend(1));
}

#[test]
fn a_debt_is_paid_before_anything_is_spent() {
    let lease = Lease::new("k".into());
    lease.give_back(10);
    lease.charge(15);
    assert!(!lease.try_spend(1), "5 owed");
    lease.give_back(6);
    assert!(lease.try_spend(1));
    assert!(!lease.try_spend(1));
}

#[test]
fn keys_share_one_slice_and_name_their_redis_key_once() {
    let leases = Leases::default();
    let a = leases.get(("req", "a"), || "clawgate:{a:a}:agent".into());
    let again = leases.get(("req", "a"), || unreachable!("named once"));
    assert!(Arc::ptr_eq(&a, &again));
    assert_eq!(a.key, "clawgate:{a:a}:agent");
    assert_eq!(leases.len(), 1);
}
