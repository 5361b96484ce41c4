//! Retain means kept, and stale or moved facts never destroy anything: each case reproduced on
//! the real bed (the fault first, then the proof), judged with the `rbd` and `ceph` CLIs and
//! the API server rather than the code under test. Crash and stall points come from the
//! `failpoints` feature, which test builds have (src/failpoint.rs).

use testbed as common;

use std::time::Duration;

use common::*;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(90);

async fn delete_claim_and_wait(c: &Scenario, name: &str) {
    c.delete_claim(name).await;
    wait_absent(&c.pvcs(), name, &format!("claim {name} gone"), T).await;
}

/// `audit --json` of this scenario's provisioner and `class`.
fn audit_of(c: &Scenario, class: &str) -> serde_json::Value {
    audit(
        &c.bed,
        env!("CARGO_BIN_EXE_rbd-provisioner").as_ref(),
        &c.name,
        class,
    )
}

/// The audit's entry for orphaned image `image`, if it has one.
fn orphan_entry(report: &serde_json::Value, image: &str) -> Option<serde_json::Value> {
    report["orphaned_images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["image"] == image)
        .cloned()
}

/// A provisioner that exits (code 86) at `failpoint` while it provisions claim `data` of a
/// Delete class; the scenario, the class, and the claim's uid and image.
async fn died_at(prefix: &str, failpoint: &str) -> (Scenario, String, String, String) {
    let mut c = Scenario::with_env(prefix, &[("RBD_PROVISIONER_FAILPOINT", failpoint)]).await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let uid = uid_of(&c.claim("data", &class).create().await);
    let st = c.prov.wait_exit(T).await;
    assert_eq!(st.code(), Some(86), "{}", c.prov.logs());
    let image = image_of(&uid);
    (c, class, uid, image)
}

/// A claim of a Delete class deleted while the provisioner stalls at `failpoint`, deciding
/// on its PV's deletion; meanwhile the PV is set to Retain, and the provisioner says it kept
/// the volume. The scenario, the PV and the image.
async fn retained_while_stalled_at(prefix: &str, failpoint: &str) -> (Scenario, String, String) {
    let c = Scenario::with_env(prefix, &[("RBD_PROVISIONER_FAILPOINT", failpoint)]).await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (_claim, uid) = c.bound(&class, "data", "64Mi").await;
    let (pv, image) = (format!("pvc-{uid}"), image_of(&uid));
    c.delete_claim("data").await;
    wait_log(&c.prov, &[&format!("failpoint {failpoint}"), &pv], T).await;
    let retain = json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}});
    c.patch_pv(&pv, retain).await;
    let kept = "reclaim policy is not Delete: removed our finalizer";
    wait_log(&c.prov, &[kept, &pv], T).await;
    (c, pv, image)
}

fn housekeeping_every_second() -> [(&'static str, &'static str); 2] {
    [("MAINTENANCE_INTERVAL", "1"), ("ORPHAN_GRACE", "1")]
}

/// The critical case of the review: an operator keeps a Retain volume's data by deleting its
/// Released PV. The image had a PV, so housekeeping never takes it, however old; `audit`
/// lists it as kept, with the command that would remove it.
#[tokio::test]
async fn a_retain_volume_whose_pv_an_operator_deleted_is_kept() {
    let c = Scenario::with_env("keep", &housekeeping_every_second()).await;
    let class = c
        .class("retain", &[], json!({"reclaimPolicy": "Retain"}))
        .await;
    let (_claim, uid) = c.bound(&class, "data", "64Mi").await;
    let (pv, image) = (format!("pvc-{uid}"), image_of(&uid));
    delete_claim_and_wait(&c, "data").await;
    // As the operator would: the Released PV goes, the data stays.
    c.pvs().delete(&pv, &DeleteParams::default()).await.unwrap();
    c.wait_pv_gone(&uid).await;
    more_passes(&c.prov, 3, T).await;
    assert!(
        rbd_ls(&c.bed, "kube").contains(&image),
        "the image was kept"
    );
    assert!(!rbd_trash_ls(&c.bed, "kube").contains(&image));
    assert_eq!(
        image_meta(&c.bed, &format!("kube/{image}"))["rbd-provisioner.ceph.com/pv-state"],
        "written"
    );

    let report = audit_of(&c, &class);
    let kept = orphan_entry(&report, &image).unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(kept["status"], "kept: PV gone", "{kept:#}");
    assert!(
        kept["remove"]
            .as_str()
            .unwrap()
            .contains(&format!("rbd rm kube/{image}")),
        "{kept:#}"
    );
    cli(&c.bed, "rbd", &["rm", &format!("kube/{image}")]);
}

