//! Errors of the Ceph layer: what failed, where, the errno by name, and a hint for the operator.

use std::fmt;

/// A positive errno value as returned (negated) by librados / librbd.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// Builds from a librados/librbd return code (`-EFOO` or `EFOO`).
    pub fn from_ret(ret: i64) -> Errno {
        Errno(i32::try_from(ret.unsigned_abs()).unwrap_or(i32::MAX))
    }

    /// The symbolic name ("ENOENT"), or "E?" when unknown.
    pub fn name(self) -> &'static str {
        use libc::*;
        match self.0 {
            EPERM => "EPERM",
            ENOENT => "ENOENT",
            EINTR => "EINTR",
            EIO => "EIO",
            ENXIO => "ENXIO",
            E2BIG => "E2BIG",
            EBADF => "EBADF",
            EAGAIN => "EAGAIN",
            ENOMEM => "ENOMEM",
            EACCES => "EACCES",
            EFAULT => "EFAULT",
            EBUSY => "EBUSY",
            EEXIST => "EEXIST",
            EXDEV => "EXDEV",
            ENODEV => "ENODEV",
            EINVAL => "EINVAL",
            EFBIG => "EFBIG",
            ENOSPC => "ENOSPC",
            EROFS => "EROFS",
            ERANGE => "ERANGE",
            ENAMETOOLONG => "ENAMETOOLONG",
            ENOSYS => "ENOSYS",
            ENOTEMPTY => "ENOTEMPTY",
            ENODATA => "ENODATA",
            EOPNOTSUPP => "EOPNOTSUPP",
            ENOTCONN => "ENOTCONN",
            // Ceph reuses ESHUTDOWN for "client blocklisted".
            ESHUTDOWN => "ESHUTDOWN",
            EUCLEAN => "EUCLEAN",
            ETIMEDOUT => "ETIMEDOUT",
            ECONNREFUSED => "ECONNREFUSED",
            EHOSTUNREACH => "EHOSTUNREACH",
            EALREADY => "EALREADY",
            EINPROGRESS => "EINPROGRESS",
            EDQUOT => "EDQUOT",
            ECANCELED => "ECANCELED",
            _ => "E?",
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = std::io::Error::from_raw_os_error(self.0).to_string();
        let text = text.split(" (os error").next().unwrap_or_default();
        write!(f, "{} ({}, errno {})", self.name(), text, self.0)
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.name(), self.0)
    }
}

/// A librbd / librados operation, as named in errors; its hint depends on it
/// ([`op_hint`]), so it is a closed set rather than free text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Open,
    Create,
    GetParent,
    ListWatchers,
    GetSize,
    Resize,
    Remove,
    TrashMove,
    SetMetadata,
    ReadMetadata,
    TrashList,
    TrashRemove,
    ListImages,
    ListApplications,
    SnapshotCreate,
    SnapshotProtect,
    SnapshotUnprotect,
    SnapshotRemove,
    ListSnapshots,
    ListChildren,
    Clone,
    Flatten,
    Stat,
    GetFeatures,
    GetFormat,
    GetId,
    GetDataPool,
    ReadRecords,
    WriteRecords,
    PoolInfo,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Open => "open",
            Op::Create => "create",
            Op::GetParent => "get parent",
            Op::ListWatchers => "list watchers",
            Op::GetSize => "get size",
            Op::Resize => "resize",
            Op::Remove => "remove",
            Op::TrashMove => "trash move",
            Op::SetMetadata => "set metadata",
            Op::ReadMetadata => "read metadata",
            Op::TrashList => "trash list",
            Op::TrashRemove => "trash remove",
            Op::ListImages => "list images",
            Op::ListApplications => "list pool applications",
            Op::SnapshotCreate => "snapshot create",
            Op::SnapshotProtect => "snapshot protect",
            Op::SnapshotUnprotect => "snapshot unprotect",
            Op::SnapshotRemove => "snapshot remove",
            Op::ListSnapshots => "list snapshots",
            Op::ListChildren => "list children",
            Op::Clone => "clone",
            Op::Flatten => "flatten",
            Op::Stat => "stat",
            Op::GetFeatures => "get features",
            Op::GetFormat => "get format",
            Op::GetId => "get id",
            Op::GetDataPool => "get data pool",
            Op::ReadRecords => "read omap records",
            Op::WriteRecords => "write omap records",
            Op::PoolInfo => "read pool information",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything the Ceph layer can fail with. Messages never contain a key.
