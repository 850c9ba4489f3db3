/*!
Steps for the Kubernetes objects karpctl owns. `objects/<cluster>` applies the
EC2NodeClasses (with the pinned AMIs), NodePools and `extraObjects` by
server-side apply; every object is first applied as a server-side dry run, so
the API server's schema and CEL validation rejects a bad object before any of
them changes, and the diff is the API server's own view (defaults included).
`prune/<cluster>` deletes pools, classes and extra objects that left the config
— pools before classes — only with `up --prune` (or `--yes`).
*/

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{json, Value};

use crate::config::Config;
use crate::engine::{Action, Change, FieldChange, Step, StepCx};
use crate::kube::apply::{self, ApplyError, Target};
use crate::kube::Connector;
use crate::render::AmiChoice;

pub struct Objects {
    pub config: Arc<Config>,
    pub cluster_step: String,
    pub amis_step: Option<String>,
    pub deps: Vec<String>,
    pub force_conflicts: bool,
    pub conn: Arc<Connector>,
}

pub fn id(cluster: &str) -> String {
    format!("objects/{cluster}")
}

/// Everything to apply, in order: classes, pools, extra objects.
pub fn desired(c: &Config, pins: &BTreeMap<String, AmiChoice>) -> Vec<Value> {
    let mut notes = Vec::new();
    let mut out = Vec::new();
    for nc in &c.node_classes {
        out.push(serde_json::to_value(crate::render::nodes::node_class(c, nc, pins.get(&nc.name), &mut notes)).expect("serializes"));
    }
    for np in &c.node_pools {
        out.push(serde_json::to_value(crate::render::nodes::node_pool(c, np)).expect("serializes"));
    }
    out.extend(c.extra_objects.iter().cloned());
    out
}

fn is_karpenter(obj: &Value) -> bool {
    matches!(obj["kind"].as_str(), Some("NodePool" | "EC2NodeClass"))
}

impl Objects {
    fn pins(&self, cx: &StepCx<'_>) -> BTreeMap<String, AmiChoice> {
        self.amis_step
            .as_ref()
            .and_then(|s| cx.output(s))
            .and_then(|o| serde_json::from_value(o["pins"].clone()).ok())
            .unwrap_or_default()
    }
}

