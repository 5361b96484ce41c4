//! RAII handles over the raw librados/librbd ones, with safe methods. Every `unsafe` block
//! of the Ceph layer lives here (and the declarations in `ffi`), each with its SAFETY note;
//! the methods return plain data and `Errno`s, so the async API above needs none.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char, c_int};
use std::marker::PhantomData;
use std::ptr;

use super::error::pool_hint;
use super::ffi;
use super::types::{Created, ParentSpec, Removed, SnapInfo, TrashEntry, Watcher};
use super::{CephError, Errno};

/// Overwrites a buffer that held a secret before freeing it.
pub(crate) fn wipe(mut bytes: Vec<u8>) {
    for b in bytes.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference into the vector. The volatile
        // write keeps the compiler from eliding the stores to memory about to be freed.
        unsafe { ptr::write_volatile(b, 0) };
    }
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
            let errno = Errno::from_ret(r.into());
            return Err(CephError::Pool {
                pool: pool.to_string(),
                errno,
                hint: pool_hint(errno),
            });
        }
        Ok(IoCtx {
            raw,
            _rados: PhantomData,
        })
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
        let (mut v, n, _) = fill_array(|p: *mut ffi::rbd_trash_image_info_t, n| {
            // SAFETY: valid ioctx; `p` points to at least `*n` zeroed entries.
            unsafe { ffi::rbd_trash_list(self.raw, p, n) }
        })?;
        let out = v[..n]
            .iter()
            .map(|t| TrashEntry {
                // SAFETY: filled by librbd: NUL-terminated or null.
                id: unsafe { owned(t.id) },
                // SAFETY: as above.
                name: unsafe { owned(t.name) },
                deletion_time: t.deletion_time,
                deferment_end_time: t.deferment_end_time,
            })
            .collect();
        // SAFETY: the first `n` entries were filled by rbd_trash_list.
        unsafe { ffi::rbd_trash_list_cleanup(v.as_mut_ptr(), n) };
        Ok(out)
    }

    /// Names of the images in the pool (`rbd_list2`; trashed images are not listed).
    pub(super) fn list(&self) -> Result<Vec<String>, Errno> {
        let (mut v, n, _) = fill_array(|p: *mut ffi::rbd_image_spec_t, n| {
            // SAFETY: valid ioctx; `p` points to at least `*n` zeroed entries.
            unsafe { ffi::rbd_list2(self.raw, p, n) }
        })?;
        // SAFETY: filled by librbd: NUL-terminated or null.
        let out = v[..n].iter().map(|s| unsafe { owned(s.name) }).collect();
        // SAFETY: the first `n` entries were filled by rbd_list2.
        unsafe { ffi::rbd_image_spec_list_cleanup(v.as_mut_ptr(), n) };
        Ok(out)
    }
}

/// An open `rbd_image_t`, closed on drop.
pub(super) struct Image<'io> {
    raw: ffi::rbd_image_t,
    _io: PhantomData<&'io IoCtx<'io>>,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        // SAFETY: opened by rbd_open*, closed once.
        unsafe { ffi::rbd_close(self.raw) };
    }
}

/// What `rbd_stat` and friends say about an open image.
pub(super) struct Stat {
    pub size: u64,
    pub obj_size: u64,
    pub features: u64,
    pub old_format: bool,
    /// Empty for format-1 images.
    pub id: String,
    pub data_pool_id: i64,
}

