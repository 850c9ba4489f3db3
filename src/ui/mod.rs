/*!
The only module that prints. Commands return values; this module shows them as
text for a terminal (aligned tables, a terraform-like plan), or as JSON/YAML for
CI, and renders errors and config findings. Colour follows `--color`: with
`auto`, only on a terminal and only when NO_COLOR is unset.
*/
#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod progress;

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

use comfy_table::{ContentArrangement, Table};

use crate::cli::ColorChoice;

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

static COLOR: OnceLock<ColorChoice> = OnceLock::new();

/// Set once by `main` from `--color`; `auto` until then.
pub fn set_color(choice: ColorChoice) {
    let _ = COLOR.set(choice);
}

fn wants_color(is_terminal: bool) -> bool {
    match COLOR.get().copied().unwrap_or(ColorChoice::Auto) {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::env::var_os("NO_COLOR").is_none() && is_terminal,
    }
}

/// Colour on stderr (diagnostics, notes, progress).
pub fn color() -> bool {
    wants_color(std::io::stderr().is_terminal())
}

/// Colour on stdout (the plan, tables' headings).
pub fn stdout_color() -> bool {
    wants_color(std::io::stdout().is_terminal())
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

pub fn config_errors(e: &ConfigErrors, format: crate::cli::OutputFormat) {
    use crate::output::{ApiVersion, ErrorBody, ErrorDoc, ErrorKind};
    if format != crate::cli::OutputFormat::Text {
        let doc = ErrorDoc {
            api_version: ApiVersion::V1Alpha1,
            kind: ErrorKind::Error,
            error: ErrorBody {
                kind: "invalid-config".into(),
                message: None,
                chain: None,
                file: Some(e.file.clone()),
                diagnostics: Some(e.diagnostics.clone()),
                help: vec![],
                omitted: (e.omitted > 0).then_some(e.omitted),
            },
        };
        let _ = out(&crate::output::encode(&doc, format).unwrap_or_default());
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

/// An error: as text on stderr followed by its `help:` lines, or as an `Error`
/// document on stdout when `format` is json or yaml.
pub fn error(e: &anyhow::Error, format: crate::cli::OutputFormat, help: &[String]) {
    use crate::output::{ApiVersion, ErrorBody, ErrorDoc, ErrorKind};
    if format != crate::cli::OutputFormat::Text {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        let doc = ErrorDoc {
            api_version: ApiVersion::V1Alpha1,
            kind: ErrorKind::Error,
            error: ErrorBody {
                kind: "error".into(),
                message: Some(chain.join(": ")),
                chain: Some(chain),
                file: None,
                diagnostics: None,
                help: help.to_vec(),
                omitted: None,
            },
        };
        let _ = out(&crate::output::encode(&doc, format).unwrap_or_default());
        return;
    }
    say!("{} {}", paint("1;31", "error:"), clean(&e.to_string()));
    for cause in e.chain().skip(1) {
        say!("  {} {}", paint("34", "caused by:"), clean(&cause.to_string()));
    }
    for h in help {
        help_line(h);
    }
}

pub fn help_line(s: &str) {
    say!("  {} {}", paint("1;36", "help:"), clean(s));
}


/// ANSI styling that is a no-op when colour is off.
#[derive(Debug, Clone, Copy)]
pub struct Paint(pub bool);

impl Paint {
    fn on(self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn green(self, s: &str) -> String {
        self.on("32", s)
    }
    pub fn yellow(self, s: &str) -> String {
        self.on("33", s)
    }
    pub fn red(self, s: &str) -> String {
        self.on("31", s)
    }
    pub fn bold(self, s: &str) -> String {
        self.on("1", s)
    }
    pub fn dim(self, s: &str) -> String {
        self.on("2", s)
    }
}

/// A section heading, the same for every command.
fn heading(p: Paint, s: &str) -> String {
    format!("{}\n", p.bold(s))
}

/// How wide tables may be: the terminal's width when stdout is one, else unbounded
/// (a pipe or a CI log wraps nothing).
fn table_width() -> Option<u16> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| w.0)
}

/// A borderless table with an upper-case header row, columns two spaces apart.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(comfy_table::presets::NOTHING);
    if !header.is_empty() {
        t.set_header(header.iter().map(|h| h.to_uppercase()));
    }
    match table_width() {
        Some(w) => {
            t.set_content_arrangement(ContentArrangement::Dynamic);
            t.set_width(w);
        }
        None => {
            t.set_content_arrangement(ContentArrangement::Disabled);
        }
    }
    t
}

/// The table as lines: no leading padding, no trailing blanks.
pub fn table_text(mut t: Table) -> String {
    let n = t.column_count();
    for (i, c) in t.column_iter_mut().enumerate() {
        c.set_padding((0, if i + 1 == n { 0 } else { 2 }));
    }
    let mut s = String::new();
    for line in t.lines() {
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

/// `key  value` lines, aligned.
fn pairs(rows: &[(&str, String)]) -> String {
    let mut t = table(&[]);
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v.clone()]);
    }
    table_text(t)
}

