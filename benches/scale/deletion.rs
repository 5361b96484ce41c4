//! Phase 6: the claims deleted at once until every PV is gone and no image of ours is in the
//! pool or its trash, with the provisioner's purge backlog and operations in flight read from
//! its `/metrics` every second meanwhile.

use super::*;

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;

use testbed::bench::plot;
use testbed::bench::promtext::sum;

/// One reading during the deletion.
pub struct Reading {
    pub at: Duration,
    pub backlog: Option<f64>,
    pub in_flight: Option<f64>,
    pub pvs_left: usize,
    /// Images of ours (in the pool, in its trash), read every fifth second.
    pub ceph: Option<(usize, usize)>,
}

/// Reads the provisioner's gauges every second (and the pool and trash every fifth) from `t`
/// until `stop` is set and the backlog is empty, at most 60 s after `stop`.
async fn sample(
    cx: &Ctx,
    ours: &Ours,
    all: &[String],
    images: &HashSet<String>,
    t: Instant,
    stop: &AtomicBool,
) -> Vec<Reading> {
    let mut v: Vec<Reading> = Vec::new();
    let mut stopped_at: Option<Instant> = None;
    for k in 0u64.. {
        let text = ours.get("/metrics").await.map(|(_, b)| b);
        let gauge = |name: &str| text.as_deref().map(|s| sum(s, name, &[]));
        let backlog = gauge("rbd_provisioner_purge_backlog");
        // The last reading, once the deletion is over, reads the pool and trash too.
        let ceph = if k.is_multiple_of(5) || stop.load(Ordering::Relaxed) {
            let pool = cx.ceph.list_images("kube").await.ok();
            let trash = cx.ceph.trash_list("kube").await.ok();
            pool.zip(trash).map(|(p, t)| {
                (
                    p.iter().filter(|i| images.contains(*i)).count(),
                    t.iter().filter(|e| images.contains(&e.name)).count(),
                )
            })
        } else {
            None
        };
        let pvs_left = {
            let g = cx.seen.lock().unwrap();
            all.iter().filter(|c| !g.pv_gone.contains_key(*c)).count()
        };
        v.push(Reading {
            at: t.elapsed(),
            backlog,
            in_flight: gauge("rbd_provisioner_operations_in_flight"),
            pvs_left,
            ceph,
        });
        if stop.load(Ordering::Relaxed) {
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if backlog.is_none_or(|b| b == 0.0) || since.elapsed() > Duration::from_secs(60) {
                break;
            }
        }
        tokio::time::sleep(
            (t + Duration::from_secs(k + 1)).saturating_duration_since(Instant::now()),
        )
        .await;
    }
    v
}

/// Deletes and releases `all`, with [`sample`] beside it; then the readings' table and plot.
pub async fn deletion_phase(
    cx: &Ctx,
    ours: &Ours,
    all: &[String],
    out: &mut Vec<String>,
) -> Result<()> {
    let images: HashSet<String> = {
        let g = cx.seen.lock().unwrap();
        all.iter().filter_map(|c| g.image.get(c).cloned()).collect()
    };
    let stop = AtomicBool::new(false);
    let t = Instant::now();
    let work = async {
        let r = delete_all(cx, all, t, out).await;
        stop.store(true, Ordering::Relaxed);
        r
    };
    let (result, readings) = tokio::join!(work, sample(cx, ours, all, &images, t, &stop));
    report(&readings, all.len(), out);
    result
}

