//! Running the controllers: the watches (trimmed for the caches, listed in pages), the claims and volumes
//! controllers with one error policy, and the background tasks beside them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, Resource};

use super::cached::{Cached, CachedKind};
use super::context::Listed;
use super::{Context, Settings, delete, provision};
use crate::error::Error;
use crate::metrics::Metrics;
use domain::owner::Instance;
use domain::volume;

/// What the error policy says of the objects a reconciler handles.
pub(super) trait Reconciled {
    /// The log message of a failed reconcile.
    const FAILED: &'static str;
}

impl Reconciled for PersistentVolume {
    const FAILED: &'static str = "volume operation failed";
}

impl Reconciled for PersistentVolumeClaim {
    const FAILED: &'static str = "provisioning failed";
}

/// Both reconcilers' error policy: retry with the object's backoff (keyed by its uid).
pub(super) fn error_policy<K: CachedKind + Reconciled>(
    obj: Arc<Cached<K>>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let delay = ctx.backoff(obj.uid().unwrap_or_default());
    tracing::warn!(object = %obj.label(), error = %err, retry_in = ?delay, "{}", K::FAILED);
    Action::requeue(delay)
}

/// This Kubernetes cluster's identity for image stamps: the uid of `kube-system`, which no
/// user can choose and which differs between clusters sharing a Ceph pool.
pub(crate) async fn cluster_uid(client: &Client) -> Result<String, Error> {
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

/// The watch configuration of the claims and volumes watches: a streaming list where the API
/// server offers one (`streaming`), which sends the objects one by one from its watch cache,
/// so that neither a large page nor many small ones are read (10,000 claims and PVs took 19 s
/// to list in pages of 20 on a loaded machine); pages of [`LIST_PAGE_SIZE`] otherwise.
/// `RBD_PROVISIONER_LIST_PAGE_SIZE` asks for pages of that size, for the scale bench to
/// measure the choice.
fn watch_config(streaming: bool) -> watcher::Config {
    let page = std::env::var("RBD_PROVISIONER_LIST_PAGE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|p| *p > 0);
    match page {
        None if streaming => watcher::Config::default().streaming_lists(),
        page => watcher::Config::default().page_size(page.unwrap_or(LIST_PAGE_SIZE)),
    }
}

/// A controller over every object of `K`, like `Controller::new`, whose cache keeps each
/// object as [`Cached`] JSON rather than the whole k8s-openapi object, and which marks
/// `listed` when its watch has listed everything.
fn cached_controller<K: CachedKind>(
    client: &Client,
    streaming: bool,
    writer: reflector::store::Writer<Cached<K>>,
    listed: Listed,
) -> Controller<Cached<K>>
where
    K::Scope: Send + Sync,
    Cached<K>: Resource<DynamicType = ()>,
{
    let cache = writer.as_reader();
    let events = reflector(
        writer,
        watcher(
            Api::<Cached<K>>::all(client.clone()),
            watch_config(streaming),
        ),
    )
    .inspect(mark_when_listed(listed))
    .applied_objects();
    Controller::for_stream(events, cache)
}

/// Marks `listed` at the end of each list of a watch; after `reflector`, whose store has
/// taken the list by then.
fn mark_when_listed<K>(listed: Listed) -> impl FnMut(&Result<watcher::Event<K>, watcher::Error>) {
    move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            listed.mark();
        }
    }
}

