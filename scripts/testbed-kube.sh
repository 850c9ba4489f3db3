#!/usr/bin/env bash
# Kubernetes half of the karpctl test bed: a real etcd + kube-apiserver (built from
# pinned Go modules), kubectl and helm, and the real Karpenter CRDs (scripts/upstream.sh).
#
#   scripts/testbed-kube.sh build             build (or reuse) binaries in the cache
#   scripts/testbed-kube.sh start [--dir D] [--no-crds]
#                                             start etcd + kube-apiserver, install CRDs (unless
#                                             --no-crds: then whoever is tested installs them)
#   scripts/testbed-kube.sh stop  [--dir D]   stop them and remove D
#   scripts/testbed-kube.sh restart-apiserver [--dir D]
#                                             kill kube-apiserver and start it again (same port,
#                                             flags and etcd): a control-plane restart
#   scripts/testbed-kube.sh status [--dir D]  print the handle, exit 1 when not running
#   scripts/testbed-kube.sh env   [--dir D]   print the env file (eval "$(... env)")
#   scripts/testbed-kube.sh crds  [--dir D]   (re)apply the Karpenter CRDs
#   scripts/testbed-kube.sh smoke [--dir D]   end-to-end smoke test (starts the bed if needed)
#   scripts/testbed-kube.sh bin               print the directory holding the binaries
#   scripts/testbed-kube.sh prune             delete cached builds other than the current one
#
# Nothing here runs controllers or kubelets. See tests/testbed/README.md "## Kubernetes".
set -euo pipefail

# Bump when the build recipe changes (it is part of the cache key).
SCRIPT_VERSION=1

# Pinned versions. KUBE_VERSION and ETCD_VERSION must agree with tests/testbed/kube/go.mod
# (the build checks this); HELM_VERSION is built from helm's own go.mod via `go install`.
KUBE_VERSION=v1.36.4
KUBE_BUILD_DATE=2026-08-20T11:51:43Z # module publication time of k8s.io/kubernetes@v1.36.4
ETCD_VERSION=v3.6.8
HELM_VERSION=v3.22.0
HELM_K8S_MINOR=37 # helm v3.22.0 is built against k8s.io/client-go v0.37.x

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KUBE_SRC="$REPO/tests/testbed/kube"
CACHE_ROOT="${KARPCTL_CACHE:-$HOME/.cache/karpctl}"

