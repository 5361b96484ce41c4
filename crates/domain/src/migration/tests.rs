use std::collections::BTreeMap;

use super::*;
use crate::fixtures;
use crate::params::SecretRef;
use crate::volume::{ANN_ADMIN_ID, ANN_ADMIN_SECRET, ANN_IMAGE, ANN_MONITORS, ANN_POOL, FINALIZER};
use k8s_openapi::api::core::v1::{
    EphemeralVolumeSource, ObjectReference, PersistentVolumeClaimVolumeSource,
    PersistentVolumeSpec, PersistentVolumeStatus, PodSpec, PodStatus, RBDPersistentVolumeSource,
    SecretReference, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ManagedFieldsEntry, ObjectMeta, OwnerReference, Time,
};

const ME: &str = "ceph.com/rbd";
const DRIVER: &str = "rbd.csi.ceph.com";
pub(super) const CLAIM_UID: &str = "4c1f0000-aaaa-bbbb-cccc-000000000001";
pub(super) const LEGACY_IMAGE: &str = "kubernetes-dynamic-pvc-7d9c2f5e-1111-11ee-8888-0242ac110002";

pub(super) fn settings() -> CsiSettings {
    CsiSettings {
        driver: "rbd.csi.ceph.com".into(),
        driver_source: DriverSource::Class,
        cluster_id: "c1".into(),
        node_stage_secret: SecretRef {
            namespace: "ceph-csi".into(),
            name: "csi-rbd-node".into(),
        },
        admin: Some(Admin {
            id: "admin".into(),
            secret: SecretRef {
                namespace: "kube-system".into(),
                name: "ceph-admin".into(),
            },
        }),
    }
}

/// A PV as the old external-storage provisioner wrote it.
pub(super) fn legacy() -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(format!("pvc-{CLAIM_UID}")),
            uid: Some("pv-uid-1".into()),
            resource_version: Some("42".into()),
            labels: Some(BTreeMap::from([("team".into(), "db".into())])),
            annotations: Some(BTreeMap::from([
                (ANN_PROVISIONED_BY.into(), "ceph.com/rbd".into()),
                (ANN_LEGACY_IDENTITY.into(), "ceph.com/rbd".into()),
                ("pv.kubernetes.io/bound-by-controller".into(), "yes".into()),
            ])),
            finalizers: Some(vec!["kubernetes.io/pv-protection".into()]),
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            capacity: Some(BTreeMap::from([("storage".into(), Quantity("1Gi".into()))])),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some("apps".into()),
                name: Some("data".into()),
                uid: Some(CLAIM_UID.into()),
                resource_version: Some("17".into()),
                ..Default::default()
            }),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            storage_class_name: Some("rbd".into()),
            mount_options: Some(vec!["discard".into()]),
            volume_mode: Some("Filesystem".into()),
            rbd: Some(RBDPersistentVolumeSource {
                monitors: vec!["10.0.0.1:6789".into(), "10.0.0.2:6789".into()],
                pool: Some("kube".into()),
                image: LEGACY_IMAGE.into(),
                user: Some("kube".into()),
                keyring: Some("/etc/ceph/keyring".into()),
                secret_ref: Some(SecretReference {
                    name: Some("ceph-kube-secret".into()),
                    namespace: None,
                }),
                fs_type: Some("xfs".into()),
                read_only: None,
            }),
            ..Default::default()
        }),
        status: Some(PersistentVolumeStatus {
            phase: Some("Bound".into()),
            ..Default::default()
        }),
    }
}

/// One of our PVs (recorded deletion annotations, our finalizer).
pub(super) fn ours() -> PersistentVolume {
    let mut pv = legacy();
    let a = pv.metadata.annotations.as_mut().unwrap();
    a.remove(ANN_LEGACY_IDENTITY);
    a.insert(ANN_MONITORS.into(), "10.0.0.1:6789,10.0.0.2:6789".into());
    a.insert(ANN_POOL.into(), "kube".into());
    a.insert(
        ANN_IMAGE.into(),
        format!("kubernetes-dynamic-pvc-{CLAIM_UID}"),
    );
    a.insert(ANN_ADMIN_ID.into(), "boss".into());
    a.insert(ANN_ADMIN_SECRET.into(), "ceph/boss-secret".into());
    pv.metadata.finalizers = Some(vec![FINALIZER.into(), "kubernetes.io/pv-protection".into()]);
    pv.spec.as_mut().unwrap().rbd.as_mut().unwrap().image =
        format!("kubernetes-dynamic-pvc-{CLAIM_UID}");
    pv
}

