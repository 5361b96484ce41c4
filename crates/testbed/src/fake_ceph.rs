//! A scripted, in-memory Ceph for unit tests of the controllers: [`FakeCeph`] implements
//! [`RbdCluster`] and [`FakeConnector`] implements [`Connector`], so a reconciler can run
//! without a cluster and a test can assert what it did to Ceph (and what it did not).
//!
//! It keeps pools (id, creation time, quota, applications, omap objects), images (size,
//! features, id, data pool, image-meta, parent, snapshots with protection, watchers) and a
//! trash (ids, deferment). Its answers are librbd's as [`ceph::Cluster`] reports them, down
//! to the error variant, the operation named in it and its hint; `tests/ceph_contract.rs`
//! runs the same scenarios against this and a real cluster and compares the results.
//!
//! Scripting:
//! * [`FakeCeph::inject`] makes calls fail (an errno, on every call, the n-th, or the first
//!   n; before or after taking effect) or take time ([`Fault`]);
//! * [`FakeCeph::calls`] is the log of every call made through the trait ([`Call`]);
//! * [`FakeCeph::hold_open`] makes a watcher, as a node that mapped the image;
//! * [`FakeCeph::advance`] moves the cluster's clock (trash deferment);
//! * [`FakeCeph::half_made`] and [`FakeCeph::interrupt_trash_move`] leave what a process
//!   killed inside `rbd_create4` or `rbd_trash_move` leaves;
//! * [`FakeCeph::set_quota`] puts a pool at its quota;
//! * [`FakeConnector`] refuses or times out connects on demand.
//!
//! Not modelled: image data and what follows from it (object and byte counts: the quota
//! figures are the test's), exclusive-lock ownership, object-map, journaling and mirroring,
//! groups, migration, namespaces, renames, trash restore, format 1 images; striping and
//! object sizes (4 MiB, a clone's its parent's); clone format 2 beyond "needs no protection"
//! (removing a snapshot that has such clones is refused with EBUSY where librbd moves the
//! snapshot to the trash namespace; `clone_format: None` is taken as 1); watches that expire
//! (`osd_client_watch_timeout`): a watcher goes when its guard is dropped; conflicts between
//! concurrent calls (two removals of one trash entry); the clients' health (errors never
//! make the connector replace a client, and clients do not age); the `conf_*` image-meta
//! keys librbd checks; NUL bytes in image names. The interrupted trash move follows librbd's
//! source; everything else is checked against a real cluster by the contract test.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ceph::{
    CephError, CloneSpec, Connector, Created, Credentials, Errno, ImageInfo, ImageSpec, Op,
    ParentSpec, PoolQuota, RBD_FEATURE_DATA_POOL, RBD_FEATURE_EXCLUSIVE_LOCK,
    RBD_FEATURE_FAST_DIFF, RBD_FEATURE_JOURNALING, RBD_FEATURE_LAYERING, RBD_FEATURE_OBJECT_MAP,
    RbdCluster, Removed, SnapInfo, Timeouts, TrashEntry, Watcher, async_trait,
};

/// librbd's default object size (`rbd_default_order` 22).
const OBJECT_SIZE: u64 = 4 << 20;

/// `RBD_FEATURE_STRIPINGV2`.
const RBD_FEATURE_STRIPINGV2: u64 = 1 << 1;
/// The features librbd (Pacific) knows; a create asking for others fails with ENOSYS.
const KNOWN_FEATURES: u64 = 0xfff;
/// What librbd sets itself and clears from a create's request: striping v2 (with the default
/// layout), data-pool (set again with a data pool), operations, migrating, non-primary,
/// dirty-cache.
const IMPLICIT_FEATURES: u64 = RBD_FEATURE_STRIPINGV2 | RBD_FEATURE_DATA_POOL | 0xf00;

/// A method of [`RbdCluster`], as the call log and [`Fault`]s name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Fsid,
    PoolId,
    PoolCreated,
    PoolQuota,
    PoolApplications,
    ListImages,
    RecordsSet,
    RecordsRemove,
    Records,
    CreateImage,
    CloneImage,
    ImageInfo,
    Resize,
    RemoveImage,
    Watchers,
    Flatten,
    SetMetadata,
    SetMetadataUnopened,
    Metadata,
    SnapCreate,
    SnapProtect,
    SnapUnprotect,
    SnapRemove,
    SnapList,
    TrashMove,
    TrashList,
    TrashRemove,
    TrashMetadata,
    TrashImage,
}

impl Method {
    /// The trait method's name (`trash_move`).
    pub fn name(self) -> &'static str {
        match self {
            Method::Fsid => "fsid",
            Method::PoolId => "pool_id",
            Method::PoolCreated => "pool_created",
            Method::PoolQuota => "pool_quota",
            Method::PoolApplications => "pool_applications",
            Method::ListImages => "list_images",
            Method::RecordsSet => "records_set",
            Method::RecordsRemove => "records_remove",
            Method::Records => "records",
            Method::CreateImage => "create_image",
            Method::CloneImage => "clone_image",
            Method::ImageInfo => "image_info",
            Method::Resize => "resize",
            Method::RemoveImage => "remove_image",
            Method::Watchers => "watchers",
            Method::Flatten => "flatten",
            Method::SetMetadata => "set_metadata",
            Method::SetMetadataUnopened => "set_metadata_unopened",
            Method::Metadata => "metadata",
            Method::SnapCreate => "snap_create",
            Method::SnapProtect => "snap_protect",
            Method::SnapUnprotect => "snap_unprotect",
            Method::SnapRemove => "snap_remove",
            Method::SnapList => "snap_list",
            Method::TrashMove => "trash_move",
            Method::TrashList => "trash_list",
            Method::TrashRemove => "trash_remove",
            Method::TrashMetadata => "trash_metadata",
            Method::TrashImage => "trash_image",
        }
    }

    /// Whether the method changes the cluster (what "did nothing" assertions look for).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Method::RecordsSet
                | Method::RecordsRemove
                | Method::CreateImage
                | Method::CloneImage
                | Method::Resize
                | Method::RemoveImage
                | Method::Flatten
                | Method::SetMetadata
                | Method::SetMetadataUnopened
                | Method::SnapCreate
                | Method::SnapProtect
                | Method::SnapUnprotect
                | Method::SnapRemove
                | Method::TrashMove
                | Method::TrashRemove
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One call made through [`RbdCluster`], logged when it returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub method: Method,
    /// Empty for [`Method::Fsid`].
    pub pool: String,
    /// What the call was about: the image's name (the new one for `clone_image`), the trash
    /// id for `trash_remove`, `trash_metadata` and `trash_image`, the object for the omap
    /// records; empty for calls on a whole pool.
    pub image: String,
    /// The snapshot of the `snap_*` calls; the parent (`pool/image@snap`) of `clone_image`.
    pub snap: Option<String>,
    /// `None` when the call succeeded; else the errno it failed with (0 for errors without
    /// one, such as [`CephError::ShrinkRefused`]).
    pub errno: Option<i32>,
}

impl Call {
    pub fn ok(&self) -> bool {
        self.errno.is_none()
    }

    /// Whether this call is `method` on `pool/image`.
    pub fn is(&self, method: Method, pool: &str, image: &str) -> bool {
        self.method == method && self.pool == pool && self.image == image
    }
}

/// `trash_move kube/pvc-1 (EBUSY)`.
impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.pool)?;
        if !self.image.is_empty() {
            write!(f, "/{}", self.image)?;
        }
        if let Some(s) = &self.snap {
            write!(f, "@{s}")?;
        }
        match self.errno {
            None => Ok(()),
            Some(0) => f.write_str(" (failed)"),
            Some(e) => write!(f, " ({})", Errno(e).name()),
        }
    }
}

/// Which of the matching calls a [`Fault`] hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum When {
    Every,
    Nth(u32),
    FirstN(u32),
}

type MakeError = Arc<dyn Fn(&Call) -> CephError + Send + Sync>;

