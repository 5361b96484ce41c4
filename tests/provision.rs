//! Provisioning end to end: the real bed (Ceph + kube-apiserver + kube-controller-manager),
//! the built binary running under the ServiceAccount and RBAC of manifests/rbac/.

use testbed as common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// The walkthrough's objects from examples/, under names of this run only: the provisioner,
/// the class (not the default class), the Secrets and the claim's namespace, so a demo (whose
/// objects have the examples' own names) or another test run on the same bed is never touched.
#[tokio::test]
async fn examples_provision_and_bind() {
    let bed = Bed::load();
    let admin = bed.admin().await;
    let ceph = bed.ceph().await;
    let run = unique("examples");
    let name = format!("{run}.test/rbd");
    let (class, admin_secret, user_secret) = (
        format!("{run}-rbd"),
        format!("{run}-admin-secret"),
        format!("{run}-kube-secret"),
    );
    let ns = run.clone();
    let p = Provisioner::start(&bed, &name, &[]).await;
    namespace(&admin, &ns).await;
    let _clean = Cleanup::new(&bed)
        .namespace(&ns)
        .class(&class)
        .secret("kube-system", &admin_secret)
        .secret("default", &user_secret)
        .secret("default", &format!("{user_secret}-csi"));
    let subst = [
        ("ADMIN_KEY_BASE64", base64_of(&bed.admin_key)),
        ("KUBE_KEY_BASE64", base64_of(&bed.kube_key)),
        ("CEPH_MONITORS", bed.monitors.clone()),
        ("provisioner: ceph.com/rbd", format!("provisioner: {name}")),
        ("name: ceph-rbd", format!("name: {class}")),
        (
            "is-default-class: \"true\"",
            "is-default-class: \"false\"".into(),
        ),
        ("ceph-secret", admin_secret.clone()),
        ("ceph-kube-secret", user_secret.clone()),
    ];
    let subst: Vec<(&str, &str)> = subst.iter().map(|(a, b)| (*a, b.as_str())).collect();
    // The claim and the Pod go to the run's namespace; the Secrets stay where the shipped RBAC
    // lets the provisioner read them.
    let ns_line = format!("namespace: {ns}");
    // examples/pvc.yaml relies on the default class; this run's class is not the default.
    let class_line = format!("spec:\n  storageClassName: {class}\n  accessModes:");
    let mut claim_subst = subst.clone();
    claim_subst.push(("namespace: default", &ns_line));
    claim_subst.push(("spec:\n  accessModes:", &class_line));
    let pods = Api::<Pod>::namespaced(admin.clone(), &ns);
    if bed.csi_by_default() {
        // Kubernetes >= 1.31: csi PVs, whose node-stage Secret must be in ceph-csi's format;
        // the walkthrough's user Secret holds only `key`, so the operator adds the one the
        // provisioner looks for next to it (`<user secret>-csi`).
        csi_secret(
            &admin,
            "default",
            &format!("{user_secret}-csi"),
            "kube",
            &bed.kube_key,
        )
        .await;
    }
    for f in [
        "examples/ceph-secret.yaml",
        "examples/ceph-kube-secret.yaml",
        "examples/storageclass.yaml",
    ] {
        apply_yaml(&admin, &repo_file(f), &subst).await;
    }
    apply_yaml(&admin, &repo_file("examples/pvc.yaml"), &claim_subst).await;
    let bound = wait_bound(&admin, &ns, "ceph-sc-claim", T).await;
    let uid = uid_of(&bound);
    assert_eq!(
        bound.spec.as_ref().unwrap().volume_name.as_deref(),
        Some(&*format!("pvc-{uid}"))
    );
    assert_eq!(
        bound.status.as_ref().unwrap().capacity.as_ref().unwrap()["storage"].0,
        "500Mi"
    );

    // This process led and made it.
    assert_led_and_acted(&p, &["Successfully provisioned", &format!("pvc-{uid}")], T).await;

    // The image, read back through librbd and, independently, the rbd CLI.
    let image = format!("kubernetes-dynamic-pvc-{uid}");
    let info = ceph.image_info("kube", &image).await.expect("image exists");
    assert!(!info.old_format, "format 2");
    assert_eq!(info.features, 1, "features = layering only");
    assert_eq!(info.size, 500 << 20);
    let cli = rbd_info(&bed, "kube", &image).expect("rbd info sees the image");
    assert_eq!(cli["size"], 500u64 << 20, "{cli}");
    assert_eq!(cli["format"], 2, "{cli}");
    assert_eq!(cli["features"], json!(["layering"]), "{cli}");

    // The PV.
    let pv = Api::<PersistentVolume>::all(admin.clone())
        .get(&format!("pvc-{uid}"))
        .await
        .unwrap();
    let ann = pv.metadata.annotations.clone().unwrap();
    assert_eq!(ann["pv.kubernetes.io/provisioned-by"], name);
    let s = pv.spec.clone().unwrap();
    assert_eq!(s.storage_class_name.as_deref(), Some(class.as_str()));
    assert_eq!(
        s.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(
        s.access_modes.unwrap(),
        vec!["ReadWriteOnce", "ReadOnlyMany"]
    );
    assert_eq!(s.claim_ref.as_ref().unwrap().uid.as_deref(), Some(&*uid));
    let src = volume_source(&pv);
    assert_eq!(src.csi, bed.csi_by_default(), "flavour by server version");
    assert_eq!(src.pool, "kube");
    assert_eq!(src.image, image);
    assert_eq!(src.fs_type.as_deref(), Some("ext4"));
    if let Some(rbd) = s.rbd {
        assert_eq!(rbd.monitors, vec![bed.monitors.clone()]);
        assert_eq!(rbd.user.as_deref(), Some("kube"));
        assert_eq!(src.secret, (user_secret.clone(), "default".to_string()));
    } else {
        assert_eq!(
            src.secret,
            (format!("{user_secret}-csi"), "default".to_string())
        );
    }

    // Events that `kubectl describe pvc` shows.
    wait_event(
        &admin,
        &ns,
        &uid,
        "ProvisioningSucceeded",
        &[&format!("pvc-{uid}")],
        T,
    )
    .await;
    let reasons: Vec<_> = events_for(&admin, &ns, &uid)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"Provisioning".to_string()), "{reasons:?}");

    // The Pod is accepted (there is no kubelet here to run it).
    apply_yaml(&admin, &repo_file("examples/pod.yaml"), &claim_subst).await;
    let pod = pods.get("ceph-sc-pod").await.unwrap();
    assert_eq!(
        pod.spec.unwrap().volumes.unwrap()[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "ceph-sc-claim"
    );
    let _ = pods
        .delete("ceph-sc-pod", &DeleteParams::default().grace_period(0))
        .await;
    assert_no_keys(&bed, &admin, &p, &[&ns]).await;
    // The scanner sees a leak where there is one: a key planted in an event of the namespace,
    // and in the environment of a process, is found.
    plant_key_event(&admin, &ns, &base64_of(&bed.admin_key)).await;
    let found = key_leaks(&bed, &admin, p.pid(), &p.logs(), &[&ns]).await;
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("admin key (base64) in events")),
        "{found:?}"
    );
    let mut planted = std::process::Command::new("sleep")
        .arg("30")
        .env("PLANTED", &bed.kube_key)
        .spawn()
        .unwrap();
    let found = key_leaks(&bed, &admin, planted.id(), "", &[]).await;
    let _ = planted.kill();
    let _ = planted.wait();
    assert_eq!(found, vec!["user key in the environment".to_string()]);
    cleanup(&bed, &admin, &ns, &[&bound], &["kube"]).await;
}

