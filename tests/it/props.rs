//! Property tests for the config loader: it never panics on any input, reports
//! positions inside the file, and accepts generated valid configs whose renders
//! are deterministic and fit the CRDs.

use std::path::Path;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{json, Value};

use karpctl::config;
use karpctl::render::{self, Inputs};

use crate::support::*;

fn check_no_panic(bytes: &[u8]) {
    let p = Path::new("fuzz.yaml");
    match config::parse(p, bytes) {
        Ok(_) => {}
        Err(e) => {
            let lines = bytes.iter().filter(|b| **b == b'\n').count() + 1;
            for d in &e.diagnostics {
                assert!(d.line >= 1 && d.line <= lines + 1, "line {} outside a {lines}-line input: {d:?}", d.line);
                assert!(!d.message.is_empty());
            }
        }
    }
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("apiVersion".to_string()),
        Just("cluster".to_string()),
        Just("name".to_string()),
        Just("nodePools".to_string()),
        Just("nodeClasses".to_string()),
        Just("weight".to_string()),
        Just("limits".to_string()),
        Just("disruption".to_string()),
        "[a-zA-Z./-]{1,12}",
    ]
}

fn yaml_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,20}".prop_map(Value::String),
        Just(Value::String("karpctl.io/v1alpha1".into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid config built from random but legal choices.
fn valid_config() -> impl Strategy<Value = Value> {
    let pool = (
        "[a-z][a-z0-9-]{0,10}[a-z0-9]",
        prop::option::of(1i64..=100),
        1u32..5000,
        prop::sample::subsequence(vec!["spot", "on-demand"], 1..=2),
        prop::sample::subsequence(vec!["c", "m", "r", "t", "g"], 0..=3),
        prop::option::of(prop::sample::select(vec!["WhenEmpty", "WhenEmptyOrUnderutilized"])),
        prop::option::of(prop::sample::select(vec!["30s", "5m", "1h30m", "Never"])),
    );
    (prop::collection::vec(pool, 1..6), prop::sample::select(vec!["al2023", "bottlerocket"])).prop_map(|(pools, family)| {
        let mut seen = std::collections::BTreeSet::new();
        let pools: Vec<Value> = pools
            .into_iter()
            .filter(|p| seen.insert(p.0.clone()))
            .map(|(name, weight, cpu, cts, cats, policy, after)| {
                let mut p = json!({"name": name, "nodeClass": "main", "capacityTypes": cts, "limits": {"cpu": cpu.to_string(), "memory": format!("{}Gi", cpu * 4)}});
                if let Some(w) = weight {
                    p["weight"] = w.into();
                }
                if !cats.is_empty() {
                    p["instances"] = json!({"categories": {"allowed": cats}});
                }
                if let Some(pol) = policy {
                    p["disruption"] = json!({"consolidationPolicy": pol});
                    if let Some(a) = after {
                        p["disruption"]["consolidateAfter"] = a.into();
                    }
                }
                p
            })
            .collect();
        json!({
            "apiVersion": "karpctl.io/v1alpha1",
            "cluster": {"name": "prop-cluster", "region": "us-west-2"},
            "nodeClasses": [{"name": "main", "amiFamily": family, "architectures": ["amd64", "arm64"]}],
            "nodePools": pools,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_no_panic(&bytes);
    }

    #[test]
    fn arbitrary_yaml_never_panics(v in yaml_value()) {
        let text = serde_yaml::to_string(&v).unwrap();
        check_no_panic(text.as_bytes());
    }

    #[test]
    fn generated_valid_configs_validate_and_render_deterministically(v in valid_config()) {
        let text = serde_yaml::to_string(&v).unwrap();
        let loaded = match config::parse(Path::new("gen.yaml"), text.as_bytes()) {
            Ok(l) => l,
            Err(e) => return Err(TestCaseError::fail(format!("valid config rejected:\n{e}\n{text}"))),
        };
        let a = render_stream(&loaded.config, &Inputs::default());
        let b = render_stream(&loaded.config, &Inputs::default());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn an_unknown_key_is_reported_at_its_path(pool in 0usize..2, key in "[a-z]{3,10}Typo") {
        // Insert an unknown field into a pool of a real preset and expect it named.
        let mut v: Value = serde_yaml::from_str(karpctl::ops::init::preset_text(karpctl::cli::Preset::DevGpu)).unwrap();
        v["nodePools"][pool][key.as_str()] = json!(1);
        let text = serde_yaml::to_string(&v).unwrap();
        let err = config::parse(Path::new("m.yaml"), text.as_bytes()).expect_err("unknown key accepted");
        let want = format!("nodePools[{pool}].{key}");
        prop_assert!(err.diagnostics.iter().any(|d| d.field == want), "{:?}", err.diagnostics);
        let d = err.diagnostics.iter().find(|d| d.field == want).unwrap();
        let line = text.lines().nth(d.line - 1).unwrap_or("");
        prop_assert!(line.contains(key.as_str()), "line {} is {:?}", d.line, line);
    }
}

#[test]
fn generated_pools_fit_the_crds() {
    let Some(dir) = crds_dir() else {
        eprintln!("skipping: CRDs not found");
        return;
    };
    let crds: Vec<_> = ["karpenter.sh_nodepools.yaml", "karpenter.k8s.aws_ec2nodeclasses.yaml"]
        .iter()
        .map(|f| crate::crds::load_crd(&dir.join(f)))
        .collect();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..64 {
        let v = valid_config().new_tree(&mut runner).unwrap().current();
        let text = serde_yaml::to_string(&v).unwrap();
        let c = config::parse(Path::new("gen.yaml"), text.as_bytes()).unwrap().config;
        for d in render::render(&c, &Inputs::default()).unwrap().documents {
            if let Some(errs) = crate::crds::violations(&crds, &d.content) {
                assert!(errs.is_empty(), "{}: {errs:?}\n{text}", d.path);
            }
        }
    }
}
