//! A scripted API server for reconciler tests. The client under test talks to a mock
//! service; each request must be the next step of the script (method and path), and gets
//! that step's canned reply. What a reconciler did not ask is as telling as what it asked:
//! [`ApiServer::done`] fails on a missing step or an unscripted request (a write that
//! should not have happened).

use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector;
use serde_json::{Value, json};

use super::{Context, Settings};
use crate::metrics::Metrics;
use ceph::{Connector, Timeouts};
use domain::owner::Instance;
use domain::params::Flavor;

pub mod scene;

pub const PROVISIONER: &str = "ceph.com/rbd";

/// Who the test contexts are, as stamped on images.
pub fn instance() -> Instance {
    Instance {
        provisioner: PROVISIONER.into(),
        cluster: "6f1c3ef4-kube-system".into(),
    }
}

/// What the API server answers to one step.
pub enum Reply {
    /// This object, with this status.
    Object(StatusCode, Value),
    /// The request's own body back, as the API server answers a create.
    Echo(StatusCode),
    /// A `Status` failure with this code and reason, as the API server words errors.
    Failure(StatusCode, &'static str),
    /// No answer at all: the connection failed, as on a timeout.
    Unreachable,
}

pub struct Step {
    method: Method,
    path: String,
    reply: Reply,
}

/// One step of the script: a request expected next, and its reply. A path ending in `*`
/// stands for any path it begins, for names the code under test makes up.
pub fn expect(method: Method, path: impl Into<String>, reply: Reply) -> Step {
    Step {
        method,
        path: path.into(),
        reply,
    }
}

impl Step {
    fn matches(&self, path: &str) -> bool {
        match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => self.path == path,
        }
    }
}

/// A request the client made, with its JSON body (`Null` when it had none).
#[derive(Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub body: Value,
}

#[derive(Default)]
struct Log {
    seen: Vec<Seen>,
    taken: usize,
    problems: Vec<String>,
}

pub struct ApiServer {
    log: Arc<Mutex<Log>>,
    steps: usize,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    /// A client whose requests are answered by the script.
    pub fn start(script: Vec<Step>) -> (Client, ApiServer) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let log: Arc<Mutex<Log>> = Arc::default();
        let steps = script.len();
        let shared = log.clone();
        let task = tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (method, path) = (parts.method, parts.uri.path().to_string());
                let mut log = shared.lock();
                let reply = match script.get(log.taken) {
                    Some(step) if step.method == method && step.matches(&path) => {
                        log.taken += 1;
                        answer(&step.reply, &body)
                    }
                    expected => {
                        let problem = match expected {
                            Some(s) => format!(
                                "step {}: expected {} {}, got {method} {path}",
                                log.taken + 1,
                                s.method,
                                s.path
                            ),
                            None => format!("unscripted {method} {path}"),
                        };
                        log.problems.push(problem);
                        answer(
                            &Reply::Failure(StatusCode::INTERNAL_SERVER_ERROR, "Unscripted"),
                            &body,
                        )
                    }
                };
                log.seen.push(Seen { method, path, body });
                drop(log);
                match reply {
                    Some(r) => respond.send_response(r),
                    None => respond.send_error(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no answer from the API server",
                    )),
                }
            }
        });
        (client, ApiServer { log, steps, task })
    }

    /// The requests seen so far, as `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        let log = self.log.lock();
        log.seen
            .iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect()
    }

    /// Checks that every step was taken and nothing else was asked; the requests seen.
    pub fn done(self) -> Vec<Seen> {
        self.task.abort();
        let seen = self.requests();
        let log = std::mem::take(&mut *self.log.lock());
        assert!(log.problems.is_empty(), "{:?}; seen {seen:?}", log.problems);
        assert_eq!(
            log.taken, self.steps,
            "only {} of {} steps taken; seen {seen:?}",
            log.taken, self.steps
        );
        log.seen
    }
}

fn answer(reply: &Reply, body: &Value) -> Option<Response<Body>> {
    let (status, value) = match reply {
        Reply::Object(status, v) => (*status, v.clone()),
        Reply::Echo(status) => (*status, body.clone()),
        Reply::Failure(status, reason) => (
            *status,
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": format!("{reason} (scripted)"),
                "reason": reason,
                "code": status.as_u16(),
            }),
        ),
        Reply::Unreachable => return None,
    };
    let bytes = serde_json::to_vec(&value).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(bytes))
        .ok()
}

/// The JSON of an object, as the API server sends it.
pub fn object<T: serde::Serialize>(o: &T) -> Reply {
    Reply::Object(
        StatusCode::OK,
        serde_json::to_value(o).unwrap_or(Value::Null),
    )
}

pub fn not_found() -> Reply {
    Reply::Failure(StatusCode::NOT_FOUND, "NotFound")
}

pub fn settings() -> Settings {
    Settings {
        provisioner: PROVISIONER.into(),
        service_account: "kube-system:rbd-provisioner".into(),
        default_flavor: Flavor::Rbd,
        workers: 1,
        ceph_timeouts: Timeouts::default(),
        maintenance_interval: Duration::ZERO,
        orphan_grace: Duration::from_secs(3600),
        ceph_idle: Duration::from_secs(600),
        ceph_max_age: Duration::from_secs(300),
        early_provisioning: false,
        replica: "test-replica_0000000000000001".into(),
        retry_start: Duration::from_secs(1),
        retry_max: Duration::from_secs(300),
        // The other monitor sources are read only by the tests that script them.
        ceph_csi_config: None,
        client_profiles: false,
        streaming_lists: false,
    }
}

impl Context {
    /// A context over `client` whose caches of classes, volumes and claims are empty: every
    /// class is asked of the API server; the volumes count as listed, the claims and classes
    /// not; Secrets are read every time.
    pub fn for_tests(client: Client) -> Context {
        let (classes, _) = reflector::store();
        let (volumes, _) = reflector::store();
        let (claims, _) = reflector::store();
        let mut ctx = Context::new(
            client,
            settings(),
            Arc::new(Metrics::default()),
            classes,
            volumes,
            claims,
            instance(),
        );
        // Each scripted read is answered once: nothing read is reused.
        ctx.kube.secrets = crate::k8s::SecretMemo::new(Duration::ZERO);
        // Nothing waits for the volumes: a test puts the PVs it needs in their cache.
        ctx.caches.listed.volumes.mark();
        ctx
    }

    /// [`Context::for_tests`] whose Ceph clusters come from `connector` (a
    /// `testbed::fake_ceph::FakeConnector`) instead of librbd.
    pub fn for_tests_with_ceph(client: Client, connector: Arc<dyn Connector>) -> Context {
        let mut ctx = Context::for_tests(client);
        ctx.ceph.connections = connector;
        ctx
    }
}
