/*!
The AWS identity side of a rollback, once the controller and its nodes are gone.

`rollback/node-access` removes what let Karpenter's nodes join: the node role's
access entry when karpctl created it (tagged `karpctl.io/cluster`; an entry
someone else made is kept), and the node role's entry in `aws-auth` `mapRoles`,
merged out with optimistic concurrency so every other entry stays as it is.

`rollback/identity` removes the controller's identity: the Pod Identity
association of `<namespace>/karpenter` that points at the controller role, and
the role itself when karpctl created it (its attached and inline policies and
instance-profile memberships go first, as IAM requires). A role karpctl only
adopted keeps existing and loses just the stack's policies karpctl attached.
An IRSA OIDC provider is deleted only when karpctl created it and no other
role trusts it any more.
*/

use std::collections::BTreeSet;
use std::sync::Arc;

use anyhow::Context as _;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use super::{strings, CLUSTER};
use crate::aws::AwsError;
use crate::engine::{Action, Change, FieldChange, Step, StepCx};
use crate::kube::Connector;
use crate::model::ownership::CLUSTER_TAG;
use crate::steps::aws_auth;

/// `mapRoles` without the entries for `role_arn`, and how many were dropped; other entries untouched.
pub fn without(map_roles: Option<&str>, role_arn: &str) -> anyhow::Result<(String, usize)> {
    let mut roles: Vec<serde_yaml::Value> = match map_roles.map(str::trim) {
        None | Some("") => Vec::new(),
        Some(s) => serde_yaml::from_str(s).context("the aws-auth ConfigMap's mapRoles is not a YAML list; fix it by hand first")?,
    };
    let before = roles.len();
    roles.retain(|r| r.get("rolearn").and_then(|v| v.as_str()) != Some(role_arn));
    let dropped = before - roles.len();
    Ok((if roles.is_empty() { String::new() } else { serde_yaml::to_string(&roles)? }, dropped))
}

/// `arn:aws:eks:us-west-2:111:cluster/x` → `arn:aws:iam::111:role/<role>`.
fn role_arn_from_cluster(cluster_arn: &str, role: &str) -> Option<String> {
    let a = crate::aws::Arn::parse(cluster_arn)?;
    Some(format!("arn:{}:iam::{}:role/{role}", a.partition, a.account))
}

/// The stack's outputs as the `up` identity step reads them, or None when there is no stack.
async fn stack_outputs(cfn: &aws_sdk_cloudformation::Client, stack: &str) -> anyhow::Result<Option<Value>> {
    match cfn.describe_stacks().stack_name(stack).send().await {
        Ok(o) => Ok(o.stacks().first().map(|s| {
            let outs: serde_json::Map<String, Value> =
                s.outputs().iter().filter_map(|o| Some((o.output_key()?.to_string(), json!(o.output_value().unwrap_or_default())))).collect();
            json!({"outputs": outs})
        })),
        Err(e) => {
            let err = AwsError::from_sdk("cloudformation:DescribeStacks", &e);
            if err.is_not_found() {
                Ok(None)
            } else {
                Err(err.into())
            }
        }
    }
}


// ---------------------------------------------------------------------------------------------
// Node access
// ---------------------------------------------------------------------------------------------

pub struct NodeAccess {
    pub cluster: String,
    /// The node role's name (config `stack.nodeRoleName`).
    pub node_role: String,
    pub stack: String,
    /// The `up` record of `node-access/<cluster>`.
    pub recorded: Option<Value>,
    pub deps: Vec<String>,
    pub eks: aws_sdk_eks::Client,
    pub cfn: aws_sdk_cloudformation::Client,
    pub conn: Arc<Connector>,
}

impl NodeAccess {
    /// The node role's ARN: as recorded, else from the stack, else from the cluster's account.
    async fn role_arn(&self, facts: &Value) -> anyhow::Result<String> {
        if let Some(a) = self.recorded.as_ref().and_then(|r| r["nodeRoleArn"].as_str()).filter(|a| a.starts_with("arn:")) {
            return Ok(a.to_string());
        }
        if let Some(a) = stack_outputs(&self.cfn, &self.stack).await?.and_then(|o| o["outputs"]["NodeRoleArn"].as_str().map(String::from)) {
            return Ok(a);
        }
        role_arn_from_cluster(facts["arn"].as_str().unwrap_or_default(), &self.node_role)
            .ok_or_else(|| anyhow::anyhow!("cannot tell the node role's ARN: no record, no stack {} and no cluster ARN", self.stack))
    }
}

