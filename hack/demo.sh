#!/usr/bin/env bash
# hack/demo.sh -- the walkthrough, end to end, on this machine: installs what is missing, starts
# a local Ceph and a Kubernetes 1.20 control plane, runs the provisioner under the ServiceAccount
# and RBAC of manifests/rbac/, applies examples/, and shows the claim Bound and its image in Ceph.
# The bed and the provisioner keep running afterwards; hack/bed-down.sh --purge stops everything.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BED=$(realpath -m -- "${RBDP_BED:-/tmp/rbd-provisioner-bed}")
export RBDP_BED=$BED
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Installing packages and starting the bed (Ceph + kube-apiserver + kube-controller-manager)"
bash hack/install-deps.sh
bash hack/bed-up.sh
# shellcheck disable=SC1091
. "$BED/env"
K() { "$KUBECTL" --kubeconfig "$KUBECONFIG" "$@"; }

step "Building the provisioner"
cargo build --quiet --bin rbd-provisioner
BIN=$PWD/target/debug/rbd-provisioner

step "kubectl apply -f manifests/rbac/ (ServiceAccount kube-system/rbd-provisioner and its rights)"
K apply -f manifests/rbac/
# Kubernetes 1.20 issues ServiceAccount tokens as Secrets; run as that account, as the Deployment would.
for _ in $(seq 1 100); do
  secret=$(K -n kube-system get sa rbd-provisioner -o jsonpath='{.secrets[0].name}' 2>/dev/null || true)
  [ -n "$secret" ] && break; sleep 0.1
done
token=$(K -n kube-system get secret "$secret" -o jsonpath='{.data.token}' | base64 -d)
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

step "Starting the provisioner (provisioner name ceph.com/rbd; log: $BED/demo-provisioner.log)"
if [ -f "$BED/demo-provisioner.pid" ] && [ -d "/proc/$(cat "$BED/demo-provisioner.pid")" ]; then
  kill "$(cat "$BED/demo-provisioner.pid")" 2>/dev/null || true; sleep 0.5
fi
RUST_LOG=info setsid "$BIN" --kubeconfig "$SA_KC" --metrics-addr 127.0.0.1:8080 \
  </dev/null >"$BED/demo-provisioner.log" 2>&1 &
echo $! > "$BED/demo-provisioner.pid"

step "kubectl apply -f examples/ (secrets, StorageClass ceph-rbd, claim ceph-sc-claim, pod ceph-sc-pod)"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for f in ceph-secret ceph-kube-secret storageclass pvc pod; do
  sed -e "s|ADMIN_KEY_BASE64|$(printf %s "$CEPH_ADMIN_KEY" | base64 -w0)|" \
      -e "s|KUBE_KEY_BASE64|$(printf %s "$CEPH_KUBE_KEY" | base64 -w0)|" \
      -e "s|CEPH_MONITORS|$CEPH_MONITORS|" "examples/$f.yaml" > "$tmp/$f.yaml"
done
start=$(date +%s%N)
K apply -f "$tmp/ceph-secret.yaml" -f "$tmp/ceph-kube-secret.yaml" -f "$tmp/storageclass.yaml" -f "$tmp/pvc.yaml"
for _ in $(seq 1 300); do
  [ "$(K get pvc ceph-sc-claim -o jsonpath='{.status.phase}')" = Bound ] && break; sleep 0.1
done
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$(K get pvc ceph-sc-claim -o jsonpath='{.status.phase}')" = Bound ] || {
  echo "the claim did not bind; provisioner log:"; tail -20 "$BED/demo-provisioner.log"; exit 1; }
echo "ceph-sc-claim Bound ${ms} ms after kubectl apply"
K apply -f "$tmp/pod.yaml"

step "kubectl get pvc,pv"
K get pvc,pv
step "kubectl describe pvc ceph-sc-claim"
K describe pvc ceph-sc-claim
image=$(K get pv "$(K get pvc ceph-sc-claim -o jsonpath='{.spec.volumeName}')" -o jsonpath='{.spec.rbd.image}')
step "rbd info kube/$image (the image, read from Ceph)"
rbd -c "$CEPH_CONF" info "kube/$image"
step "kubectl get pod ceph-sc-pod"
K get pod ceph-sc-pod -o wide
echo "(Pending for good: this machine has no kubelet and its kernel has no rbd module, so nothing mounts.)"

cat <<MSG

Everything keeps running. Try:
  . $BED/env; alias k='\$KUBECTL --kubeconfig \$KUBECONFIG'
  k delete pod ceph-sc-pod --grace-period=0; k delete pvc ceph-sc-claim   # image and PV are deleted
  rbd -c \$CEPH_CONF ls kube; curl -s 127.0.0.1:8080/metrics
Stop everything: hack/bed-down.sh --purge
MSG
