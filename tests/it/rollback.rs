//! `karpctl rollback` end to end on both beds (the AWS emulator whose cluster points at a
//! real kube-apiserver, the controller simulator standing in for Karpenter and the
//! kubelets, the real helm): from a converged `up` with Karpenter nodes carrying pods,
//! back to the managed nodegroup, and from there `up` again. Everything is checked by
//! reading the beds: the emulator's nodegroup, IAM, EKS and EC2 state and request
//! counter, the API server's objects and request metrics, the state file.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use crate::beds::KubeSim;
use crate::up::{diff, sandbox_config, show, Sandbox, CLUSTER};

const NODEGROUP: &str = "system";
const NODE_ROLE: &str = "KarpenterNodeRole-karpctl-sandbox";
const CONTROLLER_ROLE: &str = "KarpenterControllerRole-karpctl-sandbox";
const STACK: &str = "Karpenter-karpctl-sandbox";
const ROLLBACK_STEPS: [&str; 7] = [
    "rollback/cluster",
    "rollback/nodegroups",
    "rollback/nodepools",
    "rollback/nodeclasses",
    "rollback/releases",
    "rollback/node-access",
    "rollback/identity",
];

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Async helpers against both beds, from a plain test thread.
pub(crate) struct Bed {
    rt: tokio::runtime::Runtime,
    kube: kube::Client,
    sdk: aws_config::SdkConfig,
}

impl Bed {
    pub(crate) fn new(sb: &Sandbox) -> Bed {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let kube = rt.block_on(sb.kube.client());
        let sdk = rt.block_on(sb.aws.sdk_config("us-west-2"));
        Bed { rt, kube, sdk }
    }

    fn sim(&self) -> KubeSim {
        KubeSim { client: self.kube.clone() }
    }

    fn eks(&self) -> aws_sdk_eks::Client {
        aws_sdk_eks::Client::new(&self.sdk)
    }

    fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sdk)
    }

    fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk)
    }

    /// Ready nodes of the managed nodegroup, 4 CPU / 16 GiB each.
    fn nodegroup_nodes(&self, n: usize) {
        for i in 0..n {
            self.rt.block_on(self.sim().node(&format!("{NODEGROUP}-{i}"), None, Some(NODEGROUP), "4", "16Gi"));
        }
    }

    /// Pending pods that select `pool`; the real controller gives them Karpenter nodes.
    fn workload(&self, ns: &str, app: &str, replicas: usize, pool: &str, cpu: &str) {
        self.namespace(ns);
        self.rt.block_on(async {
            let pods: Api<Pod> = Api::namespaced(self.kube.clone(), ns);
            for i in 0..replicas {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("{app}-{i}"), "labels": {"app": app}},
                    "spec": {"nodeSelector": {"karpenter.sh/nodepool": pool}, "automountServiceAccountToken": false,
                             "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                             "resources": {"requests": {"cpu": cpu, "memory": "512Mi"}}}]}
                }))
                .unwrap();
                create_when_admitted(&pods, &pod, &format!("pod {app}-{i}")).await;
            }
        });
        self.wait_on_karpenter_nodes(ns, app, replicas);
    }

    /// A ReplicaSet of `replicas` pods that select nothing, made while no other node exists,
    /// so the real controller gives them Karpenter nodes; an evicted pod comes back and the
    /// scheduler places it wherever it fits, as a Deployment's would.
    fn replicated(&self, ns: &str, app: &str, replicas: usize, cpu: &str) {
        self.namespace(ns);
        self.rt.block_on(async {
            let sets: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(self.kube.clone(), ns);
            let rs = serde_json::from_value(json!({
                "metadata": {"name": app},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                         "template": {"metadata": {"labels": {"app": app}},
                                      "spec": {"automountServiceAccountToken": false,
                                               "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                                               "resources": {"requests": {"cpu": cpu, "memory": "512Mi"}}}]}}}
            }))
            .unwrap();
            sets.create(&PostParams::default(), &rs).await.unwrap();
        });
        self.wait_on_karpenter_nodes(ns, app, replicas);
    }

    fn namespace(&self, ns: &str) {
        self.rt.block_on(async {
            let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.kube.clone());
            if nss.get_opt(ns).await.unwrap().is_none() {
                nss.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap()).await.unwrap();
            }
        });
    }

    /// Waits for `replicas` pods of `app` Running on Karpenter nodes. The real controller may
    /// have just started: it waits out the last one's leader lease (15 s), batches, and its
    /// kwok build registers a node 30 s after launch.
    fn wait_on_karpenter_nodes(&self, ns: &str, app: &str, replicas: usize) {
        wait_until(&format!("{app} pods running on Karpenter nodes"), Duration::from_secs(150), || {
            let karpenter: Vec<String> = self.nodes("karpenter.sh/nodepool").into_iter().filter_map(|n| n.metadata.name).collect();
            self.pods(ns)
                .iter()
                .filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get("app")).map(String::as_str) == Some(app))
                .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
                .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| karpenter.contains(n)))
                .count()
                == replicas
        });
    }

    fn pods(&self, ns: &str) -> Vec<Pod> {
        self.rt.block_on(Api::<Pod>::namespaced(self.kube.clone(), ns).list(&ListParams::default())).unwrap().items
    }

    fn nodes(&self, selector: &str) -> Vec<Node> {
        self.rt.block_on(Api::<Node>::all(self.kube.clone()).list(&ListParams::default().labels(selector))).unwrap().items
    }

    /// Names of the objects of a Karpenter kind (empty when its CRD is gone).
    fn karpenter(&self, ar: &kube::discovery::ApiResource) -> Vec<String> {
        let api: Api<DynamicObject> = Api::all_with(self.kube.clone(), ar);
        match self.rt.block_on(api.list(&ListParams::default())) {
            Ok(l) => l.items.into_iter().filter_map(|o| o.metadata.name).collect(),
            Err(kube::Error::Api(s)) if s.code == 404 => vec![],
            Err(e) => panic!("listing {}: {e}", ar.plural),
        }
    }

    fn scaling(&self) -> (i32, i32, i32) {
        let ng = self.rt.block_on(self.eks().describe_nodegroup().cluster_name(CLUSTER).nodegroup_name(NODEGROUP).send()).unwrap();
        let sc = ng.nodegroup().unwrap().scaling_config().unwrap();
        (sc.min_size().unwrap(), sc.desired_size().unwrap(), sc.max_size().unwrap())
    }

    fn role_exists(&self, name: &str) -> bool {
        match self.rt.block_on(self.iam().get_role().role_name(name).send()) {
            Ok(_) => true,
            Err(e) => {
                let code = aws_sdk_iam::error::ProvideErrorMetadata::code(&e.into_service_error()).unwrap_or_default().to_string();
                assert_eq!(code, "NoSuchEntity");
                false
            }
        }
    }

    fn access_entries(&self) -> Vec<String> {
        self.rt.block_on(self.eks().list_access_entries().cluster_name(CLUSTER).send()).unwrap().access_entries().to_vec()
    }

    fn associations(&self) -> usize {
        self.rt.block_on(self.eks().list_pod_identity_associations().cluster_name(CLUSTER).send()).unwrap().associations().len()
    }

    fn stack_exists(&self) -> bool {
        let cfn = aws_sdk_cloudformation::Client::new(&self.sdk);
        match self.rt.block_on(cfn.describe_stacks().stack_name(STACK).send()) {
            Ok(o) => o.stacks().iter().any(|s| s.stack_status().map(|x| x.as_str()) != Some("DELETE_COMPLETE")),
            Err(e) => {
                let msg = format!("{}", aws_sdk_cloudformation::error::DisplayErrorContext(&e));
                assert!(msg.contains("does not exist"), "{msg}");
                false
            }
        }
    }

    /// EC2 resources carrying a tag key (any value), by resource id.
    fn ec2_tagged(&self, key: &str) -> Vec<String> {
        let f = aws_sdk_ec2::types::Filter::builder().name("key").values(key).build();
        let out = self.rt.block_on(self.ec2().describe_tags().filters(f).send()).unwrap();
        out.tags().iter().filter_map(|t| t.resource_id().map(String::from)).collect()
    }
}

