/*!
The rules a structurally valid config must still follow: everything the
Karpenter v1 CRDs enforce that can be checked offline (karpenter-facts §1.3),
cross-references between sections, and fields the chosen Karpenter version
lacks. Runs after the schema check, on the typed config, and reports every
problem it finds.
*/

use std::collections::{BTreeMap, BTreeSet};

use super::diag::Diags;
use super::rules::*;
use super::source::FieldPath;
use super::types::*;
use crate::model::version::{kubernetes_minor, GateKind, KarpenterVersion, Since, MAX_KNOWN_MINOR, MIN_SUPPORTED};

/// `karpenter.k8s.aws/*` keys the v1.14 CRDs accept as requirement or label keys.
pub const AWS_ALLOWED_KEYS: &[&str] = &[
    "instance-tenancy",
    "capacity-reservation-type",
    "capacity-reservation-id",
    "capacity-reservation-interruptible",
    "ec2nodeclass",
    "instance-encryption-in-transit-supported",
    "instance-category",
    "instance-hypervisor",
    "instance-family",
    "instance-generation",
    "instance-local-nvme",
    "instance-size",
    "instance-cpu",
    "instance-cpu-manufacturer",
    "instance-cpu-sustained-clock-speed-mhz",
    "instance-memory",
    "instance-ebs-bandwidth",
    "instance-network-bandwidth",
    "instance-gpu-name",
    "instance-gpu-manufacturer",
    "instance-gpu-count",
    "instance-gpu-memory",
    "instance-accelerator-name",
    "instance-accelerator-manufacturer",
    "instance-accelerator-count",
    "instance-capability-flex",
    "placement-group-id",
    "placement-group-partition",
];

/// Labels every Karpenter version treats as well known.
const WELL_KNOWN: &[&str] = &[
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "node.kubernetes.io/instance-type",
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "node.kubernetes.io/windows-build",
    "topology.k8s.aws/zone-id",
];

const RESERVED_KEYS: &[&str] = &["cpu", "memory", "ephemeral-storage", "pid"];
const EVICTION_KEYS: &[&str] =
    &["memory.available", "nodefs.available", "nodefs.inodesFree", "imagefs.available", "imagefs.inodesFree", "pid.available"];

pub fn check(c: &Config, d: &mut Diags<'_>) {
    let root = FieldPath::root();
    if c.api_version != API_VERSION {
        d.error_help(
            &root.key("apiVersion"),
            format!("unsupported config version {:?}", c.api_version),
            format!("this karpctl reads `apiVersion: {API_VERSION}`"),
        );
    }
    let version = check_karpenter(c, d);
    check_cluster(c, version, d);
    if is_cluster_name(&c.cluster.name) {
        check_policy_size(c, version, d);
    }
    check_names(c, d);
    let classes = check_node_classes(c, version, d);
    check_node_pools(c, version, &classes, d);
    check_device_plugin(c, &classes, d);
    check_rollback(c, d);
    check_state(c, d);
    check_extra_objects(c, d);
}

fn check_karpenter(c: &Config, d: &mut Diags<'_>) -> KarpenterVersion {
    let p = FieldPath::root().key("karpenter");
    let k = &c.karpenter;
    let version = match KarpenterVersion::parse(&k.version) {
        Some(v) => {
            if v < MIN_SUPPORTED {
                d.error_help(
                    &p.key("version"),
                    format!("Karpenter {v} is not supported"),
                    "karpctl installs Karpenter 1.1 and later (1.0 still serves v1beta1 through conversion webhooks); upgrade to 1.0's latest patch by hand first",
                );
            } else if v.major > 1 || v.minor > MAX_KNOWN_MINOR {
                d.warning(
                    &p.key("version"),
                    format!("Karpenter {v} is newer than this karpctl knows (1.{MAX_KNOWN_MINOR}); rendering uses the 1.{MAX_KNOWN_MINOR} schema"),
                );
            }
            v
        }
        None => {
            let help = if k.version.starts_with('v') {
                format!("write it without the leading v: {}", &k.version[1..])
            } else {
                "use a release version such as 1.15.0".into()
            };
            d.error_help(&p.key("version"), format!("{:?} is not a version (major.minor.patch)", k.version), help);
            KarpenterVersion::parse(DEFAULT_KARPENTER_VERSION).expect("default version parses")
        }
    };
    if !is_dns_label(&k.namespace) {
        d.error(&p.key("namespace"), format!("{:?} is not a valid namespace name (lowercase letters, digits and '-', at most 63)", k.namespace));
    }
    if k.replicas == Some(0) {
        d.error(&p.key("replicas"), "the controller needs at least 1 replica");
    }
    for (section, map) in [("requests", &k.resources.requests), ("limits", &k.resources.limits)] {
        for (name, q) in map {
            if parse_quantity(&q.0).is_none_or(|v| v < 0.0) {
                d.error(&p.key("resources").key(section).key(name.clone()), format!("{:?} is not a valid quantity", q.0));
            }
        }
    }
    let sp = p.key("settings");
    for (kind, gates) in [(GateKind::Core, &k.settings.feature_gates), (GateKind::Aws, &k.settings.aws_feature_gates)] {
        let what = kind.noun();
        for gate in gates.keys() {
            let gp = sp.key(kind.config_key()).key(gate.clone());
            match kind.since(gate) {
                None => {
                    let known: Vec<String> = kind.known().iter().map(|s| s.to_string()).collect();
                    d.key_error(&gp, format!("unknown {what} `{gate}`"), super::schema::suggest(gate, &known));
                }
                Some(since) if !version.at_least(since) => {
                    d.error(&gp, format!("{what} `{gate}` needs Karpenter 1.{since} or later (config has {version})"));
                }
                _ => {}
            }
        }
    }
    if k.settings.aws_feature_gates.get("rebootForRepair") == Some(&true) && k.settings.feature_gates.get("nodeRepair") != Some(&true) {
        d.warning(&sp.key("awsFeatureGates").key("rebootForRepair"), "rebootForRepair has no effect without the nodeRepair feature gate (settings.featureGates.nodeRepair: true)");
    }
    for (name, v) in [("batchMaxDuration", &k.settings.batch_max_duration), ("batchIdleDuration", &k.settings.batch_idle_duration)] {
        if let Some(v) = v {
            if !is_go_duration(v) {
                d.error(&sp.key(name), format!("{v:?} is not a duration such as 10s or 1m"));
            }
        }
    }
    if k.settings.min_values_policy.is_some() && !version.has(Since::MinValuesPolicy) {
        d.error(&sp.key("minValuesPolicy"), format!("minValuesPolicy needs Karpenter 1.6 or later (config has {version})"));
    }
    if let Some(path) = &k.chart.path {
        if path.trim().is_empty() {
            d.error(&p.key("chart").key("path"), "chart path is empty");
        }
    }
    if !(k.chart.repository.starts_with("oci://") || k.chart.repository.starts_with("https://") || k.chart.repository.starts_with("http://")) {
        d.error(&p.key("chart").key("repository"), format!("{:?} is not a chart reference (oci://… or https://…)", k.chart.repository));
    }
    check_labels_map(&p.key("nodeSelector"), &k.node_selector, d);
    check_tolerations(&p.key("tolerations"), &k.tolerations, d);
    version
}

