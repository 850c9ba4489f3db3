/*!
`karpctl rollback`: from Karpenter back to managed nodegroups, as a second step
graph recorded in the same state file (ids `rollback/...`) and walked by the
same engine, so it resumes after a crash and `--dry-run` / `plan --rollback`
are the same walk in plan mode.

The order is the one users learned the hard way: capacity first (the
nodegroups scaled and Ready before anything is drained), then the NodePools
(Karpenter drains their nodes; without a running controller karpctl drains
them itself), the EC2NodeClasses (their finalizers remove instance profiles and
launch templates, so the controller must still run), the Helm releases, the
CRDs only on request (deleting them deletes every NodeClaim), node access and
the controller identity, and with `--purge` what Karpenter leaves behind and
finally the CloudFormation stack (instance profiles holding its node role must
be gone first, or the stack's delete fails).

Every step observes first and does nothing when its resources are gone. Each
removes only what karpctl created (tag `karpctl.io/cluster`, label
`app.kubernetes.io/managed-by=karpctl`) or what Karpenter created for this
cluster (its tags), using the `up` records as hints but never needing them: a
lost state file makes a rollback more conservative, not wrong.
*/

pub mod access;
pub mod capacity;
pub mod drain;
pub mod objects;
pub mod purge;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::ApiResource;
use serde_json::{json, Value};

use crate::config::Config;
use crate::engine::{Change, Step, StepCx};
use crate::kube::Connector;
use crate::state::StepRecord;

/// Every rollback step id starts with this; `up` forgets these records before it walks.
pub const PREFIX: &str = "rollback/";
pub const CLUSTER: &str = "rollback/cluster";
pub const NODEGROUPS: &str = "rollback/nodegroups";
pub const NODEPOOLS: &str = "rollback/nodepools";
pub const NODECLASSES: &str = "rollback/nodeclasses";
pub const RELEASES: &str = "rollback/releases";
pub const CRDS: &str = "rollback/crds";
pub const NODE_ACCESS: &str = "rollback/node-access";
pub const IDENTITY: &str = "rollback/identity";
pub const SWEEP: &str = "rollback/sweep";
pub const STACK: &str = "rollback/stack";
pub use crate::model::ownership::{EKS_CLUSTER_TAG, LEGACY_CLUSTER_TAG, NODECLASS_TAG, NODEGROUP_LABEL, POOL_LABEL};

/// Clients and flags the rollback steps are built with.
pub struct Env {
    pub sdk: aws_config::SdkConfig,
    pub kube: Arc<Connector>,
    /// How long to wait for nodes, drains and deletions.
    pub wait_timeout: Duration,
    /// Terminate instances that could not be drained, release finalizers nobody runs.
    pub force: bool,
    /// Also sweep Karpenter's leftovers and delete the CloudFormation stack.
    pub purge: bool,
    /// Also delete the Karpenter CRDs.
    pub delete_crds: bool,
}

/// A rollback step and the `up` step records it makes obsolete once it is done.
pub struct RollbackStep {
    pub step: Box<dyn Step>,
    pub undoes: Vec<String>,
}

/// The outputs of an `up` record, as a hint (absent when the state is new or lost).
fn hint(recorded: &BTreeMap<String, StepRecord>, id: &str) -> Option<Value> {
    recorded.get(id).map(|r| r.outputs.clone()).filter(|o| !o.is_null())
}

