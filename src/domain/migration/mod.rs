//! Pure decisions of `migrate-to-csi`: which PVs move, what replaces them, what every step
//! re-checks, and where an interrupted run resumes. No I/O.
//!
//! Nothing a tenant can write is trusted: a claim counts only by its live identity
//! (namespace, name, uid, `spec.volumeName`). The old PV is saved in a ConfigMap in a namespace
//! only administrators write, named after the PV, and every step first checks that the live
//! claim, the live PV and that backup still agree ([`Identity`]).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ConfigMap, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::domain::params::{ClassParams, Flavor, SecretRef};
use crate::domain::reclaim::{ANN_LEGACY_IDENTITY, made_by_old_provisioner, spec_image};
use crate::domain::volume::{
    self, ANN_ADMIN_ID, ANN_ADMIN_SECRET, ANN_IMAGE, ANN_MONITORS, ANN_POOL, ANN_PROVISIONED_BY,
    CSI_DRIVER, FINALIZER,
};

/// On a claim: where earlier versions kept the old PV. Claims are writable by their owners, so
/// it is never read as a backup any more; a claim carrying it is only reported.
pub const ANN_BACKUP: &str = "rbd-provisioner.ceph.com/migration-backup";
/// On the claim: where the migration stands, for people (never read back); rewriting it also
/// wakes the PV binder, which otherwise rebinds a Lost claim only at its next resync (15 s).
pub const ANN_STEP: &str = "rbd-provisioner.ceph.com/migration-step";
/// Label of the backup ConfigMaps, so that a rerun finds them.
pub const BACKUP_LABEL: &str = "rbd-provisioner.ceph.com/migration-backup";
/// Key of the old PV's JSON in a backup ConfigMap.
pub const BACKUP_KEY: &str = "persistentVolume";
const BACKUP_PREFIX: &str = "rbd-provisioner-migration-";
/// `provisioner` (and `rbdProvisionerIdentity`) of the old external-storage provisioner.
pub const LEGACY_PROVISIONER: &str = "ceph.com/rbd";
/// Pods' generic ephemeral volumes get a claim named `<pod>-<volume>`, owned by the pod.
const POD_KIND: &str = "Pod";

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
) -> Result<CsiSettings, SettingsError> {
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
        cluster_id,
        node_stage_secret,
        admin,
    })
}

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
    Refuse(String),
    /// Start a migration of this rbd PV.
    Migrate(Origin, Identity),
}

fn ann<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The ConfigMap that holds the backup of PV `pv`: named after the PV, so that a backup can
/// only ever describe the PV of its name.
pub fn backup_name(pv: &str) -> Result<String, String> {
    let name = format!("{BACKUP_PREFIX}{pv}");
    if pv.is_empty() || name.len() > 253 {
        return Err(format!(
            "PersistentVolume name {pv:?} is too long to name its backup ConfigMap {BACKUP_PREFIX}<name> (at most 253 characters); rewrite it by hand"
        ));
    }
    Ok(name)
}

/// The backup of `pv`, to be created in `namespace`: the whole PV but its managedFields.
pub fn backup_config_map(pv: &PersistentVolume, namespace: &str) -> Result<ConfigMap, String> {
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
pub fn backup_of(cm: &ConfigMap) -> Result<PersistentVolume, String> {
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(BACKUP_KEY))
        .ok_or_else(|| format!("it has no data.{BACKUP_KEY}"))?;
    let pv: PersistentVolume =
        serde_json::from_str(text).map_err(|e| format!("data.{BACKUP_KEY} is not a PV: {e}"))?;
    let pv_name = pv.metadata.name.as_deref().unwrap_or_default();
    if backup_name(pv_name).ok().as_deref() != cm.metadata.name.as_deref() {
        return Err(format!(
            "it holds PersistentVolume {pv_name:?}, not the one it is named after"
        ));
    }
    Ok(pv)
}

/// The PV name a backup ConfigMap is named after.
pub fn backed_up_pv(cm: &ConfigMap) -> Option<&str> {
    cm.metadata.name.as_deref()?.strip_prefix(BACKUP_PREFIX)
}

fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref()?.claim_ref.as_ref()
}

/// `namespace/name` of the claim a PV is (or was) bound to.
pub fn claim_key(pv: &PersistentVolume) -> Option<(String, String)> {
    let r = claim_ref(pv)?;
    Some((r.namespace.clone()?, r.name.clone()?))
}

