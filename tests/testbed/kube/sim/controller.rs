//! The kubelet's part for the one pod the bed must really run: the Karpenter controller.
//!
//! The bed has no container runtime, so the Deployment that the real chart rendered from
//! karpctl's values is run as a process of the real controller built from the pinned module
//! (`scripts/testbed-karpenter.sh bin`, the kwok build: its EC2 fleet is in-process, every
//! other AWS call goes to the emulator). The process gets what the pod would get: the
//! container's env resolved as the kubelet resolves it (values, field and resource
//! references, ConfigMap and Secret keys), a kubeconfig holding a token of the pod's
//! ServiceAccount (so the chart's RBAC is what it runs with), and AWS credentials only the
//! way EKS would hand them out: a Pod Identity association for that ServiceAccount, or an
//! IRSA role annotation whose role exists and trusts it through web identity (the STS
//! exchange itself is not played: the provider's STS client ignores AWS_ENDPOINT_URL). Without
//! either it runs with no credentials, as the pod would. Ports the pod would own are moved
//! to free loopback ports. The Deployment is available only while the process answers
//! `/readyz`; a changed template restarts it, a deleted or scaled-to-zero Deployment stops it.
//! One process per Deployment, whatever `replicas` says (leader election would idle the rest).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Secret, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A Karpenter release as the bed runs it: the kwok build of its controller and the module
/// it was built from (for the kwok flavour's own manifests).
pub struct Release {
    pub binary: PathBuf,
    pub module_dir: PathBuf,
}

/// The [`Release`] of a Karpenter version, e.g. "1.14.1".
pub type BinaryFor = std::sync::Arc<dyn Fn(&str) -> Result<Release> + Send + Sync>;

/// Releases from `scripts/testbed-karpenter.sh bin|crds VERSION` (built and cached on first use).
pub fn binaries_from_script(script: PathBuf) -> BinaryFor {
    std::sync::Arc::new(move |version: &str| {
        let run = |cmd: &str| -> Result<PathBuf> {
            let out = std::process::Command::new(&script)
                .args([cmd, version])
                .stderr(std::process::Stdio::inherit())
                .output()
                .with_context(|| format!("running {}", script.display()))?;
            anyhow::ensure!(out.status.success(), "{} {cmd} {version} failed", script.display());
            Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
        };
        let binary = run("bin")?;
        // `crds` prints <module>/pkg/apis/crds.
        let crds = run("crds")?;
        let module_dir = crds.ancestors().nth(3).context("the CRD directory is not inside a module")?.to_path_buf();
        Ok(Release { binary, module_dir })
    })
}

/// How to run the controller for this bed.
#[derive(Clone)]
pub struct ControllerSpec {
    /// The kwok build of karpenter-provider-aws at the version the Deployment runs (its
    /// `app.kubernetes.io/version` label, the chart's appVersion).
    pub binary_for: BinaryFor,
    /// The API server as the process reaches it, and its CA (PEM).
    pub server: String,
    pub ca_pem: Vec<u8>,
    /// The AWS emulator the process talks to (AWS_ENDPOINT_URL), and its region.
    pub aws_endpoint: String,
    pub region: String,
    /// Where the process's log, kubeconfig and tokens go.
    pub work_dir: PathBuf,
}

impl ControllerSpec {
    /// The server and CA of the first cluster in an admin kubeconfig of the bed.
    pub fn from_kubeconfig(kubeconfig: &Path, binary_for: BinaryFor, aws_endpoint: String, region: String, work_dir: PathBuf) -> Result<ControllerSpec> {
        let text = std::fs::read_to_string(kubeconfig).with_context(|| format!("reading {}", kubeconfig.display()))?;
        let doc: serde_json::Value = serde_yaml::from_str(&text)?;
        let cluster = &doc["clusters"][0]["cluster"];
        let server = cluster["server"].as_str().context("the kubeconfig names no server")?.to_string();
        let ca_pem = match (cluster["certificate-authority-data"].as_str(), cluster["certificate-authority"].as_str()) {
            (Some(data), _) => base64::Engine::decode(&base64::engine::general_purpose::STANDARD, data)?,
            (None, Some(file)) => std::fs::read(file)?,
            (None, None) => anyhow::bail!("the kubeconfig has no certificate authority"),
        };
        Ok(ControllerSpec { binary_for, server, ca_pem, aws_endpoint, region, work_dir })
    }
}

