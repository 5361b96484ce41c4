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
#   CEPH_ADMIN_KEY CEPH_KUBE_KEY RBDP_KUBE_MINOR RBDP_SNAPSHOT_CONTROLLER
# Stop with hack/bed-down.sh [--purge].
#
# RBDP_KUBE=1.37 also starts a Kubernetes 1.37.2 control plane (hack/kube-up.sh --kube 1.37,
# binaries from hack/build-kube-137.sh) next to the 1.20 one, sharing the bed's Ceph: its state is in
# $RBDP_BED/k137/ (the plane itself in k137/kube/), and $RBDP_BED/k137/env describes it with the
# same variables, so RBDP_BED=$RBDP_BED/k137 points tests at 1.37 (plus RBDP_KUBE_MINOR=37 and
# RBDP_PEER_BED, the 1.20 bed, for the upgrade test). The default bed's 1.37 plane uses
# ports 2479/2480/7443, any other bed's free ones. RBDP_KUBE=1.20 (the default) leaves a running
# 1.37 plane alone; hack/bed-down.sh stops both.
#
# Each plane also runs the upstream snapshot-controller (binary and snapshot.storage.k8s.io/v1 CRDs
# from hack/build-snapshot-controller.sh): the CRDs are applied with the plane's kubectl and
# Established before it starts (admin kubeconfig, no leader election; log and pid file in the
# plane's logs/ and pids/, where hack/kube-down.sh stops it), the plane's env names its version
# (RBDP_SNAPSHOT_CONTROLLER), and a rerun starts it again if it died. On 1.20 the API server drops
# the CRDs' validation rules (x-kubernetes-validations, see the README).
#
# RBDP_PLANES ("1.20", "1.37" or "1.20 1.37") names the planes to build and start instead, and
# overrides RBDP_KUBE: hack/demo.sh asks for its one plane, so a fresh machine builds only that
# one. A bed without the 1.20 plane has no $RBDP_BED/env (its 1.37 env names no RBDP_PEER_BED);
# a later run asking for 1.20 adds it beside the running Ceph and 1.37 plane and then names it
# in the 1.37 env. Planes not asked for are left as they are.
#
# RBDP_KCM_QPS=N starts the planes' kube-controller-manager with client QPS N, burst 2N (see
# hack/kube-up.sh), for the provisioning bench's raised-QPS profile; a plane already up is reused
# as it runs (the bench reports the flags it finds), so give that profile a bed of its own.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
START_NS=$(date +%s%N)
LOG_TAG=bed-up
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
bed_layout
KUBE_WANT=${RBDP_KUBE:-1.20}
case $KUBE_WANT in 1.20|1.37) ;; *) fail 2 "RBDP_KUBE must be 1.20 or 1.37 (got '$KUBE_WANT')" ;; esac
WANT_120=1 WANT_137=0
[ "$KUBE_WANT" = 1.20 ] || WANT_137=1
if [ -n "${RBDP_PLANES:-}" ]; then
  WANT_120=0 WANT_137=0
  for p in ${RBDP_PLANES//,/ }; do
    case $p in
      1.20) WANT_120=1 ;;
      1.37) WANT_137=1 ;;
      *) fail 2 "RBDP_PLANES lists 1.20 and/or 1.37 (got '$RBDP_PLANES')" ;;
    esac
  done
  [ "$WANT_120$WANT_137" != 00 ] || fail 2 "RBDP_PLANES names no plane"
fi

# One bed-up/bed-down at a time (parallel test runs may all call bed-up). The lock lives next to
# the state dir because a purge deletes the dir; fd 9 is closed for every child that starts
# daemons, so a daemon never holds the lock.
exec 9>"$BED_LOCK"
flock -w 600 9 || die "another bed-up/bed-down holds $BED_LOCK"

