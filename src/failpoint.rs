//! Crash and stall points for the crash-consistency tests, compiled only with the
//! `failpoints` feature (test builds turn it on through the package's dev-dependency on
//! itself; release builds leave it out). `RBD_PROVISIONER_FAILPOINT=<name>[,<name>…]` picks
//! them: `exit-…` ends the process at once (exit code 86, like a `kill -9` at that line),
//! `sleep-…` stalls there for 5 s, `fail-…` makes the step fail.

/// Where provisioning can be stopped, in the order it passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// The image exists, its stamp does not.
    BeforeStamp,
    /// The image exists and is stamped; its PV state says no PV yet.
    AfterImageCreate,
    /// The image is marked as having a PV; the PV is not written yet.
    BeforePvWrite,
    /// A deletion has decided on its cached copy of the PV, and not yet read it again.
    BeforeFreshRead,
    /// A deletion has checked everything and is about to commit the PV to deletion.
    BeforeCommit,
    /// A clone, after its source's snapshot is protected.
    Clone,
    /// A VolumeSnapshot's RBD snapshot is about to be cut.
    BeforeSnapshot,
    /// The RBD snapshot is cut; the content's status is not written yet.
    BeforeSnapshotStatus,
    /// A purge in the large lane, before it removes the image (`sleep-` only: 30 s).
    LargePurge,
    /// `adopt` wrote the PV and has not re-stamped the image yet.
    AdoptBeforeRestamp,
}

impl Point {
    #[cfg_attr(not(feature = "failpoints"), allow(dead_code))]
    fn name(self) -> &'static str {
        match self {
            Point::BeforeStamp => "before-stamp",
            Point::AfterImageCreate => "after-image-create",
            Point::BeforePvWrite => "before-pv-write",
            Point::BeforeFreshRead => "before-fresh-read",
            Point::BeforeCommit => "before-commit",
            Point::Clone => "clone",
            Point::BeforeSnapshot => "before-snapshot",
            Point::BeforeSnapshotStatus => "before-snapshot-status",
            Point::LargePurge => "large-purge",
            Point::AdoptBeforeRestamp => "adopt-before-restamp",
        }
    }
}

#[cfg(feature = "failpoints")]
fn chosen(action: &str, point: Point) -> bool {
    let want = format!("{action}-{}", point.name());
    std::env::var("RBD_PROVISIONER_FAILPOINT").is_ok_and(|v| v.split(',').any(|c| c.trim() == want))
}

#[cfg(feature = "failpoints")]
pub async fn hit(point: Point, what: &str) {
    if chosen("exit", point) {
        tracing::error!(%what, "failpoint exit-{}: exiting", point.name());
        crate::process::exit_process(86);
    }
    if chosen("sleep", point) {
        let secs = if point == Point::LargePurge { 30 } else { 5 };
        tracing::warn!(%what, "failpoint sleep-{}: {secs} s", point.name());
        tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
    }
}

/// Whether the step at `point` is to fail.
#[cfg(feature = "failpoints")]
pub fn fails(point: Point) -> bool {
    let fail = chosen("fail", point);
    if fail {
        tracing::warn!("failpoint fail-{}: failing", point.name());
    }
    fail
}

/// The size from which an image is purged in the large lane: `RBD_PROVISIONER_PURGE_LARGE_MIB`
/// lets a test make small images "large".
#[cfg(feature = "failpoints")]
pub fn large_purge_from(default: u64) -> u64 {
    std::env::var("RBD_PROVISIONER_PURGE_LARGE_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(default, |mib| mib << 20)
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn hit(_point: Point, _what: &str) {}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn fails(_point: Point) -> bool {
    false
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn large_purge_from(default: u64) -> u64 {
    default
}
