/*!
Which Karpenter release adds what. Rendering and validation ask this module
([`KarpenterVersion::has`] with a [`Since`]) instead of comparing version numbers
inline, so every per-version fact is in this one file: the features and their
first minor, the feature gates, the Kubernetes range, the policy split (facts:
karpenter-facts §1.0, §4.1, §4.2; installers-survey §1.2; for 1.15, the v1.15.0
module: charts/karpenter/values.yaml, pkg/apis/crds, pkg/providers/version).
`scripts/karpenter-import.sh VERSION` shows what a new release changes.
*/

use std::fmt;

/// A Karpenter chart/app version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KarpenterVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// Oldest release karpctl installs: v1.1 is the first without v1beta1 and its
/// conversion webhooks.
pub const MIN_SUPPORTED: KarpenterVersion = KarpenterVersion { major: 1, minor: 1, patch: 0 };
/// Newest minor karpctl knows the schema of.
pub const MAX_KNOWN_MINOR: u32 = 15;

/// What a Karpenter release added that karpctl renders or validates differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// 1.3: the `reserved` capacity type; RunInstances on capacity reservations and
    /// DescribeCapacityReservations in the controller policy.
    CapacityReservations,
    /// 1.4: AL2023 arm64 NVIDIA AMIs.
    Al2023NvidiaArm64,
    /// 1.4: `ssmParameter` AMI selector terms.
    SsmParameterAmiTerms,
    /// 1.6: `settings.minValuesPolicy`.
    MinValuesPolicy,
    /// 1.7: `iam:ListInstanceProfiles` (unscoped) in the controller policy.
    ListInstanceProfiles,
    /// 1.9: `Gte`/`Lte` requirement operators, and any kubernetes.io label key in requirements.
    GteLteAndKubernetesLabels,
    /// 1.10: the capacity reservation interruption EventBridge rule.
    CapacityReservationInterruptions,
    /// 1.11: placement groups (RunInstances on them, DescribePlacementGroups); `limits.nodes` enforced.
    PlacementGroupsAndNodeLimits,
    /// 1.12: DescribeInstanceStatus and the zonal shift statement.
    InstanceStatus,
    /// 1.14: `consolidationPolicy: Balanced`.
    BalancedConsolidation,
    /// 1.15: node repair may reboot an instance (the rebootForRepair AWS feature gate):
    /// ec2:RebootInstances, scoped like termination.
    RebootForRepair,
    /// 1.15: disruption budgets may name the `Unhealthy` reason (node repair respects budgets).
    UnhealthyBudgets,
    /// 1.15: EC2NodeClass `spec.kubelet` is schemaless; the controller refuses kubelet fields
    /// the AMI family would drop (ValidationSucceeded=False, UnsupportedKubeletConfiguration).
    KubeletCheckedByController,
}

impl Since {
    /// The first 1.x minor with the feature.
    pub const fn minor(self) -> u32 {
        match self {
            Since::CapacityReservations => 3,
            Since::Al2023NvidiaArm64 | Since::SsmParameterAmiTerms => 4,
            Since::MinValuesPolicy => 6,
            Since::ListInstanceProfiles => 7,
            Since::GteLteAndKubernetesLabels => 9,
            Since::CapacityReservationInterruptions => 10,
            Since::PlacementGroupsAndNodeLimits => 11,
            Since::InstanceStatus => 12,
            Since::BalancedConsolidation => 14,
            Since::RebootForRepair | Since::UnhealthyBudgets | Since::KubeletCheckedByController => 15,
        }
    }
}

