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
