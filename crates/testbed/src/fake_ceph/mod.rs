//! A scripted, in-memory Ceph for unit tests of the controllers: [`FakeCeph`] implements
//! [`RbdCluster`] and [`FakeConnector`] implements [`Connector`], so a reconciler can run
//! without a cluster and a test can assert what it did to Ceph (and what it did not).
//!
//! It keeps pools (id, creation time, quota, applications, omap objects), images (size,
//! features, id, data pool, image-meta, parent, snapshots with protection and creation time,
//! watchers) and a trash (ids, deferment). Its answers are librbd's as [`ceph::Cluster`]
//! reports them, down to the error variant, the operation named in it and its hint;
//! `tests/ceph_contract/` runs the same scenarios against this and a real cluster and compares
//! the results.
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
    CephError, Child, CloneSpec, Connector, Created, Credentials, Errno, ImageInfo, ImageSpec, Op,
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

mod cluster;
mod connector;
mod fault;
mod model;
mod ops;
mod script;

pub use connector::FakeConnector;
pub use fault::{Call, Fault, Method, default_error};
pub use model::FakeImage;
pub use script::Watch;

use model::*;

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
/// (measured with Pacific, see `tests/ceph_contract/`): unknown ones are ENOSYS, object-map
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

#[cfg(test)]
mod tests;
