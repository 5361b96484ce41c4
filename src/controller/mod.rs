//! The controllers: one reconciles claims (provision, grow), one reconciles volumes (delete).
//! Both share one [`Context`].

mod cached;
mod delete;
mod flatten;
mod locks;
mod maintain;
mod provision;
mod record;

pub(crate) use provision::node_stage_secret;
mod purge;
mod resize;
#[cfg(test)]
pub(crate) mod testing;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource};

use self::cached::{Cached, Lean};
use crate::error::{Error, SecretRole};
use crate::k8s;
use crate::k8s::Events;
use crate::metrics::Metrics;
use ceph::{Cluster, Connections, Credentials, Timeouts};
use domain::owner::{Instance, Place};
use domain::params;
use domain::params::Flavor;
use domain::reclaim::{AdminSource, DeleteTarget};
use domain::volume;

/// Settings that do not change while running.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `provisioner` of the StorageClasses we serve.
    pub provisioner: String,
    /// `namespace:name` of our ServiceAccount, for RBAC hints in events.
    pub service_account: String,
    /// Flavour for classes that do not set `volumeFlavor`.
    pub default_flavor: Flavor,
    /// Claims handled at once.
    pub workers: u16,
    pub ceph_timeouts: Timeouts,
    /// How often trash and orphaned images are checked; zero turns the pass off.
    pub maintenance_interval: Duration,
    /// How old an image must be before it can be collected as an orphan.
    pub orphan_grace: Duration,
    /// Ceph clients unused this long are closed.
    pub ceph_idle: Duration,
    /// Ceph clients connected this long ago are replaced (re-authenticated), so a rotated key,
    /// revoked caps or a blocklisting is seen within this time; zero keeps them.
    pub ceph_max_age: Duration,
    /// Provision claims no existing volume could serve without waiting for
    /// kube-controller-manager's hand-over.
    pub early_provisioning: bool,
    /// Retry delays after failures: the first, doubling up to the last.
    pub retry_start: Duration,
    pub retry_max: Duration,
    /// This replica's Lease identity, stamped on the images it makes (`owner::META_MADE_BY`).
    pub replica: String,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub ceph: Connections,
    pub events: Events,
    /// Secrets read moments ago (see `k8s::SecretMemo`).
    pub secrets: k8s::SecretMemo,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// (monitors, pool) whose trash this process has swept.
    swept: Mutex<HashSet<(String, String)>>,
    /// PVs (by uid) this process has deleted, image and finalizer included: the watch events
    /// of our own writes still show the volume as it was, and must not start a second
    /// deletion (which would list the pool's trash for nothing).
    finished: Recent,
    /// Claims (by uid) the wake-up watch saw being deleted or deleted; see
    /// [`Context::claim_gone`].
    dying: Recent,
    /// StorageClasses, kept current by a watch so that a burst of claims costs no class reads.
    classes: Store<StorageClass>,
    /// PersistentVolumes, from the volumes controller's watch.
    volumes: Store<Cached<PersistentVolume>>,
    /// Claims, from the claims controller's watch.
    claims: Store<Cached<PersistentVolumeClaim>>,
    /// Who we are, as stamped on images.
    pub instance: Instance,
    /// One operation at a time per image (cloning from it vs deleting it).
    locks: locks::ImageLocks,
    purger: purge::Purger,
    /// Clones being flattened in the background, by "pool/image".
    flattening: Arc<Mutex<HashSet<String>>>,
}

/// How long a finished deletion, or a claim seen going, is remembered: by then the watch
/// events that followed are long delivered.
const RECENT_KEPT: Duration = Duration::from_secs(600);

/// uids noted in the last [`RECENT_KEPT`].
#[derive(Default)]
struct Recent(Mutex<HashMap<String, Instant>>);

impl Recent {
    fn note(&self, uid: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        m.retain(|_, at| now.duration_since(*at) < RECENT_KEPT);
        m.insert(uid.to_string(), now);
    }

    fn contains(&self, uid: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(uid)
    }

