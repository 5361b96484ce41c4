//! Claim reconcile: decide (pure); plan, reading only (class, clone source, an earlier PV,
//! Secrets); then execute: image → PersistentVolume.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Resource;
use kube::runtime::controller::Action;

use super::Context;
use crate::error::{CephSide, Error, Result, SecretRole};
use crate::k8s;
use ceph::{Credentials, PoolQuota};
use domain::claim::{self, ClaimAction};
use domain::clone;
use domain::owner::{self, Place};
use domain::params::{self, Flavor};
use domain::provision_plan::{self, Draft, Invalid, Plan};
use domain::volume::{self, CsiVolume, NodeStage, NodeStageFacts};

pub async fn reconcile(pvc: Arc<PersistentVolumeClaim>, ctx: Arc<Context>) -> Result<Action> {
    let key = super::claim_key(&pvc);
    let class = match claim::class_name(&pvc) {
        Some(name) => ctx.class(name).await?,
        None => None,
    };
    let bound = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| !v.is_empty());
    if let Some(class) = class
        .as_ref()
        .filter(|c| bound && c.provisioner == ctx.settings.provisioner)
    {
        let max_size = params::parse(&class.parameters.clone().unwrap_or_default())
            .map_or(params::DEFAULT_MAX_SIZE, |p| p.max_size);
        super::resize::reconcile_bound(
            &pvc,
            class.allow_volume_expansion == Some(true),
            max_size,
            &ctx,
        )
        .await?;
        ctx.succeeded(&key);
        return Ok(Action::await_change());
    }
    let early = claim::may_provision_early(
        ctx.settings.early_provisioning,
        &pvc,
        class.as_ref(),
        &ctx.settings.provisioner,
        ctx.volumes_ready(),
        || ctx.volume_could_bind(&pvc),
    );
    tracing::trace!(claim = %claim_name(&pvc), handed = ?claim::handed_to(&pvc), early, "claim");
    match claim::decide(&pvc, class.as_ref(), &ctx.settings.provisioner, early) {
        ClaimAction::Ignore(why) => {
            tracing::trace!(claim = %claim_name(&pvc), why, "ignored");
            ctx.succeeded(&key);
            Ok(Action::await_change())
        }
        ClaimAction::Wait(why) => {
            tracing::debug!(claim = %claim_name(&pvc), %why, "waiting");
            Ok(Action::requeue(Duration::from_secs(60)))
        }
        ClaimAction::Provision if clone::populator(&pvc).is_some() => {
            let what = clone::populator(&pvc).unwrap_or_default();
            let note = format!(
                "the claim's dataSourceRef names {what}: left to its volume populator; {} provisions only empty volumes and clones of claims in the same namespace",
                ctx.settings.provisioner
            );
            let regarding = pvc.object_ref(&());
            ctx.kube
                .events
                .normal(&regarding, "ExternalPopulator", "Provision", note)
                .await;
            ctx.succeeded(&key);
            Ok(Action::await_change())
        }
        ClaimAction::Provision => {
            if early {
                tracing::info!(claim = %claim_name(&pvc), "provisioning before kube-controller-manager's hand-over: no existing volume could serve the claim");
            }
            let class = class.expect("decide() provisions only with a class");
            let class_label = class.metadata.name.clone().unwrap_or_default();
            let started = Instant::now();
            let _under_way = ctx.metrics.under_way("provision");
            let regarding = pvc.object_ref(&());
            match provision(&pvc, &class, &ctx).await {
                Ok(Some(msg)) => {
                    ctx.metrics
                        .provision(&class_label, source_kind(&pvc), Ok(started.elapsed()));
                    tracing::info!(claim = %claim_name(&pvc), elapsed = ?started.elapsed(), "{msg}");
                    ctx.kube
                        .events
                        .once(&regarding, "ProvisioningSucceeded", "Provision", msg)
                        .await;
                    ctx.succeeded(&key);
                    Ok(Action::await_change())
                }
                Ok(None) => {
                    ctx.succeeded(&key);
                    Ok(Action::await_change())
                }
                Err(e) => {
                    ctx.metrics
                        .provision(&class_label, source_kind(&pvc), Err(e.kind()));
                    ctx.kube
                        .events
                        .warning(&regarding, "ProvisioningFailed", "Provision", e.to_string())
                        .await;
                    Err(e)
                }
            }
        }
    }
}

/// The `source` label of the sig-storage metrics: the kind of the claim's data source.
fn source_kind(pvc: &PersistentVolumeClaim) -> &str {
    let spec = pvc.spec.as_ref();
    spec.and_then(|s| s.data_source_ref.as_ref().map(|r| r.kind.as_str()))
        .or_else(|| spec.and_then(|s| s.data_source.as_ref().map(|d| d.kind.as_str())))
        .unwrap_or("")
}