/// True for the Deployment of a Karpenter controller (any release name or namespace).
pub fn is_karpenter(d: &Deployment) -> bool {
    controller_container(d).is_some()
}

fn controller_container(d: &Deployment) -> Option<&Container> {
    let pod = d.spec.as_ref()?.template.spec.as_ref()?;
    pod.containers.iter().find(|c| c.image.as_deref().is_some_and(|i| i.contains("karpenter/controller")))
}

/// The access key ids the controller signs with under Pod Identity and IRSA: never the
/// tests' own, so the emulator counts the two apart.
pub const POD_IDENTITY_KEY: &str = "karpenter-pod-identity";
pub const IRSA_KEY: &str = "karpenter-irsa";

/// How often a running controller's credentials are looked at again.
const CREDS_RECHECK: Duration = Duration::from_secs(10);

struct Proc {
    /// The Deployment's pod template it was started from ([`template_key`]).
    template: String,
    /// How it got AWS credentials ([`Creds::kind`]), and when that was last checked.
    creds: String,
    creds_checked: Instant,
    child: tokio::process::Child,
    health_port: u16,
    log: PathBuf,
    ready: bool,
    started: Instant,
}

/// The controller processes, one per Karpenter Deployment.
pub struct Runner {
    spec: ControllerSpec,
    aws: aws_config::SdkConfig,
    procs: tokio::sync::Mutex<BTreeMap<String, Proc>>,
    /// Deployments whose last start failed, with when to try again (a crash-loop backoff).
    backoff: std::sync::Mutex<BTreeMap<String, (Instant, Duration)>>,
    /// What `ready()` answers, refreshed every reconcile (read from the Deployment pass).
    ready: std::sync::Mutex<BTreeMap<String, bool>>,
}

