use super::*;
use domain::adopt::{Refusal, Target};
use domain::owner::PvState;

fn stamp(claim: &str) -> Stamp {
    Stamp {
        pv: "pvc-u1".into(),
        claim_namespace: "ns".into(),
        claim_name: claim.into(),
        claim_uid: "u1".into(),
        created: 1_000,
        place: None,
        pv_state: PvState::Written,
    }
}

fn rows() -> Vec<Row> {
    let adopt = Verdict::Adopt {
        pv: "pvc-u1".into(),
        target: Target {
            namespace: "ns".into(),
            name: "data".into(),
            chosen: false,
        },
    };
    vec![
        Row::at(
            "kubernetes-dynamic-pvc-u1",
            64 << 20,
            Some(&stamp("data")),
            &adopt,
            1_000 + 90_061,
        ),
        Row::at(
            "kubernetes-dynamic-pvc-u2",
            1 << 30,
            Some(&stamp("\u{1b}[2Jx")),
            &Verdict::Refuse(Refusal::Watched("10.0.0.9:0/7".into())),
            1_030,
        ),
        Row::at(
            "kubernetes-dynamic-pvc-u3",
            1 << 20,
            None,
            &Verdict::Refuse(Refusal::Unstamped),
            1_030,
        ),
    ]
}

#[test]
fn the_table_lines_up_and_escapes() {
    let t = table(&rows(), false);
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("IMAGE  "), "{t}");
    let at = lines[0].find("SIZE").unwrap();
    assert_eq!(&lines[1][at..at + 4], "64Mi", "{t}");
    assert!(lines[1].contains("1d1h"), "{t}");
    assert!(
        lines[1].contains("adoptable") && lines[1].contains("pvc-u1 -> ns/data"),
        "{t}"
    );
    assert!(
        lines[2].contains("1Gi") && lines[2].contains("refused"),
        "{t}"
    );
    assert!(lines[3].contains("open read/write by 10.0.0.9:0/7"), "{t}");
    assert!(!t.contains('\u{1b}'), "{t}");
    assert!(t.contains("\\u{1b}[2Jx"), "{t}");
    assert!(
        lines[4].contains(" - ") && lines[5].contains("not stamped"),
        "{t}"
    );
    assert!(
        t.ends_with("3 image(s), 1 adoptable; nothing changed (dry run): rerun with --apply to write their PVs\n"),
        "{t}"
    );
    assert!(table(&rows(), true).ends_with("3 image(s), 1 adoptable\n"));
}

#[test]
fn results_show_and_fail_the_run() {
    let mut r = rows();
    r[0].set_result(Some(Ok(
        "adopted: PV pvc-u1 written, image re-stamped".into()
    )));
    r[1].set_result(Some(Err("PV pvc-u2 was created by someone else".into())));
    r[2].set_result(None);
    assert!(!r[0].failed() && r[1].failed() && !r[2].failed());
    let t = table(&r, true);
    assert!(t.contains("\n    adopted: PV pvc-u1 written"), "{t}");
    assert!(
        t.contains("\n    PV pvc-u2 was created by someone else"),
        "{t}"
    );
}

#[test]
fn json_for_scripts() {
    let v: serde_json::Value = serde_json::to_value(rows()).unwrap();
    assert_eq!(v[0]["status"], "adoptable");
    assert_eq!(v[0]["size"], 64 << 20);
    assert_eq!(v[0]["claim"], "ns/data");
    assert_eq!(v[0]["target"], "ns/data");
    assert_eq!(v[0]["age_seconds"], 90_061);
    assert_eq!(v[1]["status"], "refused");
    assert!(v[1]["reason"].as_str().unwrap().contains("10.0.0.9"));
    assert_eq!(v[2]["age_seconds"], serde_json::Value::Null);
}

#[test]
fn ages() {
    assert_eq!(age(0), "0s");
    assert_eq!(age(59), "59s");
    assert_eq!(age(61), "1m1s");
    assert_eq!(age(3_600 * 5 + 7), "5h");
    assert_eq!(age(86_400 * 3 + 3_600 * 4 + 60), "3d4h");
}
