//! The monitor sources besides the class and the PV: ceph-csi's `ceph-csi-config` ConfigMap
//! and ceph-csi-operator's ClientProfile → CephConnection objects, read fresh when acting (a
//! volume acted on after its class failed is rare; a stale answer would pass a moved cluster
//! over). What a source could not say is noted for the error, never fatal.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, ListParams};

use super::Context;
use crate::error::is_status;
use crate::k8s::operator_resource;
use domain::monitors::{self, Source, Tried};

impl Context {
    /// The `ceph-csi-config` entry for `cluster_id`, when the flag names a ConfigMap and it
    /// has one.
    pub(super) async fn csi_config_offer(
        &self,
        cluster_id: &str,
        tried: &mut Vec<Tried>,
    ) -> Option<(String, Vec<String>)> {
        let (ns, name) = self.settings.ceph_csi_config.as_ref()?;
        let label = format!("{ns}/{name}");
        let mut said = |outcome: String| {
            tried.push(Tried {
                source: Source::CsiConfig(label.clone()),
                monitors: Vec::new(),
                outcome,
            })
        };
        let cm = match Api::<ConfigMap>::namespaced(self.kube.client.clone(), ns)
            .get_opt(name)
            .await
        {
            Ok(Some(cm)) => cm,
            Ok(None) => {
                said("does not exist".into());
                return None;
            }
            Err(e) => {
                said(format!("could not be read ({e})"));
                return None;
            }
        };
        let json = cm.data.as_ref().and_then(|d| d.get("config.json"));
        match monitors::csi_config_monitors(json.map(String::as_str), cluster_id) {
            Ok(Some(m)) => Some((label, m)),
            Ok(None) => {
                said(format!("has no entry for clusterID {cluster_id}"));
                None
            }
            Err(e) => {
                said(e.to_string());
                None
            }
        }
    }

    /// ClientProfiles named `cluster_id` (any namespace) and their CephConnection's monitors,
    /// when ceph-csi-operator's CRDs are served (a 404 says they are not: nothing to note).
    pub(super) async fn client_profile_offers(
        &self,
        cluster_id: &str,
        tried: &mut Vec<Tried>,
    ) -> Vec<(Source, Vec<String>)> {
        if !self.settings.client_profiles {
            return Vec::new();
        }
        let client = self.kube.client.clone();
        let profiles: Api<DynamicObject> =
            Api::all_with(client.clone(), &operator_resource("ClientProfile"));
        let lp = ListParams::default().fields(&format!("metadata.name={cluster_id}"));
        let list = match profiles.list(&lp).await {
            Ok(l) => l,
            Err(e) if is_status(&e, 404) => return Vec::new(),
            Err(e) => {
                tried.push(Tried {
                    source: Source::ClientProfile {
                        profile: format!("*/{cluster_id}"),
                        connection: "?".into(),
                    },
                    monitors: Vec::new(),
                    outcome: format!("could not be listed ({e})"),
                });
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for p in list.items {
            let ns = p.metadata.namespace.clone().unwrap_or_default();
            let profile = format!("{ns}/{cluster_id}");
            let Some(conn) = monitors::profile_connection(&p.data) else {
                tried.push(Tried {
                    source: Source::ClientProfile {
                        profile,
                        connection: "?".into(),
                    },
                    monitors: Vec::new(),
                    outcome: "names no CephConnection (spec.cephConnectionRef.name)".into(),
                });
                continue;
            };
            let source = Source::ClientProfile {
                profile,
                connection: format!("{ns}/{conn}"),
            };
            let connections: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &ns, &operator_resource("CephConnection"));
            match connections.get_opt(&conn).await {
                Ok(Some(c)) => out.push((source, monitors::connection_monitors(&c.data))),
                Ok(None) => tried.push(Tried {
                    source,
                    monitors: Vec::new(),
                    outcome: "its CephConnection does not exist".into(),
                }),
                Err(e) => tried.push(Tried {
                    source,
                    monitors: Vec::new(),
                    outcome: format!("its CephConnection could not be read ({e})"),
                }),
            }
        }
        out
    }
}
