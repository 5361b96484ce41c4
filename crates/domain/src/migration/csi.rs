//! What the ceph-csi PV that replaces an rbd PV is written with, and the PV itself.

use k8s_openapi::api::core::v1::{CSIPersistentVolumeSource, ObjectReference, PersistentVolume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::params::{self, ClassParams, DEFAULT_CSI_DRIVER, Flavor, SecretRef};
use crate::reclaim::spec_image;
use crate::volume::{
    self, ANN_ADMIN_ID, ANN_ADMIN_SECRET, ANN_IMAGE, ANN_MONITORS, ANN_POOL, FINALIZER,
};

/// Why the csi settings of a migration are incomplete.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "no ceph-csi cluster ID: pass --cluster-id (the clusterID of this Ceph cluster in ceph-csi's config) or set parameter clusterID on StorageClass {class}"
    )]
    NoClusterId { class: String },

    #[error(
        "no ceph-csi node-stage Secret: pass --node-stage-secret NAMESPACE/NAME or set parameters csiNodeStageSecretName (and csiNodeStageSecretNamespace) on StorageClass {class}"
    )]
    NoNodeStageSecret { class: String },

    #[error("--node-stage-secret {0:?} is not NAMESPACE/NAME")]
    SecretArg(String),

    #[error(
        "--csi-driver {0:?} is not a CSI driver name: give the name kubectl get csidrivers shows (a DNS name of at most 63 characters)"
    )]
    DriverArg(String),
}

/// Where the csi driver name of a migration comes from, for the messages that say what to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverSource {
    /// `--csi-driver`.
    Flag,
    /// The class's `csiDriver` parameter (ceph-csi's default when it sets none).
    Class,
    /// No flag and no class: ceph-csi's default.
    Default,
}

/// Admin credentials recorded on the new PV so that the image can be deleted without the class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    pub id: String,
    pub secret: SecretRef,
}

/// What the ceph-csi PVs are written with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsiSettings {
    /// The CSI driver that mounts them (`csiDriver`; Rook's is `rook-ceph.rbd.csi.ceph.com`).
    pub driver: String,
    pub driver_source: DriverSource,
    pub cluster_id: String,
    /// A Secret in ceph-csi's format (`userID`, `userKey`).
    pub node_stage_secret: SecretRef,
    /// From the class (its `adminId` and admin Secret).
    pub admin: Option<Admin>,
}

/// `NAMESPACE/NAME` → a Secret reference.
pub fn parse_secret_arg(s: &str) -> Result<SecretRef, SettingsError> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(SecretRef {
                namespace: ns.to_string(),
                name: name.to_string(),
            })
        }
        _ => Err(SettingsError::SecretArg(s.to_string())),
    }
}

/// The csi settings: flags first, then the class's parameters (parsed as the controllers
/// parse them); admin credentials from the class.
pub fn csi_settings(
    class_name: &str,
    class: Option<&ClassParams>,
    cluster_id: Option<&str>,
    node_stage_secret: Option<&str>,
    driver: Option<&str>,
) -> Result<CsiSettings, SettingsError> {
    let (driver, driver_source) = match driver.map(str::trim) {
        Some(d) if params::valid_driver_name(d) => (d.to_string(), DriverSource::Flag),
        Some(d) => return Err(SettingsError::DriverArg(d.to_string())),
        // The class's parser puts the default in when the class names none.
        None => match class {
            Some(p) => (p.csi_driver.clone(), DriverSource::Class),
            None => (DEFAULT_CSI_DRIVER.to_string(), DriverSource::Default),
        },
    };
    let cluster_id = cluster_id
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .or_else(|| class.and_then(|p| p.cluster_id.clone()))
        .ok_or_else(|| SettingsError::NoClusterId {
            class: class_name.to_string(),
        })?;
    let node_stage_secret = match node_stage_secret {
        Some(s) => parse_secret_arg(s.trim())?,
        None => class.and_then(|p| p.csi_secret.clone()).ok_or_else(|| {
            SettingsError::NoNodeStageSecret {
                class: class_name.to_string(),
            }
        })?,
    };
    let admin = class.map(|p| Admin {
        id: p.admin_id.clone(),
        secret: p.admin_secret.clone(),
    });
    Ok(CsiSettings {
        driver,
        driver_source,
        cluster_id,
        node_stage_secret,
        admin,
    })
}

/// What to do when the cluster has no CSIDriver object of the settings' driver name.
pub fn missing_driver_fix(s: &CsiSettings, class: &str) -> String {
    let install = format!(
        "Install ceph-csi's rbd plugin, which registers its CSIDriver (Rook names it rook-ceph.rbd.csi.ceph.com, ceph-csi's own charts {DEFAULT_CSI_DRIVER})"
    );
    let other = "the name kubectl get csidrivers shows";
    match s.driver_source {
        DriverSource::Flag => format!("{install}, or pass {other} as --csi-driver"),
        DriverSource::Class => format!(
            "{} is the csiDriver of StorageClass {class} ({DEFAULT_CSI_DRIVER} when it sets none). {install}; if it is installed under another name, recreate StorageClass {class} (parameters cannot be edited) with csiDriver set to {other}, or pass that name as --csi-driver",
            s.driver
        ),
        DriverSource::Default => {
            format!(
                "{install}; if it is installed under another name, pass {other} as --csi-driver"
            )
        }
    }
}

