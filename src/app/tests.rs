use std::collections::BTreeSet;

use super::*;
use std::time::Duration;

#[test]
fn writes_are_signed_with_the_replica() {
    let v = env!("CARGO_PKG_VERSION");
    // The API server's field manager is the User-Agent up to the first '/'.
    assert_eq!(
        user_agent(Some("node-1_00000000000000ab")),
        format!("rbd-provisioner@node-1_00000000000000ab/{v}")
    );
    assert_eq!(
        user_agent(Some("a b/c")),
        format!("rbd-provisioner@a-b-c/{v}")
    );
    assert_eq!(user_agent(None), format!("rbd-provisioner/{v}"));
}

#[test]
fn leader_election_flags() {
    let parse = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("rbd-provisioner").chain(args.iter().copied()))
    };
    let d = parse(&[]).unwrap();
    assert!(d.leader_elect);
    assert_eq!(
        (
            d.leader_election_lease_duration,
            d.leader_election_renew_deadline,
            d.leader_election_retry_period
        ),
        (
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(2)
        )
    );
    let c = parse(&[
        "--leader-election",
        "--leader-election-namespace",
        "storage",
        "--leader-election-lease-duration",
        "1m",
        "--leader-election-renew-deadline=40s",
        "--leader-election-retry-period",
        "500ms",
    ])
    .unwrap();
    assert!(c.leader_elect);
    assert_eq!(c.leader_election_namespace, "storage");
    assert_eq!(c.leader_election_lease_duration, Duration::from_secs(60));
    assert_eq!(c.leader_election_renew_deadline, Duration::from_secs(40));
    assert_eq!(c.leader_election_retry_period, Duration::from_millis(500));
    for off in [
        &["--leader-elect=false"][..],
        &["--leader-elect", "false"],
        &["--leader-election=false"],
    ] {
        assert!(!parse(off).unwrap().leader_elect, "{off:?}");
    }
    // The refusal names the spelling wanted, so an operator used to seconds sees why.
    let e = parse(&["--leader-election-lease-duration", "15"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("<DURATION>") && e.contains("15s"), "{e}");
}

#[test]
fn ceph_client_max_age_flag() {
    let parse = |args: &[&str]| {
        Cli::try_parse_from(std::iter::once("rbd-provisioner").chain(args.iter().copied()))
    };
    let secs = Duration::from_secs;
    assert_eq!(parse(&[]).unwrap().ceph_client_max_age, secs(300));
    // A bare number is seconds, as this flag always took; a duration is the one spelling.
    for (arg, want) in [("30", secs(30)), ("5m", secs(300)), ("1m30s", secs(90))] {
        let got = parse(&["--ceph-client-max-age", arg]).unwrap();
        assert_eq!(got.ceph_client_max_age, want, "{arg}");
    }
    let e = parse(&["--ceph-client-max-age", "5 minutes"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("<DURATION>"), "{e}");
}

/// The "### Flags" table of the README: one row per flag, its cells (flag, env, default,
/// what it does) without the pipes.
fn readme_flag_rows() -> Vec<Vec<String>> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n### Flags (and environment variables)\n")
        .nth(1)
        .expect("README has a \"### Flags (and environment variables)\" section");
    let section = section.split("\n#").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with('|'))
        // The header and the |---| line.
        .skip(2)
        .map(|l| {
            // A `\|` inside a cell is a pipe of its text, not a column.
            let l = l.trim_end().replace("\\|", "\u{0}");
            // One pipe off each end: an empty last cell is still a cell.
            let l = l.strip_prefix('|').unwrap_or(&l);
            l.strip_suffix('|')
                .unwrap_or(l)
                .split('|')
                .map(|c| c.replace('\u{0}', "|").trim().to_string())
                .collect()
        })
        .collect()
}

/// The `code spans` of a Markdown cell, in order.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

