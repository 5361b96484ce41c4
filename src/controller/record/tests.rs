//! Recording a bound volume against a scripted API server and a scripted Ceph: what is
//! written on an unstamped image and on the PV, and that nothing is written when the image
//! is stamped as someone else's or the PV records another cluster.

use std::sync::Arc;

use http::Method as Http;

use super::*;
use crate::controller::delete::reconcile;
use crate::controller::testing::scene::*;
use crate::controller::testing::{ApiServer, Reply, expect, instance, object};
use domain::owner::{META_PROVISIONER, META_PV, PvState, Stamp, StampMismatch};
use domain::reclaim::PlaceChanged;
use domain::volume::image_name;

/// Our volume of claim [`UID`], bound, from before the PV recorded where its image is.
fn unrecorded(scene: &Scene) -> PersistentVolume {
    let mut pv = bound(released_pv(UID, &scene.place()));
    let a = pv.metadata.annotations.get_or_insert_default();
    a.remove(ANN_FSID);
    a.remove(ANN_POOL_ID);
    pv
}

fn patch(pv: &PersistentVolume, reply: Reply) -> Vec<crate::controller::testing::Step> {
    vec![admin_secret_read(), expect(Http::PATCH, pv_path(pv), reply)]
}

async fn run(
    scene: &Scene,
    pv: &PersistentVolume,
    script: Vec<crate::controller::testing::Step>,
) -> (Result<Outcome>, ApiServer) {
    let (client, api) = ApiServer::start(script);
    let ctx = scene.context(client, std::slice::from_ref(pv));
    let target = reclaim::target(pv).unwrap();
    (record(pv, &target, &ctx).await, api)
}

/// An image no stamp of ours names (made by the old provisioner, or by us before stamps):
/// it gets our stamp for this PV and claim, where it was found, and "a PV written"; the PV
/// gets the place. Written without opening the image, which is in use.
#[tokio::test]
async fn an_unstamped_image_gets_our_stamp_and_the_pv_its_place() {
    let scene = Scene::new();
    let image = image_name(UID);
    scene.image_with(UID, &[]);
    let pv = unrecorded(&scene);
    let (r, api) = run(&scene, &pv, patch(&pv, object(&pv))).await;
    assert!(matches!(r.unwrap(), Outcome::Done(())));
    assert_eq!(
        scene.writes(),
        [format!("set_metadata_unopened {POOL}/{image}")]
    );
    let meta = scene.meta(&image);
    let stamp = Stamp::read(&meta).expect("a whole stamp");
    assert!(owner::stamped_by(&meta, &instance()));
    assert_eq!(
        (stamp.pv.as_str(), stamp.claim_uid.as_str()),
        (pv_name().as_str(), UID)
    );
    assert_eq!(stamp.place, Some(scene.place()));
    assert_eq!(stamp.pv_state, PvState::Written);
    let seen = api.done();
    let annotations = &seen[1].body["metadata"]["annotations"];
    assert_eq!(annotations[ANN_FSID], FSID);
    assert_eq!(annotations[ANN_POOL_ID], scene.place().pool_id.to_string());
    assert_eq!(seen[1].body["metadata"]["resourceVersion"], "7");
}

fn pv_name() -> String {
    format!("pvc-{UID}")
}

/// Our own stamp from before the records: only the place and the PV state are added; whose
/// it is and when it was made stay as they were.
#[tokio::test]
async fn our_older_stamp_gets_only_the_place() {
    let scene = Scene::new();
    let image = image_name(UID);
    let mut old = stamp(UID, &scene.place(), PvState::Unknown);
    old.place = None;
    scene.image_with(UID, &old.pairs(&instance()));
    let pv = unrecorded(&scene);
    let (r, api) = run(&scene, &pv, patch(&pv, object(&pv))).await;
    assert!(matches!(r.unwrap(), Outcome::Done(())));
    api.done();
    let now = Stamp::read(&scene.meta(&image)).unwrap();
    assert_eq!(now.created, old.created);
    assert_eq!(now.place, Some(scene.place()));
    assert!(!scene.meta(&image).contains_key(owner::META_ADOPTED));
}

/// The PV changed since it was read: nothing recorded on it, retried; the stamp written
/// meanwhile is the same the retry writes.
#[tokio::test]
async fn a_pv_changed_meanwhile_is_recorded_on_the_next_pass() {
    let scene = Scene::new();
    scene.image_with(UID, &[]);
    let pv = unrecorded(&scene);
    let (r, api) = run(&scene, &pv, patch(&pv, conflict())).await;
    assert!(matches!(r.unwrap(), Outcome::Changed { .. }));
    api.done();
}

/// When the image is stamped as someone else's, or the PV records another cluster, nothing
/// is written anywhere and the PV gets a Warning event.
#[tokio::test]
async fn nothing_is_recorded_when_the_facts_disagree() {
    type Setup = fn(&Scene, &mut PersistentVolume);
    type Why = fn(&FactsDisagree) -> bool;
    let cases: [(&str, Setup, Why); 3] = [
        (
            "stamped for another PV",
            |scene, _| {
                let s = stamp(UID, &scene.place(), PvState::Written).pairs(&instance());
                scene.image_with(UID, &with(&s, META_PV, Some("pvc-other")));
            },
            |w| matches!(w, FactsDisagree::Stamp(StampMismatch::Pv { .. })),
        ),
        (
            "stamped by another provisioner",
            |scene, _| {
                let s = stamp(UID, &scene.place(), PvState::Written).pairs(&instance());
                scene.image_with(UID, &with(&s, META_PROVISIONER, Some("example.com/other")));
            },
            |w| matches!(w, FactsDisagree::Stamp(StampMismatch::Provisioner(_))),
        ),
        (
            "the PV records another Ceph cluster",
            |scene, pv| {
                scene.image_with(UID, &[]);
                let a = pv.metadata.annotations.get_or_insert_default();
                a.insert(
                    ANN_FSID.into(),
                    "11111111-2222-4333-8444-555555555555".into(),
                );
            },
            |w| matches!(w, FactsDisagree::Place(PlaceChanged::Fsid { .. })),
        ),
    ];
    for (case, setup, why) in cases {
        let scene = Scene::new();
        let mut pv = unrecorded(&scene);
        setup(&scene, &mut pv);
        let (client, api) = ApiServer::start(vec![admin_secret_read(), pv_event()]);
        let ctx = scene.context(client, std::slice::from_ref(&pv));
        let err = reconcile(Arc::new(pv), ctx).await.unwrap_err();
        assert!(
            matches!(&err, Error::Mismatch { action: "record", why: w, .. } if why(w)),
            "{case}: {err:?}"
        );
        assert_eq!(scene.writes(), Vec::<String>::new(), "{case}");
        let seen = api.done();
        assert_eq!(seen[1].body["reason"], "VolumeRecordRefused", "{case}");
    }
}

/// A volume not bound to a claim has nothing to record, and nothing is asked.
#[tokio::test]
async fn an_unbound_volume_is_left_alone() {
    let scene = Scene::new();
    let mut pv = unrecorded(&scene);
    pv.spec.as_mut().unwrap().claim_ref = None;
    let (r, api) = run(&scene, &pv, Vec::new()).await;
    assert!(matches!(r.unwrap(), Outcome::Done(())));
    api.done();
    assert_eq!(scene.fake.calls(), Vec::new());
}
