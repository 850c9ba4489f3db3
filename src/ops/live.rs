/*!
What runs in the cluster right now, for `karpctl status`: the controller's
pods and version, the Karpenter CRDs, every pool and class with its conditions
and node count, and the device plugin. Read-only; each part that cannot be read
says why instead of failing the command.
*/

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{json, Value};

use crate::config::Config;
use crate::kube::apply;

/// The live view as one JSON document (the `-o json` schema of `status.live`).
pub async fn gather(client: &kube::Client, c: &Config) -> Value {
    let (controller, crds, objects, device_plugin) = tokio::join!(
        controller(client, &c.karpenter.namespace),
        crds(client),
        objects(client),
        device_plugin(client, c),
    );
    json!({
        "controller": controller.unwrap_or_else(err),
        "crds": crds.unwrap_or_else(err),
        "nodeClasses": objects.as_ref().map(|o| o.0.clone()).unwrap_or_else(|e| err(anyhow::anyhow!("{e}"))),
        "nodePools": objects.map(|o| o.1).unwrap_or_else(err),
        "devicePlugin": device_plugin.unwrap_or_else(err),
    })
}

fn err(e: anyhow::Error) -> Value {
    json!({"error": format!("{e:#}")})
}

fn instance(release: &str) -> ListParams {
    ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"))
}

async fn controller(client: &kube::Client, ns: &str) -> anyhow::Result<Value> {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let Some(d) = deps.list(&instance("karpenter")).await?.items.into_iter().next() else {
        return Ok(json!({"installed": false, "namespace": ns}));
    };
    let image = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let version = d.metadata.labels.as_ref().and_then(|l| l.get("app.kubernetes.io/version")).cloned();
    let st = d.status.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pods: Vec<Value> = pods
        .list(&instance("karpenter"))
        .await?
        .items
        .iter()
        .map(|p| {
            let s = p.status.clone().unwrap_or_default();
            let ready = s.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
            let restarts: i32 = s.container_statuses.iter().flatten().map(|c| c.restart_count).sum();
            json!({"name": p.metadata.name, "phase": s.phase, "ready": ready, "node": p.spec.as_ref().and_then(|s| s.node_name.clone()), "restarts": restarts})
        })
        .collect();
    Ok(json!({
        "installed": true,
        "namespace": ns,
        "deployment": d.metadata.name,
        "version": version,
        "image": image,
        "replicas": d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        "available": st.available_replicas.unwrap_or(0),
        "pods": pods,
    }))
}

async fn crds(client: &kube::Client) -> anyhow::Result<Value> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut out = Vec::new();
    for crd in api.list(&ListParams::default()).await?.items {
        if crd.spec.group != "karpenter.sh" && crd.spec.group != "karpenter.k8s.aws" {
            continue;
        }
        let served: Vec<String> = crd.spec.versions.iter().filter(|v| v.served).map(|v| v.name.clone()).collect();
        let karpenter = crd.metadata.annotations.as_ref().and_then(|a| a.get(crate::model::ownership::VERSION_ANNOTATION)).cloned();
        out.push(json!({"name": crd.metadata.name, "served": served, "karpenterVersion": karpenter}));
    }
    Ok(Value::Array(out))
}

fn condition_summary(o: &Value) -> Value {
    json!({
        "ready": apply::is_ready(o),
        "why": (!apply::is_ready(o)).then(|| apply::why_not_ready(o)),
    })
}

async fn objects(client: &kube::Client) -> anyhow::Result<(Value, Value)> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut per_pool: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for n in nodes.list(&ListParams::default().labels("karpenter.sh/nodepool")).await?.items {
        let pool = n.metadata.labels.as_ref().and_then(|l| l.get("karpenter.sh/nodepool")).cloned().unwrap_or_default();
        let ready = n.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let e = per_pool.entry(pool).or_default();
        e.0 += 1;
        e.1 += u32::from(ready);
    }
    let list = |ar: kube::discovery::ApiResource| {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        async move {
            match api.list(&ListParams::default()).await {
                Ok(l) => Ok(l.items.into_iter().map(|o| serde_json::to_value(o).expect("serializes")).collect::<Vec<Value>>()),
                Err(kube::Error::Api(s)) if crate::kube::not_found(&s) => Ok(Vec::new()),
                Err(e) => Err(anyhow::Error::from(e)),
            }
        }
    };
    let classes: Vec<Value> = list(apply::node_class_resource())
        .await?
        .iter()
        .map(|o| {
            let mut v = condition_summary(o);
            v["name"] = o["metadata"]["name"].clone();
            v["managedByKarpctl"] = json!(o.pointer("/metadata/labels/app.kubernetes.io~1managed-by") == Some(&json!("karpctl")));
            v
        })
        .collect();
    let pools: Vec<Value> = list(apply::node_pool_resource())
        .await?
        .iter()
        .map(|o| {
            let name = o["metadata"]["name"].as_str().unwrap_or_default().to_string();
            let (nodes, ready) = per_pool.get(&name).copied().unwrap_or_default();
            let mut v = condition_summary(o);
            v["name"] = json!(name);
            v["nodeClass"] = o.pointer("/spec/template/spec/nodeClassRef/name").cloned().unwrap_or(Value::Null);
            v["nodes"] = json!(nodes);
            v["readyNodes"] = json!(ready);
            v["limits"] = o.pointer("/spec/limits").cloned().unwrap_or(Value::Null);
            v["managedByKarpctl"] = json!(o.pointer("/metadata/labels/app.kubernetes.io~1managed-by") == Some(&json!("karpctl")));
            v
        })
        .collect();
    Ok((Value::Array(classes), Value::Array(pools)))
}

async fn device_plugin(client: &kube::Client, c: &Config) -> anyhow::Result<Value> {
    if !crate::render::helm::device_plugin_enabled(c) {
        return Ok(json!({"enabled": false}));
    }
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), &c.device_plugin.namespace);
    let Some(d) = api.list(&instance("nvidia-device-plugin")).await?.items.into_iter().next() else {
        return Ok(json!({"enabled": true, "installed": false}));
    };
    let st = d.status.unwrap_or_default();
    Ok(json!({
        "enabled": true,
        "installed": true,
        "daemonSet": d.metadata.name,
        "desired": st.desired_number_scheduled,
        "ready": st.number_ready,
    }))
}
