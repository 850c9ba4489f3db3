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

pub fn karpenter_values(c: &Config, facts: &Facts, notes: &mut Vec<String>) -> KarpenterValues {
    let k = &c.karpenter;
    let names = Names::of(c);
    let mut annotations = BTreeMap::new();
    let irsa = facts.irsa.unwrap_or(c.identity.mode == cfg::IdentityMode::Irsa);
    if irsa {
        match &facts.account_id {
            Some(acct) => {
                let partition = facts.partition.as_deref().unwrap_or("aws");
                annotations
                    .insert("eks.amazonaws.com/role-arn".to_string(), format!("arn:{partition}:iam::{acct}:role/{}", names.controller_role));
            }
            None => notes.push(format!(
                "IRSA: the service account annotation needs the account id; pass --account-id to render it (role {})",
                names.controller_role
            )),
        }
    }
    KarpenterValues {
        settings: KarpenterSettingsValues {
            cluster_name: c.cluster.name.clone(),
            cluster_endpoint: facts.cluster_endpoint.clone(),
            interruption_queue: k.settings.interruption_queue.then(|| names.queue.clone()),
            feature_gates: k.settings.feature_gates.clone(),
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
    DevicePluginValues {
        config,
        affinity: Affinity {
            node_affinity: NodeAffinity { required: NodeSelector { node_selector_terms: vec![NodeSelectorTerm { match_expressions: terms }] } },
        },
        tolerations: tolerations.into_iter().collect(),
        node_selector: c.device_plugin.node_selector.clone(),
        // The MPS control daemon only runs on nodes GFD labels mps.capable.
        gfd: mps.then_some(Enabled { enabled: true }),
    }
}
