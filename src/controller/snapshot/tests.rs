//! The destructive half of the snapshot controller (deleting an RBD snapshot, dropping a
//! content's finalizer) against a scripted API server and a scripted Ceph: what it removes,
//! and that facts which disagree remove nothing.

use std::sync::Arc;

use http::{Method as Http, StatusCode};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher};
use serde_json::json;

use super::content;
use crate::controller::Context;
use crate::controller::testing::scene::*;
use crate::controller::testing::{ApiServer, PROVISIONER, Reply, Step, expect, object};
use crate::error::Error;
use crate::k8s::snapshot::VolumeSnapshotContent;
use ceph::{CloneSpec, ParentSpec, RbdCluster};

const DRIVER: &str = "rbd.csi.ceph.com";
const IMAGE: &str = "kubernetes-dynamic-pvc-src";
const SNAP: &str = "snapshot-5c1d";
const CONTENT: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents/snapcontent-5c1d";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/apps/events";

/// A csi-flavour class of ours, in the context's class cache.
fn context(scene: &Scene, client: kube::Client) -> Arc<Context> {
    let mut ctx = Context::for_tests_with_ceph(client, scene.connector.clone());
    let class: StorageClass = serde_json::from_value(json!({
        "metadata": {"name": "csi"},
        "provisioner": PROVISIONER,
        "parameters": {"monitors": MONITORS, "adminId": "admin", "adminSecretName": "ceph-admin",
                       "adminSecretNamespace": "kube-system", "pool": POOL, "userSecretName": "u",
                       "volumeFlavor": "csi", "csiDriver": DRIVER},
    }))
    .unwrap();
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::InitApply(class));
    writer.apply_watcher_event(&watcher::Event::InitDone);
    ctx.caches.classes = store;
    Arc::new(ctx)
}

/// The source image with its protected snapshot, as `content::cut` leaves it.
async fn cut(scene: &Scene) -> Arc<dyn RbdCluster> {
    scene.fake.put_image(POOL, IMAGE, GIB);
    let c = scene.fake.cluster();
    c.snap_create(POOL, IMAGE, SNAP).await.unwrap();
    c.snap_protect(POOL, IMAGE, SNAP).await.unwrap();
    c
}

/// A restored volume of the snapshot.
async fn restore(c: &Arc<dyn RbdCluster>, name: &str) {
    c.clone_image(&CloneSpec {
        parent: ParentSpec {
            pool: POOL.into(),
            image: IMAGE.into(),
            snap: SNAP.into(),
        },
        pool: POOL.into(),
        name: name.into(),
        features: ceph::RBD_FEATURE_LAYERING,
        data_pool: None,
        clone_format: Some(1),
    })
    .await
    .unwrap();
}

/// A content the snapshot-controller is deleting (its VolumeSnapshot went), with this handle.
fn deleting(handle: &str, policy: &str) -> VolumeSnapshotContent {
    serde_json::from_value(json!({
        "metadata": {
            "name": "snapcontent-5c1d", "resourceVersion": "41",
            "deletionTimestamp": "2026-12-07T00:00:00Z",
            "finalizers": [domain::snapshot::CONTENT_FINALIZER, "example.com/other"],
            "annotations": {domain::snapshot::ANN_BEING_DELETED: "yes"},
        },
        "spec": {
            "driver": DRIVER, "deletionPolicy": policy,
            "source": {"volumeHandle": IMAGE},
            "volumeSnapshotRef": {"name": "snap", "namespace": "apps", "uid": "5c1d"},
        },
        "status": {"snapshotHandle": handle, "readyToUse": true},
    }))
    .unwrap()
}

fn handle(fsid: &str, pool_id: i64) -> String {
    format!("rbdp1:{fsid}:{pool_id}:{POOL}/{IMAGE}@{SNAP}")
}

fn finalizer_dropped() -> Step {
    let mut after = deleting("", "Delete");
    after.metadata.finalizers = Some(vec!["example.com/other".into()]);
    expect(Http::PATCH, CONTENT, object(&after))
}

/// The content read fresh before its RBD snapshot is removed.
fn read(c: &VolumeSnapshotContent) -> Step {
    expect(Http::GET, CONTENT, object(c))
}

