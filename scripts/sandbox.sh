#!/usr/bin/env bash
# The newcomer's sandbox: a seeded AWS emulator, a real kube-apiserver whose address
# the emulated EKS cluster reports, the controller simulator (testbed-sim) standing in
# for kube-controller-manager, the scheduler and the kubelets, and the real Karpenter
# controller (run by testbed-sim for the Deployment karpctl installs), so karpctl can
# run end to end.
#   ./scripts/sandbox.sh up      start all three (idempotent; builds/installs what is missing)
#   ./scripts/sandbox.sh down    stop them
#   ./scripts/sandbox.sh status  show what runs
# After `up`:  source .sandbox/env
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
sb="${KARPCTL_SANDBOX_DIR:-$repo/.sandbox}"
cluster="${KARPCTL_SANDBOX_CLUSTER:-karpctl-sandbox}"
aws_handle="$sb/aws/handle.json"
kube_dir="$sb/kube"
sim_pid="$sb/sim.pid"
sim_log="$sb/sim.log"
# The same target directory as scripts/test.sh, so the simulator reuses its build.
export KARPCTL_CACHE="${KARPCTL_CACHE:-$HOME/.cache/karpctl}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KARPCTL_CACHE/target}"
source "$repo/scripts/cargo-target.sh"
claim_target_dir "$CARGO_TARGET_DIR"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: $1 is required ($2)" >&2; exit 1; }
}

# True when the pid file names a live testbed-sim (guards against pid reuse).
sim_running() {
  local pid
  pid=$(cat "$sim_pid" 2>/dev/null) || return 1
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q testbed-sim
}

stop_sim() {
  local pid i
  if sim_running; then
    pid=$(cat "$sim_pid")
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do sim_running || break; sleep 0.1; done
    sim_running && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$sim_pid"
}

up() {
  need python3 "for the AWS emulator (moto from PyPI)"
  need cargo "to build the controller simulator"
  need go "to build kube-apiserver, etcd, kubectl and helm from Go modules"
  need openssl "to make the test bed's TLS certificates"
  mkdir -p "$sb/aws"
  echo "== Charts: the real Karpenter and NVIDIA device plugin charts from their Go modules (cached)"
  local name src
  for name in karpenter nvidia-device-plugin; do
    src="$("$repo/scripts/upstream.sh" path "$name")"
    rm -rf "$sb/charts/$name.tmp"; mkdir -p "$sb/charts"
    cp -r "$src" "$sb/charts/$name.tmp"
    rm -rf "$sb/charts/$name"; mv "$sb/charts/$name.tmp" "$sb/charts/$name"
  done
  echo "== Kubernetes: building (cached after the first run) and starting"
  "$repo/scripts/testbed-kube.sh" build
  # No CRDs: karpctl installs them from the chart, as it would on a fresh cluster.
  "$repo/scripts/testbed-kube.sh" start --dir "$kube_dir" --no-crds
  server=$(sed -n 's/^server=//p' "$kube_dir/state")
  echo "== AWS emulator: installing (cached) and starting"
  "$repo/scripts/testbed-aws.sh" install
  # The emulated EKS cluster runs the Kubernetes minor of the API server it points at.
  minor=$(sed -n 's/.*"kubernetes_version": *"v\([0-9]*\.[0-9]*\).*/\1/p' "$kube_dir/handle.json")
  "$repo/scripts/testbed-aws.sh" start --handle "$aws_handle" --cluster "$cluster" --k8s-version "$minor" \
    --cluster-endpoint "$server" --cluster-ca-file "$kube_dir/pki/ca.crt"
  {
    echo "# karpctl sandbox: source this file"
    cat "$kube_dir/env"
    "$repo/scripts/testbed-aws.sh" env --handle "$aws_handle"
    echo "export KARPCTL_CONFIG='$repo/examples/sandbox.yaml'"
    # The sandbox API server takes static tokens, not EKS tokens: karpctl connects with this.
    echo "export KARPCTL_KUBECONFIG='$kube_dir/kubeconfig'"
    # One build: `cargo run` after sourcing this reuses what the sandbox, the tests and install.sh build.
    echo "export CARGO_TARGET_DIR='$CARGO_TARGET_DIR'"
  } > "$sb/env.tmp"
  mv "$sb/env.tmp" "$sb/env"
  echo "== Karpenter controller: the real one (kwok build) from its Go module (cached after the first build)"
  "$repo/scripts/testbed-karpenter.sh" build
  echo "== Controller simulator: building (cargo, cached) and (re)starting"
  (cd "$repo" && cargo build --example testbed-sim)
  stop_sim # a running one may hold the token of an earlier bed
  # With the emulator's address, it also joins nodes to the managed nodegroup as it scales.
  ( eval "$("$repo/scripts/testbed-aws.sh" env --handle "$aws_handle")"
    exec setsid "$CARGO_TARGET_DIR/debug/examples/testbed-sim" --kubeconfig "$kube_dir/kubeconfig" \
      --eks-cluster "$cluster" --real-karpenter "$repo/scripts/testbed-karpenter.sh" --work-dir "$sb/controller" \
      </dev/null >>"$sim_log" 2>&1 ) &
  echo $! > "$sim_pid"
  sleep 0.5
  sim_running || { tail -n 20 "$sim_log" >&2; echo "error: testbed-sim exited (log: $sim_log)" >&2; exit 1; }
  cat <<MSG

Sandbox is up.
  source $sb/env
  karpctl validate && karpctl render | head      # config: examples/sandbox.yaml
  aws eks describe-cluster --name $cluster       # any AWS SDK or CLI honouring AWS_ENDPOINT_URL
  karpctl up && karpctl verify && karpctl status  # CRDs, chart, pools: karpctl installs them
  kubectl get nodepools,nodeclaims,nodes         # Ready, as the real controller reports them
Real: the API server, etcd, helm, the Karpenter and NVIDIA charts, and the Karpenter controller
(the kwok build of the pinned release: its EC2 fleet is in-process, launches become Node objects;
every other AWS call goes to the emulator; log: $sb/controller/). Simulated: AWS is moto with
karpctl's gap handlers (tests/testbed/README.md); testbed-sim (log: $sim_log) plays
kube-controller-manager, the scheduler and the kubelets (Deployments and DaemonSets become
ready, pods are bound and run; no containers run, no images are pulled).
Stop it with: ./scripts/sandbox.sh down
MSG
}

down() {
  stop_sim
  "$repo/scripts/testbed-aws.sh" stop --handle "$aws_handle" || true
  "$repo/scripts/testbed-kube.sh" stop --dir "$kube_dir" || true
  rm -f "$sb/env"
  echo "sandbox stopped"
}

status() {
  "$repo/scripts/testbed-aws.sh" status --handle "$aws_handle" || echo "aws emulator: not running"
  "$repo/scripts/testbed-kube.sh" status --dir "$kube_dir" >/dev/null && echo "kube-apiserver: running ($kube_dir)" || echo "kube-apiserver: not running"
  if sim_running; then echo "testbed-sim: running (pid $(cat "$sim_pid"), log $sim_log)"; else echo "testbed-sim: not running"; fi
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 64 ;;
esac
