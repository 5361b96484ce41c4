use super::*;

fn me() -> Instance {
    crate::fixtures::instance()
}

fn here() -> Place {
    crate::fixtures::place()
}

fn stamp() -> Stamp {
    crate::fixtures::stamp(PvState::None)
}

fn meta_of(pairs: Vec<(String, String)>) -> BTreeMap<String, String> {
    pairs.into_iter().collect()
}

/// A stamp as versions before the place and PV-state records wrote it.
fn old_stamp() -> BTreeMap<String, String> {
    let mut m = meta_of(stamp().pairs(&me()));
    for k in [META_FSID, META_POOL_ID, META_PV_STATE] {
        m.remove(k);
    }
    m
}

#[test]
fn stamps_round_trip() {
    let m = meta_of(stamp().pairs(&me()));
    assert_eq!(Stamp::read(&m), Some(stamp()));
    assert!(stamped_by(&m, &me()));
    let other = Instance {
        cluster: "c-2".into(),
        ..me()
    };
    assert!(!stamped_by(&m, &other), "another Kubernetes cluster");
    assert_eq!(Stamp::read(&BTreeMap::new()), None);
    let old = Stamp::read(&old_stamp()).unwrap();
    assert_eq!((old.place, old.pv_state), (None, PvState::Unknown));
}

#[test]
fn adoption_never_takes_back_a_written_pv() {
    let fresh = stamp();
    // The earlier attempt's image, stamped and marked written before it died.
    let mut existing = meta_of(fresh.pairs(&me()));
    existing.extend(pv_written_pair());
    existing.insert(META_CREATED.into(), "900".into());
    let mut after = existing.clone();
    after.extend(fresh.adoption_pairs(&me(), &existing));
    assert_eq!(after.get(META_PV_STATE).unwrap(), "written");
    assert_eq!(after.get(META_CREATED).unwrap(), "900");
    // An image left unstamped gets the whole stamp.
    let pairs = meta_of(fresh.adoption_pairs(&me(), &BTreeMap::new()));
    assert_eq!(pairs.get(META_PV_STATE).unwrap(), "none");
    // An old stamp without a PV state stays without one (unknown: kept like written).
    let mut old = old_stamp();
    old.extend(fresh.adoption_pairs(&me(), &old_stamp()));
    assert_eq!(Stamp::read(&old).unwrap().pv_state, PvState::Unknown);
}

#[test]
fn deletion_refuses_an_image_stamped_for_another_pv_or_owner() {
    let m = meta_of(stamp().pairs(&me()));
    assert_eq!(check_delete(&m, &me(), "pvc-u1", &here(), false), Ok(()));
    assert!(
        check_delete(&m, &me(), "pvc-u2", &here(), false)
            .unwrap_err()
            .to_string()
            .contains("pvc-u1")
    );
    let other = Instance {
        provisioner: "x.io/rbd".into(),
        ..me()
    };
    assert!(check_delete(&m, &other, "pvc-u1", &here(), false).is_err());
    let other = Instance {
        cluster: "c-9".into(),
        ..me()
    };
    assert!(check_delete(&m, &other, "pvc-u1", &here(), false).is_err());
    assert_eq!(
        check_delete(&BTreeMap::new(), &me(), "pvc-u1", &here(), false),
        Ok(()),
        "unstamped"
    );
    assert_eq!(
        check_delete(&old_stamp(), &me(), "pvc-u1", &here(), false),
        Ok(()),
        "stamped before place records"
    );
}

#[test]
fn deletion_refuses_an_image_found_in_another_cluster_or_pool() {
    let m = meta_of(stamp().pairs(&me()));
    let copied = Place {
        fsid: "f-2".into(),
        ..here()
    };
    assert!(matches!(
        check_delete(&m, &me(), "pvc-u1", &copied, false),
        Err(StampMismatch::Fsid { .. })
    ));
    let replaced = Place {
        pool_id: 9,
        ..here()
    };
    let e = check_delete(&m, &me(), "pvc-u1", &replaced, false).unwrap_err();
    assert_eq!(
        e,
        StampMismatch::PoolId {
            stamped: 3,
            live: 9
        }
    );
    let mut garbled = m.clone();
    garbled.insert(META_POOL_ID.into(), "x".into());
    assert!(check_delete(&garbled, &me(), "pvc-u1", &here(), false).is_err());
}

#[test]
fn volumes_of_the_old_provisioner_need_the_stamp_of_first_sight() {
    let seen = BoundVolume {
        pv: "pvc-legacy".into(),
        pv_uid: "pv-uid".into(),
        claim_namespace: "ns".into(),
        claim_name: "old".into(),
        claim_uid: "u9".into(),
    };
    // Unstamped: refused, with the commands that confirm it by hand.
    let e = check_delete(&BTreeMap::new(), &me(), "pvc-legacy", &here(), true).unwrap_err();
    assert!(e.to_string().contains("rbd image-meta set"), "{e}");
    // Seen bound: stamped; then deletion may go ahead, for that PV only.
    let pairs = first_sight_pairs(&BTreeMap::new(), &me(), &seen, &here(), 50).unwrap();
    let m = meta_of(pairs);
    assert_eq!(m.get(META_PV_UID).unwrap(), "pv-uid");
    assert_eq!(Stamp::read(&m).unwrap().pv_state, PvState::Written);
    assert_eq!(check_delete(&m, &me(), "pvc-legacy", &here(), true), Ok(()));
    assert!(check_delete(&m, &me(), "pvc-copy", &here(), true).is_err());
    // Stamped by another cluster sharing the pool: nothing is written, and nothing deleted.
    let theirs = meta_of(
        Stamp {
            pv: "pvc-legacy".into(),
            ..stamp()
        }
        .pairs(&Instance {
            cluster: "c-2".into(),
            ..me()
        }),
    );
    assert!(first_sight_pairs(&theirs, &me(), &seen, &here(), 50).is_err());
    assert!(check_delete(&theirs, &me(), "pvc-legacy", &here(), true).is_err());
    // One of ours from before the place records: only the records are added.
    let pairs = meta_of(
        first_sight_pairs(
            &old_stamp(),
            &me(),
            &BoundVolume {
                pv: "pvc-u1".into(),
                ..seen
            },
            &here(),
            50,
        )
        .unwrap(),
    );
    assert!(!pairs.contains_key(META_CREATED) && !pairs.contains_key(META_PV));
    assert_eq!(pairs.get(META_PV_STATE).unwrap(), "written");
}

