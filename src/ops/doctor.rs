/*!
`karpctl doctor`: preflight checks against the account and cluster, read-only.
Each check says what it found, why it matters and how to fix it, so a failed
`up` is caught before it starts. Independent checks run concurrently.
*/

use crate::cli::{Global, OutputFormat};
use crate::config::types::{CapacityType, Config, IdentityMode};
use crate::config::{self, Names};
use crate::model::version::{kubernetes_minor, KarpenterVersion};

pub use crate::output::{Check, CheckStatus as Status};

use super::{exit, Report};

fn ok(name: &'static str, detail: impl Into<String>) -> Check {
    Check { name, status: Status::Ok, detail: detail.into(), why: None, fix: None, access: None }
}

fn bad(name: &'static str, status: Status, detail: impl Into<String>, why: &str, fix: impl Into<String>) -> Check {
    Check { name, status, detail: detail.into(), why: Some(why.into()), fix: Some(fix.into()), access: None }
}

async fn caller(sdk: &aws_config::SdkConfig) -> Check {
    match crate::aws::sts(sdk).get_caller_identity().send().await {
        Ok(o) => ok("credentials", format!("{} (account {})", o.arn.unwrap_or_default(), o.account.unwrap_or_default())),
        Err(e) => {
            let err = crate::aws::AwsError::from_sdk("sts:GetCallerIdentity", &e);
            let fix = err.help().unwrap_or_else(|| "log in (aws sso login, or set AWS_PROFILE / AWS_ACCESS_KEY_ID) and check --region".into());
            let mut c = bad("credentials", Status::Fail, err.to_string(), "every step calls AWS with these credentials", fix);
            c.access = err.access;
            c
        }
    }
}

/// Once the credentials check found that AWS cannot be asked at all, every other AWS
/// check failed for the same reason: one row says it, the others say they were not checked.
fn not_checked(c: Check) -> Check {
    Check { status: Status::Skip, detail: "not checked: AWS could not be asked (see credentials)".into(), why: None, fix: None, ..c }
}

/// The helm karpctl would run (`$KARPCTL_HELM` or PATH) and its version.
async fn helm() -> Check {
    use crate::helm::{Conn, Helm, HelmError};
    let why = "the CRDs, the controller and the device plugin are installed with helm; Karpenter's chart is OCI, which needs Helm 3.8+";
    let found = Helm::locate(Conn { kubeconfig: None, context: None });
    match found.as_ref().map_err(|e| (e.to_string(), e.help())) {
        Err((e, help)) => bad("helm", Status::Warn, e, why, help.unwrap_or_default()),
        Ok(h) => match h.require_supported().await {
            Ok(v) => ok("helm", format!("helm {v} ({})", h.bin().display())),
            Err(e @ HelmError::Unsupported { .. }) => bad("helm", Status::Fail, e.to_string(), why, e.help().unwrap_or_default()),
            Err(e) => bad("helm", Status::Warn, e.to_string(), why, e.help().unwrap_or_default()),
        },
    }
}

/// The cluster's checks, and its address (endpoint and CA) for the checks through its API.
async fn cluster_checks(c: &Config, sdk: &aws_config::SdkConfig) -> (Vec<Check>, Option<serde_json::Value>) {
    let mut facts = None;
    let out = cluster_rows(c, sdk, &mut facts).await;
    (out, facts)
}

