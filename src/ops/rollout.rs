/*!
`karpctl up --staged`: a staged AMI rollout. The classes whose recorded pin would
move (with `--update-amis`, `amis.update: latest` or a Kubernetes version change)
move one per walk, in config order, each followed by its check step
([`crate::steps::ami_check`]); the rollout stops at the first failure with the
commands that continue it or put the class back. A first walk does the rest of
`up` with no pin moving and re-runs any earlier check that did not pass.
*/

use std::collections::{BTreeMap, BTreeSet};

use crate::cli::{Global, OutputFormat, UpArgs};
use crate::config::{self, types::AmiUpdate};
use crate::engine::{Mode, Outcome};
use crate::output::{RunKind, Stage, StageResult};
use crate::steps::ami_lookup::Moves;

use super::plan::{planned, up_command, up_preview, walk, Walk, WalkOptions};
use super::walk::next_steps;
use super::{exit, Report};

/// The stages a rollout would run now: each class (config order) whose recorded
/// pin differs from the newest, when something asks pins to move.
fn stages(c: &config::Config, latest: &super::amis::Latest, recorded: &BTreeMap<String, crate::render::AmiChoice>, recorded_k8s: Option<&str>, update: bool) -> Vec<Stage> {
    let moving = update || c.amis.update == AmiUpdate::Latest || recorded_k8s.is_some_and(|k| k != latest.kubernetes_version);
    if !moving {
        return Vec::new();
    }
    c.node_classes
        .iter()
        .filter_map(|nc| {
            let (old, new) = (recorded.get(&nc.name)?, latest.pins.get(&nc.name)?);
            (old != new).then(|| Stage { class: nc.name.clone(), from: Some(old.to_string()), to: new.to_string(), result: StageResult::NotRun, error: None })
        })
        .collect()
}

fn header(i: usize, n: usize, s: &Stage) -> String {
    format!("stage {}/{n}: class {}: {} → {}", i + 1, s.class, s.from.as_deref().unwrap_or("none"), s.to)
}

fn failures(w: &Walk) -> String {
    let errs: Vec<String> = w.report.failed().iter().map(|(id, o)| match o {
        Outcome::Failed { error } => format!("{id}: {error}"),
        other => format!("{id}: {other:?}"),
    }).collect();
    errs.join("; ")
}

