//! Live tests of `ceph` against the test bed's Ceph (hack/bed-up.sh):
//! `$RBDP_BED/env` gives CEPH_MONITORS and CEPH_ADMIN_KEY; pools `kube` and `kube2` exist.
//!
//! Every test uses its own image names (test name + pid + a counter) and removes what it
//! made, also when it fails, so the tests can run in parallel and repeatedly.

use testbed as common;
use testbed::layering_spec;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ceph::{
    CephError, CephKey, CloneSpec, Cluster, Connections, Created, Credentials, ParentSpec,
    RBD_FEATURE_DATA_POOL, RBD_FEATURE_LAYERING, Removed, Timeouts, TrashEntry,
};

const POOL: &str = "kube";
const POOL2: &str = "kube2";
const MIB: u64 = 1 << 20;

fn credentials() -> Credentials {
    let bed = common::Bed::load();
    let monitors = if bed.monitors.trim_start().starts_with('[') {
        vec![bed.monitors.clone()]
    } else {
        bed.monitors
            .split(',')
            .map(|m| m.trim().to_string())
            .collect()
    };
    Credentials {
        monitors,
        user: "admin".into(),
        key: CephKey::new(bed.admin_key),
    }
}

async fn connect() -> Arc<Cluster> {
    Cluster::connect(&credentials(), Timeouts::default())
        .await
        .unwrap_or_else(|e| panic!("connect to the bed's Ceph: {e}"))
}

fn unique(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t-{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A connection, a name of the test's own for an image in [`POOL`], and the guard that
/// removes that image.
async fn fresh(test: &str) -> (Arc<Cluster>, String, Cleanup) {
    let c = connect().await;
    let name = unique(test);
    let mut cleanup = Cleanup::new(&c);
    cleanup.add(POOL, &name);
    (c, name, cleanup)
}

/// [`fresh`], with the image made (`size` bytes, layering only).
async fn made(test: &str, size: u64) -> (Arc<Cluster>, String, Cleanup) {
    let (c, name, cleanup) = fresh(test).await;
    c.create_image(&layering_spec(POOL, &name, size))
        .await
        .unwrap();
    (c, name, cleanup)
}

/// The trash entry of image `name` in [`POOL`], if it has one.
async fn trash_entry(c: &Arc<Cluster>, name: &str) -> Option<TrashEntry> {
    let trash = c.trash_list(POOL).await.unwrap();
    trash.into_iter().find(|t| t.name == name)
}

/// Removes the listed images (last registered first) with all their snapshots when dropped,
/// even on a failed assertion.
struct Cleanup {
    cluster: Arc<Cluster>,
    images: Vec<(String, String)>,
}

impl Cleanup {
    fn new(cluster: &Arc<Cluster>) -> Cleanup {
        Cleanup {
            cluster: Arc::clone(cluster),
            images: Vec::new(),
        }
    }

    fn add(&mut self, pool: &str, name: &str) {
        self.images.push((pool.into(), name.into()));
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let cluster = Arc::clone(&self.cluster);
        let images = std::mem::take(&mut self.images);
        // A fresh runtime on a fresh thread: Drop cannot await, and the test's runtime may be
        // a current-thread one.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                for (pool, name) in images.iter().rev() {
                    if let Ok(snaps) = cluster.snap_list(pool, name).await {
                        for s in snaps {
                            let _ = cluster.snap_unprotect(pool, name, &s.name).await;
                            let _ = cluster.snap_remove(pool, name, &s.name).await;
                        }
                    }
                    let _ = cluster.remove_image(pool, name).await;
                }
            })
        })
        .join();
    }
}

#[tokio::test]
async fn create_reads_back_and_is_idempotent() {
    let (c, name, _cleanup) = fresh("create").await;

    let started = Instant::now();
    let created = c
        .create_image(&layering_spec(POOL, &name, 64 * MIB))
        .await
        .unwrap();
    eprintln!("create_image took {:?}", started.elapsed());
    assert_eq!(created, Created::New);

    let info = c.image_info(POOL, &name).await.unwrap();
    assert_eq!(info.size, 64 * MIB);
    assert_eq!(info.features, RBD_FEATURE_LAYERING, "exactly layering");
    assert!(!info.old_format, "format 2");
    assert!(!info.id.is_empty());
    assert_eq!(info.data_pool, None);
    assert_eq!(info.parent, None);
    assert_eq!(info.obj_size, 4 * MIB);

    let again = c
        .create_image(&layering_spec(POOL, &name, 128 * MIB))
        .await
        .unwrap();
    assert_eq!(again, Created::AlreadyExisted);
    let info2 = c.image_info(POOL, &name).await.unwrap();
    assert_eq!(info2.id, info.id, "the existing image was not replaced");
    assert_eq!(info2.size, 64 * MIB, "the existing image was not resized");

    assert!(c.list_images(POOL).await.unwrap().contains(&name));
}

