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
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
bed_layout

bash hack/install-deps.sh
# The 1.37 binaries (built once with the machine's current Go, then cached): built here so a
# fresh machine's first run shows the build on its own, before any bed starts.
bash hack/build-kube-137.sh >/dev/null
# Likewise the upstream snapshot-controller both planes run (hack/bed-up.sh), and its CRDs.
bash hack/build-snapshot-controller.sh >/dev/null

# Whether the bed is up is judged by hack/bed-up.sh's own checks (plane_ok, hack/lib.sh). A bed
# hack/demo.sh started for 1.37 alone is up too when its 1.37 plane is, and it has no 1.20 plane
# (a broken one would make bed-up.sh purge the bed): bed-up.sh then adds the 1.20 plane.
if ! plane_ok "$BED" && ! { [ ! -e "$KUBE_DIR" ] && plane_ok "$K137"; }; then
  # A fresh bed of this run's own (free ports are picked by bed-up.sh for a non-default dir).
  own=$(mktemp -d "$DEFAULT_BED-run.XXXXXX")
  bed_layout_at "$own"
  trap 'echo "test.sh: stopping the bed it started ($BED)"; RBDP_BED=$BED bash "$HERE/bed-down.sh" --purge; rm -f "$BED_LOCK"' EXIT
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
if stop_demo_provisioner 10; then
  echo "test.sh: stopped hack/demo.sh's provisioner (ceph.com/rbd, pid $DEMO_STOPPED), which would act on the"
  echo "tests' claims of that name; \`bash hack/demo.sh\` starts it again"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== unit tests (every crate of the workspace)"
cargo test --workspace --lib --bins
# IO-bound tests, each with its own provisioner process, namespace and classes. The planes run
# one after the other: they share one Ceph cluster, some tests stop its daemons
# (tests/faults.rs, tests/outages.rs) and some check the whole pool (doctor's probe images), so
# a run on the other plane at the same time would make them fail or prove nothing.
cargo test --no-run --tests -q
# on_planes KEY HEADING CMD...: CMD on each plane in turn, with RBDP_BED naming the plane, after
# the line "== HEADING" ({plane} and {bed} filled in); its exit status in rc[KEY-PLANE] and its
# seconds in secs[KEY-PLANE] (rc[PLANE] for an empty KEY).
declare -A rc secs
on_planes() {
  local key=$1 heading=$2 plane dir k h t0
  shift 2
  for plane in 1.20 1.37; do
    dir=$BED
    [ $plane = 1.20 ] || dir=$K137
    k=${key:+$key-}$plane
    h=${heading//\{plane\}/$plane}
    echo "== ${h//\{bed\}/$dir}"
    t0=$(date +%s)
    rc[$k]=0
    RBDP_BED=$dir "$@" || rc[$k]=$?
    secs[$k]=$(( $(date +%s) - t0 ))
  done
}
# The previous release, for tests/upgrade_release.rs (upgrade to this build and roll back):
# built in the background at low priority while the planes' tests (mostly waiting on I/O) run,
# and tested after them.
echo "== the previous release's binary (hack/previous-release), building in the background"
PREV_LOG=$(mktemp /tmp/rbdp-build-previous.XXXXXX)
(bash hack/build-previous.sh >"$PREV_LOG" 2>&1) &
prev_job=$!
# helm (hack/build-helm.sh) for the chart's tests (tests/helm), likewise; they run after it.
echo "== helm (hack/build-helm.sh), building in the background"
HELM_LOG=$(mktemp /tmp/rbdp-build-helm.XXXXXX)
(bash hack/build-helm.sh >"$HELM_LOG" 2>&1) &
helm_job=$!
on_planes '' "integration tests on Kubernetes {plane} (real Ceph + Kubernetes, bed {bed})" \
  cargo test --no-fail-fast --test '*' -- --test-threads=8 \
    --skip upgrade_from_the_previous_release_and_roll_back --skip helm_

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
on_planes release "release binary: provisioning, deletion and fail-over tests on Kubernetes {plane}" \
  env RBD_PROVISIONER_BIN="$REL" cargo test --no-fail-fast \
    --test provision --test delete --test leader --test faults -- --test-threads=8 \
    --skip restart_between_image_and_pv_adopts_the_image \
    --skip claim_deleted_during_provisioning_leaves_no_image \
    --skip claims_deleted_while_their_images_are_created
prev_rc=0
wait $prev_job || prev_rc=$?
upgrade_planes=()
if [ $prev_rc -eq 0 ]; then
  RBDP_PREVIOUS_BIN=$(tail -1 "$PREV_LOG")
  export RBDP_PREVIOUS_BIN
  grep '^build-previous: built' "$PREV_LOG" || true
  upgrade_planes=(upgrade-1.20 upgrade-1.37)
  on_planes upgrade "upgrade from the previous release and rollback on Kubernetes {plane}" \
    cargo test --test upgrade_release
elif [ $prev_rc -eq 3 ]; then
  # Only a checkout without history (shallow, or an exported tree) has no previous release.
  cat "$PREV_LOG" >&2
else
  tail -30 "$PREV_LOG" >&2
  echo "test.sh: building the previous release failed (exit $prev_rc)" >&2
  rc[release]=1
fi
rm -f "$PREV_LOG"
helm_rc=0
wait $helm_job || helm_rc=$?
helm_planes=()
if [ $helm_rc -eq 0 ]; then
  RBDP_HELM=$(tail -1 "$HELM_LOG")/helm
  export RBDP_HELM
  grep 'built helm' "$HELM_LOG" || true
  helm_planes=(helm-1.20 helm-1.37)
  on_planes helm "the Helm chart (lint, template, install, upgrade, rollback, uninstall) on Kubernetes {plane}" \
    cargo test --no-fail-fast --test helm -- --test-threads=4
else
  tail -30 "$HELM_LOG" >&2
  echo "test.sh: building helm failed (exit $helm_rc): the chart's tests did not run" >&2
fi
rm -f "$HELM_LOG"
failed=0
for plane in 1.20 1.37 release-1.20 release-1.37 "${upgrade_planes[@]}" "${helm_planes[@]}"; do
  if [ "${rc[$plane]}" -eq 0 ]; then
    echo "test.sh: integration tests on Kubernetes $plane passed (${secs[$plane]}s)"
  else
    echo "test.sh: integration tests on Kubernetes $plane FAILED (exit ${rc[$plane]}, ${secs[$plane]}s)" >&2
    failed=1
  fi
done
if [ "${rc[release]:-0}" -ne 0 ]; then failed=1; fi
if [ $helm_rc -ne 0 ]; then
  echo "test.sh: NOT RUN: the Helm chart's tests (tests/helm); building helm failed (exit $helm_rc)" >&2
  failed=1
fi
if [ $prev_rc -eq 3 ]; then
  echo "test.sh: NOT RUN: the upgrade and rollback test; this checkout has no git history to build the previous release from (git fetch --unshallow)" >&2
fi
[ $started -eq 1 ] || echo "test.sh: the bed in $BED was already running; left it up (hack/bed-down.sh stops it)"
exit $failed
