//! Kubernetes objects as tests make them: YAML applied server-side, namespaces, Secrets,
//! classes, claims, and PVs as the old provisioner wrote them; what a PV of ours names.

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};

use crate::Stage;

pub const FIELD_MANAGER: &str = "rbd-provisioner-tests";

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

/// The cluster's identity, as the provisioner stamps it on images: kube-system's uid.
pub async fn cluster_uid(client: &Client) -> String {
    let ns = Api::<Namespace>::all(client.clone())
        .get("kube-system")
        .await
        .expect("read namespace kube-system");
    ns.metadata.uid.expect("kube-system's uid")
}

/// Creates (or keeps) a namespace.
pub async fn namespace(client: &Client, name: &str) {
    let ns =
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    apply_value(client, ns).await;
}

/// Creates (or updates) Secret `ns/name` of `type_` (Opaque when `None`) from `string_data`.
pub async fn secret(
    client: &Client,
    ns: &str,
    name: &str,
    type_: Option<&str>,
    string_data: serde_json::Value,
) {
    let mut s = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "stringData": string_data,
    });
    if let Some(t) = type_ {
        s["type"] = t.into();
    }
    apply_value(client, s).await;
}

/// Creates a Secret holding `data.key`.
pub async fn key_secret(client: &Client, ns: &str, name: &str, key: &str) {
    let data = serde_json::json!({"key": key});
    secret(client, ns, name, Some("kubernetes.io/rbd"), data).await;
}

/// Creates a Secret in ceph-csi's format (`userID`, `userKey`).
pub async fn csi_secret(client: &Client, ns: &str, name: &str, user: &str, key: &str) {
    let data = serde_json::json!({"userID": user, "userKey": key});
    secret(client, ns, name, Some("Opaque"), data).await;
}

/// An admin Secret `kube-system/<ns>-opaque` of type Opaque: kube-controller-manager's in-tree
/// expander (Kubernetes <= 1.30) cannot read it ("Cannot get secret of type
/// kubernetes.io/rbd"), so only the provisioner can grow images of a class naming it.
/// Returns its name.
pub async fn opaque_admin_secret(s: &Stage) -> String {
    let name = format!("{}-opaque", s.ns);
    let data = serde_json::json!({"key": s.bed.admin_key});
    secret(&s.admin, "kube-system", &name, Some("Opaque"), data).await;
    name
}

/// Pod `name` of namespace `ns` using claim `claim` (an API object: no kubelet runs it here).
pub async fn pod_using(client: &Client, ns: &str, name: &str, claim: &str) -> Pod {
    let pod: Pod = serde_json::from_value(serde_json::json!({
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
        .unwrap_or_else(|e| panic!("create pod {ns}/{name}: {e}"))
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

/// A claim's `spec.dataSource` naming claim `source`: a clone of it.
pub fn data_source(source: &str) -> serde_json::Value {
    serde_json::json!({"dataSource": {"kind": "PersistentVolumeClaim", "name": source}})
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

pub fn uid_of<K: Resource>(o: &K) -> String {
    o.meta().uid.clone().expect("uid")
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

/// Binds claim `claim` of `class` to an old provisioner's PV `pv_name` for `image` (which must
/// exist in pool `kube`), and waits until the provisioner has recorded the volume (its image
/// stamped as this PV's, the PV annotated with the pool's id): only then may it be deleted
/// or grown. Returns the claim as created.
pub async fn bind_old_volume(
    s: &Stage,
    claim: &str,
    pv_name: &str,
    image: &str,
    class: &str,
    size: &str,
) -> PersistentVolumeClaim {
    let pv = old_provisioner_pv(s, pv_name, image, class, size);
    s.pvs()
        .create(&PostParams::default(), &pv)
        .await
        .unwrap_or_else(|e| panic!("create PV {pv_name}: {e}"));
    let (pvc, _) = s
        .claim(claim, class)
        .size(size)
        .spec(serde_json::json!({"volumeName": pv_name}))
        .bound()
        .await;
    crate::wait_for(
        "the old volume recorded",
        Duration::from_secs(60),
        || async {
            s.pvs()
                .get(pv_name)
                .await
                .ok()?
                .metadata
                .annotations?
                .contains_key("rbd-provisioner.ceph.com/pool-id")
                .then_some(())
        },
    )
    .await;
    pvc
}
