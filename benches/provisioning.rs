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
//!     which is the floor for "all Bound" that no provisioner can beat.
//!
//! Everything it creates carries a unique name and is removed at the end (claims, PVs,
//! images, trash entries, classes, secrets, the namespace), also when a phase fails.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use common::*;
use futures::StreamExt;
use futures::future::join_all;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use rbd_provisioner::ceph::Cluster;
use serde_json::json;

const SEQ_N: usize = 20;
const DEL_N: usize = 5;
const BURST_N: usize = 100;
/// Upper bound for the whole run, setup and cleanup included.
const RUN_BUDGET: Duration = Duration::from_secs(14 * 60);
/// Kept for cleanup out of `RUN_BUDGET`: the phases stop this long before the end.
const CLEANUP_RESERVE: Duration = Duration::from_secs(150);
const TRASH_POLL: Duration = Duration::from_millis(250);

// ---- what the watches saw ------------------------------------------------------------------

/// First-seen instants, keyed by claim name (all claims live in one namespace).
#[derive(Default)]
struct Seen {
    pv_ready: bool,
    pvc_ready: bool,
    pv_created: HashMap<String, Instant>,
    pv_gone: HashMap<String, Instant>,
    pv_name: HashMap<String, String>,
    image: HashMap<String, String>,
    bound: HashMap<String, Instant>,
    /// When the claim first carried the binder's storage-provisioner annotation: the binder
    /// hands a claim to a provisioner (ours or its own in-tree plugin) by writing it.
    annotated: HashMap<String, Instant>,
    /// Claims whose image must leave the trash; the poller fills `purged`.
    trash_pending: HashSet<String>,
    purged: HashMap<String, Instant>,
    trash_errors: u64,
}

type Shared = Arc<Mutex<Seen>>;

fn claim_of(pv: &PersistentVolume, ns: &str) -> Option<String> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    if r.namespace.as_deref() != Some(ns) {
        return None;
    }
    r.name.clone()
}

fn image_of(pv: &PersistentVolume) -> Option<String> {
    let s = pv.spec.as_ref()?;
    if let Some(r) = &s.rbd {
        return Some(r.image.clone());
    }
    s.csi.as_ref().map(|c| c.volume_handle.clone())
}

