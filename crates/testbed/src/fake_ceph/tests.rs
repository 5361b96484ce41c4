//! The fake's scripting: faults, the call log, watchers, the clock, the states a killed
//! process leaves, and the connector. (Its librbd semantics are checked against a real
//! cluster by `tests/ceph_contract/`.)

use super::*;

const MIB: u64 = 1 << 20;
const KEYS: &[&str] = &["k"];

fn spec(name: &str) -> ImageSpec {
    ImageSpec {
        pool: "kube".into(),
        name: name.into(),
        size: MIB,
        data_pool: None,
        features: RBD_FEATURE_LAYERING,
    }
}

fn kube() -> (FakeCeph, Arc<dyn RbdCluster>) {
    let fake = FakeCeph::with_pools(&["kube"]);
    let c = fake.cluster();
    (fake, c)
}

#[tokio::test]
async fn a_fault_on_every_call_fails_as_the_real_call_would_and_changes_nothing() {
    let (fake, c) = kube();
    fake.put_image("kube", "a", MIB);
    fake.fail(Method::TrashMove, libc::EBUSY);
    for _ in 0..2 {
        let e = c.trash_move("kube", "a", 0).await.unwrap_err();
        assert!(e.is_busy(), "{e}");
        assert!(
            matches!(
                e,
                CephError::Image {
                    op: Op::TrashMove,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("watchers"), "the real hint: {e}");
    }
    assert_eq!(fake.images("kube"), vec!["a"], "not moved");
    assert!(fake.trash("kube").is_empty());
    let calls = fake.calls_of(Method::TrashMove);
    assert_eq!(calls.len(), 2);
    assert!(
        calls
            .iter()
            .all(|c| c.errno == Some(libc::EBUSY) && !c.ok())
    );
    assert_eq!(calls[0].to_string(), "trash_move kube/a (EBUSY)");
    fake.clear_faults();
    assert_eq!(
        c.trash_move("kube", "a", 0).await.unwrap(),
        Removed::Removed
    );
}

#[tokio::test]
async fn the_nth_call_and_the_first_n_calls() {
    let (fake, c) = kube();
    fake.fail_nth(Method::CreateImage, 2, libc::ETIMEDOUT);
    assert_eq!(c.create_image(&spec("a")).await.unwrap(), Created::New);
    let e = c.create_image(&spec("b")).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(c.create_image(&spec("b")).await.unwrap(), Created::New);
    assert_eq!(fake.images("kube"), vec!["a", "b"]);

    fake.inject(Fault::on(Method::ImageInfo).times(2).errno(libc::EIO));
    for _ in 0..2 {
        assert_eq!(
            c.image_info("kube", "a").await.unwrap_err().errno(),
            Some(libc::EIO)
        );
    }
    c.image_info("kube", "a").await.unwrap();
}

#[tokio::test]
async fn faults_narrowed_to_a_pool_or_an_image() {
    let fake = FakeCeph::with_pools(&["kube", "other"]);
    let c = fake.cluster();
    fake.put_image("kube", "a", MIB);
    fake.put_image("kube", "b", MIB);
    fake.put_image("other", "a", MIB);
    fake.inject(
        Fault::on(Method::Metadata)
            .pool("kube")
            .image("a")
            .errno(libc::EACCES),
    );
    let e = c.metadata("kube", "a", KEYS).await.unwrap_err();
    assert!(e.is_permission(), "{e}");
    c.metadata("kube", "b", KEYS).await.unwrap();
    c.metadata("other", "a", KEYS).await.unwrap();
}

#[tokio::test]
async fn a_fault_after_the_effect_is_a_lost_reply() {
    let (fake, c) = kube();
    fake.inject(
        Fault::on(Method::CreateImage)
            .nth(1)
            .errno(libc::ETIMEDOUT)
            .after_effect(),
    );
    let e = c.create_image(&spec("a")).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(fake.images("kube"), vec!["a"], "made all the same");
    assert_eq!(
        c.create_image(&spec("a")).await.unwrap(),
        Created::AlreadyExisted
    );
    // A call that fails by itself keeps its own error.
    fake.inject(Fault::on(Method::ImageInfo).errno(libc::EIO).after_effect());
    let e = c.image_info("kube", "missing").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn a_fault_may_build_its_own_error() {
    let (fake, c) = kube();
    fake.put_image("kube", "a", MIB);
    fake.inject(Fault::on(Method::Watchers).error(|call| {
        CephError::image_op(Op::Open, &call.pool, &call.image, Errno(libc::ESHUTDOWN))
    }));
    let e = c.watchers("kube", "a").await.unwrap_err();
    assert!(e.poisons_client(), "{e}");
    assert!(matches!(e, CephError::Image { op: Op::Open, .. }), "{e:?}");
}

#[tokio::test]
async fn a_delayed_call_takes_its_time_and_is_logged_when_it_returns() {
    let (fake, c) = kube();
    fake.put_image("kube", "a", MIB);
    fake.inject(Fault::on(Method::Flatten).delay(Duration::from_secs(600)));
    let slow = tokio::time::timeout(Duration::from_millis(50), c.flatten("kube", "a")).await;
    assert!(slow.is_err(), "still running");
    assert_eq!(fake.count(Method::Flatten), 0, "not returned, not logged");
    fake.clear_faults();
    c.flatten("kube", "a").await.unwrap();
    assert_eq!(fake.count(Method::Flatten), 1);
}

/// Every method's injected errno comes back in the error variant the real call fails with.
#[test]
fn default_errors_carry_the_errno_in_the_real_variant() {
    use Method::*;
    for &method in Method::ALL {
        let call = Call {
            method,
            pool: "kube".into(),
            image: "img".into(),
            snap: Some("s".into()),
            errno: None,
        };
        let e = default_error(&call, "mon:6789", libc::ENOENT);
        assert_eq!(e.errno(), Some(libc::ENOENT), "{method}: {e}");
        let variant = match e {
            CephError::Cluster { .. } => "cluster",
            CephError::Pool { .. } => "pool",
            CephError::PoolOp { .. } => "pool op",
            CephError::Image { .. } => "image",
            CephError::Snapshot { .. } => "snapshot",
            CephError::Clone { .. } => "clone",
            _ => "other",
        };
        let want = match method {
            Fsid => "cluster",
            PoolId => "pool",
            PoolCreated | PoolQuota | PoolApplications | ListImages | RecordsSet
            | RecordsRemove | Records | TrashList => "pool op",
            SnapCreate | SnapProtect | SnapUnprotect | SnapRemove | SnapChildren => "snapshot",
            CloneImage => "clone",
            _ => "image",
        };
        assert_eq!(variant, want, "{method}");
        // Only the image's and the snapshot's own ENOENT are "not found".
        assert_eq!(
            e.is_not_found(),
            want != "pool op" && want != "pool" && want != "cluster"
        );
    }
    assert!(!Method::ImageInfo.writes() && Method::TrashMove.writes());
}

#[tokio::test]
async fn the_log_tells_what_a_caller_did_and_did_not_do() {
    let (fake, c) = kube();
    fake.put_image("kube", "a", MIB);
    fake.put_metadata("kube", "a", &[("k", "v")]);
    let meta = c.metadata("kube", "a", KEYS).await.unwrap();
    assert_eq!(meta.get("k").map(String::as_str), Some("v"));
    c.watchers("kube", "a").await.unwrap();
    c.snap_list("kube", "a").await.unwrap();
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    assert_eq!(fake.count(Method::TrashMove), 0);
    c.snap_create("kube", "a", "s").await.unwrap();
    let clone = CloneSpec {
        parent: ParentSpec {
            pool: "kube".into(),
            image: "a".into(),
            snap: "s".into(),
        },
        pool: "kube".into(),
        data_pool: None,
        name: "b".into(),
        features: RBD_FEATURE_LAYERING,
        clone_format: Some(1),
    };
    let e = c.clone_image(&clone).await.unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL), "not protected: {e}");
    let calls: Vec<String> = fake.calls().iter().map(Call::to_string).collect();
    assert_eq!(
        calls,
        [
            "metadata kube/a",
            "watchers kube/a",
            "snap_list kube/a",
            "snap_create kube/a@s",
            "clone_image kube/b@kube/a@s (EINVAL)",
        ]
    );
    assert!(fake.calls()[0].is(Method::Metadata, "kube", "a"));
    assert_eq!(fake.writes().len(), 2);
    fake.clear_calls();
    assert!(fake.calls().is_empty());
}

/// `rbd_list_children3`: clones in any pool, trashed ones flagged, sorted by pool and name.
#[tokio::test]
async fn the_children_of_a_snapshot() {
    let fake = FakeCeph::with_pools(&["kube", "other"]);
    let c = fake.cluster();
    fake.put_image("kube", "p", MIB);
    c.snap_create("kube", "p", "s").await.unwrap();
    c.snap_protect("kube", "p", "s").await.unwrap();
    for (pool, name) in [("other", "a"), ("kube", "c"), ("kube", "b")] {
        let spec = CloneSpec {
            parent: ParentSpec {
                pool: "kube".into(),
                image: "p".into(),
                snap: "s".into(),
            },
            pool: pool.into(),
            data_pool: None,
            name: name.into(),
            features: RBD_FEATURE_LAYERING,
            clone_format: Some(1),
        };
        c.clone_image(&spec).await.unwrap();
    }
    c.trash_move("kube", "c", 0).await.unwrap();
    let seen = |kids: Vec<Child>| -> Vec<String> {
        kids.iter()
            .map(|k| format!("{}/{} trash={}", k.pool, k.image, k.in_trash))
            .collect()
    };
    let kids = c.snap_children("kube", "p", "s").await.unwrap();
    assert_eq!(kids[0].id, fake.image("kube", "b").unwrap().id);
    assert_eq!(
        seen(kids),
        [
            "kube/b trash=false",
            "kube/c trash=true",
            "other/a trash=false"
        ]
    );
    c.flatten("other", "a").await.unwrap();
    let kids = c.snap_children("kube", "p", "s").await.unwrap();
    assert_eq!(seen(kids), ["kube/b trash=false", "kube/c trash=true"]);
    let e = c.snap_children("kube", "p", "none").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(
        matches!(
            e,
            CephError::Snapshot {
                op: Op::ListChildren,
                ..
            }
        ),
        "{e:?}"
    );
    let e = c.snap_children("kube", "none", "s").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    assert!(matches!(e, CephError::Image { op: Op::Open, .. }), "{e:?}");
    fake.inject(Fault::on(Method::SnapChildren).nth(1).errno(libc::EPERM));
    let e = c.snap_children("kube", "p", "s").await.unwrap_err();
    assert!(e.to_string().contains("reads every pool"), "{e}");
    let calls = fake.calls_of(Method::SnapChildren);
    assert_eq!(
        calls.last().unwrap().to_string(),
        "snap_children kube/p@s (EPERM)"
    );
    assert!(!Method::SnapChildren.writes());
}

/// A snapshot's timestamp is the fake's clock when it was taken.
#[tokio::test]
async fn snapshots_are_stamped_with_the_clock() {
    let (fake, c) = kube();
    fake.put_image("kube", "a", MIB);
    c.snap_create("kube", "a", "one").await.unwrap();
    fake.advance(3600);
    c.snap_create("kube", "a", "two").await.unwrap();
    let snaps = c.snap_list("kube", "a").await.unwrap();
    let (one, two) = (snaps[0].timestamp, snaps[1].timestamp);
    assert!((fake.now() - two).abs() <= 1, "{two}");
    assert!((3600..=3601).contains(&(two - one)), "{one} {two}");
}

#[tokio::test]
async fn a_held_image_has_a_watcher_that_follows_it_into_the_trash() {
    let (fake, c) = kube();
    let id = fake.put_image("kube", "a", MIB);
    let held = fake.hold_open("kube", "a");
    let w = c.watchers("kube", "a").await.unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].cookie, held.cookie());
    assert!(c.remove_image("kube", "a").await.unwrap_err().is_busy());
    assert_eq!(
        c.trash_move("kube", "a", 0).await.unwrap(),
        Removed::Removed
    );
    assert_eq!(fake.trashed_image("kube", &id).unwrap().watchers.len(), 1);
    assert!(
        c.trash_remove("kube", &id, true)
            .await
            .unwrap_err()
            .is_busy()
    );
    drop(held);
    assert_eq!(
        c.trash_remove("kube", &id, true).await.unwrap(),
        Removed::Removed
    );
}

