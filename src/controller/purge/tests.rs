//! The purge queue and the trash sweep against a scripted Ceph: only entries this instance
//! trashed are purged, whatever their deferment; a half-moved entry is finished only when it
//! is provably ours; a clone's purge drops the snapshot made for it.

use super::*;

#[test]
fn retries_outlast_a_dead_clients_watch() {
    let total: Duration = (0..ATTEMPTS - 1).map(pause).sum();
    // osd_client_watch_timeout is 30 s by default; two of them and a margin.
    assert!(total >= Duration::from_secs(90), "{total:?}");
    assert_eq!(pause(0), Duration::from_secs(2));
    assert_eq!(pause(3), MAX_PAUSE);
    assert_eq!(pause(u32::MAX), MAX_PAUSE);
}

use crate::controller::maintain::sweep_trash;
use crate::controller::testing::scene::*;
use crate::controller::testing::{ApiServer, instance};
use domain::owner::{META_CLUSTER, META_PROVISIONER, PvState};
use testbed::fake_ceph::{Fault, Method as Rbd};

/// A trash entry, and whether the sweep must purge it.
struct Entry {
    name: &'static str,
    /// Its image-meta, from our stamp marked as trashed by us.
    meta: fn(Meta) -> Meta,
    /// Moved with this deferment (seconds).
    delay: u64,
    /// Left by a process killed inside the purge: the image behind the entry is removed.
    unreadable: bool,
    purged: bool,
}

fn entries() -> Vec<Entry> {
    fn ours(s: Vec<(String, String)>) -> Vec<(String, String)> {
        s
    }
    fn none(_: Vec<(String, String)>) -> Vec<(String, String)> {
        Vec::new()
    }
    let entry = |name, meta, purged| Entry {
        name,
        meta,
        delay: 0,
        unreadable: false,
        purged,
    };
    vec![
        entry("kubernetes-dynamic-pvc-ours", ours, true),
        Entry {
            delay: 86400,
            ..entry("kubernetes-dynamic-pvc-ours-deferred", ours, true)
        },
        entry(
            "kubernetes-dynamic-pvc-our-stamp-moved-by-an-operator",
            |s| with(&s, owner::META_TRASHED, None),
            false,
        ),
        entry(
            "kubernetes-dynamic-pvc-another-provisioners",
            |s| with(&s, META_PROVISIONER, Some("example.com/other")),
            false,
        ),
        entry(
            "kubernetes-dynamic-pvc-another-clusters",
            |s| with(&s, META_CLUSTER, Some("another-kube-system")),
            false,
        ),
        entry("kubernetes-dynamic-pvc-unstamped", none, false),
        Entry {
            delay: 86400,
            ..entry("vm-disk-deferred-by-an-operator", none, false)
        },
        Entry {
            unreadable: true,
            ..entry("kubernetes-dynamic-pvc-purge-interrupted", none, true)
        },
        Entry {
            unreadable: true,
            ..entry("vm-disk-unreadable", none, false)
        },
    ]
}

/// The sweep purges what this instance trashed (forced: a deferment does not hold it back)
/// and an entry of our naming whose image a purge had already begun destroying; everything
/// else stays, whatever its name.
#[tokio::test]
async fn the_sweep_purges_only_what_we_trashed() {
    let scene = Scene::new();
    let cluster = scene.fake.cluster();
    let trashed = trashed(&stamp(UID, &scene.place(), PvState::Written).pairs(&instance()));
    for e in entries() {
        if e.unreadable {
            scene.fake.half_made(POOL, e.name);
        } else {
            scene.fake.put_image(POOL, e.name, GIB);
        }
        let meta = (e.meta)(trashed.clone());
        let pairs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (&**k, &**v)).collect();
        scene.fake.put_metadata(POOL, e.name, &pairs);
        cluster.trash_move(POOL, e.name, e.delay).await.unwrap();
    }
    scene.fake.clear_calls();
    let (client, api) = ApiServer::start(vec![]);
    let ctx = scene.context(client, &[]);
    sweep_trash(&ctx, &cluster, POOL).await;
    settle(&ctx).await;
    api.done();

    let left: Vec<String> = scene.fake.trash(POOL).into_iter().map(|t| t.name).collect();
    for e in entries() {
        assert_eq!(!left.contains(&e.name.to_string()), e.purged, "{}", e.name);
    }
    let writes = scene.fake.writes();
    assert!(
        writes
            .iter()
            .all(|c| c.method == Rbd::TrashRemove && c.ok()),
        "{writes:?}"
    );
    assert_eq!(writes.len(), entries().iter().filter(|e| e.purged).count());
}

