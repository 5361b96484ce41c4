//! Errors of the provisioner. Each says what failed, on which object, and what to do next;
//! an event's message is the error's Display, so none may carry key material.

use crate::ceph::CephError;
use crate::domain::params::{ParamErrors, SecretRef};
use crate::domain::volume::ClaimError;

/// Which Secret a problem concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        "StorageClass {class} has invalid parameters: {source}; fix the StorageClass (kubectl get storageclass {class} -o yaml), then recreate it"
    )]
    Params { class: String, source: ParamErrors },

    #[error("claim {claim}: {source}")]
    Claim { claim: String, source: ClaimError },

    #[error("claim {claim}: {source}")]
    Clone {
        claim: String,
        source: crate::domain::clone::CloneError,
    },

    #[error("{role} {secret} not found; create it: kubectl -n {ns} create secret generic {name} --type=kubernetes.io/rbd --from-literal=key=\"$(ceph auth get-key client.{user})\"", ns = secret.namespace, name = secret.name)]
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

    #[error("{object}: {source}")]
    Ceph { object: String, source: CephError },

    #[error("{verb} {object}: {}", kube_cause(.source))]
    Kube {
        verb: &'static str,
        object: String,
        source: kube::Error,
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
        why: String,
    },

    #[error(
        "PersistentVolume {pv} already exists and {why}; it is not the volume of claim {claim}, so nothing was overwritten: find out who made it (kubectl get pv {pv} -o yaml)"
    )]
    PvTaken {
        pv: String,
        claim: String,
        why: String,
    },

    /// Progress, not failure: the step waits for background work (flattening clones).
    #[error("{0}")]
    Waiting(String),

    #[error(
        "image {pool}/{image} is in use by {watchers}; stop the pods using it (or unmap it on that host), deletion will be retried"
    )]
    ImageInUse {
        pool: String,
        image: String,
        watchers: String,
    },

    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn kube(
        verb: &'static str,
        object: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Error {
        let object = object.into();
        move |source| Error::Kube {
            verb,
            object,
            source,
        }
    }

    pub fn ceph(object: impl Into<String>) -> impl FnOnce(CephError) -> Error {
        let object = object.into();
        move |source| Error::Ceph { object, source }
    }

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Params { .. } => "params",
            Error::Claim { .. } => "claim",
            Error::Clone { .. } => "clone",
            Error::SecretNotFound { .. }
            | Error::SecretForbidden { .. }
            | Error::SecretField { .. } => "secret",
            Error::Ceph { .. } => "ceph",
            Error::Kube { .. } => "kube",
            Error::ImageInUse { .. } => "in_use",
            Error::Conflict { .. } => "conflict",
            Error::Refused { .. } => "refused",
            Error::PvTaken { .. } => "pv_taken",
            Error::Waiting(_) => "waiting",
            Error::Invalid(_) => "invalid",
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
            source: kube::Error::Api(Box::new(status)),
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
