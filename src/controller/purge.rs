//! Purging trashed images in the background: bounded queues, a few workers (so that a mass
//! deletion leaves the blocking pool to provisioning) that give way to the operations under
//! way, and retries for failed purges.
//!
//! Removing a layering-only image (no object map) probes every object its size allows, so its
//! cost grows with the size, not with the data: a 1 TiB image takes about a minute here, a
//! 1 PiB one days. Large images (and those of unknown size) therefore have a lane of their own,
//! so that one tenant's huge volumes never hold back everyone else's purges.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};

use crate::error::{Error, Result};
use crate::metrics::Metrics;
use ceph::{CephError, ParentSpec, RbdCluster, Removed, TrashEntry};
use domain::clone;
use domain::owner::{self, Instance};

/// Purges of ordinary images running at once.
const WORKERS: usize = 2;
/// Purges of large images running at once, beside the others.
const LARGE_WORKERS: usize = 1;
/// From this size on an image is purged in the large lane.
pub const LARGE: u64 = 1 << 40;
/// Purges waiting; beyond this the periodic sweep picks entries up later.
const QUEUE: usize = 4096;
/// How long a purge waits for the provisionings and deletions under way to end before it
/// starts anyway: a purge keeps the OSD busy with removals (one per object the size allows,
/// ten at a time), and a deletion's trash move waits behind them.
const GIVE_WAY_AT_MOST: Duration = Duration::from_secs(2);
/// From this backlog on, purges no longer give way: the trash must not grow without bound
/// under a steady stream of deletions.
const GIVE_WAY_BELOW: usize = 256;
/// Attempts per entry before leaving it to the next sweep. A process killed while it had the
/// image open read/write leaves a watch that the OSD drops only after
/// `osd_client_watch_timeout` (30 s by default), and until then the purge fails with EBUSY:
/// the attempts must outlast that, or the entry waits for the next sweep (minutes).
const ATTEMPTS: u32 = 9;
/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_secs(16);

/// Pause before attempt `attempt + 1`: 2 s, 4 s, 8 s, then 16 s (2 + 4 + 8 + 5 × 16 = 94 s
/// in all, three times the default watch timeout).
fn pause(attempt: u32) -> Duration {
    Duration::from_secs(2u64 << attempt.min(8)).min(MAX_PAUSE)
}

pub struct Job {
    pub cluster: Arc<dyn RbdCluster>,
    pub pool: String,
    /// Trash id.
    pub id: String,
    pub image: String,
    /// The source snapshot a clone was made from, dropped once the clone is purged.
    pub parent: Option<ParentSpec>,
    /// The image's size in bytes; 0 when unknown.
    pub size: u64,
    /// Whether a half-done trash move of this entry may be finished and purged: only when
    /// the image is provably ours. A half-moved entry still holds a whole image.
    pub finish_move: bool,
}

impl Job {
    /// An entry found in the trash, where what it was cloned from is no longer known.
    pub fn trash_entry(
        cluster: &Arc<dyn RbdCluster>,
        pool: &str,
        entry: TrashEntry,
        size: u64,
        finish_move: bool,
    ) -> Job {
        Job {
            cluster: cluster.clone(),
            pool: pool.to_string(),
            id: entry.id,
            image: entry.name,
            parent: None,
            size,
            finish_move,
        }
    }

    /// Whether the large lane purges it: large, or of unknown size.
    fn large(&self) -> bool {
        self.size == 0 || self.size >= crate::failpoint::large_purge_from(LARGE)
    }
}

pub struct Purger {
    small: mpsc::Sender<(Job, u32)>,
    large: mpsc::Sender<(Job, u32)>,
    pending: Arc<Pending>,
}

/// Entries queued or being purged, by (monitors, pool, trash id): two removals of one entry
/// at once make each other fail (EBUSY) until both give up. Their number is the purge backlog
/// metric.
struct Pending {
    keys: Mutex<HashSet<(String, String, String)>>,
    metrics: Arc<Metrics>,
}