async fn cluster_rows(c: &Config, sdk: &aws_config::SdkConfig, facts: &mut Option<serde_json::Value>) -> Vec<Check> {
    let eks = crate::aws::eks(sdk);
    let mut out = Vec::new();
    let cluster = match eks.describe_cluster().name(&c.cluster.name).send().await {
        Ok(o) => o.cluster,
        Err(e) => {
            let err = crate::aws::AwsError::from_sdk("eks:DescribeCluster", &e);
            let fix = if err.is_not_found() {
                format!("check cluster.name ({}) and the region", c.cluster.name)
            } else {
                err.help().unwrap_or_else(|| "check eks:DescribeCluster permissions for the caller".into())
            };
            let mut check = bad("cluster", Status::Fail, err.to_string(), "karpctl installs onto an existing EKS cluster", fix);
            check.access = err.access;
            out.push(check);
            return out;
        }
    };
    let Some(cl) = cluster else { return out };
    *facts = Some(crate::steps::cluster::facts(&cl));
    let status = cl.status.as_ref().map(|s| s.as_str().to_string()).unwrap_or_default();
    if status == "ACTIVE" {
        out.push(ok("cluster", format!("{} is ACTIVE, Kubernetes {}", c.cluster.name, cl.version.clone().unwrap_or_default())));
    } else {
        out.push(bad("cluster", Status::Fail, format!("{} is {status}", c.cluster.name), "changes to a cluster that is not ACTIVE fail", "wait until the cluster is ACTIVE"));
    }
    let kv = KarpenterVersion::parse(&c.karpenter.version).expect("validated");
    let (lo, hi) = kv.kubernetes_range();
    match cl.version.as_deref().and_then(kubernetes_minor) {
        Some(m) if m < lo || m > hi => out.push(bad(
            "compatibility",
            Status::Fail,
            format!("Karpenter {kv} supports Kubernetes 1.{lo}–1.{hi}; the cluster runs 1.{m}"),
            "an unsupported pair fails at runtime in ways that are hard to diagnose",
            "choose karpenter.version from the compatibility matrix",
        )),
        Some(m) => out.push(ok("compatibility", format!("Karpenter {kv} supports Kubernetes 1.{m}"))),
        None => {}
    }
    if let (Some(want), Some(have)) = (&c.cluster.kubernetes_version, &cl.version) {
        if want != have {
            out.push(bad(
                "kubernetes version",
                Status::Fail,
                format!("config says {want}, the cluster runs {have}"),
                "AMIs are pinned for the configured version",
                format!("set cluster.kubernetesVersion to \"{have}\" or remove it"),
            ));
        }
    }
    let mode = cl.access_config.as_ref().and_then(|a| a.authentication_mode.as_ref()).map(|m| m.as_str().to_string()).unwrap_or_else(|| "CONFIG_MAP".into());
    out.push(match crate::steps::node_access::decide(c.node_access.mode, &mode, &c.cluster.name) {
        Err(r) => bad("node access", Status::Fail, r.detail, r.why, r.fix),
        Ok("access-entry") => ok("node access", format!("EC2_LINUX access entry (authentication mode {mode})")),
        Ok(_) => ok("node access", format!("aws-auth mapping (authentication mode {mode})")),
    });
    let agent = eks.describe_addon().cluster_name(&c.cluster.name).addon_name("eks-pod-identity-agent").send().await;
    let agent = crate::aws::found(agent.map_err(|e| crate::aws::AwsError::from_sdk("eks:DescribeAddon", &e))).map(|a| a.is_some());
    // A failed read (throttling after every retry, a denied call) is not "no agent".
    let agent = match agent {
        Ok(a) => a,
        Err(err) => {
            out.push(bad(
                "controller identity",
                Status::Warn,
                format!("could not check for the eks-pod-identity-agent add-on: {err}"),
                "Pod Identity or IRSA is chosen from it",
                "check eks:DescribeAddon permissions, or run `karpctl doctor` again",
            ));
            return out;
        }
    };
    let issuer = cl.identity.and_then(|i| i.oidc).and_then(|o| o.issuer);
    out.push(match (c.identity.mode, agent) {
        (IdentityMode::PodIdentity, false) => bad(
            "controller identity",
            Status::Fail,
            "identity.mode is pod-identity but the eks-pod-identity-agent add-on is not installed",
            "the controller would run without AWS credentials",
            format!("aws eks create-addon --cluster-name {} --addon-name eks-pod-identity-agent", c.cluster.name),
        ),
        (IdentityMode::Irsa, _) | (IdentityMode::Auto, false) if issuer.is_none() => bad(
            "controller identity",
            Status::Fail,
            "IRSA needs the cluster's OIDC issuer, and the cluster reports none",
            "the controller would run without AWS credentials",
            "use identity.mode: pod-identity with the eks-pod-identity-agent add-on",
        ),
        (IdentityMode::Irsa, _) | (IdentityMode::Auto, false) => ok("controller identity", "IRSA (OIDC provider ensured by up)"),
        _ => ok("controller identity", "EKS Pod Identity (agent add-on present)"),
    });
    // Capacity outside Karpenter for the controller's replicas (it never runs on its own nodes).
    let mut desired = 0;
    if let Ok(list) = eks.list_nodegroups().cluster_name(&c.cluster.name).send().await {
        for ng in list.nodegroups.unwrap_or_default() {
            if let Ok(d) = eks.describe_nodegroup().cluster_name(&c.cluster.name).nodegroup_name(&ng).send().await {
                desired += d.nodegroup.and_then(|n| n.scaling_config).and_then(|s| s.desired_size).unwrap_or(0);
            }
        }
    }
    let replicas = c.karpenter.replicas.unwrap_or(2) as i32;
    out.push(if desired >= replicas.min(2) {
        ok("controller capacity", format!("managed nodegroups want {desired} node(s) for {replicas} controller replica(s)"))
    } else {
        bad(
            "controller capacity",
            Status::Warn,
            format!("managed nodegroups want {desired} node(s); the controller has {replicas} replica(s) that each need a non-Karpenter node"),
            "Karpenter's pods avoid Karpenter nodes and each other, so extra replicas stay Pending",
            "set karpenter.replicas: 1, or scale a managed nodegroup to 2 or more nodes",
        )
    });
    out
}

