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
use crate::model::ownership;
use crate::output::{ApiVersion, Diagnosis, Verify, VerifyKind, VerifyResult};
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
            ownership::MANAGED_BY: ownership::MANAGER, ownership::VERIFY_LABEL: pool.name, ownership::CLUSTER_TAG: c.cluster.name}},
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
    let progress = Progress::new(Style::detect(g.output == OutputFormat::Json, g.verbose > 0));
    let step = format!("verify/{}", pool.name);
    progress.event(Event::Started { step: step.clone(), why: vec![] });
    let say = |m: String| progress.event(Event::Progress { step: step.clone(), message: m });

    let namespaces: Api<Namespace> = Api::all(client.clone());
    // A previous verify's namespace may still be terminating: wait for it to go.
    let waited = Instant::now();
    while let Some(ns) = namespaces.get_opt(NAMESPACE).await? {
        if ns.metadata.deletion_timestamp.is_none() {
            break;
        }
        if waited.elapsed() > Duration::from_secs(120) {
            let error = format!("namespace {NAMESPACE} from an earlier verify is still terminating after 120s");
            progress.event(Event::Finished { step: step.clone(), outcome: Outcome::Failed { error: error.clone() }, elapsed_ms: started.elapsed().as_millis() });
            anyhow::bail!("{error}; check `kubectl get ns {NAMESPACE} -o yaml`");
        }
        say(format!("waiting for namespace {NAMESPACE} of an earlier verify to be deleted ({}s)", waited.elapsed().as_secs()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let created_ns = if namespaces.get_opt(NAMESPACE).await?.is_none() {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NAMESPACE, "labels": {ownership::MANAGED_BY: ownership::MANAGER}}}))?;
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
                say(format!("waiting for the default service account of namespace {NAMESPACE}"));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e).context(format!("creating test pod {NAMESPACE}/{name}")),
        }
    }
    say(format!("created test pod {NAMESPACE}/{name}"));
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
    let base = Verify {
        api_version: ApiVersion::V1Alpha1,
        kind: VerifyKind::Verify,
        result: VerifyResult::Passed,
        pool: pool.name.clone(),
        pod: name.clone(),
        node: None,
        node_after_seconds: None,
        running_after_seconds: None,
        reason: None,
        diagnosis: None,
        elapsed_seconds: None,
        cleaned_up: !args.keep,
    };
    let doc = match outcome {
        Ok((node, node_after, running_after)) => Verify {
            node: Some(node),
            node_after_seconds: Some(node_after.as_secs_f64()),
            running_after_seconds: Some(running_after.as_secs_f64()),
            ..base
        },
        Err(why) => Verify {
            result: VerifyResult::Failed,
            reason: Some(why),
            diagnosis: Some(diagnose(&client, &pods, &name, &pool.name).await),
            elapsed_seconds: Some(started.elapsed().as_secs_f64()),
            ..base
        },
    };
    let ok = doc.result == VerifyResult::Passed;
    let stdout = match g.output {
        OutputFormat::Text => text(&doc),
        f => crate::output::encode(&doc, f)?,
    };
    let help = if ok { Vec::new() } else { vec![format!("karpctl verify --pool {} --keep   # leaves the pod for `kubectl describe pod -n {NAMESPACE}`", pool.name)] };
    Ok(Report { stdout, warnings: loaded.warnings, help, exit: if ok { exit::OK } else { exit::ERROR }, ..Default::default() })
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
async fn diagnose(client: &kube::Client, _pods: &Api<Pod>, name: &str, pool: &str) -> Diagnosis {
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
    Diagnosis {
        pod_events: evs,
        node_pool: pool_state,
        hints: vec![
            "kubectl logs -n <karpenter namespace> -l app.kubernetes.io/name=karpenter --tail=100".into(),
            "check the pool's limits, its instance requirements and the EC2NodeClass status (`karpctl status`)".into(),
        ],
    }
}

fn text(doc: &Verify) -> String {
    if doc.result == VerifyResult::Passed {
        return format!(
            "verify {}: passed — node {} after {:.1}s, pod Running after {:.1}s{}\n",
            doc.pool,
            doc.node.as_deref().unwrap_or("?"),
            doc.node_after_seconds.unwrap_or(0.0),
            doc.running_after_seconds.unwrap_or(0.0),
            if doc.cleaned_up { "; test pod removed" } else { "; test pod kept (--keep)" }
        );
    }
    let mut s = format!("verify {}: FAILED — {}\n", doc.pool, doc.reason.as_deref().unwrap_or("?"));
    if let Some(d) = &doc.diagnosis {
        s.push_str(&format!("  NodePool: {}\n", d.node_pool));
        for e in &d.pod_events {
            s.push_str(&format!("  event: {e}\n"));
        }
        for h in &d.hints {
            s.push_str(&format!("  next: {h}\n"));
        }
    }
    s
}
