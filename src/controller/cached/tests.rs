//! What the caches keep of claims and volumes, and what they drop.

use super::*;
use domain::claim::{ANN_SELECTED_NODE, ANN_STORAGE_CLASS_BETA, Bindable, ClaimAction};
use domain::params::Flavor;
use domain::volume::{
    ANN_ADMIN_ID, ANN_ADMIN_SECRET, ANN_IMAGE, ANN_MONITORS, ANN_POOL, ANN_PROVISIONED_BY,
    FINALIZER,
};
use domain::{clone, fixtures, provision_plan, reclaim, resize};
use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ObjectReference, TypedLocalObjectReference, TypedObjectReference,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelectorRequirement, ManagedFieldsEntry, OwnerReference, Time,
};

const ME: &str = "ceph.com/rbd";
pub(super) const UID: &str = "4f0d2c1e-0b7a-4c3e-9d55-8d1c2a6f1e01";
const KIB: usize = 1024;

fn quantity(q: &str) -> BTreeMap<String, Quantity> {
    BTreeMap::from([("storage".to_string(), Quantity(q.into()))])
}

/// What a claim's owner (or another tool) adds that no decision reads: a 250 KiB
/// annotation, 500 labels, owner references, finalizers, managedFields, resource limits
/// and a volume attributes class.
fn with_ballast<K: CachedKind>(mut obj: K) -> K {
    let m = obj.meta_mut();
    m.annotations.get_or_insert_default().extend([
        ("example.com/ballast".to_string(), "x".repeat(250 * KIB)),
        (
            "kubectl.kubernetes.io/last-applied-configuration".to_string(),
            "{}".repeat(2 * KIB),
        ),
    ]);
    m.labels = Some(
        (0..500)
            .map(|i| (format!("team.example.com/label-{i}"), format!("value-{i}")))
            .collect(),
    );
    m.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: "db".into(),
        uid: "owner-uid".into(),
        ..Default::default()
    }]);
    m.finalizers
        .get_or_insert_default()
        .push("example.com/keep".into());
    m.managed_fields = Some(vec![ManagedFieldsEntry {
        manager: Some("kubectl".into()),
        ..Default::default()
    }]);
    m.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    m.generate_name = Some("data-".into());
    obj
}

fn claim_ballast(mut c: PersistentVolumeClaim) -> PersistentVolumeClaim {
    let spec = c.spec.get_or_insert_default();
    spec.volume_attributes_class_name = Some("gold".into());
    spec.resources.get_or_insert_default().limits = Some(quantity("8Gi"));
    with_ballast(c)
}

/// Claim default/data, 1Gi ReadWriteOnce of class `fast`, handed over to us.
fn claim() -> PersistentVolumeClaim {
    let mut c = fixtures::claim("default", "data", UID, Some("Pending"));
    c.metadata.annotations = fixtures::map(&[
        (claim::ANN_STORAGE_PROVISIONER, ME),
        (claim::ANN_STORAGE_PROVISIONER_BETA, ME),
    ]);
    let spec = c.spec.as_mut().unwrap();
    spec.storage_class_name = Some("fast".into());
    spec.access_modes = Some(vec!["ReadWriteOnce".into()]);
    spec.resources = Some(VolumeResourceRequirements {
        requests: Some(quantity("1Gi")),
        limits: None,
    });
    c
}

