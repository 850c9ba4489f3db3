/*!
`rollback --purge`: what is left after the controller is gone.

`rollback/sweep` removes what Karpenter leaves behind when it could not clean
up (a controller removed before its finalizers ran, issue 444/995/3665 upstream):
launch templates tagged `eks:eks-cluster-name=<cluster>` (or the older
`karpenter.k8s.aws/cluster`) that carry Karpenter's marks, instance profiles
tagged for the cluster by Karpenter (its path `/karpenter/…` or its name
`<cluster>_…`; roles are removed from them first), instances still running
with Karpenter's tags (only with `--force`), and the `karpenter.sh/discovery`
tags that karpctl added (as recorded by `up`; tags someone else set stay).

`rollback/stack` then deletes the CloudFormation stack — only one tagged
`karpctl.io/cluster=<cluster>` — and waits; a `DELETE_FAILED` carries the
first failed resource's reason in the error. Instance profiles holding the
stack's node role must be gone first, which is why the sweep comes before it.
*/

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{strings, EKS_CLUSTER_TAG, LEGACY_CLUSTER_TAG, NODECLASS_TAG};
use crate::aws::AwsError;
use crate::model::ownership::{DISCOVERY_MARKER_TAG, DISCOVERY_TAG};
use crate::engine::{Action, Change, FieldChange, Step, StepCx, TypedStep};
use crate::model::ownership::CLUSTER_TAG;
use crate::steps::cfn_stack::StackCalls;


// ---------------------------------------------------------------------------------------------
// Sweep
// ---------------------------------------------------------------------------------------------

pub struct Sweep {
    pub cluster: String,
    pub pools: Vec<String>,
    pub force: bool,
    /// The `up` record of `discovery-tags/<cluster>`: which tags karpctl added.
    pub discovery: Option<Value>,
    pub deps: Vec<String>,
    pub ec2: aws_sdk_ec2::Client,
    pub iam: aws_sdk_iam::Client,
}

/// Whether tags mark a launch template as Karpenter's for `cluster`.
pub fn karpenter_template(name: &str, tags: &BTreeMap<String, String>, cluster: &str) -> bool {
    let for_cluster = tags.get(EKS_CLUSTER_TAG).map(String::as_str) == Some(cluster) || tags.get(LEGACY_CLUSTER_TAG).map(String::as_str) == Some(cluster);
    let karpenters = name.starts_with("karpenter.k8s.aws/") || tags.contains_key(NODECLASS_TAG) || tags.contains_key(LEGACY_CLUSTER_TAG);
    for_cluster && karpenters
}

/// Whether tags mark an instance profile as one Karpenter created for `cluster`.
pub fn karpenter_profile(tags: &BTreeMap<String, String>, cluster: &str) -> bool {
    let v1 = tags.get(EKS_CLUSTER_TAG).map(String::as_str) == Some(cluster) && tags.contains_key(NODECLASS_TAG);
    let old = tags.get("karpenter.sh/managed-by").map(String::as_str) == Some(cluster);
    let owned = tags.get(&format!("kubernetes.io/cluster/{cluster}")).map(String::as_str) == Some("owned") && tags.contains_key(NODECLASS_TAG);
    v1 || old || owned
}

