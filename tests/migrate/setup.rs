//! The world a migration test runs in: a stage whose class carries the csi settings, volumes
//! as the old provisioner and ours left them, and `migrate-to-csi` run as an operator would.

use super::*;

pub fn backups(client: &Client) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), BACKUP_NS)
}

/// The backup ConfigMap of PV `pv`, if there is one.
pub async fn backup_of(client: &Client, pv: &str) -> Option<ConfigMap> {
    backups(client)
        .get_opt(&plan::backup_name(pv).unwrap())
        .await
        .unwrap()
}

/// A [`Stage`] (namespace, Secrets, cleanup guard) whose class also carries the csi settings
/// migrate-to-csi reads, with the ceph-csi Secret they name in the namespace. Its provisioner
/// is started by each test, after the volumes that must exist before it runs.
pub struct Setup {
    /// First, so the guard goes first, as a Scenario's does.
    pub stage: Stage,
    pub ceph: Arc<Cluster>,
    pub class: String,
    /// `ns/name` of the ceph-csi node-stage Secret.
    pub csi_secret: String,
    /// The CSI driver its csi PVs must name.
    pub driver: String,
    /// Images made by hand (pool, name), removed at the end.
    pub images: Vec<(String, String)>,
    pub claims: Vec<PersistentVolumeClaim>,
}

impl std::ops::Deref for Setup {
    type Target = Stage;
    fn deref(&self) -> &Stage {
        &self.stage
    }
}

impl Setup {
    /// A class of the default csi driver, which is registered.
    pub async fn new(prefix: &str) -> Setup {
        let s = Setup::with(prefix, &[]).await;
        csi_driver(&s.admin, CSI_DRIVER).await;
        s
    }

    /// A class with `extra` parameters too (its `csiDriver` is not registered here).
    pub async fn with(prefix: &str, extra: &[(&str, &str)]) -> Setup {
        let stage = Stage::new(prefix, &format!("{}.test/rbd", unique(prefix))).await;
        let ceph = stage.bed.ceph().await;
        let ns = stage.ns.clone();
        csi_secret(
            &stage.admin,
            &ns,
            "csi-rbd-node",
            "kube",
            &stage.bed.kube_key,
        )
        .await;
        // What ceph-csi volumes of this class are written with.
        let mut params = vec![
            ("clusterID", CLUSTER_ID),
            ("csiNodeStageSecretName", "csi-rbd-node"),
            ("csiNodeStageSecretNamespace", &ns),
        ];
        params.extend_from_slice(extra);
        let class = stage.class("class", &params, json!({})).await;
        let driver = extra
            .iter()
            .find(|(k, _)| *k == "csiDriver")
            .map_or(CSI_DRIVER, |(_, v)| *v)
            .to_string();
        Setup {
            csi_secret: format!("{ns}/csi-rbd-node"),
            driver,
            stage,
            ceph,
            class,
            images: Vec::new(),
            claims: Vec::new(),
        }
    }