/// Admission webhooks that Karpenter charts before 1.0 registered (`webhook.enabled`); no
/// chart karpctl installs serves them, so one left behind points at a service that is gone
/// and, failing closed, blocks every write of a NodePool or EC2NodeClass.
const OLD_KARPENTER_WEBHOOKS: &[(&str, &str)] = &[
    ("validatingwebhookconfiguration", "validation.webhook.karpenter.sh"),
    ("validatingwebhookconfiguration", "validation.webhook.config.karpenter.sh"),
    ("validatingwebhookconfiguration", "validation.webhook.karpenter.k8s.aws"),
    ("mutatingwebhookconfiguration", "defaulting.webhook.karpenter.sh"),
    ("mutatingwebhookconfiguration", "defaulting.webhook.karpenter.k8s.aws"),
];

/// The webhook check when the cluster's API could not be read: not a failure of the setup.
fn unlisted(detail: String) -> Check {
    let fix = Some("pass --kubeconfig if the cluster's endpoint is not reachable from here".to_string());
    Check { name: "karpenter webhooks", status: Status::Skip, detail, why: None, fix, access: None }
}

/// The cluster's admission webhooks, read through the cluster's API (or the kubeconfig).
async fn webhooks(c: &Config, g: &Global, sdk: &aws_config::SdkConfig, facts: Option<serde_json::Value>) -> Check {
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
    use kube::api::{Api, ListParams};
    let conn = crate::kube::Connector::new(&g.kube(), sdk.clone(), &c.cluster.name);
    let listed = async {
        let client = conn.client(facts.as_ref()).await?;
        let mut names: Vec<(String, String)> = Vec::new();
        let lp = ListParams::default();
        for w in Api::<ValidatingWebhookConfiguration>::all(client.clone()).list(&lp).await?.items {
            names.push(("validatingwebhookconfiguration".into(), w.metadata.name.unwrap_or_default()));
        }
        for w in Api::<MutatingWebhookConfiguration>::all(client).list(&lp).await?.items {
            names.push(("mutatingwebhookconfiguration".into(), w.metadata.name.unwrap_or_default()));
        }
        anyhow::Ok(names)
    };
    let names = match tokio::time::timeout(std::time::Duration::from_secs(10), listed).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            return unlisted(format!("could not list the cluster's admission webhooks: {e:#}"));
        }
        Err(_) => return unlisted("the cluster's API did not answer within 10s".into()),
    };
    let left: Vec<&(String, String)> = names.iter().filter(|(k, n)| OLD_KARPENTER_WEBHOOKS.iter().any(|(ok, on)| ok == k && on == n)).collect();
    if left.is_empty() {
        return ok("karpenter webhooks", "no admission webhooks left from Karpenter before 1.0");
    }
    let list: Vec<String> = left.iter().map(|(k, n)| format!("{k}/{n}")).collect();
    bad(
        "karpenter webhooks",
        Status::Fail,
        format!("admission webhooks of a Karpenter before 1.0 are still registered: {}", list.join(", ")),
        "no Karpenter that karpctl installs serves them; failing closed, they refuse every NodePool and EC2NodeClass write",
        format!("kubectl delete {}", list.join(" ")),
    )
}

