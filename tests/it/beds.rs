//! Handles on the test beds (tests/testbed): the AWS emulator, one per test on a
//! free port, and a real kube-apiserver, one per test or shared through
//! `KARPCTL_TEST_KUBE_DIR`. Without the beds installed a test is skipped with
//! the reason, unless `CI` is set, where a missing bed is a broken setup.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{repo, scratch};

fn cache() -> PathBuf {
    std::env::var_os("KARPCTL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/karpctl")))
        .unwrap_or_else(|| PathBuf::from(".cache/karpctl"))
}

fn skip(why: String) -> Option<std::convert::Infallible> {
    assert!(std::env::var_os("CI").is_none(), "CI is set but {why}");
    eprintln!("skipping: {why}");
    None
}

/// The AWS emulator (tests/testbed/aws/launcher.py) on a free port, stopped on drop.
pub struct AwsEmulator {
    child: Child,
    dir: PathBuf,
    pub endpoint: String,
    pub handle: Value,
}

impl AwsEmulator {
    /// Starts an emulator with launcher options (`--k8s-version 1.33` …).
    pub fn start(args: &[&str]) -> Option<AwsEmulator> {
        let python = cache().join("venv-aws/bin/python");
        if !python.exists() {
            skip(format!("the AWS emulator is not installed ({} is missing; run scripts/testbed-aws.sh install)", python.display()))?;
        }
        let dir = scratch("aws");
        let handle = dir.join("handle.json");
        let log = std::fs::File::create(dir.join("launcher.log")).unwrap();
        let mut cmd = Command::new(&python);
        cmd.arg(repo().join("tests/testbed/aws/launcher.py"))
            .args(["--port", "0", "--handle"])
            .arg(&handle)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
        let mut emu = AwsEmulator { child, dir, endpoint: String::new(), handle: Value::Null };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(h) = std::fs::read(&handle) {
                if let Ok(v) = serde_json::from_slice::<Value>(&h) {
                    emu.endpoint = v["endpoint"].as_str().expect("handle has an endpoint").to_string();
                    emu.handle = v;
                    return Some(emu);
                }
            }
            if let Some(status) = emu.child.try_wait().unwrap() {
                panic!("the AWS emulator exited ({status}):\n{}", emu.log());
            }
            assert!(Instant::now() < deadline, "the AWS emulator is not ready after 120s:\n{}", emu.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("launcher.log")).unwrap_or_default()
    }

    /// SDK config pointing at the emulator with its test credentials.
    pub async fn sdk_config(&self, region: &str) -> aws_config::SdkConfig {
        use aws_config::BehaviorVersion;
        use aws_sdk_s3::config::{Credentials, Region};
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(region.to_string()))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .load()
            .await
    }

    /// A control-endpoint call: METHOD /_testbed/PATH with an optional JSON body.
    pub fn control(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).expect("connect to the emulator");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} /_testbed/{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, payload) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        assert!(head.starts_with("HTTP/1.1 2") || head.starts_with("HTTP/1.0 2"), "{method} {path}: {head}\n{payload}");
        serde_json::from_str(payload).unwrap_or(Value::Null)
    }

    /// The tool's own request counts per `service:Operation`, and the mutating total: only
    /// requests signed with the tests' access key ([`CALLER`]), so that a Karpenter controller
    /// running beside it (with its own credentials) is not counted.
    pub fn requests(&self) -> Value {
        self.control("GET", &format!("requests?caller={CALLER}"), None)
    }

    /// Adds fault rules (one rule or a list) that hit only the tool's requests ([`CALLER`]).
    pub fn add_faults(&self, rules: &Value) -> Value {
        let with_caller = |r: &Value| {
            let mut r = r.clone();
            r["caller"] = CALLER.into();
            r
        };
        let rules = match rules {
            Value::Array(a) => Value::Array(a.iter().map(with_caller).collect()),
            r => with_caller(r),
        };
        self.control("POST", "faults", Some(&rules))
    }
}

/// The access key id the tests give karpctl (and the AWS emulator counts by).
pub const CALLER: &str = "testing";

impl Drop for AwsEmulator {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running kube-apiserver + etcd from scripts/testbed-kube.sh.
pub struct KubeBed {
    pub dir: PathBuf,
    owned: bool,
}

impl KubeBed {
    pub fn start() -> Option<KubeBed> {
        Self::start_with(&[])
    }

