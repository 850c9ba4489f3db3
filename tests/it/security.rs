//! Security properties as tests (issue 8): the controller's IAM policies are
//! scoped to this cluster the way Karpenter's own policies are, node classes keep
//! IMDSv2 / hop limit 1 / encrypted volumes unless `allowWeakerSecurity` says
//! otherwise, no credential or token ever reaches output, state or temp files,
//! and hostile-but-valid values come out of every renderer as data, never as
//! structure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use karpctl::config::{self, Config, Severity};
use karpctl::config::types::IdentityMode;
use karpctl::model::version::MAX_KNOWN_MINOR;
use karpctl::render::{self, DocKind, Encoding};
use serde_json::{json, Value};

use crate::support::*;
use crate::up::{sandbox_config, show, Sandbox, CLUSTER};

// ---------------------------------------------------------------------------------------
// 1. IAM least privilege

/// Write statements that official Karpenter policies leave without a cluster
/// condition, with the only actions and resource types each may carry. Each entry
/// is cross-checked against the survey of the official template
/// (../shared/reference/installers-survey.md §1.3), whose table must list the same
/// Sid with the same actions and "none" as its conditions.
const UNSCOPED_WRITE_ALLOWLIST: &[(&str, &[&str], &[&str])] = &[
    // RunInstances/CreateFleet must be allowed on the *inputs* of a launch (AMIs,
    // snapshots, subnets, security groups, capacity reservations, placement groups),
    // which carry no cluster tag; the instance, volumes, fleet and launch template
    // they create are tag-scoped by AllowScopedEC2InstanceActionsWithTags.
    (
        "AllowScopedEC2InstanceAccessActions",
        &["ec2:RunInstances", "ec2:CreateFleet"],
        &["image/*", "snapshot/*", "security-group/*", "subnet/*", "capacity-reservation/*", "placement-group/*"],
    ),
];

/// IAM actions that would let the controller grant itself (or anything) more.
const IAM_ESCALATION: &[&str] = &[
    "iam:CreateRole",
    "iam:AttachRolePolicy",
    "iam:PutRolePolicy",
    "iam:UpdateAssumeRolePolicy",
    "iam:CreatePolicy",
    "iam:CreatePolicyVersion",
    "iam:SetDefaultPolicyVersion",
    "iam:CreateUser",
    "iam:CreateAccessKey",
    "iam:AttachUserPolicy",
    "iam:PutUserPolicy",
    "iam:AddUserToGroup",
    "iam:UpdateRole",
    "iam:DeleteRolePermissionsBoundary",
];

/// Every Karpenter version karpctl supports, one per minor (the policy set changes
/// at 1.3, 1.7, 1.9, 1.10, 1.11 and 1.12), plus the default.
pub fn versions() -> Vec<String> {
    let mut v: Vec<String> = (1..=MAX_KNOWN_MINOR).map(|m| format!("1.{m}.0")).collect();
    v.push(default_version());
    v
}

/// The version a config without `karpenter.version` gets.
fn default_version() -> String {
    let yaml = "apiVersion: karpctl.io/v1alpha1\ncluster: {name: v, region: us-west-2}\n";
    config::parse(Path::new("karpctl.yaml"), yaml.as_bytes()).expect("minimal config").config.karpenter.version
}

fn minor(version: &str) -> u32 {
    version.split('.').nth(1).and_then(|m| m.parse().ok()).expect("x.y.z")
}

/// The CloudFormation template as `render` produces it for `c`, at `version`,
/// with or without the interruption queue.
pub fn template(c: &Config, version: &str, queue: bool) -> Value {
    let mut c = c.clone();
    c.karpenter.version = version.to_string();
    c.karpenter.settings.interruption_queue = queue;
    let b = render::render(&c, &pinned_inputs(&c)).unwrap_or_else(|e| panic!("{} at {version}: {e}", c.cluster.name));
    let docs: Vec<_> = b.documents.into_iter().filter(|d| d.kind == DocKind::Template).collect();
    assert_eq!(docs.len(), 1, "one template document");
    docs.into_iter().next().unwrap().content
}

