use std::collections::BTreeMap;

use super::*;
use crate::migration::LEGACY_PROVISIONER;
use crate::migration::tests::{CLAIM_UID, LEGACY_IMAGE, legacy, ours, settings};
use crate::params::ClassParams;
use crate::reclaim::ANN_LEGACY_IDENTITY;
use crate::volume::ANN_PROVISIONED_BY;
use k8s_openapi::api::core::v1::PersistentVolumeStatus;

fn class_params(pairs: &[(&str, &str)]) -> ClassParams {
    let mut m: BTreeMap<String, String> = BTreeMap::from([
        ("monitors".to_string(), "10.0.0.1:6789".to_string()),
        ("adminSecretName".to_string(), "adm".to_string()),
        ("userSecretName".to_string(), "usr".to_string()),
    ]);
    for (k, v) in pairs {
        m.insert(k.to_string(), v.to_string());
    }
    crate::params::parse(&m).unwrap()
}

#[test]
fn settings_from_flags_or_class() {
    let class = class_params(&[
        ("clusterID", "from-class"),
        ("csiNodeStageSecretName", "csi"),
        ("adminSecretNamespace", "kube-system"),
    ]);
    let s = csi_settings("rbd", Some(&class), None, None, None).unwrap();
    assert_eq!(s.cluster_id, "from-class");
    assert_eq!(s.node_stage_secret.to_string(), "default/csi");
    let admin = s.admin.unwrap();
    assert_eq!(admin.id, "admin");
    assert_eq!(admin.secret.to_string(), "kube-system/adm");
    let s = csi_settings("rbd", Some(&class), Some("flag"), Some("ns/name"), None).unwrap();
    assert_eq!(s.cluster_id, "flag");
    assert_eq!(s.node_stage_secret.to_string(), "ns/name");

    let bare = class_params(&[]);
    let e = csi_settings("rbd", Some(&bare), None, Some("ns/name"), None).unwrap_err();
    assert!(e.to_string().contains("--cluster-id"), "{e}");
    let e = csi_settings("rbd", None, Some("c"), None, None).unwrap_err();
    assert!(e.to_string().contains("--node-stage-secret"), "{e}");
    let s = csi_settings("rbd", None, Some("c"), Some("ns/name"), None).unwrap();
    assert!(s.admin.is_none());
    for bad in ["name", "/name", "ns/", "a/b/c"] {
        assert!(
            matches!(parse_secret_arg(bad), Err(SettingsError::SecretArg(_))),
            "{bad}"
        );
    }
}

#[test]
fn the_driver_comes_from_the_flag_the_class_or_the_default() {
    let csi = [("clusterID", "c"), ("csiNodeStageSecretName", "csi")];
    let plain = class_params(&csi);
    let rook = class_params(&[csi[0], csi[1], ("csiDriver", "rook-ceph.rbd.csi.ceph.com")]);
    let driver = |class: Option<&ClassParams>, flag: Option<&str>| {
        let s = csi_settings("rbd", class, Some("c"), Some("ns/n"), flag).unwrap();
        (s.driver, s.driver_source)
    };
    assert_eq!(
        driver(Some(&rook), None),
        ("rook-ceph.rbd.csi.ceph.com".into(), DriverSource::Class)
    );
    assert_eq!(
        driver(Some(&plain), None),
        ("rbd.csi.ceph.com".into(), DriverSource::Class)
    );
    assert_eq!(
        driver(None, None),
        ("rbd.csi.ceph.com".into(), DriverSource::Default)
    );
    assert_eq!(
        driver(Some(&plain), Some(" rook-ceph.rbd.csi.ceph.com ")),
        ("rook-ceph.rbd.csi.ceph.com".into(), DriverSource::Flag)
    );
    for bad in ["", "Rook.CSI", "a/b", "-x.io"] {
        let e = csi_settings("rbd", Some(&plain), None, None, Some(bad)).unwrap_err();
        assert!(matches!(e, SettingsError::DriverArg(_)), "{bad}: {e}");
    }

    // The csi PV, and what a dry run says, name that driver.
    let s = csi_settings("rbd", Some(&rook), None, None, None).unwrap();
    let new = csi_pv(&legacy(), &s).unwrap();
    assert_eq!(
        new.spec.as_ref().unwrap().csi.as_ref().unwrap().driver,
        "rook-ceph.rbd.csi.ceph.com"
    );
    let d = describe(&new, &s);
    assert!(
        d.contains("(rook-ceph.rbd.csi.ceph.com, clusterID c,"),
        "{d}"
    );
    assert!(!d.contains("(rbd.csi.ceph.com"), "{d}");
}