fn csi_handle(pv: &PersistentVolume) -> Option<&str> {
    let csi = pv.spec.as_ref()?.csi.as_ref()?;
    (csi.driver == CSI_DRIVER).then_some(csi.volume_handle.as_str())
}

/// What one migration is about, taken from the old rbd PV (live, or its admin-only backup):
/// the PV, the claim it is bound to (by uid) and its image. Every step re-checks the live
/// claim and PV against it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub pv: String,
    /// The old rbd PV object's uid.
    pub pv_uid: Option<String>,
    pub claim_namespace: String,
    pub claim: String,
    pub claim_uid: String,
    pub pool: String,
    pub image: String,
}

impl Identity {
    /// From an rbd PV bound to a claim by uid. For volumes this provisioner made, the image
    /// must be the one named after the PV (`pvc-<uid>` → `kubernetes-dynamic-pvc-<uid>`).
    pub fn of(pv: &PersistentVolume) -> Result<Identity, String> {
        let name = pv
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or("the PersistentVolume has no name")?;
        if pv.spec.as_ref().and_then(|s| s.rbd.as_ref()).is_none() {
            return Err(format!("PersistentVolume {name} has no spec.rbd"));
        }
        let (pool, image) =
            spec_image(pv).ok_or_else(|| format!("PersistentVolume {name} names no image"))?;
        let r = claim_ref(pv).ok_or_else(|| format!("PersistentVolume {name} has no claimRef"))?;
        let field = |v: &Option<String>, what: &str| {
            v.clone()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("the claimRef of PersistentVolume {name} has no {what}"))
        };
        let id = Identity {
            claim_namespace: field(&r.namespace, "namespace")?,
            claim: field(&r.name, "name")?,
            claim_uid: field(&r.uid, "uid")?,
            pv_uid: pv.metadata.uid.clone(),
            pv: name,
            pool,
            image,
        };
        if !made_by_old_provisioner(pv) {
            let derived = id.pv.strip_prefix("pvc-").map(volume::image_name);
            if derived.as_deref() != Some(id.image.as_str()) {
                return Err(format!(
                    "PersistentVolume {} names image {}/{}, but a volume this provisioner made is named after its PV ({}): the PV was copied or edited; rewrite it by hand if it is right",
                    id.pv,
                    id.pool,
                    id.image,
                    derived
                        .unwrap_or_else(|| "kubernetes-dynamic-pvc-<uid> for PV pvc-<uid>".into())
                ));
            }
        }
        Ok(id)
    }

    /// `ns/name`
    pub fn claim_label(&self) -> String {
        format!("{}/{}", self.claim_namespace, self.claim)
    }

    fn claim_ref_matches(&self, pv: &PersistentVolume) -> bool {
        claim_ref(pv).is_some_and(|r| {
            r.namespace.as_deref() == Some(self.claim_namespace.as_str())
                && r.name.as_deref() == Some(self.claim.as_str())
                && r.uid.as_deref() == Some(self.claim_uid.as_str())
        })
    }

    /// The live claim must be the one the PV is bound to: same namespace, name and uid, and
    /// its `spec.volumeName` must name the PV (a Lost claim keeps it).
    pub fn check_claim(&self, claim: Option<&PersistentVolumeClaim>) -> Result<(), String> {
        let c = self.claim_label();
        let Some(claim) = claim else {
            return Err(format!(
                "claim {c} (uid {}) no longer exists",
                self.claim_uid
            ));
        };
        let m = &claim.metadata;
        if m.namespace.as_deref() != Some(self.claim_namespace.as_str())
            || m.name.as_deref() != Some(self.claim.as_str())
        {
            return Err(format!(
                "claim {}/{} is not claim {c}",
                m.namespace.as_deref().unwrap_or_default(),
                m.name.as_deref().unwrap_or_default()
            ));
        }
        if m.uid.as_deref() != Some(self.claim_uid.as_str()) {
            return Err(format!(
                "claim {c} has uid {}, but PersistentVolume {} belongs to the claim of uid {} (the claim was recreated)",
                m.uid.as_deref().unwrap_or("none"),
                self.pv,
                self.claim_uid
            ));
        }
        let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        if volume_name != Some(self.pv.as_str()) {
            return Err(format!(
                "claim {c} names volume {:?}, not PersistentVolume {}",
                volume_name.unwrap_or_default(),
                self.pv
            ));
        }
        Ok(())
    }

    /// Where the migration stands by the live PV of that name: the same rbd PV object still
    /// there, gone, or replaced by the csi PV of the same image and claim. Anything else is
    /// not ours to touch.
    pub fn locate(&self, live: Option<&PersistentVolume>) -> Result<Step, String> {
        let Some(pv) = live else {
            return Ok(Step::CreateNew);
        };
        let image = Some((self.pool.clone(), self.image.clone()));
        let changed = |what: String| {
            Err(format!(
                "PersistentVolume {} {what}, not rbd image {}/{} of claim {} (uid {})",
                self.pv,
                self.pool,
                self.image,
                self.claim_label(),
                self.claim_uid
            ))
        };
        if !self.claim_ref_matches(pv) {
            let r = claim_ref(pv);
            return changed(format!(
                "is bound to claim {}/{} (uid {})",
                r.and_then(|r| r.namespace.as_deref()).unwrap_or_default(),
                r.and_then(|r| r.name.as_deref()).unwrap_or_default(),
                r.and_then(|r| r.uid.as_deref()).unwrap_or("none")
            ));
        }
        if spec_image(pv) != image {
            let (p, i) = spec_image(pv).unwrap_or_default();
            return changed(format!("names image {p}/{i}"));
        }
        let spec = pv.spec.as_ref();
        if spec.and_then(|s| s.rbd.as_ref()).is_some() {
            if self.pv_uid.is_some() && pv.metadata.uid != self.pv_uid {
                return changed("was recreated since (another object uid)".into());
            }
            return Ok(Step::DeleteOld);
        }
        if csi_handle(pv) == Some(self.image.as_str()) {
            return Ok(Step::AwaitBound);
        }
        changed("is neither its rbd volume nor its csi volume".into())
    }
}

