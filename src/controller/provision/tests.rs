//! The claim reconciler's decisions against a scripted API server: what it reads, what it
//! writes (and what it must not), and how it reports failures. Nothing here reaches Ceph:
//! the scenarios stop before the image is made, or start once it exists.

use std::collections::BTreeMap;

use http::{Method, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaimSpec, Secret, TypedLocalObjectReference,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::controller::cached::Cached;
use crate::controller::run::error_policy;
use crate::controller::testing::{
    ApiServer, PROVISIONER, Reply, Seen, Step, expect, not_found, object,
};
use crate::error::is_status;
use ceph::CephKey;
use domain::reclaim::NotTheVolume;
use domain::volume::ANN_PROVISIONED_BY;

const UID: &str = "4f0e2a57-9a7e-4c55-8b0c-2a1d6c1e0b11";
const CLASS: &str = "/apis/storage.k8s.io/v1/storageclasses/fast";
const PVS: &str = "/api/v1/persistentvolumes";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/apps/events";
const ADMIN_SECRET: &str = "/api/v1/namespaces/kube-system/secrets/ceph-admin";
const USER_SECRET: &str = "/api/v1/namespaces/apps/secrets/ceph-user";
const CLAIM: &str = "/api/v1/namespaces/apps/persistentvolumeclaims/data";

fn pv_path() -> String {
    format!("{PVS}/pvc-{UID}")
}

/// A claim kube-controller-manager has handed to us.
fn claim() -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            namespace: Some("apps".into()),
            name: Some("data".into()),
            uid: Some(UID.into()),
            annotations: Some(BTreeMap::from([(
                claim::ANN_STORAGE_PROVISIONER.to_string(),
                PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some("fast".into()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity("1Gi".into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The claim as the claims controller hands it to the error policy.
fn cached(pvc: &PersistentVolumeClaim) -> Arc<Cached<PersistentVolumeClaim>> {
    Arc::new(Cached::new(pvc.clone()).unwrap())
}

fn class() -> StorageClass {
    domain::fixtures::storage_class(PROVISIONER, domain::fixtures::RBD_PARAMS)
}

/// The admin Secret's read, answered with the Secret.
fn admin_secret_found() -> Step {
    expect(
        Method::GET,
        ADMIN_SECRET,
        object(&secret("ceph-admin", "kube-system")),
    )
}

fn secret(name: &str, namespace: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "key".to_string(),
            ByteString(b"AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==".to_vec()),
        )])),
        ..Default::default()
    }
}

fn rbd_plan() -> Plan {
    provision_plan::draft(&claim(), &class(), Flavor::Rbd)
        .unwrap()
        .plan(None, None)
}

/// The PV an earlier attempt of ours wrote for the claim.
fn our_pv() -> PersistentVolume {
    rbd_plan().pv(&class(), None, PROVISIONER, Some(&place()))
}

/// A PV under our name that another provisioner wrote.
fn foreign_pv() -> PersistentVolume {
    let mut pv = our_pv();
    if let Some(a) = pv.metadata.annotations.as_mut() {
        a.insert(ANN_PROVISIONED_BY.into(), "example.com/other".into());
    }
    pv
}

fn conflict() -> Reply {
    Reply::Failure(StatusCode::CONFLICT, "AlreadyExists")
}

fn server_error() -> Reply {
    Reply::Failure(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable")
}

fn context(script: Vec<Step>) -> (Arc<Context>, ApiServer) {
    let (client, api) = ApiServer::start(script);
    (Arc::new(Context::for_tests(client)), api)
}

/// The writes among the requests: anything but a read.
fn writes(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter(|s| s.method != Method::GET)
        .map(|s| format!("{} {}", s.method, s.path))
        .collect()
}

#[tokio::test]
async fn a_missing_class_makes_a_handed_claim_wait_without_writes() {
    let (ctx, api) = context(vec![expect(Method::GET, CLASS, not_found())]);
    let action = reconcile(Arc::new(claim()), ctx).await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(60)));
    assert_eq!(writes(&api.done()), Vec::<String>::new());
}

#[tokio::test]
async fn a_missing_admin_secret_is_secret_not_found_and_no_pv_is_written() {
    let (ctx, api) = context(vec![
        expect(Method::GET, CLASS, object(&class())),
        expect(Method::GET, pv_path(), not_found()),
        expect(Method::POST, EVENTS, Reply::Echo(StatusCode::CREATED)),
        expect(Method::GET, ADMIN_SECRET, not_found()),
        expect(Method::POST, EVENTS, Reply::Echo(StatusCode::CREATED)),
    ]);
    let pvc = Arc::new(claim());
    let err = reconcile(pvc.clone(), ctx.clone()).await.unwrap_err();
    let Error::SecretNotFound { role, secret, user } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(*role, SecretRole::Admin);
    assert_eq!(secret.to_string(), "kube-system/ceph-admin");
    assert_eq!(user, "admin");

    let seen = api.done();
    assert_eq!(writes(&seen), vec![format!("POST {EVENTS}"); 2]);
    assert_eq!(seen[2].body["reason"], "Provisioning");
    assert_eq!(
        seen[2].body["note"],
        "External provisioner ceph.com/rbd is provisioning volume for claim apps/data"
    );
    assert_eq!(seen[4].body["reason"], "ProvisioningFailed");
    assert_eq!(seen[4].body["type"], "Warning");
    assert_eq!(seen[4].body["note"], err.to_string());

    // The error policy retries it, backing off.
    assert_eq!(
        error_policy(cached(&pvc), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        error_policy(cached(&pvc), &err, ctx),
        Action::requeue(Duration::from_secs(2))
    );
}

#[tokio::test]
async fn a_missing_user_secret_is_secret_not_found_after_the_admin_key_is_read() {
    let (ctx, api) = context(vec![
        admin_secret_found(),
        expect(Method::GET, USER_SECRET, not_found()),
    ]);
    let draft = provision_plan::draft(&claim(), &class(), Flavor::Rbd).unwrap();
    let err = plan(draft, None, &ctx).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::SecretNotFound {
                role: SecretRole::User,
                user,
                ..
            } if user == "kube"
        ),
        "{err:?}"
    );
    assert_eq!(writes(&api.done()), Vec::<String>::new());
}

