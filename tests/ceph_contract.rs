//! The contract of `ceph::RbdCluster`: every scenario here runs twice, against the scripted
//! cluster of the testbed (`testbed::fake_ceph`) and against the bed's Ceph through librbd
//! (hack/bed-up.sh), and both runs must observe the same results, step by step: values,
//! `Created`/`Removed` outcomes, and errors down to their variant, operation, errno and hint.
//! The scenarios also assert what librbd is expected to answer, so that a change of either
//! side shows.
//!
//! What differs by nature between two clusters is normalised before the comparison: image and
//! trash ids, the fsid and pool ids become placeholders numbered in order of appearance,
//! watchers are counted, times are compared as differences, and listings keep only the
//! scenario's own names. Every scenario uses names of its own (scenario name + pid) and
//! removes what it made on the bed, also when it fails. What the API cannot make is made on
//! the bed with the CLIs: a half-made image (`rados rm` of its header), a pool at its quota
//! (a pool of the scenario's own, `ceph osd pool set-quota`, removed at the end).

use testbed as common;

use std::collections::BTreeMap;
use std::sync::Arc;

use ceph::{
    CephError, CloneSpec, Cluster, Created, ImageInfo, ImageSpec, ParentSpec, PoolQuota,
    RBD_FEATURE_DATA_POOL, RBD_FEATURE_DEEP_FLATTEN, RBD_FEATURE_EXCLUSIVE_LOCK,
    RBD_FEATURE_FAST_DIFF, RBD_FEATURE_JOURNALING, RBD_FEATURE_LAYERING, RBD_FEATURE_OBJECT_MAP,
    RbdCluster, Removed, SnapInfo, TrashEntry, Watcher,
};
use testbed::fake_ceph::FakeCeph;

const POOL: &str = "kube";
const POOL2: &str = "kube2";
const NO_POOL: &str = "rbdp-contract-no-such-pool";
const MIB: u64 = 1 << 20;
/// The image-meta keys the scenarios read.
const KEYS: &[&str] = &["rbdp-contract/a", "rbdp-contract/b", "rbdp-contract/c"];
/// The omap object the records scenario writes (its keys are the scenario's own).
const OID: &str = "rbdp-contract-records";

/// Where a scenario runs.
enum Side {
    Fake(FakeCeph),
    Real {
        /// A second client, to hold images open as a node that mapped them would.
        other: Arc<Cluster>,
    },
}

/// One run of a scenario: the cluster, and the transcript of what it observed.
struct Run {
    side: Side,
    c: Arc<dyn RbdCluster>,
    prefix: String,
    lines: Vec<String>,
    /// Values that differ between clusters (ids, fsid) and their placeholders.
    tokens: Vec<(String, String)>,
    pool_names: BTreeMap<i64, String>,
    _cleanup: Option<Cleanup>,
    /// Dropped after `_cleanup`, which empties it first.
    _pool: Option<OwnPool>,
}

impl Run {
    fn fake(prefix: &str) -> Run {
        let fake = FakeCeph::with_pools(&[POOL, POOL2]);
        Run::new(Side::Fake(fake.clone()), fake.cluster(), prefix, None)
    }

    async fn real(prefix: &str) -> Run {
        let bed = common::Bed::load();
        // Two clients (each `Bed::ceph` connects afresh).
        let (admin, other) = (bed.ceph().await, bed.ceph().await);
        let cleanup = Cleanup {
            cluster: admin.clone(),
            prefix: prefix.to_string(),
        };
        Run::new(Side::Real { other }, Arc::new(admin), prefix, Some(cleanup))
    }

    fn new(side: Side, c: Arc<dyn RbdCluster>, prefix: &str, cleanup: Option<Cleanup>) -> Run {
        Run {
            side,
            c,
            prefix: prefix.to_string(),
            lines: Vec::new(),
            tokens: Vec::new(),
            pool_names: BTreeMap::new(),
            _cleanup: cleanup,
            _pool: None,
        }
    }

    /// Learns the ids of the two pools, to name data pools by name.
    async fn learn_pools(&mut self) {
        for p in [POOL, POOL2] {
            let id = self.c.pool_id(p).await.expect("pool id");
            self.pool_names.insert(id, p.to_string());
        }
    }

    /// A name of this scenario's own.
    fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    /// Another client holds `pool/image` open read/write until the guard is dropped.
    async fn hold_open(&self, pool: &str, image: &str) -> Box<dyn Send> {
        match &self.side {
            Side::Fake(f) => Box::new(f.hold_open(pool, image)),
            Side::Real { other, .. } => Box::new(
                other
                    .open_read_write(pool, image)
                    .await
                    .expect("hold the image open"),
            ),
        }
    }

    /// Makes `pool/name` what a process killed inside `rbd_create4` leaves: the name taken,
    /// no header.
    async fn half_made(&self, pool: &str, name: &str) -> String {
        match &self.side {
            Side::Fake(f) => f.half_made(pool, name),
            Side::Real { .. } => {
                let spec = spec(pool, name, MIB);
                self.c.create_image(&spec).await.expect("create");
                let id = self.c.image_info(pool, name).await.expect("info").id;
                let bed = common::Bed::load();
                let out = std::process::Command::new("rados")
                    .arg("-c")
                    .arg(bed.dir.join("ceph/ceph.conf"))
                    .args(["-p", pool, "rm", &format!("rbd_header.{id}")])
                    .output()
                    .expect("run rados");
                assert!(out.status.success(), "rados rm: {out:?}");
                id
            }
        }
    }

    /// A pool of the scenario's own (`rbd pool init`ed), removed from the bed at the end.
    async fn own_pool(&mut self, what: &str) -> String {
        let pool = self.name(what);
        match &self.side {
            Side::Fake(f) => {
                f.add_pool(&pool);
            }
            Side::Real { .. } => {
                let bed = common::Bed::load();
                ceph_cli(&bed, &["osd", "pool", "create", &pool, "8"]);
                self._pool = Some(OwnPool(pool.clone()));
                let out = std::process::Command::new("rbd")
                    .arg("-c")
                    .arg(bed.dir.join("ceph/ceph.conf"))
                    .args(["pool", "init", &pool])
                    .output()
                    .expect("run rbd");
                assert!(out.status.success(), "rbd pool init: {out:?}");
            }
        }
        let id = self.c.pool_id(&pool).await.expect("the new pool's id");
        self.pool_names.insert(id, what.to_string());
        pool
    }

