//! VolumeSnapshots of csi-flavour volumes: the provisioner plays csi-snapshotter for its own
//! volumes. The upstream snapshot-controller binds snapshots to contents and keeps the
//! finalizers; `content` cuts, checks and deletes the RBD snapshots and fills the contents'
//! status; `check` tells the owner of a VolumeSnapshot why it will not be taken.

mod check;
mod content;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Api;
use kube::api::ListParams;
use kube::runtime::Controller;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::watcher;

use super::Context;
use crate::error::Error;
use crate::k8s::snapshot::{VolumeSnapshot, VolumeSnapshotClass, VolumeSnapshotContent};
use ceph::Credentials;
use domain::params::{self, ClassParams};

/// How often the provisioner looks for the snapshot CRDs when they are not installed.
const CRD_POLL: Duration = Duration::from_secs(60);

/// Runs the snapshot controllers once the snapshot CRDs are installed, until a termination
/// signal. Without them (no snapshot-controller in the cluster) it waits for them quietly.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.kube.client.clone();
    let contents = Api::<VolumeSnapshotContent>::all(client.clone());
    let mut said = false;
    loop {
        match contents
            .list_metadata(&ListParams::default().limit(1))
            .await
        {
            Ok(_) => break,
            Err(e) => {
                if !said {
                    tracing::info!(error = %crate::error::kube_cause(&e), "VolumeSnapshots are off until the snapshot.storage.k8s.io CRDs and the snapshot-controller are installed (manifests/snapshots); checking every minute");
                    said = true;
                }
                tokio::time::sleep(CRD_POLL).await;
            }
        }
    }
    // Which contents are ours is read from the class cache, and a content's volume may be
    // found only in the volumes cache: a content listed before them would be taken for
    // another driver's and wait for a change that need never come (a restart between the
    // cut and the status left exactly that).
    ctx.caches.listed.classes.wait().await;
    ctx.volumes_listed().await;
    tracing::info!("serving VolumeSnapshotContents of this provisioner's csi-flavour volumes");
    let workers = ctx.settings.workers;
    let contents = Controller::new(contents, watcher::Config::default())
        .with_config(ControllerConfig::default().concurrency(workers))
        .shutdown_on_signal()
        .run(content::reconcile, content::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));
    let snapshots = Controller::new(
        Api::<VolumeSnapshot>::all(client),
        watcher::Config::default(),
    )
    .shutdown_on_signal()
    .run(check::reconcile, check::error_policy, ctx)
    .for_each(|_| futures::future::ready(()));
    futures::join!(contents, snapshots);
}

/// This provisioner's StorageClasses (parsed), by name.
fn our_classes(ctx: &Context) -> Vec<(Arc<StorageClass>, ClassParams)> {
    ctx.caches
        .classes
        .state()
        .into_iter()
        .filter(|c| c.provisioner == ctx.settings.provisioner)
        .filter_map(|c| {
            let p = params::parse(&c.parameters.clone().unwrap_or_default()).ok()?;
            Some((c, p))
        })
        .collect()
}

/// The CSI driver names this provisioner's csi-flavour volumes carry.
fn our_drivers(ctx: &Context) -> BTreeSet<String> {
    our_classes(ctx)
        .into_iter()
        .map(|(_, p)| p.csi_driver)
        .collect()
}

/// The VolumeSnapshotClass named, if it exists.
async fn snapshot_class(ctx: &Context, name: &str) -> Result<Option<VolumeSnapshotClass>, Error> {
    Api::<VolumeSnapshotClass>::all(ctx.kube.client.clone())
        .get_opt(name)
        .await
        .map_err(Error::kube("read VolumeSnapshotClass", name))
}

/// The PV of ours whose csi `volumeHandle` is `handle` with `driver`: by the name this
/// provisioner gives a PV for its image, else (volumes taken over, migrated) from the cache.
async fn volume_of_handle(
    ctx: &Context,
    driver: &str,
    handle: &str,
) -> Result<Option<PersistentVolume>, Error> {
    let matches = |pv: &PersistentVolume| {
        let csi = pv.spec.as_ref().and_then(|s| s.csi.as_ref());
        csi.is_some_and(|c| c.driver == driver && c.volume_handle == handle)
            && domain::volume::provisioned_by(pv) == Some(ctx.settings.provisioner.as_str())
    };
    if let Some(uid) = handle.strip_prefix(domain::volume::IMAGE_PREFIX)
        && let Some(pv) =
            crate::k8s::get_pv(&ctx.kube.client, &domain::volume::pv_name(uid)).await?
        && matches(&pv)
    {
        return Ok(Some(pv));
    }
    let named: Vec<String> = ctx
        .caches
        .volumes
        .state()
        .iter()
        .filter_map(|c| c.object().ok())
        .filter(matches)
        .filter_map(|pv| pv.metadata.name)
        .collect();
    match named.as_slice() {
        // Read fresh: the cache may be behind.
        [one] => crate::k8s::get_pv(&ctx.kube.client, one)
            .await
            .map(|pv| pv.filter(matches)),
        _ => Ok(None),
    }
}

/// Credentials for a snapshot in `pool` that no PV of ours leads to (pre-provisioned, or its
/// volume gone): those of this provisioner's class for `driver` that uses that pool.
async fn pool_credentials(
    ctx: &Context,
    object: &str,
    driver: &str,
    pool: &str,
) -> Result<(Credentials, ClassParams), Error> {
    let mut classes = our_classes(ctx);
    classes.sort_by(|a, b| a.0.metadata.name.cmp(&b.0.metadata.name));
    let (_, p) = classes
        .into_iter()
        .find(|(_, p)| p.csi_driver == driver && p.pool == pool)
        .ok_or_else(|| Error::NoClassForPool {
            object: object.to_string(),
            provisioner: ctx.settings.provisioner.clone(),
            driver: driver.to_string(),
            pool: pool.to_string(),
        })?;
    let key = ctx
        .kube
        .secrets
        .ceph_key(
            &ctx.kube.client,
            crate::error::SecretRole::Admin,
            &p.admin_secret,
            &p.admin_id,
            &ctx.settings.service_account,
        )
        .await?;
    Ok((
        Credentials {
            monitors: p.monitors.clone(),
            user: p.admin_id.clone(),
            key,
        },
        p,
    ))
}

/// A reference to a VolumeSnapshot, for its events.
fn snapshot_ref(namespace: &str, name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some(format!("{}/v1", domain::snapshot::GROUP)),
        kind: Some("VolumeSnapshot".into()),
        namespace: Some(namespace.to_string()),
        name: Some(name.to_string()),
        uid: uid.map(str::to_string),
        ..ObjectReference::default()
    }
}
