#!/usr/bin/env bash
# The project's test command (README "Tests"; CI runs exactly this).
# Builds what it needs, then runs lint and every test suite.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
export KARPCTL_CACHE="${KARPCTL_CACHE:-$HOME/.cache/karpctl}"
# Build output lives outside the checkout so fresh clones reuse compiled dependencies.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$KARPCTL_CACHE/target}"
mkdir -p "$KARPCTL_CACHE"

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is required (install Rust 1.85+)" >&2
  exit 1
fi

step() { printf '\n== %s\n' "$*"; }

step "clippy (warnings are errors)"
cargo clippy --locked --all-targets -- -D warnings

step "cargo test"
cargo test --locked
