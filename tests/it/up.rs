//! `karpctl up` end to end on both beds: the AWS emulator whose EKS cluster points at
//! a real kube-apiserver, the test bed's controller simulator standing in for
//! kube-controller-manager, kubelets and Karpenter, and the real helm binary with the
//! fixture charts (carrying the real CRDs in crds/). Mutations are counted on both
//! sides: the emulator's request counter and the API server's own request metrics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use crate::beds::{AwsEmulator, KubeBed};
use crate::support::*;

pub const CLUSTER: &str = "karpctl-sandbox";

/// Both beds, the simulator and a scratch directory with the fixture charts.
pub struct Sandbox {
    pub kube: KubeBed,
    pub aws: AwsEmulator,
    pub dir: PathBuf,
    pub bin: PathBuf,
    /// The emulated account's region (`--region`, us-west-2 unless a test names another):
    /// the controller's AWS calls go there, as a real controller's go to its cluster's.
    pub region: String,
    sim: Option<(std::thread::JoinHandle<()>, tokio::sync::watch::Sender<bool>)>,
}

/// The bed API server's Kubernetes `major.minor` ("1.36").
pub fn bed_minor(kube: &KubeBed) -> String {
    let handle: Value = serde_json::from_str(&read(&kube.dir.join("handle.json"))).unwrap();
    let v = handle["kubernetes_version"].as_str().expect("the bed's handle has kubernetes_version");
    v.trim_start_matches('v').splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn show(o: &Output) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", o.status.code(), text(&o.stdout), text(&o.stderr))
}

impl Sandbox {
    /// None when a bed is not installed (the test command installs both).
    pub fn start(name: &str, aws_args: &[&str]) -> Option<Sandbox> {
        let karpenter_chart = upstream("karpenter", "", "chart")?;
        let device_plugin_chart = upstream("nvidia-device-plugin", "", "chart")?;
        let kube = KubeBed::start_with(&["--no-crds"])?;
        let state = read(&kube.dir.join("state"));
        let server = state.lines().find_map(|l| l.strip_prefix("server=")).expect("bed state has the server").to_string();
        let ca = kube.dir.join("pki/ca.crt");
        // The emulated EKS cluster runs the Kubernetes minor of the API server it points at
        // (the real controller reads the version there and looks AMIs up for it).
        let minor = bed_minor(&kube);
        let mut args = vec!["--cluster", CLUSTER, "--cluster-endpoint", &server, "--cluster-ca-file", ca.to_str().unwrap()];
        if !aws_args.contains(&"--k8s-version") {
            args.extend(["--k8s-version", minor.as_str()]);
        }
        args.extend_from_slice(aws_args);
        let aws = AwsEmulator::start(&args)?;
        let dir = scratch(name);
        // The real charts of the pinned releases (copies: a test may edit them).
        copy_dir(&karpenter_chart, &dir.join("charts/karpenter"));
        copy_dir(&device_plugin_chart, &dir.join("charts/nvidia-device-plugin"));
        let handle: Value = serde_json::from_str(&read(&kube.dir.join("handle.json"))).unwrap();
        let bin = PathBuf::from(handle["bin_dir"].as_str().unwrap());
        let region = aws_args.iter().position(|a| *a == "--region").and_then(|i| aws_args.get(i + 1)).unwrap_or(&"us-west-2").to_string();
        let mut sb = Sandbox { kube, aws, dir, bin, region, sim: None };
        sb.start_sim();
        Some(sb)
    }

