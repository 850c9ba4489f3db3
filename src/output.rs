/*!
The documents karpctl prints with `-o json` or `-o yaml`. Each command that
reports data builds one of these typed values, so its shape is stable, every
document says what it is (`apiVersion`, `kind`), and `karpctl schema <document>`
prints a JSON Schema generated from the same types that are serialized: the
schema cannot drift from the output. docs/output.md describes the fields.
*/

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::cli::{OutputFormat, SchemaDocument};
use crate::config::Diagnostic;
use crate::engine::{Action, Outcome, Planned, RunReport};
use crate::render::DocKind;
use crate::state::{LockInfo, State};

/// The `apiVersion` of every output document.
pub const API_VERSION: &str = "karpctl.io/v1alpha1";

/// Always `karpctl.io/v1alpha1`; a change of shape that breaks readers bumps it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
pub enum ApiVersion {
    #[default]
    #[serde(rename = "karpctl.io/v1alpha1")]
    V1Alpha1,
}

macro_rules! kinds {
    ($($(#[$m:meta])* $name:ident { $($variant:ident),+ })+) => {$(
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
        pub enum $name { $($variant),+ }
    )+};
}

kinds! {
    /// `Plan` (plan), `Apply` (up), `RollbackPlan` (rollback --dry-run, plan --rollback), `Rollback`.
    RunKind { Plan, Apply, RollbackPlan, Rollback }
    StatusKind { Status }
    AmisKind { Amis }
    StateKind { State }
    StateChangeKind { StateChange }
    DoctorKind { Doctor }
    RenderKind { Render }
    ValidateKind { Validation }
    InitKind { Init }
    VerifyKind { Verify }
    ErrorKind { Error }
}

/// How many steps add, change and destroy something (a replacement counts as
/// one add and one destroy, as in terraform).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub destroy: usize,
    /// Steps recorded as done and unchanged, or observed with nothing to do.
    pub unchanged: usize,
    /// Steps that failed, were skipped because a dependency failed, or need `--yes`.
    pub not_done: usize,
}

impl Summary {
    pub fn of(r: &RunReport) -> Summary {
        let mut s = Summary::default();
        for p in &r.planned {
            match p.change.action {
                Action::Create => s.add += 1,
                Action::Update => s.change += 1,
                Action::Delete => s.destroy += 1,
                Action::Replace => {
                    s.add += 1;
                    s.destroy += 1
                }
                Action::None => {}
            }
        }
        s.unchanged = r.fresh.len() + r.outcomes.iter().filter(|(_, o)| *o == Outcome::UpToDate).count();
        s.not_done = r.failed().len();
        s
    }
}

/// One step's result in this run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepResult {
    pub step: String,
    pub result: Outcome,
    /// For a step that failed: the next command for what went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

/// Resources a rollback step removed or kept.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepResources {
    pub step: String,
    pub resources: Vec<String>,
}

/// `plan`, `up`, `rollback` and `rollback --dry-run`: one walk of a step graph.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Run {
    pub api_version: ApiVersion,
    pub kind: RunKind,
    /// Whether changes were made (`up`, `rollback`) or only planned.
    pub applied: bool,
    /// Whether any step changes (or would change) something.
    pub changes: bool,
    /// Whether this walks the rollback graph.
    pub rollback: bool,
    /// Number of steps in the walk.
    pub steps: usize,
    pub summary: Summary,
    /// Steps skipped without any API call: recorded done with the same inputs.
    pub unchanged: Vec<String>,
    /// Steps that change (or would), in dependency order, with why and the field-level diff.
    pub planned: Vec<Planned>,
    /// Every step's result, in the order they finished.
    pub outcomes: Vec<StepResult>,
    /// Rollback only: every step id in the order the rollback runs them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<Vec<String>>,
    /// Rollback only: what each step removed in this run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<StepResources>>,
    /// Rollback only: what was left on purpose, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<Vec<StepResources>>,
    /// Rollback only: `up` records dropped from the state so a later `up` recreates them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forgotten_records: Option<Vec<String>>,
    /// `up --staged` only: the rollout's stages, one node class each, in order
    /// (the rest of the document describes the last walk that ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<Stage>>,
}