/// A process killed between creating an image and stamping it leaves an image only its intent
/// record proves ours: the next process stamps it from the record, and, its claim gone and no
/// PV ever written, collects it.
#[tokio::test]
async fn an_image_created_but_never_stamped_is_found_and_collected() {
    let (mut c, _, _, image) = died_at("nostamp", "exit-before-stamp").await;
    assert!(rbd_ls(&c.bed, "kube").contains(&image));
    assert!(
        image_meta(&c.bed, &format!("kube/{image}")).is_empty(),
        "killed before the stamp"
    );
    delete_claim_and_wait(&c, "data").await;

    c.prov = Provisioner::start(&c.bed, &c.name, &housekeeping_every_second()).await;
    wait_for("the unstamped image collected", T, || async {
        (!rbd_ls(&c.bed, "kube").contains(&image)).then_some(())
    })
    .await;
    wait_log(
        &c.prov,
        &["stamped an image whose creator stopped", &image],
        T,
    )
    .await;
    wait_log(&c.prov, &["removed an image orphaned", &image], T).await;
    wait_for("the collected image purged", T, || async {
        (!rbd_trash_ls(&c.bed, "kube").contains(&image)).then_some(())
    })
    .await;
}

/// The same crash, but the claim stays: the next process adopts the unstamped image, stamps it
/// as this claim's, and binds the claim to it.
#[tokio::test]
async fn an_unstamped_image_whose_claim_remains_is_adopted() {
    let (mut c, _, uid, image) = died_at("adopt", "exit-before-stamp").await;
    let id_before = rbd_info(&c.bed, "kube", &image).unwrap()["id"].clone();
    c.prov = Provisioner::start(&c.bed, &c.name, &[]).await;
    wait_bound(&c.admin, &c.ns, "data", T).await;
    let meta = image_meta(&c.bed, &format!("kube/{image}"));
    assert_eq!(meta["rbd-provisioner.ceph.com/claim-uid"], uid);
    assert_eq!(meta["rbd-provisioner.ceph.com/pv-state"], "written");
    assert_eq!(
        rbd_info(&c.bed, "kube", &image).unwrap()["id"],
        id_before,
        "the same image, adopted"
    );
}

/// Killed after marking the image as having a PV but before writing it: whether a PV exists
/// can no longer be known from Ceph, so the image is kept (and reported), never collected.
#[tokio::test]
async fn a_crash_just_before_the_pv_is_written_keeps_the_image() {
    let (mut c, class, _, image) = died_at("prepv", "exit-before-pv-write").await;
    assert_eq!(
        image_meta(&c.bed, &format!("kube/{image}"))["rbd-provisioner.ceph.com/pv-state"],
        "written"
    );
    delete_claim_and_wait(&c, "data").await;
    c.prov = Provisioner::start(&c.bed, &c.name, &housekeeping_every_second()).await;
    more_passes(&c.prov, 3, T).await;
    assert!(rbd_ls(&c.bed, "kube").contains(&image), "kept");
    let report = audit_of(&c, &class);
    assert!(
        orphan_entry(&report, &image).is_some_and(|o| o["status"] == "kept: PV gone"),
        "{report:#}"
    );
    cli(&c.bed, "rbd", &["rm", &format!("kube/{image}")]);
}

