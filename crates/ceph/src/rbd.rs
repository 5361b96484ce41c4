//! The seam in front of Ceph: what the provisioner asks of a connected cluster
//! ([`RbdCluster`]) and of the cache that hands clusters out ([`Connector`]), as traits, so
//! that the controllers can be driven by a scripted in-memory cluster in unit tests (the fake
//! in the testbed crate) as well as by librbd.
//!
//! The librbd implementations only delegate to [`Cluster`] and [`Connections`]: same calls,
//! same results, same errors. Any other implementation must keep to what these document, and
//! to what `tests/ceph_contract/` checks against a real cluster.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    CephError, Child, CloneSpec, Cluster, Connections, Created, Credentials, ImageInfo, ImageSpec,
    Inspection, PoolQuota, Removed, SnapInfo, Timeouts, TrashEntry, Watcher,
};

/// One connected Ceph client, as the controllers, `migrate` and `audit` use it. Every method
/// is one operation of [`Cluster`], whose documentation is the contract; in short:
///
/// * a missing pool is [`CephError::Pool`] with ENOENT ([`CephError::is_pool_missing`]),
///   never "not found";
/// * a missing image, snapshot or trash entry is an error with ENOENT
///   ([`CephError::is_not_found`]), except for the idempotent removes, which answer
///   [`Removed::AlreadyGone`];
/// * creating what exists answers [`Created::AlreadyExisted`] and leaves it untouched.
///
/// `Debug` (which names the monitors, never a key) so that what holds one can derive it.
#[async_trait]
pub trait RbdCluster: Send + Sync + fmt::Debug {
    /// The `mon_host` this client was configured with: how errors and logs name the cluster.
    fn monitors(&self) -> &str;

    /// The cluster's fsid ([`Cluster::fsid`]).
    async fn fsid(&self) -> Result<String, CephError>;

    // ---- pools ------------------------------------------------------------------------

    /// The pool's id ([`Cluster::pool_id`]).
    async fn pool_id(&self, pool: &str) -> Result<i64, CephError>;

    /// When the pool was created, Unix seconds ([`Cluster::pool_created`]).
    async fn pool_created(&self, pool: &str) -> Result<Option<i64>, CephError>;

    /// The pool's quotas and use ([`Cluster::pool_quota`]).
    async fn pool_quota(&self, pool: &str) -> Result<PoolQuota, CephError>;

    /// The applications enabled on the pool ([`Cluster::pool_applications`]).
    async fn pool_applications(&self, pool: &str) -> Result<Vec<String>, CephError>;

    /// Names of the images in the pool, not those in its trash ([`Cluster::list_images`]).
    async fn list_images(&self, pool: &str) -> Result<Vec<String>, CephError>;

    // ---- omap records -------------------------------------------------------------------

    /// Sets omap pairs on an object ([`Cluster::records_set`]).
    async fn records_set(
        &self,
        pool: &str,
        oid: &'static str,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), CephError>;

    /// Removes omap keys of an object ([`Cluster::records_remove`]).
    async fn records_remove(
        &self,
        pool: &str,
        oid: &'static str,
        keys: Vec<String>,
    ) -> Result<(), CephError>;

    /// Every omap pair of an object, by key ([`Cluster::records`]).
    async fn records(
        &self,
        pool: &str,
        oid: &'static str,
    ) -> Result<Vec<(String, Vec<u8>)>, CephError>;

    // ---- images -------------------------------------------------------------------------

    /// Creates an image ([`Cluster::create_image`]).
    async fn create_image(&self, spec: &ImageSpec) -> Result<Created, CephError>;

    /// Clones a snapshot into a new image ([`Cluster::clone_image`]).
    async fn clone_image(&self, spec: &CloneSpec) -> Result<Created, CephError>;

    /// Size, features, id, data pool and parent ([`Cluster::image_info`]).
    async fn image_info(&self, pool: &str, image: &str) -> Result<ImageInfo, CephError>;

    /// Grows an image; never shrinks it ([`Cluster::resize`]).
    async fn resize(&self, pool: &str, image: &str, new_size: u64) -> Result<(), CephError>;

    /// Removes an image ([`Cluster::remove_image`]).
    async fn remove_image(&self, pool: &str, image: &str) -> Result<Removed, CephError>;

    /// Clients having the image open read/write ([`Cluster::watchers`]).
    async fn watchers(&self, pool: &str, image: &str) -> Result<Vec<Watcher>, CephError>;

    /// Info, the given image-meta keys, watchers and snapshots ([`Cluster::inspect`]: one
    /// open). By default the four reads one after the other, with the same answers.
    async fn inspect(
        &self,
        pool: &str,
        image: &str,
        keys: &'static [&'static str],
    ) -> Result<Inspection, CephError> {
        Ok(Inspection {
            info: self.image_info(pool, image).await?,
            metadata: self.metadata(pool, image, keys).await?,
            watchers: self.watchers(pool, image).await?,
            snapshots: self.snap_list(pool, image).await?,
        })
    }

