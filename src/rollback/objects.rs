/*!
The Kubernetes side of a rollback after the nodes are gone:
`rollback/nodeclasses` deletes the EC2NodeClasses karpctl applied (their
finalizers let the controller remove its instance profiles and launch
templates, so the controller is still running here); `rollback/releases`
uninstalls the device plugin and then the controller, and deletes a namespace
only when the `up` record says karpctl created it; `rollback/crds` (only with
`--delete-crds`) deletes the Karpenter CRDs, which deletes every object of
their kinds that is left.
*/

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{json, Value};

use super::{controller_available, controller_text, list_kind, strings, CLUSTER};
use crate::engine::{Action, Change, FieldChange, Step, StepCx};
use crate::kube::apply::{node_class_resource, node_claim_resource, node_pool_resource};
use crate::kube::Connector;
use crate::steps::helm_release::helm_error;

/// The finalizer through which Karpenter cleans up after an EC2NodeClass.
pub const CLASS_FINALIZER: &str = "karpenter.k8s.aws/termination";
/// Namespaces a rollback never deletes, whoever created them.
const PROTECTED: [&str; 4] = ["kube-system", "kube-public", "kube-node-lease", "default"];

fn names(objs: &[DynamicObject]) -> Vec<String> {
    objs.iter().filter_map(|o| o.metadata.name.clone()).collect()
}


fn kept_outputs(o: &Value) -> Value {
    super::unchanged(&o["previous"], json!({"removed": []}))
}

// ---------------------------------------------------------------------------------------------
// EC2NodeClasses
// ---------------------------------------------------------------------------------------------

pub struct NodeClasses {
    pub cluster: String,
    pub namespace: String,
    /// The EC2NodeClasses the `up` record says karpctl applied (`EC2NodeClass/<name>`).
    pub recorded: Vec<String>,
    pub deps: Vec<String>,
    pub force: bool,
    pub timeout: Duration,
    pub conn: Arc<Connector>,
}