    fn forget(&self, uid: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }
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
            classes,
            volumes,
            claims,
            instance,
            locks: locks::ImageLocks::default(),
            purger: purge::Purger::start(metrics.clone()),
            flattening: Arc::default(),
            ceph: Connections::with_limits(
                settings.ceph_timeouts,
                settings.ceph_idle,
                settings.ceph_max_age,
            ),
            events: Events::new(client.clone(), metrics.events_dropped()),
            secrets: k8s::SecretMemo::new(SECRET_MEMO),
            client,
            settings,
            metrics,
            failures: Mutex::new(HashMap::new()),
            swept: Mutex::new(HashSet::new()),
            finished: Recent::default(),
            dying: Recent::default(),
        }
    }

    /// Records that the PV `uid` is deleted and our finalizer dropped.
    fn finished_deleting(&self, uid: &str) {
        self.finished.note(uid);
    }

    /// Whether this process has finished deleting the PV `uid`.
    fn deletion_finished(&self, uid: &str) -> bool {
        self.finished.contains(uid)
    }

    /// Notes a claim the wake-up watch saw going (deletionTimestamp set, or deleted), before
    /// its volume's reconcile is queued.
    fn claim_going(&self, claim: &ObjectMeta) {
        if let Some(uid) = &claim.uid {
            self.dying.note(uid);
        }
    }

    /// Whether the volumes watch has listed every PV once (without waiting).
    fn volumes_ready(&self) -> bool {
        self.volumes
            .wait_until_ready()
            .now_or_never()
            .is_some_and(|r| r.is_ok())
    }

    /// Whether the claim a Bound PV names is gone: the API server (not a cache) says so.
    /// Unknown (watch not listed yet, API error) is "not gone". A claim alive in the claims
    /// cache is not asked about, unless the wake-up watch saw it going.
    async fn claim_gone(&self, pv: &PersistentVolume) -> bool {
        let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
            return false;
        };
        let (Some(ns), Some(name), Some(uid)) = (&r.namespace, &r.name, &r.uid) else {
            return false;
        };
        let listed = self
            .claims
            .wait_until_ready()
            .now_or_never()
            .is_some_and(|r| r.is_ok());
        if !listed {
            return false;
        }
        // The claim watch that wakes this volume and the claims cache are two watches: the
        // wake-up for a claim's deletion (its last event) may come before the cache has seen
        // the claim go, and none follows. So what the wake-up saw counts too.
        let cached_alive = self
            .claims
            .get(&ObjectRef::new(name).within(ns))
            .is_some_and(|c| {
                c.meta().uid.as_ref() == Some(uid) && c.meta().deletion_timestamp.is_none()
            });
        if cached_alive && !self.dying.contains(uid) {
            return false;
        }
        let gone = match Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await
        {
            Ok(None) => true,
            Ok(Some(c)) => c.metadata.uid.as_ref() != Some(uid),
            Err(_) => false,
        };
        if gone {
            self.dying.forget(uid);
        }
        gone
    }

    /// Whether some existing PV could be bound to this claim by kube-controller-manager.
    fn volume_could_bind(&self, pvc: &PersistentVolumeClaim) -> bool {
        self.volumes
            .state()
            .iter()
            .filter_map(|pv| pv.facts.bindable.as_ref())
            .any(|pv| domain::claim::could_bind(pvc, pv))
    }

    /// Waits until the volumes watch has listed every PV once.
    async fn volumes_listed(&self) {
        wait_listed(self.volumes.clone()).await
    }

    /// Another PV (by uid) whose spec names this pool/image: a copy, or a hand-made static
    /// volume for the same image. Deleting would destroy that volume's data.
    fn other_volume_naming(
        &self,
        pv: &PersistentVolume,
        pool: &str,
        image: &str,
    ) -> Option<String> {
        self.volumes.state().iter().find_map(|other| {
            (other.meta().uid != pv.metadata.uid
                && other
                    .facts
                    .image
                    .as_ref()
                    .is_some_and(|(p, i)| p == pool && i == image))
            .then(|| other.meta().name.clone().unwrap_or_default())
        })
    }

    /// True the first time it is asked about a pool.
    fn first_delete_in(&self, monitors: &str, pool: &str) -> bool {
        self.swept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((monitors.to_string(), pool.to_string()))
    }

    /// A StorageClass from the watch cache; one created a moment ago may not be there yet,
    /// so a miss asks the API server.
    async fn class(&self, name: &str) -> Result<Option<StorageClass>, Error> {
        if let Some(c) = self.classes.get(&ObjectRef::new(name)) {
            return Ok(Some((*c).clone()));
        }
        k8s::get_class(&self.client, name).await
    }

    /// Admin credentials for a volume: recorded on the PV, or from its StorageClass (old PVs).
    async fn admin_credentials(
        &self,
        pv_name: &str,
        t: &DeleteTarget,
    ) -> Result<Credentials, Error> {
        let sa = &self.settings.service_account;
        match &t.admin {
            AdminSource::Recorded { admin_id, secret } => Ok(Credentials {
                monitors: t.monitors.clone(),
                user: admin_id.clone(),
                key: self
                    .secrets
                    .ceph_key(&self.client, SecretRole::Admin, secret, admin_id, sa)
                    .await?,
            }),
            AdminSource::FromClass(class_name) => {
                let class = self
                    .class(class_name)
                    .await?
                    .ok_or_else(|| Error::ClassGone {
                        pv: pv_name.to_string(),
                        class: class_name.clone(),
                        pool: t.pool.clone(),
                        image: t.image.clone(),
                    })?;
                let p = params::parse(&class.parameters.clone().unwrap_or_default()).map_err(
                    |source| Error::Params {
                        class: class_name.clone(),
                        cause: source,
                    },
                )?;
                Ok(Credentials {
                    monitors: if t.monitors.is_empty() {
                        p.monitors.clone()
                    } else {
                        t.monitors.clone()
                    },
                    user: p.admin_id.clone(),
                    key: self
                        .secrets
                        .ceph_key(
                            &self.client,
                            SecretRole::Admin,
                            &p.admin_secret,
                            &p.admin_id,
                            sa,
                        )
                        .await?,
                })
            }
        }
    }

    /// Credentials to act on a volume's image: from its StorageClass when that still exists
    /// and names the same pool (monitors move; the class is kept current), else what the PV
    /// records. Either way, what the cluster reached says of itself is checked against the
    /// PV's records and the image's stamp before anything is changed.
    async fn volume_credentials(
        &self,
        pv: &PersistentVolume,
        t: &DeleteTarget,
    ) -> Result<Credentials, Error> {
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        let class_name = pv
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            .filter(|c| !c.is_empty());
        if let Some(name) = class_name
            && let Some(class) = self.class(name).await?
            && class.provisioner == self.settings.provisioner
            && let Ok(p) = params::parse(&class.parameters.clone().unwrap_or_default())
            && p.pool == t.pool
        {
            let key = self
                .secrets
                .ceph_key(
                    &self.client,
                    SecretRole::Admin,
                    &p.admin_secret,
                    &p.admin_id,
                    &self.settings.service_account,
                )
                .await?;
            return Ok(Credentials {
                monitors: p.monitors,
                user: p.admin_id,
                key,
            });
        }
        self.admin_credentials(&pv_name, t).await
    }

    /// Where `pool` is, as the cluster reached says: its fsid and the pool's id.
    async fn place(
        &self,
        cluster: &Arc<Cluster>,
        pool: &str,
        object: &str,
    ) -> Result<Place, Error> {
        Ok(Place {
            fsid: cluster.fsid().await.map_err(Error::ceph(object))?,
            pool_id: cluster.pool_id(pool).await.map_err(Error::ceph(object))?,
        })
    }

    /// The (cached) Ceph connection for these credentials.
    async fn connect(&self, creds: &Credentials) -> Result<Arc<Cluster>, Error> {
        let r = self.ceph.get(creds).await.map_err(Error::ceph(format!(
            "Ceph cluster {} as client.{}",
            creds.monitors.join(","),
            creds.user
        )));
        self.metrics.set_ceph_clients(self.ceph.len());
        r
    }

    /// A Ceph connection for housekeeping: it does not count as a use of a cached client.
    async fn borrow(&self, creds: &Credentials) -> Result<Arc<Cluster>, Error> {
        self.ceph.borrow(creds).await.map_err(Error::ceph(format!(
            "Ceph cluster {} as client.{}",
            creds.monitors.join(","),
            creds.user
        )))
    }

    /// Whether the object `key` has failed since its last success (it is being retried).
    fn failing(&self, key: &str) -> bool {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(key)
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// 1 s, 2 s, 4 s … capped at 5 minutes: retries forever without flooding the API.
    fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n, self.settings.retry_start, self.settings.retry_max)
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `start`, doubled per failure after the first, capped at `max`: retries forever without
/// flooding the API.
pub fn backoff_delay(failures: u32, start: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    start.saturating_mul(factor).min(max)
}

