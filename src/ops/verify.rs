/*!
`karpctl verify`: the provisioning test every runbook ends with, automated.
A pod that selects one pool (`karpenter.sh/nodepool`) and tolerates its taints
is scheduled in a scratch namespace; karpctl waits for a node from that pool
and the pod Running, reports how long each took, and cleans up. On timeout it
reports the pod's events and the pool's conditions instead of hanging.
*/

use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use serde_json::{json, Value};

use crate::cli::{Global, OutputFormat, VerifyArgs};
use crate::config::{self, types::TaintEffect};
use crate::engine::{Event, Outcome};
use crate::kube::apply;
use crate::ui::progress::{Progress, Style};

use super::{exit, Report};

const NAMESPACE: &str = "karpctl-verify";

fn effect(e: TaintEffect) -> &'static str {
    match e {
        TaintEffect::NoSchedule => "NoSchedule",
        TaintEffect::PreferNoSchedule => "PreferNoSchedule",
        TaintEffect::NoExecute => "NoExecute",
    }
}

/// The test pod for `pool`: selects it, tolerates its taints, requests a little.
pub fn test_pod(c: &config::Config, pool: &config::types::NodePool, name: &str, image: &str) -> Value {
    let tolerations: Vec<Value> = pool
        .taints
        .iter()
        .chain(&pool.startup_taints)
        .map(|t| json!({"key": t.key, "operator": "Exists", "effect": effect(t.effect)}))
        .collect();
    let gpu = pool.limits.contains_key("nvidia.com/gpu");
    let mut requests = json!({"cpu": "50m", "memory": "64Mi"});
    if gpu {
        requests["nvidia.com/gpu"] = json!("1");
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {
            "app.kubernetes.io/managed-by": "karpctl", "karpctl.io/verify": pool.name, crate::render::cfn::CLUSTER_TAG: c.cluster.name}},
        "spec": {
            "nodeSelector": {"karpenter.sh/nodepool": pool.name},
            "tolerations": tolerations,
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "containers": [{"name": "verify", "image": image, "resources": {"requests": requests.clone(), "limits": if gpu { json!({"nvidia.com/gpu": "1"}) } else { json!({}) }}}]
        }
    })
}

pub async fn verify(g: &Global, args: &VerifyArgs) -> anyhow::Result<Report> {
    let loaded = config::load(&g.config)?;
    let c = &loaded.config;
    let pool = match &args.pool {
        Some(p) => c.node_pools.iter().find(|x| &x.name == p).ok_or_else(|| {
            let names: Vec<&str> = c.node_pools.iter().map(|p| p.name.as_str()).collect();
            anyhow::anyhow!("no node pool `{p}` in {}; pools: {}", g.config.display(), names.join(", "))
        })?,
        None => c.node_pools.first().ok_or_else(|| anyhow::anyhow!("{} defines no node pools to verify", g.config.display()))?,
    };
    let backend = super::context::backend(c, g).await?;
    let state = backend.load().await.ok().flatten();
    let client = super::context::kube_client(g, c, state.as_ref()).await?;
    // Nothing to wait for when the pool is not there: say so at once.
    let pools: Api<DynamicObject> = Api::all_with(client.clone(), &apply::node_pool_resource());
    match pools.get_opt(&pool.name).await {
        Ok(Some(_)) => {}
        Ok(None) => anyhow::bail!("NodePool {} does not exist in the cluster; run `karpctl up` first", pool.name),
        Err(kube::Error::Api(s)) if s.code == 404 => {
            anyhow::bail!("the cluster has no Karpenter CRDs (NodePool {} cannot exist); run `karpctl up` first", pool.name)
        }
        Err(e) => return Err(e).context(format!("reading NodePool {}", pool.name)),
    }
    let name = format!("verify-{}-{}", pool.name, &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let started = Instant::now();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    // A previous verify's namespace may still be terminating: wait for it to go.
    let waited = Instant::now();
    while let Some(ns) = namespaces.get_opt(NAMESPACE).await? {
        if ns.metadata.deletion_timestamp.is_none() {
            break;
        }
        if waited.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("namespace {NAMESPACE} from an earlier verify is still terminating after 120s; check `kubectl get ns {NAMESPACE} -o yaml`");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let created_ns = if namespaces.get_opt(NAMESPACE).await?.is_none() {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE, "labels": {"app.kubernetes.io/managed-by": "karpctl"}}}))?;
        namespaces.create(&PostParams::default(), &ns).await.context("creating namespace karpctl-verify")?;
        true
    } else {
        false
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let pod: Pod = serde_json::from_value(test_pod(c, pool, &name, &args.image))?;
    // The namespace's default service account may lag its creation by a moment.
    let mut attempt = 0;
    loop {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => break,
            Err(kube::Error::Api(s)) if s.is_forbidden() && s.message.contains("serviceaccount") && attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e).context(format!("creating test pod {NAMESPACE}/{name}")),
        }
    }
    let progress = Progress::new(Style::detect(g.output == OutputFormat::Json));
    let step = format!("verify/{}", pool.name);
    progress.event(Event::Started { step: step.clone(), why: vec![] });
    let say = |m: String| progress.event(Event::Progress { step: step.clone(), message: m });
    let outcome = wait(&client, &pods, &name, &pool.name, args.timeout, &say).await;
    let finished = match &outcome {
        Ok(_) => Outcome::Applied { action: crate::engine::Action::None },
        Err(e) => Outcome::Failed { error: e.clone() },
    };
    progress.event(Event::Finished { step: step.clone(), outcome: finished, elapsed_ms: started.elapsed().as_millis() });
    // Clean up whatever happened; the node Karpenter made is consolidated away by it.
    if !args.keep {
        let _ = pods.delete(&name, &DeleteParams::default().grace_period(0)).await;
        if created_ns {
            let _ = namespaces.delete(NAMESPACE, &DeleteParams::default()).await;
        }
    }
    let (ok, doc) = match outcome {
        Ok((node, node_after, running_after)) => (
            true,
            json!({"result": "passed", "pool": pool.name, "pod": name, "node": node,
                   "nodeAfterSeconds": node_after.as_secs_f64(), "runningAfterSeconds": running_after.as_secs_f64(), "cleanedUp": !args.keep}),
        ),
        Err(why) => {
            let report = diagnose(&client, &pods, &name, &pool.name).await;
            (false, json!({"result": "failed", "pool": pool.name, "pod": name, "reason": why, "diagnosis": report,
                           "elapsedSeconds": started.elapsed().as_secs_f64(), "cleanedUp": !args.keep}))
        }
    };
    let stdout = match g.output {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&doc)?),
        OutputFormat::Yaml => serde_yaml::to_string(&doc)?,
        OutputFormat::Text => text(&doc),
    };
    Ok(Report { stdout, warnings: loaded.warnings, exit: if ok { exit::OK } else { exit::ERROR }, ..Default::default() })
}

