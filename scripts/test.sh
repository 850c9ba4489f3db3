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
source scripts/cargo-target.sh
claim_target_dir "$CARGO_TARGET_DIR"

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
step "test beds: the real Karpenter controller (kwok build) of the pinned release (cached)"
scripts/testbed-karpenter.sh build 1.15.0
step "validators: cfn-lint venv and NVIDIA's device plugin config parser (pinned, cached)"
scripts/validators.sh install

step "AWS emulator smoke tests"
scripts/testbed-aws.sh test -q
step "Kubernetes test bed smoke test"
scripts/testbed-kube.sh smoke --dir "$(mktemp -d)/kube"

step "cargo test: building the test binaries"
cargo test --locked --no-run

# The upgrade test's older controller, lint and the fuzzing pass are CPU-bound
# while the end-to-end suite mostly waits on controllers, so they run beside it
# at the lowest priority (clippy and the fuzz targets have target directories of
# their own, so nothing waits on cargo's lock; the upgrade test asks
# testbed-karpenter.sh for its controller, which waits for this build's lock);
# their log is printed at the end. A short fuzzing pass (RELIABILITY.md,
# "Fuzzing"; scripts/fuzz.sh --seconds 600 is the long one): fixed seed,
# KARPCTL_FUZZ_SECONDS per target (0 skips it).
fuzz_seconds="${KARPCTL_FUZZ_SECONDS:-30}"
side_log="$KARPCTL_CACHE/last-lint-fuzz.log"
step "the 1.14.1 controller (cached), lint (scripts/lint.sh) and fuzz (${fuzz_seconds}s per target, scripts/fuzz.sh) at nice 19 beside the tests: $side_log"
setsid nice -n 19 bash -c 'set -e; t=$(date +%s)
  echo "== the real Karpenter 1.14.1 controller for the upgrade test"; scripts/testbed-karpenter.sh build 1.14.1
  echo "== controller took $(( $(date +%s) - t ))s"; t=$(date +%s)
  echo "== lint (clippy, import graph)"; scripts/lint.sh
  echo "== lint took $(( $(date +%s) - t ))s"; t=$(date +%s)
  if [ "$1" != 0 ]; then
    echo "== fuzz: $1s per target over config, state and render"
    scripts/fuzz.sh --seconds "$1" --seed 1
    echo "== fuzz took $(( $(date +%s) - t ))s"
  fi' side "$fuzz_seconds" >"$side_log" 2>&1 &
side=$!
# A failed suite ends the run: stop the side job with it.
trap 'kill -- -"$side" 2>/dev/null || true' EXIT

step "cargo test"
log="$KARPCTL_CACHE/last-cargo-test.log"
cargo test --locked 2>&1 | tee "$log"
step "waiting for lint and fuzz"
side_rc=0
wait "$side" || side_rc=$?
trap - EXIT
cat "$side_log"
if [ "$side_rc" != 0 ]; then
  echo "error: lint or fuzz failed (exit $side_rc; log: $side_log)" >&2
  exit "$side_rc"
fi
step "done"
# One closing line for the whole Rust suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "rust tests: %d passed, %d failed\n", p, f }' "$log"
