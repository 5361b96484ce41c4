//! One VolumeSnapshotContent of our driver: its RBD snapshot cut (or, pre-provisioned,
//! checked) and its status filled; under `Delete`, the RBD snapshot removed when the
//! snapshot-controller asks, restored volumes made independent first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use super::{Context, our_drivers, pool_credentials, snapshot_class, snapshot_ref};
use crate::error::Error;
use crate::k8s::snapshot::{VolumeSnapshotClass, VolumeSnapshotContent};
use ceph::{RbdCluster, SnapInfo};
use domain::owner::Place;
use domain::snapshot::{self as snap, ContentAction, Handle, SnapshotError};

pub(super) async fn reconcile(
    c: Arc<VolumeSnapshotContent>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    if !our_drivers(&ctx).contains(&c.spec.driver) {
        return Ok(Action::await_change());
    }
    let object = format!(
        "VolumeSnapshotContent {}",
        c.metadata.name.as_deref().unwrap_or_default()
    );
    let action = snap::decide(&c.facts()).map_err(|e| Error::Snapshot {
        object: object.clone(),
        cause: e.into(),
    });
    // Most events are of contents already done: they cost no read of their class.
    if matches!(action, Ok(ContentAction::Nothing)) {
        return Ok(Action::await_change());
    }
    let class = match c.spec.volume_snapshot_class_name.as_deref() {
        Some(n) if !n.is_empty() => snapshot_class(&ctx, n).await?,
        _ => None,
    };
    // A class of another driver makes the content someone else's, as for csi-snapshotter.
    if class.as_ref().is_some_and(|k| k.driver != c.spec.driver) {
        return Ok(Action::await_change());
    }
    let class_name = class
        .as_ref()
        .and_then(|k| k.metadata.name.clone())
        .unwrap_or_default();
    let started = Instant::now();
    let _under_way = match &action {
        Ok(ContentAction::Nothing) => None,
        Ok(ContentAction::DeleteSnapshot(_) | ContentAction::ReleaseFinalizer) => {
            Some(ctx.metrics.under_way("snapshot_delete"))
        }
        _ => Some(ctx.metrics.under_way("snapshot_create")),
    };
    let (create, r) = match action {
        Err(e) => (true, Err(e)),
        Ok(ContentAction::Nothing) => return Ok(Action::await_change()),
        Ok(ContentAction::Create { volume_handle }) => (
            true,
            cut(&c, &ctx, class.as_ref(), &volume_handle, &object).await,
        ),
        Ok(ContentAction::CheckStatic(h)) => (true, check_static(&c, &ctx, &h, &object).await),
        Ok(ContentAction::DeleteSnapshot(h)) => (false, delete(&c, &ctx, &h, &object).await),
        Ok(ContentAction::ReleaseFinalizer) => {
            (false, release(&c, &ctx, &object).await.map(|()| None))
        }
    };
    let key = c.metadata.uid.as_deref().unwrap_or_default();
    match r {
        Ok(None) => {
            ctx.metrics
                .snapshot(create, &class_name, Ok(started.elapsed()));
            ctx.succeeded(key);
            Ok(Action::await_change())
        }
        Ok(Some(wait)) => {
            ctx.succeeded(key);
            Ok(wait)
        }
        Err(e) => {
            ctx.metrics.snapshot(create, &class_name, Err(e.kind()));
            report(&c, &ctx, create, &e).await;
            Err(e)
        }
    }
}

pub(super) fn error_policy(
    c: Arc<VolumeSnapshotContent>,
    err: &Error,
    ctx: Arc<Context>,
) -> Action {
    let delay = ctx.backoff(c.metadata.uid.as_deref().unwrap_or_default());
    tracing::warn!(content = c.metadata.name.as_deref().unwrap_or_default(), error = %err, retry_in = ?delay, "snapshot operation failed");
    Action::requeue(delay)
}

/// A failure, where the VolumeSnapshot's owner looks: the content's `status.error` (which the
/// snapshot-controller copies to the VolumeSnapshot) and a Warning event on the VolumeSnapshot.
async fn report(c: &VolumeSnapshotContent, ctx: &Context, create: bool, e: &Error) {
    let message = e.to_string();
    let r = &c.spec.volume_snapshot_ref;
    if let (Some(ns), Some(name)) = (r.namespace.as_deref(), r.name.as_deref()) {
        let (reason, action) = if create {
            ("SnapshotCreationFailed", "CreateSnapshot")
        } else {
            ("SnapshotDeleteError", "DeleteSnapshot")
        };
        let about = snapshot_ref(ns, name, r.uid.as_deref());
        ctx.kube
            .events
            .warning(&about, reason, action, message.clone())
            .await;
    }
    if !create
        || c.status
            .as_ref()
            .and_then(|s| s.error.as_ref()?.message.as_deref())
            == Some(&message)
    {
        return;
    }
    let patch = json!({"status": {"readyToUse": false, "error": {"time": Time(Timestamp::now()), "message": message}}});
    if let Err(err) = contents(ctx)
        .patch_status(name_of(c), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::debug!(error = %crate::error::kube_cause(&err), "could not write the content's status.error");
    }
}

