//! `migrate-to-csi` on the bed: PVs of the old external-storage provisioner and of ours,
//! rewritten as static ceph-csi PVs; the built binary runs as an operator would run it.

mod checks;
mod hostile;
mod resume;
mod setup;

use testbed as common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ceph::{Cluster, ImageSpec, RBD_FEATURE_LAYERING};
use checks::*;
use common::*;
use domain::migration::{self as plan, ANN_BACKUP, ANN_STEP, Admin, CsiSettings, DriverSource};
use domain::params::SecretRef;
use domain::reclaim::spec_image;
use domain::volume::{
    ANN_ADMIN_ID, ANN_ADMIN_SECRET, ANN_IMAGE, ANN_MONITORS, ANN_POOL, CSI_DRIVER, FINALIZER,
};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use setup::*;

const T: Duration = Duration::from_secs(60);
/// The volumes to migrate are `spec.rbd` ones: the provisioners here write them on every
/// plane (on 1.37, what a cluster upgraded before migrating is left with; 1.37 still accepts
/// such PVs). The classes keep their csi parameters, which migrate-to-csi reads.
const RBD_FLAVOR: &[(&str, &str)] = &[("VOLUME_FLAVOR", "rbd")];
const CLUSTER_ID: &str = "bed-cluster";
/// Where `migrate-to-csi` keeps its backups by default.
const BACKUP_NS: &str = "kube-system";

