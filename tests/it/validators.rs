//! karpctl's rendered output checked by the tools that will consume it, not by our
//! own reading of their rules (issue 15): `cfn-lint` on every preset's template for
//! every supported Karpenter version; `helm template` of the real Karpenter and
//! NVIDIA device plugin charts (scripts/upstream.sh) with the values `render --out`
//! writes and the values `up` passes; NVIDIA's own config parser (api/config/v1,
//! built by scripts/validators.sh) on the device plugin config, as the chart's
//! ConfigMap delivers it. Each validator is also shown failing on a broken input, so
//! a silent validator cannot pass for a clean result.
//!
//! The validators are installed or built on first use (scripts/validators.sh, about a
//! minute); helm comes from the Kubernetes test bed, which a test never builds. Without
//! them a test is skipped with the reason, except under `CI`, where that fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use karpctl::cli::Preset;
use karpctl::config::types::IdentityMode;
use karpctl::config::{Config, Names};
use karpctl::render::{self, Encoding, Facts};
use serde_json::{json, Value};

use crate::security::{template, versions};
use crate::cli::karpctl;
use crate::support::*;

// ---------------------------------------------------------------------------------------
// Finding the validators

fn cache() -> PathBuf {
    std::env::var_os("KARPCTL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/karpctl")))
        .unwrap_or_else(|| PathBuf::from(".cache/karpctl"))
}

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

fn nvconfig() -> Option<PathBuf> {
    script_path("scripts/validators.sh", &["path", "nvconfig"])
}

/// helm from the Kubernetes test bed; never starts its 10-minute build (scripts/test.sh does).
fn helm() -> Option<PathBuf> {
    let built = std::fs::read_dir(cache().join("kube-bin"))
        .map(|mut d| d.any(|e| e.map(|e| e.path().join(".complete").exists()).unwrap_or(false)))
        .unwrap_or(false);
    if !built {
        return skip("the Kubernetes test bed is not built (run scripts/testbed-kube.sh build)".into());
    }
    script_path("scripts/testbed-kube.sh", &["bin"]).map(|d| d.join("helm"))
}

/// The real chart of the pinned release, from its Go module (scripts/upstream.sh).
fn chart(name: &str) -> Option<PathBuf> {
    chart_at(name, "")
}

