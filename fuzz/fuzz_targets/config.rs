//! The config loader on arbitrary bytes, through `config::parse`, the function
//! `karpctl validate`/`up`/`plan` reach after reading the file: it must never
//! panic, and every finding must point inside the file with a message.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.yaml");
    if let Err(e) = karpctl::config::parse(path, data) {
        let lines = data.iter().filter(|b| **b == b'\n').count() + 1;
        assert!(!e.diagnostics.is_empty(), "an error without findings");
        for d in &e.diagnostics {
            assert!(d.line >= 1 && d.line <= lines + 1, "line {} outside a {lines}-line input: {d:?}", d.line);
            assert!(d.column >= 1, "column 0: {d:?}");
            assert!(!d.message.trim().is_empty(), "empty message: {d:?}");
            assert_eq!(d.file, path);
        }
    }
});