impl Sweep {
    async fn launch_templates(&self) -> anyhow::Result<Vec<(String, String)>> {
        use aws_sdk_ec2::types::Filter;
        let mut out = BTreeMap::new();
        for key in [EKS_CLUSTER_TAG, LEGACY_CLUSTER_TAG] {
            let filter = Filter::builder().name(format!("tag:{key}")).values(&self.cluster).build();
            let mut pages = self.ec2.describe_launch_templates().filters(filter).into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| AwsError::from_sdk("ec2:DescribeLaunchTemplates", &e))?;
                for lt in page.launch_templates() {
                    let name = lt.launch_template_name().unwrap_or_default().to_string();
                    let tags: BTreeMap<String, String> =
                        lt.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect();
                    if karpenter_template(&name, &tags, &self.cluster) {
                        if let Some(id) = lt.launch_template_id() {
                            out.insert(id.to_string(), name);
                        }
                    }
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// (name, roles) of Karpenter's instance profiles for the cluster.
    async fn instance_profiles(&self) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let mut out = Vec::new();
        let prefix = format!("{}_", self.cluster);
        let mut pages = self.iam.list_instance_profiles().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk("iam:ListInstanceProfiles", &e))?;
            for p in page.instance_profiles() {
                let name = p.instance_profile_name();
                if !(p.path().starts_with("/karpenter/") || name.starts_with(&prefix)) {
                    continue;
                }
                // GetInstanceProfile carries the tags (ListInstanceProfiles does not).
                let got = self.iam.get_instance_profile().instance_profile_name(name).send().await.map_err(|e| AwsError::from_sdk("iam:GetInstanceProfile", &e))?;
                let tags: BTreeMap<String, String> =
                    got.instance_profile().map(|p| p.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect()).unwrap_or_default();
                if karpenter_profile(&tags, &self.cluster) {
                    out.push((name.to_string(), p.roles().iter().map(|r| r.role_name().to_string()).collect()));
                }
            }
        }
        Ok(out)
    }

    /// Of the resources karpctl tagged (as recorded, or marked so), those that still
    /// carry `karpenter.sh/discovery=<cluster>`.
    async fn discovery_tags(&self) -> anyhow::Result<Vec<String>> {
        use aws_sdk_ec2::types::Filter;
        let mut ours = self.discovery.as_ref().map(|d| strings(&d["taggedByKarpctl"])).unwrap_or_default();
        let marked = self
            .ec2
            .describe_tags()
            .filters(Filter::builder().name("key").values(DISCOVERY_MARKER_TAG).build())
            .filters(Filter::builder().name("value").values(&self.cluster).build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeTags", &e))?;
        ours.extend(marked.tags().iter().filter_map(|t| t.resource_id().map(String::from)));
        ours.sort();
        ours.dedup();
        if ours.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .ec2
            .describe_tags()
            .filters(Filter::builder().name("resource-id").set_values(Some(ours)).build())
            .filters(Filter::builder().name("key").values(DISCOVERY_TAG).build())
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("ec2:DescribeTags", &e))?;
        let mut found: Vec<String> = out
            .tags()
            .iter()
            .filter(|t| t.value() == Some(self.cluster.as_str()))
            .filter_map(|t| t.resource_id().map(String::from))
            .collect();
        found.sort();
        found.dedup();
        Ok(found)
    }
}

