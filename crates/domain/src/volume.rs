//! Names, sizes and the PersistentVolume built for a claim, with the Secret a csi PV is staged
//! with (`node_stage`). Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec, RBDPersistentVolumeSource, SecretReference,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::params::{ClassParams, Flavor, SecretRef};
use crate::quantity::{self, QuantityError};

mod node_stage;
pub use node_stage::{
    CSI_SECRET_FIELDS, NodeStage, NodeStageError, NodeStageFacts, SecretFields, choose_node_stage,
    companion_secret, copy_command, in_csi_format,
};

/// The prefix of every dynamically provisioned image's name (ours, the in-tree and the old
/// external provisioner's alike: a name proves nothing about whose an image is).
pub const IMAGE_PREFIX: &str = "kubernetes-dynamic-pvc-";

/// RBD image name for a claim: deterministic, so a retry after a crash finds the same image.
pub fn image_name(claim_uid: &str) -> String {
    format!("{IMAGE_PREFIX}{claim_uid}")
}

/// PersistentVolume name for a claim, as every external provisioner names them.
pub fn pv_name(claim_uid: &str) -> String {
    format!("pvc-{claim_uid}")
}

pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// The provisioner named in a PV's `pv.kubernetes.io/provisioned-by` annotation.
pub fn provisioned_by(pv: &PersistentVolume) -> Option<&str> {
    crate::meta::annotation(&pv.metadata, ANN_PROVISIONED_BY)
}

/// What deletion needs, recorded on the PV so that it does not depend on the StorageClass.
pub const ANN_MONITORS: &str = "rbd-provisioner.ceph.com/monitors";
pub const ANN_POOL: &str = "rbd-provisioner.ceph.com/pool";
pub const ANN_IMAGE: &str = "rbd-provisioner.ceph.com/image";
pub const ANN_ADMIN_ID: &str = "rbd-provisioner.ceph.com/admin-id";
/// `namespace/name` of the admin Secret (never the key).
pub const ANN_ADMIN_SECRET: &str = "rbd-provisioner.ceph.com/admin-secret";
/// Where the image was made: the Ceph cluster's fsid and the pool's id. Written at creation
/// (or when the volume is first seen bound); they can only stop a deletion, never direct one.
pub const ANN_FSID: &str = "rbd-provisioner.ceph.com/fsid";
pub const ANN_POOL_ID: &str = "rbd-provisioner.ceph.com/pool-id";

const MIB: u64 = 1 << 20;

/// Rounds a byte count up to whole MiB (RBD sizes and PV capacities are kept in MiB).
pub fn round_up_mib(bytes: u128) -> Option<u64> {
    u64::try_from(bytes.div_ceil(MIB as u128).checked_mul(MIB as u128)?).ok()
}

/// A capacity in bytes (a multiple of 1 MiB) as a Kubernetes quantity.
pub fn capacity_quantity(bytes: u64) -> Quantity {
    if bytes.is_multiple_of(1 << 30) {
        Quantity(format!("{}Gi", bytes >> 30))
    } else {
        Quantity(format!("{}Mi", bytes / MIB))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeMode {
    Filesystem,
    Block,
}

/// What the claim asks for, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimRequest {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub access_modes: Vec<String>,
    pub volume_mode: VolumeMode,
    /// Requested size rounded up to MiB.
    pub size: u64,
}

/// Why a claim cannot be provisioned as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "claims with a label selector cannot be provisioned dynamically; remove spec.selector or bind the claim to an existing PV"
    )]
    Selector,
    #[error("the claim requests no storage size; set spec.resources.requests.storage")]
    NoSize,
    #[error("the requested size {0:?} is zero; request at least 1Mi")]
    ZeroSize(String),
    #[error("the requested size is invalid: {0}")]
    BadSize(QuantityError),
    #[error("the claim has no access modes; use ReadWriteOnce or ReadOnlyMany")]
    NoAccessModes,
    #[error("access mode {mode} is not supported for {volume_mode} volumes{flavor_note}: {why}")]
    AccessMode {
        mode: String,
        volume_mode: &'static str,
        flavor_note: &'static str,
        why: &'static str,
    },
    #[error("volumeMode {0:?} is not valid; use Filesystem or Block")]
    VolumeMode(String),
    #[error("the claim has no uid yet")]
    NoUid,
    #[error(
        "the claim asks for {requested} but StorageClass {class} provisions at most {max} (its maxSize); request less, or ask an administrator for a class with a larger maxSize"
    )]
    AboveMax {
        requested: String,
        class: String,
        max: String,
    },
}

/// A byte count for people: the largest binary unit it is a whole number of, else MiB.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, u32); 5] = [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20)];
    for (unit, shift) in UNITS {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{}Mi", bytes.div_ceil(MIB))
}

