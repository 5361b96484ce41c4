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
