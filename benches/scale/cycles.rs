//! Phase 5: create/delete cycles with the restarted provisioner, memory sampled along the way.

use super::*;

/// One cycle's times: claim created → PV exists; claim deleted and released → PV marked for
/// deletion (the provisioner's delete call) → PV gone; and whether kube-controller-manager
/// had bound the claim before it was deleted.
pub struct CycleTimes {
    pub to_pv: Duration,
    pub to_deleting: Duration,
    pub to_gone: Duration,
    pub bound: bool,
}

/// Waits until `map` holds `name`.
pub async fn until_seen(
    cx: &Ctx,
    what: &str,
    map: fn(&Seen) -> &std::collections::HashMap<String, Instant>,
    name: &str,
) -> Result<()> {
    until(&cx.seen, what, CYCLE_WAIT, |g| map(g).contains_key(name))
        .await
        .with_context(|| format!("claim {name}"))
}

/// A claim created handed over, its PV awaited, the claim deleted and released (its
/// pvc-protection finalizer removed), its PV gone awaited.
pub async fn cycle(cx: &Ctx, name: String) -> Result<CycleTimes> {
    let t0 = Instant::now();
    create_claim(cx, &name, true, CYCLE_SIZE).await?;
    until_seen(cx, "its PV", |g| &g.pv_created, &name).await?;
    let t1 = Instant::now();
    let bound = cx.seen.lock().unwrap().bound.contains_key(&name);
    delete_and_release(cx, &name).await?;
    let t2 = Instant::now();
    until_seen(cx, "its PV gone", |g| &g.pv_gone, &name).await?;
    let g = cx.seen.lock().unwrap();
    let deleting = g.pv_deleting.get(&name).unwrap_or(&g.pv_gone[&name]);
    Ok(CycleTimes {
        to_pv: t1 - t0,
        to_deleting: deleting.saturating_duration_since(t2),
        to_gone: t2.elapsed(),
        bound,
    })
}