fn strings(v: &Value) -> Vec<Value> {
    match v {
        Value::Null => vec![],
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

fn is_read(action: &str) -> bool {
    let verb = action.split_once(':').map(|(_, v)| v).unwrap_or(action);
    ["Describe", "Get", "List"].iter().any(|p| verb.starts_with(p))
}

/// Every policy document in the template with where it sits (`<logical id>/<key>`).
fn policy_documents(t: &Value) -> Vec<(String, Value)> {
    fn walk(v: &Value, at: &str, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                if m.contains_key("Statement") {
                    out.push((at.to_string(), v.clone()));
                    return;
                }
                for (k, x) in m {
                    walk(x, &format!("{at}/{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{at}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&t["Resources"], "", &mut out);
    out
}

/// A resource ARN that names one resource of this template (`Fn::GetAtt`/`Ref`).
fn template_local(r: &Value, logical_ids: &BTreeSet<String>) -> bool {
    let id = r.pointer("/Fn::GetAtt/0").or_else(|| r.get("Ref")).and_then(Value::as_str);
    id.is_some_and(|id| logical_ids.contains(id))
}

/// A `StringEquals` condition that pins the statement to `cluster`: its
/// `kubernetes.io/cluster/<cluster>=owned` tag or `eks:eks-cluster-name=<cluster>`,
/// on the resource or on the request. `…IfExists` and `StringLike` do not count.
fn cluster_condition(cond: &Value, cluster: &str) -> Option<String> {
    let eq = cond.get("StringEquals")?.as_object()?;
    let wanted = [
        (format!("aws:ResourceTag/kubernetes.io/cluster/{cluster}"), "owned"),
        (format!("aws:RequestTag/kubernetes.io/cluster/{cluster}"), "owned"),
        ("aws:ResourceTag/eks:eks-cluster-name".to_string(), cluster),
        ("aws:RequestTag/eks:eks-cluster-name".to_string(), cluster),
    ];
    wanted.into_iter().find(|(k, v)| eq.get(k).and_then(Value::as_str) == Some(*v)).map(|(k, _)| k)
}

/// `arn:${AWS::Partition}:ec2:${AWS::Region}:<account or *>:<type>/*` → `<type>/*`.
fn ec2_resource_type(r: &Value) -> Option<String> {
    let s = r.get("Fn::Sub")?.as_str()?;
    let rest = s.strip_prefix("arn:${AWS::Partition}:ec2:${AWS::Region}:")?;
    let (_account, ty) = rest.split_once(':')?;
    Some(ty.to_string())
}

/// Checks one template; returns the problems and how many write statements it judged.
fn check_iam(t: &Value, cluster: &str, label: &str) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    let mut judged = 0;
    let resources = t["Resources"].as_object().expect("Resources");
    let ids: BTreeSet<String> = resources.keys().cloned().collect();
    let node_role = resources.iter().find(|(_, r)| r["Properties"].get("AssumeRolePolicyDocument").is_some()).map(|(k, _)| k.clone());
    let Some(node_role) = node_role else {
        return (vec![format!("{label}: no node role")], 0);
    };
    let mut p = |s: String| problems.push(format!("{label}: {s}"));

    // The node role: trusted by EC2 only, carrying exactly the four AWS managed policies.
    let role = &resources[&node_role]["Properties"];
    let trust = &role["AssumeRolePolicyDocument"];
    let want_trust = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"Service": [{"Fn::Sub": "ec2.${AWS::URLSuffix}"}]}, "Action": ["sts:AssumeRole"]}]});
    if *trust != want_trust {
        p(format!("node role trust policy is {trust}, want {want_trust}"));
    }
    let managed: BTreeSet<String> = strings(&role["ManagedPolicyArns"]).iter().filter_map(|v| v["Fn::Sub"].as_str().map(String::from)).collect();
    let want_managed: BTreeSet<String> = ["AmazonEKS_CNI_Policy", "AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly", "AmazonSSMManagedInstanceCore"]
        .iter()
        .map(|n| format!("arn:${{AWS::Partition}}:iam::aws:policy/{n}"))
        .collect();
    if managed != want_managed || strings(&role["ManagedPolicyArns"]).len() != 4 {
        p(format!("node role managed policies are {:?}", role["ManagedPolicyArns"]));
    }
    if role.get("Policies").is_some() {
        p("the node role has inline policies".into());
    }

    for (at, doc) in policy_documents(t) {
        if at.ends_with("/AssumeRolePolicyDocument") {
            continue; // checked above
        }
        for st in strings(&doc["Statement"]) {
            let sid = st["Sid"].as_str().unwrap_or("(no Sid)").to_string();
            let here = format!("{at} {sid}");
            for forbidden in ["NotAction", "NotResource", "NotPrincipal"] {
                if st.get(forbidden).is_some() {
                    p(format!("{here}: uses {forbidden}"));
                }
            }
            if st["Effect"] == "Deny" {
                continue; // a Deny only takes away
            }
            if st["Effect"] != "Allow" {
                p(format!("{here}: Effect {}", st["Effect"]));
                continue;
            }
            let actions: Vec<String> = strings(&st["Action"]).iter().map(|a| a.as_str().unwrap_or("?").to_string()).collect();
            if actions.is_empty() {
                p(format!("{here}: no actions"));
            }
            for a in &actions {
                if a.contains('*') {
                    p(format!("{here}: wildcard action {a}"));
                }
                if IAM_ESCALATION.contains(&a.as_str()) {
                    p(format!("{here}: privilege-escalating action {a}"));
                }
            }
            let res = strings(&st["Resource"]);
            let cond = &st["Condition"];
            if actions.iter().any(|a| a == "iam:PassRole") {
                let passed: BTreeSet<String> = strings(&cond["StringEquals"]["iam:PassedToService"]).iter().filter_map(|v| v.as_str().map(String::from)).collect();
                let passed_ok = !passed.is_empty() && passed.iter().all(|s| ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"].contains(&s.as_str()));
                let on_node_role = res == vec![json!({"Fn::GetAtt": [node_role, "Arn"]})];
                if actions.len() != 1 || !on_node_role || !passed_ok {
                    p(format!("{here}: iam:PassRole must be alone, on the node role only, passed to ec2 only: {st}"));
                }
            }
            if actions.iter().all(|a| is_read(a)) {
                continue;
            }
            judged += 1;
            if res.is_empty() {
                p(format!("{here}: a write statement without Resource"));
                continue;
            }
            if res.iter().any(|r| r == "*") {
                p(format!("{here}: write actions {actions:?} on Resource \"*\""));
                continue;
            }
            if res.iter().all(|r| template_local(r, &ids)) {
                continue; // only this stack's own queue / node role
            }
            if cluster_condition(cond, cluster).is_some() {
                continue;
            }
            match UNSCOPED_WRITE_ALLOWLIST.iter().find(|(s, _, _)| *s == sid) {
                None => p(format!("{here}: write actions {actions:?} on {res:?} are scoped neither by ARN nor by a condition naming cluster {cluster}: {st}")),
                Some((_, allowed_actions, allowed_types)) => {
                    let extra: Vec<&String> = actions.iter().filter(|a| !allowed_actions.contains(&a.as_str())).collect();
                    if !extra.is_empty() {
                        p(format!("{here}: the unscoped statement gained actions {extra:?}"));
                    }
                    for r in &res {
                        match ec2_resource_type(r) {
                            Some(ty) if allowed_types.contains(&ty.as_str()) => {}
                            _ => p(format!("{here}: the unscoped statement gained resource {r}")),
                        }
                    }
                }
            }
        }
    }
    (problems, judged)
}

#[test]
fn every_write_statement_is_scoped_to_this_cluster_like_the_official_policies() {
    let mut problems = Vec::new();
    let mut judged = 0;
    let mut templates = 0;
    for p in presets() {
        let preset = load_preset(p);
        let mut renamed = preset.clone();
        renamed.cluster.name = "sec-chk".into();
        for c in [&preset, &renamed] {
            for v in versions() {
                for queue in [true, false] {
                    let t = template(c, &v, queue);
                    let (p, n) = check_iam(&t, &c.cluster.name, &format!("{} {v} queue={queue}", c.cluster.name));
                    problems.extend(p);
                    judged += n;
                    templates += 1;
                    // The survey's count of write statements: 6 node lifecycle, 4 instance
                    // profile, plus the queue's when there is one (and the queue policy's).
                    let min = 6 + 4 + if queue { 2 } else { 0 };
                    assert!(n >= min, "{} {v}: only {n} write statements judged", c.cluster.name);
                }
            }
        }
    }
    assert!(problems.is_empty(), "{} problem(s) in {templates} templates:\n{}", problems.len(), problems.join("\n"));
    assert!(judged > templates * 10, "judged {judged} write statements");
}

#[test]
fn the_iam_check_catches_what_it_is_for() {
    // The checker itself must fail on each kind of widening.
    let c = load_preset(presets()[0]);
    let base = template(&c, "1.14.1", true);
    let cluster = c.cluster.name.clone();
    assert!(check_iam(&base, &cluster, "base").0.is_empty());
    let path = "/Resources/NodeLifecyclePolicy/Properties/PolicyDocument/Statement";
    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        ("condition dropped", Box::new(|t: &mut Value| {
            let st = t.pointer_mut(path).unwrap().as_array_mut().unwrap();
            let i = st.iter().position(|s| s["Sid"] == "AllowScopedDeletion").unwrap();
            st[i].as_object_mut().unwrap().remove("Condition");
        })),
        ("other cluster", Box::new(|t: &mut Value| {
            let st = t.pointer_mut(path).unwrap().as_array_mut().unwrap();
            let i = st.iter().position(|s| s["Sid"] == "AllowScopedEC2InstanceActionsWithTags").unwrap();
            st[i]["Condition"] = json!({"StringEquals": {"aws:RequestTag/eks:eks-cluster-name": "someone-else"}});
        })),
        ("IfExists only", Box::new(|t: &mut Value| {
            let st = t.pointer_mut(path).unwrap().as_array_mut().unwrap();
            let i = st.iter().position(|s| s["Sid"] == "AllowScopedDeletion").unwrap();
            st[i]["Condition"] = json!({"StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": "x"}});
        })),
        ("new unscoped statement", Box::new(|t: &mut Value| {
            t.pointer_mut(path).unwrap().as_array_mut().unwrap().push(json!({"Sid": "New", "Effect": "Allow", "Action": ["ec2:DeleteVolume"], "Resource": [{"Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:*:volume/*"}]}));
        })),
        ("allowlisted statement widened", Box::new(|t: &mut Value| {
            let st = t.pointer_mut(path).unwrap().as_array_mut().unwrap();
            let i = st.iter().position(|s| s["Sid"] == "AllowScopedEC2InstanceAccessActions").unwrap();
            st[i]["Action"].as_array_mut().unwrap().push(json!("ec2:TerminateInstances"));
        })),
        ("wildcard action", Box::new(|t: &mut Value| {
            t.pointer_mut(path).unwrap().as_array_mut().unwrap()[0]["Action"] = json!("iam:*");
        })),
        ("PassRole anywhere", Box::new(|t: &mut Value| {
            let p = "/Resources/IAMIntegrationPolicy/Properties/PolicyDocument/Statement/0/Resource";
            *t.pointer_mut(p).unwrap() = json!("*");
        })),
        ("PassRole to any service", Box::new(|t: &mut Value| {
            let p = "/Resources/IAMIntegrationPolicy/Properties/PolicyDocument/Statement/0";
            t.pointer_mut(p).unwrap().as_object_mut().unwrap().remove("Condition");
        })),
        ("node role trusts more", Box::new(|t: &mut Value| {
            t["Resources"]["KarpenterNodeRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] = json!({"AWS": "*"});
        })),
        ("queue write on *", Box::new(|t: &mut Value| {
            t["Resources"]["InterruptionPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]["Resource"] = json!("*");
        })),
    ];
    for (what, m) in mutations {
        let mut t = base.clone();
        m(&mut t);
        assert!(!check_iam(&t, &cluster, what).0.is_empty(), "the IAM check accepts: {what}");
    }
}

/// The survey of the official template, beside the repo like the CRDs.
fn survey() -> Option<String> {
    let p = repo().join("../shared/reference/installers-survey.md");
    let found = p.exists();
    assert!(found || std::env::var_os("CI").is_none(), "CI=true but {} is missing", p.display());
    found.then(|| read(&p))
}

#[test]
fn the_unscoped_allowlist_matches_the_official_policy_and_no_statement_is_invented() {
    let Some(survey) = survey() else { return };
    let row = |sid: &str| -> Option<Vec<String>> {
        survey.lines().find(|l| l.starts_with(&format!("| {sid} |"))).map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
    };
    for (sid, actions, _) in UNSCOPED_WRITE_ALLOWLIST {
        let cells = row(sid).unwrap_or_else(|| panic!("{sid} is not in the survey's statement tables"));
        // | Sid | Actions | Resources | Conditions |
        assert_eq!(cells[4], "none", "{sid}: the official statement has conditions ({}), so it may not be unscoped here", cells[4]);
        let official: BTreeSet<&str> = cells[2].split(',').map(str::trim).map(|a| if a.contains(':') { a } else { "" }).collect();
        for a in *actions {
            assert!(official.contains(a), "{sid}: {a} is not among the official actions {official:?}");
        }
    }
    // Every statement karpctl renders for the survey's version is one the official policies have.
    let c = load_preset(presets()[0]);
    let t = template(&c, "1.14.1", true);
    let mut sids = BTreeSet::new();
    for (_, doc) in policy_documents(&t) {
        for st in strings(&doc["Statement"]) {
            if let Some(s) = st["Sid"].as_str() {
                sids.insert(s.to_string());
            }
        }
    }
    assert!(sids.len() >= 15, "{sids:?}");
    for s in &sids {
        assert!(survey.contains(&format!("`{s}`")) || survey.contains(&format!("| {s} |")) || survey.contains(&format!("Sid {s}")), "statement {s} is not in the official template");
    }
}

#[test]
fn controller_role_trust_is_pinned_to_this_clusters_service_account_for_pod_identity_and_irsa() {
    use karpctl::steps::identity::trust_policy;
    let facts = json!({"arn": "arn:aws:eks:eu-west-1:111122223333:cluster/demo", "oidcIssuer": "https://oidc.eks.eu-west-1.amazonaws.com/id/ABCDEF0123"});
    let host = "oidc.eks.eu-west-1.amazonaws.com/id/ABCDEF0123";
    for ns in ["kube-system", "karpenter"] {
        let irsa = trust_policy(IdentityMode::Irsa, ns, &facts).unwrap();
        let st = strings(&irsa["Statement"]);
        assert_eq!(st.len(), 1, "{irsa}");
        assert_eq!(st[0]["Effect"], "Allow");
        assert_eq!(st[0]["Principal"], json!({"Federated": format!("arn:aws:iam::111122223333:oidc-provider/{host}")}));
        assert_eq!(strings(&st[0]["Action"]), vec![json!("sts:AssumeRoleWithWebIdentity")]);
        assert_eq!(
            st[0]["Condition"],
            json!({"StringEquals": {format!("{host}:sub"): format!("system:serviceaccount:{ns}:karpenter"), format!("{host}:aud"): "sts.amazonaws.com"}}),
            "IRSA trust must pin both sub and aud with StringEquals"
        );
        for mode in [IdentityMode::PodIdentity, IdentityMode::Auto] {
            let pi = trust_policy(mode, ns, &facts).unwrap();
            assert_eq!(
                pi,
                json!({"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow",
                    "Principal": {"Service": "pods.eks.amazonaws.com"},
                    "Action": ["sts:AssumeRole", "sts:TagSession"],
                    "Condition": {"StringEquals": {
                        "aws:RequestTag/eks-cluster-name": "demo",
                        "aws:RequestTag/kubernetes-namespace": ns,
                        "aws:RequestTag/kubernetes-service-account": "karpenter",
                    }}
                }]}),
                "Pod Identity trust must pin the cluster, namespace and service account (the session tags EKS passes)"
            );
        }
    }
    assert!(trust_policy(IdentityMode::Irsa, "kube-system", &json!({"arn": facts["arn"]})).is_err(), "no issuer, no IRSA trust");
    assert!(trust_policy(IdentityMode::PodIdentity, "kube-system", &json!({})).is_err(), "no cluster ARN, no Pod Identity trust");
}

