#!/usr/bin/env bash
# hack/bed-down.sh [--purge] -- stop the test bed that hack/bed-up.sh started in
# ${RBDP_BED:-/tmp/rbd-provisioner-bed}. Kills only the pids the bed recorded; removes $RBDP_BED/env
# (it would point at a dead bed); --purge also deletes the state dir. Safe to run twice.
# Afterwards checks that no live process mentions the bed dir on its command line.
# Whichever planes the bed has are stopped with it: the 1.20 one in $RBDP_BED/kube (none on a bed
# started with RBDP_PLANES=1.37) and the 1.37 one in $RBDP_BED/k137; RBDP_BED=<bed>/k137 stops
# (and with --purge removes) only that plane.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
bed_layout
PURGE=0 LOCKED=0
for a in "$@"; do
  case "$a" in
    --purge) PURGE=1 ;;
    --locked) LOCKED=1 ;;   # internal: the caller (bed-up.sh) already holds the lock
    *) usage "[--purge]" ;;
  esac
done
if [ $LOCKED -eq 0 ]; then
  exec 9>"$BED_LOCK"
  flock -w 600 9 || fail 1 "another bed-up/bed-down holds $BED_LOCK"
fi

# A bed's 1.37 plane alone (its dir has the plane in kube/ and a symlink to the bed's ceph/).
if [ -f "$KUBE_DIR/.rbdp-kube137" ] && [ -L "$CEPH_DIR" ] && [ ! -f "$BED_MARK" ]; then
  rm -f "$BED_ENV"
  "$HERE/kube-down.sh" "$KUBE_DIR" --purge
  if [ $PURGE -eq 1 ]; then rm -rf -- "$BED"; echo "bed-down: purged $BED"; fi
  echo "bed-down: 1.37 plane stopped"
  exit 0
fi

if [ ! -d "$BED" ]; then
  echo "bed-down: no bed in $BED; nothing to do"
  exit 0
fi
[ -f "$BED_MARK" ] || fail 1 "$BED is not a test bed (no .rbdp-bed); leaving it alone"

rm -f "$BED_ENV" "$K137_ENV"
# The provisioner hack/demo.sh left running, if any.
if stop_demo_provisioner 5; then echo "stopped the demo provisioner (pid $DEMO_STOPPED)"; fi
# Independent stacks: stop them at once (the OSD takes a few seconds to shut down).
kd=''
if [ -d "$KUBE_DIR" ]; then
  "$HERE/kube-down.sh" "$KUBE_DIR" 9>&- &
  kd=$!
fi
k137=''
if [ -f "$K137_KUBE/.rbdp-kube137" ]; then
  "$HERE/kube-down.sh" "$K137_KUBE" 9>&- &
  k137=$!
fi
"$HERE/ceph-down.sh" "$CEPH_DIR" 9>&-
[ -z "$kd" ] || wait "$kd"
[ -z "$k137" ] || wait "$k137"

# Nothing with the bed dir in its command line may survive (zombies aside: PID 1 reaps late).
# Our own ancestors (say, a shell whose command names the dir) are not the bed's.
ancestors=" " a=$$
while [ "$a" -gt 1 ] 2>/dev/null; do ancestors+="$a "; a=$(awk '/^PPid:/ {print $2}' "/proc/$a/status" 2>/dev/null || echo 0); done
survivors=() ours=0
for p in /proc/[0-9]*; do
  pid=${p#/proc/}
  case "$ancestors" in *" $pid "*) continue ;; esac
  cmd=$( { tr '\0' ' ' < "$p/cmdline"; } 2>/dev/null) || continue  # it may just have exited
  case "$cmd" in *"$BED/"*|*"$BED "*) ;; *) continue ;; esac
  alive "$pid" || continue
  survivors+=("$pid: $cmd")
  case "$(basename "${cmd%% *}")" in
    ceph-mon|ceph-mgr|ceph-osd|etcd|kube-apiserver|kube-controller-manager|snapshot-controller) ours=1 ;;
  esac
done
if [ ${#survivors[@]} -gt 0 ]; then
  echo "bed-down: processes still mention $BED (not started by the bed scripts unless listed as daemons):" >&2
  printf '  %s\n' "${survivors[@]}" >&2
  [ $ours -eq 0 ] || fail 1 "a bed daemon survived; not purging"
fi

if [ $PURGE -eq 1 ]; then
  # The ceph/ and kube/ dirs carry their own markers; everything in $BED is ours.
  rm -rf -- "$BED"
  echo "bed-down: purged $BED"
fi
echo "bed-down: bed stopped"