impl Step for Sweep {
    fn id(&self) -> String {
        super::SWEEP.into()
    }
    fn kind(&self) -> &'static str {
        "rollback-sweep"
    }
    fn deps(&self) -> Vec<String> {
        self.deps.clone()
    }
    fn always_observe(&self) -> bool {
        true
    }
    fn inputs(&self) -> Value {
        json!({"cluster": self.cluster, "pools": self.pools, "force": self.force})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            cx.progress("looking for Karpenter's launch templates");
            let lts = self.launch_templates().await?;
            cx.progress("looking for Karpenter's instance profiles");
            let profiles = self.instance_profiles().await?;
            cx.progress("looking for Karpenter's instances");
            let instances = super::drain::karpenter_instances(&self.ec2, &self.cluster, None, &[]).await?;
            let tags = self.discovery_tags().await?;
            Ok(json!({
                "launchTemplates": lts.iter().map(|(id, name)| json!({"id": id, "name": name})).collect::<Vec<_>>(),
                "instanceProfiles": profiles.iter().map(|(n, roles)| json!({"name": n, "roles": roles})).collect::<Vec<_>>(),
                "instances": instances,
                "discoveryTags": tags,
                "discoveryKnown": self.discovery.is_some() || !tags.is_empty(),
                "previous": super::carried(cx),
            }))
        })
    }
    fn diff(&self, o: &Value, _cx: &StepCx<'_>) -> Change {
        let lts: Vec<&Value> = o["launchTemplates"].as_array().into_iter().flatten().collect();
        let profiles: Vec<&Value> = o["instanceProfiles"].as_array().into_iter().flatten().collect();
        let instances = strings(&o["instances"]);
        let tags = strings(&o["discoveryTags"]);
        if lts.is_empty() && profiles.is_empty() && instances.is_empty() && tags.is_empty() {
            return Change::none();
        }
        let mut parts = Vec::new();
        let mut fields = Vec::new();
        if !instances.is_empty() {
            parts.push(if self.force {
                format!("terminate {} instance(s) Karpenter launched for the cluster (--force)", instances.len())
            } else {
                format!("{} instance(s) Karpenter launched for the cluster are still running: not terminated without --force", instances.len())
            });
            fields.extend(instances.iter().map(|i| FieldChange { field: format!("instance {i}"), old: json!("running"), new: json!("terminated") }));
        }
        if !lts.is_empty() {
            parts.push(format!("delete {} launch template(s)", lts.len()));
            fields.extend(lts.iter().map(|l| FieldChange {
                field: format!("launch template {}", l["name"].as_str().unwrap_or("?")),
                old: l["id"].clone(),
                new: Value::Null,
            }));
        }
        if !profiles.is_empty() {
            parts.push(format!("delete {} instance profile(s)", profiles.len()));
            fields.extend(profiles.iter().map(|p| FieldChange {
                field: format!("instance profile {}", p["name"].as_str().unwrap_or("?")),
                old: json!(format!("roles: {}", strings(&p["roles"]).join(", "))),
                new: Value::Null,
            }));
        }
        if !tags.is_empty() {
            parts.push(format!("remove the {DISCOVERY_TAG} tag karpctl added to {}", tags.join(", ")));
            fields.extend(tags.iter().map(|r| FieldChange { field: format!("{r}[{DISCOVERY_TAG}]"), old: json!(self.cluster), new: Value::Null }));
        }
        Change::new(Action::Delete, format!("sweep what Karpenter left: {}", parts.join("; "))).with_fields(fields)
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, o: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let mut removed = Vec::new();
            let instances = strings(&o["instances"]);
            if !instances.is_empty() && self.force {
                cx.progress(format!("TerminateInstances {}", instances.join(", ")));
                self.ec2.terminate_instances().set_instance_ids(Some(instances.clone())).send().await.map_err(|e| AwsError::from_sdk("ec2:TerminateInstances", &e))?;
                removed.extend(instances.iter().map(|i| format!("instance {i} (terminated with --force)")));
            }
            for lt in o["launchTemplates"].as_array().into_iter().flatten() {
                let id = lt["id"].as_str().unwrap_or_default();
                cx.progress(format!("DeleteLaunchTemplate {}", lt["name"].as_str().unwrap_or(id)));
                let out = self.ec2.delete_launch_template().launch_template_id(id).send().await;
                crate::aws::found(out.map_err(|e| AwsError::from_sdk("ec2:DeleteLaunchTemplate", &e)))?;
                removed.push(format!("launch template {} ({id})", lt["name"].as_str().unwrap_or("?")));
            }
            for p in o["instanceProfiles"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or_default();
                for role in strings(&p["roles"]) {
                    cx.progress(format!("RemoveRoleFromInstanceProfile {name} {role}"));
                    let out = self.iam.remove_role_from_instance_profile().instance_profile_name(name).role_name(&role).send().await;
                    crate::aws::found(out.map_err(|e| AwsError::from_sdk("iam:RemoveRoleFromInstanceProfile", &e)))?;
                }
                cx.progress(format!("DeleteInstanceProfile {name}"));
                let out = self.iam.delete_instance_profile().instance_profile_name(name).send().await;
                crate::aws::found(out.map_err(|e| AwsError::from_sdk("iam:DeleteInstanceProfile", &e)))?;
                removed.push(format!("instance profile {name}"));
            }
            let tags = strings(&o["discoveryTags"]);
            if !tags.is_empty() {
                cx.progress(format!("DeleteTags {DISCOVERY_TAG} on {}", tags.join(", ")));
                self.ec2
                    .delete_tags()
                    .set_resources(Some(tags.clone()))
                    .tags(aws_sdk_ec2::types::Tag::builder().key(DISCOVERY_TAG).value(&self.cluster).build())
                    .tags(aws_sdk_ec2::types::Tag::builder().key(DISCOVERY_MARKER_TAG).value(&self.cluster).build())
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("ec2:DeleteTags", &e))?;
                removed.extend(tags.iter().map(|r| format!("tag {DISCOVERY_TAG} on {r}")));
            }
            let mut out = json!({"removed": super::removed(cx.previous, &removed)});
            if !o["discoveryKnown"].as_bool().unwrap_or(false) {
                out["kept"] = json!([format!("{DISCOVERY_TAG} tags: no record of which ones karpctl added, so none were removed")]);
            }
            if !instances.is_empty() && !self.force {
                anyhow::bail!(
                    "{} instance(s) Karpenter launched for the cluster are still running: {}\nhelp: run `karpctl rollback --purge --force` to terminate them",
                    instances.len(),
                    instances.join(", ")
                );
            }
            Ok(out)
        })
    }
    fn outputs_from(&self, o: &Value) -> Value {
        super::unchanged(&o["previous"], json!({"removed": []}))
    }
}

