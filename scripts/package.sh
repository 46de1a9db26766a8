#!/usr/bin/env bash
# Builds the Debian package target/debian/xdpcopy_<version>-1_<arch>.deb with cargo-deb: both
# programs, their man pages and bash/zsh/fish completions (generated from the CLI definitions),
# the systemd units (xdpcopy@.service, xdpcopy-intercept.service) and their configuration, then
# checks what it holds. Installs what it needs (cargo-deb from crates.io; dpkg-dev for the
# shared-library dependencies). Install the result with `apt install ./target/debian/xdpcopy_*.deb`.
#
# Usage: bash scripts/package.sh            # release build: the package for real machines
#        bash scripts/package.sh --debug    # dev profile: a quick check of the packaging itself
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi

profile=release
build=(--release)
if [ "${1:-}" = "--debug" ]; then
  profile=debug
  build=()
fi

if ! command -v dpkg-shlibdeps >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "package: dpkg-dev is missing; install it (apt-get install dpkg-dev) or run as root" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null
fi
if ! cargo deb --version >/dev/null 2>&1; then
  echo "package: installing cargo-deb"
  cargo install --locked --quiet cargo-deb --version '^3.6'
fi

cargo build --workspace --bins "${build[@]}"

# Man pages and completions, from the binaries' own clap definitions.
assets=target/xdpcopy-assets
rm -rf "$assets"
for bin in xdpcopy xdpcopy-intercept; do
  "target/$profile/$bin" --generate-assets "$assets" >/dev/null
done
gzip -9n "$assets"/man/*.1

args=(-p dataplane --no-build)
[ "$profile" = debug ] && args+=(--profile dev --no-strip)
deb=$(cargo deb "${args[@]}" | tail -n 1)
echo "package: built $deb"

# What the package must hold (scripts/test.sh runs this script).
contents=$(dpkg-deb -c "$deb")
for f in usr/bin/xdpcopy usr/bin/xdpcopy-intercept \
  usr/share/man/man1/xdpcopy.1.gz usr/share/man/man1/xdpcopy-report.1.gz usr/share/man/man1/xdpcopy-intercept.1.gz \
  usr/share/bash-completion/completions/xdpcopy.bash usr/share/bash-completion/completions/xdpcopy-intercept.bash \
  usr/share/zsh/vendor-completions/_xdpcopy usr/share/zsh/vendor-completions/_xdpcopy-intercept \
  usr/share/fish/vendor_completions.d/xdpcopy.fish usr/share/fish/vendor_completions.d/xdpcopy-intercept.fish \
  lib/systemd/system/xdpcopy@.service lib/systemd/system/xdpcopy-intercept.service \
  etc/xdpcopy/example.conf etc/default/xdpcopy-intercept; do
  grep -q " \./$f\$" <<<"$contents" || { echo "package: $deb lacks $f" >&2; echo "$contents" >&2; exit 1; }
done
depends=$(dpkg-deb -f "$deb" Depends)
for d in libc6 libelf zlib1g iproute2; do
  grep -q "$d" <<<"$depends" || { echo "package: Depends lacks $d: $depends" >&2; exit 1; }
done
echo "package: ok (Depends: $depends)"