    /// Sets (`Some`) or lifts (`None`) a pool's `max_objects` quota, and waits until the
    /// cluster applies it (a pool that holds more than that is flagged `full_quota`).
    async fn quota(&self, pool: &str, max_objects: Option<u64>) {
        match &self.side {
            Side::Fake(f) => f.set_quota(
                pool,
                PoolQuota {
                    max_objects,
                    objects: 8,
                    ..PoolQuota::default()
                },
            ),
            Side::Real { .. } => {
                let bed = common::Bed::load();
                let n = max_objects.unwrap_or(0).to_string();
                ceph_cli(&bed, &["osd", "pool", "set-quota", pool, "max_objects", &n]);
                let full = max_objects.is_some();
                common::wait_for(
                    "the pool's full_quota flag",
                    std::time::Duration::from_secs(90),
                    || async {
                        let v: serde_json::Value = serde_json::from_str(&ceph_cli(
                            &bed,
                            &["osd", "pool", "ls", "detail", "--format", "json"],
                        ))
                        .unwrap();
                        let flags = v
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|p| p["pool_name"] == pool)
                            .and_then(|p| p["flags_names"].as_str().map(String::from))
                            .unwrap_or_default();
                        (flags.contains("full_quota") == full).then_some(())
                    },
                )
                .await;
            }
        }
    }

    /// The placeholder for a value that differs between clusters, numbered by first sight.
    fn token(&mut self, kind: &str, value: &str) -> String {
        if let Some((_, t)) = self.tokens.iter().find(|(v, _)| v == value) {
            return t.clone();
        }
        let n = self
            .tokens
            .iter()
            .filter(|(_, t)| t.starts_with(&format!("<{kind}")))
            .count();
        let t = format!("<{kind}{}>", n + 1);
        self.tokens.push((value.to_string(), t.clone()));
        t
    }

    fn normalise(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (value, token) in &self.tokens {
            text = text.replace(value.as_str(), token);
        }
        text.replace(&self.prefix, "@")
    }

    /// Records what a step observed, and hands the result back for the scenario's own
    /// assertions.
    fn see<T: Observe>(&mut self, step: &str, r: Result<T, CephError>) -> Result<T, CephError> {
        let seen = match &r {
            Ok(v) => format!("ok {}", v.observe(self)),
            Err(e) => format!("err {e:?}"),
        };
        let line = format!("{step}: {}", self.normalise(&seen));
        self.lines.push(line);
        r
    }

    fn transcript(&self) -> String {
        self.lines.join("\n")
    }
}

/// `ceph -c <bed conf> <args>`; panics with its stderr when it fails.
fn ceph_cli(bed: &common::Bed, args: &[&str]) -> String {
    let out = std::process::Command::new("timeout")
        .arg("60")
        .arg("ceph")
        .arg("-c")
        .arg(bed.dir.join("ceph/ceph.conf"))
        .args(args)
        .output()
        .expect("run the ceph CLI");
    assert!(
        out.status.success(),
        "ceph {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A pool made for one scenario on the bed, deleted when dropped.
struct OwnPool(String);

impl Drop for OwnPool {
    fn drop(&mut self) {
        let bed = common::Bed::load();
        let p = self.0.as_str();
        let _ = std::process::Command::new("ceph")
            .arg("-c")
            .arg(bed.dir.join("ceph/ceph.conf"))
            .args(["osd", "pool", "rm", p, p, "--yes-i-really-really-mean-it"])
            .output();
    }
}

/// How a step's value is written into the transcript, without what differs by nature.
trait Observe {
    fn observe(&self, run: &mut Run) -> String;
}

impl Observe for () {
    fn observe(&self, _: &mut Run) -> String {
        "()".into()
    }
}

impl Observe for Created {
    fn observe(&self, _: &mut Run) -> String {
        format!("{self:?}")
    }
}

impl Observe for Removed {
    fn observe(&self, _: &mut Run) -> String {
        format!("{self:?}")
    }
}

impl Observe for ImageInfo {
    fn observe(&self, run: &mut Run) -> String {
        assert!(!self.id.is_empty(), "a format 2 image has an id");
        let id = run.token("id", &self.id);
        let data_pool_id = run
            .pool_names
            .get(&self.data_pool_id)
            .cloned()
            .unwrap_or_else(|| format!("pool #{}", self.data_pool_id));
        format!(
            "size={} obj_size={} features={:#x} old_format={} id={id} data_pool_id={data_pool_id} data_pool={:?} parent={:?}",
            self.size, self.obj_size, self.features, self.old_format, self.data_pool, self.parent
        )
    }
}

impl Observe for Vec<SnapInfo> {
    fn observe(&self, _: &mut Run) -> String {
        assert!(
            self.windows(2).all(|w| w[0].id < w[1].id),
            "snapshots are listed by id: {self:?}"
        );
        let snaps: Vec<String> = self
            .iter()
            .map(|s| format!("{} size={} protected={}", s.name, s.size, s.protected))
            .collect();
        format!("[{}]", snaps.join(", "))
    }
}

impl Observe for Vec<TrashEntry> {
    fn observe(&self, run: &mut Run) -> String {
        let mut mine: Vec<&TrashEntry> = self
            .iter()
            .filter(|t| t.name.starts_with(&run.prefix))
            .collect();
        mine.sort_by(|a, b| a.name.cmp(&b.name));
        let entries: Vec<String> = mine
            .iter()
            .map(|t| {
                let id = run.token("id", &t.id);
                format!(
                    "{} id={id} deferment={}s",
                    t.name,
                    t.deferment_end_time - t.deletion_time
                )
            })
            .collect();
        format!("[{}]", entries.join(", "))
    }
}

impl Observe for Vec<Watcher> {
    fn observe(&self, _: &mut Run) -> String {
        assert!(self.iter().all(|w| !w.addr.is_empty()), "{self:?}");
        format!("{} watcher(s)", self.len())
    }
}

/// `list_images`: the scenario's own names.
impl Observe for Vec<String> {
    fn observe(&self, run: &mut Run) -> String {
        let mine: Vec<&String> = self.iter().filter(|n| n.starts_with(&run.prefix)).collect();
        format!("{mine:?}")
    }
}

/// `pool_applications`, all of them.
#[derive(Debug)]
struct Apps(Vec<String>);

impl Observe for Apps {
    fn observe(&self, _: &mut Run) -> String {
        format!("{:?}", self.0)
    }
}

impl Observe for BTreeMap<String, String> {
    fn observe(&self, _: &mut Run) -> String {
        format!("{self:?}")
    }
}

impl Observe for (BTreeMap<String, String>, u64) {
    fn observe(&self, _: &mut Run) -> String {
        format!("{:?} size={}", self.0, self.1)
    }
}

/// Omap records: the scenario's own keys.
impl Observe for Vec<(String, Vec<u8>)> {
    fn observe(&self, run: &mut Run) -> String {
        let mine: Vec<&(String, Vec<u8>)> = self
            .iter()
            .filter(|(k, _)| k.starts_with(&run.prefix))
            .collect();
        format!("{mine:?}")
    }
}

impl Observe for PoolQuota {
    fn observe(&self, _: &mut Run) -> String {
        format!(
            "max_objects={:?} max_bytes={:?} reached={}",
            self.max_objects,
            self.max_bytes,
            self.reached().is_some()
        )
    }
}

/// `pool_created`.
impl Observe for Option<i64> {
    fn observe(&self, _: &mut Run) -> String {
        match self {
            Some(t) => {
                assert!(*t > 1_500_000_000, "a Unix time: {t}");
                "created at some time".into()
            }
            None => "None".into(),
        }
    }
}

/// `pool_id`.
impl Observe for i64 {
    fn observe(&self, run: &mut Run) -> String {
        run.token("pool", &format!("pool id {self}"))
    }
}

/// `fsid`.
impl Observe for String {
    fn observe(&self, run: &mut Run) -> String {
        assert_eq!(self.len(), 36, "an fsid is a UUID: {self}");
        run.token("fsid", self)
    }
}

fn spec(pool: &str, name: &str, size: u64) -> ImageSpec {
    ImageSpec {
        pool: pool.into(),
        name: name.into(),
        size,
        data_pool: None,
        features: RBD_FEATURE_LAYERING,
    }
}

fn clone_spec(parent: (&str, &str, &str), pool: &str, name: &str) -> CloneSpec {
    CloneSpec {
        parent: ParentSpec {
            pool: parent.0.into(),
            image: parent.1.into(),
            snap: parent.2.into(),
        },
        pool: pool.into(),
        data_pool: None,
        name: name.into(),
        features: RBD_FEATURE_LAYERING,
        clone_format: Some(1),
    }
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Removes the scenario's images (snapshots first, clones before parents) and trash entries
/// from the bed when dropped, even after a failed assertion.
struct Cleanup {
    cluster: Arc<Cluster>,
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (c, prefix) = (self.cluster.clone(), self.prefix.clone());
        // A fresh runtime on a fresh thread: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(clean(&c, &prefix));
        })
        .join();
    }
}

