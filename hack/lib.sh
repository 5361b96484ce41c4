# hack/lib.sh -- what the scripts in hack/ share, each fact stated here once: where the bed and
# the caches are, the standard ports, logging, processes and ports, the bed's health checks, build
# progress. Source it (`. "$HERE/lib.sh"`) after setting LOG_TAG (default: the script's name) and,
# optionally, START_NS (default: now).
# shellcheck shell=bash
START_NS=${START_NS:-$(date +%s%N)}
LOG_TAG=${LOG_TAG:-$(basename "$0" .sh)}

# ------------------------------------------------------------------ where things are
# The bed RBDP_BED names by default, on the standard ports; a bed anywhere else takes free ones.
DEFAULT_BED=/tmp/rbd-provisioner-bed
# What is built or fetched once per machine, outside the repo: the Kubernetes binaries, the
# previous release, the image's root filesystem, podman's settings.
CACHE_DIR=${RBDP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rbd-provisioner}
# kube_bin_cache VERSION: where hack/build-kube.sh / hack/build-kube-137.sh keep that build's binaries
kube_bin_cache() { echo "$CACHE_DIR/kube-$1/bin"; }
# have_bins DIR NAME...: every NAME is an executable in DIR (a complete cache)
have_bins() { local d=$1 b; shift; for b; do [ -x "$d/$b" ] || return 1; done; }
# The upstream snapshot-controller (kubernetes-csi/external-snapshotter) the bed's planes run, and
# the snapshot.storage.k8s.io/v1 CRDs of its client module, which hack/build-snapshot-controller.sh
# keeps beside it. Its version is the one hack/snapshot-controller/go.mod requires.
# shellcheck disable=SC2034  # for the scripts that source this file
SNAPSHOT_CRDS=(volumesnapshotclasses volumesnapshotcontents volumesnapshots)
snapshot_controller_version() {
  sed -n 's#^[[:space:]]*github.com/kubernetes-csi/external-snapshotter/v8 \(v[^ ]*\).*#\1#p' \
    "$(dirname "${BASH_SOURCE[0]}")/snapshot-controller/go.mod"
}
# snapshot_bin_cache VERSION: where that build's binary and CRD files are kept
snapshot_bin_cache() { echo "$CACHE_DIR/snapshot-controller-$1/bin"; }
# snapshot_crd_file NAME: the file of that CRD (one of SNAPSHOT_CRDS), as the client module names it
snapshot_crd_file() { echo "snapshot.storage.k8s.io_$1.yaml"; }

# The helm binary hack/build-helm.sh builds (helm.sh/helm/v4, at the version hack/helm/go.mod
# requires), for the chart's tests (tests/helm.rs) and the README's install.
helm_version() { go_mod_requires "$(dirname "${BASH_SOURCE[0]}")/helm/go.mod" helm.sh/helm/v4; }
# go_mod_requires GO_MOD MODULE: the version of MODULE that GO_MOD requires (one-line or block form)
go_mod_requires() {
  sed -n "s#^\\(require\\)\\{0,1\\}[[:space:]]*$2 \\(v[^ ]*\\).*#\\2#p" "$1"
}
# helm_bin_cache VERSION: where that build's binary is kept
helm_bin_cache() { echo "$CACHE_DIR/helm-$1/bin"; }
# The CSI pipeline hack/build-csi-peer.sh builds for the provisioning bench's CSI peer:
# external-provisioner's csi-provisioner and a mock CSI driver, from the modules hack/csi-peer/go.mod
# requires. Its version names both: external-provisioner's, then k8s.io/kubernetes' (the mock's).
csi_peer_version() {
  local mod ep k8s
  mod=$(dirname "${BASH_SOURCE[0]}")/csi-peer/go.mod
  ep=$(go_mod_requires "$mod" github.com/kubernetes-csi/external-provisioner/v6)
  k8s=$(go_mod_requires "$mod" k8s.io/kubernetes)
  [ -n "$ep" ] && [ -n "$k8s" ] && echo "$ep-k8s-$k8s"
}
# csi_peer_bin_cache VERSION: where that build's csi-provisioner and mock-driver are kept
csi_peer_bin_cache() { echo "$CACHE_DIR/csi-peer-$1/bin"; }

