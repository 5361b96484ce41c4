//! One connected librados client and the async librbd operations on it. No `unsafe`: the
//! blocking calls are the safe methods of [`super::handles`].
//!
//! Every public operation runs its blocking calls on `tokio::task::spawn_blocking` with a
//! clone of the `Arc<Cluster>`. Each operation makes its own I/O context(s) and image
//! handle(s) and releases them before returning, so nothing but the `rados_t` is shared
//! between threads (librados documents that as thread-safe).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::config::configured;
use super::error::{Op, img_err, pool_err, trash_label};
use super::handles::{HeldImage, ImageOptions, IoCtx, Rados, cstr};
use super::types::{
    Child, CloneSpec, Created, ImageInfo, ImageSpec, Inspection, PoolQuota, Removed, SnapInfo,
    TrashEntry, Watcher,
};
use super::{CephError, Credentials, Errno, Timeouts};

/// Extra time granted to a connect attempt beyond `client_mount_timeout` before the async
/// side gives up on the blocking thread (librados honours the timeout itself; this is only
/// a safety net against a hang inside the library).
const CONNECT_GRACE: Duration = Duration::from_secs(5);

/// Operations failed in a row (timeouts, lost connections) after which a client is replaced.
const FAILING_LIMIT: u32 = 3;

/// One connected librados client (`rados_t`). Thread-safe; shut down when the last `Arc`
/// is dropped.
pub struct Cluster {
    rados: Rados,
    monitors: String,
    user: String,
    health: Health,
    /// When `rados_connect` succeeded: cephx checks the key and the caps only then (and at
    /// ticket renewal), so a client must not outlive a rotation by much (see
    /// [`super::Connections`]).
    connected_at: Instant,
    /// Read once: a connected client's fsid never changes.
    fsid: std::sync::OnceLock<String>,
}

/// Whether a client is still worth handing out, judged from the results of its operations.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Set once an operation showed this client can no longer work (key rotated, caps
    /// revoked, client blocklisted): the cache then connects afresh.
    poisoned: AtomicBool,
    /// Operations failed in a row for reasons other than the object itself.
    failing: AtomicU32,
}

impl Health {
    /// Records one result; true when it just poisoned the client.
    pub(crate) fn observe<T>(&self, r: &Result<T, CephError>) -> bool {
        match r {
            Ok(_) => self.failing.store(0, Ordering::Relaxed),
            Err(e) if e.poisons_client() => return !self.poisoned.swap(true, Ordering::Relaxed),
            // The object's own state (missing, busy, exists) says nothing about the client.
            Err(e) if e.is_not_found() || e.is_busy() || e.is_exists() => {}
            Err(_) => {
                self.failing.fetch_add(1, Ordering::Relaxed);
            }
        }
        false
    }

