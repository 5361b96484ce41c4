//! The provisioner's own ceiling and its memory at scale, against the real bed
//! (hack/bed-up.sh), the release-built provisioner in its own process under the shipped
//! ServiceAccount and RBAC.
//!
//!     cargo bench --bench scale              # RBD_BENCH_SCALE_N=500, RBD_BENCH_CYCLES=10000
//!     RBD_BENCH_SCALE_N=2500 cargo bench --bench scale   # a restart with 5,001 PVs and claims
//!
//! - `RBD_BENCH_SCALE_N` (default 500): N, the claims of each batch (2N + 1 at the restart).
//! - `RBD_BENCH_CYCLES` (default 10000): create/delete cycles of phase 5; 0 skips it.
//! - `RBD_BENCH_SOAK_SECS`: phase 5 becomes a soak: cycles started for that long (3600: the
//!   hour-long soak of BENCHMARKS.md), memory sampled every 1,000 cycles.
//!
//! Waits on many objects time out after 100 ms per object (deletion: 250 ms per PV), at least
//! 5 min; the cycles after 500 ms per cycle (at least 5 min), when they stop and report how many
//! were done.
//! Wherever resident memory is reported, VmRSS comes with its parts from /proc/PID/status:
//! RssAnon (heap, stacks) and RssFile (mapped files: mostly shared-library text such as
//! librados and libceph-common, not caches).
//!
//! 1. References on the same bed, same moment: librbd alone (the harness creates and removes N
//!    images, 16 in flight) and the API server alone (N PV objects created and deleted, 16 in
//!    flight). Together they bound what any provisioner can reach here.
//! 2. The ceiling: N claims created already carrying the hand-over annotation, as
//!    kube-controller-manager would write it, so nothing but the provisioner stands between
//!    a claim and its PV. PVs per second, and where the time goes: the provisioner's own
//!    time per claim (its `provision` operation histogram: Ceph create, stamping, PV write)
//!    against the time the claim waited to be picked up.
//! 3. Memory: resident memory with N and then 2N PVs of ours present (idle), and the peak.
//! 4. A restart with the 2N PVs and claims present: time to leading with its watches synced,
//!    time to the PV of one new claim (created handed over: kube-controller-manager may still be
//!    binding thousands of claims), and resident memory after start.
//! 5. Cycles (`RBD_BENCH_CYCLES`), with the restarted provisioner, 24 in flight: a 4 MiB claim
//!    created handed over, its PV awaited, the claim deleted and released, its PV gone
//!    awaited (released too). Cycles per second, VmRSS and RssAnon every 1,000 cycles (every tenth of the
//!    cycles when fewer than 10,000), the growth from the first sample to the last, VmHWM.
//! 6. Deletion at scale: the 2N + 1 claims deleted and released, 32 in flight: until the
//!    provisioner has deleted every PV (each marked for deletion: its own pace), until every
//!    PV is gone, and until every image is out of the trash.
//!
//! With `RBD_BENCH_ANNOTATION_KIB` set, it measures memory with large claims instead:
//!
//!     RBD_BENCH_ANNOTATION_KIB=250 cargo bench --bench scale
//!     RBD_BENCH_ANNOTATION_KIB=250 RBD_BENCH_BEFORE=<an older release binary> \
//!         RBD_BENCH_SMALL_CLAIMS=10000 RBD_BENCH_PAGE_SIZES=500,100,50,20 cargo bench --bench scale
//!
//! N (default 1,000 in this mode) PVs of the peer's class, each pre-bound to a claim of its own
//! that kube-controller-manager binds; no image behind them and no claim of ours, so both watch
//! caches hold N objects that no reconcile acts on. The provisioner is started, waited for until
//! its watches have synced and it is idle (two seconds under 20 ms of CPU each, and at least 12 s
//! after the sync, so that its 10 s heap trim has run), then its resident memory is read and it
//! is stopped. That for this build and, with `RBD_BENCH_BEFORE`, for the other binary; then
//! again once every claim carries an annotation of that many KiB (written after the binding, so
//! that etcd holds one large revision of each), and the ratios.
//!
//! - `RBD_BENCH_SMALL_CLAIMS`: that many small unbound claims (pre-bound to a PV that does not
//!   exist, so that kube-controller-manager writes nothing) created after the plain runs, present
//!   during the first page-size sweep, then deleted.
//! - `RBD_BENCH_PAGE_SIZES`: page sizes of the watches' lists to compare, this build started
//!   with each (`RBD_PROVISIONER_LIST_PAGE_SIZE`) twice over the plain claims, then twice over
//!   the annotated ones: start → watches synced, and the peak (VmHWM).
//!
//! "Released" (phases 5 and 6): after deleting a claim the harness removes its
//! `kubernetes.io/pvc-protection` finalizer itself, as kube-controller-manager's pvc-protection
//! controller would (no pod exists in the bench's namespace) but without waiting for its pace
//! (7–10 claims/s), so a claim is gone at once. The provisioner then deletes the PV at once,
//! Bound or not (its claim is gone by uid); once it has, the harness drops the PV's
//! `kubernetes.io/pv-protection` finalizer the same way, for the same reason. What remains is
//! the provisioner's pace (about 20 cycles per second here: 10,000 cycles in about 9 min).
//!
//! Everything it creates has a unique name and is removed at the end.