/// A scripted misbehaviour of the fake: calls of one method (optionally only on one pool or
/// image) fail with an errno or a given error, and/or take time. Counting starts when the
/// fault is injected. Build with [`Fault::on`], then [`FakeCeph::inject`] it:
///
/// ```ignore
/// fake.inject(Fault::on(Method::TrashMove).errno(libc::EBUSY));             // every call
/// fake.inject(Fault::on(Method::CreateImage).nth(2).errno(libc::ETIMEDOUT)); // the 2nd only
/// fake.inject(Fault::on(Method::CreateImage).errno(libc::ETIMEDOUT).after_effect());
/// fake.inject(Fault::on(Method::Flatten).delay(Duration::from_secs(600)));
/// ```
#[derive(Clone)]
pub struct Fault {
    method: Method,
    pool: Option<String>,
    image: Option<String>,
    when: When,
    errno: Option<i32>,
    error: Option<MakeError>,
    after_effect: bool,
    delay: Option<Duration>,
    seen: u32,
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fault")
            .field("method", &self.method)
            .field("pool", &self.pool)
            .field("image", &self.image)
            .field("when", &self.when)
            .field("errno", &self.errno)
            .field("after_effect", &self.after_effect)
            .field("delay", &self.delay)
            .finish_non_exhaustive()
    }
}

impl Fault {
    /// Every call of `method` (narrow with [`Fault::nth`], [`Fault::times`], [`Fault::pool`],
    /// [`Fault::image`]).
    pub fn on(method: Method) -> Fault {
        Fault {
            method,
            pool: None,
            image: None,
            when: When::Every,
            errno: None,
            error: None,
            after_effect: false,
            delay: None,
            seen: 0,
        }
    }

    /// Only calls on this pool.
    pub fn pool(mut self, pool: &str) -> Fault {
        self.pool = Some(pool.into());
        self
    }

    /// Only calls about this image (or trash id, or omap object: [`Call::image`]).
    pub fn image(mut self, image: &str) -> Fault {
        self.image = Some(image.into());
        self
    }

    /// Only the n-th matching call (1 is the next one).
    pub fn nth(mut self, n: u32) -> Fault {
        self.when = When::Nth(n);
        self
    }

    /// Only the next n matching calls.
    pub fn times(mut self, n: u32) -> Fault {
        self.when = When::FirstN(n);
        self
    }

    /// Fail with this errno, in the error the real operation fails with (its variant, its
    /// [`Op`] and hint; see [`default_error`]).
    pub fn errno(mut self, errno: i32) -> Fault {
        self.errno = Some(errno);
        self
    }

    /// Fail with the error `make` builds for the call (e.g. an [`Op::Open`] failure).
    pub fn error(mut self, make: impl Fn(&Call) -> CephError + Send + Sync + 'static) -> Fault {
        self.error = Some(Arc::new(make));
        self
    }

    /// The operation takes effect and then the call fails: a reply lost to a timeout. (A
    /// call that fails by itself keeps its own error.)
    pub fn after_effect(mut self) -> Fault {
        self.after_effect = true;
        self
    }

    /// The call takes this long (on tokio's clock, so a paused test clock skips it) before
    /// it does anything.
    pub fn delay(mut self, d: Duration) -> Fault {
        self.delay = Some(d);
        self
    }

    fn matches(&self, call: &Call) -> bool {
        self.method == call.method
            && self.pool.as_ref().is_none_or(|p| *p == call.pool)
            && self.image.as_ref().is_none_or(|i| *i == call.image)
    }

    /// Counts a matching call; whether the fault hits it.
    fn hits(&mut self) -> bool {
        self.seen += 1;
        match self.when {
            When::Every => true,
            When::Nth(n) => self.seen == n,
            When::FirstN(n) => self.seen <= n,
        }
    }
}

/// The error the real [`ceph::Cluster`] method fails with when librbd answers `errno` to
/// its main call: what a [`Fault`] with [`Fault::errno`] returns.
pub fn default_error(call: &Call, monitors: &str, errno: i32) -> CephError {
    let e = Errno(errno);
    let (pool, image) = (call.pool.as_str(), call.image.as_str());
    let snap = call.snap.as_deref().unwrap_or_default();
    match call.method {
        Method::Fsid => CephError::fsid_failed(monitors, e),
        Method::PoolId => CephError::pool_open(pool, e),
        Method::PoolCreated | Method::PoolQuota => CephError::pool_op(Op::PoolInfo, pool, e),
        Method::PoolApplications => CephError::pool_op(Op::ListApplications, pool, e),
        Method::ListImages => CephError::pool_op(Op::ListImages, pool, e),
        Method::RecordsSet | Method::RecordsRemove => CephError::pool_op(Op::WriteRecords, pool, e),
        Method::Records => CephError::pool_op(Op::ReadRecords, pool, e),
        Method::TrashList => CephError::pool_op(Op::TrashList, pool, e),
        Method::CreateImage => CephError::image_op(Op::Create, pool, image, e),
        Method::CloneImage => CephError::clone_failed(snap, pool, image, e),
        Method::ImageInfo => CephError::image_op(Op::Stat, pool, image, e),
        Method::Resize => CephError::image_op(Op::Resize, pool, image, e),
        Method::RemoveImage => CephError::image_op(Op::Remove, pool, image, e),
        Method::Watchers => CephError::image_op(Op::ListWatchers, pool, image, e),
        Method::Flatten => CephError::image_op(Op::Flatten, pool, image, e),
        Method::SetMetadata | Method::SetMetadataUnopened => {
            CephError::image_op(Op::SetMetadata, pool, image, e)
        }
        Method::Metadata => CephError::image_op(Op::ReadMetadata, pool, image, e),
        Method::SnapList => CephError::image_op(Op::ListSnapshots, pool, image, e),
        Method::TrashMove => CephError::image_op(Op::TrashMove, pool, image, e),
        Method::SnapCreate => CephError::snapshot_op(Op::SnapshotCreate, pool, image, snap, e),
        Method::SnapProtect => CephError::snapshot_op(Op::SnapshotProtect, pool, image, snap, e),
        Method::SnapUnprotect => {
            CephError::snapshot_op(Op::SnapshotUnprotect, pool, image, snap, e)
        }
        Method::SnapRemove => CephError::snapshot_op(Op::SnapshotRemove, pool, image, snap, e),
        Method::TrashRemove => CephError::trash_op(Op::TrashRemove, pool, image, e),
        Method::TrashMetadata | Method::TrashImage => {
            CephError::trash_op(Op::ReadMetadata, pool, image, e)
        }
    }
}

/// An image as the fake holds it: for inspection by tests ([`FakeCeph::image`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeImage {
    pub id: String,
    pub size: u64,
    pub obj_size: u64,
    pub features: u64,
    /// Pool holding the data objects, when not the image's own.
    pub data_pool: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The snapshot it was cloned from, by name as [`RbdCluster::image_info`] reports it.
    pub parent: Option<ParentSpec>,
    pub snapshots: Vec<SnapInfo>,
    pub watchers: Vec<Watcher>,
}

/// A parent by identity (pool, image id, snapshot id), as librbd keeps it: names are looked
/// up when reported.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ParentRef {
    pool: String,
    image_id: String,
    snap_id: u64,
}

#[derive(Clone, Debug)]
struct Snap {
    id: u64,
    name: String,
    size: u64,
    protected: bool,
}

#[derive(Clone, Debug)]
struct Img {
    id: String,
    size: u64,
    obj_size: u64,
    features: u64,
    data_pool_id: i64,
    meta: BTreeMap<String, String>,
    parent: Option<ParentRef>,
    snaps: Vec<Snap>,
    watchers: Vec<Watcher>,
    /// False for what a process killed inside `rbd_create4` leaves: the name taken (directory
    /// entry, id object), no header, so every open fails with ENOENT.
    header: bool,
}

