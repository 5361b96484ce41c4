#!/usr/bin/env bash
# hack/build-helm.sh -- build helm (helm.sh/helm/v4's cmd/helm, at the version hack/helm/go.mod
# requires) from the Go module proxy with that wrapper module, and cache it outside the repo. The
# chart's tests (tests/helm.rs) run it against the bed's planes; hack/test.sh builds it in the
# background while the first plane's tests run.
#
# Prints the directory holding helm on its last line.
# Cache: $RBDP_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/rbd-provisioner)/helm-<version>/bin,
# with the Go module and build caches of the other Go builds here (hack/lib.sh go_build_env). A
# rerun with a complete cache returns at once; the directory is put in place whole, so an
# interrupted build never leaves one that looks complete. A build says on stderr what it builds,
# every 30 s that it still does, and how long it took.
#
# Environment:
#   GO [go on PATH]   a Go >= 1.26 that reaches the module proxy (not Debian's Go 1.19)
#   KUBE137_NICE [19] niceness of the build (the machines are shared)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_TAG=build-helm
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
VER=$(helm_version)
[ -n "$VER" ] || fail 1 "no helm.sh/helm/v4 version in hack/helm/go.mod"
OUT=$(helm_bin_cache "$VER")
if have_bins "$OUT" helm; then echo "$OUT"; exit 0; fi

go_for_build "helm $VER"
go_build_env
build_begin "$OUT" have_bins "$OUT" helm
log "helm $VER is not in $CACHE_DIR yet: building it once with $gover from the Go module proxy ($(build_expect "about 5-6 min on 2 cores, longer on a loaded machine"))"
cd "$HERE/helm"
mkdir "$TMP/bin"
# helm's own version variables, so `helm version` says what was built.
go_build_bin "helm $VER" "$TMP/bin/helm" helm.sh/helm/v4/cmd/helm \
  "-X helm.sh/helm/v4/internal/version.version=$VER"
rm -rf "$OUT"
mv -T "$TMP/bin" "$OUT"
"$OUT/helm" version >&2
BUILD_WHAT=helm build_done "$START" "$VER" "$OUT"
