//! Whether a claim may be cloned from the claim named in its `dataSource`. Pure.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use crate::quantity;
use crate::reclaim;
use crate::volume::provisioned_by;

/// The image a clone is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneSource {
    /// The source's PV.
    pub pv: String,
    pub pool: String,
    pub image: String,
    pub size: u64,
    /// Where the source PV records its image was made (a restore: where its handle says).
    pub recorded: Option<crate::owner::Place>,
    /// A restore: the existing snapshot to clone from, shared with other restores and kept
    /// when the clone goes. `None`: a clone of a claim, through a snapshot of its own.
    pub snap: Option<String>,
}

/// The API group of VolumeSnapshots.
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";

/// What a claim's data source names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    Claim(String),
    Snapshot(String),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CloneError {
    #[error(
        "dataSource kind {0:?} is not supported; give a PersistentVolumeClaim, or a VolumeSnapshot (apiGroup snapshot.storage.k8s.io)"
    )]
    Kind(String),
    #[error(
        "VolumeSnapshot {0} does not exist (or is being deleted); create it first or fix spec.dataSource.name"
    )]
    SnapshotMissing(String),
    #[error("VolumeSnapshot {0} is not ready to use yet; the restore is retried once it is")]
    SnapshotNotReady(String),
    #[error(
        "VolumeSnapshot {snapshot} was taken by CSI driver {driver:?}, but this claim's StorageClass mounts with {ours:?}; restore it with a StorageClass of that driver"
    )]
    OtherDriver {
        snapshot: String,
        driver: String,
        ours: String,
    },
    #[error(
        "cloning {image} would make a chain of {depth} clones, more than the StorageClass's hardMaxCloneDepth {max}; restore or clone from a flattened volume, or raise hardMaxCloneDepth (at most 16)"
    )]
    TooDeep { image: String, depth: u32, max: u32 },
    #[error("VolumeSnapshotContent {content}: {why}")]
    BadHandle { content: String, why: String },
    #[error(
        "dataSourceRef names a claim in namespace {0:?}; cross-namespace data sources are not supported: clone from a claim in the claim's own namespace"
    )]
    CrossNamespace(String),
    #[error("clone source claim {0} does not exist; create it first or fix spec.dataSource.name")]
    Missing(String),
    #[error("clone source claim {0} is not bound yet; the clone is retried once it is")]
    NotBound(String),
    #[error(
        "clone source claim {source_claim} uses StorageClass {source_class:?}, not {class:?}; a clone must use the same StorageClass as its source"
    )]
    OtherClass {
        source_claim: String,
        source_class: String,
        class: String,
    },
    #[error(
        "clone source claim {0} is not a volume of this provisioner; only its own RBD volumes can be cloned"
    )]
    NotOurs(String),
    #[error(
        "the claim asks for {want} MiB but its source {source_claim} has {have} MiB; request at least the source's size"
    )]
    TooSmall {
        source_claim: String,
        want: u64,
        have: u64,
    },
    #[error("clone source {0}: its PV has no capacity")]
    NoCapacity(String),
    #[error("clone source {0}: {1}")]
    Broken(String, reclaim::TargetError),
}

/// What a claim's `dataSourceRef` (or, without one, `dataSource`) asks for, for kinds this
/// provisioner does not fill itself: a volume populator's custom resource.
pub fn populator(pvc: &PersistentVolumeClaim) -> Option<String> {
    let r = pvc.spec.as_ref()?.data_source_ref.as_ref()?;
    let group = r.api_group.as_deref().unwrap_or_default();
    let core_claim = r.kind == "PersistentVolumeClaim" && group.is_empty();
    let snapshot = r.kind == "VolumeSnapshot" && group == SNAPSHOT_GROUP;
    (!core_claim && !snapshot).then(|| {
        if group.is_empty() {
            format!("{} {}", r.kind, r.name)
        } else {
            format!("{}.{} {}", r.kind, group, r.name)
        }
    })
}