impl KarpenterVersion {
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('.');
        let major = num(it.next()?)?;
        let minor = num(it.next()?)?;
        let patch = num(it.next()?)?;
        if it.next().is_some() {
            return None;
        }
        Some(KarpenterVersion { major, minor, patch })
    }

    pub fn at_least(self, minor: u32) -> bool {
        self.major > 1 || (self.major == 1 && self.minor >= minor)
    }

    /// Whether this release has `feature`.
    pub fn has(self, feature: Since) -> bool {
        self.at_least(feature.minor())
    }

    /// Supported Kubernetes minors (inclusive) for this Karpenter version.
    pub fn kubernetes_range(self) -> (u32, u32) {
        match self.minor {
            0 if self.patch < 5 => (25, 30),
            0 | 1 => (25, 31),
            2..=4 => (25, 32),
            5 => (26, 33),
            6..=8 => (26, 34),
            9..=12 => (26, 35),
            13 | 14 => (26, 36),
            _ => (26, 37),
        }
    }

    /// Minor version that first has a feature gate, or None if unknown.
    pub fn feature_gate_since(name: &str) -> Option<u32> {
        Some(match name {
            "spotToSpotConsolidation" => 0,
            "nodeRepair" => 1,
            "reservedCapacity" => 3,
            "nodeOverlay" => 7,
            "staticCapacity" => 8,
            "capacityBuffer" => 14,
            "terminateFirstDrift" | "terminateFirstRepair" | "podDeletionCostManagement" => 15,
            _ => return None,
        })
    }

    pub fn known_feature_gates() -> &'static [&'static str] {
        &[
            "spotToSpotConsolidation",
            "nodeRepair",
            "reservedCapacity",
            "nodeOverlay",
            "staticCapacity",
            "capacityBuffer",
            "terminateFirstDrift",
            "terminateFirstRepair",
            "podDeletionCostManagement",
        ]
    }

    /// Minor version that first has an AWS feature gate (`settings.awsFeatureGates`), or None.
    pub fn aws_feature_gate_since(name: &str) -> Option<u32> {
        Some(match name {
            "nodeClassCEL" | "rebootForRepair" | "draNVIDIAGPU" | "draEFA" => 15,
            _ => return None,
        })
    }

    pub fn known_aws_feature_gates() -> &'static [&'static str] {
        &["nodeClassCEL", "rebootForRepair", "draNVIDIAGPU", "draEFA"]
    }

    /// How the controller IAM policy is split for this version.
    pub fn policy_split(self) -> PolicySplit {
        if self.at_least(12) {
            PolicySplit::Six
        } else if self.at_least(9) {
            PolicySplit::Five
        } else {
            PolicySplit::One
        }
    }
}

/// The chart's two sets of feature gates: `settings.featureGates` and (1.15+)
/// `settings.awsFeatureGates`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateKind {
    Core,
    Aws,
}

impl GateKind {
    /// Minor version that first has the gate, or None if unknown.
    pub fn since(self, name: &str) -> Option<u32> {
        match self {
            GateKind::Core => KarpenterVersion::feature_gate_since(name),
            GateKind::Aws => KarpenterVersion::aws_feature_gate_since(name),
        }
    }
    pub fn known(self) -> &'static [&'static str] {
        match self {
            GateKind::Core => KarpenterVersion::known_feature_gates(),
            GateKind::Aws => KarpenterVersion::known_aws_feature_gates(),
        }
    }
    /// The key under `karpenter.settings` (and the chart's `settings`).
    pub fn config_key(self) -> &'static str {
        match self {
            GateKind::Core => "featureGates",
            GateKind::Aws => "awsFeatureGates",
        }
    }
    pub fn noun(self) -> &'static str {
        match self {
            GateKind::Core => "feature gate",
            GateKind::Aws => "AWS feature gate",
        }
    }
}

fn num(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for KarpenterVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySplit {
    /// Up to 1.8: one `KarpenterControllerPolicy`.
    One,
    /// 1.9–1.11: five policies.
    Five,
    /// From 1.12: six (adds zonal shift).
    Six,
}

/// Kubernetes `major.minor` as the minor number (`"1.31"` → 31).
pub fn kubernetes_minor(s: &str) -> Option<u32> {
    let rest = s.strip_prefix("1.")?;
    if rest.is_empty() || rest.len() > 3 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_gates() {
        let v = KarpenterVersion::parse("1.14.1").unwrap();
        assert!(v.at_least(14) && !v.at_least(15));
        assert_eq!(v.policy_split(), PolicySplit::Six);
        assert_eq!(KarpenterVersion::parse("1.9.2").unwrap().policy_split(), PolicySplit::Five);
        assert_eq!(KarpenterVersion::parse("1.8.0").unwrap().policy_split(), PolicySplit::One);
        assert!(KarpenterVersion::parse("v1.14.1").is_none());
        assert!(KarpenterVersion::parse("1.14").is_none());
        assert_eq!(KarpenterVersion::parse("1.5.0").unwrap().kubernetes_range(), (26, 33));
        // 1.15's pkg/providers/version: MinK8sVersion 1.26, MaxK8sVersion 1.37.
        assert_eq!(KarpenterVersion::parse("1.15.0").unwrap().kubernetes_range(), (26, 37));
        assert_eq!(KarpenterVersion::parse("1.14.1").unwrap().kubernetes_range(), (26, 36));
        assert!(KarpenterVersion::parse("1.15.0").unwrap().has(Since::RebootForRepair));
        assert!(!v.has(Since::UnhealthyBudgets) && v.has(Since::BalancedConsolidation));
        assert_eq!(kubernetes_minor("1.31"), Some(31));
        assert_eq!(kubernetes_minor("2.0"), None);
    }
}