/// Claims each of whose decisions turns on something the cache keeps.
pub(super) fn claims() -> Vec<(&'static str, PersistentVolumeClaim)> {
    let mut out = vec![("handed over", claim())];
    let mut c = claim();
    c.metadata.annotations = None;
    out.push(("not handed over yet", c));
    let mut c = claim();
    c.metadata.annotations = fixtures::map(&[(claim::ANN_STORAGE_PROVISIONER, "x.test/rbd")]);
    out.push(("handed to another", c));
    let mut c = claim();
    c.spec.as_mut().unwrap().storage_class_name = None;
    c.metadata.annotations = fixtures::map(&[(ANN_STORAGE_CLASS_BETA, "slow")]);
    out.push(("class by the beta annotation, not handed over", c));
    for class in ["slow", "theirs", "missing"] {
        let mut c = claim();
        c.spec.as_mut().unwrap().storage_class_name = Some(class.into());
        out.push((class, c));
    }
    let mut c = claim();
    c.spec.as_mut().unwrap().storage_class_name = Some("slow".into());
    c.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ANN_SELECTED_NODE.into(), "node-1".into());
    out.push(("waiting for a first consumer, scheduled", c));
    let mut c = claim();
    c.spec.as_mut().unwrap().selector = Some(LabelSelector {
        match_labels: Some(
            (0..200)
                .map(|i| (format!("k{i}"), "v".repeat(60)))
                .collect(),
        ),
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "tier".into(),
            operator: "In".into(),
            values: Some((0..2000).map(|i| format!("value-{i}")).collect()),
        }]),
    });
    out.push(("a large selector", c.clone()));
    c.metadata.annotations = None;
    out.push(("a large selector, not handed over", c));
    let mut c = claim();
    c.spec.as_mut().unwrap().selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::new()),
        match_expressions: None,
    });
    // Handed over, an empty selector decides nothing.
    c.metadata.annotations = None;
    out.push(("an empty selector, not handed over", c));
    let mut c = claim();
    c.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    out.push(("being deleted", c));
    let mut c = claim();
    let spec = c.spec.as_mut().unwrap();
    spec.access_modes = Some(
        std::iter::repeat_n("ReadWriteOnce".to_string(), 5000)
            .chain(["ReadOnlyMany".to_string(), "ReadWriteOnce".to_string()])
            .collect(),
    );
    out.push(("repeated access modes", c.clone()));
    c.spec.as_mut().unwrap().access_modes = Some(vec![
        "ReadWriteOnce".into(),
        "ReadWriteMany".into(),
        "ReadWriteMany".into(),
    ]);
    out.push(("ReadWriteMany", c.clone()));
    c.spec.as_mut().unwrap().volume_mode = Some("Block".into());
    out.push(("ReadWriteMany Block", c));
    let mut c = claim();
    c.spec
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .requests = Some(BTreeMap::from([
        ("storage".to_string(), Quantity("0".into())),
        ("example.com/other".to_string(), Quantity("1".into())),
    ]));
    out.push(("zero size", c));
    let mut c = claim();
    c.spec.as_mut().unwrap().data_source = Some(TypedLocalObjectReference {
        api_group: None,
        kind: "PersistentVolumeClaim".into(),
        name: "source".into(),
    });
    out.push(("a clone", c.clone()));
    c.spec.as_mut().unwrap().data_source = Some(TypedLocalObjectReference {
        api_group: Some("snapshot.storage.k8s.io".into()),
        kind: "VolumeSnapshot".into(),
        name: "snap".into(),
    });
    out.push(("from a snapshot", c));
    let mut c = claim();
    c.spec.as_mut().unwrap().data_source_ref = Some(TypedObjectReference {
        api_group: Some("example.com".into()),
        kind: "Widget".into(),
        name: "w".into(),
        namespace: Some("elsewhere".into()),
    });
    out.push(("a populator's", c));
    // Bound to the volume of `ours`, asking for more than it has: a resize.
    let mut c = claim();
    c.spec.as_mut().unwrap().volume_name = Some(format!("pvc-{UID}"));
    c.spec
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .requests = Some(quantity("2Gi"));
    c.status.as_mut().unwrap().phase = Some("Bound".into());
    c.status.as_mut().unwrap().capacity = Some(quantity("1Gi"));
    out.push(("bound, grown", c.clone()));
    c.spec
        .as_mut()
        .unwrap()
        .resources
        .as_mut()
        .unwrap()
        .requests = Some(quantity("512Mi"));
    c.status.as_mut().unwrap().capacity = Some(quantity("512Mi"));
    out.push(("bound, shrunk", c));
    out
}

fn class(name: &str, provisioner: &str, mode: Option<&str>) -> StorageClass {
    let mut c = fixtures::storage_class(provisioner, fixtures::RBD_PARAMS);
    c.metadata.name = Some(name.into());
    c.volume_binding_mode = mode.map(Into::into);
    c.allow_volume_expansion = Some(true);
    c
}

/// The classes of the cluster the claims are decided in; `missing` is not one of them.
fn classes() -> Vec<StorageClass> {
    vec![
        class("fast", ME, None),
        class("slow", ME, Some("WaitForFirstConsumer")),
        class("theirs", "x.test/rbd", None),
    ]
}