log() { [[ -n "${QUIET:-}" ]] || printf '[testbed-kube] %s\n' "$*" >&2; }
die() { printf '[testbed-kube] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------
go_env() {
  export GOTOOLCHAIN=local CGO_ENABLED=0
  export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
}

cache_key() {
  command -v go >/dev/null || die "go not found (need go >= 1.26 to build the test bed)"
  {
    echo "script=$SCRIPT_VERSION kube=$KUBE_VERSION etcd=$ETCD_VERSION helm=$HELM_VERSION"
    go env GOVERSION GOOS GOARCH
    cat "$KUBE_SRC/go.mod" "$KUBE_SRC/go.sum" "$KUBE_SRC/cmd/etcd/main.go"
  } | sha256sum | cut -c1-16
}

bin_dir() { echo "$CACHE_ROOT/kube-bin/$KUBE_VERSION-$(cache_key)"; }

cmd_build() {
  local out; out="$(bin_dir)"
  if [[ -f "$out/.complete" ]]; then
    log "binaries cached in $out"
    return 0
  fi
  mkdir -p "$CACHE_ROOT/kube-bin"
  # One builder at a time per cache; a second caller waits and then reuses the result.
  exec 9>"$CACHE_ROOT/kube-bin/.lock"
  flock 9
  if [[ -f "$out/.complete" ]]; then log "binaries cached in $out"; exec 9>&-; return 0; fi

  grep -q "k8s.io/kubernetes $KUBE_VERSION" "$KUBE_SRC/go.mod" || die "go.mod does not pin k8s.io/kubernetes $KUBE_VERSION"
  grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION" "$KUBE_SRC/go.mod" || die "go.mod does not pin etcd $ETCD_VERSION"

  local tmp="$out.tmp.$$" start end
  rm -rf "$tmp"; mkdir -p "$tmp"
  start=$(date +%s)
  log "cold build into $out (kube-apiserver, kubectl, etcd, helm); this takes a while on 2 cores"
  go_env
  local vpkg maj=${KUBE_VERSION#v}; maj=${maj%%.*}
  local min=${KUBE_VERSION#v*.}; min=${min%%.*}
  local ld="-s -w"
  for vpkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $vpkg.gitVersion=$KUBE_VERSION -X $vpkg.gitMajor=$maj -X $vpkg.gitMinor=$min"
    ld+=" -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=$KUBE_BUILD_DATE"
  done
  ( cd "$KUBE_SRC"
    go mod download
    go build -p 2 -ldflags "$ld" -o "$tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ./cmd/etcd
  ) || die "building kube-apiserver/kubectl/etcd failed"
  local hld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  hld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for vpkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    hld+=" -X $vpkg.k8sVersionMajor=1 -X $vpkg.k8sVersionMinor=$HELM_K8S_MINOR"
  done
  # `go install pkg@version` builds helm with its own go.mod/go.sum (checked against sum.golang.org).
  ( cd "$tmp" && GOFLAGS="-trimpath -buildvcs=false" GOBIN="$tmp" \
      go install -p 2 -ldflags "$hld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  ) || die "building helm $HELM_VERSION failed"
  end=$(date +%s)
  if ! { "$tmp/kube-apiserver" --version && "$tmp/etcd" --version \
    && "$tmp/kubectl" version --client && "$tmp/helm" version --short; } >/dev/null; then
    die "freshly built binaries do not run"
  fi
  echo "$((end - start))" > "$tmp/.build-seconds"
  touch "$tmp/.complete"
  rm -rf "$out"; mv "$tmp" "$out"
  exec 9>&-
  log "built in $((end - start))s: $out"
}

# Remove cached builds other than the current one (old go.mod/go.sum or script versions).
cmd_prune() {
  local keep d; keep="$(bin_dir)"
  for d in "$CACHE_ROOT"/kube-bin/*/; do
    d="${d%/}"
    [[ "$d" == "$keep" ]] && continue
    log "removing $d"; rm -rf "$d"
  done
}

# ---------------------------------------------------------------------------------------
# start / stop / status
# ---------------------------------------------------------------------------------------
DIR=""
parse_dir() {
  DIR="${KARPCTL_TESTBED_DIR:-$PWD/.sandbox}/kube"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dir) [[ $# -ge 2 ]] || die "--dir needs a value"; DIR="$2"; shift 2 ;;
      --dir=*) DIR="${1#--dir=}"; shift ;;
      *) die "unknown argument: $1" ;;
    esac
  done
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
}

# A free TCP port on 127.0.0.1 (the kernel picks it; tiny race until the server binds,
# which cmd_start covers by retrying with new ports).
free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
  else
    local p
    for _ in $(seq 1 200); do
      p=$((20000 + RANDOM % 40000))
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
    done
    die "no free port found"
  fi
}

# Read "key=value" from DIR/state (a shell-friendly twin of handle.json).
state_get() { sed -n "s/^$1=//p" "$DIR/state" 2>/dev/null | head -n1; }

# True when PID is alive and its command line mentions our DIR (guards against pid reuse).
pid_is_ours() {
  local pid="$1"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$DIR/"
}

is_running() {
  [[ -f "$DIR/state" ]] && pid_is_ours "$(state_get etcd_pid)" && pid_is_ours "$(state_get apiserver_pid)"
}

gen_pki() {
  local pki="$DIR/pki"
  mkdir -p "$pki"; chmod 700 "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=karpctl-testbed-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -new -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  cat > "$pki/apiserver.ext" <<EOF
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EOF
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  rm -f "$pki/apiserver.csr" "$pki/apiserver.ext"
}

wait_ready() { # url token ca timeout_s pid... (gives up early when one of the pids exits)
  local url="$1" token="$2" ca="$3" timeout="$4" i p
  shift 4
  for ((i = 0; i < timeout * 5; i++)); do
    if curl -fsS --max-time 2 --cacert "$ca" -H "Authorization: Bearer $token" "$url/readyz" >/dev/null 2>&1; then
      return 0
    fi
    for p in "$@"; do pid_is_ours "$p" || return 1; done
    sleep 0.2
  done
  return 1
}

# kube-apiserver: TLS on 127.0.0.1, static tokens, Node+RBAC authz, no controllers behind it.
# One definition for `start` and `restart-apiserver`, so a restart has the same flags.
launch_apiserver() { # bin api_port etcd_port; sets API_PID
  setsid "$1/kube-apiserver" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$2" \
    --etcd-servers "http://127.0.0.1:$3" \
    --tls-cert-file "$DIR/pki/apiserver.crt" --tls-private-key-file "$DIR/pki/apiserver.key" \
    --client-ca-file "$DIR/pki/ca.crt" \
    --token-auth-file "$DIR/pki/tokens.csv" \
    --authorization-mode Node,RBAC \
    --anonymous-auth=false \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$DIR/pki/sa.pub" --service-account-signing-key-file "$DIR/pki/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/16 \
    --endpoint-reconciler-type none \
    --enable-admission-plugins NodeRestriction \
    --allow-privileged=true \
    --profiling=false \
    --cert-dir "$DIR/pki" \
    --v 1 \
    </dev/null >>"$DIR/logs/kube-apiserver.log" 2>&1 &
  API_PID=$!
}

cmd_start() {
  local install_crds=1 a rest=()
  for a in "$@"; do
    if [[ "$a" == --no-crds ]]; then install_crds=0; else rest+=("$a"); fi
  done
  parse_dir "${rest[@]+"${rest[@]}"}"
  if is_running; then
    log "already running: $(state_get server) (dir $DIR)"
    return 0
  fi
  if [[ -e "$DIR/state" ]]; then log "stale state in $DIR; cleaning up"; stop_in_dir; mkdir -p "$DIR"; fi
  local bin; bin="$(bin_dir)"
  [[ -f "$bin/.complete" ]] || cmd_build
  local t0; t0=$(date +%s.%N)
  mkdir -p "$DIR/logs"
  gen_pki

  local admin_token noperm_token
  admin_token="admin-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  noperm_token="noperm-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  # token,user,uid,"groups"
  cat > "$DIR/pki/tokens.csv" <<EOF
$admin_token,karpctl-admin,karpctl-admin,"system:masters"
$noperm_token,karpctl-noperm,karpctl-noperm,"karpctl:testbed"
EOF
  chmod 600 "$DIR/pki/tokens.csv"

  local attempt etcd_port peer_port api_port etcd_pid api_pid ok=0
  for attempt in 1 2 3; do
    etcd_port=$(free_port); peer_port=$(free_port); api_port=$(free_port)
    rm -rf "$DIR/etcd"
    # etcd: plain HTTP, loopback only, single member, fsync off (throw-away test data).
    setsid "$bin/etcd" --name testbed --data-dir "$DIR/etcd" \
      --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
      --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
      --initial-cluster "testbed=http://127.0.0.1:$peer_port" --initial-cluster-state new \
      --unsafe-no-fsync --quota-backend-bytes 2147483648 --log-level warn \
      </dev/null >"$DIR/logs/etcd.log" 2>&1 &
    etcd_pid=$!
    launch_apiserver "$bin" "$api_port" "$etcd_port"
    api_pid=$API_PID
    if wait_ready "https://127.0.0.1:$api_port" "$admin_token" "$DIR/pki/ca.crt" 90 "$api_pid" "$etcd_pid"; then
      ok=1; break
    fi
    log "attempt $attempt: kube-apiserver did not become ready; tail of logs:"
    tail -n 15 "$DIR/logs/etcd.log" "$DIR/logs/kube-apiserver.log" >&2 || true
    kill "$api_pid" "$etcd_pid" 2>/dev/null || true
    wait "$api_pid" "$etcd_pid" 2>/dev/null || true
  done
  [[ $ok == 1 ]] || die "kube-apiserver failed to start (logs in $DIR/logs)"

  local server="https://127.0.0.1:$api_port" ca_b64
  ca_b64=$(base64 -w0 < "$DIR/pki/ca.crt")
  write_kubeconfig "$DIR/kubeconfig" "$server" "$ca_b64" karpctl-admin "$admin_token"
  write_kubeconfig "$DIR/kubeconfig-noperm" "$server" "$ca_b64" karpctl-noperm "$noperm_token"
  chmod 600 "$DIR/kubeconfig" "$DIR/kubeconfig-noperm"
  cat > "$DIR/env" <<EOF
export KUBECONFIG='$DIR/kubeconfig'
export KARPCTL_TESTBED_KUBE_DIR='$DIR'
export KARPCTL_TESTBED_KUBE_SERVER='$server'
export KARPCTL_TESTBED_KUBE_BIN='$bin'
export PATH='$bin':"\$PATH"
EOF
  cat > "$DIR/state" <<EOF
etcd_pid=$etcd_pid
apiserver_pid=$api_pid
server=$server
bin=$bin
EOF
  local t1; t1=$(date +%s.%N)
  cat > "$DIR/handle.json" <<EOF
{
  "kind": "karpctl-testbed-kube",
  "version": 1,
  "dir": "$DIR",
  "server": "$server",
  "kubeconfig": "$DIR/kubeconfig",
  "kubeconfig_noperm": "$DIR/kubeconfig-noperm",
  "env_file": "$DIR/env",
  "ca_file": "$DIR/pki/ca.crt",
  "admin_token": "$admin_token",
  "bin_dir": "$bin",
  "kubernetes_version": "$KUBE_VERSION",
  "etcd_version": "$ETCD_VERSION",
  "helm_version": "$HELM_VERSION",
  "apiserver": {"pid": $api_pid, "port": $api_port, "log": "$DIR/logs/kube-apiserver.log"},
  "etcd": {"pid": $etcd_pid, "client_port": $etcd_port, "peer_port": $peer_port, "log": "$DIR/logs/etcd.log"},
  "started_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "ready_seconds": $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
}
EOF
  log "kube-apiserver $KUBE_VERSION ready at $server in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s (dir $DIR)"
  if [[ $install_crds == 1 ]]; then
    cmd_crds_in_dir
  else
    log "--no-crds: Karpenter CRDs not installed"
  fi
  log "ready: source $DIR/env"
}

# Kill the kube-apiserver and start it again on the same port with the same flags,
# etcd untouched (its data stays): what a control-plane restart looks like to clients.
cmd_restart_apiserver() {
  parse_dir "$@"
  is_running || die "not running (dir $DIR)"
  local server api_port etcd_port token t0 t1
  server="$(state_get server)"; api_port="${server##*:}"
  etcd_port="$(sed -n 's/.*"etcd": {"pid": [0-9]*, "client_port": \([0-9]*\).*/\1/p' "$DIR/handle.json")"
  token="$(sed -n 's/.*"admin_token": "\([^"]*\)".*/\1/p' "$DIR/handle.json")"
  [[ -n "$etcd_port" && -n "$token" ]] || die "cannot read the etcd port or token from $DIR/handle.json"
  t0=$(date +%s.%N)
  kill_pid "$(state_get apiserver_pid)" kube-apiserver
  launch_apiserver "$(state_get bin)" "$api_port" "$etcd_port"
  wait_ready "$server" "$token" "$DIR/pki/ca.crt" 90 "$API_PID" "$(state_get etcd_pid)" \
    || die "kube-apiserver did not come back (log: $DIR/logs/kube-apiserver.log)"
  sed -i "s/^apiserver_pid=.*/apiserver_pid=$API_PID/" "$DIR/state"
  sed -i "s/\"apiserver\": {\"pid\": [0-9]*/\"apiserver\": {\"pid\": $API_PID/" "$DIR/handle.json"
  t1=$(date +%s.%N)
  log "kube-apiserver restarted at $server in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s (pid $API_PID)"
}

write_kubeconfig() { # file server ca_b64 user token
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: karpctl-testbed
  cluster:
    server: $2
    certificate-authority-data: $3
users:
- name: $4
  user:
    token: $5
contexts:
- name: karpctl-testbed
  context:
    cluster: karpctl-testbed
    user: $4
    namespace: default
current-context: karpctl-testbed
EOF
}

kill_pid() { # pid name
  local pid="$1" i
  pid_is_ours "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  # A zombie has an empty cmdline, so pid_is_ours also ends the wait for processes that
  # exited but whose (re)parent has not reaped them yet.
  for ((i = 0; i < 150; i++)); do
    pid_is_ours "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  log "$2 (pid $pid) ignored SIGTERM for 15s; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_in_dir() {
  kill_pid "$(state_get apiserver_pid)" kube-apiserver
  kill_pid "$(state_get etcd_pid)" etcd
  rm -rf "$DIR/etcd" "$DIR/pki" "$DIR/logs" "$DIR/work"
  rm -f "$DIR/state" "$DIR/handle.json" "$DIR/env" "$DIR/kubeconfig" "$DIR/kubeconfig-noperm"
  rmdir "$DIR" 2>/dev/null || true
}

cmd_stop() {
  parse_dir "$@"
  if [[ ! -f "$DIR/state" ]]; then log "nothing running in $DIR"; rmdir "$DIR" 2>/dev/null || true; return 0; fi
  stop_in_dir
  log "stopped and cleaned $DIR"
}

cmd_status() {
  parse_dir "$@"
  if is_running; then
    cat "$DIR/handle.json"
    return 0
  fi
  rmdir "$DIR" 2>/dev/null || true
  echo "not running (dir $DIR)"
  return 1
}

cmd_env() {
  parse_dir "$@"
  is_running || die "not running (dir $DIR); run: $0 start --dir $DIR"
  cat "$DIR/env"
}

# ---------------------------------------------------------------------------------------
# CRDs
# ---------------------------------------------------------------------------------------
# The CRDs of the pinned Karpenter release (scripts/upstream.sh caches them from the Go
# module), or KARPCTL_CRDS_DIR.
crds_dir() {
  if [[ -n "${KARPCTL_CRDS_DIR:-}" ]]; then echo "$KARPCTL_CRDS_DIR"; return; fi
  "$REPO/scripts/upstream.sh" path karpenter "" crds
}

cmd_crds_in_dir() {
  local d; d="$(crds_dir)"
  if [[ ! -d "$d" ]] || ! compgen -G "$d/*.yaml" >/dev/null; then
    log "Karpenter CRD directory $d is absent: skipping CRD install (set KARPCTL_CRDS_DIR)"
    return 0
  fi
  local kc=("$(state_get bin)/kubectl" --kubeconfig "$DIR/kubeconfig")
  local f args=() t0 t1 names
  for f in "$d"/*.yaml; do args+=(-f "$f"); done
  t0=$(date +%s.%N)
  "${kc[@]}" apply --server-side --field-manager karpctl-testbed "${args[@]}" >&2
  names=$("${kc[@]}" get crd -o name | grep -E '\.karpenter\.(sh|k8s\.aws)$' || true)
  # shellcheck disable=SC2086
  [[ -z "$names" ]] || "${kc[@]}" wait --for condition=Established --timeout 60s $names >&2
  t1=$(date +%s.%N)
  log "CRDs from $d established in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')s"
}

cmd_crds() {
  parse_dir "$@"
  is_running || die "not running (dir $DIR)"
  cmd_crds_in_dir
}

cmd_smoke() {
  local args=("$@")
  parse_dir "$@"
  local started=0
  if ! is_running; then cmd_start "${args[@]}"; started=1; fi
  local rc=0
  bash "$KUBE_SRC/smoke.sh" "$DIR" || rc=$?
  # Stop quietly so that "N passed, N failed" stays the last line of the output.
  if [[ $started == 1 && "${KARPCTL_KEEP_TESTBED:-0}" != 1 ]]; then QUIET=1 cmd_stop "${args[@]}"; fi
  return "$rc"
}

# ---------------------------------------------------------------------------------------
main() {
  local cmd="${1:-}"; shift || true
  case "$cmd" in
    build) cmd_build ;;
    bin) cmd_build >&2; bin_dir ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    restart-apiserver) cmd_restart_apiserver "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    crds) cmd_crds "$@" ;;
    smoke) cmd_smoke "$@" ;;
    prune) cmd_prune ;;
    *) die "usage: $0 {build|bin|prune|start|stop|restart-apiserver|status|env|crds|smoke} [--dir DIR] [--no-crds]" ;;
  esac
}

main "$@"
