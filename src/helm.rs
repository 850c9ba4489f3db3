/*!
The one place karpctl runs the `helm` binary (Helm 3.8+, for OCI charts).

Why a subprocess and not a Go-free reimplementation: the controller and device-plugin
charts are Helm charts with Helm release records, and users inspect, roll back and
uninstall them with their own `helm`. Running the real binary keeps those records
exactly what `helm` itself writes.

What this wrapper guarantees, so steps need not think about it:
- every call has a deadline; helm is asked to stop (SIGTERM, which it turns into a
  cancelled release rather than a stuck `pending-*` one) before it is killed;
- stdin is closed, stdout and stderr are captured, nothing is printed;
- a failure carries the command line as typed and helm's stderr, plus a `help:` hint
  for the failures users hit in practice ([`HelmError::help`]);
- cluster calls go to exactly the cluster described by [`Conn`]: `HELM_KUBE*` and
  `HELM_NAMESPACE` from the user's environment are removed, since they would silently
  override `--kubeconfig`/`--kube-context`. The rest of the environment (registry
  logins, repository config, proxies, `HELM_DRIVER`, plugins) is passed through: plugins
  are left enabled because a mirrored chart may be fetched through a downloader plugin
  (`s3://`, `gs://`), and karpctl never runs plugin commands or post-renderers itself;
- nothing secret is on a command line: values go through a 0600 file, tokens through a
  0600 kubeconfig ([`write_kubeconfig`]).
*/

use std::borrow::Cow;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

/// The environment variable naming the helm binary to use instead of `helm` on PATH.
pub const HELM_ENV: &str = "KARPCTL_HELM";

/// Deadline for calls that only read (list, get, show, version).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline for `upgrade --install` and `uninstall`; also passed to helm as `--timeout`.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(600);
/// How long helm gets to wind down after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(20);
/// How much of helm's stderr an error keeps.
const STDERR_LINES: usize = 40;

const INSTALL_URL: &str = "https://helm.sh/docs/intro/install/";

/// How helm reaches the cluster. Both `None`: `$KUBECONFIG` or `~/.kube/config` and its
/// current context, as the kube client does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conn {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

/// A chart to install or inspect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChartRef {
    /// `oci://registry/path/name`, `repo/name` (a repository the user added) or an
    /// `https://…/chart.tgz` URL. An empty `version` means helm's choice (the latest).
    Remote { reference: String, version: String },
    /// A chart by name from a repository URL (`--repo`), so users need no `helm repo add`.
    Repo { url: String, name: String, version: String },
    /// A chart directory or `.tgz` on disk.
    Local { path: PathBuf },
}

impl ChartRef {
    fn args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let version = match self {
            ChartRef::Remote { reference, version } => {
                a.push(reference.into());
                version
            }
            ChartRef::Repo { url, name, version } => {
                a.extend([name.into(), "--repo".into(), url.into()]);
                version
            }
            ChartRef::Local { path } => {
                a.push(path.into());
                return a;
            }
        };
        if !version.is_empty() {
            a.extend(["--version".into(), version.into()]);
        }
        a
    }

    /// The host the chart is fetched from, when it comes over the network.
    pub fn host(&self) -> Option<&str> {
        let url = match self {
            ChartRef::Remote { reference, .. } => reference.as_str(),
            ChartRef::Repo { url, .. } => url.as_str(),
            ChartRef::Local { .. } => return None,
        };
        let rest = url.split_once("://").map(|(_, r)| r)?;
        rest.split(['/', '?', '#']).next().filter(|h| !h.is_empty())
    }
}

impl fmt::Display for ChartRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChartRef::Remote { reference, version } if version.is_empty() => write!(f, "{reference}"),
            ChartRef::Remote { reference, version } => write!(f, "{reference} {version}"),
            ChartRef::Repo { url, name, version } => write!(f, "{name} {version} from {url}"),
            ChartRef::Local { path } => write!(f, "{}", path.display()),
        }
    }
}

/// `helm version`, e.g. `v3.14.4` → 3, 14, 4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelmVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// As helm printed it.
    pub text: String,
}

