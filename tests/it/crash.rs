//! The crash matrix: `karpctl up` and `karpctl rollback --purge --delete-crds`
//! killed with SIGKILL — the whole process group, helm children included, as a
//! power loss would — at step boundaries and at seeded random instants inside
//! steps, on both beds, and stopped by Ctrl-C (SIGINT to the process group, as a
//! terminal sends it) once per chain. After every kill the state file must parse with
//! karpctl's own reader and keep its lineage and serial order; the next run must
//! be refused with the stale lock and a `help: karpctl state unlock <ID>` line,
//! and after that unlock, converge. Then every resource karpctl or Karpenter can
//! create is listed on both beds (the emulator through boto3, the API server
//! through kubectl and helm) and compared with exactly what an uninterrupted run
//! leaves; a following run must write nothing.
//!
//! Step boundaries come from karpctl's own `-o json` progress events (`started`,
//! and `finished` unless the step was fresh). `KARPCTL_CRASH_SEED`,
//! `KARPCTL_CRASH_POINTS` (kills per command, default 20), `KARPCTL_CRASH_CHAIN`
//! (kills before a run may finish, default 3) and
//! `KARPCTL_CRASH_LOG` (a JSON-lines record of every point) let
//! scripts/crash-matrix.sh run it longer.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::rollback::{Bed, NodegroupKubelet};
use crate::support::repo;
use crate::up::{diff, sandbox_config, show, Sandbox, CLUSTER};

/// Resources by kind, each list sorted.
pub type Inventory = BTreeMap<String, Vec<String>>;

const UP: &[&str] = &["up"];
const ROLLBACK: &[&str] = &["rollback", "--purge", "--delete-crds"];
const NODE_ROLE: &str = "KarpenterNodeRole-karpctl-sandbox";
const CONTROLLER_ROLE: &str = "KarpenterControllerRole-karpctl-sandbox";
const STACK: &str = "Karpenter-karpctl-sandbox";
const SPOT_ROLE: &str = "AWSServiceRoleForEC2Spot";

/// SplitMix64: seeded, so a failing point can be replayed with its seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Where a run is cut: `delay_ms` after its `boundary`-th step boundary (0: after it
/// starts), with `signal` to the whole process group: `KILL` (a crash) or `INT` (Ctrl-C
/// in a terminal, which signals the foreground process group).
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub boundary: usize,
    pub delay_ms: u64,
    pub signal: &'static str,
}

/// How a run that was to be cut at a point ended.
pub struct Cut {
    /// Stopped by the signal (SIGKILL: killed; SIGINT: exit 130) rather than ending first.
    pub killed: bool,
    /// The last boundary event before the kill, e.g. `started cfn-stack/…`, or `(before any step)`.
    pub at: String,
    pub boundaries: usize,
    pub output: Output,
}

/// karpctl as `Sandbox::karpctl` runs it, in a process group of its own.
pub fn command(sb: &Sandbox, args: &[&str]) -> Command {
    let mut cmd = sb.karpctl_command(args);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    cmd
}

/// A step boundary in karpctl's JSON progress: a step started, or finished after doing something.
fn boundary(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    let step = v["step"].as_str()?;
    match v["event"].as_str()? {
        "started" => Some(format!("started {step}")),
        "finished" if v["outcome"]["outcome"] != "fresh" => Some(format!("finished {step} ({})", v["outcome"]["outcome"].as_str().unwrap_or("?"))),
        _ => None,
    }
}

/// Runs karpctl with `-o json` and SIGKILLs its process group at `p`, unless it ends first.
pub fn run_cut(sb: &Sandbox, args: &[&str], p: Point) -> Cut {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let mut child = command(sb, &a).spawn().expect("spawning karpctl");
    let pid = child.id();
    let mut stdout = child.stdout.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = stdout.read_to_end(&mut b);
        b
    });
    let kill = || {
        let _ = Command::new("kill").args([&format!("-{}", p.signal), "--", &format!("-{pid}")]).status();
    };
    let mut stderr = Vec::new();
    let mut at = "(before any step)".to_string();
    let mut seen = 0;
    let mut sent = false;
    if p.boundary == 0 {
        std::thread::sleep(Duration::from_millis(p.delay_ms));
        kill();
        sent = true;
    }
    let mut lines = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while lines.read_line(&mut line).unwrap_or(0) > 0 {
        stderr.extend_from_slice(line.as_bytes());
        // Read on after the kill too: the last boundary in the stream is the last one before it.
        if let Some(b) = boundary(line.trim_end()) {
            seen += 1;
            at = b;
            if !sent && seen == p.boundary {
                std::thread::sleep(Duration::from_millis(p.delay_ms));
                kill();
                sent = true;
            }
        }
        line.clear();
    }
    let status = child.wait().unwrap();
    let stdout = out_thread.join().unwrap();
    let killed = status.signal() == Some(9) || (sent && p.signal == "INT" && status.code() == Some(130));
    Cut { killed, at, boundaries: seen, output: Output { status, stdout, stderr } }
}

/// What a kill must leave: a state karpctl reads, of the same lineage, with the
/// backup one save behind (or equal, when the kill fell between the two writes).
/// Returns the steps left in progress.
pub fn check_state_after_kill(sb: &Sandbox, file: &str, lineage: &mut Option<String>, label: &str) -> Vec<String> {
    let path = sb.dir.join(file);
    let Ok(bytes) = std::fs::read(&path) else {
        assert!(lineage.is_none(), "{label}: the state file vanished");
        return vec![];
    };
    let s = karpctl::state::decode(&bytes).unwrap_or_else(|e| panic!("{label}: the state does not parse after the kill: {e}"));
    assert_eq!(s.cluster, CLUSTER, "{label}");
    match lineage {
        Some(l) => assert_eq!(&s.lineage, l, "{label}: the lineage changed"),
        None => *lineage = Some(s.lineage.clone()),
    }
    if let Ok(b) = std::fs::read(sb.dir.join(format!("{file}.backup"))) {
        let b = karpctl::state::decode(&b).unwrap_or_else(|e| panic!("{label}: the backup does not parse: {e}"));
        assert_eq!(b.lineage, s.lineage, "{label}");
        assert!(b.serial + 1 == s.serial || b.serial == s.serial, "{label}: backup serial {} vs state serial {}", b.serial, s.serial);
    }
    s.steps.iter().filter(|(_, r)| r.status == karpctl::state::StepStatus::InProgress).map(|(id, _)| id.clone()).collect()
}

