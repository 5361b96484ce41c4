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
        VolumeAction::Broken(why) => assert!(why.to_string().contains("edited"), "{why}"),
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
            assert!(
                why.to_string().contains("kubernetes-dynamic-pvc-2"),
                "{why}"
            )
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
    wanted.spec.as_mut().unwrap().claim_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
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
