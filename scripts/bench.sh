#!/usr/bin/env bash
# The benchmark of issue 9 (results in BENCHMARKS.md; never timed assertions in tests).
#
#   ./scripts/bench.sh      build karpctl (release), then in one run on fresh sandboxes:
#                           karpctl cold up, no-op up, up --skip-preflight, up --refresh,
#                           plan, plan --refresh, rollback; the same with
#                           scripts/bench/by-hand.sh (aws CLI, helm, kubectl, one process per
#                           call); API calls per command (emulator counter,
#                           apiserver_request_total); AMI lookups; render time for
#                           10/100/1,000 (and 2,000) node pools; peak RSS. Prints the tables and rewrites
#                           the results section of BENCHMARKS.md between its markers.
#
# Environment: BENCH_N (repeats of each fast karpctl command, 10), BENCH_N_BYHAND (by-hand
# re-runs and plans, 5), BENCH_N_COLD (cold runs of each way, each on a fresh sandbox, 3),
# BENCH_N_RENDER (render runs per size, 5), BENCH_NO_WRITE=1 (print only),
# KARPCTL_BENCH_DIR (scratch, default .sandbox/bench: its own sandbox, logs, results).
# The sandbox it starts lives in $KARPCTL_BENCH_DIR/sandbox, apart from the one
# `./scripts/sandbox.sh up` starts in .sandbox/, and is stopped on exit.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
export KARPCTL_CACHE="${KARPCTL_CACHE:-$HOME/.cache/karpctl}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KARPCTL_CACHE/target}"
source "$repo/scripts/cargo-target.sh"
claim_target_dir "$CARGO_TARGET_DIR"
N="${BENCH_N:-10}"
NB="${BENCH_N_BYHAND:-5}"
NR="${BENCH_N_RENDER:-5}"
NC="${BENCH_N_COLD:-3}"
work="${KARPCTL_BENCH_DIR:-$repo/.sandbox/bench}"
mkdir -p "$work"
work="$(cd "$work" && pwd)"
export KARPCTL_SANDBOX_DIR="$work/sandbox"
sb="$KARPCTL_SANDBOX_DIR"
res="$work/results"
logs="$work/logs"
# karpctl runs from here, with its own copy of examples/sandbox.yaml (see sandbox_fresh):
# state.path resolves from the config file's directory, so this run's state never
# touches anyone else's.
kdir="$work/karpctl-cwd"
venv="$KARPCTL_CACHE/venv-bench"
PY="$venv/bin/python"
STATS="$repo/scripts/bench/stats.py"
BYHAND="$repo/scripts/bench/by-hand.sh"
KB="$work/bin/karpctl"
sandbox_started=0
t_start=$(date +%s)

log() { printf '== %s (t+%ss)\n' "$*" "$(($(date +%s) - t_start))" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }
note_load() { printf '%s\t%s\n' "$1" "$(uptime | sed 's/.*load average: /load average /')" >>"$res/load.txt"; }
fact() { printf '%s\t%s\n' "$1" "$2" >>"$res/facts.tsv"; }
status() { printf '%s\t%s\n' "$1" "$2" >>"$res/status.tsv"; }
ns() { date +%s%N; }

# ---------------------------------------------------------------- setup

install_venv() {
  local req="$repo/scripts/bench/requirements.txt" want have
  want="$(cat "$req" <(python3 --version) | sha256sum | cut -c1-64)"
  have="$(cat "$venv/.bench-requirements.sha256" 2>/dev/null || true)"
  if [[ "$want" != "$have" || ! -x "$venv/bin/aws" ]]; then
    log "aws CLI: installing into $venv (PyPI)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$req"
    echo "$want" >"$venv/.bench-requirements.sha256"
  fi
}

build() {
  log "karpctl: cargo build --release"
  local t0 t1
  t0=$(ns)
  cargo build --release --locked --bin karpctl >"$logs/build.log" 2>&1 || { tail -n 30 "$logs/build.log" >&2; die "release build failed"; }
  t1=$(ns)
  fact "release build in this run" "$(awk -v n=$((t1 - t0)) 'BEGIN{printf "%.1f s", n/1e9}') (incremental: whatever $CARGO_TARGET_DIR held)"
  # A private copy: other builds into the shared target directory cannot swap it mid-run.
  mkdir -p "$work/bin"
  cp "$CARGO_TARGET_DIR/release/karpctl" "$KB.tmp" && mv "$KB.tmp" "$KB"
}

