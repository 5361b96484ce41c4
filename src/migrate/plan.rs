//! Pure decisions of `migrate-to-csi`: which PVs move, what replaces them, and where an
//! interrupted run resumes. No I/O.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
    SecretReference,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::params::SecretRef;
use crate::reclaim::ANN_LEGACY_IDENTITY;
use crate::volume::{
    ANN_ADMIN_ID, ANN_ADMIN_SECRET, ANN_IMAGE, ANN_MONITORS, ANN_POOL, ANN_PROVISIONED_BY,
    CSI_DRIVER, FINALIZER,
};

use super::MigrateError;

/// On the claim: the old PV as JSON, written before the PV is touched. While it is there, a
/// migration of that claim's volume is under way (or was interrupted) and a rerun resumes it.
pub const ANN_BACKUP: &str = "rbd-provisioner.ceph.com/migration-backup";
/// On the claim: where the migration stands, for people; rewriting it also wakes the PV
/// binder, which otherwise rebinds a Lost claim only at its next resync (15 s by default).
pub const ANN_STEP: &str = "rbd-provisioner.ceph.com/migration-step";
/// `provisioner` (and `rbdProvisionerIdentity`) of the old external-storage provisioner.
pub const LEGACY_PROVISIONER: &str = "ceph.com/rbd";
/// The pool the in-tree plugin and the old provisioner use when `spec.rbd.pool` is unset.
const DEFAULT_POOL: &str = "rbd";

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
    /// From the class, when it names an admin Secret.
    pub admin: Option<Admin>,
}

fn class_param<'a>(class: Option<&'a StorageClass>, key: &str) -> Option<&'a str> {
    class?
        .parameters
        .as_ref()?
        .iter()
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// `NAMESPACE/NAME` → a Secret reference.
pub fn parse_secret_arg(s: &str) -> Result<SecretRef, MigrateError> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(SecretRef {
                namespace: ns.to_string(),
                name: name.to_string(),
            })
        }
        _ => Err(MigrateError::SecretArg(s.to_string())),
    }
}

/// The csi settings: flags first, then the class's `clusterID` / `csiNodeStageSecretName` /
/// `csiNodeStageSecretNamespace` (default "default"); admin credentials from the class.
pub fn csi_settings(
    class_name: &str,
    class: Option<&StorageClass>,
    cluster_id: Option<&str>,
    node_stage_secret: Option<&str>,
) -> Result<CsiSettings, MigrateError> {
    let cluster_id = cluster_id
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .or_else(|| class_param(class, "clusterID"))
        .ok_or_else(|| MigrateError::NoClusterId {
            class: class_name.to_string(),
        })?
        .to_string();
    let node_stage_secret = match node_stage_secret {
        Some(s) => parse_secret_arg(s.trim())?,
        None => match class_param(class, "csiNodeStageSecretName") {
            Some(name) => SecretRef {
                namespace: class_param(class, "csiNodeStageSecretNamespace")
                    .unwrap_or("default")
                    .to_string(),
                name: name.to_string(),
            },
            None => {
                return Err(MigrateError::NoNodeStageSecret {
                    class: class_name.to_string(),
                });
            }
        },
    };
    let admin = class_param(class, "adminSecretName").map(|name| Admin {
        id: class_param(class, "adminId").unwrap_or("admin").to_string(),
        secret: SecretRef {
            namespace: class_param(class, "adminSecretNamespace")
                .unwrap_or("default")
                .to_string(),
            name: name.to_string(),
        },
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

/// Where an interrupted migration goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The backup is saved; the old rbd PV is still there (perhaps already being deleted).
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
            Step::AwaitBound => "the csi PV exists, the claim is not cleaned up yet",
        })
    }
}

/// What to do with one PV (or one claim holding a backup).
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    Skip(String),
    Refuse(String),
    /// Start a migration of this rbd PV.
    Migrate(Origin),
    /// Finish one; the new PV is built from `backup`, the old PV as it was.
    Resume {
        step: Step,
        backup: Box<PersistentVolume>,
    },
}