fn check_cluster(c: &Config, version: KarpenterVersion, d: &mut Diags<'_>) {
    let p = FieldPath::root().key("cluster");
    if !is_cluster_name(&c.cluster.name) {
        d.error(
            &p.key("name"),
            format!("{:?} is not a valid EKS cluster name (1–100 letters, digits, '-' or '_', starting with a letter or digit)", c.cluster.name),
        );
    }
    if let Some(r) = &c.cluster.region {
        if !is_region(r) {
            d.error(&p.key("region"), format!("{r:?} is not an AWS region name such as us-west-2"));
        }
    }
    if let Some(kv) = &c.cluster.kubernetes_version {
        match kubernetes_minor(kv) {
            None => d.error(&p.key("kubernetesVersion"), format!("{kv:?} is not a Kubernetes version such as \"1.31\"")),
            Some(minor) => {
                let (lo, hi) = version.kubernetes_range();
                if minor < lo || minor > hi {
                    d.error_help(
                        &p.key("kubernetesVersion"),
                        format!("Karpenter {version} supports Kubernetes 1.{lo}–1.{hi}, not {kv}"),
                        "pick a Karpenter version from the compatibility matrix (karpenter.version)",
                    );
                }
            }
        }
    }
}

/// Karpenter ≤ 1.8 has one controller policy, which a long cluster name (repeated
/// in every condition) can push over IAM's size limit: found here, at the name,
/// rather than when the stack is rendered.
fn check_policy_size(c: &Config, version: KarpenterVersion, d: &mut Diags<'_>) {
    let queue = c.karpenter.settings.interruption_queue;
    if let Err(crate::model::iam::Oversized { name, size }) = crate::model::iam::controller_policies(&c.cluster.name, version, queue, c.cluster.region.as_deref()) {
        let region_help = if c.cluster.region.is_none() {
            "set cluster.region (without it the check assumes the longest partition and region), "
        } else {
            ""
        };
        d.error_help(
            &FieldPath::root().key("cluster").key("name"),
            format!(
                "with this name the controller policy {name} would be {size} characters, over IAM's {}-character limit",
                crate::model::iam::IAM_POLICY_LIMIT
            ),
            format!("{region_help}use karpenter.version 1.9 or later (its permissions are split over five policies), or a shorter cluster name"),
        );
    }
}

fn at_queue(c: &Config, p: &FieldPath) -> FieldPath {
    if c.stack.queue_name.is_some() {
        p.key("queueName")
    } else {
        FieldPath::root().key("cluster").key("name")
    }
}

fn check_names(c: &Config, d: &mut Diags<'_>) {
    let names = super::Names::of(c);
    let p = FieldPath::root().key("stack");
    if !is_stack_name(&names.stack) {
        let sp = if c.stack.name.is_some() { p.key("name") } else { FieldPath::root().key("cluster").key("name") };
        d.error(&sp, format!("{:?} is not a valid CloudFormation stack name (letters, digits and '-', starting with a letter, at most 128)", names.stack));
    }
    if c.karpenter.settings.interruption_queue && !is_queue_name(&names.queue) {
        d.error_help(
            &at_queue(c, &p),
            format!("{:?} is not a valid SQS queue name (letters, digits, '-' and '_', at most 80)", names.queue),
            "set stack.queueName",
        );
    }
    // A derived name that does not fit is the cluster name's doing: point there.
    let at = |override_set: bool, field: FieldPath| if override_set { field } else { FieldPath::root().key("cluster").key("name") };
    if !is_iam_name(&names.node_role, 64) {
        d.error_help(
            &at(c.stack.node_role_name.is_some(), p.key("nodeRoleName")),
            format!("node role name {:?} is not a valid IAM role name (at most 64 of letters, digits and _+=,.@-)", names.node_role),
            "set stack.nodeRoleName to a shorter name",
        );
    }
    if !is_iam_name(&names.controller_role, 64) {
        d.error_help(
            &at(c.identity.role_name.is_some(), FieldPath::root().key("identity").key("roleName")),
            format!("controller role name {:?} is not a valid IAM role name (at most 64 of letters, digits and _+=,.@-)", names.controller_role),
            "set identity.roleName to a shorter name",
        );
    }
    for (k, v) in &c.stack.tags {
        let tp = p.key("tags").key(k.clone());
        if !is_aws_tag_key(k) {
            d.key_error(&tp, format!("{k:?} is not a valid AWS tag key (1–128 characters, not starting with aws:)"), None);
        }
        if !is_aws_tag_value(v) {
            d.error(&tp, "AWS tag values are at most 256 characters without control characters");
        }
    }
    let dp = FieldPath::root().key("discovery");
    for (i, s) in c.discovery.subnet_ids.iter().enumerate() {
        if !is_aws_id(s, "subnet") {
            d.error(&dp.key("subnetIds").index(i), format!("{s:?} is not a subnet id (subnet-…)"));
        }
    }
    for (i, s) in c.discovery.security_group_ids.iter().enumerate() {
        if !is_aws_id(s, "sg") {
            d.error(&dp.key("securityGroupIds").index(i), format!("{s:?} is not a security group id (sg-…)"));
        }
    }
}

/// What pools need to know about each class.
pub struct ClassInfo {
    pub family: AmiFamily,
    pub variant: Variant,
    pub architectures: Vec<Arch>,
}

fn check_node_classes(c: &Config, version: KarpenterVersion, d: &mut Diags<'_>) -> BTreeMap<String, ClassInfo> {
    let mut out = BTreeMap::new();
    let k8s_minor = c.cluster.kubernetes_version.as_deref().and_then(kubernetes_minor);
    for (i, nc) in c.node_classes.iter().enumerate() {
        let p = FieldPath::root().key("nodeClasses").index(i);
        if !is_dns_subdomain(&nc.name) {
            d.error(&p.key("name"), format!("{:?} is not a valid Kubernetes object name (lowercase letters, digits, '-' and '.')", nc.name));
        }
        if out.contains_key(&nc.name) {
            d.error(&p.key("name"), format!("node class {:?} is defined twice", nc.name));
        }
        if nc.architectures.is_empty() {
            d.error(&p.key("architectures"), "list at least one architecture (amd64 or arm64)");
        }
        let mut seen = BTreeSet::new();
        for (j, a) in nc.architectures.iter().enumerate() {
            if !seen.insert(*a) {
                d.error(&p.key("architectures").index(j), format!("{} is listed twice", a.k8s()));
            }
        }
        // AMI availability by family, variant and architecture (karpenter-facts §2).
        match (nc.ami_family, nc.variant) {
            (AmiFamily::Al2023, Variant::Neuron) if nc.architectures.contains(&Arch::Arm64) => {
                d.error(&p.key("architectures"), "AL2023 has no arm64 Neuron AMI; Neuron (inf/trn) instances are x86_64 only");
            }
            (AmiFamily::Al2, Variant::Nvidia | Variant::Neuron) if nc.architectures.contains(&Arch::Arm64) => {
                d.error(&p.key("architectures"), "the AL2 GPU AMI is x86_64 only");
            }
            (AmiFamily::Al2023, Variant::Nvidia) if nc.architectures.contains(&Arch::Arm64) && !version.has(Since::Al2023NvidiaArm64) => {
                d.error_help(
                    &p.key("architectures"),
                    format!("Karpenter {version} does not look up AL2023 arm64 NVIDIA AMIs (added in 1.4)"),
                    "use Karpenter 1.4 or later, or only amd64 for this class",
                );
            }
            (AmiFamily::Bottlerocket, Variant::Neuron) => {
                d.error_help(
                    &p.key("variant"),
                    "Bottlerocket has no separate Neuron variant",
                    "use `variant: standard`: Bottlerocket's aws-k8s AMI covers inf and trn instances",
                );
            }
            _ => {}
        }
        if nc.ami_family == AmiFamily::Al2 {
            match k8s_minor {
                Some(m) if m >= 33 => d.error_help(
                    &p.key("amiFamily"),
                    format!("EKS publishes no AL2 AMIs for Kubernetes 1.{m} (the last is 1.32)"),
                    "use al2023 or bottlerocket",
                ),
                None => d.warning(&p.key("amiFamily"), "AL2 AMIs stop at Kubernetes 1.32 and EKS stopped publishing them on 2025-11-26; prefer al2023"),
                _ => {}
            }
        }
        match (&nc.role, &nc.instance_profile) {
            (Some(_), Some(_)) => d.error(&p.key("instanceProfile"), "set either `role` or `instanceProfile`, not both"),
            (Some(r), None) if !is_iam_name(r, 64) => d.error(&p.key("role"), format!("{r:?} is not an IAM role name (use the name, not the ARN)")),
            (None, Some(ip)) if !is_iam_name(ip, 128) => d.error(&p.key("instanceProfile"), format!("{ip:?} is not an instance profile name")),
            _ => {}
        }
        check_selector_terms(&p.key("subnetSelector"), &nc.subnet_selector, "subnet", false, d);
        check_selector_terms(&p.key("securityGroupSelector"), &nc.security_group_selector, "sg", true, d);
        check_ami_terms(&p.key("amiSelector"), nc, version, d);
        check_block_devices(&p.key("blockDevices"), nc, d);
        check_metadata(&p.key("metadataOptions"), nc, d);
        check_class_tags(&p.key("tags"), &nc.tags, d);
        if let Some(k) = &nc.kubelet {
            check_kubelet(&p.key("kubelet"), k, nc.ami_family, version, d);
        }
        check_user_data(&p.key("userData"), nc, d);
        out.insert(nc.name.clone(), ClassInfo { family: nc.ami_family, variant: nc.variant, architectures: nc.architectures.clone() });
    }
    out
}