async fn clean(c: &Arc<Cluster>, prefix: &str) {
    let bed = common::Bed::load();
    for _pass in 0..3 {
        for pool in [POOL, POOL2] {
            for t in c.trash_list(pool).await.unwrap_or_default() {
                if !t.name.starts_with(prefix) {
                    continue;
                }
                if c.trash_remove(pool, &t.id, true).await.is_err() {
                    // An entry with snapshots: back into the directory, cleaned as an image.
                    let _ = std::process::Command::new("rbd")
                        .arg("-c")
                        .arg(bed.dir.join("ceph/ceph.conf"))
                        .args(["trash", "restore", "-p", pool, &t.id])
                        .output();
                }
            }
            for name in c.list_images(pool).await.unwrap_or_default() {
                if !name.starts_with(prefix) {
                    continue;
                }
                let _ = c.flatten(pool, &name).await;
                for s in c.snap_list(pool, &name).await.unwrap_or_default() {
                    let _ = c.snap_unprotect(pool, &name, &s.name).await;
                    let _ = c.snap_remove(pool, &name, &s.name).await;
                }
                let _ = c.remove_image(pool, &name).await;
            }
        }
    }
    let keys: Vec<String> = c
        .records(POOL, OID)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(prefix))
        .collect();
    if !keys.is_empty() {
        let _ = c.records_remove(POOL, OID, keys).await;
    }
}

/// A test that runs `$scenario` on the fake, then on the bed, and compares the transcripts.
macro_rules! contract {
    ($($scenario:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $scenario() {
            let prefix = format!("ct{}-{}", std::process::id(), stringify!($scenario));
            let mut fake = Run::fake(&prefix);
            fake.learn_pools().await;
            scenarios::$scenario(&mut fake).await;
            let mut real = Run::real(&prefix).await;
            real.learn_pools().await;
            scenarios::$scenario(&mut real).await;
            let (f, r) = (fake.transcript(), real.transcript());
            if f != r {
                for (a, b) in f.lines().zip(r.lines()) {
                    if a != b {
                        eprintln!("fake: {a}\nreal: {b}\n");
                    }
                }
            }
            assert_eq!(f, r, "the fake and librbd observed different results");
            eprintln!("{} steps alike:\n{r}", real.lines.len());
        }
    )*};
}

contract!(
    pools,
    images,
    features_and_data_pools,
    image_meta,
    records,
    watchers,
    snapshots,
    clones,
    flatten,
    trash,
    trash_deferment,
    half_made_image,
    quota_reached,
);

mod scenarios {
    use super::*;

    /// fsid, pool ids, creation times, quotas, applications, and a missing pool everywhere.
    pub async fn pools(r: &mut Run) {
        let c = r.c.clone();
        let fsid = r.see("fsid", c.fsid().await).unwrap();
        let again = r.see("fsid again", c.fsid().await).unwrap();
        assert_eq!(fsid, again);
        let a = r.see("pool_id", c.pool_id(POOL).await).unwrap();
        let b = r
            .see("pool_id of another pool", c.pool_id(POOL2).await)
            .unwrap();
        assert_ne!(a, b);
        r.see("pool_id of a missing pool", c.pool_id(NO_POOL).await)
            .unwrap_err();
        r.see("pool_created", c.pool_created(POOL).await).unwrap();
        let none = r.see(
            "pool_created of a missing pool",
            c.pool_created(NO_POOL).await,
        );
        assert_eq!(none.unwrap(), None);
        r.see("pool_quota", c.pool_quota(POOL).await).unwrap();
        r.see("pool_quota of a missing pool", c.pool_quota(NO_POOL).await)
            .unwrap_err();
        let apps = r.see(
            "pool_applications",
            c.pool_applications(POOL).await.map(Apps),
        );
        assert_eq!(apps.unwrap().0, vec!["rbd".to_string()]);
        let e = r
            .see(
                "applications of a missing pool",
                c.pool_applications(NO_POOL).await.map(Apps),
            )
            .unwrap_err();
        assert!(e.is_pool_missing() && !e.is_not_found(), "{e}");
        let e = r
            .see(
                "list_images of a missing pool",
                c.list_images(NO_POOL).await,
            )
            .unwrap_err();
        assert!(e.is_pool_missing(), "{e}");
        r.see("trash_list of a missing pool", c.trash_list(NO_POOL).await)
            .unwrap_err();
        let e = r
            .see(
                "create in a missing pool",
                c.create_image(&spec(NO_POOL, &r.name("x"), MIB)).await,
            )
            .unwrap_err();
        assert!(e.is_pool_missing(), "{e}");
        r.see(
            "image_info in a missing pool",
            c.image_info(NO_POOL, "x").await,
        )
        .unwrap_err();
        let gone = r.see(
            "remove in a missing pool",
            c.remove_image(NO_POOL, "x").await,
        );
        assert!(gone.unwrap_err().is_pool_missing(), "never AlreadyGone");
        r.see(
            "trash_move in a missing pool",
            c.trash_move(NO_POOL, "x", 0).await,
        )
        .unwrap_err();
        r.see(
            "trash_remove in a missing pool",
            c.trash_remove(NO_POOL, "x", true).await,
        )
        .unwrap_err();
        r.see(
            "snap_remove in a missing pool",
            c.snap_remove(NO_POOL, "x", "s").await,
        )
        .unwrap_err();
        r.see("pool name with a NUL", c.pool_id("kube\0").await)
            .unwrap_err();
    }

