//! Whose an image is: the image-meta this provisioner writes on every image it creates (and
//! on every image it trashes), and the decisions that rest on it. Pure.
//!
//! Names alone prove nothing: the in-tree provisioner, the old external one, an operator's
//! `rbd create` and another Kubernetes cluster sharing the pool all use the same
//! `kubernetes-dynamic-pvc-` prefix. The stamp names the provisioner, the Kubernetes
//! cluster (the uid of its `kube-system` namespace, which nobody can choose), the PV, the
//! claim, where the image was made (the Ceph cluster's fsid and the pool's id) and whether a
//! PV may have been written for it. Purging from the trash and collecting orphans require our
//! stamp; deletion refuses an image stamped for another PV, cluster or pool.

use std::collections::BTreeMap;
use std::time::Duration;

pub const META_PROVISIONER: &str = "rbd-provisioner.ceph.com/provisioner";
pub const META_CLUSTER: &str = "rbd-provisioner.ceph.com/cluster";
pub const META_PV: &str = "rbd-provisioner.ceph.com/pv";
pub const META_CLAIM: &str = "rbd-provisioner.ceph.com/claim";
pub const META_CLAIM_UID: &str = "rbd-provisioner.ceph.com/claim-uid";
/// Unix seconds of creation (orphans get a grace period from here).
pub const META_CREATED: &str = "rbd-provisioner.ceph.com/created";
/// Unix seconds at which we moved the image to the trash: only such entries are purged.
pub const META_TRASHED: &str = "rbd-provisioner.ceph.com/trashed";
/// The fsid of the Ceph cluster the image was made in.
pub const META_FSID: &str = "rbd-provisioner.ceph.com/fsid";
/// The id of the pool the image was made in: a pool renamed and replaced has another id.
pub const META_POOL_ID: &str = "rbd-provisioner.ceph.com/pool-id";
/// [`PvState`]: whether a PV may have been written for the image.
pub const META_PV_STATE: &str = "rbd-provisioner.ceph.com/pv-state";
/// On images another provisioner made, stamped when first seen bound: the PV's uid then and
/// the Unix seconds of the stamp (information for operators; ownership rests on the rest).
pub const META_PV_UID: &str = "rbd-provisioner.ceph.com/pv-uid";
pub const META_ADOPTED: &str = "rbd-provisioner.ceph.com/adopted";
/// The replica (its Lease identity) whose create call made the image: a witness for operators
/// and the leader tests, which hold it against the Lease's holder at the image's creation time.
/// Never read for a decision.
pub const META_MADE_BY: &str = "rbd-provisioner.ceph.com/made-by";
/// The replica that adopted an image an earlier attempt left: a process stopped between the
/// create call and the stamp leaves no `made-by`, and this says who finished the work. Never
/// read for a decision.
pub const META_ADOPTED_BY: &str = "rbd-provisioner.ceph.com/adopted-by";

pub const KEYS: &[&str] = &[
    META_PROVISIONER,
    META_CLUSTER,
    META_PV,
    META_CLAIM,
    META_CLAIM_UID,
    META_CREATED,
    META_TRASHED,
    META_FSID,
    META_POOL_ID,
    META_PV_STATE,
    META_PV_UID,
    META_ADOPTED,
];

/// The omap object, in each pool, holding a record of every image about to be created: a
/// process killed between creating an image and stamping it leaves an unstamped image that
/// only this record proves ours (see [`Intent`]).
pub const INTENTS_OBJECT: &str = "rbd-provisioner.intents";

/// This provisioner instance: its name and the Kubernetes cluster it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub provisioner: String,
    /// The uid of the cluster's `kube-system` namespace.
    pub cluster: String,
}

/// Where an image lives, as Ceph itself says: facts an edited PV or a renamed pool cannot fake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    pub fsid: String,
    pub pool_id: i64,
}

/// Whether a PV may exist for an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PvState {
    /// Created; no PV written yet. Only such an image can be an orphan.
    None,
    /// Set just before the PV is created: from then on a PV may exist (or have existed and been
    /// removed by someone else, such as an operator keeping a Retain volume's data).
    Written,
    /// A stamp from before this record existed: treated as [`PvState::Written`].
    Unknown,
}

impl PvState {
    pub fn as_str(self) -> &'static str {
        match self {
            PvState::None => "none",
            PvState::Written => "written",
            PvState::Unknown => "unknown",
        }
    }

    fn read(meta: &BTreeMap<String, String>) -> PvState {
        match meta.get(META_PV_STATE).map(String::as_str) {
            Some("none") => PvState::None,
            Some("written") => PvState::Written,
            _ => PvState::Unknown,
        }
    }
}

/// What we write on an image at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub pv: String,
    pub claim_namespace: String,
    pub claim_name: String,
    pub claim_uid: String,
    pub created: i64,
    /// `None` on stamps written before these records existed.
    pub place: Option<Place>,
    pub pv_state: PvState,
}