pub async fn staged(g: &Global, args: &UpArgs) -> anyhow::Result<Report> {
    let loaded = config::load(&g.config)?;
    let c = &loaded.config;
    let backend = super::context::backend(c, g).await?;
    let state = super::context::load_state(&backend, c).await?;
    let latest = super::amis::latest(g, c).await?;
    let (recorded, recorded_k8s) = super::amis::recorded(&state);
    let mut plan = stages(c, &latest, &recorded, recorded_k8s.as_deref(), args.update_amis);
    let n = plan.len();
    let options = |amis: Moves, checks: BTreeMap<String, String>, preflight: bool| WalkOptions {
        refresh: args.refresh,
        amis,
        checks,
        preflight,
        prune: args.prune,
        force_conflicts: args.force_conflicts,
        wait_timeout: Some(args.wait_timeout),
        targets: Vec::new(),
    };
    let list = plan.iter().enumerate().map(|(i, s)| header(i, n, s)).collect::<Vec<_>>();
    let why_none = if args.update_amis || c.amis.update == AmiUpdate::Latest {
        "every class is on the newest AMIs".to_string()
    } else {
        "nothing asks AMI pins to move: add --update-amis (a Kubernetes version change moves them too)".to_string()
    };
    if args.dry_run {
        // The first stage, planned; the others listed.
        let (moves, checks) = match plan.first() {
            Some(s) => (Moves::Only(BTreeSet::from([s.class.clone()])), BTreeMap::from([(s.class.clone(), s.to.clone())])),
            None => (Moves::Only(BTreeSet::new()), BTreeMap::new()),
        };
        let mut r = planned(g, options(moves, checks, false), args.detailed_exitcode, &format!("{} --dry-run", up_command(args))).await?;
        r.notes.insert(0, if n == 0 { format!("staged rollout: no stage ({why_none})") } else { format!("staged rollout, {n} stage(s); this plan is the first:\n  {}", list.join("\n  ")) });
        return Ok(r);
    }

    // Before any move: the rest of `up`, and any earlier check that has not passed.
    let earlier: BTreeMap<String, String> = state
        .steps
        .keys()
        .filter_map(|id| id.strip_prefix("amis/check/"))
        .filter_map(|class| recorded.get(class).or(latest.pins.get(class)).map(|p| (class.to_string(), p.to_string())))
        .collect();
    let command = up_command(args);
    let mut text = String::new();
    let mut notes = Vec::new();
    let first = walk(g, Mode::Apply, options(Moves::Only(BTreeSet::new()), earlier, !args.skip_preflight)).await?;
    let mut last = first;
    text.push_str(&format!("before the first stage: everything but AMI moves{}\n", if n == 0 { format!(" ({why_none})") } else { String::new() }));
    text.push_str(&super::plan::render(g, &last, true)?);
    let mut failed = !last.report.failed().is_empty();
    if failed {
        notes.push(format!("the walk before the first stage did not finish, so no AMI pin moved: {}", failures(&last)));
    }
    for (i, s) in plan.iter_mut().enumerate() {
        if failed {
            break;
        }
        let class = s.class.clone();
        let w = walk(g, Mode::Apply, options(Moves::Only(BTreeSet::from([class.clone()])), BTreeMap::from([(class.clone(), s.to.clone())]), false)).await?;
        text.push_str(&format!("\n{}\n", header(i, n, s)));
        text.push_str(&super::plan::render(g, &w, true)?);
        if w.report.failed().is_empty() {
            s.result = StageResult::Passed;
        } else {
            failed = true;
            let error = failures(&w);
            notes.push(format!("{}: failed, so the rollout stopped ({} stage(s) not run): {error}", header(i, n, s), n - i - 1));
            s.result = StageResult::Failed;
            s.error = Some(error);
        }
        last = w;
    }
    let mut help = Vec::new();
    if failed {
        help = next_steps(&last.report, &command, &up_preview(&command));
        if let Some(s) = plan.iter().find(|s| s.result == StageResult::Failed) {
            // `command` resumes: the check of this class runs again before the next class moves.
            help.push(format!("continue: fix the cause, then `karpctl {command}` checks class {} again and moves the classes after it", s.class));
            if let Some(from) = &s.from {
                help.push(format!("go back: `karpctl up --revert-amis {}` puts class {} back on {from}", s.class, s.class));
            }
        }
    }
    let stdout = match g.output {
        OutputFormat::Text => text,
        f => {
            let mut doc = crate::output::Run::new(RunKind::Apply, &last.report, last.total);
            doc.stages = Some(plan);
            crate::output::encode(&doc, f)?
        }
    };
    let aws_access = crate::help::aws_access(&last.report);
    Ok(Report { stdout, warnings: loaded.warnings.clone(), notes, help, exit: if failed { exit::ERROR } else { exit::OK }, aws_access })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::AmiChoice;

    #[test]
    fn stages_follow_the_config_order_and_only_what_is_asked_to_move() {
        let c = crate::config::parse(
            std::path::Path::new("t.yaml"),
            b"apiVersion: karpctl.io/v1alpha1\ncluster: {name: c}\nnodeClasses:\n  - {name: zeta}\n  - {name: alpha}\n  - {name: fresh}\nnodePools:\n  - {name: p, nodeClass: zeta}\n",
        )
        .map_err(|e| e.to_string())
        .unwrap()
        .config;
        let al = |v: &str| AmiChoice::Alias(format!("al2023@v{v}"));
        let pins: BTreeMap<String, AmiChoice> = [("zeta", al("2")), ("alpha", al("2")), ("fresh", al("2"))].into_iter().map(|(c, p)| (c.to_string(), p)).collect();
        let latest = super::super::amis::Latest { kubernetes_version: "1.32".into(), needs: BTreeMap::new(), found: BTreeMap::new(), pins };
        // fresh has no recorded pin (its first pin is not a move); alpha is already current.
        let recorded: BTreeMap<String, AmiChoice> = [("zeta", al("1")), ("alpha", al("2"))].into_iter().map(|(c, p)| (c.to_string(), p)).collect();
        let classes = |v: Vec<Stage>| v.into_iter().map(|s| format!("{}:{}→{}", s.class, s.from.unwrap_or_default(), s.to)).collect::<Vec<_>>();
        assert_eq!(classes(stages(&c, &latest, &recorded, Some("1.32"), true)), ["zeta:al2023@v1→al2023@v2"]);
        assert!(stages(&c, &latest, &recorded, Some("1.32"), false).is_empty(), "nothing asked to move");
        assert_eq!(classes(stages(&c, &latest, &recorded, Some("1.31"), false)), ["zeta:al2023@v1→al2023@v2"], "a Kubernetes change asks");
        let both: BTreeMap<String, AmiChoice> = [("zeta", al("1")), ("alpha", al("1"))].into_iter().map(|(c, p)| (c.to_string(), p)).collect();
        assert_eq!(classes(stages(&c, &latest, &both, Some("1.32"), true)), ["zeta:al2023@v1→al2023@v2", "alpha:al2023@v1→al2023@v2"], "config order");
    }
}