#[tokio::test]
async fn claim_in_another_namespace_and_other_pools() {
    let c = Scenario::new("pools").await;
    let ceph = c.bed.ceph().await;
    let k2 = c.class("kube2", &[("pool", "kube2")], json!({})).await;
    let dp = c
        .class("datapool", &[("dataPool", "kube2")], json!({}))
        .await;
    let a = c.claim("a", &k2).size("1Gi").create().await;
    let b = c.claim("b", &dp).size("10Mi").create().await;
    wait_bound(&c.admin, &c.ns, "a", T).await;
    wait_bound(&c.admin, &c.ns, "b", T).await;
    let ia = ceph
        .image_info("kube2", &format!("kubernetes-dynamic-pvc-{}", uid_of(&a)))
        .await
        .expect("image in kube2");
    assert_eq!(ia.size, 1 << 30);
    assert_eq!(ia.features, 1);
    let ib = ceph
        .image_info("kube", &format!("kubernetes-dynamic-pvc-{}", uid_of(&b)))
        .await
        .expect("image in kube");
    assert_ne!(ib.data_pool_id, -1, "data pool set");
    // The rbd CLI agrees (an oracle independent of our librbd bindings).
    let ca = rbd_info(
        &c.bed,
        "kube2",
        &format!("kubernetes-dynamic-pvc-{}", uid_of(&a)),
    )
    .expect("rbd info of the kube2 image");
    assert_eq!(ca["size"], 1u64 << 30, "{ca}");
    let cb = rbd_info(
        &c.bed,
        "kube",
        &format!("kubernetes-dynamic-pvc-{}", uid_of(&b)),
    )
    .expect("rbd info of the kube image");
    assert_eq!(cb["data_pool"], "kube2", "{cb}");
    assert_led_and_acted(&c.prov, &["Successfully provisioned", &uid_of(&b)], T).await;
    // The user secret lives in "default", not in the claim's namespace.
    let pv = Api::<PersistentVolume>::all(c.admin.clone())
        .get(&format!("pvc-{}", uid_of(&a)))
        .await
        .unwrap();
    // (On 1.37 the csi PV's node-stage Secret, which the scenario keeps in "default" too.)
    let src = volume_source(&pv);
    assert_eq!(src.csi, c.bed.csi_by_default(), "flavour by server version");
    assert_eq!(src.pool, "kube2");
    assert_eq!(src.secret.1, "default");
    cleanup(&c.bed, &c.admin, &c.ns, &[&a, &b], &["kube", "kube2"]).await;
}

