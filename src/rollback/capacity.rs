/*!
Step `rollback/nodegroups`: before anything is drained, the managed nodegroups
in `rollback.nodegroups` are scaled up (UpdateNodegroupConfig; never down: each
of min/desired/max becomes the larger of what is configured and what is set)
and waited for until the nodegroup is ACTIVE and that many of its nodes are
Ready. First it estimates whether they can hold the pods now on Karpenter
nodes — their CPU and memory requests against the allocatable of the other
nodes and of the scaled nodegroups (a node of the nodegroup tells its
allocatable; without one, its instance type's capacity is an upper bound) — and
refuses without `--yes` when they clearly cannot.
*/

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

use super::{cpu_text, mem_text, CLUSTER, NODEGROUP_LABEL, POOL_LABEL};
use crate::aws::AwsError;
use crate::config::types::RollbackNodegroup;
use crate::engine::{Action, Change, FieldChange, Step, StepCx};
use crate::kube::Connector;

pub struct Nodegroups {
    pub cluster: String,
    pub nodegroups: Vec<RollbackNodegroup>,
    pub deps: Vec<String>,
    pub eks: aws_sdk_eks::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub conn: Arc<Connector>,
    pub timeout: Duration,
}

/// Settled nodegroup states from which nothing moves without a person.
const BROKEN: [&str; 4] = ["CREATE_FAILED", "DELETE_FAILED", "DEGRADED", "DELETING"];

fn node_ready(n: &Node) -> bool {
    let ready = n.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    ready && !cordoned && n.metadata.deletion_timestamp.is_none()
}

fn allocatable(n: &Node) -> (f64, f64) {
    let a = n.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let q = |k: &str| a.and_then(|m| m.get(k)).and_then(|q| crate::config::rules::parse_quantity(&q.0)).unwrap_or(0.0);
    (q("cpu"), q("memory"))
}

fn label<'a>(n: &'a Node, key: &str) -> Option<&'a str> {
    n.metadata.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str)
}

/// What the capacity check found, from the observed state.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Pods on Karpenter nodes that must move, and their requests.
    pub pods: u64,
    pub need_cpu: f64,
    pub need_memory: f64,
    /// Free allocatable after scaling, when every nodegroup's node size is known.
    pub free: Option<(f64, f64)>,
    /// Nodegroups whose node size is unknown.
    pub unknown: Vec<String>,
}

impl Estimate {
    /// `Some(false)` only when the pods clearly cannot fit.
    pub fn fits(&self) -> Option<bool> {
        if self.pods == 0 {
            return Some(true);
        }
        self.free.map(|(cpu, mem)| self.need_cpu <= cpu + 1e-9 && self.need_memory <= mem + 0.5)
    }

    pub fn text(&self) -> String {
        if self.pods == 0 {
            return "no pods to move off Karpenter nodes".into();
        }
        let need = format!("the {} pod(s) on Karpenter nodes request {} / {}", self.pods, cpu_text(self.need_cpu), mem_text(self.need_memory));
        match (self.fits(), self.free) {
            (Some(true), Some((c, m))) => format!("{need}; about {} / {} will be free for them", cpu_text(c), mem_text(m)),
            (Some(false), Some((c, m))) => format!(
                "the nodegroups cannot hold them: {need}, but only about {} / {} will be free; raise rollback.nodegroups[].desiredSize, \
                 or run with --yes to go on anyway",
                cpu_text(c),
                mem_text(m)
            ),
            _ => format!("{need}; the free capacity is unknown (no Ready node of {} and no instance type to read)", self.unknown.join(", ")),
        }
    }
}

/// The pure half of the capacity check.
pub fn estimate(o: &Value) -> Estimate {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let k = &o["karpenter"];
    let mut free = (f(&o["other"]["freeCpu"]), f(&o["other"]["freeMemory"]));
    let mut unknown = Vec::new();
    for g in o["nodegroups"].as_array().into_iter().flatten() {
        let desired = g["target"]["desired"].as_f64().unwrap_or(0.0);
        match g["perNode"].as_object() {
            Some(p) => {
                free.0 += (desired * f(&p["cpu"]) - f(&g["used"]["cpu"])).max(0.0);
                free.1 += (desired * f(&p["memory"]) - f(&g["used"]["memory"])).max(0.0);
            }
            None => unknown.push(g["name"].as_str().unwrap_or("?").to_string()),
        }
    }
    Estimate {
        pods: k["pods"].as_u64().unwrap_or(0),
        need_cpu: f(&k["cpu"]),
        need_memory: f(&k["memory"]),
        free: unknown.is_empty().then_some(free),
        unknown,
    }
}