/// Resolves every object's API once per group-version-kind.
async fn targets(client: &kube::Client, objs: &[Value]) -> Result<Vec<Result<Target, ApplyError>>, ApplyError> {
    let mut out = Vec::new();
    for o in objs {
        match apply::resolve(client, o).await {
            Ok(t) => out.push(Ok(t)),
            Err(e @ ApplyError::UnknownKind { .. }) => out.push(Err(e)),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The dry run of the batch refused some objects, so none of them was applied.
#[derive(Debug, thiserror::Error)]
#[error(
    "the API server's dry run refused {} object(s), nothing was changed:\n  {}",
    problems.len(),
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ")
)]
pub struct DryRunRefused {
    pub problems: Vec<ApplyError>,
}

impl DryRunRefused {
    /// The next command: take conflicting fields over, or fix what was refused.
    pub fn help(&self) -> String {
        if self.problems.iter().any(|p| matches!(p, ApplyError::Conflict { .. })) {
            "`karpctl up --force-conflicts` takes the fields over from the other manager (or change them where it sets them, and drop them from the config)".into()
        } else {
            "nothing of the batch was applied: change the objects in the config (or the admission policy that refuses them), then run `karpctl up` again".into()
        }
    }
}

impl Step for Objects {
    fn id(&self) -> String {
        id(&self.config.cluster.name)
    }
    fn kind(&self) -> &'static str {
        "kubernetes-objects"
    }
    fn layer(&self) -> crate::engine::Layer {
        crate::engine::Layer::Kubernetes
    }
    fn deps(&self) -> Vec<String> {
        self.deps.clone()
    }
    fn inputs(&self) -> Value {
        // AMI pins arrive as upstream outputs, which the fingerprint covers.
        json!({"objects": desired(&self.config, &BTreeMap::new())})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(&self.cluster_step)).await?;
            let objs = desired(&self.config, &self.pins(cx));
            let mut entries = Vec::new();
            let mut problems = Vec::new();
            for (obj, t) in objs.iter().zip(targets(&client, &objs).await?) {
                let reference = apply::reference(obj);
                let t = match t {
                    Ok(t) => t,
                    // CRDs not installed yet (a plan before the first up): nothing to compare.
                    Err(ApplyError::UnknownKind { .. }) if is_karpenter(obj) => {
                        entries.push(json!({"ref": reference, "exists": false, "validated": false}));
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                cx.progress(format!("dry run {reference}"));
                let current = t.get().await?;
                match t.apply(obj, true, self.force_conflicts).await {
                    Ok(would) => entries.push(json!({
                        "ref": reference,
                        "exists": current.is_some(),
                        "validated": true,
                        "current": current.as_ref().map(|c| apply::projection(c, obj)),
                        "would": apply::projection(&would, obj),
                        "uid": current.as_ref().and_then(|c| c.pointer("/metadata/uid")).cloned(),
                        "generation": current.as_ref().and_then(|c| c.pointer("/metadata/generation")).cloned(),
                    })),
                    Err(e @ (ApplyError::Invalid { .. } | ApplyError::Conflict { .. })) => problems.push(e),
                    Err(e) => return Err(e.into()),
                }
            }
            if !problems.is_empty() {
                return Err(DryRunRefused { problems }.into());
            }
            Ok(json!({"objects": entries}))
        })
    }
    fn diff(&self, observed: &Value, _cx: &StepCx<'_>) -> Change {
        let mut fields = Vec::new();
        let (mut created, mut updated) = (Vec::new(), Vec::new());
        for e in observed["objects"].as_array().into_iter().flatten() {
            let r = e["ref"].as_str().unwrap_or_default();
            if e["exists"] != true {
                created.push(r.to_string());
                fields.push(FieldChange { field: r.into(), old: Value::Null, new: json!("create") });
                continue;
            }
            let ch = crate::json::field_changes(r, &e["current"], &e["would"]);
            if !ch.is_empty() {
                updated.push(r.to_string());
                fields.extend(ch);
            }
        }
        if fields.is_empty() {
            return Change::none();
        }
        let mut parts = Vec::new();
        if !created.is_empty() {
            parts.push(format!("create {}", created.join(", ")));
        }
        if !updated.is_empty() {
            parts.push(format!("update {}", updated.join(", ")));
        }
        let action = if updated.is_empty() { Action::Create } else { Action::Update };
        Change::new(action, parts.join("; ")).with_fields(fields)
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, observed: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(&self.cluster_step)).await?;
            let objs = desired(&self.config, &self.pins(cx));
            let entries: BTreeMap<String, &Value> =
                observed["objects"].as_array().into_iter().flatten().map(|e| (e["ref"].as_str().unwrap_or_default().to_string(), e)).collect();
            let mut out = Vec::new();
            for (obj, t) in objs.iter().zip(targets(&client, &objs).await?) {
                let t = t?;
                let e = entries.get(&t.reference);
                let unchanged = e.is_some_and(|e| e["exists"] == true && e["validated"] == true && e["current"] == e["would"]);
                let stored = if unchanged {
                    t.get().await?.unwrap_or_default()
                } else {
                    cx.progress(format!("applying {}", t.reference));
                    t.apply(obj, false, self.force_conflicts).await?
                };
                out.push(json!({"ref": t.reference, "uid": stored.pointer("/metadata/uid"), "generation": stored.pointer("/metadata/generation")}));
            }
            Ok(json!({"objects": out, "extras": extras_refs(&self.config)}))
        })
    }
    fn outputs_from(&self, observed: &Value) -> Value {
        let objects: Vec<Value> = observed["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| json!({"ref": e["ref"], "uid": e["uid"], "generation": e["generation"]}))
            .collect();
        json!({"objects": objects, "extras": extras_refs(&self.config)})
    }
}

fn extras_refs(c: &Config) -> Vec<Value> {
    c.extra_objects.iter().map(|o| json!({"ref": apply::reference(o), "apiVersion": o["apiVersion"], "kind": o["kind"],
        "name": o.pointer("/metadata/name"), "namespace": o.pointer("/metadata/namespace")})).collect()
}

/// Deletes what karpctl applied earlier and the config no longer has.
pub struct Prune {
    pub config: Arc<Config>,
    pub cluster_step: String,
    pub objects_step: String,
    /// `up --prune` or `--yes`: deleting is approved.
    pub allowed: bool,
    pub wait_timeout: Duration,
    pub conn: Arc<Connector>,
}

pub fn prune_id(cluster: &str) -> String {
    format!("prune/{cluster}")
}

impl Prune {
    fn selector(&self) -> String {
        crate::model::ownership::selector(&self.config.cluster.name)
    }
    fn keep(&self) -> BTreeSet<String> {
        let c = &self.config;
        c.node_pools
            .iter()
            .map(|p| format!("NodePool/{}", p.name))
            .chain(c.node_classes.iter().map(|n| format!("EC2NodeClass/{}", n.name)))
            .chain(c.extra_objects.iter().map(apply::reference))
            .collect()
    }
}

