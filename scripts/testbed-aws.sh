#!/usr/bin/env bash
# AWS emulator for karpctl tests: moto (pinned) behind a small middleware, seeded like a real EKS account.
#
#   scripts/testbed-aws.sh install                 create/refresh the pinned venv (no-op when up to date)
#   scripts/testbed-aws.sh start [--handle PATH] [launcher options...]
#                                                  start in the background, wait until it answers
#   scripts/testbed-aws.sh stop [--handle PATH]    stop it (SIGTERM, then wait for a clean exit)
#   scripts/testbed-aws.sh status [--handle PATH]  print endpoint and health, exit 1 when not running
#   scripts/testbed-aws.sh env [--handle PATH]     print the exports a client needs (eval "$(... env)")
#   scripts/testbed-aws.sh test [pytest args...]   run the emulator's smoke tests
#
# Environment:
#   KARPCTL_CACHE        cache root (default $HOME/.cache/karpctl); the venv lives in $KARPCTL_CACHE/venv-aws
#   KARPCTL_AWS_HANDLE   default handle path (default <repo>/.sandbox/testbed-aws/handle.json)
#   PYTHON               interpreter used to create the venv (default python3)
#
# Launcher options (passed through by `start`): --port N (0 = free port), --cluster NAME, --region R,
# --k8s-version 1.31, --auth-mode CONFIG_MAP|API_AND_CONFIG_MAP|API, --[no-]pod-identity-agent,
# --cluster-endpoint URL, --cluster-ca-file PEM, --transition-polls N, --verbose.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
AWS_DIR="$REPO/tests/testbed/aws"
REQUIREMENTS="$AWS_DIR/requirements.txt"
CACHE="${KARPCTL_CACHE:-$HOME/.cache/karpctl}"
VENV="$CACHE/venv-aws"
VPY="$VENV/bin/python"
STAMP="$VENV/.karpctl-requirements.sha256"
PYTHON="${PYTHON:-python3}"
DEFAULT_HANDLE="${KARPCTL_AWS_HANDLE:-$REPO/.sandbox/testbed-aws/handle.json}"
START_TIMEOUT_S="${KARPCTL_AWS_START_TIMEOUT:-60}"

die() { echo "testbed-aws: $*" >&2; exit 1; }
log() { echo "testbed-aws: $*" >&2; }

