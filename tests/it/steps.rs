//! The AWS half of `up`, end to end through the binary against the AWS emulator:
//! cluster facts and AMI pins — batching, zero mutating calls, zero SSM calls on
//! a no-op run, pins that stay put, and clear errors for missing parameters.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::beds::AwsEmulator;
use crate::support::scratch;

/// Runs karpctl against the emulator alone: `up` and `plan` walk the AWS half
/// (`--target aws`); tests/it/up.rs covers the whole graph on both beds.
fn karpctl(dir: &Path, emu: &AwsEmulator, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_karpctl"));
    cmd.args(args);
    if matches!(args.first(), Some(&"up") | Some(&"plan")) {
        cmd.args(["--target", "aws"]);
    }
    cmd.current_dir(dir).env("NO_COLOR", "1").env("CI", "1");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") || k == "KARPCTL_CONFIG" {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_ENDPOINT_URL", &emu.endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-west-2")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap()
}

const CONFIG: &str = r#"apiVersion: karpctl.io/v1alpha1
cluster: {name: karpctl-sandbox, region: us-west-2}
nodeClasses:
  - {name: general, architectures: [amd64, arm64]}
  - {name: gpu, variant: nvidia, architectures: [amd64, arm64]}
  - {name: inference, variant: neuron}
  - {name: br, amiFamily: bottlerocket, architectures: [amd64, arm64]}
  - {name: br-gpu, amiFamily: bottlerocket, variant: nvidia}
nodePools:
  - {name: general, nodeClass: general}
"#;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn counts(emu: &AwsEmulator) -> Value {
    let r = emu.requests();
    emu.control("DELETE", "requests", None);
    r
}

fn st_tags(d: &Path) -> Value {
    state(d)["steps"]["discovery-tags/karpctl-sandbox"]["outputs"].clone()
}

fn state(d: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(d.join(".karpctl/karpctl-sandbox.state.json")).unwrap()).unwrap()
}

#[test]
fn up_pins_amis_in_batched_reads_and_a_second_up_makes_no_ssm_call() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let d = scratch("pins");
    std::fs::write(d.join("karpctl.yaml"), CONFIG).unwrap();
    counts(&emu);

    let up = karpctl(&d, &emu, &["up", "--skip-preflight"]);
    assert!(up.status.success(), "{}{}", text(&up.stdout), text(&up.stderr));
    let c = counts(&emu);
    // 8 distinct AMIs × (image id + release) = 16 parameters → 2 calls.
    assert_eq!(c["counts"]["ssm:GetParameters"], 2, "{c}");
    assert_eq!(c["counts"]["eks:DescribeCluster"], 1, "{c}");
    assert_eq!(c["counts"]["ec2:CreateTags"], 1, "all discovery tags in one call: {c}");
    assert_eq!(c["counts"].get("ssm:PutParameter"), None, "pinning AMIs writes nothing: {c}");
    let tagged = &st_tags(&d);
    assert_eq!(tagged["resources"].as_array().unwrap().len(), 4, "three subnets and the cluster security group");
    assert_eq!(tagged["taggedByKarpctl"], tagged["resources"]);
    let st = state(&d);
    let pins = &st["steps"]["amis/pins"]["outputs"]["pins"];
    let seed = &emu.handle["seed"]["ssm_parameters"];
    let release = seed["/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/release_version"].as_str().unwrap();
    let date = release.rsplit('-').next().unwrap();
    assert_eq!(pins["general"], serde_json::json!({"kind": "alias", "value": format!("al2023@v{date}")}));
    let br = seed["/aws/service/bottlerocket/aws-k8s-1.31/x86_64/latest/image_version"].as_str().unwrap();
    assert_eq!(pins["br"]["value"], format!("bottlerocket@v{}", br.split('-').next().unwrap()));
    let serial = st["serial"].as_u64().unwrap();

    let again = karpctl(&d, &emu, &["up", "-o", "json"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    let v: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["changes"], false);
    let c = counts(&emu);
    assert_eq!(c["counts"].get("ssm:GetParameters"), None, "a recorded pin costs no SSM call: {c}");
    assert_eq!(c["mutating"], 0);
    assert_eq!(state(&d)["serial"].as_u64().unwrap(), serial, "a no-op up does not rewrite the state");

    let plan = karpctl(&d, &emu, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));

    // A new class is a change of inputs: planned with the reason, then pinned; old pins stay.
    std::fs::write(d.join("karpctl.yaml"), format!("{CONFIG}  - {{name: extra, nodeClass: general}}\n").replace(
        "  - {name: br-gpu, amiFamily: bottlerocket, variant: nvidia}\n",
        "  - {name: br-gpu, amiFamily: bottlerocket, variant: nvidia}\n  - {name: new-class}\n",
    ))
    .unwrap();
    let plan = karpctl(&d, &emu, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}{}", text(&plan.stdout), text(&plan.stderr));
    let out = text(&plan.stdout);
    assert!(out.contains("amis/pins") && out.contains("classes.new-class") && out.contains("new-class.ami"), "{out}");
    let up = karpctl(&d, &emu, &["up"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let after = state(&d);
    assert_eq!(after["steps"]["amis/pins"]["outputs"]["pins"]["general"], pins["general"]);
    assert!(after["steps"]["amis/pins"]["outputs"]["pins"]["new-class"].is_object());

    let amis = karpctl(&d, &emu, &["amis", "-o", "json"]);
    let v: Value = serde_json::from_slice(&amis.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&amis.stderr)));
    assert_eq!(v["kubernetesVersion"], "1.31");
    assert_eq!(v["classes"][0]["pinned"], v["classes"][0]["latest"]);
}

