/*!
`karpctl plan` and `karpctl up`: one walk of the step graph. `plan` replaces
apply with reporting and neither locks nor writes the state; `up` takes the
state lock, applies, and records every transition. Both print each step that
changes (or would), why, and the field-level differences.
*/

use std::time::Duration;

use anyhow::Context;

use crate::cli::{Global, OutputFormat, PlanArgs, UpArgs};
use crate::config;
use crate::engine::{Mode, RunReport, Runner, Step};
use crate::state::LockInfo;
use crate::ui::progress::{Progress, Style};

use super::{exit, Report};

struct Walk {
    report: RunReport,
    total: usize,
    warnings: Vec<config::Diagnostic>,
}

async fn walk(g: &Global, mode: Mode, refresh: bool, update_amis: bool, preflight: bool) -> anyhow::Result<Walk> {
    let loaded = config::load(&g.config)?;
    let c = &loaded.config;
    if preflight {
        if let Some(msg) = super::doctor::blocking(&super::doctor::checks(c, g).await) {
            anyhow::bail!(msg);
        }
    }
    let backend = super::context::backend(c, g).await?;
    let lock = LockInfo::for_this_process(if mode == Mode::Apply { "up" } else { "plan" });
    if mode == Mode::Apply {
        backend
            .lock(&lock, Duration::from_secs(g.lock_timeout), &|h| crate::ui::note(&format!("waiting for the state lock held by {h}")))
            .await?;
    }
    let result = async {
        let mut state = super::context::load_state(&backend, c).await?;
        let env = crate::steps::Env { sdk: crate::aws::sdk_config(g, c.cluster.region.as_deref()).await, update_amis };
        let steps = crate::steps::up_steps(c, &env)?;
        let progress = Progress::new(Style::detect(g.output == OutputFormat::Json));
        let events = |e| progress.event(e);
        let runner = Runner {
            steps: steps.iter().map(|s| s.as_ref() as &dyn Step).collect(),
            mode,
            refresh,
            concurrency: 8,
            approve: g.yes,
            events: &events,
        };
        let mut cancel = std::pin::pin!(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        let report = runner.run(&mut state, &backend, cancel.as_mut()).await.context(if mode == Mode::Apply { "applying" } else { "planning" })?;
        anyhow::Ok(Walk { report, total: steps.len(), warnings: loaded.warnings.clone() })
    }
    .await;
    if mode == Mode::Apply {
        backend.unlock(&lock.id).await?;
    }
    result
}

fn render(g: &Global, w: &Walk, applied: bool) -> anyhow::Result<String> {
    let doc = serde_json::json!({
        "changes": w.report.changes(),
        "applied": applied,
        "steps": w.total,
        "unchanged": w.report.fresh,
        "planned": w.report.planned,
        "outcomes": w.report.outcomes.iter().map(|(s, o)| serde_json::json!({"step": s, "result": o})).collect::<Vec<_>>(),
    });
    Ok(match g.output {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&doc)?),
        OutputFormat::Yaml => serde_yaml::to_string(&doc)?,
        OutputFormat::Text => crate::ui::plan_text(&w.report, w.total, applied),
    })
}

pub async fn plan(g: &Global, args: &PlanArgs) -> anyhow::Result<Report> {
    if args.rollback {
        return Err(super::NotImplemented { command: "plan --rollback" }.into());
    }
    let w = walk(g, Mode::Plan, args.refresh, false, false).await?;
    let exit = if !w.report.failed().is_empty() {
        exit::ERROR
    } else if args.detailed_exitcode && w.report.changes() {
        exit::CHANGES
    } else {
        exit::OK
    };
    Ok(Report { stdout: render(g, &w, false)?, warnings: w.warnings.clone(), exit, ..Default::default() })
}

pub async fn up(g: &Global, args: &UpArgs) -> anyhow::Result<Report> {
    if args.prune {
        // Pools and classes are applied by the Kubernetes steps, which are not built yet.
        return Err(super::NotImplemented { command: "up --prune" }.into());
    }
    let w = walk(g, Mode::Apply, args.refresh, args.update_amis, !args.skip_preflight).await?;
    let failed = w.report.failed();
    let mut notes = Vec::new();
    if !failed.is_empty() {
        notes.push(format!("{} step(s) did not finish; fix the cause and run `karpctl up` again: finished steps are skipped", failed.len()));
    }
    let exit = if failed.is_empty() { exit::OK } else { exit::ERROR };
    Ok(Report { stdout: render(g, &w, true)?, warnings: w.warnings.clone(), notes, exit })
}
