//! The trash, its deferment, a half-made image, a pool at its quota.

use crate::*;

/// The trash: move, list, read by id, remove, each twice; a new image of the same name
/// meanwhile; an entry with snapshots.
pub async fn trash(r: &mut Run) {
    let c = r.c.clone();
    let name = r.name("t");
    c.create_image(&layering_spec(POOL, &name, 16 * MIB))
        .await
        .unwrap();
    c.set_metadata_unopened(POOL, &name, pairs(&[(KEYS[0], "a"), (KEYS[2], "c")]))
        .await
        .unwrap();
    let id = r.see("info", c.image_info(POOL, &name).await).unwrap().id;
    r.see(
        "read by id while live",
        c.trash_metadata(POOL, &id, KEYS).await,
    )
    .unwrap();
    let moved = r.see("move", c.trash_move(POOL, &name, 0).await);
    assert_eq!(moved.unwrap(), Removed::Removed);
    r.see("not listed", c.list_images(POOL).await).unwrap();
    let t = r
        .see("listed in the trash", c.trash_list(POOL).await)
        .unwrap();
    assert!(t.iter().any(|t| t.id == id && t.name == name));
    let again = r.see("move again", c.trash_move(POOL, &name, 0).await);
    assert_eq!(again.unwrap(), Removed::AlreadyGone);
    r.see("image_info by name", c.image_info(POOL, &name).await)
        .unwrap_err();
    r.see("trash_metadata", c.trash_metadata(POOL, &id, KEYS).await)
        .unwrap();
    r.see("trash_image", c.trash_image(POOL, &id, KEYS).await)
        .unwrap();
    let made = r.see(
        "a new image of the name",
        c.create_image(&layering_spec(POOL, &name, 8 * MIB)).await,
    );
    assert_eq!(made.unwrap(), Created::New);
    r.see("the new one", c.image_info(POOL, &name).await)
        .unwrap();
    let gone = r.see("remove", c.trash_remove(POOL, &id, false).await);
    assert_eq!(gone.unwrap(), Removed::Removed);
    let gone = r.see("remove again", c.trash_remove(POOL, &id, false).await);
    assert_eq!(gone.unwrap(), Removed::AlreadyGone);
    for e in [
        r.see(
            "trash_metadata of a missing id",
            c.trash_metadata(POOL, &id, KEYS).await,
        )
        .unwrap_err(),
        r.see(
            "trash_image of a missing id",
            c.trash_image(POOL, &id, KEYS).await,
        )
        .unwrap_err(),
    ] {
        assert!(e.is_not_found(), "{e}");
    }
    r.see("the trash", c.trash_list(POOL).await).unwrap();
    // With a snapshot: moved, but not removed.
    c.snap_create(POOL, &name, "s").await.unwrap();
    let id = c.image_info(POOL, &name).await.unwrap().id;
    r.see("move with a snapshot", c.trash_move(POOL, &name, 0).await)
        .unwrap();
    let e = r
        .see(
            "remove with a snapshot",
            c.trash_remove(POOL, &id, true).await,
        )
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENOTEMPTY), "{e}");
    r.see("still in the trash", c.trash_list(POOL).await)
        .unwrap();
}

/// An entry moved with a delay cannot be removed before it ends, unless forced.
pub async fn trash_deferment(r: &mut Run) {
    let c = r.c.clone();
    let name = r.name("d");
    c.create_image(&layering_spec(POOL, &name, 16 * MIB))
        .await
        .unwrap();
    let id = c.image_info(POOL, &name).await.unwrap().id;
    r.see("move for an hour", c.trash_move(POOL, &name, 3600).await)
        .unwrap();
    r.see("listed", c.trash_list(POOL).await).unwrap();
    let e = r
        .see("remove", c.trash_remove(POOL, &id, false).await)
        .unwrap_err();
    assert!(e.is_permission(), "{e}");
    let gone = r.see("remove by force", c.trash_remove(POOL, &id, true).await);
    assert_eq!(gone.unwrap(), Removed::Removed);
    r.see("gone", c.trash_list(POOL).await).unwrap();
}

/// What a process killed inside `rbd_create4` leaves: listed, not openable, "already
/// existed" to a create, removable.
pub async fn half_made_image(r: &mut Run) {
    let c = r.c.clone();
    let name = r.name("half");
    let id = r.half_made(POOL, &name).await;
    r.token("id", &id);
    r.see("listed", c.list_images(POOL).await).unwrap();
    let e = r
        .see("image_info", c.image_info(POOL, &name).await)
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    r.see("metadata", c.metadata(POOL, &name, KEYS).await)
        .unwrap_err();
    r.see("watchers", c.watchers(POOL, &name).await)
        .unwrap_err();
    r.see("snap_list", c.snap_list(POOL, &name).await)
        .unwrap_err();
    r.see(
        "trash_metadata by its id",
        c.trash_metadata(POOL, &id, KEYS).await,
    )
    .unwrap_err();
    // The object class writes the pairs whether or not the header is there.
    r.see(
        "set_metadata_unopened",
        c.set_metadata_unopened(POOL, &name, pairs(&[(KEYS[0], "x")]))
            .await,
    )
    .unwrap();
    r.see("image_info after that", c.image_info(POOL, &name).await)
        .unwrap_err();
    r.see("metadata after that", c.metadata(POOL, &name, KEYS).await)
        .unwrap_err();
    let again = r.see(
        "create",
        c.create_image(&layering_spec(POOL, &name, MIB)).await,
    );
    assert_eq!(again.unwrap(), Created::AlreadyExisted);
    let gone = r.see("remove", c.remove_image(POOL, &name).await);
    assert_eq!(gone.unwrap(), Removed::Removed);
    r.see("not listed", c.list_images(POOL).await).unwrap();
    let made = r.see(
        "create anew",
        c.create_image(&layering_spec(POOL, &name, MIB)).await,
    );
    assert_eq!(made.unwrap(), Created::New);
    r.see("whole", c.image_info(POOL, &name).await).unwrap();
    c.remove_image(POOL, &name).await.unwrap();
}

