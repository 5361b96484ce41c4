//! Early provisioning and early deletion, proven with kube-controller-manager paused. The
//! scenarios run on a control plane of this binary's own (`hack/plane-up.sh`, on the bed's
//! Ceph): the pause stalls nobody else's claims, not another test run's nor the demo's.

use testbed as common;

use common::*;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const T: std::time::Duration = std::time::Duration::from_secs(60);

#[test]
fn early_paths_with_kube_controller_manager_paused() {
    let plane = OwnPlane::up();
    // Every helper works on this plane.
    common::use_bed(&plane.dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        a_volume_whose_claim_is_gone_is_deleted_without_waiting_for_released().await;
        a_volume_whose_claim_went_before_binding_is_deleted_at_once().await;
        a_claim_nothing_else_could_serve_is_provisioned_before_the_hand_over().await;
    });
}

/// Once a claim is gone its Delete-policy volume is deleted at once, without waiting for
/// kube-controller-manager to mark it Released. To prove it was our early path and not the
/// usual one, kube-controller-manager is paused (SIGSTOP) while the claims go: nothing can mark
/// the volumes Released, and the claims' pvc-protection finalizer is removed by the test.
async fn a_volume_whose_claim_is_gone_is_deleted_without_waiting_for_released() {
    let c = Scenario::new("gonepv").await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let mut uids = Vec::new();
    for i in 0..3 {
        let (_claim, uid) = c.bound(&class, &format!("data-{i}"), "64Mi").await;
        uids.push(uid);
    }
    let pid = kcm_pid(&c);
    {
        let _paused = Paused::new(pid);
        for i in 0..3 {
            release(&c, &format!("data-{i}")).await;
        }
        // Our part done: image removed, PV deleted and our finalizer dropped (pv-protection,
        // kube-controller-manager's, holds the object until it runs again).
        for uid in &uids {
            wait_deleted_by_us(&c, uid, false).await;
        }
    }
    for uid in &uids {
        c.wait_pv_gone(uid).await;
    }
    let logs = c.prov.logs();
    for uid in &uids {
        assert!(
            logs.lines().any(
                |l| l.contains("its claim is gone: deleting without waiting")
                    && l.contains(uid.as_str())
            ),
            "no early deletion of pvc-{uid}:\n{logs}"
        );
    }
}

/// A claim deleted before kube-controller-manager ever bound it: its early volume (pre-bound,
/// never Bound) is deleted at once too, not left for the Released write. kube-controller-manager
/// is paused from the claim's creation until our part is done, so only our early paths can
/// have acted.
async fn a_volume_whose_claim_went_before_binding_is_deleted_at_once() {
    let c = Scenario::new("gonenew").await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let uid = {
        let (_paused, uid) = paused_claim(&c, &class).await;
        wait_for(&format!("pvc-{uid} made early"), T, || async {
            c.pvs().get_opt(&format!("pvc-{uid}")).await.unwrap()
        })
        .await;
        release(&c, "data").await;
        wait_deleted_by_us(&c, &uid, true).await;
        uid
    };
    c.wait_pv_gone(&uid).await;
    assert!(
        c.prov
            .logs()
            .lines()
            .any(|l| l.contains("its claim is gone: deleting without waiting") && l.contains(&uid)),
        "no early deletion of pvc-{uid}:\n{}",
        c.prov.logs()
    );
}