#[derive(Clone, Debug)]
struct Trashed {
    name: String,
    img: Img,
    deletion_time: i64,
    deferment_end_time: i64,
    /// Left "moving" by a process killed inside `rbd_trash_move`: removal fails with
    /// EUCLEAN until a trash move of the name finishes it.
    moving: bool,
}

#[derive(Clone, Debug)]
struct Pool {
    id: i64,
    created: Option<i64>,
    quota: PoolQuota,
    applications: Vec<String>,
    /// The directory: images by name (the trash holds the others).
    images: BTreeMap<String, Img>,
    /// By trash id (the image's id).
    trash: BTreeMap<String, Trashed>,
    /// Omap objects.
    objects: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// Whether the pool's trash object (`rbd_trash`) exists: made by the first trash move
    /// (`rbd_remove` goes through the trash too), never removed.
    trash_object: bool,
}

impl Pool {
    /// Whether the pool is at its quota (by the figures it was given): then the OSDs refuse
    /// with EDQUOT what would add objects or bytes, and let omap-only writes and removals
    /// pass.
    fn over_quota(&self) -> bool {
        self.quota.reached().is_some()
    }

    /// A trash move at the quota cannot make the trash object; librbd then fails to reset
    /// the entry it could not add, with ENOENT, and the caller reads "already gone" while the
    /// image stays where it was (measured; see `tests/ceph_contract.rs`).
    fn trash_unwritable(&self) -> bool {
        self.over_quota() && !self.trash_object
    }

    /// An image by id, in the directory or the trash.
    fn by_id(&self, id: &str) -> Option<&Img> {
        self.images
            .values()
            .find(|i| i.id == id)
            .or_else(|| self.trash.get(id).map(|t| &t.img))
    }

    fn by_id_mut(&mut self, id: &str) -> Option<&mut Img> {
        if let Some(i) = self.images.values_mut().find(|i| i.id == id) {
            return Some(i);
        }
        self.trash.get_mut(id).map(|t| &mut t.img)
    }

    /// The name an image id is reported under: its directory entry, else its trash entry's.
    fn name_of(&self, id: &str) -> Option<String> {
        self.images
            .iter()
            .find(|(_, i)| i.id == id)
            .map(|(n, _)| n.clone())
            .or_else(|| self.trash.get(id).map(|t| t.name.clone()))
    }
}

struct State {
    fsid: String,
    pools: BTreeMap<String, Pool>,
    next_pool_id: i64,
    next_image: u64,
    next_snap_id: u64,
    next_watch: u64,
    clock_offset: i64,
    faults: Vec<Fault>,
    calls: Vec<Call>,
}

/// The scripted cluster. Clones share one cluster (as `Arc<Cluster>` clones do).
#[derive(Clone)]
pub struct FakeCeph {
    monitors: Arc<str>,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for FakeCeph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeCeph")
            .field("monitors", &self.monitors)
            .finish_non_exhaustive()
    }
}

