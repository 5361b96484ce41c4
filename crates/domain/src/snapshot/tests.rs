use super::*;

fn place() -> Place {
    Place {
        fsid: "f1d".into(),
        pool_id: 3,
    }
}

#[test]
fn handles_round_trip_and_refuse_garbage() {
    let ours = Handle {
        place: Some(place()),
        pool: "kube".into(),
        image: "kubernetes-dynamic-pvc-1".into(),
        snap: rbd_snap_name("u-1"),
    };
    let text = ours.to_string();
    assert_eq!(
        text,
        "rbdp1:f1d:3:kube/kubernetes-dynamic-pvc-1@snapshot-u-1"
    );
    assert_eq!(Handle::parse(&text), Ok(ours));
    let operator = Handle::parse("kube/img@before-upgrade").unwrap();
    assert_eq!(operator.place, None);
    assert_eq!(operator.to_string(), "kube/img@before-upgrade");
    for bad in [
        "",
        "kube/img",
        "img@s",
        "kube/@s",
        "kube/img@",
        "/img@s",
        "kube/a/b@s",
        "rbdp1:f1d:x:kube/img@s",
        "rbdp1::3:kube/img@s",
        "rbdp1:f1d:3",
        // ceph-csi's handles are its own.
        "0001-0024-fa1c6a53-0000000000000003-5e0d2d5a-9c1f-11ee-9a4e-0a580a810213",
    ] {
        let e = Handle::parse(bad).unwrap_err();
        assert!(
            e.to_string().contains("<pool>/<image>@<snapshot>"),
            "{bad}: {e}"
        );
    }
    assert!(is_volume_snapshot(&rbd_snap_name("x")));
    assert!(!is_volume_snapshot("clone-for-kubernetes-dynamic-pvc-1"));
}

#[test]
fn class_parameters() {
    let raw = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(class_params("c", &raw(&[])), Ok(ClassParams::default()));
    let cephcsi = raw(&[
        ("clusterID", "f1d"),
        ("csi.storage.k8s.io/snapshotter-secret-name", "s"),
        ("csi.storage.k8s.io/snapshotter-secret-namespace", "ns"),
    ]);
    assert_eq!(
        class_params("c", &cephcsi).unwrap().cluster_id.as_deref(),
        Some("f1d")
    );
    let e = class_params("c", &raw(&[("pool", "kube"), ("snapshotFormat", "x")])).unwrap_err();
    assert_eq!(
        e.keys,
        vec!["pool".to_string(), "snapshotFormat".to_string()]
    );
    assert!(
        e.to_string()
            .contains("VolumeSnapshotClass c has unknown parameters")
    );
}

fn ready(size: u64) -> (SnapshotFacts, ContentFacts) {
    (
        SnapshotFacts {
            exists: true,
            deleting: false,
            ready: true,
            content: Some("snapcontent-1".into()),
            restore_size: Some(size),
        },
        ContentFacts {
            driver: "rbd.csi.ceph.com".into(),
            handle: Some("rbdp1:f1d:3:kube/img@snapshot-1".into()),
            restore_size: Some(size),
        },
    )
}

#[test]
fn restores() {
    const MIB: u64 = 1 << 20;
    let check = |want, s: &SnapshotFacts, c: Option<&ContentFacts>| {
        check_restore("ns", "snap", "rbd.csi.ceph.com", want, s, c)
    };
    let (s, c) = ready(64 * MIB);
    let src = check(64 * MIB, &s, Some(&c)).unwrap();
    assert_eq!(
        (src.pool.as_str(), src.image.as_str(), src.snap.as_deref()),
        ("kube", "img", Some("snapshot-1"))
    );
    assert_eq!(src.recorded, Some(place()));
    assert_eq!(src.size, 64 * MIB);
    assert!(
        check(128 * MIB, &s, Some(&c)).is_ok(),
        "larger restores are grown"
    );

    let e = check(32 * MIB, &s, Some(&c)).unwrap_err();
    assert!(
        matches!(
            e,
            CloneError::TooSmall {
                want: 32,
                have: 64,
                ..
            }
        ),
        "{e}"
    );
    let missing = SnapshotFacts::default();
    assert_eq!(
        check(64 * MIB, &missing, None),
        Err(CloneError::SnapshotMissing("ns/snap".into()))
    );
    let deleting = SnapshotFacts {
        deleting: true,
        ..s.clone()
    };
    assert!(matches!(
        check(64 * MIB, &deleting, Some(&c)),
        Err(CloneError::SnapshotMissing(_))
    ));
    let unready = SnapshotFacts {
        ready: false,
        ..s.clone()
    };
    assert_eq!(
        check(64 * MIB, &unready, Some(&c)),
        Err(CloneError::SnapshotNotReady("ns/snap".into()))
    );
    assert!(matches!(
        check(64 * MIB, &s, None),
        Err(CloneError::SnapshotNotReady(_))
    ));
    let other = ContentFacts {
        driver: "ebs.csi.aws.com".into(),
        ..c.clone()
    };
    assert!(matches!(
        check(64 * MIB, &s, Some(&other)),
        Err(CloneError::OtherDriver { .. })
    ));
    let garbled = ContentFacts {
        handle: Some("nonsense".into()),
        ..c.clone()
    };
    assert!(matches!(
        check(64 * MIB, &s, Some(&garbled)),
        Err(CloneError::BadHandle { .. })
    ));
}

