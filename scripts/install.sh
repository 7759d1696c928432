#!/usr/bin/env bash
# Builds and installs libmirai (shared and static), mirai.h, mirai.pc and mirai-daemon.
# Usage: bash scripts/install.sh [PREFIX]   (default /usr/local)
set -euo pipefail
prefix="${1:-/usr/local}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
cargo build --release -p mirai-ffi -p mirai-daemon
target="${CARGO_TARGET_DIR:-$root/target}/release"
version="$(sed -n 's/^#define MIRAI_VERSION "\(.*\)"/\1/p' include/mirai.h)"
install -d "$prefix/lib/pkgconfig" "$prefix/include" "$prefix/bin"
install -m 644 "$target/libmirai.a" "$prefix/lib/"
install -m 755 "$target/libmirai.so" "$prefix/lib/"
install -m 644 include/mirai.h "$prefix/include/"
install -m 755 "$target/mirai-daemon" "$prefix/bin/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" mirai-ffi/mirai.pc.in > "$prefix/lib/pkgconfig/mirai.pc"
echo "installed mirai $version under $prefix"