impl Default for FakeCeph {
    fn default() -> Self {
        FakeCeph::new()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn enoent() -> Errno {
    Errno(libc::ENOENT)
}

/// The features a new image gets for those asked, as `rbd_create4`/`rbd_clone3` decide
/// (measured with Pacific, see `tests/ceph_contract.rs`): unknown ones are ENOSYS, object-map
/// or journaling without exclusive-lock EINVAL; implicit ones and fast-diff without
/// object-map are silently dropped.
fn new_features(asked: u64) -> Result<u64, Errno> {
    if asked & !KNOWN_FEATURES != 0 {
        return Err(Errno(libc::ENOSYS));
    }
    let needs = |f: u64, dep: u64| asked & f != 0 && asked & dep == 0;
    if needs(RBD_FEATURE_OBJECT_MAP, RBD_FEATURE_EXCLUSIVE_LOCK)
        || needs(RBD_FEATURE_JOURNALING, RBD_FEATURE_EXCLUSIVE_LOCK)
    {
        return Err(Errno(libc::EINVAL));
    }
    let mut features = asked & !IMPLICIT_FEATURES;
    if features & RBD_FEATURE_OBJECT_MAP == 0 {
        features &= !RBD_FEATURE_FAST_DIFF;
    }
    Ok(features)
}

/// The NUL check the real code makes on pool names before any call.
fn check_pool_name(pool: &str) -> Result<(), CephError> {
    if pool.contains('\0') {
        return Err(CephError::InvalidArgument {
            what: "pool",
            reason: format!("{pool:?} contains a NUL byte"),
        });
    }
    Ok(())
}

fn check_snap_name(snap: &str) -> Result<(), CephError> {
    if snap.contains('\0') {
        return Err(CephError::InvalidArgument {
            what: "snapshot name",
            reason: format!("{snap:?} contains a NUL byte"),
        });
    }
    Ok(())
}

impl State {
    fn now(&self) -> i64 {
        unix_now() + self.clock_offset
    }

    fn pool(&self, pool: &str) -> Result<&Pool, CephError> {
        check_pool_name(pool)?;
        self.pools
            .get(pool)
            .ok_or_else(|| CephError::pool_open(pool, enoent()))
    }

    fn pool_mut(&mut self, pool: &str) -> Result<&mut Pool, CephError> {
        check_pool_name(pool)?;
        self.pools
            .get_mut(pool)
            .ok_or_else(|| CephError::pool_open(pool, enoent()))
    }

    /// The image `pool/name`, opened: ENOENT (as `op`, usually [`Op::Open`]) when the name
    /// is not in the directory or has no header.
    fn open(&self, pool: &str, name: &str, op: Op) -> Result<&Img, CephError> {
        self.pool(pool)?
            .images
            .get(name)
            .filter(|i| i.header)
            .ok_or_else(|| CephError::image_op(op, pool, name, enoent()))
    }

    fn open_mut(&mut self, pool: &str, name: &str) -> Result<&mut Img, CephError> {
        self.pool_mut(pool)?
            .images
            .get_mut(name)
            .filter(|i| i.header)
            .ok_or_else(|| CephError::image_op(Op::Open, pool, name, enoent()))
    }

    /// The parent as `rbd_get_parent` names it.
    fn parent_spec(&self, p: &ParentRef) -> Option<ParentSpec> {
        let pool = self.pools.get(&p.pool)?;
        let image = pool.name_of(&p.image_id)?;
        let snap = pool
            .by_id(&p.image_id)?
            .snaps
            .iter()
            .find(|s| s.id == p.snap_id)?
            .name
            .clone();
        Some(ParentSpec {
            pool: p.pool.clone(),
            image,
            snap,
        })
    }

    /// Whether any image, in any pool's directory or trash, is a clone of this snapshot.
    fn has_children(&self, parent: &ParentRef) -> bool {
        self.pools.values().any(|p| {
            p.images
                .values()
                .chain(p.trash.values().map(|t| &t.img))
                .any(|i| i.parent.as_ref() == Some(parent))
        })
    }

    fn pool_name_of_id(&self, id: i64) -> Option<String> {
        self.pools
            .iter()
            .find(|(_, p)| p.id == id)
            .map(|(n, _)| n.clone())
    }

    fn new_image_id(&mut self) -> String {
        self.next_image += 1;
        // librbd ids are hex strings of about twelve digits.
        format!("fa{:010x}", self.next_image)
    }

    fn new_image(&mut self, size: u64, features: u64, data_pool_id: i64) -> Img {
        Img {
            id: self.new_image_id(),
            size,
            obj_size: OBJECT_SIZE,
            features,
            data_pool_id,
            meta: BTreeMap::new(),
            parent: None,
            snaps: Vec::new(),
            watchers: Vec::new(),
            header: true,
        }
    }

    /// The data pool's id for a new image in `pool`, and the features with
    /// `RBD_FEATURE_DATA_POOL` added when it is another pool. A missing data pool is ENOENT.
    fn data_pool(
        &self,
        pool: &str,
        data_pool: Option<&str>,
        features: u64,
    ) -> Result<(i64, u64), Errno> {
        let own = self.pools.get(pool).map(|p| p.id).unwrap_or(-1);
        match data_pool {
            None => Ok((own, features)),
            Some(dp) => {
                let id = self.pools.get(dp).ok_or(enoent())?.id;
                if id == own {
                    Ok((own, features))
                } else {
                    Ok((id, features | RBD_FEATURE_DATA_POOL))
                }
            }
        }
    }

    fn info(&self, pool: &str, img: &Img) -> ImageInfo {
        let own = self.pools.get(pool).map(|p| p.id).unwrap_or(-1);
        ImageInfo {
            size: img.size,
            obj_size: img.obj_size,
            features: img.features,
            old_format: false,
            id: img.id.clone(),
            data_pool_id: img.data_pool_id,
            data_pool: (img.data_pool_id != own).then(|| {
                self.pool_name_of_id(img.data_pool_id)
                    .unwrap_or_else(|| format!("#{}", img.data_pool_id))
            }),
            parent: img.parent.as_ref().and_then(|p| self.parent_spec(p)),
        }
    }

    fn public(&self, pool: &str, img: &Img) -> FakeImage {
        let info = self.info(pool, img);
        FakeImage {
            id: img.id.clone(),
            size: img.size,
            obj_size: img.obj_size,
            features: img.features,
            data_pool: info.data_pool,
            metadata: img.meta.clone(),
            parent: info.parent,
            snapshots: img.snaps.iter().map(snap_info).collect(),
            watchers: img.watchers.clone(),
        }
    }

    // ---- the operations, as librbd does them ---------------------------------------------

    fn create_image(&mut self, spec: &ImageSpec) -> Result<Created, CephError> {
        let err = |e| CephError::image_op(Op::Create, &spec.pool, &spec.name, e);
        self.pool(&spec.pool)?;
        let features = new_features(spec.features).map_err(err)?;
        let (data_pool_id, features) = self
            .data_pool(&spec.pool, spec.data_pool.as_deref(), features)
            .map_err(err)?;
        let pool = self.pool(&spec.pool)?;
        if pool.images.contains_key(&spec.name) {
            return Ok(Created::AlreadyExisted);
        }
        if pool.over_quota() {
            return Err(err(Errno(libc::EDQUOT)));
        }
        let img = self.new_image(spec.size, features, data_pool_id);
        self.pool_mut(&spec.pool)?
            .images
            .insert(spec.name.clone(), img);
        Ok(Created::New)
    }

    fn clone_image(&mut self, s: &CloneSpec) -> Result<Created, CephError> {
        let parent = s.parent.to_string();
        let err = |e| CephError::clone_failed(&parent, &s.pool, &s.name, e);
        self.pool(&s.parent.pool)?;
        self.pool(&s.pool)?;
        let features = new_features(s.features).map_err(err)?;
        if features & RBD_FEATURE_LAYERING == 0 {
            return Err(err(Errno(libc::ENOSYS)));
        }
        let (size, obj_size, meta, parent_ref) = {
            let p = self
                .pool(&s.parent.pool)?
                .images
                .get(&s.parent.image)
                .filter(|i| i.header)
                .ok_or_else(|| err(enoent()))?;
            let snap = p
                .snaps
                .iter()
                .find(|x| x.name == s.parent.snap)
                .ok_or_else(|| err(enoent()))?;
            if p.features & RBD_FEATURE_LAYERING == 0 {
                return Err(err(Errno(libc::ENOSYS)));
            }
            // Format 1 needs the snapshot protected; 2 does not (None: librbd's "auto", taken
            // here as 1, what a cluster without `require_min_compat_client mimic` picks).
            if s.clone_format != Some(2) && !snap.protected {
                return Err(err(Errno(libc::EINVAL)));
            }
            let r = ParentRef {
                pool: s.parent.pool.clone(),
                image_id: p.id.clone(),
                snap_id: snap.id,
            };
            (snap.size, p.obj_size, p.meta.clone(), r)
        };
        let (data_pool_id, features) = self
            .data_pool(&s.pool, s.data_pool.as_deref(), features)
            .map_err(err)?;
        let pool = self.pool(&s.pool)?;
        if pool.images.contains_key(&s.name) {
            return Ok(Created::AlreadyExisted);
        }
        if pool.over_quota() {
            return Err(err(Errno(libc::EDQUOT)));
        }
        let mut img = self.new_image(size, features, data_pool_id);
        img.obj_size = obj_size;
        // librbd copies the parent's image-meta into the clone.
        img.meta = meta;
        img.parent = Some(parent_ref);
        self.pool_mut(&s.pool)?.images.insert(s.name.clone(), img);
        Ok(Created::New)
    }

    /// Growing writes only the header's omap, which a pool at its quota accepts.
    fn resize(&mut self, pool: &str, image: &str, new_size: u64) -> Result<(), CephError> {
        let img = self.open_mut(pool, image)?;
        if new_size < img.size {
            return Err(CephError::ShrinkRefused {
                pool: pool.to_string(),
                image: image.to_string(),
                current: img.size,
                requested: new_size,
            });
        }
        img.size = img.size.max(new_size);
        Ok(())
    }

    fn remove_image(&mut self, pool: &str, image: &str) -> Result<Removed, CephError> {
        let err = |e| CephError::image_op(Op::Remove, pool, image, Errno(e));
        let p = self.pool_mut(pool)?;
        let Some(img) = p.images.get(image) else {
            return Ok(Removed::AlreadyGone);
        };
        // librbd moves the image to the trash first, then removes it from there (putting
        // it back when that is refused).
        if p.trash_unwritable() {
            return Ok(Removed::AlreadyGone);
        }
        p.trash_object = true;
        // A half-made image (no header) is cleaned up as it is.
        if img.header {
            if !img.snaps.is_empty() {
                return Err(err(libc::ENOTEMPTY));
            }
            if !img.watchers.is_empty() {
                return Err(err(libc::EBUSY));
            }
        }
        p.images.remove(image);
        Ok(Removed::Removed)
    }

    fn trash_move(&mut self, pool: &str, image: &str, delay: u64) -> Result<Removed, CephError> {
        let now = self.now();
        let p = self.pool_mut(pool)?;
        let end = now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX));
        let known =
            p.images.contains_key(image) || p.trash.values().any(|t| t.moving && t.name == image);
        if known && p.trash_unwritable() {
            return Ok(Removed::AlreadyGone);
        }
        if known {
            p.trash_object = true;
        }
        if let Some(img) = p.images.remove(image) {
            let id = img.id.clone();
            if let Some(t) = p.trash.get_mut(&id) {
                // Finishing a move a killed process began: the entry's times stay.
                t.moving = false;
                t.img = img;
                return Ok(Removed::Removed);
            }
            p.trash.insert(
                id,
                Trashed {
                    name: image.to_string(),
                    img,
                    deletion_time: now,
                    deferment_end_time: end,
                    moving: false,
                },
            );
            return Ok(Removed::Removed);
        }
        // Not in the directory: an interrupted move of that name is finished.
        match p.trash.values_mut().find(|t| t.moving && t.name == image) {
            Some(t) => {
                t.moving = false;
                Ok(Removed::Removed)
            }
            None => Ok(Removed::AlreadyGone),
        }
    }

    fn trash_remove(&mut self, pool: &str, id: &str, force: bool) -> Result<Removed, CephError> {
        let now = self.now();
        let err = |e| CephError::trash_op(Op::TrashRemove, pool, id, Errno(e));
        let p = self.pool_mut(pool)?;
        let Some(t) = p.trash.get(id) else {
            return Ok(Removed::AlreadyGone);
        };
        if now < t.deferment_end_time && !force {
            return Err(err(libc::EPERM));
        }
        if t.moving {
            return Err(err(libc::EUCLEAN));
        }
        if t.img.header {
            if !t.img.snaps.is_empty() {
                return Err(err(libc::ENOTEMPTY));
            }
            if !t.img.watchers.is_empty() {
                return Err(err(libc::EBUSY));
            }
        }
        p.trash.remove(id);
        // A half-moved entry whose image is still in the directory goes with it.
        p.images.retain(|_, i| i.id != id);
        Ok(Removed::Removed)
    }

