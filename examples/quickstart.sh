#!/usr/bin/env bash
# The quick start: R mirai's README example in R on this package, then the same in C on
# libmirai. Installs R from Debian when it is missing (as root), builds the R package into a
# private library (target/quickstart-r-lib), builds libmirai and mirai-daemon, and runs both.
# Needs a Rust toolchain and a C compiler.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

if ! command -v Rscript >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq r-base-dev >/dev/null
fi
if command -v Rscript >/dev/null; then
  lib="${CARGO_TARGET_DIR:-$root/target}/quickstart-r-lib"
  mkdir -p "$lib"
  R CMD INSTALL --no-test-load -l "$lib" bindings/r > "$lib/install.log" 2>&1 || { cat "$lib/install.log"; exit 1; }
  echo "== R"
  R_LIBS="$lib" Rscript examples/quickstart.R
else
  echo "R is not installed (apt-get install r-base-dev): skipping the R quick start"
fi

echo "== C"
cargo build -q --release -p mirai-ffi -p mirai-daemon
target="${CARGO_TARGET_DIR:-$root/target}/release"
gcc -Wall -Werror -std=c11 -O2 -I include -o "$target/quickstart" examples/quickstart.c \
  -L "$target" -lmirai -Wl,-rpath,"$target"
"$target/quickstart" "$target/mirai-daemon"
