//! Leader election when clocks disagree and when the leader is cut off from the API server:
//! at no moment do two replicas act. Each replica's log gives its leadership intervals
//! ("became leader" until "stopped acting" or "lost the lease") and its acts ("Successfully
//! provisioned", one line per claim); the intervals of two replicas must never overlap, every
//! act must fall inside its replica's interval, and each claim is provisioned exactly once.
//!
//! Clocks are shifted with Debian's libfaketime (preloaded into one replica). It shifts the
//! wall clock *and* the monotonic clock that tokio reads by a constant, so elapsed times are
//! unchanged: a replica that only measures elapsed time on its own clock is unaffected, one
//! that compares another replica's `renewTime` with its own wall clock is 30 s off.

use testbed as common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const T: Duration = Duration::from_secs(60);
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// Environment that runs a replica with its clocks shifted by `offset` ("+30s", "-30s").
fn shifted(offset: &str) -> Vec<(&'static str, String)> {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: apt-get install faketime (hack/install-deps.sh does)"
    );
    vec![
        ("LD_PRELOAD", LIBFAKETIME.to_string()),
        ("FAKETIME", offset.to_string()),
    ]
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A namespace and Secrets for provisioner `name`, whose first replica is `first`.
async fn scenario(prefix: &str, name: &str, first: Provisioner) -> Scenario {
    Scenario::around(prefix, name, first).await
}

async fn wait_log(p: &Provisioner, what: &str, needles: &[&str], timeout: Duration) {
    wait_for(what, timeout, || async {
        let logs = p.logs();
        needles.iter().any(|n| logs.contains(n)).then_some(())
    })
    .await
}

/// Creates claims c-000, c-001, ... every `every` until stopped.
struct ClaimStream {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<PersistentVolumeClaim>>,
}

impl ClaimStream {
    fn start(admin: &Client, ns: &str, class: &str, every: Duration) -> ClaimStream {
        let stop = Arc::new(AtomicBool::new(false));
        let (admin, ns, class, s) = (
            admin.clone(),
            ns.to_string(),
            class.to_string(),
            stop.clone(),
        );
        let task = tokio::spawn(async move {
            let mut made = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let name = format!("c-{:03}", made.len());
                made.push(
                    claim(
                        &admin,
                        &ns,
                        &name,
                        &class,
                        "8Mi",
                        &["ReadWriteOnce"],
                        json!({}),
                    )
                    .await,
                );
                tokio::time::sleep(every).await;
            }
            made
        });
        ClaimStream { stop, task }
    }

    async fn finish(self) -> Vec<PersistentVolumeClaim> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("the claim stream")
    }
}

/// What one replica's log says it did, with timestamps moved back onto the real clock.
#[derive(Debug)]
struct Replica {
    who: &'static str,
    /// [became leader, stopped or lost]; no end: still leading when the log ends.
    leading: Vec<(Timestamp, Option<Timestamp>)>,
    /// (when, namespace/claim)
    acts: Vec<(Timestamp, String)>,
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `shift`: how far this replica's clock was ahead of the real one.
fn replica(who: &'static str, log: &str, shift: SignedDuration) -> Replica {
    let mut r = Replica {
        who,
        leading: vec![],
        acts: vec![],
    };
    for line in log.lines().map(strip_ansi) {
        let Some(at) = line
            .split_whitespace()
            .next()
            .and_then(|t| t.parse::<Timestamp>().ok())
        else {
            continue;
        };
        let at = at - shift;
        if line.contains("became leader") {
            r.leading.push((at, None));
        } else if [
            "stopped acting",
            "lost the lease",
            "released the lease",
            "could not renew the lease",
        ]
        .iter()
        .any(|m| line.contains(m))
        {
            if let Some(last) = r.leading.last_mut().filter(|l| l.1.is_none()) {
                last.1 = Some(at);
            }
        } else if line.contains("Successfully provisioned") {
            let claim = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("claim="))
                .unwrap_or("?")
                .to_string();
            r.acts.push((at, claim));
        }
    }
    r
}