impl HelmVersion {
    /// Parses `v3.14.4`, `v3.14.4+g3fc9f4b`, `3.15.0-rc.1`.
    pub fn parse(s: &str) -> Option<HelmVersion> {
        let text = s.trim();
        let core = text.strip_prefix('v').unwrap_or(text);
        let core = core.split(['+', '-']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        let patch = match parts.next() {
            Some(p) => p?,
            None => 0,
        };
        Some(HelmVersion { major, minor, patch, text: text.to_string() })
    }

    /// Helm 3.8 made OCI charts generally available; Karpenter's chart is OCI only.
    pub fn is_supported(&self) -> bool {
        self.major > 3 || (self.major == 3 && self.minor >= 8)
    }
}

impl fmt::Display for HelmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `helm show chart`: the fields karpctl uses from `Chart.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartMeta {
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
    /// The chart's `kubeVersion` constraint, e.g. `>=1.26.0-0`.
    pub kube_version: Option<String>,
}

/// A release's state as helm records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseStatus {
    Deployed,
    Failed,
    PendingInstall,
    PendingUpgrade,
    PendingRollback,
    Uninstalling,
    /// Uninstalled with `--keep-history`; `upgrade --install` starts it again.
    Uninstalled,
    Superseded,
    Unknown,
    Other(String),
}

impl ReleaseStatus {
    pub fn parse(s: &str) -> ReleaseStatus {
        match s {
            "deployed" => ReleaseStatus::Deployed,
            "failed" => ReleaseStatus::Failed,
            "pending-install" => ReleaseStatus::PendingInstall,
            "pending-upgrade" => ReleaseStatus::PendingUpgrade,
            "pending-rollback" => ReleaseStatus::PendingRollback,
            "uninstalling" => ReleaseStatus::Uninstalling,
            "uninstalled" => ReleaseStatus::Uninstalled,
            "superseded" => ReleaseStatus::Superseded,
            "unknown" => ReleaseStatus::Unknown,
            other => ReleaseStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ReleaseStatus::Deployed => "deployed",
            ReleaseStatus::Failed => "failed",
            ReleaseStatus::PendingInstall => "pending-install",
            ReleaseStatus::PendingUpgrade => "pending-upgrade",
            ReleaseStatus::PendingRollback => "pending-rollback",
            ReleaseStatus::Uninstalling => "uninstalling",
            ReleaseStatus::Uninstalled => "uninstalled",
            ReleaseStatus::Superseded => "superseded",
            ReleaseStatus::Unknown => "unknown",
            ReleaseStatus::Other(s) => s,
        }
    }

    /// An operation is (or was, if helm died) under way: helm refuses new ones.
    pub fn is_pending(&self) -> bool {
        matches!(self, ReleaseStatus::PendingInstall | ReleaseStatus::PendingUpgrade | ReleaseStatus::PendingRollback)
    }
}

impl fmt::Display for ReleaseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row of `helm list -o json`, with the chart string split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub name: String,
    pub namespace: String,
    pub revision: u64,
    pub status: ReleaseStatus,
    /// As helm prints it: `<chart name>-<chart version>`, e.g. `karpenter-1.14.1`.
    pub chart: String,
    pub chart_name: String,
    /// Empty when `chart` does not end in a version.
    pub chart_version: String,
    pub app_version: String,
    /// When the last revision was written, as helm prints it.
    pub updated: String,
}

/// A failed helm call.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    #[error("helm was not found: {reason}; karpctl needs Helm 3.8 or newer ({INSTALL_URL})")]
    NotFound { reason: String },

    #[error("{} is Helm {version}; karpctl needs Helm 3.8 or newer (OCI charts)", bin.display())]
    Unsupported { bin: PathBuf, version: HelmVersion },

    #[error("`{command}` failed ({status}):\n{}", framed(stderr))]
    Failed {
        /// The command line as typed (never holds a secret: values and tokens go through files).
        command: String,
        status: ExitStatus,
        /// The last lines of helm's stderr, trimmed.
        stderr: String,
        hint: Option<String>,
    },

    #[error("`{command}` did not finish within {}s and was stopped{}", after.as_secs(), if stderr.is_empty() { String::new() } else { format!(":\n{}", framed(stderr)) })]
    Timeout { command: String, after: Duration, stderr: String, hint: Option<String> },

    #[error("reading the output of `{command}`: {detail}")]
    Parse { command: String, detail: String },

    #[error("the values for release `{release}` must be an object, not `{found}`")]
    ValuesNotAnObject { release: String, found: String },

    #[error("{action}: {source}")]
    Io { action: String, source: io::Error },
}

impl HelmError {
    /// The next thing to try, for failures with a known cause.
    /// The error with its `help:` line, for showing to the user.
    pub fn with_help(self) -> anyhow::Error {
        match self.help() {
            Some(h) => anyhow::anyhow!("{self}\nhelp: {h}"),
            None => self.into(),
        }
    }

    pub fn help(&self) -> Option<String> {
        match self {
            HelmError::NotFound { .. } => Some(format!("install Helm ({INSTALL_URL}), or set {HELM_ENV} to the path of a helm binary")),
            HelmError::Unsupported { .. } => Some(format!("upgrade Helm ({INSTALL_URL}), or set {HELM_ENV} to a newer helm binary")),
            HelmError::Failed { hint, .. } | HelmError::Timeout { hint, .. } => hint.clone(),
            HelmError::Parse { .. } | HelmError::ValuesNotAnObject { .. } | HelmError::Io { .. } => None,
        }
    }
}

fn framed(text: &str) -> String {
    let rule = "-".repeat(72);
    let body = if text.is_empty() { "(helm wrote nothing to stderr)" } else { text };
    format!("{rule}\n{body}\n{rule}")
}

/// A located helm binary and the cluster it talks to.
#[derive(Debug, Clone)]
pub struct Helm {
    bin: PathBuf,
    /// How the binary is shown in command lines: `helm` when found on PATH.
    shown: String,
    conn: Conn,
    query_timeout: Duration,
    change_timeout: Duration,
}

/// What a call is about, for hints.
#[derive(Debug, Clone, Copy, Default)]
struct About<'a> {
    release: Option<(&'a str, &'a str)>,
    chart: Option<&'a ChartRef>,
}

struct Call<'a> {
    args: Vec<OsString>,
    /// Whether the call reaches the cluster (gets `--kubeconfig`/`--kube-context`).
    cluster: bool,
    /// Whether the call changes a release (a timeout may leave it pending).
    changes: bool,
    timeout: Duration,
    about: About<'a>,
}

struct Output {
    command: String,
    stdout: String,
}

impl Helm {
    /// `$KARPCTL_HELM` (a path, or a name looked up on PATH), else `helm` on PATH.
    pub fn locate(conn: Conn) -> Result<Helm, HelmError> {
        Helm::locate_in(std::env::var_os(HELM_ENV).as_deref(), std::env::var_os("PATH").as_deref(), conn)
    }

    /// [`Helm::locate`] with the two environment variables given.
    pub fn locate_in(karpctl_helm: Option<&OsStr>, path: Option<&OsStr>, conn: Conn) -> Result<Helm, HelmError> {
        match karpctl_helm.filter(|v| !v.is_empty()) {
            Some(v) => {
                let given = Path::new(v);
                let found = if given.components().count() > 1 { is_executable(given).then(|| given.to_path_buf()) } else { search_path(v, path) };
                match found {
                    Some(bin) => Ok(Helm::with_bin(bin, conn)),
                    None => Err(HelmError::NotFound { reason: format!("{HELM_ENV} is `{}`, which is not an executable file", given.display()) }),
                }
            }
            None => match search_path(OsStr::new("helm"), path) {
                Some(bin) => {
                    let mut h = Helm::with_bin(bin, conn);
                    h.shown = "helm".into();
                    Ok(h)
                }
                None => Err(HelmError::NotFound { reason: format!("there is no `helm` on PATH and {HELM_ENV} is not set") }),
            },
        }
    }

    /// Uses `bin` as helm, as it is (no check that it exists).
    pub fn with_bin(bin: PathBuf, conn: Conn) -> Helm {
        let shown = bin.display().to_string();
        Helm { bin, shown, conn, query_timeout: QUERY_TIMEOUT, change_timeout: CHANGE_TIMEOUT }
    }

    /// Replaces the deadlines for reading calls and for upgrade/uninstall.
    pub fn with_timeouts(mut self, query: Duration, change: Duration) -> Helm {
        self.query_timeout = query;
        self.change_timeout = change;
        self
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// `helm version --template {{.Version}}`.
    pub async fn version(&self) -> Result<HelmVersion, HelmError> {
        let out = self.run(self.query(args(["version", "--template", "{{.Version}}"]), false, About::default())).await?;
        HelmVersion::parse(&out.stdout).ok_or_else(|| HelmError::Parse { command: out.command, detail: format!("`{}` is not a version", out.stdout.trim()) })
    }

    /// [`Helm::version`], refusing helm older than 3.8.
    pub async fn require_supported(&self) -> Result<HelmVersion, HelmError> {
        let v = self.version().await?;
        if v.is_supported() {
            Ok(v)
        } else {
            Err(HelmError::Unsupported { bin: self.bin.clone(), version: v })
        }
    }

    /// The chart's `crds/` files as YAML documents. Helm 3 prints the files back to back
    /// with no separator between them, so documents are split both on `---` and where a
    /// top-level key starts over (see [`split_documents`]).
    pub async fn show_crds(&self, chart: &ChartRef) -> Result<Vec<String>, HelmError> {
        let mut a = args(["show", "crds"]);
        a.extend(chart.args());
        let out = self.run(self.query(a, false, About { release: None, chart: Some(chart) })).await?;
        Ok(split_documents(&out.stdout))
    }

    /// `helm show chart`: name, version, appVersion and kubeVersion of `Chart.yaml`.
    pub async fn show_chart(&self, chart: &ChartRef) -> Result<ChartMeta, HelmError> {
        let mut a = args(["show", "chart"]);
        a.extend(chart.args());
        let out = self.run(self.query(a, false, About { release: None, chart: Some(chart) })).await?;
        parse_chart_meta(&out.stdout).map_err(|detail| HelmError::Parse { command: out.command, detail })
    }

    /// The release `name` in `namespace` in whatever state it is (`--all`: failed,
    /// pending and kept-history uninstalled ones too), or `None`.
    pub async fn release(&self, name: &str, namespace: &str) -> Result<Option<Release>, HelmError> {
        let filter = format!("^{}$", regex_escape(name));
        let a = args(["list", "--namespace", namespace, "--filter", &filter, "--all", "--output", "json"]);
        let out = self.run(self.query(a, true, About { release: Some((name, namespace)), chart: None })).await?;
        parse_release_list(&out.stdout, name, namespace).map_err(|detail| HelmError::Parse { command: out.command, detail })
    }

    /// The values the release was installed with (`helm get values`, user-supplied only;
    /// `{}` when there were none). Fails when the release does not exist.
    pub async fn values(&self, name: &str, namespace: &str) -> Result<Value, HelmError> {
        let a = args(["get", "values", name, "--namespace", namespace, "--output", "json"]);
        let out = self.run(self.query(a, true, About { release: Some((name, namespace)), chart: None })).await?;
        match serde_json::from_str::<Value>(out.stdout.trim()) {
            Ok(Value::Null) => Ok(Value::Object(serde_json::Map::new())),
            Ok(v @ Value::Object(_)) => Ok(v),
            Ok(other) => Err(HelmError::Parse { command: out.command, detail: format!("expected an object of values, got {other}") }),
            Err(e) => Err(HelmError::Parse { command: out.command, detail: format!("not JSON: {e}") }),
        }
    }

    /// Installs or upgrades `name` so its values are exactly `values` (`--reset-values`:
    /// without it helm would keep the previous values whenever `values` is empty). CRDs
    /// are skipped (karpctl applies them itself) and helm does not wait for pods: the
    /// caller waits. Returns the release as recorded afterwards.
    pub async fn upgrade_install(&self, name: &str, namespace: &str, chart: &ChartRef, values: &Value) -> Result<Release, HelmError> {
        let empty = Value::Object(serde_json::Map::new());
        let values = match values {
            Value::Null => &empty,
            Value::Object(_) => values,
            other => return Err(HelmError::ValuesNotAnObject { release: name.to_string(), found: other.to_string() }),
        };
        let file = ValuesFile::write(values)
            .map_err(|source| HelmError::Io { action: format!("writing the values for release `{name}` to a temporary file"), source })?;
        let mut a = args(["upgrade", "--install", name]);
        a.extend(chart.args());
        a.extend(args(["--namespace", namespace, "--create-namespace", "--skip-crds", "--reset-values", "--values"]));
        a.push(file.path.clone().into());
        a.extend(args(["--timeout", &go_duration(self.change_timeout), "--history-max", "10"]));
        let call = Call {
            args: a,
            cluster: true,
            changes: true,
            timeout: self.change_timeout + GRACE,
            about: About { release: Some((name, namespace)), chart: Some(chart) },
        };
        let out = self.run(call).await;
        drop(file);
        let out = out?;
        match self.release(name, namespace).await? {
            Some(r) => Ok(r),
            None => Err(HelmError::Parse { command: out.command, detail: format!("helm succeeded but lists no release `{name}` in namespace `{namespace}`") }),
        }
    }

    /// `helm <verb> <name> --namespace <namespace>`: a call that changes the release,
    /// under the change deadline.
    fn release_change<'a>(&self, verb: &str, name: &'a str, namespace: &'a str) -> Call<'a> {
        Call {
            args: args([verb, name, "--namespace", namespace, "--timeout", &go_duration(self.change_timeout)]),
            cluster: true,
            changes: true,
            timeout: self.change_timeout + GRACE,
            about: About { release: Some((name, namespace)), chart: None },
        }
    }

    /// `helm rollback` to the revision before the current one: how Helm gets out of
    /// a `pending-upgrade`/`pending-rollback` that a killed helm left behind.
    pub async fn rollback(&self, name: &str, namespace: &str) -> Result<(), HelmError> {
        self.run(self.release_change("rollback", name, namespace)).await.map(|_| ())
    }

    /// Uninstalls `name`; `Ok(false)` when there was no such release.
    pub async fn uninstall(&self, name: &str, namespace: &str) -> Result<bool, HelmError> {
        match self.run(self.release_change("uninstall", name, namespace)).await {
            Ok(_) => Ok(true),
            Err(HelmError::Failed { stderr, .. }) if release_not_found(&stderr) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn query<'a>(&self, args: Vec<OsString>, cluster: bool, about: About<'a>) -> Call<'a> {
        Call { args, cluster, changes: false, timeout: self.query_timeout, about }
    }

    async fn run(&self, call: Call<'_>) -> Result<Output, HelmError> {
        let mut argv = call.args;
        if call.cluster {
            if let Some(k) = &self.conn.kubeconfig {
                argv.extend(["--kubeconfig".into(), k.into()]);
            }
            if let Some(c) = &self.conn.context {
                argv.extend(["--kube-context".into(), c.into()]);
            }
        }
        let command = command_line(&self.shown, &argv);
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(&argv).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        for (k, _) in std::env::vars_os() {
            let k_str = k.to_string_lossy();
            if k_str.starts_with("HELM_KUBE") || k_str == "HELM_NAMESPACE" {
                cmd.env_remove(&k);
            }
        }
        cmd.env("NO_COLOR", "1");
        let child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => HelmError::NotFound { reason: format!("`{}` does not exist", self.bin.display()) },
            _ => HelmError::Io { action: format!("running `{command}`"), source: e },
        })?;
        let pid = child.id();
        let waiting = child.wait_with_output();
        tokio::pin!(waiting);
        let output = match tokio::time::timeout(call.timeout, &mut waiting).await {
            Ok(r) => r.map_err(|e| HelmError::Io { action: format!("waiting for `{command}`"), source: e })?,
            Err(_) => {
                // SIGTERM first: helm cancels and records the release as failed instead of
                // leaving it pending. Dropping `waiting` afterwards kills it outright.
                if let Some(pid) = pid {
                    terminate(pid).await;
                }
                let stderr = match tokio::time::timeout(GRACE, &mut waiting).await {
                    Ok(Ok(o)) => tail(&String::from_utf8_lossy(&o.stderr), STDERR_LINES),
                    _ => String::new(),
                };
                let hint = call.about.release.filter(|_| call.changes).map(|(name, ns)| {
                    format!("if `helm status {name} -n {ns}` shows a pending state, run `helm rollback {name} -n {ns}` (or `helm uninstall {name} -n {ns}` when it never deployed), then retry")
                });
                return Err(HelmError::Timeout { command, after: call.timeout, stderr, hint });
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(Output { command, stdout });
        }
        let stderr_all = String::from_utf8_lossy(&output.stderr);
        let hint = hint(&stderr_all, call.about);
        Err(HelmError::Failed { command, status: output.status, stderr: tail(&stderr_all, STDERR_LINES), hint })
    }
}

/// Sends SIGTERM to `pid` (a child not yet reaped, so the pid is still ours).
async fn terminate(pid: u32) {
    let _ =
        tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().await;
}

fn args<'a>(a: impl IntoIterator<Item = &'a str>) -> Vec<OsString> {
    a.into_iter().map(OsString::from).collect()
}

/// A duration as Go's `time.ParseDuration` reads it.
fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

fn search_path(name: &OsStr, path: Option<&OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?).filter(|d| !d.as_os_str().is_empty()).map(|d| d.join(name)).find(|c| is_executable(c))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A command line as a user would type it into a POSIX shell.
fn command_line(bin: &str, argv: &[OsString]) -> String {
    let mut s = shell_quote(bin).into_owned();
    for a in argv {
        s.push(' ');
        s.push_str(&shell_quote(&a.to_string_lossy()));
    }
    s
}

fn shell_quote(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+%".contains(c));
    if plain {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

/// The last `n` lines of `s`, trimmed, saying how many were left out.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim().lines().map(str::trim_end).collect();
    if lines.len() <= n {
        return lines.join("\n");
    }
    let skipped = lines.len() - n;
    format!("[… {skipped} earlier line{} left out]\n{}", if skipped == 1 { "" } else { "s" }, lines[skipped..].join("\n"))
}

/// A 0600 temporary file holding values as JSON (which YAML parsers read), removed on drop.
struct ValuesFile {
    path: PathBuf,
}

impl ValuesFile {
    fn write(values: &Value) -> io::Result<ValuesFile> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!("karpctl-values-{}.json", uuid::Uuid::new_v4()));
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        let file = ValuesFile { path };
        let mut text = serde_json::to_vec_pretty(values).map_err(io::Error::other)?;
        text.push(b'\n');
        f.write_all(&text)?;
        f.sync_all()?;
        Ok(file)
    }
}

impl Drop for ValuesFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes `dir/kubeconfig` (mode 0600) for helm to reach `server` with a bearer `token`,
/// e.g. an in-process EKS token. EKS tokens expire after about 15 minutes: write a fresh
/// one for each helm call. The caller owns `dir` and removes it.
pub fn write_kubeconfig(dir: &Path, server: &str, ca_base64: &str, token: &str, cluster_name: &str) -> io::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let ca: String = ca_base64.chars().filter(|c| !c.is_whitespace()).collect();
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": "karpctl", "user": {"token": token}}],
        "contexts": [{"name": cluster_name, "context": {"cluster": cluster_name, "user": "karpctl"}}],
        "current-context": cluster_name,
    });
    let text = serde_yaml::to_string(&doc).map_err(io::Error::other)?;
    let path = dir.join("kubeconfig");
    // The mode applies only to a new file, so never reuse an existing one.
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(path)
}

/// Splits a stream of YAML documents into the non-empty ones. Besides `---`, a top-level
/// key that repeats (or a `{` at column 0 after content) starts a new document: that is
/// where Helm 3's `show crds` joined two files without a separator (a YAML mapping cannot
/// repeat a key). Comments just before such a point go with the document that follows.
pub fn split_documents(text: &str) -> Vec<String> {
    let mut docs: Vec<Vec<&str>> = vec![Vec::new()];
    let mut keys: Vec<&str> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("---").filter(|r| r.is_empty() || r.starts_with([' ', '\t'])) {
            docs.push(Vec::new());
            keys.clear();
            let rest = rest.trim();
            if !rest.is_empty() && !rest.starts_with('#') {
                docs.last_mut().expect("one document").push(rest);
            }
            continue;
        }
        if line == "..." {
            docs.push(Vec::new());
            keys.clear();
            continue;
        }
        let cur = docs.last_mut().expect("one document");
        let has_content = cur.iter().any(|l| is_content(l));
        let restart = match top_level_key(line) {
            Some(k) if keys.contains(&k) => true,
            Some(k) => {
                keys.push(k);
                false
            }
            None => line.starts_with('{') && has_content,
        };
        if restart && has_content {
            // Trailing comments and blank lines belong to the next file.
            let mut cut = cur.len();
            while cut > 0 && !is_content(cur[cut - 1]) {
                cut -= 1;
            }
            let moved = cur.split_off(cut);
            docs.push(moved);
            keys.clear();
            if let Some(k) = top_level_key(line) {
                keys.push(k);
            }
        }
        docs.last_mut().expect("one document").push(line);
    }
    docs.into_iter()
        .filter(|d| d.iter().any(|l| is_content(l)))
        .map(|d| {
            let start = d.iter().position(|l| !l.trim().is_empty()).unwrap_or(0);
            let end = d.iter().rposition(|l| !l.trim().is_empty()).map_or(0, |e| e + 1);
            let mut s = d[start..end].join("\n");
            s.push('\n');
            s
        })
        .collect()
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

/// `key` of a `key:` line at column 0 (plain or quoted keys).
fn top_level_key(line: &str) -> Option<&str> {
    let first = line.chars().next()?;
    if first.is_whitespace() || "#-{[&*!|>%@`".contains(first) {
        return None;
    }
    let (key, rest) = if first == '"' || first == '\'' {
        let end = line[1..].find(first)? + 1;
        (&line[..=end], &line[end + 1..])
    } else {
        let i = line.find(':')?;
        (&line[..i], &line[i..])
    };
    let after = rest.strip_prefix(':')?;
    (after.is_empty() || after.starts_with([' ', '\t'])).then_some(key.trim_end())
}

