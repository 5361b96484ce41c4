use super::*;
use crate::controller::testing::{ApiServer, expect, not_found};
use domain::params::SecretRef;
use http::Method;

/// A context whose API server answers one GET of `path`, with 404.
fn not_found_at(path: &str) -> (Context, ApiServer) {
    let (client, api) = ApiServer::start(vec![expect(Method::GET, path, not_found())]);
    (Context::for_tests(client), api)
}

/// The image of PV pvc-1, to be deleted with these admin credentials.
fn target(monitors: Vec<String>, admin: AdminSource) -> DeleteTarget {
    DeleteTarget {
        pool: "kube".into(),
        image: "kubernetes-dynamic-pvc-1".into(),
        monitors,
        admin,
    }
}

/// A volume of the old provisioner records no admin credentials: a class gone is the
/// typed error that tells how to recover, and nothing is written meanwhile.
#[tokio::test]
async fn an_old_volume_whose_class_is_gone_is_class_gone_without_writes() {
    let (ctx, api) = not_found_at("/apis/storage.k8s.io/v1/storageclasses/old");
    let target = target(Vec::new(), AdminSource::FromClass("old".into()));
    let err = ctx.admin_credentials("pvc-1", &target).await.unwrap_err();
    assert!(
        matches!(&err, Error::ClassGone { pv, class, .. } if pv == "pvc-1" && class == "old"),
        "{err:?}"
    );
    api.done();
}

#[tokio::test]
async fn a_recorded_admin_secret_that_is_gone_is_secret_not_found() {
    let (ctx, api) = not_found_at("/api/v1/namespaces/kube-system/secrets/ceph-admin");
    let secret = SecretRef {
        namespace: "kube-system".into(),
        name: "ceph-admin".into(),
    };
    let target = target(
        vec!["10.0.0.1:6789".into()],
        AdminSource::Recorded {
            admin_id: "admin".into(),
            secret: secret.clone(),
        },
    );
    let err = ctx.admin_credentials("pvc-1", &target).await.unwrap_err();
    assert!(
        matches!(&err, Error::SecretNotFound { role: SecretRole::Admin, secret: s, .. } if *s == secret),
        "{err:?}"
    );
    api.done();
}

mod sources {
    use super::*;
    use crate::controller::testing::scene::{
        ADMIN_KEY, FSID, MONITORS, POOL, Scene, UID, admin_secret_read, released_pv,
    };
    use crate::controller::testing::{Reply, Step};
    use http::StatusCode;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;
    use std::collections::BTreeMap;
    use testbed::fake_ceph::FakeCeph;

    const CONFIG_MAP: &str = "/api/v1/namespaces/kube-system/configmaps/ceph-csi-config";
    const PROFILES: &str = "/apis/csi.ceph.io/v1alpha1/clientprofiles";
    const CONNECTION: &str = "/apis/csi.ceph.io/v1alpha1/namespaces/operator/cephconnections/conn";

    /// Our released volume whose recorded monitors no longer answer, and whose class is gone.
    fn moved_pv(scene: &Scene) -> PersistentVolume {
        let mut pv = released_pv(UID, &scene.place());
        let spec = pv.spec.as_mut().unwrap();
        spec.rbd.as_mut().unwrap().monitors = vec!["gone:6789".into()];
        spec.storage_class_name = None;
        pv
    }

    /// A second cluster with another fsid, answering at `other:6789` to the scene's key.
    fn other_cluster(scene: &Scene) -> FakeCeph {
        let other = FakeCeph::with_pools(&[POOL]).at_monitors("other:6789");
        other.set_fsid("0b7c0a4e-0000-4000-8000-000000000000");
        scene.connector.serve(&other, "admin", ADMIN_KEY);
        other
    }

    fn config_map(entries: serde_json::Value) -> Step {
        let cm = ConfigMap {
            data: Some(BTreeMap::from([(
                "config.json".to_string(),
                entries.to_string(),
            )])),
            ..Default::default()
        };
        expect(
            Method::GET,
            CONFIG_MAP,
            crate::controller::testing::object(&cm),
        )
    }

    fn context(scene: &Scene, script: Vec<Step>, profiles: bool) -> (Context, ApiServer) {
        let (client, api) = ApiServer::start(script);
        let mut ctx = Context::for_tests_with_ceph(client, scene.connector.clone());
        ctx.settings.ceph_csi_config = Some(("kube-system".into(), "ceph-csi-config".into()));
        ctx.settings.client_profiles = profiles;
        (ctx, api)
    }

