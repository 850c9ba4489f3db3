/*!
Step `aws-auth/<cluster>`: when node access uses the `aws-auth` ConfigMap
(clusters in CONFIG_MAP authentication mode), maps the node role so Karpenter
nodes can join. The mapping is merged into `mapRoles` with optimistic
concurrency (resourceVersion): every other entry is kept as it is. With an
access entry it does nothing.
*/

use std::sync::Arc;

use anyhow::Context as _;
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

use crate::engine::{Action, Change, FieldChange, Step, StepCx};
use crate::kube::Connector;

pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "aws-auth";
pub const NODE_USERNAME: &str = "system:node:{{EC2PrivateDNSName}}";
pub const NODE_GROUPS: [&str; 2] = ["system:bootstrappers", "system:nodes"];

pub struct AwsAuth {
    pub cluster: String,
    pub cluster_step: String,
    pub node_access_step: String,
    pub conn: Arc<Connector>,
}

pub fn id(cluster: &str) -> String {
    format!("aws-auth/{cluster}")
}

/// The node role mapping for `role_arn`.
pub fn entry(role_arn: &str) -> serde_yaml::Value {
    serde_yaml::to_value(json!({"rolearn": role_arn, "username": NODE_USERNAME, "groups": NODE_GROUPS})).expect("entry serializes")
}

/// `mapRoles` with `role_arn` mapped for nodes; other entries untouched.
pub fn merged(map_roles: Option<&str>, role_arn: &str) -> anyhow::Result<String> {
    let mut roles: Vec<serde_yaml::Value> = match map_roles.map(str::trim) {
        None | Some("") => Vec::new(),
        Some(s) => serde_yaml::from_str(s).context("the aws-auth ConfigMap's mapRoles is not a YAML list; fix it by hand first")?,
    };
    let want = entry(role_arn);
    let pos = roles.iter().position(|r| r.get("rolearn").and_then(|v| v.as_str()) == Some(role_arn));
    match pos {
        Some(i) => roles[i] = want,
        None => roles.push(want),
    }
    Ok(serde_yaml::to_string(&roles)?)
}

/// The current mapping of `role_arn`, if any.
pub fn mapped(map_roles: Option<&str>, role_arn: &str) -> Option<Value> {
    let roles: Vec<Value> = serde_yaml::from_str(map_roles?).ok()?;
    roles.into_iter().find(|r| r["rolearn"] == role_arn)
}

impl AwsAuth {
    fn role_arn<'a>(&self, cx: &'a StepCx<'a>) -> Option<&'a str> {
        let na = cx.output(&self.node_access_step)?;
        (na["mode"] == "aws-auth").then(|| na["nodeRoleArn"].as_str()).flatten()
    }
}

