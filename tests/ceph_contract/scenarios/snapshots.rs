//! Snapshots, clones, their listing, flatten.

use crate::*;

/// Snapshots: create, list, protect, unprotect, remove, each twice; missing image and
/// snapshot; an image with snapshots cannot be removed.
pub async fn snapshots(r: &mut Run) {
    let c = r.c.clone();
    let name = r.name("snaps");
    c.create_image(&layering_spec(POOL, &name, 32 * MIB))
        .await
        .unwrap();
    let s = r.see("create", c.snap_create(POOL, &name, "one").await);
    assert_eq!(s.unwrap(), Created::New);
    let s = r.see("create again", c.snap_create(POOL, &name, "one").await);
    assert_eq!(s.unwrap(), Created::AlreadyExisted);
    c.resize(POOL, &name, 64 * MIB).await.unwrap();
    r.see(
        "another after growing",
        c.snap_create(POOL, &name, "two").await,
    )
    .unwrap();
    let snaps = r.see("list", c.snap_list(POOL, &name).await).unwrap();
    assert!(
        snaps.iter().all(|s| s.timestamp > 1_500_000_000),
        "{snaps:?}"
    );
    r.see("protect", c.snap_protect(POOL, &name, "one").await)
        .unwrap();
    r.see("protect again", c.snap_protect(POOL, &name, "one").await)
        .unwrap();
    r.see("list protected", c.snap_list(POOL, &name).await)
        .unwrap();
    let e = r
        .see(
            "remove a protected one",
            c.snap_remove(POOL, &name, "one").await,
        )
        .unwrap_err();
    assert!(e.is_busy(), "{e}");
    let e = r
        .see(
            "remove the image with snapshots",
            c.remove_image(POOL, &name).await,
        )
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENOTEMPTY), "{e}");
    r.see("unprotect", c.snap_unprotect(POOL, &name, "one").await)
        .unwrap();
    r.see(
        "unprotect again",
        c.snap_unprotect(POOL, &name, "one").await,
    )
    .unwrap();
    let gone = r.see("remove", c.snap_remove(POOL, &name, "one").await);
    assert_eq!(gone.unwrap(), Removed::Removed);
    let gone = r.see("remove again", c.snap_remove(POOL, &name, "one").await);
    assert_eq!(gone.unwrap(), Removed::AlreadyGone);
    for e in [
        r.see(
            "protect a missing one",
            c.snap_protect(POOL, &name, "none").await,
        )
        .unwrap_err(),
        r.see(
            "unprotect a missing one",
            c.snap_unprotect(POOL, &name, "none").await,
        )
        .unwrap_err(),
    ] {
        assert!(e.is_not_found(), "{e}");
    }
    r.see(
        "a NUL in the name",
        c.snap_create(POOL, &name, "a\0b").await,
    )
    .unwrap_err();
    let missing = r.name("missing");
    for e in [
        r.see(
            "create on a missing image",
            c.snap_create(POOL, &missing, "s").await,
        )
        .unwrap_err(),
        r.see(
            "protect on a missing image",
            c.snap_protect(POOL, &missing, "s").await,
        )
        .unwrap_err(),
        r.see(
            "unprotect on a missing image",
            c.snap_unprotect(POOL, &missing, "s").await,
        )
        .unwrap_err(),
        r.see(
            "remove on a missing image",
            c.snap_remove(POOL, &missing, "s").await,
        )
        .unwrap_err(),
        r.see("list of a missing image", c.snap_list(POOL, &missing).await)
            .unwrap_err(),
    ] {
        assert!(e.is_not_found(), "{e}");
    }
    r.see("remove the last", c.snap_remove(POOL, &name, "two").await)
        .unwrap();
    r.see("remove the image", c.remove_image(POOL, &name).await)
        .unwrap();
    // Protection needs layering.
    let plain = r.name("plain");
    let s = ImageSpec {
        features: 0,
        ..layering_spec(POOL, &plain, MIB)
    };
    c.create_image(&s).await.unwrap();
    r.see(
        "snapshot without layering",
        c.snap_create(POOL, &plain, "s").await,
    )
    .unwrap();
    r.see(
        "protect without layering",
        c.snap_protect(POOL, &plain, "s").await,
    )
    .unwrap_err();
    c.snap_remove(POOL, &plain, "s").await.unwrap();
    c.remove_image(POOL, &plain).await.unwrap();
}

