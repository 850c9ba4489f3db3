/*!
Pure builders from the config (plus resolved AMI pins) to EC2NodeClass and
NodePool objects. Defaults that make a pool safe and explicit (architecture,
OS, capacity type, discovery-tag selectors, IMDSv2) are filled in here, so the
rendered manifests say everything karpctl decided.
*/

use std::collections::BTreeMap;

use crate::config::types::{self as cfg, Arch, Config, NodeClass, NumberSet, StringSet};
use crate::config::Names;
use crate::model::ownership::DISCOVERY_TAG;
use crate::model::karpenter::*;

use crate::model::ownership::CLUSTER_TAG;
use super::userdata;

/// How a class's AMIs are selected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "value")]
pub enum AmiChoice {
    /// `family@version`, e.g. `al2023@v20250915`.
    Alias(String),
    /// Explicit AMI ids (one per architecture and variant).
    Ids(Vec<String>),
}

impl std::fmt::Display for AmiChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AmiChoice::Alias(a) => f.write_str(a),
            AmiChoice::Ids(ids) => f.write_str(&ids.join(",")),
        }
    }
}

pub fn object_labels(c: &Config) -> BTreeMap<String, String> {
    crate::model::ownership::labels(&c.cluster.name)
}

fn discovery_terms(c: &Config, given: &[cfg::SelectorTerm]) -> Vec<SelectorTerm> {
    if given.is_empty() {
        return vec![SelectorTerm {
            tags: BTreeMap::from([(DISCOVERY_TAG.to_string(), c.cluster.name.clone())]),
            ..Default::default()
        }];
    }
    given.iter().map(|t| SelectorTerm { tags: t.tags.clone(), id: t.id.clone(), name: t.name.clone() }).collect()
}

