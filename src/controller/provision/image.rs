//! Making a claim's image: created or cloned, an earlier attempt's adopted, stamped, grown to
//! the claim's size, and a clone chain kept within its class's depth.

use std::sync::Arc;

use super::{Context, image_object};
use crate::error::{Error, FactsDisagree, Result};
use ceph::{CloneSpec, Created, ImageSpec, ParentSpec, RBD_FEATURE_LAYERING, RbdCluster};
use domain::clone;
use domain::owner::{self, INTENTS_OBJECT, Intent, Place, Stamp};
use domain::provision_plan::Plan;

/// Creates (or clones) the image, adopts one an earlier attempt of this claim left, stamps
/// it and grows it to the claim's size.
pub(super) async fn make_image(
    cluster: &Arc<dyn RbdCluster>,
    plan: &Plan,
    ctx: &Context,
    place: &Place,
) -> Result<()> {
    let d = &plan.draft;
    let (name, pool, image) = (d.claim_label(), &d.params.pool, &d.image);
    let object = image_object(plan);
    let spec = ImageSpec {
        pool: pool.clone(),
        name: image.clone(),
        size: d.claim.size,
        data_pool: d.params.data_pool.clone(),
        features: RBD_FEATURE_LAYERING,
    };
    let stamp = plan.stamp(crate::controller::unix_now(), place.clone());
    // Recorded before the image exists: a process stopped between creating the image and
    // stamping it leaves an unstamped image that only this record proves ours (housekeeping
    // stamps it from here; see `maintain::settle_intents`).
    let intent = Intent::new(image, &stamp, &ctx.instance);
    cluster
        .records_set(pool, INTENTS_OBJECT, vec![(image.clone(), intent.value())])
        .await
        .map_err(Error::ceph(&object))?;
    // The clone's chain depth, measured once on its source before cloning.
    let (created, depth) = match &plan.clone_source {
        None => (cluster.create_image(&spec).await, 0),
        Some(src) => {
            // Not while the source is being deleted (see `delete::detach_clones`).
            let _source_held = ctx.ceph.locks.lock(&src.pool, &src.image).await;
            check_clone_source(cluster, src, place, &object).await?;
            let depth = check_chain(cluster, plan, src, &object).await?;
            (clone_image(cluster, src, &spec).await, depth)
        }
    };
    let mut created = created.map_err(Error::ceph(&object))?;
    crate::failpoint::hit(crate::failpoint::Point::BeforeStamp, image).await;
    if created == Created::AlreadyExisted && plan.clone_source.is_none() {
        created = recreate_if_half_made(cluster, &spec, &object, &name).await?;
    }
    match created {
        // Stamped before the PV exists: an image whose claim goes before the PV is written can
        // then be proven ours and collected (see `maintain::collect_orphans`).
        Created::New => {
            let mut pairs = stamp.pairs(&ctx.instance);
            pairs.push((owner::META_MADE_BY.into(), ctx.settings.replica.clone()));
            cluster.set_metadata_unopened(pool, image, pairs).await
        }
        Created::AlreadyExisted => {
            // A previous attempt created it and then stopped before writing the PV: adopt it,
            // unless its stamp says it is someone else's or was made elsewhere.
            let meta = cluster
                .metadata(pool, image, owner::KEYS)
                .await
                .map_err(Error::ceph(&object))?;
            let inherited = match &plan.clone_source {
                Some(src) => is_own_clone(cluster, plan, ctx, src).await?,
                None => false,
            };
            if let Some(theirs) = Stamp::read(&meta)
                && !inherited
                && (theirs.claim_uid != d.claim.uid || !owner::stamped_by(&meta, &ctx.instance))
            {
                return Err(Error::ImageTaken {
                    pool: pool.clone(),
                    image: image.clone(),
                    owner_namespace: theirs.claim_namespace,
                    owner_name: theirs.claim_name,
                    owner_uid: theirs.claim_uid,
                    provisioner: meta
                        .get(owner::META_PROVISIONER)
                        .cloned()
                        .unwrap_or_else(|| "?".into()),
                });
            }
            owner::check_place(&meta, place).map_err(|m| Error::Mismatch {
                action: "adopt the image of",
                pv: d.pv_name.clone(),
                why: FactsDisagree::Stamp(m),
            })?;
            tracing::info!(claim = %name, %image, "adopting image left by an earlier attempt");
            let mut pairs = stamp.adoption_pairs(&ctx.instance, &meta);
            pairs.push((owner::META_ADOPTED_BY.into(), ctx.settings.replica.clone()));
            cluster.set_metadata(pool, image, pairs).await
        }
    }
    .map_err(Error::ceph(&object))?;
    // The stamp is on the image: the record has done its work. Dropped in the background (a
    // record left behind is dropped by housekeeping).
    {
        let (cluster, pool, image) = (cluster.clone(), pool.clone(), image.clone());
        tokio::spawn(async move {
            if let Err(e) = cluster
                .records_remove(&pool, INTENTS_OBJECT, vec![image])
                .await
            {
                tracing::debug!(error = %e, "dropping an intent record failed; housekeeping drops it");
            }
        });
    }
    if plan.clone_source.is_some() || created == Created::AlreadyExisted {
        // A clone starts at its source's size; an adopted image at whatever it was given.
        let info = cluster
            .image_info(pool, image)
            .await
            .map_err(Error::ceph(&object))?;
        if info.size < d.claim.size {
            cluster
                .resize(pool, image, d.claim.size)
                .await
                .map_err(Error::ceph(&object))?;
        }
    }
    bound_clone_depth(cluster, plan, ctx, depth);
    Ok(())
}

