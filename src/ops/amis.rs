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

pub async fn amis(g: &Global, _args: &AmisArgs) -> anyhow::Result<Report> {
    let loaded = config::load(&g.config)?;
    let c = &loaded.config;
    let backend = super::context::backend(c, g).await?;
    let state = super::context::load_state(&backend, c).await?;
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
    let classes = amis::needs(c);
    let all: BTreeSet<amis::Need> = classes.values().flatten().cloned().collect();
    let found = amis::lookup(&crate::aws::ssm(&sdk), &k8s, &all).await?;
    let latest = amis::pins(&classes, &found, c.amis.pin)?;
    let recorded: BTreeMap<String, AmiChoice> = state
        .steps
        .get(crate::steps::ami_lookup::ID)
        .and_then(|r| serde_json::from_value(r.outputs["pins"].clone()).ok())
        .unwrap_or_default();
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