/// Creates `obj`, retrying while admission refuses it (the simulator makes a new namespace's
/// default ServiceAccount, which admission needs, a moment after the namespace).
async fn create_when_admitted<K>(api: &Api<K>, obj: &K, what: &str)
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match api.create(&PostParams::default(), obj).await {
            Ok(_) => return,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("creating {what}: {e}"),
        }
    }
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Joins new nodes to the nodegroup as EKS scales it: what the node group's
/// instances would do when they boot (the emulator has the instances, not the Nodes).
pub(crate) struct NodegroupKubelet {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl NodegroupKubelet {
    pub(crate) fn start(sb: &Sandbox, bed: &Bed) -> NodegroupKubelet {
        let stop = Arc::new(AtomicBool::new(false));
        let (sdk, kubeconfig, flag) = (bed.sdk.clone(), sb.kube.kubeconfig(), stop.clone());
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
                let sim = KubeSim { client: kube::Client::try_from(cfg).unwrap() };
                let eks = aws_sdk_eks::Client::new(&sdk);
                while !flag.load(Ordering::SeqCst) {
                    if let Ok(o) = eks.describe_nodegroup().cluster_name(CLUSTER).nodegroup_name(NODEGROUP).send().await {
                        let desired = o.nodegroup().and_then(|n| n.scaling_config()).and_then(|s| s.desired_size()).unwrap_or(0) as usize;
                        let api: Api<Node> = Api::all(sim.client.clone());
                        let have = api.list(&ListParams::default().labels(&format!("eks.amazonaws.com/nodegroup={NODEGROUP}"))).await.unwrap().items.len();
                        for i in have..desired {
                            sim.node(&format!("{NODEGROUP}-{i}"), None, Some(NODEGROUP), "4", "16Gi").await;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            });
        });
        NodegroupKubelet { stop, handle: Some(handle) }
    }
}

impl Drop for NodegroupKubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The binary as `Sandbox::karpctl` runs it, as a child we can kill.
fn spawn(sb: &Sandbox, args: &[&str]) -> std::process::Child {
    crate::crash::command(sb, args).spawn().unwrap()
}

