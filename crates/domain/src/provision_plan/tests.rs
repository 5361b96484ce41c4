use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::*;
use crate::params::SecretRef;
use crate::volume::ANN_PROVISIONED_BY;

const UID: &str = "4f0e2a57-9a7e-4c55-8b0c-2a1d6c1e0b11";
const ME: &str = "ceph.com/rbd";

fn claim(size: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            namespace: Some("apps".into()),
            name: Some("data".into()),
            uid: Some(UID.into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some("fast".into()),
            resources: Some(VolumeResourceRequirements {
                requests: size
                    .map(|s| BTreeMap::from([("storage".to_string(), Quantity(s.into()))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn class(pairs: &[(&str, &str)]) -> StorageClass {
    crate::fixtures::storage_class(ME, pairs)
}

fn rbd_class() -> StorageClass {
    class(crate::fixtures::RBD_PARAMS)
}

fn rbd_plan() -> Plan {
    draft(&claim(Some("1Gi")), &rbd_class(), Flavor::Rbd)
        .unwrap()
        .plan(None, None)
}

#[test]
fn a_draft_is_named_after_the_claim_uid() {
    let d = draft(&claim(Some("1500Mi")), &rbd_class(), Flavor::Rbd).unwrap();
    assert_eq!(d.pv_name, format!("pvc-{UID}"));
    assert_eq!(d.image, format!("kubernetes-dynamic-pvc-{UID}"));
    assert_eq!(d.claim_label(), "apps/data");
    assert_eq!(d.class_name, "fast");
    assert_eq!(d.flavor, Flavor::Rbd);
    assert_eq!(d.claim.size, 1500 << 20);
    assert_eq!(d.clone_of, None);
    // The class's own flavour wins over the default.
    let mut csi = rbd_class();
    if let Some(p) = csi.parameters.as_mut() {
        p.insert("volumeFlavor".into(), "csi".into());
    }
    let d = draft(&claim(Some("1Gi")), &csi, Flavor::Rbd).unwrap();
    assert_eq!(d.flavor, Flavor::Csi);
}

#[test]
fn a_broken_claim_is_reported_before_a_broken_class() {
    let broken = class(&[("monitors", "10.0.0.1:6789")]);
    assert_eq!(
        draft(&claim(None), &broken, Flavor::Rbd),
        Err(Invalid::Claim(ClaimError::NoSize))
    );
    assert!(matches!(
        draft(&claim(Some("1Gi")), &broken, Flavor::Rbd),
        Err(Invalid::Params(_))
    ));
    let mut from_elsewhere = claim(Some("1Gi"));
    if let Some(s) = from_elsewhere.spec.as_mut() {
        s.data_source = Some(k8s_openapi::api::core::v1::TypedLocalObjectReference {
            api_group: Some("snapshot.example.io".into()),
            kind: "VolumeSnapshot".into(),
            name: "snap".into(),
        });
    }
    assert!(matches!(
        draft(&from_elsewhere, &rbd_class(), Flavor::Rbd),
        Err(Invalid::Clone(CloneError::Kind(_)))
    ));
}

#[test]
fn only_our_own_pv_answers_the_claim() {
    let plan = rbd_plan();
    let ours = plan.pv(&rbd_class(), None, ME, None);
    assert_eq!(plan.draft.answered_by(&ours, ME), Ok(()));

    let mut foreign = ours.clone();
    if let Some(a) = foreign.metadata.annotations.as_mut() {
        a.insert(ANN_PROVISIONED_BY.into(), "example.com/other".into());
    }
    assert!(matches!(
        plan.draft.answered_by(&foreign, ME),
        Err(NotTheVolume::ProvisionedBy { .. })
    ));

    let mut other_claim = ours;
    if let Some(r) = other_claim.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
        r.uid = Some("another-uid".into());
    }
    assert_eq!(
        plan.draft.answered_by(&other_claim, ME),
        Err(NotTheVolume::ClaimUid("another-uid".into()))
    );
}

#[test]
fn the_pv_and_stamp_follow_the_plan() {
    let plan = rbd_plan();
    let place = crate::owner::Place {
        fsid: "f-1".into(),
        pool_id: 7,
    };
    let pv = plan.pv(&rbd_class(), None, ME, Some(&place));
    assert_eq!(pv.metadata.name.as_deref(), Some(&*format!("pvc-{UID}")));
    let ann = pv.metadata.annotations.as_ref().unwrap();
    assert_eq!(
        (
            ann[crate::volume::ANN_FSID].as_str(),
            ann[crate::volume::ANN_POOL_ID].as_str()
        ),
        ("f-1", "7")
    );
    let rbd = pv.spec.as_ref().and_then(|s| s.rbd.as_ref()).unwrap();
    assert_eq!(rbd.pool.as_deref(), Some("kube"));
    assert_eq!(rbd.image, format!("kubernetes-dynamic-pvc-{UID}"));
    let stamp = plan.stamp(1_700_000_000, place.clone());
    assert_eq!(stamp.place, Some(place));
    assert_eq!(stamp.pv_state, crate::owner::PvState::None);
    assert_eq!(stamp.pv, format!("pvc-{UID}"));
    assert_eq!(
        (stamp.claim_namespace.as_str(), stamp.claim_name.as_str()),
        ("apps", "data")
    );
    assert_eq!(stamp.claim_uid, UID);
    assert_eq!(stamp.created, 1_700_000_000);
}

#[test]
fn the_csi_cluster_id_comes_from_the_class_or_else_from_ceph() {
    let stage = NodeStage::Companion(SecretRef {
        namespace: "apps".into(),
        name: "ceph-user-csi".into(),
    });
    assert!(!rbd_plan().needs_fsid());
    assert_eq!(rbd_plan().csi(None), None);

    let d = draft(&claim(Some("1Gi")), &rbd_class(), Flavor::Csi).unwrap();
    let plan = d.clone().plan(None, Some(stage.clone()));
    assert!(plan.needs_fsid());
    let csi = plan.csi(Some("fsid-1".into())).unwrap();
    assert_eq!(csi.cluster_id, ClusterId::Fsid("fsid-1".into()));
    assert_eq!(csi.node_stage_secret.name, "ceph-user-csi");

    let mut named = d;
    named.params.cluster_id = Some("east".into());
    let plan = named.plan(None, Some(stage));
    assert!(!plan.needs_fsid());
    assert_eq!(
        plan.csi(None).unwrap().cluster_id,
        ClusterId::Class("east".into())
    );
}

/// Integration tests and operators read this text: it must not drift.
#[test]
fn the_success_message_reads_as_before() {
    assert_eq!(
        rbd_plan().succeeded(None),
        format!(
            "Successfully provisioned volume pvc-{UID}: image kube/kubernetes-dynamic-pvc-{UID}, 1024 MiB, in-tree rbd volume source"
        )
    );
    let d = draft(&claim(Some("2Gi")), &rbd_class(), Flavor::Csi).unwrap();
    let source = clone::CloneSource {
        pv: "pvc-src".into(),
        pool: "kube".into(),
        image: "kubernetes-dynamic-pvc-src".into(),
        size: 1 << 30,
        recorded: None,
        snap: None,
    };
    let stage = NodeStage::Companion(SecretRef {
        namespace: "apps".into(),
        name: "ceph-user-csi".into(),
    });
    let plan = d.plan(Some(source), Some(stage));
    let csi = plan.csi(Some("fsid-1".into()));
    assert_eq!(
        plan.succeeded(csi.as_ref()),
        format!(
            "Successfully provisioned volume pvc-{UID}: image kube/kubernetes-dynamic-pvc-{UID} (clone of kube/kubernetes-dynamic-pvc-src), 2048 MiB, ceph-csi static volume, clusterID fsid-1 (the Ceph cluster's fsid: the class has no clusterID), node-stage secret apps/ceph-user-csi"
        )
    );
}

#[test]
fn a_claim_deleted_replaced_or_being_deleted_is_gone() {
    let c = claim(Some("1Gi"));
    assert!(!claim_withdrawn(Some(&c), UID));
    assert!(claim_withdrawn(None, UID));
    assert!(claim_withdrawn(Some(&c), "the-uid-of-a-newer-claim"));
    let mut deleting = c;
    deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    assert!(claim_withdrawn(Some(&deleting), UID));
}
