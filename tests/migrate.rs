//! `migrate-to-csi` on the bed: PVs of the old external-storage provisioner and of ours,
//! rewritten as static ceph-csi PVs; the built binary runs as an operator would run it.

use testbed as common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ceph::{Cluster, ImageSpec, RBD_FEATURE_LAYERING};
use common::*;
use domain::migration::{self as plan, ANN_BACKUP, ANN_STEP, Admin, CsiSettings, DriverSource};
use domain::params::SecretRef;
use domain::reclaim::spec_image;
use domain::volume::{
    ANN_ADMIN_ID, ANN_ADMIN_SECRET, ANN_IMAGE, ANN_MONITORS, ANN_POOL, CSI_DRIVER, FINALIZER,
};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(60);
/// The volumes to migrate are `spec.rbd` ones: the provisioners here write them on every
/// plane (on 1.37, what a cluster upgraded before migrating is left with; 1.37 still accepts
/// such PVs). The classes keep their csi parameters, which migrate-to-csi reads.
const RBD_FLAVOR: &[(&str, &str)] = &[("VOLUME_FLAVOR", "rbd")];
const CLUSTER_ID: &str = "bed-cluster";
/// Where `migrate-to-csi` keeps its backups by default.
const BACKUP_NS: &str = "kube-system";

fn backups(client: &Client) -> Api<ConfigMap> {
    Api::namespaced(client.clone(), BACKUP_NS)
}

/// The backup ConfigMap of PV `pv`, if there is one.
async fn backup_of(client: &Client, pv: &str) -> Option<ConfigMap> {
    backups(client)
        .get_opt(&plan::backup_name(pv).unwrap())
        .await
        .unwrap()
}

/// A [`Stage`] (namespace, Secrets, cleanup guard) whose class also carries the csi settings
/// migrate-to-csi reads, with the ceph-csi Secret they name in the namespace. Its provisioner
/// is started by each test, after the volumes that must exist before it runs.
struct Setup {
    /// First, so the guard goes first, as a Scenario's does.
    stage: Stage,
    ceph: Arc<Cluster>,
    class: String,
    /// `ns/name` of the ceph-csi node-stage Secret.
    csi_secret: String,
    /// The CSI driver its csi PVs must name.
    driver: String,
    /// Images made by hand (pool, name), removed at the end.
    images: Vec<(String, String)>,
    claims: Vec<PersistentVolumeClaim>,
}

impl std::ops::Deref for Setup {
    type Target = Stage;
    fn deref(&self) -> &Stage {
        &self.stage
    }
}

impl Setup {
    /// A class of the default csi driver, which is registered.
    async fn new(prefix: &str) -> Setup {
        let s = Setup::with(prefix, &[]).await;
        csi_driver(&s.admin, CSI_DRIVER).await;
        s
    }

    /// A class with `extra` parameters too (its `csiDriver` is not registered here).
    async fn with(prefix: &str, extra: &[(&str, &str)]) -> Setup {
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
    async fn legacy_volume(
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
        let pv: PersistentVolume = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {
                "name": pv_name,
                "annotations": {
                    "pv.kubernetes.io/provisioned-by": "ceph.com/rbd",
                    "rbdProvisionerIdentity": "ceph.com/rbd",
                },
            },
            "spec": {
                "capacity": {"storage": "64Mi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": self.class,
                "volumeMode": "Filesystem",
                "claimRef": {
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "namespace": self.ns, "name": claim_name, "uid": uid,
                    "resourceVersion": pvc.metadata.resource_version,
                },
                "rbd": {
                    "monitors": [self.bed.monitors],
                    "pool": pool,
                    "image": image,
                    "user": "kube",
                    "keyring": "/etc/ceph/keyring",
                    "secretRef": {"name": format!("{}-user", self.ns), "namespace": "default"},
                    "fsType": "ext4",
                },
            },
        }))
        .unwrap();
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

    /// A volume provisioned by our provisioner (which must be running).
    async fn our_volume(&mut self, claim_name: &str) -> (PersistentVolumeClaim, String, String) {
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

    async fn migrate(&self, extra: &[&str]) -> (bool, String) {
        let (code, text) = self.migrate_env(extra, &[]).await;
        (code == Some(0), text)
    }

    /// Runs `migrate-to-csi` with extra environment (the failpoints); returns its exit code.
    async fn migrate_env(&self, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
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

    fn settings(&self) -> CsiSettings {
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

    async fn cleanup(self) {
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

fn line_of<'a>(out: &'a str, pv: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(pv))
        .unwrap_or_else(|| panic!("no line for {pv} in:\n{out}"))
}

/// Records each phase change of the claims of a namespace, from a watch (so that a Lost
/// phase of a few milliseconds is seen too), until stopped.
struct PhaseLog {
    log: Arc<Mutex<Vec<(Duration, String, String)>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PhaseLog {
    async fn start(api: Api<PersistentVolumeClaim>) -> PhaseLog {
        use futures::TryStreamExt;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let l = log.clone();
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut last: BTreeMap<String, String> = BTreeMap::new();
            let mut ready_tx = Some(ready_tx);
            let stream = kube::runtime::watcher(api, Default::default());
            futures::pin_mut!(stream);
            loop {
                let ev = tokio::select! {
                    _ = stopped.changed() => break,
                    ev = stream.try_next() => ev,
                };
                let objs = match ev {
                    Ok(Some(kube::runtime::watcher::Event::Apply(c)))
                    | Ok(Some(kube::runtime::watcher::Event::InitApply(c))) => vec![c],
                    Ok(Some(kube::runtime::watcher::Event::InitDone)) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                        vec![]
                    }
                    Ok(Some(kube::runtime::watcher::Event::Delete(_)))
                    | Ok(Some(kube::runtime::watcher::Event::Init)) => vec![],
                    // A watch error means a re-list, across which a Lost of a few
                    // milliseconds can be missed: recorded, and the test fails on it.
                    Ok(None) | Err(_) => {
                        l.lock().unwrap().push((
                            start.elapsed(),
                            String::new(),
                            format!("watch error or end: {ev:?}"),
                        ));
                        vec![]
                    }
                };
                // Every update (not only phase changes), so the test can tell that the watch
                // saw the migration touch the claim.
                for c in objs {
                    let n = c.metadata.name.clone().unwrap_or_default();
                    let rv = c.metadata.resource_version.clone().unwrap_or_default();
                    let phase = c.status.and_then(|s| s.phase).unwrap_or_default();
                    if last.get(&n) != Some(&rv) {
                        l.lock().unwrap().push((start.elapsed(), n.clone(), phase));
                        last.insert(n, rv);
                    }
                }
            }
        });
        tokio::time::timeout(T, ready)
            .await
            .expect("the claims watch listed the namespace")
            .expect("the claims watch listed the namespace");
        PhaseLog { log, stop, task }
    }

    async fn finish(self) -> Vec<(Duration, String, String)> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.log.lock().unwrap().clone()
    }
}