/// Clones (format 1, as the provisioner makes them): the parent snapshot must be
/// protected, stays protected while a clone (even a trashed one) exists, and the parent
/// cannot go.
pub async fn clones(r: &mut Run) {
    let c = r.c.clone();
    let (parent, child) = (r.name("parent"), r.name("child"));
    c.create_image(&layering_spec(POOL, &parent, 32 * MIB))
        .await
        .unwrap();
    c.set_metadata(POOL, &parent, pairs(&[(KEYS[0], "parent")]))
        .await
        .unwrap();
    c.snap_create(POOL, &parent, "base").await.unwrap();
    let cs = clone_spec((POOL, &parent, "base"), POOL2, &child);
    let e = r
        .see("clone an unprotected snapshot", c.clone_image(&cs).await)
        .unwrap_err();
    assert!(matches!(e, CephError::Clone { .. }), "{e}");
    c.snap_protect(POOL, &parent, "base").await.unwrap();
    let made = r.see("clone", c.clone_image(&cs).await);
    assert_eq!(made.unwrap(), Created::New);
    let again = r.see("clone again", c.clone_image(&cs).await);
    assert_eq!(again.unwrap(), Created::AlreadyExisted);
    let info = r
        .see("the clone", c.image_info(POOL2, &child).await)
        .unwrap();
    assert!(info.parent.is_some());
    r.see(
        "the clone's metadata",
        c.metadata(POOL2, &child, KEYS).await,
    )
    .unwrap();
    r.see("grow the clone", c.resize(POOL2, &child, 48 * MIB).await)
        .unwrap();
    for (what, s) in [
        (
            "a missing snapshot",
            clone_spec((POOL, &parent, "none"), POOL2, &r.name("c1")),
        ),
        (
            "a missing parent",
            clone_spec((POOL, &r.name("none"), "base"), POOL2, &r.name("c2")),
        ),
        (
            "a missing parent pool",
            clone_spec((NO_POOL, &parent, "base"), POOL2, &r.name("c3")),
        ),
        (
            "into a missing pool",
            clone_spec((POOL, &parent, "base"), NO_POOL, &r.name("c4")),
        ),
        (
            "without layering",
            CloneSpec {
                features: 0,
                ..clone_spec((POOL, &parent, "base"), POOL2, &r.name("c5"))
            },
        ),
    ] {
        r.see(&format!("clone {what}"), c.clone_image(&s).await)
            .unwrap_err();
    }
    let e = r
        .see(
            "unprotect with a clone",
            c.snap_unprotect(POOL, &parent, "base").await,
        )
        .unwrap_err();
    assert!(e.is_busy(), "{e}");
    r.see("remove the parent", c.remove_image(POOL, &parent).await)
        .unwrap_err();
    r.see("trash the clone", c.trash_move(POOL2, &child, 0).await)
        .unwrap();
    let e = r
        .see(
            "unprotect with a trashed clone",
            c.snap_unprotect(POOL, &parent, "base").await,
        )
        .unwrap_err();
    assert!(e.is_busy(), "{e}");
    let trash = c.trash_list(POOL2).await.unwrap();
    let id = &trash
        .iter()
        .find(|t| t.name == child)
        .expect("in the trash")
        .id;
    r.see("purge the clone", c.trash_remove(POOL2, id, true).await)
        .unwrap();
    r.see(
        "unprotect once it is gone",
        c.snap_unprotect(POOL, &parent, "base").await,
    )
    .unwrap();
    // Into the parent's own pool, then removed directly.
    c.snap_protect(POOL, &parent, "base").await.unwrap();
    let sibling = r.name("sibling");
    r.see(
        "clone into the same pool",
        c.clone_image(&clone_spec((POOL, &parent, "base"), POOL, &sibling))
            .await,
    )
    .unwrap();
    r.see("the sibling", c.image_info(POOL, &sibling).await)
        .unwrap();
    r.see("remove the sibling", c.remove_image(POOL, &sibling).await)
        .unwrap();
    r.see(
        "unprotect after that",
        c.snap_unprotect(POOL, &parent, "base").await,
    )
    .unwrap();
    c.snap_remove(POOL, &parent, "base").await.unwrap();
    c.remove_image(POOL, &parent).await.unwrap();
}

