//! `adopt`: which kept images (ours, stamped, no PV names them) may get a PV back, the PV
//! they get, and what is written on the image afterwards. Pure.
//!
//! The order on disk is PV first, then the image's re-stamp. The PV carries
//! [`ANN_ADOPTED_IMAGE`] (the image's librbd id) next to the fsid and pool id every PV of ours
//! records, so a rerun after a crash between the two recognises its own PV by facts nobody
//! can forge from Kubernetes alone (the id, fsid and pool id are read from Ceph) and finishes
//! the re-stamp instead of refusing an image "named by a PV".

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::meta::{annotation, qualified};
use crate::owner::{self, Instance, Place, Stamp, StampMismatch};
use crate::params::ClassParams;
use crate::volume::{self, ClaimRequest, VolumeMode, VolumeSourceKind};

/// On a PV `adopt` wrote: the librbd id of the image it was written for.
pub const ANN_ADOPTED_IMAGE: &str = "rbd-provisioner.ceph.com/adopted-image-id";

/// Every image name a PV gives for `pool`: `spec.rbd.image`, `spec.csi.volumeHandle`, and a
/// csi `imageName` attribute (ceph-csi's own dynamic volumes keep the image there).
pub fn names_image(pv: &PersistentVolume, pool: &str, image: &str) -> bool {
    if crate::reclaim::spec_image(pv).is_some_and(|(p, i)| p == pool && i == image) {
        return true;
    }
    let attrs = pv
        .spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .and_then(|c| c.volume_attributes.as_ref());
    attrs.is_some_and(|a| {
        a.get("imageName").map(String::as_str) == Some(image)
            && a.get("pool").map(String::as_str).unwrap_or(pool) == pool
    })
}

/// The claim an adopted volume is pre-bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub name: String,
    /// Named by the operator for this image (`--claim`), not taken from the stamp.
    pub chosen: bool,
}

impl Target {
    pub fn label(&self) -> String {
        qualified(Some(&self.namespace), &self.name)
    }
}

/// What is known of one image, read fresh.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    pub image: &'a str,
    /// Its image-meta (our stamp keys).
    pub meta: &'a BTreeMap<String, String>,
    /// librbd's id of the image; empty for a trash entry.
    pub image_id: &'a str,
    pub trashed: bool,
    /// Addresses of the clients that have it open read/write.
    pub watchers: &'a [String],
    /// Every PV that names this pool/image.
    pub named_by: &'a [&'a PersistentVolume],
    /// The PV of the name the adopted volume would get, when one exists.
    pub pv_of_name: Option<&'a PersistentVolume>,
    /// The claim to bind to: the operator's choice, else the stamped one.
    pub target: Option<Target>,
    /// That claim as the API server has it; `None` when it does not exist.
    pub claim: Option<&'a PersistentVolumeClaim>,
}

/// Where the images are and who we are.
#[derive(Clone, Debug)]
pub struct Facts<'a> {
    pub me: &'a Instance,
    /// Kubernetes clusters (kube-system uids) whose stamps the operator takes over
    /// (`--from-cluster`: a rebuilt cluster's old uid).
    pub from_clusters: &'a [String],
    pub pool: &'a str,
    pub live: &'a Place,
    pub class: &'a str,
}

/// Why an image is not adopted. Each says what to do instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("in the trash: restore it first (rbd trash restore POOL/ID), then rerun")]
    Trashed,
    #[error("not stamped by any provisioner: not ours to adopt (write a static PV by hand)")]
    Unstamped,
    #[error("stamped by provisioner {0:?}, not this one: adopt it with that provisioner")]
    OtherProvisioner(String),
    #[error(
        "stamped by another Kubernetes cluster (kube-system uid {0}); if this cluster replaces it, rerun with --from-cluster {0}"
    )]
    OtherCluster(String),
    #[error(
        "its stamp is incomplete, or names PV {pv:?} where its image name implies {expected}: adopt it by hand"
    )]
    IncompleteStamp { pv: String, expected: String },
    #[error("{0}")]
    Place(StampMismatch),
    #[error("named by PV {0}: it is in use, not kept")]
    NamedByPv(String),
    #[error("open read/write by {0} (mapped on a node): unmap it first")]
    Watched(String),
    #[error(
        "PV {0} exists and names another image: rerun with --image IMAGE --claim NS/NAME after looking at it"
    )]
    PvNameTaken(String),
    #[error(
        "claim {claim} is bound to volume {volume}: choose another with --image IMAGE --claim NS/NAME"
    )]
    ClaimBoundElsewhere { claim: String, volume: String },
    #[error("claim {0} is being deleted: wait until it is gone, then rerun")]
    ClaimDeleting(String),
    #[error(
        "claim {claim} exists already (uid {uid}) but is not the stamped claim: someone created it before adoption. Check who; to give it this volume, rerun with --image IMAGE --claim {claim}"
    )]
    ClaimNotStamped { claim: String, uid: String },
    #[error(
        "claim {claim} asks for storage class {asked:?}, not {class}: it would never bind; recreate it with storageClassName {class}"
    )]
    ClaimClass {
        claim: String,
        asked: String,
        class: String,
    },
    #[error("claim {claim} cannot use this volume: {why}")]
    ClaimMismatch { claim: String, why: String },
}

