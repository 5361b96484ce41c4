#!/usr/bin/env bash
# hack/build-kube-137.sh -- build kube-apiserver, kube-controller-manager and kubectl 1.37.2 and
# etcd 3.6.16 from the Go module proxy with the wrapper modules in hack/kube137/, and cache them
# outside the repo. The tests talk to the 1.37 plane with this kubectl, never with whatever
# kubectl the PATH has.
#
# Prints the directory holding the four binaries on its last line.
# Cache: $RBDP_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/rbd-provisioner)/kube-1.37.2/bin
# The Go module and build caches live under $RBDP_CACHE/go137 too, so nothing lands in the repo
# or in the caller's Go caches. A rerun with a complete cache returns at once.
# A build says on stderr what it builds, every 30 s that it still does, and how long each step
# took; a complete build's duration is kept in $RBDP_CACHE/build-kube-137.last, so the next cold
# build can say how long it will take here.
#
# Environment:
#   GO [go on PATH]   a Go >= 1.26 that reaches the module proxy (not Debian's Go 1.19)
#   KUBE137_NICE [19] niceness of the build (the machines are shared)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_TAG=build-kube-137
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
KVER=1.37.2
OUT=$(kube_bin_cache "$KVER")
BINS=(kubectl kube-controller-manager kube-apiserver etcd)
if have_bins "$OUT" "${BINS[@]}"; then echo "$OUT"; exit 0; fi

go_for_build "Kubernetes $KVER"
go_build_env
mkdir -p "$(dirname "$OUT")"
TMP=$(mktemp -d "$(dirname "$OUT")/tmp.XXXXXX")
trap 'stop_heartbeat; rm -rf "$TMP"' EXIT

START=$(date +%s)
missing=()
for w in "${BINS[@]}"; do [ -x "$OUT/$w" ] || missing+=("$w"); done
scope=partial; [ ${#missing[@]} -ne ${#BINS[@]} ] || scope=complete
if [ $scope = complete ]; then
  log "Kubernetes $KVER is not in $CACHE_DIR yet: building kubectl, kube-controller-manager, kube-apiserver and etcd once with $gover from the Go module proxy ($(build_expect "about 7-10 min on 2 cores, longer on a loaded machine"))"
else
  log "Kubernetes $KVER in $CACHE_DIR lacks ${missing[*]}: building what is missing"
fi
# kube-apiserver --version and /version report what these say. The module zip carries no git
# data: gitCommit is set empty rather than left at the "$Format:%H$" placeholder.
LDF="-s -w -buildid="
for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  LDF+=" -X $p.gitVersion=v$KVER -X $p.gitMajor=1 -X $p.gitMinor=37 -X $p.gitTreeState=archive"
  LDF+=" -X $p.gitCommit= -X $p.buildDate=1970-01-01T00:00:00Z"
done
NICE=(nice -n "${KUBE137_NICE:-19}")
# Only what is missing (a cache from before kubectl was built here gains just kubectl).
mkdir -p "$OUT"
cd "$HERE/kube137"
for w in kubectl kube-controller-manager kube-apiserver; do
  [ -x "$OUT/$w" ] && continue
  begin_step "$w $KVER"
  "${NICE[@]}" "$GO" build -trimpath -tags selinux,notest -ldflags "$LDF" -o "$TMP/$w" "k8s.io/kubernetes/cmd/$w"
  end_step
done
if [ ! -x "$OUT/etcd" ]; then
  cd "$HERE/kube137/etcd"
  begin_step "etcd (for Kubernetes $KVER)"
  "${NICE[@]}" "$GO" build -trimpath -ldflags "-s -w -buildid=" -o "$TMP/etcd" .
  end_step
fi
# kube-apiserver last-in (the check above wants all four), so an interrupted build never
# leaves a cache that looks complete
for w in kubectl etcd kube-controller-manager kube-apiserver; do
  if [ -x "$TMP/$w" ]; then mv "$TMP/$w" "$OUT/"; fi
done
"$OUT/kube-apiserver" --version >&2
"$OUT/etcd" --version | head -1 >&2
build_done "$START" "$KVER" "$OUT" $scope
