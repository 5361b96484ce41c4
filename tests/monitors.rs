//! Monitors move; volumes must not be stranded. The bed's one mon answers on a v1 and a v2
//! address, so "moved" is simulated by the other address form: the PV's recorded monitors
//! are rewritten to an address nothing answers at, and the class is recreated (parameters are
//! immutable) with the other form, or deleted with only `ceph-csi-config` left to say where
//! the cluster is. Judged with the `rbd` CLI and the API server.

use testbed as common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(120);
const ANN_MONITORS: &str = "rbd-provisioner.ceph.com/monitors";
/// Where the shipped RBAC lets the provisioner read ceph-csi's ConfigMap (the flag's default).
const CSI_CONFIG_NS: &str = "kube-system";
const CSI_CONFIG: &str = "ceph-csi-config";

/// The mon's v1 and v2 addresses, as `ceph mon dump` lists them (`v1:IP:PORT`, `v2:IP:PORT`).
fn mon_forms(bed: &Bed) -> (String, String) {
    let dump: serde_json::Value =
        serde_json::from_str(&cli(bed, "ceph", &["mon", "dump", "-f", "json"])).unwrap();
    let addrs = dump["mons"][0]["public_addrs"]["addrvec"]
        .as_array()
        .expect("mon dump lists an addrvec")
        .clone();
    let form = |t: &str| {
        addrs
            .iter()
            .find(|a| a["type"] == t)
            .map(|a| format!("{t}:{}", a["addr"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("the mon has no {t} address: {dump}"))
    };
    (form("v1"), form("v2"))
}

/// An address nothing answers at: a port just freed.
fn dead_monitor() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("v1:127.0.0.1:{port}")
}

/// Rewrites the monitors PV `pvc-<uid>` records to an address nothing answers at: (PV, address).
async fn record_dead_monitors(c: &Scenario, uid: &str) -> (String, String) {
    let pv = format!("pvc-{uid}");
    let dead = dead_monitor();
    let patch = json!({"metadata": {"annotations": {ANN_MONITORS: dead}}});
    c.patch_pv(&pv, patch).await;
    (pv, dead)
}

/// A bound csi volume of claim `claim` (class of reclaim policy Delete, clusterID
/// `cluster_id`) whose recorded monitors answer nowhere and whose class is gone: its uid, PV,
/// and the dead address.
async fn stranded(c: &Scenario, cluster_id: &str, claim: &str) -> (String, String, String) {
    let delete = json!({"reclaimPolicy": "Delete"});
    let csi = csi_class(c, claim, cluster_id, &[], delete).await;
    let (_, uid) = c.bound(&csi, claim, "64Mi").await;
    let (pv, dead) = record_dead_monitors(c, &uid).await;
    let classes: Api<StorageClass> = Api::all(c.admin.clone());
    classes
        .delete(&csi, &DeleteParams::default())
        .await
        .unwrap();
    wait_absent(&classes, &csi, "class gone", T).await;
    (uid, pv, dead)
}

/// Recreates class `name` (its parameters are immutable) as it was, with `monitors`.
async fn recreate_class(c: &Scenario, name: &str, monitors: &str) {
    let classes: Api<StorageClass> = Api::all(c.admin.clone());
    let mut class = classes.get(name).await.unwrap();
    classes
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    wait_absent(&classes, name, &format!("class {name} gone"), T).await;
    class
        .parameters
        .get_or_insert_default()
        .insert("monitors".into(), monitors.into());
    class.metadata = kube::api::ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    };
    classes
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
}

/// Sets (or with `None` removes) the entry for `cluster_id` in ceph-csi's ConfigMap, in
/// ceph-csi's format; read-modify-write with the resourceVersion, since other tests may
/// edit other entries at the same time.
async fn csi_config_entry(admin: &Client, cluster_id: &str, monitors: Option<&[&str]>) {
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), CSI_CONFIG_NS);
    for _ in 0..20 {
        let existing = cms.get_opt(CSI_CONFIG).await.unwrap();
        let mut entries: Vec<serde_json::Value> = existing
            .as_ref()
            .and_then(|cm| cm.data.as_ref()?.get("config.json").cloned())
            .map(|j| serde_json::from_str(&j).unwrap())
            .unwrap_or_default();
        entries.retain(|e| e["clusterID"] != cluster_id);
        if let Some(m) = monitors {
            entries.push(json!({"clusterID": cluster_id, "monitors": m}));
        }
        let mut cm = existing.clone().unwrap_or_default();
        cm.metadata.name = Some(CSI_CONFIG.into());
        cm.data = Some([("config.json".to_string(), json!(entries).to_string())].into());
        let r = match existing {
            Some(_) => cms.replace(CSI_CONFIG, &PostParams::default(), &cm).await,
            None => cms.create(&PostParams::default(), &cm).await,
        };
        match r {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => panic!("write ConfigMap {CSI_CONFIG_NS}/{CSI_CONFIG}: {e}"),
        }
    }
    panic!("ConfigMap {CSI_CONFIG_NS}/{CSI_CONFIG} kept changing under us");
}

