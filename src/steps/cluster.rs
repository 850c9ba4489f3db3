/*!
Step `cluster/<name>`: reads the EKS cluster (DescribeCluster) and records the
facts later steps need: Kubernetes version, endpoint, CA, OIDC issuer, VPC,
subnets, cluster security group, authentication mode, service CIDR. It changes
nothing and is looked up on every run, so an upgraded cluster is noticed.
*/

use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::aws::AwsError;
use crate::engine::{Change, Step, StepCx};

/// What later steps (and `doctor`) read of the cluster: the `cluster/<name>` outputs.
pub fn facts(c: &aws_sdk_eks::types::Cluster) -> Value {
    let vpc = c.resources_vpc_config.as_ref();
    json!({
        "arn": c.arn,
        "version": c.version,
        "platformVersion": c.platform_version,
        "endpoint": c.endpoint,
        "certificateAuthority": c.certificate_authority.as_ref().and_then(|a| a.data.clone()),
        "oidcIssuer": c.identity.as_ref().and_then(|i| i.oidc.as_ref()).and_then(|o| o.issuer.clone()),
        "vpcId": vpc.and_then(|v| v.vpc_id.clone()),
        "subnetIds": vpc.and_then(|v| v.subnet_ids.clone()).unwrap_or_default(),
        "clusterSecurityGroupId": vpc.and_then(|v| v.cluster_security_group_id.clone()),
        "authenticationMode": c.access_config.as_ref().and_then(|a| a.authentication_mode.as_ref()).map(|m| m.as_str().to_string()),
        "serviceIpv4Cidr": c.kubernetes_network_config.as_ref().and_then(|k| k.service_ipv4_cidr.clone()),
    })
}

pub struct ClusterFacts {
    pub name: String,
    pub eks: aws_sdk_eks::Client,
}

pub fn id(name: &str) -> String {
    format!("cluster/{name}")
}

impl Step for ClusterFacts {
    fn id(&self) -> String {
        id(&self.name)
    }
    fn kind(&self) -> &'static str {
        "cluster-facts"
    }
    fn always_observe(&self) -> bool {
        true
    }
    fn inputs(&self) -> Value {
        json!({"name": self.name})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            cx.progress("DescribeCluster");
            let out = match self.eks.describe_cluster().name(&self.name).send().await {
                Ok(o) => o,
                Err(e) => {
                    let err = AwsError::from_sdk("eks:DescribeCluster", &e);
                    if err.is_not_found() {
                        anyhow::bail!(
                            "EKS cluster {:?} not found in this account and region ({err}); check cluster.name and --region",
                            self.name
                        );
                    }
                    return Err(err.into());
                }
            };
            let c = out.cluster.ok_or_else(|| anyhow::anyhow!("DescribeCluster returned no cluster"))?;
            let status = c.status.as_ref().map(|s| s.as_str().to_string()).unwrap_or_default();
            if status != "ACTIVE" {
                anyhow::bail!("EKS cluster {:?} is {status}; karpctl needs it ACTIVE", self.name);
            }
            Ok(facts(&c))
        })
    }
    fn diff(&self, _observed: &Value, _cx: &StepCx<'_>) -> Change {
        // Read only: the facts are recorded as outputs.
        Change::none()
    }
    fn apply<'a>(&'a self, _cx: &'a StepCx<'a>, observed: &'a Value, _change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move { Ok(observed.clone()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::diff_table::{check, quiet_cx, Row};
    use crate::engine::Action;

    #[test]
    fn diff_table() {
        let s = ClusterFacts { name: "demo".into(), eks: aws_sdk_eks::Client::from_conf(aws_sdk_eks::Config::builder().behavior_version_latest().build()) };
        let facts = json!({
            "arn": "arn:aws:eks:us-east-1:111122223333:cluster/demo", "version": "1.31", "platformVersion": "eks.12",
            "endpoint": "https://ABC.gr7.us-east-1.eks.amazonaws.com", "certificateAuthority": "LS0t", "oidcIssuer": "https://oidc.eks.us-east-1.amazonaws.com/id/ABC",
            "vpcId": "vpc-1", "subnetIds": ["subnet-1", "subnet-2"], "clusterSecurityGroupId": "sg-1", "authenticationMode": "API_AND_CONFIG_MAP",
            "serviceIpv4Cidr": "10.100.0.0/16",
        });
        let sparse = json!({"arn": null, "version": "1.30", "platformVersion": null, "endpoint": null, "certificateAuthority": null, "oidcIssuer": null,
                            "vpcId": null, "subnetIds": [], "clusterSecurityGroupId": null, "authenticationMode": null, "serviceIpv4Cidr": null});
        // Read only: whatever DescribeCluster said, nothing changes (an inactive or missing cluster fails in observe).
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("full facts", facts, Action::None, false, "up to date", &[]),
            ("facts with most fields absent", sparse, Action::None, false, "up to date", &[]),
            ("nothing observed", json!({}), Action::None, false, "up to date", &[]),
        ];
        let cx = quiet_cx(None);
        for (name, observed, action, destructive, summary, fields) in rows {
            check(name, &s.diff(&observed, &cx), action, destructive, summary, fields);
        }
    }
}
