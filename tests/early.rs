//! Provisioning before kube-controller-manager's hand-over, where it is safe: only when no
//! existing volume could serve the claim. On the real bed; images checked with the `rbd` CLI.
//! That the early path fires is proven in `tests/early_paused.rs`, with kube-controller-manager
//! paused so its hand-over cannot win a race.

use testbed as common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(60);
const EARLY_LINE: &str = "provisioning before kube-controller-manager's hand-over";
/// Logged once the provisioner has listed every claim, volume and class.
const SYNCED: &str = "watches synced";

/// Waits until the provisioner has listed everything and worked through what it found at
/// start (its log quiet for a moment), so that a claim created now is seen at once, before
/// kube-controller-manager's hand-over ~50 ms later.
async fn settled(p: &Provisioner) {
    wait_log_count(p, SYNCED, 1, T).await;
    let mut last = p.logs().len();
    wait_for("the provisioner's start-up work done", T, || {
        let now = p.logs().len();
        let quiet = now == last;
        last = now;
        async move { quiet.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn with_early_provisioning_off_the_claim_waits_for_the_hand_over() {
    let c = Scenario::with_env("late", &[("EARLY_PROVISIONING", "false")]).await;
    let class = c.class("fast", &[], json!({})).await;
    settled(&c.prov).await;
    let (claim, _uid) = c.bound(&class, "data", "64Mi").await;
    assert!(!c.prov.logs().contains(EARLY_LINE), "{}", c.prov.logs());
    cleanup(&c.bed, &c.admin, &c.ns, &[&claim], &["kube"]).await;
}

/// kube-controller-manager would bind a claim to a matching Available volume instead of
/// asking for a new one: then the provisioner must wait for the hand-over, which never
/// comes, and create nothing.
#[tokio::test]
async fn a_matching_available_volume_is_left_to_the_binder() {
    // Trace: a line for every reconcile of a claim, whatever it decides. Kubernetes 1.37's
    // binder is often done before the provisioner first sees the claim, which then only
    // logs "bound claim"; 1.20's usually lets it see the claim still waiting.
    let c = Scenario::with_env("static", &[("RUST_LOG", "info,rbd_provisioner=trace")]).await;
    let class = c
        .class("fast", &[], json!({"reclaimPolicy": "Retain"}))
        .await;
    settled(&c.prov).await;
    let static_name = unique("static-pv");
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": static_name},
        "spec": {
            "capacity": {"storage": "128Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": class,
            "rbd": {"monitors": [c.bed.monitors], "pool": "kube", "image": unique("hand-made"), "user": "kube"},
        }
    }))
    .unwrap();
    c.pvs().create(&PostParams::default(), &pv).await.unwrap();
    // Wait until the provisioner's volume watch has seen it.
    wait_for("the static PV Available", T, || async {
        let p = c.pvs().get(&static_name).await.ok()?;
        (p.status?.phase.as_deref() == Some("Available")).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let claim = c.claim("data", &class).create().await;
    let uid = uid_of(&claim);
    let bound = wait_bound(&c.admin, &c.ns, "data", T).await;
    assert_eq!(
        bound.spec.unwrap().volume_name.as_deref(),
        Some(static_name.as_str()),
        "the claim binds to the existing volume"
    );
    wait_log_count(&c.prov, &format!("{}/data", c.ns), 1, T).await;
    assert!(!c.prov.logs().contains(EARLY_LINE), "{}", c.prov.logs());
    assert!(
        !rbd_ls(&c.bed, "kube").contains(&format!("kubernetes-dynamic-pvc-{uid}")),
        "no image was made for a claim an existing volume serves"
    );
    assert!(!c.has_pv(&uid).await);
    c.delete_claim("data").await;
    c.pvs()
        .delete(&static_name, &DeleteParams::default())
        .await
        .unwrap();
}

/// The claim goes while its early provisioning runs (stalled between image and PV): nothing
/// is left behind.
#[tokio::test]
async fn a_claim_deleted_during_early_provisioning_leaves_nothing() {
    let c = Scenario::with_env(
        "gone",
        &[("RBD_PROVISIONER_FAILPOINT", "sleep-after-image-create")],
    )
    .await;
    let class = c.class("fast", &[], json!({})).await;
    settled(&c.prov).await;
    let claim = c.claim("data", &class).create().await;
    let uid = uid_of(&claim);
    wait_log_count(&c.prov, "failpoint sleep-after-image-create", 1, T).await;
    c.delete_claim("data").await;
    let removing = "claim deleted during provisioning; removing its image";
    wait_log_count(&c.prov, removing, 1, T).await;
    let image = format!("kubernetes-dynamic-pvc-{uid}");
    wait_for("the image removed", T, || async {
        (!rbd_ls(&c.bed, "kube").contains(&image)).then_some(())
    })
    .await;
    assert!(!c.has_pv(&uid).await);
}
