//! VolumeSnapshots of this provisioner's csi-flavour volumes: the RBD snapshot's name and
//! handle, a VolumeSnapshotClass's parameters, the checks before a snapshot is taken or a
//! claim restored from one, and what to do with a VolumeSnapshotContent. Pure.

use std::collections::BTreeMap;
use std::fmt;

use crate::clone::{CloneError, CloneSource};
use crate::owner::Place;

pub use crate::clone::SNAPSHOT_GROUP as GROUP;

/// The content finalizer csi-snapshotter keeps on a content until its snapshot is deleted (or
/// retained).
pub const CONTENT_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";
/// Set on a content while its snapshot is being cut: the snapshot-controller then does not
/// delete the content under it.
pub const ANN_BEING_CREATED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-created";
/// Set by the snapshot-controller on a content whose VolumeSnapshot is being deleted.
pub const ANN_BEING_DELETED: &str = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted";

/// Prefix of the RBD snapshots cut for VolumeSnapshots.
const SNAP_PREFIX: &str = "snapshot-";
/// Prefix of the handles this provisioner writes.
const HANDLE_PREFIX: &str = "rbdp1";

/// The RBD snapshot for the VolumeSnapshot with this uid: one name per VolumeSnapshot, so a
/// retry after a crash finds the snapshot it cut before, never a second one.
pub fn rbd_snap_name(volume_snapshot_uid: &str) -> String {
    format!("{SNAP_PREFIX}{volume_snapshot_uid}")
}

/// Whether an RBD snapshot was cut for a VolumeSnapshot.
pub fn is_volume_snapshot(snap: &str) -> bool {
    snap.starts_with(SNAP_PREFIX)
}

/// Where a snapshot is. Written by this provisioner as `rbdp1:<fsid>:<pool id>:<pool>/<image>@<snap>`
/// (the place guards a deletion against a replaced pool or another cluster behind the same
/// monitors); an operator may give a pre-provisioned content the short form
/// `<pool>/<image>@<snap>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handle {
    pub place: Option<Place>,
    pub pool: String,
    pub image: String,
    pub snap: String,
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.place {
            write!(f, "{HANDLE_PREFIX}:{}:{}:", p.fsid, p.pool_id)?;
        }
        write!(f, "{}/{}@{}", self.pool, self.image, self.snap)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "snapshot handle {0:?} is not one of this provisioner's: write it as <pool>/<image>@<snapshot> (e.g. kube/my-image@before-upgrade)"
)]
pub struct BadHandle(pub String);

impl Handle {
    pub fn parse(s: &str) -> Result<Handle, BadHandle> {
        let bad = || BadHandle(s.to_string());
        let (place, spec) = match s
            .strip_prefix(HANDLE_PREFIX)
            .and_then(|r| r.strip_prefix(':'))
        {
            Some(rest) => {
                let mut parts = rest.splitn(3, ':');
                let (fsid, pool_id, spec) = (parts.next(), parts.next(), parts.next());
                let (Some(fsid), Some(pool_id), Some(spec)) = (fsid, pool_id, spec) else {
                    return Err(bad());
                };
                let pool_id = pool_id.parse::<i64>().map_err(|_| bad())?;
                if fsid.is_empty() {
                    return Err(bad());
                }
                let place = Place {
                    fsid: fsid.to_string(),
                    pool_id,
                };
                (Some(place), spec)
            }
            None => (None, s),
        };
        let (pool, rest) = spec.split_once('/').ok_or_else(bad)?;
        let (image, snap) = rest.split_once('@').ok_or_else(bad)?;
        let ok = |x: &str, extra: &[char]| {
            !x.is_empty() && !x.contains(['/', '@', ' ', '\n']) && !x.contains(extra)
        };
        if !ok(pool, &[]) || !ok(image, &[]) || !ok(snap, &[]) {
            return Err(bad());
        }
        Ok(Handle {
            place,
            pool: pool.to_string(),
            image: image.to_string(),
            snap: snap.to_string(),
        })
    }
}