/// A half-moved entry (its process killed inside `rbd_trash_move`) holds a whole image:
/// its move is finished, and the entry purged, only for a job that proves it ours, and
/// never over another image that has taken the name meanwhile.
#[tokio::test]
async fn a_half_moved_entry_is_finished_only_when_provably_ours() {
    let image = "kubernetes-dynamic-pvc-half-moved";
    // (case, the job proves it ours, another image holds the name, purged)
    let cases = [
        ("ours", true, false, true),
        ("found by name only", false, false, false),
        ("ours, but the name is taken again", true, true, false),
    ];
    for (case, proven, taken, purged) in cases {
        let scene = Scene::new();
        scene.fake.put_image(POOL, image, GIB);
        scene.fake.interrupt_trash_move(POOL, image, false);
        if taken {
            scene.fake.put_image(POOL, image, GIB);
        }
        let entry = scene.fake.trash(POOL).remove(0);
        let job = Job::trash_entry(&scene.fake.cluster(), POOL, entry, GIB, proven);
        let r = remove(&job).await;
        assert_eq!(r.is_ok(), purged, "{case}: {r:?}");
        assert_eq!(scene.fake.trash(POOL).is_empty(), purged, "{case}");
        let moves = scene.fake.count(Rbd::TrashMove);
        assert_eq!(moves, usize::from(purged), "{case}");
        assert_eq!(scene.fake.images(POOL).len(), usize::from(taken), "{case}");
        if let Err(e) = r {
            assert_eq!(e.errno(), Some(libc::EUCLEAN), "{case}");
        }
    }
}

/// Purging a clone drops the source's snapshot that was made for it, and no other.
#[tokio::test]
async fn a_clones_purge_drops_only_the_snapshot_made_for_it() {
    let (source, child) = (
        "kubernetes-dynamic-pvc-source",
        "kubernetes-dynamic-pvc-child",
    );
    for (snap, dropped) in [
        (clone::clone_snapshot(child), true),
        ("an-operators-snapshot".to_string(), false),
    ] {
        let scene = Scene::new();
        let c = scene.fake.cluster();
        scene.fake.put_image(POOL, source, GIB);
        c.snap_create(POOL, source, &snap).await.unwrap();
        c.snap_protect(POOL, source, &snap).await.unwrap();
        let parent = ParentSpec {
            pool: POOL.into(),
            image: source.into(),
            snap: snap.clone(),
        };
        let spec = ceph::CloneSpec {
            parent: parent.clone(),
            pool: POOL.into(),
            name: child.into(),
            features: ceph::RBD_FEATURE_LAYERING,
            data_pool: None,
            clone_format: Some(1),
        };
        c.clone_image(&spec).await.unwrap();
        let id = scene.fake.image(POOL, child).unwrap().id;
        c.trash_move(POOL, child, 0).await.unwrap();
        let job = Job {
            cluster: c.clone(),
            pool: POOL.into(),
            id,
            image: child.into(),
            parent: Some(parent),
            size: GIB,
            finish_move: true,
        };
        assert!(!purge(&job, &Metrics::default()).await, "{snap}");
        assert!(scene.fake.trash(POOL).is_empty(), "{snap}");
        let left = scene.fake.image(POOL, source).unwrap().snapshots;
        assert_eq!(left.is_empty(), dropped, "{snap}: {left:?}");
    }
}

/// Trashes `pool/kubernetes-dynamic-pvc-1` for PV pvc-1, unstamped until then.
async fn trash_one(scene: &Scene) -> Result<()> {
    let c = scene.fake.cluster();
    let image = "kubernetes-dynamic-pvc-1";
    trash(
        &instance(),
        &c,
        POOL,
        image,
        "pvc-1",
        &BTreeMap::new(),
        image,
    )
    .await
}

/// The mark goes on before the move: an image whose mark could not be written is not
/// trashed (no sweep would ever purge it).
#[tokio::test]
async fn an_image_is_trashed_only_once_marked_ours() {
    let scene = Scene::new();
    scene.fake.put_image(POOL, "kubernetes-dynamic-pvc-1", GIB);
    scene
        .fake
        .inject(Fault::on(Rbd::SetMetadataUnopened).errno(libc::EIO));
    assert!(trash_one(&scene).await.is_err());
    assert_eq!(scene.fake.count(Rbd::TrashMove), 0);
    assert_eq!(scene.fake.images(POOL).len(), 1);

    scene.fake.clear_faults();
    trash_one(&scene).await.unwrap();
    let entry = scene.fake.trash(POOL).remove(0);
    let meta = scene.fake.trashed_image(POOL, &entry.id).unwrap().metadata;
    assert!(owner::purgeable(&meta, &instance()), "{meta:?}");
}