fn triple(v: &Value) -> (i64, i64, i64) {
    (v["min"].as_i64().unwrap_or(0), v["desired"].as_i64().unwrap_or(0), v["max"].as_i64().unwrap_or(0))
}

impl Nodegroups {
    async fn describe(&self, name: &str) -> anyhow::Result<aws_sdk_eks::types::Nodegroup> {
        match self.eks.describe_nodegroup().cluster_name(&self.cluster).nodegroup_name(name).send().await {
            Ok(o) => o.nodegroup.ok_or_else(|| anyhow::anyhow!("DescribeNodegroup returned no nodegroup {name}")),
            Err(e) => {
                let err = AwsError::from_sdk("eks:DescribeNodegroup", &e);
                if err.is_not_found() {
                    anyhow::bail!(
                        "managed nodegroup {name:?} not found in cluster {} ({err}); check rollback.nodegroups (`aws eks list-nodegroups --cluster-name {}`)",
                        self.cluster,
                        self.cluster
                    );
                }
                Err(err.into())
            }
        }
    }

    /// The size of one node of `types[0]` (vCPUs, memory bytes): an upper bound of its allocatable.
    async fn instance_size(&self, types: &[String]) -> Option<(f64, f64, String)> {
        let t = types.first()?;
        let out = self.ec2.describe_instance_types().instance_types(aws_sdk_ec2::types::InstanceType::from(t.as_str())).send().await.ok()?;
        let info = out.instance_types().first()?;
        let cpu = info.v_cpu_info()?.default_v_cpus()? as f64;
        let mem = info.memory_info()?.size_in_mib()? as f64 * 1024.0 * 1024.0;
        Some((cpu, mem, format!("instance type {t} (capacity; allocatable is somewhat lower)")))
    }

    fn names(&self) -> Vec<&str> {
        self.nodegroups.iter().map(|n| n.name.as_str()).collect()
    }

    /// Ready, schedulable nodes per configured nodegroup.
    async fn ready_counts(&self, client: &kube::Client) -> anyhow::Result<BTreeMap<String, i64>> {
        let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default().labels(NODEGROUP_LABEL)).await.context("listing nodegroup nodes")?;
        let mut out: BTreeMap<String, i64> = self.nodegroups.iter().map(|n| (n.name.clone(), 0)).collect();
        for n in nodes.items.iter().filter(|n| node_ready(n)) {
            if let Some(c) = label(n, NODEGROUP_LABEL).and_then(|g| out.get_mut(g)) {
                *c += 1;
            }
        }
        Ok(out)
    }
}

