//! Purging trashed images in the background: a bounded queue, a few workers (so that a mass
//! deletion leaves the blocking pool to provisioning), and retries for failed purges.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};

use crate::ceph::{Cluster, ParentSpec, Removed};
use crate::domain::clone;
use crate::metrics::Metrics;

/// Purges running at once.
const WORKERS: usize = 2;
/// Purges waiting; beyond this the periodic sweep picks entries up later.
const QUEUE: usize = 4096;
/// Attempts per entry before leaving it to the next sweep.
const ATTEMPTS: u32 = 5;

pub struct Job {
    pub cluster: Arc<Cluster>,
    pub pool: String,
    /// Trash id.
    pub id: String,
    pub image: String,
    /// The source snapshot a clone was made from, dropped once the clone is purged.
    pub parent: Option<ParentSpec>,
}

pub struct Purger {
    tx: mpsc::Sender<(Job, u32)>,
}

impl Purger {
    pub fn start(metrics: Arc<Metrics>) -> Purger {
        let (tx, mut rx) = mpsc::channel::<(Job, u32)>(QUEUE);
        let retry = tx.clone();
        let slots = Arc::new(Semaphore::new(WORKERS));
        tokio::spawn(async move {
            while let Some((job, attempt)) = rx.recv().await {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (metrics, retry) = (metrics.clone(), retry.clone());
                tokio::spawn(async move {
                    let failed = purge(&job, &metrics).await;
                    drop(permit);
                    if failed && attempt + 1 < ATTEMPTS {
                        // 2 s, 4 s, 8 s, 16 s: long enough for a busy OSD to recover.
                        tokio::time::sleep(Duration::from_secs(2 << attempt)).await;
                        let _ = retry.send((job, attempt + 1)).await;
                    } else if failed {
                        tracing::warn!(pool = %job.pool, image = %job.image, "giving up purging for now; the periodic sweep retries");
                    }
                });
            }
        });
        Purger { tx }
    }

    /// Queues a trashed image for purging. A full queue is not an error: the entry stays in
    /// the trash, marked as ours, and the periodic sweep queues it again.
    pub fn submit(&self, job: Job) {
        if let Err(e) = self.tx.try_send((job, 0)) {
            let job = match e {
                mpsc::error::TrySendError::Full((j, _))
                | mpsc::error::TrySendError::Closed((j, _)) => j,
            };
            tracing::warn!(pool = %job.pool, image = %job.image, "purge queue full; the periodic sweep purges it later");
        }
    }
}

/// One attempt. Returns whether it failed.
async fn purge(job: &Job, metrics: &Metrics) -> bool {
    let started = Instant::now();
    match job.cluster.trash_remove(&job.pool, &job.id, true).await {
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
        if let Err(e) = job.cluster.snap_unprotect(&p.pool, &p.image, &p.snap).await {
            if !e.is_not_found() {
                tracing::warn!(snapshot = %format!("{}/{}@{}", p.pool, p.image, p.snap), error = %e, "could not unprotect the clone's source snapshot; deleting the source handles it");
            }
        } else if let Err(e) = job.cluster.snap_remove(&p.pool, &p.image, &p.snap).await {
            tracing::warn!(snapshot = %format!("{}/{}@{}", p.pool, p.image, p.snap), error = %e, "could not remove the clone's source snapshot; deleting the source handles it");
        }
    }
    false
}