    /// Makes a clone independent of its parent ([`Cluster::flatten`]).
    async fn flatten(&self, pool: &str, image: &str) -> Result<(), CephError>;

    // ---- image-meta (our stamps) --------------------------------------------------------

    /// Sets image-meta keys through an open image ([`Cluster::set_metadata`]).
    async fn set_metadata(
        &self,
        pool: &str,
        image: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<(), CephError>;

    /// Sets image-meta keys without opening the image ([`Cluster::set_metadata_unopened`]).
    async fn set_metadata_unopened(
        &self,
        pool: &str,
        image: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<(), CephError>;

    /// The given image-meta keys that are set ([`Cluster::metadata`]).
    async fn metadata(
        &self,
        pool: &str,
        image: &str,
        keys: &'static [&'static str],
    ) -> Result<BTreeMap<String, String>, CephError>;

    // ---- snapshots ----------------------------------------------------------------------

    /// Creates a snapshot ([`Cluster::snap_create`]).
    async fn snap_create(&self, pool: &str, image: &str, snap: &str) -> Result<Created, CephError>;

    /// Protects a snapshot ([`Cluster::snap_protect`]).
    async fn snap_protect(&self, pool: &str, image: &str, snap: &str) -> Result<(), CephError>;

    /// Unprotects a snapshot ([`Cluster::snap_unprotect`]).
    async fn snap_unprotect(&self, pool: &str, image: &str, snap: &str) -> Result<(), CephError>;

    /// Removes a snapshot ([`Cluster::snap_remove`]).
    async fn snap_remove(&self, pool: &str, image: &str, snap: &str) -> Result<Removed, CephError>;

    /// The snapshots of an image ([`Cluster::snap_list`]).
    async fn snap_list(&self, pool: &str, image: &str) -> Result<Vec<SnapInfo>, CephError>;

    /// The clones of `pool/image@snap` (their pools may differ), including clones in the
    /// trash ([`Cluster::snap_children`]).
    async fn snap_children(
        &self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<Vec<Child>, CephError>;

    // ---- trash --------------------------------------------------------------------------

    /// Moves an image to the trash ([`Cluster::trash_move`]).
    async fn trash_move(
        &self,
        pool: &str,
        image: &str,
        delay_secs: u64,
    ) -> Result<Removed, CephError>;

    /// The entries of the pool's trash ([`Cluster::trash_list`]).
    async fn trash_list(&self, pool: &str) -> Result<Vec<TrashEntry>, CephError>;

    /// Deletes a trash entry by id ([`Cluster::trash_remove`]).
    async fn trash_remove(&self, pool: &str, id: &str, force: bool) -> Result<Removed, CephError>;

    /// The given image-meta keys of an image by id ([`Cluster::trash_metadata`]).
    async fn trash_metadata(
        &self,
        pool: &str,
        id: &str,
        keys: &'static [&'static str],
    ) -> Result<BTreeMap<String, String>, CephError>;

    /// The given image-meta keys and the size of an image by id ([`Cluster::trash_image`]).
    async fn trash_image(
        &self,
        pool: &str,
        id: &str,
        keys: &'static [&'static str],
    ) -> Result<(BTreeMap<String, String>, u64), CephError>;
}

