# hack/lib.sh -- helpers shared by the bed scripts; source it, after setting LOG_TAG (and
# optionally START_NS, which defaults to now).
# shellcheck shell=bash
START_NS=${START_NS:-$(date +%s%N)}
LOG_TAG=${LOG_TAG:-$(basename "$0" .sh)}

# seconds since START_NS, one decimal
elapsed() { local ms=$(( ($(date +%s%N) - START_NS) / 1000000 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
log() { printf '[%s %5ss] %s\n' "$LOG_TAG" "$(elapsed)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# a pid is alive if it exists and is not a zombie (PID 1 here reaps orphans late)
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1; [ -n "$st" ] && [ "$st" != Z ]; }
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
# stop_pid PID [SECONDS]: SIGTERM, wait up to SECONDS (default 10), then SIGKILL
stop_pid() {
  local pid=$1 secs=${2:-10} i
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do alive "$pid" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

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
