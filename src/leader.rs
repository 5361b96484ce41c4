//! Leader election on a coordination.k8s.io Lease, so that only one replica provisions.
//! The decision is pure; the loop around it is a few API calls.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::{Error, Result, is_status};

pub const LEASE_DURATION: Duration = Duration::from_secs(15);
pub const RENEW_PERIOD: Duration = Duration::from_secs(5);

/// The Lease name for a provisioner name ("ceph.com/rbd" → "rbd-provisioner-ceph-com-rbd").
pub fn lease_name(provisioner: &str) -> String {
    let mut s: String = provisioner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(200);
    format!("rbd-provisioner-{}", s.trim_matches('-'))
}

/// Whether `me` may take (or keep) the lease at `now`.
pub fn may_hold(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    match spec.holder_identity.as_deref() {
        None | Some("") => true,
        Some(h) if h == me => true,
        Some(_) => {
            let duration = spec.lease_duration_seconds.unwrap_or(15) as i64;
            match &spec.renew_time {
                None => true,
                Some(MicroTime(t)) => *t + SignedDuration::from_secs(duration) < now,
            }
        }
    }
}

fn spec_for(me: &str, now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
    let same_holder = previous.and_then(|p| p.holder_identity.as_deref()) == Some(me);
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        acquire_time: if same_holder {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if same_holder {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, provisioner: &str, me: String) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: lease_name(provisioner),
            me,
        }
    }

    /// One attempt to take or renew the lease. `Ok(false)`: someone else holds it.
    pub async fn try_hold(&self) -> Result<bool> {
        let now = Timestamp::now();
        let object = format!("Lease {}", self.name);
        match self
            .api
            .get_opt(&self.name)
            .await
            .map_err(Error::kube("read", &object))?
        {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec_for(&self.me, now, None)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(e) if is_status(&e, 409) => Ok(false),
                    Err(e) => Err(Error::kube("create", object)(e)),
                }
            }
            Some(mut lease) => {
                if !may_hold(lease.spec.as_ref(), &self.me, now) {
                    return Ok(false);
                }
                lease.spec = Some(spec_for(&self.me, now, lease.spec.as_ref()));
                // replace() sends the resourceVersion we read: a concurrent writer makes it fail.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(e) if is_status(&e, 409) => Ok(false),
                    Err(e) => Err(Error::kube("update", object)(e)),
                }
            }
        }
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) {
        let mut announced = false;
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.me, "became leader");
                    return;
                }
                Ok(false) if !announced => {
                    tracing::info!(lease = %self.name, "another replica leads; waiting for leadership");
                    announced = true;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::time::sleep(RENEW_PERIOD).await;
        }
    }

    /// Renews the lease until a renewal has failed for a whole lease duration; then returns,
    /// and the caller must stop acting (another replica may lead by now).
    pub async fn keep(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_PERIOD).await;
            match self.try_hold().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "lost the lease to another replica");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "renewing the lease"),
            }
            if last_ok.elapsed() >= LEASE_DURATION - RENEW_PERIOD {
                tracing::error!(lease = %self.name, "could not renew the lease in time");
                return;
            }
        }
    }

    /// Gives the lease up so that another replica takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                == Some(self.me.as_str())
        {
            if let Some(s) = lease.spec.as_mut() {
                s.holder_identity = None;
                s.renew_time = None;
            }
            if self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .is_ok()
            {
                tracing::info!(lease = %self.name, "released the lease");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(by: &str, renewed_secs_ago: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                Timestamp::now() - SignedDuration::from_secs(renewed_secs_ago),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn names() {
        assert_eq!(lease_name("ceph.com/rbd"), "rbd-provisioner-ceph-com-rbd");
        assert_eq!(
            lease_name("Example.io/RBD"),
            "rbd-provisioner-example-io-rbd"
        );
    }

    #[test]
    fn who_may_hold() {
        let now = Timestamp::now();
        assert!(may_hold(None, "a", now), "no lease yet");
        assert!(may_hold(Some(&LeaseSpec::default()), "a", now), "released");
        assert!(may_hold(Some(&held("a", 3)), "a", now), "renewing my own");
        assert!(
            !may_hold(Some(&held("b", 3)), "a", now),
            "fresh lease of another"
        );
        assert!(
            may_hold(Some(&held("b", 20)), "a", now),
            "expired lease of another"
        );
    }

    #[test]
    fn transitions_count_changes_of_holder() {
        let now = Timestamp::now();
        let first = spec_for("a", now, None);
        assert_eq!(first.lease_transitions, Some(1));
        let renewed = spec_for("a", now, Some(&first));
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.acquire_time, first.acquire_time);
        let taken = spec_for("b", now, Some(&renewed));
        assert_eq!(taken.lease_transitions, Some(2));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
    }
}