/// VolumeSnapshotClass parameters this provisioner accepts. ceph-csi's own are accepted so a
/// class written for it keeps working: its snapshotter Secret is not needed (the source
/// volume's StorageClass names the admin Secret) and `clusterID` must name the source's
/// cluster.
pub const CLASS_KNOWN: &[&str] = &[
    "clusterID",
    "csi.storage.k8s.io/snapshotter-secret-name",
    "csi.storage.k8s.io/snapshotter-secret-namespace",
];

/// A VolumeSnapshotClass's parameters, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassParams {
    pub cluster_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "VolumeSnapshotClass {class} has unknown parameters {keys:?} (known: {known}); remove them",
    known = CLASS_KNOWN.join(", ")
)]
pub struct UnknownClassParams {
    pub class: String,
    pub keys: Vec<String>,
}

pub fn class_params(
    class: &str,
    raw: &BTreeMap<String, String>,
) -> Result<ClassParams, UnknownClassParams> {
    let keys: Vec<String> = raw
        .keys()
        .filter(|k| !CLASS_KNOWN.contains(&k.as_str()))
        .cloned()
        .collect();
    if !keys.is_empty() {
        return Err(UnknownClassParams {
            class: class.to_string(),
            keys,
        });
    }
    Ok(ClassParams {
        cluster_id: raw.get("clusterID").cloned().filter(|c| !c.is_empty()),
    })
}

/// Why a snapshot is not cut, or a claim not restored. Each message says what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "{pv} is an in-tree spec.rbd volume; the snapshot-controller snapshots only CSI volumes: use volumeFlavor: csi for new volumes, or move this one with rbd-provisioner migrate-to-csi"
    )]
    InTree { pv: String },
    #[error(
        "{pvc} is not bound yet; a snapshot is taken once it is (the VolumeSnapshot waits meanwhile)"
    )]
    Pending { pvc: String },
    #[error(
        "{pvc} is provisioned by {by:?}, not by this provisioner; use a VolumeSnapshotClass of that volume's own CSI driver"
    )]
    OtherProvisioner { pvc: String, by: String },
    #[error(
        "{image} already has {count} snapshots, the most its StorageClass {class} allows (maxSnapshotsPerImage {max}); delete VolumeSnapshots of it, or raise the limit"
    )]
    TooMany {
        image: String,
        class: String,
        count: usize,
        max: u32,
    },
    #[error(
        "VolumeSnapshotClass {class} names clusterID {given:?} but the volume is in cluster {volume:?}; fix or remove clusterID"
    )]
    ClusterId {
        class: String,
        given: String,
        volume: String,
    },
    #[error("{0}")]
    Class(#[from] UnknownClassParams),
    #[error("{0}")]
    Handle(#[from] BadHandle),
}

/// What a claim's VolumeSnapshot data source says of itself, as read now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFacts {
    pub exists: bool,
    pub deleting: bool,
    pub ready: bool,
    /// `status.boundVolumeSnapshotContentName`.
    pub content: Option<String>,
    /// `status.restoreSize`, in bytes.
    pub restore_size: Option<u64>,
}

/// What the bound content says of itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContentFacts {
    pub driver: String,
    pub handle: Option<String>,
    pub restore_size: Option<u64>,
}

