/*!
Step `amis/pins`: resolves the AMIs every node class needs from the public SSM
parameters for the cluster's Kubernetes version and records one pin per class.
A recorded pin stays put until asked (`up --update-amis`, `amis.update: latest`)
or until the Kubernetes version or the class's needs change; `plan` shows a move
as what it is, a rolling replacement of that class's nodes.
*/

use std::collections::{BTreeMap, BTreeSet};

use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::amis::{self, Need};
use crate::config::types::{AmiPin, AmiUpdate};
use crate::engine::{Action, Change, FieldChange, Step, StepCx};
use crate::render::AmiChoice;

pub const ID: &str = "amis/pins";

pub struct AmiPins {
    pub classes: BTreeMap<String, Vec<Need>>,
    pub pin: AmiPin,
    pub update: AmiUpdate,
    /// `--update-amis`: move pins to the newest AMIs on this run.
    pub update_requested: bool,
    /// `cluster.kubernetesVersion`, else the cluster facts' version.
    pub kubernetes_version: Option<String>,
    pub cluster_step: String,
    pub ssm: aws_sdk_ssm::Client,
}

impl AmiPins {
    fn k8s(&self, cx: &StepCx<'_>) -> anyhow::Result<String> {
        if let Some(v) = &self.kubernetes_version {
            return Ok(v.clone());
        }
        cx.output(&self.cluster_step)
            .and_then(|f| f["version"].as_str())
            .map(String::from)
            .ok_or_else(|| anyhow::anyhow!("the cluster's Kubernetes version is unknown; set cluster.kubernetesVersion"))
    }
}

fn pins_of(v: Option<&Value>) -> BTreeMap<String, AmiChoice> {
    v.and_then(|v| serde_json::from_value(v["pins"].clone()).ok()).unwrap_or_default()
}

fn needs_of(v: Option<&Value>) -> BTreeMap<String, Vec<Need>> {
    v.and_then(|v| serde_json::from_value(v["needs"].clone()).ok()).unwrap_or_default()
}

