/*!
Step `rollback/nodepools`: stops new provisioning by deleting the NodePools
karpctl manages, then waits until their NodeClaims and nodes are gone.

With a running controller, Karpenter drains and terminates the nodes itself,
honoring PodDisruptionBudgets. Without one (its Deployment has no available
replica, or is gone) nobody would: karpctl cordons the nodes and evicts their
pods through the Eviction API — the API server enforces PodDisruptionBudgets
and answers 429 when one blocks — skipping DaemonSet and mirror pods, and
retries until `--wait-timeout`. Pods that cannot move are then reported with
the budget that holds them instead of waiting forever. Only `--force`
terminates the instances that are left, found by the node's provider id and by
Karpenter's tags (`karpenter.sh/nodepool` with `eks:eks-cluster-name`,
`kubernetes.io/cluster/<cluster>` or the older `karpenter.k8s.aws/cluster`),
and deletes their Node and NodeClaim objects.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, DynamicObject, EvictParams, ListParams, Patch, PatchParams};
use serde_json::{json, Value};

use super::{controller_available, controller_text, list_kind, strings, CLUSTER, POOL_LABEL};
use crate::aws::AwsError;
use crate::engine::{Action, Change, FieldChange, Step, StepCx};
use crate::kube::apply::{node_claim_resource, node_pool_resource};
use crate::kube::Connector;

pub struct NodePools {
    pub cluster: String,
    /// Pools the config defines: their nodes are karpctl's even after the pool is gone.
    pub config_pools: Vec<String>,
    /// The controller's namespace.
    pub namespace: String,
    /// The NodePools the `up` record says karpctl applied (`NodePool/<name>`).
    pub recorded: Vec<String>,
    pub deps: Vec<String>,
    pub force: bool,
    pub timeout: Duration,
    pub ec2: aws_sdk_ec2::Client,
    pub conn: Arc<Connector>,
}

/// How long one eviction may take: the kube client retries a 429 (a budget that
/// allows no disruption) with backoff for minutes, and one refusal is answer enough.
const EVICTION_WAIT: Duration = Duration::from_secs(3);

/// A pod that did not leave a Karpenter node, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Stuck {
    pub pod: String,
    pub node: String,
    pub why: String,
}

/// Whether `selector` (policy/v1 semantics: empty matches everything) selects `labels`.
pub fn selects(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(s) = selector else { return false };
    let labels_ok = s.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = s.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let have = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// The budgets covering `pod` that allow no disruption now: "ns/name (0 disruptions allowed)".
pub fn blocking(pod: &Pod, pdbs: &[PodDisruptionBudget]) -> Vec<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    pdbs.iter()
        .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
        .filter(|b| selects(b.spec.as_ref().and_then(|s| s.selector.as_ref()), &labels))
        .filter_map(|b| {
            let allowed = b.status.as_ref().map(|s| s.disruptions_allowed).unwrap_or(0);
            (allowed <= 0).then(|| format!("{ns}/{} ({allowed} disruptions allowed)", b.metadata.name.as_deref().unwrap_or("?")))
        })
        .collect()
}

fn pod_ref(p: &Pod) -> String {
    format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or("default"), p.metadata.name.as_deref().unwrap_or("?"))
}

/// `aws:///us-west-2a/i-0abc` → `i-0abc`.
pub fn instance_id(provider_id: &str) -> Option<String> {
    provider_id.rsplit('/').next().filter(|s| s.starts_with("i-")).map(String::from)
}

/// The instances Karpenter launched for `cluster` (of `pools`, when given) that
/// are not terminated yet, plus those of `ids` that still exist.
pub async fn karpenter_instances(ec2: &aws_sdk_ec2::Client, cluster: &str, pools: Option<&[String]>, ids: &[String]) -> anyhow::Result<Vec<String>> {
    use aws_sdk_ec2::types::Filter;
    let f = |name: &str, values: Vec<String>| Filter::builder().name(name).set_values(Some(values)).build();
    let live = || f("instance-state-name", ["pending", "running", "stopping", "stopped"].map(String::from).to_vec());
    let pool_filter = || match pools {
        Some(p) => f(&format!("tag:{POOL_LABEL}"), p.to_vec()),
        None => f("tag-key", vec![POOL_LABEL.into()]),
    };
    let mut queries = vec![
        vec![f(&format!("tag:{}", super::EKS_CLUSTER_TAG), vec![cluster.into()]), pool_filter(), live()],
        vec![f(&format!("tag:kubernetes.io/cluster/{cluster}"), vec!["owned".into()]), pool_filter(), live()],
        vec![f(&format!("tag:{}", super::LEGACY_CLUSTER_TAG), vec![cluster.into()]), pool_filter(), live()],
    ];
    if !ids.is_empty() {
        queries.push(vec![f("instance-id", ids.to_vec()), live()]);
    }
    let mut out = BTreeSet::new();
    for filters in queries {
        let mut pages = ec2.describe_instances().set_filters(Some(filters)).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("ec2:DescribeInstances", &e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().filter_map(|i| i.instance_id().map(String::from)));
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Removes every finalizer of an object (nobody is left to run them).
async fn release<K>(api: &Api<K>, name: &str) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if crate::kube::not_found(&s) => Ok(()),
        Err(e) => Err(anyhow::Error::from(e).context(format!("removing the finalizers of {name}"))),
    }
}

async fn delete<K>(api: &Api<K>, name: &str) -> anyhow::Result<bool>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if crate::kube::not_found(&s) => Ok(false),
        Err(e) => Err(anyhow::Error::from(e).context(format!("deleting {name}"))),
    }
}

/// Where the step stands: karpctl's pools, and the claims and nodes of the pool set.
struct Seen {
    pools: Vec<String>,
    claims: Vec<String>,
    /// (node, pool, provider id)
    nodes: Vec<(String, String, String)>,
}

impl NodePools {
    async fn seen(&self, client: &kube::Client, managed: &BTreeSet<String>) -> anyhow::Result<Seen> {
        let pools = list_kind(client, &node_pool_resource(), &ListParams::default().labels(&crate::model::ownership::selector(&self.cluster)))
            .await?
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.metadata.name.clone())
            .collect::<Vec<_>>();
        let mut set: BTreeSet<String> = self.config_pools.iter().cloned().collect();
        set.extend(managed.iter().cloned());
        set.extend(pools.iter().cloned());
        let claims = list_kind(client, &node_claim_resource(), &ListParams::default().labels(POOL_LABEL))
            .await?
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.metadata.labels.as_ref().and_then(|l| l.get(POOL_LABEL)).is_some_and(|p| set.contains(p)))
            .filter_map(|c| c.metadata.name)
            .collect();
        let nodes = Api::<Node>::all(client.clone())
            .list(&ListParams::default().labels(POOL_LABEL))
            .await
            .context("listing Karpenter nodes")?
            .items
            .into_iter()
            .filter_map(|n| {
                let pool = n.metadata.labels.as_ref()?.get(POOL_LABEL)?.clone();
                set.contains(&pool).then(|| (n.metadata.name.clone().unwrap_or_default(), pool, n.spec.and_then(|s| s.provider_id).unwrap_or_default()))
            })
            .collect();
        Ok(Seen { pools, claims, nodes })
    }

    /// Pods on `node` that must leave it.
    async fn movable(client: &kube::Client, node: &str) -> anyhow::Result<Vec<Pod>> {
        let pods = Api::<Pod>::all(client.clone())
            .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
            .await
            .with_context(|| format!("listing the pods on node {node}"))?;
        Ok(pods.items.into_iter().filter(|p| !super::stays(p)).collect())
    }

    async fn budgets(client: &kube::Client) -> anyhow::Result<Vec<PodDisruptionBudget>> {
        Ok(Api::<PodDisruptionBudget>::all(client.clone()).list(&ListParams::default()).await.context("listing PodDisruptionBudgets")?.items)
    }

    /// One pass of karpctl's own drain: cordon each node, evict what is on it
    /// (concurrently). Returns the pods still there (evicted ones that are terminating included).
    async fn drain_pass(&self, cx: &StepCx<'_>, client: &kube::Client, nodes: &[String], left: Duration, evicted: &mut Vec<String>) -> anyhow::Result<Vec<Stuck>> {
        let wait = EVICTION_WAIT.min(left).max(Duration::from_millis(500));
        let node_api = Api::<Node>::all(client.clone());
        let pdbs = Self::budgets(client).await?;
        let mut stuck = Vec::new();
        let mut candidates = Vec::new();
        for node in nodes {
            let Some(n) = node_api.get_opt(node).await.with_context(|| format!("reading node {node}"))? else { continue };
            if !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
                cx.progress(format!("cordoning node {node}"));
                node_api
                    .patch(node, &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": true}})))
                    .await
                    .with_context(|| format!("cordoning node {node}"))?;
            }
            for p in Self::movable(client, node).await? {
                if p.metadata.deletion_timestamp.is_some() {
                    stuck.push(Stuck { pod: pod_ref(&p), node: node.clone(), why: "evicted, still terminating".into() });
                } else {
                    candidates.push((node.clone(), p));
                }
            }
        }
        let results = futures::future::join_all(candidates.iter().map(|(_, p)| {
            let api: Api<Pod> = Api::namespaced(client.clone(), p.metadata.namespace.as_deref().unwrap_or("default"));
            let name = p.metadata.name.clone().unwrap_or_default();
            // The client retries 429 (a budget said no) for minutes; one refusal is the answer.
            async move { tokio::time::timeout(wait, api.evict(&name, &EvictParams::default())).await }
        }))
        .await;
        for ((node, p), result) in candidates.into_iter().zip(results) {
            let r = pod_ref(&p);
            let names = blocking(&p, &pdbs);
            let refused = |detail: String| {
                if names.is_empty() {
                    format!("eviction refused: {detail}")
                } else {
                    format!("blocked by PodDisruptionBudget {}", names.join(", "))
                }
            };
            match result {
                Ok(Ok(_)) => {
                    cx.progress(format!("evicted {r} from {node}"));
                    evicted.push(r.clone());
                    stuck.push(Stuck { pod: r, node, why: "evicted, still terminating".into() });
                }
                Ok(Err(kube::Error::Api(s))) if crate::kube::not_found(&s) => {}
                Ok(Err(kube::Error::Api(s))) if s.code == 429 => {
                    let causes: Vec<String> = s.details.iter().flat_map(|d| d.causes.iter()).map(|c| c.message.clone()).collect();
                    let detail = format!("{}{}", s.message, if causes.is_empty() { String::new() } else { format!(" ({})", causes.join("; ")) });
                    stuck.push(Stuck { pod: r, node, why: refused(detail) });
                }
                Err(_) => stuck.push(Stuck { pod: r, node, why: refused("the API server kept answering 429 Too Many Requests".into()) }),
                Ok(Err(e)) => stuck.push(Stuck { pod: r, node, why: format!("eviction failed: {e}") }),
            }
        }
        Ok(stuck)
    }

    /// While Karpenter drains: what is still on the nodes and what holds it.
    async fn waiting_on(client: &kube::Client, nodes: &[String]) -> anyhow::Result<Vec<Stuck>> {
        let pdbs = Self::budgets(client).await?;
        let mut out = Vec::new();
        for node in nodes {
            for p in Self::movable(client, node).await? {
                let names = blocking(&p, &pdbs);
                let why = if p.metadata.deletion_timestamp.is_some() {
                    "being evicted, still terminating".to_string()
                } else if !names.is_empty() {
                    format!("blocked by PodDisruptionBudget {}", names.join(", "))
                } else {
                    "waiting for Karpenter to drain the node".to_string()
                };
                out.push(Stuck { pod: pod_ref(&p), node: node.clone(), why });
            }
        }
        Ok(out)
    }

    /// `--force`: terminates the instances left and deletes their Node and NodeClaim objects.
    async fn terminate(&self, cx: &StepCx<'_>, client: &kube::Client, seen: &Seen, pools: &[String]) -> anyhow::Result<Vec<String>> {
        let ids: Vec<String> = seen.nodes.iter().filter_map(|(_, _, p)| instance_id(p)).collect();
        let instances = karpenter_instances(&self.ec2, &self.cluster, Some(pools), &ids).await?;
        let mut removed = Vec::new();
        if !instances.is_empty() {
            cx.progress(format!("TerminateInstances {}", instances.join(", ")));
            self.ec2
                .terminate_instances()
                .set_instance_ids(Some(instances.clone()))
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:TerminateInstances", &e))?;
            removed.extend(instances.iter().map(|i| format!("instance {i} (terminated with --force)")));
        }
        let nodes = Api::<Node>::all(client.clone());
        for (n, _, _) in &seen.nodes {
            release(&nodes, n).await?;
            delete(&nodes, n).await?;
            removed.push(format!("Node/{n}"));
        }
        let claims: Api<DynamicObject> = Api::all_with(client.clone(), &node_claim_resource());
        for c in &seen.claims {
            release(&claims, c).await?;
            delete(&claims, c).await?;
            removed.push(format!("NodeClaim/{c}"));
        }
        Ok(removed)
    }
}

fn report(stuck: &[Stuck]) -> String {
    stuck.iter().map(|s| format!("  {} on node {}: {}", s.pod, s.node, s.why)).collect::<Vec<_>>().join("\n")
}

impl Step for NodePools {
    fn id(&self) -> String {
        super::NODEPOOLS.into()
    }
    fn kind(&self) -> &'static str {
        "rollback-nodepools"
    }
    fn layer(&self) -> crate::engine::Layer {
        crate::engine::Layer::Kubernetes
    }
    fn deps(&self) -> Vec<String> {
        self.deps.clone()
    }
    fn always_observe(&self) -> bool {
        true
    }
    fn inputs(&self) -> Value {
        json!({"selector": crate::model::ownership::selector(&self.cluster), "configPools": self.config_pools, "force": self.force})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(CLUSTER)).await?;
            cx.progress("reading NodePools, NodeClaims and Karpenter nodes");
            let mut managed: BTreeSet<String> = cx.previous.map(|p| strings(&p["pools"]).into_iter().collect()).unwrap_or_default();
            managed.extend(self.recorded.iter().filter_map(|r| r.strip_prefix("NodePool/").map(String::from)));
            let seen = self.seen(&client, &managed).await?;
            let mut nodes = Vec::new();
            for (n, pool, provider) in &seen.nodes {
                let pods = Self::movable(&client, n).await?.len();
                nodes.push(json!({"name": n, "pool": pool, "providerID": provider, "pods": pods}));
            }
            let controller = controller_available(&client, &self.namespace).await?;
            // Pools karpctl applied that are gone already (an interrupted run deleted them).
            let gone: Vec<String> = self.recorded.iter().filter(|r| !seen.pools.iter().any(|p| **r == format!("NodePool/{p}"))).cloned().collect();
            Ok(json!({"pools": seen.pools, "claims": seen.claims, "nodes": nodes, "controller": controller, "managed": managed, "gone": gone,
                      "previous": cx.previous.cloned().unwrap_or(Value::Null)}))
        })
    }
    fn diff(&self, o: &Value, _cx: &StepCx<'_>) -> Change {
        let pools = strings(&o["pools"]);
        let claims = strings(&o["claims"]);
        let nodes: Vec<&Value> = o["nodes"].as_array().into_iter().flatten().collect();
        if pools.is_empty() && claims.is_empty() && nodes.is_empty() {
            return Change::none();
        }
        let pods: u64 = nodes.iter().map(|n| n["pods"].as_u64().unwrap_or(0)).sum();
        let controller = o["controller"].as_i64().map(|n| n as i32);
        let mut parts = Vec::new();
        if !pools.is_empty() {
            parts.push(format!("delete NodePool(s) {}", pools.join(", ")));
        }
        if !nodes.is_empty() {
            match controller {
                Some(n) if n > 0 => parts.push(format!(
                    "Karpenter drains and removes {} node(s), honoring PodDisruptionBudgets ({pods} pod(s) to move)",
                    nodes.len()
                )),
                _ => parts.push(format!(
                    "the controller is {}: karpctl cordons {} node(s) and evicts their {pods} pod(s) through the Eviction API (PodDisruptionBudgets apply), {}",
                    controller_text(controller),
                    nodes.len(),
                    if self.force { "then terminates their instances by their Karpenter tags (--force)" } else { "and needs --force to terminate their instances" }
                )),
            }
        } else if !claims.is_empty() {
            parts.push(format!("wait for {} NodeClaim(s) to go", claims.len()));
        }
        let mut fields: Vec<FieldChange> = pools.iter().map(|p| FieldChange { field: format!("NodePool/{p}"), old: json!("exists"), new: Value::Null }).collect();
        fields.extend(nodes.iter().map(|n| FieldChange {
            field: format!("Node/{}", n["name"].as_str().unwrap_or("?")),
            old: json!(format!("{} pod(s), pool {}", n["pods"], n["pool"].as_str().unwrap_or("?"))),
            new: json!("drained, removed"),
        }));
        Change::new(Action::Delete, parts.join("; ")).with_fields(fields)
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, o: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(CLUSTER)).await?;
            let pools = strings(&o["pools"]);
            let mut managed: BTreeSet<String> = pools.iter().cloned().collect();
            managed.extend(strings(&o["managed"]));
            let pool_api: Api<DynamicObject> = Api::all_with(client.clone(), &node_pool_resource());
            let mut removed: Vec<String> = strings(&o["gone"]);
            for p in &pools {
                cx.progress(format!("deleting NodePool {p}"));
                delete(&pool_api, p).await?;
                removed.push(format!("NodePool/{p}"));
            }
            let mut all_pools: Vec<String> = self.config_pools.iter().cloned().chain(managed.iter().cloned()).collect();
            all_pools.sort();
            all_pools.dedup();
            let started = tokio::time::Instant::now();
            let mut pace = crate::kube::Pace::new();
            let mut evicted = Vec::new();
            let mut gone_nodes: BTreeSet<String> = BTreeSet::new();
            let mut forced = false;
            let mut drained_by = "karpenter";
            loop {
                let seen = self.seen(&client, &managed).await?;
                if seen.nodes.is_empty() && seen.claims.is_empty() {
                    break;
                }
                gone_nodes.extend(seen.nodes.iter().map(|n| n.0.clone()));
                let node_names: Vec<String> = seen.nodes.iter().map(|n| n.0.clone()).collect();
                let available = controller_available(&client, &self.namespace).await?;
                let healthy = available.is_some_and(|n| n > 0);
                let timed_out = started.elapsed() >= self.timeout;
                let stuck = if healthy {
                    if timed_out { Self::waiting_on(&client, &node_names).await? } else { Vec::new() }
                } else {
                    drained_by = "karpctl";
                    self.drain_pass(cx, &client, &node_names, self.timeout.saturating_sub(started.elapsed()), &mut evicted).await?
                };
                // Drained, but with no controller nobody terminates the nodes: only --force goes on.
                let drained_orphans = !healthy && stuck.is_empty();
                if (drained_orphans || timed_out) && self.force && !forced {
                    if !stuck.is_empty() {
                        cx.progress(format!("--force: {} pod(s) could not be moved and go with their nodes:\n{}", stuck.len(), report(&stuck)));
                    }
                    removed.extend(self.terminate(cx, &client, &seen, &all_pools).await?);
                    forced = true;
                    continue;
                }
                if drained_orphans {
                    anyhow::bail!(
                        "drained {} Karpenter node(s) ({}) with {} NodeClaim(s), but the controller is {} so nothing terminates their instances\n\
                         help: run `karpctl rollback --force` to terminate them by their Karpenter tags, or start the controller again and run `karpctl rollback`",
                        node_names.len(),
                        node_names.join(", "),
                        seen.claims.len(),
                        controller_text(available)
                    );
                }
                if timed_out {
                    let left = format!("{} node(s) ({}) and {} NodeClaim(s) remain", node_names.len(), node_names.join(", "), seen.claims.len());
                    if stuck.is_empty() {
                        anyhow::bail!(
                            "the Karpenter nodes are not gone after {}s: {left}\nhelp: look at `kubectl get nodeclaims` and the controller's logs, then run \
                             `karpctl rollback` again; `karpctl rollback --force` terminates the instances",
                            self.timeout.as_secs()
                        );
                    }
                    anyhow::bail!(
                        "{} pod(s) could not be moved off Karpenter nodes within {}s (the controller is {}):\n{}\n{left}\n\
                         help: let those PodDisruptionBudgets allow a disruption (or move the pods yourself), then run `karpctl rollback` again; \
                         `karpctl rollback --force` terminates the nodes' instances regardless",
                        stuck.len(),
                        self.timeout.as_secs(),
                        controller_text(available),
                        report(&stuck)
                    );
                }
                let left = format!("{} node(s), {} NodeClaim(s)", node_names.len(), seen.claims.len());
                let secs = started.elapsed().as_secs();
                if healthy {
                    cx.progress(format!("Karpenter is draining: {left} left ({secs}s)"));
                } else {
                    cx.progress(format!("karpctl is draining: {left} left, {} pod(s) still on them ({secs}s)", stuck.len()));
                }
                pace.wait().await;
            }
            for n in gone_nodes {
                let r = format!("Node/{n}");
                if !removed.contains(&r) {
                    removed.push(r);
                }
            }
            Ok(json!({
                "pools": managed,
                "drainedBy": drained_by,
                "evicted": evicted,
                "forced": forced,
                "removed": super::removed(cx.previous, &removed),
            }))
        })
    }
    fn outputs_from(&self, o: &Value) -> Value {
        super::unchanged(&o["previous"], json!({"pools": o["managed"], "drainedBy": null, "evicted": [], "forced": false, "removed": o["gone"]}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdb(ns: &str, name: &str, selector: Value, allowed: i32) -> PodDisruptionBudget {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns}, "spec": {"selector": selector},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}}))
        .unwrap()
    }

    #[test]
    fn a_budget_blocks_only_the_pods_it_selects_in_its_namespace() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "db-0", "namespace": "data", "labels": {"app": "db", "tier": "a"}}})).unwrap();
        let pdbs = vec![
            pdb("data", "db", json!({"matchLabels": {"app": "db"}}), 0),
            pdb("data", "loose", json!({"matchLabels": {"app": "db"}}), 1),
            pdb("other", "db", json!({"matchLabels": {"app": "db"}}), 0),
            pdb("data", "web", json!({"matchLabels": {"app": "web"}}), 0),
            pdb("data", "expr", json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]}), 0),
            pdb("data", "all", json!({}), 0),
        ];
        assert_eq!(blocking(&pod, &pdbs), ["data/db (0 disruptions allowed)", "data/expr (0 disruptions allowed)", "data/all (0 disruptions allowed)"]);
    }

    #[test]
    fn selector_operators() {
        let labels: BTreeMap<String, String> = [("a".to_string(), "1".to_string())].into();
        let sel = |v: Value| serde_json::from_value::<LabelSelector>(v).unwrap();
        assert!(selects(Some(&sel(json!({"matchExpressions": [{"key": "b", "operator": "DoesNotExist"}]}))), &labels));
        assert!(selects(Some(&sel(json!({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["2"]}]}))), &labels));
        assert!(!selects(Some(&sel(json!({"matchExpressions": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]}))), &labels));
        assert!(!selects(None, &labels), "a budget without selector selects nothing");
    }

    #[test]
    fn provider_ids_give_instance_ids() {
        assert_eq!(instance_id("aws:///us-west-2a/i-0123abcd").as_deref(), Some("i-0123abcd"));
        assert_eq!(instance_id("kind://docker/x"), None);
    }
}