impl Pending {
    /// Whether `k` was not pending yet (and now is).
    fn insert(&self, k: (String, String, String)) -> bool {
        let mut keys = self.keys.lock();
        let new = keys.insert(k);
        self.metrics.set_purge_backlog(keys.len());
        new
    }

    fn len(&self) -> usize {
        self.keys.lock().len()
    }

    fn remove(&self, k: &(String, String, String)) {
        let mut keys = self.keys.lock();
        keys.remove(k);
        self.metrics.set_purge_backlog(keys.len());
    }
}

fn key(job: &Job) -> (String, String, String) {
    (
        job.cluster.monitors().to_string(),
        job.pool.clone(),
        job.id.clone(),
    )
}

impl Purger {
    pub fn start(metrics: Arc<Metrics>) -> Purger {
        let pending = Arc::new(Pending {
            keys: Mutex::default(),
            metrics: metrics.clone(),
        });
        Purger {
            small: lane(WORKERS, metrics.clone(), pending.clone()),
            large: lane(LARGE_WORKERS, metrics, pending.clone()),
            pending,
        }
    }

    /// Queues a trashed image for purging. A full queue is not an error: the entry stays in
    /// the trash, marked as ours, and the periodic sweep queues it again.
    pub fn submit(&self, job: Job) {
        let k = key(&job);
        if !self.pending.insert(k.clone()) {
            tracing::debug!(pool = %job.pool, image = %job.image, "already being purged");
            return;
        }
        let lane = if job.large() {
            &self.large
        } else {
            &self.small
        };
        if let Err(e) = lane.try_send((job, 0)) {
            let job = match e {
                mpsc::error::TrySendError::Full((j, _))
                | mpsc::error::TrySendError::Closed((j, _)) => j,
            };
            self.pending.remove(&k);
            tracing::warn!(pool = %job.pool, image = %job.image, "purge queue full; the periodic sweep purges it later");
        }
    }
}

/// Unprotects and removes a snapshot no clone needs any more; failures are left for the
/// source's deletion, which removes such snapshots too.
pub async fn drop_snapshot(cluster: &Arc<dyn RbdCluster>, p: &ParentSpec) {
    if let Err(e) = cluster.snap_unprotect(&p.pool, &p.image, &p.snap).await
        && !e.is_not_found()
    {
        tracing::warn!(snapshot = %p, error = %e, "could not unprotect a snapshot no clone needs; deleting the source removes it");
        return;
    }
    if let Err(e) = cluster.snap_remove(&p.pool, &p.image, &p.snap).await {
        tracing::warn!(snapshot = %p, error = %e, "could not remove a snapshot no clone needs; deleting the source removes it");
    }
}