    pub(crate) fn healthy(&self) -> bool {
        !self.poisoned.load(Ordering::Relaxed)
            && self.failing.load(Ordering::Relaxed) < FAILING_LIMIT
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("monitors", &self.monitors)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects a new client (not cached: see [`super::Connections`]). Fails with
    /// [`CephError::Connect`] after at most about `timeouts.connect`.
    pub async fn connect(c: &Credentials, timeouts: Timeouts) -> Result<Arc<Cluster>, CephError> {
        let creds = c.clone();
        let monitors = creds.monitors.join(",");
        let user = creds.user.clone();
        let started = Instant::now();
        let job = tokio::task::spawn_blocking(move || Cluster::connect_blocking(&creds, &timeouts));
        match tokio::time::timeout(timeouts.connect + CONNECT_GRACE, job).await {
            Ok(joined) => joined
                .map_err(|e| CephError::Task(e.to_string()))?
                .map(Arc::new),
            Err(_) => Err(CephError::connect_failed(
                &monitors,
                &user,
                Errno(libc::ETIMEDOUT),
                millis(started.elapsed()),
            )),
        }
    }

    fn connect_blocking(c: &Credentials, t: &Timeouts) -> Result<Cluster, CephError> {
        let (rados, monitors, user) = configured(c, t)?;
        let started = Instant::now();
        let r = rados.connect();
        let elapsed = started.elapsed();
        if let Err(errno) = r {
            tracing::debug!(%monitors, %user, ?errno, ?elapsed, "ceph connect failed");
            return Err(CephError::connect_failed(
                &monitors,
                &user,
                errno,
                millis(elapsed),
            ));
        }
        tracing::debug!(%monitors, %user, ?elapsed, "ceph connected");
        Ok(Cluster {
            rados,
            monitors,
            user,
            health: Health::default(),
            connected_at: Instant::now(),
            fsid: std::sync::OnceLock::new(),
        })
    }

    /// The `mon_host` this client was configured with.
    pub fn monitors(&self) -> &str {
        &self.monitors
    }

    /// The cephx id (without "client.").
    pub fn user(&self) -> &str {
        &self.user
    }

    async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, CephError>
    where
        T: Send + 'static,
        F: FnOnce(&Arc<Cluster>) -> Result<T, CephError> + Send + 'static,
    {
        let me = Arc::clone(self);
        let r = tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| CephError::Task(e.to_string()))?;
        if self.health.observe(&r)
            && let Err(e) = &r
        {
            tracing::warn!(monitors = %self.monitors, user = %self.user, error = %e, "dropping this Ceph client; the next operation connects afresh");
        }
        r
    }

    /// How long ago this client authenticated.
    pub fn age(&self) -> Duration {
        self.connected_at.elapsed()
    }

    /// Whether the cache may hand this client out again: not poisoned, and not failing
    /// operation after operation (then a fresh connection is cheaper than more timeouts).
    pub fn healthy(&self) -> bool {
        self.health.healthy()
    }

    /// The Ceph cluster's fsid (e.g. `b3c3b4b4-…`), as `ceph fsid` prints it: what
    /// ceph-csi's `ceph-csi-config` is commonly keyed by as its `clusterID`.
    pub async fn fsid(self: &Arc<Self>) -> Result<String, CephError> {
        if let Some(f) = self.fsid.get() {
            return Ok(f.clone());
        }
        let fsid = self
            .run(|c| {
                c.rados
                    .fsid()
                    .map_err(|errno| CephError::fsid_failed(&c.monitors, errno))
            })
            .await?;
        Ok(self.fsid.get_or_init(|| fsid).clone())
    }