/// The process dies after creating the image and before writing the PV; the next one adopts
/// the image instead of making a second one.
#[tokio::test]
async fn restart_between_image_and_pv_adopts_the_image() {
    let mut s = Scenario::with_env(
        "crash",
        &[("RBD_PROVISIONER_FAILPOINT", "exit-after-image-create")],
    )
    .await;
    let name = s.name.clone();
    let (bed, admin, ns) = (s.bed.clone(), s.admin.clone(), s.ns.clone());
    let ceph = bed.ceph().await;
    let class = s.class("class", &[], json!({})).await;
    let c = s.claim("data", &class).create().await;
    let st = s.prov.wait_exit(T).await;
    assert_eq!(
        st.code(),
        Some(86),
        "died at the failpoint; log:\n{}",
        s.prov.logs()
    );
    let image = format!("kubernetes-dynamic-pvc-{}", uid_of(&c));
    let id = ceph
        .image_info("kube", &image)
        .await
        .expect("image made before the crash")
        .id;
    assert!(!s.has_pv(&uid_of(&c)).await, "no PV yet");

    let second = Provisioner::start(&bed, &name, &[]).await;
    wait_bound(&admin, &ns, "data", T).await;
    assert_eq!(
        ceph.image_info("kube", &image).await.unwrap().id,
        id,
        "same image, adopted"
    );
    // Other tests create images in the same pool at the same time: count this claim's only.
    let uid = uid_of(&c);
    let mine: Vec<String> = ceph
        .list_images("kube")
        .await
        .unwrap()
        .into_iter()
        .filter(|i| i.contains(&uid))
        .collect();
    assert_eq!(mine, vec![image.clone()], "no second image");
    let cli: Vec<String> = rbd_ls(&bed, "kube")
        .into_iter()
        .filter(|i| i.contains(&uid))
        .collect();
    assert_eq!(cli, vec![image.clone()], "the rbd CLI sees one image too");
    assert_led_and_acted(&second, &["adopting image", &image], T).await;
    cleanup(&bed, &admin, &ns, &[&c], &["kube"]).await;
}

