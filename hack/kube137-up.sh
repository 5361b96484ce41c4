#!/usr/bin/env bash
# hack/kube137-up.sh DIR -- throw-away Kubernetes 1.37 control plane on 127.0.0.1, next to (not
# instead of) the 1.20 bed of hack/kube-up.sh: etcd 3.6 + kube-apiserver 1.37.2 (RBAC,
# ServiceAccount tokens, :7443) + kube-controller-manager 1.37.2 (PV binder/expander/protection,
# serviceaccount + tokens, namespace, garbage collector), all built by hack/build-kube-137.sh.
# Default ports (2479/2480/7443) do not collide with the 1.20 bed's (2379/2380/6443), so both
# can run at once and share one Ceph cluster.
# There is no kubelet/scheduler: pods never run here, only API objects and controllers.
# Everything (certs, keys, etcd data, logs, pid files, kubeconfigs) lives in DIR.
# Writes DIR/admin.kubeconfig (client cert in system:masters), DIR/admin-token.kubeconfig
# (static bearer token, same rights) and DIR/env. Stop with hack/kube137-down.sh DIR.
#
# Environment (KUBE137_ prefix, so a shell set up for the 1.20 bed does not leak into this one):
#   KUBE137_BIN_DIR [output of hack/build-kube-137.sh]  kube-apiserver, kube-controller-manager, etcd
#   KUBE137_ETCD_BIN [$KUBE137_BIN_DIR/etcd]
#   KUBE137_ETCD_CLIENT_PORT [2479]  KUBE137_ETCD_PEER_PORT [2480]  KUBE137_APISERVER_PORT [7443]
#   KUBE137_PV_SYNC_PERIOD [15s]     kube-controller-manager --pvclaimbinder-sync-period
#   KUBE137_CONTROLLERS [below]      KUBE137_APISERVER_EXTRA_ARGS [""]
#   KUBE137_READY_TIMEOUT [120]      seconds to wait for the whole control plane
set -euo pipefail
set +m  # no job control: background children must not lead a process group (setsid must not fork)

