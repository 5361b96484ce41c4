//! Watched PVs and claims as the caches keep them.
//!
//! A k8s-openapi `PersistentVolume` takes about 6.4 KB of heap for a 1.1 KB object (its spec
//! has a field for every volume type; every map is a B-tree node), a claim about 3.9 KB. The
//! caches hold every PV and claim of the cluster, so they keep each one as its JSON instead,
//! packed against what objects of its kind share ([`packed`]: a PV of ours keeps about 220
//! bytes, its claim about 35), beside its identity in one allocation ([`identity`]: what the
//! watch machinery reads) and, for PVs, what the scans over all of them ask ([`facts`]).
//! `footprint` measures what each pair costs in all: see BENCHMARKS.md, "Memory per pair".
//!
//! That JSON holds only what decisions read ([`CachedKind::trimmed`]): a claim's owner writes its
//! labels, annotations and most of its spec, up to the API server's limits (256 KiB of
//! annotations, about 1.5 MiB in all), and every replica caches every claim of the cluster.
//! Kept whole, a few tenants' large claims would push every replica over its memory limit at
//! once. So the watcher drops what no decision reads: `managedFields`, labels, annotations
//! outside an allow-list, a claim's selector beyond whether it selects anything. A reconcile
//! reads the object back from that JSON ([`Cached::object`]); nothing writes a cached object
//! back whole, only patches of the fields it changes, so what was dropped is never lost.

use std::any::TypeId;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use kube::Resource;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::{Deserialize, Serialize};

use domain::claim;
use domain::reclaim::ANN_LEGACY_IDENTITY;
use domain::volume;

/// An object kind the caches keep as [`Cached`], with what scans read of it.
pub trait CachedKind:
    Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
    type Facts: Clone + fmt::Debug + Send + Sync + 'static;
    /// The object less what no decision reads: what the cache keeps.
    fn trimmed(self) -> Self;
    fn facts(&self) -> Self::Facts;
}

/// The annotations a decision reads from a PV; the cache drops every other one. PVs are
/// cluster-scoped (no tenant writes them), but other tools annotate them too
/// (`kubectl.kubernetes.io/last-applied-configuration` holds the whole object).
const VOLUME_ANNOTATIONS: &[&str] = &[
    // Whether the volume is ours: reclaim::decide, delete::reconcile's early path.
    volume::ANN_PROVISIONED_BY,
    // Made by the old external provisioner (its image is not named after the PV, its
    // credentials come from the class): reclaim::is_legacy, reclaim::target.
    ANN_LEGACY_IDENTITY,
    // Recorded at provisioning; reclaim::target checks them against the spec and takes the
    // admin credentials from them.
    volume::ANN_MONITORS,
    volume::ANN_POOL,
    volume::ANN_IMAGE,
    volume::ANN_ADMIN_ID,
    volume::ANN_ADMIN_SECRET,
    // Where the image was made: reclaim::recorded_place (whether a bound volume still needs
    // recording), reclaim::check_recorded (with the csi clusterID's source).
    volume::ANN_FSID,
    volume::ANN_POOL_ID,
    volume::ANN_CLUSTER_ID_SOURCE,
];

/// The annotations a decision reads from a claim; the cache drops every other one.
const CLAIM_ANNOTATIONS: &[&str] = &[
    // kube-controller-manager's hand-over: claim::handed_to (claim::decide, and whether to
    // provision early in provision::reconcile).
    claim::ANN_STORAGE_PROVISIONER,
    claim::ANN_STORAGE_PROVISIONER_BETA,
    // WaitForFirstConsumer waits for it: claim::decide.
    claim::ANN_SELECTED_NODE,
    // The class of claims older than spec.storageClassName: claim::class_name.
    claim::ANN_STORAGE_CLASS_BETA,
];

/// The longest value of a kept claim annotation. Its owner may write anything there, but a
/// value that can match anything is short: a provisioner name has at most 317 bytes, a
/// StorageClass or node name 253.
const CLAIM_VALUE_MAX: usize = 512;