/// One stage of a staged AMI rollout: a node class's pin move and its check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stage {
    pub class: String,
    /// The recorded pin before the stage.
    pub from: Option<String>,
    pub to: String,
    pub result: StageResult,
    /// Why the stage failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StageResult {
    /// Moved and checked.
    Passed,
    /// The move or the check failed: the rollout stopped here.
    Failed,
    /// Not reached (an earlier stage failed), or planned only.
    NotRun,
}

impl Run {
    pub fn new(kind: RunKind, r: &RunReport, steps: usize) -> Run {
        Run {
            api_version: ApiVersion::V1Alpha1,
            kind,
            applied: matches!(kind, RunKind::Apply | RunKind::Rollback),
            changes: r.changes(),
            rollback: matches!(kind, RunKind::Rollback | RunKind::RollbackPlan),
            steps,
            summary: Summary::of(r),
            unchanged: r.fresh.clone(),
            planned: r.planned.clone(),
            outcomes: r.outcomes.iter().map(|(s, o)| StepResult { step: s.clone(), result: o.clone(), help: r.help.get(s).cloned() }).collect(),
            sequence: None,
            removed: None,
            kept: None,
            forgotten_records: None,
            stages: None,
        }
    }
}

/// `status`: the state file step by step, and the live setup.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Status {
    pub api_version: ApiVersion,
    pub kind: StatusKind,
    pub cluster: String,
    /// Where the state is kept (`local <path>` or `s3://bucket/key`).
    pub backend: String,
    /// The state file, or null before the first `up`.
    pub state: Option<State>,
    /// Who holds the state lock, or null when it is free.
    pub lock: Option<LockInfo>,
    /// The cluster as it is now: `controller`, `crds`, `nodeClasses`, `nodePools`,
    /// `devicePlugin`; or `{"error": "…"}` when it could not be read.
    pub live: Value,
}

/// `state show`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateDoc {
    pub api_version: ApiVersion,
    pub kind: StateKind,
    pub backend: String,
    pub lock: Option<LockInfo>,
    pub state: State,
}

/// What a state repair did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StateAction {
    Unlock,
    Push,
}

/// `state unlock` and `state push`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateChange {
    pub api_version: ApiVersion,
    pub kind: StateChangeKind,
    pub action: StateAction,
    pub backend: String,
    /// `unlock`: the lock released.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_id: Option<String>,
    /// `push`: the file pushed and the serial the state now has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
}

/// One AMI SSM publishes for a class.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AmiImage {
    pub arch: String,
    pub image_id: String,
    pub release: String,
    /// The SSM parameter it was read from.
    pub parameter: String,
}

/// One node class in `amis`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AmiClass {
    pub class: String,
    /// `al2023`, `bottlerocket` or `al2`.
    pub family: String,
    /// `standard`, `nvidia` or `neuron`.
    pub variant: String,
    /// `variant/arch` pairs the class needs AMIs for.
    pub needs: Vec<String>,
    /// The class has its own `amiSelector`; karpctl does not pin it.
    pub explicit_selector: bool,
    /// The pin recorded in the state, or null.
    pub pinned: Option<String>,
    /// What a pin would be now.
    pub latest: Option<String>,
    pub images: Vec<AmiImage>,
}

/// `amis`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Amis {
    pub api_version: ApiVersion,
    pub kind: AmisKind,
    pub kubernetes_version: String,
    pub classes: Vec<AmiClass>,
}

/// `doctor`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Doctor {
    pub api_version: ApiVersion,
    pub kind: DoctorKind,
    /// No check failed.
    pub ok: bool,
    pub failed: usize,
    pub checks: Vec<Check>,
}

/// One rendered document.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rendered {
    /// Where `render --out` puts it.
    pub path: String,
    pub kind: DocKind,
    pub content: Value,
}

/// `render`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Render {
    pub api_version: ApiVersion,
    pub kind: RenderKind,
    /// The documents (empty with `--out`: they went to files).
    pub documents: Vec<Rendered>,
    /// `--out`: the directory written and the files in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out: Option<PathBuf>,
    pub files: Vec<String>,
    /// Things to know about the output (AMIs not pinned, …).
    pub notes: Vec<String>,
}