/// Our PV pvc-<UID>, 1Gi of class `fast`, bound to the claim, with what we record on it.
fn ours(phase: &str) -> PersistentVolume {
    let image = format!("kubernetes-dynamic-pvc-{UID}");
    let mut pv = fixtures::rbd_pv(
        &format!("pvc-{UID}"),
        ("kube", &image),
        &[
            (ANN_PROVISIONED_BY, ME),
            (ANN_MONITORS, "10.0.0.1:6789"),
            (ANN_POOL, "kube"),
            (ANN_IMAGE, &image),
            (ANN_ADMIN_ID, "boss"),
            (ANN_ADMIN_SECRET, "kube-system/ceph-admin"),
        ],
        Some(phase),
    );
    pv.metadata.uid = Some("pv-uid".into());
    pv.metadata.resource_version = Some("42".into());
    pv.metadata.finalizers = Some(vec![FINALIZER.into(), "kubernetes.io/pv-protection".into()]);
    let spec = pv.spec.as_mut().unwrap();
    spec.storage_class_name = Some("fast".into());
    spec.persistent_volume_reclaim_policy = Some("Delete".into());
    spec.capacity = Some(quantity("1Gi"));
    spec.access_modes = Some(vec!["ReadWriteOnce".into()]);
    spec.rbd.as_mut().unwrap().monitors = vec!["10.0.0.1:6789".into()];
    spec.claim_ref = Some(ObjectReference {
        namespace: Some("default".into()),
        name: Some("data".into()),
        uid: Some(UID.into()),
        ..Default::default()
    });
    pv
}

/// PVs each of whose decisions turns on something the cache keeps.
pub(super) fn volumes() -> Vec<(&'static str, PersistentVolume)> {
    let mut out = vec![("bound", ours("Bound")), ("released", ours("Released"))];
    // With the records of where its image was made, a bound volume needs no recording;
    // without them it does (reclaim::decide): the cache must keep them.
    let mut recorded = ours("Bound");
    let a = recorded.metadata.annotations.as_mut().unwrap();
    a.insert(domain::volume::ANN_FSID.into(), "f-1".into());
    a.insert(domain::volume::ANN_POOL_ID.into(), "3".into());
    a.insert(
        domain::volume::ANN_CLUSTER_ID_SOURCE.into(),
        "ceph-fsid".into(),
    );
    out.push(("bound and recorded", recorded));
    for (what, key) in [
        ("pool edited", ANN_POOL),
        ("image edited", ANN_IMAGE),
        ("monitors edited", ANN_MONITORS),
    ] {
        let mut pv = ours("Released");
        pv.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(key.into(), "edited".into());
        out.push((what, pv));
    }
    for (what, key) in [
        ("no admin secret recorded", ANN_ADMIN_SECRET),
        ("no admin id recorded", ANN_ADMIN_ID),
        ("not provisioned by anyone", ANN_PROVISIONED_BY),
    ] {
        let mut pv = ours("Released");
        pv.metadata.annotations.as_mut().unwrap().remove(key);
        out.push((what, pv));
    }
    let mut pv = ours("Released");
    pv.metadata.finalizers = None;
    pv.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    out.push(("deleted, our finalizer gone", pv));
    let mut pv = ours("Bound");
    pv.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Retain".into());
    out.push(("retained, with our finalizer", pv));
    let mut pv = ours("Available");
    pv.spec.as_mut().unwrap().claim_ref = None;
    out.push(("available", pv));
    let mut pv = fixtures::rbd_pv(
        "pvc-0b92a433",
        ("kube", "kubernetes-dynamic-pvc-5a6c7e52"),
        &[(ANN_PROVISIONED_BY, ME), (ANN_LEGACY_IDENTITY, ME)],
        Some("Released"),
    );
    let spec = pv.spec.as_mut().unwrap();
    spec.persistent_volume_reclaim_policy = Some("Delete".into());
    spec.storage_class_name = Some("fast".into());
    out.push(("the old provisioner's", pv));
    let mut pv = ours("Bound");
    let spec = pv.spec.as_mut().unwrap();
    let rbd = spec.rbd.take().unwrap();
    spec.csi = Some(CSIPersistentVolumeSource {
        driver: "rbd.csi.ceph.com".into(),
        volume_handle: rbd.image,
        volume_attributes: Some(BTreeMap::from([("pool".into(), "kube".into())])),
        ..Default::default()
    });
    out.push(("csi", pv));
    out
}

