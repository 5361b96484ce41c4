//! Faults on the Ceph side, on the real bed: a pool's quota reached during a burst, the admin
//! key rotated, the admin user's caps revoked, and the provisioner's client blocklisted. Each
//! scenario has a pool and a Ceph user of its own (made with the `ceph` CLI, removed at the
//! end; client.admin, which the bed and the other tests use, is never touched), checks the
//! event the claims get, and checks with the `rbd` and `rados` CLIs (not the code under test)
//! that nothing was left half-made and that, once the fault is mended, every claim is
//! provisioned exactly once.

use testbed as common;
use testbed::harness;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use harness::*;
use kube::api::ListParams;
use serde_json::json;

/// Long enough for a claim to be retried a few times (retries are at most 2 s apart here).
const T: Duration = Duration::from_secs(90);
/// What the scenarios give `--ceph-client-max-age`, in seconds, where the cached client must
/// be re-authenticated to see the fault.
const MAX_AGE: u64 = 4;

/// `ceph -c <bed conf> <args>`; panics with its stderr when it fails.
fn ceph(bed: &Bed, args: &[&str]) -> String {
    let out = ceph_try(bed, args);
    assert!(
        out.status.success(),
        "ceph {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ceph_try(bed: &Bed, args: &[&str]) -> std::process::Output {
    Command::new("timeout")
        .arg("60")
        .arg("ceph")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(args)
        .output()
        .expect("run the ceph CLI")
}

/// A pool (initialised for RBD) and a Ceph user whose caps allow RBD on it alone, both
/// removed when dropped, with the blocklist entries a scenario added.
struct OwnCeph {
    bed: Bed,
    pool: String,
    /// Without "client.".
    user: String,
    blocklisted: Vec<String>,
}

impl OwnCeph {
    fn new(bed: &Bed, prefix: &str) -> OwnCeph {
        let pool = unique(prefix);
        ceph(bed, &["osd", "pool", "create", &pool, "8"]);
        let own = OwnCeph {
            bed: bed.clone(),
            user: pool.clone(),
            pool,
            blocklisted: Vec::new(),
        };
        let out = Command::new("rbd")
            .arg("-c")
            .arg(bed.dir.join("ceph/ceph.conf"))
            .args(["pool", "init", &own.pool])
            .output()
            .expect("run rbd");
        assert!(out.status.success(), "rbd pool init: {out:?}");
        own.grant();
        own
    }

    fn client(&self) -> String {
        format!("client.{}", self.user)
    }

    /// Creates the user (with a new key) or gives it back its caps.
    fn grant(&self) {
        let osd = format!("profile rbd pool={}", self.pool);
        let args = ["mon", "profile rbd", "osd", osd.as_str()];
        if ceph_try(&self.bed, &["auth", "get", &self.client()])
            .status
            .success()
        {
            ceph(
                &self.bed,
                &[&["auth", "caps", &self.client()][..], &args].concat(),
            );
        } else {
            ceph(
                &self.bed,
                &[&["auth", "get-or-create", &self.client()][..], &args].concat(),
            );
        }
    }

    fn key(&self) -> String {
        ceph(&self.bed, &["auth", "get-key", &self.client()])
            .trim()
            .to_string()
    }

    /// The admin Secret of the class, holding the user's current key.
    async fn secret(&self, s: &Stage) -> String {
        let name = format!("{}-own-admin", s.ns);
        key_secret(&s.admin, "kube-system", &name, &self.key()).await;
        name
    }

    /// A class of `s`'s provisioner on this pool, as this user.
    async fn class(&self, s: &Stage) -> String {
        let secret = self.secret(s).await;
        s.class(
            "own",
            &[
                ("pool", &self.pool),
                ("adminId", &self.user),
                ("adminSecretName", &secret),
            ],
            json!({"reclaimPolicy": "Delete"}),
        )
        .await
    }

    /// The pool's flags as the OSD map has them (`full_quota` once a quota is reached).
    fn flags(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&ceph(
            &self.bed,
            &["osd", "pool", "ls", "detail", "--format", "json"],
        ))
        .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .find(|p| p["pool_name"] == self.pool.as_str())
            .and_then(|p| p["flags_names"].as_str().map(String::from))
            .unwrap_or_default()
    }

    /// The addresses (`ip:port/nonce`) of the clients of this user the monitors have
    /// sessions with: one per connected librados client.
    fn sessions(&self) -> Vec<String> {
        let mons: serde_json::Value =
            serde_json::from_str(&ceph(&self.bed, &["mon", "dump", "--format", "json"])).unwrap();
        let mut addrs = Vec::new();
        for m in mons["mons"].as_array().unwrap() {
            let target = format!("mon.{}", m["name"].as_str().unwrap());
            let s: serde_json::Value = serde_json::from_str(&ceph(
                &self.bed,
                &["tell", &target, "sessions", "--format", "json"],
            ))
            .unwrap();
            for session in s.as_array().unwrap() {
                if session["entity_name"] != self.client().as_str() {
                    continue;
                }
                for a in session["addrs"]["addrvec"].as_array().unwrap() {
                    addrs.push(format!(
                        "{}/{}",
                        a["addr"].as_str().unwrap(),
                        a["nonce"].as_u64().unwrap()
                    ));
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        addrs
    }

    fn blocklist(&mut self, addr: &str) {
        ceph(&self.bed, &["osd", "blocklist", "add", addr]);
        self.blocklisted.push(addr.to_string());
    }

    /// RBD's objects in the pool (`rados ls`), to find what `rbd ls` would not show: an image
    /// id or header whose directory entry was never written.
    fn objects(&self) -> BTreeSet<String> {
        let out = Command::new("rados")
            .arg("-c")
            .arg(self.bed.dir.join("ceph/ceph.conf"))
            .args(["-p", &self.pool, "ls"])
            .output()
            .expect("run rados");
        assert!(out.status.success(), "rados ls: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for OwnCeph {
    fn drop(&mut self) {
        for a in &self.blocklisted {
            let _ = ceph_try(&self.bed, &["osd", "blocklist", "rm", a]);
        }
        let p = self.pool.as_str();
        let _ = ceph_try(
            &self.bed,
            &["osd", "pool", "rm", p, p, "--yes-i-really-really-mean-it"],
        );
        let _ = ceph_try(&self.bed, &["auth", "del", &self.client()]);
    }
}

/// A provisioner that retries within 2 s, with a metrics endpoint, on a stage of its own.
async fn scenario(prefix: &str, max_age: Option<u64>) -> (Scenario, String) {
    let name = format!("{}.test/rbd", unique(prefix));
    let addr = free_addr();
    let max_age = max_age.map(|s| s.to_string());
    let mut env = vec![("LEADER_ELECT", "false"), ("RETRY_INTERVAL_MAX", "2s")];
    if let Some(a) = &max_age {
        env.push(("CEPH_CLIENT_MAX_AGE", a));
    }
    let mut c = Scenario::serving(prefix, &name, &env).await;
    c.prov = Provisioner::start_with(&c.bed, &name, &env, &["--http-endpoint", &addr], None).await;
    (c, addr)
}

/// `rbd_provisioner_operations_total` of provisioning with this result.
fn provisions(addr: &str, result: &str) -> u64 {
    let out = Command::new("curl")
        .args(["-fsS", "--max-time", "5", &format!("http://{addr}/metrics")])
        .output()
        .expect("run curl");
    let want =
        format!("rbd_provisioner_operations_total{{operation=\"provision\",result=\"{result}\"}} ");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Creates the claims `names` at once; returns their uids in order.
async fn claims(c: &Scenario, class: &str, names: &[String]) -> Vec<String> {
    let made = burst(&c.admin, &c.ns, class, names, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(made.len(), names.len());
    let mut uids = Vec::new();
    for n in names {
        uids.push(uid_of(&c.pvcs().get(n).await.unwrap()));
    }
    uids
}

/// While a fault lasts: no claim of `uids` has a PV, and the pool holds no image of theirs,
/// whole or in part (an id, a header or a directory entry).
async fn nothing_made(c: &Scenario, own: &OwnCeph, uids: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    let objects = own.objects();
    let imgs = images(&c.bed, &own.pool);
    for uid in uids {
        if c.pvs()
            .get_opt(&format!("pvc-{uid}"))
            .await
            .unwrap()
            .is_some()
        {
            v.push(format!("PV pvc-{uid} exists while the fault lasts"));
        }
        let image = format!("kubernetes-dynamic-pvc-{uid}");
        if imgs.contains(&image) {
            v.push(format!("image {image} exists while the fault lasts"));
        }
        if objects.contains(&format!("rbd_id.{image}")) {
            v.push(format!("rbd_id.{image} exists while the fault lasts"));
        }
    }
    v
}

/// Once the fault is mended and every claim of `names` is Bound: the pool holds exactly one
/// image per claim, each stamped with its claim and named by its PV, no other image, no
/// header or id without its image, nothing in the trash, and no image created twice.
async fn exactly_once(c: &Scenario, own: &OwnCeph, names: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    let imgs = images(&c.bed, &own.pool);
    let mut want = BTreeSet::new();
    for n in names {
        let claim = c.pvcs().get(n).await.unwrap();
        let uid = uid_of(&claim);
        let volume = claim.spec.as_ref().and_then(|s| s.volume_name.clone());
        if volume.as_deref() != Some(format!("pvc-{uid}").as_str()) {
            v.push(format!("claim {n} bound to {volume:?}, not pvc-{uid}"));
        }
        let image = format!("kubernetes-dynamic-pvc-{uid}");
        let pv = c.pvs().get(&format!("pvc-{uid}")).await.unwrap();
        match domain::reclaim::spec_image(&pv) {
            Some((pool, i)) if pool == own.pool && i == image => {}
            other => v.push(format!(
                "PV pvc-{uid} names {other:?}, not {}/{image}",
                own.pool
            )),
        }
        let stamp = Command::new("rbd")
            .arg("-c")
            .arg(c.bed.dir.join("ceph/ceph.conf"))
            .args([
                "image-meta",
                "get",
                &format!("{}/{image}", own.pool),
                "rbd-provisioner.ceph.com/claim",
            ])
            .output()
            .unwrap();
        let stamped = String::from_utf8_lossy(&stamp.stdout).trim().to_string();
        if stamped != format!("{}/{n}", c.ns) {
            v.push(format!(
                "image {image} stamped {stamped:?}, not {}/{n}",
                c.ns
            ));
        }
        want.insert(image);
    }
    if imgs != want {
        v.push(format!(
            "pool {} holds {} images, {} claims: extra {:?}, missing {:?}",
            own.pool,
            imgs.len(),
            want.len(),
            imgs.difference(&want).collect::<Vec<_>>(),
            want.difference(&imgs).collect::<Vec<_>>()
        ));
    }
    let objects = own.objects();
    let ids = objects.iter().filter(|o| o.starts_with("rbd_id.")).count();
    let headers = objects
        .iter()
        .filter(|o| o.starts_with("rbd_header."))
        .count();
    if ids != want.len() || headers != want.len() {
        v.push(format!(
            "pool {} has {ids} image ids and {headers} headers for {} images",
            own.pool,
            want.len()
        ));
    }
    let trashed = trash(&c.bed, &own.pool);
    if !trashed.is_empty() {
        v.push(format!("trash of {} holds {trashed:?}", own.pool));
    }
    let created = creations(&[c.prov.logs()]);
    for image in &want {
        match created.get(image) {
            Some(1) => {}
            n => v.push(format!("image {image} created {n:?} times by the log")),
        }
    }
    v
}

/// Waits for each claim's ProvisioningFailed event with every needle; returns one note.
async fn failed_with(c: &Scenario, uids: &[String], needles: &[&str]) -> String {
    let mut note = String::new();
    for uid in uids {
        let e = wait_event(&c.admin, &c.ns, uid, "ProvisioningFailed", needles, T).await;
        note = e.note.unwrap_or_default();
    }
    note
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// A pool's quota reached in the middle of a burst: the claims after it fail with an event
/// naming the pool, the quota and the command that lifts it, nothing of theirs is made, and
/// once the quota is lifted every claim of the burst is provisioned exactly once.
#[tokio::test]
async fn pool_quota_reached_during_a_burst() {
    let started = Instant::now();
    let (c, addr) = scenario("cfquota", None).await;
    let own = OwnCeph::new(&c.bed, "cfquota");
    let class = own.class(&c).await;
    let before = names("before", 3);
    claims(&c, &class, &before).await;
    all_provisioned(&c, &before, T)
        .await
        .unwrap_or_else(|left| panic!("before the quota, not provisioned: {left:?}"));

    // Already exceeded (the pool holds more than one object): reached at the next statistics.
    ceph(
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
    assert!(v.is_empty(), "{}", v.join("\n"));
    let failed = provisions(&addr, "pool_full");
    assert!(
        failed >= after.len() as u64,
        "{failed} provisioning failures counted as pool_full, for {} claims",
        after.len()
    );

    ceph(
        &c.bed,
        &["osd", "pool", "set-quota", &own.pool, "max_objects", "0"],
    );
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    let took = all_provisioned(&c, &all, T)
        .await
        .unwrap_or_else(|left| panic!("after the quota was lifted, not provisioned: {left:?}"));
    let v = exactly_once(&c, &own, &all).await;
    assert!(v.is_empty(), "{}", v.join("\n"));
    assert_eq!(provisions(&addr, "success"), all.len() as u64);
    report(&format!(
        "ceph_faults quota: {} claims refused while the quota held, provisioned {:.1}s after it was lifted, test {:.0}s",
        after.len(),
        took.as_secs_f64(),
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
    let (c, addr) = scenario("cfkey", Some(MAX_AGE)).await;
    let own = OwnCeph::new(&c.bed, "cfkey");
    let class = own.class(&c).await;
    let old_key = own.key();
    let first = names("first", 1);
    claims(&c, &class, &first).await;
    all_provisioned(&c, &first, T).await.unwrap();

    ceph(&c.bed, &["auth", "del", &own.client()]);
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
    assert!(v.is_empty(), "{}", v.join("\n"));
    assert!(provisions(&addr, "ceph_auth") >= pending.len() as u64);

    // The old key no longer works anywhere: whatever provisions now uses the new one.
    own.secret(&c).await;
    let all: Vec<String> = first.iter().chain(&pending).cloned().collect();
    let took = all_provisioned(&c, &all, T)
        .await
        .unwrap_or_else(|left| panic!("with the new key, not provisioned: {left:?}"));
    let v = exactly_once(&c, &own, &all).await;
    assert!(v.is_empty(), "{}", v.join("\n"));
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

async fn events_text(c: &Scenario) -> String {
    let api = kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(c.admin.clone(), &c.ns);
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|e| e.note.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The admin user's caps revoked while claims wait: an event says permission denied for that
/// user and pool, with the command that gives the caps back; nothing is made; the command as
/// the event prints it mends it, and every claim is then provisioned exactly once.
#[tokio::test]
async fn caps_revoked_while_claims_wait() {
    let started = Instant::now();
    let (c, addr) = scenario("cfcaps", Some(MAX_AGE)).await;
    let own = OwnCeph::new(&c.bed, "cfcaps");
    let class = own.class(&c).await;
    let first = names("first", 1);
    claims(&c, &class, &first).await;
    all_provisioned(&c, &first, T).await.unwrap();

    ceph(&c.bed, &["auth", "caps", &own.client(), "mon", "allow r"]);
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
    assert!(v.is_empty(), "{}", v.join("\n"));
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
    assert!(v.is_empty(), "{}", v.join("\n"));
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
    let (c, _addr) = scenario("cfblock", None).await;
    let mut own = OwnCeph::new(&c.bed, "cfblock");
    let class = own.class(&c).await;
    let first = names("first", 1);
    claims(&c, &class, &first).await;
    all_provisioned(&c, &first, T).await.unwrap();
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
    assert!(v.is_empty(), "{}", v.join("\n"));
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