/// The claim to clone from, if any: `dataSourceRef` when set (it supersedes `dataSource`
/// and may name another namespace), else `dataSource`. Other kinds are errors.
pub fn source_name(pvc: &PersistentVolumeClaim) -> Result<Option<DataSource>, CloneError> {
    let spec = pvc.spec.as_ref();
    let own_ns = pvc.metadata.namespace.as_deref().unwrap_or_default();
    let (kind, group, name) = match (
        spec.and_then(|s| s.data_source_ref.as_ref()),
        spec.and_then(|s| s.data_source.as_ref()),
    ) {
        (Some(r), _) => {
            if let Some(ns) = r
                .namespace
                .as_deref()
                .filter(|ns| *ns != own_ns && !ns.is_empty())
            {
                return Err(CloneError::CrossNamespace(ns.to_string()));
            }
            (&r.kind, &r.api_group, &r.name)
        }
        (None, Some(ds)) => (&ds.kind, &ds.api_group, &ds.name),
        (None, None) => return Ok(None),
    };
    let group = group.as_deref().unwrap_or_default();
    match (kind.as_str(), group) {
        ("PersistentVolumeClaim", "") => Ok(Some(DataSource::Claim(name.clone()))),
        ("VolumeSnapshot", SNAPSHOT_GROUP) => Ok(Some(DataSource::Snapshot(name.clone()))),
        _ => Err(CloneError::Kind(kind.clone())),
    }
}

/// Checks the source claim and its volume, and says which image to clone.
pub fn check_source(
    namespace: &str,
    source: &str,
    class: &str,
    want_size: u64,
    source_pvc: Option<&PersistentVolumeClaim>,
    source_pv: Option<&PersistentVolume>,
    provisioner: &str,
) -> Result<CloneSource, CloneError> {
    let full = format!("{namespace}/{source}");
    let pvc = source_pvc
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .ok_or_else(|| CloneError::Missing(full.clone()))?;
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let pv = source_pv
        .filter(|_| bound)
        .ok_or_else(|| CloneError::NotBound(full.clone()))?;
    let source_class = crate::claim::class_name(pvc)
        .unwrap_or_default()
        .to_string();
    if source_class != class {
        return Err(CloneError::OtherClass {
            source_claim: full,
            source_class,
            class: class.into(),
        });
    }
    let ours = provisioned_by(pv) == Some(provisioner);
    if !ours {
        return Err(CloneError::NotOurs(full));
    }
    let size = pv
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| quantity::to_bytes(&q.0).ok())
        .and_then(|b| u64::try_from(b).ok())
        .ok_or_else(|| CloneError::NoCapacity(full.clone()))?;
    if want_size < size {
        return Err(CloneError::TooSmall {
            source_claim: full,
            want: want_size >> 20,
            have: size >> 20,
        });
    }
    let t = reclaim::target(pv).map_err(|why| CloneError::Broken(full, why))?;
    Ok(CloneSource {
        pv: pv.metadata.name.clone().unwrap_or_default(),
        pool: t.pool,
        image: t.image,
        size,
        recorded: reclaim::recorded_place(pv),
        snap: None,
    })
}

/// Snapshot taken on a source image for one clone; naming it after the clone lets either
/// side find the other when one is deleted.
pub fn clone_snapshot(child_image: &str) -> String {
    format!("clone-for-{child_image}")
}

