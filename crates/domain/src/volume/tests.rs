use super::*;
use crate::{fixtures, params};
use k8s_openapi::api::core::v1::{PersistentVolumeClaimSpec, VolumeResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

const UID: &str = "0b5a3f4e-1111-2222-3333-444455556666";

fn pvc(size: Option<&str>, modes: &[&str], volume_mode: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
            resources: Some(VolumeResourceRequirements {
                requests: size
                    .map(|s| BTreeMap::from([("storage".to_string(), Quantity(s.into()))])),
                ..Default::default()
            }),
            volume_mode: volume_mode.map(Into::into),
            storage_class_name: Some("ceph-rbd".into()),
            ..Default::default()
        }),
        ..fixtures::claim("apps", "data", UID, None)
    }
}

fn class(reclaim: Option<&str>, mount_options: Option<Vec<&str>>) -> StorageClass {
    StorageClass {
        metadata: ObjectMeta {
            name: Some("ceph-rbd".into()),
            ..Default::default()
        },
        provisioner: "ceph.com/rbd".into(),
        reclaim_policy: reclaim.map(Into::into),
        mount_options: mount_options.map(|m| m.into_iter().map(Into::into).collect()),
        ..Default::default()
    }
}

fn params(extra: &[(&str, &str)]) -> ClassParams {
    let mut m: BTreeMap<String, String> = [
        ("monitors", "10.0.0.1:6789,10.0.0.2:6789"),
        ("adminSecretName", "ceph-secret"),
        ("adminSecretNamespace", "kube-system"),
        ("pool", "kube"),
        ("userId", "kube"),
        ("userSecretName", "ceph-kube-secret"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        m.insert(k.to_string(), v.to_string());
    }
    params::parse(&m).unwrap()
}

/// The PV `ceph.com/rbd` builds.
fn pv_for(
    req: &ClaimRequest,
    k: &StorageClass,
    p: &ClassParams,
    source: VolumeSourceKind<'_>,
    image: &str,
) -> PersistentVolume {
    build_pv(&PvInput {
        claim: req,
        class: k,
        params: p,
        source,
        image,
        provisioner: "ceph.com/rbd",
        place: None,
    })
}

#[test]
fn names() {
    assert_eq!(image_name(UID), format!("kubernetes-dynamic-pvc-{UID}"));
    assert_eq!(pv_name(UID), format!("pvc-{UID}"));
}

#[test]
fn mib_rounding() {
    assert_eq!(round_up_mib(1), Some(MIB));
    assert_eq!(round_up_mib(MIB as u128), Some(MIB));
    assert_eq!(round_up_mib(MIB as u128 + 1), Some(2 * MIB));
    assert_eq!(round_up_mib(1_000_000_000), Some(954 * MIB));
    assert_eq!(round_up_mib(u128::MAX), None);
    assert_eq!(capacity_quantity(500 * MIB).0, "500Mi");
    assert_eq!(capacity_quantity(2048 * MIB).0, "2Gi");
    assert_eq!(capacity_quantity(954 * MIB).0, "954Mi");
}

#[test]
fn request_sizes() {
    let r = claim_request(&pvc(Some("500Mi"), &["ReadWriteOnce"], None)).unwrap();
    assert_eq!(r.size, 500 * MIB);
    assert_eq!(r.volume_mode, VolumeMode::Filesystem);
    let r = claim_request(&pvc(Some("1G"), &["ReadWriteOnce"], None)).unwrap();
    assert_eq!(r.size, 954 * MIB, "1G = 953.67 MiB rounds up");
    let r = claim_request(&pvc(Some("1"), &["ReadWriteOnce"], None)).unwrap();
    assert_eq!(r.size, MIB);
    assert_eq!(
        claim_request(&pvc(Some("0"), &["ReadWriteOnce"], None)),
        Err(ClaimError::ZeroSize("0".into()))
    );
    assert!(matches!(
        claim_request(&pvc(Some("ten gigs"), &["ReadWriteOnce"], None)),
        Err(ClaimError::BadSize(_))
    ));
    assert_eq!(
        claim_request(&pvc(None, &["ReadWriteOnce"], None)),
        Err(ClaimError::NoSize)
    );
}

#[test]
fn request_rejects_selector_and_odd_modes() {
    let mut c = pvc(Some("1Gi"), &["ReadWriteOnce"], None);
    c.spec.as_mut().unwrap().selector = Some(LabelSelector {
        match_labels: Some(BTreeMap::from([("tier".into(), "db".into())])),
        ..Default::default()
    });
    let e = claim_request(&c).unwrap_err();
    assert_eq!(e, ClaimError::Selector);
    assert!(e.to_string().contains("remove spec.selector"));
    assert_eq!(
        claim_request(&pvc(Some("1Gi"), &[], None)),
        Err(ClaimError::NoAccessModes)
    );
    assert!(matches!(
        claim_request(&pvc(Some("1Gi"), &["ReadWriteOnce"], Some("Raw"))),
        Err(ClaimError::VolumeMode(_))
    ));
    let mut c = pvc(Some("1Gi"), &["ReadWriteOnce"], None);
    c.metadata.uid = None;
    assert_eq!(claim_request(&c), Err(ClaimError::NoUid));
}

#[test]
fn access_modes() {
    let ok = |modes: &[&str], vm, flavor| {
        check_access_modes(
            &claim_request(&pvc(Some("1Gi"), modes, vm)).unwrap(),
            flavor,
        )
    };
    assert!(ok(&["ReadWriteOnce", "ReadOnlyMany"], None, Flavor::Rbd).is_ok());
    assert!(ok(&["ReadWriteOnce"], Some("Block"), Flavor::Rbd).is_ok());
    let e = ok(&["ReadWriteMany"], None, Flavor::Rbd).unwrap_err();
    assert!(
        e.to_string()
            .contains("ReadWriteMany is not supported for Filesystem"),
        "{e}"
    );
    assert!(ok(&["ReadWriteMany"], None, Flavor::Csi).is_err());
    assert!(ok(&["ReadWriteMany"], Some("Block"), Flavor::Rbd).is_err());
    assert!(ok(&["ReadWriteMany"], Some("Block"), Flavor::Csi).is_ok());
    assert!(ok(&["ReadWriteOncePod"], None, Flavor::Rbd).is_err());
}

#[test]
fn a_repeated_access_mode_is_asked_for_once() {
    let modes = [
        "ReadOnlyMany",
        "ReadWriteOnce",
        "ReadOnlyMany",
        "ReadWriteOnce",
    ];
    let req = claim_request(&pvc(Some("1Gi"), &modes, None)).unwrap();
    assert_eq!(req.access_modes, vec!["ReadOnlyMany", "ReadWriteOnce"]);
}

#[test]
fn rbd_pv() {
    let req = claim_request(&pvc(
        Some("500Mi"),
        &["ReadWriteOnce", "ReadOnlyMany"],
        None,
    ))
    .unwrap();
    let k = class(None, Some(vec!["discard"]));
    let p = params(&[]);
    let image = image_name(&req.uid);
    let pv = pv_for(&req, &k, &p, VolumeSourceKind::Rbd, &image);
    assert_eq!(pv.metadata.name.as_deref(), Some(&*pv_name(UID)));
    let ann = pv.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann[ANN_PROVISIONED_BY], "ceph.com/rbd");
    assert_eq!(ann[ANN_ADMIN_SECRET], "kube-system/ceph-secret");
    assert_eq!(ann[ANN_POOL], "kube");
    assert_eq!(ann[ANN_IMAGE], image);
    assert_eq!(ann[ANN_MONITORS], "10.0.0.1:6789,10.0.0.2:6789");
    assert!(!ann.values().any(|v| v.contains("key")), "no key material");
    assert_eq!(pv.metadata.finalizers, Some(vec![FINALIZER.to_string()]));
    let s = pv.spec.unwrap();
    assert_eq!(s.capacity.unwrap()["storage"].0, "500Mi");
    assert_eq!(
        s.access_modes.unwrap(),
        vec!["ReadWriteOnce", "ReadOnlyMany"]
    );
    let cr = s.claim_ref.unwrap();
    assert_eq!(
        (
            cr.namespace.as_deref(),
            cr.name.as_deref(),
            cr.uid.as_deref()
        ),
        (Some("apps"), Some("data"), Some(UID))
    );
    assert_eq!(
        s.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(s.storage_class_name.as_deref(), Some("ceph-rbd"));
    assert_eq!(s.mount_options, Some(vec!["discard".to_string()]));
    assert_eq!(s.volume_mode.as_deref(), Some("Filesystem"));
    assert!(s.csi.is_none());
    let rbd = s.rbd.unwrap();
    assert_eq!(rbd.monitors, vec!["10.0.0.1:6789", "10.0.0.2:6789"]);
    assert_eq!(rbd.pool.as_deref(), Some("kube"));
    assert_eq!(rbd.image, image);
    assert_eq!(rbd.user.as_deref(), Some("kube"));
    assert_eq!(rbd.fs_type.as_deref(), Some("ext4"));
    assert_eq!(rbd.keyring, None);
    let sr = rbd.secret_ref.unwrap();
    assert_eq!(
        (sr.name.as_deref(), sr.namespace.as_deref()),
        (Some("ceph-kube-secret"), Some("apps")),
        "user secret defaults to the claim's namespace"
    );
}

#[test]
fn retain_block_and_explicit_user_namespace() {
    let req = claim_request(&pvc(Some("1Gi"), &["ReadWriteOnce"], Some("Block"))).unwrap();
    let k = class(Some("Retain"), None);
    let p = params(&[("userSecretNamespace", "ceph"), ("fsType", "xfs")]);
    let pv = pv_for(&req, &k, &p, VolumeSourceKind::Rbd, "img");
    assert_eq!(
        pv.metadata.finalizers, None,
        "Retain volumes are never deleted by us"
    );
    let s = pv.spec.unwrap();
    assert_eq!(
        s.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
    assert_eq!(s.volume_mode.as_deref(), Some("Block"));
    assert_eq!(s.mount_options, None);
    assert_eq!(s.capacity.unwrap()["storage"].0, "1Gi");
    let rbd = s.rbd.unwrap();
    assert_eq!(rbd.fs_type, None, "block volumes carry no fsType");
    assert_eq!(rbd.secret_ref.unwrap().namespace.as_deref(), Some("ceph"));
}

#[test]
fn csi_pv() {
    let req = claim_request(&pvc(Some("2Gi"), &["ReadWriteOnce"], None)).unwrap();
    let k = class(None, None);
    let p = params(&[
        ("volumeFlavor", "csi"),
        ("clusterID", "ceph-1"),
        ("csiNodeStageSecretName", "csi-rbd"),
        ("csiNodeStageSecretNamespace", "ceph-csi"),
    ]);
    let vol = CsiVolume {
        cluster_id: ClusterId::Class("ceph-1".into()),
        node_stage_secret: p.csi_secret.clone().unwrap(),
    };
    let pv = pv_for(&req, &k, &p, VolumeSourceKind::Csi(&vol), "img-1");
    assert!(
        !pv.metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(ANN_CLUSTER_ID_SOURCE),
        "clusterID from the class: no annotation"
    );
    let s = pv.spec.unwrap();
    assert!(s.rbd.is_none());
    let csi = s.csi.unwrap();
    assert_eq!(csi.driver, CSI_DRIVER);
    let mut rook = p.clone();
    rook.csi_driver = "rook-ceph.rbd.csi.ceph.com".into();
    let pv = pv_for(&req, &k, &rook, VolumeSourceKind::Csi(&vol), "img-1");
    assert_eq!(
        pv.spec.unwrap().csi.unwrap().driver,
        "rook-ceph.rbd.csi.ceph.com"
    );
    assert_eq!(csi.volume_handle, "img-1");
    assert_eq!(csi.fs_type.as_deref(), Some("ext4"));
    let attrs = csi.volume_attributes.unwrap();
    assert_eq!(attrs["clusterID"], "ceph-1");
    assert_eq!(attrs["pool"], "kube");
    assert_eq!(attrs["staticVolume"], "true");
    assert_eq!(attrs["imageFeatures"], "layering");
    assert!(
        !attrs.contains_key("mounter") && !attrs.contains_key("mapOptions"),
        "nothing the class did not ask for"
    );
    let sr = csi.node_stage_secret_ref.unwrap();
    assert_eq!(
        (sr.name.as_deref(), sr.namespace.as_deref()),
        (Some("csi-rbd"), Some("ceph-csi"))
    );
    let mut nbd = p.clone();
    nbd.node_map.mounter = Some("rbd-nbd".into());
    nbd.node_map.map_options = Some("nbd:try-netlink".into());
    let pv = pv_for(&req, &k, &nbd, VolumeSourceKind::Csi(&vol), "img-1");
    let attrs = pv.spec.unwrap().csi.unwrap().volume_attributes.unwrap();
    assert_eq!(
        (
            attrs.get("mounter").map(String::as_str),
            attrs.get("mapOptions").map(String::as_str),
            attrs.get("unmapOptions")
        ),
        (Some("rbd-nbd"), Some("nbd:try-netlink"), None)
    );
}

/// The walkthrough's class on a csi cluster: no clusterID (the fsid is used, and the PV
/// says so), no csiNodeStageSecretName (the companion Secret is named).
#[test]
fn csi_pv_with_fsid_and_companion_secret() {
    let req = claim_request(&pvc(Some("500Mi"), &["ReadWriteOnce"], None)).unwrap();
    let k = class(None, None);
    let p = params(&[("userSecretNamespace", "default")]);
    assert_eq!((p.cluster_id.as_ref(), p.csi_secret.as_ref()), (None, None));
    let fsid = "3f1e2a57-4c1b-4b0e-9b33-0c8e1d2f6a10";
    let csi = CsiVolume {
        cluster_id: ClusterId::Fsid(fsid.into()),
        node_stage_secret: companion_secret(&p.user_secret("apps")),
    };
    let pv = pv_for(&req, &k, &p, VolumeSourceKind::Csi(&csi), "img-2");
    assert_eq!(
        pv.metadata.annotations.as_ref().unwrap()[ANN_CLUSTER_ID_SOURCE],
        "ceph-fsid"
    );
    let c = pv.spec.unwrap().csi.unwrap();
    assert_eq!(c.volume_attributes.unwrap()["clusterID"], fsid);
    let sr = c.node_stage_secret_ref.unwrap();
    assert_eq!(
        (sr.namespace.as_deref(), sr.name.as_deref()),
        (Some("default"), Some("ceph-kube-secret-csi"))
    );
}

fn fields(names: &[&str]) -> SecretFields {
    names.iter().map(|n| n.to_string()).collect()
}

fn sref(ns: &str, name: &str) -> SecretRef {
    SecretRef {
        namespace: ns.into(),
        name: name.into(),
    }
}

/// What provisioning found, for class `class_name` and Ceph user `kube`.
fn facts<'a>(
    class_name: &'a str,
    class_secret: Option<&'a SecretRef>,
    (user_secret, user_fields): (&'a SecretRef, &'a SecretFields),
    target_fields: Option<&'a SecretFields>,
) -> NodeStageFacts<'a> {
    NodeStageFacts {
        class_name,
        class_secret,
        user_secret,
        user_fields,
        target_fields,
        user_id: "kube",
    }
}

