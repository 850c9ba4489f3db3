/*!
Helm values for the Karpenter controller and the NVIDIA device plugin, from the
config and whatever facts are known (queue name, endpoint, IRSA role ARN). The
device plugin is scheduled by node affinity onto Karpenter-launched NVIDIA nodes
of AL2023/AL2 classes only: the chart's default affinity matches labels those
nodes lack, and Bottlerocket NVIDIA nodes run their own plugin (karpenter-facts §5).
*/

use std::collections::{BTreeMap, BTreeSet};

use crate::config::types::{self as cfg, AmiFamily, Config, DevicePluginMode, Variant};
use crate::config::Names;
use crate::model::helm::*;

/// Facts learned from AWS at `up` time; all optional for offline rendering.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub account_id: Option<String>,
    pub partition: Option<String>,
    pub cluster_endpoint: Option<String>,
    /// True when the controller uses IRSA (decided by the identity step or config).
    pub irsa: Option<bool>,
}

/// A fact the rendered output needs to work on its own and was not given: rendered
/// without it, the output is incomplete in the way `message` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The rendered document that is incomplete (`helm/karpenter-values.yaml`).
    pub document: &'static str,
    /// The config field that makes it needed (`identity.mode`).
    pub field: &'static str,
    /// What the document lacks, and what happens when it is used without it
    /// (a predicate: `<document> lacks …`).
    pub message: String,
    /// The flag that supplies it (`--account-id`).
    pub flag: &'static str,
}

/// The IRSA role ARN for the controller's service account, when the facts give it.
pub fn irsa_role_arn(c: &Config, facts: &Facts) -> Option<String> {
    let acct = facts.account_id.as_ref()?;
    let partition = facts.partition.as_deref().unwrap_or("aws");
    Some(format!("arn:{partition}:iam::{acct}:role/{}", Names::of(c).controller_role))
}

fn uses_irsa(c: &Config, facts: &Facts) -> bool {
    facts.irsa.unwrap_or(c.identity.mode == cfg::IdentityMode::Irsa)
}

/// What the controller's values lack: with IRSA, the role annotation needs the account id.
pub fn karpenter_values_missing(c: &Config, facts: &Facts) -> Option<Missing> {
    if !uses_irsa(c, facts) || facts.account_id.is_some() {
        return None;
    }
    let partition = facts.partition.as_deref().unwrap_or("aws");
    Some(Missing {
        document: "helm/karpenter-values.yaml",
        field: "identity.mode",
        message: format!(
            "lacks the IRSA annotation eks.amazonaws.com/role-arn: arn:{partition}:iam::<account id>:role/{}; \
             render does not look up the account id, and without the annotation the controller runs with no AWS credentials",
            Names::of(c).controller_role
        ),
        flag: "--account-id",
    })
}

pub fn karpenter_values(c: &Config, facts: &Facts) -> KarpenterValues {
    let k = &c.karpenter;
    let names = Names::of(c);
    let mut annotations = BTreeMap::new();
    if uses_irsa(c, facts) {
        if let Some(arn) = irsa_role_arn(c, facts) {
            annotations.insert("eks.amazonaws.com/role-arn".to_string(), arn);
        }
    }
    KarpenterValues {
        settings: KarpenterSettingsValues {
            cluster_name: c.cluster.name.clone(),
            cluster_endpoint: facts.cluster_endpoint.clone(),
            interruption_queue: k.settings.interruption_queue.then(|| names.queue.clone()),
            feature_gates: k.settings.feature_gates.clone(),
            aws_feature_gates: k.settings.aws_feature_gates.clone(),
            batch_max_duration: k.settings.batch_max_duration.clone(),
            batch_idle_duration: k.settings.batch_idle_duration.clone(),
            isolated_vpc: k.settings.isolated_vpc,
            reserved_enis: k.settings.reserved_enis.map(|n| n.to_string()),
            min_values_policy: k.settings.min_values_policy.map(|p| match p {
                cfg::MinValuesPolicy::Strict => "Strict",
                cfg::MinValuesPolicy::BestEffort => "BestEffort",
            }),
        },
        replicas: k.replicas,
        controller: ControllerValues {
            resources: ResourceValues {
                requests: k.resources.requests.iter().map(|(a, b)| (a.clone(), b.0.clone())).collect(),
                limits: k.resources.limits.iter().map(|(a, b)| (a.clone(), b.0.clone())).collect(),
            },
        },
        service_account: ServiceAccountValues { annotations },
        node_selector: k.node_selector.clone(),
        tolerations: k.tolerations.iter().map(toleration).collect(),
    }
}

