//! Pools, images, features, image-meta, omap records, watchers.

use crate::*;

/// fsid, pool ids, creation times, quotas, applications, and a missing pool everywhere.
pub async fn pools(r: &mut Run) {
    let c = r.c.clone();
    let fsid = r.see("fsid", c.fsid().await).unwrap();
    let again = r.see("fsid again", c.fsid().await).unwrap();
    assert_eq!(fsid, again);
    let a = r.see("pool_id", c.pool_id(POOL).await).unwrap();
    let b = r
        .see("pool_id of another pool", c.pool_id(POOL2).await)
        .unwrap();
    assert_ne!(a, b);
    r.see("pool_id of a missing pool", c.pool_id(NO_POOL).await)
        .unwrap_err();
    r.see("pool_created", c.pool_created(POOL).await).unwrap();
    let none = r.see(
        "pool_created of a missing pool",
        c.pool_created(NO_POOL).await,
    );
    assert_eq!(none.unwrap(), None);
    r.see("pool_quota", c.pool_quota(POOL).await).unwrap();
    r.see("pool_quota of a missing pool", c.pool_quota(NO_POOL).await)
        .unwrap_err();
    let apps = r.see(
        "pool_applications",
        c.pool_applications(POOL).await.map(Apps),
    );
    assert_eq!(apps.unwrap().0, vec!["rbd".to_string()]);
    let e = r
        .see(
            "applications of a missing pool",
            c.pool_applications(NO_POOL).await.map(Apps),
        )
        .unwrap_err();
    assert!(e.is_pool_missing() && !e.is_not_found(), "{e}");
    let e = r
        .see(
            "list_images of a missing pool",
            c.list_images(NO_POOL).await,
        )
        .unwrap_err();
    assert!(e.is_pool_missing(), "{e}");
    r.see("trash_list of a missing pool", c.trash_list(NO_POOL).await)
        .unwrap_err();
    let e = r
        .see(
            "create in a missing pool",
            c.create_image(&layering_spec(NO_POOL, &r.name("x"), MIB))
                .await,
        )
        .unwrap_err();
    assert!(e.is_pool_missing(), "{e}");
    r.see(
        "image_info in a missing pool",
        c.image_info(NO_POOL, "x").await,
    )
    .unwrap_err();
    let gone = r.see(
        "remove in a missing pool",
        c.remove_image(NO_POOL, "x").await,
    );
    assert!(gone.unwrap_err().is_pool_missing(), "never AlreadyGone");
    r.see(
        "trash_move in a missing pool",
        c.trash_move(NO_POOL, "x", 0).await,
    )
    .unwrap_err();
    r.see(
        "trash_remove in a missing pool",
        c.trash_remove(NO_POOL, "x", true).await,
    )
    .unwrap_err();
    r.see(
        "snap_remove in a missing pool",
        c.snap_remove(NO_POOL, "x", "s").await,
    )
    .unwrap_err();
    r.see("pool name with a NUL", c.pool_id("kube\0").await)
        .unwrap_err();
}