impl Step for Prune {
    fn id(&self) -> String {
        prune_id(&self.config.cluster.name)
    }
    fn kind(&self) -> &'static str {
        "prune"
    }
    fn layer(&self) -> crate::engine::Layer {
        crate::engine::Layer::Kubernetes
    }
    fn deps(&self) -> Vec<String> {
        vec![self.cluster_step.clone(), self.objects_step.clone()]
    }
    fn inputs(&self) -> Value {
        json!({"keep": self.keep()})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(&self.cluster_step)).await?;
            let keep = self.keep();
            let mut stale = Vec::new();
            // Pools before classes: a class in use by a pool cannot go first.
            for ar in [apply::node_pool_resource(), apply::node_class_resource()] {
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                let list = match api.list(&ListParams::default().labels(&self.selector())).await {
                    Ok(l) => l,
                    Err(kube::Error::Api(s)) if crate::kube::not_found(&s) => continue,
                    Err(e) => return Err(e.into()),
                };
                for o in list.items {
                    let r = format!("{}/{}", ar.kind, o.metadata.name.clone().unwrap_or_default());
                    if !keep.contains(&r) {
                        stale.push(json!({"ref": r, "apiVersion": ar.api_version, "kind": ar.kind, "name": o.metadata.name}));
                    }
                }
            }
            // Extra objects: remembered from the last run, since they carry no label of ours.
            for e in cx.previous.and_then(|p| p["extras"].as_array()).into_iter().flatten() {
                let r = e["ref"].as_str().unwrap_or_default();
                if keep.contains(r) {
                    continue;
                }
                let obj = json!({"apiVersion": e["apiVersion"], "kind": e["kind"], "metadata": {"name": e["name"], "namespace": e["namespace"]}});
                let obj = strip_nulls(obj);
                match apply::resolve(&client, &obj).await {
                    Ok(t) if t.get().await?.is_some() => stale.push(e.clone()),
                    Ok(_) | Err(ApplyError::UnknownKind { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(json!({"stale": stale}))
        })
    }
    fn diff(&self, observed: &Value, _cx: &StepCx<'_>) -> Change {
        let stale: Vec<&str> = observed["stale"].as_array().into_iter().flatten().filter_map(|s| s["ref"].as_str()).collect();
        if stale.is_empty() {
            return Change::none();
        }
        let fields = stale.iter().map(|r| FieldChange { field: r.to_string(), old: json!("exists"), new: Value::Null }).collect();
        let ch = Change::new(Action::Delete, format!("delete {} (no longer in the config; `up --prune` approves)", stale.join(", "))).with_fields(fields);
        if self.allowed {
            ch
        } else {
            ch.destructive()
        }
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, observed: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(&self.cluster_step)).await?;
            for s in observed["stale"].as_array().into_iter().flatten() {
                let obj = strip_nulls(json!({"apiVersion": s["apiVersion"], "kind": s["kind"], "metadata": {"name": s["name"], "namespace": s["namespace"]}}));
                let t = match apply::resolve(&client, &obj).await {
                    Ok(t) => t,
                    Err(ApplyError::UnknownKind { .. }) => continue,
                    Err(e) => return Err(e.into()),
                };
                cx.progress(format!("deleting {}", t.reference));
                t.delete().await?;
                // Karpenter finalizers drain a pool's nodes before it goes; wait for that.
                let started = tokio::time::Instant::now();
                let mut pace = crate::kube::Pace::new();
                while t.get().await?.is_some() {
                    if started.elapsed() >= self.wait_timeout {
                        anyhow::bail!(
                            "{} is still being deleted after {}s (Karpenter drains its nodes first; PodDisruptionBudgets may block it). \
                             Run `karpctl up --prune` again to keep waiting",
                            t.reference,
                            self.wait_timeout.as_secs()
                        );
                    }
                    cx.progress(format!("waiting for {} to be deleted ({}s)", t.reference, started.elapsed().as_secs()));
                    pace.wait().await;
                }
            }
            Ok(self.outputs_from(&json!({})))
        })
    }
    fn outputs_from(&self, _observed: &Value) -> Value {
        json!({"extras": extras_refs(&self.config)})
    }
}