/// The real chart of a given release ("" = the pinned one).
fn chart_at(name: &str, version: &str) -> Option<PathBuf> {
    script_path("scripts/upstream.sh", &["path", name, version, "chart"])
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
        assert!(err.contains("help: karpctl render --account-id <ACCOUNT_ID> --out out   # the cluster's 12-digit account"), "{name}: {err}");
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

// ---------------------------------------------------------------------------------------
// 3. helm template of the real Karpenter chart

const ENDPOINT: &str = "https://EXAMPLE0123.gr7.us-west-2.eks.amazonaws.com";

/// The values files exactly as `render --out` writes them, from the library (for
/// configs and facts no file or flag expresses: `up`'s identity decision).
fn values_files(c: &Config, facts: Facts, dir: &Path) -> BTreeMap<String, PathBuf> {
    let inputs = render::Inputs { facts, ..pinned_inputs(c) };
    let b = render::render(c, &inputs).expect("renders");
    let docs: Vec<&render::Document> = b.documents.iter().filter(|d| d.kind == render::DocKind::HelmValues).collect();
    render::files(&docs, Encoding::Yaml)
        .into_iter()
        .map(|(name, content)| {
            let p = dir.join(name.replace('/', "-"));
            std::fs::write(&p, content).unwrap();
            (name, p)
        })
        .collect()
}

/// `helm template` of a local chart with one values file: every document it renders.
fn helm_template(helm: &Path, release: &str, chart: &Path, namespace: &str, values: &Path) -> Vec<Value> {
    let o = Command::new(helm)
        .args(["template", release])
        .arg(chart)
        .args(["--namespace", namespace, "--values"])
        .arg(values)
        .output()
        .expect("helm runs");
    assert!(o.status.success(), "helm template {release} with {}:\n{}\n--- values\n{}", values.display(), show(&o), read(values));
    let text = String::from_utf8(o.stdout).expect("UTF-8");
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).expect("helm's output is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

/// A container's env as name → value (None for `valueFrom`).
fn env_of(container: &Value) -> BTreeMap<String, Option<String>> {
    container["env"]
        .as_array()
        .map(|a| a.iter().map(|e| (e["name"].as_str().unwrap_or_default().to_string(), e["value"].as_str().map(String::from))).collect())
        .unwrap_or_default()
}

/// `reservedCapacity` → `ReservedCapacity`, as the chart spells gates in FEATURE_GATES.
fn gate_name(key: &str) -> String {
    let mut cs = key.chars();
    cs.next().map(|f| f.to_uppercase().chain(cs).collect()).unwrap_or_default()
}

/// What the controller needs from the chart's output: its identity, the cluster, the
/// queue, replicas, resources and placement, as the config (and the facts) say.
fn check_controller(label: &str, c: &Config, docs: &[Value], chart_values: &Value, endpoint: Option<&str>, role_arn: Option<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut p = |s: String| problems.push(format!("{label}: {s}"));
    let names = Names::of(c);
    let ns = c.karpenter.namespace.as_str();
    let Some(deploy) = find(docs, "Deployment", "karpenter") else {
        return vec![format!("{label}: no Deployment karpenter in the chart's output")];
    };
    let spec = &deploy["spec"]["template"]["spec"];
    // Pod Identity's association and the IRSA trust both name <namespace>/karpenter.
    if deploy["metadata"]["namespace"] != ns {
        p(format!("Deployment in namespace {}, want {ns}", deploy["metadata"]["namespace"]));
    }
    if spec["serviceAccountName"] != "karpenter" {
        p(format!("serviceAccountName {}, want karpenter (the identity step trusts {ns}/karpenter)", spec["serviceAccountName"]));
    }
    match find(docs, "ServiceAccount", "karpenter") {
        None => p("no ServiceAccount karpenter".into()),
        Some(sa) => {
            if sa["metadata"]["namespace"] != ns {
                p(format!("ServiceAccount in namespace {}, want {ns}", sa["metadata"]["namespace"]));
            }
            let got = sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].as_str();
            if got != role_arn {
                p(format!("ServiceAccount annotation eks.amazonaws.com/role-arn is {got:?}, want {role_arn:?}"));
            }
        }
    }
    let want_replicas = c.karpenter.replicas.map(u64::from).or(chart_values["replicas"].as_u64());
    if deploy["spec"]["replicas"].as_u64() != want_replicas {
        p(format!("replicas {}, want {want_replicas:?}", deploy["spec"]["replicas"]));
    }
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    let Some(ctr) = containers.iter().find(|x| x["name"] == "controller") else {
        p(format!("no controller container in {containers:?}"));
        return problems;
    };
    let env = env_of(ctr);
    let want = |name: &str, v: Option<String>| (name.to_string(), v);
    // A setting the config leaves out keeps the chart's default.
    let default = |key: &str| chart_values["settings"][key].as_str().map(String::from);
    let settings = &c.karpenter.settings;
    let mut expected = vec![
        want("CLUSTER_NAME", Some(c.cluster.name.clone())),
        want("CLUSTER_ENDPOINT", endpoint.map(String::from)),
        want("INTERRUPTION_QUEUE", settings.interruption_queue.then(|| names.queue.clone())),
        want("BATCH_MAX_DURATION", settings.batch_max_duration.clone().or_else(|| default("batchMaxDuration"))),
        want("BATCH_IDLE_DURATION", settings.batch_idle_duration.clone().or_else(|| default("batchIdleDuration"))),
        want("RESERVED_ENIS", settings.reserved_enis.map(|n| n.to_string()).or_else(|| default("reservedENIs"))),
    ];
    if let Some(p) = settings.min_values_policy {
        expected.push(want("MIN_VALUES_POLICY", Some(serde_json::to_value(p).unwrap().as_str().unwrap_or_default().to_string())));
    }
    if settings.isolated_vpc == Some(true) {
        expected.push(want("ISOLATED_VPC", Some("true".into())));
    }
    for (name, v) in expected {
        let got = env.get(&name).cloned().flatten();
        if got != v {
            p(format!("env {name} = {got:?}, want {v:?}"));
        }
    }
    let gates = env.get("FEATURE_GATES").cloned().flatten().unwrap_or_default();
    for (gate, on) in &settings.feature_gates {
        let entry = format!("{}={on}", gate_name(gate));
        if !gates.split(',').any(|g| g == entry) {
            p(format!("FEATURE_GATES {gates:?} lacks {entry}"));
        }
    }
    // 1.15's AWS gates: AWS_FEATURE_GATES spells the DRA ones in capitals.
    let aws_gates = env.get("AWS_FEATURE_GATES").cloned().flatten().unwrap_or_default();
    for (gate, on) in &settings.aws_feature_gates {
        let name = match gate.strip_prefix("dra") {
            Some(rest) => format!("DRA{rest}"),
            None => gate_name(gate),
        };
        let entry = format!("{name}={on}");
        if !aws_gates.split(',').any(|g| g == entry) {
            p(format!("AWS_FEATURE_GATES {aws_gates:?} lacks {entry}"));
        }
    }
    for (kind, want) in [("requests", &c.karpenter.resources.requests), ("limits", &c.karpenter.resources.limits)] {
        for (res, q) in want {
            if ctr["resources"][kind][res].as_str() != Some(q.0.as_str()) {
                p(format!("resources.{kind}.{res} = {}, want {}", ctr["resources"][kind][res], q.0));
            }
        }
    }
    for (k, v) in &c.karpenter.node_selector {
        if spec["nodeSelector"][k] != v.as_str() {
            p(format!("nodeSelector {k} = {}, want {v}", spec["nodeSelector"][k]));
        }
    }
    let tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for t in &c.karpenter.tolerations {
        if !tolerations.iter().any(|x| x["key"].as_str() == t.key.as_deref()) {
            p(format!("no toleration for {:?} in {tolerations:?}", t.key));
        }
    }
    problems
}

/// Every setting of the controller that karpctl passes to the chart, set away from its default.
const EVERY_CONTROLLER_SETTING: &str = "\
apiVersion: karpctl.io/v1alpha1
cluster: {name: every-setting, region: us-west-2}
karpenter:
  namespace: karpenter
  replicas: 3
  resources: {requests: {cpu: 500m, memory: 512Mi}, limits: {memory: 1Gi}}
  settings:
    interruptionQueue: false
    featureGates: {spotToSpotConsolidation: true, nodeRepair: true}
    batchMaxDuration: 20s
    batchIdleDuration: 2s
    isolatedVPC: true
    reservedENIs: 1
    minValuesPolicy: BestEffort
  nodeSelector: {node-role.example.com/system: \"true\"}
  tolerations: [{key: CriticalAddonsOnly, operator: Exists}, {key: dedicated, operator: Equal, value: system, effect: NoSchedule}]
identity: {mode: irsa, roleName: my-karpenter}
";

/// The configs the controller checks run on: every preset, and every setting at once.
fn controller_configs() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        presets().into_iter().map(|p| (preset_name(p).to_string(), karpctl::ops::init::preset_text(p).to_string())).collect();
    out.push(("every-setting".into(), EVERY_CONTROLLER_SETTING.into()));
    out
}

fn parse_config(label: &str, yaml: &str) -> Config {
    match karpctl::config::parse(Path::new("karpctl.yaml"), yaml.as_bytes()) {
        Ok(l) => l.config,
        Err(e) => panic!("{label} does not validate:\n{e}"),
    }
}

fn chart_values(chart: &Path) -> Value {
    serde_yaml::from_str(&read(&chart.join("values.yaml"))).expect("the chart's values.yaml parses")
}

#[test]
fn the_real_karpenter_chart_runs_a_working_controller_from_a_render_out_directory() {
    // The GitOps path: `render --out` with the facts offline flags supply, then the real
    // chart with the values file it wrote, as Argo CD or Flux would install it.
    let (Some(helm), Some(chart)) = (helm(), chart("karpenter")) else { return };
    let defaults = chart_values(&chart);
    let mut problems = Vec::new();
    for (name, yaml) in controller_configs() {
        let name = name.as_str();
        let c = parse_config(name, &yaml);
        let d = config_dir(&format!("chart-{name}"), &yaml);
        let o = karpctl(&d, &["render", "--out", "out", "--account-id", ACCOUNT, "--cluster-endpoint", ENDPOINT]);
        assert!(o.status.success(), "{name}: {}", show(&o));
        let docs = helm_template(&helm, "karpenter", &chart, &c.karpenter.namespace, &d.join("out/helm/karpenter-values.yaml"));
        // Only an explicit `irsa` is known offline; `auto` renders for Pod Identity (and says so).
        let irsa = c.identity.mode == IdentityMode::Irsa;
        let arn = irsa.then(|| format!("arn:aws:iam::{ACCOUNT}:role/{}", Names::of(&c).controller_role));
        problems.extend(check_controller(name, &c, &docs, &defaults, Some(ENDPOINT), arn.as_deref()));
        if c.identity.mode == IdentityMode::Auto {
            assert!(text(&o.stderr).contains("identity.mode auto"), "{name}: render must say which identity it rendered for:\n{}", show(&o));
        }
        let _ = std::fs::remove_dir_all(&d);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_real_karpenter_chart_runs_a_working_controller_from_ups_values_in_either_identity_mode() {
    // `up` knows the identity step's decision and the role's ARN; both modes, every preset.
    let (Some(helm), Some(chart)) = (helm(), chart("karpenter")) else { return };
    let defaults = chart_values(&chart);
    let mut problems = Vec::new();
    for (name, yaml) in controller_configs() {
        let c = parse_config(&name, &yaml);
        for irsa in [true, false] {
            let label = format!("{name} irsa={irsa}");
            let d = scratch("chart-up");
            let facts = Facts {
                account_id: Some(ACCOUNT.into()),
                partition: Some("aws".into()),
                cluster_endpoint: Some(ENDPOINT.into()),
                irsa: Some(irsa),
            };
            let files = values_files(&c, facts, &d);
            let docs = helm_template(&helm, "karpenter", &chart, &c.karpenter.namespace, &files["helm/karpenter-values.yaml"]);
            let arn = irsa.then(|| format!("arn:aws:iam::{ACCOUNT}:role/{}", Names::of(&c).controller_role));
            problems.extend(check_controller(&label, &c, &docs, &defaults, Some(ENDPOINT), arn.as_deref()));
            let _ = std::fs::remove_dir_all(&d);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_real_1_15_chart_takes_the_1_15_settings() {
    // Karpenter 1.15's new gates, through `render --out`, into the real 1.15.0 chart.
    let (Some(helm), Some(chart15)) = (helm(), chart_at("karpenter", "1.15.0")) else { return };
    let defaults = chart_values(&chart15);
    let yaml = EVERY_CONTROLLER_SETTING
        .replace("  namespace: karpenter\n", "  namespace: karpenter\n  version: 1.15.0\n")
        .replace("featureGates: {spotToSpotConsolidation: true, nodeRepair: true}",
                 "featureGates: {spotToSpotConsolidation: true, nodeRepair: true, podDeletionCostManagement: true}\n    awsFeatureGates: {rebootForRepair: true, nodeClassCEL: true}");
    let c = parse_config("every-setting-1.15", &yaml);
    assert_eq!((c.karpenter.version.as_str(), c.karpenter.settings.aws_feature_gates.len()), ("1.15.0", 2), "{yaml}");
    let d = config_dir("chart-1-15", &yaml);
    let o = karpctl(&d, &["render", "--out", "out", "--account-id", ACCOUNT, "--cluster-endpoint", ENDPOINT]);
    assert!(o.status.success(), "{}", show(&o));
    let docs = helm_template(&helm, "karpenter", &chart15, &c.karpenter.namespace, &d.join("out/helm/karpenter-values.yaml"));
    let arn = format!("arn:aws:iam::{ACCOUNT}:role/my-karpenter");
    let problems = check_controller("every-setting-1.15", &c, &docs, &defaults, Some(ENDPOINT), Some(&arn));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The check reads the gates: the 1.14 chart has no AWS_FEATURE_GATES at all.
    let old = chart_at("karpenter", "1.14.1").expect("the 1.14.1 chart");
    let old_docs = helm_template(&helm, "karpenter", &old, &c.karpenter.namespace, &d.join("out/helm/karpenter-values.yaml"));
    let missed = check_controller("on-1.14", &c, &old_docs, &chart_values(&old), Some(ENDPOINT), Some(&arn)).join("\n");
    assert!(missed.contains("AWS_FEATURE_GATES \"\" lacks RebootForRepair=true"), "{missed}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_controller_check_fails_values_that_would_not_work() {
    let (Some(helm), Some(chart)) = (helm(), chart("karpenter")) else { return };
    let defaults = chart_values(&chart);
    let c = load_preset(Preset::DevGpu);
    let d = scratch("chart-bad");
    let arn = format!("arn:aws:iam::{ACCOUNT}:role/{}", Names::of(&c).controller_role);
    // No annotation (what offline render used to give an IRSA preset), no queue, one replica.
    let bad = d.join("bad.yaml");
    std::fs::write(&bad, "settings: {clusterName: my-cluster}\nreplicas: 1\n").unwrap();
    let docs = helm_template(&helm, "karpenter", &chart, &c.karpenter.namespace, &bad);
    let problems = check_controller("bad", &c, &docs, &defaults, Some(ENDPOINT), Some(&arn)).join("\n");
    for want in ["eks.amazonaws.com/role-arn is None", "INTERRUPTION_QUEUE = None", "CLUSTER_ENDPOINT = None", "replicas 1"] {
        assert!(problems.contains(want), "the check must report {want:?}:\n{problems}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

// ---------------------------------------------------------------------------------------
// 4. The NVIDIA device plugin: its real chart, and its own config parser

/// Runs NVIDIA's parser (tests/testbed/nvconfig) on a config file's text: the config as
/// the plugin holds it, or the parser's error.
fn parse_nv_config(bin: &Path, dir: &Path, config_text: &str) -> Result<Value, String> {
    let f = dir.join("nvidia-device-plugin-config.yaml");
    std::fs::write(&f, config_text).unwrap();
    let o = Command::new(bin).arg(&f).output().expect("nvconfig runs");
    match o.status.code() {
        Some(0) => Ok(serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("nvconfig's JSON: {e}\n{}", show(&o)))),
        Some(1) => Err(text(&o.stderr)),
        _ => panic!("nvconfig failed to run:\n{}", show(&o)),
    }
}

/// Configs karpctl renders for the device plugin: every preset that runs it, plus the
/// sharing settings no preset uses (MPS, renaming, the replica bounds).
fn device_plugin_configs() -> Vec<(String, Config)> {
    use karpctl::config::types::{GpuSharing, SharingConfig};
    let mut out: Vec<(String, Config)> = presets()
        .into_iter()
        .map(|p| (preset_name(p).to_string(), load_preset(p)))
        .filter(|(_, c)| karpctl::render::helm::device_plugin_enabled(c))
        .collect();
    let base = load_preset(Preset::Default);
    let with = |label: &str, s: GpuSharing| {
        let mut c = base.clone();
        c.device_plugin.sharing = Some(s);
        (label.to_string(), c)
    };
    let sc = |replicas, rename, fail| SharingConfig { replicas, rename_by_default: rename, fail_requests_greater_than_one: fail };
    out.push(with("mps", GpuSharing { time_slicing: None, mps: Some(sc(2, false, false)) }));
    out.push(with("mps-renamed", GpuSharing { time_slicing: None, mps: Some(sc(1024, true, true)) }));
    out.push(with("time-slicing-renamed", GpuSharing { time_slicing: Some(sc(1024, true, true)), mps: None }));
    out.push(with("time-slicing-2", GpuSharing { time_slicing: Some(sc(2, false, true)), mps: None }));
    out
}

/// What the plugin must make of karpctl's sharing settings.
fn check_parsed(label: &str, c: &Config, parsed: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut p = |s: String| problems.push(format!("{label}: {s}"));
    let Some(s) = &c.device_plugin.sharing else {
        return problems;
    };
    let (strategy, key, want) = match (&s.time_slicing, &s.mps) {
        (_, Some(m)) => ("mps", "mps", m),
        (Some(t), None) => ("time-slicing", "timeSlicing", t),
        (None, None) => return problems,
    };
    if parsed["sharingStrategy"] != strategy {
        p(format!("the plugin infers sharing strategy {}, want {strategy}", parsed["sharingStrategy"]));
    }
    if parsed["warnings"].as_array().is_some_and(|w| !w.is_empty()) {
        p(format!("the plugin would ignore part of the config: {}", parsed["warnings"]));
    }
    let res = &parsed["config"]["sharing"][key]["resources"];
    let rename = if want.rename_by_default { json!("nvidia.com/gpu.shared") } else { Value::Null };
    let expected = json!([{"name": "nvidia.com/gpu", "devices": "all", "replicas": want.replicas}]);
    let mut got = res.clone();
    let got_rename = got[0].as_object_mut().and_then(|o| o.remove("rename")).unwrap_or(Value::Null);
    if got != expected || got_rename != rename {
        p(format!("the plugin reads resources {res}, want {expected} with rename {rename}"));
    }
    // The plugin forces failRequestsGreaterThanOne on for MPS whatever the file says.
    let fail = want.fail_requests_greater_than_one || strategy == "mps";
    if parsed["config"]["sharing"][key]["failRequestsGreaterThanOne"].as_bool().unwrap_or(false) != fail {
        p(format!("failRequestsGreaterThanOne is {}, want {fail}", parsed["config"]["sharing"][key]["failRequestsGreaterThanOne"]));
    }
    if parsed["config"]["flags"]["migStrategy"] != "none" {
        p(format!("migStrategy {}", parsed["config"]["flags"]["migStrategy"]));
    }
    problems
}

#[test]
fn nvidias_parser_accepts_every_device_plugin_config_karpctl_renders_and_reads_what_was_meant() {
    let Some(nv) = nvconfig() else { return };
    let d = scratch("nvconfig");
    let mut problems = Vec::new();
    let mut parsed_any = 0;
    for (label, c) in device_plugin_configs() {
        let Some(cfg) = karpctl::render::helm::device_plugin_values(&c).config else { continue };
        match parse_nv_config(&nv, &d, &cfg.map[&cfg.default]) {
            Ok(parsed) => problems.extend(check_parsed(&label, &c, &parsed)),
            Err(e) => problems.push(format!("{label}: NVIDIA's parser refuses the config: {e}\n{}", cfg.map[&cfg.default])),
        }
        parsed_any += 1;
    }
    assert!(parsed_any >= 5, "only {parsed_any} configs parsed");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn nvidias_parser_refuses_a_broken_config_with_its_own_error() {
    let Some(nv) = nvconfig() else { return };
    let d = scratch("nvconfig-bad");
    let c = load_preset(Preset::Default);
    let good = karpctl::render::helm::device_plugin_values(&c).config.expect("the default preset shares GPUs").map["default"].clone();
    assert!(parse_nv_config(&nv, &d, &good).is_ok());
    let cases = [
        ("one replica", good.replace("replicas: 10", "replicas: 1"), "number of replicas must be >= 2"),
        ("unknown version", good.replace("version: v1", "version: v2"), "unknown version: v2"),
        ("a misspelt field the plugin would ignore", good.replace("timeSlicing:", "timeSlice:"), "unknown field \"timeSlice\""),
        ("no resources", good.split("    resources:").next().unwrap().to_string(), "no resources specified"),
        ("a string for replicas", good.replace("replicas: 10", "replicas: ten"), "cannot unmarshal string"),
        ("an unknown MIG strategy", good.replace("migStrategy: none", "migStrategy: some"), "unknown MIG strategy: some"),
    ];
    for (what, bad, want) in cases {
        assert_ne!(bad, good, "{what}: the edit must change the config");
        match parse_nv_config(&nv, &d, &bad) {
            Ok(v) => panic!("{what}: accepted:\n{bad}\n{v}"),
            Err(e) => assert!(e.contains(want), "{what}: want {want:?} in {e}"),
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Whether Kubernetes lets a pod with `tolerations` onto a node with `taint`.
fn tolerates(tolerations: &Value, taint: &karpctl::config::types::Taint) -> bool {
    let effect = serde_json::to_value(taint.effect).unwrap();
    tolerations.as_array().is_some_and(|ts| {
        ts.iter().any(|t| {
            let key = t["key"].is_null() || t["key"] == taint.key.as_str();
            let value = t["operator"] == "Exists" || t["value"].as_str().unwrap_or_default() == taint.value.as_deref().unwrap_or_default();
            let eff = t["effect"].is_null() || t["effect"] == effect;
            key && value && eff
        })
    })
}

/// The taints of the pools whose nodes need the plugin (NVIDIA classes on AL2023/AL2).
fn gpu_pool_taints(c: &Config) -> Vec<karpctl::config::types::Taint> {
    let classes = karpctl::render::helm::device_plugin_classes(c);
    c.node_pools.iter().filter(|p| classes.contains(&p.node_class)).flat_map(|p| p.taints.iter().chain(&p.startup_taints).cloned()).collect()
}

/// What the plugin's DaemonSet needs from the chart's output, as the config says.
fn check_device_plugin(label: &str, c: &Config, helm: &Path, chart: &Path, nv: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut p = |s: String| problems.push(format!("{label}: {s}"));
    let d = scratch("chart-dp");
    let files = values_files(c, Facts::default(), &d);
    let values_file = &files["helm/nvidia-device-plugin-values.yaml"];
    let values: Value = serde_yaml::from_str(&read(values_file)).unwrap();
    let docs = helm_template(helm, "nvidia-device-plugin", chart, &c.device_plugin.namespace, values_file);
    let Some(ds) = find(&docs, "DaemonSet", "nvidia-device-plugin") else {
        p("no DaemonSet nvidia-device-plugin".into());
        return problems;
    };
    let spec = &ds["spec"]["template"]["spec"];
    // Exactly karpctl's affinity: the chart's NFD-label terms (labels Karpenter's nodes
    // lack) must not survive the merge, or the plugin would never schedule.
    if spec["affinity"] != values["affinity"] {
        p(format!("affinity {}, want {}", spec["affinity"], values["affinity"]));
    }
    if spec["tolerations"] != values["tolerations"] {
        p(format!("tolerations {}, want {}", spec["tolerations"], values["tolerations"]));
    }
    for (k, v) in &c.device_plugin.node_selector {
        if spec["nodeSelector"][k] != v.as_str() {
            p(format!("nodeSelector {k} = {}, want {v}", spec["nodeSelector"][k]));
        }
    }
    let cm = find(&docs, "ConfigMap", "nvidia-device-plugin-configs");
    match (&values["config"]["map"]["default"], cm) {
        (Value::String(want), Some(cm)) => {
            // The chart writes each entry as a `|-` block: the text minus its last newline.
            let got = cm["data"]["default"].as_str().unwrap_or_default();
            if got != want.trim_end_matches('\n') {
                p(format!("the ConfigMap holds {got:?}, want {want:?}"));
            }
            let init = spec["initContainers"].as_array().and_then(|a| a.iter().find(|x| x["name"] == "nvidia-device-plugin-init"));
            let default = init.map(env_of).and_then(|e| e.get("DEFAULT_CONFIG").cloned().flatten());
            if default.as_deref() != Some("default") {
                p(format!("the config manager's DEFAULT_CONFIG is {default:?}, want \"default\""));
            }
            // What the plugin reads is the ConfigMap's entry, as the chart wrote it.
            match parse_nv_config(nv, &d, got) {
                Ok(parsed) => check_parsed("the ConfigMap's config", c, &parsed).into_iter().for_each(&mut p),
                Err(e) => p(format!("NVIDIA's parser refuses the ConfigMap's config: {e}")),
            }
        }
        (Value::Null, None) => {}
        (want, got) => p(format!("config {want} but ConfigMap {got:?}")),
    }
    let taints = gpu_pool_taints(c);
    let mut daemons = vec![("the device plugin", ds)];
    if c.device_plugin.sharing.as_ref().is_some_and(|s| s.mps.is_some()) {
        // MPS needs its control daemon, which runs where nodes are labelled mps.capable:
        // GFD writes that label into the host's NFD features.d, and NFD's worker, on the
        // same node, puts it on the Node. All three must run on the GPU nodes.
        for (what, name) in [
            ("the MPS control daemon", "nvidia-device-plugin-mps-control-daemon"),
            ("GPU feature discovery", "nvidia-device-plugin-gpu-feature-discovery"),
            ("NFD's worker", "nvidia-device-plugin-node-feature-discovery-worker"),
        ] {
            match find(&docs, "DaemonSet", name) {
                Some(x) => daemons.push((what, x)),
                None => p(format!("MPS but no DaemonSet {name}")),
            }
        }
        for (what, x) in &daemons[1..3] {
            if x["spec"]["template"]["spec"]["affinity"] != values["affinity"] {
                p(format!("{what} has affinity {}, want karpctl's", x["spec"]["template"]["spec"]["affinity"]));
            }
        }
    }
    for (what, x) in &daemons {
        for t in &taints {
            if !tolerates(&x["spec"]["template"]["spec"]["tolerations"], t) {
                p(format!("{what} does not tolerate the GPU pools' taint {}={}:{:?}", t.key, t.value.as_deref().unwrap_or(""), t.effect));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&d);
    problems
}

#[test]
fn the_real_device_plugin_chart_carries_karpctls_config_affinity_and_tolerations() {
    let (Some(helm), Some(chart), Some(nv)) = (helm(), chart("nvidia-device-plugin"), nvconfig()) else { return };
    let mut problems = Vec::new();
    for (label, c) in device_plugin_configs() {
        problems.extend(check_device_plugin(&label, &c, &helm, &chart, &nv));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_device_plugin_check_fails_values_that_would_not_work() {
    let (Some(helm), Some(chart), Some(nv)) = (helm(), chart("nvidia-device-plugin"), nvconfig()) else { return };
    let c = load_preset(Preset::Default);
    let d = scratch("chart-dp-bad");
    // The chart's own affinity and tolerations (no karpctl values) and no config.
    let bare = d.join("bare.yaml");
    std::fs::write(&bare, "{}\n").unwrap();
    let docs = helm_template(&helm, "nvidia-device-plugin", &chart, "kube-system", &bare);
    let ds = find(&docs, "DaemonSet", "nvidia-device-plugin").expect("the chart renders its DaemonSet");
    let values = serde_json::to_value(karpctl::render::helm::device_plugin_values(&c)).unwrap();
    assert_ne!(ds["spec"]["template"]["spec"]["affinity"], values["affinity"], "the chart's default affinity differs from karpctl's");
    assert!(find(&docs, "ConfigMap", "nvidia-device-plugin-configs").is_none());
    // MPS values without karpctl's NFD worker tolerations: the worker misses the GPU taint.
    let mut mps = c.clone();
    let sharing = mps.device_plugin.sharing.as_mut().unwrap();
    sharing.mps = sharing.time_slicing.take();
    let mut v = serde_json::to_value(karpctl::render::helm::device_plugin_values(&mps)).unwrap();
    assert!(v.as_object_mut().unwrap().remove("nfd").is_some(), "MPS values set NFD's worker tolerations");
    let no_nfd = d.join("no-nfd.yaml");
    std::fs::write(&no_nfd, serde_yaml::to_string(&v).unwrap()).unwrap();
    let docs = helm_template(&helm, "nvidia-device-plugin", &chart, "kube-system", &no_nfd);
    let worker = find(&docs, "DaemonSet", "nvidia-device-plugin-node-feature-discovery-worker").expect("GFD brings NFD");
    let taints = gpu_pool_taints(&mps);
    assert!(!taints.is_empty() && taints.iter().any(|t| !tolerates(&worker["spec"]["template"]["spec"]["tolerations"], t)), "{worker}");
    // And the whole check on a config the plugin cannot read.
    let mut broken = c.clone();
    broken.device_plugin.sharing.as_mut().unwrap().time_slicing.as_mut().unwrap().replicas = 1;
    let problems = check_device_plugin("broken", &broken, &helm, &chart, &nv).join("\n");
    assert!(problems.contains("number of replicas must be >= 2"), "{problems}");
    let _ = std::fs::remove_dir_all(&d);
}
