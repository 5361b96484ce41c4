//! The provisioner binary as a process of its own, under the shipped ServiceAccount.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bed::OVERRIDES;
use crate::{Bed, die_with_parent, service_account_kubeconfig, signal, unique};

/// The provisioner binary, running as the Deployment would run it (its own process, the
/// shipped ServiceAccount), killed when dropped.
pub struct Provisioner {
    pub name: String,
    child: Child,
    pub log: std::path::PathBuf,
}

impl Provisioner {
    pub async fn start(bed: &Bed, name: &str, env: &[(&str, &str)]) -> Provisioner {
        Provisioner::start_with(bed, name, env, &[], None).await
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process to end by itself; returns its exit status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < timeout,
                "provisioner did not exit in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Provisioner {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: a crash, which leaves its Lease held until it expires.
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Provisioner {
    fn drop(&mut self) {
        terminate(&mut self.child);
    }
}

/// Stops a provisioner process of ours: SIGTERM first, as kubelet does (a graceful stop
/// releases the Lease at once), SIGKILL after 5 s.
pub fn terminate(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // Our own child, not reaped yet: its pid is still its own.
    signal(child.id(), libc::SIGTERM);
    for _ in 0..50 {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Provisioner {
    /// Like `start`, with extra arguments and, optionally, another kubeconfig (for example one
    /// that reaches the API server through a proxy the test controls). `RBD_PROVISIONER_BIN`
    /// replaces the binary under test, to show that a test fails against an older build.
    pub async fn start_with(
        bed: &Bed,
        name: &str,
        env: &[(&str, &str)],
        extra_args: &[&str],
        kubeconfig: Option<&std::path::Path>,
    ) -> Provisioner {
        let kubeconfig = match kubeconfig {
            Some(k) => k.to_path_buf(),
            None => service_account_kubeconfig(bed).await,
        };
        Provisioner::spawn(bed, name, env, extra_args, &kubeconfig, None, None)
    }

    /// Like `start`, as user and group `uid` (not root: the test runs as root), with a copy
    /// of the ServiceAccount's kubeconfig only that user may read, in the directory returned
    /// (the test removes it).
    pub async fn start_as(
        bed: &Bed,
        name: &str,
        uid: u32,
        extra_args: &[&str],
    ) -> (Provisioner, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let kubeconfig = service_account_kubeconfig(bed).await;
        let dir = std::env::temp_dir().join(unique("rbdp-uid"));
        std::fs::create_dir(&dir).unwrap();
        let copy = dir.join("kubeconfig");
        std::fs::copy(&kubeconfig, &copy).unwrap();
        for (path, mode) in [(&dir, 0o700), (&copy, 0o600)] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
            std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
        }
        (
            Provisioner::spawn(bed, name, &[], extra_args, &copy, Some(uid), None),
            dir,
        )
    }

    /// Like `start_with`, running the binary `bin` (another build, such as the previous
    /// release's) under the shipped ServiceAccount.
    pub async fn start_binary(
        bed: &Bed,
        name: &str,
        bin: &std::path::Path,
        env: &[(&str, &str)],
        extra_args: &[&str],
    ) -> Provisioner {
        let kubeconfig = service_account_kubeconfig(bed).await;
        Provisioner::spawn(bed, name, env, extra_args, &kubeconfig, None, Some(bin))
    }

    fn spawn(
        bed: &Bed,
        name: &str,
        env: &[(&str, &str)],
        extra_args: &[&str],
        kubeconfig: &std::path::Path,
        uid: Option<u32>,
        bin: Option<&std::path::Path>,
    ) -> Provisioner {
        let bin = bin.map(PathBuf::from).unwrap_or_else(provisioner_binary);
        let (mut cmd, log) = command(bed, &bin, &name.replace('/', "_"));
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args([
                "--provisioner-name",
                name,
                "--metrics-addr",
                "",
                "--ceph-connect-timeout",
                "5",
            ])
            .args(extra_args);
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            // std also drops root's supplementary groups.
            cmd.uid(uid).gid(uid);
        }
        Provisioner::launch(cmd, env, name, log)
    }

    /// Starts `cmd` with `env` on top, dying with the test, as provisioner `name`.
    fn launch(mut cmd: Command, env: &[(&str, &str)], name: &str, log: PathBuf) -> Provisioner {
        for (k, v) in env {
            cmd.env(k, v);
        }
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("start rbd-provisioner");
        Provisioner {
            name: name.to_string(),
            child,
            log,
        }
    }
}

impl Provisioner {
    /// The binary with only `args` and `env` (plus `KUBECONFIG_PATH` for the ServiceAccount's
    /// kubeconfig): no provisioner name, no metrics address, so the defaults and the
    /// environment forms of the flags are what the process sees.
    pub async fn start_bare(bed: &Bed, env: &[(&str, &str)], args: &[&str]) -> Provisioner {
        let kubeconfig = service_account_kubeconfig(bed).await;
        let (mut cmd, log) = command(bed, &provisioner_binary(), "bare");
        cmd.args(args).env("KUBECONFIG_PATH", &kubeconfig);
        Provisioner::launch(cmd, env, "", log)
    }
}

/// Binary `bin` as a process of the test's: the provisioner's debug logs, written to a new
/// log `<bed>/<log_name>-<random>.log`; no `KUBECONFIG` or stdin of the test's. The caller
/// adds arguments, then [`Provisioner::launch`]es it. The command, and the log's path.
fn command(bed: &Bed, bin: &std::path::Path, log_name: &str) -> (Command, PathBuf) {
    let log = bed.dir.join(format!("{}.log", unique(log_name)));
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = Command::new(bin);
    cmd.env("RUST_LOG", "info,rbd_provisioner=debug")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    (cmd, log)
}

/// The provisioner binary: `RBD_PROVISIONER_BIN`, else the one cargo built beside the test or
/// bench that runs (`target/<profile>/deps/<test>` → `target/<profile>/rbd-provisioner`; cargo
/// builds a package's binaries before its integration tests and benches).
pub fn provisioner_binary() -> PathBuf {
    if let Some(p) = OVERRIDES.binary.get() {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("RBD_PROVISIONER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("tests run from target/<profile>/deps");
    profile.join("rbd-provisioner")
}

/// A free address on 127.0.0.1 (`127.0.0.1:<port>`) for a provisioner's HTTP endpoint.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// The text of `http://<addr>/metrics`, by `curl` (empty when nothing answers 200).
pub fn metrics(addr: &str) -> String {
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "5", &format!("http://{addr}/metrics")])
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `doctor --storage-class class` of provisioner `name` as an operator would, with
/// `extra` arguments before the subcommand: whether it exited with success, and its table.
pub fn doctor(
    bed: &Bed,
    bin: &std::path::Path,
    name: &str,
    class: &str,
    extra: &[&str],
) -> (bool, String) {
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&bed.kubeconfig)
        .args(["--provisioner-name", name])
        .args(extra)
        .args(["doctor", "--storage-class", class])
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "error")
        .output()
        .expect("run doctor");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `<bin> audit --json --storage-class <class>` as an operator runs it (the admin kubeconfig,
/// provisioner `name`); its report. `bin`: the test's own build of the provisioner.
pub fn audit(bed: &Bed, bin: &std::path::Path, name: &str, class: &str) -> serde_json::Value {
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(&bed.kubeconfig)
        .args(["--provisioner-name", name])
        .args(["audit", "--json", "--storage-class", class])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    crate::assert_success("audit", &out);
    serde_json::from_slice(&out.stdout).unwrap()
}
