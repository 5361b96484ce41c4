//! The invariants after a scenario, judged with the API server and the `rbd` CLI: every claim
//! Bound to its own image made once, nothing left without a PV, nothing left once deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kube::api::ListParams;

use crate::harness::{delete_claim, uids};
use crate::{Bed, Scenario, uid_of};

fn rbd(bed: &Bed, args: &[&str]) -> std::process::Output {
    crate::try_cli(bed, "rbd", args)
}

/// Images in a pool, by the `rbd` CLI.
pub fn images(bed: &Bed, pool: &str) -> BTreeSet<String> {
    crate::cli(bed, "rbd", &["ls", pool])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Names of the trash entries of a pool (all sources), by the `rbd` CLI.
pub fn trash(bed: &Bed, pool: &str) -> BTreeSet<String> {
    // A failed listing must not read as an empty trash: `cli` fails loudly.
    crate::cli(bed, "rbd", &["trash", "ls", "--all", pool])
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
