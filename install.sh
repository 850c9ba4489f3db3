#!/usr/bin/env bash
# Builds karpctl from this checkout and installs the binary.
#   ./install.sh                 an optimised (release) build, installed into ~/.local/bin
#   PREFIX=/usr/local ./install.sh
# It builds in the same target directory as scripts/test.sh, scripts/sandbox.sh and
# `cargo run` after `source .sandbox/env` ($CARGO_TARGET_DIR, default
# ~/.cache/karpctl/target): the release build is the one compiled on its own (other
# profile), and nothing lands in ./target.
set -euo pipefail
cd "$(dirname "$0")"
prefix="${PREFIX:-$HOME/.local}"
if ! command -v cargo >/dev/null 2>&1; then
  cat >&2 <<'MSG'
error: cargo (the Rust toolchain) is not installed.
  help: install Rust 1.85 or newer with your package manager or from rustup.rs,
        then run ./install.sh again.
MSG
  exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${KARPCTL_CACHE:-$HOME/.cache/karpctl}/target}"
source scripts/cargo-target.sh
claim_target_dir "$CARGO_TARGET_DIR"
cargo install --locked --path . --root "$prefix" --force
echo "installed: $prefix/bin/karpctl (built in $CARGO_TARGET_DIR)"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: add $prefix/bin to your PATH" ;;
esac
