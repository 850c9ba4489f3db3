//! A controller simulator for the Kubernetes test bed.
//!
//! The bed (scripts/testbed-kube.sh) is a real kube-apiserver + etcd with no controllers and
//! no kubelets, so nothing ever becomes Ready on it. [`tick`] makes one reconcile pass of what
//! kube-controller-manager, the kubelets, the scheduler and the Karpenter controller would do,
//! only through the API (status subresource, merge patches, pods/binding, namespaces/finalize),
//! so everything it writes is validated like a real controller's writes. [`run`] repeats it.
//!
//! Simulated, one function each:
//! - **namespaces**: a `default` ServiceAccount in every active namespace; a terminating
//!   namespace has the kinds it knows about deleted and is then finalized.
//! - **deployments**: an owned ReplicaSet per pod template (so `helm --wait` finds its "new"
//!   ReplicaSet), older ones scaled to 0, orphaned ones deleted, and the Deployment Available
//!   with every replica ready, unless annotated `karpctl.testbed/stuck: "true"`. No pods are
//!   created for them.
//! - **replica sets** that no Deployment owns (a test's workload): their pods, kept at
//!   `replicas` (an evicted pod is replaced), and their status.
//! - **daemon sets**: scheduled and ready on every Node matching the template's nodeSelector,
//!   required node affinity and tolerations. No pods are created for them.
//! - **EC2NodeClasses**: Ready with the dependent conditions, `status.instanceProfile` and the
//!   `karpenter.k8s.aws/termination` finalizer (released once no NodeClaim uses the class),
//!   unless `spec.tags` has `karpctl.testbed/not-ready`: then AMIsReady=False (AMINotFound,
//!   message = the tag's value) and Ready=False.
//! - **NodePools**: Ready when their EC2NodeClass is, `status.nodes` and `status.resources`.
//! - **provisioning**: a pending pod that selects a Ready NodePool (`karpenter.sh/nodepool` in
//!   its nodeSelector or required node affinity), tolerates the pool's taints and whose other
//!   constraints the pool can satisfy gets a NodeClaim and a Node of that pool (one new node
//!   per pool per pass; existing nodes of the pool take up to 10 pods) and is bound to it.
//! - **node claims**: launched (Node created, Launched/Registered/Initialized/Ready), deleted
//!   when their NodePool is gone, and on deletion their Node is removed and the
//!   `karpenter.sh/termination` finalizers are released. Karpenter nodes whose NodeClaim and
//!   NodePool are both gone are deleted.
//! - **kubelet and pod GC**: bound pods go Running with ready containers, terminating bound pods
//!   are removed (so evictions and drains complete), pods bound to a Node that no longer exists
//!   are deleted; nodes of the real Karpenter's kwok build (label `kwok.x-k8s.io/node=fake`) are
//!   reported Ready; the `node.kubernetes.io/not-ready` taint goes once a node is Ready.
//! - **garbage collection** (own loop): NodeClaims whose owning NodePool is gone and Nodes whose
//!   owning NodeClaim is gone are deleted (what deleting a NodePool relies on).
//! - **scheduler** (see [`Options::scheduler`]): pending pods are bound to a Ready node they
//!   fit on (nodeSelector, required node affinity, taints, requests against allocatable), or
//!   marked `PodScheduled=False` reason `Unschedulable`.
//! - **disruption budgets** (beside a real Karpenter only): each PodDisruptionBudget's status
//!   from the pods it selects, so the API server's eviction checks see what a cluster would.
//!
//! [`Options`] picks the parts: the default is the fake Karpenter without the scheduler (as it
//! always was). With [`Karpenter::Real`] (the simulator runs the real controller for the
//! Karpenter Deployment, [`controller`]) or [`Karpenter::External`] (someone else runs it, e.g.
//! `scripts/testbed-karpenter.sh smoke`; [`Options::real_karpenter`]) the fake Karpenter is off
//! and the scheduler on.
//!
//! Not simulated: pods for Deployments/DaemonSets/Jobs, preemption, pod affinity and topology
//! spread in the scheduler, PodDisruptionBudget status beside the fake Karpenter (tests set it),
//! in the fake Karpenter: NodePool limits, disruption, drift, expiry, consolidation,
//! interruption handling and CPU/memory bin-packing (a node takes 10 pods); foreground/orphan
//! deletion and garbage collection beyond the cases above, leader election, events.
#![allow(clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{Debug, Display};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context, Result};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Affinity, Namespace, Node, Pod, PodSpec, ServiceAccount, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// A Deployment with this annotation set to "true" is never made available.
pub const STUCK_ANNOTATION: &str = "karpctl.testbed/stuck";
/// An EC2NodeClass with this key in `spec.tags` stays not Ready; the tag's value is the message.
pub const NOT_READY_TAG: &str = "karpctl.testbed/not-ready";
/// How many pods the simulator puts on one node before launching another.
pub const PODS_PER_NODE: usize = 10;

pub mod controller;

/// Who plays the Karpenter controller.
#[derive(Clone, Default)]
pub enum Karpenter {
    /// The simulator's own stand-in (the functions under "Karpenter" below).
    #[default]
    Simulated,
    /// The real controller, run as a process for each Karpenter Deployment ([`controller`]);
    /// the simulator then plays only the cluster's own controllers and kubelets.
    Real(std::sync::Arc<controller::Runner>),
    /// The real controller, started by someone else against this bed (e.g.
    /// `scripts/testbed-karpenter.sh smoke`); the simulator plays only the cluster's part.
    External,
}

/// What the simulator plays. The cluster's own controllers (namespaces, deployments, daemon
/// sets, node lifecycle, the garbage collector's part for Karpenter's kinds) and the kubelets
/// (kwok nodes included) always run.
#[derive(Clone, Default)]
pub struct Options {
    pub karpenter: Karpenter,
    /// A minimal kube-scheduler: binds pending pods to Ready nodes they fit on and marks the
    /// others `PodScheduled=False` reason `Unschedulable` (what makes the real Karpenter
    /// provision). None: on exactly when the stand-in Karpenter is not (it binds the pods it
    /// launches nodes for itself).
    pub scheduler: Option<bool>,
}

impl Options {
    /// For a bed where the real controller runs, started by the caller: no stand-in
    /// Karpenter, the scheduler on.
    pub fn real_karpenter() -> Options {
        Options { karpenter: Karpenter::External, scheduler: None }
    }

    /// Whether the scheduler runs.
    pub fn scheduler_on(&self) -> bool {
        self.scheduler.unwrap_or(!matches!(self.karpenter, Karpenter::Simulated))
    }
}

const MANAGER: &str = "karpctl-testbed-sim";
const POOL_LABEL: &str = "karpenter.sh/nodepool";
const CLASS_LABEL: &str = "karpenter.k8s.aws/ec2nodeclass";
const TERMINATION: &str = "karpenter.sh/termination";
const CLASS_TERMINATION: &str = "karpenter.k8s.aws/termination";
const GPU: &str = "nvidia.com/gpu";
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";
const GPU_COUNT_LABEL: &str = "karpenter.k8s.aws/instance-gpu-count";
const ZONE: &str = "topology.kubernetes.io/zone";
const INSTANCE_TYPE: &str = "node.kubernetes.io/instance-type";
const ARCH: &str = "kubernetes.io/arch";
const CAPACITY_TYPE: &str = "karpenter.sh/capacity-type";

fn crd(group: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// karpenter.sh/v1 NodePool.
pub fn node_pool_resource() -> ApiResource {
    crd("karpenter.sh", "NodePool", "nodepools")
}

/// karpenter.sh/v1 NodeClaim.
pub fn node_claim_resource() -> ApiResource {
    crd("karpenter.sh", "NodeClaim", "nodeclaims")
}

/// karpenter.k8s.aws/v1 EC2NodeClass.
pub fn ec2_node_class_resource() -> ApiResource {
    crd("karpenter.k8s.aws", "EC2NodeClass", "ec2nodeclasses")
}

// ---------------------------------------------------------------------------------------------
// The loop
// ---------------------------------------------------------------------------------------------

/// One reconcile pass over everything the simulator fakes. Returns how many writes it made
/// (0 once the bed has converged). Every step runs even when an earlier one failed; the
/// failures are returned together afterwards.
pub async fn tick(client: &Client) -> Result<usize> {
    tick_with(client, &Options::default()).await
}

/// [`tick`] with the given roles (e.g. [`Options::real_karpenter`] when the real Karpenter
/// controller runs against the bed).
pub async fn tick_with(client: &Client, opts: &Options) -> Result<usize> {
    let (mut pass, b, gc) = tokio::join!(workloads(client, opts), karpenter_role(client, opts), collector(client));
    for other in [b, gc] {
        pass.changed += other.changed;
        pass.errors.extend(other.errors);
    }
    pass.result()
}

/// The controllers a cluster runs for itself (namespace, deployment, daemon set, node
/// lifecycle controllers, the scheduler when on, and the kubelets, including the kubelet of
/// the real Karpenter's kwok nodes). Independent of [`karpenter`]: listing a Karpenter kind
/// right after its CRD appeared can stall while the API server builds its watch cache, and a
/// real cluster's controllers would not wait for that.
async fn workloads(client: &Client, opts: &Options) -> Pass {
    let mut pass = Pass::default();
    let r = namespaces(client, &mut pass).await;
    pass.step("namespaces", r);
    if let Karpenter::Real(runner) = &opts.karpenter {
        match runner.reconcile(client).await {
            Ok(did) => did.into_iter().for_each(|d| pass.did(d)),
            Err(e) => pass.fail("karpenter controller", e),
        }
    }
    let r = deployments(client, opts, &mut pass).await;
    pass.step("deployments", r);
    let r = workload_replica_sets(client, &mut pass).await;
    pass.step("replicasets", r);
    let r = kwok_nodes(client, &mut pass).await;
    pass.step("kwok nodes", r);
    let r = node_lifecycle(client, &mut pass).await;
    pass.step("node lifecycle", r);
    if opts.scheduler_on() {
        let r = scheduler(client, &mut pass).await;
        pass.step("scheduler", r);
    }
    let r = kubelet(client, &mut pass).await;
    pass.step("pods", r);
    let r = daemon_sets(client, &mut pass).await;
    pass.step("daemonsets", r);
    // Evictions by a real Karpenter need budgets that follow the pods; the stand-in
    // ignores PDBs, and tests that run it set their status by hand.
    if !matches!(opts.karpenter, Karpenter::Simulated) {
        let r = disruption_budgets(client, &mut pass).await;
        pass.step("poddisruptionbudgets", r);
    }
    pass
}

/// kube-controller-manager's disruption controller: each PodDisruptionBudget's status from
/// the pods its selector matches (terminating pods are not healthy; `minAvailable` or
/// `maxUnavailable`, as a number or a percentage of the matched pods, rounded up as the
/// controller does), so that the API server's eviction checks see what a cluster would.
async fn disruption_budgets(c: &Client, pass: &mut Pass) -> Result<()> {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let pdbs = Api::<PodDisruptionBudget>::all(c.clone()).list(&ListParams::default()).await?.items;
    if pdbs.is_empty() {
        return Ok(());
    }
    let pods = Api::<Pod>::all(c.clone()).list(&ListParams::default()).await?.items;
    for pdb in &pdbs {
        let ns = pdb.namespace().unwrap_or_default();
        let Some(spec) = &pdb.spec else { continue };
        let labels = spec.selector.as_ref().and_then(|s| s.match_labels.clone()).unwrap_or_default();
        let matched: Vec<&Pod> = pods
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
            .filter(|p| labels.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
            .filter(|p| !terminal(p))
            .collect();
        let expected = matched.len() as i32;
        let healthy = matched.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p)).count() as i32;
        let scaled = |v: &IntOrString| match v {
            IntOrString::Int(n) => *n,
            IntOrString::String(pct) => {
                let p: f64 = pct.trim_end_matches('%').parse().unwrap_or(0.0);
                (p * expected as f64 / 100.0).ceil() as i32
            }
        };
        let desired = match (&spec.min_available, &spec.max_unavailable) {
            (Some(min), _) => scaled(min),
            (None, Some(max)) => (expected - scaled(max)).max(0),
            (None, None) => 0,
        };
        let want = json!({
            "observedGeneration": pdb.metadata.generation.unwrap_or(1),
            "currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
            "disruptionsAllowed": (healthy - desired).max(0),
        });
        let api = Api::<PodDisruptionBudget>::namespaced(c.clone(), &ns);
        let name = pdb.name_any();
        match set_status(&api, &name, &serde_json::to_value(&pdb.status)?, want).await {
            Ok(true) => pass.did(format!("poddisruptionbudget {ns}/{name}: {healthy} healthy, {desired} desired")),
            Ok(false) => {}
            Err(e) => pass.fail(format!("poddisruptionbudget {ns}/{name}"), e),
        }
    }
    Ok(())
}

