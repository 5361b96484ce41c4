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
