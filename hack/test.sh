#!/usr/bin/env bash
# hack/test.sh -- every test: formatting and lints, unit tests, then every integration test against
# both control planes of the local bed (real Ceph + real kube-apiserver/kube-controller-manager on
# 127.0.0.1): Kubernetes 1.20.2, then 1.37.2 (hack/bed-up.sh with RBDP_KUBE=1.37), on the one
# Ceph cluster. Fails if either plane fails, and says which.
# Installs what is missing. Uses the bed in $RBDP_BED (default: the shared default bed) when it is
# up and healthy, and never stops a bed it did not start. Otherwise it starts a bed of its own, in
# a directory and on ports of this run only, and stops and purges it on exit: one run's exit can
# then never pull a bed from under another run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
HERE=$PWD/hack
BED=$(realpath -m -- "${RBDP_BED:-/tmp/rbd-provisioner-bed}")

bash hack/install-deps.sh
# The 1.37 binaries (built once with the machine's current Go, then cached): built here so a
# fresh machine's first run shows the build on its own, before any bed starts.
bash hack/build-kube-137.sh >/dev/null

bed_up() {  # $1: bed dir; the same checks as bed-up.sh, kube-controller-manager included
  [ -f "$1/env" ] || return 1
  # shellcheck disable=SC1091
  (. "$1/env" && timeout 10 ceph -c "$CEPH_CONF" --connect-timeout 5 -s >/dev/null 2>&1 &&
     timeout 10 "$KUBECTL" --kubeconfig "$KUBECONFIG" get --raw /readyz >/dev/null 2>&1) || return 1
  local pidf=$1/kube/pids/kube-controller-manager.pid st
  [ -f "$pidf" ] || return 1
  st=$(awk '{print $3}' "/proc/$(cat "$pidf")/stat" 2>/dev/null) && [ "$st" != Z ]
}
# A bed hack/demo.sh started for 1.37 alone is up too when its 1.37 plane is, and it has no 1.20
# plane (a broken one would make bed-up.sh purge the bed): bed-up.sh then adds the 1.20 plane.
if ! bed_up "$BED" && ! { [ ! -e "$BED/kube" ] && bed_up "$BED/k137"; }; then
  # A fresh bed of this run's own (free ports are picked by bed-up.sh for a non-default dir).
  BED=$(mktemp -d /tmp/rbd-provisioner-bed-run.XXXXXX)
  trap 'echo "test.sh: stopping the bed it started ($BED)"; RBDP_BED=$BED bash "$HERE/bed-down.sh" --purge; rm -f "$BED.lock"' EXIT
  RBDP_BED=$BED RBDP_KUBE=1.37 bash hack/bed-up.sh
  started=1
else
  started=0
  # The bed is up: add the plane it lacks, if any (left up with the bed; bed-down.sh stops it).
  RBDP_BED=$BED RBDP_KUBE=1.37 bash hack/bed-up.sh
fi
export RBDP_BED=$BED

# The tests that stand in for the old provisioner run under its name, ceph.com/rbd: a demo's
# provisioner of that name on the same bed could do their work while they pass. It is stopped
# (gracefully: it releases its Lease), and the demo starts it again when rerun.
if [ -f "$BED/demo-provisioner.pid" ]; then
  pid=$(cat "$BED/demo-provisioner.pid")
  if [ "$(basename "$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | head -1)")" = rbd-provisioner ]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || break
      [ "$st" != Z ] || break
      sleep 0.1
    done
    echo "test.sh: stopped hack/demo.sh's provisioner (ceph.com/rbd, pid $pid), which would act on the"
    echo "tests' claims of that name; \`bash hack/demo.sh\` starts it again"
  fi
  rm -f "$BED/demo-provisioner.pid"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== unit tests"
