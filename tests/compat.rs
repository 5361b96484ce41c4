//! The StorageClasses people already have: the walkthrough's class (no `clusterID`, a user
//! Secret of type kubernetes.io/rbd holding only `key`) on whichever control plane the bed
//! runs. Below Kubernetes 1.31 it gets `spec.rbd` PVs; from 1.31 csi PVs, whose `clusterID`
//! defaults to the Ceph cluster's fsid and whose node-stage Secret is either found or asked
//! for with one `ProvisioningFailed` event that names the command creating it. Never a
//! silent Pending. The other tests here set `volumeFlavor: csi`, so they do the same on
//! every plane.

use testbed as common;

use std::process::Command;
use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret};
use kube::api::Api;
use serde_json::json;

const T: Duration = Duration::from_secs(90);

/// The API server's minor version (the flavour a class without `volumeFlavor` gets).
async fn server_minor(c: &Scenario) -> u32 {
    let v = c.admin.apiserver_version().await.expect("read /version");
    v.minor
        .trim_end_matches(|ch: char| !ch.is_ascii_digit())
        .parse()
        .expect("numeric minor version")
}

/// Replaces `from` by `to` in `text`, failing when `from` is absent, so an edit of
/// examples/ cannot silently turn this into a test of something else.
fn subst(text: &str, pairs: &[(&str, &str)]) -> String {
    let mut text = text.to_string();
    for (from, to) in pairs {
        assert!(text.contains(from), "examples/ changed: {from:?} not found");
        text = text.replace(from, to);
    }
    text
}

/// Runs a command from an event the way an operator pastes it (bash), with the bed's
/// kubectl as `kubectl` and the admin kubeconfig; returns its output.
fn run_as_operator(bed: &Bed, command: &str) -> String {
    let kubectl = bed.kubectl.to_string_lossy().into_owned();
    let bin = std::env::temp_dir().join(unique("compat-bin"));
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("kubectl");
    let kubectl_path = if kubectl.contains('/') {
        std::path::PathBuf::from(&kubectl)
    } else {
        which(&kubectl)
    };
    std::os::unix::fs::symlink(kubectl_path, &link).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(command)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("KUBECONFIG", &bed.kubeconfig)
        .output()
        .expect("run bash");
    let _ = std::fs::remove_dir_all(&bin);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "`{command}` failed: {text}");
    text
}

fn which(name: &str) -> std::path::PathBuf {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not on PATH"))
}

/// The command between backticks in an event's note.
fn command_in(note: &str) -> String {
    let start = note.find('`').expect("a command in backticks") + 1;
    let len = note[start..].find('`').expect("closing backtick");
    note[start..start + len].to_string()
}