facts() {
  fact "date" "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  fact "commit" "$(git rev-parse --short HEAD)"
  local dirty
  dirty="$(git status --porcelain -- src tests Cargo.toml Cargo.lock | wc -l)"
  ((dirty == 0)) || fact "dirty" "$dirty files under src/, tests/ or Cargo.* modified or new; the binary was built from the working tree"
  fact "cpu" "$(lscpu | sed -n 's/^Model name: *//p' | head -n1)"
  fact "nproc" "$(nproc)"
  fact "memory" "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  fact "kernel" "$(uname -r)"
  fact "karpctl" "$("$KB" --version)"
  fact "aws CLI" "$("$venv/bin/aws" --version 2>&1)"
  fact "python" "$(python3 --version)"
  fact "render runs" "$NR"
  if [[ -x /usr/bin/time ]]; then
    fact "rss tool" "/usr/bin/time -f %M (GNU time: maximum resident set size)"
  else
    die "/usr/bin/time (GNU time) is needed for peak RSS"
  fi
}

# ---------------------------------------------------------------- sandbox

sim_pid() { cat "$sb/sim.pid"; }

stop_proxy() {
  local pid name
  for name in kproxy aproxy; do
    pid="$(cat "$sb/$name.pid" 2>/dev/null || true)"
    if [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q kproxy.py; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
    rm -f "$sb/$name.pid" "$sb/$name.port"
  done
}

sandbox_stop() {
  if [[ -f "$sb/sim.pid" ]]; then kill -CONT "$(sim_pid)" 2>/dev/null || true; fi
  stop_proxy
  "$repo/scripts/sandbox.sh" down >>"$logs/sandbox.log" 2>&1 || true
}

cleanup() {
  local rc=$?
  if ((sandbox_started)); then
    log "stopping the bench sandbox"
    sandbox_stop
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The simulator polls the API server ~3 times a second as the same user as karpctl, and
# the emulator's nodegroups every second. It is restarted with the same arguments behind two
# counting proxies (scripts/bench/kproxy.py), so its requests can be taken out of
# apiserver_request_total and of the emulator's counter.
start_proxy() { # name mode upstream [--ca FILE]
  local name="$1" i
  shift
  rm -f "$sb/$name.port"
  setsid python3 "$repo/scripts/bench/kproxy.py" --port-file "$sb/$name.port" --mode "$1" --upstream "$2" "${@:3}" \
    </dev/null >>"$logs/$name.log" 2>&1 &
  echo $! >"$sb/$name.pid"
  for ((i = 0; i < 100; i++)); do [[ -s "$sb/$name.port" ]] && return 0; sleep 0.1; done
  die "the counting proxy $name did not start (log: $logs/$name.log)"
}

sim_behind_proxy() {
  local old i args=() a next=""
  old="$(sim_pid)"
  # The arguments sandbox.sh gave it, with our kubeconfig instead of its own.
  while IFS= read -r -d '' a; do args+=("$a"); done <"/proc/$old/cmdline"
  kill -TERM "$old"
  for ((i = 0; i < 50; i++)); do [[ -e "/proc/$old" ]] || break; sleep 0.1; done
  start_proxy kproxy kube "$KARPCTL_TESTBED_KUBE_SERVER" --ca "$sb/kube/pki/ca.crt"
  start_proxy aproxy aws "$AWS_ENDPOINT_URL"
  sed -e "s#server: .*#server: http://127.0.0.1:$(cat "$sb/kproxy.port")#" -e '/certificate-authority-data/d' \
    "$sb/kube/kubeconfig" >"$sb/sim-kubeconfig"
  chmod 600 "$sb/sim-kubeconfig"
  local cmd=()
  for a in "${args[@]}"; do
    if [[ "$next" == kubeconfig ]]; then cmd+=("$sb/sim-kubeconfig"); next=""; continue; fi
    case "$a" in
      --kubeconfig) cmd+=("$a"); next=kubeconfig ;;
      --kubeconfig=*) cmd+=("--kubeconfig=$sb/sim-kubeconfig") ;;
      *) cmd+=("$a") ;;
    esac
  done
  AWS_ENDPOINT_URL="http://127.0.0.1:$(cat "$sb/aproxy.port")" setsid "${cmd[@]}" </dev/null >>"$sb/sim.log" 2>&1 &
  echo $! >"$sb/sim.pid" # sandbox.sh down stops it from here
  grep -q "^simulator" "$res/facts.tsv" || fact "simulator" "${cmd[*]}"
  sleep 1
  [[ -e "/proc/$(sim_pid)" ]] || die "testbed-sim behind the proxy exited (log: $sb/sim.log)"
}