"$HERE/install-deps.sh" >&2 9>&-
# Only the planes asked for are built; each build says what it builds while it does.
PLANES_TXT=$([ $WANT_120 = 0 ] || printf '1.20 ')$([ $WANT_137 = 0 ] || printf 1.37)
log "planes asked for: ${PLANES_TXT% }"
# build_bins VAR VERSION SCRIPT: VAR is the bin dir SCRIPT prints last (its build exit code if it fails)
build_bins() {
  local dir
  dir=$("$HERE/$3" 9>&- | tail -1)
  [ -x "$dir/kube-apiserver" ] || die "hack/$3 did not yield a bin dir (got '$dir')"
  log "Kubernetes $2 binaries (hack/$3): $dir"
  printf -v "$1" %s "$dir"
}
KUBE_BIN_DIR='' K137_BIN_DIR='' SNAP_DIR='' SNAP_VER=''
[ $WANT_120 = 0 ] || build_bins KUBE_BIN_DIR 1.20 build-kube.sh
[ $WANT_137 = 0 ] || build_bins K137_BIN_DIR 1.37 build-kube-137.sh
if [ $WANT_120$WANT_137 != 00 ]; then
  SNAP_DIR=$("$HERE/build-snapshot-controller.sh" 9>&- | tail -1)
  [ -x "$SNAP_DIR/snapshot-controller" ] || die "hack/build-snapshot-controller.sh did not yield a bin dir (got '$SNAP_DIR')"
  SNAP_VER=$(snapshot_controller_version)
  log "snapshot-controller $SNAP_VER (hack/build-snapshot-controller.sh): $SNAP_DIR"
fi
CONF=$CEPH_DIR/ceph.conf
# The children's logs; hack/ceph-up.sh and hack/kube-up.sh end theirs with "ceph-ready-seconds N"
# and "kube-ready-seconds N".
CEPH_LOG=$BED/ceph-up.log KUBE_LOG=$BED/kube-up.log K137_LOG=$K137/kube-up.log
ready_secs() { awk "/^$1-ready-seconds/ {print \$2}" "$2"; }  # ceph|kube LOG
# Ports: the default bed keeps the standard ones (the walkthrough's "monitors: 127.0.0.1:6789");
# any other bed takes free ones, so beds of parallel runs never meet. They are kept in $BED/ports
# while the bed lives, so a healthy bed is found again.
pick_120_ports() {
  ETCD_CLIENT=$(free_port_for etcd "${K137_ETCD_CLIENT:-} ${K137_ETCD_PEER:-}")
  ETCD_PEER=$(free_port_for etcd "$ETCD_CLIENT ${K137_ETCD_CLIENT:-} ${K137_ETCD_PEER:-}")
  APISERVER=$(free_port_for apiserver "${K137_APISERVER:-}")
}
load_ports() {
  if [ -f "$BED_PORTS" ]; then
    # shellcheck disable=SC1090
    . "$BED_PORTS"
  elif [ "$BED" = "$DEFAULT_BED" ]; then
    MON_V2=${STD_MON_PORTS[0]} MON_V1=${STD_MON_PORTS[1]}
    ETCD_CLIENT=${STD_120_PORTS[0]} ETCD_PEER=${STD_120_PORTS[1]} APISERVER=${STD_120_PORTS[2]}
  else
    MON_V2=$(free_port_for mon) MON_V1=$(free_port_for mon "$MON_V2")
    pick_120_ports
  fi
}
save_ports() {
  printf 'MON_V2=%s MON_V1=%s ETCD_CLIENT=%s ETCD_PEER=%s APISERVER=%s\n' \
    "$MON_V2" "$MON_V1" "$ETCD_CLIENT" "$ETCD_PEER" "$APISERVER" > "$BED_PORTS"
}
load_ports

