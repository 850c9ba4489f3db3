/*!
Step `identity/<role>`: the Karpenter controller's AWS identity. EKS Pod Identity
(a role trusting pods.eks.amazonaws.com plus an association for the controller's
service account) or IRSA (the cluster's OIDC provider ensured and a role trusting
exactly `system:serviceaccount:<ns>:karpenter`); `auto` picks Pod Identity when
the eks-pod-identity-agent add-on is present. The role carries the stack's
controller policies, and nothing else karpctl did not attach.
*/

use std::collections::BTreeSet;

use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::aws::{Arn, AwsError};
use crate::config::types::IdentityMode;
use crate::engine::{Action, Change, FieldChange, Step, StepCx};

pub const SERVICE_ACCOUNT: &str = "karpenter";

pub struct ControllerIdentity {
    pub cluster: String,
    pub mode: IdentityMode,
    pub role_name: String,
    pub namespace: String,
    pub cluster_step: String,
    pub stack_step: String,
    pub tag: (String, String),
    pub iam: aws_sdk_iam::Client,
    pub eks: aws_sdk_eks::Client,
}

pub fn id(role: &str) -> String {
    format!("identity/{role}")
}

/// The controller policy ARNs the stack exports.
pub fn stack_policies(stack_outputs: Option<&Value>) -> BTreeSet<String> {
    stack_outputs
        .and_then(|o| o["outputs"].as_object())
        .map(|m| m.iter().filter(|(k, _)| k.ends_with("PolicyArn")).filter_map(|(_, v)| v.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// `arn:<partition>:eks:<region>:<account>:cluster/<name>` from the cluster facts.
fn cluster_arn(facts: &Value) -> Option<Arn<'_>> {
    Arn::parse(facts["arn"].as_str()?)
}

/// The controller role's trust policy: Pod Identity's service principal, or for
/// IRSA the cluster's OIDC provider limited to the controller's service account in
/// `namespace` and the STS audience. `facts` are the `cluster/<name>` step outputs
/// (`arn`, `oidcIssuer`).
pub fn trust_policy(mode: IdentityMode, namespace: &str, facts: &Value) -> anyhow::Result<Value> {
    Ok(match mode {
        IdentityMode::Irsa => {
            let issuer = facts["oidcIssuer"].as_str().ok_or_else(|| anyhow::anyhow!("IRSA needs the cluster's OIDC issuer; the cluster has none"))?;
            let host = issuer.trim_start_matches("https://");
            let Arn { partition, account, .. } =
                cluster_arn(facts).ok_or_else(|| anyhow::anyhow!("cannot read the account from the cluster ARN"))?;
            json!({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": format!("arn:{partition}:iam::{account}:oidc-provider/{host}")},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {
                    format!("{host}:aud"): "sts.amazonaws.com",
                    format!("{host}:sub"): format!("system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"),
                }}
            }]})
        }
        // Pod Identity passes the pod's cluster, namespace and service account as
        // session tags; requiring them keeps every other association in the
        // account (another cluster, another service account) from assuming the role.
        _ => {
            let cluster = cluster_arn(facts)
                .and_then(|a| a.resource.strip_prefix("cluster/"))
                .filter(|n| !n.is_empty())
                .ok_or_else(|| anyhow::anyhow!("cannot read the cluster name from the cluster ARN"))?;
            json!({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
                "Condition": {"StringEquals": {
                    "aws:RequestTag/eks-cluster-name": cluster,
                    "aws:RequestTag/kubernetes-namespace": namespace,
                    "aws:RequestTag/kubernetes-service-account": SERVICE_ACCOUNT,
                }}
            }]})
        }
    })
}

