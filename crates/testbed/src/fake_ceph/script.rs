//! Setting the fake up and scripting it: pools, images, watchers, the clock, the states a
//! killed process leaves, faults, the call log.

use super::*;

/// What the fake answers to an injected fault, worked out when the call begins.
pub(super) struct Planned {
    pub(super) delay: Option<Duration>,
    pub(super) error: Option<CephError>,
    pub(super) after_effect: bool,
}

impl FakeCeph {
    /// An empty cluster (no pools) at `fake-ceph:6789`.
    pub fn new() -> FakeCeph {
        FakeCeph {
            monitors: Arc::from("fake-ceph:6789"),
            state: Arc::new(Mutex::new(State {
                fsid: "0f5e1a4c-0000-4000-8000-00000000fa4e".into(),
                pools: BTreeMap::new(),
                next_pool_id: 1,
                next_image: 0,
                next_snap_id: 0,
                next_watch: 0,
                clock_offset: 0,
                faults: Vec::new(),
                calls: Vec::new(),
                replace_after: Vec::new(),
            })),
        }
    }

    /// A cluster with these pools (`rbd pool init`ed), e.g. `FakeCeph::with_pools(&["kube"])`.
    pub fn with_pools(pools: &[&str]) -> FakeCeph {
        let fake = FakeCeph::new();
        for p in pools {
            fake.add_pool(p);
        }
        fake
    }

    /// The same cluster reached at other monitors (`mon_host`, as errors and
    /// [`RbdCluster::monitors`] name it).
    pub fn at_monitors(mut self, monitors: &str) -> FakeCeph {
        self.monitors = Arc::from(monitors);
        self
    }

