#!/usr/bin/env bash
# Installs what building, the lab and the tests need on Debian 12, then builds.
# Idempotent: apt runs only when a package is missing. Usage: bash scripts/setup.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (AF_XDP, XDP and network namespaces need it): sudo bash $0" >&2
  exit 1
fi

PKGS=(clang llvm libelf-dev zlib1g-dev pkg-config m4 make gcc iproute2 ethtool tcpdump nginx-light curl wrk tcpreplay redis-server redis-tools bpftool)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
fi

# Reclaim locked-memory limits for older kernels (UMEM is accounted to memlock there).
ulimit -l unlimited 2>/dev/null || true

profile=()
[ "${1:-}" = "--release" ] && profile=(--release)
cargo build --workspace --bins "${profile[@]}"
