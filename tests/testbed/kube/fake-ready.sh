#!/usr/bin/env bash
# Fake what controllers and kubelets would do in a real cluster, through the status
# subresource, with kubectl only. The test bed has no controllers: without this nothing
# ever becomes Available or Ready.
#
#   fake-ready.sh deployment NAME [-n NS]     Deployment (and a stand-in ReplicaSet) available
#   fake-ready.sh daemonset NAME [-n NS] [--nodes N]   DaemonSet fully rolled out on N nodes (1)
#   fake-ready.sh nodepool NAME               NodePool Ready (+ NodeClassReady, ValidationSucceeded, ...)
#   fake-ready.sh ec2nodeclass NAME           EC2NodeClass Ready (+ AMIsReady, SubnetsReady, ...)
#   fake-ready.sh node NAME [KEY=VALUE ...]   create Node NAME with those labels if absent, mark it Ready
#
# Uses $KUBECONFIG (source DIR/env from scripts/testbed-kube.sh start) and kubectl from
# $KARPCTL_TESTBED_KUBE_BIN or PATH. Re-run after every change of a Deployment's spec: the
# fake status records the generation it was written for, like a controller would.
set -euo pipefail

KUBECTL="${KARPCTL_TESTBED_KUBE_BIN:+$KARPCTL_TESTBED_KUBE_BIN/}kubectl"
die() { echo "fake-ready: $*" >&2; exit 1; }
k() { "$KUBECTL" "$@"; }
now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# cond TYPE [REASON] [GENERATION] -> one metav1.Condition as JSON
cond() {
  local gen="${3:-}"
  printf '{"type":"%s","status":"True","reason":"%s","message":"faked by karpctl test bed","lastTransitionTime":"%s"%s}' \
    "$1" "${2:-$1}" "$(now)" "${gen:+,\"observedGeneration\":$gen}"
}

parse_ns() { # sets NS and NODES from the remaining args
  NS=default NODES=1
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -n|--namespace) NS="$2"; shift 2 ;;
      --nodes) NODES="$2"; shift 2 ;;
      *) die "unknown argument: $1" ;;
    esac
  done
}

