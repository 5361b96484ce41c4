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
BED=$(realpath -m -- "${RBDP_BED:-/tmp/rbd-provisioner-bed}")
PURGE=0 LOCKED=0
for a in "$@"; do
  case "$a" in
    --purge) PURGE=1 ;;
    --locked) LOCKED=1 ;;   # internal: the caller (bed-up.sh) already holds the lock
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
  esac
done
if [ $LOCKED -eq 0 ]; then
  exec 9>"$BED.lock"
  flock -w 600 9 || { echo "bed-down: another bed-up/bed-down holds $BED.lock" >&2; exit 1; }
fi

# A bed's 1.37 plane alone (its dir has the plane in kube/ and a symlink to the bed's ceph/).
if [ -f "$BED/kube/.rbdp-kube137" ] && [ -L "$BED/ceph" ] && [ ! -f "$BED/.rbdp-bed" ]; then
  rm -f "$BED/env"
  "$HERE/kube-down.sh" "$BED/kube" --purge
  if [ $PURGE -eq 1 ]; then rm -rf -- "$BED"; echo "bed-down: purged $BED"; fi
  echo "bed-down: 1.37 plane stopped"
  exit 0
fi

if [ ! -d "$BED" ]; then
  echo "bed-down: no bed in $BED; nothing to do"
  exit 0
fi
[ -f "$BED/.rbdp-bed" ] || { echo "bed-down: $BED is not a test bed (no .rbdp-bed); leaving it alone" >&2; exit 1; }

rm -f "$BED/env" "$BED/k137/env"
# The provisioner hack/demo.sh left running, if any (only if it still is that binary).
if [ -f "$BED/demo-provisioner.pid" ]; then
  pid=$(cat "$BED/demo-provisioner.pid")
  # argv[0], not /proc/PID/exe: a rebuilt binary shows there as "rbd-provisioner (deleted)".
  if [ "$(basename "$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | head -1)")" = rbd-provisioner ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || break; sleep 0.1; done
    echo "stopped the demo provisioner (pid $pid)"
  fi
  rm -f "$BED/demo-provisioner.pid"
fi
# Independent stacks: stop them at once (the OSD takes a few seconds to shut down).
kd=''
if [ -d "$BED/kube" ]; then
  "$HERE/kube-down.sh" "$BED/kube" 9>&- &
  kd=$!
fi
k137=''
if [ -f "$BED/k137/kube/.rbdp-kube137" ]; then
  "$HERE/kube-down.sh" "$BED/k137/kube" 9>&- &
  k137=$!
fi
"$HERE/ceph-down.sh" "$BED/ceph" 9>&-
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
  st=$(awk '{print $3}' "$p/stat" 2>/dev/null) || continue
  [ "$st" = Z ] && continue
  survivors+=("$pid: $cmd")
  case "$(basename "${cmd%% *}")" in
    ceph-mon|ceph-mgr|ceph-osd|etcd|kube-apiserver|kube-controller-manager) ours=1 ;;
  esac
done
if [ ${#survivors[@]} -gt 0 ]; then
  echo "bed-down: processes still mention $BED (not started by the bed scripts unless listed as daemons):" >&2
  printf '  %s\n' "${survivors[@]}" >&2
  [ $ours -eq 0 ] || { echo "bed-down: a bed daemon survived; not purging" >&2; exit 1; }
fi

if [ $PURGE -eq 1 ]; then
  # The ceph/ and kube/ dirs carry their own markers; everything in $BED is ours.
  rm -rf -- "$BED"
  echo "bed-down: purged $BED"
fi
echo "bed-down: bed stopped"
