#!/usr/bin/env bash
# hack/bed-up.sh -- bring up the local test bed: single-host Ceph + a Kubernetes 1.20 control plane,
# all on 127.0.0.1, state in ${RBDP_BED:-/tmp/rbd-provisioner-bed} (ceph/ and kube/ inside).
# The default bed uses the standard ports (6789, 6443, ...); any other RBDP_BED picks free ports,
# so several beds (one per test run) can live side by side.
#
# Idempotent: if the bed is already up and healthy it says so and exits 0. Stale or half-dead
# state is stopped and purged first, so tests always get a clean bed (fresh Ceph, empty etcd).
# On success writes $RBDP_BED/env (mode 600), which tests parse and shells can source:
#   RBDP_BED KUBECONFIG KUBE_BIN_DIR KUBECTL CEPH_CONF CEPH_MONITORS CEPH_MON_HOST
#   CEPH_ADMIN_KEY CEPH_KUBE_KEY
# Stop with hack/bed-down.sh [--purge].
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BED=$(realpath -m -- "${RBDP_BED:-/tmp/rbd-provisioner-bed}")
START_NS=$(date +%s%N)
LOG_TAG=bed-up
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"

# One bed-up/bed-down at a time (parallel test runs may all call bed-up). The lock lives next to
# the state dir because a purge deletes the dir; fd 9 is closed for every child that starts
# daemons, so a daemon never holds the lock.
exec 9>"$BED.lock"
flock -w 600 9 || die "another bed-up/bed-down holds $BED.lock"

"$HERE/install-deps.sh" >&2 9>&-
KUBE_BIN_DIR=$("$HERE/build-kube.sh" 9>&- | tail -1)
[ -x "$KUBE_BIN_DIR/kube-apiserver" ] || die "hack/build-kube.sh did not yield a bin dir (got '$KUBE_BIN_DIR')"

CEPH_DIR=$BED/ceph KUBE_DIR=$BED/kube
CONF=$CEPH_DIR/ceph.conf PKI=$KUBE_DIR/pki
DEFAULT_BED=/tmp/rbd-provisioner-bed
# Ports: the default bed keeps the standard ones (the walkthrough's "monitors: 127.0.0.1:6789");
# any other bed takes free ones, so beds of parallel runs never meet. They are kept in $BED/ports
# while the bed lives, so a healthy bed is found again.
load_ports() {
  if [ -f "$BED/ports" ]; then
    # shellcheck disable=SC1091
    . "$BED/ports"
  elif [ "$BED" = "$DEFAULT_BED" ]; then
    MON_V2=3300 MON_V1=6789 ETCD_CLIENT=2379 ETCD_PEER=2380 APISERVER=6443
  else
    MON_V2=$(free_port 20000 30000) MON_V1=$(free_port 20000 30000 "$MON_V2")
    ETCD_CLIENT=$(free_port 30000 40000) ETCD_PEER=$(free_port 30000 40000 "$ETCD_CLIENT")
    APISERVER=$(free_port 40000 50000)
  fi
}
load_ports
ceph_ok() { [ -f "$CONF" ] && timeout 10 ceph -c "$CONF" --connect-timeout 5 -s >/dev/null 2>&1; }
kube_ok() {
  [ -f "$PKI/admin.crt" ] && curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
    --key "$PKI/admin.key" "https://127.0.0.1:$APISERVER/readyz" >/dev/null 2>&1 && kcm_ok
}
# kube-controller-manager serves no health port (--secure-port=0); it must run, and with the
# controllers the tests rely on (a bed started by an older kube-up.sh may lack some).
KCM_NEEDS="persistentvolume-binder persistentvolume-expander pv-protection pvc-protection serviceaccount-token namespace"
kcm_ok() {
  local pidf=$KUBE_DIR/pids/kube-controller-manager.pid cmd c
  [ -f "$pidf" ] && alive "$(cat "$pidf")" || return 1
  cmd=$(tr '\0' ' ' < "/proc/$(cat "$pidf")/cmdline" 2>/dev/null) || return 1
  case "$cmd" in *--use-service-account-credentials=true*) ;; *) return 1 ;; esac
  for c in $KCM_NEEDS; do
    [[ "$cmd" =~ --controllers=([^ ]*) ]] || return 1
    case ",${BASH_REMATCH[1]}," in *",$c,"*) ;; *) return 1 ;; esac
  done
}

write_env() {  # keys come from the keyrings via short-lived ceph-authtool calls, never argv
  local kubectl=/usr/bin/kubectl admin_key kube_key tmp
  [ -x "$kubectl" ] || kubectl=$KUBE_BIN_DIR/kubectl
  admin_key=$(ceph-authtool -p -n client.admin "$CEPH_DIR/ceph.client.admin.keyring")
  kube_key=$(ceph-authtool -p -n client.kube "$CEPH_DIR/ceph.client.kube.keyring")
  tmp=$(mktemp "$BED/.env.XXXXXX")   # mktemp makes it 0600; mv keeps readers from a half file
  cat > "$tmp" <<EOF
export RBDP_BED='$BED'
export KUBECONFIG='$KUBE_DIR/admin.kubeconfig'
export KUBE_BIN_DIR='$KUBE_BIN_DIR'
export KUBECTL='$kubectl'
export CEPH_CONF='$CONF'
export CEPH_MONITORS='127.0.0.1:$MON_V1'
export CEPH_MON_HOST='[v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]'
export CEPH_ADMIN_KEY='$admin_key'
export CEPH_KUBE_KEY='$kube_key'
EOF
  chmod 600 "$tmp"
  mv -f "$tmp" "$BED/env"
}

