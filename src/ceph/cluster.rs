//! One connected librados client and the librbd operations on it.
//!
//! Every public operation is `async` and runs its blocking calls on
//! `tokio::task::spawn_blocking` with a clone of the `Arc<Cluster>`. Each operation makes its
//! own I/O context(s) and image handle(s) and releases them before returning, so nothing
//! but the `rados_t` is shared between threads (librados documents that as thread-safe).

use std::collections::BTreeMap;
use std::ffi::{CStr, CString, c_char, c_int};
use std::fmt;
use std::marker::PhantomData;
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::error::{
    AMBIGUOUS_MONITOR_TIMEOUT_HINT, CephError, Errno, connect_hint, has_ambiguous_monitor, op_hint,
    pool_hint,
};
use super::ffi;
use super::{Credentials, Timeouts, wipe};

/// Extra time granted to a connect attempt beyond `client_mount_timeout` before the async
/// side gives up on the blocking thread (librados honours the timeout itself; this is only
/// a safety net against a hang inside the library).
const CONNECT_GRACE: Duration = Duration::from_secs(5);

/// Operations failed in a row (timeouts, lost connections) after which a client is replaced.
const FAILING_LIMIT: u32 = 3;

/// What to create with [`Cluster::create_image`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    pub pool: String,
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Separate pool for the data objects (e.g. an erasure-coded pool); metadata stays in
    /// `pool`. librbd adds [`super::RBD_FEATURE_DATA_POOL`] implicitly.
    pub data_pool: Option<String>,
    /// `RBD_FEATURE_*` bits, e.g. [`super::RBD_FEATURE_LAYERING`]. Set exactly, not merged
    /// with the cluster's `rbd_default_features`.
    pub features: u64,
}

/// What to create with [`Cluster::clone_image`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneSpec {
    pub parent_pool: String,
    pub parent: String,
    pub snap: String,
    pub pool: String,
    pub name: String,
    pub features: u64,
    pub data_pool: Option<String>,
    /// 1 (needs a protected snapshot) or 2 (needs `require_min_compat_client >= mimic`);
    /// `None` lets librbd choose ("auto").
    pub clone_format: Option<u8>,
}

/// Outcome of an idempotent create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Created {
    New,
    /// Something of that name was already there; it was left untouched (its size and
    /// features are not compared: use [`Cluster::image_info`]).
    AlreadyExisted,
}

/// Outcome of an idempotent remove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removed {
    Removed,
    AlreadyGone,
}

/// Parent of a cloned image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentSpec {
    pub pool: String,
    pub image: String,
    pub snap: String,
}

/// What [`Cluster::image_info`] reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub size: u64,
    /// Object size in bytes (`1 << order`).
    pub obj_size: u64,
    pub features: u64,
    /// Format 1 image.
    pub old_format: bool,
    /// librbd image id (empty for format 1 images).
    pub id: String,
    /// Pool id holding the data objects.
    pub data_pool_id: i64,
    /// Name of the data pool when it differs from the image's pool.
    pub data_pool: Option<String>,
    pub parent: Option<ParentSpec>,
}

/// A client watching an image header: someone has the image open read/write (mapped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watcher {
    pub addr: String,
    pub id: i64,
    pub cookie: u64,
}

/// An image in a pool's trash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrashEntry {
    pub id: String,
    pub name: String,
    /// Unix seconds.
    pub deletion_time: i64,
    /// Unix seconds before which removal needs `force`.
    pub deferment_end_time: i64,
}

/// A snapshot of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapInfo {
    pub id: u64,
    pub name: String,
    pub size: u64,
    pub protected: bool,
}

// ---------------------------------------------------------------------------------------
// RAII wrappers around the raw handles (private).

/// A `rados_t`, connected or not; shut down on drop.
#[derive(Debug)]
struct Rados(ffi::rados_t);

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
    fn create(user: &str) -> Result<Rados, CephError> {
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
    fn set(&self, option: &str, value: &[u8]) -> Result<(), Errno> {
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
    fn get(&self, option: &str) -> Result<String, Errno> {
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
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    }
}

/// Options set on every client handle (besides mon_host and key). `required == false`
/// options are cosmetic (logging) and an unknown-option error from an older/newer
/// library is ignored for them.
fn client_options(t: &Timeouts) -> Vec<(&'static str, String, bool)> {
    let connect = whole_secs(t.connect);
    let op = whole_secs(t.op);
    vec![
        // Never fall back to keyring files under /etc/ceph: the key below is the only one.
        ("keyring", String::new(), true),
        ("client_mount_timeout", connect, true),
        ("rados_mon_op_timeout", op.clone(), true),
        ("rados_osd_op_timeout", op, true),
        // Quiet: nothing on stderr, no log file, no admin socket (its "config show" would
        // reveal the key to anyone able to reach the socket).
        ("log_to_stderr", "false".into(), false),
        ("err_to_stderr", "false".into(), false),
        ("log_to_syslog", "false".into(), false),
        ("err_to_syslog", "false".into(), false),
        ("log_to_file", "false".into(), false),
        ("log_file", String::new(), false),
        ("admin_socket", String::new(), false),
    ]
}

/// Whether `key` has the shape of a base64-encoded cephx `CryptoKey`: u16 type, 8-byte
/// creation time, u16 secret length, then that many secret bytes (28 bytes, 40 base64
/// characters for the usual 16-byte AES secret).
fn looks_like_cephx_key(key: &str) -> bool {
    let Some(bytes) = base64_decode(key) else {
        return false;
    };
    if bytes.len() < 12 {
        return false;
    }
    let secret_len = usize::from(u16::from_le_bytes([bytes[10], bytes[11]]));
    secret_len > 0 && bytes.len() == 12 + secret_len
}

/// Strict standard base64 (with padding) decoding; `None` when malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.as_bytes();
    if s.is_empty() || !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let chunks = s.len() / 4;
    for (i, chunk) in s.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = (n << 6) | val(c)?;
        }
        n <<= 6 * pad as u32;
        let b = n.to_be_bytes();
        out.extend_from_slice(&b[1..4 - pad]);
    }
    Some(out)
}

/// Seconds for a Ceph option, rounded up, at least 1 (0 would mean "no timeout").
fn whole_secs(d: Duration) -> String {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1).to_string()
}

