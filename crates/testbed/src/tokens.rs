//! Credentials the provisioner under test runs with: a token of the shipped ServiceAccount
//! (or of a Helm release's).

use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::{Bed, apply_yaml, repo_root, unique, wait_for};

/// Applies manifests/rbac/ and returns a kubeconfig file that authenticates as the shipped
/// ServiceAccount, so the provisioner under test has exactly the rights the manifests grant.
pub async fn service_account_kubeconfig(bed: &Bed) -> std::path::PathBuf {
    let admin = bed.admin().await;
    let mut files: Vec<_> = std::fs::read_dir(repo_root().join("manifests/rbac"))
        .expect("manifests/rbac")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for f in files {
        apply_yaml(&admin, &std::fs::read_to_string(&f).unwrap(), &[]).await;
    }
    token_kubeconfig(bed, "kube-system", "rbd-provisioner").await
}

/// A kubeconfig file that authenticates as ServiceAccount `ns/name` of the bed (the manifests'
/// or a Helm release's), so a provisioner run with it has exactly the rights RBAC gives that
/// account.
pub async fn token_kubeconfig(bed: &Bed, ns: &str, name: &str) -> std::path::PathBuf {
    let admin = bed.admin().await;
    // A bound token from the TokenRequest API (1.20 and 1.37 alike; 1.24+ no longer makes
    // token Secrets for ServiceAccounts), valid for longer than any test run.
    let sas: Api<ServiceAccount> = Api::namespaced(admin, ns);
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [], "expirationSeconds": 6 * 3600},
        }))
        .unwrap();
    let token = wait_for(
        &format!("a token for the ServiceAccount {ns}/{name}"),
        Duration::from_secs(30),
        || async {
            let t = sas
                .create_token_request(name, &PostParams::default(), &request)
                .await
                .ok()?;
            Some(t.status?.token)
        },
    )
    .await;
    let kc = kube::config::Kubeconfig::read_from(&bed.kubeconfig).unwrap();
    let cluster = &kc.clusters[0].cluster.as_ref().unwrap();
    let server = cluster.server.clone().unwrap();
    let ca = cluster.certificate_authority_data.clone().unwrap();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: bed\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: sa\n  context:\n    cluster: bed\n    user: {name}\ncurrent-context: sa\n"
    );
    // The manifests' account keeps its file name (other tests' logs name it).
    let file = if (ns, name) == ("kube-system", "rbd-provisioner") {
        "rbd-provisioner-sa.kubeconfig".to_string()
    } else {
        format!("{ns}-{name}-sa.kubeconfig")
    };
    let path = bed.dir.join(&file);
    let tmp = bed.dir.join(unique(&format!("{file}.tmp")));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// A client that acts as user `user` (impersonated by the bed's admin), with only the rights
/// RBAC gives that user.
pub async fn client_as(bed: &Bed, user: &str) -> Client {
    let kc = kube::config::Kubeconfig::read_from(&bed.kubeconfig).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.auth_info.impersonate = Some(user.to_string());
    Client::try_from(cfg).unwrap()
}