# write_plane_env ENV KUBECONFIG BIN_DIR MINOR [PEER_BED [SNAPSHOT_VERSION]]: the env file of the
# plane whose dir holds ENV, which tests parse and shells source; SNAPSHOT_VERSION: the version of
# the snapshot-controller the plane runs, if any. Keys come from the keyrings via short-lived
# ceph-authtool calls, never argv.
write_plane_env() {
  local env=$1 kubeconfig=$2 bin=$3 minor=$4 peer=${5:-} snap=${6:-} dir admin_key kube_key tmp
  dir=$(dirname "$env")
  # The plane's own kubectl build, never whatever kubectl the PATH has.
  [ -x "$bin/kubectl" ] || die "no kubectl in $bin (hack/build-kube.sh and hack/build-kube-137.sh build it)"
  # A monitor on a port other than 6789 needs the v1: prefix, or librados reports a wrong key
  # as a timeout after the connect timeout (beds on free ports: the tests of wrong keys).
  local mons=127.0.0.1:$MON_V1
  [ "$MON_V1" = "${STD_MON_PORTS[1]}" ] || mons=v1:$mons
  admin_key=$(ceph-authtool -p -n client.admin "$CEPH_DIR/ceph.client.admin.keyring")
  kube_key=$(ceph-authtool -p -n client.kube "$CEPH_DIR/ceph.client.kube.keyring")
  tmp=$(mktemp "$dir/.env.XXXXXX")   # mktemp makes it 0600; mv keeps readers from a half file
  cat > "$tmp" <<EOF
export RBDP_BED='$dir'
export KUBECONFIG='$kubeconfig'
export KUBE_BIN_DIR='$bin'
export KUBECTL='$bin/kubectl'
export CEPH_CONF='$CONF'
export CEPH_MONITORS='$mons'
export CEPH_MON_HOST='[v2:127.0.0.1:$MON_V2,v1:127.0.0.1:$MON_V1]'
export CEPH_ADMIN_KEY='$admin_key'
export CEPH_KUBE_KEY='$kube_key'
export RBDP_KUBE_MINOR='$minor'
EOF
  [ -z "$peer" ] || printf "export RBDP_PEER_BED='%s'\n" "$peer" >> "$tmp"
  [ -z "$snap" ] || printf "export RBDP_SNAPSHOT_CONTROLLER='%s'\n" "$snap" >> "$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$env"
}
# The env names the snapshot-controller that runs against the plane, if one does.
write_env() {
  write_plane_env "$BED_ENV" "$KUBE_DIR/admin.kubeconfig" "$KUBE_BIN_DIR" 20 "" \
    "$(snapshot_controller_running "$KUBE_DIR" || true)"
}

start_120() {  # in the background; its log in $BED/kube-up.log
  KUBE_BIN_DIR=$KUBE_BIN_DIR ETCD_CLIENT_PORT=$ETCD_CLIENT ETCD_PEER_PORT=$ETCD_PEER APISERVER_PORT=$APISERVER \
    "$HERE/kube-up.sh" "$KUBE_DIR" >"$KUBE_LOG" 2>&1 9>&- &
}
# The 1.20 plane asked for on a bed that has none (it was started for 1.37 alone): added beside
# the running Ceph and 1.37 plane, which it does not touch.
ensure_120() {
  [ $WANT_120 = 1 ] && [ ! -d "$KUBE_DIR" ] || return 0
  # The ports recorded when the bed was made were never bound since: someone may have taken them.
  local p taken=0
  for p in "$ETCD_CLIENT" "$ETCD_PEER" "$APISERVER"; do port_in_use "$p" && taken=1; done
  if [ $taken = 1 ]; then
    [ "$BED" != "$DEFAULT_BED" ] || die "a port of 127.0.0.1:$ETCD_CLIENT/$ETCD_PEER/$APISERVER (for the 1.20 plane) is already in use"
    if [ -f "$K137_PORTS" ]; then
      # shellcheck disable=SC1090
      . "$K137_PORTS"
    fi
    pick_120_ports
    save_ports
  fi
  log "adding the Kubernetes 1.20 plane in $KUBE_DIR (etcd $ETCD_CLIENT/$ETCD_PEER, apiserver $APISERVER)"
  start_120
  if ! wait $!; then
    tail -25 "$KUBE_LOG" >&2
    # Back to a bed without the 1.20 plane, so a rerun tries again instead of purging the bed.
    "$HERE/kube-down.sh" "$KUBE_DIR" --purge >&2 9>&- || true
    die "the 1.20 plane failed to start (log: $KUBE_LOG)"
  fi
  ensure_snapshot_controller "$KUBE_DIR" "$KUBE_BIN_DIR" 20
  write_env
  log "1.20 plane ready in $(ready_secs kube "$KUBE_LOG")s; env: $BED_ENV"
}