impl Runner {
    pub async fn new(spec: ControllerSpec) -> Result<Runner> {
        std::fs::create_dir_all(&spec.work_dir).with_context(|| format!("creating {}", spec.work_dir.display()))?;
        let creds = aws_credential_types::Credentials::new("testing", "testing", None, None, "testbed-sim");
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&spec.aws_endpoint)
            .region(aws_config::Region::new(spec.region.clone()))
            .credentials_provider(creds)
            .load()
            .await;
        Ok(Runner { spec, aws, procs: Default::default(), backoff: Default::default(), ready: Default::default() })
    }

    /// Whether the controller of Deployment `ns/name` answers `/readyz`; None when this runner
    /// does not run that Deployment (then the Deployment pass treats it like any other).
    pub fn ready(&self, d: &Deployment) -> Option<bool> {
        if !is_karpenter(d) {
            return None;
        }
        Some(self.ready.lock().unwrap().get(&key(d)).copied().unwrap_or(false))
    }

    /// One pass: start, restart or stop processes so that each Karpenter Deployment with
    /// replicas runs exactly one, with the env of its current template. Returns what changed.
    pub async fn reconcile(&self, client: &Client) -> Result<Vec<String>> {
        let deploys = Api::<Deployment>::all(client.clone()).list(&ListParams::default()).await?.items;
        let mut did = Vec::new();
        let mut procs = self.procs.lock().await;
        let wanted: BTreeMap<String, &Deployment> = deploys
            .iter()
            .filter(|d| is_karpenter(d) && d.metadata.deletion_timestamp.is_none())
            .filter(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1) > 0)
            .map(|d| (key(d), d))
            .collect();
        // Stop what no longer has a Deployment (uninstalled, scaled to zero).
        let gone: Vec<String> = procs.keys().filter(|k| !wanted.contains_key(*k)).cloned().collect();
        for k in gone {
            if let Some(p) = procs.remove(&k) {
                stop(p).await;
                remove_kwok_rbac(client).await?;
                did.push(format!("karpenter controller for {k}: stopped (its deployment is gone or scaled to 0)"));
            }
        }
        for (k, d) in &wanted {
            let template = template_key(d);
            let why = match procs.get_mut(k) {
                None => "starting".to_string(),
                Some(p) if p.template != template => "its pod template changed".to_string(),
                Some(p) => match p.child.try_wait() {
                    Ok(None) => {
                        // Credentials can come and go (an association deleted, a role's trust
                        // narrowed): re-checked now and then, as a restarted pod would find them.
                        if p.creds_checked.elapsed() < CREDS_RECHECK {
                            continue;
                        }
                        p.creds_checked = Instant::now();
                        let now = self.credentials(client, d).await?.kind();
                        if now == p.creds {
                            continue;
                        }
                        format!("its AWS credentials changed ({} -> {now})", p.creds)
                    }
                    Ok(Some(status)) => format!("it exited ({status}); last log lines:\n{}", tail(&p.log, 15)),
                    Err(e) => format!("it cannot be waited on ({e})"),
                },
            };
            let crashed = why.starts_with("it exited");
            if let Some(old) = procs.remove(k) {
                stop(old).await;
            }
            {
                let mut b = self.backoff.lock().unwrap();
                if crashed {
                    // A crash loop backs off, 1 s doubling to 20 s, like the kubelet's.
                    let delay = b.get(k).map_or(Duration::from_secs(1), |(_, d)| (*d * 2).min(Duration::from_secs(20)));
                    b.insert(k.clone(), (Instant::now() + delay, delay));
                } else if b.get(k).is_some_and(|(at, _)| Instant::now() < *at) {
                    continue;
                }
            }
            did.push(format!("karpenter controller for {k}: {why}"));
            if crashed {
                continue;
            }
            match self.launch(client, d).await {
                Ok(launch) => {
                    let p = self.spawn(k, template, launch).await?;
                    did.push(format!(
                        "karpenter controller for {k}: started pid {} ({}; log {})",
                        p.child.id().unwrap_or(0),
                        p.creds,
                        p.log.display()
                    ));
                    procs.insert(k.clone(), p);
                }
                Err(e) => {
                    did.push(format!("karpenter controller for {k}: cannot start: {e:#}"));
                    let mut b = self.backoff.lock().unwrap();
                    let delay = b.get(k).map_or(Duration::from_secs(1), |(_, d)| (*d * 2).min(Duration::from_secs(20)));
                    b.insert(k.clone(), (Instant::now() + delay, delay));
                }
            }
        }
        // Readiness, as the kubelet's probe would see it.
        let mut ready = BTreeMap::new();
        for (k, p) in procs.iter_mut() {
            let now = readyz(p.health_port).await;
            if now != p.ready {
                did.push(format!(
                    "karpenter controller for {k}: {} after {:.1}s",
                    if now { "ready" } else { "not ready" },
                    p.started.elapsed().as_secs_f64()
                ));
                p.ready = now;
                if now {
                    self.backoff.lock().unwrap().remove(k);
                }
            }
            ready.insert(k.clone(), now);
        }
        *self.ready.lock().unwrap() = ready;
        Ok(did)
    }

    /// Stops every process (the bed is going away).
    pub async fn shutdown(&self) {
        let mut procs = self.procs.lock().await;
        for (_, p) in std::mem::take(&mut *procs) {
            stop(p).await;
        }
        self.ready.lock().unwrap().clear();
    }

    /// What the kubelet would hand the container: its env, identity and credentials.
    async fn launch(&self, client: &Client, d: &Deployment) -> Result<Launch> {
        let ns = d.namespace().unwrap_or_default();
        let container = controller_container(d).context("no controller container")?;
        let sa = service_account(d);
        let version = d.labels().get("app.kubernetes.io/version").cloned().context("no app.kubernetes.io/version label: which Karpenter is this?")?;
        let Release { binary, module_dir } = (self.spec.binary_for)(&version)?;
        anyhow::ensure!(binary.is_file(), "the Karpenter {version} controller binary {} does not exist", binary.display());
        kwok_rbac(client, &module_dir, &ns, &sa).await?;
        let mut env = resolve_env(client, &ns, &d.name_any(), &sa, container).await?;
        let creds = self.credentials(client, d).await?;
        let dir = self.spec.work_dir.join(key(d).replace('/', "_"));
        std::fs::create_dir_all(&dir)?;
        let token = sa_token(client, &ns, &sa, None).await?;
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &self.spec.server, &self.spec.ca_pem, &token, &format!("system:serviceaccount:{ns}:{sa}"))?;
        env.insert("KUBECONFIG".into(), kubeconfig.display().to_string());
        // In a pod, controller-runtime reads the leader election namespace from the mounted
        // service account's namespace file; out of cluster it has to be told.
        env.entry("LEADER_ELECTION_NAMESPACE".into()).or_insert_with(|| ns.clone());
        env.insert("AWS_ENDPOINT_URL".into(), self.spec.aws_endpoint.clone());
        env.insert("AWS_REGION".into(), self.spec.region.clone());
        env.insert("AWS_DEFAULT_REGION".into(), self.spec.region.clone());
        // The pod has no instance metadata service to fall back on.
        env.insert("AWS_EC2_METADATA_DISABLED".into(), "true".into());
        let kind = creds.kind();
        match creds {
            Creds::PodIdentity => {
                // Its own key, so the emulator tells its requests from the tool's under test.
                env.insert("AWS_ACCESS_KEY_ID".into(), POD_IDENTITY_KEY.into());
                env.insert("AWS_SECRET_ACCESS_KEY".into(), "testing".into());
            }
            Creds::Irsa(role) => {
                // The web identity exchange itself is not played: the provider's STS client
                // ignores AWS_ENDPOINT_URL (it would look up the real STS host), so the
                // controller gets static keys of its own, but only after the checks above
                // found the role and its trust in this ServiceAccount as EKS would need them.
                env.insert("AWS_ACCESS_KEY_ID".into(), IRSA_KEY.into());
                env.insert("AWS_SECRET_ACCESS_KEY".into(), "testing".into());
                env.insert("AWS_ROLE_ARN".into(), role);
            }
            Creds::None(_) => {}
        }
        Ok(Launch { creds: kind, binary, env, dir })
    }

    /// How EKS would give the pod's ServiceAccount AWS credentials, if at all.
    async fn credentials(&self, client: &Client, d: &Deployment) -> Result<Creds> {
        let ns = &d.namespace().unwrap_or_default();
        let sa = &service_account(d);
        let cluster = &controller_container(d)
            .and_then(|c| c.env.iter().flatten().find(|e| e.name == "CLUSTER_NAME").and_then(|e| e.value.clone()))
            .unwrap_or_default();
        let eks = aws_sdk_eks::Client::new(&self.aws);
        if !cluster.is_empty() {
            if let Ok(out) = eks.list_pod_identity_associations().cluster_name(cluster).namespace(ns).service_account(sa).send().await {
                if !out.associations().is_empty() {
                    return Ok(Creds::PodIdentity);
                }
            }
        }
        let account = Api::<ServiceAccount>::namespaced(client.clone(), ns).get_opt(sa).await?;
        let annotated = account.as_ref().and_then(|a| a.annotations().get("eks.amazonaws.com/role-arn").cloned());
        let Some(role_arn) = annotated else {
            return Ok(Creds::None(format!("no Pod Identity association and no IRSA annotation for {ns}/{sa}")));
        };
        let name = role_arn.rsplit('/').next().unwrap_or_default().to_string();
        let iam = aws_sdk_iam::Client::new(&self.aws);
        let role = match iam.get_role().role_name(&name).send().await {
            Ok(r) => r,
            Err(e) => return Ok(Creds::None(format!("IRSA role {role_arn}: {}", aws_sdk_iam::error::DisplayErrorContext(e)))),
        };
        let trust = role.role().and_then(|r| r.assume_role_policy_document()).unwrap_or_default();
        let trust = percent_encoding::percent_decode_str(trust).decode_utf8_lossy().to_string();
        let subject = format!("system:serviceaccount:{ns}:{sa}");
        if !trust.contains("sts:AssumeRoleWithWebIdentity") || !trust.contains(&subject) {
            return Ok(Creds::None(format!("IRSA role {role_arn} does not trust {subject} through web identity")));
        }
        Ok(Creds::Irsa(role_arn))
    }

    async fn spawn(&self, k: &str, template: String, launch: Launch) -> Result<Proc> {
        let health_port = free_port()?;
        let metrics_port = free_port()?;
        let mut env = launch.env;
        env.insert("HEALTH_PROBE_PORT".into(), health_port.to_string());
        env.insert("METRICS_PORT".into(), metrics_port.to_string());
        let log = launch.dir.join("controller.log");
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = tokio::process::Command::new(&launch.binary);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &launch.dir)
            .envs(&env)
            .current_dir(&launch.dir)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {} for {k}", launch.binary.display()))?;
        Ok(Proc { template, creds: launch.creds, creds_checked: Instant::now(), child, health_port, log, ready: false, started: Instant::now() })
    }
}