/// Create, read back, create again, grow, refuse to shrink, remove, remove again.
pub async fn images(r: &mut Run) {
    let c = r.c.clone();
    let name = r.name("img");
    let created = r.see(
        "create",
        c.create_image(&layering_spec(POOL, &name, 64 * MIB)).await,
    );
    assert_eq!(created.unwrap(), Created::New);
    let info = r
        .see("image_info", c.image_info(POOL, &name).await)
        .unwrap();
    assert_eq!((info.size, info.features), (64 * MIB, RBD_FEATURE_LAYERING));
    let again = r.see(
        "create again, larger",
        c.create_image(&layering_spec(POOL, &name, 128 * MIB)).await,
    );
    assert_eq!(again.unwrap(), Created::AlreadyExisted);
    let info2 = r.see("unchanged", c.image_info(POOL, &name).await).unwrap();
    assert_eq!((info2.id, info2.size), (info.id, 64 * MIB));
    r.see("listed", c.list_images(POOL).await).unwrap();
    r.see("grow", c.resize(POOL, &name, 96 * MIB).await)
        .unwrap();
    r.see("same size", c.resize(POOL, &name, 96 * MIB).await)
        .unwrap();
    let e = r
        .see("shrink", c.resize(POOL, &name, 8 * MIB).await)
        .unwrap_err();
    assert!(matches!(e, CephError::ShrinkRefused { .. }), "{e}");
    r.see("grown", c.image_info(POOL, &name).await).unwrap();
    let missing = r.name("missing");
    let e = r
        .see(
            "image_info of a missing image",
            c.image_info(POOL, &missing).await,
        )
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = r
        .see(
            "resize a missing image",
            c.resize(POOL, &missing, MIB).await,
        )
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    r.see("flatten a missing image", c.flatten(POOL, &missing).await)
        .unwrap_err();
    let removed = r.see("remove", c.remove_image(POOL, &name).await);
    assert_eq!(removed.unwrap(), Removed::Removed);
    let again = r.see("remove again", c.remove_image(POOL, &name).await);
    assert_eq!(again.unwrap(), Removed::AlreadyGone);
    r.see("not listed", c.list_images(POOL).await).unwrap();
    let e = r
        .see("image_info after remove", c.image_info(POOL, &name).await)
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let created = r.see(
        "create a zero-sized image",
        c.create_image(&layering_spec(POOL, &name, 0)).await,
    );
    assert_eq!(created.unwrap(), Created::New);
    r.see("zero-sized", c.image_info(POOL, &name).await)
        .unwrap();
    r.see("remove it", c.remove_image(POOL, &name).await)
        .unwrap();
}

/// What a create accepts and refuses of features and data pools.
pub async fn features_and_data_pools(r: &mut Run) {
    let c = r.c.clone();
    let cases: &[(&str, u64, Option<&str>)] = &[
        ("data pool", RBD_FEATURE_LAYERING, Some(POOL2)),
        ("data pool = own pool", RBD_FEATURE_LAYERING, Some(POOL)),
        ("missing data pool", RBD_FEATURE_LAYERING, Some(NO_POOL)),
        ("no features", 0, None),
        (
            "exclusive-lock, object-map, fast-diff",
            RBD_FEATURE_LAYERING
                | RBD_FEATURE_EXCLUSIVE_LOCK
                | RBD_FEATURE_OBJECT_MAP
                | RBD_FEATURE_FAST_DIFF,
            None,
        ),
        (
            "object-map without exclusive-lock",
            RBD_FEATURE_LAYERING | RBD_FEATURE_OBJECT_MAP,
            None,
        ),
        (
            "fast-diff without object-map",
            RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_FAST_DIFF,
            None,
        ),
        (
            "journaling without exclusive-lock",
            RBD_FEATURE_LAYERING | RBD_FEATURE_JOURNALING,
            None,
        ),
        (
            "journaling",
            RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_JOURNALING,
            None,
        ),
        (
            "deep-flatten",
            RBD_FEATURE_LAYERING | RBD_FEATURE_DEEP_FLATTEN,
            None,
        ),
        ("striping v2", RBD_FEATURE_LAYERING | 1 << 1, None),
        (
            "data-pool without a data pool",
            RBD_FEATURE_LAYERING | RBD_FEATURE_DATA_POOL,
            None,
        ),
        ("an unknown feature", RBD_FEATURE_LAYERING | 1 << 40, None),
        ("operations", RBD_FEATURE_LAYERING | 1 << 8, None),
        ("migrating", RBD_FEATURE_LAYERING | 1 << 9, None),
        ("non-primary", RBD_FEATURE_LAYERING | 1 << 10, None),
        ("dirty-cache", RBD_FEATURE_LAYERING | 1 << 11, None),
        ("bit 12", RBD_FEATURE_LAYERING | 1 << 12, None),
    ];
    for (i, (what, features, data_pool)) in cases.iter().enumerate() {
        let name = r.name(&format!("f{i}"));
        let s = ImageSpec {
            data_pool: data_pool.map(str::to_string),
            features: *features,
            ..layering_spec(POOL, &name, 16 * MIB)
        };
        if r.see(&format!("create, {what}"), c.create_image(&s).await)
            .is_ok()
        {
            r.see(&format!("info, {what}"), c.image_info(POOL, &name).await)
                .unwrap();
            r.see(
                &format!("remove, {what}"),
                c.remove_image(POOL, &name).await,
            )
            .unwrap();
        }
    }
}

