//! Leader election on a coordination.k8s.io Lease, so that only one replica provisions.
//!
//! The rules are client-go's: wall clocks of different machines are never compared. A standby
//! measures the holder's lease from the moment *it* last saw the record change, on its own
//! monotonic clock; the leader stops acting when its renew deadline (shorter than the lease
//! duration) passes without a successful renewal, measured from before that renewal was sent.
//! So the leader stops before any standby can consider the lease expired, whatever the clocks
//! read. Losing the lease ends the process at once: work already running (librbd calls on
//! blocking threads) cannot be cancelled any other way.
//!
//! The decisions are pure (`Timing`, `Observer`, `judge`); `Elector` is the few API calls
//! around them and `Watchdog` the thread that ends the process.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

use domain::lease::lease_name;

use crate::error::{Error, Result, is_status};

/// How long a lease lasts, how long the leader may try to renew it, and how often replicas try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A standby takes over after seeing the record unchanged this long.
    pub lease_duration: Duration,
    /// The leader stops acting when no renewal succeeded for this long.
    pub renew_deadline: Duration,
    /// Pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl Default for Timing {
    /// client-go's (and the kubernetes-csi sidecars') defaults.
    fn default() -> Timing {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    #[error(
        "--leader-election-renew-deadline ({renew:?}) must be shorter than --leader-election-lease-duration ({lease:?}): the leader must stop acting before a standby may take over"
    )]
    RenewNotBeforeExpiry { renew: Duration, lease: Duration },
    #[error(
        "--leader-election-retry-period ({retry:?}) must be shorter than --leader-election-renew-deadline ({renew:?}), or a single failed renewal loses the lease"
    )]
    RetryNotBeforeDeadline { retry: Duration, renew: Duration },
    #[error(
        "--leader-election-lease-duration ({0:?}) must be at least 1s: the Lease records it in whole seconds"
    )]
    LeaseTooShort(Duration),
    #[error("--leader-election-retry-period must be greater than zero")]
    NoRetryPeriod,
}

impl Timing {
    /// client-go's constraints: retry period < renew deadline < lease duration.
    pub fn validate(&self) -> std::result::Result<(), TimingError> {
        if self.retry_period.is_zero() {
            return Err(TimingError::NoRetryPeriod);
        }
        if self.lease_duration < Duration::from_secs(1) {
            return Err(TimingError::LeaseTooShort(self.lease_duration));
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(TimingError::RenewNotBeforeExpiry {
                renew: self.renew_deadline,
                lease: self.lease_duration,
            });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(TimingError::RetryNotBeforeDeadline {
                retry: self.retry_period,
                renew: self.renew_deadline,
            });
        }
        Ok(())
    }

    /// `leaseDurationSeconds` as written to the Lease: rounded up, so that nobody waits less.
    fn lease_seconds(&self) -> i32 {
        let d = self.lease_duration;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        secs.min(i32::MAX as u64) as i32
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid duration {0:?}: use a number with a unit (ns, us, ms, s, m, h), as in 15s, 500ms, 2m or 1m30s"
)]
pub struct DurationError(String);

/// A Go duration, or, for the flags that took whole seconds before durations were the one
/// spelling, a bare number of seconds (`300` = `5m`), so existing arguments keep working.
pub fn parse_duration_or_seconds(text: &str) -> std::result::Result<Duration, DurationError> {
    match text.trim().parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => parse_duration(text),
    }
}

/// Parses a Go-style duration ("15s", "500ms", "2m", "1m30s", "1.5s", "0").
pub fn parse_duration(text: &str) -> std::result::Result<Duration, DurationError> {
    let bad = || DurationError(text.to_string());
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// 64 bits from the kernel's random source; should /dev/urandom be unreadable, from the
/// standard library's hasher keys, which it also draws from the kernel once per process.
pub fn random_u64() -> u64 {
    use std::io::Read as _;
    let mut b = [0u8; 8];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => {
            use std::hash::BuildHasher as _;
            std::collections::hash_map::RandomState::new().hash_one(std::process::id())
        }
    }
}

/// What a replica read of the Lease: any write changes the resourceVersion, even one that
/// repeats the same renewTime (a leader whose clock stands still still renews).
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub resource_version: Option<String>,
    pub spec: Option<LeaseSpec>,
}

impl Record {
    pub fn of(lease: &Lease) -> Record {
        Record {
            resource_version: lease.metadata.resource_version.clone(),
            spec: lease.spec.clone(),
        }
    }

    fn holder(&self) -> Option<&str> {
        self.spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            .filter(|h| !h.is_empty())
    }
}

/// Remembers when this replica last saw the Lease change, on its own monotonic clock.
#[derive(Debug, Default)]
pub struct Observer {
    last: Option<(Record, Instant)>,
}

