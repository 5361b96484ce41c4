//! "What the provisioner will never do", each reproduced on the real bed: the attack or
//! fault first, then the proof that nothing that is not provably ours was destroyed,
//! exposed or leaked. Images are checked with the `rbd` CLI, not the code under test.

use testbed as common;

use std::process::Command;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume};
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
    let cluster = Api::<Namespace>::all(c.admin.clone())
        .get("kube-system")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
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
    let c = Scenario::serving(
        "sweep",
        &format!("{}.test/rbd", unique("sweep")),
        &[("MAINTENANCE_INTERVAL", "2")],
    )
    .await;
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

/// After a pool rename the PV's pool no longer exists: that is not "the image is gone".
#[tokio::test]
async fn a_missing_pool_never_counts_as_a_deleted_image() {
    let c = Scenario::new("poolgone").await;
    let pool = unique("rbdp-pool");
    let renamed = format!("{pool}-renamed");
    create_pool(&c.bed, &pool);
    let class = c
        .class(
            "delete",
            &[("pool", &pool)],
            json!({"reclaimPolicy": "Delete"}),
        )
        .await;
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

/// Keys do not stay in memory for ever: a Ceph client unused for `--ceph-client-idle` is
/// closed, and one that failed to connect is never kept.
#[tokio::test]
async fn idle_and_failed_ceph_clients_are_not_kept() {
    let name = format!("{}.test/rbd", unique("idle"));
    let addr = free_addr();
    let mut c = Scenario::serving("idle", &name, &[]).await;
    c.prov = Provisioner::start_with(
        &c.bed,
        &name,
        &[("CEPH_CLIENT_IDLE", "3"), ("MAINTENANCE_INTERVAL", "1")],
        &["--http-endpoint", &addr],
        None,
    )
    .await;
    let clients = || async {
        metrics(&addr)
            .lines()
            .find_map(|l| l.strip_prefix("rbd_provisioner_ceph_clients "))
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    let class = c.class("fast", &[], json!({})).await;
    let (good, _uid) = c.bound(&class, "data", "64Mi").await;
    // A class whose admin key is wrong: its connection fails and is not kept.
    key_secret(
        &c.admin,
        "kube-system",
        &format!("{}-wrong", c.ns),
        "AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==",
    )
    .await;
    let wrong = c
        .class(
            "wrong",
            &[("adminSecretName", &format!("{}-wrong", c.ns))],
            json!({}),
        )
        .await;
    let bad = c.claim("bad", &wrong).create().await;
    wait_event(
        &c.admin,
        &c.ns,
        &uid_of(&bad),
        "ProvisioningFailed",
        &["EACCES"],
        T,
    )
    .await;
    let n = wait_for("the clients gauge", T, || async { clients().await }).await;
    assert!(n <= 1, "only the working client is kept, got {n}");
    wait_for("idle clients closed", Duration::from_secs(30), || async {
        (clients().await == Some(0)).then_some(())
    })
    .await;
    cleanup(&c.bed, &c.admin, &c.ns, &[&good, &bad], &["kube"]).await;
}

/// The provisioner is not dumpable: no core file can hold a key it read, and no other process
/// of its own user may read its memory, environment or descriptors. It runs as an unprivileged
/// user here (root, which runs the tests, reads anything): the kernel then gives root its
/// /proc files, and a process of the same user is refused them, while that user still reads
/// those of its other, ordinary processes.
#[tokio::test]
async fn the_provisioner_is_not_dumpable() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let bed = Bed::load();
    let name = format!("{}.test/rbd", unique("nodump"));
    let addr = free_addr();
    /// The kubeconfig copy holds a token: gone with the test, failed or not.
    struct Scratch(std::path::PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let (p, scratch) = Provisioner::start_as(&bed, &name, NOBODY, &["--metrics-addr", &addr]).await;
    let _scratch = Scratch(scratch);
    // Well past start-up, as that user: it reached the API server and took its Lease.
    common::wait_log(&p, &["became leader"], T).await;
    let pid = p.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with(&format!("Uid:\t{NOBODY}\t"))),
        "not running as {NOBODY}: {status}"
    );
    let as_nobody = |path: String| {
        Command::new("cat")
            .arg(path)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap()
    };

    // The control: the same user reads the environment of an ordinary process of its own.
    let mut other = Command::new("sleep")
        .arg("60")
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .unwrap();
    let read = as_nobody(format!("/proc/{}/environ", other.id()));
    let _ = other.kill();
    let _ = other.wait();
    assert!(
        read.status.success(),
        "{NOBODY} cannot read its own process's environ: {}",
        String::from_utf8_lossy(&read.stderr)
    );

    for f in ["environ", "mem", "maps", "fd"] {
        let owner = std::fs::metadata(format!("/proc/{pid}/{f}")).unwrap().uid();
        assert_eq!(owner, 0, "/proc/{pid}/{f} is owned by {owner}: dumpable");
    }
    for f in ["environ", "maps", "mem"] {
        let read = as_nobody(format!("/proc/{pid}/{f}"));
        assert!(
            !read.status.success() && String::from_utf8_lossy(&read.stderr).contains("denied"),
            "{NOBODY} read /proc/{pid}/{f} of its provisioner: {:?}",
            read.status
        );
    }

    // It still reads its own /proc (its metrics), as that user.
    let metrics = wait_for("metrics of its own /proc", T, || async {
        let text = metrics(&addr);
        let positive = |name: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .any(|v| v.parse::<f64>().is_ok_and(|v| v > 0.0))
        };
        [
            "process_open_fds",
            "process_resident_memory_bytes",
            "rbd_provisioner_threads",
        ]
        .iter()
        .all(|m| positive(m))
        .then_some(text)
    })
    .await;
    assert!(metrics.contains("rbd_provisioner_leader 1"), "{metrics}");

    drop(p);
    let admin = bed.admin().await;
    let _ = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(admin, "kube-system")
        .delete(&domain::lease::lease_name(&name), &DeleteParams::default())
        .await;
}
