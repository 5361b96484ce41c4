#!/usr/bin/env bash
# hack/plane-up.sh DIR -- a control plane of a test run's own (etcd, kube-apiserver,
# kube-controller-manager on free ports), of the same Kubernetes version as the bed $RBDP_BED
# names and sharing that bed's Ceph. For tests that pause or stop kube-controller-manager: on
# their own plane they never stall the claims of another test run, or of the demo, on the bed.
#
# Writes DIR/env (the bed's env with this plane's kubeconfig, binaries and kubectl; no
# snapshot-controller runs here, so the env names none), so RBDP_BED=DIR points tests at it. Stop with: hack/kube-down.sh DIR/kube --purge; rm -rf DIR
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_TAG=plane-up
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
[ $# -eq 1 ] || usage DIR
DIR=$(realpath -m -- "$1")
bed_layout
[ -f "$BED_ENV" ] || die "no bed in $BED (hack/bed-up.sh)"
minor=$(env_value "$BED_ENV" RBDP_KUBE_MINOR)
bin=$(env_value "$BED_ENV" KUBE_BIN_DIR)
case ${minor:-20} in 20) kv=1.20 ;; 37) kv=1.37 ;; *) die "unknown plane version '$minor' in $BED_ENV" ;; esac
SRC=$BED SRC_ENV=$BED_ENV SRC_CEPH=$CEPH_DIR
bed_layout_at "$DIR"   # this plane's dir has a bed's shape: env, kube/, ceph -> the bed's
mkdir -p "$DIR"
chmod 700 "$DIR"
# The 1.20 plane takes Debian's etcd from the PATH, the 1.37 one its own build.
etcd=
[ $kv = 1.20 ] || etcd=$bin/etcd
ec=$(free_port_for etcd) ep=$(free_port_for etcd "$ec") ap=$(free_port_for apiserver)
if ! KUBE_BIN_DIR=$bin ETCD_BIN=$etcd ETCD_CLIENT_PORT=$ec ETCD_PEER_PORT=$ep APISERVER_PORT=$ap \
    "$HERE/kube-up.sh" --kube $kv "$KUBE_DIR" >"$DIR/kube-up.log" 2>&1; then
  tail -25 "$DIR/kube-up.log" >&2
  "$HERE/kube-down.sh" "$KUBE_DIR" --purge >&2 || true
  die "the plane failed to start (log: $DIR/kube-up.log)"
fi
ln -sfn "$(realpath "$SRC_CEPH")" "$CEPH_DIR"
tmp=$(mktemp "$DIR/.env.XXXXXX")
sed -e "s|^export RBDP_BED=.*|export RBDP_BED='$DIR'|" \
    -e "s|^export KUBECONFIG=.*|export KUBECONFIG='$KUBE_DIR/admin.kubeconfig'|" \
    -e '/^export RBDP_PEER_BED=/d' -e '/^export RBDP_SNAPSHOT_CONTROLLER=/d' "$SRC_ENV" > "$tmp"
chmod 600 "$tmp"
mv -f "$tmp" "$BED_ENV"
log "plane $kv up in $DIR (apiserver :$ap), on the Ceph of $SRC"
