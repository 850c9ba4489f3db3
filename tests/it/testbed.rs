//! The test beds seen from Rust: the AWS SDK reads the seeded cluster and SSM
//! parameters through the endpoint override, faults and the request counter
//! work, and the real API server accepts every rendered preset by server-side
//! apply while rejecting invalid objects with the CRDs' CEL messages.

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::ApiResource;
use serde_json::{json, Value};

use karpctl::render::{self, Inputs};

use crate::beds::{AwsEmulator, KubeBed};
use crate::support::*;

#[tokio::test]
async fn the_sdk_reads_the_seeded_cluster_and_amis_through_the_endpoint_override() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let cfg = emu.sdk_config("us-west-2").await;
    let eks = aws_sdk_eks::Client::new(&cfg);
    let c = eks.describe_cluster().name("karpctl-sandbox").send().await.expect("DescribeCluster").cluster.expect("cluster");
    assert_eq!(c.status.map(|s| s.as_str().to_string()), Some("ACTIVE".to_string()));
    assert_eq!(c.version.as_deref(), Some("1.31"));
    assert!(c.endpoint.is_some() && c.identity.and_then(|i| i.oidc).and_then(|o| o.issuer).is_some());
    let vpc = c.resources_vpc_config.expect("vpc config");
    assert_eq!(vpc.subnet_ids.unwrap_or_default().len(), 3);
    assert!(vpc.cluster_security_group_id.is_some());

    let ssm = aws_sdk_ssm::Client::new(&cfg);
    let names = [
        "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/image_id",
        "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/arm64/nvidia/recommended/image_id",
        "/aws/service/bottlerocket/aws-k8s-1.31-nvidia/x86_64/latest/image_id",
        "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/arm64/neuron/recommended/image_id",
    ];
    let out = ssm.get_parameters().set_names(Some(names.iter().map(|s| s.to_string()).collect())).send().await.expect("GetParameters");
    let params = out.parameters.unwrap_or_default();
    assert_eq!(params.len(), 3, "three exist");
    assert_eq!(out.invalid_parameters.unwrap_or_default(), [names[3].to_string()], "there is no arm64 Neuron AMI");
    let want = &emu.handle["seed"]["ssm_parameters"];
    for p in &params {
        let name = p.name.as_deref().unwrap();
        assert_eq!(Some(p.value.as_deref().unwrap()), want[name].as_str(), "{name}");
        assert!(p.value.as_deref().unwrap().starts_with("ami-"));
    }
    let counts = emu.requests();
    assert_eq!(counts["counts"]["eks:DescribeCluster"], 1);
    assert_eq!(counts["counts"]["ssm:GetParameters"], 1);
    assert_eq!(counts["mutating"], 0);
}

#[tokio::test]
async fn injected_throttling_is_retried_and_counted() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    emu.control("POST", "faults", Some(&json!({"operation": "eks:DescribeCluster", "kind": "throttle", "count": 2})));
    let cfg = emu.sdk_config("us-west-2").await;
    let eks = aws_sdk_eks::Client::new(&cfg);
    eks.describe_cluster().name("karpctl-sandbox").send().await.expect("succeeds after retries");
    let r = emu.requests();
    assert_eq!(r["counts"]["eks:DescribeCluster"], 3, "two throttled attempts and one success: {r}");

    emu.control("POST", "faults", Some(&json!({"operation": "eks:ListNodegroups", "kind": "5xx"})));
    let no_retry = aws_sdk_eks::Client::from_conf(
        aws_sdk_eks::config::Builder::from(&cfg).retry_config(aws_config::retry::RetryConfig::disabled()).build(),
    );
    let err = no_retry.list_nodegroups().cluster_name("karpctl-sandbox").send().await.expect_err("a permanent 5xx");
    assert!(format!("{:?}", err).contains("500") || format!("{:?}", err).contains("InternalFailure"), "{err:?}");
}

fn resource(obj: &Value) -> ApiResource {
    let (group, version) = obj["apiVersion"].as_str().unwrap().split_once('/').unwrap();
    let kind = obj["kind"].as_str().unwrap();
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: obj["apiVersion"].as_str().unwrap().into(),
        kind: kind.into(),
        plural: match kind.to_lowercase() {
            k if k.ends_with('s') => format!("{k}es"),
            k => format!("{k}s"),
        },
    }
}

async fn apply(client: &kube::Client, obj: &Value, dry_run: bool) -> Result<DynamicObject, kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource(obj));
    let mut pp = PatchParams::apply("karpctl");
    pp.dry_run = dry_run;
    api.patch(obj["metadata"]["name"].as_str().unwrap(), &pp, &Patch::Apply(obj)).await
}

