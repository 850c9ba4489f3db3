#!/usr/bin/env bash
# The project's test command (README "Tests"; CI runs exactly this).
# Installs and builds what it needs (cached outside the repo), then runs lint,
# the test beds' own smoke tests and every Rust test suite.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
export KARPCTL_CACHE="${KARPCTL_CACHE:-$HOME/.cache/karpctl}"
# Build output lives outside the checkout so fresh clones reuse compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KARPCTL_CACHE/target}"
mkdir -p "$KARPCTL_CACHE"

for tool in cargo python3 go openssl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is required (see README, Tests)" >&2; exit 1; }
done

t0=$(date +%s)
step() { printf '\n== %s (t+%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }

step "upstream: the pinned Karpenter and NVIDIA device plugin charts and CRDs from Go modules (cached)"
scripts/upstream.sh fetch
# The imported releases' facts (docs/karpenter) still say what their modules say.
for facts in docs/karpenter/*.facts; do
  v="$(basename "$facts" .facts)"
  scripts/karpenter-import.sh --check "$v" >/dev/null
done
step "test beds: AWS emulator venv (pinned, cached)"
scripts/testbed-aws.sh install
step "test beds: kube-apiserver, etcd, kubectl, helm from Go modules (cached after the first build)"
scripts/testbed-kube.sh build
step "test beds: the real Karpenter controller (kwok build) of the pinned release and of the upgrade test's start (cached)"
scripts/testbed-karpenter.sh build 1.15.0
scripts/testbed-karpenter.sh build 1.14.1
step "validators: cfn-lint venv and NVIDIA's device plugin config parser (pinned, cached)"
scripts/validators.sh install

step "clippy (warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings
# The offline core alone (what the fuzz targets link): it must build without the cloud clients.
cargo clippy --locked --lib --no-default-features -- -D warnings
step "import graph: no cycles between src/ modules (scripts/import-graph.py)"
python3 scripts/import-graph.py
python3 scripts/import-graph.py --files

step "AWS emulator smoke tests"
scripts/testbed-aws.sh test -q
step "Kubernetes test bed smoke test"
scripts/testbed-kube.sh smoke --dir "$(mktemp -d)/kube"

step "cargo test"
log="$KARPCTL_CACHE/last-cargo-test.log"
cargo test --locked 2>&1 | tee "$log"
# A short fuzzing pass (RELIABILITY.md, "Fuzzing"; scripts/fuzz.sh --seconds 600
# is the long one): fixed seed, KARPCTL_FUZZ_SECONDS per target (0 skips it).
fuzz_seconds="${KARPCTL_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" != 0 ]; then
  step "fuzz: ${fuzz_seconds}s per target over config, state and render (scripts/fuzz.sh)"
  scripts/fuzz.sh --seconds "$fuzz_seconds" --seed 1
fi
step "done"
# One closing line for the whole Rust suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "rust tests: %d passed, %d failed\n", p, f }' "$log"