/// A claim no existing volume could serve is provisioned before kube-controller-manager hands
/// it over. kube-controller-manager is paused (SIGSTOP) while the claim is created, so the
/// hand-over cannot come: a PV for the claim can only be our early path's. Once resumed, the
/// binder binds the pre-bound PV.
async fn a_claim_nothing_else_could_serve_is_provisioned_before_the_hand_over() {
    let c = Scenario::with_env("early", &[("RUST_LOG", "info,rbd_provisioner=trace")]).await;
    let class = c.class("fast", &[], json!({})).await;
    let uid = {
        let (_paused, uid) = paused_claim(&c, &class).await;
        let pv = wait_for(
            &format!("pvc-{uid} made while the hand-over cannot come"),
            T,
            || async { c.pvs().get_opt(&format!("pvc-{uid}")).await.unwrap() },
        )
        .await;
        let still = c.pvcs().get("data").await.unwrap();
        assert!(
            !still
                .metadata
                .annotations
                .iter()
                .flatten()
                .any(|(k, _)| k.ends_with("/storage-provisioner")),
            "the claim was handed over although kube-controller-manager is paused: {:?}",
            still.metadata.annotations
        );
        let claim_ref = pv.spec.and_then(|s| s.claim_ref).expect("a pre-bound PV");
        assert_eq!(claim_ref.uid.as_deref(), Some(uid.as_str()));
        uid
    };
    wait_bound(&c.admin, &c.ns, "data", T).await;
    assert!(
        rbd_ls(&c.bed, "kube").contains(&format!("kubernetes-dynamic-pvc-{uid}")),
        "no image for the early PV"
    );
    assert!(
        c.prov
            .logs()
            .contains("provisioning before kube-controller-manager's hand-over"),
        "{}",
        c.prov.logs()
    );
}

/// Waits until our part of deleting `pvc-<uid>` is done: its image out of the pool and the PV
/// deleted without our finalizer (kube-controller-manager's pv-protection may hold it on).
/// `never_bound`: the volume must not have been Bound meanwhile.
async fn wait_deleted_by_us(c: &Scenario, uid: &str, never_bound: bool) {
    let image = format!("kubernetes-dynamic-pvc-{uid}");
    wait_for(&format!("pvc-{uid} deleted by us"), T, || async {
        let pv = c.pvs().get_opt(&format!("pvc-{uid}")).await.unwrap();
        let ours_done = pv.is_none_or(|pv| {
            let phase = pv.status.as_ref().and_then(|s| s.phase.clone());
            assert!(
                !never_bound || phase.as_deref() != Some("Bound"),
                "pvc-{uid} was bound while kube-controller-manager was paused"
            );
            pv.metadata.deletion_timestamp.is_some()
                && !pv
                    .metadata
                    .finalizers
                    .unwrap_or_default()
                    .iter()
                    .any(|f| f == "external-provisioner.volume.kubernetes.io/finalizer")
        });
        (ours_done && !rbd_ls(&c.bed, "kube").contains(&image)).then_some(())
    })
    .await;
}

/// Once the provisioner has listed everything, kube-controller-manager paused and claim `data`
/// of `class` made: the pause (held until dropped) and the claim's uid.
async fn paused_claim(c: &Scenario, class: &str) -> (Paused, String) {
    wait_log(&c.prov, &["watches synced"], T).await;
    let paused = Paused::new(kcm_pid(c));
    let made = c.claim("data", class).create().await;
    (paused, uid_of(&made))
}

/// Deletes claim `name` and drops its finalizers, as kube-controller-manager's pvc-protection
/// would (it is paused, and no pod uses the claim).
async fn release(c: &Scenario, name: &str) {
    c.delete_claim(name).await;
    let no_finalizers = json!({"metadata": {"finalizers": null}});
    c.pvcs()
        .patch(name, &PatchParams::default(), &Patch::Merge(no_finalizers))
        .await
        .unwrap();
}

fn kcm_pid(c: &Scenario) -> i32 {
    std::fs::read_to_string(c.bed.dir.join("kube/pids/kube-controller-manager.pid"))
        .expect("kube-controller-manager's pid file")
        .trim()
        .parse::<i32>()
        .unwrap()
}

/// How many tests of this binary hold kube-controller-manager paused: the tests run in
/// parallel, and one's resume must not end another's pause.
static PAUSES: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// kube-controller-manager stopped with SIGSTOP until the last holder drops (also when the
/// test fails).
struct Paused(i32);

impl Paused {
    fn new(pid: i32) -> Paused {
        let mut n = PAUSES.lock().unwrap_or_else(|e| e.into_inner());
        if *n == 0 {
            // The bed's kube-controller-manager, resumed on drop.
            assert!(common::signal(pid as u32, libc::SIGSTOP), "SIGSTOP {pid}");
        }
        *n += 1;
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let mut n = PAUSES.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            common::signal(self.0 as u32, libc::SIGCONT);
        }
    }
}
