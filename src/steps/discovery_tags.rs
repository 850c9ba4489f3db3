/*!
Step `discovery-tags/<cluster>`: tags the cluster's subnets and its cluster
security group (or the ones the config names) `karpenter.sh/discovery=<cluster>`,
which the default node class selectors match. Records which resources karpctl
tagged and which already had the tag, so a purge removes only its own tags; its
own carry `karpctl.io/discovery-tagged=<cluster>` too (set in the same call), so
that is observed again after a crash between tagging and recording.
*/

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::aws::AwsError;
use crate::model::ownership::{DISCOVERY_MARKER_TAG, DISCOVERY_TAG};
use crate::engine::{Action, Change, FieldChange, Step, StepCx};

pub struct DiscoveryTags {
    pub cluster: String,
    pub cluster_step: String,
    /// Config overrides; empty means the cluster's own subnets / cluster security group.
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    pub ec2: aws_sdk_ec2::Client,
}

pub fn id(cluster: &str) -> String {
    format!("discovery-tags/{cluster}")
}

impl DiscoveryTags {
    /// The resources to tag, from the config or the cluster's facts.
    fn targets(&self, cx: &StepCx<'_>) -> Vec<String> {
        let facts = cx.output(&self.cluster_step);
        let mut out: Vec<String> = if self.subnet_ids.is_empty() {
            facts.and_then(|f| f["subnetIds"].as_array()).map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default()
        } else {
            self.subnet_ids.clone()
        };
        if self.security_group_ids.is_empty() {
            if let Some(sg) = facts.and_then(|f| f["clusterSecurityGroupId"].as_str()) {
                out.push(sg.to_string());
            }
        } else {
            out.extend(self.security_group_ids.iter().cloned());
        }
        out.sort();
        out.dedup();
        out
    }
}

impl Step for DiscoveryTags {
    fn id(&self) -> String {
        id(&self.cluster)
    }
    fn kind(&self) -> &'static str {
        "discovery-tags"
    }
    fn deps(&self) -> Vec<String> {
        vec![self.cluster_step.clone()]
    }
    fn inputs(&self) -> Value {
        json!({"tag": {DISCOVERY_TAG: self.cluster}, "subnetIds": self.subnet_ids, "securityGroupIds": self.security_group_ids})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let targets = self.targets(cx);
            if targets.is_empty() {
                anyhow::bail!("the cluster reports no subnets or security group to tag; set discovery.subnetIds and discovery.securityGroupIds");
            }
            cx.progress(format!("reading tags of {} resources", targets.len()));
            let mut values: BTreeMap<String, String> = BTreeMap::new();
            let mut marked: Vec<String> = Vec::new();
            let mut pages = self
                .ec2
                .describe_tags()
                .filters(aws_sdk_ec2::types::Filter::builder().name("resource-id").set_values(Some(targets.clone())).build())
                .filters(aws_sdk_ec2::types::Filter::builder().name("key").values(DISCOVERY_TAG).values(DISCOVERY_MARKER_TAG).build())
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk("ec2:DescribeTags", &e))?;
                for t in page.tags.unwrap_or_default() {
                    if let (Some(r), Some(k), Some(v)) = (t.resource_id, t.key, t.value) {
                        if k == DISCOVERY_MARKER_TAG {
                            if v == self.cluster {
                                marked.push(r);
                            }
                        } else {
                            values.insert(r, v);
                        }
                    }
                }
            }
            let current: Vec<Value> = targets.iter().map(|r| json!({"resource": r, "value": values.get(r)})).collect();
            // Ours: what the last finished run recorded, and what carries our marker.
            let mut ours: Vec<String> = cx.previous.map(|p| crate::json::strings(&p["taggedByKarpctl"])).unwrap_or_default();
            ours.extend(marked);
            ours.sort();
            ours.dedup();
            Ok(json!({"resources": current, "taggedByKarpctl": ours}))
        })
    }
    fn diff(&self, observed: &Value, cx: &StepCx<'_>) -> Change {
        let mut fields = Vec::new();
        for r in observed["resources"].as_array().into_iter().flatten() {
            if r["value"].as_str() != Some(self.cluster.as_str()) {
                fields.push(FieldChange {
                    field: format!("{}[{DISCOVERY_TAG}]", r["resource"].as_str().unwrap_or("?")),
                    old: r["value"].clone(),
                    new: Value::String(self.cluster.clone()),
                });
            }
        }
        if fields.is_empty() {
            return Change::none();
        }
        let action = if cx.previous.is_some() { Action::Update } else { Action::Create };
        Change::new(action, format!("tag {} resource(s) {DISCOVERY_TAG}={}", fields.len(), self.cluster)).with_fields(fields)
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, observed: &'a Value, change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let missing: Vec<String> = change.fields.iter().filter_map(|f| f.field.split('[').next().map(String::from)).collect();
            cx.progress(format!("CreateTags on {}", missing.join(", ")));
            self.ec2
                .create_tags()
                .set_resources(Some(missing.clone()))
                .tags(aws_sdk_ec2::types::Tag::builder().key(DISCOVERY_TAG).value(&self.cluster).build())
                .tags(aws_sdk_ec2::types::Tag::builder().key(DISCOVERY_MARKER_TAG).value(&self.cluster).build())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("ec2:CreateTags", &e))?;
            Ok(outputs(observed, &missing))
        })
    }
    fn outputs_from(&self, observed: &Value) -> Value {
        outputs(observed, &[])
    }
}

