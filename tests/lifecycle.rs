//! Expansion, block volumes, the ceph-csi flavour and clones, on the real bed.

use testbed as common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn capacity(pv: &PersistentVolume) -> String {
    pv.spec.as_ref().unwrap().capacity.as_ref().unwrap()["storage"]
        .0
        .clone()
}

/// Who last wrote the PV's `spec.capacity`, by the API server's own record (`managedFields`):
/// the provisioner's writes carry `rbd-provisioner@<identity>`, kube-controller-manager's its
/// own name. Independent of the provisioner's logs.
fn capacity_writer(pv: &PersistentVolume) -> Option<String> {
    pv.metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0["f:spec"]["f:capacity"].is_object())
        })
        .and_then(|m| m.manager.clone())
}

/// kube-controller-manager's in-tree expander (Kubernetes <= 1.30) acts on `spec.rbd` PVs too.
/// With an admin secret of type kubernetes.io/rbd and the rbd CLI at hand (as on this bed) it
/// races the provisioner and may run `rbd resize` itself, so this test does not show whose
/// resize it was (it would pass with the in-tree expander alone): it shows that the two do
/// not fight, and image (seen by the rbd CLI), PV and claim end in the same state either way.
/// `expand_when_the_in_tree_expander_cannot` proves the provisioner's own path.
/// On 1.37 the class's PVs are csi and there is no in-tree expander: kube-controller-manager
/// only records `ExternalExpanding` ("waiting for an external controller"), and the
/// provisioner, acting as the resizer, leaves the claim as kubernetes-csi's external-resizer
/// would: `FileSystemResizePending`, `allocatedResources` the new size, `NodeResizePending`.
#[tokio::test]
async fn expansion_ends_the_same_whoever_of_the_two_expanders_resizes() {
    let c = Scenario::new("grow").await;
    let class = c
        .class("grow", &[], json!({"allowVolumeExpansion": true}))
        .await;
    let (pvc, _) = c.claim("data", &class).bound().await;
    c.request("data", "128Mi")
        .await
        .expect("expansion allowed by the class");
    let image = format!("kubernetes-dynamic-pvc-{}", uid_of(&pvc));
    wait_for("image grown", T, || async {
        (rbd_json(&c.bed, &["info", &format!("kube/{image}")])?["size"] == json!(128u64 << 20))
            .then_some(())
    })
    .await;
    let grown = c.wait_condition("data", "FileSystemResizePending", T).await;
    let pv = c.pv_of(&pvc).await;
    assert_eq!(capacity(&pv), "128Mi");
    let writer = capacity_writer(&pv).unwrap_or_default();
    println!("FIGURES expansion race: spec.capacity last written by {writer}");
    if c.bed.kube_minor >= 31 {
        // csi PVs: no in-tree expander, so the PV's growth must be ours.
        assert!(writer.starts_with("rbd-provisioner@"), "{writer}");
    }
    if c.bed.kube_minor >= 34 {
        let st = grown.status.unwrap();
        assert_eq!(st.allocated_resources.unwrap()["storage"].0, "128Mi");
        assert_eq!(
            st.allocated_resource_statuses.unwrap()["storage"],
            "NodeResizePending"
        );
        // What kube-controller-manager 1.37 does with it: nothing but an event; it leaves csi
        // claims to an external resizer (which would match the PV's driver).
        wait_event(
            &c.admin,
            &c.ns,
            &uid_of(&pvc),
            "ExternalExpanding",
            &["waiting for an external controller"],
            T,
        )
        .await;
    }
    // Shrinking is refused by the API server itself: below the previous request on 1.20;
    // on 1.37 (RecoverVolumeExpansionFailure) below the claim's status.capacity, which stays
    // 64Mi until a kubelet grows the filesystem.
    let err = c.request("data", "64Mi").await.expect_err("shrink refused");
    assert!(
        err.to_string().contains("less than previous value")
            || err
                .to_string()
                .contains("can not be less than status.capacity"),
        "{err}"
    );
    if c.bed.kube_minor >= 34 {
        // A request lowered between status.capacity and the volume's size is allowed there
        // (to recover from a failed expansion); the image is never shrunk.
        c.request("data", "96Mi").await.expect("lowered to 96Mi");
        wait_event(
            &c.admin,
            &c.ns,
            &uid_of(&pvc),
            "VolumeResizeSkipped",
            &["asks for 96 MiB", "already has 128 MiB"],
            T,
        )
        .await;
        assert_eq!(
            rbd_json(&c.bed, &["info", &format!("kube/{image}")]).unwrap()["size"],
            json!(128u64 << 20)
        );
        assert_eq!(capacity(&c.pv_of(&pvc).await), "128Mi");
    }
    cleanup(&c.bed, &c.admin, &c.ns, &[&pvc], &["kube"]).await;
}