// ---------------------------------------------------------------------------------------
// 2. Secure node defaults

fn node_classes(c: &Config) -> Vec<(String, Value)> {
    let b = render::render(c, &pinned_inputs(c)).expect("renders");
    b.documents.into_iter().filter(|d| d.content["kind"] == "EC2NodeClass").map(|d| (d.path, d.content)).collect()
}

#[test]
fn every_preset_renders_imdsv2_hop_limit_1_and_encrypted_volumes() {
    let mut volumes = 0;
    let mut classes = 0;
    for p in presets() {
        for (path, nc) in node_classes(&load_preset(p)) {
            classes += 1;
            let m = &nc["spec"]["metadataOptions"];
            assert_eq!(m["httpTokens"], "required", "{} {path}", preset_name(p));
            assert_eq!(m["httpPutResponseHopLimit"], 1, "{} {path}", preset_name(p));
            assert_eq!(m["httpEndpoint"], "enabled", "{} {path}", preset_name(p));
            for b in strings(&nc["spec"]["blockDeviceMappings"]) {
                volumes += 1;
                assert_eq!(b["ebs"]["encrypted"], true, "{} {path}: {b}", preset_name(p));
            }
        }
    }
    assert!(classes >= 10 && volumes >= 5, "{classes} classes, {volumes} volumes: the presets must exercise this");
}