#[cfg(test)]
impl Purger {
    /// Waits until nothing is queued or being purged (retries included).
    pub async fn idle(&self) {
        while !self.pending.keys.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// One lane: a queue and `workers` purges at a time, each retried on its own schedule.
fn lane(workers: usize, metrics: Arc<Metrics>, pending: Arc<Pending>) -> mpsc::Sender<(Job, u32)> {
    let (tx, mut rx) = mpsc::channel::<(Job, u32)>(QUEUE);
    let retry = tx.clone();
    let slots = Arc::new(Semaphore::new(workers));
    tokio::spawn(async move {
        while let Some((job, attempt)) = rx.recv().await {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (metrics, retry, done) = (metrics.clone(), retry.clone(), pending.clone());
            tokio::spawn(async move {
                if done.len() < GIVE_WAY_BELOW {
                    metrics.foreground().quiet(GIVE_WAY_AT_MOST).await;
                }
                let failed = purge(&job, &metrics).await;
                drop(permit);
                if failed && attempt + 1 < ATTEMPTS {
                    tokio::time::sleep(pause(attempt)).await;
                    let _ = retry.send((job, attempt + 1)).await;
                    return;
                }
                if failed {
                    tracing::warn!(pool = %job.pool, image = %job.image, "giving up purging for now; the periodic sweep retries");
                }
                done.remove(&key(&job));
            });
        }
    });
    tx
}

/// One attempt. Returns whether it failed.
async fn purge(job: &Job, metrics: &Metrics) -> bool {
    if job.large() {
        crate::failpoint::hit(crate::failpoint::Point::LargePurge, &job.image).await;
    }
    let started = Instant::now();
    match remove(job).await {
        Ok(r) => {
            metrics.record("purge", Ok(started.elapsed()));
            if r == Removed::Removed {
                tracing::debug!(pool = %job.pool, image = %job.image, elapsed = ?started.elapsed(), "purged from trash");
            }
        }
        Err(e) => {
            metrics.record("purge", Err("ceph"));
            tracing::warn!(pool = %job.pool, image = %job.image, error = %e, "purging a trashed image failed; retrying");
            return true;
        }
    }
    if let Some(p) = &job.parent
        && clone::clone_of_snapshot(&p.snap) == Some(job.image.as_str())
    {
        // The source's snapshot existed only for this clone.
        drop_snapshot(&job.cluster, p).await;
    }
    false
}

/// Removes the trash entry; an entry left half-moved by a process that died inside
/// `rbd_trash_move` is moved to the end first.
async fn remove(job: &Job) -> Result<Removed, CephError> {
    match job.cluster.trash_remove(&job.pool, &job.id, true).await {
        Err(e) if interrupted_move(&e) && job.finish_move => {
            finish_move(job).await?;
            job.cluster.trash_remove(&job.pool, &job.id, true).await
        }
        r => r,
    }
}

/// librbd marks a trash entry "moving" before it takes the image out of the directory, and
/// "normal" after; a process killed in between leaves it "moving", and librbd refuses to
/// remove such an entry (EUCLEAN, "image not fully moved to trash") for ever.
fn interrupted_move(e: &CephError) -> bool {
    e.errno() == Some(libc::EUCLEAN)
}

/// Moves the image named by a half-moved entry to the trash again: librbd resumes the
/// interrupted move (found by the image's name in the directory, or, once the directory entry
/// is gone, by the "moving" trash entry of that name) and marks the entry "normal". Only when
/// the directory holds no other image of that name.
async fn finish_move(job: &Job) -> Result<(), CephError> {
    match job.cluster.image_info(&job.pool, &job.image).await {
        Ok(info) if info.id != job.id => {
            tracing::warn!(pool = %job.pool, image = %job.image, "a half-moved trash entry shares its name with another image; left alone");
            return Ok(());
        }
        Ok(_) => {}
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    job.cluster.trash_move(&job.pool, &job.image, 0).await?;
    tracing::info!(pool = %job.pool, image = %job.image, "finished a trash move that a stopped process had interrupted");
    Ok(())
}

/// Marks the image as trashed by us (the trash sweep purges nothing else), then moves it to
/// the trash: instant whatever the size; the purge runs in the background.
pub(super) async fn trash(
    instance: &Instance,
    cluster: &Arc<dyn RbdCluster>,
    pool: &str,
    image: &str,
    pv_name: &str,
    meta: &BTreeMap<String, String>,
    object: &str,
) -> Result<()> {
    let pairs = owner::trash_pairs(meta, instance, pv_name, super::unix_now());
    // Without opening it: a read/write open registers a watch and notifies per key, several
    // round trips each; nobody has it open (its watchers were checked) and only we read these.
    cluster
        .set_metadata_unopened(pool, image, pairs)
        .await
        .map_err(Error::ceph(object))?;
    let moved = cluster
        .trash_move(pool, image, 0)
        .await
        .map_err(Error::ceph(object))?;
    // We read the image a moment ago, under its lock: "already gone" needs proof. librbd says
    // it in a pool at its quota that has no trash object yet, and the image stays.
    if moved == Removed::AlreadyGone && cluster.image_info(pool, image).await.is_ok() {
        let quota = cluster
            .pool_quota(pool)
            .await
            .ok()
            .and_then(|q| q.reached());
        return Err(Error::TrashMoveIgnored {
            object: object.to_string(),
            pool: pool.to_string(),
            quota,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
