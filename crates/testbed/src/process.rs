//! The test bed's calls on processes (signals, death with the parent): its only `unsafe`.

#![allow(unsafe_code)]

use std::process::Command;

/// kill(2) of `pid` with `sig`; the caller knows the pid is still the process it means.
/// Whether the signal was sent.
pub fn signal(pid: u32, sig: i32) -> bool {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    unsafe { libc::kill(pid as i32, sig) == 0 }
}

/// Makes the child get SIGTERM when the thread that spawned it ends, so a test binary killed
/// abruptly (SIGKILL, a CI timeout) leaves no provisioner running: `Drop` never runs then.
/// Tests spawn from the thread that runs the test, which outlives the provisioner it holds.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        let parent = libc::getpid();
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}
