//! Data, not metadata: bytes written into volumes with the `rbd` CLI survive every data path
//! the provisioner has (clones, expansion, flattening, `migrate-to-csi`, taking over the old
//! provisioner's volumes and growing them), judged by `rbd export … | sha256sum`. The
//! project's own librbd code is what is under test, so it neither writes nor reads the bytes.

mod bytes;
mod snapshots;

use testbed as common;

use std::process::Command;
use std::time::Duration;

use bytes::*;
use common::*;
use k8s_openapi::api::core::v1::PersistentVolume;
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// `kube/<image>` of the claim with uid `uid`, as the `rbd` CLI takes it.
fn spec_of(uid: &str) -> String {
    format!("kube/{}", image_of(uid))
}

fn from(name: &str) -> serde_json::Value {
    json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": name}})
}

fn parent_of(bed: &Bed, spec: &str) -> Option<serde_json::Value> {
    let info = rbd_json(bed, &["info", spec]).unwrap_or_else(|| panic!("rbd info {spec}"));
    info.get("parent").cloned()
}

/// Deletes claims through the provisioner, one after the other in the order given (clones
/// before their sources, so no deletion waits on a flatten), and waits until each PV and
/// image is gone: nothing the test made is left for the guard, which cannot remove a source
/// whose snapshots still have clones.
async fn delete_claims(s: &Stage, claims: &[(&str, &str)]) {
    for (name, uid) in claims {
        s.delete_claim(name).await;
        s.wait_pv_gone(uid).await;
        let image = format!("kubernetes-dynamic-pvc-{uid}");
        assert!(!rbd_exists(&s.bed, "kube", &image), "{image} still listed");
    }
}

/// The checker is not vacuous: an image written with `rbd import` matches its own bytes and
/// reports a mismatch, at the right offset, against bytes that differ by one, against other
/// data, and against a wrong length; the zero-tail check sees data where zeros are expected.
#[tokio::test]
async fn the_byte_check_can_fail() {
    let bed = Bed::load();
    let spec = format!("kube/{}", unique("data-control"));
    let _guard = Images(bed.clone(), vec![spec.clone()]);
    let a = pattern(0xA, 4 * MIB + 123);
    import_image(&bed, &spec, &a);
    assert_eq!(image_size(&bed, &spec), a.len() as u64);
    let digest = assert_image(&bed, &spec, &a);
    assert_eq!(digest, sha256_of(&a));

    let mut one_flipped = a.clone();
    let at = 3 * MIB + 777;
    one_flipped[at] ^= 0x01;
    let err = compare_image(&bed, &spec, &one_flipped).expect_err("one byte differs");
    assert!(
        err.contains("1 of") && err.contains(&format!("first at offset Some({at})")),
        "{err}"
    );

    let b = pattern(0xB, a.len());
    assert_ne!(a, b);
    let err = compare_image(&bed, &spec, &b).expect_err("other data");
    assert!(err.contains("bytes differ"), "{err}");

    let err = compare_image(&bed, &spec, &a[..a.len() - 1]).expect_err("shorter");
    assert!(err.contains("expected"), "{err}");

    // Data written with import-diff lands where the checker expects it, and a zero tail
    // check over written data fails.
    let writes = vec![(MIB + 5, pattern(0xC, 1000))];
    write_extents(&bed, &spec, &writes);
    let ac = overlay(&a, &writes);
    assert_image(&bed, &spec, &ac);
    assert!(compare_image(&bed, &spec, &a).is_err(), "the write is seen");
    let (nonzero, len) = nonzero_tail(&bed, &spec, MIB);
    assert_eq!(len, a.len() - MIB);
    assert!(
        nonzero > len / 2,
        "random data is mostly non-zero: {nonzero} of {len}"
    );
}