/// A chart given as an unpacked directory (not a `.tgz`): what `helm show chart` and
/// `helm show crds` would print is read from its files, without starting helm.
pub fn chart_dir(chart: &ChartRef) -> Option<&Path> {
    match chart {
        ChartRef::Local { path } if path.is_dir() => Some(path),
        _ => None,
    }
}

/// `Chart.yaml` of an unpacked chart, as [`Helm::show_chart`] reads it.
pub fn chart_dir_meta(dir: &Path) -> Result<ChartMeta, HelmError> {
    let file = dir.join("Chart.yaml");
    let text = std::fs::read_to_string(&file).map_err(|source| HelmError::Io { action: format!("reading {}", file.display()), source })?;
    parse_chart_meta(&text).map_err(|detail| HelmError::Parse { command: format!("reading {}", file.display()), detail })
}

/// The documents of an unpacked chart's `crds/` directory, as [`Helm::show_crds`]
/// gives them: every `.yaml`, `.yml` or `.json` file below it, in path order.
pub fn chart_dir_crds(dir: &Path) -> Result<Vec<String>, HelmError> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for e in std::fs::read_dir(d)? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json") {
                out.push(p);
            }
        }
        Ok(())
    }
    let crds = dir.join("crds");
    let mut files = Vec::new();
    if crds.is_dir() {
        walk(&crds, &mut files).map_err(|source| HelmError::Io { action: format!("listing {}", crds.display()), source })?;
    }
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| HelmError::Io { action: format!("reading {}", f.display()), source })?;
        docs.extend(split_documents(&text));
    }
    Ok(docs)
}