/// Which resources carry the tag, and which of them karpctl tagged (kept across runs).
fn outputs(observed: &Value, newly: &[String]) -> Value {
    let resources: Vec<String> =
        observed["resources"].as_array().into_iter().flatten().filter_map(|r| r["resource"].as_str().map(String::from)).collect();
    let mut ours: Vec<String> = observed["taggedByKarpctl"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    ours.extend(newly.iter().cloned());
    ours.sort();
    ours.dedup();
    json!({"resources": resources, "taggedByKarpctl": ours})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::diff_table::{check, quiet_cx, RowWithPrevious};

    #[test]
    fn diff_table() {
        let s = DiscoveryTags {
            cluster: "demo".into(),
            cluster_step: "cluster/demo".into(),
            subnet_ids: vec![],
            security_group_ids: vec![],
            ec2: aws_sdk_ec2::Client::from_conf(aws_sdk_ec2::Config::builder().behavior_version_latest().build()),
        };
        let res = |pairs: &[(&str, Option<&str>)]| -> Value {
            let current: Vec<Value> = pairs.iter().map(|(r, v)| json!({"resource": r, "value": v})).collect();
            json!({"resources": current, "taggedByKarpctl": []})
        };
        let prev = json!({"resources": ["sg-1", "subnet-1", "subnet-2"], "taggedByKarpctl": ["subnet-1"]});
        #[rustfmt::skip]
        let rows: Vec<RowWithPrevious<Option<&Value>>> = vec![
            ("all tagged, first run", res(&[("sg-1", Some("demo")), ("subnet-1", Some("demo"))]), None, Action::None, false, "up to date", &[]),
            ("all tagged, recorded", res(&[("sg-1", Some("demo")), ("subnet-1", Some("demo")), ("subnet-2", Some("demo"))]), Some(&prev),
             Action::None, false, "up to date", &[]),
            ("nothing to tag", json!({"resources": [], "taggedByKarpctl": []}), None, Action::None, false, "up to date", &[]),
            ("untagged, first run", res(&[("sg-1", None), ("subnet-1", Some("demo"))]), None, Action::Create, false,
             "tag 1 resource(s) karpenter.sh/discovery=demo", &["sg-1[karpenter.sh/discovery]"]),
            ("all untagged, first run", res(&[("sg-1", None), ("subnet-1", None), ("subnet-2", None)]), None, Action::Create, false,
             "tag 3 resource(s) karpenter.sh/discovery=demo", &["sg-1[karpenter.sh/discovery]", "subnet-1[karpenter.sh/discovery]", "subnet-2[karpenter.sh/discovery]"]),
            ("tag removed since the last run", res(&[("sg-1", Some("demo")), ("subnet-1", None), ("subnet-2", Some("demo"))]), Some(&prev),
             Action::Update, false, "tag 1 resource(s) karpenter.sh/discovery=demo", &["subnet-1[karpenter.sh/discovery]"]),
            ("tagged for another cluster", res(&[("sg-1", Some("other")), ("subnet-1", Some("demo")), ("subnet-2", Some("Demo"))]), Some(&prev),
             Action::Update, false, "tag 2 resource(s)", &["sg-1[karpenter.sh/discovery]", "subnet-2[karpenter.sh/discovery]"]),
            ("resource without an id", json!({"resources": [{"value": null}], "taggedByKarpctl": []}), None, Action::Create, false,
             "tag 1 resource(s)", &["?[karpenter.sh/discovery]"]),
        ];
        for (name, observed, previous, action, destructive, summary, fields) in rows {
            let cx = quiet_cx(previous);
            let c = s.diff(&observed, &cx);
            check(name, &c, action, destructive, summary, fields);
            for f in &c.fields {
                let r = f.field.split('[').next().unwrap();
                let was = observed["resources"].as_array().unwrap().iter().find(|o| o["resource"].as_str().unwrap_or("?") == r).map(|o| o["value"].clone());
                assert_eq!((Some(&f.old), &f.new), (was.as_ref(), &json!("demo")), "{name}: {} old/new", f.field);
            }
        }
    }
}
