//! One tenant cannot stop the service for everyone: sizes a class does not allow are refused,
//! one huge volume's purge never holds back the others, clone chains stay bounded, and a
//! failed clone leaves nothing pinned. On the real bed, judged with the `rbd` CLI.

use testbed as common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const T: Duration = Duration::from_secs(90);

fn rbd(bed: &Bed, args: &[&str]) -> String {
    let out = Command::new("rbd")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rbd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn trash_names(bed: &Bed, pool: &str) -> Vec<String> {
    rbd(bed, &["trash", "ls", pool])
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, n)| n.trim().to_string()))
        .collect()
}

fn snapshots(bed: &Bed, spec: &str) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_str(&rbd(bed, &["snap", "ls", spec, "--format", "json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect()
}

fn image_of(uid: &str) -> String {
    format!("kubernetes-dynamic-pvc-{uid}")
}

/// Exabytes are refused with one readable event and no image; a class's own maxSize applies to
/// new claims and to expansions.
#[tokio::test]
async fn sizes_beyond_the_class_max_size_are_refused() {
    let c = Scenario::new("maxsize").await;
    let class = c
        .class("default", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let huge = c.claim("huge", &class).size("8Ei").create().await;
    let e = wait_event(
        &c.admin,
        &c.ns,
        &uid_of(&huge),
        "ProvisioningFailed",
        &["8Ei", "at most 1Pi", "maxSize"],
        T,
    )
    .await;
    assert!(!e.note.unwrap().contains('\n'));
    assert!(!rbd_ls(&c.bed, "kube").contains(&image_of(&uid_of(&huge))));

    // csi: on Kubernetes 1.20 the in-tree expander of kube-controller-manager would grow a
    // spec.rbd volume itself (with the rbd CLI), whatever the class's maxSize says.
    let csi: Vec<(&str, String)> = c.csi_params();
    let mut over: Vec<(&str, &str)> = csi.iter().map(|(k, v)| (*k, v.as_str())).collect();
    over.extend([("volumeFlavor", "csi"), ("maxSize", "100Mi")]);
    let small = c
        .class(
            "small",
            &over,
            json!({"reclaimPolicy": "Delete", "allowVolumeExpansion": true}),
        )
        .await;
    let over = c.claim("over", &small).size("200Mi").create().await;
    wait_event(
        &c.admin,
        &c.ns,
        &uid_of(&over),
        "ProvisioningFailed",
        &["200Mi", "at most 100Mi"],
        T,
    )
    .await;
    let (fits, _) = c.claim("fits", &small).size("64Mi").bound().await;
    c.pvcs()
        .patch(
            "fits",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "128Mi"}}}})),
        )
        .await
        .unwrap();
    wait_event(
        &c.admin,
        &c.ns,
        &uid_of(&fits),
        "VolumeResizeFailed",
        &["128Mi", "at most 100Mi"],
        T,
    )
    .await;
    let size = rbd_info(&c.bed, "kube", &image_of(&uid_of(&fits))).unwrap()["size"].clone();
    assert_eq!(size, json!(64u64 << 20), "the image keeps its size");
    assert!(!rbd_ls(&c.bed, "kube").contains(&image_of(&uid_of(&over))));
}

