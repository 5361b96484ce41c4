//! Data, not metadata: bytes written into volumes with the `rbd` CLI survive every data path
//! the provisioner has (clones, expansion, flattening, `migrate-to-csi`, taking over the old
//! provisioner's volumes and growing them), judged by `rbd export … | sha256sum`. The
//! project's own librbd code is what is under test, so it neither writes nor reads the bytes.

use testbed as common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(60);
const MIB: usize = 1 << 20;

/// Deterministic pseudo-random bytes (splitmix64): a failure can be replayed from its seed,
/// and two seeds never give the same data, so a stale copy cannot pass for a fresh one.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Extents of pseudo-random data for an image of `size` bytes: at 0, at unaligned offsets
/// across boundaries of the 4 MiB objects, and up to the very last byte (so a grown tail
/// starts right after written data). Each extent has data of its own seed.
fn extents(seed: u64, size: usize) -> Vec<(usize, Vec<u8>)> {
    assert!(size >= 32 * MIB, "the layout needs 32 MiB");
    let layout = [
        (0, MIB),
        (3 * MIB + 4097, 2 * MIB),
        (size / 2 - 4 * MIB - 512, MIB + 1000),
        (size - MIB, MIB),
    ];
    let writes: Vec<(usize, Vec<u8>)> = layout
        .iter()
        .enumerate()
        .map(|(i, &(off, len))| {
            (
                off,
                pattern(seed.wrapping_mul(31).wrapping_add(i as u64), len),
            )
        })
        .collect();
    // A pattern of zeros would match a fresh image and prove nothing; overlapping extents
    // would hide one write under another.
    for (i, (off, data)) in writes.iter().enumerate() {
        let nonzero = data.iter().filter(|b| **b != 0).count();
        assert!(
            nonzero * 100 > data.len() * 99,
            "extent {i}: {nonzero} of {} non-zero",
            data.len()
        );
        if let Some((next, _)) = writes.get(i + 1) {
            assert!(off + data.len() <= *next, "extent {i} overlaps the next");
        }
    }
    let total: usize = writes.iter().map(|(_, d)| d.len()).sum();
    assert_eq!((writes.len(), total), (4, 5 * MIB + 1000));
    let (last_off, last) = writes.last().unwrap();
    assert_eq!(
        last_off + last.len(),
        size,
        "the last extent ends at the last byte"
    );
    writes
}

/// The image's expected contents after `writes` land on `base`.
fn overlay(base: &[u8], writes: &[(usize, Vec<u8>)]) -> Vec<u8> {
    let mut out = base.to_vec();
    for (off, data) in writes {
        out[*off..off + data.len()].copy_from_slice(data);
    }
    out
}

fn conf(bed: &Bed) -> std::path::PathBuf {
    bed.dir.join("ceph/ceph.conf")
}

