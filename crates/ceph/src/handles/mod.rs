//! RAII handles over the raw librados/librbd ones, with safe methods. Every `unsafe` block
//! of the Ceph layer lives here (and the declarations in `ffi`), each with its SAFETY note;
//! the methods return plain data and `Errno`s, so the async API above needs none.

use std::ffi::{CStr, CString, c_char, c_int};
use std::marker::PhantomData;
use std::ptr;

use zeroize::Zeroize;

use super::ffi;
use super::types::{Created, Removed, TrashEntry};
use super::{CephError, Errno};

mod held;
mod image;

pub use held::HeldImage;
pub(super) use image::{Image, ImageOptions};

/// Overwrites a buffer that held a secret, its spare capacity included, before freeing it.
pub(crate) fn wipe(mut bytes: Vec<u8>) {
    bytes.zeroize();
}

/// librbd's and librados' versions as (major, minor, extra), e.g. ((1, 16, 0), (3, 0, 0)).
pub fn library_versions() -> ((i32, i32, i32), (i32, i32, i32)) {
    let (mut a, mut b, mut c) = (0, 0, 0);
    let (mut d, mut e, mut f) = (0, 0, 0);
    // SAFETY: both functions only write three ints through the given valid pointers.
    unsafe {
        ffi::rbd_version(&mut a, &mut b, &mut c);
        ffi::rados_version(&mut d, &mut e, &mut f);
    }
    ((a, b, c), (d, e, f))
}

/// A `rados_t`, connected or not; shut down on drop.
#[derive(Debug)]
pub(super) struct Rados(ffi::rados_t);

// SAFETY: librados cluster handles are thread-safe (the C++ RadosClient serialises
// internally); we only ever call thread-safe entry points on them after connect, and
// configuration happens on one thread before the handle is shared.
unsafe impl Send for Rados {}
unsafe impl Sync for Rados {}

impl Drop for Rados {
    fn drop(&mut self) {
        // SAFETY: the handle came from a successful `rados_create` and is shut down once.
        // `rados_shutdown` is valid for both connected and unconnected handles.
        unsafe { ffi::rados_shutdown(self.0) };
    }
}

impl Rados {
    /// `rados_create2("ceph", "client.<user>")`. Not `rados_create`: that leaves the
    /// cluster name empty, and until it is set librados does not apply configuration
    /// changes to its logger, so `err_to_stderr=false` would be ignored during connect
    /// (measured: a wrong key then prints `handle_auth_bad_method` on stderr, a malformed
    /// one even prints the key).
    pub(super) fn create(user: &str) -> Result<Rados, CephError> {
        let cluster = cstr("cluster name", "ceph")?;
        let name = cstr("user", &format!("client.{user}"))?;
        let mut raw: ffi::rados_t = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer; both strings are NUL-terminated and outlive
        // the call.
        let r = unsafe { ffi::rados_create2(&mut raw, cluster.as_ptr(), name.as_ptr(), 0) };
        if r < 0 || raw.is_null() {
            return Err(CephError::Setup {
                user: user.to_string(),
                step: "rados_create2",
                errno: Errno::from_ret(r.into()),
                hint: None,
            });
        }
        Ok(Rados(raw))
    }

    /// `rados_conf_set`; `Err(errno)` on failure.
    pub(super) fn set(&self, option: &str, value: &[u8]) -> Result<(), Errno> {
        let opt = CString::new(option).map_err(|_| Errno(libc::EINVAL))?;
        if value.contains(&0) {
            return Err(Errno(libc::EINVAL));
        }
        let mut buf = Vec::with_capacity(value.len() + 1);
        buf.extend_from_slice(value);
        buf.push(0);
        // SAFETY: handle is valid and unconnected; both strings are NUL-terminated and live
        // across the call (librados copies them).
        let r = unsafe { ffi::rados_conf_set(self.0, opt.as_ptr(), buf.as_ptr().cast::<c_char>()) };
        wipe(buf); // the value may be the key
        if r < 0 {
            Err(Errno::from_ret(r.into()))
        } else {
            Ok(())
        }
    }

