//! karpctl's rendered output checked by the tools that will consume it, not by our
//! own reading of their rules (issue 15).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use karpctl::cli::Preset;
use karpctl::config::types::IdentityMode;
use karpctl::config::Names;
use serde_json::Value;

use crate::support::*;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!("exit {:?}\n--- stdout\n{}\n--- stderr\n{}", o.status.code(), text(&o.stdout), text(&o.stderr))
}

// ---------------------------------------------------------------------------------------
// 2. `render`'s values work on their own

const ACCOUNT: &str = "111122223333";

/// `karpctl ARGS` in `dir`, offline (every AWS client pointed at a closed port).
fn karpctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_karpctl"))
        .args(args)
        .current_dir(dir)
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("NO_COLOR", "1")
        .env_remove("KARPCTL_CONFIG")
        .output()
        .expect("karpctl runs")
}

/// A fresh directory holding `config` as karpctl.yaml.
fn config_dir(name: &str, config: &str) -> PathBuf {
    let d = scratch(name);
    std::fs::write(d.join("karpctl.yaml"), config).unwrap();
    d
}

#[test]
fn render_out_refuses_irsa_values_without_the_account_id_and_names_the_flag() {
    let irsa: Vec<Preset> = presets().into_iter().filter(|p| load_preset(*p).identity.mode == IdentityMode::Irsa).collect();
    assert!(irsa.len() >= 2, "the IRSA presets (dev-gpu, falkordb) are what this is about");
    for p in irsa {
        let name = preset_name(p);
        let text_cfg = karpctl::ops::init::preset_text(p);
        let d = config_dir(&format!("irsa-{name}"), text_cfg);
        let role = Names::of(&load_preset(p)).controller_role;

        // A GitOps directory that would run the controller without credentials is not written.
        let o = karpctl(&d, &["render", "--out", "out"]);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", show(&o));
        assert!(err.contains("not writing out: helm/karpenter-values.yaml lacks the IRSA annotation eks.amazonaws.com/role-arn"), "{name}: {err}");
        assert!(err.contains(&format!(":role/{role}")) && err.contains("no AWS credentials"), "{name}: {err}");
        assert!(err.contains("help: karpctl render --out out --account-id <12-digit account id>"), "{name}: {err}");
        assert!(!d.join("out").exists(), "{name}: nothing may be written");

        // Without the values in it, the directory is complete.
        let o = karpctl(&d, &["render", "--out", "out", "--only", "manifest,template"]);
        assert!(o.status.success(), "{name}: {}", show(&o));
        assert!(!d.join("out/helm").exists() && d.join("out/cloudformation/karpenter.json").exists());

        // On stdout it is shown, with a warning at identity.mode and the flag.
        let o = karpctl(&d, &["render", "--only", "helm-values"]);
        assert!(o.status.success(), "{name}: {}", show(&o));
        let err = text(&o.stderr);
        let line = text_cfg.lines().position(|l| l.trim_start().starts_with("mode: irsa")).expect("mode: irsa in the preset") + 1;
        assert!(err.contains("warning: identity.mode: helm/karpenter-values.yaml lacks the IRSA annotation"), "{name}: {err}");
        assert!(err.contains(&format!("--> karpctl.yaml:{line}:")), "{name}: the warning points at identity.mode (line {line}): {err}");
        assert!(err.contains("help: karpctl render --account-id"), "{name}: {err}");
        assert!(!text(&o.stdout).contains("role-arn"), "{name}");
        let o = karpctl(&d, &["render", "--only", "helm-values", "-o", "json"]);
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{name}: {e}\n{}", show(&o)));
        assert!(doc["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().ends_with("(pass --account-id)")), "{name}: {doc}");

        // With it, the annotation; the partition follows the region.
        let o = karpctl(&d, &["render", "--out", "out2", "--account-id", ACCOUNT]);
        assert!(o.status.success(), "{name}: {}", show(&o));
        let values = read(&d.join("out2/helm/karpenter-values.yaml"));
        assert!(values.contains(&format!("eks.amazonaws.com/role-arn: arn:aws:iam::{ACCOUNT}:role/{role}")), "{name}: {values}");
        let o = karpctl(&d, &["render", "--only", "helm-values", "--account-id", ACCOUNT, "--region", "cn-north-1"]);
        assert!(text(&o.stdout).contains(&format!("role-arn: arn:aws-cn:iam::{ACCOUNT}:role/{role}")), "{name}: {}", show(&o));
        let o = karpctl(&d, &["render", "--only", "helm-values", "--account-id", "12345"]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", show(&o));
        assert!(text(&o.stderr).contains("an AWS account id is 12 digits"), "{name}: {}", show(&o));
        let _ = std::fs::remove_dir_all(&d);
    }
    // `auto` renders for Pod Identity, complete without an account id, and says so.
    let d = config_dir("irsa-auto", karpctl::ops::init::preset_text(Preset::Default));
    let o = karpctl(&d, &["render", "--out", "out"]);
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("note: identity.mode auto: the controller's values are rendered for EKS Pod Identity"), "{}", show(&o));
    assert!(!read(&d.join("out/helm/karpenter-values.yaml")).contains("role-arn"));
    let _ = std::fs::remove_dir_all(&d);
}