// The target is benches/scale.rs (the root Cargo.toml names it); its modules live beside it.
#[path = "scale/cycles.rs"]
mod cycles;
#[path = "scale/large.rs"]
mod large;
#[path = "scale/objects.rs"]
mod objects;
#[path = "scale/ours.rs"]
mod ours;

use testbed as common;

use testbed::bench::{bed, cleanup, figures, procfs, watch};

use std::fmt;

use std::process::{Child, Command, Stdio};

use std::sync::atomic::{AtomicUsize, Ordering};

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use ceph::{ImageSpec, RBD_FEATURE_LAYERING};

use futures::{StreamExt, future, stream};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

use serde_json::json;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bed::Ctx;
use crate::cycles::*;
use crate::large::*;
use crate::objects::*;
use crate::ours::*;

use crate::cleanup::cleanup;

use crate::common::{
    Bed, die_with_parent, free_addr, service_account_kubeconfig, strip_ansi, terminate, unique,
};

use crate::figures::pct;

use crate::procfs::{loadavg, rss_kib};

use crate::watch::{Seen, all_in, until};

const IN_FLIGHT: usize = 16;

const CREATE_IN_FLIGHT: usize = 50;

/// Claim deletions (each followed by the removal of its pvc-protection finalizer) in flight.
const DELETE_IN_FLIGHT: usize = 32;

/// Create/delete cycles in flight.
const CYCLE_IN_FLIGHT: usize = 24;

/// The cycles' claims: small, so that purging the image is quick (sizes round up to MiB).
const CYCLE_SIZE: &str = "4Mi";

/// Each wait of one cycle (for its PV, for its PV gone).
const CYCLE_WAIT: Duration = Duration::from_secs(120);

/// Failed cycles after which no new cycle starts.
const CYCLE_MAX_FAILURES: usize = 20;

const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Variable `name`, parsed; `None` when unset or not a number.
fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// [`env`], or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    env(name).unwrap_or(default)
}

/// Runs the futures of `work`, `n` at a time, to the end; the first error, if any.
async fn all_ok<W, F>(work: W, n: usize) -> Result<()>
where
    W: futures::Stream<Item = F>,
    F: std::future::Future<Output = Result<()>>,
{
    let results: Vec<Result<()>> = work.buffer_unordered(n).collect().await;
    results.into_iter().collect()
}

/// A timeout for waiting on `k` objects: `per` each, never less than `floor`.
fn scaled(k: usize, per: Duration, floor: Duration) -> Duration {
    per.mul_f64(k as f64).max(floor)
}

fn main() {
    testbed::bench::run_main(async_main());
}

