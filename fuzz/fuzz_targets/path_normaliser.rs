//! The path normaliser: never a panic; a normalised path is stable and holds no `..` segment.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    if let Ok(n) = clawgate::router::normalise(path) {
        assert!(!n.split('/').any(|s| s == ".."), "{path:?} → {n:?}");
        assert_eq!(clawgate::router::normalise(&n).ok().as_deref(), Some(n.as_str()));
    }
});
