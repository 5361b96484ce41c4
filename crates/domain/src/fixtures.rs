//! The objects the domain's tests start from; each test adds what it is about.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimStatus, PersistentVolumeSpec, PersistentVolumeStatus,
    RBDPersistentVolumeSource,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::params::SecretRef;
use crate::reclaim::AdminSource;

/// The parameters of an ordinary rbd class: the walkthrough's, with one monitor.
pub const RBD_PARAMS: &[(&str, &str)] = &[
    ("monitors", "10.0.0.1:6789"),
    ("pool", "kube"),
    ("adminSecretName", "ceph-admin"),
    ("adminSecretNamespace", "kube-system"),
    ("userId", "kube"),
    ("userSecretName", "ceph-user"),
];

/// StorageClass `fast` of `provisioner` with these parameters.
pub fn storage_class(
    provisioner: &str,
    parameters: &[(&str, &str)],
) -> k8s_openapi::api::storage::v1::StorageClass {
    k8s_openapi::api::storage::v1::StorageClass {
        metadata: ObjectMeta {
            name: Some("fast".into()),
            ..Default::default()
        },
        provisioner: provisioner.into(),
        parameters: map(parameters),
        ..Default::default()
    }
}

/// Annotations or labels from pairs.
pub fn map(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Claim `namespace/name` with this uid (`None` where empty), in `phase` if one is given.
pub fn claim(namespace: &str, name: &str, uid: &str, phase: Option<&str>) -> PersistentVolumeClaim {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: some(namespace),
            uid: some(uid),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec::default()),
        status: phase.map(|p| PersistentVolumeClaimStatus {
            phase: Some(p.into()),
            ..Default::default()
        }),
    }
}

/// PV `name` of rbd image `pool/image`, with these annotations, in `phase` if one is given.
pub fn rbd_pv(
    name: &str,
    (pool, image): (&str, &str),
    annotations: &[(&str, &str)],
    phase: Option<&str>,
) -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: map(annotations),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            rbd: Some(RBDPersistentVolumeSource {
                pool: Some(pool.into()),
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: phase.map(|p| PersistentVolumeStatus {
            phase: Some(p.into()),
            ..Default::default()
        }),
    }
}

/// Admin credentials recorded on a PV: the id, and the Secret as `namespace/name`.
pub fn recorded_admin(admin_id: &str, secret: &str) -> AdminSource {
    let (namespace, name) = secret.split_once('/').expect("namespace/name");
    AdminSource::Recorded {
        admin_id: admin_id.into(),
        secret: SecretRef {
            namespace: namespace.into(),
            name: name.into(),
        },
    }
}

/// Provisioner `ceph.com/rbd` of Kubernetes cluster `c-1`.
pub fn instance() -> crate::owner::Instance {
    crate::owner::Instance {
        provisioner: "ceph.com/rbd".into(),
        cluster: "c-1".into(),
    }
}

/// Ceph cluster `f-1`, pool id 3.
pub fn place() -> crate::owner::Place {
    crate::owner::Place {
        fsid: "f-1".into(),
        pool_id: 3,
    }
}

/// The stamp of claim `ns/data` (uid `u1`, PV `pvc-u1`) made at 1000 in [`place`].
pub fn stamp(pv_state: crate::owner::PvState) -> crate::owner::Stamp {
    crate::owner::Stamp {
        pv: "pvc-u1".into(),
        claim_namespace: "ns".into(),
        claim_name: "data".into(),
        claim_uid: "u1".into(),
        created: 1000,
        place: Some(place()),
        pv_state,
    }
}