# A fresh sandbox: stop ours, start it again (AWS seeded anew, an empty API server), no state.
sandbox_fresh() {
  log "sandbox: fresh start for $1"
  sandbox_stop
  rm -rf "$kdir"
  mkdir -p "$kdir"
  sandbox_started=1
  "$repo/scripts/sandbox.sh" up >"$logs/sandbox-up.$1.log" 2>&1 || { tail -n 30 "$logs/sandbox-up.$1.log" >&2; die "sandbox.sh up failed"; }
  # shellcheck disable=SC1091
  source "$sb/env"
  # The config beside this run's state: chart paths made absolute, state in $kdir/.sandbox/.
  sed -e "s#\.\./tests/#$repo/tests/#" -e "s#path: \.\./\.sandbox/karpctl\.state\.json#path: .sandbox/karpctl.state.json#" \
    "$repo/examples/sandbox.yaml" >"$kdir/sandbox.yaml"
  grep -qF "path: .sandbox/karpctl.state.json" "$kdir/sandbox.yaml" || die "examples/sandbox.yaml: state.path is not ../.sandbox/karpctl.state.json"
  export KARPCTL_CONFIG="$kdir/sandbox.yaml"
  export PATH="$venv/bin:$PATH"
  sim_behind_proxy
}

# ---------------------------------------------------------------- measuring

snap() { # file prefix: the API server's counts and the simulator's, at one instant
  kubectl get --raw /metrics | "$PY" "$STATS" kube-snap >"$1.kube"
  curl -fsS "http://127.0.0.1:$(cat "$sb/kproxy.port")/_kproxy/counts" >"$1.proxy"
  curl -fsS "http://127.0.0.1:$(cat "$sb/aproxy.port")/_kproxy/counts" >"$1.aproxy"
}

# sample_hwm PID FILE: while PID (/usr/bin/time) runs, read the VmHWM of the karpctl process
# under it from /proc every 100 ms; the last value read is karpctl's own peak RSS, apart
# from the helm processes it starts (which /usr/bin/time's %M includes). Builtins only.
sample_hwm() {
  local tpid="$1" out="$2" pid="" child comm k v hwm=0 i
  while kill -0 "$tpid" 2>/dev/null; do
    if [[ -z "$pid" ]]; then
      child="$tpid"
      for ((i = 0; i < 3; i++)); do # time → (timeout →) karpctl
        # (no trailing newline in that file: read answers 1 with the value read)
        { read -r child _ || true; } 2>/dev/null <"/proc/$child/task/$child/children" || break
        [[ -n "$child" ]] || break
        read -r comm 2>/dev/null <"/proc/$child/comm" || break
        if [[ "$comm" == karpctl ]]; then pid="$child"; break; fi
      done
    fi
    if [[ -n "$pid" ]]; then
      { while read -r k v _; do [[ "$k" == VmHWM: ]] && ((v > hwm)) && hwm=$v; done <"/proc/$pid/status"; } 2>/dev/null || true
    fi
    sleep 0.1
  done
  echo "$hwm" >"$out"
}

runs() { if [[ -f "$res/$1.ns" ]]; then wc -l <"$res/$1.ns"; else echo 0; fi; }

