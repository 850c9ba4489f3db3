/*!
Step `node-access/<cluster>`: lets nodes launched with the stack's node role join
the cluster. An EC2_LINUX access entry when the cluster's authentication mode
allows access entries (API or API_AND_CONFIG_MAP); otherwise the decision to use
an aws-auth mapping, which the Kubernetes steps apply, merging with other entries.
*/

use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::aws::AwsError;
use crate::config::types::NodeAccessMode;
use crate::engine::{Action, Change, Step, StepCx};

pub struct NodeAccess {
    pub cluster: String,
    pub mode: NodeAccessMode,
    pub cluster_step: String,
    pub stack_step: String,
    pub tag: (String, String),
    pub eks: aws_sdk_eks::Client,
}

/// Why a configured node-access mode cannot work on a cluster, and the way out.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub detail: String,
    pub why: &'static str,
    pub fix: String,
}

/// The one rule for node access, shared by this step and `doctor`: which mechanism
/// (`access-entry` or `aws-auth`) the config and the cluster's authentication mode give.
pub fn decide(mode: NodeAccessMode, auth: &str, cluster: &str) -> Result<&'static str, Refusal> {
    let entries_allowed = auth != "CONFIG_MAP";
    match mode {
        NodeAccessMode::AccessEntry if !entries_allowed => Err(Refusal {
            detail: format!("nodeAccess.mode is access-entry but cluster {cluster} uses authentication mode {auth}"),
            why: "access entries need API or API_AND_CONFIG_MAP",
            fix: format!("aws eks update-cluster-config --name {cluster} --access-config authenticationMode=API_AND_CONFIG_MAP"),
        }),
        NodeAccessMode::AwsAuth if auth == "API" => Err(Refusal {
            detail: format!("nodeAccess.mode is aws-auth but cluster {cluster} ignores aws-auth (authentication mode API)"),
            why: "nodes would never join",
            fix: "use nodeAccess.mode: access-entry (or auto)".into(),
        }),
        NodeAccessMode::AwsAuth => Ok("aws-auth"),
        NodeAccessMode::Auto if !entries_allowed => Ok("aws-auth"),
        _ => Ok("access-entry"),
    }
}

pub fn id(cluster: &str) -> String {
    format!("node-access/{cluster}")
}

impl NodeAccess {
    /// The stack's node role, or None while `plan` does not know it yet (stack to be created).
    fn node_role_arn(&self, cx: &StepCx<'_>) -> anyhow::Result<Option<String>> {
        let out = cx.output(&self.stack_step);
        if out.and_then(Value::as_str) == Some(crate::engine::runner::KNOWN_AFTER_APPLY) {
            return Ok(None);
        }
        out.and_then(|o| o["outputs"]["NodeRoleArn"].as_str())
            .map(|s| Some(s.to_string()))
            .ok_or_else(|| anyhow::anyhow!("the stack reports no NodeRoleArn output"))
    }
}

