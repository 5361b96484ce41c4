//! A bed of the harness's own, for the scenarios that stop Ceph daemons or the API server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::Bed;

/// A bed started by `hack/bed-up.sh` in a fresh directory (free ports, the control plane the
/// environment selects, as for any bed), stopped and purged by `hack/bed-down.sh --purge`
/// when dropped. Scenarios that stop Ceph daemons or the API server run here, never on the
/// shared bed.
pub struct OwnBed {
    pub dir: PathBuf,
    /// What `RBDP_BED` must name for the tests: the bed itself, or with `RBDP_KUBE=1.37` its
    /// 1.37 plane (`k137/`, on the same Ceph).
    pub env_dir: PathBuf,
}

impl OwnBed {
    pub fn up() -> OwnBed {
        let dir = PathBuf::from(
            String::from_utf8(
                Command::new("mktemp")
                    .args(["-d", "/tmp/rbd-provisioner-bed-faults.XXXXXX"])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap()
            .trim(),
        );
        // The plane of the bed this run was pointed at (hack/test.sh points RBDP_BED at each
        // plane in turn); RBDP_KUBE=1.37 still selects 1.37 when run by hand.
        let minor37 =
            Bed::load().kube_minor == 37 || std::env::var("RBDP_KUBE").as_deref() == Ok("1.37");
        let env_dir = if minor37 {
            dir.join("k137")
        } else {
            dir.clone()
        };
        let bed = OwnBed { dir, env_dir };
        let started = Instant::now();
        // A free port picked by bed-up.sh can be taken by another run before its daemon binds
        // it: such a start is purged and tried again (bed-up.sh purges a broken bed itself).
        let mut tries = 0;
        loop {
            tries += 1;
            let out = Command::new("bash")
                .arg(Path::new(crate::repo_root()).join("hack/bed-up.sh"))
                .env("RBDP_BED", &bed.dir)
                .env("RBDP_KUBE", if minor37 { "1.37" } else { "1.20" })
                .stdin(Stdio::null())
                .output()
                .expect("run hack/bed-up.sh");
            if out.status.success() {
                break;
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                tries < 3 && err.contains("address already in use"),
                "hack/bed-up.sh for the fault scenarios' own bed failed:\n{err}"
            );
            let _ = std::fs::remove_file(bed.dir.join("ports"));
        }
        println!(
            "own bed up in {:?} ({})",
            started.elapsed(),
            bed.dir.display()
        );
        bed
    }
}

impl Drop for OwnBed {
    fn drop(&mut self) {
        // The provisioners' logs outlive the bed, in target/fault-logs/<bed>/.
        let keep = Path::new(crate::repo_root())
            .join("target/fault-logs")
            .join(self.dir.file_name().unwrap_or_default());
        if std::fs::create_dir_all(&keep).is_ok() {
            for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let _ = std::fs::copy(&p, keep.join(e.file_name()));
                }
            }
            println!("provisioner logs kept in {}", keep.display());
        }
        let out = Command::new("bash")
            .arg(Path::new(crate::repo_root()).join("hack/bed-down.sh"))
            .arg("--purge")
            .env("RBDP_BED", &self.dir)
            .stdin(Stdio::null())
            .output();
        if let Ok(o) = out
            && !o.status.success()
        {
            eprintln!(
                "bed-down of {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let _ = std::fs::remove_file(self.dir.with_extension("lock"));
        let mut lock = self.dir.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
    }
}