    fn trash_open(&self, pool: &str, id: &str) -> Result<&Img, CephError> {
        self.pool(pool)?
            .by_id(id)
            .filter(|i| i.header)
            .ok_or_else(|| CephError::trash_op(Op::Open, pool, id, enoent()))
    }

    /// Image-meta is omap on the header, which a pool at its quota accepts.
    fn set_metadata(
        &mut self,
        pool: &str,
        image: &str,
        pairs: Vec<(String, String)>,
        opened: bool,
    ) -> Result<(), CephError> {
        let img = if opened {
            self.open_mut(pool, image)?
        } else {
            // Found through its id object, then written by the object class on the header
            // object, which it creates if it is missing (a half-made image's).
            let err = || CephError::image_op(Op::SetMetadata, pool, image, enoent());
            self.pool_mut(pool)?.images.get_mut(image).ok_or_else(err)?
        };
        if opened {
            // Key by key: the last of a repeated key wins.
            img.meta.extend(pairs);
        } else {
            // One encoded map: the first of a repeated key wins.
            let mut seen = std::collections::HashSet::new();
            for (k, v) in pairs {
                if seen.insert(k.clone()) {
                    img.meta.insert(k, v);
                }
            }
        }
        Ok(())
    }

    /// The image opened read/write and the position of its snapshot `snap`, if any.
    fn snap_op(
        &mut self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<(&mut Img, Option<usize>), CephError> {
        check_snap_name(snap)?;
        let img = self.open_mut(pool, image)?;
        let at = img.snaps.iter().position(|s| s.name == snap);
        Ok((img, at))
    }

    /// A snapshot is omap on the header (and an id from the monitors): a pool at its quota
    /// accepts it.
    fn snap_create(&mut self, pool: &str, image: &str, snap: &str) -> Result<Created, CephError> {
        let id = self.next_snap_id + 1;
        let (img, at) = self.snap_op(pool, image, snap)?;
        if at.is_some() {
            return Ok(Created::AlreadyExisted);
        }
        let size = img.size;
        img.snaps.push(Snap {
            id,
            name: snap.to_string(),
            size,
            protected: false,
        });
        self.next_snap_id = id;
        Ok(Created::New)
    }

    fn snap_protect(&mut self, pool: &str, image: &str, snap: &str) -> Result<(), CephError> {
        let err = |e| CephError::snapshot_op(Op::SnapshotProtect, pool, image, snap, Errno(e));
        let (img, at) = self.snap_op(pool, image, snap)?;
        let at = at.ok_or_else(|| err(libc::ENOENT))?;
        if img.snaps[at].protected {
            return Ok(());
        }
        if img.features & RBD_FEATURE_LAYERING == 0 {
            return Err(err(libc::ENOSYS));
        }
        img.snaps[at].protected = true;
        Ok(())
    }

    fn snap_unprotect(&mut self, pool: &str, image: &str, snap: &str) -> Result<(), CephError> {
        let err = |e| CephError::snapshot_op(Op::SnapshotUnprotect, pool, image, snap, Errno(e));
        let (img, at) = self.snap_op(pool, image, snap)?;
        let at = at.ok_or_else(|| err(libc::ENOENT))?;
        if !img.snaps[at].protected {
            return Ok(());
        }
        let parent = ParentRef {
            pool: pool.to_string(),
            image_id: img.id.clone(),
            snap_id: img.snaps[at].id,
        };
        if self.has_children(&parent) {
            return Err(err(libc::EBUSY));
        }
        let (img, _) = self.snap_op(pool, image, snap)?;
        img.snaps[at].protected = false;
        Ok(())
    }

    fn snap_remove(&mut self, pool: &str, image: &str, snap: &str) -> Result<Removed, CephError> {
        let err = |e| CephError::snapshot_op(Op::SnapshotRemove, pool, image, snap, Errno(e));
        let (img, at) = self.snap_op(pool, image, snap)?;
        let Some(at) = at else {
            return Ok(Removed::AlreadyGone);
        };
        if img.snaps[at].protected {
            return Err(err(libc::EBUSY));
        }
        let parent = ParentRef {
            pool: pool.to_string(),
            image_id: img.id.clone(),
            snap_id: img.snaps[at].id,
        };
        // Clones of format 2 of an unprotected snapshot (librbd would move it to the trash
        // namespace instead).
        if self.has_children(&parent) {
            return Err(err(libc::EBUSY));
        }
        let (img, _) = self.snap_op(pool, image, snap)?;
        img.snaps.remove(at);
        Ok(Removed::Removed)
    }

    fn flatten(&mut self, pool: &str, image: &str) -> Result<(), CephError> {
        let img = self.open_mut(pool, image)?;
        img.parent = None;
        Ok(())
    }
}

fn snap_info(s: &Snap) -> SnapInfo {
    SnapInfo {
        id: s.id,
        name: s.name.clone(),
        size: s.size,
        protected: s.protected,
    }
}

/// What the fake answers to an injected fault, worked out when the call begins.
struct Planned {
    delay: Option<Duration>,
    error: Option<CephError>,
    after_effect: bool,
}

impl FakeCeph {
    /// An empty cluster (no pools) at `fake-ceph:6789`.
    pub fn new() -> FakeCeph {
        FakeCeph {
            monitors: Arc::from("fake-ceph:6789"),
            state: Arc::new(Mutex::new(State {
                fsid: "0f5e1a4c-0000-4000-8000-00000000fa4e".into(),
                pools: BTreeMap::new(),
                next_pool_id: 1,
                next_image: 0,
                next_snap_id: 0,
                next_watch: 0,
                clock_offset: 0,
                faults: Vec::new(),
                calls: Vec::new(),
            })),
        }
    }

    /// A cluster with these pools (`rbd pool init`ed), e.g. `FakeCeph::with_pools(&["kube"])`.
    pub fn with_pools(pools: &[&str]) -> FakeCeph {
        let fake = FakeCeph::new();
        for p in pools {
            fake.add_pool(p);
        }
        fake
    }

    /// The same cluster reached at other monitors (`mon_host`, as errors and
    /// [`RbdCluster::monitors`] name it).
    pub fn at_monitors(mut self, monitors: &str) -> FakeCeph {
        self.monitors = Arc::from(monitors);
        self
    }

