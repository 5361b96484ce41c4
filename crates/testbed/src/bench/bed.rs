//! The run's context on the bed: clients, the names of what the run creates, and what the
//! watches saw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use ceph::Cluster;
use futures::future::join_all;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

use crate::bench::watch::{
    Seen, Shared, all_in, latest, spawn_pv_watch, spawn_pvc_watch, spawn_trash_poller, until,
};
use crate::{Bed, apply_yaml, csi_secret, key_secret, namespace, storage_class, unique};

pub struct Ctx {
    pub bed: Bed,
    pub admin: kube::Client,
    pub ceph: Arc<Cluster>,
    pub ns: String,
    pub ours: String,
    pub peer: String,
    /// The CSI peer's StorageClass, and its driver's name (that class's provisioner).
    pub csi: String,
    pub csi_driver: String,
    /// storageClassName of the binder-only control (no StorageClass object, no provisioner).
    pub control: String,
    pub admin_secret: String,
    pub prov_name: String,
    pub seen: Shared,
}

impl Ctx {
    /// Fresh unique names for everything the run creates.
    pub fn new(bed: Bed, admin: kube::Client, ceph: Arc<Cluster>) -> Self {
        let ns = unique("bench");
        Ctx {
            bed,
            admin,
            ceph,
            ours: format!("{ns}-ours"),
            peer: format!("{ns}-intree"),
            csi: format!("{ns}-csi"),
            csi_driver: format!("{ns}.bench.csi"),
            control: format!("{ns}-control"),
            admin_secret: format!("{ns}-admin"),
            prov_name: format!("{ns}.bench/rbd"),
            ns,
            seen: Arc::new(Mutex::new(Seen::default())),
        }
    }

    /// A context on the bed `RBDP_BED` names, and the API server's version (for the report).
    pub async fn connect() -> (Ctx, String) {
        let bed = Bed::load();
        let admin = bed.admin().await;
        let ceph = bed.ceph().await;
        let version = admin
            .apiserver_version()
            .await
            .map(|v| v.git_version)
            .unwrap_or_else(|e| format!("unknown ({e})"));
        (Ctx::new(bed, admin, ceph), version)
    }

    /// Starts what fills [`Ctx::seen`]: the watches of the run's PVs and claims, and the trash
    /// poller.
    pub fn watch(&self) {
        spawn_pv_watch(self.admin.clone(), self.ns.clone(), self.seen.clone());
        spawn_pvc_watch(self.admin.clone(), self.ns.clone(), self.seen.clone());
        spawn_trash_poller(self.ceph.clone(), self.seen.clone());
    }

    /// Waits until both watches have listed what exists.
    pub async fn until_listed(&self) -> Result<()> {
        until(&self.seen, "watches listed", Duration::from_secs(30), |g| {
            g.pv_ready && g.pvc_ready
        })
        .await
    }

    /// The namespace, the key secrets, the RoleBinding and a StorageClass for each provisioner.
    pub async fn prepare(&self) {
        let (bed, admin) = (&self.bed, &self.admin);
        namespace(admin, &self.ns).await;
        key_secret(admin, "kube-system", &self.admin_secret, &bed.admin_key).await;
        key_secret(admin, &self.ns, "ceph-user", &bed.kube_key).await;
        // On 1.31+ our PVs are ceph-csi static volumes: their node-stage Secret, in ceph-csi's
        // format, is the user secret's companion.
        csi_secret(admin, &self.ns, "ceph-user-csi", "kube", &bed.kube_key).await;
        // As deployed: the provisioner reads Secrets only where a RoleBinding lets it
        // (manifests/rbac/secrets.yaml); the user secret lives in the claims' namespace.
        apply_yaml(
            admin,
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: rbd-provisioner-secrets\n  namespace: NS\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: rbd-provisioner-secrets\nsubjects:\n  - kind: ServiceAccount\n    name: rbd-provisioner\n    namespace: kube-system\n",
            &[("NS", &self.ns)],
        )
        .await;
        // The same parameters for both provisioners.
        let params = [
            ("monitors", bed.monitors.as_str()),
            ("adminId", "admin"),
            ("adminSecretName", self.admin_secret.as_str()),
            ("adminSecretNamespace", "kube-system"),
            ("pool", "kube"),
            ("userId", "kube"),
            ("userSecretName", "ceph-user"),
            ("imageFormat", "2"),
            ("imageFeatures", "layering"),
        ];
        let delete = json!({"reclaimPolicy": "Delete"});
        storage_class(admin, &self.ours, &self.prov_name, &params, delete.clone()).await;
        storage_class(
            admin,
            &self.peer,
            &peer_provisioner(),
            &params,
            delete.clone(),
        )
        .await;
        // The mock driver takes no parameters; Delete as the others.
        storage_class(admin, &self.csi, &self.csi_driver, &[], delete).await;
    }