#[test]
fn node_stage_secret_is_chosen_in_order() {
    let user = sref("default", "ceph-kube-secret");
    let csi_user = fields(&["userID", "userKey"]);
    let rbd_user = fields(&["key"]);
    let facts = |class_secret, user_fields, target_fields| {
        facts(
            "ceph-rbd",
            class_secret,
            (&user, user_fields),
            target_fields,
        )
    };
    let class_secret = sref("ceph-csi", "csi-rbd-secret");
    // 1. The class's Secret, when complete, whatever the user Secret holds.
    assert_eq!(
        choose_node_stage(&facts(Some(&class_secret), &rbd_user, Some(&csi_user))),
        Ok(NodeStage::Class(class_secret.clone()))
    );
    // 2. Without one: the user Secret in ceph-csi's format (Rook's, ceph-csi's).
    assert_eq!(
        choose_node_stage(&facts(None, &csi_user, None)),
        Ok(NodeStage::UserSecret(user.clone()))
    );
    // 3. Else its companion <name>-csi next to it.
    assert_eq!(
        choose_node_stage(&facts(None, &rbd_user, Some(&csi_user))),
        Ok(NodeStage::Companion(sref(
            "default",
            "ceph-kube-secret-csi"
        )))
    );
    // A user Secret with both formats is used as it is.
    let both = fields(&["key", "userID", "userKey"]);
    assert_eq!(
        choose_node_stage(&facts(None, &both, None))
            .unwrap()
            .secret(),
        &user
    );
    // A class's incomplete Secret is not replaced by the user Secret behind its back.
    assert!(choose_node_stage(&facts(Some(&class_secret), &csi_user, None)).is_err());
}

