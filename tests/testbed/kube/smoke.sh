#!/usr/bin/env bash
# Smoke test of the Kubernetes test bed. Run it through `scripts/testbed-kube.sh smoke`,
# which starts the bed when needed; directly: smoke.sh DIR (a running bed's directory).
# Prints one line per check and a final "N passed, N failed"; exits 1 on any failure.
set -uo pipefail

DIR="${1:?usage: smoke.sh DIR}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ -f "$DIR/env" ]] || { echo "smoke: no test bed in $DIR (missing env file)" >&2; exit 1; }
# shellcheck disable=SC1091
source "$DIR/env"
WORK="$DIR/work/smoke"
rm -rf "$WORK"; mkdir -p "$WORK"
export HELM_CACHE_HOME="$DIR/work/helm/cache" HELM_CONFIG_HOME="$DIR/work/helm/config" HELM_DATA_HOME="$DIR/work/helm/data"
FAKE="$HERE/fake-ready.sh"

PASSED=0 FAILED=0 N=0
OUT="" # output of the last run_cmd
run_cmd() { OUT="$("$@" 2>&1)"; }
ok() { PASSED=$((PASSED + 1)); printf 'ok   %2d %s\n' "$N" "$1"; }
bad() {
  FAILED=$((FAILED + 1)); printf 'FAIL %2d %s\n' "$N" "$1"
  [[ -n "${2:-}" ]] && printf '%s\n' "$2" | sed 's/^/     | /' | head -n 40
  return 0
}
# check NAME CMD...           passes when CMD exits 0
check() { local name="$1"; shift; N=$((N + 1)); if run_cmd "$@"; then ok "$name"; else bad "$name" "$OUT"; fi; }
# reject NAME TEXT CMD...     passes when CMD fails and its output contains TEXT
reject() {
  local name="$1" text="$2"; shift 2; N=$((N + 1))
  if run_cmd "$@"; then bad "$name (was accepted)" "$OUT"
  elif [[ "$OUT" != *"$text"* ]]; then bad "$name (wrong error, wanted: $text)" "$OUT"
  else ok "$name"; fi
}
# same NAME WANT CMD...       passes when CMD's output equals WANT
same() {
  local name="$1" want="$2"; shift 2; N=$((N + 1))
  if run_cmd "$@" && [[ "$OUT" == "$want" ]]; then ok "$name"; else bad "$name (wanted '$want')" "$OUT"; fi
}

