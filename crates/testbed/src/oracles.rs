//! Independent oracles: the `rbd` CLI (not the code under test), and librbd listings.

use std::process::Command;
use std::sync::Arc;

use ceph::Cluster;

use crate::Bed;

/// Whether an image exists in a pool.
pub async fn image_exists(ceph: &Arc<Cluster>, pool: &str, name: &str) -> bool {
    ceph.list_images(pool)
        .await
        .expect("list images")
        .iter()
        .any(|i| i == name)
}

/// The `rbd` CLI (not the code under test) as an independent oracle: runs
/// `rbd -c <bed>/ceph/ceph.conf <args> --format json` and returns the parsed output, or
/// `None` when `rbd` fails (for example `rbd info` of an image that does not exist).
pub fn rbd_json(bed: &Bed, args: &[&str]) -> Option<serde_json::Value> {
    let out = std::process::Command::new("rbd")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("run the rbd CLI");
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("rbd --format json prints JSON"))
}

/// `rbd -c <bed>/ceph/ceph.conf <args>` (the CLI, not the code under test); panics with its
/// stderr when it fails.
pub fn rbd_cli(bed: &Bed, args: &[&str]) -> String {
    let out = Command::new("rbd")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(args)
        .output()
        .expect("run the rbd CLI");
    assert!(
        out.status.success(),
        "rbd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// Names of the images in `pool`'s trash, as the `rbd` CLI lists them.
pub fn rbd_trash_ls(bed: &Bed, pool: &str) -> Vec<String> {
    let v = rbd_json(bed, &["trash", "ls", pool])
        .unwrap_or_else(|| panic!("rbd trash ls {pool} failed"));
    v.as_array()
        .expect("rbd trash ls prints a list")
        .iter()
        .filter_map(|e| e["name"].as_str().map(String::from))
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
