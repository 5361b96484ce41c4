//! Which claims are ours, and what to do with each. Pure functions of Kubernetes objects.

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::meta::annotation;

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
        .or_else(|| annotation(&pvc.metadata, ANN_STORAGE_CLASS_BETA))
        .filter(|n| !n.is_empty())
}

/// The provisioner kube-controller-manager handed the claim to, from either annotation.
pub fn handed_to(pvc: &PersistentVolumeClaim) -> Option<&str> {
    annotation(&pvc.metadata, ANN_STORAGE_PROVISIONER)
        .or_else(|| annotation(&pvc.metadata, ANN_STORAGE_PROVISIONER_BETA))
}

/// Whether a claim may be provisioned before kube-controller-manager hands it over (the early
/// path, `enabled` by the flag): not handed to anyone yet, of a class of ours, and only when
/// every existing PV is known (`volumes_listed`) and none could be bound to the claim instead
/// (`could_bind_existing`, a scan over every PV, asked last).
pub fn may_provision_early(
    enabled: bool,
    pvc: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
    provisioner: &str,
    volumes_listed: bool,
    could_bind_existing: impl FnOnce() -> bool,
) -> bool {
    enabled
        && handed_to(pvc).is_none()
        && class.is_some_and(|c| c.provisioner == provisioner)
        && volumes_listed
        && !could_bind_existing()
}

/// Decides what to do with `pvc`, given its StorageClass (if it exists) and our name.
/// `early`: the caller allows provisioning before kube-controller-manager hands the claim
/// over, and knows that no Available PersistentVolume could satisfy it ([`could_bind`]).
pub fn decide(
    pvc: &PersistentVolumeClaim,
    class: Option<&StorageClass>,
    provisioner: &str,
    early: bool,
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
    let selector = pvc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some();
    if handed.is_none() && (!early || selector) {
        // kube-controller-manager sets the annotation once it finds no existing PV to bind;
        // before that only a claim no Available PV could satisfy is safe to provision.
        return ClaimAction::Wait(
            "waiting for kube-controller-manager to hand the claim to this provisioner".into(),
        );
    }
    if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
        && annotation(&pvc.metadata, ANN_SELECTED_NODE).is_none_or(str::is_empty)
    {
        return ClaimAction::Wait("waiting for the first consumer to be scheduled".into());
    }
    ClaimAction::Provision
}

/// What kube-controller-manager's binder looks at in a PV when it picks one for a claim: kept
/// for every cached PV, so that deciding about a claim scans these instead of whole objects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bindable {
    pub deleting: bool,
    pub phase: Option<String>,
    /// `spec.claimRef`.
    pub claim: Option<ClaimRef>,
    pub class: String,
    pub volume_mode: Option<String>,
    pub access_modes: Vec<String>,
    /// `capacity.storage` in bytes; `None` when missing or unreadable.
    pub capacity: Option<u128>,
}

/// The claim a PV names, as far as the binder reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClaimRef {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
}

impl Bindable {
    /// `None` for a PV without a spec, which nothing can bind to.
    pub fn of(pv: &PersistentVolume) -> Option<Bindable> {
        let v = pv.spec.as_ref()?;
        Some(Bindable {
            deleting: pv.metadata.deletion_timestamp.is_some(),
            phase: pv.status.as_ref().and_then(|s| s.phase.clone()),
            claim: v.claim_ref.as_ref().map(|r| ClaimRef {
                namespace: r.namespace.clone(),
                name: r.name.clone(),
                uid: r.uid.clone(),
            }),
            class: v.storage_class_name.clone().unwrap_or_default(),
            volume_mode: v.volume_mode.clone(),
            access_modes: v.access_modes.clone().unwrap_or_default(),
            capacity: v
                .capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .and_then(|q| crate::quantity::to_bytes(&q.0).ok()),
        })
    }
}