fn claim(phase: &str) -> PersistentVolumeClaim {
    let mut c = fixtures::claim("apps", "data", CLAIM_UID, Some(phase));
    c.spec.as_mut().unwrap().volume_name = Some(format!("pvc-{CLAIM_UID}"));
    c
}

fn skip_reason(p: Plan) -> String {
    match p {
        Plan::Skip(r) => r,
        other => panic!("expected a skip, got {other:?}"),
    }
}

fn origin_of(p: Plan) -> Origin {
    match p {
        Plan::Migrate(o, _) => o,
        other => panic!("expected a migration, got {other:?}"),
    }
}

#[test]
fn selects_ours_and_the_old_provisioners() {
    assert_eq!(
        origin_of(plan(&legacy(), Some(&claim("Bound")), ME)),
        Origin::Legacy
    );
    match plan(&ours(), Some(&claim("Bound")), ME) {
        Plan::Migrate(Origin::Ours, id) => assert_eq!(
            id,
            Identity {
                pv: format!("pvc-{CLAIM_UID}"),
                pv_uid: Some("pv-uid-1".into()),
                claim_namespace: "apps".into(),
                claim: "data".into(),
                claim_uid: CLAIM_UID.into(),
                pool: "kube".into(),
                image: format!("kubernetes-dynamic-pvc-{CLAIM_UID}"),
            }
        ),
        other => panic!("{other:?}"),
    }
    // Ours under another provisioner name; the old one's PVs are still recognised.
    let mut mine = ours();
    mine.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ANN_PROVISIONED_BY.into(), "x.test/rbd".into());
    assert_eq!(
        origin_of(plan(&mine, Some(&claim("Bound")), "x.test/rbd")),
        Origin::Ours
    );
    assert_eq!(
        origin_of(plan(&legacy(), Some(&claim("Bound")), "x.test/rbd")),
        Origin::Legacy
    );
    let r = skip_reason(plan(&mine, Some(&claim("Bound")), ME));
    assert!(
        r.contains("provisioned by x.test/rbd") && r.contains("--provisioner-name"),
        "{r}"
    );
}

#[test]
fn skips_what_is_not_ours_or_not_rbd() {
    let mut intree = legacy();
    let a = intree.metadata.annotations.as_mut().unwrap();
    a.remove(ANN_LEGACY_IDENTITY);
    a.insert(ANN_PROVISIONED_BY.into(), "kubernetes.io/rbd".into());
    assert!(skip_reason(plan(&intree, Some(&claim("Bound")), ME)).contains("kubernetes.io/rbd"));

    let mut manual = legacy();
    manual.metadata.annotations = None;
    assert!(
        skip_reason(plan(&manual, Some(&claim("Bound")), ME))
            .contains("not dynamically provisioned")
    );

    let new = csi_pv(&legacy(), &settings()).unwrap();
    assert_eq!(
        skip_reason(plan(&new, Some(&claim("Bound")), ME)),
        "already a csi volume (driver rbd.csi.ceph.com)"
    );

    let mut other = legacy();
    other.spec.as_mut().unwrap().rbd = None;
    assert!(skip_reason(plan(&other, Some(&claim("Bound")), ME)).contains("not an rbd volume"));
}

#[test]
fn skips_volumes_not_bound_to_a_live_claim() {
    let mut available = legacy();
    available.spec.as_mut().unwrap().claim_ref = None;
    available.status.as_mut().unwrap().phase = Some("Available".into());
    assert!(
        skip_reason(plan(&available, None, ME)).contains("not bound to a claim (phase Available)")
    );
    // Pre-bound by name only: not bound yet.
    let mut prebound = legacy();
    prebound
        .spec
        .as_mut()
        .unwrap()
        .claim_ref
        .as_mut()
        .unwrap()
        .uid = None;
    assert!(skip_reason(plan(&prebound, Some(&claim("Pending")), ME)).contains("not bound"));

    let mut released = legacy();
    released.status.as_mut().unwrap().phase = Some("Released".into());
    assert!(
        skip_reason(plan(&released, None, ME))
            .contains("apps/data no longer exists (phase Released)")
    );
    // A claim of the same name but another uid is another claim.
    let mut other = claim("Bound");
    other.metadata.uid = Some("another".into());
    assert!(skip_reason(plan(&released, Some(&other), ME)).contains("no longer exists"));

    assert!(
        skip_reason(plan(&legacy(), Some(&claim("Pending")), ME))
            .contains("not Bound to it (phase Pending)")
    );
    let mut elsewhere = claim("Bound");
    elsewhere.spec.as_mut().unwrap().volume_name = Some("pvc-other".into());
    assert!(skip_reason(plan(&legacy(), Some(&elsewhere), ME)).contains("not Bound to it"));

    let mut deleting = legacy();
    deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
    assert!(skip_reason(plan(&deleting, Some(&claim("Bound")), ME)).contains("being deleted"));
}

