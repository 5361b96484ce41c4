//! RAII handles over the raw librados/librbd ones, with safe methods. Every `unsafe` block
//! of the Ceph layer lives here (and the declarations in `ffi`), each with its SAFETY note;
//! the methods return plain data and `Errno`s, so the async API above needs none.

use std::ffi::{CStr, CString, c_char, c_int};

use zeroize::Zeroize;

use super::ffi;
use super::types::Removed;
use super::{CephError, Errno};

mod held;
mod image;
mod ioctx;
mod rados;

pub use held::HeldImage;
pub(super) use image::{Image, ImageOptions};
pub(crate) use ioctx::IoCtx;
pub(crate) use rados::Rados;

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
