//! A test's world: a namespace, Secrets and classes for one provisioner name ([`Stage`]),
//! with that provisioner running ([`Scenario`]), and claims made in it.

use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::{
    Bed, Cleanup, Provisioner, claim, create_pool, csi_secret, image_exists, image_of, key_secret,
    namespace, opaque_admin_secret, storage_class, uid_of, unique, wait_bound, wait_event,
    wait_for,
};

/// One test's world without its provisioner: a namespace, admin and user Secrets (in
/// kube-system and default, where the shipped RBAC lets it read them) for provisioner `name`.
/// On its own for tests that must make objects before any provisioner runs.
pub struct Stage {
    /// First field, so it is dropped first: the namespace, the PVs of its claims, classes and
    /// copied Secrets go on success and on failure, whatever the test did.
    pub cleanup: Cleanup,
    pub bed: Bed,
    pub admin: Client,
    pub ns: String,
    pub name: String,
}

/// A [`Stage`] with its provisioner running.
pub struct Scenario {
    /// First, so the cleanup runs before the provisioner is stopped.
    pub stage: Stage,
    pub prov: Provisioner,
}

impl std::ops::Deref for Scenario {
    type Target = Stage;
    fn deref(&self) -> &Stage {
        &self.stage
    }
}

impl std::ops::DerefMut for Scenario {
    fn deref_mut(&mut self) -> &mut Stage {
        &mut self.stage
    }
}

impl Scenario {
    pub async fn new(prefix: &str) -> Scenario {
        Self::serving(prefix, &format!("{}.test/rbd", unique(prefix)), &[]).await
    }

    /// A provisioner of a name of its own (`<prefix>-<random>.test/rbd`, in `name`), started
    /// with extra environment.
    pub async fn with_env(prefix: &str, env: &[(&str, &str)]) -> Scenario {
        Self::serving(prefix, &format!("{}.test/rbd", unique(prefix)), env).await
    }

    /// A provisioner of a name of its own, started with extra environment and arguments.
    pub async fn serving_with(prefix: &str, env: &[(&str, &str)], args: &[&str]) -> Scenario {
        let bed = Bed::load();
        let name = format!("{}.test/rbd", unique(prefix));
        let prov = Provisioner::start_with(&bed, &name, env, args, None).await;
        Self::around(prefix, &name, prov).await
    }

    /// A provisioner named `name`, started with extra environment.
    pub async fn serving(prefix: &str, name: &str, env: &[(&str, &str)]) -> Scenario {
        let bed = Bed::load();
        let prov = Provisioner::start(&bed, name, env).await;
        Self::around(prefix, name, prov).await
    }

    /// A namespace, Secrets and the cleanup for provisioner `name`, already started as `prov`.
    pub async fn around(prefix: &str, name: &str, prov: Provisioner) -> Scenario {
        Scenario {
            stage: Stage::new(prefix, name).await,
            prov,
        }
    }
}

impl Stage {
    pub async fn new(prefix: &str, name: &str) -> Stage {
        let bed = Bed::load();
        let admin = bed.admin().await;
        let ns = unique(prefix);
        namespace(&admin, &ns).await;
        key_secret(
            &admin,
            "kube-system",
            &format!("{ns}-admin"),
            &bed.admin_key,
        )
        .await;
        key_secret(&admin, "default", &format!("{ns}-user"), &bed.kube_key).await;
        // ceph-csi's format, for the csi flavour's nodeStageSecretRef.
        csi_secret(
            &admin,
            "default",
            &format!("{ns}-node-stage"),
            "kube",
            &bed.kube_key,
        )
        .await;
        Stage {
            cleanup: Cleanup::new(&bed).namespace(&ns).prefix(&format!("{ns}-")),
            bed,
            admin,
            ns,
            name: name.to_string(),
        }
    }

    /// Good parameters, overridden by `over` (an empty value removes the key).
    pub fn params(&self, over: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = vec![
            ("monitors".into(), self.bed.monitors.clone()),
            ("adminId".into(), "admin".into()),
            ("adminSecretName".into(), format!("{}-admin", self.ns)),
            ("adminSecretNamespace".into(), "kube-system".into()),
            ("pool".into(), "kube".into()),
            ("userId".into(), "kube".into()),
            ("userSecretName".into(), format!("{}-user", self.ns)),
            ("userSecretNamespace".into(), "default".into()),
        ];
        for (k, v) in over {
            p.retain(|(pk, _)| pk != k);
            if !v.is_empty() {
                p.push((k.to_string(), v.to_string()));
            }
        }
        // Kubernetes >= 1.31: a class without volumeFlavor gets csi PVs, which need these.
        let given = |k: &str| over.iter().any(|(o, _)| o.eq_ignore_ascii_case(k));
        if self.bed.csi_by_default() && !given("volumeFlavor") {
            for (k, v) in self.csi_params() {
                if !given(k) {
                    p.push((k.to_string(), v));
                }
            }
        }
        p
    }