fn claim_name(pvc: &PersistentVolumeClaim) -> String {
    domain::meta::label(&pvc.metadata)
}

/// Provisions one claim. `Ok(None)` when its PV already exists (nothing new to report).
///
/// Planned, then executed, as the sig-storage external-provisioner prepares before it
/// provisions: planning only reads (claim, class, clone source, a PV from an earlier attempt,
/// Secrets) and decides what to make; execution makes the image and writes the PV.
async fn provision(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    ctx: &Context,
) -> Result<Option<String>> {
    let started = Instant::now();
    let Some((draft, clone_source)) = prepare(pvc, class, ctx).await? else {
        return Ok(None);
    };
    // Between the two read-only stages, as before the split: a claim whose Secret is missing
    // shows this event ahead of its ProvisioningFailed.
    // The first attempt's event is written as is; a retry's goes through the recorder,
    // which counts repeats into one event.
    let (about, note) = (
        pvc.object_ref(&()),
        format!(
            "External provisioner {} is provisioning volume for claim {}",
            ctx.settings.provisioner,
            draft.claim_label()
        ),
    );
    if ctx.failing(&super::claim_key(pvc)) {
        ctx.kube
            .events
            .normal(&about, "Provisioning", "Provision", note)
            .await;
    } else {
        ctx.kube
            .events
            .once(&about, "Provisioning", "Provision", note)
            .await;
    }
    let (plan, creds) = plan(draft, clone_source, ctx).await?;
    let p = &plan.draft.params;
    let side = CephSide {
        user: &p.admin_id,
        role: SecretRole::Admin,
        secret: &p.admin_secret,
        pool: &p.pool,
    };
    match execute(&plan, creds.clone(), class, ctx, started.elapsed()).await {
        Err(e) if e.is_quota() => {
            let quota = pool_quota(&creds, &p.pool, ctx).await;
            Err(e.ceph_fault(&side, quota.as_ref()))
        }
        r => r.map_err(|e| e.ceph_fault(&side, None)),
    }
}

/// A pool's quota figures, to name the quota a claim ran into; None when they cannot be read
/// (the message then says only that a quota is reached).
async fn pool_quota(creds: &Credentials, pool: &str, ctx: &Context) -> Option<PoolQuota> {
    let cluster = ctx.connect_for_housekeeping(creds).await.ok()?;
    match cluster.pool_quota(pool).await {
        Ok(q) => Some(q),
        Err(e) => {
            tracing::debug!(%pool, error = %e, "reading the pool's quota failed");
            None
        }
    }
}

/// The first stage of the plan: the claim checked against its class, its clone source looked
/// up, and a PV under its name judged. `None`: an earlier attempt finished the job.
async fn prepare(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    ctx: &Context,
) -> Result<Option<(Draft, Option<clone::CloneSource>)>> {
    let name = claim_name(pvc);
    let draft =
        provision_plan::draft(pvc, class, ctx.settings.default_flavor).map_err(|invalid| {
            match invalid {
                Invalid::Claim(cause) => Error::Claim {
                    claim: name.clone(),
                    cause,
                },
                Invalid::Params(cause) => Error::Params {
                    class: class.metadata.name.clone().unwrap_or_default(),
                    cause,
                },
                Invalid::Clone(cause) => Error::Clone {
                    claim: name.clone(),
                    cause,
                },
            }
        })?;
    let clone_source = match &draft.clone_of {
        None => None,
        Some(source) => Some(clone_source(&draft, source, ctx).await?),
    };
    let existing = k8s::get_pv(&ctx.kube.client, &draft.pv_name).await?;
    if let Some(existing) = existing {
        return draft
            .answered_by(&existing, &ctx.settings.provisioner)
            .map(|()| None)
            .map_err(|why| Error::PvTaken {
                pv: draft.pv_name.clone(),
                claim: name,
                why,
            });
    }
    Ok(Some((draft, clone_source)))
}