wanted_stamp() {
  # requirements + interpreter version: a new python also means a new venv
  { cat "$REQUIREMENTS"; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}

cmd_install() {
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=/path/to/python3)"
  mkdir -p "$CACHE"
  local want
  want="$(wanted_stamp)"
  if [[ -x "$VPY" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    log "venv up to date: $VENV"
    return 0
  fi
  # one installer at a time (parallel CI jobs share the cache)
  exec 9>"$CACHE/venv-aws.lock"
  flock 9
  if [[ -x "$VPY" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then
    log "venv up to date: $VENV"
    return 0
  fi
  log "creating $VENV from $REQUIREMENTS"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VPY" -m pip install --quiet --disable-pip-version-check --no-input --require-virtualenv \
    -r "$REQUIREMENTS" || { rm -rf "$VENV"; die "pip install failed (is PyPI reachable?)"; }
  echo "$want" >"$STAMP"
  log "venv ready: $VENV"
}

# --handle PATH may appear anywhere in the arguments; everything else is passed through.
HANDLE="$DEFAULT_HANDLE"
PASS=()
parse_handle() {
  PASS=()
  while (($#)); do
    case "$1" in
      --handle) [[ $# -ge 2 ]] || die "--handle needs a path"; HANDLE="$2"; shift 2 ;;
      --handle=*) HANDLE="${1#--handle=}"; shift ;;
      *) PASS+=("$1"); shift ;;
    esac
  done
  [[ "$HANDLE" = /* ]] || HANDLE="$PWD/$HANDLE"
}

# prints "pid endpoint" from the handle, or nothing
handle_info() {
  [[ -f "$HANDLE" ]] || return 0
  "$PYTHON" - "$HANDLE" <<'PY' 2>/dev/null || true
import json, sys
h = json.load(open(sys.argv[1]))
print(h["pid"], h["endpoint"])
PY
}

healthy() { # healthy ENDPOINT
  "$PYTHON" - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/_testbed/health", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
PY
}

running_pid() { # prints the pid when the handle points at a live, healthy emulator
  local info pid endpoint
  info="$(handle_info)"
  [[ -n "$info" ]] || return 1
  read -r pid endpoint <<<"$info"
  kill -0 "$pid" 2>/dev/null || return 1
  healthy "$endpoint" || return 1
  echo "$pid"
}

cmd_start() {
  parse_handle "$@"
  cmd_install
  if pid="$(running_pid)"; then
    log "already running (pid $pid), handle $HANDLE"
    handle_info | cut -d' ' -f2
    return 0
  fi
  mkdir -p "$(dirname "$HANDLE")"
  rm -f "$HANDLE"
  local logfile="${HANDLE%.json}.log"
  # setsid: the emulator outlives this shell and is not hit by its terminal's signals
  setsid "$VPY" "$AWS_DIR/launcher.py" --handle "$HANDLE" "${PASS[@]}" >"$logfile" 2>&1 </dev/null &
  local pid=$!
  "$VPY" - "$HANDLE" "$pid" "$START_TIMEOUT_S" "$logfile" <<'PY' || { kill "$pid" 2>/dev/null || true; exit 1; }
import json, os, sys, time, urllib.request
handle, pid, timeout, logfile = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + timeout
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.stderr.write(f"testbed-aws: launcher exited during start-up; log {logfile}:\n")
        sys.stderr.write(open(logfile).read())
        sys.exit(1)
    if os.path.exists(handle):
        endpoint = json.load(open(handle))["endpoint"]
        try:
            with urllib.request.urlopen(endpoint + "/_testbed/health", timeout=2) as r:
                if r.status == 200:
                    print(endpoint)
                    sys.exit(0)
        except OSError:
            pass
    if time.monotonic() > deadline:
        sys.stderr.write(f"testbed-aws: not ready after {timeout:.0f}s; log {logfile}\n")
        sys.exit(1)
    time.sleep(0.05)
PY
  log "running (pid $pid), handle $HANDLE, log $logfile"
}

cmd_stop() {
  parse_handle "$@"
  local info pid endpoint
  info="$(handle_info)"
  if [[ -z "$info" ]]; then
    log "not running (no handle at $HANDLE)"
    return 0
  fi
  read -r pid endpoint <<<"$info"
  if ! kill -0 "$pid" 2>/dev/null; then
    log "stale handle (pid $pid is gone); removing $HANDLE"
    rm -f "$HANDLE"
    return 0
  fi
  kill -TERM "$pid"
  # wait for the process to exit (it removes its handle on the way out)
  "$PYTHON" - "$pid" <<'PY' || { log "pid $pid ignored SIGTERM for 20s; sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
import os, sys, time
pid, deadline = int(sys.argv[1]), time.monotonic() + 20

def gone() -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:  # an exited child of another parent may linger as a zombie
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True

while time.monotonic() < deadline:
    if gone():
        sys.exit(0)
    time.sleep(0.05)
sys.exit(1)
PY
  rm -f "$HANDLE"
  log "stopped (pid $pid)"
}

cmd_status() {
  parse_handle "$@"
  if pid="$(running_pid)"; then
    echo "running pid=$pid endpoint=$(handle_info | cut -d' ' -f2) handle=$HANDLE"
  else
    echo "not running (handle $HANDLE)"
    return 1
  fi
}

cmd_env() {
  parse_handle "$@"
  [[ -f "$HANDLE" ]] || die "no handle at $HANDLE (run: $0 start)"
  "$PYTHON" - "$HANDLE" <<'PY'
import json, shlex, sys
env = json.load(open(sys.argv[1]))["env"]
for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_DEFAULT_REGION"):
    print(f"export {key}={shlex.quote(env[key])}")
PY
}

cmd_test() {
  cmd_install
  cd "$AWS_DIR"
  exec "$VPY" -m pytest -p no:cacheprovider "$@" "$AWS_DIR"
}

main() {
  local cmd="${1:-help}"
  shift || true
  case "$cmd" in
    install) cmd_install ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    env) cmd_env "$@" ;;
    test) cmd_test "$@" ;;
    help | -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$cmd' (install|start|stop|status|env|test|help)" ;;
  esac
}

main "$@"