/// The Karpenter role: the stand-in below, or nothing when the real controller runs.
async fn karpenter_role(client: &Client, opts: &Options) -> Pass {
    match opts.karpenter {
        Karpenter::Simulated => karpenter(client).await,
        Karpenter::Real(_) | Karpenter::External => Pass::default(),
    }
}

/// The garbage collector's part for Karpenter's kinds, in a loop of its own: it lists
/// NodeClaims, which can stall right after the CRDs appear (see [`workloads`]).
async fn collector(client: &Client) -> Pass {
    let mut pass = Pass::default();
    let r = garbage_collection(client, &mut pass).await;
    pass.step("garbage collection", r);
    pass
}

/// What the Karpenter controller does: node classes, pools, claims, its nodes, and
/// provisioning for pending pods.
async fn karpenter(client: &Client) -> Pass {
    let mut pass = Pass::default();
    let r = node_classes(client, &mut pass).await;
    pass.step("ec2nodeclasses", r);
    let r = node_pools(client, &mut pass).await;
    pass.step("nodepools", r);
    let r = node_claims(client, &mut pass).await;
    pass.step("nodeclaims", r);
    let r = karpenter_nodes(client, &mut pass).await;
    pass.step("nodes", r);
    let r = provisioning(client, &mut pass).await;
    pass.step("provisioning", r);
    pass
}

/// What a managed nodegroup's instances do when they boot: join as Ready nodes labelled
/// `eks.amazonaws.com/nodegroup=<name>` (4 CPU / 16 GiB) until `desired` exist. Never
/// removes nodes (EKS drains before it scales in; nothing here needs that). Returns how
/// many nodes it added.
pub async fn nodegroup_nodes(c: &Client, nodegroup: &str, desired: usize) -> Result<usize> {
    let api: Api<Node> = Api::all(c.clone());
    let have = api.list(&ListParams::default().labels(&format!("eks.amazonaws.com/nodegroup={nodegroup}"))).await?.items;
    let mut added = 0;
    for i in 0..desired {
        let name = format!("{nodegroup}-{i}");
        if have.iter().any(|n| n.metadata.name.as_deref() == Some(name.as_str())) {
            continue;
        }
        if have.len() + added >= desired {
            break;
        }
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "eks.amazonaws.com/nodegroup": nodegroup, "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": "m5.xlarge", "topology.kubernetes.io/zone": "us-west-2a"}},
            "spec": {"providerID": format!("aws:///us-west-2a/i-{:017x}", fnv(name.as_bytes()) >> 4)}
        }))?;
        match api.create(&post(), &node).await {
            Ok(_) => {}
            Err(e) if code(&e) == Some(409) => continue,
            Err(e) => return Err(e.into()),
        }
        let status = json!({"status": {
            "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
            "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated nodegroup node",
                            "lastHeartbeatTime": now(), "lastTransitionTime": now()}]}});
        api.patch_status(&name, &pp(), &Patch::Merge(&status)).await?;
        log(format!("node {name}: joined nodegroup {nodegroup}"));
        added += 1;
    }
    Ok(added)
}

/// Runs the controllers every `interval` until `stop` turns true (or its sender is
/// dropped): the cluster's own and Karpenter's as two independent loops, so one stalled
/// list does not hold up the other. Errors are logged (the same one at most every 30 s) and
/// the loops go on: the API server may be restarting.
pub async fn run(client: Client, interval: Duration, stop: tokio::sync::watch::Receiver<bool>) {
    run_with(client, interval, stop, Options::default()).await
}

/// [`run`] with the given roles; a real controller is stopped when the loops end.
pub async fn run_with(client: Client, interval: Duration, stop: tokio::sync::watch::Receiver<bool>, opts: Options) {
    tokio::join!(
        control_loop(&client, &opts, interval, stop.clone(), Controllers::Workloads),
        control_loop(&client, &opts, interval, stop.clone(), Controllers::Collector),
        control_loop(&client, &opts, interval, stop, Controllers::Karpenter),
    );
    if let Karpenter::Real(runner) = &opts.karpenter {
        runner.shutdown().await;
    }
    log("stopped");
}

#[derive(Clone, Copy)]
enum Controllers {
    Workloads,
    Karpenter,
    Collector,
}

async fn control_loop(client: &Client, opts: &Options, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>, which: Controllers) {
    let mut last_error: Option<(String, Instant)> = None;
    let stopped = |stop: &tokio::sync::watch::Receiver<bool>| *stop.borrow() || stop.has_changed().is_err();
    let pass = || async {
        match which {
            Controllers::Workloads => workloads(client, opts).await,
            Controllers::Karpenter => karpenter_role(client, opts).await,
            Controllers::Collector => collector(client).await,
        }
        .result()
    };
    while !stopped(&stop) {
        tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(60), pass()) => match r {
                Ok(Ok(_)) => last_error = None,
                Ok(Err(e)) => report(&mut last_error, format!("{e:#}")),
                Err(_) => report(&mut last_error, "a pass took longer than 60s".into()),
            },
            _ = stop.changed() => {}
        }
        if stopped(&stop) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => {}
        }
    }
}

fn report(last: &mut Option<(String, Instant)>, msg: String) {
    let repeat = matches!(last, Some((m, t)) if *m == msg && t.elapsed() < Duration::from_secs(30));
    if !repeat {
        log(format!("error: {msg}"));
        *last = Some((msg, Instant::now()));
    }
}

fn log(msg: impl Display) {
    eprintln!("{} testbed-sim: {msg}", now());
}

/// What one pass did: the writes (each logged) and the failures.
#[derive(Default)]
struct Pass {
    changed: usize,
    errors: Vec<String>,
}

impl Pass {
    fn did(&mut self, what: impl Display) {
        self.changed += 1;
        log(what);
    }

    /// A conflict (someone changed the object since it was read) is retried next pass, like a
    /// controller's requeue; it counts as a change so that the bed is not taken as converged.
    fn fail(&mut self, what: impl Display, e: anyhow::Error) {
        if e.chain().any(|c| c.downcast_ref::<kube::Error>().and_then(code) == Some(409)) {
            self.did(format!("{what}: conflict, retrying next pass"));
        } else {
            self.errors.push(format!("{what}: {e:#}"));
        }
    }

    fn result(self) -> Result<usize> {
        if self.errors.is_empty() {
            Ok(self.changed)
        } else {
            Err(anyhow!("{} change(s), {} error(s):\n  {}", self.changed, self.errors.len(), self.errors.join("\n  ")))
        }
    }

