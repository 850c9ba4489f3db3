/*!
Step `amis/pins`: resolves the AMIs every node class needs from the public SSM
parameters for the cluster's Kubernetes version and records one pin per class.
A recorded pin stays put until asked (`up --update-amis`, `amis.update: latest`)
or until the Kubernetes version or the class's needs change; `plan` shows a move
as what it is, a rolling replacement of that class's nodes. [`Moves`] says which
pins a run may move: a staged rollout (`up --staged`) moves one class per walk,
and `up --revert-amis` puts a class back on the pin it had before its last move.
*/

use std::collections::{BTreeMap, BTreeSet};

use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::amis::{self, Need};
use crate::config::types::{AmiPin, AmiUpdate};
use crate::engine::{Action, Change, FieldChange, Step, StepCx};
use crate::render::AmiChoice;

pub const ID: &str = "amis/pins";

/// Which recorded pins this run may move.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Moves {
    /// Keep recorded pins; all move when the Kubernetes version changes.
    #[default]
    Held,
    /// Move every class to the newest AMIs (`--update-amis`, `amis.update: latest`).
    All,
    /// A stage of a staged rollout: move these classes only; every other class
    /// keeps its pin, even across a Kubernetes version change.
    Only(BTreeSet<String>),
    /// Put these classes back on the pin recorded before their last move.
    Revert(BTreeSet<String>),
}

