/*!
`karpctl plan` and `karpctl up`: one walk of the step graph. `plan` replaces
apply with reporting and neither locks nor writes the state; `up` takes the
state lock, applies, and records every transition. Both print each step that
changes (or would), why, and the field-level differences.
*/

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{Global, OutputFormat, PlanArgs, UpArgs};
use crate::config;
use crate::engine::{Mode, RunReport, Step};
use crate::output::RunKind;
use crate::steps::ami_lookup::Moves;
use crate::state::LockInfo;

use super::walk::{next_steps, plan_exit, plan_help, run, select, Run};
use super::{exit, Report};

pub(super) struct Walk {
    pub report: RunReport,
    pub total: usize,
    pub warnings: Vec<config::Diagnostic>,
    /// No state file existed when the walk began.
    no_state: bool,
    backend: crate::state::Backend,
    config: config::Config,
}

/// What a walk is asked to do beyond its mode.
#[derive(Default)]
pub(super) struct WalkOptions {
    pub refresh: bool,
    /// Which recorded AMI pins may move.
    pub amis: Moves,
    /// A staged rollout's checks: class → the pin it has after the walk.
    pub checks: BTreeMap<String, String>,
    pub preflight: bool,
    pub prune: bool,
    pub force_conflicts: bool,
    pub wait_timeout: Option<Duration>,
    pub targets: Vec<String>,
}

pub(super) async fn walk(g: &Global, mode: Mode, o: WalkOptions) -> anyhow::Result<Walk> {
    let (refresh, preflight) = (o.refresh, o.preflight);
    let loaded = config::load(&g.config)?;
    let c = &loaded.config;
    let backend = super::context::backend(c, g).await?;
    if preflight {
        // An unusable state or lock file is refused before the preflight's first AWS call.
        let state = super::context::load_state(&backend, c).await?;
        crate::steps::crds::refuse_recorded_downgrade(&state, &c.karpenter.version)?;
        if mode == Mode::Apply {
            backend.lock_holder().await?;
        }
        if let Some(failed) = super::doctor::blocking(&super::doctor::checks(c, g, false).await) {
            return Err(failed.into());
        }
    }
    let hold = (mode == Mode::Apply).then(|| LockInfo::for_this_process("up"));
    super::context::locked(&backend, g, hold, async |interrupt| {
        let mut state = super::context::load_state(&backend, c).await?;
        let no_state = state.serial == 0;
        crate::steps::crds::refuse_recorded_downgrade(&state, &c.karpenter.version)?;
        if mode == Mode::Apply {
            crate::rollback::forget_rollback(&mut state); // a later rollback starts afresh
        }
        let sdk = crate::aws::sdk_config(&g.aws(), c.cluster.region.as_deref()).await;
        let env = crate::steps::Env {
            kube: std::sync::Arc::new(crate::kube::Connector::new(&g.kube(), sdk.clone(), &c.cluster.name)),
            sdk,
            amis: o.amis,
            checks: o.checks,
            prune: o.prune || g.yes,
            force_conflicts: o.force_conflicts,
            wait_timeout: o.wait_timeout.unwrap_or(Duration::from_secs(300)),
            config_dir: g.config.parent().map(|p| p.to_path_buf()).unwrap_or_default(),
        };
        let all = crate::steps::up_steps(c, &env)?;
        let steps = select(&all.iter().map(|s| s.as_ref() as &dyn Step).collect::<Vec<_>>(), &o.targets)?;
        let report = run(g, Run { mode, refresh, concurrency: 8 }, &steps, &mut state, &backend, interrupt)
            .await
            .context(if mode == Mode::Apply { "applying" } else { "planning" })?;
        Ok((report, steps.len(), no_state))
    })
    .await
    .map(|(report, total, no_state)| Walk { report, total, warnings: loaded.warnings.clone(), no_state, backend, config: loaded.config.clone() })
}

pub(super) fn render(g: &Global, w: &Walk, applied: bool) -> anyhow::Result<String> {
    match g.output {
        OutputFormat::Text => Ok(crate::ui::plan_text(&w.report, w.total, applied, crate::ui::stdout_color())),
        f => {
            let kind = if applied { RunKind::Apply } else { RunKind::Plan };
            crate::output::encode(&crate::output::Run::new(kind, &w.report, w.total), f)
        }
    }
}