fn effect(e: cfg::TaintEffect) -> &'static str {
    match e {
        cfg::TaintEffect::NoSchedule => "NoSchedule",
        cfg::TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        cfg::TaintEffect::NoExecute => "NoExecute",
    }
}

fn toleration(t: &cfg::Toleration) -> Toleration {
    Toleration {
        key: t.key.clone(),
        operator: match t.operator {
            Some(cfg::TolerationOperator::Exists) => "Exists",
            _ => "Equal",
        },
        value: t.value.clone(),
        effect: t.effect.map(effect),
    }
}

/// Node classes whose nodes need the device plugin DaemonSet.
pub fn device_plugin_classes(c: &Config) -> Vec<String> {
    c.node_classes
        .iter()
        .filter(|nc| nc.variant == Variant::Nvidia && nc.ami_family != AmiFamily::Bottlerocket)
        .map(|nc| nc.name.clone())
        .collect()
}

pub fn device_plugin_enabled(c: &Config) -> bool {
    match c.device_plugin.mode {
        DevicePluginMode::On => true,
        DevicePluginMode::Off => false,
        DevicePluginMode::Auto => !device_plugin_classes(c).is_empty(),
    }
}

pub fn device_plugin_config(c: &Config) -> Option<DevicePluginConfig> {
    let s = c.device_plugin.sharing.as_ref()?;
    let spec = |x: &cfg::SharingConfig| SharingSpec {
        rename_by_default: x.rename_by_default,
        fail_requests_greater_than_one: x.fail_requests_greater_than_one,
        resources: vec![SharedResource { name: "nvidia.com/gpu", replicas: x.replicas }],
    };
    Some(DevicePluginConfig {
        version: "v1",
        flags: DevicePluginFlags { mig_strategy: "none" },
        sharing: Sharing { time_slicing: s.time_slicing.as_ref().map(spec), mps: s.mps.as_ref().map(spec) },
    })
}

pub fn device_plugin_values(c: &Config) -> DevicePluginValues {
    let classes = device_plugin_classes(c);
    let mut terms = vec![MatchExpression {
        key: "karpenter.k8s.aws/instance-gpu-manufacturer".into(),
        operator: "In",
        values: vec!["nvidia".into()],
    }];
    if !classes.is_empty() {
        terms.push(MatchExpression { key: "karpenter.k8s.aws/ec2nodeclass".into(), operator: "In", values: classes.clone() });
    }
    // Tolerate every taint the GPU pools put on their nodes, plus the chart's defaults.
    let mut tolerations: BTreeSet<Toleration> = BTreeSet::new();
    tolerations.insert(Toleration { key: Some("CriticalAddonsOnly".into()), operator: "Exists", value: None, effect: None });
    tolerations.insert(Toleration { key: Some("nvidia.com/gpu".into()), operator: "Exists", value: None, effect: Some("NoSchedule") });
    for np in c.node_pools.iter().filter(|p| classes.contains(&p.node_class)) {
        for t in np.taints.iter().chain(&np.startup_taints) {
            tolerations.insert(Toleration { key: Some(t.key.clone()), operator: "Exists", value: None, effect: Some(effect(t.effect)) });
        }
    }
    let config = device_plugin_config(c).map(|cfgfile| DevicePluginConfigValues {
        map: BTreeMap::from([("default".to_string(), serde_yaml::to_string(&cfgfile).expect("config serializes"))]),
        default: "default".into(),
    });
    let mps = c.device_plugin.sharing.as_ref().is_some_and(|s| s.mps.is_some());
    let tolerations: Vec<Toleration> = tolerations.into_iter().collect();
    DevicePluginValues {
        config,
        affinity: Affinity {
            node_affinity: NodeAffinity { required: NodeSelector { node_selector_terms: vec![NodeSelectorTerm { match_expressions: terms }] } },
        },
        tolerations: tolerations.clone(),
        node_selector: c.device_plugin.node_selector.clone(),
        // The MPS control daemon only runs on nodes labelled mps.capable: GFD writes the
        // label into the host's features.d and NFD's worker (a subchart GFD brings) puts it
        // on the Node, so the worker must run on the GPU nodes too. Its own tolerations
        // (`nvidia.com/gpu=present` only) miss the pools' taints: it gets the plugin's.
        gfd: mps.then_some(Enabled { enabled: true }),
        nfd: mps.then_some(NfdValues { worker: NfdWorkerValues { tolerations } }),
    }
}