#[derive(Debug, thiserror::Error)]
pub enum CephError {
    /// A caller-supplied value cannot be handed to Ceph (empty monitor list, NUL byte, ...).
    #[error("invalid {what}: {reason}")]
    InvalidArgument { what: &'static str, reason: String },

    /// Creating or configuring the client handle failed before any network traffic.
    #[error("setting up the Ceph client for client.{user} failed at {step}: {errno}{}", fmt_hint(.hint))]
    Setup {
        user: String,
        step: &'static str,
        errno: Errno,
        hint: Option<&'static str>,
    },

    /// `rados_connect` failed (authentication, unreachable monitors, ...).
    #[error("connecting to Ceph monitors {monitors} as client.{user} failed after {elapsed_ms} ms: {errno}{}", fmt_hint(.hint))]
    Connect {
        monitors: String,
        user: String,
        errno: Errno,
        elapsed_ms: u64,
        hint: Option<&'static str>,
    },

    /// Opening an I/O context on a pool failed (usually: the pool does not exist).
    #[error("opening pool {pool:?} failed: {errno}{}", fmt_hint(.hint))]
    Pool {
        pool: String,
        errno: Errno,
        hint: Option<&'static str>,
    },

    /// A librbd operation on one image failed.
    #[error("{op} of image {pool}/{image} failed: {errno}{}", fmt_hint(.hint))]
    Image {
        op: Op,
        pool: String,
        image: String,
        errno: Errno,
        hint: Option<&'static str>,
    },

    /// A librbd operation on a snapshot failed.
    #[error("{op} of snapshot {pool}/{image}@{snap} failed: {errno}{}", fmt_hint(.hint))]
    Snapshot {
        op: Op,
        pool: String,
        image: String,
        snap: String,
        errno: Errno,
        hint: Option<&'static str>,
    },

    /// `rbd_clone3` failed.
    #[error("cloning {parent} to {pool}/{image} failed: {errno}{}", fmt_hint(.hint))]
    Clone {
        /// "pool/image@snap"
        parent: String,
        pool: String,
        image: String,
        errno: Errno,
        hint: Option<&'static str>,
    },

    /// A pool-wide operation (list images, list/remove trash) failed.
    #[error("{op} in pool {pool:?} failed: {errno}{}", fmt_hint(.hint))]
    PoolOp {
        op: Op,
        pool: String,
        errno: Errno,
        hint: Option<&'static str>,
    },

    /// A cluster-wide query on a connected client failed.
    #[error("{op} on Ceph monitors {monitors} failed: {errno}")]
    Cluster {
        op: &'static str,
        monitors: String,
        errno: Errno,
    },

    /// `resize` was asked to make an image smaller; shrinking destroys data, so it is refused.
    #[error(
        "refusing to shrink image {pool}/{image} from {current} to {requested} bytes; \
         hint: RBD volumes can only be expanded"
    )]
    ShrinkRefused {
        pool: String,
        image: String,
        current: u64,
        requested: u64,
    },

    /// The blocking worker running a Ceph call panicked or was cancelled.
    #[error("Ceph worker task failed: {0}")]
    Task(String),
}

fn fmt_hint(h: &Option<&'static str>) -> String {
    match h {
        Some(h) => format!("; hint: {h}"),
        None => String::new(),
    }
}

/// Constructors of the errors each operation fails with, hints included: the librbd
/// implementation builds its errors through the same functions, so another implementation of
/// [`super::RbdCluster`] (the scripted one of the testbed) fails exactly alike.
impl CephError {
    /// Opening an I/O context on `pool` failed (ENOENT: the pool does not exist).
    pub fn pool_open(pool: &str, errno: Errno) -> CephError {
        CephError::Pool {
            pool: pool.to_string(),
            errno,
            hint: pool_hint(errno),
        }
    }