#[tokio::test]
async fn the_clock_ends_a_deferment() {
    let (fake, c) = kube();
    let id = fake.put_image("kube", "a", MIB);
    let before = fake.now();
    c.trash_move("kube", "a", 3600).await.unwrap();
    let t = &fake.trash("kube")[0];
    assert!(t.deletion_time >= before);
    assert_eq!(t.deferment_end_time - t.deletion_time, 3600);
    let e = c.trash_remove("kube", &id, false).await.unwrap_err();
    assert!(e.is_permission(), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "trash remove of image kube/(trash id {id}) failed: EPERM (Operation not permitted, errno 1); hint: the trash entry's deferment time has not expired (use force) or the user's caps forbid it"
        )
    );
    fake.advance(3600);
    assert_eq!(
        c.trash_remove("kube", &id, false).await.unwrap(),
        Removed::Removed
    );
}

#[tokio::test]
async fn an_interrupted_trash_move_is_finished_by_moving_again() {
    for left_in_directory in [false, true] {
        let (fake, c) = kube();
        let id = fake.put_image("kube", "a", MIB);
        assert_eq!(
            fake.interrupt_trash_move("kube", "a", left_in_directory),
            id
        );
        assert_eq!(fake.images("kube").len(), usize::from(left_in_directory));
        let listed = c.trash_list("kube").await.unwrap();
        assert_eq!(
            (listed[0].id.as_str(), listed[0].name.as_str()),
            (id.as_str(), "a")
        );
        let e = c.trash_remove("kube", &id, true).await.unwrap_err();
        assert_eq!(e.errno(), Some(libc::EUCLEAN), "{e}");
        if left_in_directory {
            assert_eq!(c.image_info("kube", "a").await.unwrap().id, id);
        }
        assert_eq!(
            c.trash_move("kube", "a", 0).await.unwrap(),
            Removed::Removed
        );
        assert!(fake.images("kube").is_empty());
        assert_eq!(
            c.trash_remove("kube", &id, true).await.unwrap(),
            Removed::Removed
        );
        assert!(fake.trash("kube").is_empty());
    }
}

