#!/usr/bin/env bash
# The whole test suite. Run from anywhere: `bash scripts/test.sh`.
# MIRAI_FUZZ_CASES sets the number of fuzz inputs per decoder target (default 200000),
# MIRAI_HANDSHAKE_FUZZ_CASES per authentication target (default 50000).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy -q --workspace --all-targets -- -D warnings

echo "== mirai-proto builds without std (no_std + alloc)"
cargo build -q -p mirai-proto --no-default-features
# Nothing in its normal dependency tree may switch std back on.
if cargo tree -q -p mirai-proto --no-default-features -e normal,features | grep -E 'feature "(std|use-std)"'; then
  echo "mirai-proto pulls in std through a dependency" >&2
  exit 1
fi

echo "== services for the launcher tests: a loopback sshd and a single-node Slurm"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  bash ci/slurm-sshd.sh install
  # Stop what an earlier run may have left up, start afresh, and stop again on exit.
  bash ci/slurm-sshd.sh down >/dev/null 2>&1 || true
  trap 'bash ci/slurm-sshd.sh down >/dev/null 2>&1 || true' EXIT
  bash ci/slurm-sshd.sh up
  # shellcheck disable=SC1091
  . /tmp/ci-slurm-sshd/env
  export MIRAI_TEST_SERVICES=1
else
  echo "not root: the SSH and Slurm launcher tests are skipped"
  export MIRAI_SKIP_SERVICES=1
fi

echo "== tests"
cargo test --workspace

echo "== C programs against libmirai.a and libmirai.so (under valgrind when present)"
bash mirai-ffi/tests/c/run.sh

echo "== install route and pkg-config"
prefix="$(mktemp -d)"
bash scripts/install.sh "$prefix" >/dev/null
PKG_CONFIG_PATH="$prefix/lib/pkgconfig" gcc -Wall -Werror -std=c11 -o "$prefix/quickstart" examples/quickstart.c \
  $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs mirai) -Wl,-rpath,"$prefix/lib"
rm -rf "$prefix"

echo "== R package (bindings/r): install into a temporary library and run its tests"
if command -v Rscript >/dev/null; then
  rlib="$(mktemp -d)"
  R CMD INSTALL --no-test-load -l "$rlib" bindings/r > "$rlib/install.log" 2>&1 || { cat "$rlib/install.log"; exit 1; }
  R_LIBS="$rlib" Rscript bindings/r/tests/tests.R
  # The R API over ws:// and wss:// (WebSocket).
  R_LIBS="$rlib" Rscript bindings/r/tests/websocket.R
  # The API against R's mirai's, point by point; every export with wrong arguments (in child
  # processes, so a crash is a failure, not the end); and the round-trip corpus of R objects.
  R_LIBS="$rlib" Rscript bindings/r/tests/parity.R
  R_LIBS="$rlib" Rscript bindings/r/tests/wrong_args.R
  R_LIBS="$rlib" Rscript bindings/r/tests/corpus.R
  # Replies no R daemon writes (malformed envelopes, streams cut short), from a plugin daemon.
  R_LIBS="$rlib" Rscript bindings/r/tests/envelopes.R
  # A daemon killed mid-task and a host killed mid-result: errors, never SIGPIPE (child sessions).
  R_LIBS="$rlib" Rscript bindings/r/tests/sigpipe.R
  R_LIBS="$rlib" Rscript bindings/r/tests/reliability.R
  # Chaos, R host and R daemons: one daemon killed or stopped every 200 ms, replaced (about a minute).
  R_LIBS="$rlib" Rscript bindings/r/tests/chaos.R
  # Packages built on mirai, from Debian: foreach/doParallel, parallel, later/promises, and a
  # Shiny app in two real browser sessions (headless Chromium driven by selenium).
  R_LIBS="$rlib" Rscript bindings/r/tests/clients.R
  R_LIBS="$rlib" python3 -B bindings/r/tests/shiny_browser.py
  rm -rf "$rlib"
  echo "== R source package: built, installed offline outside the checkout, R CMD check --as-cran"
  bash scripts/r-source-package.sh
else
  echo "R is not installed: the R package tests are skipped (apt-get install r-base-dev)"
fi

echo "== Julia binding: generated wrappers current, every file parses"
python3 bindings/julia/gen/generate.py --check
python3 bindings/julia/gen/check_syntax.py

echo "== benchmarks, smoke mode (each once; NNG comparators need cmake)"
bench_log="$(mktemp)"
cargo bench -q -p mirai-benches --features nng -- --test > "$bench_log" 2>&1 || { cat "$bench_log"; exit 1; }
echo "bench smoke: $(grep -c '^Success' "$bench_log") benchmarks ran once"
grep '^scale/' "$bench_log"
rm -f "$bench_log"

echo "== fuzz the decoder (release build, bounded run)"
MIRAI_FUZZ_CASES="${MIRAI_FUZZ_CASES:-200000}" \
  cargo test -q --release -p mirai-proto --test fuzz_decoder -- --nocapture 2>&1 | grep -E 'fuzz:|test result'

echo "== fuzz authentication, host and daemon ends (release build, bounded run)"
MIRAI_FUZZ_CASES="${MIRAI_HANDSHAKE_FUZZ_CASES:-50000}" \
  cargo test -q --release -p mirai-core --test fuzz_handshake -- --nocapture 2>&1 | grep -E 'fuzz:|test result'

echo "== fuzz the WebSocket framing, client and server sides (release build, bounded run)"
MIRAI_FUZZ_CASES="${MIRAI_WS_FUZZ_CASES:-50000}" \
  cargo test -q --release -p mirai-core --test fuzz_ws_framing -- --nocapture 2>&1 | grep -E 'fuzz:|test result'

echo "== chaos: 100,000 tasks through 4 daemons, one killed or frozen every 200 ms (release build)"
cargo test -q --release -p mirai-core --test chaos -- --ignored --nocapture --test-threads=1 2>&1 | grep -E '^chaos|test result'