/// librbd's gap (measured by `tests/ceph_contract/`): in a pool at its quota that never had a
/// trash entry, the trash move cannot make the trash object and reports the image "already
/// gone" while it stays. `trash` checks, and fails with the quota in its message: the caller
/// keeps the PV (its finalizer) and retries, instead of reporting a deletion that left the
/// image behind.
#[tokio::test]
async fn at_a_full_pool_never_trashed_a_move_that_did_nothing_is_an_error() {
    let scene = Scene::new();
    scene.fake.put_image(POOL, "kubernetes-dynamic-pvc-1", GIB);
    let full = ceph::PoolQuota {
        max_objects: Some(1),
        objects: 5,
        ..Default::default()
    };
    scene.fake.set_quota(POOL, full);
    let err = trash_one(&scene).await.unwrap_err();
    assert!(
        matches!(&err, Error::TrashMoveIgnored { quota: Some(q), .. } if q.contains("max_objects 1")),
        "{err:?}"
    );
    assert_eq!(scene.fake.images(POOL).len(), 1, "still there");
    assert!(scene.fake.trash(POOL).is_empty());
}

/// A purge waits for the deletion under way (its trash move queues behind the purge's
/// removals at the OSD), and starts anyway once the bound has passed.
#[tokio::test(start_paused = true)]
async fn a_purge_gives_way_to_a_deletion_under_way_for_a_bounded_time() {
    for ends_after in [Duration::from_millis(500), GIVE_WAY_AT_MOST * 3] {
        let scene = Scene::new();
        let c = scene.fake.cluster();
        let image = "kubernetes-dynamic-pvc-1";
        let id = scene.fake.put_image(POOL, image, GIB);
        c.trash_move(POOL, image, 0).await.unwrap();
        let metrics = Arc::new(Metrics::default());
        let purger = Purger::start(metrics.clone());
        let deletion = metrics.under_way("delete");
        let started = tokio::time::Instant::now();
        purger.submit(Job {
            cluster: c.clone(),
            pool: POOL.into(),
            id,
            image: image.into(),
            parent: None,
            size: GIB,
            finish_move: true,
        });
        let ended = tokio::spawn(async move {
            tokio::time::sleep(ends_after).await;
            drop(deletion);
        });
        purger.idle().await;
        let waited = started.elapsed();
        assert!(scene.fake.trash(POOL).is_empty(), "{ends_after:?}");
        let expected = ends_after.min(GIVE_WAY_AT_MOST);
        assert!(
            waited >= expected && waited < expected + Duration::from_millis(50),
            "deletion under way for {ends_after:?}: the purge waited {waited:?}"
        );
        ended.await.unwrap();
    }
}

/// Beyond the backlog bound purges do not give way: under a steady stream of deletions the
/// trash would otherwise grow for as long as the stream lasts.
#[tokio::test(start_paused = true)]
async fn a_large_backlog_is_purged_without_giving_way() {
    let scene = Scene::new();
    let c = scene.fake.cluster();
    let metrics = Arc::new(Metrics::default());
    let purger = Purger::start(metrics.clone());
    let _deletion = metrics.under_way("delete");
    let mut trashed = Vec::new();
    for i in 0..GIVE_WAY_BELOW + 40 {
        let image = format!("kubernetes-dynamic-pvc-{i}");
        let id = scene.fake.put_image(POOL, &image, GIB);
        c.trash_move(POOL, &image, 0).await.unwrap();
        trashed.push((image, id));
    }
    for (image, id) in trashed {
        purger.submit(Job {
            cluster: c.clone(),
            pool: POOL.into(),
            id,
            image,
            parent: None,
            size: GIB,
            finish_move: true,
        });
    }
    tokio::time::sleep(GIVE_WAY_AT_MOST / 2).await;
    let left = scene.fake.trash(POOL).len();
    // Down to the bound at once (each worker may take one more, checked as it started).
    assert!(
        (GIVE_WAY_BELOW - WORKERS..=GIVE_WAY_BELOW).contains(&left),
        "{left} left: purged at once down to the bound, then giving way"
    );
}