fn ann<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The old PV saved on a claim, if any. `Err` when the annotation is not a PV.
pub fn backup_of(claim: &PersistentVolumeClaim) -> Option<Result<PersistentVolume, String>> {
    let text = ann(&claim.metadata, ANN_BACKUP)?;
    Some(serde_json::from_str::<PersistentVolume>(text).map_err(|e| e.to_string()))
}

/// The annotation value saved before the PV is touched: the whole PV but its managedFields.
pub fn backup_json(pv: &PersistentVolume) -> String {
    let mut pv = pv.clone();
    pv.metadata.managed_fields = None;
    serde_json::to_string(&pv).expect("a PersistentVolume serializes")
}

fn csi_handle(pv: &PersistentVolume) -> Option<&str> {
    let csi = pv.spec.as_ref()?.csi.as_ref()?;
    (csi.driver == CSI_DRIVER).then_some(csi.volume_handle.as_str())
}

/// Pool and image of an rbd PV.
pub fn rbd_image(pv: &PersistentVolume) -> Option<(String, String)> {
    let rbd = pv.spec.as_ref()?.rbd.as_ref()?;
    Some((
        rbd.pool
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_POOL.into()),
        rbd.image.clone(),
    ))
}

/// Pool and image of an rbd PV or of one of our csi PVs.
pub fn image_of(pv: &PersistentVolume) -> Option<(String, String)> {
    rbd_image(pv).or_else(|| {
        let csi = pv.spec.as_ref()?.csi.as_ref()?;
        let pool = csi.volume_attributes.as_ref()?.get("pool")?.clone();
        csi_handle(pv).map(|h| (pool, h.to_string()))
    })
}

fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref()?.claim_ref.as_ref()
}

