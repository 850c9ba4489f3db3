#!/usr/bin/env bash
# The newcomer's sandbox: a seeded AWS emulator, a real kube-apiserver whose address
# the emulated EKS cluster reports, and the controller simulator (testbed-sim) standing
# in for kube-controller-manager, kubelets and Karpenter, so karpctl can run end to end.
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
  echo "== Kubernetes: building (cached after the first run) and starting"
  "$repo/scripts/testbed-kube.sh" build
  if ! compgen -G "$repo/tests/testbed/kube/charts/karpenter/crds/*.yaml" >/dev/null; then
    echo "error: the fixture Karpenter chart has no CRDs: the real ones are read from ../shared/reference/karpenter-crds" >&2
    echo "help: set KARPCTL_CRDS_DIR to a directory with the Karpenter v1 CRD files and run this again" >&2
    exit 1
  fi
  # No CRDs: karpctl installs them from the chart, as it would on a fresh cluster.
  "$repo/scripts/testbed-kube.sh" start --dir "$kube_dir" --no-crds
  server=$(sed -n 's/^server=//p' "$kube_dir/state")
  echo "== AWS emulator: installing (cached) and starting"
  "$repo/scripts/testbed-aws.sh" install
  "$repo/scripts/testbed-aws.sh" start --handle "$aws_handle" --cluster "$cluster" \
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
  echo "== Controller simulator: building (cargo, cached) and (re)starting"
  (cd "$repo" && cargo build --example testbed-sim)
  stop_sim # a running one may hold the token of an earlier bed
  # With the emulator's address, it also joins nodes to the managed nodegroup as it scales.
  ( eval "$("$repo/scripts/testbed-aws.sh" env --handle "$aws_handle")"
    exec setsid "$CARGO_TARGET_DIR/debug/examples/testbed-sim" --kubeconfig "$kube_dir/kubeconfig" \
      --eks-cluster "$cluster" </dev/null >>"$sim_log" 2>&1 ) &
  echo $! > "$sim_pid"
  sleep 0.5
  sim_running || { tail -n 20 "$sim_log" >&2; echo "error: testbed-sim exited (log: $sim_log)" >&2; exit 1; }
  cat <<MSG

Sandbox is up.
  source $sb/env
  karpctl validate && karpctl render | head      # config: examples/sandbox.yaml
  aws eks describe-cluster --name $cluster       # any AWS SDK or CLI honouring AWS_ENDPOINT_URL
  karpctl up && karpctl verify && karpctl status  # CRDs, chart, pools: karpctl installs them
  kubectl get nodepools,nodeclaims,nodes         # Ready, as the simulator reports them
Simulated: AWS is moto with karpctl's gap handlers (tests/testbed/README.md). The API server is real;
testbed-sim (log: $sim_log) plays kube-controller-manager, kubelets and Karpenter: Deployments and
DaemonSets become ready, EC2NodeClasses and NodePools Ready, and pending pods for a pool get a
NodeClaim and a Node (no instances run, no images are pulled).
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
