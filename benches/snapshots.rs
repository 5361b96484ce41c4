//! VolumeSnapshot benchmark against the real bed (hack/bed-up.sh, which runs the upstream
//! snapshot-controller beside each control plane), the release-built provisioner in its own
//! process under the shipped ServiceAccount and RBAC:
//!
//!     RBDP_BED=<plane> cargo bench --bench snapshots
//!
//! What it measures, from the client's side (polling the API server every 10 ms):
//!  1. 20 snapshots of one 1 GiB volume, one at a time: VolumeSnapshot created -> readyToUse;
//!  2. 20 restores from one snapshot, one at a time: claim created -> Bound; beside them, in
//!     the same run, 20 empty claims of the same class (the floor a restore is compared with)
//!     and 20 clones of the source claim (dataSource PersistentVolumeClaim: a snapshot of the
//!     source and a clone of it, the other copy-on-write path);
//!  3. 50 VolumeSnapshots of one volume created at once: until all are readyToUse;
//!  4. the floor Ceph sets: `rbd snap create` of the rbd CLI, 5 times on an image of its own
//!     (each snapshot takes a new OSD map epoch from the monitors);
//!  5. the provisioner's own share, from its `/metrics`: the mean time of its snapshot cuts
//!     (content seen -> RBD snapshot cut -> status written), apart from the snapshot-controller's
//!     work around it (which runs at its default client rate of 5 requests/s, burst 10).
//!
//! Everything it makes is deleted at the end (restores, snapshots, the volume, the classes,
//! the namespace), also when a phase fails.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, PostParams};
use serde_json::{Value, json};
use testbed::bench::figures::pct;
use testbed::{
    Bed, Provisioner, Stage, cli, csi_snapshot_setup, free_addr, metrics, snapshot_class,
    snapshot_classes, take_snapshot, unique, volume_snapshots,
};

const SEQ_N: usize = 20;
const BURST_N: usize = 50;
const POLL: Duration = Duration::from_millis(10);
const WAIT: Duration = Duration::from_secs(120);

fn main() {
    testbed::bench::run_main(async_main());
}

struct Bench {
    addr: String,
    stage: Stage,
    class: String,
    vsc: String,
}

impl Bench {
    fn snapshots(&self) -> Api<DynamicObject> {
        volume_snapshots(&self.stage)
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.stage.admin.clone(), &self.stage.ns)
    }

    async fn snapshot(&self, name: &str, claim: &str) {
        take_snapshot(&self.stage, name, claim, &self.vsc).await;
    }

    async fn ready(&self, name: &str) -> bool {
        self.snapshots()
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .is_some_and(|o| o.data["status"]["readyToUse"] == json!(true))
    }

    async fn claim(&self, name: &str, source: Option<Value>) {
        let mut spec = json!({"storageClassName": self.class, "accessModes": ["ReadWriteOnce"],
                              "resources": {"requests": {"storage": "1Gi"}}});
        if let Some(s) = source {
            spec["dataSource"] = s;
        }
        let c: PersistentVolumeClaim = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": self.stage.ns}, "spec": spec}))
        .unwrap();
        self.claims()
            .create(&PostParams::default(), &c)
            .await
            .expect("create claim");
    }

    async fn bound(&self, name: &str) -> bool {
        self.claims()
            .get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.status?.phase)
            .as_deref()
            == Some("Bound")
    }
}

