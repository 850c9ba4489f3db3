/*!
Step `iam/spot-service-linked-role`: the account's EC2 Spot service-linked role,
without which spot launches fail. Only part of the graph when a pool allows spot;
never deleted by karpctl (other tools in the account rely on it).
*/

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::aws::AwsError;
use crate::engine::{Action, Change, StepCx, TypedStep};

pub const ID: &str = "iam/spot-service-linked-role";
const ROLE: &str = "AWSServiceRoleForEC2Spot";

pub struct SpotRole {
    pub iam: aws_sdk_iam::Client,
}

/// Whether the role exists, and its ARN (also the step's outputs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpotRoleSeen {
    pub exists: bool,
    #[serde(default)]
    pub arn: Option<String>,
}

impl TypedStep for SpotRole {
    const KIND: &'static str = "spot-role";
    type Observed = SpotRoleSeen;
    type Outputs = SpotRoleSeen;

    fn id(&self) -> String {
        ID.into()
    }
    fn inputs(&self) -> Value {
        json!({"role": ROLE, "service": "spot.amazonaws.com"})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<SpotRoleSeen>> {
        Box::pin(async move {
            cx.progress("GetRole");
            let out = self.iam.get_role().role_name(ROLE).send().await.map_err(|e| AwsError::from_sdk("iam:GetRole", &e));
            Ok(match crate::aws::found(out)? {
                Some(o) => SpotRoleSeen { exists: true, arn: o.role.map(|r| r.arn) },
                None => SpotRoleSeen { exists: false, arn: None },
            })
        })
    }
    fn diff(&self, observed: &SpotRoleSeen, _cx: &StepCx<'_>) -> Change {
        if observed.exists {
            Change::none()
        } else {
            Change::new(Action::Create, format!("create the EC2 Spot service-linked role {ROLE} (spot launches fail without it)"))
        }
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, _observed: &'a SpotRoleSeen, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<SpotRoleSeen>> {
        Box::pin(async move {
            cx.progress("CreateServiceLinkedRole");
            let arn = match self.iam.create_service_linked_role().aws_service_name("spot.amazonaws.com").send().await {
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
            Ok(SpotRoleSeen { exists: true, arn })
        })
    }
    fn outputs_from(&self, observed: &SpotRoleSeen) -> SpotRoleSeen {
        observed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Step, Typed};

    #[test]
    fn diff_table() {
        let s = SpotRole { iam: aws_sdk_iam::Client::from_conf(aws_sdk_iam::Config::builder().behavior_version_latest().build()) };
        let arn = "arn:aws:iam::111122223333:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot";
        let seen = |exists: bool, arn: Option<&str>| SpotRoleSeen { exists, arn: arn.map(String::from) };
        #[rustfmt::skip]
        let rows: Vec<(&str, SpotRoleSeen, Action, &str)> = vec![
            ("role absent", seen(false, None), Action::Create, "create the EC2 Spot service-linked role AWSServiceRoleForEC2Spot"),
            ("role present", seen(true, Some(arn)), Action::None, "up to date"),
            ("role present, no arn read", seen(true, None), Action::None, "up to date"),
        ];
        let up = std::collections::BTreeMap::new();
        let ev = |_e: crate::engine::Event| {};
        let cx = StepCx::new("t", &up, None, &ev);
        for (name, observed, action, summary) in rows {
            let c = TypedStep::diff(&s, &observed, &cx);
            assert_eq!(c.action, action, "{name}: action ({c:?})");
            assert!(!c.destructive, "{name}: destructive ({c:?})");
            assert!(c.summary.contains(summary), "{name}: summary {:?} lacks {summary:?}", c.summary);
            assert!(c.fields.is_empty(), "{name}: fields {:?}", c.fields);
        }
        // Through the runner's adapter: the JSON earlier runs observed and recorded still reads.
        let step = Typed(s);
        assert_eq!(step.kind(), "spot-role");
        assert_eq!(step.diff(&json!({"exists": false}), &cx).action, Action::Create);
        assert_eq!(step.diff(&json!({"exists": true, "arn": arn}), &cx).action, Action::None);
        assert_eq!(step.outputs_from(&json!({"exists": true, "arn": null})), json!({"exists": true, "arn": null}));
    }
}
