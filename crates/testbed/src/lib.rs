//! The test bed for integration tests and benches (dev-only): the local Ceph and control
//! planes started by hack/bed-up.sh, the provisioner as a process under the shipped RBAC,
//! independent oracles (the `rbd` CLI), the fault harness and the bench harness.

pub mod bench;
pub mod fake_ceph;
pub mod harness;
mod process;

pub use process::{die_with_parent, signal};

use std::collections::HashMap;
use std::path::PathBuf;

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
        assert!(
            out.status.success(),
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
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

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ceph::{CephKey, Cluster, Connections, Credentials, Timeouts};
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolume, PersistentVolumeClaim, Secret, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};

pub const FIELD_MANAGER: &str = "rbd-provisioner-tests";

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

/// A short random suffix for names that must not collide between tests and runs.
pub fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    format!("{prefix}-{:08x}", h.finish() as u32)
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Applies every document of a YAML text (server-side apply), after replacing placeholders.
pub async fn apply_yaml(client: &Client, text: &str, subst: &[(&str, &str)]) {
    let mut text = text.to_string();
    for (from, to) in subst {
        text = text.replace(from, to);
    }
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("parse YAML");
    for doc in docs.into_iter().filter(|d| !d.is_null()) {
        apply_value(client, doc).await;
    }
}

async fn apply_value(client: &Client, doc: serde_json::Value) {
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let kind = doc["kind"].as_str().expect("kind").to_string();
    let name = doc["metadata"]["name"].as_str().expect("name").to_string();
    let ns = doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(&doc);
    macro_rules! go {
        ($api:expr) => {{
            $api.patch(&name, &pp, &patch)
                .await
                .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
        }};
    }
    match kind.as_str() {
        "ServiceAccount" => go!(Api::<ServiceAccount>::namespaced(client.clone(), &ns)),
        "Secret" => go!(Api::<Secret>::namespaced(client.clone(), &ns)),
        "PersistentVolumeClaim" => go!(Api::<PersistentVolumeClaim>::namespaced(
            client.clone(),
            &ns
        )),
        "Pod" => go!(Api::<Pod>::namespaced(client.clone(), &ns)),
        "RoleBinding" => go!(Api::<RoleBinding>::namespaced(client.clone(), &ns)),
        "Role" => go!(Api::<Role>::namespaced(client.clone(), &ns)),
        "ClusterRole" => go!(Api::<ClusterRole>::all(client.clone())),
        "ClusterRoleBinding" => go!(Api::<ClusterRoleBinding>::all(client.clone())),
        "StorageClass" => go!(Api::<StorageClass>::all(client.clone())),
        "Namespace" => go!(Api::<Namespace>::all(client.clone())),
        other => panic!("apply_yaml: unsupported kind {other}"),
    }
}

pub fn repo_file(path: &str) -> String {
    let p = repo_root().join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// Applies manifests/rbac/ and returns a kubeconfig file that authenticates as the shipped
/// ServiceAccount, so the provisioner under test has exactly the rights the manifests grant.
pub async fn service_account_kubeconfig(bed: &Bed) -> std::path::PathBuf {
    let admin = bed.admin().await;
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("manifests/rbac"))
        .expect("manifests/rbac")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        apply_yaml(&admin, &std::fs::read_to_string(&f).unwrap(), &[]).await;
    }
    // A bound token from the TokenRequest API (1.20 and 1.37 alike; 1.24+ no longer makes
    // token Secrets for ServiceAccounts), valid for longer than any test run.
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "kube-system");
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [], "expirationSeconds": 6 * 3600},
        }))
        .unwrap();
    let token = wait_for(
        "a token for the ServiceAccount kube-system/rbd-provisioner",
        Duration::from_secs(30),
        || async {
            let t = sas
                .create_token_request("rbd-provisioner", &PostParams::default(), &request)
                .await
                .ok()?;
            Some(t.status?.token)
        },
    )
    .await;
    let kc = kube::config::Kubeconfig::read_from(&bed.kubeconfig).unwrap();
    let cluster = &kc.clusters[0].cluster.as_ref().unwrap();
    let server = cluster.server.clone().unwrap();
    let ca = cluster.certificate_authority_data.clone().unwrap();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: bed\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: rbd-provisioner\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context:\n    cluster: bed\n    user: rbd-provisioner\ncurrent-context: sa\n"
    );
    let path = bed.dir.join("rbd-provisioner-sa.kubeconfig");
    let tmp = bed.dir.join(unique("rbd-provisioner-sa.kubeconfig.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

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
    /// SIGTERM first, as kubelet does: a graceful stop releases the Lease at once.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // Our own child, not reaped yet: its pid is still its own.
        signal(self.child.id(), libc::SIGTERM);
        for _ in 0..50 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Registers CSIDriver `name`, as installing ceph-csi does (an API object only: no plugin
/// runs here), for `migrate-to-csi`, which writes PVs only for an installed driver. An
/// existing one is kept: the bed and its CSIDrivers are shared by every test.
pub async fn csi_driver(client: &Client, name: &str) {
    let d: k8s_openapi::api::storage::v1::CSIDriver = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"attachRequired": false, "podInfoOnMount": false},
    }))
    .unwrap();
    match Api::<k8s_openapi::api::storage::v1::CSIDriver>::all(client.clone())
        .create(&PostParams::default(), &d)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create CSIDriver {name}: {e}"),
    }
}