#[test]
fn only_what_we_trashed_is_purged() {
    let mut m = meta_of(stamp().pairs(&me()));
    assert!(!purgeable(&m, &me()), "ours but never trashed by us");
    m.extend(trash_pairs(&m.clone(), &me(), "pvc-u1", 2000));
    assert!(purgeable(&m, &me()));
    let other = Instance {
        cluster: "c-2".into(),
        ..me()
    };
    assert!(!purgeable(&m, &other));
    // An operator's `rbd trash mv` of an unstamped image.
    assert!(!purgeable(&BTreeMap::new(), &me()));
    // An unstamped image we delete gets our name with the trash mark.
    let t = meta_of(trash_pairs(&BTreeMap::new(), &me(), "pvc-old", 5));
    assert!(purgeable(&t, &me()));
    assert_eq!(t.get(META_PV).map(String::as_str), Some("pvc-old"));
}

const GONE: Liveness = Liveness {
    pv_exists: false,
    referenced: false,
    claim_exists: false,
    watched: false,
};

#[test]
fn orphans_need_every_fact_to_agree() {
    let m = meta_of(stamp().pairs(&me()));
    let grace = Duration::from_secs(60);
    assert_eq!(orphan(&m, &me(), GONE, 2000, grace), Orphan::Collect);
    assert_eq!(
        orphan(&m, &me(), GONE, 1030, grace),
        Orphan::Keep(Keep::Young)
    );
    for (live, why) in [
        (
            Liveness {
                pv_exists: true,
                ..GONE
            },
            Keep::PvExists,
        ),
        (
            Liveness {
                referenced: true,
                ..GONE
            },
            Keep::PvExists,
        ),
        (
            Liveness {
                claim_exists: true,
                ..GONE
            },
            Keep::ClaimExists,
        ),
        (
            Liveness {
                watched: true,
                ..GONE
            },
            Keep::Watched,
        ),
    ] {
        assert_eq!(orphan(&m, &me(), live, 2000, grace), Orphan::Keep(why));
    }
    assert_eq!(
        orphan(&BTreeMap::new(), &me(), GONE, 2000, grace),
        Orphan::Keep(Keep::NotOurs)
    );
    let other = Instance {
        provisioner: "x.io/rbd".into(),
        ..me()
    };
    assert_eq!(
        orphan(&m, &other, GONE, 2000, grace),
        Orphan::Keep(Keep::NotOurs)
    );
}

/// The critical case: a Retain volume whose PV an operator deleted, an etcd restore, a volume
/// handed to another cluster. Its image had a PV, so however old and however alone, it stays.
#[test]
fn an_image_that_had_a_pv_is_never_collected() {
    let mut m = meta_of(stamp().pairs(&me()));
    m.extend(pv_written_pair());
    let grace = Duration::from_secs(60);
    assert_eq!(
        orphan(&m, &me(), GONE, i64::MAX, grace),
        Orphan::Keep(Keep::PvWritten)
    );
    // Stamped by a version that did not record it: it may have had a PV, so it stays too.
    assert_eq!(
        orphan(&old_stamp(), &me(), GONE, i64::MAX, grace),
        Orphan::Keep(Keep::PvWritten)
    );
}

#[test]
fn intents_are_read_back_only_when_they_are_ours() {
    let i = Intent::new("kubernetes-dynamic-pvc-u1", &stamp(), &me());
    let back = Intent::read(&i.image, &i.value(), &me()).unwrap();
    assert_eq!(back, i);
    assert_eq!(back.stamp(), Some(stamp()));
    let other = Instance {
        cluster: "c-2".into(),
        ..me()
    };
    assert_eq!(Intent::read(&i.image, &i.value(), &other), None);
    assert_eq!(Intent::read(&i.image, b"not json", &me()), None);
}

#[test]
fn an_image_created_but_never_stamped_is_stamped_from_its_intent() {
    let i = Intent::new("kubernetes-dynamic-pvc-u1", &stamp(), &me());
    let grace = Duration::from_secs(60);
    let unstamped = BTreeMap::new();
    match intent_action(&i, Some(&unstamped), 1001, grace) {
        IntentAction::Stamp(pairs) => {
            let m = meta_of(pairs);
            assert_eq!(Stamp::read(&m), Some(stamp()));
            // And then it is an orphan like any other, once old enough and alone.
            assert_eq!(orphan(&m, &me(), GONE, 2000, grace), Orphan::Collect);
        }
        other => panic!("{other:?}"),
    }
    let stamped = meta_of(stamp().pairs(&me()));
    assert_eq!(
        intent_action(&i, Some(&stamped), 1001, grace),
        IntentAction::Drop
    );
    // Not created (yet): wait while the creation may still be under way, then drop.
    assert_eq!(intent_action(&i, None, 1001, grace), IntentAction::Wait);
    assert_eq!(intent_action(&i, None, 5000, grace), IntentAction::Drop);
}
