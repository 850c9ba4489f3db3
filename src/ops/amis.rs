/*!
`karpctl amis`: the AMI each node class is pinned to (from the state file) next
to the newest one SSM publishes for the cluster's Kubernetes version, so a user
can see what `up --update-amis` would move before doing it.
*/

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;

use crate::amis;
use crate::cli::{AmisArgs, Global, OutputFormat};
use crate::config;
use crate::output::{AmiClass, AmiImage, Amis, AmisKind, ApiVersion};
use crate::render::AmiChoice;

use super::Report;

/// The newest AMIs SSM publishes for the cluster's Kubernetes version.
pub struct Latest {
    pub kubernetes_version: String,
    pub needs: BTreeMap<String, Vec<amis::Need>>,
    pub found: BTreeMap<amis::Need, amis::Found>,
    /// The pin each class would get.
    pub pins: BTreeMap<String, AmiChoice>,
}

/// Reads [`Latest`]: the Kubernetes version from the config, else from EKS.
pub async fn latest(g: &Global, c: &config::Config) -> anyhow::Result<Latest> {
    let sdk = crate::aws::sdk_config(&g.aws(), c.cluster.region.as_deref()).await;
    let k8s = match &c.cluster.kubernetes_version {
        Some(v) => v.clone(),
        None => {
            let out = crate::aws::eks(&sdk)
                .describe_cluster()
                .name(&c.cluster.name)
                .send()
                .await
                .map_err(|e| crate::aws::AwsError::from_sdk("eks:DescribeCluster", &e))
                .with_context(|| format!("reading the Kubernetes version of cluster {}", c.cluster.name))?;
            out.cluster.and_then(|c| c.version).context("DescribeCluster returned no version")?
        }
    };
    let needs = amis::needs(c);
    let all: BTreeSet<amis::Need> = needs.values().flatten().cloned().collect();
    let found = amis::lookup(&crate::aws::ssm(&sdk), &k8s, &all).await?;
    let pins = amis::pins(&needs, &found, c.amis.pin)?;
    Ok(Latest { kubernetes_version: k8s, needs, found, pins })
}

/// The pins the state records, and the Kubernetes version they were chosen for.
pub fn recorded(state: &crate::state::State) -> (BTreeMap<String, AmiChoice>, Option<String>) {
    let outputs = state.steps.get(crate::steps::ami_lookup::ID).map(|r| &r.outputs);
    let pins = outputs.and_then(|o| serde_json::from_value(o["pins"].clone()).ok()).unwrap_or_default();
    (pins, outputs.and_then(|o| o["kubernetesVersion"].as_str()).map(String::from))
}

pub async fn amis(g: &Global, _args: &AmisArgs) -> anyhow::Result<Report> {
    let loaded = config::load(&g.config)?;
    let c = &loaded.config;
    let backend = super::context::backend(c, g).await?;
    let state = super::context::load_state(&backend, c).await?;
    let Latest { kubernetes_version: k8s, needs: classes, found, pins: latest } = latest(g, c).await?;
    let (recorded, _) = recorded(&state);
    let rows: Vec<AmiClass> = c
        .node_classes
        .iter()
        .map(|nc| {
            let needs: Vec<String> = nc.architectures.iter().map(|a| format!("{}/{}", nc.variant.as_str(), a.ssm())).collect();
            let images: Vec<AmiImage> = classes
                .get(&nc.name)
                .map(|ns| {
                    ns.iter()
                        .filter_map(|n| {
                            found.get(n).map(|f| AmiImage {
                                arch: n.arch.ssm().to_string(),
                                image_id: f.image_id.clone(),
                                release: f.release.clone(),
                                parameter: f.parameter.clone(),
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            AmiClass {
                class: nc.name.clone(),
                family: nc.ami_family.alias_name().to_string(),
                variant: nc.variant.as_str().to_string(),
                needs,
                explicit_selector: !nc.ami_selector.is_empty(),
                pinned: recorded.get(&nc.name).map(AmiChoice::to_string),
                latest: latest.get(&nc.name).map(AmiChoice::to_string),
                images,
            }
        })
        .collect();
    let doc = Amis { api_version: ApiVersion::V1Alpha1, kind: AmisKind::Amis, kubernetes_version: k8s, classes: rows };
    let stdout = match g.output {
        OutputFormat::Text => crate::ui::amis_text(&doc),
        f => crate::output::encode(&doc, f)?,
    };
    Ok(Report { stdout, warnings: loaded.warnings, ..Default::default() })
}