/// The image a clone is made from, after checking its claim and PV, or the snapshot a
/// restore is made from, after checking its VolumeSnapshot and content.
async fn clone_source(
    draft: &Draft,
    source: &clone::DataSource,
    ctx: &Context,
) -> Result<clone::CloneSource> {
    let source = match source {
        clone::DataSource::Claim(name) => name,
        clone::DataSource::Snapshot(name) => return restore_source(draft, name, ctx).await,
    };
    let namespace = &draft.claim.namespace;
    let source_pvc = k8s::get_claim(&ctx.kube.client, namespace, source).await?;
    let source_pv = match source_pvc
        .as_ref()
        .and_then(|c| c.spec.as_ref()?.volume_name.clone())
    {
        Some(v) => k8s::get_pv(&ctx.kube.client, &v).await?,
        None => None,
    };
    clone::check_source(
        namespace,
        source,
        &draft.class_name,
        draft.claim.size,
        source_pvc.as_ref(),
        source_pv.as_ref(),
        &ctx.settings.provisioner,
    )
    .map_err(|cause| Error::Clone {
        claim: draft.claim_label(),
        cause,
    })
}

/// The snapshot a restore clones: its VolumeSnapshot ready, its content of the claim's
/// class's driver, with a handle of ours, and no larger than the claim.
async fn restore_source(draft: &Draft, name: &str, ctx: &Context) -> Result<clone::CloneSource> {
    use crate::k8s::snapshot::{VolumeSnapshot, VolumeSnapshotContent};
    let namespace = &draft.claim.namespace;
    let object = domain::meta::qualified(Some(namespace), name);
    let snapshot = kube::Api::<VolumeSnapshot>::namespaced(ctx.kube.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::kube("read VolumeSnapshot", object.clone()))?;
    let facts = snapshot
        .as_ref()
        .map(VolumeSnapshot::facts)
        .unwrap_or_default();
    let content = match &facts.content {
        Some(c) => kube::Api::<VolumeSnapshotContent>::all(ctx.kube.client.clone())
            .get_opt(c)
            .await
            .map_err(Error::kube("read VolumeSnapshotContent", c.clone()))?
            // Only a content bound back to this very VolumeSnapshot.
            .filter(|c| {
                let r = &c.spec.volume_snapshot_ref;
                r.uid.is_some() && r.uid == snapshot.as_ref().and_then(|s| s.metadata.uid.clone())
            }),
        None => None,
    };
    let content_facts = content.map(|c| domain::snapshot::ContentFacts {
        driver: c.spec.driver.clone(),
        handle: c.status.as_ref().and_then(|s| s.snapshot_handle.clone()),
        restore_size: c
            .status
            .as_ref()
            .and_then(|s| s.restore_size)
            .and_then(|n| u64::try_from(n).ok()),
    });
    domain::snapshot::check_restore(
        namespace,
        name,
        &draft.params.csi_driver,
        draft.claim.size,
        &facts,
        content_facts.as_ref(),
    )
    .map_err(|cause| Error::Clone {
        claim: draft.claim_label(),
        cause,
    })
}

/// The second stage of the plan: the Secrets. The admin key is the one thing kept; the user
/// (or node-stage) Secret is only checked, since the PV names it and nodes read it.
async fn plan(
    draft: Draft,
    clone_source: Option<clone::CloneSource>,
    ctx: &Context,
) -> Result<(Plan, Credentials)> {
    let sa = &ctx.settings.service_account;
    let params = &draft.params;
    let namespace = &draft.claim.namespace;
    let admin_key = ctx
        .kube
        .secrets
        .ceph_key(
            &ctx.kube.client,
            SecretRole::Admin,
            &params.admin_secret,
            &params.admin_id,
            sa,
        )
        .await?;
    let node_stage = match draft.flavor {
        Flavor::Rbd => {
            ctx.kube.secrets.check_secret(
                &ctx.kube.client,
                SecretRole::User,
                &params.user_secret(namespace),
                &params.user_id,
                sa,
                &[(
                    "key",
                    "put the user's Ceph key (ceph auth get-key client.USER) under the key \"key\"",
                )],
            )
            .await?;
            None
        }
        Flavor::Csi => Some(
            node_stage_secret(&ctx.kube.client, sa, params, &draft.class_name, namespace).await?,
        ),
    };
    let creds = Credentials {
        monitors: params.monitors.clone(),
        user: params.admin_id.clone(),
        key: admin_key,
    };
    Ok((draft.plan(clone_source, node_stage), creds))
}

