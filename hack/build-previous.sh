#!/usr/bin/env bash
# hack/build-previous.sh -- build the previous release's binary (the commit hack/previous-release
# names) from this checkout's git history, cached outside the repo; prints its path on the last
# line. tests/upgrade_release.rs runs it (RBDP_PREVIOUS_BIN) before and after this build.
#
# Exit 3 (and no path) when the checkout has no history to build it from (a shallow or exported
# tree): the caller says the test could not run, rather than running it against something else.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
rev=$(grep -v '^#' "$HERE/previous-release" | head -1 | tr -d '[:space:]')
full=$(git -C "$REPO" rev-parse --verify -q "$rev^{commit}") ||
  fail 3 "commit $rev (hack/previous-release) is not in this checkout's history"
OUT=$CACHE_DIR/previous-${full:0:12}
BIN=$OUT/bin/rbd-provisioner
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi
mkdir -p "$OUT"
rm -rf "$OUT/src"
mkdir -p "$OUT/src"
git -C "$REPO" archive "$full" | tar -x -C "$OUT/src"
t0=$(date +%s)
echo "build-previous: building rbd-provisioner at ${full:0:12} (the previous release)" >&2
# Its own target dir (outside the repo, kept): the dependencies build once per machine.
CARGO_TARGET_DIR=$CACHE_DIR/previous-target nice -n 19 \
  cargo build --locked --manifest-path "$OUT/src/Cargo.toml" --bin rbd-provisioner >&2
mkdir -p "$OUT/bin"
cp "$CACHE_DIR/previous-target/debug/rbd-provisioner" "$BIN.tmp"
mv -f "$BIN.tmp" "$BIN"
echo "build-previous: built in $(( $(date +%s) - t0 ))s" >&2
echo "$BIN"