/// Bad input: a Warning event naming the problem, no image, and a provisioner that keeps
/// running and still provisions a good claim afterwards.
async fn refused(
    c: &mut Scenario,
    class_over: &[(&str, &str)],
    modes: &[&str],
    spec: serde_json::Value,
    needles: &[&str],
) {
    let ceph = c.bed.ceph().await;
    let class = c.class(&unique("bad"), class_over, json!({})).await;
    let name = unique("claim");
    let pvc = c
        .claim(&name, &class)
        .size("16Mi")
        .modes(modes)
        .spec(spec)
        .create()
        .await;
    let uid = uid_of(&pvc);
    let ev = wait_event(&c.admin, &c.ns, &uid, "ProvisioningFailed", needles, T).await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_no_keys(&c.bed, &c.admin, &c.prov, &[&c.ns]).await;
    assert!(!image_exists(&ceph, "kube", &format!("kubernetes-dynamic-pvc-{uid}")).await);
    assert!(!rbd_exists(
        &c.bed,
        "kube",
        &format!("kubernetes-dynamic-pvc-{uid}")
    ));
    assert!(!c.has_pv(&uid).await);
    assert!(c.prov.is_running(), "provisioner died:\n{}", c.prov.logs());
    let _ = Api::<PersistentVolumeClaim>::namespaced(c.admin.clone(), &c.ns)
        .delete(&name, &DeleteParams::default())
        .await;
}

async fn still_provisions(c: &Scenario) {
    let class = c.class("good", &[], json!({})).await;
    let (pvc, _) = c.claim("good", &class).size("8Mi").bound().await;
    assert_led_and_acted(&c.prov, &["Successfully provisioned", &uid_of(&pvc)], T).await;
    assert_no_keys(&c.bed, &c.admin, &c.prov, &[&c.ns]).await;
    cleanup(&c.bed, &c.admin, &c.ns, &[&pvc], &["kube"]).await;
}

#[tokio::test]
async fn bad_secrets() {
    let mut c = Scenario::new("secrets").await;
    refused(
        &mut c,
        &[("adminSecretName", "no-such-secret")],
        &["ReadWriteOnce"],
        json!({}),
        &[
            "kube-system/no-such-secret not found",
            "kubectl -n kube-system create secret",
        ],
    )
    .await;
    let forbidden = unique("forbidden");
    let _clean_forbidden = Cleanup::new(&c.bed).namespace(&forbidden);
    namespace(&c.admin, &forbidden).await;
    key_secret(&c.admin, &forbidden, "admin", &c.bed.admin_key).await;
    refused(
        &mut c,
        &[("adminSecretNamespace", &forbidden)],
        &["ReadWriteOnce"],
        json!({}),
        &[
            "may not read Secrets",
            &format!("kubectl -n {forbidden} create rolebinding"),
        ],
    )
    .await;
    refused(
        &mut c,
        // The user Secret is what spec.rbd PVs name (csi ones name the node-stage Secret):
        // the rbd flavour on both planes.
        &[("userSecretName", "missing-user"), ("volumeFlavor", "rbd")],
        &["ReadWriteOnce"],
        json!({}),
        &["user secret", "default/missing-user not found"],
    )
    .await;
    still_provisions(&c).await;
}

#[tokio::test]
async fn bad_ceph_access_fails_fast() {
    let mut c = Scenario::new("ceph").await;
    // A well-formed key that is not the admin's.
    let mut wrong: Vec<char> = c.bed.admin_key.chars().collect();
    wrong[20] = if wrong[20] == 'A' { 'B' } else { 'A' };
    let wrong: String = wrong.into_iter().collect();
    key_secret(&c.admin, "kube-system", &format!("{}-wrong", c.ns), &wrong).await;
    let wrong_secret = format!("{}-wrong", c.ns);
    let started = std::time::Instant::now();
    refused(
        &mut c,
        &[("adminSecretName", &wrong_secret)],
        &["ReadWriteOnce"],
        json!({}),
        &["client.admin", "key"],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "wrong key took {:?}",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    refused(
        &mut c,
        &[("monitors", "127.0.0.1:1")],
        &["ReadWriteOnce"],
        json!({}),
        &["127.0.0.1:1"],
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "unreachable monitor took {:?}",
        started.elapsed()
    );
    still_provisions(&c).await;
}

#[tokio::test]
async fn bad_parameters() {
    let mut c = Scenario::new("params").await;
    refused(
        &mut c,
        &[("imageFeatures", "layering,exclusive-lock")],
        &["ReadWriteOnce"],
        json!({}),
        &["imageFeatures", "feature set mismatch"],
    )
    .await;
    refused(
        &mut c,
        &[("imageFormat", "1")],
        &["ReadWriteOnce"],
        json!({}),
        &["imageFormat \"1\" is not supported"],
    )
    .await;
    refused(
        &mut c,
        &[("imageFeaturez", "layering")],
        &["ReadWriteOnce"],
        json!({}),
        &["unknown parameter \"imageFeaturez\""],
    )
    .await;
    refused(
        &mut c,
        &[("monitors", "10.0.0.1:port")],
        &["ReadWriteOnce"],
        json!({}),
        &["monitor \"10.0.0.1:port\""],
    )
    .await;
    still_provisions(&c).await;
}

#[tokio::test]
async fn bad_claims() {
    let mut c = Scenario::new("claims").await;
    refused(
        &mut c,
        &[],
        &["ReadWriteMany"],
        json!({}),
        &["ReadWriteMany is not supported for Filesystem"],
    )
    .await;
    refused(
        &mut c,
        &[],
        &["ReadWriteOnce"],
        json!({"selector": {"matchLabels": {"tier": "db"}}}),
        &["label selector"],
    )
    .await;
    // Zero and malformed sizes never reach a provisioner: the API server refuses them.
    let class = c.class("sizes", &[], json!({})).await;
    let api = Api::<PersistentVolumeClaim>::namespaced(c.admin.clone(), &c.ns);
    for size in ["0", "ten-gigs"] {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": unique("size")},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class, "resources": {"requests": {"storage": size}}}
        })).unwrap_or_else(|_| serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap());
        if pvc.spec.is_none() {
            // "ten-gigs" does not even parse as a quantity on the client side.
            continue;
        }
        let err = api
            .create(&Default::default(), &pvc)
            .await
            .expect_err("API server refuses the size");
        assert!(
            err.to_string().contains("greater than zero")
                || err.to_string().contains("quantities must match"),
            "{size}: {err}"
        );
    }
    still_provisions(&c).await;
}

