//! Where an existing volume's Ceph cluster is reached when acting on it (deleting, growing,
//! recording, snapshotting): the candidate monitor lists, in the order they are tried, and
//! whether a cluster reached through one of them may be acted on. Pure.
//!
//! Monitors move; a PV's recorded monitors do not. The sources an operator keeps current come
//! first (the StorageClass, ceph-csi's `ceph-csi-config`, ceph-csi-operator's ClientProfile
//! and CephConnection), the PV's annotation last. No source is trusted for which cluster it
//! leads to: the fsid the cluster reports must be the one the PV (or the image's stamp)
//! records, so a stale or wrong entry is passed over, never acted on.

use std::fmt;

use k8s_openapi::api::core::v1::PersistentVolume;
use serde_json::Value;

use crate::meta::annotation;
use crate::volume::{ANN_CLUSTER_ID_SOURCE, ANN_FSID};

/// Where a candidate monitor list came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The PV's StorageClass, as it is now.
    Class(String),
    /// The entry for the volume's clusterID in ceph-csi's ConfigMap (`namespace/name`).
    CsiConfig(String),
    /// ceph-csi-operator's ClientProfile named after the clusterID (`namespace/name`) and the
    /// CephConnection it names.
    ClientProfile { profile: String, connection: String },
    /// The monitors the PV recorded when it was made.
    Recorded,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Class(c) => write!(f, "StorageClass {c}"),
            Source::CsiConfig(cm) => write!(f, "ConfigMap {cm}"),
            Source::ClientProfile {
                profile,
                connection,
            } => write!(f, "ClientProfile {profile} (CephConnection {connection})"),
            Source::Recorded => write!(f, "the PV's recorded monitors"),
        }
    }
}

/// One monitor list to try.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub source: Source,
    pub monitors: Vec<String>,
}

/// What each source offers for one volume, as read just now. `None`/empty: it offers nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Offers {
    /// The current StorageClass's name and monitors, when it is ours and names the pool.
    pub class: Option<(String, Vec<String>)>,
    /// `ceph-csi-config` (`namespace/name`) and its entry's monitors for the clusterID.
    pub csi_config: Option<(String, Vec<String>)>,
    /// ClientProfiles named after the clusterID, with their CephConnection's monitors.
    pub client_profiles: Vec<(Source, Vec<String>)>,
    /// The PV's recorded monitors (the in-tree spec's, or our annotation).
    pub recorded: Vec<String>,
}

/// The candidates in the order they are tried: class, ceph-csi-config, ClientProfiles,
/// recorded. A source offering no monitors is left out, and so is a list already offered by
/// an earlier source (the same monitors in any order): it would only be asked twice.
pub fn candidates(offers: Offers) -> Vec<Candidate> {
    let Offers {
        class,
        csi_config,
        client_profiles,
        recorded,
    } = offers;
    let ordered = class
        .map(|(name, m)| (Source::Class(name), m))
        .into_iter()
        .chain(csi_config.map(|(cm, m)| (Source::CsiConfig(cm), m)))
        .chain(client_profiles)
        .chain(std::iter::once((Source::Recorded, recorded)));
    let mut out: Vec<Candidate> = Vec::new();
    for (source, monitors) in ordered {
        let monitors: Vec<String> = monitors
            .iter()
            .map(|m| m.trim().to_string())
            .filter(|m| !m.is_empty())
            .collect();
        if monitors.is_empty() || out.iter().any(|c| same_list(&c.monitors, &monitors)) {
            continue;
        }
        out.push(Candidate { source, monitors });
    }
    out
}

fn same_list(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// The ceph-csi clusterID a volume is known by: a csi PV's `volumeAttributes.clusterID`, else
/// (in-tree PVs) the fsid it records, by which `ceph-csi-config` is commonly keyed.
pub fn cluster_id(pv: &PersistentVolume) -> Option<String> {
    csi_cluster_id(pv)
        .or_else(|| annotation(&pv.metadata, ANN_FSID).map(str::to_string))
        .filter(|c| !c.is_empty())
}

fn csi_cluster_id(pv: &PersistentVolume) -> Option<String> {
    pv.spec
        .as_ref()?
        .csi
        .as_ref()?
        .volume_attributes
        .as_ref()?
        .get("clusterID")
        .cloned()
}

/// The fsids a PV records for its image's cluster: our annotation, and the `clusterID` of a
/// csi volume whose class gave none (it is the fsid, in the immutable spec).
pub fn recorded_fsids(pv: &PersistentVolume) -> Vec<String> {
    let in_spec = (annotation(&pv.metadata, ANN_CLUSTER_ID_SOURCE) == Some("ceph-fsid"))
        .then(|| csi_cluster_id(pv))
        .flatten();
    let mut out: Vec<String> = annotation(&pv.metadata, ANN_FSID)
        .map(str::to_string)
        .into_iter()
        .chain(in_spec)
        .collect();
    out.dedup();
    out
}

/// Why a cluster a candidate reached is not the image's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ElseWhere {
    #[error(
        "leads to Ceph cluster {live}, but the PV records its image as made in Ceph cluster {recorded}"
    )]
    Recorded { recorded: String, live: String },
    #[error(
        "leads to Ceph cluster {live}, but the image's stamp says it was made in Ceph cluster {stamped}"
    )]
    Stamped { stamped: String, live: String },
}

