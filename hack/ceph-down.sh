#!/usr/bin/env bash
# hack/ceph-down.sh DIR [--purge] -- stop the daemons hack/ceph-up.sh started in DIR.
# Kills only the pids recorded in DIR/pids/*.pid, and only while that pid is a live (non-zombie)
# ceph daemon whose command line names DIR/ceph.conf (guards against pid reuse).
# --purge then deletes DIR (only if ceph-up.sh made it). Safe to run twice.
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 DIR [--purge]" >&2; exit 2; }
DIR=$(realpath -m -- "$1")
PURGE=${2:-}
[ -z "$PURGE" ] || [ "$PURGE" = --purge ] || { echo "usage: $0 DIR [--purge]" >&2; exit 2; }
CONF=$DIR/ceph.conf

ours() {  # pid -> 0 if it is a live, non-zombie ceph daemon of this cluster
  local pid=$1 st cmd
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z ] || return 1
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  case "$cmd" in *ceph-*" -c $CONF "*|*ceph-*" -c $CONF") return 0 ;; esac
  return 1
}

# stop clients of the cluster first (osd), then mgr, then mon
for kind in osd mgr mon; do
  for pf in "$DIR"/pids/$kind.*.pid; do
    [ -f "$pf" ] || continue
    pid=$(cat "$pf")
    if ours "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do ours "$pid" || break; sleep 0.1; done
      if ours "$pid"; then
        echo "ceph-down: pid $pid ($(basename "$pf" .pid)) ignored SIGTERM for 10s, sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do ours "$pid" || break; sleep 0.1; done
      fi
      echo "ceph-down: stopped $(basename "$pf" .pid) (pid $pid)"
    fi
    rm -f "$pf"
  done
done

if [ "$PURGE" = --purge ] && [ -d "$DIR" ]; then
  if [ -f "$DIR/.rbdp-ceph" ]; then
    rm -rf -- "$DIR"; echo "ceph-down: purged $DIR"
  else
    echo "ceph-down: $DIR was not made by ceph-up.sh; not deleting it" >&2
  fi
fi
exit 0
