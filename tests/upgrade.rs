//! The upgrade path from Kubernetes 1.20 to 1.37 on one Ceph cluster: volumes provisioned on
//! 1.20 as `spec.rbd` and moved by `migrate-to-csi` are accepted by a 1.37 control plane, bind
//! there, and are grown and deleted by the provisioner running against 1.37.
//!
//! Needs both control planes of a bed (`RBDP_KUBE=1.37 hack/bed-up.sh`, as `hack/test.sh`
//! starts them); it runs the same way whichever of the two `RBDP_BED` names. The claim and PV
//! objects are recreated on the 1.37 plane as an upgrade would carry them over (same names,
//! annotations, finalizers, spec); only the claim's uid is new, so the PV's `claimRef.uid` is
//! set to it, as the PV binder requires.

use testbed as common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

/// (the 1.20 bed, the 1.37 bed), whichever `RBDP_BED` names.
fn planes() -> (Bed, Bed) {
    let bed = Bed::load();
    let peer = bed.peer.clone().unwrap_or_else(|| {
        panic!(
            "the upgrade test needs both control planes on one Ceph, and {} names no other: \
             start them with RBDP_KUBE=1.37 hack/bed-up.sh (hack/test.sh does)",
            bed.dir.display()
        )
    });
    let peer = Bed::load_from(peer);
    let (old, new) = if bed.kube_minor < peer.kube_minor {
        (bed, peer)
    } else {
        (peer, bed)
    };
    assert!(
        old.kube_minor < 31 && new.kube_minor >= 31,
        "want a plane < 1.31 and one >= 1.31, got 1.{} and 1.{}",
        old.kube_minor,
        new.kube_minor
    );
    (old, new)
}

/// The claim as an upgrade carries it over: identity and spec, no server-set fields.
fn carried_claim(c: &PersistentVolumeClaim) -> PersistentVolumeClaim {
    let mut v = serde_json::to_value(c).unwrap();
    v.as_object_mut().unwrap().remove("status");
    let m = v["metadata"].as_object_mut().unwrap();
    m.retain(|k, _| {
        ["name", "namespace", "labels", "annotations", "finalizers"].contains(&k.as_str())
    });
    serde_json::from_value(v).unwrap()
}

/// The PV as an upgrade carries it over, bound to the claim's new uid.
fn carried_volume(pv: &PersistentVolume, claim_uid: &str) -> PersistentVolume {
    let mut v = serde_json::to_value(pv).unwrap();
    v.as_object_mut().unwrap().remove("status");
    let m = v["metadata"].as_object_mut().unwrap();
    m.retain(|k, _| ["name", "labels", "annotations", "finalizers"].contains(&k.as_str()));
    let r = v["spec"]["claimRef"].as_object_mut().unwrap();
    r.remove("resourceVersion");
    r.insert("uid".into(), json!(claim_uid));
    serde_json::from_value(v).unwrap()
}

fn image_size(bed: &Bed, image: &str) -> u64 {
    rbd_info(bed, "kube", image).expect("rbd info of the image")["size"]
        .as_u64()
        .unwrap()
}

async fn secrets(client: &Client, bed: &Bed, ns: &str) {
    namespace(client, ns).await;
    key_secret(
        client,
        "kube-system",
        &format!("{ns}-admin"),
        &bed.admin_key,
    )
    .await;
    key_secret(client, "default", &format!("{ns}-user"), &bed.kube_key).await;
    csi_secret(
        client,
        "default",
        &format!("{ns}-csi"),
        "kube",
        &bed.kube_key,
    )
    .await;
}