    /// This cluster as the controllers hold one.
    pub fn cluster(&self) -> Arc<dyn RbdCluster> {
        Arc::new(self.clone())
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves whole values behind.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ---- the cluster's make-up ------------------------------------------------------------

    pub fn set_fsid(&self, fsid: &str) {
        self.lock().fsid = fsid.to_string();
    }

    /// Creates a pool with the `rbd` application enabled; returns its id. An existing pool
    /// is left as it is.
    pub fn add_pool(&self, name: &str) -> i64 {
        let mut s = self.lock();
        if let Some(p) = s.pools.get(name) {
            return p.id;
        }
        let id = s.next_pool_id;
        s.next_pool_id += 1;
        let created = Some(s.now());
        s.pools.insert(
            name.to_string(),
            Pool {
                id,
                created,
                quota: PoolQuota::default(),
                applications: vec!["rbd".into()],
                images: BTreeMap::new(),
                trash: BTreeMap::new(),
                objects: BTreeMap::new(),
                trash_object: false,
            },
        );
        id
    }

    /// Deletes a pool and all it holds.
    pub fn remove_pool(&self, name: &str) -> bool {
        self.lock().pools.remove(name).is_some()
    }

    /// What an operator who renamed the pool away and created a new one of the same name
    /// leaves: an empty pool with a new id, created now. Returns the new id.
    pub fn replace_pool(&self, name: &str) -> i64 {
        self.remove_pool(name);
        self.add_pool(name)
    }

    /// [`FakeCeph::replace_pool`] right after the next call of `method` on `pool` returns: a
    /// new OSD map reaching the client between two of its calls.
    pub fn replace_pool_after(&self, method: Method, pool: &str) {
        self.lock().replace_after.push((method, pool.to_string()));
    }

    pub fn set_pool_created(&self, pool: &str, unix_secs: Option<i64>) {
        if let Some(p) = self.lock().pools.get_mut(pool) {
            p.created = unix_secs;
        }
    }

    /// Sets a pool's quotas and the figures reported with them. Once a quota is reached by
    /// these figures, what would add objects fails with EDQUOT (creating and cloning images,
    /// omap records on a new object); trash moves and image removals in a pool that never
    /// had anything trashed answer "already gone" and leave the image where it is (librbd
    /// cannot make the trash object and then reports ENOENT); the rest passes.
    pub fn set_quota(&self, pool: &str, quota: PoolQuota) {
        if let Some(p) = self.lock().pools.get_mut(pool) {
            p.quota = quota;
        }
    }

    pub fn set_applications(&self, pool: &str, apps: &[&str]) {
        if let Some(p) = self.lock().pools.get_mut(pool) {
            p.applications = apps.iter().map(|a| a.to_string()).collect();
        }
    }

    pub fn pool_id_of(&self, pool: &str) -> Option<i64> {
        self.lock().pools.get(pool).map(|p| p.id)
    }

    // ---- images, without going through (or being logged as) the trait ---------------------

    /// Puts a layering image of `size` bytes into the pool (replacing one of that name);
    /// returns its id.
    pub fn put_image(&self, pool: &str, name: &str, size: u64) -> String {
        let mut s = self.lock();
        let own = s
            .pools
            .get(pool)
            .map(|p| p.id)
            .expect("put_image: no such pool");
        let img = s.new_image(size, RBD_FEATURE_LAYERING, own);
        let id = img.id.clone();
        s.pools
            .get_mut(pool)
            .expect("pool")
            .images
            .insert(name.to_string(), img);
        id
    }

    /// Sets image-meta keys of an image (in the directory or, by id, in the trash).
    pub fn put_metadata(&self, pool: &str, image: &str, pairs: &[(&str, &str)]) {
        let mut s = self.lock();
        let p = s.pools.get_mut(pool).expect("put_metadata: no such pool");
        let img = match p.images.get_mut(image) {
            Some(i) => i,
            None => p.by_id_mut(image).expect("put_metadata: no such image"),
        };
        for (k, v) in pairs {
            img.meta.insert(k.to_string(), v.to_string());
        }
    }

    /// What a process killed inside `rbd_create4` leaves: the name taken, no header. Opens
    /// fail with ENOENT, a create answers "already existed", a remove cleans it up.
    pub fn half_made(&self, pool: &str, name: &str) -> String {
        let id = self.put_image(pool, name, 0);
        let mut s = self.lock();
        if let Some(img) = s.pools.get_mut(pool).and_then(|p| p.images.get_mut(name)) {
            img.header = false;
        }
        id
    }

    /// What a process killed inside `rbd_trash_move` of `pool/name` leaves: a trash entry
    /// "moving" that cannot be removed (EUCLEAN) until a trash move of the name finishes it;
    /// the image is still in the directory when `left_in_directory`. Returns the trash id.
    pub fn interrupt_trash_move(&self, pool: &str, name: &str, left_in_directory: bool) -> String {
        let mut s = self.lock();
        let now = s.now();
        let p = s
            .pools
            .get_mut(pool)
            .expect("interrupt_trash_move: no such pool");
        let img = if left_in_directory {
            p.images.get(name).cloned()
        } else {
            p.images.remove(name)
        }
        .expect("interrupt_trash_move: no such image");
        let id = img.id.clone();
        p.trash.insert(
            id.clone(),
            Trashed {
                name: name.to_string(),
                img,
                deletion_time: now,
                deferment_end_time: now,
                moving: true,
            },
        );
        id
    }

    /// Moves the cluster's clock (trash deletion and deferment times) by `secs`.
    pub fn advance(&self, secs: i64) {
        self.lock().clock_offset += secs;
    }

    /// The cluster's clock, Unix seconds.
    pub fn now(&self) -> i64 {
        self.lock().now()
    }

    // ---- watchers ---------------------------------------------------------------------------

    /// Opens the image read/write elsewhere (a node that mapped it) until the guard is
    /// dropped: it is a watcher, follows the image into the trash, and blocks removal.
    pub fn hold_open(&self, pool: &str, image: &str) -> Watch {
        let mut s = self.lock();
        s.next_watch += 1;
        let cookie = 0x5eed_0000 + s.next_watch;
        let watcher = Watcher {
            addr: format!(
                "192.0.2.{}:0/{}",
                s.next_watch % 250 + 1,
                3_000_000 + cookie
            ),
            id: i64::try_from(4100 + s.next_watch).unwrap_or(i64::MAX),
            cookie,
        };
        let img = s
            .pools
            .get_mut(pool)
            .and_then(|p| p.images.get_mut(image))
            .filter(|i| i.header)
            .expect("hold_open: no such image");
        img.watchers.push(watcher);
        Watch {
            state: Arc::downgrade(&self.state),
            pool: pool.to_string(),
            image_id: img.id.clone(),
            cookie,
        }
    }

    // ---- inspection -----------------------------------------------------------------------

    /// The image `pool/name` in the directory (not in the trash), as held.
    pub fn image(&self, pool: &str, name: &str) -> Option<FakeImage> {
        let s = self.lock();
        let img = s.pools.get(pool)?.images.get(name)?;
        Some(s.public(pool, img))
    }

    /// Names in the pool's directory.
    pub fn images(&self, pool: &str) -> Vec<String> {
        let s = self.lock();
        s.pools
            .get(pool)
            .map(|p| p.images.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The pool's trash entries.
    pub fn trash(&self, pool: &str) -> Vec<TrashEntry> {
        let s = self.lock();
        s.pools
            .get(pool)
            .map(|p| p.trash.iter().map(|(id, t)| trash_entry(id, t)).collect())
            .unwrap_or_default()
    }

    /// The image behind a trash entry.
    pub fn trashed_image(&self, pool: &str, id: &str) -> Option<FakeImage> {
        let s = self.lock();
        let t = s.pools.get(pool)?.trash.get(id)?;
        Some(s.public(pool, &t.img))
    }

    /// The omap pairs of an object.
    pub fn omap(&self, pool: &str, oid: &str) -> BTreeMap<String, Vec<u8>> {
        let s = self.lock();
        s.pools
            .get(pool)
            .and_then(|p| p.objects.get(oid))
            .cloned()
            .unwrap_or_default()
    }

    // ---- scripting: faults and the call log ------------------------------------------------

    /// Adds a fault; faults are tried in the order they were added, and the first that hits
    /// a call decides it (every matching fault counts the call).
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Every call of `method` fails with `errno`.
    pub fn fail(&self, method: Method, errno: i32) {
        self.inject(Fault::on(method).errno(errno));
    }

    /// The n-th call of `method` from now (1: the next) fails with `errno`.
    pub fn fail_nth(&self, method: Method, n: u32, errno: i32) {
        self.inject(Fault::on(method).nth(n).errno(errno));
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Every call made through the trait so far, in the order they returned.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls of one method.
    pub fn calls_of(&self, method: Method) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// How many calls of `method` were made.
    pub fn count(&self, method: Method) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .count()
    }

    /// The calls that change the cluster ([`Method::writes`]), to assert that a reconciler
    /// only looked.
    pub fn writes(&self) -> Vec<Call> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method.writes())
            .cloned()
            .collect()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Runs one call: logs it, applies the faults that hit it, else does `op` on the state.
    pub(super) async fn call<T>(
        &self,
        method: Method,
        pool: &str,
        image: &str,
        snap: Option<&str>,
        op: impl FnOnce(&mut State) -> Result<T, CephError> + Send,
    ) -> Result<T, CephError> {
        // A real call suspends the task; so does this one, so that concurrent callers
        // interleave.
        tokio::task::yield_now().await;
        let mut call = Call {
            method,
            pool: pool.to_string(),
            image: image.to_string(),
            snap: snap.map(str::to_string),
            errno: None,
        };
        let planned = self.plan(&call);
        if let Some(d) = planned.delay {
            tokio::time::sleep(d).await;
        }
        let r = match planned.error {
            Some(e) if !planned.after_effect => Err(e),
            injected => {
                let r = op(&mut self.lock());
                match (r, injected) {
                    (Ok(_), Some(e)) => Err(e),
                    (r, _) => r,
                }
            }
        };
        call.errno = r.as_ref().err().map(|e| e.errno().unwrap_or(0));
        let due = {
            let mut s = self.lock();
            s.calls.push(call);
            let i = s
                .replace_after
                .iter()
                .position(|(m, p)| *m == method && p == pool);
            i.map(|i| s.replace_after.remove(i).1)
        };
        if let Some(pool) = due {
            self.replace_pool(&pool);
        }
        r
    }

    pub(super) fn plan(&self, call: &Call) -> Planned {
        let mut s = self.lock();
        let mut planned = Planned {
            delay: None,
            error: None,
            after_effect: false,
        };
        let mut decided = false;
        for f in s.faults.iter_mut().filter(|f| f.matches(call)) {
            if !f.hits() || decided {
                continue;
            }
            decided = true;
            planned.delay = f.delay;
            planned.after_effect = f.after_effect;
            planned.error = match (&f.error, f.errno) {
                (Some(make), _) => Some(make(call)),
                (None, Some(e)) => Some(default_error(call, &self.monitors, e)),
                (None, None) => None,
            };
        }
        planned
    }
}

/// A watcher registered by [`FakeCeph::hold_open`], removed when dropped.
#[derive(Debug)]
pub struct Watch {
    pub(super) state: Weak<Mutex<State>>,
    pub(super) pool: String,
    pub(super) image_id: String,
    pub(super) cookie: u64,
}

impl Watch {
    pub fn cookie(&self) -> u64 {
        self.cookie
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let Some(state) = self.state.upgrade() else {
            return;
        };
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(img) = s
            .pools
            .get_mut(&self.pool)
            .and_then(|p| p.by_id_mut(&self.image_id))
        {
            img.watchers.retain(|w| w.cookie != self.cookie);
        }
    }
}