k() { kubectl "$@"; }
server_version() { kubectl get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p'; }
helm_revision() { helm history "$1" -n "$2" --max 1 -o yaml | sed -n 's/^ *revision: //p'; }
envval() { # NS DEPLOY VAR -> value of env var VAR of container "controller"
  k get deployment "$2" -n "$1" \
    -o jsonpath="{.spec.template.spec.containers[?(@.name=='controller')].env[?(@.name=='$3')].value}"
}

echo "# karpctl Kubernetes test bed smoke test ($KARPCTL_TESTBED_KUBE_SERVER)"

# --- the API server ---------------------------------------------------------------------
same "server reports the pinned Kubernetes version" "v1.36.4" server_version
check "readyz over TLS with the kubeconfig" k get --raw /readyz
reject "RBAC: the no-permission token is forbidden" "forbidden" \
  k --kubeconfig "$DIR/kubeconfig-noperm" get namespaces
check "the admin token may do anything" k auth can-i '*' '*' --all-namespaces

# --- Karpenter CRDs ---------------------------------------------------------------------
N=$((N + 1))
if k get crd nodepools.karpenter.sh ec2nodeclasses.karpenter.k8s.aws nodeclaims.karpenter.sh >/dev/null 2>&1; then
  ok "Karpenter CRDs are installed"
  HAVE_CRDS=1
else
  bad "Karpenter CRDs are installed (directory missing? see KARPCTL_CRDS_DIR)" "$(k get crd 2>&1)"
  HAVE_CRDS=0
fi

cat > "$WORK/valid.yaml" <<'EOF'
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: smoke-gpu
spec:
  role: KarpenterNodeRole-smoke
  amiSelectorTerms:
    - alias: al2023@v20250915
  subnetSelectorTerms:
    - tags:
        karpenter.sh/discovery: smoke
  securityGroupSelectorTerms:
    - tags:
        karpenter.sh/discovery: smoke
  blockDeviceMappings:
    - deviceName: /dev/xvda
      ebs:
        volumeSize: 100Gi
        volumeType: gp3
        encrypted: true
  metadataOptions:
    httpTokens: required
    httpPutResponseHopLimit: 1
  tags:
    team: smoke
---
apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: smoke-gpu
spec:
  template:
    metadata:
      labels:
        nvidia.com/gpu.present: "true"
    spec:
      nodeClassRef:
        group: karpenter.k8s.aws
        kind: EC2NodeClass
        name: smoke-gpu
      requirements:
        - key: karpenter.sh/capacity-type
          operator: In
          values: ["on-demand", "spot"]
        - key: karpenter.k8s.aws/instance-family
          operator: In
          values: ["g5", "g6"]
        - key: karpenter.k8s.aws/instance-generation
          operator: Gt
          values: ["4"]
      taints:
        - key: nvidia.com/gpu
          effect: NoSchedule
      expireAfter: 720h
  limits:
    cpu: "1000"
    nvidia.com/gpu: "16"
  disruption:
    consolidationPolicy: WhenEmpty
    consolidateAfter: 5m
EOF
cat > "$WORK/bad-nodepool.yaml" <<'EOF'
apiVersion: karpenter.sh/v1
kind: NodePool
metadata:
  name: smoke-bad
spec:
  template:
    spec:
      nodeClassRef: {group: karpenter.k8s.aws, kind: EC2NodeClass, name: smoke-gpu}
      requirements:
        - key: karpenter.sh/nodepool
          operator: In
          values: ["other"]
EOF
cat > "$WORK/bad-ec2nodeclass.yaml" <<'EOF'
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: smoke-bad
spec:
  role: KarpenterNodeRole-smoke
  amiSelectorTerms:
    - alias: al2023@v20250915
    - tags: {karpenter.sh/discovery: smoke}
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: smoke}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: smoke}}]
EOF
cat > "$WORK/bad-noami.yaml" <<'EOF'
apiVersion: karpenter.k8s.aws/v1
kind: EC2NodeClass
metadata:
  name: smoke-noami
spec:
  role: KarpenterNodeRole-smoke
  subnetSelectorTerms: [{tags: {karpenter.sh/discovery: smoke}}]
  securityGroupSelectorTerms: [{tags: {karpenter.sh/discovery: smoke}}]
EOF

if [[ $HAVE_CRDS == 1 ]]; then
  check "valid NodePool + EC2NodeClass pass a server-side dry run" \
    k apply --server-side --field-manager karpctl-smoke --dry-run=server -f "$WORK/valid.yaml"
  check "valid NodePool + EC2NodeClass are accepted (server-side apply)" \
    k apply --server-side --field-manager karpctl-smoke -f "$WORK/valid.yaml"
  same "defaults from the CRD schema are filled in (spec.template.spec.expireAfter)" "720h" \
    k get nodepool smoke-gpu -o jsonpath='{.spec.template.spec.expireAfter}'
  reject "NodePool with requirement key karpenter.sh/nodepool is rejected by CEL" \
    'label "karpenter.sh/nodepool" is restricted' \
    k apply --server-side --field-manager karpctl-smoke -f "$WORK/bad-nodepool.yaml"
  reject "EC2NodeClass with an alias plus another amiSelectorTerm is rejected by CEL" \
    "'alias' is mutually exclusive, cannot be set with a combination of other amiSelectorTerms" \
    k apply --server-side --field-manager karpctl-smoke -f "$WORK/bad-ec2nodeclass.yaml"
  reject "EC2NodeClass without amiSelectorTerms is rejected by the OpenAPI schema" \
    "spec.amiSelectorTerms: Required value" \
    k apply --server-side --field-manager karpctl-smoke -f "$WORK/bad-noami.yaml"

  # --- fake readiness for Karpenter objects ---------------------------------------------
  check "fake-ready.sh ec2nodeclass" "$FAKE" ec2nodeclass smoke-gpu
  check "EC2NodeClass becomes Ready" k wait --for condition=Ready --timeout 10s ec2nodeclass/smoke-gpu
  check "fake-ready.sh nodepool" "$FAKE" nodepool smoke-gpu
  check "NodePool becomes Ready" k wait --for condition=Ready --timeout 10s nodepool/smoke-gpu
