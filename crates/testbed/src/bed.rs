//! The bed description (what hack/bed-up.sh wrote), clients for it, and the places a test
//! binary may point the whole harness at instead.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use ceph::{CephKey, Cluster, Connections, Credentials, Timeouts};
use kube::Client;

/// What hack/bed-up.sh wrote to `$RBDP_BED/env`.
#[derive(Clone)]
pub struct Bed {
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// "127.0.0.1:6789" style, as a StorageClass would carry it.
    pub monitors: String,
    pub admin_key: String,
    pub kube_key: String,
    /// The control plane's minor version (20 or 37): `RBDP_KUBE_MINOR` of the env file.
    pub kube_minor: u32,
    /// The other control plane on the same Ceph, when the env names one (`RBDP_PEER_BED` of a
    /// 1.37 plane, hack/bed-up.sh with `RBDP_KUBE=1.37`) or a 1.37 plane lives in `k137/`.
    pub peer: Option<PathBuf>,
    /// The plane's own kubectl build (`KUBECTL` of the env file), never the PATH's.
    pub kubectl: PathBuf,
    /// The version of the snapshot-controller the plane runs (`RBDP_SNAPSHOT_CONTROLLER`),
    /// if it runs one.
    pub snapshot_controller: Option<String>,
}

impl Bed {
    /// Loads the bed description; panics with the command to run when the bed is not up,
    /// because these tests are meaningless without it.
    pub fn load() -> Bed {
        let dir = OVERRIDES.bed.get().cloned().unwrap_or_else(|| {
            PathBuf::from(
                std::env::var("RBDP_BED").unwrap_or_else(|_| "/tmp/rbd-provisioner-bed".into()),
            )
        });
        Bed::load_from(dir)
    }

    /// The bed described by `dir/env`.
    pub fn load_from(dir: PathBuf) -> Bed {
        let env_file = dir.join("env");
        let text = std::fs::read_to_string(&env_file).unwrap_or_else(|e| {
            panic!(
                "integration tests need the local Ceph + Kubernetes bed: run hack/bed-up.sh \
                 (or hack/test.sh); cannot read {}: {e}",
                env_file.display()
            )
        });
        let vars = parse_env(&text);
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .unwrap_or_else(|| panic!("{} lacks {k}", env_file.display()))
        };
        // Env files of beds started before the 1.37 plane existed name no version: 1.20.
        let kube_minor = vars
            .get("RBDP_KUBE_MINOR")
            .map(|m| m.parse().expect("RBDP_KUBE_MINOR is a number"))
            .unwrap_or(20);
        let peer = vars.get("RBDP_PEER_BED").map(PathBuf::from).or_else(|| {
            let k137 = dir.join("k137");
            k137.join("env").exists().then_some(k137)
        });
        Bed {
            kubeconfig: PathBuf::from(get("KUBECONFIG")),
            monitors: get("CEPH_MONITORS"),
            admin_key: get("CEPH_ADMIN_KEY"),
            kube_key: get("CEPH_KUBE_KEY"),
            kube_minor,
            peer,
            kubectl: PathBuf::from(get("KUBECTL")),
            snapshot_controller: vars
                .get("RBDP_SNAPSHOT_CONTROLLER")
                .filter(|v| !v.is_empty())
                .cloned(),
            dir,
        }
    }

    /// A kubectl whose embedded kustomize builds manifests/ (`patches:` with targets needs
    /// kustomize v3+, kubectl >= 1.21): the plane's own from 1.21 on; for 1.20, whose kubectl
    /// embeds kustomize v2.0.3, the 1.37 plane's build (`kubectl kustomize` is client-side, and
    /// its output is then applied with the plane's own kubectl, as README says operators do).
    pub fn kustomize_kubectl(&self) -> PathBuf {
        if self.kube_minor >= 21 {
            return self.kubectl.clone();
        }
        let peer = self.peer.as_ref().unwrap_or_else(|| {
            panic!(
                "kubectl 1.20 cannot build manifests/ (kustomize v2.0.3); start the bed's 1.37 \
                 plane for a newer kubectl: RBDP_BED={} RBDP_KUBE=1.37 bash hack/bed-up.sh",
                self.dir.display()
            )
        });
        Bed::load_from(peer.clone()).kubectl
    }

    /// Renders a kustomization directory with [`Bed::kustomize_kubectl`]; panics with its
    /// error output when it fails.
    pub fn kustomize(&self, dir: &std::path::Path) -> String {
        let out = Command::new(self.kustomize_kubectl())
            .arg("kustomize")
            .arg(dir)
            .output()
            .expect("run kubectl kustomize");
        crate::assert_success(&format!("kubectl kustomize {}", dir.display()), &out);
        String::from_utf8(out.stdout).expect("kustomize output is UTF-8")
    }

    /// Whether classes without `volumeFlavor` get csi PVs here (Kubernetes >= 1.31).
    pub fn csi_by_default(&self) -> bool {
        self.kube_minor >= 31
    }
}

/// Parses `export KEY=value` / `KEY='value'` lines.
fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim().trim_matches('\'').trim_matches('"');
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

impl Bed {
    /// An admin client (system:masters), for setting up and inspecting.
    pub async fn admin(&self) -> Client {
        client_from(&self.kubeconfig).await
    }

    /// The admin Ceph connection, to inspect images the way an operator would.
    pub async fn ceph(&self) -> Arc<Cluster> {
        let conns = Connections::new(Timeouts::default());
        conns
            .get(&Credentials {
                monitors: vec![self.monitors.clone()],
                user: "admin".into(),
                key: CephKey::new(self.admin_key.clone()),
            })
            .await
            .expect("connect to the bed's Ceph as admin")
    }
}

pub async fn client_from(path: &std::path::Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("read kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    Client::try_from(cfg).expect("client")
}

pub fn repo_file(path: &str) -> String {
    let p = repo_root().join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The repository's root (manifests/, examples/, hack/).
pub fn repo_root() -> &'static std::path::Path {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// What a test binary points the whole harness at, in place of `RBDP_BED` and
/// `RBD_PROVISIONER_BIN` (set once; the environment is not written: other threads read it).
pub(crate) struct Overrides {
    pub(crate) bed: std::sync::OnceLock<PathBuf>,
    pub(crate) binary: std::sync::OnceLock<PathBuf>,
}

pub(crate) static OVERRIDES: Overrides = Overrides {
    bed: std::sync::OnceLock::new(),
    binary: std::sync::OnceLock::new(),
};

/// Makes [`Bed::load`] (and so every helper) use the bed in `dir`, whatever `RBDP_BED` says.
/// Once per test binary; panics when set twice to different places.
pub fn use_bed(dir: impl Into<PathBuf>) {
    let dir = dir.into();
    let set = OVERRIDES.bed.get_or_init(|| dir.clone());
    assert_eq!(*set, dir, "the bed was already pointed elsewhere");
}

/// Makes the harness start `bin` in place of the provisioner binary. Once per test binary.
pub fn use_binary(bin: impl Into<PathBuf>) {
    let bin = bin.into();
    let set = OVERRIDES.binary.get_or_init(|| bin.clone());
    assert_eq!(*set, bin, "the binary was already replaced");
}
