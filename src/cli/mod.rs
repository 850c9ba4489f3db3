/*!
The command line, as clap derive structs: one definition for parsing, `--help`
and shell completions. Pure: no clients, no I/O; `main` hands the parsed values
to one `ops` function.
*/

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::render::DocKind;

#[derive(Debug, Parser)]
#[command(
    name = "karpctl",
    version,
    about = "Take an EKS cluster to a working, verified Karpenter setup and back again",
    long_about = "karpctl provisions Karpenter on an existing EKS cluster from one config file: discovery tags, \
the CloudFormation stack, controller identity, node access, pinned AMIs, CRDs, the controller, the NVIDIA \
device plugin, node classes and pools. Every step is idempotent and recorded in a state file.",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes; `--help` lists them under their own heading,
/// after the subcommand's own.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Config file.
    #[arg(short = 'c', long, global = true, default_value = "karpctl.yaml", env = "KARPCTL_CONFIG")]
    pub config: PathBuf,
    /// AWS region (overrides the config and the environment).
    #[arg(long, global = true)]
    pub region: Option<String>,
    /// AWS shared-config profile.
    #[arg(long, global = true, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Send AWS API calls to this endpoint (emulators, VPC endpoints).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Use this kubeconfig instead of a token minted from the EKS cluster.
    #[arg(long, global = true, env = "KARPCTL_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long, global = true, env = "KARPCTL_CONTEXT")]
    pub context: Option<String>,
    /// Output format: text for people, or one JSON/YAML document (see `karpctl schema`).
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Colour: auto (a terminal, and NO_COLOR unset), always, or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
    /// Approve destructive or replacing changes without asking.
    #[arg(long, global = true)]
    pub yes: bool,
    /// Seconds to wait for another run's state lock.
    #[arg(long, global = true, default_value_t = 60, value_name = "SECONDS")]
    pub lock_timeout: u64,
    /// Every step event and progress message as a timestamped line on stderr,
    /// unthrottled (instead of spinners, or a line only when a wait says something new).
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl Global {
    /// Where AWS calls go (`--region`, `--profile`, `--endpoint-url`).
    pub fn aws(&self) -> crate::aws::Settings {
        crate::aws::Settings { region: self.region.clone(), profile: self.profile.clone(), endpoint_url: self.endpoint_url.clone() }
    }

    /// How to reach the cluster (`--kubeconfig`, `--context`).
    pub fn kube(&self) -> crate::kube::Settings {
        crate::kube::Settings { kubeconfig: self.kubeconfig.clone(), context: self.context.clone() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when the stream is a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour (also in pipes and CI logs).
    Always,
    /// Never colour.
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Yaml,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Provision or update Karpenter on the cluster (idempotent, resumable).
    Up(UpArgs),
    /// Show what `up` would change, step by step, and why.
    Plan(PlanArgs),
    /// Render manifests, Helm values and the CloudFormation template offline.
    Render(RenderArgs),
    /// Show the state file and the live Karpenter setup.
    Status,
    /// Provisioning test: schedule a pod on a pool, wait for a Karpenter node and the pod Running, clean up.
    Verify(VerifyArgs),
    /// Show each node class's pinned AMI next to the newest one SSM publishes.
    Amis(AmisArgs),
    /// Write a starter config from a preset.
    Init(InitArgs),
    /// Check the config file and report every problem.
    Validate,
    /// Run preflight checks against the cluster and account.
    Doctor,
    /// Return the cluster to managed nodegroups.
    Rollback(RollbackArgs),
    /// Inspect or repair the state file.
    #[command(subcommand)]
    State(StateCommand),
    /// Print the JSON Schema of the config file (for editors) or of an output document.
    Schema(SchemaArgs),
    /// Print shell completions.
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Change nothing: show what `up` would do and why (the same as `karpctl plan`, same exit codes).
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: exit 0 when nothing would change, 2 when something would, 1 on error.
    #[arg(long, requires = "dry_run")]
    pub detailed_exitcode: bool,
    /// Observe every step, even recorded ones, to find drift.
    #[arg(long)]
    pub refresh: bool,
    /// Move AMI pins to the newest AMIs (replaces nodes).
    #[arg(long)]
    pub update_amis: bool,
    /// Move AMI pins one node class at a time (with --update-amis, or after a
    /// Kubernetes version change), checking each class's nodes before the next:
    /// drifted nodes replaced, nodes Ready, no pod stuck Pending, a test pod.
    #[arg(long, conflicts_with = "targets")]
    pub staged: bool,
    /// Put these node classes back on the AMI pin they had before their last move.
    #[arg(long, value_delimiter = ',', value_name = "CLASS", conflicts_with_all = ["update_amis", "staged"])]
    pub revert_amis: Vec<String>,
    /// Delete node pools and classes no longer in the config.
    #[arg(long)]
    pub prune: bool,
    /// Do not run the preflight checks first.
    #[arg(long)]
    pub skip_preflight: bool,
    /// Take over fields another field manager owns on karpctl's objects instead of reporting the conflict.
    #[arg(long)]
    pub force_conflicts: bool,
    /// How long to wait for rollouts, readiness and deletions (e.g. 90s, 10m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub wait_timeout: std::time::Duration,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The node pool to test (default: the first in the config).
    #[arg(long)]
    pub pool: Option<String>,
    /// How long to wait for a node and the pod Running.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: std::time::Duration,
    /// Container image of the test pod (any image that starts; mirrors work).
    #[arg(long, default_value = "registry.k8s.io/pause:3.10")]
    pub image: String,
    /// Leave the test pod (and namespace) in place for inspection.
    #[arg(long)]
    pub keep: bool,
}

/// Limits a walk to part of the graph.
#[derive(Debug, Args, Clone, Default)]
pub struct TargetArgs {
    /// Only these steps and what they depend on: `aws`, `kubernetes`, a step id
    /// (`amis/pins`) or an id prefix (`helm-release/`). Repeatable.
    #[arg(long = "target", value_name = "STEP")]
    pub targets: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Exit 0 when nothing would change, 2 when something would, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Observe every step to find drift.
    #[arg(long)]
    pub refresh: bool,
    /// Plan a rollback instead of `up`.
    #[arg(long)]
    pub rollback: bool,
    /// With --rollback: plan `rollback --purge` (the stack and Karpenter's leftovers too).
    #[arg(long, requires = "rollback")]
    pub purge: bool,
    /// With --rollback: plan `rollback --delete-crds`.
    #[arg(long, requires = "rollback")]
    pub delete_crds: bool,
    #[command(flatten)]
    pub target: TargetArgs,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Write one file per object plus a kustomization.yaml into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Render only these kinds of documents.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<DocKind>,
    /// Pin a class's AMIs: CLASS=FAMILY@VERSION or CLASS=ami-1,ami-2 (repeatable); wins over the state's pins.
    #[arg(long = "ami", value_name = "CLASS=VALUE")]
    pub amis: Vec<String>,
    /// Use the AMI pins recorded in the state wherever it is kept (an S3 state needs AWS access);
    /// a local state file that exists is read without this flag.
    #[arg(long)]
    pub from_state: bool,
    /// AWS account id, for ARNs that need it (IRSA annotation).
    #[arg(long)]
    pub account_id: Option<String>,
    /// API server endpoint for the controller's settings.
    #[arg(long)]
    pub cluster_endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct AmisArgs {}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Preset to start from.
    #[arg(long, value_enum, default_value_t = Preset::Default)]
    pub preset: Preset,
    /// Cluster name to write into the config.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Where to write (`-` for standard output); default: the --config path.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
    /// List the presets and exit.
    #[arg(long)]
    pub list: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Preset {
    /// The official getting-started pool and class, plus a time-sliced GPU pool.
    Default,
    /// NVIDIA Dynamo: c7i CPU and g6 GPU pools at weight 100, BuildKit-ready.
    Dynamo,
    /// Dev environment: general, critical and scale-to-zero GPU pools.
    DevGpu,
    /// FalkorDB: a memory pool protected from disruption and a general pool.
    Falkordb,
    /// Platform: default, GPU, control-plane and Inferentia pools.
    Platform,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// Print the whole rollback sequence without changing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete the CloudFormation stack and sweep leftovers.
    #[arg(long)]
    pub purge: bool,
    /// Terminate instances that could not be drained, and release finalizers no controller runs.
    #[arg(long)]
    pub force: bool,
    /// Also delete the Karpenter CRDs (this deletes every NodeClaim left).
    #[arg(long)]
    pub delete_crds: bool,
    /// How long to wait for nodegroup nodes, drains and deletions (e.g. 90s, 10m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub wait_timeout: std::time::Duration,
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Show the state: every step's record, the backend and the lock.
    Show,
    /// Release a lock left by a crashed run.
    Unlock {
        /// Lock id printed by the run that holds it.
        id: String,
    },
    /// Copy the remote state to standard output.
    Pull,
    /// Replace the remote state with a local file.
    Push {
        /// The state file to push (e.g. the `.errored` copy a failed write left).
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print completions for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Which schema: the config file, or the document a command prints with -o json|yaml.
    #[arg(value_enum, default_value_t = SchemaDocument::Config)]
    pub document: SchemaDocument,
}

/// The documents `karpctl schema` describes (docs/output.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaDocument {
    /// The config file (karpctl.yaml).
    Config,
    /// `plan` and `plan --rollback` (kind Plan, RollbackPlan).
    Plan,
    /// `up` (kind Apply; the same shape as plan).
    Up,
    /// `rollback` and `rollback --dry-run` (kind Rollback, RollbackPlan; the same shape as plan).
    Rollback,
    /// `status`.
    Status,
    /// `state show`.
    State,
    /// `state unlock` and `state push`.
    StateChange,
    /// `amis`.
    Amis,
    /// `doctor`.
    Doctor,
    /// `render`.
    Render,
    /// `validate`.
    Validate,
    /// `init`.
    Init,
    /// `verify`.
    Verify,
    /// What any command prints instead of its document when it fails.
    Error,
}

/// Flags that delete or replace something, take over what another tool owns,
/// approve such changes or skip a safety check. A mistyped flag is never answered
/// with one of these ("a similar argument exists: '--prune'" for `--dryrun`):
/// the user meant something else often enough, and a suggestion gets pasted.
pub const DESTRUCTIVE_FLAGS: [&str; 10] =
    ["--prune", "--purge", "--force", "--force-conflicts", "--delete-crds", "--yes", "--update-amis", "--staged", "--revert-amis", "--skip-preflight"];

/// Parses the command line like `Cli::try_parse_from`, but a usage error never
/// suggests a flag in [`DESTRUCTIVE_FLAGS`]: such a suggestion is dropped, and the
/// closest safe flag of the same command is offered instead when one is close.
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    Cli::try_parse_from(&args).map_err(|e| safe_suggestions(e, &args))
}

/// [`parse_from`] with a command built once (`Cli::command()` with `build()`), for
/// callers that parse many command lines; returns clap's matches.
pub fn matches_from(cmd: &clap::Command, args: &[OsString]) -> Result<clap::ArgMatches, clap::Error> {
    cmd.clone().try_get_matches_from(args).map_err(|e| safe_suggestions(e, args))
}

fn mentions_destructive(text: &str) -> bool {
    text.split(|c: char| c.is_whitespace() || c == '\'' || c == '=' || c == '`')
        .any(|w| DESTRUCTIVE_FLAGS.contains(&w))
}

fn safe_suggestions(mut e: clap::Error, args: &[OsString]) -> clap::Error {
    use clap::error::{ContextKind, ContextValue};
    if e.kind() != clap::error::ErrorKind::UnknownArgument {
        return e;
    }
    if let Some(ContextValue::StyledStrs(tips)) = e.get(ContextKind::Suggested) {
        let kept: Vec<_> = tips.iter().filter(|t| !mentions_destructive(&t.to_string())).cloned().collect();
        if kept.len() != tips.len() {
            e.remove(ContextKind::Suggested);
            if !kept.is_empty() {
                e.insert(ContextKind::Suggested, ContextValue::StyledStrs(kept));
            }
        }
    }
    let suggested = match e.get(ContextKind::SuggestedArg) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    if suggested.as_deref().is_some_and(mentions_destructive) {
        e.remove(ContextKind::SuggestedArg);
        // clap writes the suggestion into the usage line too: the command's own usage instead.
        if e.get(ContextKind::Usage).is_some() {
            let usage = command_for(args).render_usage();
            e.insert(ContextKind::Usage, ContextValue::StyledStr(usage));
        }
        let typed = match e.get(ContextKind::InvalidArg) {
            Some(ContextValue::String(s)) => s.clone(),
            _ => String::new(),
        };
        if let Some(safe) = closest_safe_flag(&typed, args) {
            e.insert(ContextKind::SuggestedArg, ContextValue::String(safe));
        }
    }
    e
}

/// The subcommand the arguments name (the deepest one), with globals propagated.
fn command_for(args: &[OsString]) -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    for a in args.iter().skip(1) {
        let Some(a) = a.to_str() else { continue };
        match cmd.find_subcommand(a) {
            Some(sub) => {
                let sub = sub.clone();
                cmd = sub;
            }
            None => continue,
        }
    }
    cmd
}

/// The safe long flag of the command that `typed` most resembles, by the measure
/// clap itself uses (Jaro similarity above 0.7).
fn closest_safe_flag(typed: &str, args: &[OsString]) -> Option<String> {
    let name = typed.strip_prefix("--")?.split('=').next()?;
    let cmd = command_for(args);
    cmd.get_arguments()
        .filter_map(|a| a.get_long())
        .map(|l| format!("--{l}"))
        .filter(|l| !DESTRUCTIVE_FLAGS.contains(&l.as_str()) && l != "--help" && l != "--version")
        .map(|l| (jaro(name, &l[2..]), l))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, l)| l)
}

