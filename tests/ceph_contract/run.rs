//! Where a scenario runs (the fake or the bed), its transcript, and the bed's clean-up.

use super::*;

/// Where a scenario runs.
pub(crate) enum Side {
    Fake(FakeCeph),
    Real {
        /// A second client, to hold images open as a node that mapped them would.
        other: Arc<Cluster>,
    },
}

/// One run of a scenario: the cluster, and the transcript of what it observed.
pub(crate) struct Run {
    pub(crate) side: Side,
    pub(crate) c: Arc<dyn RbdCluster>,
    pub(crate) prefix: String,
    pub(crate) lines: Vec<String>,
    /// Values that differ between clusters (ids, fsid) and their placeholders.
    pub(crate) tokens: Vec<(String, String)>,
    pub(crate) pool_names: BTreeMap<i64, String>,
    pub(crate) _cleanup: Option<Cleanup>,
    /// Dropped after `_cleanup`, which empties it first.
    pub(crate) _pool: Option<OwnPool>,
}

impl Run {
    pub(crate) fn fake(prefix: &str) -> Run {
        let fake = FakeCeph::with_pools(&[POOL, POOL2]);
        Run::new(Side::Fake(fake.clone()), fake.cluster(), prefix, None)
    }

    pub(crate) async fn real(prefix: &str) -> Run {
        let bed = common::Bed::load();
        // Two clients (each `Bed::ceph` connects afresh).
        let (admin, other) = (bed.ceph().await, bed.ceph().await);
        let cleanup = Cleanup {
            cluster: admin.clone(),
            prefix: prefix.to_string(),
        };
        Run::new(Side::Real { other }, Arc::new(admin), prefix, Some(cleanup))
    }

    pub(crate) fn new(
        side: Side,
        c: Arc<dyn RbdCluster>,
        prefix: &str,
        cleanup: Option<Cleanup>,
    ) -> Run {
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
    pub(crate) async fn learn_pools(&mut self) {
        for p in [POOL, POOL2] {
            let id = self.c.pool_id(p).await.expect("pool id");
            self.pool_names.insert(id, p.to_string());
        }
    }

    /// A name of this scenario's own.
    pub(crate) fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.prefix)
    }

    /// Another client holds `pool/image` open read/write until the guard is dropped.
    pub(crate) async fn hold_open(&self, pool: &str, image: &str) -> Box<dyn Send> {
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
    pub(crate) async fn half_made(&self, pool: &str, name: &str) -> String {
        match &self.side {
            Side::Fake(f) => f.half_made(pool, name),
            Side::Real { .. } => {
                let spec = layering_spec(pool, name, MIB);
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
    pub(crate) async fn own_pool(&mut self, what: &str) -> String {
        let pool = self.name(what);
        match &self.side {
            Side::Fake(f) => {
                f.add_pool(&pool);
            }
            Side::Real { .. } => {
                let bed = common::Bed::load();
                common::ceph_cli(&bed, &["osd", "pool", "create", &pool, "8"]);
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
    pub(crate) async fn quota(&self, pool: &str, max_objects: Option<u64>) {
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
                common::ceph_cli(&bed, &["osd", "pool", "set-quota", pool, "max_objects", &n]);
                let full = max_objects.is_some();
                common::wait_for(
                    "the pool's full_quota flag",
                    std::time::Duration::from_secs(90),
                    || async {
                        let v: serde_json::Value = serde_json::from_str(&common::ceph_cli(
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
    pub(crate) fn token(&mut self, kind: &str, value: &str) -> String {
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

    pub(crate) fn normalise(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (value, token) in &self.tokens {
            text = text.replace(value.as_str(), token);
        }
        text.replace(&self.prefix, "@")
    }

    /// Records what a step observed, and hands the result back for the scenario's own
    /// assertions.
    pub(crate) fn see<T: Observe>(
        &mut self,
        step: &str,
        r: Result<T, CephError>,
    ) -> Result<T, CephError> {
        let seen = match &r {
            Ok(v) => format!("ok {}", v.observe(self)),
            Err(e) => format!("err {e:?}"),
        };
        let line = format!("{step}: {}", self.normalise(&seen));
        self.lines.push(line);
        r
    }

    pub(crate) fn transcript(&self) -> String {
        self.lines.join("\n")
    }
}

/// A pool made for one scenario on the bed, deleted when dropped.
pub(crate) struct OwnPool(pub(crate) String);

impl Drop for OwnPool {
    fn drop(&mut self) {
        let bed = common::Bed::load();
        let p = self.0.as_str();
        let _ = common::try_ceph_cli(
            &bed,
            &["osd", "pool", "rm", p, p, "--yes-i-really-really-mean-it"],
        );
    }
}

/// Removes the scenario's images (snapshots first, clones before parents) and trash entries
/// from the bed when dropped, even after a failed assertion.
pub(crate) struct Cleanup {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) prefix: String,
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

pub(crate) async fn clean(c: &Arc<Cluster>, prefix: &str) {
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
