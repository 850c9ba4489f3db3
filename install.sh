#!/usr/bin/env bash
# Builds karpctl from this checkout and installs the binary.
#   ./install.sh                 installs into ~/.local/bin
#   PREFIX=/usr/local ./install.sh
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
cargo install --locked --path . --root "$prefix" --force
echo "installed: $prefix/bin/karpctl"
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: add $prefix/bin to your PATH" ;;
esac