const WEAK_BASE: &str = "apiVersion: karpctl.io/v1alpha1
cluster:
  name: demo
  region: us-west-2
  kubernetesVersion: \"1.33\"
nodeClasses:
  - name: default
OPTOUT    metadataOptions:
      httpTokens: TOKENS
      httpPutResponseHopLimit: HOPS
    blockDevices:
      - deviceName: /dev/xvda
        size: 50Gi
        encrypted: ENCRYPTED
nodePools:
  - name: default
    nodeClass: default
";

struct Weak {
    field: &'static str,
    tokens: &'static str,
    hops: &'static str,
    encrypted: &'static str,
    pointer: &'static str,
    rendered: Value,
}

fn weak_cases() -> Vec<Weak> {
    vec![
        Weak { field: "nodeClasses[0].metadataOptions.httpTokens", tokens: "optional", hops: "1", encrypted: "true", pointer: "/spec/metadataOptions/httpTokens", rendered: json!("optional") },
        Weak { field: "nodeClasses[0].metadataOptions.httpPutResponseHopLimit", tokens: "required", hops: "2", encrypted: "true", pointer: "/spec/metadataOptions/httpPutResponseHopLimit", rendered: json!(2) },
        Weak { field: "nodeClasses[0].blockDevices[0].encrypted", tokens: "required", hops: "1", encrypted: "false", pointer: "/spec/blockDeviceMappings/0/ebs/encrypted", rendered: json!(false) },
    ]
}

fn weak_yaml(w: &Weak, opt_out: bool) -> String {
    WEAK_BASE
        .replace("OPTOUT", if opt_out { "    allowWeakerSecurity: true\n" } else { "" })
        .replace("TOKENS", w.tokens)
        .replace("HOPS", w.hops)
        .replace("ENCRYPTED", w.encrypted)
}

/// 1-based line of the value that weakens (the line holding `value` after `key:`).
fn line_of(yaml: &str, key: &str, value: &str) -> usize {
    yaml.lines().position(|l| l.trim() == format!("{key}: {value}")).expect("line present") + 1
}

#[test]
fn weakening_a_node_default_needs_allow_weaker_security_and_then_renders_exactly_that() {
    let file = Path::new("karpctl.yaml");
    for w in weak_cases() {
        let key = w.field.rsplit('.').next().unwrap();
        let value = match key { "httpTokens" => w.tokens, "httpPutResponseHopLimit" => w.hops, _ => w.encrypted };

        // Without the opt-out: refused at the field, with its line, and a help naming the opt-out.
        let yaml = weak_yaml(&w, false);
        let errs = match config::parse(file, yaml.as_bytes()) {
            Ok(_) => panic!("{}: weakened without allowWeakerSecurity, yet valid:\n{yaml}", w.field),
            Err(e) => e,
        };
        let errors: Vec<_> = errs.diagnostics.iter().filter(|d| d.severity == Severity::Error).collect();
        assert_eq!(errors.len(), 1, "{}: {errors:#?}", w.field);
        let d = errors[0];
        assert_eq!(d.field, w.field);
        assert_eq!(d.file, file);
        assert_eq!(d.line, line_of(&yaml, key, value), "{}: {d}", w.field);
        assert!(d.column > 1, "{d}");
        assert!(d.help.as_deref().unwrap_or_default().contains("allowWeakerSecurity: true"), "{}: help must name the opt-out: {d}", w.field);
        let shown = d.to_string();
        assert!(shown.contains(&format!("--> karpctl.yaml:{}:{}", d.line, d.column)) && shown.contains("help:"), "{shown}");

        // With it: valid, a warning at the same field, and exactly the weakened value rendered.
        let yaml = weak_yaml(&w, true);
        let loaded = config::parse(file, yaml.as_bytes()).unwrap_or_else(|e| panic!("{}: opted out, still refused: {e}", w.field));
        let warned: Vec<_> = loaded.warnings.iter().filter(|d| d.field == w.field).collect();
        assert_eq!(warned.len(), 1, "{}: {:#?}", w.field, loaded.warnings);
        assert!(warned[0].message.contains("allowWeakerSecurity"), "{}", warned[0]);
        let classes = node_classes(&loaded.config);
        let nc = &classes[0].1;
        assert_eq!(nc.pointer(w.pointer), Some(&w.rendered), "{}: {nc}", w.field);
        // Only that one field is weakened; the others keep their secure values.
        let m = &nc["spec"]["metadataOptions"];
        let secure = [("/spec/metadataOptions/httpTokens", json!("required")), ("/spec/metadataOptions/httpPutResponseHopLimit", json!(1)), ("/spec/blockDeviceMappings/0/ebs/encrypted", json!(true))];
        for (ptr, want) in secure.iter().filter(|(p, _)| *p != w.pointer) {
            assert_eq!(nc.pointer(ptr), Some(want), "{}: {ptr} changed too: {m}", w.field);
        }
    }

    // The opt-out alone weakens nothing.
    let yaml = weak_yaml(&Weak { field: "", tokens: "required", hops: "1", encrypted: "true", pointer: "", rendered: Value::Null }, true);
    let loaded = config::parse(file, yaml.as_bytes()).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let nc = &node_classes(&loaded.config)[0].1;
    assert_eq!(nc["spec"]["metadataOptions"]["httpTokens"], "required");
    assert_eq!(nc["spec"]["metadataOptions"]["httpPutResponseHopLimit"], 1);
    assert_eq!(nc["spec"]["blockDeviceMappings"][0]["ebs"]["encrypted"], true);
}