fn configure(
    rados: &Rados,
    user: &str,
    mon_host: &str,
    key: &str,
    t: &Timeouts,
) -> Result<(), CephError> {
    let setup = |step: &'static str, errno: Errno, hint: Option<&'static str>| CephError::Setup {
        user: user.to_string(),
        step,
        errno,
        hint,
    };
    rados.set("mon_host", mon_host.as_bytes()).map_err(|e| {
        setup(
            "setting mon_host",
            e,
            Some("check the monitors parameter (comma-separated host:port, v1:/v2: prefixes)"),
        )
    })?;
    rados.set("key", key.as_bytes()).map_err(|e| {
        setup(
            "setting the key",
            e,
            Some("the key must be a base64 cephx key"),
        )
    })?;
    for (option, value, required) in client_options(t) {
        match rados.set(option, value.as_bytes()) {
            Ok(()) => {}
            Err(e) if !required && e.0 == libc::ENOENT => {}
            Err(e) => return Err(setup(option, e, None)),
        }
    }
    Ok(())
}

/// A `rados_ioctx_t` on one pool, valid while its cluster is.
struct IoCtx<'c> {
    raw: ffi::rados_ioctx_t,
    _cluster: PhantomData<&'c Cluster>,
}

impl Drop for IoCtx<'_> {
    fn drop(&mut self) {
        // SAFETY: created by `rados_ioctx_create`, destroyed once, after every image opened
        // on it (those borrow it) is closed.
        unsafe { ffi::rados_ioctx_destroy(self.raw) };
    }
}

impl<'c> IoCtx<'c> {
    fn id(&self) -> i64 {
        // SAFETY: valid ioctx.
        unsafe { ffi::rados_ioctx_get_id(self.raw) }
    }

    /// Opens `name` read-only (no watch) or read/write (registers a watch).
    fn open(&self, name: &str, read_only: bool) -> Result<Image<'_>, Errno> {
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
        if r < 0 {
            return Err(Errno::from_ret(r.into()));
        }
        Ok(Image {
            raw,
            _io: PhantomData,
        })
    }
}

impl IoCtx<'_> {
    /// Opens an image by id, read-only: works for images in the trash, which have no name.
    fn open_by_id(&self, id: &str) -> Result<Image<'_>, Errno> {
        let c_id = CString::new(id).map_err(|_| Errno(libc::EINVAL))?;
        let mut raw: ffi::rbd_image_t = ptr::null_mut();
        // SAFETY: valid ioctx; valid out-pointer; NUL-terminated id; no snapshot.
        let r = unsafe {
            ffi::rbd_open_by_id_read_only(self.raw, c_id.as_ptr(), &mut raw, ptr::null())
        };
        if r < 0 {
            return Err(Errno::from_ret(r.into()));
        }
        Ok(Image {
            raw,
            _io: PhantomData,
        })
    }
}

impl Image<'_> {
    /// One image-meta value; `None` when the key is not set.
    fn metadata(&self, key: &str) -> Result<Option<String>, Errno> {
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
                    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                    return Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()));
                }
            }
        }
        Err(Errno(libc::ERANGE))
    }

    fn metadata_many(&self, keys: &[&str]) -> Result<BTreeMap<String, String>, Errno> {
        let mut out = BTreeMap::new();
        for k in keys {
            if let Some(v) = self.metadata(k)? {
                out.insert(k.to_string(), v);
            }
        }
        Ok(out)
    }
}

/// An open `rbd_image_t`, closed on drop.
struct Image<'io> {
    raw: ffi::rbd_image_t,
    _io: PhantomData<&'io IoCtx<'io>>,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        // SAFETY: opened by rbd_open*, closed once.
        unsafe { ffi::rbd_close(self.raw) };
    }
}