# go_for_build WHAT: GO (else go on PATH) when it is a Go >= 1.26, which every Go build here
# needs (Debian's golang-go is 1.19); otherwise fails saying so. Sets GO and gover.
go_for_build() {
  GO=${GO:-$(command -v go || true)}
  [ -n "$GO" ] && [ -x "$GO" ] || fail 1 "no go on PATH (install Go >= 1.26, or set GO)"
  gover=$("$GO" env GOVERSION)
  case $gover in
    go1.2[6-9]*|go1.[3-9][0-9]*) ;;
    *) fail 1 "$GO is $gover; $1 needs Go >= 1.26 (set GO)" ;;
  esac
}
# go_build_env: the Go settings every build here shares: the caches under CACHE_DIR (one module
# cache, so nothing is fetched twice), GOTOOLCHAIN=local (never fetch another toolchain),
# -modcacherw (the cache can be deleted with rm -rf), GOWORK=off (ignore any go.work of the
# caller), no cgo.
go_build_env() {
  export GOMODCACHE=$CACHE_DIR/go137/mod GOCACHE=$CACHE_DIR/go137/build GOTOOLCHAIN=local \
    GOWORK=off GOFLAGS=-modcacherw CGO_ENABLED=0
  mkdir -p "$GOMODCACHE" "$GOCACHE"
}

# bed_layout: BED is the bed RBDP_BED names (else DEFAULT_BED), made absolute, and the other
# variables name what is in it; bed_layout_at DIR: the same for the bed in DIR. The 1.37 plane's
# dir K137 has the shape of a bed (env, ports, kube/, ceph -> ../ceph), so that RBDP_BED=$K137
# points tests at that plane; a plane of hack/plane-up.sh has it too.
bed_layout() { bed_layout_at "${RBDP_BED:-$DEFAULT_BED}"; }
# shellcheck disable=SC2034  # for the scripts that source this file
bed_layout_at() {
  BED=$(realpath -m -- "$1")
  BED_LOCK=$BED.lock        # beside the dir, which a purge deletes
  BED_MARK=$BED/.rbdp-bed   # only a dir hack/bed-up.sh marked is ever purged
  BED_ENV=$BED/env          # describes the plane: tests parse it, shells source it
  BED_PORTS=$BED/ports      # the ports picked when the bed was made, kept while it lives
  CEPH_DIR=$BED/ceph KUBE_DIR=$BED/kube
  K137=$BED/k137
  K137_ENV=$K137/env K137_PORTS=$K137/ports K137_KUBE=$K137/kube
  DEMO_PID=$BED/demo-provisioner.pid DEMO_LOG=$BED/demo-provisioner.log
}
# env_value FILE KEY: KEY's value in an env file the bed scripts wrote (export KEY='value')
env_value() { sed -n "s/^export $2='\(.*\)'\$/\1/p" "$1" 2>/dev/null; }