/// The rollback graph for a config, in the order it runs.
pub fn steps(c: &Config, env: &Env, recorded: &BTreeMap<String, StepRecord>) -> Vec<RollbackStep> {
    use crate::steps::{aws_auth, cfn_stack, crds, discovery_tags, helm_release, identity, node_access, objects as up_objects, readiness};
    let cluster = c.cluster.name.clone();
    let names = crate::config::Names::of(c);
    let ns = c.karpenter.namespace.clone();
    let dp_ns = c.device_plugin.namespace.clone();
    let conn = env.kube.clone();
    let dep = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let mut out = vec![RollbackStep {
        step: Box::new(ClusterLookup { facts: crate::steps::cluster::ClusterFacts { name: cluster.clone(), eks: crate::aws::eks(&env.sdk) } }),
        undoes: vec![],
    }];
    out.push(RollbackStep {
        step: Box::new(capacity::Nodegroups {
            cluster: cluster.clone(),
            nodegroups: c.rollback.nodegroups.clone(),
            deps: dep(&[CLUSTER]),
            eks: crate::aws::eks(&env.sdk),
            ec2: crate::aws::ec2(&env.sdk),
            conn: conn.clone(),
            timeout: env.wait_timeout,
        }),
        undoes: vec![],
    });
    // What `up` applied, by reference: `NodePool/default`, `EC2NodeClass/default`.
    let applied: Vec<String> = hint(recorded, &up_objects::id(&cluster))
        .map(|o| o["objects"].as_array().into_iter().flatten().filter_map(|x| x["ref"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    let of_kind = |kind: &str| applied.iter().filter(|r| r.starts_with(&format!("{kind}/"))).cloned().collect::<Vec<_>>();
    out.push(RollbackStep {
        step: Box::new(drain::NodePools {
            cluster: cluster.clone(),
            config_pools: c.node_pools.iter().map(|p| p.name.clone()).collect(),
            namespace: ns.clone(),
            recorded: of_kind("NodePool"),
            deps: dep(&[CLUSTER, NODEGROUPS]),
            force: env.force,
            timeout: env.wait_timeout,
            ec2: crate::aws::ec2(&env.sdk),
            conn: conn.clone(),
        }),
        undoes: vec![],
    });
    out.push(RollbackStep {
        step: Box::new(objects::NodeClasses {
            cluster: cluster.clone(),
            namespace: ns.clone(),
            recorded: of_kind("EC2NodeClass"),
            deps: dep(&[CLUSTER, NODEPOOLS]),
            force: env.force,
            timeout: env.wait_timeout,
            conn: conn.clone(),
        }),
        undoes: vec![up_objects::id(&cluster), up_objects::prune_id(&cluster), readiness::id(&cluster)],
    });

    let controller_id = helm_release::id(&ns, "karpenter");
    let plugin_id = helm_release::id(&dp_ns, "nvidia-device-plugin");
    let mut releases = Vec::new();
    let plugin_hint = hint(recorded, &plugin_id);
    if crate::render::helm::device_plugin_enabled(c) || plugin_hint.is_some() {
        releases.push(objects::Release { name: "nvidia-device-plugin".into(), namespace: dp_ns.clone(), recorded: plugin_hint });
    }
    releases.push(objects::Release { name: "karpenter".into(), namespace: ns.clone(), recorded: hint(recorded, &controller_id) });
    out.push(RollbackStep {
        step: Box::new(objects::Releases { cluster: cluster.clone(), namespace: ns.clone(), releases, deps: dep(&[CLUSTER, NODECLASSES]), timeout: env.wait_timeout, conn: conn.clone() }),
        undoes: vec![controller_id, plugin_id],
    });
    if env.delete_crds {
        out.push(RollbackStep {
            step: Box::new(objects::Crds { deps: dep(&[CLUSTER, RELEASES]), timeout: env.wait_timeout, conn: conn.clone() }),
            undoes: vec![crds::ID.to_string()],
        });
    }
    let stack_id = cfn_stack::id(&names.stack);
    out.push(RollbackStep {
        step: Box::new(access::NodeAccess {
            cluster: cluster.clone(),
            node_role: names.node_role.clone(),
            stack: names.stack.clone(),
            recorded: hint(recorded, &node_access::id(&cluster)),
            deps: dep(&[CLUSTER, RELEASES]),
            eks: crate::aws::eks(&env.sdk),
            cfn: crate::aws::cloudformation(&env.sdk),
            conn: conn.clone(),
        }),
        undoes: vec![node_access::id(&cluster), aws_auth::id(&cluster)],
    });
    out.push(RollbackStep {
        step: Box::new(access::Identity {
            cluster: cluster.clone(),
            role: names.controller_role.clone(),
            namespace: ns.clone(),
            stack: names.stack.clone(),
            deps: dep(&[CLUSTER, RELEASES]),
            iam: crate::aws::iam(&env.sdk),
            eks: crate::aws::eks(&env.sdk),
            cfn: crate::aws::cloudformation(&env.sdk),
        }),
        undoes: vec![identity::id(&names.controller_role)],
    });
    if env.purge {
        out.push(RollbackStep {
            step: Box::new(purge::Sweep {
                cluster: cluster.clone(),
                pools: c.node_pools.iter().map(|p| p.name.clone()).collect(),
                force: env.force,
                discovery: hint(recorded, &discovery_tags::id(&cluster)),
                deps: dep(&[CLUSTER, NODECLASSES, NODE_ACCESS, IDENTITY]),
                ec2: crate::aws::ec2(&env.sdk),
                iam: crate::aws::iam(&env.sdk),
            }),
            undoes: vec![discovery_tags::id(&cluster)],
        });
        out.push(RollbackStep {
            step: Box::new(crate::engine::Typed(purge::Stack {
                cluster: cluster.clone(),
                stack: names.stack.clone(),
                deps: dep(&[CLUSTER, SWEEP, NODE_ACCESS, IDENTITY]),
                cfn: crate::aws::cloudformation(&env.sdk),
            })),
            undoes: vec![stack_id],
        });
    }
    out
}

/// Removes the `up` records that the finished rollback steps made obsolete, so a
/// later `up` recreates what they removed. Returns the ids removed.
pub fn forget_undone(steps: &BTreeMap<String, Vec<String>>, done: &BTreeSet<String>, state: &mut crate::state::State) -> Vec<String> {
    let mut gone = Vec::new();
    for (id, undoes) in steps {
        if !done.contains(id) {
            continue;
        }
        for u in undoes {
            if state.steps.remove(u).is_some() {
                gone.push(u.clone());
            }
        }
    }
    gone
}

/// Drops every rollback record: `up` calls this before it walks, so a later
/// rollback starts afresh instead of trusting records of an older one.
pub fn forget_rollback(state: &mut crate::state::State) {
    state.steps.retain(|id, _| !id.starts_with(PREFIX));
}

/// Step `rollback/cluster`: the cluster facts (endpoint, CA, authentication mode,
/// OIDC issuer), read on every run like `up`'s `cluster/<name>`.
pub struct ClusterLookup {
    pub facts: crate::steps::cluster::ClusterFacts,
}

impl Step for ClusterLookup {
    fn id(&self) -> String {
        CLUSTER.into()
    }
    fn kind(&self) -> &'static str {
        "rollback-cluster-facts"
    }
    fn always_observe(&self) -> bool {
        true
    }
    fn inputs(&self) -> Value {
        self.facts.inputs()
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        self.facts.observe(cx)
    }
    fn diff(&self, _observed: &Value, _cx: &StepCx<'_>) -> Change {
        Change::none()
    }
    fn apply<'a>(&'a self, _cx: &'a StepCx<'a>, observed: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move { Ok(observed.clone()) })
    }
}

