#!/usr/bin/env bash
# The real Karpenter controller for the karpctl test bed: the AWS provider's kwok build
# (github.com/aws/karpenter-provider-aws/kwok: EC2 fleet faked in-process, every other AWS
# call to AWS_ENDPOINT_URL), built from a pinned module in tests/testbed/karpenter/<version>/.
#
#   scripts/testbed-karpenter.sh build [VERSION]   build (or reuse) the controller in the cache
#   scripts/testbed-karpenter.sh bin   [VERSION]   print the controller binary's path (builds if needed)
#   scripts/testbed-karpenter.sh crds  [VERSION]   print the directory holding that version's CRDs
#   scripts/testbed-karpenter.sh versions          list the pinned versions
#   scripts/testbed-karpenter.sh prune             delete stale cached builds of the versions pinned here
#   scripts/testbed-karpenter.sh smoke [VERSION]   end to end: emulator + kube bed + controller + sim
#
# VERSION defaults to 1.15.0 (KARPCTL_KARPENTER_VERSION). See tests/testbed/README.md,
# "Karpenter controller".
set -euo pipefail

# Bump when the build recipe changes (it is part of the cache key).
SCRIPT_VERSION=1
DEFAULT_VERSION="${KARPCTL_KARPENTER_VERSION:-1.15.0}"

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC_ROOT="$REPO/tests/testbed/karpenter"
CACHE_ROOT="${KARPCTL_CACHE:-$HOME/.cache/karpctl}"
PKG=github.com/aws/karpenter-provider-aws/kwok

log() { [[ -n "${QUIET:-}" ]] || printf '[testbed-karpenter] %s\n' "$*" >&2; }
die() { printf '[testbed-karpenter] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------
VERSION="" SRC=""
set_version() { # [VERSION]
  VERSION="${1:-$DEFAULT_VERSION}"
  VERSION="${VERSION#v}"
  SRC="$SRC_ROOT/$VERSION"
  [[ -f "$SRC/go.mod" && -f "$SRC/go.sum" ]] \
    || die "no pinned module for Karpenter $VERSION (expected $SRC/go.mod); pinned: $(list_versions | tr '\n' ' ')"
  grep -q "github.com/aws/karpenter-provider-aws v$VERSION\b" "$SRC/go.mod" \
    || die "$SRC/go.mod does not pin github.com/aws/karpenter-provider-aws v$VERSION"
}

list_versions() {
  local d
  for d in "$SRC_ROOT"/*/; do d="${d%/}"; [[ -f "$d/go.mod" ]] && echo "${d##*/}"; done
}

# The Go toolchain for a version: a `toolchain goX.Y.Z` line in its go.mod (a provider that
# needs a newer Go than the machine's) selects that toolchain, fetched through the module
# proxy, for this build only; otherwise the local Go is used and nothing is downloaded.
go_env() {
  local tc
  tc="$(sed -n 's/^toolchain \(go[0-9.]*\)$/\1/p' "$SRC/go.mod")"
  export GOTOOLCHAIN="${tc:-local}" CGO_ENABLED=0
  export GOFLAGS="-trimpath -buildvcs=false -mod=readonly"
}

cache_key() {
  command -v go >/dev/null || die "go not found (need go >= 1.26 to build the controller)"
  {
    echo "script=$SCRIPT_VERSION version=$VERSION"
    (go_env; cd "$SRC" && go env GOVERSION GOOS GOARCH)
    cat "$SRC/go.mod" "$SRC/go.sum"
  } | sha256sum | cut -c1-16
}

bin_dir() { echo "$CACHE_ROOT/karpenter-bin/$VERSION-$(cache_key)"; }

cmd_build() {
  local out; out="$(bin_dir)"
  if [[ -f "$out/.complete" ]]; then
    log "controller $VERSION cached in $out"
    return 0
  fi
  mkdir -p "$CACHE_ROOT/karpenter-bin"
  # One builder at a time per cache; a second caller waits and then reuses the result.
  exec 9>"$CACHE_ROOT/karpenter-bin/.lock"
  flock 9
  if [[ -f "$out/.complete" ]]; then log "controller $VERSION cached in $out"; exec 9>&-; return 0; fi

  local tmp="$out.tmp.$$" start end
  rm -rf "$tmp"; mkdir -p "$tmp"
  start=$(date +%s)
  log "cold build of $PKG@v$VERSION into $out; this takes a while on 2 cores"
  ( go_env
    cd "$SRC"
    log "Go: $(go env GOVERSION) (GOTOOLCHAIN=$GOTOOLCHAIN)"
    go mod download
    go build -p 2 -ldflags "-s -w -X sigs.k8s.io/karpenter/pkg/operator.Version=$VERSION" \
      -o "$tmp/controller" "$PKG"
  ) || { rm -rf "$tmp"; die "building the Karpenter $VERSION controller failed"; }
  end=$(date +%s)
  # --help parses the flags and exits 0 without touching a cluster or AWS.
  if ! "$tmp/controller" --help >/dev/null 2>&1; then
    rm -rf "$tmp"; die "the freshly built controller does not run"
  fi
  (go_env; cd "$SRC" && go env GOVERSION) > "$tmp/.go-version"
  echo "$((end - start))" > "$tmp/.build-seconds"
  touch "$tmp/.complete"
  rm -rf "$out"; mv "$tmp" "$out"
  exec 9>&-
  log "built in $((end - start))s: $out/controller"
}

# Remove stale cached builds (old go.mod/go.sum, Go or script version) of the versions pinned
# in this checkout. Builds of versions this checkout does not pin are left alone: the cache is
# shared with other checkouts, which may pin versions this one does not.
cmd_prune() {
  local v d keep
  for v in $(list_versions); do
    set_version "$v"; keep="$(bin_dir)"
    for d in "$CACHE_ROOT/karpenter-bin/$v-"*/; do
      [[ -d "$d" ]] || continue
      d="${d%/}"
      [[ "$d" == "$keep" || "$d" == *.tmp.* ]] && continue
      log "removing $d"; rm -rf "$d"
    done
  done
}

# The module's own CRDs (pkg/apis/crds), from the module cache (downloaded if needed).
crds_dir() {
  local dir
  dir="$(go_env; cd "$SRC" && go mod download -json "github.com/aws/karpenter-provider-aws@v$VERSION" \
    | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$dir" && -d "$dir/pkg/apis/crds" ]] || die "cannot find pkg/apis/crds of karpenter-provider-aws@v$VERSION"
  echo "$dir/pkg/apis/crds"
}

# ---------------------------------------------------------------------------------------
main() {
  local cmd="${1:-}"; shift || true
  case "$cmd" in
    build) set_version "${1:-}"; cmd_build ;;
    bin) set_version "${1:-}"; cmd_build >&2; echo "$(bin_dir)/controller" ;;
    crds) set_version "${1:-}"; crds_dir ;;
    versions) list_versions ;;
    prune) cmd_prune ;;
    smoke) set_version "${1:-}"; cmd_build; bash "$SRC_ROOT/smoke.sh" "$VERSION" "$(bin_dir)/controller" "$(crds_dir)" ;;
    *) die "usage: $0 {build|bin|crds|versions|prune|smoke} [VERSION]" ;;
  esac
}

main "$@"
