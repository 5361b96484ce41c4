//! The Kubernetes side of a class: the PV flavour against the server, RBAC on the Secrets,
//! and the Secrets themselves.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::error::SecretRole;
use ceph::CephKey;
use domain::params::{ClassParams, Flavor, SecretRef};

use super::{Row, Status, cannot_ask, fail, row};

/// The `user` of a SubjectAccessReview for a "namespace:name" ServiceAccount.
pub(super) fn sa_user(service_account: &str) -> String {
    let (ns, name) = service_account
        .split_once(':')
        .unwrap_or(("kube-system", service_account));
    format!("system:serviceaccount:{ns}:{name}")
}

/// The PV flavour against the server: in-tree rbd is gone from 1.31; csi needs the driver.
pub(super) async fn flavor_row(
    client: &Client,
    p: &ClassParams,
    flavor: Flavor,
    server: (u32, u32),
) -> Row {
    let check = "volume flavour";
    match flavor {
        Flavor::Rbd if server >= (1, 31) => fail(
            check,
            format!(
                "spec.rbd PVs, but Kubernetes {}.{} has no in-tree rbd plugin (removed in 1.31)",
                server.0, server.1
            ),
            "set volumeFlavor: csi (with clusterID and csiNodeStageSecretName) and install ceph-csi",
        ),
        Flavor::Rbd => row(
            check,
            Status::Ok,
            format!("in-tree spec.rbd on Kubernetes {}.{}", server.0, server.1),
        ),
        Flavor::Csi => {
            match Api::<CSIDriver>::all(client.clone()).get_opt(&p.csi_driver).await {
                Ok(Some(_)) => row(
                    check,
                    Status::Ok,
                    format!("ceph-csi static PVs, driver {} installed", p.csi_driver),
                ),
                Ok(None) => Row {
                    check,
                    status: Status::Warn,
                    detail: format!(
                        "ceph-csi static PVs, but no CSIDriver {} is registered: pods cannot mount them",
                        p.csi_driver
                    ),
                    fix: Some(
                        "install ceph-csi's rbd plugin, or set csiDriver to the name kubectl get csidrivers shows (Rook: rook-ceph.rbd.csi.ceph.com)".into(),
                    ),
                },
                Err(e) => cannot_ask(check, "list CSIDrivers", &e),
            }
        }
    }
}

/// Whether the provisioner's ServiceAccount may read the Secret (asked of the API server).
pub(super) async fn rbac_row(
    client: &Client,
    role: SecretRole,
    s: &SecretRef,
    service_account: &str,
) -> Row {
    let check = match role {
        SecretRole::Admin => "admin secret RBAC",
        SecretRole::User => "user secret RBAC",
        SecretRole::CsiNodeStage => "csi secret RBAC",
    };
    let user = sa_user(service_account);
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.clone()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(s.namespace.clone()),
                verb: Some("get".into()),
                resource: Some("secrets".into()),
                name: Some(s.name.clone()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    // The csi secret is read by kubelet, not by us; only warn when we cannot see it.
    let status_if_denied = if role == SecretRole::CsiNodeStage {
        Status::Warn
    } else {
        Status::Fail
    };
    match Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
    {
        Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => {
            row(check, Status::Ok, format!("{user} may get {s}"))
        }
        Ok(_) => Row {
            check,
            status: status_if_denied,
            detail: format!("{user} may not get {s}"),
            fix: Some(format!(
                "add namespace {} to the Secret-reading RoleBindings (the secret-namespaces overlay in examples/overlays/, see README \"Deploying into a cluster\")",
                s.namespace
            )),
        },
        Err(e) => cannot_ask(check, "ask the API server (SubjectAccessReview)", &e),
    }
}

/// Reads the key of a Secret (with our own credentials) and records the outcome.
pub(super) async fn secret_row(
    client: &Client,
    rows: &mut Vec<Row>,
    check: &'static str,
    role: SecretRole,
    s: &SecretRef,
    ceph_user: &str,
    service_account: &str,
) -> Option<CephKey> {
    match crate::k8s::ceph_key(client, role, s, ceph_user, service_account).await {
        Ok(k) => {
            rows.push(row(check, Status::Ok, format!("{s} holds a key")));
            Some(k)
        }
        Err(e) => {
            rows.push(fail(
                check,
                e.to_string(),
                format!(
                    "kubectl -n {} create secret generic {} --type=kubernetes.io/rbd --from-file=key=<(ceph auth get-key client.{ceph_user})",
                    s.namespace, s.name
                ),
            ));
            None
        }
    }
}
