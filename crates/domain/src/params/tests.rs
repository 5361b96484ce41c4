use super::*;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn minimal() -> Vec<(&'static str, &'static str)> {
    vec![
        ("monitors", "10.0.0.1:6789"),
        ("adminSecretName", "ceph-secret"),
        ("userSecretName", "ceph-user"),
    ]
}

fn errs(pairs: &[(&str, &str)]) -> Vec<ParamError> {
    parse(&map(pairs)).unwrap_err().0
}

#[test]
fn defaults() {
    let p = parse(&map(&minimal())).unwrap();
    assert_eq!(p.monitors, vec!["10.0.0.1:6789"]);
    assert_eq!(p.admin_id, "admin");
    assert_eq!(
        p.admin_secret,
        SecretRef {
            namespace: "default".into(),
            name: "ceph-secret".into()
        }
    );
    assert_eq!(p.pool, "rbd");
    assert_eq!(p.user_id, "admin", "userId defaults to adminId");
    assert_eq!(p.user_secret_namespace, None);
    assert_eq!(p.user_secret("apps").namespace, "apps");
    assert_eq!(p.fs_type, "ext4");
    assert_eq!(p.data_pool, None);
    assert_eq!(p.flavor, None);
}

#[test]
fn walkthrough_class() {
    let p = parse(&map(&[
        ("monitors", "192.168.1.10:6789,192.168.1.11:6789"),
        ("adminId", "admin"),
        ("adminSecretName", "ceph-secret"),
        ("adminSecretNamespace", "kube-system"),
        ("pool", "kube"),
        ("userId", "kube"),
        ("userSecretName", "ceph-kube-secret"),
        ("userSecretNamespace", "default"),
        ("fsType", "ext4"),
        ("imageFormat", "2"),
        ("imageFeatures", "layering"),
    ]))
    .unwrap();
    assert_eq!(p.monitors.len(), 2);
    assert_eq!(p.admin_secret.to_string(), "kube-system/ceph-secret");
    assert_eq!(p.pool, "kube");
    assert_eq!(p.user_id, "kube");
    assert_eq!(
        p.user_secret("apps").to_string(),
        "default/ceph-kube-secret"
    );
}

#[test]
fn user_id_follows_admin_id() {
    let mut m = minimal();
    m.push(("adminId", "boss"));
    assert_eq!(parse(&map(&m)).unwrap().user_id, "boss");
}

#[test]
fn keys_are_case_insensitive() {
    let p = parse(&map(&[
        ("MONITORS", "mon1"),
        ("adminsecretname", "a"),
        ("UserSecretName", "u"),
        ("DATAPOOL", "ec"),
        ("FsType", "xfs"),
    ]))
    .unwrap();
    assert_eq!(p.monitors, vec!["mon1"]);
    assert_eq!(p.data_pool.as_deref(), Some("ec"));
    assert_eq!(p.fs_type, "xfs");
}

#[test]
fn duplicate_key_by_case() {
    let mut m = minimal();
    m.push(("Pool", "a"));
    m.push(("pool", "b"));
    assert!(matches!(errs(&m)[..], [ParamError::Duplicate { .. }]));
}

#[test]
fn unknown_key() {
    let mut m = minimal();
    m.push(("imageFeature", "layering"));
    let e = errs(&m);
    assert_eq!(
        e,
        vec![ParamError::Unknown {
            key: "imageFeature".into()
        }]
    );
    assert!(
        e[0].to_string().contains("imageFeatures"),
        "lists known keys"
    );
}

#[test]
fn required_keys() {
    let e = errs(&[]);
    assert!(e.contains(&ParamError::Missing { key: "monitors" }));
    assert!(e.contains(&ParamError::Missing {
        key: "adminSecretName"
    }));
    assert!(e.contains(&ParamError::Missing {
        key: "userSecretName"
    }));
}

#[test]
fn empty_values() {
    let e = errs(&[
        ("monitors", " "),
        ("adminSecretName", ""),
        ("userSecretName", "u"),
        ("pool", ""),
    ]);
    assert!(e.contains(&ParamError::Empty { key: "monitors" }));
    assert!(e.contains(&ParamError::Empty {
        key: "adminSecretName"
    }));
    assert!(e.contains(&ParamError::Empty { key: "pool" }));
    assert_eq!(e.len(), 3, "{e:?}");
}