    fn step(&mut self, what: &str, r: Result<()>) {
        if let Err(e) = r {
            self.fail(what, e);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces and service accounts
// ---------------------------------------------------------------------------------------------

/// The namespaced kinds a terminating namespace is emptied of.
fn namespaced_kinds() -> Vec<ApiResource> {
    use k8s_openapi::api::{apps, batch, coordination, core, policy, rbac};
    vec![
        ApiResource::erase::<core::v1::Pod>(&()),
        ApiResource::erase::<apps::v1::Deployment>(&()),
        ApiResource::erase::<apps::v1::ReplicaSet>(&()),
        ApiResource::erase::<apps::v1::DaemonSet>(&()),
        ApiResource::erase::<apps::v1::StatefulSet>(&()),
        ApiResource::erase::<batch::v1::Job>(&()),
        ApiResource::erase::<core::v1::ConfigMap>(&()),
        ApiResource::erase::<core::v1::Secret>(&()),
        ApiResource::erase::<core::v1::Service>(&()),
        ApiResource::erase::<core::v1::ServiceAccount>(&()),
        ApiResource::erase::<core::v1::PersistentVolumeClaim>(&()),
        ApiResource::erase::<core::v1::Event>(&()),
        ApiResource::erase::<rbac::v1::Role>(&()),
        ApiResource::erase::<rbac::v1::RoleBinding>(&()),
        ApiResource::erase::<policy::v1::PodDisruptionBudget>(&()),
        ApiResource::erase::<coordination::v1::Lease>(&()),
    ]
}

async fn namespaces(c: &Client, pass: &mut Pass) -> Result<()> {
    let nss = Api::<Namespace>::all(c.clone()).list(&ListParams::default()).await?;
    let sas = Api::<ServiceAccount>::all(c.clone()).list(&ListParams::default().fields("metadata.name=default")).await?;
    let with_default: BTreeSet<String> = sas.items.iter().filter_map(|s| s.metadata.namespace.clone()).collect();
    for ns in &nss.items {
        let name = ns.name_any();
        let r = if ns.metadata.deletion_timestamp.is_some() {
            finish_namespace(c, ns, pass).await
        } else if !with_default.contains(&name) {
            default_service_account(c, &name, pass).await
        } else {
            Ok(())
        };
        if let Err(e) = r {
            pass.fail(format!("namespace {name}"), e);
        }
    }
    Ok(())
}

/// The ServiceAccount controller's job: without `default`, pods are rejected at admission.
async fn default_service_account(c: &Client, ns: &str, pass: &mut Pass) -> Result<()> {
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}}))?;
    match Api::<ServiceAccount>::namespaced(c.clone(), ns).create(&post(), &sa).await {
        Ok(_) => pass.did(format!("created serviceaccount {ns}/default")),
        Err(e) if code(&e) == Some(409) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The namespace controller's job: delete what is left, then drop the `kubernetes` finalizer.
async fn finish_namespace(c: &Client, ns: &Namespace, pass: &mut Pass) -> Result<()> {
    let name = ns.name_any();
    let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
    if !finalizers.iter().any(|f| f == "kubernetes") {
        return Ok(());
    }
    let mut remaining = 0;
    for ar in namespaced_kinds() {
        let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), &name, &ar);
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(e) if code(&e) == Some(404) => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {} in {name}", ar.plural)),
        };
        for obj in list.items {
            remaining += 1;
            let pod = ar.kind == "Pod";
            let meta = &obj.metadata;
            // Already going: it waits on its own finalizers (a pod once more, without grace).
            if meta.deletion_timestamp.is_some() && !(pod && meta.deletion_grace_period_seconds != Some(0)) {
                continue;
            }
            let dp = if pod { now_params() } else { DeleteParams::background() };
            if delete(&api, &obj.name_any(), &dp).await? {
                pass.did(format!("deleted {} {name}/{} (namespace terminating)", ar.kind, obj.name_any()));
            }
        }
    }
    if remaining == 0 {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "spec": {"finalizers": []}});
        Api::<Namespace>::all(c.clone()).replace_subresource("finalize", &name, &post(), &body).await?;
        pass.did(format!("finalized namespace {name}"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Deployments and their ReplicaSets
// ---------------------------------------------------------------------------------------------

async fn deployments(c: &Client, opts: &Options, pass: &mut Pass) -> Result<()> {
    let deploys = Api::<Deployment>::all(c.clone()).list(&ListParams::default()).await?.items;
    let sets = Api::<ReplicaSet>::all(c.clone()).list(&ListParams::default()).await?.items;
    // The garbage collector's part: ReplicaSets whose Deployment is gone.
    let uids: BTreeSet<String> = deploys.iter().filter_map(|d| d.metadata.uid.clone()).collect();
    for rs in &sets {
        let Some(owner) = controller_of(&rs.metadata, "Deployment") else { continue };
        if !uids.contains(&owner) && rs.metadata.deletion_timestamp.is_none() {
            let ns = rs.namespace().unwrap_or_default();
            let api = Api::<ReplicaSet>::namespaced(c.clone(), &ns);
            match delete(&api, &rs.name_any(), &DeleteParams::background()).await {
                Ok(true) => pass.did(format!("deleted replicaset {ns}/{} (its deployment is gone)", rs.name_any())),
                Ok(false) => {}
                Err(e) => pass.fail(format!("replicaset {ns}/{}", rs.name_any()), e),
            }
        }
    }
    for d in &deploys {
        let stuck = d.annotations().get(STUCK_ANNOTATION).is_some_and(|v| v == "true");
        if stuck || d.metadata.deletion_timestamp.is_some() {
            continue;
        }
        // A Deployment whose pod really runs is available only while its process is ready.
        let ready = match &opts.karpenter {
            Karpenter::Real(runner) => runner.ready(d).unwrap_or(true),
            Karpenter::Simulated | Karpenter::External => true,
        };
        if let Err(e) = deployment(c, d, &sets, ready, pass).await {
            pass.fail(format!("deployment {}/{}", d.namespace().unwrap_or_default(), d.name_any()), e);
        }
    }
    Ok(())
}

/// The ReplicaSet controller, for ReplicaSets no Deployment owns (a test's workload): each
/// keeps `replicas` live pods from its template, owned by it, named `<set>-<n>`, so a pod a
/// drain evicted comes back and the scheduler places it elsewhere. Deployments' pods are not
/// made: theirs are the charts' controllers, which run as processes or not at all.
async fn workload_replica_sets(c: &Client, pass: &mut Pass) -> Result<()> {
    let sets = Api::<ReplicaSet>::all(c.clone()).list(&ListParams::default()).await?.items;
    let sets: Vec<&ReplicaSet> = sets.iter().filter(|rs| controller_of(&rs.metadata, "Deployment").is_none() && rs.metadata.deletion_timestamp.is_none()).collect();
    if sets.is_empty() {
        return Ok(());
    }
    let pods = Api::<Pod>::all(c.clone()).list(&ListParams::default()).await?.items;
    for rs in sets {
        let (ns, name, uid) = (rs.namespace().unwrap_or_default(), rs.name_any(), rs.metadata.uid.clone().unwrap_or_default());
        let Some(spec) = &rs.spec else { continue };
        let owned: Vec<&Pod> = pods.iter().filter(|p| controller_of(&p.metadata, "ReplicaSet").as_deref() == Some(uid.as_str())).collect();
        let live = owned.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && !terminal(p)).count() as i32;
        let want = spec.replicas.unwrap_or(1);
        let api = Api::<Pod>::namespaced(c.clone(), &ns);
        let taken: BTreeSet<String> = owned.iter().map(|p| p.name_any()).collect();
        let mut next = 0usize;
        for _ in live..want {
            while taken.contains(&format!("{name}-{next}")) {
                next += 1;
            }
            let pod_name = format!("{name}-{next}");
            next += 1;
            let template = spec.template.clone().unwrap_or_default();
            let mut meta = template.metadata.unwrap_or_default();
            meta.name = Some(pod_name.clone());
            meta.namespace = Some(ns.clone());
            meta.owner_references = Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "apps/v1".into(), kind: "ReplicaSet".into(), name: name.clone(), uid: uid.clone(),
                controller: Some(true), block_owner_deletion: Some(true),
            }]);
            let pod = Pod { metadata: meta, spec: template.spec, status: None };
            match api.create(&post(), &pod).await {
                Ok(_) => pass.did(format!("replicaset {ns}/{name}: created pod {pod_name}")),
                Err(e) if code(&e) == Some(409) => {}
                Err(e) => pass.fail(format!("replicaset {ns}/{name}: pod {pod_name}"), e.into()),
            }
        }
        let ready = owned.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && pod_ready(p)).count() as i32;
        let status = json!({"replicas": live.max(0), "readyReplicas": ready, "availableReplicas": ready, "observedGeneration": rs.metadata.generation.unwrap_or(1)});
        let rs_api = Api::<ReplicaSet>::namespaced(c.clone(), &ns);
        if let Err(e) = set_status(&rs_api, &name, &serde_json::to_value(&rs.status)?, status).await {
            pass.fail(format!("replicaset {ns}/{name}"), e);
        }
    }
    Ok(())
}