/// Which rbd PVs of the class are ours or the old provisioner's.
pub fn origin(pv: &PersistentVolume, provisioner: &str) -> Result<Origin, String> {
    let by = ann(&pv.metadata, ANN_PROVISIONED_BY);
    let identity = ann(&pv.metadata, ANN_LEGACY_IDENTITY);
    match (by, identity) {
        (Some(LEGACY_PROVISIONER), Some(LEGACY_PROVISIONER)) => Ok(Origin::Legacy),
        (Some(b), _) if b == provisioner => Ok(Origin::Ours),
        (Some(b), _) => Err(format!(
            "provisioned by {b}, neither by {provisioner} nor by the old {LEGACY_PROVISIONER} provisioner (use --provisioner-name if it is ours under another name)"
        )),
        (None, _) => Err(format!(
            "not dynamically provisioned (no {ANN_PROVISIONED_BY} annotation); only volumes of {provisioner} or of the old {LEGACY_PROVISIONER} provisioner are migrated"
        )),
    }
}

/// Decides about one live PV of the class that has no backup, and the claim its claimRef names
/// (looked up by namespace/name; `None` when there is none).
pub fn plan(
    pv: &PersistentVolume,
    claim: Option<&PersistentVolumeClaim>,
    provisioner: &str,
) -> Plan {
    if csi_handle(pv).is_some() {
        return Plan::Skip("already a ceph-csi volume".into());
    }
    if pv.spec.as_ref().and_then(|s| s.rbd.as_ref()).is_none() {
        return Plan::Skip("not an rbd volume (no spec.rbd)".into());
    }
    let origin = match origin(pv, provisioner) {
        Ok(o) => o,
        Err(why) => return Plan::Skip(why),
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

/// The static ceph-csi PV that replaces an rbd PV: same name, capacity, access modes, reclaim
/// policy, claim (with its uid, so the binder rebinds at once), class, mount options, volume
/// mode, labels and annotations; plus what our delete path needs to remove the image later.
pub fn csi_pv(old: &PersistentVolume, s: &CsiSettings) -> Result<PersistentVolume, String> {
    let spec = old.spec.clone().ok_or("the PersistentVolume has no spec")?;
    let rbd = spec
        .rbd
        .clone()
        .ok_or("the PersistentVolume has no spec.rbd")?;
    let (pool, image) = spec_image(old).ok_or("spec.rbd.image is empty")?;
    let name = old
        .metadata
        .name
        .clone()
        .ok_or("the PersistentVolume has no name")?;
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
        driver: CSI_DRIVER.into(),
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
    let text = ann(&claim.metadata, ANN_BACKUP)?;
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

/// One line's description of the change, for `--dry-run`.
pub fn describe(new: &PersistentVolume, s: &CsiSettings) -> String {
    let has_admin = new
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANN_ADMIN_SECRET));
    format!(
        "spec.rbd → spec.csi ({CSI_DRIVER}, clusterID {}, node-stage secret {}){}",
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
