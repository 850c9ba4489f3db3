/*!
The Karpenter controller's IAM policies as karpctl's stack defines them: the
tag-scoped statements of each Karpenter version, split into managed policies the
way upstream splits them (installers-survey §1.2), their names, and the size IAM
would count for each — so both the template and config validation (a long
cluster name on Karpenter ≤ 1.8) measure the same documents.
*/

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::cfn::*;
use super::version::{KarpenterVersion, PolicySplit, Since};

/// The largest managed policy IAM accepts, in characters without whitespace.
pub const IAM_POLICY_LIMIT: usize = 6144;

/// A managed policy of the split, by logical id part (`NodeLifecycle` …).
struct PolicyPart {
    part: &'static str,
    statements: Vec<Statement>,
}

pub fn arn(tail: &str) -> Expr {
    Expr::sub(format!("arn:${{AWS::Partition}}:{tail}"))
}

pub fn cond(entries: &[(&'static str, &str, CondValue)]) -> Conditions {
    let mut c: Conditions = BTreeMap::new();
    for (op, key, v) in entries {
        c.entry(op).or_default().insert((*key).to_string(), v.clone());
    }
    c
}

pub fn one(s: &str) -> CondValue {
    CondValue::One(Expr::lit(s))
}

fn stmt(sid: &'static str, action: &[&'static str], resource: Vec<Expr>, condition: Conditions) -> Statement {
    Statement { sid: Some(sid), effect: "Allow", principal: None, action: action.to_vec(), resource, condition }
}

pub fn policy(statement: Vec<Statement>) -> PolicyDocument {
    PolicyDocument { version: "2012-10-17", id: None, statement }
}

/// The controller policies for a Karpenter version, split as upstream splits them.
fn controller_parts(cluster: &str, v: KarpenterVersion, queue: bool) -> Vec<PolicyPart> {
    let owned_res = format!("aws:ResourceTag/kubernetes.io/cluster/{cluster}");
    let owned_req = format!("aws:RequestTag/kubernetes.io/cluster/{cluster}");
    let ec2 = |t: &str| arn(&format!("ec2:${{AWS::Region}}:*:{t}"));
    let tagged_types = ["fleet/*", "instance/*", "volume/*", "network-interface/*", "launch-template/*", "spot-instances-request/*"];

    let mut access = vec![arn("ec2:${AWS::Region}::image/*"), arn("ec2:${AWS::Region}::snapshot/*"), ec2("security-group/*"), ec2("subnet/*")];
    if v.has(Since::CapacityReservations) {
        access.push(ec2("capacity-reservation/*"));
    }
    if v.has(Since::PlacementGroupsAndNodeLimits) {
        access.push(ec2("placement-group/*"));
    }
    let node_lifecycle = vec![
        stmt("AllowScopedEC2InstanceAccessActions", &["ec2:RunInstances", "ec2:CreateFleet"], access, BTreeMap::new()),
        stmt(
            "AllowScopedEC2LaunchTemplateAccessActions",
            &["ec2:RunInstances", "ec2:CreateFleet"],
            vec![ec2("launch-template/*")],
            cond(&[("StringEquals", &owned_res, one("owned")), ("StringLike", "aws:ResourceTag/karpenter.sh/nodepool", one("*"))]),
        ),
        stmt(
            "AllowScopedEC2InstanceActionsWithTags",
            &["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
            tagged_types.iter().map(|t| ec2(t)).collect(),
            cond(&[
                ("StringEquals", &owned_req, one("owned")),
                ("StringEquals", "aws:RequestTag/eks:eks-cluster-name", one(cluster)),
                ("StringLike", "aws:RequestTag/karpenter.sh/nodepool", one("*")),
            ]),
        ),
        stmt(
            "AllowScopedResourceCreationTagging",
            &["ec2:CreateTags"],
            tagged_types.iter().map(|t| ec2(t)).collect(),
            cond(&[
                ("StringEquals", &owned_req, one("owned")),
                ("StringEquals", "aws:RequestTag/eks:eks-cluster-name", one(cluster)),
                (
                    "StringEquals",
                    "ec2:CreateAction",
                    CondValue::Many(["RunInstances", "CreateFleet", "CreateLaunchTemplate"].iter().map(|a| Expr::lit(*a)).collect()),
                ),
                ("StringLike", "aws:RequestTag/karpenter.sh/nodepool", one("*")),
            ]),
        ),
        stmt(
            "AllowScopedResourceTagging",
            &["ec2:CreateTags"],
            vec![ec2("instance/*")],
            cond(&[
                ("StringEquals", &owned_res, one("owned")),
                ("StringLike", "aws:ResourceTag/karpenter.sh/nodepool", one("*")),
                ("StringEqualsIfExists", "aws:RequestTag/eks:eks-cluster-name", one(cluster)),
                (
                    "ForAllValues:StringEquals",
                    "aws:TagKeys",
                    CondValue::Many(["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"].iter().map(|a| Expr::lit(*a)).collect()),
                ),
            ]),
        ),
        stmt(
            "AllowScopedDeletion",
            if v.has(Since::RebootForRepair) {
                // Node repair's reboot (the rebootForRepair AWS feature gate), on the same
                // cluster-owned, pool-tagged instances the controller may terminate.
                &["ec2:TerminateInstances", "ec2:RebootInstances", "ec2:DeleteLaunchTemplate"]
            } else {
                &["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"]
            },
            vec![ec2("instance/*"), ec2("launch-template/*")],
            cond(&[("StringEquals", &owned_res, one("owned")), ("StringLike", "aws:ResourceTag/karpenter.sh/nodepool", one("*"))]),
        ),
    ];

    let profile = arn("iam::${AWS::AccountId}:instance-profile/*");
    let region = CondValue::One(Expr::sub("${AWS::Region}"));
    let iam_integration = vec![
        stmt(
            "AllowPassingInstanceRole",
            &["iam:PassRole"],
            vec![Expr::GetAtt(ids::NODE_ROLE.into(), "Arn".into())],
            cond(&[(
                "StringEquals",
                "iam:PassedToService",
                CondValue::Many(vec![Expr::lit("ec2.amazonaws.com"), Expr::lit("ec2.amazonaws.com.cn")]),
            )]),
        ),
        stmt(
            "AllowScopedInstanceProfileCreationActions",
            &["iam:CreateInstanceProfile"],
            vec![profile.clone()],
            cond(&[
                ("StringEquals", &owned_req, one("owned")),
                ("StringEquals", "aws:RequestTag/eks:eks-cluster-name", one(cluster)),
                ("StringEquals", "aws:RequestTag/topology.kubernetes.io/region", region.clone()),
                ("StringLike", "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass", one("*")),
            ]),
        ),
        stmt(
            "AllowScopedInstanceProfileTagActions",
            &["iam:TagInstanceProfile"],
            vec![profile.clone()],
            cond(&[
                ("StringEquals", &owned_res, one("owned")),
                ("StringEquals", "aws:ResourceTag/topology.kubernetes.io/region", region.clone()),
                ("StringEquals", &owned_req, one("owned")),
                ("StringEquals", "aws:RequestTag/eks:eks-cluster-name", one(cluster)),
                ("StringEquals", "aws:RequestTag/topology.kubernetes.io/region", region.clone()),
                ("StringLike", "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass", one("*")),
                ("StringLike", "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass", one("*")),
            ]),
        ),
        stmt(
            "AllowScopedInstanceProfileActions",
            &["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"],
            vec![profile.clone()],
            cond(&[
                ("StringEquals", &owned_res, one("owned")),
                ("StringEquals", "aws:ResourceTag/topology.kubernetes.io/region", region.clone()),
                ("StringLike", "aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass", one("*")),
            ]),
        ),
    ];

    let cluster_arn = arn(&format!("eks:${{AWS::Region}}:${{AWS::AccountId}}:cluster/{cluster}"));
    let eks_integration =
        vec![stmt("AllowAPIServerEndpointDiscovery", &["eks:DescribeCluster"], vec![cluster_arn.clone()], BTreeMap::new())];

    let interruption = vec![stmt(
        "AllowInterruptionQueueActions",
        &["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
        vec![Expr::GetAtt(ids::QUEUE.into(), "Arn".into())],
        BTreeMap::new(),
    )];

    let zonal_shift = vec![stmt(
        "AllowZonalShiftStatusReadOnly",
        &["arc-zonal-shift:GetManagedResource"],
        vec![Expr::lit("*")],
        cond(&[("StringEquals", "arc-zonal-shift:ResourceIdentifier", CondValue::One(cluster_arn))]),
    )];

    let mut describe = Vec::new();
    if v.has(Since::CapacityReservations) {
        describe.push("ec2:DescribeCapacityReservations");
    }
    describe.extend(["ec2:DescribeImages", "ec2:DescribeInstances"]);
    if v.has(Since::InstanceStatus) {
        describe.push("ec2:DescribeInstanceStatus");
    }
    describe.extend(["ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes", "ec2:DescribeLaunchTemplates"]);
    if v.has(Since::PlacementGroupsAndNodeLimits) {
        describe.push("ec2:DescribePlacementGroups");
    }
    describe.extend(["ec2:DescribeSecurityGroups", "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets"]);
    let mut discovery = vec![
        stmt(
            "AllowRegionalReadActions",
            &describe,
            vec![Expr::lit("*")],
            cond(&[("StringEquals", "aws:RequestedRegion", CondValue::One(Expr::sub("${AWS::Region}")))]),
        ),
        stmt("AllowSSMReadActions", &["ssm:GetParameter"], vec![arn("ssm:${AWS::Region}::parameter/aws/service/*")], BTreeMap::new()),
        stmt("AllowPricingReadActions", &["pricing:GetProducts"], vec![Expr::lit("*")], BTreeMap::new()),
    ];
    if v.has(Since::ListInstanceProfiles) {
        discovery.push(stmt("AllowUnscopedInstanceProfileListAction", &["iam:ListInstanceProfiles"], vec![Expr::lit("*")], BTreeMap::new()));
    }
    discovery.push(stmt("AllowInstanceProfileReadActions", &["iam:GetInstanceProfile"], vec![profile], BTreeMap::new()));

    let mut parts = vec![
        PolicyPart { part: "NodeLifecycle", statements: node_lifecycle },
        PolicyPart { part: "IAMIntegration", statements: iam_integration },
        PolicyPart { part: "EKSIntegration", statements: eks_integration },
    ];
    if queue {
        parts.push(PolicyPart { part: "Interruption", statements: interruption });
    }
    parts.push(PolicyPart { part: "ResourceDiscovery", statements: discovery });
    match v.policy_split() {
        PolicySplit::One => {
            let all = parts.into_iter().flat_map(|p| p.statements).collect();
            vec![PolicyPart { part: "", statements: all }]
        }
        PolicySplit::Five => parts,
        PolicySplit::Six => {
            parts.push(PolicyPart { part: "ZonalShift", statements: zonal_shift });
            parts
        }
    }
}

/// `prefix + cluster`, shortened with a hash when over IAM's name length.
pub fn bounded_name(prefix: &str, cluster: &str, max: usize) -> String {
    let full = format!("{prefix}{cluster}");
    if full.len() <= max {
        return full;
    }
    let hash = hex8(cluster);
    let keep = max.saturating_sub(prefix.len() + 9);
    format!("{prefix}{}-{hash}", &cluster[..keep.min(cluster.len())])
}

fn hex8(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Name of the managed policy for a part (`NodeLifecycle` → `KarpenterControllerNodeLifecyclePolicy-<cluster>`).
pub fn policy_name(part: &str, cluster: &str) -> String {
    bounded_name(&format!("KarpenterController{part}Policy-"), cluster, 128)
}

/// Size IAM would count for a policy: JSON without whitespace, with a 12-digit
/// account and the partition and region of `region` substituted — or, when the
/// config does not name the region, the longest ones (`aws-iso-b`, 15 characters).
pub fn worst_case_size(doc: &PolicyDocument, region: Option<&str>) -> usize {
    let json = serde_json::to_value(doc).expect("policy serializes");
    let (partition, region, suffix) = match region {
        Some(r) => {
            let partition = partition_of(r);
            (partition, r, if partition == "aws-cn" { "amazonaws.com.cn" } else { "amazonaws.com" })
        }
        None => ("aws-iso-b", "ap-southeast-99", "amazonaws.com.cn"),
    };
    let s = substitute(&json, &[("${AWS::Partition}", partition), ("${AWS::Region}", region), ("${AWS::AccountId}", "123456789012"), ("${AWS::URLSuffix}", suffix)])
        .to_string();
    s.chars().filter(|c| !c.is_whitespace()).count()
}

/// The partition a region is in (`cn-north-1` → `aws-cn`).
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else {
        "aws"
    }
}

fn substitute(v: &serde_json::Value, vars: &[(&str, &str)]) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("Fn::Sub") => {
            Value::String(vars.iter().fold(m["Fn::Sub"].as_str().unwrap_or_default().to_string(), |s, (k, v)| s.replace(k, v)))
        }
        Value::Object(m) if m.len() == 1 && m.contains_key("Fn::GetAtt") => {
            let partition = vars.iter().find(|(k, _)| *k == "${AWS::Partition}").map(|(_, v)| *v).unwrap_or("aws-iso-b");
            Value::String(format!("arn:{partition}:iam::123456789012:role/{}", "x".repeat(64)))
        }
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), substitute(v, vars))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, vars)).collect()),
        other => other.clone(),
    }
}

/// One controller managed policy: its logical-id part (`NodeLifecycle`, or empty
/// for the single policy of Karpenter ≤ 1.8), its IAM name and its document.
pub struct ControllerPolicy {
    pub part: &'static str,
    pub name: String,
    pub document: PolicyDocument,
}

/// A controller policy over [`IAM_POLICY_LIMIT`]: its name and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    pub name: String,
    pub size: usize,
}

/// The controller policies for this cluster name, version and queue, each named
/// and measured for `region` (the longest partition and region when `None`): the
/// first one over [`IAM_POLICY_LIMIT`] is the error. The template and config
/// validation both ask this, so they cannot disagree.
pub fn controller_policies(cluster: &str, v: KarpenterVersion, queue: bool, region: Option<&str>) -> Result<Vec<ControllerPolicy>, Oversized> {
    controller_parts(cluster, v, queue)
        .into_iter()
        .map(|part| {
            let name = policy_name(part.part, cluster);
            let document = policy(part.statements);
            let size = worst_case_size(&document, region);
            if size > IAM_POLICY_LIMIT {
                return Err(Oversized { name, size });
            }
            Ok(ControllerPolicy { part: part.part, name, document })
        })
        .collect()
}
