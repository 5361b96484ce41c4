//! "What the provisioner will never do", each reproduced on the real bed: the attack or
//! fault first, then the proof that nothing that is not provably ours was destroyed,
//! exposed or leaked. Images are checked with the `rbd` CLI, not the code under test.

mod edited;
mod process;

use testbed as common;

use std::process::Command;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(60);
const FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";
/// Housekeeping passes, each at most a few seconds apart here.
const PASSES: Duration = Duration::from_secs(90);

/// How many times the provisioner has tried to delete PV `pv`, failed or not, by its log.
fn deletion_attempts(c: &Scenario, pv: &str) -> usize {
    c.prov
        .logs()
        .lines()
        .filter(|l| {
            l.contains(pv)
                && (l.contains("volume operation failed") || l.contains("deleted volume"))
        })
        .count()
}

async fn drop_finalizers(c: &Scenario, pv: &str) {
    let _ = c
        .pvs()
        .patch(
            pv,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await;
}

#[tokio::test]
async fn images_say_whose_they_are() {
    let c = Scenario::new("stamp").await;
    let class = c.class("keep", &[], json!({})).await;
    let (_claim, uid) = c.bound(&class, "data", "64Mi").await;
    let meta = image_meta(&c.bed, &format!("kube/kubernetes-dynamic-pvc-{uid}"));
    let cluster = cluster_uid(&c.admin).await;
    let get = |k: &str| meta.get(&format!("rbd-provisioner.ceph.com/{k}")).cloned();
    assert_eq!(
        get("provisioner").as_deref(),
        Some(c.name.as_str()),
        "{meta:?}"
    );
    assert_eq!(get("cluster"), Some(cluster));
    assert_eq!(get("pv"), Some(format!("pvc-{uid}")));
    assert_eq!(get("claim"), Some(format!("{}/data", c.ns)));
    assert_eq!(get("claim-uid"), Some(uid.clone()));
    assert!(get("created").is_some_and(|t| t.parse::<i64>().is_ok()));
    assert_eq!(get("trashed"), None);
}

/// An operator's `rbd trash mv` (no delay, so "expired" at once) with our name prefix must
/// survive our trash sweeps; what we trashed ourselves is purged.
#[tokio::test]
async fn the_trash_sweep_purges_only_what_we_trashed() {
    let c = Scenario::with_env("sweep", &[("MAINTENANCE_INTERVAL", "2")]).await;
    let theirs = format!("kubernetes-dynamic-pvc-{}", unique("operator"));
    rbd_create(&c.bed, &format!("kube/{theirs}"), "8M");
    cli(&c.bed, "rbd", &["trash", "mv", &format!("kube/{theirs}")]);
    assert!(
        rbd_trash_entries(&c.bed, "kube")
            .iter()
            .any(|(_, n)| *n == theirs)
    );

    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (_claim, uid) = c.bound(&class, "data", "64Mi").await;
    c.delete_claim("data").await;
    c.wait_pv_gone(&uid).await;
    let ours = format!("kubernetes-dynamic-pvc-{uid}");
    wait_for("our image purged from the trash", T, || async {
        (!rbd_trash_entries(&c.bed, "kube")
            .iter()
            .any(|(_, n)| *n == ours))
        .then_some(())
    })
    .await;
    // The sweep after the first deletion, then at least one periodic pass (or, in a build
    // that sweeps by name, the operator's entry vanishing).
    wait_for("two trash sweeps", Duration::from_secs(90), || async {
        let swept = c.prov.logs().matches("trash sweep done").count() >= 2;
        let gone = !rbd_trash_entries(&c.bed, "kube")
            .iter()
            .any(|(_, n)| *n == theirs);
        (swept || gone).then_some(())
    })
    .await;
    let entry = rbd_trash_entries(&c.bed, "kube")
        .into_iter()
        .find(|(_, n)| *n == theirs);
    let Some((id, _)) = entry else {
        panic!("the operator's soft-deleted image {theirs} was purged by our sweep");
    };
    cli(&c.bed, "rbd", &["trash", "rm", "--pool", "kube", &id]);
}

/// Created, then the process died, then the claim went before a restart: the image is
/// removed by the next process; an image that is not provably ours is left alone.
#[tokio::test]
async fn images_orphaned_by_a_crash_are_collected_and_nothing_else() {
    let mut c = Scenario::with_env(
        "orphan",
        &[("RBD_PROVISIONER_FAILPOINT", "exit-after-image-create")],
    )
    .await;
    let name = c.name.clone();
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let claim = c.claim("data", &class).create().await;
    let uid = uid_of(&claim);
    let orphan = format!("kubernetes-dynamic-pvc-{uid}");
    let st = c.prov.wait_exit(T).await;
    assert_eq!(st.code(), Some(86), "{}", c.prov.logs());
    assert!(rbd_ls(&c.bed, "kube").contains(&orphan));
    c.delete_claim("data").await;

    let not_ours = format!("kubernetes-dynamic-pvc-{}", unique("manual"));
    rbd_create(&c.bed, &format!("kube/{not_ours}"), "8M");
    c.prov = Provisioner::start(
        &c.bed,
        &name,
        &[("MAINTENANCE_INTERVAL", "1"), ("ORPHAN_GRACE", "1")],
    )
    .await;
    wait_for("the orphan removed", T, || async {
        (!rbd_ls(&c.bed, "kube").contains(&orphan)).then_some(())
    })
    .await;
    wait_log_count(&c.prov, "removed an image orphaned", 1, PASSES).await;
    wait_for("the orphan purged from the trash", T, || async {
        (!rbd_trash_entries(&c.bed, "kube")
            .iter()
            .any(|(_, n)| *n == orphan))
        .then_some(())
    })
    .await;
    // Later passes ran too, and kept what is not ours.
    more_passes(&c.prov, 2, PASSES).await;
    assert!(rbd_ls(&c.bed, "kube").contains(&not_ours));
    cli(&c.bed, "rbd", &["rm", &format!("kube/{not_ours}")]);
}

/// A clone we trashed whose purge never ran (the process died) still pins its source's
/// snapshot; deleting the source must purge it rather than stay stuck forever.
#[tokio::test]
async fn a_trashed_clone_does_not_pin_its_source() {
    let mut c = Scenario::with_env("pin", &[("MAINTENANCE_INTERVAL", "0")]).await;
    let name = c.name.clone();
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (_src, src_uid) = c.bound(&class, "src", "64Mi").await;
    c.claim("copy", &class)
        .spec(json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": "src"}}))
        .create()
        .await;
    let copy = wait_bound(&c.admin, &c.ns, "copy", T).await;
    let copy_uid = uid_of(&copy);
    let clone_image = format!("kubernetes-dynamic-pvc-{copy_uid}");

    // What our delete path does before its purge, then the process dies.
    c.prov.crash();
    trash_as_ours(&c.bed, &format!("kube/{clone_image}"));
    c.delete_claim("copy").await;
    drop_finalizers(&c, &format!("pvc-{copy_uid}")).await;
    let _ = c
        .pvs()
        .delete(&format!("pvc-{copy_uid}"), &DeleteParams::default())
        .await;
    c.wait_pv_gone(&copy_uid).await;

    c.prov = Provisioner::start(&c.bed, &name, &[("MAINTENANCE_INTERVAL", "0")]).await;
    c.delete_claim("src").await;
    c.wait_pv_gone(&src_uid).await;
    let src_image = format!("kubernetes-dynamic-pvc-{src_uid}");
    wait_for("source and clone purged", T, || async {
        let t = rbd_trash_entries(&c.bed, "kube");
        (!t.iter().any(|(_, n)| *n == src_image || *n == clone_image)).then_some(())
    })
    .await;
    assert!(
        c.prov.logs().contains("purged a trashed clone"),
        "{}",
        c.prov.logs()
    );
}

/// `audit` shows what leaked, and changes nothing.
#[tokio::test]
async fn audit_reports_leaks_read_only() {
    let c = Scenario::new("audit").await;
    let class = c
        .class("keep", &[], json!({"reclaimPolicy": "Retain"}))
        .await;
    // A PV of ours whose image someone removed by hand.
    let (_a, a_uid) = c.bound(&class, "lost", "64Mi").await;
    let lost_image = format!("kubernetes-dynamic-pvc-{a_uid}");
    cli(&c.bed, "rbd", &["rm", &format!("kube/{lost_image}")]);
    // An image of ours whose PV and claim are gone (Retain, then both deleted by hand).
    let (_b, b_uid) = c.bound(&class, "left", "64Mi").await;
    let left_image = format!("kubernetes-dynamic-pvc-{b_uid}");
    c.delete_claim("left").await;
    // The claim lingers until kube-controller-manager drops its protection finalizer; the
    // audit below must see it gone, as an operator would after deleting it.
    let pvcs = c.pvcs();
    wait_absent(&pvcs, "left", "claim left deleted", T).await;
    drop_finalizers(&c, &format!("pvc-{b_uid}")).await;
    c.pvs()
        .delete(&format!("pvc-{b_uid}"), &DeleteParams::default())
        .await
        .unwrap();
    c.wait_pv_gone(&b_uid).await;

    let bin = env!("CARGO_BIN_EXE_rbd-provisioner").as_ref();
    let report = audit(&c.bed, bin, &c.name, &class);
    let orphans = report["orphaned_images"].as_array().unwrap();
    let o = orphans
        .iter()
        .find(|o| o["image"] == left_image.as_str())
        .unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(o["pv"], format!("pvc-{b_uid}").as_str());
    assert_eq!(o["claim"], format!("{}/left", c.ns).as_str());
    assert_eq!(o["claim_exists"], false);
    assert!(!orphans.iter().any(|o| o["image"] == lost_image.as_str()));
    let missing = report["missing_images"].as_array().unwrap();
    assert!(
        missing
            .iter()
            .any(|m| m["pv"] == format!("pvc-{a_uid}").as_str() && m["in_trash"] == false),
        "{report:#}"
    );
    assert!(report["trash"].is_array());
    // Read-only: the orphan is still there.
    assert!(rbd_ls(&c.bed, "kube").contains(&left_image));
    cli(&c.bed, "rbd", &["rm", &format!("kube/{left_image}")]);
    drop_finalizers(&c, &format!("pvc-{a_uid}")).await;
    c.delete_claim("lost").await;
}
