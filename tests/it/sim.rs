//! The test bed's controller simulator (tests/testbed/kube/sim) against a real API server:
//! every assertion reads the objects back from the bed, so a pass that writes nothing (or
//! writes what the API server refuses) fails here.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use karpctl::render;

use crate::beds::KubeBed;
use crate::support::*;

#[path = "../testbed/kube/sim/mod.rs"]
#[allow(dead_code)] // the example binary uses the rest
pub(crate) mod model;

/// Ticks until a pass changes nothing; panics on an error or after 20 passes.
async fn converge(client: &Client) -> usize {
    converge_with(client, &model::Options::default()).await
}

async fn converge_with(client: &Client, roles: &model::Options) -> usize {
    for pass in 1..=20 {
        match model::tick_with(client, roles).await {
            Ok(0) => return pass,
            Ok(_) => {}
            Err(e) => panic!("pass {pass} failed: {e:#}"),
        }
    }
    panic!("the simulator did not converge in 20 passes");
}

/// A bed with the Karpenter CRDs, or None (the test is skipped) when there is none.
fn bed_with_crds() -> Option<KubeBed> {
    crds_dir()?;
    KubeBed::start()
}

fn api(client: &Client, ar: &kube::discovery::ApiResource) -> Api<DynamicObject> {
    Api::all_with(client.clone(), ar)
}

async fn apply(client: &Client, ar: &kube::discovery::ApiResource, obj: &Value) -> DynamicObject {
    let name = obj["metadata"]["name"].as_str().unwrap();
    api(client, ar).patch(name, &PatchParams::apply("karpctl").force(), &Patch::Apply(obj)).await.unwrap_or_else(|e| panic!("applying {name}: {e}"))
}

/// The `default` preset's NodePools and EC2NodeClasses exactly as karpctl renders them.
fn rendered(path: &str) -> Value {
    let c = load_preset(karpctl::cli::Preset::Default);
    let b = render::render(&c, &pinned_inputs(&c)).unwrap();
    b.documents.iter().find(|d| d.path == path).unwrap_or_else(|| panic!("{path} is rendered")).content.clone()
}

fn condition<'a>(obj: &'a DynamicObject, type_: &str) -> &'a Value {
    obj.data["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == type_)).unwrap_or(&Value::Null)
}

async fn namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
}

fn pod(name: &str, selector: Value, tolerations: Value, gpu: bool) -> Pod {
    let resources = if gpu { json!({"limits": {"nvidia.com/gpu": "1"}}) } else { json!({"requests": {"cpu": "100m"}}) };
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"nodeSelector": selector, "tolerations": tolerations, "automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "resources": resources}]}
    }))
    .unwrap()
}

async fn pool_nodes(client: &Client, pool: &str) -> Vec<Node> {
    Api::<Node>::all(client.clone()).list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={pool}"))).await.unwrap().items
}

async fn pool_claims(client: &Client, pool: &str) -> Vec<DynamicObject> {
    api(client, &model::node_claim_resource()).list(&ListParams::default().labels(&format!("karpenter.sh/nodepool={pool}"))).await.unwrap().items
}

