//! Kubernetes I/O: Secrets, claims, classes, PersistentVolumes, Events. Narrow functions over
//! a `kube::Client`.

mod events;
pub mod snapshot;

pub use events::Events;

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Secret};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::Client;
use kube::api::{Api, PostParams};
use zeroize::Zeroize;

use crate::error::{Error, Result, SecretRole, is_status};
use ceph::CephKey;
use domain::params::SecretRef;
use domain::volume::SecretFields;

/// What was read from Secrets moments ago, so that a burst of claims (or deletions) of one
/// class reads each Secret once per `ttl` rather than once per volume. It keeps only what was
/// derived: a Ceph key (wiped when dropped, as the Ceph clients' own copy is) or the fact
/// that a Secret passed its check. Failures are never kept, so a fixed Secret counts at once.
pub struct SecretMemo {
    ttl: Duration,
    entries: Mutex<HashMap<MemoKey, (Instant, Memo)>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct MemoKey {
    role: SecretRole,
    secret: (String, String),
    ceph_user: String,
    /// The fields checked, for `check_secret`; empty for a key.
    fields: Vec<&'static str>,
}

impl MemoKey {
    fn new(
        role: SecretRole,
        secret: &SecretRef,
        ceph_user: &str,
        fields: &[(&'static str, &'static str)],
    ) -> MemoKey {
        MemoKey {
            role,
            secret: (secret.namespace.clone(), secret.name.clone()),
            ceph_user: ceph_user.to_string(),
            fields: fields.iter().map(|(f, _)| *f).collect(),
        }
    }
}

enum Memo {
    Key(CephKey),
    Checked,
}

impl SecretMemo {
    pub fn new(ttl: Duration) -> SecretMemo {
        SecretMemo {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn recall<T>(&self, key: &MemoKey, f: impl Fn(&Memo) -> Option<T>) -> Option<T> {
        let entries = self.entries.lock();
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .and_then(|(_, m)| f(m))
    }

    fn keep(&self, key: MemoKey, memo: Memo) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock();
        entries.retain(|_, (at, _)| at.elapsed() < self.ttl);
        entries.insert(key, (Instant::now(), memo));
    }

    /// [`ceph_key`], remembered for the memo's time.
    pub async fn ceph_key(
        &self,
        client: &Client,
        role: SecretRole,
        secret: &SecretRef,
        ceph_user: &str,
        service_account: &str,
    ) -> Result<CephKey> {
        let key = MemoKey::new(role, secret, ceph_user, &[]);
        if let Some(k) = self.recall(&key, |m| match m {
            Memo::Key(k) => Some(k.clone()),
            Memo::Checked => None,
        }) {
            return Ok(k);
        }
        let k = ceph_key(client, role, secret, ceph_user, service_account).await?;
        self.keep(key, Memo::Key(k.clone()));
        Ok(k)
    }

    /// [`check_secret`], a pass remembered for the memo's time.
    pub async fn check_secret(
        &self,
        client: &Client,
        role: SecretRole,
        secret: &SecretRef,
        ceph_user: &str,
        service_account: &str,
        fields: &[(&'static str, &'static str)],
    ) -> Result<()> {
        let key = MemoKey::new(role, secret, ceph_user, fields);
        if self
            .recall(&key, |m| matches!(m, Memo::Checked).then_some(()))
            .is_some()
        {
            return Ok(());
        }
        check_secret(client, role, secret, ceph_user, service_account, fields).await?;
        self.keep(key, Memo::Checked);
        Ok(())
    }
}

/// Reads a Secret, turning 403/404 into errors that name the fix.
async fn get_secret(
    client: &Client,
    role: SecretRole,
    secret: &SecretRef,
    ceph_user: &str,
    service_account: &str,
) -> Result<Secret> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
    match api.get(&secret.name).await {
        Ok(s) => Ok(s),
        Err(e) if is_status(&e, 404) => Err(Error::SecretNotFound {
            role,
            secret: secret.clone(),
            user: ceph_user.to_string(),
        }),
        Err(e) if is_status(&e, 403) => Err(Error::SecretForbidden {
            role,
            secret: secret.clone(),
            service_account: service_account.to_string(),
        }),
        Err(e) => Err(Error::Kube {
            verb: "read secret",
            object: secret.to_string(),
            cause: e,
        }),
    }
}

/// Takes one field out of a Secret without leaving copies: the bytes move into the
/// returned string, trimmed in place.
fn take_field(s: &mut Secret, key: &str) -> Option<String> {
    let bytes = s
        .data
        .as_mut()
        .and_then(|d| d.get_mut(key))
        .map(|b| std::mem::take(&mut b.0))
        .or_else(|| {
            s.string_data
                .as_mut()
                .and_then(|d| d.get_mut(key))
                .map(|v| std::mem::take(v).into_bytes())
        })?;
    let mut v = match String::from_utf8(bytes) {
        Ok(v) => v,
        Err(e) => {
            e.into_bytes().zeroize();
            return None;
        }
    };
    let end = v.trim_end().len();
    v.truncate(end);
    let start = v.len() - v.trim_start().len();
    v.drain(..start);
    if v.is_empty() {
        return None;
    }
    Some(v)
}

/// Overwrites every value of a Secret we read before it is dropped.
fn wipe_secret(mut s: Secret) {
    for (_, mut b) in s.data.take().into_iter().flatten() {
        b.0.zeroize();
    }
    for (_, v) in s.string_data.take().into_iter().flatten() {
        v.into_bytes().zeroize();
    }
}

/// The Ceph key of a Secret of any type: `data.key` (Opaque or kubernetes.io/rbd), or
/// `data.userKey` as Rook and ceph-csi write them. A `userID` next to `userKey` must name
/// the same Ceph user the class does, so a Secret of another user is not used by mistake.
pub async fn ceph_key(
    client: &Client,
    role: SecretRole,
    secret: &SecretRef,
    ceph_user: &str,
    service_account: &str,
) -> Result<CephKey> {
    let mut s = get_secret(client, role, secret, ceph_user, service_account).await?;
    let found = secret_key(&mut s, ceph_user);
    wipe_secret(s);
    found
        .map(CephKey::new)
        .map_err(|(field, hint)| Error::SecretField {
            role,
            secret: secret.clone(),
            field,
            hint,
        })
}

/// Takes the key out of a Secret in either format; the error names the field and the fix.
fn secret_key(
    s: &mut Secret,
    ceph_user: &str,
) -> std::result::Result<String, (&'static str, &'static str)> {
    if let Some(k) = take_field(s, "key") {
        return Ok(k);
    }
    let Some(k) = take_field(s, "userKey") else {
        return Err((
            "data.key",
            "put the Ceph key (ceph auth get-key client.ID) under the key \"key\" (or, in ceph-csi's format, under \"userKey\" with the id under \"userID\")",
        ));
    };
    let want = ceph_user.strip_prefix("client.").unwrap_or(ceph_user);
    match take_field(s, "userID") {
        Some(id) if id.strip_prefix("client.").unwrap_or(&id) != want => {
            k.into_bytes().zeroize();
            Err((
                "data.userID",
                "userID names another Ceph user than the class's adminId/userId; point the class at the Secret of that user, or set adminId/userId to the Secret's userID",
            ))
        }
        _ => Ok(k),
    }
}

/// Checks a Secret exists and holds the given fields, without keeping its content.
pub async fn check_secret(
    client: &Client,
    role: SecretRole,
    secret: &SecretRef,
    ceph_user: &str,
    service_account: &str,
    fields: &[(&'static str, &'static str)],
) -> Result<()> {
    let mut s = get_secret(client, role, secret, ceph_user, service_account).await?;
    let mut missing = None;
    for (key, hint) in fields {
        match take_field(&mut s, key) {
            Some(v) => v.into_bytes().zeroize(),
            None => {
                missing = Some((*key, *hint));
                break;
            }
        }
    }
    wipe_secret(s);
    match missing {
        None => Ok(()),
        Some((field, hint)) => Err(Error::SecretField {
            role,
            secret: secret.clone(),
            field,
            hint,
        }),
    }
}

/// The names of a Secret's non-empty fields; its values are overwritten, never kept.
/// `None` when it does not exist; no right to read it is an error that names the fix.
pub async fn secret_fields(
    client: &Client,
    role: SecretRole,
    secret: &SecretRef,
    service_account: &str,
) -> Result<Option<SecretFields>> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &secret.namespace);
    let found = match api.get(&secret.name).await {
        Ok(s) => s,
        Err(e) if is_status(&e, 404) => return Ok(None),
        Err(e) if is_status(&e, 403) => {
            return Err(Error::SecretForbidden {
                role,
                secret: secret.clone(),
                service_account: service_account.to_string(),
            });
        }
        Err(e) => return Err(Error::kube("read secret", secret.to_string())(e)),
    };
    let mut names = SecretFields::new();
    for (k, mut v) in found.data.into_iter().flatten() {
        if !v.0.iter().all(u8::is_ascii_whitespace) {
            names.insert(k);
        }
        v.0.zeroize();
    }
    for (k, v) in found.string_data.into_iter().flatten() {
        if !v.trim().is_empty() {
            names.insert(k);
        }
        v.into_bytes().zeroize();
    }
    Ok(Some(names))
}