/// How long `claim` was Lost, from a phase log. The watch must have seen it Bound first, then
/// the migration's own updates of it (the step annotation), and, if it saw it Lost, Bound again
/// after; no watch error in between (a re-list could hide a short Lost). `None`: the watch,
/// which saw every update, never saw it Lost (the binder synced the claim only once the csi PV
/// existed).
fn lost_for(log: &[(Duration, String, String)], claim: &str) -> Result<Option<Duration>, String> {
    if let Some(e) = log.iter().find(|(_, n, _)| n.is_empty()) {
        return Err(format!("the watch failed: {e:?}"));
    }
    let mine: Vec<_> = log.iter().filter(|(_, n, _)| n == claim).collect();
    if mine.first().map(|(_, _, p)| p.as_str()) != Some("Bound") {
        return Err(format!("not seen Bound first: {mine:?}"));
    }
    if mine.len() < 2 {
        return Err(format!("the watch saw no update of the claim: {mine:?}"));
    }
    let Some(lost) = mine.iter().position(|(_, _, p)| p == "Lost") else {
        return Ok(None);
    };
    let back = mine[lost..]
        .iter()
        .find(|(_, _, p)| p == "Bound")
        .ok_or_else(|| format!("not Bound again after Lost: {mine:?}"))?;
    Ok(Some(back.0 - mine[lost].0))
}

async fn assert_migrated(
    s: &Setup,
    before: &PersistentVolume,
    claim: &PersistentVolumeClaim,
    pool: &str,
    image: &str,
) {
    let name = before.metadata.name.clone().unwrap();
    let claim_name = claim.metadata.name.clone().unwrap();
    let bound = wait_bound(&s.admin, &s.ns, &claim_name, T).await;
    assert_eq!(
        bound.metadata.uid, claim.metadata.uid,
        "the same claim, not a new one"
    );
    assert_eq!(
        bound.spec.as_ref().unwrap().volume_name.as_deref(),
        Some(name.as_str())
    );
    let ann = bound.metadata.annotations.clone().unwrap_or_default();
    assert!(
        !ann.contains_key(ANN_BACKUP) && !ann.contains_key(ANN_STEP),
        "claim annotations removed: {ann:?}"
    );
    assert!(
        backup_of(&s.admin, &name).await.is_none(),
        "backup ConfigMap removed"
    );

    let after = s.pvs().get(&name).await.unwrap();
    assert_ne!(
        after.metadata.uid, before.metadata.uid,
        "the PV object was replaced"
    );
    assert_eq!(
        after.status.as_ref().unwrap().phase.as_deref(),
        Some("Bound")
    );
    let (b, a) = (before.spec.clone().unwrap(), after.spec.clone().unwrap());
    assert_eq!(a.capacity, b.capacity);
    assert_eq!(a.access_modes, b.access_modes);
    assert_eq!(
        a.persistent_volume_reclaim_policy,
        b.persistent_volume_reclaim_policy
    );
    assert_eq!(a.storage_class_name, b.storage_class_name);
    assert_eq!(a.volume_mode, b.volume_mode);
    let (bc, ac) = (b.claim_ref.unwrap(), a.claim_ref.unwrap());
    assert_eq!(
        (ac.namespace, ac.name, ac.uid),
        (bc.namespace, bc.name, bc.uid)
    );
    assert!(a.rbd.is_none());
    let csi = a.csi.expect("spec.csi");
    assert_eq!(csi.driver, s.driver);
    assert_eq!(csi.volume_handle, image);
    assert_eq!(csi.fs_type.as_deref(), Some("ext4"));
    let attrs = csi.volume_attributes.unwrap();
    assert_eq!(attrs["clusterID"], CLUSTER_ID);
    assert_eq!(attrs["pool"], pool);
    assert_eq!(attrs["staticVolume"], "true");
    assert_eq!(attrs["imageFeatures"], "layering");
    let nss = csi.node_stage_secret_ref.unwrap();
    assert_eq!(
        (nss.namespace.as_deref(), nss.name.as_deref()),
        (Some(s.ns.as_str()), Some("csi-rbd-node"))
    );

    let ann = after.metadata.annotations.clone().unwrap();
    let old_ann = before.metadata.annotations.clone().unwrap();
    for (k, v) in &old_ann {
        assert_eq!(ann.get(k), Some(v), "annotation {k} kept");
    }
    assert_eq!(ann[ANN_MONITORS], s.bed.monitors);
    assert_eq!(ann[ANN_POOL], pool);
    assert_eq!(ann[ANN_IMAGE], image);
    assert_eq!(ann[ANN_ADMIN_ID], "admin");
    assert_eq!(ann[ANN_ADMIN_SECRET], format!("kube-system/{}-admin", s.ns));
    assert!(
        after
            .metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .contains(&FINALIZER.to_string())
    );
}

