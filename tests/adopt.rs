//! `rbd-provisioner adopt` on the bed: a kept volume (Retain, claim and PV deleted) gets its PV
//! back with every byte (`rbd export | sha256sum`), a crash between the PV and the re-stamp is
//! finished by a rerun, and each refusal that can be staged here is refused with its reason
//! and nothing written.

#[allow(dead_code)]
#[path = "data/bytes.rs"]
mod bytes;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use bytes::*;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};
use testbed::*;

const T: Duration = Duration::from_secs(60);
const ADOPTED: &str = "rbd-provisioner.ceph.com/adopted-image-id";

/// Runs `adopt --pool kube --storage-class CLASS -o json ARGS` as the operator would; its exit
/// status and the rows it printed.
fn adopt(c: &Scenario, class: &str, args: &[&str], env: &[(&str, &str)]) -> (Output, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_rbd-provisioner"))
        .arg("--kubeconfig")
        .arg(&c.bed.kubeconfig)
        .args(["--provisioner-name", &c.name])
        .args(["adopt", "--pool", "kube", "--storage-class", class])
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("RBD_PROVISIONER_FAILPOINT")
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run adopt");
    let rows = if args.contains(&"json") && !out.stdout.is_empty() {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "adopt -o json printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    } else {
        vec![]
    };
    (out, rows)
}

/// `adopt -o json --image IMAGE ARGS`: the image's one row (the command must succeed).
fn row_of(c: &Scenario, class: &str, image: &str, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json", "--image", image];
    all.extend_from_slice(args);
    let (out, rows) = adopt(c, class, &all, &[]);
    assert_success("adopt", &out);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    rows[0].clone()
}

/// `adopt --image IMAGE --apply`, which must say it did `what`.
fn applied(c: &Scenario, class: &str, image: &str, what: &str) {
    let row = row_of(c, class, image, &["--apply"]);
    let said = row["applied"].as_str().unwrap_or_default();
    assert!(said.starts_with(what), "{row:#}");
}

/// A scenario with a Retain class; the class's name.
async fn with_retain(prefix: &str) -> (Scenario, String) {
    let c = Scenario::new(prefix).await;
    let class = c
        .class("retain", &[], json!({"reclaimPolicy": "Retain"}))
        .await;
    (c, class)
}

/// Deletes claim `name` (of uid `uid`) and then its Released PV, as an operator keeping the
/// data would: the image stays.
async fn forget(c: &Scenario, name: &str, uid: &str) {
    c.delete_claim(name).await;
    wait_absent(&c.pvcs(), name, "the claim gone", T).await;
    let pv = format!("pvc-{uid}");
    c.wait_pv_phase(&pv, "Released", T).await;
    c.pvs().delete(&pv, &DeleteParams::default()).await.unwrap();
    c.wait_pv_gone(uid).await;
}

/// A kept volume: claim `name` bound on the Retain `class`, then forgotten. Its claim uid.
async fn kept(c: &Scenario, class: &str, name: &str, size: &str) -> String {
    let (_, uid) = c.claim(name, class).size(size).bound().await;
    forget(c, name, &uid).await;
    uid
}

fn spec(image: &str) -> String {
    format!("kube/{image}")
}

