//! Volume reconcile: delete the image of a released Delete-policy volume, then the PV.
//!
//! Every step rests on facts nobody else can forge: the image named by the PV's immutable
//! spec (and, for our volumes, derived from the PV's name), the stamp we wrote on the image
//! at creation, and no other PV naming the same image. When they disagree nothing is
//! deleted and the PV gets a Warning event saying why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use either::Either;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::controller::Action;

use super::Context;
use super::outcome::{Outcome, Wait, done};
use super::purge::Job;
use crate::error::{Error, FactsDisagree, Result, is_status};
use crate::k8s;
use ceph::RbdCluster;
use clones::{ImageUnderDeletion, detach_clones};
use domain::owner;
use domain::owner::Place;
use domain::reclaim::{self, DeleteTarget, VolumeAction};
use domain::volume::{ANN_FSID, ANN_POOL_ID, FINALIZER};

/// The longest wait between two attempts on an image that has watchers. A process killed while
/// it had the image open read/write (this provisioner's predecessor, say) leaves a watch that
/// the OSD drops after `osd_client_watch_timeout` (30 s by default): on the usual doubling
/// backoff the deletion would go ahead only a minute or more after that.
const IN_USE_RETRY: Duration = Duration::from_secs(10);

/// Delay before retrying a deletion that found watchers, given the usual backoff.
fn in_use_retry(backoff: Duration) -> Duration {
    backoff.min(IN_USE_RETRY)
}

pub async fn reconcile(pv: Arc<PersistentVolume>, ctx: Arc<Context>) -> Result<Action> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let key = pv.metadata.uid.clone().unwrap_or_default();
    let regarding = pv.object_ref(&());
    if ctx.deletion_finished(&key) {
        tracing::debug!(pv = %name, "already deleted by this process");
        return Ok(Action::await_change());
    }
    // A volume of ours whose claim (by uid) is gone needs no status write from
    // kube-controller-manager before its image goes (see reclaim::may_delete_before_release).
    let claim_deleted = reclaim::may_delete_before_release(
        ctx.settings.early_provisioning,
        &pv,
        &ctx.settings.provisioner,
    ) && ctx.bound_claim_deleted(&pv).await;
    if claim_deleted {
        tracing::info!(pv = %name, "its claim is gone: deleting without waiting for the volume to be marked Released");
    }
    let outcome = match reclaim::decide(&pv, &ctx.settings.provisioner, claim_deleted) {
        VolumeAction::Ignore(why) => {
            // Debug only: every PV of every class passes here.
            let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
            tracing::debug!(pv = %name, phase = phase.unwrap_or(""), "volume left alone: {why}");
            ctx.succeeded(&key);
            return Ok(Action::await_change());
        }
        VolumeAction::RemoveFinalizer => match remove_finalizer(&ctx, &pv).await {
            Ok(Outcome::Done(())) => {
                tracing::info!(pv = %name, "reclaim policy is not Delete: removed our finalizer");
                ctx.succeeded(&key);
                return Ok(Action::await_change());
            }
            other => other,
        },
        VolumeAction::Broken(cause) => Err(Error::Unlocated {
            action: "delete",
            pv: name.clone(),
            cause,
        }),
        // Done and a lost race end as a deletion's would; failures are the recording's own.
        VolumeAction::Record(target) => match super::record::record(&pv, &target, &ctx).await {
            // An old volume whose class is gone (common, and harmless while it is bound):
            // tried again now and then, quietly; its deletion says what to do if it comes.
            Err(e @ Error::ClassGone { .. }) => {
                tracing::debug!(pv = %name, error = %e, "cannot record this volume yet");
                return Ok(Action::requeue(ctx.settings.retry_max));
            }
            Err(e) => {
                if matches!(e, Error::Mismatch { .. }) {
                    ctx.kube
                        .events
                        .warning(&regarding, "VolumeRecordRefused", "Record", e.to_string())
                        .await;
                }
                return Err(e);
            }
            done => done,
        },
        VolumeAction::Delete(_) => {
            let started = Instant::now();
            let _under_way = ctx.metrics.under_way("delete");
            crate::failpoint::hit(crate::failpoint::Point::BeforeFreshRead, &name).await;
            let r = delete_fresh(&pv, claim_deleted, &ctx).await;
            if let Ok(Outcome::Done(Some(target))) = &r {
                if !key.is_empty() {
                    ctx.finished_deleting(&key);
                }
                ctx.metrics.delete(class_of(&pv), Ok(started.elapsed()));
                tracing::info!(pv = %name, image = %format!("{}/{}", target.pool, target.image), elapsed = ?started.elapsed(), "deleted volume");
            }
            r.map(|o| o.map(drop))
        }
    };
    match outcome {
        Ok(Outcome::Done(())) => {
            ctx.succeeded(&key);
            Ok(Action::await_change())
        }
        // A lost race on the PV object: the next reconcile sees the new version.
        Ok(Outcome::Changed { verb, object }) => {
            tracing::debug!(pv = %name, "{verb} {object}: changed meanwhile; retrying");
            Ok(Action::requeue(Duration::from_millis(200)))
        }
        Err(e @ Error::ImageInUse { .. }) => {
            ctx.metrics.delete(class_of(&pv), Err(e.kind()));
            ctx.kube
                .events
                .warning(&regarding, "VolumeFailedDelete", "Delete", e.to_string())
                .await;
            let delay = in_use_retry(ctx.backoff(&key));
            tracing::warn!(pv = %name, error = %e, retry_in = ?delay, "volume operation failed");
            Ok(Action::requeue(delay))
        }
        Ok(Outcome::Waiting(wait)) => {
            tracing::info!(pv = %name, "{wait}");
            ctx.kube
                .events
                .normal(
                    &regarding,
                    "VolumeDeleteWaiting",
                    "Delete",
                    wait.to_string(),
                )
                .await;
            // Snapshots go when their owners delete them: no need to look often.
            let secs = if matches!(wait, Wait::Snapshots { .. }) {
                30
            } else {
                5
            };
            Ok(Action::requeue(Duration::from_secs(secs)))
        }
        Err(e) => {
            ctx.metrics.delete(class_of(&pv), Err(e.kind()));
            ctx.kube
                .events
                .warning(&regarding, "VolumeFailedDelete", "Delete", e.to_string())
                .await;
            Err(e)
        }
    }
}