fn contents(ctx: &Context) -> Api<VolumeSnapshotContent> {
    Api::all(ctx.kube.client.clone())
}

/// The content as the API server holds it now (`None`: gone).
async fn read_fresh(
    c: &VolumeSnapshotContent,
    ctx: &Context,
) -> Result<Option<VolumeSnapshotContent>, Error> {
    contents(ctx)
        .get_opt(name_of(c))
        .await
        .map_err(Error::kube("read VolumeSnapshotContent", name_of(c)))
}

fn name_of(c: &VolumeSnapshotContent) -> &str {
    c.metadata.name.as_deref().unwrap_or_default()
}

/// Sets or removes the being-created annotation. `had`: whether the content as read fresh
/// carries it (never the cached copy, which may predate this process's own patch: a removal
/// judged on it was skipped, and the annotation then held the content's deletion for ever).
async fn being_created(
    c: &VolumeSnapshotContent,
    ctx: &Context,
    had: bool,
    on: bool,
) -> Result<(), Error> {
    if had == on {
        return Ok(());
    }
    let value = on.then_some("yes");
    let patch = json!({"metadata": {"annotations": {snap::ANN_BEING_CREATED: value}}});
    contents(ctx)
        .patch(name_of(c), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(Error::kube("annotate VolumeSnapshotContent", name_of(c)))
}

/// Fills the status as csi-snapshotter does: handle, creation time and size once, never
/// overwritten; `readyToUse`; a former error cleared.
async fn ready(
    c: &VolumeSnapshotContent,
    ctx: &Context,
    handle: String,
    info: &SnapInfo,
) -> Result<(), Error> {
    let s = c.status.clone().unwrap_or_default();
    let nanos = if info.timestamp > 0 {
        info.timestamp.saturating_mul(1_000_000_000)
    } else {
        Timestamp::now().as_nanosecond() as i64
    };
    let mut status = json!({
        "snapshotHandle": s.snapshot_handle.unwrap_or(handle),
        "creationTime": s.creation_time.unwrap_or(nanos),
        "readyToUse": true,
        "error": null,
    });
    let size = s
        .restore_size
        .or_else(|| i64::try_from(info.size).ok())
        .filter(|n| *n > 0);
    if let Some(n) = size {
        status["restoreSize"] = json!(n);
    }
    contents(ctx)
        .patch_status(
            name_of(c),
            &PatchParams::default(),
            &Patch::Merge(&json!({ "status": status })),
        )
        .await
        .map(drop)
        .map_err(Error::kube(
            "write the status of VolumeSnapshotContent",
            name_of(c),
        ))
}

/// Cuts the snapshot of a volume of ours (again, after a crash: the name is the
/// VolumeSnapshot's, so there is never a second one) and fills the status.
async fn cut(
    c: &VolumeSnapshotContent,
    ctx: &Context,
    class: Option<&VolumeSnapshotClass>,
    volume_handle: &str,
    object: &str,
) -> Result<Option<Action>, Error> {
    let fail = |cause: SnapshotError| Error::Snapshot {
        object: object.to_string(),
        cause,
    };
    // The watch may be behind this process's own status write (a reconcile queued by the
    // annotation patch before it would cut again, harmlessly but for nothing): read it fresh.
    let had = match read_fresh(c, ctx).await?.map(|f| f.facts()) {
        Some(f) if !(f.ready && f.status_handle.is_some()) => f.being_created,
        _ => return Ok(Some(Action::await_change())),
    };
    let class_params = match class {
        Some(k) => snap::class_params(
            k.metadata.name.as_deref().unwrap_or_default(),
            &k.parameters.clone().unwrap_or_default(),
        )
        .map_err(|e| fail(e.into()))?,
        None => snap::ClassParams::default(),
    };
    let Some(pv) = super::volume_of_handle(ctx, &c.spec.driver, volume_handle).await? else {
        // Not a volume of ours: ceph-csi's own, under the same driver name, say.
        tracing::debug!(%object, volume_handle, "not a volume of this provisioner; left alone");
        return Ok(Some(Action::await_change()));
    };
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let t = domain::reclaim::target(&pv).map_err(|cause| Error::Unlocated {
        action: "snapshot",
        pv: pv_name.clone(),
        cause,
    })?;
    let volume_cluster = pv
        .spec
        .as_ref()
        .and_then(|s| {
            s.csi
                .as_ref()?
                .volume_attributes
                .as_ref()?
                .get("clusterID")
                .cloned()
        })
        .unwrap_or_default();
    if let Some(given) = class_params.cluster_id
        && given != volume_cluster
    {
        return Err(fail(SnapshotError::ClusterId {
            class: class
                .and_then(|k| k.metadata.name.clone())
                .unwrap_or_default(),
            given,
            volume: volume_cluster,
        }));
    }
    let storage_class = pv
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default();
    let max = match ctx.class(&storage_class).await? {
        Some(k) => domain::params::parse(&k.parameters.clone().unwrap_or_default())
            .map(|p| p.max_snapshots)
            .unwrap_or(domain::params::DEFAULT_MAX_SNAPSHOTS),
        None => domain::params::DEFAULT_MAX_SNAPSHOTS,
    };
    let cluster = ctx
        .volume_cluster(&pv, &t, |why| Error::Mismatch {
            action: "snapshot",
            pv: pv_name.clone(),
            why,
        })
        .await?;
    let (place, _) = ctx
        .checked_place_and_stamp(&cluster, &pv, &t, object, "snapshot")
        .await?;
    let uid = c.spec.volume_snapshot_ref.uid.clone().unwrap_or_default();
    let name = snap::rbd_snap_name(&uid);
    being_created(c, ctx, had, true).await?;
    let ceph = Error::ceph(format!("{object} (image {}/{})", t.pool, t.image));
    {
        // Not while the volume is deleted or cloned.
        let _held = ctx.ceph.locks.lock(&t.pool, &t.image).await;
        let snaps = cluster
            .snap_list(&t.pool, &t.image)
            .await
            .map_err(Error::ceph(object))?;
        if !snaps.iter().any(|s| s.name == name) && snaps.len() >= max as usize {
            // Nothing cut: the annotation must not hold a deletion back.
            being_created(c, ctx, true, false).await.ok();
            return Err(fail(SnapshotError::TooMany {
                image: format!("{}/{}", t.pool, t.image),
                class: storage_class,
                count: snaps.len(),
                max,
            }));
        }
        crate::failpoint::hit(crate::failpoint::Point::BeforeSnapshot, &name).await;
        cluster
            .snap_create(&t.pool, &t.image, &name)
            .await
            .map_err(Error::ceph(object))?;
        // Protected at once: restores clone it (clone format 1, which every kernel maps).
        cluster
            .snap_protect(&t.pool, &t.image, &name)
            .await
            .map_err(Error::ceph(object))?;
    }
    let info = find_snap(&cluster, &t.pool, &t.image, &name)
        .await
        .map_err(ceph)?
        .ok_or_else(|| Error::SnapshotGone {
            object: object.to_string(),
            handle: format!("{}/{}@{name}", t.pool, t.image),
        })?;
    crate::failpoint::hit(crate::failpoint::Point::BeforeSnapshotStatus, &name).await;
    let handle = Handle {
        place: Some(place),
        pool: t.pool.clone(),
        image: t.image.clone(),
        snap: name,
    };
    ready(c, ctx, handle.to_string(), &info).await?;
    being_created(c, ctx, true, false).await?;
    tracing::info!(%object, snapshot = %handle, pv = %pv_name, "snapshot ready");
    Ok(None)
}

async fn find_snap(
    cluster: &Arc<dyn RbdCluster>,
    pool: &str,
    image: &str,
    name: &str,
) -> Result<Option<SnapInfo>, ceph::CephError> {
    Ok(cluster
        .snap_list(pool, image)
        .await?
        .into_iter()
        .find(|s| s.name == name))
}

/// A cluster for the snapshot `h`, checked to be where the handle says, if it says.
async fn reach(
    c: &VolumeSnapshotContent,
    ctx: &Context,
    h: &Handle,
    object: &str,
    action: &'static str,
) -> Result<Arc<dyn RbdCluster>, Error> {
    let (creds, _) = pool_credentials(ctx, object, &c.spec.driver, &h.pool).await?;
    let cluster = ctx.connect(&creds).await?;
    if let Some(recorded) = &h.place {
        let live = Place {
            fsid: cluster.fsid().await.map_err(Error::ceph(object))?,
            pool_id: cluster
                .pool_id(&h.pool)
                .await
                .map_err(Error::ceph(object))?,
        };
        if &live != recorded {
            let why = if live.fsid != recorded.fsid {
                format!(
                    "it was cut in Ceph cluster {} but the monitors {} lead to cluster {}",
                    recorded.fsid,
                    cluster.monitors(),
                    live.fsid
                )
            } else {
                format!(
                    "pool {} had id {} when it was cut and has id {} now (the pool was replaced)",
                    h.pool, recorded.pool_id, live.pool_id
                )
            };
            return Err(Error::SnapshotMoved {
                action,
                handle: h.to_string(),
                pool: h.pool.clone(),
                why,
            });
        }
    }
    Ok(cluster)
}

/// A pre-provisioned content: its snapshot must exist; then it is ready.
async fn check_static(
    c: &VolumeSnapshotContent,
    ctx: &Context,
    h: &Handle,
    object: &str,
) -> Result<Option<Action>, Error> {
    let cluster = reach(c, ctx, h, object, "use").await?;
    let info = find_snap(&cluster, &h.pool, &h.image, &h.snap)
        .await
        .or_else(|e| if e.is_not_found() { Ok(None) } else { Err(e) })
        .map_err(Error::ceph(object))?
        .ok_or_else(|| Error::SnapshotGone {
            object: object.to_string(),
            handle: h.to_string(),
        })?;
    ready(c, ctx, h.to_string(), &info).await?;
    tracing::info!(%object, snapshot = %h, "pre-provisioned snapshot checked and ready");
    Ok(None)
}

/// Removes the RBD snapshot, after its restored volumes are made independent of it
/// (flattened, in the background: the deletion is retried until they are), then the finalizer.
async fn delete(
    c: &VolumeSnapshotContent,
    ctx: &Context,
    h: &Handle,
    object: &str,
) -> Result<Option<Action>, Error> {
    // Decided on the watch's copy; the removal rests on the content as it is now: an operator
    // may have set Retain a moment ago, or a restored etcd brought back an old copy.
    let Some(now) = read_fresh(c, ctx).await? else {
        return Ok(Some(Action::await_change()));
    };
    if snap::decide(&now.facts()).ok() != Some(ContentAction::DeleteSnapshot(h.clone())) {
        tracing::info!(%object, "the content changed since the watch saw it; decided again");
        return Ok(Some(Action::await_change()));
    }
    let cluster = reach(&now, ctx, h, object, "delete").await?;
    {
        let _held = ctx.ceph.locks.lock(&h.pool, &h.image).await;
        let children = match cluster.snap_children(&h.pool, &h.image, &h.snap).await {
            Ok(children) => children,
            Err(e) if e.is_not_found() => Vec::new(),
            Err(e) => return Err(Error::ceph(object)(e)),
        };
        if let Some(child) = children.first() {
            if child.in_trash {
                // A deleted restore waiting for its purge: the purge queue removes it.
                tracing::info!(%object, child = %format!("{}/{}", child.pool, child.image), "a deleted restored volume still in the trash pins the snapshot; waiting for its purge");
            } else {
                super::super::flatten::in_background(
                    ctx,
                    &cluster,
                    &child.pool,
                    &child.image,
                    None,
                );
                tracing::info!(%object, child = %format!("{}/{}", child.pool, child.image), "flattening a volume restored from the snapshot before deleting it");
            }
            return Ok(Some(Action::requeue(Duration::from_secs(2))));
        }
        match cluster.snap_unprotect(&h.pool, &h.image, &h.snap).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::ceph(object)(e)),
        }
        match cluster.snap_remove(&h.pool, &h.image, &h.snap).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::ceph(object)(e)),
        }
    }
    tracing::info!(%object, snapshot = %h, "snapshot deleted");
    release(&now, ctx, object).await?;
    Ok(None)
}

/// Drops the content finalizer, on the content as read (a JSON patch tested against its
/// resourceVersion: a content changed meanwhile is read again and decided anew).
async fn release(c: &VolumeSnapshotContent, ctx: &Context, object: &str) -> Result<(), Error> {
    let rest: Vec<String> = c
        .metadata
        .finalizers
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f != snap::CONTENT_FINALIZER)
        .collect();
    // The resourceVersion makes the patch conditional on the content as read.
    let patch =
        json!({"metadata": {"resourceVersion": c.metadata.resource_version, "finalizers": rest}});
    match contents(ctx)
        .patch(name_of(c), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // Gone already, or changed: the watch brings the new state.
        Err(e) if crate::error::is_status(&e, 404) || crate::error::is_status(&e, 409) => {
            tracing::debug!(%object, "content changed or went before its finalizer was dropped");
            Ok(())
        }
        Err(e) => Err(Error::kube("drop the finalizer of", object.to_string())(e)),
    }
}
