/*!
Step `ready/<cluster>`: waits until every EC2NodeClass and NodePool reports
Ready for its current generation, with progress and a timeout. On timeout the
error carries each object's failing conditions (AMI not found, subnets not
found, …), which is where Karpenter explains itself. A class the controller
refuses for good (`ValidationSucceeded=False` for a spec reason) fails at once.
*/

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use kube::api::{Api, DynamicObject};
use serde_json::{json, Value};

use crate::engine::{Action, Change, FieldChange, Step, StepCx};
use crate::kube::apply;
use crate::kube::Connector;

pub struct Readiness {
    pub cluster: String,
    pub classes: Vec<String>,
    pub pools: Vec<String>,
    pub cluster_step: String,
    pub objects_step: String,
    /// Only Karpenter makes them Ready: wait after its rollout.
    pub controller_step: String,
    pub timeout: Duration,
    pub conn: Arc<Connector>,
}

/// How a refused class's reason starts.
const REFUSED: &str = "the Karpenter controller refuses it: ";

pub fn id(cluster: &str) -> String {
    format!("ready/{cluster}")
}

impl Readiness {
    /// (reference, ready, why not) for every object; why starts with [`REFUSED`] for a
    /// class the controller refuses (waiting cannot fix it).
    async fn check(&self, client: &kube::Client) -> anyhow::Result<Vec<(String, bool, String)>> {
        let mut out = Vec::new();
        let kinds = [(apply::node_class_resource(), &self.classes), (apply::node_pool_resource(), &self.pools)];
        for (ar, names) in kinds {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
            for n in names {
                let r = format!("{}/{n}", ar.kind);
                let obj = match api.get_opt(n).await {
                    Ok(o) => o.map(|o| serde_json::to_value(o).expect("serializes")),
                    Err(kube::Error::Api(s)) if crate::kube::not_found(&s) => None,
                    Err(e) => return Err(e.into()),
                };
                match obj {
                    Some(o) => match apply::refused(&o) {
                        Some(why) => out.push((r, false, format!("{REFUSED}{why}"))),
                        None => out.push((r, apply::is_ready(&o), apply::why_not_ready(&o))),
                    },
                    None => out.push((r, false, "not created yet".into())),
                }
            }
        }
        Ok(out)
    }
}