impl Observer {
    /// Notes the record read at `now`; returns when it was first seen in this form.
    pub fn observe(&mut self, record: &Record, now: Instant) -> Instant {
        match &self.last {
            Some((seen, at)) if seen == record => *at,
            _ => {
                self.last = Some((record.clone(), now));
                now
            }
        }
    }
}

/// Who may hold the lease, as this replica sees it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// No holder (never taken, or released): anyone may take it.
    Free,
    /// Held by this replica.
    Mine,
    /// Held by another replica, valid for `left` more on this replica's clock.
    HeldBy { holder: String, left: Duration },
    /// Held by another replica that has not renewed for a whole lease duration.
    Expired { holder: String },
}

/// The pure decision: `changed_at` is when this replica saw `record` change (`Observer`),
/// `lease` its own lease duration. The longer of the holder's and our own duration applies,
/// so that a replica configured with a longer lease is never cut short.
pub fn judge(
    record: &Record,
    me: &str,
    changed_at: Instant,
    lease: Duration,
    now: Instant,
) -> Verdict {
    let Some(holder) = record.holder() else {
        return Verdict::Free;
    };
    if holder == me {
        return Verdict::Mine;
    }
    let recorded = record
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .filter(|s| *s > 0)
        .map(|s| Duration::from_secs(s as u64))
        .unwrap_or_default();
    let expires = changed_at + recorded.max(lease);
    match expires.checked_duration_since(now) {
        Some(left) if !left.is_zero() => Verdict::HeldBy {
            holder: holder.to_string(),
            left,
        },
        _ => Verdict::Expired {
            holder: holder.to_string(),
        },
    }
}

