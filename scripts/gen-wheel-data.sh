#!/usr/bin/env bash
# Regenerates the shell completions and man pages the wheel installs
# (packaging/wheel-data/data/share/...: maturin's `data` folder, installed
# under the environment's prefix) from the clap definitions, through
# `pytest-abort completions` and `pytest-abort manpage`. Run it after changing
# a command's options; tests/it/completions.rs fails while they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --bin pytest-abort
out=packaging/wheel-data/data
rm -rf "$out/share"
for shell in bash zsh fish; do
  target/debug/pytest-abort completions "$shell" --out-dir "$out" >/dev/null
done
target/debug/pytest-abort manpage --out-dir "$out" >/dev/null
find "$out" -type f | sort