# ------------------------------------------------------------------ logging, arguments
# seconds since START_NS, one decimal
elapsed() { local ms=$(( ($(date +%s%N) - START_NS) / 1000000 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
log() { printf '[%s %5ss] %s\n' "$LOG_TAG" "$(elapsed)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# fail RC MESSAGE: "TAG: MESSAGE" on stderr, exit RC (for the scripts that print plain lines)
fail() { local rc=$1; shift; echo "$LOG_TAG: $*" >&2; exit "$rc"; }
# usage ARGS: "usage: SCRIPT ARGS" on stderr, exit 2
usage() { echo "usage: $0 $*" >&2; exit 2; }
# down_args ARGS...: the arguments DIR [--purge] of hack/ceph-down.sh and hack/kube-down.sh, into
# DIR (absolute) and PURGE
# shellcheck disable=SC2034  # for the scripts that source this file
down_args() {
  case $# in 1|2) ;; *) usage "DIR [--purge]" ;; esac
  DIR=$(realpath -m -- "$1") PURGE=${2:-}
  [ -z "$PURGE" ] || [ "$PURGE" = --purge ] || usage "DIR [--purge]"
}

# ------------------------------------------------------------------ processes
# a pid is alive if it exists and is not a zombie (PID 1 here reaps orphans late)
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1; [ -n "$st" ] && [ "$st" != Z ]; }
# pidfile_alive FILE: FILE exists and names a live process
pidfile_alive() { [ -f "$1" ] && alive "$(cat "$1")"; }
# argv0 PID: the program a process was started as (not /proc/PID/exe: a rebuilt binary shows
# there as "... (deleted)", and a non-dumpable one only root may read)
argv0() { tr '\0' '\n' 2>/dev/null < "/proc/$1/cmdline" | head -1 || true; }
# stop_ours PID NAME CHECK: stop a daemon a bed script started, while `CHECK PID NAME` says it
# still is that one (pids get reused): SIGTERM, up to 10 s, then SIGKILL and up to 5 s. Says
# "TAG: stopped NAME (pid PID)"; does nothing if CHECK fails at once.
stop_ours() {
  local pid=$1 name=$2 check=$3 i
  "$check" "$pid" "$name" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do "$check" "$pid" "$name" || break; sleep 0.1; done
  if "$check" "$pid" "$name"; then
    echo "$LOG_TAG: $name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do "$check" "$pid" "$name" || break; sleep 0.1; done
  fi
  echo "$LOG_TAG: stopped $name (pid $pid)"
}
# stop_demo_provisioner SECONDS [BINARY]: the provisioner hack/demo.sh left running on the bed
# (DEMO_PID), if that pid still is an rbd-provisioner (that very BINARY, if given), never
# whatever reuses the pid: SIGTERM, then up to SECONDS for it to exit. The pid file goes either
# way. True when it stopped one, whose pid is then in DEMO_STOPPED.
stop_demo_provisioner() {
  local pid i prog
  DEMO_STOPPED=
  [ -f "$DEMO_PID" ] || return 1
  pid=$(cat "$DEMO_PID")
  prog=$(argv0 "$pid")
  [ -n "${2:-}" ] || prog=$(basename "$prog")
  if [ "$prog" = "${2:-rbd-provisioner}" ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < $1 * 10; i++)); do alive "$pid" || break; sleep 0.1; done
    DEMO_STOPPED=$pid
  fi
  rm -f "$DEMO_PID"
  [ -n "$DEMO_STOPPED" ]
}

# ------------------------------------------------------------------ ports
# The standard ports, the default bed's: the mon's msgr2 and msgr1 (the walkthrough's "monitors:
# 127.0.0.1:6789"); etcd client, etcd peer and kube-apiserver of the 1.20 plane, and of the 1.37
# plane beside it.
# shellcheck disable=SC2034  # for the scripts that source this file
STD_MON_PORTS=(3300 6789) STD_120_PORTS=(2379 2380 6443) STD_137_PORTS=(2479 2480 7443)
# whether something accepts connections on 127.0.0.1:PORT
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# a port in [FROM, TO) nobody listens on and not in the space-separated list TAKEN
free_port() {
  local from=$1 to=$2 taken=" ${3:-} " p tries=0
  for ((p = from + RANDOM % (to - from); ; p = from + (p - from + 1) % (to - from))); do
    case "$taken" in *" $p "*) continue ;; esac
    port_in_use "$p" || { echo "$p"; return 0; }
    [ $((++tries)) -lt $((to - from)) ] || return 1
  done
}
# free_port_for mon|etcd|apiserver [TAKEN]: a free port for such a daemon of a bed elsewhere than
# the default. Each kind has its range, all below 32768, where Linux picks the local ports of
# outgoing connections: a port free when chosen must not become some client's ephemeral port
# before the daemon binds it.
free_port_for() {
  case $1 in
    mon) free_port 20000 24000 "${2:-}" ;;
    etcd) free_port 24000 28000 "${2:-}" ;;
    apiserver) free_port 28000 32000 "${2:-}" ;;
  esac
}

