#!/usr/bin/env bash
# hack/kube-down.sh DIR [--purge] -- stop the processes hack/kube-up.sh (either version) recorded
# in DIR/pids, and the snapshot-controller hack/bed-up.sh recorded there, each only while it is
# alive (not a zombie) and still the expected program (guards against pid reuse). --purge then deletes DIR. Only a DIR kube-up.sh made (its marker file): any
# other DIR may hold pid files of the same program names. Safe to run twice.
set -euo pipefail
# shellcheck source=hack/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
down_args "$@"
PIDS=$DIR/pids
[ -d "$DIR" ] || exit 0
if [ ! -f "$DIR/.rbdp-kube" ] && [ ! -f "$DIR/.rbdp-kube137" ]; then
  fail 1 "$DIR was not made by kube-up.sh; not touching it"
fi

# shellcheck disable=SC2317  # called through stop_ours
ours() { # pid name -> alive and argv[0] is that program
  [[ $1 =~ ^[0-9]+$ ]] && alive "$1" || return 1
  [ "$(basename "$(argv0 "$1")")" = "$2" ]
}

stop_one() { # name
  local f=$PIDS/$1.pid
  [ -f "$f" ] || return 0
  stop_ours "$(cat "$f")" "$1" ours
  rm -f "$f"
}

# The snapshot-controller hack/bed-up.sh runs against the plane (a client of it) first, then the
# daemons in reverse start order: nothing talks to a dead apiserver or etcd for long.
stop_one snapshot-controller
for ((i = ${#KUBE_DAEMONS[@]} - 1; i >= 0; i--)); do stop_one "${KUBE_DAEMONS[i]}"; done

if [ "$PURGE" = --purge ]; then rm -rf -- "$DIR"; echo "kube-down: purged $DIR"; fi
exit 0