fn parse_chart_meta(yaml: &str) -> Result<ChartMeta, String> {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).map_err(|e| format!("Chart.yaml is not YAML: {e}"))?;
    // Versions may be written unquoted (`appVersion: 1.16`), which YAML reads as a number.
    let field = |k: &str| match v.get(k) {
        Some(serde_yaml::Value::String(s)) => Some(s.clone()),
        Some(serde_yaml::Value::Number(n)) => Some(n.to_string()),
        Some(serde_yaml::Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    };
    Ok(ChartMeta {
        name: field("name").ok_or("Chart.yaml has no name")?,
        version: field("version").ok_or("Chart.yaml has no version")?,
        app_version: field("appVersion"),
        kube_version: field("kubeVersion"),
    })
}

fn parse_release_list(json: &str, name: &str, namespace: &str) -> Result<Option<Release>, String> {
    let rows: Value = serde_json::from_str(json.trim()).map_err(|e| format!("not JSON: {e}"))?;
    let rows = match rows {
        Value::Null => return Ok(None),
        Value::Array(a) => a,
        other => return Err(format!("expected a list of releases, got {other}")),
    };
    let text = |r: &Value, k: &str| match &r[k] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    let Some(row) = rows.iter().find(|r| r["name"] == name && (r["namespace"] == namespace || r["namespace"].is_null())) else {
        return Ok(None);
    };
    let revision = text(row, "revision");
    let revision = revision.parse().map_err(|_| format!("release `{name}` has revision `{revision}`, not a number"))?;
    let chart = text(row, "chart");
    let (chart_name, chart_version) = split_chart(&chart);
    Ok(Some(Release {
        name: name.to_string(),
        namespace: namespace.to_string(),
        revision,
        status: ReleaseStatus::parse(&text(row, "status")),
        chart_name: chart_name.to_string(),
        chart_version: chart_version.to_string(),
        chart,
        app_version: text(row, "app_version"),
        updated: text(row, "updated"),
    }))
}

