#!/usr/bin/env bash
# The way the runbooks install Karpenter (../shared/seeds/001_*, 004_*, and the
# official getting-started guide's step scripts as summarised in
# ../shared/reference/installers-survey.md §1): one aws / helm / kubectl process
# per call. scripts/bench.sh times it against `karpctl up` on the sandbox.
#
#   by-hand.sh up        tags, stack, controller role + Pod Identity, access entry,
#                        Spot SLR, AMI lookups, CRDs, two Helm releases, node
#                        classes and pools, wait for Ready. Running it again is the
#                        by-hand "no-op" (what users do: the commands re-run and
#                        mostly say "no change").
#   by-hand.sh plan      the read-only subset: the same reads, `kubectl diff`, no change
#   by-hand.sh rollback  runbook 004 in karpctl's order: scale the managed nodegroup,
#                        delete pools and classes, uninstall the releases, remove node
#                        access and the controller identity
#
# Inputs (scripts/bench.sh sets them): the sandbox env (AWS_ENDPOINT_URL, credentials,
# KUBECONFIG, PATH with kubectl and helm) and
#   BYHAND_FILES     directory with karpenter.json (CloudFormation template),
#                    karpenter-values.yaml, nvidia-device-plugin-values.yaml and
#                    manifests.yaml, all from `karpctl render`; the manifests name the
#                    AMI aliases al2023@v19700101 (class default) and al2023@v19700102
#                    (class gpu), replaced here with the looked-up versions the way the
#                    guide pipes its YAML through envsubst
#   CLUSTER_NAME K8S_VERSION KARPENTER_NAMESPACE KARPENTER_CHART DEVICE_PLUGIN_CHART
#   NODEGROUP NG_MIN NG_DESIRED NG_MAX   (rollback only)
#   BYHAND_LOG       optional: one "<ms>\t<command>" line per call is appended here
# Every call's exit status is checked (set -e); calls that fail on a second run
# (create-role, create-access-entry, …) are guarded by the matching read, as a
# careful runbook does, so a re-run exits 0.
set -euo pipefail

mode="${1:-up}"
: "${BYHAND_FILES:?}" "${CLUSTER_NAME:?}" "${K8S_VERSION:?}" "${KARPENTER_CHART:?}" "${DEVICE_PLUGIN_CHART:?}"
KARPENTER_NAMESPACE="${KARPENTER_NAMESPACE:-kube-system}"
STACK="Karpenter-${CLUSTER_NAME}"
CONTROLLER_ROLE="KarpenterControllerRole-${CLUSTER_NAME}"
NODE_ROLE="KarpenterNodeRole-${CLUSTER_NAME}"
TAG="karpctl.io/cluster=${CLUSTER_NAME}"
POLICIES=(NodeLifecycle IAMIntegration EKSIntegration Interruption ZonalShift ResourceDiscovery)
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Runs one command, logging its wall time; output to stdout as usual.
run() {
  local t0 t1 rc=0
  t0=$(date +%s%N)
  "$@" || rc=$?
  t1=$(date +%s%N)
  [[ -n "${BYHAND_LOG:-}" ]] && printf '%d\t%s\n' $(((t1 - t0) / 1000000)) "$*" >>"$BYHAND_LOG"
  return "$rc"
}
# A guard: a read whose failure means "not there yet"; its status is the answer.
probe() { run "$@" >/dev/null 2>&1; }

account() { run aws sts get-caller-identity --query Account --output text; }

# Step01 of the guide: cluster facts.
facts() {
  AWS_ACCOUNT_ID="$(account)"
  CLUSTER_ENDPOINT="$(run aws eks describe-cluster --name "$CLUSTER_NAME" --query cluster.endpoint --output text)"
  SUBNETS="$(run aws eks describe-cluster --name "$CLUSTER_NAME" --query 'cluster.resourcesVpcConfig.subnetIds' --output text)"
  CLUSTER_SG="$(run aws eks describe-cluster --name "$CLUSTER_NAME" --query 'cluster.resourcesVpcConfig.clusterSecurityGroupId' --output text)"
}

# Two SSM reads per AMI, as step01 does for ALIAS_VERSION: the image id and its name,
# whose vYYYYMMDD is the alias version.
ami_alias() { # variant
  local base="/aws/service/eks/optimized-ami/${K8S_VERSION}/amazon-linux-2023/x86_64/$1/recommended"
  local id name
  id="$(run aws ssm get-parameter --name "$base/image_id" --query Parameter.Value --output text)"
  name="$(run aws ssm get-parameter --name "$base/image_name" --query Parameter.Value --output text)"
  [[ "$id" == ami-* ]] || { echo "by-hand: no AMI id for $1" >&2; exit 1; }
  [[ "$name" =~ (v[0-9]{8}) ]] || { echo "by-hand: no version in AMI name $name" >&2; exit 1; }
  echo "${BASH_REMATCH[1]}"
}

manifests() {
  sed -e "s/al2023@v19700101/al2023@${DEFAULT_ALIAS}/" -e "s/al2023@v19700102/al2023@${GPU_ALIAS}/" \
    "$BYHAND_FILES/manifests.yaml" >"$tmp/manifests.yaml"
}