impl Step for NodeAccess {
    fn id(&self) -> String {
        super::NODE_ACCESS.into()
    }
    fn kind(&self) -> &'static str {
        "rollback-node-access"
    }
    fn deps(&self) -> Vec<String> {
        self.deps.clone()
    }
    fn always_observe(&self) -> bool {
        true
    }
    fn inputs(&self) -> Value {
        json!({"nodeRole": self.node_role, "stack": self.stack})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let facts = cx.output(CLUSTER).cloned().unwrap_or(Value::Null);
            let role = self.role_arn(&facts).await?;
            let auth = facts["authenticationMode"].as_str().unwrap_or("CONFIG_MAP").to_string();
            let mut entry = Value::Null;
            if auth != "CONFIG_MAP" {
                cx.progress("DescribeAccessEntry");
                let out = self.eks.describe_access_entry().cluster_name(&self.cluster).principal_arn(&role).send().await;
                let out = crate::aws::found(out.map_err(|e| AwsError::from_sdk("eks:DescribeAccessEntry", &e)))?;
                if let Some(e) = out.and_then(|o| o.access_entry) {
                    let ours = e.tags().and_then(|t| t.get(CLUSTER_TAG)).is_some_and(|v| *v == self.cluster);
                    entry = json!({"arn": e.access_entry_arn, "type": e.r#type, "ours": ours});
                }
            }
            cx.progress("reading ConfigMap kube-system/aws-auth");
            let client = self.conn.client(Some(&facts)).await?;
            let api: Api<ConfigMap> = Api::namespaced(client, aws_auth::NAMESPACE);
            let cm = api.get_opt(aws_auth::NAME).await.context("reading ConfigMap kube-system/aws-auth")?;
            let roles = cm.as_ref().and_then(|c| c.data.as_ref()).and_then(|d| d.get("mapRoles")).cloned();
            let mapped = aws_auth::mapped(roles.as_deref(), &role).is_some();
            Ok(json!({"nodeRoleArn": role, "authenticationMode": auth, "entry": entry, "mapped": mapped, "previous": super::carried(cx)}))
        })
    }
    fn diff(&self, o: &Value, _cx: &StepCx<'_>) -> Change {
        let role = o["nodeRoleArn"].as_str().unwrap_or("?");
        let mut parts = Vec::new();
        let mut fields = Vec::new();
        if o["entry"]["ours"] == true {
            parts.push(format!("delete the {} access entry of node role {role}", o["entry"]["type"].as_str().unwrap_or("EC2_LINUX")));
            fields.push(FieldChange { field: format!("access entry {role}"), old: o["entry"]["arn"].clone(), new: Value::Null });
        }
        if o["mapped"] == true {
            parts.push(format!("remove node role {role} from kube-system/aws-auth mapRoles (other entries stay)"));
            fields.push(FieldChange { field: "aws-auth mapRoles".into(), old: json!(role), new: Value::Null });
        }
        if parts.is_empty() {
            return Change::none();
        }
        Change::new(Action::Delete, parts.join("; ")).with_fields(fields)
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, o: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let role = o["nodeRoleArn"].as_str().unwrap_or_default();
            let mut removed = Vec::new();
            if o["entry"]["ours"] == true {
                cx.progress("DeleteAccessEntry");
                let out = self.eks.delete_access_entry().cluster_name(&self.cluster).principal_arn(role).send().await;
                crate::aws::found(out.map_err(|e| AwsError::from_sdk("eks:DeleteAccessEntry", &e)))?;
                removed.push(format!("access entry {}", o["entry"]["arn"].as_str().unwrap_or(role)));
            }
            if o["mapped"] == true {
                let client = self.conn.client(cx.output(CLUSTER)).await?;
                let api: Api<ConfigMap> = Api::namespaced(client, aws_auth::NAMESPACE);
                let mut done = false;
                // Read-modify-write with the resourceVersion: a concurrent writer makes it 409, and we go again.
                for _ in 0..5 {
                    let Some(mut cm) = api.get_opt(aws_auth::NAME).await.context("reading ConfigMap kube-system/aws-auth")? else {
                        done = true;
                        break;
                    };
                    let data = cm.data.get_or_insert_with(Default::default);
                    let (rest, dropped) = without(data.get("mapRoles").map(String::as_str), role)?;
                    if dropped == 0 {
                        done = true;
                        break;
                    }
                    data.insert("mapRoles".into(), rest);
                    cx.progress("removing the node role from kube-system/aws-auth");
                    match api.replace(aws_auth::NAME, &PostParams::default(), &cm).await {
                        Ok(_) => {
                            done = true;
                            removed.push(format!("aws-auth mapRoles entry for {role}"));
                            break;
                        }
                        Err(kube::Error::Api(s)) if s.is_conflict() => cx.progress("aws-auth changed underneath; merging again"),
                        Err(e) => return Err(e).context("writing ConfigMap kube-system/aws-auth"),
                    }
                }
                if !done {
                    anyhow::bail!("kube-system/aws-auth kept changing while karpctl removed the node role; run `karpctl rollback` again");
                }
            }
            let mut out = json!({"nodeRoleArn": role, "removed": super::removed(cx.previous, &removed)});
            if o["entry"].is_object() && o["entry"]["ours"] != true {
                out["kept"] = json!([format!("access entry {} (not created by karpctl)", o["entry"]["arn"].as_str().unwrap_or(role))]);
            }
            Ok(out)
        })
    }
    fn outputs_from(&self, o: &Value) -> Value {
        let mut out = json!({"nodeRoleArn": o["nodeRoleArn"], "removed": []});
        if o["entry"].is_object() && o["entry"]["ours"] != true {
            out["kept"] = json!([format!("access entry {} (not created by karpctl)", o["entry"]["arn"].as_str().unwrap_or("?"))]);
        }
        super::unchanged(&o["previous"], out)
    }
}