#[test]
fn validate_prints_the_weakening_with_its_position_and_the_opt_out() {
    let dir = scratch("sec-validate");
    let all = WEAK_BASE.replace("OPTOUT", "").replace("TOKENS", "optional").replace("HOPS", "3").replace("ENCRYPTED", "false");
    std::fs::write(dir.join("karpctl.yaml"), &all).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_karpctl")).args(["validate"]).current_dir(&dir).env("NO_COLOR", "1").env_remove("KARPCTL_CONFIG").output().unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(3), "{out}");
    for (key, value, field) in [
        ("httpTokens", "optional", "nodeClasses[0].metadataOptions.httpTokens"),
        ("httpPutResponseHopLimit", "3", "nodeClasses[0].metadataOptions.httpPutResponseHopLimit"),
        ("encrypted", "false", "nodeClasses[0].blockDevices[0].encrypted"),
    ] {
        let line = line_of(&all, key, value);
        assert!(out.contains(&format!("error: {field}:")) && out.contains(&format!("karpctl.yaml:{line}:")), "{field} at line {line}:\n{out}");
    }
    assert_eq!(out.matches("help: set `allowWeakerSecurity: true`").count(), 3, "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// 3. No secrets anywhere

const ACCESS_KEY: &str = "AKIAKARPCTLSECTEST01";
const SECRET_KEY: &str = "kArPcTlSeCrEtKeY/Do+Not+Leak+0451zz";
const SESSION_TOKEN: &str = "KarpctlSessionToken//Never+Printed=8f31c2a9";

/// Logs, at every helm call, the mode of each file in the state directory and in
/// karpctl's temp directories, and the token of any kubeconfig karpctl minted.
const HELM_WRAPPER: &str = r#"#!/bin/sh
{
  for f in "$SEC_STATE_DIR"/* "$TMPDIR"/karpctl-* "$TMPDIR"/karpctl-*/*; do
    [ -f "$f" ] && echo "mode $(stat -c %a "$f") $f"
  done
  for f in "$TMPDIR"/karpctl-*/kubeconfig; do
    [ -f "$f" ] && sed -n 's/^ *token: *//p' "$f" | sed 's/^/token /'
  done
} >> "$SEC_LOG"
exec "$SEC_REAL_HELM" "$@"
"#;

struct Secrets<'a> {
    sb: &'a Sandbox,
    tmp: PathBuf,
    log: PathBuf,
    wrapper: PathBuf,
    state_dir: PathBuf,
    outputs: Vec<(String, Output)>,
}

impl Secrets<'_> {
    /// karpctl under umask 000 with distinctive credentials, every logging knob
    /// turned up, its own TMPDIR and the recording helm wrapper.
    fn run(&mut self, args: &[&str], kubeconfig: bool) -> Output {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("umask 000; exec \"$0\" \"$@\"").arg(env!("CARGO_BIN_EXE_karpctl")).args(args).arg("-vv");
        cmd.current_dir(&self.sb.dir);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("AWS_") || k.starts_with("KARPCTL_") || k == "KUBECONFIG" || k == "RUST_LOG" {
                cmd.env_remove(k);
            }
        }
        cmd.env("NO_COLOR", "1")
            .env("CI", "1")
            .env("AWS_ENDPOINT_URL", &self.sb.aws.endpoint)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
            .env("AWS_REGION", "us-west-2")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "trace")
            .env("KARPCTL_LOG", "trace")
            .env("RUST_BACKTRACE", "full")
            .env("TMPDIR", &self.tmp)
            .env("KARPCTL_HELM", &self.wrapper)
            .env("SEC_REAL_HELM", self.sb.bin.join("helm"))
            .env("SEC_LOG", &self.log)
            .env("SEC_STATE_DIR", &self.state_dir);
        if kubeconfig {
            cmd.env("KARPCTL_KUBECONFIG", self.sb.kube.kubeconfig());
        }
        let o = cmd.output().unwrap();
        self.outputs.push((args.join(" "), o.clone()));
        o
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

