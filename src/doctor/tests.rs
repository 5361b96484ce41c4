use super::ceph_side::monitor_addr;
use super::kube_side::sa_user;
use super::*;
use ceph::*;

#[test]
fn krbd_feature_kernels() {
    assert_eq!(krbd_minimum(RBD_FEATURE_LAYERING), Some((3, 10)));
    assert_eq!(
        krbd_minimum(RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK),
        Some((4, 9))
    );
    assert_eq!(krbd_minimum(RBD_FEATURE_DATA_POOL), Some((4, 11)));
    assert_eq!(
        krbd_minimum(RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_OBJECT_MAP),
        Some((5, 3))
    );
    assert_eq!(krbd_minimum(RBD_FEATURE_JOURNALING), None);
}

#[test]
fn kernels_of_nodes() {
    assert_eq!(kernel_version("5.15.0-91-generic"), Some((5, 15)));
    assert_eq!(kernel_version("3.10.0-1160.el7.x86_64"), Some((3, 10)));
    assert_eq!(kernel_version("garbage"), None);
    let nodes = vec![
        ("a".to_string(), "5.4.0".to_string()),
        ("b".to_string(), "4.9.1".to_string()),
        ("c".to_string(), String::new()),
    ];
    assert_eq!(old_kernels(&nodes, (3, 10)), vec!["c ()"]);
    assert_eq!(old_kernels(&nodes, (4, 11)), vec!["b (4.9.1)", "c ()"]);
}

#[test]
fn monitor_addresses() {
    assert_eq!(monitor_addr("10.0.0.1"), "10.0.0.1:6789");
    assert_eq!(monitor_addr("10.0.0.1:3300"), "10.0.0.1:3300");
    assert_eq!(monitor_addr("mon-a"), "mon-a:6789");
    assert_eq!(monitor_addr("mon-a:6789"), "mon-a:6789");
    assert_eq!(monitor_addr("::1"), "[::1]:6789");
    assert_eq!(monitor_addr("[::1]:3300"), "[::1]:3300");
    assert_eq!(sa_user("ns:sa"), "system:serviceaccount:ns:sa");
}

#[test]
fn table_has_fix_lines() {
    let t = render(&[
        row("parameters", Status::Ok, "fine"),
        fail("pool", "pool x does not exist", "ceph osd pool create x"),
    ]);
    assert!(t.starts_with("STATUS"));
    assert!(t.contains("FAIL   pool"), "{t}");
    assert!(t.contains("fix: ceph osd pool create x"), "{t}");
}

#[test]
fn table_shows_control_characters_of_objects_escaped() {
    // A class (or a manifest given with --file) may name anything; a Node's kernel version
    // is whatever its kubelet reports.
    let t = render(&[fail(
        "parameters",
        "pool \u{1b}[2J\u{1b}]0;x\u{7} does not exist\nFAIL fake line",
        "ceph osd pool create \u{9b}31m\u{202e}",
    )]);
    assert!(
        !t.contains(['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}']),
        "{t:?}"
    );
    assert!(
        t.contains("pool \\u{1b}[2J\\u{1b}]0;x\\u{7} does not exist\\nFAIL fake line"),
        "{t}"
    );
    assert!(
        t.contains("fix: ceph osd pool create \\u{9b}31m\\u{202e}"),
        "{t}"
    );
    assert_eq!(t.lines().count(), 3, "one line per row and fix: {t}");
}

mod sources {
    use super::super::Status;
    use super::super::sources::*;

    fn v(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    fn ids(l: &[(&str, &str)]) -> Vec<(String, String)> {
        l.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn with_config_map(entries: &[(&str, &[&str])]) -> Known {
        Known {
            csi_config: Some((
                "kube-system/ceph-csi-config".into(),
                Ok(entries
                    .iter()
                    .map(|(id, m)| (id.to_string(), v(m)))
                    .collect()),
            )),
            profiles: None,
        }
    }

    #[test]
    fn cluster_ids_against_the_sources() {
        let who = ids(&[("StorageClass fast", "c1"), ("pvc-1", "c2")]);
        let cases: [(&str, Known, Status, &str); 5] = [
            (
                "no source: info only",
                Known::default(),
                Status::Ok,
                "not configured",
            ),
            (
                "every clusterID known",
                with_config_map(&[("c1", &["m:6789"]), ("c2", &["m:6789"])]),
                Status::Ok,
                "c1, c2 known to ConfigMap kube-system/ceph-csi-config",
            ),
            (
                "a PV's clusterID unknown",
                with_config_map(&[("c1", &["m:6789"])]),
                Status::Warn,
                "pvc-1 (c2)",
            ),
            (
                "known to a ClientProfile only",
                Known {
                    csi_config: None,
                    profiles: Some(vec![
                        ("op/c1".into(), "c1".into(), v(&["m:6789"])),
                        ("op/c2".into(), "c2".into(), v(&["m:6789"])),
                    ]),
                },
                Status::Ok,
                "known to ClientProfiles",
            ),
            (
                "an unreadable ConfigMap",
                Known {
                    csi_config: Some(("ns/cm".into(), Err("no data key".into()))),
                    profiles: None,
                },
                Status::Warn,
                "cannot be used: no data key",
            ),
        ];
        for (name, known, status, detail) in cases {
            let r = cluster_id_row(&known, &who);
            assert_eq!(r.status, status, "{name}: {r:?}");
            assert!(r.detail.contains(detail), "{name}: {}", r.detail);
        }
    }

    #[test]
    fn monitor_lists_against_the_monitor_map() {
        let map = v(&["127.0.0.1:3300", "127.0.0.1:6789"]);
        let known = with_config_map(&[("c1", &["v1:127.0.0.1:6789"]), ("c2", &["10.0.0.9"])]);
        let lists = lists_for_class(&known, "fast", &v(&["127.0.0.1:6790"]), "c1");
        let rows = monitor_map_rows(&map, &lists);
        let got: Vec<(Status, bool)> = rows
            .iter()
            .map(|r| (r.status, r.detail.starts_with("StorageClass fast")))
            .collect();
        assert_eq!(
            got,
            vec![(Status::Warn, true), (Status::Ok, false)],
            "{rows:?}"
        );
        assert!(rows[0].detail.contains("127.0.0.1:6790 not in"), "{rows:?}");
        assert!(
            rows[1]
                .detail
                .starts_with("ConfigMap kube-system/ceph-csi-config")
        );
    }
}
