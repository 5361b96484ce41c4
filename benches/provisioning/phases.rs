//! The phases that drive claims: one at a time, in a burst, their deletion, and the
//! binder-only control; each fills its part of [`Figures`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::future::join_all;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use crate::bed::{Ctx, peer_label, peer_provisioner};
use crate::common::unique;
use crate::figures::{Burst, Del, Figures, Seq, Side, pct, rotated};
use crate::procfs::{find_pid, loadavg, proc_status_kib};
use crate::watch::{POOL_POLL, all_in, latest, until};
use crate::{BURST_N, DEL_N, SEQ_N};

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

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
    let clear = cx
        .until_all(
            "trash free of the deleted images",
            Duration::from_secs(240),
            |g| &g.purged,
            list,
        )
        .await?;
    let g = cx.seen.lock().unwrap();
    for (name, t0) in list.iter().zip(&started) {
        out.purged.push(g.purged[name] - *t0);
    }
    out.trash_clear = Some(clear - started[0]);
    out.trash_after_last_pv = Some(clear.saturating_duration_since(latest(&g.pv_gone, list)));
    Ok(())
}

/// Deletes claims at once and waits for their PVs to go (no figures).
async fn delete_all_quietly(cx: &Ctx, list: &[String], ours: bool) -> Result<()> {
    if ours {
        cx.expect_purged(list);
    }
    cx.delete_claims(list).await?;
    cx.until_all("PVs gone", Duration::from_secs(180), |g| &g.pv_gone, list)
        .await?;
    Ok(())
}