/// Image-meta: the stamp written unopened and opened, read back by key; repeated keys;
/// a missing image.
pub async fn image_meta(r: &mut Run) {
    let c = r.c.clone();
    let name = r.name("meta");
    c.create_image(&layering_spec(POOL, &name, MIB))
        .await
        .unwrap();
    r.see("none set", c.metadata(POOL, &name, KEYS).await)
        .unwrap();
    r.see(
        "set unopened",
        c.set_metadata_unopened(
            POOL,
            &name,
            pairs(&[
                (KEYS[0], "one"),
                (KEYS[1], ""),
                ("rbdp-contract/other", "x"),
            ]),
        )
        .await,
    )
    .unwrap();
    let m = r.see("read", c.metadata(POOL, &name, KEYS).await).unwrap();
    assert_eq!(m.len(), 2, "{m:?}");
    r.see(
        "set opened",
        c.set_metadata(POOL, &name, pairs(&[(KEYS[1], "two"), (KEYS[2], "three")]))
            .await,
    )
    .unwrap();
    r.see("read again", c.metadata(POOL, &name, KEYS).await)
        .unwrap();
    r.see(
        "a key twice, unopened",
        c.set_metadata_unopened(
            POOL,
            &name,
            pairs(&[(KEYS[0], "first"), (KEYS[0], "second")]),
        )
        .await,
    )
    .unwrap();
    r.see("which one", c.metadata(POOL, &name, KEYS).await)
        .unwrap();
    r.see(
        "a key twice, opened",
        c.set_metadata(
            POOL,
            &name,
            pairs(&[(KEYS[0], "first"), (KEYS[0], "second")]),
        )
        .await,
    )
    .unwrap();
    r.see("which one now", c.metadata(POOL, &name, KEYS).await)
        .unwrap();
    let missing = r.name("missing");
    for e in [
        r.see(
            "set unopened on a missing image",
            c.set_metadata_unopened(POOL, &missing, pairs(&[(KEYS[0], "x")]))
                .await,
        )
        .unwrap_err(),
        r.see(
            "set opened on a missing image",
            c.set_metadata(POOL, &missing, pairs(&[(KEYS[0], "x")]))
                .await,
        )
        .unwrap_err(),
        r.see(
            "read a missing image",
            c.metadata(POOL, &missing, KEYS).await,
        )
        .unwrap_err(),
    ] {
        assert!(e.is_not_found(), "{e}");
    }
    r.see("not made by the writes", c.list_images(POOL).await)
        .unwrap();
    c.remove_image(POOL, &name).await.unwrap();
}

/// Omap records: set, overwrite, remove, on an object that does not exist yet.
pub async fn records(r: &mut Run) {
    let c = r.c.clone();
    let (k1, k2) = (r.name("k1"), r.name("k2"));
    r.see("read", c.records(POOL, OID).await).unwrap();
    r.see(
        "read a missing object",
        c.records(POOL, "rbdp-contract-none").await,
    )
    .unwrap();
    r.see(
        "set",
        c.records_set(
            POOL,
            OID,
            vec![(k2.clone(), vec![0, 1, 255]), (k1.clone(), b"one".to_vec())],
        )
        .await,
    )
    .unwrap();
    r.see("read back", c.records(POOL, OID).await).unwrap();
    r.see(
        "overwrite",
        c.records_set(POOL, OID, vec![(k1.clone(), vec![])]).await,
    )
    .unwrap();
    r.see("read again", c.records(POOL, OID).await).unwrap();
    r.see(
        "remove a key and a missing one",
        c.records_remove(POOL, OID, vec![k1.clone(), r.name("none")])
            .await,
    )
    .unwrap();
    r.see("read after remove", c.records(POOL, OID).await)
        .unwrap();
    r.see(
        "remove from a missing object",
        c.records_remove(POOL, "rbdp-contract-none", vec![k1.clone()])
            .await,
    )
    .unwrap();
    r.see(
        "remove the rest",
        c.records_remove(POOL, OID, vec![k2]).await,
    )
    .unwrap();
    r.see(
        "set in a missing pool",
        c.records_set(NO_POOL, OID, vec![(k1, vec![])]).await,
    )
    .unwrap_err();
    r.see("read in a missing pool", c.records(NO_POOL, OID).await)
        .unwrap_err();
    r.see(
        "remove in a missing pool",
        c.records_remove(NO_POOL, OID, vec![]).await,
    )
    .unwrap_err();
}

