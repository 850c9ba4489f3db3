#!/usr/bin/env bash
# Fuzzes karpctl's input readers with cargo-fuzz (fuzz/): `config` (the config
# loader on arbitrary bytes), `state` (the state reader) and `render` (whatever
# validates must render as data). Usage: scripts/fuzz.sh [--seconds N] [--seed N] [target…]
# Installs cargo-fuzz into the cache once, builds with a target directory of its
# own, seeds the corpus from examples/ at run time and prints, per target,
# executions, exec/s, corpus size, coverage and findings. Exits 1 on a finding.
# KARPCTL_FUZZ_TOOLCHAIN=stable forces the stable path (no sanitizer) on a
# machine that has nightly.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${KARPCTL_CACHE:-$HOME/.cache/karpctl}"
seconds=60
seed=()
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --seed) seed=("-seed=$2"); shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(config state render)

# cargo-fuzz, pinned by --locked and cached outside the checkout.
fuzz_root="$cache/cargo-fuzz"
if [ ! -x "$fuzz_root/bin/cargo-fuzz" ]; then
  echo "== installing cargo-fuzz into $fuzz_root (once)"
  cargo install --locked cargo-fuzz --root "$fuzz_root"
fi
export PATH="$fuzz_root/bin:$PATH"

# Nightly when this machine has it (AddressSanitizer); else stable without a
# sanitizer. cargo-fuzz passes nightly-only flags, which RUSTC_BOOTSTRAP=1
# allows on stable (CI machines cannot download toolchains).
if [ "${KARPCTL_FUZZ_TOOLCHAIN:-}" != stable ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly); sanitizer=()
else
  toolchain=(); sanitizer=(--sanitizer none); export RUSTC_BOOTSTRAP=1
fi
export CARGO_TARGET_DIR="$cache/fuzz/target${sanitizer:+-nosan}"
source "$repo/scripts/cargo-target.sh"
claim_target_dir "$CARGO_TARGET_DIR"
cd "$repo/fuzz"
# The committed fuzz/Cargo.lock is used as it is (cargo fuzz has no --locked).
cargo fetch --locked --quiet
echo "== building fuzz targets (${toolchain[*]:-stable} ${sanitizer[*]:-address sanitizer}) into $CARGO_TARGET_DIR"
cargo "${toolchain[@]}" fuzz build --fuzz-dir . "${sanitizer[@]}" >/dev/null

work="$cache/fuzz/runs"
mkdir -p "$work"
status=0
for t in "${targets[@]}"; do
  corpus="$work/corpus-$t"
  artifacts="$work/artifacts-$t"
  mkdir -p "$corpus" "$artifacts"
  seeds="$(mktemp -d)"
  # Findings are the artifacts this run writes (earlier ones stay for reference).
  touch "$seeds/.started"
  # Seeds are copied at run time, never committed.
  case "$t" in
    state)
      printf '{"version":1,"lineage":"0b7d1c9e-8f57-4d5e-9d1c-2f3b4a5c6d7e","serial":1,"tool_version":"0.1.0","cluster":"c","region":null,"steps":{}}\n' > "$seeds/empty.json"
      printf '{"version":1,"lineage":"0b7d1c9e-8f57-4d5e-9d1c-2f3b4a5c6d7e","serial":7,"tool_version":"0.1.0","cluster":"c","region":"us-west-2","steps":{"cfn-stack/Karpenter-c":{"kind":"cfn-stack","fingerprint":"sha256:00ff","status":"done","inputs":{"tags":{"a":"b"}},"outputs":{"outputs":{"NodeRoleArn":"arn:aws:iam::1:role/x"}},"error":null,"started_at":"2026-01-01T00:00:00Z","finished_at":"2026-01-01T00:00:01Z"},"amis/pins":{"kind":"amis","fingerprint":"f","status":"failed","inputs":[1,2.5,true,null],"outputs":null,"error":"ssm:GetParameters: ServiceUnavailable","started_at":null,"finished_at":null}}}\n' > "$seeds/steps.json" ;;
    *) cp "$repo"/examples/*.yaml "$seeds/" ;;
  esac
  log="$work/$t.log"
  echo "== fuzzing $t for ${seconds}s"
  set +e
  cargo "${toolchain[@]}" fuzz run --fuzz-dir . "${sanitizer[@]}" "$t" "$corpus" "$seeds" -- \
    -max_total_time="$seconds" "${seed[@]}" -max_len=65536 -rss_limit_mb=4096 -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  findings=$(find "$artifacts" -type f -newer "$seeds/.started" | wc -l)
  rm -rf "$seeds"
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)
  printf '%s: %s executions, %s exec/s, corpus %s files, %s, findings %s (rc %s)\n' \
    "$t" "$execs" "$rate" "$(find "$corpus" -type f | wc -l)" "${cov:-cov: ?}" "$findings" "$rc"
  if [ "$rc" -ne 0 ] || [ "$findings" -gt 0 ]; then
    status=1
    grep -m1 -A3 -E 'panicked|ERROR: libFuzzer|SUMMARY' "$log" || true
    echo "   artifacts: $artifacts (minimize: cargo fuzz tmin --fuzz-dir fuzz $t FILE)"
  fi
done
exit $status
