//! What to do with a PersistentVolume: delete its image, drop our finalizer, or nothing. Pure.

use k8s_openapi::api::core::v1::PersistentVolume;

use crate::meta::annotation;
use crate::owner::{BoundVolume, Place};
use crate::params::SecretRef;
use crate::volume::{
    ANN_ADMIN_ID, ANN_ADMIN_SECRET, ANN_FSID, ANN_IMAGE, ANN_MONITORS, ANN_POOL, ANN_POOL_ID,
    ANN_PROVISIONED_BY, FINALIZER,
};

/// Annotation the old external-storage provisioner put on its PVs.
pub const ANN_LEGACY_IDENTITY: &str = "rbdProvisionerIdentity";

/// Where the admin credentials for a deletion come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminSource {
    /// Recorded on the PV when we provisioned it: works without the StorageClass.
    Recorded { admin_id: String, secret: SecretRef },
    /// PVs of the old provisioner record nothing: take them from their StorageClass.
    FromClass(String),
}

/// The image a Delete-policy volume owns, and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteTarget {
    pub pool: String,
    pub image: String,
    /// Empty when only the StorageClass knows them.
    pub monitors: Vec<String>,
    pub admin: AdminSource,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeAction {
    Ignore(&'static str),
    /// The policy is no longer Delete: our finalizer must not keep the PV alive.
    RemoveFinalizer,
    Delete(DeleteTarget),
    /// Ours and bound, but the PV does not record where its image was made (a volume of the
    /// old provisioner, or of this one before the records existed): record it on the image's
    /// stamp and the PV while the volume is plainly in use, so that a later deletion can
    /// check it.
    Record(DeleteTarget),
    /// Ours and to be deleted, but the PV does not say enough to find the image.
    Broken(TargetError),
}

pub fn has_finalizer(pv: &PersistentVolume) -> bool {
    pv.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

/// Whether this PV came from the old external-storage provisioner and records nothing of
/// ours: its admin credentials come from its StorageClass.
pub fn is_legacy(pv: &PersistentVolume) -> bool {
    made_by_old_provisioner(pv) && annotation(&pv.metadata, ANN_ADMIN_SECRET).is_none()
}

/// Whether the old external-storage provisioner made this volume (its image is named
/// `kubernetes-dynamic-pvc-<time uuid>`, not after the PV). `migrate-to-csi` keeps the mark.
pub fn made_by_old_provisioner(pv: &PersistentVolume) -> bool {
    annotation(&pv.metadata, ANN_LEGACY_IDENTITY).is_some()
}

/// Whether a volume may be deleted before kube-controller-manager marks it Released, once the
/// API server confirms its claim is gone (the early path, `enabled` by the flag): ours, under
/// reclaim policy Delete, and not Released or Failed already (those take the usual path and
/// need no question to the API server). Bound, or not bound yet because the claim went while
/// it was being provisioned.
pub fn may_delete_before_release(enabled: bool, pv: &PersistentVolume, provisioner: &str) -> bool {
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    let policy = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
    enabled
        && !matches!(phase, Some("Released") | Some("Failed"))
        && annotation(&pv.metadata, ANN_PROVISIONED_BY) == Some(provisioner)
        && policy == Some("Delete")
}

/// What to do with a PV. `claim_gone`: the claim its `claimRef` names no longer exists (by
/// uid), so the volume is as good as Released (kube-controller-manager marks any volume whose
/// claimRef uid names a missing claim Released, whatever its phase): it is deleted at once
/// rather than after that status write.
pub fn decide(pv: &PersistentVolume, provisioner: &str, claim_gone: bool) -> VolumeAction {
    if annotation(&pv.metadata, ANN_PROVISIONED_BY) != Some(provisioner) {
        return VolumeAction::Ignore("not provisioned by us");
    }
    let spec = pv.spec.clone().unwrap_or_default();
    let policy = spec
        .persistent_volume_reclaim_policy
        .as_deref()
        .unwrap_or("Retain");
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    let deleting = pv.metadata.deletion_timestamp.is_some();
    // Bound, in use: the moment to record what a later deletion checks.
    let record = || match target(pv) {
        Ok(t) if phase == Some("Bound") && !deleting && recorded_place(pv).is_none() => {
            Some(VolumeAction::Record(t))
        }
        _ => None,
    };
    if policy != "Delete" {
        return if has_finalizer(pv) {
            VolumeAction::RemoveFinalizer
        } else {
            record().unwrap_or(VolumeAction::Ignore("reclaim policy is not Delete"))
        };
    }
    if deleting && !has_finalizer(pv) && !is_legacy(pv) {
        // Our finalizer goes last, after the image: nothing is left for us to do.
        return VolumeAction::Ignore("deleted, and our finalizer is already gone");
    }
    match phase {
        Some("Released") | Some("Failed") => {}
        _ if claim_gone => {}
        // Deleted by hand before it was ever bound: nothing else will use the image.
        Some("Available") | Some("Pending") | None if deleting => {}
        _ => {
            return record()
                .unwrap_or(VolumeAction::Ignore("volume is in use or not yet released"));
        }
    }
    match target(pv) {
        Ok(t) => VolumeAction::Delete(t),
        Err(why) => VolumeAction::Broken(why),
    }
}

/// Whether a deletion whose commit met a 409 may commit again on `now`, the PV read after
/// it, without deciding and checking anew: `now` is the same object as `tried` (the version
/// the precondition named) in everything but its status, and `decide` still says Delete, of
/// the same image. A status write (kube-controller-manager marking the volume Released) is
/// the usual cause; the checks read nothing from the status, so they still hold. Anything
/// else changed (policy, claimRef, annotations, finalizers, a deletion begun) and the
/// deletion starts over from a fresh read.
pub fn may_commit_again(
    tried: &PersistentVolume,
    now: &PersistentVolume,
    provisioner: &str,
    claim_gone: bool,
) -> bool {
    fn without_status(pv: &PersistentVolume) -> PersistentVolume {
        let mut pv = pv.clone();
        pv.status = None;
        pv.metadata.resource_version = None;
        pv.metadata.managed_fields = None;
        pv
    }
    let same_target = match (
        decide(tried, provisioner, claim_gone),
        decide(now, provisioner, claim_gone),
    ) {
        (VolumeAction::Delete(a), VolumeAction::Delete(b)) => a == b,
        _ => false,
    };
    same_target && without_status(tried) == without_status(now)
}

/// Where a PV records its image was made, when it records both the fsid and the pool id.
pub fn recorded_place(pv: &PersistentVolume) -> Option<Place> {
    Some(Place {
        fsid: annotation(&pv.metadata, ANN_FSID)?.to_string(),
        pool_id: annotation(&pv.metadata, ANN_POOL_ID)?.parse().ok()?,
    })
}

/// Why the cluster or pool reached is not where a PV's image was made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlaceChanged {
    #[error(
        "PV {pv} records its image as made in Ceph cluster {recorded}, but the monitors used ({monitors}) lead to cluster {live}; nothing was changed: check the StorageClass's monitors (or, without a class, the PV's {ANN_MONITORS} annotation)"
    )]
    Fsid {
        pv: String,
        recorded: String,
        live: String,
        monitors: String,
    },
    #[error(
        "pool {pool} has id {live}, but PV {pv} records its image as made in pool id {recorded}: the pool was renamed and replaced by another of the same name, so nothing was changed; the image is in the pool that now has id {recorded} (`ceph osd pool ls detail`)"
    )]
    PoolId {
        pv: String,
        pool: String,
        recorded: String,
        live: i64,
    },
}

