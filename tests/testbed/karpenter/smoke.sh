#!/usr/bin/env bash
# End-to-end smoke test of the real Karpenter controller on the karpctl test beds. Run it through
# `scripts/testbed-karpenter.sh smoke [VERSION]`, which builds the controller and finds the CRDs;
# directly: smoke.sh VERSION CONTROLLER_BINARY CRD_DIR.
#
# In a fresh temporary directory it starts an AWS emulator and a Kubernetes bed, prepares AWS as
# karpctl would (discovery tags, node role, interruption queue), starts the controller (AWS calls
# to the emulator, Kubernetes to the bed) and the controller simulator without its fake Karpenter,
# then: EC2NodeClass + NodePool Ready; a pending pod gets a NodeClaim, a Ready Node and runs;
# deleting the NodePool drains and removes the node; deleting the class deletes its instance
# profile. Prints one line per check, the timings, and "N passed, N failed"; exits 1 on a failure
# (with the tail of the controller's log). Everything it started is stopped on exit
# (KARPCTL_KEEP_TESTBED=1 keeps the directory and its logs).
set -uo pipefail

VERSION="${1:?usage: smoke.sh VERSION CONTROLLER CRD_DIR}"
CONTROLLER="${2:?usage: smoke.sh VERSION CONTROLLER CRD_DIR}"
CRDS="${3:?usage: smoke.sh VERSION CONTROLLER CRD_DIR}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
CACHE_ROOT="${KARPCTL_CACHE:-$HOME/.cache/karpctl}"
CLUSTER="${KARPCTL_SMOKE_CLUSTER:-karpctl-kwok}"
POOL=smoke
CLASS=smoke
NS=karpenter
WAIT="${KARPCTL_SMOKE_WAIT:-150}" # seconds for each wait; a launch alone takes ~30 s in the kwok build
TMP="$(mktemp -d "${TMPDIR:-/tmp}/karpctl-karpenter-smoke.XXXXXX")"
T0=$(date +%s.%N)

