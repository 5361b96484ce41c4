//! Names, sizes and the PersistentVolume built for a claim. Pure.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec, RBDPersistentVolumeSource, SecretReference,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::domain::params::{ClassParams, Flavor, SecretRef};
use crate::domain::quantity::{self, QuantityError};

pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// What deletion needs, recorded on the PV so that it does not depend on the StorageClass.
pub const ANN_MONITORS: &str = "rbd-provisioner.ceph.com/monitors";
pub const ANN_POOL: &str = "rbd-provisioner.ceph.com/pool";
pub const ANN_IMAGE: &str = "rbd-provisioner.ceph.com/image";
pub const ANN_ADMIN_ID: &str = "rbd-provisioner.ceph.com/admin-id";
/// `namespace/name` of the admin Secret (never the key).
pub const ANN_ADMIN_SECRET: &str = "rbd-provisioner.ceph.com/admin-secret";
pub const FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";
/// On csi PVs whose `clusterID` the class did not give: `ceph-fsid` (it is the Ceph
/// cluster's fsid, read through librados when the volume was provisioned).
pub const ANN_CLUSTER_ID_SOURCE: &str = "rbd-provisioner.ceph.com/cluster-id-source";
/// ceph-csi's default driver name; a class may name another with `csiDriver`.
pub const CSI_DRIVER: &str = crate::domain::params::DEFAULT_CSI_DRIVER;

const MIB: u64 = 1 << 20;

/// The provisioner named in a PV's `pv.kubernetes.io/provisioned-by` annotation.
pub fn provisioned_by(pv: &PersistentVolume) -> Option<&str> {
    crate::domain::meta::annotation(&pv.metadata, ANN_PROVISIONED_BY)
}

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
    let access_modes = spec.access_modes.unwrap_or_default();
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

/// What a csi PV needs beyond the class: resolved when provisioning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsiVolume {
    pub cluster_id: ClusterId,
    pub node_stage_secret: SecretRef,
}

/// The kind of volume source a PV gets.
#[derive(Clone, Copy, Debug)]
pub enum Source<'a> {
    Rbd,
    Csi(&'a CsiVolume),
}

impl Source<'_> {
    pub fn flavor(&self) -> Flavor {
        match self {
            Source::Rbd => Flavor::Rbd,
            Source::Csi(_) => Flavor::Csi,
        }
    }
}

