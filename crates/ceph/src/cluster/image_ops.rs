//! The operations on one image by name, each a few lines over `in_image`, `with_image`,
//! `with_snap` or `at_snap`.

use super::*;

/// The operations on one image by name: each runs its body through `in_image`, or on the image
/// opened by `with_image` (read-only where that is enough, so that we do not become a watcher)
/// or `with_snap` (`at_snap`: read-only at the snapshot); errors name the image (and snapshot)
/// and the operation.
macro_rules! image_ops {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $argt:ty),*) -> $t:ty
            = $via:ident($($how:expr),*) |$($param:pat_param),*| $body:expr;
    )*) => {
        impl Cluster {
            $(
                $(#[$doc])*
                pub async fn $name(
                    self: &Arc<Self>,
                    pool: &str,
                    image: &str,
                    $($arg: $argt),*
                ) -> Result<$t, CephError> {
                    self.$via(pool, image, $($how,)* move |$($param),*| $body).await
                }
            )*
        }
    };
}

image_ops! {
    /// Size, features, id, data pool and parent of an image, read through a read-only open
    /// (which, unlike a read/write open, does not make us a watcher).
    fn image_info() -> ImageInfo = in_image() |c, io, at| {
        let img = io.open(at.image, true).map_err(at.err(Op::Open))?;
        info_of(c, &io, &at, &img)
    };

    /// What a deletion checks (info, the given image-meta keys, watchers, snapshots) through
    /// one read-only open: each open costs several round trips to the OSD, and a burst of
    /// deletions waits on them.
    fn inspect(keys: &'static [&'static str]) -> Inspection = in_image() |c, io, at| {
        let img = io.open(at.image, true).map_err(at.err(Op::Open))?;
        Ok(Inspection {
            info: info_of(c, &io, &at, &img)?,
            metadata: img.metadata_many(keys).map_err(at.err(Op::ReadMetadata))?,
            watchers: img.watchers().map_err(at.err(Op::ListWatchers))?,
            snapshots: img.snap_list().map_err(at.err(Op::ListSnapshots))?,
        })
    };

    /// Grows an image to `new_size` bytes. Equal size is a no-op; a smaller size is refused
    /// with [`CephError::ShrinkRefused`].
    fn resize(new_size: u64) -> () = in_image() |_, io, at| {
        let img = io.open(at.image, false).map_err(at.err(Op::Open))?;
        let current = img.size().map_err(at.err(Op::GetSize))?;
        if new_size < current {
            return Err(CephError::ShrinkRefused {
                pool: at.pool.to_string(),
                image: at.image.to_string(),
                current,
                requested: new_size,
            });
        }
        if new_size > current {
            img.grow(new_size).map_err(at.err(Op::Resize))?;
        }
        Ok(())
    };

    /// Removes an image (`rbd_remove`). A missing image is `Ok(Removed::AlreadyGone)`; an
    /// image still open elsewhere fails with EBUSY ([`CephError::is_busy`]), one with
    /// snapshots with ENOTEMPTY.
    fn remove_image() -> Removed
        = in_image() |_, io, at| io.remove(at.image).map_err(at.err(Op::Remove));

    /// Moves an image to the pool's trash; it may be removed from there after `delay_secs`
    /// (earlier only with `force`). A missing image is `Ok(Removed::AlreadyGone)`.
    fn trash_move(delay_secs: u64) -> Removed
        = in_image() |_, io, at| io.trash_move(at.image, delay_secs).map_err(at.err(Op::TrashMove));

    /// Opens an image read/write and keeps it open (a watcher, like a node that mapped it)
    /// until the guard is dropped. For tests.
    fn open_read_write() -> HeldImage
        = in_image() |c, io, at| io.hold_open(at.image, Box::new(Arc::clone(c))).map_err(at.err(Op::Open));

    /// Clients watching the image header (i.e. having it open read/write, e.g. mapped on a
    /// node). Read through a read-only open, so we are not among them.
    fn watchers() -> Vec<Watcher> = with_image(true, Op::ListWatchers) |img| img.watchers();

    /// Sets image-meta keys (`rbd image-meta set`). Opens the image read/write for the
    /// moment it takes.
    fn set_metadata(pairs: Vec<(String, String)>) -> ()
        = with_image(false, Op::SetMetadata)
        |img| pairs.iter().try_for_each(|(k, v)| img.set_metadata(k, v));

    /// The given image-meta keys of an image (those that are set), read-only.
    fn metadata(keys: &'static [&'static str]) -> BTreeMap<String, String>
        = with_image(true, Op::ReadMetadata) |img| img.metadata_many(keys);

    /// The snapshots of an image, with whether each is protected.
    fn snap_list() -> Vec<SnapInfo> = with_image(true, Op::ListSnapshots) |img| img.snap_list();

    /// The clones of a snapshot, from every pool (so the user needs read access to all),
    /// those in a trash included; sorted by pool, then name, as librbd sorts them.
    fn snap_children(snap: &str) -> Vec<Child>
        = at_snap(snap, Op::ListChildren) |img| img.children();

    /// Copies the parent's data into a clone so it no longer depends on it. No-op for an
    /// image without parent.
    fn flatten() -> () = with_image(false, Op::Flatten) |img| {
        if img.parent()?.is_none() {
            return Ok(());
        }
        img.flatten()
    };

    /// Creates a snapshot; an existing one of that name is `Ok(Created::AlreadyExisted)`.
    fn snap_create(snap: &str) -> Created
        = with_snap(snap, Op::SnapshotCreate) |img, s| img.snap_create(s);

    /// Protects a snapshot (needed before cloning from it); protecting a protected one is
    /// fine.
    fn snap_protect(snap: &str) -> ()
        = with_snap(snap, Op::SnapshotProtect) |img, s| img.snap_protect(s);

    /// Unprotects a snapshot; fails with EBUSY while clones of it exist.
    fn snap_unprotect(snap: &str) -> ()
        = with_snap(snap, Op::SnapshotUnprotect) |img, s| img.snap_unprotect(s);

    /// Removes a (unprotected) snapshot; a missing one is `Ok(Removed::AlreadyGone)`.
    fn snap_remove(snap: &str) -> Removed
        = with_snap(snap, Op::SnapshotRemove) |img, s| img.snap_remove(s);
}

/// Size, features, id, data pool (by name) and parent of an open image.
fn info_of(
    c: &Cluster,
    io: &IoCtx<'_>,
    at: &At<'_>,
    img: &crate::handles::Image<'_>,
) -> Result<ImageInfo, CephError> {
    let mut info = img
        .stat()
        .map_err(|(op, e)| img_err(op, at.pool, at.image, e))?;
    info.data_pool = (info.data_pool_id != io.id()).then(|| {
        c.rados
            .pool_name(info.data_pool_id)
            .unwrap_or_else(|| format!("#{}", info.data_pool_id))
    });
    info.parent = img.parent().map_err(at.err(Op::GetParent))?;
    Ok(info)
}