all_daemons_alive() {
  local f
  for f in "$CEPH_DIR"/pids/{mon.a,mgr.x,osd.0}.pid "$KUBE_DIR"/pids/{etcd,kube-apiserver,kube-controller-manager}.pid; do
    [ -f "$f" ] && alive "$(cat "$f")" || return 1
  done
}
# A busy machine (parallel builds) can make one probe slow: retry before declaring a live bed
# broken, since purging it would pull the rug from under whoever is using it.
if [ -f "$BED/.rbdp-bed" ] && all_daemons_alive; then
  for try in 1 2 3; do
    if ceph_ok && kube_ok; then
      [ -f "$BED/env" ] || write_env
      log "bed already up and healthy in $BED; nothing to do (env: $BED/env)"
      exit 0
    fi
    log "bed daemons alive but not answering (try $try/3)"
    sleep 3
  done
fi

# Anything left is stale or broken: stop recorded pids and purge, tests expect a clean bed.
if [ -e "$BED" ]; then
  if [ -f "$BED/.rbdp-bed" ]; then
    log "stale or broken bed state in $BED: stopping and purging it"
    "$HERE/bed-down.sh" --purge --locked >&2 9>&-
  elif [ -n "$(ls -A "$BED" 2>/dev/null)" ]; then
    die "$BED exists, is not empty and is not a test bed; set RBDP_BED elsewhere"
  fi
fi
# Fail at once (not after the other half has come up) if a port is taken by someone else.
load_ports
for p in "$MON_V2" "$MON_V1" "$ETCD_CLIENT" "$ETCD_PEER" "$APISERVER"; do
  if port_in_use "$p"; then
    ss -ltnp "sport = :$p" 2>/dev/null | tail -n +2 >&2 || true
    die "port 127.0.0.1:$p is already in use (another Ceph / etcd / apiserver?)"
  fi
done
mkdir -p "$BED"
chmod 700 "$BED"
touch "$BED/.rbdp-bed"
printf 'MON_V2=%s MON_V1=%s ETCD_CLIENT=%s ETCD_PEER=%s APISERVER=%s\n' \
  "$MON_V2" "$MON_V1" "$ETCD_CLIENT" "$ETCD_PEER" "$APISERVER" > "$BED/ports"
log "ports: mon $MON_V2/$MON_V1, etcd $ETCD_CLIENT/$ETCD_PEER, apiserver $APISERVER"

# Ceph and the control plane are independent: start them in parallel. Child logs are kept in $BED.
log "starting Ceph ($CEPH_DIR) and the control plane ($KUBE_DIR) in parallel"
CEPH_MON_PORT_V2=$MON_V2 CEPH_MON_PORT_V1=$MON_V1 \
  "$HERE/ceph-up.sh" "$CEPH_DIR" >"$BED/ceph-up.log" 2>&1 9>&- &
cjob=$!
KUBE_BIN_DIR=$KUBE_BIN_DIR ETCD_CLIENT_PORT=$ETCD_CLIENT ETCD_PEER_PORT=$ETCD_PEER APISERVER_PORT=$APISERVER \
  "$HERE/kube-up.sh" "$KUBE_DIR" >"$BED/kube-up.log" 2>&1 9>&- &
kjob=$!
crc=0 krc=0
wait $cjob || crc=$?
wait $kjob || krc=$?
if [ $crc -ne 0 ] || [ $krc -ne 0 ]; then
  [ $crc -eq 0 ] || { log "Ceph failed (rc=$crc); tail of $BED/ceph-up.log:"; tail -25 "$BED/ceph-up.log" >&2; }
  [ $krc -eq 0 ] || { log "control plane failed (rc=$krc); tail of $BED/kube-up.log:"; tail -25 "$BED/kube-up.log" >&2; }
  log "stopping whatever did come up (state kept for debugging; the next bed-up purges it)"
  "$HERE/bed-down.sh" --locked >&2 9>&-
  die "bed-up failed"
fi
ceph_s=$(awk '/^ceph-ready-seconds/ {print $2}' "$BED/ceph-up.log")
kube_s=$(awk '/^kube-ready-seconds/ {print $2}' "$BED/kube-up.log")

write_env
log "timings: Ceph ready in ${ceph_s}s, control plane ready in ${kube_s}s (in parallel), bed-up total $(elapsed)s"
log "bed up in $BED; use: source $BED/env   stop: hack/bed-down.sh [--purge]"