/// Everything a PV is built from.
pub struct PvInput<'a> {
    pub claim: &'a ClaimRequest,
    pub class: &'a StorageClass,
    pub params: &'a ClassParams,
    pub source: Source<'a>,
    pub image: &'a str,
    pub provisioner: &'a str,
}

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
    if let Source::Csi(CsiVolume {
        cluster_id: ClusterId::Fsid(_),
        ..
    }) = i.source
    {
        annotations.insert(ANN_CLUSTER_ID_SOURCE.to_string(), "ceph-fsid".to_string());
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
        Source::Rbd => {
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
        Source::Csi(csi) => {
            spec.csi = Some(CSIPersistentVolumeSource {
                driver: p.csi_driver.clone(),
                volume_handle: i.image.to_string(),
                fs_type,
                volume_attributes: Some(csi_volume_attributes(csi.cluster_id.value(), &p.pool)),
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

// ---- the csi node-stage Secret -------------------------------------------------------------
//
// ceph-csi's node plugin reads the Ceph id and key from the PV's `nodeStageSecretRef`, under
// `userID` and `userKey`. The walkthrough's user Secret (type kubernetes.io/rbd) holds only
// `key`, and StorageClass parameters cannot be changed. So, in order: the class's
// `csiNodeStageSecretName`; else the user Secret itself when it is in ceph-csi's format; else
// its companion `<userSecretName>-csi` in the same namespace, which an operator can create
// from the user Secret without touching the class. When none works, the error carries the
// exact command that creates (or completes) the Secret from the user Secret.

/// A Secret's non-empty field names (never its values); `None` when it does not exist.
pub type SecretFields = BTreeSet<String>;

/// ceph-csi's two fields.
pub const CSI_SECRET_FIELDS: [&str; 2] = ["userID", "userKey"];

/// Whether a Secret with these fields is in ceph-csi's format.
pub fn in_csi_format(fields: &SecretFields) -> bool {
    CSI_SECRET_FIELDS.iter().all(|f| fields.contains(*f))
}

/// The Secret looked for next to the user Secret when the class names no node-stage Secret.
pub fn companion_secret(user: &SecretRef) -> SecretRef {
    SecretRef {
        namespace: user.namespace.clone(),
        name: format!("{}-csi", user.name),
    }
}

/// Which Secret a csi PV's `nodeStageSecretRef` names, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeStage {
    /// The class's `csiNodeStageSecretName`/`Namespace`.
    Class(SecretRef),
    /// The user Secret, which is in ceph-csi's format.
    UserSecret(SecretRef),
    /// `<userSecretName>-csi` next to the user Secret.
    Companion(SecretRef),
}

impl NodeStage {
    pub fn secret(&self) -> &SecretRef {
        match self {
            NodeStage::Class(s) | NodeStage::UserSecret(s) | NodeStage::Companion(s) => s,
        }
    }
}

/// No node-stage Secret is usable. The Display is the whole story for a `ProvisioningFailed`
/// event: what is missing and the command that fixes it (which reads the key from the user
/// Secret inside the pipeline: the key is never printed, nor passed as an argument).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "ceph-csi node-stage secret: {what}; ceph-csi needs a Secret with userID and userKey. {fix}. Provisioning retries by itself"
)]
pub struct NodeStageError {
    /// What was found (and not found).
    pub what: String,
    /// The command, or, when one cannot be written safely, what to do by hand.
    pub fix: String,
    /// The command alone (for tests and tools); `None` when none could be written safely.
    pub command: Option<String>,
}

/// What provisioning found while looking for a node-stage Secret.
pub struct NodeStageFacts<'a> {
    pub class_name: &'a str,
    /// The class's `csiNodeStageSecretName`/`Namespace`, if any.
    pub class_secret: Option<&'a SecretRef>,
    pub user_secret: &'a SecretRef,
    /// Fields of the user Secret (it exists: a missing one is reported before this).
    pub user_fields: &'a SecretFields,
    /// Fields of the Secret the PV would name (the class's, else the companion); `None`:
    /// it does not exist.
    pub target_fields: Option<&'a SecretFields>,
    /// The class's `userId`: the Ceph id the node maps with.
    pub user_id: &'a str,
}

/// Picks the node-stage Secret from what was found, or says exactly what to do.
pub fn choose_node_stage(f: &NodeStageFacts<'_>) -> Result<NodeStage, NodeStageError> {
    let complete = |fields: Option<&SecretFields>| fields.is_some_and(in_csi_format);
    if let Some(s) = f.class_secret {
        if complete(f.target_fields) {
            return Ok(NodeStage::Class(s.clone()));
        }
    } else if in_csi_format(f.user_fields) {
        return Ok(NodeStage::UserSecret(f.user_secret.clone()));
    } else if complete(f.target_fields) {
        return Ok(NodeStage::Companion(companion_secret(f.user_secret)));
    }
    Err(node_stage_error(f))
}

fn node_stage_error(f: &NodeStageFacts<'_>) -> NodeStageError {
    let target = f
        .class_secret
        .cloned()
        .unwrap_or_else(|| companion_secret(f.user_secret));
    let holds = |fields: &SecretFields| {
        if fields.is_empty() {
            "no fields".to_string()
        } else if fields.len() == 1 && fields.contains("key") {
            "only key (the in-tree plugin's format)".to_string()
        } else {
            format!(
                "only {}",
                fields.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        }
    };
    let target_state = match f.target_fields {
        None => "does not exist".to_string(),
        Some(t) => format!(
            "exists but has no {}",
            CSI_SECRET_FIELDS
                .iter()
                .filter(|x| !t.contains(**x))
                .copied()
                .collect::<Vec<_>>()
                .join(" and no ")
        ),
    };
    let what = match f.class_secret {
        Some(s) => format!(
            "StorageClass {} names {s} (csiNodeStageSecretName), which {target_state}",
            f.class_name
        ),
        None => format!(
            "StorageClass {} names none (csiNodeStageSecretName), the user secret {} holds {}, and its companion {target} {target_state}",
            f.class_name,
            f.user_secret,
            holds(f.user_fields)
        ),
    };
    let key_field = ["key", "userKey"]
        .into_iter()
        .find(|k| f.user_fields.contains(*k));
    let command = key_field.and_then(|k| {
        copy_command(
            f.user_secret,
            k,
            &target,
            f.target_fields.is_some(),
            f.user_id,
        )
    });
    let fix = match (&command, key_field) {
        (Some(c), _) => format!(
            "{} it from the user secret (the key is copied inside the pipeline, never shown): `{c}`",
            if f.target_fields.is_some() {
                "Complete"
            } else {
                "Create"
            }
        ),
        (None, None) => format!(
            "The user secret {} holds the key under neither key nor userKey, so no command can copy it: create {target} with userID={} and userKey=<the key of client.{}>",
            f.user_secret, f.user_id, f.user_id
        ),
        (None, Some(_)) => format!(
            "Create {target} by hand with userID={} and userKey=<the key of client.{}> (no command is shown: a name or id here is not safe to paste into a shell)",
            f.user_id, f.user_id
        ),
    };
    NodeStageError { what, fix, command }
}

/// A shell pipeline that writes `userID` and `userKey` (copied from `key_field` of the user
/// Secret, still base64, never decoded or printed) into `target`: `kubectl create` when it
/// does not exist, a merge patch (keeping its other fields) when it does. `None` when a name
/// or id holds characters that are not safe to paste into a shell (a hostile class must not
/// be able to make an operator run something else).
pub fn copy_command(
    user: &SecretRef,
    key_field: &str,
    target: &SecretRef,
    target_exists: bool,
    user_id: &str,
) -> Option<String> {
    let dns = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    let id_ok = !user_id.is_empty()
        && user_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    let field_ok = key_field.bytes().all(|b| b.is_ascii_alphanumeric());
    if ![&user.namespace, &user.name, &target.namespace, &target.name]
        .iter()
        .all(|s| dns(s))
        || !id_ok
        || !field_ok
    {
        return None;
    }
    let fields = format!(
        r#""stringData":{{"userID":"{user_id}"}},"data":{{"userKey":"{{{{.data.{key_field}}}}}"}}"#
    );
    let read = |template: String| {
        format!(
            "kubectl -n {} get secret {} -o go-template='{template}'",
            user.namespace, user.name
        )
    };
    Some(if target_exists {
        format!(
            "{} | kubectl -n {} patch secret {} --type merge --patch-file /dev/stdin",
            read(format!("{{{fields}}}")),
            target.namespace,
            target.name
        )
    } else {
        format!(
            "{} | kubectl create -f -",
            read(format!(
                r#"{{"apiVersion":"v1","kind":"Secret","metadata":{{"name":"{}","namespace":"{}"}},"type":"Opaque",{fields}}}"#,
                target.name, target.namespace
            ))
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::params;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    const UID: &str = "0b5a3f4e-1111-2222-3333-444455556666";

    fn pvc(size: Option<&str>, modes: &[&str], volume_mode: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("apps".into()),
                uid: Some(UID.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                resources: Some(VolumeResourceRequirements {
                    requests: size
                        .map(|s| BTreeMap::from([("storage".to_string(), Quantity(s.into()))])),
                    ..Default::default()
                }),
                volume_mode: volume_mode.map(Into::into),
                storage_class_name: Some("ceph-rbd".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn class(reclaim: Option<&str>, mount_options: Option<Vec<&str>>) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some("ceph-rbd".into()),
                ..Default::default()
            },
            provisioner: "ceph.com/rbd".into(),
            reclaim_policy: reclaim.map(Into::into),
            mount_options: mount_options.map(|m| m.into_iter().map(Into::into).collect()),
            ..Default::default()
        }
    }

    fn params(extra: &[(&str, &str)]) -> ClassParams {
        let mut m: BTreeMap<String, String> = [
            ("monitors", "10.0.0.1:6789,10.0.0.2:6789"),
            ("adminSecretName", "ceph-secret"),
            ("adminSecretNamespace", "kube-system"),
            ("pool", "kube"),
            ("userId", "kube"),
            ("userSecretName", "ceph-kube-secret"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            m.insert(k.to_string(), v.to_string());
        }
        params::parse(&m).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(image_name(UID), format!("kubernetes-dynamic-pvc-{UID}"));
        assert_eq!(pv_name(UID), format!("pvc-{UID}"));
    }

    #[test]
    fn mib_rounding() {
        assert_eq!(round_up_mib(1), Some(MIB));
        assert_eq!(round_up_mib(MIB as u128), Some(MIB));
        assert_eq!(round_up_mib(MIB as u128 + 1), Some(2 * MIB));
        assert_eq!(round_up_mib(1_000_000_000), Some(954 * MIB));
        assert_eq!(round_up_mib(u128::MAX), None);
        assert_eq!(capacity_quantity(500 * MIB).0, "500Mi");
        assert_eq!(capacity_quantity(2048 * MIB).0, "2Gi");
        assert_eq!(capacity_quantity(954 * MIB).0, "954Mi");
    }

    #[test]
    fn request_sizes() {
        let r = claim_request(&pvc(Some("500Mi"), &["ReadWriteOnce"], None)).unwrap();
        assert_eq!(r.size, 500 * MIB);
        assert_eq!(r.volume_mode, VolumeMode::Filesystem);
        let r = claim_request(&pvc(Some("1G"), &["ReadWriteOnce"], None)).unwrap();
        assert_eq!(r.size, 954 * MIB, "1G = 953.67 MiB rounds up");
        let r = claim_request(&pvc(Some("1"), &["ReadWriteOnce"], None)).unwrap();
        assert_eq!(r.size, MIB);
        assert_eq!(
            claim_request(&pvc(Some("0"), &["ReadWriteOnce"], None)),
            Err(ClaimError::ZeroSize("0".into()))
        );
        assert!(matches!(
            claim_request(&pvc(Some("ten gigs"), &["ReadWriteOnce"], None)),
            Err(ClaimError::BadSize(_))
        ));
        assert_eq!(
            claim_request(&pvc(None, &["ReadWriteOnce"], None)),
            Err(ClaimError::NoSize)
        );
    }

    #[test]
    fn request_rejects_selector_and_odd_modes() {
        let mut c = pvc(Some("1Gi"), &["ReadWriteOnce"], None);
        c.spec.as_mut().unwrap().selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("tier".into(), "db".into())])),
            ..Default::default()
        });
        let e = claim_request(&c).unwrap_err();
        assert_eq!(e, ClaimError::Selector);
        assert!(e.to_string().contains("remove spec.selector"));
        assert_eq!(
            claim_request(&pvc(Some("1Gi"), &[], None)),
            Err(ClaimError::NoAccessModes)
        );
        assert!(matches!(
            claim_request(&pvc(Some("1Gi"), &["ReadWriteOnce"], Some("Raw"))),
            Err(ClaimError::VolumeMode(_))
        ));
        let mut c = pvc(Some("1Gi"), &["ReadWriteOnce"], None);
        c.metadata.uid = None;
        assert_eq!(claim_request(&c), Err(ClaimError::NoUid));
    }

    #[test]
    fn access_modes() {
        let ok = |modes: &[&str], vm, flavor| {
            check_access_modes(
                &claim_request(&pvc(Some("1Gi"), modes, vm)).unwrap(),
                flavor,
            )
        };
        assert!(ok(&["ReadWriteOnce", "ReadOnlyMany"], None, Flavor::Rbd).is_ok());
        assert!(ok(&["ReadWriteOnce"], Some("Block"), Flavor::Rbd).is_ok());
        let e = ok(&["ReadWriteMany"], None, Flavor::Rbd).unwrap_err();
        assert!(
            e.to_string()
                .contains("ReadWriteMany is not supported for Filesystem"),
            "{e}"
        );
        assert!(ok(&["ReadWriteMany"], None, Flavor::Csi).is_err());
        assert!(ok(&["ReadWriteMany"], Some("Block"), Flavor::Rbd).is_err());
        assert!(ok(&["ReadWriteMany"], Some("Block"), Flavor::Csi).is_ok());
        assert!(ok(&["ReadWriteOncePod"], None, Flavor::Rbd).is_err());
    }

    #[test]
    fn rbd_pv() {
        let req = claim_request(&pvc(
            Some("500Mi"),
            &["ReadWriteOnce", "ReadOnlyMany"],
            None,
        ))
        .unwrap();
        let k = class(None, Some(vec!["discard"]));
        let p = params(&[]);
        let image = image_name(&req.uid);
        let pv = build_pv(&PvInput {
            claim: &req,
            class: &k,
            params: &p,
            source: Source::Rbd,
            image: &image,
            provisioner: "ceph.com/rbd",
        });
        assert_eq!(pv.metadata.name.as_deref(), Some(&*pv_name(UID)));
        let ann = pv.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[ANN_PROVISIONED_BY], "ceph.com/rbd");
        assert_eq!(ann[ANN_ADMIN_SECRET], "kube-system/ceph-secret");
        assert_eq!(ann[ANN_POOL], "kube");
        assert_eq!(ann[ANN_IMAGE], image);
        assert_eq!(ann[ANN_MONITORS], "10.0.0.1:6789,10.0.0.2:6789");
        assert!(!ann.values().any(|v| v.contains("key")), "no key material");
        assert_eq!(pv.metadata.finalizers, Some(vec![FINALIZER.to_string()]));
        let s = pv.spec.unwrap();
        assert_eq!(s.capacity.unwrap()["storage"].0, "500Mi");
        assert_eq!(
            s.access_modes.unwrap(),
            vec!["ReadWriteOnce", "ReadOnlyMany"]
        );
        let cr = s.claim_ref.unwrap();
        assert_eq!(
            (
                cr.namespace.as_deref(),
                cr.name.as_deref(),
                cr.uid.as_deref()
            ),
            (Some("apps"), Some("data"), Some(UID))
        );
        assert_eq!(
            s.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        assert_eq!(s.storage_class_name.as_deref(), Some("ceph-rbd"));
        assert_eq!(s.mount_options, Some(vec!["discard".to_string()]));
        assert_eq!(s.volume_mode.as_deref(), Some("Filesystem"));
        assert!(s.csi.is_none());
        let rbd = s.rbd.unwrap();
        assert_eq!(rbd.monitors, vec!["10.0.0.1:6789", "10.0.0.2:6789"]);
        assert_eq!(rbd.pool.as_deref(), Some("kube"));
        assert_eq!(rbd.image, image);
        assert_eq!(rbd.user.as_deref(), Some("kube"));
        assert_eq!(rbd.fs_type.as_deref(), Some("ext4"));
        assert_eq!(rbd.keyring, None);
        let sr = rbd.secret_ref.unwrap();
        assert_eq!(
            (sr.name.as_deref(), sr.namespace.as_deref()),
            (Some("ceph-kube-secret"), Some("apps")),
            "user secret defaults to the claim's namespace"
        );
    }

    #[test]
    fn retain_block_and_explicit_user_namespace() {
        let req = claim_request(&pvc(Some("1Gi"), &["ReadWriteOnce"], Some("Block"))).unwrap();
        let k = class(Some("Retain"), None);
        let p = params(&[("userSecretNamespace", "ceph"), ("fsType", "xfs")]);
        let pv = build_pv(&PvInput {
            claim: &req,
            class: &k,
            params: &p,
            source: Source::Rbd,
            image: "img",
            provisioner: "ceph.com/rbd",
        });
        assert_eq!(
            pv.metadata.finalizers, None,
            "Retain volumes are never deleted by us"
        );
        let s = pv.spec.unwrap();
        assert_eq!(
            s.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(s.volume_mode.as_deref(), Some("Block"));
        assert_eq!(s.mount_options, None);
        assert_eq!(s.capacity.unwrap()["storage"].0, "1Gi");
        let rbd = s.rbd.unwrap();
        assert_eq!(rbd.fs_type, None, "block volumes carry no fsType");
        assert_eq!(rbd.secret_ref.unwrap().namespace.as_deref(), Some("ceph"));
    }

    #[test]
    fn csi_pv() {
        let req = claim_request(&pvc(Some("2Gi"), &["ReadWriteOnce"], None)).unwrap();
        let k = class(None, None);
        let p = params(&[
            ("volumeFlavor", "csi"),
            ("clusterID", "ceph-1"),
            ("csiNodeStageSecretName", "csi-rbd"),
            ("csiNodeStageSecretNamespace", "ceph-csi"),
        ]);
        let vol = CsiVolume {
            cluster_id: ClusterId::Class("ceph-1".into()),
            node_stage_secret: p.csi_secret.clone().unwrap(),
        };
        let pv = build_pv(&PvInput {
            claim: &req,
            class: &k,
            params: &p,
            source: Source::Csi(&vol),
            image: "img-1",
            provisioner: "ceph.com/rbd",
        });
        assert!(
            !pv.metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(ANN_CLUSTER_ID_SOURCE),
            "clusterID from the class: no annotation"
        );
        let s = pv.spec.unwrap();
        assert!(s.rbd.is_none());
        let csi = s.csi.unwrap();
        assert_eq!(csi.driver, CSI_DRIVER);
        let mut rook = p.clone();
        rook.csi_driver = "rook-ceph.rbd.csi.ceph.com".into();
        let pv = build_pv(&PvInput {
            claim: &req,
            class: &k,
            params: &rook,
            source: Source::Csi(&vol),
            image: "img-1",
            provisioner: "ceph.com/rbd",
        });
        assert_eq!(
            pv.spec.unwrap().csi.unwrap().driver,
            "rook-ceph.rbd.csi.ceph.com"
        );
        assert_eq!(csi.volume_handle, "img-1");
        assert_eq!(csi.fs_type.as_deref(), Some("ext4"));
        let attrs = csi.volume_attributes.unwrap();
        assert_eq!(attrs["clusterID"], "ceph-1");
        assert_eq!(attrs["pool"], "kube");
        assert_eq!(attrs["staticVolume"], "true");
        assert_eq!(attrs["imageFeatures"], "layering");
        let sr = csi.node_stage_secret_ref.unwrap();
        assert_eq!(
            (sr.name.as_deref(), sr.namespace.as_deref()),
            (Some("csi-rbd"), Some("ceph-csi"))
        );
    }

    /// The walkthrough's class on a csi cluster: no clusterID (the fsid is used, and the PV
    /// says so), no csiNodeStageSecretName (the companion Secret is named).
    #[test]
    fn csi_pv_with_fsid_and_companion_secret() {
        let req = claim_request(&pvc(Some("500Mi"), &["ReadWriteOnce"], None)).unwrap();
        let k = class(None, None);
        let p = params(&[("userSecretNamespace", "default")]);
        assert_eq!((p.cluster_id.as_ref(), p.csi_secret.as_ref()), (None, None));
        let fsid = "3f1e2a57-4c1b-4b0e-9b33-0c8e1d2f6a10";
        let csi = CsiVolume {
            cluster_id: ClusterId::Fsid(fsid.into()),
            node_stage_secret: companion_secret(&p.user_secret("apps")),
        };
        let pv = build_pv(&PvInput {
            claim: &req,
            class: &k,
            params: &p,
            source: Source::Csi(&csi),
            image: "img-2",
            provisioner: "ceph.com/rbd",
        });
        assert_eq!(
            pv.metadata.annotations.as_ref().unwrap()[ANN_CLUSTER_ID_SOURCE],
            "ceph-fsid"
        );
        let c = pv.spec.unwrap().csi.unwrap();
        assert_eq!(c.volume_attributes.unwrap()["clusterID"], fsid);
        let sr = c.node_stage_secret_ref.unwrap();
        assert_eq!(
            (sr.namespace.as_deref(), sr.name.as_deref()),
            (Some("default"), Some("ceph-kube-secret-csi"))
        );
    }

    fn fields(names: &[&str]) -> SecretFields {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn sref(ns: &str, name: &str) -> SecretRef {
        SecretRef {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn node_stage_secret_is_chosen_in_order() {
        let user = sref("default", "ceph-kube-secret");
        let csi_user = fields(&["userID", "userKey"]);
        let rbd_user = fields(&["key"]);
        let facts = |class_secret, user_fields, target_fields| NodeStageFacts {
            class_name: "ceph-rbd",
            class_secret,
            user_secret: &user,
            user_fields,
            target_fields,
            user_id: "kube",
        };
        let class_secret = sref("ceph-csi", "csi-rbd-secret");
        // 1. The class's Secret, when complete, whatever the user Secret holds.
        assert_eq!(
            choose_node_stage(&facts(Some(&class_secret), &rbd_user, Some(&csi_user))),
            Ok(NodeStage::Class(class_secret.clone()))
        );
        // 2. Without one: the user Secret in ceph-csi's format (Rook's, ceph-csi's).
        assert_eq!(
            choose_node_stage(&facts(None, &csi_user, None)),
            Ok(NodeStage::UserSecret(user.clone()))
        );
        // 3. Else its companion <name>-csi next to it.
        assert_eq!(
            choose_node_stage(&facts(None, &rbd_user, Some(&csi_user))),
            Ok(NodeStage::Companion(sref(
                "default",
                "ceph-kube-secret-csi"
            )))
        );
        // A user Secret with both formats is used as it is.
        let both = fields(&["key", "userID", "userKey"]);
        assert_eq!(
            choose_node_stage(&facts(None, &both, None))
                .unwrap()
                .secret(),
            &user
        );
        // A class's incomplete Secret is not replaced by the user Secret behind its back.
        assert!(choose_node_stage(&facts(Some(&class_secret), &csi_user, None)).is_err());
    }

    #[test]
    fn the_walkthrough_secret_gets_the_command_that_creates_the_companion() {
        let user = sref("default", "ceph-kube-secret");
        let e = choose_node_stage(&NodeStageFacts {
            class_name: "ceph-rbd",
            class_secret: None,
            user_secret: &user,
            user_fields: &fields(&["key"]),
            target_fields: None,
            user_id: "kube",
        })
        .unwrap_err();
        let cmd = e.command.clone().expect("a command");
        assert_eq!(
            cmd,
            r#"kubectl -n default get secret ceph-kube-secret -o go-template='{"apiVersion":"v1","kind":"Secret","metadata":{"name":"ceph-kube-secret-csi","namespace":"default"},"type":"Opaque","stringData":{"userID":"kube"},"data":{"userKey":"{{.data.key}}"}}' | kubectl create -f -"#
        );
        let text = e.to_string();
        assert!(text.contains(&format!("`{cmd}`")), "{text}");
        assert!(
            text.contains("StorageClass ceph-rbd names none")
                && text.contains("holds only key")
                && text.contains("default/ceph-kube-secret-csi does not exist"),
            "{text}"
        );
        assert!(text.len() < 1000, "fits an event: {}", text.len());
        // With the longest names the tests use, too.
        let user = sref("default", "compat-1a2b3c4d-ceph-kube-secret");
        let long = choose_node_stage(&NodeStageFacts {
            class_name: "compat-1a2b3c4d-ceph-rbd",
            class_secret: None,
            user_secret: &user,
            user_fields: &fields(&["key"]),
            target_fields: None,
            user_id: "kube",
        })
        .unwrap_err()
        .to_string();
        assert!(long.len() < 900, "fits an event: {} {long}", long.len());
        // The template is valid JSON once the key is in place.
        let template = cmd.split('\'').nth(1).unwrap();
        let filled = template.replace("{{.data.key}}", "QVFEMw==");
        let v: serde_json::Value = serde_json::from_str(&filled).unwrap();
        assert_eq!(v["data"]["userKey"], "QVFEMw==");
        assert_eq!(v["stringData"]["userID"], "kube");
        assert_eq!(v["metadata"]["name"], "ceph-kube-secret-csi");
    }

    #[test]
    fn an_existing_incomplete_secret_is_patched_not_recreated() {
        let user = sref("apps", "ceph-user");
        let class_secret = sref("ceph-csi", "csi-rbd-secret");
        let e = choose_node_stage(&NodeStageFacts {
            class_name: "fast",
            class_secret: Some(&class_secret),
            user_secret: &user,
            user_fields: &fields(&["userKey"]),
            target_fields: Some(&fields(&["userID"])),
            user_id: "kube",
        })
        .unwrap_err();
        let cmd = e.command.clone().unwrap();
        assert_eq!(
            cmd,
            r#"kubectl -n apps get secret ceph-user -o go-template='{"stringData":{"userID":"kube"},"data":{"userKey":"{{.data.userKey}}"}}' | kubectl -n ceph-csi patch secret csi-rbd-secret --type merge --patch-file /dev/stdin"#
        );
        let text = e.to_string();
        assert!(
            text.contains("names ceph-csi/csi-rbd-secret (csiNodeStageSecretName), which exists but has no userKey"),
            "{text}"
        );
        assert!(text.contains("Complete it"), "{text}");
    }

    #[test]
    fn no_command_when_a_value_is_unsafe_in_a_shell() {
        let user = sref("default", "ceph-kube-secret");
        let target = sref("default", "x");
        assert!(copy_command(&user, "key", &target, false, "kube").is_some());
        assert!(copy_command(&user, "key", &target, false, "kube'; rm -rf ~ #").is_none());
        assert!(copy_command(&user, "key", &sref("default", "x y"), false, "kube").is_none());
        assert!(copy_command(&sref("$(id)", "s"), "key", &target, false, "kube").is_none());
        assert!(copy_command(&user, "key}}{{x", &target, false, "kube").is_none());
        // A user Secret without the key in any known field: no command, a way by hand.
        let e = choose_node_stage(&NodeStageFacts {
            class_name: "c",
            class_secret: None,
            user_secret: &user,
            user_fields: &fields(&["password"]),
            target_fields: None,
            user_id: "kube",
        })
        .unwrap_err();
        assert_eq!(e.command, None);
        assert!(e.to_string().contains("neither key nor userKey"), "{e}");
    }
}