/// A clone's source must be where its PV and stamp say it was made: a renamed and replaced
/// pool, or monitors that now lead to another cluster, would clone some other image.
async fn check_clone_source(
    cluster: &Arc<dyn RbdCluster>,
    src: &clone::CloneSource,
    place: &Place,
    object: &str,
) -> Result<()> {
    let mismatch = |why| Error::Mismatch {
        action: "clone",
        pv: src.pv.clone(),
        why,
    };
    if let Some(recorded) = &src.recorded
        && recorded != place
    {
        let changed = if recorded.fsid != place.fsid {
            domain::reclaim::PlaceChanged::Fsid {
                pv: src.pv.clone(),
                recorded: recorded.fsid.clone(),
                live: place.fsid.clone(),
                monitors: cluster.monitors().to_string(),
            }
        } else {
            domain::reclaim::PlaceChanged::PoolId {
                pv: src.pv.clone(),
                pool: src.pool.clone(),
                recorded: recorded.pool_id.to_string(),
                live: place.pool_id,
            }
        };
        return Err(mismatch(FactsDisagree::Place(changed)));
    }
    let meta = cluster
        .metadata(&src.pool, &src.image, owner::KEYS)
        .await
        .map_err(Error::ceph(object))?;
    owner::check_place(&meta, place).map_err(|m| mismatch(FactsDisagree::Stamp(m)))
}

/// A copy-on-write clone (format 1: a protected snapshot, which every kernel client maps) of
/// the source, named after the clone so that deleting either side finds the other. A clone
/// that fails leaves no protected snapshot behind: it would pin the source for nothing.
async fn clone_image(
    cluster: &Arc<dyn RbdCluster>,
    src: &clone::CloneSource,
    spec: &ImageSpec,
) -> Result<Created, ceph::CephError> {
    let parent = parent_of(src, &spec.name);
    // A restore clones the VolumeSnapshot's own snapshot, which is never made here.
    let snap_created = match &src.snap {
        Some(_) => Created::AlreadyExisted,
        None => {
            cluster
                .snap_create(&parent.pool, &parent.image, &parent.snap)
                .await?
        }
    };
    let cloned = async {
        cluster
            .snap_protect(&parent.pool, &parent.image, &parent.snap)
            .await?;
        if crate::failpoint::fails(crate::failpoint::Point::Clone) {
            return Err(ceph::CephError::InvalidArgument {
                what: "clone",
                reason: "failpoint fail-clone".into(),
            });
        }
        cluster
            .clone_image(&CloneSpec {
                parent: parent.clone(),
                pool: spec.pool.clone(),
                name: spec.name.clone(),
                features: spec.features,
                data_pool: spec.data_pool.clone(),
                clone_format: Some(1),
            })
            .await
    }
    .await;
    if cloned.is_err() && snap_created == Created::New {
        crate::controller::purge::drop_snapshot(cluster, &parent).await;
    }
    cloned
}

/// The snapshot a clone is made from: the VolumeSnapshot's for a restore, else one of the
/// clone's own, named after it.
fn parent_of(src: &clone::CloneSource, child: &str) -> ParentSpec {
    ParentSpec {
        pool: src.pool.clone(),
        image: src.image.clone(),
        snap: src
            .snap
            .clone()
            .unwrap_or_else(|| domain::clone::clone_snapshot(child)),
    }
}

