use super::*;

#[test]
fn errno_names_and_text() {
    assert_eq!(Errno::from_ret(-2).name(), "ENOENT");
    assert_eq!(Errno::from_ret(16), Errno(libc::EBUSY));
    assert_eq!(Errno(libc::ETIMEDOUT).name(), "ETIMEDOUT");
    assert_eq!(Errno(4242).name(), "E?");
    assert_eq!(
        Errno(libc::EACCES).to_string(),
        "EACCES (Permission denied, errno 13)"
    );
    assert_eq!(format!("{:?}", Errno(libc::EEXIST)), "EEXIST(17)");
}

#[test]
fn connect_errors_carry_the_operator_hint() {
    let e = CephError::Connect {
        monitors: "10.0.0.1:6789".into(),
        user: "kube".into(),
        errno: Errno(libc::EACCES),
        elapsed_ms: 3,
        hint: connect_hint(Errno(libc::EACCES)),
    };
    let s = e.to_string();
    assert!(
        s.contains("10.0.0.1:6789") && s.contains("client.kube"),
        "{s}"
    );
    assert!(s.contains("EACCES"), "{s}");
    assert!(s.contains("check the key and the user's caps"), "{s}");
    assert!(e.is_permission());
    assert_eq!(e.errno(), Some(libc::EACCES));
    assert!(
        connect_hint(Errno(libc::EPERM))
            .unwrap()
            .contains("check the key")
    );

    let t = connect_hint(Errno(libc::ETIMEDOUT)).unwrap();
    assert!(t.starts_with("monitors unreachable: check the monitors parameter and network"));
}

#[test]
fn ambiguous_monitor_addresses() {
    assert!(has_ambiguous_monitor("127.0.0.1:16789"));
    assert!(has_ambiguous_monitor("v2:10.0.0.1:3300,10.0.0.2:13300"));
    assert!(!has_ambiguous_monitor("127.0.0.1:6789"));
    assert!(!has_ambiguous_monitor("127.0.0.1:3300,mon-b:6789"));
    assert!(!has_ambiguous_monitor("v1:127.0.0.1:16789"));
    assert!(!has_ambiguous_monitor(
        "[v2:127.0.0.1:13300,v1:127.0.0.1:16789]"
    ));
    assert!(!has_ambiguous_monitor("mon-a,mon-b"));
    assert!(AMBIGUOUS_MONITOR_TIMEOUT_HINT.contains("check the key"));
}

#[test]
fn image_errors_name_pool_image_errno_and_hint() {
    let e = img_err(Op::Remove, "kube", "pvc-1", Errno(libc::EBUSY));
    assert_eq!(
        e.to_string(),
        "remove of image kube/pvc-1 failed: EBUSY (Device or resource busy, errno 16); \
         hint: the image still has watchers: it is probably still mapped on a node"
    );
    assert!(e.is_busy() && !e.is_not_found() && !e.is_exists());

    let e = CephError::Pool {
        pool: "nope".into(),
        errno: Errno(libc::ENOENT),
        hint: pool_hint(Errno(libc::ENOENT)),
    };
    assert!(
        !e.is_not_found(),
        "a missing pool never means the image is gone"
    );
    assert!(e.is_pool_missing());
    assert!(e.to_string().contains("pool does not exist"), "{e}");

    let e = img_err(Op::Create, "kube", "x", Errno(libc::EEXIST));
    assert!(e.is_exists());
    assert!(!e.to_string().contains("hint"), "no hint for EEXIST: {e}");
}

