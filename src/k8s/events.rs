//! Events about our objects, written so that one tenant's failing claims cannot flood the
//! event stream or crowd out other namespaces' events.
//!
//! Two mechanisms, as in client-go's recorders (`tools/record`, `tools/events`), without a
//! background task:
//! - **Series.** A repeat of an event (same object, type, reason, action and note) less than
//!   [`SERIES_WINDOW`] after the last one updates the Event object written first: `series` on
//!   events.k8s.io/v1, `count` and `lastTimestamp` on core/v1. One object per series, however
//!   often a claim fails.
//! - **A budget per namespace.** Every write, a new event or a repeat, spends a token of the
//!   regarded object's namespace; events about cluster-scoped objects (PVs) have a budget of
//!   their own. What a spent budget drops is counted in `rbd_provisioner_events_dropped_total`.
//!
//! Both keep only small records, bounded in age and number.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use prometheus_client::metrics::counter::Counter;
use serde_json::json;

use crate::error::is_status;
use crate::ratelimit::Bucket;

/// How long after its last occurrence a series still takes repeats; a later occurrence
/// starts a new Event object. Six minutes, as kube-runtime's recorder and client-go's
/// `tools/events`: longer than the longest retry delay (`--retry-interval-max`, 5 min by
/// default), so a claim that fails for hours keeps one object.
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

/// Series remembered at most; past this the one seen longest ago is forgotten (its next
/// occurrence makes a new object). client-go's correlator keeps as many (`maxLruCacheEntries`).
/// A record takes about 350 bytes: 1.5 MiB at most.
const MAX_SERIES: usize = 4096;

/// Events a namespace may write at once. client-go's spam filter lets a source write 25
/// events about one object before it throttles; here that is a namespace's allowance, enough
/// for a dozen claims made together (two events each) to be reported in full.
const NAMESPACE_BURST: u32 = 25;

/// Then one write a second per namespace. client-go refills its per-object bucket once every
/// 5 minutes, which is this rate spread over 300 always-failing objects: a namespace full of
/// failing claims costs the API server at most one write a second whatever their number,
/// while an outage that fails every claim of a namespace at once still shows each claim its
/// first failure within seconds (first failures go first, see [`Priority`]).
const NAMESPACE_REFILL_PER_SEC: f64 = 1.0;

/// Tokens that only news may spend: half the burst.
const ROUTINE_KEEPS: f64 = NAMESPACE_BURST as f64 / 2.0;

/// Namespace budgets remembered at most. A budget that has refilled is the same as a new one
/// and is dropped anyway; this bounds the rest.
const MAX_NAMESPACES: usize = 4096;

/// How often records that may go are looked for, besides whenever a map is full.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The budget of events about cluster-scoped objects. Namespace names are DNS labels, so no
/// namespace can share it (not even "default", where those events are written).
const CLUSTER_SCOPED: &str = "(cluster-scoped)";

/// What a write brings, for a namespace whose budget runs low.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Priority {
    /// The first occurrence of a Warning: what someone needs to fix a claim or a volume. It
    /// may spend the whole budget.
    News,
    /// Progress (Normal events) and repeats. A repeat not written is still counted, and the
    /// next write of its series carries the count. These stop at [`ROUTINE_KEEPS`] tokens.
    Routine,
}

/// Identifies a series: one object, one kind of event, one note.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    /// The object's uid; kind/namespace/name when the reference has none.
    object: String,
    warning: bool,
    reason: String,
    action: String,
    /// A keyed hash of the note: notes run to 1 kB, and only equality matters (two notes of
    /// one object and reason with the same 64-bit hash would share a count, nothing worse).
    note: u64,
}

impl SeriesKey {
    fn new(
        about: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: u64,
    ) -> SeriesKey {
        let object = match &about.uid {
            Some(uid) if !uid.is_empty() => uid.clone(),
            _ => format!(
                "{}/{}/{}",
                about.kind.as_deref().unwrap_or_default(),
                about.namespace.as_deref().unwrap_or_default(),
                about.name.as_deref().unwrap_or_default()
            ),
        };
        SeriesKey {
            object,
            warning,
            reason: reason.into(),
            action: action.into(),
            note,
        }
    }
}