/// The property under test: leadership intervals never overlap, acts happen only while
/// leading, and every claim was provisioned exactly (or at most) once.
fn assert_never_both(
    replicas: &[&Replica],
    ns: &str,
    claims: &[PersistentVolumeClaim],
    exactly_once: bool,
) {
    let end = |e: Option<Timestamp>| e.unwrap_or(Timestamp::MAX);
    for r in replicas {
        for (at, claim) in &r.acts {
            assert!(
                r.leading.iter().any(|(s, e)| s <= at && *at <= end(*e)),
                "replica {} provisioned {claim} at {at} while not leading ({:?})",
                r.who,
                r.leading
            );
        }
    }
    for (i, a) in replicas.iter().enumerate() {
        for b in &replicas[i + 1..] {
            for (sa, ea) in &a.leading {
                for (sb, eb) in &b.leading {
                    assert!(
                        end(*ea) < *sb || end(*eb) < *sa,
                        "replicas {} ({sa} .. {ea:?}) and {} ({sb} .. {eb:?}) led at the same time",
                        a.who,
                        b.who
                    );
                }
            }
        }
    }
    for c in claims {
        let key = format!("{ns}/{}", c.metadata.name.as_deref().unwrap());
        let by: Vec<&str> = replicas
            .iter()
            .flat_map(|r| r.acts.iter().filter(|(_, k)| *k == key).map(|_| r.who))
            .collect();
        if exactly_once {
            assert_eq!(by.len(), 1, "{key} provisioned by {by:?}");
        } else {
            assert!(by.len() <= 1, "{key} provisioned by {by:?}");
        }
    }
}

async fn wait_all_bound(admin: &Client, ns: &str, claims: &[PersistentVolumeClaim]) {
    for c in claims {
        wait_bound(admin, ns, c.metadata.name.as_deref().unwrap(), T).await;
    }
}

/// Two replicas, one with a shifted clock, while claims keep coming: the standby waits as long
/// as the leader renews, takes over at once when the leader stops gracefully, and they never
/// act together.
async fn two_replicas_with_skew(prefix: &str, a_shift: i64, b_shift: i64) {
    let name = format!("{}.test/rbd", unique(prefix));
    let bed = Bed::load();
    let env_of = |shift: i64| {
        if shift == 0 {
            vec![]
        } else {
            shifted(&format!("{shift:+}s"))
        }
    };
    let a_env = env_of(a_shift);
    let a = Provisioner::start_with(&bed, &name, &env_refs(&a_env), &[], None).await;
    let s = scenario(prefix, &name, a).await;
    wait_log(&s.prov, "replica A leads", &["became leader"], T).await;
    let b_env = env_of(b_shift);
    let mut b = Provisioner::start_with(&bed, &name, &env_refs(&b_env), &[], None).await;
    wait_log(
        &b,
        "replica B waits (or leads)",
        &["waiting for leadership", "became leader"],
        T,
    )
    .await;
    let class = s.class("c", &[], json!({})).await;
    let stream = ClaimStream::start(&s.admin, &s.ns, &class, Duration::from_millis(400));
    // Longer than the lease duration and far longer than the renewal period: a standby that
    // judged expiry by the leader's renewTime against its own clock would take over here.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(b.is_running(), "replica B ended early:\n{}", b.logs());

    // A graceful stop hands over at once (the standby retries every 2 s).
    let Scenario {
        stage: Stage { bed, admin, ns, .. },
        prov: a,
    } = s;
    let a_log = a.log.clone();
    let stopped = Instant::now();
    drop(a);
    wait_log(
        &b,
        "replica B leads after A stopped",
        &["became leader"],
        Duration::from_secs(10),
    )
    .await;
    println!("hand-over took {:?}", stopped.elapsed());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let claims = stream.finish().await;
    wait_all_bound(&admin, &ns, &claims).await;
    let b_log = b.log.clone();
    drop(b);

    let ra = replica(
        "A",
        &std::fs::read_to_string(&a_log).unwrap(),
        SignedDuration::from_secs(a_shift),
    );
    let rb = replica(
        "B",
        &std::fs::read_to_string(&b_log).unwrap(),
        SignedDuration::from_secs(b_shift),
    );
    println!("A: {:?}\nB: {:?}", ra.leading, rb.leading);
    assert!(
        !ra.acts.is_empty() && !rb.acts.is_empty(),
        "both acted in turn"
    );
    assert_never_both(&[&ra, &rb], &ns, &claims, true);
    let refs: Vec<&PersistentVolumeClaim> = claims.iter().collect();
    cleanup(&bed, &admin, &ns, &refs, &["kube"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_whose_clock_runs_ahead_waits_for_the_lease() {
    two_replicas_with_skew("ahead", 0, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_clock_runs_behind_keeps_the_lease() {
    two_replicas_with_skew("behind", -30, 0).await;
}

/// A TCP forwarder to the API server that the test can cut: after `cut`, connections stay
/// open but nothing gets through, so requests hang instead of failing.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let c = cut.clone();
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::join!(pump(dr, uw, c.clone()), pump(ur, dw, c));
                });
            }
        });
        Proxy { addr, cut }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// The ServiceAccount kubeconfig, pointed at `proxy` instead of the API server; and the