/// Dry run, a refusal while a pod uses a claim, then both volumes migrated; images untouched.
#[tokio::test]
async fn migrates_volumes_of_both_provisioners() {
    let mut s = Setup::new("migrate").await;
    // The old provisioner's volume in kube2 (made before our provisioner runs), ours in kube.
    let (legacy_claim, legacy_pv, legacy_image) = s.legacy_volume("legacy", "kube2").await;
    let _prov = Provisioner::start(&s.bed, &s.name, RBD_FLAVOR).await;
    let (our_claim, our_pv, our_image) = s.our_volume("ours").await;
    let legacy_before = s.pvs().get(&legacy_pv).await.unwrap();
    let ours_before = s.pvs().get(&our_pv).await.unwrap();
    let legacy_id = s.ceph.image_info("kube2", &legacy_image).await.unwrap().id;
    let our_id = s.ceph.image_info("kube", &our_image).await.unwrap().id;

    // A missing node-stage Secret is named, with the command that creates it.
    let (ok, out) = s
        .migrate(&[
            "--node-stage-secret",
            &format!("{}/nope", s.ns),
            "--dry-run",
        ])
        .await;
    assert!(!ok);
    assert!(
        out.contains(&format!("{}/nope not found", s.ns)) && out.contains("--from-literal=userID="),
        "{out}"
    );

    // Dry run: says what it would do, changes nothing.
    let (ok, out) = s.migrate(&["--dry-run"]).await;
    assert!(ok, "{out}");
    let l = line_of(&out, &legacy_pv);
    assert!(
        l.contains(&format!("({}/legacy, image kube2/{legacy_image})", s.ns)),
        "{l}"
    );
    assert!(
        l.contains("would migrate") && l.contains("old external-storage provisioner"),
        "{l}"
    );
    assert!(
        l.contains(&format!("clusterID {CLUSTER_ID}")) && l.contains(&s.csi_secret),
        "{l}"
    );
    let l = line_of(&out, &our_pv);
    assert!(
        l.contains("would migrate") && l.contains("provisioned by rbd-provisioner"),
        "{l}"
    );
    for (name, before) in [(&legacy_pv, &legacy_before), (&our_pv, &ours_before)] {
        let now = s.pvs().get(name).await.unwrap();
        assert_eq!(
            now.metadata.resource_version, before.metadata.resource_version,
            "dry run changed {name}"
        );
    }
    for pv in [&legacy_pv, &our_pv] {
        assert!(
            backup_of(&s.admin, pv).await.is_none(),
            "dry run saved no backup"
        );
    }

    // A pod (an API object: nothing runs it here) uses the legacy claim: that one is refused,
    // ours is migrated, and the command fails.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "app-0", "namespace": s.ns},
        "spec": {
            "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "legacy"}}],
        },
    }))
    .unwrap();
    let pods = Api::<Pod>::namespaced(s.admin.clone(), &s.ns);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let phases = PhaseLog::start(s.pvcs()).await;
    let started = Instant::now();
    let (ok, out) = s.migrate(&[]).await;
    let first_run = started.elapsed();
    assert!(!ok, "a refusal makes the command fail");
    let l = line_of(&out, &legacy_pv);
    assert!(
        l.contains(&format!(
            "refused: claim {}/legacy is used by pod(s) app-0; stop them",
            s.ns
        )),
        "{l}"
    );
    assert!(line_of(&out, &our_pv).ends_with(": migrated"), "{out}");
    assert!(out.contains("1 volume(s) refused and 0 failed"), "{out}");
    let untouched = s.pvs().get(&legacy_pv).await.unwrap();
    assert_eq!(
        untouched.metadata.resource_version,
        legacy_before.metadata.resource_version
    );
    assert_migrated(&s, &ours_before, &our_claim, "kube", &our_image).await;

    // Without the pod: the legacy volume goes too, ours is left as it is.
    pods.delete("app-0", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_absent(&pods, "app-0", "pod gone", T).await;
    let started = Instant::now();
    let (ok, out) = s.migrate(&[]).await;
    let second_run = started.elapsed();
    assert!(ok, "{out}");
    assert!(line_of(&out, &legacy_pv).ends_with(": migrated"), "{out}");
    assert!(
        line_of(&out, &our_pv).contains(&format!(
            "skipped: already a csi volume (driver {CSI_DRIVER})"
        )),
        "{out}"
    );
    assert_migrated(&s, &legacy_before, &legacy_claim, "kube2", &legacy_image).await;
    let log = phases.finish().await;
    eprintln!("claim phases (time since the first run started): {log:?}");
    eprintln!("runs took {first_run:?} and {second_run:?}");
    for c in ["ours", "legacy"] {
        let lost = lost_for(&log, c).unwrap_or_else(|e| panic!("claim {c}: {e}"));
        eprintln!("claim {c} was Lost for {lost:?} (None: never)");
        // Without waking the binder this would last up to its resync period (15 s).
        assert!(
            lost.is_none_or(|d| d < Duration::from_secs(5)),
            "claim {c} Lost for {lost:?}"
        );
    }

    for c in [&legacy_claim, &our_claim] {
        let evs: Vec<_> = events_for(&s.admin, &s.ns, &uid_of(c))
            .await
            .into_iter()
            .map(|e| (e.type_, e.reason, e.note))
            .collect();
        eprintln!("events of claim {:?}: {evs:?}", c.metadata.name);
    }

    // The images are the same ones (same librbd id), untouched.
    assert_eq!(
        s.ceph.image_info("kube2", &legacy_image).await.unwrap().id,
        legacy_id
    );
    assert_eq!(
        s.ceph.image_info("kube", &our_image).await.unwrap().id,
        our_id
    );

    // Nothing left to do.
    let (ok, out) = s.migrate(&["--dry-run"]).await;
    assert!(ok && !out.contains("would"), "{out}");

    // Our delete path removes a migrated image later, even without the class.
    Api::<StorageClass>::all(s.admin.clone())
        .delete(&s.class, &DeleteParams::default())
        .await
        .unwrap();
    s.delete_claim("ours").await;
    wait_absent(&s.pvs(), &our_pv, "the migrated PV deleted", T).await;
    assert!(
        !image_exists(&s.ceph, "kube", &our_image).await,
        "image removed (or in the trash)"
    );
    s.cleanup().await;
}

