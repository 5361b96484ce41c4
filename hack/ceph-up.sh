#!/usr/bin/env bash
# hack/ceph-up.sh DIR -- throw-away single-host Ceph (1 mon, 1 mgr, 1 OSD) for the test bed.
#
# * Debian bookworm Ceph 16.2 (pacific); loopback only (127.0.0.1); no systemd; cephx on; pool size 1.
# * The mon listens on the STANDARD ports (msgr2 3300, msgr1 6789) unless told otherwise, so
#   that a StorageClass "monitors: 127.0.0.1:6789" works as in the walkthrough; OSD/mgr bind in
#   6800-7300 (each takes the first free port there, so beds can share the range).
# * Pools `kube` and `kube2` (rbd pool init'ed) and the walkthrough's restricted user client.kube.
# * Everything (conf, keyrings, data, logs, sockets, pids) lives under DIR; daemons are plain
#   background processes whose pids are in DIR/pids/*.pid. Stop with hack/ceph-down.sh DIR.
# * Keys only ever live in files (keyrings); no long-running process gets one on its command line.
#
# Writes DIR/env.sh (CEPH_CONF, CEPH_MON_HOST, CEPH_MONITORS, keyring paths). Knobs (optional):
#   CEPH_OSD_SIZE_GB (10)  sparse bluestore file size     CEPH_READY_TIMEOUT (120) s per step
#   CEPH_RBD_POOLS ("kube kube2")                          CEPH_OSD_MEMORY_TARGET (1 GiB)
#   CEPH_MON_PORT_V2 (3300) CEPH_MON_PORT_V1 (6789)        CEPH_PORT_MIN/MAX (6800/7300) mgr+OSD
set -euo pipefail
set +m  # no job control: background children must not lead a process group (setsid must not fork)