// ---------------------------------------------------------------------------------------------
// Controller identity
// ---------------------------------------------------------------------------------------------

pub struct Identity {
    pub cluster: String,
    /// The controller role's name.
    pub role: String,
    /// The controller's namespace (its service account is `karpenter`).
    pub namespace: String,
    pub stack: String,
    pub deps: Vec<String>,
    pub iam: aws_sdk_iam::Client,
    pub eks: aws_sdk_eks::Client,
    pub cfn: aws_sdk_cloudformation::Client,
}

fn iam_err<E>(op: &'static str, e: &aws_sdk_iam::error::SdkError<E, aws_sdk_iam::config::http::HttpResponse>) -> AwsError
where
    E: aws_sdk_iam::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    AwsError::from_sdk(op, e)
}

/// IAM returns trust policies URL-encoded (some emulators do not).
fn decode(s: &str) -> String {
    if s.trim_start().starts_with('{') {
        return s.to_string();
    }
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

fn role_name_of(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

impl Identity {
    async fn role(&self) -> anyhow::Result<Value> {
        let out = self.iam.get_role().role_name(&self.role).send().await.map_err(|e| iam_err("iam:GetRole", &e));
        let role = crate::aws::found(out)?.and_then(|o| o.role);
        let Some(role) = role else { return Ok(json!({"exists": false})) };
        let tags = self.iam.list_role_tags().role_name(&self.role).send().await.map_err(|e| iam_err("iam:ListRoleTags", &e))?;
        let ours = tags.tags().iter().any(|t| t.key() == CLUSTER_TAG && t.value() == self.cluster);
        let attached = self.iam.list_attached_role_policies().role_name(&self.role).send().await.map_err(|e| iam_err("iam:ListAttachedRolePolicies", &e))?;
        let attached: Vec<String> = attached.attached_policies().iter().filter_map(|p| p.policy_arn().map(String::from)).collect();
        let inline = self.iam.list_role_policies().role_name(&self.role).send().await.map_err(|e| iam_err("iam:ListRolePolicies", &e))?;
        let profiles = self.iam.list_instance_profiles_for_role().role_name(&self.role).send().await.map_err(|e| iam_err("iam:ListInstanceProfilesForRole", &e))?;
        Ok(json!({
            "exists": true,
            "arn": role.arn(),
            "ours": ours,
            "attached": attached,
            "inline": inline.policy_names(),
            "instanceProfiles": profiles.instance_profiles().iter().map(|p| p.instance_profile_name()).collect::<Vec<_>>(),
        }))
    }

    /// The OIDC provider of the cluster's issuer, whether karpctl made it, and which other roles trust it.
    async fn oidc(&self, facts: &Value, deleting_role: bool) -> anyhow::Result<Value> {
        let Some(issuer) = facts["oidcIssuer"].as_str() else { return Ok(Value::Null) };
        let host = issuer.trim_start_matches("https://").to_string();
        let list = self.iam.list_open_id_connect_providers().send().await.map_err(|e| iam_err("iam:ListOpenIDConnectProviders", &e))?;
        let Some(arn) = list.open_id_connect_provider_list().iter().filter_map(|p| p.arn()).find(|a| a.ends_with(&format!("oidc-provider/{host}"))).map(String::from) else {
            return Ok(Value::Null);
        };
        let p = self.iam.get_open_id_connect_provider().open_id_connect_provider_arn(&arn).send().await.map_err(|e| iam_err("iam:GetOpenIDConnectProvider", &e))?;
        let ours = p.tags().iter().any(|t| t.key() == CLUSTER_TAG && t.value() == self.cluster);
        let mut users = Vec::new();
        if ours {
            let mut pages = self.iam.list_roles().into_paginator().send();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| iam_err("iam:ListRoles", &e))?;
                for r in page.roles() {
                    if deleting_role && r.role_name() == self.role {
                        continue;
                    }
                    let trust = r.assume_role_policy_document().map(decode).unwrap_or_default();
                    if trust.contains(&arn) || trust.contains(&format!("oidc-provider/{host}")) {
                        users.push(r.role_name().to_string());
                    }
                }
            }
        }
        Ok(json!({"arn": arn, "ours": ours, "usedBy": users}))
    }

    /// What `apply` will do, from the observed state.
    fn plan(o: &Value) -> (Vec<String>, Vec<String>, bool, bool) {
        let role = &o["role"];
        let associations: Vec<String> = o["associations"].as_array().into_iter().flatten().filter(|a| a["ours"] == true).filter_map(|a| a["id"].as_str().map(String::from)).collect();
        let delete_role = role["exists"] == true && role["ours"] == true;
        let detach: Vec<String> = if delete_role {
            strings(&role["attached"])
        } else {
            let stack: BTreeSet<String> = strings(&o["stackPolicies"]).into_iter().collect();
            strings(&role["attached"]).into_iter().filter(|p| stack.contains(p)).collect()
        };
        let oidc = o["oidcProvider"]["ours"] == true && o["oidcProvider"]["usedBy"].as_array().is_some_and(|u| u.is_empty());
        (associations, detach, delete_role, oidc)
    }
}

