#!/usr/bin/env bash
# hack/demo.sh -- the walkthrough, end to end, on this machine: installs what is missing, starts
# a local Ceph and a Kubernetes control plane, runs the provisioner under the ServiceAccount and
# RBAC of manifests/rbac/, applies examples/ (the walkthrough's Secrets, StorageClass, claim and
# pod, unchanged), and shows the claim Bound and its image in Ceph.
#
#   bash hack/demo.sh                   # Kubernetes 1.37.2 (current): the claim gets a ceph-csi PV
#   RBDP_KUBE=1.20 bash hack/demo.sh    # Kubernetes 1.20.2 (the walkthrough's era): a spec.rbd PV
#
# On 1.37 the walkthrough's class has no clusterID (the Ceph cluster's fsid is used) and its user
# Secret holds only `key`, which ceph-csi cannot read: the provisioner says so in a
# ProvisioningFailed event with the command that copies the key into a Secret in ceph-csi's
# format; the demo runs that command, as an operator would, and the claim binds.
#
# Only the plane asked for is built and started (RBDP_PLANES of hack/bed-up.sh): a fresh machine
# waits for one Kubernetes build, not two. The other version's demo later adds its plane to the
# running bed, beside the first.
#
# The bed and the provisioner keep running afterwards; hack/bed-down.sh --purge stops everything.
# RBDP_BED (default /tmp/rbd-provisioner-bed) puts the bed elsewhere, on free ports.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=hack/lib.sh
. hack/lib.sh
bed_layout
export RBDP_BED=$BED
KUBE=${RBDP_KUBE:-1.37}
case $KUBE in 1.20|1.37) ;; *) fail 2 "RBDP_KUBE must be 1.37 (default) or 1.20, got '$KUBE'" ;; esac
DEMO_START=$(date +%s%N)
step() { printf '\n\033[1m== [%ss] %s\033[0m\n' "$(( ($(date +%s%N) - DEMO_START) / 1000000000 ))" "$*"; }

step "Installing packages and starting the bed (Ceph + Kubernetes $KUBE: kube-apiserver, kube-controller-manager)"
bash hack/install-deps.sh
RBDP_KUBE=$KUBE RBDP_PLANES=$KUBE bash hack/bed-up.sh
# The 1.37 plane shares the bed's Ceph; its env describes it with the same variables.
if [ "$KUBE" = 1.37 ]; then ENV=$K137_ENV; else ENV=$BED_ENV; fi
# shellcheck disable=SC1090
. "$ENV"
K() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }
echo "Kubernetes server: $(K get --raw /version | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')"

step "Building the provisioner"
nice cargo build --quiet --bin rbd-provisioner
BIN=$PWD/target/debug/rbd-provisioner

step "kubectl apply -f manifests/rbac/ (ServiceAccount kube-system/rbd-provisioner and its rights)"
K apply -f manifests/rbac/
# Run as that account, as the Deployment would: a token from the TokenRequest API (1.24 and
# later no longer make token Secrets; 1.20 serves TokenRequest too). Posted raw: kubectl 1.20,
# the 1.20 plane's own, has no `create token` (1.24+).
token=$(echo '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":31536000}}' |
  K create --raw /api/v1/namespaces/kube-system/serviceaccounts/rbd-provisioner/token -f - | jq -r .status.token)
if [ -z "$token" ] || [ "$token" = null ]; then
  echo "demo: the TokenRequest API gave no token for kube-system/rbd-provisioner"; exit 1