#[test]
fn no_credential_or_token_reaches_output_state_or_temp_files() {
    let Some(sb) = Sandbox::start("sec-secrets", &[]) else { return };
    let aux = scratch("sec-secrets-aux");
    let tmp = scratch("sec-secrets-tmp");
    let wrapper = aux.join("helm");
    std::fs::write(&wrapper, HELM_WRAPPER).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // The state in a directory karpctl has to create (under umask 000).
    let config = sandbox_config().replace("path: state.json", "path: private/karpctl.state.json");
    assert_ne!(config, sandbox_config());
    sb.write_config(&config);
    let state_dir = sb.dir.join("private");
    let mut s = Secrets { sb: &sb, tmp: tmp.clone(), log: aux.join("helm.log"), wrapper, state_dir: state_dir.clone(), outputs: Vec::new() };

    let up = s.run(&["up"], true);
    assert!(up.status.success(), "{}", show(&up));
    for args in [&["plan", "-o", "json"][..], &["status", "-o", "json"], &["state", "show", "-o", "json"]] {
        let o = s.run(args, true);
        assert!(o.status.success(), "{args:?}: {}", show(&o));
        serde_json::from_slice::<Value>(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", show(&o)));
    }
    // A failing run: a class the controller never reports Ready.
    sb.write_config(&crate::up::no_subnets(&config));
    let failed = s.run(&["up", "--wait-timeout", "3s", "-o", "json"], true);
    assert_eq!(failed.status.code(), Some(1), "{}", show(&failed));
    // Without a kubeconfig karpctl mints EKS tokens from the credentials (for its
    // client and a private kubeconfig for helm); the bed only knows its static
    // token, so these runs fail on 401 and print what they print about it. karpctl
    // reads an unpacked chart and Helm's records itself; a packaged chart makes it
    // run helm (`helm show crds`) with a minted kubeconfig before the first 401.
    let pack = Command::new(sb.bin.join("helm")).arg("package").arg(sb.dir.join("charts/karpenter")).arg("-d").arg(&aux).output().unwrap();
    assert!(pack.status.success(), "{}", show(&pack));
    let tgz = std::fs::read_dir(&aux).unwrap().flatten().map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "tgz")).expect("packaged chart");
    let packaged = config.replace("path: charts/karpenter", &format!("path: {}", tgz.display()));
    assert_ne!(packaged, config);
    sb.write_config(&packaged);
    let minted = s.run(&["up", "--refresh"], false);
    assert_eq!(minted.status.code(), Some(1), "{}", show(&minted));
    let _ = s.run(&["status", "-o", "json"], false);
    let _ = s.run(&["plan", "--refresh"], false);
    let _ = s.run(&["doctor", "-o", "json"], false);
    sb.write_config(&config);

    // What the helm wrapper saw while karpctl ran.
    let log = read(&s.log);
    let tokens: BTreeSet<&str> = log.lines().filter_map(|l| l.strip_prefix("token ")).collect();
    assert!(!tokens.is_empty(), "helm never saw a minted kubeconfig:\n{log}");
    for t in &tokens {
        assert!(t.starts_with("k8s-aws-v1.") && t.len() > 100, "minted token {t}");
    }
    let modes: Vec<(&str, &str)> = log.lines().filter_map(|l| l.strip_prefix("mode ")).filter_map(|l| l.split_once(' ')).collect();
    assert!(modes.iter().any(|(_, f)| f.ends_with("/kubeconfig")), "{log}");
    assert!(modes.iter().any(|(_, f)| f.ends_with(".state.json.lock")), "the lock was never observed:\n{log}");
    assert!(modes.iter().any(|(_, f)| f.contains("karpctl-values-")), "no values file observed:\n{log}");
    for (m, f) in &modes {
        assert_eq!(*m, "600", "{f} had mode {m} while karpctl ran");
    }

    // Nothing is left in the temp directory: helm's kubeconfig and values are gone.
    let mut left = Vec::new();
    files_under(&tmp, &mut left);
    let dirs: Vec<_> = std::fs::read_dir(&tmp).unwrap().flatten().map(|e| e.path()).collect();
    assert!(left.is_empty() && dirs.is_empty(), "karpctl left {left:?} {dirs:?} in TMPDIR");

    // State files: private, in a directory that is not group/world writable.
    assert_eq!(mode(&state_dir), 0o700, "state dir mode {:o} (created under umask 000)", mode(&state_dir));
    let mut state_files = Vec::new();
    files_under(&state_dir, &mut state_files);
    let names: Vec<String> = state_files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert!(names.contains(&"karpctl.state.json".to_string()) && names.contains(&"karpctl.state.json.backup".to_string()), "{names:?}");
    for f in &state_files {
        assert_eq!(mode(f), 0o600, "{} has mode {:o}", f.display(), mode(f));
    }

    // The secrets, in every output and every file karpctl could have written.
    let handle: Value = serde_json::from_str(&read(&sb.kube.dir.join("handle.json"))).unwrap();
    let admin_token = handle["admin_token"].as_str().expect("bed admin token").to_string();
    assert!(read(&sb.kube.kubeconfig()).contains(&admin_token), "the bed's kubeconfig carries its token");
    let mut secrets: Vec<(&str, String)> = vec![
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ("AWS_SESSION_TOKEN", SESSION_TOKEN.into()),
        ("the kubeconfig's bearer token", admin_token),
        ("an EKS token (prefix)", "k8s-aws-v1.".into()),
        ("a presigned STS signature", "X-Amz-Signature".into()),
        ("a presigned session token", "X-Amz-Security-Token".into()),
    ];
    for t in &tokens {
        secrets.push(("a minted EKS token", t.to_string()));
        // The token's signature part alone, in case it were printed decoded or cut.
        secrets.push(("a minted EKS token's tail", t[t.len() - 40..].to_string()));
    }
    let mut haystacks: Vec<(String, Vec<u8>)> = Vec::new();
    for (args, o) in &s.outputs {
        haystacks.push((format!("stdout of `{args}`"), o.stdout.clone()));
        haystacks.push((format!("stderr of `{args}`"), o.stderr.clone()));
    }
    let mut files = Vec::new();
    files_under(&sb.dir, &mut files);
    files_under(&tmp, &mut files);
    for f in files.iter().filter(|f| !f.starts_with(sb.dir.join("charts"))) {
        haystacks.push((f.display().to_string(), std::fs::read(f).unwrap()));
    }
    assert!(haystacks.iter().any(|(n, _)| n.ends_with("karpctl.state.json.backup")));
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        for (name, bytes) in &haystacks {
            if String::from_utf8_lossy(bytes).contains(secret.as_str()) {
                leaks.push(format!("{what} in {name}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));

    // The controller role the run created trusts what the mode it recorded says.
    let st: Value = serde_json::from_str(&read(&state_dir.join("karpctl.state.json"))).unwrap();
    let (id, rec) = st["steps"].as_object().unwrap().iter().find(|(k, _)| k.starts_with("identity/")).expect("identity step");
    let role = rec["outputs"]["roleName"].as_str().unwrap_or_else(|| panic!("{id}: {rec}")).to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let doc = rt.block_on(async {
        let iam = aws_sdk_iam::Client::new(&sb.aws.sdk_config("us-west-2").await);
        iam.get_role().role_name(&role).send().await.unwrap().role.unwrap().assume_role_policy_document.unwrap()
    });
    let doc = percent_encoding::percent_decode_str(&doc).decode_utf8_lossy().into_owned();
    let trust: Value = serde_json::from_str(&doc).unwrap();
    let facts = &st["steps"][format!("cluster/{CLUSTER}")]["outputs"];
    let mode = if rec["outputs"]["mode"] == "irsa" { IdentityMode::Irsa } else { IdentityMode::PodIdentity };
    assert_eq!(trust, karpctl::steps::identity::trust_policy(mode, "kube-system", facts).unwrap(), "role {role} as created");
}

// ---------------------------------------------------------------------------------------
// 4. Rendering goes through typed structures only

/// Valid everywhere it is put, and full of what would break text templating.
const HOSTILE_LINE: &str = "karpctl-hostile: \"q\" 'a' --- {{ .Values.x }} ${AWS::Region} ${!Lit} #c &a *b !!str [1] {k: v} \\ ü日本🚀";
const HOSTILE_KEY: &str = "karpctl-hostile/${AWS::AccountId}: {{x}} ---";

fn hostile_multiline() -> String {
    format!("{HOSTILE_LINE}\n---\n...\n%YAML 1.2\n  indented: [\"x\"]\nend")
}

fn hostile_config() -> String {
    let mut v: serde_yaml::Value = serde_yaml::from_str(&read(&repo().join("examples/default.yaml"))).unwrap();
    let multi = hostile_multiline();
    v["stack"] = serde_yaml::from_str("{tags: {}}").unwrap();
    v["stack"]["tags"][HOSTILE_KEY] = HOSTILE_LINE.into();
    v["stack"]["tags"]["plain"] = "${AWS::StackName}".into();
    let nc = &mut v["nodeClasses"][0];
    nc["tags"] = serde_yaml::from_str("{}").unwrap();
    nc["tags"][HOSTILE_KEY] = HOSTILE_LINE.into();
    nc["userData"] = serde_yaml::from_str("{}").unwrap();
    nc["userData"]["raw"] = format!("#!/bin/bash\necho '{HOSTILE_LINE}'\ncat <<'EOF'\n{multi}\nEOF\n").into();
    let np = &mut v["nodePools"][0];
    np["annotations"] = serde_yaml::from_str("{}").unwrap();
    np["annotations"]["example.com/hostile"] = multi.clone().into();
    np["labels"] = serde_yaml::from_str("{}").unwrap();
    np["labels"]["example.com/team"] = "a.b-c_d".into();
    np["taints"] = serde_yaml::from_str("[{key: example.com/dedicated, value: x.y-z, effect: NoSchedule}]").unwrap();
    v["extraObjects"] = serde_yaml::from_str("[]").unwrap();
    v["extraObjects"].as_sequence_mut().unwrap().push(serde_yaml::to_value(hostile_object()).unwrap());
    serde_yaml::to_string(&v).unwrap()
}

fn hostile_object() -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hostile", "namespace": "default",
        "annotations": {"example.com/a": HOSTILE_LINE}},
        "data": {"line": HOSTILE_LINE, "multi": hostile_multiline(), "number-like": "0x1F", "bool-like": "yes", "null-like": "~"}})
}

