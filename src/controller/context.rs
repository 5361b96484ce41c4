//! What every reconcile shares, by concern: the Kubernetes side (client, events, Secrets),
//! Ceph access (connections, per-image locks, the purger, flattens under way), the caches
//! (the watches' stores and what this process remembers), the settings, and telemetry.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};

use super::cached::Cached;
use super::locks::ImageLocks;
use super::purge::Purger;
use super::{Settings, backoff_delay};
use crate::error::Error;
use crate::k8s::{self, Events};
use crate::metrics::Metrics;
use ceph::{Connections, Connector};
use domain::owner::Instance;

/// Shared by every reconcile.
pub struct Context {
    pub kube: Kube,
    pub ceph: CephAccess,
    pub caches: Caches,
    pub settings: Settings,
    /// Who we are, as stamped on images.
    pub instance: Instance,
    pub metrics: Arc<Metrics>,
}

/// The Kubernetes side.
pub struct Kube {
    pub client: Client,
    pub events: Events,
    /// Secrets read moments ago (see `k8s::SecretMemo`).
    pub secrets: k8s::SecretMemo,
}

/// Ceph access, and what keeps two operations from treading on one image.
pub struct CephAccess {
    /// Connected clients by credentials: librbd's [`Connections`] when running, a scripted
    /// cluster in unit tests (see `testing::Context::for_tests_with_ceph`).
    pub connections: Arc<dyn Connector>,
    /// One operation at a time per image (cloning from it vs deleting it).
    pub locks: ImageLocks,
    pub purger: Purger,
    /// Clones being flattened in the background, by "pool/image".
    pub flattening: Arc<Mutex<HashSet<String>>>,
    /// (monitors, pool) whose trash this process has swept.
    swept: Mutex<HashSet<(String, String)>>,
}

/// The watches' stores, and what this process remembers between reconciles.
pub struct Caches {
    /// StorageClasses, kept current by a watch so that a burst of claims costs no class reads.
    pub classes: Store<StorageClass>,
    /// PersistentVolumes, from the volumes controller's watch.
    pub volumes: Store<Cached<PersistentVolume>>,
    /// Claims, from the claims controller's watch.
    pub claims: Store<Cached<PersistentVolumeClaim>>,
    /// PVs (by uid) this process has deleted, image and finalizer included: the watch events
    /// of our own writes still show the volume as it was, and must not start a second
    /// deletion (which would list the pool's trash for nothing).
    finished: RecentUids,
    /// Claims (by uid) the wake-up watch saw being deleted or deleted; see
    /// [`Context::bound_claim_deleted`].
    dying: RecentUids,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Which watches have listed everything once.
    pub listed: Listings,
    /// When the watches began: see [`Context::volumes_listed_at_start`].
    since: tokio::time::Instant,
}

/// How long after the start a bound claim's check waits for the first list of volumes: a
/// volumes watch that cannot list must not hold the claims' workers for good.
pub(super) const FIRST_LIST_GRACE: Duration = Duration::from_secs(30);

/// How long a finished deletion, or a claim seen going, is remembered: by then the watch
/// events that followed are long delivered.
const RECENT_KEPT: Duration = Duration::from_secs(600);

/// uids noted in the last [`RECENT_KEPT`].
#[derive(Default)]
struct RecentUids(Mutex<HashMap<String, Instant>>);

impl RecentUids {
    fn note(&self, uid: &str) {
        let mut m = self.0.lock();
        let now = Instant::now();
        m.retain(|_, at| now.duration_since(*at) < RECENT_KEPT);
        m.insert(uid.to_string(), now);
    }

    fn contains(&self, uid: &str) -> bool {
        self.0.lock().contains_key(uid)
    }

    fn forget(&self, uid: &str) {
        self.0.lock().remove(uid);
    }
}

