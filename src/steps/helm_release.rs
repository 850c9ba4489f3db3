/*!
Step `helm-release/<namespace>/<release>`: one Helm release (the Karpenter
controller, the NVIDIA device plugin) at a pinned chart version with values
rendered from the config and earlier steps' outputs. Helm runs only when the
chart version or the values differ from what is deployed; afterwards the step
waits for the release's Deployments or DaemonSets to roll out, with progress.
A deployed chart newer than the pin is a refused downgrade.
*/

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

use crate::engine::{Action, Change, FieldChange, Step, StepCx};
use crate::helm::ChartRef;
use crate::kube::Connector;
use crate::model::version::KarpenterVersion;

/// Computes the release's values from the config and upstream outputs.
pub type ValuesFn = Box<dyn Fn(&StepCx<'_>) -> anyhow::Result<Value> + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Deployment,
    DaemonSet,
}

pub struct HelmRelease {
    pub release: String,
    pub namespace: String,
    pub chart: ChartRef,
    /// The chart version wanted (for local charts: the version their Chart.yaml must have).
    pub version: String,
    /// Values as known offline, for the fingerprint.
    pub offline_values: Value,
    pub values: ValuesFn,
    pub workload: Workload,
    pub deps: Vec<String>,
    pub cluster_step: String,
    pub conn: Arc<Connector>,
    pub wait_timeout: Duration,
}

/// A Helm failure as a step error, ending with its `help:` line when there is one
/// (the step's error is what `up` prints and records).
pub fn helm_error(e: crate::helm::HelmError) -> anyhow::Error {
    e.with_help()
}

/// The pseudo-field of a change that only waits for pods.
const ROLLOUT: &str = "rollout";

pub fn id(namespace: &str, release: &str) -> String {
    format!("helm-release/{namespace}/{release}")
}

