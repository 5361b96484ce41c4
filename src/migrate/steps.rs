//! The steps of one volume's migration; each re-reads the live claim and PV first.

use super::*;

/// Step 2: the old PV, in a ConfigMap named after it that only administrators can write.
pub(super) async fn save_backup(ctx: &Ctx, pv: &PersistentVolume) -> Result<(), MigrateError> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let cm = migration::backup_config_map(pv, &ctx.backup_namespace)
        .map_err(|e| MigrateError::Refused(MigrationStopped::Backup(e)))?;
    let label = ctx.backup_label(&name);
    match ctx.backups().create(&PostParams::default(), &cm).await {
        Ok(_) => {}
        // Another run got here first: fine if it saved this very PV object.
        Err(e) if is_status(&e, 409) => {
            let existing = ctx
                .backups()
                .get(&migration::backup_name(&name).unwrap_or_default())
                .await
                .map_err(Error::kube("read ConfigMap", &label))?;
            let same = migration::backup_of(&existing)
                .is_ok_and(|b| b.metadata.uid.is_some() && b.metadata.uid == pv.metadata.uid);
            if !same {
                return Err(MigrateError::Conflict(Conflict::BackupTaken {
                    backup: label,
                }));
            }
        }
        Err(e) => return Err(Error::kube("create backup ConfigMap", &label)(e).into()),
    }
    tracing::debug!(pv = name, backup = %label, "backup saved");
    Ok(())
}

/// Reads the claim and the PV again: they must still agree with the migration. Returns where
/// it stands, and the live claim.
pub(super) async fn recheck(
    ctx: &Ctx,
    id: &Identity,
) -> Result<(Step, PersistentVolumeClaim), MigrateError> {
    let claim = ctx
        .claims(&id.claim_namespace)
        .get_opt(&id.claim)
        .await
        .map_err(Error::kube("read claim", id.claim_label()))?;
    let live = ctx
        .pvs()
        .get_opt(&id.pv)
        .await
        .map_err(Error::kube("read PersistentVolume", &id.pv))?;
    let stop = |why| {
        MigrateError::Refused(MigrationStopped::Stopped {
            why,
            backup: ctx.backup_label(&id.pv),
        })
    };
    let step = id
        .locate(live.as_ref(), &ctx.settings.driver)
        .map_err(stop)?;
    id.check_claim(claim.as_ref()).map_err(stop)?;
    Ok((step, claim.expect("checked")))
}

/// Refuses when a pod uses the claim (before the PV is deleted, and before its
/// `kubernetes.io/pv-protection` finalizer goes).
pub(super) async fn refuse_in_use(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
) -> Result<(), MigrateError> {
    let u = users(ctx, claim).await?;
    if u.is_empty() {
        return Ok(());
    }
    Err(MigrateError::Refused(MigrationStopped::InUse(
        in_use_refusal(claim, u),
    )))
}

/// Steps 3–6, from `from` on.
pub(super) async fn finish(
    ctx: &Ctx,
    id: &Identity,
    new: &PersistentVolume,
    from: Step,
) -> Result<(), MigrateError> {
    let mut step = from;
    if step == Step::DeleteOld {
        step = delete_old(ctx, id).await?;
    }
    if step == Step::CreateNew {
        create_new(ctx, id, new).await?;
    }
    await_bound(ctx, id).await?;
    recheck(ctx, id).await?;
    let patch = json!({"metadata": {
        "uid": id.claim_uid,
        "annotations": {ANN_BACKUP: null, ANN_STEP: null},
    }});
    ctx.claims(&id.claim_namespace)
        .patch(&id.claim, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(
            "remove the migration annotations from claim",
            id.claim_label(),
        ))?;
    let label = ctx.backup_label(&id.pv);
    match ctx
        .backups()
        .delete(
            &migration::backup_name(&id.pv).unwrap_or_default(),
            &DeleteParams::default(),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if is_status(&e, 404) => {}
        Err(e) => return Err(Error::kube("delete the backup ConfigMap", &label)(e).into()),
    }
    Ok(())
}