struct Launch {
    creds: String,
    binary: PathBuf,
    env: BTreeMap<String, String>,
    dir: PathBuf,
}

enum Creds {
    PodIdentity,
    Irsa(String),
    /// No credentials, and why (logged in the fingerprint's kind).
    None(String),
}

impl Creds {
    fn kind(&self) -> String {
        match self {
            Creds::PodIdentity => "pod-identity".into(),
            Creds::Irsa(r) => format!("irsa:{r}"),
            Creds::None(why) => format!("none: {why}"),
        }
    }
}

fn service_account(d: &Deployment) -> String {
    d.spec.as_ref().and_then(|s| s.template.spec.as_ref()).and_then(|p| p.service_account_name.clone()).unwrap_or_else(|| "default".into())
}

/// What a running controller was started from: the pod template, as a restart's trigger.
fn template_key(d: &Deployment) -> String {
    let t = d.spec.as_ref().map(|s| serde_json::to_string(&s.template).unwrap_or_default()).unwrap_or_default();
    format!("{}:{:016x}", d.metadata.uid.as_deref().unwrap_or_default(), super::fnv(t.as_bytes()))
}

fn key(d: &Deployment) -> String {
    format!("{}/{}", d.namespace().unwrap_or_default(), d.name_any())
}

/// The container's environment as the kubelet resolves it.
async fn resolve_env(client: &Client, ns: &str, deploy: &str, sa: &str, c: &Container) -> Result<BTreeMap<String, String>> {
    let mut env = BTreeMap::new();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            let cm = Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(&r.name).await?;
            match cm {
                Some(cm) => env.extend(cm.data.unwrap_or_default().into_iter().map(|(k, v)| (format!("{prefix}{k}"), v))),
                None if r.optional == Some(true) => {}
                None => anyhow::bail!("envFrom: ConfigMap {ns}/{} does not exist", r.name),
            }
        }
        if let Some(r) = &from.secret_ref {
            let s = Api::<Secret>::namespaced(client.clone(), ns).get_opt(&r.name).await?;
            match s {
                Some(s) => env.extend(
                    s.data.unwrap_or_default().into_iter().map(|(k, v)| (format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned())),
                ),
                None if r.optional == Some(true) => {}
                None => anyhow::bail!("envFrom: Secret {ns}/{} does not exist", r.name),
            }
        }
    }
    for v in c.env.iter().flatten() {
        if let Some(value) = env_value(client, ns, deploy, sa, c, v).await? {
            env.insert(v.name.clone(), expand(&value, &env));
        }
    }
    Ok(env)
}

