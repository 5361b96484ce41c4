//! Independent oracles: the Ceph CLIs (`rbd`, `ceph`, `rados`: not the code under test), and
//! librbd listings.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::Arc;

use ceph::Cluster;

use crate::Bed;

/// The image a claim's volume is made in: `kubernetes-dynamic-pvc-<claim uid>`.
pub fn image_of(uid: &str) -> String {
    format!("kubernetes-dynamic-pvc-{uid}")
}

/// Whether an image exists in a pool.
pub async fn image_exists(ceph: &Arc<Cluster>, pool: &str, name: &str) -> bool {
    ceph.list_images(pool)
        .await
        .expect("list images")
        .iter()
        .any(|i| i == name)
}

/// `<tool> -c <bed>/ceph/ceph.conf <args>` as client.admin, for a Ceph CLI (`rbd`, `ceph`,
/// `rados`); its output, whether it failed or not.
pub fn try_cli(bed: &Bed, tool: &str, args: &[&str]) -> Output {
    Command::new(tool)
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"))
}

/// [`try_cli`] that panics with the tool's stderr when it fails; returns its stdout.
pub fn cli(bed: &Bed, tool: &str, args: &[&str]) -> String {
    let out = try_cli(bed, tool, args);
    assert_success(&format!("{tool} {args:?}"), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics with `what` and the process's stderr unless it exited with success.
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `ceph` CLI, bounded to 60 s: with its monitors down it would wait for ever.
pub fn try_ceph_cli(bed: &Bed, args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("60")
        .arg("ceph")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ceph: {e}"))
}

/// [`try_ceph_cli`] that panics with the CLI's stderr when it fails; returns its stdout.
pub fn ceph_cli(bed: &Bed, args: &[&str]) -> String {
    let out = try_ceph_cli(bed, args);
    assert_success(&format!("ceph {args:?}"), &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `rbd` CLI (not the code under test) as an independent oracle: runs
/// `rbd -c <bed>/ceph/ceph.conf <args> --format json` and returns the parsed output, or
/// `None` when `rbd` fails (for example `rbd info` of an image that does not exist).
pub fn rbd_json(bed: &Bed, args: &[&str]) -> Option<serde_json::Value> {
    let args: Vec<&str> = args.iter().copied().chain(["--format", "json"]).collect();
    let out = try_cli(bed, "rbd", &args);
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("rbd --format json prints JSON"))
}

/// `rbd -c <bed>/ceph/ceph.conf <args>` (the CLI, not the code under test); panics with its
/// stderr when it fails.
pub fn rbd_cli(bed: &Bed, args: &[&str]) -> String {
    cli(bed, "rbd", args)
}

/// Image names in `pool`, as the `rbd` CLI lists them.
pub fn rbd_ls(bed: &Bed, pool: &str) -> Vec<String> {
    let v = rbd_json(bed, &["ls", pool]).unwrap_or_else(|| panic!("rbd ls {pool} failed"));
    v.as_array()
        .expect("rbd ls prints a list")
        .iter()
        .filter_map(|n| n.as_str().map(String::from))
        .collect()
}

/// (id, name) of the entries of `pool`'s trash, as the `rbd` CLI lists them (one listing,
/// which fails loudly: a failed listing must not read as an empty trash).
pub fn rbd_trash_entries(bed: &Bed, pool: &str) -> Vec<(String, String)> {
    let v = rbd_json(bed, &["trash", "ls", pool])
        .unwrap_or_else(|| panic!("rbd trash ls {pool} failed"));
    v.as_array()
        .expect("rbd trash ls prints a list")
        .iter()
        .filter_map(|e| Some((e["id"].as_str()?.into(), e["name"].as_str()?.into())))
        .collect()
}

/// Names of the images in `pool`'s trash, as the `rbd` CLI lists them.
pub fn rbd_trash_ls(bed: &Bed, pool: &str) -> Vec<String> {
    rbd_trash_entries(bed, pool)
        .into_iter()
        .map(|(_, name)| name)
        .collect()
}

/// `rbd info pool/image` as JSON, or None when the image does not exist.
pub fn rbd_info(bed: &Bed, pool: &str, image: &str) -> Option<serde_json::Value> {
    rbd_json(bed, &["info", &format!("{pool}/{image}")])
}

/// Whether the `rbd` CLI sees `image` in `pool`.
pub fn rbd_exists(bed: &Bed, pool: &str, image: &str) -> bool {
    rbd_ls(bed, pool).iter().any(|i| i == image)
}

/// The metadata of image `spec` (`pool/image`), as `rbd image-meta list` prints it.
pub fn image_meta(bed: &Bed, spec: &str) -> BTreeMap<String, String> {
    let text = cli(
        bed,
        "rbd",
        &["image-meta", "list", spec, "--format", "json"],
    );
    serde_json::from_str(&text).unwrap_or_default()
}

/// A pool of the test's own, initialised for RBD.
pub fn create_pool(bed: &Bed, pool: &str) {
    cli(bed, "ceph", &["osd", "pool", "create", pool, "8"]);
    cli(bed, "rbd", &["pool", "init", pool]);
}

/// Removes pool `pool` (allowing pool deletion first, as the bed forbids it); failures are
/// ignored, as for any cleanup.
pub fn remove_pool(bed: &Bed, pool: &str) {
    let _ = try_cli(
        bed,
        "ceph",
        &["config", "set", "mon", "mon_allow_pool_delete", "true"],
    );
    let _ = try_cli(
        bed,
        "ceph",
        &[
            "osd",
            "pool",
            "rm",
            pool,
            pool,
            "--yes-i-really-really-mean-it",
        ],
    );
}

/// `ceph fsid` through the CLI: an oracle independent of our librados bindings.
pub fn ceph_fsid(bed: &Bed) -> String {
    cli(bed, "ceph", &["fsid"]).trim().to_string()
}

/// Stamps image `spec` (`pool/image`) as trashed by us now, as our delete path does before it
/// moves the image to the trash.
pub fn stamp_trashed(bed: &Bed, spec: &str) {
    let now = crate::unix_now().to_string();
    let key = "rbd-provisioner.ceph.com/trashed";
    cli(bed, "rbd", &["image-meta", "set", spec, key, &now]);
}

/// What our delete path leaves when its process dies before the purge: image `spec` stamped
/// as trashed by us, and in the trash.
pub fn trash_as_ours(bed: &Bed, spec: &str) {
    stamp_trashed(bed, spec);
    cli(bed, "rbd", &["trash", "mv", spec]);
}

/// Creates image `spec` (`pool/image`) of `size` (`rbd create --size`, e.g. `8M`) with the
/// `rbd` CLI, layering only, as an operator or the old provisioner would.
pub fn rbd_create(bed: &Bed, spec: &str, size: &str) {
    let args = [
        "create",
        spec,
        "--size",
        size,
        "--image-feature",
        "layering",
    ];
    cli(bed, "rbd", &args);
}

/// A new image of `size` bytes with layering only, as the provisioner makes them.
pub fn layering_spec(pool: &str, name: &str, size: u64) -> ceph::ImageSpec {
    ceph::ImageSpec {
        pool: pool.into(),
        name: name.into(),
        size,
        data_pool: None,
        features: ceph::RBD_FEATURE_LAYERING,
    }
}