fn pod_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn deployment(c: &Client, d: &Deployment, sets: &[ReplicaSet], ready: bool, pass: &mut Pass) -> Result<()> {
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let spec = d.spec.as_ref().context("no spec")?;
    let replicas = spec.replicas.unwrap_or(1);
    let gen = d.metadata.generation.unwrap_or(1);

    // The "new" ReplicaSet: the pod template plus its pod-template-hash, as the controller makes it.
    let template = serde_json::to_value(&spec.template)?;
    let hash = format!("{:016x}", fnv(template.to_string().as_bytes()))[..10].to_string();
    let rs_name = format!("{name}-{hash}");
    let rs_api = Api::<ReplicaSet>::namespaced(c.clone(), &ns);
    let owned: Vec<&ReplicaSet> = sets
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(&ns) && controller_of(&rs.metadata, "Deployment").as_deref() == Some(&uid))
        .collect();
    let rs = match owned.iter().find(|rs| rs.name_any() == rs_name) {
        Some(rs) if rs.spec.as_ref().and_then(|s| s.replicas) == Some(replicas) => (*rs).clone(),
        Some(_) => {
            let rs = rs_api.patch(&rs_name, &pp(), &Patch::Merge(json!({"spec": {"replicas": replicas}}))).await?;
            pass.did(format!("scaled replicaset {ns}/{rs_name} to {replicas}"));
            rs
        }
        None => {
            let mut template = template.clone();
            template["metadata"]["labels"]["pod-template-hash"] = hash.clone().into();
            let mut selector = serde_json::to_value(&spec.selector)?;
            selector["matchLabels"]["pod-template-hash"] = hash.clone().into();
            let rs: ReplicaSet = serde_json::from_value(json!({
                "metadata": {"name": rs_name, "namespace": ns, "labels": template["metadata"]["labels"].clone(),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                                         "controller": true, "blockOwnerDeletion": true}]},
                "spec": {"replicas": replicas, "selector": selector, "template": template}
            }))?;
            let rs = rs_api.create(&post(), &rs).await?;
            pass.did(format!("created replicaset {ns}/{rs_name}"));
            rs
        }
    };
    // Pods of a Deployment whose process is not ready yet are there but not ready.
    let up = if ready { replicas } else { 0 };
    let rs_status = json!({"observedGeneration": rs.metadata.generation.unwrap_or(1), "replicas": replicas,
        "fullyLabeledReplicas": replicas, "readyReplicas": up, "availableReplicas": up});
    if set_status(&rs_api, &rs_name, &serde_json::to_value(&rs.status)?, rs_status).await? {
        pass.did(format!("replicaset {ns}/{rs_name}: {up}/{replicas} ready"));
    }
    for old in owned.iter().filter(|rs| rs.name_any() != rs_name) {
        let old_name = old.name_any();
        if old.spec.as_ref().and_then(|s| s.replicas) != Some(0) {
            rs_api.patch(&old_name, &pp(), &Patch::Merge(json!({"spec": {"replicas": 0}}))).await?;
            pass.did(format!("scaled old replicaset {ns}/{old_name} to 0"));
        }
        let zero = json!({"replicas": 0, "fullyLabeledReplicas": 0, "readyReplicas": 0, "availableReplicas": 0,
            "observedGeneration": old.metadata.generation.unwrap_or(1)});
        if set_status(&rs_api, &old_name, &serde_json::to_value(&old.status)?, zero).await? {
            pass.did(format!("old replicaset {ns}/{old_name}: 0 replicas"));
        }
    }

    let available = if ready {
        cond("Available", true, "MinimumReplicasAvailable", "Deployment has minimum availability.")
    } else {
        cond("Available", false, "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")
    };
    let mut conditions = [
        available,
        cond("Progressing", true, "NewReplicaSetAvailable", &format!("ReplicaSet \"{rs_name}\" has successfully progressed.")),
    ];
    for c in &mut conditions {
        c["lastUpdateTime"] = Value::Null; // filled in when written
    }
    let want = json!({
        "observedGeneration": gen, "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": up,
        "availableReplicas": up, "unavailableReplicas": if up < replicas { json!(replicas - up) } else { Value::Null },
        "conditions": conditions,
    });
    let api = Api::<Deployment>::namespaced(c.clone(), &ns);
    if set_status(&api, &name, &serde_json::to_value(&d.status)?, want).await? {
        pass.did(format!("deployment {ns}/{name}: {up}/{replicas} available (generation {gen})"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// DaemonSets
// ---------------------------------------------------------------------------------------------

/// Taints the DaemonSet controller tolerates on its pods' behalf.
const DAEMON_TOLERATED: [&str; 7] = [
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/unschedulable",
    "node.kubernetes.io/network-unavailable",
];

async fn daemon_sets(c: &Client, pass: &mut Pass) -> Result<()> {
    let sets = Api::<DaemonSet>::all(c.clone()).list(&ListParams::default()).await?.items;
    if sets.is_empty() {
        return Ok(());
    }
    let nodes: Vec<Node> =
        Api::<Node>::all(c.clone()).list(&ListParams::default()).await?.items.into_iter().filter(|n| n.metadata.deletion_timestamp.is_none()).collect();
    for ds in sets.iter().filter(|d| d.metadata.deletion_timestamp.is_none()) {
        let ns = ds.namespace().unwrap_or_default();
        let Some(pod) = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else { continue };
        let n = nodes
            .iter()
            .filter(|node| {
                let taints = node_taints(node);
                let untolerated: Vec<Taint> = taints.into_iter().filter(|t| !DAEMON_TOLERATED.contains(&t.key.as_str())).collect();
                fits(pod, &node.name_any(), node.labels(), &untolerated)
            })
            .count();
        let want = json!({
            "observedGeneration": ds.metadata.generation.unwrap_or(1), "desiredNumberScheduled": n,
            "currentNumberScheduled": n, "updatedNumberScheduled": n, "numberReady": n, "numberAvailable": n,
            "numberMisscheduled": 0, "numberUnavailable": null,
        });
        let api = Api::<DaemonSet>::namespaced(c.clone(), &ns);
        match set_status(&api, &ds.name_any(), &serde_json::to_value(&ds.status)?, want).await {
            Ok(true) => pass.did(format!("daemonset {ns}/{}: {n}/{n} scheduled and ready", ds.name_any())),
            Ok(false) => {}
            Err(e) => pass.fail(format!("daemonset {ns}/{}", ds.name_any()), e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// EC2NodeClasses and NodePools
// ---------------------------------------------------------------------------------------------

async fn node_classes(c: &Client, pass: &mut Pass) -> Result<()> {
    let Some(classes) = list_crd(c, &ec2_node_class_resource()).await? else { return Ok(()) };
    let claims = list_crd(c, &node_claim_resource()).await?.unwrap_or_default();
    let api: Api<DynamicObject> = Api::all_with(c.clone(), &ec2_node_class_resource());
    for class in &classes {
        let name = class.name_any();
        if let Err(e) = node_class(&api, class, &claims, pass).await {
            pass.fail(format!("ec2nodeclass {name}"), e);
        }
    }
    Ok(())
}

async fn node_class(api: &Api<DynamicObject>, class: &DynamicObject, claims: &[DynamicObject], pass: &mut Pass) -> Result<()> {
    let name = class.name_any();
    if class.metadata.deletion_timestamp.is_some() {
        // Karpenter keeps a class (and its instance profile) while NodeClaims still use it.
        let users = claims.iter().filter(|nc| nc.data["spec"]["nodeClassRef"]["name"].as_str() == Some(&name)).count();
        if users == 0 && remove_finalizer(api, &class.metadata, CLASS_TERMINATION).await? {
            pass.did(format!("ec2nodeclass {name}: released (no nodeclaims use it)"));
        }
        return Ok(());
    }
    if add_finalizer(api, &class.metadata, CLASS_TERMINATION).await? {
        pass.did(format!("ec2nodeclass {name}: finalizer {CLASS_TERMINATION}"));
    }
    let spec = &class.data["spec"];
    let conditions = match spec["tags"][NOT_READY_TAG].as_str() {
        Some(why) => vec![
            cond("AMIsReady", false, "AMINotFound", why),
            cond("SubnetsReady", true, "SubnetsReady", ""),
            cond("SecurityGroupsReady", true, "SecurityGroupsReady", ""),
            cond("InstanceProfileReady", true, "InstanceProfileReady", ""),
            cond("ValidationSucceeded", true, "ValidationSucceeded", ""),
            cond("Ready", false, "UnhealthyDependents", "AMIsReady=False"),
        ],
        None => vec![
            cond("AMIsReady", true, "AMIsReady", ""),
            cond("SubnetsReady", true, "SubnetsReady", ""),
            cond("SecurityGroupsReady", true, "SecurityGroupsReady", ""),
            cond("InstanceProfileReady", true, "InstanceProfileReady", ""),
            cond("ValidationSucceeded", true, "ValidationSucceeded", ""),
            cond("Ready", true, "Ready", ""),
        ],
    };
    // Karpenter names generated instance profiles <cluster>_<hash>.
    let profile = match spec["instanceProfile"].as_str() {
        Some(p) => p.to_string(),
        None => {
            let cluster = spec["subnetSelectorTerms"][0]["tags"]["karpenter.sh/discovery"].as_str().unwrap_or("cluster");
            format!("{cluster}_{}", fnv(spec["role"].as_str().unwrap_or(&name).as_bytes()) % 10_000_000_000_000_000_000)
        }
    };
    let want = json!({"conditions": with_generation(conditions, class.metadata.generation), "instanceProfile": profile});
    if set_status(api, &name, &class.data["status"], want).await? {
        let ready = spec["tags"][NOT_READY_TAG].is_null();
        pass.did(format!("ec2nodeclass {name}: {}", if ready { "Ready" } else { "not Ready (karpctl.testbed/not-ready tag)" }));
    }
    Ok(())
}

fn is_ready(obj: &DynamicObject) -> bool {
    let gen = obj.metadata.generation.unwrap_or(1);
    obj.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True" && c["observedGeneration"].as_i64().is_none_or(|g| g == gen))
}

async fn node_pools(c: &Client, pass: &mut Pass) -> Result<()> {
    let Some(pools) = list_crd(c, &node_pool_resource()).await? else { return Ok(()) };
    let classes: HashMap<String, bool> = list_crd(c, &ec2_node_class_resource())
        .await?
        .unwrap_or_default()
        .iter()
        .map(|nc| (nc.name_any(), nc.metadata.deletion_timestamp.is_none() && is_ready(nc)))
        .collect();
    let nodes = Api::<Node>::all(c.clone()).list(&ListParams::default().labels(POOL_LABEL)).await?.items;
    let api: Api<DynamicObject> = Api::all_with(c.clone(), &node_pool_resource());
    for pool in pools.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let name = pool.name_any();
        let class = pool.data["spec"]["template"]["spec"]["nodeClassRef"]["name"].as_str().unwrap_or_default();
        let (ok, reason, message) = match classes.get(class) {
            None => (false, "NodeClassNotFound", format!("EC2NodeClass {class} not found")),
            Some(false) => (false, "NodeClassNotReady", format!("EC2NodeClass {class} not ready")),
            Some(true) => (true, "NodeClassReady", String::new()),
        };
        let conditions = vec![
            cond("ValidationSucceeded", true, "ValidationSucceeded", ""),
            cond("NodeClassReady", ok, reason, &message),
            cond("NodeRegistrationHealthy", true, "NodeRegistrationHealthy", ""),
            if ok { cond("Ready", true, "Ready", "") } else { cond("Ready", false, "UnhealthyDependents", "NodeClassReady=False") },
        ];
        let mine: Vec<&Node> = nodes.iter().filter(|n| n.labels().get(POOL_LABEL) == Some(&name)).collect();
        let (mut cpu, mut memory, mut pods) = (0.0, 0.0, 0.0);
        for n in &mine {
            let cap = n.status.as_ref().and_then(|s| s.capacity.clone()).unwrap_or_default();
            cpu += cap.get("cpu").map_or(0.0, |q| quantity(&q.0));
            memory += cap.get("memory").map_or(0.0, |q| quantity(&q.0));
            pods += cap.get("pods").map_or(0.0, |q| quantity(&q.0));
        }
        let want = json!({
            "conditions": with_generation(conditions, pool.metadata.generation),
            "nodes": mine.len(),
            "resources": {"cpu": cpu_string(cpu), "memory": bytes_string(memory), "pods": format!("{}", pods as i64), "nodes": mine.len().to_string()},
        });
        match set_status(&api, &name, &pool.data["status"], want).await {
            Ok(true) => pass.did(format!("nodepool {name}: {} ({} nodes)", if ok { "Ready" } else { "not Ready" }, mine.len())),
            Ok(false) => {}
            Err(e) => pass.fail(format!("nodepool {name}"), e),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// NodeClaims and Karpenter's nodes
// ---------------------------------------------------------------------------------------------

async fn node_claims(c: &Client, pass: &mut Pass) -> Result<()> {
    let Some(claims) = list_crd(c, &node_claim_resource()).await? else { return Ok(()) };
    let pools: BTreeSet<String> =
        list_crd(c, &node_pool_resource()).await?.unwrap_or_default().iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| p.name_any()).collect();
    let nodes: BTreeSet<String> = Api::<Node>::all(c.clone()).list(&ListParams::default()).await?.items.iter().map(|n| n.name_any()).collect();
    let api: Api<DynamicObject> = Api::all_with(c.clone(), &node_claim_resource());
    for claim in &claims {
        let name = claim.name_any();
        let pool = claim.labels().get(POOL_LABEL).cloned().unwrap_or_default();
        let launched = claim.data["status"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) && is_ready(claim);
        let r = if claim.metadata.deletion_timestamp.is_some() {
            terminate_claim(c, &api, claim, pass).await
        } else if !pools.contains(&pool) {
            // NodeClaims are owned by their NodePool: the garbage collector would delete them.
            delete(&api, &name, &DeleteParams::background())
                .await
                .map(|gone| if gone { pass.did(format!("deleted nodeclaim {name} (nodepool {pool:?} is gone)")) })
        } else if !launched {
            launch(c, claim, pass).await.map(|_| ())
        } else if !nodes.contains(&node_name_of(claim)) {
            // Its node was deleted behind Karpenter's back: Karpenter deletes the claim.
            delete(&api, &name, &DeleteParams::background())
                .await
                .map(|gone| if gone { pass.did(format!("deleted nodeclaim {name} (its node is gone)")) })
        } else {
            Ok(())
        };
        if let Err(e) = r {
            pass.fail(format!("nodeclaim {name}"), e);
        }
    }
    Ok(())
}

fn node_name_of(claim: &DynamicObject) -> String {
    claim.data["status"]["nodeName"].as_str().filter(|n| !n.is_empty()).map_or_else(|| claim.name_any(), str::to_string)
}

/// Karpenter's termination: the node goes (no drain is simulated), then the claim's finalizer.
async fn terminate_claim(c: &Client, api: &Api<DynamicObject>, claim: &DynamicObject, pass: &mut Pass) -> Result<()> {
    let name = claim.name_any();
    let node_name = node_name_of(claim);
    let nodes = Api::<Node>::all(c.clone());
    if let Some(node) = nodes.get_opt(&node_name).await? {
        if node.metadata.deletion_timestamp.is_none() && delete(&nodes, &node_name, &DeleteParams::background()).await? {
            pass.did(format!("deleted node {node_name} (nodeclaim {name} is terminating)"));
        }
        // Re-read: the delete changed it.
        if let Some(node) = nodes.get_opt(&node_name).await? {
            if remove_finalizer(&nodes, &node.metadata, TERMINATION).await? {
                pass.did(format!("node {node_name}: instance terminated, finalizer released"));
            }
        }
    }
    if remove_finalizer(api, &claim.metadata, TERMINATION).await? {
        pass.did(format!("nodeclaim {name}: finalizer released"));
    }
    Ok(())
}

/// Nodes of Karpenter's: a terminating one takes its NodeClaim with it; one whose NodeClaim and
/// NodePool are both gone is deleted.
async fn karpenter_nodes(c: &Client, pass: &mut Pass) -> Result<()> {
    let Some(claims) = list_crd(c, &node_claim_resource()).await? else { return Ok(()) };
    let pools: BTreeSet<String> = list_crd(c, &node_pool_resource()).await?.unwrap_or_default().iter().map(|p| p.name_any()).collect();
    let claim_of: HashMap<String, &DynamicObject> = claims.iter().map(|nc| (node_name_of(nc), nc)).collect();
    let api = Api::<Node>::all(c.clone());
    let claims_api: Api<DynamicObject> = Api::all_with(c.clone(), &node_claim_resource());
    for node in Api::<Node>::all(c.clone()).list(&ListParams::default().labels(POOL_LABEL)).await?.items {
        let name = node.name_any();
        let pool = node.labels().get(POOL_LABEL).cloned().unwrap_or_default();
        let claim = claim_of.get(&name);
        let r: Result<()> = async {
            if node.metadata.deletion_timestamp.is_some() {
                if !node.finalizers().iter().any(|f| f == TERMINATION) {
                    return Ok(());
                }
                if let Some(nc) = claim.filter(|nc| nc.metadata.deletion_timestamp.is_none()) {
                    if delete(&claims_api, &nc.name_any(), &DeleteParams::background()).await? {
                        pass.did(format!("deleted nodeclaim {} (node {name} is terminating)", nc.name_any()));
                    }
                }
                if remove_finalizer(&api, &node.metadata, TERMINATION).await? {
                    pass.did(format!("node {name}: instance terminated, finalizer released"));
                }
            } else if claim.is_none() && !pools.contains(&pool) && delete(&api, &name, &DeleteParams::background()).await? {
                pass.did(format!("deleted node {name} (no nodeclaim, nodepool {pool:?} is gone)"));
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            pass.fail(format!("node {name}"), e);
        }
    }
    Ok(())
}

/// What Karpenter and a booting instance do for a NodeClaim: a Ready Node carrying the claim's
/// labels and taints, and the claim's status.
async fn launch(c: &Client, claim: &DynamicObject, pass: &mut Pass) -> Result<Node> {
    let name = claim.name_any();
    let seed = fnv(claim.metadata.uid.as_deref().unwrap_or(&name).as_bytes());
    let mut labels = claim.labels().clone();
    labels.insert("kubernetes.io/hostname".into(), name.clone());
    labels.insert("karpenter.sh/registered".into(), "true".into());
    labels.insert("karpenter.sh/initialized".into(), "true".into());
    let zone = labels.get(ZONE).cloned().unwrap_or_else(|| "us-west-2a".into());
    let arch = labels.get(ARCH).cloned().unwrap_or_else(|| "amd64".into());
    let provider_id = format!("aws:///{zone}/i-0{:016x}", seed);
    let ip = format!("10.0.{}.{}", (seed >> 8) % 256, 1 + seed % 254);
    let cpu = labels.get(CPU).cloned().unwrap_or_else(|| "2".into());
    let memory = format!("{}Mi", labels.get(MEMORY).cloned().unwrap_or_else(|| "8192".into()));
    let memory = bytes_string(quantity(&memory)); // canonical, as the API server stores it
    let mut capacity = json!({"cpu": cpu, "memory": memory, "pods": "110", "ephemeral-storage": "20Gi"});
    if labels.contains_key(GPU_COUNT_LABEL) {
        capacity[GPU] = "1".into();
    }

    let nodes = Api::<Node>::all(c.clone());
    let node = match nodes.get_opt(&name).await? {
        Some(n) => n,
        None => {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels, "finalizers": [TERMINATION]},
                "spec": {"providerID": provider_id, "taints": claim.data["spec"]["taints"].as_array().cloned().unwrap_or_default()}
            }))?;
            let n = nodes.create(&post(), &node).await?;
            pass.did(format!("created node {name} ({})", labels.get(INSTANCE_TYPE).map_or("", String::as_str)));
            n
        }
    };
    let version = c.apiserver_version().await.map(|v| v.git_version).unwrap_or_else(|_| "v1.33.0".into());
    let t = now();
    let node_status = json!({
        "capacity": capacity, "allocatable": capacity,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status (testbed-sim)",
                        "lastHeartbeatTime": t}],
        "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
        "nodeInfo": {"machineID": format!("{seed:032x}"), "systemUUID": format!("ec2{seed:013x}"), "bootID": format!("{:032x}", seed ^ 0x5eed),
                     "kernelVersion": "6.12.40-63.114.amzn2023.x86_64", "osImage": "Amazon Linux 2023.8.20250915", "containerRuntimeVersion": "containerd://2.0.5",
                     "kubeletVersion": version, "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": arch},
    });
    if set_status(&nodes, &name, &serde_json::to_value(&node.status)?, node_status).await? {
        pass.did(format!("node {name}: Ready"));
    }
    let node = nodes.get(&name).await?;
    if untaint_ready(&nodes, &node).await? {
        pass.did(format!("node {name}: removed taint {NOT_READY_TAINT}"));
    }
    let api: Api<DynamicObject> = Api::all_with(c.clone(), &node_claim_resource());
    let conditions = ["Launched", "Registered", "Initialized", "Ready"].map(|t| cond(t, true, t, "")).to_vec();
    let claim_status = json!({
        "conditions": with_generation(conditions, claim.metadata.generation),
        "nodeName": name, "providerID": provider_id, "imageID": format!("ami-0{:016x}", fnv(zone.as_bytes())),
        "capacity": capacity, "allocatable": capacity,
    });
    if set_status(&api, &name, &claim.data["status"], claim_status).await? {
        pass.did(format!("nodeclaim {name}: launched, registered, initialized"));
    }
    Ok(nodes.get(&name).await?)
}

async fn node_lifecycle(c: &Client, pass: &mut Pass) -> Result<()> {
    let api = Api::<Node>::all(c.clone());
    for node in api.list(&ListParams::default()).await?.items {
        match untaint_ready(&api, &node).await {
            Ok(true) => pass.did(format!("node {}: removed taint {NOT_READY_TAINT}", node.name_any())),
            Ok(false) => {}
            Err(e) => pass.fail(format!("node {}", node.name_any()), e),
        }
    }
    Ok(())
}

/// The node lifecycle controller's part: the API server taints every new Node
/// `node.kubernetes.io/not-ready:NoSchedule` (TaintNodesByCondition); once Ready it goes.
async fn untaint_ready(api: &Api<Node>, node: &Node) -> Result<bool> {
    let ready = node.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let taints = node_taints(node);
    if !ready || !taints.iter().any(|t| t.key == NOT_READY_TAINT) {
        return Ok(false);
    }
    let keep: Vec<&Taint> = taints.iter().filter(|t| t.key != NOT_READY_TAINT).collect();
    let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "spec": {"taints": keep}});
    api.patch(&node.name_any(), &pp(), &Patch::Merge(patch)).await?;
    Ok(true)
}

// ---------------------------------------------------------------------------------------------
// Provisioning: pending pods -> NodeClaims -> Nodes -> bindings
// ---------------------------------------------------------------------------------------------

async fn provisioning(c: &Client, pass: &mut Pass) -> Result<()> {
    let Some(pools) = list_crd(c, &node_pool_resource()).await? else { return Ok(()) };
    let ready: HashMap<String, &DynamicObject> =
        pools.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p)).map(|p| (p.name_any(), p)).collect();
    if ready.is_empty() {
        return Ok(());
    }
    let pods = Api::<Pod>::all(c.clone()).list(&ListParams::default()).await?.items;
    let mut pending: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            let spec = p.spec.as_ref();
            spec.is_some_and(|s| s.node_name.as_deref().unwrap_or_default().is_empty() && s.scheduling_gates.as_ref().is_none_or(|g| g.is_empty()))
                && p.metadata.deletion_timestamp.is_none()
                && !terminal(p)
        })
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    pending.sort_by_key(|p| (p.metadata.creation_timestamp.as_ref().map(|t| t.0), p.namespace(), p.name_any()));
    let mut nodes = Api::<Node>::all(c.clone()).list(&ListParams::default().labels(POOL_LABEL)).await?.items;
    let mut load: HashMap<String, usize> = HashMap::new();
    for p in pods.iter().filter(|p| !terminal(p)) {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            *load.entry(n).or_default() += 1;
        }
    }
    let mut launched: BTreeSet<String> = BTreeSet::new();
    for pod in pending {
        let Some(spec) = pod.spec.as_ref() else { continue };
        let Some(pool) = pool_of(spec).and_then(|name| ready.get(&name)) else { continue };
        let what = format!("pod {}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        if let Err(e) = place(c, pod, pool, &mut nodes, &mut load, &mut launched, pass).await {
            pass.fail(what, e);
        }
    }
    Ok(())
}

