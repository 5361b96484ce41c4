//! A pool's I/O context: pool-level calls, omap records, images by name, the trash.

use std::ffi::{CString, c_char, c_int};
use std::marker::PhantomData;
use std::ptr;

use super::super::Errno;
use super::super::ffi;
use super::super::types::{Created, Removed, TrashEntry};
use super::*;

/// A `rados_ioctx_t` on one pool, valid while its cluster handle is.
pub(crate) struct IoCtx<'c> {
    pub(super) raw: ffi::rados_ioctx_t,
    pub(super) _rados: PhantomData<&'c Rados>,
}

impl Drop for IoCtx<'_> {
    fn drop(&mut self) {
        // SAFETY: created by `rados_ioctx_create`, destroyed once, after every image opened
        // on it (those borrow it) is closed.
        unsafe { ffi::rados_ioctx_destroy(self.raw) };
    }
}

impl IoCtx<'_> {
    pub(crate) fn id(&self) -> i64 {
        // SAFETY: valid ioctx.
        unsafe { ffi::rados_ioctx_get_id(self.raw) }
    }

    /// The id of image `name`, read from its `rbd_id.<name>` object (an encoded string), in
    /// one read and without opening the image.
    pub(crate) fn image_id(&self, name: &str) -> Result<String, Errno> {
        let oid = CString::new(format!("rbd_id.{name}")).map_err(|_| Errno(libc::EINVAL))?;
        let mut buf = vec![0u8; 128];
        // SAFETY: valid ioctx; NUL-terminated oid; `buf` writable for its length.
        let r = unsafe {
            ffi::rados_read(
                self.raw,
                oid.as_ptr(),
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len(),
                0,
            )
        };
        let n = usize::try_from(check(r)?).map_err(|_| Errno(libc::EIO))?;
        crate::encoding::decode_string(&buf[..n.min(buf.len())]).ok_or(Errno(libc::EIO))
    }

    /// Sets image-meta keys of image `id` in one OSD operation: the `rbd` object class's
    /// `metadata_set` on the image header, the call librbd makes once per key, but without
    /// opening the image. Nothing is notified, so only for an image nobody else has open (one
    /// just created).
    pub(crate) fn set_metadata_unopened(
        &self,
        id: &str,
        pairs: &[(String, String)],
    ) -> Result<(), Errno> {
        let oid = CString::new(format!("rbd_header.{id}")).map_err(|_| Errno(libc::EINVAL))?;
        let input = crate::encoding::encode_string_map(pairs);
        // SAFETY: valid ioctx; NUL-terminated oid, class and method; `input` readable for its
        // length; no output buffer (length 0).
        let r = unsafe {
            ffi::rados_exec(
                self.raw,
                oid.as_ptr(),
                c"rbd".as_ptr(),
                c"metadata_set".as_ptr(),
                input.as_ptr().cast::<c_char>(),
                input.len(),
                ptr::null_mut(),
                0,
            )
        };
        check(r).map(|_| ())
    }

    /// Sets omap pairs on object `oid` (created if missing) in one operation.
    pub(crate) fn omap_set(&self, oid: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), Errno> {
        let keys: Vec<*const c_char> = pairs.iter().map(|(k, _)| k.as_ptr().cast()).collect();
        let key_lens: Vec<usize> = pairs.iter().map(|(k, _)| k.len()).collect();
        let vals: Vec<*const c_char> = pairs.iter().map(|(_, v)| v.as_ptr().cast()).collect();
        let val_lens: Vec<usize> = pairs.iter().map(|(_, v)| v.len()).collect();
        self.write_op(oid, |op| {
            // SAFETY: valid op; four arrays of `pairs.len()` entries pointing into `pairs`,
            // which outlives the operation (librados copies keys and values when queuing).
            unsafe {
                ffi::rados_write_op_omap_set2(
                    op,
                    keys.as_ptr(),
                    vals.as_ptr(),
                    key_lens.as_ptr(),
                    val_lens.as_ptr(),
                    pairs.len(),
                )
            }
        })
    }

    /// Removes omap keys from object `oid`; a missing object or key is not an error.
    pub(crate) fn omap_remove(&self, oid: &str, keys: &[String]) -> Result<(), Errno> {
        let ptrs: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr().cast()).collect();
        let lens: Vec<usize> = keys.iter().map(String::len).collect();
        match self.write_op(oid, |op| {
            // SAFETY: valid op; two arrays of `keys.len()` entries pointing into `keys`.
            unsafe {
                ffi::rados_write_op_omap_rm_keys2(op, ptrs.as_ptr(), lens.as_ptr(), keys.len())
            }
        }) {
            Err(e) if e.0 == libc::ENOENT => Ok(()),
            r => r,
        }
    }

    /// Builds one write operation with `add`, runs it on `oid`, releases it.
    fn write_op(&self, oid: &str, add: impl FnOnce(ffi::rados_write_op_t)) -> Result<(), Errno> {
        let c_oid = CString::new(oid).map_err(|_| Errno(libc::EINVAL))?;
        // SAFETY: returns a new operation (or null when out of memory).
        let op = unsafe { ffi::rados_create_write_op() };
        if op.is_null() {
            return Err(Errno(libc::ENOMEM));
        }
        add(op);
        // SAFETY: valid op and ioctx; NUL-terminated oid; NULL mtime means "now". The op is
        // released once, after it ran.
        let r = unsafe {
            let r = ffi::rados_write_op_operate(op, self.raw, c_oid.as_ptr(), ptr::null_mut(), 0);
            ffi::rados_release_write_op(op);
            r
        };
        check(r).map(drop)
    }

    /// Every omap pair of object `oid`, read in pages; a missing object has none.
    pub(crate) fn omap_list(&self, oid: &str) -> Result<Vec<(String, Vec<u8>)>, Errno> {
        const PAGE: u64 = 1000;
        let c_oid = CString::new(oid).map_err(|_| Errno(libc::EINVAL))?;
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        loop {
            let after = CString::new(out.last().map(|(k, _)| k.as_str()).unwrap_or(""))
                .map_err(|_| Errno(libc::EINVAL))?;
            let (mut iter, mut more, mut prval): (ffi::rados_omap_iter_t, u8, c_int) =
                (ptr::null_mut(), 0, 0);
            // SAFETY: a new op (checked), queued with valid out-pointers that live until it
            // ran; run once on a valid ioctx with a NUL-terminated oid, then released. The
            // iterator is read only after a successful run and ended once.
            let page = unsafe {
                let op = ffi::rados_create_read_op();
                if op.is_null() {
                    return Err(Errno(libc::ENOMEM));
                }
                ffi::rados_read_op_omap_get_vals2(
                    op,
                    after.as_ptr(),
                    ptr::null(),
                    PAGE,
                    &mut iter,
                    &mut more,
                    &mut prval,
                );
                let r = ffi::rados_read_op_operate(op, self.raw, c_oid.as_ptr(), 0);
                ffi::rados_release_read_op(op);
                if r == -libc::ENOENT {
                    return Ok(out);
                }
                check(r)?;
                check(prval)?;
                let mut page = Vec::new();
                loop {
                    let (mut k, mut v, mut kl, mut vl) = (
                        ptr::null_mut::<c_char>(),
                        ptr::null_mut::<c_char>(),
                        0usize,
                        0usize,
                    );
                    let r = ffi::rados_omap_get_next2(iter, &mut k, &mut v, &mut kl, &mut vl);
                    if r < 0 || k.is_null() {
                        ffi::rados_omap_get_end(iter);
                        check(r)?;
                        break;
                    }
                    let key = std::slice::from_raw_parts(k.cast::<u8>(), kl);
                    let val = if v.is_null() {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(v.cast::<u8>(), vl).to_vec()
                    };
                    page.push((String::from_utf8_lossy(key).into_owned(), val));
                }
                page
            };
            let done = page.is_empty() || more == 0;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// The applications enabled on the pool (`rbd` once `rbd pool init` has run).
    pub(crate) fn applications(&self) -> Result<Vec<String>, Errno> {
        let mut buf = vec![0u8; 256];
        loop {
            let mut len = buf.len();
            // SAFETY: valid ioctx; `buf` writable for `len` bytes; valid out-pointer.
            let r = unsafe {
                ffi::rados_application_list(self.raw, buf.as_mut_ptr().cast::<c_char>(), &mut len)
            };
            if r == -libc::ERANGE && len > buf.len() {
                buf.resize(len, 0);
                continue;
            }
            check(r)?;
            buf.truncate(len.min(buf.len()));
            return Ok(buf
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
    }

    /// Opens `name` read-only (no watch) or read/write (registers a watch).
    pub(crate) fn open(&self, name: &str, read_only: bool) -> Result<Image<'_>, Errno> {
        let c_name = CString::new(name).map_err(|_| Errno(libc::EINVAL))?;
        let mut raw: ffi::rbd_image_t = ptr::null_mut();
        // SAFETY: valid ioctx; valid out-pointer; NUL-terminated name; no snapshot.
        let r = unsafe {
            if read_only {
                ffi::rbd_open_read_only(self.raw, c_name.as_ptr(), &mut raw, ptr::null())
            } else {
                ffi::rbd_open(self.raw, c_name.as_ptr(), &mut raw, ptr::null())
            }
        };
        check(r)?;
        Ok(Image {
            raw,
            _io: PhantomData,
        })
    }

    /// Opens an image by id, read-only: works for images in the trash, which have no name.
    pub(crate) fn open_by_id(&self, id: &str) -> Result<Image<'_>, Errno> {
        let c_id = CString::new(id).map_err(|_| Errno(libc::EINVAL))?;
        let mut raw: ffi::rbd_image_t = ptr::null_mut();
        // SAFETY: valid ioctx; valid out-pointer; NUL-terminated id; no snapshot.
        let r = unsafe {
            ffi::rbd_open_by_id_read_only(self.raw, c_id.as_ptr(), &mut raw, ptr::null())
        };
        check(r)?;
        Ok(Image {
            raw,
            _io: PhantomData,
        })
    }

    /// `rbd_create4`; an existing image of that name is `Created::AlreadyExisted`.
    pub(crate) fn create(
        &self,
        name: &str,
        size: u64,
        opts: &ImageOptions,
    ) -> Result<Created, Errno> {
        let c_name = CString::new(name).map_err(|_| Errno(libc::EINVAL))?;
        // SAFETY: valid ioctx, NUL-terminated name, valid options handle.
        match unsafe { ffi::rbd_create4(self.raw, c_name.as_ptr(), size, opts.0) } {
            r if r == -libc::EEXIST => Ok(Created::AlreadyExisted),
            r => check(r).map(|_| Created::New),
        }
    }

    /// `rbd_clone3` of `parent@snap` (in this pool) into `name` in `into`.
    pub(crate) fn clone_into(
        &self,
        parent: &str,
        snap: &str,
        into: &IoCtx<'_>,
        name: &str,
        opts: &ImageOptions,
    ) -> Result<Created, Errno> {
        let nul = |s: &str| CString::new(s).map_err(|_| Errno(libc::EINVAL));
        let (p_name, p_snap, c_name) = (nul(parent)?, nul(snap)?, nul(name)?);
        // SAFETY: valid ioctxs, NUL-terminated names, valid options handle.
        let r = unsafe {
            ffi::rbd_clone3(
                self.raw,
                p_name.as_ptr(),
                p_snap.as_ptr(),
                into.raw,
                c_name.as_ptr(),
                opts.0,
            )
        };
        match r {
            r if r == -libc::EEXIST => Ok(Created::AlreadyExisted),
            r => check(r).map(|_| Created::New),
        }
    }

    /// `rbd_remove`; a missing image is `Removed::AlreadyGone`.
    pub(crate) fn remove(&self, name: &str) -> Result<Removed, Errno> {
        let c_name = CString::new(name).map_err(|_| Errno(libc::EINVAL))?;
        // SAFETY: valid ioctx; NUL-terminated name.
        removed(unsafe { ffi::rbd_remove(self.raw, c_name.as_ptr()) })
    }

    /// `rbd_trash_move`; a missing image is `Removed::AlreadyGone`.
    pub(crate) fn trash_move(&self, name: &str, delay_secs: u64) -> Result<Removed, Errno> {
        let c_name = CString::new(name).map_err(|_| Errno(libc::EINVAL))?;
        // SAFETY: valid ioctx; NUL-terminated name.
        removed(unsafe { ffi::rbd_trash_move(self.raw, c_name.as_ptr(), delay_secs) })
    }

    /// `rbd_trash_remove` by id; a missing id is `Removed::AlreadyGone`.
    pub(crate) fn trash_remove(&self, id: &str, force: bool) -> Result<Removed, Errno> {
        let c_id = CString::new(id).map_err(|_| Errno(libc::EINVAL))?;
        // SAFETY: valid ioctx; NUL-terminated id.
        removed(unsafe { ffi::rbd_trash_remove(self.raw, c_id.as_ptr(), force) })
    }

    pub(crate) fn trash_list(&self) -> Result<Vec<TrashEntry>, Errno> {
        list_array(
            |p: *mut ffi::rbd_trash_image_info_t, n| {
                // SAFETY: valid ioctx; `p` points to at least `*n` zeroed entries.
                unsafe { ffi::rbd_trash_list(self.raw, p, n) }
            },
            |t| TrashEntry {
                // SAFETY: filled by librbd: NUL-terminated or null.
                id: unsafe { owned(t.id) },
                // SAFETY: as above.
                name: unsafe { owned(t.name) },
                deletion_time: t.deletion_time,
                deferment_end_time: t.deferment_end_time,
            },
            // SAFETY: the first `n` entries were filled by rbd_trash_list.
            |p, n| unsafe { ffi::rbd_trash_list_cleanup(p, n) },
        )
    }

    /// Names of the images in the pool (`rbd_list2`; trashed images are not listed).
    pub(crate) fn list(&self) -> Result<Vec<String>, Errno> {
        list_array(
            |p: *mut ffi::rbd_image_spec_t, n| {
                // SAFETY: valid ioctx; `p` points to at least `*n` zeroed entries.
                unsafe { ffi::rbd_list2(self.raw, p, n) }
            },
            // SAFETY: filled by librbd: NUL-terminated or null.
            |s| unsafe { owned(s.name) },
            // SAFETY: the first `n` entries were filled by rbd_list2.
            |p, n| unsafe { ffi::rbd_image_spec_list_cleanup(p, n) },
        )
    }
}