fn check_tag_map(p: &FieldPath, tags: &BTreeMap<String, String>, d: &mut Diags<'_>) {
    if tags.len() > 20 {
        d.error(p, format!("at most 20 tags per selector term, got {}", tags.len()));
    }
    for (k, v) in tags {
        if k.is_empty() || v.is_empty() {
            d.error(&p.key(k.clone()), "empty tag keys or values are not supported (use \"*\" to match any value)");
        }
    }
}

fn check_selector_terms(p: &FieldPath, terms: &[SelectorTerm], id_prefix: &str, allow_name: bool, d: &mut Diags<'_>) {
    if terms.len() > 30 {
        d.error(p, format!("at most 30 selector terms, got {}", terms.len()));
    }
    for (i, t) in terms.iter().enumerate() {
        let tp = p.index(i);
        check_tag_map(&tp.key("tags"), &t.tags, d);
        if t.name.is_some() && !allow_name {
            d.key_error(&tp.key("name"), "subnet selector terms have no `name`; use `tags` or `id`", None);
        }
        let fields = usize::from(!t.tags.is_empty()) + usize::from(t.id.is_some()) + usize::from(t.name.is_some());
        if fields == 0 {
            d.error(&tp, if allow_name { "a term needs `tags`, `id` or `name`" } else { "a term needs `tags` or `id`" });
        }
        if let Some(id) = &t.id {
            if !is_aws_id(id, id_prefix) {
                d.error(&tp.key("id"), format!("{id:?} is not a valid id ({id_prefix}-…)"));
            }
            if fields > 1 {
                d.error(&tp.key("id"), "`id` must stand alone in its term (terms are OR-ed; put other selectors in another term)");
            }
        } else if t.name.is_some() && fields > 1 {
            d.error(&tp.key("name"), "`name` must stand alone in its term");
        }
    }
}

fn check_ami_terms(p: &FieldPath, nc: &NodeClass, version: KarpenterVersion, d: &mut Diags<'_>) {
    let terms = &nc.ami_selector;
    if terms.len() > 30 {
        d.error(p, format!("at most 30 AMI selector terms, got {}", terms.len()));
    }
    let has_alias = terms.iter().any(|t| t.alias.is_some());
    if has_alias && terms.len() > 1 {
        d.error(p, "an `alias` term must be the only AMI selector term");
    }
    for (i, t) in terms.iter().enumerate() {
        let tp = p.index(i);
        check_tag_map(&tp.key("tags"), &t.tags, d);
        let others = usize::from(!t.tags.is_empty()) + usize::from(t.name.is_some()) + usize::from(t.owner.is_some());
        let any = others + usize::from(t.id.is_some()) + usize::from(t.alias.is_some()) + usize::from(t.ssm_parameter.is_some());
        if any == 0 {
            d.error(&tp, "a term needs one of `alias`, `id`, `name`, `tags` or `ssmParameter`");
        }
        if let Some(id) = &t.id {
            if !is_aws_id(id, "ami") {
                d.error(&tp.key("id"), format!("{id:?} is not an AMI id (ami-…)"));
            }
            if others > 0 || t.alias.is_some() {
                d.error(&tp.key("id"), "`id` cannot be combined with `alias`, `tags`, `name` or `owner`");
            }
        }
        if let Some(alias) = &t.alias {
            if others > 0 {
                d.error(&tp.key("alias"), "`alias` cannot be combined with `tags`, `name` or `owner`");
            }
            match alias.split_once('@') {
                Some((fam, ver)) if !ver.is_empty() && alias.len() <= 30 && fam.chars().all(|c| c.is_ascii_alphanumeric()) && !fam.is_empty() => {
                    if fam != nc.ami_family.alias_name() {
                        d.error(&tp.key("alias"), format!("alias family `{fam}` does not match the class's amiFamily `{}`", nc.ami_family.alias_name()));
                    }
                }
                _ => d.error(&tp.key("alias"), format!("{alias:?} must look like family@version, e.g. al2023@v20250915 (at most 30 characters)")),
            }
        }
        if t.ssm_parameter.is_some() && !version.has(Since::SsmParameterAmiTerms) {
            d.error(&tp.key("ssmParameter"), format!("ssmParameter needs Karpenter 1.4 or later (config has {version})"));
        }
    }
}

