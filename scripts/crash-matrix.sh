#!/usr/bin/env bash
# The long crash matrix (issue 8; results in RELIABILITY.md, "Crash matrix").
#
#   ./scripts/crash-matrix.sh [SEED] [POINTS] [CHAIN]
#
# Runs the crash test of tests/it/crash.rs with more points than CI does: `karpctl up`
# and `karpctl rollback --purge --delete-crds` SIGKILLed (process group, helm included)
# at every step boundary of a full run in turn and at seeded random instants inside
# steps, each chain of CHAIN kills resumed after `karpctl state unlock <ID>`, then every
# resource counted on both beds. SEED (default: the date as YYYYMMDD) makes a run
# reproducible; POINTS is the number of kills per command (default 60: every boundary
# of both graphs at least once); CHAIN the kills before a run may finish (default 3).
# Prints one JSON line per point and a summary; the per-point log is kept in
# .sandbox/crash-matrix/SEED.jsonl. Needs the test beds (scripts/testbed-aws.sh install,
# scripts/testbed-kube.sh build) and the Karpenter CRDs beside the repo.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
export KARPCTL_CACHE="${KARPCTL_CACHE:-$HOME/.cache/karpctl}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KARPCTL_CACHE/target}"
source "$repo/scripts/cargo-target.sh"
claim_target_dir "$CARGO_TARGET_DIR"
seed="${1:-$(date -u +%Y%m%d)}"
points="${2:-60}"
chain="${3:-3}"
out="$repo/.sandbox/crash-matrix"
mkdir -p "$out"
log="$out/$seed.jsonl"
: > "$log"
start=$(date +%s)
set +e
KARPCTL_CRASH_SEED="$seed" KARPCTL_CRASH_POINTS="$points" KARPCTL_CRASH_CHAIN="$chain" KARPCTL_CRASH_LOG="$log" \
  cargo test --test it crash::up_and_rollback_killed -- --nocapture 2>&1 \
  | grep -E '^(crash|test |thread|seed|  )'
status=$?   # pipefail: cargo's status unless grep saw nothing
set -e
end=$(date +%s)
python3 - "$log" "$seed" "$((end - start))" <<'EOF'
import json, sys, collections
log, seed, secs = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(l) for l in open(log) if l.strip()]
for cmd in ("up", "rollback"):
    r = [x for x in rows if x["command"] == cmd]
    kills = [x for x in r if x["signal"] == "KILL"]
    killed = [x for x in kills if x["killed"]]
    ints = [x for x in r if x["signal"] == "INT"]
    at = collections.Counter(x["after"].split(" (")[0] for x in killed)
    print(f"{cmd}: {len(kills)} kill points, {len(killed)} killed ({sum(1 for x in killed if x['lock'])} left the lock, "
          f"{sum(1 for x in killed if x['inProgress'])} a step in progress); {sum(1 for x in ints if x['killed'])} of "
          f"{len(ints)} Ctrl-Cs stopped a run; kills after {len(at)} distinct boundaries")
    for b, n in sorted(at.items()):
        print(f"    {n:3d} x {b}")
print(f"seed {seed}: {len(rows)} points in {secs}s; log {log}")
EOF
exit "$status"