/// The README's flag table against clap, which is what the binary accepts: every argument
/// of the provisioner's command (the global ones included, which the subcommands share) has
/// exactly one row, naming all its spellings, its environment variable and its default as
/// clap states them, and no row names a flag clap does not know. The subcommands' own
/// arguments (`audit`, `migrate-to-csi`, `doctor`) are not covered: the README shows them
/// in prose next to each command, not in this table.
#[test]
fn readme_flag_table_matches_clap() {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    // Built, clap adds what it adds at parse time (-v's implicit default among it).
    cmd.build();
    let rows = readme_flag_rows();
    let names_of_row = |row: &[String]| -> BTreeSet<String> {
        code_spans(&row[0])
            .into_iter()
            .map(|n| {
                // `-v`, `-vv`, `-vvv`: one flag given more than once.
                let letters = n.trim_start_matches('-');
                let once = letters.get(..1).unwrap_or_default();
                if !n.starts_with("--") && letters.chars().all(|c| letters.starts_with(c)) {
                    format!("-{once}")
                } else {
                    n.to_string()
                }
            })
            .collect()
    };
    let mut matched = vec![false; rows.len()];
    let mut problems = Vec::new();
    for arg in cmd.get_arguments() {
        if matches!(
            arg.get_action(),
            clap::ArgAction::Help | clap::ArgAction::Version
        ) {
            continue;
        }
        let mut names: BTreeSet<String> = BTreeSet::new();
        names.extend(arg.get_long().map(|l| format!("--{l}")));
        names.extend(arg.get_short().map(|c| format!("-{c}")));
        names.extend(
            arg.get_all_aliases()
                .unwrap_or_default()
                .into_iter()
                .map(|a| format!("--{a}")),
        );
        names.extend(
            arg.get_all_short_aliases()
                .unwrap_or_default()
                .into_iter()
                .map(|c| format!("-{c}")),
        );
        let shown = names.iter().next().cloned().unwrap_or_default();
        let hits: Vec<usize> = (0..rows.len())
            .filter(|&i| !names_of_row(&rows[i]).is_disjoint(&names))
            .collect();
        let [i] = hits[..] else {
            problems.push(format!(
                "{shown}: {} rows of the README table name it",
                hits.len()
            ));
            continue;
        };
        matched[i] = true;
        let row = &rows[i];
        if row.len() != 4 {
            problems.push(format!("{shown}: its row has {} cells, not 4", row.len()));
            continue;
        }
        let documented = names_of_row(row);
        if documented != names {
            problems.push(format!(
                "{shown}: the README names {documented:?}, clap accepts {names:?}"
            ));
        }
        let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
        let documented_env = code_spans(&row[1]).first().map(|e| e.to_string());
        if env != documented_env {
            problems.push(format!(
                "{shown}: env {env:?} in clap, {documented_env:?} in the README"
            ));
        }
        let default = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy())
            .collect::<Vec<_>>()
            .join(",");
        let cell = row[2].as_str();
        // One spelling of time: every time is a Duration, shown as <DURATION> in --help and
        // clap's errors (some also read a bare number as seconds, for old arguments).
        let value_type = arg.get_value_parser().type_id();
        let value_names: Vec<String> = arg
            .get_value_names()
            .unwrap_or_default()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let is_duration = value_type == std::any::TypeId::of::<Duration>();
        if is_duration != (value_names == ["DURATION"]) {
            problems.push(format!("{shown}: a Duration is shown as <DURATION>, and only it (value names {value_names:?})"));
        }
        let expected = if !arg.get_action().takes_values() || default.is_empty() {
            // A counted flag, or one without a default: the cell says in words what
            // happens when it is not given, and quotes no value.
            None
        } else if is_duration {
            // Go durations carry their unit; a bare number would be refused.
            if crate::leader::parse_duration(&default).is_err()
                || default.chars().all(|c| c.is_ascii_digit())
            {
                problems.push(format!(
                    "{shown}: default {default:?} is not a duration with a unit"
                ));
            }
            Some(format!("`{default}`"))
        } else {
            Some(format!("`{default}`"))
        };
        match expected {
            None if !code_spans(cell).is_empty() => problems.push(format!(
                "{shown}: clap has no default to quote, the README says {cell:?}"
            )),
            Some(e) => {
                // Words may follow the value ("(no limit)"), but not for time: there the
                // unit is what follows, and nothing else.
                let words_may_follow = !is_duration;
                let agrees = cell == e || (words_may_follow && cell.starts_with(&format!("{e} (")));
                if !agrees {
                    problems.push(format!(
                        "{shown}: default is {e} by clap, {cell:?} in the README"
                    ));
                }
            }
            _ => {}
        }
    }
    for (row, seen) in rows.iter().zip(&matched) {
        if !seen {
            problems.push(format!("README row {:?} names no flag clap knows", row[0]));
        }
    }
    assert!(
        problems.is_empty(),
        "README flag table vs clap:\n{}",
        problems.join("\n")
    );
}

#[test]
fn ceph_csi_config_flag() {
    let cases = [
        ("ceph-csi-config", Some(("kube-system", "ceph-csi-config"))),
        ("ceph-csi/cfg", Some(("ceph-csi", "cfg"))),
        ("", None),
        ("  ", None),
    ];
    for (flag, want) in cases {
        let got = super::ceph_csi_config(flag, "kube-system").unwrap();
        let want = want.map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(got, want, "{flag:?}");
    }
    for bad in ["/x", "ns/", "a/b/c"] {
        assert!(
            super::ceph_csi_config(bad, "kube-system").is_err(),
            "{bad:?}"
        );
    }
}
