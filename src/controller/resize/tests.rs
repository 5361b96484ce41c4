//! The bound claim's check against the volumes cache: a read of the PV only when the cache
//! does not already show that nothing is to be done.

use super::*;
use crate::controller::cached::Cached;
use crate::controller::context::Listed;
use crate::controller::testing::{ApiServer, expect, not_found, settings};
use domain::volume::ANN_PROVISIONED_BY;
use http::Method;
use kube::runtime::{reflector, watcher};

const PV_PATH: &str = "/api/v1/persistentvolumes/pvc-1";

fn claim(request: &str) -> PersistentVolumeClaim {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "ns", "name": "data", "uid": "claim-uid"},
        "spec": {"volumeName": "pvc-1", "resources": {"requests": {"storage": request}}},
    }))
    .unwrap()
}

fn volume(claim_uid: Option<&str>) -> PersistentVolume {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pvc-1", "annotations": {ANN_PROVISIONED_BY: settings().provisioner}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "claimRef": {"namespace": "ns", "name": "data", "uid": claim_uid},
        },
    }))
    .unwrap()
}

async fn check(
    pvc: &PersistentVolumeClaim,
    cached: PersistentVolume,
    script: Vec<crate::controller::testing::Step>,
) -> usize {
    let (client, api) = ApiServer::start(script);
    let mut ctx = Context::for_tests(client);
    let (volumes, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::InitApply(Cached::new(cached).unwrap()));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    ctx.caches.volumes = volumes;
    reconcile_bound(pvc, true, u64::MAX, &ctx).await.unwrap();
    api.done().len()
}

#[tokio::test]
async fn a_bound_claim_the_cache_shows_settled_costs_no_request() {
    let reads = check(&claim("1Gi"), volume(Some("claim-uid")), vec![]).await;
    assert_eq!(reads, 0);
}

/// A larger request, or a cached PV not yet bound to the claim (the binder's write not seen
/// yet): the PV is read fresh, and the fresh read decides.
#[tokio::test]
async fn a_resize_asked_or_a_lagging_cache_reads_the_pv_fresh() {
    for (request, bound) in [
        ("2Gi", Some("claim-uid")),
        ("1Gi", None),
        ("1Gi", Some("other-uid")),
    ] {
        let reads = check(
            &claim(request),
            volume(bound),
            vec![expect(Method::GET, PV_PATH, not_found())],
        )
        .await;
        assert_eq!(reads, 1, "{request} {bound:?}");
    }
}

/// At a restart every bound claim passes here while the volumes are still being listed, and
/// the cache is empty until the list ends: the check waits for it rather than reading.
#[tokio::test(start_paused = true)]
async fn before_the_volumes_are_listed_the_check_waits_rather_than_reads() {
    let (client, api) = ApiServer::start(vec![]);
    let mut ctx = Context::for_tests(client);
    let (volumes, mut writer) = reflector::store();
    ctx.caches.volumes = volumes;
    let listed = Listed::default();
    ctx.caches.listed.volumes = listed.clone();
    let pvc = claim("1Gi");
    let check = reconcile_bound(&pvc, true, u64::MAX, &ctx);
    tokio::pin!(check);
    let waiting = tokio::time::timeout(std::time::Duration::from_secs(5), &mut check).await;
    assert!(waiting.is_err(), "done before the volumes were listed");
    let pv = Cached::new(volume(Some("claim-uid"))).unwrap();
    writer.apply_watcher_event(&watcher::Event::InitApply(pv));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    listed.mark();
    check.await.unwrap();
    assert_eq!(api.done().len(), 0, "no read once the cache answers");
}

/// A volumes watch that cannot list (its RBAC taken away, say) holds the check only until
/// the grace after the start ends; then the PV is read as before, and later checks read at
/// once.
#[tokio::test(start_paused = true)]
async fn a_volumes_watch_that_never_lists_holds_the_check_only_for_the_grace() {
    let read = || expect(Method::GET, PV_PATH, not_found());
    let (client, api) = ApiServer::start(vec![read(), read()]);
    let mut ctx = Context::for_tests(client);
    ctx.caches.listed.volumes = Listed::default();
    let grace = crate::controller::context::FIRST_LIST_GRACE;
    let check = async || {
        let started = tokio::time::Instant::now();
        let pvc = claim("1Gi");
        reconcile_bound(&pvc, true, u64::MAX, &ctx).await.unwrap();
        started.elapsed()
    };
    let first = check().await;
    assert!(first >= grace && first < grace * 2, "{first:?}");
    let later = check().await;
    assert!(later < std::time::Duration::from_secs(1), "{later:?}");
    assert_eq!(api.done().len(), 2);
}
