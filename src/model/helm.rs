/*!
Typed Helm values for the Karpenter controller chart and the NVIDIA device
plugin chart, plus the device plugin's own config file (NDP `version: v1`).
Only the values karpctl sets are modelled; everything else keeps the chart's
defaults (karpenter-facts §4.2, §5.2, §5.3).
*/

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KarpenterValues {
    pub settings: KarpenterSettingsValues,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    pub controller: ControllerValues,
    #[serde(skip_serializing_if = "ServiceAccountValues::is_empty")]
    pub service_account: ServiceAccountValues,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KarpenterSettingsValues {
    pub cluster_name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_endpoint: Option<String>,
    /// The SQS queue *name* (not its ARN or URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interruption_queue: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub feature_gates: BTreeMap<String, bool>,
    /// The chart's `settings.awsFeatureGates` (1.15+), rendered into AWS_FEATURE_GATES.
    #[serde(rename = "awsFeatureGates", skip_serializing_if = "BTreeMap::is_empty")]
    pub aws_feature_gates: BTreeMap<String, bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_max_duration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch_idle_duration: Option<String>,
    #[serde(rename = "isolatedVPC", skip_serializing_if = "Option::is_none")]
    pub isolated_vpc: Option<bool>,
    #[serde(rename = "reservedENIs", skip_serializing_if = "Option::is_none")]
    pub reserved_enis: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_values_policy: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ControllerValues {
    pub resources: ResourceValues,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ResourceValues {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ServiceAccountValues {
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl ServiceAccountValues {
    pub fn is_empty(&self) -> bool {
        self.annotations.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Toleration {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub operator: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DevicePluginValues {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<DevicePluginConfigValues>,
    pub affinity: Affinity,
    pub tolerations: Vec<Toleration>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gfd: Option<Enabled>,
    /// Node Feature Discovery, the subchart that comes with GFD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nfd: Option<NfdValues>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NfdValues {
    pub worker: NfdWorkerValues,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NfdWorkerValues {
    pub tolerations: Vec<Toleration>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Enabled {
    pub enabled: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DevicePluginConfigValues {
    /// Named config files; the chart builds its ConfigMap from them.
    pub map: BTreeMap<String, String>,
    pub default: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    pub node_affinity: NodeAffinity,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeAffinity {
    #[serde(rename = "requiredDuringSchedulingIgnoredDuringExecution")]
    pub required: NodeSelector,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    pub node_selector_terms: Vec<NodeSelectorTerm>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelectorTerm {
    pub match_expressions: Vec<MatchExpression>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MatchExpression {
    pub key: String,
    pub operator: &'static str,
    pub values: Vec<String>,
}

/// The NVIDIA device plugin config file (`version: v1`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DevicePluginConfig {
    pub version: &'static str,
    pub flags: DevicePluginFlags,
    pub sharing: Sharing,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DevicePluginFlags {
    pub mig_strategy: &'static str,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sharing {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_slicing: Option<SharingSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mps: Option<SharingSpec>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SharingSpec {
    pub rename_by_default: bool,
    pub fail_requests_greater_than_one: bool,
    pub resources: Vec<SharedResource>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SharedResource {
    pub name: &'static str,
    pub replicas: i64,
}
