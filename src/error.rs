//! Errors of the provisioner. Each says what failed, on which object, and what to do next;
//! an event's message is the error's Display, so none may carry key material.

use crate::ceph::CephError;
use crate::params::{ParamErrors, SecretRef};
use crate::volume::ClaimError;

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
        source: crate::clone::CloneError,
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

    #[error("{verb} {object}: {source}")]
    Kube {
        verb: &'static str,
        object: String,
        source: kube::Error,
    },

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
            Error::Invalid(_) => "invalid",
        }
    }
}

/// True when a kube error is an API status with this HTTP code.
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}