    /// Every address (v2 and v1) of the cluster's monitors, from its own monitor map
    /// (`ceph mon dump`): what `doctor` compares configured monitor lists with.
    pub async fn monitor_addresses(self: &Arc<Self>) -> Result<Vec<String>, CephError> {
        self.run(|c| {
            let failed = |errno| CephError::Cluster {
                op: "read the monitor map (mon dump)",
                monitors: c.monitors.clone(),
                errno,
            };
            let out = c
                .rados
                .mon_command(r#"{"prefix": "mon dump", "format": "json"}"#)
                .map_err(|(errno, _)| failed(errno))?;
            super::encoding::mon_addrs(&out).ok_or_else(|| failed(Errno(libc::EINVAL)))
        })
        .await
    }

    // ---- images -------------------------------------------------------------------------

    /// Creates a format-2 image with exactly `spec.features`. An existing image of that
    /// name gives `Ok(Created::AlreadyExisted)` and is not touched.
    pub async fn create_image(self: &Arc<Self>, spec: &ImageSpec) -> Result<Created, CephError> {
        let spec = spec.clone();
        self.run(move |c| {
            let io = c.rados.ioctx(&spec.pool)?;
            let err = |e| img_err(Op::Create, &spec.pool, &spec.name, e);
            let opts = ImageOptions::for_new_image(spec.features, spec.data_pool.as_deref(), None)
                .map_err(err)?;
            let started = Instant::now();
            let r = io.create(&spec.name, spec.size, &opts);
            tracing::debug!(pool = %spec.pool, image = %spec.name, ?r, elapsed = ?started.elapsed(), "rbd_create4");
            r.map_err(err)
        })
        .await
    }

    /// Sets image-meta keys in one OSD operation and without opening the image: a read/write
    /// open registers a watch, and librbd sends one header-update notification per key, which
    /// made stamping cost several times the create. Clients that have the image open are not
    /// told, so only for keys none of them reads (ours).
    pub async fn set_metadata_unopened(
        self: &Arc<Self>,
        pool: &str,
        name: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<(), CephError> {
        let (pool, name) = (pool.to_string(), name.to_string());
        self.run(move |c| {
            let io = c.rados.ioctx(&pool)?;
            let err = |e| img_err(Op::SetMetadata, &pool, &name, e);
            let id = io.image_id(&name).map_err(err)?;
            io.set_metadata_unopened(&id, &pairs).map_err(err)
        })
        .await
    }

    /// The given image-meta keys of an image in the trash, by its trash id.
    pub async fn trash_metadata(
        self: &Arc<Self>,
        pool: &str,
        id: &str,
        keys: &'static [&'static str],
    ) -> Result<BTreeMap<String, String>, CephError> {
        let id = id.to_string();
        self.in_image(pool, &trash_label(&id), move |_, io, at| {
            let img = io.open_by_id(&id).map_err(at.err(Op::Open))?;
            img.metadata_many(keys).map_err(at.err(Op::ReadMetadata))
        })
        .await
    }

    /// The given image-meta keys and the size of an image in the trash, by its trash id.
    pub async fn trash_image(
        self: &Arc<Self>,
        pool: &str,
        id: &str,
        keys: &'static [&'static str],
    ) -> Result<(BTreeMap<String, String>, u64), CephError> {
        let id = id.to_string();
        self.in_image(pool, &trash_label(&id), move |_, io, at| {
            let img = io.open_by_id(&id).map_err(at.err(Op::Open))?;
            let meta = img.metadata_many(keys).map_err(at.err(Op::ReadMetadata))?;
            let size = img.size().map_err(at.err(Op::GetSize))?;
            Ok((meta, size))
        })
        .await
    }

    /// Images in the pool's trash.
    pub async fn trash_list(self: &Arc<Self>, pool: &str) -> Result<Vec<TrashEntry>, CephError> {
        self.in_pool(pool, |_, io, pool| {
            io.trash_list()
                .map_err(|e| pool_err(Op::TrashList, pool, e))
        })
        .await
    }

    /// Deletes a trashed image by id. `force` ignores its deferment time. A missing id is
    /// `Ok(Removed::AlreadyGone)`.
    pub async fn trash_remove(
        self: &Arc<Self>,
        pool: &str,
        id: &str,
        force: bool,
    ) -> Result<Removed, CephError> {
        let id = id.to_string();
        self.in_image(pool, &trash_label(&id), move |_, io, at| {
            io.trash_remove(&id, force).map_err(at.err(Op::TrashRemove))
        })
        .await
    }

    /// Names of the images in a pool (`rbd_list2`; trashed images are not listed).
    pub async fn list_images(self: &Arc<Self>, pool: &str) -> Result<Vec<String>, CephError> {
        self.in_pool(pool, |_, io, pool| {
            io.list().map_err(|e| pool_err(Op::ListImages, pool, e))
        })
        .await
    }

