#!/usr/bin/env bash
# Builds libmirai and mirai-daemon (release), compiles examples/quickstart.c against libmirai and
# runs it. Needs a Rust toolchain and a C compiler.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build -q --release -p mirai-ffi -p mirai-daemon
target="${CARGO_TARGET_DIR:-$root/target}/release"
gcc -Wall -Werror -std=c11 -O2 -I include -o "$target/quickstart" examples/quickstart.c \
  -L "$target" -lmirai -Wl,-rpath,"$target"
"$target/quickstart" "$target/mirai-daemon"
