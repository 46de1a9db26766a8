#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/) for SECONDS each and fails on a crash.
# Usage: bash scripts/fuzz.sh [SECONDS] [TARGET...]    (default: 30 s, every target)
#
# The machine has only the stable toolchain. cargo-fuzz drives libFuzzer through rustc flags
# that are stable (-C passes=sancov-module, -C llvm-args=-sanitizer-coverage-*) except the
# sanitizers (-Z sanitizer=...): we fuzz with `--sanitizer none` (debug assertions and overflow
# checks stay on, so panics, overflows and failed invariants are caught; the crates under test
# deny unsafe outside xsk/, which the targets do not reach). RUSTC_BOOTSTRAP=1 lets the stable
# compiler accept the -Z flags cargo-fuzz passes for coverage options; nothing else is unstable.
# Seeds (literal frames, capture files, channel bytes) are in fuzz/seeds/TARGET/; the corpus grows
# in fuzz/corpus/TARGET/, crashes are kept in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
SECONDS_PER_TARGET="${1:-30}"
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
cargo fuzz build --fuzz-dir fuzz --sanitizer none --debug-assertions
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "fuzz: $t for ${SECONDS_PER_TARGET} s"
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  if ! cargo fuzz run --fuzz-dir fuzz --sanitizer none --debug-assertions "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
      -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 -print_final_stats=1 2>"fuzz/$t.log"; then
    tail -n 60 "fuzz/$t.log" >&2
    echo "fuzz: $t crashed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|cov:" "fuzz/$t.log" | tail -n 3 | sed "s/^/fuzz: $t: /"
done
echo "fuzz: every target ran ${SECONDS_PER_TARGET} s without a crash"
