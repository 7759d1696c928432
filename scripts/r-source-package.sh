#!/usr/bin/env bash
# The R package as users get it: `R CMD build bindings/r` makes a source package; it is
# installed into a fresh library from a directory outside the checkout, with no network at all
# (a network namespace of its own, where it can be had; else cargo told to stay offline) and an
# empty home; its help pages and vignette are there; and `R CMD check --as-cran` on it gives no
# ERROR and no WARNING (each NOTE left is explained in bindings/r/cran-comments.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

R CMD build "$root/bindings/r" > build.log 2>&1 || { cat build.log; exit 1; }
tarball=$(ls mirai_*.tar.gz)
echo "built $tarball ($(du -h "$tarball" | cut -f1))"

# Without the network: the namespace has only a loopback interface, brought up for the
# vignette's and the examples' local daemons. Tools found now, before HOME changes.
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CARGO="${CARGO:-$(command -v cargo)}" CARGO_NET_OFFLINE=true
offline() {
  if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
    unshare -n sh -c 'ip link set lo up && exec "$@"' sh "$@"
  else
    "$@"
  fi
}
mkdir lib home
HOME="$work/home" offline R CMD INSTALL -l lib "$tarball" > install.log 2>&1 || { cat install.log; exit 1; }
grep '^configure:' install.log
R_LIBS="$work/lib" Rscript -e '
  library(mirai)
  stopifnot(length(help("daemons", package = "mirai")) == 1L, length(help("mirai_map", package = "mirai")) == 1L)
  v <- vignette(package = "mirai")$results
  stopifnot(nrow(v) >= 1L)
  cat("installed from the source package offline: help pages and vignette", v[1L, "Item"], "present\n")'

# The PDF manual without the inconsolata font (Debian has it only in texlive-fonts-extra, 1.4 GB).
HOME="$work/home" _R_CHECK_CRAN_INCOMING_REMOTE_=false _R_CHECK_FORCE_SUGGESTS_=false _R_CHECK_SYSTEM_CLOCK_=0 \
  R_RD4PDF="times,hyper" \
  offline R CMD check --as-cran "$tarball" > check.log 2>&1 || true
status=$(grep '^Status:' check.log || echo "Status: check did not finish")
echo "R CMD check --as-cran: $status"
if ! grep -q '^Status: \(OK\|[0-9]* NOTEs\?\)$' check.log; then
  cat check.log
  for f in mirai.Rcheck/00install.out mirai.Rcheck/tests/*.Rout.fail; do [ -f "$f" ] && tail -50 "$f"; done
  exit 1
fi
grep -B1 -A6 'NOTE$' check.log || true