/// Large images are purged in a lane of their own. Here "large" starts at 100 MiB and each
/// large purge stalls 30 s (fail points): while two of them hold the large lane, small
/// volumes deleted after them are still purged at once.
#[tokio::test]
async fn huge_purges_never_hold_back_the_others() {
    let c = Scenario::with_env(
        "lanes",
        &[
            ("RBD_PROVISIONER_PURGE_LARGE_MIB", "100"),
            ("RBD_PROVISIONER_FAILPOINT", "sleep-large-purge"),
            ("MAINTENANCE_INTERVAL", "0"),
        ],
    )
    .await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let mut large = Vec::new();
    for n in ["big-1", "big-2"] {
        large.push(c.bound(&class, n, "128Mi").await.1);
    }
    let mut small = Vec::new();
    for n in ["small-1", "small-2", "small-3"] {
        small.push(c.bound(&class, n, "64Mi").await.1);
    }
    for n in ["big-1", "big-2"] {
        c.delete_claim(n).await;
    }
    wait_log(&c.prov, &["failpoint sleep-large-purge"], T).await;
    let started = Instant::now();
    for n in ["small-1", "small-2", "small-3"] {
        c.delete_claim(n).await;
    }
    wait_for("the small volumes purged", T, || async {
        let names = rbd_ls(&c.bed, "kube");
        let trash = trash_names(&c.bed, "kube");
        small
            .iter()
            .all(|u| !names.contains(&image_of(u)) && !trash.contains(&image_of(u)))
            .then_some(())
    })
    .await;
    let took = started.elapsed();
    let trash = trash_names(&c.bed, "kube");
    assert!(
        large.iter().all(|u| trash.contains(&image_of(u))),
        "the large ones were still being purged ({took:?}): {trash:?}"
    );
    wait_for(
        "the large volumes purged too",
        Duration::from_secs(150),
        || async {
            let trash = trash_names(&c.bed, "kube");
            large
                .iter()
                .all(|u| !trash.contains(&image_of(u)))
                .then_some(())
        },
    )
    .await;
}

/// A clone of a clone deeper than the class's maxCloneDepth is flattened once made, and no
/// longer pins its source's snapshot.
#[tokio::test]
async fn clone_chains_are_bounded() {
    let c = Scenario::new("depth").await;
    let class = c
        .class(
            "delete",
            &[("maxCloneDepth", "1")],
            json!({"reclaimPolicy": "Delete"}),
        )
        .await;
    let (_src, _src_uid) = c.bound(&class, "src", "64Mi").await;
    let clone_of =
        |name: &str| json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": name}});
    c.claim("one", &class).spec(clone_of("src")).create().await;
    let one = wait_bound(&c.admin, &c.ns, "one", T).await;
    c.claim("two", &class).spec(clone_of("one")).create().await;
    let two = wait_bound(&c.admin, &c.ns, "two", T).await;
    let (one_image, two_image) = (image_of(&uid_of(&one)), image_of(&uid_of(&two)));
    // Depth 1 is allowed: the first clone keeps its parent.
    assert!(rbd_info(&c.bed, "kube", &one_image).unwrap()["parent"].is_object());
    wait_for("the second clone flattened", T, || async {
        rbd_info(&c.bed, "kube", &two_image)?["parent"]
            .is_null()
            .then_some(())
    })
    .await;
    wait_for("its source snapshot dropped", T, || async {
        (!snapshots(&c.bed, &format!("kube/{one_image}"))
            .iter()
            .any(|s| s.contains(&two_image)))
        .then_some(())
    })
    .await;
}

/// A clone that fails after its source's snapshot was protected takes the snapshot back: the
/// source is never pinned by a clone that does not exist.
#[tokio::test]
async fn a_failed_clone_leaves_no_snapshot_behind() {
    let c = Scenario::with_env("clonefail", &[("RBD_PROVISIONER_FAILPOINT", "fail-clone")]).await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let (_src, src_uid) = c.bound(&class, "src", "64Mi").await;
    let copy = c
        .claim("copy", &class)
        .spec(json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": "src"}}))
        .create()
        .await;
    wait_event(
        &c.admin,
        &c.ns,
        &uid_of(&copy),
        "ProvisioningFailed",
        &["failpoint fail-clone"],
        T,
    )
    .await;
    wait_log(&c.prov, &["failpoint fail-clone: failing"], T).await;
    // After at least one failed attempt, nothing is left on the source.
    let snaps = snapshots(&c.bed, &format!("kube/{}", image_of(&src_uid)));
    assert!(snaps.is_empty(), "{snaps:?}");
    assert!(!rbd_ls(&c.bed, "kube").contains(&image_of(&uid_of(&copy))));
}