/// A claim's bytes, written at several offsets with `rbd import-diff`, are every byte of its
/// clones (a bigger clone reads zeros past them); afterwards source and clone are independent
/// both ways (copy-on-write).
#[tokio::test]
async fn clones_hold_every_byte_of_their_source() {
    let c = Scenario::new("dclone").await;
    let class = c.class("fast", &[], json!({})).await;
    let (_, src_uid) = c.claim("src", &class).size("32Mi").bound().await;
    let src = spec_of(&src_uid);
    let size = 32 * MIB;
    let writes = extents(1, size);
    let a = overlay(&vec![0; size], &writes);
    write_extents(&c.bed, &src, &writes);
    let digest = assert_image(&c.bed, &src, &a);

    let same = c.claim("same", &class).size("32Mi").spec(from("src"));
    let same_uid = uid_of(&same.create().await);
    let bigger = c.claim("bigger", &class).size("48Mi").spec(from("src"));
    let bigger_uid = uid_of(&bigger.create().await);
    wait_bound(&c.admin, &c.ns, "same", T).await;
    wait_bound(&c.admin, &c.ns, "bigger", T).await;
    let (same_img, bigger_img) = (spec_of(&same_uid), spec_of(&bigger_uid));
    for img in [&same_img, &bigger_img] {
        let parent = parent_of(&c.bed, img).expect("a copy-on-write clone has a parent");
        assert_eq!(parent["image"], json!(src.trim_start_matches("kube/")));
    }
    assert_eq!(assert_image(&c.bed, &same_img, &a), digest);
    let mut a_grown = a.clone();
    a_grown.resize(48 * MIB, 0);
    assert_image(&c.bed, &bigger_img, &a_grown);
    assert_zero_tail(&c.bed, &bigger_img, size, 48 * MIB);

    // Writes after cloning stay where they were made.
    let later = vec![(MIB / 2, pattern(2, MIB)), (20 * MIB, pattern(3, 4096))];
    write_extents(&c.bed, &src, &later);
    let src_now = overlay(&a, &later);
    assert_image(&c.bed, &src, &src_now);
    assert_eq!(assert_image(&c.bed, &same_img, &a), digest);
    let mine = vec![(7 * MIB, pattern(4, 3 * MIB))];
    write_extents(&c.bed, &same_img, &mine);
    assert_image(&c.bed, &same_img, &overlay(&a, &mine));
    assert_image(&c.bed, &src, &src_now);
    assert_image(&c.bed, &bigger_img, &a_grown);

    delete_claims(
        &c,
        &[
            ("same", &same_uid),
            ("bigger", &bigger_uid),
            ("src", &src_uid),
        ],
    )
    .await;
}

/// Growing a claim keeps every byte it had, up to its last one, and the grown part reads as
/// zeros.
#[tokio::test]
async fn expansion_keeps_the_bytes_and_adds_zeros() {
    let c = Scenario::new("dgrow").await;
    let class = c.grown_by_us_class("grow", &[], json!({})).await;
    let (pvc, uid) = c.claim("data", &class).size("32Mi").bound().await;
    let img = spec_of(&uid);
    let (old, new) = (32 * MIB, 64 * MIB);
    let writes = extents(5, old);
    let a = overlay(&vec![0; old], &writes);
    write_extents(&c.bed, &img, &writes);
    assert_image(&c.bed, &img, &a);
    assert!(
        a[old - 8..].iter().any(|b| *b != 0),
        "data up to the last bytes"
    );

    c.grow(&pvc, "64Mi", &["from 32 MiB to 64 MiB"], T).await;
    assert_eq!(image_size(&c.bed, &img), new as u64);
    let mut grown = a.clone();
    grown.resize(new, 0);
    assert_image(&c.bed, &img, &grown);
    assert_zero_tail(&c.bed, &img, old, new);
    delete_claims(&c, &[("data", &uid)]).await;
}

