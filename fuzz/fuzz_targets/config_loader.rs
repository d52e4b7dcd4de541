//! The configuration loader: any text is a configuration or an error with a place, never a
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fuzz_target!(|text: &str| {
    let loaded = clawgate::runtime::load_str(text, "f.yaml", PathBuf::from("/nonexistent/f.yaml"));
    if let Err(e) = loaded {
        assert_eq!(e.file, "f.yaml");
    }
});
