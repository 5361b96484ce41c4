//! Credentials and connections for acting on a volume's image, and where its pool is.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Context;
use crate::error::{Error, FactsDisagree, SecretRole};
use ceph::{CephKey, Credentials, RbdCluster};
use domain::monitors::{self, ElseWhere, Offers, Source, Tried};
use domain::owner::{self, Place, StampMismatch};
use domain::params::{self, ClassParams, SecretRef};
use domain::reclaim::{self, AdminSource, DeleteTarget, PlaceChanged};
use k8s_openapi::api::core::v1::PersistentVolume;

impl Context {
    /// The key of Ceph user `admin_id` from the admin Secret `secret` (read moments ago, or
    /// now).
    async fn admin_key(&self, secret: &SecretRef, admin_id: &str) -> Result<CephKey, Error> {
        let sa = &self.settings.service_account;
        self.kube
            .secrets
            .ceph_key(&self.kube.client, SecretRole::Admin, secret, admin_id, sa)
            .await
    }

    /// Admin credentials for a volume: recorded on the PV, or from its StorageClass (old PVs).
    pub(super) async fn admin_credentials(
        &self,
        pv_name: &str,
        t: &DeleteTarget,
    ) -> Result<Credentials, Error> {
        match &t.admin {
            AdminSource::Recorded { admin_id, secret } => Ok(Credentials {
                monitors: t.monitors.clone(),
                user: admin_id.clone(),
                key: self.admin_key(secret, admin_id).await?,
            }),
            AdminSource::FromClass(class_name) => {
                let class = self
                    .class(class_name)
                    .await?
                    .ok_or_else(|| Error::ClassGone {
                        pv: pv_name.to_string(),
                        class: class_name.clone(),
                        pool: t.pool.clone(),
                        image: t.image.clone(),
                    })?;
                let p = params::parse(&class.parameters.clone().unwrap_or_default()).map_err(
                    |source| Error::Params {
                        class: class_name.clone(),
                        cause: source,
                    },
                )?;
                Ok(Credentials {
                    monitors: if t.monitors.is_empty() {
                        p.monitors.clone()
                    } else {
                        t.monitors.clone()
                    },
                    user: p.admin_id.clone(),
                    key: self.admin_key(&p.admin_secret, &p.admin_id).await?,
                })
            }
        }
    }

    /// The current StorageClass of a volume, with its parameters, when it is still ours and
    /// names the volume's pool (monitors move; the class is kept current).
    async fn current_class(
        &self,
        pv: &PersistentVolume,
        t: &DeleteTarget,
    ) -> Result<Option<(String, ClassParams)>, Error> {
        let Some(name) = pv
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            .filter(|c| !c.is_empty())
        else {
            return Ok(None);
        };
        Ok(self
            .class(name)
            .await?
            .filter(|class| class.provisioner == self.settings.provisioner)
            .and_then(|class| params::parse(&class.parameters.unwrap_or_default()).ok())
            .filter(|p| p.pool == t.pool)
            .map(|p| (name.to_string(), p)))
    }

