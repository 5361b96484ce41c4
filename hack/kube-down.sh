#!/usr/bin/env bash
# hack/kube-down.sh DIR [--purge] -- stop the processes hack/kube-up.sh (either version) recorded
# in DIR/pids, each only while it is alive (not a zombie) and still the expected program (guards
# against pid reuse). --purge then deletes DIR. Only a DIR kube-up.sh made (its marker file): any
# other DIR may hold pid files of the same program names. Safe to run twice.
set -euo pipefail
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 DIR [--purge]" >&2; exit 2; }
DIR=$(realpath -m -- "$1")
PURGE=${2:-}
[ -z "$PURGE" ] || [ "$PURGE" = --purge ] || { echo "usage: $0 DIR [--purge]" >&2; exit 2; }
PIDS=$DIR/pids
[ -d "$DIR" ] || exit 0
if [ ! -f "$DIR/.rbdp-kube" ] && [ ! -f "$DIR/.rbdp-kube137" ]; then
  echo "kube-down: $DIR was not made by kube-up.sh; not touching it" >&2; exit 1
fi

alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1; [ -n "$st" ] && [ "$st" != Z ]; }
ours() { # pid name -> alive and argv[0] is that program
  [[ $1 =~ ^[0-9]+$ ]] && alive "$1" || return 1
  [ "$(basename "$(tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | head -1)")" = "$2" ]
}

stop_one() { # name
  local name=$1 f=$PIDS/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if ours "$pid" "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do ours "$pid" "$name" || break; sleep 0.1; done
    if ours "$pid" "$name"; then
      echo "kube-down: $name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do ours "$pid" "$name" || break; sleep 0.1; done
    fi
    echo "kube-down: stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

# reverse start order: nothing talks to a dead apiserver or etcd for long
stop_one kube-controller-manager
stop_one kube-apiserver
stop_one etcd

if [ "$PURGE" = --purge ]; then rm -rf -- "$DIR"; echo "kube-down: purged $DIR"; fi
exit 0
