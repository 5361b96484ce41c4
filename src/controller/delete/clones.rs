//! A deleted image's clones: made independent (or, trashed and ours, purged) before the
//! image goes, so deleting a source never breaks a clone.

use std::sync::Arc;

use crate::controller::Context;
use crate::controller::outcome::{Outcome, Wait};
use crate::error::{Error, Result};
use ceph::{RbdCluster, SnapInfo};
use domain::{clone, owner};

/// The image being deleted, and how errors name it.
pub(super) struct ImageUnderDeletion<'a> {
    pub cluster: &'a Arc<dyn RbdCluster>,
    pub pool: &'a str,
    pub image: &'a str,
    pub object: &'a str,
}

/// Clones made from this image (snapshots named after them) become independent first, so
/// deleting a source never breaks its clones. Flattening can take long: it runs in the
/// background with its own deadline, and this deletion is retried until it is done.
pub(super) async fn detach_clones(
    ctx: &Context,
    src: &ImageUnderDeletion<'_>,
    snaps: Vec<SnapInfo>,
) -> Result<Outcome> {
    let ImageUnderDeletion {
        cluster,
        pool,
        image,
        object,
    } = *src;
    // A volume's VolumeSnapshots outlive neither it nor its deletion: the image stays until
    // they are deleted (a restore may still be made from them).
    let kept: Vec<&str> = snaps
        .iter()
        .filter(|s| domain::snapshot::is_volume_snapshot(&s.name))
        .map(|s| s.name.as_str())
        .collect();
    if !kept.is_empty() {
        return Ok(Outcome::Waiting(Wait::Snapshots {
            pool: pool.to_string(),
            image: image.to_string(),
            snapshots: kept.join(", "),
        }));
    }
    for snap in snaps {
        let Some(child) = clone::clone_of_snapshot(&snap.name) else {
            continue;
        };
        match cluster.image_info(pool, child).await {
            Ok(info) if info.parent.as_ref().is_some_and(|p| p.snap == snap.name) => {
                crate::controller::flatten::in_background(ctx, cluster, pool, child, None);
                return Ok(Outcome::Waiting(Wait::Flattening {
                    pool: pool.to_string(),
                    child: child.to_string(),
                    image: image.to_string(),
                }));
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => purge_trashed_child(ctx, src, child).await?,
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
    Ok(Outcome::Done(()))
}

/// A clone deleted by us may still sit in the trash (its purge pending or failed), and it
/// pins the source's snapshot: purge it now. A trashed clone that is not provably ours stops
/// the deletion instead.
async fn purge_trashed_child(
    ctx: &Context,
    src: &ImageUnderDeletion<'_>,
    child: &str,
) -> Result<()> {
    let ImageUnderDeletion {
        cluster,
        pool,
        object,
        ..
    } = *src;
    let entries = cluster.trash_list(pool).await;
    for e in entries
        .map_err(Error::ceph(object))?
        .iter()
        .filter(|e| e.name == child)
    {
        let meta = cluster
            .trash_metadata(pool, &e.id, owner::KEYS)
            .await
            .map_err(Error::ceph(object))?;
        if !owner::purgeable(&meta, &ctx.instance) {
            return Err(Error::ForeignClone {
                pool: pool.to_string(),
                child: child.to_string(),
                object: object.to_string(),
                id: e.id.clone(),
            });
        }
        cluster
            .trash_remove(pool, &e.id, true)
            .await
            .map_err(Error::ceph(object))?;
        tracing::info!(%pool, %child, "purged a trashed clone that pinned its source's snapshot");
    }
    Ok(())
}