    /// Create, read back, create again, grow, refuse to shrink, remove, remove again.
    pub async fn images(r: &mut Run) {
        let c = r.c.clone();
        let name = r.name("img");
        let created = r.see("create", c.create_image(&spec(POOL, &name, 64 * MIB)).await);
        assert_eq!(created.unwrap(), Created::New);
        let info = r
            .see("image_info", c.image_info(POOL, &name).await)
            .unwrap();
        assert_eq!((info.size, info.features), (64 * MIB, RBD_FEATURE_LAYERING));
        let again = r.see(
            "create again, larger",
            c.create_image(&spec(POOL, &name, 128 * MIB)).await,
        );
        assert_eq!(again.unwrap(), Created::AlreadyExisted);
        let info2 = r.see("unchanged", c.image_info(POOL, &name).await).unwrap();
        assert_eq!((info2.id, info2.size), (info.id, 64 * MIB));
        r.see("listed", c.list_images(POOL).await).unwrap();
        r.see("grow", c.resize(POOL, &name, 96 * MIB).await)
            .unwrap();
        r.see("same size", c.resize(POOL, &name, 96 * MIB).await)
            .unwrap();
        let e = r
            .see("shrink", c.resize(POOL, &name, 8 * MIB).await)
            .unwrap_err();
        assert!(matches!(e, CephError::ShrinkRefused { .. }), "{e}");
        r.see("grown", c.image_info(POOL, &name).await).unwrap();
        let missing = r.name("missing");
        let e = r
            .see(
                "image_info of a missing image",
                c.image_info(POOL, &missing).await,
            )
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let e = r
            .see(
                "resize a missing image",
                c.resize(POOL, &missing, MIB).await,
            )
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        r.see("flatten a missing image", c.flatten(POOL, &missing).await)
            .unwrap_err();
        let removed = r.see("remove", c.remove_image(POOL, &name).await);
        assert_eq!(removed.unwrap(), Removed::Removed);
        let again = r.see("remove again", c.remove_image(POOL, &name).await);
        assert_eq!(again.unwrap(), Removed::AlreadyGone);
        r.see("not listed", c.list_images(POOL).await).unwrap();
        let e = r
            .see("image_info after remove", c.image_info(POOL, &name).await)
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let created = r.see(
            "create a zero-sized image",
            c.create_image(&spec(POOL, &name, 0)).await,
        );
        assert_eq!(created.unwrap(), Created::New);
        r.see("zero-sized", c.image_info(POOL, &name).await)
            .unwrap();
        r.see("remove it", c.remove_image(POOL, &name).await)
            .unwrap();
    }

    /// What a create accepts and refuses of features and data pools.
    pub async fn features_and_data_pools(r: &mut Run) {
        let c = r.c.clone();
        let cases: &[(&str, u64, Option<&str>)] = &[
            ("data pool", RBD_FEATURE_LAYERING, Some(POOL2)),
            ("data pool = own pool", RBD_FEATURE_LAYERING, Some(POOL)),
            ("missing data pool", RBD_FEATURE_LAYERING, Some(NO_POOL)),
            ("no features", 0, None),
            (
                "exclusive-lock, object-map, fast-diff",
                RBD_FEATURE_LAYERING
                    | RBD_FEATURE_EXCLUSIVE_LOCK
                    | RBD_FEATURE_OBJECT_MAP
                    | RBD_FEATURE_FAST_DIFF,
                None,
            ),
            (
                "object-map without exclusive-lock",
                RBD_FEATURE_LAYERING | RBD_FEATURE_OBJECT_MAP,
                None,
            ),
            (
                "fast-diff without object-map",
                RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_FAST_DIFF,
                None,
            ),
            (
                "journaling without exclusive-lock",
                RBD_FEATURE_LAYERING | RBD_FEATURE_JOURNALING,
                None,
            ),
            (
                "journaling",
                RBD_FEATURE_LAYERING | RBD_FEATURE_EXCLUSIVE_LOCK | RBD_FEATURE_JOURNALING,
                None,
            ),
            (
                "deep-flatten",
                RBD_FEATURE_LAYERING | RBD_FEATURE_DEEP_FLATTEN,
                None,
            ),
            ("striping v2", RBD_FEATURE_LAYERING | 1 << 1, None),
            (
                "data-pool without a data pool",
                RBD_FEATURE_LAYERING | RBD_FEATURE_DATA_POOL,
                None,
            ),
            ("an unknown feature", RBD_FEATURE_LAYERING | 1 << 40, None),
            ("operations", RBD_FEATURE_LAYERING | 1 << 8, None),
            ("migrating", RBD_FEATURE_LAYERING | 1 << 9, None),
            ("non-primary", RBD_FEATURE_LAYERING | 1 << 10, None),
            ("dirty-cache", RBD_FEATURE_LAYERING | 1 << 11, None),
            ("bit 12", RBD_FEATURE_LAYERING | 1 << 12, None),
        ];
        for (i, (what, features, data_pool)) in cases.iter().enumerate() {
            let name = r.name(&format!("f{i}"));
            let s = ImageSpec {
                data_pool: data_pool.map(str::to_string),
                features: *features,
                ..spec(POOL, &name, 16 * MIB)
            };
            if r.see(&format!("create, {what}"), c.create_image(&s).await)
                .is_ok()
            {
                r.see(&format!("info, {what}"), c.image_info(POOL, &name).await)
                    .unwrap();
                r.see(
                    &format!("remove, {what}"),
                    c.remove_image(POOL, &name).await,
                )
                .unwrap();
            }
        }
    }