# measure LABEL OK_CODES CMD...: one timed run of CMD (wall time, peak RSS, API calls).
measure() {
  local label="$1" ok="$2" i base rc=0 t0 t1
  shift 2
  i=$(($(runs "$label") + 1))
  base="$res/$label.$i"
  kill -STOP "$(sim_pid)"; sleep 0.3
  snap "$base.before"
  curl -fsS -X DELETE "$AWS_ENDPOINT_URL/_testbed/requests" >/dev/null
  kill -CONT "$(sim_pid)"
  t0=$(ns)
  BYHAND_LOG="$base.calls" /usr/bin/time -f %M -o "$base.rss" "$@" >"$base.out" 2>"$base.err" &
  local tpid=$!
  if [[ -n "${SAMPLE_HWM:-}" ]]; then sample_hwm "$tpid" "$base.hwm"; fi
  wait "$tpid" || rc=$?
  t1=$(ns)
  kill -STOP "$(sim_pid)"; sleep 0.3
  snap "$base.after"
  curl -fsS "$AWS_ENDPOINT_URL/_testbed/requests" >"$base.emulator.json"
  kill -CONT "$(sim_pid)"
  "$PY" "$STATS" kube-diff "$base.before.kube" "$base.after.kube" "$base.before.proxy" "$base.after.proxy" >"$base.kube.json"
  "$PY" "$STATS" aws-diff "$base.emulator.json" "$base.before.aproxy" "$base.after.aproxy" >"$base.aws.json"
  if [[ " $ok " != *" $rc "* ]]; then
    MEASURE_RC=$rc
    return 1
  fi
  echo $((t1 - t0)) >>"$res/$label.ns"
  tail -n 1 "$base.rss" >>"$res/$label.rss"
  if [[ -f "$base.hwm" ]]; then cat "$base.hwm" >>"$res/$label.hwm"; fi
  printf '  %-34s run %2d: %s\n' "$label" "$i" "$(awk -v n=$((t1 - t0)) 'BEGIN{printf "%.3f s", n/1e9}')" >&2
}
must() { # measure, and stop the benchmark when the command fails
  measure "$@" || {
    local base="$res/$1.$(($(runs "$1") + 1))"
    tail -n 20 "$base.err" "$base.out" >&2
    die "$1 exited $MEASURE_RC (output: $base.out, $base.err)"
  }
}

# rss_runs LABEL CMD...: three untimed runs of CMD under peakrss.py (peak RSS with and
# without children) into $res/rss.LABEL.
rss_runs() {
  local label="$1" i
  shift
  for i in 1 2 3; do
    "$PY" "$repo/scripts/bench/peakrss.py" "$@" >>"$res/rss.$label" || die "$* failed under peakrss.py"
  done
}

# ---------------------------------------------------------------- render scaling

render_scaling() {
  log "render: 10 / 100 / 1,000 / 2,000 node pools, $NR runs each"
  local dir="$work/render" n i t0 t1
  mkdir -p "$dir"
  : >"$res/render.pools"
  # 2,000 pools (~0.9 MB) is about the most the 1 MiB config-file limit allows: the
  # point that tells whether growth past 1,000 stays linear.
  for n in 10 100 1000 2000; do
    "$PY" "$STATS" gen-config "$n" "$dir/pools-$n.yaml"
    "$KB" validate -c "$dir/pools-$n.yaml" >"$logs/render-validate-$n.log" 2>&1 || { cat "$logs/render-validate-$n.log" >&2; die "generated $n-pool config is invalid"; }
    wc -c <"$dir/pools-$n.yaml" >"$res/render.$n.bytes"
    "$KB" render -c "$dir/pools-$n.yaml" >"$dir/out-$n.yaml" 2>/dev/null # warm the page cache
    [[ "$(grep -c '^kind: NodePool' "$dir/out-$n.yaml")" == "$n" ]] || die "render of $n pools did not give $n NodePools"
    for ((i = 0; i < NR; i++)); do
      t0=$(ns)
      "$KB" render -c "$dir/pools-$n.yaml" >/dev/null 2>&1
      t1=$(ns)
      echo $((t1 - t0)) >>"$res/render.$n.ns"
      /usr/bin/time -f %M -o "$dir/rss" "$KB" render -c "$dir/pools-$n.yaml" >/dev/null 2>&1
      tail -n 1 "$dir/rss" >>"$res/render.$n.rss"
    done
    echo "$n" >>"$res/render.pools"
    if [[ "$n" == 1000 ]]; then rss_runs render "$KB" render -c "$dir/pools-$n.yaml"; fi
    printf '  render %5d pools: median %s\n' "$n" "$(sort -n "$res/render.$n.ns" | awk '{a[NR]=$1} END {printf "%.1f ms", a[int((NR+1)/2)]/1e6}')" >&2
  done
}

