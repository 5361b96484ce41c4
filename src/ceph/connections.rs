//! A cache of connected clients, one per (monitors, user, key).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

use super::{CephError, CephKey, Cluster, Credentials, Timeouts};

type Key = (Vec<String>, String, CephKey);
type Slot = Arc<OnceCell<Arc<Cluster>>>;

/// Connected [`Cluster`]s keyed by (monitors, user, key). Concurrent `get`s for the same
/// credentials share one connect attempt; a failed attempt is not cached (the next `get`
/// tries again). Clients are kept until [`Connections::forget`] or drop.
pub struct Connections {
    timeouts: Timeouts,
    slots: Mutex<HashMap<Key, Slot>>,
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("timeouts", &self.timeouts)
            .field("connected", &self.len())
            .finish()
    }
}

impl Connections {
    pub fn new(timeouts: Timeouts) -> Connections {
        Connections {
            timeouts,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Slot>> {
        // The map stays consistent even if a holder panicked: entries are whole values.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(c: &Credentials) -> Key {
        (c.monitors.clone(), c.user.clone(), c.key.clone())
    }

    /// The client for these credentials, connecting on first use.
    pub async fn get(&self, c: &Credentials) -> Result<Arc<Cluster>, CephError> {
        let key = Connections::key(c);
        let slot = Arc::clone(self.lock().entry(key.clone()).or_default());
        let timeouts = self.timeouts;
        let result = slot
            .get_or_try_init(|| Cluster::connect(c, timeouts))
            .await
            .map(Arc::clone);
        if result.is_err() {
            // Do not keep a slot for credentials that do not work (a wrong key would
            // otherwise stay in memory forever); only remove the very slot we used.
            let mut map = self.lock();
            if map
                .get(&key)
                .is_some_and(|s| Arc::ptr_eq(s, &slot) && !s.initialized())
            {
                map.remove(&key);
            }
        }
        result
    }

    /// Drops the cached client for these credentials (it shuts down once no operation
    /// holds it any more). Returns whether there was one.
    pub fn forget(&self, c: &Credentials) -> bool {
        self.lock().remove(&Connections::key(c)).is_some()
    }

    /// Number of connected clients in the cache.
    pub fn len(&self) -> usize {
        self.lock().values().filter(|s| s.initialized()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