/// Where connected clusters come from: the cache of clients per credentials, as the
/// controllers use it ([`Connections`] documents the contract).
#[async_trait]
pub trait Connector: Send + Sync + fmt::Debug {
    /// The client for these credentials, connecting on first use ([`Connections::get`]).
    async fn get(&self, credentials: &Credentials) -> Result<Arc<dyn RbdCluster>, CephError>;

    /// A client for housekeeping that does not count as a use of the cached one
    /// ([`Connections::borrow`]).
    async fn borrow(&self, credentials: &Credentials) -> Result<Arc<dyn RbdCluster>, CephError>;

    /// Drops the cached client of these credentials; whether there was one
    /// ([`Connections::forget`]).
    fn forget(&self, credentials: &Credentials) -> bool;

    /// Closes idle and unhealthy clients; how many ([`Connections::close_idle`]).
    fn close_idle(&self) -> usize;

    /// Connected clients in the cache ([`Connections::len`]).
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The timeouts every client gets ([`Connections::timeouts`]).
    fn timeouts(&self) -> Timeouts;
}

/// librbd itself. On the `Arc` because every operation hands a clone of it to a blocking
/// thread; an `Arc<Cluster>` therefore is an `RbdCluster` as it is.
#[async_trait]
impl RbdCluster for Arc<Cluster> {
    fn monitors(&self) -> &str {
        Cluster::monitors(self)
    }

    async fn fsid(&self) -> Result<String, CephError> {
        Cluster::fsid(self).await
    }

    async fn pool_id(&self, pool: &str) -> Result<i64, CephError> {
        Cluster::pool_id(self, pool).await
    }

    async fn pool_created(&self, pool: &str) -> Result<Option<i64>, CephError> {
        Cluster::pool_created(self, pool).await
    }

    async fn pool_quota(&self, pool: &str) -> Result<PoolQuota, CephError> {
        Cluster::pool_quota(self, pool).await
    }

    async fn pool_applications(&self, pool: &str) -> Result<Vec<String>, CephError> {
        Cluster::pool_applications(self, pool).await
    }

    async fn list_images(&self, pool: &str) -> Result<Vec<String>, CephError> {
        Cluster::list_images(self, pool).await
    }

    async fn records_set(
        &self,
        pool: &str,
        oid: &'static str,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), CephError> {
        Cluster::records_set(self, pool, oid, pairs).await
    }

    async fn records_remove(
        &self,
        pool: &str,
        oid: &'static str,
        keys: Vec<String>,
    ) -> Result<(), CephError> {
        Cluster::records_remove(self, pool, oid, keys).await
    }

    async fn records(
        &self,
        pool: &str,
        oid: &'static str,
    ) -> Result<Vec<(String, Vec<u8>)>, CephError> {
        Cluster::records(self, pool, oid).await
    }

    async fn create_image(&self, spec: &ImageSpec) -> Result<Created, CephError> {
        Cluster::create_image(self, spec).await
    }

    async fn clone_image(&self, spec: &CloneSpec) -> Result<Created, CephError> {
        Cluster::clone_image(self, spec).await
    }

    async fn image_info(&self, pool: &str, image: &str) -> Result<ImageInfo, CephError> {
        Cluster::image_info(self, pool, image).await
    }

    async fn resize(&self, pool: &str, image: &str, new_size: u64) -> Result<(), CephError> {
        Cluster::resize(self, pool, image, new_size).await
    }

    async fn remove_image(&self, pool: &str, image: &str) -> Result<Removed, CephError> {
        Cluster::remove_image(self, pool, image).await
    }

