//! Memory against volume count: the pairs are made in steps (1, 10, 100, 1,000, 2,500, 5,000,
//! 10,000, ... and each batch's end), and at each step the running provisioner's memory is read
//! once it is idle after its heap trim.

use super::*;

use testbed::bench::figures::{slope, stops};
use testbed::bench::plot;

/// Pair counts at which memory is read (besides each batch's end).
pub const STEPS: [usize; 9] = [1, 10, 100, 1_000, 2_500, 5_000, 10_000, 20_000, 50_000];

/// The claims' size: 1 GiB, as the earlier runs; 4 MiB from N = 5,000 on, so that 10,000
/// images leave the trash at Ceph's pace for small images.
pub fn pair_size(n: usize) -> &'static str {
    if n >= 5_000 { "4Mi" } else { "1Gi" }
}

/// [`pair_size`] in bytes.
pub fn quantity_bytes(q: &str) -> u64 {
    match q {
        "4Mi" => 4 << 20,
        _ => 1 << 30,
    }
}

/// One reading of the curve.
pub struct Point {
    /// PVs of ours present (each written for a claim: a pair).
    pub pairs: usize,
    /// Of their claims, Bound by kube-controller-manager when read.
    pub bound: usize,
    pub mem: Mem,
}

/// Claims of `names` Bound.
pub fn bound_of(cx: &Ctx, names: &[String]) -> usize {
    let g = cx.seen.lock().unwrap();
    names.iter().filter(|c| g.bound.contains_key(*c)).count()
}

/// Waits (bounded) until kube-controller-manager has bound `names`, then until the provisioner
/// is idle after a heap trim, and reads its memory with `pairs` present.
pub async fn read_point(cx: &Ctx, ours: &Ours, all: &[String], pairs: usize) -> Point {
    // 20 ms per claim, at least 30 s: about 50 binds per second with client QPS 200.
    let wait = scaled(
        all.len(),
        Duration::from_millis(20),
        Duration::from_secs(30),
    );
    let _ = until(&cx.seen, "every claim Bound", wait, |g| {
        all_in(&g.bound, all)
    })
    .await;
    until_idle(ours, ours.started.elapsed()).await;
    Point {
        pairs,
        bound: bound_of(cx, all),
        mem: ours.mem(),
    }
}

/// Makes the claims `names` (handed over, `size`) in the steps of [`STEPS`] on top of
/// `base` pairs, each step's PVs awaited, and reads a [`Point`] at each stop. `made`: the
/// claims made before, whose binding each reading also awaits.
pub async fn stepped(
    cx: &Ctx,
    ours: &Ours,
    names: &[String],
    made: &[String],
    base: usize,
    size: &str,
    curve: &mut Vec<Point>,
) -> Result<()> {
    let mut done = 0;
    for stop in stops(&STEPS, base, names.len()) {
        let step = &names[done..stop - base];
        let wait = (Duration::from_millis(100), Duration::from_secs(300));
        claims_with_pvs(cx, step, size, "every PV of the step", wait).await?;
        done = stop - base;
        let all: Vec<String> = made.iter().chain(&names[..done]).cloned().collect();
        let p = read_point(cx, ours, &all, stop).await;
        eprintln!("memory with {stop} pairs ({} Bound): {}", p.bound, p.mem);
        curve.push(p);
    }
    Ok(())
}

/// Where the plots go: `target/bench-plots/`, and `docs/` too for a run with 10,000 pairs or
/// more (issue 25's figures).
pub fn plot_dirs(pairs: usize) -> Vec<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = vec![root.join("target/bench-plots")];
    if pairs >= 10_000 {
        v.push(root.join("docs"));
    }
    v
}

/// Writes the report so far to `target/bench-plots/scale-partial.md` (best effort).
pub fn checkpoint(out: &[String]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-plots");
    let _ = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join("scale-partial.md"), out.join("\n")));
}