fn ok(o: &Output) {
    assert!(o.status.success(), "{}", show(o));
}

/// A converged sandbox with Karpenter nodes carrying `web` pods.
fn converged(name: &str, aws_args: &[&str]) -> Option<(Sandbox, Bed)> {
    let sb = Sandbox::start(name, aws_args)?;
    sb.write_config(&sandbox_config());
    ok(&sb.karpctl(&["up"]));
    let bed = Bed::new(&sb);
    Some((sb, bed))
}

/// What every finished rollback leaves, on both beds and in the state.
fn assert_rolled_back(sb: &Sandbox, bed: &Bed) {
    use karpctl::kube::apply::{node_class_resource, node_claim_resource, node_pool_resource};
    assert_eq!(bed.scaling(), (1, 3, 4), "the nodegroup scaled to rollback.nodegroups");
    let ready = bed.nodes(&format!("eks.amazonaws.com/nodegroup={NODEGROUP}"));
    assert!(ready.len() >= 3, "3 nodegroup nodes: {}", ready.len());
    assert_eq!(bed.karpenter(&node_pool_resource()), Vec::<String>::new(), "no NodePools");
    assert_eq!(bed.karpenter(&node_class_resource()), Vec::<String>::new(), "no EC2NodeClasses");
    assert_eq!(bed.karpenter(&node_claim_resource()), Vec::<String>::new(), "no NodeClaims");
    assert_eq!(bed.nodes("karpenter.sh/nodepool").len(), 0, "no Karpenter nodes");
    let releases = sb.helm_list();
    assert_eq!(releases.as_array().unwrap().len(), 0, "no releases: {releases}");
    assert!(!bed.access_entries().iter().any(|e| e.contains(NODE_ROLE)), "the node role's access entry is gone: {:?}", bed.access_entries());
    assert!(bed.access_entries().iter().any(|e| e.contains("system-node-role")), "the nodegroup's own entry stays");
    assert_eq!(bed.associations(), 0, "no pod identity association");
    assert!(!bed.role_exists(CONTROLLER_ROLE), "the controller role is gone");
    let st = sb.state("state.json");
    let steps = st["steps"].as_object().unwrap();
    for id in ROLLBACK_STEPS {
        assert_eq!(steps[id]["status"], "done", "{id}: {}", steps[id]);
    }
    for gone in ["identity/", "node-access/", "helm-release/", "objects/", "prune/", "ready/", "aws-auth/"] {
        assert!(!steps.keys().any(|k| k.starts_with(gone)), "the up record {gone}… is forgotten: {:?}", steps.keys().collect::<Vec<_>>());
    }
    assert!(steps.contains_key("cfn-stack/Karpenter-karpctl-sandbox"), "without --purge the stack and its record stay");
    assert!(steps.contains_key("crds/karpenter"), "without --delete-crds the CRDs and their record stay");
    let removed = &steps["rollback/nodepools"]["outputs"]["removed"];
    assert!(removed.as_array().unwrap().iter().any(|r| r == "NodePool/default"), "{removed}");
}

