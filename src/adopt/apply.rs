//! `adopt --apply` for one image: the PV, then the re-stamp.

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, PostParams};

use super::Ctx;
use crate::error::{Error, is_status};
use crate::failpoint::{self, Point};
use domain::adopt::{self, Candidate, Facts, Target, Verdict};
use domain::params::Flavor;
use domain::volume::{ClusterId, CsiVolume, VolumeSourceKind};

const MIB: u64 = 1 << 20;

/// Why one image's adoption stopped. The table shows it; the run then fails.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(
        "PV {pv} was created by someone else meanwhile (another adopt, or a person) and is not this image's adopted PV; the image was not changed: look at the PV, then rerun"
    )]
    Raced { pv: String },
    #[error(transparent)]
    Provisioner(#[from] Error),
    #[error("{0}")]
    Refused(adopt::Refusal),
}

/// Carries out a verdict; `Ok` says what was done, `None`: nothing to do.
pub async fn carry_out(
    ctx: &Ctx,
    verdict: &Verdict,
    c: &Candidate<'_>,
    size: u64,
) -> Option<Result<String, String>> {
    Some(
        carry_out_one(ctx, verdict, c, size)
            .await?
            .map_err(|e| e.to_string()),
    )
}

async fn carry_out_one(
    ctx: &Ctx,
    verdict: &Verdict,
    c: &Candidate<'_>,
    size: u64,
) -> Option<Result<String, ApplyError>> {
    let done = match verdict {
        Verdict::Adopt { target, .. } => write_pv(ctx, c, target, size)
            .await
            .map(|written| (written, target, false)),
        Verdict::Finish { pv, target } => match c
            .named_by
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(pv.as_str()))
        {
            Some(written) => Ok(((*written).clone(), target, true)),
            None => Err(ApplyError::Raced { pv: pv.clone() }),
        },
        Verdict::Done { .. } | Verdict::Refuse(_) => return None,
    };
    Some(match done {
        Err(e) => Err(e),
        Ok((pv, target, finished)) => {
            let name = pv.metadata.name.clone().unwrap_or_default();
            failpoint::hit(Point::AdoptBeforeRestamp, &name).await;
            restamp(ctx, c, &pv, target)
                .await
                .map(|()| match finished {
                    false => format!("adopted: PV {name} written, image re-stamped"),
                    true => format!(
                        "finished: image re-stamped for PV {name}, which an earlier run wrote"
                    ),
                })
                .map_err(ApplyError::from)
        }
    })
}

/// Writes the PV; a PV of that name that appeared meanwhile counts only when it is this
/// image's adopted PV (another adopt got there first).
async fn write_pv(
    ctx: &Ctx,
    c: &Candidate<'_>,
    target: &Target,
    size: u64,
) -> Result<PersistentVolume, ApplyError> {
    let req = adopt::request_for(c.image, size / MIB * MIB, target, c.claim, ctx.mode)
        .map_err(ApplyError::Refused)?;
    let csi = match ctx.flavor {
        Flavor::Rbd => None,
        Flavor::Csi => {
            let stage = crate::controller::node_stage_secret(
                &ctx.client,
                &ctx.service_account,
                &ctx.params,
                &ctx.class_name,
                &target.namespace,
            )
            .await?;
            Some(CsiVolume {
                cluster_id: match &ctx.params.cluster_id {
                    Some(id) => ClusterId::Class(id.clone()),
                    None => ClusterId::Fsid(ctx.live.fsid.clone()),
                },
                node_stage_secret: stage.secret().clone(),
            })
        }
    };
    let claim_uid = c.claim.and_then(|cl| cl.metadata.uid.clone());
    let pv = adopt::adoption_pv(
        &req,
        claim_uid.as_deref(),
        &ctx.class,
        &ctx.params,
        csi.as_ref()
            .map_or(VolumeSourceKind::Rbd, VolumeSourceKind::Csi),
        c.image,
        c.image_id,
        &ctx.me.provisioner,
        &ctx.live,
    );
    let api: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let name = pv.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &pv).await {
        Ok(written) => Ok(written),
        Err(e) if is_status(&e, 409) => {
            let existing = api
                .get(&name)
                .await
                .map_err(Error::kube("read PersistentVolume", &name))?;
            if adopt::written_by_adopt(&existing, c, &facts(ctx)) {
                Ok(existing)
            } else {
                Err(ApplyError::Raced { pv: name })
            }
        }
        Err(e) => Err(Error::kube("create PersistentVolume", &name)(e).into()),
    }
}

fn facts(ctx: &Ctx) -> Facts<'_> {
    Facts {
        me: &ctx.me,
        from_clusters: &[],
        pool: &ctx.pool,
        live: &ctx.live,
        class: &ctx.class_name,
    }
}

/// Writes the new PV's name and uid (and the claim it waits for) on the image.
async fn restamp(
    ctx: &Ctx,
    c: &Candidate<'_>,
    pv: &PersistentVolume,
    target: &Target,
) -> Result<(), Error> {
    let claim_uid = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.uid.clone());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    let pairs = adopt::restamp_pairs(&ctx.me, pv, target, claim_uid.as_deref(), &ctx.live, now);
    ctx.cluster
        .set_metadata(&ctx.pool, c.image, pairs)
        .await
        .map_err(Error::ceph(format!("image {}/{}", ctx.pool, c.image)))
}
