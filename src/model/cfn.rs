/*!
A typed CloudFormation template model covering the resource types karpctl's
stack uses (IAM role and managed policies, SQS queue and policy, EventBridge
rules), with intrinsic functions as values. The template is serialized from
these types as JSON, so user-supplied names can never break its structure.
*/

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// Logical ids of the stack's resources, used by later steps to read outputs.
pub mod ids {
    pub const NODE_ROLE: &str = "KarpenterNodeRole";
    pub const QUEUE: &str = "KarpenterInterruptionQueue";
    pub const QUEUE_POLICY: &str = "KarpenterInterruptionQueuePolicy";
}

/// A string-valued expression: a literal or an intrinsic function.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Lit(String),
    /// `Fn::Sub` with `${AWS::Partition}`-style references.
    Sub(String),
    Ref(String),
    GetAtt(String, String),
}

impl Expr {
    pub fn lit(s: impl Into<String>) -> Self {
        Expr::Lit(s.into())
    }
    pub fn sub(s: impl Into<String>) -> Self {
        Expr::Sub(s.into())
    }
}

impl Serialize for Expr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Expr::Lit(v) => s.serialize_str(v),
            Expr::Sub(v) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("Fn::Sub", v)?;
                m.end()
            }
            Expr::Ref(v) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("Ref", v)?;
                m.end()
            }
            Expr::GetAtt(r, a) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("Fn::GetAtt", &[r, a])?;
                m.end()
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Template {
    #[serde(rename = "AWSTemplateFormatVersion")]
    pub format_version: &'static str,
    #[serde(rename = "Description")]
    pub description: String,
    #[serde(rename = "Resources")]
    pub resources: BTreeMap<String, Resource>,
    #[serde(rename = "Outputs")]
    pub outputs: BTreeMap<String, Output>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Output {
    #[serde(rename = "Description")]
    pub description: String,
    #[serde(rename = "Value")]
    pub value: Expr,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "Type", content = "Properties")]
pub enum Resource {
    #[serde(rename = "AWS::IAM::Role")]
    Role(Role),
    #[serde(rename = "AWS::IAM::ManagedPolicy")]
    ManagedPolicy(ManagedPolicy),
    #[serde(rename = "AWS::SQS::Queue")]
    Queue(Queue),
    #[serde(rename = "AWS::SQS::QueuePolicy")]
    QueuePolicy(QueuePolicy),
    #[serde(rename = "AWS::Events::Rule")]
    Rule(Rule),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Role {
    pub role_name: Expr,
    pub path: &'static str,
    pub assume_role_policy_document: PolicyDocument,
    pub managed_policy_arns: Vec<Expr>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ManagedPolicy {
    pub managed_policy_name: Expr,
    pub policy_document: PolicyDocument,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Queue {
    pub queue_name: Expr,
    pub message_retention_period: u32,
    pub sqs_managed_sse_enabled: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueuePolicy {
    pub queues: Vec<Expr>,
    pub policy_document: PolicyDocument,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Rule {
    pub event_pattern: EventPattern,
    pub targets: Vec<Target>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventPattern {
    pub source: Vec<&'static str>,
    #[serde(rename = "detail-type")]
    pub detail_type: Vec<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Target {
    pub id: &'static str,
    pub arn: Expr,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PolicyDocument {
    pub version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'static str>,
    pub statement: Vec<Statement>,
}

/// Condition operator → condition key → value(s).
pub type Conditions = BTreeMap<&'static str, BTreeMap<String, CondValue>>;

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum CondValue {
    One(Expr),
    Many(Vec<Expr>),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<&'static str>,
    pub effect: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<Principal>,
    pub action: Vec<&'static str>,
    /// Left out when empty: trust policies have no Resource, and IAM rejects `[]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resource: Vec<Expr>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub condition: Conditions,
}

#[derive(Debug, Clone)]
pub enum Principal {
    Service(Vec<Expr>),
    /// `"*"`: anyone (used with Deny).
    Any,
}

impl Serialize for Principal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Principal::Any => s.serialize_str("*"),
            Principal::Service(v) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("Service", v)?;
                m.end()
            }
        }
    }
}
