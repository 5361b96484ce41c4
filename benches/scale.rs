//! The provisioner's own ceiling and its memory at scale, against the real bed
//! (hack/bed-up.sh), the release-built provisioner in its own process under the shipped
//! ServiceAccount and RBAC.
//!
//!     cargo bench --bench scale              # RBD_BENCH_SCALE_N=500, RBD_BENCH_CYCLES=10000
//!     RBD_BENCH_SCALE_N=2500 cargo bench --bench scale   # a restart with 5,001 PVs and claims
//!
//! - `RBD_BENCH_SCALE_N` (default 500): N, the claims of each batch (2N + 1 at the restart).
//! - `RBD_BENCH_CYCLES` (default 10000): create/delete cycles of phase 5; 0 skips it.
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
use crate::cleanup::cleanup;
use crate::common::{Bed, die_with_parent, service_account_kubeconfig, strip_ansi, unique};
use crate::figures::pct;
use crate::procfs::{loadavg, rss_kib};
use crate::watch::{Seen, all_in, spawn_pv_watch, spawn_pvc_watch, spawn_trash_poller, until};

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

/// A timeout for waiting on `k` objects: `per` each, never less than `floor`.
fn scaled(k: usize, per: Duration, floor: Duration) -> Duration {
    per.mul_f64(k as f64).max(floor)
}

/// Resident memory of the provisioner, MiB: VmRSS and its anonymous (heap, stacks) and
/// file-backed (shared-library text: librados, libceph-common, ...) parts; VmHWM.
#[derive(Clone, Copy, Default)]
struct Mem {
    rss: f64,
    anon: f64,
    file: f64,
    hwm: f64,
}

impl Mem {
    fn of(pid: u32) -> Mem {
        let mib = |k: u64| k as f64 / 1024.0;
        rss_kib(pid)
            .map(|r| Mem {
                rss: mib(r.vm_rss),
                anon: mib(r.anon),
                file: mib(r.file),
                hwm: mib(r.hwm),
            })
            .unwrap_or_default()
    }

    /// `| VmRSS | RssAnon | RssFile |` cells.
    fn cells(&self) -> String {
        format!("{:.1} | {:.1} | {:.1}", self.rss, self.anon, self.file)
    }
}

impl fmt::Display for Mem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1} MiB (RssAnon {:.1}, RssFile {:.1})",
            self.rss, self.anon, self.file
        )
    }
}

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
        Ours::start_with(
            bed,
            name,
            env!("CARGO_BIN_EXE_rbd-provisioner").as_ref(),
            &[],
        )
        .await
    }

    /// `bin` (another build of the provisioner) with these variables set.
    async fn start_with(
        bed: &Bed,
        name: &str,
        bin: &std::path::Path,
        env: &[(&str, String)],
    ) -> Ours {
        let kubeconfig = service_account_kubeconfig(bed).await;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let addr = format!("127.0.0.1:{port}");
        let log = bed.dir.join(format!("{}.log", unique("scale")));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.envs(env.iter().map(|(k, v)| (k, v)))
            .arg("--kubeconfig")
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

    fn mem(&self) -> Mem {
        Mem::of(self.pid())
    }

    /// Its log's WARN and ERROR lines: (count of each, the first few of either).
    fn log_problems(&self) -> (usize, usize, Vec<String>) {
        let text = strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default());
        let (mut warns, mut errors, mut first) = (0, 0, Vec::new());
        for l in text.lines() {
            let w = l.contains(" WARN ");
            let e = l.contains(" ERROR ");
            warns += w as usize;
            errors += e as usize;
            if (w || e) && first.len() < 5 {
                first.push(l.chars().take(300).collect());
            }
        }
        (warns, errors, first)
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
        // Our own child, not yet reaped.
        common::signal(self.child.id(), libc::SIGTERM);
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

/// Creates a claim of our class, with the hand-over annotation already on it when `handed`
/// is set.
async fn create_claim(cx: &Ctx, name: &str, handed: bool, size: &str) -> Result<()> {
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
            "resources": {"requests": {"storage": size}},
        },
    }))?;
    cx.pvcs()
        .create(&PostParams::default(), &pvc)
        .await
        .with_context(|| format!("create claim {name}"))?;
    Ok(())
}

