//! `karpctl::helm` against the real helm binary the kube bed builds, installing the
//! real charts of the pinned releases (scripts/upstream.sh) into the bed's kube-apiserver.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use karpctl::helm::{write_kubeconfig, ChartRef, Conn, Helm, HelmError, ReleaseStatus};
use serde_json::{json, Value};

use crate::beds::KubeBed;
use crate::support::{scratch, upstream};

fn handle(bed: &KubeBed) -> Value {
    let text = std::fs::read_to_string(bed.dir.join("handle.json")).expect("the bed writes handle.json");
    serde_json::from_str(&text).expect("handle.json is JSON")
}

fn helm_bin(bed: &KubeBed) -> PathBuf {
    PathBuf::from(handle(bed)["bin_dir"].as_str().expect("handle has bin_dir")).join("helm")
}

/// helm from the bed, talking to the bed through its admin kubeconfig.
fn helm(bed: &KubeBed) -> Helm {
    Helm::with_bin(helm_bin(bed), Conn { kubeconfig: Some(bed.kubeconfig()), context: None })
}

/// The real chart of the pinned release (scripts/upstream.sh).
fn chart_dir(name: &str) -> PathBuf {
    upstream(name, "", "chart").expect("the pinned upstream charts can be fetched")
}

fn fixture(name: &str) -> ChartRef {
    ChartRef::Local { path: chart_dir(name) }
}