# ------------------------------------------------------------------ health checks
# One set of checks for hack/bed-up.sh (reuse a bed, or purge and restart it) and hack/test.sh
# (use a bed, or start one of its own), so they never disagree about a bed.
# A plane's daemons, in start order (hack/kube-up.sh records each in DIR/pids/NAME.pid).
KUBE_DAEMONS=(etcd kube-apiserver kube-controller-manager)
# ceph_ok CEPH_DIR: the cluster answers (a busy machine can make one probe slow: callers retry)
ceph_ok() { [ -f "$1/ceph.conf" ] && timeout 10 ceph -c "$1/ceph.conf" --connect-timeout 5 -s >/dev/null 2>&1; }
# kube_ok KUBE_DIR MINOR: the plane's daemons run and its kube-apiserver is ready, at the address
# hack/kube-up.sh recorded. kube-controller-manager serves no health port (--secure-port=0); on
# 1.20 it must also run the controllers the tests rely on (a plane started by an older
# kube-up.sh may lack some).
KCM_NEEDS="persistentvolume-binder persistentvolume-expander pv-protection pvc-protection serviceaccount-token namespace"
kube_ok() {
  local dir=$1 minor=$2 n server cmd c
  for n in "${KUBE_DAEMONS[@]}"; do pidfile_alive "$dir/pids/$n.pid" || return 1; done
  server=$(env_value "$dir/env" KUBE_CP_SERVER)
  [ -n "$server" ] && [ -f "$dir/pki/admin.crt" ] || return 1
  curl -fsS --max-time 5 --cacert "$dir/pki/ca.crt" --cert "$dir/pki/admin.crt" \
    --key "$dir/pki/admin.key" "$server/readyz" >/dev/null 2>&1 || return 1
  [ "$minor" = 20 ] || return 0
  cmd=$(tr '\0' ' ' 2>/dev/null < "/proc/$(cat "$dir/pids/kube-controller-manager.pid")/cmdline") || return 1
  case "$cmd" in *--use-service-account-credentials=true*) ;; *) return 1 ;; esac
  [[ "$cmd" =~ --controllers=([^ ]*) ]] || return 1
  for c in $KCM_NEEDS; do
    case ",${BASH_REMATCH[1]}," in *",$c,"*) ;; *) return 1 ;; esac
  done
}
# snapshot_controller_running KUBE_DIR: the version of the snapshot-controller hack/bed-up.sh
# started against the plane in KUBE_DIR (its pid file is beside the plane's daemons'), read from
# the path of its binary (snapshot_bin_cache's); false if none runs.
snapshot_controller_running() {
  local f=$1/pids/snapshot-controller.pid pid prog v
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  prog=$(argv0 "$pid")
  [ "$(basename "$prog")" = snapshot-controller ] || return 1
  v=${prog%/bin/snapshot-controller}
  echo "${v##*/snapshot-controller-}"
}
# snapshot_controller_ok KUBE_DIR: that snapshot-controller runs
snapshot_controller_ok() { snapshot_controller_running "$1" >/dev/null; }
# plane_ok DIR: RBDP_BED=DIR (a bed, or its k137/) is ready for tests: its env written, its Ceph
# answering, its plane (of the version the env names) serving, and the snapshot-controller the
# env names (RBDP_SNAPSHOT_CONTROLLER) running. A subshell: the caller's BED stays.
plane_ok() (
  bed_layout_at "$1"
  [ -f "$BED_ENV" ] || exit 1
  minor=$(env_value "$BED_ENV" RBDP_KUBE_MINOR)
  ceph_ok "$CEPH_DIR" && kube_ok "$KUBE_DIR" "${minor:-20}" || exit 1
  [ -z "$(env_value "$BED_ENV" RBDP_SNAPSHOT_CONTROLLER)" ] || snapshot_controller_ok "$KUBE_DIR"
)

# ------------------------------------------------------------------ builds
# seconds -> "45s" / "3m30s"
fmt_secs() { if [ "$1" -ge 60 ]; then printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); else printf '%ds' "$1"; fi; }