START_NS=$(date +%s%N)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LOG_TAG=ceph-up
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
[ $# -eq 1 ] || usage DIR
DIR=$(realpath -m -- "$1")

# The standard mon ports by default (the walkthrough's "monitors: 127.0.0.1:6789"); a second bed
# on the same host passes others.
ADDR=127.0.0.1 P2=${CEPH_MON_PORT_V2:-${STD_MON_PORTS[0]}} P1=${CEPH_MON_PORT_V1:-${STD_MON_PORTS[1]}}
PMIN=${CEPH_PORT_MIN:-6800} PMAX=${CEPH_PORT_MAX:-7300}
SIZE_GB=${CEPH_OSD_SIZE_GB:-10}
POOLS=${CEPH_RBD_POOLS:-kube kube2}
TMO=${CEPH_READY_TIMEOUT:-120}
OSD_MEM=${CEPH_OSD_MEMORY_TARGET:-1073741824}
MON_ID=a MGR_ID=x OSD_ID=0
MON_HOST="[v2:$ADDR:$P2,v1:$ADDR:$P1]"

for b in ceph ceph-mon ceph-mgr ceph-osd ceph-authtool monmaptool rados rbd uuidgen python3 timeout realpath; do
  command -v "$b" >/dev/null || die "missing $b (run hack/install-deps.sh)"
done

# ---- refuse to clobber something that is not ours or still running ------------------------
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
  [ -f "$DIR/.rbdp-ceph" ] || die "$DIR is not empty and was not made by ceph-up.sh"
  for pf in "$DIR"/pids/*.pid; do
    [ -f "$pf" ] || continue
    pidfile_alive "$pf" && die "pid $(cat "$pf") from $pf still runs; run hack/ceph-down.sh $DIR first"
  done
  rm -rf -- "${DIR:?}"/* "$DIR"/.rbdp-ceph
fi
# the mon ports must be free: a stray mon there would silently answer our clients instead
for p in "$P2" "$P1"; do
  if port_in_use "$p"; then die "port $ADDR:$p already in use"; fi
done

mkdir -p "$DIR"/{log,run,pids,crash,mon.$MON_ID,mgr.$MGR_ID,osd.$OSD_ID}
chmod 700 "$DIR"
touch "$DIR/.rbdp-ceph"
CONF=$DIR/ceph.conf
FSID=$(uuidgen)

# if anything below fails, stop what we started (logs stay in DIR/log)
cleanup_on_error() { local rc=$?; if [ $rc -ne 0 ]; then log "failed (rc=$rc), stopping daemons; logs in $DIR/log"; "$HERE/ceph-down.sh" "$DIR" >&2 || true; fi; }
trap cleanup_on_error EXIT

# Notes: no-redundancy / insecure-global-id warnings are off so a healthy bed reports HEALTH_OK;
# pg autoscale off + 8 pgs per pool keeps the single OSD light; stats period 1 s makes
# 'ceph -s' reflect new pools quickly.
cat > "$CONF" <<EOF
[global]
fsid = $FSID
mon host = $MON_HOST
mon initial members = $MON_ID
public addr = $ADDR
cluster addr = $ADDR
ms bind ipv4 = true
ms bind ipv6 = false
ms bind msgr1 = true
ms bind msgr2 = true
ms bind port min = $PMIN
ms bind port max = $PMAX
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = $DIR/run
admin socket = $DIR/run/\$cluster-\$name.asok
pid file = $DIR/run/\$cluster-\$name.daemon.pid
log file = $DIR/log/\$cluster-\$name.log
mon cluster log file = $DIR/log/\$cluster.log
crash dir = $DIR/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool delete = true
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
mgr stats period = 1
mon mgr digest period = 1

[mon]
mon data = $DIR/mon.\$id

[mgr]
mgr data = $DIR/mgr.\$id

[osd]
osd data = $DIR/osd.\$id
keyring = $DIR/osd.\$id/keyring
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $((SIZE_GB * 1024 * 1024 * 1024))
bluestore block db create = false
bluestore block wal create = false
bluestore fsck on mkfs = false
bluestore fsck on mount = false
osd memory target = $OSD_MEM

[client]
keyring = $DIR/\$cluster.\$name.keyring
log file = $DIR/log/\$cluster-\$name.log
admin socket =
EOF

C() { timeout 60 ceph -c "$CONF" --connect-timeout 15 "$@"; }

# -f: foreground, so $! is the daemon itself (setsid and nohup exec). setsid: own session, so the
# daemon outlives the caller's process group / terminal (the bed is shared and stays up).
start_daemon() {  # name binary args...
  local name=$1; shift
  setsid nohup "$@" -c "$CONF" -f </dev/null >"$DIR/log/$name.out" 2>&1 &
  echo $! > "$DIR/pids/$name.pid"
  log "started $name pid $!"
}

wait_for() {  # description command...
  local what=$1; shift; local t=0
  until "$@" >/dev/null 2>&1; do
    t=$((t + 1)); [ $t -le $((TMO * 2)) ] || die "timeout waiting for $what"
    sleep 0.5
  done
  log "ready: $what"
}

# ---- keys + monmap + mon ---------------------------------------------------------------------
ceph-authtool --create-keyring "$DIR/keyring.mon" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$DIR/ceph.client.admin.keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
ceph-authtool "$DIR/keyring.mon" --import-keyring "$DIR/ceph.client.admin.keyring" >/dev/null
chmod 600 "$DIR"/keyring.mon "$DIR"/ceph.client.admin.keyring
monmaptool --create --clobber --enable-all-features --fsid "$FSID" \
  --addv "$MON_ID" "$MON_HOST" "$DIR/monmap" >/dev/null
ceph-mon -c "$CONF" -i "$MON_ID" --mkfs --monmap "$DIR/monmap" --keyring "$DIR/keyring.mon"
start_daemon "mon.$MON_ID" ceph-mon -i "$MON_ID"
wait_for "mon quorum" C mon stat

# ---- mgr ---------------------------------------------------------------------------------------
out=$(C auth get-or-create "mgr.$MGR_ID" mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
  -o "$DIR/mgr.$MGR_ID/keyring" 2>&1) || die "auth get-or-create mgr.$MGR_ID: $out"
chmod 600 "$DIR/mgr.$MGR_ID/keyring"
start_daemon "mgr.$MGR_ID" ceph-mgr -i "$MGR_ID"

# ---- osd (its secret goes to the mon through a file, not argv) ----------------------------------
OSD_UUID=$(uuidgen)
OSD_SECRET=$(ceph-authtool --gen-print-key)
( umask 077; printf '{"cephx_secret": "%s"}\n' "$OSD_SECRET" > "$DIR/osd.$OSD_ID/new.json" )
got=$(C osd new "$OSD_UUID" "$OSD_ID" -i "$DIR/osd.$OSD_ID/new.json")
rm -f "$DIR/osd.$OSD_ID/new.json"
[ "$got" = "$OSD_ID" ] || die "osd new returned '$got'"
( umask 077; printf '[osd.%s]\n\tkey = %s\n' "$OSD_ID" "$OSD_SECRET" > "$DIR/osd.$OSD_ID/keyring" )
unset OSD_SECRET
ceph-osd -c "$CONF" -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" \
  >"$DIR/log/osd.$OSD_ID.mkfs.out" 2>&1 || { tail -20 "$DIR/log/osd.$OSD_ID.mkfs.out" >&2; die "ceph-osd --mkfs failed"; }
log "osd.$OSD_ID mkfs done (bluestore, sparse ${SIZE_GB} GiB)"
start_daemon "osd.$OSD_ID" ceph-osd -i "$OSD_ID"

osd_up_in() { C osd stat -f json | python3 -c 'import json,sys; d=json.load(sys.stdin); d=d.get("osdmap",d); sys.exit(0 if d["num_up_osds"]==1 and d["num_in_osds"]==1 else 1)'; }
mgr_active() { C mgr stat -f json | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("available") else 1)'; }
pgs_clean() {  # the mon's pgmap lists every pg of every pool in the osdmap as active+clean
  local want; want=$(C osd dump -f json | python3 -c 'import json,sys; print(sum(p["pg_num"] for p in json.load(sys.stdin)["pools"]))')
  C status -f json | WANT=$want python3 -c '
import json,os,sys
m=json.load(sys.stdin)["pgmap"]; n=m.get("num_pgs",0)
clean=sum(x["count"] for x in m.get("pgs_by_state",[]) if x["state_name"]=="active+clean")
sys.exit(0 if n>0 and n==int(os.environ["WANT"]) and clean==n else 1)'; }
wait_for "osd.$OSD_ID up+in" osd_up_in
wait_for "mgr active" mgr_active

# ---- pools + the walkthrough's restricted user ----------------------------------------------------
# 'rbd pool init' spends ~3 s waiting on osdmap epochs: run the inits in parallel
for p in $POOLS; do out=$(C osd pool create "$p" 2>&1) || die "osd pool create $p: $out"; done
init_jobs=()
for p in $POOLS; do timeout 60 rbd -c "$CONF" pool init "$p" & init_jobs+=($!); done
for j in "${init_jobs[@]}"; do wait "$j" || die "rbd pool init failed"; done
log "pools created + rbd pool init: $POOLS"
# exactly the caps of the walkthrough; the keyring lands where [client] keyring finds it
out=$(C auth get-or-create client.kube mon 'allow r' \
  osd 'allow class-read object_prefix rbd_children, allow rwx pool=kube' \
  -o "$DIR/ceph.client.kube.keyring" 2>&1) || die "auth get-or-create client.kube: $out"
chmod 600 "$DIR/ceph.client.kube.keyring"
log "user client.kube created"

wait_for "all pgs active+clean" pgs_clean
probe_pool=${POOLS%% *}; probe_pool=${probe_pool:-device_health_metrics}
wait_for "rados put/rm in $probe_pool" bash -c "echo ok | timeout 30 rados -c '$CONF' -p '$probe_pool' put rbdp-probe - && timeout 30 rados -c '$CONF' -p '$probe_pool' rm rbdp-probe"

# key values are read by short-lived ceph-authtool calls from the keyrings, never passed on argv
( umask 077; cat > "$DIR/env.sh" <<EOF
export CEPH_CONF='$CONF'
export CEPH_MON_HOST='$MON_HOST'
export CEPH_MONITORS='$ADDR:$P1'
export CEPH_ADMIN_KEYRING='$DIR/ceph.client.admin.keyring'
export CEPH_KUBE_KEYRING='$DIR/ceph.client.kube.keyring'
EOF
)
trap - EXIT
log "cluster $FSID ready in $(elapsed)s (mon $MON_HOST, pools: $POOLS)"
echo "ceph-ready-seconds $(elapsed)"
