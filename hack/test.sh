#!/usr/bin/env bash
# hack/test.sh -- every test: formatting and lints, unit tests, then integration tests against the
# local bed (real Ceph + real kube-apiserver/kube-controller-manager on 127.0.0.1).
# Installs what is missing, starts the bed when it is not running, and stops what it started,
# so it can be run again and again and leaves no process behind.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BED=$(realpath -m -- "${RBDP_BED:-/tmp/rbd-provisioner-bed}")
export RBDP_BED=$BED

bash hack/install-deps.sh

bed_up() {
  [ -f "$BED/env" ] || return 1
  # shellcheck disable=SC1091
  (. "$BED/env" && timeout 10 ceph -c "$CEPH_CONF" --connect-timeout 5 -s >/dev/null 2>&1 &&
     timeout 10 "$KUBECTL" --kubeconfig "$KUBECONFIG" get --raw /readyz >/dev/null 2>&1)
}
started=0
if ! bed_up; then
  started=1
  trap 'echo "test.sh: stopping the bed it started"; bash hack/bed-down.sh --purge' EXIT
  bash hack/bed-up.sh
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== unit tests"
cargo test --lib --bins
echo "== integration tests (real Ceph + Kubernetes)"
# IO-bound tests, each with its own provisioner process, namespace and classes.
cargo test --test '*' -- --test-threads=8
[ $started -eq 1 ] || echo "test.sh: the bed was already running; left it up (hack/bed-down.sh stops it)"
