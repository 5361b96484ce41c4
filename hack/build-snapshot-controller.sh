#!/usr/bin/env bash
# hack/build-snapshot-controller.sh -- build the upstream snapshot-controller
# (kubernetes-csi/external-snapshotter's cmd/snapshot-controller, at the version
# hack/snapshot-controller/go.mod requires) from the Go module proxy with that wrapper module, and
# cache it outside the repo together with the three snapshot.storage.k8s.io/v1 CRDs of the
# matching client module (its config/crd/; not the group-snapshot ones). hack/bed-up.sh installs
# the CRDs on each plane of the bed and runs the controller against it.
#
# Prints the directory holding snapshot-controller and the CRD files on its last line.
# Cache: $RBDP_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/rbd-provisioner)/snapshot-controller-<version>/bin
# It uses the Go module and build caches of hack/build-kube-137.sh ($RBDP_CACHE/go137), so nothing
# lands in the repo or in the caller's Go caches, and the Kubernetes modules are not fetched twice.
# A rerun with a complete cache returns at once. The directory is put in place whole, so an
# interrupted build never leaves one that looks complete. A build says on stderr what it builds,
# every 30 s that it still does, and how long it took; that duration is kept in
# $RBDP_CACHE/build-snapshot-controller.last, so the next cold build can say how long it will take.
#
# Environment:
#   GO [go on PATH]   a Go >= 1.26 that reaches the module proxy (not Debian's Go 1.19)
#   KUBE137_NICE [19] niceness of the build (the machines are shared)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_TAG=build-snapshot-controller
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
VER=$(snapshot_controller_version)
[ -n "$VER" ] || fail 1 "no external-snapshotter version in hack/snapshot-controller/go.mod"
OUT=$(snapshot_bin_cache "$VER")
complete() {
  local c
  have_bins "$OUT" snapshot-controller || return 1
  for c in "${SNAPSHOT_CRDS[@]}"; do [ -s "$OUT/$(snapshot_crd_file "$c")" ] || return 1; done
}
if complete; then echo "$OUT"; exit 0; fi

go_for_build "external-snapshotter $VER"
go_build_env
build_begin "$OUT" complete
log "snapshot-controller $VER is not in $CACHE_DIR yet: building it once with $gover from the Go module proxy ($(build_expect "about 5-6 min on 2 cores, longer on a loaded machine"))"
cd "$HERE/snapshot-controller"
mkdir "$TMP/bin"
go_build_bin "snapshot-controller $VER" "$TMP/bin/snapshot-controller" \
  github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller "-X main.version=$VER"
# The CRDs of the client module go.mod names (the build has fetched it).
crds=$("$GO" list -m -f '{{.Dir}}' github.com/kubernetes-csi/external-snapshotter/client/v8)/config/crd
for c in "${SNAPSHOT_CRDS[@]}"; do
  install -m 644 "$crds/$(snapshot_crd_file "$c")" "$TMP/bin/"
done
# Whole or not at all: an incomplete directory (say, of an interrupted older script) goes first.
rm -rf "$OUT"
mv -T "$TMP/bin" "$OUT"
"$OUT/snapshot-controller" --version >&2
BUILD_WHAT=snapshot-controller build_done "$START" "$VER" "$OUT"