/// The head of a two-column table of figures.
fn figure_table(out: &mut Vec<String>) {
    out.push("| figure | value |".into());
    out.push("|---|---|".into());
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

async fn async_main() -> i32 {
    let started = Instant::now();
    let (cx, version) = Ctx::connect().await;
    let load_before = loadavg();
    cx.prepare().await;
    cx.watch();
    let soak = env::<u64>("RBD_BENCH_SOAK_SECS").map(Duration::from_secs);
    // A soak runs cycles until its time is up: a count it cannot reach.
    let cycles = match soak {
        Some(_) => 100_000_000,
        None => env_or("RBD_BENCH_CYCLES", 10_000),
    };
    let annotation_kib: Option<usize> = env("RBD_BENCH_ANNOTATION_KIB");
    let mut out = Vec::new();
    let (outcome, what) = match annotation_kib {
        None => {
            let n = env_or("RBD_BENCH_SCALE_N", 500);
            (
                run(&cx, n, cycles, soak, &mut out).await,
                match soak {
                    Some(d) => format!("N = {n}, cycles for {} s", d.as_secs()),
                    None => format!("N = {n}, {cycles} cycles"),
                },
            )
        }
        Some(kib) => {
            let n = env_or("RBD_BENCH_SCALE_N", 1000);
            (
                large_claims(&cx, n, kib, &mut out).await,
                format!("memory with {n} claims of {kib} KiB annotations"),
            )
        }
    };
    eprintln!("cleaning up");
    let left = cleanup(&cx).await;
    println!(
        "## rbd-provisioner scale bench: {} ({what})\n\nAPI server {version}; Ceph pool `kube`; load average before {load_before}, after {}; run took {:.0} s.\n",
        cx.prov_name,
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    for line in &out {
        println!("{line}");
    }
    for l in left {
        println!("- cleanup: {l}");
    }
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            println!("\n**The run did not finish:** {e:#}");
            1
        }
    }
}

