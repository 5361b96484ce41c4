//! The event layer's pure parts with an injected clock, and its writes against a scripted
//! API server: a repeat is a PATCH of its series, never a second object.

use http::{Method, StatusCode};
use serde_json::Value;

use super::*;
use std::sync::Arc;

use crate::controller::testing::{ApiServer, Reply, Seen as Request, Step, expect, not_found};

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/apps/events";
const CORE_EVENTS: &str = "/api/v1/namespaces/default/events";

fn claim(ns: &str, name: &str, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: Some(ns.into()),
        name: Some(name.into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}

fn data() -> ObjectReference {
    claim("apps", "data", "4f0e2a57-9a7e-4c55-8b0c-2a1d6c1e0b11")
}

fn volume() -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolume".into()),
        name: Some("pvc-4f0e2a57".into()),
        uid: Some("9d1b7c3e-0000-4000-8000-000000000001".into()),
        ..Default::default()
    }
}

fn key(about: &ObjectReference, reason: &str, note: u64) -> SeriesKey {
    SeriesKey::new(about, true, reason, "Provision", note)
}

/// Writes until the budget refuses one, which it must within its burst.
fn spend(mut admit: impl FnMut() -> bool) {
    let refused = (0..=NAMESPACE_BURST).any(|_| !admit());
    assert!(refused, "a budget that never runs out");
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_namespace_spends_its_burst_then_its_refill_and_others_keep_theirs() {
    let t0 = Instant::now();
    let mut b = Budgets::new(t0);
    for i in 0..NAMESPACE_BURST {
        assert!(b.admit("noisy", Priority::News, t0), "write {i}");
    }
    assert!(!b.admit("noisy", Priority::News, t0));
    assert!(b.admit("quiet", Priority::News, t0), "another namespace");
    // One write a second after that.
    assert!(!b.admit("noisy", Priority::News, t0 + Duration::from_millis(900)));
    assert!(b.admit("noisy", Priority::News, t0 + secs(1)));
    assert!(!b.admit("noisy", Priority::News, t0 + secs(1)));
    assert!(b.admit("noisy", Priority::News, t0 + secs(2)));
}

#[test]
fn routine_writes_leave_half_the_burst_to_first_warnings() {
    let t0 = Instant::now();
    let mut b = Budgets::new(t0);
    let routine = (0..NAMESPACE_BURST)
        .take_while(|_| b.admit("ns", Priority::Routine, t0))
        .count();
    assert_eq!(routine, 12);
    let news = (0..NAMESPACE_BURST)
        .take_while(|_| b.admit("ns", Priority::News, t0))
        .count();
    assert_eq!(news, 13);
    // Refilled tokens go to news while the namespace is below half its burst.
    assert!(!b.admit("ns", Priority::Routine, t0 + secs(1)));
    assert!(b.admit("ns", Priority::News, t0 + secs(1)));
    assert!(b.admit("ns", Priority::Routine, t0 + secs(20)));
}

#[test]
fn cluster_scoped_objects_have_a_budget_of_their_own() {
    let t0 = Instant::now();
    let mut b = Budgets::new(t0);
    let pv = volume();
    let in_default = claim("default", "data", "u1");
    assert_ne!(budget_of(&pv), budget_of(&in_default));
    spend(|| b.admit(budget_of(&in_default), Priority::News, t0));
    assert!(b.admit(budget_of(&pv), Priority::News, t0));
}

#[test]
fn budgets_that_refilled_are_forgotten_and_their_number_is_bounded() {
    let t0 = Instant::now();
    let mut b = Budgets::new(t0);
    assert!(b.admit("a", Priority::News, t0));
    b.0.sweep(t0 + Duration::from_millis(500));
    assert_eq!(b.0.map.len(), 1, "still spent: kept");
    b.0.sweep(t0 + secs(1));
    assert!(b.0.map.is_empty(), "refilled: the same as a new one");

    for i in 0..MAX_NAMESPACES + 10 {
        assert!(b.admit(&format!("ns-{i}"), Priority::News, t0));
    }
    assert_eq!(b.0.map.len(), MAX_NAMESPACES);
}

#[test]
fn series_keys_tell_events_apart() {
    let about = data();
    let k = SeriesKey::new(&about, true, "ProvisioningFailed", "Provision", 7);
    assert_eq!(
        k,
        SeriesKey::new(&about, true, "ProvisioningFailed", "Provision", 7)
    );
    for other in [
        SeriesKey::new(&about, false, "ProvisioningFailed", "Provision", 7),
        SeriesKey::new(&about, true, "Provisioning", "Provision", 7),
        SeriesKey::new(&about, true, "ProvisioningFailed", "Resize", 7),
        SeriesKey::new(&about, true, "ProvisioningFailed", "Provision", 8),
        // A claim of the same name made again is another object.
        SeriesKey::new(
            &claim("apps", "data", "0c9d"),
            true,
            "ProvisioningFailed",
            "Provision",
            7,
        ),
    ] {
        assert_ne!(k, other);
    }
    // Without a uid: kind, namespace and name.
    let no_uid = |ns: &str| ObjectReference {
        uid: None,
        ..claim(ns, "data", "")
    };
    let a = SeriesKey::new(&no_uid("a"), true, "R", "A", 1);
    assert_eq!(a.object, "PersistentVolumeClaim/a/data");
    assert_ne!(a, SeriesKey::new(&no_uid("b"), true, "R", "A", 1));
}

#[test]
fn a_repeat_within_the_window_counts_into_its_series() {
    let t0 = Instant::now();
    let mut c = SeriesCache::new(t0);
    let k = key(&data(), "ProvisioningFailed", 1);
    assert_eq!(c.observe(&k, t0), Seen::First);
    c.start(k.clone(), "data.1".into(), t0);
    let repeat = |count| Seen::Repeat {
        name: "data.1".into(),
        count,
    };
    assert_eq!(c.observe(&k, t0 + secs(1)), repeat(2));
    // The window runs from the last occurrence.
    assert_eq!(c.observe(&k, t0 + secs(300)), repeat(3));
    assert_eq!(c.observe(&k, t0 + secs(300) + SERIES_WINDOW), Seen::First);
    assert_eq!(
        c.observe(&key(&data(), "ProvisioningFailed", 2), t0),
        Seen::First,
        "another note"
    );
}

#[test]
fn series_are_forgotten_by_age_and_bounded_in_number() {
    let t0 = Instant::now();
    let mut c = SeriesCache::new(t0);
    c.start(key(&data(), "Old", 1), "a".into(), t0);
    c.start(key(&data(), "Recent", 1), "b".into(), t0 + secs(120));
    c.0.sweep(t0 + SERIES_WINDOW);
    let left: Vec<&String> = c.0.map.values().map(|s| &s.name).collect();
    assert_eq!(left, vec!["b"]);

    let mut c = SeriesCache::new(t0);
    for i in 0..MAX_SERIES as u64 + 1 {
        let at = t0 + Duration::from_millis(i);
        c.start(key(&data(), "R", i), format!("e{i}"), at);
    }
    assert_eq!(c.0.map.len(), MAX_SERIES);
    assert!(!c.0.map.values().any(|s| s.name == "e0"), "the oldest went");
    assert!(c.0.map.values().any(|s| s.name == "e1"));
}

/// Events over a scripted API server, on a clock that moves only when the test moves it.
fn events(script: Vec<Step>) -> (Events, ApiServer, Counter, Clock) {
    let (client, api) = ApiServer::start(script);
    let dropped = Counter::default();
    let mut ev = Events::new(client, dropped.clone());
    let clock = Clock(Arc::new(Mutex::new(Instant::now())));
    let hands = clock.0.clone();
    ev.now = Box::new(move || *hands.lock());
    (ev, api, dropped, clock)
}

struct Clock(Arc<Mutex<Instant>>);

impl Clock {
    fn advance(&self, by: Duration) {
        *self.0.lock() += by;
    }
}

fn name_of(r: &Request) -> &str {
    r.body["metadata"]["name"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_repeat_patches_its_series_instead_of_writing_a_second_event() {
    let (ev, api, dropped, _) = events(vec![
        expect(Method::POST, EVENTS, Reply::Echo(StatusCode::CREATED)),
        expect(
            Method::PATCH,
            format!("{EVENTS}/*"),
            Reply::Echo(StatusCode::OK),
        ),
        expect(
            Method::PATCH,
            format!("{EVENTS}/*"),
            Reply::Echo(StatusCode::OK),
        ),
        expect(Method::POST, EVENTS, Reply::Echo(StatusCode::CREATED)),
    ]);
    let about = data();
    for _ in 0..3 {
        ev.warning(
            &about,
            "ProvisioningFailed",
            "Provision",
            "no Secret".into(),
        )
        .await;
    }
    ev.warning(&about, "ProvisioningFailed", "Provision", "no key".into())
        .await;
    let seen = api.done();
    let first = &seen[0].body;
    assert_eq!(first["reason"], "ProvisioningFailed");
    assert_eq!(first["type"], "Warning");
    assert_eq!(first["note"], "no Secret");
    assert_eq!(first["regarding"]["uid"], about.uid.clone().unwrap());
    assert_eq!(first["reportingController"], "rbd-provisioner");
    assert_eq!(first["series"], Value::Null);
    let name = name_of(&seen[0]);
    assert!(name.starts_with("data."), "{name}");
    for (request, count) in [(&seen[1], 2), (&seen[2], 3)] {
        assert_eq!(request.path, format!("{EVENTS}/{name}"));
        assert_eq!(request.body["series"]["count"], count);
        assert!(request.body["series"]["lastObservedTime"].is_string());
        assert_eq!(
            request.body.as_object().map(|o| o.len()),
            Some(1),
            "only the series changes: {}",
            request.body
        );
    }
    assert_eq!(
        seen[3].body["note"], "no key",
        "another note, another event"
    );
    assert_ne!(name_of(&seen[3]), name);
    assert_eq!(dropped.get(), 0);
}

#[tokio::test]
async fn a_repeat_about_a_volume_counts_on_its_core_event() {
    let (ev, api, _, _) = events(vec![
        expect(Method::POST, CORE_EVENTS, Reply::Echo(StatusCode::CREATED)),
        expect(
            Method::PATCH,
            format!("{CORE_EVENTS}/*"),
            Reply::Echo(StatusCode::OK),
        ),
    ]);
    let pv = volume();
    for _ in 0..2 {
        ev.warning(&pv, "VolumeFailedDelete", "Delete", "in use".into())
            .await;
    }
    let seen = api.done();
    let first = &seen[0].body;
    assert_eq!(first["involvedObject"]["name"], "pvc-4f0e2a57");
    assert_eq!(first["metadata"]["namespace"], "default");
    assert_eq!(first["count"], 1);
    assert_eq!(first["message"], "in use");
    assert_eq!(seen[1].path, format!("{CORE_EVENTS}/{}", name_of(&seen[0])));
    assert_eq!(seen[1].body["count"], 2);
    assert!(seen[1].body["lastTimestamp"].is_string());
}

#[tokio::test]
async fn a_series_whose_object_is_gone_starts_again_in_a_new_one() {
    let (ev, api, _, _) = events(vec![
        expect(Method::POST, EVENTS, Reply::Echo(StatusCode::CREATED)),
        expect(Method::PATCH, format!("{EVENTS}/*"), not_found()),
        expect(Method::POST, EVENTS, Reply::Echo(StatusCode::CREATED)),
        expect(
            Method::PATCH,
            format!("{EVENTS}/*"),
            Reply::Echo(StatusCode::OK),
        ),
    ]);
    for _ in 0..3 {
        ev.normal(&data(), "Provisioning", "Provision", "started".into())
            .await;
    }
    let seen = api.done();
    let (old, new) = (name_of(&seen[0]), name_of(&seen[2]));
    assert_ne!(old, new);
    assert_eq!(seen[1].path, format!("{EVENTS}/{old}"));
    assert_eq!(seen[3].path, format!("{EVENTS}/{new}"));
    assert_eq!(seen[3].body["series"]["count"], 2);
}

#[tokio::test]
async fn a_failed_creation_leaves_no_series_behind() {
    let (ev, api, _, _) = events(vec![
        expect(
            Method::POST,
            EVENTS,
            Reply::Failure(StatusCode::FORBIDDEN, "Forbidden"),
        ),
        expect(Method::POST, EVENTS, Reply::Echo(StatusCode::CREATED)),
    ]);
    for _ in 0..2 {
        ev.warning(&data(), "ProvisioningFailed", "Provision", "x".into())
            .await;
    }
    api.done();
}

#[tokio::test]
async fn once_events_keep_no_series() {
    let (ev, api, _, _) = events(vec![
        expect(Method::POST, EVENTS, Reply::Echo(StatusCode::CREATED)),
        expect(Method::POST, EVENTS, Reply::Echo(StatusCode::CREATED)),
    ]);
    for _ in 0..2 {
        ev.once(&data(), "Provisioning", "Provision", "started".into())
            .await;
    }
    let seen = api.done();
    assert_eq!(seen[0].body["type"], "Normal");
    assert!(ev.state().series.0.map.is_empty());
}

#[tokio::test]
async fn a_spent_namespace_drops_and_counts_its_events_and_spares_the_others() {
    // Normal events (here one-offs) get half the burst; a first Warning still goes through;
    // then nothing more from that namespace, while another namespace writes.
    let routine = (NAMESPACE_BURST as f64 - ROUTINE_KEEPS).floor() as usize;
    let mut script: Vec<_> = (0..routine + 1)
        .map(|_| expect(Method::POST, EVENTS, Reply::Echo(StatusCode::CREATED)))
        .collect();
    script.push(expect(
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/other/events",
        Reply::Echo(StatusCode::CREATED),
    ));
    let (ev, api, dropped, _) = events(script);
    for i in 0..routine + 3 {
        let about = claim("apps", &format!("c{i}"), &format!("u{i}"));
        ev.once(&about, "Provisioning", "Provision", "started".into())
            .await;
    }
    assert_eq!(dropped.get(), 3);
    ev.warning(&data(), "ProvisioningFailed", "Provision", "x".into())
        .await;
    // The rest of the budget is for first Warnings only, and then it is spent.
    spend(|| ev.admit(&data(), Priority::News, "spend"));
    let dropped_before = dropped.get();
    ev.warning(
        &claim("apps", "late", "u-late"),
        "ProvisioningFailed",
        "Provision",
        "x".into(),
    )
    .await;
    assert_eq!(dropped.get(), dropped_before + 1);
    ev.warning(
        &claim("other", "data", "u-other"),
        "ProvisioningFailed",
        "Provision",
        "x".into(),
    )
    .await;
    let seen = api.done();
    assert_eq!(seen.len(), routine + 2);
    assert_eq!(seen[routine].body["type"], "Warning");
}

#[tokio::test]
async fn repeats_not_written_are_counted_and_carried_by_the_next_write() {
    let (ev, api, dropped, clock) = events(vec![]);
    let about = data();
    let k = key(&about, "ProvisioningFailed", 1);
    assert!(matches!(ev.plan(&about, &k), Some(Write::Create { .. })));
    // The namespace is down to what only first Warnings may spend.
    spend(|| ev.admit(&about, Priority::Routine, "spend"));
    let dropped_then = dropped.get();
    for _ in 0..3 {
        assert!(ev.plan(&about, &k).is_none());
    }
    assert_eq!(dropped.get(), dropped_then + 3);
    // Once routine writes may go again, the next repeat writes the whole count.
    clock.advance(secs(1));
    let Some(Write::Update { count, .. }) = ev.plan(&about, &k) else {
        panic!("a repeat is an update");
    };
    assert_eq!(count, 5);
    api.done();
}

#[test]
fn notes_are_cut_at_1000_bytes_on_a_character_boundary() {
    assert_eq!(truncated("short".into()), "short");
    let long = format!("{}é{}", "a".repeat(999), "b".repeat(10));
    let cut = truncated(long);
    assert_eq!(cut.len(), 999, "é straddles byte 1000");
    assert!(cut.chars().all(|c| c == 'a'));
    assert_eq!(truncated("x".repeat(1500)).len(), 1000);
}