    /// Runs `f` on a blocking thread with an I/O context on `pool`.
    async fn in_pool<T, F>(self: &Arc<Self>, pool: &str, f: F) -> Result<T, CephError>
    where
        T: Send + 'static,
        F: FnOnce(&Arc<Cluster>, IoCtx<'_>, &str) -> Result<T, CephError> + Send + 'static,
    {
        let pool = pool.to_string();
        self.run(move |c| {
            let io = c.rados.ioctx(&pool)?;
            f(c, io, &pool)
        })
        .await
    }

    /// [`Self::in_pool`] for work on one image, which errors name.
    async fn in_image<T, F>(self: &Arc<Self>, pool: &str, image: &str, f: F) -> Result<T, CephError>
    where
        T: Send + 'static,
        F: FnOnce(&Arc<Cluster>, IoCtx<'_>, At<'_>) -> Result<T, CephError> + Send + 'static,
    {
        let image = image.to_string();
        self.in_pool(pool, move |c, io, pool| {
            let at = At {
                pool,
                image: &image,
            };
            f(c, io, at)
        })
        .await
    }

    /// The id of a pool (from the OSD map this client holds: no request). A pool renamed and
    /// replaced by a new one of the same name has another id.
    pub async fn pool_id(self: &Arc<Self>, pool: &str) -> Result<i64, CephError> {
        self.in_pool(pool, |_, io, _| Ok(io.id())).await
    }

    /// When a pool was created (Unix seconds), from the OSD map (`ceph osd pool ls detail`);
    /// `None` when the cluster does not say.
    pub async fn pool_created(self: &Arc<Self>, pool: &str) -> Result<Option<i64>, CephError> {
        let pool = pool.to_string();
        self.run(move |c| {
            let out = c
                .rados
                .mon_command(r#"{"prefix": "osd pool ls", "detail": "detail", "format": "json"}"#)
                .map_err(|(errno, _)| pool_err(Op::PoolInfo, &pool, errno))?;
            Ok(super::encoding::pool_create_time(&out, &pool))
        })
        .await
    }

    /// A pool's quotas and what it holds (`ceph osd pool get-quota`), to say which quota a
    /// write that failed with EDQUOT ran into.
    pub async fn pool_quota(self: &Arc<Self>, pool: &str) -> Result<PoolQuota, CephError> {
        let pool = pool.to_string();
        self.run(move |c| {
            let cmd =
                serde_json::json!({"prefix": "osd pool get-quota", "pool": pool, "format": "json"});
            let out = c
                .rados
                .mon_command(&cmd.to_string())
                .map_err(|(errno, _)| pool_err(Op::PoolInfo, &pool, errno))?;
            super::encoding::pool_quota(&out)
                .ok_or_else(|| pool_err(Op::PoolInfo, &pool, Errno(libc::EINVAL)))
        })
        .await
    }

    /// Sets omap pairs on object `oid` of `pool` (created if missing), in one operation.
    pub async fn records_set(
        self: &Arc<Self>,
        pool: &str,
        oid: &'static str,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), CephError> {
        self.in_pool(pool, move |_, io, pool| {
            io.omap_set(oid, &pairs)
                .map_err(|e| pool_err(Op::WriteRecords, pool, e))
        })
        .await
    }

    /// Removes omap keys from object `oid` of `pool`.
    pub async fn records_remove(
        self: &Arc<Self>,
        pool: &str,
        oid: &'static str,
        keys: Vec<String>,
    ) -> Result<(), CephError> {
        self.in_pool(pool, move |_, io, pool| {
            io.omap_remove(oid, &keys)
                .map_err(|e| pool_err(Op::WriteRecords, pool, e))
        })
        .await
    }

    /// Every omap pair of object `oid` of `pool` (none when it does not exist).
    pub async fn records(
        self: &Arc<Self>,
        pool: &str,
        oid: &'static str,
    ) -> Result<Vec<(String, Vec<u8>)>, CephError> {
        self.in_pool(pool, move |_, io, pool| {
            io.omap_list(oid)
                .map_err(|e| pool_err(Op::ReadRecords, pool, e))
        })
        .await
    }

    /// The applications enabled on a pool (`rbd` once `rbd pool init` has run).
    pub async fn pool_applications(self: &Arc<Self>, pool: &str) -> Result<Vec<String>, CephError> {
        let pool = pool.to_string();
        self.run(move |c| {
            let io = c.rados.ioctx(&pool)?;
            io.applications()
                .map_err(|e| pool_err(Op::ListApplications, &pool, e))
        })
        .await
    }

    /// Runs `f` on an image opened read-only or read/write; errors name the image and `op`.
    async fn with_image<T, F>(
        self: &Arc<Self>,
        pool: &str,
        name: &str,
        read_only: bool,
        op: Op,
        f: F,
    ) -> Result<T, CephError>
    where
        T: Send + 'static,
        F: FnOnce(&super::handles::Image<'_>) -> Result<T, Errno> + Send + 'static,
    {
        self.in_image(pool, name, move |_, io, at| {
            let img = io.open(at.image, read_only).map_err(at.err(Op::Open))?;
            f(&img).map_err(at.err(op))
        })
        .await
    }

    // ---- snapshots and clones -----------------------------------------------------------

    /// Runs `f` on an image opened read/write with the snapshot's name; errors name the
    /// snapshot and `op`.
    async fn with_snap<T: Send + 'static>(
        self: &Arc<Self>,
        pool: &str,
        image: &str,
        snap: &str,
        op: Op,
        f: fn(&super::handles::Image<'_>, &std::ffi::CStr) -> Result<T, Errno>,
    ) -> Result<T, CephError> {
        let snap = snap.to_string();
        self.in_image(pool, image, move |_, io, at| {
            let c_snap = cstr("snapshot name", &snap)?;
            let img = io.open(at.image, false).map_err(at.err(Op::Open))?;
            f(&img, &c_snap)
                .map_err(|errno| CephError::snapshot_op(op, at.pool, at.image, &snap, errno))
        })
        .await
    }

    /// Runs `f` on an image opened read-only and set to the snapshot; a missing image fails as
    /// an [`Op::Open`] of it, anything after as `op` of the snapshot.
    async fn at_snap<T: Send + 'static>(
        self: &Arc<Self>,
        pool: &str,
        image: &str,
        snap: &str,
        op: Op,
        f: fn(&super::handles::Image<'_>) -> Result<T, Errno>,
    ) -> Result<T, CephError> {
        let snap = snap.to_string();
        self.in_image(pool, image, move |_, io, at| {
            let c_snap = cstr("snapshot name", &snap)?;
            // Not opened with the snapshot's name: then a missing snapshot would read as a
            // missing image.
            let img = io.open(at.image, true).map_err(at.err(Op::Open))?;
            let err = |errno| CephError::snapshot_op(op, at.pool, at.image, &snap, errno);
            img.snap_set(&c_snap).map_err(err)?;
            f(&img).map_err(err)
        })
        .await
    }

    /// Clones `parent@snap` (which must be protected for format 1) into a new image.
    pub async fn clone_image(self: &Arc<Self>, spec: &CloneSpec) -> Result<Created, CephError> {
        let s = spec.clone();
        self.run(move |c| {
            let parent = s.parent.to_string();
            let err = |errno: Errno| CephError::clone_failed(&parent, &s.pool, &s.name, errno);
            let p_io = c.rados.ioctx(&s.parent.pool)?;
            let c_io = c.rados.ioctx(&s.pool)?;
            let opts =
                ImageOptions::for_new_image(s.features, s.data_pool.as_deref(), s.clone_format)
                    .map_err(err)?;
            p_io.clone_into(&s.parent.image, &s.parent.snap, &c_io, &s.name, &opts)
                .map_err(err)
        })
        .await
    }
}

/// The image an operation works on, for its errors.
#[derive(Clone, Copy)]
struct At<'a> {
    pool: &'a str,
    image: &'a str,
}

impl<'a> At<'a> {
    /// Maps a librbd failure of `op` to an error naming this image.
    fn err(self, op: Op) -> impl Fn(Errno) -> CephError + 'a {
        move |e| img_err(op, self.pool, self.image, e)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

mod image_ops;
#[cfg(test)]
mod tests;