up() {
  facts
  # Discovery tags on the cluster's subnets and security group.
  # shellcheck disable=SC2086
  run aws ec2 create-tags --resources $SUBNETS "$CLUSTER_SG" --tags "Key=karpenter.sh/discovery,Value=${CLUSTER_NAME}"

  # The CloudFormation stack (node role, controller policies, queue, rules).
  run aws cloudformation deploy --stack-name "$STACK" --template-file "$BYHAND_FILES/karpenter.json" \
    --capabilities CAPABILITY_NAMED_IAM --no-fail-on-empty-changeset --tags "$TAG"

  # Controller role for EKS Pod Identity with the stack's six policies, and the association.
  if ! probe aws iam get-role --role-name "$CONTROLLER_ROLE"; then
    cat >"$tmp/trust.json" <<'JSON'
{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "pods.eks.amazonaws.com"},
  "Action": ["sts:AssumeRole", "sts:TagSession"]}]}
JSON
    run aws iam create-role --role-name "$CONTROLLER_ROLE" --assume-role-policy-document "file://$tmp/trust.json" \
      --tags "Key=karpctl.io/cluster,Value=${CLUSTER_NAME}" >/dev/null
  fi
  local p
  for p in "${POLICIES[@]}"; do
    run aws iam attach-role-policy --role-name "$CONTROLLER_ROLE" \
      --policy-arn "arn:aws:iam::${AWS_ACCOUNT_ID}:policy/KarpenterController${p}Policy-${CLUSTER_NAME}"
  done
  local assoc
  assoc="$(run aws eks list-pod-identity-associations --cluster-name "$CLUSTER_NAME" --namespace "$KARPENTER_NAMESPACE" \
    --service-account karpenter --query 'associations[0].associationId' --output text)"
  if [[ "$assoc" == None ]]; then
    run aws eks create-pod-identity-association --cluster-name "$CLUSTER_NAME" --namespace "$KARPENTER_NAMESPACE" \
      --service-account karpenter --role-arn "arn:aws:iam::${AWS_ACCOUNT_ID}:role/${CONTROLLER_ROLE}" \
      --tags "karpctl.io/cluster=${CLUSTER_NAME}" >/dev/null
  fi

  # Node access: an EC2_LINUX access entry for the stack's node role.
  if ! probe aws eks describe-access-entry --cluster-name "$CLUSTER_NAME" \
    --principal-arn "arn:aws:iam::${AWS_ACCOUNT_ID}:role/${NODE_ROLE}"; then
    run aws eks create-access-entry --cluster-name "$CLUSTER_NAME" --type EC2_LINUX \
      --principal-arn "arn:aws:iam::${AWS_ACCOUNT_ID}:role/${NODE_ROLE}" --tags "karpctl.io/cluster=${CLUSTER_NAME}" >/dev/null
  fi

  # The Spot service-linked role (the guide: `create-service-linked-role … || true`).
  if ! probe aws iam get-role --role-name AWSServiceRoleForEC2Spot; then
    run aws iam create-service-linked-role --aws-service-name spot.amazonaws.com >/dev/null
  fi

  # AMI versions for the two classes (standard and nvidia).
  DEFAULT_ALIAS="$(ami_alias standard)"
  GPU_ALIAS="$(ami_alias nvidia)"

  # CRDs from the pinned chart, server-side applied.
  run helm show crds "$KARPENTER_CHART" >"$tmp/crds.yaml"
  run kubectl apply --server-side -f "$tmp/crds.yaml"

  # The controller and the device plugin.
  run helm upgrade --install karpenter "$KARPENTER_CHART" --namespace "$KARPENTER_NAMESPACE" --create-namespace \
    -f "$BYHAND_FILES/karpenter-values.yaml" --set "settings.clusterEndpoint=${CLUSTER_ENDPOINT}" --wait
  run helm upgrade --install nvidia-device-plugin "$DEVICE_PLUGIN_CHART" --namespace kube-system \
    -f "$BYHAND_FILES/nvidia-device-plugin-values.yaml" --wait

  # Node classes and pools, then wait for them.
  manifests
  run kubectl apply -f "$tmp/manifests.yaml"
  run kubectl wait --for=condition=Ready ec2nodeclasses.karpenter.k8s.aws --all --timeout=300s
  run kubectl wait --for=condition=Ready nodepools.karpenter.sh --all --timeout=300s
}

