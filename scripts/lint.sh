#!/usr/bin/env bash
# Lint: clippy with warnings as errors (the tool, and the offline core the fuzz
# targets link built without the cloud clients) and the module import graph
# (no cycles between src/ modules, scripts/import-graph.py). Usage: scripts/lint.sh
# Clippy uses a target directory of its own (KARPCTL_CLIPPY_TARGET_DIR, default
# ~/.cache/karpctl/target-clippy) so it can run while `cargo test` holds the
# main one: scripts/test.sh runs it beside the end-to-end suite.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
cache="${KARPCTL_CACHE:-$HOME/.cache/karpctl}"
export CARGO_TARGET_DIR="${KARPCTL_CLIPPY_TARGET_DIR:-$cache/target-clippy}"
source scripts/cargo-target.sh
claim_target_dir "$CARGO_TARGET_DIR"
python3 scripts/import-graph.py
python3 scripts/import-graph.py --files
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --lib --no-default-features -- -D warnings
echo "lint: clean"