/// The spec this replica writes to take or renew the lease. The times are informative only
/// (for `kubectl get lease`): no replica compares them with its own clock.
fn spec_for(me: &str, timing: &Timing, now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
    let same_holder = previous.and_then(|p| p.holder_identity.as_deref()) == Some(me);
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(timing.lease_seconds()),
        acquire_time: if same_holder {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if same_holder {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// Why a leader that read `verdict` has lost the lease.
fn lost_to(verdict: &Verdict) -> String {
    match verdict {
        Verdict::HeldBy { holder, .. } | Verdict::Expired { holder } => {
            format!("the Lease is held by {holder}")
        }
        Verdict::Free | Verdict::Mine => "the Lease was deleted or released by someone else".into(),
    }
}

/// Logs why leadership ended and ends the process: nothing this process started may go on.
fn exit_lost(lease: &str, reason: &str) -> ! {
    tracing::error!(
        %lease,
        reason,
        "lost the lease; exiting at once so that no work continues while another replica may lead"
    );
    crate::process::exit_process(1)
}

/// A thread that ends the process when the renew deadline passes. It does not depend on the
/// async runtime, so a starved or blocked runtime cannot keep a deposed leader alive.
struct Watchdog {
    deadline: Mutex<Option<Instant>>,
    changed: Condvar,
}

impl Watchdog {
    fn start(lease: String) -> Arc<Watchdog> {
        let dog = Arc::new(Watchdog {
            deadline: Mutex::new(None),
            changed: Condvar::new(),
        });
        let d = dog.clone();
        std::thread::Builder::new()
            .name("leader-watchdog".into())
            .spawn(move || d.watch(&lease))
            .expect("start the leader-election watchdog thread");
        dog
    }

    fn watch(&self, lease: &str) {
        let mut deadline = self.deadline.lock();
        loop {
            match *deadline {
                None => self.changed.wait(&mut deadline),
                Some(at) => match at.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => {
                        self.changed.wait_for(&mut deadline, left);
                    }
                    _ => exit_lost(
                        lease,
                        "the renew deadline passed without a successful renewal",
                    ),
                },
            }
        }
    }

    fn set(&self, at: Instant) {
        *self.deadline.lock() = Some(at);
        self.changed.notify_all();
    }
}

/// One attempt's result.
enum Attempt {
    /// We hold the lease (taken or renewed).
    Held,
    /// Someone else holds it, or (as leader) it is no longer ours.
    Other(Verdict),
    /// Someone wrote the Lease between our read and our write; the next read tells who.
    Conflict,
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
    timing: Timing,
    observer: Mutex<Observer>,
    watchdog: Mutex<Option<Arc<Watchdog>>>,
}

impl Elector {
    pub fn new(
        client: Client,
        namespace: &str,
        provisioner: &str,
        me: String,
        timing: Timing,
    ) -> Elector {
        Elector {
            api: Api::namespaced(client, namespace),
            name: lease_name(provisioner),
            me,
            timing,
            observer: Mutex::default(),
            watchdog: Mutex::default(),
        }
    }

    fn object(&self) -> String {
        format!("Lease {}", self.name)
    }

    /// One read and, when allowed, one write. As leader (`leading`), anything but our own
    /// record means the lease was lost; as standby, the holder's lease is judged by `judge`.
    async fn attempt(&self, leading: bool) -> Result<Attempt> {
        let lease = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(Error::kube("read", self.object()))?;
        let now = Instant::now();
        let Some(mut lease) = lease else {
            if leading {
                return Ok(Attempt::Other(Verdict::Free));
            }
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(spec_for(&self.me, &self.timing, Timestamp::now(), None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(e) if is_status(&e, 409) => Ok(Attempt::Conflict),
                Err(e) => Err(Error::kube("create", self.object())(e)),
            };
        };
        let record = Record::of(&lease);
        let changed_at = self.observer.lock().observe(&record, now);
        match judge(
            &record,
            &self.me,
            changed_at,
            self.timing.lease_duration,
            now,
        ) {
            Verdict::Mine => {}
            Verdict::Free | Verdict::Expired { .. } if !leading => {}
            other => return Ok(Attempt::Other(other)),
        }
        lease.spec = Some(spec_for(
            &self.me,
            &self.timing,
            Timestamp::now(),
            lease.spec.as_ref(),
        ));
        // replace() sends the resourceVersion we read: a concurrent writer makes it fail.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Held),
            Err(e) if is_status(&e, 409) => Ok(Attempt::Conflict),
            Err(e) => Err(Error::kube("update", self.object())(e)),
        }
    }

    /// Waits until this process holds the lease; returns the renew deadline. From then on the
    /// caller must `keep` the lease: the process ends when the deadline passes unrenewed.
    pub async fn acquire(&self) -> Instant {
        let mut announced = false;
        loop {
            let started = Instant::now();
            let deadline = started + self.timing.renew_deadline;
            match tokio::time::timeout(self.timing.renew_deadline, self.attempt(false)).await {
                Ok(Ok(Attempt::Held)) if Instant::now() < deadline => {
                    self.arm(deadline);
                    tracing::info!(lease = %self.name, identity = %self.me, "became leader");
                    return deadline;
                }
                // Taken, but too slowly to act on: the next attempt renews it.
                Ok(Ok(Attempt::Held)) => {}
                Ok(Ok(Attempt::Other(verdict))) if !announced => {
                    tracing::info!(lease = %self.name, identity = %self.me, ?verdict, "another replica leads; waiting for leadership");
                    announced = true;
                }
                Ok(Ok(Attempt::Other(_) | Attempt::Conflict)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election"),
                Err(_) => {
                    tracing::warn!(lease = %self.name, timeout = ?self.timing.renew_deadline, "leader election: the API server did not answer in time")
                }
            }
            tokio::time::sleep(self.timing.retry_period).await;
        }
    }

    fn arm(&self, deadline: Instant) {
        let mut dog = self.watchdog.lock();
        dog.get_or_insert_with(|| Watchdog::start(self.name.clone()))
            .set(deadline);
    }

    /// Renews the lease every retry period, each renewal bounded by the time left until the
    /// renew deadline. Never returns: losing the lease ends the process.
    pub async fn keep(&self, mut deadline: Instant) -> std::convert::Infallible {
        loop {
            let pause = self
                .timing
                .retry_period
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            let started = Instant::now();
            let Some(left) = deadline
                .checked_duration_since(started)
                .filter(|l| !l.is_zero())
            else {
                exit_lost(
                    &self.name,
                    "the renew deadline passed without a successful renewal",
                );
            };
            match tokio::time::timeout(left, self.attempt(true)).await {
                Ok(Ok(Attempt::Held)) => {
                    deadline = started + self.timing.renew_deadline;
                    self.arm(deadline);
                }
                Ok(Ok(Attempt::Other(verdict))) => exit_lost(&self.name, &lost_to(&verdict)),
                Ok(Ok(Attempt::Conflict)) => {
                    tracing::warn!(lease = %self.name, "the Lease changed while renewing; reading it again")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "renewing the lease"),
                Err(_) => exit_lost(
                    &self.name,
                    "the renewal did not finish before the renew deadline",
                ),
            }
        }
    }

    /// Gives the lease up so that another replica takes over at once. Call only after this
    /// process has stopped acting.
    pub async fn release(&self) {
        let release = async {
            let mut lease = self.api.get_opt(&self.name).await.ok()??;
            let spec = lease.spec.as_mut()?;
            if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
                return None;
            }
            spec.holder_identity = None;
            spec.renew_time = None;
            spec.lease_duration_seconds = Some(1);
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .ok()
        };
        match tokio::time::timeout(self.timing.renew_deadline, release).await {
            Ok(Some(_)) => tracing::info!(lease = %self.name, "released the lease"),
            _ => tracing::warn!(
                lease = %self.name,
                "could not release the lease; another replica takes over when it expires"
            ),
        }
    }
}

#[cfg(test)]
mod tests;