#[test]
fn a_missing_driver_says_what_to_install_or_fix() {
    let rook = class_params(&[
        ("clusterID", "c"),
        ("csiNodeStageSecretName", "csi"),
        ("csiDriver", "rook-ceph.rbd.csi.ceph.com"),
    ]);
    let s = csi_settings("fast", Some(&rook), None, None, None).unwrap();
    let fix = missing_driver_fix(&s, "fast");
    assert!(
        fix.contains("rook-ceph.rbd.csi.ceph.com is the csiDriver of StorageClass fast"),
        "{fix}"
    );
    assert!(fix.contains("Install ceph-csi's rbd plugin"), "{fix}");
    assert!(
        fix.contains("recreate StorageClass fast") && fix.contains("--csi-driver"),
        "{fix}"
    );
    let s = csi_settings("gone", None, Some("c"), Some("ns/n"), None).unwrap();
    let fix = missing_driver_fix(&s, "gone");
    assert!(
        fix.contains("if it is installed under another name, pass the name kubectl get csidrivers shows as --csi-driver"),
        "{fix}"
    );
    assert!(!fix.contains("StorageClass"), "{fix}");
    let s = csi_settings("c", None, Some("c"), Some("ns/n"), Some("x.csi.io")).unwrap();
    let fix = missing_driver_fix(&s, "c");
    assert!(
        fix.ends_with(", or pass the name kubectl get csidrivers shows as --csi-driver"),
        "{fix}"
    );
}

#[test]
fn class_notes() {
    assert_eq!(
        class_note("c", Some(&class_params(&[("volumeFlavor", "CSI")]))),
        None
    );
    assert!(
        class_note("c", Some(&class_params(&[("volumeFlavor", "rbd")])))
            .unwrap()
            .contains("sets volumeFlavor: rbd")
    );
    assert!(
        class_note("c", Some(&class_params(&[])))
            .unwrap()
            .contains("Kubernetes < 1.31")
    );
    assert_eq!(class_note("c", None), None);
}

#[test]
fn the_csi_volume_names_the_same_image() {
    let old = legacy();
    let want = Some(("kube".to_string(), LEGACY_IMAGE.to_string()));
    assert_eq!(spec_image(&old), want);
    assert_eq!(spec_image(&csi_pv(&old, &settings()).unwrap()), want);
}