impl Step for NodeClasses {
    fn id(&self) -> String {
        super::NODECLASSES.into()
    }
    fn kind(&self) -> &'static str {
        "rollback-nodeclasses"
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
        json!({"selector": crate::model::ownership::selector(&self.cluster), "force": self.force})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(CLUSTER)).await?;
            cx.progress("reading EC2NodeClasses");
            let classes = list_kind(&client, &node_class_resource(), &ListParams::default().labels(&crate::model::ownership::selector(&self.cluster))).await?.unwrap_or_default();
            let claims = list_kind(&client, &node_claim_resource(), &ListParams::default()).await?.unwrap_or_default();
            let mut users = Vec::new();
            for c in &classes {
                let name = c.metadata.name.clone().unwrap_or_default();
                let n = claims.iter().filter(|nc| nc.data["spec"]["nodeClassRef"]["name"].as_str() == Some(name.as_str())).count();
                users.push(json!({"name": name, "nodeClaims": n, "deleting": c.metadata.deletion_timestamp.is_some()}));
            }
            let gone: Vec<String> = self.recorded.iter().filter(|r| !users.iter().any(|u| **r == format!("EC2NodeClass/{}", u["name"].as_str().unwrap_or("")))).cloned().collect();
            Ok(json!({"classes": users, "gone": gone, "controller": controller_available(&client, &self.namespace).await?, "previous": super::carried(cx)}))
        })
    }
    fn diff(&self, o: &Value, _cx: &StepCx<'_>) -> Change {
        let classes: Vec<&Value> = o["classes"].as_array().into_iter().flatten().collect();
        if classes.is_empty() {
            return Change::none();
        }
        let list: Vec<&str> = classes.iter().filter_map(|c| c["name"].as_str()).collect();
        let controller = o["controller"].as_i64().map(|n| n as i32);
        let how = match controller {
            Some(n) if n > 0 => "Karpenter removes their instance profiles and launch templates first".to_string(),
            _ if self.force => format!("the controller is {}: --force releases their finalizers, leaving instance profiles and launch templates to `--purge`", controller_text(controller)),
            _ => format!("the controller is {}: nothing releases their finalizers without --force", controller_text(controller)),
        };
        let fields = classes
            .iter()
            .map(|c| FieldChange {
                field: format!("EC2NodeClass/{}", c["name"].as_str().unwrap_or("?")),
                old: json!(format!("exists, {} NodeClaim(s) use it", c["nodeClaims"])),
                new: Value::Null,
            })
            .collect();
        Change::new(Action::Delete, format!("delete EC2NodeClass(es) {} ({how})", list.join(", "))).with_fields(fields)
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, o: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(CLUSTER)).await?;
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &node_class_resource());
            let list: Vec<String> = o["classes"].as_array().into_iter().flatten().filter_map(|c| c["name"].as_str().map(String::from)).collect();
            for c in &list {
                cx.progress(format!("deleting EC2NodeClass {c}"));
                match api.delete(c, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if crate::kube::not_found(&s) => {}
                    Err(e) => return Err(anyhow::Error::from(e).context(format!("deleting EC2NodeClass {c}"))),
                }
            }
            let started = tokio::time::Instant::now();
            let mut pace = crate::kube::Pace::new();
            let mut released = Vec::new();
            // Without a controller nothing will release the finalizer; a short grace, then say so.
            let grace = self.timeout.min(Duration::from_secs(15));
            loop {
                let mut left = Vec::new();
                for c in &list {
                    if let Some(obj) = api.get_opt(c).await.with_context(|| format!("reading EC2NodeClass {c}"))? {
                        left.push(obj);
                    }
                }
                if left.is_empty() {
                    break;
                }
                let available = controller_available(&client, &self.namespace).await?;
                let healthy = available.is_some_and(|n| n > 0);
                if !healthy && self.force {
                    for obj in &left {
                        let name = obj.metadata.name.clone().unwrap_or_default();
                        let rest: Vec<String> = obj.metadata.finalizers.iter().flatten().filter(|f| *f != CLASS_FINALIZER).cloned().collect();
                        cx.progress(format!("--force: releasing the {CLASS_FINALIZER} finalizer of EC2NodeClass {name}"));
                        let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": obj.metadata.resource_version}});
                        match api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await {
                            Ok(_) => released.push(name),
                            Err(kube::Error::Api(s)) if crate::kube::not_found(&s) || s.is_conflict() => {}
                            Err(e) => return Err(anyhow::Error::from(e).context(format!("releasing EC2NodeClass {name}"))),
                        }
                    }
                } else if (!healthy && started.elapsed() >= grace) || started.elapsed() >= self.timeout {
                    let names = names(&left).join(", ");
                    if healthy {
                        anyhow::bail!(
                            "EC2NodeClass(es) {names} still being deleted after {}s (Karpenter keeps a class while NodeClaims use it)\n\
                             help: look at `kubectl get nodeclaims` and `kubectl describe ec2nodeclass`, then run `karpctl rollback` again",
                            self.timeout.as_secs()
                        );
                    }
                    anyhow::bail!(
                        "EC2NodeClass(es) {names} wait for the {CLASS_FINALIZER} finalizer, but the controller is {}\n\
                         help: start the controller again and run `karpctl rollback`, or run `karpctl rollback --force --purge` to release the \
                         finalizers and sweep the instance profiles and launch templates Karpenter would have deleted",
                        controller_text(available)
                    );
                }
                cx.progress(format!("waiting for EC2NodeClass(es) {} to be deleted ({}s)", names(&left).join(", "), started.elapsed().as_secs()));
                pace.wait().await;
            }
            let mut removed: Vec<String> = strings(&o["gone"]);
            removed.extend(list.iter().map(|c| format!("EC2NodeClass/{c}")));
            let mut out = json!({"removed": super::removed(cx.previous, &removed)});
            if !released.is_empty() {
                out["finalizersReleased"] = json!(released);
            }
            Ok(out)
        })
    }
    fn outputs_from(&self, o: &Value) -> Value {
        super::unchanged(&o["previous"], json!({"removed": o["gone"]}))
    }
}