fn check_block_devices(p: &FieldPath, nc: &NodeClass, d: &mut Diags<'_>) {
    if nc.block_devices.len() > 50 {
        d.error(p, "at most 50 block devices");
    }
    let roots = nc.block_devices.iter().filter(|b| b.root_volume).count();
    if roots > 1 {
        d.error(p, format!("at most one block device may be the root volume, {roots} are"));
    }
    let mut names = BTreeSet::new();
    for (i, b) in nc.block_devices.iter().enumerate() {
        let bp = p.index(i);
        if !names.insert(b.device_name.clone()) {
            d.error(&bp.key("deviceName"), format!("device {:?} is listed twice", b.device_name));
        }
        if !b.device_name.starts_with("/dev/") {
            d.error(&bp.key("deviceName"), format!("{:?} is not a device name such as /dev/xvda", b.device_name));
        }
        match (&b.size, &b.snapshot_id) {
            (None, None) => d.error(&bp, "set `size` (e.g. 100Gi) or `snapshotId`"),
            (Some(s), _) if !is_volume_size(s) => d.error_help(
                &bp.key("size"),
                format!("{s:?} is not a volume size"),
                "give a number with a unit: Gi (up to 59000), G (64000), Ti (58) or T (64), e.g. 100Gi",
            ),
            _ => {}
        }
        if let Some(s) = &b.snapshot_id {
            if !is_aws_id(s, "snap") {
                d.error(&bp.key("snapshotId"), format!("{s:?} is not a snapshot id (snap-…)"));
            }
        }
        let gib = b.size.as_deref().and_then(volume_size_gib);
        match b.volume_type {
            VolumeType::Gp3 => {
                if let Some(iops) = b.iops {
                    if !(3000..=16000).contains(&iops) {
                        d.error(&bp.key("iops"), format!("gp3 IOPS must be 3000–16000, got {iops}"));
                    } else if let Some(g) = gib {
                        if iops as f64 > g * 500.0 && iops > 3000 {
                            d.error(&bp.key("iops"), format!("gp3 allows at most 500 IOPS per GiB; {iops} needs at least {}Gi", (iops as f64 / 500.0).ceil()));
                        }
                    }
                }
                if let Some(t) = b.throughput {
                    if !(125..=1000).contains(&t) {
                        d.error(&bp.key("throughput"), format!("gp3 throughput must be 125–1000 MiB/s, got {t}"));
                    } else if t > 125 && b.iops.unwrap_or(3000) < t * 4 {
                        d.error(&bp.key("throughput"), format!("gp3 allows at most 0.25 MiB/s per IOPS; {t} MiB/s needs at least {} IOPS", t * 4));
                    }
                }
            }
            VolumeType::Io1 | VolumeType::Io2 => {
                if b.iops.is_none() {
                    d.error(&bp.key("iops"), "io1/io2 volumes need `iops`");
                }
                if b.throughput.is_some() {
                    d.error(&bp.key("throughput"), "`throughput` applies to gp3 only");
                }
            }
            _ => {
                if b.iops.is_some() {
                    d.error(&bp.key("iops"), "`iops` applies to gp3, io1 and io2 only");
                }
                if b.throughput.is_some() {
                    d.error(&bp.key("throughput"), "`throughput` applies to gp3 only");
                }
            }
        }
        if !b.encrypted {
            if nc.allow_weaker_security {
                d.warning(&bp.key("encrypted"), "the volume is not encrypted (allowed by allowWeakerSecurity)");
            } else {
                d.error_help(
                    &bp.key("encrypted"),
                    "unencrypted volumes are refused by default",
                    "set `allowWeakerSecurity: true` on the node class if this is intended",
                );
            }
        }
        if let Some(k) = &b.kms_key_id {
            if k.trim().is_empty() {
                d.error(&bp.key("kmsKeyId"), "kmsKeyId is empty");
            }
        }
    }
}

fn check_metadata(p: &FieldPath, nc: &NodeClass, d: &mut Diags<'_>) {
    let m = &nc.metadata_options;
    if !(1..=64).contains(&m.http_put_response_hop_limit) {
        d.error(&p.key("httpPutResponseHopLimit"), format!("hop limit must be 1–64, got {}", m.http_put_response_hop_limit));
    } else if m.http_put_response_hop_limit > 1 {
        if nc.allow_weaker_security {
            d.warning(
                &p.key("httpPutResponseHopLimit"),
                format!("hop limit {} lets pods reach the node role's credentials (allowed by allowWeakerSecurity)", m.http_put_response_hop_limit),
            );
        } else {
            d.error_help(
                &p.key("httpPutResponseHopLimit"),
                "a hop limit above 1 lets pods reach the instance metadata service and the node role's credentials",
                "set `allowWeakerSecurity: true` on the node class if this is intended",
            );
        }
    }
    if m.http_tokens == HttpTokens::Optional {
        if nc.allow_weaker_security {
            d.warning(&p.key("httpTokens"), "IMDSv1 is enabled (allowed by allowWeakerSecurity)");
        } else {
            d.error_help(
                &p.key("httpTokens"),
                "IMDSv1 (httpTokens: optional) is refused by default",
                "set `allowWeakerSecurity: true` on the node class if this is intended",
            );
        }
    }
}

fn check_class_tags(p: &FieldPath, tags: &BTreeMap<String, String>, d: &mut Diags<'_>) {
    for (k, v) in tags {
        let tp = p.key(k.clone());
        let restricted = k == "eks:eks-cluster-name"
            || k.starts_with("kubernetes.io/cluster")
            || k == "karpenter.sh/nodepool"
            || k == "karpenter.sh/nodeclaim"
            || k == "karpenter.k8s.aws/ec2nodeclass";
        if restricted {
            d.key_error(&tp, format!("tag `{k}` is set by Karpenter and cannot be overridden"), None);
        } else if !is_aws_tag_key(k) {
            d.key_error(&tp, format!("{k:?} is not a valid EC2 tag key (1–128 characters, not starting with aws:)"), None);
        }
        if !is_aws_tag_value(v) {
            d.error(&tp, "EC2 tag values are at most 256 characters without control characters");
        }
    }
}

/// Karpenter's own kubelet checks. From 1.15 the CRD no longer types `spec.kubelet`; the
/// controller checks it after apply and blocks the class (ValidationSucceeded=False) for
/// fields the AMI family would drop, so those are errors here, before any API call.
fn check_kubelet(p: &FieldPath, k: &Kubelet, family: AmiFamily, version: KarpenterVersion, d: &mut Diags<'_>) {
    let blocks = version.has(Since::KubeletCheckedByController);
    if let Some(v) = k.max_pods {
        if v < 0 {
            d.error(&p.key("maxPods"), "maxPods cannot be negative");
        }
    }
    if let Some(v) = k.pods_per_core {
        if v < 0 {
            d.error(&p.key("podsPerCore"), "podsPerCore cannot be negative");
        } else if family == AmiFamily::Bottlerocket && blocks {
            d.error_help(
                &p.key("podsPerCore"),
                format!("Karpenter {version} refuses podsPerCore on Bottlerocket (it has no setting for it): the class would never be Ready"),
                "remove podsPerCore, or set maxPods",
            );
        } else if family == AmiFamily::Bottlerocket {
            d.warning(&p.key("podsPerCore"), "Bottlerocket ignores podsPerCore");
        }
    }
    if k.cluster_dns.len() > 1 && matches!(family, AmiFamily::Bottlerocket | AmiFamily::Al2) {
        let what = format!("the {} bootstrap takes one cluster DNS address; only the first of {} reaches the kubelet", family.crd_name(), k.cluster_dns.len());
        if blocks {
            d.error_help(&p.key("clusterDNS"), format!("Karpenter {version} refuses this: {what}"), "list one address");
        } else {
            d.warning(&p.key("clusterDNS"), what);
        }
    }
    for (name, map) in [("systemReserved", &k.system_reserved), ("kubeReserved", &k.kube_reserved)] {
        for (key, val) in map {
            let kp = p.key(name).key(key.clone());
            if !RESERVED_KEYS.contains(&key.as_str()) {
                d.key_error(&kp, format!("`{key}` is not a valid {name} key; allowed: {}", RESERVED_KEYS.join(", ")), None);
            }
            if parse_quantity(val).is_none_or(|v| v < 0.0) {
                d.error(&kp, format!("{val:?} is not a non-negative quantity"));
            }
        }
    }
    for (name, map) in [("evictionHard", &k.eviction_hard), ("evictionSoft", &k.eviction_soft)] {
        for (key, val) in map {
            let kp = p.key(name).key(key.clone());
            if !EVICTION_KEYS.contains(&key.as_str()) {
                d.key_error(&kp, format!("`{key}` is not a valid {name} key; allowed: {}", EVICTION_KEYS.join(", ")), None);
            }
            let ok = match val.strip_suffix('%') {
                Some(pct) => pct.parse::<f64>().map(|v| (0.0..=100.0).contains(&v)).unwrap_or(false),
                None => parse_quantity(val).is_some_and(|v| v >= 0.0),
            };
            if !ok {
                d.error(&kp, format!("{val:?} is not a percentage or a quantity"));
            }
        }
    }
    for (key, val) in &k.eviction_soft_grace_period {
        let kp = p.key("evictionSoftGracePeriod").key(key.clone());
        if !EVICTION_KEYS.contains(&key.as_str()) {
            d.key_error(&kp, format!("`{key}` is not a valid evictionSoftGracePeriod key"), None);
        }
        if !is_go_duration(val) {
            d.error(&kp, format!("{val:?} is not a duration such as 1m30s"));
        }
        if !k.eviction_soft.contains_key(key) {
            d.error(&kp, format!("evictionSoftGracePeriod `{key}` has no matching evictionSoft entry"));
        }
    }
    for key in k.eviction_soft.keys() {
        if !k.eviction_soft_grace_period.contains_key(key) {
            d.error(&p.key("evictionSoft").key(key.clone()), format!("evictionSoft `{key}` needs a matching evictionSoftGracePeriod entry"));
        }
    }
    for (name, v) in [("imageGCHighThresholdPercent", k.image_gc_high_threshold_percent), ("imageGCLowThresholdPercent", k.image_gc_low_threshold_percent)] {
        if let Some(v) = v {
            if !(0..=100).contains(&v) {
                d.error(&p.key(name), format!("must be 0–100, got {v}"));
            }
        }
    }
    if let (Some(h), Some(l)) = (k.image_gc_high_threshold_percent, k.image_gc_low_threshold_percent) {
        if h <= l {
            d.error(&p.key("imageGCHighThresholdPercent"), format!("imageGCHighThresholdPercent ({h}) must be greater than imageGCLowThresholdPercent ({l})"));
        }
    }
    if let Some(v) = k.eviction_max_pod_grace_period {
        if v < 0 || v > i64::from(i32::MAX) {
            d.error(&p.key("evictionMaxPodGracePeriod"), "must be a non-negative 32-bit integer");
        }
    }
    for (i, ip) in k.cluster_dns.iter().enumerate() {
        if ip.parse::<std::net::IpAddr>().is_err() {
            d.error(&p.key("clusterDNS").index(i), format!("{ip:?} is not an IP address"));
        }
    }
}