impl Step for ControllerIdentity {
    fn id(&self) -> String {
        id(&self.role_name)
    }
    fn kind(&self) -> &'static str {
        "controller-identity"
    }
    /// 2: the Pod Identity trust requires the session tags. An install made by an
    /// older karpctl has its role checked again on the next `up`, not only under
    /// `--refresh`.
    fn schema_version(&self) -> u32 {
        2
    }
    fn deps(&self) -> Vec<String> {
        vec![self.cluster_step.clone(), self.stack_step.clone()]
    }
    fn inputs(&self) -> Value {
        json!({"mode": self.mode, "role": self.role_name, "namespace": self.namespace, "serviceAccount": SERVICE_ACCOUNT})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let facts = cx.output(&self.cluster_step).cloned().unwrap_or(Value::Null);
            let mode = match self.mode {
                IdentityMode::Auto => {
                    cx.progress("checking for the eks-pod-identity-agent add-on");
                    // Only "no such add-on" means IRSA: a throttled or failed read must not switch modes.
                    let out = self.eks.describe_addon().cluster_name(&self.cluster).addon_name("eks-pod-identity-agent").send().await;
                    match crate::aws::found(out.map_err(|e| AwsError::from_sdk("eks:DescribeAddon", &e)))? {
                        Some(_) => IdentityMode::PodIdentity,
                        None => IdentityMode::Irsa,
                    }
                }
                m => m,
            };
            cx.progress(format!("reading role {}", self.role_name));
            let out = self.iam.get_role().role_name(&self.role_name).send().await.map_err(|e| AwsError::from_sdk("iam:GetRole", &e));
            let role = crate::aws::found(out)?.and_then(|o| o.role);
            let trust: Value = role
                .as_ref()
                .and_then(|r| r.assume_role_policy_document.as_deref())
                .map(percent_decode)
                .and_then(|d| serde_json::from_str(&d).ok())
                .unwrap_or(Value::Null);
            let mut attached = BTreeSet::new();
            if role.is_some() {
                let out = self.iam.list_attached_role_policies().role_name(&self.role_name).send().await.map_err(|e| AwsError::from_sdk("iam:ListAttachedRolePolicies", &e))?;
                attached.extend(out.attached_policies.unwrap_or_default().into_iter().filter_map(|p| p.policy_arn));
            }
            let mut association = Value::Null;
            let mut oidc_provider = Value::Null;
            match mode {
                IdentityMode::Irsa => {
                    let issuer = facts["oidcIssuer"].as_str().unwrap_or_default().trim_start_matches("https://").to_string();
                    let list = self.iam.list_open_id_connect_providers().send().await.map_err(|e| AwsError::from_sdk("iam:ListOpenIDConnectProviders", &e))?;
                    if let Some(p) = list.open_id_connect_provider_list.unwrap_or_default().into_iter().filter_map(|p| p.arn).find(|a| a.ends_with(&format!("oidc-provider/{issuer}"))) {
                        oidc_provider = Value::String(p);
                    }
                }
                _ => {
                    let list = self
                        .eks
                        .list_pod_identity_associations()
                        .cluster_name(&self.cluster)
                        .namespace(&self.namespace)
                        .service_account(SERVICE_ACCOUNT)
                        .send()
                        .await
                        .map_err(|e| AwsError::from_sdk("eks:ListPodIdentityAssociations", &e))?;
                    if let Some(a) = list.associations.unwrap_or_default().into_iter().next() {
                        let id = a.association_id.unwrap_or_default();
                        let d = self.eks.describe_pod_identity_association().cluster_name(&self.cluster).association_id(&id).send().await.map_err(|e| AwsError::from_sdk("eks:DescribePodIdentityAssociation", &e))?;
                        let a = d.association;
                        // The trust requires the session tags: an association with them off could not assume the role.
                        let session_tags = !a.as_ref().and_then(|a| a.disable_session_tags).unwrap_or(false);
                        association = json!({"id": id, "roleArn": a.and_then(|a| a.role_arn), "sessionTags": session_tags});
                    }
                }
            }
            Ok(json!({
                "mode": match mode { IdentityMode::Irsa => "irsa", _ => "pod-identity" },
                "roleArn": role.as_ref().map(|r| r.arn.clone()),
                "trust": trust,
                "attached": attached,
                "association": association,
                "oidcProvider": oidc_provider,
                "wantTrust": trust_policy(mode, &self.namespace, &facts)?,
                "wantPolicies": stack_policies(cx.output(&self.stack_step)),
            }))
        })
    }
    fn diff(&self, o: &Value, _cx: &StepCx<'_>) -> Change {
        let mut fields = Vec::new();
        if o["roleArn"].is_null() {
            return Change::new(Action::Create, format!("create role {} for the controller ({}), attach the stack's policies", self.role_name, o["mode"].as_str().unwrap_or("")));
        }
        if o["trust"] != o["wantTrust"] {
            fields.push(FieldChange { field: "trust policy".into(), old: o["trust"].clone(), new: o["wantTrust"].clone() });
        }
        let have: BTreeSet<&str> = o["attached"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        let want: BTreeSet<&str> = o["wantPolicies"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
        for p in want.difference(&have) {
            fields.push(FieldChange { field: "attached policies".into(), old: Value::Null, new: Value::String((*p).into()) });
        }
        if o["mode"] == "pod-identity" && o["association"]["roleArn"] != o["roleArn"] {
            fields.push(FieldChange { field: "pod identity association".into(), old: o["association"]["roleArn"].clone(), new: o["roleArn"].clone() });
        }
        if o["mode"] == "pod-identity" && o["association"]["sessionTags"] == false {
            fields.push(FieldChange { field: "pod identity session tags".into(), old: json!("disabled"), new: json!("enabled (the role's trust requires them)") });
        }
        if o["mode"] == "irsa" && o["oidcProvider"].is_null() {
            fields.push(FieldChange { field: "OIDC provider".into(), old: Value::Null, new: "created".into() });
        }
        if fields.is_empty() {
            Change::none()
        } else {
            Change::new(Action::Update, format!("update the controller identity ({})", o["mode"].as_str().unwrap_or(""))).with_fields(fields)
        }
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, o: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let trust = o["wantTrust"].to_string();
            let role_arn = match o["roleArn"].as_str() {
                Some(a) => {
                    if o["trust"] != o["wantTrust"] {
                        cx.progress("UpdateAssumeRolePolicy");
                        self.iam.update_assume_role_policy().role_name(&self.role_name).policy_document(&trust).send().await.map_err(|e| AwsError::from_sdk("iam:UpdateAssumeRolePolicy", &e))?;
                    }
                    a.to_string()
                }
                None => {
                    cx.progress(format!("CreateRole {}", self.role_name));
                    let tag = aws_sdk_iam::types::Tag::builder().key(&self.tag.0).value(&self.tag.1).build()?;
                    let out = self
                        .iam
                        .create_role()
                        .role_name(&self.role_name)
                        .assume_role_policy_document(&trust)
                        .description("Karpenter controller (managed by karpctl)")
                        .tags(tag)
                        .send()
                        .await
                        .map_err(|e| AwsError::from_sdk("iam:CreateRole", &e))?;
                    out.role.map(|r| r.arn).ok_or_else(|| anyhow::anyhow!("CreateRole returned no role"))?
                }
            };
            let have: BTreeSet<&str> = o["attached"].as_array().into_iter().flatten().filter_map(|v| v.as_str()).collect();
            for p in o["wantPolicies"].as_array().into_iter().flatten().filter_map(|v| v.as_str()) {
                if !have.contains(p) {
                    cx.progress(format!("AttachRolePolicy {p}"));
                    self.iam.attach_role_policy().role_name(&self.role_name).policy_arn(p).send().await.map_err(|e| AwsError::from_sdk("iam:AttachRolePolicy", &e))?;
                }
            }
            let mut out = json!({"mode": o["mode"], "roleName": self.role_name, "roleArn": role_arn});
            if o["mode"] == "irsa" {
                let provider = match o["oidcProvider"].as_str() {
                    Some(p) => p.to_string(),
                    None => {
                        let facts = cx.output(&self.cluster_step).cloned().unwrap_or(Value::Null);
                        let issuer = facts["oidcIssuer"].as_str().unwrap_or_default();
                        cx.progress("CreateOpenIDConnectProvider");
                        let tag = aws_sdk_iam::types::Tag::builder().key(&self.tag.0).value(&self.tag.1).build()?;
                        let r = self.iam.create_open_id_connect_provider().url(issuer).client_id_list("sts.amazonaws.com").tags(tag).send().await.map_err(|e| AwsError::from_sdk("iam:CreateOpenIDConnectProvider", &e))?;
                        r.open_id_connect_provider_arn.unwrap_or_default()
                    }
                };
                out["oidcProviderArn"] = Value::String(provider);
            } else {
                let tags_on = o["association"]["sessionTags"] != false;
                let assoc = match (o["association"]["id"].as_str(), o["association"]["roleArn"].as_str()) {
                    (Some(id), Some(r)) if r == role_arn && tags_on => id.to_string(),
                    (Some(id), _) => {
                        cx.progress("UpdatePodIdentityAssociation");
                        self.eks
                            .update_pod_identity_association()
                            .cluster_name(&self.cluster)
                            .association_id(id)
                            .role_arn(&role_arn)
                            .disable_session_tags(false)
                            .send()
                            .await
                            .map_err(|e| AwsError::from_sdk("eks:UpdatePodIdentityAssociation", &e))?;
                        id.to_string()
                    }
                    (None, _) => {
                        cx.progress("CreatePodIdentityAssociation");
                        let r = self
                            .eks
                            .create_pod_identity_association()
                            .cluster_name(&self.cluster)
                            .namespace(&self.namespace)
                            .service_account(SERVICE_ACCOUNT)
                            .role_arn(&role_arn)
                            .tags(&self.tag.0, &self.tag.1)
                            .send()
                            .await
                            .map_err(|e| AwsError::from_sdk("eks:CreatePodIdentityAssociation", &e))?;
                        r.association.and_then(|a| a.association_id).unwrap_or_default()
                    }
                };
                out["associationId"] = Value::String(assoc);
            }
            Ok(out)
        })
    }
    fn outputs_from(&self, o: &Value) -> Value {
        let mut out = json!({"mode": o["mode"], "roleName": self.role_name, "roleArn": o["roleArn"]});
        if o["mode"] == "irsa" {
            out["oidcProviderArn"] = o["oidcProvider"].clone();
        } else {
            out["associationId"] = o["association"]["id"].clone();
        }
        out
    }
}