/// A pool at its quota (measured: the OSD refuses with EDQUOT, at once, what would add
/// objects or bytes; omap-only writes and removals pass), and the trap of a pool whose
/// trash object does not exist yet: a trash move (and `rbd_remove`, which goes through
/// the trash) cannot make it, and librbd then reports ENOENT, i.e. "already gone", for an
/// image that stays where it was.
pub async fn quota_reached(r: &mut Run) {
    let c = r.c.clone();
    let pool = r.own_pool("quota").await;
    let [a, b, e, f, g] = ["a", "b", "e", "f", "g"].map(|n| r.name(n));
    for name in [&a, &b, &e, &f, &g] {
        c.create_image(&layering_spec(&pool, name, 16 * MIB))
            .await
            .unwrap();
    }
    c.snap_create(&pool, &a, "base").await.unwrap();
    c.snap_protect(&pool, &a, "base").await.unwrap();
    c.snap_create(&pool, &a, "spare").await.unwrap();
    c.records_set(&pool, OID, vec![(r.name("k"), vec![1])])
        .await
        .unwrap();
    r.see("quota before", c.pool_quota(&pool).await).unwrap();
    r.quota(&pool, Some(1)).await;
    let q = r.see("quota reached", c.pool_quota(&pool).await).unwrap();
    assert!(q.reached().is_some(), "{q:?}");

    // What adds objects is refused.
    let err = r
        .see(
            "create",
            c.create_image(&layering_spec(&pool, &r.name("c"), MIB))
                .await,
        )
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EDQUOT), "{err}");
    let again = r.see(
        "create an existing name",
        c.create_image(&layering_spec(&pool, &a, MIB)).await,
    );
    assert_eq!(again.unwrap(), Created::AlreadyExisted);
    let err = r
        .see(
            "clone",
            c.clone_image(&clone_spec((&pool, &a, "base"), &pool, &r.name("d")))
                .await,
        )
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EDQUOT), "{err}");
    let err = r
        .see(
            "records_set on a new object",
            c.records_set(&pool, "rbdp-contract-new", vec![(r.name("k3"), vec![3])])
                .await,
        )
        .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EDQUOT), "{err}");

    // Omap-only writes pass.
    r.see(
        "records_set on an existing object",
        c.records_set(&pool, OID, vec![(r.name("k2"), vec![2])])
            .await,
    )
    .unwrap();
    r.see(
        "set_metadata",
        c.set_metadata(&pool, &a, pairs(&[(KEYS[0], "x")])).await,
    )
    .unwrap();
    r.see(
        "set_metadata_unopened",
        c.set_metadata_unopened(&pool, &a, pairs(&[(KEYS[1], "y")]))
            .await,
    )
    .unwrap();
    r.see("snap_create", c.snap_create(&pool, &a, "more").await)
        .unwrap();
    r.see("grow", c.resize(&pool, &a, 32 * MIB).await).unwrap();
    r.see("image_info", c.image_info(&pool, &a).await).unwrap();
    r.see("metadata", c.metadata(&pool, &a, KEYS).await)
        .unwrap();
    r.see("records", c.records(&pool, OID).await).unwrap();
    r.see("snap_remove", c.snap_remove(&pool, &a, "spare").await)
        .unwrap();
    r.see(
        "records_remove",
        c.records_remove(&pool, OID, vec![r.name("k")]).await,
    )
    .unwrap();

    // No trash object yet: "already gone", and nothing moved.
    let gone = r.see("trash_move, no trash yet", c.trash_move(&pool, &b, 0).await);
    assert_eq!(gone.unwrap(), Removed::AlreadyGone);
    let gone = r.see(
        "remove_image, no trash yet",
        c.remove_image(&pool, &e).await,
    );
    assert_eq!(gone.unwrap(), Removed::AlreadyGone);
    r.see("both still there", c.list_images(&pool).await)
        .unwrap();
    r.see("nothing in the trash", c.trash_list(&pool).await)
        .unwrap();

    // With a trash object, moves and removals work at the quota.
    r.quota(&pool, None).await;
    r.see("quota lifted", c.pool_quota(&pool).await).unwrap();
    r.see("trash_move, quota lifted", c.trash_move(&pool, &b, 0).await)
        .unwrap();
    r.quota(&pool, Some(1)).await;
    let moved = r.see("trash_move, trash there", c.trash_move(&pool, &f, 0).await);
    assert_eq!(moved.unwrap(), Removed::Removed);
    let trash = r.see("trash_list", c.trash_list(&pool).await).unwrap();
    for t in &trash {
        let gone = r.see("trash_remove", c.trash_remove(&pool, &t.id, true).await);
        assert_eq!(gone.unwrap(), Removed::Removed);
    }
    let gone = r.see("remove_image, trash there", c.remove_image(&pool, &g).await);
    assert_eq!(gone.unwrap(), Removed::Removed);
    r.see("left", c.list_images(&pool).await).unwrap();
    r.quota(&pool, None).await;
    for snap in ["base", "more"] {
        let _ = c.snap_unprotect(&pool, &a, snap).await;
        c.snap_remove(&pool, &a, snap).await.unwrap();
    }
    c.remove_image(&pool, &a).await.unwrap();
    c.remove_image(&pool, &e).await.unwrap();
}
