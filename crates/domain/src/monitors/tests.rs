use super::*;
use crate::fixtures;
use k8s_openapi::api::core::v1::CSIPersistentVolumeSource;
use serde_json::json;
use std::collections::BTreeMap;

fn v(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// A source and the monitors it offers.
type Offer = (Source, Vec<String>);

fn profile(name: &str) -> Source {
    Source::ClientProfile {
        profile: format!("ceph-csi-operator/{name}"),
        connection: "ceph-csi-operator/conn".into(),
    }
}

#[test]
fn candidates_come_in_order_class_config_profiles_recorded() {
    let all = Offers {
        class: Some(("fast".into(), v(&["c:6789"]))),
        csi_config: Some(("kube-system/ceph-csi-config".into(), v(&["m:6789"]))),
        client_profiles: vec![(profile("p"), v(&["p:3300"]))],
        recorded: v(&["r:6789"]),
    };
    let cases: Vec<(&str, Offers, Vec<Offer>)> = vec![
        (
            "every source",
            all.clone(),
            vec![
                (Source::Class("fast".into()), v(&["c:6789"])),
                (
                    Source::CsiConfig("kube-system/ceph-csi-config".into()),
                    v(&["m:6789"]),
                ),
                (profile("p"), v(&["p:3300"])),
                (Source::Recorded, v(&["r:6789"])),
            ],
        ),
        (
            "class gone: the ConfigMap before the record",
            Offers {
                class: None,
                client_profiles: vec![],
                ..all.clone()
            },
            vec![
                (
                    Source::CsiConfig("kube-system/ceph-csi-config".into()),
                    v(&["m:6789"]),
                ),
                (Source::Recorded, v(&["r:6789"])),
            ],
        ),
        (
            "a list offered before is not tried twice, in any order",
            Offers {
                class: Some(("fast".into(), v(&["a:6789", "b:6789"]))),
                csi_config: Some(("ns/cm".into(), v(&[" b:6789", "a:6789 "]))),
                client_profiles: vec![],
                recorded: v(&["a:6789", "b:6789"]),
            },
            vec![(Source::Class("fast".into()), v(&["a:6789", "b:6789"]))],
        ),
        (
            "sources offering no monitors are left out",
            Offers {
                class: Some(("fast".into(), vec![])),
                csi_config: Some(("ns/cm".into(), v(&[""]))),
                client_profiles: vec![(profile("p"), vec![])],
                recorded: v(&["r:6789"]),
            },
            vec![(Source::Recorded, v(&["r:6789"]))],
        ),
        ("nothing at all", Offers::default(), vec![]),
    ];
    for (name, offers, want) in cases {
        let got: Vec<Offer> = candidates(offers)
            .into_iter()
            .map(|c| (c.source, c.monitors))
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

fn csi_pv(cluster_id: &str, source: Option<&str>, fsid: Option<&str>) -> PersistentVolume {
    let mut ann = vec![];
    if let Some(s) = source {
        ann.push((ANN_CLUSTER_ID_SOURCE, s));
    }
    if let Some(f) = fsid {
        ann.push((ANN_FSID, f));
    }
    let mut pv = fixtures::rbd_pv("pvc-1", ("kube", "img"), &ann, Some("Bound"));
    let spec = pv.spec.as_mut().unwrap();
    spec.rbd = None;
    spec.csi = Some(CSIPersistentVolumeSource {
        driver: "rbd.csi.ceph.com".into(),
        volume_handle: "img".into(),
        volume_attributes: Some(BTreeMap::from([("clusterID".into(), cluster_id.into())])),
        ..Default::default()
    });
    pv
}

#[test]
fn the_cluster_id_is_the_csi_attribute_else_the_recorded_fsid() {
    assert_eq!(
        cluster_id(&csi_pv("c1", None, Some("f-1"))),
        Some("c1".into())
    );
    let in_tree = fixtures::rbd_pv("pvc-1", ("kube", "i"), &[(ANN_FSID, "f-1")], None);
    assert_eq!(cluster_id(&in_tree), Some("f-1".into()));
    let bare = fixtures::rbd_pv("pvc-1", ("kube", "i"), &[], None);
    assert_eq!(cluster_id(&bare), None);
}

#[test]
fn recorded_fsids_are_the_annotation_and_a_cluster_id_that_is_the_fsid() {
    let cases = [
        (csi_pv("f-1", Some("ceph-fsid"), Some("f-1")), v(&["f-1"])),
        (
            csi_pv("f-2", Some("ceph-fsid"), Some("f-1")),
            v(&["f-1", "f-2"]),
        ),
        // A class's own clusterID is a name, not an fsid.
        (csi_pv("prod", None, Some("f-1")), v(&["f-1"])),
        (csi_pv("prod", None, None), vec![]),
    ];
    for (pv, want) in cases {
        assert_eq!(recorded_fsids(&pv), want);
    }
}

#[test]
fn a_cluster_is_used_only_when_every_record_names_it() {
    let cases: [(&[&str], Option<&str>, &str, bool); 7] = [
        (&["f-1"], None, "f-1", true),
        (&["f-1"], Some("f-1"), "f-1", true),
        (&["f-1"], None, "f-2", false),
        (&[], Some("f-2"), "f-1", false),
        (&["f-1"], Some("f-2"), "f-1", false),
        (&[], Some("f-1"), "f-1", true),
        // Nothing recorded: as before the records existed.
        (&[], None, "f-9", true),
    ];
    for (recorded, stamp, live, ok) in cases {
        let r = judge(&v(recorded), stamp, live);
        assert_eq!(r.is_ok(), ok, "{recorded:?} {stamp:?} {live}: {r:?}");
    }
    assert_eq!(
        judge(&v(&["f-1"]), Some("f-2"), "f-2"),
        Err(ElseWhere::Recorded {
            recorded: "f-1".into(),
            live: "f-2".into()
        }),
        "the PV's record first"
    );
    assert_eq!(
        judge(&[], Some("f-2"), "f-1"),
        Err(ElseWhere::Stamped {
            stamped: "f-2".into(),
            live: "f-1".into()
        })
    );
}

#[test]
fn describe_names_every_source_and_what_it_said() {
    let tried = [
        Tried {
            source: Source::Class("fast".into()),
            monitors: v(&["a:6789"]),
            outcome: "did not answer".into(),
        },
        Tried {
            source: Source::CsiConfig("kube-system/ceph-csi-config".into()),
            monitors: vec![],
            outcome: "has no entry for clusterID c1".into(),
        },
    ];
    assert_eq!(
        describe(&tried),
        "StorageClass fast (a:6789): did not answer; ConfigMap kube-system/ceph-csi-config: has no entry for clusterID c1"
    );
    assert_eq!(describe(&[]), "no source offers monitors");
}

#[test]
fn ceph_csi_config_is_read_as_ceph_csi_writes_it() {
    let cfg = r#"[{"clusterID":"c1","monitors":["10.0.0.1:6789","10.0.0.2:6789"]},{"clusterID":"c2","monitors":[]}]"#;
    type Read = Result<Option<Vec<String>>, CsiConfigError>;
    let cases: [(Option<&str>, &str, Read); 5] = [
        (
            Some(cfg),
            "c1",
            Ok(Some(v(&["10.0.0.1:6789", "10.0.0.2:6789"]))),
        ),
        (Some(cfg), "c2", Ok(Some(vec![]))),
        (Some(cfg), "c3", Ok(None)),
        (None, "c1", Err(CsiConfigError::NoKey)),
        (
            Some(r#"{"clusterID":"c1"}"#),
            "c1",
            Err(CsiConfigError::Malformed("not a list".into())),
        ),
    ];
    for (json, id, want) in cases {
        assert_eq!(csi_config_monitors(json, id), want, "{json:?} {id}");
    }
    assert!(matches!(
        csi_config_monitors(Some("[{"), "c1"),
        Err(CsiConfigError::Malformed(_))
    ));
    assert_eq!(
        csi_config_entries(cfg).unwrap(),
        vec![
            ("c1".into(), v(&["10.0.0.1:6789", "10.0.0.2:6789"])),
            ("c2".into(), vec![])
        ]
    );
}

#[test]
fn client_profiles_name_their_connection_which_lists_monitors() {
    let p = json!({"spec": {"cephConnectionRef": {"name": "conn"}, "rbd": {}}});
    assert_eq!(profile_connection(&p), Some("conn".into()));
    assert_eq!(profile_connection(&json!({"spec": {}})), None);
    assert_eq!(
        profile_connection(&json!({"spec": {"cephConnectionRef": {"name": ""}}})),
        None
    );
    let c = json!({"spec": {"monitors": ["10.0.0.1:6789", 7]}});
    assert_eq!(connection_monitors(&c), v(&["10.0.0.1:6789"]));
    assert_eq!(connection_monitors(&json!({})), Vec::<String>::new());
}

#[test]
fn monitors_are_compared_by_address_whatever_their_form() {
    let dump = v(&["v2:127.0.0.1:3300/0", "v1:127.0.0.1:6789/0"]);
    let cases: [(&[&str], &[&str]); 5] = [
        (&["127.0.0.1:6789"], &[]),
        (&["v2:127.0.0.1:3300"], &[]),
        (&["127.0.0.1"], &[]),
        (&["127.0.0.1:6790", "127.0.0.1:3300"], &["127.0.0.1:6790"]),
        (&["[::1]:6789"], &["[::1]:6789"]),
    ];
    for (given, want) in cases {
        assert_eq!(unknown_monitors(&v(given), &dump), v(want), "{given:?}");
    }
    assert_eq!(monitor_address("[::1]"), "[::1]:6789");
    assert_eq!(monitor_address("v1:[::1]:6789/0"), "[::1]:6789");
}
