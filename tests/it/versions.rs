//! The per-version facts karpctl keeps (src/model/version.rs) against what each imported
//! Karpenter release says of itself (docs/karpenter/VERSION.facts, written from the real
//! module by scripts/karpenter-import.sh): its Kubernetes range, its feature gates, the AWS
//! calls its controller can make (which the stack's policy must allow) and the chart values
//! karpctl sets. Importing a release that changes any of these fails here until version.rs
//! and the renderer know it.

use std::collections::{BTreeMap, BTreeSet};

use karpctl::model::version::{GateKind, KarpenterVersion, MAX_KNOWN_MINOR};
use serde_json::Value;

use crate::security::template;
use crate::support::*;

/// Calls the controller's clients can make that the stack's policy rightly leaves out.
/// Calls in the clients' interfaces that the stack's policy rightly leaves out: in the 1.13–1.15
/// modules only the upstream e2e suite (test/pkg/environment/aws) makes them, never pkg/.
const NOT_IN_THE_POLICY: &[(&str, &str)] = &[
    ("timestream:WriteRecords", "the e2e suite's metrics"),
    ("sqs:SendMessage", "the e2e suite puts interruption messages on the queue; the controller only receives and deletes"),
    ("iam:GetRole", "the e2e suite reads roles to check them"),
];

struct Facts {
    version: KarpenterVersion,
    lines: BTreeMap<String, BTreeSet<String>>,
}

fn facts() -> Vec<Facts> {
    files_with_extension(&repo().join("docs/karpenter"), "facts")
        .into_iter()
        .map(|f| {
            let name = f.file_stem().unwrap().to_string_lossy().to_string();
            let version = KarpenterVersion::parse(&name).unwrap_or_else(|| panic!("{}: not a version", f.display()));
            let mut lines: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for l in read(&f).lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
                let (kind, rest) = l.split_once(' ').unwrap_or_else(|| panic!("{}: bad line {l:?}", f.display()));
                lines.entry(kind.to_string()).or_default().insert(rest.to_string());
            }
            Facts { version, lines }
        })
        .collect()
}

fn of<'a>(f: &'a Facts, kind: &str) -> impl Iterator<Item = &'a String> {
    f.lines.get(kind).into_iter().flatten()
}

#[test]
fn the_imported_releases_include_the_newest_minor_karpctl_knows() {
    let all = facts();
    assert!(all.len() >= 3, "docs/karpenter holds {} facts files", all.len());
    let newest = all.iter().map(|f| f.version.minor).max().unwrap();
    assert_eq!(newest, MAX_KNOWN_MINOR, "MAX_KNOWN_MINOR is the newest imported minor");
}

#[test]
fn version_rs_knows_each_releases_kubernetes_range_and_feature_gates() {
    let mut problems = Vec::new();
    for f in facts() {
        let v = f.version;
        let range = of(&f, "kubernetes").next().cloned().unwrap_or_default();
        let (lo, hi) = v.kubernetes_range();
        if range != format!("1.{lo}-1.{hi}") {
            problems.push(format!("{v}: the module supports Kubernetes {range}; version.rs says 1.{lo}-1.{hi}"));
        }
        for (kind, gates) in [("feature-gate", GateKind::Core), ("aws-feature-gate", GateKind::Aws)] {
            let (since, known) = (|g: &str| gates.since(g), gates.known());
            for gate in of(&f, kind) {
                match since(gate) {
                    Some(s) if v.at_least(s) && known.contains(&gate.as_str()) => {}
                    Some(s) => problems.push(format!("{v}: {kind} {gate} exists, but version.rs has it from 1.{s} (or not in its known list)")),
                    None => problems.push(format!("{v}: {kind} {gate} is unknown to version.rs")),
                }
            }
            // And no gate is offered for a release whose chart lacks it.
            for gate in known.iter().filter(|g| since(g).is_some_and(|s| v.at_least(s))) {
                if !of(&f, kind).any(|g| g == gate) {
                    problems.push(format!("{v}: version.rs offers {kind} {gate}, which this chart does not have"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every action of every controller policy statement in a rendered template.
fn allowed_actions(t: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in t["Resources"].as_object().unwrap().values() {
        if r["Type"] != "AWS::IAM::ManagedPolicy" {
            continue;
        }
        for s in r["Properties"]["PolicyDocument"]["Statement"].as_array().into_iter().flatten() {
            match &s["Action"] {
                Value::String(a) => {
                    out.insert(a.clone());
                }
                Value::Array(a) => out.extend(a.iter().filter_map(|x| x.as_str().map(String::from))),
                _ => {}
            }
        }
    }
    out
}

#[test]
fn the_stack_policy_allows_every_call_each_releases_controller_makes() {
    let preset = load_preset(presets()[0]);
    let mut problems = Vec::new();
    let mut checked = 0;
    for f in facts() {
        let allowed = allowed_actions(&template(&preset, &f.version.to_string(), true));
        for call in of(&f, "aws-call") {
            if NOT_IN_THE_POLICY.iter().any(|(c, _)| c == call) {
                continue;
            }
            checked += 1;
            if !allowed.contains(call) {
                problems.push(format!("{}: the controller can call {call}; no controller policy statement allows it", f.version));
            }
        }
    }
    assert!(checked > 60, "checked only {checked} calls");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_policy_check_fails_on_a_call_it_does_not_allow() {
    // 1.14's policy lacks 1.15's reboot: the check above would name it.
    let preset = load_preset(presets()[0]);
    let old = allowed_actions(&template(&preset, "1.14.1", true));
    let new = allowed_actions(&template(&preset, "1.15.0", true));
    assert!(!old.contains("ec2:RebootInstances") && new.contains("ec2:RebootInstances"));
    let f15 = facts().into_iter().find(|f| f.version.minor == 15).expect("1.15 imported");
    assert!(of(&f15, "aws-call").any(|c| c == "ec2:RebootInstances"));
}

#[test]
fn every_chart_value_karpctl_sets_exists_in_that_releases_chart() {
    let mut problems = Vec::new();
    for f in facts() {
        let keys: BTreeSet<String> = of(&f, "chart-value").map(|l| l.split(" = ").next().unwrap().to_string()).collect();
        for p in presets() {
            let mut c = load_preset(p);
            c.karpenter.version = f.version.to_string();
            let b = karpctl::render::render(&c, &pinned_inputs(&c)).unwrap();
            for d in b.documents.iter().filter(|d| d.path == "helm/karpenter-values.yaml") {
                for key in leaf_keys(&d.content, "") {
                    // Maps whose keys are the user's (selectors, annotations, resources) end in
                    // keys no chart lists; their parent must exist.
                    let known = keys.contains(&key) || keys.iter().any(|k| key.starts_with(&format!("{k}.")));
                    let parent_known = key.rsplit_once('.').is_some_and(|(parent, _)| keys.iter().any(|k| k == parent || k.starts_with(&format!("{parent}."))));
                    if !known && !parent_known {
                        problems.push(format!("{} {}: karpctl sets {key}, which the chart does not have", f.version, preset_name(p)));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn leaf_keys(v: &Value, path: &str) -> Vec<String> {
    match v {
        Value::Object(m) if !m.is_empty() => m
            .iter()
            .flat_map(|(k, x)| leaf_keys(x, &if path.is_empty() { k.clone() } else { format!("{path}.{k}") }))
            .collect(),
        _ => vec![path.to_string()],
    }
}