impl Stamp {
    pub fn pairs(&self, me: &Instance) -> Vec<(String, String)> {
        let mut out = vec![
            (META_PROVISIONER.into(), me.provisioner.clone()),
            (META_CLUSTER.into(), me.cluster.clone()),
            (META_PV.into(), self.pv.clone()),
            (
                META_CLAIM.into(),
                crate::meta::qualified(Some(&self.claim_namespace), &self.claim_name),
            ),
            (META_CLAIM_UID.into(), self.claim_uid.clone()),
            (META_CREATED.into(), self.created.to_string()),
        ];
        if let Some(p) = &self.place {
            out.push((META_FSID.into(), p.fsid.clone()));
            out.push((META_POOL_ID.into(), p.pool_id.to_string()));
        }
        if self.pv_state != PvState::Unknown {
            out.push((META_PV_STATE.into(), self.pv_state.as_str().into()));
        }
        out
    }

    /// What to write on an image of this claim that already exists (an earlier attempt made
    /// it). The PV state never goes back from written, and an earlier creation time stays.
    pub fn adoption_pairs(
        &self,
        me: &Instance,
        existing: &BTreeMap<String, String>,
    ) -> Vec<(String, String)> {
        let stamped = stamped_by(existing, me) && Stamp::read(existing).is_some();
        self.pairs(me)
            .into_iter()
            .filter(|(k, _)| !(stamped && (k == META_PV_STATE || k == META_CREATED)))
            .collect()
    }

    /// Reads a stamp back; `None` when the image carries none (or only part of one).
    pub fn read(meta: &BTreeMap<String, String>) -> Option<Stamp> {
        let (claim_namespace, claim_name) = meta.get(META_CLAIM)?.split_once('/')?;
        let place = match (meta.get(META_FSID), meta.get(META_POOL_ID)) {
            (Some(fsid), Some(id)) => Some(Place {
                fsid: fsid.clone(),
                pool_id: id.parse().ok()?,
            }),
            _ => None,
        };
        Some(Stamp {
            pv: meta.get(META_PV)?.clone(),
            claim_namespace: claim_namespace.into(),
            claim_name: claim_name.into(),
            claim_uid: meta.get(META_CLAIM_UID)?.clone(),
            created: meta.get(META_CREATED)?.parse().ok()?,
            place,
            pv_state: PvState::read(meta),
        })
    }
}

/// The pair that records, just before a PV is created, that one may exist from now on.
pub fn pv_written_pair() -> Vec<(String, String)> {
    vec![(META_PV_STATE.into(), PvState::Written.as_str().into())]
}

/// Whether the image-meta names this instance (provisioner and Kubernetes cluster).
pub fn stamped_by(meta: &BTreeMap<String, String>, me: &Instance) -> bool {
    meta.get(META_PROVISIONER) == Some(&me.provisioner)
        && meta.get(META_CLUSTER) == Some(&me.cluster)
}

/// Why an image's stamp forbids deleting it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StampMismatch {
    #[error("the image is stamped as provisioned by {0:?}, not by us")]
    Provisioner(String),
    #[error(
        "the image is stamped as belonging to another Kubernetes cluster (kube-system uid {stamped}, this one's is {ours}); if the volume was moved to this cluster on purpose, hand it over with `rbd image-meta set POOL/IMAGE {key} {ours}`",
        key = META_CLUSTER
    )]
    Cluster { stamped: String, ours: String },
    #[error("the image is stamped as the volume of PV {owner}, not of {pv}")]
    Pv { owner: String, pv: String },
    #[error(
        "the image is stamped as made in Ceph cluster {stamped} but was found in cluster {live}: it is a copy (rbd export/import, mirroring) or the monitors now lead elsewhere, so it is not this volume's to delete"
    )]
    Fsid { stamped: String, live: String },
    #[error(
        "the image is stamped as made in pool id {stamped} but was found in pool id {live}: the pool was renamed and replaced, or the image copied, so it is not this volume's to delete; find the original with `ceph osd pool ls detail`"
    )]
    PoolId { stamped: i64, live: i64 },
    #[error(
        "the volume was made by the old ceph.com/rbd provisioner and its image carries no stamp confirming it is this PV's (one is written the first time the volume is seen bound); nothing proves the image is not another volume's. If it truly belongs to this PV, confirm it with `rbd image-meta set POOL/IMAGE {META_PROVISIONER} {provisioner}`, `... {META_CLUSTER} {cluster}` and `... {META_PV} {pv}`; deletion is retried"
    )]
    Unconfirmed {
        provisioner: String,
        cluster: String,
        pv: String,
    },
}

