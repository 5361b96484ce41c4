//! Raw declarations for the parts of librados / librbd (Ceph 16.2 "pacific", librbd 1.16,
//! librados 3.0) that this crate uses, transcribed by hand from
//! `/usr/include/rados/librados.h` and `/usr/include/rbd/librbd.h`.
//!
//! Nothing here leaves `crate`: the safe wrappers in `cluster.rs` are the only users.
//!
//! Struct layouts were checked once against the C headers with gcc on x86_64 (Debian 12):
//!
//! | C type                     | size | field offsets                                              |
//! |----------------------------|------|------------------------------------------------------------|
//! | `rbd_image_spec_t`         | 16   | id 0, name 8                                               |
//! | `rbd_linked_image_spec_t`  | 48   | pool_id 0, pool_name 8, pool_namespace 16, image_id 24, image_name 32, trash 40 |
//! | `rbd_snap_spec_t`          | 24   | id 0, namespace_type 8 (4-byte enum), name 16              |
//! | `rbd_snap_info_t`          | 24   | id 0, size 8, name 16                                      |
//! | `rbd_image_info_t`         | 160  | size 0, obj_size 8, num_objs 16, order 24, block_name_prefix 28, parent_pool 56, parent_name 64 |
//! | `rbd_trash_image_info_t`   | 40   | id 0, name 8, source 16 (4-byte enum), deletion_time 24, deferment_end_time 32 |
//! | `rbd_image_watcher_t`      | 24   | addr 0, id 8, cookie 16                                    |
//!
//! The `const _: () = assert!(..)` blocks below pin these figures at compile time. C enums
//! are declared as `c_int` (4 bytes, checked) rather than Rust enums, so an unknown value from
//! a newer library cannot be undefined behaviour.
#![allow(non_camel_case_types, dead_code)]

use std::ffi::{c_char, c_int, c_void};
use std::mem::{offset_of, size_of};

pub type rados_t = *mut c_void;
pub type rados_ioctx_t = *mut c_void;
pub type rbd_image_t = *mut c_void;
pub type rados_write_op_t = *mut c_void;
pub type rados_read_op_t = *mut c_void;
pub type rados_omap_iter_t = *mut c_void;
pub type rbd_image_options_t = *mut c_void;
pub type librbd_progress_fn_t =
    Option<unsafe extern "C" fn(offset: u64, total: u64, ptr: *mut c_void) -> c_int>;

// Image option keys (the anonymous enum in librbd.h).
pub const RBD_IMAGE_OPTION_FORMAT: c_int = 0;
pub const RBD_IMAGE_OPTION_FEATURES: c_int = 1;
pub const RBD_IMAGE_OPTION_ORDER: c_int = 2;
pub const RBD_IMAGE_OPTION_DATA_POOL: c_int = 10;
pub const RBD_IMAGE_OPTION_CLONE_FORMAT: c_int = 12;

pub const RBD_MAX_IMAGE_NAME_SIZE: usize = 96;
pub const RBD_MAX_BLOCK_NAME_SIZE: usize = 24;

#[repr(C)]
pub struct rbd_image_spec_t {
    pub id: *mut c_char,
    pub name: *mut c_char,
}

#[repr(C)]
pub struct rbd_linked_image_spec_t {
    pub pool_id: i64,
    pub pool_name: *mut c_char,
    pub pool_namespace: *mut c_char,
    pub image_id: *mut c_char,
    pub image_name: *mut c_char,
    pub trash: bool,
}

#[repr(C)]
pub struct rbd_snap_spec_t {
    pub id: u64,
    /// `rbd_snap_namespace_type_t`
    pub namespace_type: c_int,
    pub name: *mut c_char,
}

#[repr(C)]
pub struct rbd_snap_info_t {
    pub id: u64,
    pub size: u64,
    pub name: *const c_char,
}

#[repr(C)]
pub struct rbd_image_info_t {
    pub size: u64,
    pub obj_size: u64,
    pub num_objs: u64,
    pub order: c_int,
    pub block_name_prefix: [c_char; RBD_MAX_BLOCK_NAME_SIZE],
    pub parent_pool: i64,
    pub parent_name: [c_char; RBD_MAX_IMAGE_NAME_SIZE],
}

#[repr(C)]
pub struct rbd_trash_image_info_t {
    pub id: *mut c_char,
    pub name: *mut c_char,
    /// `rbd_trash_image_source_t`
    pub source: c_int,
    pub deletion_time: libc::time_t,
    pub deferment_end_time: libc::time_t,
}