/// Two replicas with one name: only the Lease holder acts; when it crashes the other takes
/// over once the Lease expires, and a graceful stop hands over at once.
#[tokio::test]
async fn leader_election() {
    let mut s = Scenario::with_env("leader", &[]).await;
    let name = s.name.clone();
    let (bed, admin, ns) = (s.bed.clone(), s.admin.clone(), s.ns.clone());
    wait_for("first replica leads", T, || async {
        s.prov.logs().contains("became leader").then_some(())
    })
    .await;
    let b = Provisioner::start(&bed, &name, &[]).await;
    wait_for("second replica waits", T, || async {
        b.logs().contains("waiting for leadership").then_some(())
    })
    .await;
    let class = s.class("class", &[], json!({})).await;
    let a = &mut s.prov;
    // Through `stage`: `a` borrows the provisioner meanwhile.
    let (one, _) = s.stage.claim("one", &class).size("8Mi").bound().await;
    // The log line follows the PV write; the claim may be Bound a moment before it is flushed.
    wait_for("the leader's log", T, || async {
        a.logs().contains("Successfully provisioned").then_some(())
    })
    .await;
    assert!(
        !b.logs().contains("Successfully provisioned"),
        "the follower does nothing"
    );

    a.crash();
    let two = s.stage.claim("two", &class).size("8Mi").create().await;
    wait_bound(&admin, &ns, "two", Duration::from_secs(90)).await;
    wait_for("the new leader's log", T, || async {
        (b.logs().contains("became leader") && b.logs().contains("Successfully provisioned"))
            .then_some(())
    })
    .await;

    // A graceful stop releases the Lease: a new replica leads at once.
    drop(b);
    let c = Provisioner::start(&bed, &name, &[]).await;
    wait_for(
        "new replica leads at once",
        Duration::from_secs(10),
        || async { c.logs().contains("became leader").then_some(()) },
    )
    .await;
    cleanup(&bed, &admin, &ns, &[&one, &two], &["kube"]).await;
}

/// An event carrying `text` in its note, as a leak would.
async fn plant_key_event(client: &kube::Client, ns: &str, text: &str) {
    use k8s_openapi::api::events::v1::Event;
    let ev: Event = serde_json::from_value(json!({
        "metadata": {"name": "planted-leak", "namespace": ns},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "test",
        "reportingInstance": "test",
        "action": "Test",
        "reason": "Planted",
        "note": format!("a leaked key: {text}"),
        "type": "Normal",
        "regarding": {"kind": "PersistentVolumeClaim", "name": "ceph-sc-claim", "namespace": ns, "apiVersion": "v1"},
    }))
    .unwrap();
    Api::<Event>::namespaced(client.clone(), ns)
        .create(&Default::default(), &ev)
        .await
        .expect("create the planted event");
}