/// A run that died after each step is finished by the next one.
#[tokio::test]
async fn resumes_after_a_crash_at_each_step() {
    let mut s = Setup::new("resume").await;
    let (legacy_claim, legacy_pv, legacy_image) = s.legacy_volume("legacy", "kube").await;
    let _prov = Provisioner::start(&s.bed, &s.name, RBD_FLAVOR).await;
    let (a_claim, a_pv, a_image) = s.our_volume("a").await;
    let (b_claim, b_pv, b_image) = s.our_volume("b").await;
    let (c_claim, c_pv, c_image) = s.our_volume("c").await;
    let settings = s.settings();
    let mut before = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for (pv, image) in [
        (&legacy_pv, &legacy_image),
        (&a_pv, &a_image),
        (&b_pv, &b_image),
        (&c_pv, &c_image),
    ] {
        before.insert(pv.clone(), s.pvs().get(pv).await.unwrap());
        ids.insert(
            image.clone(),
            s.ceph.image_info("kube", image).await.unwrap().id,
        );
    }
    // What the command saves before it touches a PV, where it saves it.
    let save_backup = |_claim: &str, pv: &PersistentVolume| {
        let cms = backups(&s.admin);
        let cm = plan::backup_config_map(pv, BACKUP_NS).unwrap();
        async move {
            cms.create(&PostParams::default(), &cm).await.unwrap();
        }
    };
    let delete_old = |name: &str| {
        let pvs = s.pvs();
        let name = name.to_string();
        async move {
            pvs.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
            )
            .await
            .unwrap();
            pvs.delete(&name, &DeleteParams::default()).await.unwrap();
            pvs.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .unwrap();
            wait_absent(&pvs, &name, "old PV gone", T).await;
        }
    };

    // a: died right after saving the backup.
    save_backup("a", &before[&a_pv]).await;
    // c: died after asking for the deletion, before dropping the finalizers: the PV stays
    // Terminating (pv-protection holds a Bound PV).
    save_backup("c", &before[&c_pv]).await;
    s.pvs()
        .patch(
            &c_pv,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
        )
        .await
        .unwrap();
    s.pvs()
        .delete(&c_pv, &DeleteParams::default())
        .await
        .unwrap();
    let terminating = s.pvs().get(&c_pv).await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    // legacy: died after deleting the old PV. The claim goes Lost and stays so.
    save_backup("legacy", &before[&legacy_pv]).await;
    let t = Instant::now();
    delete_old(&legacy_pv).await;
    wait_for("legacy claim Lost", T, || async {
        let c = s.pvcs().get("legacy").await.unwrap();
        (c.status?.phase.as_deref() == Some("Lost")).then_some(())
    })
    .await;
    eprintln!(
        "legacy claim Lost {:?} after the old PV's deletion began",
        t.elapsed()
    );
    let c = s.pvcs().get("legacy").await.unwrap();
    assert_eq!(
        c.spec.unwrap().volume_name.as_deref(),
        Some(legacy_pv.as_str()),
        "a Lost claim keeps its volumeName"
    );
    // b: died after creating the csi PV, before the cleanup.
    save_backup("b", &before[&b_pv]).await;
    delete_old(&b_pv).await;
    s.pvs()
        .create(
            &PostParams::default(),
            &plan::csi_pv(&before[&b_pv], &settings).unwrap(),
        )
        .await
        .unwrap();
    // Left alone, the PV binder rebinds the claim by itself, at its next periodic resync
    // of the claim (--pvclaimbinder-sync-period, 15 s on the bed and by default).
    let t = Instant::now();
    let by_itself = wait_for("claim b Bound again by itself", T, || async {
        let c = s.pvcs().get("b").await.unwrap();
        (c.status?.phase.as_deref() == Some("Bound")).then_some(())
    });
    by_itself.await;
    eprintln!(
        "claim b Bound again by itself {:?} after its csi PV was created",
        t.elapsed()
    );

    // The image is the same one: the old PVs were Retain, so their deletion did not touch it.
    assert_eq!(
        s.ceph.image_info("kube", &legacy_image).await.unwrap().id,
        ids[&legacy_image]
    );

    let (ok, out) = s.migrate(&["--dry-run"]).await;
    assert!(ok, "{out}");
    assert!(line_of(&out, &a_pv).contains("would resume an interrupted migration (the backup is saved, the old rbd PV is still there)"), "{out}");
    assert!(
        line_of(&out, &legacy_pv)
            .contains("would resume an interrupted migration (the old rbd PV is gone"),
        "{out}"
    );
    assert!(
        line_of(&out, &b_pv).contains("would resume an interrupted migration (the csi PV exists"),
        "{out}"
    );
    assert!(
        line_of(&out, &legacy_pv).contains(&format!("image kube/{legacy_image}")),
        "{out}"
    );
    assert!(
        s.pvs().get_opt(&legacy_pv).await.unwrap().is_none(),
        "dry run created nothing"
    );

    assert!(
        line_of(&out, &c_pv).contains("would resume an interrupted migration (the backup is saved, the old rbd PV is still there)"),
        "{out}"
    );

    let (ok, out) = s.migrate(&[]).await;
    assert!(ok, "{out}");
    for pv in [&a_pv, &legacy_pv, &b_pv, &c_pv] {
        assert!(
            line_of(&out, pv).ends_with(": migrated (resumed an interrupted migration)"),
            "{out}"
        );
    }
    assert_migrated(&s, &before[&a_pv], &a_claim, "kube", &a_image).await;
    assert_migrated(
        &s,
        &before[&legacy_pv],
        &legacy_claim,
        "kube",
        &legacy_image,
    )
    .await;
    assert_migrated(&s, &before[&b_pv], &b_claim, "kube", &b_image).await;
    assert_migrated(&s, &before[&c_pv], &c_claim, "kube", &c_image).await;
    for (image, id) in &ids {
        assert_eq!(
            &s.ceph.image_info("kube", image).await.unwrap().id,
            id,
            "{image} untouched"
        );
    }
    s.cleanup().await;
}

