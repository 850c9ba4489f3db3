//! Staged AMI rollouts on the sandbox, with the real Karpenter controller: AWS
//! publishes a new AMI release, `up --update-amis --staged` moves one node class
//! per stage and checks it (old nodes replaced, nodes Ready, no pod stuck, a test
//! pod), stops at the first failed check with the commands to continue or go
//! back, and both of those work.

use serde_json::{json, Value};

use crate::up::{bed_minor, sandbox_config, show, Sandbox};

fn pins(sb: &Sandbox) -> Value {
    sb.state("state.json")["steps"]["amis/pins"]["outputs"]["pins"].clone()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A pod no node can take: the check between stages must not pass while it waits.
const STUCK: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stuck", "namespace": "default"},
 "spec": {"nodeSelector": {"karpenter.sh/nodepool": "default"},
          "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10", "resources": {"requests": {"cpu": "900"}}}]}}"#;

#[test]
fn a_staged_ami_rollout_moves_one_class_per_stage_stops_at_a_failed_check_and_continues_or_goes_back() {
    let Some(sb) = Sandbox::start("rollout", &[]) else { return };
    sb.write_config(&sandbox_config());
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    let before = pins(&sb);
    // A node of class default on today's AMI, kept busy by the test pod.
    let v = sb.karpctl(&["verify", "--pool", "default", "--keep", "-o", "json", "--timeout", "240s"]);
    assert!(v.status.success(), "{}\n{}", show(&v), sb.controller_log());
    let old_node = serde_json::from_slice::<Value>(&v.stdout).unwrap()["node"].as_str().unwrap().to_string();

    // AWS publishes a new release for the cluster's Kubernetes version.
    let minor = bed_minor(&sb.kube);
    sb.aws.control("POST", "amis", Some(&json!({"kubernetesVersion": minor, "release": "v20251001", "bottlerocket": "1.47.0-5c1d2e3f"})));
    let plain = sb.karpctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(plain.status.code(), Some(0), "pins are held until asked: {}", show(&plain));
    let all = sb.karpctl(&["up", "--dry-run", "--update-amis"]);
    let out = text(&all.stdout);
    assert!(out.contains("move the AMI pins of default, gpu") && out.contains("`karpctl up --staged` moves one class at a time"), "{}", show(&all));
    let staged = sb.karpctl(&["up", "--dry-run", "--update-amis", "--staged"]);
    let err = text(&staged.stderr);
    assert!(err.contains("staged rollout, 2 stage(s)") && err.contains("stage 1/2: class default: al2023@") && err.contains("stage 2/2: class gpu"), "{}", show(&staged));
    let out = text(&staged.stdout);
    assert!(out.contains("default.ami") && !out.contains("gpu.ami") && out.contains("amis/check/default"), "the first stage only: {}", show(&staged));

    // A pod stuck Pending fails the first stage's check: default moved, gpu did not.
    let stuck = sb.dir.join("stuck.json");
    std::fs::write(&stuck, STUCK).unwrap();
    let o = sb.kubectl(&["apply", "-f", stuck.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    let failed = sb.karpctl(&["up", "--update-amis", "--staged", "--wait-timeout", "60s"]);
    assert_eq!(failed.status.code(), Some(1), "{}", show(&failed));
    let err = text(&failed.stderr);
    assert!(err.contains("stage 1/2: class default") && err.contains("failed, so the rollout stopped (1 stage(s) not run)") && err.contains("default/stuck"), "{}", show(&failed));
    assert!(err.contains("continue: fix the cause, then `karpctl up --update-amis --staged --wait-timeout 1m` checks class default again"), "{}", show(&failed));
    assert!(err.contains(&format!("go back: `karpctl up --revert-amis default` puts class default back on {}", before["default"]["value"].as_str().unwrap())), "{}", show(&failed));
    let moved = pins(&sb);
    assert_ne!(moved["default"], before["default"], "stage 1 moved default");
    assert_eq!(moved["gpu"], before["gpu"], "stage 2 did not run");
    let st = sb.state("state.json");
    assert_eq!(st["steps"]["amis/check/default"]["status"], "failed", "{}", st["steps"]["amis/check/default"]);

    // Continue: the stuck pod goes, the run checks default again, then moves gpu.
    assert!(sb.kubectl(&["delete", "pod", "stuck", "--wait=false"]).status.success());
    let done = sb.karpctl(&["up", "--update-amis", "--staged", "-o", "json"]);
    assert!(done.status.success(), "{}\n{}", show(&done), sb.controller_log());
    let doc: Value = serde_json::from_slice(&done.stdout).unwrap();
    let stages: Vec<(String, String)> = doc["stages"].as_array().unwrap().iter().map(|s| (s["class"].as_str().unwrap().into(), s["result"].as_str().unwrap().into())).collect();
    assert_eq!(stages, [("gpu".to_string(), "passed".to_string())], "{doc}");
    let after = pins(&sb);
    assert_eq!(after["default"], moved["default"]);
    assert_ne!(after["gpu"], before["gpu"], "gpu moved in its stage");
    let st = sb.state("state.json");
    for class in ["default", "gpu"] {
        let check = &st["steps"][format!("amis/check/{class}")];
        assert_eq!(check["status"], "done", "{check}");
        assert_eq!(check["outputs"]["pin"], after[class]["value"], "{check}");
    }
    // The node on the old AMI was replaced before default's check passed.
    let gone = sb.kubectl(&["get", "node", &old_node]);
    assert!(!gone.status.success() || text(&gone.stdout).contains("SchedulingDisabled"), "node {old_node} on the old AMI is still in service: {}", show(&gone));
    let again = sb.karpctl(&["up", "--update-amis", "--staged"]);
    assert!(again.status.success() && text(&again.stdout).contains("every class is on the newest AMIs"), "{}", show(&again));

    // Go back: gpu returns to the pin it had before its move; later runs hold it.
    let back = sb.karpctl(&["up", "--revert-amis", "gpu"]);
    assert!(back.status.success(), "{}", show(&back));
    assert!(text(&back.stdout).contains("gpu.ami"), "{}", show(&back));
    assert_eq!(pins(&sb)["gpu"], before["gpu"]);
    let held = sb.karpctl(&["plan", "--detailed-exitcode"]);
    assert_eq!(held.status.code(), Some(0), "{}", show(&held));
    // A class that is not in the config is refused before anything runs.
    sb.aws_mutations();
    let bad = sb.karpctl(&["up", "--revert-amis", "nosuch"]);
    assert_eq!(bad.status.code(), Some(1), "{}", show(&bad));
    assert!(text(&bad.stderr).contains("--revert-amis nosuch: no node class `nosuch`"), "{}", show(&bad));
    assert_eq!(sb.aws_mutations()["counts"], json!({}), "refused before any AWS call");
}