/// A claim, read at the API server (not a cache); `None` when it does not exist.
pub async fn get_claim(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<PersistentVolumeClaim>> {
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(Error::kube(
            "read PersistentVolumeClaim",
            domain::meta::qualified(Some(namespace), name),
        ))
}

/// A PV; `None` when it does not exist.
pub async fn get_pv(client: &Client, name: &str) -> Result<Option<PersistentVolume>> {
    Api::<PersistentVolume>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(Error::kube("read PersistentVolume", name))
}

/// A StorageClass; `None` when it does not exist.
pub async fn get_class(client: &Client, name: &str) -> Result<Option<StorageClass>> {
    Api::<StorageClass>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(Error::kube("read StorageClass", name))
}

/// Creates a PV. One that already exists counts as created only when it is the same volume
/// (a retry after a crash): ours, bound to the same claim uid, naming the same image.
pub async fn create_pv(client: &Client, pv: &PersistentVolume, provisioner: &str) -> Result<()> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let name = pv.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), pv).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => {
            let existing = api
                .get(&name)
                .await
                .map_err(Error::kube("read PersistentVolume", &name))?;
            domain::reclaim::same_volume(&existing, pv, provisioner).map_err(|why| Error::PvTaken {
                pv: name.clone(),
                claim: pv
                    .spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .map(|c| {
                        format!(
                            "{}/{}",
                            c.namespace.as_deref().unwrap_or_default(),
                            c.name.as_deref().unwrap_or_default()
                        )
                    })
                    .unwrap_or_default(),
                why,
            })
        }
        Err(e) => Err(Error::Kube {
            verb: "create PersistentVolume",
            object: name,
            cause: e,
        }),
    }
}