/// All strings anywhere in `v`, keys included.
fn all_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| all_strings(x, out)),
        Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                all_strings(x, out);
            }
        }
        _ => {}
    }
}

fn sub_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(s) = m.get("Fn::Sub").and_then(Value::as_str) {
                out.push(s.to_string());
            }
            m.values().for_each(|x| sub_strings(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| sub_strings(x, out)),
        _ => {}
    }
}

/// The logical ids the template has at `minor` (installers-survey §1.2: one policy
/// up to 1.8, five from 1.9, six from 1.12; the capacity reservation rule from 1.10).
fn expected_resources(minor: u32, queue: bool) -> BTreeSet<String> {
    let mut r = vec!["KarpenterNodeRole"];
    if minor >= 9 {
        r.extend(["NodeLifecyclePolicy", "IAMIntegrationPolicy", "EKSIntegrationPolicy", "ResourceDiscoveryPolicy"]);
        if queue {
            r.push("InterruptionPolicy");
        }
        if minor >= 12 {
            r.push("ZonalShiftPolicy");
        }
    } else {
        r.push("KarpenterControllerPolicy");
    }
    if queue {
        r.extend(["KarpenterInterruptionQueue", "KarpenterInterruptionQueuePolicy", "ScheduledChangeRule", "SpotInterruptionRule", "RebalanceRule", "InstanceStateChangeRule"]);
        if minor >= 10 {
            r.push("CapacityReservationInterruptionRule");
        }
    }
    r.into_iter().map(String::from).collect()
}

fn parse_stream(s: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(s).map(|d| serde_yaml::Value::deserialize(d).map(|y| serde_json::to_value(y).unwrap()).unwrap_or_else(|e| panic!("stream does not parse: {e}"))).collect()
}

