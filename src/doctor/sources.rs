//! Where else a class's cluster is known: ceph-csi's `ceph-csi-config` and ceph-csi-operator's
//! ClientProfiles/CephConnections. Their clusterIDs must know the class's and its csi PVs'
//! (ceph-csi's node plugin maps through them), and every monitor list must be in the
//! cluster's own monitor map (`ceph mon dump`), or deletions and maps reach nothing when the
//! class's monitors stop answering.

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume};
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};

use super::{Row, Status, row};
use crate::k8s::operator_resource;
use domain::monitors;

/// A clusterID and its monitors, as a source lists them.
pub type Entry = (String, Vec<String>);

/// What the sources say, read once: `None` for a source not configured or not served.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Known {
    /// `namespace/name` of `ceph-csi-config` and its entries (or why it could not be read).
    pub csi_config: Option<(String, Result<Vec<Entry>, String>)>,
    /// ClientProfiles (`namespace/name`, its name being the clusterID) and their
    /// CephConnection's monitors; `None` when the CRDs are not served.
    pub profiles: Option<Vec<(String, String, Vec<String>)>>,
}

impl Known {
    /// The monitor lists the sources give for `cluster_id`, each with its label.
    fn lists_for(&self, cluster_id: &str) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        if let Some((cm, Ok(entries))) = &self.csi_config {
            out.extend(
                entries
                    .iter()
                    .filter(|(id, _)| id == cluster_id)
                    .map(|(_, m)| (format!("ConfigMap {cm}"), m.clone())),
            );
        }
        for (profile, id, m) in self.profiles.iter().flatten() {
            if id == cluster_id {
                out.push((
                    format!("ClientProfile {profile}'s CephConnection"),
                    m.clone(),
                ));
            }
        }
        out
    }
}

/// Reads `ceph-csi-config` (when configured) and the ClientProfiles (when served).
pub(super) async fn read(client: &Client, csi_config: Option<&(String, String)>) -> Known {
    let mut known = Known::default();
    if let Some((ns, name)) = csi_config {
        let label = format!("{ns}/{name}");
        let r = match Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
        {
            Ok(Some(cm)) => Some(
                cm.data
                    .as_ref()
                    .and_then(|d| d.get("config.json"))
                    .ok_or_else(|| monitors::CsiConfigError::NoKey.to_string())
                    .and_then(|j| monitors::csi_config_entries(j).map_err(|e| e.to_string())),
            ),
            Ok(None) => None,
            Err(e) => Some(Err(crate::error::kube_cause(&e))),
        };
        known.csi_config = r.map(|r| (label, r));
    }
    let profiles: Api<DynamicObject> =
        Api::all_with(client.clone(), &operator_resource("ClientProfile"));
    if let Ok(list) = profiles.list(&ListParams::default()).await {
        let mut out = Vec::new();
        for p in list.items {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let id = p.metadata.name.clone().unwrap_or_default();
            let conn = monitors::profile_connection(&p.data).unwrap_or_default();
            let conns: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &ns, &operator_resource("CephConnection"));
            let m = match conns.get_opt(&conn).await {
                Ok(Some(c)) => monitors::connection_monitors(&c.data),
                _ => Vec::new(),
            };
            out.push((format!("{ns}/{id}"), id, m));
        }
        known.profiles = Some(out);
    }
    known
}

/// The clusterIDs of the csi PVs of `class` (made by us or not), with their PV names.
pub(super) async fn csi_pv_cluster_ids(client: &Client, class: &str) -> Vec<(String, String)> {
    let Ok(pvs) = Api::<PersistentVolume>::all(client.clone())
        .list(&ListParams::default())
        .await
    else {
        return Vec::new();
    };
    pvs.items
        .iter()
        .filter(|pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
                == Some(class)
                && pv.spec.as_ref().is_some_and(|s| s.csi.is_some())
        })
        .filter_map(|pv| Some((pv.metadata.name.clone()?, monitors::cluster_id(pv)?)))
        .collect()
}

/// One row for the clusterIDs (`(who, clusterID)`: the class's, its csi PVs'): each must be
/// known to a source, when one is configured.
pub fn cluster_id_row(known: &Known, ids: &[(String, String)]) -> Row {
    let check = "cluster id";
    let mut sources = Vec::new();
    if let Some((cm, r)) = &known.csi_config {
        match r {
            Ok(_) => sources.push(format!("ConfigMap {cm}")),
            Err(e) => {
                return row(
                    check,
                    Status::Warn,
                    format!("ConfigMap {cm} cannot be used: {e}"),
                );
            }
        }
    }
    if known.profiles.is_some() {
        sources.push("ClientProfiles".into());
    }
    if sources.is_empty() {
        return row(
            check,
            Status::Ok,
            "not configured: no ceph-csi-config ConfigMap and no ClientProfiles to check clusterIDs against (info)",
        );
    }
    let unknown: Vec<String> = ids
        .iter()
        .filter(|(_, id)| known.lists_for(id).is_empty())
        .map(|(who, id)| format!("{who} ({id})"))
        .collect();
    if unknown.is_empty() {
        let ids: Vec<&str> = ids.iter().map(|(_, id)| id.as_str()).collect();
        return row(
            check,
            Status::Ok,
            format!(
                "{} known to {}",
                dedup(ids).join(", "),
                sources.join(" and ")
            ),
        );
    }
    let mut r = row(
        check,
        Status::Warn,
        format!(
            "clusterID unknown to {}: {}; ceph-csi cannot map these volumes, nor can their monitors be found there when the class's monitors move",
            sources.join(" and "),
            unknown.join(", ")
        ),
    );
    r.fix = Some(format!(
        "add {{\"clusterID\": ..., \"monitors\": [...]}} for each to {}",
        sources.join(" or ")
    ));
    r
}

fn dedup(mut v: Vec<&str>) -> Vec<&str> {
    v.sort_unstable();
    v.dedup();
    v
}

/// One row per monitor list (`(label, monitors)`) against the cluster's own monitor map.
pub fn monitor_map_rows(map: &[String], lists: &[(String, Vec<String>)]) -> Vec<Row> {
    lists
        .iter()
        .map(|(label, given)| {
            let unknown = monitors::unknown_monitors(given, map);
            if unknown.is_empty() {
                row(
                    "monitor map",
                    Status::Ok,
                    format!("{label}: {} in ceph mon dump", given.join(",")),
                )
            } else {
                let mut r = row(
                    "monitor map",
                    Status::Warn,
                    format!(
                        "{label}: {} not in the cluster's monitor map ({})",
                        unknown.join(","),
                        map.join(",")
                    ),
                );
                r.fix = Some(format!(
                    "replace them in {label} with current monitors (ceph mon dump)"
                ));
                r
            }
        })
        .collect()
}

/// The lists to compare for a class whose cluster is `cluster_id`: the class's, then each
/// source's entry for that clusterID.
pub fn lists_for_class(
    known: &Known,
    class: &str,
    class_monitors: &[String],
    cluster_id: &str,
) -> Vec<(String, Vec<String>)> {
    let mut out = vec![(format!("StorageClass {class}"), class_monitors.to_vec())];
    out.extend(known.lists_for(cluster_id));
    out
}