/// The kept volume, dry-run (nothing changes), `--apply`, and a new claim of the stamped name
/// bound to it with the same bytes; the image's stamp names the new PV.
#[tokio::test]
async fn a_kept_volume_is_adopted_with_its_bytes() {
    let (c, class) = with_retain("adopt").await;
    let (claim, uid) = c.claim("data", &class).size("32Mi").bound().await;
    let image = image_of(&uid);
    let size = 32 * MIB;
    let writes = extents(24, size);
    let a = overlay(&vec![0; size], &writes);
    write_extents(&c.bed, &spec(&image), &writes);
    let before = assert_image(&c.bed, &spec(&image), &a);
    let flavour = volume_source(&c.pv_of(&claim).await).csi;
    drop(claim);
    forget(&c, "data", &uid).await;
    let pv = format!("pvc-{uid}");
    let meta_before = image_meta(&c.bed, &spec(&image));

    // audit -o json parses and lists it as kept.
    let out = Command::new(env!("CARGO_BIN_EXE_rbd-provisioner"))
        .arg("--kubeconfig")
        .arg(&c.bed.kubeconfig)
        .args(["--provisioner-name", &c.name])
        .args(["audit", "-o", "json", "--storage-class", &class])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert_success("audit -o json", &out);
    let report: Value = serde_json::from_slice(&out.stdout).expect("audit -o json is JSON");
    assert!(
        report["orphaned_images"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["image"] == image.as_str()),
        "{report:#}"
    );

    // Dry run over the namespace: listed as adoptable, nothing written.
    let (out, rows) = adopt(&c, &class, &["-o", "json", "--namespace", &c.ns], &[]);
    assert_success("adopt dry run", &out);
    let row = rows
        .iter()
        .find(|r| r["image"] == image.as_str())
        .unwrap_or_else(|| panic!("{image} not listed: {rows:#?}"));
    assert_eq!(row["status"], "adoptable", "{row:#}");
    assert_eq!(row["claim"], format!("{}/data", c.ns));
    assert_eq!(row["target"], format!("{}/data", c.ns));
    assert_eq!(row["pv"], pv.as_str());
    assert_eq!(row["size"], size as u64);
    assert!(row["age_seconds"].as_i64().unwrap() >= 0);
    let (out, _) = adopt(&c, &class, &["--namespace", &c.ns], &[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&image) && table.contains("dry run"),
        "{table}"
    );
    assert!(
        c.pvs().get_opt(&pv).await.unwrap().is_none(),
        "dry run wrote a PV"
    );
    assert_eq!(
        image_meta(&c.bed, &spec(&image)),
        meta_before,
        "dry run re-stamped"
    );

    applied(&c, &class, &image, "adopted");
    let written = c.pvs().get(&pv).await.unwrap();
    let s = written.spec.as_ref().unwrap();
    assert_eq!(
        s.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
    assert_eq!(s.storage_class_name.as_deref(), Some(class.as_str()));
    let r = s.claim_ref.as_ref().unwrap();
    assert_eq!(
        (r.namespace.as_deref(), r.name.as_deref()),
        (Some(c.ns.as_str()), Some("data"))
    );
    let src = volume_source(&written);
    assert_eq!(format!("{}/{}", src.pool, src.image), spec(&image));
    assert_eq!(src.csi, flavour, "the flavour the provisioner gave it");

    let (claim, new_uid) = c.claim("data", &class).size("32Mi").bound().await;
    assert_ne!(new_uid, uid);
    drop(claim);
    let bound = c.pvcs().get("data").await.unwrap();
    assert_eq!(
        bound.spec.unwrap().volume_name.as_deref(),
        Some(pv.as_str()),
        "bound to the adopted PV"
    );
    assert_eq!(
        assert_image(&c.bed, &spec(&image), &a),
        before,
        "the same bytes"
    );
    let meta = image_meta(&c.bed, &spec(&image));
    assert_eq!(meta["rbd-provisioner.ceph.com/pv"], pv);
    assert_eq!(
        Some(&meta["rbd-provisioner.ceph.com/pv-uid"]),
        written.metadata.uid.as_ref()
    );
    assert_eq!(meta["rbd-provisioner.ceph.com/pv-state"], "written");
    assert!(meta.contains_key("rbd-provisioner.ceph.com/adopted"));
    // Nothing left to do, and a rerun knows it.
    assert_eq!(row_of(&c, &class, &image, &[])["status"], "adopted");
}

/// `adopt --apply` killed after writing the PV and before re-stamping the image: the rerun
/// recognises its own PV (the image's id on it) and finishes, instead of refusing an image
/// "named by a PV".
#[tokio::test]
async fn a_rerun_finishes_an_adoption_killed_before_the_restamp() {
    let (c, class) = with_retain("adoptcrash").await;
    let uid = kept(&c, &class, "data", "16Mi").await;
    let (image, pv) = (image_of(&uid), format!("pvc-{uid}"));
    let (out, _) = adopt(
        &c,
        &class,
        &["--image", &image, "--apply"],
        &[("RBD_PROVISIONER_FAILPOINT", "exit-adopt-before-restamp")],
    );
    assert_eq!(out.status.code(), Some(86), "{out:?}");
    let written = c.pvs().get(&pv).await.expect("the PV was written");
    let id = rbd_json(&c.bed, &["info", &spec(&image)]).unwrap()["id"].clone();
    assert_eq!(
        Some(&json!(
            &written.metadata.annotations.as_ref().unwrap()[ADOPTED]
        )),
        Some(&id)
    );
    let meta = image_meta(&c.bed, &spec(&image));
    assert!(
        !meta.contains_key("rbd-provisioner.ceph.com/pv-uid"),
        "{meta:?}"
    );

    assert_eq!(row_of(&c, &class, &image, &[])["status"], "finish");
    applied(&c, &class, &image, "finished");
    let meta = image_meta(&c.bed, &spec(&image));
    assert_eq!(
        Some(&meta["rbd-provisioner.ceph.com/pv-uid"]),
        written.metadata.uid.as_ref()
    );
    assert_eq!(row_of(&c, &class, &image, &[])["status"], "adopted");
}

/// An image of the test's own, made with `rbd create`, carrying `meta` (a copy of a real stamp
/// with its names moved to this image, then changed by the test).
fn staged(bed: &Bed, meta: &BTreeMap<String, String>, changes: &[(&str, &str)]) -> String {
    let u = unique("u");
    let image = image_of(&u);
    cli(bed, "rbd", &["create", "--size", "8", &spec(&image)]);
    if meta.is_empty() {
        return image;
    }
    let mut m = meta.clone();
    m.insert("rbd-provisioner.ceph.com/pv".into(), format!("pvc-{u}"));
    m.insert("rbd-provisioner.ceph.com/claim-uid".into(), u.clone());
    for (k, v) in changes {
        m.insert(format!("rbd-provisioner.ceph.com/{k}"), v.to_string());
    }
    for (k, v) in &m {
        cli(bed, "rbd", &["image-meta", "set", &spec(&image), k, v]);
    }
    image
}

fn refused(row: &Value, why: &str) {
    assert_eq!(row["status"], "refused", "{row:#}");
    assert!(
        row["reason"].as_str().unwrap_or_default().contains(why),
        "{why:?} not in {row:#}"
    );
}

/// Every refusal the bed can stage, each with its reason, nothing written; the table of the
/// whole pool says the same; `--apply` on a refused image writes nothing.
#[tokio::test]
async fn refusals_say_why_and_write_nothing() {
    let (c, class) = with_retain("adoptno").await;
    let uid = kept(&c, &class, "data", "16Mi").await;
    let image = image_of(&uid);
    let stamp = image_meta(&c.bed, &spec(&image));
    let claim_of = |name: &str| format!("{}/{name}", c.ns);

    let unstamped = staged(&c.bed, &BTreeMap::new(), &[]);
    let other_prov = staged(&c.bed, &stamp, &[("provisioner", "someone-else.test/rbd")]);
    let other_fsid = staged(
        &c.bed,
        &stamp,
        &[("fsid", "00000000-0000-0000-0000-000000000000")],
    );
    let other_pool = staged(&c.bed, &stamp, &[("pool-id", "999")]);
    let other_k8s = staged(&c.bed, &stamp, &[("cluster", "another-kube-system")]);
    let busy = staged(&c.bed, &stamp, &[("claim", &claim_of("busy"))]);
    let early = staged(&c.bed, &stamp, &[("claim", &claim_of("early"))]);
    let trashed = staged(&c.bed, &stamp, &[]);
    let _guard = Images(
        c.bed.clone(),
        [
            &unstamped,
            &other_prov,
            &other_fsid,
            &other_pool,
            &other_k8s,
            &busy,
            &early,
            &image,
        ]
        .iter()
        .map(|i| spec(i))
        .collect(),
    );
    cli(&c.bed, "rbd", &["trash", "mv", &spec(&trashed)]);

    refused(&row_of(&c, &class, &unstamped, &[]), "not stamped");
    refused(
        &row_of(&c, &class, &other_prov, &[]),
        "someone-else.test/rbd",
    );
    refused(
        &row_of(&c, &class, &other_fsid, &[]),
        "Ceph cluster 00000000",
    );
    refused(&row_of(&c, &class, &other_pool, &[]), "pool id 999");
    refused(
        &row_of(&c, &class, &other_k8s, &[]),
        "--from-cluster another-kube-system",
    );
    assert_eq!(
        row_of(
            &c,
            &class,
            &other_k8s,
            &["--from-cluster", "another-kube-system"]
        )["status"],
        "adoptable"
    );
    refused(&row_of(&c, &class, &trashed, &[]), "in the trash");

    // The stamped claim exists and is bound to another volume.
    let (_, busy_uid) = c.bound(&class, "busy", "16Mi").await;
    refused(
        &row_of(&c, &class, &busy, &[]),
        &format!("bound to volume pvc-{busy_uid}"),
    );
    // A claim of the stamped name made before adoption (a tenant's, say), which no
    // provisioner serves: not handed the data unless the operator names it.
    c.claim("early", &format!("{}-none", c.ns))
        .size("8Mi")
        .create()
        .await;
    refused(&row_of(&c, &class, &early, &[]), "is not the stamped claim");

    // Named by a PV someone wrote by hand.
    let static_pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("{}-static", c.ns)},
        "spec": {
            "capacity": {"storage": "16Mi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": c.ns, "name": "static"},
            "rbd": {"monitors": ["127.0.0.1:6789"], "pool": "kube", "image": image, "user": "kube"}
        }
    }))
    .unwrap();
    c.pvs()
        .create(&PostParams::default(), &static_pv)
        .await
        .unwrap();
    refused(&row_of(&c, &class, &image, &[]), "named by PV");
    c.pvs()
        .delete(&format!("{}-static", c.ns), &DeleteParams::default())
        .await
        .unwrap();
    wait_absent(&c.pvs(), &format!("{}-static", c.ns), "static PV gone", T).await;

    // Open read/write elsewhere, as on a node that mapped it.
    let other = c.bed.ceph().await;
    let held = other.open_read_write("kube", &image).await.unwrap();
    refused(
        &row_of(&c, &class, &image, &["--apply"]),
        "open read/write by",
    );
    drop(held);
    assert_eq!(row_of(&c, &class, &image, &[])["status"], "adoptable");

    // The whole pool's table says the same, and --apply wrote nothing for any of them.
    let (out, rows) = adopt(&c, &class, &["-o", "json"], &[]);
    assert_success("adopt", &out);
    for (i, status) in [
        (&other_prov, "refused"),
        (&other_fsid, "refused"),
        (&trashed, "refused"),
        (&image, "adoptable"),
    ] {
        let row = rows.iter().find(|r| r["image"] == i.as_str());
        assert_eq!(
            row.map(|r| &r["status"]),
            Some(&json!(status)),
            "{i}: {row:?}"
        );
    }
    for i in [&other_prov, &other_fsid, &other_pool, &busy, &early, &image] {
        let pv = format!("pvc-{}", i.trim_start_matches("kubernetes-dynamic-pvc-"));
        assert!(
            c.pvs().get_opt(&pv).await.unwrap().is_none(),
            "{pv} written"
        );
    }
    let id = rbd_trash_entries(&c.bed, "kube")
        .into_iter()
        .find(|(_, n)| n == &trashed)
        .map(|(id, _)| id)
        .unwrap();
    cli(&c.bed, "rbd", &["trash", "rm", &format!("kube/{id}")]);
}
