//! An independent witness of who acted, for the leader scenarios: the API server and Ceph
//! say what happened, not the provisioners' logs.
//!
//! - Every PV write by a provisioner replica, from the PV's `managedFields` (the field
//!   manager is `rbd-provisioner@<Lease identity>`, see `app::user_agent`) and the time the
//!   API server put on it, is held against the Lease's holders at that second.
//! - Every image creation, from the pool's `rbd_directory` polled with the `rados` CLI: a name
//!   seen with two complete images (two ids with a header) was created twice, which the
//!   deterministic names hide from `rbd ls`. The image's `made-by` stamp must name a holder
//!   of the Lease while its id appeared.
//!
//! Second resolution (managedFields times are whole seconds) means a write by a deposed
//! leader within the second of the hand-over is not caught; anything later is.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher;

use crate::Bed;

/// What the witness saw; [`Seen::judge`] is pure so that its rules have tests of their own.
#[derive(Default, Debug, Clone)]
pub struct Seen {
    /// Lease holder changes: (Unix seconds of the acquire, holder).
    pub holders: Vec<(f64, String)>,
    /// PV writes by replicas: (PV, identity, Unix seconds the API server recorded).
    pub writes: BTreeSet<(String, String, i64)>,
    /// Per image name, each id seen for it: (id, a header existed, window in which it appeared).
    pub ids: BTreeMap<String, Vec<ImageId>>,
    /// Per image name, the `made-by` stamp read at the end.
    pub made_by: BTreeMap<String, String>,
    /// Per image name, the `adopted-by` stamp read at the end.
    pub adopted_by: BTreeMap<String, String>,
    pub polls: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ImageId {
    pub id: String,
    pub complete: bool,
    /// Unix seconds: the previous poll's start and the poll that first listed the id's end.
    pub appeared: (f64, f64),
}

impl Seen {
    /// Who held the Lease at some moment of [from, to].
    pub fn holders_between(&self, from: f64, to: f64) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        let mut current: Option<&str> = None;
        for (t, h) in &self.holders {
            if *t <= from {
                current = Some(h);
            } else if *t <= to {
                out.insert(h.as_str());
            }
        }
        out.extend(current);
        out
    }

    /// Every violation: a PV write or an image by a replica not holding the Lease, an image
    /// name created twice, an image without a `made-by` stamp.
    pub fn judge(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.holders.is_empty() {
            v.push("the witness saw no Lease holder at all".into());
        }
        for (pv, who, t) in &self.writes {
            let held = self.holders_between(*t as f64, *t as f64 + 1.0);
            if !held.contains(who.as_str()) {
                v.push(format!(
                    "PV {pv} written by {who} at {t} while the Lease was held by {held:?}"
                ));
            }
        }
        // Who adopted an image is not timed, but it must be a replica that led at some point:
        // a replica acting without the Lease adopts what the leader made.
        let ever: BTreeSet<&str> = self.holders.iter().map(|(_, h)| h.as_str()).collect();
        for (name, who) in &self.adopted_by {
            if !ever.contains(who.as_str()) {
                v.push(format!(
                    "image {name} adopted by {who}, which never held the Lease (holders {ever:?})"
                ));
            }
        }
        for (name, ids) in &self.ids {
            let complete: Vec<&str> = ids
                .iter()
                .filter(|i| i.complete)
                .map(|i| i.id.as_str())
                .collect();
            if complete.len() > 1 {
                v.push(format!(
                    "image {name} created {} times (ids {complete:?})",
                    complete.len()
                ));
            }
            let Some(first) = ids.iter().find(|i| i.complete) else {
                continue;
            };
            match self.made_by.get(name) {
                // Its maker stopped between the create call and the stamp (a kill mid-burst):
                // who made it is unknowable, and the adopter's PV write is judged above.
                None if self.adopted_by.contains_key(name) => {}
                None => v.push(format!(
                    "image {name} has neither a made-by nor an adopted-by stamp"
                )),
                Some(who) => {
                    let (from, to) = first.appeared;
                    let held = self.holders_between(from - 1.0, to);
                    if !held.contains(who.as_str()) {
                        v.push(format!(
                            "image {name} made by {who} between {from:.1} and {to:.1} while the Lease was held by {held:?}"
                        ));
                    }
                }
            }
        }
        v
    }
}