fn claim_key(pvc: &PersistentVolumeClaim) -> String {
    pvc.metadata.uid.clone().unwrap_or_default()
}

/// What the error policy says of the objects a reconciler handles.
trait Reconciled {
    /// The log message of a failed reconcile.
    const FAILED: &'static str;
}

impl Reconciled for PersistentVolume {
    const FAILED: &'static str = "volume operation failed";
}

impl Reconciled for PersistentVolumeClaim {
    const FAILED: &'static str = "provisioning failed";
}

/// An object in a log line: `namespace/name`, or the name of a cluster-scoped one.
fn label(meta: &ObjectMeta) -> String {
    let name = meta.name.as_deref().unwrap_or("");
    match &meta.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

/// Both reconcilers' error policy: retry with the object's backoff (keyed by its uid).
fn error_policy<K: Lean + Reconciled>(
    obj: Arc<Cached<K>>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let delay = ctx.backoff(obj.meta().uid.as_deref().unwrap_or_default());
    tracing::warn!(object = %label(obj.meta()), error = %err, retry_in = ?delay, "{}", K::FAILED);
    Action::requeue(delay)
}

/// Waits until a watch's store has listed everything once. Polled in short rounds: a single
/// long wait on the store was seen to miss its wake-up.
async fn wait_listed<K>(store: Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    while tokio::time::timeout(Duration::from_millis(500), store.wait_until_ready())
        .await
        .is_err()
    {}
}

/// This Kubernetes cluster's identity for image stamps: the uid of `kube-system`, which no
/// user can choose and which differs between clusters sharing a Ceph pool.
async fn cluster_uid(client: &Client) -> Result<String, Error> {
    let ns = Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await
        .map_err(Error::kube("read Namespace", "kube-system"))?;
    ns.metadata.uid.ok_or(Error::NoClusterUid)
}

/// Objects per page of the claims and volumes watches' lists (the first and every relist).
/// kube reads a page whole before it parses it, and holds three or four copies of it at once
/// (body chunks, the joined body, its text), while the claims controller and the wake-up watch
/// list claims at the same time; and a claim's owner chooses its size (up to about 1.5 MiB,
/// 256 KiB of it annotations). With 1,000 claims of 250 KiB the provisioner peaked at 448–476
/// MiB with kube's default of 500 per page, 132–146 with 100, 95 with 50 and 60–65 with 20
/// (35 without the annotations); 11,000 small claims took 1.6–2.1 s from start to synced at
/// 500 and 3.5–4.6 s at 20, a few ms per page (BENCHMARKS.md, "Memory with large claims").
/// Lists are read from etcd (kube's default, most recent), which honours the limit; the watch
/// cache (resourceVersion 0) would send everything at once.
const LIST_PAGE_SIZE: u32 = 20;

/// The watch configuration of the claims and volumes watches. `RBD_PROVISIONER_LIST_PAGE_SIZE`
/// sets another page size, for the scale bench to measure the choice.
fn lean_watch_config() -> watcher::Config {
    let page = std::env::var("RBD_PROVISIONER_LIST_PAGE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|p| *p > 0)
        .unwrap_or(LIST_PAGE_SIZE);
    watcher::Config::default().page_size(page)
}

/// A controller over every object of `K`, like `Controller::new`, whose cache keeps each
/// object as [`Cached`] JSON rather than the whole k8s-openapi object.
fn lean_controller<K: Lean>(client: &Client) -> Controller<Cached<K>>
where
    K::Scope: Send + Sync,
    Cached<K>: Resource<DynamicType = ()>,
{
    Controller::new(Api::<Cached<K>>::all(client.clone()), lean_watch_config())
}

/// Runs `reconcile` on the whole object a cached entry holds.
async fn whole<K, F, Fut>(
    cached: Arc<Cached<K>>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action, Error>
where
    K: Lean,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    let obj = cached.object().map_err(|cause| Error::Cached {
        object: format!("{} {}", K::kind(&()), label(cached.meta())),
        cause,
    })?;
    reconcile(Arc::new(obj), ctx).await
}

/// How often free heap pages go back to the kernel.
const HEAP_TRIM: Duration = Duration::from_secs(10);

/// Keeps resident memory near what is in use: after a burst glibc would otherwise hold the
/// freed pages for good. One pass takes about a millisecond.
async fn release_free_heap_every(every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let t = Instant::now();
        let _ = tokio::task::spawn_blocking(crate::process::release_free_heap).await;
        tracing::trace!(
            took_us = t.elapsed().as_micros() as u64,
            "free heap returned"
        );
    }
}

/// Every claim event, for waking volumes; claims seen going are noted in `ctx` first. Each
/// event is mapped to a volume and dropped at once; the claims are read lean all the same,
/// since a list page of whole claims would be held until every event of it was handled.
fn claims_going(
    client: &Client,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = Result<Cached<PersistentVolumeClaim>, watcher::Error>> + Send + 'static
{
    watcher(
        Api::<Cached<PersistentVolumeClaim>>::all(client.clone()),
        lean_watch_config(),
    )
    .default_backoff()
    .map(move |event| {
        match &event {
            Ok(watcher::Event::Delete(c)) => ctx.claim_going(c.meta()),
            Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c))
                if c.meta().deletion_timestamp.is_some() =>
            {
                ctx.claim_going(c.meta())
            }
            _ => {}
        }
        event
    })
    .touched_objects()
}