fn strip_nulls(mut v: Value) -> Value {
    if let Some(m) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
        m.retain(|_, x| !x.is_null());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Arc<Config> {
        let yaml = include_bytes!("../../examples/default.yaml");
        Arc::new(crate::config::parse(std::path::Path::new("k.yaml"), yaml).expect("example config").config)
    }

    fn conn() -> Arc<Connector> {
        Arc::new(Connector::new(&Default::default(), aws_config::SdkConfig::builder().build(), "c"))
    }

    type Row<'a> = (&'a str, Value, Action, bool, &'a str, &'a [&'a str]);

    fn check(step: &dyn Step, context: &str, rows: Vec<Row<'_>>) {
        let up = BTreeMap::new();
        let ev = |_e: crate::engine::Event| {};
        let cx = StepCx::new("t", &up, None, &ev);
        for (name, observed, action, destructive, summary, fields) in rows {
            let c = step.diff(&observed, &cx);
            assert_eq!(c.action, action, "{context}{name}: action ({c:?})");
            assert_eq!(c.destructive, destructive, "{context}{name}: destructive ({c:?})");
            assert!(c.summary.contains(summary), "{context}{name}: summary {:?} lacks {summary:?}", c.summary);
            let got: Vec<&str> = c.fields.iter().map(|f| f.field.as_str()).collect();
            assert_eq!(got, fields, "{context}{name}: fields");
        }
    }

    #[test]
    fn diff_table() {
        let s = Objects { config: config(), cluster_step: "cluster/c".into(), amis_step: None, deps: vec![], force_conflicts: false, conn: conn() };
        let same = json!({"spec": {"amiSelectorTerms": [{"alias": "al2023@v20250101"}], "role": "KarpenterNodeRole-c"}});
        let moved = json!({"spec": {"amiSelectorTerms": [{"alias": "al2023@v20250201"}], "role": "KarpenterNodeRole-c"}});
        let pool = json!({"spec": {"limits": {"cpu": "1000"}}});
        let entry = |r: &str, current: &Value, would: &Value| json!({"ref": r, "exists": true, "validated": true, "current": current, "would": would, "uid": "u", "generation": 1});
        let new = |r: &str| json!({"ref": r, "exists": false, "validated": true, "current": null, "would": pool, "uid": null, "generation": null});
        let no_crds = |r: &str| json!({"ref": r, "exists": false, "validated": false});
        let rows: Vec<Row<'_>> = vec![
            ("nothing observed", json!({}), Action::None, false, "up to date", &[]),
            ("nothing to apply", json!({"objects": []}), Action::None, false, "up to date", &[]),
            ("all as applied", json!({"objects": [entry("EC2NodeClass/default", &same, &same), entry("NodePool/default", &pool, &pool)]}),
             Action::None, false, "up to date", &[]),
            ("new pool", json!({"objects": [entry("EC2NodeClass/default", &same, &same), new("NodePool/default")]}), Action::Create, false,
             "create NodePool/default", &["NodePool/default"]),
            ("CRDs not installed yet", json!({"objects": [no_crds("EC2NodeClass/default"), no_crds("NodePool/default")]}), Action::Create, false,
             "create EC2NodeClass/default, NodePool/default", &["EC2NodeClass/default", "NodePool/default"]),
            ("AMI moved", json!({"objects": [entry("EC2NodeClass/default", &same, &moved), entry("NodePool/default", &pool, &pool)]}),
             Action::Update, false, "update EC2NodeClass/default", &["EC2NodeClass/default.spec.amiSelectorTerms[0].alias"]),
            ("create and update", json!({"objects": [entry("EC2NodeClass/default", &same, &moved), new("NodePool/gpu")]}), Action::Update, false,
             "create NodePool/gpu; update EC2NodeClass/default", &["EC2NodeClass/default.spec.amiSelectorTerms[0].alias", "NodePool/gpu"]),
        ];
        check(&s, "", rows);
    }

    #[test]
    fn prune_diff_table() {
        let stale = json!({"stale": [
            {"ref": "NodePool/old", "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "name": "old"},
            {"ref": "EC2NodeClass/old", "apiVersion": "karpenter.k8s.aws/v1", "kind": "EC2NodeClass", "name": "old"},
        ]});
        for allowed in [false, true] {
            let p = Prune {
                config: config(),
                cluster_step: "cluster/c".into(),
                objects_step: "objects/c".into(),
                allowed,
                wait_timeout: Duration::from_secs(1),
                conn: conn(),
            };
            let rows: Vec<Row<'_>> = vec![
                ("nothing observed", json!({}), Action::None, false, "up to date", &[]),
                ("nothing stale", json!({"stale": []}), Action::None, false, "up to date", &[]),
                // Deleting is destructive unless `up --prune`/`--yes` approved it.
                ("stale pool and class", stale.clone(), Action::Delete, !allowed,
                 "delete NodePool/old, EC2NodeClass/old (no longer in the config", &["NodePool/old", "EC2NodeClass/old"]),
                ("stale extra object", json!({"stale": [{"ref": "ConfigMap/default/x", "apiVersion": "v1", "kind": "ConfigMap", "name": "x", "namespace": "default"}]}),
                 Action::Delete, !allowed, "delete ConfigMap/default/x", &["ConfigMap/default/x"]),
            ];
            check(&p, if allowed { "allowed, " } else { "not allowed, " }, rows);
        }
    }
}