/// A running witness of one provisioner name's Lease, PVs and one pool.
pub struct Witness {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Returns when its last poll started.
    poller: Option<std::thread::JoinHandle<f64>>,
    bed: Bed,
    pool: String,
    prefix: String,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

const MANAGER_PREFIX: &str = "rbd-provisioner@";

impl Witness {
    /// Starts watching the Lease of `provisioner` (in kube-system), its PVs, and the images
    /// of `pool` whose names start with `prefix`.
    pub async fn start(
        bed: &Bed,
        client: &Client,
        provisioner: &str,
        pool: &str,
        prefix: &str,
    ) -> Witness {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();

        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
        let lease = domain::lease::lease_name(provisioner);
        let cfg = watcher::Config::default().fields(&format!("metadata.name={lease}"));
        let s = seen.clone();
        tasks.push(tokio::spawn(async move {
            let mut w = std::pin::pin!(watcher::watcher(leases, cfg));
            while let Some(ev) = w.next().await {
                let Ok(watcher::Event::Apply(l) | watcher::Event::InitApply(l)) = ev else {
                    continue;
                };
                let Some(spec) = l.spec else { continue };
                let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
                    continue;
                };
                // The acquirer's own clock (this machine's): when it began to lead.
                let at = spec
                    .acquire_time
                    .map(|t| t.0.as_millisecond() as f64 / 1000.0)
                    .unwrap_or_else(now);
                let mut s = s.lock().unwrap();
                if s.holders.last().map(|(_, h)| h) != Some(&holder) {
                    s.holders.push((at, holder));
                }
            }
        }));

        let pvs: Api<PersistentVolume> = Api::all(client.clone());
        let s = seen.clone();
        let provisioner = provisioner.to_string();
        tasks.push(tokio::spawn(async move {
            let mut w = std::pin::pin!(watcher::watcher(pvs, watcher::Config::default()));
            while let Some(ev) = w.next().await {
                let Ok(watcher::Event::Apply(pv) | watcher::Event::InitApply(pv)) = ev else {
                    continue;
                };
                let ours = pv
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
                    == Some(&provisioner);
                if !ours {
                    continue;
                }
                let name = pv.metadata.name.clone().unwrap_or_default();
                let mut s = s.lock().unwrap();
                for m in pv.metadata.managed_fields.iter().flatten() {
                    let (Some(manager), Some(t)) = (&m.manager, &m.time) else {
                        continue;
                    };
                    if let Some(who) = manager.strip_prefix(MANAGER_PREFIX) {
                        s.writes
                            .insert((name.clone(), who.to_string(), t.0.as_second()));
                    }
                }
            }
        }));

        let (b, p, pre, s, st) = (
            bed.clone(),
            pool.to_string(),
            prefix.to_string(),
            seen.clone(),
            stop.clone(),
        );
        let poller = std::thread::spawn(move || {
            let mut last = now();
            while !st.load(Ordering::Relaxed) {
                last = poll_once(&b, &p, &pre, &s, last);
                std::thread::sleep(Duration::from_millis(300));
            }
            last
        });
        // The first poll and the watches' initial lists are in before the test acts.
        let t0 = std::time::Instant::now();
        while seen.lock().unwrap().polls == 0 && t0.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            seen.lock().unwrap().polls > 0,
            "the witness's first rados poll"
        );
        Witness {
            seen,
            stop,
            tasks,
            poller: Some(poller),
            bed: bed.clone(),
            pool: pool.to_string(),
            prefix: prefix.to_string(),
        }
    }

    /// Stops watching (after letting the last writes arrive), reads each image's `made-by`
    /// stamp, and returns what was seen.
    /// Only the images named in `images` are judged (the pool is shared with other tests).
    pub async fn finish(mut self, images: &BTreeSet<String>) -> Seen {
        tokio::time::sleep(Duration::from_secs(2)).await;
        self.stop.store(true, Ordering::Relaxed);
        let last = match self.poller.take() {
            Some(p) => tokio::task::spawn_blocking(move || p.join())
                .await
                .expect("join the poller")
                .expect("the witness's poller panicked"),
            None => now(),
        };
        // A last look, so that an image made after the poller's last listing is seen too (its
        // window then reaches back to that listing).
        let (b, p, pre, s) = (
            self.bed.clone(),
            self.pool.clone(),
            self.prefix.clone(),
            self.seen.clone(),
        );
        tokio::task::spawn_blocking(move || poll_once(&b, &p, &pre, &s, last))
            .await
            .expect("the witness's last poll");
        for t in &self.tasks {
            t.abort();
        }
        let mut seen = self.seen.lock().unwrap().clone();
        seen.ids.retain(|name, _| images.contains(name));
        for name in images {
            if !seen.ids.contains_key(name) {
                // Made and gone between two polls, or never made: either way not witnessed.
                println!("witness: image {name} never seen in the pool's directory");
            }
        }
        let names: Vec<String> = seen.ids.keys().cloned().collect();
        use domain::owner::{META_ADOPTED_BY, META_MADE_BY};
        for name in names {
            let get = |key: &str| {
                let out = Command::new("rbd")
                    .arg("-c")
                    .arg(self.bed.dir.join("ceph/ceph.conf"))
                    .args(["image-meta", "get", &format!("{}/{name}", self.pool), key])
                    .output()
                    .expect("run rbd image-meta get");
                // Exit status 2 (ENOENT): the key is not set.
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            };
            if let Some(who) = get(META_MADE_BY) {
                seen.made_by.insert(name.clone(), who);
            }
            if let Some(who) = get(META_ADOPTED_BY) {
                println!("witness: image {name} adopted by {who}");
                seen.adopted_by.insert(name, who);
            }
        }
        println!(
            "witness ({}/{}*): {} Lease holders, {} PV writes by replicas, {} images, {} polls",
            self.pool,
            self.prefix,
            seen.holders.len(),
            seen.writes.len(),
            seen.ids.len(),
            seen.polls
        );
        seen
    }
}