async fn env_value(client: &Client, ns: &str, deploy: &str, sa: &str, c: &Container, v: &EnvVar) -> Result<Option<String>> {
    let Some(from) = &v.value_from else { return Ok(Some(v.value.clone().unwrap_or_default())) };
    if let Some(f) = &from.field_ref {
        return Ok(Some(match f.field_path.as_str() {
            "metadata.namespace" => ns.to_string(),
            "metadata.name" => format!("{deploy}-0"),
            "spec.serviceAccountName" => sa.to_string(),
            "spec.nodeName" => "testbed-node".into(),
            "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
            other => anyhow::bail!("env {}: fieldRef {other} is not resolved by the test bed", v.name),
        }));
    }
    if let Some(r) = &from.resource_field_ref {
        let res = c.resources.as_ref();
        let (kind, which) = r.resource.split_once('.').context("resourceFieldRef without a kind")?;
        let map = match kind {
            "requests" => res.and_then(|r| r.requests.as_ref()),
            _ => res.and_then(|r| r.limits.as_ref()),
        };
        // Unset limits resolve to the node's allocatable, as the kubelet does (4 CPUs, 16 GiB here).
        let q = map.and_then(|m| m.get(which)).map(|q| super::quantity(&q.0)).unwrap_or(match which {
            "cpu" => 4.0,
            _ => 16.0 * 1024.0 * 1024.0 * 1024.0,
        });
        let divisor = r.divisor.as_ref().map(|d| super::quantity(&d.0)).filter(|d| *d > 0.0).unwrap_or(1.0);
        return Ok(Some(format!("{}", (q / divisor).ceil() as i64)));
    }
    if let Some(r) = &from.config_map_key_ref {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns).get_opt(&r.name).await?;
        let found = cm.and_then(|cm| cm.data).and_then(|d| d.get(&r.key).cloned());
        return match found {
            Some(x) => Ok(Some(x)),
            None if r.optional == Some(true) => Ok(None),
            None => anyhow::bail!("env {}: key {} of ConfigMap {ns}/{} does not exist", v.name, r.key, r.name),
        };
    }
    if let Some(r) = &from.secret_key_ref {
        let s = Api::<Secret>::namespaced(client.clone(), ns).get_opt(&r.name).await?;
        let found = s.and_then(|s| s.data).and_then(|d| d.get(&r.key).map(|b| String::from_utf8_lossy(&b.0).into_owned()));
        return match found {
            Some(x) => Ok(Some(x)),
            None if r.optional == Some(true) => Ok(None),
            None => anyhow::bail!("env {}: key {} of Secret {ns}/{} does not exist", v.name, r.key, r.name),
        };
    }
    Ok(None)
}