/// What the PV records of its image's place (its annotations, and the `clusterID` of a csi
/// volume whose class gave none: the fsid, in the immutable spec) must match the cluster and
/// pool reached. A PV without records passes; its image's stamp is checked on its own.
pub fn check_recorded(
    pv: &PersistentVolume,
    pool: &str,
    live: &Place,
    monitors: &str,
) -> Result<(), PlaceChanged> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    for recorded in crate::monitors::recorded_fsids(pv) {
        if recorded != live.fsid {
            return Err(PlaceChanged::Fsid {
                pv: name,
                recorded,
                live: live.fsid.clone(),
                monitors: monitors.to_string(),
            });
        }
    }
    if let Some(recorded) = annotation(&pv.metadata, ANN_POOL_ID)
        && recorded.parse::<i64>().ok() != Some(live.pool_id)
    {
        return Err(PlaceChanged::PoolId {
            pv: name,
            pool: pool.to_string(),
            recorded: recorded.to_string(),
            live: live.pool_id,
        });
    }
    Ok(())
}

/// The PV and the claim it is bound to, as a first-sight stamp records them.
pub fn bound_volume(pv: &PersistentVolume) -> Option<BoundVolume> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some(BoundVolume {
        pv: pv.metadata.name.clone()?,
        pv_uid: pv.metadata.uid.clone().unwrap_or_default(),
        claim_namespace: r.namespace.clone()?,
        claim_name: r.name.clone()?,
        claim_uid: r.uid.clone()?,
    })
}

