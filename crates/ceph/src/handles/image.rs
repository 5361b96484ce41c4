//! An open librbd image and the options images are created with.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char, c_int};
use std::marker::PhantomData;
use std::ptr;

use super::{IoCtx, c_buf_string, check, fill_array, list_array, owned, removed};
use crate::Errno;
use crate::error::Op;
use crate::ffi;
use crate::types::{Child, Created, ImageInfo, ParentSpec, Removed, SnapInfo, Watcher};

/// An open `rbd_image_t`, closed on drop.
pub(crate) struct Image<'io> {
    pub(super) raw: ffi::rbd_image_t,
    pub(super) _io: PhantomData<&'io IoCtx<'io>>,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        // SAFETY: opened by rbd_open*, closed once.
        unsafe { ffi::rbd_close(self.raw) };
    }
}

impl Image<'_> {
    /// What `rbd_stat` and friends say about an open image; `data_pool` and `parent` are left
    /// for the caller to fill.
    pub(crate) fn stat(&self) -> Result<ImageInfo, (Op, Errno)> {
        let mut st = <ffi::rbd_image_info_t as ffi::Zeroed>::zeroed();
        // SAFETY: open image; `st` is a valid output of the declared size.
        check(unsafe {
            ffi::rbd_stat(
                self.raw,
                &mut st,
                std::mem::size_of::<ffi::rbd_image_info_t>(),
            )
        })
        .map_err(|e| (Op::Stat, e))?;
        let mut features = 0u64;
        // SAFETY: open image, valid out-pointer.
        check(unsafe { ffi::rbd_get_features(self.raw, &mut features) })
            .map_err(|e| (Op::GetFeatures, e))?;
        let mut old = 0u8;
        // SAFETY: open image, valid out-pointer.
        check(unsafe { ffi::rbd_get_old_format(self.raw, &mut old) })
            .map_err(|e| (Op::GetFormat, e))?;
        let old_format = old != 0;
        let id = if old_format {
            String::new()
        } else {
            self.id().map_err(|e| (Op::GetId, e))?
        };
        // SAFETY: open image.
        let data_pool_id = unsafe { ffi::rbd_get_data_pool_id(self.raw) };
        if data_pool_id < 0 {
            return Err((Op::GetDataPool, Errno::from_ret(data_pool_id)));
        }
        Ok(ImageInfo {
            size: st.size,
            obj_size: st.obj_size,
            features,
            old_format,
            id,
            data_pool_id,
            data_pool: None,
            parent: None,
        })
    }

    fn id(&self) -> Result<String, Errno> {
        let mut len = 64usize;
        loop {
            let mut buf = vec![0u8; len];
            // SAFETY: open image; `buf` writable for `len` bytes.
            let r =
                unsafe { ffi::rbd_get_id(self.raw, buf.as_mut_ptr().cast::<c_char>(), buf.len()) };
            if r == -libc::ERANGE && len < 1 << 16 {
                len *= 4;
                continue;
            }
            check(r)?;
            return Ok(c_buf_string(&buf));
        }
    }

    pub(crate) fn size(&self) -> Result<u64, Errno> {
        let mut current = 0u64;
        // SAFETY: open image; valid out-pointer.
        check(unsafe { ffi::rbd_get_size(self.raw, &mut current) })?;
        Ok(current)
    }

    /// Grows (never shrinks: `allow_shrink` is false, so librbd refuses should the size
    /// have changed since the caller read it).
    pub(crate) fn grow(&self, size: u64) -> Result<(), Errno> {
        // SAFETY: open read/write image; no progress callback.
        check(unsafe { ffi::rbd_resize2(self.raw, size, false, None, ptr::null_mut()) }).map(drop)
    }

    pub(crate) fn flatten(&self) -> Result<(), Errno> {
        // SAFETY: open read/write image.
        check(unsafe { ffi::rbd_flatten(self.raw) }).map(drop)
    }

    pub(crate) fn parent(&self) -> Result<Option<ParentSpec>, Errno> {
        let mut spec = <ffi::rbd_linked_image_spec_t as ffi::Zeroed>::zeroed();
        let mut snap = <ffi::rbd_snap_spec_t as ffi::Zeroed>::zeroed();
        // SAFETY: open image; valid out-pointers to zeroed structs.
        let r = unsafe { ffi::rbd_get_parent(self.raw, &mut spec, &mut snap) };
        if r == -libc::ENOENT {
            return Ok(None);
        }
        check(r)?;
        // SAFETY: on success librbd filled both structs with NUL-terminated strings it owns
        // until the cleanup calls, which run once.
        let parent = unsafe {
            let p = ParentSpec {
                pool: owned(spec.pool_name),
                image: owned(spec.image_name),
                snap: owned(snap.name),
            };
            ffi::rbd_linked_image_spec_cleanup(&mut spec);
            ffi::rbd_snap_spec_cleanup(&mut snap);
            p
        };
        Ok(Some(parent))
    }

    pub(crate) fn watchers(&self) -> Result<Vec<Watcher>, Errno> {
        list_array(
            |p: *mut ffi::rbd_image_watcher_t, n| {
                // SAFETY: open image; `p` points to at least `*n` zeroed entries.
                unsafe { ffi::rbd_watchers_list(self.raw, p, n) }
            },
            |w| Watcher {
                // SAFETY: filled by librbd: NUL-terminated or null.
                addr: unsafe { owned(w.addr) },
                id: w.id,
                cookie: w.cookie,
            },
            // SAFETY: the first `n` entries were filled by rbd_watchers_list.
            |p, n| unsafe { ffi::rbd_watchers_list_cleanup(p, n) },
        )
    }

    /// One image-meta value; `None` when the key is not set.
    pub(crate) fn metadata(&self, key: &str) -> Result<Option<String>, Errno> {
        let c_key = CString::new(key).map_err(|_| Errno(libc::EINVAL))?;
        let mut cap = 256usize;
        for _ in 0..4 {
            let mut buf = vec![0u8; cap];
            let mut len = cap;
            // SAFETY: open image; NUL-terminated key; `buf` writable for `len` bytes.
            let r = unsafe {
                ffi::rbd_metadata_get(
                    self.raw,
                    c_key.as_ptr(),
                    buf.as_mut_ptr().cast::<c_char>(),
                    &mut len,
                )
            };
            match r {
                r if r == -libc::ENOENT => return Ok(None),
                r if r == -libc::ERANGE => cap = len.max(cap * 2),
                r => {
                    check(r)?;
                    return Ok(Some(c_buf_string(&buf)));
                }
            }
        }
        Err(Errno(libc::ERANGE))
    }

    pub(crate) fn metadata_many(&self, keys: &[&str]) -> Result<BTreeMap<String, String>, Errno> {
        let mut out = BTreeMap::new();
        for k in keys {
            if let Some(v) = self.metadata(k)? {
                out.insert(k.to_string(), v);
            }
        }
        Ok(out)
    }

    pub(crate) fn set_metadata(&self, key: &str, value: &str) -> Result<(), Errno> {
        let nul = |s: &str| CString::new(s).map_err(|_| Errno(libc::EINVAL));
        let (k, v) = (nul(key)?, nul(value)?);
        // SAFETY: open image; NUL-terminated key and value, copied by librbd.
        check(unsafe { ffi::rbd_metadata_set(self.raw, k.as_ptr(), v.as_ptr()) }).map(drop)
    }

    pub(crate) fn snap_create(&self, snap: &CStr) -> Result<Created, Errno> {
        // SAFETY: open read/write image; NUL-terminated snapshot name.
        match unsafe { ffi::rbd_snap_create(self.raw, snap.as_ptr()) } {
            r if r == -libc::EEXIST => Ok(Created::AlreadyExisted),
            r => check(r).map(|_| Created::New),
        }
    }

    pub(crate) fn is_protected(&self, snap: &CStr) -> Result<bool, Errno> {
        let mut p: c_int = 0;
        // SAFETY: open image; NUL-terminated name; valid out-pointer.
        check(unsafe { ffi::rbd_snap_is_protected(self.raw, snap.as_ptr(), &mut p) })?;
        Ok(p != 0)
    }

    /// Protects a snapshot; one protected already (or meanwhile) is fine.
    pub(crate) fn snap_protect(&self, snap: &CStr) -> Result<(), Errno> {
        if self.is_protected(snap)? {
            return Ok(());
        }
        // SAFETY: open read/write image; NUL-terminated snapshot name.
        match unsafe { ffi::rbd_snap_protect(self.raw, snap.as_ptr()) } {
            r if r == -libc::EBUSY => Ok(()),
            r => check(r).map(drop),
        }
    }

    /// Unprotects a snapshot; one unprotected already (or meanwhile) is fine.
    pub(crate) fn snap_unprotect(&self, snap: &CStr) -> Result<(), Errno> {
        if !self.is_protected(snap)? {
            return Ok(());
        }
        // SAFETY: open read/write image; NUL-terminated snapshot name.
        match unsafe { ffi::rbd_snap_unprotect(self.raw, snap.as_ptr()) } {
            r if r == -libc::EINVAL => Ok(()),
            r => check(r).map(drop),
        }
    }

    pub(crate) fn snap_remove(&self, snap: &CStr) -> Result<Removed, Errno> {
        // SAFETY: open read/write image; NUL-terminated snapshot name.
        removed(unsafe { ffi::rbd_snap_remove(self.raw, snap.as_ptr()) })
    }

    /// Unix seconds; 0 when librbd has none (the snapshot went meanwhile), not an error: the
    /// listing itself succeeded.
    fn snap_timestamp(&self, snap_id: u64) -> i64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: open image; valid out-pointer.
        match check(unsafe { ffi::rbd_snap_get_timestamp(self.raw, snap_id, &mut ts) }) {
            Ok(_) => ts.tv_sec,
            Err(_) => 0,
        }
    }

    /// Makes the image read as of `snap` (ENOENT when there is no such snapshot).
    pub(crate) fn snap_set(&self, snap: &CStr) -> Result<(), Errno> {
        // SAFETY: open image; NUL-terminated snapshot name.
        check(unsafe { ffi::rbd_snap_set(self.raw, snap.as_ptr()) }).map(drop)
    }

    /// The clones of the snapshot set with [`Self::snap_set`], sorted by pool and name.
    pub(crate) fn children(&self) -> Result<Vec<Child>, Errno> {
        list_array(
            |p: *mut ffi::rbd_linked_image_spec_t, n| {
                // SAFETY: open image; `p` points to at least `*n` zeroed entries.
                unsafe { ffi::rbd_list_children3(self.raw, p, n) }
            },
            |c| Child {
                // SAFETY: filled by librbd: NUL-terminated or null.
                pool: unsafe { owned(c.pool_name) },
                // SAFETY: as above.
                image: unsafe { owned(c.image_name) },
                // SAFETY: as above.
                id: unsafe { owned(c.image_id) },
                in_trash: c.trash,
            },
            // SAFETY: the first `n` entries were filled by rbd_list_children3.
            |p, n| unsafe { ffi::rbd_linked_image_spec_list_cleanup(p, n) },
        )
    }

    pub(crate) fn snap_list(&self) -> Result<Vec<SnapInfo>, Errno> {
        let (mut v, _, count) = fill_array(|p: *mut ffi::rbd_snap_info_t, n| {
            let mut max = c_int::try_from(*n).unwrap_or(c_int::MAX);
            // SAFETY: open image; `p` points to at least `max` zeroed entries.
            let r = unsafe { ffi::rbd_snap_list(self.raw, p, &mut max) };
            *n = usize::try_from(max).unwrap_or(0);
            r
        })?;
        let count = usize::try_from(count).unwrap_or(0).min(v.len());
        let mut out = Vec::with_capacity(count);
        for s in &v[..count] {
            // SAFETY: filled by librbd: NUL-terminated or null.
            let name = unsafe { owned(s.name) };
            let protected = CString::new(name.clone())
                .map_err(|_| Errno(libc::EINVAL))
                .and_then(|c_name| self.is_protected(&c_name))
                .unwrap_or(false);
            out.push(SnapInfo {
                id: s.id,
                name,
                size: s.size,
                protected,
                timestamp: self.snap_timestamp(s.id),
            });
        }
        // SAFETY: the array was filled by rbd_snap_list, which terminates it with an entry
        // whose name is null; rbd_snap_list_end frees up to there.
        unsafe { ffi::rbd_snap_list_end(v.as_mut_ptr()) };
        Ok(out)
    }
}