/// The stamp written without opening the image (one `metadata_set` object-class call) reads
/// back through librbd and through the `rbd` CLI exactly as one written key by key.
#[tokio::test]
async fn a_new_image_stamped_unopened_reads_back_everywhere() {
    let (c, name, _cleanup) = made("stamp", 64 * MIB).await;
    let pairs = vec![
        (
            "rbd-provisioner.ceph.com/pv".to_string(),
            "pvc-1".to_string(),
        ),
        (
            "rbd-provisioner.ceph.com/claim".to_string(),
            "ns/data".to_string(),
        ),
        (
            "rbd-provisioner.ceph.com/created".to_string(),
            String::new(),
        ),
    ];
    c.set_metadata_unopened(POOL, &name, pairs.clone())
        .await
        .unwrap();
    let keys: &'static [&'static str] = &[
        "rbd-provisioner.ceph.com/pv",
        "rbd-provisioner.ceph.com/claim",
        "rbd-provisioner.ceph.com/created",
        "rbd-provisioner.ceph.com/cluster",
    ];
    let meta = c.metadata(POOL, &name, keys).await.unwrap();
    assert_eq!(
        meta.into_iter().collect::<Vec<_>>(),
        {
            let mut p = pairs.clone();
            p.sort();
            p
        },
        "librbd reads back exactly the stamp"
    );
    let bed = common::Bed::load();
    let listed = common::rbd_json(&bed, &["image-meta", "list", &format!("{POOL}/{name}")])
        .expect("rbd image-meta list");
    assert_eq!(
        listed["rbd-provisioner.ceph.com/claim"], "ns/data",
        "{listed}"
    );
    assert_eq!(listed["rbd-provisioner.ceph.com/pv"], "pvc-1", "{listed}");
    // An image that does not exist is an error, and no header object is made for it.
    let gone = c
        .set_metadata_unopened(POOL, &unique("nosuch"), pairs)
        .await
        .unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
}

#[tokio::test]
async fn create_with_data_pool() {
    let (c, name, _cleanup) = fresh("datapool").await;

    let mut s = layering_spec(POOL, &name, 16 * MIB);
    s.data_pool = Some(POOL2.into());
    assert_eq!(c.create_image(&s).await.unwrap(), Created::New);
    let info = c.image_info(POOL, &name).await.unwrap();
    assert_eq!(info.data_pool.as_deref(), Some(POOL2));
    assert_eq!(info.features, RBD_FEATURE_LAYERING | RBD_FEATURE_DATA_POOL);
}

