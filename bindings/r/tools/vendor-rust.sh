#!/bin/sh
# Makes src/rust a self-contained Rust workspace for a source package: the sources of libmirai
# (the mirai-proto, mirai-core and mirai-ffi crates, the C header, the lock file) with every
# crate they depend on vendored, so that the package builds with no network and no checkout.
#
# In the checkout, src/rust holds only symbolic links to those crates and files (the one
# source of truth). `R CMD build` copies the package with `cp -L`, which turns the links into
# the files themselves, and runs `cleanup`, which runs this, in that copy. Here it does nothing
# in the checkout (links), nor where src/rust is already vendored.
set -eu
cd "$(dirname "$0")/.."
out=src/rust
[ -d "$out/mirai-ffi" ] && [ ! -L "$out/mirai-ffi" ] && [ ! -d "$out/vendor" ] || exit 0

cargo="${CARGO:-cargo}"
command -v "$cargo" >/dev/null 2>&1 || cargo="$HOME/.cargo/bin/cargo"
echo "vendoring libmirai's Rust crates into $out"
# The workspace as it is, with only the crates libmirai is built from.
sed 's/^members = .*/members = ["mirai-proto", "mirai-core", "mirai-ffi"]/' "$out/workspace.toml" > "$out/Cargo.toml"
rm -f "$out/workspace.toml"
for c in mirai-proto mirai-core mirai-ffi; do
  # Without their tests there is no need for their test-only dependencies.
  awk '/^\[/ { skip = ($0 == "[dev-dependencies]") } !skip' "$out/$c/Cargo.toml" > "$out/$c/Cargo.toml.new"
  mv "$out/$c/Cargo.toml.new" "$out/$c/Cargo.toml"
  rm -rf "$out/$c/tests" "$out/$c/examples" "$out/$c/benches"
done
rm -rf "$out/mirai-core/src/bin" # a test helper
# Offline first (CI has built the workspace, so every crate is in cargo's cache); the lock file
# loses the entries of the crates left out, and nothing else changes.
# Online only if that fails, with a cargo home of its own inside the copy (the user's is not
# written to); a failure here fails the build of the source package.
(cd "$out" && { "$cargo" vendor --offline --quiet vendor >/dev/null 2>&1 ||
  CARGO_HOME="$(pwd)/.cargo-home" "$cargo" vendor --quiet vendor >/dev/null; })
rm -rf "$out/.cargo-home"
# Crates for Windows only (import libraries, bindings: about 95 MB) are never built here, but
# cargo reads their manifests: keep those, with an empty library, and checksums to match.
if command -v sha256sum >/dev/null 2>&1; then sha="sha256sum"; else sha="shasum -a 256"; fi
for dir in "$out"/vendor/windows*; do
  [ -d "$dir" ] || continue
  package=$(sed 's/.*"package":"\([0-9a-f]*\)".*/\1/' "$dir/.cargo-checksum.json")
  find "$dir" -mindepth 1 -maxdepth 1 ! -name Cargo.toml ! -name build.rs ! -name .cargo-checksum.json -exec rm -rf {} +
  mkdir -p "$dir/src"
  : > "$dir/src/lib.rs"
  files=""
  for f in Cargo.toml build.rs src/lib.rs; do
    [ -f "$dir/$f" ] || continue
    files="$files${files:+,}\"$f\":\"$(cd "$dir" && $sha "$f" | cut -d' ' -f1)\""
  done
  printf '{"files":{%s},"package":"%s"}' "$files" "$package" > "$dir/.cargo-checksum.json"
done
# R CMD check refuses what looks like executables or object files in a source package, warns
# about Makefiles with GNU extensions, and notes hidden files: test data of vendored crates (a
# ciphertext that reads as a DOS program), objects ring assembled for Windows, a crate's own
# development Makefile (r-efi's), and the crates' editor, CI and VCS files. None is used by a
# build (cargo builds them), so they go, with their checksums; the checksum files themselves
# cargo needs.
find "$out/vendor" -type f -perm -u+x -exec chmod a-x {} +
for dir in "$out"/vendor/*; do
  { [ -d "$dir/tests" ] && find "$dir/tests" -type f ! -name '*.rs'
    [ -d "$dir/pregenerated" ] && find "$dir/pregenerated" -type f \( -name '*.o' -o -name '*.obj' \)
    find "$dir" -maxdepth 1 -type f \( -name Makefile -o -name GNUmakefile \)
    find "$dir" -path "$dir/.*" -type f ! -name .cargo-checksum.json; } |
  while read -r file; do
    rel=${file#"$dir/"}
    rm -f "$file"
    sed -e "s|\"$rel\":\"[0-9a-f]*\",||" -e "s|,\"$rel\":\"[0-9a-f]*\"||" "$dir/.cargo-checksum.json" > "$dir/.checksum.tmp"
    mv "$dir/.checksum.tmp" "$dir/.cargo-checksum.json"
  done
  find "$dir" -mindepth 1 -maxdepth 1 -name '.*' -type d -exec rm -rf {} +
done