    /// The API server's own `/metrics` (read with the admin client); empty when unreadable.
    pub async fn apiserver_metrics(&self) -> String {
        let Ok(req) = http::Request::get("/metrics").body(Vec::new()) else {
            return String::new();
        };
        self.admin.request_text(req).await.unwrap_or_default()
    }

    pub fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }
    pub fn pvs(&self) -> Api<PersistentVolume> {
        Api::all(self.admin.clone())
    }

    pub async fn create_claim(
        &self,
        name: &str,
        class: &str,
        size: &str,
    ) -> Result<PersistentVolumeClaim> {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": class,
                "resources": {"requests": {"storage": size}},
            },
        }))?;
        self.pvcs()
            .create(&PostParams::default(), &pvc)
            .await
            .with_context(|| format!("create claim {name}"))
    }

    pub async fn delete_claim(&self, name: &str) -> Result<()> {
        self.pvcs()
            .delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("delete claim {name}"))?;
        Ok(())
    }

    /// Deletes the claims all at once.
    pub async fn delete_claims(&self, list: &[String]) -> Result<()> {
        for r in join_all(list.iter().map(|n| self.delete_claim(n))).await {
            r?;
        }
        Ok(())
    }

    /// From now on the trash poller waits for the images of these claims to leave the trash.
    pub fn expect_purged(&self, list: &[String]) {
        self.seen
            .lock()
            .unwrap()
            .trash_pending
            .extend(list.iter().cloned());
    }

    /// Waits until `map` holds every claim of `list`; returns when the last one got there.
    pub async fn until_all(
        &self,
        what: &str,
        timeout: Duration,
        map: fn(&Seen) -> &HashMap<String, Instant>,
        list: &[String],
    ) -> Result<Instant> {
        until(&self.seen, what, timeout, |g| all_in(map(g), list)).await?;
        Ok(latest(map(&self.seen.lock().unwrap()), list))
    }

    pub fn at(&self, map: fn(&Seen) -> &HashMap<String, Instant>, name: &str) -> Instant {
        map(&self.seen.lock().unwrap())[name]
    }
}

/// The peer's provisioner name: the in-tree `kubernetes.io/rbd` of kube-controller-manager,
/// or, with `RBD_BENCH_PEER=<name>`, an external provisioner started by hand under that name
/// (for instance the old `ceph.com/rbd` one, whose build is never part of this repository).
pub fn peer_provisioner() -> String {
    std::env::var("RBD_BENCH_PEER").unwrap_or_else(|_| "kubernetes.io/rbd".into())
}

/// Whether the run has the CSI peer: `RBD_BENCH_CSI=1`/`0`, else on planes without the in-tree
/// RBD plugin (1.31+), where external-provisioner's informers find every API they watch.
pub fn csi_peer_wanted(kube_minor: u32) -> bool {
    match std::env::var("RBD_BENCH_CSI").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => kube_minor >= 31,
    }
}

/// How the report names the peer.
pub fn peer_label() -> String {
    match peer_provisioner().as_str() {
        "kubernetes.io/rbd" => "in-tree peer".into(),
        other => format!("peer `{other}`"),
    }
}
