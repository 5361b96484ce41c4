#!/usr/bin/env bash
# hack/build-kube.sh -- build kube-apiserver and kube-controller-manager from Debian bookworm's
# `kubernetes` source package (1.20.2) with Debian's Go, and cache them outside the repo.
#
# Prints the directory holding the two binaries (and a 1.20 kubectl) on its last line.
# Cache: $RBDP_CACHE (default ${XDG_CACHE_HOME:-$HOME/.cache}/rbd-provisioner)/kube-<debian version>/bin
# A second run with the same source version finds the cache and returns at once.
# A build says on stderr what it builds, every 30 s that it still does, and how long each step
# took; a complete build's duration is kept in $RBDP_CACHE/build-kube.last, so the next cold build
# can say how long it will take here.
#
# Three fixes make 1.20 build and run with Go 1.19: GOPATH mode (GO111MODULE=off); the generated
# OpenAPI file (absent from the tarball) made with the vendored openapi-gen; the vendored
# modern-go/reflect2 1.0.1 (segfaults under Go >= 1.18) replaced by Debian's 1.0.2 source.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_TAG=build-kube
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
export DEBIAN_FRONTEND=noninteractive

VER=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ {print $2; exit}')
[ -n "$VER" ] || fail 1 "no source package 'kubernetes' (run hack/install-deps.sh: it adds deb-src)"
OUT=$(kube_bin_cache "$VER")
if have_bins "$OUT" kube-apiserver kube-controller-manager kubectl; then echo "$OUT"; exit 0; fi

KVER=1.20.2   # what Debian's source package really is, whatever its version says
trap stop_heartbeat EXIT
START=$(date +%s)
log "Kubernetes $KVER is not in $CACHE_DIR yet: building kube-apiserver and kube-controller-manager once from Debian's source package $VER ($(build_expect "about 3-5 min on 2 cores, longer on a loaded machine"))"

WORK=$CACHE_DIR/build-$VER
mkdir -p "$WORK" && cd "$WORK"
# Kubernetes 1.20 builds with Debian's Go 1.19 in GOPATH mode, not with whatever newer Go is
# first on PATH.
GO=${RBDP_GO119:-/usr/lib/go-1.19/bin/go}
[ -x "$GO" ] || fail 1 "missing Debian's Go 1.19 at $GO (run hack/install-deps.sh)"
for b in apt-get dpkg-deb; do command -v $b >/dev/null || fail 1 "missing $b (run hack/install-deps.sh)"; done

SRC=$(ls -d "$WORK"/kubernetes-*/ 2>/dev/null | head -1 || true)
begin_step "Debian's kubernetes source package and kubectl" fetching fetched
if [ -z "$SRC" ]; then
  apt-get source -qq kubernetes >/dev/null
  SRC=$(ls -d "$WORK"/kubernetes-*/ | head -1)
fi
SRC=${SRC%/}
ls "$WORK"/golang-github-modern-go-reflect2-dev_*.deb >/dev/null 2>&1 || apt-get download -qq golang-github-modern-go-reflect2-dev
ls "$WORK"/kubernetes-client_*.deb >/dev/null 2>&1 || apt-get download -qq kubernetes-client
end_step

R2=$SRC/vendor/github.com/modern-go/reflect2
if [ ! -f "$R2/go_above_118.go" ]; then
  rm -rf "$WORK/reflect2-deb" && dpkg-deb -x "$WORK"/golang-github-modern-go-reflect2-dev_*.deb "$WORK/reflect2-deb"
  rm -rf "$R2" && mkdir -p "$R2"
  cp "$WORK"/reflect2-deb/usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
     "$WORK"/reflect2-deb/usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$R2/"
fi

export GOROOT=$("$GO" env GOROOT) GOPATH=$WORK/gopath GO111MODULE=off CGO_ENABLED=0 GOCACHE=$WORK/gocache GOFLAGS=
mkdir -p "$GOPATH/src/k8s.io" "$WORK/bin"
ln -sfn "$SRC" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"

OPENAPI_OUT=pkg/generated/openapi/zz_generated.openapi.go
if [ ! -f "$OPENAPI_OUT" ]; then
  begin_step "the OpenAPI definitions (openapi-gen) for $KVER"
  "$GO" build -o "$WORK/bin/openapi-gen" k8s.io/kubernetes/vendor/k8s.io/kube-openapi/cmd/openapi-gen
  find -H . \( -not \( \( -path './_*' -o -path './.*' -o -path ./vendor \) -prune \) \) -type f -name '*.go' \
    | sed 's|^./staging/src|vendor|' | sed 's|/[^/]*$||' | sed 's|^./||' | LC_ALL=C sort -u > "$WORK/all_go_dirs.txt"
  while read -r d; do find "$d" -maxdepth 1 -type f -name '*.go'; done < "$WORK/all_go_dirs.txt" \
    | xargs grep --color=never -l '^// *+k8s:' \
    | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
    | xargs grep --color=never -l '+k8s:openapi-gen=' | xargs -n1 dirname | LC_ALL=C sort -u > "$WORK/kube_openapi_dirs.txt"
  "$WORK/bin/openapi-gen" --logtostderr \
    -i "$(sed 's|^|k8s.io/kubernetes/|' "$WORK/kube_openapi_dirs.txt" | paste -sd, -)" \
    -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$WORK/openapi_violations.report" 2>"$WORK/openapi-gen.log"
  diff -q "$WORK/openapi_violations.report" api/api-rules/violation_exceptions.list
  end_step
fi

V=k8s.io/kubernetes/vendor/k8s.io
LDF="-s -w -buildid="
for p in client-go/pkg/version component-base/version; do
  LDF+=" -X $V/$p.gitVersion=v$KVER -X $V/$p.gitMajor=1 -X $V/$p.gitMinor=20"
  LDF+=" -X $V/$p.gitCommit=faecb196815e248d3ecfb03c680a4507229c2a56 -X $V/$p.gitTreeState=archive"
done
for w in kube-apiserver kube-controller-manager; do
  begin_step "$w $KVER"
  "$GO" build -tags selinux,notest -ldflags "$LDF" -o "$WORK/bin/$w" "k8s.io/kubernetes/cmd/$w"
  end_step
done

mkdir -p "$OUT"
cp "$WORK/bin/kube-apiserver" "$WORK/bin/kube-controller-manager" "$OUT/"
rm -rf "$WORK/kc-deb" && dpkg-deb -x "$WORK"/kubernetes-client_*.deb "$WORK/kc-deb"
cp "$WORK/kc-deb/usr/bin/kubectl" "$OUT/kubectl"
"$OUT/kube-apiserver" --version >&2
# The source tree and Go cache are large and only needed to rebuild.
rm -rf "$WORK"
build_done "$START" "$KVER" "$OUT"
