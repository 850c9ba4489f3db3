/*!
Kubernetes clients. An EKS cluster's own kubeconfig runs `aws eks get-token` as
an exec plugin, so it needs the AWS CLI installed and configured the same way
as karpctl. Instead, by default karpctl connects straight to the cluster's
endpoint with its CA and a token minted in-process ([`token`]) from the same
credentials the AWS SDK calls use, and kept current for the life of the client
([`auth`]: re-minted after [`auth::REFRESH_AFTER`] or a 401). `--kubeconfig`/
`--context` still win, for clusters reached through a proxy or users who want
their own auth.
*/

pub mod apply;
pub mod auth;
pub mod connect;
pub mod helm_store;
pub mod token;

pub use connect::{Connector, Settings};

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use base64::Engine as _;


/// Whether an error (anywhere in its chain) is one the API server may not give
/// next time: no connection (restarting, a network blip), 429, or a 5xx. Polling
/// loops ask again on these instead of failing the step.
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain().any(|c| match c.downcast_ref::<::kube::Error>() {
        Some(::kube::Error::Api(s)) => s.code == 429 || (500..600).contains(&s.code),
        Some(::kube::Error::HyperError(_) | ::kube::Error::Service(_)) => true,
        _ => c.downcast_ref::<std::io::Error>().is_some(),
    })
}

/// Whether a Kubernetes API error means "not there": the object is missing
/// (`NotFound`), or the API server does not serve its kind at all — after the
/// CRD is deleted it answers a plain-text `404 page not found`, which kube-rs's
/// `Status::is_not_found` does not recognise (its reason is not `NotFound`).
pub fn not_found(s: &::kube::core::Status) -> bool {
    s.is_not_found() || s.code == 404
}

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

/// A client for `access`, authenticated with EKS tokens minted from `cfg`'s
/// credentials: the first one now (so missing credentials fail here), later ones
/// when the token is [`auth::REFRESH_AFTER`] old or the server answers 401.
pub async fn client_for_cluster(cfg: &aws_config::SdkConfig, access: &ClusterAccess) -> anyhow::Result<::kube::Client> {
    let source = Arc::new(auth::EksTokenSource::new(cfg, &access.region, &access.cluster_name));
    let cache = token_cache(access, source, auth::REFRESH_AFTER);
    cache.prime().await?;
    client_with_cache(access, cache)
}

/// A client for `access` whose bearer token comes from `source`, cached and
/// re-minted when older than `refresh_after` or refused with a 401 (see
/// [`auth`]). Mints nothing until the first request; needs a Tokio runtime.
pub fn client_with_source(access: &ClusterAccess, source: Arc<dyn auth::TokenSource>, refresh_after: Duration) -> anyhow::Result<::kube::Client> {
    client_with_cache(access, token_cache(access, source, refresh_after))
}

fn token_cache(access: &ClusterAccess, source: Arc<dyn auth::TokenSource>, refresh_after: Duration) -> Arc<auth::TokenCache> {
    Arc::new(auth::TokenCache::new(source, refresh_after, format!("an EKS token for cluster `{}`", access.cluster_name)))
}

fn client_with_cache(access: &ClusterAccess, cache: Arc<auth::TokenCache>) -> anyhow::Result<::kube::Client> {
    // kube-rs's own stack (TLS against the cluster CA, timeouts, base URI) without
    // auth, wrapped in the layer that sets the current token on every request.
    let config = config_without_token(access)?;
    let builder = ::kube::client::ClientBuilder::try_from(config)
        .with_context(|| format!("building a Kubernetes client for cluster `{}`", access.cluster_name))?;
    Ok(builder.with_layer(&auth::RefreshingAuthLayer::new(cache)).build())
}

/// A client for `access` sending `bearer` as its token, never refreshed (pure: no network until used).
pub fn client_with_token(access: &ClusterAccess, bearer: &str) -> anyhow::Result<::kube::Client> {
    let config = config_with_token(access, bearer)?;
    ::kube::Client::try_from(config).with_context(|| format!("building a Kubernetes client for cluster `{}`", access.cluster_name))
}

/// The kube-rs config for `access` with `bearer` (endpoint, CA roots, token).
pub fn config_with_token(access: &ClusterAccess, bearer: &str) -> anyhow::Result<::kube::Config> {
    let mut config = config_without_token(access)?;
    config.auth_info.token = Some(bearer.to_string().into());
    Ok(config)
}

/// The kube-rs config for `access` without credentials (endpoint, CA roots).
fn config_without_token(access: &ClusterAccess) -> anyhow::Result<::kube::Config> {
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

/// A client from a kubeconfig file (or the default one) and an optional context.
pub async fn from_kubeconfig_parts(kubeconfig: Option<&std::path::Path>, context: Option<&str>) -> anyhow::Result<::kube::Client> {
    let options = ::kube::config::KubeConfigOptions { context: context.map(String::from), cluster: None, user: None };
    let config = match kubeconfig {
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

/// Pacing for waits on the API server (rollouts, CRDs, readiness, deletions): the
/// first checks come quickly, since most waits end within a second, then back off to
/// one read a second so that long waits (minutes of a real rollout) stay cheap.
#[derive(Debug, Clone)]
pub struct Pace {
    next: Duration,
}

impl Pace {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);

    pub fn new() -> Pace {
        Pace { next: Self::FIRST }
    }

    /// The delay before the next check: 100 ms, growing by half each time, capped at 1 s.
    pub fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 3 / 2).min(Self::MAX);
        d
    }

    pub async fn wait(&mut self) {
        tokio::time::sleep(self.delay()).await;
    }
}

impl Default for Pace {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    #[test]
    fn starts_fast_then_backs_off_to_a_second() {
        let mut p = Pace::new();
        let d: Vec<u128> = (0..9).map(|_| p.delay().as_millis()).collect();
        assert_eq!(d, vec![100, 150, 225, 337, 506, 759, 1000, 1000, 1000]);
    }
}