/// Creates (or keeps) a namespace.
pub async fn namespace(client: &Client, name: &str) {
    let ns =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    apply_value(client, ns).await;
}

/// Creates a Secret holding `data.key`.
pub async fn key_secret(client: &Client, ns: &str, name: &str, key: &str) {
    let s = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/rbd",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {"key": key}
    });
    apply_value(client, s).await;
}

/// Creates a Secret in ceph-csi's format (`userID`, `userKey`).
pub async fn csi_secret(client: &Client, ns: &str, name: &str, user: &str, key: &str) {
    let s = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": name, "namespace": ns},
        "stringData": {"userID": user, "userKey": key}
    });
    apply_value(client, s).await;
}

/// Creates a StorageClass for `provisioner` with the given parameters.
pub async fn storage_class(
    client: &Client,
    name: &str,
    provisioner: &str,
    params: &[(&str, &str)],
    extra: serde_json::Value,
) {
    let mut sc = serde_json::json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": provisioner,
        "parameters": params.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
    });
    if let (Some(o), Some(e)) = (sc.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    apply_value(client, sc).await;
}

/// Creates a claim; returns it as stored (with its uid).
pub async fn claim(
    client: &Client,
    ns: &str,
    name: &str,
    class: &str,
    size: &str,
    modes: &[&str],
    extra_spec: serde_json::Value,
) -> PersistentVolumeClaim {
    let mut spec = serde_json::json!({
        "accessModes": modes,
        "storageClassName": class,
        "resources": {"requests": {"storage": size}},
    });
    if let (Some(o), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap_or_else(|e| panic!("create claim {ns}/{name}: {e}"))
}

/// Waits until the claim is Bound; returns it.
pub async fn wait_bound(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> PersistentVolumeClaim {
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    wait_for(&format!("claim {ns}/{name} Bound"), timeout, || async {
        let c = api.get(name).await.ok()?;
        (c.status.as_ref()?.phase.as_deref() == Some("Bound")).then_some(c)
    })
    .await
}

/// Events (events.k8s.io/v1) about one object, oldest first.
pub async fn events_for(client: &Client, ns: &str, uid: &str) -> Vec<Event> {
    let api = Api::<Event>::namespaced(client.clone(), ns);
    let mut evs: Vec<Event> = api
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.as_deref()) == Some(uid))
        .collect();
    evs.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
    evs
}

/// Waits for an event with `reason` about the object whose note contains every needle.
pub async fn wait_event(
    client: &Client,
    ns: &str,
    uid: &str,
    reason: &str,
    needles: &[&str],
    timeout: Duration,
) -> Event {
    wait_for(
        &format!("event {reason} containing {needles:?}"),
        timeout,
        || async {
            events_for(client, ns, uid).await.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && needles
                        .iter()
                        .all(|n| e.note.as_deref().unwrap_or("").contains(n))
            })
        },
    )
    .await
}

pub fn uid_of<K: Resource>(o: &K) -> String {
    o.meta().uid.clone().expect("uid")
}

/// Whether an image exists in a pool.
pub async fn image_exists(ceph: &Arc<Cluster>, pool: &str, name: &str) -> bool {
    ceph.list_images(pool)
        .await
        .expect("list images")
        .iter()
        .any(|i| i == name)
}

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
        let log = bed
            .dir
            .join(format!("{}.log", unique(&name.replace('/', "_"))));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin);
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
            .args(extra_args)
            .env("RUST_LOG", "info,rbd_provisioner=debug")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            // std also drops root's supplementary groups.
            cmd.uid(uid).gid(uid);
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

/// The `rbd` CLI (not the code under test) as an independent oracle: runs
/// `rbd -c <bed>/ceph/ceph.conf <args> --format json` and returns the parsed output, or
/// `None` when `rbd` fails (for example `rbd info` of an image that does not exist).
pub fn rbd_json(bed: &Bed, args: &[&str]) -> Option<serde_json::Value> {
    let out = std::process::Command::new("rbd")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("run the rbd CLI");
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("rbd --format json prints JSON"))
}