# ------------------------------------------------------------------ snapshot-controller
# ensure_snapshot_controller KUBE_DIR KUBE_BIN_DIR MINOR: the upstream snapshot-controller runs
# against the plane in KUBE_DIR: unless the one recorded in KUBE_DIR/pids runs SNAP_DIR's binary
# (one of another build, say an older version, is stopped), the CRDs of SNAP_DIR are applied with the plane's own kubectl, waited for until Established, and a new one
# is started (log in KUBE_DIR/logs, the previous one kept as .prev; pid file in KUBE_DIR/pids,
# where hack/kube-down.sh stops it). Ready once it has found the CRDs and its informers have
# synced ("controller initialized", logged at --v=4).
# On 1.20 the CRDs' x-kubernetes-validations (CEL rules, Kubernetes >= 1.23) fail kubectl 1.20's
# client-side validation and server-side apply ("field not declared in schema"); a client-side
# apply without validation loads them, and the API server drops the rules.
SNAP_READY_TIMEOUT=${SNAP_READY_TIMEOUT:-60}
# is_prog PID NAME: PID is alive and runs the program NAME (stop_ours' check)
is_prog() { alive "$1" && [ "$(basename "$(argv0 "$1")")" = "$2" ]; }
ensure_snapshot_controller() {
  local dir=$1 bin=$2 minor=$3 kc=$1/admin.kubeconfig pidf=$1/pids/snapshot-controller.pid
  local slog=$1/logs/snapshot-controller.log c files=() names=() pid deadline out
  if snapshot_controller_ok "$dir"; then
    pid=$(cat "$pidf")
    if [ "$(argv0 "$pid")" = "$SNAP_DIR/snapshot-controller" ]; then
      log "snapshot-controller already running against $dir (pid $pid)"
      return 0
    fi
    log "snapshot-controller of $dir is another build ($(argv0 "$pid")): replacing it"
    stop_ours "$pid" snapshot-controller is_prog >&2
  elif [ -f "$pidf" ]; then
    log "snapshot-controller of $dir is not running (log: $slog.prev): starting it again"
  fi
  for c in "${SNAPSHOT_CRDS[@]}"; do
    files+=(-f "$SNAP_DIR/$(snapshot_crd_file "$c")") names+=("crd/$c.snapshot.storage.k8s.io")
  done
  [ "$minor" != 20 ] || files+=(--validate=false)
  out=$("$bin/kubectl" --kubeconfig "$kc" apply "${files[@]}" 2>&1) ||
    { echo "$out" >&2; die "applying the snapshot CRDs to $dir failed"; }
  out=$("$bin/kubectl" --kubeconfig "$kc" wait --for=condition=Established --timeout=60s "${names[@]}" 2>&1) ||
    { echo "$out" >&2; die "the snapshot CRDs of $dir did not become Established"; }
  log "snapshot CRDs applied to $dir and Established (${SNAPSHOT_CRDS[*]})"
  [ ! -s "$slog" ] || mv -f "$slog" "$slog.prev"
  # The group-snapshot CRDs are not installed: without the gate the controller would wait 30 s
  # for them at every start before it goes on without them.
  setsid nohup "$SNAP_DIR/snapshot-controller" --kubeconfig="$kc" --leader-election=false \
    --feature-gates=CSIVolumeGroupSnapshot=false --v=4 >"$slog" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" > "$pidf"
  deadline=$(( $(date +%s) + SNAP_READY_TIMEOUT ))
  until grep -q 'controller initialized' "$slog" 2>/dev/null; do
    alive "$pid" || { tail -20 "$slog" >&2; die "snapshot-controller exited at start (log: $slog)"; }
    [ "$(date +%s)" -lt "$deadline" ] ||
      { tail -20 "$slog" >&2; die "snapshot-controller did not start within ${SNAP_READY_TIMEOUT}s (log: $slog)"; }
    sleep 0.2
  done
  log "snapshot-controller $SNAP_VER started against $dir (pid $pid, log $slog)"
}