    /// Image-meta: the stamp written unopened and opened, read back by key; repeated keys;
    /// a missing image.
    pub async fn image_meta(r: &mut Run) {
        let c = r.c.clone();
        let name = r.name("meta");
        c.create_image(&spec(POOL, &name, MIB)).await.unwrap();
        r.see("none set", c.metadata(POOL, &name, KEYS).await)
            .unwrap();
        r.see(
            "set unopened",
            c.set_metadata_unopened(
                POOL,
                &name,
                pairs(&[
                    (KEYS[0], "one"),
                    (KEYS[1], ""),
                    ("rbdp-contract/other", "x"),
                ]),
            )
            .await,
        )
        .unwrap();
        let m = r.see("read", c.metadata(POOL, &name, KEYS).await).unwrap();
        assert_eq!(m.len(), 2, "{m:?}");
        r.see(
            "set opened",
            c.set_metadata(POOL, &name, pairs(&[(KEYS[1], "two"), (KEYS[2], "three")]))
                .await,
        )
        .unwrap();
        r.see("read again", c.metadata(POOL, &name, KEYS).await)
            .unwrap();
        r.see(
            "a key twice, unopened",
            c.set_metadata_unopened(
                POOL,
                &name,
                pairs(&[(KEYS[0], "first"), (KEYS[0], "second")]),
            )
            .await,
        )
        .unwrap();
        r.see("which one", c.metadata(POOL, &name, KEYS).await)
            .unwrap();
        r.see(
            "a key twice, opened",
            c.set_metadata(
                POOL,
                &name,
                pairs(&[(KEYS[0], "first"), (KEYS[0], "second")]),
            )
            .await,
        )
        .unwrap();
        r.see("which one now", c.metadata(POOL, &name, KEYS).await)
            .unwrap();
        let missing = r.name("missing");
        for e in [
            r.see(
                "set unopened on a missing image",
                c.set_metadata_unopened(POOL, &missing, pairs(&[(KEYS[0], "x")]))
                    .await,
            )
            .unwrap_err(),
            r.see(
                "set opened on a missing image",
                c.set_metadata(POOL, &missing, pairs(&[(KEYS[0], "x")]))
                    .await,
            )
            .unwrap_err(),
            r.see(
                "read a missing image",
                c.metadata(POOL, &missing, KEYS).await,
            )
            .unwrap_err(),
        ] {
            assert!(e.is_not_found(), "{e}");
        }
        r.see("not made by the writes", c.list_images(POOL).await)
            .unwrap();
        c.remove_image(POOL, &name).await.unwrap();
    }

    /// Omap records: set, overwrite, remove, on an object that does not exist yet.
    pub async fn records(r: &mut Run) {
        let c = r.c.clone();
        let (k1, k2) = (r.name("k1"), r.name("k2"));
        r.see("read", c.records(POOL, OID).await).unwrap();
        r.see(
            "read a missing object",
            c.records(POOL, "rbdp-contract-none").await,
        )
        .unwrap();
        r.see(
            "set",
            c.records_set(
                POOL,
                OID,
                vec![(k2.clone(), vec![0, 1, 255]), (k1.clone(), b"one".to_vec())],
            )
            .await,
        )
        .unwrap();
        r.see("read back", c.records(POOL, OID).await).unwrap();
        r.see(
            "overwrite",
            c.records_set(POOL, OID, vec![(k1.clone(), vec![])]).await,
        )
        .unwrap();
        r.see("read again", c.records(POOL, OID).await).unwrap();
        r.see(
            "remove a key and a missing one",
            c.records_remove(POOL, OID, vec![k1.clone(), r.name("none")])
                .await,
        )
        .unwrap();
        r.see("read after remove", c.records(POOL, OID).await)
            .unwrap();
        r.see(
            "remove from a missing object",
            c.records_remove(POOL, "rbdp-contract-none", vec![k1.clone()])
                .await,
        )
        .unwrap();
        r.see(
            "remove the rest",
            c.records_remove(POOL, OID, vec![k2]).await,
        )
        .unwrap();
        r.see(
            "set in a missing pool",
            c.records_set(NO_POOL, OID, vec![(k1, vec![])]).await,
        )
        .unwrap_err();
        r.see("read in a missing pool", c.records(NO_POOL, OID).await)
            .unwrap_err();
        r.see(
            "remove in a missing pool",
            c.records_remove(NO_POOL, OID, vec![]).await,
        )
        .unwrap_err();
    }

    /// A client holding the image open: listed as a watcher, blocks removal (also from the
    /// trash), not a trash move.
    pub async fn watchers(r: &mut Run) {
        let c = r.c.clone();
        let name = r.name("w");
        c.create_image(&spec(POOL, &name, 16 * MIB)).await.unwrap();
        let w = r.see("none", c.watchers(POOL, &name).await).unwrap();
        assert!(w.is_empty(), "reading does not make us a watcher: {w:?}");
        r.see("info does not watch", c.image_info(POOL, &name).await)
            .unwrap();
        r.see("still none", c.watchers(POOL, &name).await).unwrap();
        let held = r.hold_open(POOL, &name).await;
        let w = r.see("held open", c.watchers(POOL, &name).await).unwrap();
        assert_eq!(w.len(), 1);
        let e = r
            .see("remove while held", c.remove_image(POOL, &name).await)
            .unwrap_err();
        assert!(e.is_busy(), "{e}");
        r.see("resize while held", c.resize(POOL, &name, 32 * MIB).await)
            .unwrap();
        r.see(
            "set metadata while held",
            c.set_metadata(POOL, &name, pairs(&[(KEYS[0], "x")])).await,
        )
        .unwrap();
        let id = c.image_info(POOL, &name).await.unwrap().id;
        r.see("trash move while held", c.trash_move(POOL, &name, 0).await)
            .unwrap();
        r.see("trash", c.trash_list(POOL).await).unwrap();
        let e = r
            .see(
                "trash remove while held",
                c.trash_remove(POOL, &id, true).await,
            )
            .unwrap_err();
        assert!(e.is_busy(), "{e}");
        drop(held);
        let gone = r.see(
            "trash remove once let go",
            c.trash_remove(POOL, &id, true).await,
        );
        assert_eq!(gone.unwrap(), Removed::Removed);
        let e = r
            .see("watchers of a missing image", c.watchers(POOL, &name).await)
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        // Snapshots are checked before watchers.
        c.create_image(&spec(POOL, &name, 16 * MIB)).await.unwrap();
        c.snap_create(POOL, &name, "s").await.unwrap();
        let held = r.hold_open(POOL, &name).await;
        r.see(
            "remove with a snapshot, held",
            c.remove_image(POOL, &name).await,
        )
        .unwrap_err();
        drop(held);
        c.snap_remove(POOL, &name, "s").await.unwrap();
        c.remove_image(POOL, &name).await.unwrap();
    }

