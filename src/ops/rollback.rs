/*!
`karpctl rollback` and `karpctl plan --rollback`: one walk of the rollback
graph (src/rollback). The rollback takes the state lock like `up`, records
every step, and afterwards forgets the `up` records of what it removed, so a
later `up` brings Karpenter back; `--dry-run` and `plan --rollback` are the
same walk in plan mode and neither lock nor write anything.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;

use crate::cli::{Global, OutputFormat, PlanArgs, RollbackArgs};
use crate::config;
use crate::engine::{Mode, Outcome, RunReport, Step, Why};
use crate::state::LockInfo;

use super::walk::{next_steps, plan_exit, plan_help, run, select, Run};
use super::{exit, Report};

struct Walk {
    report: RunReport,
    /// Every step id, in the order the rollback runs them.
    sequence: Vec<String>,
    /// What the steps of this run removed, per step.
    removed: Vec<(String, Vec<String>)>,
    /// Left on purpose, per step.
    kept: Vec<(String, Vec<String>)>,
    /// `up` records dropped from the state.
    forgotten: Vec<String>,
    warnings: Vec<config::Diagnostic>,
}

#[derive(Default)]
struct Options {
    purge: bool,
    force: bool,
    delete_crds: bool,
    wait_timeout: Option<Duration>,
    targets: Vec<String>,
}

async fn walk(g: &Global, mode: Mode, o: Options) -> anyhow::Result<Walk> {
    let loaded = config::load(&g.config)?;
    let c = &loaded.config;
    let backend = super::context::backend(c, g).await?;
    let hold = (mode == Mode::Apply).then(|| LockInfo::for_this_process("rollback"));
    super::context::locked(&backend, g, hold, async |interrupt| {
        let mut state = super::context::load_state(&backend, c).await?;
        let sdk = crate::aws::sdk_config(&g.aws(), c.cluster.region.as_deref()).await;
        let env = crate::rollback::Env {
            kube: std::sync::Arc::new(crate::kube::Connector::new(&g.kube(), sdk.clone(), &c.cluster.name)),
            sdk,
            wait_timeout: o.wait_timeout.unwrap_or(Duration::from_secs(300)),
            force: o.force,
            purge: o.purge,
            delete_crds: o.delete_crds,
        };
        let graph = crate::rollback::steps(c, &env, &state.steps);
        let all: Vec<&dyn Step> = graph.iter().map(|s| s.step.as_ref()).collect();
        let steps = select(&all, &o.targets)?;
        let sequence: Vec<String> = steps.iter().map(|s| s.id()).collect();
        let report = run(g, Run { mode, refresh: false, concurrency: 4 }, &steps, &mut state, &backend, interrupt)
            .await
            .context(if mode == Mode::Apply { "rolling back" } else { "planning the rollback" })?;
        let mut forgotten = Vec::new();
        if mode == Mode::Apply {
            let done: BTreeSet<String> = report.outcomes.iter().filter(|(_, o)| ok(o)).map(|(id, _)| id.clone()).collect();
            let undoes: BTreeMap<String, Vec<String>> = graph.iter().map(|s| (s.step.id(), s.undoes.clone())).collect();
            forgotten = crate::rollback::forget_undone(&undoes, &done, &mut state);
            if !forgotten.is_empty() {
                backend.save(&mut state).await.context("saving the state after the rollback")?;
            }
        }
        let applied: BTreeSet<&str> =
            report.outcomes.iter().filter(|(_, o)| matches!(o, Outcome::Applied { .. })).map(|(id, _)| id.as_str()).collect();
        let of = |key: &str, only_applied: bool| -> Vec<(String, Vec<String>)> {
            sequence
                .iter()
                .filter(|id| !only_applied || applied.contains(id.as_str()))
                .filter_map(|id| {
                    let list = crate::rollback::strings(&state.steps.get(id)?.outputs[key]);
                    (!list.is_empty()).then(|| (id.clone(), list))
                })
                .collect()
        };
        let (removed, mut kept) = if mode == Mode::Apply { (of("removed", true), of("kept", false)) } else { (Vec::new(), Vec::new()) };
        kept.extend(kept_on_purpose(c, &state, &o));
        Ok(Walk { report, sequence, removed, kept, forgotten, warnings: loaded.warnings.clone() })
    })
    .await
}

/// What this rollback leaves by design, from the `up` records that stay in the
/// state: the stack and the discovery tags without `--purge`, the CRDs without
/// `--delete-crds`, and the Spot service-linked role always. Keyed by the `up`
/// step that made each, with why it stays and the flag that removes it.
fn kept_on_purpose(c: &config::Config, state: &crate::state::State, o: &Options) -> Vec<(String, Vec<String>)> {
    use crate::steps::{cfn_stack, crds, discovery_tags, spot_role};
    let names = crate::config::Names::of(c);
    let record = |id: &str| state.steps.get(id).filter(|r| r.status == crate::state::StepStatus::Done).map(|r| r.outputs.clone());
    let mut out = Vec::new();
    if !o.purge {
        let id = cfn_stack::id(&names.stack);
        if record(&id).is_some() {
            out.push((
                id,
                vec![format!(
                    "CloudFormation stack {} (node role {}, interruption queue, controller policies): kept without --purge; `karpctl rollback --purge` deletes it",
                    names.stack, names.node_role
                )],
            ));
        }
        let id = discovery_tags::id(&c.cluster.name);
        if let Some(out_) = record(&id) {
            let ours = crate::rollback::strings(&out_["taggedByKarpctl"]);
            if !ours.is_empty() {
                out.push((
                    id,
                    vec![format!(
                        "{}={} tags karpctl added on {}: kept without --purge; `karpctl rollback --purge` removes them",
                        crate::model::ownership::DISCOVERY_TAG,
                        c.cluster.name,
                        ours.join(", ")
                    )],
                ));
            }
        }
    }
    if !o.delete_crds {
        if let Some(out_) = record(crds::ID) {
            let names = crate::rollback::strings(&out_["crds"]);
            let what = if names.is_empty() { "the Karpenter CRDs".to_string() } else { format!("CRDs {}", names.join(", ")) };
            out.push((
                crds::ID.to_string(),
                vec![format!("{what}: kept without --delete-crds (deleting them deletes every NodeClaim left); `karpctl rollback --delete-crds` deletes them")],
            ));
        }
    }
    if record(spot_role::ID).is_some() {
        out.push((spot_role::ID.to_string(), vec!["service-linked role AWSServiceRoleForEC2Spot: never deleted (other tools launch Spot instances with it)".into()]));
    }
    out
}

fn ok(o: &Outcome) -> bool {
    matches!(o, Outcome::Fresh | Outcome::UpToDate | Outcome::Applied { .. })
}

/// For rollback steps, "not created yet" and "looked up on every run" say nothing;
/// an interrupted or failed earlier attempt does.
fn quiet_reasons(r: &RunReport) -> RunReport {
    let keep = |w: &Why| matches!(w, Why::Interrupted | Why::PreviousAttemptFailed { .. });
    let planned = r
        .planned
        .iter()
        .cloned()
        .map(|mut p| {
            p.why.retain(keep);
            // The failure itself was shown when it happened: its first line is reminder enough.
            for w in &mut p.why {
                if let Why::PreviousAttemptFailed { error } = w {
                    if let Some((first, _)) = error.split_once('\n') {
                        *error = format!("{first} …");
                    }
                }
            }
            p
        })
        .collect();
    RunReport { outcomes: r.outcomes.clone(), planned, fresh: r.fresh.clone(), help: r.help.clone(), blocked: r.blocked.clone() }
}

fn render(g: &Global, w: &Walk, applied: bool) -> anyhow::Result<String> {
    use crate::output::{Run, RunKind, StepResources};
    let list = |v: &[(String, Vec<String>)]| v.iter().map(|(s, l)| StepResources { step: s.clone(), resources: l.clone() }).collect::<Vec<_>>();
    Ok(match g.output {
        f @ (OutputFormat::Json | OutputFormat::Yaml) => {
            let mut doc = Run::new(if applied { RunKind::Rollback } else { RunKind::RollbackPlan }, &w.report, w.sequence.len());
            doc.sequence = Some(w.sequence.clone());
            doc.removed = Some(list(&w.removed));
            doc.kept = Some(list(&w.kept));
            doc.forgotten_records = Some(w.forgotten.clone());
            crate::output::encode(&doc, f)?
        }
        OutputFormat::Text => {
            let mut s = format!("Rollback sequence: {}\n\n", w.sequence.join(" → "));
            s.push_str(&crate::ui::plan_text(&quiet_reasons(&w.report), w.sequence.len(), applied, crate::ui::stdout_color()));
            if !w.removed.is_empty() {
                s.push_str("\nRemoved:\n");
                for (step, items) in &w.removed {
                    for i in items {
                        s.push_str(&format!("  {step}: {i}\n"));
                    }
                }
            }
            if !w.kept.is_empty() {
                s.push_str(if applied { "\nKept:\n" } else { "\nWould keep:\n" });
                for (step, items) in &w.kept {
                    for i in items {
                        s.push_str(&format!("  {step}: {i}\n"));
                    }
                }
            }
            s
        }
    })
}

/// The rollback the user ran, with the flags that change what it does
/// (`rollback --purge --force`), for the `help:` lines that say how to approve or resume it.
fn rollback_command(a: &RollbackArgs) -> String {
    let mut s = "rollback".to_string();
    for (on, flag) in [(a.purge, "--purge"), (a.force, "--force"), (a.delete_crds, "--delete-crds")] {
        if on {
            s.push(' ');
            s.push_str(flag);
        }
    }
    if a.wait_timeout != Duration::from_secs(300) {
        s.push_str(&format!(" --wait-timeout {}", humantime::format_duration(a.wait_timeout)));
    }
    s
}

/// `karpctl rollback`.
pub async fn rollback(g: &Global, args: &RollbackArgs) -> anyhow::Result<Report> {
    let mode = if args.dry_run { Mode::Plan } else { Mode::Apply };
    let o = Options { purge: args.purge, force: args.force, delete_crds: args.delete_crds, wait_timeout: Some(args.wait_timeout), targets: vec![] };
    let w = walk(g, mode, o).await?;
    let failed = w.report.failed();
    let command = rollback_command(args);
    let mut notes = Vec::new();
    if args.dry_run {
        notes.push(format!("dry run: nothing was changed; `karpctl {command}` (without --dry-run) does the above"));
    }
    let approval: Vec<&str> = failed.iter().filter(|(_, o)| matches!(o, Outcome::NeedsApproval { .. })).map(|(s, _)| s.as_str()).collect();
    if !approval.is_empty() && !args.dry_run {
        notes.push(format!("{} needs approval; read the reason above, then run `karpctl {command} --yes` to go on", approval.join(", ")));
    }
    let preview = command.replacen("rollback", "rollback --dry-run", 1);
    let help = if args.dry_run { Vec::new() } else { next_steps(&w.report, &command, &preview) };
    if failed.len() > approval.len() && !args.dry_run {
        notes.push(format!(
            "{} step(s) did not finish; fix the cause and run `karpctl {command}` again: it checks every step and goes on where it stopped",
            failed.len()
        ));
    }
    if !w.forgotten.is_empty() {
        notes.push(format!("`karpctl up` recreates what was removed ({} up record(s) forgotten)", w.forgotten.len()));
    }
    let exit = if failed.is_empty() { exit::OK } else { exit::ERROR };
    let help = if args.dry_run { plan_help(&w.report, "rollback --dry-run") } else { help };
    Ok(Report { stdout: render(g, &w, !args.dry_run)?, warnings: w.warnings.clone(), notes, help, exit, aws_access: crate::help::aws_access(&w.report) })
}

/// `karpctl plan --rollback`.
pub async fn plan(g: &Global, args: &PlanArgs) -> anyhow::Result<Report> {
    let o = Options { purge: args.purge, force: false, delete_crds: args.delete_crds, wait_timeout: None, targets: args.target.targets.clone() };
    let w = walk(g, Mode::Plan, o).await?;
    let exit = plan_exit(&w.report, args.detailed_exitcode);
    let help = plan_help(&w.report, "plan --rollback");
    Ok(Report { stdout: render(g, &w, false)?, warnings: w.warnings.clone(), exit, help, aws_access: crate::help::aws_access(&w.report), ..Default::default() })
}