    /// The csi flavour's parameters: a clusterID, and the node-stage Secret in ceph-csi's
    /// format this scenario made.
    pub fn csi_params(&self) -> Vec<(&'static str, String)> {
        vec![
            ("clusterID", "rbdp-test-cluster".to_string()),
            ("csiNodeStageSecretName", format!("{}-node-stage", self.ns)),
            ("csiNodeStageSecretNamespace", "default".to_string()),
        ]
    }

    /// A StorageClass `<ns>-<suffix>` of this provisioner; `extra` adds top-level fields
    /// (reclaimPolicy, allowVolumeExpansion, ...).
    pub async fn class(
        &self,
        suffix: &str,
        over: &[(&str, &str)],
        extra: serde_json::Value,
    ) -> String {
        let name = format!("{}-{suffix}", self.ns);
        let p = self.params(over);
        let p: Vec<(&str, &str)> = p.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        storage_class(&self.admin, &name, &self.name, &p, extra).await;
        name
    }

    /// A class `<ns>-<suffix>` of the csi flavour, its node-stage Secret `default/<secret>`
    /// (in ceph-csi's format), clusterID `bed-ceph`; `extra` as for [`Stage::class`].
    pub async fn csi_class(&self, suffix: &str, secret: &str, extra: serde_json::Value) -> String {
        let over = [
            ("volumeFlavor", "csi"),
            ("clusterID", "bed-ceph"),
            ("csiNodeStageSecretName", secret),
            ("csiNodeStageSecretNamespace", "default"),
        ];
        self.class(suffix, &over, extra).await
    }

    /// A class `<ns>-<suffix>` whose volumes only the provisioner can grow: expansion allowed,
    /// and an admin Secret of type Opaque ([`opaque_admin_secret`]), which
    /// kube-controller-manager's in-tree expander cannot read. `over` and `extra` as for
    /// [`Stage::class`].
    pub async fn grown_by_us_class(
        &self,
        suffix: &str,
        over: &[(&str, &str)],
        mut extra: serde_json::Value,
    ) -> String {
        let opaque = opaque_admin_secret(self).await;
        let mut over = over.to_vec();
        over.push(("adminSecretName", &opaque));
        extra["allowVolumeExpansion"] = true.into();
        self.class(suffix, &over, extra).await
    }

    /// A pool of the test's own (`<prefix>-<random>`, initialised for RBD) and a class of
    /// reclaim policy Delete on it: (pool, class).
    pub async fn own_pool(&self, prefix: &str) -> (String, String) {
        let pool = unique(prefix);
        create_pool(&self.bed, &pool);
        let delete = json!({"reclaimPolicy": "Delete"});
        let class = self.class("delete", &[("pool", &pool)], delete).await;
        (pool, class)
    }

    pub fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    pub fn pvs(&self) -> Api<PersistentVolume> {
        Api::all(self.admin.clone())
    }

    pub async fn pv_of(&self, c: &PersistentVolumeClaim) -> PersistentVolume {
        self.pvs().get(&format!("pvc-{}", uid_of(c))).await.unwrap()
    }

