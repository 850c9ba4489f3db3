/*!
What engine-backed commands share: the state backend the config selects (a
local file by default, S3 when configured) and the lock description.
*/

use std::path::{Path, PathBuf};

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context;

use crate::cli::Global;
use crate::config::Config;
use crate::engine::RunnerError;
use crate::state::{Backend, LocalStore, LockInfo, S3Store, State};

/// Resolves on Ctrl-C (SIGINT), counted from the moment this is called, not from
/// its first poll: a Ctrl-C between taking the lock and the first step is then a
/// clean interruption rather than the default action's death with the lock held.
pub type Interrupt = Pin<Box<dyn Future<Output = ()> + Send>>;

pub fn interrupt() -> Interrupt {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut s) = signal(SignalKind::interrupt()) {
            return Box::pin(async move {
                s.recv().await;
            });
        }
    }
    Box::pin(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

/// Runs `body` under the state lock `hold` describes (taken with `--lock-timeout`,
/// released afterwards whatever the outcome), or without the lock when `hold` is
/// `None` (a plan). `body` gets the Ctrl-C future, armed before the lock was asked for.
pub async fn locked<T>(
    b: &Backend,
    g: &Global,
    hold: Option<LockInfo>,
    body: impl AsyncFnOnce(Interrupt) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let mut interrupt = interrupt();
    let Some(info) = hold else { return body(interrupt).await };
    lock_or_interrupt(b, &info, Duration::from_secs(g.lock_timeout), &mut interrupt).await?;
    let result = body(interrupt).await;
    release(b, &info.id, result.is_err()).await?;
    result
}

/// Takes the state lock for a run (waiting up to `timeout`, saying whom for), unless
/// Ctrl-C comes first: then the run ends as interrupted, with no lock of its own left.
async fn lock_or_interrupt(b: &Backend, info: &LockInfo, timeout: Duration, interrupt: &mut Interrupt) -> anyhow::Result<()> {
    tokio::select! {
        r = b.lock(info, timeout, &|h| crate::ui::note(&format!("waiting for the state lock held by {h}"))) => Ok(r?),
        _ = interrupt.as_mut() => {
            // An attempt in flight may still create our lock: let it land, then take ours away.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if b.lock_holder().await.ok().flatten().is_some_and(|h| h.id == info.id) {
                b.unlock(&info.id).await?;
            }
            Err(RunnerError::Cancelled { report: Default::default() }.into())
        }
    }
}

/// The local state file: `state.path`, else `.karpctl/<cluster>.state.json`,
/// either relative to the config file's directory.
pub fn state_path(c: &Config, config_file: &Path) -> PathBuf {
    let written = c.state.path.clone().unwrap_or_else(|| format!(".karpctl/{}.state.json", c.cluster.name));
    crate::config::resolve(config_file, &written)
}

pub async fn backend(c: &Config, g: &Global) -> anyhow::Result<Backend> {
    if let Some(s3) = &c.state.s3 {
        let key = s3.key.clone().unwrap_or_else(|| format!("karpctl/{}.state.json", c.cluster.name));
        let region = s3.region.as_deref().or(c.cluster.region.as_deref());
        let cfg = crate::aws::sdk_config(&g.aws(), region).await;
        return Ok(Backend::S3(S3Store::new(crate::aws::s3(&cfg, &g.aws()), s3.bucket.clone(), key).with_default_errored_copies()));
    }
    Ok(Backend::Local(LocalStore::new(state_path(c, &g.config))))
}

/// When AWS could not be asked and no endpoint override is set, but a local
/// sandbox has written its environment file in this checkout (the working
/// directory or the config file's directory, or one above them up to the
/// repository root): the line that points karpctl at it.
pub fn sandbox_hint(g: &Global) -> Option<String> {
    if g.endpoint_url.is_some() {
        return None;
    }
    let cwd = std::env::current_dir().ok()?;
    let config_dir = cwd.join(crate::config::resolve(&g.config, ""));
    for start in [cwd.as_path(), config_dir.as_path()] {
        for dir in start.ancestors() {
            let env = dir.join(".sandbox/env");
            if env.is_file() {
                let shown = env.strip_prefix(&cwd).map(Path::to_path_buf).unwrap_or(env);
                return Some(format!(
                    "source {}   # the local sandbox's AWS emulator and cluster (no AWS endpoint is set)",
                    shown.display()
                ));
            }
            if dir.join(".git").exists() {
                break;
            }
        }
    }
    None
}