#[test]
fn monitors_forms() {
    // (monitors, accepted)
    for (monitors, accepted) in [
        ("10.0.0.1", true),
        ("10.0.0.1:6789", true),
        ("mon-a.example.com:3300", true),
        ("[::1]:6789", true),
        ("[fe80::1]", true),
        ("v2:10.0.0.1:3300", true),
        ("v1:10.0.0.1:6789", true),
        ("a:6789, b:6789 ,c", true),
        ("10.0.0.1:", false),
        ("10.0.0.1:0", false),
        ("10.0.0.1:70000", false),
        ("10.0.0.1:port", false),
        ("300.1.1.1", false),
        ("a,,b", false),
        ("[::1", false),
        ("[zz]:1", false),
        ("host_name", false),
        ("a b", false),
    ] {
        let mut m = minimal();
        m[0] = ("monitors", monitors);
        match parse(&map(&m)) {
            Ok(_) => assert!(accepted, "{monitors} was accepted"),
            Err(e) => assert!(
                !accepted && e.0.iter().any(|e| matches!(e, ParamError::Monitor { .. })),
                "{monitors}: {e:?}"
            ),
        }
    }
}

#[test]
fn image_format() {
    let mut m = minimal();
    m.push(("imageFormat", "2"));
    assert!(parse(&map(&m)).is_ok());
    m.pop();
    m.push(("imageFormat", "1"));
    let e = errs(&m);
    assert_eq!(e, vec![ParamError::ImageFormat1]);
    assert!(e[0].to_string().contains("use imageFormat: \"2\""));
    m.pop();
    m.push(("imageFormat", "3"));
    assert!(matches!(errs(&m)[..], [ParamError::ImageFormat { .. }]));
}

#[test]
fn image_features() {
    for ok in ["layering", "Layering", " layering , layering"] {
        let mut m = minimal();
        m.push(("imageFeatures", ok));
        assert!(parse(&map(&m)).is_ok(), "{ok}");
    }
    for bad in [
        "exclusive-lock",
        "layering,exclusive-lock",
        "layering,object-map,fast-diff,deep-flatten",
    ] {
        let mut m = minimal();
        m.push(("imageFeatures", bad));
        let e = errs(&m);
        assert!(
            matches!(&e[..], [ParamError::ImageFeatures { .. }]),
            "{e:?}"
        );
        assert!(e[0].to_string().contains("feature set mismatch"));
    }
}

#[test]
fn ids_without_client_prefix() {
    let mut m = minimal();
    m.push(("userId", "client.kube"));
    assert!(matches!(
        errs(&m)[..],
        [ParamError::Name { key: "userId", .. }]
    ));
}

#[test]
fn pool_names() {
    let mut m = minimal();
    m.push(("pool", "a/b"));
    m.push(("dataPool", "ec pool"));
    assert_eq!(errs(&m).len(), 2);
}

#[test]
fn collects_all_problems() {
    let e = parse(&map(&[
        ("imageFormat", "1"),
        ("imageFeatures", "journaling"),
    ]))
    .unwrap_err();
    assert_eq!(e.0.len(), 5, "{e}");
    let text = e.to_string();
    assert!(text.contains("monitors") && text.contains("journaling"));
}

#[test]
fn flavor_and_csi_parameters() {
    let mut m = minimal();
    m.push(("volumeFlavor", "CSI"));
    let p = parse(&map(&m)).unwrap();
    assert_eq!(p.flavor, Some(Flavor::Csi));
    // The walkthrough's class, csi parameters absent: defaults (fsid, user secret).
    assert!(check_csi(&p).is_ok());
    assert_eq!((p.cluster_id.as_ref(), p.csi_secret.as_ref()), (None, None));
    m.push(("clusterID", "c1"));
    m.push(("csiNodeStageSecretName", "csi"));
    let p = parse(&map(&m)).unwrap();
    assert!(check_csi(&p).is_ok());
    assert_eq!(p.csi_secret.unwrap().namespace, "default");

    let mut m = minimal();
    m.push(("volumeFlavor", "rbd"));
    m.push(("clusterID", "c1"));
    assert_eq!(errs(&m), vec![ParamError::CsiOnly { key: "clusterID" }]);
    let mut m = minimal();
    m.push(("volumeFlavor", "nfs"));
    assert!(matches!(errs(&m)[..], [ParamError::Flavor { .. }]));
}

