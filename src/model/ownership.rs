/*!
How karpctl marks what it owns and finds it again — the one place for these
names. AWS tags on the stack, its resources and the subnets and security groups
it tags for discovery; Kubernetes labels, annotations and the server-side apply
field manager on what it applies; the selectors built from them; and the tags
and labels Karpenter and EKS put on what they create, by which rollback finds
their leftovers.
*/

use std::collections::BTreeMap;

/// karpctl's name: the `managed-by` label's value and the field manager of its applies.
pub const MANAGER: &str = "karpctl";
/// Server-side apply field manager of every object karpctl applies.
pub const FIELD_MANAGER: &str = MANAGER;

/// Tag (on AWS resources) and label (on Kubernetes objects) naming the cluster an
/// object was made for.
pub const CLUSTER_TAG: &str = "karpctl.io/cluster";
/// Tag naming the step that owns the stack (next to [`CLUSTER_TAG`]).
pub const STEP_TAG: &str = "karpctl.io/step";
/// The tag Karpenter discovers subnets and security groups by (value: the cluster name).
pub const DISCOVERY_TAG: &str = "karpenter.sh/discovery";
/// Set (to the cluster name) in the same CreateTags call as [`DISCOVERY_TAG`] on the
/// resources karpctl tags, so which tags are karpctl's can be observed, not only
/// recorded: a run killed after tagging and before recording still knows them.
pub const DISCOVERY_MARKER_TAG: &str = "karpctl.io/discovery-tagged";

/// The standard label naming the tool that manages an object.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Which Karpenter version last applied a CRD.
pub const VERSION_ANNOTATION: &str = "karpctl.io/karpenter-version";
/// Label of `verify`'s test pods and namespace (value: the pool).
pub const VERIFY_LABEL: &str = "karpctl.io/verify";

/// Label Karpenter puts on the nodes of a NodePool.
pub const POOL_LABEL: &str = "karpenter.sh/nodepool";
/// Label EKS puts on managed-nodegroup nodes.
pub const NODEGROUP_LABEL: &str = "eks.amazonaws.com/nodegroup";
/// The tag Karpenter v1 puts on everything it creates in EC2 and IAM.
pub const EKS_CLUSTER_TAG: &str = "eks:eks-cluster-name";
/// The pre-v1 cluster tag on Karpenter's launch templates.
pub const LEGACY_CLUSTER_TAG: &str = "karpenter.k8s.aws/cluster";
/// The tag naming the EC2NodeClass an instance or launch template was made for.
pub const NODECLASS_TAG: &str = "karpenter.k8s.aws/ec2nodeclass";

/// The labels on every object karpctl applies for `cluster`.
pub fn labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY.to_string(), MANAGER.to_string()), (CLUSTER_TAG.to_string(), cluster.to_string())])
}

/// `app.kubernetes.io/managed-by=karpctl,karpctl.io/cluster=<cluster>`: the
/// label selector of the objects karpctl applied for `cluster`.
pub fn selector(cluster: &str) -> String {
    labels(cluster).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_selects_exactly_the_labels() {
        assert_eq!(selector("demo"), "app.kubernetes.io/managed-by=karpctl,karpctl.io/cluster=demo");
        let l = labels("demo");
        assert_eq!(l.len(), 2);
        assert!(selector("demo").split(',').all(|kv| kv.split_once('=').is_some_and(|(k, v)| l.get(k).map(String::as_str) == Some(v))));
    }
}
