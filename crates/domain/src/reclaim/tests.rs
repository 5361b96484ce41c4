use super::*;
use crate::fixtures;
use crate::volume::ANN_CLUSTER_ID_SOURCE;
use k8s_openapi::api::core::v1::CSIPersistentVolumeSource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::BTreeMap;

const ME: &str = "ceph.com/rbd";

fn ours(policy: &str, phase: &str) -> PersistentVolume {
    let image = "kubernetes-dynamic-pvc-1";
    let annotations = [
        (ANN_PROVISIONED_BY, ME),
        (ANN_MONITORS, "m1:6789,m2:6789"),
        (ANN_POOL, "kube"),
        (ANN_IMAGE, image),
        (ANN_ADMIN_ID, "admin"),
        (ANN_ADMIN_SECRET, "kube-system/ceph-secret"),
        (ANN_FSID, "f-1"),
        (ANN_POOL_ID, "3"),
    ];
    let mut pv = fixtures::rbd_pv("pvc-1", ("kube", image), &annotations, Some(phase));
    pv.metadata.finalizers = Some(vec![FINALIZER.into(), "kubernetes.io/pv-protection".into()]);
    let spec = pv.spec.as_mut().unwrap();
    spec.persistent_volume_reclaim_policy = Some(policy.into());
    spec.storage_class_name = Some("ceph-rbd".into());
    spec.rbd.as_mut().unwrap().monitors = vec!["m1:6789".into(), "m2:6789".into()];
    pv
}

/// Shaped exactly like a PV of the old external-storage provisioner.
fn legacy(phase: &str) -> PersistentVolume {
    let image = (
        "kube",
        "kubernetes-dynamic-pvc-5a6c7e52-1c8b-11e9-9d9e-0a580af40113",
    );
    let annotations = [
        (ANN_PROVISIONED_BY, "ceph.com/rbd"),
        (ANN_LEGACY_IDENTITY, "ceph.com/rbd"),
    ];
    let mut pv = fixtures::rbd_pv("pvc-0b92a433", image, &annotations, Some(phase));
    let spec = pv.spec.as_mut().unwrap();
    spec.persistent_volume_reclaim_policy = Some("Delete".into());
    spec.storage_class_name = Some("ceph-rbd".into());
    let rbd = spec.rbd.as_mut().unwrap();
    rbd.monitors = vec!["10.0.0.1:6789".into()];
    rbd.keyring = Some("/etc/ceph/keyring".into());
    rbd.user = Some("kube".into());
    pv
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
                fixtures::recorded_admin("admin", "kube-system/ceph-secret")
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A decision in a word, for tables.
fn kind(a: &VolumeAction) -> &'static str {
    match a {
        VolumeAction::Ignore(_) => "ignore",
        VolumeAction::RemoveFinalizer => "remove finalizer",
        VolumeAction::Delete(_) => "delete",
        VolumeAction::Broken(_) => "broken",
        VolumeAction::Record(_) => "record",
    }
}

/// Without records (a volume of the old provisioner, or ours from before them), a bound
/// volume is recorded while plainly in use, whatever its policy; nothing else changes.
#[test]
fn bound_volumes_without_records_are_recorded() {
    let unrecorded = |policy, phase| {
        let mut pv = ours(policy, phase);
        let a = pv.metadata.annotations.as_mut().unwrap();
        a.remove(ANN_FSID);
        a.remove(ANN_POOL_ID);
        pv
    };
    for (policy, phase, claim_gone, want) in [
        ("Delete", "Bound", false, "record"),
        ("Delete", "Bound", true, "delete"),
        ("Delete", "Released", false, "delete"),
        ("Delete", "Pending", false, "ignore"),
        ("Retain", "Bound", false, "remove finalizer"),
    ] {
        let got = kind(&decide(&unrecorded(policy, phase), ME, claim_gone));
        assert_eq!(got, want, "{policy} {phase}, claim gone: {claim_gone}");
    }
    let mut retain = unrecorded("Retain", "Bound");
    retain.metadata.finalizers = None;
    assert_eq!(kind(&decide(&retain, ME, false)), "record");
    assert_eq!(kind(&decide(&legacy("Bound"), ME, false)), "record");
    let mut deleting = unrecorded("Delete", "Bound");
    deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
    assert_eq!(kind(&decide(&deleting, ME, false)), "ignore");
}