/// A csi class `<ns>-<suffix>` of clusterID `cluster_id` with these extra parameters
/// (`monitors` among them, or the bed's).
async fn csi_class(
    c: &Scenario,
    suffix: &str,
    cluster_id: &str,
    params: &[(&str, &str)],
    extra: serde_json::Value,
) -> String {
    let secret = format!("{}-node-stage", c.ns);
    let mut over = vec![
        ("volumeFlavor", "csi"),
        ("clusterID", cluster_id),
        ("csiNodeStageSecretName", secret.as_str()),
        ("csiNodeStageSecretNamespace", "default"),
    ];
    over.extend_from_slice(params);
    c.class(suffix, &over, extra).await
}

/// Whether a line of `doctor`'s table has status `status`, check `check` and every needle.
fn has_row(text: &str, status: &str, check: &str, needles: &[&str]) -> bool {
    text.lines().any(|l| {
        l.starts_with(status)
            && l[status.len()..].trim_start().starts_with(check)
            && needles.iter().all(|n| l.contains(n))
    })
}

/// The class's monitors move (recreated with the other address form) and the PV's record
/// points nowhere: the older csi volume (carrying the class's mounter and map options) is
/// still grown and deleted, and so is a volume of the default flavour (in-tree on 1.20).
#[tokio::test]
async fn volumes_are_grown_and_deleted_after_their_monitors_move() {
    let c = Scenario::new("monmove").await;
    let (v1, v2) = mon_forms(&c.bed);
    let delete = json!({"reclaimPolicy": "Delete", "allowVolumeExpansion": true});
    let cluster_id = unique("monmove");
    let csi = csi_class(
        &c,
        "csi",
        &cluster_id,
        &[
            ("monitors", &v1),
            ("mounter", "rbd-nbd"),
            ("mapOptions", "nbd:try-netlink"),
            ("unmapOptions", "krbd:force"),
        ],
        delete.clone(),
    )
    .await;
    let plain = c.class("plain", &[("monitors", &v1)], delete).await;
    let (pvc, uid) = c.bound(&csi, "old", "64Mi").await;
    let (_, plain_uid) = c.bound(&plain, "plain", "64Mi").await;
    let pv = c.pv_of(&pvc).await;
    let attrs = pv.spec.unwrap().csi.unwrap().volume_attributes.unwrap();
    assert_eq!(
        (
            attrs["mounter"].as_str(),
            attrs["mapOptions"].as_str(),
            attrs["unmapOptions"].as_str()
        ),
        ("rbd-nbd", "nbd:try-netlink", "krbd:force"),
        "{attrs:?}"
    );

    record_dead_monitors(&c, &uid).await;
    recreate_class(&c, &csi, &v2).await;
    recreate_class(&c, &plain, &v2).await;

    c.grow(&pvc, "128Mi", &["from 64 MiB to 128 MiB"], T).await;
    assert_eq!(
        rbd_info(&c.bed, "kube", &image_of(&uid)).expect("rbd info")["size"],
        json!(128u64 << 20)
    );
    for claim in ["old", "plain"] {
        c.delete_claim(claim).await;
    }
    c.wait_pv_gone(&uid).await;
    c.wait_pv_gone(&plain_uid).await;
    let images = rbd_ls(&c.bed, "kube");
    assert!(!images.contains(&image_of(&uid)) && !images.contains(&image_of(&plain_uid)));
}

/// The class is gone and the PV's record points nowhere. Nothing live anywhere: the PV stays
/// with an event naming every source tried, and the image is kept. Then `ceph-csi-config`
/// names the volume's clusterID with live monitors: the deletion completes.
#[tokio::test]
async fn a_volume_whose_class_is_gone_is_deleted_through_ceph_csi_config() {
    // Nothing wakes the deletion when the ConfigMap changes: its retries must come often.
    let c = Scenario::with_env("moncfg", &[("RETRY_INTERVAL_MAX", "5s")]).await;
    let (_, v2) = mon_forms(&c.bed);
    let cluster_id = unique("moncfg");
    let (uid, pv_name, dead) = stranded(&c, &cluster_id, "stranded").await;
    // An entry for another cluster only: this one's clusterID is unknown there.
    csi_config_entry(&c.admin, &format!("{cluster_id}-other"), Some(&[&v2])).await;

    c.delete_claim("stranded").await;
    let msg = wait_pv_event(
        &c.admin,
        &pv_name,
        "VolumeFailedDelete",
        "no source's monitors reach",
        T,
    )
    .await;
    for needle in [
        format!("clusterID {cluster_id}"),
        format!("ConfigMap {CSI_CONFIG_NS}/{CSI_CONFIG}: has no entry for clusterID {cluster_id}"),
        format!("the PV's recorded monitors ({dead}): did not answer"),
    ] {
        assert!(msg.contains(&needle), "{needle:?} not in {msg}");
    }
    assert!(c.pvs().get_opt(&pv_name).await.unwrap().is_some());
    assert!(rbd_ls(&c.bed, "kube").contains(&image_of(&uid)));

    // The operator's ConfigMap knows the cluster: the next attempt completes.
    csi_config_entry(&c.admin, &cluster_id, Some(&[&v2])).await;
    c.wait_pv_gone(&uid).await;
    assert!(!rbd_ls(&c.bed, "kube").contains(&image_of(&uid)));
    csi_config_entry(&c.admin, &cluster_id, None).await;
    csi_config_entry(&c.admin, &format!("{cluster_id}-other"), None).await;
}

