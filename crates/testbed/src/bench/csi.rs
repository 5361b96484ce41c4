//! The CSI peer: kubernetes-csi's external-provisioner (csi-provisioner) in front of a mock CSI
//! driver whose CreateVolume and DeleteVolume cost nothing (hack/build-csi-peer.sh builds both),
//! run against the bed's API server as an operator would run the sidecar: its usual flags,
//! leader election off (as ours in the bench), default QPS and worker count.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::provisioner::terminate;
use crate::{Bed, die_with_parent, repo_root, unique};

/// The two processes of the CSI peer, stopped (and the socket's directory removed) when dropped.
pub struct CsiPeer {
    /// The driver's name: the StorageClass's provisioner.
    pub driver: String,
    /// csi-provisioner's log (the mock driver's is beside it).
    pub log: PathBuf,
    provisioner: Child,
    mock: Child,
    dir: PathBuf,
}

/// Where csi-provisioner and mock-driver are: `RBDP_CSI_PEER_BIN`, else the directory
/// hack/build-csi-peer.sh prints on its last line (it builds them once per machine).
pub fn csi_peer_bin() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("RBDP_CSI_PEER_BIN") {
        return Ok(PathBuf::from(d));
    }
    let script = repo_root().join("hack/build-csi-peer.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): build the CSI peer by hand, or set RBDP_CSI_PEER_BIN to a directory holding csi-provisioner and mock-driver",
            script.display(),
            out.status
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(PathBuf::from(text.lines().last().unwrap_or_default()))
}

/// `bin` with `args`, its output to `log`, dying with the bench.
fn spawn(bin: &Path, args: &[&str], log: &Path) -> Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    die_with_parent(&mut cmd);
    cmd.spawn()
        .with_context(|| format!("start {}", bin.display()))
}

impl CsiPeer {
    /// Starts the mock driver as `driver` on a unix socket in a fresh directory, then
    /// csi-provisioner against it and the bed's API server (the admin kubeconfig: the sidecar's
    /// RBAC is not what is measured). Logs go to the bed's directory.
    pub async fn start(bed: &Bed, driver: &str) -> Result<CsiPeer> {
        let bin = csi_peer_bin()?;
        let dir = std::env::temp_dir().join(unique("rbdp-csi"));
        std::fs::create_dir(&dir).with_context(|| format!("create {}", dir.display()))?;
        let sock = dir.join("csi.sock");
        let sock_s = sock.to_string_lossy().into_owned();
        let tag = unique("csi-peer");
        let mock_log = bed.dir.join(format!("{tag}-mock-driver.log"));
        let log = bed.dir.join(format!("{tag}-csi-provisioner.log"));
        let mut mock = spawn(
            &bin.join("mock-driver"),
            &["--csi-address", &sock_s, "--name", driver],
            &mock_log,
        )?;
        let start = Instant::now();
        while !sock.exists() {
            if let Some(st) = mock.try_wait()? {
                bail!("mock-driver exited ({st}); see {}", mock_log.display());
            }
            if start.elapsed() > Duration::from_secs(10) {
                terminate(&mut mock);
                bail!(
                    "mock-driver made no socket in 10 s; see {}",
                    mock_log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let kubeconfig = bed.kubeconfig.to_string_lossy().into_owned();
        // The sidecar's defaults otherwise: no topology (the bed has no nodes, and the mock
        // announces none), no capacity tracking, 100 workers, client QPS 5 / burst 10.
        let provisioner = spawn(
            &bin.join("csi-provisioner"),
            &[
                &format!("--csi-address={sock_s}"),
                &format!("--kubeconfig={kubeconfig}"),
                "--leader-election=false",
                "--timeout=60s",
            ],
            &log,
        );
        let provisioner = match provisioner {
            Ok(p) => p,
            Err(e) => {
                terminate(&mut mock);
                return Err(e);
            }
        };
        Ok(CsiPeer {
            driver: driver.to_string(),
            log,
            provisioner,
            mock,
            dir,
        })
    }

    /// Waits until csi-provisioner says its controller runs (it has found the driver and synced
    /// its informers), so that its first claim is not charged with its start.
    pub async fn until_ready(&mut self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check()?;
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("Started provisioner controller") {
                return Ok(());
            }
            if start.elapsed() > timeout {
                bail!(
                    "csi-provisioner did not start its controller in {timeout:?}; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails when either process has exited.
    pub fn check(&mut self) -> Result<()> {
        for (name, child) in [
            ("csi-provisioner", &mut self.provisioner),
            ("mock-driver", &mut self.mock),
        ] {
            if let Some(st) = child.try_wait()? {
                bail!(
                    "{name} of the CSI peer exited ({st}); see the logs beside {}",
                    self.log.display()
                );
            }
        }
        Ok(())
    }
}

impl Drop for CsiPeer {
    fn drop(&mut self) {
        terminate(&mut self.provisioner);
        terminate(&mut self.mock);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