    /// A claim `name` of `class` in this namespace, to be made by the admin: ReadWriteOnce
    /// and 64Mi, the most common, unless the builder says otherwise.
    pub fn claim<'a>(&'a self, name: &'a str, class: &'a str) -> ClaimBuilder<'a> {
        ClaimBuilder {
            stage: self,
            name,
            class,
            size: "64Mi",
            modes: &["ReadWriteOnce"],
            spec: serde_json::json!({}),
        }
    }

    /// Creates a claim and waits until it is Bound; returns it (as created) and its uid.
    pub async fn bound(
        &self,
        class: &str,
        name: &str,
        size: &str,
    ) -> (PersistentVolumeClaim, String) {
        self.claim(name, class).size(size).bound().await
    }

    pub async fn wait_pv_gone(&self, uid: &str) {
        let pvs = self.pvs();
        wait_for(
            &format!("PV pvc-{uid} deleted"),
            Duration::from_secs(60),
            || async {
                pvs.get_opt(&format!("pvc-{uid}"))
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            },
        )
        .await;
    }

    /// Deletes claim `name` (as `kubectl delete pvc` would: the API server's default
    /// propagation); panics when the API server refuses.
    pub async fn delete_claim(&self, name: &str) {
        self.pvcs()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete claim {}/{name}: {e}", self.ns));
    }

    /// Asks for claim `name` to be `size` (expansion, or a lower request).
    pub async fn request(
        &self,
        name: &str,
        size: &str,
    ) -> Result<PersistentVolumeClaim, kube::Error> {
        self.pvcs()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": size}}}})),
            )
            .await
    }

    /// Grows claim `pvc` to `size` (its class allows it) and waits for the provisioner's
    /// FileSystemResizeRequired event with every needle: image and PV are grown by then.
    pub async fn grow(
        &self,
        pvc: &PersistentVolumeClaim,
        size: &str,
        needles: &[&str],
        timeout: Duration,
    ) -> Event {
        let name = pvc.metadata.name.as_deref().unwrap_or_default();
        self.request(name, size)
            .await
            .expect("expansion allowed by the class");
        let uid = uid_of(pvc);
        let reason = "FileSystemResizeRequired";
        wait_event(&self.admin, &self.ns, &uid, reason, needles, timeout).await
    }

    /// Waits until claim `name` has condition `cond` True; returns the claim.
    pub async fn wait_condition(
        &self,
        name: &str,
        cond: &str,
        timeout: Duration,
    ) -> PersistentVolumeClaim {
        let api = self.pvcs();
        wait_for(
            &format!("claim {name} condition {cond}"),
            timeout,
            || async {
                let c = api.get(name).await.ok()?;
                c.status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .any(|x| x.type_ == cond && x.status == "True")
                    .then_some(c)
            },
        )
        .await
    }

    /// A merge patch of PV `pv`.
    pub async fn patch_pv(&self, pv: &str, patch: serde_json::Value) {
        self.pvs()
            .patch(pv, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap_or_else(|e| panic!("patch PV {pv}: {e}"));
    }

    /// Waits until PV `pv` is in `phase` (Released, say).
    pub async fn wait_pv_phase(&self, pv: &str, phase: &str, timeout: Duration) {
        let pvs = self.pvs();
        wait_for(&format!("PV {pv} {phase}"), timeout, || async {
            (pvs.get(pv).await.ok()?.status?.phase.as_deref() == Some(phase)).then_some(())
        })
        .await
    }

    /// Whether PV `pvc-<uid>` exists.
    pub async fn has_pv(&self, uid: &str) -> bool {
        self.pvs()
            .get_opt(&format!("pvc-{uid}"))
            .await
            .unwrap()
            .is_some()
    }

    /// Waits for claim `pvc`'s ProvisioningFailed event with every needle, then checks that
    /// no image was made for it (by librbd's listing of pool `kube`); returns the event.
    pub async fn wait_refused(
        &self,
        pvc: &PersistentVolumeClaim,
        needles: &[&str],
        timeout: Duration,
    ) -> Event {
        let uid = uid_of(pvc);
        let ev = wait_event(
            &self.admin,
            &self.ns,
            &uid,
            "ProvisioningFailed",
            needles,
            timeout,
        )
        .await;
        let ceph = self.bed.ceph().await;
        assert!(
            !image_exists(&ceph, "kube", &image_of(&uid)).await,
            "an image was made for refused claim {}",
            pvc.metadata.name.as_deref().unwrap_or_default()
        );
        ev
    }
}

/// A claim to make, from [`Stage::claim`].
pub struct ClaimBuilder<'a> {
    stage: &'a Stage,
    name: &'a str,
    class: &'a str,
    size: &'a str,
    modes: &'a [&'a str],
    spec: serde_json::Value,
}

impl<'a> ClaimBuilder<'a> {
    pub fn size(mut self, size: &'a str) -> Self {
        self.size = size;
        self
    }

    pub fn modes(mut self, modes: &'a [&'a str]) -> Self {
        self.modes = modes;
        self
    }

    /// More `spec` fields (volumeMode, dataSource, volumeName, ...).
    pub fn spec(mut self, extra: serde_json::Value) -> Self {
        self.spec = extra;
        self
    }

    /// Creates the claim; returns it as stored (with its uid).
    pub async fn create(self) -> PersistentVolumeClaim {
        let s = self.stage;
        claim(
            &s.admin, &s.ns, self.name, self.class, self.size, self.modes, self.spec,
        )
        .await
    }

    /// Creates the claim and waits until it is Bound; returns it (as created) and its uid.
    pub async fn bound(self) -> (PersistentVolumeClaim, String) {
        let (s, name) = (self.stage, self.name);
        let c = self.create().await;
        wait_bound(&s.admin, &s.ns, name, Duration::from_secs(60)).await;
        let uid = uid_of(&c);
        (c, uid)
    }
}
