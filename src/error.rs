//! Errors of the provisioner. Each says what failed, on which object, and what to do next;
//! an event's message is the error's Display, so none may carry key material.
//!
//! One convention for causes: an error's `Display` is complete and already contains the text
//! of its cause (events and logs print it alone), so our errors keep their cause in a field
//! named `cause`, never as `source()`: nothing that prints a chain (anyhow at the edge) can
//! print a cause twice.

use ceph::{CephError, Fault, PoolQuota};
use domain::owner::StampMismatch;
use domain::params::{ParamErrors, SecretRef};
use domain::reclaim::{NotTheVolume, PlaceChanged, TargetError};
use domain::volume::ClaimError;

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
        cause: domain::clone::CloneError,
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
    NodeStage(#[from] domain::volume::NodeStageError),

    #[error("{object}: {cause}")]
    Ceph { object: String, cause: CephError },

    /// A write to the pool failed for want of room: its quota, or the whole cluster.
    #[error("{object}: pool {pool} is full: {}; {cause}. {}", full_why(.quota, .cluster), full_fix(.pool, .cluster))]
    PoolFull {
        object: String,
        pool: String,
        /// The quota reached, in words (see [`PoolQuota::reached`]), when it could be read.
        quota: Option<String>,
        /// ENOSPC: the cluster ran out of space, not the pool out of quota.
        cluster: bool,
        cause: CephError,
    },

    /// librbd's trash move said "no such image" while the image is still there: it does so
    /// when the pool is at its quota and has no trash object yet (it cannot make one).
    #[error(
        "{object}: moving it to the trash of pool {pool} did nothing (librbd reported the image gone, but it is still there){}; nothing was deleted. Make room: raise the quota (ceph osd pool set-quota {pool} max_objects|max_bytes N) or free space; the deletion is retried",
        .quota.as_ref().map(|q| format!(": the pool's quota {q} is reached")).unwrap_or_default()
    )]
    TrashMoveIgnored {
        object: String,
        pool: String,
        quota: Option<String>,
    },

    /// The monitors refused the key a Secret holds.
    #[error("{object}: Ceph refused the key of client.{user} from the {role} {secret}: it was rotated, or the user removed; {cause}. Put the current key in the Secret: kubectl -n {ns} create secret generic {name} --type=kubernetes.io/rbd --from-file=key=<(ceph auth get-key client.{user}) --dry-run=client -o yaml | kubectl apply -f - (or recreate the user); the claim is retried with it", ns = secret.namespace, name = secret.name)]
    CephAuth {
        object: String,
        user: String,
        role: SecretRole,
        secret: SecretRef,
        cause: CephError,
    },

    /// The user's caps do not allow an operation in the pool.
    #[error(
        "{object}: permission denied to client.{user} in pool {pool}: {cause}. Give it the caps: ceph auth caps client.{user} mon 'profile rbd' osd 'profile rbd pool={pool}' (the osd cap must name every pool it serves); the claim is retried"
    )]
    CephDenied {
        object: String,
        user: String,
        pool: String,
        cause: CephError,
    },

    #[error("{verb} {object}: {}", kube_cause(.cause))]
    Kube {
        verb: &'static str,
        object: String,
        cause: kube::Error,
    },

    /// A destructive step whose facts disagree: nothing was done.
    #[error("refusing to delete image {pool}/{image} of PersistentVolume {pv}: {why}")]
    Refused {
        pv: String,
        pool: String,
        image: String,
        why: FactsDisagree,
    },

    #[error(
        "PersistentVolume {pv} already exists and {why}; it is not the volume of claim {claim}, so nothing was overwritten: find out who made it (kubectl get pv {pv} -o yaml)"
    )]
    PvTaken {
        pv: String,
        claim: String,
        why: NotTheVolume,
    },

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
        why: FactsDisagree,
    },

    /// A VolumeSnapshot (or its content) that is not cut, checked or deleted.
    #[error("{object}: {cause}")]
    Snapshot {
        object: String,
        cause: domain::snapshot::SnapshotError,
    },

    /// A snapshot whose place (fsid, pool id) in its handle is not where its pool is now.
    #[error(
        "cannot {action} snapshot {handle}: {why}; nothing was changed. Check the monitors of the StorageClass that uses pool {pool}, or delete the VolumeSnapshotContent with deletionPolicy Retain"
    )]
    SnapshotMoved {
        action: &'static str,
        handle: String,
        pool: String,
        why: String,
    },

    /// No StorageClass of this provisioner reaches a snapshot's pool.
    #[error(
        "{object}: no StorageClass of provisioner {provisioner} with csiDriver {driver} uses pool {pool}; create one (its monitors and admin Secret are used to reach the snapshot)"
    )]
    NoClassForPool {
        object: String,
        provisioner: String,
        driver: String,
        pool: String,
    },

    /// A snapshot's RBD snapshot is not there.
    #[error(
        "{object}: RBD snapshot {handle} does not exist; fix spec.source.snapshotHandle (rbd snap ls <pool>/<image> lists them)"
    )]
    SnapshotGone { object: String, handle: String },

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