fn value_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "(none)".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The symbol of an action, as terraform shows it, coloured by what it does.
fn symbol(p: Paint, a: crate::engine::Action) -> String {
    use crate::engine::Action;
    match a {
        Action::Create => p.green("+"),
        Action::Update => p.yellow("~"),
        Action::Delete => p.red("-"),
        Action::Replace => format!("{}/{}", p.red("-"), p.green("+")),
        Action::None => " ".into(),
    }
}

/// The plan as a terraform-like listing: each step with its action symbol and
/// summary, the reasons it runs, the field-level `old → new` lines, then what did
/// not finish and a closing count. `color` comes from `stdout_color()`.
pub fn plan_text(r: &crate::engine::RunReport, total: usize, applied: bool, color: bool) -> String {
    use crate::engine::{Action, Outcome};
    let p = Paint(color);
    let mut s = String::new();
    if total == 0 {
        s.push_str("No steps: this version of karpctl has no provisioning steps for this config yet.\n");
        return s;
    }
    if !r.planned.is_empty() {
        s.push_str(&heading(
            p,
            if applied { "karpctl made these changes:" } else { "karpctl would make these changes:" },
        ));
        s.push('\n');
    }
    for pl in &r.planned {
        let a = pl.change.action;
        let verb = match a {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Replace => "replace",
            Action::None => "observe",
        };
        s.push_str(&format!("  {} {} {}\n", symbol(p, a), p.bold(&pl.step), p.dim(&format!("({verb})"))));
        s.push_str(&format!("      {}\n", pl.change.summary));
        for w in &pl.why {
            s.push_str(&format!("      {}\n", p.dim(&format!("# because {w}"))));
        }
        for f in &pl.change.fields {
            let line = match (&f.old, &f.new) {
                (serde_json::Value::Null, new) => format!("{} {}: {}", p.green("+"), f.field, value_text(new)),
                (old, serde_json::Value::Null) => format!("{} {}: {}", p.red("-"), f.field, value_text(old)),
                (old, new) => format!("{} {}: {} → {}", p.yellow("~"), f.field, value_text(old), value_text(new)),
            };
            s.push_str(&format!("      {line}\n"));
        }
        if pl.change.destructive {
            s.push_str(&format!("      {}\n", p.red("destructive: needs --yes")));
        }
        s.push('\n');
    }
    for (step, o) in &r.outcomes {
        match o {
            Outcome::Failed { error } => s.push_str(&format!("{} {step}: {error}\n", p.red("!"))),
            Outcome::Blocked { by } => s.push_str(&format!("{} {step}: skipped, {by} did not finish\n", p.yellow("?"))),
            Outcome::NeedsApproval { summary } => {
                s.push_str(&format!("{} {step}: {summary}: not done without --yes\n", p.yellow("?")))
            }
            _ => {}
        }
    }
    let sum = crate::output::Summary::of(r);
    let counts = if applied {
        format!("Applied: {} added, {} changed, {} destroyed", sum.add, sum.change, sum.destroy)
    } else {
        format!("Plan: {} to add, {} to change, {} to destroy", sum.add, sum.change, sum.destroy)
    };
    let mut tail = format!("{} unchanged", sum.unchanged);
    if sum.not_done > 0 {
        tail.push_str(&format!(", {} not done", sum.not_done));
    }
    if r.planned.is_empty() && sum.not_done == 0 {
        s.push_str(&format!("{} Nothing to do: all {total} steps are up to date.\n", p.bold("No changes.")));
    } else {
        s.push_str(&format!("{}. ({tail})\n", p.bold(&counts)));
    }
    s
}

