//! Pure decisions of `migrate-to-csi`: which PVs move, what replaces them, what every step
//! re-checks, and where an interrupted run resumes. No I/O.
//!
//! Nothing a tenant can write is trusted: a claim counts only by its live identity
//! (namespace, name, uid, `spec.volumeName`). The old PV is saved in a ConfigMap in a namespace
//! only administrators write, named after the PV, and every step first checks that the live
//! claim, the live PV and that backup still agree ([`Identity`]).

mod backup;
mod csi;
mod identity;

use std::fmt;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};

use crate::meta::annotation;
use crate::reclaim::ANN_LEGACY_IDENTITY;
use crate::volume::ANN_PROVISIONED_BY;

pub use backup::{
    BACKUP_KEY, BACKUP_LABEL, BackupError, backed_up_pv, backup_config_map, backup_name, backup_of,
};
pub use csi::{
    Admin, CsiPvError, CsiSettings, DriverSource, SettingsError, class_note, csi_pv, csi_settings,
    describe, missing_driver_fix, parse_secret_arg,
};
pub use identity::{Identity, IdentityError, Mismatch, PvChange, claim_key};
use identity::{claim_ref, csi_source};

/// On a claim: where earlier versions kept the old PV. Claims are writable by their owners, so
/// it is never read as a backup any more; a claim carrying it is only reported.
pub const ANN_BACKUP: &str = "rbd-provisioner.ceph.com/migration-backup";
/// On the claim: where the migration stands, for people (never read back); rewriting it also
/// wakes the PV binder, which otherwise rebinds a Lost claim only at its next resync (15 s).
pub const ANN_STEP: &str = "rbd-provisioner.ceph.com/migration-step";
/// `provisioner` (and `rbdProvisionerIdentity`) of the old external-storage provisioner.
pub const LEGACY_PROVISIONER: &str = "ceph.com/rbd";
/// Pods' generic ephemeral volumes get a claim named `<pod>-<volume>`, owned by the pod.
const POD_KIND: &str = "Pod";

/// Who made an rbd PV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// This provisioner.
    Ours,
    /// The retired external-storage `ceph.com/rbd` provisioner.
    Legacy,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Ours => "provisioned by rbd-provisioner",
            Origin::Legacy => "provisioned by the old external-storage provisioner",
        })
    }
}

/// Where a migration stands, judged from the live PV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The old rbd PV is still there (perhaps already being deleted).
    DeleteOld,
    /// The old PV is gone; the csi PV is not there yet.
    CreateNew,
    /// The csi PV exists; wait for the claim to be Bound to it, then drop the backup.
    AwaitBound,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::DeleteOld => "the backup is saved, the old rbd PV is still there",
            Step::CreateNew => "the old rbd PV is gone, the csi PV is not created yet",
            Step::AwaitBound => "the csi PV exists, the backup is not removed yet",
        })
    }
}

/// What to do with one PV of the class that has no backup.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    Skip(String),
    Refuse(IdentityError),
    /// Start a migration of this rbd PV.
    Migrate(Origin, Identity),
}

/// Why an rbd PV is neither ours nor the old provisioner's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForeignVolume {
    #[error(
        "provisioned by {by}, neither by {provisioner} nor by the old {LEGACY_PROVISIONER} provisioner (use --provisioner-name if it is ours under another name)"
    )]
    OtherProvisioner { by: String, provisioner: String },
    #[error(
        "not dynamically provisioned (no {ANN_PROVISIONED_BY} annotation); only volumes of {provisioner} or of the old {LEGACY_PROVISIONER} provisioner are migrated"
    )]
    Static { provisioner: String },
}

/// Which rbd PVs of the class are ours or the old provisioner's.
pub fn origin(pv: &PersistentVolume, provisioner: &str) -> Result<Origin, ForeignVolume> {
    let by = annotation(&pv.metadata, ANN_PROVISIONED_BY);
    let identity = annotation(&pv.metadata, ANN_LEGACY_IDENTITY);
    let provisioner = provisioner.to_string();
    match (by, identity) {
        (Some(LEGACY_PROVISIONER), Some(LEGACY_PROVISIONER)) => Ok(Origin::Legacy),
        (Some(b), _) if b == provisioner => Ok(Origin::Ours),
        (Some(b), _) => Err(ForeignVolume::OtherProvisioner {
            by: b.to_string(),
            provisioner,
        }),
        (None, _) => Err(ForeignVolume::Static { provisioner }),
    }
}

