//! The daemons of a bed, stopped and started again as the bed scripts start them, and
//! samples of a process from /proc.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Bed;

/// A daemon of a bed, found by its pid file (`<name>.pid` anywhere under the bed directory,
/// as the bed scripts of either control plane write them), stopped and started again the way
/// the bed scripts start it: same program, arguments, environment, directory and log.
pub struct Daemon {
    pub name: String,
    pidfile: PathBuf,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
    log: Option<PathBuf>,
}

fn find_pidfile(dir: &Path, file: &str, depth: u32) -> Option<PathBuf> {
    let p = dir.join(file);
    if p.is_file() {
        return Some(p);
    }
    if depth == 0 {
        return None;
    }
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    subdirs
        .iter()
        .find_map(|d| find_pidfile(d, file, depth - 1))
}

/// Whether a pid is a live process (a zombie is not: PID 1 here reaps late).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

impl Daemon {
    /// The running daemon `name` (`mon.a`, `osd.0`, `etcd`, `kube-apiserver`, ...) of `bed`.
    pub fn of(bed: &Bed, name: &str) -> Daemon {
        let pidfile = find_pidfile(&bed.dir, &format!("{name}.pid"), 3)
            .unwrap_or_else(|| panic!("no {name}.pid under {}", bed.dir.display()));
        let pid = Self::read_pid(&pidfile);
        assert!(alive(pid), "{name} (pid {pid}) is not running");
        // NUL-terminated fields; an empty argument (`--listen-metrics-urls ""`) is kept.
        let split = |b: Vec<u8>| -> Vec<OsString> {
            use std::os::unix::ffi::OsStringExt;
            let b = b.strip_suffix(&[0]).unwrap_or(&b);
            b.split(|c| *c == 0)
                .map(|s| OsString::from_vec(s.to_vec()))
                .collect()
        };
        let argv = split(std::fs::read(format!("/proc/{pid}/cmdline")).unwrap());
        let env = split(std::fs::read(format!("/proc/{pid}/environ")).unwrap())
            .into_iter()
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let s = kv.to_string_lossy().into_owned();
                s.split_once('=')
                    .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            })
            .collect();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
        let log = std::fs::read_link(format!("/proc/{pid}/fd/1"))
            .ok()
            .filter(|p| p.is_file());
        Daemon {
            name: name.to_string(),
            pidfile,
            argv,
            env,
            cwd,
            log,
        }
    }

    fn read_pid(pidfile: &Path) -> u32 {
        std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        Self::read_pid(&self.pidfile)
    }

    /// [`Daemon::stop`] off the async runtime's threads: how long it took, and the daemon.
    pub async fn stopped(self) -> (Duration, Daemon) {
        tokio::task::spawn_blocking(move || (self.stop(), self))
            .await
            .unwrap()
    }

    /// [`Daemon::start`] off the async runtime's threads.
    pub async fn started(self) -> Daemon {
        tokio::task::spawn_blocking(move || {
            self.start();
            self
        })
        .await
        .unwrap()
    }

    /// SIGTERM, then waits until the process has exited (SIGKILL after 60 s); returns how
    /// long it took to go.
    pub fn stop(&self) -> Duration {
        self.stop_within(Duration::from_secs(60))
    }

    /// SIGTERM, SIGKILL after `grace`, and waits until the process has exited.
    pub fn stop_within(&self, grace: Duration) -> Duration {
        let pid = self.pid();
        let start = Instant::now();
        // The pid the bed recorded for this daemon, checked alive.
        if alive(pid) {
            crate::signal(pid, libc::SIGTERM);
        }
        while alive(pid) {
            if start.elapsed() > grace {
                crate::signal(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    }

    /// Starts it again as the bed scripts do (`setsid nohup`, its own session, output appended
    /// to its log), records the new pid in its pid file.
    pub fn start(&self) {
        let log = self
            .log
            .clone()
            .unwrap_or_else(|| PathBuf::from("/dev/null"));
        let out = Command::new("sh")
            .arg("-c")
            .arg(r#"log=$1; shift; setsid nohup "$@" >>"$log" 2>&1 </dev/null & echo $!"#)
            .arg("sh")
            .arg(&log)
            .args(&self.argv)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("start daemon");
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("pid of the restarted daemon");
        std::fs::write(&self.pidfile, format!("{pid}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(alive(pid), "{} exited at once after a restart", self.name);
    }
}

/// Samples of a process from /proc: resident memory (KiB), open fds, threads. `None` once the
/// process is gone, and for a user other than root when the process is the provisioner: it
/// is not dumpable, so its /proc/PID/fd belongs to root.
pub fn proc_sample(pid: u32) -> Option<(u64, usize, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((field("VmRSS:")?, fds, field("Threads:")?))
}