/// `rbd_image_options_t`, destroyed on drop.
struct ImageOptions(ffi::rbd_image_options_t);

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

    /// Format 2, exact features, optional data pool.
    fn for_new_image(features: u64, data_pool: Option<&str>) -> Result<ImageOptions, Errno> {
        let o = ImageOptions::new();
        o.set_u64(ffi::RBD_IMAGE_OPTION_FORMAT, 2)?;
        o.set_u64(ffi::RBD_IMAGE_OPTION_FEATURES, features)?;
        if let Some(dp) = data_pool {
            o.set_str(ffi::RBD_IMAGE_OPTION_DATA_POOL, dp)?;
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

fn cstr(what: &'static str, s: &str) -> Result<CString, CephError> {
    CString::new(s).map_err(|_| CephError::InvalidArgument {
        what,
        reason: format!("{s:?} contains a NUL byte"),
    })
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

// ---------------------------------------------------------------------------------------

/// One connected librados client (`rados_t`). Thread-safe; shut down when the last `Arc`
/// is dropped.
pub struct Cluster {
    rados: Rados,
    monitors: String,
    user: String,
    health: Health,
}

/// Whether a client is still worth handing out, judged from the results of its operations.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Set once an operation showed this client can no longer work (key rotated, caps
    /// revoked, client blocklisted): the cache then connects afresh.
    poisoned: AtomicBool,
    /// Operations failed in a row for reasons other than the object itself.
    failing: AtomicU32,
}

impl Health {
    /// Records one result; true when it just poisoned the client.
    pub(crate) fn observe<T>(&self, r: &Result<T, CephError>) -> bool {
        match r {
            Ok(_) => self.failing.store(0, Ordering::Relaxed),
            Err(e) if e.poisons_client() => return !self.poisoned.swap(true, Ordering::Relaxed),
            // The object's own state (missing, busy, exists) says nothing about the client.
            Err(e) if e.is_not_found() || e.is_busy() || e.is_exists() => {}
            Err(_) => {
                self.failing.fetch_add(1, Ordering::Relaxed);
            }
        }
        false
    }

    pub(crate) fn healthy(&self) -> bool {
        !self.poisoned.load(Ordering::Relaxed)
            && self.failing.load(Ordering::Relaxed) < FAILING_LIMIT
    }
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("monitors", &self.monitors)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects a new client (not cached: see [`super::Connections`]). Fails with
    /// [`CephError::Connect`] after at most about `timeouts.connect`.
    pub async fn connect(c: &Credentials, timeouts: Timeouts) -> Result<Arc<Cluster>, CephError> {
        let creds = c.clone();
        let monitors = creds.monitors.join(",");
        let user = creds.user.clone();
        let started = Instant::now();
        let job = tokio::task::spawn_blocking(move || Cluster::connect_blocking(&creds, &timeouts));
        match tokio::time::timeout(timeouts.connect + CONNECT_GRACE, job).await {
            Ok(joined) => joined
                .map_err(|e| CephError::Task(e.to_string()))?
                .map(Arc::new),
            Err(_) => {
                let errno = Errno(libc::ETIMEDOUT);
                Err(CephError::Connect {
                    hint: connect_failure_hint(&monitors, errno),
                    monitors,
                    user,
                    errno,
                    elapsed_ms: millis(started.elapsed()),
                })
            }
        }
    }

    fn connect_blocking(c: &Credentials, t: &Timeouts) -> Result<Cluster, CephError> {
        let (rados, monitors, user) = Cluster::configured(c, t)?;
        let started = Instant::now();
        // SAFETY: configured, unconnected handle.
        let r = unsafe { ffi::rados_connect(rados.0) };
        let elapsed = started.elapsed();
        if r < 0 {
            let errno = Errno::from_ret(r.into());
            tracing::debug!(%monitors, %user, ?errno, ?elapsed, "ceph connect failed");
            return Err(CephError::Connect {
                hint: connect_failure_hint(&monitors, errno),
                monitors,
                user,
                errno,
                elapsed_ms: millis(elapsed),
            });
        }
        tracing::debug!(%monitors, %user, ?elapsed, "ceph connected");
        Ok(Cluster {
            rados,
            monitors,
            user,
            health: Health::default(),
        })
    }

    /// A created and configured, not yet connected handle.
    fn configured(c: &Credentials, t: &Timeouts) -> Result<(Rados, String, String), CephError> {
        let mons: Vec<&str> = c
            .monitors
            .iter()
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
            .collect();
        if mons.is_empty() {
            return Err(CephError::InvalidArgument {
                what: "monitors",
                reason: "no monitor address given".into(),
            });
        }
        let monitors = mons.join(",");
        let user = c.user.trim();
        let user = user.strip_prefix("client.").unwrap_or(user).to_string();
        if user.is_empty() {
            return Err(CephError::InvalidArgument {
                what: "user",
                reason: "empty cephx user id".into(),
            });
        }
        if !looks_like_cephx_key(c.key.expose().trim()) {
            // Never hand librados a malformed key: it logs the undecodable text.
            return Err(CephError::InvalidArgument {
                what: "key",
                reason: format!(
                    "the key for client.{user} is not a base64 cephx secret \
                     (as printed by `ceph auth get-key client.{user}`)"
                ),
            });
        }
        let rados = Rados::create(&user)?;
        configure(&rados, &user, &monitors, c.key.expose().trim(), t)?;
        Ok((rados, monitors, user))
    }

    /// The `mon_host` this client was configured with.
    pub fn monitors(&self) -> &str {
        &self.monitors
    }

    /// The cephx id (without "client.").
    pub fn user(&self) -> &str {
        &self.user
    }

    async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, CephError>
    where
        T: Send + 'static,
        F: FnOnce(&Arc<Cluster>) -> Result<T, CephError> + Send + 'static,
    {
        let me = Arc::clone(self);
        let r = tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| CephError::Task(e.to_string()))?;
        self.observe(&r);
        r
    }

    fn observe<T>(&self, r: &Result<T, CephError>) {
        if self.health.observe(r)
            && let Err(e) = r
        {
            tracing::warn!(monitors = %self.monitors, user = %self.user, error = %e, "dropping this Ceph client; the next operation connects afresh");
        }
    }

    /// Whether the cache may hand this client out again: not poisoned, and not failing
    /// operation after operation (then a fresh connection is cheaper than more timeouts).
    pub fn healthy(&self) -> bool {
        self.health.healthy()
    }

    fn ioctx<'c>(&'c self, pool: &'c str) -> Result<IoCtx<'c>, CephError> {
        let c_pool = cstr("pool", pool)?;
        let mut raw: ffi::rados_ioctx_t = ptr::null_mut();
        // SAFETY: connected handle, NUL-terminated pool name, valid out-pointer.
        let r = unsafe { ffi::rados_ioctx_create(self.rados.0, c_pool.as_ptr(), &mut raw) };
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
            _cluster: PhantomData,
        })
    }

    fn pool_name(&self, id: i64) -> Option<String> {
        let mut buf = vec![0u8; 512];
        // SAFETY: connected handle; `buf` writable for its length.
        let r = unsafe {
            ffi::rados_pool_reverse_lookup(
                self.rados.0,
                id,
                buf.as_mut_ptr().cast::<c_char>(),
                buf.len(),
            )
        };
        if r < 0 {
            return None;
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Some(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    // ---- image operations -------------------------------------------------------------

    /// Creates a format-2 image with exactly `spec.features`. An existing image of that
    /// name gives `Ok(Created::AlreadyExisted)` and is not touched.
    pub async fn create_image(self: &Arc<Self>, spec: &ImageSpec) -> Result<Created, CephError> {
        let spec = spec.clone();
        self.run(move |c| c.create_image_blocking(&spec)).await
    }

    fn create_image_blocking(&self, spec: &ImageSpec) -> Result<Created, CephError> {
        let io = self.ioctx(&spec.pool)?;
        let name = cstr("image name", &spec.name)?;
        let err = |e| img_err("create", &spec.pool, &spec.name, e);
        let opts =
            ImageOptions::for_new_image(spec.features, spec.data_pool.as_deref()).map_err(err)?;
        let started = Instant::now();
        // SAFETY: valid ioctx, NUL-terminated name, valid options handle.
        let r = unsafe { ffi::rbd_create4(io.raw, name.as_ptr(), spec.size, opts.0) };
        tracing::debug!(pool = %spec.pool, image = %spec.name, r, elapsed = ?started.elapsed(), "rbd_create4");
        match r {
            0 => Ok(Created::New),
            r if r == -libc::EEXIST => Ok(Created::AlreadyExisted),
            r => Err(err(Errno::from_ret(r.into()))),
        }
    }

    /// Size, features, id, data pool and parent of an image, read through a read-only open
    /// (which, unlike a read/write open, does not make us a watcher).
    pub async fn image_info(
        self: &Arc<Self>,
        pool: &str,
        name: &str,
    ) -> Result<ImageInfo, CephError> {
        let (pool, name) = (pool.to_string(), name.to_string());
        self.run(move |c| c.image_info_blocking(&pool, &name)).await
    }

    fn image_info_blocking(&self, pool: &str, name: &str) -> Result<ImageInfo, CephError> {
        let io = self.ioctx(pool)?;
        let err = |op| move |e| img_err(op, pool, name, e);
        let img = io.open(name, true).map_err(err("open"))?;

        let mut st = <ffi::rbd_image_info_t as ffi::Zeroed>::zeroed();
        // SAFETY: open image; `st` is a valid output of the declared size.
        check(unsafe {
            ffi::rbd_stat(
                img.raw,
                &mut st,
                std::mem::size_of::<ffi::rbd_image_info_t>(),
            )
        })
        .map_err(err("stat"))?;
        let mut features = 0u64;
        // SAFETY: open image, valid out-pointer.
        check(unsafe { ffi::rbd_get_features(img.raw, &mut features) })
            .map_err(err("get features"))?;
        let mut old = 0u8;
        // SAFETY: open image, valid out-pointer.
        check(unsafe { ffi::rbd_get_old_format(img.raw, &mut old) }).map_err(err("get format"))?;
        let old_format = old != 0;

        let id = if old_format {
            String::new()
        } else {
            let mut len = 64usize;
            loop {
                let mut buf = vec![0u8; len];
                // SAFETY: open image; `buf` writable for `len` bytes.
                let r = unsafe {
                    ffi::rbd_get_id(img.raw, buf.as_mut_ptr().cast::<c_char>(), buf.len())
                };
                if r == -libc::ERANGE && len < 1 << 16 {
                    len *= 4;
                    continue;
                }
                check(r).map_err(err("get id"))?;
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                break String::from_utf8_lossy(&buf[..end]).into_owned();
            }
        };

        // SAFETY: open image.
        let data_pool_id = unsafe { ffi::rbd_get_data_pool_id(img.raw) };
        if data_pool_id < 0 {
            return Err(err("get data pool")(Errno::from_ret(data_pool_id)));
        }
        let data_pool = if data_pool_id != io.id() {
            Some(
                self.pool_name(data_pool_id)
                    .unwrap_or_else(|| format!("#{data_pool_id}")),
            )
        } else {
            None
        };

        let parent = parent_of(&img).map_err(err("get parent"))?;

        Ok(ImageInfo {
            size: st.size,
            obj_size: st.obj_size,
            features,
            old_format,
            id,
            data_pool_id,
            data_pool,
            parent,
        })
    }

    /// Clients watching the image header (i.e. having it open read/write, e.g. mapped on a
    /// node). Read through a read-only open, so we are not among them.
    pub async fn watchers(
        self: &Arc<Self>,
        pool: &str,
        name: &str,
    ) -> Result<Vec<Watcher>, CephError> {
        let (pool, name) = (pool.to_string(), name.to_string());
        self.run(move |c| c.watchers_blocking(&pool, &name)).await
    }

    fn watchers_blocking(&self, pool: &str, name: &str) -> Result<Vec<Watcher>, CephError> {
        let io = self.ioctx(pool)?;
        let img = io
            .open(name, true)
            .map_err(|e| img_err("open", pool, name, e))?;
        let (mut v, n, _) = fill_array(|p: *mut ffi::rbd_image_watcher_t, n| {
            // SAFETY: open image; `p` points to at least `*n` zeroed entries.
            unsafe { ffi::rbd_watchers_list(img.raw, p, n) }
        })
        .map_err(|e| img_err("list watchers", pool, name, e))?;
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

    /// Grows an image to `new_size` bytes. Equal size is a no-op; a smaller size is refused
    /// with [`CephError::ShrinkRefused`].
    pub async fn resize(
        self: &Arc<Self>,
        pool: &str,
        name: &str,
        new_size: u64,
    ) -> Result<(), CephError> {
        let (pool, name) = (pool.to_string(), name.to_string());
        self.run(move |c| c.resize_blocking(&pool, &name, new_size))
            .await
    }

    fn resize_blocking(&self, pool: &str, name: &str, new_size: u64) -> Result<(), CephError> {
        let io = self.ioctx(pool)?;
        let err = |op| move |e| img_err(op, pool, name, e);
        let img = io.open(name, false).map_err(err("open"))?;
        let mut current = 0u64;
        // SAFETY: open image; valid out-pointer.
        check(unsafe { ffi::rbd_get_size(img.raw, &mut current) }).map_err(err("get size"))?;
        if new_size < current {
            return Err(CephError::ShrinkRefused {
                pool: pool.to_string(),
                image: name.to_string(),
                current,
                requested: new_size,
            });
        }
        if new_size == current {
            return Ok(());
        }
        // SAFETY: open read/write image; no progress callback. allow_shrink=false makes
        // librbd refuse a shrink too, should the size have changed since we read it.
        check(unsafe { ffi::rbd_resize2(img.raw, new_size, false, None, ptr::null_mut()) })
            .map_err(err("resize"))?;
        Ok(())
    }

    /// Removes an image (`rbd_remove`). A missing image is `Ok(Removed::AlreadyGone)`; an
    /// image still open elsewhere fails with EBUSY ([`CephError::is_busy`]), one with
    /// snapshots with ENOTEMPTY.
    pub async fn remove_image(
        self: &Arc<Self>,
        pool: &str,
        name: &str,
    ) -> Result<Removed, CephError> {
        let (pool, name) = (pool.to_string(), name.to_string());
        self.run(move |c| {
            let io = c.ioctx(&pool)?;
            let c_name = cstr("image name", &name)?;
            // SAFETY: valid ioctx; NUL-terminated name.
            let r = unsafe { ffi::rbd_remove(io.raw, c_name.as_ptr()) };
            removed(r).map_err(|e| img_err("remove", &pool, &name, e))
        })
        .await
    }

    /// Moves an image to the pool's trash; it may be removed from there after `delay_secs`
    /// (earlier only with `force`). A missing image is `Ok(Removed::AlreadyGone)`.
    pub async fn trash_move(
        self: &Arc<Self>,
        pool: &str,
        name: &str,
        delay_secs: u64,
    ) -> Result<Removed, CephError> {
        let (pool, name) = (pool.to_string(), name.to_string());
        self.run(move |c| {
            let io = c.ioctx(&pool)?;
            let c_name = cstr("image name", &name)?;
            // SAFETY: valid ioctx; NUL-terminated name.
            let r = unsafe { ffi::rbd_trash_move(io.raw, c_name.as_ptr(), delay_secs) };
            removed(r).map_err(|e| img_err("trash move", &pool, &name, e))
        })
        .await
    }

    /// Sets image-meta keys (`rbd image-meta set`). Opens the image read/write for the
    /// moment it takes.
    pub async fn set_metadata(
        self: &Arc<Self>,
        pool: &str,
        name: &str,
        pairs: Vec<(String, String)>,
    ) -> Result<(), CephError> {
        let (pool, name) = (pool.to_string(), name.to_string());
        self.run(move |c| {
            let io = c.ioctx(&pool)?;
            let err = |e| img_err("set metadata", &pool, &name, e);
            let img = io.open(&name, false).map_err(err)?;
            for (k, v) in &pairs {
                let k = cstr("metadata key", k)?;
                let v = cstr("metadata value", v)?;
                // SAFETY: open image; NUL-terminated key and value, copied by librbd.
                check(unsafe { ffi::rbd_metadata_set(img.raw, k.as_ptr(), v.as_ptr()) })
                    .map_err(err)?;
            }
            Ok(())
        })
        .await
    }

    /// The given image-meta keys of an image (those that are set), read-only.
    pub async fn metadata(
        self: &Arc<Self>,
        pool: &str,
        name: &str,
        keys: &'static [&'static str],
    ) -> Result<BTreeMap<String, String>, CephError> {
        let (pool, name) = (pool.to_string(), name.to_string());
        self.run(move |c| {
            let io = c.ioctx(&pool)?;
            let (p, n) = (pool.as_str(), name.as_str());
            let err = |op| move |e| img_err(op, p, n, e);
            let img = io.open(n, true).map_err(err("open"))?;
            img.metadata_many(keys).map_err(err("read metadata"))
        })
        .await
    }

    /// The given image-meta keys of an image in the trash, by its trash id.
    pub async fn trash_metadata(
        self: &Arc<Self>,
        pool: &str,
        id: &str,
        keys: &'static [&'static str],
    ) -> Result<BTreeMap<String, String>, CephError> {
        let (pool, id) = (pool.to_string(), id.to_string());
        self.run(move |c| {
            let io = c.ioctx(&pool)?;
            let image = format!("(trash id {id})");
            let (p, n) = (pool.as_str(), image.as_str());
            let err = |op| move |e| img_err(op, p, n, e);
            let img = io.open_by_id(&id).map_err(err("open"))?;
            img.metadata_many(keys).map_err(err("read metadata"))
        })
        .await
    }

    /// Images in the pool's trash.
    pub async fn trash_list(self: &Arc<Self>, pool: &str) -> Result<Vec<TrashEntry>, CephError> {
        let pool = pool.to_string();
        self.run(move |c| {
            let io = c.ioctx(&pool)?;
            let (mut v, n, _) = fill_array(|p: *mut ffi::rbd_trash_image_info_t, n| {
                // SAFETY: valid ioctx; `p` points to at least `*n` zeroed entries.
                unsafe { ffi::rbd_trash_list(io.raw, p, n) }
            })
            .map_err(|e| pool_err("trash list", &pool, e))?;
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
        })
        .await
    }

    /// Deletes a trashed image by id. `force` ignores its deferment time. A missing id is
    /// `Ok(Removed::AlreadyGone)`.
    pub async fn trash_remove(
        self: &Arc<Self>,
        pool: &str,
        id: &str,
        force: bool,
    ) -> Result<Removed, CephError> {
        let (pool, id) = (pool.to_string(), id.to_string());
        self.run(move |c| {
            let io = c.ioctx(&pool)?;
            let c_id = cstr("trash id", &id)?;
            // SAFETY: valid ioctx; NUL-terminated id.
            let r = unsafe { ffi::rbd_trash_remove(io.raw, c_id.as_ptr(), force) };
            removed(r).map_err(|e| CephError::Image {
                op: "trash remove",
                pool: pool.clone(),
                image: format!("(trash id {id})"),
                errno: e,
                hint: op_hint("trash remove", e),
            })
        })
        .await
    }

    /// Names of the images in a pool (`rbd_list2`; trashed images are not listed).
    pub async fn list_images(self: &Arc<Self>, pool: &str) -> Result<Vec<String>, CephError> {
        let pool = pool.to_string();
        self.run(move |c| {
            let io = c.ioctx(&pool)?;
            let (mut v, n, _) = fill_array(|p: *mut ffi::rbd_image_spec_t, n| {
                // SAFETY: valid ioctx; `p` points to at least `*n` zeroed entries.
                unsafe { ffi::rbd_list2(io.raw, p, n) }
            })
            .map_err(|e| pool_err("list images", &pool, e))?;
            // SAFETY: filled by librbd: NUL-terminated or null.
            let out = v[..n].iter().map(|s| unsafe { owned(s.name) }).collect();
            // SAFETY: the first `n` entries were filled by rbd_list2.
            unsafe { ffi::rbd_image_spec_list_cleanup(v.as_mut_ptr(), n) };
            Ok(out)
        })
        .await
    }

    // ---- snapshots and clones -----------------------------------------------------------

    /// Creates a snapshot; an existing one of that name is `Ok(Created::AlreadyExisted)`.
    pub async fn snap_create(
        self: &Arc<Self>,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<Created, CephError> {
        self.with_snap(pool, image, snap, "snapshot create", |img, s| {
            // SAFETY: open read/write image; NUL-terminated snapshot name.
            match unsafe { ffi::rbd_snap_create(img.raw, s.as_ptr()) } {
                r if r == -libc::EEXIST => Ok(Created::AlreadyExisted),
                r => check(r).map(|_| Created::New),
            }
        })
        .await
    }

    /// Protects a snapshot (needed before a format-1 clone); already protected is fine.
    pub async fn snap_protect(
        self: &Arc<Self>,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<(), CephError> {
        self.with_snap(pool, image, snap, "snapshot protect", |img, s| {
            if is_protected(img, s)? {
                return Ok(());
            }
            // SAFETY: open read/write image; NUL-terminated snapshot name.
            match unsafe { ffi::rbd_snap_protect(img.raw, s.as_ptr()) } {
                r if r == -libc::EBUSY => Ok(()), // protected meanwhile
                r => check(r).map(drop),
            }
        })
        .await
    }

    /// Unprotects a snapshot; not protected is fine. Fails with EBUSY while clones of it
    /// exist.
    pub async fn snap_unprotect(
        self: &Arc<Self>,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<(), CephError> {
        self.with_snap(pool, image, snap, "snapshot unprotect", |img, s| {
            if !is_protected(img, s)? {
                return Ok(());
            }
            // SAFETY: open read/write image; NUL-terminated snapshot name.
            match unsafe { ffi::rbd_snap_unprotect(img.raw, s.as_ptr()) } {
                r if r == -libc::EINVAL => Ok(()), // unprotected meanwhile
                r => check(r).map(drop),
            }
        })
        .await
    }

    /// Removes a (unprotected) snapshot; a missing one is `Ok(Removed::AlreadyGone)`.
    pub async fn snap_remove(
        self: &Arc<Self>,
        pool: &str,
        image: &str,
        snap: &str,
    ) -> Result<Removed, CephError> {
        self.with_snap(pool, image, snap, "snapshot remove", |img, s| {
            // SAFETY: open read/write image; NUL-terminated snapshot name.
            removed(unsafe { ffi::rbd_snap_remove(img.raw, s.as_ptr()) })
        })
        .await
    }

    /// Snapshots of an image.
    pub async fn snap_list(
        self: &Arc<Self>,
        pool: &str,
        image: &str,
    ) -> Result<Vec<SnapInfo>, CephError> {
        let (pool, image) = (pool.to_string(), image.to_string());
        self.run(move |c| {
            let io = c.ioctx(&pool)?;
            let (p, i) = (pool.as_str(), image.as_str());
            let err = |op| move |e| img_err(op, p, i, e);
            let img = io.open(&image, true).map_err(err("open"))?;
            let (mut v, _, count) = fill_array(|p: *mut ffi::rbd_snap_info_t, n| {
                let mut max = c_int::try_from(*n).unwrap_or(c_int::MAX);
                // SAFETY: open image; `p` points to at least `max` zeroed entries.
                let r = unsafe { ffi::rbd_snap_list(img.raw, p, &mut max) };
                *n = usize::try_from(max).unwrap_or(0);
                r
            })
            .map_err(err("list snapshots"))?;
            let count = usize::try_from(count).unwrap_or(0).min(v.len());
            let mut out = Vec::with_capacity(count);
            for s in &v[..count] {
                // SAFETY: filled by librbd: NUL-terminated or null.
                let name = unsafe { owned(s.name) };
                let protected = CString::new(name.clone())
                    .map_err(|_| Errno(libc::EINVAL))
                    .and_then(|c_name| is_protected(&img, &c_name))
                    .unwrap_or(false);
                out.push(SnapInfo {
                    id: s.id,
                    name,
                    size: s.size,
                    protected,
                });
            }
            // SAFETY: the array was filled by rbd_snap_list, which terminates it with an
            // entry whose name is null; rbd_snap_list_end frees up to there.
            unsafe { ffi::rbd_snap_list_end(v.as_mut_ptr()) };
            Ok(out)
        })
        .await
    }

    async fn with_snap<T, F>(
        self: &Arc<Self>,
        pool: &str,
        image: &str,
        snap: &str,
        op: &'static str,
        f: F,
    ) -> Result<T, CephError>
    where
        T: Send + 'static,
        F: FnOnce(&Image<'_>, &CStr) -> Result<T, Errno> + Send + 'static,
    {
        let (pool, image, snap) = (pool.to_string(), image.to_string(), snap.to_string());
        self.run(move |c| {
            let io = c.ioctx(&pool)?;
            let c_snap = cstr("snapshot name", &snap)?;
            let img = io
                .open(&image, false)
                .map_err(|e| img_err("open", &pool, &image, e))?;
            f(&img, &c_snap).map_err(|errno| CephError::Snapshot {
                op,
                pool: pool.clone(),
                image: image.clone(),
                snap: snap.clone(),
                errno,
                hint: op_hint(op, errno),
            })
        })
        .await
    }

    /// Clones `parent_pool/parent@snap` to `pool/name` (`rbd_clone3`, format 2 image).
    /// An existing child of that name is `Ok(Created::AlreadyExisted)`.
    pub async fn clone_image(self: &Arc<Self>, spec: &CloneSpec) -> Result<Created, CephError> {
        let spec = spec.clone();
        self.run(move |c| c.clone_blocking(&spec)).await
    }

    fn clone_blocking(&self, s: &CloneSpec) -> Result<Created, CephError> {
        let err = |errno: Errno| CephError::Clone {
            parent: format!("{}/{}@{}", s.parent_pool, s.parent, s.snap),
            pool: s.pool.clone(),
            image: s.name.clone(),
            errno,
            hint: op_hint("clone", errno),
        };
        let p_io = self.ioctx(&s.parent_pool)?;
        let c_io = self.ioctx(&s.pool)?;
        let p_name = cstr("parent image name", &s.parent)?;
        let p_snap = cstr("snapshot name", &s.snap)?;
        let c_name = cstr("image name", &s.name)?;
        let opts = ImageOptions::for_new_image(s.features, s.data_pool.as_deref()).map_err(err)?;
        if let Some(v) = s.clone_format {
            opts.set_u64(ffi::RBD_IMAGE_OPTION_CLONE_FORMAT, u64::from(v))
                .map_err(err)?;
        }
        // SAFETY: valid ioctxs, NUL-terminated names, valid options handle.
        let r = unsafe {
            ffi::rbd_clone3(
                p_io.raw,
                p_name.as_ptr(),
                p_snap.as_ptr(),
                c_io.raw,
                c_name.as_ptr(),
                opts.0,
            )
        };
        match r {
            0 => Ok(Created::New),
            r if r == -libc::EEXIST => Ok(Created::AlreadyExisted),
            r => Err(err(Errno::from_ret(r.into()))),
        }
    }

    /// Copies the parent's data into a clone and detaches it. An image without a parent is
    /// left alone (`Ok`).
    pub async fn flatten(self: &Arc<Self>, pool: &str, name: &str) -> Result<(), CephError> {
        let (pool, name) = (pool.to_string(), name.to_string());
        self.run(move |c| {
            let io = c.ioctx(&pool)?;
            let (p, n) = (pool.as_str(), name.as_str());
            let err = |op| move |e| img_err(op, p, n, e);
            let img = io.open(&name, false).map_err(err("open"))?;
            if parent_of(&img).map_err(err("get parent"))?.is_none() {
                return Ok(());
            }
            // SAFETY: open read/write image.
            check(unsafe { ffi::rbd_flatten(img.raw) }).map_err(err("flatten"))?;
            Ok(())
        })
        .await
    }

    /// Opens an image read/write and keeps it open until the returned guard is dropped,
    /// which registers a watch on its header like a mapped volume does. Meant for tests
    /// (simulating "still in use on a node") and diagnostics, not for data I/O.
    pub async fn open_read_write(
        self: &Arc<Self>,
        pool: &str,
        name: &str,
    ) -> Result<HeldImage, CephError> {
        let (pool, name) = (pool.to_string(), name.to_string());
        self.run(move |c| {
            let io = c.ioctx(&pool)?;
            let img = io
                .open(&name, false)
                .map_err(|e| img_err("open", &pool, &name, e))?;
            let held = HeldImage {
                image: img.raw,
                ioctx: io.raw,
                _cluster: Arc::clone(c),
            };
            // Ownership of both raw handles moves to `held`.
            std::mem::forget(img);
            std::mem::forget(io);
            Ok(held)
        })
        .await
    }
}

/// An image kept open read/write (see [`Cluster::open_read_write`]); closing happens on
/// drop (a blocking librbd call).
pub struct HeldImage {
    image: ffi::rbd_image_t,
    ioctx: ffi::rados_ioctx_t,
    /// Keeps the rados handle alive until both handles above are released in `drop`.
    _cluster: Arc<Cluster>,
}

// SAFETY: librbd image handles may be used and closed from any thread; the guard gives no
// access to the handle, it only closes it on drop.
unsafe impl Send for HeldImage {}
unsafe impl Sync for HeldImage {}

impl fmt::Debug for HeldImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeldImage")
    }
}

impl Drop for HeldImage {
    fn drop(&mut self) {
        // SAFETY: both handles are owned by this guard and released exactly once, image
        // first, while `self._cluster` still keeps the rados handle alive.
        unsafe {
            ffi::rbd_close(self.image);
            ffi::rados_ioctx_destroy(self.ioctx);
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn connect_failure_hint(mon_host: &str, errno: Errno) -> Option<&'static str> {
    if errno.0 == libc::ETIMEDOUT && has_ambiguous_monitor(mon_host) {
        Some(AMBIGUOUS_MONITOR_TIMEOUT_HINT)
    } else {
        connect_hint(errno)
    }
}

fn img_err(op: &'static str, pool: &str, image: &str, errno: Errno) -> CephError {
    CephError::Image {
        op,
        pool: pool.to_string(),
        image: image.to_string(),
        errno,
        hint: op_hint(op, errno),
    }
}

fn pool_err(op: &'static str, pool: &str, errno: Errno) -> CephError {
    CephError::PoolOp {
        op,
        pool: pool.to_string(),
        errno,
        hint: op_hint(op, errno),
    }
}

fn removed(r: c_int) -> Result<Removed, Errno> {
    match r {
        r if r == -libc::ENOENT => Ok(Removed::AlreadyGone),
        r => check(r).map(|_| Removed::Removed),
    }
}

fn is_protected(img: &Image<'_>, snap: &CStr) -> Result<bool, Errno> {
    let mut p: c_int = 0;
    // SAFETY: open image; NUL-terminated name; valid out-pointer.
    check(unsafe { ffi::rbd_snap_is_protected(img.raw, snap.as_ptr(), &mut p) })?;
    Ok(p != 0)
}

fn parent_of(img: &Image<'_>) -> Result<Option<ParentSpec>, Errno> {
    let mut spec = <ffi::rbd_linked_image_spec_t as ffi::Zeroed>::zeroed();
    let mut snap = <ffi::rbd_snap_spec_t as ffi::Zeroed>::zeroed();
    // SAFETY: open image; valid out-pointers to zeroed structs.
    let r = unsafe { ffi::rbd_get_parent(img.raw, &mut spec, &mut snap) };
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

#[cfg(test)]
mod tests {
    use super::super::CephKey;
    use super::*;

    fn creds(key: &str) -> Credentials {
        Credentials {
            monitors: vec![" v2:127.0.0.1:13300 ".into(), "127.0.0.1:6789".into()],
            user: "client.kube".into(),
            key: CephKey::new(key),
        }
    }

    /// Configuring a handle needs no cluster: check what is set on it.
    #[test]
    fn handle_is_configured_from_credentials_and_timeouts() {
        let t = Timeouts {
            connect: Duration::from_millis(4500),
            op: Duration::from_secs(7),
        };
        let (rados, monitors, user) =
            Cluster::configured(&creds("AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ=="), &t).unwrap();
        assert_eq!(monitors, "v2:127.0.0.1:13300,127.0.0.1:6789");
        assert_eq!(user, "kube");
        assert_eq!(rados.get("mon_host").unwrap(), monitors);
        let num = |o: &str| rados.get(o).unwrap().parse::<f64>().unwrap();
        assert_eq!(num("client_mount_timeout"), 5.0);
        assert_eq!(num("rados_mon_op_timeout"), 7.0);
        assert_eq!(num("rados_osd_op_timeout"), 7.0);
        assert_eq!(rados.get("log_to_stderr").unwrap(), "false");
        assert_eq!(rados.get("err_to_stderr").unwrap(), "false");
        assert_eq!(rados.get("log_file").unwrap(), "");
        assert_eq!(rados.get("admin_socket").unwrap(), "");
        assert_eq!(rados.get("keyring").unwrap(), "");
    }

    #[test]
    fn every_client_option_is_known_to_librados() {
        let rados = Rados::create("probe").unwrap();
        for (option, value, _) in client_options(&Timeouts::default()) {
            rados
                .set(option, value.as_bytes())
                .unwrap_or_else(|e| panic!("{option}: {e}"));
        }
    }

    #[test]
    fn bad_credentials_are_rejected_before_librados() {
        let t = Timeouts::default();
        let mut c = creds("AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==");
        c.monitors = vec![" ".into()];
        let e = Cluster::configured(&c, &t).unwrap_err();
        assert!(
            matches!(
                e,
                CephError::InvalidArgument {
                    what: "monitors",
                    ..
                }
            ),
            "{e}"
        );

        let mut c = creds("AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==");
        c.user = "client.".into();
        let e = Cluster::configured(&c, &t).unwrap_err();
        assert!(
            matches!(e, CephError::InvalidArgument { what: "user", .. }),
            "{e}"
        );

        let e = Cluster::configured(&creds(""), &t).unwrap_err();
        assert!(
            matches!(e, CephError::InvalidArgument { what: "key", .. }),
            "{e}"
        );

        for bad in [
            "AQD3\0x",
            "AQD3RAdrDpYAMhAA3InAAAAAAAAAmS15WHEQ==",
            "not a key",
            "AQ==",
        ] {
            let e = Cluster::configured(&creds(bad), &t).unwrap_err();
            assert!(
                matches!(e, CephError::InvalidArgument { what: "key", .. }),
                "{e}"
            );
            let text = format!("{e} {e:?}");
            assert!(
                !text.contains("AQ") && !text.contains("not a key"),
                "{text}"
            );
            assert!(text.contains("ceph auth get-key client.kube"), "{text}");
        }
    }

    /// Regression test for a key leak: with `rados_create` (empty cluster name) librados
    /// ignored `err_to_stderr=false` during connect and printed "failed to decode key
    /// '<the key>'" on stderr. Feeds librados a malformed key directly (bypassing our own
    /// validation) with fd 2 pointed at a file, and checks nothing was written there.
    #[test]
    fn librados_stays_silent_on_stderr_even_with_a_malformed_key() {
        let secret = "AQD3RAdrDpYAMhAA3InAAAAAAAAAmS15WHEQ==";
        let t = Timeouts {
            connect: Duration::from_secs(1),
            op: Duration::from_secs(1),
        };
        let path = std::env::temp_dir().join(format!("rbdp-stderr-{}", std::process::id()));
        let file = std::fs::File::create(&path).unwrap();
        let (r, written) = {
            use std::os::fd::AsRawFd;
            // SAFETY: plain fd juggling on this process' own descriptors; fd 2 is restored
            // before returning.
            let saved = unsafe { libc::dup(2) };
            assert!(saved >= 0);
            unsafe { libc::dup2(file.as_raw_fd(), 2) };
            let rados = Rados::create("probe").unwrap();
            configure(&rados, "probe", "127.0.0.1:1", secret, &t).unwrap();
            // SAFETY: configured, unconnected handle.
            let r = unsafe { ffi::rados_connect(rados.0) };
            drop(rados);
            unsafe {
                libc::dup2(saved, 2);
                libc::close(saved);
            }
            (r, std::fs::read_to_string(&path).unwrap())
        };
        let _ = std::fs::remove_file(&path);
        assert!(r < 0, "connect must fail, got {r}");
        assert!(
            !written.contains("AQD3"),
            "librados printed the key: {written}"
        );
        assert_eq!(written, "", "librados wrote to stderr");
    }

    #[test]
    fn cephx_key_shape() {
        assert!(looks_like_cephx_key(
            "AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ=="
        ));
        assert!(looks_like_cephx_key(
            "AQBSdFVo/6O2LBAAzP0Wc1qkD4GiVp2Ds1q76Q=="
        ));
        assert!(!looks_like_cephx_key(
            "AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ"
        )); // no padding
        assert!(!looks_like_cephx_key(
            "AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQAA"
        )); // 30 bytes
        assert!(!looks_like_cephx_key("AQD3RAdr"));
        assert!(!looks_like_cephx_key(""));
        assert_eq!(base64_decode("TWFu").unwrap(), b"Man");
        assert_eq!(base64_decode("TWE=").unwrap(), b"Ma");
        assert_eq!(base64_decode("TQ==").unwrap(), b"M");
        assert_eq!(base64_decode("TQ==TWFu"), None);
        assert_eq!(base64_decode("T!=="), None);
    }

    #[test]
    fn whole_seconds_round_up_and_are_never_zero() {
        assert_eq!(whole_secs(Duration::ZERO), "1");
        assert_eq!(whole_secs(Duration::from_millis(1)), "1");
        assert_eq!(whole_secs(Duration::from_millis(1001)), "2");
        assert_eq!(whole_secs(Duration::from_secs(30)), "30");
    }

    #[test]
    fn clients_that_went_bad_are_not_handed_out_again() {
        let errno_err = |errno: i32| CephError::Image {
            op: "create",
            pool: "kube".into(),
            image: "x".into(),
            errno: Errno(errno),
            hint: None,
        };
        let h = Health::default();
        assert!(h.healthy());
        // What the object is (missing, busy, already there) says nothing about the client.
        for e in [libc::ENOENT, libc::EBUSY, libc::EEXIST] {
            assert!(!h.observe::<()>(&Err(errno_err(e))));
        }
        assert!(h.healthy());
        // Timeouts in a row: a fresh connection is cheaper than more of them.
        for _ in 0..FAILING_LIMIT - 1 {
            h.observe::<()>(&Err(errno_err(libc::ETIMEDOUT)));
        }
        assert!(h.healthy());
        h.observe::<()>(&Ok(()));
        for _ in 0..FAILING_LIMIT {
            h.observe::<()>(&Err(errno_err(libc::ETIMEDOUT)));
        }
        assert!(!h.healthy());
        // A rotated key, revoked caps or a blocklisted client: at once.
        for e in [libc::EACCES, libc::EPERM, libc::ESHUTDOWN] {
            let h = Health::default();
            assert!(
                h.observe::<()>(&Err(errno_err(e))),
                "first poisoning is reported"
            );
            assert!(!h.observe::<()>(&Err(errno_err(e))), "only once");
            assert!(!h.healthy());
            h.observe::<()>(&Ok(()));
            assert!(!h.healthy(), "a poisoned client stays out");
        }
    }

    #[test]
    fn removed_maps_enoent() {
        assert_eq!(removed(0), Ok(Removed::Removed));
        assert_eq!(removed(-libc::ENOENT), Ok(Removed::AlreadyGone));
        assert_eq!(removed(-libc::EBUSY), Err(Errno(libc::EBUSY)));
    }
}
