//! Whether a bound claim asks for more space than its volume has. Pure.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use crate::params::Flavor;
use crate::quantity;
use crate::volume::{provisioned_by, round_up_mib};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResizeAction {
    Nothing,
    /// Grow the image and the PV from `from` to `to` bytes (a multiple of 1 MiB).
    Grow {
        from: u64,
        to: u64,
        flavor: Flavor,
    },
    /// The claim asks for less than the volume has (possible on servers that allow
    /// recovering from a failed expansion): RBD images are never shrunk.
    Shrink {
        requested: u64,
        current: u64,
    },
    /// The claim asks for more than its class's `maxSize`: refused, the volume keeps its size.
    AboveMax {
        requested: u64,
        max: u64,
    },
}

fn storage(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<u64> {
    round_up_mib(quantity::to_bytes(&q?.0).ok()?)
}

pub fn flavor_of(pv: &PersistentVolume) -> Flavor {
    if pv.spec.as_ref().is_some_and(|s| s.csi.is_some()) {
        Flavor::Csi
    } else {
        Flavor::Rbd
    }
}

/// Whether the PV's claimRef names this claim by uid.
pub fn bound_to(pv: &PersistentVolume, pvc: &PersistentVolumeClaim) -> bool {
    pv.spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.uid.as_deref())
        .is_some_and(|uid| Some(uid) == pvc.metadata.uid.as_deref())
}

/// `allow_expansion` is the class's `allowVolumeExpansion`, `max_size` its `maxSize`.
pub fn decide(
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    allow_expansion: bool,
    max_size: u64,
    provisioner: &str,
) -> ResizeAction {
    let ours = provisioned_by(pv) == Some(provisioner);
    if !ours || !bound_to(pv, pvc) || pv.metadata.deletion_timestamp.is_some() {
        return ResizeAction::Nothing;
    }
    let requested = storage(
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    );
    let current = storage(
        pv.spec
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage")),
    );
    match (requested, current) {
        (Some(r), Some(c)) if r > c && allow_expansion && r > max_size => ResizeAction::AboveMax {
            requested: r,
            max: max_size,
        },
        (Some(r), Some(c)) if r > c && allow_expansion => ResizeAction::Grow {
            from: c,
            to: r,
            flavor: flavor_of(pv),
        },
        (Some(r), Some(c)) if r < c => {
            // A claim bound to a larger volume than it asked for is normal (capacity is
            // rounded up, and pre-existing volumes may be larger), and then its status shows
            // that larger size. Only a request lowered after an expansion (newer servers allow
            // it down to the status capacity, to recover from a failed expansion) lands
            // between the two.
            let status = storage(
                pvc.status
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref())
                    .and_then(|c| c.get("storage")),
            );
            if status.is_some_and(|s| r >= s) {
                ResizeAction::Shrink {
                    requested: r,
                    current: c,
                }
            } else {
                ResizeAction::Nothing
            }
        }
        _ => ResizeAction::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::ANN_PROVISIONED_BY;
    use k8s_openapi::api::core::v1::{
        CSIPersistentVolumeSource, ObjectReference, PersistentVolumeClaimSpec,
        PersistentVolumeClaimStatus, PersistentVolumeSpec, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    const ME: &str = "ceph.com/rbd";
    const MIB: u64 = 1 << 20;

    fn q(s: &str) -> BTreeMap<String, Quantity> {
        BTreeMap::from([("storage".to_string(), Quantity(s.into()))])
    }

    fn pvc(request: &str, status: Option<&str>) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                resources: Some(VolumeResourceRequirements {
                    requests: Some(q(request)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                capacity: status.map(q),
                ..Default::default()
            }),
        }
    }

    fn pv(capacity: &str, by: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(ANN_PROVISIONED_BY.into(), by.into())])),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                capacity: Some(q(capacity)),
                claim_ref: Some(ObjectReference {
                    uid: Some("u1".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn never_beyond_the_class_max_size() {
        assert_eq!(
            decide(
                &pvc("2Gi", Some("1Gi")),
                &pv("1Gi", ME),
                true,
                1536 * MIB,
                ME
            ),
            ResizeAction::AboveMax {
                requested: 2048 * MIB,
                max: 1536 * MIB
            }
        );
        assert!(matches!(
            decide(
                &pvc("2Gi", Some("1Gi")),
                &pv("1Gi", ME),
                true,
                2048 * MIB,
                ME
            ),
            ResizeAction::Grow { .. }
        ));
    }

    #[test]
    fn grows_when_allowed() {
        assert_eq!(
            decide(&pvc("2Gi", Some("1Gi")), &pv("1Gi", ME), true, u64::MAX, ME),
            ResizeAction::Grow {
                from: 1024 * MIB,
                to: 2048 * MIB,
                flavor: Flavor::Rbd
            }
        );
        let mut v = pv("1Gi", ME);
        v.spec.as_mut().unwrap().csi = Some(CSIPersistentVolumeSource::default());
        assert!(matches!(
            decide(&pvc("2G", None), &v, true, u64::MAX, ME),
            ResizeAction::Grow { to, flavor: Flavor::Csi, .. } if to == 1908 * MIB
        ));
    }

    #[test]
    fn nothing_without_permission_or_ownership() {
        assert_eq!(
            decide(&pvc("2Gi", None), &pv("1Gi", ME), false, u64::MAX, ME),
            ResizeAction::Nothing
        );
        assert_eq!(
            decide(&pvc("2Gi", None), &pv("1Gi", "other"), true, u64::MAX, ME),
            ResizeAction::Nothing
        );
        let mut v = pv("1Gi", ME);
        v.spec.as_mut().unwrap().claim_ref.as_mut().unwrap().uid = Some("someone-else".into());
        assert_eq!(
            decide(&pvc("2Gi", None), &v, true, u64::MAX, ME),
            ResizeAction::Nothing
        );
    }

    #[test]
    fn equal_or_rounded_sizes_are_steady() {
        assert_eq!(
            decide(&pvc("1Gi", Some("1Gi")), &pv("1Gi", ME), true, u64::MAX, ME),
            ResizeAction::Nothing
        );
        // 1G rounds up to 954Mi, the capacity the PV was given.
        assert_eq!(
            decide(
                &pvc("1G", Some("954Mi")),
                &pv("954Mi", ME),
                true,
                u64::MAX,
                ME
            ),
            ResizeAction::Nothing
        );
        // A larger pre-existing volume is not a shrink request.
        assert_eq!(
            decide(
                &pvc("500Mi", Some("2Gi")),
                &pv("2Gi", ME),
                true,
                u64::MAX,
                ME
            ),
            ResizeAction::Nothing
        );
    }

    #[test]
    fn shrink_is_reported_not_done() {
        assert_eq!(
            decide(
                &pvc("1536Mi", Some("1Gi")),
                &pv("2Gi", ME),
                true,
                u64::MAX,
                ME
            ),
            ResizeAction::Shrink {
                requested: 1536 * MIB,
                current: 2048 * MIB
            }
        );
    }
}