fn content() -> Content {
    Content {
        delete_policy: true,
        has_finalizer: true,
        bound: true,
        volume_handle: Some("img".into()),
        ..Content::default()
    }
}

#[test]
fn content_decisions() {
    let ours = "rbdp1:f1d:3:kube/img@snapshot-1";
    let create = Ok(ContentAction::Create {
        volume_handle: "img".into(),
    });
    let handle = Handle::parse(ours).unwrap();
    let done = Content {
        has_status: true,
        status_handle: Some(ours.into()),
        ready: true,
        ..content()
    };
    let delete = |c: Content| Content {
        deleting: true,
        being_deleted: true,
        ..c
    };
    let table: Vec<(&str, Content, Result<ContentAction, BadHandle>)> = vec![
        ("new: cut", content(), create.clone()),
        (
            "not bound yet: wait",
            Content {
                bound: false,
                ..content()
            },
            Ok(ContentAction::Nothing),
        ),
        (
            "cut but not ready: again",
            Content {
                has_status: true,
                ..content()
            },
            create.clone(),
        ),
        ("ready: nothing", done.clone(), Ok(ContentAction::Nothing)),
        (
            "deleted under Delete",
            delete(done.clone()),
            Ok(ContentAction::DeleteSnapshot(handle.clone())),
        ),
        (
            "deleted under Retain",
            delete(Content {
                delete_policy: false,
                ..done.clone()
            }),
            Ok(ContentAction::ReleaseFinalizer),
        ),
        (
            "deleted before anything was cut",
            delete(content()),
            Ok(ContentAction::ReleaseFinalizer),
        ),
        (
            "deleted by hand while bound: stays",
            Content {
                deleting: true,
                ..done.clone()
            },
            Ok(ContentAction::Nothing),
        ),
        (
            "deleted while being cut: the cut finishes first",
            Content {
                being_created: true,
                ..delete(content())
            },
            create.clone(),
        ),
        (
            "finalizer gone: nothing",
            Content {
                has_finalizer: false,
                ..delete(done.clone())
            },
            Ok(ContentAction::Nothing),
        ),
        (
            "pre-provisioned: checked",
            Content {
                volume_handle: None,
                static_handle: Some("kube/img@s".into()),
                bound: false,
                ..content()
            },
            Ok(ContentAction::CheckStatic(
                Handle::parse("kube/img@s").unwrap(),
            )),
        ),
        (
            "pre-provisioned, unbound, deleted: its snapshot goes",
            Content {
                deleting: true,
                volume_handle: None,
                static_handle: Some("kube/img@s".into()),
                status_handle: Some("kube/img@s".into()),
                bound: false,
                ready: true,
                ..content()
            },
            Ok(ContentAction::DeleteSnapshot(
                Handle::parse("kube/img@s").unwrap(),
            )),
        ),
        (
            "pre-provisioned with a foreign handle",
            Content {
                volume_handle: None,
                static_handle: Some("0001-0024-abc".into()),
                ..content()
            },
            Err(BadHandle("0001-0024-abc".into())),
        ),
    ];
    for (what, c, want) in table {
        assert_eq!(decide(&c), want, "{what}");
    }
}