/// The recovery the README prescribes after a crash: a run is refused naming the
/// dead holder, its `help:` line carries the lock id, `state unlock` takes it.
/// Returns whether there was a lock to clear.
pub fn unlock_stale(sb: &Sandbox, args: &[&str], lock_file: &str, label: &str) -> bool {
    if !sb.dir.join(lock_file).exists() {
        return false;
    }
    let mut a = args.to_vec();
    a.extend(["--lock-timeout", "0"]);
    let refused = sb.karpctl(&a);
    assert_eq!(refused.status.code(), Some(1), "{label}: {}", show(&refused));
    let err = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(err.contains("stale lock: process ") && err.contains("on this host is gone"), "{label}: {err}");
    let id = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("help: karpctl state unlock "))
        .unwrap_or_else(|| panic!("{label}: no `help: karpctl state unlock <ID>` line: {err}"))
        .trim()
        .to_string();
    let unlocked = sb.karpctl(&["state", "unlock", &id]);
    assert!(unlocked.status.success(), "{label}: {}", show(&unlocked));
    assert!(!sb.dir.join(lock_file).exists(), "{label}: the lock is gone after `state unlock {id}`");
    true
}

// ------------------------------------------------------------------------------ inventories

fn venv_python() -> std::path::PathBuf {
    std::env::var_os("KARPCTL_CACHE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/karpctl"))
        .join("venv-aws/bin/python")
}