/// The EC2NodeClass for `nc`; `ami` is None when no pin is known yet.
pub fn node_class(c: &Config, nc: &NodeClass, ami: Option<&AmiChoice>, notes: &mut Vec<String>) -> EC2NodeClass {
    let names = Names::of(c);
    let (ami_family, ami_selector_terms) = if !nc.ami_selector.is_empty() {
        let terms: Vec<AmiSelectorTerm> = nc
            .ami_selector
            .iter()
            .map(|t| AmiSelectorTerm {
                alias: t.alias.clone(),
                id: t.id.clone(),
                name: t.name.clone(),
                owner: t.owner.clone(),
                tags: t.tags.clone(),
                ssm_parameter: t.ssm_parameter.clone(),
            })
            .collect();
        let has_alias = terms.iter().any(|t| t.alias.is_some());
        (if has_alias { None } else { Some(nc.ami_family.crd_name()) }, terms)
    } else {
        match ami {
            Some(AmiChoice::Alias(a)) => (None, vec![AmiSelectorTerm { alias: Some(a.clone()), ..Default::default() }]),
            Some(AmiChoice::Ids(ids)) => (
                Some(nc.ami_family.crd_name()),
                ids.iter().map(|id| AmiSelectorTerm { id: Some(id.clone()), ..Default::default() }).collect(),
            ),
            None => {
                let alias = format!("{}@latest", nc.ami_family.alias_name());
                notes.push(format!(
                    "node class {}: no AMI pin recorded; rendered `{alias}`, which replaces nodes whenever AWS publishes a new AMI. `karpctl up` records a pin per class, which `karpctl render` then uses; or pass `--ami {}={}@vYYYYMMDD`",
                    nc.name,
                    nc.name,
                    nc.ami_family.alias_name()
                ));
                (None, vec![AmiSelectorTerm { alias: Some(alias), ..Default::default() }])
            }
        }
    };
    let role = match (&nc.role, &nc.instance_profile) {
        (Some(r), _) => Some(r.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(names.node_role.clone()),
    };
    let block_device_mappings = nc
        .block_devices
        .iter()
        .map(|b| BlockDeviceMapping {
            device_name: b.device_name.clone(),
            root_volume: b.root_volume.then_some(true),
            ebs: Ebs {
                volume_size: b.size.clone(),
                volume_type: volume_type(b.volume_type),
                iops: b.iops,
                throughput: b.throughput,
                encrypted: b.encrypted,
                kms_key_id: b.kms_key_id.clone(),
                delete_on_termination: b.delete_on_termination,
                snapshot_id: b.snapshot_id.clone(),
            },
        })
        .collect();
    let m = &nc.metadata_options;
    let toggle = |t: cfg::Toggle| if t == cfg::Toggle::Enabled { "enabled" } else { "disabled" };
    let mut tags = nc.tags.clone();
    tags.insert(CLUSTER_TAG.to_string(), c.cluster.name.clone());
    let kubelet = nc.kubelet.as_ref().map(|k| Kubelet {
        cluster_dns: k.cluster_dns.clone(),
        max_pods: k.max_pods,
        pods_per_core: k.pods_per_core,
        system_reserved: k.system_reserved.clone(),
        kube_reserved: k.kube_reserved.clone(),
        eviction_hard: k.eviction_hard.clone(),
        eviction_soft: k.eviction_soft.clone(),
        eviction_soft_grace_period: k.eviction_soft_grace_period.clone(),
        eviction_max_pod_grace_period: k.eviction_max_pod_grace_period,
        image_gc_high_threshold_percent: k.image_gc_high_threshold_percent,
        image_gc_low_threshold_percent: k.image_gc_low_threshold_percent,
        cpu_cfs_quota: k.cpu_cfs_quota,
    });
    let ud = userdata::render(c, nc);
    notes.extend(ud.notes);
    EC2NodeClass {
        api_version: "karpenter.k8s.aws/v1",
        kind: "EC2NodeClass",
        metadata: ObjectMeta { name: nc.name.clone(), labels: object_labels(c), annotations: BTreeMap::new() },
        spec: EC2NodeClassSpec {
            ami_family,
            ami_selector_terms,
            role,
            instance_profile: nc.instance_profile.clone(),
            subnet_selector_terms: discovery_terms(c, &nc.subnet_selector),
            security_group_selector_terms: discovery_terms(c, &nc.security_group_selector),
            block_device_mappings,
            metadata_options: MetadataOptions {
                http_endpoint: toggle(m.http_endpoint),
                http_protocol_ipv6: toggle(m.http_protocol_ipv6),
                http_put_response_hop_limit: m.http_put_response_hop_limit,
                http_tokens: if m.http_tokens == cfg::HttpTokens::Required { "required" } else { "optional" },
            },
            tags,
            kubelet,
            detailed_monitoring: nc.detailed_monitoring.then_some(true),
            associate_public_ip_address: nc.associate_public_ip_address,
            instance_store_policy: nc.instance_store_policy.map(|_| "RAID0"),
            user_data: ud.user_data,
        },
    }
}

fn volume_type(v: cfg::VolumeType) -> &'static str {
    use cfg::VolumeType::*;
    match v {
        Standard => "standard",
        Io1 => "io1",
        Io2 => "io2",
        Gp2 => "gp2",
        Sc1 => "sc1",
        St1 => "st1",
        Gp3 => "gp3",
    }
}

fn req(key: &str, op: &'static str, values: Vec<String>) -> Requirement {
    Requirement { key: key.to_string(), operator: op, values, min_values: None }
}

fn string_set(out: &mut Vec<Requirement>, key: &str, s: &StringSet) {
    if !s.allowed.is_empty() {
        out.push(req(key, "In", s.allowed.clone()));
    }
    if !s.not_allowed.is_empty() {
        out.push(req(key, "NotIn", s.not_allowed.clone()));
    }
}

fn number_set(out: &mut Vec<Requirement>, key: &str, s: &NumberSet) {
    if !s.allowed.is_empty() {
        out.push(req(key, "In", s.allowed.iter().map(u64::to_string).collect()));
    }
    if !s.not_allowed.is_empty() {
        out.push(req(key, "NotIn", s.not_allowed.iter().map(u64::to_string).collect()));
    }
    // Gt/Lt with an adjusted bound work on every Karpenter v1 release (Gte/Lte need 1.9).
    if let Some(min) = s.min.filter(|m| *m > 0) {
        out.push(req(key, "Gt", vec![(min - 1).to_string()]));
    }
    if let Some(max) = s.max {
        out.push(req(key, "Lt", vec![(max + 1).to_string()]));
    }
}

fn taints(ts: &[cfg::Taint]) -> Vec<Taint> {
    ts.iter()
        .map(|t| Taint {
            key: t.key.clone(),
            value: t.value.clone(),
            effect: match t.effect {
                cfg::TaintEffect::NoSchedule => "NoSchedule",
                cfg::TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                cfg::TaintEffect::NoExecute => "NoExecute",
            },
        })
        .collect()
}