fn check_user_data(p: &FieldPath, nc: &NodeClass, d: &mut Diags<'_>) {
    let u = &nc.user_data;
    if let Some(n) = u.user_namespaces {
        if n == 0 || n > 1 << 28 {
            d.error(&p.key("userNamespaces"), format!("must be 1–268435456, got {n}"));
        }
    }
    if let Some(s) = &u.soci {
        if nc.ami_family != AmiFamily::Al2023 {
            d.error(&p.key("soci"), "the SOCI snapshotter setup is provided for AL2023 only");
        }
        let ok = s.version.split('.').count() == 3 && s.version.split('.').all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()));
        if !ok {
            d.error(&p.key("soci").key("version"), format!("{:?} is not a release version such as 0.9.0", s.version));
        }
    }
    if let Some(raw) = &u.raw {
        if raw.len() > 16 * 1024 {
            d.error(&p.key("raw"), format!("userData is limited to 16 KiB by EC2, got {} bytes", raw.len()));
        }
        if nc.ami_family == AmiFamily::Bottlerocket {
            if let Err(e) = raw.parse::<toml::Table>() {
                d.error_help(&p.key("raw"), format!("Bottlerocket userData must be TOML: {}", e.message()), "see the Bottlerocket settings reference");
            } else if let Ok(t) = raw.parse::<toml::Table>() {
                if t.keys().any(|k| k != "settings") {
                    d.error(&p.key("raw"), "Bottlerocket userData may only contain the [settings] table");
                } else if t.get("settings").is_some_and(|s| !s.is_table()) {
                    d.error(&p.key("raw"), "Bottlerocket userData's `settings` must be a table ([settings]), not a value or an array of tables");
                }
            }
        } else if is_mime(raw) && (u.user_namespaces.is_some() || u.soci.is_some()) {
            d.error_help(
                &p.key("raw"),
                "a MIME multipart `raw` cannot be combined with userNamespaces or soci",
                "give `raw` as a shell script or NodeConfig, or put everything in the MIME document",
            );
        }
    }
}

pub fn is_mime(s: &str) -> bool {
    let t = s.trim_start();
    t.starts_with("MIME-Version:") || t.starts_with("Content-Type:")
}

/// Checks a label or requirement key against Karpenter's restrictions.
fn check_label_key(p: &FieldPath, key: &str, version: KarpenterVersion, what: &str, d: &mut Diags<'_>) -> bool {
    if key.len() > 316 || !is_qualified_name(key) {
        d.key_error(p, format!("{key:?} is not a valid {what} key (a qualified name such as example.com/role)"), None);
        return false;
    }
    let domain = key_domain(key).unwrap_or("");
    if key == "karpenter.sh/nodepool" {
        d.key_error(p, format!("{what} `karpenter.sh/nodepool` is set by Karpenter and restricted"), None);
        return false;
    }
    if key == "kubernetes.io/hostname" {
        d.key_error(p, format!("{what} `kubernetes.io/hostname` is restricted"), None);
        return false;
    }
    if domain.ends_with("karpenter.sh") && key != "karpenter.sh/capacity-type" {
        d.key_error(p, format!("label domain karpenter.sh is restricted; only karpenter.sh/capacity-type may be used as a {what}"), None);
        return false;
    }
    if domain.ends_with("karpenter.k8s.aws") {
        let name = key.split_once('/').map(|(_, n)| n).unwrap_or("");
        if domain != "karpenter.k8s.aws" || !AWS_ALLOWED_KEYS.contains(&name) {
            let allowed: Vec<String> = AWS_ALLOWED_KEYS.iter().map(|k| format!("karpenter.k8s.aws/{k}")).collect();
            d.key_error(p, format!("`{key}` is not an allowed karpenter.k8s.aws key"), super::schema::suggest(key, &allowed));
            return false;
        }
    }
    if !version.has(Since::GteLteAndKubernetesLabels)
        && (domain.ends_with("kubernetes.io") || domain.ends_with("k8s.io"))
        && !WELL_KNOWN.contains(&key)
        && !(domain.ends_with("node.kubernetes.io") || domain.ends_with("node-restriction.kubernetes.io") || domain == "kops.k8s.io")
    {
        d.key_error(p, format!("Karpenter {version} restricts custom keys in the kubernetes.io and k8s.io domains (allowed from 1.9)"), None);
        return false;
    }
    true
}

fn check_labels_map(p: &FieldPath, m: &BTreeMap<String, String>, d: &mut Diags<'_>) {
    for (k, v) in m {
        let lp = p.key(k.clone());
        if !is_qualified_name(k) {
            d.key_error(&lp, format!("{k:?} is not a valid label key"), None);
        }
        if !is_label_value(v) {
            d.error(&lp, format!("{v:?} is not a valid label value (at most 63 of letters, digits, '-', '_' and '.', starting and ending with a letter or digit)"));
        }
    }
}

