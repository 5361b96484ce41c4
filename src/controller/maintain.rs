//! Periodic housekeeping while leading: purge what we trashed, collect images orphaned by a
//! crash, close idle Ceph clients. Everything destructive here requires our stamp on the
//! image (see [`domain::owner`]) and asks the API server, not a cache, whether its PV or
//! claim still exists.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::Api;

use super::Context;
use super::purge::Job;
use crate::error::SecretRole;
use crate::k8s;
use ceph::{CephError, Credentials, RbdCluster};
use domain::owner::{self, INTENTS_OBJECT, Intent, IntentAction, Liveness, Orphan, PvState, Stamp};
use domain::{params, volume};

pub async fn run(ctx: Arc<Context>) {
    let every = ctx.settings.maintenance_interval;
    if every.is_zero() {
        tracing::info!(
            "housekeeping is off (--maintenance-interval 0): trashed images are purged only by deletions"
        );
        return;
    }
    // Orphan collection must know every PV: wait for the volumes watch to list them all.
    ctx.volumes_listed().await;
    tracing::info!(every = ?every, grace = ?ctx.settings.orphan_grace, "housekeeping: purge what we trashed, collect orphaned images");
    loop {
        tokio::time::sleep(every).await;
        let closed = ctx.ceph.connections.close_idle();
        ctx.metrics.set_ceph_clients(ctx.ceph.connections.len());
        if closed > 0 {
            tracing::debug!(closed, "closed idle Ceph clients");
        }
        let pools = pools(&ctx).await;
        tracing::debug!(pools = pools.len(), "housekeeping pass");
        for (creds, pool) in pools {
            let cluster = match ctx.connect_for_housekeeping(&creds).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%pool, error = %e, "housekeeping skipped this pool");
                    continue;
                }
            };
            sweep_trash(&ctx, &cluster, &pool).await;
            collect_orphans(&ctx, &cluster, &pool).await;
        }
    }
}

/// The (admin credentials, pool) of every StorageClass we serve, once each.
async fn pools(ctx: &Context) -> Vec<(Credentials, String)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for class in ctx.caches.classes.state() {
        if class.provisioner != ctx.settings.provisioner {
            continue;
        }
        let Ok(p) = params::parse(&class.parameters.clone().unwrap_or_default()) else {
            continue;
        };
        if !seen.insert((p.monitors.join(","), p.pool.clone())) {
            continue;
        }
        let key = match k8s::ceph_key(
            &ctx.kube.client,
            SecretRole::Admin,
            &p.admin_secret,
            &p.admin_id,
            &ctx.settings.service_account,
        )
        .await
        {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(class = ?class.metadata.name, error = %e, "housekeeping: no admin key");
                continue;
            }
        };
        out.push((
            Credentials {
                monitors: p.monitors.clone(),
                user: p.admin_id.clone(),
                key,
            },
            p.pool,
        ));
    }
    out
}

/// Queues for purging every trash entry that this instance put there, and nothing else:
/// an operator's own `rbd trash mv`, other provisioners' and other clusters' entries stay.
pub async fn sweep_trash(ctx: &Context, cluster: &Arc<dyn RbdCluster>, pool: &str) {
    let Some(entries) = listed(cluster.trash_list(pool).await, pool, "the trash") else {
        return;
    };
    let (mut ours, total) = (0, entries.len());
    for e in entries {
        let (meta, size) = match cluster.trash_image(pool, &e.id, owner::KEYS).await {
            Ok(m) => m,
            // The image behind the entry cannot be opened: a purge (ours, or anyone's `rbd trash
            // rm`) interrupted after it had begun destroying the image leaves no usable image to
            // protect, so it is finished. A half-moved entry (also unreadable) still holds a whole
            // image that nothing proves ours: its move is not finished here (`finish_move`).
            Err(err) if err.is_not_found() && e.name.starts_with(domain::volume::IMAGE_PREFIX) => {
                tracing::info!(%pool, image = %e.name, id = %e.id, "finishing the purge of a trash entry whose image is already removed");
                ctx.ceph
                    .purger
                    .submit(Job::trash_entry(cluster, pool, e, 0, false));
                continue;
            }
            Err(err) => {
                tracing::debug!(%pool, image = %e.name, error = %err, "trash entry unreadable; left alone");
                continue;
            }
        };
        if owner::purgeable(&meta, &ctx.instance) {
            ours += 1;
            tracing::info!(%pool, image = %e.name, "purging an image we trashed earlier");
            ctx.ceph
                .purger
                .submit(Job::trash_entry(cluster, pool, e, size, true));
        }
    }
    tracing::info!(%pool, entries = total, ours, "trash sweep done");
}