fi
check "fake-ready.sh node creates a Ready Node" "$FAKE" node smoke-node-1 \
  karpenter.sh/nodepool=smoke-gpu karpenter.k8s.aws/instance-gpu-manufacturer=nvidia
check "Node is Ready" k wait --for condition=Ready --timeout 10s node/smoke-node-1

# --- Helm: the real Karpenter chart (scripts/upstream.sh) ----------------------------------
UPSTREAM="$HERE/../../../scripts/upstream.sh"
KCHART="$("$UPSTREAM" path karpenter "" chart)"
NCHART="$("$UPSTREAM" path nvidia-device-plugin "" chart)"
check "helm lint of the real charts" \
  helm lint "$KCHART" "$NCHART" --set settings.clusterName=lint --namespace lint
check "helm package of the real charts" \
  helm package "$KCHART" "$NCHART" -d "$WORK/pkg"
# The packages carry the pinned versions (scripts/upstream.sh versions).
KVER="$("$UPSTREAM" versions | sed -n 's/^karpenter=//p')"
NVER="$("$UPSTREAM" versions | sed -n 's/^nvidia-device-plugin=//p')"
KTGZ="$WORK/pkg/karpenter-$KVER.tgz"
NTGZ="$WORK/pkg/nvidia-device-plugin-$NVER.tgz"

reject "Karpenter chart refuses to install without settings.clusterName" \
  "without a valid settings.clusterName" \
  helm upgrade --install karpenter "$KTGZ" -n kube-system

cat > "$WORK/karpenter-values.yaml" <<'EOF'
settings:
  clusterName: smoke
  interruptionQueue: smoke-queue
  clusterEndpoint: https://ABCDEF.gr7.us-east-1.eks.amazonaws.com
serviceAccount:
  annotations:
    eks.amazonaws.com/role-arn: arn:aws:iam::111122223333:role/KarpenterControllerRole-smoke
replicas: 1
controller:
  resources:
    requests: {cpu: "1", memory: 1Gi}
    limits: {cpu: "1", memory: 1Gi}
EOF
check "helm upgrade --install of the Karpenter chart" \
  helm upgrade --install karpenter "$KTGZ" -n kube-system -f "$WORK/karpenter-values.yaml"
same "rendered CLUSTER_NAME" "smoke" envval kube-system karpenter CLUSTER_NAME
same "rendered INTERRUPTION_QUEUE" "smoke-queue" envval kube-system karpenter INTERRUPTION_QUEUE
same "rendered CLUSTER_ENDPOINT" "https://ABCDEF.gr7.us-east-1.eks.amazonaws.com" envval kube-system karpenter CLUSTER_ENDPOINT
same "IRSA annotation on the ServiceAccount" "arn:aws:iam::111122223333:role/KarpenterControllerRole-smoke" \
  k get serviceaccount karpenter -n kube-system -o jsonpath='{.metadata.annotations.eks\.amazonaws\.com/role-arn}'
same "PodDisruptionBudget maxUnavailable" "1" \
  k get pdb karpenter -n kube-system -o jsonpath='{.spec.maxUnavailable}'
check "ClusterRole and ClusterRoleBinding exist" k get clusterrole/karpenter clusterrolebinding/karpenter
same "no controllers: the Deployment is not available by itself" "" \
  k get deployment karpenter -n kube-system -o jsonpath='{.status.availableReplicas}'
check "fake-ready.sh deployment" "$FAKE" deployment karpenter -n kube-system
check "Deployment becomes Available" k wait --for condition=Available --timeout 10s deployment/karpenter -n kube-system
check "kubectl rollout status agrees" k rollout status deployment/karpenter -n kube-system --timeout 10s

# Upgrade with changed values, and prove `helm --wait` can finish when the fake runs alongside.
(for _ in $(seq 1 100); do
   sleep 0.5
   [[ "$(k get deployment karpenter -n kube-system -o jsonpath='{.metadata.generation}/{.status.observedGeneration}' 2>/dev/null)" =~ ^([0-9]+)/([0-9]+)$ ]] || continue
   [[ ${BASH_REMATCH[1]} != "${BASH_REMATCH[2]}" ]] && "$FAKE" deployment karpenter -n kube-system >/dev/null 2>&1 && break
 done) &