/// IAM returns trust policies URL-encoded (some emulators do not).
fn percent_decode(s: &str) -> String {
    if s.trim_start().starts_with('{') {
        return s.to_string();
    }
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::diff_table::{check, quiet_cx, Row};

    #[test]
    fn diff_table() {
        let s = ControllerIdentity {
            cluster: "demo".into(),
            mode: IdentityMode::Auto,
            role_name: "KarpenterController-demo".into(),
            namespace: "kube-system".into(),
            cluster_step: "cluster/demo".into(),
            stack_step: "cfn-stack/Karpenter-demo".into(),
            tag: ("karpctl.io/cluster".into(), "demo".into()),
            iam: aws_sdk_iam::Client::from_conf(aws_sdk_iam::Config::builder().behavior_version_latest().build()),
            eks: aws_sdk_eks::Client::from_conf(aws_sdk_eks::Config::builder().behavior_version_latest().build()),
        };
        let facts = json!({"arn": "arn:aws:eks:us-east-1:111122223333:cluster/demo", "oidcIssuer": "https://oidc.eks.us-east-1.amazonaws.com/id/ABC"});
        let pod_trust = trust_policy(IdentityMode::PodIdentity, "kube-system", &facts).unwrap();
        let irsa_trust = trust_policy(IdentityMode::Irsa, "kube-system", &facts).unwrap();
        let role = "arn:aws:iam::111122223333:role/KarpenterController-demo";
        let (p1, p2) = ("arn:aws:iam::111122223333:policy/KarpenterControllerNodeLifecyclePolicy-demo", "arn:aws:iam::111122223333:policy/KarpenterControllerIAMPolicy-demo");
        let provider = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABC";
        // What observe returns when everything is as wanted.
        let pod = json!({"mode": "pod-identity", "roleArn": role, "trust": pod_trust, "attached": [p1, p2],
                         "association": {"id": "a-1", "roleArn": role, "sessionTags": true}, "oidcProvider": null, "wantTrust": pod_trust, "wantPolicies": [p1, p2]});
        let irsa = json!({"mode": "irsa", "roleArn": role, "trust": irsa_trust, "attached": [p1, p2],
                          "association": null, "oidcProvider": provider, "wantTrust": irsa_trust, "wantPolicies": [p1, p2]});
        let with = |base: &Value, edits: &[(&str, Value)]| -> Value {
            let mut o = base.clone();
            for (k, v) in edits {
                let mut at = &mut o;
                for part in k.split('.') {
                    at = &mut at[part];
                }
                *at = v.clone();
            }
            o
        };
        let old_pod_trust = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
                                   "Action": ["sts:AssumeRole", "sts:TagSession"]}]});
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("pod identity: role absent", with(&pod, &[("roleArn", Value::Null), ("trust", Value::Null), ("attached", json!([])), ("association", Value::Null)]),
             Action::Create, false, "create role KarpenterController-demo for the controller (pod-identity), attach the stack's policies", &[]),
            ("irsa: role absent", with(&irsa, &[("roleArn", Value::Null), ("trust", Value::Null), ("attached", json!([])), ("oidcProvider", Value::Null)]),
             Action::Create, false, "create role KarpenterController-demo for the controller (irsa)", &[]),
            ("pod identity: as wanted", pod.clone(), Action::None, false, "up to date", &[]),
            ("irsa: as wanted", irsa.clone(), Action::None, false, "up to date", &[]),
            ("extra policy attached by someone else", with(&pod, &[("attached", json!([p1, p2, "arn:aws:iam::aws:policy/ReadOnlyAccess"]))]),
             Action::None, false, "up to date", &[]),
            ("no stack policies yet", with(&pod, &[("attached", json!([])), ("wantPolicies", json!([]))]), Action::None, false, "up to date", &[]),
            ("trust without the session tag conditions", with(&pod, &[("trust", old_pod_trust.clone())]),
             Action::Update, false, "update the controller identity (pod-identity)", &["trust policy"]),
            ("irsa trust for another namespace", with(&irsa, &[("trust", trust_policy(IdentityMode::Irsa, "karpenter", &facts).unwrap())]),
             Action::Update, false, "update the controller identity (irsa)", &["trust policy"]),
            ("trust unreadable", with(&irsa, &[("trust", Value::Null)]), Action::Update, false, "(irsa)", &["trust policy"]),
            ("one policy missing", with(&pod, &[("attached", json!([p2]))]), Action::Update, false, "(pod-identity)", &["attached policies"]),
            ("no policy attached", with(&irsa, &[("attached", json!([]))]), Action::Update, false, "(irsa)", &["attached policies", "attached policies"]),
            ("no association", with(&pod, &[("association", Value::Null)]), Action::Update, false, "(pod-identity)", &["pod identity association"]),
            ("association to another role", with(&pod, &[("association.roleArn", json!("arn:aws:iam::111122223333:role/other"))]),
             Action::Update, false, "(pod-identity)", &["pod identity association"]),
            ("association without session tags", with(&pod, &[("association.sessionTags", json!(false))]),
             Action::Update, false, "(pod-identity)", &["pod identity session tags"]),
            ("irsa: no OIDC provider", with(&irsa, &[("oidcProvider", Value::Null)]), Action::Update, false, "(irsa)", &["OIDC provider"]),
            ("irsa ignores the association", with(&irsa, &[("association", json!({"id": "a-1", "roleArn": "x", "sessionTags": false}))]),
             Action::None, false, "up to date", &[]),
            ("pod identity ignores the OIDC provider", with(&pod, &[("oidcProvider", Value::Null)]), Action::None, false, "up to date", &[]),
            ("everything wrong", with(&pod, &[("trust", old_pod_trust), ("attached", json!([p1])), ("association.roleArn", Value::Null), ("association.sessionTags", json!(false))]),
             Action::Update, false, "update the controller identity (pod-identity)",
             &["trust policy", "attached policies", "pod identity association", "pod identity session tags"]),
        ];
        let cx = quiet_cx(None);
        for (name, observed, action, destructive, summary, fields) in rows {
            let c = s.diff(&observed, &cx);
            check(name, &c, action, destructive, summary, fields);
        }
        // The missing policies are named, in order.
        let c = s.diff(&with(&irsa, &[("attached", json!([]))]), &cx);
        let new: Vec<&Value> = c.fields.iter().map(|f| &f.new).collect();
        assert_eq!(new, [&json!(p2), &json!(p1)]);
    }
}