/// A kept claim annotation's value, or, past [`CLAIM_VALUE_MAX`], a stand-in that decides the
/// same: present, and equal to no provisioner, class or node (those names hold no spaces).
fn bounded(value: String) -> String {
    if value.len() <= CLAIM_VALUE_MAX {
        value
    } else {
        format!("({} bytes, not kept)", value.len())
    }
}

/// The metadata decisions read: the identity (events and log lines name the object by it, the
/// finalizer patch carries the resourceVersion), the deletionTimestamp and the annotations of
/// `keep`. No decision reads labels, owner references, managedFields or timestamps.
fn trim_meta(m: ObjectMeta, keep: &[&str], value: fn(String) -> String) -> ObjectMeta {
    let annotations: BTreeMap<String, String> = m
        .annotations
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .map(|(k, v)| (k, value(v)))
        .collect();
    ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        deletion_timestamp: m.deletion_timestamp,
        annotations: (!annotations.is_empty()).then_some(annotations),
        ..ObjectMeta::default()
    }
}

impl CachedKind for PersistentVolume {
    type Facts = VolumeFacts;

    /// Spec and status whole (only administrators and controllers write them); the
    /// finalizers too, which delete::remove_finalizer writes back less ours.
    fn trimmed(mut self) -> PersistentVolume {
        let finalizers = self.metadata.finalizers.take();
        PersistentVolume {
            metadata: ObjectMeta {
                finalizers,
                ..trim_meta(self.metadata, VOLUME_ANNOTATIONS, |v| v)
            },
            spec: self.spec,
            status: self.status,
        }
    }

    fn facts(&self) -> VolumeFacts {
        VolumeFacts::of(self)
    }
}

/// A selector of the claim's owner's choosing, as far as decisions read it: claims with one
/// are never provisioned early (claim::decide: whether there is one), and are refused
/// (volume::claim_request: whether it selects anything). An empty one is kept as it is; any
/// other becomes a one-label stand-in.
fn trim_selector(s: LabelSelector) -> LabelSelector {
    let selects = s.match_labels.as_ref().is_some_and(|m| !m.is_empty())
        || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty());
    if selects {
        LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "rbd-provisioner.ceph.com/selector-not-kept".into(),
                String::new(),
            )])),
            match_expressions: None,
        }
    } else {
        s
    }
}

/// The spec fields decisions read, named one by one so that a field added to the API is
/// dropped until something reads it. The claim's owner chooses them all; those the API server
/// leaves unbounded are cut to what is read: the selector (see [`trim_selector`]), repeated
/// access modes (read as a set), resources other than the storage request. Not kept:
/// `volumeAttributesClassName` and the limits, which nothing reads.
fn trim_claim_spec(s: PersistentVolumeClaimSpec) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: s.access_modes.map(volume::distinct),
        data_source: s.data_source,
        data_source_ref: s.data_source_ref,
        resources: s.resources.map(|r| VolumeResourceRequirements {
            limits: None,
            requests: r
                .requests
                .map(|q| q.into_iter().filter(|(k, _)| k == "storage").collect()),
        }),
        selector: s.selector.map(trim_selector),
        storage_class_name: s.storage_class_name,
        volume_attributes_class_name: None,
        volume_mode: s.volume_mode,
        volume_name: s.volume_name,
    }
}

impl CachedKind for PersistentVolumeClaim {
    type Facts = ();

    /// Status whole: controllers write it, and resize::grow writes its conditions back.
    fn trimmed(self) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: trim_meta(self.metadata, CLAIM_ANNOTATIONS, bounded),
            spec: self.spec.map(trim_claim_spec),
            status: self.status,
        }
    }

    fn facts(&self) {}
}

/// A watched object kept as packed JSON; see the module documentation.
pub struct Cached<K: CachedKind> {
    /// Name, namespace, uid, resourceVersion and deletionTimestamp: what the watch machinery
    /// and the scans read. The JSON leaves them out; [`Cached::object`] puts them back.
    id: Identity,
    /// The identity as an `ObjectMeta`, made when something asks for one (kube's machinery
    /// asks of watch events' objects; errors' log lines): the truth once made, since
    /// `meta_mut` may change it.
    meta: OnceLock<Box<ObjectMeta>>,
    json: Packed,
    pub facts: K::Facts,
}