/// Checks a restore's source: the VolumeSnapshot `namespace/name` must be ready, bound to a
/// content of `driver` (the claim's class's), with a handle of ours, and no larger than the
/// claim.
pub fn check_restore(
    namespace: &str,
    name: &str,
    driver: &str,
    want_size: u64,
    snapshot: &SnapshotFacts,
    content: Option<&ContentFacts>,
) -> Result<CloneSource, CloneError> {
    let full = crate::meta::qualified(Some(namespace), name);
    if !snapshot.exists || snapshot.deleting {
        return Err(CloneError::SnapshotMissing(full));
    }
    if !snapshot.ready {
        return Err(CloneError::SnapshotNotReady(full));
    }
    let (Some(content_name), Some(content)) = (&snapshot.content, content) else {
        return Err(CloneError::SnapshotNotReady(full));
    };
    if content.driver != driver {
        return Err(CloneError::OtherDriver {
            snapshot: full,
            driver: content.driver.clone(),
            ours: driver.to_string(),
        });
    }
    let handle = content
        .handle
        .as_deref()
        .ok_or_else(|| CloneError::SnapshotNotReady(full.clone()))?;
    let h = Handle::parse(handle).map_err(|e| CloneError::BadHandle {
        content: content_name.clone(),
        why: e.to_string(),
    })?;
    let size = snapshot
        .restore_size
        .or(content.restore_size)
        .ok_or_else(|| CloneError::NoCapacity(full.clone()))?;
    if want_size < size {
        return Err(CloneError::TooSmall {
            source_claim: format!("VolumeSnapshot {full}"),
            want: want_size.div_ceil(1 << 20),
            have: size.div_ceil(1 << 20),
        });
    }
    Ok(CloneSource {
        pv: full,
        pool: h.pool,
        image: h.image,
        size,
        recorded: h.place,
        snap: Some(h.snap),
    })
}

/// What to do with a VolumeSnapshotContent of our driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentAction {
    /// Being deleted under `Delete`: remove the RBD snapshot, then the finalizer.
    DeleteSnapshot(Handle),
    /// Being deleted under `Retain` (or with nothing cut): only the finalizer goes.
    ReleaseFinalizer,
    /// Cut the snapshot (again: cutting is idempotent) of the volume with this handle
    /// (`spec.source.volumeHandle`), and fill the status.
    Create { volume_handle: String },
    /// A pre-provisioned content: check that its snapshot exists, then fill the status.
    CheckStatic(Handle),
    /// Done, waiting for the snapshot-controller, or not for us.
    Nothing,
}

/// A content, reduced to what the decision needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Content {
    pub deleting: bool,
    /// `deletionPolicy: Delete`.
    pub delete_policy: bool,
    pub has_finalizer: bool,
    pub being_created: bool,
    pub being_deleted: bool,
    /// `spec.volumeSnapshotRef.uid` is set: bound to its VolumeSnapshot.
    pub bound: bool,
    pub volume_handle: Option<String>,
    pub static_handle: Option<String>,
    pub has_status: bool,
    pub status_handle: Option<String>,
    pub ready: bool,
}

/// Decides the next step for a content of our driver (the caller has checked the driver),
/// as csi-snapshotter does for its driver: the snapshot-controller owns the finalizer and the
/// binding, the provisioner the RBD snapshot and the status.
pub fn decide(c: &Content) -> Result<ContentAction, BadHandle> {
    if c.deleting {
        // Only a deletion the snapshot-controller asked for (or of an unbound
        // pre-provisioned content), and never under a snapshot still being cut: a content
        // deleted by hand while bound stays Terminating, as with every CSI driver.
        let unbound_static = c.static_handle.is_some() && !c.bound;
        let asked = unbound_static || c.being_deleted;
        if c.being_created && !unbound_static {
            return create_or_check(c);
        }
        if !asked || !c.has_finalizer {
            return Ok(ContentAction::Nothing);
        }
        let handle = c.status_handle.as_deref().or(c.static_handle.as_deref());
        return Ok(match handle {
            Some(h) if c.delete_policy => ContentAction::DeleteSnapshot(Handle::parse(h)?),
            _ => ContentAction::ReleaseFinalizer,
        });
    }
    if c.ready && c.status_handle.is_some() {
        return Ok(ContentAction::Nothing);
    }
    create_or_check(c)
}

fn create_or_check(c: &Content) -> Result<ContentAction, BadHandle> {
    if let Some(h) = &c.static_handle {
        return Ok(ContentAction::CheckStatic(Handle::parse(h)?));
    }
    match &c.volume_handle {
        Some(v) if c.bound => Ok(ContentAction::Create {
            volume_handle: v.clone(),
        }),
        _ => Ok(ContentAction::Nothing),
    }
}

#[cfg(test)]
mod tests;
