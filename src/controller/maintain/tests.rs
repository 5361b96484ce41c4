//! Housekeeping against a scripted API server and a scripted Ceph: an image is collected as
//! an orphan only when it is stamped by us as never having had a PV, older than the grace
//! period, unmapped, and the API server (not a cache) says its PV and claim are gone; intent
//! records stamp what a crash left unstamped, and remove only what has no header.

use http::{Method as Http, StatusCode};

use super::*;
use crate::controller::testing::scene::*;
use crate::controller::testing::{ApiServer, Reply, Step, expect, instance, not_found, object};
use domain::fixtures;
use domain::owner::{Instance, META_PROVISIONER, Place, PvState};
use domain::volume::image_name;
use testbed::fake_ceph::Method as Rbd;

const CLAIM: &str = "/api/v1/namespaces/apps/persistentvolumeclaims/data";

fn pv_read(reply: Reply) -> Step {
    expect(
        Http::GET,
        format!("/api/v1/persistentvolumes/pvc-{UID}"),
        reply,
    )
}

fn claim_read(reply: Reply) -> Step {
    expect(Http::GET, CLAIM, reply)
}

/// Claim apps/data with this uid.
fn claim(uid: &str) -> Reply {
    object(&fixtures::claim("apps", "data", uid, Some("Bound")))
}

/// Both reads of the liveness check, answered "gone".
fn both_gone() -> Vec<Step> {
    vec![pv_read(not_found()), claim_read(not_found())]
}

/// Our stamp on claim [`UID`]'s image at creation (no PV yet), made `age` seconds ago.
fn created(place: &Place, age: i64) -> Vec<(String, String)> {
    let mut s = stamp(UID, place, PvState::None);
    s.created = crate::controller::unix_now() - age;
    s.pairs(&instance())
}

/// A left-over image, and whether housekeeping must collect it.
struct Leftover {
    case: &'static str,
    meta: fn(&Place) -> Vec<(String, String)>,
    /// What the API server is asked (the liveness check), and answers.
    api: fn() -> Vec<Step>,
    /// Other PVs the volumes watch has listed.
    cached: fn(&Place) -> Vec<PersistentVolume>,
    mapped: bool,
    collected: bool,
}

fn leftovers() -> Vec<Leftover> {
    fn old(p: &Place) -> Vec<(String, String)> {
        created(p, LONG_AGO)
    }
    fn none(_: &Place) -> Vec<PersistentVolume> {
        Vec::new()
    }
    fn unasked() -> Vec<Step> {
        Vec::new()
    }
    let orphan = Leftover {
        case: "ours, no PV ever, claim gone, old, unmapped",
        meta: old,
        api: both_gone,
        cached: none,
        mapped: false,
        collected: true,
    };
    let kept = |case, api| Leftover {
        case,
        api,
        collected: false,
        ..orphan
    };
    vec![
        Leftover {
            case: "its claim was recreated (another uid)",
            api: || vec![pv_read(not_found()), claim_read(claim("a-new-claim"))],
            ..orphan
        },
        Leftover {
            meta: |p| with(&old(p), META_PROVISIONER, Some("example.com/other")),
            ..kept("stamped by another provisioner", unasked)
        },
        Leftover {
            meta: |p| with(&old(p), owner::META_CLUSTER, Some("another-kube-system")),
            ..kept("stamped by another Kubernetes cluster", unasked)
        },
        Leftover {
            meta: |p| stamp(UID, p, PvState::Written).pairs(&instance()),
            ..kept(
                "a PV was written for it (a Retain volume's PV removed by hand)",
                unasked,
            )
        },
        Leftover {
            meta: |_| Vec::new(),
            ..kept("unstamped", unasked)
        },
        Leftover {
            meta: |p| created(p, 60),
            ..kept("younger than the grace period", both_gone)
        },
        kept("the API server says its PV exists", || {
            vec![
                pv_read(object(&fixtures::rbd_pv("x", ("kube", "x"), &[], None))),
                claim_read(not_found()),
            ]
        }),
        kept("its claim exists", || {
            vec![pv_read(not_found()), claim_read(claim(UID))]
        }),
        kept("the API server cannot be asked", || {
            vec![pv_read(Reply::Failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
            ))]
        }),
        Leftover {
            cached: |p| vec![released_pv(UID, p)],
            ..kept("a PV in the cache names it", unasked)
        },
        Leftover {
            mapped: true,
            ..kept("mapped on a node", both_gone)
        },
    ]
    .into_iter()
    .chain([orphan])
    .collect()
}

