//! Scenario 7, the soak: claims created and deleted in a loop while the provisioner's resident
//! memory, open file descriptors and thread count are sampled from /proc every 10 s; they must
//! stay flat. Runs on the shared bed (it stops nothing).
//!
//! `RBDP_SOAK_MINUTES=30` (or `RBDP_FAULT_FULL=1`, which means 30) runs it; the suite's quick
//! run skips it. The samples go to `$RBDP_SOAK_CSV` (default
//! `target/soak.csv`); `hack/plot-soak.py` draws them.

use testbed as common;
use testbed::harness;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use harness::*;
use serde_json::json;

/// Least-squares slope of `y` over `x`, per unit of `x`.
fn slope(pts: &[(f64, f64)]) -> f64 {
    let n = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

#[tokio::test]
async fn soak_create_delete_loop_stays_flat() {
    let minutes: f64 = std::env::var("RBDP_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(if full() { 30.0 } else { 0.0 });
    if minutes <= 0.0 {
        println!("soak skipped: set RBDP_SOAK_MINUTES (or RBDP_FAULT_FULL=1 for 30 minutes)");
        return;
    }
    let every = Duration::from_secs(if minutes >= 5.0 { 10 } else { 2 });
    let mut rng = Rng::from_env("soak_create_delete_loop_stays_flat");
    let addr = free_addr();
    let env = [("MAINTENANCE_INTERVAL", "10"), ("CEPH_CLIENT_IDLE", "20")];
    let args = ["--http-endpoint", addr.as_str()];
    let mut c = Scenario::serving_with("soak", &env, &args).await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let pid = c.prov.pid();
    let csv = std::env::var_os("RBDP_SOAK_CSV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/soak.csv")
        });
    let mut out = std::fs::File::create(&csv).unwrap();
    writeln!(out, "seconds,rss_kib,open_fds,threads,cycles,claims").unwrap();

    // The sampler: every `every`, on its own, whatever the loop is doing.
    let started = Instant::now();
    let progress = std::sync::Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let taken = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = {
        let (progress, taken) = (progress.clone(), taken.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some((rss, fds, threads)) = proc_sample(pid) else {
                    return;
                };
                let t = started.elapsed().as_secs_f64();
                let (cycles, claims) = *progress.lock().unwrap();
                writeln!(out, "{t:.0},{rss},{fds},{threads},{cycles},{claims}").unwrap();
                out.flush().unwrap();
                taken
                    .lock()
                    .unwrap()
                    .push((t, rss as f64, fds as f64, threads as f64));
            }
        })
    };

    let until = started + Duration::from_secs_f64(minutes * 60.0);
    let (mut cycles, mut claims) = (0u64, 0u64);
    let mut violations = Vec::new();
    while Instant::now() < until {
        // One cycle: 5-15 claims, all Bound, all deleted, all gone (image and trash too).
        let n = 5 + rng.next_u64() % 11;
        let names: Vec<String> = (0..n).map(|i| format!("s{cycles}-{i}")).collect();
        let mut uids = Vec::new();
        for n in &names {
            uids.push(create_claim(&c.admin, &c.ns, n, &class).await);
        }
        if let Err(left) = all_bound(&c.admin, &c.ns, &names, Duration::from_secs(120)).await {
            violations.push(format!("cycle {cycles}: not Bound in 120 s: {left:?}"));
            break;
        }
        for n in &names {
            delete_claim(&c.admin, &c.ns, n).await;
        }
        let (v, _) = check_gone(&c, &uids, Duration::from_secs(120)).await;
        if !v.is_empty() {
            violations.extend(v);
            break;
        }
        cycles += 1;
        claims += n;
        *progress.lock().unwrap() = (cycles, claims);
        if !c.prov.is_running() {
            violations.push("the provisioner exited".into());
            break;
        }
    }
    sampler.abort();
    let samples = taken.lock().unwrap().clone();
    // A soak that ends early (a break above, or the sampler losing the process) is a failure,
    // not a shorter soak.
    let ran = started.elapsed();
    if ran < Duration::from_secs_f64(minutes * 60.0) {
        violations.push(format!("the soak ended after {ran:?} of {minutes} min"));
    }
    if cycles == 0 {
        violations.push("not one create-delete cycle completed".into());
    }
    if let Some(last) = samples.last()
        && last.0 + 3.0 * every.as_secs_f64() < ran.as_secs_f64()
    {
        violations.push(format!(
            "the last sample of the provisioner's /proc was taken at {:.0} s of {:.0} s",
            last.0,
            ran.as_secs_f64()
        ));
    }
    if samples.is_empty() {
        violations.push(
            "no sample of the provisioner's /proc was taken: it is not dumpable, so only root (or CAP_SYS_PTRACE) may list its /proc/PID/fd".into(),
        );
    }
    if !healthz(&addr) {
        violations.push("/healthz does not answer 200".into());
    }
    // Flat: after a warm-up (the first half: the allocator arenas of the worker threads fill,
    // the event recorder's cache reaches its 6-minute window, Ceph's client caches theirs;
    // measured: resident memory rises steeply for about 5 minutes and levels off by 15), the
    // trend over the second half must not add more than 10 % of the resident memory per 30
    // minutes, and the typical (median) fd and thread counts of the last quarter must not
    // exceed those of the third. Single samples come and go with connections, a leak raises
    // the floor.
    let warm = samples.len() / 2;
    let rest = &samples[warm..];
    let median = |xs: &[(f64, f64, f64, f64)], f: fn(&(f64, f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = xs.iter().map(f).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let min = |xs: &[(f64, f64, f64, f64)], f: fn(&(f64, f64, f64, f64)) -> f64| {
        xs.iter().map(f).fold(f64::MAX, f64::min)
    };
    let max = |xs: &[(f64, f64, f64, f64)], f: fn(&(f64, f64, f64, f64)) -> f64| {
        xs.iter().map(f).fold(0.0, f64::max)
    };
    if rest.len() >= 6 {
        let per_30min = |f: fn(&(f64, f64, f64, f64)) -> f64| {
            slope(&rest.iter().map(|s| (s.0, f(s))).collect::<Vec<_>>()) * 1800.0
        };
        let mean_rss = rest.iter().map(|s| s.1).sum::<f64>() / rest.len() as f64;
        let rss_trend = per_30min(|s| s.1);
        let half = rest.len() / 2;
        let (third, last) = (&rest[..half], &rest[half..]);
        report(&format!(
            "soak: {minutes} min, {cycles} cycles, {claims} claims; RSS {:.1} MiB at the start, {:.1}-{:.1} MiB over the whole run, {:.1}-{:.1} MiB over the second half (trend {:+.1} MiB/30 min); open fds {}-{} (median {} in the third quarter, {} in the last); threads {}-{} (median {} then {})",
            samples.first().map_or(0.0, |s| s.1) / 1024.0,
            min(&samples, |s| s.1) / 1024.0,
            max(&samples, |s| s.1) / 1024.0,
            min(rest, |s| s.1) / 1024.0,
            max(rest, |s| s.1) / 1024.0,
            rss_trend / 1024.0,
            min(&samples, |s| s.2),
            max(&samples, |s| s.2),
            median(third, |s| s.2),
            median(last, |s| s.2),
            min(&samples, |s| s.3),
            max(&samples, |s| s.3),
            median(third, |s| s.3),
            median(last, |s| s.3),
        ));
        if minutes >= 10.0 {
            if rss_trend > 0.10 * mean_rss {
                violations.push(format!(
                    "resident memory grows {:.1} MiB per 30 min over the second half (mean {:.1} MiB)",
                    rss_trend / 1024.0,
                    mean_rss / 1024.0
                ));
            }
            if median(last, |s| s.2) > median(third, |s| s.2) + 4.0 {
                violations.push("open file descriptors climb".into());
            }
            if median(last, |s| s.3) > median(third, |s| s.3) + 2.0 {
                violations.push("threads climb".into());
            }
        }
    }
    println!("soak samples in {}", csv.display());
    assert_no_violations(&violations);
}
