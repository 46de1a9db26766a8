#!/usr/bin/env bash
# The README's first command: installs what it needs, builds (release), brings the namespace lab
# up, runs xdpcopy on live HTTP traffic to the online nginx, shows the stats line and what
# reached the test server, and tears the lab down. Needs root. Usage, as root: bash scripts/demo.sh
# (otherwise: sudo bash scripts/demo.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --release
exec target/release/xdpcopy-lab demo "$@"