/// The `up` the user ran, with the flags that change what it does, for the
/// `help:` lines that say how to approve or resume it (`up --update-amis --prune`).
pub fn up_command(a: &UpArgs) -> String {
    let mut s = "up".to_string();
    // Not --skip-preflight: it changes nothing the run does, and a next run may as well check.
    for (on, flag) in [(a.refresh, "--refresh"), (a.update_amis, "--update-amis"), (a.staged, "--staged"), (a.prune, "--prune"), (a.force_conflicts, "--force-conflicts")] {
        if on {
            s.push(' ');
            s.push_str(flag);
        }
    }
    if !a.revert_amis.is_empty() {
        s.push_str(&format!(" --revert-amis {}", a.revert_amis.join(",")));
    }
    if a.wait_timeout != Duration::from_secs(300) {
        s.push_str(&format!(" --wait-timeout {}", humantime::format_duration(a.wait_timeout)));
    }
    for t in &a.target.targets {
        s.push_str(&format!(" --target {t}"));
    }
    s
}

/// What shows the rest of an `up` without doing it: `plan`, or `up --dry-run` with the same flags.
pub(super) fn up_preview(command: &str) -> String {
    match command.strip_prefix("up") {
        Some("") => "plan".into(),
        Some(flags) => format!("up --dry-run{flags}"),
        None => command.to_string(),
    }
}

pub async fn plan(g: &Global, args: &PlanArgs) -> anyhow::Result<Report> {
    if args.rollback {
        return super::rollback::plan(g, args).await;
    }
    planned(g, WalkOptions { refresh: args.refresh, targets: args.target.targets.clone(), ..Default::default() }, args.detailed_exitcode, "plan").await
}

/// `plan` and `up --dry-run`: the walk in plan mode, its listing and exit code.
pub(super) async fn planned(g: &Global, opts: WalkOptions, detailed_exitcode: bool, command: &str) -> anyhow::Result<Report> {
    let w = walk(g, Mode::Plan, opts).await?;
    let exit = plan_exit(&w.report, detailed_exitcode);
    let mut help = plan_help(&w.report, command);
    let mut notes = Vec::new();
    // Planned against no state while karpctl's stack exists: the state is elsewhere.
    let aws_access = crate::help::aws_access(&w.report);
    if w.no_state && aws_access.is_none() {
        if let Some(stack) = super::context::karpctl_stack(g, &w.config).await {
            let (note, h) = super::context::missing_state(&w.backend, g, &[stack]);
            notes.push(note);
            help.push(h);
        }
    }
    Ok(Report { stdout: render(g, &w, false)?, warnings: w.warnings.clone(), exit, help, notes, aws_access })
}

/// The pins `up`'s flags let move (a staged rollout chooses per stage instead).
fn moves(args: &UpArgs) -> Moves {
    if !args.revert_amis.is_empty() {
        Moves::Revert(args.revert_amis.iter().cloned().collect())
    } else if args.update_amis {
        Moves::All
    } else {
        Moves::Held
    }
}

/// `--revert-amis` names classes karpctl pins AMIs for: refused before any call otherwise.
fn check_revert(g: &Global, args: &UpArgs) -> anyhow::Result<()> {
    if args.revert_amis.is_empty() {
        return Ok(());
    }
    let c = config::load(&g.config)?.config;
    let pinned = crate::amis::needs(&c);
    for class in &args.revert_amis {
        if !pinned.contains_key(class) {
            let names: Vec<&str> = pinned.keys().map(String::as_str).collect();
            anyhow::bail!("--revert-amis {class}: no node class `{class}` with an AMI pin in {}; pinned classes: {}", g.config.display(), names.join(", "));
        }
    }
    Ok(())
}

/// `up` without `--staged` (that is [`super::rollout::staged`]).
pub async fn up(g: &Global, args: &UpArgs) -> anyhow::Result<Report> {
    check_revert(g, args)?;
    if args.dry_run {
        // `plan`, with the flags that change what `up` would do.
        let opts = WalkOptions {
            refresh: args.refresh,
            amis: moves(args),
            prune: args.prune,
            force_conflicts: args.force_conflicts,
            targets: args.target.targets.clone(),
            ..Default::default()
        };
        return planned(g, opts, args.detailed_exitcode, "up --dry-run").await;
    }
    let opts = WalkOptions {
        refresh: args.refresh,
        amis: moves(args),
        checks: BTreeMap::new(),
        preflight: !args.skip_preflight,
        prune: args.prune,
        force_conflicts: args.force_conflicts,
        wait_timeout: Some(args.wait_timeout),
        targets: args.target.targets.clone(),
    };
    let w = walk(g, Mode::Apply, opts).await?;
    let failed = w.report.failed();
    let command = up_command(args);
    let mut notes = Vec::new();
    if !failed.is_empty() {
        notes.push(format!("{} step(s) did not finish; fix the cause and run `karpctl {command}` again: finished steps are skipped", failed.len()));
    }
    let exit = if failed.is_empty() { exit::OK } else { exit::ERROR };
    let help = next_steps(&w.report, &command, &up_preview(&command));
    Ok(Report { stdout: render(g, &w, true)?, warnings: w.warnings.clone(), notes, help, exit, aws_access: crate::help::aws_access(&w.report) })
}