/// `nvidia-device-plugin-0.17.0-rc.1` → (`nvidia-device-plugin`, `0.17.0-rc.1`): the
/// first `-` after which a semantic version follows.
pub fn split_chart(chart: &str) -> (&str, &str) {
    for (i, _) in chart.match_indices('-') {
        let v = &chart[i + 1..];
        if is_semver(v) {
            return (&chart[..i], v);
        }
    }
    (chart, "")
}

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn release_not_found(stderr: &str) -> bool {
    stderr.contains("release: not found")
}

/// A `help:` line for helm failures with a known cause.
fn hint(stderr: &str, about: About<'_>) -> Option<String> {
    let lower = stderr.to_lowercase();
    let (name, ns) = about.release.unwrap_or(("RELEASE", "NAMESPACE"));
    if lower.contains("another operation (install/upgrade/rollback) is in progress") || lower.contains("has no deployed releases") {
        return Some(format!(
            "an earlier helm run on release `{name}` did not finish; see `helm history {name} -n {ns}`, then `helm rollback {name} -n {ns}` to its last good revision (or `helm uninstall {name} -n {ns}` if it never deployed) and retry"
        ));
    }
    if lower.contains("exists and cannot be imported into the current release") || lower.contains("invalid ownership metadata") {
        return Some(ownership_hint(stderr, name, ns));
    }
    if lower.contains("asked for the client to provide credentials") || (lower.contains("kubernetes cluster unreachable") && lower.contains("unauthorized")) {
        return Some("the cluster refused helm's credentials: check that the identity in the kubeconfig may use the cluster (on EKS: an access entry or aws-auth mapping for your IAM principal) and that its token has not expired".into());
    }
    if lower.contains("kubernetes cluster unreachable") {
        return Some(
            "helm cannot reach the cluster: check --kubeconfig/--context (helm uses the same ones as karpctl) and that the API endpoint is reachable from here"
                .into(),
        );
    }
    if let Some(rest) = stderr.split("is forbidden: User \"").nth(1) {
        let who = rest.split('"').next().unwrap_or_default();
        return Some(format!(
            "the Kubernetes identity `{who}` may not do this; installing charts needs cluster-admin rights (on EKS: an access entry with AmazonEKSClusterAdminPolicy)"
        ));
    }
    let registry = registry_host(stderr, &lower, about.chart);
    let denied = ["403", "forbidden", "denied", "unauthorized", "401"].iter().any(|w| lower.contains(w));
    match (&registry, denied) {
        (Some(host), true) if host == "public.ecr.aws" => {
            return Some("your Docker/Helm credentials for public.ecr.aws are stale: run `helm registry logout public.ecr.aws` (and `docker logout public.ecr.aws`); public charts need no login".into());
        }
        (Some(host), true) => {
            return Some(format!(
                "the registry {host} refused the request: check your login with `helm registry login {host}` (or log out if the chart is public)"
            ));
        }
        _ => {}
    }
    let network = ["no such host", "connection refused", "i/o timeout", "tls handshake timeout", "network is unreachable", "connection reset"];
    if network.iter().any(|w| lower.contains(w)) {
        return Some(match &registry {
            Some(host) => format!(
                "cannot reach {host}: check DNS, proxy settings (HTTPS_PROXY) and outbound HTTPS from this machine; without access, mirror the chart and point karpctl at the mirror"
            ),
            None => "a network error: check that the cluster's API endpoint is reachable from this machine (VPN, proxy, endpoint access)".into(),
        });
    }
    if let Some(chart @ (ChartRef::Remote { version, .. } | ChartRef::Repo { version, .. })) = about.chart {
        if registry.is_some() && !version.is_empty() && lower.contains("not found") {
            return Some(format!("check that version {version} of chart {chart} exists (chart versions have no `v` prefix)"));
        }
    }
    None
}

