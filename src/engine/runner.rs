/*!
Walks the step graph. Fresh steps (recorded done with the same fingerprint) are
skipped without calling anything; the rest are observed, diffed and — in apply
mode — applied, with `in_progress` persisted before `apply` and the outputs
after, so a crash at any instant resumes by observing again. Independent steps
run concurrently up to a bound; a failure stops only its dependents.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use serde_json::{json, Value};

use super::fingerprint::fingerprint;
use crate::json::{field_changes, FieldChange};
use super::{Action, Change, Event, Events, Step, StepCx, Why};
use crate::state::{State, StepRecord, StepStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Apply,
    Plan,
}

/// How a step ended in this run.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Recorded as done with the same fingerprint: skipped, no API call.
    Fresh,
    /// Observed; nothing to change.
    UpToDate,
    Applied { action: Action },
    /// Plan mode: would do this.
    WouldChange { action: Action },
    Failed { error: String },
    /// Not run because a dependency did not finish.
    Blocked { by: String },
    /// Destructive change not approved.
    NeedsApproval { summary: String },
}

impl Outcome {
    fn ok(&self) -> bool {
        matches!(self, Outcome::Fresh | Outcome::UpToDate | Outcome::Applied { .. } | Outcome::WouldChange { .. })
    }
}

/// A step that will (or would) change, for `plan`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Planned {
    pub step: String,
    pub kind: String,
    pub why: Vec<Why>,
    pub change: Change,
}

#[derive(Debug, Default, Serialize)]
pub struct RunReport {
    /// Every step's outcome, in the order they finished.
    pub outcomes: Vec<(String, Outcome)>,
    /// Steps that changed or would change, with reasons.
    pub planned: Vec<Planned>,
    /// API-free skips (for `plan` to list as unchanged).
    pub fresh: Vec<String>,
    /// Failed steps' `help:` lines (step → next command), where the error says one.
    #[serde(skip)]
    pub help: BTreeMap<String, String>,
    /// Set when a step failed for a reason no step can succeed with (AWS could
    /// not be asked at all: no credentials, a region that does not resolve …):
    /// the run's problem, not the step's; with the first step that failed that
    /// way (later ones refer to it instead of repeating it). Boxed: the report
    /// travels in `RunnerError`.
    #[serde(skip)]
    pub blocked: Option<Box<(super::Blocker, String)>>,
}

impl RunReport {
    /// Records a failed step's help and says how its error is reported: in full,
    /// except that a second step blocked for the same reason points at the first one.
    fn failure_text(&mut self, id: &str, e: &anyhow::Error, f: super::Failure) -> String {
        if let Some(h) = f.help {
            self.help.insert(id.to_string(), h);
        }
        let Some(blocker) = f.blocker else { return error_text(e) };
        match self.blocked.as_deref() {
            Some((first_blocker, first)) if first_blocker.key == blocker.key => format!("not done: {}, for the reason {first} gives", blocker.what),
            Some(_) => error_text(e),
            None => {
                self.blocked = Some(Box::new((blocker, id.to_string())));
                error_text(e)
            }
        }
    }

    /// What blocked the run, when a step failed for a reason no step can succeed with.
    pub fn blocked_by(&self) -> Option<super::Blocker> {
        self.blocked.as_deref().map(|(b, _)| *b)
    }
}

impl RunReport {
    pub fn failed(&self) -> Vec<&(String, Outcome)> {
        self.outcomes.iter().filter(|(_, o)| !o.ok()).collect()
    }
    pub fn changes(&self) -> bool {
        !self.planned.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("step graph: {0}")]
    Graph(String),
    #[error("saving state")]
    Persist(#[source] anyhow::Error),
    #[error("interrupted; the state file records where it stopped")]
    Cancelled { report: RunReport },
}

/// Where state goes after every transition.
pub trait Persist: Send + Sync {
    fn save<'a>(&'a self, state: &'a mut State) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// Value given to dependents for outputs that only exist after a planned apply.
pub const KNOWN_AFTER_APPLY: &str = "(known after apply)";

pub struct Runner<'a> {
    pub steps: Vec<&'a dyn Step>,
    pub mode: Mode,
    pub refresh: bool,
    pub concurrency: usize,
    /// Approve destructive changes (`--yes`).
    pub approve: bool,
    pub events: Events<'a>,
    /// What a step's error means (help line, blocker, "already exists").
    pub classify: super::Classify,
}

/// What a step wants, computed once when it is scheduled.
struct Desired {
    upstream: BTreeMap<String, Value>,
    composed: Value,
    fingerprint: String,
}

enum Phase {
    Observed { id: String, why: Vec<Why>, result: anyhow::Result<(Value, Change)>, started: Instant, previous: Option<Value>, desired: Desired },
    Applied { id: String, result: anyhow::Result<Value>, action: Action, started: Instant, desired: Desired },
}

fn blank_record(kind: &str, status: StepStatus) -> StepRecord {
    StepRecord {
        kind: kind.to_string(),
        fingerprint: String::new(),
        status,
        inputs: Value::Null,
        outputs: Value::Null,
        error: None,
        started_at: Some(now()),
        finished_at: None,
    }
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn error_text(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

impl<'a> Runner<'a> {
    fn check_graph(&self) -> Result<BTreeMap<String, &'a dyn Step>, RunnerError> {
        let mut by_id = BTreeMap::new();
        for s in &self.steps {
            if by_id.insert(s.id(), *s).is_some() {
                return Err(RunnerError::Graph(format!("step {} is defined twice", s.id())));
            }
        }
        for s in &self.steps {
            for d in s.deps() {
                if !by_id.contains_key(&d) {
                    return Err(RunnerError::Graph(format!("step {} depends on unknown step {d}", s.id())));
                }
            }
        }
        // Cycle check: repeatedly remove steps whose deps are all removed.
        let mut left: BTreeSet<String> = by_id.keys().cloned().collect();
        loop {
            let ready: Vec<String> =
                left.iter().filter(|id| by_id[*id].deps().iter().all(|d| !left.contains(d))).cloned().collect();
            if ready.is_empty() {
                break;
            }
            for r in ready {
                left.remove(&r);
            }
        }
        if !left.is_empty() {
            return Err(RunnerError::Graph(format!("dependency cycle among: {}", left.into_iter().collect::<Vec<_>>().join(", "))));
        }
        Ok(by_id)
    }

    /// The fingerprint input: the step's own inputs plus its dependencies' outputs.
    fn composed(step: &dyn Step, upstream: &BTreeMap<String, Value>) -> Value {
        let up: serde_json::Map<String, Value> =
            step.deps().into_iter().map(|d| (d.clone(), upstream.get(&d).cloned().unwrap_or(Value::Null))).collect();
        json!({"inputs": step.inputs(), "upstream": Value::Object(up)})
    }

    fn reasons(record: Option<&StepRecord>, composed: &Value, fp: &str, refresh: bool) -> Vec<Why> {
        let Some(r) = record else { return vec![Why::NotCreated] };
        match r.status {
            StepStatus::InProgress => return vec![Why::Interrupted],
            StepStatus::Failed => return vec![Why::PreviousAttemptFailed { error: r.error.clone().unwrap_or_default() }],
            StepStatus::Done => {}
        }
        if r.fingerprint == fp {
            return if refresh { vec![Why::Refresh] } else { vec![] };
        }
        let mut out = Vec::new();
        let mut upstream_seen = BTreeSet::new();
        for FieldChange { field, old, new } in field_changes("", &r.inputs, composed) {
            if let Some(rest) = field.strip_prefix("upstream.") {
                let step = rest.split('.').next().unwrap_or(rest).to_string();
                if upstream_seen.insert(step.clone()) {
                    out.push(Why::UpstreamChanged { step });
                }
            } else {
                let field = field.strip_prefix("inputs.").unwrap_or(&field).to_string();
                out.push(Why::InputsChanged { field, old, new });
            }
        }
        if out.is_empty() {
            // Same inputs, different fingerprint: the step's schema version moved.
            out.push(Why::InputsChanged { field: "(schema version)".into(), old: Value::Null, new: Value::Null });
        }
        out
    }

    /// Runs the graph against `state`, saving through `persist` after every
    /// transition. `cancel` resolving (Ctrl-C) stops the run cleanly.
    pub async fn run(
        &self,
        state: &mut State,
        persist: &dyn Persist,
        cancel: Pin<&mut (dyn Future<Output = ()> + Send)>,
    ) -> Result<RunReport, RunnerError> {
        let by_id = self.check_graph()?;
        let order: Vec<String> = self.steps.iter().map(|s| s.id()).collect();
        let mut pending: Vec<String> = order.clone();
        let mut outputs: BTreeMap<String, Value> = BTreeMap::new();
        let mut finished: BTreeMap<String, Outcome> = BTreeMap::new();
        let mut report = RunReport::default();
        let mut running: FuturesUnordered<BoxFuture<'_, Phase>> = FuturesUnordered::new();
        let mut in_flight: BTreeSet<String> = BTreeSet::new();
        let mut cancel = cancel;
        let limit = self.concurrency.max(1);

        let finish = |id: &str, o: Outcome, started: Option<Instant>, report: &mut RunReport, finished: &mut BTreeMap<String, Outcome>| {
            (self.events)(Event::Finished {
                step: id.to_string(),
                outcome: o.clone(),
                elapsed_ms: started.map(|s| s.elapsed().as_millis()).unwrap_or(0),
            });
            report.outcomes.push((id.to_string(), o.clone()));
            finished.insert(id.to_string(), o);
        };

        loop {
            // Schedule everything that is ready, in declaration order.
            let mut i = 0;
            while i < pending.len() {
                let id = pending[i].clone();
                let step = by_id[&id];
                let deps = step.deps();
                if let Some(bad) = deps.iter().find(|d| finished.get(*d).is_some_and(|o| !o.ok())) {
                    pending.remove(i);
                    finish(&id, Outcome::Blocked { by: bad.clone() }, None, &mut report, &mut finished);
                    continue;
                }
                if !deps.iter().all(|d| finished.contains_key(d)) {
                    i += 1;
                    continue;
                }
                let upstream: BTreeMap<String, Value> =
                    deps.iter().map(|d| (d.clone(), outputs.get(d).cloned().unwrap_or(Value::Null))).collect();
                let composed = Self::composed(step, &upstream);
                let fp = fingerprint(step.kind(), step.schema_version(), &composed);
                let record = state.steps.get(&id);
                let mut why = Self::reasons(record, &composed, &fp, self.refresh);
                if why.is_empty() && step.always_observe() {
                    why = vec![Why::Lookup];
                }
                if why.is_empty() {
                    // Fresh: no API call at all.
                    pending.remove(i);
                    outputs.insert(id.clone(), record.map(|r| r.outputs.clone()).unwrap_or(Value::Null));
                    report.fresh.push(id.clone());
                    finish(&id, Outcome::Fresh, None, &mut report, &mut finished);
                    continue;
                }
                if in_flight.len() >= limit {
                    break;
                }
                pending.remove(i);
                in_flight.insert(id.clone());
                (self.events)(Event::Started { step: id.clone(), why: why.clone() });
                let events = self.events;
                let started = Instant::now();
                let previous = record.filter(|r| r.status == StepStatus::Done).map(|r| r.outputs.clone());
                let desired = Desired { upstream, composed, fingerprint: fp };
                running.push(Box::pin(async move {
                    let cx = StepCx::new(&id, &desired.upstream, previous.as_ref(), events);
                    let result = match step.observe(&cx).await {
                        Ok(obs) => {
                            let change = step.diff(&obs, &cx);
                            Ok((obs, change))
                        }
                        Err(e) => Err(e),
                    };
                    Phase::Observed { id, why, result, started, previous, desired }
                }));
            }

            if running.is_empty() {
                break;
            }

            let phase = tokio::select! {
                p = running.next() => p.expect("non-empty"),
                _ = cancel.as_mut() => {
                    drop(running);
                    persist.save(state).await.map_err(RunnerError::Persist)?;
                    return Err(RunnerError::Cancelled { report });
                }
            };

            match phase {
                Phase::Observed { id, why, result, started, previous, desired } => {
                    let step = by_id[&id];
                    let (observed, change) = match result {
                        Ok(x) => x,
                        Err(e) => {
                            in_flight.remove(&id);
                            let shown = report.failure_text(&id, &e, (self.classify)(&e));
                            if self.mode == Mode::Apply {
                                // Recorded so `status` shows it and the next run says why it runs.
                                let rec = state.steps.entry(id.clone()).or_insert_with(|| blank_record(step.kind(), StepStatus::Failed));
                                rec.status = StepStatus::Failed;
                                rec.error = Some(error_text(&e));
                                rec.finished_at = Some(now());
                                persist.save(state).await.map_err(RunnerError::Persist)?;
                            }
                            finish(&id, Outcome::Failed { error: shown }, Some(started), &mut report, &mut finished);
                            continue;
                        }
                    };
                    let fp = desired.fingerprint.clone();
                    let mut why = why;
                    if change.action != Action::None && (why == [Why::Refresh] || why == [Why::Lookup]) {
                        why = vec![Why::Drifted { summary: change.summary.clone() }];
                    }
                    if change.action == Action::None {
                        // Exists as wanted (maybe created by an interrupted run): record it.
                        in_flight.remove(&id);
                        let out = step.outputs_from(&observed);
                        outputs.insert(id.clone(), out.clone());
                        let unchanged = state
                            .steps
                            .get(&id)
                            .is_some_and(|r| r.status == StepStatus::Done && r.fingerprint == fp && r.outputs == out);
                        if self.mode == Mode::Apply && !unchanged {
                            let prev_started = state.steps.get(&id).and_then(|r| r.started_at.clone());
                            state.steps.insert(
                                id.clone(),
                                StepRecord {
                                    kind: step.kind().to_string(),
                                    fingerprint: fp,
                                    status: StepStatus::Done,
                                    inputs: desired.composed,
                                    outputs: out,
                                    error: None,
                                    started_at: prev_started.or_else(|| Some(now())),
                                    finished_at: Some(now()),
                                },
                            );
                            persist.save(state).await.map_err(RunnerError::Persist)?;
                        }
                        finish(&id, Outcome::UpToDate, Some(started), &mut report, &mut finished);
                        continue;
                    }
                    report.planned.push(Planned { step: id.clone(), kind: step.kind().to_string(), why, change: change.clone() });
                    if self.mode == Mode::Plan {
                        in_flight.remove(&id);
                        outputs.insert(id.clone(), Value::String(KNOWN_AFTER_APPLY.into()));
                        finish(&id, Outcome::WouldChange { action: change.action }, Some(started), &mut report, &mut finished);
                        continue;
                    }
                    if change.destructive && !self.approve {
                        in_flight.remove(&id);
                        finish(&id, Outcome::NeedsApproval { summary: change.summary.clone() }, Some(started), &mut report, &mut finished);
                        continue;
                    }
                    let resumed = state.steps.get(&id).is_some_and(|r| r.status == StepStatus::InProgress);
                    // Persist in_progress before touching anything.
                    let rec = state.steps.entry(id.clone()).or_insert_with(|| blank_record(step.kind(), StepStatus::InProgress));
                    rec.status = StepStatus::InProgress;
                    rec.kind = step.kind().to_string();
                    rec.error = None;
                    rec.started_at = Some(now());
                    rec.finished_at = None;
                    persist.save(state).await.map_err(RunnerError::Persist)?;
                    let events = self.events;
                    let action = change.action;
                    let approve = self.approve;
                    let classify = self.classify;
                    running.push(Box::pin(async move {
                        let cx = StepCx::new(&id, &desired.upstream, previous.as_ref(), events).resumed(resumed);
                        let mut result = step.apply(&cx, &observed, &change).await;
                        // A create AWS carried out whose answer was lost is retried by the SDK and
                        // refused as "already exists": look again and go on from what is there, as
                        // the next run would (a few times: a step may make several things).
                        for _ in 0..3 {
                            if !result.as_ref().is_err_and(|e| classify(e).already_exists) {
                                break;
                            }
                            let Ok(now) = step.observe(&cx).await else { break };
                            let again = step.diff(&now, &cx);
                            if again.action == Action::None {
                                result = Ok(step.outputs_from(&now));
                            } else if !again.destructive || approve {
                                result = step.apply(&cx, &now, &again).await;
                            } else {
                                break;
                            }
                        }
                        Phase::Applied { id, result, action, started, desired }
                    }));
                }
                Phase::Applied { id, result, action, started, desired } => {
                    in_flight.remove(&id);
                    let rec = state.steps.get_mut(&id).expect("recorded in_progress before apply");
                    match result {
                        Ok(out) => {
                            rec.status = StepStatus::Done;
                            rec.fingerprint = desired.fingerprint;
                            rec.inputs = desired.composed;
                            rec.outputs = out.clone();
                            rec.finished_at = Some(now());
                            outputs.insert(id.clone(), out);
                            persist.save(state).await.map_err(RunnerError::Persist)?;
                            finish(&id, Outcome::Applied { action }, Some(started), &mut report, &mut finished);
                        }
                        Err(e) => {
                            let shown = report.failure_text(&id, &e, (self.classify)(&e));
                            rec.status = StepStatus::Failed;
                            rec.error = Some(error_text(&e));
                            rec.finished_at = Some(now());
                            persist.save(state).await.map_err(RunnerError::Persist)?;
                            finish(&id, Outcome::Failed { error: shown }, Some(started), &mut report, &mut finished);
                        }
                    }
                }
            }
        }
        // A Ctrl-C that reached a subprocess first (helm runs in karpctl's process group, so a
        // terminal's SIGINT stops it too) fails that step and can end the walk before the cancel
        // branch is polled: the run still ends as interrupted, not as an ordinary failure.
        if futures::FutureExt::now_or_never(cancel.as_mut()).is_some() {
            persist.save(state).await.map_err(RunnerError::Persist)?;
            return Err(RunnerError::Cancelled { report });
        }
        // Declaration order (dependencies first), not completion order: the plan reads top-down.
        let order: BTreeMap<String, usize> = self.steps.iter().enumerate().map(|(i, s)| (s.id(), i)).collect();
        report.planned.sort_by_key(|p| order.get(&p.step).copied().unwrap_or(usize::MAX));
        Ok(report)
    }
}

impl Persist for crate::state::Backend {
    fn save<'a>(&'a self, state: &'a mut State) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move { crate::state::Backend::save(self, state).await.map_err(anyhow::Error::from) })
    }
}