#[test]
fn builds_the_csi_volume_of_a_legacy_pv() {
    let old = legacy();
    let new = csi_pv(&old, &settings()).unwrap();
    let (o, n) = (old.spec.clone().unwrap(), new.spec.clone().unwrap());
    assert_eq!(new.metadata.name, old.metadata.name);
    assert_eq!(new.metadata.labels, old.metadata.labels);
    assert_eq!(n.capacity, o.capacity);
    assert_eq!(n.access_modes, o.access_modes);
    assert_eq!(
        n.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(n.storage_class_name, o.storage_class_name);
    assert_eq!(n.mount_options, o.mount_options);
    assert_eq!(n.volume_mode.as_deref(), Some("Filesystem"));
    let r = n.claim_ref.unwrap();
    assert_eq!(
        (r.namespace.as_deref(), r.name.as_deref(), r.uid.as_deref()),
        (Some("apps"), Some("data"), Some(CLAIM_UID))
    );
    assert_eq!(
        r.resource_version, None,
        "a stale resourceVersion is not carried over"
    );
    assert!(n.rbd.is_none());
    let csi = n.csi.unwrap();
    assert_eq!(csi.driver, "rbd.csi.ceph.com");
    assert_eq!(csi.volume_handle, LEGACY_IMAGE);
    assert_eq!(csi.fs_type.as_deref(), Some("xfs"));
    assert_eq!(csi.read_only, None);
    assert_eq!(
        csi.volume_attributes,
        Some(crate::volume::csi_volume_attributes("c1", "kube")),
        "the attributes of a new csi PV"
    );
    let s = csi.node_stage_secret_ref.unwrap();
    assert_eq!(
        (s.namespace.as_deref(), s.name.as_deref()),
        (Some("ceph-csi"), Some("csi-rbd-node"))
    );
    // Kept annotations, plus what our delete path needs.
    let a = new.metadata.annotations.unwrap();
    assert_eq!(a[ANN_PROVISIONED_BY], "ceph.com/rbd");
    assert_eq!(a[ANN_LEGACY_IDENTITY], "ceph.com/rbd");
    assert_eq!(a["pv.kubernetes.io/bound-by-controller"], "yes");
    assert_eq!(a[ANN_MONITORS], "10.0.0.1:6789,10.0.0.2:6789");
    assert_eq!(a[ANN_POOL], "kube");
    assert_eq!(a[ANN_IMAGE], LEGACY_IMAGE);
    assert_eq!(a[ANN_ADMIN_ID], "admin");
    assert_eq!(a[ANN_ADMIN_SECRET], "kube-system/ceph-admin");
    assert_eq!(new.metadata.finalizers, Some(vec![FINALIZER.to_string()]));
    assert_eq!(new.metadata.uid, None);
    assert_eq!(new.metadata.resource_version, None);
    assert_eq!(new.metadata.managed_fields, None);
    assert!(new.status.is_none());
}

#[test]
fn keeps_what_our_pvs_recorded() {
    let new = csi_pv(&ours(), &settings()).unwrap();
    let a = new.metadata.annotations.unwrap();
    assert_eq!(
        a[ANN_ADMIN_ID], "boss",
        "recorded at provisioning, not overwritten by the class"
    );
    assert_eq!(a[ANN_ADMIN_SECRET], "ceph/boss-secret");
    assert_eq!(a[ANN_IMAGE], format!("kubernetes-dynamic-pvc-{CLAIM_UID}"));
}

#[test]
fn policy_block_pool_and_admin_variants() {
    let mut old = legacy();
    let spec = old.spec.as_mut().unwrap();
    spec.persistent_volume_reclaim_policy = Some("Retain".into());
    spec.volume_mode = Some("Block".into());
    let rbd = spec.rbd.as_mut().unwrap();
    rbd.pool = None;
    rbd.fs_type = None;
    rbd.read_only = Some(true);
    let mut s = settings();
    s.admin = None;
    let new = csi_pv(&old, &s).unwrap();
    assert_eq!(
        new.metadata.finalizers, None,
        "no finalizer unless the policy is Delete"
    );
    let n = new.spec.clone().unwrap();
    assert_eq!(
        n.persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
    let csi = n.csi.unwrap();
    assert_eq!(csi.fs_type, None, "Block volumes have no filesystem");
    assert_eq!(csi.read_only, Some(true));
    assert_eq!(
        csi.volume_attributes.unwrap()["pool"],
        "rbd",
        "the in-tree default pool"
    );
    let a = new.metadata.annotations.clone().unwrap();
    assert!(!a.contains_key(ANN_ADMIN_ID) && !a.contains_key(ANN_ADMIN_SECRET));
    assert!(describe(&new, &s).contains("will not be deleted"));
    // A filesystem volume without fsType gets the in-tree default.
    let mut old = legacy();
    old.spec.as_mut().unwrap().rbd.as_mut().unwrap().fs_type = None;
    assert_eq!(
        csi_pv(&old, &s)
            .unwrap()
            .spec
            .unwrap()
            .csi
            .unwrap()
            .fs_type
            .as_deref(),
        Some("ext4")
    );
    let mut old = legacy();
    old.spec.as_mut().unwrap().rbd.as_mut().unwrap().image = String::new();
    assert!(csi_pv(&old, &s).is_err());
}

#[test]
fn the_delete_path_can_remove_a_migrated_image_without_the_class() {
    use crate::fixtures;
    use crate::reclaim::{VolumeAction, decide};
    let mut new = csi_pv(&legacy(), &settings()).unwrap();
    new.spec.as_mut().unwrap().storage_class_name = None;
    new.status = Some(PersistentVolumeStatus {
        phase: Some("Released".into()),
        ..Default::default()
    });
    match decide(&new, LEGACY_PROVISIONER, false) {
        VolumeAction::Delete(t) => {
            assert_eq!((t.pool.as_str(), t.image.as_str()), ("kube", LEGACY_IMAGE));
            assert_eq!(t.monitors, vec!["10.0.0.1:6789", "10.0.0.2:6789"]);
            assert_eq!(
                t.admin,
                fixtures::recorded_admin("admin", "kube-system/ceph-admin")
            );
        }
        other => panic!("{other:?}"),
    }
}