#[tokio::test]
async fn the_plan_keeps_the_admin_key_and_only_checks_the_user_secret() {
    let (ctx, api) = context(vec![
        admin_secret_found(),
        expect(
            Method::GET,
            USER_SECRET,
            object(&secret("ceph-user", "apps")),
        ),
    ]);
    let draft = provision_plan::draft(&claim(), &class(), Flavor::Rbd).unwrap();
    let (plan, creds) = plan(draft, None, &ctx).await.unwrap();
    assert_eq!(plan, rbd_plan());
    assert_eq!(creds.user, "admin");
    assert_eq!(creds.monitors, vec!["10.0.0.1:6789"]);
    assert!(creds.key == CephKey::new("AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ=="));
    assert_eq!(writes(&api.done()), Vec::<String>::new());
}

#[tokio::test]
async fn a_missing_clone_source_is_a_clone_error_before_any_pv_is_read() {
    let mut pvc = claim();
    if let Some(s) = pvc.spec.as_mut() {
        s.data_source = Some(TypedLocalObjectReference {
            api_group: None,
            kind: "PersistentVolumeClaim".into(),
            name: "golden".into(),
        });
    }
    let (ctx, api) = context(vec![expect(
        Method::GET,
        "/api/v1/namespaces/apps/persistentvolumeclaims/golden",
        not_found(),
    )]);
    let err = prepare(&pvc, &class(), &ctx).await.unwrap_err();
    assert!(
        matches!(&err, Error::Clone { claim, cause: clone::CloneError::Missing(source) }
            if claim == "apps/data" && source == "apps/golden"),
        "{err:?}"
    );
    api.done();
}

#[tokio::test]
async fn our_pv_from_an_earlier_attempt_means_done_without_writes() {
    let (ctx, api) = context(vec![
        expect(Method::GET, CLASS, object(&class())),
        expect(Method::GET, pv_path(), object(&our_pv())),
    ]);
    let action = reconcile(Arc::new(claim()), ctx).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(writes(&api.done()), Vec::<String>::new());
}

#[tokio::test]
async fn a_foreign_pv_under_our_name_is_refused_and_left_alone() {
    let (ctx, api) = context(vec![
        expect(Method::GET, CLASS, object(&class())),
        expect(Method::GET, pv_path(), object(&foreign_pv())),
        expect(Method::POST, EVENTS, Reply::Echo(StatusCode::CREATED)),
    ]);
    let err = reconcile(Arc::new(claim()), ctx).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::PvTaken {
                why: NotTheVolume::ProvisionedBy { .. },
                ..
            }
        ),
        "{err:?}"
    );
    let seen = api.done();
    assert_eq!(writes(&seen), vec![format!("POST {EVENTS}")]);
    assert_eq!(seen[2].body["reason"], "ProvisioningFailed");
}

#[tokio::test]
async fn a_pv_create_conflicting_with_our_own_pv_counts_as_done() {
    let (ctx, api) = context(vec![
        expect(Method::POST, PVS, conflict()),
        expect(Method::GET, pv_path(), object(&our_pv())),
    ]);
    let plan = rbd_plan();
    let msg = write_pv(&plan, &class(), None, &ctx, &place())
        .await
        .unwrap();
    assert_eq!(msg, plan.succeeded(None));
    let seen = api.done();
    assert_eq!(seen[0].body["metadata"]["name"], format!("pvc-{UID}"));
}

