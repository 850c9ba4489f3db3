/*!
Step `crds/karpenter`: installs or upgrades the Karpenter CRDs shipped in the
pinned controller chart (`helm show crds`), by server-side apply with field
manager `karpctl`, before the controller. CRDs that exist without karpctl's
version annotation (kubectl, a `karpenter-crd` Helm release) are adopted;
CRDs already at a newer Karpenter version are a refused downgrade.
*/

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

use crate::engine::{Action, Change, FieldChange, Step, StepCx};
use crate::helm::ChartRef;
use crate::model::ownership::FIELD_MANAGER;
use crate::kube::Connector;
use crate::model::version::KarpenterVersion;
use crate::model::ownership::VERSION_ANNOTATION;

pub const ID: &str = "crds/karpenter";

pub struct Crds {
    pub version: String,
    pub chart: ChartRef,
    pub cluster_step: String,
    pub conn: Arc<Connector>,
}

impl Crds {
    async fn desired(&self, cx: &StepCx<'_>) -> anyhow::Result<Vec<Value>> {
        cx.progress(format!("reading the CRDs of {}", self.chart));
        let docs = match crate::helm::chart_dir(&self.chart) {
            Some(dir) => crate::helm::chart_dir_crds(dir),
            None => self.conn.helm(cx.output(&self.cluster_step)).await?.show_crds(&self.chart).await,
        }
        .map_err(super::helm_release::helm_error)?;
        let mut out = Vec::new();
        for d in docs {
            let v: Value = serde_yaml::from_str(&d).with_context(|| format!("parsing a CRD of {}", self.chart))?;
            if v["kind"] != "CustomResourceDefinition" {
                continue;
            }
            out.push(self.stamp(v));
        }
        if out.is_empty() {
            anyhow::bail!("the chart {} ships no CRDs; is it the Karpenter controller chart?", self.chart);
        }
        Ok(out)
    }

    /// Marks a CRD as applied by karpctl for this Karpenter version.
    fn stamp(&self, mut crd: Value) -> Value {
        let meta = crd["metadata"].as_object_mut().expect("a CRD has metadata");
        meta.entry("annotations").or_insert_with(|| json!({}))[VERSION_ANNOTATION] = json!(self.version);
        meta.entry("labels").or_insert_with(|| json!({}))[crate::model::ownership::MANAGED_BY] = json!("karpctl");
        // Fields a server fills in must not be sent.
        meta.remove("creationTimestamp");
        if let Some(o) = crd.as_object_mut() {
            o.remove("status");
        }
        crd
    }
}

/// Refuses a config whose Karpenter version is older than the one the state
/// records as installed, before any step runs: a downgrade would otherwise roll
/// the stack's policies back under a newer controller.
pub fn refuse_recorded_downgrade(state: &crate::state::State, version: &str) -> anyhow::Result<()> {
    let recorded = state.steps.get(ID).and_then(|r| r.outputs["version"].as_str()).and_then(KarpenterVersion::parse);
    if let (Some(have), Some(want)) = (recorded, KarpenterVersion::parse(version)) {
        if have > want {
            anyhow::bail!(
                "karpenter.version {want} is older than the installed Karpenter {have}: karpctl does not downgrade \
                 (the CRDs, the controller and its IAM policies would disagree); set karpenter.version: {have} or newer"
            );
        }
    }
    Ok(())
}

/// Why applying `desired` over the live CRD `live` would strand stored objects: versions in
/// the live CRD's `status.storedVersions` that the new CRD no longer serves. The API server
/// refuses such an update, and objects still stored in a dropped version would become
/// unreadable; the fix is to rewrite them in a kept version and then trim storedVersions.
pub fn dropped_stored_versions(live: &Value, desired: &Value) -> Option<String> {
    let name = name_of(desired);
    let kept: Vec<&str> = desired.pointer("/spec/versions").and_then(Value::as_array)?.iter().filter_map(|v| v["name"].as_str()).collect();
    let stored: Vec<&str> = live.pointer("/status/storedVersions").and_then(Value::as_array)?.iter().filter_map(Value::as_str).collect();
    let dropped: Vec<&str> = stored.iter().copied().filter(|v| !kept.contains(v)).collect();
    if dropped.is_empty() {
        return None;
    }
    let storage = desired
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
        .and_then(|v| v["name"].as_str())
        .unwrap_or("v1");
    let plural = desired.pointer("/spec/names/plural").and_then(Value::as_str).unwrap_or(&name);
    Some(format!(
        "CRD {name} still lists stored version(s) {} that the new CRDs drop (they serve {}); the API server refuses the update \
         and objects stored that way would be unreadable.\nfix: rewrite every object in {storage} with the installed controller, \
         e.g. `kubectl get {plural} -o json | kubectl replace -f -`, then \
         `kubectl patch crd {name} --subresource=status --type=merge -p '{{\"status\":{{\"storedVersions\":[\"{storage}\"]}}}}'`, and run `karpctl up` again",
        dropped.join(", "),
        kept.join(", ")
    ))
}

