//! Injected faults, end to end on the Sandbox (both beds, the controller simulator,
//! real helm): AWS throttling and 5xx on a fifth of all calls, AWS operations that
//! always fail and then recover, a kube-apiserver restart in the middle of `up`, and
//! an admission policy that refuses a NodePool. Every test checks that the fault
//! really happened (the emulator's `injected` counters, the refusal in the output),
//! so it can fail. Measurements are printed (`--nocapture`) for RELIABILITY.md.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::up::{diff, sandbox_config, show, Sandbox};

const STACK_STEP: &str = "cfn-stack/Karpenter-karpctl-sandbox";
const IDENTITY_STEP: &str = "identity/KarpenterControllerRole-karpctl-sandbox";
const ACCESS_STEP: &str = "node-access/karpctl-sandbox";
const TAGS_STEP: &str = "discovery-tags/karpctl-sandbox";

fn add_faults(sb: &Sandbox, rules: Value) {
    sb.aws.add_faults(&rules);
}

fn clear_faults(sb: &Sandbox) {
    sb.aws.control("DELETE", "faults", None);
}

/// (matched, injected) summed over the fault rules.
fn fault_counters(sb: &Sandbox) -> (u64, u64) {
    let doc = sb.aws.control("GET", "faults", None);
    let rules = doc["faults"].as_array().cloned().unwrap_or_default();
    rules.iter().fold((0, 0), |(m, i), r| (m + r["matched"].as_u64().unwrap_or(0), i + r["injected"].as_u64().unwrap_or(0)))
}

/// Requests per `service:Operation` since the last reset, then resets the counters.
fn take_counts(sb: &Sandbox) -> Value {
    sb.aws_mutations()
}

fn count(doc: &Value, op: &str) -> u64 {
    doc["counts"][op].as_u64().unwrap_or(0)
}

fn steps_status(sb: &Sandbox) -> Value {
    // The state through the product's own view (`karpctl state show -o json`), not the file.
    let o = sb.karpctl(&["state", "show", "-o", "json"]);
    assert!(o.status.success(), "{}", show(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("state show: {e}\n{}", show(&o)));
    let steps = if doc["steps"].is_object() { &doc["steps"] } else { &doc["state"]["steps"] };
    let out: serde_json::Map<String, Value> =
        steps.as_object().unwrap_or_else(|| panic!("no steps in {doc}")).iter().map(|(k, v)| (k.clone(), v["status"].clone())).collect();
    Value::Object(out)
}

/// The failed-step lines and help lines of a run, for the measurements.
fn excerpt(o: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    stdout.lines().filter(|l| l.starts_with("! ") || l.starts_with("  the API server")).chain(stderr.lines().filter(|l| l.trim_start().starts_with("help: "))).collect::<Vec<_>>().join("\n")
}

fn help_lines(o: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&o.stderr).lines().filter_map(|l| l.trim_start().strip_prefix("help: ").map(String::from)).collect()
}

/// A fifth of every AWS call fails with `kind` (seeded); `up` from scratch still
/// converges in one run, and a second `up` (faults still on) makes no mutating call.
fn transient_faults_converge(kind: &str, seed: u64) {
    let Some(mut sb) = Sandbox::start(&format!("faults-{kind}"), &[]) else { return };
    sb.write_config(&sandbox_config());
    add_faults(&sb, json!({"operation": "*", "kind": kind, "rate": 0.2, "seed": seed}));
    take_counts(&sb);
    let t = Instant::now();
    let up = sb.karpctl(&["up"]);
    let took = t.elapsed();
    let (matched, injected) = fault_counters(&sb);
    let counts = take_counts(&sb);
    eprintln!(
        "measured: {kind} 20% seed {seed}: first up exit {:?} in {:.1}s, {} AWS attempts ({} mutating), {matched} matched, {injected} injected: {}",
        up.status.code(),
        took.as_secs_f64(),
        counts["total"],
        counts["mutating"],
        counts["faults_injected"]
    );
    assert!(injected > 0, "no fault was injected, so this proves nothing: {counts}");
    assert!(up.status.success(), "{kind}: up did not converge through the faults:\n{}", show(&up));
    for (id, status) in steps_status(&sb).as_object().unwrap() {
        assert_eq!(status, "done", "{id}");
    }
    let pools = sb.kubectl_json(&["get", "nodepools.karpenter.sh"]);
    assert_eq!(pools["items"].as_array().unwrap().len(), 2);

    let t = Instant::now();
    sb.assert_second_up_writes_nothing(kind);
    let (_, injected2) = fault_counters(&sb);
    eprintln!("measured: {kind} 20%: second up in {:.1}s, {} more faults injected, 0 mutating calls", t.elapsed().as_secs_f64(), injected2 - injected);
}

