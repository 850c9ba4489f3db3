/*!
`karpctl verify`: the provisioning test every runbook ends with, automated.
A pod that selects one pool (`karpenter.sh/nodepool`) and tolerates its taints
is scheduled in a scratch namespace; karpctl waits for a node from that pool
and the pod Running, reports how long each took, and cleans up. On timeout it
reports the pod's events and the pool's conditions instead of hanging.
*/

use std::time::Instant;

use anyhow::Context as _;
use kube::api::{Api, DynamicObject};

use crate::cli::{Global, OutputFormat, VerifyArgs};
use crate::config;
use crate::engine::{Event, Outcome};
use crate::kube::apply;
use crate::output::{ApiVersion, Diagnosis, Verify, VerifyKind, VerifyResult};
use crate::steps::probe::{self, Probe, NAMESPACE};
use crate::ui::progress::{Progress, Style};

use super::{exit, Report};

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

    let probe = Probe { config: c, pool, image: &args.image, timeout: args.timeout, keep: args.keep };
    let outcome = match probe::run(&client, &probe, &name, &say).await {
        Ok(o) => o,
        Err(e) => {
            progress.event(Event::Finished { step: step.clone(), outcome: Outcome::Failed { error: format!("{e:#}") }, elapsed_ms: started.elapsed().as_millis() });
            return Err(e);
        }
    };
    let finished = match &outcome {
        Ok(_) => Outcome::Applied { action: crate::engine::Action::None },
        Err(n) => Outcome::Failed { error: n.reason.clone() },
    };
    progress.event(Event::Finished { step: step.clone(), outcome: finished, elapsed_ms: started.elapsed().as_millis() });
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
        Ok(l) => Verify {
            node: Some(l.node),
            node_after_seconds: Some(l.node_after.as_secs_f64()),
            running_after_seconds: Some(l.running_after.as_secs_f64()),
            ..base
        },
        Err(n) => Verify {
            result: VerifyResult::Failed,
            reason: Some(n.reason),
            diagnosis: Some(Diagnosis {
                pod_events: n.pod_events,
                node_pool: n.node_pool,
                hints: vec![
                    "kubectl logs -n <karpenter namespace> -l app.kubernetes.io/name=karpenter --tail=100".into(),
                    "check the pool's limits, its instance requirements and the EC2NodeClass status (`karpctl status`)".into(),
                ],
            }),
            elapsed_seconds: Some(n.elapsed.as_secs_f64()),
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