# What a careful user runs to see whether anything would change: the same reads,
# helm's view of the releases and `kubectl diff` (exit 1 = differences, not an error).
plan() {
  facts
  # shellcheck disable=SC2086
  run aws ec2 describe-tags --filters "Name=key,Values=karpenter.sh/discovery" \
    "Name=resource-id,Values=$(echo $SUBNETS "$CLUSTER_SG" | tr ' \t' ',,')" --output text >/dev/null
  run aws cloudformation describe-stacks --stack-name "$STACK" --query 'Stacks[0].StackStatus' --output text
  run aws iam get-role --role-name "$CONTROLLER_ROLE" --query Role.Arn --output text
  run aws iam list-attached-role-policies --role-name "$CONTROLLER_ROLE" --output text >/dev/null
  run aws eks list-pod-identity-associations --cluster-name "$CLUSTER_NAME" --namespace "$KARPENTER_NAMESPACE" \
    --service-account karpenter --output text >/dev/null
  run aws eks describe-access-entry --cluster-name "$CLUSTER_NAME" \
    --principal-arn "arn:aws:iam::${AWS_ACCOUNT_ID}:role/${NODE_ROLE}" --query accessEntry.type --output text
  run aws iam get-role --role-name AWSServiceRoleForEC2Spot --query Role.Arn --output text
  DEFAULT_ALIAS="$(ami_alias standard)"
  GPU_ALIAS="$(ami_alias nvidia)"
  run helm status karpenter --namespace "$KARPENTER_NAMESPACE" >/dev/null
  run helm get values karpenter --namespace "$KARPENTER_NAMESPACE" >/dev/null
  run helm status nvidia-device-plugin --namespace kube-system >/dev/null
  run helm get values nvidia-device-plugin --namespace kube-system >/dev/null
  run helm show crds "$KARPENTER_CHART" >"$tmp/crds.yaml"
  local rc
  rc=0; run kubectl diff --server-side -f "$tmp/crds.yaml" >/dev/null || rc=$?
  ((rc <= 1)) || exit "$rc"
  manifests
  rc=0; run kubectl diff -f "$tmp/manifests.yaml" >/dev/null || rc=$?
  ((rc <= 1)) || exit "$rc"
}

# Runbook 004 ("Rollback to AWS Managed Nodegroups") in the order karpctl uses:
# capacity first, then pools, classes, the releases, node access and the identity.
rollback() {
  : "${NODEGROUP:?}" "${NG_MIN:?}" "${NG_DESIRED:?}" "${NG_MAX:?}"
  AWS_ACCOUNT_ID="$(account)"
  run aws eks update-nodegroup-config --cluster-name "$CLUSTER_NAME" --nodegroup-name "$NODEGROUP" \
    --scaling-config "minSize=${NG_MIN},maxSize=${NG_MAX},desiredSize=${NG_DESIRED}" >/dev/null
  # `aws eks wait nodegroup-active` sleeps 30 s between polls; users poll faster by hand.
  local status i
  for ((i = 0; i < 150; i++)); do
    status="$(run aws eks describe-nodegroup --cluster-name "$CLUSTER_NAME" --nodegroup-name "$NODEGROUP" \
      --query nodegroup.status --output text)"
    [[ "$status" == ACTIVE ]] && break
    sleep 2
  done
  [[ "$status" == ACTIVE ]] || { echo "by-hand: nodegroup $NODEGROUP is $status" >&2; exit 1; }
  # …and for its nodes to be Ready before anything is drained (as karpctl does).
  local ready
  for ((i = 0; i < 150; i++)); do
    ready="$(run kubectl get nodes -l "eks.amazonaws.com/nodegroup=${NODEGROUP}" \
      -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True || true)"
    ((ready >= NG_DESIRED)) && break
    sleep 2
  done
  ((ready >= NG_DESIRED)) || { echo "by-hand: $ready of $NG_DESIRED nodes of $NODEGROUP Ready" >&2; exit 1; }
  run kubectl delete nodepools.karpenter.sh --all --wait=true --timeout=300s
  local nodes n
  nodes="$(run kubectl get nodes -l karpenter.sh/nodepool -o name)"
  for n in $nodes; do
    run kubectl drain "$n" --ignore-daemonsets --delete-emptydir-data --timeout=300s
  done
  run kubectl delete ec2nodeclasses.karpenter.k8s.aws --all --wait=true --timeout=300s
  run helm uninstall karpenter --namespace "$KARPENTER_NAMESPACE" --wait
  run helm uninstall nvidia-device-plugin --namespace kube-system --wait
  run aws eks delete-access-entry --cluster-name "$CLUSTER_NAME" \
    --principal-arn "arn:aws:iam::${AWS_ACCOUNT_ID}:role/${NODE_ROLE}"
  local assoc
  assoc="$(run aws eks list-pod-identity-associations --cluster-name "$CLUSTER_NAME" --namespace "$KARPENTER_NAMESPACE" \
    --service-account karpenter --query 'associations[0].associationId' --output text)"
  [[ "$assoc" == None ]] || run aws eks delete-pod-identity-association --cluster-name "$CLUSTER_NAME" \
    --association-id "$assoc" >/dev/null
  local arns arn
  arns="$(run aws iam list-attached-role-policies --role-name "$CONTROLLER_ROLE" \
    --query 'AttachedPolicies[].PolicyArn' --output text)"
  for arn in $arns; do
    run aws iam detach-role-policy --role-name "$CONTROLLER_ROLE" --policy-arn "$arn"
  done
  run aws iam delete-role --role-name "$CONTROLLER_ROLE"
}

case "$mode" in
  up) up ;;
  plan) plan ;;
  rollback) rollback ;;
  *) echo "usage: $0 up|plan|rollback" >&2; exit 64 ;;
esac