/// Waits until `needle` appears in the provisioner's log (ANSI colour codes removed),
/// proof that it handled an object before a test asserts that nothing happened.
pub async fn wait_log(p: &Provisioner, needle: &[&str], timeout: Duration) {
    wait_for(&format!("log line with {needle:?}"), timeout, || async {
        let text = strip_ansi(&p.logs());
        text.lines()
            .any(|l| needle.iter().all(|n| l.contains(n)))
            .then_some(())
    })
    .await
}

/// `text` without ANSI escape sequences (the provisioner's log is coloured).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Provisioner {
    /// The binary with only `args` and `env` (plus `KUBECONFIG_PATH` for the ServiceAccount's
    /// kubeconfig): no provisioner name, no metrics address, so the defaults and the
    /// environment forms of the flags are what the process sees.
    pub async fn start_bare(bed: &Bed, env: &[(&str, &str)], args: &[&str]) -> Provisioner {
        let kubeconfig = service_account_kubeconfig(bed).await;
        let bin = provisioner_binary();
        let log = bed.dir.join(format!("{}.log", unique("bare")));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env("KUBECONFIG_PATH", &kubeconfig)
            .env("RUST_LOG", "info,rbd_provisioner=debug")
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        for (k, v) in env {
            cmd.env(k, v);
        }
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("start rbd-provisioner");
        Provisioner {
            name: String::new(),
            child,
            log,
        }
    }
}