fn spawn_pv_watch(admin: kube::Client, ns: String, seen: Shared) {
    tokio::spawn(async move {
        let api: Api<PersistentVolume> = Api::all(admin);
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        let mut listed: HashSet<String> = HashSet::new();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            match ev {
                Ok(watcher::Event::Apply(pv)) | Ok(watcher::Event::InitApply(pv)) => {
                    if let Some(c) = claim_of(&pv, &ns) {
                        listed.insert(c.clone());
                        let mut g = seen.lock().unwrap();
                        g.pv_created.entry(c.clone()).or_insert(now);
                        if let Some(name) = pv.metadata.name.clone() {
                            g.pv_name.insert(c.clone(), name);
                        }
                        if let Some(i) = image_of(&pv) {
                            g.image.insert(c, i);
                        }
                    }
                }
                Ok(watcher::Event::Delete(pv)) => {
                    if let Some(c) = claim_of(&pv, &ns) {
                        seen.lock().unwrap().pv_gone.entry(c).or_insert(now);
                    }
                }
                Ok(watcher::Event::Init) => listed.clear(),
                Ok(watcher::Event::InitDone) => {
                    let mut g = seen.lock().unwrap();
                    g.pv_ready = true;
                    // A relist that no longer shows a PV means it went while we were away.
                    let missing: Vec<String> = g
                        .pv_created
                        .keys()
                        .filter(|c| !listed.contains(*c) && !g.pv_gone.contains_key(*c))
                        .cloned()
                        .collect();
                    for c in missing {
                        g.pv_gone.insert(c, now);
                    }
                }
                Err(e) => {
                    eprintln!("PV watch: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
}

fn spawn_pvc_watch(admin: kube::Client, ns: String, seen: Shared) {
    tokio::spawn(async move {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(admin, &ns);
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            match ev {
                Ok(watcher::Event::Apply(c)) | Ok(watcher::Event::InitApply(c)) => {
                    let bound = c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
                    let annotated = c.metadata.annotations.as_ref().is_some_and(|a| {
                        a.contains_key("volume.beta.kubernetes.io/storage-provisioner")
                            || a.contains_key("volume.kubernetes.io/storage-provisioner")
                    });
                    if let Some(n) = c.metadata.name {
                        let mut g = seen.lock().unwrap();
                        if annotated {
                            g.annotated.entry(n.clone()).or_insert(now);
                        }
                        if bound {
                            g.bound.entry(n).or_insert(now);
                        }
                    }
                }
                Ok(watcher::Event::InitDone) => seen.lock().unwrap().pvc_ready = true,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("claim watch: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
}

/// Polls the pool's trash while images are pending: an image counts as purged at the start
/// of the first poll, begun after its PV was gone (the provisioner trashes the image before
/// it deletes the PV), whose listing no longer holds it.
fn spawn_trash_poller(ceph: Arc<Cluster>, seen: Shared) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TRASH_POLL).await;
            let started = Instant::now();
            let candidates: Vec<(String, String)> = {
                let g = seen.lock().unwrap();
                g.trash_pending
                    .iter()
                    .filter(|c| g.pv_gone.contains_key(*c))
                    .filter_map(|c| Some((c.clone(), g.image.get(c)?.clone())))
                    .collect()
            };
            if candidates.is_empty() {
                continue;
            }
            match ceph.trash_list("kube").await {
                Ok(entries) => {
                    let names: HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
                    let mut g = seen.lock().unwrap();
                    for (c, image) in candidates {
                        if !names.contains(image.as_str()) {
                            g.trash_pending.remove(&c);
                            g.purged.insert(c, started);
                        }
                    }
                }
                Err(e) => {
                    seen.lock().unwrap().trash_errors += 1;
                    eprintln!("trash list: {e}");
                }
            }
        }
    });
}

async fn until(
    seen: &Shared,
    what: &str,
    timeout: Duration,
    f: impl Fn(&Seen) -> bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if f(&seen.lock().unwrap()) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---- the bed -------------------------------------------------------------------------------

struct Ctx {
    bed: Bed,
    admin: kube::Client,
    ceph: Arc<Cluster>,
    ns: String,
    ours: String,
    peer: String,
    /// storageClassName of the binder-only control (no StorageClass object, no provisioner).
    control: String,
    admin_secret: String,
    prov_name: String,
    seen: Shared,
}

impl Ctx {
    fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }
    fn pvs(&self) -> Api<PersistentVolume> {
        Api::all(self.admin.clone())
    }

    async fn create_claim(
        &self,
        name: &str,
        class: &str,
        size: &str,
    ) -> Result<PersistentVolumeClaim> {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": class,
                "resources": {"requests": {"storage": size}},
            },
        }))?;
        self.pvcs()
            .create(&PostParams::default(), &pvc)
            .await
            .with_context(|| format!("create claim {name}"))
    }

    async fn delete_claim(&self, name: &str) -> Result<()> {
        self.pvcs()
            .delete(name, &DeleteParams::default())
            .await
            .with_context(|| format!("delete claim {name}"))?;
        Ok(())
    }

    fn at(&self, map: fn(&Seen) -> &HashMap<String, Instant>, name: &str) -> Instant {
        map(&self.seen.lock().unwrap())[name]
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

fn all_in(map: &HashMap<String, Instant>, names: &[String]) -> bool {
    names.iter().all(|n| map.contains_key(n))
}

fn latest(map: &HashMap<String, Instant>, names: &[String]) -> Instant {
    names.iter().map(|n| map[n]).max().unwrap()
}

// ---- figures -------------------------------------------------------------------------------

/// Nearest-rank percentile.
fn pct(v: &[Duration], p: f64) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

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

#[derive(Default)]
struct Seq {
    annotated: Vec<Duration>,
    /// Annotation -> PV: what the provisioner itself takes once the binder handed it the claim.
    ann_to_pv: Vec<Duration>,
    /// Claims whose PV event came before their annotation event, by how much. Not clamped to
    /// zero: both watches are timestamped on this process's monotonic clock, so a negative
    /// gap is real (early provisioning, or one watch delivering later than the other).
    pv_before_ann: Vec<Duration>,
    pv: Vec<Duration>,
    bound: Vec<Duration>,
}

#[derive(Default)]
struct Del {
    pv_gone: Vec<Duration>,
    purged: Vec<Duration>,
    /// From the first claim deletion of the batch until the trash held none of its images.
    trash_clear: Option<Duration>,
    /// From the last PV gone until the trash held none of the batch's images.
    trash_after_last_pv: Option<Duration>,
}

#[derive(Default)]
struct Burst {
    api_create: Option<Duration>,
    all_annotated: Option<Duration>,
    ann_to_pv: Vec<Duration>,
    /// As in [`Seq::pv_before_ann`].
    pv_before_ann: Vec<Duration>,
    pv_p50: Option<Duration>,
    all_pvs: Option<Duration>,
    all_bound: Option<Duration>,
    api_delete: Option<Duration>,
    all_gone: Option<Duration>,
    /// ours: until the trash held none of them; peer: until the pool listed none of them.
    images_gone: Option<Duration>,
    hwm_after_create_kib: Option<u64>,
    hwm_after_delete_kib: Option<u64>,
    rss_after_delete_kib: Option<u64>,
}

#[derive(Default)]
struct Figures {
    seq_ours: Seq,
    seq_peer: Seq,
    del_1g: Del,
    del_100g: Del,
    burst_ours: Burst,
    burst_peer: Burst,
    control_all_bound: Option<Duration>,
    control_api_create: Option<Duration>,
    leftovers: Vec<String>,
    /// (phase, load average at its start, at its end), in the order run.
    phase_load: Vec<(String, String, String)>,
    /// Whether the in-tree peer's phases ran before ours this time.
    peer_first: bool,
}

// ---- phases --------------------------------------------------------------------------------

async fn sequential(
    cx: &Ctx,
    class: &str,
    prefix: &str,
    n: usize,
    out: &mut Seq,
) -> Result<Vec<String>> {
    let list = names(prefix, n);
    for name in &list {
        let t0 = Instant::now();
        cx.create_claim(name, class, "1Gi").await?;
        until(
            &cx.seen,
            &format!("{name} Bound"),
            Duration::from_secs(60),
            |g| g.bound.contains_key(name) && g.pv_created.contains_key(name),
        )
        .await?;
        let g = cx.seen.lock().unwrap();
        let pv = g.pv_created[name];
        out.pv.push(pv - t0);
        out.bound.push(g.bound[name] - t0);
        if let Some(a) = g.annotated.get(name) {
            out.annotated.push(*a - t0);
            match pv.checked_duration_since(*a) {
                Some(d) => out.ann_to_pv.push(d),
                None => out.pv_before_ann.push(*a - pv),
            }
        }
    }
    Ok(list)
}

/// Deletes Bound claims one at a time, each after the previous one's PV is gone.
async fn delete_one_by_one(cx: &Ctx, list: &[String], out: &mut Del) -> Result<()> {
    let mut started = Vec::new();
    for name in list {
        cx.seen.lock().unwrap().trash_pending.insert(name.clone());
        let t0 = Instant::now();
        started.push(t0);
        cx.delete_claim(name).await?;
        until(
            &cx.seen,
            &format!("PV of {name} gone"),
            Duration::from_secs(60),
            |g| g.pv_gone.contains_key(name),
        )
        .await?;
        out.pv_gone.push(cx.at(|g| &g.pv_gone, name) - t0);
    }
    until(
        &cx.seen,
        "trash free of the deleted images",
        Duration::from_secs(240),
        |g| all_in(&g.purged, list),
    )
    .await?;
    let g = cx.seen.lock().unwrap();
    for (name, t0) in list.iter().zip(&started) {
        out.purged.push(g.purged[name] - *t0);
    }
    let clear = latest(&g.purged, list);
    out.trash_clear = Some(clear - started[0]);
    out.trash_after_last_pv = Some(clear.saturating_duration_since(latest(&g.pv_gone, list)));
    Ok(())
}

/// Deletes claims at once and waits for their PVs to go (no figures).
async fn delete_all_quietly(cx: &Ctx, list: &[String], ours: bool) -> Result<()> {
    if ours {
        cx.seen
            .lock()
            .unwrap()
            .trash_pending
            .extend(list.iter().cloned());
    }
    for r in join_all(list.iter().map(|n| cx.delete_claim(n))).await {
        r?;
    }
    until(&cx.seen, "PVs gone", Duration::from_secs(180), |g| {
        all_in(&g.pv_gone, list)
    })
    .await
}

fn find_pid(prov_name: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_ours = args
            .first()
            .is_some_and(|a| a.ends_with(b"rbd-provisioner"))
            && args
                .windows(2)
                .any(|w| w[0] == b"--provisioner-name" && w[1] == prov_name.as_bytes());
        if is_ours {
            return Some(pid);
        }
    }
    None
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn burst(
    cx: &Ctx,
    class: &str,
    prefix: &str,
    ours: bool,
    pid: Option<u32>,
    out: &mut Burst,
) -> Result<()> {
    let list = names(prefix, BURST_N);
    let t0 = Instant::now();
    for r in join_all(list.iter().map(|n| cx.create_claim(n, class, "1Gi"))).await {
        r?;
    }
    out.api_create = Some(t0.elapsed());
    until(
        &cx.seen,
        "every PV of the burst",
        Duration::from_secs(300),
        |g| all_in(&g.pv_created, &list),
    )
    .await?;
    {
        let g = cx.seen.lock().unwrap();
        let v: Vec<Duration> = list.iter().map(|n| g.pv_created[n] - t0).collect();
        out.pv_p50 = Some(pct(&v, 50.0));
        out.all_pvs = Some(latest(&g.pv_created, &list) - t0);
        if all_in(&g.annotated, &list) {
            out.all_annotated = Some(latest(&g.annotated, &list) - t0);
        }
        for n in &list {
            let (Some(a), pv) = (g.annotated.get(n), g.pv_created[n]) else {
                continue;
            };
            match pv.checked_duration_since(*a) {
                Some(d) => out.ann_to_pv.push(d),
                None => out.pv_before_ann.push(*a - pv),
            }
        }
    }
    until(
        &cx.seen,
        "every claim of the burst Bound",
        Duration::from_secs(300),
        |g| all_in(&g.bound, &list),
    )
    .await?;
    out.all_bound = Some(latest(&cx.seen.lock().unwrap().bound, &list) - t0);
    if let Some(pid) = pid {
        out.hwm_after_create_kib = proc_status_kib(pid, "VmHWM:");
    }

    if ours {
        cx.seen
            .lock()
            .unwrap()
            .trash_pending
            .extend(list.iter().cloned());
    }
    let t1 = Instant::now();
    for r in join_all(list.iter().map(|n| cx.delete_claim(n))).await {
        r?;
    }
    out.api_delete = Some(t1.elapsed());
    until(
        &cx.seen,
        "every PV of the burst gone",
        Duration::from_secs(300),
        |g| all_in(&g.pv_gone, &list),
    )
    .await?;
    out.all_gone = Some(latest(&cx.seen.lock().unwrap().pv_gone, &list) - t1);
    if ours {
        until(
            &cx.seen,
            "trash free of the burst's images",
            Duration::from_secs(300),
            |g| all_in(&g.purged, &list),
        )
        .await?;
        out.images_gone = Some(latest(&cx.seen.lock().unwrap().purged, &list) - t1);
    } else {
        let images: HashSet<String> = {
            let g = cx.seen.lock().unwrap();
            list.iter()
                .filter_map(|n| g.image.get(n).cloned())
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let started = Instant::now();
            let pool = cx.ceph.list_images("kube").await?;
            if !pool.iter().any(|i| images.contains(i)) {
                out.images_gone = Some(started - t1);
                break;
            }
            if Instant::now() > deadline {
                bail!("the peer's images are still in the pool");
            }
            tokio::time::sleep(TRASH_POLL).await;
        }
    }
    if let Some(pid) = pid {
        out.hwm_after_delete_kib = proc_status_kib(pid, "VmHWM:");
        out.rss_after_delete_kib = proc_status_kib(pid, "VmRSS:");
    }
    Ok(())
}

/// Binder-only control: claims of a class nobody provisions, each followed at once by a PV
/// pre-bound to it (claimRef with uid), as an infinitely fast provisioner would write it.
async fn control(cx: &Ctx, figs: &mut Figures) -> Result<()> {
    let list = names("control", BURST_N);
    let t0 = Instant::now();
    let make = |name: String| async move {
        let c = cx.create_claim(&name, &cx.control, "1Gi").await?;
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": format!("{}-{name}", cx.ns)},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": cx.control,
                "claimRef": {"namespace": cx.ns, "name": name, "uid": c.metadata.uid},
                "rbd": {"monitors": [cx.bed.monitors], "pool": "kube", "image": "bench-control-no-such-image", "user": "kube"},
            },
        }))?;
        cx.pvs().create(&PostParams::default(), &pv).await?;
        anyhow::Ok(())
    };
    for r in join_all(list.iter().cloned().map(make)).await {
        r?;
    }
    figs.control_api_create = Some(t0.elapsed());
    until(
        &cx.seen,
        "every control claim Bound",
        Duration::from_secs(300),
        |g| all_in(&g.bound, &list),
    )
    .await?;
    figs.control_all_bound = Some(latest(&cx.seen.lock().unwrap().bound, &list) - t0);
    // Claims first, then the (Retain) PVs: nothing on Ceph to remove.
    for r in join_all(list.iter().map(|n| cx.delete_claim(n))).await {
        r?;
    }
    let pvs = cx.pvs();
    for n in &list {
        let _ = pvs
            .delete(&format!("{}-{n}", cx.ns), &DeleteParams::default())
            .await;
    }
    until(
        &cx.seen,
        "control PVs gone",
        Duration::from_secs(120),
        |g| all_in(&g.pv_gone, &list),
    )
    .await
}