fn sha(v: &Value) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(serde_json::to_vec(v).expect("values serialize"));
    h.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Step for HelmRelease {
    fn id(&self) -> String {
        id(&self.namespace, &self.release)
    }
    fn kind(&self) -> &'static str {
        "helm-release"
    }
    fn layer(&self) -> crate::engine::Layer {
        crate::engine::Layer::Kubernetes
    }
    fn deps(&self) -> Vec<String> {
        self.deps.clone()
    }
    fn inputs(&self) -> Value {
        json!({"release": self.release, "namespace": self.namespace, "chart": self.chart.to_string(), "version": self.version, "values": self.offline_values})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let desired = (self.values)(cx)?;
            let facts = cx.output(&self.cluster_step);
            if let ChartRef::Local { path } = &self.chart {
                let meta = match crate::helm::chart_dir(&self.chart) {
                    Some(dir) => crate::helm::chart_dir_meta(dir),
                    None => self.conn.helm(facts).await?.show_chart(&self.chart).await,
                }
                .map_err(helm_error)?;
                if meta.version != self.version {
                    anyhow::bail!(
                        "the local chart {} is version {} but the config pins {}; use the chart for {} or change the pinned version",
                        path.display(),
                        meta.version,
                        self.version,
                        self.version
                    );
                }
            }
            cx.progress(format!("reading Helm release {}/{}", self.namespace, self.release));
            let client = self.conn.client(facts).await?;
            let release = crate::kube::helm_store::release(&client, &self.release, &self.namespace).await?;
            let values = release.as_ref().map(|r| r.values.clone()).unwrap_or_else(|| json!({}));
            if let Some(r) = &release {
                if let (Some(have), Some(want)) = (KarpenterVersion::parse(&r.chart_version), KarpenterVersion::parse(&self.version)) {
                    if have > want {
                        anyhow::bail!(
                            "Helm release {}/{} runs chart {} {have}, newer than the pinned {want}: karpctl does not downgrade; \
                             pin {have} or newer in the config",
                            self.namespace,
                            self.release,
                            r.chart()
                        );
                    }
                }
            }
            let ns_exists = Api::<Namespace>::all(client.clone()).get_opt(&self.namespace).await?.is_some();
            // A deployed release whose pods never came up (an earlier run timed out) still needs the wait.
            let not_rolled_out = match &release {
                Some(_) => pending(&client, &self.namespace, &self.release, self.workload).await?,
                None => Vec::new(),
            };
            Ok(json!({
                "notRolledOut": not_rolled_out,
                "release": release.map(|r| json!({"revision": r.revision, "status": r.status.as_str(), "chartVersion": r.chart_version})),
                "values": values,
                "desiredValues": desired,
                "namespaceExists": ns_exists,
            }))
        })
    }
    fn diff(&self, observed: &Value, _cx: &StepCx<'_>) -> Change {
        let want = &observed["desiredValues"];
        let Some(r) = observed["release"].as_object() else {
            return Change::new(Action::Create, format!("install {} {} in {}", self.release, self.version, self.namespace));
        };
        let mut fields = Vec::new();
        if r["chartVersion"] != json!(self.version) {
            fields.push(FieldChange { field: "chart.version".into(), old: r["chartVersion"].clone(), new: json!(self.version) });
        }
        if r["status"] != "deployed" {
            fields.push(FieldChange { field: "status".into(), old: r["status"].clone(), new: json!("deployed") });
        }
        fields.extend(crate::json::field_changes("values", &observed["values"], want));
        if fields.is_empty() {
            let waiting = observed["notRolledOut"].as_array().map(Vec::len).unwrap_or(0);
            if waiting == 0 {
                return Change::none();
            }
            return Change::new(Action::Update, format!("wait for {} to roll out ({})", self.release, observed["notRolledOut"]))
                .with_fields(vec![FieldChange { field: ROLLOUT.into(), old: observed["notRolledOut"].clone(), new: json!([]) }]);
        }
        Change::new(Action::Update, format!("upgrade {} in {} ({} change(s))", self.release, self.namespace, fields.len())).with_fields(fields)
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, observed: &'a Value, change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let facts = cx.output(&self.cluster_step);
            let values = &observed["desiredValues"];
            let only_wait = change.fields.len() == 1 && change.fields[0].field == ROLLOUT;
            let revision = if only_wait {
                observed["release"]["revision"].clone()
            } else {
                let helm = self.conn.helm(facts).await?;
                // karpctl's own earlier run was stopped while helm wrote this release (kill -9
                // takes helm along): Helm refuses any operation until that is undone. A pending
                // release karpctl did not leave is someone else's, and helm's error says so.
                let status = observed["release"]["status"].as_str().unwrap_or_default();
                if cx.resumed && status.starts_with("pending-") {
                    let revision = observed["release"]["revision"].as_u64().unwrap_or(1);
                    if status == "pending-install" || revision <= 1 {
                        cx.progress(format!("an earlier run stopped during helm's install of {}: uninstalling the unfinished release", self.release));
                        helm.uninstall(&self.release, &self.namespace).await.map_err(helm_error)?;
                    } else {
                        cx.progress(format!("an earlier run stopped during helm's {status} of {}: rolling it back first", self.release));
                        helm.rollback(&self.release, &self.namespace).await.map_err(helm_error)?;
                    }
                }
                cx.progress(format!("helm upgrade --install {} ({})", self.release, self.chart));
                json!(helm.upgrade_install(&self.release, &self.namespace, &self.chart, values).await.map_err(helm_error)?.revision)
            };
            let client = self.conn.client(facts).await?;
            wait_rollout(cx, &client, &self.namespace, &self.release, self.workload, self.wait_timeout).await?;
            Ok(json!({
                "release": self.release,
                "namespace": self.namespace,
                "revision": revision,
                "chartVersion": self.version,
                "valuesSha": sha(values),
                "createdNamespace": self.created_namespace(cx, observed),
            }))
        })
    }
    fn outputs_from(&self, observed: &Value) -> Value {
        json!({
            "release": self.release,
            "namespace": self.namespace,
            "revision": observed["release"]["revision"],
            "chartVersion": observed["release"]["chartVersion"],
            "valuesSha": sha(&observed["desiredValues"]),
            "createdNamespace": !observed["namespaceExists"].as_bool().unwrap_or(true),
        })
    }
}

impl HelmRelease {
    /// Whether karpctl made the namespace (kept true once recorded, so rollback knows).
    fn created_namespace(&self, cx: &StepCx<'_>, observed: &Value) -> bool {
        let before = cx.previous.and_then(|p| p["createdNamespace"].as_bool()).unwrap_or(false);
        before || !observed["namespaceExists"].as_bool().unwrap_or(true)
    }
}