/// What to do with one image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write a PV of this name pre-bound to the target, then re-stamp the image.
    Adopt {
        pv: String,
        target: Target,
    },
    /// A PV an earlier `adopt` wrote exists; only the re-stamp is left.
    Finish {
        pv: String,
        target: Target,
    },
    /// Adopted already (its PV is ours, written by `adopt`, and the stamp names it).
    Done {
        pv: String,
    },
    Refuse(Refusal),
}

/// Whether `pv` is the PV an earlier `adopt` wrote for this very image: ours, naming it, with
/// the image's id and where it lives as Ceph says.
pub fn written_by_adopt(pv: &PersistentVolume, c: &Candidate<'_>, f: &Facts<'_>) -> bool {
    let m = &pv.metadata;
    !c.image_id.is_empty()
        && volume::provisioned_by(pv) == Some(f.me.provisioner.as_str())
        && annotation(m, ANN_ADOPTED_IMAGE) == Some(c.image_id)
        && annotation(m, volume::ANN_FSID) == Some(f.live.fsid.as_str())
        && annotation(m, volume::ANN_POOL_ID) == Some(f.live.pool_id.to_string().as_str())
        && names_image(pv, f.pool, c.image)
}

/// The PV name an adopted image gets: the one our provisioner derives from the image's name
/// (deletion later holds the two together).
pub fn pv_name_for(image: &str) -> Option<String> {
    image
        .strip_prefix(volume::IMAGE_PREFIX)
        .filter(|u| !u.is_empty())
        .map(volume::pv_name)
}

/// The stamped claim, unless the operator chose one.
pub fn target_of(meta: &BTreeMap<String, String>, chosen: Option<(&str, &str)>) -> Option<Target> {
    if let Some((namespace, name)) = chosen {
        return Some(Target {
            namespace: namespace.into(),
            name: name.into(),
            chosen: true,
        });
    }
    let s = Stamp::read(meta)?;
    Some(Target {
        namespace: s.claim_namespace,
        name: s.claim_name,
        chosen: false,
    })
}

/// Decides one image. The checks run from what the image says of itself (whose it is, where it
/// was made) to what the cluster says (PVs, clients, the claim), so an image that is not ours
/// is reported as such whatever else is true of it.
pub fn decide(c: &Candidate<'_>, f: &Facts<'_>) -> Verdict {
    let refuse = Verdict::Refuse;
    if c.trashed {
        return refuse(Refusal::Trashed);
    }
    let Some(p) = c.meta.get(owner::META_PROVISIONER) else {
        return refuse(Refusal::Unstamped);
    };
    if p != &f.me.provisioner {
        return refuse(Refusal::OtherProvisioner(p.clone()));
    }
    let expected = pv_name_for(c.image).unwrap_or_default();
    let stamp = Stamp::read(c.meta);
    if let Some(cluster) = c.meta.get(owner::META_CLUSTER)
        && cluster != &f.me.cluster
        && !f.from_clusters.contains(cluster)
    {
        return refuse(Refusal::OtherCluster(cluster.clone()));
    }
    if stamp.as_ref().is_none_or(|s| s.pv != expected)
        || expected.is_empty()
        || !c.meta.contains_key(owner::META_CLUSTER)
    {
        return refuse(Refusal::IncompleteStamp {
            pv: stamp.map(|s| s.pv).unwrap_or_default(),
            expected,
        });
    }
    if let Err(m) = owner::check_place(c.meta, f.live) {
        return refuse(Refusal::Place(m));
    }
    let Some(target) = c.target.clone() else {
        return refuse(Refusal::IncompleteStamp {
            pv: String::new(),
            expected,
        });
    };
    // Our own PV, written by an earlier run: finish (or nothing left to do).
    if let [pv] = c.named_by
        && written_by_adopt(pv, c, f)
        && pv.metadata.name.as_deref() == Some(expected.as_str())
    {
        let uid = pv.metadata.uid.as_deref().unwrap_or_default();
        let restamped = c.meta.get(owner::META_PV_UID).map(String::as_str) == Some(uid)
            && c.meta.get(owner::META_CLUSTER) == Some(&f.me.cluster);
        return if restamped {
            Verdict::Done { pv: expected }
        } else {
            Verdict::Finish {
                pv: expected,
                target: target_of_pv(pv).unwrap_or(target),
            }
        };
    }
    if let Some(pv) = c.named_by.first() {
        return refuse(Refusal::NamedByPv(
            pv.metadata.name.clone().unwrap_or_default(),
        ));
    }
    if let Some(w) = c.watchers.first() {
        return refuse(Refusal::Watched(w.clone()));
    }
    if c.pv_of_name.is_some() {
        return refuse(Refusal::PvNameTaken(expected));
    }
    if let Some(claim) = c.claim
        && let Err(r) = check_claim(claim, &target, c.meta, &expected, f.class)
    {
        return refuse(r);
    }
    Verdict::Adopt {
        pv: expected,
        target,
    }
}