/// With an Opaque admin secret the in-tree expander cannot act ("Cannot get secret of type
/// kubernetes.io/rbd", as in the walkthrough): the provisioner grows image and PV, and the
/// expander's next retry, seeing the PV large enough, hands the claim to the node without
/// touching Ceph.
#[tokio::test]
async fn expand_when_the_in_tree_expander_cannot() {
    let c = Scenario::new("grow2").await;
    let class = c.grown_by_us_class("grow", &[], json!({})).await;
    let (pvc, _) = c.claim("data", &class).bound().await;
    c.grow(&pvc, "128Mi", &["from 64 MiB to 128 MiB"], T).await;
    let image = format!("kube/kubernetes-dynamic-pvc-{}", uid_of(&pvc));
    assert_eq!(
        rbd_json(&c.bed, &["info", &image]).expect("rbd info")["size"],
        json!(128u64 << 20)
    );
    let pv = c.pv_of(&pvc).await;
    assert_eq!(capacity(&pv), "128Mi");
    // The API server's record says whose write grew the PV: ours.
    let writer = capacity_writer(&pv).unwrap_or_default();
    assert!(writer.starts_with("rbd-provisioner@"), "{writer}");
    let pending = Duration::from_secs(180);
    c.wait_condition("data", "FileSystemResizePending", pending)
        .await;
    cleanup(&c.bed, &c.admin, &c.ns, &[&pvc], &["kube"]).await;
}

#[tokio::test]
async fn expansion_needs_allow_volume_expansion() {
    let c = Scenario::new("nogrow").await;
    let class = c.class("fixed", &[], json!({})).await;
    let (pvc, _) = c.claim("data", &class).size("16Mi").bound().await;
    let err = c
        .request("data", "32Mi")
        .await
        .expect_err("refused without allowVolumeExpansion");
    assert!(err.to_string().contains("must support resize"), "{err}");
    cleanup(&c.bed, &c.admin, &c.ns, &[&pvc], &["kube"]).await;
}

#[tokio::test]
async fn csi_flavour_provisions_expands_and_deletes() {
    let c = Scenario::new("csi").await;
    let ceph = c.bed.ceph().await;
    let secret = format!("{}-csi", c.ns);
    csi_secret(&c.admin, "default", &secret, "kube", &c.bed.kube_key).await;
    let class = c
        .csi_class("csi", &secret, json!({"allowVolumeExpansion": true}))
        .await;
    let (pvc, _) = c.claim("data", &class).size("32Mi").bound().await;
    let pv = c.pv_of(&pvc).await;
    let spec = pv.spec.clone().unwrap();
    assert!(spec.rbd.is_none());
    let csi = spec.csi.unwrap();
    let image = format!("kubernetes-dynamic-pvc-{}", uid_of(&pvc));
    assert_eq!(csi.driver, "rbd.csi.ceph.com");
    assert_eq!(csi.volume_handle, image);
    assert_eq!(csi.fs_type.as_deref(), Some("ext4"));
    let attrs = csi.volume_attributes.unwrap();
    assert_eq!(
        (
            attrs["clusterID"].as_str(),
            attrs["pool"].as_str(),
            attrs["staticVolume"].as_str(),
            attrs["imageFeatures"].as_str()
        ),
        ("bed-ceph", "kube", "true", "layering")
    );
    let sr = csi.node_stage_secret_ref.unwrap();
    assert_eq!(
        (sr.name.as_deref(), sr.namespace.as_deref()),
        (Some(secret.as_str()), Some("default"))
    );

    // Nothing in Kubernetes hands a static csi claim to a resizer: the provisioner acts as one.
    c.request("data", "64Mi").await.unwrap();
    let grown = c.wait_condition("data", "FileSystemResizePending", T).await;
    assert_eq!(
        ceph.image_info("kube", &image).await.unwrap().size,
        64 << 20
    );
    assert_eq!(capacity(&c.pv_of(&grown).await), "64Mi");

    // Deletion works the same for csi volumes.
    c.delete_claim("data").await;
    c.wait_pv_gone(&uid_of(&pvc)).await;
    assert!(!image_exists(&ceph, "kube", &image).await);
}

