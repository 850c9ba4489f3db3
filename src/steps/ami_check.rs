/*!
Step `amis/check/<class>`: the check between the stages of a staged AMI rollout
(`up --staged`), after the class's pin moved. It waits until Karpenter has
replaced the class's old nodes (no NodeClaim of the class's pools on an AMI the
EC2NodeClass no longer resolves, or marked `Drifted=True`), every node of those pools is Ready and no pod in the cluster is
stuck Pending as unschedulable, then runs the `verify` test pod on the class's
first pool. It is recorded per pin: a class is checked once per move, and a
failed check is retried by the next run before the rollout moves another class.
*/

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{json, Value};

use crate::config::Config;
use crate::engine::{Action, Change, Step, StepCx};
use crate::kube::{apply, Connector};

use super::probe::{self, Probe};

pub const KIND: &str = "ami-check";

pub fn id(class: &str) -> String {
    format!("amis/check/{class}")
}

/// The test pod's image (any image that starts; the same default as `verify`).
const IMAGE: &str = "registry.k8s.io/pause:3.10";

pub struct AmiCheck {
    pub class: String,
    /// The pin this walk leaves the class on.
    pub pin: String,
    /// The pools whose nodes the class makes, in config order.
    pub pools: Vec<String>,
    pub config: Arc<Config>,
    pub cluster_step: String,
    pub readiness_step: String,
    pub timeout: Duration,
    pub conn: Arc<Connector>,
}

/// What still keeps a stage from passing: NodeClaims of the class's pools on an old
/// AMI (or drifted), not-Ready nodes of those pools, and unschedulable pods anywhere
/// (`namespace/name`).
#[derive(Debug, Default, PartialEq)]
pub struct Waiting {
    pub drifted: Vec<String>,
    pub not_ready: Vec<String>,
    pub unschedulable: Vec<String>,
}

impl Waiting {
    pub fn is_empty(&self) -> bool {
        self.drifted.is_empty() && self.not_ready.is_empty() && self.unschedulable.is_empty()
    }
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (what, list) in [("NodeClaim(s) on an old AMI or drifted, not yet replaced", &self.drifted), ("node(s) not Ready", &self.not_ready), ("pod(s) Pending as unschedulable", &self.unschedulable)] {
            if !list.is_empty() {
                let shown: Vec<&str> = list.iter().take(5).map(String::as_str).collect();
                let more = if list.len() > 5 { format!(" and {} more", list.len() - 5) } else { String::new() };
                parts.push(format!("{} {what}: {}{more}", list.len(), shown.join(", ")));
            }
        }
        parts.join("; ")
    }
}

fn condition_true(obj: &Value, type_: &str) -> bool {
    apply::condition(obj, type_).is_some_and(|c| c["status"] == "True")
}

/// Sorts the cluster's NodeClaims, nodes and pods into what a stage still waits for;
/// `amis` are the image ids the class's EC2NodeClass resolves now.
pub fn waiting(pools: &[String], amis: &[String], claims: &[Value], nodes: &[Value], pods: &[Value]) -> Waiting {
    let of_pools = |o: &&Value| o.pointer("/metadata/labels/karpenter.sh~1nodepool").and_then(Value::as_str).is_some_and(|p| pools.iter().any(|x| x == p));
    let name = |o: &Value| o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?").to_string();
    let old_image = |c: &&Value| c.pointer("/status/imageID").and_then(Value::as_str).is_some_and(|i| !i.is_empty() && !amis.iter().any(|a| a == i));
    let drifted = claims.iter().filter(of_pools).filter(|c| old_image(c) || condition_true(c, "Drifted")).map(name).collect();
    let not_ready = nodes.iter().filter(of_pools).filter(|n| !condition_true(n, "Ready")).map(name).collect();
    let unschedulable = pods
        .iter()
        .filter(|p| p.pointer("/status/phase").and_then(Value::as_str) == Some("Pending"))
        .filter(|p| p.pointer("/metadata/namespace").and_then(Value::as_str) != Some(probe::NAMESPACE))
        .filter(|p| apply::condition(p, "PodScheduled").is_some_and(|c| c["status"] == "False" && c["reason"] == "Unschedulable"))
        .map(|p| format!("{}/{}", p.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("?"), name(p)))
        .collect();
    Waiting { drifted, not_ready, unschedulable }
}

