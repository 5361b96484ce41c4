//! The Markdown report: one table per part of the run, ours against the peer (the in-tree one unless `RBD_BENCH_PEER` names another).

use std::fmt::Write as _;
use std::time::Duration;

use crate::bed::peer_label;
use crate::figures::{Burst, Del, Figures, Seq, pct};
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
        "p50 {} / p95 {} / max {}",
        ms(pct(v, 50.0)),
        ms(pct(v, 95.0)),
        ms(*v.iter().max().unwrap())
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

pub fn report(f: &Figures, header: &str) -> String {
    let mut s = String::new();
    let (o, p) = (&f.burst_ours, &f.burst_peer);
    let _ = writeln!(s, "{header}");
    let peer = format!("the {}", peer_label());
    let (first, second) = if f.peer_first {
        (peer.as_str(), "ours")
    } else {
        ("ours", peer.as_str())
    };
    if f.no_peer {
        let _ = writeln!(
            s,
            "\nOrder this run: ours, then the binder-only control (no in-tree RBD plugin on this Kubernetes: the peer columns are empty).\n"
        );
    } else {
        let _ = writeln!(
            s,
            "\nOrder this run: {first} first, then {second}, then the binder-only control.\n"
        );
    }
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
    let _ = writeln!(
        s,
        "\nPV seen before the annotation (one clock, this process's; left out of the annotation → PV rows): one at a time: ours {}, peer {}; burst: ours {}, peer {}.",
        neg(&f.seq_ours.pv_before_ann),
        neg(&f.seq_peer.pv_before_ann),
        neg(&o.pv_before_ann),
        neg(&p.pv_before_ann),
    );
    let _ = writeln!(s, "\n### 1. One claim at a time (1 GiB, N={SEQ_N})\n");
    head(
        &mut s,
        &["claim created →", "ours", &peer_label(), "ours/peer (p50)"],
    );
    let p50 = |v: &[Duration]| (!v.is_empty()).then(|| pct(v, 50.0));
    // One figure of the one-at-a-time phase, ours against the peer's.
    let seq_row = |s: &mut String, label: &str, of: fn(&Seq) -> &[Duration]| {
        let (a, b) = (of(&f.seq_ours), of(&f.seq_peer));
        row(s, &[label, &dist(a), &dist(b), &ratio(p50(a), p50(b))]);
    };
    seq_row(&mut s, "PV exists", |q| &q.pv);
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
    seq_row(&mut s, "claim Bound", |q| &q.bound);

    let _ = writeln!(
        s,
        "\n### 2. Burst: {BURST_N} claims (1 GiB) created at once\n"
    );
    head(
        &mut s,
        &[
            "from the first create →",
            "ours",
            &peer_label(),
            "ours/peer",
            "binder-only control",
        ],
    );
    row(
        &mut s,
        &[
            &format!("all {BURST_N} claims accepted by the API"),
            &opt_s(o.api_create),
            &opt_s(p.api_create),
            "",
            &format!("{} (claims + pre-bound PVs)", opt_s(f.control_api_create)),
        ],
    );
    row(
        &mut s,
        &[
            "every claim annotated by the binder (handed to a provisioner)",
            &opt_s(o.all_annotated),
            &opt_s(p.all_annotated),
            &ratio(o.all_annotated, p.all_annotated),
            "",
        ],
    );
    row(
        &mut s,
        &[
            "*per claim: annotation → PV exists*",
            &dist(&o.ann_to_pv),
            &dist(&p.ann_to_pv),
            &ratio(p50(&o.ann_to_pv), p50(&p.ann_to_pv)),
            "",
        ],
    );
    row(
        &mut s,
        &[
            "half the PVs exist (p50)",
            &opt_s(o.pv_p50),
            &opt_s(p.pv_p50),
            &ratio(o.pv_p50, p.pv_p50),
            "",
        ],
    );
    // A time for the whole burst, with its rate in claims per second.
    let timed = |d: Option<Duration>| format!("{} ({})", opt_s(d), rate(BURST_N, d));
    row(
        &mut s,
        &[
            "**every PV exists**",
            &timed(o.all_pvs),
            &timed(p.all_pvs),
            &format!("**{}**", ratio(o.all_pvs, p.all_pvs)),
            "",
        ],
    );
    row(
        &mut s,
        &[
            "**every claim Bound** (binder-capped)",
            &timed(o.all_bound),
            &timed(p.all_bound),
            &format!("**{}**", ratio(o.all_bound, p.all_bound)),
            &timed(f.control_all_bound),
        ],
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
    head(
        &mut s,
        &[
            "from the first delete →",
            "ours",
            &peer_label(),
            "ours/peer",
        ],
    );
    row(
        &mut s,
        &[
            &format!("all {BURST_N} deletions accepted by the API"),
            &opt_s(o.api_delete),
            &opt_s(p.api_delete),
            "",
        ],
    );
    row(
        &mut s,
        &[
            "**every PV gone**",
            &timed(o.all_gone),
            &timed(p.all_gone),
            &format!("**{}**", ratio(o.all_gone, p.all_gone)),
        ],
    );
    row(
        &mut s,
        &[
            "every image out of the pool (`rbd ls`, polled every 250 ms)",
            &opt_s(o.images_gone),
            &opt_s(p.images_gone),
            &ratio(o.images_gone, p.images_gone),
        ],
    );
    row(
        &mut s,
        &[
            "every image purged (ours: out of the trash too; the peer has no trash)",
            &opt_s(o.trash_free),
            &opt_s(p.images_gone),
            &ratio(o.trash_free, p.images_gone),
        ],
    );

    row(
        &mut s,
        &[
            "every claim gone (kube-controller-manager's pvc-protection dropped its finalizer)",
            &opt_s(o.claims_gone),
            &opt_s(p.claims_gone),
            &ratio(o.claims_gone, p.claims_gone),
        ],
    );
    let after = |b: &Burst| {
        b.images_gone
            .zip(b.claims_gone)
            .map(|(i, c)| i.saturating_sub(c))
    };
    row(
        &mut s,
        &[
            "*the provisioner's part: last claim gone → every image out of the pool*",
            &opt_s(after(o)),
            &opt_s(after(p)),
            &ratio(after(o), after(p)),
        ],
    );
    row(
        &mut s,
        &[
            "*per claim: claim gone → its PV gone*",
            &dist(&o.gone_to_pv_gone),
            &dist(&p.gone_to_pv_gone),
            "",
        ],
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
