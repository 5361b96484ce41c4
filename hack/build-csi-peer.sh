#!/usr/bin/env bash
# hack/build-csi-peer.sh -- build the CSI pipeline the provisioning bench runs as a peer
# (benches/provisioning): kubernetes-csi's external-provisioner (its cmd/csi-provisioner, at the
# version hack/csi-peer/go.mod requires) and a mock CSI driver (hack/csi-peer/mock-driver, which
# serves Kubernetes' e2e mock service: csi-test v5 ships no mock-driver command any more) from the
# Go module proxy with that wrapper module, and cache both outside the repo.
#
# Prints the directory holding csi-provisioner and mock-driver on its last line.
# Cache: $RBDP_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/rbd-provisioner)/csi-peer-<version>/bin,
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
LOG_TAG=build-csi-peer
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
VER=$(csi_peer_version) || true
[ -n "$VER" ] || fail 1 "no external-provisioner or k8s.io/kubernetes version in hack/csi-peer/go.mod"
OUT=$(csi_peer_bin_cache "$VER")
BINS=(csi-provisioner mock-driver)
if have_bins "$OUT" "${BINS[@]}"; then echo "$OUT"; exit 0; fi

go_for_build "the CSI peer $VER"
go_build_env
build_begin "$OUT" have_bins "$OUT" "${BINS[@]}"
log "the CSI peer $VER is not in $CACHE_DIR yet: building it once with $gover from the Go module proxy ($(build_expect "about 4-6 min on 2 cores, longer on a loaded machine"))"
cd "$HERE/csi-peer"
mkdir "$TMP/bin"
# external-provisioner's own version variable, so `csi-provisioner --version` says what was built.
go_build_bin "csi-provisioner ${VER%%-k8s-*}" "$TMP/bin/csi-provisioner" \
  github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner "-X main.version=${VER%%-k8s-*}"
go_build_bin "mock-driver (k8s.io/kubernetes ${VER##*-k8s-})" "$TMP/bin/mock-driver" ./mock-driver
rm -rf "$OUT"
mv -T "$TMP/bin" "$OUT"
"$OUT/csi-provisioner" --version >&2
BUILD_WHAT="the CSI peer" build_done "$START" "$VER" "$OUT"