#[repr(C)]
pub struct rbd_image_watcher_t {
    pub addr: *mut c_char,
    pub id: i64,
    pub cookie: u64,
}

/// All-zero (null pointers, zero numbers) values to hand to librbd as output buffers.
pub trait Zeroed: Sized {
    fn zeroed() -> Self {
        // SAFETY: only implemented below for the `#[repr(C)]` structs of this file, whose
        // fields are integers, bools, raw pointers and integer arrays: all-zero is valid
        // for each of them.
        unsafe { std::mem::zeroed() }
    }
}
impl Zeroed for rbd_image_spec_t {}
impl Zeroed for rbd_linked_image_spec_t {}
impl Zeroed for rbd_snap_spec_t {}
impl Zeroed for rbd_snap_info_t {}
impl Zeroed for rbd_image_info_t {}
impl Zeroed for rbd_trash_image_info_t {}
impl Zeroed for rbd_image_watcher_t {}

// ---- layout pins (values measured with gcc against the installed headers, see above) ----

/// Pins a struct's size and its fields' offsets: a build against other headers that moved
/// anything fails here instead of corrupting memory.
macro_rules! pin_layout {
    ($t:ty = $size:literal { $($field:ident: $offset:literal),* $(,)? }) => {
        const _: () = assert!(size_of::<$t>() == $size);
        $(const _: () = assert!(offset_of!($t, $field) == $offset);)*
    };
}

pin_layout!(rbd_image_spec_t = 16 { name: 8 });
pin_layout!(rbd_linked_image_spec_t = 48 {
    pool_name: 8,
    pool_namespace: 16,
    image_id: 24,
    image_name: 32,
    trash: 40,
});
pin_layout!(rbd_snap_spec_t = 24 { namespace_type: 8, name: 16 });
pin_layout!(rbd_snap_info_t = 24 { size: 8, name: 16 });
pin_layout!(rbd_image_info_t = 160 {
    order: 24,
    block_name_prefix: 28,
    parent_pool: 56,
    parent_name: 64,
});
pin_layout!(rbd_trash_image_info_t = 40 {
    name: 8,
    source: 16,
    deletion_time: 24,
    deferment_end_time: 32,
});
pin_layout!(rbd_image_watcher_t = 24 { id: 8, cookie: 16 });