impl Step for Nodegroups {
    fn id(&self) -> String {
        super::NODEGROUPS.into()
    }
    fn kind(&self) -> &'static str {
        "rollback-nodegroups"
    }
    fn deps(&self) -> Vec<String> {
        self.deps.clone()
    }
    fn always_observe(&self) -> bool {
        true
    }
    fn inputs(&self) -> Value {
        json!({"nodegroups": self.nodegroups.iter().map(|n| json!({"name": n.name, "min": n.min_size, "desired": n.desired_size, "max": n.max_size})).collect::<Vec<_>>()})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(CLUSTER)).await?;
            cx.progress("reading nodes and pods");
            let nodes = Api::<Node>::all(client.clone()).list(&ListParams::default()).await.context("listing nodes")?.items;
            let pods = Api::<Pod>::all(client.clone()).list(&ListParams::default()).await.context("listing pods")?.items;
            // Requests per node of the pods that hold capacity there, and of those that must move.
            let mut used: BTreeMap<String, (f64, f64)> = BTreeMap::new();
            let karpenter: BTreeMap<&str, &Node> = nodes.iter().filter(|n| label(n, POOL_LABEL).is_some()).map(|n| (n.metadata.name.as_deref().unwrap_or(""), n)).collect();
            let (mut moving, mut need_cpu, mut need_mem) = (0u64, 0.0, 0.0);
            for p in &pods {
                let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) else { continue };
                if matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
                    continue;
                }
                let (c, m) = super::requests(p);
                let u = used.entry(node.to_string()).or_default();
                u.0 += c;
                u.1 += m;
                if karpenter.contains_key(node) && !super::stays(p) && p.metadata.deletion_timestamp.is_none() {
                    moving += 1;
                    need_cpu += c;
                    need_mem += m;
                }
            }
            let names = self.names();
            let (mut other_nodes, mut other_cpu, mut other_mem) = (0, 0.0, 0.0);
            for n in nodes.iter().filter(|n| node_ready(n) && label(n, POOL_LABEL).is_none()) {
                if label(n, NODEGROUP_LABEL).is_some_and(|g| names.contains(&g)) {
                    continue;
                }
                let (c, m) = allocatable(n);
                let u = used.get(n.metadata.name.as_deref().unwrap_or("")).copied().unwrap_or_default();
                other_nodes += 1;
                other_cpu += (c - u.0).max(0.0);
                other_mem += (m - u.1).max(0.0);
            }
            let mut groups = Vec::new();
            for ng in &self.nodegroups {
                cx.progress(format!("DescribeNodegroup {}", ng.name));
                let d = self.describe(&ng.name).await?;
                let sc = d.scaling_config();
                let now = (
                    sc.and_then(|s| s.min_size()).unwrap_or(0) as i64,
                    sc.and_then(|s| s.desired_size()).unwrap_or(0) as i64,
                    sc.and_then(|s| s.max_size()).unwrap_or(0) as i64,
                );
                let target = (now.0.max(ng.min_size), now.1.max(ng.desired_size), now.2.max(ng.max_size));
                let mine: Vec<&Node> = nodes.iter().filter(|n| label(n, NODEGROUP_LABEL) == Some(ng.name.as_str())).collect();
                let ready = mine.iter().filter(|n| node_ready(n)).count();
                let (mut uc, mut um) = (0.0, 0.0);
                for n in &mine {
                    let u = used.get(n.metadata.name.as_deref().unwrap_or("")).copied().unwrap_or_default();
                    uc += u.0;
                    um += u.1;
                }
                let per_node = match mine.iter().find(|n| node_ready(n)) {
                    Some(n) => {
                        let (c, m) = allocatable(n);
                        Some(json!({"cpu": c, "memory": m, "from": format!("node {}", n.metadata.name.as_deref().unwrap_or("?"))}))
                    }
                    None => self.instance_size(d.instance_types()).await.map(|(c, m, from)| json!({"cpu": c, "memory": m, "from": from})),
                };
                let issues: Vec<String> = d
                    .health()
                    .map(|h| h.issues().iter().map(|i| format!("{}: {}", i.code().map(|c| c.as_str()).unwrap_or("?"), i.message().unwrap_or(""))).collect())
                    .unwrap_or_default();
                groups.push(json!({
                    "name": ng.name,
                    "status": d.status().map(|s| s.as_str().to_string()),
                    "health": issues,
                    "scaling": {"min": now.0, "desired": now.1, "max": now.2},
                    "target": {"min": target.0, "desired": target.1, "max": target.2},
                    "readyNodes": ready,
                    "perNode": per_node,
                    "used": {"cpu": uc, "memory": um},
                }));
            }
            Ok(json!({
                "nodegroups": groups,
                "karpenter": {"nodes": karpenter.len(), "pods": moving, "cpu": need_cpu, "memory": need_mem},
                "other": {"nodes": other_nodes, "freeCpu": other_cpu, "freeMemory": other_mem},
            }))
        })
    }
    fn diff(&self, o: &Value, _cx: &StepCx<'_>) -> Change {
        let est = estimate(o);
        let mut fields = Vec::new();
        let mut scale = Vec::new();
        for g in o["nodegroups"].as_array().into_iter().flatten() {
            let name = g["name"].as_str().unwrap_or("?");
            let (now, want) = (triple(&g["scaling"]), triple(&g["target"]));
            for (field, a, b) in [("minSize", now.0, want.0), ("desiredSize", now.1, want.1), ("maxSize", now.2, want.2)] {
                if a != b {
                    fields.push(FieldChange { field: format!("nodegroup/{name}.{field}"), old: json!(a), new: json!(b) });
                }
            }
            if now != want {
                scale.push(format!("scale nodegroup {name} to {}/{}/{} min/desired/max (now {}/{}/{})", want.0, want.1, want.2, now.0, now.1, now.2));
            }
            if g["status"] != "ACTIVE" {
                fields.push(FieldChange { field: format!("nodegroup/{name}.status"), old: g["status"].clone(), new: json!("ACTIVE") });
            }
            let ready = g["readyNodes"].as_i64().unwrap_or(0);
            if ready < want.1 {
                fields.push(FieldChange { field: format!("nodegroup/{name}.readyNodes"), old: json!(ready), new: json!(want.1) });
                scale.push(format!("wait for {} Ready node(s) of {name}", want.1));
            }
        }
        let fits = est.fits();
        if fields.is_empty() && fits != Some(false) {
            return Change::none();
        }
        if self.nodegroups.is_empty() {
            scale.push("no rollback.nodegroups configured".into());
        }
        let mut summary = scale.join("; ");
        if !summary.is_empty() {
            summary.push_str("; ");
        }
        summary.push_str(&est.text());
        let change = Change::new(Action::Update, summary).with_fields(fields);
        if fits == Some(false) {
            change.destructive()
        } else {
            change
        }
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, o: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(CLUSTER)).await?;
            let started = tokio::time::Instant::now();
            let mut pace = crate::kube::Pace::new();
            let groups: Vec<&Value> = o["nodegroups"].as_array().into_iter().flatten().collect();
            for g in &groups {
                let name = g["name"].as_str().unwrap_or_default();
                let want = triple(&g["target"]);
                if triple(&g["scaling"]) == want {
                    continue;
                }
                loop {
                    cx.progress(format!("UpdateNodegroupConfig {name}: {}/{}/{} min/desired/max", want.0, want.1, want.2));
                    let cfg = aws_sdk_eks::types::NodegroupScalingConfig::builder().min_size(want.0 as i32).desired_size(want.1 as i32).max_size(want.2 as i32).build();
                    match self.eks.update_nodegroup_config().cluster_name(&self.cluster).nodegroup_name(name).scaling_config(cfg).send().await {
                        Ok(_) => break,
                        Err(e) => {
                            let err = AwsError::from_sdk("eks:UpdateNodegroupConfig", &e);
                            // Another update is running: wait for it, then ours.
                            if !err.is_in_use() || started.elapsed() >= self.timeout {
                                return Err(anyhow::Error::from(err).context(format!("scaling nodegroup {name}")));
                            }
                            cx.progress(format!("nodegroup {name} is being updated; waiting to scale it"));
                            pace.wait().await;
                        }
                    }
                }
            }
            loop {
                let mut waiting = Vec::new();
                for g in &groups {
                    let name = g["name"].as_str().unwrap_or_default();
                    let d = match self.describe(name).await {
                        Ok(d) => d,
                        // Throttled or a 5xx after the SDK's retries: ask again at the next poll.
                        Err(e) if crate::aws::is_transient(&e) && started.elapsed() < self.timeout => {
                            waiting.push(format!("nodegroup {name} (could not read it: {e:#})"));
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    let status = d.status().map(|s| s.as_str().to_string()).unwrap_or_default();
                    if BROKEN.contains(&status.as_str()) {
                        let issues: Vec<String> = d.health().map(|h| h.issues().iter().map(|i| i.message().unwrap_or("").to_string()).collect()).unwrap_or_default();
                        anyhow::bail!(
                            "nodegroup {name} is {status}{}; fix it in EKS (`aws eks describe-nodegroup --cluster-name {} --nodegroup-name {name}`), \
                             then run `karpctl rollback` again",
                            if issues.is_empty() { String::new() } else { format!(": {}", issues.join("; ")) },
                            self.cluster
                        );
                    }
                    if status != "ACTIVE" {
                        waiting.push(format!("nodegroup {name} {status}"));
                    }
                }
                let ready = self.ready_counts(&client).await?;
                for g in &groups {
                    let name = g["name"].as_str().unwrap_or_default();
                    let want = triple(&g["target"]).1;
                    let have = ready.get(name).copied().unwrap_or(0);
                    if have < want {
                        waiting.push(format!("{have}/{want} nodes of {name} Ready"));
                    }
                }
                if waiting.is_empty() {
                    break;
                }
                if started.elapsed() >= self.timeout {
                    anyhow::bail!(
                        "the nodegroups are not ready after {}s: {}; nothing was drained yet\nhelp: check the nodes (`kubectl get nodes -l {NODEGROUP_LABEL}`), then run \
                         `karpctl rollback` again to keep waiting (or with a longer --wait-timeout)",
                        self.timeout.as_secs(),
                        waiting.join(", ")
                    );
                }
                cx.progress(format!("waiting: {} ({}s)", waiting.join(", "), started.elapsed().as_secs()));
                pace.wait().await;
            }
            Ok(json!({
                "nodegroups": groups.iter().map(|g| json!({"name": g["name"], "scaling": g["target"]})).collect::<Vec<_>>(),
                "removed": [],
            }))
        })
    }
    fn outputs_from(&self, o: &Value) -> Value {
        json!({
            "nodegroups": o["nodegroups"].as_array().into_iter().flatten().map(|g| json!({"name": g["name"], "scaling": g["scaling"]})).collect::<Vec<_>>(),
            "removed": [],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: f64 = 1024.0 * 1024.0 * 1024.0;

    fn observed(pods: u64, cpu: f64, mem_gi: f64, per_node: Value, desired: i64) -> Value {
        json!({
            "nodegroups": [{"name": "system", "status": "ACTIVE", "scaling": {"min": 1, "desired": 2, "max": 3},
                            "target": {"min": 1, "desired": desired, "max": 4}, "readyNodes": 2,
                            "perNode": per_node, "used": {"cpu": 1.0, "memory": 2.0 * GI}}],
            "karpenter": {"nodes": 1, "pods": pods, "cpu": cpu, "memory": mem_gi * GI},
            "other": {"nodes": 0, "freeCpu": 0.0, "freeMemory": 0.0},
        })
    }

    #[test]
    fn pods_that_fit_are_reported_with_the_numbers() {
        let e = estimate(&observed(3, 1.5, 3.0, json!({"cpu": 2.0, "memory": 8.0 * GI}), 3));
        assert_eq!(e.free, Some((5.0, 22.0 * GI)));
        assert_eq!(e.fits(), Some(true));
        assert!(e.text().contains("request 1.5 CPU / 3.0 GiB") && e.text().contains("5.0 CPU / 22.0 GiB"), "{}", e.text());
    }

    #[test]
    fn pods_that_clearly_do_not_fit_need_yes() {
        let o = observed(20, 12.0, 4.0, json!({"cpu": 2.0, "memory": 8.0 * GI}), 3);
        assert_eq!(estimate(&o).fits(), Some(false));
        let s = Nodegroups::diff_for_test(&o);
        assert!(s.destructive, "{s:?}");
        assert!(s.summary.contains("cannot hold them") && s.summary.contains("--yes"), "{}", s.summary);
        assert!(s.summary.contains("12.0 CPU"), "{}", s.summary);
    }

    #[test]
    fn unknown_node_size_never_refuses() {
        let e = estimate(&observed(5, 100.0, 100.0, Value::Null, 3));
        assert_eq!(e.fits(), None);
        assert!(e.text().contains("unknown") && e.text().contains("system"), "{}", e.text());
        assert_eq!(estimate(&observed(0, 0.0, 0.0, Value::Null, 3)).fits(), Some(true));
    }

    #[test]
    fn scaling_fields_name_the_nodegroup_and_nothing_to_do_is_no_change() {
        let o = observed(1, 0.5, 0.5, json!({"cpu": 2.0, "memory": 8.0 * GI}), 3);
        let c = Nodegroups::diff_for_test(&o);
        let fields: Vec<&str> = c.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["nodegroup/system.desiredSize", "nodegroup/system.maxSize", "nodegroup/system.readyNodes"]);
        assert!(!c.destructive);
        let mut done = o.clone();
        done["nodegroups"][0]["scaling"] = done["nodegroups"][0]["target"].clone();
        done["nodegroups"][0]["readyNodes"] = json!(3);
        assert_eq!(Nodegroups::diff_for_test(&done).action, Action::None);
    }

    impl Nodegroups {
        fn diff_for_test(o: &Value) -> Change {
            let step = Nodegroups {
                cluster: "c".into(),
                nodegroups: vec![RollbackNodegroup { name: "system".into(), min_size: 1, desired_size: 3, max_size: 4 }],
                deps: vec![],
                eks: aws_sdk_eks::Client::from_conf(aws_sdk_eks::Config::builder().behavior_version_latest().build()),
                ec2: aws_sdk_ec2::Client::from_conf(aws_sdk_ec2::Config::builder().behavior_version_latest().build()),
                conn: Arc::new(Connector::new(&Default::default(), aws_config::SdkConfig::builder().build(), "c")),
                timeout: Duration::from_secs(1),
            };
            let upstream = BTreeMap::new();
            let quiet = |_e: crate::engine::Event| {};
            let cx = StepCx::new("t", &upstream, None, &quiet);
            step.diff(o, &cx)
        }
    }
}