#[tokio::test]
async fn volumes_migrated_on_1_20_are_bound_grown_and_deleted_on_1_37() {
    let (old, new) = planes();
    let ns = unique("upgrade");
    let name = format!("{ns}.test/rbd");
    let class = format!("{ns}-class");
    let csi_secret_name = format!("{ns}-csi");
    // Dropped last to first: the 1.37 plane's objects, then the 1.20 plane's.
    let _clean_old = Cleanup::new(&old).namespace(&ns).prefix(&format!("{ns}-"));
    let _clean_new = Cleanup::new(&new).namespace(&ns).prefix(&format!("{ns}-"));
    let (oa, na) = (old.admin().await, new.admin().await);
    secrets(&oa, &old, &ns).await;
    secrets(&na, &new, &ns).await;
    let (adm, usr) = (format!("{ns}-admin"), format!("{ns}-user"));
    let base: Vec<(&str, &str)> = vec![
        ("monitors", &old.monitors),
        ("adminId", "admin"),
        ("adminSecretName", &adm),
        ("adminSecretNamespace", "kube-system"),
        ("pool", "kube"),
        ("userId", "kube"),
        ("userSecretName", &usr),
        ("userSecretNamespace", "default"),
    ];

    // 1.20: the walkthrough's kind of class (no volumeFlavor): spec.rbd volumes.
    storage_class(
        &oa,
        &class,
        &name,
        &base,
        json!({"allowVolumeExpansion": true}),
    )
    .await;
    let p_old = Provisioner::start(&old, &name, &[]).await;
    let modes = [("fs", json!({})), ("blk", json!({"volumeMode": "Block"}))];
    for (claim_name, extra) in &modes {
        claim(
            &oa,
            &ns,
            claim_name,
            &class,
            "32Mi",
            &["ReadWriteOnce"],
            extra.clone(),
        )
        .await;
    }
    let old_pvcs: Api<PersistentVolumeClaim> = Api::namespaced(oa.clone(), &ns);
    let old_pvs: Api<PersistentVolume> = Api::all(oa.clone());
    let mut images = Vec::new();
    for (claim_name, _) in &modes {
        let c = wait_bound(&oa, &ns, claim_name, T).await;
        let pv = old_pvs.get(&format!("pvc-{}", uid_of(&c))).await.unwrap();
        assert!(
            pv.spec.as_ref().unwrap().rbd.is_some(),
            "1.20 gets spec.rbd"
        );
        images.push(format!("kubernetes-dynamic-pvc-{}", uid_of(&c)));
    }

    // Before the upgrade: migrate-to-csi on 1.20, as the README says, with ceph-csi installed.
    csi_driver(&oa, domain::params::DEFAULT_CSI_DRIVER).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rbd-provisioner"))
        .arg("--kubeconfig")
        .arg(&old.kubeconfig)
        .args([
            "migrate-to-csi",
            "--storage-class",
            &class,
            "--provisioner-name",
            &name,
        ])
        .args(["--cluster-id", "rbdp-upgrade"])
        .args(["--node-stage-secret", &format!("default/{csi_secret_name}")])
        .env_remove("KUBECONFIG_PATH")
        .env_remove("PROVISIONER_NAME")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run migrate-to-csi");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "migrate-to-csi failed:\n{text}");
    assert_eq!(text.matches("migrated").count(), 2, "{text}");
    let mut carried = Vec::new();
    for (claim_name, _) in &modes {
        let c = wait_bound(&oa, &ns, claim_name, T).await;
        let pv = old_pvs
            .get(c.spec.as_ref().unwrap().volume_name.as_deref().unwrap())
            .await
            .unwrap();
        let csi = pv
            .spec
            .as_ref()
            .unwrap()
            .csi
            .clone()
            .expect("migrated to csi");
        assert_eq!(
            csi.volume_handle,
            format!("kubernetes-dynamic-pvc-{}", uid_of(&c))
        );
        carried.push((carried_claim(&c), pv));
    }
    // The 1.20 cluster is gone: its provisioner stops, and its objects are removed without
    // touching the images (Retain, finalizers dropped).
    drop(p_old);
    for (c, pv) in &carried {
        let pv_name = pv.metadata.name.as_deref().unwrap();
        old_pvs
            .patch(
                pv_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})),
            )
            .await
            .unwrap();
        old_pvcs
            .delete(
                c.metadata.name.as_deref().unwrap(),
                &DeleteParams::default(),
            )
            .await
            .unwrap();
        old_pvs
            .patch(
                pv_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await
            .unwrap();
        let _ = old_pvs.delete(pv_name, &DeleteParams::default()).await;
    }
    for image in &images {
        assert!(rbd_exists(&old, "kube", image), "{image} survives the move");
    }

    // 1.37: the class as the README says to set it after migrating, then the objects.
    let csi_params: Vec<(&str, &str)> = vec![
        ("volumeFlavor", "csi"),
        ("clusterID", "rbdp-upgrade"),
        ("csiNodeStageSecretName", &csi_secret_name),
        ("csiNodeStageSecretNamespace", "default"),
    ];
    let params: Vec<(&str, &str)> = base.iter().chain(&csi_params).copied().collect();
    storage_class(
        &na,
        &class,
        &name,
        &params,
        json!({"allowVolumeExpansion": true}),
    )
    .await;
    let new_pvcs: Api<PersistentVolumeClaim> = Api::namespaced(na.clone(), &ns);
    let new_pvs: Api<PersistentVolume> = Api::all(na.clone());
    let p_new = Provisioner::start(&new, &name, &[]).await;
    for (c, pv) in &carried {
        let created = new_pvcs.create(&PostParams::default(), c).await.unwrap();
        new_pvs
            .create(
                &PostParams::default(),
                &carried_volume(pv, &uid_of(&created)),
            )
            .await
            .unwrap_or_else(|e| panic!("1.37 accepts the migrated PV: {e}"));
    }
    for ((c, pv), image) in carried.iter().zip(&images) {
        let claim_name = c.metadata.name.as_deref().unwrap();
        let bound = wait_bound(&na, &ns, claim_name, T).await;
        let pv_name = pv.metadata.name.as_deref().unwrap();
        assert_eq!(
            bound.spec.as_ref().unwrap().volume_name.as_deref(),
            Some(pv_name)
        );
        let now = new_pvs.get(pv_name).await.unwrap();
        assert_eq!(
            now.spec
                .as_ref()
                .unwrap()
                .claim_ref
                .as_ref()
                .unwrap()
                .uid
                .as_deref(),
            Some(uid_of(&bound).as_str())
        );
        // Grown by the provisioner on 1.37 (no external resizer here).
        new_pvcs
            .patch(
                claim_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "64Mi"}}}})),
            )
            .await
            .unwrap();
        let grown = wait_for(&format!("{claim_name} resized"), T, || async {
            let c = new_pvcs.get(claim_name).await.ok()?;
            let s = c.status.as_ref()?;
            let pending = s
                .conditions
                .as_ref()?
                .iter()
                .any(|x| x.type_ == "FileSystemResizePending" && x.status == "True");
            pending.then_some(c)
        })
        .await;
        assert_eq!(image_size(&new, image), 64 << 20, "{image} grown");
        let pv_now = new_pvs.get(pv_name).await.unwrap();
        assert_eq!(
            pv_now.spec.as_ref().unwrap().capacity.as_ref().unwrap()["storage"].0,
            "64Mi"
        );
        let st = grown.status.as_ref().unwrap();
        assert_eq!(
            st.allocated_resources
                .as_ref()
                .map(|a| a["storage"].0.as_str()),
            Some("64Mi"),
            "{claim_name}: status.allocatedResources"
        );
        assert_eq!(
            st.allocated_resource_statuses
                .as_ref()
                .and_then(|a| a.get("storage"))
                .map(String::as_str),
            Some("NodeResizePending"),
            "{claim_name}: status.allocatedResourceStatuses"
        );
    }
    // Deleted by the provisioner on 1.37: PV and image. The images carry the 1.20 cluster's
    // stamp (the uid of its kube-system namespace). An in-place upgrade keeps that namespace,
    // and with it the stamp's match; this bed's 1.37 plane is another cluster (objects carried
    // over as from a backup), so the provisioner first refuses, says how to hand the image
    // over, and deletes once the operator has.
    let cluster = cluster_uid(&na).await;
    for (i, ((c, pv), image)) in carried.iter().zip(&images).enumerate() {
        let pv_name = pv.metadata.name.clone().unwrap();
        let hand_over = || {
            rbd_cli(
                &new,
                &[
                    "image-meta",
                    "set",
                    &format!("kube/{image}"),
                    "rbd-provisioner.ceph.com/cluster",
                    &cluster,
                ],
            )
        };
        if i > 0 {
            hand_over();
        }
        new_pvcs
            .delete(
                c.metadata.name.as_deref().unwrap(),
                &DeleteParams::default(),
            )
            .await
            .unwrap();
        if i == 0 {
            let refused = wait_for(&format!("deletion of {pv_name} refused"), T, || async {
                Api::<k8s_openapi::api::core::v1::Event>::namespaced(na.clone(), "default")
                    .list(&Default::default())
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .find(|e| {
                        e.involved_object.name.as_deref() == Some(pv_name.as_str())
                            && e.reason.as_deref() == Some("VolumeFailedDelete")
                    })
                    .and_then(|e| e.message)
            })
            .await;
            assert!(
                refused.contains("another Kubernetes cluster")
                    && refused.contains(&format!("rbd-provisioner.ceph.com/cluster {cluster}")),
                "{refused}"
            );
            assert!(
                rbd_exists(&new, "kube", image),
                "refused, yet {image} is gone"
            );
            assert!(new_pvs.get_opt(&pv_name).await.unwrap().is_some());
            hand_over();
        }
        wait_for(&format!("{pv_name} deleted"), T, || async {
            new_pvs
                .get_opt(&pv_name)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        })
        .await;
        wait_for(&format!("{image} gone from Ceph"), T, || async {
            (!rbd_exists(&new, "kube", image)).then_some(())
        })
        .await;
    }
    assert_no_keys(&new, &na, &p_new, &[&ns]).await;
}