fn class_of(pv: &PersistentVolume) -> &str {
    pv.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

/// A predecessor killed inside its trash move (or before its purge) leaves a trash entry under
/// the image's name, which its stamp cannot always vouch for: a half-moved entry cannot be
/// opened. The PV's immutable spec names the image, and a name derived from the claim's uid is
/// ours, so such entries are purged (the purge finishes a half-done move first).
async fn purge_left_in_trash(
    ctx: &Arc<Context>,
    cluster: &Arc<dyn RbdCluster>,
    pv: &PersistentVolume,
    t: &DeleteTarget,
) {
    let claim_uid = pv
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.uid.as_deref());
    if claim_uid.map(domain::volume::image_name).as_deref() != Some(t.image.as_str()) {
        return;
    }
    match cluster.trash_list(&t.pool).await {
        Ok(entries) => {
            for e in entries.into_iter().filter(|e| e.name == t.image) {
                tracing::info!(pool = %t.pool, image = %t.image, id = %e.id, "purging a trash entry of this volume's image");
                ctx.ceph
                    .purger
                    .submit(Job::trash_entry(cluster, &t.pool, e, 0, true));
            }
        }
        Err(e) => tracing::warn!(pool = %t.pool, error = %e, "could not list the trash"),
    }
}

/// Decides again on the PV as the API server has it now, not as the cache had it: someone may
/// have set Retain meanwhile, or the claim come back. Returns what was deleted, if anything.
async fn delete_fresh(
    cached: &PersistentVolume,
    claim_deleted: bool,
    ctx: &Arc<Context>,
) -> Result<Outcome<Option<DeleteTarget>>> {
    let name = cached.metadata.name.clone().unwrap_or_default();
    let started = Instant::now();
    let fresh = match k8s::get_pv(&ctx.kube.client, &name).await? {
        Some(pv) if pv.metadata.uid == cached.metadata.uid => pv,
        // Gone, or another PV of that name: nothing of this one's to do.
        _ => return Ok(Outcome::Done(None)),
    };
    match reclaim::decide(&fresh, &ctx.settings.provisioner, claim_deleted) {
        VolumeAction::Delete(t) => {
            let mut at = Steps::new(started);
            at.mark("read");
            let r = delete(&fresh, &t, claim_deleted, ctx, &mut at).await?;
            // Where a deletion's time goes, for the benchmarks: the fresh read, Ceph reached,
            // the image checked, the PV committed, the image in the trash.
            tracing::debug!(pv = %name, steps = %at, "delete timings");
            Ok(r.map(|()| Some(t)))
        }
        VolumeAction::RemoveFinalizer => {
            done!(remove_finalizer(ctx, &fresh).await?);
            tracing::info!(pv = %name, "reclaim policy is not Delete: removed our finalizer");
            Ok(Outcome::Done(None))
        }
        VolumeAction::Broken(cause) => Err(Error::Unlocated {
            action: "delete",
            pv: name,
            cause,
        }),
        VolumeAction::Ignore(_) | VolumeAction::Record(_) => Ok(Outcome::Done(None)),
    }
}