/// Dry run, a refusal while a pod uses a claim, then both volumes migrated; images untouched.
#[tokio::test]
async fn migrates_volumes_of_both_provisioners() {
    let mut s = Setup::new("migrate").await;
    // The old provisioner's volume in kube2 (made before our provisioner runs), ours in kube.
    let (legacy_claim, legacy_pv, legacy_image) = s.legacy_volume("legacy", "kube2").await;
    let _prov = Provisioner::start(&s.bed, &s.name, RBD_FLAVOR).await;
    let (our_claim, our_pv, our_image) = s.our_volume("ours").await;
    let legacy_before = s.pvs().get(&legacy_pv).await.unwrap();
    let ours_before = s.pvs().get(&our_pv).await.unwrap();
    let legacy_id = s.ceph.image_info("kube2", &legacy_image).await.unwrap().id;
    let our_id = s.ceph.image_info("kube", &our_image).await.unwrap().id;

    // A missing node-stage Secret is named, with the command that creates it.
    let (ok, out) = s
        .migrate(&[
            "--node-stage-secret",
            &format!("{}/nope", s.ns),
            "--dry-run",
        ])
        .await;
    assert!(!ok);
    assert!(
        out.contains(&format!("{}/nope not found", s.ns)) && out.contains("--from-literal=userID="),
        "{out}"
    );

    // Dry run: says what it would do, changes nothing.
    let (ok, out) = s.migrate(&["--dry-run"]).await;
    assert!(ok, "{out}");
    let l = line_of(&out, &legacy_pv);
    assert!(
        l.contains(&format!("({}/legacy, image kube2/{legacy_image})", s.ns)),
        "{l}"
    );
    assert!(
        l.contains("would migrate") && l.contains("old external-storage provisioner"),
        "{l}"
    );
    assert!(
        l.contains(&format!("clusterID {CLUSTER_ID}")) && l.contains(&s.csi_secret),
        "{l}"
    );
    let l = line_of(&out, &our_pv);
    assert!(
        l.contains("would migrate") && l.contains("provisioned by rbd-provisioner"),
        "{l}"
    );
    for (name, before) in [(&legacy_pv, &legacy_before), (&our_pv, &ours_before)] {
        let now = s.pvs().get(name).await.unwrap();
        assert_eq!(
            now.metadata.resource_version, before.metadata.resource_version,
            "dry run changed {name}"
        );
    }
    for pv in [&legacy_pv, &our_pv] {
        assert!(
            backup_of(&s.admin, pv).await.is_none(),
            "dry run saved no backup"
        );
    }

    // A pod (an API object: nothing runs it here) uses the legacy claim: that one is refused,
    // ours is migrated, and the command fails.
    pod_using(&s.admin, &s.ns, "app-0", "legacy").await;
    let pods = Api::<Pod>::namespaced(s.admin.clone(), &s.ns);
    let phases = PhaseLog::start(s.pvcs()).await;
    let started = Instant::now();
    let (ok, out) = s.migrate(&[]).await;
    let first_run = started.elapsed();
    assert!(!ok, "a refusal makes the command fail");
    let l = line_of(&out, &legacy_pv);
    assert!(
        l.contains(&format!(
            "refused: claim {}/legacy is used by pod(s) app-0; stop them",
            s.ns
        )),
        "{l}"
    );
    assert!(line_of(&out, &our_pv).ends_with(": migrated"), "{out}");
    assert!(out.contains("1 volume(s) refused and 0 failed"), "{out}");
    let untouched = s.pvs().get(&legacy_pv).await.unwrap();
    assert_eq!(
        untouched.metadata.resource_version,
        legacy_before.metadata.resource_version
    );
    assert_migrated(&s, &ours_before, &our_claim, "kube", &our_image).await;

    // Without the pod: the legacy volume goes too, ours is left as it is.
    pods.delete("app-0", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    wait_absent(&pods, "app-0", "pod gone", T).await;
    let started = Instant::now();
    let (ok, out) = s.migrate(&[]).await;
    let second_run = started.elapsed();
    assert!(ok, "{out}");
    assert!(line_of(&out, &legacy_pv).ends_with(": migrated"), "{out}");
    assert!(
        line_of(&out, &our_pv).contains(&format!(
            "skipped: already a csi volume (driver {CSI_DRIVER})"
        )),
        "{out}"
    );
    assert_migrated(&s, &legacy_before, &legacy_claim, "kube2", &legacy_image).await;
    let log = phases.finish().await;
    eprintln!("claim phases (time since the first run started): {log:?}");
    eprintln!("runs took {first_run:?} and {second_run:?}");
    for c in ["ours", "legacy"] {
        let lost = lost_for(&log, c).unwrap_or_else(|e| panic!("claim {c}: {e}"));
        eprintln!("claim {c} was Lost for {lost:?} (None: never)");
        // Without waking the binder this would last up to its resync period (15 s).
        assert!(
            lost.is_none_or(|d| d < Duration::from_secs(5)),
            "claim {c} Lost for {lost:?}"
        );
    }

    for c in [&legacy_claim, &our_claim] {
        let evs: Vec<_> = events_for(&s.admin, &s.ns, &uid_of(c))
            .await
            .into_iter()
            .map(|e| (e.type_, e.reason, e.note))
            .collect();
        eprintln!("events of claim {:?}: {evs:?}", c.metadata.name);
    }

    // The images are the same ones (same librbd id), untouched.
    assert_eq!(
        s.ceph.image_info("kube2", &legacy_image).await.unwrap().id,
        legacy_id
    );
    assert_eq!(
        s.ceph.image_info("kube", &our_image).await.unwrap().id,
        our_id
    );

    // Nothing left to do.
    let (ok, out) = s.migrate(&["--dry-run"]).await;
    assert!(ok && !out.contains("would"), "{out}");

    // Our delete path removes a migrated image later, even without the class.
    Api::<StorageClass>::all(s.admin.clone())
        .delete(&s.class, &DeleteParams::default())
        .await
        .unwrap();
    s.delete_claim("ours").await;
    wait_absent(&s.pvs(), &our_pv, "the migrated PV deleted", T).await;
    assert!(
        !image_exists(&s.ceph, "kube", &our_image).await,
        "image removed (or in the trash)"
    );
    s.cleanup().await;
}

/// Settings missing everywhere are named with the flag that gives them.
#[tokio::test]
async fn missing_csi_settings_are_named() {
    let s = Setup::new("mignoset").await;
    let bare = format!("{}-bare", s.ns);
    storage_class(
        &s.admin,
        &bare,
        &s.name,
        &[
            ("monitors", &s.bed.monitors),
            ("adminSecretName", "x"),
            ("userSecretName", "y"),
        ],
        json!({}),
    )
    .await;
    let run = |args: Vec<String>| {
        let kc = s.bed.kubeconfig.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rbd-provisioner"))
                .arg("--kubeconfig")
                .arg(kc)
                .arg("migrate-to-csi")
                .args(args)
                .env_remove("KUBECONFIG_PATH")
                .output()
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    let (ok, err) = run(vec!["--storage-class".into(), bare.clone()]).await;
    assert!(!ok && err.contains("pass --cluster-id"), "{err}");
    let (ok, err) = run(vec![
        "--storage-class".into(),
        bare.clone(),
        "--cluster-id".into(),
        "c".into(),
    ])
    .await;
    assert!(
        !ok && err.contains("pass --node-stage-secret NAMESPACE/NAME"),
        "{err}"
    );
    let (ok, err) = run(vec!["--storage-class".into(), "no-such-class".into()]).await;
    assert!(
        !ok && err.contains("StorageClass no-such-class not found"),
        "{err}"
    );
    // A Secret that is not in ceph-csi's format.
    let (ok, err) = run(vec![
        "--storage-class".into(),
        bare.clone(),
        "--cluster-id".into(),
        "c".into(),
        "--node-stage-secret".into(),
        format!("default/{}-user", s.ns),
    ])
    .await;
    assert!(!ok && err.contains("has no userID"), "{err}");
    let _ = Api::<StorageClass>::all(s.admin.clone())
        .delete(&bare, &DeleteParams::default())
        .await;
    s.cleanup().await;
}

/// Rook's driver name, in a class's `csiDriver`.
const ROOK_DRIVER: &str = "rook-ceph.rbd.csi.ceph.com";
/// On the CSIDriver this file registers, so that a leftover of a failed run is known as ours.
const MADE_BY: (&str, &str) = ("rbd-provisioner.test/made-by", "migrate");

/// A class with `csiDriver: rook-ceph.rbd.csi.ceph.com`: while no such CSIDriver is
/// registered, the run is refused before anything is rewritten; once it is, the volume
/// migrates to a PV of that driver, and a rerun sees it done.
#[tokio::test]
async fn migrates_to_the_class_csi_driver_only_once_it_is_installed() {
    let mut s = Setup::with("migrook", &[("csiDriver", ROOK_DRIVER)]).await;
    let drivers = Api::<CSIDriver>::all(s.admin.clone());
    if let Some(d) = drivers.get_opt(ROOK_DRIVER).await.unwrap() {
        let labels = d.metadata.labels.unwrap_or_default();
        assert_eq!(
            labels.get(MADE_BY.0).map(String::as_str),
            Some(MADE_BY.1),
            "CSIDriver {ROOK_DRIVER} exists and was not made by this test, which needs it absent first"
        );
        drivers
            .delete(ROOK_DRIVER, &DeleteParams::default())
            .await
            .unwrap();
        wait_absent(&drivers, ROOK_DRIVER, "the leftover CSIDriver gone", T).await;
    }
    // The default driver is there: only the class's own counts.
    csi_driver(&s.admin, CSI_DRIVER).await;
    let (claim, pv, image) = s.legacy_volume("data", "kube").await;
    let before = s.pvs().get(&pv).await.unwrap();

    for extra in [&["--dry-run"][..], &[]] {
        let (ok, out) = s.migrate(extra).await;
        assert!(!ok, "{extra:?}: {out}");
        assert!(
            out.contains(&format!(
                "CSIDriver {ROOK_DRIVER} does not exist in this cluster"
            )) && out.contains("nothing was changed"),
            "{extra:?}: {out}"
        );
        assert!(
            out.contains(&format!(
                "{ROOK_DRIVER} is the csiDriver of StorageClass {}",
                s.class
            )) && out.contains("Install ceph-csi's rbd plugin"),
            "what to install or fix: {out}"
        );
        let now = s.pvs().get(&pv).await.unwrap();
        assert_eq!(
            now.metadata.resource_version, before.metadata.resource_version,
            "{extra:?}: the PV was written"
        );
        assert_untouched(&before, &now);
        assert!(backup_of(&s.admin, &pv).await.is_none(), "{extra:?}");
    }

    let mut made: CSIDriver = serde_json::from_value(json!({
        "metadata": {"name": ROOK_DRIVER, "labels": {MADE_BY.0: MADE_BY.1}},
        "spec": {"attachRequired": true, "podInfoOnMount": false},
    }))
    .unwrap();
    made = drivers.create(&PostParams::default(), &made).await.unwrap();
    let (ok, out) = s.migrate(&["--dry-run"]).await;
    assert!(ok, "{out}");
    assert!(
        line_of(&out, &pv).contains(&format!("spec.rbd → spec.csi ({ROOK_DRIVER}, clusterID")),
        "{out}"
    );
    let (ok, out) = s.migrate(&[]).await;
    assert!(ok, "{out}");
    assert!(line_of(&out, &pv).ends_with(": migrated"), "{out}");
    // Its csi PV names Rook's driver (assert_migrated compares with the class's).
    assert_migrated(&s, &before, &claim, "kube", &image).await;
    let (ok, out) = s.migrate(&[]).await;
    assert!(ok, "{out}");
    assert!(
        line_of(&out, &pv).contains(&format!(
            "skipped: already a csi volume (driver {ROOK_DRIVER})"
        )),
        "{out}"
    );

    let _ = drivers
        .delete(
            ROOK_DRIVER,
            &DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: made.metadata.uid.take(),
                    resource_version: None,
                }),
                ..Default::default()
            },
        )
        .await;
    s.cleanup().await;
}