    /// This cluster as the controllers hold one.
    pub fn cluster(&self) -> Arc<dyn RbdCluster> {
        Arc::new(self.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves whole values behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- the cluster's make-up ------------------------------------------------------------

    pub fn set_fsid(&self, fsid: &str) {
        self.lock().fsid = fsid.to_string();
    }

    /// Creates a pool with the `rbd` application enabled; returns its id. An existing pool
    /// is left as it is.
    pub fn add_pool(&self, name: &str) -> i64 {
        let mut s = self.lock();
        if let Some(p) = s.pools.get(name) {
            return p.id;
        }
        let id = s.next_pool_id;
        s.next_pool_id += 1;
        let created = Some(s.now());
        s.pools.insert(
            name.to_string(),
            Pool {
                id,
                created,
                quota: PoolQuota::default(),
                applications: vec!["rbd".into()],
                images: BTreeMap::new(),
                trash: BTreeMap::new(),
                objects: BTreeMap::new(),
                trash_object: false,
            },
        );
        id
    }

    /// Deletes a pool and all it holds.
    pub fn remove_pool(&self, name: &str) -> bool {
        self.lock().pools.remove(name).is_some()
    }

    /// What an operator who renamed the pool away and created a new one of the same name
    /// leaves: an empty pool with a new id, created now. Returns the new id.
    pub fn replace_pool(&self, name: &str) -> i64 {
        self.remove_pool(name);
        self.add_pool(name)
    }

    pub fn set_pool_created(&self, pool: &str, unix_secs: Option<i64>) {
        if let Some(p) = self.lock().pools.get_mut(pool) {
            p.created = unix_secs;
        }
    }

    /// Sets a pool's quotas and the figures reported with them. Once a quota is reached by
    /// these figures, what would add objects fails with EDQUOT (creating and cloning images,
    /// omap records on a new object); trash moves and image removals in a pool that never
    /// had anything trashed answer "already gone" and leave the image where it is (librbd
    /// cannot make the trash object and then reports ENOENT); the rest passes.
    pub fn set_quota(&self, pool: &str, quota: PoolQuota) {
        if let Some(p) = self.lock().pools.get_mut(pool) {
            p.quota = quota;
        }
    }

    pub fn set_applications(&self, pool: &str, apps: &[&str]) {
        if let Some(p) = self.lock().pools.get_mut(pool) {
            p.applications = apps.iter().map(|a| a.to_string()).collect();
        }
    }

    pub fn pool_id_of(&self, pool: &str) -> Option<i64> {
        self.lock().pools.get(pool).map(|p| p.id)
    }

    // ---- images, without going through (or being logged as) the trait ---------------------

    /// Puts a layering image of `size` bytes into the pool (replacing one of that name);
    /// returns its id.
    pub fn put_image(&self, pool: &str, name: &str, size: u64) -> String {
        let mut s = self.lock();
        let own = s
            .pools
            .get(pool)
            .map(|p| p.id)
            .expect("put_image: no such pool");
        let img = s.new_image(size, RBD_FEATURE_LAYERING, own);
        let id = img.id.clone();
        s.pools
            .get_mut(pool)
            .expect("pool")
            .images
            .insert(name.to_string(), img);
        id
    }

    /// Sets image-meta keys of an image (in the directory or, by id, in the trash).
    pub fn put_metadata(&self, pool: &str, image: &str, pairs: &[(&str, &str)]) {
        let mut s = self.lock();
        let p = s.pools.get_mut(pool).expect("put_metadata: no such pool");
        let img = match p.images.get_mut(image) {
            Some(i) => i,
            None => p.by_id_mut(image).expect("put_metadata: no such image"),
        };
        for (k, v) in pairs {
            img.meta.insert(k.to_string(), v.to_string());
        }
    }

    /// What a process killed inside `rbd_create4` leaves: the name taken, no header. Opens
    /// fail with ENOENT, a create answers "already existed", a remove cleans it up.
    pub fn half_made(&self, pool: &str, name: &str) -> String {
        let id = self.put_image(pool, name, 0);
        let mut s = self.lock();
        if let Some(img) = s.pools.get_mut(pool).and_then(|p| p.images.get_mut(name)) {
            img.header = false;
        }
        id
    }

    /// What a process killed inside `rbd_trash_move` of `pool/name` leaves: a trash entry
    /// "moving" that cannot be removed (EUCLEAN) until a trash move of the name finishes it;
    /// the image is still in the directory when `left_in_directory`. Returns the trash id.
    pub fn interrupt_trash_move(&self, pool: &str, name: &str, left_in_directory: bool) -> String {
        let mut s = self.lock();
        let now = s.now();
        let p = s
            .pools
            .get_mut(pool)
            .expect("interrupt_trash_move: no such pool");
        let img = if left_in_directory {
            p.images.get(name).cloned()
        } else {
            p.images.remove(name)
        }
        .expect("interrupt_trash_move: no such image");
        let id = img.id.clone();
        p.trash.insert(
            id.clone(),
            Trashed {
                name: name.to_string(),
                img,
                deletion_time: now,
                deferment_end_time: now,
                moving: true,
            },
        );
        id
    }

    /// Moves the cluster's clock (trash deletion and deferment times) by `secs`.
    pub fn advance(&self, secs: i64) {
        self.lock().clock_offset += secs;
    }

    /// The cluster's clock, Unix seconds.
    pub fn now(&self) -> i64 {
        self.lock().now()
    }

    // ---- watchers ---------------------------------------------------------------------------

    /// Opens the image read/write elsewhere (a node that mapped it) until the guard is
    /// dropped: it is a watcher, follows the image into the trash, and blocks removal.
    pub fn hold_open(&self, pool: &str, image: &str) -> Watch {
        let mut s = self.lock();
        s.next_watch += 1;
        let cookie = 0x5eed_0000 + s.next_watch;
        let watcher = Watcher {
            addr: format!(
                "192.0.2.{}:0/{}",
                s.next_watch % 250 + 1,
                3_000_000 + cookie
            ),
            id: i64::try_from(4100 + s.next_watch).unwrap_or(i64::MAX),
            cookie,
        };
        let img = s
            .pools
            .get_mut(pool)
            .and_then(|p| p.images.get_mut(image))
            .filter(|i| i.header)
            .expect("hold_open: no such image");
        img.watchers.push(watcher);
        Watch {
            state: Arc::downgrade(&self.state),
            pool: pool.to_string(),
            image_id: img.id.clone(),
            cookie,
        }
    }

    // ---- inspection -----------------------------------------------------------------------

    /// The image `pool/name` in the directory (not in the trash), as held.
    pub fn image(&self, pool: &str, name: &str) -> Option<FakeImage> {
        let s = self.lock();
        let img = s.pools.get(pool)?.images.get(name)?;
        Some(s.public(pool, img))
    }

    /// Names in the pool's directory.
    pub fn images(&self, pool: &str) -> Vec<String> {
        let s = self.lock();
        s.pools
            .get(pool)
            .map(|p| p.images.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The pool's trash entries.
    pub fn trash(&self, pool: &str) -> Vec<TrashEntry> {
        let s = self.lock();
        s.pools
            .get(pool)
            .map(|p| p.trash.iter().map(|(id, t)| trash_entry(id, t)).collect())
            .unwrap_or_default()
    }

    /// The image behind a trash entry.
    pub fn trashed_image(&self, pool: &str, id: &str) -> Option<FakeImage> {
        let s = self.lock();
        let t = s.pools.get(pool)?.trash.get(id)?;
        Some(s.public(pool, &t.img))
    }

    /// The omap pairs of an object.
    pub fn omap(&self, pool: &str, oid: &str) -> BTreeMap<String, Vec<u8>> {
        let s = self.lock();
        s.pools
            .get(pool)
            .and_then(|p| p.objects.get(oid))
            .cloned()
            .unwrap_or_default()
    }

    // ---- scripting: faults and the call log ------------------------------------------------

    /// Adds a fault; faults are tried in the order they were added, and the first that hits
    /// a call decides it (every matching fault counts the call).
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Every call of `method` fails with `errno`.
    pub fn fail(&self, method: Method, errno: i32) {
        self.inject(Fault::on(method).errno(errno));
    }

    /// The n-th call of `method` from now (1: the next) fails with `errno`.
    pub fn fail_nth(&self, method: Method, n: u32, errno: i32) {
        self.inject(Fault::on(method).nth(n).errno(errno));
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Every call made through the trait so far, in the order they returned.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls of one method.
    pub fn calls_of(&self, method: Method) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// How many calls of `method` were made.
    pub fn count(&self, method: Method) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    /// The calls that change the cluster ([`Method::writes`]), to assert that a reconciler
    /// only looked.
    pub fn writes(&self) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method.writes())
            .cloned()
            .collect()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Runs one call: logs it, applies the faults that hit it, else does `op` on the state.
    async fn call<T>(
        &self,
        method: Method,
        pool: &str,
        image: &str,
        snap: Option<&str>,
        op: impl FnOnce(&mut State) -> Result<T, CephError> + Send,
    ) -> Result<T, CephError> {
        // A real call suspends the task; so does this one, so that concurrent callers
        // interleave.
        tokio::task::yield_now().await;
        let mut call = Call {
            method,
            pool: pool.to_string(),
            image: image.to_string(),
            snap: snap.map(str::to_string),
            errno: None,
        };
        let planned = self.plan(&call);
        if let Some(d) = planned.delay {
            tokio::time::sleep(d).await;
        }
        let r = match planned.error {
            Some(e) if !planned.after_effect => Err(e),
            injected => {
                let r = op(&mut self.lock());
                match (r, injected) {
                    (Ok(_), Some(e)) => Err(e),
                    (r, _) => r,
                }
            }
        };
        call.errno = r.as_ref().err().map(|e| e.errno().unwrap_or(0));
        self.lock().calls.push(call);
        r
    }

    fn plan(&self, call: &Call) -> Planned {
        let mut s = self.lock();
        let mut planned = Planned {
            delay: None,
            error: None,
            after_effect: false,
        };
        let mut decided = false;
        for f in s.faults.iter_mut().filter(|f| f.matches(call)) {
            if !f.hits() || decided {
                continue;
            }
            decided = true;
            planned.delay = f.delay;
            planned.after_effect = f.after_effect;
            planned.error = match (&f.error, f.errno) {
                (Some(make), _) => Some(make(call)),
                (None, Some(e)) => Some(default_error(call, &self.monitors, e)),
                (None, None) => None,
            };
        }
        planned
    }
}

fn trash_entry(id: &str, t: &Trashed) -> TrashEntry {
    TrashEntry {
        id: id.to_string(),
        name: t.name.clone(),
        deletion_time: t.deletion_time,
        deferment_end_time: t.deferment_end_time,
    }
}

/// A watcher registered by [`FakeCeph::hold_open`], removed when dropped.
#[derive(Debug)]
pub struct Watch {
    state: Weak<Mutex<State>>,
    pool: String,
    image_id: String,
    cookie: u64,
}

impl Watch {
    pub fn cookie(&self) -> u64 {
        self.cookie
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(img) = s
            .pools
            .get_mut(&self.pool)
            .and_then(|p| p.by_id_mut(&self.image_id))
        {
            img.watchers.retain(|w| w.cookie != self.cookie);
        }
    }
}

#[async_trait]
impl RbdCluster for FakeCeph {
    fn monitors(&self) -> &str {
        &self.monitors
    }

    async fn fsid(&self) -> Result<String, CephError> {
        self.call(Method::Fsid, "", "", None, |s| Ok(s.fsid.clone()))
            .await
    }

    async fn pool_id(&self, pool: &str) -> Result<i64, CephError> {
        self.call(Method::PoolId, pool, "", None, |s| Ok(s.pool(pool)?.id))
            .await
    }

    async fn pool_created(&self, pool: &str) -> Result<Option<i64>, CephError> {
        // `osd pool ls detail` answers for every pool; a missing one is simply not listed.
        self.call(Method::PoolCreated, pool, "", None, |s| {
            Ok(s.pools.get(pool).and_then(|p| p.created))
        })
        .await
    }

    async fn pool_quota(&self, pool: &str) -> Result<PoolQuota, CephError> {
        self.call(Method::PoolQuota, pool, "", None, |s| {
            s.pools
                .get(pool)
                .map(|p| p.quota.clone())
                .ok_or_else(|| CephError::pool_op(Op::PoolInfo, pool, enoent()))
        })
        .await
    }

    async fn pool_applications(&self, pool: &str) -> Result<Vec<String>, CephError> {
        self.call(Method::PoolApplications, pool, "", None, |s| {
            let mut apps = s.pool(pool)?.applications.clone();
            apps.sort();
            Ok(apps)
        })
        .await
    }

    async fn list_images(&self, pool: &str) -> Result<Vec<String>, CephError> {
        self.call(Method::ListImages, pool, "", None, |s| {
            Ok(s.pool(pool)?.images.keys().cloned().collect())
        })
        .await
    }

    async fn records_set(
        &self,
        pool: &str,
        oid: &'static str,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), CephError> {
        self.call(Method::RecordsSet, pool, oid, None, move |s| {
            let p = s.pool_mut(pool)?;
            // A new object is refused at the quota; omap on an existing one is not.
            if p.over_quota() && !p.objects.contains_key(oid) {
                return Err(CephError::pool_op(
                    Op::WriteRecords,
                    pool,
                    Errno(libc::EDQUOT),
                ));
            }
            p.objects.entry(oid.to_string()).or_default().extend(pairs);
            Ok(())
        })
        .await
    }

    async fn records_remove(
        &self,
        pool: &str,
        oid: &'static str,
        keys: Vec<String>,
    ) -> Result<(), CephError> {
        self.call(Method::RecordsRemove, pool, oid, None, move |s| {
            if let Some(o) = s.pool_mut(pool)?.objects.get_mut(oid) {
                for k in &keys {
                    o.remove(k);
                }
            }
            Ok(())
        })
        .await
    }

    async fn records(
        &self,
        pool: &str,
        oid: &'static str,
    ) -> Result<Vec<(String, Vec<u8>)>, CephError> {
        self.call(Method::Records, pool, oid, None, |s| {
            Ok(s.pool(pool)?
                .objects
                .get(oid)
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default())
        })
        .await
    }

    async fn create_image(&self, spec: &ImageSpec) -> Result<Created, CephError> {
        self.call(Method::CreateImage, &spec.pool, &spec.name, None, |s| {
            s.create_image(spec)
        })
        .await
    }

    async fn clone_image(&self, spec: &CloneSpec) -> Result<Created, CephError> {
        let parent = spec.parent.to_string();
        self.call(
            Method::CloneImage,
            &spec.pool,
            &spec.name,
            Some(&parent),
            |s| s.clone_image(spec),
        )
        .await
    }

    async fn image_info(&self, pool: &str, image: &str) -> Result<ImageInfo, CephError> {
        self.call(Method::ImageInfo, pool, image, None, |s| {
            let img = s.open(pool, image, Op::Open)?;
            Ok(s.info(pool, img))
        })
        .await
    }

    async fn resize(&self, pool: &str, image: &str, new_size: u64) -> Result<(), CephError> {
        self.call(Method::Resize, pool, image, None, |s| {
            s.resize(pool, image, new_size)
        })
        .await
    }

    async fn remove_image(&self, pool: &str, image: &str) -> Result<Removed, CephError> {
        self.call(Method::RemoveImage, pool, image, None, |s| {
            s.remove_image(pool, image)
        })
        .await
    }

    async fn watchers(&self, pool: &str, image: &str) -> Result<Vec<Watcher>, CephError> {
        self.call(Method::Watchers, pool, image, None, |s| {
            Ok(s.open(pool, image, Op::Open)?.watchers.clone())
        })
        .await
    }

    async fn flatten(&self, pool: &str, image: &str) -> Result<(), CephError> {
        self.call(Method::Flatten, pool, image, None, |s| {
            s.flatten(pool, image)
        })
        .await
    }

    async fn set_metadata(
        &self,
        pool: &str,
        image: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<(), CephError> {
        self.call(Method::SetMetadata, pool, image, None, move |s| {
            s.set_metadata(pool, image, pairs, true)
        })
        .await
    }

    async fn set_metadata_unopened(
        &self,
        pool: &str,
        image: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<(), CephError> {
        self.call(Method::SetMetadataUnopened, pool, image, None, move |s| {
            s.set_metadata(pool, image, pairs, false)
        })
        .await
    }

    async fn metadata(
        &self,
        pool: &str,
        image: &str,
        keys: &'static [&'static str],
    ) -> Result<BTreeMap<String, String>, CephError> {
        self.call(Method::Metadata, pool, image, None, |s| {
            let img = s.open(pool, image, Op::Open)?;
            Ok(pick(&img.meta, keys))
        })
        .await
    }

    async fn snap_create(&self, pool: &str, image: &str, snap: &str) -> Result<Created, CephError> {
        self.call(Method::SnapCreate, pool, image, Some(snap), |s| {
            s.snap_create(pool, image, snap)
        })
        .await
    }

    async fn snap_protect(&self, pool: &str, image: &str, snap: &str) -> Result<(), CephError> {
        self.call(Method::SnapProtect, pool, image, Some(snap), |s| {
            s.snap_protect(pool, image, snap)
        })
        .await
    }

    async fn snap_unprotect(&self, pool: &str, image: &str, snap: &str) -> Result<(), CephError> {
        self.call(Method::SnapUnprotect, pool, image, Some(snap), |s| {
            s.snap_unprotect(pool, image, snap)
        })
        .await
    }

    async fn snap_remove(&self, pool: &str, image: &str, snap: &str) -> Result<Removed, CephError> {
        self.call(Method::SnapRemove, pool, image, Some(snap), |s| {
            s.snap_remove(pool, image, snap)
        })
        .await
    }

    async fn snap_list(&self, pool: &str, image: &str) -> Result<Vec<SnapInfo>, CephError> {
        self.call(Method::SnapList, pool, image, None, |s| {
            let img = s.open(pool, image, Op::Open)?;
            Ok(img.snaps.iter().map(snap_info).collect())
        })
        .await
    }

    async fn trash_move(
        &self,
        pool: &str,
        image: &str,
        delay_secs: u64,
    ) -> Result<Removed, CephError> {
        self.call(Method::TrashMove, pool, image, None, |s| {
            s.trash_move(pool, image, delay_secs)
        })
        .await
    }

    async fn trash_list(&self, pool: &str) -> Result<Vec<TrashEntry>, CephError> {
        self.call(Method::TrashList, pool, "", None, |s| {
            Ok(s.pool(pool)?
                .trash
                .iter()
                .map(|(id, t)| trash_entry(id, t))
                .collect())
        })
        .await
    }

    async fn trash_remove(&self, pool: &str, id: &str, force: bool) -> Result<Removed, CephError> {
        self.call(Method::TrashRemove, pool, id, None, |s| {
            s.trash_remove(pool, id, force)
        })
        .await
    }

    async fn trash_metadata(
        &self,
        pool: &str,
        id: &str,
        keys: &'static [&'static str],
    ) -> Result<BTreeMap<String, String>, CephError> {
        self.call(Method::TrashMetadata, pool, id, None, |s| {
            Ok(pick(&s.trash_open(pool, id)?.meta, keys))
        })
        .await
    }

    async fn trash_image(
        &self,
        pool: &str,
        id: &str,
        keys: &'static [&'static str],
    ) -> Result<(BTreeMap<String, String>, u64), CephError> {
        self.call(Method::TrashImage, pool, id, None, |s| {
            let img = s.trash_open(pool, id)?;
            Ok((pick(&img.meta, keys), img.size))
        })
        .await
    }
}

/// The given keys that are set.
fn pick(meta: &BTreeMap<String, String>, keys: &[&str]) -> BTreeMap<String, String> {
    keys.iter()
        .filter_map(|k| meta.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect()
}

// ---- connections ------------------------------------------------------------------------------

/// A [`Connector`] over fake clusters: credentials whose monitors, user and key were
/// registered with [`FakeConnector::serve`] reach that cluster; unknown monitors time out
/// and a wrong user or key is refused (EACCES), as `rados_connect` answers.
pub struct FakeConnector {
    timeouts: Timeouts,
    inner: Mutex<Connecting>,
}

#[derive(Default)]
struct Connecting {
    served: Vec<(Vec<String>, String, ceph::CephKey, FakeCeph)>,
    /// Cached clients: credentials, cluster, used since the last `close_idle`.
    cached: Vec<(Credentials, FakeCeph, bool)>,
    /// Errnos the next connects fail with, in order.
    failures: std::collections::VecDeque<i32>,
    /// Whether every connect fails with this errno.
    down: Option<i32>,
    connects: usize,
}

impl fmt::Debug for FakeConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeConnector").finish_non_exhaustive()
    }
}

impl Default for FakeConnector {
    fn default() -> Self {
        FakeConnector::new()
    }
}

impl FakeConnector {
    pub fn new() -> FakeConnector {
        FakeConnector {
            timeouts: Timeouts::default(),
            inner: Mutex::new(Connecting::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Connecting> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Credentials for `cluster` as `user` with `key` (its monitors as
    /// [`RbdCluster::monitors`] says, split at commas) reach it.
    pub fn serve(&self, cluster: &FakeCeph, user: &str, key: &str) -> Credentials {
        let monitors: Vec<String> = cluster.monitors.split(',').map(str::to_string).collect();
        let key = ceph::CephKey::new(key);
        let id = user.strip_prefix("client.").unwrap_or(user);
        self.lock().served.push((
            monitors.clone(),
            id.to_string(),
            key.clone(),
            cluster.clone(),
        ));
        Credentials {
            monitors,
            user: user.to_string(),
            key,
        }
    }

    /// The next `n` connects fail with `errno`.
    pub fn fail_connects(&self, n: usize, errno: i32) {
        self.lock().failures.extend(std::iter::repeat_n(errno, n));
    }

    /// Every connect fails with `errno` (the monitors down: ETIMEDOUT) until called with
    /// `None`.
    pub fn set_down(&self, errno: Option<i32>) {
        self.lock().down = errno;
    }

    /// How many connections were made (not served from the cache).
    pub fn connects(&self) -> usize {
        self.lock().connects
    }

    fn connect(&self, c: &Credentials) -> Result<FakeCeph, CephError> {
        let mut inner = self.lock();
        let mon_host = c.monitors.join(",");
        let user = c
            .user
            .strip_prefix("client.")
            .unwrap_or(&c.user)
            .to_string();
        let fail = |errno| Err(CephError::connect_failed(&mon_host, &user, Errno(errno), 0));
        if let Some(e) = inner.failures.pop_front().or(inner.down) {
            return fail(e);
        }
        let at_monitors: Vec<_> = inner
            .served
            .iter()
            .filter(|(m, ..)| *m == c.monitors)
            .collect();
        if at_monitors.is_empty() {
            return fail(libc::ETIMEDOUT);
        }
        let Some((.., cluster)) = at_monitors
            .iter()
            .find(|(_, u, k, _)| *u == user && *k == c.key)
        else {
            return fail(libc::EACCES);
        };
        let cluster = cluster.clone();
        inner.connects += 1;
        Ok(cluster)
    }
}

#[async_trait]
impl Connector for FakeConnector {
    async fn get(&self, credentials: &Credentials) -> Result<Arc<dyn RbdCluster>, CephError> {
        tokio::task::yield_now().await;
        if let Some(entry) = self
            .lock()
            .cached
            .iter_mut()
            .find(|(c, ..)| c == credentials)
        {
            entry.2 = true;
            return Ok(entry.1.cluster());
        }
        let cluster = self.connect(credentials)?;
        self.lock()
            .cached
            .push((credentials.clone(), cluster.clone(), true));
        Ok(cluster.cluster())
    }

    async fn borrow(&self, credentials: &Credentials) -> Result<Arc<dyn RbdCluster>, CephError> {
        tokio::task::yield_now().await;
        if let Some((_, cluster, _)) = self.lock().cached.iter().find(|(c, ..)| c == credentials) {
            return Ok(cluster.cluster());
        }
        Ok(self.connect(credentials)?.cluster())
    }

    fn forget(&self, credentials: &Credentials) -> bool {
        let mut inner = self.lock();
        let before = inner.cached.len();
        inner.cached.retain(|(c, ..)| c != credentials);
        inner.cached.len() != before
    }

    /// Closes the clients not used (by `get`) since the previous call: the interval between
    /// two calls stands for the idle time.
    fn close_idle(&self) -> usize {
        let mut inner = self.lock();
        let before = inner.cached.len();
        inner.cached.retain(|(.., used)| *used);
        for entry in &mut inner.cached {
            entry.2 = false;
        }
        before - inner.cached.len()
    }

    fn len(&self) -> usize {
        self.lock().cached.len()
    }

    fn timeouts(&self) -> Timeouts {
        self.timeouts
    }
}

#[cfg(test)]
mod tests;