/// `rbd -c <bed>/ceph/ceph.conf <args>` (the CLI, not the code under test); panics with its
/// stderr when it fails.
pub fn rbd_cli(bed: &Bed, args: &[&str]) -> String {
    let out = Command::new("rbd")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(args)
        .output()
        .expect("run the rbd CLI");
    assert!(
        out.status.success(),
        "rbd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Image names in `pool`, as the `rbd` CLI lists them.
pub fn rbd_ls(bed: &Bed, pool: &str) -> Vec<String> {
    let v = rbd_json(bed, &["ls", pool]).unwrap_or_else(|| panic!("rbd ls {pool} failed"));
    v.as_array()
        .expect("rbd ls prints a list")
        .iter()
        .filter_map(|n| n.as_str().map(String::from))
        .collect()
}

/// Names of the images in `pool`'s trash, as the `rbd` CLI lists them.
pub fn rbd_trash_ls(bed: &Bed, pool: &str) -> Vec<String> {
    let v = rbd_json(bed, &["trash", "ls", pool])
        .unwrap_or_else(|| panic!("rbd trash ls {pool} failed"));
    v.as_array()
        .expect("rbd trash ls prints a list")
        .iter()
        .filter_map(|e| e["name"].as_str().map(String::from))
        .collect()
}

/// `rbd info pool/image` as JSON, or None when the image does not exist.
pub fn rbd_info(bed: &Bed, pool: &str, image: &str) -> Option<serde_json::Value> {
    rbd_json(bed, &["info", &format!("{pool}/{image}")])
}

/// Whether the `rbd` CLI sees `image` in `pool`.
pub fn rbd_exists(bed: &Bed, pool: &str, image: &str) -> bool {
    rbd_ls(bed, pool).iter().any(|i| i == image)
}

/// Standard base64 (with padding) of `s`, the form keys take in Secrets' `data`.
pub fn base64_of(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every form a Ceph key of the bed could leak in: admin and user, raw and base64.
pub fn key_forms(bed: &Bed) -> Vec<(String, String)> {
    vec![
        ("admin key".into(), bed.admin_key.clone()),
        ("admin key (base64)".into(), base64_of(&bed.admin_key)),
        ("user key".into(), bed.kube_key.clone()),
        ("user key (base64)".into(), base64_of(&bed.kube_key)),
    ]
}

/// Asserts that no key of the bed appears in the provisioner's log, its command line, its
/// environment, or any event in `namespaces`.
pub async fn assert_no_keys(bed: &Bed, client: &Client, p: &Provisioner, namespaces: &[&str]) {
    let found = key_leaks(bed, client, p.pid(), &p.logs(), namespaces).await;
    assert!(found.is_empty(), "key material leaked: {found:?}");
}

/// Where the bed's keys (raw and base64) appear: in `log`, in `/proc/<pid>/cmdline` and
/// `/proc/<pid>/environ`, and in the events of `namespaces` (their notes, reasons and every
/// other field). The scanner is fed the real key bytes, so it sees a real leak.
pub async fn key_leaks(
    bed: &Bed,
    client: &Client,
    pid: u32,
    log: &str,
    namespaces: &[&str],
) -> Vec<String> {
    // A process just spawned can be read inside its execve, when the new image's arguments
    // and environment are not set up yet and both read empty: wait for them, since an empty
    // read would make the scan pass for want of anything to scan.
    let proc_file = |f: &str| {
        let start = Instant::now();
        loop {
            let raw = std::fs::read(format!("/proc/{pid}/{f}"))
                .unwrap_or_else(|e| panic!("read /proc/{pid}/{f}: {e}"));
            if !raw.is_empty() {
                return String::from_utf8_lossy(&raw).replace('\0', " ");
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "/proc/{pid}/{f} stayed empty: nothing to scan"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut places = vec![
        ("the log".to_string(), log.to_string()),
        ("the command line".to_string(), proc_file("cmdline")),
        ("the environment".to_string(), proc_file("environ")),
    ];
    for ns in namespaces {
        let evs = Api::<Event>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .expect("list events");
        let mut text = String::new();
        for e in evs.items {
            text.push_str(&serde_json::to_string(&e).unwrap());
            text.push('\n');
        }
        places.push((format!("events of {ns}"), text));
    }
    let mut found = Vec::new();
    for (what, key) in key_forms(bed) {
        for (place, text) in &places {
            if text.contains(&key) {
                found.push(format!("{what} in {place}"));
            }
        }
    }
    found
}

/// Asserts from the process's own log that it took the Lease and then did `acted` (a log
/// line containing every needle): the work was this process's, not another replica's.
pub async fn assert_led_and_acted(p: &Provisioner, acted: &[&str], timeout: Duration) {
    wait_log(p, &["became leader"], timeout).await;
    wait_log(p, acted, timeout).await;
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

/// What a PV of ours names, whichever flavour it has: `spec.rbd` (Kubernetes < 1.31 by
/// default) or a static ceph-csi `spec.csi` (>= 1.31).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSource {
    pub csi: bool,
    pub pool: String,
    pub image: String,
    pub fs_type: Option<String>,
    /// The Secret the node maps with: rbd's `secretRef` (the user Secret) or csi's
    /// `nodeStageSecretRef`, as (name, namespace).
    pub secret: (String, String),
}

pub fn volume_source(pv: &PersistentVolume) -> VolumeSource {
    let spec = pv.spec.as_ref().expect("PV spec");
    if let Some(rbd) = &spec.rbd {
        let sr = rbd.secret_ref.clone().unwrap_or_default();
        return VolumeSource {
            csi: false,
            pool: rbd.pool.clone().unwrap_or_else(|| "rbd".into()),
            image: rbd.image.clone(),
            fs_type: rbd.fs_type.clone(),
            secret: (
                sr.name.unwrap_or_default(),
                sr.namespace.unwrap_or_default(),
            ),
        };
    }
    let csi = spec.csi.as_ref().expect("a PV with spec.rbd or spec.csi");
    let sr = csi.node_stage_secret_ref.clone().unwrap_or_default();
    VolumeSource {
        csi: true,
        pool: csi
            .volume_attributes
            .as_ref()
            .and_then(|a| a.get("pool").cloned())
            .unwrap_or_default(),
        image: csi.volume_handle.clone(),
        fs_type: csi.fs_type.clone(),
        secret: (
            sr.name.unwrap_or_default(),
            sr.namespace.unwrap_or_default(),
        ),
    }
}

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
        assert!(
            out.status.success(),
            "hack/plane-up.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
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

/// A PV as the old external-storage provisioner wrote it (its `rbdProvisionerIdentity`
/// annotation, `spec.rbd`, Delete), for `image` in pool `kube`, run under this stage's
/// provisioner name (the old provisioner's PROVISIONER_NAME; ceph.com/rbd in the field).
pub fn old_provisioner_pv(
    s: &Stage,
    name: &str,
    image: &str,
    class: &str,
    size: &str,
) -> PersistentVolume {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": s.name, "rbdProvisionerIdentity": s.name},
        },
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": class,
            "rbd": {
                "monitors": [s.bed.monitors],
                "pool": "kube",
                "image": image,
                "user": "kube",
                "keyring": "/etc/ceph/keyring",
                "secretRef": {"name": format!("{}-user", s.ns), "namespace": "default"},
                "fsType": "ext4",
            },
        }
    }))
    .expect("an old provisioner's PV")
}

/// The repository's root (manifests/, examples/, hack/).
pub fn repo_root() -> &'static std::path::Path {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
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

/// What a test binary points the whole harness at, in place of `RBDP_BED` and
/// `RBD_PROVISIONER_BIN` (set once; the environment is not written: other threads read it).
struct Overrides {
    bed: std::sync::OnceLock<PathBuf>,
    binary: std::sync::OnceLock<PathBuf>,
}

static OVERRIDES: Overrides = Overrides {
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