/// `$(VAR)` references to earlier variables, as the kubelet expands them (`$$` escapes).
fn expand(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(inner) = after.strip_prefix('(').and_then(|a| a.find(')').map(|j| (&a[..j], &a[j + 1..]))) {
            match env.get(inner.0) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(inner.0);
                    out.push(')');
                }
            }
            rest = inner.1;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A token of the ServiceAccount, as the kubelet projects it (an hour; the bed is short-lived
/// and a restart gets a new one). `audience` None is the API server's own.
async fn sa_token(client: &Client, ns: &str, sa: &str, audience: Option<&str>) -> Result<String> {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    let mut spec = json!({"spec": {"expirationSeconds": 86400}});
    if let Some(a) = audience {
        spec["spec"]["audiences"] = json!([a]);
    }
    let req: TokenRequest = serde_json::from_value(spec)?;
    let out = api
        .create_token_request(sa, &PostParams::default(), &req)
        .await
        .with_context(|| format!("requesting a token for ServiceAccount {ns}/{sa}"))?;
    out.status.map(|s| s.token).context("the TokenRequest came back without a token")
}

fn write_kubeconfig(path: &Path, server: &str, ca_pem: &[u8], token: &str, user: &str) -> Result<()> {
    let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, ca_pem);
    let doc = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "pod",
        "clusters": [{"name": "bed", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "pod", "context": {"cluster": "bed", "user": user}}],
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_yaml::to_string(&doc)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// GET /readyz on the health probe port: true on a 200.
async fn readyz(port: u16) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).await.ok()?;
        let line = String::from_utf8_lossy(&buf[..n]).to_string();
        Some(line.split_whitespace().nth(1) == Some("200"))
    };
    tokio::time::timeout(Duration::from_secs(2), probe).await.ok().flatten().unwrap_or(false)
}