    /// Starts a bed of its own with `scripts/testbed-kube.sh start` options (`--no-crds`).
    pub fn start_with(args: &[&str]) -> Option<KubeBed> {
        if args.is_empty() {
            if let Some(d) = std::env::var_os("KARPCTL_TEST_KUBE_DIR") {
                return Some(KubeBed { dir: PathBuf::from(d), owned: false });
            }
        }
        let script = repo().join("scripts/testbed-kube.sh");
        // A test never starts the 10-minute build itself: scripts/test.sh does that first.
        let built = std::fs::read_dir(cache().join("kube-bin"))
            .map(|mut d| d.any(|e| e.map(|e| e.path().join(".complete").exists()).unwrap_or(false)))
            .unwrap_or(false);
        if !built {
            skip("the Kubernetes test bed is not built (run scripts/testbed-kube.sh build)".into())?;
        }
        let dir = scratch("kube");
        let out = Command::new(&script).args(["start", "--dir"]).arg(&dir).args(args).output().unwrap();
        assert!(out.status.success(), "starting the kube bed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Some(KubeBed { dir, owned: true })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Kills the kube-apiserver and starts it again on the same port with the same
    /// flags, etcd and its data untouched (`scripts/testbed-kube.sh restart-apiserver`).
    pub fn restart_apiserver(&self) {
        let out = Command::new(repo().join("scripts/testbed-kube.sh")).args(["restart-apiserver", "--dir"]).arg(&self.dir).output().unwrap();
        assert!(out.status.success(), "restarting the kube-apiserver:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }

    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }
}

impl Drop for KubeBed {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new(repo().join("scripts/testbed-kube.sh")).args(["stop", "--dir"]).arg(&self.dir).output();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Does what controllers and kubelets would on the kube bed, so waits, drains and
/// deletes can be tested for real: nodes (Karpenter-launched or nodegroup), pods
/// bound to them, PodDisruptionBudgets with status, and status conditions.
pub struct KubeSim {
    pub client: kube::Client,
}

impl KubeSim {
    /// A Ready node with capacity; `pool` labels it as Karpenter-launched
    /// (`karpenter.sh/nodepool`), `nodegroup` as a managed-nodegroup node.
    pub async fn node(&self, name: &str, pool: Option<&str>, nodegroup: Option<&str>, cpu: &str, memory: &str) {
        use k8s_openapi::api::core::v1::Node;
        use kube::api::{Api, Patch, PatchParams, PostParams};
        let mut labels = serde_json::Map::new();
        labels.insert("kubernetes.io/hostname".into(), name.into());
        if let Some(p) = pool {
            labels.insert("karpenter.sh/nodepool".into(), p.into());
            labels.insert("karpenter.sh/initialized".into(), "true".into());
        }
        if let Some(ng) = nodegroup {
            labels.insert("eks.amazonaws.com/nodegroup".into(), ng.into());
        }
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels},
            "spec": {"providerID": format!("aws:///us-west-2a/i-{:016x}", fxhash(name))}
        }))
        .unwrap();
        let api: Api<Node> = Api::all(self.client.clone());
        api.create(&PostParams::default(), &node).await.expect("create node");
        let status = serde_json::json!({"status": {
            "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated by the test bed",
                            "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("node status");
    }

    /// A Running pod bound to `node` (as the scheduler and kubelet would leave it).
    pub async fn pod(&self, ns: &str, name: &str, node: &str, labels: &[(&str, &str)], cpu: &str) {
        use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
        use kube::api::{Api, Patch, PatchParams, PostParams};
        // No token controller runs here: the namespace's default service account is made by hand.
        let sas: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        if sas.get_opt("default").await.expect("get sa").is_none() {
            let sa: ServiceAccount = serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap();
            sas.create(&PostParams::default(), &sa).await.expect("create default sa");
        }
        let labels: serde_json::Map<String, Value> = labels.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"nodeName": node, "automountServiceAccountToken": false,
                     "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": {"cpu": cpu}}}]}
        }))
        .unwrap();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        api.create(&PostParams::default(), &pod).await.expect("create pod");
        let status = serde_json::json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("pod status");
    }

    /// A PodDisruptionBudget whose status allows `allowed` disruptions.
    pub async fn pdb(&self, ns: &str, name: &str, app: &str, min_available: i32, allowed: i32) {
        use k8s_openapi::api::policy::v1::PodDisruptionBudget;
        use kube::api::{Api, Patch, PatchParams, PostParams};
        let pdb: PodDisruptionBudget = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}}
        }))
        .unwrap();
        let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), ns);
        api.create(&PostParams::default(), &pdb).await.expect("create pdb");
        let status = serde_json::json!({"status": {"disruptionsAllowed": allowed, "currentHealthy": min_available + allowed,
            "desiredHealthy": min_available, "expectedPods": min_available + allowed, "observedGeneration": 1}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("pdb status");
    }

    /// Sets a status condition on any object with a status subresource (NodePool,
    /// EC2NodeClass, NodeClaim …).
    pub async fn condition(&self, ar: &kube::discovery::ApiResource, ns: Option<&str>, name: &str, type_: &str, status: bool, message: &str) {
        use kube::api::{Api, DynamicObject, Patch, PatchParams};
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        };
        let cond = serde_json::json!({"status": {"conditions": [{
            "type": type_, "status": if status { "True" } else { "False" }, "reason": if status { "Ready" } else { "NotReady" },
            "message": message, "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 1
        }]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&cond)).await.expect("status condition");
    }

    /// Marks a Deployment available, as its controller would once pods run.
    pub async fn deployment_available(&self, ns: &str, name: &str) {
        use k8s_openapi::api::apps::v1::Deployment;
        use kube::api::{Api, Patch, PatchParams};
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let d = api.get(name).await.expect("get deployment");
        let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(1);
        let gen = d.metadata.generation.unwrap_or(1);
        let status = serde_json::json!({"status": {"observedGeneration": gen, "replicas": replicas, "readyReplicas": replicas,
            "availableReplicas": replicas, "updatedReplicas": replicas,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]}});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("deployment status");
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}