    /// The cluster to act on a volume's image through. Monitor lists are tried in the order
    /// `domain::monitors` decides (the current class; then, only when that fails, the
    /// `ceph-csi-config` entry and ClientProfiles for the volume's clusterID, and the PV's
    /// record); a cluster is used only when its fsid is the one the PV (or the image's stamp)
    /// records. One that leads elsewhere or does not answer is passed over and logged.
    ///
    /// When nothing works: with a single list tried and no other source to speak of, its own
    /// error (the fsid mismatch as `refuse` words it, or the Ceph error), as before there
    /// were several sources; else `refuse` of [`FactsDisagree::Unreached`], naming every
    /// source tried and what each said. Nothing is changed either way.
    pub(super) async fn volume_cluster(
        &self,
        pv: &PersistentVolume,
        t: &DeleteTarget,
        refuse: impl Fn(FactsDisagree) -> Error,
    ) -> Result<Arc<dyn RbdCluster>, Error> {
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        let recorded = monitors::recorded_fsids(pv);
        let class = self.current_class(pv, t).await?;
        let mut tried: Vec<Tried> = Vec::new();
        let mut last: Option<Failure> = None;
        if let Some((name, p)) = &class {
            let creds = Credentials {
                monitors: p.monitors.clone(),
                user: p.admin_id.clone(),
                key: self.admin_key(&p.admin_secret, &p.admin_id).await?,
            };
            match self.try_cluster(&creds, &recorded, t).await {
                Ok(cluster) => return Ok(cluster),
                Err(f) => {
                    note(
                        &pv_name,
                        &mut tried,
                        Source::Class(name.clone()),
                        &creds,
                        &f,
                    );
                    last = Some(f);
                }
            }
        }
        // The class failed or is gone: the other sources, read now.
        let cluster_id = monitors::cluster_id(pv);
        let mut offers = Offers {
            class: class.map(|(name, p)| (name, p.monitors)),
            recorded: t.monitors.clone(),
            ..Offers::default()
        };
        if let Some(id) = &cluster_id {
            offers.csi_config = self.csi_config_offer(id, &mut tried).await;
            offers.client_profiles = self.client_profile_offers(id, &mut tried).await;
        }
        let rest: Vec<_> = monitors::candidates(offers)
            .into_iter()
            .filter(|c| !matches!(c.source, Source::Class(_)))
            .collect();
        if !rest.is_empty() {
            // Without an admin key nothing can be tried: its own error says what to fix.
            let admin = self.admin_credentials(&pv_name, t).await?;
            for c in rest {
                let creds = Credentials {
                    monitors: c.monitors.clone(),
                    ..admin.clone()
                };
                match self.try_cluster(&creds, &recorded, t).await {
                    Ok(cluster) => {
                        tracing::info!(pv = %pv_name, source = %c.source, monitors = %c.monitors.join(","), passed_over = %monitors::describe(&tried), "reached the volume's cluster through another source");
                        return Ok(cluster);
                    }
                    Err(f) => {
                        note(&pv_name, &mut tried, c.source, &creds, &f);
                        last = Some(f);
                    }
                }
            }
        }
        let lists_tried = tried.iter().filter(|x| !x.monitors.is_empty()).count();
        match last {
            Some(f) if lists_tried == 1 && tried.len() == 1 => Err(match f {
                Failure::Silent(e) => e,
                Failure::Elsewhere { why, monitors } => refuse(match why {
                    ElseWhere::Recorded { recorded, live } => {
                        FactsDisagree::Place(PlaceChanged::Fsid {
                            pv: pv_name,
                            recorded,
                            live,
                            monitors,
                        })
                    }
                    ElseWhere::Stamped { stamped, live } => {
                        FactsDisagree::Stamp(StampMismatch::Fsid { stamped, live })
                    }
                }),
            }),
            _ => Err(refuse(unreached(cluster_id.as_deref(), &tried))),
        }
    }

    /// Connects with `creds` and checks the cluster reached is the image's (see
    /// `monitors::judge`); the image's stamp is read for that only when the PV records no fsid.
    async fn try_cluster(
        &self,
        creds: &Credentials,
        recorded: &[String],
        t: &DeleteTarget,
    ) -> Result<Arc<dyn RbdCluster>, Failure> {
        let label = cluster_label(creds);
        let cluster = self.connect(creds).await.map_err(Failure::Silent)?;
        let live = cluster
            .fsid()
            .await
            .map_err(|e| Failure::Silent(Error::ceph(&label)(e)))?;
        let stamp = if recorded.is_empty() {
            cluster
                .metadata(&t.pool, &t.image, &[owner::META_FSID])
                .await
                .ok()
                .and_then(|m| m.get(owner::META_FSID).cloned())
        } else {
            None
        };
        monitors::judge(recorded, stamp.as_deref(), &live).map_err(|why| Failure::Elsewhere {
            why,
            monitors: cluster.monitors().to_string(),
        })?;
        Ok(cluster)
    }