/// Puts one pending pod of `pool` on a node of that pool that has room, launching one if needed.
async fn place(
    c: &Client,
    pod: &Pod,
    pool: &DynamicObject,
    nodes: &mut Vec<Node>,
    load: &mut HashMap<String, usize>,
    launched: &mut BTreeSet<String>,
    pass: &mut Pass,
) -> Result<()> {
    let spec = pod.spec.as_ref().context("no spec")?;
    let pool_name = pool.name_any();
    let taints: Vec<Taint> = serde_json::from_value(pool.data["spec"]["template"]["spec"]["taints"].clone()).unwrap_or_default();
    if !taints.iter().all(|t| tolerated(spec, t)) || (requests_gpu(spec) && !pool_has_gpus(pool)) {
        return Ok(());
    }
    let room = nodes.iter().find(|n| {
        let ready = n.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let gpus = n.status.as_ref().and_then(|s| s.allocatable.as_ref()).is_some_and(|a| a.contains_key(GPU));
        n.labels().get(POOL_LABEL) == Some(&pool_name)
            && ready
            && n.metadata.deletion_timestamp.is_none()
            && !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
            && load.get(&n.name_any()).copied().unwrap_or(0) < PODS_PER_NODE
            && (gpus || !requests_gpu(spec))
            && fits(spec, &n.name_any(), n.labels(), &node_taints(n))
    });
    let node_name = match room {
        Some(n) => n.name_any(),
        None => {
            if launched.contains(&pool_name) {
                return Ok(()); // one new node per pool per pass
            }
            let Some(plan) = plan_node(pool, spec) else { return Ok(()) };
            launched.insert(pool_name.clone());
            let claim = create_claim(c, pool, plan).await?;
            pass.did(format!(
                "created nodeclaim {} for pod {}/{}",
                claim.name_any(),
                pod.namespace().unwrap_or_default(),
                pod.name_any()
            ));
            let node = launch(c, &claim, pass).await?;
            let name = node.name_any();
            nodes.push(node);
            name
        }
    };
    bind(c, pod, &node_name, pass).await?;
    *load.entry(node_name).or_default() += 1;
    Ok(())
}

/// The scheduler's final step: POST pods/<name>/binding.
async fn bind(c: &Client, pod: &Pod, node: &str, pass: &mut Pass) -> Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns},
                         "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
    let api = Api::<Pod>::namespaced(c.clone(), &ns);
    match api.create_subresource::<_, Value>("binding", &name, &post(), &binding).await {
        Ok(_) => pass.did(format!("bound pod {ns}/{name} to {node}")),
        Err(e) if code(&e) == Some(409) => {} // bound meanwhile
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// The NodePool a pod asks for: `karpenter.sh/nodepool` in its nodeSelector, or an `In` on that
/// key in its required node affinity.
fn pool_of(spec: &PodSpec) -> Option<String> {
    if let Some(p) = spec.node_selector.as_ref().and_then(|s| s.get(POOL_LABEL)) {
        return Some(p.clone());
    }
    let terms = &spec.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?.node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == POOL_LABEL && e.operator == "In")
        .and_then(|e| e.values.as_ref()?.first().cloned())
}

fn requests_gpu(spec: &PodSpec) -> bool {
    spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| {
        c.resources.as_ref().is_some_and(|r| {
            r.limits.as_ref().is_some_and(|l| l.contains_key(GPU)) || r.requests.as_ref().is_some_and(|l| l.contains_key(GPU))
        })
    })
}

/// Whether a pool launches NVIDIA GPU instances: GPU limits, a GPU taint, GPU or g/p-family
/// requirements, or a node class named like one.
fn pool_has_gpus(pool: &DynamicObject) -> bool {
    let spec = &pool.data["spec"];
    let tmpl = &spec["template"]["spec"];
    let gpu_family = |v: &Value| v.as_str().is_some_and(|s| s.starts_with('g') || s.starts_with('p'));
    spec["limits"].get(GPU).is_some()
        || tmpl["taints"].as_array().into_iter().flatten().any(|t| t["key"] == GPU)
        || tmpl["nodeClassRef"]["name"].as_str().is_some_and(|n| n.contains("gpu"))
        || tmpl["requirements"].as_array().into_iter().flatten().any(|r| {
            let key = r["key"].as_str().unwrap_or_default();
            let values = r["values"].as_array().cloned().unwrap_or_default();
            key.starts_with("karpenter.k8s.aws/instance-gpu")
                || ((key == "karpenter.k8s.aws/instance-category" || key == "karpenter.k8s.aws/instance-family")
                    && r["operator"] == "In"
                    && !values.is_empty()
                    && values.iter().all(gpu_family))
        })
}