/// Deletes a volume decided on from `pv`, read fresh. Every check reads only; then the PV is
/// committed to deletion with its resourceVersion as precondition (a PV changed since the read
/// fails it, and the next pass decides again); only then is the image trashed.
/// Milliseconds between the named points of an operation, for its debug line.
struct Steps {
    last: Instant,
    marks: Vec<(&'static str, u128)>,
}

impl Steps {
    fn new(started: Instant) -> Steps {
        Steps {
            last: started,
            marks: Vec::new(),
        }
    }

    fn mark(&mut self, what: &'static str) {
        let now = Instant::now();
        self.marks.push((what, (now - self.last).as_millis()));
        self.last = now;
    }
}

impl std::fmt::Display for Steps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (what, ms)) in self.marks.iter().enumerate() {
            write!(f, "{}{what} {ms} ms", if i > 0 { ", " } else { "" })?;
        }
        Ok(())
    }
}

async fn delete(
    pv: &PersistentVolume,
    t: &DeleteTarget,
    claim_gone: bool,
    ctx: &Arc<Context>,
    at: &mut Steps,
) -> Result<Outcome> {
    let pv_name = pv.metadata.name.clone().unwrap_or_default();
    let refuse = |why: FactsDisagree| Error::Refused {
        pv: pv_name.clone(),
        pool: t.pool.clone(),
        image: t.image.clone(),
        why,
    };
    ctx.volumes_listed().await;
    if let Some(other) = ctx.other_volume_naming(pv, &t.pool, &t.image) {
        return Err(refuse(FactsDisagree::SharedImage { other }));
    }
    let cluster = ctx.volume_cluster(pv, t, &refuse).await?;
    let object = format!("image {}/{} of volume {pv_name}", t.pool, t.image);
    // A missing pool is an error here, never "image gone".
    let live = ctx.place(&cluster, &t.pool, &object).await?;
    reclaim::check_recorded(pv, &t.pool, &live, cluster.monitors())
        .map_err(|c| refuse(FactsDisagree::Place(c)))?;
    at.mark("ceph");
    let _held = ctx.ceph.locks.lock(&t.pool, &t.image).await;
    at.mark("lock");

    let image = match cluster.inspect(&t.pool, &t.image, owner::KEYS).await {
        // Only the image's own ENOENT in the pool the PV records: a pool renamed and replaced
        // by an empty one must not pass for a deleted image.
        Err(e) if e.is_not_found() => {
            if reclaim::recorded_place(pv).is_none() {
                return Err(refuse(FactsDisagree::Unproven {
                    pv: pv_name.clone(),
                    pool: t.pool.clone(),
                    younger: pool_younger_than(&cluster, &t.pool, pv).await,
                }));
            }
            // The pool's id came from the client's OSD map before the look for the image; a
            // newer map (the pool renamed and replaced) may have reached the client in between,
            // and the look then went to the new pool. The map only moves forward, so its id
            // read now names the pool the look went to, or a newer one.
            let now = ctx.place(&cluster, &t.pool, &object).await?;
            reclaim::check_recorded(pv, &t.pool, &now, cluster.monitors())
                .map_err(|c| refuse(FactsDisagree::Place(c)))?;
            tracing::info!(pv = %pv_name, "image already gone");
            None
        }
        Err(e) => return Err(Error::ceph(&object)(e)),
        Ok(seen) => {
            let legacy = reclaim::made_by_old_provisioner(pv);
            owner::check_delete(&seen.metadata, &ctx.instance, &pv_name, &live, legacy)
                .map_err(|m| refuse(FactsDisagree::Stamp(m)))?;
            // Read through a read-only open: a read/write open would make us a watcher.
            if !seen.watchers.is_empty() {
                return Err(Error::ImageInUse {
                    pool: t.pool.clone(),
                    image: t.image.clone(),
                    watchers: seen
                        .watchers
                        .iter()
                        .map(|w| w.addr.clone())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            let src = ImageUnderDeletion {
                cluster: &cluster,
                pool: &t.pool,
                image: &t.image,
                object: &object,
            };
            done!(detach_clones(ctx, &src, seen.snapshots).await?);
            Some((seen.info, seen.metadata))
        }
    };

    at.mark("checked");
    crate::failpoint::hit(crate::failpoint::Point::BeforeCommit, &pv_name).await;
    let committed = commit_with_retries(ctx, pv, &live, claim_gone).await?;
    at.mark("committed");
    let committed = match committed {
        Committed::Held(pv) => Some(pv),
        Committed::Deleted => None,
        Committed::Changed(_) => {
            return Ok(Outcome::changed(
                "delete",
                format!("PersistentVolume {pv_name}"),
            ));
        }
        // Someone else deleted it between the read and the commit: their act, not ours; the
        // image stays (its stamp says a PV had it, so nothing collects it either).
        Committed::Vanished => {
            tracing::info!(pv = %pv_name, "the PV went before our deletion; its image is left alone");
            return Ok(Outcome::Done(()));
        }
    };
    match image {
        Some((info, meta)) => {
            super::purge::trash(
                &ctx.instance,
                &cluster,
                &t.pool,
                &t.image,
                &pv_name,
                &meta,
                &object,
            )
            .await?;
            ctx.ceph.purger.submit(Job {
                cluster: cluster.clone(),
                pool: t.pool.clone(),
                id: info.id.clone(),
                image: t.image.clone(),
                parent: info.parent.clone(),
                size: info.size,
                finish_move: true,
            });
        }
        None => purge_left_in_trash(ctx, &cluster, pv, t).await,
    }
    at.mark("trashed");
    // What an earlier process trashed but did not purge (it was stopped meanwhile). An image
    // "already gone" is the usual trace of that: its predecessor trashed it, then died.
    if ctx.first_delete_in(cluster.monitors(), &t.pool) {
        let (ctx, cluster, pool) = (ctx.clone(), cluster.clone(), t.pool.clone());
        tokio::spawn(async move { super::maintain::sweep_trash(&ctx, &cluster, &pool).await });
    }
    match committed {
        Some(pv) => drop_finalizer_of_deleted(ctx, *pv).await,
        None => Ok(Outcome::Done(())),
    }
}

/// What became of the PV at the commit.
enum Committed {
    /// Marked for deletion, held by our finalizer until the image is trashed.
    Held(Box<PersistentVolume>),
    /// Deleted outright (no finalizer held it).
    Deleted,
    /// Gone before our commit.
    Vanished,
    /// Changed since it was read (a 409 on a write with its resourceVersion): not deleted.
    /// Carries the version the write named.
    Changed(Box<PersistentVolume>),
}

/// Commits to deletion; after a 409, reads the PV again and commits on it at once when only
/// its status changed (`reclaim::may_commit_again`: kube-controller-manager marking it
/// Released as we commit, which early deletion meets often). The checks still hold: they read
/// nothing from the status, and the image's lock is still held. Anything else, and the next
/// pass decides from the start.
async fn commit_with_retries(
    ctx: &Context,
    pv: &PersistentVolume,
    live: &Place,
    claim_gone: bool,
) -> Result<Committed> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let mut committed = commit(ctx, pv, live).await?;
    for _ in 0..COMMIT_ATTEMPTS - 1 {
        let Committed::Changed(tried) = &committed else {
            break;
        };
        let again = match k8s::get_pv(&ctx.kube.client, &name).await? {
            Some(again)
                if reclaim::may_commit_again(
                    tried,
                    &again,
                    &ctx.settings.provisioner,
                    claim_gone,
                ) =>
            {
                again
            }
            _ => break,
        };
        tracing::debug!(pv = %name, "the PV's status changed as we committed; committing again");
        committed = commit(ctx, &again, live).await?;
    }
    Ok(committed)
}

/// Writes the commit may make in one pass when the status keeps changing under it.
const COMMIT_ATTEMPTS: usize = 3;

/// The point of no return, taken on the PV exactly as it was read: our finalizer (a volume of
/// the old provisioner has none) and the records of where its image is are added, then the PV
/// is deleted; each write has the resourceVersion read as precondition. A 409 means the PV
/// changed since it was read (policy set to Retain, say): nothing is deleted, and the next
/// pass decides again on what it then reads.
async fn commit(ctx: &Context, pv: &PersistentVolume, live: &Place) -> Result<Committed> {
    let name = pv.metadata.name.clone().unwrap_or_default();
    let pvs: Api<PersistentVolume> = Api::all(ctx.kube.client.clone());
    let mut pv = pv.clone();
    if !reclaim::has_finalizer(&pv) || reclaim::recorded_place(&pv).is_none() {
        let mut finalizers = pv.metadata.finalizers.clone().unwrap_or_default();
        if !finalizers.iter().any(|f| f == FINALIZER) {
            finalizers.push(FINALIZER.to_string());
        }
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": pv.metadata.resource_version,
            "finalizers": finalizers,
            "annotations": {ANN_FSID: live.fsid, ANN_POOL_ID: live.pool_id.to_string()},
        }});
        pv = match pvs
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(p) => p,
            Err(e) if is_status(&e, 404) => return Ok(Committed::Vanished),
            Err(e) if is_status(&e, 409) => return Ok(Committed::Changed(Box::new(pv))),
            Err(e) => return Err(Error::kube("record the deletion on PersistentVolume", name)(e)),
        };
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pv.metadata.uid.clone(),
            resource_version: pv.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    match pvs.delete(&name, &dp).await {
        Ok(Either::Left(held)) => Ok(Committed::Held(Box::new(held))),
        Ok(Either::Right(_)) => Ok(Committed::Deleted),
        Err(e) if is_status(&e, 404) => Ok(Committed::Vanished),
        Err(e) if is_status(&e, 409) => Ok(Committed::Changed(Box::new(pv))),
        Err(e) => Err(Error::kube("delete PersistentVolume", name)(e)),
    }
}

