//! Volume reconcile: delete the image of a released Delete-policy volume, then the PV.

use std::sync::Arc;
use std::time::Instant;

use either::Either;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::Context;
use crate::ceph::Cluster;
use crate::error::{Error, Result, is_status};
use crate::reclaim::{self, DeleteTarget, VolumeAction};
use crate::volume::FINALIZER;

pub async fn reconcile(pv: Arc<PersistentVolume>, ctx: Arc<Context>) -> Result<Action> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let key = pv.metadata.uid.clone().unwrap_or_default();
    let regarding = pv.object_ref(&());
    let outcome = match reclaim::decide(&pv, &ctx.settings.provisioner) {
        VolumeAction::Ignore(_) => {
            ctx.succeeded(&key);
            return Ok(Action::await_change());
        }
        VolumeAction::RemoveFinalizer => {
            remove_finalizer(&ctx, &pv).await?;
            tracing::info!(pv = %name, "reclaim policy is not Delete: removed our finalizer");
            ctx.succeeded(&key);
            return Ok(Action::await_change());
        }
        VolumeAction::Broken(why) => Err(Error::Invalid(format!(
            "cannot delete volume {name}: {why}"
        ))),
        VolumeAction::Delete(target) => {
            let started = Instant::now();
            let r = delete(&pv, &target, &ctx).await;
            if r.is_ok() {
                ctx.metrics.record("delete", Ok(started.elapsed()));
                tracing::info!(pv = %name, image = %format!("{}/{}", target.pool, target.image), elapsed = ?started.elapsed(), "deleted volume");
            }
            r
        }
    };
    match outcome {
        Ok(()) => {
            ctx.succeeded(&key);
            Ok(Action::await_change())
        }
        Err(e) => {
            ctx.metrics.record("delete", Err(e.kind()));
            ctx.events
                .publish(
                    &regarding,
                    EventType::Warning,
                    "VolumeFailedDelete",
                    "Delete",
                    e.to_string(),
                )
                .await;
            Err(e)
        }
    }
}

async fn delete(pv: &PersistentVolume, t: &DeleteTarget, ctx: &Context) -> Result<()> {
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let creds = ctx.admin_credentials(&pv_name, t).await?;
    let cluster = ctx.connect(&creds).await?;
    let object = format!("image {}/{} of volume {pv_name}", t.pool, t.image);

    match cluster.image_info(&t.pool, &t.image).await {
        Err(e) if e.is_not_found() => {
            tracing::info!(pv = %pv_name, "image already gone");
        }
        Err(e) => return Err(Error::ceph(&object)(e)),
        Ok(info) => {
            // Read-only open: a read/write open would make us a watcher ourselves.
            let watchers = cluster
                .watchers(&t.pool, &t.image)
                .await
                .map_err(Error::ceph(&object))?;
            if !watchers.is_empty() {
                return Err(Error::ImageInUse {
                    pool: t.pool.clone(),
                    image: t.image.clone(),
                    watchers: watchers
                        .iter()
                        .map(|w| w.addr.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            detach_clones(&cluster, &t.pool, &t.image, &object).await?;
            // Trash first: returns at once whatever the size; the purge runs in the background.
            cluster
                .trash_move(&t.pool, &t.image, 0)
                .await
                .map_err(Error::ceph(&object))?;
            purge_later(
                ctx,
                cluster.clone(),
                t.pool.clone(),
                info.id.clone(),
                t.image.clone(),
                info.parent.clone(),
            );
        }
    }

    // Delete first, then drop the finalizer from what the delete returned: the other order
    // makes the finalizer patch trigger a second, idle reconcile of a PV about to go.
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pv.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match pvs.delete(&pv_name, &dp).await {
        Ok(Either::Left(still_there)) => remove_finalizer(ctx, &still_there).await,
        Ok(Either::Right(_)) => Ok(()),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(Error::kube("delete PersistentVolume", pv_name)(e)),
    }
}

/// Clones made from this image (snapshots named after them) become independent first, so
/// deleting a source never breaks its clones.
async fn detach_clones(
    cluster: &Arc<Cluster>,
    pool: &str,
    image: &str,
    object: &str,
) -> Result<()> {
    for snap in cluster
        .snap_list(pool, image)
        .await
        .map_err(Error::ceph(object))?
    {
        let Some(child) = reclaim::clone_of_snapshot(&snap.name) else {
            continue;
        };
        match cluster.flatten(pool, child).await {
            Ok(()) => tracing::info!(%image, %child, "flattened clone before deleting its source"),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(Error::ceph(format!("clone {pool}/{child} of {object}"))(e)),
        }
        cluster
            .snap_unprotect(pool, image, &snap.name)
            .await
            .map_err(Error::ceph(object))?;
        cluster
            .snap_remove(pool, image, &snap.name)
            .await
            .map_err(Error::ceph(object))?;
    }
    Ok(())
}

/// Purges a trashed image in the background, then drops the source snapshot it was cloned
/// from. The first deletion in a pool also purges what an earlier process left in the trash.
fn purge_later(
    ctx: &Context,
    cluster: Arc<Cluster>,
    pool: String,
    id: String,
    image: String,
    parent: Option<crate::ceph::ParentSpec>,
) {
    let sweep = ctx.first_delete_in(cluster.monitors(), &pool);
    tokio::spawn(async move {
        let started = Instant::now();
        if let Err(e) = cluster.trash_remove(&pool, &id, true).await {
            tracing::warn!(%pool, %image, error = %e, "purging the trashed image failed; the next process purges it");
        } else {
            tracing::debug!(%pool, %image, elapsed = ?started.elapsed(), "purged from trash");
        }
        if let Some(p) = parent
            && reclaim::clone_of_snapshot(&p.snap) == Some(image.as_str())
        {
            let _ = cluster.snap_unprotect(&p.pool, &p.image, &p.snap).await;
            let _ = cluster.snap_remove(&p.pool, &p.image, &p.snap).await;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if sweep && let Ok(entries) = cluster.trash_list(&pool).await {
            for e in entries
                .iter()
                // Ours by name; an entry someone keeps on purpose has a deferment still running.
                .filter(|e| {
                    e.name.starts_with("kubernetes-dynamic-pvc-") && e.deferment_end_time <= now
                })
            {
                if cluster.trash_remove(&pool, &e.id, true).await.is_ok() {
                    tracing::info!(%pool, image = %e.name, "purged an image left in the trash earlier");
                }
            }
        }
    });
}

/// Drops our finalizer, with the resourceVersion as precondition so that a concurrent
/// change to the list is not overwritten (the next reconcile retries).
async fn remove_finalizer(ctx: &Context, pv: &PersistentVolume) -> Result<()> {
    if !reclaim::has_finalizer(pv) {
        return Ok(());
    }
    let name = pv.metadata.name.clone().unwrap_or_default();
    let rest: Vec<&String> = pv
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != FINALIZER)
        .collect();
    let patch = serde_json::json!({
        "metadata": {"finalizers": rest, "resourceVersion": pv.metadata.resource_version}
    });
    Api::<PersistentVolume>::all(ctx.client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .or_else(|e| if is_status(&e, 404) { Ok(()) } else { Err(e) })
        .map_err(Error::kube("remove finalizer from PersistentVolume", name))
}