#[tokio::test]
async fn resize_grows_and_refuses_to_shrink() {
    let (c, name, _cleanup) = made("resize", 32 * MIB).await;

    c.resize(POOL, &name, 96 * MIB).await.unwrap();
    assert_eq!(c.image_info(POOL, &name).await.unwrap().size, 96 * MIB);
    c.resize(POOL, &name, 96 * MIB).await.unwrap(); // same size: no-op

    let e = c.resize(POOL, &name, 8 * MIB).await.unwrap_err();
    assert!(
        matches!(e, CephError::ShrinkRefused { current, requested, .. }
            if current == 96 * MIB && requested == 8 * MIB),
        "{e}"
    );
    assert_eq!(c.image_info(POOL, &name).await.unwrap().size, 96 * MIB);

    let e = c.resize(POOL, &unique("missing"), MIB).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn watchers_remove_and_remove_again() {
    let (c, name, _cleanup) = made("watch", 16 * MIB).await;

    // image_info and watchers open read-only: they must not count themselves.
    assert_eq!(c.watchers(POOL, &name).await.unwrap(), vec![]);

    // Another client holding the image open read/write, like a node that has it mapped.
    let other = connect().await;
    let held = other.open_read_write(POOL, &name).await.unwrap();
    let w = c.watchers(POOL, &name).await.unwrap();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(!w[0].addr.is_empty());

    let e = c.remove_image(POOL, &name).await.unwrap_err();
    assert!(e.is_busy(), "{e}");
    assert!(e.to_string().contains("watchers"), "{e}");

    drop(held);
    assert_eq!(c.watchers(POOL, &name).await.unwrap(), vec![]);

    assert_eq!(c.remove_image(POOL, &name).await.unwrap(), Removed::Removed);
    assert_eq!(
        c.remove_image(POOL, &name).await.unwrap(),
        Removed::AlreadyGone
    );
    assert!(!c.list_images(POOL).await.unwrap().contains(&name));
    let e = c.image_info(POOL, &name).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = c.watchers(POOL, &name).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn trash_move_list_remove() {
    let (c, name, _cleanup) = made("trash", 16 * MIB).await;
    let id = c.image_info(POOL, &name).await.unwrap().id;

    assert_eq!(
        c.trash_move(POOL, &name, 0).await.unwrap(),
        Removed::Removed
    );
    assert!(!c.list_images(POOL).await.unwrap().contains(&name));
    let entry = trash_entry(&c, &name).await.expect("in trash");
    assert_eq!(entry.id, id);

    assert_eq!(
        c.trash_move(POOL, &name, 0).await.unwrap(),
        Removed::AlreadyGone
    );
    assert_eq!(
        c.trash_remove(POOL, &id, false).await.unwrap(),
        Removed::Removed
    );
    assert!(trash_entry(&c, &name).await.is_none());
    assert_eq!(
        c.trash_remove(POOL, &id, false).await.unwrap(),
        Removed::AlreadyGone
    );
}

#[tokio::test]
async fn trash_deferment_needs_force() {
    let (c, name, _cleanup) = made("trashdelay", 16 * MIB).await;

    assert_eq!(
        c.trash_move(POOL, &name, 3600).await.unwrap(),
        Removed::Removed
    );
    let entry = trash_entry(&c, &name).await.expect("in trash");
    assert!(entry.deferment_end_time >= entry.deletion_time + 3600);

    let e = c.trash_remove(POOL, &entry.id, false).await.unwrap_err();
    assert!(e.is_permission(), "{e}");
    assert_eq!(
        c.trash_remove(POOL, &entry.id, true).await.unwrap(),
        Removed::Removed
    );
    // The entry of this (uniquely named) image is gone.
    assert!(trash_entry(&c, &name).await.is_none());
}

#[tokio::test]
async fn clone_from_protected_snapshot_and_flatten() {
    let c = connect().await;
    let parent = unique("parent");
    let child = unique("child");
    let snap = "base";
    let mut cleanup = Cleanup::new(&c);
    cleanup.add(POOL, &parent);
    cleanup.add(POOL2, &child);

    c.create_image(&layering_spec(POOL, &parent, 32 * MIB))
        .await
        .unwrap();
    assert_eq!(
        c.snap_create(POOL, &parent, snap).await.unwrap(),
        Created::New
    );
    assert_eq!(
        c.snap_create(POOL, &parent, snap).await.unwrap(),
        Created::AlreadyExisted
    );
    c.snap_protect(POOL, &parent, snap).await.unwrap();
    c.snap_protect(POOL, &parent, snap).await.unwrap(); // idempotent
    let snaps = c.snap_list(POOL, &parent).await.unwrap();
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0].name, snap);
    assert!(snaps[0].protected);
    assert_eq!(snaps[0].size, 32 * MIB);
    assert!(snaps[0].timestamp > 1_500_000_000, "{snaps:?}");

    let cs = CloneSpec {
        parent: ParentSpec {
            pool: POOL.into(),
            image: parent.clone(),
            snap: snap.into(),
        },
        pool: POOL2.into(),
        name: child.clone(),
        features: RBD_FEATURE_LAYERING,
        data_pool: None,
        clone_format: None,
    };
    let started = Instant::now();
    assert_eq!(c.clone_image(&cs).await.unwrap(), Created::New);
    eprintln!("clone_image took {:?}", started.elapsed());
    assert_eq!(c.clone_image(&cs).await.unwrap(), Created::AlreadyExisted);

    let info = c.image_info(POOL2, &child).await.unwrap();
    let p = info.parent.expect("a clone has a parent");
    assert_eq!(
        (p.pool.as_str(), p.image.as_str(), p.snap.as_str()),
        (POOL, parent.as_str(), snap)
    );
    assert_eq!(info.size, 32 * MIB);
    assert_eq!(info.features, RBD_FEATURE_LAYERING);

    // The parent cannot go while it has a snapshot with a child.
    let e = c.snap_unprotect(POOL, &parent, snap).await.unwrap_err();
    assert!(e.is_busy(), "{e}");
    let e = c.remove_image(POOL, &parent).await.unwrap_err();
    assert!(e.errno().is_some(), "{e}");

    c.flatten(POOL2, &child).await.unwrap();
    assert_eq!(c.image_info(POOL2, &child).await.unwrap().parent, None);
    c.flatten(POOL2, &child).await.unwrap(); // no parent: no-op

    c.snap_unprotect(POOL, &parent, snap).await.unwrap();
    c.snap_unprotect(POOL, &parent, snap).await.unwrap(); // idempotent
    assert_eq!(
        c.snap_remove(POOL, &parent, snap).await.unwrap(),
        Removed::Removed
    );
    assert_eq!(
        c.snap_remove(POOL, &parent, snap).await.unwrap(),
        Removed::AlreadyGone
    );
    assert_eq!(
        c.remove_image(POOL2, &child).await.unwrap(),
        Removed::Removed
    );
    assert_eq!(
        c.remove_image(POOL, &parent).await.unwrap(),
        Removed::Removed
    );
}

