/*!
The karpctl config file, as typed Rust. These types are the single definition of
the file format: serde reads them, schemars turns them into the JSON Schema used
for structural validation (unknown fields, wrong types, enums), and the README's
config reference follows them field by field.
*/

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "karpctl.io/v1alpha1";
pub const DEFAULT_KARPENTER_VERSION: &str = "1.15.0";
pub const DEFAULT_DEVICE_PLUGIN_VERSION: &str = "0.17.4";

/// A karpctl config file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    /// Always `karpctl.io/v1alpha1`.
    pub api_version: String,
    pub cluster: Cluster,
    #[serde(default)]
    pub karpenter: Karpenter,
    #[serde(default)]
    pub stack: Stack,
    #[serde(default)]
    pub identity: Identity,
    #[serde(default)]
    pub node_access: NodeAccess,
    #[serde(default)]
    pub discovery: Discovery,
    #[serde(default)]
    pub amis: Amis,
    #[serde(default)]
    pub node_classes: Vec<NodeClass>,
    #[serde(default)]
    pub node_pools: Vec<NodePool>,
    #[serde(default)]
    pub device_plugin: DevicePlugin,
    #[serde(default)]
    pub rollback: Rollback,
    #[serde(default)]
    pub state: StateConfig,
    /// Raw Kubernetes manifests applied along with the node classes and pools.
    #[serde(default)]
    pub extra_objects: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Cluster {
    /// EKS cluster name.
    pub name: String,
    /// AWS region; else `--region`, `AWS_REGION` or the profile's region.
    pub region: Option<String>,
    /// Kubernetes `major.minor`; read from the cluster when absent.
    pub kubernetes_version: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Karpenter {
    /// Chart and app version, without a leading `v`.
    #[serde(default = "default_karpenter_version")]
    pub version: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Controller replicas (chart default 2).
    pub replicas: Option<u32>,
    #[serde(default = "default_controller_resources")]
    pub resources: Resources,
    #[serde(default)]
    pub settings: KarpenterSettings,
    #[serde(default)]
    pub chart: Chart,
    /// Node selector for the controller pods (e.g. the system nodegroup).
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
}

impl Default for Karpenter {
    fn default() -> Self {
        Karpenter {
            version: default_karpenter_version(),
            namespace: default_namespace(),
            replicas: None,
            resources: default_controller_resources(),
            settings: KarpenterSettings::default(),
            chart: Chart::default(),
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
        }
    }
}

fn default_karpenter_version() -> String {
    DEFAULT_KARPENTER_VERSION.into()
}
fn default_namespace() -> String {
    "kube-system".into()
}
fn default_controller_resources() -> Resources {
    // The getting-started guide's values: 1 CPU and 1Gi, requests equal to limits.
    let m: BTreeMap<String, Quantity> =
        [("cpu".to_string(), Quantity("1".into())), ("memory".to_string(), Quantity("1Gi".into()))].into();
    Resources { requests: m.clone(), limits: m }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    #[serde(default)]
    pub requests: BTreeMap<String, Quantity>,
    #[serde(default)]
    pub limits: BTreeMap<String, Quantity>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KarpenterSettings {
    /// Create the SQS interruption queue and wire it into the controller.
    #[serde(default = "yes")]
    pub interruption_queue: bool,
    /// Feature gates by name, e.g. `spotToSpotConsolidation: true`.
    #[serde(default)]
    pub feature_gates: BTreeMap<String, bool>,
    /// AWS provider feature gates by name (Karpenter 1.15+), e.g. `rebootForRepair: true`.
    #[serde(default, rename = "awsFeatureGates")]
    pub aws_feature_gates: BTreeMap<String, bool>,
    pub batch_max_duration: Option<String>,
    pub batch_idle_duration: Option<String>,
    #[serde(rename = "isolatedVPC")]
    pub isolated_vpc: Option<bool>,
    #[serde(rename = "reservedENIs")]
    pub reserved_enis: Option<u32>,
    pub min_values_policy: Option<MinValuesPolicy>,
}

impl Default for KarpenterSettings {
    fn default() -> Self {
        KarpenterSettings {
            interruption_queue: true,
            feature_gates: BTreeMap::new(),
            aws_feature_gates: BTreeMap::new(),
            batch_max_duration: None,
            batch_idle_duration: None,
            isolated_vpc: None,
            reserved_enis: None,
            min_values_policy: None,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum MinValuesPolicy {
    Strict,
    BestEffort,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Chart {
    /// OCI or HTTP chart reference for the controller.
    #[serde(default = "default_chart_repo")]
    pub repository: String,
    /// A local chart directory or .tgz used instead of `repository`, relative to the
    /// config file; its Chart.yaml version must equal `karpenter.version`.
    pub path: Option<String>,
}

impl Default for Chart {
    fn default() -> Self {
        Chart { repository: default_chart_repo(), path: None }
    }
}

fn default_chart_repo() -> String {
    "oci://public.ecr.aws/karpenter/karpenter".into()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Stack {
    /// CloudFormation stack name (default `Karpenter-<cluster>`).
    pub name: Option<String>,
    /// Interruption queue name (default the cluster name, as the official guide).
    pub queue_name: Option<String>,
    /// Node IAM role name (default `KarpenterNodeRole-<cluster>`).
    pub node_role_name: Option<String>,
    /// Extra tags on the stack and everything it creates.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityMode {
    #[default]
    Auto,
    PodIdentity,
    Irsa,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Identity {
    /// `auto` picks Pod Identity when the eks-pod-identity-agent add-on is present, else IRSA.
    #[serde(default)]
    pub mode: IdentityMode,
    /// Controller role name (default `KarpenterControllerRole-<cluster>`).
    pub role_name: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NodeAccessMode {
    #[default]
    Auto,
    AccessEntry,
    AwsAuth,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeAccess {
    /// `auto` uses an EC2_LINUX access entry when the cluster's authentication mode allows it.
    #[serde(default)]
    pub mode: NodeAccessMode,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Discovery {
    /// Subnets to tag `karpenter.sh/discovery=<cluster>` (default: the cluster's subnets).
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    /// Security groups to tag (default: the cluster security group).
    #[serde(default)]
    pub security_group_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AmiPin {
    /// `al2023@v20250915` / `bottlerocket@v1.46.0`.
    #[default]
    Alias,
    /// Explicit AMI ids per architecture.
    Id,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AmiUpdate {
    /// Keep the recorded pin until `--update-amis`.
    #[default]
    Pinned,
    /// Move to the newest AMI on every `up`.
    Latest,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Amis {
    #[serde(default)]
    pub pin: AmiPin,
    #[serde(default)]
    pub update: AmiUpdate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AmiFamily {
    Al2023,
    Bottlerocket,
    Al2,
}

impl AmiFamily {
    pub fn alias_name(self) -> &'static str {
        match self {
            AmiFamily::Al2023 => "al2023",
            AmiFamily::Bottlerocket => "bottlerocket",
            AmiFamily::Al2 => "al2",
        }
    }
    pub fn crd_name(self) -> &'static str {
        match self {
            AmiFamily::Al2023 => "AL2023",
            AmiFamily::Bottlerocket => "Bottlerocket",
            AmiFamily::Al2 => "AL2",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    #[default]
    Standard,
    Nvidia,
    Neuron,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Standard => "standard",
            Variant::Nvidia => "nvidia",
            Variant::Neuron => "neuron",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Amd64,
    Arm64,
}

impl Arch {
    pub fn k8s(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
    /// The spelling SSM parameter paths use.
    pub fn ssm(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }
}

fn default_arches() -> Vec<Arch> {
    vec![Arch::Amd64]
}

/// An EC2NodeClass and the AMIs it needs.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeClass {
    pub name: String,
    #[serde(default = "default_family")]
    pub ami_family: AmiFamily,
    #[serde(default)]
    pub variant: Variant,
    /// Architectures whose AMIs are resolved and pinned.
    #[serde(default = "default_arches")]
    pub architectures: Vec<Arch>,
    /// Node IAM role name (default: the stack's node role).
    pub role: Option<String>,
    /// A pre-created instance profile instead of `role`.
    pub instance_profile: Option<String>,
    /// Subnet selector terms (default: the `karpenter.sh/discovery` tag).
    #[serde(default)]
    pub subnet_selector: Vec<SelectorTerm>,
    /// Security group selector terms (default: the `karpenter.sh/discovery` tag).
    #[serde(default)]
    pub security_group_selector: Vec<SelectorTerm>,
    /// Explicit AMI selector terms; karpctl then does not resolve or pin AMIs for this class.
    #[serde(default)]
    pub ami_selector: Vec<AmiTerm>,
    #[serde(default)]
    pub block_devices: Vec<BlockDevice>,
    #[serde(default)]
    pub metadata_options: MetadataOptions,
    /// Required to weaken the secure defaults (IMDSv1, hop limit above 1, unencrypted volumes).
    #[serde(default)]
    pub allow_weaker_security: bool,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub kubelet: Option<Kubelet>,
    #[serde(default)]
    pub detailed_monitoring: bool,
    #[serde(rename = "associatePublicIPAddress")]
    pub associate_public_ip_address: Option<bool>,
    pub instance_store_policy: Option<InstanceStorePolicy>,
    #[serde(default)]
    pub user_data: UserData,
}

fn default_family() -> AmiFamily {
    AmiFamily::Al2023
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum InstanceStorePolicy {
    #[serde(rename = "RAID0")]
    Raid0,
}

/// One selector term: tags and/or an id (name only for security groups).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SelectorTerm {
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AmiTerm {
    pub alias: Option<String>,
    pub id: Option<String>,
    pub name: Option<String>,
    pub owner: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub ssm_parameter: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    Standard,
    Io1,
    Io2,
    Gp2,
    Sc1,
    St1,
    Gp3,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BlockDevice {
    #[serde(default = "default_device_name")]
    pub device_name: String,
    /// Size with a unit: `100Gi`, `1Ti`.
    pub size: Option<String>,
    #[serde(default = "default_volume_type")]
    pub volume_type: VolumeType,
    pub iops: Option<i64>,
    /// MiB/s.
    pub throughput: Option<i64>,
    #[serde(default = "yes")]
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    #[serde(default = "yes")]
    pub delete_on_termination: bool,
    pub snapshot_id: Option<String>,
    #[serde(default)]
    pub root_volume: bool,
}

fn default_device_name() -> String {
    "/dev/xvda".into()
}
fn default_volume_type() -> VolumeType {
    VolumeType::Gp3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum HttpTokens {
    Required,
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetadataOptions {
    #[serde(default = "enabled")]
    pub http_endpoint: Toggle,
    #[serde(default = "disabled", rename = "httpProtocolIPv6")]
    pub http_protocol_ipv6: Toggle,
    #[serde(default = "one")]
    pub http_put_response_hop_limit: i64,
    #[serde(default = "required")]
    pub http_tokens: HttpTokens,
}

impl Default for MetadataOptions {
    fn default() -> Self {
        MetadataOptions {
            http_endpoint: Toggle::Enabled,
            http_protocol_ipv6: Toggle::Disabled,
            http_put_response_hop_limit: 1,
            http_tokens: HttpTokens::Required,
        }
    }
}

fn enabled() -> Toggle {
    Toggle::Enabled
}
fn disabled() -> Toggle {
    Toggle::Disabled
}
fn one() -> i64 {
    1
}
fn required() -> HttpTokens {
    HttpTokens::Required
}

/// The kubelet settings Karpenter v1 accepts on an EC2NodeClass.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kubelet {
    #[serde(default, rename = "clusterDNS")]
    pub cluster_dns: Vec<String>,
    pub max_pods: Option<i64>,
    pub pods_per_core: Option<i64>,
    #[serde(default)]
    pub system_reserved: BTreeMap<String, String>,
    #[serde(default)]
    pub kube_reserved: BTreeMap<String, String>,
    #[serde(default)]
    pub eviction_hard: BTreeMap<String, String>,
    #[serde(default)]
    pub eviction_soft: BTreeMap<String, String>,
    #[serde(default)]
    pub eviction_soft_grace_period: BTreeMap<String, String>,
    pub eviction_max_pod_grace_period: Option<i64>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    pub image_gc_high_threshold_percent: Option<i64>,
    #[serde(rename = "imageGCLowThresholdPercent")]
    pub image_gc_low_threshold_percent: Option<i64>,
    #[serde(rename = "cpuCFSQuota")]
    pub cpu_cfs_quota: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserData {
    /// `user.max_user_namespaces` for rootless BuildKit (Bottlerocket sysctl; AL2023 sysctl.d).
    pub user_namespaces: Option<u32>,
    /// Set up the SOCI snapshotter (AL2023).
    pub soci: Option<Soci>,
    /// Raw userData appended as is: TOML for Bottlerocket, shell/NodeConfig/MIME for AL2023 and AL2.
    pub raw: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Soci {
    /// soci-snapshotter release to install, without a leading `v`.
    #[serde(default = "default_soci_version")]
    pub version: String,
}

fn default_soci_version() -> String {
    "0.9.0".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityType {
    Spot,
    OnDemand,
    Reserved,
}

impl CapacityType {
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityType::Spot => "spot",
            CapacityType::OnDemand => "on-demand",
            CapacityType::Reserved => "reserved",
        }
    }
}

/// A string set with allowed and not-allowed values.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StringSet {
    #[serde(default)]
    pub allowed: Vec<String>,
    #[serde(default)]
    pub not_allowed: Vec<String>,
}

/// A numeric set: allowed and not-allowed values and an inclusive range.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NumberSet {
    #[serde(default)]
    pub allowed: Vec<u64>,
    #[serde(default)]
    pub not_allowed: Vec<u64>,
    pub min: Option<u64>,
    pub max: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Instances {
    #[serde(default)]
    pub categories: StringSet,
    #[serde(default)]
    pub families: StringSet,
    #[serde(default)]
    pub sizes: StringSet,
    /// Whole instance types, e.g. `m5.large`.
    #[serde(default)]
    pub types: StringSet,
    #[serde(default)]
    pub generations: NumberSet,
    #[serde(default)]
    pub cpus: NumberSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
pub enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: TaintEffect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum TolerationOperator {
    Exists,
    Equal,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Toleration {
    pub key: Option<String>,
    pub operator: Option<TolerationOperator>,
    pub value: Option<String>,
    pub effect: Option<TaintEffect>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ConsolidationPolicy {
    WhenEmpty,
    WhenEmptyOrUnderutilized,
    Balanced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, JsonSchema)]
pub enum DisruptionReason {
    Empty,
    Drifted,
    Underutilized,
    /// Node repair (Karpenter 1.15+: repair respects budgets).
    Unhealthy,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Budget {
    /// A count (`"0"`, `"5"`) or a percentage (`"20%"`). Always a string.
    pub nodes: String,
    /// Cron expression (UTC) or `@daily` etc.; goes with `duration`.
    pub schedule: Option<String>,
    /// Hours and minutes, e.g. `8h`, `1h30m`; goes with `schedule`.
    pub duration: Option<String>,
    #[serde(default)]
    pub reasons: Vec<DisruptionReason>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Disruption {
    #[serde(default = "default_policy")]
    pub consolidation_policy: ConsolidationPolicy,
    /// `30s`, `5m`, `1h` or `Never` (default `0s`).
    pub consolidate_after: Option<String>,
    #[serde(default)]
    pub budgets: Vec<Budget>,
}

fn default_policy() -> ConsolidationPolicy {
    ConsolidationPolicy::WhenEmptyOrUnderutilized
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
    Gte,
    Lte,
}

impl Operator {
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::In => "In",
            Operator::NotIn => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
            Operator::Gt => "Gt",
            Operator::Lt => "Lt",
            Operator::Gte => "Gte",
            Operator::Lte => "Lte",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default)]
    pub values: Vec<String>,
    pub min_values: Option<i64>,
}

/// A NodePool.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodePool {
    pub name: String,
    /// Name of a node class in `nodeClasses`.
    pub node_class: String,
    #[serde(default)]
    pub instances: Instances,
    /// Default: the node class's architectures.
    #[serde(default)]
    pub architectures: Vec<Arch>,
    /// Default `[on-demand]`. Listing `spot` and `on-demand` prefers spot.
    #[serde(default)]
    pub capacity_types: Vec<CapacityType>,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub taints: Vec<Taint>,
    #[serde(default)]
    pub startup_taints: Vec<Taint>,
    /// 1–100; higher is tried first.
    pub weight: Option<i64>,
    /// Resource limits, e.g. `cpu: "100"`, `memory: 400Gi`, `nvidia.com/gpu: 4`.
    #[serde(default)]
    pub limits: BTreeMap<String, Quantity>,
    pub disruption: Option<Disruption>,
    /// `720h`, `Never`, … (Karpenter default 720h).
    pub expire_after: Option<String>,
    pub termination_grace_period: Option<String>,
    /// Extra raw requirements, appended after the generated ones.
    #[serde(default)]
    pub requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DevicePluginMode {
    /// Install when an AL2023/AL2 NVIDIA node class exists.
    #[default]
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DevicePlugin {
    #[serde(default)]
    pub mode: DevicePluginMode,
    #[serde(default = "default_dp_version")]
    pub chart_version: String,
    #[serde(default = "default_dp_repo")]
    pub chart_repository: String,
    /// A local chart directory or .tgz used instead of the repository, relative to the
    /// config file; its Chart.yaml version must equal `chartVersion`.
    pub chart_path: Option<String>,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    #[serde(default)]
    pub sharing: Option<GpuSharing>,
    /// Extra node selector for the DaemonSet (added to karpctl's GPU-node affinity).
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
}

impl Default for DevicePlugin {
    fn default() -> Self {
        DevicePlugin {
            mode: DevicePluginMode::Auto,
            chart_version: default_dp_version(),
            chart_repository: default_dp_repo(),
            chart_path: None,
            namespace: default_namespace(),
            sharing: None,
            node_selector: BTreeMap::new(),
        }
    }
}

fn default_dp_version() -> String {
    DEFAULT_DEVICE_PLUGIN_VERSION.into()
}
fn default_dp_repo() -> String {
    "https://nvidia.github.io/k8s-device-plugin".into()
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GpuSharing {
    pub time_slicing: Option<SharingConfig>,
    pub mps: Option<SharingConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SharingConfig {
    /// Pods per physical GPU (at least 2).
    pub replicas: i64,
    #[serde(default)]
    pub rename_by_default: bool,
    #[serde(default)]
    pub fail_requests_greater_than_one: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Rollback {
    /// Managed nodegroups to scale up when rolling back.
    #[serde(default)]
    pub nodegroups: Vec<RollbackNodegroup>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RollbackNodegroup {
    pub name: String,
    pub min_size: i64,
    pub desired_size: i64,
    pub max_size: i64,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StateConfig {
    /// Local state file, relative to the config file (default
    /// `.karpctl/<cluster>.state.json` beside it).
    pub path: Option<String>,
    pub s3: Option<S3State>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3State {
    pub bucket: String,
    /// Object key (default `karpctl/<cluster>.state.json`).
    pub key: Option<String>,
    pub region: Option<String>,
}

/// A Kubernetes quantity (`"100"`, `400Gi`, `1.5`, `500m`). Numbers are accepted
/// and kept as written; the renderer always emits strings.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            I(i64),
            U(u64),
            F(f64),
        }
        Ok(Quantity(match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::I(i) => i.to_string(),
            Raw::U(u) => u.to_string(),
            Raw::F(f) => f.to_string(),
        }))
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "number"],
            "description": "A Kubernetes quantity such as \"100\", 400Gi or 500m"
        })
    }
}
