//! A scripted Ceph beside the scripted API server: the cluster (`testbed::fake_ceph`), a
//! connector that reaches it with the admin Secret's key, the volumes the reconcilers start
//! from, and their images stamped as provisioning stamps them. What the reconcilers did to
//! Ceph is read back from the fake's call log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::runtime::{reflector, watcher};
use testbed::fake_ceph::{FakeCeph, FakeConnector, Method as Rbd};

use super::{PROVISIONER, Reply, Step, expect, instance, object};
use crate::controller::Context;
use crate::controller::cached::Cached;
use domain::owner::{self, Place, PvState, Stamp};
use domain::volume::{
    ANN_ADMIN_ID, ANN_ADMIN_SECRET, ANN_FSID, ANN_POOL_ID, ANN_PROVISIONED_BY, FINALIZER,
    image_name,
};

/// Image-meta pairs, as stamps are written.
pub type Meta = Vec<(String, String)>;

pub const POOL: &str = "kube";
pub const FSID: &str = "5b0e8f0e-7c2a-4d6e-9a51-3f1d0c6b2e77";
pub const MONITORS: &str = "fake-ceph:6789";
pub const ADMIN_KEY: &str = "AQD3RAdrDpYAMhAA3Ing6p5ucoVHnDmS15WHEQ==";
pub const ADMIN_SECRET: &str = "/api/v1/namespaces/kube-system/secrets/ceph-admin";
/// Where events about PVs (cluster-scoped) are written.
pub const PV_EVENTS: &str = "/api/v1/namespaces/default/events";
/// The claim of most scenarios; its PV is `pvc-<uid>`, its image `kubernetes-dynamic-pvc-<uid>`.
pub const UID: &str = "8d3e0c1a-5b7f-4e2a-9c41-0a6b2d9e7f10";
pub const GIB: u64 = 1 << 30;
/// Older than the tests' orphan grace (one hour).
pub const LONG_AGO: i64 = 2 * 3600;

/// A Ceph cluster with pool `kube`, reachable as `client.admin` with [`ADMIN_KEY`].
pub struct Scene {
    pub fake: FakeCeph,
    pub connector: Arc<FakeConnector>,
}

impl Scene {
    pub fn new() -> Scene {
        let fake = FakeCeph::with_pools(&[POOL]);
        fake.set_fsid(FSID);
        // Older than every PV of the scenarios: a pool made after its PV was replaced.
        let month_ago = crate::controller::unix_now() - 30 * 86400;
        fake.set_pool_created(POOL, Some(month_ago));
        let connector = Arc::new(FakeConnector::new());
        connector.serve(&fake, "admin", ADMIN_KEY);
        Scene { fake, connector }
    }

    /// Where images of pool `kube` are made.
    pub fn place(&self) -> Place {
        Place {
            fsid: FSID.into(),
            pool_id: self.fake.pool_id_of(POOL).expect("pool kube"),
        }
    }

    /// A context over `client` and this cluster, whose volumes watch has listed `volumes`.
    pub fn context(&self, client: Client, volumes: &[PersistentVolume]) -> Arc<Context> {
        let mut ctx = Context::for_tests_with_ceph(client, self.connector.clone());
        let (store, mut writer) = reflector::store();
        for pv in volumes {
            let cached = Cached::new(pv.clone()).expect("cacheable PV");
            writer.apply_watcher_event(&watcher::Event::InitApply(cached));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        ctx.caches.volumes = store;
        Arc::new(ctx)
    }

    /// The image of claim `uid` as provisioning leaves it once the PV is written: stamped
    /// for its PV, made here. Returns its id.
    pub fn our_image(&self, uid: &str) -> String {
        let pairs = stamp(uid, &self.place(), PvState::Written).pairs(&instance());
        self.image_with(uid, &pairs)
    }

    /// The image of claim `uid` carrying this image-meta; its id.
    pub fn image_with(&self, uid: &str, meta: &[(String, String)]) -> String {
        let name = image_name(uid);
        let id = self.fake.put_image(POOL, &name, GIB);
        let pairs: Vec<(&str, &str)> = meta.iter().map(|(k, v)| (&**k, &**v)).collect();
        self.fake.put_metadata(POOL, &name, &pairs);
        id
    }

    /// The image-meta of `pool/image` in the directory.
    pub fn meta(&self, image: &str) -> BTreeMap<String, String> {
        self.fake.image(POOL, image).expect("image").metadata
    }

    /// The calls that changed the cluster, as `method pool/image`.
    pub fn writes(&self) -> Vec<String> {
        self.fake.writes().iter().map(ToString::to_string).collect()
    }

    /// Whether the pool holds nothing any more, in its directory or its trash.
    pub fn empty(&self) -> bool {
        self.fake.images(POOL).is_empty() && self.fake.trash(POOL).is_empty()
    }

    /// How many calls of `method` succeeded.
    pub fn done(&self, method: Rbd) -> usize {
        self.fake.calls_of(method).iter().filter(|c| c.ok()).count()
    }
}

/// What trashing and purging `image` (trash id `id`) writes: our mark, the move, the purge.
pub fn marked_moved_purged(image: &str, id: &str) -> Vec<String> {
    vec![
        format!("set_metadata_unopened {POOL}/{image}"),
        format!("trash_move {POOL}/{image}"),
        format!("trash_remove {POOL}/{id}"),
    ]
}

/// Waits until the purger has nothing queued or under way, and the background work a
/// reconcile spawned (the first trash sweep of a pool) has run.
pub async fn settle(ctx: &Context) {
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        ctx.ceph.purger.idle().await;
    }
}

