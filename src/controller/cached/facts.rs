//! What scans over every cached PV read, kept small: a hash where only equality is asked,
//! the object itself read back on a match, so that every answer is the one the whole object
//! gives.

use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use super::Cached;
use domain::claim::{self, Bindable};

/// What scans over every cached PV read, worked out once per watch event.
#[derive(Clone, Debug, Default)]
pub struct VolumeFacts {
    /// The hash of the (pool, image) its immutable volume source names.
    image: Option<u64>,
    bindable: Bindability,
}

/// Which claims kube-controller-manager's binder could bind a PV to.
#[derive(Clone, Debug, Default)]
enum Bindability {
    /// None: it has no spec.
    #[default]
    Never,
    /// At most the claim of this uid (hashed), which its claimRef names: a PV bound or
    /// pre-bound by uid (most PVs) binds no other claim (`claim::could_bind`).
    Claimed(u64),
    /// Any claim may fit: what the binder compares.
    Open(Box<Bindable>),
}

fn hashed(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

impl VolumeFacts {
    pub fn of(pv: &PersistentVolume) -> VolumeFacts {
        let bindable = match Bindable::of(pv) {
            None => Bindability::Never,
            Some(b) => match b.claim.as_ref().and_then(|r| r.uid.as_deref()) {
                Some(uid) => Bindability::Claimed(hashed(uid)),
                None => Bindability::Open(Box::new(b)),
            },
        };
        VolumeFacts {
            image: domain::reclaim::spec_image(pv).map(|(p, i)| hashed((p, i))),
            bindable,
        }
    }
}

impl Cached<PersistentVolume> {
    /// Whether its volume source names `pool`/`image`. An object that cannot be read back
    /// (never seen) counts as naming it: what asks then keeps the image.
    pub fn names_image(&self, pool: &str, image: &str) -> bool {
        if self.facts.image != Some(hashed((pool, image))) {
            return false;
        }
        self.object().map_or(true, |pv| {
            domain::reclaim::spec_image(&pv).is_some_and(|(p, i)| p == pool && i == image)
        })
    }

    /// Whether kube-controller-manager could bind `pvc` to this volume (`claim::could_bind`).
    /// An object that cannot be read back (never seen) counts as one that could: the claim
    /// then waits for the hand-over.
    pub fn could_bind(&self, pvc: &PersistentVolumeClaim) -> bool {
        match &self.facts.bindable {
            Bindability::Never => false,
            Bindability::Open(b) => claim::could_bind(pvc, b),
            Bindability::Claimed(uid) => {
                pvc.metadata.uid.as_deref().map(hashed) == Some(*uid)
                    && self.object().map_or(true, |pv| {
                        Bindable::of(&pv).is_some_and(|b| claim::could_bind(pvc, &b))
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{claims, volumes};
    use super::*;

    /// Every PV of the table against every claim of the table, each also with the uid of
    /// the claim the PV names, and with none: the answers of the whole objects.
    #[test]
    fn what_scans_read_is_what_the_objects_say() {
        let mut claimed = 0;
        for (what, pv) in volumes() {
            let c = Cached::new(pv.clone()).unwrap();
            let named = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
            for (claim_what, mut pvc) in claims() {
                for uid in [
                    pvc.metadata.uid.clone(),
                    named.and_then(|r| r.uid.clone()),
                    None,
                ] {
                    pvc.metadata.uid = uid;
                    let want = Bindable::of(&pv).is_some_and(|b| claim::could_bind(&pvc, &b));
                    claimed += usize::from(want);
                    assert_eq!(c.could_bind(&pvc), want, "{what} / {claim_what}");
                }
            }
            let image = domain::reclaim::spec_image(&pv);
            for (pool, name) in [
                (
                    "kube",
                    format!("kubernetes-dynamic-pvc-{}", super::super::tests::UID),
                ),
                ("kube", "other".into()),
                (
                    "other",
                    format!("kubernetes-dynamic-pvc-{}", super::super::tests::UID),
                ),
                ("", String::new()),
            ] {
                let want = image.as_ref() == Some(&(pool.to_string(), name.clone()));
                assert_eq!(c.names_image(pool, &name), want, "{what}: {pool}/{name}");
            }
        }
        // Both answers occur, and the claimed path is taken.
        assert!(claimed > 0);
    }

    #[test]
    fn a_volume_claimed_by_uid_keeps_a_hash_and_one_open_keeps_what_the_binder_compares() {
        for (what, pv) in volumes() {
            let c = Cached::new(pv.clone()).unwrap();
            let by_uid = pv
                .spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_some_and(|r| r.uid.is_some());
            match &c.facts.bindable {
                Bindability::Claimed(_) => assert!(by_uid, "{what}"),
                Bindability::Open(b) => {
                    assert!(!by_uid, "{what}");
                    assert_eq!(Some(&**b), Bindable::of(&pv).as_ref(), "{what}");
                }
                Bindability::Never => assert!(pv.spec.is_none(), "{what}"),
            }
        }
    }
}