#[tokio::test]
async fn csi_flavour_refuses_bad_settings() {
    let mut c = Scenario::new("csibad").await;
    let wrong = format!("{}-wrong", c.ns);
    let in_tree_format = json!({"key": c.bed.kube_key});
    secret(&c.admin, "default", &wrong, None, in_tree_format).await;
    // (class parameters, access modes, what the event must say)
    type Refusal<'a> = (Vec<(&'a str, &'a str)>, &'a [&'a str], Vec<&'a str>);
    let cases: Vec<Refusal> = vec![
        (
            // No clusterID is fine (the fsid is used, tests/compat.rs); a node-stage Secret
            // in the in-tree format is not, and the event gives the command that completes it.
            vec![("volumeFlavor", "csi"), ("csiNodeStageSecretName", &wrong)],
            &["ReadWriteOnce"],
            vec!["has no userID and no userKey", "--patch-file /dev/stdin"],
        ),
        (
            vec![
                ("volumeFlavor", "csi"),
                ("clusterID", "c"),
                ("csiNodeStageSecretName", &wrong),
                ("csiNodeStageSecretNamespace", "default"),
            ],
            &["ReadWriteOnce"],
            vec!["has no userID", "ceph-csi"],
        ),
        (
            vec![("volumeFlavor", "rbd")],
            &["ReadWriteMany"],
            vec!["ReadWriteMany is not supported"],
        ),
    ];
    for (i, (params, modes, needles)) in cases.into_iter().enumerate() {
        let class = c.class(&format!("bad{i}"), &params, json!({})).await;
        let name = format!("claim{i}");
        let pvc = c
            .claim(&name, &class)
            .size("8Mi")
            .modes(modes)
            .create()
            .await;
        c.wait_refused(&pvc, &needles, T).await;
    }
    assert!(c.prov.is_running());
}

#[tokio::test]
async fn block_volumes() {
    let c = Scenario::new("block").await;
    let secret = format!("{}-csi", c.ns);
    csi_secret(&c.admin, "default", &secret, "kube", &c.bed.kube_key).await;
    // The in-tree flavour by name (1.37 accepts spec.rbd PVs), next to csi.
    let rbd = c.class("rbd", &[("volumeFlavor", "rbd")], json!({})).await;
    let csi = c.csi_class("csi", &secret, json!({})).await;
    let mut made = Vec::new();
    for (name, class, modes) in [
        ("rbd-block", &rbd, &["ReadWriteOnce"]),
        ("csi-shared", &csi, &["ReadWriteMany"]),
        ("rbd-shared", &rbd, &["ReadWriteMany"]),
    ] {
        let claim = c.claim(name, class).size("16Mi").modes(modes);
        made.push(claim.spec(json!({"volumeMode": "Block"})).create().await);
    }
    let [a, b, bad] = made.try_into().unwrap();
    wait_bound(&c.admin, &c.ns, "rbd-block", T).await;
    wait_bound(&c.admin, &c.ns, "csi-shared", T).await;
    let pa = c.pv_of(&a).await.spec.unwrap();
    assert_eq!(pa.volume_mode.as_deref(), Some("Block"));
    assert_eq!(
        pa.rbd.unwrap().fs_type,
        None,
        "no filesystem on block volumes"
    );
    let pb = c.pv_of(&b).await.spec.unwrap();
    assert_eq!(pb.volume_mode.as_deref(), Some("Block"));
    assert_eq!(pb.access_modes.unwrap(), vec!["ReadWriteMany"]);
    assert_eq!(pb.csi.unwrap().fs_type, None);
    wait_event(
        &c.admin,
        &c.ns,
        &uid_of(&bad),
        "ProvisioningFailed",
        &["ReadWriteMany is not supported for Block volumes with the in-tree rbd flavour"],
        T,
    )
    .await;
    cleanup(&c.bed, &c.admin, &c.ns, &[&a, &b], &["kube"]).await;
}

