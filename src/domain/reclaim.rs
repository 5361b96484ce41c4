//! What to do with a PersistentVolume: delete its image, drop our finalizer, or nothing. Pure.

use k8s_openapi::api::core::v1::PersistentVolume;

use crate::domain::params::SecretRef;
use crate::domain::volume::{
    ANN_ADMIN_ID, ANN_ADMIN_SECRET, ANN_IMAGE, ANN_MONITORS, ANN_POOL, ANN_PROVISIONED_BY,
    FINALIZER,
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
    /// Ours and to be deleted, but the PV does not say enough to find the image.
    Broken(String),
}

pub fn has_finalizer(pv: &PersistentVolume) -> bool {
    pv.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
}

fn ann<'a>(pv: &'a PersistentVolume, key: &str) -> Option<&'a str> {
    pv.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Whether this PV came from the old external-storage provisioner and records nothing of
/// ours: its admin credentials come from its StorageClass.
pub fn is_legacy(pv: &PersistentVolume) -> bool {
    made_by_old_provisioner(pv) && ann(pv, ANN_ADMIN_SECRET).is_none()
}

/// Whether the old external-storage provisioner made this volume (its image is named
/// `kubernetes-dynamic-pvc-<time uuid>`, not after the PV). `migrate-to-csi` keeps the mark.
pub fn made_by_old_provisioner(pv: &PersistentVolume) -> bool {
    ann(pv, ANN_LEGACY_IDENTITY).is_some()
}

/// What to do with a PV. `claim_gone`: the claim its `claimRef` names no longer exists (by
/// uid), so a Bound volume is as good as Released: it is deleted at once rather than after
/// kube-controller-manager's status write.
pub fn decide(pv: &PersistentVolume, provisioner: &str, claim_gone: bool) -> VolumeAction {
    if ann(pv, ANN_PROVISIONED_BY) != Some(provisioner) {
        return VolumeAction::Ignore("not provisioned by us");
    }
    let spec = pv.spec.clone().unwrap_or_default();
    let policy = spec
        .persistent_volume_reclaim_policy
        .as_deref()
        .unwrap_or("Retain");
    if policy != "Delete" {
        return if has_finalizer(pv) {
            VolumeAction::RemoveFinalizer
        } else {
            VolumeAction::Ignore("reclaim policy is not Delete")
        };
    }
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    let deleting = pv.metadata.deletion_timestamp.is_some();
    if deleting && !has_finalizer(pv) && !is_legacy(pv) {
        // Our finalizer goes last, after the image: nothing is left for us to do.
        return VolumeAction::Ignore("deleted, and our finalizer is already gone");
    }
    match phase {
        Some("Released") | Some("Failed") => {}
        Some("Bound") if claim_gone => {}
        // Deleted by hand before it was ever bound: nothing else will use the image.
        Some("Available") | Some("Pending") | None if deleting => {}
        _ => return VolumeAction::Ignore("volume is in use or not yet released"),
    }
    match target(pv) {
        Ok(t) => VolumeAction::Delete(t),
        Err(why) => VolumeAction::Broken(why),
    }
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
        .unwrap_or_else(|| crate::domain::params::DEFAULT_POOL.into());
    (!image.is_empty()).then_some((pool, image))
}