    fn refuse(why: FactsDisagree) -> Error {
        Error::Mismatch {
            action: "test",
            pv: "pvc".into(),
            why,
        }
    }

    #[tokio::test]
    async fn the_ceph_csi_config_entry_reaches_a_volume_whose_monitors_moved() {
        let scene = Scene::new();
        let pv = moved_pv(&scene);
        let t = reclaim::target(&pv).unwrap();
        let script = vec![
            config_map(json!([{"clusterID": FSID, "monitors": [MONITORS]}])),
            admin_secret_read(),
        ];
        let (ctx, api) = context(&scene, script, false);
        let cluster = ctx.volume_cluster(&pv, &t, refuse).await.unwrap();
        assert_eq!(cluster.monitors(), MONITORS);
        api.done();
        assert!(scene.writes().is_empty());
    }

    #[tokio::test]
    async fn a_client_profile_reaches_it_when_the_config_map_does_not() {
        let scene = Scene::new();
        let pv = moved_pv(&scene);
        let t = reclaim::target(&pv).unwrap();
        let profile = json!({"apiVersion": "csi.ceph.io/v1alpha1", "kind": "ClientProfileList",
            "metadata": {}, "items": [{"apiVersion": "csi.ceph.io/v1alpha1", "kind": "ClientProfile",
            "metadata": {"name": FSID, "namespace": "operator"},
            "spec": {"cephConnectionRef": {"name": "conn"}}}]});
        let connection = json!({"apiVersion": "csi.ceph.io/v1alpha1", "kind": "CephConnection",
            "metadata": {"name": "conn", "namespace": "operator"},
            "spec": {"monitors": [MONITORS]}});
        let script = vec![
            expect(Method::GET, CONFIG_MAP, not_found()),
            expect(
                Method::GET,
                PROFILES,
                Reply::Object(StatusCode::OK, profile),
            ),
            expect(
                Method::GET,
                CONNECTION,
                Reply::Object(StatusCode::OK, connection),
            ),
            admin_secret_read(),
        ];
        let (ctx, api) = context(&scene, script, true);
        let cluster = ctx.volume_cluster(&pv, &t, refuse).await.unwrap();
        assert_eq!(cluster.monitors(), MONITORS);
        api.done();
    }

    /// Served nowhere (no CRDs: 404), the ClientProfiles say nothing; the record is tried.
    #[tokio::test]
    async fn another_cluster_under_the_same_cluster_id_is_passed_over() {
        let scene = Scene::new();
        let other = other_cluster(&scene);
        other.put_image(POOL, &domain::volume::image_name(UID), 1 << 30);
        let mut pv = moved_pv(&scene);
        pv.spec.as_mut().unwrap().rbd.as_mut().unwrap().monitors = vec![MONITORS.into()];
        let t = reclaim::target(&pv).unwrap();
        let script = vec![
            config_map(json!([{"clusterID": FSID, "monitors": ["other:6789"]}])),
            expect(Method::GET, PROFILES, not_found()),
            admin_secret_read(),
        ];
        let (ctx, api) = context(&scene, script, true);
        let cluster = ctx.volume_cluster(&pv, &t, refuse).await.unwrap();
        assert_eq!(
            cluster.monitors(),
            MONITORS,
            "the record's, not the other cluster's"
        );
        api.done();
        assert!(other.writes().is_empty() && scene.writes().is_empty());
    }

    #[tokio::test]
    async fn nothing_reaching_the_cluster_names_every_source_tried_and_changes_nothing() {
        let scene = Scene::new();
        let other = other_cluster(&scene);
        let pv = moved_pv(&scene);
        let t = reclaim::target(&pv).unwrap();
        let script = vec![
            config_map(json!([{"clusterID": FSID, "monitors": ["other:6789"]}])),
            admin_secret_read(),
        ];
        let (ctx, api) = context(&scene, script, false);
        let err = ctx.volume_cluster(&pv, &t, refuse).await.unwrap_err();
        let Error::Mismatch {
            why: FactsDisagree::Unreached { cluster, tried },
            ..
        } = &err
        else {
            panic!("{err:?}");
        };
        assert_eq!(cluster, &format!(" (clusterID {FSID})"));
        assert!(
            tried.starts_with(
                "ConfigMap kube-system/ceph-csi-config (other:6789): leads to Ceph cluster 0b7c0a4e"
            ) && tried.contains("the PV's recorded monitors (gone:6789): did not answer"),
            "{tried}"
        );
        api.done();
        assert!(other.writes().is_empty() && scene.writes().is_empty());
    }
}