/// Whether a deletion of `pv`'s image may go ahead, given the image's metadata and where it
/// was found. Images made before stamps existed carry none: the PV's immutable spec and the
/// checks on it decide those alone, except for volumes of the old provisioner (`legacy`),
/// whose image must carry the stamp written when it was first seen bound.
pub fn check_delete(
    meta: &BTreeMap<String, String>,
    me: &Instance,
    pv: &str,
    live: &Place,
    legacy: bool,
) -> Result<(), StampMismatch> {
    if let Some(p) = meta.get(META_PROVISIONER)
        && p != &me.provisioner
    {
        return Err(StampMismatch::Provisioner(p.clone()));
    }
    if let Some(c) = meta.get(META_CLUSTER)
        && c != &me.cluster
    {
        // A volume carried into a new cluster on purpose (objects restored from a backup)
        // keeps the old cluster's stamp: say how to hand it over. An in-place upgrade keeps
        // the kube-system namespace, so its volumes never get here.
        return Err(StampMismatch::Cluster {
            stamped: c.clone(),
            ours: me.cluster.clone(),
        });
    }
    if let Some(owner) = meta.get(META_PV)
        && owner != pv
    {
        return Err(StampMismatch::Pv {
            owner: owner.clone(),
            pv: pv.to_string(),
        });
    }
    check_place(meta, live)?;
    if legacy && !(stamped_by(meta, me) && meta.get(META_PV).is_some_and(|p| p == pv)) {
        return Err(StampMismatch::Unconfirmed {
            provisioner: me.provisioner.clone(),
            cluster: me.cluster.clone(),
            pv: pv.to_string(),
        });
    }
    Ok(())
}

/// The image's recorded place (when it has one) must be where it was found.
pub fn check_place(meta: &BTreeMap<String, String>, live: &Place) -> Result<(), StampMismatch> {
    if let Some(f) = meta.get(META_FSID)
        && f != &live.fsid
    {
        return Err(StampMismatch::Fsid {
            stamped: f.clone(),
            live: live.fsid.clone(),
        });
    }
    if let Some(id) = meta.get(META_POOL_ID) {
        // An unreadable record is not a match.
        let stamped = id.parse::<i64>().unwrap_or(-1);
        if stamped != live.pool_id {
            return Err(StampMismatch::PoolId {
                stamped,
                live: live.pool_id,
            });
        }
    }
    Ok(())
}

/// What to write on a bound volume's image when the provisioner first sees it without its
/// records: the image of a volume another provisioner made (or this one before stamps had
/// these records). `None`: the image's stamp is someone else's, and nothing is written.
pub fn first_sight_pairs(
    meta: &BTreeMap<String, String>,
    me: &Instance,
    seen: &BoundVolume,
    live: &Place,
    now: i64,
) -> Result<Vec<(String, String)>, StampMismatch> {
    check_delete(meta, me, &seen.pv, live, false)?;
    let mut out = vec![
        (META_FSID.to_string(), live.fsid.clone()),
        (META_POOL_ID.to_string(), live.pool_id.to_string()),
        (META_PV_STATE.to_string(), PvState::Written.as_str().into()),
    ];
    if Stamp::read(meta).is_none() || !stamped_by(meta, me) {
        out.extend([
            (META_PROVISIONER.to_string(), me.provisioner.clone()),
            (META_CLUSTER.to_string(), me.cluster.clone()),
            (META_PV.to_string(), seen.pv.clone()),
            (
                META_CLAIM.to_string(),
                crate::meta::qualified(Some(&seen.claim_namespace), &seen.claim_name),
            ),
            (META_CLAIM_UID.to_string(), seen.claim_uid.clone()),
            (META_CREATED.to_string(), now.to_string()),
            (META_PV_UID.to_string(), seen.pv_uid.clone()),
            (META_ADOPTED.to_string(), now.to_string()),
        ]);
    }
    Ok(out)
}

/// A PV bound to its claim, as its image's stamp records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundVolume {
    pub pv: String,
    pub pv_uid: String,
    pub claim_namespace: String,
    pub claim_name: String,
    pub claim_uid: String,
}

/// Pairs to write just before moving an image to the trash, so that the trash sweep can
/// tell our entries from everyone else's. An unstamped image (made before stamps, or by the
/// old provisioner) that we are deleting anyway gets our name with it.
pub fn trash_pairs(
    meta: &BTreeMap<String, String>,
    me: &Instance,
    pv: &str,
    now: i64,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !stamped_by(meta, me) {
        out.push((META_PROVISIONER.into(), me.provisioner.clone()));
        out.push((META_CLUSTER.into(), me.cluster.clone()));
        out.push((META_PV.into(), pv.into()));
    }
    out.push((META_TRASHED.into(), now.to_string()));
    out
}

/// Whether a trash entry may be purged: only what this instance put there.
pub fn purgeable(meta: &BTreeMap<String, String>, me: &Instance) -> bool {
    stamped_by(meta, me) && meta.contains_key(META_TRASHED)
}