impl Step for Identity {
    fn id(&self) -> String {
        super::IDENTITY.into()
    }
    fn kind(&self) -> &'static str {
        "rollback-identity"
    }
    fn deps(&self) -> Vec<String> {
        self.deps.clone()
    }
    fn always_observe(&self) -> bool {
        true
    }
    fn inputs(&self) -> Value {
        json!({"role": self.role, "namespace": self.namespace, "serviceAccount": crate::steps::identity::SERVICE_ACCOUNT, "stack": self.stack})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let facts = cx.output(CLUSTER).cloned().unwrap_or(Value::Null);
            cx.progress(format!("reading role {}", self.role));
            let role = self.role().await?;
            let stack_policies = crate::steps::identity::stack_policies(stack_outputs(&self.cfn, &self.stack).await?.as_ref());
            cx.progress("ListPodIdentityAssociations");
            let list = self
                .eks
                .list_pod_identity_associations()
                .cluster_name(&self.cluster)
                .namespace(&self.namespace)
                .service_account(crate::steps::identity::SERVICE_ACCOUNT)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("eks:ListPodIdentityAssociations", &e))?;
            let mut associations = Vec::new();
            for a in list.associations() {
                let Some(id) = a.association_id() else { continue };
                let d = self
                    .eks
                    .describe_pod_identity_association()
                    .cluster_name(&self.cluster)
                    .association_id(id)
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk("eks:DescribePodIdentityAssociation", &e))?;
                let role_arn = d.association().and_then(|x| x.role_arn()).unwrap_or_default().to_string();
                associations.push(json!({"id": id, "roleArn": role_arn, "ours": role_name_of(&role_arn) == self.role}));
            }
            let deleting_role = role["exists"] == true && role["ours"] == true;
            let oidc = self.oidc(&facts, deleting_role).await?;
            Ok(json!({"role": role, "stackPolicies": stack_policies, "associations": associations, "oidcProvider": oidc, "previous": super::carried(cx)}))
        })
    }
    fn diff(&self, o: &Value, _cx: &StepCx<'_>) -> Change {
        let (associations, detach, delete_role, oidc) = Self::plan(o);
        let mut parts = Vec::new();
        let mut fields = Vec::new();
        for a in &associations {
            fields.push(FieldChange { field: format!("pod identity association {a}"), old: json!(format!("{}/karpenter", self.namespace)), new: Value::Null });
        }
        if !associations.is_empty() {
            parts.push(format!("delete the Pod Identity association of {}/karpenter", self.namespace));
        }
        for p in &detach {
            fields.push(FieldChange { field: format!("role {} policy", self.role), old: json!(p), new: Value::Null });
        }
        if delete_role {
            parts.push(format!("delete role {} (detach {} policy(ies) first)", self.role, detach.len()));
            fields.push(FieldChange { field: format!("role {}", self.role), old: o["role"]["arn"].clone(), new: Value::Null });
        } else if !detach.is_empty() {
            parts.push(format!("detach the stack's {} policy(ies) from role {} (karpctl did not create the role, so it stays)", detach.len(), self.role));
        }
        if oidc {
            parts.push("delete the OIDC provider karpctl created (no other role trusts it)".into());
            fields.push(FieldChange { field: "OIDC provider".into(), old: o["oidcProvider"]["arn"].clone(), new: Value::Null });
        }
        if parts.is_empty() {
            return Change::none();
        }
        Change::new(Action::Delete, parts.join("; ")).with_fields(fields)
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, o: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let (associations, detach, delete_role, oidc) = Self::plan(o);
            let mut removed = Vec::new();
            for id in &associations {
                cx.progress(format!("DeletePodIdentityAssociation {id}"));
                let out = self.eks.delete_pod_identity_association().cluster_name(&self.cluster).association_id(id).send().await;
                crate::aws::found(out.map_err(|e| AwsError::from_sdk("eks:DeletePodIdentityAssociation", &e)))?;
                removed.push(format!("pod identity association {id} ({}/karpenter)", self.namespace));
            }
            for p in &detach {
                cx.progress(format!("DetachRolePolicy {p}"));
                let out = self.iam.detach_role_policy().role_name(&self.role).policy_arn(p).send().await;
                crate::aws::found(out.map_err(|e| iam_err("iam:DetachRolePolicy", &e)))?;
                if !delete_role {
                    removed.push(format!("policy {p} from role {}", self.role));
                }
            }
            if delete_role {
                for p in strings(&o["role"]["inline"]) {
                    cx.progress(format!("DeleteRolePolicy {p}"));
                    self.iam.delete_role_policy().role_name(&self.role).policy_name(&p).send().await.map_err(|e| iam_err("iam:DeleteRolePolicy", &e))?;
                }
                for p in strings(&o["role"]["instanceProfiles"]) {
                    cx.progress(format!("RemoveRoleFromInstanceProfile {p}"));
                    self.iam
                        .remove_role_from_instance_profile()
                        .instance_profile_name(&p)
                        .role_name(&self.role)
                        .send()
                        .await
                        .map_err(|e| iam_err("iam:RemoveRoleFromInstanceProfile", &e))?;
                }
                cx.progress(format!("DeleteRole {}", self.role));
                let out = self.iam.delete_role().role_name(&self.role).send().await;
                crate::aws::found(out.map_err(|e| iam_err("iam:DeleteRole", &e))).with_context(|| format!("deleting role {}", self.role))?;
                removed.push(format!("IAM role {}", self.role));
            }
            if oidc {
                let arn = o["oidcProvider"]["arn"].as_str().unwrap_or_default();
                cx.progress("DeleteOpenIDConnectProvider");
                let out = self.iam.delete_open_id_connect_provider().open_id_connect_provider_arn(arn).send().await;
                crate::aws::found(out.map_err(|e| iam_err("iam:DeleteOpenIDConnectProvider", &e)))?;
                removed.push(format!("OIDC provider {arn}"));
            }
            Ok(json!({"removed": super::removed(cx.previous, &removed), "kept": kept(o, &self.role)}))
        })
    }
    fn outputs_from(&self, o: &Value) -> Value {
        super::unchanged(&o["previous"], json!({"removed": [], "kept": kept(o, &self.role)}))
    }
}

