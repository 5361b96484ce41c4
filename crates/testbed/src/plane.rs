//! A control plane of a test binary's own.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{Bed, repo_root, unique};

/// A control plane of this test binary's own (`hack/plane-up.sh`: etcd, kube-apiserver and
/// kube-controller-manager on free ports, the version of the bed `RBDP_BED` names, on its
/// Ceph), stopped and purged when dropped. For tests that pause kube-controller-manager: the
/// bed's own plane, which other runs and the demo use, is never paused.
pub struct OwnPlane {
    pub dir: PathBuf,
}

impl OwnPlane {
    pub fn up() -> OwnPlane {
        let dir = std::env::temp_dir().join(unique("rbd-provisioner-plane"));
        let plane = OwnPlane { dir };
        let out = Command::new("bash")
            .arg(repo_root().join("hack/plane-up.sh"))
            .arg(&plane.dir)
            .env("RBDP_BED", Bed::load().dir)
            .stdin(Stdio::null())
            .output()
            .expect("run hack/plane-up.sh");
        crate::assert_success("hack/plane-up.sh", &out);
        plane
    }
}

impl Drop for OwnPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("hack/kube-down.sh"))
            .arg(self.dir.join("kube"))
            .arg("--purge")
            .stdin(Stdio::null())
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
