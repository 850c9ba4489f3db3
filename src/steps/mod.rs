/*!
The steps `up` walks, built from the config. Each step kind lives in its own
file and implements `engine::Step`; this module only decides which steps a
config needs and how they depend on each other. The AWS half: cluster facts, discovery
tags, the CloudFormation stack, controller identity, node access, the Spot
service-linked role and AMI pins; the Kubernetes steps follow.
*/

pub mod ami_lookup;
pub mod cfn_stack;
pub mod cluster;
pub mod discovery_tags;
pub mod identity;
pub mod node_access;
pub mod spot_role;

use crate::config::Config;
use crate::engine::Step;

/// Clients and flags the steps are built with.
pub struct Env {
    pub sdk: aws_config::SdkConfig,
    pub update_amis: bool,
}

/// The `up` graph for a config, in declaration order.
pub fn up_steps(c: &Config, env: &Env) -> anyhow::Result<Vec<Box<dyn Step>>> {
    let cluster = cluster::ClusterFacts { name: c.cluster.name.clone(), eks: crate::aws::eks(&env.sdk) };
    let cluster_id = cluster::id(&c.cluster.name);
    let mut steps: Vec<Box<dyn Step>> = vec![Box::new(cluster)];
    steps.push(Box::new(discovery_tags::DiscoveryTags {
        cluster: c.cluster.name.clone(),
        cluster_step: cluster_id.clone(),
        subnet_ids: c.discovery.subnet_ids.clone(),
        security_group_ids: c.discovery.security_group_ids.clone(),
        ec2: crate::aws::ec2(&env.sdk),
    }));
    // The CloudFormation stack: node role, controller policies, interruption queue and rules.
    let names = crate::config::Names::of(c);
    let version = crate::model::version::KarpenterVersion::parse(&c.karpenter.version).expect("validated version");
    let template = serde_json::to_value(crate::render::cfn::template(c, version)?)?;
    let stack_id = cfn_stack::id(&names.stack);
    let tag = (crate::render::cfn::CLUSTER_TAG.to_string(), c.cluster.name.clone());
    {
        let mut tags = c.stack.tags.clone();
        tags.insert(tag.0.clone(), tag.1.clone());
        steps.push(Box::new(cfn_stack::CfnStack { stack_name: names.stack.clone(), template, tags, cfn: crate::aws::cloudformation(&env.sdk) }));
        steps.push(Box::new(identity::ControllerIdentity {
            cluster: c.cluster.name.clone(),
            mode: c.identity.mode,
            role_name: names.controller_role.clone(),
            namespace: c.karpenter.namespace.clone(),
            cluster_step: cluster_id.clone(),
            stack_step: stack_id.clone(),
            tag: tag.clone(),
            iam: crate::aws::iam(&env.sdk),
            eks: crate::aws::eks(&env.sdk),
        }));
        steps.push(Box::new(node_access::NodeAccess {
            cluster: c.cluster.name.clone(),
            mode: c.node_access.mode,
            cluster_step: cluster_id.clone(),
            stack_step: stack_id,
            tag,
            eks: crate::aws::eks(&env.sdk),
        }));
    }
    if c.node_pools.iter().any(|p| p.capacity_types.contains(&crate::config::types::CapacityType::Spot)) {
        steps.push(Box::new(spot_role::SpotRole { iam: crate::aws::iam(&env.sdk) }));
    }
    let classes = crate::amis::needs(c);
    if !classes.is_empty() {
        steps.push(Box::new(ami_lookup::AmiPins {
            classes,
            pin: c.amis.pin,
            update: c.amis.update,
            update_requested: env.update_amis,
            kubernetes_version: c.cluster.kubernetes_version.clone(),
            cluster_step: cluster_id,
            ssm: crate::aws::ssm(&env.sdk),
        }));
    }
    Ok(steps)
}