/// Every decision about a claim, in a cluster of [`classes`] and [`volumes`], as the
/// reconcilers make them: the class looked up by the name the claim gives.
fn claim_decisions(pvc: &PersistentVolumeClaim) -> Vec<String> {
    let classes = classes();
    let class = claim::class_name(pvc).and_then(|n| {
        classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(n))
    });
    let mut out = Vec::new();
    for provisioner in [ME, "x.test/rbd"] {
        for early in [false, true] {
            out.push(format!(
                "{:?}",
                claim::decide(pvc, class, provisioner, early)
            ));
        }
    }
    out.push(format!("{:?}", claim::handed_to(pvc).is_some()));
    for flavor in [Flavor::Rbd, Flavor::Csi] {
        for c in &classes {
            out.push(format!("{:?}", provision_plan::draft(pvc, c, flavor)));
        }
    }
    out.push(format!(
        "{:?} {:?}",
        clone::populator(pvc),
        clone::source_name(pvc)
    ));
    for (_, pv) in volumes() {
        let could = Bindable::of(&pv).is_some_and(|b| claim::could_bind(pvc, &b));
        out.push(format!("{could}"));
        for allow in [false, true] {
            out.push(format!(
                "{:?}",
                resize::decide(pvc, &pv, allow, u64::MAX, ME)
            ));
        }
        out.push(format!(
            "{:?}",
            clone::check_source("default", "data", "fast", 1 << 30, Some(pvc), Some(&pv), ME)
        ));
    }
    out
}

fn volume_decisions(pv: &PersistentVolume) -> Vec<String> {
    let mut out = Vec::new();
    for provisioner in [ME, "x.test/rbd"] {
        for gone in [false, true] {
            out.push(format!("{:?}", reclaim::decide(pv, provisioner, gone)));
        }
    }
    out.push(format!(
        "{:?} {:?} {:?} {:?} {:?}",
        reclaim::target(pv),
        reclaim::has_finalizer(pv),
        reclaim::is_legacy(pv),
        reclaim::spec_image(pv),
        Bindable::of(pv),
    ));
    out.push(format!(
        "{:?}",
        reclaim::is_volume_of(
            pv,
            ME,
            UID,
            ("kube", &format!("kubernetes-dynamic-pvc-{UID}"))
        )
    ));
    for (_, c) in claims() {
        out.push(format!("{:?}", resize::decide(&c, pv, true, u64::MAX, ME)));
        out.push(format!(
            "{:?}",
            clone::check_source("default", "data", "fast", 1 << 30, Some(&c), Some(pv), ME)
        ));
    }
    // The finalizer patch writes back the others, with the resourceVersion.
    out.push(format!(
        "{:?} {:?}",
        pv.metadata.finalizers, pv.metadata.resource_version
    ));
    out
}

/// The object a reconcile gets from the cache.
fn rebuilt<K: CachedKind>(full: &K) -> K {
    let from_json: Cached<K> = serde_json::from_value(serde_json::to_value(full).unwrap()).unwrap();
    from_json.object().unwrap()
}

#[test]
fn decisions_on_a_cached_claim_are_those_on_the_claim() {
    let mut seen = std::collections::HashMap::new();
    for (what, c) in claims() {
        let full = claim_ballast(c.clone());
        let want = claim_decisions(&c);
        assert_eq!(
            claim_decisions(&full),
            want,
            "{what}: the ballast decides nothing"
        );
        assert_eq!(claim_decisions(&rebuilt(&full)), want, "{what}");
        // Each claim decides otherwise than the others: none of them is there for nothing.
        if let Some(other) = seen.insert(want, what) {
            panic!("{what} decides as {other} does");
        }
    }
}

#[test]
fn decisions_on_a_cached_volume_are_those_on_the_volume() {
    let mut seen = std::collections::HashMap::new();
    for (what, pv) in volumes() {
        let full = with_ballast(pv.clone());
        let want = volume_decisions(&full);
        assert_eq!(volume_decisions(&rebuilt(&full)), want, "{what}");
        if let Some(other) = seen.insert(want, what) {
            panic!("{what} decides as {other} does");
        }
    }
}