async fn spot_role(c: &Config, sdk: &aws_config::SdkConfig) -> Check {
    let spot = c.node_pools.iter().any(|p| p.capacity_types.contains(&CapacityType::Spot));
    if !spot {
        return Check { name: "spot role", status: Status::Skip, detail: "no pool allows spot".into(), why: None, fix: None, access: None };
    }
    match crate::aws::iam(sdk).get_role().role_name("AWSServiceRoleForEC2Spot").send().await {
        Ok(_) => ok("spot role", "AWSServiceRoleForEC2Spot exists"),
        Err(e) => {
            let err = crate::aws::AwsError::from_sdk("iam:GetRole", &e);
            if err.is_not_found() {
                bad(
                    "spot role",
                    Status::Warn,
                    "AWSServiceRoleForEC2Spot does not exist yet; `karpctl up` creates it",
                    "spot launches fail until the EC2 Spot service-linked role exists",
                    "nothing to do, or: aws iam create-service-linked-role --aws-service-name spot.amazonaws.com",
                )
            } else {
                bad("spot role", Status::Warn, err.to_string(), "karpctl could not check the Spot service-linked role", "check iam:GetRole permissions")
            }
        }
    }
}

/// Every check, concurrently. `with_helm: false` leaves helm out: `up` checks the
/// helm it runs when a step first needs it, so a run that installs nothing never
/// starts it.
pub async fn checks(c: &Config, g: &Global, with_helm: bool) -> Vec<Check> {
    let sdk = crate::aws::sdk_config(&g.aws(), c.cluster.region.as_deref()).await;
    let helm = async {
        if with_helm {
            Some(helm().await)
        } else {
            None
        }
    };
    let (who, (cluster, facts), spot, helm) = tokio::join!(caller(&sdk), cluster_checks(c, &sdk), spot_role(c, &sdk), helm);
    let unreachable = who.access.is_some();
    let hooks = if unreachable || (facts.is_none() && g.kubeconfig.is_none() && g.context.is_none()) {
        unlisted("not checked: the cluster's address is unknown (see cluster)".into())
    } else {
        webhooks(c, g, &sdk, facts).await
    };
    let mut all = vec![who];
    if unreachable {
        all.extend(cluster.into_iter().map(not_checked));
        all.push(if spot.status == Status::Skip { spot } else { not_checked(spot) });
        all.push(hooks);
    } else {
        all.extend(cluster);
        all.push(spot);
        all.push(hooks);
    }
    all.extend(helm);
    let names = Names::of(c);
    all.push(ok("names", format!("stack {}, node role {}, queue {}", names.stack, names.node_role, names.queue)));
    all
}

pub async fn doctor(g: &Global) -> anyhow::Result<Report> {
    let loaded = config::load(&g.config)?;
    let all = checks(&loaded.config, g, true).await;
    let failed = all.iter().filter(|c| c.status == Status::Fail).count();
    let access = all.iter().find_map(|c| c.access);
    let stdout = match g.output {
        OutputFormat::Text => crate::ui::checks_text(&all),
        f => {
            use crate::output::{ApiVersion, Doctor, DoctorKind};
            crate::output::encode(&Doctor { api_version: ApiVersion::V1Alpha1, kind: DoctorKind::Doctor, ok: failed == 0, failed, checks: all }, f)?
        }
    };
    let help = if failed == 0 { Vec::new() } else { vec!["fix what the failed row(s) say, then run `karpctl doctor` again".to_string()] };
    Ok(Report { stdout, warnings: loaded.warnings, exit: if failed == 0 { exit::OK } else { exit::ERROR }, help, aws_access: access, ..Default::default() })
}

/// The preflight's failed checks: `up` stops before changing anything.
#[derive(Debug, thiserror::Error)]
#[error("{summary}")]
pub struct PreflightFailed {
    pub summary: String,
    /// When AWS could not be asked at all.
    pub access: Option<crate::aws::Access>,
}

/// What `up` runs first: the failed checks, or None when all pass.
pub fn blocking(checks: &[Check]) -> Option<PreflightFailed> {
    let failed: Vec<&Check> = checks.iter().filter(|c| c.status == Status::Fail).collect();
    if failed.is_empty() {
        return None;
    }
    let mut s = format!("{} preflight check(s) failed; nothing was changed:\n", failed.len());
    for c in &failed {
        s.push_str(&format!("  {}: {}\n", c.name, c.detail));
        if let Some(f) = &c.fix {
            s.push_str(&format!("    fix: {f}\n"));
        }
    }
    s.push_str("  (`karpctl doctor` shows every check; `karpctl up --skip-preflight` goes on anyway)");
    Some(PreflightFailed { summary: s, access: failed.iter().find_map(|c| c.access) })
}