#[test]
fn recorded_places_must_match_what_is_reached() {
    let live = Place {
        fsid: "f-1".into(),
        pool_id: 3,
    };
    let pv = ours("Delete", "Released");
    assert_eq!(recorded_place(&pv), Some(live.clone()));
    assert_eq!(check_recorded(&pv, "kube", &live, "m1"), Ok(()));
    let other_cluster = Place {
        fsid: "f-2".into(),
        ..live.clone()
    };
    assert!(matches!(
        check_recorded(&pv, "kube", &other_cluster, "m1"),
        Err(PlaceChanged::Fsid { .. })
    ));
    let replaced = Place {
        pool_id: 4,
        ..live.clone()
    };
    let e = check_recorded(&pv, "kube", &replaced, "m1").unwrap_err();
    assert!(e.to_string().contains("renamed and replaced"), "{e}");
    // Nothing recorded: nothing to contradict.
    let mut bare = pv.clone();
    bare.metadata.annotations = None;
    assert_eq!(check_recorded(&bare, "kube", &replaced, "m1"), Ok(()));
    assert_eq!(recorded_place(&bare), None);
}

#[test]
fn what_becomes_of_our_volumes() {
    // (reclaim policy, phase, whether the claim is gone, decision)
    for (policy, phase, claim_gone, want) in [
        ("Delete", "Released", false, "delete"),
        ("Delete", "Failed", false, "delete"),
        ("Delete", "Bound", false, "ignore"),
        ("Delete", "Available", false, "ignore"),
        // A volume whose claim is gone is deleted at once, bound or not bound yet (the claim
        // went while it was being provisioned)...
        ("Delete", "Bound", true, "delete"),
        ("Delete", "Available", true, "delete"),
        ("Delete", "Pending", true, "delete"),
        ("Delete", "Pending", false, "ignore"),
        // ... but Retain stays Retain whatever happened to the claim.
        ("Retain", "Bound", true, "remove finalizer"),
        ("Retain", "Pending", true, "remove finalizer"),
        ("Retain", "Released", false, "remove finalizer"),
    ] {
        let got = kind(&decide(&ours(policy, phase), ME, claim_gone));
        assert_eq!(got, want, "{policy} {phase}, claim gone: {claim_gone}");
    }
}

