//! Provisioning benchmark against the real bed (hack/bed-up.sh): Ceph + kube-apiserver +
//! kube-controller-manager 1.20 on 127.0.0.1, the release-built provisioner in its own process.
//!
//!     cargo bench --bench provisioning
//!
//! What it measures (all times from the client's side, through watches of PVs and claims):
//!  1. single claims, one at a time (1 GiB): claim created -> PV exists, -> claim Bound;
//!  2. a burst of 100 claims created at once: until every PV exists, until every claim Bound;
//!  3. deletion of Bound claims (1 GiB and 100 GiB, one at a time): claim deleted -> PV gone,
//!     -> image out of the RBD trash; the burst's deletion: 100 claims deleted at once;
//!  4. the provisioner's peak RSS (VmHWM);
//!  5. the same through the in-tree `kubernetes.io/rbd` provisioner of kube-controller-manager,
//!     in the same run, and a binder-only control (claims with pre-bound PVs, no provisioner),
//!     which is the floor for "all Bound" that no provisioner can beat. With
//!     `RBD_BENCH_PEER=<provisioner name>` the peer is instead an external provisioner started
//!     by hand under that name (the old `ceph.com/rbd` one, for instance: see BENCHMARKS.md);
//!  6. the same through the CSI pipeline (kubernetes-csi's csi-provisioner in front of a mock
//!     CSI driver whose calls cost nothing: hack/build-csi-peer.sh), started by the bench, on
//!     planes without the in-tree plugin (1.31+) or with `RBD_BENCH_CSI=1` (`0`: without it).
//!
//! The sides run one after the other, their order rotated between runs (`RBD_BENCH_ROTATE=<n>`
//! to choose it); the report gives each figure as ours/theirs.
//!
//! Everything it creates carries a unique name and is removed at the end (claims, PVs,
//! images, trash entries, classes, secrets, the namespace), also when a phase fails.

mod phases;
mod report;

use testbed as common;
use testbed::bench::{bed, cleanup, csi::CsiPeer, figures, procfs, watch};

use std::time::{Duration, Instant};

use common::Provisioner;

use crate::bed::{Ctx, csi_peer_wanted};
use crate::cleanup::cleanup;
use crate::figures::Figures;
use crate::phases::run;
use crate::procfs::loadavg;
use crate::report::report;

const SEQ_N: usize = 20;
const DEL_N: usize = 5;
const BURST_N: usize = 100;
/// Upper bound for the whole run, setup and cleanup included.
const RUN_BUDGET: Duration = Duration::from_secs(14 * 60);
/// Kept for cleanup out of `RUN_BUDGET`: the phases stop this long before the end.
const CLEANUP_RESERVE: Duration = Duration::from_secs(150);
use watch::TRASH_POLL;

fn main() {
    testbed::bench::run_main(async_main());
}