/// A client holding the image open: listed as a watcher, blocks removal (also from the
/// trash), not a trash move.
pub async fn watchers(r: &mut Run) {
    let c = r.c.clone();
    let name = r.name("w");
    c.create_image(&layering_spec(POOL, &name, 16 * MIB))
        .await
        .unwrap();
    let w = r.see("none", c.watchers(POOL, &name).await).unwrap();
    assert!(w.is_empty(), "reading does not make us a watcher: {w:?}");
    r.see("info does not watch", c.image_info(POOL, &name).await)
        .unwrap();
    r.see("still none", c.watchers(POOL, &name).await).unwrap();
    // A deletion's checks in one open: the same answers as the reads one by one.
    r.see("inspect, none", c.inspect(POOL, &name, KEYS).await)
        .unwrap();
    c.set_metadata(POOL, &name, pairs(&[(KEYS[1], "b")]))
        .await
        .unwrap();
    c.snap_create(POOL, &name, "i").await.unwrap();
    let held = r.hold_open(POOL, &name).await;
    let w = r.see("held open", c.watchers(POOL, &name).await).unwrap();
    assert_eq!(w.len(), 1);
    let seen = r
        .see("inspect held open", c.inspect(POOL, &name, KEYS).await)
        .unwrap();
    assert_eq!(seen.watchers.len(), 1);
    assert_eq!(seen.snapshots.len(), 1);
    assert_eq!(seen.metadata.get(KEYS[1]).map(String::as_str), Some("b"));
    c.snap_remove(POOL, &name, "i").await.unwrap();
    let e = r
        .see("remove while held", c.remove_image(POOL, &name).await)
        .unwrap_err();
    assert!(e.is_busy(), "{e}");
    r.see("resize while held", c.resize(POOL, &name, 32 * MIB).await)
        .unwrap();
    r.see(
        "set metadata while held",
        c.set_metadata(POOL, &name, pairs(&[(KEYS[0], "x")])).await,
    )
    .unwrap();
    let id = c.image_info(POOL, &name).await.unwrap().id;
    r.see("trash move while held", c.trash_move(POOL, &name, 0).await)
        .unwrap();
    r.see("trash", c.trash_list(POOL).await).unwrap();
    let e = r
        .see(
            "trash remove while held",
            c.trash_remove(POOL, &id, true).await,
        )
        .unwrap_err();
    assert!(e.is_busy(), "{e}");
    drop(held);
    let gone = r.see(
        "trash remove once let go",
        c.trash_remove(POOL, &id, true).await,
    );
    assert_eq!(gone.unwrap(), Removed::Removed);
    let e = r
        .see("watchers of a missing image", c.watchers(POOL, &name).await)
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let e = r
        .see(
            "inspect a missing image",
            c.inspect(POOL, &name, KEYS).await,
        )
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    // Snapshots are checked before watchers.
    c.create_image(&layering_spec(POOL, &name, 16 * MIB))
        .await
        .unwrap();
    c.snap_create(POOL, &name, "s").await.unwrap();
    let held = r.hold_open(POOL, &name).await;
    r.see(
        "remove with a snapshot, held",
        c.remove_image(POOL, &name).await,
    )
    .unwrap_err();
    drop(held);
    c.snap_remove(POOL, &name, "s").await.unwrap();
    c.remove_image(POOL, &name).await.unwrap();
}