/// Runs `reconcile` on the object a cached entry holds, decoded from the cache's JSON.
async fn reconcile_decoded<K, F, Fut>(
    cached: Arc<Cached<K>>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action, Error>
where
    K: CachedKind,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    let obj = cached.object().map_err(|cause| Error::Cached {
        object: format!("{} {}", K::kind(&()), cached.label()),
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
/// event is mapped to a volume and dropped at once; the claims are read trimmed all the same,
/// since a list page of whole claims would be held until every event of it was handled.
fn claims_going(
    client: &Client,
    ctx: Arc<Context>,
) -> impl futures::Stream<Item = Result<Cached<PersistentVolumeClaim>, watcher::Error>> + Send + 'static
{
    watcher(
        Api::<Cached<PersistentVolumeClaim>>::all(client.clone()),
        watch_config(ctx.settings.streaming_lists),
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

/// The volume a claim event wakes, with early deletion on: the volume the claim is bound
/// to, or, before binding, the one we would have made for it.
pub(super) fn volume_to_wake(
    c: Cached<PersistentVolumeClaim>,
    early: bool,
) -> Option<ObjectRef<Cached<PersistentVolume>>> {
    // Decoding unpacks the claim: not for every claim event when nothing would be woken.
    if !early {
        return None;
    }
    let bound = c
        .object()
        .ok()
        .and_then(|pvc| pvc.spec?.volume_name)
        .filter(|v| !v.is_empty());
    let pv = bound.or_else(|| c.uid().map(volume::pv_name));
    pv.map(|v| ObjectRef::new(&v))
}

/// Runs the controllers until a termination signal.
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>) -> Result<(), Error> {
    let workers = settings.workers;
    let instance = Instance {
        provisioner: settings.provisioner.clone(),
        cluster: cluster_uid(&client).await?,
    };
    let (classes, class_writer) = reflector::store();
    let (volume_cache, volume_writer) = reflector::store();
    let (claim_cache, claim_writer) = reflector::store();
    let streaming = settings.streaming_lists;
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics,
        classes,
        volume_cache,
        claim_cache,
        instance,
    ));
    let listed = ctx.caches.listed.clone();
    let class_watch = reflector(
        class_writer,
        watcher(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .inspect(mark_when_listed(listed.classes.clone()))
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(class_watch);
    if streaming {
        tracing::info!(
            "watches begin with streaming lists (the API server sends its state one object at a time)"
        );
    }
    let volumes = cached_controller(&client, streaming, volume_writer, listed.volumes.clone());
    let claims = cached_controller(&client, streaming, claim_writer, listed.claims.clone());
    let maintenance = tokio::spawn(super::maintain::run(ctx.clone()));
    let heap = tokio::spawn(release_free_heap_every(HEAP_TRIM));
    // /readyz: ready once claims, volumes and classes have all been listed.
    let synced = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            listed.volumes.wait().await;
            listed.claims.wait().await;
            listed.classes.wait().await;
            ctx.metrics.health.watches_synced();
            tracing::info!("watches synced: claims, volumes and classes listed");
        })
    };
    let claims = claims
        .with_config(ControllerConfig::default().concurrency(workers))
        .shutdown_on_signal()
        .run(
            |c, ctx| reconcile_decoded(c, ctx, provision::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    let early = ctx.settings.early_provisioning;
    let volumes = volumes
        // A claim's deletion wakes its volume at once, rather than after
        // kube-controller-manager marks it Released: the volume it is bound to, or, before
        // binding, the one we would have made for it (a wake-up only; the reconcile checks).
        .watches_stream(claims_going(&client, ctx.clone()), move |c| {
            volume_to_wake(c, early)
        })
        .with_config(ControllerConfig::default().concurrency(workers))
        .shutdown_on_signal()
        .run(
            |c, ctx| reconcile_decoded(c, ctx, delete::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));
    // Its own task: without the snapshot CRDs it waits for them, and must not hold up shutdown.
    let snapshots = tokio::spawn(super::snapshot::run(ctx.clone()));
    futures::join!(claims, volumes);
    snapshots.abort();
    maintenance.abort();
    heap.abort();
    synced.abort();
    tracing::info!("controllers stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::storage::v1::StorageClass;

    /// A watch counts as listed at the end of its list, with its store holding it, not before.
    #[tokio::test]
    async fn a_watch_is_marked_listed_at_the_end_of_its_list() {
        let class = |name: &str| {
            let mut c = StorageClass::default();
            c.metadata.name = Some(name.into());
            c
        };
        let (store, writer) = reflector::store();
        let listed = Listed::default();
        let events = futures::stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(class("a"))),
            Ok(watcher::Event::InitApply(class("b"))),
            Ok(watcher::Event::InitDone),
        ]);
        let (l, s) = (listed.clone(), store.clone());
        reflector(writer, events)
            .inspect(mark_when_listed(listed.clone()))
            .for_each(move |e| {
                match e {
                    Ok(watcher::Event::InitDone) => assert!(l.is_listed() && s.len() == 2),
                    _ => assert!(!l.is_listed(), "marked before the end of the list"),
                }
                futures::future::ready(())
            })
            .await;
        assert!(listed.is_listed());
    }
}
