//! Scripted faults and the call log: which calls fail, how, and what was called.

use super::*;

/// The methods of [`RbdCluster`], as the call log and [`Fault`]s name them: the enum, its
/// names and the list of all, from one table.
macro_rules! methods {
    ($($variant:ident => $name:literal,)*) => {
        /// A method of [`RbdCluster`], as the call log and [`Fault`]s name it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Method {
            $($variant,)*
        }

        impl Method {
            /// Every method, in the trait's order.
            pub const ALL: &'static [Method] = &[$(Method::$variant,)*];

            /// The trait method's name (`trash_move`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Method::$variant => $name,)*
                }
            }
        }
    };
}

methods! {
    Fsid => "fsid",
    PoolId => "pool_id",
    PoolCreated => "pool_created",
    PoolQuota => "pool_quota",
    PoolApplications => "pool_applications",
    ListImages => "list_images",
    RecordsSet => "records_set",
    RecordsRemove => "records_remove",
    Records => "records",
    CreateImage => "create_image",
    CloneImage => "clone_image",
    ImageInfo => "image_info",
    Resize => "resize",
    RemoveImage => "remove_image",
    Watchers => "watchers",
    Flatten => "flatten",
    SetMetadata => "set_metadata",
    SetMetadataUnopened => "set_metadata_unopened",
    Metadata => "metadata",
    SnapCreate => "snap_create",
    SnapProtect => "snap_protect",
    SnapUnprotect => "snap_unprotect",
    SnapRemove => "snap_remove",
    SnapList => "snap_list",
    SnapChildren => "snap_children",
    TrashMove => "trash_move",
    TrashList => "trash_list",
    TrashRemove => "trash_remove",
    TrashMetadata => "trash_metadata",
    TrashImage => "trash_image",
}

impl Method {
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
pub(super) enum When {
    Every,
    Nth(u32),
    FirstN(u32),
}

pub(super) type MakeError = Arc<dyn Fn(&Call) -> CephError + Send + Sync>;

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
    pub(super) method: Method,
    pub(super) pool: Option<String>,
    pub(super) image: Option<String>,
    pub(super) when: When,
    pub(super) errno: Option<i32>,
    pub(super) error: Option<MakeError>,
    pub(super) after_effect: bool,
    pub(super) delay: Option<Duration>,
    pub(super) seen: u32,
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

    pub(super) fn matches(&self, call: &Call) -> bool {
        self.method == call.method
            && self.pool.as_ref().is_none_or(|p| *p == call.pool)
            && self.image.as_ref().is_none_or(|i| *i == call.image)
    }

    /// Counts a matching call; whether the fault hits it.
    pub(super) fn hits(&mut self) -> bool {
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
        Method::SnapChildren => CephError::snapshot_op(Op::ListChildren, pool, image, snap, e),
        Method::TrashRemove => CephError::trash_op(Op::TrashRemove, pool, image, e),
        Method::TrashMetadata | Method::TrashImage => {
            CephError::trash_op(Op::ReadMetadata, pool, image, e)
        }
    }
}
