/*!
EKS-optimized AMIs from the public SSM parameters (karpenter-facts §2): which
parameters a config needs (families × variants × architectures, for one
Kubernetes version), reading them in ⌈n/10⌉ concurrent `GetParameters` calls,
and turning the answers into pins: `al2023@vYYYYMMDD` / `bottlerocket@vX.Y.Z`
aliases, or explicit AMI ids.
*/

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::types::{AmiFamily, AmiPin, Arch, Config, Variant};
use crate::render::AmiChoice;

/// One AMI a node class needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Need {
    pub family: AmiFamily,
    pub variant: Variant,
    pub arch: Arch,
}

/// The SSM parameters holding a need's image id and its release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub image_id: String,
    pub release: String,
}

/// Classes that karpctl pins (those without an explicit `amiSelector`), with their needs.
pub fn needs(c: &Config) -> BTreeMap<String, Vec<Need>> {
    c.node_classes
        .iter()
        .filter(|nc| nc.ami_selector.is_empty())
        .map(|nc| {
            let needs = nc.architectures.iter().map(|a| Need { family: nc.ami_family, variant: nc.variant, arch: *a }).collect();
            (nc.name.clone(), needs)
        })
        .collect()
}

pub fn paths(k8s: &str, n: &Need) -> Paths {
    let arch = n.arch.ssm();
    match n.family {
        AmiFamily::Al2023 => {
            let base = format!("/aws/service/eks/optimized-ami/{k8s}/amazon-linux-2023/{arch}/{}/recommended", n.variant.as_str());
            Paths { image_id: format!("{base}/image_id"), release: format!("{base}/release_version") }
        }
        AmiFamily::Bottlerocket => {
            // Bottlerocket's aws-k8s variant covers standard and Neuron instances.
            let flavor = if n.variant == Variant::Nvidia { "-nvidia" } else { "" };
            let base = format!("/aws/service/bottlerocket/aws-k8s-{k8s}{flavor}/{arch}/latest");
            Paths { image_id: format!("{base}/image_id"), release: format!("{base}/image_version") }
        }
        AmiFamily::Al2 => {
            let name = match (n.variant, n.arch) {
                (Variant::Standard, Arch::Amd64) => "amazon-linux-2",
                (Variant::Standard, Arch::Arm64) => "amazon-linux-2-arm64",
                _ => "amazon-linux-2-gpu",
            };
            let base = format!("/aws/service/eks/optimized-ami/{k8s}/{name}/recommended");
            Paths { image_id: format!("{base}/image_id"), release: format!("{base}/release_version") }
        }
    }
}

/// The alias version from a release parameter: `1.31.3-20250915` → `v20250915`,
/// Bottlerocket `1.46.0-431fe75a` → `v1.46.0`.
pub fn alias_version(family: AmiFamily, release: &str) -> Option<String> {
    match family {
        AmiFamily::Bottlerocket => {
            let v = release.split('-').next()?;
            (v.split('.').count() == 3 && v.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))).then(|| format!("v{v}"))
        }
        AmiFamily::Al2023 | AmiFamily::Al2 => {
            let date = release.rsplit('-').next()?;
            (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit())).then(|| format!("v{date}"))
        }
    }
}

/// What SSM said for one need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    pub image_id: String,
    pub release: String,
    pub parameter: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AmiError {
    #[error("SSM parameter {path} does not exist: no {what} AMI is published for Kubernetes {k8s}{hint}")]
    Missing { path: String, what: String, k8s: String, hint: String },
    #[error("SSM parameter {path} has an unexpected value {value:?}")]
    Unparsable { path: String, value: String },
}