#[test]
fn errnos_map_to_the_faults_an_operator_fixes() {
    let img = |op, e| img_err(op, "kube", "pvc-1", Errno(e));
    let connect = |e| CephError::Connect {
        monitors: "v1:127.0.0.1:6789".into(),
        user: "kube".into(),
        errno: Errno(e),
        elapsed_ms: 3,
        hint: connect_hint(Errno(e)),
    };
    let cases = [
        (
            img(Op::Create, libc::EDQUOT),
            Some(Fault::PoolFull { quota: true }),
        ),
        (
            pool_err(Op::WriteRecords, "kube", Errno(libc::EDQUOT)),
            Some(Fault::PoolFull { quota: true }),
        ),
        (
            img(Op::SetMetadata, libc::ENOSPC),
            Some(Fault::PoolFull { quota: false }),
        ),
        (connect(libc::EACCES), Some(Fault::Auth)),
        (connect(libc::EPERM), Some(Fault::Auth)),
        (connect(libc::ETIMEDOUT), None),
        (img(Op::Create, libc::EPERM), Some(Fault::Denied)),
        (img(Op::Open, libc::EACCES), Some(Fault::Denied)),
        (
            pool_err(Op::WriteRecords, "kube", Errno(libc::EPERM)),
            Some(Fault::Denied),
        ),
        (pool_err(Op::TrashRemove, "kube", Errno(libc::EPERM)), None),
        (img(Op::Create, libc::ESHUTDOWN), Some(Fault::Blocklisted)),
        (img(Op::Create, libc::EEXIST), None),
        (img(Op::Create, libc::ETIMEDOUT), None),
        (CephError::Task("x".into()), None),
    ];
    for (e, want) in cases {
        assert_eq!(e.fault(), want, "{e}");
    }
    // -122 and -28 as librados returns them.
    assert_eq!(Errno::from_ret(-122).name(), "EDQUOT");
    assert_eq!(Errno::from_ret(-28).name(), "ENOSPC");
    assert_eq!(Errno::from_ret(-108).name(), "ESHUTDOWN");
    let b = img(Op::Create, libc::ESHUTDOWN).to_string();
    assert!(
        b.contains("blocklisted") && b.contains("connects a fresh one"),
        "{b}"
    );
}

/// What other implementations of the seam build their errors with: the same variants and
/// hints as librbd's path.
#[test]
fn constructors_name_the_object_and_carry_the_hint() {
    let e = CephError::trash_op(Op::TrashRemove, "kube", "10ab", Errno(libc::EPERM));
    // Refused until the entry's deferment ends, as librbd's path reports it: not a caps fault.
    assert_eq!(e.fault(), None);
    assert!(
        e.to_string()
            .starts_with("trash remove of image kube/(trash id 10ab) failed: EPERM"),
        "{e}"
    );
    assert!(e.to_string().contains("deferment"), "{e}");
    let e = CephError::pool_open("nope", Errno(libc::ENOENT));
    assert!(e.is_pool_missing() && e.to_string().contains("pool does not exist"));
    let e = CephError::snapshot_op(Op::SnapshotUnprotect, "kube", "a", "s", Errno(libc::EBUSY));
    assert_eq!(
        e.to_string(),
        "snapshot unprotect of snapshot kube/a@s failed: EBUSY (Device or resource busy, \
         errno 16); hint: the image or snapshot is in use (watchers, children or a lock)"
    );
    let e = CephError::clone_failed("kube/a@s", "kube2", "b", Errno(libc::ENOENT));
    assert!(e.is_not_found() && e.to_string().contains("parent image or snapshot"));
    let e = CephError::pool_op(Op::ListImages, "kube", Errno(libc::ETIMEDOUT));
    assert!(e.is_timeout() && e.to_string().contains("ceph -s"), "{e}");
    let e = CephError::connect_failed("127.0.0.1:16789", "admin", Errno(libc::ETIMEDOUT), 5);
    assert!(e.to_string().contains("OR a wrong key"), "{e}");
    let e = CephError::fsid_failed("mon:6789", Errno(libc::EIO));
    assert_eq!(e.errno(), Some(libc::EIO));
}

#[test]
fn errors_without_errno() {
    let e = CephError::ShrinkRefused {
        pool: "kube".into(),
        image: "a".into(),
        current: 2,
        requested: 1,
    };
    assert_eq!(e.errno(), None);
    assert!(
        e.to_string()
            .contains("refusing to shrink image kube/a from 2 to 1 bytes")
    );
    assert_eq!(CephError::Task("x".into()).errno(), None);
}

#[test]
fn listing_children_fails_on_the_snapshot_and_needs_every_pool() {
    let e = CephError::snapshot_op(Op::ListChildren, "kube", "a", "s", Errno(libc::EPERM));
    let s = e.to_string();
    assert!(
        s.starts_with("list children of snapshot kube/a@s failed: EPERM"),
        "{s}"
    );
    assert!(s.contains("reads every pool"), "{s}");
    assert_eq!(e.fault(), Some(Fault::Denied));
    let e = CephError::snapshot_op(Op::ListChildren, "kube", "a", "s", Errno(libc::ENOENT));
    assert!(e.is_not_found(), "a missing snapshot is not found: {e}");
}
