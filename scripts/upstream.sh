#!/usr/bin/env bash
# The real upstream artifacts karpctl is tested against, taken from the Go module proxy
# (the only place this project fetches from besides the package registries) and cached:
#   - Karpenter's controller chart and CRDs: github.com/aws/karpenter-provider-aws@vX.Y.Z
#     (charts/karpenter, pkg/apis/crds)
#   - NVIDIA's device plugin chart: github.com/NVIDIA/k8s-device-plugin@vX.Y.Z
#     (deployments/helm/nvidia-device-plugin)
#
#   scripts/upstream.sh fetch [karpenter|nvidia-device-plugin] [VERSION]   fetch (no-op when cached)
#   scripts/upstream.sh path  karpenter|nvidia-device-plugin [VERSION] [chart|crds|module]
#                                                   print a directory, fetching it first if needed
#   scripts/upstream.sh versions                    the pinned versions (NAME=VERSION lines)
#
# Two things differ from the published charts, both because of how Go module zips are made:
#   - a module zip drops symbolic links, and the Karpenter chart's crds/ is a set of links
#     to pkg/apis/crds: the cache puts copies of those files back into crds/;
#   - the chart's Chart.yaml in a release tag can lag the tag (v1.14.1 says 1.13.0; the
#     release job bumps it when it publishes): the cache stamps version and appVersion with
#     the tag and records the original in the annotation karpctl.io/module-chart-version.
# Nothing else is changed. The cache is keyed by version and this script's RECIPE.
set -euo pipefail

RECIPE=1
# The versions karpctl pins by default (src/config/types.rs DEFAULT_*_VERSION).
KARPENTER_VERSION=1.15.0
DEVICE_PLUGIN_VERSION=0.17.4
# The Go toolchain for modules that need a newer Go than the machine's (the one the module
# proxy serves for that; see README "Tests").
NEWER_GO=go1.27.3

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${KARPCTL_CACHE:-$HOME/.cache/karpctl}/upstream"

log() { printf '[upstream] %s\n' "$*" >&2; }
die() { printf '[upstream] error: %s\n' "$*" >&2; exit 1; }

module_of() {
  case "$1" in
    karpenter) echo github.com/aws/karpenter-provider-aws ;;
    nvidia-device-plugin) echo github.com/NVIDIA/k8s-device-plugin ;;
    *) die "unknown artifact '$1' (karpenter or nvidia-device-plugin)" ;;
  esac
}

default_version() {
  case "$1" in
    karpenter) echo "$KARPENTER_VERSION" ;;
    nvidia-device-plugin) echo "$DEVICE_PLUGIN_VERSION" ;;
  esac
}

# Directory of the unpacked module in Go's module cache (downloaded on first use).
module_dir() {
  local module="$1" version="$2" out tmp
  command -v go >/dev/null 2>&1 || die "go is required to fetch $module (install Go >= 1.26; it reads the Go module proxy)"
  tmp="$(mktemp -d)"
  # Outside any module, with the module cache's own read-only layout. A release whose go.mod
  # asks for a newer Go than the machine's (Karpenter 1.15 wants 1.26.9) is fetched by the
  # newer toolchain, which the go command itself takes from the module proxy.
  local ok=1
  out="$(cd "$tmp" && GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod download -json "$module@v$version" 2>&1)" || ok=0
  if [[ "$ok" == 0 && "$out" == *"requires go "* ]]; then
    log "$module@v$version needs a newer Go than $(go env GOVERSION): fetching it with GOTOOLCHAIN=$NEWER_GO"
    ok=1
    out="$(cd "$tmp" && GOFLAGS=-mod=mod GOTOOLCHAIN="$NEWER_GO" go mod download -json "$module@v$version" 2>&1)" || ok=0
  fi
  if [[ "$ok" == 0 ]]; then
    rm -rf "$tmp"
    die "could not download $module@v$version from the Go module proxy: $(printf '%s' "$out" | tr '\n' ' ' | cut -c1-400)"
  fi
  rm -rf "$tmp"
  local dir
  dir="$(printf '%s\n' "$out" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' | head -n1)"
  [[ -n "$dir" && -d "$dir" ]] || die "go mod download gave no directory for $module@v$version: $out"
  echo "$dir"
}

dest_of() { echo "$CACHE_ROOT/$1/$2-r$RECIPE"; }