#[test]
fn the_walkthrough_secret_gets_the_command_that_creates_the_companion() {
    let user = sref("default", "ceph-kube-secret");
    let key = fields(&["key"]);
    let e = choose_node_stage(&facts("ceph-rbd", None, (&user, &key), None)).unwrap_err();
    let cmd = e.command.clone().expect("a command");
    assert_eq!(
        cmd,
        r#"kubectl -n default get secret ceph-kube-secret -o go-template='{"apiVersion":"v1","kind":"Secret","metadata":{"name":"ceph-kube-secret-csi","namespace":"default"},"type":"Opaque","stringData":{"userID":"kube"},"data":{"userKey":"{{.data.key}}"}}' | kubectl create -f -"#
    );
    let text = e.to_string();
    assert!(text.contains(&format!("`{cmd}`")), "{text}");
    assert!(
        text.contains("StorageClass ceph-rbd names none")
            && text.contains("holds only key")
            && text.contains("default/ceph-kube-secret-csi does not exist"),
        "{text}"
    );
    assert!(text.len() < 1000, "fits an event: {}", text.len());
    // With the longest names the tests use, too.
    let user = sref("default", "compat-1a2b3c4d-ceph-kube-secret");
    let long = choose_node_stage(&facts(
        "compat-1a2b3c4d-ceph-rbd",
        None,
        (&user, &key),
        None,
    ))
    .unwrap_err()
    .to_string();
    assert!(long.len() < 900, "fits an event: {} {long}", long.len());
    // The template is valid JSON once the key is in place.
    let template = cmd.split('\'').nth(1).unwrap();
    let filled = template.replace("{{.data.key}}", "QVFEMw==");
    let v: serde_json::Value = serde_json::from_str(&filled).unwrap();
    assert_eq!(v["data"]["userKey"], "QVFEMw==");
    assert_eq!(v["stringData"]["userID"], "kube");
    assert_eq!(v["metadata"]["name"], "ceph-kube-secret-csi");
}