/// The kwok flavour keeps its fake instances in ConfigMaps and writes Nodes itself, which the
/// chart's RBAC (made for the real controller) does not allow: its module ships a ClusterRole
/// for that (`kwok/manifests/clusterrole.yaml`, applied beside the chart by upstream's kwok
/// setup). The bed applies it, bound to the Deployment's ServiceAccount, while the controller
/// runs, and removes it when the Deployment goes. Nothing karpctl installs is widened.
async fn kwok_rbac(client: &Client, module_dir: &Path, ns: &str, sa: &str) -> Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let file = module_dir.join("kwok/manifests/clusterrole.yaml");
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let pp = kube::api::PatchParams::apply(KWOK_RBAC_MANAGER).force();
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    for mut v in docs {
        v["metadata"]["name"] = KWOK_RBAC_NAME.into();
        v["metadata"]["labels"] = json!({KWOK_RBAC_LABEL: "true"});
        match v["kind"].as_str() {
            Some("ClusterRole") => {
                let api = Api::<ClusterRole>::all(client.clone());
                api.patch(KWOK_RBAC_NAME, &pp, &kube::api::Patch::Apply(&v)).await?;
            }
            Some("ClusterRoleBinding") => {
                v["roleRef"]["name"] = KWOK_RBAC_NAME.into();
                v["subjects"] = json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}]);
                let api = Api::<ClusterRoleBinding>::all(client.clone());
                api.patch(KWOK_RBAC_NAME, &pp, &kube::api::Patch::Apply(&v)).await?;
            }
            other => anyhow::bail!("{}: unexpected kind {other:?}", file.display()),
        }
    }
    Ok(())
}

async fn remove_kwok_rbac(client: &Client) -> Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let dp = kube::api::DeleteParams::default();
    for r in [
        Api::<ClusterRoleBinding>::all(client.clone()).delete(KWOK_RBAC_NAME, &dp).await.map(|_| ()),
        Api::<ClusterRole>::all(client.clone()).delete(KWOK_RBAC_NAME, &dp).await.map(|_| ()),
    ] {
        match r {
            Ok(()) => {}
            Err(e) if super::code(&e) == Some(404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

const KWOK_RBAC_NAME: &str = "testbed-kwok-karpenter-extra";
const KWOK_RBAC_MANAGER: &str = "karpctl-testbed-kubelet";
/// Marks what the bed adds for the kwok flavour (test inventories leave it out).
pub const KWOK_RBAC_LABEL: &str = "karpctl.testbed/kwok";

/// SIGTERM, up to 10 s to exit (leader election lets go on a clean stop), then SIGKILL.
async fn stop(mut p: Proc) {
    if let Some(pid) = p.child.id() {
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    if tokio::time::timeout(Duration::from_secs(10), p.child.wait()).await.is_err() {
        let _ = p.child.kill().await;
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
