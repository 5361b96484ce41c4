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
#
# RBDP_KUBE=1.37 also starts a Kubernetes 1.37.2 control plane (hack/kube-up.sh --kube 1.37,
# binaries from hack/build-kube-137.sh) next to the 1.20 one, sharing the bed's Ceph: its state is in
# $RBDP_BED/k137/ (the plane itself in k137/kube/), and $RBDP_BED/k137/env describes it with the
# same variables, so RBDP_BED=$RBDP_BED/k137 points tests at 1.37 (plus RBDP_KUBE_MINOR=37 and
# RBDP_PEER_BED, the 1.20 bed, for the upgrade test). The default bed's 1.37 plane uses
# ports 2479/2480/7443, any other bed's free ones. RBDP_KUBE=1.20 (the default) leaves a running
# 1.37 plane alone; hack/bed-down.sh stops both.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BED=$(realpath -m -- "${RBDP_BED:-/tmp/rbd-provisioner-bed}")
KUBE_WANT=${RBDP_KUBE:-1.20}
case $KUBE_WANT in 1.20|1.37) ;; *) echo "bed-up: RBDP_KUBE must be 1.20 or 1.37 (got '$KUBE_WANT')" >&2; exit 2 ;; esac
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
    # Below 32768, where Linux picks the local ports of outgoing connections: a port free when
    # chosen must not become some client's ephemeral port before the daemon binds it.
    MON_V2=$(free_port 20000 24000) MON_V1=$(free_port 20000 24000 "$MON_V2")
    ETCD_CLIENT=$(free_port 24000 28000) ETCD_PEER=$(free_port 24000 28000 "$ETCD_CLIENT")
    APISERVER=$(free_port 28000 32000)
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
  # The plane's own kubectl build, never whatever kubectl the PATH has.
  local kubectl=$KUBE_BIN_DIR/kubectl admin_key kube_key tmp
  [ -x "$kubectl" ] || die "no kubectl in $KUBE_BIN_DIR (hack/build-kube.sh builds it)"
  # A monitor on a port other than 6789 needs the v1: prefix, or librados reports a wrong key
  # as a timeout after the connect timeout (beds on free ports: the tests of wrong keys).
  local mons=127.0.0.1:$MON_V1
  [ "$MON_V1" = 6789 ] || mons=v1:$mons
  admin_key=$(ceph-authtool -p -n client.admin "$CEPH_DIR/ceph.client.admin.keyring")
  kube_key=$(ceph-authtool -p -n client.kube "$CEPH_DIR/ceph.client.kube.keyring")
  tmp=$(mktemp "$BED/.env.XXXXXX")   # mktemp makes it 0600; mv keeps readers from a half file
  cat > "$tmp" <<EOF
export RBDP_BED='$BED'
export KUBECONFIG='$KUBE_DIR/admin.kubeconfig'
export KUBE_BIN_DIR='$KUBE_BIN_DIR'
export KUBECTL='$kubectl'
export CEPH_CONF='$CONF'
export CEPH_MONITORS='$mons'
export CEPH_MON_HOST='[v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]'
export CEPH_ADMIN_KEY='$admin_key'
export CEPH_KUBE_KEY='$kube_key'
export RBDP_KUBE_MINOR='20'
EOF
  chmod 600 "$tmp"
  mv -f "$tmp" "$BED/env"
}