/// Runs `rbd <args>` with `input` on its stdin; panics with its stderr when it fails.
fn rbd_stdin(bed: &Bed, args: &[&str], input: &[u8]) {
    let mut child = Command::new("rbd")
        .arg("-c")
        .arg(conf(bed))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the rbd CLI");
    // rbd prints almost nothing with --no-progress, so writing everything before reading
    // its output cannot deadlock.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input)
        .expect("feed rbd");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "rbd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `writes` into the existing image `spec` (pool/image) with `rbd import-diff`: an
/// `rbd diff v1` stream of data records only (no size record, so the image keeps its size;
/// no snapshot records, so none is made), the way a node's writes would land.
fn write_extents(bed: &Bed, spec: &str, writes: &[(usize, Vec<u8>)]) {
    let mut diff = b"rbd diff v1\n".to_vec();
    for (off, data) in writes {
        diff.push(b'w');
        diff.extend_from_slice(&(*off as u64).to_le_bytes());
        diff.extend_from_slice(&(data.len() as u64).to_le_bytes());
        diff.extend_from_slice(data);
    }
    diff.push(b'e');
    rbd_stdin(bed, &["import-diff", "--no-progress", "-", spec], &diff);
}

/// Creates image `spec` holding exactly `bytes`, with `rbd import` (layering only, as the old
/// provisioner made its images).
fn import_image(bed: &Bed, spec: &str, bytes: &[u8]) {
    rbd_stdin(
        bed,
        &[
            "import",
            "--no-progress",
            "--image-format",
            "2",
            "--image-feature",
            "layering",
            "-",
            spec,
        ],
        bytes,
    );
}

/// `sha256sum` of `bytes`: the same tool judges both sides.
fn sha256_of(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    let mut stdin = child.stdin.take().unwrap();
    let data = bytes.to_vec();
    // sha256sum prints only at the end, but a pipe holds 64 KiB: feed it from a thread.
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().expect("feed sha256sum");
    assert!(out.status.success());
    digest_field(&out.stdout)
}

fn digest_field(out: &[u8]) -> String {
    let d = String::from_utf8_lossy(out)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(d.len(), 64, "sha256sum printed {d:?}");
    d
}

/// `rbd export POOL/IMAGE - | sha256sum`, literally, failing if either side of the pipe does.
fn image_sha256(bed: &Bed, spec: &str) -> String {
    let out = Command::new("bash")
        .args([
            "-c",
            "set -o pipefail; rbd -c \"$1\" export --no-progress \"$2\" - | sha256sum",
        ])
        .arg("bash")
        .arg(conf(bed))
        .arg(spec)
        .output()
        .expect("run rbd export | sha256sum");
    assert!(
        out.status.success(),
        "rbd export {spec} | sha256sum failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    digest_field(&out.stdout)
}

/// Every byte of image `spec`, as `rbd export` streams it.
fn export(bed: &Bed, spec: &str) -> Vec<u8> {
    let out = Command::new("rbd")
        .arg("-c")
        .arg(conf(bed))
        .args(["export", "--no-progress", spec, "-"])
        .output()
        .expect("run rbd export");
    assert!(
        out.status.success(),
        "rbd export {spec} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn image_size(bed: &Bed, spec: &str) -> u64 {
    rbd_json(bed, &["info", spec]).unwrap_or_else(|| panic!("rbd info {spec}"))["size"]
        .as_u64()
        .expect("rbd info prints a size")
}

/// Ok(digest) when image `spec` is exactly `expected` (size from `rbd info`, content from
/// the digest of its export); otherwise where it differs, from a second export.
fn compare_image(bed: &Bed, spec: &str, expected: &[u8]) -> Result<String, String> {
    let size = image_size(bed, spec);
    if size != expected.len() as u64 {
        return Err(format!(
            "{spec} has {size} bytes, {} expected",
            expected.len()
        ));
    }
    let (got, want) = (image_sha256(bed, spec), sha256_of(expected));
    if got == want {
        return Ok(got);
    }
    let bytes = export(bed, spec);
    let differ: Vec<usize> = (0..expected.len().min(bytes.len()))
        .filter(|&i| bytes[i] != expected[i])
        .collect();
    Err(format!(
        "{spec}: sha256 {got}, {want} expected; {} of {} bytes differ, the first at offset {:?}",
        differ.len(),
        expected.len(),
        differ.first()
    ))
}

fn assert_image(bed: &Bed, spec: &str, expected: &[u8]) -> String {
    compare_image(bed, spec, expected).unwrap_or_else(|e| panic!("data lost: {e}"))
}

/// Non-zero bytes of image `spec` from `from` to its end, and how many bytes that is.
fn nonzero_tail(bed: &Bed, spec: &str, from: usize) -> (usize, usize) {
    let bytes = export(bed, spec);
    assert!(bytes.len() >= from, "{spec} is shorter than {from} bytes");
    let tail = &bytes[from..];
    (tail.iter().filter(|b| **b != 0).count(), tail.len())
}

/// Asserts the grown part of `spec`, from `old` bytes to `new`, reads as zeros.
fn assert_zero_tail(bed: &Bed, spec: &str, old: usize, new: usize) {
    let (nonzero, len) = nonzero_tail(bed, spec, old);
    assert_eq!(len, new - old, "the grown tail of {spec}");
    assert_eq!(
        nonzero, 0,
        "{nonzero} non-zero bytes in the grown tail of {spec}"
    );
}

/// Removes images the test made by hand, failing test or not.
struct Images(Bed, Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for spec in &self.1 {
            let _ = Command::new("rbd")
                .arg("-c")
                .arg(conf(&self.0))
                .args(["rm", "--no-progress", spec])
                .output();
        }
    }
}

fn image_of(uid: &str) -> String {
    format!("kube/kubernetes-dynamic-pvc-{uid}")
}

fn from(name: &str) -> serde_json::Value {
    json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": name}})
}

fn parent_of(bed: &Bed, spec: &str) -> Option<serde_json::Value> {
    let info = rbd_json(bed, &["info", spec]).unwrap_or_else(|| panic!("rbd info {spec}"));
    info.get("parent").cloned()
}

/// An admin Secret of type Opaque: kube-controller-manager's in-tree expander (1.20) cannot
/// read it, so only the provisioner can grow the image and the test sees its own path.
async fn opaque_admin_secret(s: &Stage) -> String {
    let name = format!("{}-opaque", s.ns);
    apply_yaml(
        &s.admin,
        &serde_json::to_string(&json!({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": "kube-system"},
            "stringData": {"key": s.bed.admin_key},
        }))
        .unwrap(),
        &[],
    )
    .await;
    name
}

async fn request(s: &Stage, claim: &str, size: &str) {
    s.pvcs()
        .patch(
            claim,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": size}}}})),
        )
        .await
        .expect("expansion allowed by the class");
}

/// Deletes claims through the provisioner, one after the other in the order given (clones
/// before their sources, so no deletion waits on a flatten), and waits until each PV and
/// image is gone: nothing the test made is left for the guard, which cannot remove a source
/// whose snapshots still have clones.
async fn delete_claims(s: &Stage, claims: &[(&str, &str)]) {
    for (name, uid) in claims {
        s.pvcs()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
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
    let src = image_of(&src_uid);
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
    let (same_img, bigger_img) = (image_of(&same_uid), image_of(&bigger_uid));
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
    let opaque = opaque_admin_secret(&c).await;
    let class = c
        .class(
            "grow",
            &[("adminSecretName", &opaque)],
            json!({"allowVolumeExpansion": true}),
        )
        .await;
    let (pvc, uid) = c.claim("data", &class).size("32Mi").bound().await;
    let img = image_of(&uid);
    let (old, new) = (32 * MIB, 64 * MIB);
    let writes = extents(5, old);
    let a = overlay(&vec![0; old], &writes);
    write_extents(&c.bed, &img, &writes);
    assert_image(&c.bed, &img, &a);
    assert!(
        a[old - 8..].iter().any(|b| *b != 0),
        "data up to the last bytes"
    );

    request(&c, "data", "64Mi").await;
    wait_event(
        &c.admin,
        &c.ns,
        &uid_of(&pvc),
        "FileSystemResizeRequired",
        &["from 32 MiB to 64 MiB"],
        T,
    )
    .await;
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
    let src = image_of(&src_uid);
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
    let mid = image_of(&mid_uid);
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
    let deep = image_of(&deep_uid);
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
    c.pvcs()
        .delete("src", &DeleteParams::default())
        .await
        .unwrap();
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
    let img = image_of(&uid);
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
    let opaque = opaque_admin_secret(&c).await;
    let class = c
        .class(
            "old",
            &[("adminSecretName", &opaque), ("volumeFlavor", "rbd")],
            json!({"allowVolumeExpansion": true, "reclaimPolicy": "Delete"}),
        )
        .await;
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
    let pv = old_provisioner_pv(&c, &pv_name, &image, &class, "32Mi");
    c.pvs().create(&PostParams::default(), &pv).await.unwrap();
    let (pvc, _) = c
        .claim("data", &class)
        .size("32Mi")
        .spec(json!({"volumeName": pv_name}))
        .bound()
        .await;
    wait_for("the old volume recorded", T, || async {
        c.pvs()
            .get(&pv_name)
            .await
            .ok()?
            .metadata
            .annotations?
            .contains_key("rbd-provisioner.ceph.com/pool-id")
            .then_some(())
    })
    .await;
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

    request(&c, "data", "48Mi").await;
    wait_event(
        &c.admin,
        &c.ns,
        &uid_of(&pvc),
        "FileSystemResizeRequired",
        &["from 32 MiB to 48 MiB", &pv_name],
        T,
    )
    .await;
    assert_eq!(image_size(&c.bed, &img), new as u64);
    let mut grown = a.clone();
    grown.resize(new, 0);
    assert_image(&c.bed, &img, &grown);
    assert_zero_tail(&c.bed, &img, old, new);

    c.pvcs()
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the old volume deleted", T, || async {
        c.pvs()
            .get_opt(&pv_name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert!(!rbd_exists(&c.bed, "kube", &image));
}