/// Whether the cluster a candidate reached may be acted on: its fsid must be every one the
/// PV records and the one the image's stamp records (read through that cluster; `None` when
/// the image has no stamp or could not be read, which the action's own checks then decide).
/// With nothing recorded anywhere (volumes of the old provisioner before their first
/// recording), the first cluster that answers is used, as before these records existed.
pub fn judge(recorded: &[String], stamp: Option<&str>, live: &str) -> Result<(), ElseWhere> {
    if let Some(r) = recorded.iter().find(|r| *r != live) {
        return Err(ElseWhere::Recorded {
            recorded: r.clone(),
            live: live.to_string(),
        });
    }
    match stamp {
        Some(s) if s != live => Err(ElseWhere::Stamped {
            stamped: s.to_string(),
            live: live.to_string(),
        }),
        _ => Ok(()),
    }
}

/// One candidate tried, and what came of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tried {
    pub source: Source,
    /// The monitors tried (empty when the source could not be read at all).
    pub monitors: Vec<String>,
    pub outcome: String,
}

/// Every source tried and what each said, for the error and event when none worked.
pub fn describe(tried: &[Tried]) -> String {
    if tried.is_empty() {
        return "no source offers monitors".into();
    }
    tried
        .iter()
        .map(|t| {
            if t.monitors.is_empty() {
                format!("{}: {}", t.source, t.outcome)
            } else {
                format!("{} ({}): {}", t.source, t.monitors.join(","), t.outcome)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a `ceph-csi-config` ConfigMap could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsiConfigError {
    #[error("it has no data key \"config.json\"")]
    NoKey,
    #[error(
        "its \"config.json\" is not a JSON list of {{\"clusterID\": ..., \"monitors\": [...]}}: {0}"
    )]
    Malformed(String),
}

/// The monitors `ceph-csi-config`'s `config.json` lists for `cluster_id` (`Ok(None)`: no
/// entry names it). The format is ceph-csi's: a JSON list of `{"clusterID", "monitors"}`.
pub fn csi_config_monitors(
    config_json: Option<&str>,
    cluster_id: &str,
) -> Result<Option<Vec<String>>, CsiConfigError> {
    let entries = csi_config_entries(config_json.ok_or(CsiConfigError::NoKey)?)?;
    Ok(entries
        .into_iter()
        .find(|(id, _)| id == cluster_id)
        .map(|(_, m)| m))
}

/// The clusterIDs `ceph-csi-config` knows, with their monitors.
pub fn csi_config_entries(config_json: &str) -> Result<Vec<(String, Vec<String>)>, CsiConfigError> {
    let v: Value =
        serde_json::from_str(config_json).map_err(|e| CsiConfigError::Malformed(e.to_string()))?;
    let entries = v
        .as_array()
        .ok_or_else(|| CsiConfigError::Malformed("not a list".into()))?;
    Ok(entries
        .iter()
        .filter_map(|e| {
            let id = e.get("clusterID")?.as_str()?.to_string();
            Some((id, strings(e.get("monitors"))))
        })
        .collect())
}

/// The CephConnection a ClientProfile (`csi.ceph.io`) names: `spec.cephConnectionRef.name`,
/// in the profile's own namespace.
pub fn profile_connection(profile: &Value) -> Option<String> {
    profile
        .pointer("/spec/cephConnectionRef/name")?
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

/// A CephConnection's `spec.monitors`.
pub fn connection_monitors(connection: &Value) -> Vec<String> {
    strings(connection.pointer("/spec/monitors"))
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The address part of a monitor entry, as `ceph mon dump` lists them: no `v1:`/`v2:`
/// prefix, no `/nonce` suffix; a missing port is the v1 default (as librados assumes).
pub fn monitor_address(entry: &str) -> String {
    let e = entry.trim();
    let e = e
        .strip_prefix("v1:")
        .or_else(|| e.strip_prefix("v2:"))
        .unwrap_or(e);
    let e = e.split('/').next().unwrap_or(e);
    let has_port = match e.strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .is_some_and(|(_, p)| p.starts_with(':')),
        None => e.contains(':'),
    };
    if has_port {
        e.to_string()
    } else {
        format!("{e}:6789")
    }
}

/// Monitor entries that name no address of the cluster's own monitor map (`known`: every
/// address, v1 and v2, `ceph mon dump` lists). Empty: they all agree.
pub fn unknown_monitors(given: &[String], known: &[String]) -> Vec<String> {
    let known: Vec<String> = known.iter().map(|k| monitor_address(k)).collect();
    given
        .iter()
        .filter(|g| !known.contains(&monitor_address(g)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