/// Flattening copies the data of every ancestor into the clone: a clone deeper than the
/// class's `maxCloneDepth` is flattened in the background, and deleting a source flattens
/// its clones first; both keep every byte.
#[tokio::test]
async fn flattened_clones_keep_every_byte() {
    let c = Scenario::new("dflat").await;
    let class = c.class("flat", &[("maxCloneDepth", "1")], json!({})).await;
    let size = 32 * MIB;
    let (_, src_uid) = c.claim("src", &class).size("32Mi").bound().await;
    let src = spec_of(&src_uid);
    let writes = extents(7, size);
    let a = overlay(&vec![0; size], &writes);
    write_extents(&c.bed, &src, &writes);
    assert_image(&c.bed, &src, &a);

    // Depth 1 is allowed: a copy-on-write clone, to which the test adds bytes of its own.
    let (_, mid_uid) = c
        .claim("mid", &class)
        .size("32Mi")
        .spec(from("src"))
        .bound()
        .await;
    let mid = spec_of(&mid_uid);
    assert!(
        parent_of(&c.bed, &mid).is_some(),
        "depth 1 is not flattened"
    );
    let own = vec![
        (9 * MIB + 3, pattern(8, 2 * MIB)),
        (size - 4096, pattern(9, 4096)),
    ];
    write_extents(&c.bed, &mid, &own);
    let ab = overlay(&a, &own);
    assert_image(&c.bed, &mid, &ab);

    // Depth 2: flattened, so its bytes come from both ancestors.
    let (_, deep_uid) = c
        .claim("deep", &class)
        .size("32Mi")
        .spec(from("mid"))
        .bound()
        .await;
    let deep = spec_of(&deep_uid);
    wait_for("the deep clone flattened", T, || async {
        parent_of(&c.bed, &deep).is_none().then_some(())
    })
    .await;
    wait_log(&c.prov, &["flattened clone", &deep_uid], T).await;
    assert_image(&c.bed, &deep, &ab);
    // The snapshot taken on `mid` for `deep` is dropped in the background after the flatten,
    // and the source is deleted right away, which flattens `mid` too: the two once ran at the
    // same time and left `mid` registered as a child of the source's snapshot (a stale `rbd
    // children` entry), so the source's deletion failed with EBUSY for ever (8 runs of 8 at
    // this moment). Now they take turns; the snapshot may then stay on `mid` until `mid` goes.
    // Deleting the source flattens the clone that still depends on it.
    c.delete_claim("src").await;
    c.wait_pv_gone(&src_uid).await;
    assert!(!rbd_exists(&c.bed, "kube", src.trim_start_matches("kube/")));
    assert!(
        parent_of(&c.bed, &mid).is_none(),
        "flattened before its source went"
    );
    assert_image(&c.bed, &mid, &ab);
    assert_image(&c.bed, &deep, &ab);
    delete_claims(&c, &[("deep", &deep_uid), ("mid", &mid_uid)]).await;
}

