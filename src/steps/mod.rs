/*!
The steps `up` walks, built from the config. Each step kind lives in its own
file and implements `engine::Step`; this module only decides which steps a
config needs and how they depend on each other. The AWS half: cluster facts, discovery
tags, the CloudFormation stack, controller identity, node access, the Spot
service-linked role and AMI pins. The Kubernetes half: CRDs, the controller and
device plugin releases, the aws-auth mapping, node classes and pools, pruning and
readiness. CRDs and the stack's policies are in place before the controller runs.
*/

pub mod ami_check;
pub mod ami_lookup;
pub mod aws_auth;
pub mod cfn_stack;
pub mod cluster;
pub mod crds;
pub mod discovery_tags;
pub mod helm_release;
pub mod identity;
pub mod node_access;
pub mod objects;
pub mod probe;
pub mod readiness;
pub mod spot_role;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::engine::Step;
use crate::helm::ChartRef;

/// Clients and flags the steps are built with.
pub struct Env {
    pub sdk: aws_config::SdkConfig,
    /// Which recorded AMI pins this run may move.
    pub amis: ami_lookup::Moves,
    /// A staged rollout's walk: the pin each class has after it (class → pin), each
    /// checked by an [`ami_check::AmiCheck`] step after readiness. Empty: no checks.
    pub checks: std::collections::BTreeMap<String, String>,
    /// The cluster connection for the Kubernetes steps (built on first use).
    pub kube: Arc<crate::kube::Connector>,
    /// `up --prune` / `--yes`: objects that left the config may be deleted.
    pub prune: bool,
    pub force_conflicts: bool,
    /// How long to wait for rollouts, readiness and deletions.
    pub wait_timeout: Duration,
    /// Relative chart paths in the config are relative to this directory.
    pub config_dir: PathBuf,
}

/// A chart reference: the local path when set (relative to the config file), else
/// the repository at `version` — an OCI reference as is, an https repository by `name`.
pub fn chart_ref(repository: &str, name: &str, path: Option<&str>, version: &str, config_dir: &Path) -> ChartRef {
    let version = version.to_string();
    match path {
        Some(p) => ChartRef::Local { path: config_dir.join(p) },
        None if repository.starts_with("http") && !repository.ends_with(".tgz") => {
            ChartRef::Repo { url: repository.to_string(), name: name.to_string(), version }
        }
        None => ChartRef::Remote { reference: repository.to_string(), version },
    }
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
    let tag = (crate::model::ownership::CLUSTER_TAG.to_string(), c.cluster.name.clone());
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
        steps.push(Box::new(crate::engine::Typed(spot_role::SpotRole { iam: crate::aws::iam(&env.sdk) })));
    }
    let classes = crate::amis::needs(c);
    if !classes.is_empty() {
        steps.push(Box::new(ami_lookup::AmiPins {
            classes,
            pin: c.amis.pin,
            update: c.amis.update,
            moves: env.amis.clone(),
            kubernetes_version: c.cluster.kubernetes_version.clone(),
            cluster_step: cluster_id.clone(),
            ssm: crate::aws::ssm(&env.sdk),
        }));
    }
    kubernetes_steps(c, env, &mut steps);
    Ok(steps)
}