const CATEGORY: &str = "karpenter.k8s.aws/instance-category";
const FAMILY: &str = "karpenter.k8s.aws/instance-family";
const GENERATION: &str = "karpenter.k8s.aws/instance-generation";
const SIZE: &str = "karpenter.k8s.aws/instance-size";
const CPU: &str = "karpenter.k8s.aws/instance-cpu";
const MEMORY: &str = "karpenter.k8s.aws/instance-memory";

/// The labels and taints of a node `pool` could launch for a pod with `spec`, or None when the
/// pod asks for something the pool cannot give it. Each label the pool constrains gets a value
/// it allows (the pod's choice when there is one), the others the pod's choice or a default.
fn plan_node(pool: &DynamicObject, spec: &PodSpec) -> Option<(BTreeMap<String, String>, Value)> {
    let tmpl = &pool.data["spec"]["template"];
    let gpu = pool_has_gpus(pool);
    let wanted = wanted_labels(spec);
    let defaults: BTreeMap<&str, &str> = BTreeMap::from([
        (ARCH, "amd64"),
        ("kubernetes.io/os", "linux"),
        (CAPACITY_TYPE, "on-demand"),
        (ZONE, "us-west-2a"),
        (CATEGORY, if gpu { "g" } else { "m" }),
        (GENERATION, "5"),
        (SIZE, if gpu { "xlarge" } else { "large" }),
        (CPU, "2"),
        (MEMORY, "8192"),
    ]);
    let requirements: Vec<(String, String, Vec<String>)> = tmpl["spec"]["requirements"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let values = r["values"].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect();
            (r["key"].as_str().unwrap_or_default().to_string(), r["operator"].as_str().unwrap_or_default().to_string(), values)
        })
        .collect();

    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    labels.insert(POOL_LABEL.into(), pool.name_any());
    if let Some(class) = tmpl["spec"]["nodeClassRef"]["name"].as_str() {
        labels.insert(CLASS_LABEL.into(), class.into());
    }
    for (key, op, values) in &requirements {
        if labels.contains_key(key) {
            continue;
        }
        let asked = wanted.get(key).map(String::as_str);
        let default = defaults.get(key.as_str()).copied();
        let bound = values.first().and_then(|v| v.parse::<i64>().ok());
        let pick = match (op.as_str(), asked) {
            ("In", Some(a)) => values.iter().find(|v| *v == a)?.clone(),
            ("In", None) => default.filter(|d| values.iter().any(|v| v == d)).or(values.first().map(String::as_str))?.to_string(),
            ("Gt" | "Lt", Some(a)) => a.to_string(), // checked below
            ("Gt", None) => default.and_then(|d| d.parse::<i64>().ok()).unwrap_or(0).max(bound? + 1).to_string(),
            ("Lt", None) => default.and_then(|d| d.parse::<i64>().ok()).unwrap_or(i64::MAX).min(bound? - 1).to_string(),
            _ => continue, // NotIn, Exists, DoesNotExist: checked below
        };
        labels.insert(key.clone(), pick);
    }
    for (k, v) in tmpl["metadata"]["labels"].as_object().into_iter().flatten() {
        labels.insert(k.clone(), v.as_str().unwrap_or_default().into());
    }
    for (key, default) in &defaults {
        if !labels.contains_key(*key) {
            labels.insert(key.to_string(), wanted.get(*key).cloned().unwrap_or_else(|| default.to_string()));
        }
    }
    // An instance type consistent with the family labels, and the family labels with the type.
    if !labels.contains_key(INSTANCE_TYPE) {
        let family = labels.get(FAMILY).cloned().unwrap_or_else(|| format!("{}{}", labels[CATEGORY], labels[GENERATION]));
        let itype = wanted.get(INSTANCE_TYPE).cloned().unwrap_or_else(|| format!("{family}.{}", labels[SIZE]));
        labels.insert(INSTANCE_TYPE.into(), itype);
    }
    let itype = labels[INSTANCE_TYPE].clone();
    let family = itype.split_once('.').map_or(itype.as_str(), |(f, _)| f).to_string();
    labels.entry(FAMILY.into()).or_insert(family);
    labels.insert("topology.k8s.aws/zone-id".into(), format!("usw2-az{}", 1 + labels[ZONE].bytes().last().unwrap_or(b'a').saturating_sub(b'a')));
    if gpu {
        for (k, v) in [
            ("karpenter.k8s.aws/instance-gpu-manufacturer", "nvidia"),
            ("karpenter.k8s.aws/instance-gpu-name", "a10g"),
            (GPU_COUNT_LABEL, "1"),
            ("karpenter.k8s.aws/instance-gpu-memory", "24576"),
        ] {
            labels.entry(k.into()).or_insert(v.into());
        }
    }
    // The node must still meet every requirement of the pool, and the pod must fit on it.
    if !requirements.iter().all(|(k, op, values)| requirement(k, op, values, &labels)) {
        return None;
    }
    let taints = tmpl["spec"]["taints"].clone();
    let taint_list: Vec<Taint> = serde_json::from_value(taints.clone()).unwrap_or_default();
    fits(spec, "", &labels, &taint_list).then_some((labels, taints))
}

/// Labels a pod asks for: its nodeSelector, then the `In` values of its first required node
/// affinity term.
fn wanted_labels(spec: &PodSpec) -> BTreeMap<String, String> {
    let mut wanted = spec.node_selector.clone().unwrap_or_default();
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
        .map(|r| r.node_selector_terms.clone())
        .unwrap_or_default();
    for e in terms.first().and_then(|t| t.match_expressions.clone()).unwrap_or_default() {
        if let (Some(v), "In") = (e.values.as_ref().and_then(|v| v.first()), e.operator.as_str()) {
            wanted.entry(e.key.clone()).or_insert_with(|| v.clone());
        }
    }
    wanted
}

async fn create_claim(c: &Client, pool: &DynamicObject, (labels, taints): (BTreeMap<String, String>, Value)) -> Result<DynamicObject> {
    let pool_name = pool.name_any();
    let tmpl = &pool.data["spec"]["template"]["spec"];
    let mut requirements: Vec<Value> = tmpl["requirements"].as_array().cloned().unwrap_or_default();
    for key in [POOL_LABEL, INSTANCE_TYPE] {
        if !requirements.iter().any(|r| r["key"] == key) {
            requirements.push(json!({"key": key, "operator": "In", "values": [labels[key]]}));
        }
    }
    let mut spec = json!({"nodeClassRef": tmpl["nodeClassRef"], "requirements": requirements});
    if taints.as_array().is_some_and(|t| !t.is_empty()) {
        spec["taints"] = taints;
    }
    for key in ["expireAfter", "terminationGracePeriod"] {
        if !tmpl[key].is_null() {
            spec[key] = tmpl[key].clone();
        }
    }
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
        "metadata": {"generateName": format!("{pool_name}-"), "labels": labels, "finalizers": [TERMINATION],
            "ownerReferences": [{"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "name": pool_name,
                                 "uid": pool.metadata.uid.clone().unwrap_or_default(), "blockOwnerDeletion": true}]},
        "spec": spec,
    }))?;
    let api: Api<DynamicObject> = Api::all_with(c.clone(), &node_claim_resource());
    Ok(api.create(&post(), &obj).await?)
}

// ---------------------------------------------------------------------------------------------
// Kubelets and pod garbage collection
// ---------------------------------------------------------------------------------------------

async fn kubelet(c: &Client, pass: &mut Pass) -> Result<()> {
    // Pods first, then nodes: provisioning (run concurrently) creates a node before it binds
    // a pod to it, so every node a listed pod is bound to is in the later node list. The
    // other order let a pod bound in between look orphaned, and pod GC deleted it.
    let pods = Api::<Pod>::all(c.clone()).list(&ListParams::default()).await?.items;
    let nodes: HashMap<String, Node> = Api::<Node>::all(c.clone()).list(&ListParams::default()).await?.items.into_iter().map(|n| (n.name_any(), n)).collect();
    for pod in pods {
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) else { continue };
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api = Api::<Pod>::namespaced(c.clone(), &ns);
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        let r: Result<()> = async {
            match nodes.get(&node_name) {
                // Pod GC: the node is gone (a pod with finalizers waits for whoever owns them).
                None => {
                    if pod.finalizers().is_empty() && delete(&api, &name, &now_params()).await? {
                        pass.did(format!("deleted pod {ns}/{name} (node {node_name} is gone)"));
                    }
                }
                // The kubelet confirms a graceful deletion once the containers stopped.
                Some(_) if deleting => {
                    if pod.metadata.deletion_grace_period_seconds != Some(0) && delete(&api, &name, &now_params()).await? {
                        pass.did(format!("pod {ns}/{name}: containers stopped, deleted"));
                    }
                }
                Some(node) if phase == "Pending" => {
                    run_pod(&api, &pod, node).await?;
                    pass.did(format!("pod {ns}/{name}: Running on {node_name}"));
                }
                Some(_) => {}
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            pass.fail(format!("pod {ns}/{name}"), e);
        }
    }
    Ok(())
}

/// A kubelet starting the pod: init containers completed, containers running and ready.
async fn run_pod(api: &Api<Pod>, pod: &Pod, node: &Node) -> Result<()> {
    let spec = pod.spec.as_ref().context("no spec")?;
    let t = now();
    let host_ip = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map_or_else(|| "10.0.0.10".to_string(), |a| a.address.clone());
    let seed = fnv(pod.metadata.uid.as_deref().unwrap_or_default().as_bytes());
    let pod_ip = if spec.host_network == Some(true) { host_ip.clone() } else { format!("10.0.{}.{}", 128 + (seed >> 8) % 64, 1 + seed % 254) };
    let running = |c: &k8s_openapi::api::core::v1::Container, i: u64| {
        json!({"name": c.name, "image": c.image, "imageID": "", "containerID": format!("containerd://{:016x}{i:048x}", seed),
               "ready": true, "started": true, "restartCount": 0, "state": {"running": {"startedAt": t}}})
    };
    let containers: Vec<Value> = spec.containers.iter().enumerate().map(|(i, c)| running(c, i as u64)).collect();
    let inits: Vec<Value> = spec
        .init_containers
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            if c.restart_policy.as_deref() == Some("Always") {
                running(c, 100 + i as u64) // a sidecar keeps running
            } else {
                json!({"name": c.name, "image": c.image, "imageID": "", "containerID": format!("containerd://{:016x}{:048x}", seed, 100 + i),
                       "ready": true, "restartCount": 0,
                       "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}}})
            }
        })
        .collect();
    let conditions: Vec<Value> = ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        .iter()
        .map(|c| json!({"type": c, "status": "True", "lastProbeTime": null, "lastTransitionTime": t}))
        .collect();
    let mut status = json!({"phase": "Running", "conditions": conditions, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "startTime": t, "containerStatuses": containers});
    if !inits.is_empty() {
        status["initContainerStatuses"] = inits.into();
    }
    api.patch_status(&pod.name_any(), &pp(), &Patch::Merge(json!({"status": status}))).await?;
    Ok(())
}

fn terminal(p: &Pod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"))
}

// ---------------------------------------------------------------------------------------------
// Nodes of the real Karpenter's kwok build, the scheduler, the garbage collector
// ---------------------------------------------------------------------------------------------