/// Until the pod runs on a node of `pool`: (node, node seen after, running after).
async fn wait(
    client: &kube::Client,
    pods: &Api<Pod>,
    name: &str,
    pool: &str,
    timeout: Duration,
    say: &dyn Fn(String),
) -> Result<(String, Duration, Duration), String> {
    let started = Instant::now();
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node_at: Option<Duration> = None;
    loop {
        let pod = pods.get_opt(name).await.map_err(|e| format!("reading the test pod: {e}"))?.ok_or("the test pod disappeared")?;
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
        if let Some(n) = &node {
            let labels = nodes.get_opt(n).await.ok().flatten().and_then(|n| n.metadata.labels).unwrap_or_default();
            if labels.get("karpenter.sh/nodepool").map(String::as_str) != Some(pool) {
                return Err(format!("the test pod was scheduled on node {n}, which is not from pool {pool}"));
            }
            node_at.get_or_insert(started.elapsed());
            if phase == "Running" {
                return Ok((n.clone(), node_at.unwrap_or_default(), started.elapsed()));
            }
        }
        if started.elapsed() >= timeout {
            return Err(match node {
                Some(n) => format!("the pod landed on {n} but was not Running after {}s (phase {phase})", timeout.as_secs()),
                None => format!("no node from pool {pool} took the pod within {}s", timeout.as_secs()),
            });
        }
        say(format!(
            "verify {pool}: {} ({}s)",
            match &node {
                Some(n) => format!("pod on {n}, {phase}"),
                None => "waiting for Karpenter to launch a node".into(),
            },
            started.elapsed().as_secs()
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The pod's events and the pool's conditions: where Karpenter says why.
async fn diagnose(client: &kube::Client, _pods: &Api<Pod>, name: &str, pool: &str) -> Value {
    let events: Api<KubeEvent> = Api::namespaced(client.clone(), NAMESPACE);
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let evs: Vec<String> = events
        .list(&lp)
        .await
        .map(|l| l.items.iter().map(|e| format!("{}: {}", e.reason.clone().unwrap_or_default(), e.message.clone().unwrap_or_default())).collect())
        .unwrap_or_default();
    let pools: Api<DynamicObject> = Api::all_with(client.clone(), &apply::node_pool_resource());
    let pool_state = match pools.get_opt(pool).await {
        Ok(Some(p)) => {
            let v = serde_json::to_value(p).unwrap_or_default();
            if apply::is_ready(&v) {
                "Ready".to_string()
            } else {
                apply::why_not_ready(&v)
            }
        }
        Ok(None) => "the NodePool does not exist (run `karpctl up`)".into(),
        Err(e) => format!("could not read the NodePool: {e}"),
    };
    json!({"podEvents": evs, "nodePool": pool_state, "hints": [
        "kubectl logs -n <karpenter namespace> -l app.kubernetes.io/name=karpenter --tail=100",
        "check the pool's limits, its instance requirements and the EC2NodeClass status (`karpctl status`)"
    ]})
}

fn text(doc: &Value) -> String {
    if doc["result"] == "passed" {
        return format!(
            "verify {}: passed — node {} after {:.1}s, pod Running after {:.1}s{}\n",
            doc["pool"].as_str().unwrap_or("?"),
            doc["node"].as_str().unwrap_or("?"),
            doc["nodeAfterSeconds"].as_f64().unwrap_or(0.0),
            doc["runningAfterSeconds"].as_f64().unwrap_or(0.0),
            if doc["cleanedUp"] == true { "; test pod removed" } else { "; test pod kept (--keep)" }
        );
    }
    let mut s = format!("verify {}: FAILED — {}\n", doc["pool"].as_str().unwrap_or("?"), doc["reason"].as_str().unwrap_or("?"));
    let d = &doc["diagnosis"];
    s.push_str(&format!("  NodePool: {}\n", d["nodePool"].as_str().unwrap_or("?")));
    for e in d["podEvents"].as_array().into_iter().flatten() {
        s.push_str(&format!("  event: {}\n", e.as_str().unwrap_or("")));
    }
    for h in d["hints"].as_array().into_iter().flatten() {
        s.push_str(&format!("  next: {}\n", h.as_str().unwrap_or("")));
    }
    s
}