impl Step for AwsAuth {
    fn id(&self) -> String {
        id(&self.cluster)
    }
    fn kind(&self) -> &'static str {
        "aws-auth"
    }
    fn layer(&self) -> crate::engine::Layer {
        crate::engine::Layer::Kubernetes
    }
    fn deps(&self) -> Vec<String> {
        vec![self.cluster_step.clone(), self.node_access_step.clone()]
    }
    fn inputs(&self) -> Value {
        json!({"username": NODE_USERNAME, "groups": NODE_GROUPS})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let Some(role) = self.role_arn(cx) else {
                return Ok(json!({"needed": false}));
            };
            let client = self.conn.client(cx.output(&self.cluster_step)).await?;
            let api: Api<ConfigMap> = Api::namespaced(client, NAMESPACE);
            let cm = api.get_opt(NAME).await.context("reading ConfigMap kube-system/aws-auth")?;
            let roles = cm.as_ref().and_then(|c| c.data.as_ref()).and_then(|d| d.get("mapRoles")).cloned();
            Ok(json!({"needed": true, "roleArn": role, "exists": cm.is_some(), "mapping": mapped(roles.as_deref(), role)}))
        })
    }
    fn diff(&self, observed: &Value, _cx: &StepCx<'_>) -> Change {
        if observed["needed"] != true {
            return Change::none();
        }
        let role = observed["roleArn"].as_str().unwrap_or_default();
        let want = serde_json::to_value(entry(role)).expect("entry is JSON");
        if observed["mapping"] == want {
            return Change::none();
        }
        let action = if observed["exists"] == true { Action::Update } else { Action::Create };
        Change::new(action, format!("map node role {role} in kube-system/aws-auth"))
            .with_fields(vec![FieldChange { field: "mapRoles".into(), old: observed["mapping"].clone(), new: want }])
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, observed: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let role = observed["roleArn"].as_str().unwrap_or_default();
            let client = self.conn.client(cx.output(&self.cluster_step)).await?;
            let api: Api<ConfigMap> = Api::namespaced(client, NAMESPACE);
            // Read-modify-write with the resourceVersion: a concurrent writer makes
            // the write fail with 409 and we merge again on top of theirs.
            for _ in 0..5 {
                let cm = api.get_opt(NAME).await.context("reading ConfigMap kube-system/aws-auth")?;
                let result = match cm {
                    Some(mut cm) => {
                        let data = cm.data.get_or_insert_with(Default::default);
                        let roles = merged(data.get("mapRoles").map(String::as_str), role)?;
                        data.insert("mapRoles".into(), roles);
                        api.replace(NAME, &PostParams::default(), &cm).await
                    }
                    None => {
                        let cm: ConfigMap = serde_json::from_value(json!({
                            "metadata": {"name": NAME, "namespace": NAMESPACE},
                            "data": {"mapRoles": merged(None, role)?}
                        }))?;
                        api.create(&PostParams::default(), &cm).await
                    }
                };
                match result {
                    Ok(_) => return Ok(json!({"needed": true, "roleArn": role, "mapped": true})),
                    Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => {
                        cx.progress("aws-auth changed underneath; merging again");
                        continue;
                    }
                    Err(e) => return Err(e).context("writing ConfigMap kube-system/aws-auth"),
                }
            }
            anyhow::bail!("kube-system/aws-auth kept changing while karpctl merged the node role; run `karpctl up` again")
        })
    }
    fn outputs_from(&self, observed: &Value) -> Value {
        if observed["needed"] == true {
            json!({"needed": true, "roleArn": observed["roleArn"], "mapped": true})
        } else {
            json!({"needed": false})
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::diff_table::{check, quiet_cx, Row};

    #[test]
    fn merge_keeps_other_entries_and_replaces_ours() {
        let existing = "- rolearn: arn:aws:iam::1:role/ng\n  username: system:node:{{EC2PrivateDNSName}}\n  groups: [system:bootstrappers, system:nodes]\n\
                        - rolearn: arn:aws:iam::1:role/admin\n  username: admin\n  groups: [system:masters]\n\
                        - rolearn: arn:aws:iam::1:role/KarpenterNode\n  username: wrong\n";
        let out = merged(Some(existing), "arn:aws:iam::1:role/KarpenterNode").unwrap();
        let roles: Vec<Value> = serde_yaml::from_str(&out).unwrap();
        assert_eq!(roles.len(), 3);
        assert_eq!(roles[1]["username"], "admin");
        assert_eq!(roles[1]["groups"], json!(["system:masters"]));
        assert_eq!(roles[2]["username"], NODE_USERNAME);
        assert_eq!(mapped(Some(&out), "arn:aws:iam::1:role/KarpenterNode").unwrap()["groups"], json!(NODE_GROUPS));
        assert!(merged(Some("{not: a list}"), "x").is_err());
        assert_eq!(serde_yaml::from_str::<Vec<Value>>(&merged(None, "r").unwrap()).unwrap().len(), 1);
    }

    #[test]
    fn diff_table() {
        let s = AwsAuth {
            cluster: "c".into(),
            cluster_step: "cluster/c".into(),
            node_access_step: "node-access/c".into(),
            conn: Arc::new(Connector::new(&Default::default(), aws_config::SdkConfig::builder().build(), "c")),
        };
        let role = "arn:aws:iam::1:role/KarpenterNode";
        let want = serde_json::to_value(entry(role)).unwrap();
        let wrong = json!({"rolearn": role, "username": "wrong", "groups": ["system:nodes"]});
        let rows: Vec<Row> = vec![
            ("access entry: not needed", json!({"needed": false}), Action::None, false, "up to date", &[]),
            ("nothing observed", json!({}), Action::None, false, "up to date", &[]),
            ("mapped as wanted", json!({"needed": true, "roleArn": role, "exists": true, "mapping": want}), Action::None, false, "up to date", &[]),
            ("no ConfigMap", json!({"needed": true, "roleArn": role, "exists": false, "mapping": null}), Action::Create, false,
             "map node role arn:aws:iam::1:role/KarpenterNode in kube-system/aws-auth", &["mapRoles"]),
            ("ConfigMap without our role", json!({"needed": true, "roleArn": role, "exists": true, "mapping": null}), Action::Update, false,
             "map node role arn:aws:iam::1:role/KarpenterNode", &["mapRoles"]),
            ("role mapped wrongly", json!({"needed": true, "roleArn": role, "exists": true, "mapping": wrong}), Action::Update, false,
             "in kube-system/aws-auth", &["mapRoles"]),
        ];
        let cx = quiet_cx(None);
        for (name, observed, action, destructive, summary, fields) in rows {
            let c = s.diff(&observed, &cx);
            check(name, &c, action, destructive, summary, fields);
            if let Some(f) = c.fields.first() {
                assert_eq!((&f.old, &f.new), (&observed["mapping"], &want), "{name}: mapRoles old/new");
            }
        }
    }
}
