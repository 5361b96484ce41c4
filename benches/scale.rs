//! The provisioner's own ceiling and its memory at scale, against the real bed
//! (hack/bed-up.sh), the release-built provisioner in its own process under the shipped
//! ServiceAccount and RBAC.
//!
//!     cargo bench --bench scale              # RBD_BENCH_SCALE_N=500 by default
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
//! 4. A restart with the 2N PVs and claims present: time to leading with its watches synced, time to the PV of one
//!    new claim, and resident memory after start.
//!
//! Everything it creates has a unique name and is removed at the end.

#[path = "../tests/common/mod.rs"]
mod common;

#[allow(dead_code)]
#[path = "provisioning/bed.rs"]
mod bed;
#[allow(dead_code)]
#[path = "provisioning/cleanup.rs"]
mod cleanup;
#[allow(dead_code)]
#[path = "provisioning/figures.rs"]
mod figures;
#[allow(dead_code)]
#[path = "provisioning/procfs.rs"]
mod procfs;
#[allow(dead_code)]
#[path = "provisioning/watch.rs"]
mod watch;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{DeleteParams, PostParams};
use rbd_provisioner::ceph::{ImageSpec, RBD_FEATURE_LAYERING};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::bed::Ctx;
use crate::cleanup::cleanup;
use crate::common::{Bed, die_with_parent, service_account_kubeconfig, strip_ansi, unique};
use crate::figures::pct;
use crate::procfs::{loadavg, proc_status_kib};
use crate::watch::{all_in, spawn_pv_watch, spawn_pvc_watch, spawn_trash_poller, until};

pub const TRASH_POLL: Duration = Duration::from_millis(250);
const IN_FLIGHT: usize = 16;
const CREATE_IN_FLIGHT: usize = 50;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async_main());
    std::process::exit(code);
}

/// The release-built provisioner with /metrics on a port of its own.
struct Ours {
    child: Child,
    log: std::path::PathBuf,
    addr: String,
    started: Instant,
}