/// `doctor` checks the class's clusterID against `ceph-csi-config`, and each monitor list for
/// the cluster against `ceph mon dump`.
#[tokio::test]
async fn doctor_checks_cluster_ids_and_monitor_lists() {
    let c = Scenario::new("mondoc").await;
    let (v1, v2) = mon_forms(&c.bed);
    let cluster_id = unique("mondoc");
    let good = csi_class(&c, "good", &cluster_id, &[("monitors", &v1)], json!({})).await;
    let stale_monitors = format!("{v1},{}", dead_monitor());
    let stale = [("monitors", stale_monitors.as_str())];
    let stale = csi_class(&c, "stale", &cluster_id, &stale, json!({})).await;
    let doctor = |class: &str| {
        testbed::doctor(
            &c.bed,
            env!("CARGO_BIN_EXE_rbd-provisioner").as_ref(),
            &c.name,
            class,
            &[],
        )
        .1
    };
    // The ConfigMap exists but knows another cluster only.
    csi_config_entry(&c.admin, &format!("{cluster_id}-other"), Some(&[&v2])).await;
    let text = doctor(&good);
    let id_of_class = format!("StorageClass {good} ({cluster_id})");
    assert!(
        has_row(&text, "WARN", "cluster id", &[&id_of_class]),
        "{text}"
    );
    assert!(has_row(&text, "OK", "monitor map", &[&v1]), "{text}");
    csi_config_entry(&c.admin, &cluster_id, Some(&[&v2])).await;
    let text = doctor(&good);
    assert!(has_row(&text, "OK", "cluster id", &[&cluster_id]), "{text}");
    let from_config = format!("ConfigMap {CSI_CONFIG_NS}/{CSI_CONFIG}: {v2} in ceph mon dump");
    assert!(
        has_row(&text, "OK", "monitor map", &[&from_config]),
        "{text}"
    );
    let text = doctor(&stale);
    let not_in = [stale.as_str(), "not in the cluster's monitor map"];
    assert!(has_row(&text, "WARN", "monitor map", &not_in), "{text}");
    csi_config_entry(&c.admin, &cluster_id, None).await;
    csi_config_entry(&c.admin, &format!("{cluster_id}-other"), None).await;
}

/// Minimal CRDs for ceph-csi-operator's two kinds (the fields read are schema-less here), as
/// the operator serves them: group `csi.ceph.io`, version `v1alpha1`, namespaced.
async fn operator_crds(admin: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    for (kind, plural) in [
        ("ClientProfile", "clientprofiles"),
        ("CephConnection", "cephconnections"),
    ] {
        let name = format!("{plural}.csi.ceph.io");
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {"group": "csi.ceph.io", "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                    "listKind": format!("{kind}List")},
                "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]}});
        let pp = PatchParams::apply("rbdp-tests").force();
        crds.patch(&name, &pp, &Patch::Apply(&crd)).await.unwrap();
        wait_for(&format!("CRD {name} established"), T, || async {
            let c = crds.get(&name).await.ok()?;
            c.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }
}

/// The class is gone, the PV's record points nowhere, ceph-csi-config knows nothing of the
/// volume: ceph-csi-operator's ClientProfile named after its clusterID, through the
/// CephConnection it names, says where the cluster is, and the deletion completes.
#[tokio::test]
async fn a_client_profile_reaches_a_volume_whose_class_is_gone() {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    let c = Scenario::new("monprof").await;
    operator_crds(&c.admin).await;
    let (_, v2) = mon_forms(&c.bed);
    let cluster_id = unique("monprof");
    let (uid, ..) = stranded(&c, &cluster_id, "profiled").await;
    let api = |kind: &str| -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk("csi.ceph.io", "v1alpha1", kind);
        Api::namespaced_with(c.admin.clone(), &c.ns, &ApiResource::from_gvk(&gvk))
    };
    let objects = [
        ("CephConnection", "conn", json!({"monitors": [v2]})),
        (
            "ClientProfile",
            cluster_id.as_str(),
            json!({"cephConnectionRef": {"name": "conn"}, "rbd": {}}),
        ),
    ];
    for (kind, name, spec) in objects {
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "csi.ceph.io/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": c.ns}, "spec": spec}))
        .unwrap();
        api(kind).create(&PostParams::default(), &o).await.unwrap();
    }
    c.delete_claim("profiled").await;
    c.wait_pv_gone(&uid).await;
    assert!(!rbd_ls(&c.bed, "kube").contains(&image_of(&uid)));
}