    async fn inspect(
        &self,
        pool: &str,
        image: &str,
        keys: &'static [&'static str],
    ) -> Result<Inspection, CephError> {
        Cluster::inspect(self, pool, image, keys).await
    }

    async fn watchers(&self, pool: &str, image: &str) -> Result<Vec<Watcher>, CephError> {
        Cluster::watchers(self, pool, image).await
    }

    async fn flatten(&self, pool: &str, image: &str) -> Result<(), CephError> {
        Cluster::flatten(self, pool, image).await
    }

    async fn set_metadata(
        &self,
        pool: &str,
        image: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<(), CephError> {
        Cluster::set_metadata(self, pool, image, pairs).await
    }

    async fn set_metadata_unopened(
        &self,
        pool: &str,
        image: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<(), CephError> {
        Cluster::set_metadata_unopened(self, pool, image, pairs).await
    }

    async fn metadata(
        &self,
        pool: &str,
        image: &str,
        keys: &'static [&'static str],
    ) -> Result<BTreeMap<String, String>, CephError> {
        Cluster::metadata(self, pool, image, keys).await
    }

    async fn snap_create(&self, pool: &str, image: &str, snap: &str) -> Result<Created, CephError> {
        Cluster::snap_create(self, pool, image, snap).await
    }

    async fn snap_protect(&self, pool: &str, image: &str, snap: &str) -> Result<(), CephError> {
        Cluster::snap_protect(self, pool, image, snap).await
    }

    async fn snap_unprotect(&self, pool: &str, image: &str, snap: &str) -> Result<(), CephError> {
        Cluster::snap_unprotect(self, pool, image, snap).await
    }

    async fn snap_remove(&self, pool: &str, image: &str, snap: &str) -> Result<Removed, CephError> {
        Cluster::snap_remove(self, pool, image, snap).await
    }

    async fn snap_list(&self, pool: &str, image: &str) -> Result<Vec<SnapInfo>, CephError> {
        Cluster::snap_list(self, pool, image).await
    }

    async fn snap_children(
        &self,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<Vec<Child>, CephError> {
        Cluster::snap_children(self, pool, image, snap).await
    }

    async fn trash_move(
        &self,
        pool: &str,
        image: &str,
        delay_secs: u64,
    ) -> Result<Removed, CephError> {
        Cluster::trash_move(self, pool, image, delay_secs).await
    }

    async fn trash_list(&self, pool: &str) -> Result<Vec<TrashEntry>, CephError> {
        Cluster::trash_list(self, pool).await
    }

    async fn trash_remove(&self, pool: &str, id: &str, force: bool) -> Result<Removed, CephError> {
        Cluster::trash_remove(self, pool, id, force).await
    }

    async fn trash_metadata(
        &self,
        pool: &str,
        id: &str,
        keys: &'static [&'static str],
    ) -> Result<BTreeMap<String, String>, CephError> {
        Cluster::trash_metadata(self, pool, id, keys).await
    }

    async fn trash_image(
        &self,
        pool: &str,
        id: &str,
        keys: &'static [&'static str],
    ) -> Result<(BTreeMap<String, String>, u64), CephError> {
        Cluster::trash_image(self, pool, id, keys).await
    }
}

#[async_trait]
impl Connector for Connections {
    async fn get(&self, credentials: &Credentials) -> Result<Arc<dyn RbdCluster>, CephError> {
        let cluster = Connections::get(self, credentials).await?;
        Ok(Arc::new(cluster))
    }

    async fn borrow(&self, credentials: &Credentials) -> Result<Arc<dyn RbdCluster>, CephError> {
        let cluster = Connections::borrow(self, credentials).await?;
        Ok(Arc::new(cluster))
    }

    fn forget(&self, credentials: &Credentials) -> bool {
        Connections::forget(self, credentials)
    }

    fn close_idle(&self) -> usize {
        Connections::close_idle(self)
    }

    fn len(&self) -> usize {
        Connections::len(self)
    }

    fn timeouts(&self) -> Timeouts {
        Connections::timeouts(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both traits must stay usable as trait objects: the controllers hold them so.
    #[test]
    fn the_traits_are_dyn_compatible() {
        fn cluster(_: Option<&dyn RbdCluster>) {}
        fn connector(_: Option<&dyn Connector>) {}
        cluster(None);
        connector(None);
        let conns: Box<dyn Connector> = Box::new(Connections::new(Timeouts::default()));
        assert!(conns.is_empty());
        assert_eq!(conns.close_idle(), 0);
        assert_eq!(conns.timeouts(), Timeouts::default());
    }
}
