//! Structural validation of every rendered NodePool and EC2NodeClass against the
//! real Karpenter v1 CRD schemas (OpenAPI v3, strict about unknown fields). CEL
//! rules are enforced by the API-server test bed; this catches shape errors
//! without one.

use std::path::Path;

use serde_json::Value;

use karpctl::render::{self, Inputs};

use crate::support::*;

/// OpenAPI v3 (Kubernetes structural schema) → JSON Schema that rejects unknown fields.
fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, val) in m {
                if k.starts_with("x-kubernetes-") || k == "description" {
                    continue;
                }
                out.insert(k.clone(), to_json_schema(val));
            }
            let preserve = m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
            if m.contains_key("properties") && !m.contains_key("additionalProperties") && !preserve {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

pub struct Crd {
    pub kind: String,
    pub validator: jsonschema::Validator,
}

pub fn load_crd(path: &Path) -> Crd {
    let doc: Value = serde_yaml::from_str(&read(path)).expect("CRD parses");
    let kind = doc["spec"]["names"]["kind"].as_str().expect("kind").to_string();
    let version = doc["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["name"] == "v1"))
        .expect("a v1 version");
    let schema = to_json_schema(&version["schema"]["openAPIV3Schema"]);
    let validator = jsonschema::options().should_validate_formats(false).build(&schema).expect("CRD schema compiles");
    Crd { kind, validator }
}

fn crds() -> Option<Vec<Crd>> {
    crds_in(&crds_dir()?)
}

fn crds_in(dir: &Path) -> Option<Vec<Crd>> {
    Some(
        ["karpenter.sh_nodepools.yaml", "karpenter.k8s.aws_ec2nodeclasses.yaml"]
            .iter()
            .map(|f| load_crd(&dir.join(f)))
            .collect(),
    )
}

/// Errors of `obj` against the CRD of its kind; None when no CRD covers the kind.
pub fn violations(crds: &[Crd], obj: &Value) -> Option<Vec<String>> {
    let kind = obj["kind"].as_str()?;
    let crd = crds.iter().find(|c| c.kind == kind)?;
    Some(crd.validator.iter_errors(obj).map(|e| format!("{}: {e}", e.instance_path())).collect())
}

#[test]
fn every_preset_manifest_fits_the_real_crds() {
    let Some(crds) = crds() else {
        eprintln!("skipping: the Karpenter CRDs could not be fetched (scripts/upstream.sh; or set KARPCTL_CRDS_DIR)");
        return;
    };
    let mut checked = 0;
    let mut problems = Vec::new();
    for p in presets() {
        let c = load_preset(p);
        for inputs in [Inputs::default(), pinned_inputs(&c)] {
            let b = render::render(&c, &inputs).unwrap();
            for d in &b.documents {
                if let Some(errs) = violations(&crds, &d.content) {
                    checked += 1;
                    for e in errs {
                        problems.push(format!("{} {}: {e}", preset_name(p), d.path));
                    }
                }
            }
        }
    }
    assert!(checked >= 40, "expected every preset's classes and pools to be checked, got {checked}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every preset rendered for Karpenter 1.15 fits 1.15's own CRDs (its EC2NodeClass kubelet
/// is schemaless, its budgets take the Unhealthy reason), from the v1.15.0 module.
#[test]
fn every_preset_rendered_for_1_15_fits_the_1_15_crds() {
    let Some(dir) = upstream("karpenter", "1.15.0", "crds") else { return };
    let v115 = crds_in(&dir).expect("1.15.0 CRDs");
    let mut checked = 0;
    let mut problems = Vec::new();
    for p in presets() {
        let mut c = load_preset(p);
        c.karpenter.version = "1.15.0".into();
        for np in &mut c.node_pools {
            if let Some(d) = np.disruption.as_mut() {
                for b in &mut d.budgets {
                    b.reasons.push(karpctl::config::types::DisruptionReason::Unhealthy);
                }
            }
        }
        let b = render::render(&c, &pinned_inputs(&c)).unwrap();
        for d in &b.documents {
            if let Some(errs) = violations(&v115, &d.content) {
                checked += 1;
                problems.extend(errs.into_iter().map(|e| format!("{} {}: {e}", preset_name(p), d.path)));
            }
        }
    }
    assert!(checked >= 20, "expected every preset's classes and pools to be checked, got {checked}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // And the 1.14 schema refuses the reason, so the check above is not vacuous.
    let old = crds_in(&upstream("karpenter", "1.14.1", "crds").expect("1.14.1 CRDs")).unwrap();
    let pool = serde_json::json!({"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "p"},
        "spec": {"disruption": {"consolidateAfter": "0s", "budgets": [{"nodes": "1", "reasons": ["Unhealthy"]}]},
                 "template": {"spec": {"nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "d"}, "requirements": []}}}});
    assert!(!violations(&old, &pool).unwrap().is_empty(), "the 1.14.1 CRDs refuse budget reason Unhealthy");
    assert!(violations(&v115, &pool).unwrap().is_empty(), "1.15 accepts it: {:?}", violations(&v115, &pool));
}

#[test]
fn the_crd_check_rejects_what_the_api_server_would() {
    let Some(crds) = crds() else {
        eprintln!("skipping: CRDs not found");
        return;
    };
    let c = load_preset(karpctl::cli::Preset::Default);
    let b = render::render(&c, &Inputs::default()).unwrap();
    let pool = b.documents.iter().find(|d| d.content["kind"] == "NodePool").unwrap().content.clone();
    assert_eq!(violations(&crds, &pool).unwrap(), Vec::<String>::new());

    let mut typo = pool.clone();
    typo["spec"]["template"]["spec"]["kubelet"] = serde_json::json!({"maxPods": 10});
    assert!(!violations(&crds, &typo).unwrap().is_empty(), "v1 NodePools have no kubelet block");

    let mut bad_enum = pool.clone();
    bad_enum["spec"]["disruption"]["consolidationPolicy"] = "WhenUnderutilized".into();
    assert!(!violations(&crds, &bad_enum).unwrap().is_empty(), "v1beta1 policy name must be rejected");

    let mut bad_pattern = pool;
    bad_pattern["spec"]["template"]["spec"]["expireAfter"] = "30d".into();
    assert!(!violations(&crds, &bad_pattern).unwrap().is_empty(), "days are not a valid duration");
}