pub fn node_pool(c: &Config, np: &cfg::NodePool) -> NodePool {
    let class = c.node_classes.iter().find(|nc| nc.name == np.node_class);
    let explicit = |key: &str| np.requirements.iter().any(|r| r.key == key);
    let mut reqs = Vec::new();
    if !explicit("kubernetes.io/arch") {
        let arches: Vec<Arch> = if np.architectures.is_empty() {
            class.map(|nc| nc.architectures.clone()).unwrap_or_else(|| vec![Arch::Amd64])
        } else {
            np.architectures.clone()
        };
        reqs.push(req("kubernetes.io/arch", "In", arches.iter().map(|a| a.k8s().to_string()).collect()));
    }
    if !explicit("kubernetes.io/os") {
        reqs.push(req("kubernetes.io/os", "In", vec!["linux".into()]));
    }
    if !explicit("karpenter.sh/capacity-type") || !np.capacity_types.is_empty() {
        let cts: Vec<String> = if np.capacity_types.is_empty() {
            vec!["on-demand".into()]
        } else {
            np.capacity_types.iter().map(|c| c.as_str().to_string()).collect()
        };
        reqs.push(req("karpenter.sh/capacity-type", "In", cts));
    }
    let i = &np.instances;
    string_set(&mut reqs, "karpenter.k8s.aws/instance-category", &i.categories);
    string_set(&mut reqs, "karpenter.k8s.aws/instance-family", &i.families);
    string_set(&mut reqs, "karpenter.k8s.aws/instance-size", &i.sizes);
    string_set(&mut reqs, "node.kubernetes.io/instance-type", &i.types);
    number_set(&mut reqs, "karpenter.k8s.aws/instance-generation", &i.generations);
    number_set(&mut reqs, "karpenter.k8s.aws/instance-cpu", &i.cpus);
    if !np.zones.is_empty() {
        reqs.push(req("topology.kubernetes.io/zone", "In", np.zones.clone()));
    }
    for r in &np.requirements {
        reqs.push(Requirement { key: r.key.clone(), operator: r.operator.as_str(), values: r.values.clone(), min_values: r.min_values });
    }
    let disruption = np.disruption.as_ref().map(|d| Disruption {
        consolidation_policy: match d.consolidation_policy {
            cfg::ConsolidationPolicy::WhenEmpty => "WhenEmpty",
            cfg::ConsolidationPolicy::WhenEmptyOrUnderutilized => "WhenEmptyOrUnderutilized",
            cfg::ConsolidationPolicy::Balanced => "Balanced",
        },
        // The v1 CRDs require consolidateAfter whenever disruption is written.
        consolidate_after: d.consolidate_after.clone().unwrap_or_else(|| "0s".into()),
        budgets: d
            .budgets
            .iter()
            .map(|b| Budget {
                nodes: b.nodes.clone(),
                schedule: b.schedule.clone(),
                duration: b.duration.clone(),
                reasons: b
                    .reasons
                    .iter()
                    .map(|r| match r {
                        cfg::DisruptionReason::Empty => "Empty",
                        cfg::DisruptionReason::Drifted => "Drifted",
                        cfg::DisruptionReason::Underutilized => "Underutilized",
                        cfg::DisruptionReason::Unhealthy => "Unhealthy",
                    })
                    .collect(),
            })
            .collect(),
    });
    NodePool {
        api_version: "karpenter.sh/v1",
        kind: "NodePool",
        metadata: ObjectMeta { name: np.name.clone(), labels: object_labels(c), annotations: BTreeMap::new() },
        spec: NodePoolSpec {
            template: NodeClaimTemplate {
                metadata: TemplateMeta { labels: np.labels.clone(), annotations: np.annotations.clone() },
                spec: NodeClaimSpec {
                    node_class_ref: NodeClassRef { group: "karpenter.k8s.aws", kind: "EC2NodeClass", name: np.node_class.clone() },
                    requirements: reqs,
                    taints: taints(&np.taints),
                    startup_taints: taints(&np.startup_taints),
                    expire_after: np.expire_after.clone(),
                    termination_grace_period: np.termination_grace_period.clone(),
                },
            },
            disruption,
            limits: np.limits.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect(),
            weight: np.weight,
        },
    }
}