fn check_tolerations(p: &FieldPath, ts: &[Toleration], d: &mut Diags<'_>) {
    for (i, t) in ts.iter().enumerate() {
        let tp = p.index(i);
        if let Some(k) = &t.key {
            if !is_qualified_name(k) {
                d.error(&tp.key("key"), format!("{k:?} is not a valid taint key"));
            }
        }
        if t.operator == Some(TolerationOperator::Exists) && t.value.is_some() {
            d.error(&tp.key("value"), "a toleration with operator Exists takes no value");
        }
        if t.key.is_none() && t.operator != Some(TolerationOperator::Exists) {
            d.error(&tp.key("operator"), "a toleration without a key must use operator Exists");
        }
    }
}

fn check_taints(p: &FieldPath, taints: &[Taint], seen: &mut BTreeSet<(String, TaintEffect)>, d: &mut Diags<'_>) {
    for (i, t) in taints.iter().enumerate() {
        let tp = p.index(i);
        if !is_qualified_name(&t.key) {
            d.error(&tp.key("key"), format!("{:?} is not a valid taint key (a qualified name)", t.key));
        }
        if let Some(v) = &t.value {
            if v.is_empty() {
                d.error_help(&tp.key("value"), "an empty taint value is not accepted", "leave `value` out instead");
            } else if !is_label_name(v) {
                d.error(&tp.key("value"), format!("{v:?} is not a valid taint value (at most 63 of letters, digits, '-', '_' and '.')"));
            }
        }
        if !seen.insert((t.key.clone(), t.effect)) {
            d.error(&tp, format!("taint {}:{:?} appears twice across taints and startupTaints", t.key, t.effect));
        }
    }
}

fn check_string_set(p: &FieldPath, s: &StringSet, label: bool, d: &mut Diags<'_>) {
    for (name, list) in [("allowed", &s.allowed), ("notAllowed", &s.not_allowed)] {
        for (i, v) in list.iter().enumerate() {
            if label && !is_label_value(v) {
                d.error(&p.key(name).index(i), format!("{v:?} is not a valid label value"));
            }
            if v.is_empty() {
                d.error(&p.key(name).index(i), "empty value");
            }
        }
    }
    for (i, v) in s.not_allowed.iter().enumerate() {
        if s.allowed.contains(v) {
            d.error(&p.key("notAllowed").index(i), format!("{v:?} is both allowed and not allowed"));
        }
    }
}

fn check_number_set(p: &FieldPath, s: &NumberSet, d: &mut Diags<'_>) {
    if let (Some(lo), Some(hi)) = (s.min, s.max) {
        if lo > hi {
            d.error(&p.key("min"), format!("min ({lo}) is greater than max ({hi})"));
        }
    }
    if s.max == Some(0) {
        d.error(&p.key("max"), "max must be at least 1");
    }
    for (i, v) in s.not_allowed.iter().enumerate() {
        if s.allowed.contains(v) {
            d.error(&p.key("notAllowed").index(i), format!("{v} is both allowed and not allowed"));
        }
    }
}

