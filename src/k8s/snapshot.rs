//! The `snapshot.storage.k8s.io/v1` objects, as far as the provisioner reads and writes them.
//! Unknown fields are kept out: the provisioner writes only status, annotations and
//! finalizers, by patch, never a whole object.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use serde::{Deserialize, Serialize};

/// Implements `kube::Resource` for a type of the snapshot group.
macro_rules! snapshot_resource {
    ($t:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl Resource for $t {
            type DynamicType = ();
            type Scope = $scope;
            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                domain::snapshot::GROUP.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotContent {
    pub metadata: ObjectMeta,
    pub spec: ContentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ContentStatus>,
}
snapshot_resource!(
    VolumeSnapshotContent,
    "VolumeSnapshotContent",
    "volumesnapshotcontents",
    k8s_openapi::ClusterResourceScope
);

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentSpec {
    #[serde(default)]
    pub volume_snapshot_ref: Reference,
    #[serde(default)]
    pub deletion_policy: String,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub volume_snapshot_class_name: Option<String>,
    #[serde(default)]
    pub source: ContentSource,
    #[serde(default)]
    pub source_volume_mode: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reference {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub uid: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentSource {
    #[serde(default)]
    pub volume_handle: Option<String>,
    #[serde(default)]
    pub snapshot_handle: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_handle: Option<String>,
    /// Unix nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<SnapshotError>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshot {
    pub metadata: ObjectMeta,
    pub spec: VolumeSnapshotSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VolumeSnapshotStatus>,
}
snapshot_resource!(
    VolumeSnapshot,
    "VolumeSnapshot",
    "volumesnapshots",
    k8s_openapi::NamespaceResourceScope
);

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSpec {
    #[serde(default)]
    pub source: VolumeSnapshotSource,
    #[serde(default)]
    pub volume_snapshot_class_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotSource {
    #[serde(default)]
    pub persistent_volume_claim_name: Option<String>,
    #[serde(default)]
    pub volume_snapshot_content_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotStatus {
    #[serde(default)]
    pub bound_volume_snapshot_content_name: Option<String>,
    #[serde(default)]
    pub ready_to_use: Option<bool>,
    #[serde(default)]
    pub restore_size: Option<Quantity>,
    #[serde(default)]
    pub error: Option<SnapshotError>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotClass {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub deletion_policy: String,
    #[serde(default)]
    pub parameters: Option<BTreeMap<String, String>>,
}
snapshot_resource!(
    VolumeSnapshotClass,
    "VolumeSnapshotClass",
    "volumesnapshotclasses",
    k8s_openapi::ClusterResourceScope
);

impl VolumeSnapshotContent {
    /// The facts [`domain::snapshot::decide`] needs.
    pub fn facts(&self) -> domain::snapshot::Content {
        let ann = |k: &str| {
            self.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(k))
        };
        let status = self.status.as_ref();
        domain::snapshot::Content {
            deleting: self.metadata.deletion_timestamp.is_some(),
            delete_policy: self.spec.deletion_policy == "Delete",
            has_finalizer: self
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|f| f == domain::snapshot::CONTENT_FINALIZER)),
            being_created: ann(domain::snapshot::ANN_BEING_CREATED),
            being_deleted: ann(domain::snapshot::ANN_BEING_DELETED),
            bound: self
                .spec
                .volume_snapshot_ref
                .uid
                .as_deref()
                .is_some_and(|u| !u.is_empty()),
            volume_handle: self.spec.source.volume_handle.clone(),
            static_handle: self.spec.source.snapshot_handle.clone(),
            has_status: status.is_some(),
            status_handle: status.and_then(|s| s.snapshot_handle.clone()),
            ready: status.and_then(|s| s.ready_to_use) == Some(true),
        }
    }
}

impl VolumeSnapshot {
    /// What a restore needs to know of it.
    pub fn facts(&self) -> domain::snapshot::SnapshotFacts {
        let status = self.status.as_ref();
        domain::snapshot::SnapshotFacts {
            exists: true,
            deleting: self.metadata.deletion_timestamp.is_some(),
            ready: status.and_then(|s| s.ready_to_use) == Some(true),
            content: status.and_then(|s| s.bound_volume_snapshot_content_name.clone()),
            restore_size: status
                .and_then(|s| s.restore_size.as_ref())
                .and_then(|q| domain::quantity::to_bytes(&q.0).ok())
                .and_then(|b| u64::try_from(b).ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_of_the_snapshot_controller_reads() {
        let c: VolumeSnapshotContent = serde_json::from_value(serde_json::json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshotContent",
            "metadata": {
                "name": "snapcontent-u1",
                "finalizers": [domain::snapshot::CONTENT_FINALIZER],
                "annotations": {domain::snapshot::ANN_BEING_DELETED: "yes"},
                "deletionTimestamp": "2026-12-07T00:00:00Z"
            },
            "spec": {
                "volumeSnapshotRef": {"kind": "VolumeSnapshot", "name": "s", "namespace": "ns", "uid": "u1", "apiVersion": "snapshot.storage.k8s.io/v1", "resourceVersion": "7"},
                "source": {"volumeHandle": "img"},
                "deletionPolicy": "Delete",
                "driver": "rbd.csi.ceph.com",
                "volumeSnapshotClassName": "c",
                "sourceVolumeMode": "Filesystem"
            },
            "status": {"snapshotHandle": "kube/img@s", "creationTime": 1765065600000000000_i64, "readyToUse": true, "restoreSize": 1048576}
        }))
        .unwrap();
        let f = c.facts();
        assert!(f.deleting && f.delete_policy && f.has_finalizer && f.being_deleted && f.bound);
        assert!(f.ready && !f.being_created);
        assert_eq!(f.status_handle.as_deref(), Some("kube/img@s"));
        assert_eq!(
            VolumeSnapshotContent::url_path(&(), None),
            "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents"
        );
        let s: VolumeSnapshot = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"source": {"persistentVolumeClaimName": "data"}},
            "status": {"boundVolumeSnapshotContentName": "snapcontent-u1", "readyToUse": true, "restoreSize": "1Mi"}
        }))
        .unwrap();
        let f = s.facts();
        assert_eq!(f.restore_size, Some(1 << 20));
        assert!(f.ready && f.exists && !f.deleting);
    }
}