    /// `rados_conf_get` (for tests of the configuration; never used for the key).
    #[cfg(test)]
    pub(super) fn get(&self, option: &str) -> Result<String, Errno> {
        let opt = CString::new(option).map_err(|_| Errno(libc::EINVAL))?;
        let mut buf = vec![0u8; 4096];
        // SAFETY: handle is valid; `buf` is writable for `buf.len()` bytes.
        let r = unsafe {
            ffi::rados_conf_get(
                self.0,
                opt.as_ptr(),
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len(),
            )
        };
        if r < 0 {
            return Err(Errno::from_ret(r.into()));
        }
        Ok(c_buf_string(&buf))
    }

    /// `rados_connect` on a configured handle.
    pub(super) fn connect(&self) -> Result<(), Errno> {
        // SAFETY: configured, unconnected handle.
        check(unsafe { ffi::rados_connect(self.0) }).map(drop)
    }

    /// An I/O context on `pool`; a missing pool is [`CephError::Pool`] with ENOENT.
    pub(super) fn ioctx<'c>(&'c self, pool: &str) -> Result<IoCtx<'c>, CephError> {
        let c_pool = cstr("pool", pool)?;
        let mut raw: ffi::rados_ioctx_t = ptr::null_mut();
        // SAFETY: connected handle, NUL-terminated pool name, valid out-pointer.
        let r = unsafe { ffi::rados_ioctx_create(self.0, c_pool.as_ptr(), &mut raw) };
        if r < 0 {
            return Err(CephError::pool_open(pool, Errno::from_ret(r.into())));
        }
        // Without it a write to a pool at its quota waits, unanswered, until the op timeout
        // and reads as ETIMEDOUT ("check the cluster's health"); with it the OSD answers
        // EDQUOT at once, which names the actual cause. Removals are unaffected (a full pool
        // accepts them).
        // SAFETY: the ioctx was just created and is valid.
        unsafe { ffi::rados_set_pool_full_try(raw) };
        Ok(IoCtx {
            raw,
            _rados: PhantomData,
        })
    }

    /// The cluster's fsid (`rados_cluster_fsid`) of a connected handle: known from the
    /// monitor map, so no request is sent.
    pub(super) fn fsid(&self) -> Result<String, Errno> {
        // 36 characters and a NUL; 64 leaves room.
        let mut buf = vec![0u8; 64];
        // SAFETY: connected handle; `buf` writable for its length.
        let r = unsafe {
            ffi::rados_cluster_fsid(self.0, buf.as_mut_ptr().cast::<c_char>(), buf.len())
        };
        let len = usize::try_from(check(r)?).map_err(|_| Errno(libc::ERANGE))?;
        buf.truncate(len.min(buf.len()));
        Ok(c_buf_string(&buf))
    }

    /// Sends one command (JSON) to a monitor; returns its output (what `ceph ... -f json`
    /// prints). The status text goes into errors only when the command failed.
    pub(super) fn mon_command(&self, cmd: &str) -> Result<Vec<u8>, (Errno, String)> {
        let c_cmd = CString::new(cmd).map_err(|_| (Errno(libc::EINVAL), String::new()))?;
        let cmds = [c_cmd.as_ptr()];
        let (mut out, mut out_len) = (ptr::null_mut::<c_char>(), 0usize);
        let (mut status, mut status_len) = (ptr::null_mut::<c_char>(), 0usize);
        // SAFETY: connected handle; one NUL-terminated command that outlives the call; no
        // input buffer; the four out-pointers are valid. librados allocates the replies.
        let r = unsafe {
            ffi::rados_mon_command(
                self.0,
                cmds.as_ptr(),
                1,
                ptr::null(),
                0,
                &mut out,
                &mut out_len,
                &mut status,
                &mut status_len,
            )
        };
        // SAFETY: each buffer is null or `len` bytes that librados allocated; copied, then
        // freed once with `rados_buffer_free`.
        let take = |p: *mut c_char, len: usize| unsafe {
            if p.is_null() {
                return Vec::new();
            }
            let v = std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec();
            ffi::rados_buffer_free(p);
            v
        };
        let (out, status) = (take(out, out_len), take(status, status_len));
        if r < 0 {
            return Err((
                Errno::from_ret(r.into()),
                String::from_utf8_lossy(&status).into_owned(),
            ));
        }
        Ok(out)
    }

    /// The name of the pool with this id.
    pub(super) fn pool_name(&self, id: i64) -> Option<String> {
        let mut buf = vec![0u8; 512];
        // SAFETY: connected handle; `buf` writable for its length.
        let r = unsafe {
            ffi::rados_pool_reverse_lookup(self.0, id, buf.as_mut_ptr().cast::<c_char>(), buf.len())
        };
        (r >= 0).then(|| c_buf_string(&buf))
    }
}

