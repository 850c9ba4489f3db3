/*!
The only module that prints. Commands return values; this module shows them as
text for a terminal, or as JSON/YAML for CI, and renders errors and config
findings with colour only when stderr is a terminal and NO_COLOR is unset.
*/
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{IsTerminal, Write};

use crate::config::{ConfigErrors, Diagnostic, Severity};

fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

fn paint(code: &str, s: &str) -> String {
    if color() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// Writes to standard output; a closed pipe (`karpctl render | head`) is not an error.
pub fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(s.as_bytes());
    let _ = o.flush();
}

pub fn note(s: &str) {
    eprintln!("{} {s}", paint("1;36", "note:"));
}

pub fn diagnostic(d: &Diagnostic) {
    let (label, code) = match d.severity {
        Severity::Error => ("error", "1;31"),
        Severity::Warning => ("warning", "1;33"),
    };
    eprintln!("{}: {}: {}", paint(code, label), paint("1", &d.field), d.message);
    eprintln!("  {} {}:{}:{}", paint("34", "-->"), d.file.display(), d.line, d.column);
    if let Some(h) = &d.help {
        eprintln!("  {} {h}", paint("1;36", "help:"));
    }
}

pub fn config_errors(e: &ConfigErrors, json: bool) {
    if json {
        let doc = serde_json::json!({
            "error": {
                "kind": "invalid-config",
                "file": e.file,
                "diagnostics": e.diagnostics,
            }
        });
        out(&format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default()));
        return;
    }
    for d in &e.diagnostics {
        diagnostic(d);
    }
    let n = e.errors().count();
    eprintln!(
        "{} {} has {n} error{}; nothing was changed",
        paint("1;31", "error:"),
        e.file.display(),
        if n == 1 { "" } else { "s" }
    );
}

pub fn error(e: &anyhow::Error, json: bool) {
    if json {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        let doc = serde_json::json!({"error": {"kind": "error", "message": chain.join(": "), "chain": chain}});
        out(&format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default()));
        return;
    }
    eprintln!("{} {e}", paint("1;31", "error:"));
    for cause in e.chain().skip(1) {
        eprintln!("  {} {cause}", paint("34", "caused by:"));
    }
}

pub fn help_line(s: &str) {
    eprintln!("  {} {s}", paint("1;36", "help:"));
}