impl Step for NodeAccess {
    fn id(&self) -> String {
        id(&self.cluster)
    }
    fn kind(&self) -> &'static str {
        "node-access"
    }
    fn deps(&self) -> Vec<String> {
        vec![self.cluster_step.clone(), self.stack_step.clone()]
    }
    fn inputs(&self) -> Value {
        json!({"mode": self.mode, "type": "EC2_LINUX"})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let role = self.node_role_arn(cx)?;
            let auth = cx.output(&self.cluster_step).and_then(|f| f["authenticationMode"].as_str()).unwrap_or("CONFIG_MAP").to_string();
            let mode = decide(self.mode, &auth, &self.cluster).map_err(|r| anyhow::anyhow!("{} ({}); run `{}`", r.detail, r.why, r.fix))?;
            let Some(role) = role else {
                // `plan` before the stack exists: the entry is certainly new.
                return Ok(json!({"mode": mode, "nodeRoleArn": crate::engine::runner::KNOWN_AFTER_APPLY, "authenticationMode": auth, "entry": null}));
            };
            if mode == "aws-auth" {
                return Ok(json!({"mode": mode, "nodeRoleArn": role, "authenticationMode": auth}));
            }
            cx.progress("DescribeAccessEntry");
            let out = self.eks.describe_access_entry().cluster_name(&self.cluster).principal_arn(&role).send().await;
            let out = crate::aws::found(out.map_err(|e| AwsError::from_sdk("eks:DescribeAccessEntry", &e)))?;
            let entry = out.and_then(|o| o.access_entry).map(|e| json!({"type": e.r#type, "arn": e.access_entry_arn}));
            Ok(json!({"mode": mode, "nodeRoleArn": role, "authenticationMode": auth, "entry": entry}))
        })
    }
    fn diff(&self, o: &Value, _cx: &StepCx<'_>) -> Change {
        if o["mode"] == "aws-auth" {
            return Change::none();
        }
        match o["entry"]["type"].as_str() {
            None => Change::new(Action::Create, format!("create an EC2_LINUX access entry for {}", o["nodeRoleArn"].as_str().unwrap_or(""))),
            Some("EC2_LINUX") => Change::none(),
            Some(other) => Change::new(
                Action::Replace,
                format!("the node role's access entry has type {other}; nodes need EC2_LINUX (the type cannot change, so it is deleted and recreated)"),
            )
            .destructive(),
        }
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, o: &'a Value, change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let role = o["nodeRoleArn"].as_str().unwrap_or_default();
            if change.action == Action::Replace {
                cx.progress("DeleteAccessEntry");
                self.eks.delete_access_entry().cluster_name(&self.cluster).principal_arn(role).send().await.map_err(|e| AwsError::from_sdk("eks:DeleteAccessEntry", &e))?;
            }
            cx.progress("CreateAccessEntry");
            let out = self
                .eks
                .create_access_entry()
                .cluster_name(&self.cluster)
                .principal_arn(role)
                .r#type("EC2_LINUX")
                .tags(&self.tag.0, &self.tag.1)
                .send()
                .await
                .map_err(|e| AwsError::from_sdk("eks:CreateAccessEntry", &e))?;
            Ok(json!({"mode": "access-entry", "nodeRoleArn": role, "accessEntryArn": out.access_entry.and_then(|e| e.access_entry_arn)}))
        })
    }
    fn outputs_from(&self, o: &Value) -> Value {
        if o["mode"] == "aws-auth" {
            json!({"mode": "aws-auth", "nodeRoleArn": o["nodeRoleArn"], "note": "the aws-auth mapping is applied with the Kubernetes steps"})
        } else {
            json!({"mode": "access-entry", "nodeRoleArn": o["nodeRoleArn"], "accessEntryArn": o["entry"]["arn"]})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::diff_table::{check, quiet_cx, Row};

    #[test]
    fn diff_table() {
        let s = NodeAccess {
            cluster: "demo".into(),
            mode: NodeAccessMode::Auto,
            cluster_step: "cluster/demo".into(),
            stack_step: "cfn-stack/Karpenter-demo".into(),
            tag: ("karpctl.io/cluster".into(), "demo".into()),
            eks: aws_sdk_eks::Client::from_conf(aws_sdk_eks::Config::builder().behavior_version_latest().build()),
        };
        let role = "arn:aws:iam::111122223333:role/KarpenterNodeRole-demo";
        let later = crate::engine::runner::KNOWN_AFTER_APPLY;
        let entry_arn = "arn:aws:eks:us-east-1:111122223333:access-entry/demo/role/111122223333/KarpenterNodeRole-demo/x";
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("aws-auth mapping (applied by the Kubernetes steps)", json!({"mode": "aws-auth", "nodeRoleArn": role, "authenticationMode": "CONFIG_MAP"}),
             Action::None, false, "up to date", &[]),
            ("aws-auth before the stack exists", json!({"mode": "aws-auth", "nodeRoleArn": later, "authenticationMode": "CONFIG_MAP", "entry": null}),
             Action::None, false, "up to date", &[]),
            ("plan before the stack exists", json!({"mode": "access-entry", "nodeRoleArn": later, "authenticationMode": "API", "entry": null}),
             Action::Create, false, "create an EC2_LINUX access entry for (known after apply)", &[]),
            ("no access entry", json!({"mode": "access-entry", "nodeRoleArn": role, "authenticationMode": "API_AND_CONFIG_MAP", "entry": null}),
             Action::Create, false, "create an EC2_LINUX access entry for arn:aws:iam::111122223333:role/KarpenterNodeRole-demo", &[]),
            ("entry without a type", json!({"mode": "access-entry", "nodeRoleArn": role, "authenticationMode": "API", "entry": {"type": null, "arn": entry_arn}}),
             Action::Create, false, "create an EC2_LINUX access entry", &[]),
            ("EC2_LINUX entry", json!({"mode": "access-entry", "nodeRoleArn": role, "authenticationMode": "API", "entry": {"type": "EC2_LINUX", "arn": entry_arn}}),
             Action::None, false, "up to date", &[]),
            ("STANDARD entry", json!({"mode": "access-entry", "nodeRoleArn": role, "authenticationMode": "API", "entry": {"type": "STANDARD", "arn": entry_arn}}),
             Action::Replace, true, "has type STANDARD; nodes need EC2_LINUX", &[]),
            ("EC2_WINDOWS entry", json!({"mode": "access-entry", "nodeRoleArn": role, "authenticationMode": "API_AND_CONFIG_MAP", "entry": {"type": "EC2_WINDOWS", "arn": entry_arn}}),
             Action::Replace, true, "deleted and recreated", &[]),
        ];
        let cx = quiet_cx(None);
        for (name, observed, action, destructive, summary, fields) in rows {
            check(name, &s.diff(&observed, &cx), action, destructive, summary, fields);
        }
    }
}