/// Reads every parameter the needs refer to, 10 names per call, all calls at once.
/// Fails with the [`crate::aws::AwsError`] of a failed call, or an [`AmiError`].
pub async fn lookup(ssm: &aws_sdk_ssm::Client, k8s: &str, needs: &BTreeSet<Need>) -> anyhow::Result<BTreeMap<Need, Found>> {
    let mut names: Vec<String> = needs.iter().flat_map(|n| { let p = paths(k8s, n); [p.image_id, p.release] }).collect();
    names.sort();
    names.dedup();
    let calls = names.chunks(10).map(|chunk| {
        let req = ssm.get_parameters().set_names(Some(chunk.to_vec()));
        async move { req.send().await.map_err(|e| crate::aws::AwsError::from_sdk("ssm:GetParameters", &e)) }
    });
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for out in futures::future::join_all(calls).await {
        let out = out?;
        for p in out.parameters.unwrap_or_default() {
            if let (Some(n), Some(v)) = (p.name, p.value) {
                values.insert(n, v);
            }
        }
    }
    let mut found = BTreeMap::new();
    for n in needs {
        let p = paths(k8s, n);
        let get = |path: &str| {
            values.get(path).cloned().ok_or_else(|| AmiError::Missing {
                path: path.to_string(),
                what: format!("{} {} {}", n.family.alias_name(), n.variant.as_str(), n.arch.ssm()),
                k8s: k8s.to_string(),
                hint: match n.family {
                    AmiFamily::Al2 => " (EKS publishes AL2 AMIs only up to Kubernetes 1.32; use al2023 or bottlerocket)".into(),
                    _ => String::new(),
                },
            })
        };
        let image_id = get(&p.image_id)?;
        if !image_id.starts_with("ami-") {
            return Err(AmiError::Unparsable { path: p.image_id, value: image_id }.into());
        }
        let release = get(&p.release)?;
        found.insert(n.clone(), Found { image_id, release, parameter: p.image_id });
    }
    Ok(found)
}

/// Pins for each class from what was found: one alias (the oldest release among
/// the class's needs, so every variant and architecture has it) or the AMI ids.
pub fn pins(
    classes: &BTreeMap<String, Vec<Need>>,
    found: &BTreeMap<Need, Found>,
    mode: AmiPin,
) -> Result<BTreeMap<String, AmiChoice>, AmiError> {
    let mut out = BTreeMap::new();
    for (class, needs) in classes {
        let choice = match mode {
            AmiPin::Id => AmiChoice::Ids(needs.iter().filter_map(|n| found.get(n).map(|f| f.image_id.clone())).collect()),
            AmiPin::Alias => {
                let mut versions = Vec::new();
                for n in needs {
                    let Some(f) = found.get(n) else { continue };
                    let v = alias_version(n.family, &f.release)
                        .ok_or_else(|| AmiError::Unparsable { path: f.parameter.replace("image_id", "release"), value: f.release.clone() })?;
                    versions.push(v);
                }
                versions.sort_by_key(|v| version_key(v));
                let family = needs.first().map(|n| n.family.alias_name()).unwrap_or("al2023");
                match versions.first() {
                    Some(v) => AmiChoice::Alias(format!("{family}@{v}")),
                    None => continue,
                }
            }
        };
        out.insert(class.clone(), choice);
    }
    Ok(out)
}

/// `v20250915` → [20250915]; `v1.46.0` → [1, 46, 0].
fn version_key(v: &str) -> Vec<u64> {
    v.trim_start_matches('v').split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_published_layout() {
        let n = Need { family: AmiFamily::Al2023, variant: Variant::Nvidia, arch: Arch::Arm64 };
        assert_eq!(paths("1.31", &n).image_id, "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/arm64/nvidia/recommended/image_id");
        let b = Need { family: AmiFamily::Bottlerocket, variant: Variant::Nvidia, arch: Arch::Amd64 };
        assert_eq!(paths("1.31", &b).release, "/aws/service/bottlerocket/aws-k8s-1.31-nvidia/x86_64/latest/image_version");
        let a = Need { family: AmiFamily::Al2, variant: Variant::Neuron, arch: Arch::Amd64 };
        assert_eq!(paths("1.30", &a).image_id, "/aws/service/eks/optimized-ami/1.30/amazon-linux-2-gpu/recommended/image_id");
    }

    #[test]
    fn alias_versions() {
        assert_eq!(alias_version(AmiFamily::Al2023, "1.31.3-20250915").as_deref(), Some("v20250915"));
        assert_eq!(alias_version(AmiFamily::Bottlerocket, "1.46.0-431fe75a").as_deref(), Some("v1.46.0"));
        assert_eq!(alias_version(AmiFamily::Al2023, "garbage"), None);
        let mut v = ["v1.100.0".to_string(), "v1.46.0".to_string()];
        v.sort_by_key(|x| version_key(x));
        assert_eq!(v[0], "v1.46.0");
    }
}
