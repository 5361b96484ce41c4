//! An upgrade from the previous release to this build with live volumes, and the rollback:
//! nothing lost, nothing made twice, nothing destroyed that the policy keeps.
//!
//! The previous release is the commit `hack/previous-release` names, built from this
//! checkout's history by `hack/build-previous.sh` (`hack/test.sh` does, and passes its path in
//! `RBDP_PREVIOUS_BIN`). Both builds run as operators run them: their own process, the shipped
//! ServiceAccount, one replica at a time, the old one stopped with SIGTERM as a rolling update
//! stops it. Images are judged with the `rbd` CLI (their ids: an image made again has a new one).

use testbed as common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

const T: Duration = Duration::from_secs(90);

fn previous_bin() -> std::path::PathBuf {
    let bin = std::env::var_os("RBDP_PREVIOUS_BIN").unwrap_or_else(|| {
        panic!(
            "RBDP_PREVIOUS_BIN is not set: build the previous release with \
             `bash hack/build-previous.sh` and pass the path it prints (hack/test.sh does)"
        )
    });
    let bin = std::path::PathBuf::from(bin);
    assert!(
        bin.is_file(),
        "RBDP_PREVIOUS_BIN {} is not a file",
        bin.display()
    );
    bin
}

/// The image id of `kube/kubernetes-dynamic-pvc-<uid>`, by the rbd CLI; `None` when it is gone.
fn image_id(bed: &Bed, uid: &str) -> Option<String> {
    rbd_json(
        bed,
        &["info", &format!("kube/kubernetes-dynamic-pvc-{uid}")],
    )
    .and_then(|i| i["id"].as_str().map(str::to_string))
}

fn image_size(bed: &Bed, uid: &str) -> Option<u64> {
    rbd_json(
        bed,
        &["info", &format!("kube/kubernetes-dynamic-pvc-{uid}")],
    )
    .and_then(|i| i["size"].as_u64())
}

/// SIGTERM, as a rolling update stops a pod, and the exit status.
async fn stop(p: &mut Provisioner) -> std::process::ExitStatus {
    // Our own child, not yet reaped.
    common::signal(p.pid(), libc::SIGTERM);
    p.wait_exit(Duration::from_secs(60)).await
}

async fn grow(c: &Scenario, claim: &str, size: &str) {
    c.pvcs()
        .patch(
            claim,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": size}}}})),
        )
        .await
        .unwrap_or_else(|e| panic!("grow {claim}: {e}"));
}

async fn wait_grown(c: &Scenario, uid: &str, bytes: u64, quantity: &str) {
    let pvs = c.pvs();
    wait_for(&format!("pvc-{uid} grown to {quantity}"), T, || async {
        let pv = pvs.get_opt(&format!("pvc-{uid}")).await.ok()??;
        let cap = pv.spec?.capacity?.get("storage")?.0.clone();
        (cap == quantity && image_size(&c.bed, uid) == Some(bytes)).then_some(())
    })
    .await;
}

async fn wait_released(c: &Scenario, uid: &str) {
    let pvs = c.pvs();
    wait_for(&format!("pvc-{uid} Released"), T, || async {
        let pv = pvs.get_opt(&format!("pvc-{uid}")).await.ok()??;
        (pv.status?.phase.as_deref() == Some("Released")).then_some(())
    })
    .await;
}

async fn delete_claim(c: &Scenario, name: &str) {
    c.pvcs()
        .delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete claim {name}: {e}"));
}

