//! A VolumeSnapshot of our driver that will not be taken, and why, in an event on it: a claim
//! not bound yet, one of another provisioner, or an in-tree `spec.rbd` volume (which the
//! snapshot-controller never snapshots). These never reach a content of ours; a content that
//! fails (a class with unknown parameters, too many snapshots) is reported by `content`.
//! Nothing is made; a repeated cause counts in its event's series.

use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use kube::runtime::controller::Action;

use super::{Context, our_drivers, snapshot_class, snapshot_ref};
use crate::error::Error;
use crate::k8s::snapshot::VolumeSnapshot;
use domain::snapshot::SnapshotError;

/// How often a VolumeSnapshot waiting on its claim is looked at again.
const RECHECK: Duration = Duration::from_secs(30);

pub(super) async fn reconcile(s: Arc<VolumeSnapshot>, ctx: Arc<Context>) -> Result<Action, Error> {
    let action = check(&s, &ctx).await?;
    // Its backoff starts anew after a pass that worked.
    ctx.succeeded(s.metadata.uid.as_deref().unwrap_or_default());
    Ok(action)
}

async fn check(s: &VolumeSnapshot, ctx: &Context) -> Result<Action, Error> {
    let ready = s.status.as_ref().and_then(|st| st.ready_to_use) == Some(true);
    let Some(claim) = s.spec.source.persistent_volume_claim_name.as_deref() else {
        return Ok(Action::await_change());
    };
    if ready || s.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(class_name) = s.spec.volume_snapshot_class_name.as_deref() else {
        return Ok(Action::await_change());
    };
    let Some(class) = snapshot_class(ctx, class_name).await? else {
        return Ok(Action::await_change());
    };
    if !our_drivers(ctx).contains(&class.driver) {
        return Ok(Action::await_change());
    }
    let ns = s.metadata.namespace.clone().unwrap_or_default();
    let object = format!("VolumeSnapshot {}", domain::meta::label(s.meta()));
    let (cause, again) = match problem(ctx, &ns, claim, &class).await? {
        None => return Ok(Action::await_change()),
        Some(p) => p,
    };
    let about = snapshot_ref(
        &ns,
        s.metadata.name.as_deref().unwrap_or_default(),
        s.metadata.uid.as_deref(),
    );
    let note = Error::Snapshot { object, cause }.to_string();
    ctx.kube
        .events
        .warning(&about, "SnapshotRefused", "CreateSnapshot", note)
        .await;
    Ok(if again {
        Action::requeue(RECHECK)
    } else {
        Action::await_change()
    })
}

pub(super) fn error_policy(s: Arc<VolumeSnapshot>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(s.metadata.uid.as_deref().unwrap_or_default());
    tracing::debug!(snapshot = %domain::meta::label(s.meta()), error = %err, "checking a VolumeSnapshot failed");
    Action::requeue(delay)
}

/// What keeps the snapshot from being taken, and whether it may pass by itself (a claim that
/// binds later).
async fn problem(
    ctx: &Context,
    ns: &str,
    claim: &str,
    class: &crate::k8s::snapshot::VolumeSnapshotClass,
) -> Result<Option<(SnapshotError, bool)>, Error> {
    let pvc_label = domain::meta::qualified(Some(ns), claim);
    let Some(pvc) = crate::k8s::get_claim(&ctx.kube.client, ns, claim).await? else {
        return Ok(None);
    };
    let volume = pvc
        .spec
        .as_ref()
        .and_then(|sp| sp.volume_name.clone())
        .filter(|v| !v.is_empty());
    let bound = pvc.status.as_ref().and_then(|st| st.phase.as_deref()) == Some("Bound");
    let (true, Some(volume)) = (bound, volume) else {
        return Ok(Some((SnapshotError::Pending { pvc: pvc_label }, true)));
    };
    let Some(pv) = crate::k8s::get_pv(&ctx.kube.client, &volume).await? else {
        return Ok(None);
    };
    let by = domain::volume::provisioned_by(&pv).unwrap_or_default();
    let spec = pv.spec.as_ref();
    if by == ctx.settings.provisioner {
        if spec.is_some_and(|sp| sp.rbd.is_some()) {
            return Ok(Some((SnapshotError::InTree { pv: volume }, false)));
        }
        return Ok(None);
    }
    // Another provisioner's volume under our driver's class: unless it is mounted by the same
    // driver (ceph-csi's own volume, which its own csi-snapshotter serves), it is not ours.
    let same_driver = spec
        .and_then(|sp| sp.csi.as_ref())
        .is_some_and(|c| c.driver == class.driver);
    if same_driver {
        return Ok(None);
    }
    Ok(Some((
        SnapshotError::OtherProvisioner {
            pvc: pvc_label,
            by: if by.is_empty() {
                "(none: a static volume)".into()
            } else {
                by.to_string()
            },
        },
        false,
    )))
}