fi
server=$(K config view --raw -o jsonpath='{.clusters[0].cluster.server}')
ca=$(K config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
SA_KC=$BED/demo-sa.kubeconfig
umask 077
cat > "$SA_KC" <<KC
apiVersion: v1
kind: Config
clusters: [{name: bed, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: rbd-provisioner, user: {token: "$token"}}]
contexts: [{name: sa, context: {cluster: bed, user: rbd-provisioner}}]
current-context: sa
KC
unset token

step "Starting the provisioner (provisioner name ceph.com/rbd; log: $DEMO_LOG)"
stop_demo_provisioner 5 "$BIN" || true   # our own earlier demo process
METRICS=${DEMO_METRICS_ADDR:-127.0.0.1:8080}
if (exec 3<>"/dev/tcp/${METRICS%:*}/${METRICS##*:}") 2>/dev/null; then
  echo "port ${METRICS##*:} is taken: metrics off (set DEMO_METRICS_ADDR to choose another)"; METRICS=
fi
RUST_LOG=info setsid "$BIN" --kubeconfig "$SA_KC" --metrics-addr "$METRICS" \
  </dev/null >"$DEMO_LOG" 2>&1 &
echo $! > "$DEMO_PID"

# A rerun replays the walkthrough from the start: its claim, pod and the csi Secret go first.
K delete pod ceph-sc-pod --ignore-not-found --grace-period=0 --force >/dev/null 2>&1 || true
K delete pvc ceph-sc-claim --ignore-not-found --timeout=60s >/dev/null
K -n default delete secret ceph-kube-secret-csi --ignore-not-found >/dev/null

step "kubectl apply -f examples/ (secrets, StorageClass ceph-rbd, claim ceph-sc-claim, pod ceph-sc-pod)"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Placeholders filled in by bash itself: keys never appear in a process's arguments.
admin_b64=$(printf %s "$CEPH_ADMIN_KEY" | base64 -w0)
kube_b64=$(printf %s "$CEPH_KUBE_KEY" | base64 -w0)
for f in ceph-secret ceph-kube-secret storageclass pvc pod; do
  text=$(<"examples/$f.yaml")
  text=${text//ADMIN_KEY_BASE64/$admin_b64}
  text=${text//KUBE_KEY_BASE64/$kube_b64}
  text=${text//CEPH_MONITORS/$CEPH_MONITORS}
  printf '%s\n' "$text" > "$tmp/$f.yaml"
done
unset admin_b64 kube_b64 text
phase() { K get pvc ceph-sc-claim -o jsonpath='{.status.phase}'; }
# A ProvisioningFailed message about this claim (core/v1 view of the provisioner's events).
failure() {
  K get events --field-selector "involvedObject.uid=$uid,reason=ProvisioningFailed" \
    -o jsonpath='{.items[-1:].message}' 2>/dev/null || true
}
start=$(date +%s%N)
K apply -f "$tmp/ceph-secret.yaml" -f "$tmp/ceph-kube-secret.yaml" -f "$tmp/storageclass.yaml" -f "$tmp/pvc.yaml"
uid=$(K get pvc ceph-sc-claim -o jsonpath='{.metadata.uid}')
msg=
for _ in $(seq 1 300); do
  [ "$(phase)" = Bound ] && break
  msg=$(failure); [ -n "$msg" ] && break
  sleep 0.1
done

if [ "$(phase)" != Bound ] && [ -n "$msg" ]; then
  step "kubectl describe pvc ceph-sc-claim: the provisioner says what is missing, and how to make it"
  K describe pvc ceph-sc-claim | sed -n '/^Events:/,$p'
  cmd=$(printf '%s' "$msg" | sed -n 's/^[^`]*`\([^`]*\)`.*$/\1/p')
  # The one command this step may run: the copy of the walkthrough's user Secret into
  # ceph-csi's format, exactly as the provisioner writes it for these objects.
  want="kubectl -n default get secret ceph-kube-secret -o go-template='{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"ceph-kube-secret-csi\",\"namespace\":\"default\"},\"type\":\"Opaque\",\"stringData\":{\"userID\":\"kube\"},\"data\":{\"userKey\":\"{{.data.key}}\"}}' | kubectl create -f -"
  [ "$cmd" = "$want" ] || { echo "unexpected ProvisioningFailed: $msg"; tail -20 "$DEMO_LOG"; exit 1; }
  step "Running that command, as an operator would (the key goes from Secret to Secret, never shown)"
  echo "$cmd"
  mkdir -p "$tmp/bin"; ln -s "$(command -v "$KUBECTL")" "$tmp/bin/kubectl"
  PATH="$tmp/bin:$PATH" KUBECONFIG=$KUBECONFIG bash -c "$cmd"
  # The provisioner retries failed claims with backoff (1 s, doubling); no restart needed.
  for _ in $(seq 1 600); do [ "$(phase)" = Bound ] && break; sleep 0.1; done
fi
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$(phase)" = Bound ] || {
  echo "the claim did not bind; provisioner log:"; tail -20 "$DEMO_LOG"; exit 1; }
echo "ceph-sc-claim Bound ${ms} ms after kubectl apply"
K apply -f "$tmp/pod.yaml"

step "kubectl get pvc,pv"
K get pvc,pv
step "kubectl describe pvc ceph-sc-claim"
K describe pvc ceph-sc-claim
pv=$(K get pvc ceph-sc-claim -o jsonpath='{.spec.volumeName}')
image=$(K get pv "$pv" -o jsonpath='{.spec.rbd.image}{.spec.csi.volumeHandle}')
step "kubectl get pv $pv -o yaml"
K get pv "$pv" -o yaml
if [ "$KUBE" = 1.37 ]; then
  echo "(clusterID is the Ceph cluster's fsid: ceph fsid -> $(ceph -c "$CEPH_CONF" fsid))"
fi
step "rbd info kube/$image (the image, read from Ceph)"
rbd -c "$CEPH_CONF" info "kube/$image"
step "kubectl get pod ceph-sc-pod"
K get pod ceph-sc-pod -o wide
echo "(Pending for good: this machine has no kubelet and its kernel has no rbd module, so nothing mounts.)"
step "Done in $(( ($(date +%s%N) - DEMO_START) / 1000000000 )) s"

cat <<MSG

Everything keeps running. Try:
  . $ENV; alias k='\$KUBECTL --kubeconfig \$KUBECONFIG'
  k delete pod ceph-sc-pod --grace-period=0 --force; k delete pvc ceph-sc-claim   # image and PV are deleted
  rbd -c \$CEPH_CONF ls kube${METRICS:+; curl -s $METRICS/metrics}
Rerun on the other version (adds its plane to this bed): RBDP_KUBE=$([ "$KUBE" = 1.37 ] && echo 1.20 || echo 1.37) bash hack/demo.sh
Stop everything: hack/bed-down.sh --purge
MSG
