//! Watched PVs and claims as the caches keep them.
//!
//! A k8s-openapi `PersistentVolume` takes about 6.4 KB of heap for a 1.1 KB object (its spec
//! has a field for every volume type; every map is a B-tree node), a claim about 3.9 KB. The
//! caches hold every PV and claim of the cluster, so they keep each one as its JSON instead,
//! `managedFields` dropped, with the little metadata the watch machinery needs and the facts
//! that scans over all of them read. A reconcile reads the whole object back from that JSON,
//! which holds every field the server sent that k8s-openapi knows. Dropping `managedFields`
//! (server-side-apply bookkeeping, often larger than the rest of the object) loses nothing:
//! nothing here writes a cached object back whole, only patches of the fields it changes.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::{Deserialize, Serialize};

use crate::domain::claim::Bindable;

/// An object kind the caches keep as [`Cached`], with what scans read of it.
pub trait Lean:
    Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
    type Facts: Clone + fmt::Debug + Send + Sync + 'static;
    fn facts(&self) -> Self::Facts;
}

/// What scans over every cached PV read, worked out once per watch event.
#[derive(Clone, Debug, Default)]
pub struct VolumeFacts {
    /// The (pool, image) its immutable volume source names.
    pub image: Option<(String, String)>,
    pub bindable: Option<Bindable>,
}

impl Lean for PersistentVolume {
    type Facts = VolumeFacts;
    fn facts(&self) -> VolumeFacts {
        VolumeFacts {
            image: crate::domain::reclaim::spec_image(self),
            bindable: Bindable::of(self),
        }
    }
}

impl Lean for PersistentVolumeClaim {
    type Facts = ();
    fn facts(&self) {}
}

/// A watched object kept as JSON; see the module documentation.
#[derive(Clone)]
pub struct Cached<K: Lean> {
    /// Name, namespace, uid, resourceVersion and deletionTimestamp only.
    metadata: ObjectMeta,
    json: Box<[u8]>,
    pub facts: K::Facts,
}

impl<K: Lean> Cached<K> {
    pub fn new(mut full: K) -> Result<Cached<K>, serde_json::Error> {
        full.meta_mut().managed_fields = None;
        let json = serde_json::to_vec(&full)?.into_boxed_slice();
        let facts = full.facts();
        let m = full.meta_mut();
        let metadata = ObjectMeta {
            name: m.name.take(),
            namespace: m.namespace.take(),
            uid: m.uid.take(),
            resource_version: m.resource_version.take(),
            deletion_timestamp: m.deletion_timestamp.take(),
            ..ObjectMeta::default()
        };
        Ok(Cached {
            metadata,
            json,
            facts,
        })
    }

    /// The whole object, as the watch delivered it (less `managedFields`).
    pub fn object(&self) -> Result<K, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }

    #[cfg(test)]
    fn json_len(&self) -> usize {
        self.json.len()
    }
}

impl<K: Lean> fmt::Debug for Cached<K> {
    // The JSON may be long and says nothing a log line needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("kind", &K::kind(&()))
            .field("namespace", &self.metadata.namespace)
            .field("name", &self.metadata.name)
            .field("uid", &self.metadata.uid)
            .field("facts", &self.facts)
            .finish()
    }
}

