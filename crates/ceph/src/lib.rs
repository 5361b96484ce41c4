//! Ceph access through librados/librbd. The only module with `unsafe`, and within it only
//! `ffi` and `handles`:
//!
//! * `ffi` holds the hand-written C declarations (layouts pinned at compile time);
//! * `handles` wraps the raw handles in RAII types with safe methods;
//! * `config` checks credentials and sets every client's options;
//! * [`Cluster`] is one connected librados client with an async API (no `unsafe`); every
//!   operation runs its blocking calls on `tokio::task::spawn_blocking`;
//! * [`Connections`] caches one [`Cluster`] per (monitors, user, key);
//! * [`RbdCluster`] and [`Connector`] are what the provisioner asks of those two, as traits,
//!   so that a scripted cluster can stand in for librbd in tests.
//!
//! No raw pointer leaves this module. Keys live in [`CephKey`], whose `Debug` is redacted
//! and which has no `Display`; keys are handed to librados with `rados_conf_set("key")`,
//! never through a file, a log line or a process argument. No Ceph configuration file is
//! read (`/etc/ceph` is not needed).

mod cluster;
mod config;
mod connections;
mod encoding;
mod error;
#[allow(unsafe_code)]
mod ffi;
#[allow(unsafe_code)]
mod handles;
mod rbd;
mod types;

use std::fmt;
use std::time::Duration;

/// The attribute implementations of [`RbdCluster`] and [`Connector`] need.
pub use async_trait::async_trait;
pub use cluster::Cluster;
pub use connections::Connections;
pub use error::{CephError, Errno, Fault, Op};
pub(crate) use handles::wipe;
pub use handles::{HeldImage, library_versions};
pub use rbd::{Connector, RbdCluster};
pub use types::{
    Child, CloneSpec, Created, ImageInfo, ImageSpec, Inspection, ParentSpec, PoolQuota, Removed,
    SnapInfo, TrashEntry, Watcher,
};

/// `RBD_FEATURE_LAYERING`: the only feature the kernel client of every version supports.
pub const RBD_FEATURE_LAYERING: u64 = 1;
/// `RBD_FEATURE_EXCLUSIVE_LOCK`.
pub const RBD_FEATURE_EXCLUSIVE_LOCK: u64 = 1 << 2;
/// `RBD_FEATURE_OBJECT_MAP`.
pub const RBD_FEATURE_OBJECT_MAP: u64 = 1 << 3;
/// `RBD_FEATURE_FAST_DIFF`.
pub const RBD_FEATURE_FAST_DIFF: u64 = 1 << 4;
/// `RBD_FEATURE_DEEP_FLATTEN`.
pub const RBD_FEATURE_DEEP_FLATTEN: u64 = 1 << 5;
/// `RBD_FEATURE_JOURNALING`.
pub const RBD_FEATURE_JOURNALING: u64 = 1 << 6;
/// `RBD_FEATURE_DATA_POOL`: set implicitly by librbd when an image has a separate data pool.
pub const RBD_FEATURE_DATA_POOL: u64 = 1 << 7;

/// A cephx secret (base64). `Debug` prints `CephKey(<redacted>)`; there is no `Display`.
/// The bytes are overwritten when the value is dropped.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CephKey(String);

impl CephKey {
    pub fn new(key: impl Into<String>) -> CephKey {
        CephKey(key.into())
    }

    /// The secret itself. Only for handing it to librados (and comparing in tests of this
    /// crate); never log or format it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for CephKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CephKey(<redacted>)")
    }
}

impl Drop for CephKey {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.0).into_bytes());
    }
}

/// Who to connect as, and where.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Credentials {
    /// Monitor addresses: `host:port` (port 6789 is msgr v1, 3300 msgr v2), `v1:`/`v2:`
    /// prefixed addresses, or `[v2:..,v1:..]` vectors. Joined with "," into `mon_host`.
    pub monitors: Vec<String>,
    /// The cephx id without "client." (a leading "client." is tolerated and stripped).
    pub user: String,
    pub key: CephKey,
}

/// Client-side timeouts applied to every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// `client_mount_timeout`: how long `rados_connect` may take (authentication included).
    pub connect: Duration,
    /// `rados_mon_op_timeout` and `rados_osd_op_timeout`: per librados request.
    pub op: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            op: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_debug_is_redacted() {
        let key = CephKey::new("AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==");
        assert_eq!(format!("{key:?}"), "CephKey(<redacted>)");
        let creds = Credentials {
            monitors: vec!["127.0.0.1:6789".into()],
            user: "admin".into(),
            key: key.clone(),
        };
        let dbg = format!("{creds:?} {creds:#?}");
        assert!(!dbg.contains("AQD3"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        assert_eq!(key.expose(), "AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==");
    }

    #[test]
    fn default_timeouts() {
        let t = Timeouts::default();
        assert_eq!(t.connect, Duration::from_secs(10));
        assert_eq!(t.op, Duration::from_secs(30));
    }

    #[test]
    fn library_is_pacific_or_newer() {
        let ((rbd_major, rbd_minor, _), (rados_major, _, _)) = library_versions();
        assert!(
            (rbd_major, rbd_minor) >= (1, 16),
            "librbd {rbd_major}.{rbd_minor}"
        );
        assert!(rados_major >= 3, "librados {rados_major}");
    }

    #[test]
    fn ffi_layouts_match_the_c_headers() {
        // The real checks are the `const _: () = assert!(..)` items in ffi.rs, which fail
        // the build; this test only documents them and keeps them from being dropped.
        use std::mem::size_of;
        assert_eq!(size_of::<ffi::rbd_image_spec_t>(), 16);
        assert_eq!(size_of::<ffi::rbd_linked_image_spec_t>(), 48);
        assert_eq!(size_of::<ffi::rbd_snap_spec_t>(), 24);
        assert_eq!(size_of::<ffi::rbd_snap_info_t>(), 24);
        assert_eq!(size_of::<ffi::rbd_image_info_t>(), 160);
        assert_eq!(size_of::<ffi::rbd_trash_image_info_t>(), 40);
        assert_eq!(size_of::<ffi::rbd_image_watcher_t>(), 24);
    }
}
