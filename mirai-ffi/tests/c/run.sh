#!/usr/bin/env bash
# Builds libmirai and mirai-daemon, compiles every C test against both the static and the
# shared library with -Wall -Werror -std=c11, and runs each, under valgrind when it is present.
# Usage: bash mirai-ffi/tests/c/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
cd "$root"

cargo build -q -p mirai-ffi -p mirai-daemon
target="${CARGO_TARGET_DIR:-$root/target}/debug"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

cflags=(-Wall -Wextra -Werror -std=c11 -g -I "$root/include")
# From `rustc --print=native-static-libs`: what libmirai.a needs from the system.
static_libs=(-lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)

gcc "${cflags[@]}" -shared -fPIC -o "$out/plugin_square.so" "$here/plugin_square.c"
# A stand-in sbatch for the cluster launcher test (runs the job script here, in the background).
printf '#!/bin/sh\nexec %s slurm\n' "$root/mirai-core/tests/data/fake-submit.sh" > "$out/fake-sbatch"
chmod +x "$out/fake-sbatch"

run() {
  local name="$1"; shift
  if command -v valgrind >/dev/null; then
    valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
      --show-leak-kinds=definite,indirect "$@"
  else
    "$@"
  fi
}

passed=0
failed=0
check() {
  local label="$1"; shift
  if "$@"; then
    echo "ok: $label"
    passed=$((passed + 1))
  else
    echo "FAILED: $label"
    failed=$((failed + 1))
  fi
}

# sigpipe kills 20 daemons (and 5 more over TLS) and 20 hosts mid-way through 1 GB transfers.
# Valgrind makes copies of that size take minutes, so under it the test runs 4 rounds of 16 MB
# without TLS (memcheck cannot follow ring's AES-GCM assembly: it calls the tags' bytes
# uninitialised), and the 1 GB rounds run once more without valgrind.
sigpipe_args=("$target/mirai-daemon" 1024 20 5)
command -v valgrind >/dev/null && sigpipe_args=("$target/mirai-daemon" 16 4 0)

for test in host_and_daemons c_daemon sigpipe; do
  gcc "${cflags[@]}" -pthread -o "$out/$test-static" "$here/$test.c" "$target/libmirai.a" "${static_libs[@]}"
  gcc "${cflags[@]}" -pthread -o "$out/$test-shared" "$here/$test.c" -L "$target" -lmirai -Wl,-rpath,"$target"
  for variant in static shared; do
    args=()
    [ "$test" = host_and_daemons ] && args=("$target/mirai-daemon" "$out/plugin_square.so" "$out/fake-sbatch")
    [ "$test" = sigpipe ] && args=("${sigpipe_args[@]}")
    check "$test ($variant)" run "$test" "$out/$test-$variant" "${args[@]}"
  done
done
if command -v valgrind >/dev/null; then
  check "sigpipe (static, 1 GB, without valgrind)" "$out/sigpipe-static" "$target/mirai-daemon" 1024 20 5
fi
echo "c-tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