/// The label the kwok build of Karpenter puts on the Nodes it creates for its fake instances.
pub const KWOK_NODE_LABEL: &str = "kwok.x-k8s.io/node";

fn node_ready(n: &Node) -> bool {
    n.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The kubelet of a kwok node. The kwok build creates each Node (~30 s after the fleet request)
/// with capacity, allocatable, labels, `providerID` and the `karpenter.sh/unregistered` taint,
/// but no conditions, addresses or node info: no kubelet ever reports for it. This posts what a
/// kubelet would (Ready, the pressure conditions False, an InternalIP, node info), keeping the
/// capacity the kwok build computed for the instance type. Karpenter then registers and
/// initializes the node itself; [`node_lifecycle`] lifts the `not-ready` taint.
async fn kwok_nodes(c: &Client, pass: &mut Pass) -> Result<()> {
    let api = Api::<Node>::all(c.clone());
    let nodes = api.list(&ListParams::default().labels(&format!("{KWOK_NODE_LABEL}=fake"))).await?.items;
    let waiting: Vec<&Node> = nodes.iter().filter(|n| n.metadata.deletion_timestamp.is_none() && !node_ready(n)).collect();
    if waiting.is_empty() {
        return Ok(());
    }
    let version = c.apiserver_version().await.map(|v| v.git_version).unwrap_or_else(|_| "v1.33.0".into());
    for node in waiting {
        let name = node.name_any();
        let seed = fnv(node.metadata.uid.as_deref().unwrap_or(&name).as_bytes());
        let ip = format!("10.0.{}.{}", (seed >> 8) % 256, 1 + seed % 254);
        let arch = node.labels().get(ARCH).cloned().unwrap_or_else(|| "amd64".into());
        let t = now();
        let condition = |type_: &str, ok: bool, reason: &str, message: &str| {
            json!({"type": type_, "status": if ok { "True" } else { "False" }, "reason": reason, "message": message,
                   "lastHeartbeatTime": t, "lastTransitionTime": t})
        };
        let mut status = json!({
            "conditions": [
                condition("MemoryPressure", false, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", true, "KubeletReady", "kubelet is posting ready status (testbed-sim for a kwok node)"),
            ],
            "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}],
            "nodeInfo": {"machineID": format!("{seed:032x}"), "systemUUID": format!("ec2{seed:013x}"), "bootID": format!("{:032x}", seed ^ 0x5eed),
                         "kernelVersion": "6.12.40-63.114.amzn2023.x86_64", "osImage": "Amazon Linux 2023.8.20250915",
                         "containerRuntimeVersion": "containerd://2.0.5", "kubeletVersion": version, "kubeProxyVersion": "",
                         "operatingSystem": "linux", "architecture": arch},
        });
        // Should the API server have dropped what the kwok build sent, a node still needs room.
        let st = node.status.clone().unwrap_or_default();
        if st.allocatable.as_ref().is_none_or(|a| a.is_empty()) {
            let cap = json!({"cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"});
            status["capacity"] = cap.clone();
            status["allocatable"] = cap;
        }
        match api.patch_status(&name, &pp(), &Patch::Merge(json!({"status": status}))).await {
            Ok(_) => pass.did(format!("node {name}: Ready (kubelet of a kwok node)")),
            Err(e) if code(&e) == Some(404) => {}
            Err(e) => pass.fail(format!("node {name}"), e.into()),
        }
    }
    Ok(())
}

/// Resource amounts by name (cpu in cores, memory in bytes, pods and the rest in units).
pub type Resources = BTreeMap<String, f64>;

/// What a pod asks for, as kube-scheduler counts it: the larger of its containers (plus
/// sidecars) and any one init container, plus overhead, plus one `pods`.
pub fn pod_requests(spec: &PodSpec) -> Resources {
    let reqs = |c: &k8s_openapi::api::core::v1::Container| -> Resources {
        c.resources.as_ref().and_then(|r| r.requests.clone()).unwrap_or_default().into_iter().map(|(k, q)| (k, quantity(&q.0))).collect()
    };
    let add = |into: &mut Resources, from: &Resources| {
        for (k, v) in from {
            *into.entry(k.clone()).or_default() += v;
        }
    };
    let mut sum = Resources::new();
    for c in &spec.containers {
        add(&mut sum, &reqs(c));
    }
    let mut sidecars = Resources::new();
    let mut init_peak = Resources::new();
    for c in spec.init_containers.iter().flatten() {
        if c.restart_policy.as_deref() == Some("Always") {
            add(&mut sidecars, &reqs(c));
            continue;
        }
        let mut this = reqs(c);
        add(&mut this, &sidecars);
        for (k, v) in this {
            let e = init_peak.entry(k).or_default();
            *e = e.max(v);
        }
    }
    add(&mut sum, &sidecars);
    for (k, v) in init_peak {
        let e = sum.entry(k).or_default();
        *e = e.max(v);
    }
    for (k, q) in spec.overhead.clone().unwrap_or_default() {
        *sum.entry(k).or_default() += quantity(&q.0);
    }
    *sum.entry("pods".into()).or_default() += 1.0;
    sum.retain(|_, v| *v > 0.0);
    sum
}

/// A minimal kube-scheduler over a snapshot of nodes and pods: filters (node Ready and
/// schedulable, nodeSelector, required node affinity, NoSchedule/NoExecute taints, requests
/// against allocatable minus what the node's pods request) and a least-allocated choice.
pub struct Scheduler {
    nodes: Vec<Node>,
    used: HashMap<String, Resources>,
}

impl Scheduler {
    pub fn new(nodes: Vec<Node>, pods: &[Pod]) -> Self {
        let mut used: HashMap<String, Resources> = HashMap::new();
        for p in pods.iter().filter(|p| !terminal(p)) {
            let (Some(spec), Some(node)) = (p.spec.as_ref(), p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty())) else {
                continue;
            };
            let entry = used.entry(node).or_default();
            for (k, v) in pod_requests(spec) {
                *entry.entry(k).or_default() += v;
            }
        }
        let mut nodes = nodes;
        nodes.sort_by_key(|n| n.name_any());
        Scheduler { nodes, used }
    }

    /// Why `spec` cannot go on `node`, or None when it can.
    fn unfit(&self, spec: &PodSpec, node: &Node) -> Option<String> {
        let name = node.name_any();
        if node.metadata.deletion_timestamp.is_some() || node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
            return Some("node(s) were unschedulable".into());
        }
        if !node_ready(node) {
            return Some("node(s) were not ready".into());
        }
        let selector = spec.node_selector.as_ref().is_none_or(|s| s.iter().all(|(k, v)| node.labels().get(k) == Some(v)));
        if !selector || !affinity_allows(spec.affinity.as_ref(), &name, node.labels()) {
            return Some("node(s) didn't match Pod's node affinity/selector".into());
        }
        if let Some(t) = node_taints(node).iter().find(|t| !tolerated(spec, t)) {
            return Some(format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or_default()));
        }
        let allocatable: Resources =
            node.status.as_ref().and_then(|s| s.allocatable.clone()).unwrap_or_default().into_iter().map(|(k, q)| (k, quantity(&q.0))).collect();
        let used = self.used.get(&name);
        for (k, want) in pod_requests(spec) {
            let free = allocatable.get(&k).copied().unwrap_or(0.0) - used.and_then(|u| u.get(&k)).copied().unwrap_or(0.0);
            if want > free + 1e-9 {
                return Some(if k == "pods" { "Too many pods".into() } else { format!("Insufficient {k}") });
            }
        }
        None
    }

    /// The node for `spec` (the fitting node with the smallest share of its CPU requested, then
    /// by name), or the kube-scheduler style "0/N nodes are available: …" message.
    pub fn choose(&self, spec: &PodSpec) -> std::result::Result<String, String> {
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Option<(f64, String)> = None;
        for node in &self.nodes {
            match self.unfit(spec, node) {
                Some(why) => *reasons.entry(why).or_default() += 1,
                None => {
                    let name = node.name_any();
                    let cpu = node.status.as_ref().and_then(|s| s.allocatable.as_ref()).and_then(|a| a.get("cpu")).map_or(1.0, |q| quantity(&q.0));
                    let share = self.used.get(&name).and_then(|u| u.get("cpu")).copied().unwrap_or(0.0) / cpu.max(1e-3);
                    if best.as_ref().is_none_or(|(s, _)| share < *s) {
                        best = Some((share, name));
                    }
                }
            }
        }
        match best {
            Some((_, name)) => Ok(name),
            None => {
                let mut why: Vec<String> = reasons.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
                why.sort();
                let detail = if why.is_empty() { String::new() } else { format!(": {}", why.join(", ")) };
                Err(format!("0/{} nodes are available{detail}.", self.nodes.len()))
            }
        }
    }

    /// Counts a pod bound to `node` in this snapshot.
    pub fn assume(&mut self, spec: &PodSpec, node: &str) {
        let entry = self.used.entry(node.to_string()).or_default();
        for (k, v) in pod_requests(spec) {
            *entry.entry(k).or_default() += v;
        }
    }
}