fn name_of(crd: &Value) -> String {
    crd.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Who put an existing CRD there, for the plan.
fn owner(existing: &Value) -> String {
    let ann = |k: &str| existing.pointer(&format!("/metadata/annotations/{}", k.replace('/', "~1"))).and_then(Value::as_str);
    if let Some(v) = ann(VERSION_ANNOTATION) {
        return format!("karpctl (Karpenter {v})");
    }
    if let Some(r) = ann("meta.helm.sh/release-name") {
        return format!("Helm release {r}");
    }
    "another tool (no karpctl or Helm ownership)".into()
}

impl Step for Crds {
    fn id(&self) -> String {
        ID.into()
    }
    fn kind(&self) -> &'static str {
        "karpenter-crds"
    }
    fn layer(&self) -> crate::engine::Layer {
        crate::engine::Layer::Kubernetes
    }
    fn deps(&self) -> Vec<String> {
        vec![self.cluster_step.clone()]
    }
    fn inputs(&self) -> Value {
        json!({"version": self.version, "chart": self.chart.to_string()})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let desired = self.desired(cx).await?;
            let client = self.conn.client(cx.output(&self.cluster_step)).await?;
            let api: Api<CustomResourceDefinition> = Api::all(client);
            let want = KarpenterVersion::parse(&self.version);
            let mut existing = Vec::new();
            for crd in &desired {
                let name = name_of(crd);
                let found = api.get_opt(&name).await.with_context(|| format!("reading CRD {name}"))?;
                let found = found.map(|f| serde_json::to_value(f).expect("CRDs serialize"));
                let version = found
                    .as_ref()
                    .and_then(|f| f.pointer(&format!("/metadata/annotations/{}", VERSION_ANNOTATION.replace('/', "~1"))))
                    .and_then(Value::as_str)
                    .map(String::from);
                if let (Some(have), Some(want)) = (version.as_deref().and_then(KarpenterVersion::parse), want) {
                    if have > want {
                        anyhow::bail!(
                            "CRD {name} is at Karpenter {have}, newer than karpenter.version {want}: downgrading CRDs is not supported \
                             (fields the newer controller stored would be lost); set karpenter.version: {have} or newer"
                        );
                    }
                }
                if let Some(f) = &found {
                    if let Some(why) = dropped_stored_versions(f, crd) {
                        anyhow::bail!("{why}");
                    }
                }
                existing.push(json!({
                    "name": name,
                    "exists": found.is_some(),
                    "version": version,
                    "owner": found.as_ref().map(owner),
                }));
            }
            Ok(json!({"existing": existing, "desired": desired}))
        })
    }
    fn diff(&self, observed: &Value, _cx: &StepCx<'_>) -> Change {
        let mut fields = Vec::new();
        let mut create = true;
        for e in observed["existing"].as_array().into_iter().flatten() {
            let name = e["name"].as_str().unwrap_or_default();
            if !e["exists"].as_bool().unwrap_or(false) {
                fields.push(FieldChange { field: name.into(), old: Value::Null, new: json!(self.version) });
                continue;
            }
            create = false;
            if e["version"].as_str() != Some(self.version.as_str()) {
                fields.push(FieldChange { field: name.into(), old: e["owner"].clone(), new: json!(format!("karpctl (Karpenter {})", self.version)) });
            }
        }
        if fields.is_empty() {
            return Change::none();
        }
        let (action, what) = if create { (Action::Create, "install") } else { (Action::Update, "upgrade or adopt") };
        Change::new(action, format!("{what} {} Karpenter {} CRD(s)", fields.len(), self.version)).with_fields(fields)
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, observed: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(&self.cluster_step)).await?;
            let api: Api<CustomResourceDefinition> = Api::all(client);
            // CRDs are karpctl's to manage: take over fields another applier set (adoption).
            let pp = PatchParams::apply(FIELD_MANAGER).force();
            let desired = observed["desired"].as_array().cloned().unwrap_or_default();
            for crd in &desired {
                let name = name_of(crd);
                cx.progress(format!("applying CRD {name}"));
                api.patch(&name, &pp, &Patch::Apply(crd)).await.with_context(|| format!("applying CRD {name}"))?;
            }
            for crd in &desired {
                let name = name_of(crd);
                cx.progress(format!("waiting for CRD {name} to be established"));
                wait_established(&api, &name, Duration::from_secs(60)).await?;
            }
            Ok(self.outputs_from(observed))
        })
    }
    fn outputs_from(&self, observed: &Value) -> Value {
        let names: Vec<Value> = observed["desired"].as_array().into_iter().flatten().map(|c| json!(name_of(c))).collect();
        json!({"version": self.version, "crds": names})
    }
}