/// The state summary: where it lives, the lock, then one row per step.
pub fn status_text(
    cluster: &str,
    backend: &str,
    state: Option<&crate::state::State>,
    lock: Option<&crate::state::LockInfo>,
) -> String {
    let p = Paint(stdout_color());
    let mut s = heading(p, "State");
    let mut rows = vec![
        ("cluster", cluster.to_string()),
        ("backend", backend.to_string()),
        ("lock", lock.map(|l| format!("held by {l}")).unwrap_or_else(|| "free".into())),
    ];
    if let Some(st) = state {
        rows.push(("serial", format!("{} (lineage {}, written by karpctl {})", st.serial, st.lineage, st.tool_version)));
    }
    s.push_str(&pairs(&rows));
    let Some(st) = state else {
        s.push_str("\nNo state yet at this location: karpctl has recorded no run here.\n");
        return s;
    };
    s.push('\n');
    s.push_str(&steps_table(st, false));
    s
}

fn status_name(st: crate::state::StepStatus) -> String {
    serde_json::to_value(st).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// One row per step record; `full` adds the kind and start time.
fn steps_table(st: &crate::state::State, full: bool) -> String {
    let mut t = if full {
        table(&["step", "kind", "status", "started", "finished", "error"])
    } else {
        table(&["step", "status", "finished", "error"])
    };
    for (id, r) in &st.steps {
        let err = r.error.as_deref().map(|e| e.lines().next().unwrap_or_default().to_string()).unwrap_or_default();
        let finished = r.finished_at.clone().unwrap_or_else(|| "-".into());
        if full {
            t.add_row(vec![id.clone(), r.kind.clone(), status_name(r.status), r.started_at.clone().unwrap_or_else(|| "-".into()), finished, err]);
        } else {
            t.add_row(vec![id.clone(), status_name(r.status), finished, err]);
        }
    }
    table_text(t)
}

/// `state show`: the backend, lock and identity, then every record.
pub fn state_text(backend: &str, st: &crate::state::State, lock: Option<&crate::state::LockInfo>) -> String {
    let p = Paint(stdout_color());
    let mut s = heading(p, "State");
    s.push_str(&pairs(&[
        ("backend", backend.to_string()),
        ("cluster", st.cluster.clone()),
        ("region", st.region.clone().unwrap_or_else(|| "-".into())),
        ("lineage", st.lineage.clone()),
        ("serial", st.serial.to_string()),
        ("written by", format!("karpctl {} (state version {})", st.tool_version, st.version)),
        ("lock", lock.map(|l| format!("held by {l}")).unwrap_or_else(|| "free".into())),
    ]));
    s.push('\n');
    if st.steps.is_empty() {
        s.push_str("No step records.\n");
    } else {
        s.push_str(&steps_table(st, true));
    }
    s
}

/// The live half of `status`: controller, CRDs, classes, pools, device plugin.
pub fn live_text(live: &serde_json::Value) -> String {
    use serde_json::Value;
    let p = Paint(stdout_color());
    let mut s = format!("\n{}", heading(p, "Live"));
    if let Some(e) = live["error"].as_str() {
        s.push_str(&format!("cluster unreachable: {e}\n"));
        return s;
    }
    let str_of = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let mut t = table(&["component", "name", "status", "details"]);
    let unreadable = |v: &Value| v["error"].as_str().map(|e| format!("could not read: {e}"));
    let k = &live["controller"];
    if let Some(e) = unreadable(k) {
        t.add_row(vec!["controller".into(), "-".into(), "unknown".into(), e]);
    } else if k["installed"] == true {
        t.add_row(vec![
            "controller".into(),
            format!("{}/{}", str_of(&k["namespace"]), k["deployment"].as_str().unwrap_or("karpenter")),
            format!("{}/{} available", k["available"], k["replicas"]),
            format!("version {}, image {}", str_of(&k["version"]), str_of(&k["image"])),
        ]);
        for pod in k["pods"].as_array().into_iter().flatten() {
            t.add_row(vec![
                "pod".into(),
                str_of(&pod["name"]),
                format!("{}{}", str_of(&pod["phase"]), if pod["ready"] == true { ", ready" } else { ", not ready" }),
                format!("node {}, {} restart(s)", pod["node"].as_str().unwrap_or("-"), pod["restarts"]),
            ]);
        }
    } else {
        t.add_row(vec!["controller".into(), "-".into(), "not installed".into(), String::new()]);
    }
    match live["crds"].as_array() {
        Some(crds) if !crds.is_empty() => {
            for c in crds {
                let served = c["served"].as_array().map(|v| v.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",")).unwrap_or_default();
                t.add_row(vec![
                    "crd".into(),
                    str_of(&c["name"]),
                    format!("served {served}"),
                    format!("karpenter {}", c["karpenterVersion"].as_str().unwrap_or("unknown")),
                ]);
            }
        }
        Some(_) => {
            t.add_row(vec!["crd".into(), "-".into(), "none installed".into(), String::new()]);
        }
        None => {
            t.add_row(vec!["crd".into(), "-".into(), "unknown".into(), unreadable(&live["crds"]).unwrap_or_default()]);
        }
    }
    let ready = |o: &Value| if o["ready"] == true { ("Ready".to_string(), String::new()) } else { ("NOT READY".to_string(), str_of(&o["why"])) };
    for c in live["nodeClasses"].as_array().into_iter().flatten() {
        let (st, why) = ready(c);
        t.add_row(vec!["class".into(), str_of(&c["name"]), st, why]);
    }
    if let Some(e) = unreadable(&live["nodeClasses"]) {
        t.add_row(vec!["class".into(), "-".into(), "unknown".into(), e]);
    }
    for pool in live["nodePools"].as_array().into_iter().flatten() {
        let (st, why) = ready(pool);
        let mut details = format!("nodes {}/{} ready, class {}", pool["readyNodes"], pool["nodes"], str_of(&pool["nodeClass"]));
        if !why.is_empty() {
            details.push_str(&format!("; {why}"));
        }
        t.add_row(vec!["pool".into(), str_of(&pool["name"]), st, details]);
    }
    if let Some(e) = unreadable(&live["nodePools"]) {
        t.add_row(vec!["pool".into(), "-".into(), "unknown".into(), e]);
    }
    let dp = &live["devicePlugin"];
    if dp["enabled"] == true {
        if dp["installed"] == true {
            t.add_row(vec!["gpu plugin".into(), str_of(&dp["daemonSet"]), format!("{}/{} ready", dp["ready"], dp["desired"]), String::new()]);
        } else {
            t.add_row(vec!["gpu plugin".into(), "-".into(), "not installed".into(), String::new()]);
        }
    }
    s.push_str(&table_text(t));
    s
}