/// An orphan (stamped, no PV ever written, claim gone) that a client has open is left alone
/// while it is open, and collected once it is not.
#[tokio::test]
async fn a_mapped_orphan_is_never_collected() {
    let (mut c, _, _, image) = died_at("mapped", "exit-after-image-create").await;
    delete_claim_and_wait(&c, "data").await;
    // A client that has it open read/write, as a node that mapped it.
    let held = c
        .bed
        .ceph()
        .await
        .open_read_write("kube", &image)
        .await
        .unwrap();
    c.prov = Provisioner::start(&c.bed, &c.name, &housekeeping_every_second()).await;
    more_passes(&c.prov, 3, T).await;
    assert!(rbd_ls(&c.bed, "kube").contains(&image), "kept while open");
    assert!(!c.prov.logs().contains("removed an image orphaned"));
    drop(held);
    wait_for("the orphan collected once closed", T, || async {
        (!rbd_ls(&c.bed, "kube").contains(&image)).then_some(())
    })
    .await;
}

/// A deletion that decided on its cache, stalled, then finds the PV set to Retain: it reads
/// the PV again before anything destructive, and keeps the image.
#[tokio::test]
async fn a_deletion_decides_on_the_pv_as_it_is_now() {
    let (c, pv, image) = retained_while_stalled_at("fresh", "sleep-before-fresh-read").await;
    assert!(c.pvs().get_opt(&pv).await.unwrap().is_some());
    assert!(rbd_ls(&c.bed, "kube").contains(&image));
    assert!(!c.prov.logs().contains("deleted volume"));
    c.pvs().delete(&pv, &DeleteParams::default()).await.unwrap();
    cli(&c.bed, "rbd", &["rm", &format!("kube/{image}")]);
}

/// The same, one step later: every check passed, and the PV changes just before the commit.
/// The commit carries the resourceVersion read, so it fails, and the next pass keeps the image.
#[tokio::test]
async fn a_pv_changed_after_the_checks_is_not_deleted() {
    let (c, pv, image) = retained_while_stalled_at("commit", "sleep-before-commit").await;
    let kept = c.pvs().get(&pv).await.unwrap();
    assert!(kept.metadata.deletion_timestamp.is_none(), "never deleted");
    assert!(rbd_ls(&c.bed, "kube").contains(&image));
    assert!(!rbd_trash_ls(&c.bed, "kube").contains(&image));
    c.pvs().delete(&pv, &DeleteParams::default()).await.unwrap();
    cli(&c.bed, "rbd", &["rm", &format!("kube/{image}")]);
}

/// A pool renamed and replaced by a new empty pool of the same name: the image is not "gone".
/// A PV that records the pool's id is refused by name ("renamed and replaced"); one that
/// records nothing is refused for want of proof. Both deletions complete once the pool is back.
#[tokio::test]
async fn a_replaced_pool_never_passes_for_a_deleted_image() {
    let c = Scenario::new("poolswap").await;
    let (pool, class) = c.own_pool("rbdp-swap").await;
    let old = format!("{pool}-old");
    let (_a, a_uid) = c.bound(&class, "recorded", "64Mi").await;
    let (_b, b_uid) = c.bound(&class, "unrecorded", "64Mi").await;
    let (a_pv, b_pv) = (format!("pvc-{a_uid}"), format!("pvc-{b_uid}"));
    cli(&c.bed, "ceph", &["osd", "pool", "rename", &pool, &old]);
    create_pool(&c.bed, &pool);
    // As a PV written before the records existed.
    c.patch_pv(
        &b_pv,
        json!({"metadata": {"annotations": {
            "rbd-provisioner.ceph.com/pool-id": null, "rbd-provisioner.ceph.com/fsid": null}}}),
    )
    .await;
    for claim in ["recorded", "unrecorded"] {
        c.delete_claim(claim).await;
    }
    let msg = wait_pv_event(
        &c.admin,
        &a_pv,
        "VolumeFailedDelete",
        "renamed and replaced",
        T,
    )
    .await;
    assert!(msg.contains(&pool), "{msg}");
    let msg = wait_pv_event(
        &c.admin,
        &b_pv,
        "VolumeFailedDelete",
        "records no pool id",
        T,
    )
    .await;
    assert!(msg.contains("created after this PV"), "{msg}");
    for (pv, uid) in [(&a_pv, &a_uid), (&b_pv, &b_uid)] {
        assert!(c.pvs().get_opt(pv).await.unwrap().is_some(), "{pv} kept");
        assert!(rbd_ls(&c.bed, &old).contains(&image_of(uid)));
    }

    // The operator puts the pool back (the rename fails unless the new pool went): both
    // deletions finish by themselves.
    remove_pool(&c.bed, &pool);
    cli(&c.bed, "ceph", &["osd", "pool", "rename", &old, &pool]);
    c.wait_pv_gone(&a_uid).await;
    c.wait_pv_gone(&b_uid).await;
    remove_pool(&c.bed, &pool);
}