/// Writes `svg` as `name` into each of [`plot_dirs`]; the paths written, or why not.
pub fn write_plot(name: &str, svg: Result<String, plot::PlotError>, pairs: usize) -> String {
    let svg = match svg {
        Ok(s) => s,
        Err(e) => return format!("not drawn: {e}"),
    };
    let mut wrote = Vec::new();
    for dir in plot_dirs(pairs) {
        let path = dir.join(name);
        match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, &svg)) {
            Ok(()) => wrote.push(format!(
                "`{}`",
                path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
                    .unwrap_or(&path)
                    .display()
            )),
            Err(e) => wrote.push(format!("{} not written: {e}", path.display())),
        }
    }
    wrote.join(", ")
}

/// The curve's table, the slope of anonymous memory per pair and the plot.
pub fn report(start: Mem, curve: &[Point], out: &mut Vec<String>) {
    out.push(String::new());
    out.push("### Memory against volume count (the same process, idle after its heap trim at each step; MiB)\n".into());
    out.push(
        "| pairs (PV written for a claim) | claims Bound | VmRSS | RssAnon | RssFile | VmHWM |"
            .into(),
    );
    out.push("|---|---|---|---|---|---|".into());
    out.push(format!(
        "| 0 (after start) | | {} | {:.1} |",
        start.cells(),
        start.hwm
    ));
    for p in curve {
        out.push(format!(
            "| {} | {} | {} | {:.1} |",
            p.pairs,
            p.bound,
            p.mem.cells(),
            p.mem.hwm
        ));
    }
    let from_1000: Vec<(f64, f64)> = curve
        .iter()
        .filter(|p| p.pairs >= 1_000)
        .map(|p| (p.pairs as f64, p.mem.anon * 1024.0 * 1024.0))
        .collect();
    out.push(String::new());
    if let Some(s) = slope(&from_1000) {
        out.push(format!(
            "- anonymous memory per pair (least-squares slope of RssAnon over the readings from 1,000 pairs on): **{:.2} KB**",
            s / 1000.0
        ));
    }
    if let (Some(a), Some(b)) = (curve.iter().find(|p| p.pairs >= 1_000), curve.last())
        && b.pairs > a.pairs
    {
        out.push(format!(
            "- from {} to {} pairs: RssAnon {:+.1} MiB ({:.2} KB per pair), VmRSS {:+.1} MiB",
            a.pairs,
            b.pairs,
            b.mem.anon - a.mem.anon,
            (b.mem.anon - a.mem.anon) * 1024.0 * 1024.0 / (b.pairs - a.pairs) as f64 / 1000.0,
            b.mem.rss - a.mem.rss
        ));
    }
    if let Some(last) = curve.last() {
        out.push(format!(
            "- VmRSS with {} pairs: **{:.1} MiB** (goal at 10,000: ≤ 64 MiB: {})",
            last.pairs,
            last.mem.rss,
            if last.mem.rss <= 64.0 {
                "met"
            } else {
                "not met"
            }
        ));
        let series = |name: &str, f: fn(&Mem) -> f64| plot::Series {
            name: name.into(),
            points: curve.iter().map(|p| (p.pairs as f64, f(&p.mem))).collect(),
        };
        let svg = plot::lines(
            &plot::Axes {
                title: "rbd-provisioner: resident memory against volume count (idle)",
                x: "claim/PV pairs (logarithmic)",
                y: "MiB",
                log_x: true,
            },
            &[
                series("VmRSS", |m| m.rss),
                series("RssAnon (heap, stacks)", |m| m.anon),
                series("RssFile (mapped libraries)", |m| m.file),
                plot::Series {
                    name: "goal: VmRSS ≤ 64 MiB at 10,000 pairs".into(),
                    points: vec![(1.0, 64.0), (last.pairs.max(10) as f64, 64.0)],
                },
            ],
        );
        out.push(format!(
            "- plot: {}",
            write_plot("scale-memory.svg", svg, last.pairs)
        ));
    }
}
