//! Fault injection on the real bed: the provisioner is killed (`kill -9`) at random moments
//! while it creates and deletes bursts of claims, and a leader is killed in the middle of a
//! burst while a standby waits. After each scenario the invariants are checked with the API
//! server and the `rbd` CLI (not the code under test), and every violation is listed.
//!
//! Seeded and reproducible: the seed is printed; `RBDP_FAULT_SEED=<seed>` replays it.
//! `RBDP_FAULT_FULL=1` runs the full sizes (100 claims, 20+ kills) instead of the quick ones
//! `hack/test.sh` runs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

/// xorshift64*: small, seedable, good enough to pick moments and counts.
struct Rng(u64);

impl Rng {
    fn from_env(test: &str) -> Rng {
        let seed = std::env::var("RBDP_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("{test}: fault seed {seed} (replay with RBDP_FAULT_SEED={seed})");
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

fn full() -> bool {
    std::env::var_os("RBDP_FAULT_FULL").is_some()
}

fn rbd_ls(bed: &Bed, pool: &str) -> BTreeSet<String> {
    let out = Command::new("rbd")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(["ls", pool])
        .output()
        .expect("run rbd");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn rbd_trash(bed: &Bed, pool: &str) -> BTreeSet<String> {
    let out = Command::new("rbd")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(["trash", "ls", pool])
        .output()
        .expect("run rbd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, n)| n.trim().to_string()))
        .collect()
}

/// A log line without its terminal colour codes.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// Images created anew, per image, across the logs of every process that ran.
fn creations(logs: &[String]) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for line in logs.iter().flat_map(|l| l.lines()).map(plain) {
        if line.contains("rbd_create4")
            && line.contains("r=Ok(New)")
            && let Some(image) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("image="))
        {
            *n.entry(image.to_string()).or_insert(0) += 1;
        }
    }
    n
}

/// The invariants after a burst that should have left every claim Bound.
async fn check_bound(c: &Scenario, names: &[String], logs: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    let images = rbd_ls(&c.bed, "kube");
    let created = creations(logs);
    for name in names {
        let Some(claim) = c.pvcs().get_opt(name).await.unwrap() else {
            v.push(format!("claim {name} is gone"));
            continue;
        };
        let uid = uid_of(&claim);
        let phase = claim.status.as_ref().and_then(|s| s.phase.clone());
        let volume = claim.spec.as_ref().and_then(|s| s.volume_name.clone());
        if phase.as_deref() != Some("Bound") || volume != Some(format!("pvc-{uid}")) {
            v.push(format!(
                "claim {name}: {phase:?} to {volume:?}, not Bound to pvc-{uid}"
            ));
        }
        let image = format!("kubernetes-dynamic-pvc-{uid}");
        if !images.contains(&image) {
            v.push(format!("claim {name}: its image {image} does not exist"));
        }
        // A process killed right after rbd_create4 returned may not have logged it (the
        // next one adopts the image), so "once" is "at most once" in the logs.
        if let Some(n) = created.get(&image).filter(|n| **n > 1) {
            v.push(format!("claim {name}: image created {n} times"));
        }
    }
    v
}

/// The invariants after the claims were deleted: no PV, no image, nothing of ours left in
/// the trash once the purge has had its time. A process killed while it had an image open
/// leaves a watch that Ceph drops only after `osd_client_watch_timeout` (30 s), and until
/// then the image can be neither deleted nor purged: hence two minutes.
async fn check_gone(c: &Scenario, uids: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        v.clear();
        let images = rbd_ls(&c.bed, "kube");
        let trash = rbd_trash(&c.bed, "kube");
        for uid in uids {
            let image = format!("kubernetes-dynamic-pvc-{uid}");
            if c.pvs()
                .get_opt(&format!("pvc-{uid}"))
                .await
                .unwrap()
                .is_some()
            {
                v.push(format!("PV pvc-{uid} still exists"));
            }
            if images.contains(&image) {
                v.push(format!("image {image} still exists"));
            }
            if trash.contains(&image) {
                v.push(format!("image {image} still in the trash"));
            }
        }
        if v.is_empty() || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn healthz(addr: &str) -> bool {
    Command::new("curl")
        .args(["-fsS", &format!("http://{addr}/healthz")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// Scenario 1: `kill -9` at random moments during a create burst and a delete burst, the
/// provisioner restarted each time; nothing lost, nothing doubled, nothing leaked.
#[tokio::test]
async fn kill_9_during_create_and_delete_bursts() {
    let mut rng = Rng::from_env("kill_9_during_create_and_delete_bursts");
    let (claims, kills) = if full() { (100, 12) } else { (16, 3) };
    let name = format!("{}.test/rbd", unique("kill"));
    let addr = free_addr();
    let env = [
        ("LEADER_ELECT", "false"),
        ("MAINTENANCE_INTERVAL", "2"),
        ("ORPHAN_GRACE", "1"),
    ];
    let args = ["--http-endpoint", addr.as_str()];
    let mut c = Scenario::serving("kill", &name, &env).await;
    c.prov = Provisioner::start_with(&c.bed, &name, &env, &args, None).await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    let mut logs = Vec::new();
    let started = Instant::now();

    let names: Vec<String> = (0..claims).map(|i| format!("c-{i}")).collect();
    let creating = {
        let (admin, ns, class, names) =
            (c.admin.clone(), c.ns.clone(), class.clone(), names.clone());
        tokio::spawn(async move {
            for n in &names {
                claim(
                    &admin,
                    &ns,
                    n,
                    &class,
                    "64Mi",
                    &["ReadWriteOnce"],
                    json!({}),
                )
                .await;
            }
        })
    };
    for _ in 0..kills {
        tokio::time::sleep(rng.millis(100, 1500)).await;
        c.prov.crash();
        logs.push(c.prov.logs());
        c.prov = Provisioner::start_with(&c.bed, &name, &env, &args, None).await;
    }
    creating.await.unwrap();
    for n in &names {
        wait_bound(&c.admin, &c.ns, n, Duration::from_secs(120)).await;
    }
    let bound_after = started.elapsed();
    logs.push(c.prov.logs());
    let mut violations = check_bound(&c, &names, &logs).await;

    let uids: Vec<String> = {
        let list = Api::<PersistentVolumeClaim>::namespaced(c.admin.clone(), &c.ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        list.items.iter().map(uid_of).collect()
    };
    let deleting = {
        let (pvcs, names) = (c.pvcs(), names.clone());
        tokio::spawn(async move {
            for n in &names {
                let _ = pvcs.delete(n, &DeleteParams::default()).await;
            }
        })
    };
    for _ in 0..kills {
        tokio::time::sleep(rng.millis(100, 1500)).await;
        c.prov.crash();
        logs.push(c.prov.logs());
        c.prov = Provisioner::start_with(&c.bed, &name, &env, &args, None).await;
    }
    deleting.await.unwrap();
    let deleting_from = Instant::now();
    violations.extend(check_gone(&c, &uids).await);
    let recovered = deleting_from.elapsed();
    wait_for(
        "/healthz after the last restart",
        Duration::from_secs(30),
        || async { healthz(&addr).then_some(()) },
    )
    .await;
    println!(
        "kill -9 x{}: {claims} claims all Bound {bound_after:?} after the first; after the last delete request, everything gone in {recovered:?}; total {:?}",
        2 * kills,
        started.elapsed()
    );
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );
}

/// Scenario 5: two replicas; the leader is killed with `kill -9` in the middle of a burst.
/// The standby takes over within the lease duration and no claim is provisioned twice.
#[tokio::test]
async fn leader_killed_mid_burst_standby_takes_over() {
    let mut rng = Rng::from_env("leader_killed_mid_burst_standby_takes_over");
    let claims = if full() { 100 } else { 12 };
    let name = format!("{}.test/rbd", unique("failover"));
    let lease = [
        "--leader-election-lease-duration",
        "4s",
        "--leader-election-renew-deadline",
        "3s",
        "--leader-election-retry-period",
        "500ms",
    ];
    let mut c = Scenario::serving("failover", &name, &[]).await;
    // The scenario's own replica (default lease) makes way for two with a short lease.
    c.prov = Provisioner::start_with(&c.bed, &name, &[], &lease, None).await;
    let class = c
        .class("delete", &[], json!({"reclaimPolicy": "Delete"}))
        .await;
    wait_for("a leader", Duration::from_secs(30), || async {
        c.prov.logs().contains("became leader").then_some(())
    })
    .await;
    let second = Provisioner::start_with(&c.bed, &name, &[], &lease, None).await;
    wait_for("the standby waiting", Duration::from_secs(30), || async {
        second
            .logs()
            .contains("another replica leads")
            .then_some(())
    })
    .await;

    let names: Vec<String> = (0..claims).map(|i| format!("c-{i}")).collect();
    let creating = {
        let (admin, ns, class, names) =
            (c.admin.clone(), c.ns.clone(), class.clone(), names.clone());
        tokio::spawn(async move {
            for n in &names {
                claim(
                    &admin,
                    &ns,
                    n,
                    &class,
                    "64Mi",
                    &["ReadWriteOnce"],
                    json!({}),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    tokio::time::sleep(rng.millis(100, 600)).await;
    let killed = Instant::now();
    c.prov.crash();
    wait_for("the standby leading", Duration::from_secs(10), || async {
        second.logs().contains("became leader").then_some(())
    })
    .await;
    let takeover = killed.elapsed();
    creating.await.unwrap();
    for n in &names {
        wait_bound(&c.admin, &c.ns, n, Duration::from_secs(60)).await;
    }
    let logs = vec![c.prov.logs(), second.logs()];
    let mut violations = check_bound(&c, &names, &logs).await;
    if takeover > Duration::from_secs(4) + Duration::from_millis(1500) {
        violations.push(format!(
            "the standby took over after {takeover:?}, lease is 4 s"
        ));
    }
    println!(
        "leader kill -9: standby led after {takeover:?}; {claims} claims Bound, each created once"
    );
    for n in &names {
        let _ = c.pvcs().delete(n, &DeleteParams::default()).await;
    }
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );
}