/// Removes images that a crash left behind: created, then the process died, then the claim
/// went before a restart, so no PV was ever written and nothing else would remove them. Only
/// images whose stamp says no PV was written qualify, and every other fact must agree (see
/// [`owner::orphan`]). Images created but never stamped are first stamped from their intent
/// record ([`settle_intents`]).
pub async fn collect_orphans(ctx: &Context, cluster: &Arc<dyn RbdCluster>, pool: &str) {
    let Some(images) = listed(cluster.list_images(pool).await, pool, "images") else {
        return;
    };
    settle_intents(ctx, cluster, pool, &images).await;
    for image in images
        .iter()
        .filter(|i| i.starts_with(volume::IMAGE_PREFIX))
    {
        if let Err(e) = collect_one(ctx, cluster, pool, image).await {
            tracing::warn!(%pool, %image, error = %e, "orphan check failed; left alone");
        }
    }
}

/// Goes through the intent records of this instance in `pool` (written before each image is
/// created): an image that exists unstamped (its creator died between creating and stamping
/// it) is stamped from its record; a name left without an image header (its creator died
/// inside the creation: no data can exist) is removed once its claim is gone; records whose
/// work is done are dropped.
pub async fn settle_intents(
    ctx: &Context,
    cluster: &Arc<dyn RbdCluster>,
    pool: &str,
    listed: &[String],
) {
    let records = match cluster.records(pool, INTENTS_OBJECT).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%pool, error = %e, "reading the intent records failed");
            return;
        }
    };
    let mut done = Vec::new();
    for (image, value) in records {
        let Some(intent) = Intent::read(&image, &value, &ctx.instance) else {
            continue;
        };
        let meta = match cluster.metadata(pool, &image, owner::KEYS).await {
            Ok(m) => Some(m),
            Err(e) if e.is_not_found() => None,
            Err(e) => {
                tracing::warn!(%pool, %image, error = %e, "intent record: image unreadable; left for the next pass");
                continue;
            }
        };
        let now = super::unix_now();
        let grace = ctx.settings.orphan_grace;
        match owner::intent_action(&intent, meta.as_ref(), now, grace) {
            IntentAction::Wait => {}
            IntentAction::Drop if meta.is_none() && listed.contains(&image) => {
                if let Err(e) = remove_half_made(ctx, cluster, pool, &intent).await {
                    tracing::warn!(%pool, %image, error = %e, "a half-made image was left alone");
                } else {
                    done.push(image);
                }
            }
            IntentAction::Drop => done.push(image),
            IntentAction::Stamp(pairs) => {
                let _held = ctx.ceph.locks.lock(pool, &image).await;
                match cluster.set_metadata(pool, &image, pairs).await {
                    Ok(()) => {
                        tracing::warn!(%pool, %image, "stamped an image whose creator stopped before stamping it (from its intent record)");
                        done.push(image);
                    }
                    Err(e) => {
                        tracing::warn!(%pool, %image, error = %e, "stamping from the intent record failed; retried next pass")
                    }
                }
            }
        }
    }
    if !done.is_empty()
        && let Err(e) = cluster.records_remove(pool, INTENTS_OBJECT, done).await
    {
        tracing::warn!(%pool, error = %e, "dropping intent records failed; retried next pass");
    }
}

/// A name in the directory whose image cannot be opened, with our intent record and its claim
/// gone: a process killed inside `rbd_create4`. No data can exist without the header.
async fn remove_half_made(
    ctx: &Context,
    cluster: &Arc<dyn RbdCluster>,
    pool: &str,
    intent: &Intent,
) -> crate::error::Result<()> {
    let Some(stamp) = intent.stamp() else {
        return Ok(());
    };
    if liveness(ctx, &stamp).await?.claim_exists {
        // Provisioning removes and recreates it (`provision::recreate_if_half_made`).
        return Ok(());
    }
    let _held = ctx.ceph.locks.lock(pool, &intent.image).await;
    cluster
        .remove_image(pool, &intent.image)
        .await
        .map_err(crate::error::Error::ceph(format!(
            "image {pool}/{}",
            intent.image
        )))?;
    tracing::warn!(%pool, image = %intent.image, "removed the remains of an image whose creation was interrupted (no header, so no data); its claim is gone");
    Ok(())
}