// ---------------------------------------------------------------------------------------------
// Helm releases (and a namespace karpctl created)
// ---------------------------------------------------------------------------------------------

/// A release to uninstall, with its `up` record (which says whether karpctl made the namespace).
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub recorded: Option<Value>,
}

pub struct Releases {
    pub cluster: String,
    /// The controller's namespace.
    pub namespace: String,
    /// In uninstall order: the controller last.
    pub releases: Vec<Release>,
    pub deps: Vec<String>,
    pub timeout: Duration,
    pub conn: Arc<Connector>,
}

impl Releases {
    fn created_namespaces(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .releases
            .iter()
            .filter(|r| r.recorded.as_ref().and_then(|o| o["createdNamespace"].as_bool()) == Some(true))
            .map(|r| r.namespace.clone())
            .filter(|ns| !PROTECTED.contains(&ns.as_str()))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Step for Releases {
    fn id(&self) -> String {
        super::RELEASES.into()
    }
    fn kind(&self) -> &'static str {
        "rollback-releases"
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
        json!({"releases": self.releases.iter().map(|r| json!({"name": r.name, "namespace": r.namespace})).collect::<Vec<_>>()})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let facts = cx.output(CLUSTER);
            let client = self.conn.client(facts).await?;
            let mut present = Vec::new();
            for r in &self.releases {
                cx.progress(format!("reading Helm release {}/{}", r.namespace, r.name));
                if let Some(rel) = crate::kube::helm_store::release(&client, &r.name, &r.namespace).await? {
                    if rel.status.as_str() != "uninstalled" {
                        present.push(json!({"name": r.name, "namespace": r.namespace, "chart": rel.chart(), "status": rel.status.as_str()}));
                    }
                }
            }
            let ns_api = Api::<Namespace>::all(client.clone());
            let mut namespaces = Vec::new();
            for ns in self.created_namespaces() {
                if ns_api.get_opt(&ns).await.with_context(|| format!("reading namespace {ns}"))?.is_some() {
                    namespaces.push(ns);
                }
            }
            // What the controller would still be needed for; `managed` ones are karpctl's,
            // which the steps before this one delete.
            let pools = list_kind(&client, &node_pool_resource(), &ListParams::default()).await?.unwrap_or_default();
            let selector = crate::model::ownership::selector(&self.cluster);
            let ours: Vec<String> = pools
                .iter()
                .filter(|p| {
                    let l = p.metadata.labels.clone().unwrap_or_default();
                    selector.split(',').all(|kv| kv.split_once('=').is_some_and(|(k, v)| l.get(k).map(String::as_str) == Some(v)))
                })
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            let mut leftovers: Vec<Value> = names(&pools).into_iter().map(|n| json!({"ref": format!("NodePool/{n}"), "managed": ours.contains(&n)})).collect();
            for c in list_kind(&client, &node_claim_resource(), &ListParams::default()).await?.unwrap_or_default() {
                let pool = c.metadata.labels.as_ref().and_then(|l| l.get(super::POOL_LABEL)).cloned().unwrap_or_default();
                leftovers.push(json!({"ref": format!("NodeClaim/{}", c.metadata.name.unwrap_or_default()), "managed": ours.contains(&pool)}));
            }
            Ok(json!({"releases": present, "namespaces": namespaces, "leftovers": leftovers, "previous": super::carried(cx)}))
        })
    }
    fn diff(&self, o: &Value, cx: &StepCx<'_>) -> Change {
        let releases: Vec<&Value> = o["releases"].as_array().into_iter().flatten().collect();
        let namespaces = strings(&o["namespaces"]);
        if releases.is_empty() && namespaces.is_empty() {
            return Change::none();
        }
        let mut parts = Vec::new();
        if !releases.is_empty() {
            let list: Vec<String> = releases.iter().map(|r| format!("{} ({})", r["name"].as_str().unwrap_or("?"), r["namespace"].as_str().unwrap_or("?"))).collect();
            parts.push(format!("helm uninstall {}", list.join(", ")));
        }
        if !namespaces.is_empty() {
            parts.push(format!("delete namespace(s) {} (karpctl created them)", namespaces.join(", ")));
        }
        let mut fields: Vec<FieldChange> = releases
            .iter()
            .map(|r| FieldChange {
                field: format!("helm-release/{}/{}", r["namespace"].as_str().unwrap_or("?"), r["name"].as_str().unwrap_or("?")),
                old: json!(format!("{} {}", r["chart"].as_str().unwrap_or("?"), r["status"].as_str().unwrap_or("?"))),
                new: Value::Null,
            })
            .collect();
        fields.extend(namespaces.iter().map(|n| FieldChange { field: format!("Namespace/{n}"), old: json!("exists"), new: Value::Null }));
        // In a plan the steps before this one have not deleted karpctl's own objects yet.
        let upstream_pending = self.deps.iter().any(|d| cx.output(d).and_then(Value::as_str) == Some(crate::engine::runner::KNOWN_AFTER_APPLY));
        let leftovers: Vec<String> = o["leftovers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|l| !(upstream_pending && l["managed"] == true))
            .filter_map(|l| l["ref"].as_str().map(String::from))
            .collect();
        let controller_there = releases.iter().any(|r| r["name"] == "karpenter");
        if controller_there && !leftovers.is_empty() {
            parts.push(format!(
                "{} Karpenter object(s) remain ({}): without the controller their nodes are never cleaned up",
                leftovers.len(),
                leftovers.join(", ")
            ));
            return Change::new(Action::Delete, parts.join("; ")).with_fields(fields).destructive();
        }
        Change::new(Action::Delete, parts.join("; ")).with_fields(fields)
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, o: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let facts = cx.output(CLUSTER);
            let mut removed = Vec::new();
            let present: Vec<&Value> = o["releases"].as_array().into_iter().flatten().collect();
            if !present.is_empty() {
                let helm = self.conn.helm(facts).await?;
                for r in &self.releases {
                    if !present.iter().any(|p| p["name"] == r.name.as_str() && p["namespace"] == r.namespace.as_str()) {
                        continue;
                    }
                    cx.progress(format!("helm uninstall {} -n {}", r.name, r.namespace));
                    helm.uninstall(&r.name, &r.namespace).await.map_err(helm_error)?;
                    removed.push(format!("helm release {}/{}", r.namespace, r.name));
                }
            }
            let namespaces = strings(&o["namespaces"]);
            if !namespaces.is_empty() {
                let client = self.conn.client(facts).await?;
                let api = Api::<Namespace>::all(client);
                for ns in &namespaces {
                    cx.progress(format!("deleting namespace {ns}"));
                    match api.delete(ns, &DeleteParams::background()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if crate::kube::not_found(&s) => {}
                        Err(e) => return Err(anyhow::Error::from(e).context(format!("deleting namespace {ns}"))),
                    }
                }
                super::wait_gone(cx, "namespace(s)", &namespaces, self.timeout, |ns| {
                    let api = api.clone();
                    async move { api.get_opt(&ns).await.with_context(|| format!("reading namespace {ns}")).map(|o| o.is_some()) }
                }, |left| format!(
                    "namespace(s) {} still terminating after {}s\nhelp: `kubectl get namespace {} -o yaml` shows what holds it; then run `karpctl rollback` again",
                    left.join(", "),
                    self.timeout.as_secs(),
                    left[0]
                ))
                .await?;
                removed.extend(namespaces.iter().map(|n| format!("Namespace/{n}")));
            }
            Ok(json!({"removed": super::removed(cx.previous, &removed)}))
        })
    }
    fn outputs_from(&self, o: &Value) -> Value {
        kept_outputs(o)
    }
}