/// What the live cluster says about an image's PV and claim, for orphan collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// The PV named in the stamp exists.
    pub pv_exists: bool,
    /// Some PV (any name) names this pool/image in its spec.
    pub referenced: bool,
    /// The claim named in the stamp exists with the stamped uid.
    pub claim_exists: bool,
    /// Some client has the image open read/write (a node mapped it).
    pub watched: bool,
}

/// Why housekeeping leaves an image alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    NotOurs,
    IncompleteStamp,
    /// A PV was (or may have been) written for it: whatever removed that PV, the data is kept
    /// (a Retain volume whose PV an operator deleted, an etcd restore, another cluster).
    PvWritten,
    Watched,
    PvExists,
    ClaimExists,
    Young,
}

impl Keep {
    pub fn why(self) -> &'static str {
        match self {
            Keep::NotOurs => "not stamped by this provisioner and cluster",
            Keep::IncompleteStamp => "incomplete stamp",
            Keep::PvWritten => "a PV was written for it: kept, whoever removed the PV",
            Keep::Watched => "a client has it open (mapped on a node)",
            Keep::PvExists => "a PersistentVolume names it",
            Keep::ClaimExists => "its claim still exists (provisioning will adopt it)",
            Keep::Young => "younger than the grace period",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orphan {
    /// Ours, never given a PV, its claim gone, unused, older than the grace period: remove it.
    Collect,
    Keep(Keep),
}

/// Whether an image left behind (created, then the process died, then its claim went) may be
/// removed. Only an image that never had a PV qualifies, and everything else must agree too;
/// anything unknown keeps the image.
pub fn orphan(
    meta: &BTreeMap<String, String>,
    me: &Instance,
    live: Liveness,
    now: i64,
    grace: Duration,
) -> Orphan {
    if !stamped_by(meta, me) {
        return Orphan::Keep(Keep::NotOurs);
    }
    let Some(stamp) = Stamp::read(meta) else {
        return Orphan::Keep(Keep::IncompleteStamp);
    };
    if stamp.pv_state != PvState::None {
        return Orphan::Keep(Keep::PvWritten);
    }
    if live.watched {
        return Orphan::Keep(Keep::Watched);
    }
    if live.pv_exists || live.referenced {
        return Orphan::Keep(Keep::PvExists);
    }
    if live.claim_exists {
        return Orphan::Keep(Keep::ClaimExists);
    }
    if now.saturating_sub(stamp.created) < grace.as_secs() as i64 {
        return Orphan::Keep(Keep::Young);
    }
    Orphan::Collect
}

/// The record written before an image is created (in [`INTENTS_OBJECT`], keyed by image name):
/// the stamp the image is about to get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    pub image: String,
    pub meta: BTreeMap<String, String>,
}

impl Intent {
    pub fn new(image: &str, stamp: &Stamp, me: &Instance) -> Intent {
        Intent {
            image: image.to_string(),
            meta: stamp.pairs(me).into_iter().collect(),
        }
    }

    pub fn value(&self) -> Vec<u8> {
        serde_json::to_vec(&self.meta).unwrap_or_default()
    }

    /// A record read back; `None` when it is not a stamp of this instance.
    pub fn read(image: &str, value: &[u8], me: &Instance) -> Option<Intent> {
        let meta: BTreeMap<String, String> = serde_json::from_slice(value).ok()?;
        (stamped_by(&meta, me) && Stamp::read(&meta).is_some()).then(|| Intent {
            image: image.to_string(),
            meta,
        })
    }

    pub fn stamp(&self) -> Option<Stamp> {
        Stamp::read(&self.meta)
    }
}

/// What housekeeping does with an intent record, given what the pool holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntentAction {
    /// The image carries its stamp (or never came to exist and the record is old): drop it.
    Drop,
    /// The image exists without a stamp: the process died between creating and stamping it.
    /// Stamp it from the record; the usual orphan rules then apply.
    Stamp(Vec<(String, String)>),
    /// Too young to judge: the creation may still be under way.
    Wait,
}

/// `image_meta`: `None` when the image does not exist.
pub fn intent_action(
    intent: &Intent,
    image_meta: Option<&BTreeMap<String, String>>,
    now: i64,
    grace: Duration,
) -> IntentAction {
    let young = intent
        .stamp()
        .is_none_or(|s| now.saturating_sub(s.created) < grace.as_secs() as i64);
    match image_meta {
        None if young => IntentAction::Wait,
        None => IntentAction::Drop,
        Some(m) if m.contains_key(META_PROVISIONER) => IntentAction::Drop,
        Some(_) => IntentAction::Stamp(intent.meta.clone().into_iter().collect()),
    }
}

#[cfg(test)]
mod tests;