/// One series: the Event object that shows it and how often it happened.
#[derive(Debug)]
struct Series {
    name: String,
    /// Occurrences seen, written or not.
    count: u32,
    last_seen: Instant,
}

/// What an occurrence is to its series.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    First,
    /// The n-th occurrence of the series shown by the Event object `name`.
    Repeat {
        name: String,
        count: u32,
    },
}

/// What a [`Bounded`] map needs of its entries.
trait Expiring {
    /// The entry has ended at `now`: forgetting it changes nothing.
    fn ended(&self, now: Instant) -> bool;
    /// Orders entries from the least worth keeping at `now`.
    fn keep_order(&self, other: &Self, now: Instant) -> std::cmp::Ordering;
}

/// A map of at most `cap` entries, swept every [`SWEEP_EVERY`] of those that ended: the
/// memory of events is bounded whatever the cluster does.
#[derive(Debug)]
struct Bounded<K, V> {
    map: HashMap<K, V>,
    cap: usize,
    swept: Instant,
}

impl<K: std::hash::Hash + Eq + Clone, V: Expiring> Bounded<K, V> {
    fn new(cap: usize, now: Instant) -> Bounded<K, V> {
        Bounded {
            map: HashMap::new(),
            cap,
            swept: now,
        }
    }

    /// Puts `value` in at `key`: first the ended entries go (when a sweep is due or the map
    /// is full), then, were it still full, the one least worth keeping.
    fn insert(&mut self, key: K, value: V, now: Instant) {
        let cap = self.cap;
        let full = |m: &HashMap<K, V>| m.len() >= cap && !m.contains_key(&key);
        if now.saturating_duration_since(self.swept) >= SWEEP_EVERY || full(&self.map) {
            self.sweep(now);
        }
        if full(&self.map)
            && let Some(k) = self
                .map
                .iter()
                .min_by(|a, b| a.1.keep_order(b.1, now))
                .map(|(k, _)| k.clone())
        {
            self.map.remove(&k);
        }
        self.map.insert(key, value);
    }

    fn sweep(&mut self, now: Instant) {
        self.map.retain(|_, v| !v.ended(now));
        self.swept = now;
    }
}

/// A series ends [`SERIES_WINDOW`] after its last occurrence; the oldest goes first.
impl Expiring for Series {
    fn ended(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_seen) >= SERIES_WINDOW
    }
    fn keep_order(&self, other: &Series, _: Instant) -> std::cmp::Ordering {
        self.last_seen.cmp(&other.last_seen)
    }
}

/// A budget that has refilled is the same as a new one; the fullest goes first.
impl Expiring for Bucket {
    fn ended(&self, now: Instant) -> bool {
        self.is_full(now)
    }
    fn keep_order(&self, other: &Bucket, now: Instant) -> std::cmp::Ordering {
        other.available(now).total_cmp(&self.available(now))
    }
}

/// The series seen in the last [`SERIES_WINDOW`], at most [`MAX_SERIES`].
#[derive(Debug)]
struct SeriesCache(Bounded<SeriesKey, Series>);

impl SeriesCache {
    fn new(now: Instant) -> SeriesCache {
        SeriesCache(Bounded::new(MAX_SERIES, now))
    }

    /// Counts an occurrence at `now`.
    fn observe(&mut self, key: &SeriesKey, now: Instant) -> Seen {
        match self.0.map.get_mut(key) {
            Some(s) if now.saturating_duration_since(s.last_seen) < SERIES_WINDOW => {
                s.count = s.count.saturating_add(1);
                s.last_seen = now;
                Seen::Repeat {
                    name: s.name.clone(),
                    count: s.count,
                }
            }
            _ => Seen::First,
        }
    }

    /// Starts (or restarts) a series shown by the Event object `name`.
    fn start(&mut self, key: SeriesKey, name: String, now: Instant) {
        let series = Series {
            name,
            count: 1,
            last_seen: now,
        };
        self.0.insert(key, series, now);
    }

    fn forget(&mut self, key: &SeriesKey) {
        self.0.map.remove(key);
    }
}

/// A token bucket per namespace.
#[derive(Debug)]
struct Budgets(Bounded<String, Bucket>);

impl Budgets {
    fn new(now: Instant) -> Budgets {
        Budgets(Bounded::new(MAX_NAMESPACES, now))
    }