#[test]
fn a_missing_parameter_is_a_clear_error_and_recorded_for_resume() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let d = scratch("missing");
    // The emulator seeds 1.31 and 1.30 only: 1.29 has no published parameters.
    std::fs::write(d.join("karpctl.yaml"), CONFIG.replace("region: us-west-2}", "region: us-west-2, kubernetesVersion: \"1.29\"}")).unwrap();
    // Preflight notices the mismatch with the cluster first…
    let up = karpctl(&d, &emu, &["up"]);
    assert_eq!(up.status.code(), Some(1));
    assert!(text(&up.stderr).contains("config says 1.29, the cluster runs 1.31"), "{}", text(&up.stderr));
    // …and without it, the AMI step names the missing parameter.
    let up = karpctl(&d, &emu, &["up", "--skip-preflight"]);
    assert_eq!(up.status.code(), Some(1));
    let out = text(&up.stdout);
    assert!(out.contains("/aws/service/") && out.contains("does not exist") && out.contains("Kubernetes 1.29"), "{out}");
    // The run's own flags (this harness adds --target aws), so the named command resumes this run.
    assert!(text(&up.stderr).contains("run `karpctl up --target aws` again"), "{}", text(&up.stderr));
    assert_eq!(state(&d)["steps"]["amis/pins"]["status"], "failed");
}

#[test]
fn a_missing_cluster_names_the_cluster_and_region() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let d = scratch("nocluster");
    std::fs::write(d.join("karpctl.yaml"), CONFIG.replace("name: karpctl-sandbox", "name: no-such-cluster")).unwrap();
    let up = karpctl(&d, &emu, &["up"]);
    assert_eq!(up.status.code(), Some(1));
    assert!(text(&up.stderr).contains("preflight") && text(&up.stderr).contains("check cluster.name (no-such-cluster)"), "{}", text(&up.stderr));
    let up = karpctl(&d, &emu, &["up", "--skip-preflight"]);
    assert_eq!(up.status.code(), Some(1));
    let out = text(&up.stdout);
    assert!(out.contains("\"no-such-cluster\" not found") && out.contains("ResourceNotFoundException"), "{out}");
    assert!(out.contains("amis/pins") && out.contains("did not finish"), "dependents are reported as blocked: {out}");
}