#[test]
fn hostile_values_render_as_data_and_every_document_round_trips() {
    let yaml = hostile_config();
    let loaded = config::parse(Path::new("karpctl.yaml"), yaml.as_bytes()).unwrap_or_else(|e| panic!("the hostile config must be valid: {e}\n{yaml}"));
    let c = loaded.config;
    let b = render::render(&c, &pinned_inputs(&c)).unwrap();
    let docs: Vec<&render::Document> = b.documents.iter().collect();
    let multi = hostile_multiline();

    // Both encodings re-parse to exactly the documents, one for one.
    let back = parse_stream(&render::stream(&docs, Encoding::Yaml));
    assert_eq!(back.len(), docs.len(), "a value split or merged documents");
    for (d, v) in docs.iter().zip(&back) {
        assert_eq!(&d.content, v, "{} does not round-trip through YAML", d.path);
    }
    let back: Value = serde_json::from_str(&render::stream(&docs, Encoding::Json)).unwrap();
    for (d, v) in docs.iter().zip(back.as_array().unwrap()) {
        assert_eq!(d.content, v["content"], "{} does not round-trip through JSON", d.path);
    }
    for (name, text) in render::files(&docs, Encoding::Yaml) {
        if let Some(d) = docs.iter().find(|d| d.path == name) {
            assert_eq!(parse_stream(&text), vec![d.content.clone()], "{name}");
        }
    }

    // The values arrive as the same strings, where they were put.
    let get = |prefix: &str| docs.iter().find(|d| d.path.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix}")).content.clone();
    let pool = get(&format!("nodepool-{}", c.node_pools[0].name));
    assert_eq!(pool["spec"]["template"]["metadata"]["annotations"]["example.com/hostile"], multi.as_str());
    let class = get(&format!("ec2nodeclass-{}", c.node_classes[0].name));
    assert_eq!(class["spec"]["tags"][HOSTILE_KEY], HOSTILE_LINE);
    assert!(class["spec"]["userData"].as_str().unwrap_or_default().contains(&multi), "userData: {}", class["spec"]["userData"]);
    assert_eq!(get("extra-configmap-default-hostile"), hostile_object());
    let t = get("cloudformation/");
    for id in ["KarpenterNodeRole", "KarpenterInterruptionQueue"] {
        let tags = strings(&t["Resources"][id]["Properties"]["Tags"]);
        assert!(tags.contains(&json!({"Key": HOSTILE_KEY, "Value": HOSTILE_LINE})), "{id}: {tags:?}");
        assert!(tags.contains(&json!({"Key": "plain", "Value": "${AWS::StackName}"})), "{id}: {tags:?}");
    }
    // …and never inside an intrinsic function, where CloudFormation would interpret them.
    let mut subs = Vec::new();
    sub_strings(&t, &mut subs);
    assert!(!subs.is_empty());
    for s in &subs {
        assert!(!s.contains("karpctl-hostile") && !s.contains("StackName"), "a user value inside Fn::Sub: {s}");
    }
    let mut all = Vec::new();
    for d in &docs {
        all_strings(&d.content, &mut all);
    }
    let whole = all.iter().filter(|s| s.contains("karpctl-hostile")).count();
    assert!(whole >= 8, "the hostile values appear {whole} times");
    for s in all.iter().filter(|s| s.contains("karpctl-hostile")) {
        // A hostile value is only ever a whole value, or embedded in userData.
        let ok = s == HOSTILE_LINE || s == HOSTILE_KEY || *s == multi || s.contains(&format!("echo '{HOSTILE_LINE}'"));
        assert!(ok, "a hostile value came out altered: {s:?}");
    }

    // The template is JSON with exactly the expected resources.
    let json_text = render::encode(&t, Encoding::Json);
    let reparsed: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(reparsed, t);
    let ids: BTreeSet<String> = t["Resources"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(ids, expected_resources(minor(&c.karpenter.version), true));
}

#[test]
fn the_template_has_exactly_the_expected_resources_for_every_version() {
    let c = load_preset(presets()[0]);
    for v in versions() {
        for queue in [true, false] {
            let t = template(&c, &v, queue);
            let text = render::encode(&t, Encoding::Json);
            let parsed: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{v}: not JSON: {e}"));
            assert_eq!(parsed["AWSTemplateFormatVersion"], "2010-09-09");
            let ids: BTreeSet<String> = parsed["Resources"].as_object().unwrap().keys().cloned().collect();
            assert_eq!(ids, expected_resources(minor(&v), queue), "{v} queue={queue}");
        }
    }
}

#[test]
fn the_render_command_emits_hostile_values_as_data() {
    let dir = scratch("sec-render");
    std::fs::write(dir.join("karpctl.yaml"), hostile_config()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_karpctl")).args(["render", "--out", "out"]).current_dir(&dir).env("NO_COLOR", "1").env_remove("KARPCTL_CONFIG").output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let t: Value = serde_json::from_str(&read(&dir.join("out/cloudformation/karpenter.json"))).expect("the template file is JSON");
    assert!(strings(&t["Resources"]["KarpenterNodeRole"]["Properties"]["Tags"]).contains(&json!({"Key": HOSTILE_KEY, "Value": HOSTILE_LINE})));
    let cm = parse_stream(&read(&dir.join("out/extra-configmap-default-hostile.yaml")));
    assert_eq!(cm, vec![hostile_object()]);
    let o = Command::new(env!("CARGO_BIN_EXE_karpctl")).args(["render"]).current_dir(&dir).env("NO_COLOR", "1").env_remove("KARPCTL_CONFIG").output().unwrap();
    assert!(o.status.success(), "{}", show(&o));
    let docs = parse_stream(&String::from_utf8(o.stdout).unwrap());
    assert!(docs.contains(&hostile_object()), "render's stream carries the object unchanged");
    assert!(docs.iter().any(|d| d["spec"]["template"]["metadata"]["annotations"]["example.com/hostile"] == hostile_multiline().as_str()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn state_backup_and_errored_copies_are_private() {
    use karpctl::state::{Backend, LocalStore, State};
    let dir = scratch("sec-state");
    // A state directory karpctl creates itself is private.
    let path = dir.join("a/b/karpctl.state.json");
    let b = Backend::Local(LocalStore::new(path.clone()));
    let mut s = State::new("c1", None);
    b.save(&mut s).await.unwrap();
    b.save(&mut s).await.unwrap();
    for d in [dir.join("a"), dir.join("a/b")] {
        assert_eq!(mode(&d), 0o700, "{} has mode {:o}", d.display(), mode(&d));
    }
    for f in [path.clone(), dir.join("a/b/karpctl.state.json.backup")] {
        assert_eq!(mode(&f), 0o600, "{} has mode {:o}", f.display(), mode(&f));
    }
    // A failed write's copy, beside the state…
    let blocked = dir.join("blocked.state.json");
    std::fs::create_dir_all(blocked.join("in-the-way")).unwrap();
    let b = Backend::Local(LocalStore::new(blocked.clone()));
    b.save(&mut State::new("c1", None)).await.expect_err("the path is a directory");
    let errored = dir.join("blocked.state.json.errored");
    assert_eq!(mode(&errored), 0o600, "{} has mode {:o}", errored.display(), mode(&errored));
    // …or in the temp directory when the state's directory cannot be written.
    std::fs::write(dir.join("file"), b"").unwrap();
    let name = format!("sec-{}.state.json", std::process::id());
    let b = Backend::Local(LocalStore::new(dir.join("file").join(&name)));
    b.save(&mut State::new("c1", None)).await.expect_err("cannot write there");
    let fallback = std::env::temp_dir().join(format!("karpctl-{name}.errored"));
    let m = mode(&fallback);
    std::fs::remove_file(&fallback).unwrap();
    assert_eq!(m, 0o600, "{} has mode {m:o}", fallback.display());
    let _ = std::fs::remove_dir_all(&dir);
}