#[link(name = "rados")]
unsafe extern "C" {
    pub fn rados_version(major: *mut c_int, minor: *mut c_int, extra: *mut c_int);
    pub fn rados_create2(
        cluster: *mut rados_t,
        clustername: *const c_char,
        name: *const c_char,
        flags: u64,
    ) -> c_int;
    pub fn rados_conf_set(cluster: rados_t, option: *const c_char, value: *const c_char) -> c_int;
    pub fn rados_conf_get(
        cluster: rados_t,
        option: *const c_char,
        buf: *mut c_char,
        len: usize,
    ) -> c_int;
    pub fn rados_connect(cluster: rados_t) -> c_int;
    pub fn rados_shutdown(cluster: rados_t);
    pub fn rados_ioctx_create(
        cluster: rados_t,
        pool_name: *const c_char,
        ioctx: *mut rados_ioctx_t,
    ) -> c_int;
    pub fn rados_ioctx_destroy(io: rados_ioctx_t);
    /// Writes of this ioctx to a full pool fail (EDQUOT for a quota, ENOSPC for a full
    /// cluster) instead of waiting until the pool has room.
    pub fn rados_set_pool_full_try(io: rados_ioctx_t);
    pub fn rados_ioctx_get_id(io: rados_ioctx_t) -> i64;
    pub fn rados_pool_reverse_lookup(
        cluster: rados_t,
        id: i64,
        buf: *mut c_char,
        maxlen: usize,
    ) -> c_int;
    /// Writes the cluster's fsid (36 characters, NUL-terminated when it fits) into `buf`;
    /// returns its length, or -ERANGE when `len` is too small.
    pub fn rados_cluster_fsid(cluster: rados_t, buf: *mut c_char, len: usize) -> c_int;
    /// Writes the names of the applications enabled on the pool, each NUL-terminated, into
    /// `values`; -ERANGE with `values_len` set to the size needed when it does not fit.
    pub fn rados_read(
        io: rados_ioctx_t,
        oid: *const c_char,
        buf: *mut c_char,
        len: usize,
        off: u64,
    ) -> c_int;
    pub fn rados_exec(
        io: rados_ioctx_t,
        oid: *const c_char,
        cls: *const c_char,
        method: *const c_char,
        in_buf: *const c_char,
        in_len: usize,
        buf: *mut c_char,
        out_len: usize,
    ) -> c_int;
    pub fn rados_application_list(
        io: rados_ioctx_t,
        values: *mut c_char,
        values_len: *mut usize,
    ) -> c_int;

    // Compound operations on one object: the omap of the provisioner's intent records.
    pub fn rados_create_write_op() -> rados_write_op_t;
    pub fn rados_release_write_op(op: rados_write_op_t);
    pub fn rados_write_op_omap_set2(
        op: rados_write_op_t,
        keys: *const *const c_char,
        vals: *const *const c_char,
        key_lens: *const usize,
        val_lens: *const usize,
        num: usize,
    );
    pub fn rados_write_op_omap_rm_keys2(
        op: rados_write_op_t,
        keys: *const *const c_char,
        key_lens: *const usize,
        num: usize,
    );
    /// `mtime` NULL: the current time.
    pub fn rados_write_op_operate(
        op: rados_write_op_t,
        io: rados_ioctx_t,
        oid: *const c_char,
        mtime: *mut libc::time_t,
        flags: c_int,
    ) -> c_int;
    pub fn rados_create_read_op() -> rados_read_op_t;
    pub fn rados_release_read_op(op: rados_read_op_t);
    /// Queues a read of up to `max_return` omap pairs after `start_after`; `iter`, `more` and
    /// `prval` are filled when the operation runs.
    pub fn rados_read_op_omap_get_vals2(
        op: rados_read_op_t,
        start_after: *const c_char,
        filter_prefix: *const c_char,
        max_return: u64,
        iter: *mut rados_omap_iter_t,
        more: *mut u8,
        prval: *mut c_int,
    );
    pub fn rados_read_op_operate(
        op: rados_read_op_t,
        io: rados_ioctx_t,
        oid: *const c_char,
        flags: c_int,
    ) -> c_int;
    /// The next pair, valid until `rados_omap_get_end`; both NULL at the end.
    pub fn rados_omap_get_next2(
        iter: rados_omap_iter_t,
        key: *mut *mut c_char,
        val: *mut *mut c_char,
        key_len: *mut usize,
        val_len: *mut usize,
    ) -> c_int;
    pub fn rados_omap_get_end(iter: rados_omap_iter_t);

    /// Sends a command to a monitor; the reply buffers are freed with `rados_buffer_free`.
    pub fn rados_mon_command(
        cluster: rados_t,
        cmd: *const *const c_char,
        cmdlen: usize,
        inbuf: *const c_char,
        inbuflen: usize,
        outbuf: *mut *mut c_char,
        outbuflen: *mut usize,
        outs: *mut *mut c_char,
        outslen: *mut usize,
    ) -> c_int;
    pub fn rados_buffer_free(buf: *mut c_char);
}