# ---------------------------------------------------------------- the two ways

karpctl_phase() {
  local c
  for ((c = 1; c <= NC; c++)); do
    sandbox_fresh "karpctl-$c"
    ((c > 1)) || note_load "karpctl phase start"
    cd "$kdir"
    rm -f .sandbox/karpctl.state.json .sandbox/karpctl.state.json.lock # state.path of $kdir/sandbox.yaml
    log "karpctl: cold up ($c of $NC)"
    SAMPLE_HWM=1 must karpctl.cold_up 0 "$KB" up
    cd "$repo"
  done
  # The last fresh sandbox, now installed, serves every later command.
  fact "kubectl" "$(kubectl version --client 2>/dev/null | head -n1)"
  fact "helm" "$(helm version --short 2>/dev/null)"
  fact "kube-apiserver" "$(kubectl version 2>/dev/null | sed -n 's/^Server Version: //p')"
  cd "$kdir"
  log "karpctl: no-op up ×$N"
  for ((i = 0; i < N; i++)); do must karpctl.noop_up 0 "$KB" up; done
  log "karpctl: up --skip-preflight ×$N"
  for ((i = 0; i < N; i++)); do must karpctl.noop_up_skip_preflight 0 "$KB" up --skip-preflight; done
  log "karpctl: up --refresh ×$N"
  for ((i = 0; i < N; i++)); do SAMPLE_HWM=1 must karpctl.refresh 0 "$KB" up --refresh; done
  log "karpctl: plan ×$N"
  for ((i = 0; i < N; i++)); do must karpctl.plan 0 "$KB" plan; done
  log "karpctl: plan --refresh ×$N"
  for ((i = 0; i < N; i++)); do must karpctl.plan_refresh 0 "$KB" plan --refresh; done
  log "karpctl: peak RSS runs (untimed)"
  rss_runs noop_up "$KB" up
  rss_runs noop_up_skip_preflight "$KB" up --skip-preflight
  rss_runs plan "$KB" plan

  # AMI lookups: the sandbox config (2 AMIs) from cold up, and `amis` on a 12-AMI config.
  local ssm
  ssm="$("$PY" -c 'import json,sys; print(sum(v for k, v in json.load(open(sys.argv[1]))["counts"].items() if k.startswith("ssm:")))' "$res/karpctl.cold_up.1.aws.json")"
  printf 'cold up, examples/sandbox.yaml\t2\t4\t%s\tok\n' "$ssm" >>"$res/ami.tsv"
  local amis
  amis="$("$PY" "$STATS" ami-config "$work/ami12.yaml" karpctl-sandbox .sandbox/ami12.state.json)"
  must karpctl.amis12 0 "$KB" amis -c "$work/ami12.yaml"
  ssm="$("$PY" -c 'import json,sys; print(sum(v for k, v in json.load(open(sys.argv[1]))["counts"].items() if k.startswith("ssm:")))' "$res/karpctl.amis12.1.aws.json")"
  local found ok=ok
  found="$(grep -c ' ami-' "$res/karpctl.amis12.1.out" || true)"
  [[ "$found" == "$amis" ]] || ok="only $found of $amis AMIs resolved"
  # shellcheck disable=SC2016 # backticks are Markdown
  printf '`karpctl amis`, %s classes (al2023, bottlerocket, al2; standard/nvidia/neuron; amd64/arm64)\t%s\t%s\t%s\t%s\n' \
    "$amis" "$amis" $((amis * 2)) "$ssm" "$ok" >>"$res/ami.tsv"

  log "idle baseline: what the counters show with no command (sleep 1) ×5"
  for ((i = 0; i < 5; i++)); do must idle 0 sleep 1; done

  log "karpctl: rollback"
  local rc=0
  "$KB" rollback --dry-run >"$logs/rollback-dry-run.log" 2>&1 || rc=$?
  if ((rc == 4)) || grep -qi 'not implemented' "$logs/rollback-dry-run.log"; then
    status karpctl.rollback "not yet (\`karpctl rollback\` answers not implemented)"
  elif ((rc != 0)); then
    status karpctl.rollback "failed: \`rollback --dry-run\` exited $rc: $(grep -m1 '^error' "$logs/rollback-dry-run.log" || tail -n1 "$logs/rollback-dry-run.log")"
  else
    if ! SAMPLE_HWM=1 measure karpctl.rollback 0 timeout -s INT 600 "$KB" rollback --yes; then
      status karpctl.rollback "failed (exit $MEASURE_RC): $(grep -m1 '^error' "$res/karpctl.rollback.1.err" | cut -c1-200)"
    fi
  fi
  cd "$repo"
  note_load "karpctl phase end"
}