/// Everything of interest in the emulator, read with boto3 (tests/it/inventory.py).
pub fn aws_inventory(sb: &Sandbox) -> Inventory {
    let o = Command::new(venv_python())
        .arg(repo().join("tests/it/inventory.py"))
        .env("INVENTORY_ENDPOINT", &sb.aws.endpoint)
        .env("INVENTORY_CLUSTER", CLUSTER)
        .output()
        .unwrap();
    assert!(o.status.success(), "inventory.py: {}", show(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Everything of interest on the API server and in helm's records.
pub fn kube_inventory(sb: &Sandbox) -> Inventory {
    let mut inv = Inventory::new();
    let names = |v: &Value, namespaced: bool| -> Vec<String> {
        let mut n: Vec<String> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                let name = i["metadata"]["name"].as_str().unwrap();
                match i["metadata"]["namespace"].as_str() {
                    Some(ns) if namespaced => format!("{ns}/{name}"),
                    _ => name.to_string(),
                }
            })
            .collect();
        n.sort();
        n
    };
    let crds = sb.kubectl_json(&["get", "crd"]);
    let karpenter: Vec<String> = names(&crds, false).into_iter().filter(|n| n.contains("karpenter")).collect();
    for (kind, crd) in [("nodepools", "nodepools.karpenter.sh"), ("ec2nodeclasses", "ec2nodeclasses.karpenter.k8s.aws"), ("nodeclaims", "nodeclaims.karpenter.sh")] {
        let list = if karpenter.iter().any(|c| c == crd) { names(&sb.kubectl_json(&["get", crd]), false) } else { vec![] };
        inv.insert(kind.into(), list);
    }
    inv.insert("crds".into(), karpenter);
    for (kind, what) in [("namespaces", "namespaces"), ("deployments", "deployments"), ("daemonsets", "daemonsets"), ("configmaps", "configmaps"), ("serviceaccounts", "serviceaccounts")] {
        inv.insert(kind.into(), names(&sb.kubectl_json(&["get", what, "-A"]), true));
    }
    let helm_secrets = sb.kubectl_json(&["get", "secrets", "-A", "-l", "owner=helm"]);
    let mut releases: Vec<String> = helm_secrets["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{}/{}", s["metadata"]["namespace"].as_str().unwrap(), s["metadata"]["labels"]["name"].as_str().unwrap()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    releases.sort();
    inv.insert("helm_release_records".into(), releases);
    let o = Command::new(sb.bin.join("helm")).arg("--kubeconfig").arg(sb.kube.kubeconfig()).args(["list", "-A", "-a", "-o", "json"]).output().unwrap();
    assert!(o.status.success(), "helm list: {}", show(&o));
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut rel: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}/{} {} {}", r["namespace"].as_str().unwrap(), r["name"].as_str().unwrap(), r["status"].as_str().unwrap(), r["chart"].as_str().unwrap()))
        .collect();
    rel.sort();
    inv.insert("helm_releases".into(), rel);
    inv.insert("karpenter_nodes".into(), names(&sb.kubectl_json(&["get", "nodes", "-l", "karpenter.sh/nodepool"]), false));
    inv
}

fn with(base: &Inventory, kind: &str, add: &[String]) -> Vec<String> {
    let mut v = base.get(kind).cloned().unwrap_or_default();
    v.extend(add.iter().cloned());
    v.sort();
    v
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Panics with every kind that differs, naming what is missing and what is extra.
pub fn assert_inventory(label: &str, want: &Inventory, have: &Inventory) {
    let mut problems = Vec::new();
    for kind in want.keys().chain(have.keys()).collect::<BTreeSet<_>>() {
        let (w, h) = (want.get(kind).cloned().unwrap_or_default(), have.get(kind).cloned().unwrap_or_default());
        if w != h {
            let missing: Vec<&String> = w.iter().filter(|x| !h.contains(x)).collect();
            let extra: Vec<&String> = h.iter().filter(|x| !w.contains(x)).collect();
            problems.push(format!("  {kind}: missing {missing:?}, extra {extra:?} (want {} item(s), have {})", w.len(), h.len()));
        }
    }
    assert!(problems.is_empty(), "{label}: the resources differ from the expected set:\n{}", problems.join("\n"));
}

/// The stack's live resources of `kind`, by the name AWS lists them under.
fn stack_owned(have: &Inventory, kind: &str) -> Vec<String> {
    have.get("stack_resources")
        .into_iter()
        .flatten()
        .filter_map(|r| r.strip_prefix(&format!("{kind} ")))
        .map(|p| p.rsplit(['/', '|']).next().unwrap_or(p).to_string())
        .collect()
}

/// What a converged `up` leaves in the emulator: the baseline plus exactly karpctl's resources.
pub fn expected_aws_after_up(base: &Inventory, have: &Inventory, template_types: &BTreeMap<String, usize>, instances: usize, discovery: &[String]) -> Inventory {
    let mut want = base.clone();
    let stack = have["stacks"].iter().find(|s| s.starts_with(&format!("{STACK} "))).cloned().unwrap_or_else(|| format!("{STACK} (missing)"));
    assert!(stack.ends_with(" CREATE_COMPLETE") || stack.ends_with(" UPDATE_COMPLETE"), "the stack settled: {stack}");
    want.insert("stacks".into(), with(base, "stacks", &[stack]));
    // One live resource per template resource, of the template's types (a second stack or a
    // half-replaced one shows up here and in the per-kind lists below).
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for r in &have["stack_resources"] {
        *types.entry(r.split(' ').next().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(&types, template_types, "the stack's resources are the template's");
    want.insert("stack_resources".into(), have["stack_resources"].clone());
    let mut roles = strings(&[CONTROLLER_ROLE]);
    roles.extend(stack_owned(have, "AWS::IAM::Role"));
    if !base["roles"].iter().any(|r| r == SPOT_ROLE) {
        roles.push(SPOT_ROLE.into());
    }
    want.insert("roles".into(), with(base, "roles", &roles));
    want.insert("policies".into(), with(base, "policies", &stack_owned(have, "AWS::IAM::ManagedPolicy")));
    want.insert("event_rules".into(), with(base, "event_rules", &stack_owned(have, "AWS::Events::Rule")));
    want.insert("sqs_queues".into(), with(base, "sqs_queues", &strings(&[CLUSTER])));
    want.insert("access_entries".into(), with(base, "access_entries", &[format!("arn:aws:iam::123456789012:role/{NODE_ROLE}")]));
    want.insert("pod_identity_associations".into(), with(base, "pod_identity_associations", &[format!("kube-system/karpenter -> {CONTROLLER_ROLE}")]));
    let mut tags: Vec<String> = discovery.iter().map(|id| format!("{id}={CLUSTER}")).collect();
    tags.sort();
    want.insert("ec2_tags karpenter.sh/discovery".into(), tags.clone());
    want.insert("ec2_tags karpctl.io/discovery-tagged".into(), tags);
    want.insert("running_instances".into(), vec![instances.to_string()]);
    want
}

/// What a finished `rollback --purge --delete-crds` leaves in the emulator: the
/// baseline, plus the Spot service-linked role (kept on purpose) and the nodegroup's
/// extra instance.
pub fn expected_aws_after_rollback(base: &Inventory, instances: usize) -> Inventory {
    let mut want = base.clone();
    if !base["roles"].iter().any(|r| r == SPOT_ROLE) {
        want.insert("roles".into(), with(base, "roles", &strings(&[SPOT_ROLE])));
    }
    want.insert("running_instances".into(), vec![instances.to_string()]);
    want
}

pub fn expected_kube_after_up(base: &Inventory) -> Inventory {
    let mut want = base.clone();
    // The real chart's CRDs of the Karpenter groups (its fifth, capacitybuffers, is in another group).
    want.insert("crds".into(), strings(&["ec2nodeclasses.karpenter.k8s.aws", "nodeclaims.karpenter.sh", "nodeoverlays.karpenter.sh", "nodepools.karpenter.sh"]));
    want.insert("nodepools".into(), strings(&["default", "gpu"]));
    want.insert("ec2nodeclasses".into(), strings(&["default", "gpu"]));
    want.insert("nodeclaims".into(), vec![]);
    want.insert("helm_releases".into(), vec![format!("kube-system/karpenter deployed karpenter-{}", crate::up::PINNED), "kube-system/nvidia-device-plugin deployed nvidia-device-plugin-0.17.4".to_string()]);
    want.insert("helm_release_records".into(), strings(&["kube-system/karpenter", "kube-system/nvidia-device-plugin"]));
    want.insert("deployments".into(), with(base, "deployments", &strings(&["kube-system/karpenter"])));
    // NVIDIA's chart always renders the MPS control daemon (it schedules only on MPS-labelled nodes).
    want.insert("daemonsets".into(), with(base, "daemonsets", &strings(&["kube-system/nvidia-device-plugin", "kube-system/nvidia-device-plugin-mps-control-daemon"])));
    want.insert("configmaps".into(), with(base, "configmaps", &CHART_CONFIGMAPS.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    want.insert("serviceaccounts".into(), with(base, "serviceaccounts", &CHART_SERVICEACCOUNTS.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    want
}

/// What the two real charts create besides their workloads.
const CHART_CONFIGMAPS: &[&str] = &["kube-system/nvidia-device-plugin-configs"];
const CHART_SERVICEACCOUNTS: &[&str] = &["kube-system/karpenter", "kube-system/nvidia-device-plugin-service-account"];

/// After a rollback with `--delete-crds`, the API server is back to its baseline.
pub fn expected_kube_after_rollback(base: &Inventory) -> Inventory {
    base.clone()
}

/// What the sandbox holds before the first `up`, to check both beds against
/// what a finished `up` must add to it.
pub struct Baseline {
    aws: Inventory,
    kube: Inventory,
    template: BTreeMap<String, usize>,
    /// The seeded subnets and the cluster security group, which `up` tags for discovery.
    tagged: Vec<String>,
    /// Running instances before `up` (the nodegroup's).
    instances: usize,
}

impl Baseline {
    pub fn take(sb: &Sandbox) -> Baseline {
        let seed_doc = &sb.aws.handle["seed"];
        let mut tagged: Vec<String> = seed_doc["subnet_ids"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
        tagged.push(seed_doc["cluster_security_group_id"].as_str().unwrap().to_string());
        let aws = aws_inventory(sb);
        let instances = aws["running_instances"][0].parse::<usize>().unwrap();
        Baseline { template: template_types(sb), kube: kube_inventory(sb), aws, tagged, instances }
    }

    /// Both beds hold exactly what a finished `up` leaves, with `instances` running.
    pub fn assert_after_up_with(&self, sb: &Sandbox, label: &str, instances: usize) {
        assert_inventory(label, &expected_kube_after_up(&self.kube), &kube_inventory(sb));
        let have = aws_inventory(sb);
        let mut want = expected_aws_after_up(&self.aws, &have, &self.template, instances, &self.tagged);
        want.insert("instance_profiles".into(), with(&self.aws, "instance_profiles", &controller_profiles(sb)));
        assert_inventory(label, &want, &have);
    }

    /// The same, with the instances that ran before `up`.
    pub fn assert_after_up(&self, sb: &Sandbox, label: &str) {
        self.assert_after_up_with(sb, label, self.instances);
    }
}

/// The instance profiles the real controller made for the node classes (a class is Ready
/// only with one), named as each class's status reports, each holding the stack's node role.
fn controller_profiles(sb: &Sandbox) -> Vec<String> {
    let classes = sb.kubectl_json(&["get", "ec2nodeclasses"]);
    classes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["status"]["instanceProfile"].as_str().unwrap_or_else(|| panic!("no instance profile in the status of {}", c["metadata"]["name"]));
            format!("{name} [{NODE_ROLE}]")
        })
        .collect()
}

/// Resource types and counts in the stack's template, from `karpctl render`.
fn template_types(sb: &Sandbox) -> BTreeMap<String, usize> {
    let o = sb.karpctl(&["render", "--only", "template", "-o", "json"]);
    assert!(o.status.success(), "{}", show(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("render -o json: {e}: {}", show(&o)));
    let t = &doc["documents"][0]["content"];
    let mut types = BTreeMap::new();
    for r in t["Resources"].as_object().unwrap().values() {
        *types.entry(r["Type"].as_str().unwrap().to_string()).or_default() += 1;
    }
    types
}

// ------------------------------------------------------------------------------ the matrix

#[derive(Default)]
struct Tally {
    planned: usize,
    killed: usize,
    /// Kills after which the lock was left and `state unlock` was needed.
    unlocked: usize,
    /// Kills that left a step `in_progress` in the state.
    in_progress: usize,
    /// Ctrl-Cs that stopped a run (exit 130).
    interrupted: usize,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The first stride in `candidates` coprime with `span`, so `1 + (i * stride) % span` visits every boundary.
fn stride(span: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 { a } else { gcd(b, a % b) }
    }
    [11, 13, 7, 5, 3, 1].into_iter().find(|s| gcd(*s, span) == 1).unwrap()
}

/// A chain's points: an exact boundary first, then seeded random instants, then a Ctrl-C.
fn points(rng: &mut Rng, first: usize, n: usize) -> Vec<Point> {
    let mut v = vec![Point { boundary: first, delay_ms: 0, signal: "KILL" }];
    for _ in 1..n {
        v.push(Point { boundary: rng.below(4) as usize, delay_ms: rng.below(800), signal: "KILL" });
    }
    // Then Ctrl-C, early in the next run: a run resumed after the kills has few steps
    // left, and a later signal often found it finished (1 rollback Ctrl-C in 9 chains).
    v.push(Point { boundary: 1 + rng.below(2) as usize, delay_ms: rng.below(400), signal: "INT" });
    v
}

struct Matrix {
    lineage: Option<String>,
    log: Option<std::fs::File>,
    seed: u64,
}

impl Matrix {
    /// Cuts `args` at each point in turn (each run resuming the last), then lets it finish.
    /// Returns how many boundaries the first run went through when it ended before its point.
    fn chain(&mut self, sb: &Sandbox, name: &str, args: &[&str], points: &[Point], tally: &mut Tally, cycle: usize) -> Option<usize> {
        let mut first_span = None;
        let mut interrupted_done: Option<Vec<String>> = None;
        for (i, p) in points.iter().enumerate() {
            let label = format!("seed {} cycle {cycle} {name} kill {i} at {p:?}", self.seed);
            if unlock_stale(sb, args, "state.json.lock", &label) {
                tally.unlocked += 1;
            }
            let started = Instant::now();
            let cut = run_cut(sb, args, *p);
            let left = check_state_after_kill(sb, "state.json", &mut self.lineage, &label);
            if p.signal == "INT" {
                if cut.killed {
                    tally.interrupted += 1;
                    // Ctrl-C: the run saved the state, released its lock, and said so.
                    assert!(!sb.dir.join("state.json.lock").exists(), "{label}: Ctrl-C leaves the lock behind: {}", show(&cut.output));
                    let out = String::from_utf8_lossy(&cut.output.stdout);
                    assert!(out.contains("interrupted; the state file records where it stopped"), "{label}: {}", show(&cut.output));
                    interrupted_done = Some(done_steps(sb));
                } else {
                    assert!(cut.output.status.success(), "{label}: {}", show(&cut.output));
                }
            } else if cut.killed {
                tally.planned += 1;
                tally.killed += 1;
                if !left.is_empty() {
                    tally.in_progress += 1;
                }
            } else {
                tally.planned += 1;
                if i == 0 {
                    first_span = Some(cut.boundaries);
                }
                // It ended before the point: it must have ended well.
                assert!(cut.output.status.success(), "{label}: {}", show(&cut.output));
            }
            let rec = json!({"seed": self.seed, "cycle": cycle, "command": name, "signal": p.signal, "boundary": p.boundary, "delayMs": p.delay_ms,
                             "killed": cut.killed, "after": cut.at, "boundariesSeen": cut.boundaries, "inProgress": left,
                             "lock": sb.dir.join("state.json.lock").exists(), "ms": started.elapsed().as_millis() as u64});
            if let Some(f) = &mut self.log {
                writeln!(f, "{rec}").unwrap();
            }
            eprintln!("crash: {rec}");
        }
        let label = format!("seed {} cycle {cycle} {name} resume", self.seed);
        if unlock_stale(sb, args, "state.json.lock", &label) {
            tally.unlocked += 1;
        }
        let done = run_cut(sb, args, Point { boundary: usize::MAX, delay_ms: 0, signal: "KILL" });
        assert!(done.output.status.success(), "{label}: the resumed run does not converge: {}", show(&done.output));
        if let Some(finished) = interrupted_done {
            // What a Ctrl-C'd run finished is not done again.
            for line in String::from_utf8_lossy(&done.output.stderr).lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
                if v["event"] == "finished" && v["outcome"]["outcome"] == "applied" {
                    let step = v["step"].as_str().unwrap().to_string();
                    assert!(!finished.contains(&step), "{label}: {step} was done before the Ctrl-C and is applied again");
                }
            }
        }
        check_state_after_kill(sb, "state.json", &mut self.lineage, &label);
        let st = sb.state("state.json");
        for (id, r) in st["steps"].as_object().unwrap() {
            assert_eq!(r["status"], "done", "{label}: {id}: {r}");
        }
        assert!(!sb.dir.join("state.json.lock").exists(), "{label}: the lock is released");
        let leftovers: Vec<String> = std::fs::read_dir(&sb.dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(".state.json") || n.ends_with(".errored") || n.ends_with(".corrupt"))
            .collect();
        assert_eq!(leftovers, Vec::<String>::new(), "{label}: no temporary or errored state files are left behind");
        first_span
    }
}

/// Steps the state records as done.
fn done_steps(sb: &Sandbox) -> Vec<String> {
    let st = sb.state("state.json");
    st["steps"].as_object().unwrap().iter().filter(|(_, r)| r["status"] == "done").map(|(id, _)| id.clone()).collect()
}

/// A second run of `args` on a converged sandbox writes nothing to either bed nor to the state.
fn assert_rerun_writes_nothing(sb: &mut Sandbox, args: &[&str], label: &str) {
    sb.stop_sim();
    sb.aws_mutations();
    let serial = sb.state("state.json")["serial"].clone();
    let before = sb.kube_writes();
    let again = sb.karpctl(args);
    assert!(again.status.success(), "{label}: {}", show(&again));
    assert_eq!(diff(&before, &sb.kube_writes()), Default::default(), "{label}: a second run wrote to Kubernetes");
    let m = sb.aws_mutations();
    assert_eq!(m["mutating"], 0, "{label}: a second run made mutating AWS calls: {m}");
    assert_eq!(sb.state("state.json")["serial"], serial, "{label}: a second run rewrote the state");
    sb.start_sim();
}

#[test]
fn up_and_rollback_killed_anywhere_resume_to_exactly_the_expected_resources() {
    let seed = env_u64("KARPCTL_CRASH_SEED", 20_261_122);
    let want_kills = env_u64("KARPCTL_CRASH_POINTS", 20) as usize;
    let chain = env_u64("KARPCTL_CRASH_CHAIN", 3) as usize;
    let Some(mut sb) = Sandbox::start("crash", &[]) else { return };
    sb.write_config(&sandbox_config());
    let bed = Bed::new(&sb);
    let kubelet = NodegroupKubelet::start(&sb, &bed);
    let base = Baseline::take(&sb);
    let log = std::env::var_os("KARPCTL_CRASH_LOG").map(|p| std::fs::OpenOptions::new().create(true).append(true).open(p).unwrap());
    let mut rng = Rng(seed);
    let mut m = Matrix { lineage: None, log, seed };
    let (mut up, mut rb) = (Tally::default(), Tally::default());
    // Boundaries of a full run: a guess, lowered when a first point lies beyond a run's end.
    let (mut up_span, mut rb_span) = (28usize, 20usize);
    let mut instances = base.instances;
    let started = Instant::now();
    let mut cycle = 0;
    while up.killed < want_kills || rb.killed < want_kills {
        assert!(cycle < 4 * want_kills, "{cycle} cycles and still only {} up / {} rollback kills", up.killed, rb.killed);
        // An exact boundary of the full run (visiting every one over the cycles), then
        // random instants in the resumed runs: after a boundary (or none), plus up to 1.5 s.
        let up_points = points(&mut rng, 1 + (cycle * stride(up_span)) % up_span, chain);
        if let Some(n) = m.chain(&sb, "up", UP, &up_points, &mut up, cycle) {
            up_span = n.max(2); // a full run has fewer boundaries than guessed
        }
        base.assert_after_up_with(&sb, &format!("seed {seed} cycle {cycle} after up"), instances);
        assert_rerun_writes_nothing(&mut sb, UP, &format!("seed {seed} cycle {cycle}: up after up"));

        let rb_points = points(&mut rng, 1 + (cycle * stride(rb_span)) % rb_span, chain);
        if let Some(n) = m.chain(&sb, "rollback", ROLLBACK, &rb_points, &mut rb, cycle) {
            rb_span = n.max(2);
        }
        instances = instances.max(3); // rollback.nodegroups: desired 3
        assert_inventory(&format!("seed {seed} cycle {cycle} after rollback"), &expected_kube_after_rollback(&base.kube), &kube_inventory(&sb));
        assert_inventory(&format!("seed {seed} cycle {cycle} after rollback"), &expected_aws_after_rollback(&base.aws, instances), &aws_inventory(&sb));
        assert_rerun_writes_nothing(&mut sb, ROLLBACK, &format!("seed {seed} cycle {cycle}: rollback after rollback"));
        cycle += 1;
    }
    drop(kubelet);
    eprintln!(
        "crash matrix: seed {seed}, {cycle} cycles in {:.0?}: up {} points, {} killed ({} left the lock, {} a step in progress), {} Ctrl-C; \
         rollback {} points, {} killed ({} left the lock, {} a step in progress), {} Ctrl-C; all converged to the expected resources",
        started.elapsed(), up.planned, up.killed, up.unlocked, up.in_progress, up.interrupted,
        rb.planned, rb.killed, rb.unlocked, rb.in_progress, rb.interrupted
    );
    assert!(up.unlocked > 0 && rb.unlocked > 0, "some kills must have hit a held lock, or the points are all outside the runs");
    assert!(up.in_progress > 0 && rb.in_progress > 0, "some kills must have hit a step mid-apply");
    assert!(up.interrupted > 0 && rb.interrupted > 0, "some Ctrl-Cs must have stopped a run");
}

// ------------------------------------------------------------------------------ concurrent runs

/// Where a race's state lives, read behind karpctl's back.
enum Store {
    Local,
    S3 { rt: tokio::runtime::Runtime, client: aws_sdk_s3::Client },
}

const BUCKET: &str = "karpctl-state";
const KEY: &str = "karpctl/karpctl-sandbox.state.json";

impl Store {
    fn s3(sb: &Sandbox) -> Store {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let cfg = rt.block_on(sb.aws.sdk_config("us-west-2"));
        let client = aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&cfg).force_path_style(true).build());
        let loc = aws_sdk_s3::types::CreateBucketConfiguration::builder()
            .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::UsWest2)
            .build();
        rt.block_on(client.create_bucket().bucket(BUCKET).create_bucket_configuration(loc).send()).expect("CreateBucket");
        Store::S3 { rt, client }
    }

    fn get(&self, sb: &Sandbox, suffix: &str) -> Option<Vec<u8>> {
        match self {
            Store::Local => std::fs::read(sb.dir.join(format!("state.json{suffix}"))).ok(),
            Store::S3 { rt, client } => rt.block_on(async {
                match client.get_object().bucket(BUCKET).key(format!("{KEY}{suffix}")).send().await {
                    Ok(o) => Some(o.body.collect().await.unwrap().into_bytes().to_vec()),
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
                    Err(e) => panic!("GetObject: {}", aws_sdk_s3::error::DisplayErrorContext(&e)),
                }
            }),
        }
    }

    fn put(&self, sb: &Sandbox, suffix: &str, bytes: &[u8]) {
        match self {
            Store::Local => std::fs::write(sb.dir.join(format!("state.json{suffix}")), bytes).unwrap(),
            Store::S3 { rt, client } => {
                rt.block_on(client.put_object().bucket(BUCKET).key(format!("{KEY}{suffix}")).body(bytes.to_vec().into()).send()).expect("PutObject");
            }
        }
    }

    fn config(&self) -> String {
        match self {
            Store::Local => sandbox_config(),
            Store::S3 { .. } => sandbox_config().replace("  path: state.json", &format!("  s3: {{bucket: {BUCKET}, key: {KEY}, region: us-west-2}}")),
        }
    }
}

/// Two `up`s started together on one state: exactly one applies; the other waits
/// `--lock-timeout`, then fails (exit 1) naming the holder, with a `help:` line. The
/// state is whole and in serial order afterwards, and nothing exists twice.
fn two_ups_race(name: &str, s3: bool) {
    let Some(mut sb) = Sandbox::start(name, &[]) else { return };
    let store = if s3 { Store::s3(&sb) } else { Store::Local };
    let config = store.config();
    assert_ne!(s3, config == sandbox_config(), "the S3 config differs from the local one");
    sb.write_config(&config);
    let base = Baseline::take(&sb);

    // With the simulator stopped, whichever run takes the lock cannot finish (the controller
    // Deployment never becomes available), so it still holds the lock when the other one's
    // two seconds are up, however late the machine lets that one start. The simulator comes
    // back once the first run has ended. (Left running, a winner that finished within the
    // loser's timeout let both succeed on a loaded CI machine.)
    sb.stop_sim();
    let args = ["up", "--lock-timeout", "2"];
    let (a, b) = (command(&sb, &args).spawn().unwrap(), command(&sb, &args).spawn().unwrap());
    let (pa, pb) = (a.id(), b.id());
    let (tx, rx) = std::sync::mpsc::channel();
    for (label, child) in [('A', a), ('B', b)] {
        let tx = tx.clone();
        std::thread::spawn(move || tx.send((label, child.wait_with_output().unwrap())).unwrap());
    }
    let first = rx.recv_timeout(Duration::from_secs(300)).expect("one of the racing ups ends while the other waits for the controller");
    assert!(!first.1.status.success(), "the run that ended first is the one refused the lock: {}", show(&first.1));
    sb.start_sim();
    let second = rx.recv_timeout(Duration::from_secs(600)).expect("the other up ends once the simulator is back");
    let (oa, ob) = if first.0 == 'A' { (first.1, second.1) } else { (second.1, first.1) };
    let (winner, loser, winner_pid) = match (oa.status.success(), ob.status.success()) {
        (true, false) => (&oa, &ob, pa),
        (false, true) => (&ob, &oa, pb),
        _ => panic!("exactly one of two racing ups proceeds:\nA: {}\nB: {}", show(&oa), show(&ob)),
    };
    assert_eq!(loser.status.code(), Some(1), "{}", show(loser));
    let err = String::from_utf8_lossy(&loser.stderr).to_string();
    let location = if s3 { format!("s3://{BUCKET}/{KEY}") } else { "local file state.json".to_string() };
    assert!(err.contains(&format!("waiting for the state lock held by process {winner_pid} on host")), "it says whom it waits for: {err}");
    assert!(err.contains(&format!("the state in {location} is locked by process {winner_pid} on host")) && err.contains("running `up`"), "{err}");
    assert!(!err.contains("stale lock"), "a live holder is not stale: {err}");
    let id = err.lines().find_map(|l| l.trim().strip_prefix("help: karpctl state unlock ")).unwrap_or_else(|| panic!("no help line: {err}"));
    assert_eq!(id.trim().len(), 36, "the lock id: {id}");
    assert!(String::from_utf8_lossy(&winner.stdout).contains("Applied:"), "{}", show(winner));

    // The state: whole, every step done, the backup one save behind, no lock left.
    let state = karpctl::state::decode(&store.get(&sb, "").expect("state written")).expect("the state parses");
    let backup = karpctl::state::decode(&store.get(&sb, ".backup").expect("backup written")).expect("the backup parses");
    assert_eq!((backup.lineage.as_str(), backup.serial + 1), (state.lineage.as_str(), state.serial));
    assert!(state.steps.values().all(|r| r.status == karpctl::state::StepStatus::Done), "{:?}", state.steps);
    assert!(store.get(&sb, ".lock").is_none(), "the winner released the lock");
    let shown = sb.karpctl(&["state", "pull"]);
    assert!(shown.status.success(), "{}", show(&shown));
    assert_eq!(karpctl::state::decode(&shown.stdout).unwrap(), state, "karpctl reads the same state");

    base.assert_after_up(&sb, &format!("{name}: after the race"));
    if s3 {
        // With the state in S3 a run writes the lock object and deletes it again: those two
        // calls are the only writes a second `up` may make (the emulator's route table files
        // the conditional PutObject and the DeleteObject under other S3 operation names).
        sb.stop_sim();
        sb.aws_mutations();
        let before = sb.kube_writes();
        let again = sb.karpctl(&["up"]);
        assert!(again.status.success(), "{}", show(&again));
        assert_eq!(diff(&before, &sb.kube_writes()), Default::default(), "a second up wrote to Kubernetes");
        let m = sb.aws_mutations();
        let mutating: u64 = m["counts"].as_object().unwrap().iter()
            .filter(|(op, _)| !["Describe", "Get", "List", "Head"].iter().any(|p| op.split(':').nth(1).unwrap().starts_with(p)))
            .map(|(op, n)| { assert!(op.starts_with("s3:"), "a second up made a mutating call {op}: {m}"); n.as_u64().unwrap() })
            .sum();
        assert_eq!(mutating, 2, "the lock taken and released, nothing else: {m}");
        assert_eq!(karpctl::state::decode(&store.get(&sb, "").unwrap()).unwrap().serial, state.serial, "the state is not rewritten");
        sb.start_sim();
    } else {
        sb.assert_second_up_writes_nothing(name);
        sb.start_sim();
    }
    lock_timeout_waits_then_proceeds(&sb, &store, &location);
}

/// `--lock-timeout 0` refuses at once while a live process holds the lock; a longer
/// one says whom it waits for and proceeds as soon as the holder lets go.
fn lock_timeout_waits_then_proceeds(sb: &Sandbox, store: &Store, location: &str) {
    let mut holder = Command::new("sleep").arg("300").spawn().unwrap();
    let mut info = karpctl::state::LockInfo::for_this_process("up");
    info.pid = holder.id();
    store.put(sb, ".lock", &serde_json::to_vec_pretty(&info).unwrap());

    let now = sb.karpctl(&["up", "--lock-timeout", "0"]);
    assert_eq!(now.status.code(), Some(1), "{}", show(&now));
    let err = String::from_utf8_lossy(&now.stderr).to_string();
    assert!(err.contains(&format!("the state in {location} is locked by process {} on host", info.pid)), "{err}");
    assert!(err.contains(&format!("help: karpctl state unlock {}", info.id)) && !err.contains("stale"), "{err}");
    assert!(!err.contains("waiting for the state lock"), "timeout 0 does not wait: {err}");
    // A pipeline reading `-o json` gets the same way out.
    let as_json = sb.karpctl(&["up", "--lock-timeout", "0", "-o", "json"]);
    assert_eq!(as_json.status.code(), Some(1), "{}", show(&as_json));
    let doc: Value = serde_json::from_slice(&as_json.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(&as_json)));
    assert_eq!(doc["error"]["help"], json!([format!("karpctl state unlock {}", info.id)]), "{doc}");

    let mut waiter = command(sb, &["up", "--lock-timeout", "300"]).spawn().unwrap();
    let mut lines = BufReader::new(waiter.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while lines.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.contains(&format!("waiting for the state lock held by process {}", info.pid)) {
            break;
        }
        line.clear();
    }
    assert!(seen.contains("waiting for the state lock held by"), "{seen}");
    let unlocked = sb.karpctl(&["state", "unlock", &info.id]);
    assert!(unlocked.status.success(), "{}", show(&unlocked));
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    let status = waiter.wait().unwrap();
    assert!(status.success(), "the waiter proceeds once the lock is released: {seen}{rest}");
    assert!(store.get(sb, ".lock").is_none(), "and releases it");
    let _ = holder.kill();
    let _ = holder.wait();
}

#[test]
fn two_ups_on_a_local_state_one_applies_the_other_is_refused_naming_it() {
    two_ups_race("race-local", false);
}

#[test]
fn two_ups_on_an_s3_state_one_applies_the_other_is_refused_naming_it() {
    two_ups_race("race-s3", true);
}

// ------------------------------------------------------------------------------ failed writes

/// The state cannot be written mid-run (its directory turns into a file): the run
/// stops with the write error, keeps the unsaved state in the temp directory and
/// names it in `help: karpctl state push <file>`; once the directory is back,
/// that push and a re-run converge to exactly the expected resources.
#[test]
fn a_state_write_that_fails_mid_up_is_recovered_with_state_push() {
    let Some(mut sb) = Sandbox::start("crash-write", &[]) else { return };
    let name = format!("write-{}.state.json", std::process::id());
    sb.write_config(&sandbox_config().replace("  path: state.json", &format!("  path: st/{name}")));
    let base = Baseline::take(&sb);
    let dir = sb.dir.join("st");
    let fallback = std::env::temp_dir().join(format!("karpctl-{name}.errored"));
    let _ = std::fs::remove_file(&fallback);

    let mut child = command(&sb, &["up"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    // After the first steps are recorded, the state's directory is replaced by a file.
    let recorded = || std::fs::read(dir.join(&name)).ok().and_then(|b| karpctl::state::decode(&b).ok()).map_or(0, |s| s.steps.len());
    while recorded() < 3 {
        assert!(child.try_wait().unwrap().is_none(), "up ended before the state could be taken away");
        assert!(Instant::now() < deadline, "no state written");
        std::thread::sleep(Duration::from_millis(20));
    }
    let moved = sb.dir.join("st-away");
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains("could not save the state to local file st/") && err.contains(&format!("was saved to {}", fallback.display())), "{err}");
    assert!(err.contains(&format!("help: karpctl state push {}", fallback.display())), "{err}");
    let unsaved = karpctl::state::decode(&std::fs::read(&fallback).unwrap()).expect("the unsaved state parses");

    // The run could not remove its lock either (its directory was gone) and says so,
    // after the error that matters.
    assert!(err.contains("could not release the state lock either"), "{err}");
    // The directory comes back (with the last state written and that lock, now stale);
    // the lock is cleared as the help line says, the unsaved state pushed, the run repeated.
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    let lock = format!("st/{name}.lock");
    assert!(unlock_stale(&sb, &["up"], &lock, "after the failed write"), "the lock of the failed run is left");
    let pushed = sb.karpctl(&["state", "push", fallback.to_str().unwrap()]);
    assert!(pushed.status.success(), "{}", show(&pushed));
    let now = karpctl::state::decode(&std::fs::read(dir.join(&name)).unwrap()).unwrap();
    assert_eq!(now.steps, unsaved.steps, "what was pushed is the state");
    let _ = std::fs::remove_file(&fallback);
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    base.assert_after_up(&sb, "after the failed write");
    sb.assert_second_up_writes_nothing("after the failed write");
}

/// The same with the state in S3: S3 starts refusing writes mid-run. The run stops
/// with S3's error, keeps the unsaved state in the working directory (named after
/// the key, private) and says `help: karpctl state push <file>`; once S3 is back,
/// that push and a re-run converge to exactly the expected resources.
#[test]
fn a_state_write_that_s3_refuses_mid_up_is_kept_locally_and_recovered_with_state_push() {
    let Some(sb) = Sandbox::start("crash-s3-write", &[]) else { return };
    let store = Store::s3(&sb);
    sb.write_config(&store.config());
    let base = Baseline::take(&sb);
    let name = KEY.rsplit('/').next().unwrap();
    let kept = sb.dir.join(format!("{name}.errored"));

    let mut child = command(&sb, &["up"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let recorded = || store.get(&sb, "").and_then(|b| karpctl::state::decode(&b).ok()).map_or(0, |s| s.steps.len());
    while recorded() < 3 {
        assert!(child.try_wait().unwrap().is_none(), "up ended before S3 could refuse a write");
        assert!(Instant::now() < deadline, "no state written");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Every S3 write but DeleteObject (the emulator may file a conditional PUT under
    // another operation name than PutObject); reads and the unlock still work.
    sb.aws.add_faults(&serde_json::json!({"operation": "s3:[!GDHL]*", "kind": "5xx"}));
    let out = child.wait_with_output().unwrap();
    sb.aws.control("DELETE", "faults", None);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(err.contains(&format!("could not save the state to s3://{BUCKET}/{KEY}")) && err.contains("InternalError"), "{err}");
    assert!(err.contains(&format!("was saved to {name}.errored")), "{err}");
    assert!(err.contains(&format!("help: karpctl state push {name}.errored")), "{err}");
    let unsaved = karpctl::state::decode(&std::fs::read(&kept).unwrap()).expect("the unsaved state parses");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777, 0o600, "the kept copy is private");
    let stored = karpctl::state::decode(&store.get(&sb, "").unwrap()).unwrap();
    assert!(unsaved.steps.len() > stored.steps.len() || unsaved.steps != stored.steps, "the kept copy holds what S3 refused");

    // The faults reach the unlock too (the emulator may file DeleteObject under
    // another name); then the run says so and the lock is stale once S3 is back.
    if store.get(&sb, ".lock").is_some() {
        assert!(err.contains("could not release the state lock either"), "{err}");
        let refused = sb.karpctl(&["up", "--lock-timeout", "0"]);
        let text = String::from_utf8_lossy(&refused.stderr).to_string();
        assert!(text.contains("stale lock: process "), "{text}");
        let id = text.lines().find_map(|l| l.trim().strip_prefix("help: karpctl state unlock ")).unwrap_or_else(|| panic!("no unlock help: {text}"));
        let unlocked = sb.karpctl(&["state", "unlock", id.trim()]);
        assert!(unlocked.status.success(), "{}", show(&unlocked));
    }
    // S3 is back: push what was kept (as the help line says), then run again.
    let pushed = sb.karpctl(&["state", "push", &format!("{name}.errored")]);
    assert!(pushed.status.success(), "{}", show(&pushed));
    let now = karpctl::state::decode(&store.get(&sb, "").unwrap()).unwrap();
    assert_eq!(now.steps, unsaved.steps, "what was pushed is the state");
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    base.assert_after_up(&sb, "after the refused S3 write");
}

// ------------------------------------------------------------------------------ Ctrl-C, early

/// Ctrl-C the moment the lock is taken — before any step has started — still ends
/// with exit 130 and the lock released, not a stale lock to clear by hand. No beds:
/// the run is stopped before it would call anything.
#[test]
fn ctrl_c_right_after_the_lock_is_taken_releases_it() {
    let dir = crate::support::scratch("crash-early-int");
    std::fs::write(dir.join("karpctl.yaml"), sandbox_config()).unwrap();
    for attempt in 0..5 {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_karpctl"));
        cmd.arg("rollback").current_dir(&dir).env("NO_COLOR", "1").env("CI", "1");
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().to_string();
            if k.starts_with("AWS_") || k.starts_with("KARPCTL_") || k == "KUBECONFIG" {
                cmd.env_remove(k);
            }
        }
        // Nothing listens there: were a step to run, it would fail, not hang.
        cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9").env("AWS_ACCESS_KEY_ID", "testing").env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-west-2").env("AWS_EC2_METADATA_DISABLED", "true")
            .stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        let lock = dir.join("state.json.lock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !lock.exists() {
            assert!(Instant::now() < deadline, "attempt {attempt}: no lock taken");
            std::thread::sleep(Duration::from_micros(200));
        }
        let _ = Command::new("kill").args(["-INT", "--", &format!("-{pid}")]).status();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "attempt {attempt}: {}", show(&out));
        assert!(!lock.exists(), "attempt {attempt}: the lock is released: {}", show(&out));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------------------ discovery tags

/// What a kill right after `CreateTags` leaves: the tags on the subnets and security
/// group, the step `in_progress` with nothing recorded. The resumed `up` must still
/// know the tags are karpctl's, so `rollback --purge` removes them (found by the long
/// crash matrix, seed 7: they were left for good).
#[test]
fn discovery_tags_written_before_a_crash_are_still_purged() {
    let Some(sb) = Sandbox::start("crash-tags", &[]) else { return };
    sb.write_config(&sandbox_config());
    let bed = Bed::new(&sb);
    let _kubelet = NodegroupKubelet::start(&sb, &bed);
    let base_aws = aws_inventory(&sb);
    let up = sb.karpctl(&["up"]);
    assert!(up.status.success(), "{}", show(&up));
    let mut st = sb.state("state.json");
    let rec = &mut st["steps"]["discovery-tags/karpctl-sandbox"];
    assert_eq!(rec["outputs"]["taggedByKarpctl"].as_array().map(Vec::len), Some(4), "{rec}");
    *rec = json!({"kind": rec["kind"], "fingerprint": "", "status": "in_progress", "inputs": null, "outputs": null,
                  "error": null, "started_at": rec["started_at"], "finished_at": null});
    std::fs::write(sb.dir.join("state.json"), serde_json::to_vec_pretty(&st).unwrap()).unwrap();

    let resumed = sb.karpctl(&["up"]);
    assert!(resumed.status.success(), "{}", show(&resumed));
    let rec = &sb.state("state.json")["steps"]["discovery-tags/karpctl-sandbox"];
    assert_eq!(rec["outputs"]["taggedByKarpctl"].as_array().map(Vec::len), Some(4), "observed as karpctl's again: {rec}");
    let rb = sb.karpctl(&["rollback", "--purge", "--delete-crds"]);
    assert!(rb.status.success(), "{}", show(&rb));
    assert_inventory("after the purge", &expected_aws_after_rollback(&base_aws, 3), &aws_inventory(&sb));
}

// ------------------------------------------------------------------------------ Ctrl-C, in a step

/// Ctrl-C reaches helm too (it runs in karpctl's process group): the step fails with
/// "signal: 2", its dependents are blocked, and the walk could end before its cancel
/// branch was polled — exit 1 and a failure instead of 130 and "interrupted" (the long
/// matrix, seed 7, cycle 10). A fake step failing while the cancel is already due must
/// end as interrupted, whichever branch `select!` happens to pick first (so: 20 runs).
#[tokio::test]
async fn a_run_whose_ctrl_c_reached_a_step_first_ends_as_interrupted() {
    use karpctl::engine::fake::FakeStep;
    use karpctl::engine::{Mode, Runner, RunnerError, Step};
    use karpctl::state::{Backend, LocalStore, State};
    for attempt in 0..20 {
        let d = crate::support::scratch("crash-int-step");
        let w = d.join("world");
        std::fs::create_dir_all(&w).unwrap();
        std::fs::write(w.join("fail-a"), "").unwrap();
        let steps = [FakeStep::new(&w, "a", &[], "v1"), FakeStep::new(&w, "b", &["a"], "v1")];
        let backend = Backend::Local(LocalStore::new(d.join("state.json")));
        let mut state = State::new("engine-test", None);
        let events = |_e: karpctl::engine::Event| {};
        let runner = Runner { steps: steps.iter().map(|s| s as &dyn Step).collect(), mode: Mode::Apply, refresh: false, concurrency: 1, approve: true, events: &events, classify: karpctl::help::classify };
        let mut ctrl_c = std::pin::pin!(std::future::ready(()));
        let r = runner.run(&mut state, &backend, ctrl_c.as_mut()).await;
        assert!(matches!(r, Err(RunnerError::Cancelled { .. })), "attempt {attempt}: {r:?}");
        assert!(backend.load().await.unwrap().is_some(), "attempt {attempt}: the state is saved");
        let _ = std::fs::remove_dir_all(&d);
    }
}