#[test]
fn every_annotation_a_decision_reads_survives() {
    let mut c = claim_ballast(claim());
    let read = [
        (claim::ANN_STORAGE_PROVISIONER, "a.test/rbd"),
        (claim::ANN_STORAGE_PROVISIONER_BETA, "b.test/rbd"),
        (ANN_SELECTED_NODE, "node-1"),
        (ANN_STORAGE_CLASS_BETA, "fast"),
    ];
    c.metadata
        .annotations
        .as_mut()
        .unwrap()
        .extend(read.map(|(k, v)| (k.to_string(), v.to_string())));
    assert_eq!(
        rebuilt(&c).metadata.annotations,
        fixtures::map(&read),
        "exactly those a decision reads"
    );

    let pv = with_ballast(ours("Released"));
    let mut kept = ours("Released").metadata.annotations.unwrap();
    assert_eq!(rebuilt(&pv).metadata.annotations.as_ref(), Some(&kept));
    let mut legacy = with_ballast(ours("Released"));
    legacy
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ANN_LEGACY_IDENTITY.into(), ME.into());
    kept.insert(ANN_LEGACY_IDENTITY.into(), ME.into());
    assert_eq!(rebuilt(&legacy).metadata.annotations, Some(kept));
    assert_eq!(
        rebuilt(&pv).metadata.finalizers,
        pv.metadata.finalizers,
        "every finalizer of a PV: remove_finalizer writes them back"
    );
}

#[test]
fn a_claim_with_a_large_annotation_and_many_labels_is_cached_small() {
    let full = claim_ballast(claim());
    let sent = serde_json::to_vec(&full).unwrap().len();
    assert!(sent > 250 * KIB, "{sent}");
    let c = Cached::new(full).unwrap();
    assert!(c.json_len() < 512, "{} bytes", c.json_len());
    let back = c.object().unwrap();
    assert_eq!(back.metadata.labels, None);
    assert_eq!(back.metadata.owner_references, None);
    assert_eq!(back.metadata.finalizers, None);
    assert_eq!(back.metadata.managed_fields, None);

    // A selector, and repeated access modes, of the owner's choosing.
    for (what, c) in claims() {
        let c = Cached::new(claim_ballast(c)).unwrap();
        assert!(c.json_len() < 1024, "{what}: {} bytes", c.json_len());
    }
}

#[test]
fn an_overlong_value_of_a_kept_annotation_is_not_kept_and_decides_the_same() {
    let long = "x".repeat(200 * KIB);
    for key in [
        claim::ANN_STORAGE_PROVISIONER,
        claim::ANN_STORAGE_PROVISIONER_BETA,
        ANN_SELECTED_NODE,
        ANN_STORAGE_CLASS_BETA,
    ] {
        let mut c = claim();
        c.spec.as_mut().unwrap().storage_class_name = Some("slow".into());
        if key == ANN_STORAGE_CLASS_BETA {
            c.spec.as_mut().unwrap().storage_class_name = None;
        }
        c.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(key.into(), long.clone());
        let back = rebuilt(&c);
        let value = &back.metadata.annotations.as_ref().unwrap()[key];
        assert_eq!(value, "(204800 bytes, not kept)");
        assert!(Cached::new(c.clone()).unwrap().json_len() < 1024);
        if key == ANN_STORAGE_CLASS_BETA {
            // The same decisions, whose messages may name the class.
            let kind = |c: &PersistentVolumeClaim| {
                claim_decisions(c)
                    .into_iter()
                    .map(|d| d.split(['(', '{']).next().unwrap().to_string())
                    .collect::<Vec<_>>()
            };
            assert_eq!(kind(&back), kind(&c), "{key}");
        } else {
            assert_eq!(claim_decisions(&back), claim_decisions(&c), "{key}");
        }
    }
    let mut c = claim();
    c.spec.as_mut().unwrap().storage_class_name = None;
    c.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(ANN_STORAGE_CLASS_BETA.into(), long);
    assert!(matches!(
        claim::decide(&rebuilt(&c), None, ME, false),
        ClaimAction::Wait(why) if why.contains("(204800 bytes, not kept)")
    ));
}

#[test]
fn the_store_keeps_identity_and_deletion_only() {
    let mut pv = with_ballast(ours("Released"));
    pv.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    let c = Cached::new(pv.clone()).unwrap();
    let m = c.meta();
    assert_eq!(
        (&m.name, &m.namespace, &m.uid, &m.resource_version),
        (
            &pv.metadata.name,
            &pv.metadata.namespace,
            &pv.metadata.uid,
            &pv.metadata.resource_version
        )
    );
    assert!(m.deletion_timestamp.is_some());
    assert!(m.annotations.is_none() && m.finalizers.is_none() && m.labels.is_none());
    assert!(std::mem::size_of::<Cached<PersistentVolume>>() < 1024);
    assert!(std::mem::size_of::<PersistentVolume>() > 3 * 1024);
}
