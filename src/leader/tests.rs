use super::*;
use domain::lease::replica_identity;

const LEASE: Duration = Duration::from_secs(15);

fn record(holder: Option<&str>, version: &str) -> Record {
    Record {
        resource_version: Some(version.into()),
        spec: Some(LeaseSpec {
            holder_identity: holder.map(Into::into),
            lease_duration_seconds: Some(15),
            // Deliberately absurd: renewTime must play no part in the decision.
            renew_time: Some(MicroTime(Timestamp::UNIX_EPOCH)),
            ..Default::default()
        }),
    }
}

#[test]
fn who_may_hold() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let b = record(Some("b"), "1");
    assert_eq!(
        judge(&record(None, "1"), "a", t0, LEASE, t0),
        Verdict::Free,
        "released"
    );
    let mut released = record(Some(""), "1");
    released.spec.as_mut().unwrap().renew_time = None;
    assert_eq!(judge(&released, "a", t0, LEASE, t0), Verdict::Free);
    assert_eq!(
        judge(&record(Some("a"), "1"), "a", t0, LEASE, t0),
        Verdict::Mine
    );
    assert_eq!(
        judge(&b, "a", t0, LEASE, t0 + s(3)),
        Verdict::HeldBy {
            holder: "b".into(),
            left: s(12)
        },
        "seen 3 s ago: valid, whatever renewTime says"
    );
    assert_eq!(
        judge(&b, "a", t0, LEASE, t0 + s(15)),
        Verdict::Expired { holder: "b".into() },
        "unchanged for a whole lease duration"
    );
}

#[test]
fn the_longer_lease_duration_applies() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut long = record(Some("b"), "1");
    long.spec.as_mut().unwrap().lease_duration_seconds = Some(60);
    assert!(matches!(
        judge(&long, "a", t0, LEASE, t0 + s(30)),
        Verdict::HeldBy { .. }
    ));
    assert!(matches!(
        judge(&record(Some("b"), "1"), "a", t0, s(40), t0 + s(30)),
        Verdict::HeldBy { .. }
    ));
    let mut none = record(Some("b"), "1");
    none.spec.as_mut().unwrap().lease_duration_seconds = None;
    assert!(matches!(
        judge(&none, "a", t0, LEASE, t0 + s(16)),
        Verdict::Expired { .. }
    ));
}

#[test]
fn expiry_counts_from_the_last_change_seen() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let mut o = Observer::default();
    let v1 = record(Some("b"), "1");
    // The first sight starts the clock, however old the record's own times are.
    assert_eq!(o.observe(&v1, t0), t0);
    assert_eq!(o.observe(&v1, t0 + s(10)), t0, "unchanged");
    // A renewal (new resourceVersion, even with the same renewTime) restarts it.
    let v2 = record(Some("b"), "2");
    assert_eq!(o.observe(&v2, t0 + s(12)), t0 + s(12));
    assert_eq!(o.observe(&v2, t0 + s(20)), t0 + s(12));
    let at = o.observe(&v2, t0 + s(26));
    assert!(matches!(
        judge(&v2, "a", at, LEASE, t0 + s(26)),
        Verdict::HeldBy { .. }
    ));
    let at = o.observe(&v2, t0 + s(27));
    assert_eq!(
        judge(&v2, "a", at, LEASE, t0 + s(27)),
        Verdict::Expired { holder: "b".into() }
    );
    // A change of holder is a change too.
    let v3 = record(Some("c"), "3");
    assert_eq!(o.observe(&v3, t0 + s(28)), t0 + s(28));
}

#[test]
fn the_leader_stops_before_any_standby_may_take_over() {
    // The leader sends a renewal at `sent`; a standby can only see it committed later.
    // The leader acts until sent + renew_deadline; the earliest takeover is
    // seen + lease_duration.
    let timing = Timing::default();
    let sent = Instant::now();
    let seen = sent + Duration::from_millis(1);
    let mut o = Observer::default();
    let at = o.observe(&record(Some("b"), "7"), seen);
    let leader_stops = sent + timing.renew_deadline;
    assert!(matches!(
        judge(
            &record(Some("b"), "7"),
            "a",
            at,
            timing.lease_duration,
            leader_stops
        ),
        Verdict::HeldBy { left, .. } if left >= Duration::from_secs(5)
    ));
}

