//! The binary as a user runs it: exit codes, output streams, files written.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;

fn karpctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_karpctl"))
        .args(args)
        .current_dir(dir)
        // Nothing here may reach AWS: point every client at a closed port.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("NO_COLOR", "1")
        .env_remove("KARPCTL_CONFIG")
        .output()
        .expect("karpctl runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn init_then_validate_then_render_to_a_gitops_directory() {
    let d = scratch("init");
    let o = karpctl(&d, &["init", "--preset", "dev-gpu", "--cluster", "prod-1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let cfg = std::fs::read_to_string(d.join("karpctl.yaml")).unwrap();
    assert!(cfg.contains("name: prod-1") && !cfg.contains("my-cluster"));

    let again = karpctl(&d, &["init", "--preset", "dev-gpu"]);
    assert_eq!(again.status.code(), Some(1), "init must not overwrite");
    assert!(text(&again.stderr).contains("--force"));

    let v = karpctl(&d, &["validate"]);
    assert!(v.status.success(), "{}", text(&v.stderr));

    // dev-gpu uses IRSA: the values need the account id (without it, --out refuses; tests/it/validators.rs).
    let r = karpctl(&d, &["render", "--out", "out", "--ami", "gpu=al2023@v20250915", "--account-id", "111122223333"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let k = std::fs::read_to_string(d.join("out/kustomization.yaml")).unwrap();
    for f in ["ec2nodeclass-default.yaml", "ec2nodeclass-gpu.yaml", "nodepool-gpu-inference.yaml"] {
        assert!(k.contains(f), "kustomization lacks {f}:\n{k}");
        assert!(d.join("out").join(f).exists());
    }
    assert!(!k.contains("helm/"), "values files are not kustomize resources");
    let gpu = std::fs::read_to_string(d.join("out/ec2nodeclass-gpu.yaml")).unwrap();
    assert!(gpu.contains("alias: al2023@v20250915"), "{gpu}");
    let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("out/cloudformation/karpenter.json")).unwrap()).unwrap();
    assert!(t["Resources"]["KarpenterNodeRole"].is_object());
}

#[test]
fn invalid_config_exits_3_with_positions_and_json() {
    let d = scratch("invalid");
    std::fs::write(d.join("karpctl.yaml"), "apiVersion: karpctl.io/v1alpha1\ncluster:\n  name: x\nnodePools:\n  - name: a\n    nodeClass: missing\n    weight: 0\n").unwrap();
    let o = karpctl(&d, &["render"]);
    assert_eq!(o.status.code(), Some(3));
    let err = text(&o.stderr);
    assert!(err.contains("nodePools[0].weight") && err.contains("karpctl.yaml:7:"), "{err}");
    assert!(err.contains("nodePools[0].nodeClass") && err.contains("karpctl.yaml:6:"), "{err}");
    assert!(o.stdout.is_empty(), "nothing rendered on error");

    let j = karpctl(&d, &["render", "-o", "json"]);
    assert_eq!(j.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("JSON error document");
    let fields: Vec<&str> = v["error"]["diagnostics"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"nodePools[0].weight"), "{fields:?}");
}

#[test]
fn rollback_flags_and_a_bad_config_fail_before_any_call() {
    let d = scratch("rollback-cli");
    let o = karpctl(&d, &["plan", "--purge"]);
    assert_eq!(o.status.code(), Some(64), "--purge plans a rollback only: {}", text(&o.stderr));
    let h = karpctl(&d, &["rollback", "--help"]);
    for flag in ["--dry-run", "--purge", "--force", "--delete-crds", "--wait-timeout"] {
        assert!(text(&h.stdout).contains(flag), "rollback --help lacks {flag}");
    }
    std::fs::write(d.join("karpctl.yaml"), "apiVersion: karpctl.io/v1alpha1\ncluster: {name: c}\nrollback:\n  nodegroups:\n    - {name: ng, minSize: 3, desiredSize: 1, maxSize: 2}\n").unwrap();
    for cmd in [vec!["rollback"], vec!["rollback", "--dry-run"], vec!["plan", "--rollback"]] {
        let o = karpctl(&d, &cmd);
        assert_eq!(o.status.code(), Some(3), "{cmd:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains("rollback.nodegroups[0].desiredSize"), "{cmd:?}: {}", text(&o.stderr));
    }
    assert!(!d.join(".karpctl").exists(), "no state, no lock");
}

#[test]
fn usage_errors_and_help() {
    let d = scratch("usage");
    let o = karpctl(&d, &["render", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(64));
    let h = karpctl(&d, &["--help"]);
    assert!(h.status.success());
    for sub in ["up", "plan", "render", "status", "verify", "amis", "init", "doctor", "rollback", "state", "completions"] {
        assert!(text(&h.stdout).contains(sub), "help lacks {sub}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let c = karpctl(&d, &["completions", shell]);
        assert!(c.status.success() && text(&c.stdout).contains("karpctl"), "{shell}");
    }
}

#[test]
fn render_json_stream_and_only_filter() {
    let d = scratch("json");
    let cfg = repo().join("examples/default.yaml");
    let o = karpctl(&d, &["render", "-c", cfg.to_str().unwrap(), "-o", "json", "--only", "manifest"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "Render");
    let kinds: Vec<&str> = v["documents"].as_array().unwrap().iter().map(|d| d["content"]["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["EC2NodeClass", "EC2NodeClass", "NodePool", "NodePool"]);
    let t = karpctl(&d, &["render", "-c", cfg.to_str().unwrap(), "--only", "template"]);
    assert!(text(&t.stdout).contains("AWSTemplateFormatVersion"));
    assert!(!text(&t.stdout).contains("kind: NodePool"));
}

#[test]
fn the_config_schema_is_printable_json() {
    let d = scratch("schema");
    let o = karpctl(&d, &["schema"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["properties"]["nodePools"].is_object());
}

#[test]
fn status_and_state_work_on_a_fresh_directory_and_foreign_state_is_refused() {
    let d = scratch("engine-cmds");
    std::fs::copy(repo().join("examples/falkordb.yaml"), d.join("karpctl.yaml")).unwrap();
    let s = karpctl(&d, &["status"]);
    assert!(s.status.success());
    assert!(text(&s.stdout).contains(".karpctl/my-cluster.state.json") && text(&s.stdout).contains("No state yet"), "{}", text(&s.stdout));
    let show = karpctl(&d, &["state", "show"]);
    assert_eq!(show.status.code(), Some(1));
    assert!(text(&show.stderr).contains("no state"), "{}", text(&show.stderr));
    // A foreign cluster's state file is refused, and nothing is written over it.
    std::fs::create_dir_all(d.join(".karpctl")).unwrap();
    let foreign = serde_json::json!({"version": 1, "lineage": "6b1c3c1e-0000-4000-8000-000000000000", "serial": 3,
        "tool_version": "0.1.0", "cluster": "other", "region": null, "steps": {}});
    let path = d.join(".karpctl/my-cluster.state.json");
    std::fs::write(&path, serde_json::to_string(&foreign).unwrap()).unwrap();
    let before = std::fs::read(&path).unwrap();
    // Refused before any AWS call (the endpoint here is a closed port).
    for cmd in [&["plan"][..], &["up"][..], &["status"][..]] {
        let r = karpctl(&d, cmd);
        assert_eq!(r.status.code(), Some(1), "{cmd:?}");
        assert!(text(&r.stderr).contains("other"), "{cmd:?}: {}", text(&r.stderr));
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!d.join(".karpctl/my-cluster.state.json.lock").exists(), "the lock is released after a refusal");
}