#[tokio::test]
async fn clones_are_copy_on_write_and_survive_their_source() {
    let c = Scenario::new("clone").await;
    let ceph = c.bed.ceph().await;
    let class = c.class("fast", &[], json!({})).await;
    let (src, _) = c.claim("src", &class).size("32Mi").bound().await;
    let src_image = format!("kubernetes-dynamic-pvc-{}", uid_of(&src));

    let mut clones = Vec::new();
    for (name, size) in [("same", "32Mi"), ("bigger", "64Mi")] {
        clones.push(
            c.claim(name, &class)
                .size(size)
                .spec(data_source("src"))
                .create()
                .await,
        );
    }
    let [same, bigger] = clones.try_into().unwrap();
    wait_bound(&c.admin, &c.ns, "same", T).await;
    wait_bound(&c.admin, &c.ns, "bigger", T).await;
    let same_image = format!("kubernetes-dynamic-pvc-{}", uid_of(&same));
    let info = ceph.image_info("kube", &same_image).await.unwrap();
    let parent = info.parent.expect("a copy-on-write clone has a parent");
    assert_eq!(
        (parent.pool.as_str(), parent.image.as_str()),
        ("kube", src_image.as_str())
    );
    assert_eq!(parent.snap, format!("clone-for-{same_image}"));
    assert_eq!(info.features, 1, "layering only");
    assert_eq!(info.size, 32 << 20);
    let big = ceph
        .image_info(
            "kube",
            &format!("kubernetes-dynamic-pvc-{}", uid_of(&bigger)),
        )
        .await
        .unwrap();
    assert_eq!(big.size, 64 << 20, "a bigger clone is grown");
    assert!(big.parent.is_some());

    // Deleting a clone drops its snapshot on the source.
    c.delete_claim("bigger").await;
    wait_for("clone snapshot removed from the source", T, || async {
        let snaps = ceph.snap_list("kube", &src_image).await.ok()?;
        (snaps.len() == 1).then_some(())
    })
    .await;

    // Deleting the source flattens the remaining clone first: it keeps working.
    c.delete_claim("src").await;
    c.wait_pv_gone(&uid_of(&src)).await;
    assert!(!image_exists(&ceph, "kube", &src_image).await);
    let info = ceph
        .image_info("kube", &same_image)
        .await
        .expect("clone survives its source");
    assert!(info.parent.is_none(), "flattened");
    wait_for(
        "source purged from the trash",
        Duration::from_secs(120),
        || async {
            (!ceph
                .trash_list("kube")
                .await
                .ok()?
                .iter()
                .any(|e| e.name == src_image))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        wait_bound(&c.admin, &c.ns, "same", T)
            .await
            .status
            .unwrap()
            .phase
            .as_deref(),
        Some("Bound")
    );
    c.delete_claim("same").await;
    c.wait_pv_gone(&uid_of(&same)).await;
}

#[tokio::test]
async fn clone_refusals() {
    let c = Scenario::new("noclone").await;
    let ceph = c.bed.ceph().await;
    let class = c.class("a", &[], json!({})).await;
    let other = c.class("b", &[], json!({})).await;
    // A class nobody serves: its claims stay Pending.
    storage_class(
        &c.admin,
        &format!("{}-nobody", c.ns),
        "nobody.test/none",
        &[],
        json!({}),
    )
    .await;
    let (src, _) = c.claim("src", &class).size("32Mi").bound().await;
    c.claim("pending", &format!("{}-nobody", c.ns))
        .size("32Mi")
        .create()
        .await;
    let cases: Vec<(&str, &str, &str, &str, &[&str])> = vec![
        (
            "smaller",
            class.as_str(),
            "16Mi",
            "src",
            &["asks for 16 MiB but its source", "has 32 MiB"],
        ),
        (
            "across",
            other.as_str(),
            "32Mi",
            "src",
            &["must use the same StorageClass"],
        ),
        (
            "missing",
            class.as_str(),
            "32Mi",
            "no-such-claim",
            &["no-such-claim does not exist"],
        ),
    ];
    for (name, class, size, source, needles) in cases {
        let pvc = c
            .claim(name, class)
            .size(size)
            .spec(data_source(source))
            .create()
            .await;
        c.wait_refused(&pvc, needles, T).await;
    }
    // An unbound source is refused (and retried with backoff until it is bound).
    let pvc = c
        .claim("unbound", &class)
        .size("32Mi")
        .spec(data_source("pending"))
        .create()
        .await;
    wait_event(
        &c.admin,
        &c.ns,
        &uid_of(&pvc),
        "ProvisioningFailed",
        &["pending is not bound yet"],
        T,
    )
    .await;
    assert_eq!(
        ceph.snap_list("kube", &format!("kubernetes-dynamic-pvc-{}", uid_of(&src)))
            .await
            .unwrap()
            .len(),
        0,
        "no snapshot taken for refused clones"
    );
    cleanup(&c.bed, &c.admin, &c.ns, &[&src], &["kube"]).await;
}

/// WaitForFirstConsumer, the provisioner's own branch: on Kubernetes 1.20 the binder does not
/// hand a WaitForFirstConsumer claim over before a node is selected, so waiting for the
/// hand-over alone would keep the image away. Here the test hands the claim over itself
/// (sets the storage-provisioner annotation as admin) with no selected node: only our
/// WaitForFirstConsumer check stands between the claim and a new image. After the
/// provisioner has logged that it handled the claim and decided to wait, there must be no
/// image (checked with the rbd CLI) and no PV; once the node is selected (as the scheduler
/// would, this bed has none) the claim is provisioned.
#[tokio::test]
async fn wait_for_first_consumer() {
    let c = Scenario::new("wffc").await;
    let class = c
        .class(
            "late",
            &[],
            json!({"volumeBindingMode": "WaitForFirstConsumer"}),
        )
        .await;
    let pvc = c.claim("data", &class).size("8Mi").create().await;
    let image = format!("kubernetes-dynamic-pvc-{}", uid_of(&pvc));
    c.pvcs()
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "volume.beta.kubernetes.io/storage-provisioner": c.name,
            }}})),
        )
        .await
        .unwrap();
    wait_log(
        &c.prov,
        &[
            &format!("claim={}/data", c.ns),
            "waiting for the first consumer to be scheduled",
        ],
        T,
    )
    .await;
    let pending = c.pvcs().get("data").await.unwrap();
    assert_eq!(pending.status.unwrap().phase.as_deref(), Some("Pending"));
    assert!(
        !rbd_exists(&c.bed, "kube", &image),
        "no image before a node is chosen"
    );
    assert!(
        c.pvs()
            .get_opt(&format!("pvc-{}", uid_of(&pvc)))
            .await
            .unwrap()
            .is_none(),
        "no PV before a node is chosen"
    );
    c.pvcs()
        .patch(
            "data",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": "node-1"}}})),
        )
        .await
        .unwrap();
    wait_bound(&c.admin, &c.ns, "data", T).await;
    let info = rbd_json(&c.bed, &["info", &format!("kube/{image}")])
        .expect("the rbd CLI sees the image once a node is chosen");
    assert_eq!(info["size"], json!(8u64 << 20), "{info}");
    cleanup(&c.bed, &c.admin, &c.ns, &[&pvc], &["kube"]).await;
}