async fn run(cx: &Ctx, figs: &mut Figures) -> Result<()> {
    let pid = find_pid(&cx.prov_name);
    if pid.is_none() {
        eprintln!("warning: provisioner process not found; no memory figures");
    }
    // Alternate which provisioner goes first between runs (the parity of a fresh unique
    // name, or RBD_BENCH_PEER_FIRST=1/0), so that load drift on a shared machine does not
    // always land on the same side of the ratios; the load of each phase is reported.
    figs.peer_first = match std::env::var("RBD_BENCH_PEER_FIRST").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => unique("order").bytes().map(u32::from).sum::<u32>() % 2 == 1,
    };
    if figs.peer_first {
        peer_phases(cx, figs).await?;
        our_phases(cx, figs, pid).await?;
    } else {
        our_phases(cx, figs, pid).await?;
        peer_phases(cx, figs).await?;
    }
    let l0 = loadavg();
    eprintln!("binder-only control: {BURST_N} claims with pre-bound PVs");
    control(cx, figs).await?;
    figs.phase_load
        .push(("binder-only control".into(), l0, loadavg()));
    Ok(())
}

async fn our_phases(cx: &Ctx, figs: &mut Figures, pid: Option<u32>) -> Result<()> {
    let l0 = loadavg();
    eprintln!("ours: {SEQ_N} claims one at a time");
    let seq = sequential(cx, &cx.ours, "seq-ours", SEQ_N, &mut figs.seq_ours).await?;
    figs.phase_load
        .push(("ours, one at a time".into(), l0, loadavg()));
    let l0 = loadavg();
    eprintln!("ours: deleting {DEL_N} x 1 GiB one at a time");
    delete_one_by_one(cx, &seq[..DEL_N], &mut figs.del_1g).await?;
    delete_all_quietly(cx, &seq[DEL_N..], true).await?;
    eprintln!("ours: deleting {DEL_N} x 100 GiB one at a time");
    let big = names("big-ours", DEL_N);
    for r in join_all(big.iter().map(|n| cx.create_claim(n, &cx.ours, "100Gi"))).await {
        r?;
    }
    until(
        &cx.seen,
        "100 GiB claims Bound",
        Duration::from_secs(120),
        |g| all_in(&g.bound, &big),
    )
    .await?;
    delete_one_by_one(cx, &big, &mut figs.del_100g).await?;
    until(&cx.seen, "trash free", Duration::from_secs(240), |g| {
        g.trash_pending.is_empty()
    })
    .await?;
    figs.phase_load
        .push(("ours, deletions one at a time".into(), l0, loadavg()));
    let l0 = loadavg();
    eprintln!("ours: burst of {BURST_N}");
    burst(cx, &cx.ours, "burst-ours", true, pid, &mut figs.burst_ours).await?;
    figs.phase_load.push(("ours, burst".into(), l0, loadavg()));
    Ok(())
}