/// A Secret's data, decoded, for checking what the operator's command wrote.
async fn secret_data(c: &Scenario, ns: &str, name: &str) -> Vec<(String, String)> {
    let s = Api::<Secret>::namespaced(c.admin.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("read secret {ns}/{name}: {e}"));
    s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// Waits for the `ProvisioningFailed` event that names `needle`, then checks that nothing
/// was made meanwhile: no PV, no image (the Secret is resolved before Ceph is touched), the
/// claim Pending. Returns the note.
async fn failed_with(c: &Scenario, claim: &PersistentVolumeClaim, needle: &str) -> String {
    let uid = uid_of(claim);
    let ev = wait_event(
        &c.admin,
        &c.ns,
        &uid,
        "ProvisioningFailed",
        &[needle, "kubectl"],
        T,
    )
    .await;
    let note = ev.note.unwrap_or_default();
    let name = claim.metadata.name.as_deref().unwrap();
    let now = c.pvcs().get(name).await.unwrap();
    assert_eq!(
        now.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "{note}"
    );
    assert!(
        c.pvs()
            .get_opt(&format!("pvc-{uid}"))
            .await
            .unwrap()
            .is_none(),
        "no PV before the Secret exists"
    );
    assert!(
        !rbd_exists(&c.bed, "kube", &format!("kubernetes-dynamic-pvc-{uid}")),
        "no image before the Secret exists"
    );
    for (what, key) in key_forms(&c.bed) {
        assert!(!note.contains(&key), "{what} in the event: {note}");
    }
    note
}

/// The csi PV of a claim, checked against what ceph-csi needs.
async fn csi_pv(c: &Scenario, uid: &str, node_stage: (&str, &str), fsid: &str) -> PersistentVolume {
    let pv = c.pvs().get(&format!("pvc-{uid}")).await.unwrap();
    let ann = pv.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        ann.get("rbd-provisioner.ceph.com/cluster-id-source")
            .map(String::as_str),
        Some("ceph-fsid"),
        "the PV says where its clusterID came from"
    );
    let spec = pv.spec.clone().unwrap();
    assert!(spec.rbd.is_none());
    let csi = spec.csi.expect("a csi PV");
    assert_eq!(csi.driver, "rbd.csi.ceph.com");
    let image = format!("kubernetes-dynamic-pvc-{uid}");
    assert_eq!(csi.volume_handle, image);
    assert_eq!(csi.fs_type.as_deref(), Some("ext4"));
    let attrs = csi.volume_attributes.unwrap();
    assert_eq!(attrs["clusterID"], fsid, "clusterID defaults to the fsid");
    assert_eq!(attrs["pool"], "kube");
    assert_eq!(attrs["staticVolume"], "true");
    assert_eq!(attrs["imageFeatures"], "layering");
    let sr = csi.node_stage_secret_ref.expect("nodeStageSecretRef");
    assert_eq!(
        (sr.namespace.as_deref(), sr.name.as_deref()),
        (Some(node_stage.0), Some(node_stage.1))
    );
    let info = rbd_info(&c.bed, "kube", &image).expect("rbd info sees the image");
    assert_eq!(info["features"], json!(["layering"]), "{info}");
    pv
}

/// Deletes a claim and waits until the provisioner has deleted its PV and image.
async fn delete_claim(c: &Scenario, name: &str, uid: &str) {
    c.delete_claim(name).await;
    c.wait_pv_gone(uid).await;
    let image = format!("kubernetes-dynamic-pvc-{uid}");
    assert!(!rbd_exists(&c.bed, "kube", &image), "{image} still in kube");
}