#[tokio::test]
async fn only_provable_orphans_are_collected() {
    for case in leftovers() {
        let scene = Scene::new();
        let image = image_name(UID);
        let id = scene.image_with(UID, &(case.meta)(&scene.place()));
        let _watch = case.mapped.then(|| scene.fake.hold_open(POOL, &image));
        let (client, api) = ApiServer::start((case.api)());
        let ctx = scene.context(client, &(case.cached)(&scene.place()));
        collect_orphans(&ctx, &scene.fake.cluster(), POOL).await;
        settle(&ctx).await;
        api.done();
        if case.collected {
            assert!(scene.fake.images(POOL).is_empty(), "{}", case.case);
            assert!(scene.fake.trash(POOL).is_empty(), "{}: purged", case.case);
            assert_eq!(
                scene.writes(),
                marked_moved_purged(&image, &id),
                "{}",
                case.case
            );
        } else {
            assert_eq!(scene.writes(), Vec::<String>::new(), "{}", case.case);
            assert_eq!(scene.fake.images(POOL), [image], "{}", case.case);
        }
    }
}

/// Writes the intent record provisioning writes before creating claim [`UID`]'s image,
/// `age` seconds ago, for `me`.
async fn intent(scene: &Scene, age: i64, me: &Instance) {
    let mut s = stamp(UID, &scene.place(), PvState::None);
    s.created = crate::controller::unix_now() - age;
    let record = Intent::new(&image_name(UID), &s, me);
    let pairs = vec![(image_name(UID), record.value())];
    scene
        .fake
        .cluster()
        .records_set(POOL, INTENTS_OBJECT, pairs)
        .await
        .unwrap();
    scene.fake.clear_calls();
}

fn records(scene: &Scene) -> usize {
    scene.fake.omap(POOL, INTENTS_OBJECT).len()
}

/// Killed between creating the image and stamping it: the intent record stamps it, and then
/// the orphan rules apply (collected once its claim is gone, kept while it exists).
#[tokio::test]
async fn an_image_created_but_never_stamped_is_stamped_from_its_intent() {
    for claim_exists in [false, true] {
        let scene = Scene::new();
        let image = image_name(UID);
        scene.fake.put_image(POOL, &image, GIB);
        intent(&scene, LONG_AGO, &instance()).await;
        let api = match claim_exists {
            false => both_gone(),
            true => vec![pv_read(not_found()), claim_read(claim(UID))],
        };
        let (client, api) = ApiServer::start(api);
        let ctx = scene.context(client, &[]);
        collect_orphans(&ctx, &scene.fake.cluster(), POOL).await;
        settle(&ctx).await;
        api.done();
        assert_eq!(records(&scene), 0, "the record has done its work");
        let writes = scene.writes();
        assert_eq!(writes[0], format!("set_metadata {POOL}/{image}"));
        if claim_exists {
            let meta = scene.meta(&image);
            assert!(owner::stamped_by(&meta, &instance()), "{meta:?}");
            assert_eq!(writes.len(), 2, "stamped, record dropped: {writes:?}");
        } else {
            assert!(scene.fake.images(POOL).is_empty(), "collected");
            assert_eq!(scene.done(Rbd::TrashMove), 1);
        }
    }
}

