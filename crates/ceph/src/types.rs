//! Plain data the Ceph layer takes and returns. No I/O.

use std::collections::BTreeMap;

/// What to create with [`super::Cluster::create_image`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    pub pool: String,
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Separate pool for the data objects (e.g. an erasure-coded pool); metadata stays in
    /// `pool`. librbd adds [`super::RBD_FEATURE_DATA_POOL`] implicitly.
    pub data_pool: Option<String>,
    /// `RBD_FEATURE_*` bits, e.g. [`super::RBD_FEATURE_LAYERING`]. Set exactly, not merged
    /// with the cluster's `rbd_default_features`.
    pub features: u64,
}

/// What to create with [`super::Cluster::clone_image`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneSpec {
    /// The snapshot cloned.
    pub parent: ParentSpec,
    /// The clone's pools (as in [`ImageSpec`]), which may differ from the parent's.
    pub pool: String,
    pub data_pool: Option<String>,
    pub name: String,
    pub features: u64,
    /// 1 (needs a protected snapshot) or 2 (needs `require_min_compat_client >= mimic`);
    /// `None` lets librbd choose ("auto").
    pub clone_format: Option<u8>,
}

/// Outcome of an idempotent create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    New,
    /// Something of that name was already there; it was left untouched (its size and
    /// features are not compared: use [`super::Cluster::image_info`]).
    AlreadyExisted,
}

/// Outcome of an idempotent remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    Removed,
    AlreadyGone,
}

/// Parent of a cloned image: a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentSpec {
    pub pool: String,
    pub image: String,
    pub snap: String,
}

/// As `rbd` writes a snapshot: `pool/image@snap`.
impl std::fmt::Display for ParentSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}@{}", self.pool, self.image, self.snap)
    }
}

/// What [`super::Cluster::image_info`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub size: u64,
    /// Object size in bytes (`1 << order`).
    pub obj_size: u64,
    pub features: u64,
    /// Format 1 image.
    pub old_format: bool,
    /// librbd image id (empty for format 1 images).
    pub id: String,
    /// Pool id holding the data objects.
    pub data_pool_id: i64,
    /// Name of the data pool when it differs from the image's pool.
    pub data_pool: Option<String>,
    pub parent: Option<ParentSpec>,
}

/// A client watching an image header: someone has the image open read/write (mapped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watcher {
    pub addr: String,
    pub id: i64,
    pub cookie: u64,
}

/// An image in a pool's trash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrashEntry {
    pub id: String,
    pub name: String,
    /// Unix seconds.
    pub deletion_time: i64,
    /// Unix seconds before which removal needs `force`.
    pub deferment_end_time: i64,
}

/// A snapshot of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapInfo {
    pub id: u64,
    pub name: String,
    pub size: u64,
    pub protected: bool,
    /// When it was taken, Unix seconds; 0 when librbd does not say.
    pub timestamp: i64,
}

/// A clone of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Child {
    pub pool: String,
    pub image: String,
    /// Its image id.
    pub id: String,
    /// Moved to its pool's trash (an image `remove_image` is deleting right then is not).
    pub in_trash: bool,
}

/// A pool's quotas (`None`: not set) and what it holds, as `ceph osd pool get-quota` reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolQuota {
    pub max_objects: Option<u64>,
    pub max_bytes: Option<u64>,
    pub objects: u64,
    pub bytes: u64,
}

impl PoolQuota {
    /// The quota reached, in words ("max_objects 12 (13 objects stored)"), or None when no
    /// quota is set or none is reached (then the cluster itself is full).
    pub fn reached(&self) -> Option<String> {
        let objects = self
            .max_objects
            .filter(|m| self.objects >= *m)
            .map(|m| format!("max_objects {m} ({} objects stored)", self.objects));
        let bytes = self
            .max_bytes
            .filter(|m| self.bytes >= *m)
            .map(|m| format!("max_bytes {m} ({} bytes stored)", self.bytes));
        match (objects, bytes) {
            (Some(o), Some(b)) => Some(format!("{o} and {b}")),
            (o, b) => o.or(b),
        }
    }

    /// The quotas set, in words, for when none is reached by the figures (they lag writes).
    pub fn set(&self) -> Option<String> {
        let q: Vec<String> = [
            self.max_objects.map(|m| format!("max_objects {m}")),
            self.max_bytes.map(|m| format!("max_bytes {m}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        (!q.is_empty()).then(|| q.join(", "))
    }
}

/// What a deletion checks of an image before it commits: read together, through one read-only
/// open ([`Cluster::inspect`]).
#[derive(Clone, Debug)]
pub struct Inspection {
    pub info: ImageInfo,
    /// The image-meta keys asked for that are set.
    pub metadata: BTreeMap<String, String>,
    pub watchers: Vec<Watcher>,
    pub snapshots: Vec<SnapInfo>,
}
