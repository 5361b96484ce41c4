//! Deletion on the real bed: trash + background purge, watchers, finalizer, policies, classes
//! deleted after provisioning, and PVs of the old external-storage provisioner.

use testbed as common;

use std::time::Duration;

use ceph::{ImageSpec, RBD_FEATURE_LAYERING};
use common::*;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

async fn trash_has(ceph: &std::sync::Arc<ceph::Cluster>, image: &str) -> bool {
    ceph.trash_list("kube")
        .await
        .unwrap()
        .iter()
        .any(|e| e.name == image)
}

#[tokio::test]
async fn released_volume_is_deleted_and_purged_even_without_its_class() {
    let c = Scenario::new("del").await;
    let ceph = c.bed.ceph().await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (small, small_uid) = c.bound(&class, "small", "1Gi").await;
    let (big, big_uid) = c.bound(&class, "big", "100Gi").await;
    let pv = c.pvs().get(&format!("pvc-{small_uid}")).await.unwrap();
    assert!(
        pv.metadata
            .finalizers
            .unwrap()
            .contains(&"external-provisioner.volume.kubernetes.io/finalizer".to_string())
    );
    // The class goes away first: the PVs carry what deletion needs.
    Api::<StorageClass>::all(c.admin.clone())
        .delete(&class, &DeleteParams::default())
        .await
        .unwrap();
    for (claim, uid) in [(&small, &small_uid), (&big, &big_uid)] {
        c.delete_claim(claim.metadata.name.as_deref().unwrap())
            .await;
        c.wait_pv_gone(uid).await;
        let image = format!("kubernetes-dynamic-pvc-{uid}");
        assert!(
            !image_exists(&ceph, "kube", &image).await,
            "image removed from the pool"
        );
        assert!(!rbd_exists(&c.bed, "kube", &image), "the rbd CLI agrees");
        wait_for("trash purged", Duration::from_secs(180), || async {
            (!trash_has(&ceph, &image).await).then_some(())
        })
        .await;
        assert!(
            !rbd_trash_ls(&c.bed, "kube").contains(&image),
            "the rbd CLI sees no trash entry"
        );
        assert_led_and_acted(&c.prov, &["deleted volume", &format!("pvc-{uid}")], T).await;
    }
}

#[tokio::test]
async fn watched_image_is_not_deleted_until_released() {
    let c = Scenario::new("watch").await;
    let ceph = c.bed.ceph().await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (claim, uid) = c.bound(&class, "data", "64Mi").await;
    let image = format!("kubernetes-dynamic-pvc-{uid}");
    let held = ceph.open_read_write("kube", &image).await.unwrap();
    let watchers = ceph.watchers("kube", &image).await.unwrap();
    assert_eq!(watchers.len(), 1);
    c.delete_claim("data").await;
    let pv = format!("pvc-{uid}");
    let pv_uid = uid_of(&c.pvs().get(&pv).await.unwrap());
    let ev = wait_event(
        &c.admin,
        "default",
        &pv_uid,
        "VolumeFailedDelete",
        &["in use by", &watchers[0].addr],
        T,
    )
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert!(
        image_exists(&ceph, "kube", &image).await,
        "a watched image is kept"
    );
    assert!(rbd_exists(&c.bed, "kube", &image), "the rbd CLI agrees");
    assert!(c.pvs().get_opt(&pv).await.unwrap().is_some());
    drop(held);
    c.wait_pv_gone(&uid).await;
    assert!(!image_exists(&ceph, "kube", &image).await);
    assert!(!rbd_exists(&c.bed, "kube", &image));
    assert_led_and_acted(&c.prov, &["deleted volume", &pv], T).await;
    drop(claim);
}

