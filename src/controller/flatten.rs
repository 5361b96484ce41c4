//! Flattening clones in the background: before their source is deleted, and when a chain of
//! clones of clones grows deeper than its class allows. One flatten at a time per image, in
//! this process (only the leader acts): two at once would each copy the parent's data.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Context;
use ceph::{ParentSpec, RbdCluster};

/// How long a clone may take to flatten before the attempt is given up (the caller retries).
const DEADLINE: Duration = Duration::from_secs(3600);

/// Flattens `pool/child` in the background unless that is already under way; then, if given,
/// drops the parent's snapshot that existed only for this clone.
pub fn in_background(
    ctx: &Context,
    cluster: &Arc<dyn RbdCluster>,
    pool: &str,
    child: &str,
    then_drop: Option<ParentSpec>,
) {
    let key = format!("{pool}/{child}");
    if !ctx.ceph.flattening.lock().insert(key.clone()) {
        return;
    }
    let (cluster, pool, child) = (cluster.clone(), pool.to_string(), child.to_string());
    let flattening = ctx.ceph.flattening.clone();
    tokio::spawn(async move {
        let started = Instant::now();
        match tokio::time::timeout(DEADLINE, cluster.flatten(&pool, &child)).await {
            Ok(Ok(())) => {
                tracing::info!(%pool, %child, elapsed = ?started.elapsed(), "flattened clone");
                // Never while the snapshot's own image is being flattened (a clone of a clone
                // flattened, then its parent's source deleted): removing a snapshot from an
                // image in mid-flatten left the source's children list naming the flattened
                // image, and the source could never be deleted. The image's entry in
                // `flattening` is the token: held here, a flatten asked for meanwhile waits
                // for the caller's retry; held there, the snapshot is left for the image's
                // own deletion, which removes such snapshots.
                if let Some(p) = then_drop {
                    let token = format!("{}/{}", p.pool, p.image);
                    let mine = flattening.lock().insert(token.clone());
                    if mine {
                        super::purge::drop_snapshot(&cluster, &p).await;
                        flattening.lock().remove(&token);
                    } else {
                        tracing::debug!(snapshot = %p, "its image is being flattened; the snapshot is left for the image's deletion");
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(%pool, %child, error = %e, "flattening clone failed; retried later")
            }
            Err(_) => {
                tracing::warn!(%pool, %child, "flattening clone took longer than {DEADLINE:?}; retried later")
            }
        }
        flattening.lock().remove(&key);
    });
}