    /// Runs the controller simulator in the background (what a real cluster's controllers
    /// and kubelets do), with the real Karpenter controller run for the Karpenter
    /// Deployment that the real chart renders (tests/testbed/kube/sim/controller.rs).
    pub fn start_sim(&mut self) {
        if self.sim.is_some() {
            return;
        }
        let (tx, rx) = tokio::sync::watch::channel(false);
        let kubeconfig = self.kube.kubeconfig();
        let endpoint = self.aws.endpoint.clone();
        let work = self.dir.join("controller");
        let region = self.region.clone();
        let h = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async move {
                use crate::sim::model::controller::{binaries_from_script, ControllerSpec, Runner};
                let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
                let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
                let client = kube::Client::try_from(cfg).unwrap();
                let binaries = binaries_from_script(repo().join("scripts/testbed-karpenter.sh"));
                let spec = ControllerSpec::from_kubeconfig(&kubeconfig, binaries, endpoint, region, work).unwrap();
                let runner = Runner::new(spec).await.unwrap();
                let opts = crate::sim::model::Options { karpenter: crate::sim::model::Karpenter::Real(std::sync::Arc::new(runner)), ..Default::default() };
                crate::sim::model::run_with(client, Duration::from_millis(200), rx, opts).await;
            });
        });
        self.sim = Some((h, tx));
    }

    /// The real controller's log (for a failing test's message).
    pub fn controller_log(&self) -> String {
        let p = self.dir.join("controller/kube-system_karpenter/controller.log");
        std::fs::read_to_string(&p).unwrap_or_else(|e| format!("(no log at {}: {e})", p.display()))
    }

    /// Stops the simulator (so mutation counts are karpctl's alone).
    pub fn stop_sim(&mut self) {
        if let Some((h, tx)) = self.sim.take() {
            let _ = tx.send(true);
            let _ = h.join();
        }
    }

    pub fn write_config(&self, yaml: &str) {
        std::fs::write(self.dir.join("karpctl.yaml"), yaml).unwrap();
    }

    pub fn karpctl(&self, args: &[&str]) -> Output {
        self.karpctl_command(args).output().unwrap()
    }

    /// The karpctl command `karpctl()` runs, pointed at both beds, for a test to spawn.
    pub fn karpctl_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_karpctl"));
        cmd.args(args).current_dir(&self.dir).env("NO_COLOR", "1").env("CI", "1");
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("AWS_") || k.starts_with("KARPCTL_") || k == "KUBECONFIG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("AWS_ENDPOINT_URL", &self.aws.endpoint)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-west-2")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("KARPCTL_KUBECONFIG", self.kube.kubeconfig())
            .env("KARPCTL_HELM", self.bin.join("helm"));
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.bin.join("kubectl")).arg("--kubeconfig").arg(self.kube.kubeconfig()).args(args).output().unwrap()
    }

    pub fn kubectl_json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let o = self.kubectl(&a);
        assert!(o.status.success(), "kubectl {args:?}: {}", show(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    pub fn helm_list(&self) -> Value {
        let o = Command::new(self.bin.join("helm"))
            .arg("--kubeconfig")
            .arg(self.kube.kubeconfig())
            .args(["list", "-A", "-o", "json"])
            .output()
            .unwrap();
        assert!(o.status.success(), "helm list: {}", show(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Writes the API server has served (dry runs and its own lease renewals excluded),
    /// by "VERB resource[/sub]".
    pub fn kube_writes(&self) -> std::collections::BTreeMap<String, u64> {
        let o = self.kubectl(&["get", "--raw", "/metrics"]);
        assert!(o.status.success(), "metrics: {}", show(&o));
        let mut out = std::collections::BTreeMap::new();
        for line in text(&o.stdout).lines().filter(|l| l.starts_with("apiserver_request_total{")) {
            let label = |k: &str| line.split(&format!("{k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or("").to_string();
            let verb = label("verb");
            // Leases are the API server renewing its own identity every few seconds.
            if matches!(verb.as_str(), "GET" | "LIST" | "WATCH" | "CONNECT") || !label("dry_run").is_empty() || label("resource") == "leases" {
                continue;
            }
            let sub = label("subresource");
            let key = if sub.is_empty() { format!("{verb} {}", label("resource")) } else { format!("{verb} {}/{sub}", label("resource")) };
            let n: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
            *out.entry(key).or_insert(0) += n as u64;
        }
        out
    }

    /// Emulator request counts since the last reset (`mutating`, `counts`), then resets them.
    pub fn aws_mutations(&self) -> Value {
        let r = self.aws.requests();
        self.aws.control("DELETE", "requests", None);
        r
    }

    /// From a converged sandbox: another `up` succeeds with zero writes to either bed.
    /// The simulator is stopped first, so every write counted would be karpctl's.
    pub fn assert_second_up_writes_nothing(&mut self, label: &str) {
        self.stop_sim();
        self.aws_mutations();
        let before = self.kube_writes();
        let again = self.karpctl(&["up"]);
        assert!(again.status.success(), "{label}: {}", show(&again));
        assert_eq!(diff(&before, &self.kube_writes()), Default::default(), "{label}: a second up wrote to Kubernetes");
        let m = self.aws_mutations();
        assert_eq!(m["mutating"], 0, "{label}: a second up made mutating AWS calls: {m}");
    }

    pub fn state(&self, path: &str) -> Value {
        serde_json::from_str(&read(&self.dir.join(path))).unwrap()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop_sim();
    }
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// The sandbox preset pointed at the charts in the scratch directory.
/// The Karpenter release karpctl pins by default (and the sandbox config names).
pub const PINNED: &str = karpctl::config::types::DEFAULT_KARPENTER_VERSION;

pub fn sandbox_config() -> String {
    read(&repo().join("examples/sandbox.yaml"))
        .replace("../.sandbox/charts/", "charts/")
        .replace("../.sandbox/karpctl.state.json", "state.json")
}

pub fn diff(a: &std::collections::BTreeMap<String, u64>, b: &std::collections::BTreeMap<String, u64>) -> std::collections::BTreeMap<String, u64> {
    b.iter().filter_map(|(k, v)| {
        let d = v - a.get(k).copied().unwrap_or(0);
        (d > 0).then(|| (k.clone(), d))
    }).collect()
}

#[test]
fn up_converges_end_to_end_and_a_second_up_changes_nothing() {
    let Some(mut sb) = Sandbox::start("up-e2e", &[]) else { return };
    sb.write_config(&sandbox_config());
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    // Waiting for readiness is reported as a state, not as a question inside a success.
    // (The step is listed when the objects were not Ready yet at its first look.)
    let report = String::from_utf8_lossy(&up.stdout).into_owned();
    assert!(!report.contains("controller running?") && !report.contains("no status yet"), "{report}");

    // Kubernetes: CRDs from the chart, stamped; both releases deployed; objects Ready.
    let crd = sb.kubectl_json(&["get", "crd", "nodepools.karpenter.sh"]);
    assert_eq!(crd["metadata"]["annotations"]["karpctl.io/karpenter-version"], PINNED);
    let releases = sb.helm_list();
    let names: Vec<&str> = releases.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"karpenter") && names.contains(&"nvidia-device-plugin"), "{releases}");
    assert!(releases.as_array().unwrap().iter().all(|r| r["status"] == "deployed"), "{releases}");
    let values = Command::new(sb.bin.join("helm")).arg("--kubeconfig").arg(sb.kube.kubeconfig())
        .args(["get", "values", "karpenter", "-n", "kube-system", "-o", "json"]).output().unwrap();
    let values: Value = serde_json::from_slice(&values.stdout).unwrap();
    assert_eq!(values["settings"]["clusterName"], CLUSTER);
    assert_eq!(values["settings"]["interruptionQueue"], CLUSTER, "the queue name, not its URL or ARN");
    assert!(values["settings"]["clusterEndpoint"].as_str().unwrap().starts_with("https://127.0.0.1:"), "{values}");
    let pools = sb.kubectl_json(&["get", "nodepools.karpenter.sh", "--show-managed-fields"]);
    let pools = pools["items"].as_array().unwrap();
    assert_eq!(pools.len(), 2);
    for p in pools {
        assert_eq!(p["metadata"]["labels"]["app.kubernetes.io/managed-by"], "karpctl");
        assert_eq!(p["metadata"]["managedFields"].as_array().unwrap().iter().filter(|m| m["manager"] == "karpctl").count(), 1);
    }
    let class = sb.kubectl_json(&["get", "ec2nodeclasses.karpenter.k8s.aws", "default"]);
    assert_eq!(class["spec"]["amiSelectorTerms"][0]["alias"], "al2023@v20250915", "the pinned AMI: {}", class["spec"]);
    let st = sb.state("state.json");
    for (id, rec) in st["steps"].as_object().unwrap() {
        assert_eq!(rec["status"], "done", "{id}: {rec}");
    }
    for id in ["crds/karpenter", "helm-release/kube-system/karpenter", "helm-release/kube-system/nvidia-device-plugin",
               "objects/karpctl-sandbox", "ready/karpctl-sandbox", "prune/karpctl-sandbox", "aws-auth/karpctl-sandbox"] {
        assert!(st["steps"].get(id).is_some(), "{id} recorded");
    }

    sb.assert_second_up_writes_nothing("sandbox");
    assert_eq!(sb.state("state.json")["serial"], st["serial"], "nor rewrites the state");
}

#[test]
fn a_pool_limit_edit_is_planned_and_applied_as_exactly_that_change() {
    let Some(sb) = Sandbox::start("up-edit", &[]) else { return };
    sb.write_config(&sandbox_config());
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    sb.write_config(&sandbox_config().replace(r#"limits: {cpu: "100", memory: 400Gi}"#, r#"limits: {cpu: "200", memory: 400Gi}"#));

    let plan = sb.karpctl(&["plan", "-o", "json", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", show(&plan));
    let dry = sb.karpctl(&["up", "--dry-run", "-o", "json", "--detailed-exitcode"]);
    // The same document (outcomes are listed as steps finish: compared in step order).
    let doc = |o: &Output| {
        let mut v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", show(o)));
        v["outcomes"].as_array_mut().unwrap().sort_by_key(|x| x["step"].as_str().unwrap().to_string());
        v
    };
    assert_eq!((dry.status.code(), doc(&dry)), (plan.status.code(), doc(&plan)), "up --dry-run is plan: {}", show(&dry));
    let doc: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let planned: Vec<&Value> = doc["planned"].as_array().unwrap().iter().collect();
    assert_eq!(planned.len(), 1, "only the objects step changes: {doc:#}");
    assert_eq!(planned[0]["step"], "objects/karpctl-sandbox");
    assert_eq!(planned[0]["change"]["fields"], json!([{"field": "NodePool/default.spec.limits.cpu", "old": "100", "new": "200"}]));
    let why = &planned[0]["why"][0];
    assert_eq!(why["field"], "objects[2].spec.limits.cpu", "{why}");

    sb.aws_mutations();
    let before = sb.kube_writes();
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    let writes = diff(&before, &sb.kube_writes());
    assert_eq!(writes.get("APPLY nodepools"), Some(&1), "exactly one apply: {writes:?}");
    assert!(!writes.keys().any(|k| k.contains("ec2nodeclasses") || k.contains("customresourcedefinitions") || k.contains("secrets")),
        "no other object touched (helm keeps releases in secrets): {writes:?}");
    assert_eq!(sb.aws_mutations()["mutating"], 0);
    let pool = sb.kubectl_json(&["get", "nodepools.karpenter.sh", "default"]);
    assert_eq!(pool["spec"]["limits"]["cpu"], "200");
}

/// A preset from examples/, pointed at the sandbox cluster and the real charts.
pub fn preset_config(name: &str) -> String {
    let mut v: serde_yaml::Value = serde_yaml::from_str(&read(&repo().join(format!("examples/{name}.yaml")))).unwrap();
    v["cluster"]["name"] = CLUSTER.into();
    v["karpenter"]["chart"] = serde_yaml::from_str("{path: charts/karpenter}").unwrap();
    if v.get("devicePlugin").is_none() {
        v["devicePlugin"] = serde_yaml::from_str("{}").unwrap();
    }
    v["devicePlugin"]["chartPath"] = "charts/nvidia-device-plugin".into();
    // A local chart must carry the pinned version: pin the copied chart's.
    v["devicePlugin"]["chartVersion"] = "0.17.4".into();
    v["state"] = serde_yaml::from_str("{path: state.json}").unwrap();
    serde_yaml::to_string(&v).unwrap()
}

/// `up` converges for a preset, and an immediate second `up` writes nothing anywhere.
fn preset_converges(name: &str) {
    let config = preset_config(name);
    let c: serde_yaml::Value = serde_yaml::from_str(&config).unwrap();
    // The emulated account lives in the preset's region.
    let region = c["cluster"]["region"].as_str().unwrap_or("us-west-2").to_string();
    let Some(mut sb) = Sandbox::start(&format!("preset-{name}"), &["--region", &region]) else { return };
    sb.write_config(&config);
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{name}: {}", show(&up));
    let st = sb.state("state.json");
    for (id, rec) in st["steps"].as_object().unwrap() {
        assert_eq!(rec["status"], "done", "{name}: {id}: {rec}");
    }
    // Every pool and class of the preset exists and is Ready on the API server.
    for (kind, key) in [("nodepools.karpenter.sh", "nodePools"), ("ec2nodeclasses.karpenter.k8s.aws", "nodeClasses")] {
        for item in c[key].as_sequence().unwrap() {
            let n = item["name"].as_str().unwrap();
            let o = sb.kubectl_json(&["get", kind, n]);
            let ready = o["status"]["conditions"].as_array().unwrap().iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
            assert!(ready, "{name}: {kind}/{n} not Ready: {}", o["status"]);
        }
    }
    sb.assert_second_up_writes_nothing(name);
}

#[test]
fn preset_default_converges() {
    preset_converges("default");
}

#[test]
fn preset_dynamo_converges() {
    preset_converges("dynamo");
}

#[test]
fn preset_dev_gpu_converges() {
    preset_converges("dev-gpu");
}

#[test]
fn preset_falkordb_converges() {
    preset_converges("falkordb");
}

#[test]
fn preset_platform_converges() {
    preset_converges("platform");
}

fn planned_steps(doc: &Value) -> Vec<String> {
    doc["planned"].as_array().unwrap().iter().map(|p| p["step"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_karpenter_upgrade_plans_crds_then_policies_then_controller_and_a_downgrade_is_refused() {
    let Some(sb) = Sandbox::start("up-upgrade", &[]) else { return };
    // Start on 1.14.1 (the previous minor): the real chart of that release, run by the real
    // controller of that release (the sim picks the binary by the Deployment's version label).
    let Some(old) = upstream("karpenter", "1.14.1", "chart") else { return };
    copy_dir(&old, &sb.dir.join("charts/karpenter-1.14"));
    let v114 = sandbox_config().replace(&format!("version: {PINNED}"), "version: 1.14.1").replace("path: charts/karpenter\n", "path: charts/karpenter-1.14\n");
    assert_ne!(v114, sandbox_config());
    sb.write_config(&v114);
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}\n{}", show(&up), sb.controller_log());
    assert_eq!(sb.kubectl_json(&["get", "crd", "nodepools.karpenter.sh"])["metadata"]["annotations"]["karpctl.io/karpenter-version"], "1.14.1");

    // To the pin, 1.15: CRDs first, then the stack's policies, then the controller.
    sb.write_config(&sandbox_config());
    let plan = sb.karpctl(&["plan", "-o", "json"]);
    assert!(plan.status.success(), "{}", show(&plan));
    let steps = planned_steps(&serde_json::from_slice(&plan.stdout).unwrap());
    let at = |id: &str| steps.iter().position(|s| s == id).unwrap_or_else(|| panic!("{id} not planned: {steps:?}"));
    assert!(at("crds/karpenter") < at("cfn-stack/Karpenter-karpctl-sandbox"), "{steps:?}");
    assert!(at("cfn-stack/Karpenter-karpctl-sandbox") < at("helm-release/kube-system/karpenter"), "{steps:?}");
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}\n{}", show(&up), sb.controller_log());
    assert_eq!(sb.kubectl_json(&["get", "crd", "nodepools.karpenter.sh"])["metadata"]["annotations"]["karpctl.io/karpenter-version"], PINNED);
    let rel = sb.helm_list();
    assert!(rel.as_array().unwrap().iter().any(|r| r["name"] == "karpenter" && r["chart"] == format!("karpenter-{PINNED}")), "{rel}");
    // 1.15's kubelet field is schemaless: the served CRD says so (the upgrade really happened).
    let crd = sb.kubectl_json(&["get", "crd", "ec2nodeclasses.karpenter.k8s.aws"]);
    let kubelet = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["kubelet"];
    assert_eq!(kubelet["x-kubernetes-preserve-unknown-fields"], true, "{kubelet}");
    // Every class Ready on the new controller, resolved from what karpctl made.
    let classes = sb.kubectl_json(&["get", "ec2nodeclasses"]);
    for c in classes["items"].as_array().unwrap() {
        let st = &c["status"];
        let ready = st["conditions"].as_array().unwrap().iter().any(|x| x["type"] == "Ready" && x["status"] == "True");
        assert!(ready, "{c}\n{}", sb.controller_log());
        assert!(!st["subnets"].as_array().unwrap().is_empty() && !st["securityGroups"].as_array().unwrap().is_empty(), "{st}");
        assert!(!st["amis"].as_array().unwrap().is_empty() && st["instanceProfile"].is_string(), "{st}");
    }
    // The stack's policy now lets 1.15's node repair reboot the cluster's instances.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let doc = rt.block_on(async {
        let iam = aws_sdk_iam::Client::new(&sb.aws.sdk_config("us-west-2").await);
        let arn = "arn:aws:iam::123456789012:policy/KarpenterControllerNodeLifecyclePolicy-karpctl-sandbox";
        let p = iam.get_policy().policy_arn(arn).send().await.unwrap();
        let v = p.policy().unwrap().default_version_id().unwrap().to_string();
        let d = iam.get_policy_version().policy_arn(arn).version_id(v).send().await.unwrap();
        d.policy_version().unwrap().document().unwrap().to_string()
    });
    assert!(doc.contains("ec2:RebootInstances") || doc.contains("ec2%3ARebootInstances"), "{doc}");

    // Back to 1.14.1: refused before any step, so the stack's policies stay too.
    sb.write_config(&v114);
    sb.aws_mutations();
    let before = sb.kube_writes();
    let down = sb.karpctl(&["up"]);
    assert_eq!(down.status.code(), Some(1), "{}", show(&down));
    let out = show(&down);
    assert!(out.contains(&format!("older than the installed Karpenter {PINNED}: karpctl does not downgrade")), "{out}");
    assert_eq!(diff(&before, &sb.kube_writes()), Default::default());
    assert_eq!(sb.aws_mutations()["mutating"], 0);
    // A cluster whose CRDs are newer than the state knows (installed by hand) is refused by the CRD step.
    let o = sb.kubectl(&["annotate", "--overwrite", "crd", "nodepools.karpenter.sh", "karpctl.io/karpenter-version=1.20.0"]);
    assert!(o.status.success(), "{}", show(&o));
    sb.write_config(&sandbox_config());
    let plan = sb.karpctl(&["plan", "--refresh"]);
    assert_eq!(plan.status.code(), Some(1), "{}", show(&plan));
    assert!(show(&plan).contains("downgrading CRDs is not supported"), "{}", show(&plan));
}

#[test]
fn doctor_names_admission_webhooks_left_from_karpenter_before_1_0_with_the_command_that_removes_them() {
    let Some(sb) = Sandbox::start("doctor-webhooks", &[]) else { return };
    sb.write_config(&sandbox_config());
    let row = |o: &Output| -> Value {
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(o)));
        doc["checks"].as_array().unwrap().iter().find(|c| c["name"] == "karpenter webhooks").cloned().unwrap_or_else(|| panic!("no webhook row: {doc}"))
    };
    let clean = sb.karpctl(&["doctor", "-o", "json"]);
    assert_eq!(row(&clean)["status"], "ok", "{}", show(&clean));

    // What a 0.x chart with webhook.enabled left behind: failing closed, pointing at a gone service.
    let hook = json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "validation.webhook.karpenter.sh"},
        "webhooks": [{"name": "validation.webhook.karpenter.sh", "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"name": "karpenter", "namespace": "karpenter", "port": 8443}},
            "rules": [{"apiGroups": ["karpenter.sh"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": ["nodepools"]}]}]});
    std::fs::write(sb.dir.join("hook.json"), hook.to_string()).unwrap();
    let o = sb.kubectl(&["apply", "-f", sb.dir.join("hook.json").to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    let dirty = sb.karpctl(&["doctor", "-o", "json"]);
    assert_eq!(dirty.status.code(), Some(1), "{}", show(&dirty));
    let r = row(&dirty);
    assert_eq!(r["status"], "fail", "{r}");
    assert!(r["detail"].as_str().unwrap().contains("validatingwebhookconfiguration/validation.webhook.karpenter.sh"), "{r}");
    // The fix is a command that works.
    let fix = r["fix"].as_str().unwrap();
    let args: Vec<&str> = fix.strip_prefix("kubectl ").unwrap_or_else(|| panic!("{fix}")).split_whitespace().collect();
    let o = sb.kubectl(&args);
    assert!(o.status.success(), "{fix}: {}", show(&o));
    let again = sb.karpctl(&["doctor", "-o", "json"]);
    assert_eq!(row(&again)["status"], "ok", "{}", show(&again));
}

/// The config with the default class's subnets selected by a tag no subnet has: the real
/// controller reports SubnetsReady=False and never launches for it.
pub fn no_subnets(config: &str) -> String {
    let broken = config.replace("  - name: default\n    amiFamily: al2023\n",
        "  - name: default\n    amiFamily: al2023\n    subnetSelector: [{tags: {Name: no-such-subnet}}]\n");
    assert_ne!(broken, config);
    broken
}

#[test]
fn readiness_timeout_shows_the_condition_messages_and_a_rerun_resumes() {
    let Some(sb) = Sandbox::start("up-notready", &[]) else { return };
    let broken = no_subnets(&sandbox_config());
    sb.write_config(&broken);
    let up = sb.karpctl(&["up", "--wait-timeout", "30s"]);
    assert_eq!(up.status.code(), Some(1), "{}", show(&up));
    let out = show(&up);
    // The real controller's own condition for a selector that matches nothing.
    assert!(out.contains("EC2NodeClass/default") && out.contains("SubnetSelector did not match any Subnets"), "{out}\n{}", sb.controller_log());
    assert!(out.contains("NodePool/default"), "the pool waits on its class: {out}");
    assert_eq!(sb.state("state.json")["steps"]["ready/karpctl-sandbox"]["status"], "failed");
    // Fixed: the rerun resumes at the objects step and converges.
    sb.write_config(&sandbox_config());
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    assert_eq!(sb.state("state.json")["steps"]["ready/karpctl-sandbox"]["status"], "done");
}

#[test]
fn the_api_servers_dry_run_refuses_a_bad_object_before_any_object_changes() {
    let Some(sb) = Sandbox::start("up-dryrun", &[]) else { return };
    sb.write_config(&sandbox_config());
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    // Valid for karpctl (extra objects are free-form), refused by the API server.
    let bad = format!("{}\nextraObjects:\n  - {{apiVersion: scheduling.k8s.io/v1, kind: PriorityClass, metadata: {{name: bad}}, value: not-a-number}}\n",
        sandbox_config().replace(r#"limits: {cpu: "100", memory: 400Gi}"#, r#"limits: {cpu: "300", memory: 400Gi}"#));
    sb.write_config(&bad);
    let plan = sb.karpctl(&["plan"]);
    assert_eq!(plan.status.code(), Some(1), "{}", show(&plan));
    assert!(show(&plan).contains("PriorityClass/bad"), "{}", show(&plan));
    let before = sb.kube_writes();
    let up = sb.karpctl(&["up"]);
    assert_eq!(up.status.code(), Some(1), "{}", show(&up));
    let out = show(&up);
    assert!(out.contains("dry run refused 1 object(s), nothing was changed") && out.contains("PriorityClass/bad"), "{out}");
    let writes = diff(&before, &sb.kube_writes());
    assert!(!writes.contains_key("APPLY nodepools"), "the valid pool edit waits for the whole set: {writes:?}");
    assert_eq!(sb.kubectl_json(&["get", "nodepools.karpenter.sh", "default"])["spec"]["limits"]["cpu"], "100");
}

#[test]
fn removed_pools_and_classes_are_deleted_only_with_prune_pools_first() {
    let Some(sb) = Sandbox::start("up-prune", &[]) else { return };
    let extra = "\nextraObjects:\n  - {apiVersion: scheduling.k8s.io/v1, kind: PriorityClass, metadata: {name: karpctl-test}, value: 1000}\n";
    sb.write_config(&format!("{}{extra}", sandbox_config()));
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    assert!(sb.kubectl(&["get", "priorityclass", "karpctl-test"]).status.success());
    // Drop the gpu pool and class and the extra object.
    let cfg = sandbox_config();
    let start = cfg.find("  - name: gpu\n    amiFamily").unwrap();
    let end = cfg.find("\nnodePools:").unwrap();
    let mut smaller = format!("{}{}", &cfg[..start], &cfg[end + 1..]);
    let start = smaller.find("  - name: gpu\n    nodeClass: gpu").unwrap();
    let end = smaller.find("\ndevicePlugin:").unwrap();
    smaller = format!("{}{}", &smaller[..start], &smaller[end + 1..]);
    sb.write_config(&smaller);

    let plan = sb.karpctl(&["plan", "-o", "json"]);
    let doc: Value = serde_json::from_slice(&plan.stdout).unwrap_or_else(|_| panic!("{}", show(&plan)));
    let prune = doc["planned"].as_array().unwrap().iter().find(|p| p["step"] == "prune/karpctl-sandbox").expect("prune planned").clone();
    assert_eq!(prune["change"]["destructive"], true, "{prune}");
    let fields: Vec<&str> = prune["change"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["NodePool/gpu", "EC2NodeClass/gpu", "PriorityClass/karpctl-test"], "pools before classes");

    let up = sb.karpctl(&["up"]);
    assert!(show(&up).contains("needs --yes"), "{}", show(&up));
    // No terminal, no prompt: it stops, exits 1 and names the command that approves.
    assert_eq!(up.status.code(), Some(1), "{}", show(&up));
    assert!(String::from_utf8_lossy(&up.stderr).contains("help: read why above, then approve: karpctl up --yes"), "{}", show(&up));
    assert!(sb.kubectl(&["get", "nodepools.karpenter.sh", "gpu"]).status.success(), "not deleted without --prune");
    let up = sb.karpctl(&["up", "--prune"]);
    assert!(up.status.success(), "{}", show(&up));
    assert!(!sb.kubectl(&["get", "nodepools.karpenter.sh", "gpu"]).status.success());
    assert!(!sb.kubectl(&["get", "ec2nodeclasses.karpenter.k8s.aws", "gpu"]).status.success());
    assert!(!sb.kubectl(&["get", "priorityclass", "karpctl-test"]).status.success());
    assert!(sb.kubectl(&["get", "nodepools.karpenter.sh", "default"]).status.success(), "what the config keeps stays");
}

#[test]
fn a_conflicting_field_manager_is_reported_and_taken_over_only_when_asked() {
    let Some(sb) = Sandbox::start("up-conflict", &[]) else { return };
    sb.write_config(&sandbox_config());
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    // Another tool owns spec.limits.cpu now.
    let patch = r#"{"apiVersion":"karpenter.sh/v1","kind":"NodePool","metadata":{"name":"default"},"spec":{"limits":{"cpu":"7"}}}"#;
    let path = sb.dir.join("other.json");
    std::fs::write(&path, patch).unwrap();
    let o = sb.kubectl(&["apply", "--server-side", "--force-conflicts", "--field-manager", "other-tool", "-f", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    sb.write_config(&sandbox_config().replace(r#"limits: {cpu: "100", memory: 400Gi}"#, r#"limits: {cpu: "150", memory: 400Gi}"#));
    let up = sb.karpctl(&["up"]);
    assert_eq!(up.status.code(), Some(1), "{}", show(&up));
    let out = show(&up);
    assert!(out.contains("NodePool/default") && out.contains("other-tool") && out.contains("--force-conflicts"), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("help: `karpctl up --force-conflicts`")), "the help line gives the command: {out}");
    assert_eq!(sb.kubectl_json(&["get", "nodepools.karpenter.sh", "default"])["spec"]["limits"]["cpu"], "7");
    let up = sb.karpctl(&["up", "--force-conflicts"]);
    assert!(up.status.success(), "{}", show(&up));
    assert_eq!(sb.kubectl_json(&["get", "nodepools.karpenter.sh", "default"])["spec"]["limits"]["cpu"], "150");
}

#[test]
fn aws_auth_mapping_is_merged_without_touching_other_entries() {
    let Some(sb) = Sandbox::start("up-awsauth", &["--auth-mode", "CONFIG_MAP"]) else { return };
    let existing = "- rolearn: arn:aws:iam::123456789012:role/admins\n  username: admin\n  groups:\n  - system:masters\n";
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "aws-auth", "namespace": "kube-system"},
        "data": {"mapRoles": existing, "mapUsers": "- userarn: arn:aws:iam::123456789012:user/ops\n  username: ops\n"}});
    let path = sb.dir.join("aws-auth.json");
    std::fs::write(&path, cm.to_string()).unwrap();
    assert!(sb.kubectl(&["create", "-f", path.to_str().unwrap()]).status.success());
    sb.write_config(&sandbox_config());
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    let cm = sb.kubectl_json(&["get", "configmap", "aws-auth", "-n", "kube-system"]);
    let roles: Vec<Value> = serde_yaml::from_str(cm["data"]["mapRoles"].as_str().unwrap()).unwrap();
    assert_eq!(roles.len(), 2, "{roles:?}");
    assert_eq!(roles[0]["rolearn"], "arn:aws:iam::123456789012:role/admins");
    assert_eq!(roles[0]["groups"], json!(["system:masters"]));
    assert!(roles[1]["rolearn"].as_str().unwrap().ends_with(":role/KarpenterNodeRole-karpctl-sandbox"), "{roles:?}");
    assert_eq!(roles[1]["groups"], json!(["system:bootstrappers", "system:nodes"]));
    assert!(cm["data"]["mapUsers"].as_str().unwrap().contains("user/ops"), "other keys untouched");
    assert_eq!(sb.state("state.json")["steps"]["node-access/karpctl-sandbox"]["outputs"]["mode"], "aws-auth");
}

#[test]
fn verify_provisions_a_node_of_the_pool_and_status_shows_the_live_setup() {
    let Some(sb) = Sandbox::start("up-verify", &[]) else { return };
    sb.write_config(&sandbox_config());
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    // The gpu pool is tainted: the test pod must tolerate it to land.
    // The kwok build launches an instance's Node after a fixed 30 s.
    let v = sb.karpctl(&["verify", "--pool", "gpu", "-o", "json", "--timeout", "240s"]);
    assert!(v.status.success(), "{}\n{}", show(&v), sb.controller_log());
    let doc: Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(doc["result"], "passed", "{doc}");
    let node = doc["node"].as_str().unwrap();
    let n = sb.kubectl_json(&["get", "node", node]);
    assert_eq!(n["metadata"]["labels"]["karpenter.sh/nodepool"], "gpu");
    assert!(!sb.kubectl(&["get", "namespace", "karpctl-verify"]).status.success() || {
        // Namespace deletion may still be finishing; the pod must be gone at least.
        let pods = sb.kubectl_json(&["get", "pods", "-n", "karpctl-verify"]);
        pods["items"].as_array().unwrap().is_empty()
    }, "cleaned up");

    let s = sb.karpctl(&["status", "-o", "json"]);
    assert!(s.status.success(), "{}", show(&s));
    let st: Value = serde_json::from_slice(&s.stdout).unwrap();
    let live = &st["live"];
    assert_eq!(live["controller"]["installed"], true, "{live}");
    assert_eq!(live["controller"]["available"], 1, "{live}");
    let gpu = live["nodePools"].as_array().unwrap().iter().find(|p| p["name"] == "gpu").unwrap();
    assert_eq!(gpu["ready"], true);
    assert_eq!(gpu["nodes"], 1, "the node verify made: {gpu}");
    // The chart ships 5 CRDs; status lists the 4 of the Karpenter groups (not capacitybuffers).
    assert_eq!(live["crds"].as_array().unwrap().len(), 4, "{live}");
    assert!(live["crds"].as_array().unwrap().iter().all(|c| c["karpenterVersion"] == PINNED));
    assert_eq!(live["devicePlugin"]["installed"], true, "{live}");
    let text = sb.karpctl(&["status"]);
    let out = String::from_utf8_lossy(&text.stdout).into_owned();
    let row: Vec<&str> = out.lines().find(|l| l.starts_with("pool ") && l.contains(" gpu ")).unwrap_or_else(|| panic!("no gpu pool row: {out}")).split_whitespace().collect();
    assert_eq!(row[..5], ["pool", "gpu", "Ready", "nodes", "1/1"], "{}", show(&text));
}

#[test]
fn verify_reports_why_when_no_node_comes() {
    let Some(sb) = Sandbox::start("up-verify-fail", &[]) else { return };
    sb.write_config(&no_subnets(&sandbox_config()));
    let _ = sb.karpctl(&["up", "--wait-timeout", "30s"]);
    let v = sb.karpctl(&["verify", "--pool", "default", "--timeout", "3s"]);
    assert_eq!(v.status.code(), Some(1), "{}", show(&v));
    let out = String::from_utf8_lossy(&v.stdout).to_string();
    assert!(out.contains("FAILED") && out.contains("no node from pool default"), "{out}");
    assert!(out.contains("NodePool: ") && out.contains("NodeClassReady=False"), "the pool's conditions explain it: {out}");
}

/// Marks the latest Helm record of `release` as `status` (what a helm killed in the
/// middle of writing leaves), in the Secret's label and in the record itself.
fn mark_release(sb: &Sandbox, ns: &str, release: &str, status: &str) {
    use base64::Engine as _;
    use std::io::Write as _;
    let list = sb.kubectl_json(&["-n", ns, "get", "secrets", "-l", &format!("owner=helm,name={release}")]);
    let latest = list["items"].as_array().unwrap().iter().max_by_key(|s| s["metadata"]["labels"]["version"].as_str().unwrap().parse::<u64>().unwrap()).unwrap().clone();
    let b64 = base64::engine::general_purpose::STANDARD;
    let data = b64.decode(latest["data"]["release"].as_str().unwrap()).unwrap();
    let mut record = karpctl::kube::helm_store::decode(&data).unwrap();
    record["info"]["status"] = json!(status);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&serde_json::to_vec(&record).unwrap()).unwrap();
    let encoded = b64.encode(b64.encode(gz.finish().unwrap()));
    let name = latest["metadata"]["name"].as_str().unwrap();
    let patch = json!({"metadata": {"labels": {"status": status}}, "data": {"release": encoded}}).to_string();
    let o = sb.kubectl(&["-n", ns, "patch", "secret", name, "--type", "merge", "-p", &patch]);
    assert!(o.status.success(), "{}", show(&o));
}

/// A kill -9 during `helm upgrade` leaves the release pending, which Helm refuses to
/// touch. When karpctl's own record says its last attempt did not finish, `up` undoes
/// the pending operation and carries on; a pending release karpctl did not leave is
/// reported with helm's help instead.
#[test]
fn a_release_left_pending_by_a_killed_run_is_recovered_and_anyone_elses_is_reported() {
    let Some(sb) = Sandbox::start("up-pending", &[]) else { return };
    sb.write_config(&sandbox_config());
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    let step = "helm-release/kube-system/karpenter";
    // A second revision (same values), so that a pending upgrade has one to go back to.
    let o = Command::new(sb.bin.join("helm")).arg("--kubeconfig").arg(sb.kube.kubeconfig())
        .args(["upgrade", "karpenter"]).arg(sb.dir.join("charts/karpenter")).args(["-n", "kube-system", "--reuse-values", "--skip-crds"]).output().unwrap();
    assert!(o.status.success(), "{}", show(&o));

    // Someone else's pending upgrade: reported, not touched.
    mark_release(&sb, "kube-system", "karpenter", "pending-upgrade");
    let refresh = sb.karpctl(&["up", "--refresh"]);
    assert_eq!(refresh.status.code(), Some(1), "{}", show(&refresh));
    assert!(show(&refresh).contains("another operation (install/upgrade/rollback) is in progress"), "{}", show(&refresh));
    assert!(show(&refresh).contains("helm rollback karpenter -n kube-system"), "{}", show(&refresh));

    // karpctl's own: its record says the step did not finish (as after a kill -9).
    let path = sb.dir.join("state.json");
    let mut st: Value = serde_json::from_str(&read(&path)).unwrap();
    st["steps"][step]["status"] = json!("in_progress");
    std::fs::write(&path, serde_json::to_vec_pretty(&st).unwrap()).unwrap();
    let resumed = sb.karpctl(&["up"]);
    assert!(resumed.status.success(), "{}", show(&resumed));
    assert!(show(&resumed).contains("rolling it back first"), "{}", show(&resumed));
    let after = sb.helm_list();
    let karpenter = after.as_array().unwrap().iter().find(|r| r["name"] == "karpenter").unwrap();
    assert_eq!(karpenter["status"], "deployed", "{after}");
    let revision = karpenter["revision"].as_str().map(|r| r.parse::<u64>().unwrap()).or_else(|| karpenter["revision"].as_u64()).unwrap();
    assert!(revision >= 3, "revision 2 was pending; a rollback (3) was written first: {after}");
    assert_eq!(sb.state("state.json")["steps"][step]["status"], "done");
}