# Progress of a long build step, on stderr (the build scripts' stdout is their result): "building
# WHAT" before, "still building WHAT: 3m30s" every RBDP_HEARTBEAT_SECS (30) while it runs, "built
# WHAT in 3m40s" after, so a cold build never sits silent for minutes. Bracket the step with
# begin_step WHAT [VERB PAST] (default: building built) ... end_step; the step's commands stay in
# the script itself, under its set -e. Call stop_heartbeat from an EXIT trap: a failed step must
# not leave the heartbeat talking.
STEP_HB='' STEP_WHAT='' STEP_VERB='' STEP_PAST='' STEP_T0=0
begin_step() {
  stop_heartbeat
  STEP_WHAT=$1 STEP_VERB=${2:-building} STEP_PAST=${3:-built} STEP_T0=$(date +%s)
  log "$STEP_VERB $STEP_WHAT"
  # It also ends when this script is gone (kill -0 $$), should the EXIT trap never run; its sleep
  # holds no fd of ours, so a caller reading our stderr through a pipe is not kept waiting.
  (
    while sleep "${RBDP_HEARTBEAT_SECS:-30}" >/dev/null 2>&1; do
      kill -0 $$ 2>/dev/null || exit 0
      log "still $STEP_VERB $STEP_WHAT: $(fmt_secs $(($(date +%s) - STEP_T0)))"
    done
  ) </dev/null >&2 9>&- &
  STEP_HB=$!
}
end_step() {
  stop_heartbeat
  log "$STEP_PAST $STEP_WHAT in $(fmt_secs $(($(date +%s) - STEP_T0)))"
}
stop_heartbeat() {
  [ -n "$STEP_HB" ] || return 0
  kill "$STEP_HB" 2>/dev/null || true
  wait "$STEP_HB" 2>/dev/null || true
  STEP_HB=
}

# build_begin OUT COMPLETE...: the start of a cached build into directory OUT, after its caller
# found no complete one: one build at a time (parallel runs on a fresh machine) under the lock
# beside OUT; if `COMPLETE...` succeeds once the lock is held (the other run built it), prints
# OUT and exits 0. Otherwise sets TMP (a fresh directory beside OUT, removed on exit: the build
# goes there and is moved into place whole) and START (now, for build_done).
build_begin() {
  local out=$1; shift
  mkdir -p "$(dirname "$out")"
  exec 8>"$(dirname "$out").lock"
  flock 8
  if "$@"; then echo "$out"; exit 0; fi
  TMP=$(mktemp -d "$(dirname "$out")/tmp.XXXXXX")
  trap 'stop_heartbeat; rm -rf "$TMP"' EXIT
  START=$(date +%s)
}

# go_build_bin WHAT OUT PKG [X_FLAGS]: a build step (begin_step WHAT ... end_step): Go package PKG,
# seen from the current directory's module, built into the executable OUT, stripped and without
# build id, at niceness KUBE137_NICE (19: the machines are shared), X_FLAGS (-X settings) added
# to the linker's flags.
go_build_bin() {
  begin_step "$1"
  nice -n "${KUBE137_NICE:-19}" "$GO" build -trimpath -ldflags "-s -w -buildid= ${4:-}" -o "$2" "$3"
  end_step
}

# A build's time: CACHE_DIR/<script>.last holds "seconds version date" of the script's
# last complete build, so that the next cold build can say how long it will take here.
# build_expect ESTIMATE: that, else ESTIMATE
build_expect() {
  local s v d
  read -r s v d 2>/dev/null < "$CACHE_DIR/$LOG_TAG.last" || s=
  if [ -n "$s" ]; then echo "the last build here ($v, $d) took $(fmt_secs "$s")"; else echo "$1"; fi
}
# build_done START VERSION BIN_DIR [complete|partial]: says how long the build since START (date
# +%s) took, keeps that for build_expect, and prints BIN_DIR, the build script's last line. What
# was built is named BUILD_WHAT (default: Kubernetes) and VERSION.
build_done() {
  local took=$(( $(date +%s) - $1 ))
  # A partial build (a cache that lacked one binary) foretells nothing of a cold one.
  [ "${4:-complete}" = partial ] || echo "$took $2 $(date -u +%F)" > "$CACHE_DIR/$LOG_TAG.last"
  log "built ${BUILD_WHAT:-Kubernetes} $2 in $(fmt_secs "$took"), cached in $3"
  echo "$3"
}