/// Waits until every Deployment (or DaemonSet) of `release` has rolled out.
pub async fn wait_rollout(
    cx: &StepCx<'_>,
    client: &kube::Client,
    namespace: &str,
    release: &str,
    workload: Workload,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let mut pace = crate::kube::Pace::new();
    loop {
        let waited = started.elapsed();
        let pending = match pending(client, namespace, release, workload).await {
            Ok(p) => p,
            // The API server restarting or overloaded: keep waiting until the timeout.
            Err(e) if crate::kube::is_transient(&e) && waited < timeout => {
                cx.progress(format!("could not read {release}'s workloads ({e:#}); asking again"));
                pace.wait().await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if pending.is_empty() {
            return Ok(());
        }
        if waited >= timeout {
            anyhow::bail!(
                "{release} did not roll out within {}: {}; look at `kubectl -n {namespace} get pods -l app.kubernetes.io/instance={release}` \
                 and `kubectl -n {namespace} describe pods`",
                humantime::format_duration(Duration::from_secs(timeout.as_secs())),
                pending.join("; ")
            );
        }
        cx.progress(format!("waiting for {} ({}s)", pending.join(", "), waited.as_secs()));
        pace.wait().await;
    }
}

/// The release's workloads that have not rolled out, one line each.
async fn pending(client: &kube::Client, namespace: &str, release: &str, workload: Workload) -> anyhow::Result<Vec<String>> {
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    Ok(match workload {
        Workload::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
            let list = api.list(&lp).await.with_context(|| format!("listing Deployments of {release}"))?;
            list.items.iter().filter_map(deployment_pending).collect()
        }
        Workload::DaemonSet => {
            let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
            let list = api.list(&lp).await.with_context(|| format!("listing DaemonSets of {release}"))?;
            list.items.iter().filter_map(daemonset_pending).collect()
        }
    })
}

fn deployment_pending(d: &Deployment) -> Option<String> {
    let name = d.metadata.name.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let current = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let ok = current && st.updated_replicas.unwrap_or(0) >= want && st.available_replicas.unwrap_or(0) >= want;
    (!ok).then(|| format!("Deployment {name}: {}/{want} available", st.available_replicas.unwrap_or(0)))
}

fn daemonset_pending(d: &DaemonSet) -> Option<String> {
    let name = d.metadata.name.clone().unwrap_or_default();
    let st = d.status.clone().unwrap_or_default();
    let current = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let want = st.desired_number_scheduled;
    let ok = current && st.number_ready >= want && st.updated_number_scheduled.unwrap_or(0) >= want;
    (!ok).then(|| format!("DaemonSet {name}: {}/{want} ready", st.number_ready))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::diff_table::{check, quiet_cx, Row};

    #[test]
    fn diff_table() {
        let s = HelmRelease {
            release: "karpenter".into(),
            namespace: "kube-system".into(),
            chart: ChartRef::Remote { reference: "oci://public.ecr.aws/karpenter/karpenter".into(), version: "1.15.0".into() },
            version: "1.15.0".into(),
            offline_values: json!({}),
            values: Box::new(|_cx| Ok(json!({"replicas": 2}))),
            workload: Workload::Deployment,
            deps: vec![],
            cluster_step: "cluster/c".into(),
            conn: Arc::new(Connector::new(&Default::default(), aws_config::SdkConfig::builder().build(), "c")),
            wait_timeout: Duration::from_secs(1),
        };
        let want = json!({"replicas": 2, "settings": {"clusterName": "c"}});
        let obs = |chart: &str, status: &str, values: Value, not_rolled_out: Value| {
            json!({"notRolledOut": not_rolled_out, "release": {"revision": 3, "status": status, "chartVersion": chart},
                   "values": values, "desiredValues": want, "namespaceExists": true})
        };
        let other = json!({"replicas": 1, "settings": {"clusterName": "c"}});
        let pods = json!(["Deployment karpenter: 1/2 available"]);
        let rows: Vec<Row> = vec![
            ("not installed", json!({"notRolledOut": [], "release": null, "values": {}, "desiredValues": want, "namespaceExists": false}),
             Action::Create, false, "install karpenter 1.15.0 in kube-system", &[]),
            ("deployed and rolled out", obs("1.15.0", "deployed", want.clone(), json!([])), Action::None, false, "up to date", &[]),
            ("rollout not read", obs("1.15.0", "deployed", want.clone(), Value::Null), Action::None, false, "up to date", &[]),
            ("pods not rolled out", obs("1.15.0", "deployed", want.clone(), pods.clone()), Action::Update, false,
             "wait for karpenter to roll out", &["rollout"]),
            ("older chart", obs("1.14.0", "deployed", want.clone(), json!([])), Action::Update, false,
             "upgrade karpenter in kube-system (1 change(s))", &["chart.version"]),
            ("failed release", obs("1.15.0", "failed", want.clone(), json!([])), Action::Update, false, "(1 change(s))", &["status"]),
            ("values drifted", obs("1.15.0", "deployed", other.clone(), json!([])), Action::Update, false, "(1 change(s))", &["values.replicas"]),
            ("values drifted and pods pending: upgrade, not wait", obs("1.15.0", "deployed", other.clone(), pods.clone()), Action::Update, false,
             "upgrade karpenter", &["values.replicas"]),
            ("everything differs", obs("1.14.0", "pending-upgrade", json!({}), json!([])), Action::Update, false, "(4 change(s))",
             &["chart.version", "status", "values.replicas", "values.settings"]),
        ];
        let cx = quiet_cx(None);
        for (name, observed, action, destructive, summary, fields) in rows {
            let c = s.diff(&observed, &cx);
            check(name, &c, action, destructive, summary, fields);
        }
    }
}