    /// `op` on image `pool/image` failed.
    pub fn image_op(op: Op, pool: &str, image: &str, errno: Errno) -> CephError {
        img_err(op, pool, image, errno)
    }

    /// `op` on the trash entry `id` (named "(trash id ID)", as it has no name) failed.
    pub fn trash_op(op: Op, pool: &str, id: &str, errno: Errno) -> CephError {
        img_err(op, pool, &trash_label(id), errno)
    }

    /// `op` on snapshot `pool/image@snap` failed.
    pub fn snapshot_op(op: Op, pool: &str, image: &str, snap: &str, errno: Errno) -> CephError {
        CephError::Snapshot {
            op,
            pool: pool.to_string(),
            image: image.to_string(),
            snap: snap.to_string(),
            errno,
            hint: op_hint(op, errno),
        }
    }

    /// Cloning `parent` (`pool/image@snap`) to `pool/image` failed.
    pub fn clone_failed(parent: &str, pool: &str, image: &str, errno: Errno) -> CephError {
        CephError::Clone {
            parent: parent.to_string(),
            pool: pool.to_string(),
            image: image.to_string(),
            errno,
            hint: op_hint(Op::Clone, errno),
        }
    }

    /// A pool-wide `op` failed.
    pub fn pool_op(op: Op, pool: &str, errno: Errno) -> CephError {
        pool_err(op, pool, errno)
    }

    /// Reading the fsid of the cluster at `monitors` failed.
    pub fn fsid_failed(monitors: &str, errno: Errno) -> CephError {
        CephError::Cluster {
            op: "read the cluster fsid (rados_cluster_fsid)",
            monitors: monitors.to_string(),
            errno,
        }
    }

    /// Connecting to `monitors` (a `mon_host`) as `client.user` failed after `elapsed_ms`.
    pub fn connect_failed(monitors: &str, user: &str, errno: Errno, elapsed_ms: u64) -> CephError {
        CephError::Connect {
            monitors: monitors.to_string(),
            user: user.to_string(),
            errno,
            elapsed_ms,
            hint: connect_failure_hint(monitors, errno),
        }
    }

    /// The positive errno behind this error, when it came from librados/librbd.
    pub fn errno(&self) -> Option<i32> {
        match self {
            CephError::Setup { errno, .. }
            | CephError::Connect { errno, .. }
            | CephError::Pool { errno, .. }
            | CephError::Image { errno, .. }
            | CephError::Snapshot { errno, .. }
            | CephError::Clone { errno, .. }
            | CephError::PoolOp { errno, .. }
            | CephError::Cluster { errno, .. } => Some(errno.0),
            CephError::InvalidArgument { .. }
            | CephError::ShrinkRefused { .. }
            | CephError::Task(_) => None,
        }
    }

