//! No tenant can flood the event stream. A namespace full of failing claims gets its events
//! at a bounded rate, each claim still told why it fails, while a claim in another namespace
//! is reported at once; and an event that repeats is one object whose count grows, on claims
//! (events.k8s.io/v1 `series`) and on PVs (core/v1 `count`) alike.

use testbed as common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use serde_json::json;

/// The provisioner's event budget per namespace (src/k8s/events.rs): this many writes at once,
/// then this many a second.
const BURST: f64 = 25.0;
const PER_SEC: f64 = 1.0;

const T: Duration = Duration::from_secs(60);

/// Events the provisioner wrote in `ns` (kube-controller-manager writes some about the same
/// claims).
async fn ours(client: &kube::Client, ns: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("rbd-provisioner"))
        .collect()
}

fn regarding(e: &Event) -> Option<&str> {
    e.regarding.as_ref().and_then(|r| r.uid.as_deref())
}

/// The value of an unlabelled metric on the provisioner's /metrics.
fn metric(addr: &str, name: &str) -> Option<f64> {
    metrics(addr)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Two classes of `c`'s provisioner: one whose claims all fail at once (its admin Secret does
/// not exist) and are retried 1, 2, 4 … s later, and a good one.
async fn broken_and_good(c: &Scenario) -> (String, String) {
    let missing = format!("{}-missing", c.ns);
    let broken = c
        .class("broken", &[("adminSecretName", &missing)], json!({}))
        .await;
    let good = c
        .class("good", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    (broken, good)
}

#[tokio::test]
async fn a_namespace_of_failing_claims_is_rate_limited_and_others_are_served_at_once() {
    let bed = Bed::load();
    let name = format!("{}.test/rbd", unique("tenant"));
    let addr = free_addr();
    let prov = Provisioner::start_with(&bed, &name, &[], &["--http-endpoint", &addr], None).await;
    let c = Scenario::around("tenant", &name, prov).await;
    let neighbour = unique("neighbour");
    namespace(&c.admin, &neighbour).await;
    let _neighbour_cleanup = Cleanup::new(&c.bed).namespace(&neighbour);
    // Every claim of the broken class fails at once and is retried 1, 2, 4 … s later: three
    // events each on the first attempts, repeats after that.
    let (broken, good) = broken_and_good(&c).await;

    let start = Instant::now();
    let mut tenant = BTreeSet::new();
    for i in 0..40 {
        let pvc = c
            .claim(&format!("c{i}"), &broken)
            .size("8Mi")
            .create()
            .await;
        tenant.insert(uid_of(&pvc));
    }
    // Meanwhile a neighbour's claim is provisioned and reported as usual.
    let made = Instant::now();
    let pvc = claim(
        &c.admin,
        &neighbour,
        "data",
        &good,
        "8Mi",
        &["ReadWriteOnce"],
        json!({}),
    )
    .await;
    wait_event(
        &c.admin,
        &neighbour,
        &uid_of(&pvc),
        "ProvisioningSucceeded",
        &[],
        Duration::from_secs(20),
    )
    .await;
    let served = made.elapsed();

    // For a minute and a half: never more Event objects than the budget allows so far (the
    // budget starts with the first event, after `start`); and each claim is told why it
    // fails, since first failures go ahead of progress notes and repeats.
    let mut all_told = None;
    let most = loop {
        let evs = ours(&c.admin, &c.ns).await;
        let elapsed = start.elapsed().as_secs_f64();
        let allowed = BURST + PER_SEC * elapsed;
        assert!(
            evs.len() as f64 <= allowed,
            "{} Event objects in the tenant's namespace {elapsed:.1} s after its first claim; its budget allows at most {allowed:.0} writes by then",
            evs.len()
        );
        let told: BTreeSet<String> = evs
            .iter()
            .filter(|e| e.reason.as_deref() == Some("ProvisioningFailed"))
            .filter_map(|e| regarding(e).map(String::from))
            .collect();
        if all_told.is_none() && told.is_superset(&tenant) {
            all_told = Some(elapsed);
        }
        for uid in &tenant {
            let failed = evs
                .iter()
                .filter(|e| regarding(e) == Some(uid.as_str()))
                .filter(|e| e.reason.as_deref() == Some("ProvisioningFailed"))
                .count();
            assert!(
                failed <= 1,
                "claim {uid}: {failed} ProvisioningFailed objects"
            );
        }
        if elapsed > 90.0 {
            break evs.len();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let all_told =
        all_told.expect("every failing claim has its ProvisioningFailed event within 90 s");
    let dropped = metric(&addr, "rbd_provisioner_events_dropped_total").unwrap_or(0.0);
    eprintln!(
        "neighbour's claim reported after {served:.1?}; every tenant claim had its ProvisioningFailed {all_told:.0} s after the first was made; {most} Event objects in the tenant's namespace after 90 s; {dropped} events dropped"
    );
    assert!(
        dropped > 0.0,
        "the flood shows in rbd_provisioner_events_dropped_total"
    );
}

#[tokio::test]
async fn a_repeating_event_is_one_object_whose_count_grows() {
    let c = Scenario::new("series").await;
    let (broken, good) = broken_and_good(&c).await;

    // A claim retried 1, 2, 4 … s apart: one ProvisioningFailed object, its series counting.
    let failing = uid_of(&c.claim("failing", &broken).size("8Mi").create().await);
    let failures = || async {
        let evs: Vec<Event> = ours(&c.admin, &c.ns)
            .await
            .into_iter()
            .filter(|e| regarding(e) == Some(failing.as_str()))
            .filter(|e| e.reason.as_deref() == Some("ProvisioningFailed"))
            .collect();
        evs
    };
    let count = |e: &Event| e.series.as_ref().map_or(1, |s| s.count);
    let first = wait_for("a ProvisioningFailed series of 3", T, || async {
        let evs = failures().await;
        assert!(evs.len() <= 1, "{} ProvisioningFailed objects", evs.len());
        evs.first().map(count).filter(|n| *n >= 3)
    })
    .await;
    let later = wait_for("the series to count on", T, || async {
        let evs = failures().await;
        assert_eq!(evs.len(), 1, "one ProvisioningFailed object");
        Some(count(&evs[0])).filter(|n| *n > first)
    })
    .await;

    // A volume whose image is held open: each deletion attempt (up to 10 s apart) fails.
    let (kept, uid) = c.bound(&good, "kept", "8Mi").await;
    let pv = c.pv_of(&kept).await;
    let ceph = c.bed.ceph().await;
    let held = ceph
        .open_read_write("kube", &volume_source(&pv).image)
        .await
        .unwrap();
    let pv_uid = uid_of(&pv);
    c.delete_claim("kept").await;
    let refusals = || async {
        let evs: Vec<CoreEvent> = Api::<CoreEvent>::namespaced(c.admin.clone(), "default")
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
            .into_iter()
            .filter(|e| e.involved_object.uid.as_deref() == Some(pv_uid.as_str()))
            .filter(|e| e.reason.as_deref() == Some("VolumeFailedDelete"))
            .collect();
        evs
    };
    let attempts = wait_for("a VolumeFailedDelete counted 3 times", T, || async {
        let evs = refusals().await;
        assert!(
            evs.len() <= 1,
            "{} VolumeFailedDelete objects about {}: repeats must update one",
            evs.len(),
            pv.metadata.name.as_deref().unwrap_or_default()
        );
        evs.first().and_then(|e| e.count).filter(|n| *n >= 3)
    })
    .await;
    let e = refusals().await.remove(0);
    assert!(
        e.message.as_deref().unwrap_or_default().contains("in use"),
        "{:?}",
        e.message
    );
    assert!(e.last_timestamp > e.first_timestamp, "{e:?}");
    drop(held);
    c.wait_pv_gone(&uid).await;
    eprintln!(
        "claim: one ProvisioningFailed counted {first}, then {later}; volume: one VolumeFailedDelete counted {attempts}"
    );
}