/// Extracts and validates what a claim asks for.
pub fn claim_request(pvc: &PersistentVolumeClaim) -> Result<ClaimRequest, ClaimError> {
    let spec = pvc.spec.clone().unwrap_or_default();
    if spec.selector.as_ref().is_some_and(|s| {
        s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
            || s.match_expressions.as_ref().is_some_and(|m| !m.is_empty())
    }) {
        return Err(ClaimError::Selector);
    }
    let raw = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone())
        .ok_or(ClaimError::NoSize)?;
    let bytes = quantity::to_bytes(&raw).map_err(ClaimError::BadSize)?;
    if bytes == 0 {
        return Err(ClaimError::ZeroSize(raw));
    }
    let size = round_up_mib(bytes).ok_or(ClaimError::BadSize(QuantityError::TooLarge(raw)))?;
    let volume_mode = match spec.volume_mode.as_deref() {
        None | Some("Filesystem") => VolumeMode::Filesystem,
        Some("Block") => VolumeMode::Block,
        Some(other) => return Err(ClaimError::VolumeMode(other.into())),
    };
    let access_modes = distinct(spec.access_modes.unwrap_or_default());
    if access_modes.is_empty() {
        return Err(ClaimError::NoAccessModes);
    }
    Ok(ClaimRequest {
        namespace: pvc.metadata.namespace.clone().unwrap_or_default(),
        name: pvc.metadata.name.clone().unwrap_or_default(),
        uid: pvc
            .metadata
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or(ClaimError::NoUid)?,
        access_modes,
        volume_mode,
        size,
    })
}

/// A claim's access modes, each once, in order. They are read as a set (kube-controller-manager's
/// binder does too), and the API server accepts a mode repeated any number of times.
pub fn distinct(modes: Vec<String>) -> Vec<String> {
    let mut once: Vec<String> = Vec::new();
    for m in modes {
        if !once.contains(&m) {
            once.push(m);
        }
    }
    once
}

/// Access modes an RBD image supports: a filesystem on it can be mounted read/write by one
/// node only; a raw block device can be shared (the application coordinates), which ceph-csi
/// supports and the in-tree plugin does not.
pub fn check_access_modes(req: &ClaimRequest, flavor: Flavor) -> Result<(), ClaimError> {
    for mode in &req.access_modes {
        let refuse = |why, flavor_note| ClaimError::AccessMode {
            mode: mode.clone(),
            volume_mode: match req.volume_mode {
                VolumeMode::Filesystem => "Filesystem",
                VolumeMode::Block => "Block",
            },
            flavor_note,
            why,
        };
        match (mode.as_str(), req.volume_mode, flavor) {
            ("ReadWriteOnce" | "ReadOnlyMany", _, _) => {}
            ("ReadWriteMany", VolumeMode::Block, Flavor::Csi) => {}
            ("ReadWriteMany", VolumeMode::Filesystem, _) => {
                return Err(refuse(
                    "a filesystem mounted read/write on several nodes at once is corrupted; use ReadWriteOnce (or volumeMode: Block with volumeFlavor: csi)",
                    "",
                ));
            }
            ("ReadWriteMany", VolumeMode::Block, Flavor::Rbd) => {
                return Err(refuse(
                    "only ceph-csi shares a block device between nodes; use volumeFlavor: csi or ReadWriteOnce",
                    " with the in-tree rbd flavour",
                ));
            }
            _ => {
                return Err(refuse(
                    "supported modes are ReadWriteOnce and ReadOnlyMany (and ReadWriteMany for csi Block volumes)",
                    "",
                ));
            }
        }
    }
    Ok(())
}

/// On csi PVs whose `clusterID` the class did not give: `ceph-fsid` (it is the Ceph
/// cluster's fsid, read through librados when the volume was provisioned).
pub const ANN_CLUSTER_ID_SOURCE: &str = "rbd-provisioner.ceph.com/cluster-id-source";

/// The csi PV's `clusterID`, and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterId {
    /// The class's `clusterID` parameter.
    Class(String),
    /// The Ceph cluster's fsid: the class gives no `clusterID`.
    Fsid(String),
}

impl ClusterId {
    /// The value written into `volumeAttributes.clusterID`.
    pub fn value(&self) -> &str {
        match self {
            ClusterId::Class(v) | ClusterId::Fsid(v) => v,
        }
    }
}

/// ceph-csi's default driver name; a class may name another with `csiDriver`.
pub const CSI_DRIVER: &str = crate::params::DEFAULT_CSI_DRIVER;

/// What a csi PV needs beyond the class: resolved when provisioning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsiVolume {
    pub cluster_id: ClusterId,
    pub node_stage_secret: SecretRef,
}

/// The kind of volume source a PV gets.
#[derive(Clone, Copy, Debug)]
pub enum VolumeSourceKind<'a> {
    Rbd,
    Csi(&'a CsiVolume),
}

impl VolumeSourceKind<'_> {
    pub fn flavor(&self) -> Flavor {
        match self {
            VolumeSourceKind::Rbd => Flavor::Rbd,
            VolumeSourceKind::Csi(_) => Flavor::Csi,
        }
    }
}