PASSED=0 FAILED=0 N=0 OUT=""
TIMINGS=()
ok() { PASSED=$((PASSED + 1)); printf 'ok   %2d %s\n' "$N" "$1"; }
bad() {
  FAILED=$((FAILED + 1)); printf 'FAIL %2d %s\n' "$N" "$1"
  [[ -n "${2:-}" ]] && printf '%s\n' "$2" | sed 's/^/     | /' | head -n 40
  return 0
}
check() { local name="$1"; shift; N=$((N + 1)); if OUT="$("$@" 2>&1)"; then ok "$name"; else bad "$name" "$OUT"; fi; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
timing() { TIMINGS+=("$(printf '%-70s %6s s' "$1" "$2")"); }
# until_ok NAME SECONDS CMD...: retries CMD every second until it succeeds; records the time.
until_ok() {
  local name="$1" limit="$2" t; shift 2; N=$((N + 1)); t=$(date +%s.%N)
  while :; do
    if OUT="$("$@" 2>&1)"; then ok "$name ($(elapsed "$t") s)"; timing "$name" "$(elapsed "$t")"; return 0; fi
    if awk -v a="$t" -v b="$(date +%s.%N)" -v l="$limit" 'BEGIN{exit !(b-a > l)}'; then
      bad "$name (not within ${limit} s)" "$OUT"; controller_tail; return 1
    fi
    sleep 1
  done
}
controller_tail() {
  [[ -f "$TMP/controller.log" ]] || return 0
  echo "     --- last 40 lines of the controller's log ($TMP/controller.log) ---"
  tail -n 40 "$TMP/controller.log" | cut -c1-400 | sed 's/^/     | /'
  echo "     --- last 10 lines of the simulator's log ---"
  tail -n 10 "$TMP/sim.log" 2>/dev/null | sed 's/^/     | /'
}

CONTROLLER_PID="" SIM_PID=""
cleanup() {
  local p
  for p in "$CONTROLLER_PID" "$SIM_PID"; do
    [[ -n "$p" ]] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
  done
  QUIET=1 "$REPO/scripts/testbed-aws.sh" stop --handle "$TMP/aws/handle.json" >/dev/null 2>&1
  QUIET=1 "$REPO/scripts/testbed-kube.sh" stop --dir "$TMP/kube" >/dev/null 2>&1
  if [[ "${KARPCTL_KEEP_TESTBED:-0}" == 1 ]]; then echo "# kept $TMP (logs: controller.log, sim.log, aws/handle.log)"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail_early() { bad "$1" "${2:-}"; echo "$PASSED passed, $FAILED failed"; exit 1; }

echo "# real Karpenter $VERSION (kwok build) on the karpctl test beds; work dir $TMP"

# --- the beds ------------------------------------------------------------------------------
t=$(date +%s.%N)
N=$((N + 1))
OUT="$("$REPO/scripts/testbed-kube.sh" start --dir "$TMP/kube" --no-crds 2>&1)" || fail_early "kube bed starts" "$OUT"
ok "kube bed starts ($(elapsed "$t") s)"; timing "kube bed start" "$(elapsed "$t")"
# shellcheck disable=SC1091
source "$TMP/kube/env"
SERVER="$KARPCTL_TESTBED_KUBE_SERVER"
args=(); for f in "$CRDS"/*.yaml; do args+=(-f "$f"); done
check "Karpenter $VERSION CRDs (the module's pkg/apis/crds) apply" kubectl apply --server-side --field-manager karpctl-testbed "${args[@]}"
check "CRDs established" kubectl wait --for condition=Established --timeout 60s \
  crd/nodepools.karpenter.sh crd/nodeclaims.karpenter.sh crd/ec2nodeclasses.karpenter.k8s.aws

t=$(date +%s.%N)
N=$((N + 1))
mkdir -p "$TMP/aws"
OUT="$("$REPO/scripts/testbed-aws.sh" start --handle "$TMP/aws/handle.json" --cluster "$CLUSTER" --k8s-version 1.36 \
  --cluster-endpoint "$SERVER" --cluster-ca-file "$TMP/kube/pki/ca.crt" 2>&1)" || fail_early "AWS emulator starts" "$OUT"
ok "AWS emulator starts, EKS cluster $CLUSTER 1.36 ($(elapsed "$t") s)"; timing "AWS emulator start" "$(elapsed "$t")"
eval "$("$REPO/scripts/testbed-aws.sh" env --handle "$TMP/aws/handle.json")"
VPY="$CACHE_ROOT/venv-aws/bin/python"

# --- AWS prepared as karpctl does it ---------------------------------------------------------
aws_py() { "$VPY" - "$@"; }
prepare_aws() {
  aws_py "$CLUSTER" <<'PY'
import json, sys, boto3
cluster = sys.argv[1]
ec2, iam, sqs = (boto3.client(s) for s in ("ec2", "iam", "sqs"))
vpc = ec2.describe_subnets(Filters=[{"Name": f"tag:kubernetes.io/cluster/{cluster}", "Values": ["shared"]}])["Subnets"]
c = boto3.client("eks").describe_cluster(name=cluster)["cluster"]
ids = [s["SubnetId"] for s in vpc] + [c["resourcesVpcConfig"]["clusterSecurityGroupId"]]
ec2.create_tags(Resources=ids, Tags=[{"Key": "karpenter.sh/discovery", "Value": cluster}])
trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                                 "Action": "sts:AssumeRole"}]}
role = f"KarpenterNodeRole-{cluster}"
iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
for p in ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryPullOnly",
          "AmazonSSMManagedInstanceCore"):
    iam.attach_role_policy(RoleName=role, PolicyArn=f"arn:aws:iam::aws:policy/{p}")
sqs.create_queue(QueueName=cluster, Attributes={"MessageRetentionPeriod": "300", "SqsManagedSseEnabled": "true"})
print(f"tagged {len(ids)} resources, role {role}, queue {cluster}")
PY
}
check "AWS prepared: discovery tags on subnets + cluster SG, node role, interruption queue" prepare_aws
instance_profiles() {
  aws_py "$CLUSTER" <<'PY'
import sys, boto3
ps = boto3.client("iam").list_instance_profiles(PathPrefix="/karpenter/")["InstanceProfiles"]
print(len(ps), " ".join(p["Path"] + p["InstanceProfileName"] + "=" + ",".join(r["RoleName"] for r in p["Roles"]) for p in ps))
PY
}

# --- the simulator (cluster roles only) and the controller ----------------------------------
check "system namespace $NS" kubectl create namespace "$NS"
t=$(date +%s.%N)
N=$((N + 1))
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE_ROOT/target}"
OUT="$(cd "$REPO" && cargo build --quiet --example testbed-sim 2>&1)" || fail_early "testbed-sim builds" "$OUT"
ok "testbed-sim builds ($(elapsed "$t") s)"
"$CARGO_TARGET_DIR/debug/examples/testbed-sim" --kubeconfig "$KUBECONFIG" --interval-ms 300 --no-karpenter \
  >"$TMP/sim.log" 2>&1 </dev/null &
SIM_PID=$!

free_port() { "$VPY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
t=$(date +%s.%N)
env CLUSTER_NAME="$CLUSTER" SYSTEM_NAMESPACE="$NS" LEADER_ELECTION_NAMESPACE="$NS" \
  KUBECONFIG="$KUBECONFIG" AWS_ENDPOINT_URL="$AWS_ENDPOINT_URL" AWS_REGION="$AWS_REGION" \
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_EC2_METADATA_DISABLED=true \
  INTERRUPTION_QUEUE="$CLUSTER" METRICS_PORT="$(free_port)" HEALTH_PROBE_PORT="$(free_port)" \
  LOG_LEVEL=debug \
  "$CONTROLLER" >"$TMP/controller.log" 2>&1 </dev/null &
CONTROLLER_PID=$!
controller_leads() {
  kill -0 "$CONTROLLER_PID" 2>/dev/null || { echo "the controller exited"; return 2; }
  kubectl get lease -n "$NS" karpenter-leader-election -o jsonpath='{.spec.holderIdentity}' | grep -q .
}
until_ok "controller started and holds the leader lease" "$WAIT" controller_leads || exit 1

# --- EC2NodeClass and NodePool ---------------------------------------------------------------
cat >"$TMP/pool.yaml" <<EOF
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: $CLASS
spec:
  role: KarpenterNodeRole-$CLUSTER
  amiSelectorTerms:
    - alias: al2023@latest
  subnetSelectorTerms:
    - tags:
        karpenter.sh/discovery: $CLUSTER
  securityGroupSelectorTerms:
    - tags:
        karpenter.sh/discovery: $CLUSTER
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: $POOL
spec:
  template:
    spec:
      nodeClassRef:
        group: karpenter.k8s.aws
        kind: EC2NodeClass
        name: $CLASS
      requirements:
        - key: kubernetes.io/arch
          operator: In
          values: ["amd64"]
        - key: karpenter.sh/capacity-type
          operator: In
          values: ["on-demand"]
        - key: karpenter.k8s.aws/instance-category
          operator: In
          values: ["c", "m", "r"]
        - key: karpenter.k8s.aws/instance-generation
          operator: Gt
          values: ["4"]
  limits:
    cpu: "100"
  disruption:
    consolidationPolicy: WhenEmpty
    consolidateAfter: Never
EOF
check "EC2NodeClass $CLASS + NodePool $POOL applied" kubectl apply -f "$TMP/pool.yaml"
cond() { # KIND NAME TYPE -> status
  kubectl get "$1" "$2" -o jsonpath="{.status.conditions[?(@.type=='$3')].status}"
}
class_ready() { [[ "$(cond ec2nodeclass "$CLASS" Ready)" == True ]] || { kubectl get ec2nodeclass "$CLASS" -o jsonpath='{.status.conditions}'; return 1; }; }
pool_ready() { [[ "$(cond nodepool "$POOL" Ready)" == True ]] || { kubectl get nodepool "$POOL" -o jsonpath='{.status.conditions}'; return 1; }; }
until_ok "EC2NodeClass Ready (AMIs, subnets, SGs, instance profile, validation)" "$WAIT" class_ready || exit 1
until_ok "NodePool Ready" "$WAIT" pool_ready || exit 1
check "the class resolved the seeded AL2023 1.36 AMI and the three tagged subnets" bash -c "
  kubectl get ec2nodeclass $CLASS -o jsonpath='{.status.amis[*].name}' | grep -q 'al2023-x86_64-standard-1.36' &&
  [[ \$(kubectl get ec2nodeclass $CLASS -o jsonpath='{.status.subnets[*].id}' | wc -w) == 3 ]]"
N=$((N + 1))
if OUT="$(instance_profiles)" && [[ "$OUT" == 1\ /karpenter/*=KarpenterNodeRole-$CLUSTER ]]; then
  ok "instance profile created in IAM under /karpenter/ with the node role"
else bad "instance profile created in IAM under /karpenter/ with the node role" "$OUT"; fi

# --- provisioning -----------------------------------------------------------------------------
cat >"$TMP/pod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: inflate
  namespace: default
spec:
  nodeSelector:
    karpenter.sh/nodepool: $POOL
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 5
  containers:
    - name: pause
      image: registry.k8s.io/pause:3.10
      resources:
        requests:
          cpu: "1"
          memory: 1Gi
EOF
T_POD=$(date +%s.%N)
check "pending pod applied" kubectl apply -f "$TMP/pod.yaml"
pod_unschedulable() {
  [[ "$(kubectl get pod inflate -o jsonpath='{.status.conditions[?(@.type=="PodScheduled")].reason}')" == Unschedulable ]]
}
until_ok "the simulator's scheduler marks it Unschedulable" 30 pod_unschedulable || exit 1
claim_launched() {
  kubectl get nodeclaims -l "karpenter.sh/nodepool=$POOL" -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Launched")].status}{"\n"}{end}' | grep -q ' True$'
}
until_ok "Karpenter creates a NodeClaim and launches it (CreateFleet)" "$WAIT" claim_launched || exit 1
node_ready() {
  local n; n="$(kubectl get nodeclaims -l "karpenter.sh/nodepool=$POOL" -o jsonpath='{.items[0].status.nodeName}')"
  [[ -n "$n" ]] && [[ "$(kubectl get node "$n" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]] &&
    [[ "$(cond nodeclaim "$(kubectl get nodeclaims -l "karpenter.sh/nodepool=$POOL" -o jsonpath='{.items[0].metadata.name}')" Initialized)" == True ]]
}
until_ok "the kwok Node registers, is Ready, the NodeClaim Initialized" "$WAIT" node_ready || exit 1
pod_running() { [[ "$(kubectl get pod inflate -o jsonpath='{.status.phase}')" == Running ]]; }
until_ok "the pod is bound to it and Running" 60 pod_running || exit 1
timing "pending pod -> Running (total)" "$(elapsed "$T_POD")"
NODE="$(kubectl get pod inflate -o jsonpath='{.spec.nodeName}')"
check "the node carries the pool's labels and Karpenter's registration" bash -c "
  kubectl get node $NODE -o jsonpath='{.metadata.labels}' | grep -q '\"karpenter.sh/nodepool\":\"$POOL\"' &&
  kubectl get node $NODE -o jsonpath='{.metadata.labels}' | grep -q '\"karpenter.sh/registered\":\"true\"' &&
  kubectl get node $NODE -o jsonpath='{.metadata.labels.node\.kubernetes\.io/instance-type}' | grep -Eq '^[cmr][5-9]'"
echo "#    node $NODE: $(kubectl get node "$NODE" -o jsonpath='{.metadata.labels.node\.kubernetes\.io/instance-type} {.metadata.labels.topology\.kubernetes\.io/zone} {.spec.providerID}')"

# --- deletion ---------------------------------------------------------------------------------
T_DEL=$(date +%s.%N)
check "NodePool deleted" kubectl delete nodepool "$POOL" --wait=false
claims_gone() { [[ -z "$(kubectl get nodeclaims -o name)" ]] || { kubectl get nodeclaims; return 1; }; }
node_gone() { ! kubectl get node "$NODE" >/dev/null 2>&1; }
pod_gone() { ! kubectl get pod inflate >/dev/null 2>&1; }
until_ok "the pod is evicted (drain)" "$WAIT" pod_gone || exit 1
until_ok "the node is gone (instance terminated)" "$WAIT" node_gone || exit 1
until_ok "no NodeClaim is left" "$WAIT" claims_gone || exit 1
timing "NodePool delete -> node gone (total)" "$(elapsed "$T_DEL")"
check "EC2NodeClass deleted" kubectl delete ec2nodeclass "$CLASS" --wait=false
class_gone() { ! kubectl get ec2nodeclass "$CLASS" >/dev/null 2>&1; }
until_ok "the EC2NodeClass is gone (finalizer released)" "$WAIT" class_gone || exit 1
N=$((N + 1))
if OUT="$(instance_profiles)" && [[ "$OUT" == 0* ]]; then ok "its instance profile is deleted from IAM"
else bad "its instance profile is deleted from IAM" "$OUT"; fi
check "the controller is still running" kill -0 "$CONTROLLER_PID"
# Errors the controller logged, grouped (Karpenter logs transient reconcile errors, e.g. for
# NodeClaims whose NodePool was just deleted): shown, not counted as failures.
OUT="$("$VPY" - "$TMP/controller.log" <<'PY'
import collections, json, sys
seen = collections.Counter()
for line in open(sys.argv[1], errors="replace"):
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if d.get("level") == "ERROR":
        seen[(d.get("controller", "-"), (d.get("error") or d.get("message", ""))[:240])] += 1
for (ctrl, err), n in sorted(seen.items()):
    print(f"{n:4d} x [{ctrl}] {err}")
PY
)"
[[ -n "$OUT" ]] && { echo "# errors the controller logged (not failures):"; printf '%s\n' "$OUT" | sed 's/^/#  /'; }
echo "# AWS calls the controller made (emulator counters):"
curl -fsS "$AWS_ENDPOINT_URL/_testbed/requests" | "$VPY" -c 'import json,sys; c=json.load(sys.stdin)["counts"]; print("\n".join(f"#    {k}: {v}" for k,v in sorted(c.items())))'
echo "# timings:"
for l in "${TIMINGS[@]}"; do echo "#    $l"; done
echo "#    $(printf '%-70s %6s s' "whole smoke test" "$(elapsed "$T0")")"
[[ $FAILED -gt 0 ]] && controller_tail
echo "$PASSED passed, $FAILED failed"
[[ $FAILED == 0 ]]
