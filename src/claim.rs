//! Which claims are ours, and what to do with each. Pure functions of Kubernetes objects.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;

pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The only one Kubernetes 1.20's kube-controller-manager sets.
pub const ANN_STORAGE_PROVISIONER_BETA: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const ANN_STORAGE_CLASS_BETA: &str = "volume.beta.kubernetes.io/storage-class";

/// What to do with a claim now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimAction {
    /// Not ours, or nothing to do; the reason is for debug logs.
    Ignore(&'static str),
    /// Ours, but not yet: wait for the named condition.
    Wait(String),
    Provision,
}

/// The StorageClass a claim asks for: `spec.storageClassName`, else the legacy beta annotation.
pub fn class_name(pvc: &PersistentVolumeClaim) -> Option<&str> {
    pvc.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .or_else(|| annotation(pvc, ANN_STORAGE_CLASS_BETA))
        .filter(|n| !n.is_empty())
}

/// The provisioner kube-controller-manager handed the claim to, from either annotation.
pub fn handed_to(pvc: &PersistentVolumeClaim) -> Option<&str> {
    annotation(pvc, ANN_STORAGE_PROVISIONER)
        .or_else(|| annotation(pvc, ANN_STORAGE_PROVISIONER_BETA))
}

fn annotation<'a>(pvc: &'a PersistentVolumeClaim, key: &str) -> Option<&'a str> {
    pvc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Decides what to do with `pvc`, given its StorageClass (if it exists) and our name.
pub fn decide(
    pvc: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
    provisioner: &str,
) -> ClaimAction {
    if pvc.metadata.deletion_timestamp.is_some() {
        return ClaimAction::Ignore("claim is being deleted");
    }
    let spec = pvc.spec.as_ref();
    if spec
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty())
    {
        return ClaimAction::Ignore("claim is bound or being bound");
    }
    if pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") {
        return ClaimAction::Ignore("claim is bound");
    }
    let Some(class_name) = class_name(pvc) else {
        return ClaimAction::Ignore("claim names no StorageClass");
    };
    let handed = handed_to(pvc);
    if handed.is_some_and(|h| h != provisioner) {
        return ClaimAction::Ignore("claim is handed to another provisioner");
    }
    let Some(class) = class else {
        return if handed == Some(provisioner) {
            ClaimAction::Wait(format!(
                "StorageClass {class_name:?} does not exist; create it or change the claim's storageClassName"
            ))
        } else {
            ClaimAction::Ignore("StorageClass does not exist")
        };
    };
    if class.provisioner != provisioner {
        return ClaimAction::Ignore("StorageClass belongs to another provisioner");
    }
    if handed.is_none() {
        // kube-controller-manager sets the annotation once it finds no existing PV to bind;
        // provisioning before that could race with a matching pre-existing volume.
        return ClaimAction::Wait(
            "waiting for kube-controller-manager to hand the claim to this provisioner".into(),
        );
    }
    if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
        && annotation(pvc, ANN_SELECTED_NODE).is_none_or(str::is_empty)
    {
        return ClaimAction::Wait("waiting for the first consumer to be scheduled".into());
    }
    ClaimAction::Provision
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, PersistentVolumeClaimStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    const ME: &str = "ceph.com/rbd";

    fn class(provisioner: &str, mode: Option<&str>) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some("ceph-rbd".into()),
                ..Default::default()
            },
            provisioner: provisioner.into(),
            volume_binding_mode: mode.map(Into::into),
            ..Default::default()
        }
    }

    fn claim(annotations: &[(&str, &str)]) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("c".into()),
                namespace: Some("default".into()),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("ceph-rbd".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn beta_annotation_alone_is_enough() {
        let c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        assert_eq!(
            decide(&c, Some(&class(ME, None)), ME),
            ClaimAction::Provision
        );
    }

    #[test]
    fn ga_annotation_alone_is_enough() {
        let c = claim(&[(ANN_STORAGE_PROVISIONER, ME)]);
        assert_eq!(
            decide(&c, Some(&class(ME, None)), ME),
            ClaimAction::Provision
        );
    }

    #[test]
    fn waits_for_the_handover() {
        let c = claim(&[]);
        assert!(matches!(
            decide(&c, Some(&class(ME, None)), ME),
            ClaimAction::Wait(_)
        ));
    }

    #[test]
    fn other_provisioner() {
        let c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, "kubernetes.io/rbd")]);
        assert!(matches!(
            decide(&c, Some(&class("kubernetes.io/rbd", None)), ME),
            ClaimAction::Ignore(_)
        ));
        let c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        assert!(matches!(
            decide(&c, Some(&class("other", None)), ME),
            ClaimAction::Ignore(_)
        ));
        // Handed to someone else even though the class says us: theirs.
        let c = claim(&[(ANN_STORAGE_PROVISIONER, "x")]);
        assert!(matches!(
            decide(&c, Some(&class(ME, None)), ME),
            ClaimAction::Ignore(_)
        ));
    }

    #[test]
    fn custom_name() {
        let c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, "example.com/rbd")]);
        assert_eq!(
            decide(&c, Some(&class("example.com/rbd", None)), "example.com/rbd"),
            ClaimAction::Provision
        );
        assert!(matches!(
            decide(&c, Some(&class("example.com/rbd", None)), ME),
            ClaimAction::Ignore(_)
        ));
    }

    #[test]
    fn wait_for_first_consumer() {
        let k = class(ME, Some("WaitForFirstConsumer"));
        let c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        match decide(&c, Some(&k), ME) {
            ClaimAction::Wait(why) => assert!(why.contains("first consumer")),
            other => panic!("{other:?}"),
        }
        let c = claim(&[
            (ANN_STORAGE_PROVISIONER_BETA, ME),
            (ANN_SELECTED_NODE, "node-1"),
        ]);
        assert_eq!(decide(&c, Some(&k), ME), ClaimAction::Provision);
        let k = class(ME, Some("Immediate"));
        let c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        assert_eq!(decide(&c, Some(&k), ME), ClaimAction::Provision);
    }

    #[test]
    fn bound_or_deleted_claims_are_left_alone() {
        let mut c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        c.spec.as_mut().unwrap().volume_name = Some("pvc-1".into());
        assert!(matches!(
            decide(&c, Some(&class(ME, None)), ME),
            ClaimAction::Ignore(_)
        ));

        let mut c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        c.status = Some(PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            ..Default::default()
        });
        assert!(matches!(
            decide(&c, Some(&class(ME, None)), ME),
            ClaimAction::Ignore(_)
        ));

        let mut c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        c.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(matches!(
            decide(&c, Some(&class(ME, None)), ME),
            ClaimAction::Ignore(_)
        ));
    }

    #[test]
    fn missing_class() {
        let c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        match decide(&c, None, ME) {
            ClaimAction::Wait(why) => assert!(why.contains("ceph-rbd")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&claim(&[]), None, ME),
            ClaimAction::Ignore(_)
        ));
    }

    #[test]
    fn class_from_beta_annotation() {
        let mut c = claim(&[(ANN_STORAGE_CLASS_BETA, "legacy")]);
        c.spec.as_mut().unwrap().storage_class_name = None;
        assert_eq!(class_name(&c), Some("legacy"));
        let mut c = claim(&[]);
        c.spec.as_mut().unwrap().storage_class_name = Some(String::new());
        assert_eq!(class_name(&c), None);
        assert!(matches!(
            decide(&c, Some(&class(ME, None)), ME),
            ClaimAction::Ignore(_)
        ));
    }
}