/// Why an image was not deleted, or its records not written: facts that disagree.
#[derive(Debug, thiserror::Error)]
pub enum FactsDisagree {
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
    /// No monitor list from any source reached the cluster the image was made in.
    #[error(
        "no source's monitors reach the Ceph cluster its image was made in{cluster}: {tried}; nothing was changed. Put the cluster's current monitors in the PV's StorageClass, in the ceph-csi-config entry for its clusterID, or in its {ANN_MONITORS} annotation; this is retried",
        ANN_MONITORS = domain::volume::ANN_MONITORS
    )]
    Unreached {
        /// " (clusterID X)" when the volume has one.
        cluster: String,
        /// Every source tried and what each said (`monitors::describe`).
        tried: String,
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
            Error::PoolFull { .. } | Error::TrashMoveIgnored { .. } => "pool_full",
            Error::CephAuth { .. } => "ceph_auth",
            Error::CephDenied { .. } => "ceph_denied",
            Error::Kube { .. } => "kube",
            Error::ImageInUse { .. } => "in_use",
            Error::Refused { .. } | Error::Mismatch { .. } => "refused",
            Error::PvTaken { .. } => "pv_taken",
            Error::Unlocated { .. }
            | Error::ImageTaken { .. }
            | Error::ClassGone { .. }
            | Error::ForeignClone { .. }
            | Error::NoClusterUid => "invalid",
            Error::Cached { .. } => "bug",
            Error::Snapshot { .. } | Error::NoClassForPool { .. } | Error::SnapshotGone { .. } => {
                "snapshot"
            }
            Error::SnapshotMoved { .. } => "refused",
        }
    }
}

fn full_why(quota: &Option<String>, cluster: &bool) -> String {
    match (quota, cluster) {
        (_, true) => "the cluster is out of space (ENOSPC)".into(),
        (Some(q), false) => format!("its quota {q} is reached"),
        (None, false) => "its quota is reached (EDQUOT)".into(),
    }
}

fn full_fix(pool: &str, cluster: &bool) -> String {
    if *cluster {
        "Make room: add OSDs or free space (ceph df, ceph health detail); the claim is retried and provisioned once there is room".into()
    } else {
        format!(
            "Make room: raise the quota (ceph osd pool set-quota {pool} max_objects|max_bytes N; 0 lifts it; ceph osd pool get-quota {pool} shows it) or delete volumes of the pool; the claim is retried and provisioned once there is room"
        )
    }
}

/// Who and where a Ceph call acted, to name in the errors of [`Error::ceph_fault`].
pub struct CephSide<'a> {
    pub user: &'a str,
    pub role: SecretRole,
    pub secret: &'a SecretRef,
    pub pool: &'a str,
}

impl Error {
    /// An [`Error::Ceph`] whose cause is a fault an operator fixes in Ceph becomes the error
    /// that names it (user, Secret, pool, quota) and the command that fixes it; others are
    /// returned as they are. `quota` is the pool's, read after an EDQUOT.
    pub fn ceph_fault(self, side: &CephSide<'_>, quota: Option<&PoolQuota>) -> Error {
        let Error::Ceph { object, cause } = self else {
            return self;
        };
        match cause.fault() {
            Some(Fault::PoolFull { quota: q }) => Error::PoolFull {
                object,
                pool: side.pool.to_string(),
                quota: quota.and_then(|p| p.reached().or_else(|| p.set())),
                cluster: !q,
                cause,
            },
            Some(Fault::Auth) => Error::CephAuth {
                object,
                user: side.user.to_string(),
                role: side.role,
                secret: side.secret.clone(),
                cause,
            },
            Some(Fault::Denied) => Error::CephDenied {
                object,
                user: side.user.to_string(),
                pool: side.pool.to_string(),
                cause,
            },
            Some(Fault::Blocklisted) | None => Error::Ceph { object, cause },
        }
    }