/// The (pool, image) a PV's immutable volume source names: `spec.rbd` or `spec.csi`
/// (ceph-csi static volumes carry the image as `volumeHandle`). `None` when it names none.
pub fn spec_image(pv: &PersistentVolume) -> Option<(String, String)> {
    let spec = pv.spec.as_ref()?;
    let (pool, image) = match (&spec.rbd, &spec.csi) {
        (Some(rbd), _) => (rbd.pool.clone(), rbd.image.clone()),
        (None, Some(csi)) => (
            csi.volume_attributes
                .as_ref()
                .and_then(|a| a.get("pool").cloned()),
            csi.volume_handle.clone(),
        ),
        (None, None) => return None,
    };
    let pool = pool
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| crate::params::DEFAULT_POOL.into());
    (!image.is_empty()).then_some((pool, image))
}

/// Why a PV does not say where its image is, or says it in a way that cannot be trusted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "the PV names no RBD image (neither spec.rbd.image nor spec.csi.volumeHandle); delete the image by hand, then remove the finalizer"
    )]
    NoImage,
    #[error(
        "annotation {annotation} says {recorded:?} but the PV's immutable spec names {spec:?}: the PV was edited, so nothing was deleted; restore the annotation, or remove the image by hand if it is truly unused, then the finalizer {FINALIZER}"
    )]
    Edited {
        annotation: &'static str,
        recorded: String,
        spec: String,
    },
    #[error(
        "PV {pv} names image {pool}/{image}, but a volume this provisioner made is always named after its PV ({derived}): the PV was copied or edited, so nothing was deleted; remove the image by hand only if it is truly unused, then the finalizer {FINALIZER}"
    )]
    NotNamedAfterPv {
        pv: String,
        pool: String,
        image: String,
        derived: String,
    },
    #[error(
        "the PV records no admin credentials and names no StorageClass; delete the image by hand, then remove the finalizer"
    )]
    NoAdmin,
}