/// ", and pool P was created after this PV": said when Ceph can tell, to show a replaced pool.
async fn pool_younger_than(
    cluster: &Arc<dyn RbdCluster>,
    pool: &str,
    pv: &PersistentVolume,
) -> String {
    let pv_created = pv
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second());
    match (cluster.pool_created(pool).await, pv_created) {
        (Ok(Some(pool_created)), Some(pv_created)) if pool_created > pv_created => {
            format!(", and pool {pool} was created after this PV: it was replaced")
        }
        _ => String::new(),
    }
}

/// Drops our finalizer from a PV we have just deleted (its image already trashed). A 409 here
/// is usually kube-controller-manager marking the volume Released at the same moment: read the
/// PV again and retry at once, rather than run the whole deletion a second time.
async fn drop_finalizer_of_deleted(ctx: &Context, mut pv: PersistentVolume) -> Result<Outcome> {
    let pvs: Api<PersistentVolume> = Api::all(ctx.kube.client.clone());
    let name = pv.metadata.name.clone().unwrap_or_default();
    let mut attempts = 0;
    loop {
        match remove_finalizer(ctx, &pv).await {
            Ok(Outcome::Changed { .. }) if attempts < 3 => attempts += 1,
            done => return done,
        }
        match pvs.get_opt(&name).await {
            Ok(Some(fresh)) if fresh.metadata.uid == pv.metadata.uid => pv = fresh,
            // Gone, or a new PV of that name: nothing of ours to drop.
            Ok(_) => return Ok(Outcome::Done(())),
            Err(e) => return Err(Error::kube("read PersistentVolume", name)(e)),
        }
    }
}

/// Drops our finalizer, with the resourceVersion as precondition so that a concurrent
/// change to the list is not overwritten; a 409 is a race, retried quietly.
async fn remove_finalizer(ctx: &Context, pv: &PersistentVolume) -> Result<Outcome> {
    if !reclaim::has_finalizer(pv) {
        return Ok(Outcome::Done(()));
    }
    let name = pv.metadata.name.clone().unwrap_or_default();
    let mut rest = pv.metadata.finalizers.clone().unwrap_or_default();
    rest.retain(|f| f != FINALIZER);
    let patch = serde_json::json!({
        "metadata": {"finalizers": rest, "resourceVersion": pv.metadata.resource_version}
    });
    match Api::<PersistentVolume>::all(ctx.kube.client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(Outcome::Done(())),
        Err(e) if is_status(&e, 404) => Ok(Outcome::Done(())),
        Err(e) if is_status(&e, 409) => Ok(Outcome::changed(
            "remove finalizer from",
            format!("PersistentVolume {name}"),
        )),
        Err(e) => Err(Error::kube("remove finalizer from PersistentVolume", name)(
            e,
        )),
    }
}

mod clones;
#[cfg(test)]
mod tests;
