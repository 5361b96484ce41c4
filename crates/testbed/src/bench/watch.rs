//! What the watches saw: first-seen instants of PVs, claims and trash entries, kept up to date
//! by a PV watch, a claim watch and a trash poller running beside the phases.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ceph::Cluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::Api;
use kube::runtime::watcher;

/// How often the RBD trash is polled.
pub const TRASH_POLL: Duration = Duration::from_millis(250);
/// How often the provisioning bench's deletion burst lists the pool: each image's time out of
/// the pool is known to this much.
pub const POOL_POLL: Duration = Duration::from_millis(50);

/// First-seen instants, keyed by claim name (all claims live in one namespace).
#[derive(Default)]
pub struct Seen {
    pub pv_ready: bool,
    pub pvc_ready: bool,
    pub pv_created: HashMap<String, Instant>,
    pub pv_gone: HashMap<String, Instant>,
    /// When the PV was first seen marked for deletion (its deletionTimestamp: the
    /// provisioner's delete call), before finalizers such as `kubernetes.io/pv-protection` let
    /// it go.
    pub pv_deleting: HashMap<String, Instant>,
    pub pv_name: HashMap<String, String>,
    pub image: HashMap<String, String>,
    pub bound: HashMap<String, Instant>,
    /// When the claim itself was gone (its delete event: every finalizer dropped), as opposed
    /// to marked for deletion.
    pub claim_gone: HashMap<String, Instant>,
    /// When the claim first carried the binder's storage-provisioner annotation: the binder
    /// hands a claim to a provisioner (ours or its own in-tree plugin) by writing it.
    pub annotated: HashMap<String, Instant>,
    /// Claims whose image must leave the trash; the poller fills `purged`.
    pub trash_pending: HashSet<String>,
    pub purged: HashMap<String, Instant>,
    pub trash_errors: u64,
}

pub type Shared = Arc<Mutex<Seen>>;

fn claim_of(pv: &PersistentVolume, ns: &str) -> Option<String> {
    let r = pv.spec.as_ref()?.claim_ref.as_ref()?;
    if r.namespace.as_deref() != Some(ns) {
        return None;
    }
    r.name.clone()
}

fn image_of(pv: &PersistentVolume) -> Option<String> {
    let s = pv.spec.as_ref()?;
    if let Some(r) = &s.rbd {
        return Some(r.image.clone());
    }
    s.csi.as_ref().map(|c| c.volume_handle.clone())
}

pub fn spawn_pv_watch(admin: kube::Client, ns: String, seen: Shared) {
    tokio::spawn(async move {
        let api: Api<PersistentVolume> = Api::all(admin);
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        let mut listed: HashSet<String> = HashSet::new();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            match ev {
                Ok(watcher::Event::Apply(pv)) | Ok(watcher::Event::InitApply(pv)) => {
                    if let Some(c) = claim_of(&pv, &ns) {
                        listed.insert(c.clone());
                        let mut g = seen.lock().unwrap();
                        g.pv_created.entry(c.clone()).or_insert(now);
                        if let Some(name) = pv.metadata.name.clone() {
                            g.pv_name.insert(c.clone(), name);
                        }
                        if pv.metadata.deletion_timestamp.is_some() {
                            g.pv_deleting.entry(c.clone()).or_insert(now);
                        }
                        if let Some(i) = image_of(&pv) {
                            g.image.insert(c, i);
                        }
                    }
                }
                Ok(watcher::Event::Delete(pv)) => {
                    if let Some(c) = claim_of(&pv, &ns) {
                        seen.lock().unwrap().pv_gone.entry(c).or_insert(now);
                    }
                }
                Ok(watcher::Event::Init) => listed.clear(),
                Ok(watcher::Event::InitDone) => {
                    let mut g = seen.lock().unwrap();
                    g.pv_ready = true;
                    // A relist that no longer shows a PV means it went while we were away.
                    let missing: Vec<String> = g
                        .pv_created
                        .keys()
                        .filter(|c| !listed.contains(*c) && !g.pv_gone.contains_key(*c))
                        .cloned()
                        .collect();
                    for c in missing {
                        g.pv_gone.insert(c, now);
                    }
                }
                Err(e) => {
                    eprintln!("PV watch: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
}

pub fn spawn_pvc_watch(admin: kube::Client, ns: String, seen: Shared) {
    tokio::spawn(async move {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(admin, &ns);
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            match ev {
                Ok(watcher::Event::Apply(c)) | Ok(watcher::Event::InitApply(c)) => {
                    let bound = c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
                    let annotated = c.metadata.annotations.as_ref().is_some_and(|a| {
                        a.contains_key("volume.beta.kubernetes.io/storage-provisioner")
                            || a.contains_key("volume.kubernetes.io/storage-provisioner")
                    });
                    if let Some(n) = c.metadata.name {
                        let mut g = seen.lock().unwrap();
                        if annotated {
                            g.annotated.entry(n.clone()).or_insert(now);
                        }
                        if bound {
                            g.bound.entry(n).or_insert(now);
                        }
                    }
                }
                Ok(watcher::Event::Delete(c)) => {
                    if let Some(n) = c.metadata.name {
                        seen.lock().unwrap().claim_gone.entry(n).or_insert(now);
                    }
                }
                Ok(watcher::Event::InitDone) => seen.lock().unwrap().pvc_ready = true,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("claim watch: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });
}

/// Polls the pool's trash while images are pending: an image counts as purged at the start
/// of the first poll, begun after its PV was gone (the provisioner trashes the image before
/// it deletes the PV), whose listing no longer holds it.
pub fn spawn_trash_poller(ceph: Arc<Cluster>, seen: Shared) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TRASH_POLL).await;
            let started = Instant::now();
            let candidates: Vec<(String, String)> = {
                let g = seen.lock().unwrap();
                g.trash_pending
                    .iter()
                    .filter(|c| g.pv_gone.contains_key(*c))
                    .filter_map(|c| Some((c.clone(), g.image.get(c)?.clone())))
                    .collect()
            };
            if candidates.is_empty() {
                continue;
            }
            match ceph.trash_list("kube").await {
                Ok(entries) => {
                    let names: HashSet<&str> = entries.iter().map(|e| e.name.as_str()).collect();
                    let mut g = seen.lock().unwrap();
                    for (c, image) in candidates {
                        if !names.contains(image.as_str()) {
                            g.trash_pending.remove(&c);
                            g.purged.insert(c, started);
                        }
                    }
                }
                Err(e) => {
                    seen.lock().unwrap().trash_errors += 1;
                    eprintln!("trash list: {e}");
                }
            }
        }
    });
}

pub async fn until(
    seen: &Shared,
    what: &str,
    timeout: Duration,
    f: impl Fn(&Seen) -> bool,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if f(&seen.lock().unwrap()) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn all_in(map: &HashMap<String, Instant>, names: &[String]) -> bool {
    names.iter().all(|n| map.contains_key(n))
}

pub fn latest(map: &HashMap<String, Instant>, names: &[String]) -> Instant {
    names.iter().map(|n| map[n]).max().unwrap()
}