/// Killed inside `rbd_create4` (a name without a header: no data can exist): removed once
/// its claim is gone and the record is old; kept while the claim exists (provisioning
/// recreates it); a young record waits; another instance's record is not ours to act on.
#[tokio::test]
async fn a_half_made_image_is_removed_only_when_its_claim_is_gone() {
    let other = Instance {
        provisioner: PROVISIONER_ELSEWHERE.into(),
        cluster: "another-kube-system".into(),
    };
    let cases: [HalfMade; 4] = [
        ("claim gone", LONG_AGO, instance(), both_gone(), true, 0),
        (
            "claim exists",
            LONG_AGO,
            instance(),
            vec![pv_read(not_found()), claim_read(claim(UID))],
            false,
            0,
        ),
        ("a young record", 60, instance(), Vec::new(), false, 1),
        (
            "another instance's record",
            LONG_AGO,
            other,
            Vec::new(),
            false,
            1,
        ),
    ];
    for (case, age, writer, script, removed, left) in cases {
        let scene = Scene::new();
        let image = image_name(UID);
        scene.fake.half_made(POOL, &image);
        intent(&scene, age, &writer).await;
        let (client, api) = ApiServer::start(script);
        let ctx = scene.context(client, &[]);
        collect_orphans(&ctx, &scene.fake.cluster(), POOL).await;
        api.done();
        assert_eq!(scene.fake.images(POOL).is_empty(), removed, "{case}");
        assert_eq!(records(&scene), left, "{case}");
        let expected = usize::from(removed);
        assert_eq!(scene.done(Rbd::RemoveImage), expected, "{case}");
        let others = scene
            .writes()
            .into_iter()
            .filter(|w| !w.starts_with("remove_image") && !w.starts_with("records_remove"));
        assert_eq!(others.count(), 0, "{case}");
    }
}

/// (case, the record's age, its writer, what the API server is asked, removed, records left)
type HalfMade = (&'static str, i64, Instance, Vec<Step>, bool, usize);

const PROVISIONER_ELSEWHERE: &str = "example.com/rbd";

/// Known gap (finding b, not fixed here): librbd copies a parent's image-meta into a clone,
/// so a clone whose creator died before stamping it carries its source's stamp. The intent
/// record then takes the clone for stamped and is dropped; the clone keeps the source's
/// stamp (a PV written), so it is never collected, and the claim's retry refuses it as
/// another claim's image.
#[tokio::test]
async fn a_clone_left_unstamped_keeps_its_sources_stamp() {
    let scene = Scene::new();
    let c = scene.fake.cluster();
    let source = image_name("source-claim-uid");
    scene.fake.put_image(POOL, &source, GIB);
    let mut source_stamp = stamp("source-claim-uid", &scene.place(), PvState::Written);
    source_stamp.claim_name = "source".into();
    let pairs = source_stamp.pairs(&instance());
    let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&**k, &**v)).collect();
    scene.fake.put_metadata(POOL, &source, &pairs);
    let snap = domain::clone::clone_snapshot(&image_name(UID));
    c.snap_create(POOL, &source, &snap).await.unwrap();
    c.snap_protect(POOL, &source, &snap).await.unwrap();
    intent(&scene, LONG_AGO, &instance()).await;
    let parent = ceph::ParentSpec {
        pool: POOL.into(),
        image: source.clone(),
        snap,
    };
    c.clone_image(&ceph::CloneSpec {
        parent,
        pool: POOL.into(),
        name: image_name(UID),
        features: ceph::RBD_FEATURE_LAYERING,
        data_pool: None,
        clone_format: Some(1),
    })
    .await
    .unwrap();
    scene.fake.clear_calls();

    let (client, api) = ApiServer::start(Vec::new());
    let ctx = scene.context(client, &[]);
    collect_orphans(&ctx, &scene.fake.cluster(), POOL).await;
    api.done();
    assert_eq!(records(&scene), 0, "the record was dropped");
    let clone = Stamp::read(&scene.meta(&image_name(UID))).unwrap();
    assert_eq!(clone.claim_uid, "source-claim-uid", "the source's stamp");
    assert_eq!(scene.fake.images(POOL).len(), 2, "never collected");
}
