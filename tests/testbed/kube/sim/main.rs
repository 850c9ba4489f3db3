//! The test bed's controller simulator as a process (see mod.rs for what it fakes).
//!
//!   cargo run --example testbed-sim -- --kubeconfig .sandbox/kube/kubeconfig [--interval-ms 300] [--eks-cluster NAME]
//!       [--real-karpenter scripts/testbed-karpenter.sh --work-dir DIR | --no-karpenter]
//!       [--scheduler | --no-scheduler]
//!
//! With `--eks-cluster`, it also reads that cluster's managed nodegroups from the AWS API
//! (the emulator, through AWS_ENDPOINT_URL) and joins nodes as their desired size grows.
//! With `--real-karpenter`, the real Karpenter controller (the binaries that script builds)
//! runs for every Karpenter Deployment instead of the simulator's stand-in; it talks to the
//! AWS emulator at AWS_ENDPOINT_URL in AWS_REGION and keeps its logs under `--work-dir`.
//! With `--no-karpenter`, there is no stand-in either: the real controller runs elsewhere
//! (e.g. `scripts/testbed-karpenter.sh smoke` starts it itself).
//! Without the stand-in the scheduler is on: pending pods are bound to Ready nodes they fit
//! on or marked Unschedulable, which is what makes the real Karpenter provision;
//! `--scheduler`/`--no-scheduler` override that.
//!
//! Runs until SIGTERM or Ctrl-C; logs every change it makes to stderr.
#![allow(clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[path = "mod.rs"]
#[allow(dead_code)] // shared with tests/it/sim.rs, which uses more of it
mod sim;

const USAGE: &str =
    "usage: testbed-sim --kubeconfig FILE [--interval-ms N] [--eks-cluster NAME] [--real-karpenter SCRIPT --work-dir DIR | --no-karpenter] [--scheduler | --no-scheduler]";

struct Args {
    kubeconfig: PathBuf,
    interval: Duration,
    eks_cluster: Option<String>,
    real_karpenter: Option<(PathBuf, PathBuf)>,
    no_karpenter: bool,
    scheduler: Option<bool>,
}

fn parse() -> Result<Args, String> {
    let mut kubeconfig = None;
    let mut eks_cluster = None;
    let mut script = None;
    let mut work_dir = None;
    let mut no_karpenter = false;
    let mut scheduler = None;
    let mut interval = Duration::from_millis(300);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(value()?)),
            "--interval-ms" => {
                let v = value()?;
                let ms: u64 = v.parse().map_err(|_| format!("--interval-ms: not a number: {v}"))?;
                interval = Duration::from_millis(ms.max(10));
            }
            "--eks-cluster" => eks_cluster = Some(value()?),
            "--real-karpenter" => script = Some(PathBuf::from(value()?)),
            "--work-dir" => work_dir = Some(PathBuf::from(value()?)),
            "--no-karpenter" => no_karpenter = true,
            "--scheduler" => scheduler = Some(true),
            "--no-scheduler" => scheduler = Some(false),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument: {other}\n{USAGE}")),
        }
    }
    let real_karpenter = match (script, work_dir) {
        (Some(s), Some(w)) => Some((s, w)),
        (None, None) => None,
        _ => return Err(format!("--real-karpenter and --work-dir go together\n{USAGE}")),
    };
    if no_karpenter && real_karpenter.is_some() {
        return Err(format!("--no-karpenter and --real-karpenter exclude each other\n{USAGE}"));
    }
    Ok(Args {
        kubeconfig: kubeconfig.ok_or(format!("--kubeconfig is required\n{USAGE}"))?,
        interval,
        eks_cluster,
        real_karpenter,
        no_karpenter,
        scheduler,
    })
}

async fn client(path: &PathBuf) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Keeps each managed nodegroup's Nodes in step with its desired size, as its instances would.
async fn nodegroups(client: kube::Client, cluster: String, interval: Duration, stop: tokio::sync::watch::Receiver<bool>) {
    let cfg = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let eks = aws_sdk_eks::Client::new(&cfg);
    while !*stop.borrow() {
        if let Ok(list) = eks.list_nodegroups().cluster_name(&cluster).send().await {
            for ng in list.nodegroups() {
                let Ok(d) = eks.describe_nodegroup().cluster_name(&cluster).nodegroup_name(ng).send().await else { continue };
                let desired = d.nodegroup().and_then(|n| n.scaling_config()).and_then(|s| s.desired_size()).unwrap_or(0);
                if let Err(e) = sim::nodegroup_nodes(&client, ng, desired.max(0) as usize).await {
                    eprintln!("testbed-sim: nodegroup {ng}: {e:#}");
                }
            }
        }
        tokio::time::sleep(interval.max(Duration::from_secs(1))).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Args { kubeconfig, interval, eks_cluster, real_karpenter, no_karpenter, scheduler } = match parse() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(64);
        }
    };
    let client = match client(&kubeconfig).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("testbed-sim: {}: {e:#}", kubeconfig.display());
            return ExitCode::FAILURE;
        }
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let _ = tx.send(true);
        // Keep the sender alive until the loop has seen the signal.
        std::future::pending::<()>().await;
    });
    eprintln!("testbed-sim: simulating controllers against {} every {:?}", kubeconfig.display(), interval);
    if let Some(cluster) = eks_cluster {
        tokio::spawn(nodegroups(client.clone(), cluster, interval, rx.clone()));
    }
    let mut opts = sim::Options { scheduler, ..Default::default() };
    if no_karpenter {
        opts.karpenter = sim::Karpenter::External;
        eprintln!("testbed-sim: no Karpenter stand-in (the real controller runs elsewhere)");
    }
    if let Some((script, work_dir)) = real_karpenter {
        let env = |k: &str| std::env::var(k).map_err(|_| anyhow::anyhow!("--real-karpenter needs {k} (source the AWS emulator's env)"));
        let runner = async {
            let spec = sim::controller::ControllerSpec::from_kubeconfig(
                &kubeconfig,
                sim::controller::binaries_from_script(script),
                env("AWS_ENDPOINT_URL")?,
                env("AWS_REGION")?,
                work_dir,
            )?;
            sim::controller::Runner::new(spec).await
        };
        match runner.await {
            Ok(r) => opts.karpenter = sim::Karpenter::Real(std::sync::Arc::new(r)),
            Err(e) => {
                eprintln!("testbed-sim: {e:#}");
                return ExitCode::FAILURE;
            }
        }
        eprintln!("testbed-sim: the real Karpenter controller runs for every Karpenter Deployment");
    }
    eprintln!("testbed-sim: scheduler {}", if opts.scheduler_on() { "on" } else { "off" });
    sim::run_with(client, interval, rx, opts).await;
    ExitCode::SUCCESS
}