#[tokio::test]
async fn deployments_become_available_through_an_owned_replica_set_unless_stuck() {
    let Some(bed) = KubeBed::start() else { return };
    let client = bed.client().await;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let make = |name: &str, stuck: bool| -> Deployment {
        let annotations = if stuck { json!({model::STUCK_ANNOTATION: "true"}) } else { json!({}) };
        serde_json::from_value(json!({
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}
        }))
        .unwrap()
    };
    deploys.create(&PostParams::default(), &make("web", false)).await.unwrap();
    deploys.create(&PostParams::default(), &make("hung", true)).await.unwrap();
    converge(&client).await;

    let web = deploys.get("web").await.unwrap();
    let s = web.status.clone().unwrap();
    assert_eq!((s.observed_generation, s.replicas, s.ready_replicas, s.available_replicas, s.updated_replicas), (Some(1), Some(2), Some(2), Some(2), Some(2)));
    let available = s.conditions.unwrap().into_iter().find(|c| c.type_ == "Available").expect("Available condition");
    assert_eq!(available.status, "True");
    // Helm's --wait looks for the Deployment's "new" ReplicaSet: owned, same template, ready.
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let owned: Vec<ReplicaSet> = sets
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|rs| rs.owner_references().iter().any(|o| Some(&o.uid) == web.metadata.uid.as_ref() && o.controller == Some(true)))
        .collect();
    assert_eq!(owned.len(), 1, "{owned:?}");
    assert_eq!(owned[0].status.as_ref().unwrap().ready_replicas, Some(2));
    assert!(owned[0].labels().contains_key("pod-template-hash"));

    let hung = deploys.get("hung").await.unwrap();
    assert_eq!(hung.status.and_then(|s| s.available_replicas), None, "the stuck annotation keeps it unavailable");

    // A new generation (scale + new template) is observed; the old ReplicaSet goes to 0.
    let patch = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9"}]}}}});
    deploys.patch("web", &PatchParams::default(), &Patch::Strategic(patch)).await.unwrap();
    converge(&client).await;
    let s = deploys.get("web").await.unwrap().status.unwrap();
    assert_eq!((s.observed_generation, s.available_replicas), (Some(2), Some(3)));
    let sets = sets.list(&ListParams::default().labels("app=web")).await.unwrap().items;
    let mut ready: Vec<(Option<i32>, Option<i32>)> =
        sets.iter().map(|rs| (rs.spec.as_ref().unwrap().replicas, rs.status.as_ref().unwrap().ready_replicas)).collect();
    ready.sort();
    assert_eq!(ready, [(Some(0), None), (Some(3), Some(3))]);

    // Deleting the Deployment takes its ReplicaSets along (the garbage collector's part).
    deploys.delete("web", &DeleteParams::default()).await.unwrap();
    converge(&client).await;
    let left = Api::<ReplicaSet>::namespaced(client.clone(), "default").list(&ListParams::default().labels("app=web")).await.unwrap();
    assert!(left.items.is_empty(), "{:?}", left.items.iter().map(|r| r.name_any()).collect::<Vec<_>>());
}

#[tokio::test]
async fn node_classes_and_pools_report_readiness_like_karpenter() {
    let Some(bed) = bed_with_crds() else { return };
    let client = bed.client().await;
    let classes = model::ec2_node_class_resource();
    let pools = model::node_pool_resource();
    let class = rendered("ec2nodeclass-default.yaml");
    apply(&client, &classes, &class).await;
    apply(&client, &pools, &rendered("nodepool-default.yaml")).await;
    let mut broken = class.clone();
    broken["metadata"]["name"] = "broken".into();
    broken["spec"]["tags"][model::NOT_READY_TAG] = "no AMIs matched amiSelectorTerms [alias=al2023@v20990101]".into();
    apply(&client, &classes, &broken).await;
    let mut waiting = rendered("nodepool-default.yaml");
    waiting["metadata"]["name"] = "waiting".into();
    waiting["spec"]["template"]["spec"]["nodeClassRef"]["name"] = "broken".into();
    apply(&client, &pools, &waiting).await;
    let mut orphan = rendered("nodepool-default.yaml");
    orphan["metadata"]["name"] = "orphan".into();
    orphan["spec"]["template"]["spec"]["nodeClassRef"]["name"] = "missing".into();
    apply(&client, &pools, &orphan).await;
    converge(&client).await;

    let c = api(&client, &classes).get("default").await.unwrap();
    for t in ["Ready", "AMIsReady", "SubnetsReady", "SecurityGroupsReady", "InstanceProfileReady"] {
        assert_eq!(condition(&c, t)["status"], "True", "{t}: {:?}", c.data["status"]);
    }
    assert_eq!(condition(&c, "Ready")["observedGeneration"], json!(c.metadata.generation.unwrap()));
    assert!(c.data["status"]["instanceProfile"].as_str().is_some_and(|p| !p.is_empty()));
    assert!(c.finalizers().contains(&"karpenter.k8s.aws/termination".to_string()));

    let b = api(&client, &classes).get("broken").await.unwrap();
    assert_eq!(condition(&b, "Ready")["status"], "False");
    assert_eq!(condition(&b, "AMIsReady")["status"], "False");
    assert_eq!(condition(&b, "AMIsReady")["reason"], "AMINotFound");
    assert_eq!(condition(&b, "AMIsReady")["message"], "no AMIs matched amiSelectorTerms [alias=al2023@v20990101]");

    let p = api(&client, &pools).get("default").await.unwrap();
    assert_eq!(condition(&p, "Ready")["status"], "True", "{:?}", p.data["status"]);
    assert_eq!(condition(&p, "NodeClassReady")["status"], "True");
    assert_eq!(p.data["status"]["nodes"], 0);
    let w = api(&client, &pools).get("waiting").await.unwrap();
    assert_eq!(condition(&w, "Ready")["status"], "False");
    assert_eq!(condition(&w, "NodeClassReady")["message"], "EC2NodeClass broken not ready");
    let o = api(&client, &pools).get("orphan").await.unwrap();
    assert_eq!(condition(&o, "NodeClassReady")["message"], "EC2NodeClass missing not found");

    // Fixing the class (a new generation) makes it and its pool Ready.
    broken["spec"]["tags"] = class["spec"]["tags"].clone();
    apply(&client, &classes, &broken).await;
    converge(&client).await;
    let b = api(&client, &classes).get("broken").await.unwrap();
    assert_eq!(condition(&b, "Ready")["status"], "True");
    assert_eq!(condition(&b, "Ready")["observedGeneration"], json!(b.metadata.generation.unwrap()));
    let w = api(&client, &pools).get("waiting").await.unwrap();
    assert_eq!(condition(&w, "Ready")["status"], "True");
}