impl<'de, K: Lean> Deserialize<'de> for Cached<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Cached::new(K::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl<K: Lean> Resource for Cached<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        K::kind(&())
    }
    fn group(_: &()) -> Cow<'_, str> {
        K::group(&())
    }
    fn version(_: &()) -> Cow<'_, str> {
        K::version(&())
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        K::api_version(&())
    }
    fn plural(_: &()) -> Cow<'_, str> {
        K::plural(&())
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
        PersistentVolumeSpec, PersistentVolumeStatus, RBDPersistentVolumeSource, SecretReference,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};

    fn meta(name: &str, ns: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: ns.map(Into::into),
            uid: Some(format!("uid-{name}")),
            resource_version: Some("42".into()),
            annotations: Some(
                [(
                    "pv.kubernetes.io/provisioned-by".into(),
                    "ceph.com/rbd".into(),
                )]
                .into(),
            ),
            labels: Some([("app".into(), "db".into())].into()),
            finalizers: Some(vec!["kubernetes.io/pv-protection".into()]),
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some("kube-controller-manager".into()),
                ..Default::default()
            }]),
            deletion_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            ..Default::default()
        }
    }

    fn pv() -> PersistentVolume {
        PersistentVolume {
            metadata: meta("pvc-1", None),
            spec: Some(PersistentVolumeSpec {
                storage_class_name: Some("ceph-rbd".into()),
                capacity: Some([("storage".into(), Quantity("1Gi".into()))].into()),
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                persistent_volume_reclaim_policy: Some("Delete".into()),
                claim_ref: Some(ObjectReference {
                    namespace: Some("default".into()),
                    name: Some("data".into()),
                    uid: Some("1".into()),
                    ..Default::default()
                }),
                rbd: Some(RBDPersistentVolumeSource {
                    monitors: vec!["10.0.0.1:6789".into()],
                    pool: Some("kube".into()),
                    image: "kubernetes-dynamic-pvc-1".into(),
                    user: Some("kube".into()),
                    secret_ref: Some(SecretReference {
                        name: Some("ceph-user".into()),
                        namespace: Some("default".into()),
                    }),
                    ..Default::default()
                }),
                mount_options: Some(vec!["discard".into()]),
                ..Default::default()
            }),
            status: Some(PersistentVolumeStatus {
                phase: Some("Bound".into()),
                ..Default::default()
            }),
        }
    }

    fn claim() -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: meta("data", Some("default")),
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: Some("ceph-rbd".into()),
                volume_name: Some("pvc-1".into()),
                ..Default::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some("Bound".into()),
                capacity: Some([("storage".into(), Quantity("1Gi".into()))].into()),
                ..Default::default()
            }),
        }
    }

    /// Everything but `managedFields` comes back, whether parsed from the API's JSON or made
    /// from an object.
    fn round_trip<K: Lean + PartialEq + fmt::Debug>(full: K) {
        let mut want = full.clone();
        want.meta_mut().managed_fields = None;
        let from_json: Cached<K> =
            serde_json::from_value(serde_json::to_value(&full).unwrap()).unwrap();
        assert_eq!(from_json.object().unwrap(), want);
        let made = Cached::new(full).unwrap();
        assert_eq!(made.object().unwrap(), want);
        let m = made.meta();
        assert_eq!(
            (&m.name, &m.namespace, &m.uid, &m.resource_version),
            (
                &want.meta().name,
                &want.meta().namespace,
                &want.meta().uid,
                &want.meta().resource_version
            )
        );
        assert!(m.deletion_timestamp.is_some());
        assert!(m.annotations.is_none() && m.finalizers.is_none() && m.managed_fields.is_none());
    }

    #[test]
    fn volumes_and_claims_come_back_whole() {
        round_trip(pv());
        round_trip(claim());
    }

    #[test]
    fn volume_facts_are_those_of_the_object() {
        let c = Cached::new(pv()).unwrap();
        assert_eq!(
            c.facts.image,
            Some(("kube".into(), "kubernetes-dynamic-pvc-1".into()))
        );
        assert_eq!(c.facts.bindable, Bindable::of(&pv()));
        let b = c.facts.bindable.unwrap();
        assert_eq!((b.capacity, b.class.as_str()), (Some(1 << 30), "ceph-rbd"));
    }

    #[test]
    fn the_cache_keeps_less_than_the_object() {
        let full = serde_json::to_vec(&pv()).unwrap();
        let c = Cached::new(pv()).unwrap();
        assert!(c.json_len() < full.len(), "managedFields dropped");
        assert!(std::mem::size_of::<Cached<PersistentVolume>>() < 1024);
        assert!(std::mem::size_of::<PersistentVolume>() > 3 * 1024);
    }
}
