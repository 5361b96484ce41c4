//! Prometheus metrics in one struct, the health state, and the HTTP endpoint (hyper) that
//! serves `/metrics`, `/healthz` and `/readyz`.
//!
//! Provisioning and deletion are counted under the names and labels of the sig-storage
//! provisioner library (`controller_persistentvolumeclaim_provision_*`,
//! `controller_persistentvolume_delete_*`), so dashboards built for kubernetes-csi's
//! external-provisioner work unchanged. Our own `rbd_provisioner_*` metrics cover the rest.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// provision | delete | resize | purge | orphan_collect
    pub operation: &'static str,
    /// success | error kind
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpKind {
    pub operation: &'static str,
}

/// The sig-storage library's labels for provisioning.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProvisionLabels {
    pub class: String,
    /// The kind of the claim's data source ("" for an empty volume).
    pub source: String,
}

/// The sig-storage library's labels for deletion.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeleteLabels {
    pub class: String,
}

/// Labels for VolumeSnapshot operations, in the style of the provisioning ones.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SnapshotLabels {
    /// The VolumeSnapshotClass ("" for a pre-provisioned content without one).
    pub class: String,
}

/// Prometheus' default buckets, which the sig-storage library uses.
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

mod foreground;
pub use foreground::Foreground;

/// One operation under way, in `rbd_provisioner_operations_in_flight` while it lives.
pub struct InFlight(Gauge, Arc<Foreground>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
        self.1.leave();
    }
}

pub struct Metrics {
    pub operations: Family<OpLabels, Counter>,
    pub duration: Family<OpKind, Histogram>,
    provisions: Outcomes<ProvisionLabels>,
    deletions: Outcomes<DeleteLabels>,
    snapshot_creations: Outcomes<SnapshotLabels>,
    snapshot_deletions: Outcomes<SnapshotLabels>,
    leader: Gauge,
    in_flight: Family<OpKind, Gauge>,
    foreground: Arc<Foreground>,
    purge_backlog: Gauge,
    ceph_clients: Gauge,
    events_dropped: Counter,
    resident_memory: Gauge,
    open_fds: Gauge,
    threads: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
    registry: Registry,
    /// What `/healthz` and `/readyz` report.
    pub health: Health,
}

/// One operation as the sig-storage library counts it: successes, failures, and the latency
/// of successes.
struct Outcomes<L> {
    succeeded: Family<L, Counter>,
    failed: Family<L, Counter>,
    duration: Family<L, Histogram>,
}

