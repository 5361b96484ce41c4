//! A cache of connected clients, one per (monitors, user, key).

use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;

use super::{CephError, CephKey, Cluster, Credentials, Errno, Timeouts};

type Key = (Vec<String>, String, CephKey);
type Slot = Arc<Attempts>;

/// The client of one set of credentials, and the last failed attempt to connect it. Everyone
/// already waiting when an attempt fails gets that failure: otherwise the waiters would try
/// one after the other (a tokio `OnceCell` hands a failed initialisation to the next waiter),
/// and with the monitors down the n-th caller would wait n connect timeouts.
#[derive(Default)]
struct Attempts {
    cell: OnceCell<Arc<Cluster>>,
    failed: Mutex<Option<(Instant, ConnectFailure)>>,
}

impl Deref for Attempts {
    type Target = OnceCell<Arc<Cluster>>;
    fn deref(&self) -> &Self::Target {
        &self.cell
    }
}

/// What a failed `rados_connect` reported, to hand to those who waited for it.
#[derive(Clone)]
struct ConnectFailure {
    monitors: String,
    user: String,
    errno: Errno,
    elapsed_ms: u64,
    hint: Option<&'static str>,
}

impl Attempts {
    /// The failure of an attempt that ended after `since`, if any.
    fn failed_since(&self, since: Instant) -> Option<CephError> {
        let f = self.failed.lock();
        f.as_ref().filter(|(at, _)| *at >= since).map(|(_, e)| {
            let e = e.clone();
            CephError::Connect {
                monitors: e.monitors,
                user: e.user,
                errno: e.errno,
                elapsed_ms: e.elapsed_ms,
                hint: e.hint,
            }
        })
    }

    fn record(&self, e: &CephError) {
        if let CephError::Connect {
            monitors,
            user,
            errno,
            elapsed_ms,
            hint,
        } = e
        {
            *self.failed.lock() = Some((
                Instant::now(),
                ConnectFailure {
                    monitors: monitors.clone(),
                    user: user.clone(),
                    errno: *errno,
                    elapsed_ms: *elapsed_ms,
                    hint: *hint,
                },
            ));
        }
    }
}

/// By default a client unused this long is closed (its key leaves memory with it).
pub const IDLE_AFTER: Duration = Duration::from_secs(600);
/// By default a client is replaced after this long, even in use: cephx checks a key and the
/// caps only when a client authenticates (and renews its tickets, hourly by default), so a
/// client kept for ever would go on working with a key rotated away or caps revoked, and
/// then fail all at once at some later ticket renewal.
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// At most this many clients are kept; the least recently used goes first.
pub const MAX_CLIENTS: usize = 16;

struct Entry {
    slot: Slot,
    last_used: Instant,
}

/// Connected [`Cluster`]s keyed by (monitors, user, key). Concurrent `get`s for the same
/// credentials share one connect attempt; a failed attempt is not cached (the next `get`
/// tries again). A client that went bad (rotated key, blocklisted, failing call after call)
/// is replaced on the next `get`, and so is one older than the maximum age; idle clients are
/// closed; the cache is bounded.
pub struct Connections {
    timeouts: Timeouts,
    idle_after: Duration,
    max_age: Duration,
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
        Connections::with_limits(timeouts, IDLE_AFTER, MAX_AGE)
    }

    /// A cache that closes clients unused for `idle_after` and replaces those connected
    /// longer than `max_age` ago (a zero `max_age` keeps them for as long as they work).
    pub fn with_limits(timeouts: Timeouts, idle_after: Duration, max_age: Duration) -> Connections {
        Connections {
            timeouts,
            idle_after,
            max_age: if max_age.is_zero() {
                Duration::MAX
            } else {
                max_age
            },
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Entry>> {
        // The map stays consistent even if a holder panicked: entries are whole values.
        self.slots.lock()
    }

    fn limits(&self) -> Limits {
        Limits {
            idle: self.idle_after,
            max_age: self.max_age,
        }
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
                self.limits(),
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
        let since = Instant::now();
        let result = slot
            .get_or_try_init(|| async {
                // An attempt that failed while we waited is our answer too.
                if let Some(e) = slot.failed_since(since) {
                    return Err(e);
                }
                let r = Cluster::connect(c, timeouts).await;
                if let Err(e) = &r {
                    slot.record(e);
                }
                r
            })
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
            .filter(|cluster| cluster.healthy() && cluster.age() < self.max_age);
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
        prune(&mut map, Instant::now(), self.limits(), MAX_CLIENTS);
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

#[derive(Clone, Copy)]
struct Limits {
    idle: Duration,
    max_age: Duration,
}

/// Drops unhealthy, idle and too old clients, then the least recently used ones beyond
/// `keep`. Slots still connecting are kept: someone is waiting on them. A dropped client
/// shuts down once the operations that hold it end; the next `get` connects afresh.
fn prune(map: &mut HashMap<Key, Entry>, now: Instant, limits: Limits, keep: usize) {
    map.retain(|_, e| match e.slot.get() {
        None => true,
        Some(c) => {
            c.healthy() && now.duration_since(e.last_used) < limits.idle && c.age() < limits.max_age
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fault scenario 2, the monitor outage): callers that wait for the same
    /// credentials while the monitors are unreachable all fail within one connect timeout,
    /// not one after the other.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_share_a_failed_connect() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conns = Arc::new(Connections::new(Timeouts {
            connect: Duration::from_secs(2),
            op: Duration::from_secs(2),
        }));
        let creds = Credentials {
            // Nothing listens there: the connect attempt times out.
            monitors: vec![format!("v1:127.0.0.1:{port}")],
            user: "admin".into(),
            // A throw-away key (`ceph-authtool --gen-print-key`), of no cluster.
            key: CephKey::new("AQB3Og5rOjNhBxAAONHU5MOPrYOS/PrY+Vva2A==".to_string()),
        };
        let started = Instant::now();
        let waiters: Vec<_> = (0..6)
            .map(|_| {
                let (conns, creds) = (conns.clone(), creds.clone());
                tokio::spawn(async move { conns.get(&creds).await.map(|_| ()) })
            })
            .collect();
        for w in waiters {
            let r = w.await.unwrap();
            assert!(matches!(r, Err(CephError::Connect { .. })), "{r:?}");
        }
        let took = started.elapsed();
        // One attempt (2 s, and the grace around it), not six in a row (12 s or more).
        assert!(took < Duration::from_secs(8), "{took:?}");
        // A caller that comes afterwards tries again, and is not served the old failure.
        let again = Instant::now();
        assert!(conns.get(&creds).await.is_err());
        assert!(
            again.elapsed() >= Duration::from_secs(1),
            "{:?}",
            again.elapsed()
        );
    }
}
