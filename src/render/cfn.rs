/*!
Builds the Karpenter CloudFormation stack for one cluster and Karpenter version:
the node role, the tag-scoped controller policies split the way upstream splits
them for that version, the interruption queue and its EventBridge rules
(installers-survey §1.2–1.5). Every policy is checked against IAM's 6,144
character limit with worst-case partition, region and account lengths.
*/

use std::collections::BTreeMap;

use crate::config::{Config, Names};
use crate::model::cfn::*;
use crate::model::iam::{arn, cond, controller_policies, one};
pub use crate::model::iam::{bounded_name, partition_of, policy_name, worst_case_size, IAM_POLICY_LIMIT};
pub use crate::model::cfn::ids;
use crate::model::version::{KarpenterVersion, Since};
use crate::model::ownership::CLUSTER_TAG;


#[derive(Debug, thiserror::Error)]
pub enum CfnError {
    #[error("controller policy {name} would be {size} characters, over IAM's {IAM_POLICY_LIMIT}-character limit (cluster name {cluster:?} is long)")]
    PolicyTooLarge { name: String, size: usize, cluster: String },
}

pub fn template(c: &Config, v: KarpenterVersion) -> Result<Template, CfnError> {
    let cluster = c.cluster.name.as_str();
    let names = Names::of(c);
    let queue = c.karpenter.settings.interruption_queue;
    let mut tags: Vec<Tag> = vec![Tag { key: CLUSTER_TAG.into(), value: cluster.into() }];
    for (k, val) in &c.stack.tags {
        if k != CLUSTER_TAG {
            tags.push(Tag { key: k.clone(), value: val.clone() });
        }
    }
    let mut resources = BTreeMap::new();
    let mut outputs = BTreeMap::new();

    resources.insert(
        ids::NODE_ROLE.to_string(),
        Resource::Role(Role {
            role_name: Expr::lit(names.node_role.clone()),
            path: "/",
            assume_role_policy_document: PolicyDocument {
                version: "2012-10-17",
                id: None,
                statement: vec![Statement {
                    sid: None,
                    effect: "Allow",
                    principal: Some(Principal::Service(vec![Expr::sub("ec2.${AWS::URLSuffix}")])),
                    action: vec!["sts:AssumeRole"],
                    resource: vec![],
                    condition: BTreeMap::new(),
                }],
            },
            managed_policy_arns: ["AmazonEKS_CNI_Policy", "AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly", "AmazonSSMManagedInstanceCore"]
                .iter()
                .map(|p| arn(&format!("iam::aws:policy/{p}")))
                .collect(),
            tags: tags.clone(),
        }),
    );
    outputs.insert("NodeRoleName".into(), Output { description: "Node IAM role name".into(), value: Expr::Ref(ids::NODE_ROLE.into()) });
    outputs.insert(
        "NodeRoleArn".into(),
        Output { description: "Node IAM role ARN".into(), value: Expr::GetAtt(ids::NODE_ROLE.into(), "Arn".into()) },
    );

    let policies = controller_policies(cluster, v, queue, c.cluster.region.as_deref())
        .map_err(|o| CfnError::PolicyTooLarge { name: o.name, size: o.size, cluster: cluster.into() })?;
    for p in policies {
        let logical = format!("{}Policy", if p.part.is_empty() { "KarpenterController" } else { p.part });
        outputs.insert(
            format!("{logical}Arn"),
            Output { description: format!("ARN of {}", p.name), value: Expr::Ref(logical.clone()) },
        );
        resources.insert(logical, Resource::ManagedPolicy(ManagedPolicy { managed_policy_name: Expr::lit(p.name), policy_document: p.document }));
    }

    if queue {
        let queue_arn = Expr::GetAtt(ids::QUEUE.into(), "Arn".into());
        resources.insert(
            ids::QUEUE.into(),
            Resource::Queue(Queue {
                queue_name: Expr::lit(names.queue.clone()),
                message_retention_period: 300,
                sqs_managed_sse_enabled: true,
                tags: tags.clone(),
            }),
        );
        resources.insert(
            ids::QUEUE_POLICY.into(),
            Resource::QueuePolicy(QueuePolicy {
                queues: vec![Expr::Ref(ids::QUEUE.into())],
                policy_document: PolicyDocument {
                    version: "2012-10-17",
                    id: Some("EC2InterruptionPolicy"),
                    statement: vec![
                        Statement {
                            sid: None,
                            effect: "Allow",
                            principal: Some(Principal::Service(vec![Expr::lit("events.amazonaws.com"), Expr::lit("sqs.amazonaws.com")])),
                            action: vec!["sqs:SendMessage"],
                            resource: vec![queue_arn.clone()],
                            condition: BTreeMap::new(),
                        },
                        Statement {
                            sid: Some("DenyHTTP"),
                            effect: "Deny",
                            principal: Some(Principal::Any),
                            action: vec!["sqs:*"],
                            resource: vec![queue_arn.clone()],
                            condition: cond(&[("Bool", "aws:SecureTransport", one("false"))]),
                        },
                    ],
                },
            }),
        );
        let mut rules = vec![
            ("ScheduledChangeRule", "aws.health", "AWS Health Event"),
            ("SpotInterruptionRule", "aws.ec2", "EC2 Spot Instance Interruption Warning"),
            ("RebalanceRule", "aws.ec2", "EC2 Instance Rebalance Recommendation"),
            ("InstanceStateChangeRule", "aws.ec2", "EC2 Instance State-change Notification"),
        ];
        if v.has(Since::CapacityReservationInterruptions) {
            rules.push(("CapacityReservationInterruptionRule", "aws.ec2", "EC2 Capacity Reservation Instance Interruption Warning"));
        }
        for (id, source, detail) in rules {
            resources.insert(
                id.into(),
                Resource::Rule(Rule {
                    event_pattern: EventPattern { source: vec![source], detail_type: vec![detail] },
                    targets: vec![Target { id: "KarpenterInterruptionQueueTarget", arn: queue_arn.clone() }],
                }),
            );
        }
        outputs.insert("QueueName".into(), Output { description: "Interruption queue name".into(), value: Expr::GetAtt(ids::QUEUE.into(), "QueueName".into()) });
        outputs.insert("QueueArn".into(), Output { description: "Interruption queue ARN".into(), value: queue_arn });
        outputs.insert("QueueUrl".into(), Output { description: "Interruption queue URL".into(), value: Expr::Ref(ids::QUEUE.into()) });
    }

    Ok(Template {
        format_version: "2010-09-09",
        description: format!("Karpenter {v} prerequisites for EKS cluster {cluster} (managed by karpctl)"),
        resources,
        outputs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_names_fit() {
        let long = "c".repeat(100);
        let n = policy_name("ResourceDiscovery", &long);
        assert!(n.len() <= 128, "{}", n.len());
        assert!(n.starts_with("KarpenterControllerResourceDiscoveryPolicy-"));
        assert_eq!(policy_name("", "demo"), "KarpenterControllerPolicy-demo");
        // Different long names stay distinct.
        assert_ne!(policy_name("X", &format!("{long}a")), policy_name("X", &format!("{long}b")));
    }
}