#[tokio::test]
async fn a_half_made_image_is_listed_but_cannot_be_opened() {
    let (fake, c) = kube();
    fake.half_made("kube", "a");
    assert_eq!(c.list_images("kube").await.unwrap(), vec!["a"]);
    assert!(c.image_info("kube", "a").await.unwrap_err().is_not_found());
    assert_eq!(
        c.create_image(&spec("a")).await.unwrap(),
        Created::AlreadyExisted
    );
    assert_eq!(c.remove_image("kube", "a").await.unwrap(), Removed::Removed);
    assert_eq!(c.create_image(&spec("a")).await.unwrap(), Created::New);
    c.image_info("kube", "a").await.unwrap();
}

#[tokio::test]
async fn a_replaced_pool_is_empty_with_another_id() {
    let (fake, c) = kube();
    fake.put_image("kube", "a", MIB);
    let old = c.pool_id("kube").await.unwrap();
    fake.set_pool_created("kube", Some(1_600_000_000));
    let new = fake.replace_pool("kube");
    assert_ne!(old, new);
    assert_eq!(c.pool_id("kube").await.unwrap(), new);
    assert!(c.list_images("kube").await.unwrap().is_empty());
    assert!(c.pool_created("kube").await.unwrap().unwrap() > 1_600_000_000);
    fake.remove_pool("kube");
    assert!(c.pool_id("kube").await.unwrap_err().is_pool_missing());
}