/// Creates 1 GiB claims of our class (50 creates in flight); returns when the API server
/// accepted the last one.
async fn create_claims(cx: &Ctx, names: &[String], handed: bool) -> Result<Duration> {
    let t = Instant::now();
    let results: Vec<Result<()>> = stream::iter(names.iter())
        .map(|name| create_claim(cx, name, handed, "1Gi"))
        .buffer_unordered(CREATE_IN_FLIGHT)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(t.elapsed())
}

/// Deletes a claim, then removes its `kubernetes.io/pvc-protection` finalizer, as
/// kube-controller-manager's pvc-protection controller would (no pod exists in the bench's
/// namespace), so the claim is gone at once instead of at that controller's pace. Other
/// finalizers stay; the patch carries the resourceVersion it was computed from.
async fn delete_and_release(cx: &Ctx, name: &str) -> Result<()> {
    let api = cx.pvcs();
    match api.delete(name, &DeleteParams::default()).await {
        Ok(either::Either::Left(claim)) => {
            drop_protection(&api, name, PVC_PROTECTION, Some(claim)).await
        }
        Ok(either::Either::Right(_)) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("delete claim {name}")),
    }
}

/// Removes `finalizer` from the object `name` once it is being deleted; other finalizers (the
/// provisioner's) stay. Each patch carries the resourceVersion it was computed from; a
/// conflict reads the object again. `current`: the object as just returned, if at hand.
async fn drop_protection<K>(
    api: &Api<K>,
    name: &str,
    finalizer: &str,
    mut current: Option<K>,
) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    for _ in 0..10 {
        let obj = match current.take() {
            Some(o) => o,
            None => match api
                .get_opt(name)
                .await
                .with_context(|| format!("read {name}"))?
            {
                Some(o) => o,
                None => return Ok(()),
            },
        };
        let finalizers = obj.meta().finalizers.clone().unwrap_or_default();
        if obj.meta().deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let rest: Vec<String> = finalizers.into_iter().filter(|f| f != finalizer).collect();
        let patch = json!({"metadata": {
            "finalizers": rest,
            "resourceVersion": obj.meta().resource_version,
        }});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e).with_context(|| format!("remove {finalizer} from {name}")),
        }
    }
    bail!("{name}: {finalizer} could not be removed (conflicts)")
}