/// Everything a PV is built from.
pub struct PvInput<'a> {
    pub claim: &'a ClaimRequest,
    pub class: &'a StorageClass,
    pub params: &'a ClassParams,
    pub source: VolumeSourceKind<'a>,
    pub image: &'a str,
    pub provisioner: &'a str,
    /// Where the image was made, recorded on the PV.
    pub place: Option<&'a crate::owner::Place>,
}

pub const FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";

/// The PersistentVolume for a provisioned image, pre-bound to its claim (with the claim's uid,
/// which lets kube-controller-manager bind it at once instead of at its next resync).
pub fn build_pv(i: &PvInput<'_>) -> PersistentVolume {
    let c = i.claim;
    let p = i.params;
    let reclaim = i
        .class
        .reclaim_policy
        .clone()
        .unwrap_or_else(|| "Delete".into());
    let mut annotations = BTreeMap::from([
        (ANN_PROVISIONED_BY.to_string(), i.provisioner.to_string()),
        (ANN_MONITORS.to_string(), p.monitors.join(",")),
        (ANN_POOL.to_string(), p.pool.clone()),
        (ANN_IMAGE.to_string(), i.image.to_string()),
        (ANN_ADMIN_ID.to_string(), p.admin_id.clone()),
        (ANN_ADMIN_SECRET.to_string(), p.admin_secret.to_string()),
    ]);
    if let VolumeSourceKind::Csi(CsiVolume {
        cluster_id: ClusterId::Fsid(_),
        ..
    }) = i.source
    {
        annotations.insert(ANN_CLUSTER_ID_SOURCE.to_string(), "ceph-fsid".to_string());
    }
    if let Some(place) = i.place {
        annotations.insert(ANN_FSID.to_string(), place.fsid.clone());
        annotations.insert(ANN_POOL_ID.to_string(), place.pool_id.to_string());
    }
    let fs_type = (c.volume_mode == VolumeMode::Filesystem).then(|| p.fs_type.clone());
    let user_secret = p.user_secret(&c.namespace);
    let mut spec = PersistentVolumeSpec {
        access_modes: Some(c.access_modes.clone()),
        capacity: Some(BTreeMap::from([(
            "storage".to_string(),
            capacity_quantity(c.size),
        )])),
        claim_ref: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: Some(c.namespace.clone()),
            name: Some(c.name.clone()),
            uid: Some(c.uid.clone()),
            ..Default::default()
        }),
        persistent_volume_reclaim_policy: Some(reclaim.clone()),
        storage_class_name: i.class.metadata.name.clone(),
        mount_options: i.class.mount_options.clone().filter(|m| !m.is_empty()),
        volume_mode: Some(
            match c.volume_mode {
                VolumeMode::Filesystem => "Filesystem",
                VolumeMode::Block => "Block",
            }
            .into(),
        ),
        ..Default::default()
    };
    match i.source {
        VolumeSourceKind::Rbd => {
            spec.rbd = Some(RBDPersistentVolumeSource {
                monitors: p.monitors.clone(),
                pool: Some(p.pool.clone()),
                image: i.image.to_string(),
                user: Some(p.user_id.clone()),
                secret_ref: Some(secret_reference(&user_secret)),
                fs_type,
                ..Default::default()
            })
        }
        VolumeSourceKind::Csi(csi) => {
            spec.csi = Some(CSIPersistentVolumeSource {
                driver: p.csi_driver.clone(),
                volume_handle: i.image.to_string(),
                fs_type,
                volume_attributes: Some({
                    let mut a = csi_volume_attributes(csi.cluster_id.value(), &p.pool);
                    a.extend(
                        p.node_map
                            .attributes()
                            .into_iter()
                            .map(|(k, v)| (k.into(), v)),
                    );
                    a
                }),
                node_stage_secret_ref: Some(secret_reference(&csi.node_stage_secret)),
                ..Default::default()
            })
        }
    }
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name(&c.uid)),
            annotations: Some(annotations),
            // Guards the image against `kubectl delete pv` while the provisioner still owns it.
            finalizers: (reclaim == "Delete").then(|| vec![FINALIZER.to_string()]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// `volumeAttributes` of a static ceph-csi volume (the image is its `volumeHandle`); shared
/// by new csi PVs and `migrate-to-csi`.
pub fn csi_volume_attributes(cluster_id: &str, pool: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("clusterID".to_string(), cluster_id.to_string()),
        ("pool".to_string(), pool.to_string()),
        ("staticVolume".to_string(), "true".to_string()),
        ("imageFeatures".to_string(), "layering".to_string()),
    ])
}

pub fn secret_reference(s: &SecretRef) -> SecretReference {
    SecretReference {
        name: Some(s.name.clone()),
        namespace: Some(s.namespace.clone()),
    }
}

#[cfg(test)]
mod tests;
