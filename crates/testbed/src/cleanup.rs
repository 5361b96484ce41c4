//! Removing what a test made, in Kubernetes and Ceph, on success and on failure.

use std::process::{Command, Stdio};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};

use crate::{Bed, uid_of};

/// Removes what a test made: claims' PVs (finalizer dropped) and their images, the class.
pub async fn cleanup(
    bed: &Bed,
    client: &Client,
    ns: &str,
    claims: &[&PersistentVolumeClaim],
    pools: &[&str],
) {
    let ceph = bed.ceph().await;
    let pvs = Api::<PersistentVolume>::all(client.clone());
    let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    for c in claims {
        let uid = uid_of(*c);
        let _ = pvcs
            .delete(
                c.metadata.name.as_deref().unwrap(),
                &DeleteParams::default(),
            )
            .await;
        let pv = format!("pvc-{uid}");
        let _ = pvs
            .patch(
                &pv,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
            )
            .await;
        let _ = pvs.delete(&pv, &DeleteParams::default()).await;
        for pool in pools {
            let _ = ceph
                .remove_image(pool, &format!("kubernetes-dynamic-pvc-{uid}"))
                .await;
        }
    }
}

/// Deletes, when dropped (a failing test too), what a test made in Kubernetes and Ceph: its
/// namespaces, the PVs of their claims (finalizers dropped, images removed with the `rbd`
/// CLI), StorageClasses and Secrets named with a prefix, and named leftovers. Drop cannot be
/// async, so it uses kubectl, blocking.
pub struct Cleanup {
    bed: Bed,
    namespaces: Vec<String>,
    prefixes: Vec<String>,
    classes: Vec<String>,
    secrets: Vec<(String, String)>,
    claims: Vec<(String, String)>,
}

impl Cleanup {
    pub fn new(bed: &Bed) -> Cleanup {
        Cleanup {
            bed: bed.clone(),
            namespaces: vec![],
            prefixes: vec![],
            classes: vec![],
            secrets: vec![],
            claims: vec![],
        }
    }
    /// A namespace; the PVs bound to its claims go with it.
    pub fn namespace(mut self, ns: &str) -> Cleanup {
        self.namespaces.push(ns.into());
        self
    }
    /// StorageClasses and kube-system/default Secrets whose names start with `prefix`.
    pub fn prefix(mut self, prefix: &str) -> Cleanup {
        self.prefixes.push(prefix.into());
        self
    }
    pub fn class(mut self, name: &str) -> Cleanup {
        self.classes.push(name.into());
        self
    }
    pub fn secret(mut self, ns: &str, name: &str) -> Cleanup {
        self.secrets.push((ns.into(), name.into()));
        self
    }
    /// A claim in a namespace the test does not own (say "default"), and its PV.
    pub fn claim(mut self, ns: &str, name: &str) -> Cleanup {
        self.claims.push((ns.into(), name.into()));
        self
    }

    fn kubectl(&self, args: &[&str]) -> Option<String> {
        let kubectl = &self.bed.kubectl;
        let out = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&self.bed.kubeconfig)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn names(&self, args: &[&str]) -> Vec<String> {
        self.kubectl(args)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('/').map(|(_, n)| n.to_string()))
            .collect()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // PVs first: with the namespace gone nothing would point at them any more.
        for (ns, c) in &self.claims {
            let _ = self.kubectl(&[
                "-n",
                ns,
                "delete",
                "pvc",
                c,
                "--wait=false",
                "--ignore-not-found",
            ]);
        }
        if !self.namespaces.is_empty() || !self.claims.is_empty() {
            let pvs = self
                .kubectl(&["get", "pv", "-o", "json"])
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .unwrap_or_default();
            for pv in pvs["items"].as_array().cloned().unwrap_or_default() {
                let ns = pv["spec"]["claimRef"]["namespace"].as_str().unwrap_or("");
                let claim = pv["spec"]["claimRef"]["name"].as_str().unwrap_or("");
                if !self.namespaces.iter().any(|n| n == ns)
                    && !self.claims.iter().any(|(n, c)| n == ns && c == claim)
                {
                    continue;
                }
                let name = pv["metadata"]["name"].as_str().unwrap_or_default();
                let _ = self.kubectl(&[
                    "patch",
                    "pv",
                    name,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ]);
                let _ = self.kubectl(&["delete", "pv", name, "--wait=false"]);
                let rbd = &pv["spec"]["rbd"];
                let csi = &pv["spec"]["csi"]["volumeAttributes"];
                let pool = rbd["pool"].as_str().or(csi["pool"].as_str());
                // A csi PV (static ceph-csi volume) names its image as the volumeHandle.
                let image = rbd["image"]
                    .as_str()
                    .or(pv["spec"]["csi"]["volumeHandle"].as_str());
                if let (Some(pool), Some(image)) = (pool, image) {
                    let _ = Command::new("rbd")
                        .arg("-c")
                        .arg(self.bed.dir.join("ceph/ceph.conf"))
                        .args(["rm", "--no-progress", &format!("{pool}/{image}")])
                        .output();
                }
            }
        }
        let mut classes = self.classes.clone();
        let mut secrets = self.secrets.clone();
        if !self.prefixes.is_empty() {
            for c in self.names(&["get", "storageclass", "-o", "name"]) {
                if self.prefixes.iter().any(|p| c.starts_with(p.as_str())) {
                    classes.push(c);
                }
            }
            for ns in ["kube-system", "default"] {
                for s in self.names(&["-n", ns, "get", "secret", "-o", "name"]) {
                    if self.prefixes.iter().any(|p| s.starts_with(p.as_str())) {
                        secrets.push((ns.into(), s));
                    }
                }
            }
        }
        for c in &classes {
            let _ = self.kubectl(&["delete", "storageclass", c, "--ignore-not-found"]);
        }
        for (ns, s) in &secrets {
            let _ = self.kubectl(&["-n", ns, "delete", "secret", s, "--ignore-not-found"]);
        }
        for ns in &self.namespaces {
            let _ = self.kubectl(&[
                "delete",
                "namespace",
                ns,
                "--wait=false",
                "--ignore-not-found",
            ]);
        }
    }
}