#[tokio::test]
async fn missing_pool_is_reported_with_a_hint() {
    let c = connect().await;
    let e = c.list_images("no-such-pool-rbdp").await.unwrap_err();
    assert!(matches!(e, CephError::Pool { .. }), "{e}");
    assert!(e.is_pool_missing() && !e.is_not_found(), "{e}");
    assert!(e.to_string().contains("pool does not exist"), "{e}");
}

#[tokio::test]
async fn wrong_key_fails_fast_with_an_auth_error() {
    let mut creds = credentials();
    let good = credentials().key;
    creds.key = CephKey::new(flip_secret(&common::Bed::load().admin_key));
    assert_ne!(creds.key, good);

    let started = Instant::now();
    let e = Cluster::connect(&creds, Timeouts::default())
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("wrong key failed after {elapsed:?}: {e}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    assert!(e.is_permission(), "{e}");
    let msg = format!("{e} {e:?}");
    assert!(msg.contains("check the key"), "{msg}");
    let key = common::Bed::load().admin_key;
    assert!(
        !msg.contains(&key) && !msg.contains(&key[..12]),
        "key leaked: {msg}"
    );
}

/// Changes characters inside the secret part of a cephx key (base64 of a 28-byte blob
/// whose last 16 bytes are the secret), keeping it valid base64 of the same shape.
fn flip_secret(key: &str) -> String {
    let mut b = key.as_bytes().to_vec();
    for i in 20..28.min(b.len()) {
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    }
    String::from_utf8(b).unwrap()
}

#[tokio::test]
async fn unreachable_monitor_fails_within_the_connect_timeout() {
    let mut creds = credentials();
    creds.monitors = vec!["127.0.0.1:1".into()];
    let t = Timeouts {
        connect: Duration::from_secs(5),
        op: Duration::from_secs(5),
    };
    let started = Instant::now();
    let e = Cluster::connect(&creds, t).await.unwrap_err();
    let elapsed = started.elapsed();
    eprintln!("unreachable monitor failed after {elapsed:?}: {e}");
    assert!(elapsed < Duration::from_secs(9), "{elapsed:?}");
    assert!(e.is_timeout(), "{e}");
    assert!(e.to_string().contains("monitors unreachable"), "{e}");
}

#[tokio::test]
async fn connections_are_reused_and_failures_not_cached() {
    let conns = Arc::new(Connections::new(Timeouts::default()));
    let creds = credentials();

    let started = Instant::now();
    let a = conns.get(&creds).await.unwrap();
    eprintln!("first connect took {:?}", started.elapsed());
    let b = conns.get(&creds).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(conns.len(), 1);

    // Concurrent first use of other credentials (same cluster, monitors spelled with a
    // trailing space so the cache key differs) connects once.
    let mut other = creds.clone();
    other.monitors[0].push(' ');
    let gets: Vec<_> = (0..8)
        .map(|_| {
            let (conns, other) = (Arc::clone(&conns), other.clone());
            tokio::spawn(async move { conns.get(&other).await.unwrap() })
        })
        .collect();
    let mut got = Vec::new();
    for g in gets {
        got.push(g.await.unwrap());
    }
    assert!(got.iter().all(|x| Arc::ptr_eq(x, &got[0])));
    assert!(!Arc::ptr_eq(&got[0], &a));
    assert_eq!(conns.len(), 2);

    let mut bad = creds.clone();
    bad.key = CephKey::new(flip_secret(&common::Bed::load().admin_key));
    assert!(conns.get(&bad).await.is_err());
    assert_eq!(conns.len(), 2, "a failed connect is not cached");

    assert!(conns.forget(&other));
    assert_eq!(conns.len(), 1);
    // Still usable.
    a.list_images(POOL).await.unwrap();
}
