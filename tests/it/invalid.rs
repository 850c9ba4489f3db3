//! The corpus of invalid configs in tests/invalid: each file names the field path
//! its error must point at (`# expect: PATH`). Every file must be rejected with
//! that path and a real line number, without a panic and without any client.

use karpctl::config::{self, Severity};

use crate::support::*;

fn expectations(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# expect:").map(|s| s.trim().to_string()))
        .collect()
}

#[test]
fn every_invalid_config_is_rejected_at_the_named_field() {
    let dir = repo().join("tests/invalid");
    let files = files_with_extension(&dir, "yaml");
    assert!(files.len() >= 60, "the corpus needs at least 60 files, has {}", files.len());
    let mut failures = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let want = expectations(&bytes);
        if want.is_empty() {
            failures.push(format!("{}: no `# expect:` header", f.display()));
            continue;
        }
        let result = std::panic::catch_unwind(|| config::parse(f, &bytes));
        let errs = match result {
            Err(_) => {
                failures.push(format!("{}: validation panicked", f.display()));
                continue;
            }
            Ok(Ok(_)) => {
                failures.push(format!("{}: accepted, but should fail at {want:?}", f.display()));
                continue;
            }
            Ok(Err(e)) => e,
        };
        let errors: Vec<_> = errs.diagnostics.iter().filter(|d| d.severity == Severity::Error).collect();
        for w in &want {
            if !errors.iter().any(|d| &d.field == w) {
                let got: Vec<String> = errors.iter().map(|d| format!("{} ({})", d.field, d.message)).collect();
                failures.push(format!("{}: no error at {w}; got {got:?}", f.display()));
            }
        }
        for d in &errors {
            if d.line == 0 || d.column == 0 || d.file != *f {
                failures.push(format!("{}: finding without a position: {d:?}", f.display()));
            }
            if d.message.trim().is_empty() {
                failures.push(format!("{}: finding without a message at {}", f.display(), d.field));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} files failed:\n{}", failures.len(), files.len(), failures.join("\n"));
}