#[test]
fn twenty_percent_aws_throttling_converges_in_one_run() {
    transient_faults_converge("throttle", 7);
}

#[test]
fn twenty_percent_aws_5xx_converges_in_one_run() {
    transient_faults_converge("5xx", 11);
}

/// Creates that AWS carried out but whose answers were lost (a 5xx after the fact):
/// the SDK's retry is refused as "already exists", and the step looks again and
/// goes on from what is there, so one `up` converges with nothing made twice.
#[test]
fn creates_whose_answers_were_lost_converge_in_the_same_run() {
    let Some(mut sb) = Sandbox::start("faults-lost", &[]) else { return };
    sb.write_config(&sandbox_config());
    let creates = ["iam:CreateRole", "eks:CreatePodIdentityAssociation", "eks:CreateAccessEntry", "iam:CreateServiceLinkedRole"];
    add_faults(&sb, Value::Array(creates.iter().map(|op| json!({"operation": op, "kind": "lost-response", "count": 1})).collect()));
    take_counts(&sb);
    let up = sb.karpctl(&["up"]);
    let counts = take_counts(&sb);
    eprintln!("measured: lost answers on {creates:?}: exit {:?}; calls {}", up.status.code(), counts["counts"]);
    assert!(up.status.success(), "one up converges through lost answers:\n{}", show(&up));
    for op in creates {
        // The lost attempt and the SDK's retry that met what it made; nothing more.
        assert_eq!(count(&counts, op), 2, "{op}: {counts}");
    }
    assert_eq!(fault_counters(&sb).1, creates.len() as u64, "every lost answer was injected");
    for (id, status) in steps_status(&sb).as_object().unwrap() {
        assert_eq!(status, "done", "{id}");
    }
    clear_faults(&sb);
    sb.assert_second_up_writes_nothing("after the lost answers");
}

#[test]
fn a_permanent_aws_failure_is_recorded_and_up_resumes_without_redoing_finished_steps() {
    let Some(sb) = Sandbox::start("faults-permanent", &[]) else { return };
    sb.write_config(&sandbox_config());

    // Run 1: the stack can never be created and SSM never answers.
    add_faults(&sb, json!([
        {"operation": "cloudformation:CreateStack", "kind": "5xx"},
        {"operation": "ssm:GetParameters", "kind": "unavailable"},
    ]));
    take_counts(&sb);
    let t = Instant::now();
    let up = sb.karpctl(&["up"]);
    let took = t.elapsed();
    let counts = take_counts(&sb);
    let out = show(&up);
    eprintln!("measured: permanent CreateStack 5xx + GetParameters 503: exit {:?} in {:.1}s, attempts {}", up.status.code(), took.as_secs_f64(), counts["faults_injected"]);
    eprintln!("measured: run 1 said:\n{}", excerpt(&up));
    assert_eq!(up.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("{STACK_STEP}: creating stack `Karpenter-karpctl-sandbox`: cloudformation:CreateStack: InternalFailure")), "{out}");
    assert!(out.contains("amis/pins: ssm:GetParameters: ServiceUnavailable"), "{out}");
    // The SDK's retries were all spent on it, then the step failed.
    assert_eq!(count(&counts, "cloudformation:CreateStack"), u64::from(karpctl::aws::MAX_ATTEMPTS), "{counts}");
    let help = help_lines(&up);
    assert!(help.iter().any(|h| h.contains("AWS kept failing cloudformation:CreateStack (InternalFailure)") && h.contains("`karpctl up`")), "{help:?}\n{out}");
    assert!(help.iter().any(|h| h.contains("AWS kept failing ssm:GetParameters")), "{help:?}");
    assert!(help.last().is_some_and(|h| h.starts_with("`karpctl up` resumes")), "{help:?}");
    let st = steps_status(&sb);
    assert_eq!(st[STACK_STEP], "failed", "{st}");
    assert_eq!(st["amis/pins"], "failed", "{st}");
    assert_eq!(st[TAGS_STEP], "done", "{st}");
    assert_eq!(st["iam/spot-service-linked-role"], "done", "{st}");
    assert!(st.get(IDENTITY_STEP).is_none(), "blocked behind the stack, never started: {st}");
    assert_eq!(count(&counts, "ec2:CreateTags"), 1, "{counts}");

    // Run 2: those recover; the identity's association and the node access entry now fail.
    clear_faults(&sb);
    add_faults(&sb, json!([
        {"operation": "eks:CreatePodIdentityAssociation", "kind": "throttle"},
        {"operation": "eks:CreateAccessEntry", "kind": "5xx"},
    ]));
    let up = sb.karpctl(&["up"]);
    let counts = take_counts(&sb);
    let out = show(&up);
    eprintln!("measured: run 2 said:\n{}\nrun 2 calls: {}", excerpt(&up), counts["counts"]);
    assert_eq!(up.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("{IDENTITY_STEP}: eks:CreatePodIdentityAssociation: ThrottlingException")), "{out}");
    assert!(out.contains(&format!("{ACCESS_STEP}: eks:CreateAccessEntry: ServerException")), "{out}");
    let st = steps_status(&sb);
    assert_eq!((&st[STACK_STEP], &st["amis/pins"]), (&json!("done"), &json!("done")), "{st}");
    assert_eq!((&st[IDENTITY_STEP], &st[ACCESS_STEP]), (&json!("failed"), &json!("failed")), "{st}");
    assert_eq!(count(&counts, "ec2:CreateTags"), 0, "finished steps are not redone: {counts}");
    assert_eq!(count(&counts, "iam:CreateServiceLinkedRole"), 0, "{counts}");
    assert_eq!(count(&counts, "cloudformation:CreateStack"), 1, "{counts}");
    assert_eq!(count(&counts, "iam:CreateRole"), 1, "{counts}");
    assert!(count(&counts, "ssm:GetParameters") > 0, "{counts}");

    // Run 3: all clear. Only what is missing is done: the association and the entry.
    clear_faults(&sb);
    let up = sb.karpctl(&["up"]);
    let counts = take_counts(&sb);
    assert!(up.status.success(), "{}", show(&up));
    eprintln!("measured: run 3 (resume) calls: {}", counts["counts"]);
    for op in ["ec2:CreateTags", "cloudformation:CreateStack", "iam:CreateRole", "iam:AttachRolePolicy", "ssm:GetParameters", "iam:CreateServiceLinkedRole"] {
        assert_eq!(count(&counts, op), 0, "{op} redone on resume: {counts}");
    }
    assert_eq!(count(&counts, "eks:CreatePodIdentityAssociation"), 1, "{counts}");
    assert_eq!(count(&counts, "eks:CreateAccessEntry"), 1, "{counts}");
    for (id, status) in steps_status(&sb).as_object().unwrap() {
        assert_eq!(status, "done", "{id}");
    }
}