/// What the step leaves on purpose, and why.
fn kept(o: &Value, role: &str) -> Vec<String> {
    let mut out = Vec::new();
    if o["role"]["exists"] == true && o["role"]["ours"] != true {
        out.push(format!("IAM role {role} (not created by karpctl)"));
    }
    let users = strings(&o["oidcProvider"]["usedBy"]);
    if o["oidcProvider"]["ours"] == true && !users.is_empty() {
        out.push(format!("OIDC provider {} (trusted by {})", o["oidcProvider"]["arn"].as_str().unwrap_or("?"), users.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_node_role_leaves_map_roles() {
        let existing = "- rolearn: arn:aws:iam::1:role/ng\n  username: system:node:{{EC2PrivateDNSName}}\n  groups: [system:bootstrappers, system:nodes]\n\
                        - rolearn: arn:aws:iam::1:role/KarpenterNode\n  username: system:node:{{EC2PrivateDNSName}}\n\
                        - rolearn: arn:aws:iam::1:role/admin\n  username: admin\n  groups: [system:masters]\n";
        let (out, n) = without(Some(existing), "arn:aws:iam::1:role/KarpenterNode").unwrap();
        assert_eq!(n, 1);
        let roles: Vec<Value> = serde_yaml::from_str(&out).unwrap();
        assert_eq!(roles.len(), 2);
        assert_eq!(roles[0]["rolearn"], "arn:aws:iam::1:role/ng");
        assert_eq!(roles[1]["groups"], json!(["system:masters"]));
        assert_eq!(without(Some(&out), "arn:aws:iam::1:role/KarpenterNode").unwrap().1, 0);
        assert_eq!(without(None, "x").unwrap(), (String::new(), 0));
        assert!(without(Some("{not: a list}"), "x").is_err());
    }

    #[test]
    fn an_adopted_role_only_loses_the_stack_policies() {
        let o = json!({"role": {"exists": true, "ours": false, "attached": ["arn:p/Stack1", "arn:p/Theirs"]},
                       "stackPolicies": ["arn:p/Stack1", "arn:p/Stack2"], "associations": [{"id": "a-1", "ours": true}, {"id": "a-2", "ours": false}],
                       "oidcProvider": {"ours": true, "usedBy": ["other"], "arn": "arn:oidc"}});
        let (assoc, detach, delete, oidc) = Identity::plan(&o);
        assert_eq!(assoc, ["a-1"]);
        assert_eq!(detach, ["arn:p/Stack1"]);
        assert!(!delete && !oidc);
        assert_eq!(kept(&o, "R"), ["IAM role R (not created by karpctl)", "OIDC provider arn:oidc (trusted by other)"]);
        let mine = json!({"role": {"exists": true, "ours": true, "attached": ["arn:p/Stack1", "arn:p/Theirs"]}, "stackPolicies": [],
                          "oidcProvider": {"ours": true, "usedBy": [], "arn": "arn:oidc"}});
        let (_, detach, delete, oidc) = Identity::plan(&mine);
        assert_eq!(detach.len(), 2);
        assert!(delete && oidc);
    }

    #[test]
    fn role_arns() {
        assert_eq!(role_arn_from_cluster("arn:aws:eks:us-west-2:123:cluster/c", "N").as_deref(), Some("arn:aws:iam::123:role/N"));
        assert_eq!(role_name_of("arn:aws:iam::1:role/path/Name"), "Name");
    }
}