/// The clone a snapshot was made for, if it is one of ours.
pub fn clone_of_snapshot(snap: &str) -> Option<&str> {
    snap.strip_prefix("clone-for-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::volume::ANN_PROVISIONED_BY;
    use k8s_openapi::api::core::v1::TypedLocalObjectReference;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    const ME: &str = "ceph.com/rbd";
    const MIB: u64 = 1 << 20;

    fn src_claim(class: &str, phase: &str) -> PersistentVolumeClaim {
        let mut c = fixtures::claim("", "src", "", Some(phase));
        c.spec.as_mut().unwrap().storage_class_name = Some(class.into());
        c
    }

    fn src_pv(by: &str) -> PersistentVolume {
        let image = ("kube", "kubernetes-dynamic-pvc-src");
        let mut pv = fixtures::rbd_pv("pvc-src", image, &[(ANN_PROVISIONED_BY, by)], None);
        let spec = pv.spec.as_mut().unwrap();
        spec.capacity = Some(BTreeMap::from([(
            "storage".into(),
            Quantity("64Mi".into()),
        )]));
        spec.storage_class_name = Some("fast".into());
        pv
    }

    fn check(
        size: u64,
        pvc: Option<&PersistentVolumeClaim>,
        pv: Option<&PersistentVolume>,
    ) -> Result<CloneSource, CloneError> {
        check_source("ns", "src", "fast", size, pvc, pv, ME)
    }

    /// A Bound source claim of `class`, whose PV `by` made.
    fn check_bound(size: u64, class: &str, by: &str) -> Result<CloneSource, CloneError> {
        check(size, Some(&src_claim(class, "Bound")), Some(&src_pv(by)))
    }

    #[test]
    fn valid_source() {
        let s = check_bound(64 * MIB, "fast", ME).unwrap();
        assert_eq!(
            s,
            CloneSource {
                pv: "pvc-src".into(),
                pool: "kube".into(),
                image: "kubernetes-dynamic-pvc-src".into(),
                size: 64 * MIB,
                recorded: None,
                snap: None,
            }
        );
        assert!(
            check_bound(128 * MIB, "fast", ME).is_ok(),
            "bigger clones are grown"
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            check(64 * MIB, None, None),
            Err(CloneError::Missing("ns/src".into()))
        );
        assert_eq!(
            check(64 * MIB, Some(&src_claim("fast", "Pending")), None),
            Err(CloneError::NotBound("ns/src".into()))
        );
        assert!(matches!(
            check_bound(64 * MIB, "slow", ME),
            Err(CloneError::OtherClass { .. })
        ));
        assert_eq!(
            check_bound(64 * MIB, "fast", "other"),
            Err(CloneError::NotOurs("ns/src".into()))
        );
        let e = check_bound(32 * MIB, "fast", ME).unwrap_err();
        assert!(
            e.to_string()
                .contains("asks for 32 MiB but its source ns/src has 64 MiB"),
            "{e}"
        );
    }

    #[test]
    fn data_source_kinds() {
        let mut c = src_claim("fast", "Pending");
        assert_eq!(source_name(&c), Ok(None));
        c.spec.as_mut().unwrap().data_source = Some(TypedLocalObjectReference {
            kind: "PersistentVolumeClaim".into(),
            name: "src".into(),
            api_group: None,
        });
        assert_eq!(source_name(&c), Ok(Some(DataSource::Claim("src".into()))));
        c.spec.as_mut().unwrap().data_source = Some(TypedLocalObjectReference {
            kind: "VolumeSnapshot".into(),
            name: "s".into(),
            api_group: Some("snapshot.storage.k8s.io".into()),
        });
        assert_eq!(source_name(&c), Ok(Some(DataSource::Snapshot("s".into()))));
        assert_eq!(populator(&c), None);
        // The kind without its group is someone else's.
        c.spec
            .as_mut()
            .unwrap()
            .data_source
            .as_mut()
            .unwrap()
            .api_group = None;
        assert!(matches!(source_name(&c), Err(CloneError::Kind(_))));
    }

    #[test]
    fn data_source_refs() {
        use k8s_openapi::api::core::v1::TypedObjectReference;
        let mut c = src_claim("fast", "Pending");
        c.metadata.namespace = Some("ns".into());
        let set =
            |c: &mut PersistentVolumeClaim, kind: &str, group: Option<&str>, ns: Option<&str>| {
                c.spec.as_mut().unwrap().data_source_ref = Some(TypedObjectReference {
                    kind: kind.into(),
                    name: "src".into(),
                    api_group: group.map(Into::into),
                    namespace: ns.map(Into::into),
                });
            };
        set(&mut c, "PersistentVolumeClaim", None, None);
        assert_eq!(source_name(&c), Ok(Some(DataSource::Claim("src".into()))));
        set(&mut c, "PersistentVolumeClaim", None, Some("ns"));
        assert_eq!(source_name(&c), Ok(Some(DataSource::Claim("src".into()))));
        // Another tenant's claim must never be cloned.
        set(&mut c, "PersistentVolumeClaim", None, Some("victim"));
        assert_eq!(
            source_name(&c),
            Err(CloneError::CrossNamespace("victim".into()))
        );
        assert_eq!(populator(&c), None);
        // A populator's resource: not ours to fill, and never an empty volume.
        set(&mut c, "Backup", Some("example.io"), None);
        assert_eq!(populator(&c).as_deref(), Some("Backup.example.io src"));
        assert!(matches!(source_name(&c), Err(CloneError::Kind(_))));
    }

    #[test]
    fn clone_snapshot_names() {
        let s = clone_snapshot("kubernetes-dynamic-pvc-9");
        assert_eq!(clone_of_snapshot(&s), Some("kubernetes-dynamic-pvc-9"));
        assert_eq!(clone_of_snapshot("manual"), None);
    }
}