async fn wait_established(api: &Api<CustomResourceDefinition>, name: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pace = crate::kube::Pace::new();
    loop {
        let crd = match api.get(name).await.with_context(|| format!("reading CRD {name}")) {
            Ok(c) => c,
            // The API server restarting or overloaded: keep waiting until the deadline.
            Err(e) if crate::kube::is_transient(&e) && tokio::time::Instant::now() < deadline => {
                pace.wait().await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        if established {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("CRD {name} was not established within {}s", timeout.as_secs());
        }
        pace.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::diff_table::{check, quiet_cx, Row};

    fn crd(versions: &[(&str, bool)]) -> Value {
        let vs: Vec<Value> = versions.iter().map(|(n, storage)| json!({"name": n, "served": true, "storage": storage})).collect();
        json!({"metadata": {"name": "nodepools.karpenter.sh"}, "spec": {"names": {"plural": "nodepools"}, "versions": vs}})
    }

    #[test]
    fn a_stored_version_the_new_crds_drop_is_refused_with_the_migration() {
        // A cluster that ran v1beta1 (before Karpenter 1.0) and never trimmed storedVersions.
        let live = json!({"status": {"storedVersions": ["v1beta1", "v1"]}});
        let why = dropped_stored_versions(&live, &crd(&[("v1", true)])).expect("refused");
        assert!(why.contains("stored version(s) v1beta1") && why.contains("they serve v1"), "{why}");
        assert!(why.contains("kubectl get nodepools -o json | kubectl replace -f -"), "{why}");
        assert!(why.contains(r#"--subresource=status --type=merge -p '{"status":{"storedVersions":["v1"]}}'"#), "{why}");
        // Trimmed, or still served: nothing to refuse.
        assert_eq!(dropped_stored_versions(&json!({"status": {"storedVersions": ["v1"]}}), &crd(&[("v1", true)])), None);
        assert_eq!(dropped_stored_versions(&live, &crd(&[("v1beta1", false), ("v1", true)])), None);
        assert_eq!(dropped_stored_versions(&json!({}), &crd(&[("v1", true)])), None);
    }

    #[test]
    fn diff_table() {
        let s = Crds {
            version: "1.15.0".into(),
            chart: ChartRef::Remote { reference: "oci://public.ecr.aws/karpenter/karpenter".into(), version: "1.15.0".into() },
            cluster_step: "cluster/c".into(),
            conn: Arc::new(Connector::new(&Default::default(), aws_config::SdkConfig::builder().build(), "c")),
        };
        let absent = |n: &str| json!({"name": n, "exists": false, "version": null, "owner": null});
        let at = |n: &str, v: &str| json!({"name": n, "exists": true, "version": v, "owner": format!("karpctl (Karpenter {v})")});
        let helm = |n: &str| json!({"name": n, "exists": true, "version": null, "owner": "Helm release karpenter-crd"});
        const NP: &str = "nodepools.karpenter.sh";
        const NC: &str = "ec2nodeclasses.karpenter.k8s.aws";
        let rows: Vec<Row> = vec![
            ("nothing observed", json!({}), Action::None, false, "up to date", &[]),
            ("no CRDs in the chart", json!({"existing": [], "desired": []}), Action::None, false, "up to date", &[]),
            ("all at this version", json!({"existing": [at(NP, "1.15.0"), at(NC, "1.15.0")]}), Action::None, false, "up to date", &[]),
            ("none installed", json!({"existing": [absent(NP), absent(NC)]}), Action::Create, false, "install 2 Karpenter 1.15.0 CRD(s)", &[NP, NC]),
            ("older karpctl version", json!({"existing": [at(NP, "1.14.0"), at(NC, "1.15.0")]}), Action::Update, false,
             "upgrade or adopt 1 Karpenter 1.15.0 CRD(s)", &[NP]),
            ("another owner: adopt", json!({"existing": [helm(NP), helm(NC)]}), Action::Update, false, "upgrade or adopt 2 Karpenter 1.15.0 CRD(s)", &[NP, NC]),
            ("one missing, one current", json!({"existing": [absent(NP), at(NC, "1.15.0")]}), Action::Update, false, "upgrade or adopt 1", &[NP]),
            ("one missing, one old", json!({"existing": [at(NP, "1.14.0"), absent(NC)]}), Action::Update, false, "upgrade or adopt 2", &[NP, NC]),
        ];
        let cx = quiet_cx(None);
        for (name, observed, action, destructive, summary, fields) in rows {
            let c = s.diff(&observed, &cx);
            check(name, &c, action, destructive, summary, fields);
        }
        // What a field says: absent → the version; existing → who had it → karpctl.
        let c = s.diff(&json!({"existing": [helm(NP), absent(NC)]}), &cx);
        assert_eq!((&c.fields[0].old, &c.fields[0].new), (&json!("Helm release karpenter-crd"), &json!("karpctl (Karpenter 1.15.0)")));
        assert_eq!((&c.fields[1].old, &c.fields[1].new), (&Value::Null, &json!("1.15.0")));
    }
}