/// The binary itself interrupted (its failpoints, exit without cleanup) right after each step
/// of the real order: backup saved, old PV set to Retain, old PV deleted (Terminating, held by
/// pv-protection), csi PV created. Each state is checked as the crash left it, then a rerun
/// finishes the migration and the image is untouched (its id, seen by the rbd CLI).
#[tokio::test]
async fn resumes_after_the_binary_is_interrupted_at_each_step() {
    let runs = ["backup", "retain", "delete", "create"].map(interrupted_at);
    futures::future::join_all(runs).await;
}

async fn interrupted_at(step: &'static str) {
    let mut s = Setup::new(&format!("fp-{step}")).await;
    let prov = Provisioner::start(&s.bed, &s.name, RBD_FLAVOR).await;
    let (claim, pv, image) = s.our_volume("data").await;
    // The provisioner must not act on the Retain PV or the csi PV meanwhile; stopping it also
    // keeps the checks below about what the crash left.
    drop(prov);
    let before = s.pvs().get(&pv).await.unwrap();
    let id = rbd_json(&s.bed, &["info", &format!("kube/{image}")]).expect("rbd info")["id"].clone();
    let fp = format!("exit-after-{step}:{pv}");
    let (code, out) = s
        .migrate_env(&[], &[("RBD_PROVISIONER_MIGRATE_FAILPOINT", &fp)])
        .await;
    assert_eq!(code, Some(86), "{step}: the failpoint ended the run: {out}");
    assert!(out.contains(&format!("failpoint {fp}")), "{out}");
    assert!(
        backup_of(&s.admin, &pv).await.is_some(),
        "{step}: the backup is there"
    );
    let live = s.pvs().get_opt(&pv).await.unwrap();
    let policy = |p: &PersistentVolume| {
        p.spec
            .as_ref()
            .unwrap()
            .persistent_volume_reclaim_policy
            .clone()
    };
    match step {
        "backup" => {
            let live = live.expect("old PV still there");
            assert_eq!(live.metadata.uid, before.metadata.uid);
            assert_eq!(policy(&live).as_deref(), Some("Delete"));
            assert!(live.metadata.deletion_timestamp.is_none());
        }
        "retain" => {
            let live = live.expect("old PV still there");
            assert_eq!(live.metadata.uid, before.metadata.uid);
            assert_eq!(policy(&live).as_deref(), Some("Retain"));
            assert!(live.metadata.deletion_timestamp.is_none());
        }
        "delete" => {
            let live = live.expect("old PV Terminating, held by pv-protection");
            assert_eq!(live.metadata.uid, before.metadata.uid);
            assert_eq!(policy(&live).as_deref(), Some("Retain"));
            assert!(live.metadata.deletion_timestamp.is_some());
        }
        "create" => {
            let live = live.expect("csi PV there");
            assert_ne!(live.metadata.uid, before.metadata.uid);
            assert!(live.spec.as_ref().unwrap().csi.is_some());
        }
        _ => unreachable!(),
    }
    let (ok, out) = s.migrate(&["--dry-run"]).await;
    assert!(ok, "{out}");
    assert!(
        line_of(&out, &pv).contains("would resume an interrupted migration"),
        "{step}: {out}"
    );
    let (ok, out) = s.migrate(&[]).await;
    assert!(ok, "{step}: {out}");
    assert!(
        line_of(&out, &pv).ends_with(": migrated (resumed an interrupted migration)"),
        "{step}: {out}"
    );
    assert_migrated(&s, &before, &claim, "kube", &image).await;
    assert_eq!(
        rbd_json(&s.bed, &["info", &format!("kube/{image}")]).expect("image kept")["id"],
        id,
        "{step}: image untouched"
    );
    s.cleanup().await;
}