impl Step for AmiPins {
    fn id(&self) -> String {
        ID.into()
    }
    fn kind(&self) -> &'static str {
        "ami-lookup"
    }
    fn deps(&self) -> Vec<String> {
        vec![self.cluster_step.clone()]
    }
    fn always_observe(&self) -> bool {
        self.update_requested || self.update == AmiUpdate::Latest
    }
    fn inputs(&self) -> Value {
        json!({"classes": self.classes, "pin": self.pin, "update": self.update, "kubernetesVersion": self.kubernetes_version})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let k8s = self.k8s(cx)?;
            let all: BTreeSet<Need> = self.classes.values().flatten().cloned().collect();
            cx.progress(format!("reading {} SSM parameters for Kubernetes {k8s}", all.len() * 2));
            let found = amis::lookup(&self.ssm, &k8s, &all).await?;
            let latest = amis::pins(&self.classes, &found, self.pin)?;
            // Keep a recorded pin unless a move was asked for or its basis changed.
            let prev = cx.previous;
            let prev_k8s = prev.and_then(|p| p["kubernetesVersion"].as_str());
            let prev_pins = pins_of(prev);
            let prev_needs = needs_of(prev);
            let moving = self.update_requested || self.update == AmiUpdate::Latest || prev_k8s != Some(k8s.as_str());
            let pins: BTreeMap<String, AmiChoice> = latest
                .iter()
                .map(|(class, newest)| {
                    let keep = !moving && prev_needs.get(class) == self.classes.get(class);
                    let pin = match prev_pins.get(class) {
                        Some(old) if keep => old.clone(),
                        _ => newest.clone(),
                    };
                    (class.clone(), pin)
                })
                .collect();
            let found: BTreeMap<String, Value> = found.iter().map(|(n, f)| (format!("{}/{}/{}", n.family.alias_name(), n.variant.as_str(), n.arch.ssm()), json!(f))).collect();
            Ok(json!({"kubernetesVersion": k8s, "needs": self.classes, "pins": pins, "latest": latest, "found": found}))
        })
    }
    fn diff(&self, observed: &Value, cx: &StepCx<'_>) -> Change {
        let new = pins_of(Some(observed));
        let old = pins_of(cx.previous);
        if cx.previous.is_some() && new == old && cx.previous.map(|p| &p["kubernetesVersion"]) == Some(&observed["kubernetesVersion"]) {
            return Change::none();
        }
        let mut fields = Vec::new();
        let mut moved = Vec::new();
        for (class, pin) in &new {
            let before = old.get(class);
            if before != Some(pin) {
                if before.is_some() {
                    moved.push(class.clone());
                }
                fields.push(FieldChange {
                    field: format!("{class}.ami"),
                    old: before.map(|b| Value::String(b.to_string())).unwrap_or(Value::Null),
                    new: Value::String(pin.to_string()),
                });
            }
        }
        if cx.previous.is_none() || moved.is_empty() {
            let list: Vec<String> = new.iter().map(|(c, p)| format!("{c} → {}", p)).collect();
            Change::new(Action::Create, format!("pin AMIs: {}", list.join(", "))).with_fields(fields)
        } else {
            Change::new(
                Action::Update,
                format!("move AMI pins of {}: a rolling replacement of their nodes (Karpenter drifts them)", moved.join(", ")),
            )
            .with_fields(fields)
        }
    }
    fn apply<'a>(&'a self, _cx: &'a StepCx<'a>, observed: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        // Nothing to change outside: the pins are the outputs.
        Box::pin(async move { Ok(observed.clone()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::diff_table::{check, quiet_cx, RowWithPrevious};

    #[test]
    fn diff_table() {
        let s = AmiPins {
            classes: BTreeMap::new(),
            pin: AmiPin::Alias,
            update: AmiUpdate::Pinned,
            update_requested: false,
            kubernetes_version: None,
            cluster_step: "cluster/demo".into(),
            ssm: aws_sdk_ssm::Client::from_conf(aws_sdk_ssm::Config::builder().behavior_version_latest().build()),
        };
        let alias = |v: &str| json!({"kind": "alias", "value": v});
        let ids = |v: &[&str]| json!({"kind": "ids", "value": v});
        // What observe returns (and apply records as the outputs, so also the shape of `previous`).
        let obs = |k8s: &str, pins: Value| json!({"kubernetesVersion": k8s, "needs": {}, "pins": pins, "latest": pins, "found": {}});
        let (v1, v2) = ("al2023@v20250915", "al2023@v20251001");
        let one = obs("1.31", json!({"default": alias(v1)}));
        let two = obs("1.31", json!({"default": alias(v1), "gpu": ids(&["ami-1", "ami-2"])}));
        #[rustfmt::skip]
        let rows: Vec<RowWithPrevious<Option<Value>>> = vec![
            ("first run", one.clone(), None, Action::Create, false, "pin AMIs: default → al2023@v20250915", &["default.ami"]),
            ("first run, two classes", two.clone(), None, Action::Create, false, "pin AMIs: default → al2023@v20250915, gpu → ami-1,ami-2",
             &["default.ami", "gpu.ami"]),
            ("pins kept", one.clone(), Some(one.clone()), Action::None, false, "up to date", &[]),
            ("pins kept, two classes", two.clone(), Some(two.clone()), Action::None, false, "up to date", &[]),
            ("Kubernetes upgraded, same pins", obs("1.32", json!({"default": alias(v1)})), Some(one.clone()), Action::Create, false,
             "pin AMIs: default → al2023@v20250915", &[]),
            ("pin moved", obs("1.31", json!({"default": alias(v2)})), Some(one.clone()), Action::Update, false,
             "move AMI pins of default: a rolling replacement of their nodes", &["default.ami"]),
            ("pin moved with a Kubernetes upgrade", obs("1.32", json!({"default": alias(v2)})), Some(one.clone()), Action::Update, false,
             "move AMI pins of default", &["default.ami"]),
            ("ids moved, class added", obs("1.31", json!({"default": alias(v1), "gpu": ids(&["ami-3", "ami-2"]), "new": alias(v2)})), Some(two.clone()),
             Action::Update, false, "move AMI pins of gpu: a rolling", &["gpu.ami", "new.ami"]),
            ("alias → ids", obs("1.31", json!({"default": ids(&["ami-9"])})), Some(one.clone()), Action::Update, false, "move AMI pins of default", &["default.ami"]),
            ("class added", two.clone(), Some(one.clone()), Action::Create, false, "pin AMIs: default → al2023@v20250915, gpu → ami-1,ami-2", &["gpu.ami"]),
            ("class removed", one.clone(), Some(two.clone()), Action::Create, false, "pin AMIs: default → al2023@v20250915", &[]),
            ("record without pins", one.clone(), Some(json!({})), Action::Create, false, "pin AMIs: default → al2023@v20250915", &["default.ami"]),
        ];
        for (name, observed, previous, action, destructive, summary, fields) in &rows {
            let c = s.diff(observed, &quiet_cx(previous.as_ref()));
            check(name, &c, *action, *destructive, summary, fields);
        }
        // A move shows the old and the new pin; a new class has no old one.
        let cx = quiet_cx(Some(&one));
        let c = s.diff(&obs("1.31", json!({"default": alias(v2), "gpu": ids(&["ami-1", "ami-2"])})), &cx);
        let f: Vec<(&str, &Value, &Value)> = c.fields.iter().map(|f| (f.field.as_str(), &f.old, &f.new)).collect();
        assert_eq!(f, [("default.ami", &json!(v1), &json!(v2)), ("gpu.ami", &Value::Null, &json!("ami-1,ami-2"))]);
        assert_eq!(c.summary, "move AMI pins of default: a rolling replacement of their nodes (Karpenter drifts them)");
    }
}