fn snapshot_event() -> Step {
    expect(Http::POST, EVENTS, Reply::Echo(StatusCode::CREATED))
}

/// The usual deletion: no restore depends on the snapshot; it is unprotected and removed,
/// then only our finalizer is dropped, conditional on the content as read.
#[tokio::test]
async fn a_snapshot_without_restores_is_removed_then_its_finalizer_dropped() {
    let scene = Scene::new();
    cut(&scene).await;
    scene.fake.clear_calls();
    let h = handle(FSID, scene.place().pool_id);
    let c = Arc::new(deleting(&h, "Delete"));
    let (client, api) = ApiServer::start(vec![read(&c), admin_secret_read(), finalizer_dropped()]);
    let ctx = context(&scene, client);
    let action = content::reconcile(c, ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(
        scene.writes(),
        vec![
            format!("snap_unprotect {POOL}/{IMAGE}@{SNAP}"),
            format!("snap_remove {POOL}/{IMAGE}@{SNAP}"),
        ]
    );
    let seen = api.done();
    let patch = &seen.last().unwrap().body;
    assert_eq!(patch["metadata"]["resourceVersion"], json!("41"));
    assert_eq!(
        patch["metadata"]["finalizers"],
        json!(["example.com/other"])
    );
}

/// A restore still depends on the snapshot: it is flattened first, and nothing is removed
/// until a later pass finds no child.
#[tokio::test]
async fn a_snapshot_with_a_live_restore_is_kept_until_the_restore_is_flattened() {
    let scene = Scene::new();
    let c = cut(&scene).await;
    restore(&c, "kubernetes-dynamic-pvc-restored").await;
    scene.fake.clear_calls();
    let h = handle(FSID, scene.place().pool_id);
    let content = deleting(&h, "Delete");
    let (client, api) = ApiServer::start(vec![read(&content), admin_secret_read()]);
    let ctx = context(&scene, client);
    let action = content::reconcile(Arc::new(content), ctx.clone())
        .await
        .unwrap();
    assert_ne!(action, Action::await_change(), "retried");
    // The flatten runs in the background.
    for _ in 0..200 {
        if !scene.writes().is_empty() && ctx.ceph.flattening.lock().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        scene.writes(),
        vec![format!("flatten {POOL}/kubernetes-dynamic-pvc-restored")],
        "only the restore was touched"
    );
    assert_eq!(c.snap_list(POOL, IMAGE).await.unwrap().len(), 1, "kept");
    api.done();
}

/// The handle's cluster or pool is not the one reached (monitors that now lead elsewhere, a
/// pool renamed and replaced, an etcd backup of another cluster's content): nothing is
/// removed, the finalizer stays, and the VolumeSnapshot's owner is told why.
#[tokio::test]
async fn a_snapshot_somewhere_else_is_never_deleted() {
    for (what, fsid, pool_id_delta) in [
        ("another cluster", "0b8f6d4e-0000-4000-8000-000000000000", 0),
        ("a replaced pool", FSID, 7),
    ] {
        let scene = Scene::new();
        cut(&scene).await;
        scene.fake.clear_calls();
        let h = handle(fsid, scene.place().pool_id + pool_id_delta);
        let c = deleting(&h, "Delete");
        let (client, api) = ApiServer::start(vec![read(&c), admin_secret_read(), snapshot_event()]);
        let ctx = context(&scene, client);
        let e = content::reconcile(Arc::new(c), ctx).await.unwrap_err();
        assert!(matches!(e, Error::SnapshotMoved { .. }), "{what}: {e}");
        assert!(e.to_string().contains("nothing was changed"), "{e}");
        assert!(scene.writes().is_empty(), "{what}: {:?}", scene.writes());
        let seen = api.done();
        assert_eq!(
            seen.last().unwrap().body["reason"],
            json!("SnapshotDeleteError")
        );
    }
}

/// The watch's copy says Delete, the content now says Retain (an operator changed it just
/// before deleting the VolumeSnapshot, or the watch lags): the removal rests on the content as
/// read now, so nothing is removed and nothing else is read.
#[tokio::test]
async fn a_stale_delete_policy_never_removes_the_snapshot() {
    let scene = Scene::new();
    cut(&scene).await;
    scene.fake.clear_calls();
    let h = handle(FSID, scene.place().pool_id);
    let (client, api) = ApiServer::start(vec![read(&deleting(&h, "Retain"))]);
    let ctx = context(&scene, client);
    let action = content::reconcile(Arc::new(deleting(&h, "Delete")), ctx)
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert!(scene.fake.calls().is_empty(), "{:?}", scene.fake.calls());
    api.done();
}

/// Under Retain only the finalizer goes: no Secret read, no Ceph call.
#[tokio::test]
async fn retain_drops_the_finalizer_and_touches_nothing_in_ceph() {
    let scene = Scene::new();
    cut(&scene).await;
    scene.fake.clear_calls();
    let (client, api) = ApiServer::start(vec![finalizer_dropped()]);
    let ctx = context(&scene, client);
    let h = handle(FSID, scene.place().pool_id);
    content::reconcile(Arc::new(deleting(&h, "Retain")), ctx)
        .await
        .unwrap();
    assert!(scene.fake.calls().is_empty(), "{:?}", scene.fake.calls());
    api.done();
}

/// A crash after the RBD snapshot went and before the finalizer did: the next pass finds it
/// gone and finishes; a content changed meanwhile (409) is left for the watch's next event.
#[tokio::test]
async fn a_deletion_interrupted_after_the_removal_finishes() {
    let scene = Scene::new();
    scene.fake.put_image(POOL, IMAGE, GIB);
    scene.fake.clear_calls();
    let h = handle(FSID, scene.place().pool_id);
    let c = deleting(&h, "Delete");
    let (client, api) = ApiServer::start(vec![
        read(&c),
        admin_secret_read(),
        expect(
            Http::PATCH,
            CONTENT,
            Reply::Failure(StatusCode::CONFLICT, "Conflict"),
        ),
    ]);
    let ctx = context(&scene, client);
    let action = content::reconcile(Arc::new(c), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(
        scene.fake.image(POOL, IMAGE).is_some(),
        "the volume's image untouched"
    );
    api.done();
}

/// A content of another driver is never acted on, whatever it says.
#[tokio::test]
async fn another_drivers_content_is_left_alone() {
    let scene = Scene::new();
    cut(&scene).await;
    scene.fake.clear_calls();
    let (client, api) = ApiServer::start(vec![]);
    let ctx = context(&scene, client);
    let h = handle(FSID, scene.place().pool_id);
    let mut c = deleting(&h, "Delete");
    c.spec.driver = "ebs.csi.aws.com".into();
    let action = content::reconcile(Arc::new(c), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert!(scene.fake.calls().is_empty());
    api.done();
}

/// Restarted between a cut and its status, the content is already there when the watch
/// lists it. Listed before this provisioner's classes, it would pass for another driver's
/// and never be finished: the controllers start only once classes and volumes are listed.
#[tokio::test(start_paused = true)]
async fn the_controllers_start_only_once_classes_and_volumes_are_listed() {
    const CONTENTS: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";
    let crds_installed = json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                                "metadata": {}, "items": []});
    let (client, api) = ApiServer::start(vec![expect(
        Http::GET,
        CONTENTS,
        Reply::Object(StatusCode::OK, crds_installed),
    )]);
    let ctx = Context::new(
        client,
        crate::controller::testing::settings(),
        Arc::default(),
        reflector::store().0,
        reflector::store().0,
        reflector::store().0,
        crate::controller::testing::instance(),
    );
    let listed = ctx.caches.listed.clone();
    let run = tokio::spawn(super::run(Arc::new(ctx)));
    let a_while = std::time::Duration::from_secs(3);
    let crd_check = vec![format!("GET {CONTENTS}")];
    tokio::time::sleep(a_while).await;
    assert_eq!(
        api.requests(),
        crd_check,
        "nothing watched before the caches"
    );
    listed.classes.mark();
    tokio::time::sleep(a_while).await;
    assert_eq!(api.requests(), crd_check, "nor before the volumes");
    listed.volumes.mark();
    tokio::time::sleep(a_while).await;
    let seen = api.requests();
    assert!(
        seen[1..].iter().any(|r| r == &format!("GET {CONTENTS}")),
        "contents watched once both are listed: {seen:?}"
    );
    run.abort();
}