/// API server's address.
async fn kubeconfig_through(bed: &Bed, proxy: Option<&Proxy>) -> (std::path::PathBuf, SocketAddr) {
    let path = service_account_kubeconfig(bed).await;
    let text = std::fs::read_to_string(&path).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .expect("server in the kubeconfig")
        .to_string();
    let upstream: SocketAddr = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|e| panic!("API server address {server}: {e}"));
    let Some(proxy) = proxy else {
        return (path, upstream);
    };
    let out = bed
        .dir
        .join(format!("{}.kubeconfig", unique("leader-proxy")));
    std::fs::write(
        &out,
        text.replace(&server, &format!("https://{}", proxy.addr)),
    )
    .unwrap();
    (out, upstream)
}

/// The leader loses the API server (requests hang rather than fail). It must stop acting by
/// its renew deadline (10 s), before the standby may take over (15 s after it last saw the
/// Lease change): a renewal that waits for an answer for minutes must not keep it leading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_standby_takes_over() {
    let name = format!("{}.test/rbd", unique("cutoff"));
    let bed = Bed::load();
    let (_, upstream) = kubeconfig_through(&bed, None).await;
    let proxy = Proxy::start(upstream).await;
    let (via_proxy, _) = kubeconfig_through(&bed, Some(&proxy)).await;
    let a = Provisioner::start_with(&bed, &name, &[], &[], Some(&via_proxy)).await;
    let s = scenario("cutoff", &name, a).await;
    wait_log(&s.prov, "replica A leads", &["became leader"], T).await;
    let b = Provisioner::start_with(&bed, &name, &[], &[], None).await;
    wait_log(&b, "replica B waits", &["waiting for leadership"], T).await;
    let class = s.class("c", &[], json!({})).await;
    let stream = ClaimStream::start(&s.admin, &s.ns, &class, Duration::from_millis(400));
    tokio::time::sleep(Duration::from_secs(4)).await;

    let Scenario {
        stage: Stage { bed, admin, ns, .. },
        prov: mut a,
    } = s;
    proxy.cut.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    let status = a.wait_exit(Duration::from_secs(14)).await;
    println!("A exited {:?} after the cut: {status}", cut.elapsed());
    assert!(!status.success(), "losing the lease is a failure: {status}");
    wait_log(&b, "replica B takes over", &["became leader"], T).await;
    println!("B leads {:?} after the cut", cut.elapsed());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let claims = stream.finish().await;
    wait_all_bound(&admin, &ns, &claims).await;
    let (a_log, b_log) = (a.log.clone(), b.log.clone());
    drop(b);

    let a_text = std::fs::read_to_string(&a_log).unwrap();
    assert!(a_text.contains("lost the lease"), "{a_text}");
    let ra = replica("A", &a_text, SignedDuration::ZERO);
    let rb = replica(
        "B",
        &std::fs::read_to_string(&b_log).unwrap(),
        SignedDuration::ZERO,
    );
    println!("A: {:?}\nB: {:?}", ra.leading, rb.leading);
    assert!(!rb.acts.is_empty(), "B provisioned after taking over");
    // A PV that A wrote just before the cut, unanswered, is found by B and not reported
    // again: here a claim is provisioned at most once (and Bound).
    assert_never_both(&[&ra, &rb], &ns, &claims, false);
    let refs: Vec<&PersistentVolumeClaim> = claims.iter().collect();
    cleanup(&bed, &admin, &ns, &refs, &["kube"]).await;
}
