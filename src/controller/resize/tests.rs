//! The bound claim's check against the volumes cache: a read of the PV only when the cache
//! does not already show that nothing is to be done.

use super::*;
use crate::controller::cached::Cached;
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
