//! Errors of the provisioner. Each says what failed, on which object, and what to do next;
//! an event's message is the error's Display, so none may carry key material.
//!
//! One convention for causes: an error's `Display` is complete and already contains the text
//! of its cause (events and logs print it alone), so our errors keep their cause in a field
//! named `cause`, never as `source()`: nothing that prints a chain (anyhow at the edge) can
//! print a cause twice.

use crate::ceph::CephError;
use crate::domain::owner::StampMismatch;
use crate::domain::params::{ParamErrors, SecretRef};
use crate::domain::reclaim::{NotTheVolume, PlaceChanged, TargetError};
use crate::domain::volume::ClaimError;

/// Which Secret a problem concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecretRole {
    Admin,
    User,
    CsiNodeStage,
}

impl std::fmt::Display for SecretRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SecretRole::Admin => "admin secret (adminSecretName)",
            SecretRole::User => "user secret (userSecretName)",
            SecretRole::CsiNodeStage => "ceph-csi node-stage secret (csiNodeStageSecretName)",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "StorageClass {class} has invalid parameters: {cause}; fix the StorageClass (kubectl get storageclass {class} -o yaml), then recreate it"
    )]
    Params { class: String, cause: ParamErrors },

    #[error("claim {claim}: {cause}")]
    Claim { claim: String, cause: ClaimError },

    #[error("claim {claim}: {cause}")]
    Clone {
        claim: String,
        cause: crate::domain::clone::CloneError,
    },

    #[error("{role} {secret} not found; create it: kubectl -n {ns} create secret generic {name} --type=kubernetes.io/rbd --from-file=key=<(ceph auth get-key client.{user})", ns = secret.namespace, name = secret.name)]
    SecretNotFound {
        role: SecretRole,
        secret: SecretRef,
        user: String,
    },

    #[error("{role} {secret}: the provisioner may not read Secrets in namespace {ns}; allow it: kubectl -n {ns} create rolebinding rbd-provisioner-secrets --clusterrole=rbd-provisioner-secrets --serviceaccount={service_account}", ns = secret.namespace)]
    SecretForbidden {
        role: SecretRole,
        secret: SecretRef,
        service_account: String,
    },

    #[error("{role} {secret} has no {field}; {hint}")]
    SecretField {
        role: SecretRole,
        secret: SecretRef,
        field: &'static str,
        hint: &'static str,
    },

    /// The csi flavour found no usable node-stage Secret; the message holds the command.
    #[error("{0}")]
    NodeStage(#[from] crate::domain::volume::NodeStageError),

    #[error("{object}: {cause}")]
    Ceph { object: String, cause: CephError },

    #[error("{verb} {object}: {}", kube_cause(.cause))]
    Kube {
        verb: &'static str,
        object: String,
        cause: kube::Error,
    },

    /// A write lost a race with another writer (HTTP 409). Retried quietly: not a failure
    /// anyone needs to see.
    #[error("{verb} {object}: changed by someone else meanwhile; retrying")]
    Conflict { verb: &'static str, object: String },

    /// A destructive step whose facts disagree: nothing was done.
    #[error("refusing to delete image {pool}/{image} of PersistentVolume {pv}: {why}")]
    Refused {
        pv: String,
        pool: String,
        image: String,
        why: Refusal,
    },

    #[error(
        "PersistentVolume {pv} already exists and {why}; it is not the volume of claim {claim}, so nothing was overwritten: find out who made it (kubectl get pv {pv} -o yaml)"
    )]
    PvTaken {
        pv: String,
        claim: String,
        why: NotTheVolume,
    },

    /// Progress, not failure: the step waits for background work.
    #[error("{0}")]
    Waiting(Wait),

    #[error(
        "image {pool}/{image} is in use by {watchers}; stop the pods using it (or unmap it on that host), deletion will be retried"
    )]
    ImageInUse {
        pool: String,
        image: String,
        watchers: String,
    },

    /// A non-deleting step (growing, recording) on a volume whose facts disagree.
    #[error("cannot {action} volume {pv}: {why}; nothing was changed")]
    Mismatch {
        action: &'static str,
        pv: String,
        why: Refusal,
    },

    /// The PV does not say where its image is, or says it in a way that cannot be trusted.
    #[error("cannot {action} volume {pv}: {cause}")]
    Unlocated {
        action: &'static str,
        pv: String,
        cause: TargetError,
    },

    /// An image of our name exists but is stamped as another claim's (or provisioner's).
    #[error(
        "image {pool}/{image} already exists and is stamped as the volume of claim {owner_namespace}/{owner_name} (uid {owner_uid}) of provisioner {provisioner:?}; it was not adopted. Find out who made it (rbd image-meta list {pool}/{image})"
    )]
    ImageTaken {
        pool: String,
        image: String,
        owner_namespace: String,
        owner_name: String,
        owner_uid: String,
        provisioner: String,
    },

    /// A volume of the old provisioner whose StorageClass, the only record of its admin
    /// credentials, is gone.
    #[error(
        "volume {pv} was made by the old ceph.com/rbd provisioner, which records no admin credentials on its PVs, and its StorageClass {class} is gone: recreate StorageClass {class} with the same monitors, adminId, adminSecretName and adminSecretNamespace (deletion is retried), or remove image {pool}/{image} by hand and then the finalizers of PV {pv}"
    )]
    ClassGone {
        pv: String,
        class: String,
        pool: String,
        image: String,
    },

    /// A clone of the image being deleted is in the trash, but not by our hand.
    #[error(
        "clone {pool}/{child} of {object} is in the trash but was not put there by this provisioner, and it pins the source's snapshot: restore it (rbd trash restore --pool {pool} {id}) or purge it by hand; deletion is retried"
    )]
    ForeignClone {
        pool: String,
        child: String,
        object: String,
        id: String,
    },

    /// A watch cache entry whose JSON does not parse back into its object.
    #[error(
        "{object}: the cached copy cannot be read back ({cause}); this is a bug: report it, and restart the provisioner"
    )]
    Cached {
        object: String,
        cause: serde_json::Error,
    },

    #[error("Namespace kube-system has no uid")]
    NoClusterUid,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an image was not deleted.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("PersistentVolume {other} names the same image; delete or fix one of them by hand")]
    SharedImage { other: String },
    /// The image's stamp names another provisioner, cluster, PV or place.
    #[error("{0}")]
    Stamp(StampMismatch),
    /// The cluster or pool reached is not the one the PV records.
    #[error("{0}")]
    Place(PlaceChanged),
    /// The image is not in the pool, and nothing proves the pool is the one it was made in.
    #[error(
        "the image is not in pool {pool}, and PV {pv} records no pool id that proves pool {pool} is the pool its image was made in (a pool renamed and replaced by a new empty one looks the same){younger}; nothing was deleted. If the image is truly gone, remove the PV's finalizers by hand: kubectl patch pv {pv} --type merge -p '{{\"metadata\":{{\"finalizers\":null}}}}'"
    )]
    Unproven {
        pv: String,
        pool: String,
        /// Said when the pool is younger than the PV.
        younger: String,
    },
}