fake_deployment() {
  local name="$1"; shift; parse_ns "$@"
  local gen replicas uid sel tmpl labels hash rs rsgen t
  gen=$(k get deployment "$name" -n "$NS" -o jsonpath='{.metadata.generation}')
  replicas=$(k get deployment "$name" -n "$NS" -o jsonpath='{.spec.replicas}')
  uid=$(k get deployment "$name" -n "$NS" -o jsonpath='{.metadata.uid}')
  sel=$(k get deployment "$name" -n "$NS" -o jsonpath='{.spec.selector}')
  tmpl=$(k get deployment "$name" -n "$NS" -o jsonpath='{.spec.template}')
  # Like the real controller, the ReplicaSet carries the pod labels (so the Deployment's
  # selector finds it), plus two of ours to find fakes again.
  labels=$(k get deployment "$name" -n "$NS" -o jsonpath='{.spec.template.metadata.labels}')
  labels="${labels#\{}"; labels="${labels%\}}"
  labels="{${labels}${labels:+,}\"karpctl.testbed/fake\":\"true\",\"karpctl.testbed/deployment\":\"$name\"}"
  # A ReplicaSet owned by the Deployment with the same pod template: Helm's --wait looks
  # for the Deployment's "new" ReplicaSet and its readiness. Nothing garbage-collects it.
  hash=$(printf '%s' "$tmpl" | sha256sum | cut -c1-10)
  rs="$name-$hash"
  if ! k get replicaset "$rs" -n "$NS" >/dev/null 2>&1; then
    k create -f - >/dev/null <<EOF
{"apiVersion":"apps/v1","kind":"ReplicaSet",
 "metadata":{"name":"$rs","namespace":"$NS","labels":$labels,
   "ownerReferences":[{"apiVersion":"apps/v1","kind":"Deployment","name":"$name","uid":"$uid","controller":true,"blockOwnerDeletion":true}]},
 "spec":{"replicas":$replicas,"selector":$sel,"template":$tmpl}}
EOF
  else
    k patch replicaset "$rs" -n "$NS" --type=merge -p "{\"spec\":{\"replicas\":$replicas}}" >/dev/null
  fi
  rsgen=$(k get replicaset "$rs" -n "$NS" -o jsonpath='{.metadata.generation}')
  k patch replicaset "$rs" -n "$NS" --subresource=status --type=merge -p \
    "{\"status\":{\"observedGeneration\":$rsgen,\"replicas\":$replicas,\"fullyLabeledReplicas\":$replicas,\"readyReplicas\":$replicas,\"availableReplicas\":$replicas}}" >/dev/null
  t=$(now)
  k patch deployment "$name" -n "$NS" --subresource=status --type=merge -p "{\"status\":{
    \"observedGeneration\":$gen,\"replicas\":$replicas,\"updatedReplicas\":$replicas,
    \"readyReplicas\":$replicas,\"availableReplicas\":$replicas,\"unavailableReplicas\":null,
    \"conditions\":[
      {\"type\":\"Available\",\"status\":\"True\",\"reason\":\"MinimumReplicasAvailable\",\"message\":\"faked by karpctl test bed\",\"lastUpdateTime\":\"$t\",\"lastTransitionTime\":\"$t\"},
      {\"type\":\"Progressing\",\"status\":\"True\",\"reason\":\"NewReplicaSetAvailable\",\"message\":\"ReplicaSet \\\"$rs\\\" has successfully progressed.\",\"lastUpdateTime\":\"$t\",\"lastTransitionTime\":\"$t\"}]}}" >/dev/null
  echo "deployment/$name in $NS: $replicas/$replicas available (generation $gen, replicaset $rs)"
}

fake_daemonset() {
  local name="$1"; shift; parse_ns "$@"
  local gen
  gen=$(k get daemonset "$name" -n "$NS" -o jsonpath='{.metadata.generation}')
  k patch daemonset "$name" -n "$NS" --subresource=status --type=merge -p "{\"status\":{
    \"observedGeneration\":$gen,\"desiredNumberScheduled\":$NODES,\"currentNumberScheduled\":$NODES,
    \"updatedNumberScheduled\":$NODES,\"numberReady\":$NODES,\"numberAvailable\":$NODES,\"numberMisscheduled\":0}}" >/dev/null
  echo "daemonset/$name in $NS: $NODES/$NODES ready (generation $gen)"
}

fake_conditions() { # RESOURCE NAME TYPE...
  local res="$1" name="$2"; shift 2
  local gen conds="" c
  gen=$(k get "$res" "$name" -o jsonpath='{.metadata.generation}')
  for c in "$@"; do conds+="${conds:+,}$(cond "$c" "$c" "$gen")"; done
  k patch "$res" "$name" --subresource=status --type=merge -p "{\"status\":{\"conditions\":[$conds]}}" >/dev/null
  echo "$res/$name: $* = True (generation $gen)"
}

fake_node() {
  local name="$1"; shift
  local labels="\"kubernetes.io/hostname\":\"$name\",\"kubernetes.io/os\":\"linux\",\"kubernetes.io/arch\":\"amd64\"" kv
  for kv in "$@"; do
    [[ "$kv" == *=* ]] || die "node labels are KEY=VALUE, got $kv"
    labels+=",\"${kv%%=*}\":\"${kv#*=}\""
  done
  if ! k get node "$name" >/dev/null 2>&1; then
    k create -f - >/dev/null <<EOF
{"apiVersion":"v1","kind":"Node","metadata":{"name":"$name","labels":{$labels}},"spec":{}}
EOF
  fi
  local t; t=$(now)
  k patch node "$name" --subresource=status --type=merge -p "{\"status\":{
    \"capacity\":{\"cpu\":\"4\",\"memory\":\"16Gi\",\"pods\":\"110\"},
    \"allocatable\":{\"cpu\":\"4\",\"memory\":\"16Gi\",\"pods\":\"110\"},
    \"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"KubeletReady\",\"message\":\"faked by karpctl test bed\",\"lastHeartbeatTime\":\"$t\",\"lastTransitionTime\":\"$t\"}]}}" >/dev/null
  echo "node/$name: Ready"
}

[[ $# -ge 2 ]] || die "usage: $0 {deployment|daemonset|nodepool|ec2nodeclass|node} NAME [args]"
what="$1"; shift
case "$what" in
  deployment|deploy) fake_deployment "$@" ;;
  daemonset|ds) fake_daemonset "$@" ;;
  nodepool) fake_conditions nodepools.karpenter.sh "$1" Ready NodeClassReady ValidationSucceeded NodeRegistrationHealthy ;;
  ec2nodeclass) fake_conditions ec2nodeclasses.karpenter.k8s.aws "$1" Ready AMIsReady SubnetsReady SecurityGroupsReady InstanceProfileReady ValidationSucceeded ;;
  node) fake_node "$@" ;;
  *) die "unknown kind $what" ;;
esac