/// Where a volume's image is and how to reach it as admin, from the PV alone
/// (plus its StorageClass for PVs of the old provisioner).
///
/// The image comes from the immutable volume source only. Our annotations are mutable, so
/// they may only agree with it; for volumes we provisioned, the image must also be the one
/// derived from the PV's name (`pvc-<uid>` → `kubernetes-dynamic-pvc-<uid>`), so a copied or
/// edited PV can never point a deletion at another claim's image.
pub fn target(pv: &PersistentVolume) -> Result<DeleteTarget, TargetError> {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let spec = pv.spec.clone().unwrap_or_default();
    let Some((pool, image)) = spec_image(pv) else {
        return Err(TargetError::NoImage);
    };
    let edited = |annotation: &'static str, recorded: &str, spec: &str| TargetError::Edited {
        annotation,
        recorded: recorded.to_string(),
        spec: spec.to_string(),
    };
    if let Some(p) = annotation(&pv.metadata, ANN_POOL).filter(|p| *p != pool) {
        return Err(edited(ANN_POOL, p, &pool));
    }
    if let Some(i) = annotation(&pv.metadata, ANN_IMAGE).filter(|i| *i != image) {
        return Err(edited(ANN_IMAGE, i, &image));
    }
    if !made_by_old_provisioner(pv) {
        let derived = name.strip_prefix("pvc-").map(crate::volume::image_name);
        if derived.as_deref() != Some(image.as_str()) {
            return Err(TargetError::NotNamedAfterPv {
                pv: name.to_string(),
                pool,
                image,
                derived: derived
                    .unwrap_or_else(|| "kubernetes-dynamic-pvc-<uid> for PV pvc-<uid>".into()),
            });
        }
    }
    let recorded_monitors: Option<Vec<String>> = annotation(&pv.metadata, ANN_MONITORS)
        .map(|m| m.split(',').map(|s| s.trim().to_string()).collect());
    let monitors: Vec<String> = match (spec.rbd.as_ref(), recorded_monitors) {
        (Some(rbd), Some(rec)) if !rbd.monitors.is_empty() => {
            let spec_mons: Vec<String> =
                rbd.monitors.iter().map(|m| m.trim().to_string()).collect();
            if spec_mons != rec {
                return Err(edited(ANN_MONITORS, &rec.join(","), &spec_mons.join(",")));
            }
            spec_mons
        }
        (Some(rbd), None) => rbd.monitors.clone(),
        (_, Some(rec)) => rec,
        (None, None) => Vec::new(),
    };
    let recorded = annotation(&pv.metadata, ANN_ADMIN_SECRET).and_then(|s| s.split_once('/'));
    let admin = match recorded {
        Some((namespace, name)) => AdminSource::Recorded {
            admin_id: annotation(&pv.metadata, ANN_ADMIN_ID)
                .unwrap_or("admin")
                .to_string(),
            secret: SecretRef {
                namespace: namespace.into(),
                name: name.into(),
            },
        },
        None => match spec.storage_class_name.filter(|c| !c.is_empty()) {
            Some(class) => AdminSource::FromClass(class),
            None => {
                return Err(TargetError::NoAdmin);
            }
        },
    };
    Ok(DeleteTarget {
        pool,
        image,
        monitors,
        admin,
    })
}

/// Why an existing PV is not the volume we meant to create.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotTheVolume {
    #[error("was not provisioned by {provisioner} ({ANN_PROVISIONED_BY} is {by:?})")]
    ProvisionedBy { provisioner: String, by: String },
    #[error("is bound to claim uid {0:?}")]
    ClaimUid(String),
    #[error("names image {pool}/{image}")]
    Image { pool: String, image: String },
    #[error("names no RBD image")]
    NoImage,
}

/// Whether an existing PV is the one we meant to create (a retry after a crash): made by
/// us, pre-bound to the same claim uid, naming the same image. Anything else is someone
/// else's volume under our name, and must not be taken as success.
pub fn same_volume(
    existing: &PersistentVolume,
    wanted: &PersistentVolume,
    provisioner: &str,
) -> Result<(), NotTheVolume> {
    let uid = claim_uid(wanted).unwrap_or_default();
    let image = spec_image(wanted).unwrap_or_default();
    is_volume_of(existing, provisioner, &uid, (&image.0, &image.1))
}

fn claim_uid(pv: &PersistentVolume) -> Option<String> {
    pv.spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|c| c.uid.clone())
}

/// Whether `existing` is our volume for the claim with this uid and this (pool, image).
pub fn is_volume_of(
    existing: &PersistentVolume,
    provisioner: &str,
    uid: &str,
    (pool, image): (&str, &str),
) -> Result<(), NotTheVolume> {
    let by = annotation(&existing.metadata, ANN_PROVISIONED_BY);
    if by != Some(provisioner) {
        return Err(NotTheVolume::ProvisionedBy {
            provisioner: provisioner.to_string(),
            by: by.unwrap_or("unset").to_string(),
        });
    }
    if claim_uid(existing).as_deref() != Some(uid) {
        return Err(NotTheVolume::ClaimUid(
            claim_uid(existing).unwrap_or_default(),
        ));
    }
    match spec_image(existing) {
        Some((p, i)) if p == pool && i == image => Ok(()),
        Some((pool, image)) => Err(NotTheVolume::Image { pool, image }),
        None => Err(NotTheVolume::NoImage),
    }
}

#[cfg(test)]
mod tests;