/// Settings missing everywhere are named with the flag that gives them.
#[tokio::test]
async fn missing_csi_settings_are_named() {
    let s = Setup::new("mignoset").await;
    let bare = format!("{}-bare", s.ns);
    storage_class(
        &s.admin,
        &bare,
        &s.name,
        &[
            ("monitors", &s.bed.monitors),
            ("adminSecretName", "x"),
            ("userSecretName", "y"),
        ],
        json!({}),
    )
    .await;
    let run = |args: Vec<String>| {
        let kc = s.bed.kubeconfig.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rbd-provisioner"))
                .arg("--kubeconfig")
                .arg(kc)
                .arg("migrate-to-csi")
                .args(args)
                .env_remove("KUBECONFIG_PATH")
                .output()
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    let (ok, err) = run(vec!["--storage-class".into(), bare.clone()]).await;
    assert!(!ok && err.contains("pass --cluster-id"), "{err}");
    let (ok, err) = run(vec![
        "--storage-class".into(),
        bare.clone(),
        "--cluster-id".into(),
        "c".into(),
    ])
    .await;
    assert!(
        !ok && err.contains("pass --node-stage-secret NAMESPACE/NAME"),
        "{err}"
    );
    let (ok, err) = run(vec!["--storage-class".into(), "no-such-class".into()]).await;
    assert!(
        !ok && err.contains("StorageClass no-such-class not found"),
        "{err}"
    );
    // A Secret that is not in ceph-csi's format.
    let (ok, err) = run(vec![
        "--storage-class".into(),
        bare.clone(),
        "--cluster-id".into(),
        "c".into(),
        "--node-stage-secret".into(),
        format!("default/{}-user", s.ns),
    ])
    .await;
    assert!(!ok && err.contains("has no userID"), "{err}");
    let _ = Api::<StorageClass>::all(s.admin.clone())
        .delete(&bare, &DeleteParams::default())
        .await;
    s.cleanup().await;
}

/// A client that acts as user `user` (impersonated by the bed's admin).
async fn client_as(bed: &Bed, user: &str) -> Client {
    let kc = kube::config::Kubeconfig::read_from(&bed.kubeconfig).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.auth_info.impersonate = Some(user.to_string());
    Client::try_from(cfg).unwrap()
}

/// A pod of namespace `ns` using claim `claim` (an API object: nothing runs it here).
async fn pod_using(client: &Client, ns: &str, name: &str, claim: &str) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        },
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
}

/// What must not change on a PV that is not migrated: same object, same volume source,
/// same claim, same finalizers, same policy, not being deleted.
fn assert_untouched(before: &PersistentVolume, now: &PersistentVolume) {
    let name = before.metadata.name.as_deref().unwrap();
    assert_eq!(now.metadata.uid, before.metadata.uid, "{name} replaced");
    assert!(
        now.metadata.deletion_timestamp.is_none(),
        "{name} being deleted"
    );
    assert_eq!(
        now.metadata.finalizers, before.metadata.finalizers,
        "{name}'s finalizers"
    );
    assert!(
        now.metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "kubernetes.io/pv-protection"),
        "{name} keeps pv-protection"
    );
    let (b, n) = (before.spec.clone().unwrap(), now.spec.clone().unwrap());
    assert_eq!(n.rbd, b.rbd, "{name}'s volume source");
    assert!(n.csi.is_none());
    assert_eq!(n.claim_ref, b.claim_ref, "{name}'s claim");
    assert_eq!(
        n.persistent_volume_reclaim_policy,
        b.persistent_volume_reclaim_policy
    );
}

/// The attack of the issue: a tenant writes, on its own claims, the old backup annotation
/// naming another namespace's PVs (claimRef pointing at the tenant's claim). An
/// administrator's run must neither delete nor rebind the victims' volumes: a tenant-written
/// annotation is never read as a backup, and every step checks the live claim and PV.
#[tokio::test]
async fn a_forged_backup_on_a_tenant_claim_moves_nothing() {
    let mut s = Setup::new("forge").await;
    let _prov = Provisioner::start(&s.bed, &s.name, RBD_FLAVOR).await;
    // The victims, in the Setup's namespace: one in use by a pod, one idle.
    let (busy_claim, busy_pv, busy_image) = s.our_volume("busy").await;
    let (idle_claim, idle_pv, idle_image) = s.our_volume("idle").await;
    pod_using(&s.admin, &s.ns, "db-0", "busy").await;
    let busy_before = s.pvs().get(&busy_pv).await.unwrap();
    let idle_before = s.pvs().get(&idle_pv).await.unwrap();

    // The tenant: may edit claims in its own namespace, nothing else.
    let tenant_ns = unique("tenant");
    namespace(&s.admin, &tenant_ns).await;
    let tenant_user = format!("{tenant_ns}-user");
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "claims", "namespace": tenant_ns},
        "rules": [{"apiGroups": [""], "resources": ["persistentvolumeclaims"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}],
    }))
    .unwrap();
    Api::<Role>::namespaced(s.admin.clone(), &tenant_ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "claims", "namespace": tenant_ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "claims"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": tenant_user}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(s.admin.clone(), &tenant_ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let tenant = client_as(&s.bed, &tenant_user).await;
    let tenant_pvcs = Api::<PersistentVolumeClaim>::namespaced(tenant.clone(), &tenant_ns);
    // Claims that no class provisions: they wait for a PV pre-bound to them.
    let mut forged_claims = Vec::new();
    for (name, victim) in [("grab-busy", &busy_before), ("grab-idle", &idle_before)] {
        let c: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": tenant_ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "resources": {"requests": {"storage": "1Mi"}}},
        }))
        .unwrap();
        let c = tenant_pvcs
            .create(&PostParams::default(), &c)
            .await
            .expect("the tenant creates a claim");
        // The victim's PV, rewritten to belong to the tenant's claim.
        let mut forged = victim.clone();
        forged.metadata.managed_fields = None;
        let r = forged.spec.as_mut().unwrap().claim_ref.as_mut().unwrap();
        r.namespace = Some(tenant_ns.clone());
        r.name = Some(name.into());
        r.uid = c.metadata.uid.clone();
        r.resource_version = None;
        let patch = json!({"metadata": {"annotations": {
            ANN_BACKUP: serde_json::to_string(&forged).unwrap(),
        }}});
        tenant_pvcs
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("the tenant annotates its own claim");
        forged_claims.push(c);
    }
    // Where backups live now, the tenant cannot write.
    let denied = backups(&tenant)
        .create(
            &PostParams::default(),
            &plan::backup_config_map(&busy_before, BACKUP_NS).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&denied, kube::Error::Api(e) if e.code == 403),
        "{denied}"
    );

    let (ok, out) = s.migrate(&[]).await;
    assert!(!ok, "the busy claim is refused: {out}");
    // The busy victim: refused for its own pod, untouched.
    assert!(
        line_of(&out, &busy_pv).contains(&format!(
            "refused: claim {}/busy is used by pod(s) db-0",
            s.ns
        )),
        "{out}"
    );
    assert_untouched(&busy_before, &s.pvs().get(&busy_pv).await.unwrap());
    let busy_now = s.pvcs().get("busy").await.unwrap();
    assert_eq!(busy_now.metadata.uid, busy_claim.metadata.uid);
    assert_eq!(
        busy_now.spec.unwrap().volume_name.as_deref(),
        Some(busy_pv.as_str())
    );
    assert_eq!(busy_now.status.unwrap().phase.as_deref(), Some("Bound"));
    // The idle victim is migrated for its own claim, as if nothing had been forged.
    assert!(line_of(&out, &idle_pv).ends_with(": migrated"), "{out}");
    assert_migrated(&s, &idle_before, &idle_claim, "kube", &idle_image).await;
    // The forged annotations are reported, not used.
    for c in ["grab-busy", "grab-idle"] {
        let l = line_of(&out, &format!("claim {tenant_ns}/{c}:"));
        assert!(l.contains("not used") && l.contains("ignored"), "{l}");
    }
    // Nothing is bound to the tenant: the command has finished, so any PV it wrote exists now.
    for c in &forged_claims {
        let name = c.metadata.name.as_deref().unwrap();
        let now = tenant_pvcs.get(name).await.unwrap();
        assert_eq!(
            now.spec.as_ref().unwrap().volume_name,
            None,
            "{name} got a volume"
        );
        assert_eq!(now.status.unwrap().phase.as_deref(), Some("Pending"));
    }
    for pv in s.pvs().list(&Default::default()).await.unwrap() {
        let r = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        assert_ne!(
            r.and_then(|r| r.namespace.as_deref()),
            Some(tenant_ns.as_str()),
            "PV {:?} is bound to the tenant",
            pv.metadata.name
        );
    }
    // The images are where they were.
    assert!(image_exists(&s.ceph, "kube", &busy_image).await);
    assert!(image_exists(&s.ceph, "kube", &idle_image).await);
    assert_eq!(
        spec_image(&s.pvs().get(&idle_pv).await.unwrap()),
        Some(("kube".to_string(), idle_image.clone()))
    );

    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(s.admin.clone())
        .delete(&tenant_ns, &DeleteParams::default())
        .await;
    s.cleanup().await;
}