impl<K: CachedKind> Cached<K> {
    pub fn new(full: K) -> Result<Cached<K>, serde_json::Error> {
        let mut trimmed = full.trimmed();
        let facts = trimmed.facts();
        let m = trimmed.meta_mut();
        let id = Identity::of(m);
        (m.name, m.namespace, m.uid, m.resource_version) = (None, None, None, None);
        m.deletion_timestamp = None;
        let json = packed::pack_as(TypeId::of::<K>(), serde_json::to_vec(&trimmed)?);
        Ok(Cached {
            id,
            meta: OnceLock::new(),
            json,
            facts,
        })
    }

    fn field(&self, f: Field) -> Option<&str> {
        match self.meta.get() {
            Some(m) => match f {
                Field::Name => m.name.as_deref(),
                Field::Namespace => m.namespace.as_deref(),
                Field::Uid => m.uid.as_deref(),
                Field::ResourceVersion => m.resource_version.as_deref(),
            },
            None => self.id.get(f),
        }
    }

    pub fn name(&self) -> Option<&str> {
        self.field(Field::Name)
    }

    pub fn uid(&self) -> Option<&str> {
        self.field(Field::Uid)
    }

    pub fn deletion_timestamp(&self) -> Option<&Time> {
        match self.meta.get() {
            Some(m) => m.deletion_timestamp.as_ref(),
            None => self.id.deletion(),
        }
    }

    /// "namespace/name", as log lines name the object.
    pub fn label(&self) -> String {
        domain::meta::qualified(
            self.field(Field::Namespace),
            self.name().unwrap_or_default(),
        )
    }

    /// The object as decisions see it: what the watch delivered, less what [`CachedKind::trimmed`]
    /// drops.
    pub fn object(&self) -> Result<K, serde_json::Error> {
        let json = self.json.bytes().map_err(serde_json::Error::custom)?;
        let mut obj: K = serde_json::from_slice(&json)?;
        let m = obj.meta_mut();
        let get = |f| self.field(f).map(str::to_string);
        m.name = get(Field::Name);
        m.namespace = get(Field::Namespace);
        m.uid = get(Field::Uid);
        m.resource_version = get(Field::ResourceVersion);
        m.deletion_timestamp = self.deletion_timestamp().cloned();
        Ok(obj)
    }

    /// The length of the JSON kept (unpacked), less the identity.
    #[cfg(test)]
    fn json_len(&self) -> usize {
        self.json.bytes().map_or(usize::MAX, |j| j.len())
    }
}

impl<K: CachedKind> Clone for Cached<K> {
    /// The same object; an `ObjectMeta` made for the original is not copied (the stores keep
    /// clones of the watch events' objects).
    fn clone(&self) -> Self {
        Cached {
            id: self
                .meta
                .get()
                .map_or_else(|| self.id.clone(), |m| Identity::of(m)),
            meta: OnceLock::new(),
            json: self.json.clone(),
            facts: self.facts.clone(),
        }
    }
}

impl<K: CachedKind> fmt::Debug for Cached<K> {
    // The JSON may be long and says nothing a log line needs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cached")
            .field("kind", &K::kind(&()))
            .field("namespace", &self.field(Field::Namespace))
            .field("name", &self.name())
            .field("uid", &self.uid())
            .field("facts", &self.facts)
            .finish()
    }
}

impl<'de, K: CachedKind> Deserialize<'de> for Cached<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Cached::new(K::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl<K: CachedKind> Resource for Cached<K> {
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
        self.meta.get_or_init(|| Box::new(self.id.meta()))
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.meta();
        self.meta.get_mut().expect("made just above")
    }
}

mod facts;
#[cfg(test)]
mod footprint;
mod identity;
mod packed;

pub use facts::VolumeFacts;
use identity::{Field, Identity};
use packed::Packed;
#[cfg(test)]
mod tests;