#[tokio::test]
async fn pending_pods_get_a_node_of_their_pool_when_they_tolerate_its_taints() {
    let Some(bed) = bed_with_crds() else { return };
    let client = bed.client().await;
    apply(&client, &model::ec2_node_class_resource(), &rendered("ec2nodeclass-gpu.yaml")).await;
    let gpu_pool = rendered("nodepool-gpu.yaml");
    let taints = gpu_pool["spec"]["template"]["spec"]["taints"].clone();
    assert!(taints.as_array().is_some_and(|t| t.iter().any(|t| t["key"] == "nvidia.com/gpu")), "the preset's gpu pool is tainted: {taints}");
    apply(&client, &model::node_pool_resource(), &gpu_pool).await;
    namespace(&client, "apps").await;
    converge(&client).await; // class and pool Ready, the namespace's default ServiceAccount

    let pods: Api<Pod> = Api::namespaced(client.clone(), "apps");
    let toleration = json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]);
    pods.create(&PostParams::default(), &pod("trainer", json!({"karpenter.sh/nodepool": "gpu"}), toleration.clone(), true)).await.unwrap();
    pods.create(&PostParams::default(), &pod("intolerant", json!({"karpenter.sh/nodepool": "gpu"}), json!([]), false)).await.unwrap();
    converge(&client).await;

    let nodes = pool_nodes(&client, "gpu").await;
    assert_eq!(nodes.len(), 1, "one node for the one pod that tolerates the pool's taint");
    let node = &nodes[0];
    let claims = pool_claims(&client, "gpu").await;
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    assert_eq!(claim.name_any(), node.name_any());
    assert!(claim.name_any().starts_with("gpu-") && claim.name_any().len() == "gpu-".len() + 5, "{}", claim.name_any());
    assert_eq!(claim.data["spec"]["nodeClassRef"]["name"], "gpu");
    assert_eq!(claim.data["status"]["nodeName"], json!(node.name_any()));
    for t in ["Launched", "Registered", "Initialized", "Ready"] {
        assert_eq!(condition(claim, t)["status"], "True", "{t}");
    }
    let labels = node.labels();
    for (k, v) in [
        ("karpenter.sh/nodepool", "gpu"),
        ("karpenter.sh/initialized", "true"),
        ("karpenter.sh/registered", "true"),
        ("karpenter.sh/capacity-type", "on-demand"),
        ("karpenter.k8s.aws/ec2nodeclass", "gpu"),
        ("karpenter.k8s.aws/instance-gpu-manufacturer", "nvidia"),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
    ] {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k} in {labels:?}");
    }
    assert!(labels["node.kubernetes.io/instance-type"].starts_with("g4dn."), "the pool allows only g4dn: {labels:?}");
    let spec = node.spec.as_ref().unwrap();
    assert!(spec.provider_id.as_deref().unwrap().starts_with("aws:///us-west-2a/i-"));
    assert!(spec.taints.as_ref().unwrap().iter().any(|t| t.key == "nvidia.com/gpu" && t.effect == "NoSchedule"));
    let status = node.status.as_ref().unwrap();
    assert!(status.conditions.as_ref().unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert_eq!(status.allocatable.as_ref().unwrap()["nvidia.com/gpu"].0, "1");

    let trainer = pods.get("trainer").await.unwrap();
    assert_eq!(trainer.spec.unwrap().node_name, Some(node.name_any()));
    let ts = trainer.status.unwrap();
    assert_eq!(ts.phase.as_deref(), Some("Running"));
    assert!(ts.conditions.unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert!(ts.container_statuses.unwrap()[0].ready);
    let intolerant = pods.get("intolerant").await.unwrap();
    assert_eq!(intolerant.spec.unwrap().node_name, None, "no toleration for nvidia.com/gpu: stays Pending");
    assert_eq!(intolerant.status.unwrap().phase.as_deref(), Some("Pending"));

    // A second pod fits on the node already there; the pool counts its node.
    pods.create(&PostParams::default(), &pod("trainer-2", json!({"karpenter.sh/nodepool": "gpu"}), toleration, true)).await.unwrap();
    converge(&client).await;
    assert_eq!(pool_nodes(&client, "gpu").await.len(), 1);
    assert_eq!(pods.get("trainer-2").await.unwrap().spec.unwrap().node_name, Some(node.name_any()));
    let pool = api(&client, &model::node_pool_resource()).get("gpu").await.unwrap();
    assert_eq!(pool.data["status"]["nodes"], 1);
    assert_eq!(pool.data["status"]["resources"]["cpu"], "2");

    // DaemonSets count the nodes their selector, affinity and tolerations allow.
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), "apps");
    let ds = |name: &str, affinity_key: &str, tolerations: Value| -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": {
                        "tolerations": tolerations,
                        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                            {"matchExpressions": [{"key": affinity_key, "operator": "In", "values": ["nvidia"]}]}]}}},
                        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}
        }))
        .unwrap()
    };
    let gpu_toleration = json!([{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]);
    sets.create(&PostParams::default(), &ds("device-plugin", "karpenter.k8s.aws/instance-gpu-manufacturer", gpu_toleration.clone())).await.unwrap();
    sets.create(&PostParams::default(), &ds("no-toleration", "karpenter.k8s.aws/instance-gpu-manufacturer", json!([]))).await.unwrap();
    sets.create(&PostParams::default(), &ds("wrong-label", "example.com/vendor", gpu_toleration)).await.unwrap();
    converge(&client).await;
    for (name, n) in [("device-plugin", 1), ("no-toleration", 0), ("wrong-label", 0)] {
        let s = sets.get(name).await.unwrap().status.unwrap();
        assert_eq!((s.desired_number_scheduled, s.number_ready, s.observed_generation), (n, n, Some(1)), "{name}");
    }
}

