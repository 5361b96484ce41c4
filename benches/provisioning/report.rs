//! The Markdown report: one table per part of the run, ours against each peer that ran (the
//! in-tree one unless `RBD_BENCH_PEER` names another, and the CSI peer), as ours/theirs.

use std::fmt::Write as _;
use std::time::Duration;

use crate::bed::peer_label;
use crate::figures::{Burst, Del, Figures, Seq, Side, pct};
use crate::watch::POOL_POLL;
use crate::{BURST_N, DEL_N, SEQ_N, TRASH_POLL};

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn dist(v: &[Duration]) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    format!(
        "p50 {} / p95 {} / p99 {}",
        ms(pct(v, 50.0)),
        ms(pct(v, 95.0)),
        ms(pct(v, 99.0))
    )
}

fn ratio(a: Option<Duration>, b: Option<Duration>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > Duration::ZERO => {
            format!("{:.2}", a.as_secs_f64() / b.as_secs_f64())
        }
        _ => "n/a".into(),
    }
}

fn opt_s(d: Option<Duration>) -> String {
    d.map(secs).unwrap_or_else(|| "n/a".into())
}

fn rate(n: usize, d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1}/s", n as f64 / d.as_secs_f64()))
        .unwrap_or_else(|| "n/a".into())
}

fn mib(k: Option<u64>) -> String {
    k.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

/// Appends one row of a Markdown table, `| a | b |`; an empty cell is written `| |`.
fn row(s: &mut String, cells: &[&str]) {
    s.push('|');
    for cell in cells {
        if !cell.is_empty() {
            s.push(' ');
            s.push_str(cell);
        }
        s.push_str(" |");
    }
    s.push('\n');
}

/// Appends a table's header row and the `|---|` rule under it.
fn head(s: &mut String, cells: &[&str]) {
    row(s, cells);
    s.push_str(&"|---".repeat(cells.len()));
    s.push_str("|\n");
}

/// A side the report compares ours with: how its columns are named, and its figures.
struct Theirs<'a> {
    label: String,
    seq: &'a Seq,
    burst: &'a Burst,
}

/// The sides compared with ours this run: the peer (unless skipped), then the CSI peer (if it ran).
fn theirs(f: &Figures) -> Vec<Theirs<'_>> {
    let mut v = Vec::new();
    if !f.no_peer {
        v.push(Theirs {
            label: peer_label(),
            seq: &f.seq_peer,
            burst: &f.burst_peer,
        });
    }
    if f.order.contains(&Side::Csi) {
        v.push(Theirs {
            label: "CSI peer".into(),
            seq: &f.seq_csi,
            burst: &f.burst_csi,
        });
    }
    v
}