#[test]
fn timing_rules() {
    let s = Duration::from_secs;
    assert_eq!(Timing::default().validate(), Ok(()));
    let t = |l, r, p| Timing {
        lease_duration: l,
        renew_deadline: r,
        retry_period: p,
    };
    assert!(matches!(
        t(s(10), s(10), s(2)).validate(),
        Err(TimingError::RenewNotBeforeExpiry { .. })
    ));
    assert!(matches!(
        t(s(15), s(2), s(2)).validate(),
        Err(TimingError::RetryNotBeforeDeadline { .. })
    ));
    assert_eq!(
        t(
            Duration::from_millis(500),
            Duration::from_millis(400),
            Duration::from_millis(100)
        )
        .validate(),
        Err(TimingError::LeaseTooShort(Duration::from_millis(500)))
    );
    assert_eq!(
        t(s(15), s(10), Duration::ZERO).validate(),
        Err(TimingError::NoRetryPeriod)
    );
    assert_eq!(
        t(
            Duration::from_millis(1500),
            s(1),
            Duration::from_millis(200)
        )
        .lease_seconds(),
        2
    );
    assert_eq!(Timing::default().lease_seconds(), 15);
}

#[test]
fn go_durations() {
    let ms = Duration::from_millis;
    assert_eq!(parse_duration("15s"), Ok(ms(15_000)));
    assert_eq!(parse_duration_or_seconds("300"), Ok(ms(300_000)));
    assert_eq!(parse_duration_or_seconds("5m"), Ok(ms(300_000)));
    assert!(parse_duration_or_seconds("5 minutes").is_err());
    assert_eq!(parse_duration("500ms"), Ok(ms(500)));
    assert_eq!(parse_duration("2m"), Ok(ms(120_000)));
    assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
    assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
    assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
    assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    for bad in ["", "15", "s", "10x", "-1s", "1.2.3s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?}");
    }
    assert!(
        parse_duration("15")
            .unwrap_err()
            .to_string()
            .contains("15s")
    );
}

#[test]
fn transitions_count_changes_of_holder() {
    let now = Timestamp::now();
    let timing = Timing::default();
    let first = spec_for("a", &timing, now, None);
    assert_eq!(first.lease_transitions, Some(1));
    assert_eq!(first.lease_duration_seconds, Some(15));
    let renewed = spec_for("a", &timing, now, Some(&first));
    assert_eq!(renewed.lease_transitions, Some(1));
    assert_eq!(renewed.acquire_time, first.acquire_time);
    let taken = spec_for("b", &timing, now, Some(&renewed));
    assert_eq!(taken.lease_transitions, Some(2));
    assert_eq!(taken.holder_identity.as_deref(), Some("b"));
}

#[test]
fn identities_carry_a_random_suffix() {
    assert_eq!(
        replica_identity(Some("rbd-provisioner-7d9f-x2k"), "node-1", 0xab),
        "rbd-provisioner-7d9f-x2k_00000000000000ab"
    );
    // No (or an empty) POD_NAME: the host name, else a fixed word.
    assert_eq!(
        replica_identity(None, "node-1\n", u64::MAX),
        "node-1_ffffffffffffffff"
    );
    assert_eq!(
        replica_identity(Some(" "), "", 1),
        "rbd-provisioner_0000000000000001"
    );

    // Two replicas given one POD_NAME (copied into both) still differ, and judge the Lease
    // the other holds as not theirs.
    let a = replica_identity(Some("copied"), "h", random_u64());
    let b = replica_identity(Some("copied"), "h", random_u64());
    assert_ne!(a, b);
    let held_by_a = record(Some(&a), "1");
    let now = Instant::now();
    assert_eq!(judge(&held_by_a, &a, now, LEASE, now), Verdict::Mine);
    assert!(matches!(
        judge(&held_by_a, &b, now, LEASE, now),
        Verdict::HeldBy { holder, .. } if holder == a
    ));
}

#[test]
fn random_suffixes_do_not_repeat() {
    let drawn: std::collections::BTreeSet<u64> = (0..1000).map(|_| random_u64()).collect();
    assert_eq!(drawn.len(), 1000);
}