/// Decides about one live PV of the class that has no backup, and the claim its claimRef names
/// (looked up by namespace/name; `None` when there is none).
pub fn plan(
    pv: &PersistentVolume,
    claim: Option<&PersistentVolumeClaim>,
    provisioner: &str,
) -> Plan {
    if let Some((driver, _)) = csi_source(pv) {
        return Plan::Skip(format!("already a csi volume (driver {driver})"));
    }
    if pv.spec.as_ref().and_then(|s| s.rbd.as_ref()).is_none() {
        return Plan::Skip("not an rbd volume (no spec.rbd)".into());
    }
    let origin = match origin(pv, provisioner) {
        Ok(o) => o,
        Err(why) => return Plan::Skip(why.to_string()),
    };
    if pv.metadata.deletion_timestamp.is_some() {
        return Plan::Skip("the PersistentVolume is being deleted".into());
    }
    let phase = pv
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".into());
    let Some((ns, name)) = claim_key(pv).filter(|_| {
        claim_ref(pv)
            .and_then(|r| r.uid.as_deref())
            .is_some_and(|u| !u.is_empty())
    }) else {
        return Plan::Skip(format!(
            "not bound to a claim (phase {phase}); only bound volumes are migrated: bind it to a claim first, or rewrite it by hand"
        ));
    };
    let id = match Identity::of(pv) {
        Ok(id) => id,
        Err(why) => return Plan::Refuse(why),
    };
    let Some(claim) = claim.filter(|c| c.metadata.uid.as_deref() == Some(id.claim_uid.as_str()))
    else {
        return Plan::Skip(format!(
            "its claim {ns}/{name} no longer exists (phase {phase}); only bound volumes are migrated"
        ));
    };
    let claim_phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    if id.check_claim(Some(claim)).is_err() || claim_phase != Some("Bound") {
        return Plan::Skip(format!(
            "claim {ns}/{name} is not Bound to it (phase {}); rerun once it is",
            claim_phase.unwrap_or("unknown")
        ));
    }
    Plan::Migrate(origin, id)
}

/// Pods that still use a claim, among the pods of its namespace: every pod that has not
/// finished and names it directly, or whose generic ephemeral volume it is (the claim
/// `<pod>-<volume>` of a pod volume with `ephemeral`, or a claim owned by the pod).
pub fn pods_using(pods: &[Pod], claim: &PersistentVolumeClaim) -> Vec<String> {
    let claim_name = claim.metadata.name.as_deref().unwrap_or_default();
    let owners: Vec<&str> = claim
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.kind == POD_KIND)
        .map(|o| o.uid.as_str())
        .collect();
    let mut names: Vec<String> = pods
        .iter()
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|p| {
            let pod = p.metadata.name.as_deref().unwrap_or_default();
            let owns = p
                .metadata
                .uid
                .as_deref()
                .is_some_and(|u| owners.contains(&u));
            owns || p.spec.as_ref().is_some_and(|s| {
                s.volumes.iter().flatten().any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim_name)
                        || (v.ephemeral.is_some() && format!("{pod}-{}", v.name) == claim_name)
                })
            })
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    names
}

/// Why a claim carrying the old backup annotation is ignored, when it concerns this class
/// (the claim's class, or the class of the PV the annotation describes).
pub fn stale_claim_note(claim: &PersistentVolumeClaim, class: &str) -> Option<String> {
    let text = annotation(&claim.metadata, ANN_BACKUP)?;
    let claim_class = claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref());
    let named: Option<PersistentVolume> = serde_json::from_str(text).ok();
    let named_class = named
        .as_ref()
        .and_then(|p| p.spec.as_ref()?.storage_class_name.as_deref());
    if claim_class != Some(class) && named_class != Some(class) {
        return None;
    }
    let pv = named
        .as_ref()
        .and_then(|p| p.metadata.name.as_deref())
        .unwrap_or("?");
    Some(format!(
        "not used: its annotation {ANN_BACKUP} (naming PersistentVolume {pv}) can be written by the claim's owner, so it is ignored; backups now live in ConfigMaps only administrators write. If an older migrate-to-csi was interrupted on this claim, compare the annotation with the PV by hand; otherwise remove it"
    ))
}

#[cfg(test)]
mod tests;