/// A claim made for a pod's generic ephemeral volume (named `<pod>-<volume>`, owned by the
/// pod) is in use while the pod is, though no pod names it in `persistentVolumeClaim`.
///
/// The bed's Kubernetes 1.20 has the GenericEphemeralVolume feature off, so the API server
/// drops `ephemeral` from pods: the claim is made here as the ephemeral volume controller
/// makes it, for a pod whose volume is an emptyDir.
#[tokio::test]
async fn refuses_a_claim_of_a_generic_ephemeral_volume() {
    let mut s = Setup::new("migeph").await;
    let _prov = Provisioner::start(&s.bed, &s.name, RBD_FLAVOR).await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "worker", "namespace": s.ns},
        "spec": {
            "containers": [{"name": "c", "image": "busybox"}],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    }))
    .unwrap();
    let pod = Api::<Pod>::namespaced(s.admin.clone(), &s.ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {
            "name": "worker-scratch", "namespace": s.ns,
            "ownerReferences": [{
                "apiVersion": "v1", "kind": "Pod", "name": "worker",
                "uid": pod.metadata.uid, "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": s.class,
                 "resources": {"requests": {"storage": "16Mi"}}},
    }))
    .unwrap();
    let created = s.pvcs().create(&PostParams::default(), &pvc).await.unwrap();
    s.claims.push(created);
    let bound = wait_bound(&s.admin, &s.ns, "worker-scratch", T).await;
    let pv_name = format!("pvc-{}", uid_of(&bound));
    let before = s.pvs().get(&pv_name).await.unwrap();

    let (ok, out) = s.migrate(&["--dry-run"]).await;
    assert!(!ok, "{out}");
    let (ok, out) = s.migrate(&[]).await;
    assert!(!ok, "{out}");
    assert!(
        line_of(&out, &pv_name).contains(&format!(
            "refused: claim {}/worker-scratch is used by pod(s) worker",
            s.ns
        )),
        "{out}"
    );
    assert_untouched(&before, &s.pvs().get(&pv_name).await.unwrap());
    assert_eq!(
        s.pvs()
            .get(&pv_name)
            .await
            .unwrap()
            .metadata
            .resource_version,
        before.metadata.resource_version
    );
    assert!(backup_of(&s.admin, &pv_name).await.is_none());
    s.cleanup().await;
}

/// Rook's driver name, in a class's `csiDriver`.
const ROOK_DRIVER: &str = "rook-ceph.rbd.csi.ceph.com";
/// On the CSIDriver this file registers, so that a leftover of a failed run is known as ours.
const MADE_BY: (&str, &str) = ("rbd-provisioner.test/made-by", "migrate");

