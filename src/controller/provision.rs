//! Claim reconcile: decide (pure), then secrets → image → PersistentVolume.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Resource;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::Context;
use crate::ceph::{CloneSpec, Created, Credentials, ImageSpec, ParentSpec, RBD_FEATURE_LAYERING};
use crate::domain::claim::{self, ClaimAction};
use crate::domain::clone;
use crate::domain::owner::{self, Stamp};
use crate::domain::params::{self, Flavor};
use crate::domain::volume::{
    self, ClusterId, CsiVolume, NodeStage, NodeStageFacts, PvInput, Source,
};
use crate::error::{Error, Result, SecretRole, is_status};
use crate::k8s;

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
        super::resize::reconcile_bound(&pvc, class.allow_volume_expansion == Some(true), &ctx)
            .await?;
        ctx.succeeded(&key);
        return Ok(Action::await_change());
    }
    // Early (before kube-controller-manager's hand-over) only when no Available volume could
    // serve the claim instead; the volumes watch must have listed them all to know that.
    let early = ctx.settings.early_provisioning
        && claim::handed_to(&pvc).is_none()
        && class
            .as_ref()
            .is_some_and(|c| c.provisioner == ctx.settings.provisioner)
        && ctx.volumes_ready()
        && !ctx.volume_could_bind(&pvc);
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
            ctx.events
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
            let regarding = pvc.object_ref(&());
            match provision(&pvc, &class, &ctx).await {
                Ok(Some(msg)) => {
                    ctx.metrics
                        .provision(&class_label, source_kind(&pvc), Ok(started.elapsed()));
                    tracing::info!(claim = %claim_name(&pvc), elapsed = ?started.elapsed(), "{msg}");
                    ctx.events
                        .normal(&regarding, "ProvisioningSucceeded", "Provision", msg)
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
                    ctx.events
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
    format!(
        "{}/{}",
        pvc.metadata.namespace.as_deref().unwrap_or(""),
        pvc.metadata.name.as_deref().unwrap_or("")
    )
}

/// Provisions one claim. `Ok(None)` when its PV already exists (nothing new to report).
async fn provision(
    pvc: &PersistentVolumeClaim,
    class: &StorageClass,
    ctx: &Context,
) -> Result<Option<String>> {
    let name = claim_name(pvc);
    let class_name = class.metadata.name.clone().unwrap_or_default();
    let req = volume::claim_request(pvc).map_err(|source| Error::Claim {
        claim: name.clone(),
        cause: source,
    })?;
    let params =
        params::parse(&class.parameters.clone().unwrap_or_default()).map_err(|source| {
            Error::Params {
                class: class_name.clone(),
                cause: source,
            }
        })?;
    let flavor = params.flavor.unwrap_or(ctx.settings.default_flavor);
    if flavor == Flavor::Csi {
        params::check_csi(&params).map_err(|source| Error::Params {
            class: class_name.clone(),
            cause: source,
        })?;
    }
    volume::check_access_modes(&req, flavor).map_err(|source| Error::Claim {
        claim: name.clone(),
        cause: source,
    })?;

    let clone_error = |source| Error::Clone {
        claim: name.clone(),
        cause: source,
    };
    let clone_source = match clone::source_name(pvc).map_err(clone_error)? {
        None => None,
        Some(source) => {
            let source_pvc =
                Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &req.namespace)
                    .get_opt(&source)
                    .await
                    .map_err(Error::kube(
                        "read PersistentVolumeClaim",
                        format!("{}/{source}", req.namespace),
                    ))?;
            let source_pv = match source_pvc
                .as_ref()
                .and_then(|c| c.spec.as_ref()?.volume_name.clone())
            {
                Some(v) => Api::<PersistentVolume>::all(ctx.client.clone())
                    .get_opt(&v)
                    .await
                    .map_err(Error::kube("read PersistentVolume", v))?,
                None => None,
            };
            Some(
                clone::check_source(
                    &req.namespace,
                    &source,
                    &class_name,
                    req.size,
                    source_pvc.as_ref(),
                    source_pv.as_ref(),
                    &ctx.settings.provisioner,
                )
                .map_err(clone_error)?,
            )
        }
    };

    let pv_name = volume::pv_name(&req.uid);
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if let Some(existing) = pvs
        .get_opt(&pv_name)
        .await
        .map_err(Error::kube("read PersistentVolume", &pv_name))?
    {
        // Our PV from an earlier attempt: done. Anyone else's under our name: say so.
        let image = volume::image_name(&req.uid);
        return crate::domain::reclaim::is_volume_of(
            &existing,
            &ctx.settings.provisioner,
            &req.uid,
            (&params.pool, &image),
        )
        .map(|()| None)
        .map_err(|why| Error::PvTaken {
            pv: pv_name.clone(),
            claim: name.clone(),
            why,
        });
    }
    ctx.events
        .normal(
            &pvc.object_ref(&()),
            "Provisioning",
            "Provision",
            format!(
                "External provisioner {} is provisioning volume for claim {name}",
                ctx.settings.provisioner
            ),
        )
        .await;

    let sa = &ctx.settings.service_account;
    let admin_key = k8s::ceph_key(
        &ctx.client,
        SecretRole::Admin,
        &params.admin_secret,
        &params.admin_id,
        sa,
    )
    .await?;
    let node_stage = match flavor {
        Flavor::Rbd => {
            k8s::check_secret(
                &ctx.client,
                SecretRole::User,
                &params.user_secret(&req.namespace),
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
        Flavor::Csi => {
            Some(node_stage_secret(&ctx.client, sa, &params, &class_name, &req.namespace).await?)
        }
    };

    let creds = Credentials {
        monitors: params.monitors.clone(),
        user: params.admin_id.clone(),
        key: admin_key,
    };
    let cluster = ctx.connect(&creds).await?;
    let csi = match node_stage {
        None => None,
        Some(stage) => Some(CsiVolume {
            cluster_id: match &params.cluster_id {
                Some(id) => ClusterId::Class(id.clone()),
                // ceph-csi's config map is commonly keyed by the fsid.
                None => ClusterId::Fsid(cluster.fsid().await.map_err(Error::ceph(format!(
                    "Ceph cluster at {}",
                    cluster.monitors()
                )))?),
            },
            node_stage_secret: stage.secret().clone(),
        }),
    };
    let image = volume::image_name(&req.uid);
    let object = format!("image {}/{image}", params.pool);
    let spec = ImageSpec {
        pool: params.pool.clone(),
        name: image.clone(),
        size: req.size,
        data_pool: params.data_pool.clone(),
        features: RBD_FEATURE_LAYERING,
    };
    let created = match &clone_source {
        None => cluster.create_image(&spec).await,
        Some(src) => {
            // Not while the source is being deleted (see `delete::detach_clones`).
            let _source_held = ctx.locks.lock(&src.pool, &src.image).await;
            clone_image(&cluster, src, &spec).await
        }
    };
    let stamp = Stamp {
        pv: pv_name.clone(),
        claim_namespace: req.namespace.clone(),
        claim_name: req.name.clone(),
        claim_uid: req.uid.clone(),
        created: super::unix_now(),
    };
    let mut created = created.map_err(Error::ceph(&object))?;
    if created == Created::AlreadyExisted && clone_source.is_none() {
        created = recreate_if_half_made(&cluster, &spec, &object, &name).await?;
    }
    match created {
        Created::New => {}
        Created::AlreadyExisted => {
            // A previous attempt created it and then stopped before writing the PV: adopt it,
            // unless its stamp says it is someone else's.
            let meta = cluster
                .metadata(&params.pool, &image, owner::KEYS)
                .await
                .map_err(Error::ceph(&object))?;
            if let Some(theirs) = Stamp::read(&meta)
                && (theirs.claim_uid != req.uid || !owner::stamped_by(&meta, &ctx.instance))
            {
                return Err(Error::ImageTaken {
                    pool: params.pool.clone(),
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
            tracing::info!(claim = %name, %image, "adopting image left by an earlier attempt");
        }
    }
    // Stamped before the PV exists: an image whose claim goes before the PV is written can
    // then be proven ours and collected (see `maintain::collect_orphans`).
    cluster
        .set_metadata(&params.pool, &image, stamp.pairs(&ctx.instance))
        .await
        .map_err(Error::ceph(&object))?;
    if clone_source.is_some() || created == Created::AlreadyExisted {
        // A clone starts at its source's size; an adopted image at whatever it was given.
        let info = cluster
            .image_info(&params.pool, &image)
            .await
            .map_err(Error::ceph(&object))?;
        if info.size < req.size {
            cluster
                .resize(&params.pool, &image, req.size)
                .await
                .map_err(Error::ceph(&object))?;
        }
    }

    // Crash-consistency tests stop or stall the process exactly here, between image and PV.
    match std::env::var("RBD_PROVISIONER_FAILPOINT").as_deref() {
        Ok("exit-after-image-create") => {
            tracing::error!(claim = %name, %image, "failpoint exit-after-image-create: exiting");
            crate::ceph::exit_process(86);
        }
        Ok("sleep-after-image-create") => {
            tracing::warn!(claim = %name, %image, "failpoint sleep-after-image-create: 5 s");
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        _ => {}
    }

    // The claim may have gone while the image was being made: leave nothing behind.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &req.namespace);
    let current = claims
        .get_opt(&req.name)
        .await
        .map_err(Error::kube("read PersistentVolumeClaim", &name))?;
    let gone = match &current {
        None => true,
        Some(c) => {
            c.metadata.uid.as_deref() != Some(&req.uid) || c.metadata.deletion_timestamp.is_some()
        }
    };
    if gone {
        tracing::info!(claim = %name, %image, "claim deleted during provisioning; removing its image");
        cluster
            .remove_image(&params.pool, &image)
            .await
            .map_err(Error::ceph(&object))?;
        return Ok(None);
    }

    let pv = volume::build_pv(&PvInput {
        claim: &req,
        class,
        params: &params,
        source: csi.as_ref().map_or(Source::Rbd, Source::Csi),
        image: &image,
        provisioner: &ctx.settings.provisioner,
    });
    k8s::create_pv(&ctx.client, &pv, &ctx.settings.provisioner).await?;
    Ok(Some(format!(
        "Successfully provisioned volume {pv_name}: image {}/{image}{}, {} MiB, {}",
        params.pool,
        clone_source
            .as_ref()
            .map(|s| format!(" (clone of {}/{})", s.pool, s.image))
            .unwrap_or_default(),
        req.size >> 20,
        match &csi {
            None => "in-tree rbd volume source".to_string(),
            Some(c) => format!(
                "ceph-csi static volume, clusterID {}{}, node-stage secret {}",
                c.cluster_id.value(),
                match c.cluster_id {
                    ClusterId::Fsid(_) => " (the Ceph cluster's fsid: the class has no clusterID)",
                    ClusterId::Class(_) => "",
                },
                c.node_stage_secret
            ),
        }
    )))
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
    let fields = |role, secret| secret_fields(client, role, secret, service_account);
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

/// The names of a Secret's non-empty fields; its values are overwritten, never kept.
/// `None` when it does not exist; no right to read it is an error that names the fix.
async fn secret_fields(
    client: &kube::Client,
    role: SecretRole,
    secret: &params::SecretRef,
    service_account: &str,
) -> Result<Option<volume::SecretFields>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
    let found = match api.get(&secret.name).await {
        Ok(s) => s,
        Err(e) if is_status(&e, 404) => return Ok(None),
        Err(e) if is_status(&e, 403) => {
            return Err(Error::SecretForbidden {
                role,
                secret: secret.clone(),
                service_account: service_account.to_string(),
            });
        }
        Err(e) => return Err(Error::kube("read secret", secret.to_string())(e)),
    };
    let mut names = volume::SecretFields::new();
    for (k, v) in found.data.into_iter().flatten() {
        if !v.0.iter().all(u8::is_ascii_whitespace) {
            names.insert(k);
        }
        crate::ceph::wipe(v.0);
    }
    for (k, v) in found.string_data.into_iter().flatten() {
        if !v.trim().is_empty() {
            names.insert(k);
        }
        crate::ceph::wipe(v.into_bytes());
    }
    Ok(Some(names))
}

/// A copy-on-write clone (format 1: a protected snapshot, which every kernel client maps) of
/// the source, named after the clone so that deleting either side finds the other.
async fn clone_image(
    cluster: &std::sync::Arc<crate::ceph::Cluster>,
    src: &clone::Source,
    spec: &ImageSpec,
) -> Result<Created, crate::ceph::CephError> {
    let snap = crate::domain::clone::clone_snapshot(&spec.name);
    cluster.snap_create(&src.pool, &src.image, &snap).await?;
    cluster.snap_protect(&src.pool, &src.image, &snap).await?;
    cluster
        .clone_image(&CloneSpec {
            parent: ParentSpec {
                pool: src.pool.clone(),
                image: src.image.clone(),
                snap,
            },
            pool: spec.pool.clone(),
            name: spec.name.clone(),
            features: spec.features,
            data_pool: spec.data_pool.clone(),
            clone_format: Some(1),
        })
        .await
}

/// An image whose name exists but which cannot be opened (ENOENT) is what a process killed
/// inside `rbd_create4` leaves: the name taken (directory entry, id object), no header. It can
/// be neither adopted nor created again, and every retry failed the same way for ever. It
/// holds no data and its name is this claim's own (`kubernetes-dynamic-pvc-<claim uid>`):
/// remove what there is (`rbd_remove` copes with a missing header) and create it anew.
async fn recreate_if_half_made(
    cluster: &Arc<crate::ceph::Cluster>,
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