byhand_phase() {
  export BYHAND_FILES="$work/byhand-files" CLUSTER_NAME=karpctl-sandbox K8S_VERSION=1.31 KARPENTER_NAMESPACE=kube-system \
    KARPENTER_CHART="$repo/tests/testbed/kube/charts/karpenter" \
    DEVICE_PLUGIN_CHART="$repo/tests/testbed/kube/charts/nvidia-device-plugin" \
    NODEGROUP=system NG_MIN=1 NG_DESIRED=3 NG_MAX=4
  local c
  for ((c = 1; c <= NC; c++)); do
    sandbox_fresh "by-hand-$c"
    ((c > 1)) || note_load "by-hand phase start"
    log "by-hand: cold run ($c of $NC)"
    must byhand.cold_up 0 bash "$BYHAND" up
  done
  log "by-hand: re-run ×$NB"
  for ((i = 0; i < NB; i++)); do must byhand.rerun 0 bash "$BYHAND" up; done
  log "by-hand: read-only plan subset ×$NB"
  for ((i = 0; i < NB; i++)); do must byhand.plan 0 bash "$BYHAND" plan; done
  log "by-hand: rollback"
  must byhand.rollback 0 bash "$BYHAND" rollback
  note_load "by-hand phase end"
}

# The by-hand script's inputs, as a user would have them: the template, the Helm values
# and the manifests, with the AMI versions left to fill in (the guide's envsubst).
byhand_files() {
  local dir="$work/byhand-files" out="$work/render-out" f
  rm -rf "$dir" "$out"
  mkdir -p "$dir"
  KARPCTL_CONFIG="$repo/examples/sandbox.yaml" "$KB" render --out "$out" \
    --ami default=al2023@v19700101 --ami gpu=al2023@v19700102 >"$logs/byhand-render.log" 2>&1 \
    || { cat "$logs/byhand-render.log" >&2; die "karpctl render failed"; }
  cp "$out/cloudformation/karpenter.json" "$dir/karpenter.json"
  cp "$out/helm/karpenter-values.yaml" "$out/helm/nvidia-device-plugin-values.yaml" "$dir/"
  sed -n 's/^- //p' "$out/kustomization.yaml" | while read -r f; do
    echo "---"
    cat "$out/$f"
  done >"$dir/manifests.yaml"
}

# ---------------------------------------------------------------- main

rm -rf "$res" "$logs"
mkdir -p "$res" "$logs"
note_load "start"
install_venv
build
facts
render_scaling
byhand_files
karpctl_phase
byhand_phase
sandbox_stop
sandbox_started=0
note_load "end"
fact "benchmark wall time" "$(($(date +%s) - t_start)) s"

"$PY" "$STATS" report "$res" >"$work/results.md"
cat "$work/results.md"
if [[ -z "${BENCH_NO_WRITE:-}" ]]; then
  "$PY" "$STATS" splice "$repo/BENCHMARKS.md" "$work/results.md"
  log "results section of BENCHMARKS.md rewritten"
fi