#[test]
fn a_pv_being_deleted() {
    // `kubectl delete pv` on a bound volume: pv-protection holds it, and so do we; one
    // deleted before it was ever bound is ours to clean up.
    for (phase, want) in [("Bound", "ignore"), ("Available", "delete")] {
        let mut pv = ours("Delete", phase);
        pv.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert_eq!(kind(&decide(&pv, ME, false)), want, "{phase}");
    }
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
fn retain_without_our_finalizer_is_left_alone() {
    let mut pv = ours("Retain", "Released");
    pv.metadata.finalizers = None;
    assert!(matches!(decide(&pv, ME, false), VolumeAction::Ignore(_)));
}

#[test]
fn other_provisioners_volumes_are_ignored() {
    let action = decide(&ours("Delete", "Released"), "other.io/rbd", false);
    assert!(matches!(action, VolumeAction::Ignore(_)), "{action:?}");
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
    // A clusterID that is the fsid (the class gave none) pins the cluster in the immutable
    // spec: monitors leading to another cluster are refused even without the fsid record.
    let attrs = pv.spec.as_mut().unwrap().csi.as_mut().unwrap();
    attrs
        .volume_attributes
        .as_mut()
        .unwrap()
        .insert("clusterID".into(), "f-9".into());
    let a = pv.metadata.annotations.as_mut().unwrap();
    a.remove(ANN_FSID);
    a.insert(ANN_CLUSTER_ID_SOURCE.into(), "ceph-fsid".into());
    let live = Place {
        fsid: "f-1".into(),
        pool_id: 3,
    };
    assert!(matches!(
        check_recorded(&pv, "kube", &live, "m1"),
        Err(PlaceChanged::Fsid { recorded, .. }) if recorded == "f-9"
    ));
}

#[test]
fn deletion_follows_the_immutable_spec_not_the_annotations() {
    // An edited annotation that points elsewhere stops the deletion.
    for (key, edited) in [
        (ANN_IMAGE, "kubernetes-dynamic-pvc-victim"),
        (ANN_POOL, "other"),
        (ANN_MONITORS, "10.9.9.9:6789"),
    ] {
        let mut pv = ours("Delete", "Released");
        let annotations = pv.metadata.annotations.as_mut().unwrap();
        annotations.insert(key.into(), edited.into());
        match decide(&pv, ME, false) {
            VolumeAction::Broken(why) => assert!(why.to_string().contains("edited"), "{why}"),
            other => panic!("{key}: {other:?}"),
        }
    }
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

#[test]
fn early_deletion_needs_every_fact() {
    // (enabled, policy, phase, provisioned by) → may delete before Released?
    let cases = [
        (true, "Delete", "Bound", ME, true),
        (true, "Delete", "Pending", ME, true),
        (false, "Delete", "Bound", ME, false),
        (true, "Retain", "Bound", ME, false),
        (true, "Recycle", "Bound", ME, false),
        (true, "Delete", "Released", ME, false),
        (true, "Delete", "Failed", ME, false),
        (true, "Delete", "Bound", "example.com/other", false),
    ];
    for (i, (enabled, policy, phase, by, want)) in cases.into_iter().enumerate() {
        let mut pv = ours(policy, phase);
        pv.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANN_PROVISIONED_BY.into(), by.into());
        assert_eq!(
            may_delete_before_release(enabled, &pv, ME),
            want,
            "case {i}"
        );
    }
}

/// After a 409 on the commit, only a PV that differs in its status may be committed again
/// without a new pass; any other change starts the deletion over.
#[test]
fn a_commit_is_tried_again_only_when_nothing_but_the_status_changed() {
    type Change = fn(&mut PersistentVolume);
    let mut tried = ours("Delete", "Bound");
    tried.metadata.resource_version = Some("7".into());
    spec_of(&mut tried).claim_ref = Some(k8s_openapi::api::core::v1::ObjectReference {
        uid: Some("uid-1".into()),
        ..Default::default()
    });
    let cases: [(&str, Change, bool); 11] = [
        ("marked Released", |pv| set_phase(pv, "Released"), true),
        ("marked Failed", |pv| set_phase(pv, "Failed"), true),
        (
            "another field manager",
            |pv| pv.metadata.managed_fields = Some(vec![Default::default()]),
            true,
        ),
        (
            "set to Retain",
            |pv| spec_of(pv).persistent_volume_reclaim_policy = Some("Retain".into()),
            false,
        ),
        (
            "bound to another claim",
            |pv| spec_of(pv).claim_ref.as_mut().unwrap().uid = Some("uid-2".into()),
            false,
        ),
        (
            "its recorded fsid removed",
            |pv| {
                pv.metadata.annotations.as_mut().unwrap().remove(ANN_FSID);
            },
            false,
        ),
        (
            "an annotation added",
            |pv| {
                pv.metadata
                    .annotations
                    .as_mut()
                    .unwrap()
                    .insert("example.com/x".into(), "y".into());
            },
            false,
        ),
        (
            "our finalizer removed",
            |pv| pv.metadata.finalizers = Some(vec!["kubernetes.io/pv-protection".into()]),
            false,
        ),
        (
            "deleted by someone else",
            |pv| pv.metadata.deletion_timestamp = Some(Time(Default::default())),
            false,
        ),
        (
            "labelled",
            |pv| {
                pv.metadata.labels = Some(BTreeMap::from([("a".into(), "b".into())]));
            },
            false,
        ),
        (
            "another provisioner's",
            |pv| {
                pv.metadata
                    .annotations
                    .as_mut()
                    .unwrap()
                    .insert(ANN_PROVISIONED_BY.into(), "other".into());
            },
            false,
        ),
    ];
    for (case, change, want) in cases {
        let mut now = tried.clone();
        now.metadata.resource_version = Some("8".into());
        change(&mut now);
        assert_eq!(may_commit_again(&tried, &now, ME, true), want, "{case}");
    }
    // The claim not gone: a Bound volume is not deleted, so there is nothing to commit again.
    let mut now = tried.clone();
    now.metadata.resource_version = Some("8".into());
    assert!(!may_commit_again(&tried, &now, ME, false));
}

fn set_phase(pv: &mut PersistentVolume, phase: &str) {
    pv.status.get_or_insert_default().phase = Some(phase.into());
}

fn spec_of(pv: &mut PersistentVolume) -> &mut k8s_openapi::api::core::v1::PersistentVolumeSpec {
    pv.spec.as_mut().unwrap()
}
