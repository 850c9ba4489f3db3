/*!
What `up`, `plan` and `rollback` share around the step runner: picking the
steps `--target` names (with what they depend on), running them with the
progress display and the one error classifier ([`crate::help::classify`]), and
turning the report into `help:` lines and a plan's exit code.
*/

use crate::cli::{Global, OutputFormat};
use crate::engine::{Mode, Outcome, RunReport, Runner, RunnerError, Step};
use crate::state::{Backend, State};
use crate::ui::progress::{Progress, Style};

use super::context::Interrupt;
use super::exit;

/// How a walk runs its steps.
pub struct Run {
    pub mode: Mode,
    /// Observe every step, fingerprints or not (`--refresh`).
    pub refresh: bool,
    /// Steps observed or applied at once.
    pub concurrency: usize,
}

/// Runs `steps` against `state`, saving it to `backend` after every transition,
/// with the progress display (`--yes` approves destructive changes).
pub async fn run(g: &Global, r: Run, steps: &[&dyn Step], state: &mut State, backend: &Backend, mut interrupt: Interrupt) -> Result<RunReport, RunnerError> {
    let progress = Progress::new(Style::detect(g.output == OutputFormat::Json, g.verbose > 0));
    let events = |e| progress.event(e);
    let runner = Runner {
        steps: steps.to_vec(),
        mode: r.mode,
        refresh: r.refresh,
        concurrency: r.concurrency,
        approve: g.yes,
        events: &events,
        classify: crate::help::classify,
    };
    runner.run(state, backend, interrupt.as_mut()).await
}

/// Keeps the steps `targets` name and everything they depend on.
pub fn select<'a>(steps: &[&'a dyn Step], targets: &[String]) -> anyhow::Result<Vec<&'a dyn Step>> {
    if targets.is_empty() {
        return Ok(steps.to_vec());
    }
    let matches = |s: &dyn Step, t: &str| match t {
        "aws" => s.layer() == crate::engine::Layer::Aws,
        "kubernetes" => s.layer() == crate::engine::Layer::Kubernetes,
        t if t.ends_with('/') => s.id().starts_with(t),
        t => s.id() == t,
    };
    let mut keep: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for t in targets {
        let hit: Vec<String> = steps.iter().filter(|s| matches(**s, t)).map(|s| s.id()).collect();
        if hit.is_empty() {
            let ids: Vec<String> = steps.iter().map(|s| s.id()).collect();
            anyhow::bail!("--target {t} matches no step; steps: aws, kubernetes, {}", ids.join(", "));
        }
        keep.extend(hit);
    }
    // Close over dependencies.
    loop {
        let more: Vec<String> = steps.iter().filter(|s| keep.contains(&s.id())).flat_map(|s| s.deps()).filter(|d| !keep.contains(d)).collect();
        if more.is_empty() {
            break;
        }
        keep.extend(more);
    }
    Ok(steps.iter().copied().filter(|s| keep.contains(&s.id())).collect())
}

/// `help:` lines for steps that did not finish: each failed step's own next
/// command (once each), then approve, inspect, and — last — how to resume.
/// `command` is the command as run (`up --prune`, `rollback --purge`), `preview`
/// the one that shows what is left without changing anything.
pub fn next_steps(report: &RunReport, command: &str, preview: &str) -> Vec<String> {
    let failed = report.failed();
    let mut help = failed_steps_help(report);
    if failed.iter().any(|(_, o)| matches!(o, Outcome::NeedsApproval { .. })) {
        help.push(format!("read why above, then approve: karpctl {command} --yes"));
    }
    if failed.iter().any(|(_, o)| !matches!(o, Outcome::NeedsApproval { .. })) {
        let done = report.outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Fresh | Outcome::UpToDate | Outcome::Applied { .. })).count();
        help.push(format!("karpctl {preview}   # what is left to do, and why"));
        help.push(format!(
            "`karpctl {command}` resumes where this run stopped ({done} step(s) recorded done are not redone); `karpctl status` shows each step's error"
        ));
    }
    help
}

/// A plan's exit code: an error when a step failed, else `CHANGES` for
/// `--detailed-exitcode` when something would change.
pub fn plan_exit(report: &RunReport, detailed_exitcode: bool) -> i32 {
    if !report.failed().is_empty() {
        exit::ERROR
    } else if detailed_exitcode && report.changes() {
        exit::CHANGES
    } else {
        exit::OK
    }
}

/// Each failed step's own next command, once each, in the order the steps failed.
fn failed_steps_help(report: &RunReport) -> Vec<String> {
    let mut help: Vec<String> = Vec::new();
    for (step, _) in &report.failed() {
        if let Some(h) = report.help.get(step) {
            if !help.contains(h) {
                help.push(h.clone());
            }
        }
    }
    help
}

/// `help:` lines for a plan that could not look at every step: each failed
/// step's own next command (once each), else how to find the cause.
pub fn plan_help(report: &RunReport, command: &str) -> Vec<String> {
    let failed = report.failed();
    let mut help = failed_steps_help(report);
    if !failed.is_empty() && help.is_empty() {
        help.push(format!("fix the cause shown above and run `karpctl {command}` again; `karpctl doctor` checks the credentials and the cluster in AWS"));
    }
    help
}