/// `migrate-to-csi` replaces the PV, never the image: the same image, the same bytes.
#[tokio::test]
async fn migrate_to_csi_keeps_the_bytes() {
    let stage = Stage::new("dmig", &format!("{}.test/rbd", unique("dmig"))).await;
    csi_driver(&stage.admin, "rbd.csi.ceph.com").await;
    csi_secret(
        &stage.admin,
        &stage.ns,
        "csi-rbd-node",
        "kube",
        &stage.bed.kube_key,
    )
    .await;
    let ns = stage.ns.clone();
    let class = stage
        .class(
            "class",
            &[
                ("clusterID", "bed-cluster"),
                ("csiNodeStageSecretName", "csi-rbd-node"),
                ("csiNodeStageSecretNamespace", &ns),
            ],
            json!({}),
        )
        .await;
    // spec.rbd PVs on both planes: what migrate-to-csi moves.
    let prov = Provisioner::start(&stage.bed, &stage.name, &[("VOLUME_FLAVOR", "rbd")]).await;
    let c = Scenario { stage, prov };
    let (pvc, uid) = c.claim("data", &class).size("32Mi").bound().await;
    let pv_name = format!("pvc-{uid}");
    assert!(c.pv_of(&pvc).await.spec.unwrap().rbd.is_some());
    let img = spec_of(&uid);
    let size = 32 * MIB;
    let writes = extents(11, size);
    let a = overlay(&vec![0; size], &writes);
    write_extents(&c.bed, &img, &writes);
    let before = assert_image(&c.bed, &img, &a);
    let id_before = rbd_json(&c.bed, &["info", &img]).unwrap()["id"].clone();

    let out = Command::new(env!("CARGO_BIN_EXE_rbd-provisioner"))
        .arg("--kubeconfig")
        .arg(&c.bed.kubeconfig)
        .args([
            "migrate-to-csi",
            "--storage-class",
            &class,
            "--provisioner-name",
            &c.name,
        ])
        .env_remove("KUBECONFIG_PATH")
        .env_remove("PROVISIONER_NAME")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run migrate-to-csi");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "migrate-to-csi failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(&pv_name))
        .unwrap_or_else(|| panic!("no line for {pv_name} in {text}"));
    assert!(line.ends_with(": migrated"), "{line}");
    let pv: PersistentVolume = c.pvs().get(&pv_name).await.unwrap();
    let src = volume_source(&pv);
    assert!(src.csi, "the PV is csi now");
    assert_eq!(format!("{}/{}", src.pool, src.image), img);
    wait_bound(&c.admin, &c.ns, "data", T).await;
    assert_eq!(
        rbd_json(&c.bed, &["info", &img]).unwrap()["id"],
        id_before,
        "the same image"
    );
    assert_eq!(assert_image(&c.bed, &img, &a), before);
    delete_claims(&c, &[("data", &uid)]).await;
}

/// A volume of the old external-storage provisioner, its data written by `rbd import` before
/// this provisioner ever ran, taken over (recorded: its image stamped) and grown: every byte
/// is kept and the grown part reads as zeros.
#[tokio::test]
async fn old_provisioner_volumes_keep_their_bytes_when_taken_over_and_grown() {
    let c = Scenario::new("dold").await;
    let rbd = [("volumeFlavor", "rbd")];
    let delete = json!({"reclaimPolicy": "Delete"});
    let class = c.grown_by_us_class("old", &rbd, delete).await;
    let (old, new) = (32 * MIB, 48 * MIB);
    // The old provisioner named images after a time uuid, not after the claim.
    let image = format!(
        "kubernetes-dynamic-pvc-{}",
        unique("5a6c7e52-1c8b-11e9-9d9e")
    );
    let img = format!("kube/{image}");
    let writes = extents(13, old);
    let a = overlay(&vec![0; old], &writes);
    import_image(&c.bed, &img, &a);
    let _guard = Images(c.bed.clone(), vec![img.clone()]);
    let before = assert_image(&c.bed, &img, &a);

    let pv_name = unique("pvc-legacy");
    let pvc = bind_old_volume(&c, "data", &pv_name, &image, &class, "32Mi").await;
    let meta = rbd_json(&c.bed, &["image-meta", "list", &img]).expect("rbd image-meta list");
    assert_eq!(
        meta["rbd-provisioner.ceph.com/pv"],
        json!(pv_name),
        "stamped as its PV's: {meta}"
    );
    assert_eq!(
        assert_image(&c.bed, &img, &a),
        before,
        "recording wrote no data"
    );

    c.grow(&pvc, "48Mi", &["from 32 MiB to 48 MiB", &pv_name], T)
        .await;
    assert_eq!(image_size(&c.bed, &img), new as u64);
    let mut grown = a.clone();
    grown.resize(new, 0);
    assert_image(&c.bed, &img, &grown);
    assert_zero_tail(&c.bed, &img, old, new);

    c.delete_claim("data").await;
    wait_absent(&c.pvs(), &pv_name, "the old volume deleted", T).await;
    assert!(!rbd_exists(&c.bed, "kube", &image));
}
