#!/usr/bin/env bash
# hack/plane-up.sh DIR -- a control plane of a test run's own (etcd, kube-apiserver,
# kube-controller-manager on free ports), of the same Kubernetes version as the bed $RBDP_BED
# names and sharing that bed's Ceph. For tests that pause or stop kube-controller-manager: on
# their own plane they never stall the claims of another test run, or of the demo, on the bed.
#
# Writes DIR/env (the bed's env with this plane's kubeconfig, binaries and kubectl), so
# RBDP_BED=DIR points tests at it. Stop with: hack/kube-down.sh DIR/kube --purge; rm -rf DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=$(realpath -m -- "$1")
BED=$(realpath -m -- "${RBDP_BED:-/tmp/rbd-provisioner-bed}")
LOG_TAG=plane-up
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
[ -f "$BED/env" ] || die "no bed in $BED (hack/bed-up.sh)"
minor=$(sed -n "s/^export RBDP_KUBE_MINOR='\([0-9]*\)'/\1/p" "$BED/env")
bin=$(sed -n "s/^export KUBE_BIN_DIR='\(.*\)'/\1/p" "$BED/env")
case ${minor:-20} in 20) kv=1.20 ;; 37) kv=1.37 ;; *) die "unknown plane version '$minor' in $BED/env" ;; esac
mkdir -p "$DIR"
chmod 700 "$DIR"
# The 1.20 plane takes Debian's etcd from the PATH, the 1.37 one its own build.
etcd=
[ $kv = 1.20 ] || etcd=$bin/etcd
ec=$(free_port 24000 28000) ep=$(free_port 24000 28000 "$ec") ap=$(free_port 28000 32000)
if ! KUBE_BIN_DIR=$bin ETCD_BIN=$etcd ETCD_CLIENT_PORT=$ec ETCD_PEER_PORT=$ep APISERVER_PORT=$ap \
    "$HERE/kube-up.sh" --kube $kv "$DIR/kube" >"$DIR/kube-up.log" 2>&1; then
  tail -25 "$DIR/kube-up.log" >&2
  "$HERE/kube-down.sh" "$DIR/kube" --purge >&2 || true
  die "the plane failed to start (log: $DIR/kube-up.log)"
fi
ln -sfn "$(realpath "$BED/ceph")" "$DIR/ceph"
tmp=$(mktemp "$DIR/.env.XXXXXX")
sed -e "s|^export RBDP_BED=.*|export RBDP_BED='$DIR'|" \
    -e "s|^export KUBECONFIG=.*|export KUBECONFIG='$DIR/kube/admin.kubeconfig'|" \
    -e '/^export RBDP_PEER_BED=/d' "$BED/env" > "$tmp"
chmod 600 "$tmp"
mv -f "$tmp" "$DIR/env"
log "plane $kv up in $DIR (apiserver :$ap), on the Ceph of $BED"