#[tokio::test]
async fn the_api_server_accepts_every_preset_and_rejects_with_cel_messages() {
    let Some(bed) = KubeBed::start() else { return };
    let client = bed.client().await;
    for p in presets() {
        let c = load_preset(p);
        for inputs in [Inputs::default(), pinned_inputs(&c)] {
            for d in render::render(&c, &inputs).unwrap().documents {
                let kind = d.content["kind"].as_str().unwrap_or_default();
                if kind == "NodePool" || kind == "EC2NodeClass" {
                    if let Err(e) = apply(&client, &d.content, true).await {
                        panic!("{} {}: the API server refused it: {e}", preset_name(p), d.path);
                    }
                }
            }
        }
    }

    // For real: apply a class and a pool, then re-apply (no change) and read back.
    let c = load_preset(karpctl::cli::Preset::Default);
    let b = render::render(&c, &pinned_inputs(&c)).unwrap();
    let class = &b.documents.iter().find(|d| d.path == "ec2nodeclass-default.yaml").unwrap().content;
    let pool = &b.documents.iter().find(|d| d.path == "nodepool-default.yaml").unwrap().content;
    apply(&client, class, false).await.expect("EC2NodeClass applied");
    let first = apply(&client, pool, false).await.expect("NodePool applied");
    let again = apply(&client, pool, false).await.expect("re-applied");
    assert_eq!(first.metadata.resource_version, again.metadata.resource_version, "an identical apply changes nothing");
    let managers: Vec<String> = again.metadata.managed_fields.unwrap_or_default().into_iter().filter_map(|m| m.manager).collect();
    assert!(managers.contains(&"karpctl".to_string()), "{managers:?}");

    // What karpctl's validation refuses offline, the API server refuses too, with the CRD's message.
    let mut restricted = pool.clone();
    restricted["metadata"]["name"] = "restricted".into();
    restricted["spec"]["template"]["spec"]["requirements"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "karpenter.sh/nodepool", "operator": "In", "values": ["x"]}));
    let e = apply(&client, &restricted, true).await.expect_err("restricted key");
    assert!(e.to_string().contains("karpenter.sh/nodepool"), "{e}");

    let mut two_terms = class.clone();
    two_terms["metadata"]["name"] = "two-terms".into();
    two_terms["spec"]["amiSelectorTerms"] = json!([{"alias": "al2023@latest"}, {"id": "ami-0123"}]);
    let e = apply(&client, &two_terms, true).await.expect_err("alias with another term");
    assert!(e.to_string().contains("'alias' is mutually exclusive"), "{e}");

    let mut budget = pool.clone();
    budget["metadata"]["name"] = "budget".into();
    budget["spec"]["disruption"]["budgets"] = json!([{"nodes": "1", "schedule": "@daily"}]);
    let e = apply(&client, &budget, true).await.expect_err("schedule without duration");
    assert!(e.to_string().contains("'schedule' must be set with 'duration'"), "{e}");
}

#[tokio::test]
async fn the_simulator_stands_in_for_controllers_and_kubelets() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let Some(bed) = KubeBed::start() else { return };
    let sim = crate::beds::KubeSim { client: bed.client().await };
    sim.node("ip-10-0-1-10", Some("default"), None, "4", "16Gi").await;
    sim.node("ip-10-0-2-20", None, Some("system"), "2", "8Gi").await;
    sim.pod("default", "web-1", "ip-10-0-1-10", &[("app", "web")], "500m").await;
    sim.pdb("default", "web", "web", 1, 0).await;

    let nodes: Api<Node> = Api::all(sim.client.clone());
    let karpenter = nodes.list(&kube::api::ListParams::default().labels("karpenter.sh/nodepool")).await.unwrap();
    assert_eq!(karpenter.items.len(), 1);
    let n = &karpenter.items[0];
    assert!(n.status.as_ref().unwrap().conditions.as_ref().unwrap().iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let pods: Api<Pod> = Api::namespaced(sim.client.clone(), "default");
    let p = pods.get("web-1").await.unwrap();
    assert_eq!(p.spec.unwrap().node_name.as_deref(), Some("ip-10-0-1-10"));
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(sim.client.clone(), "default");
    assert_eq!(pdbs.get("web").await.unwrap().status.unwrap().disruptions_allowed, 0);

    // A Deployment becomes available only because the simulator says so.
    use k8s_openapi::api::apps::v1::Deployment;
    let deploys: Api<Deployment> = Api::namespaced(sim.client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "karpenter"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "karpenter"}},
                 "template": {"metadata": {"labels": {"app": "karpenter"}},
                              "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]}}}
    }))
    .unwrap();
    deploys.create(&kube::api::PostParams::default(), &d).await.unwrap();
    assert_eq!(deploys.get("karpenter").await.unwrap().status.and_then(|s| s.available_replicas), None);
    sim.deployment_available("default", "karpenter").await;
    assert_eq!(deploys.get("karpenter").await.unwrap().status.and_then(|s| s.available_replicas), Some(2));

    // A NodePool made Ready the way Karpenter would report it.
    let c = load_preset(karpctl::cli::Preset::Default);
    let b = render::render(&c, &Inputs::default()).unwrap();
    let pool = &b.documents.iter().find(|d| d.path == "nodepool-default.yaml").unwrap().content;
    apply(&sim.client, pool, false).await.unwrap();
    sim.condition(&resource(pool), None, "default", "Ready", true, "simulated").await;
    let api: Api<DynamicObject> = Api::all_with(sim.client.clone(), &resource(pool));
    let got = api.get("default").await.unwrap();
    assert_eq!(got.data["status"]["conditions"][0]["type"], "Ready");
    assert_eq!(got.data["status"]["conditions"][0]["status"], "True");
}