    /// Where `pool` is, as the cluster reached says: its fsid and the pool's id.
    pub(super) async fn place(
        &self,
        cluster: &Arc<dyn RbdCluster>,
        pool: &str,
        object: &str,
    ) -> Result<Place, Error> {
        Ok(Place {
            fsid: cluster.fsid().await.map_err(Error::ceph(object))?,
            pool_id: cluster.pool_id(pool).await.map_err(Error::ceph(object))?,
        })
    }

    /// The (cached) Ceph connection for these credentials.
    pub(super) async fn connect(&self, creds: &Credentials) -> Result<Arc<dyn RbdCluster>, Error> {
        let r = self
            .ceph
            .connections
            .get(creds)
            .await
            .map_err(Error::ceph(cluster_label(creds)));
        self.metrics.set_ceph_clients(self.ceph.connections.len());
        r
    }

    /// A Ceph connection for housekeeping: it does not count as a use of a cached client.
    pub(super) async fn connect_for_housekeeping(
        &self,
        creds: &Credentials,
    ) -> Result<Arc<dyn RbdCluster>, Error> {
        self.ceph
            .connections
            .borrow(creds)
            .await
            .map_err(Error::ceph(cluster_label(creds)))
    }
}

/// Why a candidate's cluster was not used.
enum Failure {
    /// It did not answer (or refused the key): the error says how.
    Silent(Error),
    /// It answered, and is not the cluster the image was made in.
    Elsewhere { why: ElseWhere, monitors: String },
}

/// Logs a candidate passed over and notes it for the error, should nothing work.
fn note(pv: &str, tried: &mut Vec<Tried>, source: Source, creds: &Credentials, f: &Failure) {
    let outcome = match f {
        Failure::Silent(e) => format!("did not answer ({e})"),
        Failure::Elsewhere { why, .. } => why.to_string(),
    };
    tracing::warn!(%pv, %source, monitors = %creds.monitors.join(","), %outcome, "monitors passed over");
    tried.push(Tried {
        source,
        monitors: creds.monitors.clone(),
        outcome,
    });
}

fn unreached(cluster_id: Option<&str>, tried: &[Tried]) -> FactsDisagree {
    FactsDisagree::Unreached {
        cluster: cluster_id
            .map(|c| format!(" (clusterID {c})"))
            .unwrap_or_default(),
        tried: monitors::describe(tried),
    }
}

/// How errors name a Ceph cluster reached with these credentials (never the key).
fn cluster_label(creds: &Credentials) -> String {
    format!(
        "Ceph cluster {} as client.{}",
        creds.monitors.join(","),
        creds.user
    )
}

/// What record and grow check before they write to an image: where its pool is, as the
/// cluster reached says, against what the PV records, and the image's stamp. Facts that
/// disagree are a [`Error::Mismatch`] for `action`.
impl Context {
    pub(super) async fn checked_place_and_stamp(
        &self,
        cluster: &Arc<dyn RbdCluster>,
        pv: &PersistentVolume,
        t: &DeleteTarget,
        object: &str,
        action: &'static str,
    ) -> Result<(Place, BTreeMap<String, String>), Error> {
        let mismatch = |why| Error::Mismatch {
            action,
            pv: pv.metadata.name.clone().unwrap_or_default(),
            why,
        };
        let live = self.place(cluster, &t.pool, object).await?;
        reclaim::check_recorded(pv, &t.pool, &live, cluster.monitors())
            .map_err(|c| mismatch(FactsDisagree::Place(c)))?;
        let meta = cluster
            .metadata(&t.pool, &t.image, owner::KEYS)
            .await
            .map_err(Error::ceph(object))?;
        Ok((live, meta))
    }
}

mod sources;
#[cfg(test)]
mod tests;