fn check_node_pools(c: &Config, version: KarpenterVersion, classes: &BTreeMap<String, ClassInfo>, d: &mut Diags<'_>) {
    let mut names = BTreeSet::new();
    for (i, np) in c.node_pools.iter().enumerate() {
        let p = FieldPath::root().key("nodePools").index(i);
        if !is_dns_subdomain(&np.name) {
            d.error(&p.key("name"), format!("{:?} is not a valid Kubernetes object name (lowercase letters, digits, '-' and '.')", np.name));
        }
        if !names.insert(np.name.clone()) {
            d.error(&p.key("name"), format!("node pool {:?} is defined twice", np.name));
        }
        let class = classes.get(&np.node_class);
        if class.is_none() {
            let known: Vec<String> = classes.keys().cloned().collect();
            let help = if known.is_empty() { Some("define it under nodeClasses".to_string()) } else { super::schema::suggest(&np.node_class, &known) };
            match help {
                Some(h) => d.error_help(&p.key("nodeClass"), format!("node class {:?} is not defined in nodeClasses", np.node_class), h),
                None => d.error(&p.key("nodeClass"), format!("node class {:?} is not defined in nodeClasses", np.node_class)),
            }
        }
        let ip = p.key("instances");
        check_string_set(&ip.key("categories"), &np.instances.categories, true, d);
        check_string_set(&ip.key("families"), &np.instances.families, true, d);
        check_string_set(&ip.key("sizes"), &np.instances.sizes, true, d);
        check_string_set(&ip.key("types"), &np.instances.types, true, d);
        check_number_set(&ip.key("generations"), &np.instances.generations, d);
        check_number_set(&ip.key("cpus"), &np.instances.cpus, d);
        for (j, t) in np.instances.types.allowed.iter().enumerate() {
            if !t.contains('.') {
                d.error(&ip.key("types").key("allowed").index(j), format!("{t:?} is not an instance type such as m5.large"));
            }
        }
        if let Some(cls) = class {
            for (j, a) in np.architectures.iter().enumerate() {
                if !cls.architectures.contains(a) {
                    d.error_help(
                        &p.key("architectures").index(j),
                        format!("node class {:?} resolves no {} AMI", np.node_class, a.k8s()),
                        format!("add {} to nodeClasses[{}].architectures", a.k8s(), np.node_class),
                    );
                }
            }
        }
        let mut seen_ct = BTreeSet::new();
        for (j, ct) in np.capacity_types.iter().enumerate() {
            if !seen_ct.insert(*ct) {
                d.error(&p.key("capacityTypes").index(j), format!("{} is listed twice", ct.as_str()));
            }
            if *ct == CapacityType::Reserved {
                if !version.has(Since::CapacityReservations) {
                    d.error(&p.key("capacityTypes").index(j), format!("capacity type `reserved` needs Karpenter 1.3 or later (config has {version})"));
                } else {
                    d.error_help(
                        &p.key("capacityTypes").index(j),
                        "capacity type `reserved` needs capacity reservations selected on the node class, which karpctl does not configure yet",
                        "use spot and on-demand for this pool",
                    );
                }
            }
        }
        for (j, z) in np.zones.iter().enumerate() {
            if !is_label_value(z) || z.is_empty() {
                d.error(&p.key("zones").index(j), format!("{z:?} is not an availability zone name"));
            } else if let Some(r) = &c.cluster.region {
                if !z.starts_with(r.as_str()) {
                    d.error(&p.key("zones").index(j), format!("zone {z:?} is not in region {r}"));
                }
            }
        }
        if np.labels.len() + np.requirements.len() > 100 {
            d.error(&p.key("labels"), "labels and requirements together may not exceed 100");
        }
        for (k, v) in &np.labels {
            let lp = p.key("labels").key(k.clone());
            check_label_key(&lp, k, version, "label", d);
            if k == "karpenter.sh/capacity-type" {
                d.key_error(&lp, "use capacityTypes instead of a karpenter.sh/capacity-type label", None);
            }
            if !is_label_value(v) {
                d.error(&lp, format!("{v:?} is not a valid label value (at most 63 of letters, digits, '-', '_' and '.', starting and ending with a letter or digit)"));
            }
        }
        for k in np.annotations.keys() {
            if !is_qualified_name(k) {
                d.key_error(&p.key("annotations").key(k.clone()), format!("{k:?} is not a valid annotation key"), None);
            }
        }
        let mut taints = BTreeSet::new();
        check_taints(&p.key("taints"), &np.taints, &mut taints, d);
        check_taints(&p.key("startupTaints"), &np.startup_taints, &mut taints, d);
        if let Some(w) = np.weight {
            if !(1..=100).contains(&w) {
                d.error_help(&p.key("weight"), format!("weight must be between 1 and 100, got {w}"), "leave it out for weight 0 (tried last)");
            }
        }
        for (k, q) in &np.limits {
            let lp = p.key("limits").key(k.clone());
            if !is_qualified_name(k) {
                d.key_error(&lp, format!("{k:?} is not a resource name"), None);
            }
            match parse_quantity(&q.0) {
                None => d.error_help(&lp, format!("{:?} is not a Kubernetes quantity", q.0), "examples: \"100\", 400Gi, 500m"),
                Some(v) if v < 0.0 => d.error(&lp, "limits cannot be negative"),
                _ => {}
            }
            if k == "nodes" && !version.has(Since::PlacementGroupsAndNodeLimits) {
                d.warning(&lp, format!("limits.nodes is only enforced for dynamic pools from Karpenter 1.11 (config has {version})"));
            }
        }
        let gpu_limit = np.limits.keys().any(|k| k.starts_with("nvidia.com/"));
        if let Some(cls) = class {
            if gpu_limit && cls.variant != Variant::Nvidia {
                d.error_help(
                    &p.key("limits"),
                    format!("an nvidia.com limit on a pool whose node class {:?} is not an NVIDIA variant", np.node_class),
                    "set `variant: nvidia` on that node class, or point the pool at a GPU class",
                );
            }
            if np.limits.keys().any(|k| k.starts_with("aws.amazon.com/neuron")) && cls.variant != Variant::Neuron && cls.family != AmiFamily::Bottlerocket {
                d.error(&p.key("limits"), format!("a Neuron limit on a pool whose node class {:?} is not a Neuron variant", np.node_class));
            }
        }
        if let Some(dis) = &np.disruption {
            let dp = p.key("disruption");
            if dis.consolidation_policy == ConsolidationPolicy::Balanced && !version.has(Since::BalancedConsolidation) {
                d.error(&dp.key("consolidationPolicy"), format!("consolidationPolicy Balanced needs Karpenter 1.14 or later (config has {version})"));
            }
            if let Some(ca) = &dis.consolidate_after {
                if !is_duration_or_never(ca) {
                    d.error_help(&dp.key("consolidateAfter"), format!("{ca:?} is not a duration"), "use s, m and h units (30s, 5m, 1h30m) or Never; days are not accepted");
                }
            }
            if dis.budgets.len() > 50 {
                d.error(&dp.key("budgets"), "at most 50 budgets");
            }
            for (j, b) in dis.budgets.iter().enumerate() {
                let bp = dp.key("budgets").index(j);
                if !is_budget_nodes(&b.nodes) {
                    d.error_help(&bp.key("nodes"), format!("{:?} is not a node count or percentage", b.nodes), "examples: \"0\", \"5\", \"20%\"");
                }
                match (&b.schedule, &b.duration) {
                    (Some(_), None) => d.error(&bp.key("duration"), "`schedule` must be set together with `duration`"),
                    (None, Some(_)) => d.error(&bp.key("schedule"), "`duration` must be set together with `schedule`"),
                    _ => {}
                }
                if let Some(s) = &b.schedule {
                    if !is_cron(s) {
                        d.error_help(&bp.key("schedule"), format!("{s:?} is not a cron schedule"), "five fields (minute hour day month weekday, in UTC) or @daily, @hourly, …");
                    }
                }
                if let Some(du) = &b.duration {
                    if !is_budget_duration(du) {
                        d.error_help(&bp.key("duration"), format!("{du:?} is not a budget duration"), "hours and minutes only: 8h, 30m, 1h30m");
                    }
                }
                let mut rs = BTreeSet::new();
                for (r, reason) in b.reasons.iter().enumerate() {
                    if !rs.insert(*reason) {
                        d.error(&bp.key("reasons").index(r), format!("{reason:?} is listed twice"));
                    }
                    if *reason == DisruptionReason::Unhealthy && !version.has(Since::UnhealthyBudgets) {
                        d.error(&bp.key("reasons").index(r), format!("budget reason Unhealthy needs Karpenter 1.15 or later (config has {version}): node repair respects budgets from 1.15"));
                    }
                }
            }
        }
        if let Some(e) = &np.expire_after {
            if !is_duration_or_never(e) {
                d.error_help(&p.key("expireAfter"), format!("{e:?} is not a duration"), "use s, m and h units (720h) or Never; days are not accepted");
            }
        }
        if let Some(t) = &np.termination_grace_period {
            if !is_duration(t) {
                d.error_help(&p.key("terminationGracePeriod"), format!("{t:?} is not a duration"), "use s, m and h units, e.g. 48h (Never is not accepted here)");
            }
        }
        if np.requirements.len() > 100 {
            d.error(&p.key("requirements"), "at most 100 requirements");
        }
        for (j, r) in np.requirements.iter().enumerate() {
            let rp = p.key("requirements").index(j);
            check_label_key(&rp.key("key"), &r.key, version, "requirement", d);
            match r.operator {
                Operator::In if r.values.is_empty() => d.error(&rp.key("values"), "operator In needs at least one value"),
                Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                    d.error(&rp.key("values"), format!("operator {} takes no values", r.operator.as_str()))
                }
                Operator::Gt | Operator::Lt | Operator::Gte | Operator::Lte => {
                    if matches!(r.operator, Operator::Gte | Operator::Lte) && !version.has(Since::GteLteAndKubernetesLabels) {
                        d.error(&rp.key("operator"), format!("operator {} needs Karpenter 1.9 or later (config has {version})", r.operator.as_str()));
                    }
                    if r.values.len() != 1 || r.values[0].parse::<u64>().is_err() {
                        d.error(&rp.key("values"), format!("operator {} needs exactly one non-negative integer value", r.operator.as_str()));
                    }
                }
                _ => {}
            }
            for (v, val) in r.values.iter().enumerate() {
                if !is_label_value(val) {
                    d.error(&rp.key("values").index(v), format!("{val:?} is not a valid label value"));
                }
            }
            if let Some(mv) = r.min_values {
                if !(1..=50).contains(&mv) {
                    d.error(&rp.key("minValues"), format!("minValues must be 1–50, got {mv}"));
                } else if r.operator == Operator::In && (r.values.len() as i64) < mv {
                    d.error(&rp.key("minValues"), format!("minValues {mv} is more than the {} value(s) listed", r.values.len()));
                }
            }
            if r.key == "karpenter.sh/capacity-type" && r.operator == Operator::In && !r.values.iter().any(|v| ["on-demand", "spot", "reserved"].contains(&v.as_str())) {
                d.error(&rp.key("values"), "karpenter.sh/capacity-type In needs at least one of on-demand, spot, reserved");
            }
            if r.key == "karpenter.k8s.aws/instance-tenancy" && r.operator == Operator::In && !r.values.iter().any(|v| ["default", "dedicated"].contains(&v.as_str())) {
                d.error(&rp.key("values"), "karpenter.k8s.aws/instance-tenancy In needs at least one of default, dedicated");
            }
        }
    }
}