pub struct AmiPins {
    pub classes: BTreeMap<String, Vec<Need>>,
    pub pin: AmiPin,
    pub update: AmiUpdate,
    /// Which recorded pins this run may move (`--update-amis`, `--staged`, `--revert-amis`).
    pub moves: Moves,
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

fn before_of(v: Option<&Value>) -> BTreeMap<String, AmiChoice> {
    v.and_then(|v| serde_json::from_value(v["before"].clone()).ok()).unwrap_or_default()
}

/// The pins this run records, and for each class the pin it had before its last move.
/// A class keeps its recorded pin unless `moves` lets it move or its basis went: it is
/// new, its needs changed, or (with [`Moves::Held`]) the Kubernetes version changed.
pub fn choose(
    latest: &BTreeMap<String, AmiChoice>,
    classes: &BTreeMap<String, Vec<Need>>,
    previous: Option<&Value>,
    k8s: &str,
    moves: &Moves,
) -> anyhow::Result<(BTreeMap<String, AmiChoice>, BTreeMap<String, AmiChoice>)> {
    let (prev_pins, prev_needs, mut before) = (pins_of(previous), needs_of(previous), before_of(previous));
    let k8s_moved = previous.and_then(|p| p["kubernetesVersion"].as_str()) != Some(k8s);
    if let Moves::Revert(set) = moves {
        if let Some(c) = set.iter().find(|c| !latest.contains_key(*c)) {
            anyhow::bail!("--revert-amis {c}: no node class `{c}` with an AMI pin in the config");
        }
        if let Some(c) = set.iter().find(|c| !before.contains_key(*c)) {
            anyhow::bail!("--revert-amis {c}: no earlier pin is recorded for class {c} (it has not moved since karpctl pinned it)");
        }
    }
    let mut pins = BTreeMap::new();
    for (class, newest) in latest {
        let recorded = prev_pins.get(class).filter(|_| prev_needs.get(class) == classes.get(class));
        let pin = match (recorded, moves) {
            (None, _) => newest.clone(),
            (Some(_), Moves::Revert(set)) if set.contains(class) => before[class].clone(),
            (Some(old), Moves::Revert(_)) => old.clone(),
            (Some(_), Moves::All) => newest.clone(),
            (Some(old), Moves::Only(set)) => if set.contains(class) { newest.clone() } else { old.clone() },
            (Some(old), Moves::Held) => if k8s_moved { newest.clone() } else { old.clone() },
        };
        if let Some(old) = prev_pins.get(class).filter(|old| **old != pin) {
            before.insert(class.clone(), old.clone());
        }
        pins.insert(class.clone(), pin);
    }
    before.retain(|c, _| pins.contains_key(c));
    Ok((pins, before))
}

/// The Kubernetes version the recorded pins are for: the cluster's, unless some
/// class still holds a pin from before a version change (a staged rollout or a
/// revert in between), so that later runs still see the change and move it.
fn pinned_for(previous: Option<&str>, k8s: &str, pins: &BTreeMap<String, AmiChoice>, latest: &BTreeMap<String, AmiChoice>) -> String {
    match previous {
        Some(p) if p != k8s && pins != latest => p.to_string(),
        _ => k8s.to_string(),
    }
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
        self.moves != Moves::Held || self.update == AmiUpdate::Latest
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
            let moves = if self.update == AmiUpdate::Latest && self.moves == Moves::Held { Moves::All } else { self.moves.clone() };
            let (pins, before) = choose(&latest, &self.classes, cx.previous, &k8s, &moves)?;
            let recorded_for = pinned_for(cx.previous.and_then(|p| p["kubernetesVersion"].as_str()), &k8s, &pins, &latest);
            let found: BTreeMap<String, Value> = found.iter().map(|(n, f)| (format!("{}/{}/{}", n.family.alias_name(), n.variant.as_str(), n.arch.ssm()), json!(f))).collect();
            Ok(json!({"kubernetesVersion": recorded_for, "needs": self.classes, "pins": pins, "before": before, "latest": latest, "found": found}))
        })
    }
    fn diff(&self, observed: &Value, cx: &StepCx<'_>) -> Change {
        let new = pins_of(Some(observed));
        let old = pins_of(cx.previous);
        let k8s = observed["kubernetesVersion"].as_str().unwrap_or("?");
        let old_k8s = cx.previous.and_then(|p| p["kubernetesVersion"].as_str());
        if cx.previous.is_some() && new == old && old_k8s == Some(k8s) {
            return Change::none();
        }
        let mut fields = Vec::new();
        let (mut moved, mut added) = (Vec::new(), Vec::new());
        for (class, pin) in &new {
            let before = old.get(class);
            if before != Some(pin) {
                if before.is_some() { moved.push(class.clone()) } else { added.push(format!("{class} → {pin}")) }
                fields.push(FieldChange {
                    field: format!("{class}.ami"),
                    old: before.map(|b| Value::String(b.to_string())).unwrap_or(Value::Null),
                    new: Value::String(pin.to_string()),
                });
            }
        }
        if cx.previous.is_none() {
            let list: Vec<String> = new.iter().map(|(c, p)| format!("{c} → {}", p)).collect();
            return Change::new(Action::Create, format!("pin AMIs: {}", list.join(", "))).with_fields(fields);
        }
        let upgrade = match old_k8s {
            Some(o) if o != k8s => Some(format!("Kubernetes {o} → {k8s}")),
            _ => None,
        };
        let mut parts = Vec::new();
        if !moved.is_empty() {
            let why = upgrade.as_ref().map(|u| format!("{u} moves")).unwrap_or_else(|| "move".into());
            let mut p = format!("{why} the AMI pins of {}: a rolling replacement of their nodes (Karpenter drifts them)", moved.join(", "));
            if moved.len() > 1 {
                p.push_str("; `karpctl up --staged` moves one class at a time with a check between");
            }
            let kept = new.len() - moved.len() - added.len();
            if upgrade.is_some() && kept > 0 {
                p.push_str(&format!("; {kept} class(es) keep their pins"));
            }
            parts.push(p);
        }
        if !added.is_empty() {
            parts.push(format!("pin AMIs of {}", added.join(", ")));
        }
        let dropped: Vec<&String> = old.keys().filter(|c| !new.contains_key(*c)).collect();
        if !dropped.is_empty() {
            parts.push(format!("drop the pins of removed class(es) {}", dropped.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")));
        }
        if moved.is_empty() {
            if let Some(u) = upgrade {
                parts.push(format!("record {u} (no pin moves)"));
            }
        }
        Change::new(Action::Update, parts.join("; ")).with_fields(fields)
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
            moves: Moves::Held,
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
            ("Kubernetes upgraded, same pins", obs("1.32", json!({"default": alias(v1)})), Some(one.clone()), Action::Update, false,
             "record Kubernetes 1.31 → 1.32 (no pin moves)", &[]),
            ("pin moved", obs("1.31", json!({"default": alias(v2)})), Some(one.clone()), Action::Update, false,
             "move the AMI pins of default: a rolling replacement of their nodes", &["default.ami"]),
            ("pin moved with a Kubernetes upgrade", obs("1.32", json!({"default": alias(v2)})), Some(one.clone()), Action::Update, false,
             "Kubernetes 1.31 → 1.32 moves the AMI pins of default: a rolling replacement", &["default.ami"]),
            ("every pin moved with a Kubernetes upgrade", obs("1.32", json!({"default": alias(v2), "gpu": ids(&["ami-3", "ami-4"])})), Some(two.clone()),
             Action::Update, false, "Kubernetes 1.31 → 1.32 moves the AMI pins of default, gpu: a rolling replacement of their nodes (Karpenter drifts them); `karpctl up --staged` moves one class at a time", &["default.ami", "gpu.ami"]),
            ("one stage of a Kubernetes upgrade", obs("1.32", json!({"default": alias(v1), "gpu": ids(&["ami-3", "ami-4"])})), Some(two.clone()),
             Action::Update, false, "Kubernetes 1.31 → 1.32 moves the AMI pins of gpu: a rolling replacement of their nodes (Karpenter drifts them); 1 class(es) keep their pins", &["gpu.ami"]),
            ("ids moved, class added", obs("1.31", json!({"default": alias(v1), "gpu": ids(&["ami-3", "ami-2"]), "new": alias(v2)})), Some(two.clone()),
             Action::Update, false, "move the AMI pins of gpu: a rolling replacement of their nodes (Karpenter drifts them); pin AMIs of new → al2023@v20251001", &["gpu.ami", "new.ami"]),
            ("alias → ids", obs("1.31", json!({"default": ids(&["ami-9"])})), Some(one.clone()), Action::Update, false, "move the AMI pins of default", &["default.ami"]),
            ("class added", two.clone(), Some(one.clone()), Action::Update, false, "pin AMIs of gpu → ami-1,ami-2", &["gpu.ami"]),
            ("class removed", one.clone(), Some(two.clone()), Action::Update, false, "drop the pins of removed class(es) gpu", &[]),
            ("record without pins", one.clone(), Some(json!({})), Action::Update, false, "pin AMIs of default → al2023@v20250915", &["default.ami"]),
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
        assert_eq!(c.summary, "move the AMI pins of default: a rolling replacement of their nodes (Karpenter drifts them); pin AMIs of gpu → ami-1,ami-2");
    }

    #[test]
    fn the_recorded_version_waits_for_the_last_class_of_a_staged_upgrade() {
        let al = |v: &str| AmiChoice::Alias(format!("al2023@v{v}"));
        let m = |v: &[(&str, &str)]| v.iter().map(|(c, p)| (c.to_string(), al(p))).collect::<BTreeMap<String, AmiChoice>>();
        let latest = m(&[("a", "2"), ("b", "2")]);
        assert_eq!(pinned_for(Some("1.31"), "1.32", &m(&[("a", "2"), ("b", "1")]), &latest), "1.31", "b still holds a 1.31 pin");
        assert_eq!(pinned_for(Some("1.31"), "1.32", &latest, &latest), "1.32", "all moved");
        assert_eq!(pinned_for(Some("1.32"), "1.32", &m(&[("a", "1"), ("b", "1")]), &latest), "1.32", "held pins, no version change");
        assert_eq!(pinned_for(None, "1.32", &m(&[("a", "1")]), &latest), "1.32", "first run");
    }

    #[test]
    fn choose_moves_only_what_the_run_allows_and_remembers_the_pin_before() {
        let al = |v: &str| AmiChoice::Alias(format!("al2023@v{v}"));
        let need = |arch| vec![Need { family: crate::config::types::AmiFamily::Al2023, variant: crate::config::types::Variant::Standard, arch }];
        let classes: BTreeMap<String, Vec<Need>> = [("a", need(crate::config::types::Arch::Amd64)), ("b", need(crate::config::types::Arch::Amd64)), ("c", need(crate::config::types::Arch::Arm64))]
            .into_iter().map(|(c, n)| (c.to_string(), n)).collect();
        let latest: BTreeMap<String, AmiChoice> = ["a", "b", "c"].iter().map(|c| (c.to_string(), al("2"))).collect();
        let prev = json!({"kubernetesVersion": "1.31", "needs": classes, "pins": {"a": al("1"), "b": al("1")}, "before": {"a": al("0")}});
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
        let show = |m: &BTreeMap<String, AmiChoice>| m.iter().map(|(c, p)| format!("{c}={p}")).collect::<Vec<_>>().join(" ");
        #[rustfmt::skip]
        let rows: Vec<(&str, &str, Moves, &str, &str)> = vec![
            // name, Kubernetes version, moves, pins, before
            ("held: recorded pins stay, a new class gets the newest", "1.31", Moves::Held, "a=al2023@v1 b=al2023@v1 c=al2023@v2", "a=al2023@v0"),
            ("held across an upgrade: everything moves", "1.32", Moves::Held, "a=al2023@v2 b=al2023@v2 c=al2023@v2", "a=al2023@v1 b=al2023@v1"),
            ("all", "1.31", Moves::All, "a=al2023@v2 b=al2023@v2 c=al2023@v2", "a=al2023@v1 b=al2023@v1"),
            ("a stage moves its class only", "1.31", Moves::Only(set(&["b"])), "a=al2023@v1 b=al2023@v2 c=al2023@v2", "a=al2023@v0 b=al2023@v1"),
            ("a stage holds the others across an upgrade", "1.32", Moves::Only(set(&["b"])), "a=al2023@v1 b=al2023@v2 c=al2023@v2", "a=al2023@v0 b=al2023@v1"),
            ("an empty stage moves nothing", "1.32", Moves::Only(set(&[])), "a=al2023@v1 b=al2023@v1 c=al2023@v2", "a=al2023@v0"),
            ("revert goes back one pin", "1.31", Moves::Revert(set(&["a"])), "a=al2023@v0 b=al2023@v1 c=al2023@v2", "a=al2023@v1"),
        ];
        for (name, k8s, moves, pins, before) in rows {
            let (p, b) = choose(&latest, &classes, Some(&prev), k8s, &moves).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((show(&p).as_str(), show(&b).as_str()), (pins, before), "{name}");
        }
        // A class whose needs changed cannot keep its pin, whatever the stage says.
        let mut changed = classes.clone();
        changed.insert("a".into(), need(crate::config::types::Arch::Arm64));
        let (p, _) = choose(&latest, &changed, Some(&prev), "1.31", &Moves::Only(set(&[]))).unwrap();
        assert_eq!(p["a"], al("2"));
        // Reverting needs an earlier pin and a class that is pinned.
        let e = choose(&latest, &classes, Some(&prev), "1.31", &Moves::Revert(set(&["b"]))).unwrap_err().to_string();
        assert!(e.contains("no earlier pin is recorded for class b"), "{e}");
        let e = choose(&latest, &classes, Some(&prev), "1.31", &Moves::Revert(set(&["zz"]))).unwrap_err().to_string();
        assert!(e.contains("no node class `zz`"), "{e}");
        // First run: the newest for all, nothing before.
        let (p, b) = choose(&latest, &classes, None, "1.31", &Moves::Held).unwrap();
        assert_eq!((show(&p).as_str(), b.len()), ("a=al2023@v2 b=al2023@v2 c=al2023@v2", 0));
    }
}