#[tokio::test]
async fn finalizer_guards_bound_volumes_and_follows_the_policy() {
    let c = Scenario::new("fin").await;
    let ceph = c.bed.ceph().await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (_claim, uid) = c.bound(&class, "data", "32Mi").await;
    let (barrier, barrier_uid) = c.bound(&class, "barrier", "8Mi").await;
    let pv = format!("pvc-{uid}");
    let image = format!("kubernetes-dynamic-pvc-{uid}");
    // `kubectl delete pv` on a bound volume: it waits, and the image stays. Kubernetes' own
    // pv-protection finalizer is removed so that only ours can hold the PV.
    c.pvs().delete(&pv, &DeleteParams::default()).await.unwrap();
    let fins = c
        .pvs()
        .get(&pv)
        .await
        .unwrap()
        .metadata
        .finalizers
        .unwrap_or_default();
    assert!(
        fins.iter().any(|f| f == "kubernetes.io/pv-protection"),
        "{fins:?}"
    );
    let ours: Vec<&String> = fins
        .iter()
        .filter(|f| *f != "kubernetes.io/pv-protection")
        .collect();
    c.pvs()
        .patch(
            &pv,
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "test", "path": "/metadata/finalizers", "value": fins},
                    {"op": "replace", "path": "/metadata/finalizers", "value": ours},
                ]))
                .unwrap(),
            ),
        )
        .await
        .expect("remove pv-protection");
    // Barrier: a later event on the same PV watch (another volume deleted) that the
    // provisioner logs, so it has seen this one before we check that nothing happened.
    c.delete_claim("barrier").await;
    wait_log(
        &c.prov,
        &["deleted volume", &format!("pvc-{barrier_uid}")],
        T,
    )
    .await;
    drop(barrier);
    let still = c.pvs().get(&pv).await.expect("PV kept while bound");
    assert!(still.metadata.deletion_timestamp.is_some());
    assert_eq!(
        still.metadata.finalizers.unwrap_or_default(),
        vec!["external-provisioner.volume.kubernetes.io/finalizer".to_string()],
        "only our finalizer holds the PV"
    );
    assert!(image_exists(&ceph, "kube", &image).await);
    assert!(rbd_exists(&c.bed, "kube", &image), "the rbd CLI agrees");
    // Releasing the claim lets the provisioner finish the job.
    c.delete_claim("data").await;
    c.wait_pv_gone(&uid).await;
    assert!(!image_exists(&ceph, "kube", &image).await);
    assert!(!rbd_exists(&c.bed, "kube", &image));
    assert_led_and_acted(&c.prov, &["deleted volume", &pv], T).await;

    // Switching a volume to Retain drops our finalizer; releasing it then keeps the image.
    let (claim2, uid2) = c.bound(&class, "kept", "32Mi").await;
    let pv2 = format!("pvc-{uid2}");
    c.patch_pv(
        &pv2,
        json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}}),
    )
    .await;
    wait_for("finalizer removed", T, || async {
        let pv = c.pvs().get(&pv2).await.ok()?;
        (!pv.metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f.starts_with("external-provisioner")))
        .then_some(())
    })
    .await;
    c.delete_claim("kept").await;
    wait_log(&c.prov, &["removed our finalizer", &pv2], T).await;
    c.wait_pv_phase(&pv2, "Released", T).await;
    // Barrier, as above: a later volume's deletion, logged.
    let (_b2, b2_uid) = c.bound(&class, "barrier2", "8Mi").await;
    c.delete_claim("barrier2").await;
    wait_log(&c.prov, &["deleted volume", &format!("pvc-{b2_uid}")], T).await;
    assert!(
        c.pvs().get_opt(&pv2).await.unwrap().is_some(),
        "Retain volumes are never deleted"
    );
    assert!(image_exists(&ceph, "kube", &format!("kubernetes-dynamic-pvc-{uid2}")).await);
    assert!(rbd_exists(
        &c.bed,
        "kube",
        &format!("kubernetes-dynamic-pvc-{uid2}")
    ));
    cleanup(&c.bed, &c.admin, &c.ns, &[&claim2], &["kube"]).await;
}

#[tokio::test]
async fn claim_deleted_during_provisioning_leaves_no_image() {
    let s = Scenario::with_env(
        "race",
        &[("RBD_PROVISIONER_FAILPOINT", "sleep-after-image-create")],
    )
    .await;
    let prov = &s.prov;
    let ceph = s.bed.ceph().await;
    let class = s.class("class", &[], json!({})).await;
    let c = s.claim("data", &class).size("16Mi").create().await;
    let image = format!("kubernetes-dynamic-pvc-{}", uid_of(&c));
    wait_for("image created", T, || async {
        image_exists(&ceph, "kube", &image).await.then_some(())
    })
    .await;
    s.delete_claim("data").await;
    wait_for("image removed after the claim went", T, || async {
        (!image_exists(&ceph, "kube", &image).await).then_some(())
    })
    .await;
    assert!(!s.has_pv(&uid_of(&c)).await, "no PV written");
    assert!(!rbd_exists(&s.bed, "kube", &image), "the rbd CLI agrees");
    assert_led_and_acted(prov, &["claim deleted during provisioning", &image], T).await;
}