# ------------------------------------------------------------------ the 1.37 plane (RBDP_KUBE=1.37)
# ceph/ is the bed's own (a symlink). The 1.20 plane, when the bed has one, is its peer (for the
# upgrade test), named only once its env exists: tests read the peer's env. A 1.37 plane not asked
# for this time keeps the binaries its env already names; the env names the snapshot-controller
# that runs against the plane, if one does.
k137_write_env() {
  local bin=$K137_BIN_DIR peer='' snap
  [ -n "$bin" ] || bin=$(env_value "$K137_ENV" KUBE_BIN_DIR)
  snap=$(snapshot_controller_running "$K137_KUBE" || true)
  [ ! -f "$BED_ENV" ] || peer=$BED
  ln -sfn ../ceph "$K137/ceph"
  write_plane_env "$K137_ENV" "$K137_KUBE/admin.kubeconfig" "$bin" 37 "$peer" "$snap"
}
ensure_k137() {
  [ $WANT_137 = 1 ] || return 0
  mkdir -p "$K137"
  chmod 700 "$K137"
  if [ -f "$K137_PORTS" ]; then
    # shellcheck disable=SC1090
    . "$K137_PORTS"
  elif [ "$BED" = "$DEFAULT_BED" ] && ! port_in_use "${STD_137_PORTS[0]}" &&
       ! port_in_use "${STD_137_PORTS[1]}" && ! port_in_use "${STD_137_PORTS[2]}"; then
    K137_ETCD_CLIENT=${STD_137_PORTS[0]} K137_ETCD_PEER=${STD_137_PORTS[1]} K137_APISERVER=${STD_137_PORTS[2]}
  else  # another bed, or the default ports are taken (say by a hand-started kube-up.sh --kube 1.37)
    K137_ETCD_CLIENT=$(free_port_for etcd "$ETCD_CLIENT $ETCD_PEER")
    K137_ETCD_PEER=$(free_port_for etcd "$ETCD_CLIENT $ETCD_PEER $K137_ETCD_CLIENT")
    K137_APISERVER=$(free_port_for apiserver "$APISERVER")
  fi
  if kube_ok "$K137_KUBE" 37; then
    ensure_snapshot_controller "$K137_KUBE" "$K137_BIN_DIR" 37
    k137_write_env
    log "1.37 plane already up in $K137 (apiserver :$K137_APISERVER); env: $K137_ENV"
    return 0
  fi
  if [ -d "$K137_KUBE" ]; then
    log "stale 1.37 plane state in $K137_KUBE: stopping and purging it"
    "$HERE/kube-down.sh" "$K137_KUBE" --purge >&2 9>&-
  fi
  for p in "$K137_ETCD_CLIENT" "$K137_ETCD_PEER" "$K137_APISERVER"; do
    port_in_use "$p" && die "port 127.0.0.1:$p (for the 1.37 plane) is already in use"
  done
  printf 'K137_ETCD_CLIENT=%s K137_ETCD_PEER=%s K137_APISERVER=%s\n' \
    "$K137_ETCD_CLIENT" "$K137_ETCD_PEER" "$K137_APISERVER" > "$K137_PORTS"
  log "starting the Kubernetes 1.37 plane in $K137_KUBE (etcd $K137_ETCD_CLIENT/$K137_ETCD_PEER, apiserver $K137_APISERVER)"
  if ! KUBE_BIN_DIR=$K137_BIN_DIR ETCD_BIN='' ETCD_CLIENT_PORT=$K137_ETCD_CLIENT \
      ETCD_PEER_PORT=$K137_ETCD_PEER APISERVER_PORT=$K137_APISERVER \
      "$HERE/kube-up.sh" --kube 1.37 "$K137_KUBE" >"$K137_LOG" 2>&1 9>&-; then
    tail -25 "$K137_LOG" >&2
    die "the 1.37 plane failed to start (log: $K137_LOG)"
  fi
  ensure_snapshot_controller "$K137_KUBE" "$K137_BIN_DIR" 37
  k137_write_env
  log "1.37 plane ready in $(ready_secs kube "$K137_LOG")s; tests: RBDP_BED=$K137"
}
# The planes asked for that the bed lacks, 1.20 first so that the 1.37 env can name it; a 1.37
# plane not asked for learns of a 1.20 plane added beside it.
ensure_planes() {
  local had_120=0
  [ ! -d "$KUBE_DIR" ] || had_120=1
  ensure_120
  ensure_k137
  if [ $WANT_137 = 0 ] && [ $had_120 = 0 ] && [ -d "$KUBE_DIR" ] && [ -f "$K137_ENV" ]; then
    k137_write_env
    log "the 1.37 plane's env now names the 1.20 plane as its peer: $K137_ENV"
  fi
}

# The bed's own daemons: Ceph, and the 1.20 plane when the bed has one (a bed started for 1.37
# alone has none). A 1.37 plane is judged on its own, in ensure_k137.
all_daemons_alive() {
  local f n
  for f in "$CEPH_DIR"/pids/{mon.a,mgr.x,osd.0}.pid; do pidfile_alive "$f" || return 1; done
  [ -d "$KUBE_DIR" ] || return 0
  for n in "${KUBE_DAEMONS[@]}"; do pidfile_alive "$KUBE_DIR/pids/$n.pid" || return 1; done
}
# A busy machine (parallel builds) can make one probe slow: retry before declaring a live bed
# broken, since purging it would pull the rug from under whoever is using it.
if [ -f "$BED_MARK" ] && all_daemons_alive; then
  for try in 1 2 3; do
    if ceph_ok "$CEPH_DIR" && { [ ! -d "$KUBE_DIR" ] || kube_ok "$KUBE_DIR" 20; }; then
      if [ -d "$KUBE_DIR" ]; then
        log "bed already up and healthy in $BED (Ceph and the 1.20 plane; env: $BED_ENV)"
        # The 1.20 plane asked for: its snapshot-controller too (started again if it died).
        if [ $WANT_120 = 1 ]; then
          ensure_snapshot_controller "$KUBE_DIR" "$KUBE_BIN_DIR" 20
          write_env
        fi
      else
        log "bed already up and healthy in $BED (Ceph; no 1.20 plane)"
      fi
      ensure_planes
      exit 0
    fi
    log "bed daemons alive but not answering (try $try/3)"
    sleep 3
  done
