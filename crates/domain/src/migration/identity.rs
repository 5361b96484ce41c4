//! What one migration is about, and how the live claim and PV are checked against it.

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};

use super::Step;
use crate::reclaim::{made_by_old_provisioner, spec_image};
use crate::volume;

pub(super) fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref()?.claim_ref.as_ref()
}

/// `namespace/name` of the claim a PV is (or was) bound to.
pub fn claim_key(pv: &PersistentVolume) -> Option<(String, String)> {
    let r = claim_ref(pv)?;
    Some((r.namespace.clone()?, r.name.clone()?))
}

/// The driver and volume handle of a csi PV.
pub(super) fn csi_source(pv: &PersistentVolume) -> Option<(&str, &str)> {
    let csi = pv.spec.as_ref()?.csi.as_ref()?;
    Some((csi.driver.as_str(), csi.volume_handle.as_str()))
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
    pub fn of(pv: &PersistentVolume) -> Result<Identity, IdentityError> {
        let name = pv
            .metadata
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or(IdentityError::NoName)?;
        if pv.spec.as_ref().and_then(|s| s.rbd.as_ref()).is_none() {
            return Err(IdentityError::NotRbd { pv: name });
        }
        let (pool, image) =
            spec_image(pv).ok_or_else(|| IdentityError::NoImage { pv: name.clone() })?;
        let r = claim_ref(pv).ok_or_else(|| IdentityError::NoClaimRef { pv: name.clone() })?;
        let field = |v: &Option<String>, field| {
            v.clone()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| IdentityError::ClaimRefField {
                    pv: name.clone(),
                    field,
                })
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
                return Err(IdentityError::NotNamedAfterPv {
                    pv: id.pv,
                    pool: id.pool,
                    image: id.image,
                    expected: derived
                        .unwrap_or_else(|| "kubernetes-dynamic-pvc-<uid> for PV pvc-<uid>".into()),
                });
            }
        }
        Ok(id)
    }

    /// `ns/name`
    pub fn claim_label(&self) -> String {
        crate::meta::qualified(Some(&self.claim_namespace), &self.claim)
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
    pub fn check_claim(&self, claim: Option<&PersistentVolumeClaim>) -> Result<(), Mismatch> {
        let c = self.claim_label();
        let Some(claim) = claim else {
            return Err(Mismatch::ClaimGone {
                claim: c,
                uid: self.claim_uid.clone(),
            });
        };
        let m = &claim.metadata;
        if m.namespace.as_deref() != Some(self.claim_namespace.as_str())
            || m.name.as_deref() != Some(self.claim.as_str())
        {
            return Err(Mismatch::OtherClaim {
                found: format!(
                    "{}/{}",
                    m.namespace.as_deref().unwrap_or_default(),
                    m.name.as_deref().unwrap_or_default()
                ),
                claim: c,
            });
        }
        if m.uid.as_deref() != Some(self.claim_uid.as_str()) {
            return Err(Mismatch::ClaimRecreated {
                claim: c,
                found: m.uid.as_deref().unwrap_or("none").to_string(),
                pv: self.pv.clone(),
                uid: self.claim_uid.clone(),
            });
        }
        let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        if volume_name != Some(self.pv.as_str()) {
            return Err(Mismatch::ClaimNamesOtherVolume {
                claim: c,
                volume: volume_name.unwrap_or_default().to_string(),
                pv: self.pv.clone(),
            });
        }
        Ok(())
    }

    /// Where the migration stands by the live PV of that name: the same rbd PV object still
    /// there, gone, or replaced by the csi PV of `driver` for the same image and claim.
    /// Anything else is not ours to touch.
    pub fn locate(&self, live: Option<&PersistentVolume>, driver: &str) -> Result<Step, Mismatch> {
        let Some(pv) = live else {
            return Ok(Step::CreateNew);
        };
        let image = Some((self.pool.clone(), self.image.clone()));
        let changed = |change| {
            Err(Mismatch::PvChanged {
                change,
                of: Box::new(self.clone()),
            })
        };
        if !self.claim_ref_matches(pv) {
            let r = claim_ref(pv);
            return changed(PvChange::Rebound {
                namespace: r.and_then(|r| r.namespace.clone()).unwrap_or_default(),
                name: r.and_then(|r| r.name.clone()).unwrap_or_default(),
                uid: r
                    .and_then(|r| r.uid.clone())
                    .unwrap_or_else(|| "none".into()),
            });
        }
        if spec_image(pv) != image {
            let (pool, image) = spec_image(pv).unwrap_or_default();
            return changed(PvChange::OtherImage { pool, image });
        }
        let spec = pv.spec.as_ref();
        if spec.and_then(|s| s.rbd.as_ref()).is_some() {
            if self.pv_uid.is_some() && pv.metadata.uid != self.pv_uid {
                return changed(PvChange::Recreated);
            }
            return Ok(Step::DeleteOld);
        }
        match csi_source(pv) {
            Some((d, handle)) if handle == self.image && d == driver => Ok(Step::AwaitBound),
            Some((d, handle)) if handle == self.image => changed(PvChange::OtherDriver {
                found: d.to_string(),
                expected: driver.to_string(),
            }),
            _ => changed(PvChange::Neither),
        }
    }
}

