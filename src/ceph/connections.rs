//! A cache of connected clients, one per (monitors, user, key).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::{CephError, CephKey, Cluster, Credentials, Timeouts};

type Key = (Vec<String>, String, CephKey);
type Slot = Arc<OnceCell<Arc<Cluster>>>;

/// By default a client unused this long is closed (its key leaves memory with it).
pub const IDLE_AFTER: Duration = Duration::from_secs(600);
/// At most this many clients are kept; the least recently used goes first.
pub const MAX_CLIENTS: usize = 16;

struct Entry {
    slot: Slot,
    last_used: Instant,
}

/// Connected [`Cluster`]s keyed by (monitors, user, key). Concurrent `get`s for the same
/// credentials share one connect attempt; a failed attempt is not cached (the next `get`
/// tries again). A client that went bad (rotated key, blocklisted, failing call after call)
/// is replaced on the next `get`; idle clients are closed; the cache is bounded.
pub struct Connections {
    timeouts: Timeouts,
    idle_after: Duration,
    slots: Mutex<HashMap<Key, Entry>>,
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
        Connections::with_idle(timeouts, IDLE_AFTER)
    }

    /// A cache that closes clients unused for `idle_after`.
    pub fn with_idle(timeouts: Timeouts, idle_after: Duration) -> Connections {
        Connections {
            timeouts,
            idle_after,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        // The map stays consistent even if a holder panicked: entries are whole values.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(c: &Credentials) -> Key {
        (c.monitors.clone(), c.user.clone(), c.key.clone())
    }

    /// The client for these credentials, connecting on first use.
    pub async fn get(&self, c: &Credentials) -> Result<Arc<Cluster>, CephError> {
        let key = Connections::key(c);
        let slot = {
            let mut map = self.lock();
            prune(
                &mut map,
                Instant::now(),
                self.idle_after,
                MAX_CLIENTS.saturating_sub(1),
            );
            let e = map.entry(key.clone()).or_insert_with(|| Entry {
                slot: Slot::default(),
                last_used: Instant::now(),
            });
            e.last_used = Instant::now();
            Arc::clone(&e.slot)
        };
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
                .is_some_and(|e| Arc::ptr_eq(&e.slot, &slot) && !e.slot.initialized())
            {
                map.remove(&key);
            }
        }
        result
    }

    /// A client for background work that must not keep a client alive: the cached one,
    /// without counting as a use, or else a fresh one that is not cached (it closes when the
    /// caller drops it). Housekeeping passes go through here, so an idle client still closes.
    pub async fn borrow(&self, c: &Credentials) -> Result<Arc<Cluster>, CephError> {
        let cached = self
            .lock()
            .get(&Connections::key(c))
            .and_then(|e| e.slot.get().cloned())
            .filter(|cluster| cluster.healthy());
        match cached {
            Some(cluster) => Ok(cluster),
            None => Cluster::connect(c, self.timeouts).await,
        }
    }

    /// Closes clients unused for the idle time and drops unhealthy ones (each shuts down
    /// once no running operation holds it). Called periodically.
    pub fn close_idle(&self) -> usize {
        let mut map = self.lock();
        let before = map.len();
        prune(&mut map, Instant::now(), self.idle_after, MAX_CLIENTS);
        before - map.len()
    }

    /// Drops the cached client for these credentials (it shuts down once no operation
    /// holds it any more). Returns whether there was one.
    pub fn forget(&self, c: &Credentials) -> bool {
        self.lock().remove(&Connections::key(c)).is_some()
    }

    /// Number of connected clients in the cache.
    pub fn len(&self) -> usize {
        self.lock()
            .values()
            .filter(|e| e.slot.initialized())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Drops unhealthy and idle clients, then the least recently used ones beyond `keep`.
/// Slots still connecting are kept: someone is waiting on them.
fn prune(map: &mut HashMap<Key, Entry>, now: Instant, idle: Duration, keep: usize) {
    map.retain(|_, e| match e.slot.get() {
        None => true,
        Some(c) => c.healthy() && now.duration_since(e.last_used) < idle,
    });
    while map.len() > keep {
        let Some(oldest) = map
            .iter()
            .filter(|(_, e)| e.slot.initialized())
            .min_by_key(|(_, e)| e.last_used)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&oldest);
    }
}