/// One look at the pool: the directory, and for ids not yet seen complete whether their header
/// exists. Two `rados` calls whatever the number of new ids (one per id starved the poller on a
/// loaded machine: two polls in a whole burst). The `rados` calls run without the lock: the
/// watch tasks take it on the test's runtime thread, which a held lock would stall. Returns
/// when this poll started, the earliest moment of the next one's window.
fn poll_once(bed: &Bed, pool: &str, prefix: &str, seen: &Mutex<Seen>, last: f64) -> f64 {
    let started = now();
    let dir = directory(bed, pool);
    let ended = now();
    let todo: Vec<(String, String)> = {
        let s = seen.lock().unwrap();
        dir.into_iter()
            .filter(|(_, n)| n.starts_with(prefix))
            .filter(|(id, n)| {
                !s.ids
                    .get(n)
                    .is_some_and(|v| v.iter().any(|i| i.id == *id && i.complete))
            })
            .collect()
    };
    let headers = if todo.is_empty() {
        BTreeSet::new()
    } else {
        headers(bed, pool)
    };
    let mut s = seen.lock().unwrap();
    s.polls += 1;
    for (id, name) in todo {
        let complete = headers.contains(&id);
        let ids = s.ids.entry(name).or_default();
        match ids.iter_mut().find(|i| i.id == id) {
            Some(i) => i.complete |= complete,
            None => ids.push(ImageId {
                complete,
                id,
                appeared: (last, ended),
            }),
        }
    }
    started
}

/// The ids of every image header in the pool (`rbd_header.<id>` objects), by `rados ls`.
fn headers(bed: &Bed, pool: &str) -> BTreeSet<String> {
    let out = Command::new("rados")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(["-p", pool, "ls"])
        .output()
        .expect("run rados ls");
    crate::assert_success(&format!("rados ls in {pool}"), &out);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rbd_header."))
        .map(str::to_string)
        .collect()
}

/// id → name of every image in the pool's directory, by the `rados` CLI.
fn directory(bed: &Bed, pool: &str) -> Vec<(String, String)> {
    let out = Command::new("rados")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(["-p", pool, "listomapvals", "rbd_directory"])
        .output()
        .expect("run rados listomapvals");
    // A pool where no image was ever made has no directory object yet: an empty directory.
    if !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("(2) No such file") {
        return Vec::new();
    }
    crate::assert_success(&format!("rados listomapvals rbd_directory in {pool}"), &out);
    parse_directory(&String::from_utf8_lossy(&out.stdout))
}

/// `rados listomapvals` output: a key line, "value (N bytes) :", hexdump lines, an empty line.
/// The `id_<id>` keys hold the name, a 4-byte length and the bytes.
pub fn parse_directory(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut key: Option<String> = None;
    let mut bytes = Vec::new();
    let mut flush = |key: &mut Option<String>, bytes: &mut Vec<u8>| {
        if let Some(id) = key
            .take()
            .and_then(|k| k.strip_prefix("id_").map(str::to_string))
            && bytes.len() >= 4
        {
            out.push((id, String::from_utf8_lossy(&bytes[4..]).into_owned()));
        }
        bytes.clear();
    };
    for line in text.lines() {
        if line.starts_with("value (") {
            continue;
        }
        let is_hex = line.len() > 10
            && line.as_bytes()[..8].iter().all(u8::is_ascii_hexdigit)
            && line.as_bytes()[8] == b' ';
        if is_hex {
            let body = line[8..].split('|').next().unwrap_or("");
            bytes.extend(
                body.split_whitespace()
                    .filter_map(|h| u8::from_str_radix(h, 16).ok()),
            );
        } else if line.trim().is_empty() || line.as_bytes()[..].iter().all(u8::is_ascii_hexdigit) {
            // The offset line that ends a hexdump, or the blank line between entries.
        } else {
            flush(&mut key, &mut bytes);
            key = Some(line.trim().to_string());
        }
    }
    flush(&mut key, &mut bytes);
    out
}