    /// Spends a token of `namespace` at `now`, if `priority` may.
    fn admit(&mut self, namespace: &str, priority: Priority, now: Instant) -> bool {
        let keep = match priority {
            Priority::News => 0.0,
            Priority::Routine => ROUTINE_KEEPS,
        };
        if let Some(b) = self.0.map.get_mut(namespace) {
            return b.take_keeping(now, keep);
        }
        let mut b = Bucket::new(NAMESPACE_REFILL_PER_SEC, NAMESPACE_BURST, now);
        let admitted = b.take_keeping(now, keep);
        self.0.insert(namespace.to_string(), b, now);
        admitted
    }
}

/// Whose budget an event about `about` spends.
fn budget_of(about: &ObjectReference) -> &str {
    about.namespace.as_deref().unwrap_or(CLUSTER_SCOPED)
}

struct State {
    series: SeriesCache,
    budgets: Budgets,
}

/// What to write for one occurrence.
enum Write {
    Create { name: String },
    Update { name: String, count: u32 },
}

/// Publishes events about our objects. Failures are logged, never fatal: events are for
/// people, not control flow.
pub struct Events {
    client: Client,
    controller: String,
    instance: String,
    state: Mutex<State>,
    /// Keys the hashes of notes, per process.
    notes: RandomState,
    dropped: Counter,
    /// The clock of budgets and series (a hand-moved one in tests).
    now: Box<dyn Fn() -> Instant + Send + Sync>,
}