impl Image<'_> {
    pub(super) fn stat(&self) -> Result<Stat, (&'static str, Errno)> {
        let mut st = <ffi::rbd_image_info_t as ffi::Zeroed>::zeroed();
        // SAFETY: open image; `st` is a valid output of the declared size.
        check(unsafe {
            ffi::rbd_stat(
                self.raw,
                &mut st,
                std::mem::size_of::<ffi::rbd_image_info_t>(),
            )
        })
        .map_err(|e| ("stat", e))?;
        let mut features = 0u64;
        // SAFETY: open image, valid out-pointer.
        check(unsafe { ffi::rbd_get_features(self.raw, &mut features) })
            .map_err(|e| ("get features", e))?;
        let mut old = 0u8;
        // SAFETY: open image, valid out-pointer.
        check(unsafe { ffi::rbd_get_old_format(self.raw, &mut old) })
            .map_err(|e| ("get format", e))?;
        let old_format = old != 0;
        let id = if old_format {
            String::new()
        } else {
            self.id().map_err(|e| ("get id", e))?
        };
        // SAFETY: open image.
        let data_pool_id = unsafe { ffi::rbd_get_data_pool_id(self.raw) };
        if data_pool_id < 0 {
            return Err(("get data pool", Errno::from_ret(data_pool_id)));
        }
        Ok(Stat {
            size: st.size,
            obj_size: st.obj_size,
            features,
            old_format,
            id,
            data_pool_id,
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

    pub(super) fn size(&self) -> Result<u64, Errno> {
        let mut current = 0u64;
        // SAFETY: open image; valid out-pointer.
        check(unsafe { ffi::rbd_get_size(self.raw, &mut current) })?;
        Ok(current)
    }

    /// Grows (never shrinks: `allow_shrink` is false, so librbd refuses should the size
    /// have changed since the caller read it).
    pub(super) fn grow(&self, size: u64) -> Result<(), Errno> {
        // SAFETY: open read/write image; no progress callback.
        check(unsafe { ffi::rbd_resize2(self.raw, size, false, None, ptr::null_mut()) }).map(drop)
    }

    pub(super) fn flatten(&self) -> Result<(), Errno> {
        // SAFETY: open read/write image.
        check(unsafe { ffi::rbd_flatten(self.raw) }).map(drop)
    }

    pub(super) fn parent(&self) -> Result<Option<ParentSpec>, Errno> {
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

    pub(super) fn watchers(&self) -> Result<Vec<Watcher>, Errno> {
        let (mut v, n, _) = fill_array(|p: *mut ffi::rbd_image_watcher_t, n| {
            // SAFETY: open image; `p` points to at least `*n` zeroed entries.
            unsafe { ffi::rbd_watchers_list(self.raw, p, n) }
        })?;
        let out = v[..n]
            .iter()
            .map(|w| Watcher {
                // SAFETY: filled by librbd: NUL-terminated or null.
                addr: unsafe { owned(w.addr) },
                id: w.id,
                cookie: w.cookie,
            })
            .collect();
        // SAFETY: the first `n` entries were filled by rbd_watchers_list.
        unsafe { ffi::rbd_watchers_list_cleanup(v.as_mut_ptr(), n) };
        Ok(out)
    }

    /// One image-meta value; `None` when the key is not set.
    pub(super) fn metadata(&self, key: &str) -> Result<Option<String>, Errno> {
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

    pub(super) fn metadata_many(&self, keys: &[&str]) -> Result<BTreeMap<String, String>, Errno> {
        let mut out = BTreeMap::new();
        for k in keys {
            if let Some(v) = self.metadata(k)? {
                out.insert(k.to_string(), v);
            }
        }
        Ok(out)
    }

    pub(super) fn set_metadata(&self, key: &str, value: &str) -> Result<(), Errno> {
        let nul = |s: &str| CString::new(s).map_err(|_| Errno(libc::EINVAL));
        let (k, v) = (nul(key)?, nul(value)?);
        // SAFETY: open image; NUL-terminated key and value, copied by librbd.
        check(unsafe { ffi::rbd_metadata_set(self.raw, k.as_ptr(), v.as_ptr()) }).map(drop)
    }

    pub(super) fn snap_create(&self, snap: &CStr) -> Result<Created, Errno> {
        // SAFETY: open read/write image; NUL-terminated snapshot name.
        match unsafe { ffi::rbd_snap_create(self.raw, snap.as_ptr()) } {
            r if r == -libc::EEXIST => Ok(Created::AlreadyExisted),
            r => check(r).map(|_| Created::New),
        }
    }

    pub(super) fn is_protected(&self, snap: &CStr) -> Result<bool, Errno> {
        let mut p: c_int = 0;
        // SAFETY: open image; NUL-terminated name; valid out-pointer.
        check(unsafe { ffi::rbd_snap_is_protected(self.raw, snap.as_ptr(), &mut p) })?;
        Ok(p != 0)
    }

    /// Protects a snapshot; one protected already (or meanwhile) is fine.
    pub(super) fn snap_protect(&self, snap: &CStr) -> Result<(), Errno> {
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
    pub(super) fn snap_unprotect(&self, snap: &CStr) -> Result<(), Errno> {
        if !self.is_protected(snap)? {
            return Ok(());
        }
        // SAFETY: open read/write image; NUL-terminated snapshot name.
        match unsafe { ffi::rbd_snap_unprotect(self.raw, snap.as_ptr()) } {
            r if r == -libc::EINVAL => Ok(()),
            r => check(r).map(drop),
        }
    }

    pub(super) fn snap_remove(&self, snap: &CStr) -> Result<Removed, Errno> {
        // SAFETY: open read/write image; NUL-terminated snapshot name.
        removed(unsafe { ffi::rbd_snap_remove(self.raw, snap.as_ptr()) })
    }

    pub(super) fn snap_list(&self) -> Result<Vec<SnapInfo>, Errno> {
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
            });
        }
        // SAFETY: the array was filled by rbd_snap_list, which terminates it with an entry
        // whose name is null; rbd_snap_list_end frees up to there.
        unsafe { ffi::rbd_snap_list_end(v.as_mut_ptr()) };
        Ok(out)
    }
}

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
    pub(super) fn hold_open(
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

/// `rbd_image_options_t`, destroyed on drop.
pub(super) struct ImageOptions(ffi::rbd_image_options_t);

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
    pub(super) fn for_new_image(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removed_maps_enoent() {
        assert_eq!(removed(0), Ok(Removed::Removed));
        assert_eq!(removed(-libc::ENOENT), Ok(Removed::AlreadyGone));
        assert_eq!(removed(-libc::EBUSY), Err(Errno(libc::EBUSY)));
    }
}