/// The scheduler's pass: every pending pod of the default scheduler is bound to a node it fits
/// on, or gets `PodScheduled=False` (`Unschedulable`, or `SchedulingGated` while it has
/// scheduling gates), as kube-scheduler reports it.
async fn scheduler(c: &Client, pass: &mut Pass) -> Result<()> {
    let pods = Api::<Pod>::all(c.clone()).list(&ListParams::default()).await?.items;
    let mut pending: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.node_name.as_deref().unwrap_or_default().is_empty() && s.scheduler_name.as_deref().is_none_or(|n| n == "default-scheduler")
            }) && p.metadata.deletion_timestamp.is_none()
                && !terminal(p)
        })
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    pending.sort_by_key(|p| (p.metadata.creation_timestamp.as_ref().map(|t| t.0), p.namespace(), p.name_any()));
    let nodes = Api::<Node>::all(c.clone()).list(&ListParams::default()).await?.items;
    let mut sched = Scheduler::new(nodes, &pods);
    for pod in pending {
        let Some(spec) = pod.spec.as_ref() else { continue };
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let r: Result<()> = async {
            if spec.scheduling_gates.as_ref().is_some_and(|g| !g.is_empty()) {
                if not_scheduled(c, pod, "SchedulingGated", "Scheduling is blocked due to non-empty scheduling gates").await? {
                    pass.did(format!("pod {ns}/{name}: scheduling gated"));
                }
                return Ok(());
            }
            match sched.choose(spec) {
                Ok(node) => {
                    bind(c, pod, &node, pass).await?;
                    sched.assume(spec, &node);
                }
                Err(message) => {
                    if not_scheduled(c, pod, "Unschedulable", &message).await? {
                        pass.did(format!("pod {ns}/{name}: unschedulable: {message}"));
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            pass.fail(format!("pod {ns}/{name}"), e);
        }
    }
    Ok(())
}

/// Sets `PodScheduled=False` with `reason` and `message` unless the pod already says so.
async fn not_scheduled(c: &Client, pod: &Pod, reason: &str, message: &str) -> Result<bool> {
    let current = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
    if current.is_some_and(|c| c.status == "False" && c.reason.as_deref() == Some(reason) && c.message.as_deref() == Some(message)) {
        return Ok(false);
    }
    let since = current.filter(|c| c.status == "False").and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0.to_string());
    let cond = json!({"type": "PodScheduled", "status": "False", "reason": reason, "message": message,
                      "lastProbeTime": null, "lastTransitionTime": since.unwrap_or_else(now)});
    let api = Api::<Pod>::namespaced(c.clone(), &pod.namespace().unwrap_or_default());
    // Strategic merge: conditions merge by type, so other conditions stay.
    match api.patch_status(&pod.name_any(), &pp(), &Patch::Strategic(json!({"status": {"conditions": [cond]}}))).await {
        Ok(_) => Ok(true),
        Err(e) if code(&e) == Some(404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The garbage collector's part for Karpenter's kinds: a NodeClaim whose owning NodePool is
/// gone (deleting a NodePool relies on this to delete its NodeClaims) and a Node whose owning
/// NodeClaim is gone are deleted in the background. Like the real collector, it confirms with a
/// live read that the owner is gone (a list can lag behind a just-created owner).
async fn garbage_collection(c: &Client, pass: &mut Pass) -> Result<()> {
    let Some(claims) = list_crd(c, &node_claim_resource()).await? else { return Ok(()) };
    let pools: Api<DynamicObject> = Api::all_with(c.clone(), &node_pool_resource());
    let claims_api: Api<DynamicObject> = Api::all_with(c.clone(), &node_claim_resource());
    let owner_gone = |api: &Api<DynamicObject>, owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference| {
        let api = api.clone();
        async move {
            match api.get_opt(&owner.name).await? {
                Some(o) => Ok::<bool, anyhow::Error>(o.metadata.uid.as_deref() != Some(owner.uid.as_str())),
                None => Ok(true),
            }
        }
    };
    let live_claims: BTreeSet<String> = claims.iter().filter_map(|c| c.metadata.uid.clone()).collect();
    for claim in claims.iter().filter(|c| c.metadata.deletion_timestamp.is_none()) {
        let Some(owner) = claim.owner_references().iter().find(|o| o.kind == "NodePool").cloned() else { continue };
        let name = claim.name_any();
        let r: Result<()> = async {
            if owner_gone(&pools, owner.clone()).await? && delete(&claims_api, &name, &DeleteParams::background()).await? {
                pass.did(format!("deleted nodeclaim {name} (garbage collector: nodepool {} is gone)", owner.name));
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            pass.fail(format!("nodeclaim {name}"), e);
        }
    }
    let nodes = Api::<Node>::all(c.clone());
    for node in nodes.list(&ListParams::default()).await?.items.iter().filter(|n| n.metadata.deletion_timestamp.is_none()) {
        let Some(owner) = node.owner_references().iter().find(|o| o.kind == "NodeClaim").cloned() else { continue };
        if live_claims.contains(&owner.uid) {
            continue;
        }
        let name = node.name_any();
        let r: Result<()> = async {
            if owner_gone(&claims_api, owner.clone()).await? && delete(&nodes, &name, &DeleteParams::background()).await? {
                pass.did(format!("deleted node {name} (garbage collector: nodeclaim {} is gone)", owner.name));
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            pass.fail(format!("node {name}"), e);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Scheduling predicates
// ---------------------------------------------------------------------------------------------

/// Whether a pod with `spec` may run on a node with these labels and taints: nodeSelector,
/// required node affinity and NoSchedule/NoExecute taints (nodeName "" skips matchFields).
fn fits(spec: &PodSpec, node: &str, labels: &BTreeMap<String, String>, taints: &[Taint]) -> bool {
    let selector = spec.node_selector.as_ref().is_none_or(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)));
    selector && affinity_allows(spec.affinity.as_ref(), node, labels) && taints.iter().all(|t| tolerated(spec, t))
}

fn affinity_allows(affinity: Option<&Affinity>, node: &str, labels: &BTreeMap<String, String>) -> bool {
    let Some(required) = affinity.and_then(|a| a.node_affinity.as_ref()).and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref())
    else {
        return true;
    };
    // Terms are ORed, the expressions within a term ANDed; an empty term matches nothing.
    required.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        let field_labels: BTreeMap<String, String> = [("metadata.name".to_string(), node.to_string())].into();
        (!exprs.is_empty() || !fields.is_empty())
            && exprs.iter().all(|e| requirement(&e.key, &e.operator, e.values.as_deref().unwrap_or_default(), labels))
            && (node.is_empty() || fields.iter().all(|e| requirement(&e.key, &e.operator, e.values.as_deref().unwrap_or_default(), &field_labels)))
    })
}

fn requirement(key: &str, op: &str, values: &[String], labels: &BTreeMap<String, String>) -> bool {
    let v = labels.get(key);
    let num = |s: &str| s.parse::<i64>().ok();
    match op {
        "In" => v.is_some_and(|v| values.contains(v)),
        "NotIn" => v.is_none_or(|v| !values.contains(v)),
        "Exists" => v.is_some(),
        "DoesNotExist" => v.is_none(),
        "Gt" => matches!((v.and_then(|v| num(v)), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a > b),
        "Lt" => matches!((v.and_then(|v| num(v)), values.first().and_then(|x| num(x))), (Some(a), Some(b)) if a < b),
        _ => false,
    }
}

/// Whether the pod tolerates a taint that keeps pods off (PreferNoSchedule never does).
fn tolerated(spec: &PodSpec, taint: &Taint) -> bool {
    if taint.effect == "PreferNoSchedule" {
        return true;
    }
    spec.tolerations.iter().flatten().any(|t| tolerates(t, taint))
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or_default();
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        _ => key == taint.key && t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default(),
    }
}

fn node_taints(n: &Node) -> Vec<Taint> {
    n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// API helpers
// ---------------------------------------------------------------------------------------------

fn pp() -> PatchParams {
    PatchParams { field_manager: Some(MANAGER.into()), ..Default::default() }
}

fn post() -> PostParams {
    PostParams { field_manager: Some(MANAGER.into()), ..Default::default() }
}

fn now_params() -> DeleteParams {
    DeleteParams { grace_period_seconds: Some(0), ..Default::default() }
}

fn code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// Lists a Karpenter kind; None when its CRD is not installed (yet).
async fn list_crd(c: &Client, ar: &ApiResource) -> Result<Option<Vec<DynamicObject>>> {
    match Api::<DynamicObject>::all_with(c.clone(), ar).list(&ListParams::default()).await {
        Ok(l) => Ok(Some(l.items)),
        Err(e) if code(&e) == Some(404) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("listing {}", ar.plural)),
    }
}

/// Deletes; false when it was already gone.
async fn delete<K: Clone + DeserializeOwned + Debug>(api: &Api<K>, name: &str, dp: &DeleteParams) -> Result<bool> {
    match api.delete(name, dp).await {
        Ok(_) => Ok(true),
        Err(e) if code(&e) == Some(404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

async fn add_finalizer<K: Clone + DeserializeOwned + Debug>(api: &Api<K>, meta: &ObjectMeta, f: &str) -> Result<bool> {
    let mut list = meta.finalizers.clone().unwrap_or_default();
    if list.iter().any(|x| x == f) {
        return Ok(false);
    }
    list.push(f.into());
    set_finalizers(api, meta, list).await
}

async fn remove_finalizer<K: Clone + DeserializeOwned + Debug>(api: &Api<K>, meta: &ObjectMeta, f: &str) -> Result<bool> {
    let list = meta.finalizers.clone().unwrap_or_default();
    if !list.iter().any(|x| x == f) {
        return Ok(false);
    }
    set_finalizers(api, meta, list.into_iter().filter(|x| x != f).collect()).await
}

/// Replaces the finalizer list, guarded by the resourceVersion it was read at (a conflict is
/// retried next pass); an object gone meanwhile is no error.
async fn set_finalizers<K: Clone + DeserializeOwned + Debug>(api: &Api<K>, meta: &ObjectMeta, list: Vec<String>) -> Result<bool> {
    let name = meta.name.clone().unwrap_or_default();
    let patch = json!({"metadata": {"finalizers": list, "resourceVersion": meta.resource_version}});
    match api.patch(&name, &pp(), &Patch::Merge(patch)).await {
        Ok(_) => Ok(true),
        Err(e) if code(&e) == Some(404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A wanted condition; `lastTransitionTime` and `observedGeneration` are filled in later.
fn cond(type_: &str, ok: bool, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": if ok { "True" } else { "False" }, "reason": reason, "message": message})
}

fn with_generation(mut conditions: Vec<Value>, generation: Option<i64>) -> Vec<Value> {
    for c in &mut conditions {
        c["observedGeneration"] = generation.unwrap_or(1).into();
    }
    conditions
}

/// Merge-patches `status` with `want` when any field of `want` differs from `current`.
/// Conditions are compared without their timestamps; a condition whose status did not change
/// keeps its lastTransitionTime, like a controller's. A null in `want` means "absent".
async fn set_status<K: Clone + DeserializeOwned + Debug>(api: &Api<K>, name: &str, current: &Value, mut want: Value) -> Result<bool> {
    let same = |k: &str, v: &Value| -> bool {
        let cur = current.get(k).unwrap_or(&Value::Null);
        if k == "conditions" {
            return same_conditions(cur, v);
        }
        match (cur, v) {
            (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
            // The API server drops zero-valued optional integers.
            (Value::Number(a), Value::Null) | (Value::Null, Value::Number(a)) => a.as_f64() == Some(0.0),
            (a, b) => a == b,
        }
    };
    let obj = want.as_object().context("status is an object")?;
    if obj.iter().all(|(k, v)| same(k, v)) {
        return Ok(false);
    }
    let t = now();
    if let Some(conds) = want.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conds {
            let before = current["conditions"].as_array().into_iter().flatten().find(|o| o["type"] == c["type"]);
            let since = before.filter(|o| o["status"] == c["status"]).and_then(|o| o.get("lastTransitionTime")).cloned();
            c["lastTransitionTime"] = since.unwrap_or_else(|| t.clone().into());
            if c.get("lastUpdateTime").is_some() {
                c["lastUpdateTime"] = t.clone().into();
            }
        }
    }
    match api.patch_status(name, &pp(), &Patch::Merge(json!({"status": want}))).await {
        Ok(_) => Ok(true),
        Err(e) if code(&e) == Some(404) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn same_conditions(current: &Value, want: &Value) -> bool {
    let (Some(cur), Some(want)) = (current.as_array(), want.as_array()) else { return current == want };
    cur.len() == want.len()
        && want.iter().all(|w| {
            cur.iter().any(|c| {
                ["type", "status", "reason", "message", "observedGeneration"]
                    .iter()
                    .all(|k| w.get(*k).is_none() || c.get(*k).unwrap_or(&Value::Null) == &w[*k] || (w[*k] == "" && c.get(*k).is_none()))
            })
        })
}

fn controller_of(meta: &ObjectMeta, kind: &str) -> Option<String> {
    meta.owner_references.iter().flatten().find(|o| o.kind == kind && o.controller == Some(true)).map(|o| o.uid.clone())
}

fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// FNV-1a: stable names and ids from stable inputs.
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, x| (h ^ u64::from(*x)).wrapping_mul(0x100000001b3))
}

/// A Kubernetes quantity as a number (cpu in cores, memory in bytes).
fn quantity(q: &str) -> f64 {
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(q.len());
    let (n, suffix) = q.split_at(split);
    let n: f64 = n.parse().unwrap_or(0.0);
    let mult = match suffix {
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => 1.0,
    };
    n * mult
}

fn cpu_string(cores: f64) -> String {
    let milli = (cores * 1000.0).round() as i64;
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn bytes_string(bytes: f64) -> String {
    let b = bytes.round() as i64;
    for (unit, size) in [("Ti", 1i64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if b != 0 && b % size == 0 {
            return format!("{}{unit}", b / size);
        }
    }
    b.to_string()
}
