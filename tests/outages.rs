//! Outages of the parts the provisioner depends on, in the middle of bursts of claims: the Ceph
//! monitor (scenario 2), the OSD (3), kube-apiserver and etcd (4). Each runs on a bed of this
//! test's own, which it starts (`hack/bed-up.sh` in a fresh directory: free ports; the plane is
//! the one `RBDP_BED` names, so `hack/test.sh` runs the scenarios on 1.20 and on 1.37) and stops
//! and purges at the end: the shared bed and the tests that use it are never disturbed. The scenarios run one after the other.
//!
//! Quick mode (the suite): one 12 s monitor outage. `RBDP_FAULT_FULL=1`: 30 s monitor and OSD
//! outages, an API server restart and an etcd restart, 40-claim bursts. Seeded:
//! `RBDP_FAULT_SEED=<seed>` replays the moments. `RBDP_FAULT_REPORT=<file>` collects figures.

use testbed as common;
use testbed::harness;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use common::*;
use harness::*;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;

/// `--ceph-connect-timeout` the tests give the provisioner (common::Provisioner), and the
/// default `--ceph-op-timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `--ceph-op-timeout` of the OSD scenario: shorter than the outage, so that calls blocked on
/// the missing OSD must visibly fail (and be retried) while it is away.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn outages() {
    let own = OwnBed::up();
    // Every helper works on this bed.
    common::use_bed(&own.env_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rng = Rng::from_env("outages");
    let mut failed = Vec::new();
    let mut run = |what: &str, r: Result<(), String>| {
        if let Err(e) = r {
            failed.push(format!("{what}:\n{e}"));
        }
    };
    let quick_outage = Duration::from_secs(12);
    let outage = if full() {
        Duration::from_secs(30)
    } else {
        quick_outage
    };
    run(
        "monitor outage",
        rt.block_on(monitor_outage(&mut rng, outage)),
    );
    // Deletion and expansion asked for while a part is down (quick mode too).
    run(
        "deletion and expansion during a monitor outage",
        rt.block_on(lifecycle_during_outage(&mut rng, "mon.a", quick_outage)),
    );
    run(
        "deletion and expansion during a kube-apiserver outage",
        rt.block_on(lifecycle_during_outage(
            &mut rng,
            "kube-apiserver",
            quick_outage,
        )),
    );
    if full() {
        run(
            "OSD outage",
            rt.block_on(osd_outage(&mut rng, Duration::from_secs(30))),
        );
        run(
            "kube-apiserver restart",
            rt.block_on(control_plane_restart(&mut rng, "kube-apiserver")),
        );
        run(
            "etcd restart",
            rt.block_on(control_plane_restart(&mut rng, "etcd")),
        );
    }
    drop(rt);
    drop(own);
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}

fn claims() -> usize {
    if full() { 40 } else { 10 }
}

/// Claims `<letter>-<i>` of a new Delete class made in a burst that spans an outage of
/// `outage` (spread over about 1.5 outages), under way for 0.5–2.5 s by the time this returns:
/// the claims' names, and the burst.
async fn burst_across(
    c: &Scenario,
    rng: &mut Rng,
    letter: &str,
    outage: Duration,
) -> (Vec<String>, JoinHandle<Vec<(String, Instant)>>) {
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let n = claims();
    let names: Vec<String> = (0..n).map(|i| format!("{letter}-{i}")).collect();
    let gap = outage.mul_f64(1.5) / n as u32;
    let creating = burst(&c.admin, &c.ns, &class, &names, gap);
    tokio::time::sleep(rng.millis(500, 2500)).await;
    (names, creating)
}

/// ProvisioningFailed notes per claim uid, with the time this test first saw each.
async fn failures_seen(
    c: &Scenario,
    seen: &mut BTreeMap<String, (Instant, String)>,
) -> Result<(), kube::Error> {
    let evs = Api::<Event>::namespaced(c.admin.clone(), &c.ns)
        .list(&ListParams::default())
        .await?;
    for e in evs.items {
        if e.reason.as_deref() != Some("ProvisioningFailed") {
            continue;
        }
        let Some(uid) = e.regarding.as_ref().and_then(|r| r.uid.clone()) else {
            continue;
        };
        seen.entry(uid)
            .or_insert_with(|| (Instant::now(), e.note.clone().unwrap_or_default()));
    }
    Ok(())
}

/// Claim uids by claim name, in `c`'s namespace.
async fn uids_by_name(c: &Scenario) -> BTreeMap<String, String> {
    let list = c.pvcs().list(&ListParams::default()).await.unwrap();
    list.items
        .iter()
        .map(|p| (p.metadata.name.clone().unwrap(), uid_of(p)))
        .collect()
}