/// Runs the controllers until a termination signal.
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Result<(), Error> {
    let workers = settings.workers;
    let instance = Instance {
        provisioner: settings.provisioner.clone(),
        cluster: cluster_uid(&client).await?,
    };
    let (classes, writer) = reflector::store();
    let class_watch = reflector(
        writer,
        watcher(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(class_watch);
    let volumes = lean_controller::<PersistentVolume>(&client);
    let claims = lean_controller::<PersistentVolumeClaim>(&client);
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics,
        classes,
        volumes.store(),
        claims.store(),
        instance,
    ));
    let maintenance = tokio::spawn(maintain::run(ctx.clone()));
    let heap = tokio::spawn(release_free_heap_every(HEAP_TRIM));
    // /readyz: ready once claims, volumes and classes have all been listed.
    let synced = {
        let (ctx, claim_store) = (ctx.clone(), claims.store());
        tokio::spawn(async move {
            ctx.volumes_listed().await;
            wait_listed(claim_store).await;
            wait_listed(ctx.classes.clone()).await;
            ctx.metrics.health.watches_synced();
            tracing::info!("watches synced: claims, volumes and classes listed");
        })
    };
    let claims = claims
        .with_config(ControllerConfig::default().concurrency(workers))
        .shutdown_on_signal()
        .run(
            |c, ctx| whole(c, ctx, provision::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let early = ctx.settings.early_provisioning;
    let volumes = volumes
        // A claim's deletion wakes its volume at once, rather than after
        // kube-controller-manager marks it Released: the volume it is bound to, or, before
        // binding, the one we would have made for it (a wake-up only; the reconcile checks).
        .watches_stream(
            claims_going(&client, ctx.clone()),
            move |c: Cached<PersistentVolumeClaim>| {
                let bound = c
                    .object()
                    .ok()
                    .and_then(|pvc| pvc.spec?.volume_name)
                    .filter(|v| !v.is_empty());
                let pv = bound.or_else(|| c.meta().uid.as_deref().map(volume::pv_name));
                pv.filter(|_| early)
                    .map(|v| ObjectRef::<Cached<PersistentVolume>>::new(&v))
            },
        )
        .with_config(ControllerConfig::default().concurrency(workers))
        .shutdown_on_signal()
        .run(
            |c, ctx| whole(c, ctx, delete::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    futures::join!(claims, volumes);
    maintenance.abort();
    heap.abort();
    synced.abort();
    tracing::info!("controllers stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{ApiServer, expect, not_found, object};
    use domain::params::SecretRef;
    use http::Method;

    #[test]
    fn backoff_grows_and_caps() {
        let b = |n| backoff_delay(n, Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(b(1), Duration::from_secs(1));
        assert_eq!(b(2), Duration::from_secs(2));
        assert_eq!(b(5), Duration::from_secs(16));
        assert_eq!(b(9), Duration::from_secs(256));
        assert_eq!(b(10), Duration::from_secs(300));
        assert_eq!(b(1000), Duration::from_secs(300));
        let fast = |n| backoff_delay(n, Duration::from_millis(100), Duration::from_secs(1));
        assert_eq!(fast(1), Duration::from_millis(100));
        assert_eq!(fast(4), Duration::from_millis(800));
        assert_eq!(fast(5), Duration::from_secs(1));
    }

    /// A context whose API server answers one GET of `path`, with 404.
    fn not_found_at(path: &str) -> (Context, ApiServer) {
        let (client, api) = ApiServer::start(vec![expect(Method::GET, path, not_found())]);
        (Context::for_tests(client), api)
    }

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
        ctx.claims = claims;
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pvc-claim-uid"},
            "spec": {"claimRef": {"namespace": "ns", "name": "data", "uid": "claim-uid"}}
        }))
        .unwrap();

        assert!(!ctx.claim_gone(&pv).await, "cached alive, not seen going");
        ctx.claim_going(&pvc.metadata);
        assert!(!ctx.claim_gone(&pv).await, "the API server still has it");
        assert!(ctx.claim_gone(&pv).await);
        // Forgotten once gone: asked again only when seen going again.
        assert!(!ctx.claim_gone(&pv).await);
        ctx.claim_going(&pvc.metadata);
        assert!(ctx.claim_gone(&pv).await);
        assert_eq!(api.done().len(), 3);
    }

    /// The image of PV pvc-1, to be deleted with these admin credentials.
    fn target(monitors: Vec<String>, admin: AdminSource) -> DeleteTarget {
        DeleteTarget {
            pool: "kube".into(),
            image: "kubernetes-dynamic-pvc-1".into(),
            monitors,
            admin,
        }
    }

    /// A volume of the old provisioner records no admin credentials: a class gone is the
    /// typed error that tells how to recover, and nothing is written meanwhile.
    #[tokio::test]
    async fn an_old_volume_whose_class_is_gone_is_class_gone_without_writes() {
        let (ctx, api) = not_found_at("/apis/storage.k8s.io/v1/storageclasses/old");
        let target = target(Vec::new(), AdminSource::FromClass("old".into()));
        let err = ctx.admin_credentials("pvc-1", &target).await.unwrap_err();
        assert!(
            matches!(&err, Error::ClassGone { pv, class, .. } if pv == "pvc-1" && class == "old"),
            "{err:?}"
        );
        api.done();
    }

    #[tokio::test]
    async fn a_recorded_admin_secret_that_is_gone_is_secret_not_found() {
        let (ctx, api) = not_found_at("/api/v1/namespaces/kube-system/secrets/ceph-admin");
        let secret = SecretRef {
            namespace: "kube-system".into(),
            name: "ceph-admin".into(),
        };
        let target = target(
            vec!["10.0.0.1:6789".into()],
            AdminSource::Recorded {
                admin_id: "admin".into(),
                secret: secret.clone(),
            },
        );
        let err = ctx.admin_credentials("pvc-1", &target).await.unwrap_err();
        assert!(
            matches!(&err, Error::SecretNotFound { role: SecretRole::Admin, secret: s, .. } if *s == secret),
            "{err:?}"
        );
        api.done();
    }
}