/// karpctl's CloudFormation stack for the cluster, when it exists and carries
/// karpctl's tag: proof that karpctl provisioned this cluster, whatever the state
/// says. Best effort (a read that fails or takes over 10 s says nothing).
pub async fn karpctl_stack(g: &Global, c: &Config) -> Option<String> {
    use crate::model::ownership::CLUSTER_TAG;
    let names = crate::config::Names::of(c);
    let sdk = crate::aws::sdk_config(&g.aws(), c.cluster.region.as_deref()).await;
    let read = crate::aws::cloudformation(&sdk).describe_stacks().stack_name(&names.stack).send();
    let out = tokio::time::timeout(Duration::from_secs(10), read).await.ok()?.ok()?;
    let stack = out.stacks?.into_iter().next()?;
    let gone = stack.stack_status.as_ref().is_some_and(|s| s.as_str() == "DELETE_COMPLETE");
    let ours = stack.tags().iter().any(|t| t.key() == Some(CLUSTER_TAG) && t.value() == Some(c.cluster.name.as_str()));
    (ours && !gone).then(|| format!("CloudFormation stack {} (tagged {CLUSTER_TAG}={})", names.stack, c.cluster.name))
}

/// What to say when the state is missing but karpctl's objects exist (`found`):
/// a note naming them and the `help:` line that points at the right state.
pub fn missing_state(b: &Backend, g: &Global, found: &[String]) -> (String, String) {
    let note = format!(
        "no state at {}, but karpctl's {} exist: this cluster was provisioned with a state kept elsewhere, and without it \
         karpctl compares against nothing (AMI pins, ownership and what to prune are in the state)",
        b.describe(),
        found.join(" and ")
    );
    let help = format!(
        "point `state.path` (or `state.s3`) in {} at the state that recorded them — a relative path is relative to the config file — \
         or run with the config that did: `karpctl -c FILE status`; a copy of that state file goes back with `karpctl state push FILE`",
        g.config.display()
    );
    (note, help)
}

/// Releases the lock a run took. When the run already failed, a failure to release
/// is only noted: the run's own error (a failed state write and its `help:` line)
/// is the one to show, and the lock left behind is reported as stale next time.
async fn release(b: &Backend, id: &str, run_failed: bool) -> anyhow::Result<()> {
    match b.unlock(id).await {
        Ok(()) => Ok(()),
        Err(e) if run_failed => {
            crate::ui::note(&format!("could not release the state lock either: {e}"));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The current state, or a new one for this cluster; refuses another cluster's file.
pub async fn load_state(b: &Backend, c: &Config) -> anyhow::Result<State> {
    let st = b.load().await.with_context(|| format!("reading state from {}", b.describe()))?;
    match st {
        Some(s) => {
            s.check_identity(&c.cluster.name)?;
            Ok(s)
        }
        None => Ok(State::new(&c.cluster.name, c.cluster.region.as_deref())),
    }
}

/// A Kubernetes client for commands outside the step graph (`status`, `verify`):
/// the kubeconfig when given, else the cluster facts recorded in `state`, else a
/// fresh DescribeCluster.
pub async fn kube_client(g: &Global, c: &Config, state: Option<&State>) -> anyhow::Result<::kube::Client> {
    let sdk = crate::aws::sdk_config(&g.aws(), c.cluster.region.as_deref()).await;
    let conn = crate::kube::Connector::new(&g.kube(), sdk.clone(), &c.cluster.name);
    let cluster_step = crate::steps::cluster::id(&c.cluster.name);
    let recorded = state.and_then(|s| s.steps.get(&cluster_step)).map(|r| r.outputs.clone()).filter(|o| o["endpoint"].is_string());
    let facts = match recorded {
        Some(f) => Some(f),
        None if g.kubeconfig.is_some() || g.context.is_some() => None,
        None => {
            use crate::engine::{Step, StepCx};
            let step = crate::steps::cluster::ClusterFacts { name: c.cluster.name.clone(), eks: crate::aws::eks(&sdk) };
            let upstream = std::collections::BTreeMap::new();
            let quiet = |_e: crate::engine::Event| {};
            let cx = StepCx::new(&cluster_step, &upstream, None, &quiet);
            Some(step.observe(&cx).await?)
        }
    };
    conn.client(facts.as_ref()).await
}