/// csi volumes: the monitors come from the current StorageClass, not the PV's editable
/// annotation (a dead address there changes nothing), and a cluster other than the one the PV
/// records is refused.
#[tokio::test]
async fn csi_volumes_are_deleted_through_the_current_class_and_the_recorded_cluster() {
    let c = Scenario::new("csimon").await;
    let csi: Vec<(&str, String)> = c.csi_params();
    let mut over: Vec<(&str, &str)> = csi.iter().map(|(k, v)| (*k, v.as_str())).collect();
    over.push(("volumeFlavor", "csi"));
    let class = c
        .class("delete", &over, json!({"reclaimPolicy": "Delete"}))
        .await;
    let (_a, a_uid) = c.bound(&class, "moved", "64Mi").await;
    let (_b, b_uid) = c.bound(&class, "elsewhere", "64Mi").await;
    let (a_pv, b_pv) = (format!("pvc-{a_uid}"), format!("pvc-{b_uid}"));
    c.patch_pv(
        &a_pv,
        json!({"metadata": {"annotations": {"rbd-provisioner.ceph.com/monitors": "127.0.0.1:1"}}}),
    )
    .await;
    c.patch_pv(
        &b_pv,
        json!({"metadata": {"annotations": {
            "rbd-provisioner.ceph.com/fsid": "00000000-0000-0000-0000-000000000000"}}}),
    )
    .await;
    for claim in ["moved", "elsewhere"] {
        c.delete_claim(claim).await;
    }
    c.wait_pv_gone(&a_uid).await;
    assert!(!rbd_ls(&c.bed, "kube").contains(&image_of(&a_uid)));
    let msg = wait_pv_event(
        &c.admin,
        &b_pv,
        "VolumeFailedDelete",
        "records its image as made in Ceph cluster 00000000",
        T,
    )
    .await;
    assert!(msg.contains("nothing was changed"), "{msg}");
    assert!(c.pvs().get_opt(&b_pv).await.unwrap().is_some());
    assert!(rbd_ls(&c.bed, "kube").contains(&image_of(&b_uid)));
    // The record put right (the real fsid), the deletion completes.
    let fsid = ceph_fsid(&c.bed);
    c.patch_pv(
        &b_pv,
        json!({"metadata": {"annotations": {"rbd-provisioner.ceph.com/fsid": fsid}}}),
    )
    .await;
    c.wait_pv_gone(&b_uid).await;
}

/// An image as the old provisioner made it, and its PV (no stamp, only the identity mark).
async fn legacy_image_and_pv(
    c: &Scenario,
    class: &str,
    claim_ref: serde_json::Value,
) -> (String, String) {
    let image = format!("kubernetes-dynamic-pvc-{}", unique("5a6c7e52-1c8b-11e9"));
    rbd_create(&c.bed, &format!("kube/{image}"), "32M");
    let pv_name = unique("pvc-legacy");
    let mut pv = old_provisioner_pv(c, &pv_name, &image, class, "32Mi");
    // Bound as `claim_ref` says (Null: not bound), and without a fsType, as the old
    // provisioner wrote for classes that named none.
    let spec = pv.spec.as_mut().unwrap();
    spec.claim_ref = serde_json::from_value(claim_ref).unwrap();
    spec.rbd.as_mut().unwrap().fs_type = None;
    c.pvs().create(&PostParams::default(), &pv).await.unwrap();
    (pv_name, image)
}