[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
START_NS=$(date +%s%N)
DIR=$(realpath -m -- "$1")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

KUBE_BIN_DIR=${KUBE137_BIN_DIR:-$("$HERE/build-kube-137.sh" | tail -1)}
APISERVER_BIN=$KUBE_BIN_DIR/kube-apiserver
KCM_BIN=$KUBE_BIN_DIR/kube-controller-manager
ETCD_BIN=${KUBE137_ETCD_BIN:-$KUBE_BIN_DIR/etcd}
ETCD_CLIENT_PORT=${KUBE137_ETCD_CLIENT_PORT:-2479}
ETCD_PEER_PORT=${KUBE137_ETCD_PEER_PORT:-2480}
APISERVER_PORT=${KUBE137_APISERVER_PORT:-7443}
PV_SYNC_PERIOD=${KUBE137_PV_SYNC_PERIOD:-15s}
READY_TIMEOUT=${KUBE137_READY_TIMEOUT:-120}
# Same set as the 1.20 bed, under the names 1.28+ use (the old names are aliases).
KCM_CONTROLLERS=${KUBE137_CONTROLLERS:-persistentvolume-binder-controller,persistentvolume-expander-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller,serviceaccount-controller,serviceaccount-token-controller,namespace-controller,garbage-collector-controller,clusterrole-aggregation-controller}
read -r -a APISERVER_EXTRA <<< "${KUBE137_APISERVER_EXTRA_ARGS:-}"

elapsed() { local ms=$(( ($(date +%s%N) - START_NS) / 1000000 )); printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)); }
log() { printf '[kube137-up %5ss] %s\n' "$(elapsed)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# a pid is alive if it exists and is not a zombie (PID 1 here reaps orphans late)
alive() { local st; st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1; [ -n "$st" ] && [ "$st" != Z ]; }

for b in "$APISERVER_BIN" "$KCM_BIN" "$ETCD_BIN"; do [ -x "$b" ] || die "missing executable: $b (run hack/build-kube-137.sh)"; done
for b in openssl curl base64 realpath; do command -v $b >/dev/null || die "missing $b"; done

PKI=$DIR/pki LOGS=$DIR/logs PIDS=$DIR/pids
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
  [ -f "$DIR/.rbdp-kube137" ] || die "$DIR is not empty and was not made by kube137-up.sh"
  for n in etcd kube-apiserver kube-controller-manager; do
    if [ -f "$PIDS/$n.pid" ] && alive "$(cat "$PIDS/$n.pid")"; then
      die "$n already running (pid $(cat "$PIDS/$n.pid")); run hack/kube137-down.sh $DIR first"
    fi
  done
fi
for p in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port 127.0.0.1:$p already in use (set KUBE137_*_PORT)"; fi
done
mkdir -p "$PKI" "$LOGS" "$PIDS" "$DIR/etcd"
chmod 700 "$DIR" "$DIR/etcd" "$PKI"
touch "$DIR/.rbdp-kube137"

# On any failure, stop what this run started (logs stay in DIR/logs).
cleanup_on_error() { local rc=$?; if [ $rc -ne 0 ]; then log "failed (rc=$rc); stopping started processes (logs in $LOGS)"; "$HERE/kube137-down.sh" "$DIR" >&2 || true; fi; }
trap cleanup_on_error EXIT

# ------------------------------------------------------------------ PKI (made once per DIR)
gen_cert() { # name CN O extra-ext-lines
  local name=$1 cn=$2 o=$3 ext=$4 subj
  [ -f "$PKI/$name.crt" ] && return 0
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o/CN=$cn"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" "$ext" > "$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}
umask 077
if [ ! -f "$PKI/ca.crt" ]; then
  openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -nodes -key "$PKI/ca.key" -subj "/CN=rbdp-bed137-ca" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -out "$PKI/ca.crt" 2>/dev/null
fi
gen_cert apiserver kube-apiserver "" "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
gen_cert admin kubernetes-admin system:masters "extendedKeyUsage=clientAuth"
gen_cert kube-controller-manager system:kube-controller-manager "" "extendedKeyUsage=clientAuth"
if [ ! -f "$PKI/sa.key" ]; then
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
if [ ! -f "$PKI/tokens.csv" ]; then
  openssl rand -hex 24 > "$DIR/admin-token"
  echo "$(cat "$DIR/admin-token"),admin-token-user,admin-token-uid,\"system:masters\"" > "$PKI/tokens.csv"
fi
umask 022
log "pki ready"

# ------------------------------------------------------------------ kubeconfigs
SERVER=https://127.0.0.1:$APISERVER_PORT
b64() { base64 -w0 < "$1"; }
write_kubeconfig() { # file user cert-name|"" token-file|""
  local f=$1 user=$2 cert=$3 tokf=$4 userblock
  if [ -n "$cert" ]; then
    userblock="    client-certificate-data: $(b64 "$PKI/$cert.crt")
    client-key-data: $(b64 "$PKI/$cert.key")"
  else
    userblock="    token: $(cat "$tokf")"
  fi
  ( umask 077; cat > "$f" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: rbdp-bed137
  cluster:
    server: $SERVER
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $user
  user:
$userblock
contexts:
- name: $user@rbdp-bed137
  context:
    cluster: rbdp-bed137
    user: $user
current-context: $user@rbdp-bed137
EOF
  )
}
write_kubeconfig "$DIR/admin.kubeconfig" admin admin ""
write_kubeconfig "$DIR/admin-token.kubeconfig" admin-token "" "$DIR/admin-token"
write_kubeconfig "$DIR/kube-controller-manager.kubeconfig" system:kube-controller-manager kube-controller-manager ""

# setsid and nohup exec, so $! is the program itself; its own session lets it outlive the
# caller's process group / terminal.
start_bg() { # name cmd...
  local name=$1; shift
  setsid nohup "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! > "$PIDS/$name.pid"
  log "started $name pid $!"
}
deadline=$(( $(date +%s) + READY_TIMEOUT ))
wait_until() { # name description command...   (fails early if the process died)
  local name=$1 what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    alive "$(cat "$PIDS/$name.pid")" || { tail -30 "$LOGS/$name.log" >&2; die "$name died"; }
    [ "$(date +%s)" -lt "$deadline" ] || { tail -30 "$LOGS/$name.log" >&2; die "timeout waiting for $what"; }
    sleep 0.2
  done
  log "ready: $what"
}

# ------------------------------------------------------------------ etcd
ETCD_URL=http://127.0.0.1:$ETCD_CLIENT_PORT
start_bg etcd "$ETCD_BIN" \
  --name rbdp-bed137 --data-dir "$DIR/etcd" \
  --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "rbdp-bed137=http://127.0.0.1:$ETCD_PEER_PORT" \
  --listen-metrics-urls "" --quota-backend-bytes 2147483648 --snapshot-count 10000 \
  --logger zap --log-outputs stderr --log-level warn
etcd_healthy() { curl -fsS "$ETCD_URL/health" | grep -q '"health":"true"'; }
wait_until etcd "etcd healthy" etcd_healthy

# ------------------------------------------------------------------ kube-apiserver
# Differs from 1.20: no --insecure-port (removed in 1.24).
start_bg kube-apiserver "$APISERVER_BIN" \
  --etcd-servers="$ETCD_URL" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
  --secure-port="$APISERVER_PORT" \
  --cert-dir="$PKI" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --token-auth-file="$PKI/tokens.csv" \
  --anonymous-auth=false \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds,StorageObjectInUseProtection,PersistentVolumeClaimResize,NodeRestriction,Priority,RuntimeClass,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ResourceQuota \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --api-audiences=https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range=10.0.0.0/24 \
  --allow-privileged=true \
  --endpoint-reconciler-type=none \
  --profiling=false \
  --v=1 "${APISERVER_EXTRA[@]}"
KC=(curl -fsS --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key")
wait_until kube-apiserver "kube-apiserver $SERVER/readyz" "${KC[@]}" "$SERVER/readyz"

# ------------------------------------------------------------------ kube-controller-manager
# Differs from 1.20: no --port (removed in 1.24); the in-tree rbd plugin is gone (1.31), so no rbd
# CLI is needed.
start_bg kube-controller-manager "$KCM_BIN" \
  --kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=0 \
  --leader-elect=false \
  --controllers="$KCM_CONTROLLERS" \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" \
  --pvclaimbinder-sync-period="$PV_SYNC_PERIOD" \
  --v=2
# Ready when the serviceaccount controller has made default/default (1.24+ makes no token
# Secrets for it) and the PV controller's informers have synced (the log is truncated at each start).
sa_exists() { "${KC[@]}" "$SERVER/api/v1/namespaces/default/serviceaccounts/default"; }
# 1.37's "Caches are synced" lines do not name the controller: take the first one after the PV
# controller's start line (its informers are already populated by then).
pv_synced() { awk '/Starting persistent volume controller/ {s=1} s && /Caches are synced/ {f=1; exit} END {exit !f}' "$LOGS/kube-controller-manager.log"; }
wait_until kube-controller-manager "default/default serviceaccount" sa_exists
wait_until kube-controller-manager "PV controller synced" pv_synced

cat > "$DIR/env" <<EOF
export KUBECONFIG='$DIR/admin.kubeconfig'
export KUBE_CP_SERVER='$SERVER'
export KUBE_CP_CA='$PKI/ca.crt'
export KUBE_CP_TOKEN_FILE='$DIR/admin-token'
EOF
trap - EXIT
log "control plane ready in $(elapsed)s: export KUBECONFIG=$DIR/admin.kubeconfig"
echo "kube-ready-seconds $(elapsed)"