/// Step 3: Retain first (nothing may delete the image), then delete, then drop the finalizers
/// (in this order: a Bound PV whose finalizers are dropped before the deletion gets
/// `kubernetes.io/pv-protection` back at once and then stays Terminating while its claim lives).
/// Each change is preceded by a recheck, and conditioned on the old PV object's uid. Returns
/// the step reached.
pub(super) async fn delete_old(ctx: &Ctx, id: &Identity) -> Result<Step, MigrateError> {
    let pvs = ctx.pvs();
    let name = &id.pv;
    let uid = id.pv_uid.clone();
    let gone = |e: &kube::Error| is_status(e, 404) || is_status(e, 409);

    let (step, claim) = recheck(ctx, id).await?;
    if step != Step::DeleteOld {
        return Ok(step);
    }
    refuse_in_use(ctx, &claim).await?;
    let retain =
        json!({"metadata": {"uid": uid}, "spec": {"persistentVolumeReclaimPolicy": "Retain"}});
    match pvs
        .patch(name, &PatchParams::default(), &Patch::Merge(&retain))
        .await
    {
        Ok(_) => {}
        Err(e) if gone(&e) => {}
        Err(e) => {
            return Err(
                Error::kube("set reclaim policy Retain on PersistentVolume", name)(e).into(),
            );
        }
    }
    failpoint("retain", name);

    let (step, claim) = recheck(ctx, id).await?;
    if step != Step::DeleteOld {
        return Ok(step);
    }
    refuse_in_use(ctx, &claim).await?;
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match pvs.delete(name, &dp).await {
        Ok(_) => {}
        Err(e) if gone(&e) => {}
        Err(e) => return Err(Error::kube("delete PersistentVolume", name)(e).into()),
    }
    failpoint("delete", name);

    let (step, claim) = recheck(ctx, id).await?;
    if step != Step::DeleteOld {
        return Ok(step);
    }
    // Dropping the finalizers includes kubernetes.io/pv-protection: never while in use.
    refuse_in_use(ctx, &claim).await?;
    let drop_finalizers = json!({"metadata": {"uid": uid, "finalizers": null}});
    match pvs
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(&drop_finalizers),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if gone(&e) => {}
        Err(e) => {
            return Err(Error::kube("remove the finalizers of PersistentVolume", name)(e).into());
        }
    }
    let started = Instant::now();
    loop {
        let cur = pvs
            .get_opt(name)
            .await
            .map_err(Error::kube("read PersistentVolume", name))?;
        if cur.is_none_or(|p| p.metadata.uid != uid) {
            tracing::debug!(pv = %name, "old PV gone");
            return Ok(Step::CreateNew);
        }
        if started.elapsed() > ctx.timeout {
            return Err(MigrateError::Timeout {
                after: ctx.timeout,
                awaited: Awaited::PvGone { pv: name.clone() },
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Step 4: the csi PV, once the old one is gone and the claim is still the one it belongs to.
pub(super) async fn create_new(
    ctx: &Ctx,
    id: &Identity,
    new: &PersistentVolume,
) -> Result<(), MigrateError> {
    let name = &id.pv;
    match recheck(ctx, id).await?.0 {
        Step::CreateNew => {}
        Step::AwaitBound => return Ok(()),
        Step::DeleteOld => {
            return Err(MigrateError::Conflict(Conflict::StillRbd {
                pv: name.clone(),
            }));
        }
    }
    match ctx.pvs().create(&PostParams::default(), new).await {
        Ok(_) => {}
        // Created meanwhile: only the csi volume of this image and claim will do.
        Err(e) if is_status(&e, 409) => {
            if recheck(ctx, id).await?.0 != Step::AwaitBound {
                return Err(MigrateError::Conflict(Conflict::PvAppeared {
                    pv: name.clone(),
                    backup: ctx.backup_label(name),
                }));
            }
        }
        Err(e) => return Err(Error::kube("create PersistentVolume", name)(e).into()),
    }
    tracing::debug!(pv = %name, "csi PV created");
    failpoint("create", name);
    Ok(())
}

/// Step 5: the PV binder rebinds the Lost claim when it next syncs it, by itself at its
/// periodic resync (`--pvclaimbinder-sync-period`, 15 s by default); an update of the claim
/// (the step annotation) makes that happen within milliseconds.
pub(super) async fn await_bound(ctx: &Ctx, id: &Identity) -> Result<(), MigrateError> {
    let claims = ctx.claims(&id.claim_namespace);
    let pvs = ctx.pvs();
    let (claim_name, pv) = (id.claim.as_str(), id.pv.as_str());
    let started = Instant::now();
    let mut nudged: Option<Instant> = None;
    let mut nudged_after_pv_bound = false;
    let mut attempt = 0u32;
    loop {
        let c = claims
            .get(claim_name)
            .await
            .map_err(Error::kube("read claim", id.claim_label()))?;
        if c.metadata.uid.as_deref() != Some(id.claim_uid.as_str()) {
            return Err(MigrateError::Refused(MigrationStopped::ClaimRecreated {
                claim: id.claim_label(),
                uid: c.metadata.uid.as_deref().unwrap_or("none").to_string(),
                backup: ctx.backup_label(pv),
            }));
        }
        let claim_bound = c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
            && c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(pv);
        // The claim alone is not enough: right after the swap it may still show the old
        // binding, before the binder has even seen the old PV go. Once the binder has marked
        // the new PV Bound it knows both, and keeps the claim Bound.
        let pv_bound = pvs
            .get_opt(pv)
            .await
            .map_err(Error::kube("read PersistentVolume", pv))?
            .and_then(|p| p.status?.phase)
            .as_deref()
            == Some("Bound");
        if claim_bound && pv_bound {
            tracing::debug!(pv, claim = claim_name, elapsed = ?started.elapsed(), "claim Bound again");
            return Ok(());
        }
        if started.elapsed() > ctx.timeout {
            return Err(MigrateError::Timeout {
                after: ctx.timeout,
                awaited: Awaited::Rebound {
                    claim: claim_name.to_string(),
                    pv: pv.to_string(),
                },
            });
        }
        // A claim update that reaches the binder before it has the new PV in its cache
        // changes nothing: touch the claim again once the PV is Bound, and every second.
        let due = nudged.is_none_or(|t| t.elapsed() > Duration::from_secs(1))
            || (pv_bound && !nudged_after_pv_bound);
        if due {
            attempt += 1;
            let patch = json!({"metadata": {
                "uid": id.claim_uid,
                "annotations": {ANN_STEP: format!("csi-pv-created, waiting for bind ({attempt})")},
            }});
            claims
                .patch(claim_name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::kube("annotate claim", id.claim_label()))?;
            nudged = Some(Instant::now());
            nudged_after_pv_bound |= pv_bound;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Test-only hook (the `failpoints` feature, see `crate::failpoint`):
/// `RBD_PROVISIONER_MIGRATE_FAILPOINT=exit-after-<step>:<pv>` ends the process at once (as a
/// crash would: no cleanup, exit code 86) right after `step` (`backup`, `retain`, `delete` or
/// `create`) of PV `pv`, so that the integration tests interrupt the real step order. It names
/// one PV so that a run stops where the test wants.
#[cfg(feature = "failpoints")]
pub(super) fn failpoint(step: &str, pv: &str) {
    if std::env::var("RBD_PROVISIONER_MIGRATE_FAILPOINT")
        .is_ok_and(|v| v == format!("exit-after-{step}:{pv}"))
    {
        eprintln!("failpoint exit-after-{step}:{pv}: exiting");
        crate::process::exit_process(86);
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(super) fn failpoint(_step: &str, _pv: &str) {}
