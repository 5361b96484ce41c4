//! Early deletion, proven with kube-controller-manager paused. A binary of its own: cargo runs
//! test binaries one after another, so the pause cannot stall another test's claims.

mod common;

use common::*;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

const T: std::time::Duration = std::time::Duration::from_secs(60);

/// Once a claim is gone its Delete-policy volume is deleted at once, without waiting for
/// kube-controller-manager to mark it Released. To prove it was our early path and not the
/// usual one, kube-controller-manager is paused (SIGSTOP) while the claims go: nothing can mark
/// the volumes Released, and the claims' pvc-protection finalizer is removed by the test.
#[tokio::test]
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
    let pid = std::fs::read_to_string(c.bed.dir.join("kube/pids/kube-controller-manager.pid"))
        .expect("kube-controller-manager's pid file")
        .trim()
        .parse::<i32>()
        .unwrap();
    {
        let _paused = Paused::new(pid);
        for i in 0..3 {
            let name = format!("data-{i}");
            c.pvcs()
                .delete(&name, &DeleteParams::default())
                .await
                .unwrap();
            c.pvcs()
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await
                .unwrap();
        }
        // Our part done: image removed, PV deleted and our finalizer dropped (pv-protection,
        // kube-controller-manager's, holds the object until it runs again).
        for uid in &uids {
            let image = format!("kubernetes-dynamic-pvc-{uid}");
            wait_for(&format!("pvc-{uid} deleted by us"), T, || async {
                let pv = c.pvs().get_opt(&format!("pvc-{uid}")).await.unwrap();
                let ours_done = pv.is_none_or(|pv| {
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

/// kube-controller-manager stopped with SIGSTOP until dropped (also when the test fails).
struct Paused(i32);

impl Paused {
    fn new(pid: i32) -> Paused {
        // SAFETY: a plain signal to the bed's kube-controller-manager, resumed on drop.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGSTOP) },
            0,
            "SIGSTOP {pid}"
        );
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: a plain signal to the process this test stopped.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}