    /// Whether this is a pool's quota reached (EDQUOT), whose figures are worth reading.
    pub fn is_quota(&self) -> bool {
        matches!(self, Error::Ceph { cause, .. } if cause.fault() == Some(Fault::PoolFull { quota: true }))
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

    fn ceph(errno: i32) -> Error {
        let cause = if errno == libc::EACCES {
            CephError::Connect {
                monitors: "v1:127.0.0.1:6789".into(),
                user: "prov".into(),
                errno: ceph::Errno(errno),
                elapsed_ms: 4,
                hint: None,
            }
        } else {
            CephError::Image {
                op: ceph::Op::Create,
                pool: "tank".into(),
                image: "pvc-1".into(),
                errno: ceph::Errno(errno),
                hint: None,
            }
        };
        Error::Ceph {
            object: "image tank/pvc-1".into(),
            cause,
        }
    }

    fn side(secret: &SecretRef) -> CephSide<'_> {
        CephSide {
            user: "prov",
            role: SecretRole::Admin,
            secret,
            pool: "tank",
        }
    }

    #[test]
    fn ceph_faults_name_the_user_the_pool_and_the_fix() {
        let secret = SecretRef {
            namespace: "kube-system".into(),
            name: "ceph-admin".into(),
        };
        let quota = PoolQuota {
            max_objects: Some(12),
            max_bytes: None,
            objects: 13,
            bytes: 197,
        };
        let full = ceph(libc::EDQUOT);
        assert!(full.is_quota());
        let full = full.ceph_fault(&side(&secret), Some(&quota));
        assert_eq!(full.kind(), "pool_full");
        let t = full.to_string();
        for want in [
            "image tank/pvc-1: pool tank is full: its quota max_objects 12 (13 objects stored) is reached",
            "EDQUOT",
            "ceph osd pool set-quota tank max_objects|max_bytes N; 0 lifts it",
            "provisioned once there is room",
        ] {
            assert!(t.contains(want), "{want:?} not in {t}");
        }
        // The figures lag the writes: the quota is named even when none reads as reached.
        let lagging = PoolQuota {
            objects: 3,
            ..quota.clone()
        };
        let t = ceph(libc::EDQUOT)
            .ceph_fault(&side(&secret), Some(&lagging))
            .to_string();
        assert!(t.contains("its quota max_objects 12 is reached"), "{t}");
        let t = ceph(libc::EDQUOT)
            .ceph_fault(&side(&secret), None)
            .to_string();
        assert!(t.contains("its quota is reached (EDQUOT)"), "{t}");

        let t = ceph(libc::ENOSPC).ceph_fault(&side(&secret), None);
        assert_eq!(t.kind(), "pool_full");
        assert!(!t.is_quota());
        let t = t.to_string();
        assert!(
            t.contains("the cluster is out of space (ENOSPC)") && t.contains("add OSDs"),
            "{t}"
        );

        let auth = ceph(libc::EACCES).ceph_fault(&side(&secret), None);
        assert_eq!(auth.kind(), "ceph_auth");
        let t = auth.to_string();
        for want in [
            "Ceph refused the key of client.prov from the admin secret (adminSecretName) kube-system/ceph-admin",
            "EACCES",
            "kubectl -n kube-system create secret generic ceph-admin --type=kubernetes.io/rbd --from-file=key=<(ceph auth get-key client.prov)",
        ] {
            assert!(t.contains(want), "{want:?} not in {t}");
        }

        let denied = ceph(libc::EPERM).ceph_fault(&side(&secret), None);
        assert_eq!(denied.kind(), "ceph_denied");
        let t = denied.to_string();
        for want in [
            "permission denied to client.prov in pool tank",
            "EPERM",
            "ceph auth caps client.prov mon 'profile rbd' osd 'profile rbd pool=tank'",
        ] {
            assert!(t.contains(want), "{want:?} not in {t}");
        }

        // Blocklisting and the rest stay as they were: the hint says what happens.
        for errno in [libc::ESHUTDOWN, libc::ETIMEDOUT, libc::EEXIST] {
            assert_eq!(ceph(errno).ceph_fault(&side(&secret), None).kind(), "ceph");
        }
        // Not a Ceph error: untouched.
        let other = Error::NoClusterUid.ceph_fault(&side(&secret), None);
        assert_eq!(other.kind(), "invalid");
    }
}