/// What a step waits for.
#[derive(Debug, thiserror::Error)]
pub enum Wait {
    #[error(
        "flattening clone {pool}/{child} before deleting its source {pool}/{image}; the deletion continues when it is done"
    )]
    Flattening {
        pool: String,
        child: String,
        /// The clone's source, which is being deleted.
        image: String,
    },
}

impl Error {
    pub fn kube(
        verb: &'static str,
        object: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Error {
        let object = object.into();
        move |cause| Error::Kube {
            verb,
            object,
            cause,
        }
    }

    pub fn ceph(object: impl Into<String>) -> impl FnOnce(CephError) -> Error {
        let object = object.into();
        move |cause| Error::Ceph { object, cause }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Params { .. } => "params",
            Error::Claim { .. } => "claim",
            Error::Clone { .. } => "clone",
            Error::SecretNotFound { .. }
            | Error::SecretForbidden { .. }
            | Error::SecretField { .. }
            | Error::NodeStage(_) => "secret",
            Error::Ceph { .. } => "ceph",
            Error::Kube { .. } => "kube",
            Error::ImageInUse { .. } => "in_use",
            Error::Conflict { .. } => "conflict",
            Error::Refused { .. } | Error::Mismatch { .. } => "refused",
            Error::PvTaken { .. } => "pv_taken",
            Error::Waiting(_) => "waiting",
            Error::Unlocated { .. }
            | Error::ImageTaken { .. }
            | Error::ClassGone { .. }
            | Error::ForeignClone { .. }
            | Error::NoClusterUid => "invalid",
            Error::Cached { .. } => "bug",
        }
    }
}

/// A kube error in one line: the API server's message and reason, never a `Debug` dump.
pub fn kube_cause(e: &kube::Error) -> String {
    let text = match e {
        kube::Error::Api(s) if !s.message.is_empty() => {
            format!("{} ({}, HTTP {})", s.message, s.reason, s.code)
        }
        kube::Error::Api(s) => format!("{} (HTTP {})", s.reason, s.code),
        other => other.to_string(),
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// True when a kube error is an API status with this HTTP code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_read_as_one_line_without_debug_dumps() {
        let status =
            kube::core::Status::failure("persistentvolumes \"pvc-1\" not found", "NotFound")
                .with_code(404);
        let e = Error::Kube {
            verb: "read",
            object: "PersistentVolume pvc-1".into(),
            cause: kube::Error::Api(Box::new(status)),
        };
        let text = e.to_string();
        assert_eq!(
            text,
            "read PersistentVolume pvc-1: persistentvolumes \"pvc-1\" not found (NotFound, HTTP 404)"
        );
        assert!(!text.contains("Status {"), "{text}");
        assert!(!text.contains('\n'));
    }
}