/// A table's header: `first`, ours, each of theirs, ours/each of theirs (with `what` the ratio
/// is of), then `extra`.
fn cmp_head(s: &mut String, first: &str, ts: &[Theirs], what: &str, extra: &[&str]) {
    let mut cells = vec![first.to_string(), "ours".to_string()];
    cells.extend(ts.iter().map(|t| t.label.clone()));
    cells.extend(ts.iter().map(|t| format!("ours/{}{what}", t.label)));
    cells.extend(extra.iter().map(|e| e.to_string()));
    head(s, &cells.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A row of such a table: `label`, ours's `cell`, each of theirs's, the ratios, then `extra`.
fn cmp_row<'a>(
    s: &mut String,
    label: &str,
    ts: &[Theirs<'a>],
    cell: impl Fn(&Burst, &Seq) -> String,
    ratio: impl Fn(&Theirs<'a>) -> String,
    ours: (&Burst, &Seq),
    extra: &[&str],
) {
    let mut cells = vec![label.to_string(), cell(ours.0, ours.1)];
    cells.extend(ts.iter().map(|t| cell(t.burst, t.seq)));
    cells.extend(ts.iter().map(&ratio));
    cells.extend(extra.iter().map(|e| e.to_string()));
    row(s, &cells.iter().map(String::as_str).collect::<Vec<_>>());
}

fn order_line(f: &Figures) -> String {
    let name = |side: &Side| match side {
        Side::Ours => "ours".to_string(),
        Side::Peer => format!("the {}", peer_label()),
        Side::Csi => "the CSI peer".to_string(),
    };
    let sides: Vec<String> = f.order.iter().map(name).collect();
    let skipped = if f.no_peer {
        " (no in-tree RBD plugin on this Kubernetes: no in-tree peer)"
    } else {
        ""
    };
    format!(
        "\nOrder this run (rotation {}): {}, then the binder-only control{skipped}.\n",
        f.rotation,
        sides.join(", then ")
    )
}

pub fn report(f: &Figures, header: &str) -> String {
    let mut s = String::new();
    let o = &f.burst_ours;
    let ts = theirs(f);
    let ours = (&f.burst_ours, &f.seq_ours);
    let _ = writeln!(s, "{header}");
    let _ = writeln!(s, "{}", order_line(f));
    head(&mut s, &["phase", "load average at start", "at end"]);
    for (phase, a, b) in &f.phase_load {
        row(&mut s, &[phase, a, b]);
    }
    // Negative annotation -> PV gaps are reported, not clamped: both ends come from watches
    // timestamped on this process's monotonic clock.
    let neg = |v: &[Duration]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            format!(
                "{} claim(s), by up to {}",
                v.len(),
                ms(*v.iter().max().unwrap())
            )
        }
    };
    let mut before = format!(
        "one at a time: ours {}; burst: ours {}",
        neg(&f.seq_ours.pv_before_ann),
        neg(&o.pv_before_ann)
    );
    for t in &ts {
        let _ = write!(
            before,
            "; {}: one at a time {}, burst {}",
            t.label,
            neg(&t.seq.pv_before_ann),
            neg(&t.burst.pv_before_ann)
        );
    }
    let _ = writeln!(
        s,
        "\nPV seen before the annotation (one clock, this process's; left out of the annotation → PV rows): {before}."
    );
    let _ = writeln!(s, "\n### 1. One claim at a time (1 GiB, N={SEQ_N})\n");
    cmp_head(&mut s, "claim created →", &ts, " (p50 / p99)", &[]);
    let p50 = |v: &[Duration]| (!v.is_empty()).then(|| pct(v, 50.0));
    let p99 = |v: &[Duration]| (!v.is_empty()).then(|| pct(v, 99.0));
    // One figure of the one-at-a-time phase, ours against each of theirs.
    let seq_row = |s: &mut String, label: &str, of: fn(&Seq) -> &[Duration]| {
        let a = of(&f.seq_ours);
        cmp_row(
            s,
            label,
            &ts,
            |_, q| dist(of(q)),
            |t| {
                let b = of(t.seq);
                format!("{} / {}", ratio(p50(a), p50(b)), ratio(p99(a), p99(b)))
            },
            ours,
            &[],
        );
    };
    seq_row(&mut s, "**PV exists**", |q| &q.pv);
    seq_row(
        &mut s,
        "binder annotated the claim (handed it to a provisioner)",
        |q| &q.annotated,
    );
    seq_row(
        &mut s,
        "*annotation → PV exists (the provisioner's own part)*",
        |q| &q.ann_to_pv,
    );
    seq_row(&mut s, "**claim Bound**", |q| &q.bound);

    let _ = writeln!(
        s,
        "\n### 2. Burst: {BURST_N} claims (1 GiB) created at once\n"
    );
    cmp_head(
        &mut s,
        "from the first create →",
        &ts,
        "",
        &["binder-only control"],
    );
    // One figure of the burst (creation or deletion), ours against each of theirs.
    let burst_row =
        |s: &mut String, label: &str, of: fn(&Burst) -> Option<Duration>, extra: &[&str]| {
            cmp_row(
                s,
                label,
                &ts,
                |b, _| opt_s(of(b)),
                |t| ratio(of(o), of(t.burst)),
                ours,
                extra,
            );
        };
    let accepted = format!("{} (claims + pre-bound PVs)", opt_s(f.control_api_create));
    cmp_row(
        &mut s,
        &format!("all {BURST_N} claims accepted by the API"),
        &ts,
        |b, _| opt_s(b.api_create),
        |_| String::new(),
        ours,
        &[&accepted],
    );
    burst_row(
        &mut s,
        "every claim annotated by the binder (handed to a provisioner)",
        |b| b.all_annotated,
        &[""],
    );
    cmp_row(
        &mut s,
        "*per claim: annotation → PV exists*",
        &ts,
        |b, _| dist(&b.ann_to_pv),
        |t| ratio(p50(&o.ann_to_pv), p50(&t.burst.ann_to_pv)),
        ours,
        &[""],
    );
    burst_row(&mut s, "half the PVs exist (p50)", |b| b.pv_p50, &[""]);
    burst_row(
        &mut s,
        "*the provisioner's part: last claim annotated → every PV exists*",
        |b| {
            b.all_pvs
                .zip(b.all_annotated)
                .map(|(p, a)| p.saturating_sub(a))
        },
        &[""],
    );
    burst_row(
        &mut s,
        "*the provisioner's part: last hand-over seen on any claim → every PV exists* (0 when every PV was there first; our goal: ≤ 0.1 s)",
        |b| b.last_handover_to_pvs,
        &[""],
    );
    // A time for the whole burst, with its rate in claims per second.
    let timed = |d: Option<Duration>| format!("{} ({})", opt_s(d), rate(BURST_N, d));
    let bold = |t: &Theirs, of: fn(&Burst) -> Option<Duration>| {
        format!("**{}**", ratio(of(o), of(t.burst)))
    };
    cmp_row(
        &mut s,
        "**every PV exists**",
        &ts,
        |b, _| timed(b.all_pvs),
        |t| bold(t, |b| b.all_pvs),
        ours,
        &[""],
    );
    cmp_row(
        &mut s,
        "**every claim Bound** (binder-capped)",
        &ts,
        |b, _| timed(b.all_bound),
        |t| bold(t, |b| b.all_bound),
        ours,
        &[&timed(f.control_all_bound)],
    );

    let _ = writeln!(s, "\n### 3. Deletion (Delete policy)\n");
    let _ = writeln!(s, "One Bound claim at a time, N={DEL_N} per size, ours:\n");
    head(&mut s, &["claim deleted →", "1 GiB", "100 GiB"]);
    row(
        &mut s,
        &[
            "PV gone",
            &dist(&f.del_1g.pv_gone),
            &dist(&f.del_100g.pv_gone),
        ],
    );
    row(
        &mut s,
        &[
            &format!(
                "image purged from the trash (polled every {} ms)",
                TRASH_POLL.as_millis()
            ),
            &dist(&f.del_1g.purged),
            &dist(&f.del_100g.purged),
        ],
    );
    let clear = |d: &Del| {
        format!(
            "{} / {}",
            opt_s(d.trash_clear),
            opt_s(d.trash_after_last_pv)
        )
    };
    row(
        &mut s,
        &[
            &format!(
                "trash holds none of the {DEL_N}: after the first deletion / after the last PV went"
            ),
            &clear(&f.del_1g),
            &clear(&f.del_100g),
        ],
    );
    let _ = writeln!(s, "\nThe burst's {BURST_N} claims deleted at once:\n");
    cmp_head(&mut s, "from the first delete →", &ts, "", &[]);
    cmp_row(
        &mut s,
        &format!("all {BURST_N} deletions accepted by the API"),
        &ts,
        |b, _| opt_s(b.api_delete),
        |_| String::new(),
        ours,
        &[],
    );
    cmp_row(
        &mut s,
        "**every PV gone**",
        &ts,
        |b, _| timed(b.all_gone),
        |t| bold(t, |b| b.all_gone),
        ours,
        &[],
    );
    burst_row(
        &mut s,
        &format!(
            "every image out of the pool (`rbd ls`, listed every {} ms; the CSI peer has none)",
            POOL_POLL.as_millis()
        ),
        |b| b.images_gone,
        &[],
    );
    // Ours: out of the trash too; the in-tree peer has no trash (its figure is the pool's).
    let purged = |b: &Burst| b.trash_free.or(b.images_gone);
    burst_row(
        &mut s,
        "every image purged (ours: out of the trash too; the peers have no trash)",
        purged,
        &[],
    );
    burst_row(
        &mut s,
        "every claim gone (kube-controller-manager's pvc-protection dropped its finalizer)",
        |b| b.claims_gone,
        &[],
    );
    burst_row(
        &mut s,
        "*the provisioner's part: last claim gone → every PV gone*",
        |b| {
            b.all_gone
                .zip(b.claims_gone)
                .map(|(g, c)| g.saturating_sub(c))
        },
        &[],
    );
    burst_row(
        &mut s,
        "*the provisioner's part: last claim gone → every image out of the pool*",
        |b| {
            b.images_gone
                .zip(b.claims_gone)
                .map(|(i, c)| i.saturating_sub(c))
        },
        &[],
    );
    cmp_row(
        &mut s,
        "*per claim: claim gone → its PV gone*",
        &ts,
        |b, _| dist(&b.gone_to_pv_gone),
        |t| ratio(p50(&o.gone_to_pv_gone), p50(&t.burst.gone_to_pv_gone)),
        ours,
        &[],
    );
    cmp_row(
        &mut s,
        &format!(
            "*per claim: claim gone → its image out of the pool* (ours: in the trash; listed every {} ms; our goal: p99 ≤ 0.5 s)",
            POOL_POLL.as_millis()
        ),
        &ts,
        |b, _| dist(&b.gone_to_out_of_pool),
        |t| {
            ratio(
                p99(&o.gone_to_out_of_pool),
                p99(&t.burst.gone_to_out_of_pool),
            )
        },
        ours,
        &[],
    );

    let _ = writeln!(s, "\n### 4. Provisioner memory (ours, one process)\n");
    head(
        &mut s,
        &[
            "VmHWM after the burst's creation",
            "VmHWM after its deletion (= run peak so far)",
            "VmRSS after its deletion",
        ],
    );
    row(
        &mut s,
        &[
            &mib(o.hwm_after_create_kib),
            &mib(o.hwm_after_delete_kib),
            &mib(o.rss_after_delete_kib),
        ],
    );
    if !f.leftovers.is_empty() {
        let _ = writeln!(s, "\nCleanup had to remove by force:");
        for l in &f.leftovers {
            let _ = writeln!(s, "- {l}");
        }
    }
    s
}