/// What a listing of `pool` returned; `None` (logged) when it failed: the next round retries.
fn listed<T>(r: Result<Vec<T>, CephError>, pool: &str, what: &str) -> Option<Vec<T>> {
    r.map_err(|e| tracing::warn!(%pool, error = %e, "listing {what} failed"))
        .ok()
}

async fn collect_one(
    ctx: &Context,
    cluster: &Arc<dyn RbdCluster>,
    pool: &str,
    image: &str,
) -> crate::error::Result<()> {
    use crate::error::Error;
    let object = format!("image {pool}/{image}");
    let referenced = |ctx: &Context| {
        ctx.caches
            .volumes
            .state()
            .iter()
            .any(|pv| pv.names_image(pool, image))
    };
    if referenced(ctx) {
        return Ok(());
    }
    let meta = match cluster.metadata(pool, image, owner::KEYS).await {
        Ok(m) => m,
        // Deleted meanwhile.
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(Error::ceph(&object)(e)),
    };
    // Only an image ours that never had a PV can be an orphan: nothing else costs a question.
    let Some(stamp) = Stamp::read(&meta)
        .filter(|s| owner::stamped_by(&meta, &ctx.instance) && s.pv_state == PvState::None)
    else {
        return Ok(());
    };
    let _held = ctx.ceph.locks.lock(pool, image).await;
    let mut live = Liveness {
        referenced: referenced(ctx),
        ..liveness(ctx, &stamp).await?
    };
    let decide = |live| {
        owner::orphan(
            &meta,
            &ctx.instance,
            live,
            super::unix_now(),
            ctx.settings.orphan_grace,
        )
    };
    if decide(live) == Orphan::Collect {
        // Asked last: it costs an open. A mapped image is never taken, whatever its stamp says.
        live.watched = !cluster
            .watchers(pool, image)
            .await
            .map_err(Error::ceph(&object))?
            .is_empty();
    }
    match decide(live) {
        Orphan::Keep(why) => {
            tracing::debug!(%pool, %image, why = why.why(), "not an orphan");
            Ok(())
        }
        Orphan::Collect => {
            let info = cluster
                .image_info(pool, image)
                .await
                .map_err(Error::ceph(&object))?;
            super::purge::trash(
                &ctx.instance,
                cluster,
                pool,
                image,
                &stamp.pv,
                &meta,
                &object,
            )
            .await?;
            ctx.ceph.purger.submit(Job {
                cluster: cluster.clone(),
                pool: pool.to_string(),
                id: info.id,
                image: image.to_string(),
                parent: info.parent,
                size: info.size,
                finish_move: true,
            });
            ctx.metrics.record("orphan_collect", Ok(Duration::ZERO));
            tracing::warn!(%pool, %image, claim = %format!("{}/{} (uid {})", stamp.claim_namespace, stamp.claim_name, stamp.claim_uid), "removed an image orphaned by an interrupted provisioning: no PV was ever written for it, and its claim is gone");
            Ok(())
        }
    }
}

/// Asks the API server (not a cache) whether the stamped PV and claim exist.
async fn liveness(ctx: &Context, stamp: &Stamp) -> crate::error::Result<Liveness> {
    use crate::error::Error;
    let pv_exists = Api::<PersistentVolume>::all(ctx.kube.client.clone())
        .get_opt(&stamp.pv)
        .await
        .map_err(Error::kube("read PersistentVolume", &stamp.pv))?
        .is_some();
    let claim =
        Api::<PersistentVolumeClaim>::namespaced(ctx.kube.client.clone(), &stamp.claim_namespace)
            .get_opt(&stamp.claim_name)
            .await
            .map_err(Error::kube(
                "read PersistentVolumeClaim",
                domain::meta::qualified(Some(&stamp.claim_namespace), &stamp.claim_name),
            ))?;
    let claim_exists = claim.is_some_and(|c| c.metadata.uid.as_deref() == Some(&stamp.claim_uid));
    Ok(Liveness {
        pv_exists,
        referenced: false,
        claim_exists,
        watched: false,
    })
}

#[cfg(test)]
mod tests;