/// `namespace/name` of the claim a PV is (or was) bound to.
pub fn claim_key(pv: &PersistentVolume) -> Option<(String, String)> {
    let r = claim_ref(pv)?;
    Some((r.namespace.clone()?, r.name.clone()?))
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

/// Decides about one PV of the class (`current`) and the claim it names, or about a claim that
/// holds a backup (whose PV may be gone: `current` is then `None`).
pub fn plan(
    current: Option<&PersistentVolume>,
    claim: Option<&PersistentVolumeClaim>,
    provisioner: &str,
) -> Plan {
    if let Some(backup) = claim.and_then(backup_of) {
        return resume(current, claim, backup);
    }
    let Some(pv) = current else {
        return Plan::Skip("the PersistentVolume no longer exists".into());
    };
    let spec = pv.spec.clone().unwrap_or_default();
    if csi_handle(pv).is_some() {
        return Plan::Skip("already a ceph-csi volume".into());
    }
    if spec.rbd.is_none() {
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
    let Some((ns, name)) = claim_key(pv) else {
        return Plan::Skip(format!(
            "not bound to a claim (phase {phase}); only bound volumes are migrated: bind it to a claim first, or rewrite it by hand"
        ));
    };
    let want_uid = claim_ref(pv).and_then(|r| r.uid.as_deref());
    let Some(claim) = claim.filter(|c| want_uid.is_none() || c.metadata.uid.as_deref() == want_uid)
    else {
        return Plan::Skip(format!(
            "its claim {ns}/{name} no longer exists (phase {phase}); only bound volumes are migrated"
        ));
    };
    let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
    let claim_phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    if volume_name != pv.metadata.name.as_deref() || claim_phase != Some("Bound") {
        return Plan::Skip(format!(
            "claim {ns}/{name} is not Bound to it (phase {}); rerun once it is",
            claim_phase.unwrap_or("unknown")
        ));
    }
    Plan::Migrate(origin)
}

fn resume(
    current: Option<&PersistentVolume>,
    claim: Option<&PersistentVolumeClaim>,
    backup: Result<PersistentVolume, String>,
) -> Plan {
    let claim_name = claim
        .map(|c| {
            format!(
                "{}/{}",
                c.metadata.namespace.as_deref().unwrap_or(""),
                c.metadata.name.as_deref().unwrap_or("")
            )
        })
        .unwrap_or_default();
    let fix = format!(
        "compare it with `kubectl -n {} get pvc {} -o jsonpath='{{.metadata.annotations.rbd-provisioner\\.ceph\\.com/migration-backup}}'`, repair by hand, then remove that annotation",
        claim_name.split('/').next().unwrap_or(""),
        claim_name.split('/').nth(1).unwrap_or("")
    );
    let backup = match backup {
        Ok(b) => b,
        Err(e) => {
            return Plan::Refuse(format!(
                "claim {claim_name} has an unreadable {ANN_BACKUP} annotation ({e}); {fix}"
            ));
        }
    };
    let Some((pool, image)) = rbd_image(&backup) else {
        return Plan::Refuse(format!(
            "the backup on claim {claim_name} is not an rbd PersistentVolume; {fix}"
        ));
    };
    if current.is_some_and(|c| c.metadata.name != backup.metadata.name) {
        return Plan::Refuse(format!(
            "the backup on claim {claim_name} is of PersistentVolume {}, not of this one; {fix}",
            backup.metadata.name.as_deref().unwrap_or("")
        ));
    }
    let step = match current {
        None => Step::CreateNew,
        Some(pv) if rbd_image(pv).as_ref() == Some(&(pool.clone(), image.clone())) => {
            Step::DeleteOld
        }
        Some(pv) if csi_handle(pv) == Some(image.as_str()) => Step::AwaitBound,
        Some(_) => {
            return Plan::Refuse(format!(
                "PersistentVolume {} changed since its backup on claim {claim_name} (it is no longer rbd image {pool}/{image} and not its csi volume); {fix}",
                backup.metadata.name.as_deref().unwrap_or("")
            ));
        }
    };
    Plan::Resume {
        step,
        backup: Box::new(backup),
    }
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
    let (pool, image) = rbd_image(old).ok_or("the PersistentVolume has no spec.rbd")?;
    if image.is_empty() {
        return Err("spec.rbd.image is empty".into());
    }
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
        volume_handle: image,
        fs_type: (!block).then(|| {
            rbd.fs_type
                .clone()
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| "ext4".into())
        }),
        read_only: rbd.read_only.filter(|r| *r),
        volume_attributes: Some(BTreeMap::from([
            ("clusterID".to_string(), s.cluster_id.clone()),
            ("pool".to_string(), pool),
            ("staticVolume".to_string(), "true".to_string()),
            ("imageFeatures".to_string(), "layering".to_string()),
        ])),
        node_stage_secret_ref: Some(SecretReference {
            name: Some(s.node_stage_secret.name.clone()),
            namespace: Some(s.node_stage_secret.namespace.clone()),
        }),
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

/// Pods that still use a claim: every pod naming it that has not finished.
pub fn pods_using(pods: &[Pod], claim: &str) -> Vec<String> {
    let mut names: Vec<String> = pods
        .iter()
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.volumes.iter().flatten().any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == claim)
                })
            })
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    names.sort();
    names
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
pub fn class_note(name: &str, class: Option<&StorageClass>) -> Option<String> {
    let flavor = class?
        .parameters
        .as_ref()
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("volumeFlavor"))
        })
        .map(|(_, v)| v.trim().to_ascii_lowercase());
    let fix = "recreate it (StorageClass parameters cannot be edited) with volumeFlavor: csi, clusterID and csiNodeStageSecretName";
    match flavor.as_deref() {
        Some("csi") => None,
        Some(_) => Some(format!(
            "StorageClass {name} sets volumeFlavor: rbd, so new claims still get spec.rbd volumes; {fix}"
        )),
        None => Some(format!(
            "StorageClass {name} sets no volumeFlavor: new claims get spec.rbd volumes while the provisioner runs on Kubernetes < 1.31; {fix}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, PersistentVolumeClaimVolumeSource,
        PersistentVolumeSpec, PersistentVolumeStatus, PodSpec, PodStatus,
        RBDPersistentVolumeSource, Volume,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};

    const ME: &str = "ceph.com/rbd";
    const CLAIM_UID: &str = "4c1f0000-aaaa-bbbb-cccc-000000000001";
    const LEGACY_IMAGE: &str = "kubernetes-dynamic-pvc-7d9c2f5e-1111-11ee-8888-0242ac110002";

    fn settings() -> CsiSettings {
        CsiSettings {
            cluster_id: "c1".into(),
            node_stage_secret: SecretRef {
                namespace: "ceph-csi".into(),
                name: "csi-rbd-node".into(),
            },
            admin: Some(Admin {
                id: "admin".into(),
                secret: SecretRef {
                    namespace: "kube-system".into(),
                    name: "ceph-admin".into(),
                },
            }),
        }
    }

    /// A PV as the old external-storage provisioner wrote it.
    fn legacy() -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(format!("pvc-{CLAIM_UID}")),
                uid: Some("pv-uid-1".into()),
                resource_version: Some("42".into()),
                labels: Some(BTreeMap::from([("team".into(), "db".into())])),
                annotations: Some(BTreeMap::from([
                    (ANN_PROVISIONED_BY.into(), "ceph.com/rbd".into()),
                    (ANN_LEGACY_IDENTITY.into(), "ceph.com/rbd".into()),
                    ("pv.kubernetes.io/bound-by-controller".into(), "yes".into()),
                ])),
                finalizers: Some(vec!["kubernetes.io/pv-protection".into()]),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                capacity: Some(BTreeMap::from([("storage".into(), Quantity("1Gi".into()))])),
                claim_ref: Some(ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("PersistentVolumeClaim".into()),
                    namespace: Some("apps".into()),
                    name: Some("data".into()),
                    uid: Some(CLAIM_UID.into()),
                    resource_version: Some("17".into()),
                    ..Default::default()
                }),
                persistent_volume_reclaim_policy: Some("Delete".into()),
                storage_class_name: Some("rbd".into()),
                mount_options: Some(vec!["discard".into()]),
                volume_mode: Some("Filesystem".into()),
                rbd: Some(RBDPersistentVolumeSource {
                    monitors: vec!["10.0.0.1:6789".into(), "10.0.0.2:6789".into()],
                    pool: Some("kube".into()),
                    image: LEGACY_IMAGE.into(),
                    user: Some("kube".into()),
                    keyring: Some("/etc/ceph/keyring".into()),
                    secret_ref: Some(SecretReference {
                        name: Some("ceph-kube-secret".into()),
                        namespace: None,
                    }),
                    fs_type: Some("xfs".into()),
                    read_only: None,
                }),
                ..Default::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some("Bound".into()),
                ..Default::default()
            }),
        }
    }

    /// One of our PVs (recorded deletion annotations, our finalizer).
    fn ours() -> PersistentVolume {
        let mut pv = legacy();
        let a = pv.metadata.annotations.as_mut().unwrap();
        a.remove(ANN_LEGACY_IDENTITY);
        a.insert(ANN_MONITORS.into(), "10.0.0.1:6789,10.0.0.2:6789".into());
        a.insert(ANN_POOL.into(), "kube".into());
        a.insert(
            ANN_IMAGE.into(),
            format!("kubernetes-dynamic-pvc-{CLAIM_UID}"),
        );
        a.insert(ANN_ADMIN_ID.into(), "boss".into());
        a.insert(ANN_ADMIN_SECRET.into(), "ceph/boss-secret".into());
        pv.metadata.finalizers = Some(vec![FINALIZER.into(), "kubernetes.io/pv-protection".into()]);
        pv.spec.as_mut().unwrap().rbd.as_mut().unwrap().image =
            format!("kubernetes-dynamic-pvc-{CLAIM_UID}");
        pv
    }

    fn claim(phase: &str) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("apps".into()),
                uid: Some(CLAIM_UID.into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                volume_name: Some(format!("pvc-{CLAIM_UID}")),
                ..Default::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    fn with_backup(mut c: PersistentVolumeClaim, pv: &PersistentVolume) -> PersistentVolumeClaim {
        c.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(ANN_BACKUP.into(), backup_json(pv));
        c
    }

    fn skip_reason(p: Plan) -> String {
        match p {
            Plan::Skip(r) => r,
            other => panic!("expected a skip, got {other:?}"),
        }
    }

    #[test]
    fn selects_ours_and_the_old_provisioners() {
        assert_eq!(
            plan(Some(&legacy()), Some(&claim("Bound")), ME),
            Plan::Migrate(Origin::Legacy)
        );
        assert_eq!(
            plan(Some(&ours()), Some(&claim("Bound")), ME),
            Plan::Migrate(Origin::Ours)
        );
        // Ours under another provisioner name; the old one's PVs are still recognised.
        let mut mine = ours();
        mine.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANN_PROVISIONED_BY.into(), "x.test/rbd".into());
        assert_eq!(
            plan(Some(&mine), Some(&claim("Bound")), "x.test/rbd"),
            Plan::Migrate(Origin::Ours)
        );
        assert_eq!(
            plan(Some(&legacy()), Some(&claim("Bound")), "x.test/rbd"),
            Plan::Migrate(Origin::Legacy)
        );
        let r = skip_reason(plan(Some(&mine), Some(&claim("Bound")), ME));
        assert!(
            r.contains("provisioned by x.test/rbd") && r.contains("--provisioner-name"),
            "{r}"
        );
    }

    #[test]
    fn skips_what_is_not_ours_or_not_rbd() {
        let mut intree = legacy();
        let a = intree.metadata.annotations.as_mut().unwrap();
        a.remove(ANN_LEGACY_IDENTITY);
        a.insert(ANN_PROVISIONED_BY.into(), "kubernetes.io/rbd".into());
        assert!(
            skip_reason(plan(Some(&intree), Some(&claim("Bound")), ME))
                .contains("kubernetes.io/rbd")
        );

        let mut manual = legacy();
        manual.metadata.annotations = None;
        assert!(
            skip_reason(plan(Some(&manual), Some(&claim("Bound")), ME))
                .contains("not dynamically provisioned")
        );

        let new = csi_pv(&legacy(), &settings()).unwrap();
        assert_eq!(
            skip_reason(plan(Some(&new), Some(&claim("Bound")), ME)),
            "already a ceph-csi volume"
        );

        let mut other = legacy();
        other.spec.as_mut().unwrap().rbd = None;
        assert!(
            skip_reason(plan(Some(&other), Some(&claim("Bound")), ME))
                .contains("not an rbd volume")
        );
    }

    #[test]
    fn skips_volumes_not_bound_to_a_live_claim() {
        let mut available = legacy();
        available.spec.as_mut().unwrap().claim_ref = None;
        available.status.as_mut().unwrap().phase = Some("Available".into());
        assert!(
            skip_reason(plan(Some(&available), None, ME))
                .contains("not bound to a claim (phase Available)")
        );

        let mut released = legacy();
        released.status.as_mut().unwrap().phase = Some("Released".into());
        assert!(
            skip_reason(plan(Some(&released), None, ME))
                .contains("apps/data no longer exists (phase Released)")
        );
        // A claim of the same name but another uid is another claim.
        let mut other = claim("Bound");
        other.metadata.uid = Some("another".into());
        assert!(skip_reason(plan(Some(&released), Some(&other), ME)).contains("no longer exists"));

        assert!(
            skip_reason(plan(Some(&legacy()), Some(&claim("Pending")), ME))
                .contains("not Bound to it (phase Pending)")
        );
        let mut elsewhere = claim("Bound");
        elsewhere.spec.as_mut().unwrap().volume_name = Some("pvc-other".into());
        assert!(
            skip_reason(plan(Some(&legacy()), Some(&elsewhere), ME)).contains("not Bound to it")
        );

        let mut deleting = legacy();
        deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(
            skip_reason(plan(Some(&deleting), Some(&claim("Bound")), ME)).contains("being deleted")
        );
    }

    #[test]
    fn builds_the_csi_volume_of_a_legacy_pv() {
        let old = legacy();
        let new = csi_pv(&old, &settings()).unwrap();
        let (o, n) = (old.spec.clone().unwrap(), new.spec.clone().unwrap());
        assert_eq!(new.metadata.name, old.metadata.name);
        assert_eq!(new.metadata.labels, old.metadata.labels);
        assert_eq!(n.capacity, o.capacity);
        assert_eq!(n.access_modes, o.access_modes);
        assert_eq!(
            n.persistent_volume_reclaim_policy.as_deref(),
            Some("Delete")
        );
        assert_eq!(n.storage_class_name, o.storage_class_name);
        assert_eq!(n.mount_options, o.mount_options);
        assert_eq!(n.volume_mode.as_deref(), Some("Filesystem"));
        let r = n.claim_ref.unwrap();
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("apps"), Some("data"), Some(CLAIM_UID))
        );
        assert_eq!(
            r.resource_version, None,
            "a stale resourceVersion is not carried over"
        );
        assert!(n.rbd.is_none());
        let csi = n.csi.unwrap();
        assert_eq!(csi.driver, "rbd.csi.ceph.com");
        assert_eq!(csi.volume_handle, LEGACY_IMAGE);
        assert_eq!(csi.fs_type.as_deref(), Some("xfs"));
        assert_eq!(csi.read_only, None);
        let attrs = csi.volume_attributes.unwrap();
        assert_eq!(attrs["clusterID"], "c1");
        assert_eq!(attrs["pool"], "kube");
        assert_eq!(attrs["staticVolume"], "true");
        assert_eq!(attrs["imageFeatures"], "layering");
        let s = csi.node_stage_secret_ref.unwrap();
        assert_eq!(
            (s.namespace.as_deref(), s.name.as_deref()),
            (Some("ceph-csi"), Some("csi-rbd-node"))
        );
        // Kept annotations, plus what our delete path needs.
        let a = new.metadata.annotations.unwrap();
        assert_eq!(a[ANN_PROVISIONED_BY], "ceph.com/rbd");
        assert_eq!(a[ANN_LEGACY_IDENTITY], "ceph.com/rbd");
        assert_eq!(a["pv.kubernetes.io/bound-by-controller"], "yes");
        assert_eq!(a[ANN_MONITORS], "10.0.0.1:6789,10.0.0.2:6789");
        assert_eq!(a[ANN_POOL], "kube");
        assert_eq!(a[ANN_IMAGE], LEGACY_IMAGE);
        assert_eq!(a[ANN_ADMIN_ID], "admin");
        assert_eq!(a[ANN_ADMIN_SECRET], "kube-system/ceph-admin");
        assert_eq!(new.metadata.finalizers, Some(vec![FINALIZER.to_string()]));
        assert_eq!(new.metadata.uid, None);
        assert_eq!(new.metadata.resource_version, None);
        assert_eq!(new.metadata.managed_fields, None);
        assert!(new.status.is_none());
    }

    #[test]
    fn keeps_what_our_pvs_recorded() {
        let new = csi_pv(&ours(), &settings()).unwrap();
        let a = new.metadata.annotations.unwrap();
        assert_eq!(
            a[ANN_ADMIN_ID], "boss",
            "recorded at provisioning, not overwritten by the class"
        );
        assert_eq!(a[ANN_ADMIN_SECRET], "ceph/boss-secret");
        assert_eq!(a[ANN_IMAGE], format!("kubernetes-dynamic-pvc-{CLAIM_UID}"));
    }

    #[test]
    fn policy_block_pool_and_admin_variants() {
        let mut old = legacy();
        let spec = old.spec.as_mut().unwrap();
        spec.persistent_volume_reclaim_policy = Some("Retain".into());
        spec.volume_mode = Some("Block".into());
        let rbd = spec.rbd.as_mut().unwrap();
        rbd.pool = None;
        rbd.fs_type = None;
        rbd.read_only = Some(true);
        let mut s = settings();
        s.admin = None;
        let new = csi_pv(&old, &s).unwrap();
        assert_eq!(
            new.metadata.finalizers, None,
            "no finalizer unless the policy is Delete"
        );
        let n = new.spec.clone().unwrap();
        assert_eq!(
            n.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        let csi = n.csi.unwrap();
        assert_eq!(csi.fs_type, None, "Block volumes have no filesystem");
        assert_eq!(csi.read_only, Some(true));
        assert_eq!(
            csi.volume_attributes.unwrap()["pool"],
            "rbd",
            "the in-tree default pool"
        );
        let a = new.metadata.annotations.clone().unwrap();
        assert!(!a.contains_key(ANN_ADMIN_ID) && !a.contains_key(ANN_ADMIN_SECRET));
        assert!(describe(&new, &s).contains("will not be deleted"));
        // A filesystem volume without fsType gets the in-tree default.
        let mut old = legacy();
        old.spec.as_mut().unwrap().rbd.as_mut().unwrap().fs_type = None;
        assert_eq!(
            csi_pv(&old, &s)
                .unwrap()
                .spec
                .unwrap()
                .csi
                .unwrap()
                .fs_type
                .as_deref(),
            Some("ext4")
        );
        let mut old = legacy();
        old.spec.as_mut().unwrap().rbd.as_mut().unwrap().image = String::new();
        assert!(csi_pv(&old, &s).is_err());
    }

    #[test]
    fn resume_points() {
        let old = legacy();
        let c = with_backup(claim("Lost"), &old);
        let step = |p: Plan| match p {
            Plan::Resume { step, backup } => {
                assert_eq!(backup.metadata.name, old.metadata.name);
                assert_eq!(backup.metadata.managed_fields, None);
                step
            }
            other => panic!("expected a resume, got {other:?}"),
        };
        // Crash after saving the backup: the old PV is still there (maybe being deleted).
        assert_eq!(step(plan(Some(&old), Some(&c), ME)), Step::DeleteOld);
        let mut deleting = old.clone();
        deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
        deleting
            .spec
            .as_mut()
            .unwrap()
            .persistent_volume_reclaim_policy = Some("Retain".into());
        assert_eq!(step(plan(Some(&deleting), Some(&c), ME)), Step::DeleteOld);
        // Crash after the old PV went.
        assert_eq!(step(plan(None, Some(&c), ME)), Step::CreateNew);
        // Crash after the csi PV was created.
        let new = csi_pv(&old, &settings()).unwrap();
        assert_eq!(step(plan(Some(&new), Some(&c), ME)), Step::AwaitBound);
    }

    #[test]
    fn refuses_to_resume_over_something_else() {
        let old = legacy();
        let c = with_backup(claim("Lost"), &old);
        let mut other = old.clone();
        other.spec.as_mut().unwrap().rbd.as_mut().unwrap().image = "someone-else".into();
        match plan(Some(&other), Some(&c), ME) {
            Plan::Refuse(r) => assert!(
                r.contains("changed since its backup") && r.contains("remove that annotation"),
                "{r}"
            ),
            p => panic!("{p:?}"),
        }
        let mut bad = claim("Lost");
        bad.metadata.annotations = Some(BTreeMap::from([(ANN_BACKUP.into(), "{not json".into())]));
        assert!(matches!(plan(None, Some(&bad), ME), Plan::Refuse(r) if r.contains("unreadable")));
        let mut renamed = old.clone();
        renamed.metadata.name = Some("pvc-x".into());
        assert!(
            matches!(plan(Some(&renamed), Some(&c), ME), Plan::Refuse(r) if r.contains("not of this one"))
        );
    }

    #[test]
    fn backup_round_trips() {
        let old = legacy();
        let c = with_backup(claim("Bound"), &old);
        let back = backup_of(&c).unwrap().unwrap();
        let mut expect = old.clone();
        expect.metadata.managed_fields = None;
        assert_eq!(back, expect);
        assert!(backup_of(&claim("Bound")).is_none());
    }

    #[test]
    fn pods_that_use_a_claim() {
        let pod = |name: &str, claim: &str, phase: &str| Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(vec![Volume {
                    name: "v".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.into(),
                        read_only: None,
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        };
        let pods = vec![
            pod("web-1", "data", "Running"),
            pod("web-0", "data", "Pending"),
            pod("job", "data", "Succeeded"),
            pod("crashed", "data", "Failed"),
            pod("other", "logs", "Running"),
            Pod::default(),
        ];
        assert_eq!(pods_using(&pods, "data"), vec!["web-0", "web-1"]);
        assert!(pods_using(&pods, "nothing").is_empty());
    }

    #[test]
    fn settings_from_flags_or_class() {
        let class = StorageClass {
            parameters: Some(BTreeMap::from([
                ("clusterID".into(), "from-class".into()),
                ("csiNodeStageSecretName".into(), "csi".into()),
                ("adminSecretName".into(), "adm".into()),
                ("adminSecretNamespace".into(), "kube-system".into()),
            ])),
            ..Default::default()
        };
        let s = csi_settings("rbd", Some(&class), None, None).unwrap();
        assert_eq!(s.cluster_id, "from-class");
        assert_eq!(s.node_stage_secret.to_string(), "default/csi");
        assert_eq!(s.admin.unwrap().id, "admin");
        let s = csi_settings("rbd", Some(&class), Some("flag"), Some("ns/name")).unwrap();
        assert_eq!(s.cluster_id, "flag");
        assert_eq!(s.node_stage_secret.to_string(), "ns/name");

        let bare = StorageClass::default();
        let e = csi_settings("rbd", Some(&bare), None, Some("ns/name")).unwrap_err();
        assert!(e.to_string().contains("--cluster-id"), "{e}");
        let e = csi_settings("rbd", None, Some("c"), None).unwrap_err();
        assert!(e.to_string().contains("--node-stage-secret"), "{e}");
        let s = csi_settings("rbd", None, Some("c"), Some("ns/name")).unwrap();
        assert!(s.admin.is_none());
        for bad in ["name", "/name", "ns/", "a/b/c"] {
            assert!(
                matches!(parse_secret_arg(bad), Err(MigrateError::SecretArg(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn class_notes() {
        let class = |flavor: Option<&str>| StorageClass {
            parameters: Some(
                flavor
                    .map(|f| ("volumeFlavor".to_string(), f.to_string()))
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        };
        assert_eq!(class_note("c", Some(&class(Some("CSI")))), None);
        assert!(
            class_note("c", Some(&class(Some("rbd"))))
                .unwrap()
                .contains("sets volumeFlavor: rbd")
        );
        assert!(
            class_note("c", Some(&class(None)))
                .unwrap()
                .contains("Kubernetes < 1.31")
        );
        assert_eq!(class_note("c", None), None);
    }

    #[test]
    fn images_of_rbd_and_csi_volumes() {
        let old = legacy();
        let want = Some(("kube".to_string(), LEGACY_IMAGE.to_string()));
        assert_eq!(image_of(&old), want);
        assert_eq!(image_of(&csi_pv(&old, &settings()).unwrap()), want);
        assert_eq!(image_of(&PersistentVolume::default()), None);
    }

    #[test]
    fn the_delete_path_can_remove_a_migrated_image_without_the_class() {
        use crate::reclaim::{AdminSource, VolumeAction, decide};
        let mut new = csi_pv(&legacy(), &settings()).unwrap();
        new.spec.as_mut().unwrap().storage_class_name = None;
        new.status = Some(PersistentVolumeStatus {
            phase: Some("Released".into()),
            ..Default::default()
        });
        match decide(&new, LEGACY_PROVISIONER) {
            VolumeAction::Delete(t) => {
                assert_eq!((t.pool.as_str(), t.image.as_str()), ("kube", LEGACY_IMAGE));
                assert_eq!(t.monitors, vec!["10.0.0.1:6789", "10.0.0.2:6789"]);
                assert_eq!(
                    t.admin,
                    AdminSource::Recorded {
                        admin_id: "admin".into(),
                        secret: SecretRef {
                            namespace: "kube-system".into(),
                            name: "ceph-admin".into(),
                        },
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
