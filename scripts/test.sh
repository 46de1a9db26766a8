#!/usr/bin/env bash
# Installs what the tests need, then runs them all: formatting, lints, unit tests and the
# lab integration tests (real AF_XDP sockets, a real XDP program, nginx in network namespaces).
# Needs root. Usage: sudo bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Lab tests share one machine's CPUs and build namespaces: run them one at a time.
cargo test --workspace -- --test-threads=1