/// The clones of a snapshot: from both pools, a trashed one flagged, a flattened one no
/// longer; a missing image, snapshot or pool.
pub async fn children(r: &mut Run) {
    let c = r.c.clone();
    let (parent, a, b) = (r.name("parent"), r.name("a"), r.name("b"));
    c.create_image(&layering_spec(POOL, &parent, 16 * MIB))
        .await
        .unwrap();
    c.snap_create(POOL, &parent, "base").await.unwrap();
    let kids = r
        .see("none yet", c.snap_children(POOL, &parent, "base").await)
        .unwrap();
    assert!(kids.is_empty(), "{kids:?}");
    c.snap_protect(POOL, &parent, "base").await.unwrap();
    c.clone_image(&clone_spec((POOL, &parent, "base"), POOL2, &a))
        .await
        .unwrap();
    c.clone_image(&clone_spec((POOL, &parent, "base"), POOL, &b))
        .await
        .unwrap();
    let a_id = r.see("a", c.image_info(POOL2, &a).await).unwrap().id;
    let b_id = r.see("b", c.image_info(POOL, &b).await).unwrap().id;
    let kids = r
        .see("two clones", c.snap_children(POOL, &parent, "base").await)
        .unwrap();
    let want = |pool: &str, image: &str, id: &str, in_trash| Child {
        pool: pool.into(),
        image: image.into(),
        id: id.into(),
        in_trash,
    };
    assert_eq!(
        kids,
        [want(POOL, &b, &b_id, false), want(POOL2, &a, &a_id, false)]
    );
    r.see("trash b", c.trash_move(POOL, &b, 0).await).unwrap();
    let kids = r
        .see(
            "b in the trash",
            c.snap_children(POOL, &parent, "base").await,
        )
        .unwrap();
    assert_eq!(
        kids,
        [want(POOL, &b, &b_id, true), want(POOL2, &a, &a_id, false)]
    );
    r.see("flatten a", c.flatten(POOL2, &a).await).unwrap();
    let kids = r
        .see("a flattened", c.snap_children(POOL, &parent, "base").await)
        .unwrap();
    assert_eq!(kids, [want(POOL, &b, &b_id, true)]);
    let missing = r.name("missing");
    for e in [
        r.see(
            "of a missing snapshot",
            c.snap_children(POOL, &parent, "none").await,
        )
        .unwrap_err(),
        r.see(
            "of a missing image",
            c.snap_children(POOL, &missing, "base").await,
        )
        .unwrap_err(),
    ] {
        assert!(e.is_not_found(), "{e}");
    }
    let e = r
        .see(
            "in a missing pool",
            c.snap_children(NO_POOL, &parent, "base").await,
        )
        .unwrap_err();
    assert!(e.is_pool_missing(), "{e}");
    r.see(
        "a NUL in the snapshot name",
        c.snap_children(POOL, &parent, "a\0b").await,
    )
    .unwrap_err();
    r.see("purge b", c.trash_remove(POOL, &b_id, true).await)
        .unwrap();
    let kids = r
        .see("none left", c.snap_children(POOL, &parent, "base").await)
        .unwrap();
    assert!(kids.is_empty(), "{kids:?}");
    c.snap_unprotect(POOL, &parent, "base").await.unwrap();
    c.snap_remove(POOL, &parent, "base").await.unwrap();
    c.remove_image(POOL, &parent).await.unwrap();
    c.remove_image(POOL2, &a).await.unwrap();
}

/// Flatten cuts a clone loose: no parent, and the snapshot may then be unprotected.
pub async fn flatten(r: &mut Run) {
    let c = r.c.clone();
    let (parent, child) = (r.name("parent"), r.name("child"));
    c.create_image(&layering_spec(POOL, &parent, 16 * MIB))
        .await
        .unwrap();
    c.snap_create(POOL, &parent, "base").await.unwrap();
    c.snap_protect(POOL, &parent, "base").await.unwrap();
    c.clone_image(&clone_spec((POOL, &parent, "base"), POOL, &child))
        .await
        .unwrap();
    r.see("before", c.image_info(POOL, &child).await).unwrap();
    r.see("flatten", c.flatten(POOL, &child).await).unwrap();
    let info = r.see("after", c.image_info(POOL, &child).await).unwrap();
    assert_eq!(info.parent, None);
    r.see("flatten again", c.flatten(POOL, &child).await)
        .unwrap();
    r.see("flatten the parent", c.flatten(POOL, &parent).await)
        .unwrap();
    r.see("unprotect", c.snap_unprotect(POOL, &parent, "base").await)
        .unwrap();
    r.see(
        "remove the snapshot",
        c.snap_remove(POOL, &parent, "base").await,
    )
    .unwrap();
    r.see("remove the parent", c.remove_image(POOL, &parent).await)
        .unwrap();
    r.see("the clone stays", c.image_info(POOL, &child).await)
        .unwrap();
    c.remove_image(POOL, &child).await.unwrap();
}