#[tokio::test]
async fn deleting_a_node_pool_removes_its_nodes_and_claims() {
    let Some(bed) = bed_with_crds() else { return };
    let client = bed.client().await;
    let classes = model::ec2_node_class_resource();
    let pools = model::node_pool_resource();
    apply(&client, &classes, &rendered("ec2nodeclass-default.yaml")).await;
    apply(&client, &pools, &rendered("nodepool-default.yaml")).await;
    converge(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for i in 0..12 {
        pods.create(&PostParams::default(), &pod(&format!("web-{i}"), json!({"karpenter.sh/nodepool": "default"}), json!([]), false)).await.unwrap();
    }
    converge(&client).await;
    let nodes = pool_nodes(&client, "default").await;
    assert_eq!(nodes.len(), 2, "12 pods at {} per node", model::PODS_PER_NODE);
    for n in &nodes {
        let l = n.labels();
        let family = &l["karpenter.k8s.aws/instance-family"];
        assert!(["c", "m", "r"].contains(&&l["karpenter.k8s.aws/instance-category"][..]) && l["node.kubernetes.io/instance-type"].starts_with(family.as_str()), "{l:?}");
    }
    let running = pods.list(&ListParams::default()).await.unwrap().items;
    assert!(running.iter().all(|p| p.status.as_ref().unwrap().phase.as_deref() == Some("Running")));

    // One claim deleted directly: its node goes, its pods are garbage-collected.
    let claims = api(&client, &model::node_claim_resource());
    let first = nodes[0].name_any();
    let on_first = running.iter().filter(|p| p.spec.as_ref().unwrap().node_name.as_deref() == Some(&first)).count();
    claims.delete(&first, &DeleteParams::default()).await.unwrap();
    converge(&client).await;
    assert!(Api::<Node>::all(client.clone()).get_opt(&first).await.unwrap().is_none());
    assert!(claims.get_opt(&first).await.unwrap().is_none(), "the termination finalizer was released");
    assert_eq!(pods.list(&ListParams::default()).await.unwrap().items.len(), 12 - on_first);

    // The NodePool deleted: every claim and node of it goes, then the class may go too.
    api(&client, &pools).delete("default", &DeleteParams::default()).await.unwrap();
    converge(&client).await;
    assert!(pool_nodes(&client, "default").await.is_empty());
    assert!(pool_claims(&client, "default").await.is_empty());
    assert!(pods.list(&ListParams::default()).await.unwrap().items.is_empty(), "pods of deleted nodes are gone");
    api(&client, &classes).delete("default", &DeleteParams::default()).await.unwrap();
    converge(&client).await;
    assert!(api(&client, &classes).get_opt("default").await.unwrap().is_none(), "the class finalizer was released");
}

#[tokio::test]
async fn deleting_a_namespace_finishes_like_in_a_real_cluster() {
    let Some(bed) = KubeBed::start() else { return };
    let client = bed.client().await;
    namespace(&client, "doomed").await;
    converge(&client).await;
    // A pod bound to a (non-Karpenter) node: deleting it needs the kubelet's confirmation.
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "system-1", "labels": {"kubernetes.io/os": "linux"}}})).unwrap();
    Api::<Node>::all(client.clone()).create(&PostParams::default(), &node).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "doomed");
    let mut p = pod("bound", json!({}), json!([]), false);
    p.spec.as_mut().unwrap().node_name = Some("system-1".into());
    pods.create(&PostParams::default(), &p).await.unwrap();
    pods.create(&PostParams::default(), &pod("pending", json!({}), json!([]), false)).await.unwrap();
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "doomed");
    let cm = serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"a": "b"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    converge(&client).await;
    assert_eq!(pods.get("bound").await.unwrap().status.unwrap().phase.as_deref(), Some("Running"), "the kubelet ran it");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces.delete("doomed", &DeleteParams::default()).await.unwrap();
    assert_eq!(namespaces.get("doomed").await.unwrap().status.unwrap().phase.as_deref(), Some("Terminating"));
    converge(&client).await;
    assert!(namespaces.get_opt("doomed").await.unwrap().is_none(), "the namespace is gone");
    // default has its ServiceAccount, and nothing of doomed's is left behind.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), "default");
    assert!(sas.get_opt("default").await.unwrap().is_some());
    assert!(Api::<Pod>::all(client.clone()).list(&ListParams::default()).await.unwrap().items.is_empty());
}