/// The registry or repository host, when the failure is about fetching a chart.
fn registry_host(stderr: &str, lower: &str, chart: Option<&ChartRef>) -> Option<String> {
    let chart_host = chart.and_then(ChartRef::host);
    if let Some(h) = chart_host.filter(|h| stderr.contains(h)) {
        return Some(h.to_string());
    }
    let fetching = [
        "failed to authorize",
        "fetchreference",
        "failed to fetch",
        "pull access denied",
        "unexpected status",
        "response status code",
        "insufficient_scope",
        "failed to download",
        "is not a valid chart repository",
    ];
    if !fetching.iter().any(|w| lower.contains(w)) {
        return None;
    }
    if let Some(h) = chart_host {
        return Some(h.to_string());
    }
    // Without a chart to go by, the URL helm was fetching.
    let url = stderr.split("https://").nth(1)?;
    url.split(['/', '"', ' ', ':']).next().filter(|h| !h.is_empty()).map(String::from)
}

/// Names the object helm refused to take over and how to hand it to the release.
fn ownership_hint(stderr: &str, name: &str, ns: &str) -> String {
    const MARKER: &str = " exists and cannot be imported into the current release";
    // `…: Kind "name" in namespace "ns" exists and …` (namespace empty when cluster-scoped).
    let object = stderr.find(MARKER).and_then(|i| stderr[..i].rsplit(": ").next()).and_then(|o| {
        let mut q = o.split('"');
        let kind = q.next()?.trim();
        let obj = q.next()?;
        let obj_ns = o.split("in namespace \"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("");
        (!kind.is_empty() && !obj.is_empty()).then(|| (kind.to_string(), obj.to_string(), obj_ns.to_string()))
    });
    let current_owner = stderr
        .split("key \"meta.helm.sh/release-name\" must equal")
        .nth(1)
        .and_then(|r| r.split("current value is \"").nth(1))
        .and_then(|r| r.split('"').next());
    let mut s = match &object {
        Some((kind, obj, obj_ns)) if obj_ns.is_empty() => format!("{kind} \"{obj}\" already exists and is not part of release `{name}`"),
        Some((kind, obj, obj_ns)) => format!("{kind} \"{obj}\" in namespace \"{obj_ns}\" already exists and is not part of release `{name}`"),
        None => format!("an object in the chart already exists and is not part of release `{name}`"),
    };
    if let Some(owner) = current_owner {
        s.push_str(&format!(" (it belongs to release `{owner}`; adopting it moves it out of that release)"));
    }
    s.push_str(&format!(
        "; it can be adopted into the release by labelling it app.kubernetes.io/managed-by=Helm and annotating it meta.helm.sh/release-name={name} and meta.helm.sh/release-namespace={ns}"
    ));
    if let Some((kind, obj, obj_ns)) = &object {
        let kind = kind.to_lowercase();
        let nsflag = if obj_ns.is_empty() { String::new() } else { format!(" -n {obj_ns}") };
        s.push_str(&format!(
            ": `kubectl label {kind} {obj}{nsflag} app.kubernetes.io/managed-by=Helm --overwrite` and `kubectl annotate {kind} {obj}{nsflag} meta.helm.sh/release-name={name} meta.helm.sh/release-namespace={ns} --overwrite`"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn about<'a>(chart: Option<&'a ChartRef>) -> About<'a> {
        About { release: Some(("karpenter", "kube-system")), chart }
    }

    fn ecr() -> ChartRef {
        ChartRef::Remote { reference: "oci://public.ecr.aws/karpenter/karpenter".into(), version: "1.14.1".into() }
    }

    #[test]
    fn stale_public_ecr_credentials() {
        let c = ecr();
        for stderr in [
            "Error: failed to authorize: failed to fetch anonymous token: unexpected status from GET request to https://public.ecr.aws/token/?scope=repository%3Akarpenter%2Fkarpenter%3Apull: 403 Forbidden",
            "Error: INSTALLATION FAILED: failed to authorize: failed to fetch oauth token: unexpected status: 403 Forbidden",
            "Error: pull access denied, repository does not exist or may require authorization: server message: insufficient_scope: authorization failed",
            "Error: unexpected status: 401 Unauthorized",
        ] {
            let h = hint(stderr, about(Some(&c))).unwrap_or_else(|| panic!("no hint for {stderr}"));
            assert!(h.contains("helm registry logout public.ecr.aws"), "{h}");
        }
        // Also without knowing the chart, when stderr names the registry.
        let h = hint("Error: GET \"https://public.ecr.aws/v2/karpenter/karpenter/tags/list\": response status code 403: denied", About::default()).unwrap();
        assert!(h.contains("helm registry logout public.ecr.aws"), "{h}");
    }

    #[test]
    fn other_registry_refusal_suggests_login() {
        let c = ChartRef::Remote { reference: "oci://registry.example.com/charts/karpenter".into(), version: "1.14.1".into() };
        let h = hint("Error: failed to authorize: unexpected status: 401 Unauthorized", about(Some(&c))).unwrap();
        assert!(h.contains("helm registry login registry.example.com"), "{h}");
    }

    #[test]
    fn pending_operation() {
        let h = hint("Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress", about(None)).unwrap();
        assert!(h.contains("helm history karpenter -n kube-system"), "{h}");
        assert!(h.contains("helm rollback karpenter -n kube-system"), "{h}");
    }

    #[test]
    fn ownership_conflict_names_the_object_and_the_adoption() {
        let stderr = r#"Error: Unable to continue with install: ServiceAccount "karpenter" in namespace "kube-system" exists and cannot be imported into the current release: invalid ownership metadata; label validation error: missing key "app.kubernetes.io/managed-by": must be set to "Helm"; annotation validation error: missing key "meta.helm.sh/release-name": must be set to "karpenter"; annotation validation error: missing key "meta.helm.sh/release-namespace": must be set to "kube-system""#;
        let h = hint(stderr, about(None)).unwrap();
        assert!(h.starts_with(r#"ServiceAccount "karpenter" in namespace "kube-system" already exists"#), "{h}");
        assert!(h.contains("app.kubernetes.io/managed-by=Helm"), "{h}");
        assert!(h.contains("meta.helm.sh/release-name=karpenter"), "{h}");
        assert!(h.contains("meta.helm.sh/release-namespace=kube-system"), "{h}");
        assert!(h.contains("kubectl label serviceaccount karpenter -n kube-system"), "{h}");

        let crd = r#"Error: rendered manifests contain a resource that already exists. Unable to continue with install: CustomResourceDefinition "nodepools.karpenter.sh" in namespace "" exists and cannot be imported into the current release: invalid ownership metadata; annotation validation error: key "meta.helm.sh/release-name" must equal "karpenter-crd": current value is "karpenter""#;
        let h = hint(crd, About { release: Some(("karpenter-crd", "kube-system")), chart: None }).unwrap();
        assert!(h.contains(r#"CustomResourceDefinition "nodepools.karpenter.sh""#), "{h}");
        assert!(h.contains("belongs to release `karpenter`"), "{h}");
        assert!(h.contains("kubectl annotate customresourcedefinition nodepools.karpenter.sh meta.helm.sh"), "{h}");
        assert!(!h.contains(" -n "), "cluster-scoped: {h}");
    }

    #[test]
    fn network_errors_name_the_registry_or_the_cluster() {
        let c = ecr();
        let dns = r#"Error: failed to perform "FetchReference" on source: Get "https://public.ecr.aws/v2/karpenter/karpenter/manifests/1.14.1": dial tcp: lookup public.ecr.aws on 10.0.0.2:53: no such host"#;
        let h = hint(dns, about(Some(&c))).unwrap();
        assert!(h.starts_with("cannot reach public.ecr.aws"), "{h}");
        let refused = r#"Error: failed to perform "FetchReference" on source: Get "https://127.0.0.1:1/v2/x/manifests/1.0.0": dial tcp 127.0.0.1:1: connect: connection refused"#;
        let h = hint(refused, About::default()).unwrap();
        assert!(h.starts_with("cannot reach 127.0.0.1"), "{h}");
        let cluster = r#"Error: Kubernetes cluster unreachable: Get "https://ABC.gr7.us-west-2.eks.amazonaws.com/version": dial tcp: lookup ABC.gr7.us-west-2.eks.amazonaws.com: no such host"#;
        let h = hint(cluster, about(Some(&c))).unwrap();
        assert!(h.contains("cannot reach the cluster"), "{h}");
        let creds = "Error: Kubernetes cluster unreachable: the server has asked for the client to provide credentials";
        let h = hint(creds, about(Some(&c))).unwrap();
        assert!(h.contains("refused helm's credentials"), "{h}");
    }

    #[test]
    fn rbac_and_unknown_failures() {
        let rbac = r#"Error: INSTALLATION FAILED: serviceaccounts is forbidden: User "karpctl-noperm" cannot create resource "serviceaccounts" in API group "" in the namespace "kube-system""#;
        let h = hint(rbac, about(None)).unwrap();
        assert!(h.contains("`karpctl-noperm`"), "{h}");
        assert_eq!(hint("Error: execution error at (x/templates/a.yaml:1:2): settings.clusterName is required", about(None)), None);
    }

    #[test]
    fn missing_chart_version() {
        let c = ecr();
        let h = hint("Error: public.ecr.aws/karpenter/karpenter:1.99.0: not found", about(Some(&c))).unwrap();
        assert!(h.contains("version 1.14.1"), "{h}");
    }

    #[test]
    fn helm_versions() {
        let v = HelmVersion::parse("v3.14.4+g81c902a\n").unwrap();
        assert_eq!((v.major, v.minor, v.patch), (3, 14, 4));
        assert!(v.is_supported());
        assert!(!HelmVersion::parse("v3.7.2").unwrap().is_supported());
        assert!(HelmVersion::parse("v4.0.1").unwrap().is_supported());
        assert_eq!(HelmVersion::parse("3.15.0-rc.1").map(|v| (v.major, v.minor, v.patch)), Some((3, 15, 0)));
        assert_eq!(HelmVersion::parse("version.BuildInfo{}"), None);
    }

    #[test]
    fn chart_strings() {
        assert_eq!(split_chart("karpenter-1.14.1"), ("karpenter", "1.14.1"));
        assert_eq!(split_chart("nvidia-device-plugin-0.17.0-rc.1"), ("nvidia-device-plugin", "0.17.0-rc.1"));
        assert_eq!(split_chart("a-2-b-1.0.0+build.5"), ("a-2-b", "1.0.0+build.5"));
        assert_eq!(split_chart("weird"), ("weird", ""));
    }

    #[test]
    fn release_rows() {
        let json = r#"[{"name":"karpenter","namespace":"kube-system","revision":"3","updated":"2026-11-22 04:18:53 +0000 UTC","status":"pending-upgrade","chart":"karpenter-1.14.1","app_version":"1.14.1"}]"#;
        let r = parse_release_list(json, "karpenter", "kube-system").unwrap().unwrap();
        assert_eq!((r.revision, r.status.is_pending(), r.chart_version.as_str()), (3, true, "1.14.1"));
        assert_eq!(parse_release_list("[]", "karpenter", "kube-system").unwrap(), None);
        assert!(parse_release_list("oops", "karpenter", "kube-system").is_err());
    }

    #[test]
    fn documents_split_on_separators_and_on_joined_files() {
        // Helm 3 `show crds`: one file with `---`, then two files joined with no separator.
        let text = "---\n# Source: a\napiVersion: v1\nkind: A\nmetadata:\n  name: a\n---\n# only a comment\n---\n\n# licence header of b\napiVersion: v1\nkind: B\nspec:\n  apiVersion: nested\n\napiVersion: v1\nkind: C\n...\n{\"apiVersion\": \"v1\",\n \"kind\": \"D\"}\n{\"kind\": \"E\"}\n";
        let docs = split_documents(text);
        let kinds: Vec<String> = docs.iter().map(|d| serde_yaml::from_str::<serde_yaml::Value>(d).unwrap()["kind"].as_str().unwrap().to_string()).collect();
        assert_eq!(kinds, ["A", "B", "C", "D", "E"], "{docs:#?}");
        assert!(docs[1].starts_with("# licence header of b\n"), "{}", docs[1]);
        assert!(split_documents("---\n\n# nothing\n---\n").is_empty());
    }

    #[test]
    fn command_lines_quote_like_a_shell() {
        let line = command_line("helm", &args(["list", "--filter", "^karpenter$", "--kube-context", "it's"]));
        assert_eq!(line, r"helm list --filter '^karpenter$' --kube-context 'it'\''s'");
    }

    #[test]
    fn stderr_is_cut_to_its_tail() {
        let long: String = (1..=50).map(|i| format!("line {i}\n")).collect();
        let t = tail(&long, 40);
        assert!(t.starts_with("[… 10 earlier lines left out]\nline 11\n"), "{t}");
        assert!(t.ends_with("line 50"));
    }
}