/// A namespace no other test (or earlier run on a shared bed) uses.
fn namespace(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn locate_says_what_is_wrong_and_how_to_get_helm() {
    let dir = scratch("helm-locate");
    let bogus = dir.join("no-such-helm");
    let e = Helm::locate_in(Some(bogus.as_os_str()), Some(OsStr::new("/usr/bin:/bin")), Conn::default()).unwrap_err();
    assert!(matches!(e, HelmError::NotFound { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("KARPCTL_HELM") && msg.contains(&bogus.display().to_string()), "{msg}");
    let help = e.help().expect("a help line");
    assert!(help.contains("https://helm.sh/docs/intro/install/") && help.contains("KARPCTL_HELM"), "{help}");

    // A file that is there but not executable is refused the same way.
    let plain = dir.join("helm");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    let e = Helm::locate_in(Some(plain.as_os_str()), None, Conn::default()).unwrap_err();
    assert!(e.to_string().contains("not an executable file"), "{e}");

    // Nothing set and no helm on PATH.
    let e = Helm::locate_in(None, Some(dir.as_os_str()), Conn::default()).unwrap_err();
    assert!(e.to_string().contains("no `helm` on PATH"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_helm_that_hangs_is_stopped_at_the_deadline() {
    // A stand-in for a helm stuck on the network: says something, then sleeps.
    let dir = scratch("helm-hang");
    let fake = dir.join("helm");
    std::fs::write(&fake, "#!/bin/sh\necho 'fetching the chart' >&2\nexec sleep 60\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let h = Helm::with_bin(fake, Conn::default()).with_timeouts(Duration::from_secs(1), Duration::from_secs(1));
    let t0 = Instant::now();
    let e = h.version().await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(15), "SIGTERM ended it: {:?}", t0.elapsed());
    match &e {
        HelmError::Timeout { command, stderr, .. } => {
            assert!(command.ends_with("helm version --template '{{.Version}}'"), "{command}");
            assert_eq!(stderr, "fetching the chart");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(e.to_string().contains("did not finish within 1s"), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn version_chart_metadata_and_crds() {
    let Some(bed) = KubeBed::start() else { return };
    let bin = helm_bin(&bed);

    // KARPCTL_HELM as a path, and as a name looked up on PATH.
    let h = Helm::locate_in(Some(bin.as_os_str()), None, Conn::default()).expect("KARPCTL_HELM path");
    assert_eq!(h.bin(), bin);
    let h2 = Helm::locate_in(None, Some(bin.parent().unwrap().as_os_str()), Conn::default()).expect("helm on PATH");
    assert_eq!(h2.bin(), bin);

    let v = h.require_supported().await.expect("helm version");
    let expected = handle(&bed)["helm_version"].as_str().unwrap().to_string();
    assert_eq!(format!("v{}.{}.{}", v.major, v.minor, v.patch), expected);
    assert!(v.is_supported());

    let meta = h.show_chart(&fixture("karpenter")).await.expect("show chart");
    let chart_yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(chart_dir("karpenter").join("Chart.yaml")).unwrap()).unwrap();
    assert_eq!(meta.name, "karpenter");
    assert_eq!(meta.version, chart_yaml["version"].as_str().unwrap());
    assert_eq!(meta.app_version.as_deref(), chart_yaml["appVersion"].as_str());
    assert_eq!(meta.kube_version.as_deref(), chart_yaml["kubeVersion"].as_str());
    // karpctl reads an unpacked chart itself; it must see what helm sees.
    let dir_meta = karpctl::helm::chart_dir_meta(&chart_dir("karpenter")).unwrap();
    assert_eq!(dir_meta, meta);

    // A copy of the chart with CRD files written the ways charts write them: with and
    // without a leading `---`, several in one file, a comment-only document, and JSON.
    let dir = scratch("helm-crds");
    let chart = dir.join("karpenter");
    copy_dir(&chart_dir("karpenter"), &chart);
    let crds = chart.join("crds");
    let _ = std::fs::remove_dir_all(&crds);
    std::fs::create_dir_all(&crds).unwrap();
    let crd = |plural: &str| {
        format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.example.com\nspec:\n  group: example.com\n  names: {{kind: K, plural: {plural}}}\n  scope: Namespaced\n  versions: []\n"
        )
    };
    std::fs::write(crds.join("a.yaml"), format!("# licence\n{}", crd("alphas"))).unwrap();
    std::fs::write(crds.join("b.yaml"), format!("---\n{}---\n# nothing here\n---\n{}", crd("betas"), crd("gammas"))).unwrap();
    std::fs::write(crds.join("c.yaml"), crd("deltas")).unwrap();
    std::fs::write(
        crds.join("d.json"),
        "{\"apiVersion\": \"apiextensions.k8s.io/v1\", \"kind\": \"CustomResourceDefinition\", \"metadata\": {\"name\": \"epsilons.example.com\"}}\n",
    )
    .unwrap();
    let docs = h.show_crds(&ChartRef::Local { path: chart.clone() }).await.expect("show crds");
    let names: Vec<String> = docs
        .iter()
        .map(|d| {
            let v: serde_yaml::Value = serde_yaml::from_str(d).unwrap_or_else(|e| panic!("not one YAML document ({e}):\n{d}"));
            assert_eq!(v["kind"].as_str(), Some("CustomResourceDefinition"), "{d}");
            v["metadata"]["name"].as_str().unwrap().trim_end_matches(".example.com").to_string()
        })
        .collect();
    assert_eq!(names, ["alphas", "betas", "gammas", "deltas", "epsilons"], "{docs:#?}");
    assert_eq!(karpctl::helm::chart_dir_crds(&chart).unwrap(), docs, "read in-process like `helm show crds`");

    // A chart without crds/ has none.
    std::fs::remove_dir_all(&crds).unwrap();
    assert_eq!(karpctl::helm::chart_dir_crds(&chart).unwrap(), Vec::<String>::new());
    assert_eq!(h.show_crds(&ChartRef::Local { path: chart }).await.unwrap(), Vec::<String>::new());
    let _ = std::fs::remove_dir_all(dir);
}

/// karpctl's in-process read of Helm's records agrees with `helm list --all` and
/// `helm get values`.
async fn assert_store_agrees(client: &kube::Client, h: &Helm, name: &str, ns: &str) {
    let stored = karpctl::kube::helm_store::release(client, name, ns).await.expect("read Helm's records");
    match h.release(name, ns).await.unwrap() {
        None => assert_eq!(stored, None, "helm has no {ns}/{name}"),
        Some(r) => {
            let s = stored.unwrap_or_else(|| panic!("helm has {ns}/{name} but the in-process read found nothing"));
            assert_eq!((s.revision, &s.status, s.chart()), (r.revision, &r.status, r.chart.clone()));
            assert_eq!(s.values, h.values(name, ns).await.unwrap());
        }
    }
}

#[tokio::test]
async fn install_upgrade_read_back_and_uninstall() {
    let Some(bed) = KubeBed::start() else { return };
    let h = helm(&bed);
    let ns = namespace("helm-life");
    let chart = fixture("karpenter");
    let meta = h.show_chart(&chart).await.unwrap();

    assert_eq!(h.release("karpenter", &ns).await.unwrap(), None, "nothing installed yet");

    let first = json!({"settings": {"clusterName": "alpha", "interruptionQueue": "alpha"}, "logLevel": "debug", "replicas": 1});
    let r = h.upgrade_install("karpenter", &ns, &chart, &first).await.expect("install");
    assert_eq!((r.name.as_str(), r.namespace.as_str(), r.revision, &r.status), ("karpenter", ns.as_str(), 1, &ReleaseStatus::Deployed));
    assert_eq!(r.chart, format!("karpenter-{}", meta.version));
    assert_eq!((r.chart_name.as_str(), r.chart_version.as_str()), ("karpenter", meta.version.as_str()));
    assert_eq!(Some(r.app_version.as_str()), meta.app_version.as_deref());
    assert_eq!(h.values("karpenter", &ns).await.unwrap(), first);
    assert_eq!(h.release("karpenter", &ns).await.unwrap(), Some(r), "release() reads the same record");

    // The namespace was created, and the chart really rendered into it.
    let client = bed.client().await;
    assert_store_agrees(&client, &h, "karpenter", &ns).await;
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::namespaced(client.clone(), &ns);
    assert!(deploys.get_opt("karpenter").await.unwrap().is_some(), "the chart's deployment exists");

    // Values that drop keys: the release holds exactly the new ones.
    let second = json!({"settings": {"clusterName": "beta"}});
    let r = h.upgrade_install("karpenter", &ns, &chart, &second).await.expect("upgrade");
    assert_eq!((r.revision, &r.status), (2, &ReleaseStatus::Deployed));
    assert_eq!(h.values("karpenter", &ns).await.unwrap(), second);
    assert_store_agrees(&client, &h, "karpenter", &ns).await;

    // Empty values reset to the chart's defaults (helm alone would keep the old ones).
    let nvdp = fixture("nvidia-device-plugin");
    let gpu = json!({"config": {"default": "a", "map": {"a": "version: v1\n"}}});
    h.upgrade_install("nvdp", &ns, &nvdp, &gpu).await.expect("install nvdp");
    assert_eq!(h.values("nvdp", &ns).await.unwrap(), gpu);
    let r = h.upgrade_install("nvdp", &ns, &nvdp, &json!({})).await.expect("upgrade nvdp to defaults");
    assert_eq!(r.revision, 2);
    assert_eq!(h.values("nvdp", &ns).await.unwrap(), json!({}));
    assert_store_agrees(&client, &h, "nvdp", &ns).await;

    assert!(h.uninstall("karpenter", &ns).await.expect("uninstall"), "it existed");
    assert_eq!(h.release("karpenter", &ns).await.unwrap(), None);
    assert_store_agrees(&client, &h, "karpenter", &ns).await;
    assert!(deploys.get_opt("karpenter").await.unwrap().is_none(), "its objects are gone");
    assert!(!h.uninstall("karpenter", &ns).await.expect("second uninstall"), "already gone");
    assert!(h.uninstall("nvdp", &ns).await.unwrap());
}

#[tokio::test]
async fn failures_carry_the_command_stderr_and_a_hint() {
    let Some(bed) = KubeBed::start() else { return };
    let h = helm(&bed);
    let ns = namespace("helm-fail");
    let kubeconfig = bed.kubeconfig().display().to_string();

    // The chart's validation template refuses config.name together with config.map.
    let bad = json!({"config": {"name": "existing", "map": {"a": "version: v1\n"}}});
    let e = h.upgrade_install("nvdp", &ns, &fixture("nvidia-device-plugin"), &bad).await.unwrap_err();
    let HelmError::Failed { command, stderr, status, .. } = &e else { panic!("expected Failed, got {e:?}") };
    assert_eq!(status.code(), Some(1));
    assert!(command.starts_with(&format!("{} upgrade --install nvdp ", helm_bin(&bed).display())), "{command}");
    assert!(command.contains(&format!("--namespace {ns} --create-namespace --skip-crds --reset-values --values ")), "{command}");
    assert!(command.ends_with(&format!("--kubeconfig {kubeconfig}")), "{command}");
    assert!(stderr.contains("Only one of 'config.name' or 'config.map' should ever be set"), "{stderr}");
    let shown = e.to_string();
    assert!(shown.contains(command.as_str()) && shown.contains("Only one of 'config.name' or 'config.map' should ever be set"), "{shown}");
    assert_eq!(h.release("nvdp", &ns).await.unwrap(), None, "a template failure records no release");
    let values_file = command.split("--values ").nth(1).and_then(|r| r.split(' ').next()).unwrap();
    assert!(values_file.contains("karpctl-values-"), "{command}");
    assert!(!Path::new(values_file).exists(), "the values file is removed afterwards");

    // Values that are not a mapping never reach helm.
    let e = h.upgrade_install("nvdp", &ns, &fixture("nvidia-device-plugin"), &json!(["a"])).await.unwrap_err();
    assert!(matches!(e, HelmError::ValuesNotAnObject { .. }), "{e:?}");

    // A chart path that does not exist.
    let missing = ChartRef::Local { path: scratch("helm-missing").join("no-such-chart") };
    let e = h.upgrade_install("x", &ns, &missing, &json!({})).await.unwrap_err();
    assert!(e.to_string().contains("no-such-chart") && e.to_string().contains("not found"), "{e}");

    // An object the release does not own: the hint names it and how to adopt it.
    let ns = namespace("helm-own");
    let client = bed.client().await;
    let nss: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    nss.create(&Default::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap()).await.unwrap();
    let sas: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> = kube::Api::namespaced(client.clone(), &ns);
    sas.create(&Default::default(), &serde_json::from_value(json!({"metadata": {"name": "karpenter"}})).unwrap()).await.unwrap();
    let e = h.upgrade_install("karpenter", &ns, &fixture("karpenter"), &json!({"settings": {"clusterName": "c"}})).await.unwrap_err();
    let help = e.help().unwrap_or_else(|| panic!("no hint for {e}"));
    assert!(help.starts_with(&format!("ServiceAccount \"karpenter\" in namespace \"{ns}\" already exists")), "{help}");
    assert!(
        help.contains(&format!("kubectl annotate serviceaccount karpenter -n {ns} meta.helm.sh/release-name=karpenter meta.helm.sh/release-namespace={ns}")),
        "{help}"
    );

    // Doing what the hint says makes the install go through.
    let kubectl = helm_bin(&bed).with_file_name("kubectl");
    for args in [
        vec!["label", "serviceaccount", "karpenter", "-n", &ns, "app.kubernetes.io/managed-by=Helm"],
        vec!["annotate", "serviceaccount", "karpenter", "-n", &ns, "meta.helm.sh/release-name=karpenter", &format!("meta.helm.sh/release-namespace={ns}")],
    ] {
        let out = std::process::Command::new(&kubectl).args(&args).arg("--kubeconfig").arg(bed.kubeconfig()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let r = h.upgrade_install("karpenter", &ns, &fixture("karpenter"), &json!({"settings": {"clusterName": "c"}})).await.expect("adopted");
    assert_eq!(r.status, ReleaseStatus::Deployed);

    // A second release of the chart whose objects take the first one's names collides with them.
    let e = h.upgrade_install("kbad", &ns, &fixture("karpenter"), &json!({"settings": {"clusterName": "c"}, "fullnameOverride": "karpenter"})).await.unwrap_err();
    let help = e.help().unwrap_or_else(|| panic!("no hint for {e}"));
    assert!(help.contains("belongs to release `karpenter`"), "{help}");
    assert!(help.contains("meta.helm.sh/release-name=kbad"), "{help}");

    // The API server refusing an object leaves a release recorded as failed, which
    // release() reports and the next upgrade replaces.
    let failed_ns = namespace("helm-failed");
    let bad_label = json!({"settings": {"clusterName": "c"}, "podLabels": {"bad key!": "x"}});
    let e = h.upgrade_install("kbad", &failed_ns, &fixture("karpenter"), &bad_label).await.unwrap_err();
    assert!(e.to_string().contains("bad key!"), "{e}");
    let r = h.release("kbad", &failed_ns).await.unwrap().expect("a failed release is listed");
    assert_eq!((r.revision, &r.status), (1, &ReleaseStatus::Failed));
    let r = h.upgrade_install("kbad", &failed_ns, &fixture("karpenter"), &json!({"settings": {"clusterName": "c"}})).await.unwrap();
    assert_eq!((r.revision, &r.status), (2, &ReleaseStatus::Deployed));
    assert!(h.uninstall("kbad", &failed_ns).await.unwrap());

    // values() of a release that does not exist fails with helm's message.
    let e = h.values("no-such-release", &ns).await.unwrap_err();
    assert!(e.to_string().contains("release: not found"), "{e}");

    // An identity without RBAC rights: the hint names it.
    let noperm = Helm::with_bin(helm_bin(&bed), Conn { kubeconfig: Some(bed.dir.join("kubeconfig-noperm")), context: None });
    let e = noperm.release("karpenter", &ns).await.unwrap_err();
    assert!(e.help().is_some_and(|h| h.contains("`karpctl-noperm`")), "{e} / {:?}", e.help());

    // A context that the kubeconfig does not have: --kube-context reaches helm.
    let wrong = Helm::with_bin(helm_bin(&bed), Conn { kubeconfig: Some(bed.kubeconfig()), context: Some("no-such-context".into()) });
    let e = wrong.release("karpenter", &ns).await.unwrap_err();
    assert!(e.to_string().contains("--kube-context no-such-context") && e.to_string().contains("no-such-context\" does not exist"), "{e}");

    assert!(h.uninstall("karpenter", &ns).await.unwrap());
}

#[tokio::test]
async fn a_written_kubeconfig_is_private_and_works_for_helm() {
    let Some(bed) = KubeBed::start() else { return };
    let hd = handle(&bed);
    let server = hd["server"].as_str().unwrap();
    let token = hd["admin_token"].as_str().unwrap();
    let ca = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, std::fs::read(hd["ca_file"].as_str().unwrap()).unwrap());
    let dir = scratch("helm-kubeconfig");

    let path = write_kubeconfig(&dir, server, &ca, token, "my-cluster").expect("written");
    assert_eq!(mode(&path), 0o600);
    // Rewriting replaces the file and keeps it private even if someone loosened it.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let path = write_kubeconfig(&dir, server, &ca, token, "my-cluster").expect("rewritten");
    assert_eq!(mode(&path), 0o600);

    let ns = namespace("helm-kc");
    let h = Helm::with_bin(helm_bin(&bed), Conn { kubeconfig: Some(path.clone()), context: Some("my-cluster".into()) });
    assert_eq!(h.release("karpenter", &ns).await.expect("helm list through the written kubeconfig"), None);
    let r = h.upgrade_install("karpenter", &ns, &fixture("karpenter"), &json!({"settings": {"clusterName": "my-cluster"}})).await.unwrap();
    assert_eq!(r.revision, 1);
    assert!(h.uninstall("karpenter", &ns).await.unwrap());

    // The token is what authenticates: a wrong one is refused by the API server.
    let bad = write_kubeconfig(&dir, server, &ca, "not-a-token", "my-cluster").unwrap();
    let h = Helm::with_bin(helm_bin(&bed), Conn { kubeconfig: Some(bad), context: None });
    let e = h.release("karpenter", &ns).await.unwrap_err();
    assert!(e.to_string().contains("provide credentials"), "{e}");
    assert!(e.help().is_some_and(|h| h.contains("refused helm's credentials")), "{:?}", e.help());
    assert!(!e.to_string().contains(token), "no token in messages");
    let _ = std::fs::remove_dir_all(dir);
}