/// The walkthrough's StorageClass, Secrets and claim from examples/, renamed into this test's
/// world (the class is not the default one here, so the claim names it) and otherwise
/// unchanged: no `clusterID`, no `volumeFlavor`, a user Secret holding only `key`.
#[tokio::test]
async fn the_walkthrough_class_and_claim_on_this_control_plane() {
    let c = Scenario::new("compat").await;
    let minor = server_minor(&c).await;
    let ns = &c.ns;
    let (admin_secret, user_secret) = (
        format!("{ns}-ceph-secret"),
        format!("{ns}-ceph-kube-secret"),
    );
    let class = format!("{ns}-ceph-rbd");
    let docs = [
        subst(
            &repo_file("examples/ceph-secret.yaml"),
            &[
                ("name: ceph-secret", &format!("name: {admin_secret}")),
                ("ADMIN_KEY_BASE64", &base64_of(&c.bed.admin_key)),
            ],
        ),
        subst(
            &repo_file("examples/ceph-kube-secret.yaml"),
            &[
                ("name: ceph-kube-secret", &format!("name: {user_secret}")),
                ("KUBE_KEY_BASE64", &base64_of(&c.bed.kube_key)),
            ],
        ),
        subst(
            &repo_file("examples/storageclass.yaml"),
            &[
                ("name: ceph-rbd", &format!("name: {class}")),
                ("is-default-class: \"true\"", "is-default-class: \"false\""),
                (
                    "provisioner: ceph.com/rbd",
                    &format!("provisioner: {}", c.name),
                ),
                ("CEPH_MONITORS", &c.bed.monitors),
                (
                    "adminSecretName: ceph-secret",
                    &format!("adminSecretName: {admin_secret}"),
                ),
                (
                    "userSecretName: ceph-kube-secret",
                    &format!("userSecretName: {user_secret}"),
                ),
            ],
        ),
        subst(
            &repo_file("examples/pvc.yaml"),
            &[
                ("namespace: default", &format!("namespace: {ns}")),
                ("spec:\n", &format!("spec:\n  storageClassName: {class}\n")),
            ],
        ),
    ];
    for d in &docs {
        apply_yaml(&c.admin, d, &[]).await;
    }
    let claim = c.pvcs().get("ceph-sc-claim").await.unwrap();
    let uid = uid_of(&claim);

    if minor < 31 {
        // The in-tree plugin still exists: spec.rbd, as the old provisioner wrote them.
        let bound = wait_bound(&c.admin, ns, "ceph-sc-claim", T).await;
        assert_eq!(
            bound.spec.unwrap().volume_name.as_deref(),
            Some(&*format!("pvc-{uid}"))
        );
        let pv = c.pvs().get(&format!("pvc-{uid}")).await.unwrap();
        let ann = pv.metadata.annotations.clone().unwrap_or_default();
        assert!(!ann.contains_key("rbd-provisioner.ceph.com/cluster-id-source"));
        let spec = pv.spec.unwrap();
        assert!(spec.csi.is_none(), "no csi PV below 1.31");
        let rbd = spec.rbd.expect("spec.rbd below 1.31");
        assert_eq!(rbd.monitors, vec![c.bed.monitors.clone()]);
        assert_eq!(rbd.pool.as_deref(), Some("kube"));
        assert_eq!(rbd.image, format!("kubernetes-dynamic-pvc-{uid}"));
        assert_eq!(rbd.user.as_deref(), Some("kube"));
        assert_eq!(rbd.fs_type.as_deref(), Some("ext4"));
        let sr = rbd.secret_ref.unwrap();
        assert_eq!(
            (sr.namespace.as_deref(), sr.name.as_deref()),
            (Some("default"), Some(&*user_secret))
        );
        let reasons: Vec<_> = events_for(&c.admin, ns, &uid)
            .await
            .into_iter()
            .filter_map(|e| e.reason)
            .collect();
        assert!(
            !reasons.iter().any(|r| r == "ProvisioningFailed"),
            "{reasons:?}"
        );
    } else {
        // csi: the user Secret holds only `key`, and no `<name>-csi` exists yet. One clear
        // event, with the command; nothing made meanwhile.
        let companion = format!("{user_secret}-csi");
        let note = failed_with(&c, &claim, &format!("default/{companion} does not exist")).await;
        assert!(note.contains("holds only key"), "{note}");
        let cmd = command_in(&note);
        assert!(cmd.contains("kubectl create -f -"), "{cmd}");
        // The operator runs it; the key goes from Secret to Secret.
        run_as_operator(&c.bed, &cmd);
        let mut data = secret_data(&c, "default", &companion).await;
        data.sort();
        assert_eq!(
            data,
            vec![
                ("userID".to_string(), "kube".to_string()),
                ("userKey".to_string(), c.bed.kube_key.clone())
            ]
        );
        // The claim binds on the next retry, to a csi PV that names the new Secret.
        wait_bound(&c.admin, ns, "ceph-sc-claim", T).await;
        let fsid = ceph_fsid(&c.bed);
        csi_pv(&c, &uid, ("default", &companion), &fsid).await;
        wait_event(
            &c.admin,
            ns,
            &uid,
            "ProvisioningSucceeded",
            &[&fsid, "the Ceph cluster's fsid"],
            T,
        )
        .await;
    }
    assert_no_keys(&c.bed, &c.admin, &c.prov, &[ns, "default"]).await;
    delete_claim(&c, "ceph-sc-claim", &uid).await;
}