// ---------------------------------------------------------------------------------------------
// Shared by the steps
// ---------------------------------------------------------------------------------------------

/// Lists a Karpenter kind; `None` when the cluster does not serve it (no CRD).
pub async fn list_kind(client: &kube::Client, ar: &ApiResource, lp: &ListParams) -> anyhow::Result<Option<Vec<DynamicObject>>> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
    match api.list(lp).await {
        Ok(l) => Ok(Some(l.items)),
        Err(kube::Error::Api(s)) if crate::kube::not_found(&s) => Ok(None),
        Err(e) => Err(anyhow::Error::from(e).context(format!("listing {}", ar.plural))),
    }
}

/// The controller's available replicas; `None` when no controller Deployment exists.
pub async fn controller_available(client: &kube::Client, namespace: &str) -> anyhow::Result<Option<i32>> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let list = api
        .list(&ListParams::default().labels("app.kubernetes.io/instance=karpenter"))
        .await
        .with_context(|| format!("listing the Karpenter controller's Deployments in {namespace}"))?;
    if list.items.is_empty() {
        return Ok(None);
    }
    Ok(Some(list.items.iter().map(|d| d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)).sum()))
}

/// "running (2 available)", "not running (0 available)", "not installed".
pub fn controller_text(available: Option<i32>) -> String {
    match available {
        None => "not installed".into(),
        Some(0) => "not running (0 replicas available)".into(),
        Some(n) => format!("running ({n} available)"),
    }
}

/// Pods that a drain leaves alone: DaemonSet pods (they are not rescheduled),
/// mirror pods (the kubelet owns them) and pods that already finished.
pub fn stays(p: &Pod) -> bool {
    let ds = p.metadata.owner_references.iter().flatten().any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    let mirror = p.metadata.annotations.as_ref().is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let done = matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    ds || mirror || done
}

