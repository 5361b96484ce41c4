#!/usr/bin/env bash
# hack/ceph-down.sh DIR [--purge] -- stop the daemons hack/ceph-up.sh started in DIR.
# Kills only the pids recorded in DIR/pids/*.pid, and only while that pid is a live (non-zombie)
# ceph daemon whose command line names DIR/ceph.conf (guards against pid reuse).
# --purge then deletes DIR (only if ceph-up.sh made it). Safe to run twice.
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
down_args "$@"
CONF=$DIR/ceph.conf

# shellcheck disable=SC2317  # called through stop_ours
ours() {  # pid -> 0 if it is a live, non-zombie ceph daemon of this cluster
  local pid=$1 cmd
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  cmd=$(tr '\0' ' ' 2>/dev/null < "/proc/$pid/cmdline") || return 1
  case "$cmd" in *ceph-*" -c $CONF "*|*ceph-*" -c $CONF") return 0 ;; esac
  return 1
}

# stop clients of the cluster first (osd), then mgr, then mon
for kind in osd mgr mon; do
  for pf in "$DIR"/pids/$kind.*.pid; do
    [ -f "$pf" ] || continue
    stop_ours "$(cat "$pf")" "$(basename "$pf" .pid)" ours
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