// ---------------------------------------------------------------------------------------------
// CRDs
// ---------------------------------------------------------------------------------------------

pub struct Crds {
    pub deps: Vec<String>,
    pub timeout: Duration,
    pub conn: Arc<Connector>,
}

/// Karpenter's CRDs that karpctl applied (or adopted): its version annotation or label.
fn karpctl_crd(c: &CustomResourceDefinition) -> bool {
    let group = c.spec.group.as_str();
    let stamped = c.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(crate::model::ownership::VERSION_ANNOTATION))
        || c.metadata.labels.as_ref().and_then(|l| l.get(crate::model::ownership::MANAGED_BY)).is_some_and(|v| v == "karpctl");
    (group == "karpenter.sh" || group == "karpenter.k8s.aws") && stamped
}

impl Step for Crds {
    fn id(&self) -> String {
        super::CRDS.into()
    }
    fn kind(&self) -> &'static str {
        "rollback-crds"
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
        json!({"groups": ["karpenter.sh", "karpenter.k8s.aws"]})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(CLUSTER)).await?;
            cx.progress("reading CRDs");
            let api: Api<CustomResourceDefinition> = Api::all(client.clone());
            let crds: Vec<String> = api.list(&ListParams::default()).await.context("listing CRDs")?.items.iter().filter(|c| karpctl_crd(c)).filter_map(|c| c.metadata.name.clone()).collect();
            let claims = list_kind(&client, &node_claim_resource(), &ListParams::default()).await?.unwrap_or_default();
            Ok(json!({"crds": crds, "nodeClaims": names(&claims), "previous": super::carried(cx)}))
        })
    }
    fn diff(&self, o: &Value, _cx: &StepCx<'_>) -> Change {
        let crds = strings(&o["crds"]);
        if crds.is_empty() {
            return Change::none();
        }
        let claims = strings(&o["nodeClaims"]);
        let fields = crds.iter().map(|c| FieldChange { field: format!("CustomResourceDefinition/{c}"), old: json!("exists"), new: Value::Null }).collect();
        let summary = format!("delete CRD(s) {}: this deletes every NodePool, EC2NodeClass and NodeClaim still in the cluster", crds.join(", "));
        if claims.is_empty() {
            Change::new(Action::Delete, summary).with_fields(fields)
        } else {
            Change::new(Action::Delete, format!("{summary}, including {} NodeClaim(s) ({}) whose instances nobody would terminate", claims.len(), claims.join(", ")))
                .with_fields(fields)
                .destructive()
        }
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, o: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(CLUSTER)).await?;
            let api: Api<CustomResourceDefinition> = Api::all(client);
            let crds = strings(&o["crds"]);
            for c in &crds {
                cx.progress(format!("deleting CRD {c}"));
                match api.delete(c, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if crate::kube::not_found(&s) => {}
                    Err(e) => return Err(anyhow::Error::from(e).context(format!("deleting CRD {c}"))),
                }
            }
            super::wait_gone(cx, "CRD(s)", &crds, self.timeout, |c| {
                let api = api.clone();
                async move { api.get_opt(&c).await.with_context(|| format!("reading CRD {c}")).map(|o| o.is_some()) }
            }, |left| format!(
                "CRD(s) {} still being deleted after {}s (the API server deletes their objects first)\nhelp: run `karpctl rollback --delete-crds` again",
                left.join(", "),
                self.timeout.as_secs()
            ))
            .await?;
            let removed: Vec<String> = crds.iter().map(|c| format!("CustomResourceDefinition/{c}")).collect();
            Ok(json!({"removed": super::removed(cx.previous, &removed)}))
        })
    }
    fn outputs_from(&self, o: &Value) -> Value {
        kept_outputs(o)
    }
}
