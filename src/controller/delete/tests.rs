//! The volume reconciler's deletions against a scripted API server and a scripted Ceph.

use super::*;
use crate::controller::testing::{ApiServer, PROVISIONER};
use domain::fixtures;
use domain::volume::ANN_PROVISIONED_BY;

/// A late watch event of a volume this process has finished deleting asks nothing of
/// anyone. Without the record, this Released volume of ours would be acted on (here it
/// names no monitors, so a warning event would be written).
#[tokio::test]
async fn a_volume_this_process_finished_deleting_is_left_alone() {
    let (client, api) = ApiServer::start(vec![]);
    let ctx = Arc::new(Context::for_tests(client));
    let image = ("kube", "kubernetes-dynamic-pvc-1");
    let mut pv = fixtures::rbd_pv(
        "pvc-1",
        image,
        &[(ANN_PROVISIONED_BY, PROVISIONER)],
        Some("Released"),
    );
    pv.metadata.uid = Some("uid-1".into());
    pv.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Delete".into());
    ctx.finished_deleting("uid-1");
    let action = reconcile(Arc::new(pv), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    api.done();
}

#[test]
fn images_in_use_are_retried_within_seconds_of_a_stale_watch_expiring() {
    let backoff =
        |n| super::super::backoff_delay(n, Duration::from_secs(1), Duration::from_secs(300));
    assert_eq!(in_use_retry(backoff(1)), Duration::from_secs(1));
    assert_eq!(in_use_retry(backoff(4)), Duration::from_secs(8));
    for n in 5..40 {
        assert_eq!(in_use_retry(backoff(n)), IN_USE_RETRY);
    }
}

// ---- with a scripted Ceph ----------------------------------------------------------------

use crate::controller::testing::scene::*;
use crate::controller::testing::{Reply, Step, expect, instance, object};
use domain::owner::{META_CLUSTER, META_FSID, META_POOL_ID, META_PROVISIONER, META_PV, PvState};
use domain::owner::{StampMismatch, purgeable};
use domain::reclaim::{ANN_LEGACY_IDENTITY, PlaceChanged};
use domain::volume::{ANN_FSID, ANN_POOL_ID, image_name};
use http::Method as Http;
use testbed::fake_ceph::Method as Rbd;

/// The steps of a deletion that goes through: the fresh read, the admin Secret, the DELETE
/// (answered with the PV held by our finalizer), our finalizer dropped.
fn goes_through(pv: &PersistentVolume) -> Vec<Step> {
    vec![
        expect(Http::GET, pv_path(pv), object(pv)),
        admin_secret_read(),
        expect(Http::DELETE, pv_path(pv), object(&deleting(pv))),
        expect(Http::PATCH, pv_path(pv), object(&deleting(pv))),
    ]
}

/// Our stamp on the image of [`UID`], as provisioning writes it.
fn our_stamp(scene: &Scene) -> Vec<(String, String)> {
    stamp(UID, &scene.place(), PvState::Written).pairs(&instance())
}

/// The writes, with the purge's `trash_remove` of `id` counted once: the first trash sweep
/// of the pool, running beside the deletion, may find the entry and purge it again
/// ("already gone").
fn writes_once(scene: &Scene, id: &str) -> Vec<String> {
    let purge = format!("trash_remove {POOL}/{id}");
    let mut out = scene.writes();
    let mut seen = false;
    out.retain(|w| *w != purge || !std::mem::replace(&mut seen, true));
    out
}

/// The usual case: our image, stamped for this PV, no watchers, no other PV naming it. It
/// is marked as trashed by us, moved to the trash and purged; the PV is deleted with the
/// resourceVersion it was read with as precondition, and our finalizer goes last.
#[tokio::test]
async fn our_released_volume_is_trashed_purged_and_let_go() {
    let scene = Scene::new();
    let id = scene.our_image(UID);
    let pv = released_pv(UID, &scene.place());
    let (client, api) = ApiServer::start(goes_through(&pv));
    let ctx = scene.context(client, std::slice::from_ref(&pv));
    let action = reconcile(Arc::new(pv.clone()), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    settle(&ctx).await;

    let image = image_name(UID);
    assert_eq!(writes_once(&scene, &id), marked_moved_purged(&image, &id));
    assert!(scene.empty(), "trashed and purged");
    let seen = api.done();
    assert_eq!(seen[2].body["preconditions"]["resourceVersion"], "7");
    assert_eq!(seen[2].body["preconditions"]["uid"], format!("pv-{UID}"));
    assert_eq!(
        seen[3].body["metadata"]["finalizers"],
        serde_json::json!([])
    );
    assert!(ctx.deletion_finished(&format!("pv-{UID}")));
}

/// The image a refusal starts from.
#[derive(Clone, Copy)]
enum Image {
    /// Stamped by us for this PV.
    Ours,
    /// Our stamp with this key set to this value.
    Stamped(&'static str, &'static str),
    Unstamped,
    Missing,
}

type Setup = fn(&Scene, &mut PersistentVolume, &mut Vec<PersistentVolume>);

/// A deletion that must not happen: what differs from the usual facts, and the reason the
/// refusal must give.
struct Refusal {
    case: &'static str,
    image: Image,
    /// Changes to the cluster, the PV, and the other PVs the volumes watch has listed.
    setup: Setup,
    /// Whether the refusal comes after connecting (the admin Secret is read).
    connects: bool,
    why: fn(&FactsDisagree) -> bool,
}

impl Refusal {
    /// Our image, and the PV or the cluster changed by `setup`.
    fn new(case: &'static str, setup: Setup, why: fn(&FactsDisagree) -> bool) -> Refusal {
        Refusal {
            case,
            image: Image::Ours,
            setup,
            connects: true,
            why,
        }
    }

    /// The usual PV and cluster, our stamp with `key` set to `value`.
    fn stamped(
        case: &'static str,
        key: &'static str,
        value: &'static str,
        why: fn(&FactsDisagree) -> bool,
    ) -> Refusal {
        fn nothing(_: &Scene, _: &mut PersistentVolume, _: &mut Vec<PersistentVolume>) {}
        Refusal {
            image: Image::Stamped(key, value),
            ..Refusal::new(case, nothing, why)
        }
    }
}

fn annotate(pv: &mut PersistentVolume, key: &str, value: Option<&str>) {
    let a = pv.metadata.annotations.get_or_insert_default();
    match value {
        Some(v) => a.insert(key.into(), v.into()),
        None => a.remove(key),
    };
}

/// Drops the PV's record of where its image was made.
fn unrecorded(pv: &mut PersistentVolume) {
    annotate(pv, ANN_FSID, None);
    annotate(pv, ANN_POOL_ID, None);
}

const OTHER_FSID: &str = "11111111-2222-4333-8444-555555555555";

fn refusals() -> Vec<Refusal> {
    use FactsDisagree::{Place, Stamp};
    vec![
        Refusal {
            connects: false,
            ..Refusal::new(
                "another PV names the same image",
                |_, pv, others| {
                    let mut copy = pv.clone();
                    copy.metadata.name = Some("pv-copy".into());
                    copy.metadata.uid = Some("copy-uid".into());
                    others.push(copy);
                },
                |w| matches!(w, FactsDisagree::SharedImage { other } if other == "pv-copy"),
            )
        },
        Refusal::stamped(
            "stamped by another provisioner",
            META_PROVISIONER,
            "example.com/other",
            |w| matches!(w, Stamp(StampMismatch::Provisioner(p)) if p == "example.com/other"),
        ),
        Refusal::stamped(
            "stamped by another Kubernetes cluster",
            META_CLUSTER,
            "another-kube-system",
            |w| matches!(w, Stamp(StampMismatch::Cluster { .. })),
        ),
        Refusal::stamped(
            "stamped as another PV's image",
            META_PV,
            "pvc-someone-else",
            |w| matches!(w, Stamp(StampMismatch::Pv { owner, .. }) if owner == "pvc-someone-else"),
        ),
        Refusal::stamped(
            "stamped as made in another Ceph cluster (a copy)",
            META_FSID,
            OTHER_FSID,
            |w| matches!(w, Stamp(StampMismatch::Fsid { .. })),
        ),
        Refusal::stamped("stamped as made in another pool", META_POOL_ID, "99", |w| {
            matches!(w, Stamp(StampMismatch::PoolId { stamped: 99, .. }))
        }),
        Refusal::new(
            "the PV records another Ceph cluster",
            |_, pv, _| annotate(pv, ANN_FSID, Some(OTHER_FSID)),
            |w| matches!(w, Place(PlaceChanged::Fsid { .. })),
        ),
        Refusal::new(
            "the PV records another pool id",
            |_, pv, _| annotate(pv, ANN_POOL_ID, Some("99")),
            |w| matches!(w, Place(PlaceChanged::PoolId { .. })),
        ),
        Refusal::new(
            "the pool was renamed and replaced: the image is not gone, it is elsewhere",
            |scene, _, _| {
                scene.fake.replace_pool(POOL);
            },
            |w| matches!(w, Place(PlaceChanged::PoolId { .. })),
        ),
        Refusal::new(
            "the pool was replaced between the read of its id and the look for the image (a \
             newer OSD map arrived in between): the image is not gone, it is elsewhere",
            |scene, _, _| scene.fake.replace_pool_after(Rbd::PoolId, POOL),
            |w| matches!(w, Place(PlaceChanged::PoolId { .. })),
        ),
        Refusal {
            image: Image::Missing,
            ..Refusal::new(
                "the image is gone and the PV records no place to prove where",
                |_, pv, _| unrecorded(pv),
                |w| matches!(w, FactsDisagree::Unproven { younger, .. } if younger.is_empty()),
            )
        },
        Refusal {
            image: Image::Missing,
            ..Refusal::new(
                "the image is gone, no place recorded, and the pool is younger than the PV",
                |scene, pv, _| {
                    scene.fake.replace_pool(POOL);
                    unrecorded(pv);
                },
                |w| matches!(w, FactsDisagree::Unproven { younger, .. } if younger.contains("replaced")),
            )
        },
        Refusal {
            image: Image::Unstamped,
            ..Refusal::new(
                "an old provisioner's volume whose image never got our confirming stamp",
                |_, pv, _| annotate(pv, ANN_LEGACY_IDENTITY, Some("old-provisioner-id")),
                |w| matches!(w, Stamp(StampMismatch::Unconfirmed { .. })),
            )
        },
    ]
}

/// Each fact that disagrees stops the deletion before anything is written, in Ceph or on
/// the PV, and the PV gets a Warning event saying why.
#[tokio::test]
async fn when_the_facts_disagree_nothing_is_deleted_and_the_pv_says_why() {
    for case in refusals() {
        let scene = Scene::new();
        let mut pv = released_pv(UID, &scene.place());
        let mut others = Vec::new();
        match case.image {
            Image::Ours => {
                scene.our_image(UID);
            }
            Image::Stamped(k, v) => {
                scene.image_with(UID, &with(&our_stamp(&scene), k, Some(v)));
            }
            Image::Unstamped => {
                scene.image_with(UID, &[]);
            }
            Image::Missing => {}
        }
        (case.setup)(&scene, &mut pv, &mut others);
        let mut script = vec![expect(Http::GET, pv_path(&pv), object(&pv))];
        if case.connects {
            script.push(admin_secret_read());
        }
        script.push(pv_event());
        let (client, api) = ApiServer::start(script);
        others.push(pv.clone());
        let ctx = scene.context(client, &others);
        let err = reconcile(Arc::new(pv), ctx.clone()).await.unwrap_err();
        assert!(
            matches!(&err, Error::Refused { why, .. } if (case.why)(why)),
            "{}: {err:?}",
            case.case
        );
        settle(&ctx).await;
        assert_eq!(scene.writes(), Vec::<String>::new(), "{}", case.case);
        assert_eq!(scene.fake.count(Rbd::TrashList), 0, "{}", case.case);
        let seen = api.done();
        let event = &seen.last().unwrap().body;
        assert_eq!(event["type"], "Warning", "{}", case.case);
        assert_eq!(event["reason"], "VolumeFailedDelete", "{}", case.case);
        assert_eq!(event["message"], err.to_string(), "{}", case.case);
    }
}

/// A mapped image (a watcher) is not deleted; the deletion is retried within seconds, as a
/// dead client's watch expires after 30 s.
#[tokio::test]
async fn an_image_with_watchers_is_kept_and_retried_soon() {
    let scene = Scene::new();
    scene.our_image(UID);
    let _mapped = scene.fake.hold_open(POOL, &image_name(UID));
    let pv = released_pv(UID, &scene.place());
    let (client, api) = ApiServer::start(vec![
        expect(Http::GET, pv_path(&pv), object(&pv)),
        admin_secret_read(),
        pv_event(),
    ]);
    let ctx = scene.context(client, std::slice::from_ref(&pv));
    let action = reconcile(Arc::new(pv), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(1)));
    assert_eq!(scene.writes(), Vec::<String>::new());
    let seen = api.done();
    assert!(
        seen[2].body["message"]
            .as_str()
            .unwrap()
            .contains("192.0.2.")
    );
}

/// The PV changed (or went) between the checks and the commit: the write with the
/// resourceVersion read fails, the PV read again has been set to Retain, nothing is trashed,
/// and the next pass decides again.
#[tokio::test]
async fn a_pv_changed_between_read_and_commit_is_not_deleted() {
    let refused = || Reply::Failure(http::StatusCode::CONFLICT, "Conflict");
    let gone = || Reply::Failure(http::StatusCode::NOT_FOUND, "NotFound");
    let retry = Action::requeue(Duration::from_millis(200));
    // (case, our finalizer already on the PV, the commit's write and its answer, action)
    let cases = [
        (
            "the finalizer's patch conflicts",
            false,
            Http::PATCH,
            refused(),
            retry.clone(),
        ),
        ("the DELETE conflicts", true, Http::DELETE, refused(), retry),
        (
            "the PV went before the DELETE",
            true,
            Http::DELETE,
            gone(),
            Action::await_change(),
        ),
    ];
    for (case, finalizer, method, reply, action) in cases {
        let scene = Scene::new();
        scene.our_image(UID);
        let mut pv = released_pv(UID, &scene.place());
        if !finalizer {
            pv.metadata.finalizers = None;
        }
        let mut retained = pv.clone();
        retained.metadata.resource_version = Some("9".into());
        retained
            .spec
            .as_mut()
            .unwrap()
            .persistent_volume_reclaim_policy = Some("Retain".into());
        let conflicted = matches!(reply, Reply::Failure(http::StatusCode::CONFLICT, _));
        let mut steps = vec![
            expect(Http::GET, pv_path(&pv), object(&pv)),
            admin_secret_read(),
            expect(method, pv_path(&pv), reply),
        ];
        if conflicted {
            steps.push(expect(Http::GET, pv_path(&pv), object(&retained)));
        }
        let (client, api) = ApiServer::start(steps);
        let ctx = scene.context(client, std::slice::from_ref(&pv));
        let got = reconcile(Arc::new(pv), ctx.clone()).await.unwrap();
        assert_eq!(got, action, "{case}");
        settle(&ctx).await;
        assert_eq!(scene.writes(), Vec::<String>::new(), "{case}");
        assert_eq!(scene.fake.images(POOL), vec![image_name(UID)], "{case}");
        api.done();
    }
}

/// The commit met a 409 because kube-controller-manager marked the volume as we committed: the
/// PV read again differs only in its status, so the commit is made again on it at once (with
/// its new resourceVersion), without a second pass and a second look at the image.
#[tokio::test]
async fn a_commit_that_met_a_status_write_is_made_again_at_once() {
    let scene = Scene::new();
    let id = scene.our_image(UID);
    let pv = released_pv(UID, &scene.place());
    let mut marked = pv.clone();
    marked.metadata.resource_version = Some("9".into());
    marked.status.get_or_insert_default().message = Some("marked by the controller".into());
    let (client, api) = ApiServer::start(vec![
        expect(Http::GET, pv_path(&pv), object(&pv)),
        admin_secret_read(),
        expect(Http::DELETE, pv_path(&pv), conflict()),
        expect(Http::GET, pv_path(&pv), object(&marked)),
        expect(Http::DELETE, pv_path(&pv), object(&deleting(&marked))),
        expect(Http::PATCH, pv_path(&pv), object(&deleting(&marked))),
    ]);
    let ctx = scene.context(client, std::slice::from_ref(&pv));
    let action = reconcile(Arc::new(pv.clone()), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    settle(&ctx).await;
    assert_eq!(
        writes_once(&scene, &id),
        marked_moved_purged(&image_name(UID), &id)
    );
    assert_eq!(
        scene.fake.count(Rbd::Watchers),
        1,
        "the image is looked at once"
    );
    let seen = api.done();
    assert_eq!(seen[2].body["preconditions"]["resourceVersion"], "7");
    assert_eq!(seen[4].body["preconditions"]["resourceVersion"], "9");
}

/// The cache said Delete; the PV as the API server has it now says Retain: our finalizer
/// goes, and Ceph is never even reached.
#[tokio::test]
async fn a_volume_set_to_retain_meanwhile_is_let_go_without_reaching_ceph() {
    let scene = Scene::new();
    scene.our_image(UID);
    let cached = released_pv(UID, &scene.place());
    let mut fresh = cached.clone();
    fresh
        .spec
        .as_mut()
        .unwrap()
        .persistent_volume_reclaim_policy = Some("Retain".into());
    let (client, api) = ApiServer::start(vec![
        expect(Http::GET, pv_path(&fresh), object(&fresh)),
        expect(Http::PATCH, pv_path(&fresh), object(&fresh)),
    ]);
    let ctx = scene.context(client, std::slice::from_ref(&cached));
    let action = reconcile(Arc::new(cached), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(scene.fake.calls(), Vec::new());
    assert_eq!(scene.connector.connects(), 0);
    let seen = api.done();
    assert_eq!(
        seen[1].body["metadata"]["finalizers"],
        serde_json::json!([])
    );
}

/// Volumes that are not ours, and a PV replaced by another of the same name since the
/// cache saw it, ask nothing of Ceph.
#[tokio::test]
async fn volumes_not_ours_never_reach_ceph() {
    let scene = Scene::new();
    scene.our_image(UID);
    let mut theirs = released_pv(UID, &scene.place());
    annotate(&mut theirs, ANN_PROVISIONED_BY, Some("example.com/other"));
    let (client, api) = ApiServer::start(vec![]);
    let ctx = scene.context(client, &[]);
    assert_eq!(
        reconcile(Arc::new(theirs), ctx).await.unwrap(),
        Action::await_change()
    );
    api.done();

    let ours = released_pv(UID, &scene.place());
    let mut replaced = ours.clone();
    replaced.metadata.uid = Some("a-new-pv-of-that-name".into());
    let (client, api) =
        ApiServer::start(vec![expect(Http::GET, pv_path(&ours), object(&replaced))]);
    let ctx = scene.context(client, std::slice::from_ref(&ours));
    assert_eq!(
        reconcile(Arc::new(ours), ctx).await.unwrap(),
        Action::await_change()
    );
    api.done();
    assert_eq!(scene.fake.calls(), Vec::new());
}

mod replay;
