//! Handles on the test beds (tests/testbed): the AWS emulator, one per test on a
//! free port, and a real kube-apiserver, one per test or shared through
//! `KARPCTL_TEST_KUBE_DIR`. Without the beds installed a test is skipped with
//! the reason, unless `CI` is set, where a missing bed is a broken setup.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::repo;

fn cache() -> PathBuf {
    std::env::var_os("KARPCTL_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/karpctl")))
        .unwrap_or_else(|| PathBuf::from(".cache/karpctl"))
}

fn skip(why: String) -> Option<std::convert::Infallible> {
    assert!(std::env::var_os("CI").is_none(), "CI is set but {why}");
    eprintln!("skipping: {why}");
    None
}

fn scratch(name: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("karpctl-bed-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The AWS emulator (tests/testbed/aws/launcher.py) on a free port, stopped on drop.
pub struct AwsEmulator {
    child: Child,
    dir: PathBuf,
    pub endpoint: String,
    pub handle: Value,
}

impl AwsEmulator {
    /// Starts an emulator with launcher options (`--k8s-version 1.33` …).
    pub fn start(args: &[&str]) -> Option<AwsEmulator> {
        let python = cache().join("venv-aws/bin/python");
        if !python.exists() {
            skip(format!("the AWS emulator is not installed ({} is missing; run scripts/testbed-aws.sh install)", python.display()))?;
        }
        let dir = scratch("aws");
        let handle = dir.join("handle.json");
        let log = std::fs::File::create(dir.join("launcher.log")).unwrap();
        let mut cmd = Command::new(&python);
        cmd.arg(repo().join("tests/testbed/aws/launcher.py"))
            .args(["--port", "0", "--handle"])
            .arg(&handle)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", python.display()));
        let mut emu = AwsEmulator { child, dir, endpoint: String::new(), handle: Value::Null };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(h) = std::fs::read(&handle) {
                if let Ok(v) = serde_json::from_slice::<Value>(&h) {
                    emu.endpoint = v["endpoint"].as_str().expect("handle has an endpoint").to_string();
                    emu.handle = v;
                    return Some(emu);
                }
            }
            if let Some(status) = emu.child.try_wait().unwrap() {
                panic!("the AWS emulator exited ({status}):\n{}", emu.log());
            }
            assert!(Instant::now() < deadline, "the AWS emulator is not ready after 120s:\n{}", emu.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("launcher.log")).unwrap_or_default()
    }

    /// SDK config pointing at the emulator with its test credentials.
    pub async fn sdk_config(&self, region: &str) -> aws_config::SdkConfig {
        use aws_config::BehaviorVersion;
        use aws_sdk_s3::config::{Credentials, Region};
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(region.to_string()))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .load()
            .await
    }

    /// A control-endpoint call: METHOD /_testbed/PATH with an optional JSON body.
    pub fn control(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).expect("connect to the emulator");
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        write!(
            s,
            "{method} /_testbed/{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, payload) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
        assert!(head.starts_with("HTTP/1.1 2") || head.starts_with("HTTP/1.0 2"), "{method} {path}: {head}\n{payload}");
        serde_json::from_str(payload).unwrap_or(Value::Null)
    }

    /// Request counts per `service:Operation`, and the mutating total.
    pub fn requests(&self) -> Value {
        self.control("GET", "requests", None)
    }
}

impl Drop for AwsEmulator {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.dir);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running kube-apiserver + etcd from scripts/testbed-kube.sh.
pub struct KubeBed {
    pub dir: PathBuf,
    owned: bool,
}

impl KubeBed {
    pub fn start() -> Option<KubeBed> {
        if let Some(d) = std::env::var_os("KARPCTL_TEST_KUBE_DIR") {
            return Some(KubeBed { dir: PathBuf::from(d), owned: false });
        }
        let script = repo().join("scripts/testbed-kube.sh");
        // A test never starts the 10-minute build itself: scripts/test.sh does that first.
        let built = std::fs::read_dir(cache().join("kube-bin"))
            .map(|mut d| d.any(|e| e.map(|e| e.path().join(".complete").exists()).unwrap_or(false)))
            .unwrap_or(false);
        if !built {
            skip("the Kubernetes test bed is not built (run scripts/testbed-kube.sh build)".into())?;
        }
        let dir = scratch("kube");
        let out = Command::new(&script).args(["start", "--dir"]).arg(&dir).output().unwrap();
        assert!(out.status.success(), "starting the kube bed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        Some(KubeBed { dir, owned: true })
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.expect("kube config");
        kube::Client::try_from(cfg).expect("kube client")
    }
}

impl Drop for KubeBed {
    fn drop(&mut self) {
        if self.owned {
            let _ = Command::new(repo().join("scripts/testbed-kube.sh")).args(["stop", "--dir"]).arg(&self.dir).output();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
