#!/usr/bin/env bash
# Installs what building, the lab and the tests need on Debian 12, then builds.
# Idempotent: apt runs only when a package is missing. Needs root: run it as root, or with sudo
# from an account that has the Rust toolchain (rustup). Usage: bash scripts/setup.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (AF_XDP, XDP and network namespaces need it): as root, bash $0; otherwise sudo bash $0" >&2
  exit 1
fi

# prometheus: promtool checks the /metrics output in the tests; dpkg-dev: scripts/package.sh;
# redis: the redis replay tests; bpftool: the intercept benchmark.
PKGS=(clang llvm libelf-dev zlib1g-dev pkg-config m4 make gcc iproute2 ethtool tcpdump nginx-light curl wrk tcpreplay
  prometheus dpkg-dev redis-server redis-tools bpftool)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Only promtool is wanted from the prometheus package: keep its server from running here.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

if ! command -v cargo >/dev/null; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
# Under sudo, HOME is root's: use the invoking user's toolchain.
if ! command -v cargo >/dev/null && [ -n "${SUDO_USER:-}" ]; then
  user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
  if [ -f "$user_home/.cargo/env" ]; then
    export CARGO_HOME="$user_home/.cargo" RUSTUP_HOME="$user_home/.rustup"
    . "$user_home/.cargo/env"
  fi
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
