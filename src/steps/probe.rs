/*!
The test pod that `verify` and a staged AMI rollout's check schedule: it selects
one pool (`karpenter.sh/nodepool`), tolerates the pool's taints and requests a
little, in a scratch namespace. [`run`] waits for a node of that pool and the pod
Running, says why when none comes (the pod's events, the pool's conditions), and
cleans up.
*/

use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::{json, Value};

use crate::config::{self, types::TaintEffect};
use crate::kube::apply;
use crate::model::ownership;

pub const NAMESPACE: &str = "karpctl-verify";

fn effect(e: TaintEffect) -> &'static str {
    match e {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    }
}

/// The test pod for `pool`: selects it, tolerates its taints, requests a little.
pub fn test_pod(c: &config::Config, pool: &config::types::NodePool, name: &str, image: &str) -> Value {
    let tolerations: Vec<Value> = pool
        .taints
        .iter()
        .chain(&pool.startup_taints)
        .map(|t| json!({"key": t.key, "operator": "Exists", "effect": effect(t.effect)}))
        .collect();
    let gpu = pool.limits.contains_key("nvidia.com/gpu");
    let mut requests = json!({"cpu": "50m", "memory": "64Mi"});
    if gpu {
        requests["nvidia.com/gpu"] = json!("1");
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {
            ownership::MANAGED_BY: ownership::MANAGER, ownership::VERIFY_LABEL: pool.name, ownership::CLUSTER_TAG: c.cluster.name}},
        "spec": {
            "nodeSelector": {"karpenter.sh/nodepool": pool.name},
            "tolerations": tolerations,
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "containers": [{"name": "verify", "image": image, "resources": {"requests": requests.clone(), "limits": if gpu { json!({"nvidia.com/gpu": "1"}) } else { json!({}) }}}]
        }
    })
}

/// What to schedule and how long to wait.
pub struct Probe<'a> {
    pub config: &'a config::Config,
    pub pool: &'a config::types::NodePool,
    pub image: &'a str,
    pub timeout: Duration,
    /// Leave the pod (and namespace) for inspection.
    pub keep: bool,
}

/// The pod ran on a node of the pool.
pub struct Landed {
    pub node: String,
    pub node_after: Duration,
    pub running_after: Duration,
}

/// No node of the pool ran the pod in time, and what Karpenter said about it.
pub struct NotLanded {
    pub reason: String,
    pub pod_events: Vec<String>,
    /// `Ready`, or the pool's failing conditions.
    pub node_pool: String,
    pub elapsed: Duration,
}

/// Schedules the test pod named `name` and waits; `Err` when the pod could not
/// even be created. Cleans up unless `keep`.
pub async fn run(client: &kube::Client, p: &Probe<'_>, name: &str, say: &(dyn Fn(String) + Send + Sync)) -> anyhow::Result<Result<Landed, NotLanded>> {
    let started = Instant::now();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    // A previous test pod's namespace may still be terminating: wait for it to go.
    let waited = Instant::now();
    while let Some(ns) = namespaces.get_opt(NAMESPACE).await? {
        if ns.metadata.deletion_timestamp.is_none() {
            break;
        }
        if waited.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("namespace {NAMESPACE} from an earlier verify is still terminating after 120s; check `kubectl get ns {NAMESPACE} -o yaml`");
        }
        say(format!("waiting for namespace {NAMESPACE} of an earlier verify to be deleted ({}s)", waited.elapsed().as_secs()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let created_ns = if namespaces.get_opt(NAMESPACE).await?.is_none() {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE, "labels": {ownership::MANAGED_BY: ownership::MANAGER}}}))?;
        namespaces.create(&PostParams::default(), &ns).await.context("creating namespace karpctl-verify")?;
        true
    } else {
        false
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let pod: Pod = serde_json::from_value(test_pod(p.config, p.pool, name, p.image))?;
    // The namespace's default service account may lag its creation by a moment.
    let mut attempt = 0;
    loop {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.is_forbidden() && s.message.contains("serviceaccount") && attempt < 20 => {
                attempt += 1;
                say(format!("waiting for the default service account of namespace {NAMESPACE}"));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e).context(format!("creating test pod {NAMESPACE}/{name}")),
        }
    }
    say(format!("created test pod {NAMESPACE}/{name}"));
    let pool = p.pool.name.as_str();
    let outcome = match wait(client, &pods, name, pool, p.timeout, say).await {
        Ok((node, node_after, running_after)) => Ok(Landed { node, node_after, running_after }),
        Err(reason) => {
            let (pod_events, node_pool) = diagnose(client, name, pool).await;
            Err(NotLanded { reason, pod_events, node_pool, elapsed: started.elapsed() })
        }
    };
    // Clean up whatever happened; the node Karpenter made is consolidated away by it.
    if !p.keep {
        let _ = pods.delete(name, &DeleteParams::default().grace_period(0)).await;
        if created_ns {
            let _ = namespaces.delete(NAMESPACE, &DeleteParams::default()).await;
        }
    }
    Ok(outcome)
}

/// Until the pod runs on a node of `pool`: (node, node seen after, running after).
async fn wait(
    client: &kube::Client,
    pods: &Api<Pod>,
    name: &str,
    pool: &str,
    timeout: Duration,
    say: &(dyn Fn(String) + Send + Sync),
) -> Result<(String, Duration, Duration), String> {
    let started = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node_at: Option<Duration> = None;
    loop {
        let pod = pods.get_opt(name).await.map_err(|e| format!("reading the test pod: {e}"))?.ok_or("the test pod disappeared")?;
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
        if let Some(n) = &node {
            let labels = nodes.get_opt(n).await.ok().flatten().and_then(|n| n.metadata.labels).unwrap_or_default();
            if labels.get("karpenter.sh/nodepool").map(String::as_str) != Some(pool) {
                return Err(format!("the test pod was scheduled on node {n}, which is not from pool {pool}"));
            }
            node_at.get_or_insert(started.elapsed());
            if phase == "Running" {
                return Ok((n.clone(), node_at.unwrap_or_default(), started.elapsed()));
            }
        }
        if started.elapsed() >= timeout {
            return Err(match node {
                Some(n) => format!("the pod landed on {n} but was not Running after {}s (phase {phase})", timeout.as_secs()),
                None => format!("no node from pool {pool} took the pod within {}s", timeout.as_secs()),
            });
        }
        say(format!(
            "verify {pool}: {} ({}s)",
            match &node {
                Some(n) => format!("pod on {n}, {phase}"),
                None => "waiting for Karpenter to launch a node".into(),
            },
            started.elapsed().as_secs()
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The pod's events and the pool's conditions: where Karpenter says why.
async fn diagnose(client: &kube::Client, name: &str, pool: &str) -> (Vec<String>, String) {
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), NAMESPACE);
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let evs: Vec<String> = events
        .list(&lp)
        .await
        .map(|l| l.items.iter().map(|e| format!("{}: {}", e.reason.clone().unwrap_or_default(), e.message.clone().unwrap_or_default())).collect())
        .unwrap_or_default();
    let pools: Api<DynamicObject> = Api::all_with(client.clone(), &apply::node_pool_resource());
    let pool_state = match pools.get_opt(pool).await {
        Ok(Some(p)) => {
            let v = serde_json::to_value(p).unwrap_or_default();
            if apply::is_ready(&v) {
                "Ready".to_string()
            } else {
                apply::why_not_ready(&v)
            }
        }
        Ok(None) => "the NodePool does not exist (run `karpctl up`)".into(),
        Err(e) => format!("could not read the NodePool: {e}"),
    };
    (evs, pool_state)
}
