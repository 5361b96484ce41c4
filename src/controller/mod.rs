//! The controllers: one reconciles claims (provision, grow), one reconciles volumes (delete).
//! Both share one [`Context`].

mod delete;
mod provision;
mod resize;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::Api;
use kube::runtime::Controller;
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::watcher::{self, watcher};

use crate::ceph::{Cluster, Connections, Credentials, Timeouts};
use crate::error::{Error, SecretRole};
use crate::k8s::Events;
use crate::metrics::Metrics;
use crate::params::Flavor;
use crate::reclaim::{AdminSource, DeleteTarget};
use crate::{k8s, params};

/// Settings that do not change while running.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The `provisioner` of the StorageClasses we serve.
    pub provisioner: String,
    /// `namespace:name` of our ServiceAccount, for RBAC hints in events.
    pub service_account: String,
    /// Flavour for classes that do not set `volumeFlavor`.
    pub default_flavor: Flavor,
    /// Claims handled at once.
    pub workers: u16,
    pub ceph_timeouts: Timeouts,
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub ceph: Connections,
    pub events: Events,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// (monitors, pool) whose trash this process has swept.
    swept: Mutex<HashSet<(String, String)>>,
    /// StorageClasses, kept current by a watch so that a burst of claims costs no class reads.
    classes: Store<StorageClass>,
}

impl Context {
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Arc<Metrics>,
        classes: Store<StorageClass>,
    ) -> Context {
        Context {
            classes,
            ceph: Connections::new(settings.ceph_timeouts),
            events: Events::new(client.clone()),
            client,
            settings,
            metrics,
            failures: Mutex::new(HashMap::new()),
            swept: Mutex::new(HashSet::new()),
        }
    }

    /// True the first time it is asked about a pool.
    fn first_delete_in(&self, monitors: &str, pool: &str) -> bool {
        self.swept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((monitors.to_string(), pool.to_string()))
    }

    /// A StorageClass from the watch cache; one created a moment ago may not be there yet,
    /// so a miss asks the API server.
    async fn class(&self, name: &str) -> Result<Option<StorageClass>, Error> {
        if let Some(c) = self.classes.get(&ObjectRef::new(name)) {
            return Ok(Some((*c).clone()));
        }
        Api::<StorageClass>::all(self.client.clone())
            .get_opt(name)
            .await
            .map_err(Error::kube("read StorageClass", name))
    }

    /// Admin credentials for a volume: recorded on the PV, or from its StorageClass (old PVs).
    async fn admin_credentials(
        &self,
        pv_name: &str,
        t: &DeleteTarget,
    ) -> Result<Credentials, Error> {
        let sa = &self.settings.service_account;
        match &t.admin {
            AdminSource::Recorded { admin_id, secret } => Ok(Credentials {
                monitors: t.monitors.clone(),
                user: admin_id.clone(),
                key: k8s::ceph_key(&self.client, SecretRole::Admin, secret, admin_id, sa).await?,
            }),
            AdminSource::FromClass(class_name) => {
                let class = self
                .class(class_name)
                .await?
                .ok_or_else(|| Error::Invalid(format!(
                    "volume {pv_name} was made by the old ceph.com/rbd provisioner, which records no admin credentials on its PVs, and its StorageClass {class_name} is gone: recreate StorageClass {class_name} with the same monitors, adminId, adminSecretName and adminSecretNamespace (deletion is retried), or remove image {}/{} by hand and then the finalizers of PV {pv_name}",
                    t.pool, t.image
                )))?;
                let p = params::parse(&class.parameters.clone().unwrap_or_default()).map_err(
                    |source| Error::Params {
                        class: class_name.clone(),
                        source,
                    },
                )?;
                Ok(Credentials {
                    monitors: if t.monitors.is_empty() {
                        p.monitors.clone()
                    } else {
                        t.monitors.clone()
                    },
                    user: p.admin_id.clone(),
                    key: k8s::ceph_key(
                        &self.client,
                        SecretRole::Admin,
                        &p.admin_secret,
                        &p.admin_id,
                        sa,
                    )
                    .await?,
                })
            }
        }
    }

    /// The (cached) Ceph connection for these credentials.
    async fn connect(&self, creds: &Credentials) -> Result<Arc<Cluster>, Error> {
        self.ceph.get(creds).await.map_err(Error::ceph(format!(
            "Ceph cluster {} as client.{}",
            creds.monitors.join(","),
            creds.user
        )))
    }

    fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// 1 s, 2 s, 4 s … capped at 5 minutes: retries forever without flooding the API.
    fn backoff(&self, key: &str) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff_delay(*n)
    }
}

pub fn backoff_delay(failures: u32) -> Duration {
    let secs = 1u64
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u64::MAX);
    Duration::from_secs(secs.min(300))
}

fn claim_key(pvc: &PersistentVolumeClaim) -> String {
    pvc.metadata.uid.clone().unwrap_or_default()
}

fn volume_error_policy(pv: Arc<PersistentVolume>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(pv.metadata.uid.as_deref().unwrap_or_default());
    tracing::warn!(pv = pv.metadata.name.as_deref().unwrap_or(""), error = %err, retry_in = ?delay, "volume operation failed");
    Action::requeue(delay)
}

fn claim_error_policy(pvc: Arc<PersistentVolumeClaim>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&claim_key(&pvc));
    tracing::warn!(
        claim = %format!("{}/{}", pvc.metadata.namespace.as_deref().unwrap_or(""), pvc.metadata.name.as_deref().unwrap_or("")),
        error = %err, retry_in = ?delay, "provisioning failed"
    );
    Action::requeue(delay)
}

/// Runs the controllers until a termination signal.
pub async fn run(client: Client, settings: Settings, metrics: Arc<Metrics>) {
    let workers = settings.workers;
    let (classes, writer) = reflector::store();
    let class_watch = reflector(
        writer,
        watcher(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .for_each(|_| futures::future::ready(()));
    tokio::spawn(class_watch);
    let ctx = Arc::new(Context::new(client.clone(), settings, metrics, classes));
    let claims = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(ControllerConfig::default().concurrency(workers))
    .shutdown_on_signal()
    .run(provision::reconcile, claim_error_policy, ctx.clone())
    .for_each(|_| futures::future::ready(()));
    let volumes = Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .with_config(ControllerConfig::default().concurrency(workers))
    .shutdown_on_signal()
    .run(delete::reconcile, volume_error_policy, ctx.clone())
    .for_each(|_| futures::future::ready(()));
    futures::join!(claims, volumes);
    tracing::info!("controllers stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff_delay(1), Duration::from_secs(1));
        assert_eq!(backoff_delay(2), Duration::from_secs(2));
        assert_eq!(backoff_delay(5), Duration::from_secs(16));
        assert_eq!(backoff_delay(9), Duration::from_secs(256));
        assert_eq!(backoff_delay(10), Duration::from_secs(300));
        assert_eq!(backoff_delay(1000), Duration::from_secs(300));
    }
}