#[link(name = "rbd")]
unsafe extern "C" {
    pub fn rbd_version(major: *mut c_int, minor: *mut c_int, extra: *mut c_int);

    pub fn rbd_image_options_create(opts: *mut rbd_image_options_t);
    pub fn rbd_image_options_destroy(opts: rbd_image_options_t);
    pub fn rbd_image_options_set_string(
        opts: rbd_image_options_t,
        optname: c_int,
        optval: *const c_char,
    ) -> c_int;
    pub fn rbd_image_options_set_uint64(
        opts: rbd_image_options_t,
        optname: c_int,
        optval: u64,
    ) -> c_int;

    pub fn rbd_image_spec_list_cleanup(images: *mut rbd_image_spec_t, num_images: usize);
    pub fn rbd_linked_image_spec_cleanup(image: *mut rbd_linked_image_spec_t);
    pub fn rbd_linked_image_spec_list_cleanup(
        images: *mut rbd_linked_image_spec_t,
        num_images: usize,
    );
    pub fn rbd_snap_spec_cleanup(snap: *mut rbd_snap_spec_t);

    pub fn rbd_list2(io: rados_ioctx_t, images: *mut rbd_image_spec_t, max: *mut usize) -> c_int;
    pub fn rbd_create4(
        io: rados_ioctx_t,
        name: *const c_char,
        size: u64,
        opts: rbd_image_options_t,
    ) -> c_int;
    pub fn rbd_clone3(
        p_ioctx: rados_ioctx_t,
        p_name: *const c_char,
        p_snapname: *const c_char,
        c_ioctx: rados_ioctx_t,
        c_name: *const c_char,
        c_opts: rbd_image_options_t,
    ) -> c_int;
    pub fn rbd_remove(io: rados_ioctx_t, name: *const c_char) -> c_int;

    pub fn rbd_trash_move(io: rados_ioctx_t, name: *const c_char, delay: u64) -> c_int;
    pub fn rbd_trash_list(
        io: rados_ioctx_t,
        entries: *mut rbd_trash_image_info_t,
        num_entries: *mut usize,
    ) -> c_int;
    pub fn rbd_trash_list_cleanup(entries: *mut rbd_trash_image_info_t, num_entries: usize);
    pub fn rbd_trash_remove(io: rados_ioctx_t, id: *const c_char, force: bool) -> c_int;

    pub fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_open_read_only(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_open_by_id_read_only(
        io: rados_ioctx_t,
        id: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_close(image: rbd_image_t) -> c_int;

    pub fn rbd_metadata_get(
        image: rbd_image_t,
        key: *const c_char,
        value: *mut c_char,
        val_len: *mut usize,
    ) -> c_int;
    pub fn rbd_metadata_set(image: rbd_image_t, key: *const c_char, value: *const c_char) -> c_int;

    pub fn rbd_resize2(
        image: rbd_image_t,
        size: u64,
        allow_shrink: bool,
        cb: librbd_progress_fn_t,
        cbdata: *mut c_void,
    ) -> c_int;
    pub fn rbd_stat(image: rbd_image_t, info: *mut rbd_image_info_t, infosize: usize) -> c_int;
    pub fn rbd_get_old_format(image: rbd_image_t, old: *mut u8) -> c_int;
    pub fn rbd_get_size(image: rbd_image_t, size: *mut u64) -> c_int;
    pub fn rbd_get_features(image: rbd_image_t, features: *mut u64) -> c_int;
    pub fn rbd_get_id(image: rbd_image_t, id: *mut c_char, id_len: usize) -> c_int;
    pub fn rbd_get_data_pool_id(image: rbd_image_t) -> i64;
    pub fn rbd_get_parent(
        image: rbd_image_t,
        parent_image: *mut rbd_linked_image_spec_t,
        parent_snap: *mut rbd_snap_spec_t,
    ) -> c_int;

    pub fn rbd_snap_list(image: rbd_image_t, snaps: *mut rbd_snap_info_t, max: *mut c_int)
    -> c_int;
    pub fn rbd_snap_list_end(snaps: *mut rbd_snap_info_t);
    pub fn rbd_snap_create(image: rbd_image_t, snapname: *const c_char) -> c_int;
    pub fn rbd_snap_remove(image: rbd_image_t, snapname: *const c_char) -> c_int;
    pub fn rbd_snap_protect(image: rbd_image_t, snap_name: *const c_char) -> c_int;
    pub fn rbd_snap_unprotect(image: rbd_image_t, snap_name: *const c_char) -> c_int;
    pub fn rbd_snap_is_protected(
        image: rbd_image_t,
        snap_name: *const c_char,
        is_protected: *mut c_int,
    ) -> c_int;
    pub fn rbd_snap_get_timestamp(
        image: rbd_image_t,
        snap_id: u64,
        timestamp: *mut libc::timespec,
    ) -> c_int;
    /// Reads of the image then see the snapshot; `snapname` NULL goes back to the head.
    pub fn rbd_snap_set(image: rbd_image_t, snapname: *const c_char) -> c_int;

    pub fn rbd_flatten(image: rbd_image_t) -> c_int;

    /// The clones of the snapshot set with `rbd_snap_set` (of every snapshot when none is),
    /// from every pool; -ERANGE with `max_images` set to the count needed when it does not fit.
    pub fn rbd_list_children3(
        image: rbd_image_t,
        images: *mut rbd_linked_image_spec_t,
        max_images: *mut usize,
    ) -> c_int;

    pub fn rbd_watchers_list(
        image: rbd_image_t,
        watchers: *mut rbd_image_watcher_t,
        max_watchers: *mut usize,
    ) -> c_int;
    pub fn rbd_watchers_list_cleanup(watchers: *mut rbd_image_watcher_t, num_watchers: usize);
}