/// Whether kube-controller-manager could bind `pvc` to the existing volume `pv` instead of
/// asking for a new one: an Available PV of the same class, large enough, with the access
/// modes and volume mode the claim asks for. (A PV pre-bound to another claim, or being
/// deleted, cannot be chosen.)
pub fn could_bind(pvc: &PersistentVolumeClaim, pv: &Bindable) -> bool {
    let Some(c) = pvc.spec.as_ref() else {
        return false;
    };
    if pv.deleting {
        return false;
    }
    let m = &pvc.metadata;
    let names_claim = |r: &ClaimRef| r.name == m.name && r.namespace == m.namespace;
    let free = match &pv.claim {
        None => true,
        Some(r) => names_claim(r) && r.uid.as_deref().is_none_or(|u| Some(u) == m.uid.as_deref()),
    };
    // Already chosen for this very claim (by uid): the binder finishes the binding whatever
    // the PV's phase says. Kubernetes 1.37's binder marks such a PV Bound before it sets the
    // claim's volumeName, so a claim update seen in between must not count as "unserved".
    let chosen = pv
        .claim
        .as_ref()
        .is_some_and(|r| names_claim(r) && r.uid.is_some() && r.uid == m.uid);
    if chosen {
        return true;
    }
    if !free
        || !matches!(
            pv.phase.as_deref(),
            None | Some("Available") | Some("Pending")
        )
    {
        return false;
    }
    if pv.class != class_name(pvc).unwrap_or("") {
        return false;
    }
    let (wanted_mode, offered_mode) = (c.volume_mode.as_deref(), pv.volume_mode.as_deref());
    if wanted_mode.unwrap_or("Filesystem") != offered_mode.unwrap_or("Filesystem") {
        return false;
    }
    let wanted = c.access_modes.as_deref().unwrap_or_default();
    if !wanted.iter().all(|m| pv.access_modes.contains(m)) {
        return false;
    }
    let request = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| crate::quantity::to_bytes(&q.0).ok());
    match (request, pv.capacity) {
        (Some(r), Some(c)) => c >= r,
        // Unknown sizes: assume it might match, and wait for the hand-over.
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use k8s_openapi::api::core::v1::PersistentVolumeClaimStatus;
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
        let mut c = fixtures::claim("default", "c", "", None);
        c.metadata.annotations = fixtures::map(annotations);
        c.spec.as_mut().unwrap().storage_class_name = Some("ceph-rbd".into());
        c
    }

    #[test]
    fn early_provisioning_needs_every_fact() {
        let handed = claim(&[(ANN_STORAGE_PROVISIONER, ME)]);
        let fresh = claim(&[]);
        let ours = class(ME, None);
        let theirs = class("example.com/other", None);
        // (enabled, claim, class, volumes listed, an existing PV could bind) → early?
        type Case<'a> = (
            bool,
            &'a PersistentVolumeClaim,
            Option<&'a StorageClass>,
            bool,
            bool,
            bool,
        );
        let cases: &[Case] = &[
            (true, &fresh, Some(&ours), true, false, true),
            (false, &fresh, Some(&ours), true, false, false),
            (true, &handed, Some(&ours), true, false, false),
            (true, &fresh, Some(&theirs), true, false, false),
            (true, &fresh, None, true, false, false),
            (true, &fresh, Some(&ours), false, false, false),
            (true, &fresh, Some(&ours), true, true, false),
        ];
        for (i, &(enabled, pvc, class, listed, could_bind, want)) in cases.iter().enumerate() {
            let got = may_provision_early(enabled, pvc, class, ME, listed, || could_bind);
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn the_scan_is_skipped_when_a_cheaper_fact_says_no() {
        let scanned = std::cell::Cell::new(false);
        let scan = || {
            scanned.set(true);
            false
        };
        assert!(!may_provision_early(
            true,
            &claim(&[]),
            Some(&class(ME, None)),
            ME,
            false,
            scan
        ));
        assert!(!scanned.get());
    }

    #[test]
    fn either_annotation_alone_is_enough() {
        for ann in [ANN_STORAGE_PROVISIONER_BETA, ANN_STORAGE_PROVISIONER] {
            let c = claim(&[(ann, ME)]);
            let action = decide(&c, Some(&class(ME, None)), ME, false);
            assert_eq!(action, ClaimAction::Provision, "{ann}");
        }
    }

    #[test]
    fn waits_for_the_handover() {
        let c = claim(&[]);
        assert!(matches!(
            decide(&c, Some(&class(ME, None)), ME, false),
            ClaimAction::Wait(_)
        ));
    }

    #[test]
    fn other_provisioner() {
        // (annotation, its value, the class's provisioner)
        for (ann, handed_to, class_says) in [
            (
                ANN_STORAGE_PROVISIONER_BETA,
                "kubernetes.io/rbd",
                "kubernetes.io/rbd",
            ),
            (ANN_STORAGE_PROVISIONER_BETA, ME, "other"),
            // Handed to someone else even though the class says us: theirs.
            (ANN_STORAGE_PROVISIONER, "x", ME),
        ] {
            let c = claim(&[(ann, handed_to)]);
            let action = decide(&c, Some(&class(class_says, None)), ME, false);
            assert!(matches!(action, ClaimAction::Ignore(_)), "{action:?}");
        }
    }

    #[test]
    fn custom_name() {
        let c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, "example.com/rbd")]);
        assert_eq!(
            decide(
                &c,
                Some(&class("example.com/rbd", None)),
                "example.com/rbd",
                false
            ),
            ClaimAction::Provision
        );
        assert!(matches!(
            decide(&c, Some(&class("example.com/rbd", None)), ME, false),
            ClaimAction::Ignore(_)
        ));
    }

    #[test]
    fn wait_for_first_consumer() {
        let k = class(ME, Some("WaitForFirstConsumer"));
        let c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        match decide(&c, Some(&k), ME, false) {
            ClaimAction::Wait(why) => assert!(why.contains("first consumer")),
            other => panic!("{other:?}"),
        }
        let c = claim(&[
            (ANN_STORAGE_PROVISIONER_BETA, ME),
            (ANN_SELECTED_NODE, "node-1"),
        ]);
        assert_eq!(decide(&c, Some(&k), ME, false), ClaimAction::Provision);
        let k = class(ME, Some("Immediate"));
        let c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        assert_eq!(decide(&c, Some(&k), ME, false), ClaimAction::Provision);
    }

    #[test]
    fn bound_or_deleted_claims_are_left_alone() {
        let mut c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        c.spec.as_mut().unwrap().volume_name = Some("pvc-1".into());
        assert!(matches!(
            decide(&c, Some(&class(ME, None)), ME, false),
            ClaimAction::Ignore(_)
        ));

        let mut c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        c.status = Some(PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            ..Default::default()
        });
        assert!(matches!(
            decide(&c, Some(&class(ME, None)), ME, false),
            ClaimAction::Ignore(_)
        ));

        let mut c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        c.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert!(matches!(
            decide(&c, Some(&class(ME, None)), ME, false),
            ClaimAction::Ignore(_)
        ));
    }

    #[test]
    fn missing_class() {
        let c = claim(&[(ANN_STORAGE_PROVISIONER_BETA, ME)]);
        match decide(&c, None, ME, false) {
            ClaimAction::Wait(why) => assert!(why.contains("ceph-rbd")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(&claim(&[]), None, ME, false),
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
            decide(&c, Some(&class(ME, None)), ME, false),
            ClaimAction::Ignore(_)
        ));
    }

    #[test]
    fn early_provisioning_only_when_nothing_else_could_serve_the_claim() {
        let c = claim(&[]);
        let k = class(ME, None);
        assert!(matches!(
            decide(&c, Some(&k), ME, false),
            ClaimAction::Wait(_)
        ));
        assert_eq!(decide(&c, Some(&k), ME, true), ClaimAction::Provision);
        // Another provisioner's class: never early.
        assert!(matches!(
            decide(&c, Some(&class("other", None)), ME, true),
            ClaimAction::Ignore(_)
        ));
        // WaitForFirstConsumer still waits for the node.
        let wffc = class(ME, Some("WaitForFirstConsumer"));
        match decide(&c, Some(&wffc), ME, true) {
            ClaimAction::Wait(why) => assert!(why.contains("first consumer"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A selector asks for a particular existing volume: leave it to the binder.
        let mut sel = claim(&[]);
        sel.spec.as_mut().unwrap().selector = Some(Default::default());
        assert!(matches!(
            decide(&sel, Some(&k), ME, true),
            ClaimAction::Wait(_)
        ));
    }

    #[test]
    fn which_volumes_could_bind_a_claim() {
        use k8s_openapi::api::core::v1::{
            ObjectReference, PersistentVolumeSpec, PersistentVolumeStatus,
            VolumeResourceRequirements,
        };
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let mut c = claim(&[]);
        let spec = c.spec.as_mut().unwrap();
        spec.access_modes = Some(vec!["ReadWriteOnce".into()]);
        spec.resources = Some(VolumeResourceRequirements {
            requests: Some([("storage".to_string(), Quantity("1Gi".into()))].into()),
            ..Default::default()
        });
        let could_bind = |c: &PersistentVolumeClaim, pv: &PersistentVolume| {
            could_bind(c, &Bindable::of(pv).unwrap())
        };
        let pv = |class: &str, size: &str, modes: &[&str]| PersistentVolume {
            metadata: ObjectMeta::default(),
            spec: Some(PersistentVolumeSpec {
                storage_class_name: Some(class.into()),
                capacity: Some([("storage".to_string(), Quantity(size.into()))].into()),
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                ..Default::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some("Available".into()),
                ..Default::default()
            }),
        };
        assert!(could_bind(&c, &pv("ceph-rbd", "2Gi", &["ReadWriteOnce"])));
        assert!(could_bind(
            &c,
            &pv("ceph-rbd", "1Gi", &["ReadWriteOnce", "ReadOnlyMany"])
        ));
        assert!(
            !could_bind(&c, &pv("ceph-rbd", "512Mi", &["ReadWriteOnce"])),
            "too small"
        );
        assert!(
            !could_bind(&c, &pv("other", "2Gi", &["ReadWriteOnce"])),
            "other class"
        );
        assert!(
            !could_bind(&c, &pv("ceph-rbd", "2Gi", &["ReadOnlyMany"])),
            "modes"
        );
        let mut bound = pv("ceph-rbd", "2Gi", &["ReadWriteOnce"]);
        bound.status.as_mut().unwrap().phase = Some("Bound".into());
        assert!(!could_bind(&c, &bound));
        let mut taken = pv("ceph-rbd", "2Gi", &["ReadWriteOnce"]);
        taken.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
            name: Some("someone-else".into()),
            namespace: Some("default".into()),
            ..Default::default()
        });
        assert!(!could_bind(&c, &taken), "pre-bound to another claim");
        let mut block = pv("ceph-rbd", "2Gi", &["ReadWriteOnce"]);
        block.spec.as_mut().unwrap().volume_mode = Some("Block".into());
        assert!(!could_bind(&c, &block), "volume mode");
        // Chosen for this claim by uid and already marked Bound (1.37's binder order).
        let mut chosen = pv("ceph-rbd", "2Gi", &["ReadWriteOnce"]);
        chosen.status.as_mut().unwrap().phase = Some("Bound".into());
        chosen.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
            name: c.metadata.name.clone(),
            namespace: c.metadata.namespace.clone(),
            uid: Some("claim-uid".into()),
            ..Default::default()
        });
        let mut with_uid = c.clone();
        with_uid.metadata.uid = Some("claim-uid".into());
        assert!(could_bind(&with_uid, &chosen), "chosen for this claim");
        with_uid.metadata.uid = Some("another-uid".into());
        assert!(
            !could_bind(&with_uid, &chosen),
            "chosen for an earlier claim of that name"
        );
    }
}