/// The depth the clone of `src` has (its source's plus one), refused beyond the class's
/// `hardMaxCloneDepth`: flattening it afterwards would leave kernels that map it meanwhile
/// unable to.
async fn check_chain(
    cluster: &Arc<dyn RbdCluster>,
    plan: &Plan,
    src: &clone::CloneSource,
    object: &str,
) -> Result<u32> {
    let depth = clone_depth(cluster, &src.pool, &src.image)
        .await
        .map_err(Error::ceph(object))?
        + 1;
    let max = plan.draft.params.hard_max_clone_depth;
    if depth > max {
        return Err(Error::Clone {
            claim: plan.draft.claim_label(),
            cause: clone::CloneError::TooDeep {
                image: format!("{}/{}", src.pool, src.image),
                depth,
                max,
            },
        });
    }
    Ok(depth)
}

/// Whether an existing image of the clone's name is this claim's clone from an earlier
/// attempt stopped before its stamp: librbd copies the source's image-meta into a clone, so
/// such a clone carries its source's stamp. Proven by the clone's parent being the snapshot
/// this claim clones, and the intent record (written before the clone, by this provisioner)
/// naming this claim.
async fn is_own_clone(
    cluster: &Arc<dyn RbdCluster>,
    plan: &Plan,
    ctx: &Context,
    src: &clone::CloneSource,
) -> Result<bool> {
    let d = &plan.draft;
    let object = image_object(plan);
    let info = cluster
        .image_info(&d.params.pool, &d.image)
        .await
        .map_err(Error::ceph(&object))?;
    if info.parent.as_ref() != Some(&parent_of(src, &d.image)) {
        return Ok(false);
    }
    let records = cluster
        .records(&d.params.pool, INTENTS_OBJECT)
        .await
        .map_err(Error::ceph(&object))?;
    Ok(records
        .iter()
        .filter(|(k, _)| k == &d.image)
        .filter_map(|(_, v)| Intent::read(&d.image, v, &ctx.instance))
        .filter_map(|i| i.stamp())
        .any(|s| s.claim_uid == d.claim.uid))
}

/// How many clones deep `pool/image` is: 0 for an image without a parent.
async fn clone_depth(
    cluster: &Arc<dyn RbdCluster>,
    pool: &str,
    image: &str,
) -> Result<u32, ceph::CephError> {
    let (mut pool, mut image, mut depth) = (pool.to_string(), image.to_string(), 0);
    // The kernel client maps chains of at most 16; deeper ones are not ours to measure.
    while depth <= 16 {
        match cluster.image_info(&pool, &image).await?.parent {
            None => break,
            Some(p) => {
                depth += 1;
                (pool, image) = (p.pool, p.image);
            }
        }
    }
    Ok(depth)
}

/// A clone deeper than its class's `maxCloneDepth` is flattened in the background (it is
/// usable meanwhile), and then no longer depends on its source's snapshot.
fn bound_clone_depth(cluster: &Arc<dyn RbdCluster>, plan: &Plan, ctx: &Context, depth: u32) {
    let Some(src) = &plan.clone_source else {
        return;
    };
    let d = &plan.draft;
    if depth > d.params.max_clone_depth {
        tracing::info!(image = %d.image, depth, max = d.params.max_clone_depth, "clone chain deeper than maxCloneDepth: flattening the new clone");
        // A clone's own snapshot goes with the flattening; a VolumeSnapshot's stays.
        let then_drop = src.snap.is_none().then(|| parent_of(src, &d.image));
        crate::controller::flatten::in_background(
            ctx,
            cluster,
            &d.params.pool,
            &d.image,
            then_drop,
        );
    }
}

/// An image whose name exists but which cannot be opened (ENOENT) is what a process killed
/// inside `rbd_create4` leaves: the name taken (directory entry, id object), no header. It can
/// be neither adopted nor created again, and every retry failed the same way for ever. It
/// holds no data and its name is this claim's own (`kubernetes-dynamic-pvc-<claim uid>`):
/// remove what there is (`rbd_remove` copes with a missing header) and create it anew.
async fn recreate_if_half_made(
    cluster: &Arc<dyn RbdCluster>,
    spec: &ImageSpec,
    object: &str,
    claim: &str,
) -> Result<Created, Error> {
    match cluster.image_info(&spec.pool, &spec.name).await {
        Ok(_) => return Ok(Created::AlreadyExisted),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(Error::ceph(object)(e)),
    }
    tracing::warn!(%claim, image = %spec.name, "the image's name exists but the image cannot be opened: an earlier attempt was stopped inside its creation; removing the remains and creating it again");
    cluster
        .remove_image(&spec.pool, &spec.name)
        .await
        .map_err(Error::ceph(object))?;
    cluster
        .create_image(spec)
        .await
        .map_err(Error::ceph(object))
}
