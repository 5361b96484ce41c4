//! Calls on the process itself: memory handed back to the kernel, core dumps forbidden, the
//! exit that skips C++ static destructors. The binary's only `unsafe`, each block with its
//! SAFETY note.

#![allow(unsafe_code)]

/// Hands the heap's free pages back to the kernel (glibc `malloc_trim(0)`). A burst of watch
/// events and librados replies leaves freed memory scattered through the arenas, which glibc
/// keeps resident: measured with 1,000 PVs and claims cached, about 9 MiB of 27 MiB of heap was
/// free but resident.
pub fn release_free_heap() -> bool {
    // SAFETY: malloc_trim takes the arena locks itself and touches no memory in use.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// glibc malloc arenas the process may have (the main one included).
const MALLOC_ARENAS: libc::c_int = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`]. Otherwise threads that allocate get arenas
/// of their own, up to eight per core, and memory freed across many arenas stays resident in
/// fragments: an hour of create/delete cycles grew RssAnon 0.7 KB a cycle while the heap in use
/// stayed flat; with two arenas it stayed flat too (BENCHMARKS.md, the soak). Call before any
/// other thread starts: glibc fixes the limit when a thread first needs an arena.
pub fn limit_malloc_arenas() -> bool {
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) == 1 }
}

/// How many malloc arenas the process has (glibc `malloc_info`'s `<heap>` entries).
#[cfg(test)]
fn malloc_arenas() -> usize {
    let path = std::env::temp_dir().join(format!("rbdp-malloc-info-{}", std::process::id()));
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a file opened and closed here; malloc_info writes to it and reads no memory of ours.
    unsafe {
        let f = libc::fopen(c_path.as_ptr(), c"w".as_ptr());
        assert!(!f.is_null());
        libc::malloc_info(0, f);
        libc::fclose(f);
    }
    let info = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    info.matches("<heap nr=").count()
}

/// Bytes of heap in use by the whole process (glibc `mallinfo2`: arena blocks in use plus
/// mmap-ed blocks), for tests that measure what a structure costs.
#[cfg(test)]
pub fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 takes the arena locks itself and returns a plain struct.
    let m = unsafe { libc::mallinfo2() };
    m.uordblks + m.hblkhd
}

/// Runs the ignored test `test` of this test binary in a process of its own, with `env` set
/// (the child does its work only then); fails unless it ran and passed. Returns its output.
#[cfg(test)]
pub fn run_test_child(test: &str, env: &str) -> String {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            test,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(env, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child did not run: {stdout}"
    );
    stdout
}

/// Hands back the main thread's stack pages below the caller's frame, less a margin; returns
/// how many bytes. Before `main`, a static initializer of libceph-common builds its table of
/// config options in one very large frame, which left about 850 KiB of the main stack resident
/// for good. Nothing that deep runs on this thread again, and a page touched later comes back
/// zeroed, as fresh stack does. On any other thread (its stack is not `[stack]`) it does nothing.
pub fn release_dead_stack() -> usize {
    const MARGIN: usize = 64 << 10;
    let marker = 0u8;
    let sp = std::hint::black_box(std::ptr::addr_of!(marker)) as usize;
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return 0;
    };
    let Some(lo) = maps
        .lines()
        .filter(|l| l.ends_with("[stack]"))
        .find_map(|l| {
            let (lo, hi) = l.split_once(' ')?.0.split_once('-')?;
            let lo = usize::from_str_radix(lo, 16).ok()?;
            let hi = usize::from_str_radix(hi, 16).ok()?;
            (lo <= sp && sp < hi).then_some(lo)
        })
    else {
        return 0;
    };
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let top = sp.saturating_sub(MARGIN) & !(page - 1);
    if top <= lo {
        return 0;
    }
    // SAFETY: [lo, top) lies in this thread's own stack mapping, at least MARGIN below the
    // live frames; MADV_DONTNEED on private anonymous memory only drops page contents, which
    // nothing reads before writing again.
    match unsafe { libc::madvise(lo as *mut libc::c_void, top - lo, libc::MADV_DONTNEED) } {
        0 => top - lo,
        _ => 0,
    }
}

/// Makes the process non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): a crash writes no core file,
/// which would hold every Ceph key the process has read, and other processes of the same uid
/// may no longer ptrace it or read its `/proc/PID/mem`, `environ`, `maps` or `fd`. The kernel
/// then has root own those files; the process still reads its own.
pub fn forbid_dumps() -> std::io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes one integer and changes a flag of this process only.
    match unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Whether the process is dumpable (`prctl(PR_GET_DUMPABLE)`).
pub fn is_dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no argument and only reads a flag of this process.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE) == 1 }
}

/// Ends the process at once with `code`, after flushing stdout and stderr. The standard
/// library's `process::exit` would run the C++ static destructors of libceph-common while librados's own threads (one
/// pool per client) still run, which crashes them: SIGSEGV in `io_context_pool` on a graceful
/// shutdown. `_exit` runs no destructors; the kernel closes sockets and files as for any exit.
pub fn exit_process(code: i32) -> ! {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `_exit` is always safe to call; it never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dead_stack_of_another_thread_is_left_alone() {
        // Test threads have mmap-ed stacks, not the process's `[stack]` mapping.
        assert_eq!(std::thread::spawn(release_dead_stack).join().unwrap(), 0);
    }

    #[test]
    fn freed_heap_goes_back_to_the_kernel() {
        // 50 MB in small blocks (below the mmap threshold, so they live in an arena); all but
        // the last freed: a free region in the middle of the arena, which glibc keeps
        // resident until trimmed.
        let mut blocks: Vec<Vec<u8>> = (0..50_000).map(|i| vec![i as u8; 1024]).collect();
        let last = blocks.pop();
        drop(blocks);
        assert!(release_free_heap(), "malloc_trim released nothing");
        assert_eq!(last.map(|b| b.len()), Some(1024));
    }

    const ARENAS_CHILD: &str = "RBDP_MALLOC_ARENAS_CHILD";

    /// In a process of its own, as main does it first: eight threads allocating at once share
    /// the capped arenas instead of getting one each.
    #[test]
    fn threads_share_the_capped_malloc_arenas() {
        run_test_child(
            "process::tests::child_threads_share_the_capped_malloc_arenas",
            ARENAS_CHILD,
        );
    }

    #[test]
    #[ignore = "run by threads_share_the_capped_malloc_arenas"]
    fn child_threads_share_the_capped_malloc_arenas() {
        if std::env::var_os(ARENAS_CHILD).is_none() {
            return;
        }
        assert!(limit_malloc_arenas());
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    let held: Vec<Vec<u8>> = (0..2_000).map(|j| vec![(i + j) as u8; 256]).collect();
                    start.wait();
                    held.len()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 2_000);
        }
        let arenas = malloc_arenas();
        assert!(
            arenas <= MALLOC_ARENAS as usize,
            "{arenas} arenas for 8 threads, cap {MALLOC_ARENAS}"
        );
    }

    const CHILD: &str = "RBDP_NOT_DUMPABLE_CHILD";

    /// In a process of its own: the flag belongs to the whole test process.
    #[test]
    fn forbid_dumps_makes_the_process_non_dumpable() {
        run_test_child("process::tests::child_forbids_dumps", CHILD);
    }

    #[test]
    #[ignore = "run by forbid_dumps_makes_the_process_non_dumpable"]
    fn child_forbids_dumps() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        assert!(is_dumpable(), "a fresh process is dumpable");
        forbid_dumps().unwrap();
        assert!(!is_dumpable());
        // What the process reads of itself afterwards (release_dead_stack, the metrics).
        assert!(std::fs::read_to_string("/proc/self/maps").is_ok_and(|m| m.contains("[stack]")));
        assert!(std::fs::read_dir("/proc/self/fd").is_ok_and(|d| d.count() > 0));
        assert!(std::fs::read_to_string("/proc/self/stat").is_ok());
        assert!(std::fs::read_to_string("/proc/self/statm").is_ok());
    }
}