/// `validate` (an invalid config is an `Error` document instead, exit 3).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Validation {
    pub api_version: ApiVersion,
    pub kind: ValidateKind,
    pub valid: bool,
    pub file: PathBuf,
    pub node_classes: usize,
    pub node_pools: usize,
    pub karpenter_version: String,
    pub warnings: Vec<Diagnostic>,
}

/// A preset `init` can write.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PresetInfo {
    pub name: String,
    pub description: String,
}

/// `init` (not with `--out -`, which prints the config itself).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Init {
    pub api_version: ApiVersion,
    pub kind: InitKind,
    /// The file written, or null with `--list`.
    pub file: Option<PathBuf>,
    pub preset: Option<String>,
    pub cluster: Option<String>,
    /// `--list`: every preset.
    pub presets: Vec<PresetInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerifyResult {
    Passed,
    Failed,
}

/// Why a verify failed, from the cluster.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Diagnosis {
    /// The test pod's events, `Reason: message`.
    pub pod_events: Vec<String>,
    /// The NodePool's readiness (`Ready` or its failing conditions).
    pub node_pool: String,
    /// Where to look next.
    pub hints: Vec<String>,
}

/// `verify`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Verify {
    pub api_version: ApiVersion,
    pub kind: VerifyKind,
    pub result: VerifyResult,
    pub pool: String,
    /// The test pod's name (namespace karpctl-verify).
    pub pod: String,
    /// Passed: the node that took the pod and when (seconds after the pod was created).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_after_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running_after_seconds: Option<f64>,
    /// Failed: what went wrong, and the cluster's view of why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnosis: Option<Diagnosis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_seconds: Option<f64>,
    /// The test pod (and the namespace, when verify made it) were deleted.
    pub cleaned_up: bool,
}

/// The error of a failed command.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// `invalid-config` (exit 3, with `diagnostics`) or `error` (with `message` and `chain`).
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The error and each of its causes, outermost first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chain: Option<Vec<String>>,
    /// `invalid-config`: the config file and every finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Vec<Diagnostic>>,
    /// The exact next command, when the situation is recoverable.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub help: Vec<String>,
    /// `invalid-config`: findings beyond the first 50, counted but not listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub omitted: Option<usize>,
}

/// Any command that fails under `-o json|yaml` prints this instead of its document.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErrorDoc {
    pub api_version: ApiVersion,
    pub kind: ErrorKind,
    pub error: ErrorBody,
}

/// `doc` as `-o json` (pretty, one document) or `-o yaml` shows it.
pub fn encode<T: Serialize>(doc: &T, format: OutputFormat) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Yaml => serde_yaml::to_string(doc)?,
        _ => format!("{}\n", serde_json::to_string_pretty(doc)?),
    })
}

/// The schema of what `T` serializes to (fields skipped when empty are optional).
fn schema_for<T: JsonSchema>() -> schemars::Schema {
    schemars::generate::SchemaSettings::draft2020_12().for_serialize().into_generator().into_root_schema_for::<T>()
}

/// The JSON Schema of one output document (or of the config file).
pub fn schema(doc: SchemaDocument) -> Value {
    let s = match doc {
        SchemaDocument::Config => return crate::config::schema::json_schema(),
        SchemaDocument::Plan | SchemaDocument::Up | SchemaDocument::Rollback => schema_for::<Run>(),
        SchemaDocument::Status => schema_for::<Status>(),
        SchemaDocument::State => schema_for::<StateDoc>(),
        SchemaDocument::StateChange => schema_for::<StateChange>(),
        SchemaDocument::Amis => schema_for::<Amis>(),
        SchemaDocument::Doctor => schema_for::<Doctor>(),
        SchemaDocument::Render => schema_for::<Render>(),
        SchemaDocument::Validate => schema_for::<Validation>(),
        SchemaDocument::Init => schema_for::<Init>(),
        SchemaDocument::Verify => schema_for::<Verify>(),
        SchemaDocument::Error => schema_for::<ErrorDoc>(),
    };
    serde_json::to_value(s).expect("a schema serializes")
}

/// How a preflight check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    Warn,
    Fail,
    Skip,
}

/// One preflight check as `doctor` (and `up` before its first change) reports it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Check {
    pub name: &'static str,
    pub status: CheckStatus,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Why AWS could not be asked, when that is what failed.
    #[serde(skip)]
    pub access: Option<crate::aws::Access>,
}