impl<L> Outcomes<L>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    /// Registers `name`, `name_failed` and `name_duration_seconds`, with the library's help
    /// texts in that order.
    fn register(registry: &mut Registry, name: &str, help: [&str; 3]) -> Self {
        let o = Outcomes {
            succeeded: Family::default(),
            failed: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(DEFAULT_BUCKETS)),
        };
        let [succeeded, failed, duration] = help;
        registry.register(name, succeeded, o.succeeded.clone());
        registry.register(format!("{name}_failed"), failed, o.failed.clone());
        registry.register(
            format!("{name}_duration_seconds"),
            duration,
            o.duration.clone(),
        );
        o
    }

    fn observe(&self, labels: &L, result: Result<Duration, &'static str>) {
        match result {
            Ok(d) => {
                self.succeeded.get_or_create(labels).inc();
                self.duration.get_or_create(labels).observe(d.as_secs_f64());
            }
            Err(_) => {
                self.failed.get_or_create(labels).inc();
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let operations = Family::<OpLabels, Counter>::default();
        let duration = Family::<OpKind, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let (leader, resident_memory, open_fds, threads): (Gauge, Gauge, Gauge, Gauge) =
            Default::default();
        let cpu_seconds = Counter::<f64, AtomicU64>::default();
        let (ceph_clients, purge_backlog) = (Gauge::default(), Gauge::default());
        let in_flight = Family::<OpKind, Gauge>::default();
        let events_dropped = Counter::default();
        let c = registry.sub_registry_with_prefix("controller");
        let provisions = Outcomes::register(
            c,
            "persistentvolumeclaim_provision",
            [
                "Total number of persistent volumes provisioned succesfully. Broken down by storage class name and source of the claim.",
                "Total number of persistent volume provision failed attempts. Broken down by storage class name and source of the claim.",
                "Latency in seconds to provision persistent volumes. Failed provisioning attempts are ignored. Broken down by storage class name and source of the claim.",
            ],
        );
        let deletions = Outcomes::register(
            c,
            "persistentvolume_delete",
            [
                "Total number of persistent volumes deleted succesfully. Broken down by storage class name.",
                "Total number of persistent volume delete failed attempts. Broken down by storage class name.",
                "Latency in seconds to delete persistent volumes. Failed deletion attempts are ignored. Broken down by storage class name.",
            ],
        );
        let snapshot_creations = Outcomes::register(
            c,
            "volumesnapshot_create",
            [
                "Total number of volume snapshots cut (or pre-provisioned ones checked) successfully. Broken down by snapshot class name.",
                "Total number of volume snapshot create failed attempts. Broken down by snapshot class name.",
                "Latency in seconds to cut volume snapshots. Failed attempts are ignored. Broken down by snapshot class name.",
            ],
        );
        let snapshot_deletions = Outcomes::register(
            c,
            "volumesnapshot_delete",
            [
                "Total number of volume snapshots deleted (or released under Retain) successfully. Broken down by snapshot class name.",
                "Total number of volume snapshot delete failed attempts. Broken down by snapshot class name.",
                "Latency in seconds to delete volume snapshots. Failed attempts are ignored. Broken down by snapshot class name.",
            ],
        );
        {
            let p = registry.sub_registry_with_prefix("process");
            p.register(
                "resident_memory_bytes",
                "Resident memory size in bytes.",
                resident_memory.clone(),
            );
            p.register(
                "open_fds",
                "Number of open file descriptors.",
                open_fds.clone(),
            );
            p.register(
                "cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                cpu_seconds.clone(),
            );
        }
        {
            let r = registry.sub_registry_with_prefix("rbd_provisioner");
            r.register(
                "operations",
                "Volume operations (provision, delete, resize, purge, orphan_collect) by outcome",
                operations.clone(),
            );
            r.register(
                "operation_duration_seconds",
                "Duration of successful volume operations",
                duration.clone(),
            );
            r.register(
                "leader",
                "1 while this replica holds the leader Lease (or leader election is off)",
                leader.clone(),
            );
            r.register(
                "operations_in_flight",
                "Volume operations under way (provision, delete, resize, snapshot_create, snapshot_delete)",
                in_flight.clone(),
            );
            r.register(
                "purge_backlog",
                "Trashed images queued or being purged (retries included)",
                purge_backlog.clone(),
            );
            r.register("threads", "Threads of this process.", threads.clone());
            r.register(
                "ceph_clients",
                "Connected Ceph clients kept for reuse (idle ones are closed)",
                ceph_clients.clone(),
            );
            r.register(
                "events_dropped",
                "Events not written because the namespace of the object they are about had spent its event budget (a repeat is still counted in the next write of its event)",
                events_dropped.clone(),
            );
        }
        Metrics {
            operations,
            duration,
            in_flight,
            foreground: Arc::default(),
            purge_backlog,
            provisions,
            snapshot_creations,
            snapshot_deletions,
            deletions,
            leader,
            ceph_clients,
            events_dropped,
            resident_memory,
            open_fds,
            threads,
            cpu_seconds,
            registry,
            health: Health::default(),
        }
    }
}

impl Metrics {
    pub fn record(&self, operation: &'static str, result: Result<Duration, &'static str>) {
        match result {
            Ok(d) => {
                self.operations
                    .get_or_create(&OpLabels {
                        operation,
                        result: "success",
                    })
                    .inc();
                self.duration
                    .get_or_create(&OpKind { operation })
                    .observe(d.as_secs_f64());
            }
            Err(kind) => {
                self.operations
                    .get_or_create(&OpLabels {
                        operation,
                        result: kind,
                    })
                    .inc();
            }
        }
    }

    /// A provisioning attempt, under our name and the sig-storage library's.
    pub fn provision(&self, class: &str, source: &str, result: Result<Duration, &'static str>) {
        self.record("provision", result);
        let labels = ProvisionLabels {
            class: class.into(),
            source: source.into(),
        };
        self.provisions.observe(&labels, result);
    }

    /// A deletion attempt, under our name and the sig-storage library's.
    pub fn delete(&self, class: &str, result: Result<Duration, &'static str>) {
        self.record("delete", result);
        let labels = DeleteLabels {
            class: class.into(),
        };
        self.deletions.observe(&labels, result);
    }

    /// A snapshot cut or checked (`create`), or deleted (`delete`).
    pub fn snapshot(&self, create: bool, class: &str, result: Result<Duration, &'static str>) {
        let (op, outcomes) = if create {
            ("snapshot_create", &self.snapshot_creations)
        } else {
            ("snapshot_delete", &self.snapshot_deletions)
        };
        self.record(op, result);
        outcomes.observe(
            &SnapshotLabels {
                class: class.into(),
            },
            result,
        );
    }

    /// Counts `operation` as under way until the guard is dropped (on every return path).
    pub fn under_way(&self, operation: &'static str) -> InFlight {
        let g = self.in_flight.get_or_create(&OpKind { operation }).clone();
        g.inc();
        self.foreground.enter();
        InFlight(g, self.foreground.clone())
    }

    /// The operations under way, for background work to give way to.
    pub fn foreground(&self) -> &Foreground {
        &self.foreground
    }

    pub fn set_purge_backlog(&self, n: usize) {
        self.purge_backlog.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_ceph_clients(&self, n: usize) {
        self.ceph_clients.set(n as i64);
    }

    /// The counter of events a namespace's event budget kept from being written.
    pub fn events_dropped(&self) -> Counter {
        self.events_dropped.clone()
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn render(&self) -> String {
        self.sample_process();
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Reads this process' memory, descriptors, threads and CPU time from /proc.
    fn sample_process(&self) {
        let page = 4096i64;
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
            && let Some(rss) = statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<i64>().ok())
        {
            self.resident_memory.set(rss * page);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some((_, rest)) = stat.rsplit_once(')')
        {
            // Fields after the command: state is field 3, utime 14, stime 15, threads 20.
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
            if let Some(n) = num(20) {
                self.threads.set(n as i64);
            }
            if let (Some(u), Some(s)) = (num(14), num(15)) {
                // Clock ticks; 100 per second on Linux.
                let total = (u + s) / 100.0;
                let seen = self.cpu_seconds.get();
                if total > seen {
                    self.cpu_seconds.inc_by(total - seen);
                }
            }
        }
    }
}

/// What the probes report. `/healthz`: the process is doing its job (it is waiting for
/// leadership, or it leads and its controllers run). `/readyz`: it can serve (a standby is
/// ready; a leader once its watches have listed everything).
#[derive(Debug, Default)]
pub struct Health {
    leading: AtomicBool,
    synced: AtomicBool,
    stopped: AtomicBool,
}

impl Health {
    pub fn became_leader(&self) {
        self.leading.store(true, Ordering::Relaxed);
    }

    pub fn watches_synced(&self) {
        self.synced.store(true, Ordering::Relaxed);
    }

    /// The controllers ended (a signal, or a failure): the process is about to exit.
    pub fn controllers_stopped(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub fn healthy(&self) -> bool {
        !self.stopped.load(Ordering::Relaxed)
    }

    pub fn ready(&self) -> bool {
        self.healthy()
            && (!self.leading.load(Ordering::Relaxed) || self.synced.load(Ordering::Relaxed))
    }
}

fn respond(metrics: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match path {
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" | "/livez" if metrics.health.healthy() => {
            (StatusCode::OK, "text/plain", "ok\n".into())
        }
        "/healthz" | "/livez" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "controllers stopped\n".into(),
        ),
        "/readyz" if metrics.health.ready() => (StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "watches not synced yet\n".into(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Serves `/metrics`, `/healthz` (also `/livez`) and `/readyz` over HTTP/1.1.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    loop {
        let (stream, _) = listener.accept().await?;
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let r = respond(&metrics, req.uri().path());
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics connection");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_storage_names_and_labels() {
        let m = Metrics::default();
        m.provision("fast", "", Ok(Duration::from_millis(30)));
        m.provision("fast", "PersistentVolumeClaim", Err("ceph"));
        m.delete("fast", Ok(Duration::from_millis(200)));
        m.delete("fast", Err("in_use"));
        m.snapshot(true, "snaps", Ok(Duration::from_millis(40)));
        m.snapshot(false, "snaps", Err("refused"));
        let text = m.render();
        for line in [
            "controller_persistentvolumeclaim_provision_total{class=\"fast\",source=\"\"} 1",
            "controller_persistentvolumeclaim_provision_failed_total{class=\"fast\",source=\"PersistentVolumeClaim\"} 1",
            "controller_persistentvolumeclaim_provision_duration_seconds_bucket{le=\"0.05\",class=\"fast\",source=\"\"} 1",
            "controller_persistentvolume_delete_total{class=\"fast\"} 1",
            "controller_persistentvolume_delete_failed_total{class=\"fast\"} 1",
            "controller_persistentvolume_delete_duration_seconds_bucket{le=\"0.25\",class=\"fast\"} 1",
            "rbd_provisioner_operations_total{operation=\"provision\",result=\"success\"} 1",
            "controller_volumesnapshot_create_total{class=\"snaps\"} 1",
            "controller_volumesnapshot_create_duration_seconds_bucket{le=\"0.05\",class=\"snaps\"} 1",
            "controller_volumesnapshot_delete_failed_total{class=\"snaps\"} 1",
            "rbd_provisioner_operations_total{operation=\"snapshot_delete\",result=\"refused\"} 1",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        m.events_dropped().inc();
        assert!(
            m.render()
                .contains("rbd_provisioner_events_dropped_total 1"),
            "{text}"
        );
        assert!(text.contains("process_open_fds "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
    }

    #[test]
    fn operations_under_way_and_the_purge_backlog() {
        let m = Metrics::default();
        let line = |op: &str, n: u32| {
            format!("rbd_provisioner_operations_in_flight{{operation=\"{op}\"}} {n}")
        };
        let a = m.under_way("delete");
        let b = m.under_way("delete");
        let c = m.under_way("provision");
        let text = m.render();
        assert!(text.contains(&line("delete", 2)), "{text}");
        assert!(text.contains(&line("provision", 1)), "{text}");
        drop((a, c));
        let text = m.render();
        assert!(text.contains(&line("delete", 1)), "{text}");
        assert!(text.contains(&line("provision", 0)), "{text}");
        drop(b);
        assert!(m.render().contains(&line("delete", 0)));
        m.set_purge_backlog(7);
        assert!(m.render().contains("rbd_provisioner_purge_backlog 7"));
    }

    /// The dashboard's queries against the registry once every operation has been counted
    /// (a labelled family is exported from its first sample); `tests/claims.rs` holds them
    /// against a running provisioner.
    #[test]
    fn the_dashboard_queries_only_exported_metrics() {
        let dash: serde_json::Value =
            serde_json::from_str(&testbed::repo_file("docs/grafana-dashboard.json")).unwrap();
        let m = Metrics::default();
        for r in [Ok(Duration::from_millis(30)), Err("ceph")] {
            m.provision("fast", "", r);
            m.delete("fast", r);
            m.snapshot(true, "snaps", r);
            m.snapshot(false, "snaps", r);
            m.record("resize", r);
        }
        drop(m.under_way("provision"));
        let gaps = testbed::dashboard_gaps(&dash, &m.render());
        assert!(gaps.is_empty(), "{}", gaps.join("\n"));
    }

    #[test]
    fn probes() {
        let h = Health::default();
        assert!(h.healthy() && h.ready(), "a standby is healthy and ready");
        h.became_leader();
        assert!(h.healthy() && !h.ready(), "a leader is ready once synced");
        h.watches_synced();
        assert!(h.ready());
        h.controllers_stopped();
        assert!(!h.healthy() && !h.ready());
    }
}