impl Step for Readiness {
    fn id(&self) -> String {
        id(&self.cluster)
    }
    fn kind(&self) -> &'static str {
        "readiness"
    }
    fn layer(&self) -> crate::engine::Layer {
        crate::engine::Layer::Kubernetes
    }
    fn deps(&self) -> Vec<String> {
        vec![self.cluster_step.clone(), self.objects_step.clone(), self.controller_step.clone()]
    }
    fn inputs(&self) -> Value {
        json!({"classes": self.classes, "pools": self.pools})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(&self.cluster_step)).await?;
            let checks = self.check(&client).await?;
            let waiting: Vec<Value> = checks.iter().filter(|c| !c.1).map(|(r, _, why)| json!({"ref": r, "why": why})).collect();
            Ok(json!({"waiting": waiting}))
        })
    }
    fn diff(&self, observed: &Value, _cx: &StepCx<'_>) -> Change {
        let waiting: Vec<&Value> = observed["waiting"].as_array().into_iter().flatten().collect();
        if waiting.is_empty() {
            return Change::none();
        }
        let fields = waiting.iter().map(|w| FieldChange { field: format!("{}.Ready", w["ref"].as_str().unwrap_or("?")), old: w["why"].clone(), new: json!("True") }).collect();
        Change::new(Action::Update, format!("wait for {} object(s) to become Ready", waiting.len())).with_fields(fields)
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, _observed: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let client = self.conn.client(cx.output(&self.cluster_step)).await?;
            let started = tokio::time::Instant::now();
            let mut pace = crate::kube::Pace::new();
            loop {
                let checks = match self.check(&client).await {
                    Ok(c) => c,
                    // The API server restarting or overloaded: keep waiting until the timeout.
                    Err(e) if crate::kube::is_transient(&e) && started.elapsed() < self.timeout => {
                        cx.progress(format!("could not read the classes and pools ({e:#}); asking again"));
                        pace.wait().await;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let waiting: Vec<&(String, bool, String)> = checks.iter().filter(|c| !c.1).collect();
                let refused: Vec<String> = waiting.iter().filter(|w| w.2.starts_with(REFUSED)).map(|(r, _, why)| format!("{r}: {why}")).collect();
                if !refused.is_empty() {
                    anyhow::bail!(
                        "{}\nwaiting cannot fix this: change the node class in the config and run `karpctl up` again (it resumes here)",
                        refused.join("\n")
                    );
                }
                if waiting.is_empty() {
                    return Ok(json!({"ready": checks.iter().map(|c| c.0.clone()).collect::<Vec<_>>()}));
                }
                if started.elapsed() >= self.timeout {
                    let lines: Vec<String> = waiting.iter().map(|(r, _, why)| format!("{r}: {why}")).collect();
                    let silent = waiting.iter().filter(|w| w.2 == apply::NOT_REPORTED).count();
                    let controller = if silent > 0 {
                        format!("\nthe Karpenter controller reported nothing on {silent} of them: is it running? (`karpctl status` shows its pods)")
                    } else {
                        String::new()
                    };
                    anyhow::bail!(
                        "not Ready after {}s:\n  {}{controller}\nfix the cause and run `karpctl up` again (it resumes here); `kubectl describe` the objects for events",
                        self.timeout.as_secs(),
                        lines.join("\n  ")
                    );
                }
                let names: Vec<&str> = waiting.iter().map(|w| w.0.as_str()).collect();
                cx.progress(format!("waiting for {} to be Ready ({}s)", names.join(", "), started.elapsed().as_secs()));
                pace.wait().await;
            }
        })
    }
    fn outputs_from(&self, _observed: &Value) -> Value {
        let mut ready: Vec<String> = self.classes.iter().map(|c| format!("EC2NodeClass/{c}")).collect();
        ready.extend(self.pools.iter().map(|p| format!("NodePool/{p}")));
        json!({"ready": ready})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::diff_table::{check, quiet_cx, Row};

    #[test]
    fn diff_table() {
        let s = Readiness {
            cluster: "c".into(),
            classes: vec!["default".into()],
            pools: vec!["default".into()],
            cluster_step: "cluster/c".into(),
            objects_step: "objects/c".into(),
            controller_step: "helm-release/kube-system/karpenter".into(),
            timeout: Duration::from_secs(1),
            conn: Arc::new(Connector::new(&Default::default(), aws_config::SdkConfig::builder().build(), "c")),
        };
        let rows: Vec<Row> = vec![
            ("nothing observed", json!({}), Action::None, false, "up to date", &[]),
            ("all Ready", json!({"waiting": []}), Action::None, false, "up to date", &[]),
            ("one not Ready", json!({"waiting": [{"ref": "NodePool/default", "why": "not created yet"}]}), Action::Update, false,
             "wait for 1 object(s) to become Ready", &["NodePool/default.Ready"]),
            ("class refused, pool waiting", json!({"waiting": [
                {"ref": "EC2NodeClass/default", "why": format!("{REFUSED}AMI not found")},
                {"ref": "NodePool/default", "why": "NodeClassReady=False"}]}), Action::Update, false,
             "wait for 2 object(s) to become Ready", &["EC2NodeClass/default.Ready", "NodePool/default.Ready"]),
            ("entry without a ref", json!({"waiting": [{"why": "x"}]}), Action::Update, false, "wait for 1 object(s)", &["?.Ready"]),
        ];
        let cx = quiet_cx(None);
        for (name, observed, action, destructive, summary, fields) in rows {
            let c = s.diff(&observed, &cx);
            check(name, &c, action, destructive, summary, fields);
            for (f, w) in c.fields.iter().zip(observed["waiting"].as_array().into_iter().flatten()) {
                assert_eq!((&f.old, &f.new), (&w["why"], &json!("True")), "{name}: {} old/new", f.field);
            }
        }
    }
}