    /// A volume exactly as the old external-storage provisioner left it: an image named
    /// `kubernetes-dynamic-pvc-<time uuid>` (not derived from the claim), a PV `pvc-<claim uid>`
    /// with `rbdProvisionerIdentity`, no admin information, the keyring the API server
    /// defaults, pre-bound to its claim by uid. Call before the provisioner starts, so that
    /// nothing provisions the claim meanwhile.
    pub async fn legacy_volume(
        &mut self,
        claim_name: &str,
        pool: &str,
    ) -> (PersistentVolumeClaim, String, String) {
        let h = unique("u");
        let h = h.trim_start_matches("u-");
        let image = format!(
            "kubernetes-dynamic-pvc-{h}-{}-11ef-9d3e-0242ac11{}",
            &h[..4],
            &h[4..]
        );
        self.ceph
            .create_image(&ImageSpec {
                pool: pool.into(),
                name: image.clone(),
                size: 64 << 20,
                data_pool: None,
                features: RBD_FEATURE_LAYERING,
            })
            .await
            .expect("create the legacy image");
        self.images.push((pool.into(), image.clone()));
        let pvc = self.claim(claim_name, &self.class).create().await;
        let uid = uid_of(&pvc);
        let pv_name = format!("pvc-{uid}");
        let mut pv = self.old_pv(&pv_name, "Delete", pool, &image);
        pv["spec"]["volumeMode"] = json!("Filesystem");
        pv["spec"]["claimRef"] = json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": self.ns, "name": claim_name, "uid": uid,
            "resourceVersion": pvc.metadata.resource_version,
        });
        let rbd = &mut pv["spec"]["rbd"];
        rbd["keyring"] = json!("/etc/ceph/keyring");
        rbd["fsType"] = json!("ext4");
        let pv: PersistentVolume = serde_json::from_value(pv).unwrap();
        self.pvs()
            .create(&PostParams::default(), &pv)
            .await
            .expect("create the legacy PV");
        let bound = wait_bound(&self.admin, &self.ns, claim_name, T).await;
        assert_eq!(
            bound.spec.as_ref().unwrap().volume_name.as_deref(),
            Some(pv_name.as_str())
        );
        self.claims.push(bound.clone());
        (bound, pv_name, image)
    }

    /// A PV `name` of this class as the old external-storage provisioner (ceph.com/rbd) wrote
    /// it, naming `pool/image`, unbound; callers add what their volume has besides.
    pub fn old_pv(&self, name: &str, policy: &str, pool: &str, image: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "annotations": {
                    "pv.kubernetes.io/provisioned-by": "ceph.com/rbd",
                    "rbdProvisionerIdentity": "ceph.com/rbd",
                },
            },
            "spec": {
                "capacity": {"storage": "64Mi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": policy,
                "storageClassName": self.class,
                "rbd": {
                    "monitors": [self.bed.monitors],
                    "pool": pool,
                    "image": image,
                    "user": "kube",
                    "secretRef": {"name": format!("{}-user", self.ns), "namespace": "default"},
                },
            },
        })
    }

    /// A volume provisioned by our provisioner (which must be running).
    pub async fn our_volume(
        &mut self,
        claim_name: &str,
    ) -> (PersistentVolumeClaim, String, String) {
        let pvc = self
            .claim(claim_name, &self.class)
            .size("32Mi")
            .create()
            .await;
        self.claims.push(pvc.clone());
        let bound = wait_bound(&self.admin, &self.ns, claim_name, T).await;
        let uid = uid_of(&bound);
        let pv = self.pvs().get(&format!("pvc-{uid}")).await.unwrap();
        assert!(
            pv.spec.as_ref().unwrap().rbd.is_some(),
            "a 1.20 server gets spec.rbd PVs"
        );
        (
            bound,
            format!("pvc-{uid}"),
            format!("kubernetes-dynamic-pvc-{uid}"),
        )
    }

    pub async fn migrate(&self, extra: &[&str]) -> (bool, String) {
        let (code, text) = self.migrate_env(extra, &[]).await;
        (code == Some(0), text)
    }

    /// Runs `migrate-to-csi` with extra environment (the failpoints); returns its exit code.
    pub async fn migrate_env(&self, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rbd-provisioner"));
        cmd.arg("--kubeconfig")
            .arg(&self.bed.kubeconfig)
            .args([
                "migrate-to-csi",
                "--storage-class",
                &self.class,
                "--provisioner-name",
                &self.name,
            ])
            .args(extra)
            .env_remove("KUBECONFIG_PATH")
            .env_remove("PROVISIONER_NAME")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied());
        let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
            .await
            .expect("migrate-to-csi finished")
            .expect("run migrate-to-csi");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("--- migrate-to-csi {extra:?} ({}):\n{text}", out.status);
        assert!(
            !text.contains(&self.bed.kube_key) && !text.contains(&self.bed.admin_key),
            "no key in the output"
        );
        (out.status.code(), text)
    }

    pub fn settings(&self) -> CsiSettings {
        CsiSettings {
            driver: self.driver.clone(),
            driver_source: DriverSource::Class,
            cluster_id: CLUSTER_ID.into(),
            node_stage_secret: SecretRef {
                namespace: self.ns.clone(),
                name: "csi-rbd-node".into(),
            },
            admin: Some(Admin {
                id: "admin".into(),
                secret: SecretRef {
                    namespace: "kube-system".into(),
                    name: format!("{}-admin", self.ns),
                },
            }),
        }
    }

    pub async fn cleanup(self) {
        let pods = Api::<Pod>::namespaced(self.admin.clone(), &self.ns);
        let _ = pods
            .delete_collection(
                &DeleteParams::default().grace_period(0),
                &Default::default(),
            )
            .await;
        for c in &self.claims {
            let _ = backups(&self.admin)
                .delete(
                    &plan::backup_name(&format!("pvc-{}", uid_of(c))).unwrap(),
                    &DeleteParams::default(),
                )
                .await;
        }
        let claims: Vec<&PersistentVolumeClaim> = self.claims.iter().collect();
        cleanup(
            &self.bed,
            &self.admin,
            &self.ns,
            &claims,
            &["kube", "kube2"],
        )
        .await;
        for (pool, image) in &self.images {
            let _ = self.ceph.remove_image(pool, image).await;
        }
        // The class, the Secrets and the namespace go with the stage's guard, dropped here.
    }
}

pub fn line_of<'a>(out: &'a str, pv: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(pv))
        .unwrap_or_else(|| panic!("no line for {pv} in:\n{out}"))
}