async fn peer_phases(cx: &Ctx, figs: &mut Figures) -> Result<()> {
    let l0 = loadavg();
    eprintln!("in-tree peer: {SEQ_N} claims one at a time");
    let seq = sequential(cx, &cx.peer, "seq-peer", SEQ_N, &mut figs.seq_peer).await?;
    delete_all_quietly(cx, &seq, false).await?;
    figs.phase_load
        .push(("in-tree peer, one at a time".into(), l0, loadavg()));
    let l0 = loadavg();
    eprintln!("in-tree peer: burst of {BURST_N}");
    burst(
        cx,
        &cx.peer,
        "burst-peer",
        false,
        None,
        &mut figs.burst_peer,
    )
    .await?;
    figs.phase_load
        .push(("in-tree peer, burst".into(), l0, loadavg()));
    Ok(())
}

// ---- cleanup -------------------------------------------------------------------------------

/// A PV still there at cleanup: (claim, PV name, image).
type Stale = (String, Option<String>, Option<String>);

async fn cleanup(cx: &Ctx) -> Vec<String> {
    let mut left = Vec::new();
    let pvcs = cx.pvcs();
    let _ = pvcs
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await;
    // Give both provisioners a chance to delete what they made.
    let ours_or_peer = |g: &Seen| {
        g.pv_created
            .keys()
            .filter(|c| !c.starts_with("control-") && !g.pv_gone.contains_key(*c))
            .count()
    };
    let _ = until(&cx.seen, "all PVs gone", Duration::from_secs(120), |g| {
        ours_or_peer(g) == 0
    })
    .await;
    let _ = until(&cx.seen, "trash free", Duration::from_secs(120), |g| {
        g.trash_pending.is_empty()
    })
    .await;

    // Whatever is left: by force.
    let pvs = cx.pvs();
    let (stale, pending): (Vec<Stale>, Vec<String>) = {
        let g = cx.seen.lock().unwrap();
        (
            g.pv_created
                .keys()
                .filter(|c| !g.pv_gone.contains_key(*c))
                .map(|c| {
                    (
                        c.clone(),
                        g.pv_name.get(c).cloned(),
                        g.image.get(c).cloned(),
                    )
                })
                .collect(),
            g.trash_pending
                .iter()
                .filter_map(|c| g.image.get(c).cloned())
                .collect(),
        )
    };
    for (claim, pv, image) in stale {
        if let Some(pv) = pv {
            let _ = pvs
                .patch(
                    &pv,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                )
                .await;
            let _ = pvs.delete(&pv, &DeleteParams::default()).await;
            left.push(format!("PV {pv} of claim {claim} removed by cleanup"));
        }
        if let Some(image) = image.filter(|i| i.starts_with("kubernetes-dynamic-pvc-"))
            && cx.ceph.remove_image("kube", &image).await.is_ok()
        {
            left.push(format!("image {image} removed by cleanup"));
        }
    }
    if !pending.is_empty()
        && let Ok(entries) = cx.ceph.trash_list("kube").await
    {
        for e in entries.iter().filter(|e| pending.contains(&e.name)) {
            let _ = cx.ceph.trash_remove("kube", &e.id, true).await;
            left.push(format!("trash entry {} purged by cleanup", e.name));
        }
    }
    let scs = Api::<StorageClass>::all(cx.admin.clone());
    for sc in [&cx.ours, &cx.peer] {
        let _ = scs.delete(sc, &DeleteParams::default()).await;
    }
    let _ = Api::<Secret>::namespaced(cx.admin.clone(), "kube-system")
        .delete(&cx.admin_secret, &DeleteParams::default())
        .await;
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(cx.admin.clone())
        .delete(&cx.ns, &DeleteParams::default())
        .await;
    left
}