/// Previous release → this build → previous release, with claims of a Delete and a Retain
/// class made, grown and deleted by each. At every step each image that should exist has the
/// id it was first seen with (never made again), each deleted Delete volume is gone from
/// Kubernetes and Ceph, and each Retain volume's image stays.
#[tokio::test]
async fn upgrade_from_the_previous_release_and_roll_back() {
    let previous = previous_bin();
    let name = format!("{}.test/rbd", unique("upgrade"));
    let old = Provisioner::start_binary(&Bed::load(), &name, &previous, &[], &[]).await;
    let mut c = Scenario::around("upgrade", &name, old).await;
    wait_log(&c.prov, &["became leader"], Duration::from_secs(30)).await;
    let del = c
        .class(
            "delete",
            &[],
            json!({"reclaimPolicy": "Delete", "allowVolumeExpansion": true}),
        )
        .await;
    let keep = c
        .class("retain", &[], json!({"reclaimPolicy": "Retain"}))
        .await;
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut uid_of_claim: BTreeMap<&str, String> = BTreeMap::new();
    // Made by the previous release.
    for (claim, class) in [
        ("o-del-0", &del),
        ("o-del-1", &del),
        ("o-del-2", &del),
        ("o-del-3", &del),
        ("o-keep-0", &keep),
        ("o-keep-1", &keep),
    ] {
        let (_, uid) = c.bound(class, claim, "64Mi").await;
        let id = image_id(&c.bed, &uid).unwrap_or_else(|| panic!("no image for {claim}"));
        ids.insert(uid.clone(), id);
        uid_of_claim.insert(claim, uid);
    }
    let check_ids = |c: &Scenario, ids: &BTreeMap<String, String>, step: &str| {
        for (uid, id) in ids {
            let now = image_id(&c.bed, uid);
            assert_eq!(
                now.as_ref(),
                Some(id),
                "{step}: the image of claim uid {uid} is {now:?}, first seen as {id}"
            );
        }
    };
    let old_logs = c.prov.logs();

    // Upgrade: the old replica stops, the new one starts on the same objects.
    let status = stop(&mut c.prov).await;
    assert!(
        status.success(),
        "the previous release exited with {status} on SIGTERM"
    );
    c.prov = Provisioner::start(&c.bed, &name, &[]).await;
    wait_log(&c.prov, &["became leader"], Duration::from_secs(60)).await;
    // Each of the old volumes is recorded as seen by the new build before anything is asked
    // of it: a barrier claim is provisioned after the start, so its watches have listed.
    let (_, barrier) = c.bound(&del, "n-del-0", "64Mi").await;
    ids.insert(
        barrier.clone(),
        image_id(&c.bed, &barrier).expect("image of n-del-0"),
    );
    check_ids(&c, &ids, "after the upgrade");
    // The new build deletes, grows and keeps the old build's volumes.
    delete_claim(&c, "o-del-0").await;
    let gone = uid_of_claim["o-del-0"].clone();
    c.wait_pv_gone(&gone).await;
    wait_for("the image of o-del-0 purged", T, || async {
        image_id(&c.bed, &gone).is_none().then_some(())
    })
    .await;
    ids.remove(&gone);
    grow(&c, "o-del-1", "128Mi").await;
    wait_grown(&c, &uid_of_claim["o-del-1"], 128 << 20, "128Mi").await;
    delete_claim(&c, "o-keep-0").await;
    wait_released(&c, &uid_of_claim["o-keep-0"]).await;
    check_ids(&c, &ids, "after the new build's deletions and expansion");
    let new_logs = c.prov.logs();

    // Rollback: the previous release again, over volumes the new build made and touched.
    let status = stop(&mut c.prov).await;
    assert!(
        status.success(),
        "this build exited with {status} on SIGTERM"
    );
    c.prov = Provisioner::start_binary(&c.bed, &name, &previous, &[], &[]).await;
    wait_log(&c.prov, &["became leader"], Duration::from_secs(60)).await;
    let (_, back) = c.bound(&del, "r-del-0", "64Mi").await;
    ids.insert(
        back.clone(),
        image_id(&c.bed, &back).expect("image of r-del-0"),
    );
    check_ids(&c, &ids, "after the rollback");
    // The old build deletes a volume the new build made, and one the new build grew.
    for claim in ["n-del-0", "o-del-1"] {
        delete_claim(&c, claim).await;
        let uid = if claim == "n-del-0" {
            barrier.clone()
        } else {
            uid_of_claim[claim].clone()
        };
        c.wait_pv_gone(&uid).await;
        wait_for(&format!("the image of {claim} purged"), T, || async {
            image_id(&c.bed, &uid).is_none().then_some(())
        })
        .await;
        ids.remove(&uid);
    }
    grow(&c, "o-del-2", "128Mi").await;
    wait_grown(&c, &uid_of_claim["o-del-2"], 128 << 20, "128Mi").await;
    delete_claim(&c, "o-keep-1").await;
    wait_released(&c, &uid_of_claim["o-keep-1"]).await;
    // A settle, then the verdict: the Retain images (one released under each build) and every
    // live volume keep the images first seen; nothing else of this run is in the pool.
    tokio::time::sleep(Duration::from_secs(5)).await;
    check_ids(&c, &ids, "at the end");
    for claim in ["o-keep-0", "o-keep-1"] {
        assert!(
            image_id(&c.bed, &uid_of_claim[claim]).is_some(),
            "the Retain volume {claim}'s image was destroyed"
        );
    }
    let pvs: Vec<String> = c
        .pvs()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|pv| {
            pv.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
                == Some(&name)
        })
        .filter_map(|pv| pv.metadata.name)
        .collect();
    // Live: o-del-2, o-del-3, r-del-0; Released and kept: o-keep-0, o-keep-1.
    assert_eq!(pvs.len(), 5, "PVs of this run: {pvs:?}");
    let prefix = "kubernetes-dynamic-pvc-";
    let ours: Vec<String> = rbd_ls(&c.bed, "kube")
        .into_iter()
        .filter(|i| {
            i.strip_prefix(prefix)
                .is_some_and(|u| ids.contains_key(u) || uid_of_claim.values().any(|v| v == u))
        })
        .collect();
    assert_eq!(ours.len(), 5, "images of this run: {ours:?}");
    for logs in [&old_logs, &new_logs, &c.prov.logs()] {
        assert!(!logs.contains("panicked"), "a build panicked:\n{logs}");
    }
    println!(
        "FIGURES upgrade and rollback: 6 volumes of the previous release, 1 of this build, 1 of the rollback; 3 deleted, 2 grown, 2 Retain kept, image ids unchanged"
    );
    // The Retain images are the test's to remove.
    for claim in ["o-keep-0", "o-keep-1"] {
        let uid = &uid_of_claim[claim];
        let _ = c
            .pvs()
            .delete(&format!("pvc-{uid}"), &DeleteParams::default())
            .await;
        rbd_cli(
            &c.bed,
            &["rm", &format!("kube/kubernetes-dynamic-pvc-{uid}")],
        );
    }
}