/// Jaro similarity of two strings, 0 (nothing alike) to 1 (equal).
fn jaro(a: &str, b: &str) -> f64 {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let window = (a.len().max(b.len()) / 2).saturating_sub(1);
    let mut b_used = vec![false; b.len()];
    let mut a_matched = Vec::new();
    for (i, ca) in a.iter().enumerate() {
        let lo = i.saturating_sub(window);
        let hi = (i + window + 1).min(b.len());
        if let Some(j) = (lo..hi).find(|&j| !b_used[j] && b[j] == *ca) {
            b_used[j] = true;
            a_matched.push(*ca);
        }
    }
    let m = a_matched.len();
    if m == 0 {
        return 0.0;
    }
    let b_matched = b.iter().zip(&b_used).filter(|(_, used)| **used).map(|(c, _)| *c);
    let transpositions = a_matched.iter().zip(b_matched).filter(|(x, y)| **x != *y).count() / 2;
    let m = m as f64;
    (m / a.len() as f64 + m / b.len() as f64 + (m - transpositions as f64) / m) / 3.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaro_matches_the_textbook_values() {
        assert!((jaro("MARTHA", "MARHTA") - 0.944).abs() < 0.001);
        assert!((jaro("DIXON", "DICKSONX") - 0.767).abs() < 0.001);
        assert_eq!(jaro("abc", "abc"), 1.0);
        assert_eq!(jaro("", "abc"), 0.0);
    }

    #[test]
    fn a_destructive_suggestion_is_replaced_by_the_closest_safe_flag() {
        // `rollback` has --purge and --dry-run; `--pruge` resembles --purge most.
        let e = parse_from(["karpctl", "rollback", "--pruge"]).unwrap_err().to_string();
        assert!(!e.contains("--purge"), "{e}");
        let e = parse_from(["karpctl", "up", "--dryrun"]).unwrap_err().to_string();
        assert!(e.contains("'--dry-run'") && !e.contains("--prune"), "{e}");
    }
}