#[test]
fn a_kube_apiserver_restart_during_up_is_waited_through_and_leaves_no_duplicates() {
    let Some(mut sb) = Sandbox::start("faults-apiserver", &[]) else { return };
    sb.write_config(&sandbox_config());
    // Without the simulator the controller never becomes available, so `up` is held in
    // its rollout wait after `helm upgrade --install`: the restart lands mid-run for sure.
    sb.stop_sim();
    let mut child = sb.karpctl_command(&["up", "--wait-timeout", "180s"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let deployed = sb.helm_list().as_array().is_some_and(|r| r.iter().any(|r| r["name"] == "karpenter" && r["status"] == "deployed"));
        if deployed {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("up ended ({status}) before the controller release was deployed: {}", show(&child.wait_with_output().unwrap()));
        }
        assert!(Instant::now() < deadline, "the controller release was not deployed within 120s");
        std::thread::sleep(Duration::from_millis(300));
    }
    let t = Instant::now();
    sb.kube.restart_apiserver();
    let restart = t.elapsed();
    assert!(child.try_wait().unwrap().is_none(), "up gave up while the API server was down");
    sb.start_sim();
    let up = child.wait_with_output().unwrap();
    let out = show(&up);
    eprintln!("measured: apiserver restart ({:.1}s) during the rollout wait: up exit {:?}", restart.as_secs_f64(), up.status.code());
    assert!(out.contains("kube-system/karpenter"), "{out}");
    if !up.status.success() {
        // Allowed: a clear error with the next command. Then the re-run converges.
        assert_eq!(up.status.code(), Some(1), "{out}");
        assert!(!help_lines(&up).is_empty(), "a failure needs a help line: {out}");
        let again = sb.karpctl(&["up"]);
        assert!(again.status.success(), "{}", show(&again));
    }
    // Exactly one of everything, the controller installed once.
    let releases = sb.helm_list();
    let names: Vec<&str> = releases.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| **n == "karpenter").count(), 1, "{releases}");
    assert!(releases.as_array().unwrap().iter().all(|r| r["status"] == "deployed"), "{releases}");
    let karpenter = releases.as_array().unwrap().iter().find(|r| r["name"] == "karpenter").unwrap();
    assert_eq!(karpenter["revision"], "1", "helm was not run twice: {releases}");
    assert_eq!(sb.kubectl_json(&["get", "deployments", "-n", "kube-system", "-l", "app.kubernetes.io/instance=karpenter"])["items"].as_array().unwrap().len(), 1);
    assert_eq!(sb.kubectl_json(&["get", "nodepools.karpenter.sh"])["items"].as_array().unwrap().len(), 2);
    assert_eq!(sb.kubectl_json(&["get", "ec2nodeclasses.karpenter.k8s.aws"])["items"].as_array().unwrap().len(), 2);
    for (id, status) in steps_status(&sb).as_object().unwrap() {
        assert_eq!(status, "done", "{id}");
    }
    sb.assert_second_up_writes_nothing("after the apiserver restart");
}

