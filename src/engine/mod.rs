/*!
The step engine behind `up`, `plan` and `rollback`: a graph of steps, each with
`observe`, a pure `diff` and `apply`, walked with bounded concurrency and
recorded in the state file after every transition. A step whose recorded
fingerprint matches its desired state is skipped without any API call.
*/

#[doc(hidden)]
pub mod fake;
pub mod fingerprint;
pub mod runner;
pub mod typed;

use std::collections::BTreeMap;
use std::fmt;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

pub use crate::json::FieldChange;
pub use runner::{Mode, Outcome, Planned, RunReport, Runner, RunnerError};
pub use typed::{Typed, TypedStep, Upstream};

/// What the engine needs to know of a step's error, told by the code that
/// understands the error (the runner's [`Classify`], `crate::help::classify` in
/// karpctl): the engine itself knows no domain error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failure {
    /// The `help:` line: the exact next command, when the error's kind says one.
    /// Errors that carry their own `help:` in the text give none.
    pub help: Option<String>,
    /// Set when the failure is the run's, not the step's (AWS could not be asked
    /// at all): later steps failing for the same reason point at the first one.
    pub blocker: Option<Blocker>,
    /// A create refused because the thing exists: after a retried create, usually
    /// what the first attempt made (its answer was lost), so the runner looks again.
    pub already_exists: bool,
}

/// A reason no step of the run can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocker {
    /// Tells two blockers apart (`no-credentials`, `no-region` …).
    pub key: &'static str,
    /// What it stopped, in words: "AWS could not be asked".
    pub what: &'static str,
}

/// Classifies a step's error for the runner.
pub type Classify = fn(&anyhow::Error) -> Failure;

/// A [`Classify`] that knows nothing: no help, no blockers, no second look.
pub fn unclassified(_: &anyhow::Error) -> Failure {
    Failure::default()
}

/// What a step would do to reach its desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    None,
    Create,
    Update,
    /// Delete and recreate (e.g. a stack in ROLLBACK_COMPLETE, an AMI move).
    Replace,
    Delete,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::None => "no change",
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
        })
    }
}

/// The result of a step's `diff`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Change {
    pub action: Action,
    /// One line for humans: "create stack Karpenter-demo".
    pub summary: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// Replaces or deletes something users depend on (needs --yes).
    pub destructive: bool,
}

impl Change {
    pub fn none() -> Change {
        Change { action: Action::None, summary: "up to date".into(), fields: vec![], destructive: false }
    }
    pub fn new(action: Action, summary: impl Into<String>) -> Change {
        Change { action, summary: summary.into(), fields: vec![], destructive: false }
    }
    pub fn with_fields(mut self, fields: Vec<FieldChange>) -> Change {
        self.fields = fields;
        self
    }
    pub fn destructive(mut self) -> Change {
        self.destructive = true;
        self
    }
}

/// Why a step runs (or would run). Shown by `plan`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Why {
    /// No record: the step never completed here.
    NotCreated,
    /// A desired-state field differs from the recorded one.
    InputsChanged { field: String, old: Value, new: Value },
    /// An upstream step's outputs changed (or will change).
    UpstreamChanged { step: String },
    /// The real resource no longer matches the record.
    Drifted { summary: String },
    PreviousAttemptFailed { error: String },
    /// A previous run stopped in the middle of this step.
    Interrupted,
    /// `--refresh`: observed although recorded as done.
    Refresh,
    /// A lookup step, observed on every run.
    Lookup,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::NotCreated => f.write_str("not created yet"),
            Why::InputsChanged { field, old, new } => write!(f, "{field} changed: {} → {}", short(old), short(new)),
            Why::UpstreamChanged { step } => write!(f, "upstream step {step} changed"),
            Why::Drifted { summary } => write!(f, "drift detected: {summary}"),
            Why::PreviousAttemptFailed { error } => write!(f, "previous attempt failed: {error}"),
            Why::Interrupted => f.write_str("previous run was interrupted in this step"),
            Why::Refresh => f.write_str("observed because of --refresh"),
            Why::Lookup => f.write_str("looked up on every run"),
        }
    }
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::Null => "(none)".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 48 {
        format!("{}…", s.chars().take(47).collect::<String>())
    } else {
        s
    }
}

/// Progress and lifecycle events, rendered by `ui`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    Started { step: String, why: Vec<Why> },
    Progress { step: String, message: String },
    Finished { step: String, outcome: Outcome, elapsed_ms: u128 },
}

/// Sink for events; must be cheap and never block.
pub type Events<'a> = &'a (dyn Fn(Event) + Sync);

/// What a running step can see: its dependencies' outputs, and a progress line.
pub struct StepCx<'a> {
    pub step: &'a str,
    pub upstream: &'a BTreeMap<String, Value>,
    /// This step's outputs from its last completed run, if any.
    pub previous: Option<&'a Value>,
    /// This step's last attempt was cut off while it applied (killed, or the run
    /// interrupted): what it was doing may be half done, and only this step knows how
    /// to finish or undo it.
    pub resumed: bool,
    events: Events<'a>,
}

impl<'a> StepCx<'a> {
    pub fn new(step: &'a str, upstream: &'a BTreeMap<String, Value>, previous: Option<&'a Value>, events: Events<'a>) -> Self {
        StepCx { step, upstream, previous, resumed: false, events }
    }
    pub fn resumed(mut self, resumed: bool) -> Self {
        self.resumed = resumed;
        self
    }
    /// Outputs of a dependency (as recorded or just produced).
    pub fn output(&self, step: &str) -> Option<&Value> {
        self.upstream.get(step)
    }
    /// Updates the step's progress line ("waiting for stack: CREATE_IN_PROGRESS").
    pub fn progress(&self, message: impl Into<String>) {
        (self.events)(Event::Progress { step: self.step.to_string(), message: message.into() });
    }
}

/// Which system a step talks to; `up --target aws|kubernetes` selects by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    Aws,
    Kubernetes,
}

/// A unit of provisioning. The value itself is the desired state.
pub trait Step: Send + Sync {
    /// Unique id, `kind/name`, e.g. `cfn-stack/Karpenter-demo`.
    fn id(&self) -> String;
    fn kind(&self) -> &'static str;
    /// Bumped when the meaning of `inputs` changes, so records re-run.
    fn schema_version(&self) -> u32 {
        1
    }
    fn deps(&self) -> Vec<String> {
        Vec::new()
    }
    fn layer(&self) -> Layer {
        Layer::Aws
    }
    /// Lookups whose answer changes outside karpctl (e.g. "latest AMI") observe
    /// on every run instead of trusting a fresh record.
    fn always_observe(&self) -> bool {
        false
    }
    /// The desired state as JSON (no secrets): the fingerprint's input.
    fn inputs(&self) -> Value;
    /// Reads what exists. Given the dependencies' outputs.
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>>;
    /// Pure: observed state → what must change.
    fn diff(&self, observed: &Value, cx: &StepCx<'_>) -> Change;
    /// Makes the change; returns the outputs later steps need.
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, observed: &'a Value, change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>>;
    /// Outputs when nothing had to change, from the observed state.
    fn outputs_from(&self, observed: &Value) -> Value {
        observed.clone()
    }
}