#[tokio::test]
async fn cluster_make_up() {
    let fake = FakeCeph::with_pools(&["kube"]).at_monitors("v1:10.0.0.1:6789");
    let c = fake.cluster();
    assert_eq!(c.monitors(), "v1:10.0.0.1:6789");
    fake.set_fsid("11111111-2222-3333-4444-555555555555");
    assert_eq!(
        c.fsid().await.unwrap(),
        "11111111-2222-3333-4444-555555555555"
    );
    fake.set_applications("kube", &["rgw", "rbd"]);
    assert_eq!(c.pool_applications("kube").await.unwrap(), ["rbd", "rgw"]);
    let quota = PoolQuota {
        max_objects: Some(10),
        max_bytes: None,
        objects: 10,
        bytes: 0,
    };
    fake.set_quota("kube", quota.clone());
    assert_eq!(c.pool_quota("kube").await.unwrap(), quota);
    let e = c.create_image(&spec("a")).await.unwrap_err();
    assert_eq!(
        e.fault(),
        Some(ceph::Fault::PoolFull { quota: true }),
        "{e}"
    );
    assert_eq!(
        fake.pool_id_of("kube"),
        Some(c.pool_id("kube").await.unwrap())
    );
    c.records_set("kube", "rbd_info", vec![("x".into(), vec![1])])
        .await
        .unwrap_err();
    assert!(fake.omap("kube", "rbd_info").is_empty());
}