# ------------------------------------------------------------------ the 1.37 plane (RBDP_KUBE=1.37)
K137=$BED/k137
k137_ok() {  # all three daemons alive and the API server ready
  local f
  for f in "$K137"/kube/pids/{etcd,kube-apiserver,kube-controller-manager}.pid; do
    [ -f "$f" ] && alive "$(cat "$f")" || return 1
  done
  curl -fsS --max-time 5 --cacert "$K137/kube/pki/ca.crt" --cert "$K137/kube/pki/admin.crt" \
    --key "$K137/kube/pki/admin.key" "https://127.0.0.1:$K137_APISERVER/readyz" >/dev/null 2>&1
}
k137_write_env() {  # the bed's env with the 1.37 kubeconfig; ceph/ is the bed's own (a symlink)
  local tmp
  ln -sfn ../ceph "$K137/ceph"
  tmp=$(mktemp "$K137/.env.XXXXXX")
  sed -e "s|^export RBDP_BED=.*|export RBDP_BED='$K137'|" \
      -e "s|^export KUBECONFIG=.*|export KUBECONFIG='$K137/kube/admin.kubeconfig'|" \
      -e "s|^export KUBE_BIN_DIR=.*|export KUBE_BIN_DIR='$K137_BIN_DIR'|" \
      -e "s|^export KUBECTL=.*|export KUBECTL='$K137_BIN_DIR/kubectl'|" \
      -e '/^export RBDP_KUBE_MINOR=/d' "$BED/env" > "$tmp"
  printf "export RBDP_KUBE_MINOR='37'\nexport RBDP_PEER_BED='%s'\n" "$BED" >> "$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$K137/env"
}
ensure_k137() {
  [ "$KUBE_WANT" = 1.37 ] || return 0
  mkdir -p "$K137"
  chmod 700 "$K137"
  if [ -f "$K137/ports" ]; then
    # shellcheck disable=SC1091
    . "$K137/ports"
  elif [ "$BED" = "$DEFAULT_BED" ] && ! port_in_use 2479 && ! port_in_use 2480 && ! port_in_use 7443; then
    K137_ETCD_CLIENT=2479 K137_ETCD_PEER=2480 K137_APISERVER=7443
  else  # another bed, or the default ports are taken (say by a hand-started kube-up.sh --kube 1.37)
    K137_ETCD_CLIENT=$(free_port 24000 28000 "$ETCD_CLIENT $ETCD_PEER")
    K137_ETCD_PEER=$(free_port 24000 28000 "$ETCD_CLIENT $ETCD_PEER $K137_ETCD_CLIENT")
    K137_APISERVER=$(free_port 28000 32000 "$APISERVER")
  fi
  K137_BIN_DIR=$("$HERE/build-kube-137.sh" 9>&- | tail -1)
  [ -x "$K137_BIN_DIR/kube-apiserver" ] || die "hack/build-kube-137.sh did not yield a bin dir (got '$K137_BIN_DIR')"
  if k137_ok; then
    k137_write_env
    log "1.37 plane already up in $K137 (apiserver :$K137_APISERVER); env: $K137/env"
    return 0
  fi
  if [ -d "$K137/kube" ]; then
    log "stale 1.37 plane state in $K137/kube: stopping and purging it"
    "$HERE/kube-down.sh" "$K137/kube" --purge >&2 9>&-
  fi
  for p in "$K137_ETCD_CLIENT" "$K137_ETCD_PEER" "$K137_APISERVER"; do
    port_in_use "$p" && die "port 127.0.0.1:$p (for the 1.37 plane) is already in use"
  done
  printf 'K137_ETCD_CLIENT=%s K137_ETCD_PEER=%s K137_APISERVER=%s\n' \
    "$K137_ETCD_CLIENT" "$K137_ETCD_PEER" "$K137_APISERVER" > "$K137/ports"
  log "starting the Kubernetes 1.37 plane in $K137/kube (etcd $K137_ETCD_CLIENT/$K137_ETCD_PEER, apiserver $K137_APISERVER)"
  if ! KUBE_BIN_DIR=$K137_BIN_DIR ETCD_BIN= ETCD_CLIENT_PORT=$K137_ETCD_CLIENT \
      ETCD_PEER_PORT=$K137_ETCD_PEER APISERVER_PORT=$K137_APISERVER \
      "$HERE/kube-up.sh" --kube 1.37 "$K137/kube" >"$K137/kube-up.log" 2>&1 9>&-; then
    tail -25 "$K137/kube-up.log" >&2
    die "the 1.37 plane failed to start (log: $K137/kube-up.log)"
  fi
  k137_write_env
  log "1.37 plane ready in $(awk '/^kube-ready-seconds/ {print $2}' "$K137/kube-up.log")s; tests: RBDP_BED=$K137"
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
      log "bed already up and healthy in $BED (env: $BED/env)"
      ensure_k137
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
ensure_k137
log "timings: Ceph ready in ${ceph_s}s, control plane ready in ${kube_s}s (in parallel), bed-up total $(elapsed)s"
log "bed up in $BED; use: source $BED/env   stop: hack/bed-down.sh [--purge]"