/// A `rados_ioctx_t` on one pool, valid while its cluster handle is.
pub(super) struct IoCtx<'c> {
    raw: ffi::rados_ioctx_t,
    _rados: PhantomData<&'c Rados>,
}

impl Drop for IoCtx<'_> {
    fn drop(&mut self) {
        // SAFETY: created by `rados_ioctx_create`, destroyed once, after every image opened
        // on it (those borrow it) is closed.
        unsafe { ffi::rados_ioctx_destroy(self.raw) };
    }
}

impl IoCtx<'_> {
    pub(super) fn id(&self) -> i64 {
        // SAFETY: valid ioctx.
        unsafe { ffi::rados_ioctx_get_id(self.raw) }
    }

    /// The id of image `name`, read from its `rbd_id.<name>` object (an encoded string), in
    /// one read and without opening the image.
    pub(super) fn image_id(&self, name: &str) -> Result<String, Errno> {
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
        super::encoding::decode_string(&buf[..n.min(buf.len())]).ok_or(Errno(libc::EIO))
    }

    /// Sets image-meta keys of image `id` in one OSD operation: the `rbd` object class's
    /// `metadata_set` on the image header, the call librbd makes once per key, but without
    /// opening the image. Nothing is notified, so only for an image nobody else has open (one
    /// just created).
    pub(super) fn set_metadata_unopened(
        &self,
        id: &str,
        pairs: &[(String, String)],
    ) -> Result<(), Errno> {
        let oid = CString::new(format!("rbd_header.{id}")).map_err(|_| Errno(libc::EINVAL))?;
        let input = super::encoding::encode_string_map(pairs);
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
    pub(super) fn omap_set(&self, oid: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), Errno> {
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
    pub(super) fn omap_remove(&self, oid: &str, keys: &[String]) -> Result<(), Errno> {
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
    pub(super) fn omap_list(&self, oid: &str) -> Result<Vec<(String, Vec<u8>)>, Errno> {
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
    pub(super) fn applications(&self) -> Result<Vec<String>, Errno> {
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
    pub(super) fn open(&self, name: &str, read_only: bool) -> Result<Image<'_>, Errno> {
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
    pub(super) fn open_by_id(&self, id: &str) -> Result<Image<'_>, Errno> {
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
    pub(super) fn create(
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
    pub(super) fn clone_into(
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
    pub(super) fn remove(&self, name: &str) -> Result<Removed, Errno> {
        let c_name = CString::new(name).map_err(|_| Errno(libc::EINVAL))?;
        // SAFETY: valid ioctx; NUL-terminated name.
        removed(unsafe { ffi::rbd_remove(self.raw, c_name.as_ptr()) })
    }

    /// `rbd_trash_move`; a missing image is `Removed::AlreadyGone`.
    pub(super) fn trash_move(&self, name: &str, delay_secs: u64) -> Result<Removed, Errno> {
        let c_name = CString::new(name).map_err(|_| Errno(libc::EINVAL))?;
        // SAFETY: valid ioctx; NUL-terminated name.
        removed(unsafe { ffi::rbd_trash_move(self.raw, c_name.as_ptr(), delay_secs) })
    }

    /// `rbd_trash_remove` by id; a missing id is `Removed::AlreadyGone`.
    pub(super) fn trash_remove(&self, id: &str, force: bool) -> Result<Removed, Errno> {
        let c_id = CString::new(id).map_err(|_| Errno(libc::EINVAL))?;
        // SAFETY: valid ioctx; NUL-terminated id.
        removed(unsafe { ffi::rbd_trash_remove(self.raw, c_id.as_ptr(), force) })
    }

    pub(super) fn trash_list(&self) -> Result<Vec<TrashEntry>, Errno> {
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
    pub(super) fn list(&self) -> Result<Vec<String>, Errno> {
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

fn check(r: c_int) -> Result<c_int, Errno> {
    if r < 0 {
        Err(Errno::from_ret(r.into()))
    } else {
        Ok(r)
    }
}

pub(super) fn removed(r: c_int) -> Result<Removed, Errno> {
    match r {
        r if r == -libc::ENOENT => Ok(Removed::AlreadyGone),
        r => check(r).map(|_| Removed::Removed),
    }
}

pub(super) fn cstr(what: &'static str, s: &str) -> Result<CString, CephError> {
    CString::new(s).map_err(|_| CephError::InvalidArgument {
        what,
        reason: format!("{s:?} contains a NUL byte"),
    })
}

/// The text of a NUL-terminated buffer librados/librbd filled.
fn c_buf_string(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Copies a C string owned by librbd (null → "").
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string valid for the call.
unsafe fn owned(p: *const c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: per the contract above.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Calls a librbd "fill this array, or say how big it must be" function until the array
/// is large enough. `call(ptr, &mut n)` returns the raw result; on -ERANGE `n` holds the
/// needed size. Returns the array and the element count librbd reported in `n`.
fn fill_array<T: ffi::Zeroed>(
    mut call: impl FnMut(*mut T, &mut usize) -> c_int,
) -> Result<(Vec<T>, usize, c_int), Errno> {
    let mut cap = 16usize;
    for _ in 0..8 {
        let mut v: Vec<T> = (0..cap).map(|_| T::zeroed()).collect();
        let mut n = cap;
        let r = call(v.as_mut_ptr(), &mut n);
        if r == -libc::ERANGE {
            cap = n.max(cap * 2);
            continue;
        }
        check(r)?;
        return Ok((v, n.min(cap), r));
    }
    Err(Errno(libc::ERANGE))
}

/// [`fill_array`] for the lists whose entries own memory librbd allocated: converts the
/// entries it filled, then hands them to `cleanup` (librbd's matching `*_cleanup` function).
fn list_array<T: ffi::Zeroed, U>(
    call: impl FnMut(*mut T, &mut usize) -> c_int,
    convert: impl FnMut(&T) -> U,
    cleanup: impl FnOnce(*mut T, usize),
) -> Result<Vec<U>, Errno> {
    let (mut v, n, _) = fill_array(call)?;
    let out = v[..n].iter().map(convert).collect();
    cleanup(v.as_mut_ptr(), n);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    /// What `wipe` relies on zeroize for.
    fn a_wipe_reaches_past_the_length() {
        let mut v = b"  AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==".to_vec();
        // What trimming in place does: the key moves to the front, its tail stays behind.
        v.drain(..2);
        let spare = v.capacity() - v.len();
        assert!(spare >= 2);
        v.zeroize();
        assert!(v.is_empty());
        assert!(
            v.spare_capacity_mut()
                .iter()
                // SAFETY: zeroize wrote every byte of the allocation.
                .all(|b| unsafe { b.assume_init() } == 0),
            "bytes past the length were left"
        );
    }

    #[test]
    fn removed_maps_enoent() {
        assert_eq!(removed(0), Ok(Removed::Removed));
        assert_eq!(removed(-libc::ENOENT), Ok(Removed::AlreadyGone));
        assert_eq!(removed(-libc::EBUSY), Err(Errno(libc::EBUSY)));
    }
}