#[test]
fn an_existing_incomplete_secret_is_patched_not_recreated() {
    let user = sref("apps", "ceph-user");
    let class_secret = sref("ceph-csi", "csi-rbd-secret");
    let (user_key, user_id) = (fields(&["userKey"]), fields(&["userID"]));
    let found = facts(
        "fast",
        Some(&class_secret),
        (&user, &user_key),
        Some(&user_id),
    );
    let e = choose_node_stage(&found).unwrap_err();
    let cmd = e.command.clone().unwrap();
    assert_eq!(
        cmd,
        r#"kubectl -n apps get secret ceph-user -o go-template='{"stringData":{"userID":"kube"},"data":{"userKey":"{{.data.userKey}}"}}' | kubectl -n ceph-csi patch secret csi-rbd-secret --type merge --patch-file /dev/stdin"#
    );
    let text = e.to_string();
    assert!(
        text.contains("names ceph-csi/csi-rbd-secret (csiNodeStageSecretName), which exists but has no userKey"),
        "{text}"
    );
    assert!(text.contains("Complete it"), "{text}");
}

#[test]
fn no_command_when_a_value_is_unsafe_in_a_shell() {
    let user = sref("default", "ceph-kube-secret");
    let target = sref("default", "x");
    assert!(copy_command(&user, "key", &target, false, "kube").is_some());
    assert!(copy_command(&user, "key", &target, false, "kube'; rm -rf ~ #").is_none());
    assert!(copy_command(&user, "key", &sref("default", "x y"), false, "kube").is_none());
    assert!(copy_command(&sref("$(id)", "s"), "key", &target, false, "kube").is_none());
    assert!(copy_command(&user, "key}}{{x", &target, false, "kube").is_none());
    // A user Secret without the key in any known field: no command, a way by hand.
    let password = fields(&["password"]);
    let e = choose_node_stage(&facts("c", None, (&user, &password), None)).unwrap_err();
    assert_eq!(e.command, None);
    assert!(e.to_string().contains("neither key nor userKey"), "{e}");
}