/// A pod's effective CPU (cores) and memory (bytes) requests, as the scheduler
/// counts them: the larger of the containers' sum and the largest init container,
/// plus the pod overhead.
pub fn requests(p: &Pod) -> (f64, f64) {
    let Some(spec) = p.spec.as_ref() else { return (0.0, 0.0) };
    let of = |r: Option<&k8s_openapi::api::core::v1::ResourceRequirements>, key: &str| {
        r.and_then(|r| r.requests.as_ref()).and_then(|m| m.get(key)).and_then(|q| crate::config::rules::parse_quantity(&q.0)).unwrap_or(0.0)
    };
    let mut out = [0.0f64; 2];
    for (i, key) in ["cpu", "memory"].into_iter().enumerate() {
        let sum: f64 = spec.containers.iter().map(|c| of(c.resources.as_ref(), key)).sum();
        let init = spec.init_containers.iter().flatten().map(|c| of(c.resources.as_ref(), key)).fold(0.0, f64::max);
        let overhead = spec.overhead.as_ref().and_then(|o| o.get(key)).and_then(|q| crate::config::rules::parse_quantity(&q.0)).unwrap_or(0.0);
        out[i] = sum.max(init) + overhead;
    }
    (out[0], out[1])
}

pub use crate::json::strings;

/// What a step removed: this run's removals after the ones recorded before
/// (a resumed step keeps the record of what its earlier runs did).
pub fn removed(previous: Option<&Value>, now: &[String]) -> Value {
    let mut all = previous.map(|p| strings(&p["removed"])).unwrap_or_default();
    for n in now {
        if !all.contains(n) {
            all.push(n.clone());
        }
    }
    json!(all)
}

/// What a step recorded before, carried through observe (as `previous`) for `outputs_from`.
pub fn carried(cx: &StepCx<'_>) -> Value {
    cx.previous.cloned().unwrap_or(Value::Null)
}

/// A step's outputs when it found nothing to do: its record stays as it was
/// (`previous`, what observe [`carried`]), else `fresh`.
pub fn unchanged(previous: &Value, fresh: Value) -> Value {
    if previous.is_object() {
        previous.clone()
    } else {
        fresh
    }
}

/// "1.5 CPU", "3.2 GiB".
pub fn cpu_text(cores: f64) -> String {
    format!("{:.1} CPU", cores)
}

pub fn mem_text(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / 1024f64.powi(3))
}

/// Polls `exists` for each of `names` until none is left, with progress; after
/// `timeout` fails with `timed_out(what is left)`, which should end with a `help:` line.
pub async fn wait_gone<F, Fut>(
    cx: &StepCx<'_>,
    what: &str,
    names: &[String],
    timeout: Duration,
    exists: F,
    timed_out: impl Fn(&[String]) -> String,
) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let started = tokio::time::Instant::now();
    let mut pace = crate::kube::Pace::new();
    loop {
        let mut left = Vec::new();
        for n in names {
            if exists(n.clone()).await? {
                left.push(n.clone());
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            anyhow::bail!(timed_out(&left));
        }
        cx.progress(format!("waiting for {what} {} to be deleted ({}s)", left.join(", "), started.elapsed().as_secs()));
        pace.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn requests_take_the_larger_of_containers_and_init_containers() {
        let p = pod(json!({"spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}},
                           {"name": "b", "resources": {"requests": {"cpu": "250m"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "128Mi"}}}],
            "overhead": {"memory": "64Mi"}}}));
        let (cpu, mem) = requests(&p);
        assert!((cpu - 1.0).abs() < 1e-9, "{cpu}");
        assert_eq!(mem, (256.0 + 64.0) * 1024.0 * 1024.0);
    }

    #[test]
    fn daemonset_mirror_and_finished_pods_stay() {
        let ds = pod(json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "u", "controller": true}]}}));
        let mirror = pod(json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}}));
        let done = pod(json!({"status": {"phase": "Succeeded"}}));
        let rs = pod(json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "u", "controller": true}]},
                            "status": {"phase": "Running"}}));
        assert!(stays(&ds) && stays(&mirror) && stays(&done));
        assert!(!stays(&rs));
    }

    #[test]
    fn removals_accumulate_across_resumed_runs() {
        let prev = json!({"removed": ["a", "b"]});
        assert_eq!(removed(Some(&prev), &["b".into(), "c".into()]), json!(["a", "b", "c"]));
        assert_eq!(removed(None, &[]), json!([]));
    }
}
