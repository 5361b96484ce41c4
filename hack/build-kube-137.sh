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
CACHE=${RBDP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rbd-provisioner}
KVER=1.37.2
OUT=$CACHE/kube-$KVER/bin
if [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/kube-controller-manager" ] && [ -x "$OUT/etcd" ] &&
   [ -x "$OUT/kubectl" ]; then
  echo "$OUT"; exit 0
fi

GO=${GO:-$(command -v go || true)}
[ -n "$GO" ] && [ -x "$GO" ] || { echo "build-kube-137: no go on PATH (install Go >= 1.26, or set GO)" >&2; exit 1; }
gover=$("$GO" env GOVERSION)
case $gover in
  go1.2[6-9]*|go1.[3-9][0-9]*) ;;
  *) echo "build-kube-137: $GO is $gover; Kubernetes $KVER needs Go >= 1.26 (set GO)" >&2; exit 1 ;;
esac

# Caches under CACHE; GOTOOLCHAIN=local: never fetch another toolchain; -modcacherw so the
# cache can be deleted with rm -rf; GOWORK=off: ignore any go.work of the caller.
export GOMODCACHE=$CACHE/go137/mod GOCACHE=$CACHE/go137/build GOTOOLCHAIN=local GOWORK=off \
  GOFLAGS=-modcacherw CGO_ENABLED=0
mkdir -p "$GOMODCACHE" "$GOCACHE" "$CACHE/kube-$KVER"
TMP=$(mktemp -d "$CACHE/kube-$KVER/tmp.XXXXXX")
LOG_TAG=build-kube-137
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
trap 'stop_heartbeat; rm -rf "$TMP"' EXIT

START=$(date +%s)
LAST=$CACHE/build-kube-137.last
missing=()
for w in kubectl kube-controller-manager kube-apiserver etcd; do [ -x "$OUT/$w" ] || missing+=("$w"); done
if [ ${#missing[@]} -eq 4 ]; then
  # "seconds version date" of the last complete build, written below
  read -r last_s last_v last_d 2>/dev/null < "$LAST" || last_s=
  if [ -n "$last_s" ]; then
    expect="the last build here ($last_v, $last_d) took $(fmt_secs "$last_s")"
  else
    expect="about 7-10 min on 2 cores, longer on a loaded machine"
  fi
  log "Kubernetes $KVER is not in $CACHE yet: building kubectl, kube-controller-manager, kube-apiserver and etcd once with $gover from the Go module proxy ($expect)"
else
  log "Kubernetes $KVER in $CACHE lacks ${missing[*]}: building what is missing"
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
took=$(( $(date +%s) - START ))
# Only a complete build foretells the next cold one (a cache that lacked one binary builds fast).
[ ${#missing[@]} -ne 4 ] || echo "$took $KVER $(date -u +%F)" > "$LAST"
log "built Kubernetes $KVER in $(fmt_secs "$took"), cached in $OUT"
echo "$OUT"
