//! Recording, while a volume is plainly in use, what its later deletion will check: on the
//! image's stamp (whose PV it is, for volumes of the old provisioner; where it was made; that a
//! PV has it) and on the PV (where its image was made). Volumes this provisioner makes get all
//! of it at creation; this is for the others, and for ours from before these records.

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, Patch, PatchParams};

use super::Context;
use super::outcome::Outcome;
use crate::error::{Error, FactsDisagree, Result, is_status};
use domain::owner;
use domain::reclaim::{self, DeleteTarget};
use domain::volume::{ANN_FSID, ANN_POOL_ID};

pub async fn record(pv: &PersistentVolume, t: &DeleteTarget, ctx: &Context) -> Result<Outcome> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let Some(seen) = reclaim::bound_volume(pv) else {
        return Ok(Outcome::Done(()));
    };
    let mismatch = |why| Error::Mismatch {
        action: "record",
        pv: name.clone(),
        why,
    };
    let cluster = ctx.volume_cluster(pv, t, &mismatch).await?;
    let object = format!("image {}/{} of volume {name}", t.pool, t.image);
    let (live, meta) = ctx
        .checked_place_and_stamp(&cluster, pv, t, &object, "record")
        .await?;
    let pairs = owner::first_sight_pairs(&meta, &ctx.instance, &seen, &live, super::unix_now())
        .map_err(|m| mismatch(FactsDisagree::Stamp(m)))?;
    // Without opening the image: it is in use, and nothing that has it open reads these keys.
    cluster
        .set_metadata_unopened(&t.pool, &t.image, pairs)
        .await
        .map_err(Error::ceph(&object))?;
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": pv.metadata.resource_version,
        "annotations": {ANN_FSID: live.fsid, ANN_POOL_ID: live.pool_id.to_string()},
    }});
    match Api::<PersistentVolume>::all(ctx.kube.client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(e) if is_status(&e, 404) => return Ok(Outcome::Done(())),
        Err(e) if is_status(&e, 409) => {
            return Ok(Outcome::changed(
                "record on",
                format!("PersistentVolume {name}"),
            ));
        }
        Err(e) => return Err(Error::kube("record on PersistentVolume", name)(e)),
    }
    tracing::info!(pv = %name, image = %format!("{}/{}", t.pool, t.image), fsid = %live.fsid, pool_id = live.pool_id, "recorded whose the image is and where it was made");
    Ok(Outcome::Done(()))
}

#[cfg(test)]
mod tests;
