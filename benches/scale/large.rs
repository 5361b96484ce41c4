//! The large-claims mode (`RBD_BENCH_ANNOTATION_KIB`): memory with N claims carrying large
//! annotations, and the page sizes of the watches' lists.

use super::*;

/// `RBD_BENCH_PAGE_SIZES`, e.g. `500,100,50,20`; 0 is the default (streaming lists), so
/// `0,0` restarts this build four times over the same pairs.
pub fn page_sizes() -> Vec<u32> {
    std::env::var("RBD_BENCH_PAGE_SIZES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// Each page size twice, alternating, with this build: rows of a table.
pub async fn page_size_sweep(cx: &Ctx, over: &str, out: &mut Vec<String>) -> Result<()> {
    let sizes = page_sizes();
    if sizes.is_empty() {
        return Ok(());
    }
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_rbd-provisioner"));
    let mut rows: Vec<(u32, Vec<Sample>)> = sizes.iter().map(|p| (*p, Vec::new())).collect();
    for _ in 0..2 {
        for (page, samples) in rows.iter_mut() {
            let env = [("RBD_PROVISIONER_LIST_PAGE_SIZE", page.to_string())];
            samples.push(sample(cx, &bin, &env).await?);
        }
    }
    for (page, samples) in rows {
        let ready: Vec<String> = samples.iter().map(|s| ms(s.ready)).collect();
        let hwm: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1}", s.mem.hwm))
            .collect();
        let rss: Vec<String> = samples
            .iter()
            .map(|s| format!("{:.1}", s.mem.rss))
            .collect();
        // 0 asks for the default: streaming lists where the API server offers them.
        let page = match page {
            0 => "0 (streaming)".to_string(),
            p => p.to_string(),
        };
        out.push(format!(
            "| {over} | {page} | {} | {} | {} |",
            ready.join(" / "),
            hwm.join(" / "),
            rss.join(" / ")
        ));
    }
    Ok(())
}

/// Memory with large claims (see the module documentation).
pub async fn large_claims(cx: &Ctx, n: usize, kib: usize, out: &mut Vec<String>) -> Result<()> {
    cx.until_listed().await?;
    let names: Vec<String> = (0..n).map(|i| format!("mem-{i}")).collect();
    let pvs: Vec<String> = names.iter().map(|c| format!("{}-{c}", cx.ns)).collect();
    let small_n = env_or("RBD_BENCH_SMALL_CLAIMS", 0);
    let small: Vec<String> = (0..small_n).map(|i| format!("small-{i}")).collect();
    let result = large_claims_phases(cx, &names, &small, kib, out).await;
    // Claims first (their PVs are then released), then the PVs.
    let small_left: Vec<String> = {
        let g = cx.seen.lock().unwrap();
        small
            .iter()
            .filter(|c| !g.claim_gone.contains_key(*c))
            .cloned()
            .collect()
    };
    let _ = delete_and_release_all(cx, &small_left).await;
    let _ = annotate(cx, &names, 0).await;
    let deleted = delete_and_release_all(cx, &names).await;
    let gone = delete_volumes(cx, &pvs).await;
    result.and(deleted.map(|_| ())).and(gone)
}

pub async fn large_claims_phases(
    cx: &Ctx,
    names: &[String],
    small: &[String],
    kib: usize,
    out: &mut Vec<String>,
) -> Result<()> {
    let n = names.len();
    let made = create_pairs(cx, names).await?;
    let bound = until(
        &cx.seen,
        "every claim Bound",
        scaled(n, Duration::from_millis(200), Duration::from_secs(300)),
        |g| all_in(&g.bound, names),
    )
    .await;
    let bound_count = {
        let g = cx.seen.lock().unwrap();
        names.iter().filter(|c| g.bound.contains_key(*c)).count()
    };
    out.push(format!(
        "### Memory with {n} claims carrying a {kib} KiB annotation each\n"
    ));
    out.push(format!(
        "{n} PVs of the peer's class (`Retain`, no image) each pre-bound to a claim bound to it: created in {}, {bound_count} of the claims Bound{}.\n",
        secs(made),
        if bound.is_err() {
            " (the rest was not, within the wait)"
        } else {
            ""
        }
    ));
    let bins = binaries();
    let mut plain = Vec::new();
    for (_, bin) in &bins {
        plain.push(sample(cx, bin, &[]).await?);
    }
    let small_n = small.len();
    if small_n > 0 {
        let t = Instant::now();
        let nowhere = format!("{}-nowhere", cx.ns);
        all_ok(
            stream::iter(small.iter()).map(|name| small_claim(cx, name, &cx.peer, &nowhere)),
            CREATE_IN_FLIGHT,
        )
        .await?;
        out.push(format!(
            "Beside them during the first sweep (after the plain runs): {small_n} small claims pre-bound to a PV that does not exist (created in {}).\n",
            secs(t.elapsed())
        ));
    }

    let sizes = !page_sizes().is_empty();
    let mut sweep = Vec::new();
    if sizes {
        sweep.push(
            "| claims | page size | start → watches synced | VmHWM MiB | VmRSS idle MiB |".into(),
        );
        sweep.push("|---|---|---|---|---|".into());
        let over = if small_n > 0 {
            format!("{n} plain + {small_n} small")
        } else {
            format!("{n} plain")
        };
        page_size_sweep(cx, &over, &mut sweep).await?;
    }
    if small_n > 0 {
        delete_and_release_all(cx, small).await?;
        let gone = until(
            &cx.seen,
            "the small claims gone",
            scaled(small_n, Duration::from_millis(20), Duration::from_secs(120)),
            |g| all_in(&g.claim_gone, small),
        )
        .await;
        if let Err(e) = gone {
            out.push(format!("- small claims: {e}"));
        }
    }
    let took = annotate(cx, names, kib).await?;
    out.push(format!(
        "Annotating the {n} claims ({} MiB in all, 16 in flight) took {}.\n",
        n * kib / 1024,
        secs(took)
    ));
    let mut annotated = Vec::new();
    for (_, bin) in &bins {
        annotated.push(sample(cx, bin, &[]).await?);
    }
    if sizes {
        page_size_sweep(cx, &format!("{n} annotated"), &mut sweep).await?;
    }

    out.push("| binary | claims | start → watches synced | VmRSS idle | RssAnon | RssFile | VmHWM | WARN+ERROR lines |".into());
    out.push("|---|---|---|---|---|---|---|---|".into());
    for (i, (label, _)) in bins.iter().enumerate() {
        for (what, s) in [("plain", &plain[i]), ("annotated", &annotated[i])] {
            out.push(format!(
                "| {label} | {what} | {} | {} | {:.1} | {} |",
                ms(s.ready),
                s.mem.cells(),
                s.mem.hwm,
                s.problems
            ));
        }
        out.push(format!(
            "| {label} | **annotated ÷ plain** | | **{:.2}×** | {:.2}× | | {:.2}× | |",
            annotated[i].mem.rss / plain[i].mem.rss,
            annotated[i].mem.anon / plain[i].mem.anon,
            annotated[i].mem.hwm / plain[i].mem.hwm
        ));
    }
    if sizes {
        out.push(String::new());
        out.push("Page sizes of the claims and volumes watches' lists (this build, `RBD_PROVISIONER_LIST_PAGE_SIZE`; each started twice, alternating):\n".into());
        out.append(&mut sweep);
    }
    Ok(())
}
