//! Whose an image is: the image-meta this provisioner writes on every image it creates (and
//! on every image it trashes), and the decisions that rest on it. Pure.
//!
//! Names alone prove nothing: the in-tree provisioner, the old external one, an operator's
//! `rbd create` and another Kubernetes cluster sharing the pool all use the same
//! `kubernetes-dynamic-pvc-` prefix. The stamp names the provisioner, the Kubernetes
//! cluster (the uid of its `kube-system` namespace, which nobody can choose), the PV and the
//! claim. Purging from the trash and collecting orphans require our stamp; deletion refuses
//! an image stamped for another PV.

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

pub const KEYS: &[&str] = &[
    META_PROVISIONER,
    META_CLUSTER,
    META_PV,
    META_CLAIM,
    META_CLAIM_UID,
    META_CREATED,
    META_TRASHED,
];

/// This provisioner instance: its name and the Kubernetes cluster it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub provisioner: String,
    /// The uid of the cluster's `kube-system` namespace.
    pub cluster: String,
}

/// What we write on an image at creation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub pv: String,
    pub claim_namespace: String,
    pub claim_name: String,
    pub claim_uid: String,
    pub created: i64,
}

impl Stamp {
    pub fn pairs(&self, me: &Instance) -> Vec<(String, String)> {
        vec![
            (META_PROVISIONER.into(), me.provisioner.clone()),
            (META_CLUSTER.into(), me.cluster.clone()),
            (META_PV.into(), self.pv.clone()),
            (
                META_CLAIM.into(),
                format!("{}/{}", self.claim_namespace, self.claim_name),
            ),
            (META_CLAIM_UID.into(), self.claim_uid.clone()),
            (META_CREATED.into(), self.created.to_string()),
        ]
    }

    /// Reads a stamp back; `None` when the image carries none (or only part of one).
    pub fn read(meta: &BTreeMap<String, String>) -> Option<Stamp> {
        let (claim_namespace, claim_name) = meta.get(META_CLAIM)?.split_once('/')?;
        Some(Stamp {
            pv: meta.get(META_PV)?.clone(),
            claim_namespace: claim_namespace.into(),
            claim_name: claim_name.into(),
            claim_uid: meta.get(META_CLAIM_UID)?.clone(),
            created: meta.get(META_CREATED)?.parse().ok()?,
        })
    }
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
}

/// Whether a deletion of `pv`'s image may go ahead, given the image's metadata. Images made
/// before stamps existed (or by the old provisioner) carry none: the PV's immutable spec
/// and the checks on it decide those alone.
pub fn check_delete(
    meta: &BTreeMap<String, String>,
    me: &Instance,
    pv: &str,
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
    Ok(())
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
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Orphan {
    /// Ours, unreferenced, its claim gone, older than the grace period: remove it.
    Collect,
    Keep(&'static str),
}

/// Whether an image left behind (created, then the process died, then its claim went) may be
/// removed. Everything must agree; anything unknown keeps the image.
pub fn orphan(
    meta: &BTreeMap<String, String>,
    me: &Instance,
    live: Liveness,
    now: i64,
    grace: Duration,
) -> Orphan {
    if !stamped_by(meta, me) {
        return Orphan::Keep("not stamped by this provisioner and cluster");
    }
    let Some(stamp) = Stamp::read(meta) else {
        return Orphan::Keep("incomplete stamp");
    };
    if live.pv_exists || live.referenced {
        return Orphan::Keep("a PersistentVolume names it");
    }
    if live.claim_exists {
        return Orphan::Keep("its claim still exists (provisioning will adopt it)");
    }
    if now.saturating_sub(stamp.created) < grace.as_secs() as i64 {
        return Orphan::Keep("younger than the grace period");
    }
    Orphan::Collect
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Instance {
        Instance {
            provisioner: "ceph.com/rbd".into(),
            cluster: "c-1".into(),
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            pv: "pvc-u1".into(),
            claim_namespace: "ns".into(),
            claim_name: "data".into(),
            claim_uid: "u1".into(),
            created: 1000,
        }
    }

    fn meta_of(pairs: Vec<(String, String)>) -> BTreeMap<String, String> {
        pairs.into_iter().collect()
    }

    #[test]
    fn stamps_round_trip() {
        let m = meta_of(stamp().pairs(&me()));
        assert_eq!(Stamp::read(&m), Some(stamp()));
        assert!(stamped_by(&m, &me()));
        let other = Instance {
            cluster: "c-2".into(),
            ..me()
        };
        assert!(!stamped_by(&m, &other), "another Kubernetes cluster");
        assert_eq!(Stamp::read(&BTreeMap::new()), None);
    }

    #[test]
    fn deletion_refuses_an_image_stamped_for_another_pv_or_owner() {
        let m = meta_of(stamp().pairs(&me()));
        assert_eq!(check_delete(&m, &me(), "pvc-u1"), Ok(()));
        assert!(
            check_delete(&m, &me(), "pvc-u2")
                .unwrap_err()
                .to_string()
                .contains("pvc-u1")
        );
        let other = Instance {
            provisioner: "x.io/rbd".into(),
            ..me()
        };
        assert!(check_delete(&m, &other, "pvc-u1").is_err());
        let other = Instance {
            cluster: "c-9".into(),
            ..me()
        };
        assert!(check_delete(&m, &other, "pvc-u1").is_err());
        assert_eq!(
            check_delete(&BTreeMap::new(), &me(), "pvc-u1"),
            Ok(()),
            "unstamped"
        );
    }

    #[test]
    fn only_what_we_trashed_is_purged() {
        let mut m = meta_of(stamp().pairs(&me()));
        assert!(!purgeable(&m, &me()), "ours but never trashed by us");
        m.extend(trash_pairs(&m.clone(), &me(), "pvc-u1", 2000));
        assert!(purgeable(&m, &me()));
        let other = Instance {
            cluster: "c-2".into(),
            ..me()
        };
        assert!(!purgeable(&m, &other));
        // An operator's `rbd trash mv` of an unstamped image.
        assert!(!purgeable(&BTreeMap::new(), &me()));
        // An unstamped image we delete gets our name with the trash mark.
        let t = meta_of(trash_pairs(&BTreeMap::new(), &me(), "pvc-old", 5));
        assert!(purgeable(&t, &me()));
        assert_eq!(t.get(META_PV).map(String::as_str), Some("pvc-old"));
    }

    #[test]
    fn orphans_need_every_fact_to_agree() {
        let m = meta_of(stamp().pairs(&me()));
        let gone = Liveness {
            pv_exists: false,
            referenced: false,
            claim_exists: false,
        };
        let grace = Duration::from_secs(60);
        assert_eq!(orphan(&m, &me(), gone, 2000, grace), Orphan::Collect);
        assert!(matches!(
            orphan(&m, &me(), gone, 1030, grace),
            Orphan::Keep(_)
        ));
        for live in [
            Liveness {
                pv_exists: true,
                ..gone
            },
            Liveness {
                referenced: true,
                ..gone
            },
            Liveness {
                claim_exists: true,
                ..gone
            },
        ] {
            assert!(matches!(
                orphan(&m, &me(), live, 2000, grace),
                Orphan::Keep(_)
            ));
        }
        assert!(matches!(
            orphan(&BTreeMap::new(), &me(), gone, 2000, grace),
            Orphan::Keep(_)
        ));
        let other = Instance {
            provisioner: "x.io/rbd".into(),
            ..me()
        };
        assert!(matches!(
            orphan(&m, &other, gone, 2000, grace),
            Orphan::Keep(_)
        ));
    }
}
