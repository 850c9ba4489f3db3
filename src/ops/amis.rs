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
use crate::render::AmiChoice;

use super::Report;

pub async fn amis(g: &Global, _args: &AmisArgs) -> anyhow::Result<Report> {
    let loaded = config::load(&g.config)?;
    let c = &loaded.config;
    let backend = super::context::backend(c, g).await?;
    let state = super::context::load_state(&backend, c).await?;
    let sdk = crate::aws::sdk_config(g, c.cluster.region.as_deref()).await;
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
    let rows: Vec<serde_json::Value> = c
        .node_classes
        .iter()
        .map(|nc| {
            let needs: Vec<String> = nc.architectures.iter().map(|a| format!("{}/{}", nc.variant.as_str(), a.ssm())).collect();
            let images: Vec<serde_json::Value> = classes
                .get(&nc.name)
                .map(|ns| ns.iter().filter_map(|n| found.get(n).map(|f| serde_json::json!({"arch": n.arch.ssm(), "imageId": f.image_id, "release": f.release, "parameter": f.parameter}))).collect())
                .unwrap_or_default();
            serde_json::json!({
                "class": nc.name,
                "family": nc.ami_family.alias_name(),
                "needs": needs,
                "explicitSelector": !nc.ami_selector.is_empty(),
                "pinned": recorded.get(&nc.name).map(AmiChoice::to_string),
                "latest": latest.get(&nc.name).map(AmiChoice::to_string),
                "images": images,
            })
        })
        .collect();
    let stdout = match g.output {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&serde_json::json!({"kubernetesVersion": k8s, "classes": rows}))?),
        OutputFormat::Yaml => serde_yaml::to_string(&serde_json::json!({"kubernetesVersion": k8s, "classes": rows}))?,
        OutputFormat::Text => {
            let mut s = format!("Kubernetes {k8s}\n\n{:<20} {:<20} {:<24} {:<24} {}\n", "CLASS", "FAMILY", "PINNED", "LATEST", "IMAGES");
            for (r, nc) in rows.iter().zip(&c.node_classes) {
                let images: Vec<String> = r["images"].as_array().unwrap_or(&vec![]).iter().map(|i| format!("{} {}", i["arch"].as_str().unwrap_or(""), i["imageId"].as_str().unwrap_or(""))).collect();
                let pinned = if nc.ami_selector.is_empty() { r["pinned"].as_str().unwrap_or("-").to_string() } else { "(amiSelector)".into() };
                s.push_str(&format!(
                    "{:<20} {:<20} {:<24} {:<24} {}\n",
                    nc.name,
                    format!("{}/{}", nc.ami_family.alias_name(), nc.variant.as_str()),
                    pinned,
                    r["latest"].as_str().unwrap_or("-"),
                    images.join(", ")
                ));
            }
            s
        }
    };
    Ok(Report { stdout, warnings: loaded.warnings, ..Default::default() })
}