async fn run(
    cx: &Ctx,
    n: usize,
    cycles: usize,
    soak: Option<Duration>,
    out: &mut Vec<String>,
) -> Result<()> {
    cx.until_listed().await?;
    // Waits on N or 2N objects: 100 ms each (10 per second, a tenth of the usual pace), at least
    // 5 min.
    let for_objects = |k: usize| scaled(k, Duration::from_millis(100), Duration::from_secs(300));

    // 1. References.
    let rbd = librbd_alone(cx, n).await?;
    let api = api_alone(cx, n).await?;
    out.push("### References (the harness alone, 16 in flight)\n".into());
    out.push("| what | N | took | per second |".into());
    out.push("|---|---|---|---|".into());
    for (what, took) in [
        ("librbd: create 1 GiB images", rbd),
        ("API server: create PV objects", api),
    ] {
        out.push(format!(
            "| {what} | {n} | {} | {:.0} |",
            secs(took),
            n as f64 / took.as_secs_f64()
        ));
    }

    // 2. The ceiling.
    let ours = Ours::start(&cx.bed, &cx.prov_name).await;
    let ready = ours.until_ready(Duration::from_secs(60)).await?;
    let mem_start = ours.mem();
    let before = ours.provision_histogram().await;
    let first: Vec<String> = (0..n).map(|i| format!("handed-{i}")).collect();
    let t0 = Instant::now();
    let accepted = create_claims(cx, &first, true).await?;
    let all_pvs = cx
        .until_all(
            "every PV of the handed-over claims",
            for_objects(n),
            |g| &g.pv_created,
            &first,
        )
        .await?
        - t0;
    let after = ours.provision_histogram().await;
    let (count, sum) = (after.0 - before.0, after.1 - before.1);
    let per_claim: Vec<Duration> = {
        let g = cx.seen.lock().unwrap();
        first
            .iter()
            .map(|c| g.pv_created[c].saturating_duration_since(t0))
            .collect()
    };
    let mem_n = ours.mem();
    out.push(String::new());
    out.push(format!(
        "### The ceiling: {n} claims created already handed over (annotated), ours alone\n"
    ));
    out.push(format!(
        "Provisioner (log {}) leading with its watches synced {} after start, resident {mem_start}.\n",
        ours.log.display(),
        ms(ready)
    ));
    figure_table(out);
    out.push(format!(
        "| all {n} claims accepted by the API (50 creates in flight) | {} |",
        secs(accepted)
    ));
    out.push(format!(
        "| **every PV exists** (from the first create) | **{} ({:.0} PVs/s)** |",
        secs(all_pvs),
        n as f64 / all_pvs.as_secs_f64()
    ));
    out.push(format!(
        "| claim created → PV exists, over the {n} | p50 {} / p95 {} / max {} |",
        ms(pct(&per_claim, 50.0)),
        ms(pct(&per_claim, 95.0)),
        ms(pct(&per_claim, 100.0))
    ));
    if count > 0.0 {
        out.push(format!(
            "| the provisioner's own time per claim (`provision` operations: {count:.0}; Ceph create + stamp + PV write) | mean {:.0} ms, {:.1} s in all |",
            sum / count * 1000.0,
            sum
        ));
        if let Some((plan, ceph, write, k)) = ours.timings("handed-") {
            out.push(format!(
                "| of that, per claim (means over {k}): reads (class, PV, Secrets) and the Provisioning event / Ceph (connect, create, stamp) / claim check and PV write | {plan:.0} ms / {ceph:.0} ms / {write:.0} ms |"
            ));
        }
        out.push(format!(
            "| of which could overlap (own time in all ÷ wall time) | {:.1} claims in flight on average |",
            sum / all_pvs.as_secs_f64()
        ));
    }

    // 3. Memory with N, then 2N PVs.
    let second: Vec<String> = (0..n).map(|i| format!("more-{i}")).collect();
    create_claims(cx, &second, true).await?;
    cx.until_all(
        "every PV of the second batch",
        for_objects(n),
        |g| &g.pv_created,
        &second,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let mem_2n = ours.mem();
    out.push(String::new());
    out.push("### Memory of the provisioner (MiB; RssFile is mapped files, mostly shared-library text such as librados and libceph-common)\n".into());
    out.push("| state | VmRSS | RssAnon | RssFile |".into());
    out.push("|---|---|---|---|".into());
    out.push(format!(
        "| after start, nothing of ours | {} |",
        mem_start.cells()
    ));
    out.push(format!(
        "| {n} PVs made in the ceiling phase | {} |",
        mem_n.cells()
    ));
    out.push(format!(
        "| {} PVs and claims, idle 10 s | {} |",
        2 * n,
        mem_2n.cells()
    ));
    out.push(format!("| peak so far (VmHWM) | {:.1} | | |", mem_2n.hwm));
    problems(&ours, "first process", out);
    drop(ours);

    // 4. A restart with 2N present.
    let bound = {
        let g = cx.seen.lock().unwrap();
        first
            .iter()
            .chain(&second)
            .filter(|c| g.bound.contains_key(*c))
            .count()
    };
    let again = Ours::start(&cx.bed, &cx.prov_name).await;
    let ready = again
        .until_ready(scaled(
            2 * n,
            Duration::from_millis(20),
            Duration::from_secs(120),
        ))
        .await?;
    let one = vec!["after-restart".to_string()];
    let t = Instant::now();
    // Handed over, like the claims of the ceiling: at N = 2,500 kube-controller-manager is
    // still binding thousands of claims (7 per second) and would annotate a new claim only after
    // them.
    create_claims(cx, &one, true).await?;
    cx.until_all(
        "the PV of a claim made after the restart",
        scaled(2 * n, Duration::from_millis(20), Duration::from_secs(60)),
        |g| &g.pv_created,
        &one,
    )
    .await?;
    let first_pv = again.started.elapsed();
    let one_pv = t.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mem_restart = again.mem();
    out.push(String::new());
    out.push(format!(
        "### Restart with {} PVs and claims of ours present ({bound} of the claims Bound by then)\n",
        2 * n + 1
    ));
    out.push(format!(
        "Log of the restarted provisioner: {}\n",
        again.log.display()
    ));
    figure_table(out);
    out.push(format!(
        "| process start → leading, watches synced | {} |",
        ms(ready)
    ));
    out.push(format!(
        "| process start → PV of a claim created (handed over) once ready | {} (claim → PV {}) |",
        ms(first_pv),
        ms(one_pv)
    ));
    out.push(format!(
        "| resident memory 5 s later | {mem_restart} (peak {:.1} MiB) |",
        mem_restart.hwm
    ));

    // 5. Create/delete cycles with the restarted provisioner.
    if cycles > 0 {
        let outcome = with_pv_release(cx, cycle_phase(cx, &again, cycles, soak, out)).await;
        if let Err(e) = outcome {
            problems(&again, "restarted process", out);
            return Err(e);
        }
    }

    // 6. Deletion at scale, with the restarted provisioner still serving.
    let all: Vec<String> = first.iter().chain(&second).chain(&one).cloned().collect();
    cx.expect_purged(&all);
    let bound = {
        let g = cx.seen.lock().unwrap();
        all.iter().filter(|c| g.bound.contains_key(*c)).count()
    };
    let t = Instant::now();
    let deleted = with_pv_release(cx, delete_and_release_all(cx, &all)).await;
    out.push(String::new());
    out.push(format!(
        "### Deleting the {} claims ({bound} of them Bound by then)\n",
        all.len()
    ));
    out.push(format!(
        "The harness deletes each claim and then removes its `{PVC_PROTECTION}` finalizer itself ({DELETE_IN_FLIGHT} claims in flight), as kube-controller-manager's pvc-protection controller would (no pod exists in the namespace) but without waiting for its pace, so each claim is gone at once. The provisioner's own deletion pace is the time until it has deleted every PV (trashed the image, then its delete call: the PV marked for deletion), as soon as the PV's claim is gone. The harness then removes each deleted PV's `{PV_PROTECTION}` finalizer too, as kube-controller-manager's pv-protection controller would for a volume no pod uses, so that a PV is gone without waiting for that controller's pace either.\n"
    ));
    figure_table(out);
    // 250 ms per PV (4 per second), at least 5 min: room for a slow OSD purging beside it.
    let for_deletion = scaled(
        all.len(),
        Duration::from_millis(250),
        Duration::from_secs(300),
    );
    let result = match deleted {
        Ok(took) => {
            out.push(format!(
                "| every claim deleted, its finalizer removed | {} |",
                secs(took)
            ));
            let claims = until(&cx.seen, "every claim gone", for_objects(all.len()), |g| {
                all_in(&g.claim_gone, &all)
            })
            .await
            .map(|_| t.elapsed());
            out.push(format!(
                "| every claim gone | {} |",
                claims
                    .as_ref()
                    .map(|d| secs(*d))
                    .unwrap_or_else(|e| format!("{e}"))
            ));
            let gone = with_pv_release(
                cx,
                until(&cx.seen, "every PV gone", for_deletion, |g| {
                    all_in(&g.pv_gone, &all)
                }),
            )
            .await
            .map(|_| t.elapsed());
            let (deleting, latest_deleting, left) = {
                let g = cx.seen.lock().unwrap();
                let at: Vec<Instant> = all
                    .iter()
                    .filter_map(|c| g.pv_deleting.get(c).or_else(|| g.pv_gone.get(c)))
                    .copied()
                    .collect();
                let left = all.iter().filter(|c| !g.pv_gone.contains_key(*c)).count();
                (at.len(), at.into_iter().max(), left)
            };
            match latest_deleting {
                Some(last) if deleting == all.len() => {
                    let d = last.saturating_duration_since(t);
                    out.push(format!(
                        "| **every PV deleted by the provisioner** (marked for deletion) | **{} ({:.0} PVs/s)** |",
                        secs(d),
                        all.len() as f64 / d.as_secs_f64()
                    ));
                }
                _ => out.push(format!(
                    "| every PV deleted by the provisioner | {deleting} of {} |",
                    all.len()
                )),
            }
            match gone {
                Ok(took) => {
                    out.push(format!(
                        "| every PV gone (pv-protection finalizer removed by the harness) | {} ({:.0} PVs/s) |",
                        secs(took),
                        all.len() as f64 / took.as_secs_f64()
                    ));
                    let purged = until(&cx.seen, "trash free", for_deletion, |g| {
                        g.trash_pending.is_empty()
                    })
                    .await
                    .map(|_| t.elapsed());
                    out.push(format!(
                        "| every image out of the trash | {} |",
                        purged.map(secs).unwrap_or_else(|e| format!("{e}"))
                    ));
                }
                Err(e) => out.push(format!("| every PV gone | {left} still there: {e} |")),
            }
            Ok(())
        }
        Err(e) => Err(e),
    };
    problems(&again, "restarted process", out);
    drop(again);
    result
}