async fn async_main() -> i32 {
    let started = Instant::now();
    let (cx, version) = Ctx::connect().await;
    let load_before = loadavg();

    // The provisioner: release build, shipped ServiceAccount and RBAC.
    // RBD_BENCH_PROVISIONER_LOG: its RUST_LOG (e.g. `info,rbd_provisioner::controller=debug`
    // for the per-operation timings lines).
    let log = std::env::var("RBD_BENCH_PROVISIONER_LOG").unwrap_or_else(|_| "info".into());
    let prov = Provisioner::start(&cx.bed, &cx.prov_name, &[("RUST_LOG", &log)]).await;
    let csi = if csi_peer_wanted(cx.bed.kube_minor) {
        let started = match CsiPeer::start(&cx.bed, &cx.csi_driver).await {
            Ok(mut p) => p.until_ready(Duration::from_secs(60)).await.map(|()| p),
            Err(e) => Err(e),
        };
        match started {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("the CSI peer did not start: {e:#}");
                return 1;
            }
        }
    } else {
        None
    };
    cx.prepare().await;

    cx.watch();
    let ready = cx.until_listed().await;

    let mut figs = Figures {
        kcm_qps: procfs::kcm_client_flags(&cx.bed.dir),
        ..Figures::default()
    };
    let outcome = match ready {
        Err(e) => Err(e),
        Ok(()) => match tokio::time::timeout(
            RUN_BUDGET.saturating_sub(CLEANUP_RESERVE + started.elapsed()),
            run(&cx, &mut figs, csi.is_some()),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "the run exceeded its budget of {RUN_BUDGET:?}"
            )),
        },
    };
    eprintln!("cleaning up");
    figs.leftovers = match tokio::time::timeout(
        RUN_BUDGET.saturating_sub(started.elapsed()),
        cleanup(&cx),
    )
    .await
    {
        Ok(left) => left,
        Err(_) => vec![format!(
            "cleanup did not finish within the run's budget of {RUN_BUDGET:?}: namespace {} and images of its claims may remain",
            cx.ns
        )],
    };
    let trash_errors = cx.seen.lock().unwrap().trash_errors;
    let log = prov.log.display().to_string();
    drop(prov);
    let csi_log = csi.as_ref().map(|c| c.log.display().to_string());
    drop(csi);

    let header = format!(
        "## rbd-provisioner bench: {} (ours) vs {}{}\n\n\
         API server {version}; kube-controller-manager's client {}; Ceph pool `kube`; \
         load average before {load_before}, after {}; run took {:.0} s{}.",
        cx.prov_name,
        match crate::bed::peer_provisioner().as_str() {
            "kubernetes.io/rbd" =>
                "kubernetes.io/rbd (in-tree, kube-controller-manager)".to_string(),
            other => format!("{other} (external, started by hand)"),
        },
        if csi_log.is_some() {
            format!(
                " and the CSI pipeline (csi-provisioner + mock driver `{}`)",
                cx.csi_driver
            )
        } else {
            String::new()
        },
        if figs.kcm_qps.is_empty() {
            "QPS at its defaults (20, burst 30)".to_string()
        } else {
            figs.kcm_qps.clone()
        },
        loadavg(),
        started.elapsed().as_secs_f64(),
        if trash_errors > 0 {
            format!("; {trash_errors} trash polls failed")
        } else {
            String::new()
        },
    );
    println!("{}", report(&figs, &header));
    for line in plot_latencies(&figs) {
        eprintln!("{line}");
    }
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            println!("\n**The run did not finish:** {e:#}");
            eprintln!("provisioner log: {log}");
            if let Some(l) = csi_log {
                eprintln!("csi-provisioner log: {l}");
            }
            1
        }
    }
}

/// The latency histograms against the peers that ran: one claim at a time (claim created →
/// PV exists) and the burst (annotation → PV exists, per claim), into `target/bench-plots/`,
/// and into `docs/` when the CSI peer ran (issue 25's figure). What was written, or why not.
fn plot_latencies(figs: &Figures) -> Vec<String> {
    use testbed::bench::plot::latency_histogram;
    let ms = |v: &[Duration]| -> Vec<f64> { v.iter().map(|d| d.as_secs_f64() * 1e3).collect() };
    let sides = [
        ("ours", &figs.seq_ours, &figs.burst_ours),
        ("in-tree", &figs.seq_peer, &figs.burst_peer),
        ("CSI peer", &figs.seq_csi, &figs.burst_csi),
    ];
    let one: Vec<(&str, Vec<f64>)> = sides
        .iter()
        .map(|(n, s, _)| (*n, ms(&s.pv)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let burst: Vec<(&str, Vec<f64>)> = sides
        .iter()
        .map(|(n, _, b)| (*n, ms(&b.ann_to_pv)))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("target/bench-plots")];
    if !figs.seq_csi.pv.is_empty() {
        dirs.push(root.join("docs"));
    }
    let mut said = Vec::new();
    for (name, title, peers) in [
        (
            "provisioning-latency.svg",
            "one claim at a time: claim created → PV exists (ms)",
            &one,
        ),
        (
            "provisioning-burst-latency.svg",
            "burst of 100, per claim: hand-over → PV exists (ms)",
            &burst,
        ),
    ] {
        let refs: Vec<(&str, &[f64])> = peers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        match latency_histogram(title, &refs) {
            Ok(svg) => {
                for d in &dirs {
                    let path = d.join(name);
                    let r = std::fs::create_dir_all(d).and_then(|()| std::fs::write(&path, &svg));
                    said.push(match r {
                        Ok(()) => format!("plot: {}", path.display()),
                        Err(e) => format!("plot {}: {e}", path.display()),
                    });
                }
            }
            Err(e) => said.push(format!("plot {name}: {e}")),
        }
    }
    said
}