impl Ours {
    async fn start(bed: &Bed, name: &str) -> Ours {
        let kubeconfig = service_account_kubeconfig(bed).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr = format!("127.0.0.1:{port}");
        let log = bed.dir.join(format!("{}.log", unique("scale")));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbd-provisioner"));
        cmd.arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--provisioner-name", name, "--metrics-addr", &addr])
            .env(
                "RUST_LOG",
                "info,rbd_provisioner::controller::provision=debug",
            )
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        die_with_parent(&mut cmd);
        let started = Instant::now();
        let child = cmd.spawn().expect("start rbd-provisioner");
        Ours {
            child,
            log,
            addr,
            started,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_mib(&self) -> f64 {
        proc_status_kib(self.pid(), "VmRSS:").unwrap_or(0) as f64 / 1024.0
    }

    fn hwm_mib(&self) -> f64 {
        proc_status_kib(self.pid(), "VmHWM:").unwrap_or(0) as f64 / 1024.0
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut s = tokio::net::TcpStream::connect(&self.addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
        Some((code, body))
    }

    /// Time from spawn until it leads and has listed every claim, volume and class (its
    /// "watches synced" line; /readyz would also answer 200 for a standby).
    async fn until_ready(&self, timeout: Duration) -> Result<Duration> {
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if log.contains("watches synced") {
                return Ok(self.started.elapsed());
            }
            if self.started.elapsed() > timeout {
                bail!("not ready within {timeout:?}; log: {}", self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// (count, sum in seconds) of the successful `provision` operations.
    async fn provision_histogram(&self) -> (f64, f64) {
        let text = self
            .get("/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default();
        let value = |suffix: &str| {
            text.lines()
                .filter(|l| {
                    l.starts_with(&format!(
                        "rbd_provisioner_operation_duration_seconds_{suffix}"
                    )) && l.contains("operation=\"provision\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>()
        };
        (value("count"), value("sum"))
    }
}

impl Ours {
    /// Mean (plan, Ceph, write) milliseconds of the "provision timings" lines of claims whose
    /// name starts with `prefix`.
    fn timings(&self, prefix: &str) -> Option<(f64, f64, f64, usize)> {
        let text = strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default());
        let field = |l: &str, k: &str| -> Option<f64> {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))?
                .parse()
                .ok()
        };
        let rows: Vec<(f64, f64, f64)> = text
            .lines()
            .filter(|l| l.contains("provision timings") && l.contains(&format!("/{prefix}")))
            .filter_map(|l| {
                Some((
                    field(l, "plan_ms")?,
                    field(l, "ceph_ms")?,
                    field(l, "write_ms")?,
                ))
            })
            .collect();
        let n = rows.len();
        (n > 0).then(|| {
            let sum = rows
                .iter()
                .fold((0.0, 0.0, 0.0), |a, r| (a.0 + r.0, a.1 + r.1, a.2 + r.2));
            (sum.0 / n as f64, sum.1 / n as f64, sum.2 / n as f64, n)
        })
    }
}

impl Drop for Ours {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..50 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// librbd alone: N images created, 16 in flight; then removed.
async fn librbd_alone(cx: &Ctx, n: usize) -> Result<Duration> {
    let names: Vec<String> = (0..n).map(|i| format!("{}-ref-{i}", cx.ns)).collect();
    let t = Instant::now();
    let results: Vec<_> = stream::iter(names.iter().cloned())
        .map(|name| {
            let ceph = cx.ceph.clone();
            async move {
                let spec = ImageSpec {
                    pool: "kube".into(),
                    name,
                    size: 1 << 30,
                    data_pool: None,
                    features: RBD_FEATURE_LAYERING,
                };
                ceph.create_image(&spec).await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let took = t.elapsed();
    stream::iter(names.iter().cloned())
        .for_each_concurrent(IN_FLIGHT, |name| {
            let ceph = cx.ceph.clone();
            async move {
                let _ = ceph.remove_image("kube", &name).await;
            }
        })
        .await;
    for r in results {
        r.context("librbd reference: create image")?;
    }
    Ok(took)
}

/// The API server alone: N PV objects (a class no one serves) created, 16 in flight; then
/// deleted.
async fn api_alone(cx: &Ctx, n: usize) -> Result<Duration> {
    let pvs = cx.pvs();
    let names: Vec<String> = (0..n).map(|i| format!("{}-refpv-{i}", cx.ns)).collect();
    let t = Instant::now();
    let results: Vec<_> = stream::iter(names.iter().cloned())
        .map(|name| {
            let pvs = pvs.clone();
            let class = cx.control.clone();
            async move {
                let pv: PersistentVolume = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {
                        "capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": class,
                        "rbd": {"monitors": ["127.0.0.1:6789"], "pool": "kube", "image": name, "user": "kube"},
                    }
                }))?;
                pvs.create(&PostParams::default(), &pv)
                    .await
                    .context("API reference: create PV")
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let took = t.elapsed();
    stream::iter(names.iter().cloned())
        .for_each_concurrent(IN_FLIGHT, |name| {
            let pvs = pvs.clone();
            async move {
                let _ = pvs.delete(&name, &DeleteParams::default()).await;
            }
        })
        .await;
    for r in results {
        r?;
    }
    Ok(took)
}

/// Creates claims of our class, with the hand-over annotation already on them when
/// `handed` is set; returns when the API server accepted the last one.
async fn create_claims(cx: &Ctx, names: &[String], handed: bool) -> Result<Duration> {
    let t = Instant::now();
    let results: Vec<Result<PersistentVolumeClaim>> = stream::iter(names.iter().cloned())
        .map(|name| async move {
            let mut meta = json!({"name": name, "namespace": cx.ns});
            if handed {
                meta["annotations"] = json!({
                    "volume.beta.kubernetes.io/storage-provisioner": cx.prov_name,
                    "volume.kubernetes.io/storage-provisioner": cx.prov_name,
                });
            }
            let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
                "metadata": meta,
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": cx.ours,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }))?;
            cx.pvcs()
                .create(&PostParams::default(), &pvc)
                .await
                .with_context(|| format!("create claim {name}"))
        })
        .buffer_unordered(CREATE_IN_FLIGHT)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(t.elapsed())
}

async fn async_main() -> i32 {
    let n: usize = std::env::var("RBD_BENCH_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let started = Instant::now();
    let bed = Bed::load();
    let admin = bed.admin().await;
    let ceph = bed.ceph().await;
    let version = admin
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let cx = Ctx::new(bed, admin, ceph);
    let load_before = loadavg();
    cx.prepare().await;
    spawn_pv_watch(cx.admin.clone(), cx.ns.clone(), cx.seen.clone());
    spawn_pvc_watch(cx.admin.clone(), cx.ns.clone(), cx.seen.clone());
    spawn_trash_poller(cx.ceph.clone(), cx.seen.clone());
    let mut out = Vec::new();
    let outcome = run(&cx, n, &mut out).await;
    eprintln!("cleaning up");
    let left = cleanup(&cx).await;
    println!(
        "## rbd-provisioner scale bench: {} (N = {n})\n\nAPI server {version}; Ceph pool `kube`; load average before {load_before}, after {}; run took {:.0} s.\n",
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

async fn run(cx: &Ctx, n: usize, out: &mut Vec<String>) -> Result<()> {
    until(&cx.seen, "watches listed", Duration::from_secs(30), |g| {
        g.pv_ready && g.pvc_ready
    })
    .await?;

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
    let rss_start = ours.rss_mib();
    let before = ours.provision_histogram().await;
    let first: Vec<String> = (0..n).map(|i| format!("handed-{i}")).collect();
    let t0 = Instant::now();
    let accepted = create_claims(cx, &first, true).await?;
    let all_pvs = cx
        .until_all(
            "every PV of the handed-over claims",
            Duration::from_secs(300),
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
    let rss_n = ours.rss_mib();
    out.push(String::new());
    out.push(format!(
        "### The ceiling: {n} claims created already handed over (annotated), ours alone\n"
    ));
    out.push(format!(
        "Provisioner leading with its watches synced {} after start, resident {rss_start:.1} MiB.\n",
        ms(ready)
    ));
    out.push("| figure | value |".into());
    out.push("|---|---|".into());
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
        Duration::from_secs(300),
        |g| &g.pv_created,
        &second,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let rss_2n = ours.rss_mib();
    let hwm = ours.hwm_mib();
    out.push(String::new());
    out.push("### Memory (VmRSS of the provisioner)\n".into());
    out.push("| state | MiB |".into());
    out.push("|---|---|".into());
    out.push(format!("| after start, nothing of ours | {rss_start:.1} |"));
    out.push(format!(
        "| {n} PVs made in the ceiling phase | {rss_n:.1} |"
    ));
    out.push(format!(
        "| {} PVs and claims, idle 10 s | {rss_2n:.1} |",
        2 * n
    ));
    out.push(format!("| peak so far (VmHWM) | {hwm:.1} |"));
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
    let ready = again.until_ready(Duration::from_secs(120)).await?;
    let one = vec!["after-restart".to_string()];
    let t = Instant::now();
    create_claims(cx, &one, false).await?;
    cx.until_all(
        "the PV of a claim made after the restart",
        Duration::from_secs(60),
        |g| &g.pv_created,
        &one,
    )
    .await?;
    let first_pv = again.started.elapsed();
    let one_pv = t.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    out.push(String::new());
    out.push(format!(
        "### Restart with {} PVs and claims of ours present ({bound} of the claims Bound by then)\n",
        2 * n + 1
    ));
    out.push("| figure | value |".into());
    out.push("|---|---|".into());
    out.push(format!(
        "| process start → leading, watches synced | {} |",
        ms(ready)
    ));
    out.push(format!(
        "| process start → PV of a claim created once ready | {} (claim → PV {}) |",
        ms(first_pv),
        ms(one_pv)
    ));
    out.push(format!(
        "| resident memory 5 s later | {:.1} MiB (peak {:.1} MiB) |",
        again.rss_mib(),
        again.hwm_mib()
    ));
    let all: Vec<String> = first.iter().chain(&second).chain(&one).cloned().collect();
    cx.expect_purged(&all);
    // Deletion at scale, with the restarted provisioner still serving.
    let t = Instant::now();
    cx.delete_claims(&all).await?;
    let gone = until(&cx.seen, "every PV gone", Duration::from_secs(300), |g| {
        all_in(&g.pv_gone, &all)
    })
    .await;
    out.push(String::new());
    out.push(format!("### Deleting the {} claims at once\n", all.len()));
    match gone {
        Ok(()) => {
            let took = t.elapsed();
            let purged = until(&cx.seen, "trash free", Duration::from_secs(300), |g| {
                g.trash_pending.is_empty()
            })
            .await
            .map(|_| t.elapsed());
            out.push(format!(
                "every PV gone {}; every image out of the trash {}",
                secs(took),
                purged
                    .map(secs)
                    .unwrap_or_else(|e| format!("not within 300 s ({e})"))
            ));
        }
        Err(e) => out.push(format!("not every PV gone within 300 s: {e}")),
    }
    drop(again);
    Ok(())
}
