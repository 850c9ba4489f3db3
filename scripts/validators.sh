#!/usr/bin/env bash
# The upstream validators karpctl's rendered output is checked with (tests/it/validators.rs),
# installed and built once and cached:
#   - cfn-lint (PyPI, pinned with its closure in tests/testbed/cfn-lint/requirements.txt), in
#     its own venv: ${KARPCTL_CACHE:-~/.cache/karpctl}/venv-cfn-lint
#   - nvconfig (tests/testbed/nvconfig): NVIDIA's own device plugin config parser
#     (github.com/NVIDIA/k8s-device-plugin api/config/v1, pinned in its go.mod/go.sum),
#     built into ${KARPCTL_CACHE:-~/.cache/karpctl}/nvconfig-bin/<key>/nvconfig
# helm, the third one, comes from the Kubernetes test bed (scripts/testbed-kube.sh bin), and
# the real charts from scripts/upstream.sh.
#
#   scripts/validators.sh install            both (no-op when cached)
#   scripts/validators.sh path cfn-lint|nvconfig
#                                            print the executable, installing or building it first
#
# Environment: KARPCTL_CACHE (cache root), PYTHON (interpreter for the venv, default python3).
set -euo pipefail

# Bump when the build recipe changes (part of nvconfig's cache key).
SCRIPT_VERSION=1

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${KARPCTL_CACHE:-$HOME/.cache/karpctl}"
PYTHON="${PYTHON:-python3}"
REQUIREMENTS="$REPO/tests/testbed/cfn-lint/requirements.txt"
VENV="$CACHE/venv-cfn-lint"
STAMP="$VENV/.karpctl-requirements.sha256"
NV_SRC="$REPO/tests/testbed/nvconfig"

log() { printf '[validators] %s\n' "$*" >&2; }
die() { printf '[validators] error: %s\n' "$*" >&2; exit 1; }

venv_stamp() {
  # requirements + interpreter version: a new python also means a new venv
  { cat "$REQUIREMENTS"; "$PYTHON" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1
}

install_cfn_lint() {
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=/path/to/python3)"
  mkdir -p "$CACHE"
  local want; want="$(venv_stamp)"
  [[ -x "$VENV/bin/cfn-lint" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]] && return 0
  exec 9>"$CACHE/venv-cfn-lint.lock"
  flock 9
  if [[ -x "$VENV/bin/cfn-lint" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" ]]; then exec 9>&-; return 0; fi
  log "creating $VENV from $REQUIREMENTS"
  local start=$SECONDS
  # Built in place (a venv's scripts name their interpreter by absolute path); the stamp,
  # written last, marks it complete, so an interrupted install is redone.
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input --require-virtualenv \
    --no-deps -r "$REQUIREMENTS" || { rm -rf "$VENV"; die "pip install failed (is PyPI reachable?)"; }
  # --no-deps: the file is the whole closure; pip check proves nothing is missing from it.
  "$VENV/bin/python" -m pip check >/dev/null || die "the pinned closure is incomplete: $("$VENV/bin/python" -m pip check)"
  echo "$want" >"$STAMP"
  exec 9>&-
  log "cfn-lint $("$VENV/bin/cfn-lint" --version | cut -d' ' -f2) ready in $((SECONDS - start))s: $VENV"
}

nv_key() {
  command -v go >/dev/null || die "go not found (need go >= 1.23 to build nvconfig)"
  {
    echo "script=$SCRIPT_VERSION"
    go env GOVERSION GOOS GOARCH
    cat "$NV_SRC/go.mod" "$NV_SRC/go.sum" "$NV_SRC/main.go"
  } | sha256sum | cut -c1-16
}

nv_dir() { echo "$CACHE/nvconfig-bin/$(nv_key)"; }

build_nvconfig() {
  local out; out="$(nv_dir)"
  [[ -f "$out/.complete" ]] && return 0
  mkdir -p "$CACHE/nvconfig-bin"
  exec 9>"$CACHE/nvconfig-bin/.lock"
  flock 9
  if [[ -f "$out/.complete" ]]; then exec 9>&-; return 0; fi
  local tmp="$out.tmp.$$" start=$SECONDS
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "building nvconfig (NVIDIA's device plugin config parser) into $out"
  ( cd "$NV_SRC"
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
    go build -p 2 -ldflags "-s -w" -o "$tmp/nvconfig" .
  ) || { rm -rf "$tmp"; die "building nvconfig failed (the Go module proxy must be reachable the first time)"; }
  # Smoke: it must refuse a config with one replica, with the parser's words.
  printf 'version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: nvidia.com/gpu\n      replicas: 1\n' >"$tmp/smoke.yaml"
  if "$tmp/nvconfig" "$tmp/smoke.yaml" >/dev/null 2>"$tmp/smoke.err" || ! grep -q 'replicas must be >= 2' "$tmp/smoke.err"; then
    rm -rf "$tmp"; die "the freshly built nvconfig does not reject a bad config"
  fi
  rm -f "$tmp/smoke.yaml" "$tmp/smoke.err"
  echo "$((SECONDS - start))" >"$tmp/.build-seconds"
  touch "$tmp/.complete"
  rm -rf "$out"; mv "$tmp" "$out"
  exec 9>&-
  log "built in $((SECONDS - start))s: $out/nvconfig"
}

case "${1:-}" in
  install) install_cfn_lint; build_nvconfig ;;
  path)
    case "${2:-}" in
      cfn-lint) install_cfn_lint; echo "$VENV/bin/cfn-lint" ;;
      nvconfig) build_nvconfig; echo "$(nv_dir)/nvconfig" ;;
      *) die "usage: $0 path cfn-lint|nvconfig" ;;
    esac
    ;;
  *) die "usage: $0 install | path cfn-lint|nvconfig" ;;
esac