// ---------------------------------------------------------------------------------------------
// The CloudFormation stack
// ---------------------------------------------------------------------------------------------

pub struct Stack {
    pub cluster: String,
    pub stack: String,
    pub deps: Vec<String>,
    pub cfn: aws_sdk_cloudformation::Client,
}

impl Stack {
    fn calls(&self) -> StackCalls<'_> {
        StackCalls { cfn: &self.cfn, name: &self.stack, rerun: "rollback --purge" }
    }
}

/// What `rollback/stack` finds: the stack, when it is karpctl's, and the step's
/// previous outputs (kept when there is nothing left to delete).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StackSeen {
    pub exists: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default)]
    pub previous: Value,
}

impl TypedStep for Stack {
    const KIND: &'static str = "rollback-stack";
    const ALWAYS_OBSERVE: bool = true;
    type Observed = StackSeen;
    type Outputs = Value;

    fn id(&self) -> String {
        super::STACK.into()
    }
    fn deps(&self) -> Vec<String> {
        self.deps.clone()
    }
    fn inputs(&self) -> Value {
        json!({"stack": self.stack})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<StackSeen>> {
        Box::pin(async move {
            cx.progress(format!("reading stack {}", self.stack));
            let Some(s) = self.calls().describe(&self.stack).await? else {
                return Ok(StackSeen { exists: false, stack_id: None, status: None, previous: super::carried(cx) });
            };
            let tags: BTreeMap<String, String> = s.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect();
            if tags.get(CLUSTER_TAG) != Some(&self.cluster) {
                anyhow::bail!(
                    "stack {} is not tagged {CLUSTER_TAG}={}: karpctl did not create it and does not delete it; delete it yourself if it is no longer needed",
                    self.stack,
                    self.cluster
                );
            }
            Ok(StackSeen {
                exists: true,
                stack_id: s.stack_id().map(String::from),
                status: s.stack_status().map(|x| x.as_str().to_string()),
                previous: super::carried(cx),
            })
        })
    }
    fn diff(&self, o: &StackSeen, _cx: &StepCx<'_>) -> Change {
        if !o.exists {
            return Change::none();
        }
        Change::new(Action::Delete, format!("delete stack {} (node role, controller policies, interruption queue and rules)", self.stack))
            .with_fields(vec![FieldChange { field: format!("stack {}", self.stack), old: json!(o.status), new: json!("DELETE_COMPLETE") }])
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, o: &'a StackSeen, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let stack_id = o.stack_id.clone().unwrap_or_else(|| self.stack.clone());
            self.calls().delete(cx, &stack_id, o.status.as_deref() == Some("DELETE_IN_PROGRESS")).await?;
            let removed = vec![format!("CloudFormation stack {} ({stack_id})", self.stack)];
            Ok(json!({"removed": super::removed(cx.previous, &removed)}))
        })
    }
    fn outputs_from(&self, o: &StackSeen) -> Value {
        super::unchanged(&o.previous, json!({"removed": []}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_diff_table() {
        let step = Stack {
            cluster: "demo".into(),
            stack: "Karpenter-demo".into(),
            deps: vec![],
            cfn: aws_sdk_cloudformation::Client::new(&aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build()),
        };
        let upstream = BTreeMap::new();
        let quiet = |_e: crate::engine::Event| {};
        let cx = StepCx::new(super::super::STACK, &upstream, None, &quiet);
        let seen = |exists: bool, status: Option<&str>, previous: Value| StackSeen {
            exists,
            stack_id: exists.then(|| "arn:aws:cloudformation:us-west-2:1:stack/Karpenter-demo/1".to_string()),
            status: status.map(String::from),
            previous,
        };
        let rows: [(&str, StackSeen, Action); 3] = [
            ("gone", seen(false, None, Value::Null), Action::None),
            ("there", seen(true, Some("CREATE_COMPLETE"), Value::Null), Action::Delete),
            ("already deleting", seen(true, Some("DELETE_IN_PROGRESS"), Value::Null), Action::Delete),
        ];
        for (name, o, action) in rows {
            let c = TypedStep::diff(&step, &o, &cx);
            assert_eq!(c.action, action, "{name}");
            assert!(!c.destructive, "{name}: the rollback's own approval covers it");
            if action == Action::Delete {
                assert!(c.summary.contains("delete stack Karpenter-demo"), "{name}: {}", c.summary);
                assert_eq!((c.fields[0].old.clone(), c.fields[0].new.clone()), (json!(o.status), json!("DELETE_COMPLETE")), "{name}");
            }
        }
        // The JSON the state records is the shape it had before the step was typed.
        let o = seen(true, Some("CREATE_COMPLETE"), Value::Null);
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            json!({"exists": true, "stackId": "arn:aws:cloudformation:us-west-2:1:stack/Karpenter-demo/1", "status": "CREATE_COMPLETE", "previous": null})
        );
        // Nothing to delete: the earlier record stays, else an empty removal list.
        let earlier = json!({"removed": ["CloudFormation stack Karpenter-demo (x)"]});
        assert_eq!(step.outputs_from(&seen(false, None, earlier.clone())), earlier);
        assert_eq!(step.outputs_from(&seen(false, None, Value::Null)), json!({"removed": []}));
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn only_karpenters_templates_for_this_cluster_are_swept() {
        assert!(karpenter_template("karpenter.k8s.aws/123", &tags(&[(EKS_CLUSTER_TAG, "c")]), "c"));
        assert!(karpenter_template("lt-x", &tags(&[(EKS_CLUSTER_TAG, "c"), (NODECLASS_TAG, "default")]), "c"));
        assert!(karpenter_template("old", &tags(&[(LEGACY_CLUSTER_TAG, "c")]), "c"));
        assert!(!karpenter_template("karpenter.k8s.aws/123", &tags(&[(EKS_CLUSTER_TAG, "other")]), "c"), "another cluster's");
        assert!(!karpenter_template("eks-abc", &tags(&[(EKS_CLUSTER_TAG, "c")]), "c"), "a managed nodegroup's template");
    }

    #[test]
    fn only_karpenters_profiles_for_this_cluster_are_swept() {
        assert!(karpenter_profile(&tags(&[(EKS_CLUSTER_TAG, "c"), (NODECLASS_TAG, "default")]), "c"));
        assert!(karpenter_profile(&tags(&[("karpenter.sh/managed-by", "c")]), "c"));
        assert!(!karpenter_profile(&tags(&[(EKS_CLUSTER_TAG, "c")]), "c"), "no node class tag: not Karpenter's");
        assert!(!karpenter_profile(&tags(&[(EKS_CLUSTER_TAG, "d"), (NODECLASS_TAG, "x")]), "c"));
    }
}
