//! The backup of an old PV: a ConfigMap named after it, in a namespace only administrators
//! write; the resume point of an interrupted migration.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Label of the backup ConfigMaps, so that a rerun finds them.
pub const BACKUP_LABEL: &str = "rbd-provisioner.ceph.com/migration-backup";
/// Key of the old PV's JSON in a backup ConfigMap.
pub const BACKUP_KEY: &str = "persistentVolume";
const BACKUP_PREFIX: &str = "rbd-provisioner-migration-";

/// Why a PV cannot be backed up, or a backup ConfigMap cannot be used (then "it" is the
/// ConfigMap, which the caller names).
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(
        "PersistentVolume name {pv:?} is too long to name its backup ConfigMap {BACKUP_PREFIX}<name> (at most 253 characters); rewrite it by hand"
    )]
    NameTooLong { pv: String },
    #[error("it has no data.{BACKUP_KEY}")]
    NoData,
    #[error("data.{BACKUP_KEY} is not a PV: {cause}")]
    NotAPv { cause: serde_json::Error },
    #[error("it holds PersistentVolume {held:?}, not the one it is named after")]
    OtherPv { held: String },
}

/// The ConfigMap that holds the backup of PV `pv`: named after the PV, so that a backup can
/// only ever describe the PV of its name.
pub fn backup_name(pv: &str) -> Result<String, BackupError> {
    let name = format!("{BACKUP_PREFIX}{pv}");
    if pv.is_empty() || name.len() > 253 {
        return Err(BackupError::NameTooLong { pv: pv.to_string() });
    }
    Ok(name)
}

/// The backup of `pv`, to be created in `namespace`: the whole PV but its managedFields.
pub fn backup_config_map(pv: &PersistentVolume, namespace: &str) -> Result<ConfigMap, BackupError> {
    let name = backup_name(pv.metadata.name.as_deref().unwrap_or_default())?;
    let mut pv = pv.clone();
    pv.metadata.managed_fields = None;
    let json = serde_json::to_string(&pv).expect("a PersistentVolume serializes");
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(BACKUP_LABEL.into(), "true".into())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(BACKUP_KEY.into(), json)])),
        ..Default::default()
    })
}

/// The old PV a backup ConfigMap holds. `Err` when it is unreadable, or when it describes a PV
/// other than the one it is named after.
pub fn backup_of(cm: &ConfigMap) -> Result<PersistentVolume, BackupError> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(BACKUP_KEY))
        .ok_or(BackupError::NoData)?;
    let pv: PersistentVolume =
        serde_json::from_str(text).map_err(|cause| BackupError::NotAPv { cause })?;
    let pv_name = pv.metadata.name.as_deref().unwrap_or_default();
    if backup_name(pv_name).ok().as_deref() != cm.metadata.name.as_deref() {
        return Err(BackupError::OtherPv {
            held: pv_name.to_string(),
        });
    }
    Ok(pv)
}

/// The PV name a backup ConfigMap is named after.
pub fn backed_up_pv(cm: &ConfigMap) -> Option<&str> {
    cm.metadata.name.as_deref()?.strip_prefix(BACKUP_PREFIX)
}