/// Phase 6 proper (see the bench's documentation).
async fn delete_all(cx: &Ctx, all: &[String], t: Instant, out: &mut Vec<String>) -> Result<()> {
    // Waits on many objects: 100 ms each, at least 5 min.
    let for_objects = |k: usize| scaled(k, Duration::from_millis(100), Duration::from_secs(300));
    cx.expect_purged(all);
    let bound = {
        let g = cx.seen.lock().unwrap();
        all.iter().filter(|c| g.bound.contains_key(*c)).count()
    };
    let deleted = with_pv_release(cx, delete_and_release_all(cx, all)).await;
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
    match deleted {
        Ok(took) => {
            out.push(format!(
                "| every claim deleted, its finalizer removed | {} |",
                secs(took)
            ));
            let claims = until(&cx.seen, "every claim gone", for_objects(all.len()), |g| {
                all_in(&g.claim_gone, all)
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
                    all_in(&g.pv_gone, all)
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
    }
}

/// The readings: peaks, the drain, a table of about twenty rows, and the plot.
fn report(v: &[Reading], n: usize, out: &mut Vec<String>) {
    let peak = |f: fn(&Reading) -> Option<f64>| {
        v.iter()
            .filter_map(|r| Some((f(r)?, r.at)))
            .fold(None, |m: Option<(f64, Duration)>, x| match m {
                Some(m) if m.0 >= x.0 => Some(m),
                _ => Some(x),
            })
    };
    out.push(String::new());
    out.push(format!(
        "Read from the provisioner's `/metrics` every second during the deletion ({} readings): `rbd_provisioner_purge_backlog` (trashed images queued or being purged) and `rbd_provisioner_operations_in_flight`; the images of ours left in the pool and in its trash every fifth second.\n",
        v.len()
    ));
    let Some((top, at)) = peak(|r| r.backlog) else {
        out.push("- the provisioner's `/metrics` could not be read".into());
        return;
    };
    let drained = v
        .iter()
        .find(|r| r.at > at && r.backlog == Some(0.0))
        .map(|r| secs(r.at))
        .unwrap_or_else(|| "not within the readings".into());
    out.push(format!(
        "- purge backlog: peak **{top:.0}** at {}; back to 0 at {drained}",
        secs(at)
    ));
    let empty = |f: fn(&Reading) -> Option<usize>| {
        v.iter()
            .find(|r| f(r) == Some(0))
            .map(|r| secs(r.at))
            .unwrap_or_else(|| "not within the readings".into())
    };
    out.push(format!(
        "- no image of ours left in the pool at {}, none in its trash at {} (read every fifth second)",
        empty(|r| r.ceph.map(|c| c.0)),
        empty(|r| r.ceph.filter(|c| c.0 == 0).map(|c| c.1))
    ));
    if let Some((f, at)) = peak(|r| r.in_flight) {
        out.push(format!(
            "- operations in flight: peak {f:.0} at {}",
            secs(at)
        ));
    }
    let every = (v.len() / 20).max(1);
    out.push(String::new());
    out.push("| since the first deletion | purge backlog | operations in flight | PVs left | images of ours in the pool | in the trash |".into());
    out.push("|---|---|---|---|---|---|".into());
    let cell = |x: Option<f64>| x.map(|x| format!("{x:.0}")).unwrap_or_default();
    let count = |x: Option<usize>| x.map(|x| x.to_string()).unwrap_or_default();
    let mut last_row = None;
    for (i, r) in v.iter().enumerate() {
        // The first reading of each stretch of `every` that read the pool too, and the last.
        if (r.ceph.is_some() && last_row.is_none_or(|l| i >= l + every)) || i + 1 == v.len() {
            last_row = Some(i);
            out.push(format!(
                "| {} | {} | {} | {} | {} | {} |",
                secs(r.at),
                cell(r.backlog),
                cell(r.in_flight),
                r.pvs_left,
                count(r.ceph.map(|c| c.0)),
                count(r.ceph.map(|c| c.1))
            ));
        }
    }
    let line = |name: &str, f: &dyn Fn(&Reading) -> Option<f64>| plot::Series {
        name: name.into(),
        points: v
            .iter()
            .filter_map(|r| Some((r.at.as_secs_f64(), f(r)?)))
            .collect(),
    };
    let (top, bottom) = (
        format!("rbd-provisioner: {n} claims deleted at once: purge backlog"),
        format!("… and what is left of the {n}"),
    );
    let gauges = [
        line("purge backlog (gauge)", &|r| r.backlog),
        line("operations in flight (gauge)", &|r| r.in_flight),
        line("images of ours in the trash", &|r| {
            r.ceph.map(|c| c.1 as f64)
        }),
    ];
    let left = [
        line("PVs left", &|r| Some(r.pvs_left as f64)),
        line("images of ours in the pool", &|r| {
            r.ceph.map(|c| c.0 as f64)
        }),
    ];
    let axes = |title| plot::Axes {
        title,
        x: "seconds since the first deletion",
        y: "count",
        log_x: false,
    };
    let svg = plot::panels(&[(&axes(&top), &gauges), (&axes(&bottom), &left)]);
    out.push(String::new());
    out.push(format!(
        "- plot: {}",
        write_plot("scale-purge-backlog.svg", svg, n)
    ));
}
