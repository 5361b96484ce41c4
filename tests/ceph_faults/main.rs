//! Faults on the Ceph side, on the real bed: a pool's quota reached during a burst, the admin
//! key rotated, the admin user's caps revoked, and the provisioner's client blocklisted. Each
//! scenario has a pool and a Ceph user of its own (made with the `ceph` CLI, removed at the
//! end; client.admin, which the bed and the other tests use, is never touched), checks the
//! event the claims get, and checks with the `rbd` and `rados` CLIs (not the code under test)
//! that nothing was left half-made and that, once the fault is mended, every claim is
//! provisioned exactly once.

mod checks;
mod own_ceph;

use testbed as common;
use testbed::harness;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use checks::*;
use common::*;
use harness::*;
use kube::api::ListParams;
use own_ceph::*;
use serde_json::json;

/// Long enough for a claim to be retried a few times (retries are at most 2 s apart here).
const T: Duration = Duration::from_secs(90);
/// What the scenarios give `--ceph-client-max-age`, in seconds, where the cached client must
/// be re-authenticated to see the fault.
const MAX_AGE: u64 = 4;

/// A pool's quota reached in the middle of a burst: the claims after it fail with an event
/// naming the pool, the quota and the command that lifts it, nothing of theirs is made, and
/// once the quota is lifted every claim of the burst is provisioned exactly once.
#[tokio::test]
async fn pool_quota_reached_during_a_burst() {
    let started = Instant::now();
    let (c, addr, own, class) = scenario("cfquota", None).await;
    let before = provisioned_first(&c, &class, names("before", 3)).await;

    // Already exceeded (the pool holds more than one object): reached at the next statistics.
    ceph_cli(
        &c.bed,
        &["osd", "pool", "set-quota", &own.pool, "max_objects", "1"],
    );
    wait_for("the pool flagged full_quota", T, || async {
        own.flags().contains("full_quota").then_some(())
    })
    .await;
    let after = names("after", 5);
    let uids = claims(&c, &class, &after).await;
    let note = failed_with(
        &c,
        &uids,
        &[
            &format!("pool {} is full: its quota max_objects 1", own.pool),
            "EDQUOT",
            &format!(
                "ceph osd pool set-quota {} max_objects|max_bytes N",
                own.pool
            ),
        ],
    )
    .await;
    println!("event: {note}");
    // Retried meanwhile, and still nothing made.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = nothing_made(&c, &own, &uids).await;
    assert_no_violations(&v);
    let failed = provisions(&addr, "pool_full");
    assert!(
        failed >= after.len() as u64,
        "{failed} provisioning failures counted as pool_full, for {} claims",
        after.len()
    );

    ceph_cli(
        &c.bed,
        &["osd", "pool", "set-quota", &own.pool, "max_objects", "0"],
    );
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    let took = all_provisioned(&c, &all, T)
        .await
        .unwrap_or_else(|left| panic!("after the quota was lifted, not provisioned: {left:?}"));
    let v = exactly_once(&c, &own, &all).await;
    assert_no_violations(&v);
    assert_eq!(provisions(&addr, "success"), all.len() as u64);
    report(&format!(
        "ceph_faults quota: {} claims refused while the quota held, provisioned {:.1}s after it was lifted, test {:.0}s",
        after.len(),
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
}

/// A deletion while the pool is at its quota. librbd's trash move then does nothing and says
/// the image is gone (a pool that never had a trash entry cannot make its trash object), so
/// "gone" must be proved: the PV stays, held by our finalizer, with an event naming the quota,
/// and the image stays with it; once the quota is lifted the deletion finishes.
#[tokio::test]
async fn a_deletion_at_a_full_pool_keeps_the_volume_until_there_is_room() {
    let started = Instant::now();
    let (c, _addr, own, class) = scenario("cfdelq", None).await;
    let doomed = provisioned_first(&c, &class, names("doomed", 1)).await;
    let uid = uid_of(&c.pvcs().get(&doomed[0]).await.unwrap());
    let (pv, image) = (format!("pvc-{uid}"), image_of(&uid));
    assert!(rbd_ls(&c.bed, &own.pool).contains(&image), "made: {image}");

    ceph_cli(
        &c.bed,
        &["osd", "pool", "set-quota", &own.pool, "max_objects", "1"],
    );
    wait_for("the pool flagged full_quota", T, || async {
        own.flags().contains("full_quota").then_some(())
    })
    .await;
    c.delete_claim(&doomed[0]).await;
    let note = wait_pv_event(&c.admin, &pv, "VolumeFailedDelete", "did nothing", T).await;
    println!("event: {note}");
    assert!(note.contains("max_objects 1"), "the quota is named: {note}");
    // Retried meanwhile, and still kept.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        rbd_ls(&c.bed, &own.pool).contains(&image),
        "the image stays while the deletion cannot trash it"
    );
    assert!(
        c.pvs().get_opt(&pv).await.unwrap().is_some(),
        "the PV is held until its image is trashed"
    );

    ceph_cli(
        &c.bed,
        &["osd", "pool", "set-quota", &own.pool, "max_objects", "0"],
    );
    c.wait_pv_gone(&uid).await;
    wait_for("the image out of the pool", T, || async {
        (!rbd_ls(&c.bed, &own.pool).contains(&image)).then_some(())
    })
    .await;
    report(&format!(
        "ceph_faults deletion at quota: kept until the quota was lifted, test {:.0}s",
        started.elapsed().as_secs_f64()
    ));
}

/// The admin key rotated (the user removed and made again, with a new key) while claims wait:
/// the cached client is re-authenticated within `--ceph-client-max-age`, the claims get an
/// event naming the user, the Secret and the command that updates it, and once the Secret
/// holds the new key they are provisioned with it, exactly once.
#[tokio::test]
async fn admin_key_rotated_while_claims_wait() {
    let started = Instant::now();
    let (c, addr, own, class) = scenario("cfkey", Some(MAX_AGE)).await;
    let old_key = own.key();
    let first = provisioned_first(&c, &class, names("first", 1)).await;

    ceph_cli(&c.bed, &["auth", "del", &own.client()]);
    own.grant();
    let new_key = own.key();
    assert_ne!(old_key, new_key, "the user was made again with a new key");
    // The client cached with the old key is past its age by now.
    tokio::time::sleep(Duration::from_secs(MAX_AGE + 1)).await;
    let pending = names("pending", 4);
    let uids = claims(&c, &class, &pending).await;
    let secret = format!("{}-own-admin", c.ns);
    let note = failed_with(
        &c,
        &uids,
        &[
            &format!(
                "Ceph refused the key of {} from the admin secret (adminSecretName) kube-system/{secret}",
                own.client()
            ),
            "EACCES",
            &format!(
                "kubectl -n kube-system create secret generic {secret} --type=kubernetes.io/rbd --from-file=key=<(ceph auth get-key {})",
                own.client()
            ),
        ],
    )
    .await;
    println!("event: {note}");
    let v = nothing_made(&c, &own, &uids).await;
    assert_no_violations(&v);
    assert!(provisions(&addr, "ceph_auth") >= pending.len() as u64);

    // The old key no longer works anywhere: whatever provisions now uses the new one.
    own.secret(&c).await;
    let all: Vec<String> = first.iter().chain(&pending).cloned().collect();
    let took = all_provisioned(&c, &all, T)
        .await
        .unwrap_or_else(|left| panic!("with the new key, not provisioned: {left:?}"));
    let v = exactly_once(&c, &own, &all).await;
    assert_no_violations(&v);
    // Neither key in the log or any event of the namespace.
    let logs = c.prov.logs();
    let events = events_text(&c).await;
    for (which, key) in [("old", &old_key), ("new", &new_key)] {
        assert!(
            !logs.contains(key.as_str()),
            "the {which} key is in the log"
        );
        assert!(
            !events.contains(key.as_str()),
            "the {which} key is in an event"
        );
    }
    report(&format!(
        "ceph_faults key rotation: {} claims refused with the old key, provisioned {:.1}s after the Secret was updated, test {:.0}s",
        pending.len(),
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
}

/// The admin user's caps revoked while claims wait: an event says permission denied for that
/// user and pool, with the command that gives the caps back; nothing is made; the command as
/// the event prints it mends it, and every claim is then provisioned exactly once.
#[tokio::test]
async fn caps_revoked_while_claims_wait() {
    let started = Instant::now();
    let (c, addr, own, class) = scenario("cfcaps", Some(MAX_AGE)).await;
    let first = provisioned_first(&c, &class, names("first", 1)).await;

    ceph_cli(&c.bed, &["auth", "caps", &own.client(), "mon", "allow r"]);
    tokio::time::sleep(Duration::from_secs(MAX_AGE + 1)).await;
    let pending = names("pending", 4);
    let uids = claims(&c, &class, &pending).await;
    let fix = format!(
        "ceph auth caps {} mon 'profile rbd' osd 'profile rbd pool={}'",
        own.client(),
        own.pool
    );
    let note = failed_with(
        &c,
        &uids,
        &[
            &format!("permission denied to {} in pool {}", own.client(), own.pool),
            "EPERM",
            &fix,
        ],
    )
    .await;
    println!("event: {note}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = nothing_made(&c, &own, &uids).await;
    assert_no_violations(&v);
    assert!(provisions(&addr, "ceph_denied") >= pending.len() as u64);

    // The fix exactly as the event words it, run the way an operator pastes it.
    let out = Command::new("bash")
        .args(["-c", &fix])
        .env("CEPH_CONF", c.bed.dir.join("ceph/ceph.conf"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{fix}: {out:?}");
    let all: Vec<String> = first.iter().chain(&pending).cloned().collect();
    let took = all_provisioned(&c, &all, T)
        .await
        .unwrap_or_else(|left| panic!("with the caps back, not provisioned: {left:?}"));
    let v = exactly_once(&c, &own, &all).await;
    assert_no_violations(&v);
    report(&format!(
        "ceph_faults caps revoked: {} claims refused, provisioned {:.1}s after the caps were restored, test {:.0}s",
        pending.len(),
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
}

/// The provisioner's client blocklisted in the middle of a burst (by its address, as the
/// monitors' sessions show it): the provisioner drops it on the first ESHUTDOWN, connects a
/// fresh client, and every claim of the burst is provisioned exactly once with nothing
/// half-made. The maximum age is the default: the blocklisting itself must be noticed.
#[tokio::test]
async fn client_blocklisted_during_a_burst() {
    let started = Instant::now();
    let (c, _addr, mut own, class) = scenario("cfblock", None).await;
    let first = provisioned_first(&c, &class, names("first", 1)).await;
    let before = own.sessions();
    assert!(
        !before.is_empty(),
        "no monitor session of {} after a claim was provisioned",
        own.client()
    );

    // The client is blocklisted while the first half of the burst is being made, whatever of
    // it is done by then (the race is the point; its outcome is reported); the second half
    // comes after, so the cached (blocklisted) client is
    // certainly asked again: a burst that finished before the blocklisting took effect would
    // prove nothing.
    let first_half = names("burst-a", 4);
    let second_half = names("burst-b", 4);
    let creating = burst(&c.admin, &c.ns, &class, &first_half, Duration::ZERO);
    for a in &before {
        own.blocklist(a);
    }
    let blocked = Instant::now();
    let waiting = all_provisioned(&c, &first_half, Duration::ZERO)
        .await
        .err()
        .map_or(0, |left| left.len());
    creating.await.unwrap();
    // The OSD learns of the blocklisting from the next OSD map; give it that.
    tokio::time::sleep(Duration::from_secs(1)).await;
    claims(&c, &class, &second_half).await;
    let burst_names: Vec<String> = first_half.iter().chain(&second_half).cloned().collect();
    let all: Vec<String> = first.iter().chain(&burst_names).cloned().collect();
    all_provisioned(&c, &all, T)
        .await
        .unwrap_or_else(|left| panic!("after the blocklisting, not provisioned: {left:?}"));
    let took = blocked.elapsed();
    let v = exactly_once(&c, &own, &all).await;
    assert_no_violations(&v);
    // The blocklisted client was seen and dropped, and a new one serves.
    let logs = strip_ansi(&c.prov.logs());
    assert!(
        logs.lines()
            .any(|l| l.contains("dropping this Ceph client") && l.contains("ESHUTDOWN")),
        "the provisioner never dropped its blocklisted client"
    );
    let after = own.sessions();
    assert!(
        after.iter().any(|a| !before.contains(a)),
        "sessions before {before:?}, after {after:?}: no fresh client"
    );
    report(&format!(
        "ceph_faults blocklist: {waiting} of {} claims not yet provisioned when the client was blocklisted, {} more after it; all {} provisioned {:.1}s later, test {:.0}s",
        first_half.len(),
        second_half.len(),
        all.len(),
        took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
}
