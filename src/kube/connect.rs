/*!
One connection to the cluster per run, shared by every Kubernetes step: a
kube-rs client and the matching Helm connection, built lazily from the cluster
facts (endpoint + CA from DescribeCluster) or from `--kubeconfig`/`--context`.
Commands that never touch Kubernetes never build either.
*/

use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::ClusterAccess;

/// How the user asked to reach the cluster (`--kubeconfig`, `--context`); with
/// neither, karpctl goes by what EKS says (endpoint, CA) and mints its own token.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// Where the cluster is, as the user said (kubeconfig) or as AWS says (facts).
pub struct Connector {
    kubeconfig: Option<PathBuf>,
    context: Option<String>,
    sdk: aws_config::SdkConfig,
    cluster: String,
    client: OnceCell<::kube::Client>,
    /// Holds the minted kubeconfig Helm uses (0600, removed on drop).
    helm_dir: OnceCell<TempDir>,
    helm_checked: OnceCell<()>,
}

impl Connector {
    pub fn new(s: &Settings, sdk: aws_config::SdkConfig, cluster: &str) -> Connector {
        Connector {
            kubeconfig: s.kubeconfig.clone(),
            context: s.context.clone(),
            sdk,
            cluster: cluster.to_string(),
            client: OnceCell::new(),
            helm_dir: OnceCell::new(),
            helm_checked: OnceCell::new(),
        }
    }

    fn uses_kubeconfig(&self) -> bool {
        self.kubeconfig.is_some() || self.context.is_some()
    }

    /// The cluster's address from the `cluster/<name>` step outputs.
    fn access(&self, facts: Option<&Value>) -> anyhow::Result<ClusterAccess> {
        let f = facts.ok_or_else(|| anyhow::anyhow!("the cluster facts are unknown (the cluster step did not run)"))?;
        let endpoint = f["endpoint"].as_str().unwrap_or_default().to_string();
        let ca = f["certificateAuthority"].as_str().unwrap_or_default().to_string();
        if endpoint.is_empty() || ca.is_empty() {
            anyhow::bail!(
                "EKS reports no endpoint or certificate authority for cluster `{}`; pass --kubeconfig to reach it another way",
                self.cluster
            );
        }
        let region = self.sdk.region().map(|r| r.to_string()).unwrap_or_default();
        Ok(ClusterAccess { endpoint, ca_base64: ca, cluster_name: self.cluster.clone(), region })
    }

    /// The shared kube client (built on first use).
    pub async fn client(&self, facts: Option<&Value>) -> anyhow::Result<::kube::Client> {
        self.client
            .get_or_try_init(|| async {
                if self.uses_kubeconfig() {
                    super::from_kubeconfig_parts(self.kubeconfig.as_deref(), self.context.as_deref()).await
                } else {
                    let access = self.access(facts)?;
                    super::client_for_cluster(&self.sdk, &access).await
                }
            })
            .await
            .cloned()
    }

    /// A Helm runner for the same cluster. Without a kubeconfig, Helm gets a
    /// private kubeconfig holding a freshly minted EKS token (no aws CLI needed).
    pub async fn helm(&self, facts: Option<&Value>) -> anyhow::Result<crate::helm::Helm> {
        let conn = if self.uses_kubeconfig() {
            crate::helm::Conn { kubeconfig: self.kubeconfig.clone(), context: self.context.clone() }
        } else {
            let access = self.access(facts)?;
            let tok = super::token::token(&self.sdk, &access.region, &access.cluster_name)
                .await
                .with_context(|| format!("minting an EKS token for Helm (cluster `{}`)", access.cluster_name))?;
            let dir = self.helm_dir.get_or_try_init(|| async { TempDir::new() }).await?;
            let path = crate::helm::write_kubeconfig(&dir.0, &access.endpoint, &access.ca_base64, &tok.token, &access.cluster_name)
                .context("writing a private kubeconfig for Helm")?;
            crate::helm::Conn { kubeconfig: Some(path), context: None }
        };
        let helm = crate::helm::Helm::locate(conn).map_err(|e| e.with_help())?;
        // Once per run, and only when a step runs helm (a no-op `up` never does).
        self.helm_checked.get_or_try_init(|| async { helm.require_supported().await.map(|_| ()).map_err(|e| e.with_help()) }).await?;
        Ok(helm)
    }
}

/// A private (0700) directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let p = std::env::temp_dir().join(format!("karpctl-{}", uuid::Uuid::new_v4()));
        std::fs::DirBuilder::new().mode(0o700).create(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