async fn burst(
    cx: &Ctx,
    class: &str,
    prefix: &str,
    side: Side,
    pid: Option<u32>,
    out: &mut Burst,
) -> Result<()> {
    let ours = side == Side::Ours;
    let list = names(prefix, BURST_N);
    let t0 = Instant::now();
    for r in join_all(list.iter().map(|n| cx.create_claim(n, class, "1Gi"))).await {
        r?;
    }
    out.api_create = Some(t0.elapsed());
    let all_pvs = cx
        .until_all(
            "every PV of the burst",
            Duration::from_secs(300),
            |g| &g.pv_created,
            &list,
        )
        .await?;
    {
        let g = cx.seen.lock().unwrap();
        let v: Vec<Duration> = list.iter().map(|n| g.pv_created[n] - t0).collect();
        out.pv_p50 = Some(pct(&v, 50.0));
        out.all_pvs = Some(all_pvs - t0);
        if all_in(&g.annotated, &list) {
            out.all_annotated = Some(latest(&g.annotated, &list) - t0);
        }
        out.last_handover_to_pvs = list
            .iter()
            .filter_map(|n| g.annotated.get(n))
            .max()
            .map(|a| all_pvs.saturating_duration_since(*a));
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
    let all_bound = cx
        .until_all(
            "every claim of the burst Bound",
            Duration::from_secs(300),
            |g| &g.bound,
            &list,
        )
        .await?;
    out.all_bound = Some(all_bound - t0);
    write_timeline(cx, prefix.trim_start_matches("burst-"), &list, t0);
    if let Some(pid) = pid {
        out.hwm_after_create_kib = proc_status_kib(pid, "VmHWM:");
    }

    if ours {
        cx.expect_purged(&list);
    }
    let t1 = Instant::now();
    cx.delete_claims(&list).await?;
    out.api_delete = Some(t1.elapsed());
    // Out of the pool (`rbd ls`), polled from the first delete on, beside the wait for the
    // PVs, for both sides the same way: ours moves an image to the trash before it deletes
    // the PV, the peer removes it outright.
    let images: HashSet<String> = {
        let g = cx.seen.lock().unwrap();
        list.iter()
            .filter_map(|n| g.image.get(n).cloned())
            .collect()
    };
    // Each image's first listing without it, for the per-claim "claim gone → out of the pool".
    let mut left_pool: HashMap<String, Instant> = HashMap::new();
    let out_of_pool = async {
        // The CSI peer's volumes live in its mock driver's memory, never in the pool.
        if side == Side::Csi {
            return Ok(None);
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let started = Instant::now();
            let pool: HashSet<String> = cx.ceph.list_images("kube").await?.into_iter().collect();
            for i in images.iter().filter(|i| !pool.contains(*i)) {
                left_pool.entry(i.clone()).or_insert(started);
            }
            if left_pool.len() == images.len() {
                return Ok(Some(started - t1));
            }
            if Instant::now() > deadline {
                bail!("images of the burst are still in the pool");
            }
            tokio::time::sleep(POOL_POLL).await;
        }
    };
    let (all_gone, out_of_pool) = tokio::join!(
        cx.until_all(
            "every PV of the burst gone",
            Duration::from_secs(300),
            |g| &g.pv_gone,
            &list,
        ),
        out_of_pool
    );
    out.all_gone = Some(all_gone? - t1);
    out.images_gone = out_of_pool?;
    {
        let g = cx.seen.lock().unwrap();
        out.claims_gone = list
            .iter()
            .map(|n| g.claim_gone.get(n).map(|t| *t - t1))
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max());
        out.gone_to_pv_gone = list
            .iter()
            .filter_map(|n| {
                Some(
                    g.pv_gone
                        .get(n)?
                        .saturating_duration_since(*g.claim_gone.get(n)?),
                )
            })
            .collect();
        out.gone_to_out_of_pool = list
            .iter()
            .filter_map(|n| {
                let left = left_pool.get(g.image.get(n)?)?;
                Some(left.saturating_duration_since(*g.claim_gone.get(n)?))
            })
            .collect();
    }
    if ours {
        let purged = cx
            .until_all(
                "trash free of the burst's images",
                Duration::from_secs(300),
                |g| &g.purged,
                &list,
            )
            .await?;
        out.trash_free = Some(purged - t1);
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
    let all_bound = cx
        .until_all(
            "every control claim Bound",
            Duration::from_secs(300),
            |g| &g.bound,
            &list,
        )
        .await?;
    figs.control_all_bound = Some(all_bound - t0);
    // Claims first, then the (Retain) PVs: nothing on Ceph to remove.
    cx.delete_claims(&list).await?;
    let pvs = cx.pvs();
    for n in &list {
        let _ = pvs
            .delete(&format!("{}-{n}", cx.ns), &DeleteParams::default())
            .await;
    }
    cx.until_all(
        "control PVs gone",
        Duration::from_secs(120),
        |g| &g.pv_gone,
        &list,
    )
    .await?;
    Ok(())
}

pub async fn run(cx: &Ctx, figs: &mut Figures, csi: bool) -> Result<()> {
    let pid = find_pid(&cx.prov_name);
    if pid.is_none() {
        eprintln!("warning: provisioner process not found; no memory figures");
    }
    // Kubernetes 1.31 removed the in-tree RBD plugin: no in-tree peer there.
    let peer = !(cx.bed.kube_minor >= 31 && peer_provisioner() == "kubernetes.io/rbd");
    if !peer {
        eprintln!("no in-tree peer on Kubernetes 1.{}", cx.bed.kube_minor);
        figs.no_peer = true;
    }
    let sides: Vec<Side> = [(Side::Ours, true), (Side::Peer, peer), (Side::Csi, csi)]
        .into_iter()
        .filter_map(|(s, on)| on.then_some(s))
        .collect();
    // Rotate the sides between runs (`RBD_BENCH_ROTATE=<n>`, else the digits of a fresh unique
    // name; `RBD_BENCH_PEER_FIRST=1`/`0` as before: the peer first, or ours), so that load
    // drift on a shared machine does not always land on the same side of the ratios; the load
    // of each phase is reported.
    figs.rotation = match (
        std::env::var("RBD_BENCH_ROTATE")
            .ok()
            .and_then(|n| n.parse().ok()),
        std::env::var("RBD_BENCH_PEER_FIRST").as_deref(),
    ) {
        (Some(n), _) => n,
        (None, Ok("1")) => 1,
        (None, Ok("0")) => 0,
        _ => unique("order").bytes().map(usize::from).sum(),
    };
    figs.order = rotated(&sides, figs.rotation);
    for side in figs.order.clone() {
        match side {
            Side::Ours => our_phases(cx, figs, pid).await?,
            other => peer_phases(cx, figs, other).await?,
        }
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
    cx.until_all(
        "100 GiB claims Bound",
        Duration::from_secs(120),
        |g| &g.bound,
        &big,
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
    burst(
        cx,
        &cx.ours,
        "burst-ours",
        Side::Ours,
        pid,
        &mut figs.burst_ours,
    )
    .await?;
    figs.phase_load.push(("ours, burst".into(), l0, loadavg()));
    Ok(())
}

/// A peer's phases (the in-tree or hand-started one, or the CSI peer): one at a time, then the
/// burst and its deletion.
async fn peer_phases(cx: &Ctx, figs: &mut Figures, side: Side) -> Result<()> {
    let (label, class, tag) = match side {
        Side::Csi => ("CSI peer".to_string(), &cx.csi, "csi"),
        _ => (peer_label(), &cx.peer, "peer"),
    };
    let (seq_out, burst_out) = match side {
        Side::Csi => (&mut figs.seq_csi, &mut figs.burst_csi),
        _ => (&mut figs.seq_peer, &mut figs.burst_peer),
    };
    let l0 = loadavg();
    eprintln!("{label}: {SEQ_N} claims one at a time");
    let seq = sequential(cx, class, &format!("seq-{tag}"), SEQ_N, seq_out).await?;
    delete_all_quietly(cx, &seq, false).await?;
    figs.phase_load
        .push((format!("{label}, one at a time"), l0, loadavg()));
    let l0 = loadavg();
    eprintln!("{label}: burst of {BURST_N}");
    burst(cx, class, &format!("burst-{tag}"), side, None, burst_out).await?;
    figs.phase_load
        .push((format!("{label}, burst"), l0, loadavg()));
    Ok(())
}

/// Writes the burst's per-claim timeline (ms after the first create: annotated, PV exists,
/// Bound; empty when not seen) to `target/bench/burst-<label>.csv`, for
/// `hack/plot-burst.py`.
fn write_timeline(cx: &Ctx, label: &str, list: &[String], t0: Instant) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let g = cx.seen.lock().unwrap();
    let at = |m: &HashMap<String, Instant>, n: &str| {
        m.get(n)
            .map(|t| {
                format!(
                    "{:.1}",
                    t.saturating_duration_since(t0).as_secs_f64() * 1000.0
                )
            })
            .unwrap_or_default()
    };
    let mut text = String::from("claim,annotated_ms,pv_ms,bound_ms\n");
    for n in list {
        text.push_str(&format!(
            "{n},{},{},{}\n",
            at(&g.annotated, n),
            at(&g.pv_created, n),
            at(&g.bound, n)
        ));
    }
    let path = dir.join(format!("burst-{label}.csv"));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text)) {
        Ok(()) => eprintln!("burst timeline: {}", path.display()),
        Err(e) => eprintln!("burst timeline not written ({}): {e}", path.display()),
    }
}