    /// ENOENT of the image or snapshot itself. A missing *pool* is not "not found": after
    /// a pool rename or a wrong parameter the image may well exist elsewhere, so callers
    /// must never take it for "already gone" ([`CephError::is_pool_missing`]).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            CephError::Image { .. } | CephError::Snapshot { .. } | CephError::Clone { .. }
        ) && self.errno() == Some(libc::ENOENT)
    }

    /// The pool does not exist (ENOENT when opening it).
    pub fn is_pool_missing(&self) -> bool {
        matches!(self, CephError::Pool { errno, .. } if errno.0 == libc::ENOENT)
    }

    /// Errors after which this client should not be used again: the key was rotated or its
    /// caps revoked (EACCES/EPERM), or the cluster blocklisted the client (ESHUTDOWN).
    pub fn poisons_client(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::EACCES | libc::EPERM | libc::ESHUTDOWN)
        )
    }

    /// What this failure says about the cluster's side, when it is one of the faults an
    /// operator fixes in Ceph rather than in Kubernetes.
    pub fn fault(&self) -> Option<Fault> {
        let errno = self.errno()?;
        Some(match (self, errno) {
            (_, libc::EDQUOT) => Fault::PoolFull { quota: true },
            (_, libc::ENOSPC) => Fault::PoolFull { quota: false },
            (CephError::Connect { .. }, libc::EACCES | libc::EPERM) => Fault::Auth,
            // Refused until the entry's deferment ends: not the user's caps.
            (
                CephError::PoolOp {
                    op: Op::TrashRemove,
                    ..
                }
                | CephError::Image {
                    op: Op::TrashRemove,
                    ..
                },
                _,
            ) => return None,
            (_, libc::EACCES | libc::EPERM) => Fault::Denied,
            (_, libc::ESHUTDOWN) => Fault::Blocklisted,
            _ => return None,
        })
    }

    /// EEXIST.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// EBUSY: e.g. the image still has watchers (is mapped somewhere), or has children.
    pub fn is_busy(&self) -> bool {
        self.errno() == Some(libc::EBUSY)
    }

    /// EACCES/EPERM: wrong key or insufficient caps.
    pub fn is_permission(&self) -> bool {
        matches!(self.errno(), Some(libc::EACCES | libc::EPERM))
    }

    /// ETIMEDOUT: monitors or OSDs did not answer within the configured timeouts.
    pub fn is_timeout(&self) -> bool {
        self.errno() == Some(libc::ETIMEDOUT)
    }
}

/// A failure whose cause is on the cluster's side and whose fix is an operator's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// EDQUOT (`quota`: the pool's quota is reached) or ENOSPC (the cluster is full).
    PoolFull { quota: bool },
    /// The monitors refused the key at connect: rotated, or the user removed.
    Auth,
    /// EACCES/EPERM on an operation: the user's caps do not allow it.
    Denied,
    /// ESHUTDOWN: the cluster blocklisted this client.
    Blocklisted,
}

const BLOCKLISTED_HINT: &str = "the cluster blocklisted this client (ceph osd blocklist ls): it is \
     dropped, and the retry connects a fresh one";

/// Hint for a failed `rados_connect`.
pub(crate) fn connect_hint(e: Errno) -> Option<&'static str> {
    match e.0 {
        libc::EACCES | libc::EPERM => {
            Some("authentication failed: check the key and the user's caps")
        }
        libc::ETIMEDOUT | libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::EINTR => Some(
            "monitors unreachable: check the monitors parameter and network \
             (host:port; port 6789 is msgr v1, 3300 is msgr v2, or prefix v1:/v2:)",
        ),
        libc::ENOENT | libc::EINVAL => Some(
            "no usable monitor address or key: check the monitors parameter \
             (comma-separated host:port) and that the key is a valid base64 cephx key",
        ),
        libc::ESHUTDOWN => Some(BLOCKLISTED_HINT),
        _ => None,
    }
}

/// Hint for a connect timeout when a monitor address has no `v1:`/`v2:` prefix and a port
/// other than 6789/3300: librados then tries both protocols on that port, and an
/// authentication failure on one of them is not final, so a wrong key looks like a timeout
/// (measured with Ceph 16.2.15: ETIMEDOUT after client_mount_timeout instead of EACCES in
/// ~30 ms).
pub(crate) const AMBIGUOUS_MONITOR_TIMEOUT_HINT: &str = "monitors unreachable OR a wrong key: a monitor address without v1:/v2: prefix on a port \
     other than 6789 (v1) / 3300 (v2) makes librados report an authentication failure as a \
     timeout; check the key and the user's caps, the monitors parameter and network, and \
     prefix such addresses with v1: or v2:";

/// Whether `mon_host` has an entry like `10.0.0.1:16789` (port given, not 6789/3300, no
/// `v1:`/`v2:` prefix).
pub(crate) fn has_ambiguous_monitor(mon_host: &str) -> bool {
    mon_host
        .split([',', ' ', ';'])
        .map(|t| t.trim().trim_start_matches('[').trim_end_matches(']'))
        .filter(|t| !t.is_empty() && !t.starts_with("v1:") && !t.starts_with("v2:"))
        .any(|t| {
            // "host:port", "1.2.3.4:port" or "[::1]:port" (brackets already stripped).
            t.rsplit_once(':')
                .and_then(|(_, port)| port.trim_end_matches('/').parse::<u16>().ok())
                .is_some_and(|port| port != 6789 && port != 3300)
        })
}