/// ceph-csi-operator's API group and version, as its CRDs serve them.
pub const OPERATOR_GROUP: &str = "csi.ceph.io";
pub const OPERATOR_VERSION: &str = "v1alpha1";

/// The `ApiResource` of one of ceph-csi-operator's kinds (`ClientProfile`, `CephConnection`).
pub fn operator_resource(kind: &str) -> kube::api::ApiResource {
    kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        OPERATOR_GROUP,
        OPERATOR_VERSION,
        kind,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn a_key_is_moved_out_of_the_secret_not_copied() {
        let mut s = Secret {
            data: Some(
                [(
                    "key".to_string(),
                    ByteString(b"  AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==\n".to_vec()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let key = take_field(&mut s, "key").unwrap();
        assert_eq!(key, "AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==");
        // Nothing of it is left in the Secret object that will be dropped.
        assert!(s.data.as_ref().unwrap()["key"].0.is_empty());
        assert_eq!(take_field(&mut s, "key"), None);
        let mut s = Secret {
            string_data: Some([("userKey".to_string(), "AQD3".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(take_field(&mut s, "userKey").as_deref(), Some("AQD3"));
        assert!(s.string_data.as_ref().unwrap()["userKey"].is_empty());
    }

    #[test]
    fn keys_in_ceph_csi_format() {
        let secret = |pairs: &[(&str, &str)]| Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        // The key, or the field that is missing or wrong.
        let key = |pairs: &[(&str, &str)], user| {
            secret_key(&mut secret(pairs), user).map_err(|(field, _)| field)
        };
        assert_eq!(key(&[("key", "K1")], "admin"), Ok("K1".into()));
        assert_eq!(
            key(&[("userID", "admin"), ("userKey", "K2")], "admin"),
            Ok("K2".into())
        );
        let k3 = key(&[("userID", "client.kube"), ("userKey", "K3")], "kube");
        assert_eq!(k3, Ok("K3".into()));
        assert_eq!(key(&[("userKey", "K4")], "kube"), Ok("K4".into()));
        let other = key(&[("userID", "other"), ("userKey", "K5")], "kube");
        assert_eq!(other, Err("data.userID"));
        assert_eq!(key(&[("adminKey", "K6")], "kube"), Err("data.key"));
    }
}