/// Whether a watch has listed everything once, marked from the watch's own events after its
/// store took the list. The store's own readiness signal wakes only the latest of its
/// waiters, and the controller over the store must be that one: another waiter (or a look
/// without waiting) could leave that controller asleep until the next change.
#[derive(Clone)]
pub struct Listed(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Listed {
    fn default() -> Listed {
        Listed(Arc::new(tokio::sync::watch::Sender::new(false)))
    }
}

impl Listed {
    pub fn mark(&self) {
        self.0.send_replace(true);
    }

    pub fn is_listed(&self) -> bool {
        *self.0.borrow()
    }

    pub async fn wait(&self) {
        // The sender lives as long as `self`: this ends only when marked.
        let _ = self.0.subscribe().wait_for(|listed| *listed).await;
    }
}

/// Which of the watches behind [`Caches`] have listed everything once.
#[derive(Clone, Default)]
pub struct Listings {
    pub classes: Listed,
    pub volumes: Listed,
    pub claims: Listed,
}

/// How long what was read from a Secret is reused: a burst of claims of one class then reads
/// its Secrets a few times instead of once per claim, and a changed Secret counts within
/// seconds.
const SECRET_MEMO: Duration = Duration::from_secs(2);

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        classes: Store<StorageClass>,
        volumes: Store<Cached<PersistentVolume>>,
        claims: Store<Cached<PersistentVolumeClaim>>,
        instance: Instance,
    ) -> Context {
        Context {
            kube: Kube {
                events: Events::new(client.clone(), metrics.events_dropped()),
                secrets: k8s::SecretMemo::new(SECRET_MEMO),
                client,
            },
            ceph: CephAccess {
                connections: Arc::new(Connections::with_limits(
                    settings.ceph_timeouts,
                    settings.ceph_idle,
                    settings.ceph_max_age,
                )),
                locks: ImageLocks::default(),
                purger: Purger::start(metrics.clone()),
                flattening: Arc::default(),
                swept: Mutex::default(),
            },
            caches: Caches {
                classes,
                volumes,
                claims,
                finished: RecentUids::default(),
                dying: RecentUids::default(),
                failures: Mutex::default(),
                listed: Listings::default(),
                since: tokio::time::Instant::now(),
            },
            settings,
            instance,
            metrics,
        }
    }

    /// Records that the PV `uid` is deleted and our finalizer dropped.
    pub(super) fn finished_deleting(&self, uid: &str) {
        self.caches.finished.note(uid);
    }

    /// Whether this process has finished deleting the PV `uid`.
    pub(super) fn deletion_finished(&self, uid: &str) -> bool {
        self.caches.finished.contains(uid)
    }

    /// Notes a claim the wake-up watch saw going (deletionTimestamp set, or deleted), before
    /// its volume's reconcile is queued.
    pub(super) fn claim_going(&self, claim: &ObjectMeta) {
        if let Some(uid) = &claim.uid {
            self.caches.dying.note(uid);
        }
    }

    /// Whether the volumes watch has listed every PV once (without waiting).
    pub(super) fn volumes_ready(&self) -> bool {
        self.caches.listed.volumes.is_listed()
    }

    /// Whether the claim a Bound PV names is gone: the API server (not a cache) says so.
    /// Unknown (watch not listed yet, API error) is "not gone". A claim alive in the claims
    /// cache is not asked about, unless the wake-up watch saw it going.
    pub(super) async fn bound_claim_deleted(&self, pv: &PersistentVolume) -> bool {
        let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            return false;
        };
        let (Some(ns), Some(name), Some(uid)) = (&r.namespace, &r.name, &r.uid) else {
            return false;
        };
        if !self.caches.listed.claims.is_listed() {
            return false;
        }
        // The claim watch that wakes this volume and the claims cache are two watches: the
        // wake-up for a claim's deletion (its last event) may come before the cache has seen
        // the claim go, and none follows. So what the wake-up saw counts too.
        let cached_alive = self
            .caches
            .claims
            .get(&ObjectRef::new(name).within(ns))
            .is_some_and(|c| c.uid() == Some(uid.as_str()) && c.deletion_timestamp().is_none());
        if cached_alive && !self.caches.dying.contains(uid) {
            return false;
        }
        let gone = match Api::<PersistentVolumeClaim>::namespaced(self.kube.client.clone(), ns)
            .get_opt(name)
            .await
        {
            Ok(None) => true,
            Ok(Some(c)) => c.metadata.uid.as_ref() != Some(uid),
            Err(_) => false,
        };
        if gone {
            self.caches.dying.forget(uid);
        }
        gone
    }

    /// Whether some existing PV could be bound to this claim by kube-controller-manager.
    pub(super) fn volume_could_bind(&self, pvc: &PersistentVolumeClaim) -> bool {
        self.caches
            .volumes
            .state()
            .iter()
            .any(|pv| pv.could_bind(pvc))
    }

    /// A PV as the volumes cache has it, if it is there (and reads back).
    pub(super) fn cached_volume(&self, name: &str) -> Option<PersistentVolume> {
        self.caches
            .volumes
            .get(&ObjectRef::new(name))?
            .object()
            .ok()
    }

    /// Waits until the volumes watch has listed every PV once.
    pub(super) async fn volumes_listed(&self) {
        self.caches.listed.volumes.wait().await
    }

    /// Waits until the volumes watch has listed every PV once, or [`FIRST_LIST_GRACE`] after
    /// the start, whichever comes first.
    pub(super) async fn volumes_listed_at_start(&self) {
        let until = self.caches.since + FIRST_LIST_GRACE;
        let _ = tokio::time::timeout_at(until, self.volumes_listed()).await;
    }

    /// Another PV (by uid) whose spec names this pool/image: a copy, or a hand-made static
    /// volume for the same image. Deleting would destroy that volume's data.
    pub(super) fn other_volume_naming(
        &self,
        pv: &PersistentVolume,
        pool: &str,
        image: &str,
    ) -> Option<String> {
        self.caches.volumes.state().iter().find_map(|other| {
            (other.uid() != pv.metadata.uid.as_deref() && other.names_image(pool, image))
                .then(|| other.name().unwrap_or_default().to_string())
        })
    }

    /// True the first time it is asked about a pool.
    pub(super) fn first_delete_in(&self, monitors: &str, pool: &str) -> bool {
        self.ceph
            .swept
            .lock()
            .insert((monitors.to_string(), pool.to_string()))
    }

    /// A StorageClass from the watch cache; one created a moment ago may not be there yet,
    /// so a miss asks the API server.
    pub(super) async fn class(&self, name: &str) -> Result<Option<StorageClass>, Error> {
        if let Some(c) = self.caches.classes.get(&ObjectRef::new(name)) {
            return Ok(Some((*c).clone()));
        }
        k8s::get_class(&self.kube.client, name).await
    }

    /// Whether the object `key` has failed since its last success (it is being retried).
    pub(super) fn failing(&self, key: &str) -> bool {
        self.caches.failures.lock().contains_key(key)
    }

    pub(super) fn succeeded(&self, key: &str) {
        self.caches.failures.lock().remove(key);
    }

    /// 1 s, 2 s, 4 s … capped at 5 minutes: retries forever without flooding the API.
    pub(super) fn backoff(&self, key: &str) -> Duration {
        let mut f = self.caches.failures.lock();
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n, self.settings.retry_start, self.settings.retry_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{ApiServer, expect, not_found, object};
    use http::Method;
    use kube::runtime::reflector;
    use kube::runtime::watcher;

    /// A claim the claims cache still holds alive is asked about only once the wake-up watch
    /// has seen it go; the API server's answer decides, and is asked again later if it says
    /// the claim is still there.
    #[tokio::test]
    async fn a_claim_seen_going_is_asked_about_even_while_cached_alive() {
        let path = "/api/v1/namespaces/ns/persistentvolumeclaims/data";
        let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "ns", "name": "data", "uid": "claim-uid"}
        }))
        .unwrap();
        let (client, api) = ApiServer::start(vec![
            expect(Method::GET, path, object(&pvc)),
            expect(Method::GET, path, not_found()),
            expect(Method::GET, path, not_found()),
        ]);
        let mut ctx = Context::for_tests(client);
        let (claims, mut writer) = reflector::store();
        writer.apply_watcher_event(&watcher::Event::InitApply(
            Cached::new(pvc.clone()).unwrap(),
        ));
        writer.apply_watcher_event(&watcher::Event::InitDone);
        ctx.caches.claims = claims;
        ctx.caches.listed.claims.mark();
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pvc-claim-uid"},
            "spec": {"claimRef": {"namespace": "ns", "name": "data", "uid": "claim-uid"}}
        }))
        .unwrap();

        assert!(
            !ctx.bound_claim_deleted(&pv).await,
            "cached alive, not seen going"
        );
        ctx.claim_going(&pvc.metadata);
        assert!(
            !ctx.bound_claim_deleted(&pv).await,
            "the API server still has it"
        );
        assert!(ctx.bound_claim_deleted(&pv).await);
        // Forgotten once gone: asked again only when seen going again.
        assert!(!ctx.bound_claim_deleted(&pv).await);
        ctx.claim_going(&pvc.metadata);
        assert!(ctx.bound_claim_deleted(&pv).await);
        assert_eq!(api.done().len(), 3);
    }

    /// The store's own readiness wakes only its latest waiter; every waiter of a `Listed`
    /// wakes, and so does one that only looked without waiting before.
    #[tokio::test(start_paused = true)]
    async fn every_waiter_of_a_listing_wakes_when_it_is_marked() {
        let listed = Listed::default();
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let l = listed.clone();
                tokio::spawn(async move { l.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(!listed.is_listed());
        listed.mark();
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(1), w)
                .await
                .expect("woken")
                .unwrap();
        }
        listed.wait().await;
    }
}
