/*!
The only module that prints. Commands return values; this module shows them as
text for a terminal, or as JSON/YAML for CI, and renders errors and config
findings with colour only when stderr is a terminal and NO_COLOR is unset.
*/
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod progress;

use std::io::{IsTerminal, Write};

/// `eprintln!` that never panics: a closed or full stderr (`karpctl … 2>&1 | head`)
/// must not turn an error report into a crash.
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}
pub(crate) use say;

/// Error text can quote the user's files (a state file's unknown field, a
/// name): control characters other than newlines and tabs are shown escaped so
/// they cannot drive the terminal.
fn clean(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escape = (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            let v: Vec<char> = if escape { c.escape_default().collect() } else { vec![c] };
            v
        })
        .collect()
}

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

/// Writes to standard output; a closed pipe (`karpctl render | head`) is not an
/// error, any other failure (a full disk behind `> file`) is returned.
pub fn out(s: &str) -> std::io::Result<()> {
    let mut o = std::io::stdout().lock();
    match o.write_all(s.as_bytes()).and_then(|()| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

pub fn note(s: &str) {
    say!("{} {}", paint("1;36", "note:"), clean(s));
}

pub fn diagnostic(d: &Diagnostic) {
    let (label, code) = match d.severity {
        Severity::Error => ("error", "1;31"),
        Severity::Warning => ("warning", "1;33"),
    };
    say!("{}: {}: {}", paint(code, label), paint("1", &d.field), d.message);
    say!("  {} {}:{}:{}", paint("34", "-->"), clean(&d.file.display().to_string()), d.line, d.column);
    if let Some(h) = &d.help {
        say!("  {} {h}", paint("1;36", "help:"));
    }
}

pub fn config_errors(e: &ConfigErrors, json: bool) {
    if json {
        let doc = serde_json::json!({
            "error": {
                "kind": "invalid-config",
                "file": e.file,
                "diagnostics": e.diagnostics,
                "omitted": e.omitted,
            }
        });
        let _ = out(&format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default()));
        return;
    }
    for d in &e.diagnostics {
        diagnostic(d);
    }
    let n = e.errors().count();
    if e.omitted > 0 {
        say!("… and {} more error{} not shown", e.omitted, if e.omitted == 1 { "" } else { "s" });
    }
    let n = n + e.omitted;
    say!(
        "{} {} has {n} error{}; nothing was changed",
        paint("1;31", "error:"),
        clean(&e.file.display().to_string()),
        if n == 1 { "" } else { "s" }
    );
}

pub fn error(e: &anyhow::Error, json: bool) {
    if json {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        let doc = serde_json::json!({"error": {"kind": "error", "message": chain.join(": "), "chain": chain}});
        let _ = out(&format!("{}\n", serde_json::to_string_pretty(&doc).unwrap_or_default()));
        return;
    }
    say!("{} {}", paint("1;31", "error:"), clean(&e.to_string()));
    for cause in e.chain().skip(1) {
        say!("  {} {}", paint("34", "caused by:"), clean(&cause.to_string()));
    }
}

pub fn help_line(s: &str) {
    say!("  {} {}", paint("1;36", "help:"), clean(s));
}

fn paint_out(code: &str, s: &str) -> String {
    if std::env::var_os("NO_COLOR").is_none() && std::io::stdout().is_terminal() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "(none)".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The plan as a terraform-like listing: symbol, step, reasons, field diffs.
pub fn plan_text(r: &crate::engine::RunReport, total: usize, applied: bool) -> String {
    use crate::engine::{Action, Outcome};
    let mut s = String::new();
    if total == 0 {
        s.push_str("No steps: this version of karpctl has no provisioning steps for this config yet.\n");
        return s;
    }
    for p in &r.planned {
        let (sym, code) = match p.change.action {
            Action::Create => ("+", "32"),
            Action::Update => ("~", "33"),
            Action::Replace => ("-/+", "35"),
            Action::Delete => ("-", "31"),
            Action::None => (" ", "0"),
        };
        s.push_str(&format!("{} {} — {}\n", paint_out(code, sym), paint_out("1", &p.step), p.change.summary));
        for w in &p.why {
            s.push_str(&format!("    because {w}\n"));
        }
        for f in &p.change.fields {
            s.push_str(&format!("    {} {}: {} → {}\n", paint_out("33", "~"), f.field, value_text(&f.old), value_text(&f.new)));
        }
        if p.change.destructive {
            s.push_str(&format!("    {}\n", paint_out("31", "destructive: needs --yes")));
        }
    }
    for (step, o) in &r.outcomes {
        match o {
            Outcome::Failed { error } => s.push_str(&format!("{} {step}: {error}\n", paint_out("31", "!"))),
            Outcome::Blocked { by } => s.push_str(&format!("{} {step}: skipped, {by} did not finish\n", paint_out("33", "?"))),
            Outcome::NeedsApproval { summary } => {
                s.push_str(&format!("{} {step}: {summary}: not done without --yes\n", paint_out("33", "?")))
            }
            _ => {}
        }
    }
    let n = r.planned.len();
    s.push_str(&format!(
        "\n{}: {n} step{} {}, {} unchanged.\n",
        if applied { "Applied" } else { "Plan" },
        if n == 1 { "" } else { "s" },
        if applied { "changed" } else { "to change" },
        r.fresh.len() + r.outcomes.iter().filter(|(_, o)| *o == Outcome::UpToDate).count()
    ));
    s
}

/// The state summary as a table.
pub fn status_text(
    cluster: &str,
    backend: &str,
    state: Option<&crate::state::State>,
    lock: Option<&crate::state::LockInfo>,
) -> String {
    let mut s = format!("cluster   {cluster}\nstate     {backend}\n");
    match lock {
        Some(l) => s.push_str(&format!("lock      held by {l}\n")),
        None => s.push_str("lock      free\n"),
    }
    let Some(st) = state else {
        s.push_str("\nNo state yet: nothing has been provisioned by karpctl.\n");
        return s;
    };
    s.push_str(&format!("serial    {} (lineage {}, written by karpctl {})\n\n", st.serial, st.lineage, st.tool_version));
    let w = st.steps.keys().map(|k| k.len()).max().unwrap_or(4).max(4);
    s.push_str(&format!("{:<w$}  {:<11}  {}\n", "STEP", "STATUS", "FINISHED"));
    for (id, r) in &st.steps {
        let status = serde_json::to_value(r.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        s.push_str(&format!("{:<w$}  {:<11}  {}\n", id, status, r.finished_at.as_deref().unwrap_or("-")));
        if let Some(e) = &r.error {
            s.push_str(&format!("{:<w$}  error: {e}\n", ""));
        }
    }
    s
}

/// The live half of `status`: controller, CRDs, classes, pools, device plugin.
pub fn live_text(live: &serde_json::Value) -> String {
    use serde_json::Value;
    let mut s = String::from("\nLIVE\n");
    if let Some(e) = live["error"].as_str() {
        s.push_str(&format!("  cluster unreachable: {e}\n"));
        return s;
    }
    let errored = |v: &Value| v["error"].as_str().map(|e| format!("  (could not read: {e})\n"));
    let k = &live["controller"];
    if let Some(e) = errored(k) {
        s.push_str(&format!("controller{e}"));
    } else if k["installed"] == true {
        s.push_str(&format!(
            "controller  {}/{} available in {}  version {}  image {}\n",
            k["available"], k["replicas"], k["namespace"].as_str().unwrap_or(""), k["version"].as_str().unwrap_or("?"), k["image"].as_str().unwrap_or("?")
        ));
        for p in k["pods"].as_array().into_iter().flatten() {
            s.push_str(&format!(
                "  pod {}  {}  ready={}  node={}  restarts={}\n",
                p["name"].as_str().unwrap_or("?"), p["phase"].as_str().unwrap_or("?"), p["ready"], p["node"].as_str().unwrap_or("-"), p["restarts"]
            ));
        }
    } else {
        s.push_str("controller  not installed\n");
    }
    match live["crds"].as_array() {
        Some(crds) if !crds.is_empty() => {
            for c in crds {
                s.push_str(&format!("crd         {}  served {}  karpenter {}\n", c["name"].as_str().unwrap_or("?"),
                    c["served"].as_array().map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                    c["karpenterVersion"].as_str().unwrap_or("unknown")));
            }
        }
        Some(_) => s.push_str("crd         none installed\n"),
        None => s.push_str(&errored(&live["crds"]).unwrap_or_default()),
    }
    let state = |o: &Value| if o["ready"] == true { "Ready".to_string() } else { format!("NOT READY: {}", o["why"].as_str().unwrap_or("?")) };
    for c in live["nodeClasses"].as_array().into_iter().flatten() {
        s.push_str(&format!("class       {}  {}\n", c["name"].as_str().unwrap_or("?"), state(c)));
    }
    for p in live["nodePools"].as_array().into_iter().flatten() {
        s.push_str(&format!("pool        {}  {}  nodes {}/{} ready  class {}\n", p["name"].as_str().unwrap_or("?"), state(p), p["readyNodes"], p["nodes"],
            p["nodeClass"].as_str().unwrap_or("?")));
    }
    let dp = &live["devicePlugin"];
    if dp["enabled"] == true {
        if dp["installed"] == true {
            s.push_str(&format!("gpu plugin  {}: {}/{} ready\n", dp["daemonSet"].as_str().unwrap_or("?"), dp["ready"], dp["desired"]));
        } else {
            s.push_str("gpu plugin  not installed\n");
        }
    }
    s
}

/// Preflight results: one line per check, with why and how to fix the bad ones.
pub fn checks_text(checks: &[crate::ops::doctor::Check]) -> String {
    use crate::ops::doctor::Status;
    let mut s = String::new();
    for c in checks {
        let (sym, code) = match c.status {
            Status::Ok => ("ok  ", "32"),
            Status::Warn => ("warn", "33"),
            Status::Fail => ("FAIL", "31"),
            Status::Skip => ("skip", "2"),
        };
        s.push_str(&format!("{} {:<20} {}\n", paint_out(code, sym), c.name, c.detail));
        if let Some(w) = &c.why {
            s.push_str(&format!("     {:<20} why: {w}\n", ""));
        }
        if let Some(f) = &c.fix {
            s.push_str(&format!("     {:<20} fix: {f}\n", ""));
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    s.push_str(&format!("\n{} check(s), {failed} failed\n", checks.len()));
    s
}