// ---- the connector ------------------------------------------------------------------------------

#[tokio::test]
async fn the_connector_caches_clients_per_credentials() {
    let conns = FakeConnector::new();
    let a = FakeCeph::with_pools(&["kube"]).at_monitors("mon-a:6789,mon-b:6789");
    let creds = conns.serve(&a, "admin", "AQB-key-a");
    assert_eq!(creds.monitors, ["mon-a:6789", "mon-b:6789"]);
    let dyn_conns: &dyn Connector = &conns;
    assert!(dyn_conns.is_empty());
    let c = dyn_conns.get(&creds).await.unwrap();
    c.create_image(&spec("x")).await.unwrap();
    assert_eq!(a.images("kube"), ["x"], "the same cluster");
    dyn_conns.get(&creds).await.unwrap();
    assert_eq!((conns.connects(), dyn_conns.len()), (1, 1));

    // Not cached by a borrow.
    let b = FakeCeph::new().at_monitors("mon-c:6789");
    let other = conns.serve(&b, "client.admin", "AQB-key-b");
    dyn_conns.borrow(&other).await.unwrap();
    assert_eq!(dyn_conns.len(), 1);

    // Idle: not used since the previous pass.
    assert_eq!(dyn_conns.close_idle(), 0);
    assert_eq!(dyn_conns.close_idle(), 1);
    assert!(dyn_conns.is_empty());
    dyn_conns.get(&creds).await.unwrap();
    assert!(dyn_conns.forget(&creds));
    assert!(!dyn_conns.forget(&creds));
    assert_eq!(conns.connects(), 3);
    assert_eq!(dyn_conns.timeouts(), Timeouts::default());
}

#[tokio::test]
async fn the_connector_refuses_as_rados_connect_does() {
    let conns = FakeConnector::new();
    let a = FakeCeph::new();
    let mut creds = conns.serve(&a, "admin", "AQB-key-a");
    creds.key = ceph::CephKey::new("AQB-wrong");
    let e = conns.get(&creds).await.unwrap_err();
    assert!(
        matches!(e, CephError::Connect { .. }) && e.is_permission(),
        "{e}"
    );
    assert_eq!(e.fault(), Some(ceph::Fault::Auth));
    assert!(!format!("{e} {e:?}").contains("AQB-"), "no key in errors");

    creds.monitors = vec!["v1:10.9.9.9:6789".into()];
    let e = conns.get(&creds).await.unwrap_err();
    assert!(
        e.is_timeout() && e.to_string().contains("monitors unreachable"),
        "{e}"
    );

    let good = conns.serve(&a, "admin", "AQB-key-a");
    conns.fail_connects(1, libc::ETIMEDOUT);
    assert!(conns.get(&good).await.unwrap_err().is_timeout());
    conns.get(&good).await.unwrap();
    conns.forget(&good);
    conns.set_down(Some(libc::ETIMEDOUT));
    assert!(conns.get(&good).await.is_err());
    assert!(conns.borrow(&good).await.is_err());
    conns.set_down(None);
    conns.get(&good).await.unwrap();
    assert!(conns.is_empty() == (conns.len() == 0));
}