/// Polls `done` until it holds; the time it took.
async fn until<F, Fut>(what: &str, mut done: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !done().await {
        if t.elapsed() > WAIT {
            anyhow::bail!("{what}: not done within {WAIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(t.elapsed())
}

fn line(what: &str, v: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{what:<44} n={:<3} p50 {:>7.1} ms  p90 {:>7.1} ms  max {:>7.1} ms",
        v.len(),
        ms(pct(v, 50.0)),
        ms(pct(v, 90.0)),
        ms(v.iter().copied().max().unwrap_or_default())
    )
}

/// The mean of the provisioner's successful snapshot cuts so far, and how many: from the
/// `controller_volumesnapshot_create_duration_seconds` histogram.
fn cuts(addr: &str) -> (f64, f64) {
    let text = metrics(addr);
    let value = |name: &str| {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (sum, n) = (
        value("controller_volumesnapshot_create_duration_seconds_sum"),
        value("controller_volumesnapshot_create_duration_seconds_count"),
    );
    (if n > 0.0 { sum / n } else { 0.0 }, n)
}

/// `rbd snap create` by the CLI, timed: the floor for any snapshot on this cluster.
fn cli_snapshots(bed: &Bed) -> Vec<Duration> {
    let spec = format!("kube/{}", unique("snapfloor"));
    cli(
        bed,
        "rbd",
        &[
            "create",
            &spec,
            "--size",
            "1G",
            "--image-feature",
            "layering",
        ],
    );
    let times = (0..5)
        .map(|i| {
            let t = Instant::now();
            cli(bed, "rbd", &["snap", "create", &format!("{spec}@s{i}")]);
            t.elapsed()
        })
        .collect();
    cli(bed, "rbd", &["snap", "purge", &spec, "--no-progress"]);
    cli(bed, "rbd", &["rm", &spec, "--no-progress"]);
    times
}

async fn phases(b: &Bench) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let floor = cli_snapshots(&b.stage.bed);
    out.push(line("rbd snap create (the rbd CLI, the floor)", &floor));
    b.claim("src", None).await;
    until("the source Bound", || b.bound("src")).await?;

    let mut snaps = Vec::new();
    for i in 0..SEQ_N {
        let name = format!("seq-{i}");
        let t = Instant::now();
        b.snapshot(&name, "src").await;
        until(&name, || b.ready(&name)).await?;
        snaps.push(t.elapsed());
    }
    out.push(line("VolumeSnapshot created -> readyToUse", &snaps));
    let (seq_mean, seq_n) = cuts(&b.addr);
    out.push(format!(
        "  of which the provisioner's cut (its metrics): mean {:.1} ms over {seq_n} cuts, {:.2}x the CLI's p50",
        seq_mean * 1000.0,
        seq_mean / pct(&floor, 50.0).as_secs_f64()
    ));

    let (mut restores, mut empties, mut clones) = (Vec::new(), Vec::new(), Vec::new());
    let snapshot =
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "seq-0"});
    let claim = json!({"kind": "PersistentVolumeClaim", "name": "src"});
    for i in 0..SEQ_N {
        // Interleaved, so both see the same machine.
        let name = format!("empty-{i}");
        let t = Instant::now();
        b.claim(&name, None).await;
        until(&name, || b.bound(&name)).await?;
        empties.push(t.elapsed());
        let name = format!("restore-{i}");
        let t = Instant::now();
        b.claim(&name, Some(snapshot.clone())).await;
        until(&name, || b.bound(&name)).await?;
        restores.push(t.elapsed());
        let name = format!("clone-{i}");
        let t = Instant::now();
        b.claim(&name, Some(claim.clone())).await;
        until(&name, || b.bound(&name)).await?;
        clones.push(t.elapsed());
    }
    out.push(line("restore claim created -> Bound", &restores));
    out.push(line("empty claim created -> Bound (same class)", &empties));
    out.push(line("clone of a claim created -> Bound", &clones));
    let p50 = |v: &[Duration]| pct(v, 50.0).as_secs_f64();
    out.push(format!(
        "restore / empty claim, p50: {:.2}x; restore / clone of a claim, p50: {:.2}x",
        p50(&restores) / p50(&empties),
        p50(&restores) / p50(&clones)
    ));

    let t = Instant::now();
    for i in 0..BURST_N {
        b.snapshot(&format!("burst-{i}"), "src").await;
    }
    let created = t.elapsed();
    let mut pending: Vec<String> = (0..BURST_N).map(|i| format!("burst-{i}")).collect();
    while !pending.is_empty() {
        if t.elapsed() > WAIT * 3 {
            anyhow::bail!("{} of the burst not ready", pending.len());
        }
        let mut still = Vec::new();
        for n in pending {
            if !b.ready(&n).await {
                still.push(n);
            }
        }
        pending = still;
        tokio::time::sleep(POLL).await;
    }
    out.push(format!(
        "{BURST_N} VolumeSnapshots of one volume at once: all created in {:.0} ms, all readyToUse after {:.0} ms ({:.1}/s)",
        created.as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64() * 1000.0,
        BURST_N as f64 / t.elapsed().as_secs_f64()
    ));
    let (mean, n) = cuts(&b.addr);
    let burst_mean = (mean * n - seq_mean * seq_n) / (n - seq_n).max(1.0);
    out.push(format!(
        "  of which the provisioner's cuts (its metrics): mean {:.1} ms over {} cuts, {:.1} s in all",
        burst_mean * 1000.0,
        n - seq_n,
        burst_mean * (n - seq_n)
    ));
    Ok(out)
}

/// Deletes the restores and empty claims, then the snapshots (their RBD snapshots go first),
/// then the source; waits for the images to go.
async fn clean(b: &Bench) {
    let dp = DeleteParams::default();
    for c in b
        .claims()
        .list(&Default::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        if c.metadata.name.as_deref() != Some("src") {
            let _ = b
                .claims()
                .delete(c.metadata.name.as_deref().unwrap(), &dp)
                .await;
        }
    }
    let _ = b
        .snapshots()
        .delete_collection(&dp, &Default::default())
        .await;
    let _ = until("the snapshots gone", || async {
        b.snapshots()
            .list(&Default::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(false)
    })
    .await;
    let _ = b.claims().delete("src", &dp).await;
    let _ = until("the claims gone", || async {
        b.claims()
            .list(&Default::default())
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(false)
    })
    .await;
}

async fn async_main() -> i32 {
    let name = format!("{}.bench/rbd", unique("snapbench"));
    let bed = testbed::Bed::load();
    if bed.snapshot_controller.is_none() {
        eprintln!("this plane runs no snapshot-controller: start the bed with hack/bed-up.sh");
        return 2;
    }
    let addr = free_addr();
    let prov = Provisioner::start_with(
        &bed,
        &name,
        &[("RUST_LOG", "info")],
        &["--metrics-addr", &addr],
        None,
    )
    .await;
    let stage = Stage::new("snapbench", &name).await;
    let (driver, class) = csi_snapshot_setup(&stage).await;
    let vsc = snapshot_class(&stage, "snap", &driver, "Delete", json!({})).await;
    let classes = snapshot_classes(&stage);
    let b = Bench {
        addr,
        stage,
        class,
        vsc,
    };
    let started = Instant::now();
    let r = phases(&b).await;
    let took = started.elapsed();
    eprintln!("cleaning up");
    clean(&b).await;
    let _ = classes.delete(&b.vsc, &DeleteParams::default()).await;
    let minor = b.stage.bed.kube_minor;
    drop(b);
    drop(prov);
    match r {
        Ok(lines) => {
            println!(
                "snapshots bench, Kubernetes 1.{minor}, snapshot-controller {}, phases {:.0} s",
                bed.snapshot_controller.unwrap_or_default(),
                took.as_secs_f64()
            );
            for l in lines {
                println!("  {l}");
            }
            0
        }
        Err(e) => {
            eprintln!("snapshots bench failed: {e:#}");
            let v: Value = json!({"error": e.to_string()});
            eprintln!("{v}");
            1
        }
    }
}