    /// Snapshots: create, list, protect, unprotect, remove, each twice; missing image and
    /// snapshot; an image with snapshots cannot be removed.
    pub async fn snapshots(r: &mut Run) {
        let c = r.c.clone();
        let name = r.name("snaps");
        c.create_image(&spec(POOL, &name, 32 * MIB)).await.unwrap();
        let s = r.see("create", c.snap_create(POOL, &name, "one").await);
        assert_eq!(s.unwrap(), Created::New);
        let s = r.see("create again", c.snap_create(POOL, &name, "one").await);
        assert_eq!(s.unwrap(), Created::AlreadyExisted);
        c.resize(POOL, &name, 64 * MIB).await.unwrap();
        r.see(
            "another after growing",
            c.snap_create(POOL, &name, "two").await,
        )
        .unwrap();
        r.see("list", c.snap_list(POOL, &name).await).unwrap();
        r.see("protect", c.snap_protect(POOL, &name, "one").await)
            .unwrap();
        r.see("protect again", c.snap_protect(POOL, &name, "one").await)
            .unwrap();
        r.see("list protected", c.snap_list(POOL, &name).await)
            .unwrap();
        let e = r
            .see(
                "remove a protected one",
                c.snap_remove(POOL, &name, "one").await,
            )
            .unwrap_err();
        assert!(e.is_busy(), "{e}");
        let e = r
            .see(
                "remove the image with snapshots",
                c.remove_image(POOL, &name).await,
            )
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOTEMPTY), "{e}");
        r.see("unprotect", c.snap_unprotect(POOL, &name, "one").await)
            .unwrap();
        r.see(
            "unprotect again",
            c.snap_unprotect(POOL, &name, "one").await,
        )
        .unwrap();
        let gone = r.see("remove", c.snap_remove(POOL, &name, "one").await);
        assert_eq!(gone.unwrap(), Removed::Removed);
        let gone = r.see("remove again", c.snap_remove(POOL, &name, "one").await);
        assert_eq!(gone.unwrap(), Removed::AlreadyGone);
        for e in [
            r.see(
                "protect a missing one",
                c.snap_protect(POOL, &name, "none").await,
            )
            .unwrap_err(),
            r.see(
                "unprotect a missing one",
                c.snap_unprotect(POOL, &name, "none").await,
            )
            .unwrap_err(),
        ] {
            assert!(e.is_not_found(), "{e}");
        }
        r.see(
            "a NUL in the name",
            c.snap_create(POOL, &name, "a\0b").await,
        )
        .unwrap_err();
        let missing = r.name("missing");
        for e in [
            r.see(
                "create on a missing image",
                c.snap_create(POOL, &missing, "s").await,
            )
            .unwrap_err(),
            r.see(
                "protect on a missing image",
                c.snap_protect(POOL, &missing, "s").await,
            )
            .unwrap_err(),
            r.see(
                "unprotect on a missing image",
                c.snap_unprotect(POOL, &missing, "s").await,
            )
            .unwrap_err(),
            r.see(
                "remove on a missing image",
                c.snap_remove(POOL, &missing, "s").await,
            )
            .unwrap_err(),
            r.see("list of a missing image", c.snap_list(POOL, &missing).await)
                .unwrap_err(),
        ] {
            assert!(e.is_not_found(), "{e}");
        }
        r.see("remove the last", c.snap_remove(POOL, &name, "two").await)
            .unwrap();
        r.see("remove the image", c.remove_image(POOL, &name).await)
            .unwrap();
        // Protection needs layering.
        let plain = r.name("plain");
        let s = ImageSpec {
            features: 0,
            ..spec(POOL, &plain, MIB)
        };
        c.create_image(&s).await.unwrap();
        r.see(
            "snapshot without layering",
            c.snap_create(POOL, &plain, "s").await,
        )
        .unwrap();
        r.see(
            "protect without layering",
            c.snap_protect(POOL, &plain, "s").await,
        )
        .unwrap_err();
        c.snap_remove(POOL, &plain, "s").await.unwrap();
        c.remove_image(POOL, &plain).await.unwrap();
    }

    /// Clones (format 1, as the provisioner makes them): the parent snapshot must be
    /// protected, stays protected while a clone (even a trashed one) exists, and the parent
    /// cannot go.
    pub async fn clones(r: &mut Run) {
        let c = r.c.clone();
        let (parent, child) = (r.name("parent"), r.name("child"));
        c.create_image(&spec(POOL, &parent, 32 * MIB))
            .await
            .unwrap();
        c.set_metadata(POOL, &parent, pairs(&[(KEYS[0], "parent")]))
            .await
            .unwrap();
        c.snap_create(POOL, &parent, "base").await.unwrap();
        let cs = clone_spec((POOL, &parent, "base"), POOL2, &child);
        let e = r
            .see("clone an unprotected snapshot", c.clone_image(&cs).await)
            .unwrap_err();
        assert!(matches!(e, CephError::Clone { .. }), "{e}");
        c.snap_protect(POOL, &parent, "base").await.unwrap();
        let made = r.see("clone", c.clone_image(&cs).await);
        assert_eq!(made.unwrap(), Created::New);
        let again = r.see("clone again", c.clone_image(&cs).await);
        assert_eq!(again.unwrap(), Created::AlreadyExisted);
        let info = r
            .see("the clone", c.image_info(POOL2, &child).await)
            .unwrap();
        assert!(info.parent.is_some());
        r.see(
            "the clone's metadata",
            c.metadata(POOL2, &child, KEYS).await,
        )
        .unwrap();
        r.see("grow the clone", c.resize(POOL2, &child, 48 * MIB).await)
            .unwrap();
        for (what, s) in [
            (
                "a missing snapshot",
                clone_spec((POOL, &parent, "none"), POOL2, &r.name("c1")),
            ),
            (
                "a missing parent",
                clone_spec((POOL, &r.name("none"), "base"), POOL2, &r.name("c2")),
            ),
            (
                "a missing parent pool",
                clone_spec((NO_POOL, &parent, "base"), POOL2, &r.name("c3")),
            ),
            (
                "into a missing pool",
                clone_spec((POOL, &parent, "base"), NO_POOL, &r.name("c4")),
            ),
            (
                "without layering",
                CloneSpec {
                    features: 0,
                    ..clone_spec((POOL, &parent, "base"), POOL2, &r.name("c5"))
                },
            ),
        ] {
            r.see(&format!("clone {what}"), c.clone_image(&s).await)
                .unwrap_err();
        }
        let e = r
            .see(
                "unprotect with a clone",
                c.snap_unprotect(POOL, &parent, "base").await,
            )
            .unwrap_err();
        assert!(e.is_busy(), "{e}");
        r.see("remove the parent", c.remove_image(POOL, &parent).await)
            .unwrap_err();
        r.see("trash the clone", c.trash_move(POOL2, &child, 0).await)
            .unwrap();
        let e = r
            .see(
                "unprotect with a trashed clone",
                c.snap_unprotect(POOL, &parent, "base").await,
            )
            .unwrap_err();
        assert!(e.is_busy(), "{e}");
        let trash = c.trash_list(POOL2).await.unwrap();
        let id = &trash
            .iter()
            .find(|t| t.name == child)
            .expect("in the trash")
            .id;
        r.see("purge the clone", c.trash_remove(POOL2, id, true).await)
            .unwrap();
        r.see(
            "unprotect once it is gone",
            c.snap_unprotect(POOL, &parent, "base").await,
        )
        .unwrap();
        // Into the parent's own pool, then removed directly.
        c.snap_protect(POOL, &parent, "base").await.unwrap();
        let sibling = r.name("sibling");
        r.see(
            "clone into the same pool",
            c.clone_image(&clone_spec((POOL, &parent, "base"), POOL, &sibling))
                .await,
        )
        .unwrap();
        r.see("the sibling", c.image_info(POOL, &sibling).await)
            .unwrap();
        r.see("remove the sibling", c.remove_image(POOL, &sibling).await)
            .unwrap();
        r.see(
            "unprotect after that",
            c.snap_unprotect(POOL, &parent, "base").await,
        )
        .unwrap();
        c.snap_remove(POOL, &parent, "base").await.unwrap();
        c.remove_image(POOL, &parent).await.unwrap();
    }

    /// Flatten cuts a clone loose: no parent, and the snapshot may then be unprotected.
    pub async fn flatten(r: &mut Run) {
        let c = r.c.clone();
        let (parent, child) = (r.name("parent"), r.name("child"));
        c.create_image(&spec(POOL, &parent, 16 * MIB))
            .await
            .unwrap();
        c.snap_create(POOL, &parent, "base").await.unwrap();
        c.snap_protect(POOL, &parent, "base").await.unwrap();
        c.clone_image(&clone_spec((POOL, &parent, "base"), POOL, &child))
            .await
            .unwrap();
        r.see("before", c.image_info(POOL, &child).await).unwrap();
        r.see("flatten", c.flatten(POOL, &child).await).unwrap();
        let info = r.see("after", c.image_info(POOL, &child).await).unwrap();
        assert_eq!(info.parent, None);
        r.see("flatten again", c.flatten(POOL, &child).await)
            .unwrap();
        r.see("flatten the parent", c.flatten(POOL, &parent).await)
            .unwrap();
        r.see("unprotect", c.snap_unprotect(POOL, &parent, "base").await)
            .unwrap();
        r.see(
            "remove the snapshot",
            c.snap_remove(POOL, &parent, "base").await,
        )
        .unwrap();
        r.see("remove the parent", c.remove_image(POOL, &parent).await)
            .unwrap();
        r.see("the clone stays", c.image_info(POOL, &child).await)
            .unwrap();
        c.remove_image(POOL, &child).await.unwrap();
    }

    /// The trash: move, list, read by id, remove, each twice; a new image of the same name
    /// meanwhile; an entry with snapshots.
    pub async fn trash(r: &mut Run) {
        let c = r.c.clone();
        let name = r.name("t");
        c.create_image(&spec(POOL, &name, 16 * MIB)).await.unwrap();
        c.set_metadata_unopened(POOL, &name, pairs(&[(KEYS[0], "a"), (KEYS[2], "c")]))
            .await
            .unwrap();
        let id = r.see("info", c.image_info(POOL, &name).await).unwrap().id;
        r.see(
            "read by id while live",
            c.trash_metadata(POOL, &id, KEYS).await,
        )
        .unwrap();
        let moved = r.see("move", c.trash_move(POOL, &name, 0).await);
        assert_eq!(moved.unwrap(), Removed::Removed);
        r.see("not listed", c.list_images(POOL).await).unwrap();
        let t = r
            .see("listed in the trash", c.trash_list(POOL).await)
            .unwrap();
        assert!(t.iter().any(|t| t.id == id && t.name == name));
        let again = r.see("move again", c.trash_move(POOL, &name, 0).await);
        assert_eq!(again.unwrap(), Removed::AlreadyGone);
        r.see("image_info by name", c.image_info(POOL, &name).await)
            .unwrap_err();
        r.see("trash_metadata", c.trash_metadata(POOL, &id, KEYS).await)
            .unwrap();
        r.see("trash_image", c.trash_image(POOL, &id, KEYS).await)
            .unwrap();
        let made = r.see(
            "a new image of the name",
            c.create_image(&spec(POOL, &name, 8 * MIB)).await,
        );
        assert_eq!(made.unwrap(), Created::New);
        r.see("the new one", c.image_info(POOL, &name).await)
            .unwrap();
        let gone = r.see("remove", c.trash_remove(POOL, &id, false).await);
        assert_eq!(gone.unwrap(), Removed::Removed);
        let gone = r.see("remove again", c.trash_remove(POOL, &id, false).await);
        assert_eq!(gone.unwrap(), Removed::AlreadyGone);
        for e in [
            r.see(
                "trash_metadata of a missing id",
                c.trash_metadata(POOL, &id, KEYS).await,
            )
            .unwrap_err(),
            r.see(
                "trash_image of a missing id",
                c.trash_image(POOL, &id, KEYS).await,
            )
            .unwrap_err(),
        ] {
            assert!(e.is_not_found(), "{e}");
        }
        r.see("the trash", c.trash_list(POOL).await).unwrap();
        // With a snapshot: moved, but not removed.
        c.snap_create(POOL, &name, "s").await.unwrap();
        let id = c.image_info(POOL, &name).await.unwrap().id;
        r.see("move with a snapshot", c.trash_move(POOL, &name, 0).await)
            .unwrap();
        let e = r
            .see(
                "remove with a snapshot",
                c.trash_remove(POOL, &id, true).await,
            )
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOTEMPTY), "{e}");
        r.see("still in the trash", c.trash_list(POOL).await)
            .unwrap();
    }

    /// An entry moved with a delay cannot be removed before it ends, unless forced.
    pub async fn trash_deferment(r: &mut Run) {
        let c = r.c.clone();
        let name = r.name("d");
        c.create_image(&spec(POOL, &name, 16 * MIB)).await.unwrap();
        let id = c.image_info(POOL, &name).await.unwrap().id;
        r.see("move for an hour", c.trash_move(POOL, &name, 3600).await)
            .unwrap();
        r.see("listed", c.trash_list(POOL).await).unwrap();
        let e = r
            .see("remove", c.trash_remove(POOL, &id, false).await)
            .unwrap_err();
        assert!(e.is_permission(), "{e}");
        let gone = r.see("remove by force", c.trash_remove(POOL, &id, true).await);
        assert_eq!(gone.unwrap(), Removed::Removed);
        r.see("gone", c.trash_list(POOL).await).unwrap();
    }

    /// What a process killed inside `rbd_create4` leaves: listed, not openable, "already
    /// existed" to a create, removable.
    pub async fn half_made_image(r: &mut Run) {
        let c = r.c.clone();
        let name = r.name("half");
        let id = r.half_made(POOL, &name).await;
        r.token("id", &id);
        r.see("listed", c.list_images(POOL).await).unwrap();
        let e = r
            .see("image_info", c.image_info(POOL, &name).await)
            .unwrap_err();
        assert!(e.is_not_found(), "{e}");
        r.see("metadata", c.metadata(POOL, &name, KEYS).await)
            .unwrap_err();
        r.see("watchers", c.watchers(POOL, &name).await)
            .unwrap_err();
        r.see("snap_list", c.snap_list(POOL, &name).await)
            .unwrap_err();
        r.see(
            "trash_metadata by its id",
            c.trash_metadata(POOL, &id, KEYS).await,
        )
        .unwrap_err();
        // The object class writes the pairs whether or not the header is there.
        r.see(
            "set_metadata_unopened",
            c.set_metadata_unopened(POOL, &name, pairs(&[(KEYS[0], "x")]))
                .await,
        )
        .unwrap();
        r.see("image_info after that", c.image_info(POOL, &name).await)
            .unwrap_err();
        r.see("metadata after that", c.metadata(POOL, &name, KEYS).await)
            .unwrap_err();
        let again = r.see("create", c.create_image(&spec(POOL, &name, MIB)).await);
        assert_eq!(again.unwrap(), Created::AlreadyExisted);
        let gone = r.see("remove", c.remove_image(POOL, &name).await);
        assert_eq!(gone.unwrap(), Removed::Removed);
        r.see("not listed", c.list_images(POOL).await).unwrap();
        let made = r.see("create anew", c.create_image(&spec(POOL, &name, MIB)).await);
        assert_eq!(made.unwrap(), Created::New);
        r.see("whole", c.image_info(POOL, &name).await).unwrap();
        c.remove_image(POOL, &name).await.unwrap();
    }

    /// A pool at its quota (measured: the OSD refuses with EDQUOT, at once, what would add
    /// objects or bytes; omap-only writes and removals pass), and the trap of a pool whose
    /// trash object does not exist yet: a trash move (and `rbd_remove`, which goes through
    /// the trash) cannot make it, and librbd then reports ENOENT, i.e. "already gone", for an
    /// image that stays where it was.
    pub async fn quota_reached(r: &mut Run) {
        let c = r.c.clone();
        let pool = r.own_pool("quota").await;
        let [a, b, e, f, g] = ["a", "b", "e", "f", "g"].map(|n| r.name(n));
        for name in [&a, &b, &e, &f, &g] {
            c.create_image(&spec(&pool, name, 16 * MIB)).await.unwrap();
        }
        c.snap_create(&pool, &a, "base").await.unwrap();
        c.snap_protect(&pool, &a, "base").await.unwrap();
        c.snap_create(&pool, &a, "spare").await.unwrap();
        c.records_set(&pool, OID, vec![(r.name("k"), vec![1])])
            .await
            .unwrap();
        r.see("quota before", c.pool_quota(&pool).await).unwrap();
        r.quota(&pool, Some(1)).await;
        let q = r.see("quota reached", c.pool_quota(&pool).await).unwrap();
        assert!(q.reached().is_some(), "{q:?}");

        // What adds objects is refused.
        let err = r
            .see(
                "create",
                c.create_image(&spec(&pool, &r.name("c"), MIB)).await,
            )
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EDQUOT), "{err}");
        let again = r.see(
            "create an existing name",
            c.create_image(&spec(&pool, &a, MIB)).await,
        );
        assert_eq!(again.unwrap(), Created::AlreadyExisted);
        let err = r
            .see(
                "clone",
                c.clone_image(&clone_spec((&pool, &a, "base"), &pool, &r.name("d")))
                    .await,
            )
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EDQUOT), "{err}");
        let err = r
            .see(
                "records_set on a new object",
                c.records_set(&pool, "rbdp-contract-new", vec![(r.name("k3"), vec![3])])
                    .await,
            )
            .unwrap_err();
        assert_eq!(err.errno(), Some(libc::EDQUOT), "{err}");

        // Omap-only writes pass.
        r.see(
            "records_set on an existing object",
            c.records_set(&pool, OID, vec![(r.name("k2"), vec![2])])
                .await,
        )
        .unwrap();
        r.see(
            "set_metadata",
            c.set_metadata(&pool, &a, pairs(&[(KEYS[0], "x")])).await,
        )
        .unwrap();
        r.see(
            "set_metadata_unopened",
            c.set_metadata_unopened(&pool, &a, pairs(&[(KEYS[1], "y")]))
                .await,
        )
        .unwrap();
        r.see("snap_create", c.snap_create(&pool, &a, "more").await)
            .unwrap();
        r.see("grow", c.resize(&pool, &a, 32 * MIB).await).unwrap();
        r.see("image_info", c.image_info(&pool, &a).await).unwrap();
        r.see("metadata", c.metadata(&pool, &a, KEYS).await)
            .unwrap();
        r.see("records", c.records(&pool, OID).await).unwrap();
        r.see("snap_remove", c.snap_remove(&pool, &a, "spare").await)
            .unwrap();
        r.see(
            "records_remove",
            c.records_remove(&pool, OID, vec![r.name("k")]).await,
        )
        .unwrap();

        // No trash object yet: "already gone", and nothing moved.
        let gone = r.see("trash_move, no trash yet", c.trash_move(&pool, &b, 0).await);
        assert_eq!(gone.unwrap(), Removed::AlreadyGone);
        let gone = r.see(
            "remove_image, no trash yet",
            c.remove_image(&pool, &e).await,
        );
        assert_eq!(gone.unwrap(), Removed::AlreadyGone);
        r.see("both still there", c.list_images(&pool).await)
            .unwrap();
        r.see("nothing in the trash", c.trash_list(&pool).await)
            .unwrap();

        // With a trash object, moves and removals work at the quota.
        r.quota(&pool, None).await;
        r.see("quota lifted", c.pool_quota(&pool).await).unwrap();
        r.see("trash_move, quota lifted", c.trash_move(&pool, &b, 0).await)
            .unwrap();
        r.quota(&pool, Some(1)).await;
        let moved = r.see("trash_move, trash there", c.trash_move(&pool, &f, 0).await);
        assert_eq!(moved.unwrap(), Removed::Removed);
        let trash = r.see("trash_list", c.trash_list(&pool).await).unwrap();
        for t in &trash {
            let gone = r.see("trash_remove", c.trash_remove(&pool, &t.id, true).await);
            assert_eq!(gone.unwrap(), Removed::Removed);
        }
        let gone = r.see("remove_image, trash there", c.remove_image(&pool, &g).await);
        assert_eq!(gone.unwrap(), Removed::Removed);
        r.see("left", c.list_images(&pool).await).unwrap();
        r.quota(&pool, None).await;
        for snap in ["base", "more"] {
            let _ = c.snap_unprotect(&pool, &a, snap).await;
            c.snap_remove(&pool, &a, snap).await.unwrap();
        }
        c.remove_image(&pool, &a).await.unwrap();
        c.remove_image(&pool, &e).await.unwrap();
    }
}