/// Runs `work` while, beside it, every PV of ours the provisioner has deleted (marked for
/// deletion) loses its `kubernetes.io/pv-protection` finalizer, as kube-controller-manager's
/// pv-protection controller would drop it for a volume no pod uses (none exists in the bench's
/// namespace), so PVs leave at the provisioner's pace rather than that controller's.
async fn with_pv_release<T>(cx: &Ctx, work: impl std::future::Future<Output = T>) -> T {
    let releaser = async {
        let mut done: std::collections::HashSet<String> = std::collections::HashSet::new();
        loop {
            let todo: Vec<(String, String)> = {
                let g = cx.seen.lock().unwrap();
                g.pv_deleting
                    .keys()
                    .filter(|c| !g.pv_gone.contains_key(*c) && !done.contains(*c))
                    .filter_map(|c| Some((c.clone(), g.pv_name.get(c)?.clone())))
                    .collect()
            };
            let released: Vec<String> = stream::iter(todo)
                .map(|(claim, pv)| async move {
                    drop_protection(&cx.pvs(), &pv, PV_PROTECTION, None)
                        .await
                        .ok()
                        .map(|_| claim)
                })
                .buffer_unordered(DELETE_IN_FLIGHT)
                .filter_map(future::ready)
                .collect()
                .await;
            done.extend(released);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        r = work => r,
        () = releaser => unreachable!("the releaser never ends"),
    }
}

/// [`delete_and_release`] for each claim, 32 in flight; returns when the last one returned.
async fn delete_and_release_all(cx: &Ctx, names: &[String]) -> Result<Duration> {
    let t = Instant::now();
    let results: Vec<Result<()>> = stream::iter(names.iter())
        .map(|name| delete_and_release(cx, name))
        .buffer_unordered(DELETE_IN_FLIGHT)
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
    let cycles: usize = std::env::var("RBD_BENCH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let annotation_kib: Option<usize> = std::env::var("RBD_BENCH_ANNOTATION_KIB")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut out = Vec::new();
    let (outcome, what) = match annotation_kib {
        None => (
            run(&cx, n, cycles, &mut out).await,
            format!("N = {n}, {cycles} cycles"),
        ),
        Some(kib) => {
            let n = std::env::var("RBD_BENCH_SCALE_N")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
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

async fn run(cx: &Ctx, n: usize, cycles: usize, out: &mut Vec<String>) -> Result<()> {
    until(&cx.seen, "watches listed", Duration::from_secs(30), |g| {
        g.pv_ready && g.pvc_ready
    })
    .await?;
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
    out.push("| figure | value |".into());
    out.push("|---|---|".into());
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
        let outcome = with_pv_release(cx, cycle_phase(cx, &again, cycles, out)).await;
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
    out.push("| figure | value |".into());
    out.push("|---|---|".into());
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

/// The WARN and ERROR lines of a provisioner's log, counted.
fn problems(ours: &Ours, which: &str, out: &mut Vec<String>) {
    let (warns, errors, first) = ours.log_problems();
    out.push(String::new());
    out.push(format!(
        "Log of the {which} ({}): {warns} WARN, {errors} ERROR lines.",
        ours.log.display()
    ));
    for l in first {
        out.push(format!("    {l}"));
    }
}

/// One cycle's times: claim created → PV exists; claim deleted and released → PV marked for
/// deletion (the provisioner's delete call) → PV gone; and whether kube-controller-manager
/// had bound the claim before it was deleted.
struct CycleTimes {
    to_pv: Duration,
    to_deleting: Duration,
    to_gone: Duration,
    bound: bool,
}

/// Waits until `map` holds `name`.
async fn until_seen(
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
async fn cycle(cx: &Ctx, name: String) -> Result<CycleTimes> {
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

/// Create/delete cycles, 24 in flight, with memory sampled along the way.
async fn cycle_phase(cx: &Ctx, ours: &Ours, total: usize, out: &mut Vec<String>) -> Result<()> {
    let every = (total / 10).clamp(1, 1000);
    // 500 ms per cycle (2 per second), at least 5 min; cycles in flight at the deadline finish.
    let budget = scaled(total, Duration::from_millis(500), Duration::from_secs(300));
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
        if started < total {
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

/// CPU time the process has used (user and system), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: state is field 3, utime 14 and stime 15.
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Since its watches synced, at least this long before memory is read: its free heap goes back
/// to the kernel every 10 s.
const SETTLE: Duration = Duration::from_secs(12);

/// Waits until the provisioner is idle: at least [`SETTLE`] after `ready`, then two seconds in
/// a row under 20 ms of CPU each (2 ticks); at most a minute.
async fn until_idle(ours: &Ours, ready: Duration) {
    let since = ours.started + ready;
    tokio::time::sleep(SETTLE.saturating_sub(since.elapsed())).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet = 0;
    let mut last = cpu_ticks(ours.pid());
    while quiet < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = cpu_ticks(ours.pid());
        quiet = match (last, now) {
            (Some(a), Some(b)) if b.saturating_sub(a) <= 2 => quiet + 1,
            _ => 0,
        };
        last = now;
    }
}

/// One start of a provisioner binary over what is there: start → watches synced, and its
/// memory once idle.
struct Sample {
    ready: Duration,
    mem: Mem,
    /// WARN and ERROR lines of its log.
    problems: usize,
}

async fn sample(cx: &Ctx, bin: &std::path::Path, env: &[(&str, String)]) -> Result<Sample> {
    let ours = Ours::start_with(&cx.bed, &cx.prov_name, bin, env).await;
    let ready = ours.until_ready(Duration::from_secs(300)).await?;
    until_idle(&ours, ready).await;
    let mem = ours.mem();
    let (warns, errors, first) = ours.log_problems();
    for l in first {
        eprintln!("{}: {l}", bin.display());
    }
    Ok(Sample {
        ready,
        mem,
        problems: warns + errors,
    })
}

/// The binaries compared: this build, and `RBD_BENCH_BEFORE` when set.
fn binaries() -> Vec<(String, std::path::PathBuf)> {
    let mut b = vec![(
        "this build".to_string(),
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_rbd-provisioner")),
    )];
    if let Ok(before) = std::env::var("RBD_BENCH_BEFORE") {
        b.push((format!("`RBD_BENCH_BEFORE` ({before})"), before.into()));
    }
    b
}

/// PVs (of the peer's class, Retain, naming images that do not exist) each pre-bound to a
/// claim bound to it; 50 creates in flight.
async fn create_pairs(cx: &Ctx, names: &[String]) -> Result<Duration> {
    let t = Instant::now();
    let results: Vec<Result<()>> = stream::iter(names.iter())
        .map(|name| async move {
            let pv_name = format!("{}-{name}", cx.ns);
            let pv: PersistentVolume = serde_json::from_value(json!({
                "metadata": {"name": pv_name},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": cx.peer,
                    "rbd": {"monitors": ["127.0.0.1:6789"], "pool": "kube", "image": pv_name, "user": "kube"},
                    "claimRef": {"namespace": cx.ns, "name": name},
                }
            }))?;
            cx.pvs()
                .create(&PostParams::default(), &pv)
                .await
                .with_context(|| format!("create PV {pv_name}"))?;
            small_claim(cx, name, &cx.peer, &pv_name).await
        })
        .buffer_unordered(CREATE_IN_FLIGHT)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(t.elapsed())
}

/// A 1 GiB claim of `class` pre-bound to the PV `volume`.
async fn small_claim(cx: &Ctx, name: &str, class: &str, volume: &str) -> Result<()> {
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": cx.ns},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": class,
            "volumeName": volume,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }))?;
    cx.pvcs()
        .create(&PostParams::default(), &pvc)
        .await
        .with_context(|| format!("create claim {name}"))?;
    Ok(())
}

/// The large annotation's key.
const BALLAST: &str = "bench.example.com/ballast";

/// Puts an annotation of `kib` KiB (printable, not repetitive) on each claim, 16 in flight;
/// with 0, takes it off again (so that deleting a claim writes no large revisions to etcd).
async fn annotate(cx: &Ctx, names: &[String], kib: usize) -> Result<Duration> {
    let t = Instant::now();
    let results: Vec<Result<()>> = stream::iter(names.iter().enumerate())
        .map(|(i, name)| async move {
            let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let value: String = (0..kib * 1024)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'a' + (x % 26) as u8)
                })
                .collect();
            let value = (kib > 0).then_some(value);
            let patch = json!({"metadata": {"annotations": {BALLAST: value}}});
            cx.pvcs()
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("annotate claim {name}"))?;
            Ok(())
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(t.elapsed())
}

/// Deletes each PV (released by then), then drops its `kubernetes.io/pv-protection`.
async fn delete_volumes(cx: &Ctx, names: &[String]) -> Result<()> {
    let results: Vec<Result<()>> = stream::iter(names.iter())
        .map(|name| async move {
            let api = cx.pvs();
            match api.delete(name, &DeleteParams::default()).await {
                Ok(either::Either::Left(pv)) => {
                    drop_protection(&api, name, PV_PROTECTION, Some(pv)).await
                }
                Ok(either::Either::Right(_)) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(e).with_context(|| format!("delete PV {name}")),
            }
        })
        .buffer_unordered(DELETE_IN_FLIGHT)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(())
}

/// `RBD_BENCH_PAGE_SIZES`, e.g. `500,100,50,20`.
fn page_sizes() -> Vec<u32> {
    std::env::var("RBD_BENCH_PAGE_SIZES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect()
}

/// Each page size twice, alternating, with this build: rows of a table.
async fn page_size_sweep(cx: &Ctx, over: &str, out: &mut Vec<String>) -> Result<()> {
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
async fn large_claims(cx: &Ctx, n: usize, kib: usize, out: &mut Vec<String>) -> Result<()> {
    until(&cx.seen, "watches listed", Duration::from_secs(30), |g| {
        g.pv_ready && g.pvc_ready
    })
    .await?;
    let names: Vec<String> = (0..n).map(|i| format!("mem-{i}")).collect();
    let pvs: Vec<String> = names.iter().map(|c| format!("{}-{c}", cx.ns)).collect();
    let small_n: usize = std::env::var("RBD_BENCH_SMALL_CLAIMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
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

async fn large_claims_phases(
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
        let results: Vec<Result<()>> = stream::iter(small.iter())
            .map(|name| small_claim(cx, name, &cx.peer, &nowhere))
            .buffer_unordered(CREATE_IN_FLIGHT)
            .collect()
            .await;
        for r in results {
            r?;
        }
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
