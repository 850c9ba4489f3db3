/*!
Kubernetes clients. An EKS cluster's own kubeconfig runs `aws eks get-token` as
an exec plugin, so it needs the AWS CLI installed and configured the same way
as karpctl. Instead, by default karpctl connects straight to the cluster's
endpoint with its CA and a token minted in-process ([`token`]) from the same
credentials the AWS SDK calls use. `--kubeconfig`/`--context` still win, for
clusters reached through a proxy or users who want their own auth.
*/

pub mod token;

use anyhow::{bail, Context as _};
use base64::Engine as _;

use crate::cli::Global;

/// What is needed to reach an EKS API server without a kubeconfig
/// (from `eks:DescribeCluster`: `endpoint`, `certificateAuthority.data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterAccess {
    /// `https://…eks.amazonaws.com`.
    pub endpoint: String,
    /// Base64 of the PEM CA bundle, as EKS returns it.
    pub ca_base64: String,
    pub cluster_name: String,
    pub region: String,
}

/// A client for the cluster: from `--kubeconfig`/`--context` when given,
/// otherwise from `facts` with an in-process EKS token.
pub async fn client(g: &Global, facts: Option<&ClusterAccess>) -> anyhow::Result<::kube::Client> {
    if g.kubeconfig.is_some() || g.context.is_some() {
        return from_kubeconfig(g).await;
    }
    let Some(access) = facts.filter(|a| !a.endpoint.is_empty()) else {
        bail!("no kubeconfig given and the cluster's endpoint is unknown (pass --kubeconfig, or let karpctl read the cluster with eks:DescribeCluster)");
    };
    let cfg = crate::aws::sdk_config(g, Some(&access.region)).await;
    client_for_cluster(&cfg, access).await
}

/// A client for `access`, authenticated with a token minted from `cfg`'s credentials.
pub async fn client_for_cluster(cfg: &aws_config::SdkConfig, access: &ClusterAccess) -> anyhow::Result<::kube::Client> {
    let tok = token::token(cfg, &access.region, &access.cluster_name)
        .await
        .with_context(|| format!("minting an EKS token for cluster `{}`", access.cluster_name))?;
    client_with_token(access, &tok.token)
}

/// A client for `access` sending `bearer` as its token (pure: no network until used).
pub fn client_with_token(access: &ClusterAccess, bearer: &str) -> anyhow::Result<::kube::Client> {
    let config = config_with_token(access, bearer)?;
    ::kube::Client::try_from(config).with_context(|| format!("building a Kubernetes client for cluster `{}`", access.cluster_name))
}

/// The kube-rs config for `access` with `bearer` (endpoint, CA roots, token).
pub fn config_with_token(access: &ClusterAccess, bearer: &str) -> anyhow::Result<::kube::Config> {
    if access.endpoint.is_empty() {
        bail!("the endpoint of cluster `{}` is unknown", access.cluster_name);
    }
    let url = access
        .endpoint
        .parse()
        .with_context(|| format!("parsing the endpoint `{}` of cluster `{}`", access.endpoint, access.cluster_name))?;
    let mut config = ::kube::Config::new(url);
    if config.cluster_url.scheme_str() != Some("https") {
        bail!("the endpoint `{}` of cluster `{}` is not https", access.endpoint, access.cluster_name);
    }
    let roots = ca_roots(&access.ca_base64).with_context(|| format!("reading the certificate authority of cluster `{}`", access.cluster_name))?;
    config.root_cert = Some(roots);
    config.auth_info.token = Some(bearer.to_string().into());
    Ok(config)
}

/// DER certificates from EKS's `certificateAuthority.data` (base64 of a PEM bundle).
pub fn ca_roots(ca_base64: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let compact: String = ca_base64.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() {
        bail!("the certificate authority data is empty");
    }
    let pem = b64.decode(compact).context("the certificate authority data is not base64")?;
    let pem = String::from_utf8(pem).context("the certificate authority data is not a PEM text")?;
    let mut certs = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        match (line, &mut body) {
            ("-----BEGIN CERTIFICATE-----", None) => body = Some(String::new()),
            ("-----END CERTIFICATE-----", Some(b)) => {
                certs.push(b64.decode(b.as_bytes()).context("a certificate in the CA bundle is not base64")?);
                body = None;
            }
            (l, Some(b)) => b.push_str(l),
            _ => {}
        }
    }
    if body.is_some() {
        bail!("the CA bundle ends inside a certificate");
    }
    if certs.is_empty() {
        bail!("the CA bundle holds no certificate");
    }
    Ok(certs)
}

async fn from_kubeconfig(g: &Global) -> anyhow::Result<::kube::Client> {
    let options = ::kube::config::KubeConfigOptions { context: g.context.clone(), cluster: None, user: None };
    let config = match &g.kubeconfig {
        Some(path) => {
            let kc = ::kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig `{}`", path.display()))?;
            ::kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .with_context(|| format!("loading kubeconfig `{}`", path.display()))?
        }
        None => ::kube::Config::from_kubeconfig(&options).await.context("loading the default kubeconfig")?,
    };
    ::kube::Client::try_from(config).context("building a Kubernetes client from the kubeconfig")
}