/// [`failures_seen`] every 300 ms until `end`.
async fn failures_until(
    c: &Scenario,
    failures: &mut BTreeMap<String, (Instant, String)>,
    end: Instant,
) {
    while Instant::now() < end {
        let _ = failures_seen(c, failures).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Of the claims `made` (name, when), how many waited in the outage that began at `down`:
/// made after it, or not yet Bound (`waiting`) when it began.
fn waited_in(made: &[(String, Instant)], down: Instant, waiting: &BTreeSet<String>) -> usize {
    made.iter()
        .filter(|(n, at)| *at >= down || waiting.contains(n))
        .count()
}

/// Waits until the API server answers a list of claims again.
async fn api_back(c: &Scenario) {
    let pvcs = c.pvcs();
    wait_for(
        "the API server answering again",
        Duration::from_secs(120),
        || async { pvcs.list(&ListParams::default()).await.ok() },
    )
    .await;
}

/// The end of an outage scenario: /healthz answers, and every claim of `names` deleted
/// leaves nothing behind (violations added to `v`). The failure events' latencies' p50 and
/// max, and how long the deletion took.
async fn wrap_up(
    c: &Scenario,
    names: &[String],
    addr: &str,
    latencies: Vec<Duration>,
    v: &mut Vec<String>,
) -> ((f64, f64), Duration) {
    if !healthz(addr) {
        v.push("/healthz does not answer 200".into());
    }
    let cleaned = delete_all_and_check(c, names, v).await;
    (p50_max(latencies), cleaned)
}

/// Scenario 2: the only monitor stopped for `outage` in the middle of a burst. A connected
/// client needs the monitor only for map changes, so the provisioner is restarted right after
/// the monitor stops: every Ceph client must connect anew during the outage. No call may hang
/// past the configured timeouts, the claims made meanwhile get an event saying Ceph is
/// unreachable, and all are Bound within 60 s after the monitor is back.
async fn monitor_outage(rng: &mut Rng, outage: Duration) -> Result<(), String> {
    let addr = free_addr();
    let env = [("LEADER_ELECT", "false")];
    let args = ["--http-endpoint", addr.as_str()];
    let mut c = Scenario::serving_with("mon", &env, &args).await;
    let name = c.name.clone();
    let mon = Daemon::of(&c.bed, "mon.a");
    let (names, creating) = burst_across(&c, rng, "m", outage).await;
    let n = names.len();
    let mut logs = Vec::new();

    let (stop_took, mon) = mon.stopped().await;
    let down = Instant::now();
    let unbound_at_down = unbound(&c.admin, &c.ns, &names).await;
    c.prov.crash();
    // A claim whose PV the old process wrote before it died needs no Ceph to bind, so it can
    // get no failure event: waiting means no PV yet once nothing can write one.
    let with_pv = claims_with_pv(&c.admin, &c.ns).await;
    let waiting: BTreeSet<String> = unbound_at_down
        .into_iter()
        .filter(|n| !with_pv.contains(n))
        .collect();
    logs.push(c.prov.logs());
    c.prov = Provisioner::start_with(&c.bed, &name, &env, &args, None).await;
    let restarted = Instant::now();
    let mut failures = BTreeMap::new();
    failures_until(&c, &mut failures, down + outage).await;
    let mon = mon.started().await;
    let back = Instant::now();
    let _ = mon;
    let made = creating.await.unwrap();
    let bound = all_bound(&c.admin, &c.ns, &names, Duration::from_secs(180)).await;
    let recovery = back.elapsed();
    let _ = failures_seen(&c, &mut failures).await;
    let affected = waited_in(&made, down, &waiting);

    let mut v = Vec::new();
    if let Err(left) = bound {
        v.push(format!(
            "not Bound 180 s after the monitor returned: {left:?}"
        ));
    }
    logs.push(c.prov.logs());
    v.extend(check_bound(&c, &names, &logs).await);
    // Claims waiting while the monitor was down and the provisioner restarted (those not yet
    // Bound when it stopped, and those made meanwhile): each must carry an event saying Ceph
    // is unreachable, within the connect timeout (plus the time to notice the claim and
    // write the event) of the restart or of its creation, whichever came later; those
    // whose attempt could not end before the monitor returned are not judged.
    let uid_of_name = uids_by_name(&c).await;
    let mut during = 0;
    let mut latencies = Vec::new();
    let slack = Duration::from_secs(5);
    for (claim, at) in &made {
        if (*at < down && !waiting.contains(claim)) || with_pv.contains(claim) {
            continue;
        }
        let from = (*at).max(restarted);
        if from + CONNECT_TIMEOUT + Duration::from_secs(2) > back {
            continue;
        }
        during += 1;
        let uid = &uid_of_name[claim];
        match failures.get(uid) {
            None => v.push(format!(
                "claim {claim}, waiting during the outage, got no ProvisioningFailed event"
            )),
            Some((seen, note)) => {
                let latency = seen.saturating_duration_since(from);
                latencies.push(latency);
                if !note.contains("unreachable") {
                    v.push(format!(
                        "claim {claim}: the event does not say Ceph is unreachable: {note}"
                    ));
                }
                if latency > CONNECT_TIMEOUT + slack {
                    v.push(format!(
                        "claim {claim}: its failure was reported {latency:?} after the restart or its creation, connect timeout {CONNECT_TIMEOUT:?}"
                    ));
                }
            }
        }
    }
    if during == 0 {
        v.push("no claim waited during the outage: the burst missed it".into());
    }
    // Then all of them go, and nothing stays behind.
    let ((lat50, latmax), cleaned) = wrap_up(&c, &names, &addr, latencies, &mut v).await;
    report(&format!(
        "monitor outage: {} s, {n} claims, {affected} waiting in it (not yet Bound when it began, or made during it), {during} of them judged; monitor stopped in {:.1} s; failure events {lat50:.1}/{latmax:.1} s (p50/max) after the restart or the claim; all Bound {:.1} s after the monitor returned; deleted and purged in {:.1} s; violations {}",
        outage.as_secs(),
        stop_took.as_secs_f64(),
        recovery.as_secs_f64(),
        cleaned.as_secs_f64(),
        v.len()
    ));
    verdict(v)
}

/// Scenario 3: the OSD stopped for `outage` in the middle of a burst (stopped and started
/// again: a frozen OSD wedges this Ceph). Calls fail after the op timeout instead of hanging,
/// and everything is Bound within 60 s after the OSD is back.
async fn osd_outage(rng: &mut Rng, outage: Duration) -> Result<(), String> {
    let addr = free_addr();
    let env = [("LEADER_ELECT", "false")];
    let op = OP_TIMEOUT.as_secs().to_string();
    let args = [
        "--http-endpoint",
        addr.as_str(),
        "--ceph-op-timeout",
        op.as_str(),
    ];
    let c = Scenario::serving_with("osd", &env, &args).await;
    let osd = Daemon::of(&c.bed, "osd.0");
    let (names, creating) = burst_across(&c, rng, "o", outage).await;
    let n = names.len();
    let (stop_took, osd) = osd.stopped().await;
    let down = Instant::now();
    let waiting: BTreeSet<String> = unbound(&c.admin, &c.ns, &names).await.into_iter().collect();
    let mut failures = BTreeMap::new();
    failures_until(&c, &mut failures, down + outage).await;
    let _osd = osd.started().await;
    let back = Instant::now();
    let made = creating.await.unwrap();
    let bound = all_bound(&c.admin, &c.ns, &names, Duration::from_secs(180)).await;
    let recovery = back.elapsed();
    let _ = failures_seen(&c, &mut failures).await;
    let affected = waited_in(&made, down, &waiting);
    let mut v = Vec::new();
    if let Err(left) = &bound {
        v.push(format!("not Bound 180 s after the OSD returned: {left:?}"));
    }
    v.extend(check_bound(&c, &names, &[c.prov.logs()]).await);
    // A call blocked on the missing OSD must fail after the op timeout, not hang: the claims
    // made early in the outage must have their failure event before the OSD returned.
    let uid_of_name = uids_by_name(&c).await;
    let slack = Duration::from_secs(10);
    let mut latencies = Vec::new();
    let mut during = 0;
    for (claim, at) in &made {
        if *at < down || *at + OP_TIMEOUT + slack > back {
            continue;
        }
        during += 1;
        match failures.get(&uid_of_name[claim]) {
            Some((seen, _)) if *seen <= back => {
                latencies.push(seen.saturating_duration_since(*at));
            }
            _ => v.push(format!(
                "claim {claim}, made {:?} into the outage, had no failure event before the OSD returned: a call hung past the {OP_TIMEOUT:?} op timeout",
                at.saturating_duration_since(down)
            )),
        }
    }
    if during == 0 {
        v.push("no claim was made early enough in the outage: the burst missed it".into());
    }
    let ((lat50, latmax), cleaned) = wrap_up(&c, &names, &addr, latencies, &mut v).await;
    report(&format!(
        "OSD outage: {} s, {n} claims, {affected} waiting in it, {during} made early enough in it to time out (op timeout {} s) and judged; OSD stopped in {:.1} s; failure events {lat50:.1}/{latmax:.1} s (p50/max) after the claim; all Bound {:.1} s after the OSD returned; deleted and purged in {:.1} s; violations {}",
        outage.as_secs(),
        OP_TIMEOUT.as_secs(),
        stop_took.as_secs_f64(),
        recovery.as_secs_f64(),
        cleaned.as_secs_f64(),
        v.len()
    ));
    verdict(v)
}

/// Scenario 4: kube-apiserver (or etcd) stopped and started again in the middle of a burst,
/// with leader election on (default lease): the watches recover by themselves; nothing is lost
/// or provisioned twice. A leader that could not renew its Lease exits, as designed; the
/// harness restarts it, as kubelet would, and counts it.
async fn control_plane_restart(rng: &mut Rng, daemon: &str) -> Result<(), String> {
    let addr = free_addr();
    let args = ["--http-endpoint", addr.as_str()];
    let mut c = Scenario::serving_with("api", &[], &args).await;
    let name = c.name.clone();
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    wait_log(&c.prov, &["became leader"], Duration::from_secs(30)).await;
    let d = Daemon::of(&c.bed, daemon);
    let n = claims();
    let names: Vec<String> = (0..n).map(|i| format!("a-{i}")).collect();
    let creating = burst(&c.admin, &c.ns, &class, &names, Duration::from_millis(200));
    tokio::time::sleep(rng.millis(500, 3000)).await;
    let affected = unbound(&c.admin, &c.ns, &names).await.len();
    let stopped = Instant::now();
    // SIGTERM, as an operator's restart does; a kube-apiserver draining its watches is cut
    // short after 10 s (it was seen to take over a minute).
    let d = tokio::task::spawn_blocking(move || {
        d.stop_within(Duration::from_secs(10));
        d.start();
        d
    })
    .await
    .unwrap();
    let _ = d;
    // Back when the API server answers a list of claims again.
    api_back(&c).await;
    let back = Instant::now();
    let downtime = back - stopped;
    let mut logs = Vec::new();
    let mut restarts = 0;
    let made = creating.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let bound = loop {
        if !c.prov.is_running() {
            restarts += 1;
            logs.push(c.prov.logs());
            c.prov = Provisioner::start_with(&c.bed, &name, &[], &args, None).await;
        }
        let left = unbound(&c.admin, &c.ns, &names).await;
        if left.is_empty() {
            break Ok(back.elapsed());
        }
        if Instant::now() > deadline {
            break Err(left);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut v = Vec::new();
    let recovery = match &bound {
        Ok(d) => *d,
        Err(left) => {
            v.push(format!(
                "not Bound 180 s after the API server returned: {left:?}"
            ));
            back.elapsed()
        }
    };
    logs.push(c.prov.logs());
    v.extend(check_bound(&c, &names, &logs).await);
    if made.len() != n {
        v.push(format!("only {} of {n} claims were made", made.len()));
    }
    wait_for("/healthz", Duration::from_secs(30), || async {
        healthz(&addr).then_some(())
    })
    .await;
    let cleaned = delete_all_and_check(&c, &names, &mut v).await;
    report(&format!(
        "{daemon} restart: {n} claims, {affected} not yet Bound when it stopped; API back after {:.1} s; all Bound {:.1} s after that; provisioner restarts (Lease lost) {restarts}; deleted and purged in {:.1} s; violations {}",
        downtime.as_secs_f64(),
        recovery.as_secs_f64(),
        cleaned.as_secs_f64(),
        v.len()
    ));
    verdict(v)
}

/// Scenario 5: deletion and expansion while a part is down. Bound claims of an expandable
/// Delete class; half are deleted and half grown while `part` is stopped: the monitor (the
/// provisioner is restarted then too, so it must connect anew with no monitor to answer), or
/// kube-apiserver (stopped right after the requests went in, before the provisioner could act
/// on most of them). Once the part is back: every deleted claim's PV, image and trash entry
/// are gone, every grown image (by the `rbd` CLI) and PV has the new size, and nothing else
/// moved: the grown volumes keep their images, no image is left without a PV.
async fn lifecycle_during_outage(
    rng: &mut Rng,
    part: &str,
    outage: Duration,
) -> Result<(), String> {
    let addr = free_addr();
    let env = [("LEADER_ELECT", "false"), ("MAINTENANCE_INTERVAL", "2")];
    let args = ["--http-endpoint", addr.as_str()];
    let mut c = Scenario::serving_with("lcout", &env, &args).await;
    let name = c.name.clone();
    let class = c
        .class(
            "grow",
            &[],
            json!({"reclaimPolicy": "Delete", "allowVolumeExpansion": true}),
        )
        .await;
    let n = if full() { 20 } else { 6 };
    let names: Vec<String> = (0..n).map(|i| format!("l-{i}")).collect();
    burst(&c.admin, &c.ns, &class, &names, Duration::ZERO)
        .await
        .unwrap();
    all_bound(&c.admin, &c.ns, &names, Duration::from_secs(180))
        .await
        .map_err(|left| format!("not Bound before the outage: {left:?}"))?;
    let uid_of_name = uids_by_name(&c).await;
    assert_eq!(uid_of_name.len(), n, "claims of the scenario");
    let (gone, grown) = names.split_at(n / 2);
    let request = |c: &Scenario| {
        let (pvcs, gone, grown) = (c.pvcs(), gone.to_vec(), grown.to_vec());
        async move {
            for g in &gone {
                pvcs.delete(g, &Default::default())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            for g in &grown {
                pvcs.patch(
                    g,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(
                        json!({"spec": {"resources": {"requests": {"storage": "128Mi"}}}}),
                    ),
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }
    };
    let d = Daemon::of(&c.bed, part);
    let mut logs = Vec::new();
    let mut waited = 0;
    let stopped = Instant::now();
    if part == "mon.a" {
        let (_, d2) = d.stopped().await;
        c.prov.crash();
        logs.push(c.prov.logs());
        c.prov = Provisioner::start_with(&c.bed, &name, &env, &args, None).await;
        request(&c).await?;
        tokio::time::sleep(outage.saturating_sub(stopped.elapsed())).await;
        // The deletions must wait for Ceph (the stamp is read before anything is deleted):
        // their PVs are all still there when the monitor comes back.
        for g in gone {
            if c.pvs()
                .get_opt(&format!("pvc-{}", uid_of_name[g]))
                .await
                .ok()
                .flatten()
                .is_some()
            {
                waited += 1;
            }
        }
        d2.started().await;
    } else {
        request(&c).await?;
        tokio::time::sleep(rng.millis(0, 200)).await;
        tokio::task::spawn_blocking(move || {
            d.stop_within(Duration::from_secs(10));
            std::thread::sleep(outage);
            d.start();
        })
        .await
        .unwrap();
        api_back(&c).await;
    }
    let back = Instant::now();
    let gone_uids: Vec<String> = gone.iter().map(|g| uid_of_name[g].clone()).collect();
    let (mut v, deleted_in) = check_gone(&c, &gone_uids, Duration::from_secs(180)).await;
    let mut grown_in = Duration::ZERO;
    for g in grown {
        let uid = &uid_of_name[g];
        let image = format!("kube/kubernetes-dynamic-pvc-{uid}");
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let size = rbd_json(&c.bed, &["info", &image]).map(|i| i["size"].clone());
            let pv = c.pvs().get_opt(&format!("pvc-{uid}")).await.ok().flatten();
            let cap = pv.and_then(|p| p.spec?.capacity?.get("storage").map(|q| q.0.clone()));
            if size == Some(json!(128u64 << 20)) && cap.as_deref() == Some("128Mi") {
                grown_in = grown_in.max(back.elapsed());
                break;
            }
            if Instant::now() > deadline {
                v.push(format!(
                    "claim {g}: image size {size:?}, PV capacity {cap:?} 180 s after {part} returned, not 128Mi"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    v.extend(check_consistent(&c).await);
    if part == "mon.a" && waited != gone.len() {
        v.push(format!(
            "{} of {} deletions finished with the monitor down, with no way to read the image's stamp",
            gone.len() - waited,
            gone.len()
        ));
    }
    logs.push(c.prov.logs());
    let cleaned = delete_all_and_check(&c, grown, &mut v).await;
    report(&format!(
        "{part} down {:.1} s with {} deletions and {} expansions asked for: deleted and purged {:.1} s, grown {:.1} s after it returned; the rest deleted in {:.1} s; violations {}",
        back.duration_since(stopped).as_secs_f64(),
        gone.len(),
        grown.len(),
        deleted_in.as_secs_f64(),
        grown_in.as_secs_f64(),
        cleaned.as_secs_f64(),
        v.len()
    ));
    verdict(v)
}