/// `rbd_image_options_t`, destroyed on drop.
pub(crate) struct ImageOptions(pub(super) ffi::rbd_image_options_t);

impl Drop for ImageOptions {
    fn drop(&mut self) {
        // SAFETY: created by rbd_image_options_create, destroyed once.
        unsafe { ffi::rbd_image_options_destroy(self.0) };
    }
}

impl ImageOptions {
    fn new() -> ImageOptions {
        let mut raw: ffi::rbd_image_options_t = ptr::null_mut();
        // SAFETY: valid out-pointer.
        unsafe { ffi::rbd_image_options_create(&mut raw) };
        ImageOptions(raw)
    }

    fn set_u64(&self, opt: c_int, v: u64) -> Result<(), Errno> {
        // SAFETY: valid options handle.
        check(unsafe { ffi::rbd_image_options_set_uint64(self.0, opt, v) }).map(drop)
    }

    fn set_str(&self, opt: c_int, v: &str) -> Result<(), Errno> {
        let v = CString::new(v).map_err(|_| Errno(libc::EINVAL))?;
        // SAFETY: valid options handle; NUL-terminated string copied by librbd.
        check(unsafe { ffi::rbd_image_options_set_string(self.0, opt, v.as_ptr()) }).map(drop)
    }

    /// Format 2, exact features, optional data pool, optional clone format.
    pub(crate) fn for_new_image(
        features: u64,
        data_pool: Option<&str>,
        clone_format: Option<u8>,
    ) -> Result<ImageOptions, Errno> {
        let o = ImageOptions::new();
        o.set_u64(ffi::RBD_IMAGE_OPTION_FORMAT, 2)?;
        o.set_u64(ffi::RBD_IMAGE_OPTION_FEATURES, features)?;
        if let Some(dp) = data_pool {
            o.set_str(ffi::RBD_IMAGE_OPTION_DATA_POOL, dp)?;
        }
        if let Some(v) = clone_format {
            o.set_u64(ffi::RBD_IMAGE_OPTION_CLONE_FORMAT, u64::from(v))?;
        }
        Ok(o)
    }
}