/// What the PV that a csi PV is built from lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsiPvError {
    #[error("the PersistentVolume has no spec")]
    NoSpec,
    #[error("the PersistentVolume has no spec.rbd")]
    NotRbd,
    #[error("spec.rbd.image is empty")]
    NoImage,
    #[error("the PersistentVolume has no name")]
    NoName,
}

/// The static ceph-csi PV that replaces an rbd PV: same name, capacity, access modes, reclaim
/// policy, claim (with its uid, so the binder rebinds at once), class, mount options, volume
/// mode, labels and annotations; plus what our delete path needs to remove the image later.
pub fn csi_pv(old: &PersistentVolume, s: &CsiSettings) -> Result<PersistentVolume, CsiPvError> {
    let spec = old.spec.clone().ok_or(CsiPvError::NoSpec)?;
    let rbd = spec.rbd.clone().ok_or(CsiPvError::NotRbd)?;
    let (pool, image) = spec_image(old).ok_or(CsiPvError::NoImage)?;
    let name = old.metadata.name.clone().ok_or(CsiPvError::NoName)?;
    let block = spec.volume_mode.as_deref() == Some("Block");
    let policy = spec
        .persistent_volume_reclaim_policy
        .clone()
        .unwrap_or_else(|| "Retain".into());

    let mut annotations = old.metadata.annotations.clone().unwrap_or_default();
    let mut fill = |k: &str, v: String| {
        if !v.is_empty() {
            annotations.entry(k.to_string()).or_insert(v);
        }
    };
    fill(ANN_MONITORS, rbd.monitors.join(","));
    fill(ANN_POOL, pool.clone());
    fill(ANN_IMAGE, image.clone());
    if let Some(a) = &s.admin {
        // Both or neither: an id without its Secret (or the reverse) would mislead deletion.
        if !annotations.contains_key(ANN_ADMIN_SECRET) {
            annotations.insert(ANN_ADMIN_ID.into(), a.id.clone());
            annotations.insert(ANN_ADMIN_SECRET.into(), a.secret.to_string());
        }
    }
    let claim_ref = spec.claim_ref.clone().map(|r| ObjectReference {
        api_version: Some(r.api_version.unwrap_or_else(|| "v1".into())),
        kind: Some(r.kind.unwrap_or_else(|| "PersistentVolumeClaim".into())),
        namespace: r.namespace,
        name: r.name,
        uid: r.uid,
        ..Default::default()
    });
    let csi = CSIPersistentVolumeSource {
        driver: s.driver.clone(),
        fs_type: (!block).then(|| {
            rbd.fs_type
                .clone()
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| "ext4".into())
        }),
        read_only: rbd.read_only.filter(|r| *r),
        volume_attributes: Some(volume::csi_volume_attributes(&s.cluster_id, &pool)),
        node_stage_secret_ref: Some(volume::secret_reference(&s.node_stage_secret)),
        volume_handle: image,
        ..Default::default()
    };
    let new_spec = k8s_openapi::api::core::v1::PersistentVolumeSpec {
        access_modes: spec.access_modes,
        capacity: spec.capacity,
        claim_ref,
        persistent_volume_reclaim_policy: Some(policy.clone()),
        storage_class_name: spec.storage_class_name,
        mount_options: spec.mount_options,
        volume_mode: spec.volume_mode,
        node_affinity: spec.node_affinity,
        csi: Some(csi),
        ..Default::default()
    };
    Ok(PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name),
            labels: old.metadata.labels.clone(),
            annotations: Some(annotations),
            finalizers: (policy == "Delete").then(|| vec![FINALIZER.to_string()]),
            ..Default::default()
        },
        spec: Some(new_spec),
        status: None,
    })
}

/// One line's description of the change, for `--dry-run`.
pub fn describe(new: &PersistentVolume, s: &CsiSettings) -> String {
    let has_admin = new
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANN_ADMIN_SECRET));
    format!(
        "spec.rbd → spec.csi ({}, clusterID {}, node-stage secret {}){}",
        s.driver,
        s.cluster_id,
        s.node_stage_secret,
        if has_admin {
            ""
        } else {
            "; no admin Secret known: the image will not be deleted with the PV"
        }
    )
}

/// What new claims of the class will get, when that is not a ceph-csi volume everywhere.
pub fn class_note(name: &str, class: Option<&ClassParams>) -> Option<String> {
    let fix = "recreate it (StorageClass parameters cannot be edited) with volumeFlavor: csi, clusterID and csiNodeStageSecretName";
    match class?.flavor {
        Some(Flavor::Csi) => None,
        Some(Flavor::Rbd) => Some(format!(
            "StorageClass {name} sets volumeFlavor: rbd, so new claims still get spec.rbd volumes; {fix}"
        )),
        None => Some(format!(
            "StorageClass {name} sets no volumeFlavor: new claims get spec.rbd volumes while the provisioner runs on Kubernetes < 1.31; {fix}"
        )),
    }
}

#[cfg(test)]
mod tests;
