#!/usr/bin/env bash
# hack/kube-up.sh [--kube 1.20|1.37] DIR -- throw-away Kubernetes control plane on 127.0.0.1 for
# the test bed: etcd + kube-apiserver (RBAC, ServiceAccount tokens) + kube-controller-manager (PV
# binder/expander/protection, serviceaccount + tokens, namespace, garbage collector).
#   1.20 (default): Kubernetes 1.20.2 of hack/build-kube.sh, Debian's etcd; ports 2379/2380/6443.
#   1.37: Kubernetes 1.37.2 and etcd 3.6 of hack/build-kube-137.sh; ports 2479/2480/7443, so it can
#         run beside a 1.20 plane and share one Ceph cluster.
# There is no kubelet/scheduler: pods never run here, only API objects and controllers.
# Everything (certs, keys, etcd data, logs, pid files, kubeconfigs) lives in DIR.
# Writes DIR/admin.kubeconfig (client cert in system:masters), DIR/admin-token.kubeconfig
# (static bearer token, same rights) and DIR/env. Stop with hack/kube-down.sh DIR.
#
# Environment (defaults by version):
#   KUBE_BIN_DIR              kube-apiserver + kube-controller-manager; 1.20: required (output of
#                             hack/build-kube.sh); 1.37: output of hack/build-kube-137.sh. Their
#                             version must be the one asked for, so a shell set up for one plane
#                             cannot start the other's binaries.
#   ETCD_BIN [1.20: etcd on PATH; 1.37: $KUBE_BIN_DIR/etcd]
#   ETCD_CLIENT_PORT  ETCD_PEER_PORT  APISERVER_PORT   [ports above]
#   PV_SYNC_PERIOD [15s]      kube-controller-manager --pvclaimbinder-sync-period
#   KCM_CONTROLLERS [below]   KUBE_APISERVER_EXTRA_ARGS [""] (e.g. --feature-gates=RemoveSelfLink=false)
#   READY_TIMEOUT [120]       seconds to wait for the whole control plane
#   RBDP_KCM_QPS [unset]      kube-controller-manager --kube-api-qps=N --kube-api-burst=2N (its
#                             defaults are 20 and 30): the provisioning bench's raised-QPS profile
set -euo pipefail
set +m  # no job control: background children must not lead a process group (setsid must not fork)

START_NS=$(date +%s%N)
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
USAGE="[--kube 1.20|1.37] DIR"
KV=1.20
if [ "${1:-}" = --kube ]; then KV=${2:-}; shift 2 || usage "$USAGE"; fi
[ $# -eq 1 ] || usage "$USAGE"
DIR=$(realpath -m -- "$1")
LOG_TAG="kube-up $KV"

case "$KV" in
  1.20)
    : "${KUBE_BIN_DIR:?set KUBE_BIN_DIR to the directory printed by hack/build-kube.sh}"
    ETCD_BIN=${ETCD_BIN:-$(command -v etcd || echo /usr/bin/etcd)}
    ports=("${STD_120_PORTS[@]}") MARKER=.rbdp-kube NAME=rbdp-bed
    # What PVC/PV flows need, plus housekeeping tests rely on (clusterrole-aggregation fills the
    # built-in admin/edit/view roles so tests can bind them).
    controllers=persistentvolume-binder,persistentvolume-expander,pvc-protection,pv-protection,serviceaccount,serviceaccount-token,namespace,garbagecollector,clusterrole-aggregation
    ;;
  1.37)
    KUBE_BIN_DIR=${KUBE_BIN_DIR:-$("$HERE/build-kube-137.sh" | tail -1)}
    ETCD_BIN=${ETCD_BIN:-$KUBE_BIN_DIR/etcd}
    ports=("${STD_137_PORTS[@]}") MARKER=.rbdp-kube137 NAME=rbdp-bed137
    # The same set under the names 1.28+ use (the old names are aliases).
    controllers=persistentvolume-binder-controller,persistentvolume-expander-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller,serviceaccount-controller,serviceaccount-token-controller,namespace-controller,garbage-collector-controller,clusterrole-aggregation-controller
    ;;
  *) usage "$USAGE" ;;
esac
APISERVER_BIN=$KUBE_BIN_DIR/kube-apiserver
KCM_BIN=$KUBE_BIN_DIR/kube-controller-manager
ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-${ports[0]}}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-${ports[1]}}
APISERVER_PORT=${APISERVER_PORT:-${ports[2]}}
PV_SYNC_PERIOD=${PV_SYNC_PERIOD:-15s}
READY_TIMEOUT=${READY_TIMEOUT:-120}
KCM_CONTROLLERS=${KCM_CONTROLLERS:-$controllers}
read -r -a APISERVER_EXTRA <<< "${KUBE_APISERVER_EXTRA_ARGS:-}"

[ -x "$APISERVER_BIN" ] || die "missing executable: $APISERVER_BIN"
case "$("$APISERVER_BIN" --version 2>/dev/null)" in
  *" v$KV".*) ;;
  *) die "$APISERVER_BIN is not Kubernetes $KV (KUBE_BIN_DIR set for another plane?)" ;;
esac
for b in "$KCM_BIN" "$ETCD_BIN"; do [ -x "$b" ] || die "missing executable: $b"; done
# the in-tree rbd volume plugin of 1.20 (expander, kubernetes.io/rbd provisioner) shells out to rbd
[ "$KV" != 1.20 ] || [ -x /usr/bin/rbd ] || die "missing /usr/bin/rbd (run hack/install-deps.sh)"
for b in openssl curl base64 realpath; do command -v $b >/dev/null || die "missing $b"; done