/// A class with `csiDriver: rook-ceph.rbd.csi.ceph.com`: while no such CSIDriver is
/// registered, the run is refused before anything is rewritten; once it is, the volume
/// migrates to a PV of that driver, and a rerun sees it done.
#[tokio::test]
async fn migrates_to_the_class_csi_driver_only_once_it_is_installed() {
    let mut s = Setup::with("migrook", &[("csiDriver", ROOK_DRIVER)]).await;
    let drivers = Api::<CSIDriver>::all(s.admin.clone());
    if let Some(d) = drivers.get_opt(ROOK_DRIVER).await.unwrap() {
        let labels = d.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get(MADE_BY.0).map(String::as_str),
            Some(MADE_BY.1),
            "CSIDriver {ROOK_DRIVER} exists and was not made by this test, which needs it absent first"
        );
        drivers
            .delete(ROOK_DRIVER, &DeleteParams::default())
            .await
            .unwrap();
        wait_absent(&drivers, ROOK_DRIVER, "the leftover CSIDriver gone", T).await;
    }
    // The default driver is there: only the class's own counts.
    csi_driver(&s.admin, CSI_DRIVER).await;
    let (claim, pv, image) = s.legacy_volume("data", "kube").await;
    let before = s.pvs().get(&pv).await.unwrap();

    for extra in [&["--dry-run"][..], &[]] {
        let (ok, out) = s.migrate(extra).await;
        assert!(!ok, "{extra:?}: {out}");
        assert!(
            out.contains(&format!(
                "CSIDriver {ROOK_DRIVER} does not exist in this cluster"
            )) && out.contains("nothing was changed"),
            "{extra:?}: {out}"
        );
        assert!(
            out.contains(&format!(
                "{ROOK_DRIVER} is the csiDriver of StorageClass {}",
                s.class
            )) && out.contains("Install ceph-csi's rbd plugin"),
            "what to install or fix: {out}"
        );
        let now = s.pvs().get(&pv).await.unwrap();
        assert_eq!(
            now.metadata.resource_version, before.metadata.resource_version,
            "{extra:?}: the PV was written"
        );
        assert_untouched(&before, &now);
        assert!(backup_of(&s.admin, &pv).await.is_none(), "{extra:?}");
    }

    let mut made: CSIDriver = serde_json::from_value(json!({
        "metadata": {"name": ROOK_DRIVER, "labels": {MADE_BY.0: MADE_BY.1}},
        "spec": {"attachRequired": true, "podInfoOnMount": false},
    }))
    .unwrap();
    made = drivers.create(&PostParams::default(), &made).await.unwrap();
    let (ok, out) = s.migrate(&["--dry-run"]).await;
    assert!(ok, "{out}");
    assert!(
        line_of(&out, &pv).contains(&format!("spec.rbd → spec.csi ({ROOK_DRIVER}, clusterID")),
        "{out}"
    );
    let (ok, out) = s.migrate(&[]).await;
    assert!(ok, "{out}");
    assert!(line_of(&out, &pv).ends_with(": migrated"), "{out}");
    // Its csi PV names Rook's driver (assert_migrated compares with the class's).
    assert_migrated(&s, &before, &claim, "kube", &image).await;
    let (ok, out) = s.migrate(&[]).await;
    assert!(ok, "{out}");
    assert!(
        line_of(&out, &pv).contains(&format!(
            "skipped: already a csi volume (driver {ROOK_DRIVER})"
        )),
        "{out}"
    );

    let _ = drivers
        .delete(
            ROOK_DRIVER,
            &DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: made.metadata.uid.take(),
                    resource_version: None,
                }),
                ..Default::default()
            },
        )
        .await;
    s.cleanup().await;
}

/// Names, annotations and image names are printed escaped: a PV's `spec.rbd.image` (any
/// string) and a claim's annotation (which its owner writes) carrying terminal sequences and
/// a bidi override reach the operator's terminal as visible escapes, not as control bytes.
#[tokio::test]
async fn object_text_is_printed_escaped() {
    let s = Setup::new("migesc").await;
    let evil_image = "img\u{1b}[2J\u{1b}]0;owned\u{7}\u{202e}gpj.exe";
    let pv_name = format!("pvc-{}", unique("esc"));
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {
            "name": pv_name,
            "annotations": {
                "pv.kubernetes.io/provisioned-by": "ceph.com/rbd",
                "rbdProvisionerIdentity": "ceph.com/rbd",
            },
        },
        "spec": {
            "capacity": {"storage": "64Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": s.class,
            "rbd": {
                "monitors": [s.bed.monitors],
                "pool": "kube",
                "image": evil_image,
                "user": "kube",
                "secretRef": {"name": format!("{}-user", s.ns), "namespace": "default"},
            },
        },
    }))
    .unwrap();
    s.pvs().create(&PostParams::default(), &pv).await.unwrap();
    // A claim of no class (nothing binds it) whose owner wrote the old backup annotation,
    // naming a "PV" of the class: the report quotes that name.
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {
            "name": "noisy", "namespace": s.ns,
            "annotations": {ANN_BACKUP: serde_json::to_string(&json!({
                "metadata": {"name": "pv\u{1b}[31mred\u{9b}2J\u{202e}x"},
                "spec": {"storageClassName": s.class},
            })).unwrap()},
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": "1Mi"}}},
    }))
    .unwrap();
    s.pvcs()
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();

    let (ok, out) = s.migrate(&["--dry-run"]).await;
    let _ = s.pvs().delete(&pv_name, &DeleteParams::default()).await;
    assert!(ok, "{out}");
    assert!(
        !out.contains(['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}']),
        "control characters reached the terminal: {out:?}"
    );
    let l = line_of(&out, &pv_name);
    assert!(
        l.contains(r"image kube/img\u{1b}[2J\u{1b}]0;owned\u{7}\u{202e}gpj.exe)"),
        "{l}"
    );
    let l = line_of(&out, &format!("claim {}/noisy:", s.ns));
    assert!(
        l.contains(r"naming PersistentVolume pv\u{1b}[31mred\u{9b}2J\u{202e}x)"),
        "{l}"
    );
    s.cleanup().await;
}
