# Sourced by the scripts that build karpctl. `claim_target_dir DIR` makes the
# shared target directory DIR (outside the checkout, so fresh clones reuse
# compiled dependencies) safe to use from this checkout: cargo judges karpctl's
# own crates fresh by file times relative to the package root, so a directory
# last built from another checkout can hold that checkout's build — its code,
# its paths compiled in — looking fresh here. When the checkout that last built
# into DIR is not this one, karpctl's fingerprints there are dropped, so its
# crates (only they, not the dependencies) rebuild. Two checkouts building into
# one directory at the same time still rebuild each other's crates.
claim_target_dir() {
  local dir="$1" root marker
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  marker="$dir/.karpctl-checkout"
  mkdir -p "$dir"
  if [ "$(cat "$marker" 2>/dev/null || true)" != "$root" ]; then
    find "$dir" -path '*/.fingerprint/karpctl*' -prune -exec rm -rf {} + 2>/dev/null || true
    printf '%s\n' "$root" > "$marker.tmp.$$" && mv "$marker.tmp.$$" "$marker"
  fi
}