/// Carries out a plan: the image (Ceph), then the PV (Kubernetes), unless the claim went
/// meanwhile.
async fn execute(
    plan: &Plan,
    creds: Credentials,
    class: &StorageClass,
    ctx: &Context,
    planned: Duration,
) -> Result<Option<String>> {
    let d = &plan.draft;
    let name = d.claim_label();
    let image = &d.image;
    let started = Instant::now();
    let cluster = ctx.connect(&creds).await?;
    let fsid = if plan.needs_fsid() {
        Some(cluster.fsid().await.map_err(Error::ceph(format!(
            "Ceph cluster at {}",
            cluster.monitors()
        )))?)
    } else {
        None
    };
    let csi = plan.csi(fsid);
    let place = ctx
        .place(&cluster, &d.params.pool, &image_object(plan))
        .await?;
    image::make_image(&cluster, plan, ctx, &place).await?;
    crate::failpoint::hit(crate::failpoint::Point::AfterImageCreate, image).await;

    // The claim may have gone while the image was being made: leave nothing behind.
    if claim_withdrawn_meanwhile(plan, ctx).await? {
        tracing::info!(claim = %name, %image, "claim deleted during provisioning; removing its image");
        cluster
            .remove_image(&d.params.pool, image)
            .await
            .map_err(Error::ceph(image_object(plan)))?;
        return Ok(None);
    }
    // From here on a PV may exist: the image says so before the PV is written, so that no
    // crash can leave an image with a PV that housekeeping would take for an orphan.
    cluster
        .set_metadata_unopened(&d.params.pool, image, owner::pv_written_pair())
        .await
        .map_err(Error::ceph(image_object(plan)))?;
    crate::failpoint::hit(crate::failpoint::Point::BeforePvWrite, image).await;
    let ceph = started.elapsed();
    let written = write_pv(plan, class, csi.as_ref(), ctx, &place)
        .await
        .map(Some);
    // Where a claim's time goes, for the scale benchmark: reads (class, PV, Secrets, events),
    // Ceph (connect, create, stamp), and the claim check plus the PV write.
    tracing::debug!(
        claim = %name,
        plan_ms = planned.as_millis() as u64,
        ceph_ms = ceph.as_millis() as u64,
        write_ms = (started.elapsed() - ceph).as_millis() as u64,
        "provision timings"
    );
    written
}

/// "image pool/name", as Ceph errors name it.
fn image_object(plan: &Plan) -> String {
    format!("image {}/{}", plan.draft.params.pool, plan.draft.image)
}

/// Whether the claim is gone, asked of the API server: the watch cache may lag a deletion.
async fn claim_withdrawn_meanwhile(plan: &Plan, ctx: &Context) -> Result<bool> {
    let c = &plan.draft.claim;
    let current = k8s::get_claim(&ctx.kube.client, &c.namespace, &c.name).await?;
    Ok(provision_plan::claim_withdrawn(current.as_ref(), &c.uid))
}

/// Writes the PV of an image that exists; returns the success message.
async fn write_pv(
    plan: &Plan,
    class: &StorageClass,
    csi: Option<&CsiVolume>,
    ctx: &Context,
    place: &Place,
) -> Result<String> {
    let pv = plan.pv(class, csi, &ctx.settings.provisioner, Some(place));
    k8s::create_pv(&ctx.kube.client, &pv, &ctx.settings.provisioner).await?;
    Ok(plan.succeeded(csi))
}

/// The Secret a csi PV's `nodeStageSecretRef` names (see `volume::choose_node_stage`): read
/// for its field names only. Fails with the command that makes one from the user Secret.
/// (`doctor` may call it to check a class the same way.)
pub(crate) async fn node_stage_secret(
    client: &kube::Client,
    service_account: &str,
    params: &params::ClassParams,
    class_name: &str,
    claim_namespace: &str,
) -> Result<NodeStage> {
    let user = params.user_secret(claim_namespace);
    let fields = |role, secret| k8s::secret_fields(client, role, secret, service_account);
    let (user_fields, target_fields) = match &params.csi_secret {
        Some(s) => {
            let target = fields(SecretRole::CsiNodeStage, s).await?;
            if target.as_ref().is_some_and(volume::in_csi_format) {
                return Ok(NodeStage::Class(s.clone()));
            }
            (fields(SecretRole::User, &user).await?, target)
        }
        None => {
            let user_fields = fields(SecretRole::User, &user).await?;
            if user_fields.as_ref().is_some_and(volume::in_csi_format) {
                (user_fields, None)
            } else {
                let companion = volume::companion_secret(&user);
                (
                    user_fields,
                    fields(SecretRole::CsiNodeStage, &companion).await?,
                )
            }
        }
    };
    let Some(user_fields) = user_fields else {
        return Err(Error::SecretNotFound {
            role: SecretRole::User,
            secret: user,
            user: params.user_id.clone(),
        });
    };
    Ok(volume::choose_node_stage(&NodeStageFacts {
        class_name,
        class_secret: params.csi_secret.as_ref(),
        user_secret: &user,
        user_fields: &user_fields,
        target_fields: target_fields.as_ref(),
        user_id: &params.user_id,
    })?)
}

mod image;
#[cfg(test)]
mod tests;
