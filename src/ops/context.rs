/*!
What engine-backed commands share: the state backend the config selects (a
local file by default, S3 when configured) and the lock description.
*/

use std::path::PathBuf;

use anyhow::Context;

use crate::cli::Global;
use crate::config::Config;
use crate::state::{Backend, LocalStore, S3Store, State};

pub fn default_state_path(c: &Config) -> PathBuf {
    PathBuf::from(format!(".karpctl/{}.state.json", c.cluster.name))
}

pub async fn backend(c: &Config, g: &Global) -> anyhow::Result<Backend> {
    if let Some(s3) = &c.state.s3 {
        let key = s3.key.clone().unwrap_or_else(|| format!("karpctl/{}.state.json", c.cluster.name));
        let region = s3.region.as_deref().or(c.cluster.region.as_deref());
        let cfg = crate::aws::sdk_config(g, region).await;
        return Ok(Backend::S3(S3Store::new(crate::aws::s3(&cfg, g), s3.bucket.clone(), key)));
    }
    let path = c.state.path.as_ref().map(PathBuf::from).unwrap_or_else(|| default_state_path(c));
    Ok(Backend::Local(LocalStore::new(path)))
}

/// Releases the lock a run took. When the run already failed, a failure to release
/// is only noted: the run's own error (a failed state write and its `help:` line)
/// is the one to show, and the lock left behind is reported as stale next time.
pub async fn release(b: &Backend, id: &str, run_failed: bool) -> anyhow::Result<()> {
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
    let sdk = crate::aws::sdk_config(g, c.cluster.region.as_deref()).await;
    let conn = crate::kube::Connector::new(g, sdk.clone(), &c.cluster.name);
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
