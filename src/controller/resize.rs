//! Growing a bound claim's volume: image first, then the PV, then (csi) the claim's condition.

use std::time::Instant;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};

use super::Context;
use crate::error::{Error, FactsDisagree, Result};
use domain::params::Flavor;
use domain::resize::{self, ResizeAction};
use domain::volume::{capacity_quantity, human_size};
use domain::{owner, reclaim};

/// Handles a bound claim of one of our classes.
pub async fn reconcile_bound(
    pvc: &PersistentVolumeClaim,
    allow_expansion: bool,
    max_size: u64,
    ctx: &Context,
) -> Result<()> {
    let Some(pv_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
        return Ok(());
    };
    tracing::trace!(
        claim = %format!(
            "{}/{}",
            pvc.metadata.namespace.as_deref().unwrap_or_default(),
            pvc.metadata.name.as_deref().unwrap_or_default()
        ),
        pv = %pv_name,
        "bound claim"
    );
    // The cache answers the common case, nothing to do, without a request: every bound claim
    // passes here when the process starts, and 10,000 reads queued a new claim behind them.
    // Until the first list of volumes ends the cache is empty, so that wait comes first: the
    // reads would otherwise compete with the list itself.
    ctx.volumes_listed_at_start().await;
    // Only a cached PV already bound to this claim counts: its capacity only grows, so a
    // cache that lags can ask for a resize that the fresh read then settles, but never hides
    // one the fresh read would find.
    if let Some(cached) = ctx.cached_volume(&pv_name)
        && resize::bound_to(&cached, pvc)
        && resize::decide(
            pvc,
            &cached,
            allow_expansion,
            max_size,
            &ctx.settings.provisioner,
        ) == ResizeAction::Nothing
    {
        return Ok(());
    }
    let pvs: Api<PersistentVolume> = Api::all(ctx.kube.client.clone());
    let Some(pv) = pvs
        .get_opt(&pv_name)
        .await
        .map_err(Error::kube("read PersistentVolume", &pv_name))?
    else {
        return Ok(());
    };
    let regarding = pvc.object_ref(&());
    let decided = resize::decide(
        pvc,
        &pv,
        allow_expansion,
        max_size,
        &ctx.settings.provisioner,
    );
    let (reason, note) = match decided {
        ResizeAction::Nothing => return Ok(()),
        ResizeAction::Shrink { requested, current } => (
            "VolumeResizeSkipped",
            format!(
                "the claim asks for {} MiB but volume {pv_name} already has {} MiB; RBD volumes are never shrunk, so it keeps its size",
                requested >> 20,
                current >> 20
            ),
        ),
        ResizeAction::AboveMax { requested, max } => {
            let note = format!(
                "the claim asks for {} but its StorageClass provisions at most {} (maxSize); volume {pv_name} keeps its size",
                human_size(requested),
                human_size(max)
            );
            ctx.kube
                .events
                .warning(&regarding, "VolumeResizeFailed", "Resize", note)
                .await;
            return Ok(());
        }
        ResizeAction::Grow { from, to, flavor } => {
            let started = Instant::now();
            let _under_way = ctx.metrics.under_way("resize");
            if let Err(e) = grow(pvc, &pv, to, flavor, ctx).await {
                ctx.metrics.record("resize", Err(e.kind()));
                ctx.kube
                    .events
                    .warning(&regarding, "VolumeResizeFailed", "Resize", e.to_string())
                    .await;
                return Err(e);
            }
            ctx.metrics.record("resize", Ok(started.elapsed()));
            (
                "FileSystemResizeRequired",
                format!(
                    "grew volume {pv_name} from {} MiB to {} MiB; the node grows the filesystem when a pod next mounts the claim",
                    from >> 20,
                    to >> 20
                ),
            )
        }
    };
    ctx.kube
        .events
        .normal(&regarding, reason, "Resize", note)
        .await;
    Ok(())
}

async fn grow(
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    to: u64,
    flavor: Flavor,
    ctx: &Context,
) -> Result<()> {
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let t = reclaim::target(pv).map_err(|cause| Error::Unlocated {
        action: "grow",
        pv: pv_name.clone(),
        cause,
    })?;
    // Grown only where the PV and the image's stamp say it was made: an edited PV or moved
    // monitors must not grow an image in some other cluster or pool. (Not the stamp's
    // Kubernetes cluster: growing a volume carried over from another cluster harms nothing,
    // and its deletion still waits for the hand-over.)
    let mismatch = |why| Error::Mismatch {
        action: "grow",
        pv: pv_name.clone(),
        why,
    };
    let cluster = ctx.volume_cluster(pv, &t, &mismatch).await?;
    let object = format!("image {}/{} of volume {pv_name}", t.pool, t.image);
    let (live, meta) = ctx
        .checked_place_and_stamp(&cluster, pv, &t, &object, "grow")
        .await?;
    owner::check_place(&meta, &live).map_err(|m| mismatch(FactsDisagree::Stamp(m)))?;
    let info = cluster
        .image_info(&t.pool, &t.image)
        .await
        .map_err(Error::ceph(&object))?;
    // The image first: a PV never claims more than the image has, whatever crashes when.
    if info.size < to {
        cluster
            .resize(&t.pool, &t.image, to)
            .await
            .map_err(Error::ceph(&object))?;
    }
    let patch = serde_json::json!({"spec": {"capacity": {"storage": capacity_quantity(to)}}});
    Api::<PersistentVolume>::all(ctx.kube.client.clone())
        .patch(&pv_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube("update capacity of PersistentVolume", &pv_name))?;
    if flavor == Flavor::Csi {
        // No controller hands csi claims to us: do what an external resizer does and leave
        // the claim waiting for the node to grow the filesystem.
        let ns = pvc.metadata.namespace.clone().unwrap_or_default();
        let name = pvc.metadata.name.clone().unwrap_or_default();
        let now = k8s_openapi::jiff::Timestamp::now();
        let mut conditions: Vec<serde_json::Value> = pvc
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.type_ != "Resizing" && c.type_ != "FileSystemResizePending")
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect();
        conditions.push(serde_json::json!({
            "type": "FileSystemResizePending",
            "status": "True",
            "lastTransitionTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
            "message": "Waiting for user to (re-)start a pod to finish file system resize of volume on node.",
        }));
        // Kubernetes >= 1.34 (RecoverVolumeExpansionFailure) also records what the volume now
        // has and that the node's part is next, as external-resizer writes it; kubelet
        // proceeds on NodeResizePending. Servers without these fields drop them.
        let patch = serde_json::json!({"status": {
            "conditions": conditions,
            "allocatedResources": {"storage": capacity_quantity(to)},
            "allocatedResourceStatuses": {"storage": "NodeResizePending"},
        }});
        Api::<PersistentVolumeClaim>::namespaced(ctx.kube.client.clone(), &ns)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube(
                "set FileSystemResizePending on claim",
                domain::meta::qualified(Some(&ns), &name),
            ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