#[tokio::test]
async fn the_run_loop_acts_on_new_objects_and_stops_when_told() {
    let Some(bed) = KubeBed::start() else { return };
    let client = bed.client().await;
    let (stop, rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(model::run(client.clone(), Duration::from_millis(100), rx));
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "karpenter"},
        "spec": {"selector": {"matchLabels": {"app": "karpenter"}},
                 "template": {"metadata": {"labels": {"app": "karpenter"}},
                              "spec": {"containers": [{"name": "controller", "image": "registry.k8s.io/pause:3.10"}]}}}
    }))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while deploys.get("karpenter").await.unwrap().status.and_then(|s| s.available_replicas) != Some(1) {
        assert!(Instant::now() < deadline, "the run loop did not make the Deployment available in 30s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("run returns once stopped").unwrap();
}

#[tokio::test]
async fn nodegroup_nodes_join_up_to_the_desired_size_and_are_ready() {
    let Some(bed) = KubeBed::start() else { return };
    let client = bed.client().await;
    assert_eq!(model::nodegroup_nodes(&client, "system", 2).await.unwrap(), 2);
    assert_eq!(model::nodegroup_nodes(&client, "system", 2).await.unwrap(), 0, "idempotent");
    assert_eq!(model::nodegroup_nodes(&client, "system", 3).await.unwrap(), 1, "scaled out by one");
    let nodes: Api<Node> = Api::all(client.clone());
    let list = nodes.list(&ListParams::default().labels("eks.amazonaws.com/nodegroup=system")).await.unwrap().items;
    assert_eq!(list.len(), 3);
    for n in &list {
        let st = n.status.clone().unwrap();
        assert!(st.conditions.unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True"), "{:?}", n.metadata.name);
        assert_eq!(st.allocatable.unwrap()["cpu"].0, "4");
    }
}

// ---------------------------------------------------------------------------------------------
// With the real Karpenter controller: the scheduler, kwok nodes, garbage collection
// ---------------------------------------------------------------------------------------------

/// A Node as a test fixture: labels, taints, allocatable, Ready or not.
fn node_fixture(name: &str, labels: Value, taints: Value, allocatable: Value, ready: bool) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
        "status": {"allocatable": allocatable, "capacity": allocatable,
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
    .unwrap()
}

fn spec_of(v: Value) -> k8s_openapi::api::core::v1::PodSpec {
    let mut v = v;
    if v.get("containers").is_none() {
        v["containers"] = json!([{"name": "app", "image": "registry.k8s.io/pause:3.10"}]);
    }
    serde_json::from_value(v).unwrap()
}

fn requests(cpu: &str, memory: &str) -> Value {
    json!([{"name": "app", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": {"cpu": cpu, "memory": memory}}}])
}

#[test]
fn the_scheduler_filters_nodes_like_kube_scheduler() {
    let small = json!({"cpu": "2", "memory": "4Gi", "pods": "3"});
    let gpu = json!({"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "1"});
    let nodes = vec![
        node_fixture("a-small", json!({"zone": "a", "kubernetes.io/arch": "amd64"}), json!([]), small.clone(), true),
        node_fixture("b-gpu", json!({"zone": "b", "kubernetes.io/arch": "amd64"}),
                     json!([{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]), gpu, true),
        node_fixture("c-down", json!({"zone": "c"}), json!([]), small.clone(), false),
    ];
    // One pod already uses 1.5 of a-small's 2 CPUs.
    let running: Pod = serde_json::from_value(json!({"metadata": {"name": "busy"},
        "spec": {"nodeName": "a-small", "containers": requests("1500m", "1Gi")}})).unwrap();
    let mut s = model::Scheduler::new(nodes, &[running]);

    assert_eq!(s.choose(&spec_of(json!({"containers": requests("250m", "1Gi")}))), Ok("a-small".into()));
    // Too much CPU for what is left on a-small; b-gpu's taint is not tolerated; c-down is not Ready.
    assert_eq!(
        s.choose(&spec_of(json!({"containers": requests("1", "1Gi")}))),
        Err("0/3 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint {nvidia.com/gpu: true}, 1 node(s) were not ready.".into())
    );
    let tolerant = json!({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"});
    assert_eq!(s.choose(&spec_of(json!({"containers": requests("1", "1Gi"), "tolerations": [tolerant]}))), Ok("b-gpu".into()));
    // nodeSelector and required node affinity.
    assert_eq!(
        s.choose(&spec_of(json!({"nodeSelector": {"zone": "b"}}))),
        Err("0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {nvidia.com/gpu: true}, 1 node(s) were not ready.".into())
    );
    let affinity = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]}}});
    assert_eq!(s.choose(&spec_of(json!({"affinity": affinity.clone(), "tolerations": [tolerant]}))), Ok("b-gpu".into()));
    // Extended resources must be allocatable; GPUs are only on b-gpu.
    let gpu_pod = json!({"containers": [{"name": "cuda", "image": "x", "resources": {"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}}],
                         "tolerations": [tolerant]});
    assert_eq!(s.choose(&spec_of(gpu_pod.clone())), Ok("b-gpu".into()));
    s.assume(&spec_of(gpu_pod.clone()), "b-gpu");
    assert_eq!(s.choose(&spec_of(gpu_pod)), Err("0/3 nodes are available: 1 node(s) were not ready, 2 Insufficient nvidia.com/gpu.".into()));
    // The pod count is a resource too (a-small takes 3 pods, one is there).
    s.assume(&spec_of(json!({})), "a-small");
    assert_eq!(s.choose(&spec_of(json!({"nodeSelector": {"zone": "a"}}))), Ok("a-small".into()));
    s.assume(&spec_of(json!({})), "a-small");
    assert!(s.choose(&spec_of(json!({"nodeSelector": {"zone": "a"}}))).unwrap_err().contains("1 Too many pods"));
}

#[test]
fn pod_requests_count_init_containers_sidecars_and_overhead() {
    let spec = spec_of(json!({
        "initContainers": [
            {"name": "setup", "image": "x", "resources": {"requests": {"cpu": "2", "memory": "64Mi"}}},
            {"name": "proxy", "image": "x", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}}}],
        "containers": requests("500m", "128Mi"),
        "overhead": {"cpu": "50m"},
    }));
    let r = model::pod_requests(&spec);
    assert!((r["cpu"] - 2.05).abs() < 1e-9, "{r:?}"); // max(2, 0.5 + 0.1) + overhead
    assert_eq!(r["memory"], 160.0 * 1024.0 * 1024.0); // 128Mi + the 32Mi sidecar (> the 64Mi init)
    assert_eq!(r["pods"], 1.0);
}

#[tokio::test]
async fn with_the_real_karpenter_the_sim_schedules_runs_kwok_nodes_and_collects_garbage() {
    let Some(bed) = bed_with_crds() else { return };
    let client = bed.client().await;
    let roles = &model::Options::real_karpenter();
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    converge_with(&client, roles).await; // default ServiceAccount

    // A pending pod nothing fits: Unschedulable, as kube-scheduler reports it; the fake
    // Karpenter is off, so no NodeClaim appears for it.
    let mut p = pod("web", json!({"karpenter.sh/nodepool": "default"}), json!([]), false);
    p.spec.as_mut().unwrap().containers[0].resources = serde_json::from_value(json!({"requests": {"cpu": "1", "memory": "1Gi"}})).unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    converge_with(&client, roles).await;
    let scheduled = |p: &Pod| p.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default().into_iter().find(|c| c.type_ == "PodScheduled");
    let c = scheduled(&pods.get("web").await.unwrap()).expect("PodScheduled condition");
    assert_eq!((c.status.as_str(), c.reason.as_deref(), c.message.as_deref()), ("False", Some("Unschedulable"), Some("0/0 nodes are available.")));
    assert!(pool_claims(&client, "default").await.is_empty());

    // What the kwok build creates for a fake instance: labels, providerID, the unregistered
    // taint, capacity, no conditions. The sim's kubelet makes it Ready; the not-ready taint
    // the API server added goes; the unregistered one stays for Karpenter to lift.
    let kwok: Node = serde_json::from_value(json!({
        "metadata": {"name": "kwok-x-1", "annotations": {"kwok.x-k8s.io/node": "fake"},
                     "labels": {"kwok.x-k8s.io/node": "fake", "karpenter.sh/nodepool": "default", "kubernetes.io/arch": "amd64",
                                "node.kubernetes.io/instance-type": "m5.large", "topology.kubernetes.io/zone": "us-west-2a"}},
        "spec": {"providerID": "kwok-aws:///us-west-2a/i-0123456789abcdef0",
                 "taints": [{"key": "karpenter.sh/unregistered", "effect": "NoExecute"}]},
        "status": {"capacity": {"cpu": "2", "memory": "7910Mi", "pods": "29"}, "allocatable": {"cpu": "1930m", "memory": "7220Mi", "pods": "29"}}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &kwok).await.unwrap();
    converge_with(&client, roles).await;
    let n = nodes.get("kwok-x-1").await.unwrap();
    let st = n.status.clone().unwrap();
    assert!(st.conditions.unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    assert_eq!(st.allocatable.unwrap()["cpu"].0, "1930m", "the kwok build's allocatable is kept");
    let taints: Vec<String> = n.spec.unwrap().taints.unwrap_or_default().into_iter().map(|t| t.key).collect();
    assert_eq!(taints, vec!["karpenter.sh/unregistered".to_string()]);
    let c = scheduled(&pods.get("web").await.unwrap()).unwrap();
    assert_eq!(c.message.as_deref(), Some("0/1 nodes are available: 1 node(s) had untolerated taint {karpenter.sh/unregistered: }."));

    // Karpenter registers the node (lifts its taint): the pod is bound there and runs.
    nodes.patch("kwok-x-1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"taints": null}}))).await.unwrap();
    converge_with(&client, roles).await;
    let web = pods.get("web").await.unwrap();
    assert_eq!(web.spec.as_ref().unwrap().node_name.as_deref(), Some("kwok-x-1"));
    assert_eq!(web.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    // A drain: an eviction-style graceful delete completes (the kubelet confirms it).
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    converge_with(&client, roles).await;
    assert!(pods.get_opt("web").await.unwrap().is_none());

    // Garbage collection: a NodeClaim owned by a deleted NodePool is deleted, and a Node owned
    // by a deleted NodeClaim too.
    apply(&client, &model::node_pool_resource(), &rendered("nodepool-default.yaml")).await;
    let pool = api(&client, &model::node_pool_resource()).get("default").await.unwrap();
    let claim = json!({"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim",
        "metadata": {"name": "default-abcde", "labels": {"karpenter.sh/nodepool": "default"},
                     "ownerReferences": [{"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "name": "default",
                                          "uid": pool.metadata.uid.clone().unwrap(), "blockOwnerDeletion": true}]},
        "spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"},
                 "requirements": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}});
    let claims = api(&client, &model::node_claim_resource());
    let claim: DynamicObject = claims.create(&PostParams::default(), &serde_json::from_value(claim).unwrap()).await.unwrap();
    let owner = json!([{"apiVersion": "karpenter.sh/v1", "kind": "NodeClaim", "name": "default-abcde", "uid": claim.metadata.uid.clone().unwrap()}]);
    nodes.patch("kwok-x-1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"ownerReferences": owner}}))).await.unwrap();
    converge_with(&client, roles).await;
    assert!(claims.get_opt("default-abcde").await.unwrap().is_some(), "owned by a live pool: kept");
    assert!(nodes.get_opt("kwok-x-1").await.unwrap().is_some(), "owned by a live claim: kept");
    api(&client, &model::node_pool_resource()).delete("default", &DeleteParams::default()).await.unwrap();
    converge_with(&client, roles).await;
    assert!(claims.get_opt("default-abcde").await.unwrap().is_none(), "the claim of the deleted pool is collected");
    assert!(nodes.get_opt("kwok-x-1").await.unwrap().is_none(), "the node of the deleted claim is collected");
}
