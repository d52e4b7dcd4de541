//! Fast random numbers for trace ids, sampling and load balancing (never for secrets): a
//! per-thread xoshiro generator seeded from the OS. The W3C trace spec asks for random ids, not
//! secret ones, and the thread-local ChaCha generator cost a few hundred instructions per request
//! for the three draws.

use rand::{rngs::SmallRng, Rng};
use std::cell::RefCell;

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(rand::make_rng());
}

pub fn u64() -> u64 {
    RNG.with(|r| r.borrow_mut().next_u64())
}
