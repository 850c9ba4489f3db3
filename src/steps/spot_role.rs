/*!
Step `iam/spot-service-linked-role`: the account's EC2 Spot service-linked role,
without which spot launches fail. Only part of the graph when a pool allows spot;
never deleted by karpctl (other tools in the account rely on it).
*/

use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::aws::AwsError;
use crate::engine::{Action, Change, Step, StepCx};

pub const ID: &str = "iam/spot-service-linked-role";
const ROLE: &str = "AWSServiceRoleForEC2Spot";

pub struct SpotRole {
    pub iam: aws_sdk_iam::Client,
}

impl Step for SpotRole {
    fn id(&self) -> String {
        ID.into()
    }
    fn kind(&self) -> &'static str {
        "spot-role"
    }
    fn inputs(&self) -> Value {
        json!({"role": ROLE, "service": "spot.amazonaws.com"})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            cx.progress("GetRole");
            let out = self.iam.get_role().role_name(ROLE).send().await.map_err(|e| AwsError::from_sdk("iam:GetRole", &e));
            Ok(match crate::aws::found(out)? {
                Some(o) => json!({"exists": true, "arn": o.role.map(|r| r.arn)}),
                None => json!({"exists": false}),
            })
        })
    }
    fn diff(&self, observed: &Value, _cx: &StepCx<'_>) -> Change {
        if observed["exists"] == true {
            Change::none()
        } else {
            Change::new(Action::Create, format!("create the EC2 Spot service-linked role {ROLE} (spot launches fail without it)"))
        }
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, _observed: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            cx.progress("CreateServiceLinkedRole");
            let out = match self.iam.create_service_linked_role().aws_service_name("spot.amazonaws.com").send().await {
                Ok(o) => o.role.map(|r| r.arn),
                Err(e) => {
                    let err = AwsError::from_sdk("iam:CreateServiceLinkedRole", &e);
                    // Created meanwhile by someone else: that is the state we want.
                    if !err.is_already_exists() {
                        return Err(err.into());
                    }
                    None
                }
            };
            Ok(json!({"exists": true, "arn": out}))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_table() {
        let s = SpotRole { iam: aws_sdk_iam::Client::from_conf(aws_sdk_iam::Config::builder().behavior_version_latest().build()) };
        let arn = "arn:aws:iam::111122223333:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot";
        #[rustfmt::skip]
        let rows: Vec<(&str, Value, Action, bool, &str)> = vec![
            ("role absent", json!({"exists": false}), Action::Create, false, "create the EC2 Spot service-linked role AWSServiceRoleForEC2Spot"),
            ("role present", json!({"exists": true, "arn": arn}), Action::None, false, "up to date"),
            ("role present, no arn read", json!({"exists": true, "arn": null}), Action::None, false, "up to date"),
            ("nothing observed", json!({}), Action::Create, false, "spot launches fail without it"),
            ("exists not a bool", json!({"exists": "true", "arn": arn}), Action::Create, false, "AWSServiceRoleForEC2Spot"),
        ];
        let up = std::collections::BTreeMap::new();
        let ev = |_e: crate::engine::Event| {};
        let cx = StepCx::new("t", &up, None, &ev);
        for (name, observed, action, destructive, summary) in rows {
            let c = s.diff(&observed, &cx);
            assert_eq!(c.action, action, "{name}: action ({c:?})");
            assert_eq!(c.destructive, destructive, "{name}: destructive ({c:?})");
            assert!(c.summary.contains(summary), "{name}: summary {:?} lacks {summary:?}", c.summary);
            assert!(c.fields.is_empty(), "{name}: fields {:?}", c.fields);
        }
    }
}
