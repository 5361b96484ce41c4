//! The controllers: one reconciles claims (provision, grow), one reconciles volumes (delete).
//! Both share one [`Context`].
//!
//! * `run`: the watches, the two controllers and their error policy;
//! * `context`: what every reconcile shares, by concern; `credentials`: Ceph credentials and
//!   connections for a volume;
//! * `provision`, `resize`: the claims' reconciles; `delete`, `record`: the volumes';
//! * housekeeping beside them: `purge` (the purge queue), `maintain` (trash sweeps, orphans),
//!   `flatten`, `trash`, `locks`;
//! * `snapshot`: VolumeSnapshotContents of csi-flavour volumes (what csi-snapshotter does for a
//!   CSI driver).

mod cached;
mod context;
mod credentials;
mod delete;
mod flatten;
mod locks;
mod maintain;
mod outcome;
mod provision;
mod purge;
mod record;
mod resize;
mod run;
mod snapshot;
#[cfg(test)]
pub(crate) mod testing;

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use ceph::Timeouts;
use domain::params::Flavor;

pub use context::Context;
pub(crate) use provision::node_stage_secret;
pub(crate) use run::cluster_uid;
pub use run::run;

/// Settings that do not change while running.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `provisioner` of the StorageClasses we serve.
    pub provisioner: String,
    /// `namespace:name` of our ServiceAccount, for RBAC hints in events.
    pub service_account: String,
    /// Flavour for classes that do not set `volumeFlavor`.
    pub default_flavor: Flavor,
    /// Claims handled at once.
    pub workers: u16,
    pub ceph_timeouts: Timeouts,
    /// How often trash and orphaned images are checked; zero turns the pass off.
    pub maintenance_interval: Duration,
    /// How old an image must be before it can be collected as an orphan.
    pub orphan_grace: Duration,
    /// Ceph clients unused this long are closed.
    pub ceph_idle: Duration,
    /// Ceph clients connected this long ago are replaced (re-authenticated), so a rotated key,
    /// revoked caps or a blocklisting is seen within this time; zero keeps them.
    pub ceph_max_age: Duration,
    /// Provision claims no existing volume could serve without waiting for
    /// kube-controller-manager's hand-over.
    pub early_provisioning: bool,
    /// Retry delays after failures: the first, doubling up to the last.
    pub retry_start: Duration,
    pub retry_max: Duration,
    /// This replica's Lease identity, stamped on the images it makes (`owner::META_MADE_BY`).
    pub replica: String,
    /// ceph-csi's ConfigMap of clusterIDs and monitors (namespace, name), read when a
    /// volume's class does not reach its cluster; `None`: not read.
    pub ceph_csi_config: Option<(String, String)>,
    /// Whether ceph-csi-operator's ClientProfiles are looked up (when served) likewise.
    pub client_profiles: bool,
    /// Whether the claims and volumes watches begin with a streaming list (the API server
    /// supports it) instead of pages.
    pub streaming_lists: bool,
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `start`, doubled per failure after the first, capped at `max`: retries forever without
/// flooding the API.
pub fn backoff_delay(failures: u32, start: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    start.saturating_mul(factor).min(max)
}

fn claim_key(pvc: &PersistentVolumeClaim) -> String {
    pvc.metadata.uid.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let b = |n| backoff_delay(n, Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(b(1), Duration::from_secs(1));
        assert_eq!(b(2), Duration::from_secs(2));
        assert_eq!(b(5), Duration::from_secs(16));
        assert_eq!(b(9), Duration::from_secs(256));
        assert_eq!(b(10), Duration::from_secs(300));
        assert_eq!(b(1000), Duration::from_secs(300));
        let fast = |n| backoff_delay(n, Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(fast(1), Duration::from_millis(100));
        assert_eq!(fast(4), Duration::from_millis(800));
        assert_eq!(fast(5), Duration::from_secs(1));
    }
}