FAKER=$!
check "helm upgrade --wait with changed values (fake-ready in the background)" \
  helm upgrade --install karpenter "$KTGZ" -n kube-system -f "$WORK/karpenter-values.yaml" \
  --set settings.interruptionQueue=smoke-queue-2 --set dnsPolicy=Default --set replicas=2 --wait --timeout 60s
kill "$FAKER" 2>/dev/null; wait "$FAKER" 2>/dev/null
same "INTERRUPTION_QUEUE changed after upgrade" "smoke-queue-2" envval kube-system karpenter INTERRUPTION_QUEUE
same "dnsPolicy and replicas changed after upgrade" "Default/2" \
  k get deployment karpenter -n kube-system -o jsonpath='{.spec.template.spec.dnsPolicy}/{.spec.replicas}'
same "helm records revision 2" "2" \
  helm_revision karpenter kube-system
check "helm uninstall" helm uninstall karpenter -n kube-system
reject "the Deployment is gone after uninstall" "NotFound" k get deployment karpenter -n kube-system

# --- Helm: NVIDIA's device plugin chart ----------------------------------------------------
reject "device-plugin chart refuses config.name together with config.map" \
  "Only one of 'config.name' or 'config.map' should ever be set" \
  helm template nvdp "$NTGZ" -n nvidia-device-plugin --set config.name=existing \
  --set-string 'config.map.default=version: v1'
cat > "$WORK/nvdp-values.yaml" <<'EOF'
config:
  default: default
  map:
    default: |-
      version: v1
      flags:
        migStrategy: none
      sharing:
        timeSlicing:
          renameByDefault: false
          failRequestsGreaterThanOne: false
          resources:
            - name: nvidia.com/gpu
              replicas: 4
nodeSelector:
  karpenter.k8s.aws/instance-gpu-manufacturer: nvidia
tolerations:
  - key: nvidia.com/gpu
    operator: Exists
    effect: NoSchedule
EOF
check "helm upgrade --install of the device-plugin chart with a time-slicing config" \
  helm upgrade --install nvdp "$NTGZ" -n nvidia-device-plugin --create-namespace -f "$WORK/nvdp-values.yaml"
N=$((N + 1))
cm="$(k get configmap nvdp-nvidia-device-plugin-configs -n nvidia-device-plugin -o jsonpath='{.data.default}' 2>&1)"
if [[ "$cm" == *"timeSlicing:"* && "$cm" == *"replicas: 4"* ]]; then ok "ConfigMap holds the time-slicing config"; else bad "ConfigMap holds the time-slicing config" "$cm"; fi
same "DaemonSet uses the default config and the nodeSelector" "default/nvidia" \
  k get daemonset nvdp-nvidia-device-plugin -n nvidia-device-plugin -o \
  jsonpath="{.spec.template.spec.containers[?(@.name=='nvidia-device-plugin-sidecar')].env[?(@.name=='DEFAULT_CONFIG')].value}/{.spec.template.spec.nodeSelector.karpenter\.k8s\.aws/instance-gpu-manufacturer}"
check "fake-ready.sh daemonset" "$FAKE" daemonset nvdp-nvidia-device-plugin -n nvidia-device-plugin --nodes 1
check "DaemonSet rollout status agrees" k rollout status daemonset/nvdp-nvidia-device-plugin -n nvidia-device-plugin --timeout 10s
check "helm uninstall of the device plugin" helm uninstall nvdp -n nvidia-device-plugin

# --- clean up what the smoke test created (namespaces stay: no namespace controller) ------
k delete node smoke-node-1 --ignore-not-found >/dev/null 2>&1
k delete replicasets -n kube-system -l karpctl.testbed/fake=true --ignore-not-found >/dev/null 2>&1
if [[ $HAVE_CRDS == 1 ]]; then
  k delete nodepool smoke-gpu --ignore-not-found >/dev/null 2>&1
  k delete ec2nodeclass smoke-gpu --ignore-not-found >/dev/null 2>&1
fi

echo "$PASSED passed, $FAILED failed"
[[ $FAILED == 0 ]]