/// The Kubernetes half, appended to the AWS half it depends on.
fn kubernetes_steps(c: &Config, env: &Env, steps: &mut Vec<Box<dyn Step>>) {
    let names = crate::config::Names::of(c);
    let cluster_id = cluster::id(&c.cluster.name);
    let stack_id = cfn_stack::id(&names.stack);
    let identity_id = identity::id(&names.controller_role);
    let config = Arc::new(c.clone());
    let k = &c.karpenter;
    let chart = chart_ref(&k.chart.repository, "karpenter", k.chart.path.as_deref(), &k.version, &env.config_dir);
    // Listed right after the cluster facts: on a version change `plan` reads CRDs →
    // stack policies → controller, the order upgrades must happen in.
    steps.insert(1, Box::new(crds::Crds { version: k.version.clone(), chart: chart.clone(), cluster_step: cluster_id.clone(), conn: env.kube.clone() }));

    let controller_id = helm_release::id(&k.namespace, "karpenter");
    let values_config = config.clone();
    let (cs, is) = (cluster_id.clone(), identity_id.clone());
    steps.push(Box::new(helm_release::HelmRelease {
        release: "karpenter".into(),
        namespace: k.namespace.clone(),
        chart,
        version: k.version.clone(),
        offline_values: serde_json::to_value(crate::render::helm::karpenter_values(c, &Default::default())).expect("values serialize"),
        values: Box::new(move |cx| controller_values(&values_config, cx.output(&cs), cx.output(&is))),
        workload: helm_release::Workload::Deployment,
        deps: vec![cluster_id.clone(), crds::ID.into(), stack_id.clone(), identity_id],
        cluster_step: cluster_id.clone(),
        conn: env.kube.clone(),
        wait_timeout: env.wait_timeout,
    }));

    if crate::render::helm::device_plugin_enabled(c) {
        let dp = &c.device_plugin;
        let values = serde_json::to_value(crate::render::helm::device_plugin_values(c)).expect("values serialize");
        let v2 = values.clone();
        steps.push(Box::new(helm_release::HelmRelease {
            release: "nvidia-device-plugin".into(),
            namespace: dp.namespace.clone(),
            chart: chart_ref(&dp.chart_repository, "nvidia-device-plugin", dp.chart_path.as_deref(), &dp.chart_version, &env.config_dir),
            version: dp.chart_version.clone(),
            offline_values: values,
            values: Box::new(move |_| Ok(v2.clone())),
            workload: helm_release::Workload::DaemonSet,
            deps: vec![cluster_id.clone()],
            cluster_step: cluster_id.clone(),
            conn: env.kube.clone(),
            wait_timeout: env.wait_timeout,
        }));
    }

    steps.push(Box::new(aws_auth::AwsAuth {
        cluster: c.cluster.name.clone(),
        cluster_step: cluster_id.clone(),
        node_access_step: node_access::id(&c.cluster.name),
        conn: env.kube.clone(),
    }));

    let amis_step = (!crate::amis::needs(c).is_empty()).then(|| ami_lookup::ID.to_string());
    // Not the controller: every supported version (≥ 1.1) serves the CRDs without a
    // conversion webhook, so the objects go in while the controller rolls out;
    // readiness waits for both.
    let mut deps = vec![cluster_id.clone(), crds::ID.to_string(), stack_id];
    deps.extend(amis_step.clone());
    let objects_id = objects::id(&c.cluster.name);
    steps.push(Box::new(objects::Objects {
        config: config.clone(),
        cluster_step: cluster_id.clone(),
        amis_step,
        deps,
        force_conflicts: env.force_conflicts,
        conn: env.kube.clone(),
    }));
    steps.push(Box::new(objects::Prune {
        config: config.clone(),
        cluster_step: cluster_id.clone(),
        objects_step: objects_id.clone(),
        allowed: env.prune,
        wait_timeout: env.wait_timeout,
        conn: env.kube.clone(),
    }));
    let ready_id = readiness::id(&c.cluster.name);
    steps.push(Box::new(readiness::Readiness {
        cluster: c.cluster.name.clone(),
        classes: c.node_classes.iter().map(|n| n.name.clone()).collect(),
        pools: c.node_pools.iter().map(|p| p.name.clone()).collect(),
        cluster_step: cluster_id.clone(),
        objects_step: objects_id,
        controller_step: controller_id,
        timeout: env.wait_timeout,
        conn: env.kube.clone(),
    }));
    for (class, pin) in &env.checks {
        steps.push(Box::new(ami_check::AmiCheck {
            class: class.clone(),
            pin: pin.clone(),
            pools: c.node_pools.iter().filter(|p| &p.node_class == class).map(|p| p.name.clone()).collect(),
            config: config.clone(),
            cluster_step: cluster_id.clone(),
            readiness_step: ready_id.clone(),
            timeout: env.wait_timeout,
            conn: env.kube.clone(),
        }));
    }
}

/// The controller's values: the config plus the cluster endpoint and, with IRSA,
/// the role ARN the identity step made.
fn controller_values(c: &Config, cluster: Option<&serde_json::Value>, identity: Option<&serde_json::Value>) -> anyhow::Result<serde_json::Value> {
    let role_arn = identity.and_then(|i| i["roleArn"].as_str());
    let arn = role_arn.and_then(crate::aws::Arn::parse);
    let facts = crate::render::Facts {
        account_id: arn.map(|a| a.account.to_string()),
        partition: arn.map(|a| a.partition.to_string()),
        cluster_endpoint: cluster.and_then(|f| f["endpoint"].as_str()).map(String::from),
        irsa: identity.and_then(|i| i["mode"].as_str()).map(|m| m == "irsa"),
    };
    Ok(serde_json::to_value(crate::render::helm::karpenter_values(c, &facts))?)
}

/// What the steps' diff-table tests share: the row types, a context with no
/// upstream outputs and no progress display, and the check of one row's change.
#[cfg(test)]
pub(crate) mod diff_table {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use crate::engine::{Action, Change, Event, StepCx};

    /// A row: its name, the observed JSON, the expected action, destructive flag,
    /// a piece of the summary, and the field names.
    pub type Row<'a> = (&'a str, Value, Action, bool, &'a str, &'a [&'a str]);
    /// A row with the step's previous outputs (`P`) after the observed JSON.
    pub type RowWithPrevious<'a, P> = (&'a str, Value, P, Action, bool, &'a str, &'a [&'a str]);

    fn quiet(_e: Event) {}
    static NO_UPSTREAM: BTreeMap<String, Value> = BTreeMap::new();

    /// A context for `diff` with no upstream outputs, `previous` as the step's last outputs.
    pub fn quiet_cx(previous: Option<&Value>) -> StepCx<'_> {
        StepCx::new("t", &NO_UPSTREAM, previous, &quiet)
    }

    /// Asserts one row's change: action, destructive flag, summary piece, field names.
    pub fn check(name: &str, c: &Change, action: Action, destructive: bool, summary: &str, fields: &[&str]) {
        assert_eq!(c.action, action, "{name}: action ({c:?})");
        assert_eq!(c.destructive, destructive, "{name}: destructive ({c:?})");
        assert!(c.summary.contains(summary), "{name}: summary {:?} lacks {summary:?}", c.summary);
        let got: Vec<&str> = c.fields.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(got, fields, "{name}: fields");
    }
}
