//! karpctl's rendered output checked by the tools that will consume it, not by our
//! own reading of their rules (issue 15): `cfn-lint` on every preset's template for
//! every supported Karpenter version, shown failing on a broken template too, so a
//! silent linter cannot pass for a clean result; and `render`'s values must work on
//! their own.
//!
//! cfn-lint is installed on first use (scripts/validators.sh, its own pinned venv).
//! Without it a test is skipped with the reason, except under `CI`, where that fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use karpctl::cli::Preset;
use karpctl::config::types::IdentityMode;
use karpctl::config::Names;
use karpctl::render::{self, Encoding};
use serde_json::{json, Value};

use crate::security::{template, versions};
use crate::support::*;

// ---------------------------------------------------------------------------------------
// Finding the validators

/// Skips (None) with the reason, or fails under CI, where a missing validator is a broken setup.
fn skip<T>(why: String) -> Option<T> {
    assert!(std::env::var_os("CI").is_none(), "CI is set but {why}");
    eprintln!("skipping: {why}");
    None
}

/// The last line a repo script prints on stdout (a path), or a skip with its stderr.
fn script_path(script: &str, args: &[&str]) -> Option<PathBuf> {
    let o = Command::new(repo().join(script)).args(args).output().unwrap_or_else(|e| panic!("running {script}: {e}"));
    if !o.status.success() {
        return skip(format!("{script} {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&o.stderr)));
    }
    let out = String::from_utf8(o.stdout).expect("a UTF-8 path");
    Some(PathBuf::from(out.lines().last().unwrap_or_default().trim()))
}

fn cfn_lint() -> Option<PathBuf> {
    script_path("scripts/validators.sh", &["path", "cfn-lint"])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn show(o: &Output) -> String {
    format!("exit {:?}\n--- stdout\n{}\n--- stderr\n{}", o.status.code(), text(&o.stdout), text(&o.stderr))
}

// ---------------------------------------------------------------------------------------
// 1. cfn-lint

/// The cfn-lint findings left standing, by rule id and the template path they are at,
/// each with why. Every other finding, of any level (informational included), fails the
/// test, and so does an entry here that no longer fires, so the list cannot go stale.
/// (cfn-lint's experimental rules, `-e`, are not run: today that is only I4010, which
/// asks for an AI-context Metadata block on every resource.)
const CFN_LINT_IGNORED: &[(&str, &str, &str)] = &[(
    "I3011",
    "Resources/KarpenterInterruptionQueue",
    "no DeletionPolicy/UpdateReplacePolicy on the interruption queue: it holds only EC2 and \
     Health events for 300 s, nothing to keep, and CloudFormation's default (Delete) is what \
     `rollback --purge` wants when it deletes the stack",
)];

/// The partitions' regions every template is linted for: the presets' own, and one
/// region of each other partition (the template is partition-agnostic by design).
const LINT_REGIONS: &[&str] = &["us-east-1", "us-west-2", "eu-west-1", "cn-north-1", "us-gov-west-1"];

/// One cfn-lint finding.
#[derive(Debug, Clone)]
struct Finding {
    rule: String,
    level: String,
    file: String,
    path: String,
    message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} at {}: {}", self.level, self.rule, self.file, self.path, self.message)
    }
}

/// Runs cfn-lint (every rule level, informational included) over `files`.
fn lint(bin: &Path, files: &[PathBuf]) -> Vec<Finding> {
    let o = Command::new(bin)
        .args(["--format", "json", "--include-checks", "I", "--non-zero-exit-code", "none", "--regions"])
        .args(LINT_REGIONS)
        .arg("--")
        .args(files)
        .output()
        .expect("cfn-lint runs");
    assert!(o.status.success(), "cfn-lint itself failed:\n{}", show(&o));
    let found: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("cfn-lint's JSON: {e}\n{}", show(&o)));
    found
        .iter()
        .map(|f| Finding {
            rule: f["Rule"]["Id"].as_str().unwrap_or("?").to_string(),
            level: f["Level"].as_str().unwrap_or("?").to_string(),
            file: Path::new(f["Filename"].as_str().unwrap_or("?")).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            path: f["Location"]["Path"].as_array().map(|p| p.iter().map(|s| s.to_string().trim_matches('"').to_string()).collect::<Vec<_>>().join("/")).unwrap_or_default(),
            message: f["Message"].as_str().unwrap_or("?").to_string(),
        })
        .collect()
}

/// The template file exactly as `render --out` writes it (and `up` deploys it).
fn write_template(dir: &Path, name: &str, t: &Value) -> PathBuf {
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, render::encode(t, Encoding::Json)).unwrap();
    p
}

#[test]
fn cfn_lint_finds_nothing_in_any_template_of_any_preset_or_version() {
    let Some(bin) = cfn_lint() else { return };
    let dir = scratch("cfn-lint");
    let mut files = Vec::new();
    for p in presets() {
        let c = load_preset(p);
        let own = c.karpenter.settings.interruption_queue;
        // Every preset as configured; the first one with its queue setting flipped too
        // (the template's only structural switch besides the version).
        let queues: &[bool] = if p == presets()[0] { &[own, !own] } else { &[own] };
        for v in versions() {
            for &queue in queues {
                let name = format!("{}-{v}-{}", preset_name(p), if queue { "queue" } else { "no-queue" });
                files.push(write_template(&dir, &name, &template(&c, &v, queue)));
            }
        }
    }
    assert_eq!(files.len(), versions().len() * (presets().len() + 1));
    let findings = lint(&bin, &files);
    let mut problems = Vec::new();
    let mut ignored: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &findings {
        match CFN_LINT_IGNORED.iter().find(|(id, at, _)| *id == f.rule && f.path == *at) {
            Some((id, _, _)) => *ignored.entry(id).or_default() += 1,
            None => problems.push(f.to_string()),
        }
    }
    for (id, at, why) in CFN_LINT_IGNORED {
        match ignored.get(id) {
            Some(n) => eprintln!("cfn-lint {id} at {at}: {n} finding(s) ignored: {why}"),
            None => problems.push(format!("CFN_LINT_IGNORED lists {id} at {at}, which no longer fires: remove it")),
        }
    }
    assert!(problems.is_empty(), "{} cfn-lint finding(s) in {} templates:\n{}", problems.len(), files.len(), problems.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cfn_lint_fails_a_broken_template() {
    let Some(bin) = cfn_lint() else { return };
    let dir = scratch("cfn-lint-bad");
    let c = load_preset(Preset::Default);
    let good = template(&c, "1.14.1", true);
    let mut dangling = good.clone();
    dangling["Outputs"]["NodeRoleArn"]["Value"] = json!({"Fn::GetAtt": ["NoSuchRole", "Arn"]});
    let mut retention = good.clone();
    retention["Resources"]["KarpenterInterruptionQueue"]["Properties"]["MessageRetentionPeriod"] = json!(30);
    let files = [write_template(&dir, "dangling", &dangling), write_template(&dir, "retention", &retention)];
    let findings = lint(&bin, &files);
    let errors = |file: &str| findings.iter().filter(|f| f.file == file && f.level == "Error").map(|f| f.to_string()).collect::<Vec<_>>();
    assert!(errors("dangling.json").iter().any(|f| f.contains("NoSuchRole")), "a GetAtt of a missing resource: {findings:#?}");
    assert!(errors("retention.json").iter().any(|f| f.contains("MessageRetentionPeriod")), "a retention below SQS's 60 s: {findings:#?}");
    let _ = std::fs::remove_dir_all(&dir);
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