#[test]
fn refuses_our_pv_that_names_another_image() {
    // A PV of ours must name the image derived from its own name: a copied or edited one
    // could otherwise move another claim's image.
    let mut copied = ours();
    copied.spec.as_mut().unwrap().rbd.as_mut().unwrap().image =
        "kubernetes-dynamic-pvc-someone-else".into();
    match plan(&copied, Some(&claim("Bound")), ME) {
        Plan::Refuse(r @ IdentityError::NotNamedAfterPv { .. }) => {
            assert!(r.to_string().contains("named after its PV"), "{r}")
        }
        other => panic!("{other:?}"),
    }
    // The old provisioner named images by time uuid: no such rule.
    assert!(Identity::of(&legacy()).is_ok());
}

fn id() -> Identity {
    Identity::of(&legacy()).unwrap()
}

#[test]
fn the_claim_must_be_the_one_the_pv_is_bound_to() {
    let id = id();
    assert_eq!(id.check_claim(Some(&claim("Lost"))), Ok(()));
    // A tenant's claim elsewhere, even one naming the PV.
    let mut forged = claim("Pending");
    forged.metadata.namespace = Some("tenant".into());
    forged.metadata.uid = Some("tenant-uid".into());
    let mut recreated = claim("Pending");
    recreated.metadata.uid = Some("new-uid".into());
    let mut elsewhere = claim("Bound");
    elsewhere.spec.as_mut().unwrap().volume_name = Some("pvc-x".into());
    for (live, says) in [
        (None, "no longer exists"),
        (Some(&forged), "is not claim apps/data"),
        (Some(&recreated), "the claim was recreated"),
        (Some(&elsewhere), "not PersistentVolume"),
    ] {
        let e = id.check_claim(live).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
}

#[test]
fn locates_each_resume_point() {
    let old = legacy();
    let id = id();
    // Crash after saving the backup: the old PV is still there (maybe being deleted).
    assert_eq!(id.locate(Some(&old), DRIVER), Ok(Step::DeleteOld));
    let mut deleting = old.clone();
    deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
    deleting
        .spec
        .as_mut()
        .unwrap()
        .persistent_volume_reclaim_policy = Some("Retain".into());
    assert_eq!(id.locate(Some(&deleting), DRIVER), Ok(Step::DeleteOld));
    // Crash after the old PV went.
    assert_eq!(id.locate(None, DRIVER), Ok(Step::CreateNew));
    // Crash after the csi PV was created.
    let mut new = csi_pv(&old, &settings()).unwrap();
    assert_eq!(id.locate(Some(&new), DRIVER), Ok(Step::AwaitBound));
    new.metadata.uid = Some("csi-uid".into());
    assert_eq!(id.locate(Some(&new), DRIVER), Ok(Step::AwaitBound));
    // Rook's driver: its csi PV is found when the migration writes that driver, and only then.
    let mut rook = settings();
    rook.driver = "rook-ceph.rbd.csi.ceph.com".into();
    let new = csi_pv(&old, &rook).unwrap();
    assert_eq!(
        id.locate(Some(&new), "rook-ceph.rbd.csi.ceph.com"),
        Ok(Step::AwaitBound)
    );
    match id.locate(Some(&new), DRIVER) {
        Err(e @ Mismatch::PvChanged { .. }) => assert!(
            e.to_string()
                .contains("is a csi volume of driver rook-ceph.rbd.csi.ceph.com, where this migration writes rbd.csi.ceph.com"),
            "{e}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn refuses_to_go_on_over_something_else() {
    let old = legacy();
    let id = id();
    let mut other = old.clone();
    other.spec.as_mut().unwrap().rbd.as_mut().unwrap().image = "someone-else".into();
    let mut rebound = old.clone();
    let r = rebound.spec.as_mut().unwrap().claim_ref.as_mut().unwrap();
    r.namespace = Some("tenant".into());
    r.uid = Some("tenant-uid".into());
    let mut recreated = old.clone();
    recreated.metadata.uid = Some("pv-uid-2".into());
    let mut csi_elsewhere = csi_pv(&old, &settings()).unwrap();
    let r = csi_elsewhere.spec.as_mut().unwrap().claim_ref.as_mut();
    r.unwrap().uid = Some("tenant-uid".into());
    for (live, says) in [
        (other, "names image kube/someone-else"),
        (rebound, "is bound to claim tenant/data (uid tenant-uid)"),
        (recreated, "recreated"),
        (
            csi_elsewhere,
            "is bound to claim apps/data (uid tenant-uid)",
        ),
    ] {
        match id.locate(Some(&live), DRIVER) {
            Err(e @ Mismatch::PvChanged { .. }) => assert!(e.to_string().contains(says), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn backups_are_named_after_their_pv() {
    let old = legacy();
    let cm = backup_config_map(&old, "kube-system").unwrap();
    assert_eq!(
        cm.metadata.name.as_deref(),
        Some(format!("rbd-provisioner-migration-pvc-{CLAIM_UID}").as_str())
    );
    assert_eq!(cm.metadata.namespace.as_deref(), Some("kube-system"));
    assert_eq!(backed_up_pv(&cm), old.metadata.name.as_deref());
    let back = backup_of(&cm).unwrap();
    let mut expect = old.clone();
    expect.metadata.managed_fields = None;
    assert_eq!(back, expect);
    // A backup of one PV stored under another PV's name is refused.
    let mut moved = cm.clone();
    moved.metadata.name = Some("rbd-provisioner-migration-pvc-victim".into());
    assert!(matches!(
        backup_of(&moved),
        Err(BackupError::OtherPv { held }) if Some(held.as_str()) == old.metadata.name.as_deref()
    ));
    let mut broken = cm.clone();
    broken.data = Some(BTreeMap::from([(BACKUP_KEY.into(), "{".into())]));
    let e = backup_of(&broken).unwrap_err();
    assert!(e.to_string().contains("is not a PV"), "{e}");
    broken.data = None;
    assert!(matches!(backup_of(&broken), Err(BackupError::NoData)));
    assert!(matches!(
        backup_name(&"x".repeat(250)),
        Err(BackupError::NameTooLong { .. })
    ));
}

#[test]
fn the_claim_annotation_of_older_versions_is_only_reported() {
    let mut c = claim("Bound");
    assert_eq!(stale_claim_note(&c, "rbd"), None);
    c.metadata.annotations = Some(BTreeMap::from([(
        ANN_BACKUP.into(),
        serde_json::to_string(&legacy()).unwrap(),
    )]));
    let note = stale_claim_note(&c, "rbd").unwrap();
    assert!(
        note.contains("ignored") && note.contains(&format!("pvc-{CLAIM_UID}")),
        "{note}"
    );
    assert_eq!(stale_claim_note(&c, "other-class"), None);
    c.metadata.annotations = Some(BTreeMap::from([(ANN_BACKUP.into(), "{".into())]));
    c.spec.as_mut().unwrap().storage_class_name = Some("rbd".into());
    assert!(stale_claim_note(&c, "rbd").is_some());
}

#[test]
fn pods_that_use_a_claim() {
    let pod = |name: &str, volume: Volume, phase: &str| Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(PodSpec {
            volumes: Some(vec![volume]),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }),
    };
    let direct = |claim: &str| Volume {
        name: "v".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: None,
        }),
        ..Default::default()
    };
    let ephemeral = |name: &str| Volume {
        name: name.into(),
        ephemeral: Some(EphemeralVolumeSource::default()),
        ..Default::default()
    };
    let named = |name: &str| {
        let mut c = claim("Bound");
        c.metadata.name = Some(name.into());
        c
    };
    let pods = vec![
        pod("web-1", direct("data"), "Running"),
        pod("web-0", direct("data"), "Pending"),
        pod("job", direct("data"), "Succeeded"),
        pod("crashed", direct("data"), "Failed"),
        pod("other", direct("logs"), "Running"),
        pod("eph", ephemeral("scratch"), "Running"),
        pod("owner", Volume::default(), "Pending"),
        Pod::default(),
    ];
    assert_eq!(pods_using(&pods, &named("data")), vec!["web-0", "web-1"]);
    assert!(pods_using(&pods, &named("nothing")).is_empty());
    // A generic ephemeral volume's claim is `<pod>-<volume>`, owned by the pod.
    assert_eq!(pods_using(&pods, &named("eph-scratch")), vec!["eph"]);
    let mut owned = named("owner-cache");
    owned.metadata.owner_references = Some(vec![OwnerReference {
        kind: "Pod".into(),
        name: "owner".into(),
        uid: "uid-owner".into(),
        controller: Some(true),
        ..Default::default()
    }]);
    assert_eq!(pods_using(&pods, &owned), vec!["owner"]);
}