/// A user Secret in ceph-csi's format (as Rook and ceph-csi write them: `userID`, `userKey`)
/// is the node-stage Secret itself when the class names none.
#[tokio::test]
async fn a_user_secret_in_ceph_csi_format_is_the_node_stage_secret() {
    let c = Scenario::new("csiuser").await;
    let user = format!("{}-rook", c.ns);
    let s = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": user, "namespace": "default"},
        "stringData": {"userID": "kube", "userKey": c.bed.kube_key},
    });
    Api::<Secret>::namespaced(c.admin.clone(), "default")
        .create(&Default::default(), &serde_json::from_value(s).unwrap())
        .await
        .unwrap();
    let class = c
        .class(
            "csi",
            &[
                ("volumeFlavor", "csi"),
                ("userSecretName", &user),
                ("clusterID", ""),
                ("csiNodeStageSecretName", ""),
                ("csiNodeStageSecretNamespace", ""),
            ],
            json!({}),
        )
        .await;
    let (_, uid) = c.bound(&class, "a", "20Mi").await;
    csi_pv(&c, &uid, ("default", &user), &ceph_fsid(&c.bed)).await;
    delete_claim(&c, "a", &uid).await;
}

/// A class that names its node-stage Secret: a missing one gets the command that creates it,
/// one without `userKey` the command that completes it (keeping what it holds).
#[tokio::test]
async fn a_named_node_stage_secret_missing_or_incomplete_gets_its_command() {
    let c = Scenario::new("csinamed").await;
    let user = format!("{}-user", c.ns);
    let missing = format!("{}-stage-a", c.ns);
    let partial = format!("{}-stage-b", c.ns);
    Api::<Secret>::namespaced(c.admin.clone(), "default")
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": partial, "namespace": "default", "labels": {"kept": "yes"}},
                "stringData": {"userID": "kube", "note": "kept"},
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let mut made = vec![];
    for (suffix, secret, needle) in [
        ("a", &missing, "which does not exist"),
        ("b", &partial, "which exists but has no userKey"),
    ] {
        let class = c
            .class(
                suffix,
                &[
                    ("volumeFlavor", "csi"),
                    ("clusterID", ""),
                    ("csiNodeStageSecretName", secret),
                    ("csiNodeStageSecretNamespace", "default"),
                ],
                json!({}),
            )
            .await;
        let claim = c.claim(suffix, &class).size("20Mi").create().await;
        let note = failed_with(&c, &claim, needle).await;
        assert!(note.contains(&format!("default/{secret}")), "{note}");
        let cmd = command_in(&note);
        assert!(
            cmd.starts_with(&format!("kubectl -n default get secret {user} ")),
            "copies from the user secret: {cmd}"
        );
        run_as_operator(&c.bed, &cmd);
        made.push((suffix, secret, uid_of(&claim)));
    }
    // The patched Secret kept what it held.
    let data = secret_data(&c, "default", &partial).await;
    assert!(
        data.contains(&("note".to_string(), "kept".to_string())),
        "{data:?}"
    );
    assert!(data.contains(&("userKey".to_string(), c.bed.kube_key.clone())));
    let fsid = ceph_fsid(&c.bed);
    for (suffix, secret, uid) in &made {
        wait_bound(&c.admin, &c.ns, suffix, T).await;
        csi_pv(&c, uid, ("default", secret), &fsid).await;
    }
    assert_no_keys(&c.bed, &c.admin, &c.prov, &[&c.ns, "default"]).await;
    for (suffix, _, uid) in &made {
        delete_claim(&c, suffix, uid).await;
    }
}

/// The fsid read through librados is the one the `ceph` CLI reports.
#[tokio::test]
async fn the_fsid_read_through_librados_is_cephs() {
    let bed = Bed::load();
    let fsid = bed.ceph().await.fsid().await.expect("fsid");
    assert_eq!(fsid.len(), 36, "{fsid}");
    assert_eq!(fsid, ceph_fsid(&bed));
}