#[tokio::test]
async fn tags_someone_else_set_are_not_claimed_and_a_removed_tag_is_drift() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let seed = &emu.handle["seed"];
    let subnet = seed["subnet_ids"][0].as_str().unwrap().to_string();
    let ec2 = aws_sdk_ec2::Client::new(&emu.sdk_config("us-west-2").await);
    let tag = |k: &str, v: &str| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build();
    ec2.create_tags().resources(&subnet).tags(tag("karpenter.sh/discovery", "karpctl-sandbox")).send().await.unwrap();
    let d = scratch("tags");
    std::fs::write(d.join("karpctl.yaml"), CONFIG).unwrap();
    let up = karpctl(&d, &emu, &["up"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let t = st_tags(&d);
    let ours: Vec<&str> = t["taggedByKarpctl"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(ours.len(), 3, "{t}");
    assert!(!ours.contains(&subnet.as_str()), "a tag that was already there is not karpctl's");

    // Someone deletes a tag: a plain plan trusts the record, --refresh finds the drift.
    let victim = ours[0].to_string();
    ec2.delete_tags().resources(&victim).tags(aws_sdk_ec2::types::Tag::builder().key("karpenter.sh/discovery").build()).send().await.unwrap();
    let plan = karpctl(&d, &emu, &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stdout));
    let plan = karpctl(&d, &emu, &["plan", "--refresh", "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan.stdout));
    let out = text(&plan.stdout);
    assert!(out.contains("drift detected") && out.contains(&victim), "{out}");
    let fix = karpctl(&d, &emu, &["up", "--refresh"]);
    assert!(fix.status.success());
    assert_eq!(st_tags(&d)["taggedByKarpctl"].as_array().unwrap().len(), 3);
}

#[test]
fn the_spot_role_is_created_only_when_a_pool_allows_spot_and_only_once() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let d = scratch("spot");
    std::fs::write(d.join("karpctl.yaml"), CONFIG).unwrap();
    let up = karpctl(&d, &emu, &["up"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert_eq!(counts(&emu)["counts"].get("iam:CreateServiceLinkedRole"), None, "no pool allows spot");
    assert!(!text(&up.stdout).contains("spot-service-linked-role"));

    std::fs::write(d.join("karpctl.yaml"), format!("{CONFIG}  - {{name: spot, nodeClass: general, capacityTypes: [spot, on-demand]}}\n")).unwrap();
    let up = karpctl(&d, &emu, &["up"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let c = counts(&emu);
    assert_eq!(c["counts"]["iam:CreateServiceLinkedRole"], 1, "{c}");
    let again = karpctl(&d, &emu, &["up"]);
    assert!(again.status.success());
    assert_eq!(counts(&emu)["mutating"], 0);
    let doctor = karpctl(&d, &emu, &["doctor", "-o", "json"]);
    let v: Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let spot = v["checks"].as_array().unwrap().iter().find(|c| c["name"] == "spot role").unwrap().clone();
    assert_eq!(spot["status"], "ok", "{spot}");
}

#[test]
fn doctor_reports_each_problem_with_why_and_fix() {
    let Some(emu) = AwsEmulator::start(&["--auth-mode", "CONFIG_MAP", "--no-pod-identity-agent"]) else { return };
    let d = scratch("doctor");
    std::fs::write(
        d.join("karpctl.yaml"),
        format!("{CONFIG}  - {{name: spot, nodeClass: general, capacityTypes: [spot, on-demand]}}\nnodeAccess: {{mode: access-entry}}\nidentity: {{mode: pod-identity}}\n"),
    )
    .unwrap();
    let o = karpctl(&d, &emu, &["doctor", "-o", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let check = |name: &str| v["checks"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no {name}: {v}")).clone();
    assert_eq!(check("credentials")["status"], "ok");
    assert_eq!(check("cluster")["status"], "ok");
    let access = check("node access");
    assert_eq!(access["status"], "fail");
    assert!(access["fix"].as_str().unwrap().contains("authenticationMode=API_AND_CONFIG_MAP"), "{access}");
    let identity = check("controller identity");
    assert_eq!(identity["status"], "fail");
    assert!(identity["fix"].as_str().unwrap().contains("eks-pod-identity-agent"));
    assert_eq!(check("spot role")["status"], "warn", "up creates it");
    assert_eq!(emu.requests()["mutating"], 0, "doctor only reads");
}

/// The whole AWS half from nothing, then a no-op run, on a Pod Identity cluster.
#[test]
fn the_aws_half_converges_and_records_what_later_steps_need() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let d = scratch("aws-half");
    std::fs::write(d.join("karpctl.yaml"), format!("{CONFIG}  - {{name: spot, nodeClass: general, capacityTypes: [spot, on-demand]}}\n")).unwrap();
    counts(&emu);
    let up = karpctl(&d, &emu, &["up"]);
    assert!(up.status.success(), "{}{}", text(&up.stdout), text(&up.stderr));
    let c = counts(&emu);
    for (op, n) in [
        ("cloudformation:CreateStack", 1),
        ("iam:CreateRole", 1),
        ("iam:AttachRolePolicy", 6),
        ("eks:CreatePodIdentityAssociation", 1),
        ("eks:CreateAccessEntry", 1),
        ("iam:CreateServiceLinkedRole", 1),
        ("ec2:CreateTags", 1),
    ] {
        assert_eq!(c["counts"][op], n, "{op}: {c}");
    }
    assert_eq!(c["counts"].get("iam:CreateOpenIDConnectProvider"), None, "Pod Identity needs no OIDC provider");
    let st = state(&d);
    let steps = &st["steps"];
    assert!(steps.as_object().unwrap().values().all(|r| r["status"] == "done"), "{steps}");
    let stack = &steps["cfn-stack/Karpenter-karpctl-sandbox"]["outputs"]["outputs"];
    let identity = &steps["identity/KarpenterControllerRole-karpctl-sandbox"]["outputs"];
    assert_eq!(identity["mode"], "pod-identity");
    assert!(identity["roleArn"].as_str().unwrap().ends_with(":role/KarpenterControllerRole-karpctl-sandbox"));
    assert!(identity["associationId"].as_str().is_some_and(|a| !a.is_empty()));
    let access = &steps["node-access/karpctl-sandbox"]["outputs"];
    assert_eq!(access["mode"], "access-entry");
    assert_eq!(access["nodeRoleArn"], stack["NodeRoleArn"]);
    assert_eq!(stack["QueueName"], "karpctl-sandbox");

    // The EKS side agrees: the entry is EC2_LINUX, the association names our role.
    let again = karpctl(&d, &emu, &["up"]);
    assert!(again.status.success());
    let c = counts(&emu);
    assert_eq!(c["mutating"], 0, "an immediate re-run changes nothing: {c}");
    assert_eq!(c["counts"]["eks:DescribeCluster"], 2, "preflight and the cluster's facts: {c}");
    let lookups: u64 = c["counts"].as_object().unwrap().iter().filter(|(k, _)| !k.starts_with("sts:") && !k.starts_with("eks:") && *k != "iam:GetRole").map(|(_, v)| v.as_u64().unwrap()).sum();
    assert_eq!(lookups, 0, "no step observes anything else: {c}");
    let skip = karpctl(&d, &emu, &["up", "--skip-preflight"]);
    assert!(skip.status.success());
    let c = counts(&emu);
    assert_eq!(c["total"], 1, "without preflight only the cluster's facts are read: {c}");

    // The role trusts Pod Identity only with this cluster's session tags for
    // kube-system/karpenter, so an association with session tags turned off (by
    // hand, or adopted that way) is planned and put back.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cfg = rt.block_on(emu.sdk_config("us-west-2"));
    let (iam, eks) = (aws_sdk_iam::Client::new(&cfg), aws_sdk_eks::Client::new(&cfg));
    let role = rt.block_on(iam.get_role().role_name("KarpenterControllerRole-karpctl-sandbox").send()).unwrap().role.unwrap();
    let doc = role.assume_role_policy_document.unwrap();
    let trust: Value = serde_json::from_str(&percent_encoding::percent_decode_str(&doc).decode_utf8().unwrap()).unwrap();
    assert_eq!(
        trust["Statement"][0]["Condition"]["StringEquals"],
        serde_json::json!({"aws:RequestTag/eks-cluster-name": "karpctl-sandbox", "aws:RequestTag/kubernetes-namespace": "kube-system", "aws:RequestTag/kubernetes-service-account": "karpenter"}),
        "{trust}"
    );
    let id = identity["associationId"].as_str().unwrap();
    let tags_disabled = || {
        rt.block_on(eks.describe_pod_identity_association().cluster_name("karpctl-sandbox").association_id(id).send()).unwrap().association.unwrap().disable_session_tags
    };
    rt.block_on(eks.update_pod_identity_association().cluster_name("karpctl-sandbox").association_id(id).disable_session_tags(true).send()).unwrap();
    assert_eq!(tags_disabled(), Some(true));
    // Drift behind karpctl's back is found by a refresh (a plain run trusts its records).
    let plan = karpctl(&d, &emu, &["plan", "--refresh"]);
    assert!(text(&plan.stdout).contains("pod identity session tags"), "{}", text(&plan.stdout));
    counts(&emu);
    let up = karpctl(&d, &emu, &["up", "--refresh"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let c = counts(&emu);
    assert_eq!((c["counts"]["eks:UpdatePodIdentityAssociation"].as_u64(), c["mutating"].as_u64()), (Some(1), Some(1)), "{c}");
    assert_eq!(tags_disabled(), Some(false), "session tags are on again");

    // An install from a karpctl before the narrowed trust: the role trusts any Pod
    // Identity association and the record carries the fingerprint of the step's
    // schema version 1. A plain `up` (no --refresh) checks the role again and narrows it.
    let old_trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"pods.eks.amazonaws.com"},"Action":["sts:AssumeRole","sts:TagSession"]}]}"#;
    rt.block_on(iam.update_assume_role_policy().role_name("KarpenterControllerRole-karpctl-sandbox").policy_document(old_trust).send()).unwrap();
    let path = d.join(".karpctl/karpctl-sandbox.state.json");
    let mut st = state(&d);
    let rec = &mut st["steps"]["identity/KarpenterControllerRole-karpctl-sandbox"];
    use karpctl::engine::fingerprint::fingerprint;
    assert_eq!(rec["fingerprint"], fingerprint("controller-identity", 2, &rec["inputs"]), "recorded under schema version 2");
    rec["fingerprint"] = Value::String(fingerprint("controller-identity", 1, &rec["inputs"]));
    std::fs::write(&path, serde_json::to_vec_pretty(&st).unwrap()).unwrap();
    counts(&emu);
    let up = karpctl(&d, &emu, &["up"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let c = counts(&emu);
    assert_eq!((c["counts"]["iam:UpdateAssumeRolePolicy"].as_u64(), c["mutating"].as_u64()), (Some(1), Some(1)), "{c}");
    let doc = rt.block_on(iam.get_role().role_name("KarpenterControllerRole-karpctl-sandbox").send()).unwrap().role.unwrap().assume_role_policy_document.unwrap();
    let now: Value = serde_json::from_str(&percent_encoding::percent_decode_str(&doc).decode_utf8().unwrap()).unwrap();
    assert_eq!(now, trust, "the older install's role has the narrowed trust again");
}

/// IRSA: the OIDC provider is ensured and the trust names exactly our service
/// account; moving the namespace updates the trust policy and nothing else.
#[test]
fn irsa_trust_is_scoped_and_a_namespace_change_updates_only_the_trust() {
    let Some(emu) = AwsEmulator::start(&["--no-pod-identity-agent"]) else { return };
    let d = scratch("irsa");
    std::fs::write(d.join("karpctl.yaml"), CONFIG).unwrap();
    let up = karpctl(&d, &emu, &["up"]);
    assert!(up.status.success(), "{}{}", text(&up.stdout), text(&up.stderr));
    let c = counts(&emu);
    assert_eq!(c["counts"]["iam:CreateOpenIDConnectProvider"], 1, "{c}");
    assert_eq!(c["counts"].get("eks:CreatePodIdentityAssociation"), None, "{c}");
    let identity = state(&d)["steps"]["identity/KarpenterControllerRole-karpctl-sandbox"]["outputs"].clone();
    assert_eq!(identity["mode"], "irsa");
    assert!(identity["oidcProviderArn"].as_str().unwrap().contains(":oidc-provider/"));

    std::fs::write(d.join("karpctl.yaml"), format!("{CONFIG}karpenter: {{namespace: karpenter}}\n")).unwrap();
    let plan = karpctl(&d, &emu, &["plan"]);
    let out = text(&plan.stdout);
    assert!(out.contains("namespace changed: kube-system → karpenter") && out.contains("trust policy"), "{out}");
    counts(&emu);
    let up = karpctl(&d, &emu, &["up"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let c = counts(&emu);
    assert_eq!(c["counts"]["iam:UpdateAssumeRolePolicy"], 1, "{c}");
    assert_eq!(c["mutating"], 1, "exactly the trust policy changes: {c}");
}

/// CONFIG_MAP clusters get the aws-auth decision (applied later by the Kubernetes
/// steps); asking for an access entry there is a clear error; an EKS fault is reported
/// with its operation and code and the next run converges.
#[test]
fn node_access_follows_the_authentication_mode_and_reports_faults() {
    let Some(emu) = AwsEmulator::start(&["--auth-mode", "CONFIG_MAP"]) else { return };
    let d = scratch("access");
    std::fs::write(d.join("karpctl.yaml"), CONFIG).unwrap();
    let up = karpctl(&d, &emu, &["up"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert_eq!(counts(&emu)["counts"].get("eks:CreateAccessEntry"), None);
    assert_eq!(state(&d)["steps"]["node-access/karpctl-sandbox"]["outputs"]["mode"], "aws-auth");

    std::fs::write(d.join("karpctl.yaml"), format!("{CONFIG}nodeAccess: {{mode: access-entry}}\n")).unwrap();
    // Preflight stops it before anything changes…
    let up = karpctl(&d, &emu, &["up"]);
    assert_eq!(up.status.code(), Some(1));
    let err = text(&up.stderr);
    assert!(err.contains("preflight check(s) failed") && err.contains("authenticationMode=API_AND_CONFIG_MAP"), "{err}");
    // …and the step itself refuses too when preflight is skipped.
    let up = karpctl(&d, &emu, &["up", "--skip-preflight"]);
    assert_eq!(up.status.code(), Some(1));
    let out = text(&up.stdout);
    assert!(out.contains("authenticationMode=API_AND_CONFIG_MAP"), "{out}");

    // An API-mode cluster with a permanently failing CreateAccessEntry.
    emu.control("POST", "reset", Some(&serde_json::json!({"auth_mode": "API_AND_CONFIG_MAP"})));
    emu.control("POST", "faults", Some(&serde_json::json!({"operation": "eks:CreateAccessEntry", "kind": "5xx"})));
    let d = scratch("access-fault");
    std::fs::write(d.join("karpctl.yaml"), CONFIG).unwrap();
    let up = karpctl(&d, &emu, &["up"]);
    assert_eq!(up.status.code(), Some(1));
    let out = text(&up.stdout);
    assert!(out.contains("eks:CreateAccessEntry") && out.contains("request id"), "{out}");
    assert_eq!(state(&d)["steps"]["node-access/karpctl-sandbox"]["status"], "failed");
    emu.control("DELETE", "faults", None);
    let up = karpctl(&d, &emu, &["up"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    assert_eq!(state(&d)["steps"]["node-access/karpctl-sandbox"]["outputs"]["mode"], "access-entry");
}

/// `plan` before anything exists: every step is listed as new, nothing fails
/// for want of the stack's outputs, and nothing is written anywhere.
#[test]
fn plan_on_a_fresh_account_lists_every_step_and_changes_nothing() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let d = scratch("fresh-plan");
    std::fs::write(d.join("karpctl.yaml"), format!("{CONFIG}  - {{name: spot, nodeClass: general, capacityTypes: [spot, on-demand]}}\n")).unwrap();
    counts(&emu);
    let plan = karpctl(&d, &emu, &["plan", "--detailed-exitcode", "-o", "json"]);
    assert_eq!(plan.status.code(), Some(2), "{}{}", text(&plan.stdout), text(&plan.stderr));
    let v: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let planned: Vec<&str> = v["planned"].as_array().unwrap().iter().map(|p| p["step"].as_str().unwrap()).collect();
    for step in ["discovery-tags/", "cfn-stack/", "identity/", "node-access/", "iam/spot-service-linked-role", "amis/pins"] {
        assert!(planned.iter().any(|p| p.starts_with(step)), "{step} missing from {planned:?}");
    }
    assert!(v["planned"].as_array().unwrap().iter().all(|p| p["change"]["action"] == "create"), "{v}");
    assert_eq!(counts(&emu)["mutating"], 0, "plan only reads");
    assert!(!d.join(".karpctl/karpctl-sandbox.state.json").exists(), "plan writes no state");
}

/// `-v` logs every event: a step skipped as unchanged gets its line, which a plain
/// run leaves out.
#[test]
fn verbose_runs_log_every_step_including_the_unchanged_ones() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let d = scratch("verbose");
    std::fs::write(d.join("karpctl.yaml"), CONFIG).unwrap();
    let up = karpctl(&d, &emu, &["up"]);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let quiet = karpctl(&d, &emu, &["up"]);
    assert!(quiet.status.success(), "{}", text(&quiet.stderr));
    let loud = karpctl(&d, &emu, &["up", "-v"]);
    assert!(loud.status.success(), "{}", text(&loud.stderr));
    let unchanged = |o: &Output| text(&o.stderr).lines().filter(|l| l.contains("discovery-tags/karpctl-sandbox: unchanged after")).count();
    assert_eq!(unchanged(&quiet), 0, "{}", text(&quiet.stderr));
    assert_eq!(unchanged(&loud), 1, "{}", text(&loud.stderr));
}

#[test]
fn a_plan_without_state_beside_karpctls_stack_says_where_the_state_went() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let d = scratch("lost-state");
    std::fs::write(d.join("karpctl.yaml"), CONFIG).unwrap();
    let up = karpctl(&d, &emu, &["up", "--skip-preflight"]);
    assert!(up.status.success(), "{}{}", text(&up.stdout), text(&up.stderr));

    // The same config from another directory, with its state elsewhere (not beside it).
    let other = scratch("lost-state-elsewhere");
    std::fs::write(other.join("karpctl.yaml"), CONFIG).unwrap();
    let plan = karpctl(&other, &emu, &["plan"]);
    let err = text(&plan.stderr);
    assert!(err.contains("note: no state at local file .karpctl/karpctl-sandbox.state.json, but karpctl's CloudFormation stack Karpenter-karpctl-sandbox"), "{err}");
    assert!(err.lines().any(|l| l.trim_start().starts_with("help: point `state.path`")), "{err}");
    // Where the state is, nothing is said.
    let plan = karpctl(&d, &emu, &["plan"]);
    assert!(!text(&plan.stderr).contains("no state at"), "{}", text(&plan.stderr));
}