impl AmiCheck {
    async fn look(&self, client: &kube::Client) -> anyhow::Result<Waiting> {
        let class = Api::<DynamicObject>::all_with(client.clone(), &apply::node_class_resource()).get(&self.class).await?;
        let class = serde_json::to_value(class)?;
        let amis: Vec<String> = class.pointer("/status/amis").and_then(Value::as_array).into_iter().flatten().filter_map(|a| a["id"].as_str().map(String::from)).collect();
        let selector = format!("karpenter.sh/nodepool in ({})", self.pools.join(","));
        let lp = ListParams::default().labels(&selector);
        fn values<T: serde::Serialize>(items: Vec<T>) -> Vec<Value> {
            items.into_iter().map(|o| serde_json::to_value(o).unwrap_or_default()).collect()
        }
        let claims = values(Api::<DynamicObject>::all_with(client.clone(), &apply::node_claim_resource()).list(&lp).await?.items);
        let nodes = values(Api::<Node>::all(client.clone()).list(&lp).await?.items);
        let pods = values(Api::<Pod>::all(client.clone()).list(&ListParams::default().fields("status.phase=Pending")).await?.items);
        Ok(waiting(&self.pools, &amis, &claims, &nodes, &pods))
    }
}

impl Step for AmiCheck {
    fn id(&self) -> String {
        id(&self.class)
    }
    fn kind(&self) -> &'static str {
        KIND
    }
    fn layer(&self) -> crate::engine::Layer {
        crate::engine::Layer::Kubernetes
    }
    fn deps(&self) -> Vec<String> {
        vec![self.cluster_step.clone(), self.readiness_step.clone()]
    }
    fn inputs(&self) -> Value {
        json!({"class": self.class, "pin": self.pin, "pools": self.pools})
    }
    fn observe<'a>(&'a self, _cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        // What a check finds lasts only as long as it runs: apply does the looking.
        Box::pin(async move { Ok(json!({"pin": self.pin})) })
    }
    fn diff(&self, _observed: &Value, cx: &StepCx<'_>) -> Change {
        if cx.previous.is_some_and(|p| p["pin"] == self.pin.as_str()) {
            return Change::none();
        }
        let test = match self.pools.first() {
            Some(p) => format!(", then a test pod on pool {p}"),
            None => " (no pool uses the class)".into(),
        };
        Change::new(
            Action::Update,
            format!("check class {} on {}: drifted nodes replaced, nodes Ready, no pod stuck Pending{test}", self.class, self.pin),
        )
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, _observed: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let done = |node: Option<String>, seconds: f64| json!({"pin": self.pin, "pools": self.pools, "node": node, "seconds": seconds});
            let started = tokio::time::Instant::now();
            let Some(first) = self.pools.first() else { return Ok(done(None, 0.0)) };
            let client = self.conn.client(cx.output(&self.cluster_step)).await?;
            loop {
                let w = match self.look(&client).await {
                    Ok(w) => w,
                    Err(e) if crate::kube::is_transient(&e) && started.elapsed() < self.timeout => {
                        cx.progress(format!("could not read nodes and pods ({e:#}); asking again"));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if w.is_empty() {
                    break;
                }
                if started.elapsed() >= self.timeout {
                    anyhow::bail!("class {} on {}: after {}s, {}", self.class, self.pin, self.timeout.as_secs(), w.describe());
                }
                cx.progress(format!("class {}: {} ({}s)", self.class, w.describe(), started.elapsed().as_secs()));
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let pool = self.config.node_pools.iter().find(|p| &p.name == first).ok_or_else(|| anyhow::anyhow!("pool {first} is not in the config"))?;
            let left = self.timeout.saturating_sub(started.elapsed()).max(Duration::from_secs(60));
            let name = format!("verify-{}-{}", pool.name, &uuid::Uuid::new_v4().simple().to_string()[..6]);
            let probe = Probe { config: &self.config, pool, image: IMAGE, timeout: left, keep: false };
            let say = |m: String| cx.progress(m);
            match probe::run(&client, &probe, &name, &say).await? {
                Ok(l) => Ok(done(Some(l.node), started.elapsed().as_secs_f64())),
                Err(n) => anyhow::bail!(
                    "class {} on {}: the test pod on pool {}: {} (pool: {}{})",
                    self.class,
                    self.pin,
                    pool.name,
                    n.reason,
                    n.node_pool,
                    n.pod_events.last().map(|e| format!("; last event: {e}")).unwrap_or_default()
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::diff_table::{check, quiet_cx};

    fn obj(name: &str, pool: Option<&str>, conditions: Value) -> Value {
        let mut o = json!({"metadata": {"name": name, "namespace": "apps"}, "status": {"conditions": conditions}});
        if let Some(p) = pool {
            o["metadata"]["labels"] = json!({"karpenter.sh/nodepool": p});
        }
        o
    }

    #[test]
    fn waiting_counts_only_the_class_pools_and_unschedulable_pods() {
        let pools = vec!["gpu".to_string()];
        let t = |t: &str, s: &str| json!([{"type": t, "status": s}]);
        let mut old = obj("c4", Some("gpu"), json!([]));
        old["status"]["imageID"] = json!("ami-old");
        let mut new = obj("c5", Some("gpu"), json!([]));
        new["status"]["imageID"] = json!("ami-new");
        let claims = [obj("c1", Some("gpu"), t("Drifted", "True")), obj("c2", Some("gpu"), t("Drifted", "False")), obj("c3", Some("default"), t("Drifted", "True")), old, new];
        let nodes = [obj("n1", Some("gpu"), t("Ready", "True")), obj("n2", Some("gpu"), t("Ready", "False")), obj("n3", Some("default"), t("Ready", "Unknown")), obj("n4", Some("gpu"), json!([]))];
        let mut stuck = obj("web", None, json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]));
        stuck["status"]["phase"] = json!("Pending");
        let mut probe_pod = stuck.clone();
        probe_pod["metadata"]["namespace"] = json!(probe::NAMESPACE);
        let mut gated = obj("gated", None, json!([{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]));
        gated["status"]["phase"] = json!("Pending");
        let mut running = stuck.clone();
        running["status"]["phase"] = json!("Running");
        let amis = vec!["ami-new".to_string()];
        let w = waiting(&pools, &amis, &claims, &nodes, &[stuck, probe_pod, gated, running]);
        assert_eq!(w, Waiting { drifted: vec!["c1".into(), "c4".into()], not_ready: vec!["n2".into(), "n4".into()], unschedulable: vec!["apps/web".into()] });
        assert_eq!(w.describe(), "2 NodeClaim(s) on an old AMI or drifted, not yet replaced: c1, c4; 2 node(s) not Ready: n2, n4; 1 pod(s) Pending as unschedulable: apps/web");
        assert!(waiting(&pools, &amis, &claims[1..3], &nodes[..1], &[]).is_empty());
        assert!(waiting(&pools, &amis, &claims[4..], &[], &[]).is_empty(), "a claim on the class's AMI is done");
        let many: Vec<Value> = (0..7).map(|i| obj(&format!("n{i}"), Some("gpu"), json!([]))).collect();
        assert_eq!(waiting(&pools, &amis, &[], &many, &[]).describe(), "7 node(s) not Ready: n0, n1, n2, n3, n4 and 2 more");
    }

    #[test]
    fn diff_table() {
        let s = AmiCheck {
            class: "gpu".into(),
            pin: "al2023@v2".into(),
            pools: vec!["gpu".into(), "gpu-spot".into()],
            config: Arc::new(crate::config::parse(std::path::Path::new("t.yaml"), b"apiVersion: karpctl.io/v1alpha1\ncluster: {name: c}\n").map_err(|e| e.to_string()).expect("config").config),
            cluster_step: "cluster/c".into(),
            readiness_step: "ready/c".into(),
            timeout: Duration::from_secs(1),
            conn: Arc::new(Connector::new(&Default::default(), aws_config::SdkConfig::builder().build(), "c")),
        };
        let rows: Vec<(&str, Option<Value>, Action, &str)> = vec![
            ("never checked", None, Action::Update, "check class gpu on al2023@v2: drifted nodes replaced, nodes Ready, no pod stuck Pending, then a test pod on pool gpu"),
            ("checked on an older pin", Some(json!({"pin": "al2023@v1"})), Action::Update, "check class gpu on al2023@v2"),
            ("checked on this pin", Some(json!({"pin": "al2023@v2"})), Action::None, "up to date"),
        ];
        for (name, previous, action, summary) in rows {
            let c = s.diff(&json!({"pin": "al2023@v2"}), &quiet_cx(previous.as_ref()));
            check(name, &c, action, false, summary, &[]);
        }
        let none = AmiCheck { pools: vec![], ..s };
        assert!(none.diff(&json!({}), &quiet_cx(None)).summary.ends_with("(no pool uses the class)"));
    }
}