impl Events {
    /// `dropped` counts the events a spent namespace budget kept from being written.
    pub fn new(client: Client, dropped: Counter) -> Events {
        let controller = "rbd-provisioner".to_string();
        let now = Instant::now();
        Events {
            client,
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| controller.clone()),
            controller,
            state: Mutex::new(State {
                series: SeriesCache::new(now),
                budgets: Budgets::new(now),
            }),
            notes: RandomState::new(),
            dropped,
            now: Box::new(Instant::now),
        }
    }

    /// A Normal event: progress or success.
    pub async fn normal(&self, about: &ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(about, false, reason, action, note).await
    }

    /// A Warning event: a failure, with its cause and fix.
    pub async fn warning(&self, about: &ObjectReference, reason: &str, action: &str, note: String) {
        self.publish(about, true, reason, action, note).await
    }

    /// A Normal event about a step that happens once per object (provisioning started,
    /// succeeded): written without a series record, which for one-off events would be only
    /// memory (kube-runtime's recorder kept ~30 MiB of them at 16 claims/s). It still spends
    /// its namespace's budget.
    pub async fn once(&self, about: &ObjectReference, reason: &str, action: &str, note: String) {
        if about.namespace.is_none() {
            return self.normal(about, reason, action, note).await;
        }
        if !self.admit(about, Priority::Routine, reason) {
            return;
        }
        let name = event_name(about);
        if let Err(e) = self
            .create(about, false, reason, action, truncated(note), name)
            .await
        {
            tracing::warn!(reason, object = ?about.name, error = %crate::error::kube_cause(&e), "could not publish event");
        }
    }

    async fn publish(
        &self,
        about: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let note = truncated(note);
        let key = SeriesKey::new(about, warning, reason, action, self.notes.hash_one(&note));
        let Some(write) = self.plan(about, &key) else {
            return;
        };
        let written = match write {
            Write::Create { name } => {
                let r = self
                    .create(about, warning, reason, action, note, name)
                    .await;
                if r.is_err() {
                    // Not shown: the next occurrence is a first one again.
                    self.state().series.forget(&key);
                }
                r
            }
            Write::Update { name, count } => match self.update(about, &name, count).await {
                // The object expired (the API server keeps events an hour by default) or was
                // deleted: the series starts again in a new one.
                Err(e) if is_status(&e, 404) => {
                    let name = event_name(about);
                    let now = (self.now)();
                    self.state().series.start(key, name.clone(), now);
                    self.create(about, warning, reason, action, note, name)
                        .await
                }
                r => r,
            },
        };
        if let Err(e) = written {
            tracing::warn!(reason, object = ?about.name, error = %crate::error::kube_cause(&e), "could not publish event");
        }
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Counts the occurrence and decides what to write, if the budget allows a write.
    fn plan(&self, about: &ObjectReference, key: &SeriesKey) -> Option<Write> {
        let now = (self.now)();
        let mut state = self.state();
        let seen = state.series.observe(key, now);
        let priority = match &seen {
            Seen::First if key.warning => Priority::News,
            _ => Priority::Routine,
        };
        if !state.budgets.admit(budget_of(about), priority, now) {
            drop(state);
            self.dropped(about, &key.reason);
            return None;
        }
        Some(match seen {
            Seen::First => {
                let name = event_name(about);
                state.series.start(key.clone(), name.clone(), now);
                Write::Create { name }
            }
            Seen::Repeat { name, count } => Write::Update { name, count },
        })
    }

    /// Spends a token for a write that keeps no series.
    fn admit(&self, about: &ObjectReference, priority: Priority, reason: &str) -> bool {
        let now = (self.now)();
        let admitted = self.state().budgets.admit(budget_of(about), priority, now);
        if !admitted {
            self.dropped(about, reason);
        }
        admitted
    }

    fn dropped(&self, about: &ObjectReference, reason: &str) {
        self.dropped.inc();
        tracing::debug!(
            namespace = budget_of(about),
            object = ?about.name,
            reason,
            "event not written: its namespace's event budget is spent"
        );
    }

    /// Writes a new Event object: events.k8s.io/v1 in the object's namespace, or core/v1 in
    /// "default" for cluster-scoped objects (Kubernetes before 1.22 accepts an events.k8s.io/v1
    /// event about a cluster-scoped object only in kube-system, where `kubectl describe pv`
    /// would not find it).
    async fn create(
        &self,
        about: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
        name: String,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let type_ = Some(if warning { "Warning" } else { "Normal" }.to_string());
        let pp = PostParams::default();
        match &about.namespace {
            Some(ns) => {
                let ev = Event {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some(ns.clone()),
                        ..Default::default()
                    },
                    action: Some(action.into()),
                    reason: Some(reason.into()),
                    note: Some(note),
                    type_,
                    event_time: Some(MicroTime(now)),
                    regarding: Some(about.clone()),
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    ..Default::default()
                };
                Api::<Event>::namespaced(self.client.clone(), ns)
                    .create(&pp, &ev)
                    .await
                    .map(drop)
            }
            None => {
                let ev = CoreEvent {
                    metadata: ObjectMeta {
                        name: Some(name),
                        namespace: Some("default".into()),
                        ..Default::default()
                    },
                    involved_object: about.clone(),
                    reason: Some(reason.into()),
                    message: Some(note),
                    action: Some(action.into()),
                    type_,
                    source: Some(EventSource {
                        component: Some(self.controller.clone()),
                        host: None,
                    }),
                    first_timestamp: Some(Time(now)),
                    last_timestamp: Some(Time(now)),
                    count: Some(1),
                    reporting_component: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    ..Default::default()
                };
                Api::<CoreEvent>::namespaced(self.client.clone(), "default")
                    .create(&pp, &ev)
                    .await
                    .map(drop)
            }
        }
    }

    /// Sets the count of the series the Event object `name` shows.
    async fn update(
        &self,
        about: &ObjectReference,
        name: &str,
        count: u32,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let count = i32::try_from(count).unwrap_or(i32::MAX);
        let pp = PatchParams::default();
        match &about.namespace {
            Some(ns) => {
                let patch = json!({"series": {"count": count, "lastObservedTime": MicroTime(now)}});
                Api::<Event>::namespaced(self.client.clone(), ns)
                    .patch(name, &pp, &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
            None => {
                let patch = json!({"count": count, "lastTimestamp": Time(now)});
                Api::<CoreEvent>::namespaced(self.client.clone(), "default")
                    .patch(name, &pp, &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
        }
    }
}

/// A new Event object's name: the object's, and the time in nanoseconds, as client-go and
/// kube-runtime name theirs.
fn event_name(about: &ObjectReference) -> String {
    format!(
        "{}.{:x}",
        about.name.as_deref().unwrap_or("object"),
        Timestamp::now().as_nanosecond()
    )
}

/// The API server refuses an event note over 1 kB.
fn truncated(mut note: String) -> String {
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    note
}

#[cfg(test)]
mod tests;