# Stamps Chart.yaml's version and appVersion with the tag when the module's chart lags it.
stamp_chart() {
  local chart_yaml="$1" version="$2" have
  have="$(sed -n 's/^version:[[:space:]]*"\{0,1\}\([^"[:space:]]*\)"\{0,1\}[[:space:]]*$/\1/p' "$chart_yaml" | head -n1)"
  [[ -n "$have" ]] || die "no version in $chart_yaml"
  if [[ "$have" != "$version" ]]; then
    log "the chart in module v$version says version $have: stamping $version"
    sed -i -e "s/^version:.*/version: $version/" -e "s/^appVersion:.*/appVersion: \"$version\"/" "$chart_yaml"
    if grep -q '^annotations:' "$chart_yaml"; then
      sed -i "s/^annotations:.*/annotations:\n  karpctl.io\/module-chart-version: \"$have\"/" "$chart_yaml"
    else
      printf 'annotations:\n  karpctl.io/module-chart-version: "%s"\n' "$have" >> "$chart_yaml"
    fi
  fi
}

fetch_one() {
  local what="$1" version="${2:-}"
  [[ -n "$version" ]] || version="$(default_version "$what")"
  version="${version#v}"
  local dest; dest="$(dest_of "$what" "$version")"
  [[ -f "$dest/.complete" ]] && return 0
  mkdir -p "$CACHE_ROOT"
  exec 8>"$CACHE_ROOT/.lock"
  flock 8
  if [[ -f "$dest/.complete" ]]; then exec 8>&-; return 0; fi
  local module src tmp
  module="$(module_of "$what")"
  log "fetching $module@v$version"
  src="$(module_dir "$module" "$version")"
  tmp="$dest.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  case "$what" in
    karpenter)
      [[ -d "$src/charts/karpenter" && -d "$src/pkg/apis/crds" ]] || die "$module@v$version has no charts/karpenter or pkg/apis/crds"
      cp -r "$src/charts/karpenter" "$tmp/chart"
      mkdir -p "$tmp/crds"
      cp "$src"/pkg/apis/crds/*.yaml "$tmp/crds/"
      chmod -R u+w "$tmp"
      rm -rf "$tmp/chart/crds"; mkdir -p "$tmp/chart/crds"
      cp "$tmp"/crds/*.yaml "$tmp/chart/crds/"
      ;;
    nvidia-device-plugin)
      [[ -d "$src/deployments/helm/nvidia-device-plugin" ]] || die "$module@v$version has no deployments/helm/nvidia-device-plugin"
      cp -r "$src/deployments/helm/nvidia-device-plugin" "$tmp/chart"
      chmod -R u+w "$tmp"
      ;;
  esac
  stamp_chart "$tmp/chart/Chart.yaml" "$version"
  printf '%s\n' "$src" > "$tmp/module-dir"
  printf 'module=%s\nversion=v%s\nrecipe=%s\n' "$module" "$version" "$RECIPE" > "$tmp/SOURCE"
  touch "$tmp/.complete"
  rm -rf "$dest"; mv "$tmp" "$dest"
  exec 8>&-
  log "cached in $dest"
}

cmd_fetch() {
  if [[ $# -eq 0 ]]; then
    fetch_one karpenter
    fetch_one nvidia-device-plugin
  else
    fetch_one "$@"
  fi
}

cmd_path() {
  local what="${1:-}" version="${2:-}" part="${3:-chart}"
  [[ -n "$what" ]] || die "usage: $0 path karpenter|nvidia-device-plugin [VERSION] [chart|crds|module]"
  module_of "$what" >/dev/null
  [[ -n "$version" ]] || version="$(default_version "$what")"
  version="${version#v}"
  fetch_one "$what" "$version"
  local dest; dest="$(dest_of "$what" "$version")"
  case "$part" in
    chart) echo "$dest/chart" ;;
    crds) [[ -d "$dest/crds" ]] || die "$what ships no CRDs"; echo "$dest/crds" ;;
    module) cat "$dest/module-dir" ;;
    *) die "unknown part '$part' (chart, crds or module)" ;;
  esac
}

case "${1:-}" in
  fetch) shift; cmd_fetch "$@" ;;
  path) shift; cmd_path "$@" ;;
  versions) printf 'karpenter=%s\nnvidia-device-plugin=%s\n' "$KARPENTER_VERSION" "$DEVICE_PLUGIN_VERSION" ;;
  *) die "usage: $0 fetch [NAME [VERSION]] | path NAME [VERSION] [chart|crds|module] | versions" ;;
esac
