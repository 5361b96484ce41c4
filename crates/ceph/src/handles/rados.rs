//! The cluster handle.

use std::ffi::{CString, c_char};
use std::marker::PhantomData;
use std::ptr;

use super::super::ffi;
use super::super::{CephError, Errno};
use super::*;

/// A `rados_t`, connected or not; shut down on drop.
#[derive(Debug)]
pub(crate) struct Rados(ffi::rados_t);

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
    pub(crate) fn create(user: &str) -> Result<Rados, CephError> {
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
    pub(crate) fn set(&self, option: &str, value: &[u8]) -> Result<(), Errno> {
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
    pub(crate) fn get(&self, option: &str) -> Result<String, Errno> {
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
    pub(crate) fn connect(&self) -> Result<(), Errno> {
        // SAFETY: configured, unconnected handle.
        check(unsafe { ffi::rados_connect(self.0) }).map(drop)
    }

    /// An I/O context on `pool`; a missing pool is [`CephError::Pool`] with ENOENT.
    pub(crate) fn ioctx<'c>(&'c self, pool: &str) -> Result<IoCtx<'c>, CephError> {
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
    pub(crate) fn fsid(&self) -> Result<String, Errno> {
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
    pub(crate) fn mon_command(&self, cmd: &str) -> Result<Vec<u8>, (Errno, String)> {
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
    pub(crate) fn pool_name(&self, id: i64) -> Option<String> {
        let mut buf = vec![0u8; 512];
        // SAFETY: connected handle; `buf` writable for its length.
        let r = unsafe {
            ffi::rados_pool_reverse_lookup(self.0, id, buf.as_mut_ptr().cast::<c_char>(), buf.len())
        };
        (r >= 0).then(|| c_buf_string(&buf))
    }
}
