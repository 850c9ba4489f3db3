/*!
The steps `up` walks, built from the config. Each step kind lives in its own
file and implements `engine::Step`; this module only decides which steps a
config needs and how they depend on each other. So far: the cluster's facts,
discovery tags and the AMI pins; the stack, identity, access and Kubernetes steps follow.
*/

pub mod ami_lookup;
pub mod cfn_stack;
pub mod cluster;
pub mod discovery_tags;
pub mod spot_role;

use crate::config::Config;
use crate::engine::Step;

/// Clients and flags the steps are built with.
pub struct Env {
    pub sdk: aws_config::SdkConfig,
    pub update_amis: bool,
}

/// The `up` graph for a config, in declaration order.
pub fn up_steps(c: &Config, env: &Env) -> Vec<Box<dyn Step>> {
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
    steps
}