// ---- report --------------------------------------------------------------------------------

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

fn report(f: &Figures, header: &str) -> String {
    let mut s = String::new();
    let (o, p) = (&f.burst_ours, &f.burst_peer);
    let _ = writeln!(s, "{header}");
    let _ = writeln!(
        s,
        "\nOrder this run: {} first, then {}, then the binder-only control.\n",
        if f.peer_first {
            "the in-tree peer"
        } else {
            "ours"
        },
        if f.peer_first {
            "ours"
        } else {
            "the in-tree peer"
        },
    );
    let _ = writeln!(s, "| phase | load average at start | at end |");
    let _ = writeln!(s, "|---|---|---|");
    for (phase, a, b) in &f.phase_load {
        let _ = writeln!(s, "| {phase} | {a} | {b} |");
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
    let _ = writeln!(
        s,
        "| claim created → | ours | in-tree peer | ours/peer (p50) |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    let p50 = |v: &[Duration]| (!v.is_empty()).then(|| pct(v, 50.0));
    let _ = writeln!(
        s,
        "| PV exists | {} | {} | {} |",
        dist(&f.seq_ours.pv),
        dist(&f.seq_peer.pv),
        ratio(p50(&f.seq_ours.pv), p50(&f.seq_peer.pv))
    );
    let _ = writeln!(
        s,
        "| binder annotated the claim (handed it to a provisioner) | {} | {} | {} |",
        dist(&f.seq_ours.annotated),
        dist(&f.seq_peer.annotated),
        ratio(p50(&f.seq_ours.annotated), p50(&f.seq_peer.annotated))
    );
    let _ = writeln!(
        s,
        "| *annotation → PV exists (the provisioner's own part)* | {} | {} | {} |",
        dist(&f.seq_ours.ann_to_pv),
        dist(&f.seq_peer.ann_to_pv),
        ratio(p50(&f.seq_ours.ann_to_pv), p50(&f.seq_peer.ann_to_pv))
    );
    let _ = writeln!(
        s,
        "| claim Bound | {} | {} | {} |",
        dist(&f.seq_ours.bound),
        dist(&f.seq_peer.bound),
        ratio(p50(&f.seq_ours.bound), p50(&f.seq_peer.bound))
    );

    let _ = writeln!(
        s,
        "\n### 2. Burst: {BURST_N} claims (1 GiB) created at once\n"
    );
    let _ = writeln!(
        s,
        "| from the first create → | ours | in-tree peer | ours/peer | binder-only control |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    let _ = writeln!(
        s,
        "| all {BURST_N} claims accepted by the API | {} | {} | | {} (claims + pre-bound PVs) |",
        opt_s(o.api_create),
        opt_s(p.api_create),
        opt_s(f.control_api_create)
    );
    let _ = writeln!(
        s,
        "| every claim annotated by the binder (handed to a provisioner) | {} | {} | {} | |",
        opt_s(o.all_annotated),
        opt_s(p.all_annotated),
        ratio(o.all_annotated, p.all_annotated)
    );
    let _ = writeln!(
        s,
        "| *per claim: annotation → PV exists* | {} | {} | {} | |",
        dist(&o.ann_to_pv),
        dist(&p.ann_to_pv),
        ratio(
            (!o.ann_to_pv.is_empty()).then(|| pct(&o.ann_to_pv, 50.0)),
            (!p.ann_to_pv.is_empty()).then(|| pct(&p.ann_to_pv, 50.0))
        )
    );
    let _ = writeln!(
        s,
        "| half the PVs exist (p50) | {} | {} | {} | |",
        opt_s(o.pv_p50),
        opt_s(p.pv_p50),
        ratio(o.pv_p50, p.pv_p50)
    );
    let _ = writeln!(
        s,
        "| **every PV exists** | {} ({}) | {} ({}) | **{}** | |",
        opt_s(o.all_pvs),
        rate(BURST_N, o.all_pvs),
        opt_s(p.all_pvs),
        rate(BURST_N, p.all_pvs),
        ratio(o.all_pvs, p.all_pvs)
    );
    let _ = writeln!(
        s,
        "| **every claim Bound** (binder-capped) | {} ({}) | {} ({}) | **{}** | {} ({}) |",
        opt_s(o.all_bound),
        rate(BURST_N, o.all_bound),
        opt_s(p.all_bound),
        rate(BURST_N, p.all_bound),
        ratio(o.all_bound, p.all_bound),
        opt_s(f.control_all_bound),
        rate(BURST_N, f.control_all_bound)
    );

    let _ = writeln!(s, "\n### 3. Deletion (Delete policy)\n");
    let _ = writeln!(s, "One Bound claim at a time, N={DEL_N} per size, ours:\n");
    let _ = writeln!(s, "| claim deleted → | 1 GiB | 100 GiB |");
    let _ = writeln!(s, "|---|---|---|");
    let _ = writeln!(
        s,
        "| PV gone | {} | {} |",
        dist(&f.del_1g.pv_gone),
        dist(&f.del_100g.pv_gone)
    );
    let _ = writeln!(
        s,
        "| image purged from the trash (polled every {} ms) | {} | {} |",
        TRASH_POLL.as_millis(),
        dist(&f.del_1g.purged),
        dist(&f.del_100g.purged)
    );
    let _ = writeln!(
        s,
        "| trash holds none of the {DEL_N}: after the first deletion / after the last PV went | {} / {} | {} / {} |",
        opt_s(f.del_1g.trash_clear),
        opt_s(f.del_1g.trash_after_last_pv),
        opt_s(f.del_100g.trash_clear),
        opt_s(f.del_100g.trash_after_last_pv)
    );
    let _ = writeln!(s, "\nThe burst's {BURST_N} claims deleted at once:\n");
    let _ = writeln!(
        s,
        "| from the first delete → | ours | in-tree peer | ours/peer |"
    );
    let _ = writeln!(s, "|---|---|---|---|");
    let _ = writeln!(
        s,
        "| all {BURST_N} deletions accepted by the API | {} | {} | |",
        opt_s(o.api_delete),
        opt_s(p.api_delete)
    );
    let _ = writeln!(
        s,
        "| **every PV gone** | {} ({}) | {} ({}) | **{}** |",
        opt_s(o.all_gone),
        rate(BURST_N, o.all_gone),
        opt_s(p.all_gone),
        rate(BURST_N, p.all_gone),
        ratio(o.all_gone, p.all_gone)
    );
    let _ = writeln!(
        s,
        "| every image gone (ours: out of the trash; peer: out of the pool) | {} | {} | {} |",
        opt_s(o.images_gone),
        opt_s(p.images_gone),
        ratio(o.images_gone, p.images_gone)
    );

    let _ = writeln!(s, "\n### 4. Provisioner memory (ours, one process)\n");
    let _ = writeln!(
        s,
        "| VmHWM after the burst's creation | VmHWM after its deletion (= run peak so far) | VmRSS after its deletion |"
    );
    let _ = writeln!(s, "|---|---|---|");
    let _ = writeln!(
        s,
        "| {} | {} | {} |",
        mib(o.hwm_after_create_kib),
        mib(o.hwm_after_delete_kib),
        mib(o.rss_after_delete_kib)
    );
    if !f.leftovers.is_empty() {
        let _ = writeln!(s, "\nCleanup had to remove by force:");
        for l in &f.leftovers {
            let _ = writeln!(s, "- {l}");
        }
    }
    s
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    // `cargo bench` passes --bench; accept and ignore harness arguments.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(async_main());
    std::process::exit(code);
}

async fn async_main() -> i32 {
    let started = Instant::now();
    let bed = Bed::load();
    let admin = bed.admin().await;
    let ceph = bed.ceph().await;
    let version = admin
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let base = unique("bench");
    let prov_name = format!("{base}.bench/rbd");
    let ns = base.clone();
    let cx = Ctx {
        bed: bed.clone(),
        admin: admin.clone(),
        ceph: ceph.clone(),
        ours: format!("{ns}-ours"),
        peer: format!("{ns}-intree"),
        control: format!("{ns}-control"),
        admin_secret: format!("{ns}-admin"),
        prov_name: prov_name.clone(),
        ns,
        seen: Arc::new(Mutex::new(Seen::default())),
    };
    let load_before = loadavg();

    // The provisioner: release build, shipped ServiceAccount and RBAC.
    let prov = Provisioner::start(&bed, &prov_name, &[("RUST_LOG", "info")]).await;
    namespace(&admin, &cx.ns).await;
    key_secret(&admin, "kube-system", &cx.admin_secret, &bed.admin_key).await;
    key_secret(&admin, &cx.ns, "ceph-user", &bed.kube_key).await;
    // As deployed: the provisioner reads Secrets only where a RoleBinding lets it
    // (manifests/rbac/secrets.yaml); the user secret lives in the claims' namespace.
    apply_yaml(
        &admin,
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: rbd-provisioner-secrets\n  namespace: NS\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: rbd-provisioner-secrets\nsubjects:\n  - kind: ServiceAccount\n    name: rbd-provisioner\n    namespace: kube-system\n",
        &[("NS", &cx.ns)],
    )
    .await;
    // The same parameters for both provisioners.
    let params = [
        ("monitors", bed.monitors.as_str()),
        ("adminId", "admin"),
        ("adminSecretName", cx.admin_secret.as_str()),
        ("adminSecretNamespace", "kube-system"),
        ("pool", "kube"),
        ("userId", "kube"),
        ("userSecretName", "ceph-user"),
        ("imageFormat", "2"),
        ("imageFeatures", "layering"),
    ];
    let delete = json!({"reclaimPolicy": "Delete"});
    storage_class(&admin, &cx.ours, &prov_name, &params, delete.clone()).await;
    storage_class(&admin, &cx.peer, "kubernetes.io/rbd", &params, delete).await;

    spawn_pv_watch(admin.clone(), cx.ns.clone(), cx.seen.clone());
    spawn_pvc_watch(admin.clone(), cx.ns.clone(), cx.seen.clone());
    spawn_trash_poller(ceph.clone(), cx.seen.clone());
    let ready = until(&cx.seen, "watches listed", Duration::from_secs(30), |g| {
        g.pv_ready && g.pvc_ready
    })
    .await;

    let mut figs = Figures::default();
    let outcome = match ready {
        Err(e) => Err(e),
        Ok(()) => match tokio::time::timeout(
            RUN_BUDGET.saturating_sub(CLEANUP_RESERVE + started.elapsed()),
            run(&cx, &mut figs),
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

    let header = format!(
        "## rbd-provisioner bench: {} (ours) vs kubernetes.io/rbd (in-tree, kube-controller-manager)\n\n\
         API server {version}; Ceph pool `kube`; load average before {load_before}, after {}; \
         run took {:.0} s{}.",
        prov_name,
        loadavg(),
        started.elapsed().as_secs_f64(),
        if trash_errors > 0 {
            format!("; {trash_errors} trash polls failed")
        } else {
            String::new()
        },
    );
    println!("{}", report(&figs, &header));
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            println!("\n**The run did not finish:** {e:#}");
            eprintln!("provisioner log: {log}");
            1
        }
    }
}