/// The claim a PV is pre-bound to.
fn target_of_pv(pv: &PersistentVolume) -> Option<Target> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    Some(Target {
        namespace: r.namespace.clone()?,
        name: r.name.clone()?,
        chosen: false,
    })
}

/// A claim that exists already may take the volume only when it is free, of the class, and
/// either the stamped claim itself (by uid) or the operator's explicit choice: a claim a
/// tenant created under the stamped name before the operator acted is not handed the data.
fn check_claim(
    claim: &PersistentVolumeClaim,
    target: &Target,
    meta: &BTreeMap<String, String>,
    pv: &str,
    class: &str,
) -> Result<(), Refusal> {
    let label = target.label();
    if claim.metadata.deletion_timestamp.is_some() {
        return Err(Refusal::ClaimDeleting(label));
    }
    let spec = claim.spec.clone().unwrap_or_default();
    if let Some(v) = spec.volume_name.filter(|v| !v.is_empty() && v != pv) {
        return Err(Refusal::ClaimBoundElsewhere {
            claim: label,
            volume: v,
        });
    }
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    if !target.chosen && meta.get(owner::META_CLAIM_UID) != Some(&uid) {
        return Err(Refusal::ClaimNotStamped { claim: label, uid });
    }
    let asked = spec.storage_class_name.unwrap_or_default();
    if asked != class {
        return Err(Refusal::ClaimClass {
            claim: label,
            asked,
            class: class.into(),
        });
    }
    Ok(())
}

/// The shape of the volume: from the claim when it exists (it must fit the image), else the
/// operator's volume mode and ReadWriteOnce.
pub fn request_for(
    image: &str,
    size: u64,
    target: &Target,
    claim: Option<&PersistentVolumeClaim>,
    mode: VolumeMode,
) -> Result<ClaimRequest, Refusal> {
    let uid = image
        .strip_prefix(volume::IMAGE_PREFIX)
        .unwrap_or_default()
        .to_string();
    let Some(claim) = claim else {
        return Ok(ClaimRequest {
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            uid,
            access_modes: vec!["ReadWriteOnce".into()],
            volume_mode: mode,
            size,
        });
    };
    let mismatch = |why: String| Refusal::ClaimMismatch {
        claim: target.label(),
        why,
    };
    let req = volume::claim_request(claim).map_err(|e| mismatch(e.to_string()))?;
    if req.size > size {
        return Err(mismatch(format!(
            "it asks for {}, the image holds {}",
            volume::human_size(req.size),
            volume::human_size(size)
        )));
    }
    Ok(ClaimRequest { uid, size, ..req })
}

/// The PV for an adopted image: our provisioner's PV (the same builder, so the same flavour
/// and shape), with reclaim policy Retain whatever the class says, pre-bound to the target
/// claim (by uid only when the claim exists), and marked as written by `adopt` for this image.
#[allow(clippy::too_many_arguments)]
pub fn adoption_pv(
    req: &ClaimRequest,
    claim_uid: Option<&str>,
    class: &StorageClass,
    params: &ClassParams,
    source: VolumeSourceKind<'_>,
    image: &str,
    image_id: &str,
    provisioner: &str,
    live: &Place,
) -> PersistentVolume {
    let mut retain = class.clone();
    retain.reclaim_policy = Some("Retain".into());
    let mut pv = volume::build_pv(&volume::PvInput {
        claim: req,
        class: &retain,
        params,
        source,
        image,
        provisioner,
        place: Some(live),
    });
    if let Some(r) = pv.spec.as_mut().and_then(|s| s.claim_ref.as_mut()) {
        r.uid = claim_uid.map(str::to_string);
    }
    pv.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANN_ADOPTED_IMAGE.into(), image_id.into());
    pv
}

/// What the image gets once its PV exists: our name and cluster, the new PV's name and uid, the
/// claim it is meant for, where it lives, and that a PV exists; the PV's uid last. The
/// creation time stays.
pub fn restamp_pairs(
    me: &Instance,
    pv: &PersistentVolume,
    target: &Target,
    claim_uid: Option<&str>,
    live: &Place,
    now: i64,
) -> Vec<(String, String)> {
    let mut out = vec![
        (owner::META_PROVISIONER.into(), me.provisioner.clone()),
        (owner::META_CLUSTER.into(), me.cluster.clone()),
        (
            owner::META_PV.into(),
            pv.metadata.name.clone().unwrap_or_default(),
        ),
        (owner::META_CLAIM.into(), target.label()),
        (owner::META_FSID.into(), live.fsid.clone()),
        (owner::META_POOL_ID.into(), live.pool_id.to_string()),
        (
            owner::META_PV_STATE.into(),
            owner::PvState::Written.as_str().into(),
        ),
        (owner::META_ADOPTED.into(), now.to_string()),
    ];
    if let Some(uid) = claim_uid {
        out.push((owner::META_CLAIM_UID.into(), uid.into()));
    }
    // Last: the keys are set one after the other, and a rerun takes this one for "done".
    out.push((
        owner::META_PV_UID.into(),
        pv.metadata.uid.clone().unwrap_or_default(),
    ));
    out
}

#[cfg(test)]
mod tests;