cargo test --lib --bins
# IO-bound tests, each with its own provisioner process, namespace and classes. The planes run
# one after the other: they share one Ceph cluster, some tests stop its daemons
# (tests/faults.rs, tests/outages.rs) and some check the whole pool (doctor's probe images), so
# a run on the other plane at the same time would make them fail or prove nothing.
cargo test --no-run --tests -q
# The previous release, for tests/upgrade_release.rs (upgrade to this build and roll back):
# built in the background at low priority while the planes' tests (mostly waiting on I/O) run,
# and tested after them.
echo "== the previous release's binary (hack/previous-release), building in the background"
PREV_LOG=$(mktemp /tmp/rbdp-build-previous.XXXXXX)
(bash hack/build-previous.sh >"$PREV_LOG" 2>&1) &
prev_job=$!
declare -A rc secs
for plane in 1.20 1.37; do
  dir=$BED
  [ $plane = 1.20 ] || dir=$BED/k137
  echo "== integration tests on Kubernetes $plane (real Ceph + Kubernetes, bed $dir)"
  t0=$(date +%s)
  rc[$plane]=0
  RBDP_BED=$dir cargo test --no-fail-fast --test '*' -- --test-threads=8 \
      --skip upgrade_from_the_previous_release_and_roll_back || rc[$plane]=$?
  secs[$plane]=$(( $(date +%s) - t0 ))
done

# The binary the Dockerfile ships (release profile, no fail points) against the provisioning,
# deletion and fail-over tests on both planes: the debug build above is not what operators run.
# The tests that need a fail point (the failpoints feature, which release builds leave out)
# are skipped here; they ran above.
echo "== release build (the Dockerfile's profile)"
t0=$(date +%s)
cargo build --release --locked --bin rbd-provisioner
echo "test.sh: release build in $(( $(date +%s) - t0 ))s"
REL=$PWD/target/release/rbd-provisioner
if grep -aq -e RBD_PROVISIONER_FAILPOINT -e RBD_PROVISIONER_MIGRATE_FAILPOINT "$REL"; then
  echo "test.sh: the release binary carries fail points; release builds must leave them out" >&2
  rc[release]=1
fi
for plane in 1.20 1.37; do
  dir=$BED
  [ $plane = 1.20 ] || dir=$BED/k137
  echo "== release binary: provisioning, deletion and fail-over tests on Kubernetes $plane"
  t0=$(date +%s)
  rc[release-$plane]=0
  RBD_PROVISIONER_BIN=$REL RBDP_BED=$dir cargo test --no-fail-fast \
      --test provision --test delete --test leader --test faults -- --test-threads=8 \
      --skip restart_between_image_and_pv_adopts_the_image \
      --skip claim_deleted_during_provisioning_leaves_no_image \
      --skip claims_deleted_while_their_images_are_created || rc[release-$plane]=$?
  secs[release-$plane]=$(( $(date +%s) - t0 ))
done
prev_rc=0
wait $prev_job || prev_rc=$?
upgrade_planes=()
if [ $prev_rc -eq 0 ]; then
  RBDP_PREVIOUS_BIN=$(tail -1 "$PREV_LOG")
  export RBDP_PREVIOUS_BIN
  grep '^build-previous: built' "$PREV_LOG" || true
  upgrade_planes=(upgrade-1.20 upgrade-1.37)
  for plane in 1.20 1.37; do
    dir=$BED
    [ $plane = 1.20 ] || dir=$BED/k137
    echo "== upgrade from the previous release and rollback on Kubernetes $plane"
    t0=$(date +%s)
    rc[upgrade-$plane]=0
    RBDP_BED=$dir cargo test --test upgrade_release || rc[upgrade-$plane]=$?
    secs[upgrade-$plane]=$(( $(date +%s) - t0 ))
  done
elif [ $prev_rc -eq 3 ]; then
  # Only a checkout without history (shallow, or an exported tree) has no previous release.
  cat "$PREV_LOG" >&2
else
  tail -30 "$PREV_LOG" >&2
  echo "test.sh: building the previous release failed (exit $prev_rc)" >&2
  rc[release]=1
fi
rm -f "$PREV_LOG"
failed=0
for plane in 1.20 1.37 release-1.20 release-1.37 "${upgrade_planes[@]}"; do
  if [ "${rc[$plane]}" -eq 0 ]; then
    echo "test.sh: integration tests on Kubernetes $plane passed (${secs[$plane]}s)"
  else
    echo "test.sh: integration tests on Kubernetes $plane FAILED (exit ${rc[$plane]}, ${secs[$plane]}s)" >&2
    failed=1
  fi
done
if [ "${rc[release]:-0}" -ne 0 ]; then failed=1; fi
if [ $prev_rc -eq 3 ]; then
  echo "test.sh: NOT RUN: the upgrade and rollback test; this checkout has no git history to build the previous release from (git fetch --unshallow)" >&2
fi
[ $started -eq 1 ] || echo "test.sh: the bed in $BED was already running; left it up (hack/bed-down.sh stops it)"
exit $failed