#[test]
fn rollback_returns_to_the_nodegroup_and_up_brings_karpenter_back() {
    let Some((mut sb, bed)) = converged("rb-e2e", &[]) else { return };
    bed.replicated("apps", "web", 4, "500m");
    bed.rt.block_on(bed.sim().pdb("apps", "web", "web", 3, 1));
    bed.nodegroup_nodes(2);
    let kubelet = NodegroupKubelet::start(&sb, &bed);
    let karpenter_nodes: Vec<String> = bed.nodes("karpenter.sh/nodepool").iter().filter_map(|n| n.metadata.name.clone()).collect();
    assert!(!karpenter_nodes.is_empty());

    let out = sb.karpctl(&["rollback"]);
    ok(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Rollback sequence: rollback/cluster → rollback/nodegroups → rollback/nodepools"), "{stdout}");
    for line in ["rollback/nodepools: NodePool/default", "rollback/nodeclasses: EC2NodeClass/default", "rollback/releases: helm release kube-system/karpenter",
                 "rollback/identity: IAM role KarpenterControllerRole-karpctl-sandbox", "rollback/node-access: access entry"] {
        assert!(stdout.contains(line), "the report lists {line:?}:\n{stdout}");
    }
    assert!(stdout.contains(&format!("Node/{}", karpenter_nodes[0])), "{stdout}");
    // What a rollback without --purge / --delete-crds leaves, each with why and what removes it.
    let kept = stdout.split("\nKept:\n").nth(1).unwrap_or_else(|| panic!("no Kept list:\n{stdout}"));
    for line in [
        "cfn-stack/Karpenter-karpctl-sandbox: CloudFormation stack Karpenter-karpctl-sandbox (node role KarpenterNodeRole-karpctl-sandbox",
        "discovery-tags/karpctl-sandbox: karpenter.sh/discovery=karpctl-sandbox tags karpctl added on sg-",
        "crds/karpenter: CRDs ",
        "iam/spot-service-linked-role: service-linked role AWSServiceRoleForEC2Spot: never deleted",
    ] {
        assert!(kept.contains(line), "the report keeps {line:?}:\n{stdout}");
    }
    assert!(kept.contains("`karpctl rollback --purge` deletes it") && kept.contains("`karpctl rollback --delete-crds` deletes them"), "{kept}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("rollback/nodegroups: waiting"), "progress while the nodegroup scales:\n{stderr}");
    drop(kubelet);
    assert_rolled_back(&sb, &bed);
    // The drain moved the workload, one pod at a time within its budget, onto the nodegroup.
    let web: Vec<(String, String)> = bed
        .pods("apps")
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| (p.metadata.name.clone().unwrap(), p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default()))
        .collect();
    assert_eq!(web.len(), 4, "{web:?}");
    assert!(web.iter().all(|(_, node)| node.starts_with(&format!("{NODEGROUP}-"))), "every web pod runs on the nodegroup: {web:?}");

    // A second rollback: every step observes, nothing to do, nothing written anywhere.
    sb.stop_sim();
    let recorded = sb.state("state.json");
    let serial = recorded["serial"].clone();
    sb.aws_mutations();
    let before = sb.kube_writes();
    let again = sb.karpctl(&["rollback"]);
    let now = sb.state("state.json");
    for (id, r) in now["steps"].as_object().unwrap() {
        assert_eq!(r["outputs"], recorded["steps"][id]["outputs"], "{id}'s outputs are recorded again");
        assert_eq!(r["finished_at"], recorded["steps"][id]["finished_at"], "{id} is recorded again");
    }
    ok(&again);
    assert!(text(&again.stdout).contains("No changes."), "{}", show(&again));
    assert_eq!(sb.aws_mutations()["mutating"], 0, "a second rollback makes no mutating AWS call");
    assert_eq!(diff(&before, &sb.kube_writes()), Default::default(), "nor writes to Kubernetes");
    assert_eq!(sb.state("state.json")["serial"], serial, "nor rewrites the state");

    // And `up` brings Karpenter back, dropping the rollback records.
    sb.start_sim();
    let up = sb.karpctl(&["up"]);
    ok(&up);
    let st = sb.state("state.json");
    let steps = st["steps"].as_object().unwrap();
    assert!(!steps.keys().any(|k| k.starts_with("rollback/")), "up forgets the rollback: {:?}", steps.keys().collect::<Vec<_>>());
    assert!(steps.values().all(|r| r["status"] == "done"), "{st:#}");
    assert_eq!(bed.karpenter(&karpctl::kube::apply::node_pool_resource()).len(), 2);
    assert!(bed.role_exists(CONTROLLER_ROLE));
    assert_eq!(bed.associations(), 1);
    assert!(bed.access_entries().iter().any(|e| e.contains(NODE_ROLE)));
    let names: Vec<String> = sb.helm_list().as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn dry_run_and_plan_change_nothing_and_list_every_step_and_capacity_is_checked_first() {
    let Some((mut sb, bed)) = converged("rb-plan", &[]) else { return };
    bed.nodegroup_nodes(2);
    bed.workload("apps", "web", 4, "default", "500m");
    sb.stop_sim();
    let serial = sb.state("state.json")["serial"].clone();
    sb.aws_mutations();
    let before = sb.kube_writes();

    let dry = sb.karpctl(&["rollback", "--dry-run", "-o", "json"]);
    ok(&dry);
    let doc: Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(doc["sequence"], json!(ROLLBACK_STEPS), "{doc:#}");
    let planned: Vec<&str> = doc["planned"].as_array().unwrap().iter().map(|p| p["step"].as_str().unwrap()).collect();
    assert_eq!(planned, &ROLLBACK_STEPS[1..], "every step but the cluster lookup would change: {doc:#}");
    let ng = &doc["planned"][0]["change"];
    let summary = ng["summary"].as_str().unwrap();
    assert!(summary.contains("scale nodegroup system to 1/3/4") && summary.contains("the 4 pod(s) on Karpenter nodes request 2.0 CPU / 2.0 GiB"), "{summary}");
    assert!(summary.contains("about 12.0 CPU / 48.0 GiB will be free"), "{summary}");
    assert_eq!(ng["destructive"], false);
    let pools = doc["planned"][1]["change"]["summary"].as_str().unwrap();
    assert!(pools.contains("delete NodePool(s) default, gpu") && pools.contains("Karpenter drains"), "{pools}");
    assert_eq!(doc["planned"][3]["change"]["destructive"], false, "karpctl's own pools are gone by the time the controller goes: {doc:#}");
    let kept: Vec<&str> = doc["kept"].as_array().unwrap().iter().map(|k| k["step"].as_str().unwrap()).collect();
    assert_eq!(kept, ["cfn-stack/Karpenter-karpctl-sandbox", "discovery-tags/karpctl-sandbox", "crds/karpenter", "iam/spot-service-linked-role"], "{doc:#}");
    let purge: Value = serde_json::from_slice(&sb.karpctl(&["rollback", "--dry-run", "--purge", "--delete-crds", "-o", "json"]).stdout).unwrap();
    let kept: Vec<&str> = purge["kept"].as_array().unwrap().iter().map(|k| k["step"].as_str().unwrap()).collect();
    assert_eq!(kept, ["iam/spot-service-linked-role"], "with --purge and --delete-crds only the Spot role stays: {purge:#}");


    let plan = sb.karpctl(&["plan", "--rollback", "--purge", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", show(&plan));
    let text_plan = text(&plan.stdout);
    for id in ROLLBACK_STEPS.iter().chain(&["rollback/sweep", "rollback/stack"]) {
        assert!(text_plan.contains(id), "plan --rollback --purge lists {id}:\n{text_plan}");
    }
    assert!(text_plan.contains("delete stack Karpenter-karpctl-sandbox"), "{text_plan}");
    assert!(text_plan.contains("remove the karpenter.sh/discovery tag karpctl added"), "{text_plan}");
    let crds = sb.karpctl(&["plan", "--rollback", "--delete-crds"]);
    assert!(text(&crds.stdout).contains("this deletes every NodePool, EC2NodeClass and NodeClaim"), "{}", show(&crds));

    let m = sb.aws_mutations();
    assert_eq!(m["mutating"], 0, "dry run and plans make no mutating AWS call: {m}");
    assert_eq!(diff(&before, &sb.kube_writes()), Default::default(), "nor write to Kubernetes");
    assert_eq!(sb.state("state.json")["serial"], serial, "nor to the state");
    assert!(!sb.dir.join("state.json.lock").exists(), "nor take the lock");

    // A NodePool karpctl does not manage would lose its controller: that needs --yes.
    let foreign = json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "theirs"},
        "spec": {"template": {"spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "default"}, "requirements": []}}}});
    std::fs::write(sb.dir.join("theirs.json"), foreign.to_string()).unwrap();
    let applied = sb.kubectl(&["apply", "-f", sb.dir.join("theirs.json").to_str().unwrap()]);
    assert!(applied.status.success(), "{}", show(&applied));
    let with_foreign: Value = serde_json::from_slice(&sb.karpctl(&["plan", "--rollback", "-o", "json"]).stdout).unwrap();
    let releases = &with_foreign["planned"][3]["change"];
    assert_eq!(releases["destructive"], true, "{releases}");
    assert!(releases["summary"].as_str().unwrap().contains("NodePool/theirs"), "{releases}");
    assert!(sb.kubectl(&["delete", "nodepool", "theirs"]).status.success());

    // Pods that clearly do not fit: refused before anything changes, with the numbers.
    sb.start_sim();
    bed.workload("apps", "big", 4, "default", "3");
    sb.stop_sim();
    sb.aws_mutations();
    let before = sb.kube_writes();
    let refused = sb.karpctl(&["rollback"]);
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    let out = text(&refused.stdout);
    assert!(out.contains("rollback/nodegroups") && out.contains("cannot hold them") && out.contains("request 14.0 CPU / 4.0 GiB"), "{out}");
    assert!(out.contains("about 12.0 CPU / 48.0 GiB will be free") && out.contains("not done without --yes"), "{out}");
    assert!(out.contains("rollback/nodepools: skipped"), "nothing after it runs: {out}");
    assert!(text(&refused.stderr).contains("karpctl rollback --yes"), "{}", show(&refused));
    assert_eq!(sb.aws_mutations()["mutating"], 0, "a refused rollback scales nothing");
    let writes = diff(&before, &sb.kube_writes());
    assert_eq!(writes, Default::default(), "and deletes nothing: {writes:?}");
    assert_eq!(bed.scaling(), (1, 2, 3));
}

#[test]
fn a_rollback_killed_mid_drain_resumes_to_the_same_end() {
    let Some((sb, bed)) = converged("rb-crash", &[]) else { return };
    bed.nodegroup_nodes(3);
    bed.workload("apps", "web", 3, "default", "250m");
    // One Karpenter node cannot go yet (an extra finalizer): the drain waits on it.
    let held = bed.nodes("karpenter.sh/nodepool")[0].clone();
    let name = held.metadata.name.clone().unwrap();
    let mut finalizers = held.metadata.finalizers.clone().unwrap_or_default();
    finalizers.push("karpctl.testbed/hold".into());
    let nodes: Api<Node> = Api::all(bed.kube.clone());
    bed.rt.block_on(nodes.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})))).unwrap();

    let mut child = spawn(&sb, &["rollback"]);
    wait_until("rollback/nodepools in progress", Duration::from_secs(120), || {
        let st: Option<Value> = std::fs::read(sb.dir.join("state.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(Some(code)) = child.try_wait().ok().flatten().map(|s| Some(s.code())) {
            panic!("rollback ended early ({code:?})");
        }
        st.is_some_and(|s| s["steps"]["rollback/nodepools"]["status"] == "in_progress")
    });
    std::thread::sleep(Duration::from_secs(2));
    let _ = Command::new("kill").args(["-9", &child.id().to_string()]).status();
    let _ = child.wait();
    let st = sb.state("state.json");
    assert_eq!(st["steps"]["rollback/nodepools"]["status"], "in_progress", "{st:#}");
    assert_eq!(st["steps"]["rollback/nodegroups"]["status"], "done");
    assert!(st["steps"].get("rollback/releases").is_none(), "killed before the releases");
    assert_eq!(bed.karpenter(&karpctl::kube::apply::node_pool_resource()), Vec::<String>::new(), "the pools were deleted before the kill");
    assert!(!sb.helm_list().as_array().unwrap().is_empty(), "the controller still runs");

    // The crashed run's lock stays and is reported, with the command that clears it.
    let locked = sb.karpctl(&["rollback", "--lock-timeout", "1"]);
    assert_eq!(locked.status.code(), Some(1), "{}", show(&locked));
    let err = text(&locked.stderr);
    let id = err.split("karpctl state unlock ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_else(|| panic!("no unlock help: {err}"));
    ok(&sb.karpctl(&["state", "unlock", id]));

    // Let the node go, and resume: the nodegroup is not scaled again, the rest finishes.
    let n = bed.rt.block_on(nodes.get(&name)).unwrap();
    let rest: Vec<String> = n.metadata.finalizers.unwrap_or_default().into_iter().filter(|f| f != "karpctl.testbed/hold").collect();
    bed.rt.block_on(nodes.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": rest}})))).unwrap();
    sb.aws_mutations();
    let resumed = sb.karpctl(&["rollback"]);
    ok(&resumed);
    let m = sb.aws_mutations();
    assert_eq!(m["counts"]["eks:UpdateNodegroupConfig"], Value::Null, "the nodegroup is not scaled twice: {m}");
    assert_rolled_back(&sb, &bed);
}

#[test]
fn purge_leaves_nothing_karpctl_or_karpenter_tagged() {
    let Some((sb, bed)) = converged("rb-purge", &[]) else { return };
    bed.nodegroup_nodes(3);
    // What a controller that vanished before its finalizers ran leaves: a launch
    // template and an instance profile holding the stack's node role (the real
    // controller, still running here, may collect them itself first).
    bed.rt.block_on(async {
        use aws_sdk_ec2::types::{RequestLaunchTemplateData, ResourceType, Tag, TagSpecification};
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::LaunchTemplate)
            .tags(Tag::builder().key("eks:eks-cluster-name").value(CLUSTER).build())
            .tags(Tag::builder().key("karpenter.k8s.aws/ec2nodeclass").value("default").build())
            .build();
        bed.ec2()
            .create_launch_template()
            .launch_template_name("karpenter.k8s.aws/1234567890")
            .launch_template_data(RequestLaunchTemplateData::builder().instance_type(aws_sdk_ec2::types::InstanceType::M5Large).build())
            .tag_specifications(tags)
            .send()
            .await
            .unwrap();
        let iam = bed.iam();
        let tag = |k: &str, v: &str| aws_sdk_iam::types::Tag::builder().key(k).value(v).build().unwrap();
        iam.create_instance_profile()
            .instance_profile_name(format!("{CLUSTER}_1234567890"))
            .path(format!("/karpenter/us-west-2/{CLUSTER}/uid/"))
            .tags(tag("eks:eks-cluster-name", CLUSTER))
            .tags(tag("karpenter.k8s.aws/ec2nodeclass", "default"))
            .tags(tag(&format!("kubernetes.io/cluster/{CLUSTER}"), "owned"))
            .send()
            .await
            .unwrap();
        iam.add_role_to_instance_profile().instance_profile_name(format!("{CLUSTER}_1234567890")).role_name(NODE_ROLE).send().await.unwrap();

    });
    assert!(!bed.ec2_tagged("karpenter.sh/discovery").is_empty(), "up tagged the subnets");

    // CloudFormation refuses the delete (every attempt the SDK makes): the stack step fails, the rest is done.
    sb.aws.add_faults(&json!({"operation": "cloudformation:DeleteStack", "kind": "5xx", "count": 50}));
    let first = sb.karpctl(&["rollback", "--purge"]);
    assert_eq!(first.status.code(), Some(1), "{}", show(&first));
    let out = text(&first.stdout);
    assert!(out.contains("! rollback/stack: deleting stack `Karpenter-karpctl-sandbox`: cloudformation:DeleteStack: InternalFailure"), "{out}");
    assert!(text(&first.stderr).contains("run `karpctl rollback --purge` again"), "resumed with the flag it ran with: {}", show(&first));
    let st = sb.state("state.json");
    assert_eq!(st["steps"]["rollback/stack"]["status"], "failed");
    assert_eq!(st["steps"]["rollback/sweep"]["status"], "done");
    assert!(st["steps"].get("cfn-stack/Karpenter-karpctl-sandbox").is_some(), "the stack record stays until the stack is gone");

    sb.aws.control("DELETE", "faults", None);
    let second = sb.karpctl(&["rollback", "--purge"]);
    ok(&second);
    let out = text(&second.stdout);
    assert!(out.contains("rollback/stack: CloudFormation stack Karpenter-karpctl-sandbox"), "{out}");
    let first_out = text(&first.stdout);
    assert!(first_out.contains("rollback/sweep: tag karpenter.sh/discovery on subnet-"), "the sweep removed the discovery tags:\n{first_out}");
    // The real controller garbage-collects its own launch templates and instance profiles
    // while it runs, so a leftover is either swept by karpctl or was already deleted by the
    // controller (its requests carry its own access key); either way none is left (below).
    let log = sb.aws.control("GET", "requests?log=1", None);
    let by_controller = |op: &str| {
        log["log"].as_array().into_iter().flatten().any(|e| e["operation"] == op && e["caller"].as_str().is_some_and(|c| c.starts_with("karpenter-")))
    };
    for (line, op) in [("rollback/sweep: launch template karpenter.k8s.aws/1234567890", "ec2:DeleteLaunchTemplate"),
                       ("rollback/sweep: instance profile karpctl-sandbox_1234567890", "iam:DeleteInstanceProfile")] {
        assert!(first_out.contains(line) || by_controller(op), "neither the sweep ({line:?}) nor the controller ({op}) removed it:\n{first_out}");
    }

    assert_rolled_back_aws(&bed);
    let st = sb.state("state.json");
    let steps = st["steps"].as_object().unwrap();
    assert!(!steps.contains_key("cfn-stack/Karpenter-karpctl-sandbox") && !steps.contains_key("discovery-tags/karpctl-sandbox"), "{:?}", steps.keys().collect::<Vec<_>>());
    for id in ["rollback/sweep", "rollback/stack"] {
        assert_eq!(steps[id]["status"], "done");
    }

    // From nothing, `up` builds it all again.
    let up = sb.karpctl(&["up"]);
    ok(&up);
    assert!(bed.stack_exists() && bed.role_exists(NODE_ROLE));
}

/// Nothing tagged by karpctl or Karpenter left in the emulator.
fn assert_rolled_back_aws(bed: &Bed) {
    assert!(!bed.stack_exists(), "the stack is gone");
    for role in [NODE_ROLE, CONTROLLER_ROLE] {
        assert!(!bed.role_exists(role), "{role} is gone");
    }
    for key in ["karpenter.sh/discovery", "karpctl.io/cluster", "eks:eks-cluster-name", "karpenter.sh/nodepool", "karpenter.k8s.aws/ec2nodeclass"] {
        // moto keeps a deleted launch template's tags in DescribeTags; the templates themselves are checked below.
        let left: Vec<String> = bed.ec2_tagged(key).into_iter().filter(|r| !r.starts_with("lt-")).collect();
        assert_eq!(left, Vec::<String>::new(), "no EC2 resource tagged {key}");
    }
    let lts = bed.rt.block_on(bed.ec2().describe_launch_templates().send()).unwrap();
    assert_eq!(lts.launch_templates().len(), 0, "{lts:?}");
    bed.rt.block_on(async {
        let iam = bed.iam();
        let profiles = iam.list_instance_profiles().send().await.unwrap();
        assert!(profiles.instance_profiles().iter().all(|p| !p.instance_profile_name().starts_with(CLUSTER)), "{profiles:?}");
        for r in iam.list_roles().send().await.unwrap().roles() {
            let tags = iam.list_role_tags().role_name(r.role_name()).send().await.unwrap();
            assert!(!tags.tags().iter().any(|t| t.key() == "karpctl.io/cluster"), "role {} is karpctl's", r.role_name());
        }
        for p in iam.list_open_id_connect_providers().send().await.unwrap().open_id_connect_provider_list() {
            let d = iam.get_open_id_connect_provider().open_id_connect_provider_arn(p.arn().unwrap()).send().await.unwrap();
            assert!(!d.tags().iter().any(|t| t.key() == "karpctl.io/cluster"), "{p:?}");
        }
    });
    assert!(!bed.access_entries().iter().any(|e| e.contains(NODE_ROLE)));
    assert_eq!(bed.associations(), 0);
}

#[test]
fn a_blocking_budget_with_the_controller_gone_is_reported_then_force_finishes() {
    let Some((mut sb, bed)) = converged("rb-pdb", &[]) else { return };
    bed.nodegroup_nodes(3);
    bed.workload("apps", "db", 2, "default", "250m");
    bed.workload("apps", "web", 2, "default", "250m");
    bed.rt.block_on(bed.sim().pdb("apps", "db", "db", 2, 0));
    // An instance Karpenter launched, as EC2 knows it (the simulator's nodes are not in the emulator).
    let instance = bed.rt.block_on(async {
        use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
        let images = bed.ec2().describe_images().owners("amazon").send().await.unwrap();
        let ami = images.images()[0].image_id().unwrap().to_string();
        let subnet = sb.aws.handle["seed"]["subnet_ids"][0].as_str().unwrap().to_string();
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .tags(Tag::builder().key("karpenter.sh/nodepool").value("default").build())
            .tags(Tag::builder().key("eks:eks-cluster-name").value(CLUSTER).build())
            .tags(Tag::builder().key(format!("kubernetes.io/cluster/{CLUSTER}")).value("owned").build())
            .build();
        let r = bed.ec2().run_instances().image_id(ami).min_count(1).max_count(1).subnet_id(subnet).tag_specifications(tags).send().await.unwrap();
        r.instances()[0].instance_id().unwrap().to_string()
    });
    // The controller is gone: no simulator, no Deployment.
    sb.stop_sim();
    let del = sb.kubectl(&["delete", "deployment", "karpenter", "-n", "kube-system"]);
    assert!(del.status.success(), "{}", show(&del));

    let started = Instant::now();
    let out = sb.karpctl(&["rollback", "--wait-timeout", "6s"]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(took < Duration::from_secs(60), "a report, not a hang: {took:?}");
    let report = text(&out.stdout);
    assert!(report.contains("pod(s) could not be moved off Karpenter nodes within 6s (the controller is not installed)"), "{report}");
    for db in ["apps/db-0", "apps/db-1"] {
        assert!(report.contains(&format!("{db} on node ")), "{db} is reported: {report}");
    }
    assert!(report.contains("blocked by PodDisruptionBudget apps/db (0 disruptions allowed)"), "{report}");
    assert!(report.contains("apps/web-0") && report.contains("evicted, still terminating"), "{report}");
    assert!(report.contains("karpctl rollback --force"), "{report}");
    let pods = bed.pods("apps");
    for p in &pods {
        let app = p.metadata.labels.as_ref().unwrap()["app"].clone();
        assert_eq!(p.metadata.deletion_timestamp.is_some(), app == "web", "{} evicted only when its budget allows", p.metadata.name.as_deref().unwrap());
    }
    for n in bed.nodes("karpenter.sh/nodepool") {
        assert_eq!(n.spec.unwrap().unschedulable, Some(true), "Karpenter nodes are cordoned");
    }
    assert_eq!(sb.state("state.json")["steps"]["rollback/nodepools"]["status"], "failed");

    let forced = sb.karpctl(&["rollback", "--force", "--wait-timeout", "3s"]);
    ok(&forced);
    let out = text(&forced.stdout);
    assert!(out.contains(&format!("instance {instance} (terminated with --force)")), "{out}");
    let state = bed.rt.block_on(bed.ec2().describe_instances().instance_ids(&instance).send()).unwrap();
    assert_eq!(state.reservations()[0].instances()[0].state().unwrap().name().unwrap().as_str(), "terminated");
    assert_rolled_back(&sb, &bed);
    let nodeclasses = sb.state("state.json")["steps"]["rollback/nodeclasses"]["outputs"]["finalizersReleased"].clone();
    assert_eq!(nodeclasses, json!(["default", "gpu"]), "--force released the finalizers no controller would");
}

#[test]
fn aws_auth_keeps_other_entries_and_an_oidc_provider_goes_only_when_unused() {
    let Some((sb, bed)) = converged("rb-irsa", &["--auth-mode", "CONFIG_MAP", "--no-pod-identity-agent"]) else { return };
    bed.nodegroup_nodes(3);
    let cm = sb.kubectl_json(&["get", "configmap", "aws-auth", "-n", "kube-system"]);
    let roles = cm["data"]["mapRoles"].as_str().unwrap().to_string();
    assert!(roles.contains(NODE_ROLE), "{roles}");
    let with_admin = format!("{roles}- rolearn: arn:aws:iam::123456789012:role/admin\n  username: admin\n  groups: [system:masters]\n");
    let patch = json!({"data": {"mapRoles": with_admin}}).to_string();
    assert!(sb.kubectl(&["patch", "configmap", "aws-auth", "-n", "kube-system", "--type", "merge", "-p", &patch]).status.success());
    // Another workload's IRSA role trusts the provider karpctl created.
    let provider = bed.rt.block_on(async {
        let iam = bed.iam();
        let list = iam.list_open_id_connect_providers().send().await.unwrap();
        let arn = list.open_id_connect_provider_list()[0].arn().unwrap().to_string();
        let trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Federated": arn},
                           "Action": "sts:AssumeRoleWithWebIdentity"}]});
        iam.create_role().role_name("other-irsa").assume_role_policy_document(trust.to_string()).send().await.unwrap();
        arn
    });

    let out = sb.karpctl(&["rollback"]);
    ok(&out);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("rollback/node-access: aws-auth mapRoles entry for"), "{stdout}");
    assert!(stdout.contains(&format!("Kept:\n  rollback/identity: OIDC provider {provider} (trusted by other-irsa)")), "{stdout}");
    let cm = sb.kubectl_json(&["get", "configmap", "aws-auth", "-n", "kube-system"]);
    let roles: Vec<Value> = serde_yaml::from_str(cm["data"]["mapRoles"].as_str().unwrap()).unwrap();
    assert_eq!(roles.len(), 1, "{roles:?}");
    assert_eq!(roles[0]["username"], "admin");
    assert!(!bed.role_exists(CONTROLLER_ROLE));
    let providers = || bed.rt.block_on(bed.iam().list_open_id_connect_providers().send()).unwrap().open_id_connect_provider_list().len();
    assert_eq!(providers(), 1, "kept while another role trusts it");

    // Once nothing else trusts it, a rollback removes it.
    bed.rt.block_on(bed.iam().delete_role().role_name("other-irsa").send()).unwrap();
    let again = sb.karpctl(&["rollback"]);
    ok(&again);
    assert!(text(&again.stdout).contains(&format!("rollback/identity: OIDC provider {provider}")), "{}", show(&again));
    assert_eq!(providers(), 0);
}