/// Where a volume's image is and how to reach it as admin, from the PV alone
/// (plus its StorageClass for PVs of the old provisioner).
///
/// The image comes from the immutable volume source only. Our annotations are mutable, so
/// they may only agree with it; for volumes we provisioned, the image must also be the one
/// derived from the PV's name (`pvc-<uid>` → `kubernetes-dynamic-pvc-<uid>`), so a copied or
/// edited PV can never point a deletion at another claim's image.
pub fn target(pv: &PersistentVolume) -> Result<DeleteTarget, String> {
    let name = pv.metadata.name.as_deref().unwrap_or_default();
    let spec = pv.spec.clone().unwrap_or_default();
    let Some((pool, image)) = spec_image(pv) else {
        return Err(
            "the PV names no RBD image (neither spec.rbd.image nor spec.csi.volumeHandle); delete the image by hand, then remove the finalizer".into(),
        );
    };
    let edited = |what: &str, ann_value: &str, spec_value: &str| {
        format!(
            "annotation {what} says {ann_value:?} but the PV's immutable spec names {spec_value:?}: the PV was edited, so nothing was deleted; restore the annotation, or remove the image by hand if it is truly unused, then the finalizer {FINALIZER}"
        )
    };
    if let Some(p) = ann(pv, ANN_POOL).filter(|p| *p != pool) {
        return Err(edited(ANN_POOL, p, &pool));
    }
    if let Some(i) = ann(pv, ANN_IMAGE).filter(|i| *i != image) {
        return Err(edited(ANN_IMAGE, i, &image));
    }
    if !made_by_old_provisioner(pv) {
        let derived = name
            .strip_prefix("pvc-")
            .map(crate::domain::volume::image_name);
        if derived.as_deref() != Some(image.as_str()) {
            return Err(format!(
                "PV {name} names image {pool}/{image}, but a volume this provisioner made is always named after its PV ({}): the PV was copied or edited, so nothing was deleted; remove the image by hand only if it is truly unused, then the finalizer {FINALIZER}",
                derived.unwrap_or_else(|| "kubernetes-dynamic-pvc-<uid> for PV pvc-<uid>".into())
            ));
        }
    }
    let recorded_monitors: Option<Vec<String>> =
        ann(pv, ANN_MONITORS).map(|m| m.split(',').map(|s| s.trim().to_string()).collect());
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
    let recorded = ann(pv, ANN_ADMIN_SECRET).and_then(|s| s.split_once('/'));
    let admin = match recorded {
        Some((namespace, name)) => AdminSource::Recorded {
            admin_id: ann(pv, ANN_ADMIN_ID).unwrap_or("admin").to_string(),
            secret: SecretRef {
                namespace: namespace.into(),
                name: name.into(),
            },
        },
        None => match spec.storage_class_name.filter(|c| !c.is_empty()) {
            Some(class) => AdminSource::FromClass(class),
            None => {
                return Err(
                    "the PV records no admin credentials and names no StorageClass; delete the image by hand, then remove the finalizer".into(),
                );
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

/// Whether an existing PV is the one we meant to create (a retry after a crash): made by
/// us, pre-bound to the same claim uid, naming the same image. Anything else is someone
/// else's volume under our name, and must not be taken as success.
pub fn same_volume(
    existing: &PersistentVolume,
    wanted: &PersistentVolume,
    provisioner: &str,
) -> Result<(), String> {
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
) -> Result<(), String> {
    if ann(existing, ANN_PROVISIONED_BY) != Some(provisioner) {
        return Err(format!(
            "was not provisioned by {provisioner} ({ANN_PROVISIONED_BY} is {:?})",
            ann(existing, ANN_PROVISIONED_BY).unwrap_or("unset")
        ));
    }
    if claim_uid(existing).as_deref() != Some(uid) {
        return Err(format!(
            "is bound to claim uid {:?}",
            claim_uid(existing).unwrap_or_default()
        ));
    }
    match spec_image(existing) {
        Some((p, i)) if p == pool && i == image => Ok(()),
        Some((p, i)) => Err(format!("names image {p}/{i}")),
        None => Err("names no RBD image".into()),
    }
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
    use k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, PersistentVolumeSpec, PersistentVolumeStatus,
        RBDPersistentVolumeSource,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use std::collections::BTreeMap;

    const ME: &str = "ceph.com/rbd";

    fn ours(policy: &str, phase: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pvc-1".into()),
                annotations: Some(BTreeMap::from([
                    (ANN_PROVISIONED_BY.into(), ME.into()),
                    (ANN_MONITORS.into(), "m1:6789,m2:6789".into()),
                    (ANN_POOL.into(), "kube".into()),
                    (ANN_IMAGE.into(), "kubernetes-dynamic-pvc-1".into()),
                    (ANN_ADMIN_ID.into(), "admin".into()),
                    (ANN_ADMIN_SECRET.into(), "kube-system/ceph-secret".into()),
                ])),
                finalizers: Some(vec![FINALIZER.into(), "kubernetes.io/pv-protection".into()]),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                persistent_volume_reclaim_policy: Some(policy.into()),
                storage_class_name: Some("ceph-rbd".into()),
                rbd: Some(RBDPersistentVolumeSource {
                    monitors: vec!["m1:6789".into(), "m2:6789".into()],
                    pool: Some("kube".into()),
                    image: "kubernetes-dynamic-pvc-1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    /// Shaped exactly like a PV of the old external-storage provisioner.
    fn legacy(phase: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some("pvc-0b92a433".into()),
                annotations: Some(BTreeMap::from([
                    (ANN_PROVISIONED_BY.into(), "ceph.com/rbd".into()),
                    (ANN_LEGACY_IDENTITY.into(), "ceph.com/rbd".into()),
                ])),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                persistent_volume_reclaim_policy: Some("Delete".into()),
                storage_class_name: Some("ceph-rbd".into()),
                rbd: Some(RBDPersistentVolumeSource {
                    monitors: vec!["10.0.0.1:6789".into()],
                    pool: Some("kube".into()),
                    image: "kubernetes-dynamic-pvc-5a6c7e52-1c8b-11e9-9d9e-0a580af40113".into(),
                    keyring: Some("/etc/ceph/keyring".into()),
                    user: Some("kube".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn released_delete_volume_is_deleted_without_the_class() {
        match decide(&ours("Delete", "Released"), ME, false) {
            VolumeAction::Delete(t) => {
                assert_eq!(t.pool, "kube");
                assert_eq!(t.image, "kubernetes-dynamic-pvc-1");
                assert_eq!(t.monitors, vec!["m1:6789", "m2:6789"]);
                assert_eq!(
                    t.admin,
                    AdminSource::Recorded {
                        admin_id: "admin".into(),
                        secret: SecretRef {
                            namespace: "kube-system".into(),
                            name: "ceph-secret".into()
                        }
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&ours("Delete", "Failed"), ME, false),
            VolumeAction::Delete(_)
        ));
    }

    #[test]
    fn bound_or_available_volumes_stay() {
        assert!(matches!(
            decide(&ours("Delete", "Bound"), ME, false),
            VolumeAction::Ignore(_)
        ));
        assert!(matches!(
            decide(&ours("Delete", "Available"), ME, false),
            VolumeAction::Ignore(_)
        ));
        // `kubectl delete pv` on a bound volume: pv-protection holds it, and so do we.
        let mut pv = ours("Delete", "Bound");
        pv.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(matches!(decide(&pv, ME, false), VolumeAction::Ignore(_)));
        // ... but one deleted before it was ever bound is ours to clean up.
        let mut pv = ours("Delete", "Available");
        pv.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(matches!(decide(&pv, ME, false), VolumeAction::Delete(_)));
    }

    #[test]
    fn a_bound_volume_whose_claim_is_gone_is_deleted_at_once() {
        assert!(matches!(
            decide(&ours("Delete", "Bound"), ME, true),
            VolumeAction::Delete(_)
        ));
        assert!(matches!(
            decide(&ours("Delete", "Bound"), ME, false),
            VolumeAction::Ignore(_)
        ));
        // Retain stays Retain whatever happened to the claim.
        assert_eq!(
            decide(&ours("Retain", "Bound"), ME, true),
            VolumeAction::RemoveFinalizer
        );
    }

    #[test]
    fn done_once_our_finalizer_is_gone() {
        let mut pv = ours("Delete", "Released");
        pv.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(matches!(decide(&pv, ME, false), VolumeAction::Delete(_)));
        pv.metadata.finalizers = Some(vec!["kubernetes.io/pv-protection".into()]);
        assert!(matches!(decide(&pv, ME, false), VolumeAction::Ignore(_)));
    }

    #[test]
    fn retain_is_never_deleted_and_loses_our_finalizer() {
        assert_eq!(
            decide(&ours("Retain", "Released"), ME, false),
            VolumeAction::RemoveFinalizer
        );
        let mut pv = ours("Retain", "Released");
        pv.metadata.finalizers = None;
        assert!(matches!(decide(&pv, ME, false), VolumeAction::Ignore(_)));
    }

    #[test]
    fn other_provisioners_volumes_are_ignored() {
        assert!(matches!(
            decide(&ours("Delete", "Released"), "other.io/rbd", false),
            VolumeAction::Ignore(_)
        ));
        let mut pv = ours("Delete", "Released");
        pv.metadata.annotations = None;
        assert!(matches!(decide(&pv, ME, false), VolumeAction::Ignore(_)));
    }

    #[test]
    fn legacy_volumes_take_credentials_from_their_class() {
        let pv = legacy("Released");
        assert!(is_legacy(&pv));
        match decide(&pv, ME, false) {
            VolumeAction::Delete(t) => {
                assert_eq!(t.pool, "kube");
                assert_eq!(
                    t.image,
                    "kubernetes-dynamic-pvc-5a6c7e52-1c8b-11e9-9d9e-0a580af40113"
                );
                assert_eq!(t.monitors, vec!["10.0.0.1:6789"]);
                assert_eq!(t.admin, AdminSource::FromClass("ceph-rbd".into()));
            }
            other => panic!("{other:?}"),
        }
        let mut pv = legacy("Released");
        pv.spec.as_mut().unwrap().rbd.as_mut().unwrap().pool = None;
        match decide(&pv, ME, false) {
            VolumeAction::Delete(t) => {
                assert_eq!(t.pool, "rbd", "the old provisioner's default pool")
            }
            other => panic!("{other:?}"),
        }
        let mut pv = legacy("Released");
        pv.spec.as_mut().unwrap().storage_class_name = None;
        assert!(matches!(decide(&pv, ME, false), VolumeAction::Broken(_)));
        let mut pv = legacy("Released");
        pv.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Retain".into());
        assert!(matches!(decide(&pv, ME, false), VolumeAction::Ignore(_)));
    }

    #[test]
    fn csi_volumes() {
        let mut pv = ours("Delete", "Released");
        let spec = pv.spec.as_mut().unwrap();
        spec.rbd = None;
        spec.csi = Some(CSIPersistentVolumeSource {
            driver: "rbd.csi.ceph.com".into(),
            volume_handle: "kubernetes-dynamic-pvc-1".into(),
            volume_attributes: Some(BTreeMap::from([("pool".into(), "kube".into())])),
            ..Default::default()
        });
        match decide(&pv, ME, false) {
            VolumeAction::Delete(t) => {
                assert_eq!(
                    (t.pool.as_str(), t.image.as_str()),
                    ("kube", "kubernetes-dynamic-pvc-1")
                );
                assert_eq!(t.monitors.len(), 2, "from the annotation");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deletion_follows_the_immutable_spec_not_the_annotations() {
        // An edited annotation that points elsewhere stops the deletion.
        let mut pv = ours("Delete", "Released");
        pv.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANN_IMAGE.into(), "kubernetes-dynamic-pvc-victim".into());
        match decide(&pv, ME, false) {
            VolumeAction::Broken(why) => assert!(why.contains("edited"), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut pv = ours("Delete", "Released");
        pv.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANN_POOL.into(), "other".into());
        assert!(matches!(decide(&pv, ME, false), VolumeAction::Broken(_)));
        let mut pv = ours("Delete", "Released");
        pv.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANN_MONITORS.into(), "10.9.9.9:6789".into());
        assert!(matches!(decide(&pv, ME, false), VolumeAction::Broken(_)));
        // Without our annotations the spec alone decides.
        let mut pv = ours("Delete", "Released");
        for k in [ANN_IMAGE, ANN_POOL, ANN_MONITORS] {
            pv.metadata.annotations.as_mut().unwrap().remove(k);
        }
        match decide(&pv, ME, false) {
            VolumeAction::Delete(t) => {
                assert_eq!(
                    (t.pool.as_str(), t.image.as_str()),
                    ("kube", "kubernetes-dynamic-pvc-1")
                );
                assert_eq!(t.monitors, vec!["m1:6789", "m2:6789"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_copied_pv_cannot_redirect_a_deletion() {
        // Same spec (another claim's image), another name: a copy.
        let mut pv = ours("Delete", "Released");
        pv.metadata.name = Some("pvc-2".into());
        match decide(&pv, ME, false) {
            VolumeAction::Broken(why) => {
                assert!(why.contains("kubernetes-dynamic-pvc-2"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        // The old provisioner's images are not named after the PV; its mark exempts them.
        assert!(made_by_old_provisioner(&legacy("Released")));
        assert!(!made_by_old_provisioner(&ours("Delete", "Released")));
    }

    #[test]
    fn an_existing_pv_counts_only_when_it_is_the_same_volume() {
        let mut wanted = ours("Delete", "Pending");
        wanted.spec.as_mut().unwrap().claim_ref =
            Some(k8s_openapi::api::core::v1::ObjectReference {
                uid: Some("1".into()),
                ..Default::default()
            });
        assert_eq!(same_volume(&wanted, &wanted, ME), Ok(()));
        let mut other = wanted.clone();
        other.spec.as_mut().unwrap().claim_ref.as_mut().unwrap().uid = Some("9".into());
        assert!(same_volume(&other, &wanted, ME).is_err());
        let mut other = wanted.clone();
        other.metadata.annotations = None;
        assert!(same_volume(&other, &wanted, ME).is_err());
        let mut other = wanted.clone();
        other.spec.as_mut().unwrap().rbd.as_mut().unwrap().image = "x".into();
        assert!(same_volume(&other, &wanted, ME).is_err());
    }

    #[test]
    fn clone_snapshot_names() {
        let s = clone_snapshot("kubernetes-dynamic-pvc-9");
        assert_eq!(clone_of_snapshot(&s), Some("kubernetes-dynamic-pvc-9"));
        assert_eq!(clone_of_snapshot("manual"), None);
    }
}
