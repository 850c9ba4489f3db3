/*!
`karpctl plan`: the same walk as `up` with apply replaced by reporting. Reads
the state without locking or writing it and prints each step that would change,
why, and the field-level differences.
*/

use anyhow::Context;

use crate::cli::{Global, OutputFormat, PlanArgs};
use crate::config;
use crate::engine::{Mode, RunReport, Runner, Step};
use crate::ui::progress::{Progress, Style};

use super::{exit, Report};

pub async fn plan(g: &Global, args: &PlanArgs) -> anyhow::Result<Report> {
    if args.rollback {
        return Err(super::NotImplemented { command: "plan --rollback" }.into());
    }
    let loaded = config::load(&g.config)?;
    let c = &loaded.config;
    let backend = super::context::backend(c, g).await?;
    let mut state = super::context::load_state(&backend, c).await?;
    let steps = crate::steps::up_steps(c);
    let progress = Progress::new(Style::detect(g.output == OutputFormat::Json));
    let events = |e| progress.event(e);
    let runner = Runner {
        steps: steps.iter().map(|s| s.as_ref() as &dyn Step).collect(),
        mode: Mode::Plan,
        refresh: args.refresh,
        concurrency: 8,
        approve: g.yes,
        events: &events,
    };
    let mut cancel = std::pin::pin!(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    let report = runner.run(&mut state, &backend, cancel.as_mut()).await.context("planning")?;
    let stdout = match g.output {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&plan_json(&report, steps.len()))?),
        OutputFormat::Yaml => serde_yaml::to_string(&plan_json(&report, steps.len()))?,
        OutputFormat::Text => crate::ui::plan_text(&report, steps.len()),
    };
    let failed = !report.failed().is_empty();
    let exit = if failed {
        exit::ERROR
    } else if args.detailed_exitcode && report.changes() {
        exit::CHANGES
    } else {
        exit::OK
    };
    Ok(Report { stdout, warnings: loaded.warnings, exit, ..Default::default() })
}

fn plan_json(r: &RunReport, total: usize) -> serde_json::Value {
    serde_json::json!({
        "changes": r.changes(),
        "steps": total,
        "unchanged": r.fresh,
        "planned": r.planned,
        "outcomes": r.outcomes.iter().map(|(s, o)| serde_json::json!({"step": s, "result": o})).collect::<Vec<_>>(),
    })
}
