//! Credentials and connections for acting on a volume's image, and where its pool is.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Context;
use crate::error::{Error, FactsDisagree, SecretRole};
use ceph::{CephKey, Credentials, RbdCluster};
use domain::owner::{self, Place};
use domain::params::{self, SecretRef};
use domain::reclaim::{self, AdminSource, DeleteTarget};
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

    /// Credentials to act on a volume's image: from its StorageClass when that still exists
    /// and names the same pool (monitors move; the class is kept current), else what the PV
    /// records. Either way, what the cluster reached says of itself is checked against the
    /// PV's records and the image's stamp before anything is changed.
    pub(super) async fn volume_credentials(
        &self,
        pv: &PersistentVolume,
        t: &DeleteTarget,
    ) -> Result<Credentials, Error> {
        let pv_name = pv.metadata.name.clone().unwrap_or_default();
        let class_name = pv
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            .filter(|c| !c.is_empty());
        if let Some(name) = class_name
            && let Some(class) = self.class(name).await?
            && class.provisioner == self.settings.provisioner
            && let Ok(p) = params::parse(&class.parameters.clone().unwrap_or_default())
            && p.pool == t.pool
        {
            let key = self.admin_key(&p.admin_secret, &p.admin_id).await?;
            return Ok(Credentials {
                monitors: p.monitors,
                user: p.admin_id,
                key,
            });
        }
        self.admin_credentials(&pv_name, t).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::testing::{ApiServer, expect, not_found};
    use domain::params::SecretRef;
    use http::Method;

    /// A context whose API server answers one GET of `path`, with 404.
    fn not_found_at(path: &str) -> (Context, ApiServer) {
        let (client, api) = ApiServer::start(vec![expect(Method::GET, path, not_found())]);
        (Context::for_tests(client), api)
    }

    /// The image of PV pvc-1, to be deleted with these admin credentials.
    fn target(monitors: Vec<String>, admin: AdminSource) -> DeleteTarget {
        DeleteTarget {
            pool: "kube".into(),
            image: "kubernetes-dynamic-pvc-1".into(),
            monitors,
            admin,
        }
    }

    /// A volume of the old provisioner records no admin credentials: a class gone is the
    /// typed error that tells how to recover, and nothing is written meanwhile.
    #[tokio::test]
    async fn an_old_volume_whose_class_is_gone_is_class_gone_without_writes() {
        let (ctx, api) = not_found_at("/apis/storage.k8s.io/v1/storageclasses/old");
        let target = target(Vec::new(), AdminSource::FromClass("old".into()));
        let err = ctx.admin_credentials("pvc-1", &target).await.unwrap_err();
        assert!(
            matches!(&err, Error::ClassGone { pv, class, .. } if pv == "pvc-1" && class == "old"),
            "{err:?}"
        );
        api.done();
    }

    #[tokio::test]
    async fn a_recorded_admin_secret_that_is_gone_is_secret_not_found() {
        let (ctx, api) = not_found_at("/api/v1/namespaces/kube-system/secrets/ceph-admin");
        let secret = SecretRef {
            namespace: "kube-system".into(),
            name: "ceph-admin".into(),
        };
        let target = target(
            vec!["10.0.0.1:6789".into()],
            AdminSource::Recorded {
                admin_id: "admin".into(),
                secret: secret.clone(),
            },
        );
        let err = ctx.admin_credentials("pvc-1", &target).await.unwrap_err();
        assert!(
            matches!(&err, Error::SecretNotFound { role: SecretRole::Admin, secret: s, .. } if *s == secret),
            "{err:?}"
        );
        api.done();
    }
}