/// A PV exactly as the old external-storage provisioner wrote it, bound to a claim.
async fn legacy_volume(c: &Scenario, class: &str, claim_name: &str) -> (String, String) {
    let ceph = c.bed.ceph().await;
    let image = format!(
        "kubernetes-dynamic-pvc-{}",
        unique("5a6c7e52-1c8b-11e9-9d9e")
    );
    ceph.create_image(&ImageSpec {
        pool: "kube".into(),
        name: image.clone(),
        size: 32 << 20,
        data_pool: None,
        features: RBD_FEATURE_LAYERING,
    })
    .await
    .unwrap();
    let pv_name = unique("pvc-legacy");
    // Seen bound, the volume is recorded (its image stamped as this PV's): only then may it be
    // deleted. tests/trust.rs shows the refusal without it.
    bind_old_volume(c, claim_name, &pv_name, &image, class, "32Mi").await;
    (pv_name, image)
}

#[tokio::test]
async fn volumes_of_the_old_provisioner_are_deleted_through_their_class() {
    // This provisioner replaces the old one in place, under its name (ceph.com/rbd in the
    // field): here a name of this run only, so no demo or other run of the same name can act.
    let c = Scenario::new("legacy").await;
    let (admin, ceph) = (c.admin.clone(), c.bed.ceph().await);
    let class = c
        .class("old", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (pv1, image1) = legacy_volume(&c, &class, "one").await;
    let (pv2, image2) = legacy_volume(&c, &class, "two").await;

    c.delete_claim("one").await;
    wait_absent(&c.pvs(), &pv1, "legacy PV deleted", T).await;
    assert!(!image_exists(&ceph, "kube", &image1).await);
    assert!(!rbd_exists(&c.bed, "kube", &image1), "the rbd CLI agrees");
    assert_led_and_acted(&c.prov, &["deleted volume", &pv1], T).await;

    // Without its class the second one cannot be deleted: an event says how to fix it.
    Api::<StorageClass>::all(admin.clone())
        .delete(&class, &DeleteParams::default())
        .await
        .unwrap();
    c.delete_claim("two").await;
    let pv2_uid = uid_of(&c.pvs().get(&pv2).await.unwrap());
    wait_event(
        &admin,
        "default",
        &pv2_uid,
        "VolumeFailedDelete",
        &[
            "old ceph.com/rbd provisioner",
            &format!("recreate StorageClass {class}"),
        ],
        T,
    )
    .await;
    assert!(image_exists(&ceph, "kube", &image2).await);
    // Recreating the class unblocks it (the retry comes with backoff).
    c.class("old", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let why = "legacy PV deleted after the class came back";
    wait_absent(&c.pvs(), &pv2, why, Duration::from_secs(120)).await;
    assert!(!image_exists(&ceph, "kube", &image2).await);
    assert!(!rbd_exists(&c.bed, "kube", &image2));
    wait_log(&c.prov, &["deleted volume", &pv2], T).await;

    // Retain-policy legacy volumes are never touched.
    let class = c
        .class("old-retain", &[], json!({"reclaimPolicy": "Retain"}))
        .await;
    let (pv3, image3) = legacy_volume(&c, &class, "three").await;
    c.patch_pv(
        &pv3,
        json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}}),
    )
    .await;
    c.delete_claim("three").await;
    c.wait_pv_phase(&pv3, "Released", T).await;
    // Barrier: a later legacy volume of the Delete class, deleted and logged.
    let delete_class = c
        .class("old", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (pv4, _image4) = legacy_volume(&c, &delete_class, "four").await;
    c.delete_claim("four").await;
    wait_log(&c.prov, &["deleted volume", &pv4], T).await;
    assert!(c.pvs().get_opt(&pv3).await.unwrap().is_some());
    assert!(image_exists(&ceph, "kube", &image3).await);
    assert!(rbd_exists(&c.bed, "kube", &image3), "the rbd CLI agrees");
    let _ = c.pvs().delete(&pv3, &DeleteParams::default()).await;
    let _ = ceph.remove_image("kube", &image3).await;
}