fi

# Anything left is stale or broken: stop recorded pids and purge, tests expect a clean bed.
if [ -e "$BED" ]; then
  if [ -f "$BED_MARK" ]; then
    log "stale or broken bed state in $BED: stopping and purging it"
    "$HERE/bed-down.sh" --purge --locked >&2 9>&-
  elif [ -n "$(ls -A "$BED" 2>/dev/null)" ]; then
    die "$BED exists, is not empty and is not a test bed; set RBDP_BED elsewhere"
  fi
fi
# Fail at once (not after the other half has come up) if a port is taken by someone else. The
# 1.20 plane's ports are recorded even when it is not asked for, so adding it later finds them.
load_ports
check_ports=("$MON_V2" "$MON_V1")
[ $WANT_120 = 0 ] || check_ports+=("$ETCD_CLIENT" "$ETCD_PEER" "$APISERVER")
for p in "${check_ports[@]}"; do
  if port_in_use "$p"; then
    ss -ltnp "sport = :$p" 2>/dev/null | tail -n +2 >&2 || true
    die "port 127.0.0.1:$p is already in use (another Ceph / etcd / apiserver?)"
  fi
done
mkdir -p "$BED"
chmod 700 "$BED"
touch "$BED_MARK"
save_ports
log "ports: mon $MON_V2/$MON_V1, etcd $ETCD_CLIENT/$ETCD_PEER, apiserver $APISERVER"

# Ceph and the 1.20 plane are independent: start them in parallel. Child logs are kept in $BED.
if [ $WANT_120 = 1 ]; then
  log "starting Ceph ($CEPH_DIR) and the control plane ($KUBE_DIR) in parallel"
else
  log "starting Ceph ($CEPH_DIR)"
fi
CEPH_MON_PORT_V2=$MON_V2 CEPH_MON_PORT_V1=$MON_V1 \
  "$HERE/ceph-up.sh" "$CEPH_DIR" >"$CEPH_LOG" 2>&1 9>&- &
cjob=$!
kjob=''
if [ $WANT_120 = 1 ]; then start_120; kjob=$!; fi
crc=0 krc=0
wait $cjob || crc=$?
[ -z "$kjob" ] || wait "$kjob" || krc=$?
if [ $crc -ne 0 ] || [ $krc -ne 0 ]; then
  [ $crc -eq 0 ] || { log "Ceph failed (rc=$crc); tail of $CEPH_LOG:"; tail -25 "$CEPH_LOG" >&2; }
  [ $krc -eq 0 ] || { log "control plane failed (rc=$krc); tail of $KUBE_LOG:"; tail -25 "$KUBE_LOG" >&2; }
  log "stopping whatever did come up (state kept for debugging; the next bed-up purges it)"
  "$HERE/bed-down.sh" --locked >&2 9>&-
  die "bed-up failed"
fi
ceph_s=$(ready_secs ceph "$CEPH_LOG")
if [ $WANT_120 = 1 ]; then
  kube_s=$(ready_secs kube "$KUBE_LOG")
  ensure_snapshot_controller "$KUBE_DIR" "$KUBE_BIN_DIR" 20
  write_env
fi
ensure_k137
if [ $WANT_120 = 1 ]; then
  log "timings: Ceph ready in ${ceph_s}s, control plane ready in ${kube_s}s (in parallel), bed-up total $(elapsed)s"
  log "bed up in $BED; use: source $BED_ENV   stop: hack/bed-down.sh [--purge]"
else
  log "timings: Ceph ready in ${ceph_s}s, bed-up total $(elapsed)s"
  log "bed up in $BED, without the 1.20 plane; use: source $K137_ENV   stop: hack/bed-down.sh [--purge]"
fi