#[tokio::test]
async fn a_pv_create_conflicting_with_a_foreign_pv_is_refused() {
    let (ctx, api) = context(vec![
        expect(Method::POST, PVS, conflict()),
        expect(Method::GET, pv_path(), object(&foreign_pv())),
    ]);
    let err = write_pv(&rbd_plan(), &class(), None, &ctx, &place())
        .await
        .unwrap_err();
    let Error::PvTaken { pv, claim, why } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(pv, &format!("pvc-{UID}"));
    assert_eq!(claim, "apps/data");
    assert_eq!(
        why,
        &NotTheVolume::ProvisionedBy {
            provisioner: PROVISIONER.into(),
            by: "example.com/other".into()
        }
    );
    // Refused means untouched: no update, no delete after the failed create.
    assert_eq!(writes(&api.done()), vec![format!("POST {PVS}")]);
}

#[tokio::test]
async fn a_pv_create_failing_with_5xx_is_reported_and_the_retry_writes_it() {
    let (ctx, api) = context(vec![
        expect(Method::POST, PVS, server_error()),
        expect(Method::POST, PVS, Reply::Echo(StatusCode::CREATED)),
    ]);
    let plan = rbd_plan();
    let err = write_pv(&plan, &class(), None, &ctx, &place())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Kube { verb: "create PersistentVolume", cause, .. }
            if is_status(cause, 503)),
        "{err:?}"
    );
    assert_eq!(err.kind(), "kube");
    let pvc = Arc::new(claim());
    assert_eq!(
        error_policy(cached(&pvc), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        write_pv(&plan, &class(), None, &ctx, &place())
            .await
            .unwrap(),
        plan.succeeded(None)
    );
    let seen = api.done();
    assert_eq!(seen[0].body, seen[1].body, "the retry writes the same PV");
}

#[tokio::test]
async fn a_pv_create_lost_in_a_timeout_is_found_as_ours_on_retry() {
    let (ctx, api) = context(vec![
        expect(Method::POST, PVS, Reply::Unreachable),
        // The API server had stored it before the connection failed.
        expect(Method::POST, PVS, conflict()),
        expect(Method::GET, pv_path(), object(&our_pv())),
    ]);
    let plan = rbd_plan();
    let err = write_pv(&plan, &class(), None, &ctx, &place())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Kube { verb: "create PersistentVolume", cause, .. }
            if !matches!(cause, kube::Error::Api(_))),
        "{err:?}"
    );
    assert_eq!(
        write_pv(&plan, &class(), None, &ctx, &place())
            .await
            .unwrap(),
        plan.succeeded(None)
    );
    api.done();
}

#[tokio::test]
async fn the_claim_is_asked_again_at_the_api_server_before_the_pv_is_written() {
    let mut replaced = claim();
    replaced.metadata.uid = Some("the-uid-of-a-newer-claim".into());
    let (ctx, api) = context(vec![
        expect(Method::GET, CLAIM, object(&claim())),
        expect(Method::GET, CLAIM, not_found()),
        expect(Method::GET, CLAIM, object(&replaced)),
        expect(Method::GET, CLAIM, server_error()),
    ]);
    let plan = rbd_plan();
    assert!(!claim_withdrawn_meanwhile(&plan, &ctx).await.unwrap());
    assert!(claim_withdrawn_meanwhile(&plan, &ctx).await.unwrap());
    assert!(claim_withdrawn_meanwhile(&plan, &ctx).await.unwrap());
    // Not knowing is not "gone": the image must not be removed on a failed read.
    let err = claim_withdrawn_meanwhile(&plan, &ctx).await.unwrap_err();
    assert!(
        matches!(&err, Error::Kube { verb: "read PersistentVolumeClaim", object, .. }
            if object == "apps/data"),
        "{err:?}"
    );
    api.done();
}

/// A burst of claims reads a Secret once while the memo holds it; once it has expired the
/// Secret is read again, and a failed read is never remembered.
#[tokio::test]
async fn a_secret_is_read_once_per_memo_and_failures_are_not_kept() {
    let (client, api) = ApiServer::start(vec![
        admin_secret_found(),
        expect(Method::GET, ADMIN_SECRET, not_found()),
        admin_secret_found(),
    ]);
    let mut ctx = Context::for_tests(client);
    ctx.kube.secrets = crate::k8s::SecretMemo::new(Duration::from_millis(300));
    let admin = domain::params::SecretRef {
        namespace: "kube-system".into(),
        name: "ceph-admin".into(),
    };
    let key = || {
        ctx.kube
            .secrets
            .ceph_key(&ctx.kube.client, SecretRole::Admin, &admin, "admin", "sa")
    };
    let first = key().await.unwrap();
    assert_eq!(
        key().await.unwrap(),
        first,
        "the second read comes from the memo"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        matches!(key().await, Err(Error::SecretNotFound { .. })),
        "an expired memo reads again"
    );
    assert_eq!(key().await.unwrap(), first, "a failure was not remembered");
    assert_eq!(api.done().len(), 3);
}

/// Where the test volumes are made.
fn place() -> domain::owner::Place {
    domain::owner::Place {
        fsid: "f-1".into(),
        pool_id: 3,
    }
}