/// The stamp provisioning writes for claim `apps/data` of this uid, two hours ago.
pub fn stamp(uid: &str, place: &Place, pv_state: PvState) -> Stamp {
    Stamp {
        pv: format!("pvc-{uid}"),
        claim_namespace: "apps".into(),
        claim_name: "data".into(),
        claim_uid: uid.into(),
        created: crate::controller::unix_now() - LONG_AGO,
        place: Some(place.clone()),
        pv_state,
    }
}

/// `pairs` with `key` set to `value` (or removed, for `None`).
pub fn with(pairs: &[(String, String)], key: &str, value: Option<&str>) -> Vec<(String, String)> {
    let mut out: Vec<_> = pairs.iter().filter(|(k, _)| k != key).cloned().collect();
    if let Some(v) = value {
        out.push((key.into(), v.into()));
    }
    out
}

/// The image-meta our deletion leaves on an image it trashes.
pub fn trashed(pairs: &[(String, String)]) -> Vec<(String, String)> {
    with(pairs, owner::META_TRASHED, Some("1700000000"))
}

/// Our volume of claim `uid` once the claim is gone: Released, reclaim policy Delete, held
/// by our finalizer, recording its admin Secret and where its image was made.
pub fn released_pv(uid: &str, place: &Place) -> PersistentVolume {
    let name = format!("pvc-{uid}");
    let pool_id = place.pool_id.to_string();
    let mut pv = domain::fixtures::rbd_pv(
        &name,
        (POOL, &image_name(uid)),
        &[
            (ANN_PROVISIONED_BY, PROVISIONER),
            (ANN_ADMIN_ID, "admin"),
            (ANN_ADMIN_SECRET, "kube-system/ceph-admin"),
            (ANN_FSID, &place.fsid),
            (ANN_POOL_ID, &pool_id),
        ],
        Some("Released"),
    );
    let hour_ago =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(1);
    pv.metadata.uid = Some(format!("pv-{uid}"));
    pv.metadata.resource_version = Some("7".into());
    pv.metadata.finalizers = Some(vec![FINALIZER.into()]);
    pv.metadata.creation_timestamp = Some(Time(hour_ago));
    let spec = pv.spec.as_mut().expect("spec");
    spec.persistent_volume_reclaim_policy = Some("Delete".into());
    if let Some(rbd) = spec.rbd.as_mut() {
        rbd.monitors = vec![MONITORS.into()];
    }
    spec.claim_ref = Some(ObjectReference {
        namespace: Some("apps".into()),
        name: Some("data".into()),
        uid: Some(uid.into()),
        ..Default::default()
    });
    pv
}

/// The same PV, bound to its claim (in use).
pub fn bound(mut pv: PersistentVolume) -> PersistentVolume {
    if let Some(s) = pv.status.as_mut() {
        s.phase = Some("Bound".into());
    }
    pv
}

/// `/api/v1/persistentvolumes/<name>`.
pub fn pv_path(pv: &PersistentVolume) -> String {
    format!(
        "/api/v1/persistentvolumes/{}",
        pv.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The PV as the API server answers a DELETE that our finalizer holds.
pub fn deleting(pv: &PersistentVolume) -> PersistentVolume {
    let mut pv = pv.clone();
    pv.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    pv.metadata.resource_version = Some("8".into());
    pv
}

/// The admin Secret's read, answered with [`ADMIN_KEY`].
pub fn admin_secret_read() -> Step {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("ceph-admin".into()),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "key".to_string(),
            ByteString(ADMIN_KEY.as_bytes().to_vec()),
        )])),
        ..Default::default()
    };
    expect(Method::GET, ADMIN_SECRET, object(&secret))
}

/// A Warning or Normal event about a PV, written.
pub fn pv_event() -> Step {
    expect(Method::POST, PV_EVENTS, Reply::Echo(StatusCode::CREATED))
}

/// A write refused because the object changed since it was read.
pub fn conflict() -> Reply {
    Reply::Failure(StatusCode::CONFLICT, "Conflict")
}