fn check_device_plugin(c: &Config, classes: &BTreeMap<String, ClassInfo>, d: &mut Diags<'_>) {
    let p = FieldPath::root().key("devicePlugin");
    let dp = &c.device_plugin;
    let needs = classes.values().any(|ci| ci.variant == Variant::Nvidia && ci.family != AmiFamily::Bottlerocket);
    if dp.mode == DevicePluginMode::On && !needs {
        d.warning(&p.key("mode"), "no AL2023/AL2 NVIDIA node class needs the device plugin (Bottlerocket NVIDIA AMIs ship their own)");
    }
    let vp: Vec<&str> = dp.chart_version.split('.').collect();
    if vp.len() != 3 || vp.iter().any(|x| x.is_empty() || !x.bytes().all(|b| b.is_ascii_digit())) {
        d.error(&p.key("chartVersion"), format!("{:?} is not a chart version such as 0.17.4 (no leading v)", dp.chart_version));
    }
    if !is_dns_label(&dp.namespace) {
        d.error(&p.key("namespace"), format!("{:?} is not a valid namespace name", dp.namespace));
    } else if dp.namespace == "default" {
        d.error(&p.key("namespace"), "the device plugin chart refuses the default namespace");
    }
    if let Some(s) = &dp.sharing {
        let sp = p.key("sharing");
        let any_nvidia = classes.values().any(|ci| ci.variant == Variant::Nvidia);
        if !any_nvidia {
            d.warning(&sp, "GPU sharing is configured but no node class has `variant: nvidia`; it applies nowhere");
        }
        if s.mps.is_some() && classes.values().any(|ci| ci.variant == Variant::Nvidia && ci.family == AmiFamily::Bottlerocket) {
            d.error_help(
                &sp.key("mps"),
                "MPS cannot be configured on Bottlerocket NVIDIA classes (their built-in plugin supports time-slicing only)",
                "use timeSlicing, or AL2023 for the MPS classes",
            );
        }
        if s.time_slicing.is_some() && s.mps.is_some() {
            d.error(&sp, "timeSlicing and mps are mutually exclusive");
        }
        if s.time_slicing.is_none() && s.mps.is_none() {
            d.error(&sp, "set timeSlicing or mps");
        }
        for (name, cfg) in [("timeSlicing", &s.time_slicing), ("mps", &s.mps)] {
            if let Some(cfg) = cfg {
                if !(2..=1024).contains(&cfg.replicas) {
                    d.error(&sp.key(name).key("replicas"), format!("replicas must be 2–1024, got {}", cfg.replicas));
                }
            }
        }
    }
    check_labels_map(&p.key("nodeSelector"), &dp.node_selector, d);
}

fn check_rollback(c: &Config, d: &mut Diags<'_>) {
    let p = FieldPath::root().key("rollback").key("nodegroups");
    let mut seen = BTreeSet::new();
    for (i, ng) in c.rollback.nodegroups.iter().enumerate() {
        let np = p.index(i);
        if ng.name.is_empty() || ng.name.len() > 63 || !ng.name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !ng.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            d.error(&np.key("name"), format!("{:?} is not a valid nodegroup name", ng.name));
        }
        if !seen.insert(ng.name.clone()) {
            d.error(&np.key("name"), format!("nodegroup {:?} is listed twice", ng.name));
        }
        if ng.min_size < 0 {
            d.error(&np.key("minSize"), "minSize cannot be negative");
        }
        if ng.max_size < 1 {
            d.error(&np.key("maxSize"), "maxSize must be at least 1");
        }
        if ng.desired_size < ng.min_size || ng.desired_size > ng.max_size {
            d.error(&np.key("desiredSize"), format!("desiredSize {} must be between minSize {} and maxSize {}", ng.desired_size, ng.min_size, ng.max_size));
        }
    }
}

fn check_state(c: &Config, d: &mut Diags<'_>) {
    let p = FieldPath::root().key("state");
    if c.state.path.is_some() && c.state.s3.is_some() {
        d.error(&p, "set either `path` (local state) or `s3`, not both");
    }
    if let Some(path) = &c.state.path {
        if path.trim().is_empty() {
            d.error(&p.key("path"), "state path is empty");
        }
    }
    if let Some(s3) = &c.state.s3 {
        if !is_bucket_name(&s3.bucket) {
            d.error(&p.key("s3").key("bucket"), format!("{:?} is not a valid S3 bucket name", s3.bucket));
        }
        if let Some(k) = &s3.key {
            if k.is_empty() || k.len() > 1024 || k.starts_with('/') {
                d.error(&p.key("s3").key("key"), "the object key must be 1–1024 characters and not start with /");
            }
        }
        if let Some(r) = &s3.region {
            if !is_region(r) {
                d.error(&p.key("s3").key("region"), format!("{r:?} is not an AWS region name"));
            }
        }
    }
}

fn is_kind(k: &str) -> bool {
    k.len() <= 63 && k.starts_with(|c: char| c.is_ascii_alphabetic()) && k.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `v1`, `apps/v1`, `karpenter.sh/v1beta1`: an optional DNS-subdomain group and a version.
fn is_api_version(a: &str) -> bool {
    let (group, version) = match a.split_once('/') {
        Some((g, v)) => (Some(g), v),
        None => (None, a),
    };
    group.is_none_or(is_dns_subdomain) && is_dns_label(version)
}

fn check_extra_objects(c: &Config, d: &mut Diags<'_>) {
    let p = FieldPath::root().key("extraObjects");
    let mut seen = BTreeSet::new();
    for (i, o) in c.extra_objects.iter().enumerate() {
        let op = p.index(i);
        let Some(m) = o.as_object() else {
            d.error(&op, "each extra object must be a Kubernetes manifest (a mapping)");
            continue;
        };
        let api = m.get("apiVersion").and_then(|v| v.as_str());
        let kind = m.get("kind").and_then(|v| v.as_str());
        let name = m.get("metadata").and_then(|v| v.get("name")).and_then(|v| v.as_str());
        if api.is_none_or(str::is_empty) {
            d.error(&op.key("apiVersion"), "missing `apiVersion`");
        } else if let Some(a) = api.filter(|a| !is_api_version(a)) {
            d.error(&op.key("apiVersion"), format!("{a:?} is not an apiVersion such as v1 or apps/v1"));
        }
        // The kind and namespace also name the file `render --out` writes, so
        // nothing but a real kind and namespace may get through.
        if kind.is_none_or(str::is_empty) {
            d.error(&op.key("kind"), "missing `kind`");
        } else if let Some(k) = kind.filter(|k| !is_kind(k)) {
            d.error(&op.key("kind"), format!("{k:?} is not a Kubernetes kind (letters and digits, starting with a letter)"));
        }
        match m.get("metadata").and_then(|v| v.get("namespace")) {
            None => {}
            Some(serde_json::Value::String(ns)) if is_dns_label(ns) => {}
            Some(other) => d.error(&op.key("metadata").key("namespace"), format!("{other} is not a valid namespace name")),
        }
        match name {
            None => d.error(&op.key("metadata").key("name"), "missing `metadata.name`"),
            Some(n) if !is_dns_subdomain(n) => d.error(&op.key("metadata").key("name"), format!("{n:?} is not a valid object name")),
            _ => {}
        }
        if let (Some(a), Some(k), Some(n)) = (api, kind, name) {
            let ns = m.get("metadata").and_then(|v| v.get("namespace")).and_then(|v| v.as_str()).unwrap_or("");
            if !seen.insert((a.to_string(), k.to_string(), ns.to_string(), n.to_string())) {
                d.error(&op, format!("{k} {n} is listed twice"));
            }
            if (k == "NodePool" && a.starts_with("karpenter.sh/")) || (k == "EC2NodeClass" && a.starts_with("karpenter.k8s.aws/")) {
                d.error_help(&op.key("kind"), format!("{k} objects belong in nodePools/nodeClasses"), "karpctl validates, pins and prunes those; extraObjects are for everything else");
            }
        }
    }
}