/// A volume of the old provisioner is deleted only when its image's stamp confirms it is this
/// PV's; that stamp is written when the volume is first seen bound. One never seen bound (say
/// a PV copied in, released on arrival) is refused and its image kept; one whose image another
/// cluster sharing the pool has stamped is refused too.
#[tokio::test]
async fn old_volumes_are_deleted_only_on_their_stamp() {
    let c = Scenario::new("legacystamp").await;
    let class = c
        .class("old", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    // Released on arrival: its claim never existed here.
    let ghost = json!({"kind": "PersistentVolumeClaim", "namespace": c.ns, "name": "ghost",
        "uid": "00000000-1111-2222-3333-444444444444", "apiVersion": "v1"});
    let (ghost_pv, ghost_image) = legacy_image_and_pv(&c, &class, ghost).await;
    let msg = wait_pv_event(
        &c.admin,
        &ghost_pv,
        "VolumeFailedDelete",
        "carries no stamp confirming",
        T,
    )
    .await;
    assert!(msg.contains("rbd image-meta set"), "{msg}");
    assert!(rbd_ls(&c.bed, "kube").contains(&ghost_image));

    // Bound here: stamped at first sight, then deleted when released.
    let (bound_pv, bound_image) = legacy_image_and_pv(&c, &class, serde_json::Value::Null).await;
    c.claim("one", &class)
        .size("32Mi")
        .spec(json!({"volumeName": bound_pv}))
        .bound()
        .await;
    wait_for("the old volume recorded", T, || async {
        let meta = image_meta(&c.bed, &format!("kube/{bound_image}"));
        (meta.get("rbd-provisioner.ceph.com/pv").map(String::as_str) == Some(bound_pv.as_str()))
            .then_some(())
    })
    .await;
    let recorded = c.pvs().get(&bound_pv).await.unwrap();
    assert!(
        recorded
            .metadata
            .annotations
            .unwrap()
            .contains_key("rbd-provisioner.ceph.com/pool-id")
    );
    c.delete_claim("one").await;
    wait_absent(&c.pvs(), &bound_pv, "the recorded old volume deleted", T).await;
    assert!(!rbd_ls(&c.bed, "kube").contains(&bound_image));

    // Stamped by another Kubernetes cluster sharing the pool: neither recorded nor deleted.
    let (theirs_pv, theirs_image) = legacy_image_and_pv(&c, &class, serde_json::Value::Null).await;
    for (k, v) in [
        ("rbd-provisioner.ceph.com/provisioner", c.name.as_str()),
        (
            "rbd-provisioner.ceph.com/cluster",
            "another-kube-system-uid",
        ),
        ("rbd-provisioner.ceph.com/pv", theirs_pv.as_str()),
    ] {
        cli(
            &c.bed,
            "rbd",
            &["image-meta", "set", &format!("kube/{theirs_image}"), k, v],
        );
    }
    c.claim("two", &class)
        .size("32Mi")
        .spec(json!({"volumeName": theirs_pv}))
        .bound()
        .await;
    wait_pv_event(
        &c.admin,
        &theirs_pv,
        "VolumeRecordRefused",
        "another Kubernetes cluster",
        T,
    )
    .await;
    c.delete_claim("two").await;
    wait_pv_event(
        &c.admin,
        &theirs_pv,
        "VolumeFailedDelete",
        "another Kubernetes cluster",
        T,
    )
    .await;
    assert!(rbd_ls(&c.bed, "kube").contains(&theirs_image));

    for (pv, image) in [(ghost_pv, ghost_image), (theirs_pv, theirs_image)] {
        c.patch_pv(&pv, json!({"metadata": {"finalizers": null}}))
            .await;
        let _ = c.pvs().delete(&pv, &DeleteParams::default()).await;
        cli(&c.bed, "rbd", &["rm", &format!("kube/{image}")]);
    }
}