const CPU_CAP_POLICY: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: karpctl-test-cpu-cap}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - apiGroups: [karpenter.sh]
        apiVersions: ["*"]
        operations: [CREATE, UPDATE]
        resources: [nodepools]
  validations:
    - expression: "!has(object.spec.limits) || !('cpu' in object.spec.limits) || quantity(string(object.spec.limits.cpu)).compareTo(quantity('500')) <= 0"
      messageExpression: "'spec.limits.cpu: ' + string(object.spec.limits.cpu) + ' is above the cap: a NodePool may not allow more than 500 CPU'"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: karpctl-test-cpu-cap}
spec:
  policyName: karpctl-test-cpu-cap
  validationActions: [Deny]
"#;

#[test]
fn an_admission_policy_refusal_applies_nothing_and_the_rerun_converges_once_it_is_gone() {
    let Some(sb) = Sandbox::start("faults-vap", &[]) else { return };
    let policy = sb.dir.join("policy.yaml");
    std::fs::write(&policy, CPU_CAP_POLICY).unwrap();
    let o = sb.kubectl(&["apply", "-f", policy.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    // The default pool asks for 600 CPU: fine for karpctl, refused by the cluster's policy.
    let config = sandbox_config().replace(r#"limits: {cpu: "100", memory: 400Gi}"#, r#"limits: {cpu: "600", memory: 400Gi}"#);
    assert_ne!(config, sandbox_config());
    sb.write_config(&config);
    let up = sb.karpctl(&["up"]);
    let out = show(&up);
    eprintln!("measured: admission policy refusal said:\n{}", excerpt(&up));
    assert_eq!(up.status.code(), Some(1), "{out}");
    assert!(out.contains("objects/karpctl-sandbox"), "names the step: {out}");
    assert!(out.contains("NodePool/default") && out.contains("spec.limits.cpu"), "names the object and the field: {out}");
    assert!(out.contains("karpctl-test-cpu-cap") && out.contains("may not allow more than 500 CPU"), "the policy's own words: {out}");
    assert!(out.contains("nothing was changed"), "{out}");
    let help = help_lines(&up);
    assert!(help.iter().any(|h| h.contains("nothing of the batch was applied") && h.contains("admission policy")), "{help:?}");
    // Nothing of the batch exists: not the valid classes, not the gpu pool.
    assert!(sb.kubectl_json(&["get", "nodepools.karpenter.sh"])["items"].as_array().unwrap().is_empty());
    assert!(sb.kubectl_json(&["get", "ec2nodeclasses.karpenter.k8s.aws"])["items"].as_array().unwrap().is_empty());
    let st = steps_status(&sb);
    assert_eq!(st["objects/karpctl-sandbox"], "failed", "{st}");
    assert_eq!(st["helm-release/kube-system/karpenter"], "done", "{st}");

    let o = sb.kubectl(&["delete", "-f", policy.to_str().unwrap()]);
    assert!(o.status.success(), "{}", show(&o));
    // The API server drops a deleted policy from its cache asynchronously.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = sb.kube_writes();
    let up = loop {
        let up = sb.karpctl(&["up"]);
        if up.status.success() || !show(&up).contains("karpctl-test-cpu-cap") || Instant::now() > deadline {
            break up;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(up.status.success(), "{}", show(&up));
    let writes = diff(&before, &sb.kube_writes());
    eprintln!("measured: admission policy re-run writes: {writes:?}");
    assert!(!writes.keys().any(|k| k.contains("secrets") || k.contains("customresourcedefinitions")), "helm and the CRDs were not redone: {writes:?}");
    assert_eq!(sb.kubectl_json(&["get", "nodepools.karpenter.sh", "default"])["spec"]["limits"]["cpu"], "600");
    assert_eq!(sb.kubectl_json(&["get", "nodepools.karpenter.sh"])["items"].as_array().unwrap().len(), 2);
}