#[test]
fn csi_driver_name() {
    assert_eq!(
        parse(&map(&minimal())).unwrap().csi_driver,
        "rbd.csi.ceph.com"
    );
    let mut m = minimal();
    m.push(("csiDriver", "rook-ceph.rbd.csi.ceph.com"));
    assert_eq!(
        parse(&map(&m)).unwrap().csi_driver,
        "rook-ceph.rbd.csi.ceph.com"
    );
    for bad in ["Rook.RBD", "a..b", "-x.y", &"x".repeat(64)] {
        let mut m = minimal();
        m.push(("csiDriver", bad));
        assert!(
            matches!(
                errs(&m)[..],
                [ParamError::Name {
                    key: "csiDriver",
                    ..
                }]
            ),
            "{bad}"
        );
    }
    let mut m = minimal();
    m.push(("volumeFlavor", "rbd"));
    m.push(("csiDriver", "rbd.csi.ceph.com"));
    assert_eq!(errs(&m), vec![ParamError::CsiOnly { key: "csiDriver" }]);
}

#[test]
fn snapshot_and_chain_limits() {
    let p = parse(&map(&minimal())).unwrap();
    assert_eq!(
        (p.max_clone_depth, p.hard_max_clone_depth, p.max_snapshots),
        (4, 8, 450),
        "ceph-csi's defaults"
    );
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = minimal();
        v.extend_from_slice(extra);
        v
    };
    let p = parse(&map(&with(&[
        ("maxCloneDepth", "10"),
        ("maxSnapshotsPerImage", "510"),
    ])))
    .unwrap();
    assert_eq!(p.hard_max_clone_depth, 10, "never below the soft limit");
    assert_eq!(p.max_snapshots, 510);
    for (k, v) in [
        ("hardMaxCloneDepth", "17"),
        ("hardMaxCloneDepth", "3"),
        ("maxSnapshotsPerImage", "0"),
        ("maxSnapshotsPerImage", "511"),
        ("maxSnapshotsPerImage", "many"),
    ] {
        let e = errs(&with(&[(k, v)]));
        assert_eq!(e.len(), 1, "{k}={v}: {e:?}");
        assert!(e[0].to_string().starts_with(k), "{k}={v}: {}", e[0]);
    }
}

#[test]
fn node_mapping_settings() {
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = minimal();
        v.extend_from_slice(extra);
        v
    };
    let none = parse(&map(&minimal())).unwrap();
    assert_eq!(none.node_map, NodeMap::default());
    assert!(none.node_map.attributes().is_empty());
    let p = parse(&map(&with(&[
        ("mounter", "rbd-nbd"),
        ("mapOptions", "krbd:lock_on_read;nbd:try-netlink"),
        ("unmapOptions", "krbd:force"),
    ])))
    .unwrap();
    assert_eq!(
        p.node_map.attributes(),
        vec![
            ("mounter", "rbd-nbd".to_string()),
            (
                "mapOptions",
                "krbd:lock_on_read;nbd:try-netlink".to_string()
            ),
            ("unmapOptions", "krbd:force".to_string()),
        ]
    );
    type Pairs<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Pairs, Vec<ParamError>); 5] = [
        (&[("mounter", "rbd")], vec![]),
        (
            &[("mounter", "krbd")],
            vec![ParamError::Mounter {
                value: "krbd".into(),
            }],
        ),
        (
            &[("mapOptions", "")],
            vec![ParamError::Empty { key: "mapOptions" }],
        ),
        (
            &[("volumeFlavor", "rbd"), ("mounter", "rbd-nbd")],
            vec![ParamError::CsiOnly { key: "mounter" }],
        ),
        (
            &[("volumeFlavor", "rbd"), ("unmapOptions", "force")],
            vec![ParamError::CsiOnly {
                key: "unmapOptions",
            }],
        ),
    ];
    for (extra, want) in cases {
        let mut v = minimal();
        v.extend_from_slice(extra);
        assert_eq!(
            parse(&map(&v)).err().map(|e| e.0).unwrap_or_default(),
            want,
            "{extra:?}"
        );
    }
    // The flavour chosen by the server version: in-tree refuses them, csi carries them.
    assert_eq!(
        check_in_tree(&p).unwrap_err().0,
        vec![
            ParamError::InTreeCannotCarry { key: "mounter" },
            ParamError::InTreeCannotCarry { key: "mapOptions" },
            ParamError::InTreeCannotCarry {
                key: "unmapOptions"
            },
        ]
    );
    assert!(check_in_tree(&none).is_ok());
    assert!(check_csi(&p).is_ok());
}
