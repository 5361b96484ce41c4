//! A guard that keeps an image open read/write, as a node that maps it would. For tests.

use super::IoCtx;
use crate::{Errno, ffi};

/// An image held open read/write (so registered as a watcher) until dropped, with its I/O
/// context: what a node that has the image mapped looks like to Ceph. For tests.
pub struct HeldImage {
    image: ffi::rbd_image_t,
    ioctx: ffi::rados_ioctx_t,
    /// Keeps the cluster handle alive as long as the image is open.
    _owner: Box<dyn Send + Sync>,
}

// SAFETY: librbd image handles may be used and closed from any thread; the guard gives no
// access to the handle, it only closes it on drop.
unsafe impl Send for HeldImage {}
unsafe impl Sync for HeldImage {}

impl std::fmt::Debug for HeldImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HeldImage")
    }
}

impl IoCtx<'_> {
    /// Opens `name` read/write and hands image and context to a guard that keeps them open;
    /// `owner` keeps their cluster alive.
    pub(crate) fn hold_open(
        self,
        name: &str,
        owner: Box<dyn Send + Sync>,
    ) -> Result<HeldImage, Errno> {
        let image = self.open(name, false)?;
        let raw = image.raw;
        // Ownership of both raw handles moves to the guard, which releases them.
        std::mem::forget(image);
        let held = HeldImage {
            image: raw,
            ioctx: self.raw,
            _owner: owner,
        };
        std::mem::forget(self);
        Ok(held)
    }
}

impl Drop for HeldImage {
    fn drop(&mut self) {
        // SAFETY: both handles are owned by this guard and released exactly once, image
        // first, while `self._owner` still keeps the rados handle alive.
        unsafe {
            ffi::rbd_close(self.image);
            ffi::rados_ioctx_destroy(self.ioctx);
        }
    }
}