/// Hint for a failed connect: a timeout with an ambiguous monitor address may be a wrong key.
pub(crate) fn connect_failure_hint(mon_host: &str, errno: Errno) -> Option<&'static str> {
    if errno.0 == libc::ETIMEDOUT && has_ambiguous_monitor(mon_host) {
        Some(AMBIGUOUS_MONITOR_TIMEOUT_HINT)
    } else {
        connect_hint(errno)
    }
}

/// How an image in the trash, which has no name, is named in errors.
pub(crate) fn trash_label(id: &str) -> String {
    format!("(trash id {id})")
}

/// Hint for failing to open a pool.
pub(crate) fn pool_hint(e: Errno) -> Option<&'static str> {
    match e.0 {
        libc::ENOENT => Some(
            "the pool does not exist: check the pool parameter; for a new class create it \
             (ceph osd pool create NAME; rbd pool init NAME), but for existing volumes find \
             where their images went (a renamed pool: ceph osd pool rename back), since an \
             empty pool of the old name would make them look deleted",
        ),
        libc::EACCES | libc::EPERM => Some("the user's caps do not allow this pool"),
        _ => None,
    }
}

/// Hint for a failed image / snapshot / pool operation.
pub(crate) fn op_hint(op: Op, e: Errno) -> Option<&'static str> {
    match e.0 {
        libc::EACCES | libc::EPERM if op == Op::TrashRemove => Some(
            "the trash entry's deferment time has not expired (use force) or the user's caps \
             forbid it",
        ),
        libc::EACCES | libc::EPERM if op == Op::ListChildren => Some(
            "listing a snapshot's clones reads every pool: the user needs read access to all \
             of them",
        ),
        libc::EACCES | libc::EPERM => Some(
            "the user's caps do not allow this: give it e.g. \
             \"mon 'profile rbd' osd 'profile rbd pool=POOL'\"",
        ),
        libc::ETIMEDOUT => {
            Some("the cluster did not answer within the op timeout: check its health (ceph -s)")
        }
        libc::EBUSY if op == Op::Remove || op == Op::TrashMove => {
            Some("the image still has watchers: it is probably still mapped on a node")
        }
        libc::EBUSY => Some("the image or snapshot is in use (watchers, children or a lock)"),
        libc::ENOTEMPTY => Some("the image still has snapshots: remove them first"),
        libc::ENOSPC | libc::EDQUOT => Some("the pool is full or its quota is reached"),
        libc::ESHUTDOWN => Some(BLOCKLISTED_HINT),
        libc::ENOSYS | libc::EOPNOTSUPP => {
            Some("the cluster does not support this (check Ceph versions and image format)")
        }
        libc::EINVAL if op == Op::Create || op == Op::Clone => Some(
            "the cluster rejected the image options: check imageFeatures \
             (layering needs format 2), dataPool and size",
        ),
        libc::EINVAL if op == Op::Resize => Some("RBD volumes can only be expanded"),
        libc::ENOENT if op == Op::Clone => {
            Some("the parent image or snapshot does not exist, or the target pool is missing")
        }
        _ => None,
    }
}

/// A failed operation on one image, with its hint.
pub(crate) fn img_err(op: Op, pool: &str, image: &str, errno: Errno) -> CephError {
    CephError::Image {
        op,
        pool: pool.to_string(),
        image: image.to_string(),
        errno,
        hint: op_hint(op, errno),
    }
}

/// A failed operation on a pool as a whole, with its hint.
pub(crate) fn pool_err(op: Op, pool: &str, errno: Errno) -> CephError {
    CephError::PoolOp {
        op,
        pool: pool.to_string(),
        errno,
        hint: op_hint(op, errno),
    }
}

#[cfg(test)]
mod tests;