/// Why an rbd PV cannot be taken as the identity of a migration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the PersistentVolume has no name")]
    NoName,
    #[error("PersistentVolume {pv} has no spec.rbd")]
    NotRbd { pv: String },
    #[error("PersistentVolume {pv} names no image")]
    NoImage { pv: String },
    #[error("PersistentVolume {pv} has no claimRef")]
    NoClaimRef { pv: String },
    #[error("the claimRef of PersistentVolume {pv} has no {field}")]
    ClaimRefField { pv: String, field: &'static str },
    #[error(
        "PersistentVolume {pv} names image {pool}/{image}, but a volume this provisioner made is named after its PV ({expected}): the PV was copied or edited; rewrite it by hand if it is right"
    )]
    NotNamedAfterPv {
        pv: String,
        pool: String,
        image: String,
        expected: String,
    },
}

/// How the live claim or PV disagrees with the migration's [`Identity`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("claim {claim} (uid {uid}) no longer exists")]
    ClaimGone { claim: String, uid: String },
    #[error("claim {found} is not claim {claim}")]
    OtherClaim { found: String, claim: String },
    #[error(
        "claim {claim} has uid {found}, but PersistentVolume {pv} belongs to the claim of uid {uid} (the claim was recreated)"
    )]
    ClaimRecreated {
        claim: String,
        found: String,
        pv: String,
        uid: String,
    },
    #[error("claim {claim} names volume {volume:?}, not PersistentVolume {pv}")]
    ClaimNamesOtherVolume {
        claim: String,
        volume: String,
        pv: String,
    },
    #[error(
        "PersistentVolume {} {change}, not rbd image {}/{} of claim {} (uid {})",
        .of.pv, .of.pool, .of.image, .of.claim_label(), .of.claim_uid
    )]
    PvChanged {
        change: PvChange,
        /// The migration whose PV changed.
        of: Box<Identity>,
    },
}

/// What became of the PV of a migration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PvChange {
    #[error("is bound to claim {namespace}/{name} (uid {uid})")]
    Rebound {
        namespace: String,
        name: String,
        uid: String,
    },
    #[error("names image {pool}/{image}")]
    OtherImage { pool: String, image: String },
    #[error("was recreated since (another object uid)")]
    Recreated,
    #[error(
        "is a csi volume of driver {found}, where this migration writes {expected} (--csi-driver, or the class's csiDriver)"
    )]
    OtherDriver { found: String, expected: String },
    #[error("is neither its rbd volume nor its csi volume")]
    Neither,
}
