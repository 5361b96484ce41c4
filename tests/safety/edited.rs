//! Objects someone else edited, copied or placed: a pool renamed away, our annotations
//! pointed elsewhere, a copied PV, a PV squatting on our name. None of them may destroy an
//! image that is not provably theirs, nor pass for our volume.

use super::*;

/// After a pool rename the PV's pool no longer exists: that is not "the image is gone".
#[tokio::test]
async fn a_missing_pool_never_counts_as_a_deleted_image() {
    let c = Scenario::new("poolgone").await;
    let (pool, class) = c.own_pool("rbdp-pool").await;
    let renamed = format!("{pool}-renamed");
    let (_claim, uid) = c.bound(&class, "data", "64Mi").await;
    let pv = format!("pvc-{uid}");
    let image = format!("kubernetes-dynamic-pvc-{uid}");
    cli(&c.bed, "ceph", &["osd", "pool", "rename", &pool, &renamed]);

    c.delete_claim("data").await;
    // Handled twice (the first attempt and a retry): time enough to have deleted the PV.
    wait_for("two attempts at the deletion", T, || async {
        let deleted = c.prov.logs().contains("deleted volume");
        (deletion_attempts(&c, &pv) >= 2 || deleted).then_some(())
    })
    .await;
    let still = c.pvs().get_opt(&pv).await.unwrap();
    assert!(
        still.is_some(),
        "the PV must stay while its image is unaccounted for"
    );
    assert!(
        rbd_ls(&c.bed, &renamed).contains(&image),
        "the image was not touched"
    );
    let msg = wait_pv_event(&c.admin, &pv, "VolumeFailedDelete", "pool", T).await;
    assert!(msg.contains("does not exist"), "{msg}");

    // Once the pool is back the deletion completes by itself.
    cli(&c.bed, "ceph", &["osd", "pool", "rename", &renamed, &pool]);
    c.wait_pv_gone(&uid).await;
    assert!(!rbd_ls(&c.bed, &pool).contains(&image));
    remove_pool(&c.bed, &pool);
}

/// Our annotations are mutable; someone who can edit a PV must not be able to point its
/// deletion at another claim's image.
#[tokio::test]
async fn edited_annotations_cannot_redirect_a_deletion() {
    let c = Scenario::new("redirect").await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (_a, a_uid) = c.bound(&class, "attacker", "64Mi").await;
    let (_b, b_uid) = c.bound(&class, "victim", "64Mi").await;
    let a_pv = format!("pvc-{a_uid}");
    let victim_image = format!("kubernetes-dynamic-pvc-{b_uid}");
    c.pvs()
        .patch(
            &a_pv,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "rbd-provisioner.ceph.com/image": victim_image,
            }}})),
        )
        .await
        .unwrap();
    c.delete_claim("attacker").await;
    wait_for("the deletion handled", T, || async {
        (deletion_attempts(&c, &a_pv) > 0).then_some(())
    })
    .await;
    assert!(
        rbd_ls(&c.bed, "kube").contains(&victim_image),
        "victim's image destroyed"
    );
    let msg = wait_pv_event(&c.admin, &a_pv, "VolumeFailedDelete", "edited", T).await;
    assert!(msg.contains(&victim_image), "{msg}");
    assert!(c.pvs().get_opt(&a_pv).await.unwrap().is_some());

    // Restored, the deletion of the attacker's own volume goes ahead.
    c.pvs()
        .patch(
            &a_pv,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "rbd-provisioner.ceph.com/image": format!("kubernetes-dynamic-pvc-{a_uid}"),
            }}})),
        )
        .await
        .unwrap();
    c.wait_pv_gone(&a_uid).await;
    assert!(rbd_ls(&c.bed, "kube").contains(&victim_image));
    c.delete_claim("victim").await;
    c.wait_pv_gone(&b_uid).await;
}

/// A copy of a bound PV (same spec, our finalizer and annotations, another name), deleted
/// while unbound, must not take the original's image with it.
#[tokio::test]
async fn a_copied_pv_cannot_delete_the_original_image() {
    let c = Scenario::new("copy").await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (_claim, uid) = c.bound(&class, "data", "64Mi").await;
    let image = format!("kubernetes-dynamic-pvc-{uid}");
    let original = c.pvs().get(&format!("pvc-{uid}")).await.unwrap();
    let copy_name = format!("pvc-{}", unique("copy"));
    let mut copy = PersistentVolume {
        metadata: kube::api::ObjectMeta {
            name: Some(copy_name.clone()),
            annotations: original.metadata.annotations.clone(),
            finalizers: Some(vec![FINALIZER.into()]),
            ..Default::default()
        },
        spec: original.spec.clone(),
        status: None,
    };
    let spec = copy.spec.as_mut().unwrap();
    spec.claim_ref = None;
    // Not in the class: nothing may bind to the copy meanwhile.
    spec.storage_class_name = Some(unique("no-class"));
    c.pvs().create(&PostParams::default(), &copy).await.unwrap();
    c.pvs()
        .delete(&copy_name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the copy's deletion handled", T, || async {
        (deletion_attempts(&c, &copy_name) > 0).then_some(())
    })
    .await;
    assert!(
        rbd_ls(&c.bed, "kube").contains(&image),
        "the original's image was destroyed"
    );
    let msg = wait_pv_event(&c.admin, &copy_name, "VolumeFailedDelete", &image, T).await;
    assert!(msg.contains("refusing") || msg.contains("copied"), "{msg}");
    let bound = wait_bound(&c.admin, &c.ns, "data", T).await;
    assert_eq!(bound.spec.unwrap().volume_name, Some(format!("pvc-{uid}")));
    drop_finalizers(&c, &copy_name).await;
}

/// A PV that already carries our name but is not our volume is never taken for a retry.
#[tokio::test]
async fn a_pv_squatting_on_our_name_is_not_taken_for_ours() {
    let c = Scenario::new("squat").await;
    // A class of a provisioner that is not running yet, so the PV can be placed first.
    let late = format!("{}.test/rbd", unique("late"));
    let p = c.params(&[]);
    let p: Vec<(&str, &str)> = p.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let class = format!("{}-late", c.ns);
    storage_class(&c.admin, &class, &late, &p, json!({})).await;
    let claim = c.claim("data", &class).create().await;
    let uid = uid_of(&claim);
    let pv_name = format!("pvc-{uid}");
    let squatter: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "64Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": unique("elsewhere"),
            "claimRef": {"namespace": "other", "name": "other", "uid": "00000000-0000-0000-0000-000000000000"},
            "rbd": {"monitors": [c.bed.monitors], "pool": "kube", "image": "someone-elses", "user": "kube"},
        }
    }))
    .unwrap();
    c.pvs()
        .create(&PostParams::default(), &squatter)
        .await
        .unwrap();
    let prov = Provisioner::start(&c.bed, &late, &[]).await;
    let e = wait_event(
        &c.admin,
        &c.ns,
        &uid,
        "ProvisioningFailed",
        &["already exists"],
        T,
    )
    .await;
    assert!(e.note.unwrap_or_default().contains(&pv_name));
    let evs = events_for(&c.admin, &c.ns, &uid).await;
    assert!(
        !evs.iter()
            .any(|e| e.reason.as_deref() == Some("ProvisioningSucceeded")),
        "a squatter must not be reported as our volume"
    );
    drop(prov);
    c.pvs()
        .delete(&pv_name, &DeleteParams::default())
        .await
        .unwrap();
    cleanup(&c.bed, &c.admin, &c.ns, &[&claim], &["kube"]).await;
}
