//! The fault harness shared by `faults.rs`, `outages.rs` and `soak.rs`: a seeded random
//! source, bursts of claims, the invariant checks (made with the API server and the `rbd` CLI,
//! not the code under test), a bed of the harness's own for the scenarios that stop daemons,
//! and the control of those daemons.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::{Bed, Scenario, uid_of};

mod witness;
#[allow(unused_imports)]
pub use witness::*;

/// xorshift64*: small, seedable, good enough to pick moments and counts.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `RBDP_FAULT_SEED`, or the clock; the seed is printed either way.
    pub fn from_env(test: &str) -> Rng {
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

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next_u64() % (hi - lo + 1))
    }
}

/// Full sizes (`RBDP_FAULT_FULL=1`) rather than the quick ones the suite runs.
pub fn full() -> bool {
    std::env::var_os("RBDP_FAULT_FULL").is_some()
}

fn rbd(bed: &Bed, args: &[&str]) -> std::process::Output {
    Command::new("rbd")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(args)
        .output()
        .expect("run rbd")
}

/// Images in a pool, by the `rbd` CLI.
pub fn images(bed: &Bed, pool: &str) -> BTreeSet<String> {
    let out = rbd(bed, &["ls", pool]);
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

/// Names of the trash entries of a pool (all sources), by the `rbd` CLI.
pub fn trash(bed: &Bed, pool: &str) -> BTreeSet<String> {
    let out = rbd(bed, &["trash", "ls", "--all", pool]);
    // A failed listing must not read as an empty trash.
    assert!(
        out.status.success(),
        "rbd trash ls --all {pool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, n)| n.trim().to_string()))
        .collect()
}

/// A log line without its terminal colour codes.
pub fn plain(line: &str) -> String {
    crate::strip_ansi(line)
}

/// Images created anew, per image, across the logs of every process that ran.
pub fn creations(logs: &[String]) -> BTreeMap<String, usize> {
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

/// Creates a claim, retrying through an API outage (a 409 means an earlier attempt got
/// through). Returns its uid.
pub async fn create_claim(client: &Client, ns: &str, name: &str, class: &str) -> String {
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let body: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "resources": {"requests": {"storage": "64Mi"}}}
    }))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match api.create(&PostParams::default(), &body).await {
            Ok(c) => return uid_of(&c),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                if let Ok(Some(c)) = api.get_opt(name).await {
                    return uid_of(&c);
                }
            }
            Err(e) => assert!(Instant::now() < deadline, "creating claim {ns}/{name}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Deletes a claim, retrying through an API outage; a 404 is success.
pub async fn delete_claim(client: &Client, ns: &str, name: &str) {
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match api.delete(name, &Default::default()).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => assert!(Instant::now() < deadline, "deleting claim {ns}/{name}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Creates `names` one after the other, `gap` apart, in the background.
pub fn burst(
    client: &Client,
    ns: &str,
    class: &str,
    names: &[String],
    gap: Duration,
) -> tokio::task::JoinHandle<Vec<(String, Instant)>> {
    let (client, ns, class, names) = (
        client.clone(),
        ns.to_string(),
        class.to_string(),
        names.to_vec(),
    );
    tokio::spawn(async move {
        let mut made = Vec::new();
        for n in &names {
            create_claim(&client, &ns, n, &class).await;
            made.push((n.clone(), Instant::now()));
            tokio::time::sleep(gap).await;
        }
        made
    })
}

/// The claims of `names` not yet Bound (reads through API errors: they count as not Bound).
pub async fn unbound(client: &Client, ns: &str, names: &[String]) -> Vec<String> {
    let Ok(list) = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    else {
        return names.to_vec();
    };
    let bound: BTreeSet<String> = list
        .items
        .iter()
        .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    names
        .iter()
        .filter(|n| !bound.contains(*n))
        .cloned()
        .collect()
}

/// Waits until every claim of `names` is Bound; returns how long that took, or the list of
/// those still unbound at the deadline.
pub async fn all_bound(
    client: &Client,
    ns: &str,
    names: &[String],
    timeout: Duration,
) -> Result<Duration, Vec<String>> {
    let start = Instant::now();
    loop {
        let left = unbound(client, ns, names).await;
        if left.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(left);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until every claim of `names` has its PV (the provisioner's part; binding is then
/// kube-controller-manager's, at about 5 claims/s); returns how long that took.
pub async fn all_provisioned(
    c: &Scenario,
    names: &[String],
    timeout: Duration,
) -> Result<Duration, Vec<String>> {
    let start = Instant::now();
    loop {
        let mut left = Vec::new();
        if let Ok(list) = c.pvcs().list(&ListParams::default()).await {
            let pvs: BTreeSet<String> = c
                .pvs()
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .filter_map(|p| p.metadata.name.clone())
                        .collect()
                })
                .unwrap_or_default();
            for n in names {
                match list
                    .items
                    .iter()
                    .find(|p| p.metadata.name.as_deref() == Some(n))
                {
                    Some(p) if pvs.contains(&format!("pvc-{}", uid_of(p))) => {}
                    _ => left.push(n.clone()),
                }
            }
        } else {
            left = names.to_vec();
        }
        if left.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(left);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The invariants after a burst that should have left every claim Bound: Bound to the PV
/// named after its uid, whose image exists, created at most once (by the logs).
pub async fn check_bound(c: &Scenario, names: &[String], logs: &[String]) -> Vec<String> {
    let mut v = Vec::new();
    let imgs = images(&c.bed, "kube");
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
        if !imgs.contains(&image) {
            v.push(format!("claim {name}: its image {image} does not exist"));
        }
        // A process killed right after rbd_create4 returned may not have logged it (the
        // next one adopts the image), so "once" is "at most once" in the logs.
        if let Some(n) = created.get(&image).filter(|n| **n > 1) {
            v.push(format!("claim {name}: image created {n} times"));
        }
    }
    v.extend(check_consistent(c).await);
    v
}

/// Across the whole pool and every PV of this scenario's provisioner: no PV of ours names a
/// missing image, and no image made for this scenario's namespace exists without a PV.
pub async fn check_consistent(c: &Scenario) -> Vec<String> {
    let mut v = Vec::new();
    let imgs = images(&c.bed, "kube");
    let pvs = c.pvs().list(&ListParams::default()).await.unwrap();
    let mut named = BTreeSet::new();
    for pv in &pvs.items {
        let ours = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
            == Some(&c.name);
        if !ours {
            continue;
        }
        // spec.rbd's image or, for csi PVs (the default on Kubernetes >= 1.31), the volumeHandle.
        let Some((_, image)) = domain::reclaim::spec_image(pv) else {
            continue;
        };
        if pv.metadata.deletion_timestamp.is_none() && !imgs.contains(&image) {
            v.push(format!(
                "PV {} names image {image}, which does not exist",
                pv.metadata.name.as_deref().unwrap_or("")
            ));
        }
        named.insert(image);
    }
    for image in imgs.iter().filter(|i| !named.contains(*i)) {
        if stamped_namespace(&c.bed, image).as_deref() == Some(c.ns.as_str()) {
            v.push(format!("image {image} of this scenario has no PV"));
        }
    }
    v
}

/// The namespace of the claim an image was made for, from its stamp (read with the CLI).
pub fn stamped_namespace(bed: &Bed, image: &str) -> Option<String> {
    let out = rbd(
        bed,
        &[
            "image-meta",
            "get",
            &format!("kube/{image}"),
            "rbd-provisioner.ceph.com/claim",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    out.status
        .success()
        .then(|| text.trim().split_once('/').map(|(ns, _)| ns.to_string()))
        .flatten()
}

/// The invariants after the claims were deleted: no PV, no image, nothing left in the trash
/// once the purge has had its time (`within`). Returns the violations and how long it took.
pub async fn check_gone(
    c: &Scenario,
    uids: &[String],
    within: Duration,
) -> (Vec<String>, Duration) {
    let start = Instant::now();
    let mut v = Vec::new();
    loop {
        v.clear();
        let imgs = images(&c.bed, "kube");
        let trashed = trash(&c.bed, "kube");
        for uid in uids {
            let image = format!("kubernetes-dynamic-pvc-{uid}");
            match c.pvs().get_opt(&format!("pvc-{uid}")).await {
                Ok(Some(_)) => v.push(format!("PV pvc-{uid} still exists")),
                Ok(None) => {}
                Err(e) => v.push(format!("PV pvc-{uid}: {e}")),
            }
            if imgs.contains(&image) {
                v.push(format!("image {image} still exists"));
            }
            if trashed.contains(&image) {
                v.push(format!("image {image} still in the trash"));
            }
        }
        if v.is_empty() || start.elapsed() > within {
            return (v, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Deletes every claim of `c`'s namespace (those in `names`), then [`check_gone`] with three
/// minutes for the purge (63 s seen after a kube-apiserver outage, most of it
/// kube-controller-manager relisting before it marks the PVs Released); adds what stayed
/// behind to `v` and returns how long it took.
pub async fn delete_all_and_check(c: &Scenario, names: &[String], v: &mut Vec<String>) -> Duration {
    let uids = uids(&c.admin, &c.ns).await;
    for n in names {
        delete_claim(&c.admin, &c.ns, n).await;
    }
    let (gone, took) = check_gone(c, &uids, Duration::from_secs(180)).await;
    v.extend(gone);
    took
}

/// A scenario's verdict: its violations, one per line.
pub fn verdict(v: Vec<String>) -> Result<(), String> {
    if v.is_empty() {
        Ok(())
    } else {
        Err(v.join("\n"))
    }
}

/// The uids of the claims in a namespace.
pub async fn uids(client: &Client, ns: &str) -> Vec<String> {
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(uid_of)
        .collect()
}

pub fn healthz(addr: &str) -> bool {
    Command::new("curl")
        .args(["-fsS", "--max-time", "3", &format!("http://{addr}/healthz")])
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", l.local_addr().unwrap().port())
}

/// p50 and max of some durations, in seconds.
pub fn p50_max(mut d: Vec<Duration>) -> (f64, f64) {
    if d.is_empty() {
        return (0.0, 0.0);
    }
    d.sort();
    (d[d.len() / 2].as_secs_f64(), d[d.len() - 1].as_secs_f64())
}

/// Appends one line of figures to `$RBDP_FAULT_REPORT` (when set), for RELIABILITY.md.
pub fn report(line: &str) {
    println!("FIGURES {line}");
    if let Some(path) = std::env::var_os("RBDP_FAULT_REPORT") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

// ------------------------------------------------------------------ a bed of our own

/// A bed started by `hack/bed-up.sh` in a fresh directory (free ports, the control plane the
/// environment selects, as for any bed), stopped and purged by `hack/bed-down.sh --purge`
/// when dropped. Scenarios that stop Ceph daemons or the API server run here, never on the
/// shared bed.
pub struct OwnBed {
    pub dir: PathBuf,
    /// What `RBDP_BED` must name for the tests: the bed itself, or with `RBDP_KUBE=1.37` its
    /// 1.37 plane (`k137/`, on the same Ceph).
    pub env_dir: PathBuf,
}

impl OwnBed {
    pub fn up() -> OwnBed {
        let dir = PathBuf::from(
            String::from_utf8(
                Command::new("mktemp")
                    .args(["-d", "/tmp/rbd-provisioner-bed-faults.XXXXXX"])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap()
            .trim(),
        );
        // The plane of the bed this run was pointed at (hack/test.sh points RBDP_BED at each
        // plane in turn); RBDP_KUBE=1.37 still selects 1.37 when run by hand.
        let minor37 =
            Bed::load().kube_minor == 37 || std::env::var("RBDP_KUBE").as_deref() == Ok("1.37");
        let env_dir = if minor37 {
            dir.join("k137")
        } else {
            dir.clone()
        };
        let bed = OwnBed { dir, env_dir };
        let started = Instant::now();
        // A free port picked by bed-up.sh can be taken by another run before its daemon binds
        // it: such a start is purged and tried again (bed-up.sh purges a broken bed itself).
        let mut tries = 0;
        loop {
            tries += 1;
            let out = Command::new("bash")
                .arg(Path::new(crate::repo_root()).join("hack/bed-up.sh"))
                .env("RBDP_BED", &bed.dir)
                .env("RBDP_KUBE", if minor37 { "1.37" } else { "1.20" })
                .stdin(Stdio::null())
                .output()
                .expect("run hack/bed-up.sh");
            if out.status.success() {
                break;
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                tries < 3 && err.contains("address already in use"),
                "hack/bed-up.sh for the fault scenarios' own bed failed:\n{err}"
            );
            let _ = std::fs::remove_file(bed.dir.join("ports"));
        }
        println!(
            "own bed up in {:?} ({})",
            started.elapsed(),
            bed.dir.display()
        );
        bed
    }
}

impl Drop for OwnBed {
    fn drop(&mut self) {
        // The provisioners' logs outlive the bed, in target/fault-logs/<bed>/.
        let keep = Path::new(crate::repo_root())
            .join("target/fault-logs")
            .join(self.dir.file_name().unwrap_or_default());
        if std::fs::create_dir_all(&keep).is_ok() {
            for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log") {
                    let _ = std::fs::copy(&p, keep.join(e.file_name()));
                }
            }
            println!("provisioner logs kept in {}", keep.display());
        }
        let out = Command::new("bash")
            .arg(Path::new(crate::repo_root()).join("hack/bed-down.sh"))
            .arg("--purge")
            .env("RBDP_BED", &self.dir)
            .stdin(Stdio::null())
            .output();
        if let Ok(o) = out
            && !o.status.success()
        {
            eprintln!(
                "bed-down of {} failed: {}",
                self.dir.display(),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let _ = std::fs::remove_file(self.dir.with_extension("lock"));
        let mut lock = self.dir.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
    }
}

// ------------------------------------------------------------------ daemons of a bed

/// A daemon of a bed, found by its pid file (`<name>.pid` anywhere under the bed directory,
/// as the bed scripts of either control plane write them), stopped and started again the way
/// the bed scripts start it: same program, arguments, environment, directory and log.
pub struct Daemon {
    pub name: String,
    pidfile: PathBuf,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
    log: Option<PathBuf>,
}

fn find_pidfile(dir: &Path, file: &str, depth: u32) -> Option<PathBuf> {
    let p = dir.join(file);
    if p.is_file() {
        return Some(p);
    }
    if depth == 0 {
        return None;
    }
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    subdirs
        .iter()
        .find_map(|d| find_pidfile(d, file, depth - 1))
}

/// Whether a pid is a live process (a zombie is not: PID 1 here reaps late).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

impl Daemon {
    /// The running daemon `name` (`mon.a`, `osd.0`, `etcd`, `kube-apiserver`, ...) of `bed`.
    pub fn of(bed: &Bed, name: &str) -> Daemon {
        let pidfile = find_pidfile(&bed.dir, &format!("{name}.pid"), 3)
            .unwrap_or_else(|| panic!("no {name}.pid under {}", bed.dir.display()));
        let pid = Self::read_pid(&pidfile);
        assert!(alive(pid), "{name} (pid {pid}) is not running");
        // NUL-terminated fields; an empty argument (`--listen-metrics-urls ""`) is kept.
        let split = |b: Vec<u8>| -> Vec<OsString> {
            use std::os::unix::ffi::OsStringExt;
            let b = b.strip_suffix(&[0]).unwrap_or(&b);
            b.split(|c| *c == 0)
                .map(|s| OsString::from_vec(s.to_vec()))
                .collect()
        };
        let argv = split(std::fs::read(format!("/proc/{pid}/cmdline")).unwrap());
        let env = split(std::fs::read(format!("/proc/{pid}/environ")).unwrap())
            .into_iter()
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| {
                let s = kv.to_string_lossy().into_owned();
                s.split_once('=')
                    .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            })
            .collect();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
        let log = std::fs::read_link(format!("/proc/{pid}/fd/1"))
            .ok()
            .filter(|p| p.is_file());
        Daemon {
            name: name.to_string(),
            pidfile,
            argv,
            env,
            cwd,
            log,
        }
    }

    fn read_pid(pidfile: &Path) -> u32 {
        std::fs::read_to_string(pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        Self::read_pid(&self.pidfile)
    }

    /// SIGTERM, then waits until the process has exited (SIGKILL after 60 s); returns how
    /// long it took to go.
    pub fn stop(&self) -> Duration {
        self.stop_within(Duration::from_secs(60))
    }

    /// SIGTERM, SIGKILL after `grace`, and waits until the process has exited.
    pub fn stop_within(&self, grace: Duration) -> Duration {
        let pid = self.pid();
        let start = Instant::now();
        // The pid the bed recorded for this daemon, checked alive.
        if alive(pid) {
            crate::signal(pid, libc::SIGTERM);
        }
        while alive(pid) {
            if start.elapsed() > grace {
                crate::signal(pid, libc::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    }

    /// Starts it again as the bed scripts do (`setsid nohup`, its own session, output appended
    /// to its log), records the new pid in its pid file.
    pub fn start(&self) {
        let log = self
            .log
            .clone()
            .unwrap_or_else(|| PathBuf::from("/dev/null"));
        let out = Command::new("sh")
            .arg("-c")
            .arg(r#"log=$1; shift; setsid nohup "$@" >>"$log" 2>&1 </dev/null & echo $!"#)
            .arg("sh")
            .arg(&log)
            .args(&self.argv)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .expect("start daemon");
        let pid: u32 = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("pid of the restarted daemon");
        std::fs::write(&self.pidfile, format!("{pid}\n")).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(alive(pid), "{} exited at once after a restart", self.name);
    }
}

/// Samples of a process from /proc: resident memory (KiB), open fds, threads. `None` once the
/// process is gone, and for a user other than root when the process is the provisioner: it
/// is not dumpable, so its /proc/PID/fd belongs to root.
pub fn proc_sample(pid: u32) -> Option<(u64, usize, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((field("VmRSS:")?, fds, field("Threads:")?))
}
