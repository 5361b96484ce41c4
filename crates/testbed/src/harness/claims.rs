//! Claims made, deleted and awaited through outages: bursts, and who is Bound.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::{Scenario, uid_of};

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

/// Names of the claims in `ns` that a PV names (bound or pre-bound to them).
pub async fn claims_with_pv(client: &Client, ns: &str) -> BTreeSet<String> {
    let pvs = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    pvs.items
        .iter()
        .filter_map(|pv| pv.spec.as_ref()?.claim_ref.as_ref())
        .filter(|r| r.namespace.as_deref() == Some(ns))
        .filter_map(|r| r.name.clone())
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
