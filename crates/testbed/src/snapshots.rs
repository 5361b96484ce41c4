//! VolumeSnapshot objects for the tests and the bench: the `snapshot.storage.k8s.io/v1` APIs
//! as dynamic objects (the tests judge what the API server holds, not our own types), a
//! csi-flavour class with a CSI driver name of the test's own (so provisioners of other tests
//! running beside it never take its objects for theirs), and cleanup of cluster-scoped ones.

use kube::Api;
use kube::api::{ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};

use crate::{Bed, Stage};

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "snapshot.storage.k8s.io".into(),
        version: "v1".into(),
        api_version: "snapshot.storage.k8s.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// The stage's namespace's VolumeSnapshots.
pub fn volume_snapshots(s: &Stage) -> Api<DynamicObject> {
    let ar = resource("VolumeSnapshot", "volumesnapshots");
    Api::namespaced_with(s.admin.clone(), &s.ns, &ar)
}

pub fn snapshot_contents(s: &Stage) -> Api<DynamicObject> {
    let ar = resource("VolumeSnapshotContent", "volumesnapshotcontents");
    Api::all_with(s.admin.clone(), &ar)
}

pub fn snapshot_classes(s: &Stage) -> Api<DynamicObject> {
    let ar = resource("VolumeSnapshotClass", "volumesnapshotclasses");
    Api::all_with(s.admin.clone(), &ar)
}

/// Creates the object `v` (JSON) through `api`.
pub async fn create_object(api: &Api<DynamicObject>, v: Value) -> DynamicObject {
    let o: DynamicObject = serde_json::from_value(v).expect("a dynamic object");
    api.create(&PostParams::default(), &o)
        .await
        .unwrap_or_else(|e| panic!("create {}: {e}", o.metadata.name.unwrap_or_default()))
}

/// A CSI driver name of the stage's own, and a csi-flavour class `<ns>-csi` of it.
pub async fn csi_snapshot_setup(s: &Stage) -> (String, String) {
    let driver = format!("{}.rbd.csi.ceph.com", s.ns);
    let stage_secret = format!("{}-node-stage", s.ns);
    let class = s
        .class(
            "csi",
            &[
                ("volumeFlavor", "csi"),
                ("clusterID", "bed-ceph"),
                ("csiNodeStageSecretName", &stage_secret),
                ("csiNodeStageSecretNamespace", "default"),
                ("csiDriver", &driver),
            ],
            json!({}),
        )
        .await;
    (driver, class)
}

/// A VolumeSnapshotClass `<ns>-<suffix>` (cluster-scoped: remove it with a
/// [`ClusterObjects`] guard).
pub async fn snapshot_class(
    s: &Stage,
    suffix: &str,
    driver: &str,
    policy: &str,
    params: Value,
) -> String {
    let name = format!("{}-{suffix}", s.ns);
    create_object(
        &snapshot_classes(s),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
               "metadata": {"name": name}, "driver": driver, "deletionPolicy": policy,
               "parameters": params}),
    )
    .await;
    name
}

/// A VolumeSnapshot `name` of claim `claim` in class `class`.
pub async fn take_snapshot(s: &Stage, name: &str, claim: &str, class: &str) -> DynamicObject {
    create_object(
        &volume_snapshots(s),
        json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
               "metadata": {"name": name, "namespace": s.ns},
               "spec": {"volumeSnapshotClassName": class,
                        "source": {"persistentVolumeClaimName": claim}}}),
    )
    .await
}

/// A claim's `dataSource` naming VolumeSnapshot `name`.
pub fn from_snapshot(name: &str) -> Value {
    json!({"dataSource": {"kind": "VolumeSnapshot", "apiGroup": "snapshot.storage.k8s.io", "name": name}})
}

/// Cluster-scoped snapshot objects of one test (`kind/name`), deleted when it ends, their
/// finalizers dropped. With kubectl: a Drop cannot reach the test's runtime, which its kube
/// client needs.
pub struct ClusterObjects(pub Vec<String>);

impl Drop for ClusterObjects {
    fn drop(&mut self) {
        let bed = Bed::load();
        let kubectl = |args: &[&str]| {
            let _ = std::process::Command::new(&bed.kubectl)
                .arg("--kubeconfig")
                .arg(&bed.kubeconfig)
                .args(args)
                .output();
        };
        for o in &self.0 {
            kubectl(&["delete", o, "--wait=false", "--ignore-not-found"]);
            kubectl(&[
                "patch",
                o,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
        }
    }
}