PKI=$DIR/pki LOGS=$DIR/logs PIDS=$DIR/pids
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
  [ -f "$DIR/$MARKER" ] || die "$DIR is not empty and was not made by kube-up.sh --kube $KV"
  for n in "${KUBE_DAEMONS[@]}"; do
    if pidfile_alive "$PIDS/$n.pid"; then
      die "$n already running (pid $(cat "$PIDS/$n.pid")); run hack/kube-down.sh $DIR first"
    fi
  done
fi
for p in "$ETCD_CLIENT_PORT" "$ETCD_PEER_PORT" "$APISERVER_PORT"; do
  if port_in_use "$p"; then die "port 127.0.0.1:$p already in use"; fi
done
mkdir -p "$PKI" "$LOGS" "$PIDS" "$DIR/etcd"
chmod 700 "$DIR" "$DIR/etcd" "$PKI"
touch "$DIR/$MARKER"

# On any failure, stop what this run started (logs stay in DIR/logs).
cleanup_on_error() { local rc=$?; if [ $rc -ne 0 ]; then log "failed (rc=$rc); stopping started processes (logs in $LOGS)"; "$HERE/kube-down.sh" "$DIR" >&2 || true; fi; }
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
  openssl req -x509 -new -nodes -key "$PKI/ca.key" -subj "/CN=$NAME-ca" -days 3650 -sha256 \
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
- name: $NAME
  cluster:
    server: $SERVER
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $user
  user:
$userblock
contexts:
- name: $user@$NAME
  context:
    cluster: $NAME
    user: $user
current-context: $user@$NAME
EOF
  )
}
write_kubeconfig "$DIR/admin.kubeconfig" admin admin ""
write_kubeconfig "$DIR/admin-token.kubeconfig" admin-token "" "$DIR/admin-token"
write_kubeconfig "$DIR/kube-controller-manager.kubeconfig" system:kube-controller-manager kube-controller-manager ""

# setsid and nohup exec, so $! is the program itself; its own session lets it outlive the
# caller's process group / terminal (the bed is shared and stays up).
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
  --name "$NAME" --data-dir "$DIR/etcd" \
  --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "$NAME=http://127.0.0.1:$ETCD_PEER_PORT" \
  --listen-metrics-urls "" --quota-backend-bytes 2147483648 --snapshot-count 10000 \
  --logger zap --log-outputs stderr --log-level warn
etcd_healthy() { curl -fsS "$ETCD_URL/health" | grep -q '"health":"true"'; }
wait_until etcd "etcd healthy" etcd_healthy

# ------------------------------------------------------------------ kube-apiserver
# --insecure-port went in 1.24; 1.20 needs it off explicitly.
[ "$KV" != 1.20 ] || APISERVER_EXTRA=(--insecure-port=0 "${APISERVER_EXTRA[@]}")
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
# 1.20: PATH starts with /usr/bin so the in-tree rbd plugin finds /usr/bin/rbd whatever the
# caller's PATH, and the insecure --port (gone in 1.24) is off. 1.37 has no rbd plugin (gone in 1.31).
KCM_EXTRA=()
[ "$KV" != 1.20 ] || KCM_EXTRA=(--port=0)
if [ -n "${RBDP_KCM_QPS:-}" ]; then
  [[ $RBDP_KCM_QPS =~ ^[1-9][0-9]*$ ]] || die "RBDP_KCM_QPS must be a positive integer, not '$RBDP_KCM_QPS'"
  KCM_EXTRA+=(--kube-api-qps="$RBDP_KCM_QPS" --kube-api-burst=$((2 * RBDP_KCM_QPS)))
fi
start_bg kube-controller-manager env PATH="/usr/bin:/bin:/usr/sbin:/sbin:$PATH" "$KCM_BIN" \
  --kubeconfig="$DIR/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=0 "${KCM_EXTRA[@]}" \
  --leader-elect=false \
  --controllers="$KCM_CONTROLLERS" \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$PKI/sa.key" \
  --root-ca-file="$PKI/ca.crt" \
  --pvclaimbinder-sync-period="$PV_SYNC_PERIOD" \
  --v=2
# Ready when the serviceaccount controller has made default/default (1.20: with its token Secret;
# 1.24+ makes none) and the PV controller's informers have synced (the log is truncated at each
# start). 1.37's "Caches are synced" lines do not name the controller: take the first one after the
# PV controller's start line (its informers are already populated by then).
sa_ready() {
  local sa; sa=$("${KC[@]}" "$SERVER/api/v1/namespaces/default/serviceaccounts/default") || return 1
  [ "$KV" != 1.20 ] || grep -q '"secrets"' <<< "$sa"
}
if [ "$KV" = 1.20 ]; then
  pv_synced() { grep -q 'Caches are synced for persistent volume' "$LOGS/kube-controller-manager.log"; }
else
  pv_synced() { awk '/Starting persistent volume controller/ {s=1} s && /Caches are synced/ {f=1; exit} END {exit !f}' "$LOGS/kube-controller-manager.log"; }
fi
wait_until kube-controller-manager "default/default serviceaccount" sa_ready
wait_until kube-controller-manager "PV controller synced" pv_synced

# KUBE_CP_SERVER is where hack/lib.sh's health check (kube_ok) finds this plane's API server.
cat > "$DIR/env" <<EOF
export KUBECONFIG='$DIR/admin.kubeconfig'
export KUBE_CP_SERVER='$SERVER'
export KUBE_CP_CA='$PKI/ca.crt'
export KUBE_CP_TOKEN_FILE='$DIR/admin-token'
EOF
trap - EXIT
log "Kubernetes $KV control plane ready in $(elapsed)s: export KUBECONFIG=$DIR/admin.kubeconfig"
echo "kube-ready-seconds $(elapsed)"
