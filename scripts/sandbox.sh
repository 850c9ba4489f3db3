#!/usr/bin/env bash
# The newcomer's sandbox: a seeded AWS emulator and a real kube-apiserver whose
# address the emulated EKS cluster reports, so karpctl can run end to end locally.
#   ./scripts/sandbox.sh up      start both (idempotent; builds/installs what is missing)
#   ./scripts/sandbox.sh down    stop both
#   ./scripts/sandbox.sh status  show what runs
# After `up`:  source .sandbox/env
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
sb="${KARPCTL_SANDBOX_DIR:-$repo/.sandbox}"
cluster="${KARPCTL_SANDBOX_CLUSTER:-karpctl-sandbox}"
aws_handle="$sb/aws/handle.json"
kube_dir="$sb/kube"

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: $1 is required ($2)" >&2; exit 1; }
}

up() {
  need python3 "for the AWS emulator (moto from PyPI)"
  need go "to build kube-apiserver, etcd, kubectl and helm from Go modules"
  need openssl "to make the test bed's TLS certificates"
  mkdir -p "$sb/aws"
  echo "== Kubernetes: building (cached after the first run) and starting"
  "$repo/scripts/testbed-kube.sh" build
  "$repo/scripts/testbed-kube.sh" start --dir "$kube_dir"
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
  } > "$sb/env.tmp"
  mv "$sb/env.tmp" "$sb/env"
  cat <<MSG

Sandbox is up.
  source $sb/env
  karpctl validate && karpctl render | head      # config: examples/sandbox.yaml
  aws eks describe-cluster --name $cluster       # any AWS SDK or CLI honouring AWS_ENDPOINT_URL
  kubectl get crds                               # the real Karpenter CRDs on a real API server
Simulated: AWS is moto with karpctl's gap handlers (tests/testbed/README.md); the API server is real
but has no controllers or kubelets, so nothing becomes Ready on its own.
Stop it with: ./scripts/sandbox.sh down
MSG
}

down() {
  "$repo/scripts/testbed-aws.sh" stop --handle "$aws_handle" || true
  "$repo/scripts/testbed-kube.sh" stop --dir "$kube_dir" || true
  rm -f "$sb/env"
  echo "sandbox stopped"
}

status() {
  "$repo/scripts/testbed-aws.sh" status --handle "$aws_handle" || echo "aws emulator: not running"
  "$repo/scripts/testbed-kube.sh" status --dir "$kube_dir" >/dev/null && echo "kube-apiserver: running ($kube_dir)" || echo "kube-apiserver: not running"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 64 ;;
esac