/// Create/delete cycles, 24 in flight, with memory sampled along the way. A soak (`soak`: how
/// long) starts cycles until that time is up instead of stopping at `total`.
pub async fn cycle_phase(
    cx: &Ctx,
    ours: &Ours,
    total: usize,
    soak: Option<Duration>,
    out: &mut Vec<String>,
) -> Result<()> {
    let every = (total / 10).clamp(1, 1000);
    // 500 ms per cycle (2 per second), at least 5 min; cycles in flight at the deadline finish.
    let budget =
        soak.unwrap_or_else(|| scaled(total, Duration::from_millis(500), Duration::from_secs(300)));
    let failures = AtomicUsize::new(0);
    let started = AtomicUsize::new(0);
    let t0 = Instant::now();
    let deadline = t0 + budget;
    let mem_before = ours.mem();
    let mut samples: Vec<(usize, Duration, Mem)> = Vec::new();
    let mut times: Vec<CycleTimes> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    {
        let mut results = stream::iter(0..total)
            .take_while(|_| {
                future::ready(
                    Instant::now() < deadline
                        && failures.load(Ordering::Relaxed) < CYCLE_MAX_FAILURES,
                )
            })
            .map(|i| {
                started.fetch_add(1, Ordering::Relaxed);
                cycle(cx, format!("cyc-{i}"))
            })
            .buffer_unordered(CYCLE_IN_FLIGHT);
        while let Some(r) = results.next().await {
            match r {
                Ok(t) => {
                    times.push(t);
                    if times.len().is_multiple_of(every) {
                        samples.push((times.len(), t0.elapsed(), ours.mem()));
                    }
                }
                Err(e) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    if errors.len() < 5 {
                        errors.push(format!("{e:#}"));
                    }
                }
            }
        }
    }
    let took = t0.elapsed();
    let done = times.len();
    let started = started.into_inner();
    let failed = failures.into_inner();
    // Their images must leave the trash: waited for here, and purged by the cleanup otherwise.
    let names: Vec<String> = {
        let g = cx.seen.lock().unwrap();
        (0..started)
            .map(|i| format!("cyc-{i}"))
            .filter(|c| g.pv_created.contains_key(c))
            .collect()
    };
    cx.expect_purged(&names);
    let trash = until(
        &cx.seen,
        "the cycles' images out of the trash",
        Duration::from_secs(120),
        |g| {
            !names
                .iter()
                .any(|c| g.pv_gone.contains_key(c) && g.trash_pending.contains(c))
        },
    )
    .await
    .map(|_| t0.elapsed().saturating_sub(took));
    let mem_after = ours.mem();

    out.push(String::new());
    out.push(format!(
        "### {done} create/delete cycles with the restarted provisioner ({CYCLE_IN_FLIGHT} in flight)\n"
    ));
    out.push(format!(
        "Each cycle: a {CYCLE_SIZE} claim created handed over, its PV awaited, the claim deleted and its `{PVC_PROTECTION}` finalizer removed by the harness, its PV gone awaited. {done} of {total} done in {} ({:.1} cycles/s){}{}. Before the cycles: {mem_before}.\n",
        secs(took),
        done as f64 / took.as_secs_f64(),
        if failed > 0 {
            format!("; {failed} failed")
        } else {
            String::new()
        },
        if let Some(d) = soak {
            format!("; a soak: cycles started for {}", secs(d))
        } else if started < total {
            format!(
                "; **stopped early** after starting {started} (budget {}, or {CYCLE_MAX_FAILURES} failures)",
                secs(budget)
            )
        } else {
            String::new()
        },
    ));
    out.push(
        "| cycles done | elapsed | cycles/s (since the previous row) | VmRSS MiB | RssAnon MiB |"
            .into(),
    );
    out.push("|---|---|---|---|---|".into());
    let mut prev = (0usize, Duration::ZERO);
    for (k, at, m) in &samples {
        out.push(format!(
            "| {k} | {} | {:.1} | {:.1} | {:.1} |",
            secs(*at),
            (k - prev.0) as f64 / (*at - prev.1).as_secs_f64(),
            m.rss,
            m.anon
        ));
        prev = (*k, *at);
    }
    out.push(String::new());
    if let (Some(a), Some(b)) = (samples.first(), samples.last()) {
        out.push(format!(
            "- growth from {} to {} cycles: VmRSS {:+.1} MiB, RssAnon {:+.1} MiB; peak (VmHWM) {:.1} MiB",
            a.0,
            b.0,
            b.2.rss - a.2.rss,
            b.2.anon - a.2.anon,
            mem_after.hwm
        ));
    }
    out.push(format!(
        "- after the cycles, their images out of the trash: {}; then {mem_after}",
        match &trash {
            Ok(d) => format!("{} after the last cycle", secs(*d)),
            Err(e) => format!("not yet ({e})"),
        }
    ));
    if !times.is_empty() {
        let spread = |f: fn(&CycleTimes) -> Duration| {
            let v: Vec<Duration> = times.iter().map(f).collect();
            format!(
                "p50 {} / p95 {} / max {}",
                ms(pct(&v, 50.0)),
                ms(pct(&v, 95.0)),
                ms(pct(&v, 100.0))
            )
        };
        let bound = times.iter().filter(|t| t.bound).count();
        out.push(format!(
            "- claim created → PV exists: {}",
            spread(|t| t.to_pv)
        ));
        out.push(format!(
            "- claim deleted and released → PV marked for deletion (the provisioner's delete, Bound or not): {}",
            spread(|t| t.to_deleting)
        ));
        out.push(format!(
            "- claim deleted and released → PV gone (`kubernetes.io/pv-protection` removed by the harness once the provisioner deleted the PV): {}",
            spread(|t| t.to_gone)
        ));
        out.push(format!(
            "- {bound} of the {done} claims were Bound (by kube-controller-manager) when deleted"
        ));
    }
    for e in &errors {
        out.push(format!("- cycle error: {e}"));
    }
    Ok(())
}
