#!/usr/bin/env bash
# Installs what the tests need, then runs them all: formatting, lints, unit tests, the lab
# integration tests (real AF_XDP sockets, a real XDP program, nginx in network namespaces), a
# short run of every fuzz target and the Debian package (built and its contents checked). Needs root: as root, bash scripts/test.sh;
# otherwise sudo bash scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v cargo >/dev/null; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null && [ -n "${SUDO_USER:-}" ]; then
  user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
  export CARGO_HOME="$user_home/.cargo" RUSTUP_HOME="$user_home/.rustup"
  . "$user_home/.cargo/env"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Lab tests share one machine's CPUs and build namespaces: run them one at a time.
cargo test --workspace -- --test-threads=1
# Every fuzz target briefly (installs cargo-fuzz; see scripts/fuzz.sh and docs/fuzzing.md).
bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"
# The package: release build, man pages, completions, units; checks `dpkg-deb -c` and Depends.
bash scripts/package.sh
