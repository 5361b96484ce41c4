//! The provisioner's own ceiling and its memory at scale, against the real bed
//! (hack/bed-up.sh), the release-built provisioner in its own process under the shipped
//! ServiceAccount and RBAC.
//!
//!     cargo bench --bench scale              # RBD_BENCH_SCALE_N=500, RBD_BENCH_CYCLES=10000
//!     RBD_BENCH_SCALE_N=2500 cargo bench --bench scale   # a restart with 5,001 PVs and claims
//!     # issue 25: 10,000 pairs (a plane whose kube-controller-manager runs with client QPS 200)
//!     RBDP_BED=<bed>/k137 RBD_BENCH_SCALE_N=5000 RBD_BENCH_CYCLES=0 cargo bench --bench scale
//!
//! - `RBD_BENCH_SCALE_N` (default 500): N, the claims of each batch (2N + 1 at the restart).
//!   Claims are of 1 GiB, of 4 MiB from N = 5,000 on (so that 10,000 images leave the trash at
//!   the pace of small images); the librbd reference makes images of the same size.
//! - `RBD_BENCH_CYCLES` (default 10000): create/delete cycles of phase 5; 0 skips it.
//! - `RBD_BENCH_SOAK_SECS`: phase 5 becomes a soak: cycles started for that long (3600: the
//!   hour-long soak of BENCHMARKS.md), memory sampled every 1,000 cycles.
//! - `RBD_BENCH_REFERENCES=0` skips phase 1.
//! - `RBD_BENCH_PAGE_SIZES` (e.g. `100,50,20`): before the restart of phase 4, this build
//!   started over the 2N pairs with each page size twice, alternating: start → watches synced,
//!   peak and idle memory. 0 is the default, streaming lists: `0,0` gives four more restarts
//!   of this build as it runs.
//!
//! The report so far is also written to `target/bench-plots/scale-partial.md` after phases 3
//! and 4, for a run stopped before its end.
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
//! 2. The ceiling: claims created already carrying the hand-over annotation, as
//!    kube-controller-manager would write it, so nothing but the provisioner stands between
//!    a claim and its PV. The first batch of N is made in steps (1, 10, 100, 1,000, 2,500,
//!    5,000 pairs, those below N, then N: see phase 3); its last step, the largest, measures the
//!    ceiling: PVs per second, and where the time goes: the provisioner's own time per claim
//!    (its `provision` operation histogram: Ceph create, stamping, PV write) against the time
//!    the claim waited to be picked up.
//! 3. Memory against volume count: at each step of both batches (1, 10, 100, 1,000, 2,500,
//!    5,000, 10,000, ... up to 2N), once the step's PVs exist, its claims are Bound (waited
//!    for at most 20 ms per claim, at least 30 s; the count Bound is reported) and the process
//!    is idle after its 10 s heap trim, VmRSS with its parts; the anonymous memory per pair
//!    (the slope from 1,000 pairs on) and a plot (`target/bench-plots/scale-memory.svg`, and
//!    `docs/` from 10,000 pairs on).
//! 4. A restart with the 2N pairs present: time to leading with its watches synced, time to
//!    the PV of one new claim (created handed over: kube-controller-manager may still be
//!    binding thousands of claims), resident memory 5 s later and once idle; the LIST requests
//!    the API server served meanwhile, per resource (its `/metrics`, read before the start and
//!    at the sync: requests, objects, the largest response's bucket), to show the lists paged;
//!    then a minute with nothing changing: CPU time and context switches per thread name.
//! 5. Cycles (`RBD_BENCH_CYCLES`), with the restarted provisioner, 24 in flight: a 4 MiB claim
//!    created handed over, its PV awaited, the claim deleted and released, its PV gone
//!    awaited (released too). Cycles per second, VmRSS and RssAnon every 1,000 cycles (every tenth of the
//!    cycles when fewer than 10,000), the growth from the first sample to the last, VmHWM.
//! 6. Deletion at scale: the 2N + 1 claims deleted and released, 32 in flight: until the
//!    provisioner has deleted every PV (each marked for deletion: its own pace), until every
//!    PV is gone, and until every image is out of the trash; meanwhile the provisioner's
//!    `rbd_provisioner_purge_backlog` and `rbd_provisioner_operations_in_flight` every second
//!    and the images of ours in the pool and its trash every fifth, with a plot
//!    (`scale-purge-backlog.svg`, beside the memory plot).
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
#[path = "scale/curve.rs"]
mod curve;
#[path = "scale/cycles.rs"]
mod cycles;
#[path = "scale/deletion.rs"]
mod deletion;
#[path = "scale/large.rs"]
mod large;
#[path = "scale/objects.rs"]
mod objects;
#[path = "scale/ours.rs"]
mod ours;
#[path = "scale/restart.rs"]
mod restart;

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
use crate::curve::*;
use crate::cycles::*;
use crate::deletion::*;
use crate::large::*;
use crate::objects::*;
use crate::ours::*;
use crate::restart::*;

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
    if env_or("RBD_BENCH_REFERENCES", 1) != 0 {
        references(cx, n, out).await?;
    }

    // 2. The ceiling, after the first steps of the memory curve.
    let size = pair_size(n);
    let ours = Ours::start(&cx.bed, &cx.prov_name).await;
    let ready = ours.until_ready(Duration::from_secs(60)).await?;
    until_idle(&ours, ready).await;
    let mem_start = ours.mem();
    let first: Vec<String> = (0..n).map(|i| format!("handed-{i}")).collect();
    let stops = figures::stops(&STEPS, 0, n);
    // The steps before the batch's last one; the last (the largest) measures the ceiling.
    let pre = stops.len().checked_sub(2).map_or(0, |i| stops[i]);
    let mut curve = Vec::new();
    stepped(cx, &ours, &first[..pre], &[], 0, size, &mut curve).await?;
    let ceiling = &first[pre..];
    let k = ceiling.len();
    let before = ours.provision_histogram().await;
    let t0 = Instant::now();
    let accepted = create_claims(cx, ceiling, true, size).await?;
    let all_pvs = cx
        .until_all(
            "every PV of the handed-over claims",
            for_objects(k),
            |g| &g.pv_created,
            ceiling,
        )
        .await?
        - t0;
    let after = ours.provision_histogram().await;
    let (count, sum) = (after.0 - before.0, after.1 - before.1);
    let per_claim: Vec<Duration> = {
        let g = cx.seen.lock().unwrap();
        ceiling
            .iter()
            .map(|c| g.pv_created[c].saturating_duration_since(t0))
            .collect()
    };
    out.push(String::new());
    out.push(format!(
        "### The ceiling: {k} claims ({size}) created already handed over (annotated), ours alone, with {pre} made before in steps\n"
    ));
    out.push(format!(
        "Provisioner (log {}) leading with its watches synced {} after start, resident {mem_start} once idle.\n",
        ours.log.display(),
        ms(ready)
    ));
    figure_table(out);
    out.push(format!(
        "| all {k} claims accepted by the API (50 creates in flight) | {} |",
        secs(accepted)
    ));
    out.push(format!(
        "| **every PV exists** (from the first create) | **{} ({:.0} PVs/s)** |",
        secs(all_pvs),
        k as f64 / all_pvs.as_secs_f64()
    ));
    out.push(format!(
        "| claim created → PV exists, over the {k} | p50 {} / p95 {} / max {} |",
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
    curve.push(read_point(cx, &ours, &first, n).await);

    // 3. Memory: the rest of the curve, up to 2N pairs.
    let second: Vec<String> = (0..n).map(|i| format!("more-{i}")).collect();
    stepped(cx, &ours, &second, &first, n, size, &mut curve).await?;
    report(mem_start, &curve, out);
    checkpoint(out);
    out.push(format!("- peak so far (VmHWM): {:.1} MiB", ours.mem().hwm));
    problems(&ours, "first process", out);
    drop(ours);

    // 4. A restart with 2N present, and a minute idle.
    let pairs: Vec<String> = first.iter().chain(&second).cloned().collect();
    let again = restart_phase(cx, &pairs, size, out).await?;
    checkpoint(out);

    // 5. Create/delete cycles with the restarted provisioner.
    if cycles > 0 {
        let outcome = with_pv_release(cx, cycle_phase(cx, &again, cycles, soak, out)).await;
        if let Err(e) = outcome {
            problems(&again, "restarted process", out);
            return Err(e);
        }
    }

    // 6. Deletion at scale, with the restarted provisioner still serving.
    let all: Vec<String> = pairs
        .iter()
        .cloned()
        .chain(["after-restart".to_string()])
        .collect();
    let result = deletion_phase(cx, &again, &all, out).await;
    problems(&again, "restarted process", out);
    drop(again);
    result
}

/// Phase 1: librbd alone and the API server alone, N each.
async fn references(cx: &Ctx, n: usize, out: &mut Vec<String>) -> Result<()> {
    let rbd = librbd_alone(cx, n, quantity_bytes(pair_size(n))).await?;
    let api = api_alone(cx, n).await?;
    out.push("### References (the harness alone, 16 in flight)\n".into());
    out.push("| what | N | took | per second |".into());
    out.push("|---|---|---|---|".into());
    for (what, took) in [
        ("librbd: create images of the claims' size", rbd),
        ("API server: create PV objects", api),
    ] {
        out.push(format!(
            "| {what} | {n} | {} | {:.0} |",
            secs(took),
            n as f64 / took.as_secs_f64()
        ));
    }

    Ok(())
}