/// Preflight results: one row per check, with why and how to fix the bad ones.
pub fn checks_text(checks: &[crate::output::Check]) -> String {
    use crate::output::CheckStatus as Status;
    let p = Paint(stdout_color());
    let mut t = table(&["check", "result", "details"]);
    for c in checks {
        let result = match c.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        let mut detail = c.detail.clone();
        if let Some(w) = &c.why {
            detail.push_str(&format!("\nwhy: {w}"));
        }
        if let Some(f) = &c.fix {
            detail.push_str(&format!("\nfix: {f}"));
        }
        t.add_row(vec![c.name.to_string(), result.to_string(), detail]);
    }
    let mut s = table_text(t);
    let count = |st: Status| checks.iter().filter(|c| c.status == st).count();
    let (failed, warned) = (count(Status::Fail), count(Status::Warn));
    let line = format!("{} checks: {} ok, {warned} warning(s), {failed} failed", checks.len(), count(Status::Ok));
    s.push('\n');
    s.push_str(&if failed > 0 {
        p.red(&line)
    } else if warned > 0 {
        p.yellow(&line)
    } else {
        p.green(&line)
    });
    s.push('\n');
    s
}

/// `amis`: one row per class, pinned next to latest.
pub fn amis_text(doc: &crate::output::Amis) -> String {
    let p = Paint(stdout_color());
    let mut s = heading(p, &format!("AMIs for Kubernetes {}", doc.kubernetes_version));
    let mut t = table(&["class", "family", "pinned", "latest", "images"]);
    for c in &doc.classes {
        let pinned = if c.explicit_selector { "(amiSelector)".to_string() } else { c.pinned.clone().unwrap_or_else(|| "-".into()) };
        let latest = c.latest.clone().unwrap_or_else(|| "-".into());
        let moves = !c.explicit_selector && c.pinned.is_some() && c.pinned != c.latest;
        let images: Vec<String> = c.images.iter().map(|i| format!("{} {}", i.arch, i.image_id)).collect();
        t.add_row(vec![
            c.class.clone(),
            format!("{}/{}", c.family, c.variant),
            pinned,
            if moves { format!("{latest} (newer)") } else { latest },
            images.join("\n"),
        ]);
    }
    s.push('\n');
    s.push_str(&table_text(t));
    s
}

/// `init --list`.
pub fn presets_text(presets: &[crate::output::PresetInfo]) -> String {
    let mut t = table(&["preset", "description"]);
    for pr in presets {
        t.add_row(vec![pr.name.clone(), pr.description.clone()]);
    }
    table_text(t)
}
