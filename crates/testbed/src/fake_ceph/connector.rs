//! The fake [`Connector`]: credentials registered for a fake cluster reach it.

use super::*;

// ---- connections ------------------------------------------------------------------------------

/// A [`Connector`] over fake clusters: credentials whose monitors, user and key were
/// registered with [`FakeConnector::serve`] reach that cluster; unknown monitors time out
/// and a wrong user or key is refused (EACCES), as `rados_connect` answers.
pub struct FakeConnector {
    pub(super) timeouts: Timeouts,
    pub(super) inner: Mutex<Connecting>,
}

#[derive(Default)]
pub(super) struct Connecting {
    pub(super) served: Vec<(Vec<String>, String, ceph::CephKey, FakeCeph)>,
    /// Cached clients: credentials, cluster, used since the last `close_idle`.
    pub(super) cached: Vec<(Credentials, FakeCeph, bool)>,
    /// Errnos the next connects fail with, in order.
    pub(super) failures: std::collections::VecDeque<i32>,
    /// Whether every connect fails with this errno.
    pub(super) down: Option<i32>,
    pub(super) connects: usize,
}

impl fmt::Debug for FakeConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeConnector").finish_non_exhaustive()
    }
}

impl Default for FakeConnector {
    fn default() -> Self {
        FakeConnector::new()
    }
}

impl FakeConnector {
    pub fn new() -> FakeConnector {
        FakeConnector {
            timeouts: Timeouts::default(),
            inner: Mutex::new(Connecting::default()),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Connecting> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Credentials for `cluster` as `user` with `key` (its monitors as
    /// [`RbdCluster::monitors`] says, split at commas) reach it.
    pub fn serve(&self, cluster: &FakeCeph, user: &str, key: &str) -> Credentials {
        let monitors: Vec<String> = cluster.monitors.split(',').map(str::to_string).collect();
        let key = ceph::CephKey::new(key);
        let id = user.strip_prefix("client.").unwrap_or(user);
        self.lock().served.push((
            monitors.clone(),
            id.to_string(),
            key.clone(),
            cluster.clone(),
        ));
        Credentials {
            monitors,
            user: user.to_string(),
            key,
        }
    }

    /// The next `n` connects fail with `errno`.
    pub fn fail_connects(&self, n: usize, errno: i32) {
        self.lock().failures.extend(std::iter::repeat_n(errno, n));
    }

    /// Every connect fails with `errno` (the monitors down: ETIMEDOUT) until called with
    /// `None`.
    pub fn set_down(&self, errno: Option<i32>) {
        self.lock().down = errno;
    }

    /// How many connections were made (not served from the cache).
    pub fn connects(&self) -> usize {
        self.lock().connects
    }

    pub(super) fn connect(&self, c: &Credentials) -> Result<FakeCeph, CephError> {
        let mut inner = self.lock();
        let mon_host = c.monitors.join(",");
        let user = c
            .user
            .strip_prefix("client.")
            .unwrap_or(&c.user)
            .to_string();
        let fail = |errno| Err(CephError::connect_failed(&mon_host, &user, Errno(errno), 0));
        if let Some(e) = inner.failures.pop_front().or(inner.down) {
            return fail(e);
        }
        let at_monitors: Vec<_> = inner
            .served
            .iter()
            .filter(|(m, ..)| *m == c.monitors)
            .collect();
        if at_monitors.is_empty() {
            return fail(libc::ETIMEDOUT);
        }
        let Some((.., cluster)) = at_monitors
            .iter()
            .find(|(_, u, k, _)| *u == user && *k == c.key)
        else {
            return fail(libc::EACCES);
        };
        let cluster = cluster.clone();
        inner.connects += 1;
        Ok(cluster)
    }
}

#[async_trait]
impl Connector for FakeConnector {
    async fn get(&self, credentials: &Credentials) -> Result<Arc<dyn RbdCluster>, CephError> {
        tokio::task::yield_now().await;
        if let Some(entry) = self
            .lock()
            .cached
            .iter_mut()
            .find(|(c, ..)| c == credentials)
        {
            entry.2 = true;
            return Ok(entry.1.cluster());
        }
        let cluster = self.connect(credentials)?;
        self.lock()
            .cached
            .push((credentials.clone(), cluster.clone(), true));
        Ok(cluster.cluster())
    }

    async fn borrow(&self, credentials: &Credentials) -> Result<Arc<dyn RbdCluster>, CephError> {
        tokio::task::yield_now().await;
        if let Some((_, cluster, _)) = self.lock().cached.iter().find(|(c, ..)| c == credentials) {
            return Ok(cluster.cluster());
        }
        Ok(self.connect(credentials)?.cluster())
    }

    fn forget(&self, credentials: &Credentials) -> bool {
        let mut inner = self.lock();
        let before = inner.cached.len();
        inner.cached.retain(|(c, ..)| c != credentials);
        inner.cached.len() != before
    }

    /// Closes the clients not used (by `get`) since the previous call: the interval between
    /// two calls stands for the idle time.
    fn close_idle(&self) -> usize {
        let mut inner = self.lock();
        let before = inner.cached.len();
        inner.cached.retain(|(.., used)| *used);
        for entry in &mut inner.cached {
            entry.2 = false;
        }
        before - inner.cached.len()
    }

    fn len(&self) -> usize {
        self.lock().cached.len()
    }

    fn timeouts(&self) -> Timeouts {
        self.timeouts
    }
}
